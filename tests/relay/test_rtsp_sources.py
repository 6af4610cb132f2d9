"""Per-stream camera sources (``--source APP/STREAM=URL[?always=1]``) against the stand-in
camera of :mod:`tests.relay.test_rtsp_pull`: an always-source publishes with no viewer and is
pulled again after the camera was gone; an on-demand one starts on the first play and stops
when idle; the option's parsing. Every test has a ``fail_after``; waits are on state.
"""

from __future__ import annotations

import logging

import pytest
import trio

from arcly_trio import StreamKey
from arcly_trio.clients import open_rtmp_player
from arcly_trio.core.frame import Frame
from arcly_trio.relay.sources import CameraSource, StreamSources, parse_source
from tests._nodes import node
from tests._serving import wait_until
from tests.relay.test_rtsp_pull import HOST, PASSWORD, USER, FakeCamera, camera

KEY = StreamKey("live", "door")


def test_a_source_maps_a_stream_to_a_url_and_always_is_not_sent_to_the_camera() -> None:
    source = parse_source("live/door=rtsp://u:p@cam/Streaming/101?channel=1&always=1")
    assert source == CameraSource(KEY, "rtsp://u:p@cam/Streaming/101?channel=1", always=True)
    assert parse_source("live/door=rtsp://cam/x?always=1").url == "rtsp://cam/x"
    assert not parse_source("live/door=rtsp://cam/x").always
    assert "p@" not in repr(source)
    for bad in ("live=rtsp://cam/x", "live/door", "live/a b=rtsp://cam/x", "live/door=ftp://cam/x"):
        with pytest.raises(ValueError):
            parse_source(bad)
    with pytest.raises(ValueError) as caught:
        parse_source("live/door=rtsp://u:secret@cam/x?always=yes")
    assert "secret" not in str(caught.value)
    with pytest.raises(ValueError):
        StreamSources([source, source])


async def test_an_always_source_publishes_with_no_viewer_and_comes_back_after_the_camera(
    demo_frames: list[Frame], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            cam = FakeCamera(demo_frames, auth="digest")
            scope = trio.CancelScope()

            async def run_camera(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
                with scope:
                    await cam.serve(task_status=task_status)

            await nursery.start(run_camera)
            url = f"rtsp://{USER}:{PASSWORD}@{HOST}:{cam.port}/cam?always=1"
            sources = StreamSources([parse_source(f"live/door={url}")], timeout=2, read_timeout=0.3, retry=0.05)
            async with node(sources=(sources,)) as (engine, _rtmp, _):
                assert not sources.provides(KEY)  # brought by run(), not by a viewer
                await wait_until(lambda: engine.has_stream(KEY) and engine.stream(KEY).info.protocol == "pull")
                status = sources.stream_status(KEY)["pull"]
                assert status["state"] == "connected" and PASSWORD not in str(status)
                scope.cancel()  # the camera goes away for longer than the RTSP reconnect window ...
                await wait_until(lambda: not engine.has_stream(KEY))
                scope = trio.CancelScope()
                await nursery.start(run_camera)  # ... and comes back on the same port
                await wait_until(lambda: engine.has_stream(KEY))
                assert sources.starts[KEY] == 2 and cam.plays >= 2
            nursery.cancel_scope.cancel()
    assert PASSWORD not in caplog.text


async def test_an_on_demand_source_starts_on_the_first_play_and_stops_when_idle(demo_frames: list[Frame]) -> None:
    with trio.fail_after(20):
        async with camera(demo_frames) as (cam, _):
            sources = StreamSources([parse_source(f"live/door=rtsp://{HOST}:{cam.port}/cam")], idle=0.3)
            async with node(sources=(sources,)) as (engine, rtmp, _):
                assert sources.provides(KEY) and not sources.provides(StreamKey("live", "other"))
                assert not engine.has_stream(KEY) and cam.plays == 0
                async with open_rtmp_player(f"rtmp://{HOST}:{rtmp.port}/live/door") as player:
                    got = 0
                    async for _frame in player:
                        got += 1
                        if got >= 10:
                            break
                    assert engine.stream(KEY).info.protocol == "pull" and cam.plays == 1
                await wait_until(lambda: not engine.has_stream(KEY))  # idle stop: nobody watches
                assert sources.starts[KEY] == 1
