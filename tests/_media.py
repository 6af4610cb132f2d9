"""Media the tests make and read independently of the package: ffmpeg-encoded clips in FLV,
a minimal FLV reader (kernel frames by the payload conventions), avcC/hvcC records built by hand,
ffprobe's JSON.

Error policy: a missing ffmpeg/ffprobe fails in CI and skips elsewhere; a tool error fails the test.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.media.codecs import (
    HEVC_NAL_PPS,
    HEVC_NAL_SPS,
    HEVC_NAL_VPS,
)
from tests._tools import require_tool


def encode_flv(
    out: Path,
    *,
    size: str = "320x240",
    rate: int = 25,
    seconds: float = 1.0,
    gop: int | None = None,
    audio: bool = True,
    video: bool = True,
    video_args: tuple[str, ...] = (),
    audio_args: tuple[str, ...] = ("-c:a", "aac"),
) -> bytes:
    """Encode a testsrc (+ sine) clip with libx264 (+ aac) to FLV with ffmpeg; its bytes."""
    ffmpeg = require_tool("ffmpeg")
    cmd = [ffmpeg, "-v", "error", "-y"]
    if video:
        cmd += ["-f", "lavfi", "-i", f"testsrc=size={size}:rate={rate}"]
    if audio:
        cmd += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"]
    cmd += ["-t", str(seconds)]
    if video:
        cmd += ["-c:v", "libx264", "-pix_fmt", "yuv420p", *video_args]
        if gop is not None:
            cmd += ["-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0"]
    if audio:
        cmd += list(audio_args)
    cmd += ["-f", "flv", str(out)]
    subprocess.run(cmd, check=True, timeout=60)
    return out.read_bytes()


def read_flv(data: bytes) -> list[Frame]:
    """A minimal FLV reader (legacy AVC/AAC/MP3 tags) for the tests: the file's frames."""
    assert data[:3] == b"FLV"
    pos = int.from_bytes(data[5:9], "big") + 4
    frames: list[Frame] = []
    while pos + 11 <= len(data):
        tag_type = data[pos]
        size = int.from_bytes(data[pos + 1 : pos + 4], "big")
        ts = int.from_bytes(data[pos + 4 : pos + 7], "big") | (data[pos + 7] << 24)
        body = data[pos + 11 : pos + 11 + size]
        pos += 11 + size + 4
        if tag_type == 9 and body:
            codec_id = body[0] & 0x0F
            key = body[0] >> 4 == 1
            if codec_id != 7:
                continue
            packet_type = body[1]
            cts = int.from_bytes(body[2:5], "big", signed=True)
            if packet_type == 0:
                frames.append(Frame(FrameKind.VIDEO, "h264", ts, ts, bytes(body[5:]), config=True))
            elif packet_type == 1:
                frames.append(Frame(FrameKind.VIDEO, "h264", ts + cts, ts, bytes(body[5:]), keyframe=key))
        elif tag_type == 8 and body:
            fmt = body[0] >> 4
            if fmt == 10:
                config = body[1] == 0
                frames.append(Frame(FrameKind.AUDIO, "aac", ts, ts, bytes(body[2:]), config=config))
            elif fmt == 2:
                frames.append(Frame(FrameKind.AUDIO, "mp3", ts, ts, bytes(body[1:])))
    return frames


def ffprobe_json(path: Path, *args: str) -> dict:
    ffprobe = require_tool("ffprobe")
    out = subprocess.run(
        [ffprobe, "-v", "error", "-of", "json", *args, str(path)],
        check=True,
        capture_output=True,
        timeout=60,
    ).stdout
    return json.loads(out)


def build_avcc(sps: list[bytes], pps: list[bytes], nal_length_size: int = 4) -> bytes:
    out = bytes((1, 100, 0, 31, 0xFC | (nal_length_size - 1), 0xE0 | len(sps)))
    for unit in sps:
        out += len(unit).to_bytes(2, "big") + unit
    out += bytes((len(pps),))
    for unit in pps:
        out += len(unit).to_bytes(2, "big") + unit
    return out


def encode_hevc(out: Path, size: str, frames: int = 3, x265_params: str = "log-level=error") -> bytes:
    """Encode a testsrc clip with libx265 to a raw HEVC (Annex B) stream; its bytes."""
    ffmpeg = require_tool("ffmpeg")
    subprocess.run(
        [
            ffmpeg, "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc=size={size}:rate=10",
            "-frames:v", str(frames), "-pix_fmt", "yuv420p",
            "-c:v", "libx265", "-x265-params", x265_params,
            "-f", "hevc", str(out),
        ],
        check=True,
        timeout=60,
    )  # fmt: skip
    return out.read_bytes()


def split_annexb(data: bytes) -> list[bytes]:
    """NAL units of an Annex B byte stream (3- or 4-byte start codes)."""
    units = []
    for part in data.split(b"\x00\x00\x01"):
        part = part.rstrip(b"\x00")  # a NAL unit never ends with a zero byte
        if part:
            units.append(part)
    return units


def build_hvcc(vps: bytes, sps: bytes, pps: bytes, nal_length_size: int = 4) -> bytes:
    head = bytes((1, 0x01)) + b"\x60\x00\x00\x00" + b"\x90\x00\x00\x00\x00\x00" + bytes((93,))
    head += b"\xf0\x00\xfc\xfd\xf8\xf8\x00\x00" + bytes((0x0C | (nal_length_size - 1),))
    arrays = b""
    for kind, unit in ((HEVC_NAL_VPS, vps), (HEVC_NAL_SPS, sps), (HEVC_NAL_PPS, pps)):
        arrays += bytes((0x80 | kind,)) + (1).to_bytes(2, "big")
        arrays += len(unit).to_bytes(2, "big") + unit
    return head + bytes((3,)) + arrays
