"""A server WebSocket for live viewers: messages out through the direct-write egress, what the
viewer sends read by wsproto in the connection's own task.

WebSocket-FLV and the frame API's play route accept their viewers with
:meth:`~arcly_trio.workers.http.exchange.Exchange.accept_egress_websocket`. From then on a kernel
sink writes each message itself through the connection's
:class:`~arcly_trio.workers.egress.Egress`: a frame header
(:func:`~arcly_trio.protocols.http.websocket.frame_header`) in front of buffers shared by every
viewer. :class:`EgressWebSocket` does the rest in the connection's one task, with wsproto
(sans-IO): it answers pings, discards what the viewer sends (at most ``max_message_size`` bytes
a message, else it closes with 1009), notices when the viewer closes or leaves, and closes the
WebSocket properly. Its own messages (pongs, text, the close frame) go through the same egress,
so they are queued behind whatever is being written and never split a message.

Error policy: :meth:`EgressWebSocket.serve_peer` returns ``False`` once the WebSocket is closed
or the viewer has gone; the egress's :class:`~arcly_trio.core.errors.PeerGone` and
:class:`~arcly_trio.core.errors.WriteTimeout` pass through. A handshake wsproto cannot accept
raises :class:`~arcly_trio.protocols.http.router.BadRequest` (the worker answers it over HTTP).
"""

from __future__ import annotations

import trio
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import AcceptConnection, CloseConnection, Message, Ping, Request, TextMessage
from wsproto.handshake import H11Handshake

from ...protocols.http.router import BadRequest
from ..egress import Egress

__all__ = ["EgressWebSocket", "accept"]

_RECV_SIZE = 65536
_TOO_BIG = 1009


def accept(egress: Egress, request_head: bytes, headers: list[tuple[bytes, bytes]], *,
           subprotocol: str | None, max_message_size: int) -> EgressWebSocket:
    """Answer the handshake in ``request_head`` (already checked by the worker) with ``101``
    through ``egress``, selecting ``subprotocol``."""
    handshake = H11Handshake(ConnectionType.SERVER)
    handshake.receive_data(request_head)
    if not any(isinstance(event, Request) for event in handshake.events()):
        raise BadRequest("not a WebSocket handshake")
    answer = handshake.send(AcceptConnection(subprotocol=subprotocol, extra_headers=headers))
    connection = handshake.connection
    assert connection is not None
    egress.write((answer,), len(answer))
    return EgressWebSocket(egress, connection, max_message_size)  # the handshake's h11 state is let go


class EgressWebSocket:
    """An accepted server WebSocket whose messages a sink writes (see the module docstring)."""

    __slots__ = ("egress", "max_message_size", "closed", "close_code", "_ws", "_message_size")

    def __init__(self, egress: Egress, ws: Connection, max_message_size: int) -> None:
        self.egress = egress
        self.max_message_size = max_message_size
        self.closed = False
        """The WebSocket is closed (by either side) or the viewer has gone."""
        self.close_code: int | None = None
        """The code of the viewer's close frame, if it sent one."""
        self._ws = ws
        self._message_size = 0

    def send_text(self, text: str) -> None:
        """Queue a text message (written after whatever is queued)."""
        if self._ws.state is ConnectionState.OPEN:
            self._write(self._ws.send(TextMessage(text)))

    def _write(self, data: bytes) -> None:
        self.egress.write((data,), len(data))

    async def serve_peer(self) -> bool:
        """Wait for what the viewer sends (draining the egress first as needed) and handle it;
        return early when interrupted (:meth:`Egress.poke`). ``False`` once the WebSocket is
        closed or the viewer has gone."""
        if self.closed:
            return False
        data = await self.egress.receive(_RECV_SIZE)
        if data is None:
            return True
        if not data:
            self.closed = True
            return False
        ws = self._ws
        ws.receive_data(data)
        for event in ws.events():
            if isinstance(event, Ping):
                self._write(ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                self.close_code = event.code
                if ws.state is ConnectionState.REMOTE_CLOSING:
                    self._write(ws.send(event.response()))
                elif ws.state is ConnectionState.OPEN:  # what it sent broke the protocol
                    self._write(ws.send(CloseConnection(event.code, event.reason)))
                self.closed = True
                return False
            elif isinstance(event, Message):
                self._message_size += len(event.data)
                if self._message_size > self.max_message_size:
                    self._write(ws.send(CloseConnection(_TOO_BIG, "message too big")))
                    self.closed = True
                    return False
                if event.message_finished:
                    self._message_size = 0
        return True

    async def close(self, code: int, reason: str, timeout: float = 2.0) -> None:
        """Close the WebSocket with ``code`` after whatever is queued, and wait (at most
        ``timeout`` seconds) for the viewer's close frame."""
        ws = self._ws
        if ws.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
            self._write(ws.send(CloseConnection(code, reason)))
        self.closed = True
        with trio.move_on_after(timeout):
            await self.egress.drain()
            while ws.state is ConnectionState.LOCAL_CLOSING:
                data = await self.egress.receive(_RECV_SIZE)
                if data is None:
                    continue
                if not data:
                    return
                ws.receive_data(data)
                for _ in ws.events():  # a close frame moves it to CLOSED
                    pass
