"""The HTTP/1.1 connection's plain-request path (strict head reader, no h11 per request, one
moved deadline): pipelined heads in one packet, a head split across reads, HTTP/1.0,
``Connection: close``, ``HEAD``, a bad head after good ones, and both timeouts.

The connection is driven over in-memory streams (``_handle``, as the runner calls it) so a
test decides exactly what each read returns; timers run on trio's ``autojump_clock``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import h11
import pytest
import trio
import trio.testing

from arcly_trio.workers.http import HttpServer
from tests._serving import serving

PEER = ("127.0.0.1", 4000)
HEALTH = b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n"


@asynccontextmanager
async def connection(
    *, lockstep: bool = False, **options: Any
) -> AsyncIterator[tuple[trio.abc.Stream, HttpServer, trio.Event]]:
    """A client stream to one connection of a real HTTP worker (``options``); the event is set
    when the server is done with the connection."""
    async with serving(**options) as (_, _, server):
        pair = trio.testing.lockstep_stream_pair() if lockstep else trio.testing.memory_stream_pair()
        ours, theirs = pair
        done = trio.Event()
        ticket = server.admission.admit(PEER[0])
        assert ticket is not None

        async def run() -> None:
            try:
                await server._handle(ours, PEER, ticket)
            finally:
                await ours.aclose()
                ticket.release()
                done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run)
            yield theirs, server, done
            nursery.cancel_scope.cancel()


async def read_all(stream: trio.abc.Stream) -> bytes:
    """Everything the server writes until it closes."""
    out = bytearray()
    while True:
        try:
            data = await stream.receive_some(65536)
        except trio.BrokenResourceError:
            break
        if not data:
            break
        out += data
    return bytes(out)


def responses(data: bytes, methods: list[str]) -> list[tuple[int, dict[bytes, bytes], bytes]]:
    """The responses in ``data`` to requests of ``methods`` (status, headers, body), read with h11."""
    conn = h11.Connection(h11.CLIENT)
    out = []
    for method in methods:
        conn.send(h11.Request(method=method, target="/", headers=[("host", "x")]))
        conn.send(h11.EndOfMessage())
        if data:
            conn.receive_data(data)
            data = b""
        event = conn.next_event()
        if event is h11.NEED_DATA:
            break
        assert isinstance(event, h11.Response), event
        body = b""
        while not isinstance(part := conn.next_event(), h11.EndOfMessage):
            assert isinstance(part, h11.Data)
            body += part.data
        out.append((event.status_code, dict(event.headers), body))
        if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
            break
        conn.start_next_cycle()
    return out


async def test_pipelined_heads_in_one_packet_are_answered_in_order() -> None:
    heads = [HEALTH, b"HEAD /api/health HTTP/1.1\r\nHost: x\r\n\r\n", HEALTH, b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"]
    with trio.fail_after(10):
        async with connection() as (client, _, done):
            await client.send_all(
                b"".join(heads * 3) + b"GET /api/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            answered = responses(await read_all(client), ["GET", "HEAD", "GET", "GET"] * 3 + ["GET"])
            await done.wait()
    assert [status for status, _, _ in answered] == [200, 200, 200, 404] * 3 + [200]
    assert answered[1][2] == b"" and answered[1][1][b"content-length"] == answered[0][1][b"content-length"]
    assert answered[-1][1][b"connection"] == b"close"


async def test_a_head_split_across_reads_is_served_once_whole() -> None:
    request = HEALTH + HEALTH.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
    with trio.fail_after(10):
        async with connection() as (client, _, done):
            for byte in range(len(request)):  # one byte per read of the server
                await client.send_all(request[byte : byte + 1])
                await trio.testing.wait_all_tasks_blocked()
            answered = responses(await read_all(client), ["GET", "GET"])
            await done.wait()
    assert [status for status, _, _ in answered] == [200, 200]


@pytest.mark.parametrize(
    "request_head",
    [
        b"GET /api/health HTTP/1.0\r\n\r\n",
        b"GET /api/health HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Close\r\n\r\n",
    ],
)
async def test_http_1_0_and_connection_close_get_one_answer_then_the_connection_closes(request_head: bytes) -> None:
    with trio.fail_after(10):
        async with connection() as (client, _, done):
            await client.send_all(request_head + HEALTH)  # the second is never answered
            data = await read_all(client)
            await done.wait()
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert data.count(b"HTTP/1.1") == 1
    assert b"\r\nconnection: close\r\n" in data.lower()


async def test_a_bad_head_after_good_pipelined_ones_is_refused_after_their_answers(caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.WARNING, "arcly_trio.server.logs")
    with trio.fail_after(10):
        async with connection() as (client, server, done):
            await client.send_all(HEALTH + HEALTH + b"GET / HTTP/1.1\r\nHost: x\r\nBad header\r\n\r\n" + HEALTH)
            answered = responses(await read_all(client), ["GET"] * 4)
            await done.wait()
        assert [status for status, _, _ in answered] == [200, 200, 400]
        assert answered[2][1][b"connection"] == b"close"
        async with connection() as (client, _, done):  # the next connection is served as usual
            await client.send_all(HEALTH.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
            assert [status for status, _, _ in responses(await read_all(client), ["GET"])] == [200]


async def test_a_head_that_is_not_plain_is_read_by_h11_and_the_next_plain_one_after_it() -> None:
    with trio.fail_after(10):
        async with connection() as (client, _, done):
            await client.send_all(
                b"POST /api/health HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
                + b"OPTIONS /api/health HTTP/1.1\r\nHost: x\r\n\r\n"
                + HEALTH.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
            )
            answered = responses(await read_all(client), ["POST", "OPTIONS", "GET"])
            await done.wait()
    assert [status for status, _, _ in answered] == [405, 204, 200]


async def test_an_idle_keep_alive_connection_and_a_slow_head_time_out(autojump_clock, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.DEBUG, "arcly_trio")
    with trio.fail_after(100):
        async with connection(header_timeout=5) as (client, _, done):
            await client.send_all(HEALTH)
            assert [status for status, _, _ in responses(await read_all(client), ["GET"])] == [200]
            await done.wait()
        assert any("idle keep-alive connection" in r.getMessage() for r in caplog.records)
        async with connection(header_timeout=5) as (client, _, done):
            await client.send_all(HEALTH + b"GET /api/health HTTP/1.1\r\nHo")
            await done.wait()
        assert any("request head not complete after 5 s" in r.getMessage() for r in caplog.records)


async def test_a_client_that_does_not_read_is_dropped_after_the_write_timeout(autojump_clock, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.INFO, "arcly_trio")
    with trio.fail_after(100):
        async with connection(lockstep=True, write_timeout=7) as (client, _, done):
            await client.send_all(HEALTH)  # and never reads the answer
            await done.wait()
    assert any("dropped: a write blocked for 7 s" in r.getMessage() for r in caplog.records)
