"""``--push srt://``: the push service's SRT caller (:mod:`arcly_trio.relay.srt_push`) against
the project's own SRT listener (passphrase right and wrong), its URL checks, and, marked
interop, against ffmpeg 5.1 (libsrt) listening."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from arcly_trio import AppSpec, Engine, StreamKey
from arcly_trio.relay import PushService, PushTarget
from arcly_trio.relay.srt_push import parse_srt_target
from arcly_trio.workers.srt import SrtServer
from tests._ffmpeg import Player, publisher, run_tool
from tests._net import free_port
from tests._nodes import feed, node
from tests._serving import HOST, find_stream, rtmp_url, wait_publishing
from tests._tools import require_tool

SECRET = "correct-horse-42"


@asynccontextmanager
async def srt_target(passphrase: str | None = None, port: int = 0) -> AsyncIterator[tuple[Engine, int]]:
    srt = SrtServer(HOST, port, passphrase=passphrase)
    async with Engine.builder().application(AppSpec("live")).protocol(srt).build() as engine:
        assert srt.port_number is not None
        yield engine, srt.port_number


def push_url(port: int, passphrase: str | None) -> str:
    url = f"srt://{HOST}:{port}?streamid=publish:{{app}}/{{stream}}&latency=200"
    return url + (f"&passphrase={passphrase}" if passphrase else "")


async def wait_link(push: PushService, check: Any) -> dict[str, Any]:
    while True:
        links = push.stream_status(StreamKey("live", "cam")).get("push", [])
        if links and check(links[0]):
            return links[0]
        await trio.sleep(0.01)


async def test_push_over_srt_with_a_passphrase_publishes_on_the_listener(
    demo_frames: list, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[type-arg]
    caplog.set_level(logging.DEBUG)
    async with srt_target(SECRET) as (target, port):
        push = PushService([push_url(port, SECRET)])
        async with node(services=(push,)) as (engine, _, _), trio.open_nursery() as nursery:
            nursery.start_soon(feed, engine, "live/cam", demo_frames, 0.002, 3)
            with trio.fail_after(10):
                await wait_publishing(target, "live/cam")
                stream = find_stream(target, "live/cam")
                assert stream is not None and stream.info.video_codec == "h264"
                assert stream.info.audio_codec == "aac"
                link = await wait_link(push, lambda link: link["frames"] > 50)
            assert link["state"] == "connected" and link["bytes"] > 10_000 and link["retries"] == 0
            nursery.cancel_scope.cancel()
    shown = json.dumps(link) + caplog.text
    assert SECRET not in shown and "publish:live" not in shown  # passphrase and streamid hidden


async def test_a_wrong_passphrase_is_refused_retried_and_never_shown(
    demo_frames: list, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[type-arg]
    caplog.set_level(logging.DEBUG)
    async with srt_target(SECRET) as (_, port):
        push = PushService([push_url(port, "wrong-passphrase-1")], backoff=(0.05, 0.1, 10.0))
        async with node(services=(push,)) as (engine, _, _), trio.open_nursery() as nursery:
            nursery.start_soon(feed, engine, "live/cam", demo_frames, 0.002)
            with trio.fail_after(10):
                link = await wait_link(push, lambda link: link["retries"] >= 2)
            nursery.cancel_scope.cancel()
    assert "BADSECRET" in (link["last_error"] or "")
    assert "wrong-passphrase-1" not in json.dumps(link) + caplog.text


async def test_a_target_nobody_listens_on_is_counted_and_retried(demo_frames: list) -> None:  # type: ignore[type-arg]
    push = PushService([push_url(free_port(), None)], timeout=0.3, backoff=(0.05, 0.1, 10.0))
    async with node(services=(push,)) as (engine, _, _), trio.open_nursery() as nursery:
        nursery.start_soon(feed, engine, "live/cam", demo_frames, 0.002)
        with trio.fail_after(10):
            link = await wait_link(push, lambda link: link["retries"] >= 2)
        nursery.cancel_scope.cancel()
    assert link["state"] in ("retrying", "connecting") and link["frames"] == 0
    assert "refused" in link["last_error"] or "no SRT handshake answer" in link["last_error"]


async def run_target(stop: trio.Event, *, task_status: trio.TaskStatus[tuple[Engine, int]]) -> None:
    async with srt_target() as (target, port):
        task_status.started((target, port))
        await stop.wait()


async def test_a_target_that_goes_away_is_retried_and_reconnected(demo_frames: list) -> None:  # type: ignore[type-arg]
    """The listener stops (its engine ends); the link notices (the port is closed, or silence for
    write_timeout), backs off, and connects again once a listener is back on the port."""
    stop = trio.Event()
    async with trio.open_nursery() as targets:
        first, port = await targets.start(run_target, stop)
        push = PushService([push_url(port, None)], timeout=0.5, write_timeout=0.5, backoff=(0.05, 0.1, 10.0))
        async with node(services=(push,)) as (engine, _, _), trio.open_nursery() as nursery:
            nursery.start_soon(feed, engine, "live/cam", demo_frames, 0.002, 20)
            with trio.fail_after(15):
                await wait_publishing(first, "live/cam")
                stop.set()  # the listener goes away
                await wait_link(push, lambda link: link["retries"] >= 1 and link["state"] != "connected")
                async with srt_target(port=port) as (second, _):
                    await wait_publishing(second, "live/cam")
                    link = await wait_link(push, lambda link: link["state"] == "connected")
            assert link["retries"] >= 1
            nursery.cancel_scope.cancel()


def test_srt_push_urls_are_checked_and_shown_redacted() -> None:
    target = PushTarget.parse(f"live=srt://h:9000?streamid=publish:{{app}}/{{stream}}&passphrase={SECRET}")
    assert target.apps == frozenset({"live"}) and SECRET not in repr(target)
    parsed = parse_srt_target(f"srt://h:9000?streamid=x&passphrase={SECRET}&pbkeylen=32&latency=300")
    assert (parsed.host, parsed.port, parsed.streamid, parsed.key_len, parsed.latency_ms) == ("h", 9000, "x", 32, 300)
    assert SECRET not in repr(parsed)
    for bad in (
        "srt://h?streamid=x",  # no port
        "srt://h:9000?latency=200000",  # microseconds, as ffmpeg takes it: refused, not 200 s
        "srt://h:9000?passphrase=short",
        "srt://h:9000?pbkeylen=20",
        "srt://h:9000?mode=listener",
        "srt://h:9000?oops=1",
        "srt://u:p@h:9000",
        "srt://h:9000?streamid=" + "x" * 600,
    ):
        with pytest.raises(ValueError) as info:
            PushTarget.parse(bad)
        assert "short" not in str(info.value) or "passphrase" in str(info.value)


@pytest.mark.interop
async def test_ffmpeg_listener_receives_the_push_of_an_rtmp_publish() -> None:
    """ffmpeg 5.1 (libsrt) listens with a passphrase; an RTMP publish is pushed to it; it decodes."""
    port = free_port()
    url = f"srt://{HOST}:{port}?mode=listener&latency=200000&passphrase={SECRET}"
    args = [require_tool("ffmpeg"), "-hide_banner", "-nostdin", "-loglevel", "error", "-i", url]
    args += ["-flush_packets", "1", "-f", "framemd5", "-"]
    push = PushService([push_url(port, SECRET)], backoff=(0.2, 0.5, 10.0))
    with trio.fail_after(30):
        async with run_tool(args, Player) as watcher, node(services=(push,)) as (engine, rtmp, _):
            async with publisher(rtmp_url(rtmp.port, "live/cam"), seconds=6):
                await wait_publishing(engine, "live/cam")
                await watcher.wait_frames(30, 30)
            assert watcher.dimensions == "320x240" or watcher.dimensions is None
