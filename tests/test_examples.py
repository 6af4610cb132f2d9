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
