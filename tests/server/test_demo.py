"""The built-in demo stream (``arcly_trio.server.demo``): it is live, not a file.

Its clip's onMetaData announced ``duration: 10.067`` and a ``filesize``, so ffprobe showed a 10 s live
stream and rtmpdump an incomplete download (the first server, a new user's report).
"""

from __future__ import annotations

import pytest
import trio

from arcly_trio.media import amf0
from arcly_trio.server.demo import demo_frames
from tests._cli import cli_server
from tests._tools import require_tool


def test_the_demo_announces_no_file_duration_or_size() -> None:
    metadata = [frame for frame in demo_frames() if frame.is_metadata]
    assert len(metadata) == 1
    _, fields = amf0.decode(metadata[0].payload)[:2]
    assert isinstance(fields, dict) and fields["width"] == 640
    assert not {"duration", "filesize"} & set(fields)


@pytest.mark.interop
async def test_ffprobe_sees_the_demo_as_live() -> None:
    with trio.fail_after(30):
        async with cli_server("--demo") as server:
            result = await trio.run_process(
                [
                    require_tool("ffprobe"),
                    "-v",
                    "error",
                    "-show_entries",
                    "format=duration",
                    "-of",
                    "default=nw=1",
                    server.url("live/demo"),
                ],
                capture_stdout=True,
                capture_stderr=True,
            )
    assert result.stdout.decode().strip() == "duration=N/A", result.stdout
