"""Cluster nodes in one process, sharing a :class:`MemoryDirectory`, over loopback RTMP.

Three engines (A, B, C) are nodes of one cluster: a publish on A takes its lease (a duplicate
publish on B is refused like a local one), a play on B or C pulls the stream from A (one pull
per node, shared by its viewers), leases and registrations expire when a node stops beating, an
unreachable directory leaves local streams alone and is reported in health, and the node
re-registers when it is back.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

import pytest
import trio

from arcly_trio import Credentials, StreamKey
from arcly_trio.clients import open_rtmp_player, open_rtmp_publisher
from arcly_trio.cluster import MemoryDirectory
from arcly_trio.core.errors import RemoteRefused, StreamAlreadyPublishing, StreamPublishedElsewhere
from arcly_trio.services import HlsService
from arcly_trio.workers.http import HttpServer
from tests._hls import media_playlist
from tests._nodes import cluster_node, publish_frames

HOST = "127.0.0.1"


async def test_publish_on_a_play_on_b_and_c_duplicate_refused(demo_frames: list) -> None:  # type: ignore[type-arg]
    directory = MemoryDirectory()
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(cluster_node(directory, "A"))
        b = await stack.enter_async_context(cluster_node(directory, "B"))
        c = await stack.enter_async_context(cluster_node(directory, "C"))
        nursery = await stack.enter_async_context(trio.open_nursery())
        with trio.fail_after(20):
            await nursery.start(publish_frames, f"rtmp://{HOST}:{a[1].port}/live/cam", demo_frames)
            assert a[2].held == {"live/cam": 1}
            owner = await directory.owner("live/cam")
            assert owner is not None and owner.id == "A"
            for engine, rtmp, node in (b, c):
                url = f"rtmp://{HOST}:{rtmp.port}/live/cam"
                async with open_rtmp_player(url) as one, open_rtmp_player(url) as two:
                    assert (await one.next_batch()) and (await two.next_batch())
                    assert engine.stream("live/cam").info.protocol == "cluster"
                    assert engine.sourcing.started_total == 1
                    assert node.stream_status(StreamKey("live", "cam"))["cluster"]["owner"] == "A"
            # A duplicate publish on B is refused exactly as on one node: while B still has the
            # pulled copy, by B itself; once that pull has stopped, because A holds the lease.
            with pytest.raises(RemoteRefused) as info:
                async with open_rtmp_publisher(f"rtmp://{HOST}:{b[1].port}/live/cam"):
                    pass
            assert info.value.code == "NetStream.Publish.BadName"
            while b[0].has_stream(StreamKey("live", "cam")):
                await trio.sleep(0.05)
            with pytest.raises(RemoteRefused) as info:
                async with open_rtmp_publisher(f"rtmp://{HOST}:{b[1].port}/live/cam"):
                    pass
            assert info.value.code == "NetStream.Publish.BadName" and "node 'A'" in info.value.description
            with pytest.raises(StreamAlreadyPublishing):
                async with b[0].publish("live/cam", Credentials(protocol="test")):
                    pass
            nodes = {node.id for node in await directory.nodes()}
            assert nodes == {"A", "B", "C"}
            assert a[2].health_status()["cluster"]["directory"] == "ok"
        nursery.cancel_scope.cancel()


async def test_a_dead_owner_ends_the_pulls_and_the_stream_moves(demo_frames: list) -> None:  # type: ignore[type-arg]
    directory = MemoryDirectory()
    async with AsyncExitStack() as stack:
        b = await stack.enter_async_context(cluster_node(directory, "B"))
        c = await stack.enter_async_context(cluster_node(directory, "C"))
        nursery = await stack.enter_async_context(trio.open_nursery())
        with trio.fail_after(30):
            ended = trio.Event()
            end_reason: list[str | None] = []

            async def watch_on_b(task_status=trio.TASK_STATUS_IGNORED) -> None:  # type: ignore[no-untyped-def]
                async with open_rtmp_player(f"rtmp://{HOST}:{b[1].port}/live/move") as player:
                    assert await player.next_batch()
                    task_status.started()
                    while await player.next_batch():
                        pass
                    end_reason.append(player.end)
                ended.set()

            async with cluster_node(directory, "A") as a, trio.open_nursery() as inner:
                await inner.start(publish_frames, f"rtmp://{HOST}:{a[1].port}/live/move", demo_frames)
                await nursery.start(watch_on_b)
                inner.cancel_scope.cancel()  # node A dies: its publisher, engine and sockets go away
            await ended.wait()
            assert end_reason and end_reason[0] is not None
            # A's lease is gone at once (released) or after its TTL; then C can take the stream.
            while True:
                try:
                    await nursery.start(publish_frames, f"rtmp://{HOST}:{c[1].port}/live/move", demo_frames)
                    break
                except RemoteRefused:
                    await trio.sleep(0.2)
            async with open_rtmp_player(f"rtmp://{HOST}:{b[1].port}/live/move") as again:
                assert await again.next_batch()
                assert b[2].stream_status(StreamKey("live", "move"))["cluster"]["owner"] == "C"
        nursery.cancel_scope.cancel()


async def test_an_unreachable_directory_keeps_local_streams_and_is_reported(demo_frames: list) -> None:  # type: ignore[type-arg]
    directory = MemoryDirectory()
    async with cluster_node(directory, "A", ttl=0.6) as (engine, rtmp, node), trio.open_nursery() as nursery:
        with trio.fail_after(20):
            await nursery.start(publish_frames, f"rtmp://{HOST}:{rtmp.port}/live/keep", demo_frames)
            directory.down = True
            while node.health_status()["cluster"]["directory"] != "unreachable":
                await trio.sleep(0.05)
            async with open_rtmp_player(f"rtmp://{HOST}:{rtmp.port}/live/keep") as player:
                assert await player.next_batch()  # the local stream is still served
            # A publish while the directory is down is accepted, and claimed once it is back.
            async with engine.publish("live/offline", Credentials(protocol="test")):
                directory.down = False
                directory.expire_all()
                while node.health_status()["cluster"]["directory"] != "ok" or not await directory.owner("live/offline"):
                    await trio.sleep(0.05)
                owner = await directory.owner("live/offline")
                assert owner is not None and owner.id == "A"
                assert (await directory.owner("live/keep")).id == "A"  # type: ignore[union-attr]
        nursery.cancel_scope.cancel()


async def test_pulled_copies_take_no_lease() -> None:
    directory = MemoryDirectory()
    async with cluster_node(directory, "A") as (engine, _, node):
        for protocol in ("pull", "cluster", "worker"):
            async with engine.publish(f"live/{protocol}", Credentials(protocol=protocol), protocol=protocol):
                assert await directory.owner(f"live/{protocol}") is None
        with pytest.raises(StreamPublishedElsewhere):
            await directory.claim("live/x", "Z", 10)
            await node.claim_publish(StreamKey("live", "x"), Credentials(protocol="rtmp"))


@pytest.mark.parametrize("variant,entry", [("ts", "index.m3u8"), ("ll", "index.mpd")])
async def test_hls_and_dash_on_an_edge_pull_from_the_owner_and_answer_the_first_request(
    demo_frames: list, http_get: Any, variant: str, entry: str
) -> None:  # type: ignore[type-arg]
    """Issue 19, item 1: the first playlist (or MPD) request on an edge node is answered with
    the stream's first list once the edge has pulled it from its owner, not with a 404."""
    directory = MemoryDirectory()
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(cluster_node(directory, "A"))
        edge_http = HttpServer(HOST, 0)
        hls = HlsService(variant=variant, target_duration=0.5, all_apps=True)
        b = await stack.enter_async_context(cluster_node(directory, "B", http=edge_http, hls=hls))
        nursery = await stack.enter_async_context(trio.open_nursery())
        with trio.fail_after(20):
            await nursery.start(publish_frames, f"rtmp://{HOST}:{a[1].port}/live/cam", demo_frames)
            status, _, body, _ = await media_playlist(http_get, edge_http.port, f"/live/cam/{entry}")
        assert status == 200, body[:300]
        assert b'type="dynamic"' in body if entry == "index.mpd" else b"#EXTINF" in body
        assert b[0].stream("live/cam").info.protocol == "cluster" and b[0].sourcing.started_total == 1
        nursery.cancel_scope.cancel()
