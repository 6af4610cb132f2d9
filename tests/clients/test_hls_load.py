"""The lean LL-HLS load generator (``arcly_trio/clients/hls_load.py``, a benchmark driver) run in
a thread next to an in-process server: two viewers follow a stream published at four times real
time with no gap and no error, fetching (nearly) every part of both renditions; a server that
answers without ``Content-Length`` or refuses the playlist is an error per connection, retried,
never an exception. Its response reader, fed bytes directly (hypothesis): answers cut anywhere
read as whole, any bytes are read or an error, what a connection holds stays bounded."""

from __future__ import annotations

import selectors
import socket
import threading
from typing import Any

import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from arcly_trio.clients.hls_load import LlhlsLoad
from arcly_trio.core.frame import Frame
from tests._hls import parts_made, publish_faster
from tests.clients.test_http import answering
from tests.services.test_hls_cmaf import llhls_server, packaged, stored, video_of


async def test_the_lean_generator_follows_parts_as_they_come_without_gaps(demo_frames: list[Frame]) -> None:
    async with llhls_server() as (engine, http, hls), engine.publish("live/demo") as publisher:
        frames, pos = await packaged(publisher, demo_frames, hls, lambda: stored(hls) and bool(video_of(hls).segments))
        load = LlhlsLoad("127.0.0.1", http.port, "/live/demo/index.m3u8", 2)
        done = threading.Event()
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(lambda: trio.to_thread.run_sync(load.run, 60, done.is_set))
                while load.connections < 4 or load.counts.parts < 4:
                    await trio.sleep(0.01)
                first = parts_made(hls)
                pos = await publish_faster(publisher, frames, pos)
                await trio.sleep(0.3)
                new_parts = parts_made(hls) - first
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


def _response(status: int, body: bytes, header: bytes = b"content-length") -> bytes:
    return b"HTTP/1.1 %d X\r\n%s: %d\r\nx-pad: y\r\n\r\n%s" % (status, header, len(body), body)


def _answers() -> list[bytes]:
    """What a server answers a follower's first batches: the playlist; the live edge part, the
    blocking reload and the hinted part; the next reload and a hinted part that never came."""
    from tests.clients.test_hls_follower import _playlist

    return [_response(200, _playlist(5, [3], 2)), _response(200, b"p" * 3000, b"Content-Length"),
            _response(200, _playlist(5, [3], 3)), _response(200, b"h" * 2000), _response(200, _playlist(5, [3], 4)),
            _response(404, b"")]  # fmt: skip


def _fed(chunks: list[bytes]) -> tuple[Any, ...]:
    """A lean generator's connection (on a socket pair, so that its requests go somewhere) fed
    ``chunks`` as if read one after another: its counts and what it holds between reads."""
    from arcly_trio.clients.hls_follower import RenditionFollower
    from arcly_trio.clients.hls_load import _Connection

    load = LlhlsLoad("127.0.0.1", 9, "/live/demo/index.m3u8", 0, max_body=1 << 16)
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    connection = _Connection(b"/live/demo/video.m3u8", RenditionFollower(b"/live/demo/video.m3u8", load.counts))
    connection.sock, connection.connected = ours, True
    load._selector.register(ours, selectors.EVENT_READ, connection)
    load._send(connection, connection.follower.start())  # type: ignore[union-attr]
    held = 0
    try:
        for chunk in chunks:
            if connection.sock is None:
                break
            load._feed(connection, bytearray(chunk), len(chunk))
            held = max(held, len(connection.buffer))
    finally:
        load.close()
        theirs.close()
    counts = load.counts
    return (counts.playlists, counts.parts, counts.bytes, counts.gaps, counts.errors), held


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(1, 400), max_size=30))
def test_answers_cut_anywhere_read_as_whole(cuts: list[int]) -> None:
    """The same answers read in pieces of any size give the same counts as read at once, and a
    connection holds at most an unfinished head or playlist between reads (never a part body)."""
    stream = b"".join(_answers())
    pieces, at = [], 0
    for cut in cuts:
        pieces.append(stream[at : at + cut])
        at += cut
    pieces.append(stream[at:])
    whole, _ = _fed([stream])
    assert whole == (3, 2, 5000, 0, 0)
    split, held = _fed([piece for piece in pieces if piece])
    assert split == whole
    assert held < max(len(answer) for answer in _answers() if b"#EXTM3U" in answer)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=200), st.sampled_from(_answers())), max_size=12))
def test_any_bytes_are_read_or_an_error_of_the_connection(chunks: list[bytes]) -> None:
    """Whatever a server sends, the generator never raises; what a connection holds stays under
    the head limit plus the largest body it accepts."""
    from arcly_trio.clients.hls_load import MAX_HEAD

    _, held = _fed([chunk for chunk in chunks if chunk])
    assert held <= MAX_HEAD + (1 << 16) + 400
