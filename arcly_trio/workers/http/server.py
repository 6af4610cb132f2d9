"""The HTTP protocol worker: HTTP-FLV, WebSocket-FLV, HLS, DASH and the stats API on one port.

Routes (compatible with Node-Media-Server):

* ``GET /{app}/{stream}.flv``: live HTTP-FLV (chunked); the same path with a WebSocket
  handshake: WebSocket-FLV (binary messages of the same FLV bytes). See :mod:`.flv_routes`.
* the routes of the engine's stream services (``install_routes``, see
  :mod:`arcly_trio.kernel.service`), installed when the worker starts: HLS and LL-HLS
  playlists, segments and parts, and DASH MPDs (:mod:`arcly_trio.services.hls_routes`; a
  blocking playlist reload is a request being served while it waits), and those of any
  service of your own.
* ``GET /{app}/{stream}/frames`` and ``/ingest`` with a WebSocket handshake (subprotocol
  ``arcly.frames.v1``): play and publish frames for WebCodecs. See :mod:`.frames_routes`.
* ``GET /``, ``/watch/{app}/{stream}``, ``/publish/{app}/{stream}``: the browser pages (status,
  player, publisher), ``GET /api/server``. See :mod:`.pages_routes`.
* ``GET /api/streams``, ``GET /api/health``, ``GET /api/sessions``, ``DELETE
  /api/sessions/{id}``: JSON. See :mod:`.api_routes`.
* the routes of the engine's other plugins: stream sources, observers (``/metrics`` of a
  :class:`~arcly_trio.ops.metrics.PrometheusObserver`) and the authenticator.
* ``OPTIONS`` on any path: a CORS preflight answer. With ``cors=True`` (the default) every
  response carries ``Access-Control-Allow-Origin: *``, but those of the API (``/api/*``) and of
  protected and admin routes (``/metrics``...): no other origin's page may read them (see
  :mod:`.access`).

More routes (a player page, WebSocket APIs) are added to :attr:`HttpServer.router` before the
engine starts; handlers answer through an :class:`Exchange`.

API token (see :mod:`.access`): with ``api_token`` set, *protected* and *admin* routes
(``Router.add(..., protected=True)``: ``/api/streams``, ``/metrics``; ``admin=True``:
``/api/sessions`` and its kicks) need it, as ``Authorization: Bearer TOKEN`` or
``?api_token=TOKEN``: ``401`` (with ``WWW-Authenticate``) without it, ``403`` with a wrong one;
compared in constant time; refusals slow the address down like refused plays (the engine's
``auth_throttle``, action ``api``: a few checks in flight per address, ``429`` past them).
Without a token, admin routes answer only requests from this machine (loopback, with a local
``Host`` and no proxy header) and refuse others with ``403`` and how to set ``--api-token``. Requests on the Unix
socket (the other workers of ``--workers``, in a
private run directory) need none.

HTTPS: with ``ssl_context`` the TCP listeners speak TLS (:func:`~arcly_trio.workers.listen.with_tls`);
the handshake is read within the request-head deadline, so a client that stalls it is closed like
a slowloris head. ``ssl_context`` may be replaced while serving (a certificate reloaded): new
connections use the new one, open ones keep theirs.

HTTP/1.1: a plain request head (``GET``/``HEAD``, no body, no upgrade) is read by a strict
reader that yields exactly what h11 would (:mod:`arcly_trio.protocols.http.head`; several
pipelined heads from one buffer, no h11 state per request), and a whole response to a
keep-alive HTTP/1.1 request is written in one join, the bytes h11 would write (see
:attr:`.Exchange.past_h11`); every other head is parsed by h11 from the same bytes (so its
errors stay h11's) and every other answer written by h11 (chunked, HTTP/1.0, ``Connection:
close``); WebSocket
handshakes are read by h11 too and then answered by wsproto on the connection's egress (see
:mod:`.ws_egress`). On a plain socket, a live LL-HLS session's playlist reloads and parts are
answered by the session lane (:mod:`.lane`: the HLS service's quick answers, one ``writev``)
when it can answer them exactly as the handler would; every other request as above. With
``session_hub`` (Linux), a connection the lane has served is lent to the worker's session hub
(:mod:`.hub`: one task, a private epoll, held reloads answered in one pass per change) until
the hub hands it back.
HTTP/2 (``http2=True``, the default): on HTTPS, a client whose TLS
handshake chooses ``h2`` by ALPN is served by :class:`~.h2_connection.H2Connection` (the ``h2``
library; streams in tasks of the connection, the same routes and policy through
:func:`~.dispatch.dispatch`, its own limits: see that module); any other client by h11.

Resource handling: one task per connection in the worker's nursery, closed with
``aclose_forcefully`` whatever happens (the worker's :class:`~arcly_trio.workers.serving.ConnectionRunner`,
which owns the stream's life); connection slots through an
:class:`~arcly_trio.workers.admission.Admission` (``max_connections`` in all: the connection
longest without a request — one between requests or still sending its head — evicted to make
room; while the server is near that cap, at most ``max_pending_per_address`` idle ones per
address; optionally ``max_per_address``; only when every slot serves a request does a newcomer
get ``503``; a request served is the connection's progress, so a keep-alive client that asks
again within the admission's ``idle_after`` is not idle); a request head must arrive
whole within ``header_timeout`` seconds and fit in ``max_head_size`` bytes (so a slowloris
client that trickles its head is closed, and logged); every write must finish within
``write_timeout`` seconds (a live viewer: its socket taking nothing for that long). Only HTTP/1.0
and HTTP/1.1 are served (``505`` otherwise). A live HTTP-FLV, WebSocket-FLV or frame-API viewer
costs its connection one task, which reads the client while the stream's task writes to it
directly (:mod:`arcly_trio.workers.egress`): when it disconnects its sink is detached at once,
even if the stream is idle.
``connections`` counts connections that are serving a request (the engine's graceful shutdown
waits for it to reach 0; idle keep-alive connections are not counted and are simply closed).

Error handling: a malformed or oversized request gets a ``400`` (``431`` for an oversized
head) and a log line (the target without its query values, escaped), and closes that connection
only; so does a handler's :class:`BadRequest` or ``InvalidStreamName`` (an invalid stream name in
the path: ``400`` with the reason, one line, no traceback); a client that goes away, times out or
breaks the WebSocket protocol ends its own connection (logged at info or debug level); a bug in
a handler is logged with its traceback and answered with ``500`` if nothing was sent yet.
Every line is at the level of its kind of event (``arcly_trio.server.logs``: a bad request a
warning, a timeout or a refused play information, an authorization refusal debug, as the RTMP
worker's), and past ten of a kind from one address in 10 s they are summed up
(:class:`~arcly_trio.workers.clientlog.ClientLog`); at debug level every request is a line (an
access log: method, target without its query values, status). A bug that gets out of a
connection is logged by the runner (:mod:`arcly_trio.workers.serving`) and closes that connection only. Errors
accepting connections that mean overload (EMFILE...) are logged and retried by :func:`trio.serve_listeners`;
any other error of the worker itself stops the engine.
"""

from __future__ import annotations

import logging
import math
import ssl
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import h11
import trio

from arcly_trio.core.redact import redact_url
from arcly_trio.core.text import printable
from arcly_trio.protocols.http.head import DECLINED, PlainRequest, read_plain_head
from arcly_trio.protocols.http.router import HttpRequest, Router, wants_websocket
from arcly_trio.protocols.http.websocket import head_size
from arcly_trio.transport import TRANSPORT_ERRORS, describe
from arcly_trio.workers.admission import Ticket
from arcly_trio.workers.http import api_routes, flv_routes, frames_routes, pages_routes, playback_routes
from arcly_trio.workers.http.access import privileged, token_refusal
from arcly_trio.workers.http.dispatch import dispatch
from arcly_trio.workers.http.exchange import (
    ClientGone,
    Exchange,
    WriteDeadline,
    common_headers,
    log_write_timeout,
    reason_phrase,
)
from arcly_trio.workers.http.h2_connection import H2_PREFACE, H2Connection
from arcly_trio.workers.http.hub import SessionHub
from arcly_trio.workers.http.hub import available as hub_available
from arcly_trio.workers.http.lane import SessionLane
from arcly_trio.workers.serving import ConnectionRunner, Listener, ListeningWorker, chosen_listener

if TYPE_CHECKING:
    from arcly_trio.kernel.engine import Engine

__all__ = ["HttpServer", "Exchange", "ClientGone", "RouteInstaller"]

log = logging.getLogger("arcly_trio.http")

_RECV_SIZE = 65536
_MAX_DISCARDED_BODY = 64 * 1024
_BUSY_BODY = b"server busy: too many connections\n"
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: %d\r\nRetry-After: 1\r\nConnection: close\r\n"
    b"Access-Control-Allow-Origin: *\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY)
)


@runtime_checkable
class RouteInstaller(Protocol):
    """A plugin's optional hook (a stream service, a source, an observer, the authenticator:
    ``engine.plugins``): add its routes to the worker's router when the worker starts (HLS: its
    playlists, segments and MPDs)."""

    def install_routes(self, router: Router) -> None: ...


class HttpServer(ListeningWorker):
    """The HTTP worker; register it with ``EngineBuilder.protocol``.

    Args:
        host, port: where to listen (port 0 picks one; ``serve`` reports it through
            ``task_status.started`` and keeps it in :attr:`port`).
        cors: add CORS headers and answer preflights.
        max_connections: open connections at most (the one longest without a request is
            evicted for a newcomer; ``503`` when all serve requests).
        max_pending_per_address: idle connections one address may hold while the server is
            near ``max_connections`` (its oldest idle ones are evicted); ``None``: no quota.
        max_per_address: connections one address may hold in all (``None``: no limit).
        max_head_size: the largest request head (bytes); more gets ``431``.
        header_timeout: seconds a request head may take to arrive (also the keep-alive idle
            timeout between requests).
        write_timeout: seconds one write may block before the client is dropped.
        rtmp_port: the RTMP port, a hint for the pages' copyable ``rtmp://`` URLs (``None``:
            unknown; settable later, as the CLI does once the RTMP worker has bound its port).
        reuse_port: listen with ``SO_REUSEPORT`` (several worker processes on one port).
        unix_socket: also listen on this Unix socket (the other workers' API requests).
        api_token: the token protected routes need (``None``: they are open).
        ssl_context: serve HTTPS (a server-side :class:`ssl.SSLContext`) on the TCP port.
        listener: all the listener's options at once (a :class:`~arcly_trio.workers.serving.Listener`,
            in place of ``host``, ``port``, the connection limits, ``write_timeout``, ``reuse_port``,
            ``unix_socket`` and ``ssl_context``; ``TypeError`` if both are given).
        http2: offer HTTP/2 by ALPN (``h2`` before ``http/1.1``) on HTTPS (see
            :mod:`.h2_connection`); the worker sets the ALPN protocols of the TLS context it
            is given, so give it a context of its own.
        http2_cleartext: also serve HTTP/2 with prior knowledge (h2c, RFC 9113 3.3) on a plain
            port: a connection that opens with the HTTP/2 preface (``curl
            --http2-prior-knowledge``, a proxy's h2c upstream); others get HTTP/1.1 as before.
            Browsers never speak h2c.
        session_lane: answer a live LL-HLS session's hot requests on plain HTTP/1.1
            connections by the routes' quick answerers (see :mod:`.lane`); ``False``: every
            request through its route's handler.
        session_hub: serve the lane's connections from one task of the worker (see
            :mod:`.hub`; Linux only, with ``session_lane``): no task wake per request;
            ``False``: each connection's task serves its own.
    """

    play_protocols = ("http-flv", "ws-flv", "ws-frames")
    """The protocols of this worker's players (HLS and DASH are the HLS service's)."""
    publish_protocols = ("ws-frames",)

    def __init__(
        self,
        host: str = "0.0.0.0",
        port: int = 8080,
        *,
        cors: bool = True,
        max_connections: int = 1024,
        max_pending_per_address: int | None = 32,
        max_per_address: int | None = None,
        max_head_size: int = 16 * 1024,
        header_timeout: float = 10.0,
        write_timeout: float = 30.0,
        rtmp_port: int | None = None,
        reuse_port: bool = False,
        unix_socket: str | None = None,
        api_token: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        listener: Listener | None = None,
        http2: bool = True,
        http2_cleartext: bool = False,
        session_lane: bool = True,
        session_hub: bool = True,
    ) -> None:
        given = chosen_listener(
            Listener(
                host=host,
                port=port,
                max_connections=max_connections,
                max_pending_per_address=max_pending_per_address,
                max_per_address=max_per_address,
                write_timeout=write_timeout,
                reuse_port=reuse_port,
                unix_socket=unix_socket,
                ssl_context=ssl_context,
            ),
            DEFAULT_LISTENER,
            listener,
        )
        self.listener = given
        """Where and how this worker listens (see :mod:`..serving`)."""
        self.api_token = api_token
        self.ssl_context = given.ssl_context
        self.name = "https" if given.ssl_context is not None else "http"
        """The protocol this worker serves (health checks, metrics)."""
        self.rtmp_port = rtmp_port
        self.srt_port: int | None = None
        """The SRT, RTSP and RTSPS ports, hints for the pages' play URLs like ``rtmp_port``
        (``None``: off or unknown; the CLI sets them once those workers have bound)."""
        self.rtsp_port: int | None = None
        self.rtsps_port: int | None = None
        self.cors = cors
        self.runner = ConnectionRunner(given, name=self.name, label="HTTP connection", log=log, refuse=_send_busy)
        """Listens, admits and runs the connections (see :mod:`..serving`)."""
        self.admission = self.runner.admission
        self.clients = self.runner.clients
        """How bad and refused clients ended: a line each while few, per burst when many."""
        self.max_head_size = max_head_size
        self.header_timeout = header_timeout
        self.write_timeout = given.write_timeout
        self.http2 = http2
        self.http2_cleartext = http2_cleartext
        """Whether the plain port serves HTTP/2 with prior knowledge too."""
        """Whether HTTPS offers HTTP/2 (ALPN ``h2``)."""
        self._alpn_set: ssl.SSLContext | None = None
        self.session_lane = session_lane
        """Whether plain connections opened from now on use the session lane (see :mod:`.lane`)."""
        self.lane_heads: dict[tuple[object, ...], tuple[bytes, bytes]] = {}
        """The session lane's answer heads (see :mod:`.lane`), shared by the connections."""
        self.session_hub = session_hub
        """Whether the lane's connections are served by the hub (see :mod:`.hub`): the hub is
        made if it is set when ``serve`` starts; connections lend themselves while it is set."""
        self.hub: SessionHub | None = None
        """The session hub while it runs (see :mod:`.hub`)."""
        self.lane_answers = 0
        """Requests the session lane answered (the others went through their handlers)."""
        self.connections = 0
        """Requests in service: HTTP/1.1 connections serving one and HTTP/2 streams (live
        players included)."""
        self.engine: Engine | None = None
        self.router = Router()
        api_routes.install(self.router)
        flv_routes.install(self.router)
        frames_routes.install(self.router)
        pages_routes.install(self.router)  # before services': /{app}/{stream}/{segment} would match /watch/a/b
        playback_routes.install(self.router)  # recordings; before services' too (playback.m3u8 is no segment)

    def _tls_context(self) -> ssl.SSLContext:
        """The TLS context for the next connection: :attr:`ssl_context` may be replaced while
        serving (a certificate reloaded); connections already open keep theirs."""
        context = self.ssl_context
        assert context is not None
        if context is not self._alpn_set:
            context.set_alpn_protocols(["h2", "http/1.1"] if self.http2 else ["http/1.1"])
            self._alpn_set = context
        return context

    async def serve(self, engine: Engine, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        self.engine = engine
        for plugin in (*engine.plugins, *engine.workers):  # a worker may serve routes too (WHIP/WHEP)
            if isinstance(plugin, RouteInstaller):
                plugin.install_routes(self.router)
        if not (self.session_hub and self.session_lane and hub_available()):
            await self.runner.serve(
                self._handle,
                context_of=self._tls_context if self.ssl_context is not None else None,
                task_status=task_status,
            )
            return
        async with trio.open_nursery() as nursery:
            hub = self.hub = SessionHub(self, engine)
            nursery.start_soon(hub.run)
            try:
                await self.runner.serve(
                    self._handle,
                    context_of=self._tls_context if self.ssl_context is not None else None,
                    task_status=task_status,
                )
            finally:
                self.hub = None
                nursery.cancel_scope.cancel()

    def api_refusal(self, request: HttpRequest) -> tuple[int, str] | None:
        """Why ``request`` may not use a protected route (status and message), or ``None``."""
        return token_refusal(request, self.api_token)

    def privileged(self, request: HttpRequest) -> bool:
        """Whether ``request`` may see what identifies clients (see :mod:`.access`)."""
        return privileged(request, self.api_token)

    async def _handle(self, stream: trio.abc.Stream, peer: tuple[str, int], ticket: Ticket) -> None:
        """One admitted connection (the runner closes its stream and releases its ticket)."""
        assert self.engine is not None
        connection: _Connection | H2Connection
        try:
            if isinstance(stream, trio.SSLStream) and self.http2:
                if not await self._handshake(stream, peer):
                    return
                if stream.selected_alpn_protocol() == "h2":
                    connection = H2Connection(self, self.engine, stream, peer, ticket)
                else:
                    connection = _Connection(self, self.engine, stream, peer, ticket)
            elif self.http2_cleartext and not isinstance(stream, trio.SSLStream):
                first = await self._opening(stream, peer)
                if first is None:
                    return
                if first.startswith(H2_PREFACE):
                    connection = H2Connection(self, self.engine, stream, peer, ticket, received=first)
                else:
                    connection = _Connection(self, self.engine, stream, peer, ticket, received=first)
            else:
                connection = _Connection(self, self.engine, stream, peer, ticket)
            await connection.run()
        except ClientGone as exc:
            log.debug("http %s:%s went away: %s", *peer, exc)
        except trio.TooSlowError:
            self.clients.log(logging.INFO, peer[0], "timeouts", "%s %s:%s closed: timed out", self.name, *peer)
        except TRANSPORT_ERRORS as exc:
            log.debug("http %s:%s went away: %s", *peer, describe(exc))

    async def _opening(self, stream: trio.abc.Stream, peer: tuple[str, int]) -> bytes | None:
        """A plain connection's first bytes, enough to tell the HTTP/2 preface from an
        HTTP/1.1 request (``None``: the client left or sent nothing within the head deadline)."""
        received = b""
        with trio.move_on_after(self.header_timeout):
            while len(received) < len(H2_PREFACE) and H2_PREFACE.startswith(received):
                data = await stream.receive_some(_RECV_SIZE)
                if not data:
                    return None
                received += data
            return received
        self.clients.log(
            logging.INFO,
            peer[0],
            "timeouts",
            "%s %s:%s closed: request head not complete after %g s",
            self.name,
            *peer,
            self.header_timeout,
        )
        return None

    async def _handshake(self, stream: trio.SSLStream[trio.abc.Stream], peer: tuple[str, int]) -> bool:
        """The TLS handshake (to learn the ALPN protocol), within the request-head deadline."""
        with trio.move_on_after(self.header_timeout):
            await stream.do_handshake()
            return True
        self.clients.log(
            logging.INFO,
            peer[0],
            "timeouts",
            "%s %s:%s closed: TLS handshake not complete after %g s",
            self.name,
            *peer,
            self.header_timeout,
        )
        return False


DEFAULT_LISTENER = Listener(host="0.0.0.0", port=8080, max_connections=1024)
"""The listener options :class:`HttpServer` takes by default."""


async def _send_busy(stream: trio.abc.Stream) -> None:
    """The answer of a connection admission has no slot for (the runner closes it)."""
    try:
        await stream.send_all(_BUSY)
    except TRANSPORT_ERRORS:
        pass


class _Connection:
    """One HTTP/1.x connection: read a request head, route it, answer, repeat.

    Plain requests (``GET``/``HEAD`` without a body or an upgrade, see
    :mod:`arcly_trio.protocols.http.head`) are read from the connection's own buffer without
    h11, several pipelined ones from one packet, and a whole answer to a keep-alive HTTP/1.1
    one is written without h11 too (:attr:`.Exchange.past_h11`; any other answer makes the
    request's h11 state then, from its head's bytes). Any head the strict reader declines is
    read by h11 from the same bytes, so its errors and edge cases are h11's; once that request
    is answered, what h11 received past it comes back to the buffer.

    Timers: the connection runs in one cancel scope whose deadline is moved (rather than a
    scope per read and per write): the head deadline while a head is awaited, the write
    timeout during each write (:class:`~.exchange.WriteDeadline`), none while a handler works
    (a blocking playlist reload may wait long)."""

    def __init__(
        self,
        server: HttpServer,
        engine: Engine,
        stream: trio.abc.Stream,
        peer: tuple[str, int],
        ticket: Ticket,
        *,
        received: bytes = b"",
    ) -> None:
        self.server = server
        self.ticket = ticket
        self.engine = engine
        self.stream = stream
        self.peer = peer
        self._buffer = bytearray(received)
        """What was received and not read yet (while h11 reads a request, h11 holds it)."""
        self._eof = False
        """The client closed its side (after what :attr:`_buffer` holds)."""
        self.h11: h11.Connection | None = None
        """h11's state while it reads and answers a request the strict reader declined."""
        self._past_h11 = False
        """The last response was written without h11 (see :attr:`.Exchange.past_h11`)."""
        self._plain_head = b""
        """The bytes of the plain request being served (for its h11 state, if needed)."""
        self._deadline: WriteDeadline | None = None
        self._head_noticed = False
        """The head being awaited is worth a line if it times out (the first one, or bytes came)."""
        self._lane: SessionLane | None = None
        """The session lane of a plain socket's connection (see :mod:`.lane`), made in :meth:`run`."""

    async def run(self) -> None:
        with trio.CancelScope() as scope:
            deadline = self._deadline = WriteDeadline(scope)
            if self.server.session_lane and type(self.stream) is trio.SocketStream:
                self._lane = SessionLane(self.server, self.engine, self.stream, self.peer, deadline,
                                         self.server.lane_heads)  # fmt: skip
            await self._serve()
        if not scope.cancelled_caught:
            return
        if deadline.writing:
            log_write_timeout(self.server, self.peer)
        elif self._head_noticed:
            self._log_head_timeout()
        else:
            log.debug("http %s:%s closed: idle keep-alive connection", *self.peer)

    async def _serve(self) -> None:
        first = True
        while True:
            request = await self._next_request(first)
            if request is None:
                return
            first = False
            lane = self._lane
            quick = lane.take(request) if lane is not None and isinstance(request, PlainRequest) else None
            self.server.connections += 1
            self.engine.activity.enter()
            self.ticket.busy()
            try:
                if quick is not None:
                    assert lane is not None and isinstance(request, PlainRequest)
                    again = await lane.serve(*quick, request)
                elif isinstance(request, PlainRequest):
                    again = await self._dispatch_plain(request)
                else:
                    again = await self._dispatch(request) and not self.engine.stopping and await self._h11_done()
            finally:
                self.server.connections -= 1
                self.engine.activity.exit()
                self.ticket.pending()
            if not again or self.engine.stopping:
                return
            hub = self.server.hub
            if quick is not None and hub is not None and self.server.session_hub:
                assert lane is not None
                if not await self._lent(hub, lane):
                    return

    async def _lent(self, hub: SessionHub, lane: SessionLane) -> bool:
        """Lend the connection to the hub until it hands it back (see :mod:`.hub`); whether
        the connection goes on serving."""
        back = await hub.lend(lane, self.ticket, self._buffer)
        reason = back.reason
        if reason == "declined":
            return True
        if reason == "eof":
            self._eof = True
            return True
        if reason == "write":  # the rest of an answer, then its request's end (as on the lane)
            assert back.job is not None and back.head is not None and self._deadline is not None
            try:
                await self._deadline.send(self.stream, back.rest, self.server.write_timeout)
            finally:
                back.job.end()
                self.server.connections -= 1
                self.engine.activity.exit()
                self.ticket.pending()
                if log.isEnabledFor(logging.DEBUG):
                    lane.log(back.head, back.status)
            return not back.close and not self.engine.stopping
        if reason == "timeout":
            assert self._deadline is not None
            self._head_noticed = back.noticed
            self._deadline.scope.cancel()
            await trio.lowlevel.checkpoint()
        if reason == "gone":
            raise ClientGone(back.detail)
        return False  # "close"

    async def _next_request(self, first: bool) -> PlainRequest | h11.Request | None:
        """The next request head, or ``None`` if the connection should close."""
        buffer = self._buffer
        limit = self.server.max_head_size
        assert self._deadline is not None
        scope = self._deadline.scope
        armed = False
        self._head_noticed = first or bool(buffer)  # a part of the next head came with the last one
        while True:
            found = read_plain_head(buffer, limit)
            if isinstance(found, PlainRequest):
                self._plain_head = bytes(buffer[: found.end])
                del buffer[: found.end]
                break
            if found is DECLINED or self._eof:
                break
            if not armed:  # NEED_DATA
                scope.deadline = trio.current_time() + self.server.header_timeout
                armed = True
            data = await self._receive()
            if data:
                buffer += data
                self._head_noticed = True
            else:
                self._eof = True
        if armed:
            scope.deadline = math.inf
        if isinstance(found, PlainRequest):
            return found
        # not a plain request (or the client closed): h11 reads the same bytes, as it always has
        conn = self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=limit)
        if buffer:
            conn.receive_data(bytes(buffer))
            buffer.clear()
        if self._eof:
            conn.receive_data(b"")
        return await self._read_request(first)

    def _log_head_timeout(self) -> None:
        """The one line for a request head that did not come whole in time."""
        self.server.clients.log(
            logging.INFO,
            self.peer[0],
            "timeouts",
            "%s %s:%s closed: request head not complete after %g s",
            self.server.name,
            *self.peer,
            self.server.header_timeout,
        )

    async def _h11_done(self) -> bool:
        """After a request h11 read: whether the connection may read another (what h11
        received past it goes back to the buffer)."""
        if not await self._discard_body():
            return False
        conn = self.h11
        assert conn is not None
        if not self._past_h11 and (conn.our_state is not h11.DONE or conn.their_state is not h11.DONE):
            return False
        trailing, closed = conn.trailing_data
        self._buffer[:] = trailing
        self._eof = closed
        self.h11 = None
        return True

    async def _receive(self) -> bytes:
        if self._lane is not None:
            return await self._lane.receive(_RECV_SIZE)
        try:
            return await self.stream.receive_some(_RECV_SIZE)
        except TRANSPORT_ERRORS as exc:
            raise ClientGone(describe(exc)) from None

    async def _read_request(self, first: bool) -> h11.Request | None:
        """The next request head, or ``None`` if the connection should close."""
        conn = self.h11
        assert conn is not None
        received = False
        try:  # a pipelined head already received needs no timer
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            await self._refuse(exc.error_status_hint, f"bad request: {exc}")
            return None
        if event is not h11.NEED_DATA:
            return await self._checked(event)
        with trio.move_on_after(self.server.header_timeout) as scope:
            while True:
                data = await self._receive()
                received = received or bool(data)
                conn.receive_data(data)
                try:
                    event = conn.next_event()
                except h11.RemoteProtocolError as exc:
                    await self._refuse(exc.error_status_hint, f"bad request: {exc}")
                    return None
                if event is not h11.NEED_DATA:
                    return await self._checked(event)
        if scope.cancelled_caught:
            if received or first:
                self._log_head_timeout()
            else:
                log.debug("http %s:%s closed: idle keep-alive connection", *self.peer)
        return None

    async def _checked(self, event: h11.Event | type[h11.PAUSED]) -> h11.Request | None:
        """``event`` if it is a request this server serves; else ``None`` (refused when it is
        a request of another HTTP version or with too large a head; ``ConnectionClosed`` or
        ``PAUSED``: nothing more to do)."""
        if not isinstance(event, h11.Request):
            return None
        if event.http_version not in (b"1.0", b"1.1"):
            await self._refuse(505, f"HTTP version {event.http_version!r} is not supported")
            return None
        # h11 caps incomplete heads only; a whole head that arrived at once is measured here
        # (its size from the parsed parts: the bytes of rebuild_request_head without building them).
        size = head_size(event)
        if size > self.server.max_head_size:
            await self._refuse(431, f"request head of {size} bytes is over {self.server.max_head_size}")
            return None
        return event

    async def _refuse(self, status: int, message: str) -> None:
        """Answer a request h11 could not read, then the connection closes."""
        self.server.clients.log(
            logging.WARNING, self.peer[0], "bad requests", "%s %s:%s %s", self.server.name, *self.peer, message
        )
        if self.h11 is None or self.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        body = (message + "\n").encode()
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", b"%d" % len(body)),
            (b"connection", b"close"),
            *common_headers(self.server.cors),
        ]
        try:
            data = self.h11.send(h11.Response(status_code=status, headers=headers, reason=reason_phrase(status)))
            data += self.h11.send(h11.Data(data=body)) + self.h11.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            return
        with trio.move_on_after(self.server.write_timeout):
            try:
                await self.stream.send_all(data)
            except TRANSPORT_ERRORS:
                pass

    async def _discard_body(self) -> bool:
        """Read the rest of the request (a body nobody asked for is discarded, up to a limit).

        What is received already is read without a timer: a GET's end of message (h11 gives it
        after the head) needs no waiting."""
        conn = self.h11
        assert conn is not None
        discarded = 0
        while conn.their_state is h11.SEND_BODY:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError:
                return False
            if event is h11.NEED_DATA:
                break
            if isinstance(event, h11.Data):
                discarded += len(event.data)
                if discarded > _MAX_DISCARDED_BODY:
                    return False
            elif isinstance(event, h11.ConnectionClosed):
                return False
        else:
            return True
        with trio.move_on_after(self.server.header_timeout):
            while conn.their_state is h11.SEND_BODY:
                try:
                    event = conn.next_event()
                except h11.RemoteProtocolError:
                    return False
                if event is h11.NEED_DATA:
                    conn.receive_data(await self._receive())
                elif isinstance(event, h11.Data):
                    discarded += len(event.data)
                    if discarded > _MAX_DISCARDED_BODY:
                        return False
                elif isinstance(event, h11.ConnectionClosed):
                    return False
            return True
        return False

    def _plain_h11(self) -> tuple[h11.Connection, h11.Request]:
        """The h11 state of the plain request being served, for an answer h11 must write: a
        fresh connection that has read its head (and its end: it has no body)."""
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.server.max_head_size)
        conn.receive_data(self._plain_head)
        event = conn.next_event()
        assert isinstance(event, h11.Request), event  # the strict reader accepts only what h11 reads
        conn.next_event()  # EndOfMessage
        return conn, event

    async def _dispatch_plain(self, head: PlainRequest) -> bool:
        """Serve one plain request; whether the connection may serve another."""
        exchange = Exchange(
            self.server, self.engine, self.stream, self._plain_h11, self.peer, head, deadline=self._deadline
        )
        target = head.target.decode("ascii", "replace")
        peer = self.peer

        def build(path: str, query: Mapping[str, str], params: Mapping[str, str]) -> HttpRequest:
            return HttpRequest(
                method=head.method.decode("ascii"),
                target=target,
                path=path,
                query=query,
                headers=tuple((name.decode("latin-1"), value.decode("latin-1")) for name, value in head.headers),
                peer=peer,
                http_version=head.http_version.decode("ascii"),
                params=params,
            )

        try:
            keep_alive = await dispatch(
                self.server, self.engine, exchange, peer, head.method.decode("ascii"), target, False, build
            )
        except h11.LocalProtocolError as exc:
            log.warning("http %s:%s response error: %s", *peer, exc)
            return False
        finally:
            if log.isEnabledFor(logging.DEBUG):
                self._log_access(head.method, target, exchange.status)
        if not (keep_alive and head.keep_alive):
            return False
        conn = exchange.h11_state  # an answer h11 wrote must be complete
        return exchange.past_h11 or conn is None or conn.our_state is h11.DONE

    def _log_access(self, method: bytes, target: str, status: int | None) -> None:
        """An access log line, for --log-level debug."""
        log.debug(
            "%s %s:%s %s %s: %s",
            self.server.name,
            *self.peer,
            method.decode("ascii", "replace"),
            printable(redact_url(target), 200),
            status if status is not None else "no answer",
        )

    async def _dispatch(self, event: h11.Request) -> bool:
        """Serve one request h11 read; whether the connection may serve another."""
        assert self.h11 is not None
        exchange = Exchange(self.server, self.engine, self.stream, self.h11, self.peer, event, deadline=self._deadline)
        self._past_h11 = False
        target = event.target.decode("ascii", "replace")
        headers = tuple((name.decode("latin-1"), value.decode("latin-1")) for name, value in event.headers)
        peer = self.peer

        def build(path: str, query: Mapping[str, str], params: Mapping[str, str]) -> HttpRequest:
            return HttpRequest(
                method=event.method.decode("ascii", "replace"),
                target=target,
                path=path,
                query=query,
                headers=headers,
                peer=peer,
                http_version=event.http_version.decode("ascii", "replace"),
                params=params,
            )

        try:
            return await dispatch(
                self.server,
                self.engine,
                exchange,
                peer,
                event.method.decode("ascii", "replace"),
                target,
                wants_websocket(headers),
                build,
            )
        except h11.LocalProtocolError as exc:
            log.warning("http %s:%s response error: %s", *peer, exc)
            return False
        finally:
            self._past_h11 = exchange.past_h11
            if log.isEnabledFor(logging.DEBUG):
                self._log_access(event.method, target, exchange.status)
