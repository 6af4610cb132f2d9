"""Three ``arcly-trio serve --cluster redis://...`` nodes on loopback with a real redis-server.

Started by the test: Debian's ``redis-server`` on a free port (a missing Redis fails in CI),
and three nodes A, B, C (``--cluster-ttl 2`` so leases expire quickly). ffmpeg publishes on A;
players on B and C get it over RTMP (our client and ffmpeg) and HTTP-FLV (ffmpeg); a duplicate
publish on B is refused; A is killed (SIGKILL, no goodbye): B's viewers end cleanly, and once
A's lease has expired a re-publish on C is served to new viewers on B. Stopping Redis leaves
the nodes serving their local streams and reports it in ``/api/health``; they re-register when
it is back.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import pytest
import trio

from arcly_trio.clients import open_rtmp_player, open_rtmp_publisher
from arcly_trio.clients.http import get_json_bytes
from arcly_trio.cluster.redis import RedisDirectory
from arcly_trio.core.errors import RemoteRefused
from tests._cli import CliServer, cli_server
from tests._ffmpeg import player, publisher
from tests._peers import HOST, redis_server

pytestmark = pytest.mark.interop


@asynccontextmanager
async def cluster_node(name: str, redis_port: int) -> AsyncIterator[CliServer]:
    """A node of the cluster, registered in the directory."""
    async with cli_server(
        "--cluster", f"redis://{HOST}:{redis_port}/0", "--node-id", name, "--cluster-ttl", "2", "--pull-idle", "2"
    ) as node:
        with trio.fail_after(20):
            await node.wait_log("registered in the directory")
        yield node


async def health(node: CliServer) -> dict:  # type: ignore[type-arg]
    return json.loads(await get_json_bytes(f"http://{HOST}:{node.http_port}/api/health"))


async def frames_from(url: str, count: int = 30) -> list:  # type: ignore[type-arg]
    async with open_rtmp_player(url) as play:
        frames = []
        async for frame in play:
            frames.append(frame)
            if len(frames) >= count:
                break
    return frames


async def test_three_nodes_publish_play_duplicate_failover() -> None:
    with trio.fail_after(150):
        async with redis_server() as (redis_port, _), AsyncExitStack() as stack:
            a = await stack.enter_async_context(cluster_node("A", redis_port))
            b = await stack.enter_async_context(cluster_node("B", redis_port))
            c = await stack.enter_async_context(cluster_node("C", redis_port))
            async with publisher(a.url("live/cam")):
                await a.wait_log("rtmp")
                while "live/cam" not in " ".join(a.lines) or (await health(a))["cluster"]["leases"] != 1:
                    await trio.sleep(0.1)
                # Play from B and C: RTMP (our client, ffmpeg) and HTTP-FLV (ffmpeg).
                for node in (b, c):
                    frames = await frames_from(node.url("live/cam"))
                    assert {("video", "h264"), ("audio", "aac")} <= {(f.kind.value, f.codec) for f in frames}
                    async with player(node.url("live/cam")) as play:
                        await play.wait_frames(video=20, audio=20)
                    async with player(f"http://{HOST}:{node.http_port}/live/cam.flv") as play:
                        await play.wait_frames(video=20, audio=20)
                # A duplicate publish on B is refused (B may still hold a pulled copy: refused
                # by B itself then; either way as on one node).
                with pytest.raises(RemoteRefused) as info:
                    async with open_rtmp_publisher(b.url("live/cam")):
                        pass
                assert info.value.code == "NetStream.Publish.BadName"
                # A viewer on B, then A dies without a goodbye.
                async with open_rtmp_player(b.url("live/cam")) as viewer:
                    assert await viewer.next_batch()
                    a.process.kill()
                    with trio.fail_after(15):
                        while await viewer.next_batch():
                            pass
                    assert viewer.end is not None  # ended cleanly, with a reason
            await a.process.wait()
            # A re-publish on C is refused until A's lease expires (TTL 2 s), then served to
            # new viewers on B.
            served = False
            with trio.fail_after(40):
                while not served:
                    async with publisher(c.url("live/cam")) as republish:
                        await trio.sleep(1.5)
                        if not republish.running or (await health(c))["cluster"]["leases"] != 1:
                            continue  # refused while A's lease lived: ffmpeg gave up; again
                        frames = await frames_from(b.url("live/cam"), 20)
                        assert {("video", "h264")} <= {(f.kind.value, f.codec) for f in frames}
                        status = json.loads(await get_json_bytes(f"http://{HOST}:{b.http_port}/api/streams"))
                        assert status["apps"][0]["streams"][0]["cluster"]["owner"] == "C"
                        served = True
            health_b = await health(b)
            assert health_b["cluster"]["directory"] == "ok" and health_b["cluster"]["node"] == "B"


async def test_redis_unreachable_is_reported_and_the_node_comes_back() -> None:
    with trio.fail_after(90):
        async with redis_server() as (redis_port, redis), cluster_node("solo", redis_port) as node:
            async with publisher(node.url("live/local")):
                while (await health(node))["cluster"]["leases"] != 1:
                    await trio.sleep(0.1)
                redis.kill()
                await redis.wait()
                while (await health(node))["cluster"]["directory"] != "unreachable":
                    await trio.sleep(0.2)
                assert await frames_from(node.url("live/local"))  # the local stream is still served
                await node.wait_log("cluster directory unreachable")
                # Redis comes back (empty): the node registers again and takes its lease back.
                async with redis_server(redis_port):
                    while (await health(node))["cluster"]["directory"] != "ok":
                        await trio.sleep(0.2)
                    directory = RedisDirectory(f"redis://{HOST}:{redis_port}/0")
                    async with trio.open_nursery() as nursery:
                        await nursery.start(directory.run)
                        while not any(n.id == "solo" for n in await directory.nodes()):
                            await trio.sleep(0.2)
                        owner = await directory.owner("live/local")
                        assert owner is not None and owner.id == "solo"
                        assert owner.rtmp == f"rtmp://{HOST}:{node.port}"
                        nursery.cancel_scope.cancel()
