#!/bin/sh
# Generate the demo clip that arcly-trio ships and loops: arcly_trio/server/assets/demo.flv.
#
# What it is: 10 s of ffmpeg's testsrc2 pattern (640x360, 30 fps; it burns in its own clock and
# frame number) with a large "frame N" caption when a DejaVu font is installed, plus a 440 Hz tone.
#   video: H.264 Main, yuv420p, 2 B-frames (so composition times are non-zero), a keyframe every
#          60 frames exactly (2 s GOPs, no scene-cut keyframes): 300 frames = 5 whole GOPs.
#   audio: AAC LC, 44.1 kHz, mono, 64 kb/s: 430 AAC frames (9.985 s including the encoder's
#          priming frame), so the audio of one turn never overlaps the next turn's.
# The clip loops cleanly because its duration (10 s) is a whole number of GOPs: a looping
# publisher adds 10000 ms to every timestamp per turn. (FFmpeg shifts the start for the B-frame
# delay: video dts 0..9967 with pts from 67, audio from 44 ms to 10028 ms.)
# With FFmpeg 5.1 (Debian 12) the output is reproducible byte for byte (bitexact flags).
#
# Usage: scripts/make-demo-clip.sh [output.flv]     (needs ffmpeg with libx264)
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-"$here/arcly_trio/server/assets/demo.flv"}
seconds=10
fps=30
gop=60   # 2 s at 30 fps

font=""
for candidate in \
    /usr/share/fonts/truetype/dejavu/DejaVuSansMono-Bold.ttf \
    /usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf \
    /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf; do
    if [ -f "$candidate" ]; then font=$candidate; break; fi
done

video="testsrc2=size=640x360:rate=$fps:duration=$seconds"
if [ -n "$font" ]; then
    # Frame number (0-299), large, on a box at the bottom so it stays readable.
    video="$video,drawtext=fontfile=$font:fontsize=32:fontcolor=white:box=1:boxcolor=black@0.6:boxborderw=8:x=(w-tw)/2:y=h-th-24:text='arcly-trio demo  frame %{n}'"
fi

mkdir -p "$(dirname "$out")"
ffmpeg -hide_banner -loglevel error -y \
    -f lavfi -i "$video" \
    -f lavfi -i "sine=frequency=440:sample_rate=44100:duration=$seconds" \
    -map 0:v -map 1:a \
    -c:v libx264 -profile:v main -pix_fmt yuv420p -preset medium -crf 26 -maxrate 1200k -bufsize 2400k \
    -g $gop -keyint_min $gop -sc_threshold 0 -bf 2 \
    -x264-params "scenecut=0:open_gop=0:keyint=$gop:min-keyint=$gop" \
    -c:a aac -profile:a aac_low -ar 44100 -ac 1 -b:a 64k \
    -af "atrim=end_sample=$((429 * 1024))" \
    -t $seconds -fflags +bitexact -flags:v +bitexact -flags:a +bitexact \
    -f flv "$out"

echo "wrote $out ($(wc -c < "$out") bytes)"
