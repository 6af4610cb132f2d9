"""The lean LL-HLS load generator (``arcly_trio/clients/hls_load.py``, a benchmark driver) run in
a thread next to an in-process server: two viewers follow a stream published at four times real
time with no gap and no error, fetching (nearly) every part of both renditions; a server that
answers without ``Content-Length`` or refuses the playlist is an error per connection, retried,
never an exception."""

from __future__ import annotations

import threading
from typing import Any

import trio

from arcly_trio.clients.hls_load import LlhlsLoad
from arcly_trio.core.frame import Frame
from tests.clients.test_http import answering
from tests.services.test_hls_cmaf import llhls_server, packaged, stored, video_of


async def test_the_lean_generator_follows_parts_as_they_come_without_gaps(demo_frames: list[Frame]) -> None:
    def parts(hls: Any) -> int:
        renditions = hls.live["live/demo"].packager.renditions.values()
        return sum(len(r.open_parts) + sum(len(s.parts) for s in r.segments) for r in renditions)

    async with llhls_server() as (engine, http, hls), engine.publish("live/demo") as publisher:
        frames, pos = await packaged(publisher, demo_frames, hls, lambda: stored(hls) and bool(video_of(hls).segments))
        load = LlhlsLoad("127.0.0.1", http.port, "/live/demo/index.m3u8", 2)
        done = threading.Event()
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(lambda: trio.to_thread.run_sync(load.run, 60, done.is_set))
                while load.connections < 4 or load.counts.parts < 4:
                    await trio.sleep(0.01)
                first = parts(hls)
                start = pos
                while pos + 1 < min(len(frames), start + 300):
                    await publisher.send(frames[pos])
                    await trio.sleep(max(0, frames[pos + 1].dts - frames[pos].dts) / 4000)
                    pos += 1
                await trio.sleep(0.3)
                new_parts = parts(hls) - first
                done.set()
        load.close()
    counts = load.counts
    assert counts.errors == 0 and counts.gaps == 0
    assert new_parts > 20
    assert counts.parts >= 2 * (new_parts - 4), (counts, new_parts)
    assert load.requests >= counts.parts + counts.playlists


async def test_unreadable_or_refused_answers_are_errors_of_their_connection_retried() -> None:
    for response in (
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nbody",
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
    ):
        heads: list[bytes] = []
        async with answering(response, heads) as port:
            load = LlhlsLoad("127.0.0.1", port, "/live/demo/index.m3u8", 1, retry=0.01)
            with trio.fail_after(10):
                await trio.to_thread.run_sync(load.run, 10, lambda: load.counts.errors >= 3)
            load.close()
        assert load.counts.errors >= 3 and len(heads) >= 3
        assert heads[0].startswith(b"GET /live/demo/index.m3u8 HTTP/1.1\r\nHost: 127.0.0.1\r\n")
