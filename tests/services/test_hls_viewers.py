"""What many LL-HLS viewers cost: how a change of a stream's lists wakes the requests held on it
(:class:`~arcly_trio.services._hls_cmaf.LiveCmaf`: every one, and in turns, so that the
scheduler polls sockets between turns; thousands of held reloads answered in one pass of the
scheduler stalled every other connection of the server), playlists cut for players' queries once
per render (not per request), and the project's load generator
(:func:`arcly_trio.clients.hls.follow_llhls`) following a real server in-process."""

from __future__ import annotations

import trio

from arcly_trio.clients.hls import LlhlsStats, follow_llhls, parse_media_playlist
from arcly_trio.clients.hls_follower import part_uri
from arcly_trio.core.frame import Frame
from arcly_trio.media.cmaf import CmafPackager
from arcly_trio.services import _hls_dvr, hls_routes
from arcly_trio.services._hls_cmaf import WAKE_TURN, LiveCmaf
from tests._hls import parts_made, publish_faster
from tests.services.test_hls_cmaf import llhls_server, packaged, stored, video_of


async def test_one_change_wakes_every_waiter_in_turns_with_passes_of_the_scheduler_between() -> None:
    """1000 waiters of one change all wake, at most a turn of them per pass of the scheduler:
    a task that counts its own passes (each ``sleep(0)`` is one) sees them spread over at least
    ``1000 / WAKE_TURN`` passes (it runs anywhere in a pass, so one value of its count may
    cover the end of one turn and the start of the next). Mutant killed: one ``trio.Event`` set for all (every waiter
    woke in the same pass: one value of the counter)."""
    live = LiveCmaf(CmafPackager(2.0, 1 / 3, 6), True)
    passes = 0
    woken: list[int] = []
    count = 1000

    async def waiter() -> None:
        assert await live.wait(trio.current_time() + 60)
        woken.append(passes)

    async def counter() -> None:
        nonlocal passes
        while len(woken) < count:
            passes += 1
            await trio.sleep(0)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for _ in range(count):
                nursery.start_soon(waiter)
            while live.waiting < count:
                await trio.sleep(0)
            start = passes
            nursery.start_soon(counter)
            live.notify()
    assert len(woken) == count and live.waiting == 0
    per_pass: dict[int, int] = {}
    for value in woken:
        per_pass[value] = per_pass.get(value, 0) + 1
    assert max(per_pass.values()) <= 2 * WAKE_TURN
    assert max(woken) - start >= count // WAKE_TURN - 1


async def test_a_waiter_that_comes_back_for_the_next_change_is_not_woken_by_this_one(autojump_clock) -> None:  # type: ignore[no-untyped-def]
    """The relay of one change wakes only its own waiters: one that was answered and waits
    again (the next blocking reload) sleeps until the next change, and times out without it.
    Mutant killed: one lot for every change (the relay woke the returning waiter at once, which
    would spin through every change's relay)."""
    live = LiveCmaf(CmafPackager(2.0, 1 / 3, 6), True)
    results: list[bool] = []

    async def twice() -> None:
        results.append(await live.wait(trio.current_time() + 60))
        results.append(await live.wait(trio.current_time() + 1))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for _ in range(3 * WAKE_TURN):
                nursery.start_soon(twice)
            while live.waiting < 3 * WAKE_TURN:
                await trio.sleep(0)
            live.notify()
    assert results.count(True) == 3 * WAKE_TURN and results.count(False) == 3 * WAKE_TURN


async def test_playlists_are_cut_for_queries_once_per_render(demo_frames, http_get, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Every playlist request carries a session id that each URI of the answer repeats: 60
    requests of one render (plain and blocking reloads, the multivariant playlist) cut each
    playlist once at most (the first request after its render: the cut is made when first read,
    see :class:`~arcly_trio.services._hls_dvr.QueryPieces`); the answers are still the stored
    playlist with the query. Mutant killed: the routes cutting the stored bytes at each request
    (``query_pieces`` per answer)."""
    calls = [0]
    original = _hls_dvr.query_pieces

    def counting(playlist: bytes) -> list[bytes]:
        calls[0] += 1
        return original(playlist)

    monkeypatch.setattr(_hls_dvr, "query_pieces", counting)
    monkeypatch.setattr(hls_routes, "query_pieces", counting)
    async with llhls_server() as (engine, http, hls), engine.publish("live/demo") as publisher:
        await packaged(publisher, demo_frames, hls, lambda: stored(hls) and bool(video_of(hls).segments))
        video = video_of(hls)
        msn = video.segments[-1].sequence
        before = calls[0]
        with trio.fail_after(10):
            for _ in range(20):
                for target in ("/live/demo/video.m3u8?token=x", f"/live/demo/video.m3u8?_HLS_msn={msn}",
                               "/live/demo/index.m3u8"):  # fmt: skip
                    status, _, body = await http_get(http.port, target)
                    assert status == 200
        assert calls[0] - before <= 2  # video.m3u8 and index.m3u8, once each
        assert b".mp4?token=x&arcly_session=" in (await http_get(http.port, "/live/demo/video.m3u8?token=x"))[2]


async def test_the_load_generator_follows_parts_as_they_come_without_gaps(demo_frames: list[Frame]) -> None:
    """Two LL-HLS viewers of the load generator follow a stream published at four times real
    time: they fetch (nearly) every part the packager makes, of both renditions, through
    blocking reloads and preload hints, with no gap and no error."""

    async with llhls_server() as (engine, http, hls), engine.publish("live/demo") as publisher:
        frames, pos = await packaged(publisher, demo_frames, hls, lambda: stored(hls) and bool(video_of(hls).segments))
        stats = LlhlsStats()
        stop = trio.Event()
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                for _ in range(2):
                    nursery.start_soon(follow_llhls, "127.0.0.1", http.port, "/live/demo/index.m3u8", stats, stop)
                while stats.renditions < 4 or stats.parts < 4:
                    await trio.sleep(0.01)
                first = parts_made(hls)
                pos = await publish_faster(publisher, frames, pos)
                await trio.sleep(0.3)
                new_parts = parts_made(hls) - first
                stop.set()
    assert stats.errors == 0 and stats.gaps == 0
    assert new_parts > 20
    assert stats.parts >= 2 * (new_parts - 4), (stats, new_parts)


def test_the_load_generator_reads_the_live_edge_of_a_playlist() -> None:
    body = (
        b'#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:7\n#EXT-X-MAP:URI="i.mp4?s=1"\n'
        b'#EXT-X-PART:DURATION=0.3,URI="v-7.0.m4s?s=1",INDEPENDENT=YES\n#EXTINF:2.0,\nv-7.m4s?s=1\n'
        b'#EXT-X-PART:DURATION=0.3,URI="v-8.0.m4s?s=1"\n#EXT-X-PART:DURATION=0.3,URI="v-8.1.m4s?s=1"\n'
        b'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="v-8.2.m4s?s=1"\n'
    )
    playlist = parse_media_playlist(body)
    assert (playlist.open_msn, playlist.open_parts) == (8, 2)
    assert [(msn, index, part_uri(line)) for msn, index, line in playlist.parts] == [
        (7, 0, b"v-7.0.m4s?s=1"), (8, 0, b"v-8.0.m4s?s=1"), (8, 1, b"v-8.1.m4s?s=1")]  # fmt: skip
    assert playlist.first_msn == 7 and playlist.segment_duration(7) == 2.0 and playlist.segment_duration(8) is None
    assert playlist.closed == ((7, 1),)
    assert playlist.hint == b"v-8.2.m4s?s=1" and playlist.init == b"i.mp4?s=1" and not playlist.ended
