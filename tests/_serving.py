"""Engines serving on loopback for the tests: an engine with an RTMP (and HTTP) server on port 0,
an observer that follows the video, and polling until the kernel shows what a test waits for.

Error policy: nothing is caught; polling loops are bounded by the caller's ``fail_after`` (or
their own ``timeout``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, NamedTuple

import pytest
import trio

from arcly_trio import AppSpec
from arcly_trio.core.errors import StreamNotFound
from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.core.keys import StreamKey
from arcly_trio.kernel.auth import Authenticator
from arcly_trio.kernel.engine import Engine
from arcly_trio.kernel.events import (
    SubscriberJoined,
)
from arcly_trio.kernel.stream import Stream
from arcly_trio.services import HlsService
from arcly_trio.testing import CountingObserver
from arcly_trio.workers.http import HttpServer
from arcly_trio.workers.rtmp import RtmpServer
from arcly_trio.workers.webrtc import WebRtcServer
from tests._net import HOST


class RecordingObserver(CountingObserver):
    """Counts events like :class:`CountingObserver`, and follows the video of every stream.

    ``newest_video`` / ``newest_keyframe``: dts of the latest published video frame and the latest
    keyframe. ``joins``: for each subscriber join, ``(newest_video, newest_keyframe)`` at that
    instant (the hooks run synchronously in the kernel, so this is exactly what the stream had
    published when the subscriber was attached).
    """

    def __init__(self) -> None:
        super().__init__()
        self.newest_video: int | None = None
        self.newest_keyframe: int | None = None
        self.keyframes: list[int] = []
        self.joins: list[tuple[int | None, int | None]] = []

    def on_frame(self, key: StreamKey, frame: Frame) -> None:
        super().on_frame(key, frame)
        if frame.kind is FrameKind.VIDEO and not frame.config:
            self.newest_video = frame.dts
            if frame.keyframe:
                self.newest_keyframe = frame.dts
                self.keyframes.append(frame.dts)

    def on_subscriber_joined(self, event: SubscriberJoined) -> None:  # type: ignore[override]
        self._record(event)
        self.joins.append((self.newest_video, self.newest_keyframe))


@asynccontextmanager
async def rtmp_engine(
    *,
    observer: CountingObserver | None = None,
    authenticator: Authenticator | None = None,
    **server_options: Any,
) -> AsyncIterator[tuple[Engine, RtmpServer]]:
    """A running engine with the application ``live`` and an RTMP server on 127.0.0.1:0."""
    server = RtmpServer(HOST, 0, **server_options)
    builder = Engine.builder().application("live").protocol(server)
    if observer is not None:
        builder.observer(observer)
    if authenticator is not None:
        builder.authenticator(authenticator)
    async with builder.build() as engine:
        assert server.port and engine.worker_info[0] == server.port
        yield engine, server


def rtmp_url(port: int, path: str) -> str:
    return f"rtmp://{HOST}:{port}/{path}"


def find_stream(engine: Engine, key: str) -> Stream | None:
    try:
        return engine.stream(StreamKey.parse(key))
    except StreamNotFound:
        return None


async def wait_until(predicate: Callable[[], Any], poll: float = 0.02, timeout: float = math.inf) -> None:
    """Poll ``predicate`` until it holds; ``TooSlowError`` after ``timeout`` seconds (by default
    only the caller's ``fail_after`` bounds it)."""
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(poll)


async def wait_publishing(engine: Engine, key: str, video_frames: int = 1) -> Stream:
    """Wait until ``key`` is published and has carried ``video_frames`` video frames."""

    def ready() -> bool:
        stream = find_stream(engine, key)
        return bool(stream and stream.publishing and stream.stats().video_frames_total >= video_frames)

    await wait_until(ready)
    stream = find_stream(engine, key)
    assert stream is not None
    return stream


def records(caplog: pytest.LogCaptureFixture, *needles: str) -> list[logging.LogRecord]:
    """Captured records of the RTMP worker whose message contains every one of ``needles``."""
    return [r for r in caplog.records if r.name == "arcly_trio.rtmp" and all(n in r.getMessage() for n in needles)]


async def healthy_stream(engine: Engine, demo_frames: list[Frame], nursery: trio.Nursery, key: str = "live/ok") -> None:
    """A publisher that loops the demo clip (50 frames a second) until cancelled."""

    async def run() -> None:
        async with engine.publish(key) as publisher:
            configs = [f for f in demo_frames if f.config]
            media = [f for f in demo_frames if not f.config]
            for frame in configs:
                await publisher.send(frame)
            loop = 0
            while True:
                for frame in media:
                    await publisher.send(frame.shifted(loop * 10_000) if loop else frame)
                    await trio.sleep(0.02)
                loop += 1

    nursery.start_soon(run)
    with trio.fail_after(5):
        while not any(s.key.name == key.split("/")[1] and s.publishing for s in engine.streams()):
            await trio.sleep(0.01)


class Served(NamedTuple):
    engine: Engine
    rtmp: RtmpServer | None
    http: HttpServer

    @property
    def webrtc(self) -> WebRtcServer:
        """The WHIP/WHEP worker (``serving(webrtc=...)``)."""
        return next(worker for worker in self.engine.workers if isinstance(worker, WebRtcServer))


@asynccontextmanager
async def serving(
    *apps: AppSpec,
    hls: bool = False,
    observer: CountingObserver | None = None,
    rtmp: dict[str, Any] | None = None,
    webrtc: dict[str, Any] | None = None,
    services: tuple[Any, ...] = (),
    authenticator: Authenticator | None = None,
    **http_options: Any,
) -> AsyncIterator[Served]:
    """A running engine with ``apps`` (by default ``live``) and an HTTP server on 127.0.0.1:0
    (``http_options``); with ``hls``, the MPEG-TS HLS service; with ``rtmp`` (its options), an
    RTMP server on 127.0.0.1:0 too; with ``webrtc`` (its options), the WHIP/WHEP worker on UDP
    127.0.0.1:0 (``Served.webrtc``); ``services``: more engine plugins. Yields ``(engine, rtmp, http)``."""
    rtmp_server = RtmpServer(HOST, 0, **rtmp) if rtmp is not None else None
    http_server = HttpServer(HOST, 0, **http_options)
    webrtc_server = WebRtcServer(HOST, 0, **webrtc) if webrtc is not None else None
    builder = Engine.builder()
    for app in apps or (AppSpec("live"),):
        builder.application(app)
    if rtmp_server is not None:
        builder.protocol(rtmp_server)
    builder.protocol(http_server)
    if webrtc_server is not None:
        builder.protocol(webrtc_server)
    for service in services:
        builder.service(service)
    if authenticator is not None:
        builder.authenticator(authenticator)
    if hls:
        builder.service(HlsService(variant="ts"))
    if observer is not None:
        builder.observer(observer)
    async with builder.build() as engine:
        yield Served(engine, rtmp_server, http_server)
