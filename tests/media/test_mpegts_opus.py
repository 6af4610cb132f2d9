"""Opus in the MPEG-TS muxer: the PMT's descriptors and the control-header framing as ffmpeg
writes them, round trips through the project's demuxer, and (interop) ffmpeg 8 decoding the
remux of its own Opus capture."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.media.codecs.errors import CodecError
from arcly_trio.media.codecs.opus import opus_head
from arcly_trio.media.mpegts import AUDIO_PID, PMT_PID, TsMuxer
from arcly_trio.media.ts_demux import TsDemuxer
from tests._mpegts import demux, parse_packets, read_pmt, read_section
from tests._tools import require_ffmpeg8

TOC = 0xFC  # config 31 (CELT fullband, 20 ms), stereo, one frame: 960 samples


def opus_frames(sizes: list[int], channels: int = 2) -> list[Frame]:
    frames = [Frame(FrameKind.AUDIO, "opus", 0, 0, opus_head(channels), config=True)]
    for index, size in enumerate(sizes):
        payload = bytes((TOC,)) + bytes((index + 1) & 0xFF for _ in range(size - 1))
        frames.append(Frame(FrameKind.AUDIO, "opus", index * 20, index * 20, payload))
    return frames


def pmt_section(data: bytes) -> bytes:
    return read_section(next(p for p in parse_packets(data) if p.pid == PMT_PID))


def mux_all(frames: list[Frame], video: str | None = None) -> bytes:
    muxer = TsMuxer(video, "opus")
    out = b""
    for frame in frames:
        out += muxer.mux(frame, with_tables=not out and not frame.config)
    return out


def test_the_pmt_says_opus_with_its_channel_count_and_pes_are_private_stream_1() -> None:
    data = mux_all(opus_frames([100, 100], channels=1))
    section = pmt_section(data)
    assert read_pmt(section) == (AUDIO_PID, {AUDIO_PID: 0x06})
    # ES info: registration descriptor 'Opus', then the DVB extension descriptor (Opus audio, 1 channel)
    assert section[12:27] == b"\x06\xe1\x01\xf0\x0a" + b"\x05\x04Opus" + b"\x7f\x02\x80\x01"
    pes = [p for p in demux(data)[1] if p.pid == AUDIO_PID]
    assert {p.stream_id for p in pes} == {0xBD}
    assert pes[0].data[:3] == b"\x7f\xe0\x64"  # control header: prefix, no trims, size 100


@pytest.mark.parametrize("sizes", [[1, 2, 100], [254, 255, 256], [510, 1275, 3]])
def test_opus_round_trips_through_the_demuxer(sizes: list[int]) -> None:
    frames = opus_frames(sizes)
    demuxer = TsDemuxer()
    got = demuxer.feed(mux_all(frames)) + demuxer.flush()
    assert got[0].config and got[0].payload[9] == 2
    assert [(f.pts, f.payload) for f in got[1:]] == [(f.pts, f.payload) for f in frames[1:]]
    assert demuxer.stats.malformed == 0


def test_a_channel_change_after_the_tables_went_out_bumps_the_pmt_version() -> None:
    muxer = TsMuxer(None, "opus")
    first = muxer.header()
    muxer.mux(Frame(FrameKind.AUDIO, "opus", 0, 0, opus_head(1), config=True))
    second = muxer.header()
    versions = [(pmt_section(header)[5] >> 1) & 0x1F for header in (first, second)]
    assert versions == [0, 1] and b"\x80\x01" in pmt_section(second) and b"\x80\x02" in pmt_section(first)
    with pytest.raises(CodecError):
        muxer.mux(
            Frame(
                FrameKind.AUDIO, "opus", 0, 0, b"OpusHead\x01\x06" + bytes(9) + b"\x01\x04\x02" + bytes(6), config=True
            )
        )


@pytest.mark.interop
def test_ffmpeg8_decodes_our_remux_of_its_opus(tmp_path: Path) -> None:
    tool = require_ffmpeg8()
    source = tmp_path / "in.ts"
    subprocess.run(
        [tool, "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=25",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "2",
         "-c:v", "libx264", "-g", "25", "-c:a", "libopus", "-f", "mpegts", str(source)],
        check=True, timeout=60,
    )  # fmt: skip
    demuxer = TsDemuxer()
    frames = demuxer.feed(source.read_bytes()) + demuxer.flush()
    audio = [f for f in frames if f.kind is FrameKind.AUDIO and not f.config]
    remux = tmp_path / "out.ts"
    remux.write_bytes(mux_all(sorted(frames, key=lambda f: (not f.config, f.dts)), video="h264"))
    result = subprocess.run(
        [tool, "-v", "error", "-i", str(remux), "-map", "0:a", "-f", "framemd5", "-"],
        capture_output=True, check=True, timeout=60,
    )  # fmt: skip
    decoded = [line for line in result.stdout.decode().splitlines() if line and not line.startswith("#")]
    assert len(decoded) == len(audio) >= 95 and not result.stderr, result.stderr
