"""Relays between two in-process engines over loopback: push, pull (RTMP and HTTP-FLV), the
single-flight pull, idle stop, failures and the API.

"Origin" and "edge" are two engines with their own RTMP (and HTTP) workers on port 0. Real time
is short (idle periods of a fraction of a second); every test has a ``fail_after``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from arcly_trio import Credentials, Engine, StreamKey
from arcly_trio.clients import open_rtmp_player
from arcly_trio.core.errors import RemoteRefused, StreamNotFound
from arcly_trio.relay import PullSource, PushService, PushTarget
from arcly_trio.workers.http import HttpServer
from tests._hls import media_playlist, uris
from tests._nodes import feed, node

HOST = "127.0.0.1"


async def read_until(player: Any, dts: int) -> list:  # type: ignore[type-arg]
    got = []
    async for frame in player:
        got.append(frame)
        if not frame.config and frame.dts >= dts:
            break
    return got


def same_frames(got: list, sent: list) -> bool:  # type: ignore[type-arg]
    sent_set = {(f.kind, f.track, f.dts, f.payload) for f in sent}
    return bool(got) and all((f.kind, f.track, f.dts, f.payload) in sent_set for f in got)


# --------------------------------------------------------------------------------------- pull


@pytest.mark.parametrize("upstream", ["rtmp", "http-flv"])
async def test_a_play_on_the_edge_pulls_from_the_origin(demo_frames: list, upstream: str) -> None:  # type: ignore[type-arg]
    async with node(http=True) as (origin, origin_rtmp, origin_http):
        assert origin_http is not None
        template = (
            f"rtmp://{HOST}:{origin_rtmp.port}/{{app}}/{{stream}}"
            if upstream == "rtmp"
            else f"http://{HOST}:{origin_http.port}/{{app}}/{{stream}}.flv"
        )
        pull = PullSource({None: template}, idle=0.5)
        async with node(sources=(pull,)) as (edge, edge_rtmp, _), trio.open_nursery() as nursery:
            nursery.start_soon(feed, origin, "live/cam", demo_frames, 0.002)
            with trio.fail_after(20):
                while not origin.has_stream(StreamKey("live", "cam")):
                    await trio.sleep(0.01)
                url = f"rtmp://{HOST}:{edge_rtmp.port}/live/cam"
                async with open_rtmp_player(url) as one, open_rtmp_player(url) as two:
                    got_one = await read_until(one, 2000)
                    got_two = await read_until(two, 2000)
                    assert edge.sourcing.started_total == 1  # both viewers share one pull
                    stream = edge.stream("live/cam")
                    assert stream.info.protocol == "pull"
                    status = pull.stream_status(stream.key)["pull"]
                    assert status["state"] == "connected" and status["bytes"] > 0
                    assert origin.stream("live/cam").stats().subscribers == 1  # one upstream play
                assert same_frames(got_one, demo_frames) and same_frames(got_two, demo_frames)
                # No viewer for the idle period: the pull stops and the origin loses its player.
                while edge.has_stream(StreamKey("live", "cam")):
                    await trio.sleep(0.05)
                while origin.stream("live/cam").stats().subscribers:
                    await trio.sleep(0.05)
                # A new viewer starts a new pull.
                async with open_rtmp_player(url) as three:
                    assert same_frames(await read_until(three, 1000), demo_frames)
                assert edge.sourcing.started_total == 2
            nursery.cancel_scope.cancel()


async def test_a_stream_the_origin_lacks_is_not_found_on_the_edge() -> None:
    async with node() as (origin, origin_rtmp, _):
        pull = PullSource({"live": f"rtmp://{HOST}:{origin_rtmp.port}/{{app}}/{{stream}}"}, idle=0.5, timeout=2)
        async with node(sources=(pull,), apps=("live", "other")) as (edge, edge_rtmp, _):
            with trio.fail_after(10):
                with pytest.raises(RemoteRefused) as info:
                    async with open_rtmp_player(f"rtmp://{HOST}:{edge_rtmp.port}/live/none"):
                        pass
                assert info.value.code == "NetStream.Play.StreamNotFound"
                with pytest.raises(StreamNotFound):  # no template for this app: nothing is asked
                    async with edge.subscribe("other/none"):
                        pass
                assert edge.sourcing.started_total == 1
                assert not edge.sourcing.active


async def test_the_edge_ends_its_viewers_when_the_origin_stream_ends(demo_frames: list) -> None:  # type: ignore[type-arg]
    async with node() as (origin, origin_rtmp, _):
        pull = PullSource({None: f"rtmp://{HOST}:{origin_rtmp.port}/{{app}}/{{stream}}"}, idle=5)
        async with node(sources=(pull,)) as (edge, edge_rtmp, _), trio.open_nursery() as nursery:
            scope = trio.CancelScope()

            async def publish() -> None:
                with scope:
                    await feed(origin, "live/end", demo_frames[:100])

            nursery.start_soon(publish)
            with trio.fail_after(15):
                while not origin.has_stream(StreamKey("live", "end")):
                    await trio.sleep(0.01)
                async with open_rtmp_player(f"rtmp://{HOST}:{edge_rtmp.port}/live/end") as player:
                    await player.next_batch()
                    scope.cancel()  # the origin's publisher leaves
                    while await player.next_batch():
                        pass
                    assert player.end is not None and "UnpublishNotify" in player.end
                while edge.has_stream(StreamKey("live", "end")):
                    await trio.sleep(0.02)


# --------------------------------------------------------------------------------------- push


async def test_every_publish_is_pushed_to_each_target_and_a_dead_target_is_retried(demo_frames: list) -> None:  # type: ignore[type-arg]
    from arcly_trio.kernel.events import ServiceEvent
    from arcly_trio.testing import CountingObserver

    observer = CountingObserver()
    async with node() as (target_a, rtmp_a, _), node() as (target_b, rtmp_b, _):
        # Target B is down at first: a listener that refuses everything stands in for it.
        dead = (await trio.open_tcp_listeners(0, host=HOST))[0]
        dead_port = dead.socket.getsockname()[1]
        await dead.aclose()
        push = PushService(
            [
                PushTarget(f"rtmp://{HOST}:{rtmp_a.port}/{{app}}/{{stream}}"),
                PushTarget(f"rtmp://{HOST}:{dead_port}/live/{{stream}}", apps=["live"]),
            ],
            backoff=(0.1, 0.2, 1.0),
            timeout=2,
        )
        async with node(services=(push,), observer=observer) as (source, _, _), trio.open_nursery() as nursery:
            nursery.start_soon(feed, source, "live/cam", demo_frames, 0.003)
            with trio.fail_after(20):
                while not target_a.has_stream(StreamKey("live", "cam")):
                    await trio.sleep(0.02)
                async with target_a.subscribe("live/cam") as sub:
                    got = []
                    async for frame in sub:
                        got.append(frame)
                        if len(got) > 60:
                            break
                assert same_frames(got, demo_frames)
                assert got[0].config  # a fresh target gets the configs first
                first_media = next(f for f in got if not f.config)
                assert first_media.keyframe  # ...and media from a keyframe on
                links = push.stream_status(StreamKey("live", "cam"))["push"]
                assert [link["state"] for link in links][0] == "connected"
                while links[1]["retries"] < 2:  # the dead target is retried, the stream goes on
                    await trio.sleep(0.05)
                    links = push.stream_status(StreamKey("live", "cam"))["push"]
                assert links[1]["state"] in ("retrying", "connecting") and links[1]["last_error"]
                assert source.stream("live/cam").publishing
                events = {(e.service, e.what) for e in observer.of_type(ServiceEvent)}  # type: ignore[attr-defined]
                assert {("push", "push-connected"), ("push", "push-failed")} <= events  # for metrics
            nursery.cancel_scope.cancel()
        assert b"token" not in json.dumps(links).encode()


async def test_pulled_copies_are_not_pushed_again(demo_frames: list) -> None:  # type: ignore[type-arg]
    async with node() as (target, target_rtmp, _):
        push = PushService([f"rtmp://{HOST}:{target_rtmp.port}/{{app}}/{{stream}}"])
        async with node(services=(push,)) as (engine, _, _), trio.open_nursery() as nursery:

            async def replica() -> None:
                async with engine.publish("live/copy", Credentials(protocol="cluster"), protocol="cluster") as pub:
                    for frame in demo_frames[:50]:
                        await pub.send(frame)
                    await trio.sleep_forever()

            nursery.start_soon(replica)
            with trio.fail_after(5):
                while not engine.has_stream(StreamKey("live", "copy")):
                    await trio.sleep(0.01)
                await trio.sleep(0.5)
            assert not target.has_stream(StreamKey("live", "copy"))
            assert push.stream_status(StreamKey("live", "copy")) == {}
            nursery.cancel_scope.cancel()


def test_push_target_parsing() -> None:
    assert PushTarget.parse("live=rtmp://h/app/{stream}").apps == frozenset({"live"})
    assert PushTarget.parse("rtmp://h/app/key?token=a=b").apps is None
    with pytest.raises(ValueError):
        PushTarget.parse("http://h/app/x")
    with pytest.raises(ValueError):
        PullSource({None: "ftp://h/{app}/{stream}"})


async def test_a_pulled_stream_is_packaged_as_hls_and_recorded_and_hls_alone_starts_the_pull(
    demo_frames: list, tmp_path, http_get
) -> None:  # type: ignore[no-untyped-def,type-arg]
    from arcly_trio.media import flv
    from arcly_trio.services import FlvRecorder, HlsService

    async with node() as (origin, origin_rtmp, _):
        pull = PullSource({None: f"rtmp://{HOST}:{origin_rtmp.port}/{{app}}/{{stream}}"}, idle=3)
        hls = HlsService(variant="ts", target_duration=0.5, all_apps=True)
        recorder = FlvRecorder(str(tmp_path), all_apps=True)
        async with (
            node(sources=(pull,), services=(hls, recorder), http=True) as (edge, _, edge_http),
            trio.open_nursery() as nursery,
        ):
            assert edge_http is not None
            nursery.start_soon(feed, origin, "live/cam", demo_frames, 0.002)
            with trio.fail_after(20):
                while not origin.has_stream(StreamKey("live", "cam")):
                    await trio.sleep(0.01)
                # Only HLS asks for it: the playlist request starts the pull, waits for the
                # pulled stream's first playlist and answers with it (no 404 first).
                status, _, body, _ = await media_playlist(http_get, edge_http.port, "/live/cam/index.m3u8")
                assert edge.sourcing.started_total == 1 and edge.has_stream(StreamKey("live", "cam"))
                assert status == 200 and b"#EXTINF" in body
                segment = uris(body)[0]
                status, _, data = await http_get(edge_http.port, f"/live/cam/{segment}")
                assert status == 200 and data[:1] == b"\x47"  # MPEG-TS
                assert edge.sourcing.started_total == 1
                assert recorder.active  # and recorded
            nursery.cancel_scope.cancel()
        recorded = [path for path in tmp_path.rglob("*.flv")]
        assert recorded
        frames = flv.read_frames(recorded[0].read_bytes())
        assert any(f.keyframe for f in frames) and same_frames(frames, demo_frames)


# ----------------------------------------------------------------- HLS and DASH of pulled streams
# (issue 19, item 1)

LISTS = [("ts", "index.m3u8"), ("ll", "index.m3u8"), ("ll", "index.mpd")]


def live_list(entry: str, body: bytes) -> bool:
    """Whether ``body`` is a live list (not one of a stream that ended)."""
    return b'type="dynamic"' in body if entry == "index.mpd" else b"#EXT-X-ENDLIST" not in body


@asynccontextmanager
async def pulling_edge(
    demo_frames: list,
    variant: str,
    **hls_options: Any,  # type: ignore[type-arg]
) -> AsyncIterator[tuple[Engine, HttpServer, Any]]:
    """An origin that publishes ``live/cam`` (paced, looped), and an edge that pulls it on
    demand and packages it in ``variant``: the edge, its HTTP server and its HLS service."""
    from arcly_trio.services import HlsService

    async with node() as (origin, origin_rtmp, _):
        pull = PullSource({None: f"rtmp://{HOST}:{origin_rtmp.port}/{{app}}/{{stream}}"}, idle=0.3)
        hls = HlsService(variant=variant, target_duration=0.5, all_apps=True, **hls_options)
        async with (
            node(sources=(pull,), services=(hls,), http=True) as (edge, _, edge_http),
            trio.open_nursery() as nursery,
        ):
            assert edge_http is not None
            nursery.start_soon(feed, origin, "live/cam", demo_frames, 0.005, 20)
            with trio.fail_after(10):
                while not origin.has_stream(StreamKey("live", "cam")):
                    await trio.sleep(0.01)
            yield edge, edge_http, hls
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("variant,entry", LISTS)
async def test_the_first_request_of_a_stream_only_a_pull_brings_gets_its_first_list(
    demo_frames: list, http_get: Any, variant: str, entry: str
) -> None:  # type: ignore[type-arg]
    async with pulling_edge(demo_frames, variant) as (edge, edge_http, hls):
        with trio.fail_after(20):
            status, _, body, _ = await media_playlist(http_get, edge_http.port, f"/live/cam/{entry}")
        assert status == 200 and live_list(entry, body), body[:300]  # not a 404 while the pull starts
        assert edge.sourcing.started_total == 1


@pytest.mark.parametrize("variant,entry", LISTS)
async def test_after_an_idle_pull_stop_a_new_viewer_gets_the_new_pulls_list_never_the_old_final_one(
    demo_frames: list, http_get: Any, variant: str, entry: str
) -> None:  # type: ignore[type-arg]
    # The old stream's final lists stay stored for a minute: what a new viewer must not get.
    async with pulling_edge(demo_frames, variant, delete_delay=60, session_timeout=0.3) as (edge, edge_http, hls):
        key = StreamKey("live", "cam")
        with trio.fail_after(30):
            status, body = 0, b""
            while status != 200:
                status, _, body, _ = await media_playlist(http_get, edge_http.port, f"/live/cam/{entry}")
                await trio.sleep(0.1)
            assert live_list(entry, body)
            # The viewer goes away: its session ends, the pull stops, the final lists are stored.
            while edge.has_stream(key) or hls.streams:
                await trio.sleep(0.05)
            media = {"ts": "index.m3u8", "ll": "video.m3u8"}[variant] if entry == "index.m3u8" else entry
            stored = await hls.storage.get(f"live/cam/{media}")
            assert not live_list(entry, stored)
            # A new viewer starts a new pull and gets its live list, not the old final one.
            status, _, body, _ = await media_playlist(http_get, edge_http.port, f"/live/cam/{entry}")
        assert edge.sourcing.started_total == 2
        assert status == 200 and live_list(entry, body), body[:400]
