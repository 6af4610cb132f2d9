"""The server's WebSockets: messages out through the direct-write egress, what the peer sends
read in the connection's own task (:class:`~arcly_trio.protocols.http.ws_reader.WebSocketReader`)
and held to :class:`WebSocketLimits`.

Every WebSocket route accepts its peer with
:meth:`~arcly_trio.workers.http.exchange.Exchange.accept_egress_websocket`: WebSocket-FLV and the
frame API's viewers, its ``/ingest`` publishers, and the refusals of both (told why, then
closed). For viewers a kernel sink writes each message itself through the connection's
:class:`~arcly_trio.workers.egress.Egress`: a frame header
(:func:`~arcly_trio.protocols.http.websocket.frame_header`) in front of buffers shared by every
viewer. :class:`EgressWebSocket` does the rest in the connection's one task, with the sans-IO
:class:`~arcly_trio.protocols.http.ws_reader.WebSocketReader` (it reads as wsproto reads, at a
fraction of its cost; wsproto still answers the handshake): it answers pings, discards what a
viewer sends (:meth:`EgressWebSocket.serve_peer`) or hands a publisher its whole messages one
at a time (:meth:`EgressWebSocket.receive_message`; a message that came in one frame is handed
out as unmasked, not copied again),
notices when the peer closes or leaves, and closes the WebSocket properly. Its own messages
(pongs, text, the close frame) go through the same egress, so they are queued behind whatever
is being written and never split a message.

Resource handling: every frame the peer sends goes through a
:class:`~arcly_trio.protocols.http.websocket.WebSocketGuard`: a message's bytes and fragments are
capped (empty or 1-byte continuation frames cannot pile up), a message that takes longer than
its grace must keep a minimum rate (checked on every frame and, while a message is in
progress, by a timer), and control frames are rate-limited. At the first frame over a limit the
WebSocket is closed (1009 or 1008 with a reason that names the limit; one log line) and nothing
more the peer sent is parsed (it is read and dropped for at most a second, so that the close
frame reaches the peer before the connection closes). A message being assembled is held in one growing buffer (its real
bytes), so what a peer makes the server hold is bounded by ``max_message``. A turn of the
connection's task handles at most :data:`EVENTS_PER_TURN` frames before it lets the other tasks
run, so no single read (64 KiB: some ten thousand empty frames) stalls the event loop; a
publisher's whole messages of one read go out up to :data:`MESSAGES_PER_TURN` before it lets
them run (a trip through the scheduler for each costs as much as the frame's own work).

Error policy: :meth:`EgressWebSocket.serve_peer` returns ``False`` and
:meth:`EgressWebSocket.receive_message` ``None`` once the WebSocket is closed (by either side,
or for breaking a limit: :attr:`EgressWebSocket.violation`) or the peer has gone; the egress's
:class:`~arcly_trio.core.errors.PeerGone` and :class:`~arcly_trio.core.errors.WriteTimeout` pass
through. A handshake wsproto cannot accept raises
:class:`~arcly_trio.protocols.http.router.BadRequest` (the worker answers it over HTTP).
"""

from __future__ import annotations

import contextlib
import io
import logging
import math

import trio
from wsproto.connection import ConnectionType
from wsproto.events import AcceptConnection, Request
from wsproto.handshake import H11Handshake
from wsproto.utilities import RemoteProtocolError as WsprotoRemoteError

from arcly_trio.protocols.http.router import BadRequest
from arcly_trio.protocols.http.websocket import (
    OPCODE_TEXT,
    Violation,
    WebSocketGuard,
    WebSocketLimits,
    frame_header,
)
from arcly_trio.protocols.http.ws_reader import OPCODE_PING, OPCODE_PONG, CloseReceived, WebSocketReader, close_frame
from arcly_trio.workers.egress import Egress

__all__ = ["EVENTS_PER_TURN", "MESSAGES_PER_TURN", "EgressWebSocket", "accept"]

log = logging.getLogger("arcly_trio.http")

_RECV_SIZE = 65536
_NO_TIMER = contextlib.nullcontext()
_LINGER = 1.0  # seconds a peer closed for breaking a limit has to read its close frame
_LINGER_BYTES = 1 << 20  # what it may send meanwhile (dropped unparsed)
EVENTS_PER_TURN = 64
"""Frames one turn of the connection's task handles before it lets the other tasks run."""
MESSAGES_PER_TURN = 2
"""Whole messages :meth:`EgressWebSocket.receive_message` hands out before it lets the others run."""


def accept(
    egress: Egress,
    request_head: bytes,
    headers: list[tuple[bytes, bytes]],
    *,
    subprotocol: str | None,
    limits: WebSocketLimits,
    label: str = "websocket",
) -> EgressWebSocket:
    """Answer the handshake in ``request_head`` (already checked by the worker) with ``101``
    through ``egress``, selecting ``subprotocol``; the peer is held to ``limits``. ``label``
    (already printable) names the connection in the log."""
    handshake = H11Handshake(ConnectionType.SERVER)
    try:
        handshake.receive_data(request_head)
        events = list(handshake.events())
    except (WsprotoRemoteError, UnicodeError, ValueError) as error:
        # handshake_problem() holds every handshake to wsproto's reading before the play starts;
        # should the two ever differ, the request ends with one log line, never a traceback
        raise BadRequest(f"not a valid WebSocket handshake ({type(error).__name__})") from None
    if not any(isinstance(event, Request) for event in events):
        raise BadRequest("not a WebSocket handshake")
    answer = handshake.send(AcceptConnection(subprotocol=subprotocol, extra_headers=headers))
    egress.write((answer,), len(answer))
    return EgressWebSocket(egress, limits, label)  # the handshake (and its h11 state) is let go


class EgressWebSocket:
    """An accepted server WebSocket (see the module docstring)."""

    __slots__ = (
        "egress",
        "guard",
        "label",
        "closed",
        "close_code",
        "violation",
        "_reader",
        "_sent_close",
        "_received_close",
        "_pending",
        "_budget",
        "_run",
        "_keep",
        "_binary",
        "_text",
        "_started_text",
        "_message",
    )

    def __init__(self, egress: Egress, limits: WebSocketLimits, label: str = "websocket") -> None:
        self.egress = egress
        self.guard = WebSocketGuard(limits, trio.current_time())
        self.label = label
        self.closed = False
        """The WebSocket is closed (by either side) or the peer has gone."""
        self.close_code: int | None = None
        """The code of the peer's close frame, if it sent one."""
        self.violation: Violation | None = None
        """The limit the peer broke, if that is why the WebSocket was closed."""
        self._reader = WebSocketReader()
        self._sent_close = False  # our close frame is queued: nothing more may follow it
        self._received_close = False  # the peer's close frame was read
        self._pending = False  # events may be left from the last read
        self._budget = 0  # frames this turn may still handle without letting the others run
        self._run = 0  # whole messages handed out since the task last let the others run
        self._keep = False  # assemble messages (receive_message) rather than discard them
        self._binary = bytearray()
        self._text = io.StringIO()
        self._started_text = False  # a text message is being assembled in _text
        self._message: bytes | str | None = None

    @property
    def max_message_size(self) -> int:
        return self.guard.limits.max_message

    def send_text(self, text: str) -> None:
        """Queue a text message (written after whatever is queued)."""
        if not self._sent_close and not self._received_close:
            data = text.encode("utf-8")
            header = frame_header(len(data), OPCODE_TEXT)
            self.egress.write((header, data), len(header) + len(data))

    def _write(self, data: bytes) -> None:
        self.egress.write((data,), len(data))

    def _send_close(self, code: int | None, reason: str) -> None:
        """Queue our close frame (once)."""
        if not self._sent_close:
            self._sent_close = True
            self._write(close_frame(code, reason))

    async def serve_peer(self) -> bool:
        """Wait for what the viewer sends (draining the egress first as needed) and handle it,
        discarding its messages; return early when interrupted (:meth:`Egress.poke`).
        ``False`` once the WebSocket is closed or the viewer has gone."""
        self._keep = False
        return await self._turn()

    async def receive_message(self) -> bytes | str | None:
        """The peer's next whole message (answering pings meanwhile); ``None`` once the
        WebSocket is closed or the peer has gone."""
        self._keep = True
        while self._message is None:
            if not await self._turn():
                return None
        message, self._message = self._message, None
        self._run += 1
        return message

    async def _turn(self) -> bool:
        """Read once (or, with events left from the last read, only let the others run) and
        handle at most :data:`EVENTS_PER_TURN` frames. ``False`` once closed."""
        if self.closed:
            return False
        if self._pending:
            # Whole messages of one read go out one by one without a trip through the
            # scheduler each (a publisher's video and audio frame reach the stream together),
            # but never more than MESSAGES_PER_TURN of them (EVENTS_PER_TURN frames) before
            # the others run.
            if self._budget <= 0 or self._run >= MESSAGES_PER_TURN:
                await trio.lowlevel.checkpoint()
                self._budget = EVENTS_PER_TURN
                self._run = 0
        else:
            self._budget = EVENTS_PER_TURN
            self._run = 0
            deadline = self.guard.deadline
            # Between messages there is no rate to keep: no cancel scope (one per read costs).
            with trio.move_on_at(deadline) if math.isfinite(deadline) else _NO_TIMER:
                data = await self.egress.receive(_RECV_SIZE)
                if data is None:
                    return True
                if not data:
                    self.closed = True
                    return False
                self._reader.feed(data)
            violation = self.guard.check_progress(trio.current_time())
            if violation is not None:
                await self._violated(violation)
                return False
        return await self._handle_events()

    async def _handle_events(self) -> bool:
        reader = self._reader
        guard = self.guard
        keep = self._keep
        self._pending = False
        while (event := reader.next_event()) is not None:
            if type(event) is CloseReceived:
                self.close_code = event.code
                if not event.broken:
                    self._received_close = True
                # the peer's close is answered with its code (1005: none); a frame that broke
                # the protocol with the code saying how (1002, 1007)
                self._send_close(event.code, event.reason)
                self.closed = True
                return False
            opcode, data, frame_finished, message_finished = event
            if opcode == OPCODE_PING or opcode == OPCODE_PONG:
                violation = guard.on_control(trio.current_time())
                if violation is None and opcode == OPCODE_PING:
                    assert isinstance(data, bytes)
                    self._write(frame_header(len(data), OPCODE_PONG) + data)
            else:
                violation = guard.on_data(len(data), frame_finished, message_finished, trio.current_time())
                if violation is None and keep:
                    self._assemble(opcode, data, message_finished)
            if violation is not None:
                await self._violated(violation)
                return False
            self._budget -= 1
            if self._budget <= 0 or self._message is not None:
                self._pending = True  # the rest waits for the next turn
                break
        return True

    def _assemble(self, opcode: int, data: bytes | str, message_finished: bool) -> None:
        if message_finished and not self._binary and not self._started_text:
            self._message = data  # a message in one piece (what publishers send) is not copied
            return
        if opcode == OPCODE_TEXT:
            assert isinstance(data, str)
            self._text.write(data)
            self._started_text = True
        else:
            assert isinstance(data, bytes)
            self._binary += data
        if message_finished:
            if self._started_text:
                self._message = self._text.getvalue()
                self._text = io.StringIO()
                self._started_text = False
            else:
                self._message = bytes(self._binary)
                self._binary = bytearray()

    async def _violated(self, violation: Violation) -> None:
        """Close for breaking a limit: the close frame, one log line, the buffers let go."""
        self.violation = violation
        self.closed = True
        self._binary = bytearray()
        self._text = io.StringIO()
        self._started_text = False
        guard = self.guard
        log.info(
            "%s closed (%d): %s, after %d frames (%d bytes of a message held)",
            self.label,
            violation.code,
            violation.reason,
            guard.frames,
            guard.held,
        )
        if not self._received_close:
            self._send_close(violation.code, violation.reason)
        # A lingering close: closing a socket with unread bytes resets the connection, and
        # the reset would drop the close frame (and whatever is queued before it) on its way.
        # What the peer sends meanwhile is read and dropped unparsed, for a bounded time.
        with trio.move_on_after(_LINGER):
            dropped = 0
            while dropped < _LINGER_BYTES:
                data = await self.egress.receive(_RECV_SIZE)
                if data is None:
                    continue
                if not data:
                    break
                dropped += len(data)

    async def close(self, code: int, reason: str, timeout: float = 2.0) -> None:
        """Close the WebSocket with ``code`` after whatever is queued, and wait (at most
        ``timeout`` seconds) for the peer's close frame (what it sends meanwhile is held to
        the same limits, and discarded)."""
        self._send_close(code, reason)
        self.closed = True
        reader = self._reader
        with trio.move_on_after(timeout):
            await self.egress.drain()
            handled = 0
            while not self._received_close and not reader.finished:
                data = await self.egress.receive(_RECV_SIZE)
                if data is None:
                    continue
                if not data:
                    return
                reader.feed(data)
                while (event := reader.next_event()) is not None:
                    handled += 1
                    if handled > self.guard.limits.max_fragments:
                        return  # a peer that floods instead of closing is not waited for
                    if type(event) is CloseReceived:
                        self._received_close = not event.broken
                        return
