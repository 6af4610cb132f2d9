"""The one connection runner (:mod:`arcly_trio.workers.serving`): listening, admission, the
handler's task, errors and closing; and the workers built on it."""

from __future__ import annotations

import logging
import os

import pytest
import trio

from arcly_trio.workers.admission import Ticket
from arcly_trio.workers.http import HttpServer
from arcly_trio.workers.rtmp import RtmpServer
from arcly_trio.workers.serving import ConnectionRunner, Listener

log = logging.getLogger("tests.serving")


async def read_all(stream: trio.abc.Stream) -> bytes:
    data = b""
    while chunk := await stream.receive_some(4096):
        data += chunk
    return data


async def test_the_runner_reports_its_port_and_runs_the_handler_then_closes_the_stream() -> None:
    runner = ConnectionRunner(Listener(host="127.0.0.1", port=0), name="test", label="test connection", log=log)
    seen: list[tuple[str, int]] = []

    async def handler(stream: trio.abc.Stream, peer: tuple[str, int], ticket: Ticket) -> None:
        seen.append(peer)
        await stream.send_all(b"hello")  # and returns: the runner closes the stream

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(runner.serve, handler)
            assert port == runner.port and runner.listening
            client = await trio.open_tcp_stream("127.0.0.1", port)
            assert await read_all(client) == b"hello"
            await client.aclose()
            assert seen[0][0] == "127.0.0.1"
            assert runner.accepted == 1 and runner.admission.open == 0
            nursery.cancel_scope.cancel()
    assert not runner.listening


async def test_a_connection_without_a_slot_gets_the_refusal_and_is_closed() -> None:
    runner = ConnectionRunner(
        Listener(host="127.0.0.1", port=0, max_connections=1),
        name="test",
        label="test connection",
        log=log,
        refuse=lambda stream: stream.send_all(b"busy"),
    )
    release = trio.Event()

    async def handler(stream: trio.abc.Stream, peer: tuple[str, int], ticket: Ticket) -> None:
        ticket.busy()  # a busy connection is never evicted
        await stream.send_all(b"served")
        await release.wait()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(runner.serve, handler)
            first = await trio.open_tcp_stream("127.0.0.1", port)
            assert await first.receive_some(6) == b"served"
            second = await trio.open_tcp_stream("127.0.0.1", port)
            assert await read_all(second) == b"busy"
            release.set()
            assert await read_all(first) == b""
            assert runner.accepted == 1
            nursery.cancel_scope.cancel()


async def test_a_handler_bug_is_counted_logged_and_closes_only_its_connection(caplog: pytest.LogCaptureFixture) -> None:
    runner = ConnectionRunner(Listener(host="127.0.0.1", port=0), name="test", label="test connection", log=log)
    calls = 0

    async def handler(stream: trio.abc.Stream, peer: tuple[str, int], ticket: Ticket) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ZeroDivisionError("handler bug")
        await stream.send_all(b"ok")

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(runner.serve, handler)
            for expected in (b"", b"ok"):
                client = await trio.open_tcp_stream("127.0.0.1", port)
                assert await read_all(client) == expected
                await client.aclose()
            nursery.cancel_scope.cancel()
    assert runner.failures == 1 and runner.admission.open == 0
    bug = [record for record in caplog.records if "internal error" in record.getMessage()]
    assert len(bug) == 1 and bug[0].exc_info is not None and "test 127.0.0.1:" in bug[0].getMessage()


async def test_the_runner_listens_on_its_unix_socket_too(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "worker.sock")
    runner = ConnectionRunner(
        Listener(host="127.0.0.1", port=0, unix_socket=path), name="test", label="test connection", log=log
    )
    peers: list[tuple[str, int]] = []

    async def handler(stream: trio.abc.Stream, peer: tuple[str, int], ticket: Ticket) -> None:
        peers.append(peer)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(runner.serve, handler)
            assert os.stat(path).st_mode & 0o777 == 0o600
            client = await trio.open_unix_socket(path)
            assert await read_all(client) == b""
            nursery.cancel_scope.cancel()
    assert peers == [("local", 0)]


@pytest.mark.parametrize("worker", [RtmpServer, HttpServer])
def test_a_worker_takes_its_listener_or_its_options_not_both(worker: type) -> None:
    listener = Listener(host="127.0.0.1", port=0, max_connections=7, write_timeout=3.0, unix_socket="/tmp/x.sock")
    server = worker(listener=listener)
    assert server.listener is listener
    assert (server.host, server.requested_port, server.unix_socket, server.write_timeout) == (
        "127.0.0.1",
        0,
        "/tmp/x.sock",
        3.0,
    )
    assert server.admission.max_connections == 7 and server.port is None and not server.listening
    with pytest.raises(TypeError, match="not both"):
        worker("127.0.0.1", listener=listener)
    assert worker("127.0.0.1", 0, max_connections=7).listener == Listener(host="127.0.0.1", port=0, max_connections=7)
