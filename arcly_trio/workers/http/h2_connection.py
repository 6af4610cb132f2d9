"""The HTTP worker's HTTP/2 connections (ALPN ``h2`` on HTTPS), driven by the sans-IO ``h2`` library.

One :class:`H2Connection` per connection whose TLS handshake chose ``h2``: the connection's task
reads the client's bytes, feeds them to ``h2`` and acts on its events; each request stream runs
its handler in a task of a per-connection nursery, through an :class:`~.h2_exchange.H2Exchange`
that gives handlers the API of :class:`~.exchange.Exchange`, and through the same
:func:`~.dispatch.dispatch` as HTTP/1.1 (routing, CORS, the API token, admin routes). Every
write goes through one lock (:meth:`H2Connection.flush`): whichever task flushes sends what
``h2`` has prepared for every stream, in order.

Limits (the attacker's view; every one ends with a log line for that connection only):

* At most :data:`MAX_STREAMS` (100) handlers run at once per connection: advertised as
  ``SETTINGS_MAX_CONCURRENT_STREAMS`` (``h2`` ends a connection that opens more with
  ``GOAWAY PROTOCOL_ERROR``) and enforced on running handler tasks too (a stream the client
  reset counts until its handler has unwound: past it, ``REFUSED_STREAM``). 100 is the
  value RFC 9113 asks servers not to go below (a page loads many resources at once; an LL-HLS
  player holds a blocking playlist reload and a part or two), and with the header block cap it
  bounds what one connection holds to about what 100 HTTP/1.1 connections' requests would.
* A header block (HEADERS + CONTINUATION) is capped at the worker's ``max_head_size`` as its
  frame headers arrive (:class:`~arcly_trio.protocols.http.h2_guard.HeaderBlockGuard`), and its
  decoded header list at the same size (``SETTINGS_MAX_HEADER_LIST_SIZE``, enforced by the
  HPACK decoder, whose table stays at the default 4096 bytes): no HPACK bomb or CONTINUATION
  flood grows memory past it. ``431``-like: the connection ends with ``GOAWAY``.
* Streams reset (by the client, once per stream, or refused by us), ``SETTINGS`` and
  ``PING`` frames, and frames of any kind (a catch-all for floods of empty ``DATA``,
  ``WINDOW_UPDATE`` or ``PRIORITY`` frames) each spend a :class:`~arcly_trio.protocols.http.h2_guard.RateBudget`; past
  it the connection ends with ``GOAWAY ENHANCE_YOUR_CALM`` (rapid reset, CVE-2023-44487;
  SETTINGS and PING floods). What ``h2`` answers to one read (acks) is flushed before the next
  read, so a client that does not read cannot grow the output.
* Request bodies are flow controlled: the client's bytes are acknowledged (their window
  reopened) only as a handler reads them or once its stream is done, so one connection never
  holds more than the initial 64 KiB connection window of unread body. The rest of a body
  nobody reads is taken and dropped up to 64 KiB after the answer (as HTTP/1.1 does), then the
  stream is reset with ``NO_ERROR``.
* Responses wait for the client's flow-control window within ``write_timeout``; a stream whose
  window stays closed that long is reset (a live viewer: its egress drops it as a slow viewer,
  :mod:`arcly_trio.workers.egress`, after its queue bound and the kernel's lag policy). A
  client that does not read the socket at all is closed after ``write_timeout`` too.
* The preface and first request must arrive within ``header_timeout``, and a connection with no
  request in service is closed ``header_timeout`` after its last one ended (the HTTP/1.1
  keep-alive rule); a header block must be complete within it too.

``connections`` (the server's requests in service, which graceful shutdown waits for) counts
streams being served, and the admission ticket is busy while any is. Once the engine stops, the
connection sends ``GOAWAY`` when its last stream ends. WebSocket stays on HTTP/1.1
(``SETTINGS_ENABLE_CONNECT_PROTOCOL`` is not advertised, so browsers open WebSockets over a
separate HTTP/1.1 connection).

Error policy: a client that breaks the protocol (``h2``'s ``ProtocolError``, a limit above) gets
a ``GOAWAY`` and a warning line (peer text escaped) and its connection closes; a client that
goes away or does not read ends its connection (:class:`~.exchange.ClientGone`, raised to the
worker, which logs it at debug level); a handler's errors are :func:`~.dispatch.dispatch`'s.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Protocol

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import trio
from h2.errors import ErrorCodes

from arcly_trio.core.errors import MessageTooLarge, RemoteProtocolError
from arcly_trio.core.text import printable
from arcly_trio.protocols.http.h2_guard import HeaderBlockGuard, RateBudget
from arcly_trio.protocols.http.router import HttpRequest, wants_websocket
from arcly_trio.transport import TRANSPORT_ERRORS, describe
from arcly_trio.workers.admission import Ticket
from arcly_trio.workers.http.dispatch import DispatchHost, dispatch
from arcly_trio.workers.http.exchange import ClientGone, log_write_timeout
from arcly_trio.workers.http.h2_exchange import H2Exchange, H2Stream

if TYPE_CHECKING:
    from collections.abc import Mapping

    from arcly_trio.kernel.engine import Engine

__all__ = ["H2Connection", "MAX_STREAMS", "H2_PREFACE"]

log = logging.getLogger("arcly_trio.http")

MAX_STREAMS = 100
"""Request streams served at once per connection (see the module docstring)."""
RESET_BURST, RESET_RATE = 200, 50.0
"""Reset streams a connection may cause at once, and per second after."""
SETTINGS_BURST, SETTINGS_RATE = 20, 2.0
PING_BURST, PING_RATE = 50, 5.0
FRAME_BURST, FRAME_RATE = 5000, 2000.0
"""Frames of any kind: far more than a player's requests and window updates need, far fewer
than a flood of empty or control frames (CVE-2019-9513, -9514, -9518) would send."""

_RECV_SIZE = 65536
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
"""The client connection preface (what an h2c client with prior knowledge opens with)."""
_MAX_DISCARDED_BODY = 64 * 1024
"""Request body bytes still taken (and dropped) after the answer, before ``RST_STREAM NO_ERROR``."""


class H2Host(DispatchHost, Protocol):
    """What an :class:`H2Connection` uses of the server (the :class:`~.server.HttpServer`)."""

    cors: bool
    max_head_size: int
    header_timeout: float
    write_timeout: float
    connections: int
    rtmp_port: int | None

    @property
    def open_connections(self) -> int: ...

    def privileged(self, request: HttpRequest) -> bool: ...


class CalmDown(RemoteProtocolError):
    """A client went past a rate budget (the connection answers ``ENHANCE_YOUR_CALM``)."""


class H2Connection:
    """One HTTP/2 connection of the HTTP worker (see the module docstring)."""

    def __init__(
        self,
        server: H2Host,
        engine: Engine,
        stream: trio.abc.Stream,
        peer: tuple[str, int],
        ticket: Ticket,
        *,
        received: bytes = b"",
    ) -> None:
        self.server = server
        self._received = received  # read already (h2c: the preface the worker looked at)
        self.engine = engine
        self.stream = stream
        self.peer = peer
        self.ticket = ticket
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None, validate_inbound_headers=True)
        )
        self.conn.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_STREAMS,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: server.max_head_size,
            },
        )
        # In force at once, not only once the client acknowledges our SETTINGS.
        self.conn.decoder.max_header_list_size = server.max_head_size
        self.guard = HeaderBlockGuard(server.max_head_size)
        now = trio.current_time()
        self.resets = RateBudget(RESET_BURST, RESET_RATE, now)
        self.settings = RateBudget(SETTINGS_BURST, SETTINGS_RATE, now)
        self.pings = RateBudget(PING_BURST, PING_RATE, now)
        self.frames = RateBudget(FRAME_BURST, FRAME_RATE, now)
        self._discarding: dict[int, int] = {}  # answered streams whose body goes on: bytes still taken
        self.streams: dict[int, H2Stream] = {}
        """The streams whose handler runs (until it has unwound)."""
        self.served = 0
        """Request streams served on this connection."""
        self._lock = trio.Lock()
        self._window = trio.Event()
        self._idle_since: float | None = now
        self._reader = trio.CancelScope()
        self._wait: trio.CancelScope | None = None
        self._broken: str | None = None

    @property
    def broken(self) -> bool:
        """Whether the connection failed (the client is gone or does not read)."""
        return self._broken is not None

    # ------------------------------------------------------------------ writing

    async def flush(self) -> None:
        """Send what ``h2`` has prepared (for every stream), within the write timeout; raises
        :class:`ClientGone` (and ends the connection) when the client is gone or does not read.

        The write is shielded: a stream's handler cancelled mid-write (its client reset it)
        must not cut a TLS record or a frame of the connection in two. Bytes are taken from
        ``h2`` and queued on the (FIFO) lock with no checkpoint between, so they go out in
        order."""
        if self._broken is not None:
            raise ClientGone(self._broken)
        data = self.conn.data_to_send()
        if not data:
            await trio.lowlevel.checkpoint()
            return
        with trio.CancelScope(shield=True):
            async with self._lock:
                if self._broken is not None:
                    raise ClientGone(self._broken)
                try:
                    with trio.fail_after(self.server.write_timeout):
                        await self.stream.send_all(data)
                except trio.TooSlowError:
                    self._break(f"a write blocked for {self.server.write_timeout:g} s")
                    log_write_timeout(self.server, self.peer)
                    raise ClientGone("write timeout") from None
                except TRANSPORT_ERRORS as exc:
                    self._break(describe(exc))
                    raise ClientGone(describe(exc)) from None

    def _break(self, why: str) -> None:
        self._broken = why
        self._reader.cancel()
        self._wake_writers()

    def _wake_writers(self) -> None:
        self._window.set()
        self._window = trio.Event()

    async def send_headers(
        self, stream: H2Stream, headers: list[tuple[bytes, bytes]], end: bool, *, flush: bool = True
    ) -> None:
        """Send a response head (``flush=False``: leave it for the next flush, a body's)."""
        self._check(stream)
        try:
            self.conn.send_headers(stream.id, headers, end_stream=end)
        except h2.exceptions.StreamClosedError:
            raise ClientGone("the client reset the stream") from None
        stream.head_sent = True
        if end:
            stream.ended = True
        if flush:
            await self.flush()
        else:
            await trio.lowlevel.checkpoint()

    async def send_data(self, stream: H2Stream, data: bytes | bytearray | memoryview, end: bool) -> None:
        """Send ``data`` on ``stream`` as the client's flow-control windows allow (waits for
        them: the caller bounds the wait); ``end`` ends the stream."""
        view = memoryview(data)
        conn = self.conn
        while True:
            self._check(stream)
            if not view:
                if end:
                    conn.end_stream(stream.id)
                    stream.ended = True
                    await self.flush()
                return
            try:
                window = conn.local_flow_control_window(stream.id)
            except h2.exceptions.StreamClosedError:
                raise ClientGone("the client reset the stream") from None
            if window <= 0:
                await self._window.wait()
                continue
            size = min(window, len(view))
            frame = conn.max_outbound_frame_size
            for at in range(0, size, frame):
                last = at + frame >= size and size == len(view) and end
                conn.send_data(stream.id, bytes(view[at : min(at + frame, size)]), end_stream=last)
            if end and size == len(view):
                stream.ended = True
            view = view[size:]
            await self.flush()
            if stream.ended:
                return

    def _check(self, stream: H2Stream) -> None:
        if self._broken is not None:
            raise ClientGone(self._broken)
        if stream.reset:
            raise ClientGone("the client reset the stream")

    def acknowledge(self, stream: H2Stream, size: int) -> None:
        """``size`` flow-controlled bytes of ``stream``'s body were consumed: reopen the windows
        (sent with the next flush)."""
        if size and self._broken is None:
            try:
                self.conn.acknowledge_received_data(size, stream.id)
            except h2.exceptions.ProtocolError:
                pass

    # ------------------------------------------------------------------ reading

    async def run(self) -> None:
        """Serve the connection until the client closes it, breaks a limit, stays idle past the
        header timeout, or the engine stops and its last stream ends."""
        self.conn.initiate_connection()
        await self.flush()
        try:
            async with trio.open_nursery() as nursery:
                try:
                    with self._reader:
                        received, self._received = self._received, b""
                        if not received or await self._receive(received, nursery):
                            await self._read(nursery)
                except ClientGone as exc:  # raised after the nursery, not grouped by it
                    self._broken = self._broken or str(exc)
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            for stream in self.streams.values():
                stream.gone()
        if self._broken is not None:
            raise ClientGone(self._broken)

    async def _read(self, nursery: trio.Nursery) -> None:
        server = self.server
        while True:
            deadline = self._idle_since + server.header_timeout if self._idle_since is not None else float("inf")
            with trio.CancelScope(deadline=deadline) as scope:
                self._wait = scope
                try:
                    data = await self.stream.receive_some(_RECV_SIZE)
                except TRANSPORT_ERRORS as exc:
                    raise ClientGone(describe(exc)) from None
                finally:
                    self._wait = None
            if not scope.cancelled_caught:
                if not data or not await self._receive(data, nursery):
                    return
                continue
            if trio.current_time() < deadline:
                continue  # poked: the deadline changed
            if self.served or self.streams:
                log.debug("http %s:%s closed: idle HTTP/2 connection", *self.peer)
            else:
                server.clients.log(
                    logging.INFO,
                    self.peer[0],
                    "timeouts",
                    "%s %s:%s closed: no HTTP/2 request after %g s",
                    server.name,
                    *self.peer,
                    server.header_timeout,
                )
            await self._goaway(ErrorCodes.NO_ERROR)
            return

    async def _goaway(self, code: ErrorCodes) -> None:
        try:
            self.conn.close_connection(error_code=code)
            await self.flush()
        except (ClientGone, h2.exceptions.ProtocolError):
            pass

    async def _refuse(self, message: str, code: ErrorCodes | None) -> None:
        """Log a client's breach and end the connection with ``GOAWAY`` of ``code`` (``None``:
        the one ``h2`` has prepared already)."""
        self.server.clients.log(
            logging.WARNING, self.peer[0], "bad requests", "%s %s:%s %s", self.server.name, *self.peer, message
        )
        if code is None:
            with contextlib.suppress(ClientGone):
                await self.flush()
        else:
            await self._goaway(code)

    async def _receive(self, data: bytes, nursery: trio.Nursery) -> bool:
        """Act on the client's ``data``; whether to go on reading."""
        guard = self.guard
        try:
            guard.feed(data)
            now = trio.current_time()
            for budget, count, what in (
                (self.settings, guard.settings, "SETTINGS frames"),
                (self.pings, guard.pings, "PING frames"),
                (self.frames, guard.frames, "frames"),
            ):
                if count and not budget.spend(now, count):
                    raise CalmDown(f"too many {what}")
            guard.frames = guard.resets = guard.settings = guard.pings = 0
            if guard.in_block and self._idle_since is None:
                self._idle_since = now  # a header block must complete in time
            events = self.conn.receive_data(data)
            started = [stream for event in events if (stream := self._event(event)) is not None]
        except MessageTooLarge as exc:
            await self._refuse(f"HTTP/2 {exc}", ErrorCodes.ENHANCE_YOUR_CALM)
            return False
        except CalmDown as exc:
            await self._refuse(f"HTTP/2 {exc}: GOAWAY ENHANCE_YOUR_CALM", ErrorCodes.ENHANCE_YOUR_CALM)
            return False
        except h2.exceptions.ProtocolError as exc:
            await self._refuse(f"HTTP/2 protocol error: {printable(str(exc), 200)}", None)  # h2's GOAWAY
            return False
        await self.flush()
        for stream in started:
            if not stream.reset:
                stream.started = True
                nursery.start_soon(self._serve, stream)
        if self.guard.in_block or self.streams:
            if not self.guard.in_block:
                self._idle_since = None
        return True

    def _event(self, event: h2.events.Event) -> H2Stream | None:
        """Act on one ``h2`` event; the stream a new request opened, if any."""
        now = trio.current_time()
        if isinstance(event, h2.events.RequestReceived):
            assert event.stream_id is not None and event.headers is not None
            if len(self.streams) >= MAX_STREAMS or self.engine.stopping:
                if not self.resets.spend(now):
                    raise CalmDown("too many refused streams")
                with contextlib.suppress(h2.exceptions.StreamClosedError):  # the client reset it already
                    self.conn.reset_stream(event.stream_id, ErrorCodes.REFUSED_STREAM)
                return None
            stream = H2Stream(event.stream_id, list(event.headers), body_done=bool(event.stream_ended))
            self.streams[stream.id] = stream
            if len(self.streams) == 1:
                self.ticket.busy()
            self._idle_since = None
            return stream
        if isinstance(event, h2.events.DataReceived):
            assert event.stream_id is not None
            stream = self.streams.get(event.stream_id)
            size = event.flow_controlled_length or 0
            if stream is None or stream.reset:
                if size:
                    self.conn.acknowledge_received_data(size, event.stream_id)
                allowance = self._discarding.get(event.stream_id)
                if allowance is not None:
                    if allowance < size:  # enough of a body nobody reads: no more (RFC 9113 8.1)
                        del self._discarding[event.stream_id]
                        with contextlib.suppress(h2.exceptions.ProtocolError):
                            self.conn.reset_stream(event.stream_id, ErrorCodes.NO_ERROR)
                    else:
                        self._discarding[event.stream_id] = allowance - size
            else:
                stream.take(event.data or b"", size)
        elif isinstance(event, h2.events.StreamEnded):
            self._discarding.pop(event.stream_id or 0, None)
            stream = self.streams.get(event.stream_id or 0)
            if stream is not None:
                stream.finish()
        elif isinstance(event, h2.events.StreamReset):
            self._discarding.pop(event.stream_id or 0, None)
            stream = self.streams.get(event.stream_id or 0)
            if stream is not None:
                stream.gone()
                if not stream.started:  # reset in the same read that opened it: no task to unwind
                    self._forget(stream)
            self._wake_writers()
            # Counted per stream h2 knew open: a client answering our in-flight DATA with
            # RST_STREAM frames (as h2 itself does) spends the frame budget only.
            if event.remote_reset and not self.resets.spend(now):
                raise CalmDown("too many reset streams (rapid reset)")
        elif isinstance(event, h2.events.WindowUpdated):
            self._wake_writers()
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            self._wake_writers()
        return None

    def _forget(self, stream: H2Stream) -> None:
        """``stream``'s handler is done (or never started): let go of it."""
        del self.streams[stream.id]
        self.acknowledge(stream, stream.unread)
        if not self.streams:
            self.ticket.pending()
            self._idle_since = trio.current_time()
            if self._wait is not None:
                self._wait.cancel()  # the reader's deadline changed

    # ------------------------------------------------------------------ streams

    @staticmethod
    def _headers(stream: H2Stream) -> tuple[tuple[str, str], ...]:
        """A stream's request headers as an HTTP/1.1 request's (``:authority`` as ``host``)."""
        headers: list[tuple[str, str]] = []
        host: str | None = None
        for name, value in stream.headers:
            if name.startswith(b":"):
                if name == b":authority":
                    host = value.decode("latin-1")
                continue
            headers.append((name.decode("latin-1"), value.decode("latin-1")))
        if host is not None and not any(name == "host" for name, _ in headers):
            headers.insert(0, ("host", host))
        return tuple(headers)

    def _request(
        self,
        stream: H2Stream,
        headers: tuple[tuple[str, str], ...],
        path: str,
        query: Mapping[str, str],
        params: Mapping[str, str],
    ) -> HttpRequest:
        return HttpRequest(
            method=stream.method.decode("ascii", "replace"),
            target=stream.target.decode("ascii", "replace"),
            path=path,
            query=query,
            headers=headers,
            peer=self.peer,
            http_version="2",
            params=params,
        )

    async def _serve(self, stream: H2Stream) -> None:
        """Run one request stream's handler (in the connection's nursery)."""
        server = self.server
        server.connections += 1
        self.engine.activity.enter()
        self.served += 1
        exchange = H2Exchange(server, self.engine, self, stream, self.peer)
        target = stream.target.decode("ascii", "replace")
        headers = self._headers(stream)
        try:
            with stream.scope:
                await dispatch(
                    server,
                    self.engine,
                    exchange,
                    self.peer,
                    stream.method.decode("ascii", "replace"),
                    target,
                    wants_websocket(headers),
                    lambda path, query, params: self._request(stream, headers, path, query, params),
                )
                if exchange.responded and not stream.ended:
                    if stream.truncated or not stream.head_sent:  # a body cut short (a dropped viewer)
                        raise ClientGone("its answer was cut short")  # or a bug: not a clean end
                    with trio.fail_after(server.write_timeout):
                        await self.send_data(stream, b"", end=True)
        except (ClientGone, trio.TooSlowError) as exc:
            log.debug("http %s:%s stream %d ended: %s", *self.peer, stream.id, exc)
            if not stream.reset and self._broken is None:
                try:
                    self.conn.reset_stream(stream.id, ErrorCodes.CANCEL)
                except h2.exceptions.ProtocolError:
                    pass
        finally:
            server.connections -= 1
            self.engine.activity.exit()
            if stream.ended and not stream.body_done and not stream.reset and self._broken is None:
                self._discarding[stream.id] = _MAX_DISCARDED_BODY  # answered before its body ended
            self._forget(stream)
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "%s %s:%s %s %s (h2): %s",
                    server.name,
                    *self.peer,
                    stream.method.decode("ascii", "replace"),
                    printable(target, 200),
                    exchange.status if exchange.status is not None else "no answer",
                )
            if not self.streams and self.engine.stopping:
                self.conn.close_connection()
                self._reader.cancel()
        try:
            await self.flush()
        except ClientGone:
            pass
