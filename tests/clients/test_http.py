"""The HTTP client (``arcly_trio/clients/http.py``) against a raw trio server that records what it
was sent: ``http_request`` returns any status whole, sends the method and headers asked for (a
``Host`` given replaces ours), reads no body after ``HEAD``, and a silent server is
``ConnectionLost`` after the timeout; ``open_http_get`` still refuses a status other than 200."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from arcly_trio.clients.http import HttpReply, http_request, open_http_get
from arcly_trio.core.errors import ConnectionLost, RemoteRefused


@asynccontextmanager
async def answering(response: bytes, heads: list[bytes]) -> AsyncIterator[int]:
    """A server on 127.0.0.1 that records each request head in ``heads`` and sends ``response``
    (``b""``: says nothing); yields its port."""

    async def serve(stream: trio.SocketStream) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            head += await stream.receive_some(65536)
        heads.append(head)
        if response:
            await stream.send_all(response)
            await stream.aclose()
        else:
            await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
        await nursery.start(trio.serve_listeners, serve, [listener])
        yield listener.socket.getsockname()[1]
        nursery.cancel_scope.cancel()


async def test_any_status_comes_back_whole_with_the_method_and_headers_asked_for() -> None:
    heads: list[bytes] = []
    response = b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 4\r\n\r\nnope"
    with trio.fail_after(5):
        async with answering(response, heads) as port:
            reply = await http_request(
                f"http://127.0.0.1:{port}/api/x?a=1",
                method="DELETE",
                headers=[("Host", "example.test"), ("x-token", "k")],
            )
    assert reply == HttpReply(404, {"content-type": "text/plain", "content-length": "4"}, b"nope")
    lines = heads[0].decode().lower().split("\r\n")
    assert lines[0] == "delete /api/x?a=1 http/1.1"
    assert "host: example.test" in lines and "x-token: k" in lines and "user-agent: arcly-trio" in lines
    assert sum(line.startswith("host:") for line in lines) == 1  # the Host given replaces ours


async def test_head_reads_no_body() -> None:
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
    with trio.fail_after(5):
        async with answering(response, []) as port:
            reply = await http_request(f"http://127.0.0.1:{port}/live/cam.flv", method="HEAD")
    assert (reply.status, reply.headers["content-length"], reply.body) == (200, "1000", b"")


async def test_a_silent_server_is_connection_lost_after_the_timeout() -> None:
    with trio.fail_after(5):
        async with answering(b"", []) as port:
            with pytest.raises(ConnectionLost, match="no response within 0.2 s"):
                await http_request(f"http://127.0.0.1:{port}/", timeout=0.2)


async def test_open_http_get_still_refuses_a_status_other_than_200() -> None:
    response = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 6\r\n\r\ndenied"
    with trio.fail_after(5):
        async with answering(response, []) as port:
            with pytest.raises(RemoteRefused, match="denied"):
                async with open_http_get(f"http://127.0.0.1:{port}/"):
                    pass
