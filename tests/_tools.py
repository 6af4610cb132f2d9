"""Locating the real third-party tools that interop tests drive (ffmpeg, ffprobe, chromium).

In CI (``CI`` set in the environment) a missing tool is a test failure, never a skip: CI installs
every tool the suite needs. On a developer machine a missing tool skips the test with a message
that says how to install it.
"""

from __future__ import annotations

import os
import shutil

import pytest


def require_tool(name: str) -> str:
    """Return the path of ``name`` on PATH; fail in CI, skip elsewhere, when it is missing."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (apt-get install -y {name})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path
