"""The RTMP protocol worker: OBS and ffmpeg publish to it, players play from it.

A thin trio adapter over the sans-IO cores (:mod:`arcly_trio.protocols.rtmp`,
:mod:`arcly_trio.media.flv`). One task per connection, in the worker's nursery, and only one:
a player is a kernel sink (:class:`~arcly_trio.workers.egress.DirectSink`) that the stream's
task writes to directly, and the connection's task, which reads the player's commands, drains
what its socket did not take (see :mod:`arcly_trio.workers.egress`). Every write, media or
reply, goes through the connection's one :class:`~arcly_trio.workers.egress.Egress`, in order,
so replies and media never interleave mid-chunk.

Hot path: a frame's outgoing chunks are built once per outgoing chunk size and shared by every
player (:func:`arcly_trio.protocols.rtmp.media.frame_chunks`, which the RTMP client uses too),
around the publisher's own message body when it came over RTMP (ingest without copies, see
:mod:`arcly_trio.media.flv.tags`); a whole batch's chunks are joined once too
(:meth:`FrameBatch.encoded`) and written to every player of that chunk size with one
``write``. A player on another message stream id gets the same bytes with its id patched into a
12-byte copy of each first chunk header (:func:`~arcly_trio.protocols.rtmp.media.with_stream_id`),
so no value a client chooses multiplies what a frame holds.

Flow control: acknowledgements are sent for the peer's window; a player that announced a
Set Peer Bandwidth gets no more unacknowledged bytes than it allows (the egress queues past
it, and the kernel drops to the next keyframe for this player once the queue is full).

RTMPS: with ``ssl_context`` the TCP listener speaks TLS (:func:`~arcly_trio.workers.listen.with_tls`;
the handshake is read within ``handshake_timeout``) and the worker's protocol is ``rtmps``;
``ssl_context`` may be replaced while serving (a certificate reloaded): new connections use the
new one, open ones keep theirs. A
TLS connection never takes the direct-write path on its socket: its bytes go through the
stream's ``send_all`` (see :mod:`arcly_trio.workers.egress`).

Resource handling (every limit is an argument of :class:`RtmpServer`; the listener's, in its
:class:`~arcly_trio.workers.serving.Listener`, are applied by its
:class:`~arcly_trio.workers.serving.ConnectionRunner`, which also closes each connection's stream):

* connection slots through an :class:`~arcly_trio.workers.admission.Admission`: a global cap
  where, among the connections that neither publish nor play, the one longest without
  progress is evicted to make room; a cap on idle connections per address that applies only
  while the server is near its global cap; and an optional cap per address. A connection
  reports its steps to its ticket (each handshake part, C0+C1 then C2, arriving whole; each
  command, media or data message) and is busy from the moment the server starts deciding on
  its publish or play (authorization may wait on a hook): so a client on its way to publish or
  play is never idle, however many come from one address;
* deadlines: the handshake must finish within ``handshake_timeout``; a connection must publish
  or play within ``setup_timeout``; one that does neither is closed after ``idle_timeout``
  without *progress* (a command, media or data message: bytes alone, or pings and
  acknowledgements, do not count); a socket that takes nothing for ``write_timeout`` (a player
  that stopped reading) closes the connection;
* a player's queue: at most the application's ``subscriber_queue`` frames wait for its socket
  (shared buffers, not copies); past that the kernel's lag policy drops to the next keyframe;
* memory: the sans-IO cores' size limits, small until a client publishes
  (``max_setup_buffer``), and a worker-wide :class:`~arcly_trio.core.budget.ByteBudget`
  (``max_partial_memory``) of partial-message bytes really held, given back when a
  connection ends.

Error handling: anything wrong with one connection — malformed bytes, oversized messages, a
message cut short by the peer closing, a refused connect, publish or play (after the refusal
is sent), a peer that vanishes, a timeout, even a bug in this module — closes that connection
and logs one line with the peer address and the reason (peer text escaped), at the level of its
kind (``arcly_trio.server.logs``): a broken protocol a warning, a timeout or a refusal of what
it asked for information, an authorization refusal and a peer that went away debug (the
throttle logs the first; a play's or publish's "stopped" line says how it ended), a bug an
error with its traceback. Past ten of a kind from one address in 10 s they are summed up
(:class:`~arcly_trio.workers.clientlog.ClientLog`). The other workers' relays (the Unix socket)
are logged at debug level: they are not players. Nothing else is disturbed. Errors accepting
connections that mean overload (EMFILE...) are logged and retried by
:func:`trio.serve_listeners`; any other error in the worker itself propagates and stops the
engine.
"""

from __future__ import annotations

import logging
import math
import ssl
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

import trio

from arcly_trio.core.budget import ByteBudget
from arcly_trio.core.errors import (
    AppNotFound,
    EngineClosed,
    InvalidStreamName,
    LocalProtocolError,
    PeerGone,
    ProtocolError,
    PublishEnded,
    PublisherLimitReached,
    PublishRateLimited,
    StreamAlreadyPublishing,
    StreamError,
    StreamNotFound,
    Unauthorized,
    WriteTimeout,
)
from arcly_trio.core.frame import Frame, FrameBatch
from arcly_trio.core.keys import Credentials, StreamKey
from arcly_trio.core.text import printable
from arcly_trio.kernel.fanout import EndReason, Subscriber
from arcly_trio.media import flv
from arcly_trio.protocols.rtmp import (
    ConnectRequest,
    DataMessage,
    MediaMessage,
    PauseRequest,
    PlayRequest,
    PublishRequest,
    ServerSession,
    StreamCloseRequested,
    StreamDeleted,
    StreamUnpublishRequested,
)
from arcly_trio.protocols.rtmp.handshake import ServerHandshake
from arcly_trio.protocols.rtmp.media import SHARED_STREAM_ID, frame_chunks, message_frames, with_stream_id
from arcly_trio.transport import TRANSPORT_ERRORS, describe
from arcly_trio.workers.admission import Ticket
from arcly_trio.workers.clientlog import PLAY_ENDS_LOGGED, SESSION_ENDS_LOGGED
from arcly_trio.workers.egress import Buffer, DirectSink, Egress, Encoded
from arcly_trio.workers.listen import LOCAL_PEER
from arcly_trio.workers.serving import ConnectionRunner, Listener

if TYPE_CHECKING:
    from arcly_trio.kernel.engine import Engine
    from arcly_trio.kernel.stream import Publisher

__all__ = ["RtmpServer"]

log = logging.getLogger("arcly_trio.rtmp")

_RECV_SIZE = 65536


class _Close(Exception):
    """End this connection after flushing what is queued: the client broke the protocol (the
    reason is logged by the handler as a warning)."""


class _Refused(_Close):
    """End this connection: what it asked for was refused (logged as a refusal; at debug level
    only when authorization refused it, which the engine's throttle logs already)."""

    def __init__(self, message: str, *, authorization: bool = False) -> None:
        super().__init__(message)
        self.authorization = authorization


class _Gone(Exception):
    """The client went away before it said anything (a port check, a health probe)."""


class _Ended(Exception):
    """The kernel ended this connection's publish (kicked, cut by its bitrate limit, shut down):
    its "stopped publishing" line said so; the connection closes after telling the client."""


class _Timeout(Exception):
    """A deadline of this connection passed (the reason is the message)."""


class RtmpServer:
    """The RTMP protocol worker; register it with ``EngineBuilder.protocol``.

    ``serve`` reports the bound port through ``task_status.started`` (port 0 picks one) and
    keeps it in ``self.port``. ``reuse_port`` listens with ``SO_REUSEPORT`` (several worker
    processes on one port); ``unix_socket`` also listens there (the local relay between
    workers: its players count under protocol ``"relay"``). ``ssl_context`` serves RTMPS on
    the TCP port. ``connections`` counts connections that publish or play (the
    engine's graceful shutdown waits for it to reach 0). See the module docstring for what
    each limit does. ``listener`` gives the listener's options at once (a
    :class:`~arcly_trio.workers.serving.Listener`, in place of ``host``, ``port``, the connection
    limits, ``write_timeout``, ``reuse_port``, ``unix_socket`` and ``ssl_context``; ``TypeError``
    if both are given).
    """

    def __init__(
        self,
        host: str = "0.0.0.0",
        port: int = 1935,
        *,
        chunk_size: int = 4096,
        handshake_timeout: float = 10.0,
        setup_timeout: float = 30.0,
        idle_timeout: float = 60.0,
        write_timeout: float = 30.0,
        max_connections: int = 4096,
        max_pending_per_address: int | None = 32,
        max_per_address: int | None = None,
        max_setup_buffer: int = 256 * 1024,
        max_partial_memory: int | None = 256 * 1024 * 1024,
        reuse_port: bool = False,
        unix_socket: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        listener: Listener | None = None,
    ) -> None:
        given = Listener(
            host=host,
            port=port,
            max_connections=max_connections,
            max_pending_per_address=max_pending_per_address,
            max_per_address=max_per_address,
            write_timeout=write_timeout,
            reuse_port=reuse_port,
            unix_socket=unix_socket,
            ssl_context=ssl_context,
        )
        if listener is not None:
            if given != DEFAULT_LISTENER:
                raise TypeError("pass either listener= or its options (host, port, limits...), not both")
            given = listener
        self.listener = given
        """Where and how this worker listens (see :mod:`..serving`)."""
        self.ssl_context = given.ssl_context
        self.name = "rtmps" if given.ssl_context is not None else "rtmp"
        """The protocol of this worker's clients (``rtmp`` or ``rtmps``)."""
        self.chunk_size = chunk_size
        self.handshake_timeout = handshake_timeout
        self.setup_timeout = setup_timeout
        self.idle_timeout = idle_timeout
        self.write_timeout = given.write_timeout
        self.max_setup_buffer = max_setup_buffer
        self.runner = ConnectionRunner(given, name=self.name, label="RTMP connection", log=log)
        """Listens, admits and runs the connections (see :mod:`..serving`)."""
        self.admission = self.runner.admission
        self.budget = ByteBudget(max_partial_memory)
        """Partial-message bytes held by all connections (see the module docstring)."""
        self.connections = 0
        self.clients = self.runner.clients
        """How bad and refused clients ended: a line each while few, per burst when many."""

    @property
    def host(self) -> str:
        return self.listener.host

    @property
    def requested_port(self) -> int:
        return self.listener.port

    @property
    def reuse_port(self) -> bool:
        return self.listener.reuse_port

    @property
    def unix_socket(self) -> str | None:
        return self.listener.unix_socket

    @property
    def port(self) -> int | None:
        """The bound TCP port, once serving."""
        return self.runner.port

    @property
    def listening(self) -> bool:
        return self.runner.listening

    @property
    def open_connections(self) -> int:
        return self.admission.open

    @property
    def play_protocols(self) -> tuple[str, ...]:
        """The protocols of this worker's players: its own, and ``relay`` (the other workers')."""
        return (self.name, "relay") if self.unix_socket else (self.name,)

    @property
    def publish_protocols(self) -> tuple[str, ...]:
        return (self.name,)

    def _tls_context(self) -> ssl.SSLContext:
        """The TLS context for the next connection: :attr:`ssl_context` may be replaced while
        serving (a certificate reloaded); connections already open keep theirs."""
        assert self.ssl_context is not None
        return self.ssl_context

    async def serve(self, engine: Engine, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        async def handler(stream: trio.abc.Stream, peer: tuple[str, int], ticket: Ticket) -> None:
            await self._handle(engine, stream, peer, ticket)

        await self.runner.serve(
            handler, context_of=self._tls_context if self.ssl_context is not None else None, task_status=task_status
        )

    async def _handle(self, engine: Engine, stream: trio.abc.Stream, peer: tuple[str, int], ticket: Ticket) -> None:
        """One admitted connection (the runner closes its stream and releases its ticket)."""
        connection = _Connection(self, engine, stream, peer)
        connection.ticket = ticket
        clients, address, name = self.clients, peer[0], self.name
        try:
            await connection.run()
        except _Refused as exc:
            level = logging.DEBUG if exc.authorization else logging.INFO
            clients.log(level, address, "refusals", "%s %s:%s %s", name, *peer, exc)
        except (_Close, ProtocolError) as exc:
            clients.log(logging.WARNING, address, "protocol errors", "%s %s:%s closed: %s", name, *peer, exc)
        except (_Timeout, WriteTimeout) as exc:
            level = logging.DEBUG if connection.told else logging.INFO  # else its "stopped playing" said it
            clients.log(level, address, "timeouts", "%s %s:%s closed: %s", name, *peer, exc)
        except _Ended as exc:  # its "stopped publishing" line said why
            log.debug("%s %s:%s closed: %s", name, *peer, exc)
        except (_Gone, PeerGone, *TRANSPORT_ERRORS) as exc:
            # After a publish or play its "stopped" line has said how it ended.
            log.debug("%s %s:%s went away: %s", name, *peer, describe(exc))
        except StreamError as exc:
            clients.log(logging.WARNING, address, "errors", "%s %s:%s closed: %s", name, *peer, exc)
        finally:
            connection.session.close()
            if connection.busy:
                self.connections -= 1
                engine.activity.exit()


DEFAULT_LISTENER = Listener(host="0.0.0.0", port=1935, max_connections=4096)
"""The listener options :class:`RtmpServer` takes by default."""


class _Player(DirectSink):
    """One play of a connection: the kernel's sink for it, written through the connection's
    egress (see :mod:`..egress`). On message stream 1 it shares every batch's chunks with
    every other player of the same chunk size; on another id each frame's first chunk header
    gets a 12-byte copy with the id patched in."""

    __slots__ = ("stream_id", "key", "chunk_size", "attached")

    def __init__(self, egress: Egress, stream_id: int, key: StreamKey, chunk_size: int) -> None:
        super().__init__(egress)
        self.stream_id = stream_id
        self.key = key
        self.chunk_size = chunk_size
        if stream_id == SHARED_STREAM_ID:
            self.share(("rtmp", chunk_size), _batch_chunks, chunk_size)
        self.attached: AbstractAsyncContextManager[Subscriber] | None = None
        """The ``engine.attach`` of this play, exited when it stops."""

    def encode(self, frames: Sequence[Frame], start: int, end: int) -> Encoded:
        return _chunks(frames, start, end, self.chunk_size, self.stream_id)


def _batch_chunks(batch: FrameBatch, chunk_size: int) -> bytes:
    """A whole batch's chunks in one buffer (one copy per batch, then one ``write`` per player)."""
    return b"".join(_chunks(batch, 0, len(batch), chunk_size, SHARED_STREAM_ID)[0])


def _chunks(frames: Sequence[Frame], start: int, end: int, chunk_size: int, stream_id: int) -> Encoded:
    """The chunked messages of ``frames[start:end]`` (each built once per chunk size and kept
    with its frame) on message stream ``stream_id``. A frame RTMP cannot carry is left out."""
    buffers: list[Buffer] = []
    size = 0
    shared = stream_id == SHARED_STREAM_ID
    for index in range(start, end):
        try:
            data = frame_chunks(frames[index], chunk_size)
        except LocalProtocolError:
            continue
        if shared:
            buffers.append(data)
        else:
            buffers += with_stream_id(data, stream_id)
        size += len(data)
    return buffers, size


class _Connection:
    """One RTMP connection, one task: the command loop, which also drains its players' egress."""

    __slots__ = (
        "server",
        "engine",
        "stream",
        "peer",
        "protocol",
        "session",
        "egress",
        "app",
        "connect_query",
        "publish_stream_id",
        "players",
        "busy",
        "ticket",
        "setup_deadline",
        "last_progress",
        "told",
    )

    def __init__(self, server: RtmpServer, engine: Engine, stream: trio.abc.Stream, peer: tuple[str, int]) -> None:
        self.server = server
        self.engine = engine
        self.stream = stream
        self.peer = peer
        self.protocol = "relay" if peer == LOCAL_PEER else server.name
        """Subscribers over the local relay socket (other workers' pulls) count as ``relay``."""
        self.session = ServerSession(
            chunk_size=server.chunk_size, max_setup_buffer=server.max_setup_buffer, budget=server.budget
        )
        self.egress = Egress(stream, write_timeout=server.write_timeout)
        self.app: str | None = None
        self.connect_query: dict[str, str] = {}
        self.publish_stream_id: int | None = None
        self.players: dict[int, _Player] = {}
        self.busy = False
        self.told = False
        """Its players' "stopped playing" lines said how the connection ended."""
        self.ticket: Ticket | None = None
        now = trio.current_time()
        self.setup_deadline = now + server.setup_timeout
        self.last_progress = now

    @property
    def _player_level(self) -> int:
        """Plays of the other workers' relays are logged at debug level (see ``_play``)."""
        return logging.DEBUG if self.protocol == "relay" else logging.INFO

    def _progress(self) -> None:
        """The client made a step of its set-up (see :mod:`..admission`)."""
        if self.ticket is not None:
            self.ticket.progress()

    def _servers_turn(self) -> None:
        """The server decides on a publish or play (authorization may wait on a hook or the
        refusal throttle): the connection is not idle meanwhile. It stays so: it either serves
        or is closed."""
        if self.ticket is not None:
            self.ticket.busy()

    def _mark_busy(self) -> None:
        if not self.busy:
            self.busy = True
            self.server.connections += 1
            self.engine.activity.enter()
            self.setup_deadline = math.inf
            if self.ticket is not None:
                self.ticket.busy()

    def flush(self) -> None:
        """Write (or queue behind the media already queued) what the session has to send."""
        data = self.session.data_to_send()
        if data:
            self.egress.write((data,), len(data))

    # ------------------------------------------------------------- lifecycle

    async def run(self) -> None:
        """Handshake, then serve commands and players until EOF, the end of what was played,
        or the first failure (which comes out as itself, after whatever is queued, a
        rejection or an end-of-stream, has been sent, so the peer learns why it is closed)."""
        failure: BaseException | None = None
        try:
            await self._handshake()
            outcome = await self._command_loop(None)
            if outcome is _EOF:
                self._check_clean_eof()
        except (trio.Cancelled, KeyboardInterrupt):
            raise
        except BaseException as exc:
            failure = exc
        finally:
            # Each player's one "stopped" line says how its connection ended.
            self.told = bool(self.players)
            await self._stop_players(
                f"dropped: {failure}" if isinstance(failure, (WriteTimeout, _Timeout)) else "connection closed"
            )
        # Say what is still queued (a rejection, an end-of-stream) before the socket closes.
        with trio.move_on_after(1) as scope:
            scope.shield = True
            try:
                self.flush()
                await self.egress.drain()
            except (PeerGone, WriteTimeout, *TRANSPORT_ERRORS):
                pass
        self.egress.discard()
        if failure is not None:
            raise failure

    def _check_clean_eof(self) -> None:
        """The peer closed: fine between messages, a truncated message when in the middle of one."""
        pending = self.session.pending_bytes
        if pending:
            raise _Close(f"peer closed the connection in the middle of a message ({pending} bytes pending)")

    async def _handshake(self) -> None:
        handshake = ServerHandshake()
        timeout = self.server.handshake_timeout
        received = False
        with trio.move_on_after(timeout) as scope:
            while not handshake.complete:
                data = await self.stream.receive_some(_RECV_SIZE)
                if not data:
                    if not received:
                        raise _Gone("closed before the handshake")
                    raise _Close("peer closed during the handshake")
                received = True
                handshake.receive_data(data)
                out = handshake.data_to_send()
                if out:  # C0+C1 arrived whole: S0+S1+S2 go out
                    self._progress()
                    await self.stream.send_all(out)
        if scope.cancelled_caught:
            raise _Timeout(f"handshake not completed within {timeout:g} s")
        self._progress()  # C2
        self.session.receive_data(handshake.leftover())

    def _read_deadline(self) -> tuple[float, str]:
        """When a connection that neither publishes nor plays is closed, and why."""
        if self.busy:
            return math.inf, ""
        server = self.server
        idle_at = self.last_progress + server.idle_timeout
        if self.setup_deadline <= idle_at:
            return self.setup_deadline, f"neither published nor played within {server.setup_timeout:g} s"
        return idle_at, f"no command for {server.idle_timeout:g} s (neither publishing nor playing)"

    def _flow_control(self) -> None:
        """Honour the peer's Set Peer Bandwidth: no more than that many bytes unacknowledged
        (past it the egress queues, and the players' queues fill and drop to the next
        keyframe meanwhile). A peer that never announced a bandwidth is not limited."""
        session = self.session
        bandwidth = session.peer_bandwidth
        limit = math.inf if bandwidth is None else session.peer_acknowledged + bandwidth[0]
        egress = self.egress
        if limit != egress.limit:
            raised = limit > egress.limit
            egress.limit = limit
            if raised:
                egress.resume()

    async def _next_event(self) -> Any:
        """The session's next event, reading from the socket as needed; None at EOF,
        ``_ENDED`` once every play of a connection that only played has ended."""
        session = self.session
        egress = self.egress
        while True:
            handled = session.messages_handled
            event = session.next_event()
            if session.messages_handled != handled:
                self.last_progress = trio.current_time()
                self._progress()
            if event is not None:
                return event
            self._flow_control()
            self.flush()
            if await self._players_ended():
                return _ENDED
            deadline, reason = self._read_deadline()
            if deadline == math.inf:  # publishing or playing: no deadline (and no cancel scope)
                data = await egress.receive(_RECV_SIZE)
            else:
                with trio.move_on_at(deadline) as scope:
                    data = await egress.receive(_RECV_SIZE)
                if scope.cancelled_caught:
                    raise _Timeout(reason)
            if data is None:
                continue  # interrupted: drain, or a play has ended
            if not data:
                return None
            session.receive_data(data)

    async def _command_loop(self, publisher: Publisher | None) -> object:
        """Handle events until EOF (``_EOF``), until every play ended (``_ENDED``) or, when
        publishing, until the publish ends (``_UNPUBLISHED``)."""
        while True:
            event = await self._next_event()
            if event is None:
                return _EOF
            if event is _ENDED:
                return _ENDED
            if isinstance(event, (MediaMessage, DataMessage)):
                if publisher is not None and event.stream_id == self.publish_stream_id:
                    await self._ingest(publisher, event)
            elif isinstance(event, ConnectRequest):
                await self._connect(event)
            elif isinstance(event, PublishRequest):
                outcome = await self._publish(event, publisher)
                if outcome is _EOF or outcome is _ENDED:
                    return outcome
            elif isinstance(event, PlayRequest):
                await self._play(event)
            elif isinstance(event, (StreamDeleted, StreamCloseRequested)):
                if event.stream_id == self.publish_stream_id and publisher is not None:
                    return _UNPUBLISHED
                await self._stop_player(event.stream_id, "stopped by the player")
            elif isinstance(event, StreamUnpublishRequested):
                if publisher is not None:
                    return _UNPUBLISHED
            elif isinstance(event, PauseRequest):
                self.session.accept_pause(event.stream_id, event.paused)

    # --------------------------------------------------------------- connect

    async def _connect(self, event: ConnectRequest) -> None:
        try:
            self.engine.application(event.app)
        except AppNotFound:
            self.session.reject_connect(f"application {printable(event.app)!r} not found")
            raise _Refused(f"connect to unknown application {printable(event.app)!r} refused") from None
        self.app = event.app
        self.connect_query = dict(event.query)
        self.session.accept_connect()
        log.debug("%s %s:%s connected to application %s", self.server.name, *self.peer, event.app)

    def _credentials(self, query: dict[str, str]) -> Credentials:
        merged = {**self.connect_query, **query}
        return Credentials(token=merged.get("token"), peer=self.peer, query=merged, protocol=self.server.name)

    def _key(self, name: str) -> StreamKey:
        """The key of ``name`` in the connected app (``InvalidStreamName`` for a bad name)."""
        if self.app is None:
            raise _Close("publish or play before connect")
        return StreamKey(self.app, name)

    # --------------------------------------------------------------- publish

    async def _publish(self, event: PublishRequest, current: Publisher | None) -> object:
        session = self.session
        sid = event.stream_id
        if current is not None:
            session.reject_publish(sid, "NetStream.Publish.BadConnection", "already publishing")
            return _REFUSED
        refusal: tuple[str, str]
        try:
            key = self._key(event.name)
            self._servers_turn()
            name = self.server.name
            async with self.engine.publish(key, self._credentials(event.query), protocol=name) as pub:
                key = pub.key  # the authorization may have renamed it: the log names what is published
                self._mark_busy()
                self.publish_stream_id = sid
                session.accept_publish(sid)
                self.flush()
                log.info("%s %s:%s publishing %s", name, *self.peer, key)
                try:
                    outcome = await self._command_loop(pub)
                finally:
                    self.publish_stream_id = None
                log.info(
                    "%s %s:%s stopped publishing %s (%s)",
                    name,
                    *self.peer,
                    key,
                    "unpublished" if outcome is _UNPUBLISHED else "connection closed",
                )
                return outcome
        except InvalidStreamName as exc:
            refusal = ("NetStream.Publish.BadName", str(exc))
        except Unauthorized as exc:  # its text says what was refused and why
            session.reject_publish(sid, "NetStream.Publish.Denied", str(exc))
            raise _Refused(str(exc), authorization=True) from None
        except (StreamAlreadyPublishing, PublisherLimitReached, AppNotFound, EngineClosed) as exc:
            code = (
                "NetStream.Publish.BadName"
                if isinstance(exc, StreamAlreadyPublishing)
                else "NetStream.Publish.Rejected"
            )
            refusal = (code, str(exc))
        except PublishEnded as exc:  # the kernel ended it (kicked, cut, shut down): this session's end
            if isinstance(exc, PublishRateLimited):  # an error, not an unpublish
                session.send_on_status(sid, "error", "NetStream.Publish.Rejected", str(exc))
            else:
                session.send_on_status(sid, "status", "NetStream.Unpublish.Success", str(exc))
            # A kick, a cut and a start timeout are logged by the kernel with this session's end.
            level = logging.DEBUG if isinstance(exc, SESSION_ENDS_LOGGED) else logging.INFO
            log.log(
                level,
                "%s %s:%s stopped publishing %s/%s (%s)",
                self.server.name,
                *self.peer,
                exc.app,
                exc.stream,
                exc.reason,
            )
            raise _Ended(str(exc)) from None
        session.reject_publish(sid, refusal[0], refusal[1])
        raise _Refused(f"publish of {self.app}/{printable(event.name)} refused: {refusal[1]}")

    async def _ingest(self, publisher: Publisher, event: MediaMessage | DataMessage) -> None:
        try:
            frames = message_frames(event)
        except flv.FlvUnsupported as exc:
            log.debug("rtmp %s:%s: skipped a message: %s", *self.peer, exc)
            return
        for frame in frames:
            await publisher.send(frame)

    # ------------------------------------------------------------------ play

    async def _play(self, event: PlayRequest) -> None:
        """Attach a player to the stream (through the engine's one authorization path); the
        stream's task writes its frames from then on, and this task drains what is queued."""
        session = self.session
        sid = event.stream_id
        await self._stop_player(sid, "replaced by a new play")
        refusal: tuple[str, str]
        player: _Player | None = None
        try:
            key = self._key(event.name)
            player = _Player(self.egress, sid, key, session.out_chunk_size)
            self._servers_turn()
            attached = self.engine.attach(key, player, self._credentials(event.query), protocol=self.protocol)
            player.subscriber = await attached.__aenter__()
            player.attached = attached
            player.key = key = player.subscriber.key  # the authorization may have renamed it
        except (StreamNotFound, InvalidStreamName) as exc:
            refusal = ("NetStream.Play.StreamNotFound", str(exc))
        except Unauthorized as exc:  # its text says what was refused and why
            session.reject_play(sid, "NetStream.Play.Failed", str(exc))
            raise _Refused(str(exc), authorization=True) from None
        except (AppNotFound, EngineClosed) as exc:
            refusal = ("NetStream.Play.Failed", str(exc))
        else:
            self._mark_busy()
            self.egress.max_frames = self.engine.application(key.app).spec.subscriber_queue
            self.players[sid] = player
            session.accept_play(sid)
            self.flush()  # Play.Reset, Play.Start... before any media
            player.start()
            # The other workers' relays are not players: their pulls are logged where they are.
            log.log(self._player_level, "%s %s:%s playing %s", self.protocol, *self.peer, key)
            return
        # A refused play ends the connection, as a refused publish does (the reason is sent
        # first, then logged by the handler).
        session.reject_play(sid, *refusal)
        raise _Refused(f"play of {self.app}/{printable(event.name)} refused: {refusal[1]}")

    async def _stop_player(self, stream_id: int, why: str) -> None:
        player = self.players.pop(stream_id, None)
        if player is not None:
            await self._detach(player, why)

    async def _stop_players(self, why: str) -> None:
        players = list(self.players.values())
        self.players.clear()
        for player in players:
            await self._detach(player, why)

    async def _detach(self, player: _Player, why: str) -> None:
        """Take ``player`` off its stream (``engine.attach``'s exit) and log how it ended."""
        attached, player.attached = player.attached, None
        if attached is not None:
            with trio.CancelScope(shield=True):
                await attached.__aexit__(None, None, None)
        level = logging.DEBUG if why in PLAY_ENDS_LOGGED else self._player_level
        log.log(
            level,
            "%s %s:%s stopped playing %s (%s; %d frames dropped)",
            self.protocol,
            *self.peer,
            player.key,
            why,
            player.dropped,
        )

    async def _players_ended(self) -> bool:
        """Say goodbye to every player whose stream ended. True when the connection should
        close: a stream is over for one of its players (closing tells every client for
        sure), once what was queued for it and the goodbye have been written."""
        close = False
        for sid, player in list(self.players.items()):
            if not player.ended:
                continue
            del self.players[sid]
            reason = player.end_reason
            self._say_ended(player, sid)
            self.flush()
            await self._detach(player, (reason or EndReason.STREAM_ENDED).value)
            close = close or reason in _CLOSING
        if close:
            await self.egress.drain()  # its queued frames, then the goodbye
        return close

    def _say_ended(self, player: _Player, sid: int) -> None:
        reason = player.end_reason
        if reason is EndReason.EVICTED:
            self.session.send_on_status(
                sid,
                "error",
                "NetStream.Play.InsufficientBW",
                f"dropped {player.dropped} frames: too slow for this stream",
            )
            self.session.send_stream_eof(sid)
        elif reason is not None:
            self.session.send_unpublish_notify(sid, f"stream {player.key} ended ({reason.value})")


_EOF = object()
_ENDED = object()
_UNPUBLISHED = object()
_REFUSED = object()
_CLOSING = (EndReason.EVICTED, EndReason.SHUTDOWN, EndReason.STREAM_ENDED, EndReason.REAPED, EndReason.KICKED)
