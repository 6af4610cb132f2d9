"""Handing an HTTP connection over to trio-websocket after h11 has read the handshake.

The HTTP worker reads every request with h11, WebSocket handshakes included (so routing,
limits and errors are the same for both). To accept an upgrade it gives trio-websocket a
stream that first replays the request head (rebuilt from h11's parsed request: method, target,
headers as received) and then reads the socket; trio-websocket's public
:func:`trio_websocket.wrap_server_stream` parses it again with wsproto and answers ``101``.

Before handing over, :func:`handshake_problem` checks what wsproto would refuse, so a bad
handshake gets a plain HTTP error from h11 instead of a connection that never opens.
"""

from __future__ import annotations

import h11
import trio

from .router import HttpRequest

__all__ = ["ReplayStream", "rebuild_request_head", "handshake_problem"]


def handshake_problem(request: HttpRequest) -> tuple[int, str] | None:
    """``(status, reason)`` if ``request`` is not an acceptable WebSocket opening handshake
    (RFC 6455 section 4.2.1), else ``None``."""
    if request.method != "GET":
        return 400, "a WebSocket handshake must be a GET"
    if request.http_version != "1.1":
        return 400, "a WebSocket handshake needs HTTP/1.1"
    key = request.header("sec-websocket-key")
    if not key or "," in key:
        return 400, "missing or repeated Sec-WebSocket-Key"
    if request.header("sec-websocket-version") != "13":
        return 426, "only WebSocket version 13 is supported"
    if not request.header("host"):
        return 400, "missing Host header"
    return None


def rebuild_request_head(event: h11.Request) -> bytes:
    """The bytes of a request head equivalent to the one h11 parsed into ``event``."""
    lines = [b"%s %s HTTP/%s\r\n" % (event.method, event.target, event.http_version)]
    for name, value in event.headers.raw_items():
        lines.append(b"%s: %s\r\n" % (name, value))
    lines.append(b"\r\n")
    return b"".join(lines)


class ReplayStream(trio.abc.Stream):
    """``stream``, except that ``receive_some`` returns ``prefix`` first.

    Sending and closing go straight to ``stream``; closing this closes ``stream``.
    """

    def __init__(self, stream: trio.abc.Stream, prefix: bytes) -> None:
        self.transport_stream = stream
        self._prefix = prefix

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._prefix:
            await trio.lowlevel.checkpoint()
            size = len(self._prefix) if max_bytes is None else max_bytes
            data, self._prefix = self._prefix[:size], self._prefix[size:]
            return data
        return await self.transport_stream.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.transport_stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport_stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self.transport_stream.aclose()
