"""The examples in examples/ run and print what they promise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_embedding_example_prints_received_frames() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "embed.py")], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    lines = out.splitlines()
    assert lines[0].startswith("data ") and "C" in lines[0]  # metadata first
    assert any(line.startswith("video h264  dts=   0 K") for line in lines)
    assert "published 12 video and 6 audio frames" in out  # configs are not media frames
    assert "event: StreamPublished live/cam" in out


def test_ws_frames_demo_publishes_over_the_frame_protocol_and_the_frames_come_back() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "ws_frames_demo.py"), "--serve", "--seconds", "2.5"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert "config video: avc1.4d401e" in out and "config audio: mp4a.40.2" in out
    assert "first video frame: keyframe=True" in out
    assert "published " in out and "stream ended: stream-ended" in out
    watched = int(out.split("watched ")[1].split()[0])
    assert watched >= 100  # 2.5 s of 30 fps video and 43 fps audio, less the start
