"""In-process nodes for relay and cluster tests: an engine with its RTMP (and HTTP) workers on
loopback, as a relay node or as a node of a :class:`MemoryDirectory` cluster, and a publisher
that feeds it frames.

Error policy: nothing is caught; the caller's ``fail_after`` bounds every wait.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from arcly_trio import AppSpec, Credentials, Engine
from arcly_trio.clients import open_rtmp_publisher
from arcly_trio.cluster import ClusterNode, MemoryDirectory
from arcly_trio.workers.http import HttpServer
from arcly_trio.workers.rtmp import RtmpServer
from tests._net import HOST


@asynccontextmanager
async def cluster_node(
    directory: MemoryDirectory, node_id: str, *, ttl: float = 1.0, http: Any = None, hls: Any = None
) -> AsyncIterator[tuple[Engine, RtmpServer, ClusterNode]]:
    """A node of the cluster (with an HTTP worker and an HLS service, if given)."""
    # The node learns its port once the worker is bound: reserve one first.
    listener = (await trio.open_tcp_listeners(0, host=HOST))[0]
    port = listener.socket.getsockname()[1]
    await listener.aclose()
    rtmp = RtmpServer(HOST, port)
    node = ClusterNode(directory, node_id=node_id, rtmp_url=f"rtmp://{HOST}:{port}", ttl=ttl, idle=0.5)
    builder = Engine.builder().application(AppSpec("live")).protocol(rtmp).source(node)
    if http is not None:
        builder.protocol(http)
    if hls is not None:
        builder.service(hls)
    async with builder.build() as engine:
        yield engine, rtmp, node


async def publish_frames(url: str, frames: list, *, task_status=trio.TASK_STATUS_IGNORED) -> None:  # type: ignore[no-untyped-def]
    async with open_rtmp_publisher(url) as publisher:
        await publisher.send_frames(frames[:30])
        task_status.started()
        for frame in frames[30:]:
            await publisher.send(frame)
            if not frame.config:
                await trio.sleep(0.005)
        await trio.sleep_forever()


@asynccontextmanager
async def node(
    *,
    services: tuple[Any, ...] = (),
    sources: tuple[Any, ...] = (),
    http: bool = False,
    apps: tuple[str, ...] = ("live",),
    observer: Any = None,
) -> AsyncIterator[tuple[Engine, RtmpServer, HttpServer | None]]:
    rtmp = RtmpServer(HOST, 0)
    builder = Engine.builder().protocol(rtmp).idle_timeout(30)
    if observer is not None:
        builder.observer(observer)
    for app in apps:
        builder.application(AppSpec(app))
    web = HttpServer(HOST, 0) if http else None
    if web is not None:
        builder.protocol(web)
    for service in services:
        builder.service(service)
    for source in sources:
        builder.source(source)
    async with builder.build() as engine:
        yield engine, rtmp, web


async def feed(engine: Engine, key: str, frames: list, pace: float = 0.0, loops: int = 1) -> None:  # type: ignore[type-arg]
    """Publish ``frames`` into ``engine`` (in-process) ``loops`` times (timestamps shifted by
    10 s each time), then keep the publish open."""
    async with engine.publish(key, Credentials(protocol="test")) as publisher:
        for loop in range(loops):
            for frame in frames:
                await publisher.send(frame.shifted(loop * 10_000) if loop else frame)
                if pace and not frame.config:
                    await trio.sleep(pace)
        await trio.sleep_forever()
