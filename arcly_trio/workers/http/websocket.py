"""Handing an HTTP connection over to trio-websocket after h11 has read the handshake.

To accept an upgrade the worker gives trio-websocket a stream that first replays the request
head (rebuilt from h11's parsed request, see
:func:`arcly_trio.protocols.http.websocket.rebuild_request_head`) and then reads the socket;
trio-websocket's public :func:`trio_websocket.wrap_server_stream` parses it again with wsproto
and answers ``101``.

Error policy: :class:`ReplayStream` passes the transport's errors through unchanged.
"""

from __future__ import annotations

import trio

__all__ = ["ReplayStream"]


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
