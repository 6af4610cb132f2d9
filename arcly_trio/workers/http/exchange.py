"""How a route handler answers one HTTP request: the :class:`Exchange` (the worker's Responder).

Whole responses (:meth:`Exchange.respond`, :meth:`~Exchange.error`, :meth:`~Exchange.json`) and
streamed ones (:meth:`~Exchange.start`, :meth:`~Exchange.send`, :meth:`~Exchange.end`).
Live egress (HTTP-FLV, WebSocket-FLV, the frame API) writes its body or messages through the
connection's direct-write :class:`~arcly_trio.workers.egress.Egress` instead
(:meth:`~Exchange.open_egress`), and every WebSocket is accepted on it
(:meth:`~Exchange.accept_egress_websocket`, see :mod:`.ws_egress`): the stream's task
writes the frames' shared buffers straight to the socket, and the handler's task (the
connection's only task) reads the client and drains what the socket did not take. Handlers of the worker's own
routes use
it whole; services' routes use only the :class:`~arcly_trio.protocols.http.router.Responder` part.

Error policy: writes raise :class:`ClientGone` when the client is gone or does not read within
the server's write timeout (trio's transport errors are mapped to it); a WebSocket handshake
that cannot be accepted raises :class:`~arcly_trio.protocols.http.router.BadRequest`.
"""

from __future__ import annotations

import http
import json
import logging
import math
import re
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Protocol

import h11
import trio

from arcly_trio.core.errors import (
    AppNotFound,
    AuthorizationBusy,
    ClientGone,
    EngineClosed,
    InvalidStreamName,
    StreamError,
    StreamNotFound,
    Unauthorized,
)
from arcly_trio.core.excgroups import unwrap_single
from arcly_trio.core.text import printable
from arcly_trio.protocols.http.head import PlainRequest
from arcly_trio.protocols.http.router import BadRequest, HttpRequest
from arcly_trio.protocols.http.websocket import WebSocketLimits, handshake_problem, rebuild_request_head
from arcly_trio.transport import TRANSPORT_ERRORS, describe
from arcly_trio.workers.egress import Egress
from arcly_trio.workers.http.ws_egress import EgressWebSocket, accept

if TYPE_CHECKING:
    from arcly_trio.kernel.engine import Engine
    from arcly_trio.workers.clientlog import ClientLog

__all__ = [
    "Exchange",
    "ExchangeHost",
    "WriteDeadline",
    "ClientGone",
    "common_headers",
    "log_write_timeout",
    "status_headers",
    "stream_error_status",
    "SERVER_NAME",
]

log = logging.getLogger("arcly_trio.http")

RECV_SIZE = 65536
SERVER_NAME = b"arcly-trio"


_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
_FIELD_VALUE = re.compile(rb"(?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?")  # h11's field-value
_VALID_FIELDS: set[tuple[bytes, bytes]] = set()
"""Response fields :func:`response_bytes` found valid (the same few per kind of answer), at
most :data:`_VALID_FIELDS_KEPT` of values up to :data:`_VALID_VALUE_KEPT` bytes."""
_VALID_FIELDS_KEPT = 1024
_VALID_VALUE_KEPT = 256
_H11_FRAMED = frozenset((b"content-length", b"transfer-encoding", b"connection", b"host"))
"""Header names h11 checks, moves or rewrites in a response: not written past it..."""
_OWN_FRAMING = ([b"content-length"], [b"connection", b"content-length"])
"""... but for the ones :meth:`Exchange.respond` itself adds (``connection`` only as ``close``)."""


def client_keeps_alive(event: h11.Request | PlainRequest) -> bool:
    """Whether h11 would keep the connection alive after ``event``'s response (HTTP/1.1 and no
    ``Connection: close``), judged conservatively: any ``close`` in a ``Connection`` value is
    taken as one (the answer then goes through h11)."""
    if event.http_version != b"1.1":
        return False
    for name, value in event.headers:
        if name == b"connection" and b"close" in value.lower():
            return False
    return True


def response_bytes(status: int, fields: list[tuple[bytes, bytes]], body: bytes) -> bytes | None:
    """The bytes h11 writes for a whole response to a keep-alive HTTP/1.1 request (``fields``
    with its ``content-length``; ``body`` already left out for ``HEAD``), built in one join;
    ``None`` when h11 must write it (a field it would refuse or rewrite)."""
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, reason_phrase(status))]
    valid = _VALID_FIELDS
    for field in fields:
        if field not in valid:
            name, value = field
            if not _TOKEN.fullmatch(name) or not _FIELD_VALUE.fullmatch(value):
                return None
            if len(valid) >= _VALID_FIELDS_KEPT:
                valid.clear()
            if len(value) <= _VALID_VALUE_KEPT:
                valid.add(field)
        lines.append(b"%s: %s\r\n" % field)
    lines.append(b"\r\n")
    lines.append(body)
    return b"".join(lines)


def reason_phrase(status: int) -> bytes:
    try:
        return http.HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


class ExchangeHost(Protocol):
    """What an exchange and the worker's route handlers use of the server that answers (the
    :class:`~.server.HttpServer` is the one): its settings, its client log, its access policy."""

    name: str
    cors: bool
    write_timeout: float
    header_timeout: float
    clients: ClientLog
    api_token: str | None
    rtmp_port: int | None

    @property
    def open_connections(self) -> int: ...

    def privileged(self, request: HttpRequest) -> bool: ...


def common_headers(cors: bool) -> list[tuple[bytes, bytes]]:
    """The headers of every answer: the server's name, and CORS's ``*`` when ``cors``."""
    headers = [(b"server", SERVER_NAME)]
    if cors:
        headers.append((b"access-control-allow-origin", b"*"))
    return headers


def status_headers(status: int, headers: Iterable[tuple[str, str]]) -> Iterable[tuple[str, str]]:
    """``headers`` with what a ``status`` must or should say added (HTTP/1.1 and HTTP/2 alike):
    a ``401`` how to authenticate (RFC 9110), a ``429`` when to come back (RFC 6585) unless
    the handler said it."""
    if status == 401:
        return [("www-authenticate", 'Bearer realm="arcly-trio"'), *headers]
    if status == 429:
        headers = list(headers)
        if not any(name.lower() == "retry-after" for name, _ in headers):
            headers.insert(0, ("retry-after", str(AuthorizationBusy.retry_after)))
    return headers


def log_write_timeout(server: ExchangeHost, peer: tuple[str, int], what: str = "a write blocked") -> None:
    """The line for a client dropped because ``what`` lasted the server's write timeout
    (summed up per address when many, like every client's line)."""
    server.clients.log(
        logging.INFO,
        peer[0],
        "timeouts",
        "%s %s:%s dropped: %s for %g s",
        server.name,
        *peer,
        what,
        server.write_timeout,
    )


class WriteDeadline:
    """The write timeout of an HTTP/1.1 connection, as one cancel scope the connection runs in
    (entered once, its deadline moved for each write) rather than a scope per write.

    :meth:`send` arms the deadline for one write and disarms it after; a write that does not
    finish in time cancels the whole connection (the handler included), and the connection,
    seeing :attr:`writing` still set when its scope caught the cancellation, logs the write
    timeout (:func:`log_write_timeout`) and closes. Its other waits (the next request head)
    move the same deadline (:attr:`scope`)."""

    __slots__ = ("scope", "writing")

    def __init__(self, scope: trio.CancelScope) -> None:
        self.scope = scope
        self.writing = False
        """A write was under way when the deadline passed (set during each write)."""

    async def send(self, stream: trio.abc.Stream, data: bytes, seconds: float) -> None:
        scope = self.scope
        scope.deadline = trio.current_time() + seconds
        self.writing = True
        try:
            await stream.send_all(data)
        except TRANSPORT_ERRORS as exc:
            raise ClientGone(describe(exc)) from None
        self.writing = False
        scope.deadline = math.inf


H11Opener = Callable[[], tuple[h11.Connection, h11.Request]]
"""Makes the h11 state of a request read without h11 (a fresh connection that has read its
head and end of message), for an answer h11 must write."""


class Exchange:
    """How a handler answers one request.

    Whole responses: :meth:`respond`, :meth:`error`, :meth:`json`. Streamed responses:
    :meth:`start`, then :meth:`send` (one chunk each) and :meth:`end`; wrap the streaming in
    :meth:`until_disconnect` so it is cancelled as soon as the client goes away. WebSocket:
    :meth:`accept_egress_websocket`. Writes raise :class:`ClientGone` when the client is gone or does
    not read within the server's write timeout.
    """

    def __init__(
        self,
        server: ExchangeHost,
        engine: Engine,
        stream: trio.abc.Stream,
        connection: h11.Connection | H11Opener,
        peer: tuple[str, int],
        event: h11.Request | PlainRequest,
        *,
        deadline: WriteDeadline | None = None,
    ) -> None:
        self._stream = stream
        self._h11_state: h11.Connection | None = None
        self._h11_event: h11.Request | None = None
        self._open_h11: H11Opener | None = None
        if isinstance(connection, h11.Connection):
            assert isinstance(event, h11.Request)
            self._h11_state, self._h11_event = connection, event
        else:  # a plain request (see protocols.http.head): h11 only if an answer needs it
            self._open_h11 = connection
        self._event = event
        self._deadline = deadline
        self.request: HttpRequest | None = None
        self.server = server
        self.engine = engine
        self.peer = peer
        self.responded = False
        """A response (or a WebSocket acceptance) has been started."""
        self.status: int | None = None
        """The status answered (101 for a WebSocket), for the debug log."""
        self.keep_alive = True
        """Whether the connection may serve another request afterwards."""
        self.client_gone = False
        """Set when :meth:`until_disconnect` saw the client leave."""
        self.cors = True
        """Whether the answer may carry CORS headers (the server decides per route: not the API's,
        see :mod:`.access`; and only with the server's ``cors``)."""
        self._head = event.method == b"HEAD"
        self.past_h11 = False
        """The whole response was written without h11 (its side of ``connection`` not moved
        on): the connection reads its next request with a fresh h11 state."""

    @property
    def _h11(self) -> h11.Connection:
        """The request's h11 state (made when first needed for a plain request)."""
        connection = self._h11_state
        if connection is None:
            assert self._open_h11 is not None
            connection, self._h11_event = self._open_h11()
            self._h11_state = connection
        return connection

    @property
    def h11_state(self) -> h11.Connection | None:
        """The h11 state of this request if any answer went through h11 (``None`` for a plain
        request answered without it)."""
        return self._h11_state

    # ------------------------------------------------------------------ whole responses

    def _headers(self, extra: Iterable[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
        headers = common_headers(self.server.cors and self.cors)
        if self.engine.stopping:
            self.keep_alive = False
        if not self.keep_alive:
            headers.append((b"connection", b"close"))
        for name, value in extra:
            headers.append((name.lower().encode("latin-1"), value.encode("latin-1")))
        return headers

    async def respond(
        self,
        status: int,
        body: bytes = b"",
        *,
        content_type: str = "text/plain; charset=utf-8",
        headers: Iterable[tuple[str, str]] = (),
        close: bool = False,
    ) -> None:
        """Send a whole response (the body is left out for ``HEAD``)."""
        if close:
            self.keep_alive = False
        headers = status_headers(status, headers)
        fields = self._headers([("content-type", content_type), ("content-length", str(len(body))), *headers])
        if self.past_h11:
            raise h11.LocalProtocolError("a response was sent already")
        h = self._h11_state
        if (
            not self.responded
            and (h is None or h.our_state is h11.SEND_RESPONSE)  # None: a plain request, nothing sent
            and 200 <= status < 1000
            and status not in (204, 304)  # h11 frames these with no body whatever they say
            and client_keeps_alive(self._event)
            and [name for name, _ in fields if name in _H11_FRAMED] in _OWN_FRAMING
        ):
            data = response_bytes(status, fields, b"" if self._head else body)
            if data is not None:  # what h11 would write, without its events and checks
                self.responded = True
                self.status = status
                self.past_h11 = True
                await self._send_raw(data)
                return
        self.responded = True
        self.status = status
        h = self._h11
        data = h.send(h11.Response(status_code=status, headers=fields, reason=reason_phrase(status)))
        if body and not self._head:
            data += h.send(h11.Data(data=body))
        data += h.send(h11.EndOfMessage())
        await self._send_raw(data)

    async def error(
        self, status: int, message: str, *, headers: Iterable[tuple[str, str]] = (), close: bool = False
    ) -> None:
        """A plain-text error response whose body is ``message``."""
        await self.respond(status, (message + "\n").encode(), headers=headers, close=close)

    async def json(self, status: int, document: Any, *, headers: Iterable[tuple[str, str]] = ()) -> None:
        body = json.dumps(document, indent=2, sort_keys=False).encode() + b"\n"
        await self.respond(
            status, body, content_type="application/json", headers=[("cache-control", "no-cache"), *headers]
        )

    async def read_body(self, limit: int) -> bytes:
        """The request's body, whole: at most ``limit`` bytes, within the server's header timeout.

        Raises :class:`~arcly_trio.protocols.http.router.BadRequest` with ``413`` for a longer
        body (nothing past the limit is kept) and ``408`` for one that does not arrive in time;
        :class:`ClientGone` if the client leaves.
        """
        conn = self._h11
        parts: list[bytes] = []
        size = 0
        with trio.move_on_after(self.server.header_timeout):
            while conn.their_state is h11.SEND_BODY:
                try:
                    event = conn.next_event()
                except h11.RemoteProtocolError as exc:
                    raise BadRequest(f"bad request body: {exc}") from None
                if event is h11.NEED_DATA:
                    try:
                        data = await self._stream.receive_some(RECV_SIZE)
                    except TRANSPORT_ERRORS as exc:
                        raise ClientGone(describe(exc)) from None
                    if not data:
                        raise ClientGone("the client closed the connection in its request body")
                    conn.receive_data(data)
                elif isinstance(event, h11.Data):
                    size += len(event.data)
                    if size > limit:
                        raise BadRequest(f"the request body is larger than {limit} bytes", 413)
                    parts.append(bytes(event.data))
                elif isinstance(event, h11.ConnectionClosed):
                    raise ClientGone("the client closed the connection in its request body")
            return b"".join(parts)
        raise BadRequest("the request body did not arrive in time", 408)

    async def preflight(self, methods: Iterable[str] = ()) -> None:
        """Answer a CORS preflight (``OPTIONS``); ``methods``: what the path's routes accept
        besides ``GET``/``HEAD``."""
        request = self.request
        assert request is not None
        allowed = ", ".join(["GET", "HEAD", *sorted(set(methods) - {"GET", "HEAD", "OPTIONS"}), "OPTIONS"])
        headers = [("allow", allowed)]
        if self.server.cors and self.cors:
            asked = request.header("access-control-request-headers")
            headers += [
                ("access-control-allow-methods", allowed),
                ("access-control-allow-headers", asked or "*"),
                ("access-control-max-age", "86400"),
            ]
        await self.respond(204, b"", headers=headers)

    def log_refusal(self, protocol: str, key: object, exc: StreamError, action: str = "play") -> None:
        """One line for a refused play (or publish), as every protocol logs one: a refusal at
        info level, summed up per address when many (:class:`~..clientlog.ClientLog`); an
        authorization refusal at debug level only (the engine's throttle logged it, once per
        burst, with its reason)."""
        authorization = isinstance(exc, Unauthorized)
        text = str(exc) if authorization else f"{action} of {key} refused: {exc}"
        address, port = self.peer
        self.server.clients.log(
            logging.DEBUG if authorization else logging.INFO,
            str(address),
            "refusals",
            "%s %s:%s %s",
            protocol,
            address,
            port,
            text,
        )

    # ---------------------------------------------------------------- streamed responses

    async def start(self, status: int, *, content_type: str, headers: Iterable[tuple[str, str]] = ()) -> None:
        """Send the head of a response whose body follows in :meth:`send` calls (chunked for
        HTTP/1.1 clients, delimited by closing the connection for HTTP/1.0)."""
        self.responded = True
        self.status = status
        fields = self._headers([("content-type", content_type), *headers])
        await self._send_raw(
            self._h11.send(h11.Response(status_code=status, headers=fields, reason=reason_phrase(status)))
        )

    async def send(self, data: bytes) -> None:
        """Send one piece of a streamed body (nothing for ``HEAD``)."""
        if data and not self._head:
            await self._send_raw(self._h11.send(h11.Data(data=data)))

    async def end(self) -> None:
        """End a streamed body."""
        await self._send_raw(self._h11.send(h11.EndOfMessage()))

    async def _send_raw(self, data: bytes) -> None:
        if self._deadline is not None:  # the connection's moved deadline (see WriteDeadline)
            await self._deadline.send(self._stream, data, self.server.write_timeout)
            return
        try:
            with trio.fail_after(self.server.write_timeout):
                await self._stream.send_all(data)
        except trio.TooSlowError:
            log_write_timeout(self.server, self.peer)
            raise ClientGone("write timeout") from None
        except TRANSPORT_ERRORS as exc:
            raise ClientGone(describe(exc)) from None

    @asynccontextmanager
    async def until_disconnect(self) -> AsyncIterator[None]:
        """Run the block until it ends or the client disconnects, whichever is first.

        A background task reads the connection (discarding anything the client sends) and
        cancels the block at end of file or on a connection error; :attr:`client_gone` is
        then ``True``. Leaving the block stops the watcher.
        """
        with unwrap_single():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch, nursery.cancel_scope)
                try:
                    yield
                finally:
                    nursery.cancel_scope.cancel()

    async def _watch(self, scope: trio.CancelScope) -> None:
        stream = self._stream
        try:
            while await stream.receive_some(RECV_SIZE):
                pass
        except TRANSPORT_ERRORS:
            pass
        self.client_gone = True
        self.keep_alive = False
        scope.cancel()

    # ------------------------------------------------------------------------ WebSocket

    def _check_upgrade(self) -> None:
        """Raise :class:`BadRequest` for a WebSocket handshake that cannot be accepted; from
        then on this connection serves the WebSocket only."""
        request = self.request
        assert request is not None
        problem = handshake_problem(request)
        if problem is not None:
            status, reason = problem
            raise BadRequest(reason, status, (("sec-websocket-version", "13"),) if status == 426 else ())
        h = self._h11
        while True:
            event = h.next_event()
            if event is h11.PAUSED:
                break
            if not isinstance(event, h11.EndOfMessage):
                raise BadRequest("a WebSocket handshake must have no body")
        trailing, closed = h.trailing_data
        if trailing or closed:
            raise BadRequest("data sent before the WebSocket handshake was answered")
        self.responded = True
        self.status = 101
        self.keep_alive = False
        assert self._h11_event is not None

    def _upgrade_headers(self) -> list[tuple[bytes, bytes]]:
        extra = [(b"access-control-allow-origin", b"*")] if self.server.cors and self.cors else []
        return [(b"server", SERVER_NAME), *extra]

    # ---------------------------------------------------------------- direct-write egress

    def open_egress(self) -> Egress:
        """The connection's direct-write :class:`~arcly_trio.workers.egress.Egress` (with the
        server's write timeout), for a live body or WebSocket that a kernel sink writes.
        Whatever is written through it must come after the response head or handshake
        answer (:meth:`start` before the sink starts, or :meth:`accept_egress_websocket`)."""
        return Egress(self._stream, write_timeout=self.server.write_timeout)

    @property
    def chunked(self) -> bool:
        """Whether a streamed body is sent with chunked coding (an HTTP/1.1 client) rather
        than delimited by closing the connection (HTTP/1.0)."""
        return self._event.http_version == b"1.1"

    def accept_egress_websocket(
        self,
        egress: Egress,
        *,
        max_message_size: int = 64 * 1024,
        subprotocol: str | None = None,
        protocol: str = "websocket",
    ) -> EgressWebSocket:
        """Complete the WebSocket handshake through ``egress`` (the ``101`` answer is its first
        write) and return the connection (see :mod:`.ws_egress`): ``subprotocol`` (one the
        client offered) is selected, the peer's messages are held to ``max_message_size``
        bytes and the other :class:`~arcly_trio.protocols.http.websocket.WebSocketLimits`,
        ``protocol`` names it in the log. Raises :class:`BadRequest` (answered over HTTP by
        the worker) for a handshake wsproto would refuse; the HTTP connection is not reused
        afterwards."""
        self._check_upgrade()
        request = self.request
        path = printable(request.path, 80) if request is not None else "?"
        label = f"{protocol} {self.peer[0]}:{self.peer[1]} {path}"
        return accept(
            egress,
            rebuild_request_head(self._h11_event),
            self._upgrade_headers(),
            subprotocol=subprotocol,
            limits=WebSocketLimits(max_message_size),
            label=label,
        )


def stream_error_status(exc: StreamError) -> int:
    """The HTTP status for a kernel error met while serving a request."""
    if isinstance(exc, (AppNotFound, StreamNotFound)):
        return 404
    if isinstance(exc, InvalidStreamName):
        return 400
    if isinstance(exc, Unauthorized):
        return exc.http_status
    if isinstance(exc, EngineClosed):
        return 503
    return 500
