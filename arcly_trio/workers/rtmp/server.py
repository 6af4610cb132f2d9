"""The RTMP protocol worker: OBS and ffmpeg publish to it, players play from it.

A thin trio adapter over the sans-IO cores (:mod:`arcly_trio.protocols.rtmp`,
:mod:`arcly_trio.media.flv`). One task per connection, in the worker's nursery; a player gets a
second task that pumps its kernel subscription to the socket. Writes go through one lock per
connection, so replies and media never interleave mid-chunk.

Hot path: a frame's outgoing chunks are built once per outgoing chunk size and shared by every
player (:func:`arcly_trio.protocols.rtmp.media.frame_chunks`, which the RTMP client uses too);
a player on another message stream id gets them with its id patched into a copy of the first
chunk header. A player that is behind gets several frames in one ``writev`` of the shared
buffers.

Flow control: acknowledgements are sent for the peer's window; a player that announced a
Set Peer Bandwidth gets no more unacknowledged bytes than it allows (its writes wait for an
acknowledgement, and its kernel subscription drops to the next keyframe meanwhile).

Resource handling (every limit is an argument of :class:`RtmpServer`):

* connection slots through an :class:`~arcly_trio.workers.admission.Admission`: a global cap
  where the oldest connection that neither publishes nor plays is evicted to make room, a cap
  on such idle connections per address, and an optional cap per address;
* deadlines: the handshake must finish within ``handshake_timeout``; a connection must publish
  or play within ``setup_timeout``; one that does neither is closed after ``idle_timeout``
  without *progress* (a command, media or data message: bytes alone, or pings and
  acknowledgements, do not count); a write that blocks for ``write_timeout`` (a player that
  stopped reading) closes the connection;
* memory: the sans-IO cores' size limits, small until a client publishes
  (``max_setup_buffer``), and a worker-wide :class:`~arcly_trio.core.budget.ByteBudget`
  (``max_partial_memory``) of partial-message bytes really held, given back when a
  connection ends.

RTMPS: with ``ssl_context`` the TCP listener speaks TLS (:func:`~arcly_trio.workers.listen.with_tls`;
the handshake is read within ``handshake_timeout``) and the worker's protocol is ``rtmps``. A
TLS connection never takes the ``writev`` fast path on its socket: its bytes go through the
stream's ``send_all``.

Error handling: anything wrong with one connection — malformed bytes, oversized messages, a
message cut short by the peer closing, a refused connect, publish or play (after the refusal
is sent), a peer that vanishes, a timeout, even a bug in this module — closes that connection
and logs one line with the peer address and the reason (a bug: with its traceback; peer text
escaped). Nothing else is disturbed. Errors accepting connections that mean overload
(EMFILE...) are logged and retried by :func:`trio.serve_listeners`; any other error in the
worker itself propagates and stops the engine.
"""

from __future__ import annotations

import logging
import math
import os
import ssl
from typing import TYPE_CHECKING, Any

import trio

from ...core.budget import ByteBudget
from ...core.errors import (
    AppNotFound,
    EngineClosed,
    InvalidStreamName,
    ProtocolError,
    PublishEnded,
    PublisherLimitReached,
    StreamAlreadyPublishing,
    StreamError,
    StreamNotFound,
    Unauthorized,
)
from ...core.excgroups import main_failure
from ...core.keys import Credentials, StreamKey
from ...core.text import printable
from ...kernel.subscription import EndReason, Subscription
from ...media import flv
from ...protocols.rtmp import (
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
from ...protocols.rtmp.media import frame_chunks, with_stream_id
from ...protocols.rtmp.handshake import ServerHandshake
from ..admission import Admission
from ..listen import LOCAL_PEER, open_listeners, peer_of, raw_socket, with_tls

if TYPE_CHECKING:
    from ...kernel.engine import Engine
    from ...kernel.stream import Publisher

__all__ = ["RtmpServer"]

log = logging.getLogger("arcly_trio.rtmp")

_RECV_SIZE = 65536
_IOV_MAX = 1024


class _Close(Exception):
    """End this connection after flushing what is queued (reason logged by the handler)."""


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
    each limit does.
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
        max_batch: int = 64,
        reuse_port: bool = False,
        unix_socket: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host = host
        self.ssl_context = ssl_context
        self.name = "rtmps" if ssl_context is not None else "rtmp"
        """The protocol of this worker's clients (``rtmp`` or ``rtmps``)."""
        self.listening = False
        self.reuse_port = reuse_port
        self.unix_socket = unix_socket
        self.requested_port = port
        self.port: int | None = None
        self.chunk_size = chunk_size
        self.handshake_timeout = handshake_timeout
        self.setup_timeout = setup_timeout
        self.idle_timeout = idle_timeout
        self.write_timeout = write_timeout
        self.max_setup_buffer = max_setup_buffer
        self.max_batch = max_batch
        self.admission = Admission(
            max_connections=max_connections,
            max_pending_per_address=max_pending_per_address,
            max_per_address=max_per_address,
            log=log,
            label="RTMP connection",
        )
        self.budget = ByteBudget(max_partial_memory)
        """Partial-message bytes held by all connections (see the module docstring)."""
        self.connections = 0

    @property
    def open_connections(self) -> int:
        return self.admission.open

    async def serve(self, engine: Engine, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await open_listeners(self.host, self.requested_port, reuse_port=self.reuse_port,
                                         unix_socket=self.unix_socket)
        self.port = listeners[0].socket.getsockname()[1]
        log.info("%s listening on %s:%d%s", self.name.upper(), self.host, self.port,
                 f" and {self.unix_socket}" if self.unix_socket else "")

        async def handler(stream: trio.abc.Stream) -> None:
            await self._handle(engine, stream)

        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(trio.serve_listeners, handler, with_tls(listeners, self.ssl_context))
                self.listening = True
                task_status.started(self.port)
        finally:
            self.listening = False

    async def _handle(self, engine: Engine, stream: trio.abc.Stream) -> None:
        try:
            peer = peer_of(stream)
        except OSError:
            await trio.aclose_forcefully(stream)
            return
        ticket = self.admission.admit(peer[0])
        if ticket is None:
            await trio.aclose_forcefully(stream)
            return
        connection = _Connection(self, engine, stream, peer)
        try:
            with ticket.scope:
                connection.ticket = ticket
                await connection.run()
            if ticket.evicted:
                log.debug("rtmp %s:%s evicted (idle, its slot was needed)", *peer)
        except (_Timeout, _Close, ProtocolError) as exc:
            log.warning("rtmp %s:%s closed: %s", *peer, exc)
        except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError) as exc:
            log.info("rtmp %s:%s went away: %s", *peer, exc or type(exc).__name__)
        except StreamError as exc:
            log.warning("rtmp %s:%s closed: %s", *peer, exc)
        except Exception:
            # A bug in handling this one connection must not take the worker (and the engine)
            # down with it: close the connection, log it loudly, serve the others.
            log.exception("rtmp %s:%s closed: internal error", *peer)
        finally:
            ticket.release()
            connection.session.close()
            if connection.busy:
                self.connections -= 1
                engine.activity.exit()
            await trio.aclose_forcefully(stream)


class _Connection:
    """One RTMP connection: the command loop (and, for a player, its pump task)."""

    def __init__(self, server: RtmpServer, engine: Engine, stream: trio.abc.Stream,
                 peer: tuple[str, int]) -> None:
        self.server = server
        self.engine = engine
        self.stream = stream
        self.peer = peer
        self.session = ServerSession(
            chunk_size=server.chunk_size, max_setup_buffer=server.max_setup_buffer, budget=server.budget
        )
        sock = raw_socket(stream)
        self.fd = sock.fileno() if sock is not None else None
        """The socket's descriptor for the ``writev`` fast path; ``None`` under TLS."""
        self.protocol = "relay" if peer == LOCAL_PEER else server.name
        """Subscribers over the local relay socket (other workers' pulls) count as ``relay``."""
        self.bytes_sent = 0
        self.acknowledged = 0
        self.ack_arrived = trio.Event()
        self.send_lock = trio.StrictFIFOLock()
        self.app: str | None = None
        self.connect_query: dict[str, str] = {}
        self.publish_stream_id: int | None = None
        self.players: dict[int, trio.CancelScope] = {}
        self.busy = False
        self.ticket: Any = None
        self.nursery: trio.Nursery | None = None
        now = trio.current_time()
        self.setup_deadline = now + server.setup_timeout
        self.last_progress = now

    def _mark_busy(self) -> None:
        if not self.busy:
            self.busy = True
            self.server.connections += 1
            self.engine.activity.enter()
            self.setup_deadline = math.inf
            if self.ticket is not None:
                self.ticket.busy()

    async def _send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Write ``data`` whole within the write timeout (a peer that does not read is closed)."""
        timeout = self.server.write_timeout
        with trio.move_on_after(timeout) as scope:
            await self.stream.send_all(data)
        if scope.cancelled_caught:
            raise _Timeout(f"a write blocked for {timeout:g} s (the peer does not read)")

    async def flush(self, extra: bytes = b"") -> None:
        async with self.send_lock:
            data = self.session.data_to_send()
            if extra:
                data = data + extra if data else extra
            if data:
                await self._send_all(data)

    async def receive(self) -> bytes:
        return await self.stream.receive_some(_RECV_SIZE)

    # ------------------------------------------------------------- lifecycle

    async def run(self) -> None:
        """Handshake, then serve commands (and players) until EOF or the first failure.

        A failure comes out as itself (not in an exception group), after whatever is queued
        (a rejection, an end-of-stream) has been sent, so the peer learns why it is closed.
        """
        await self._handshake()
        failure: BaseException | None = None
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                if await self._command_loop(None) is _EOF:
                    self._check_clean_eof()
                nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # A group of nothing but cancellations goes on up (trio's cancel scopes need it);
            # otherwise what ended the connection is logged by the handler.
            failure = main_failure(group, trio.Cancelled)
            if failure is None:
                raise
        finally:
            self.nursery = None
        # Say what is still queued (a rejection, an end-of-stream) before the socket closes.
        with trio.move_on_after(1) as scope:
            scope.shield = True
            try:
                await self.flush()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, _Timeout):
                pass
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
        with trio.move_on_after(timeout) as scope:
            while not handshake.complete:
                data = await self.receive()
                if not data:
                    raise _Close("peer closed during the handshake")
                handshake.receive_data(data)
                out = handshake.data_to_send()
                if out:
                    await self._send_all(out)
        if scope.cancelled_caught:
            raise _Timeout(f"handshake not completed within {timeout:g} s")
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

    async def _next_event(self) -> Any:
        """The session's next event, reading from the socket as needed; None at EOF."""
        session = self.session
        while True:
            handled = session.messages_handled
            event = session.next_event()
            if session.messages_handled != handled:
                self.last_progress = trio.current_time()
            if session.peer_acknowledged != self.acknowledged:  # counted while parsing
                self.acknowledged = session.peer_acknowledged
                self.ack_arrived.set()
                self.ack_arrived = trio.Event()
            if event is not None:
                return event
            await self.flush()
            deadline, reason = self._read_deadline()
            with trio.move_on_at(deadline) as scope:
                data = await self.receive()
            if scope.cancelled_caught:
                raise _Timeout(reason)
            if not data:
                return None
            session.receive_data(data)

    async def _command_loop(self, publisher: Publisher | None) -> object:
        """Handle events until EOF (``_EOF``) or, when publishing, until the publish ends."""
        while True:
            event = await self._next_event()
            if event is None:
                return _EOF
            if isinstance(event, MediaMessage):
                if publisher is not None and event.stream_id == self.publish_stream_id:
                    await self._ingest(publisher, event)
            elif isinstance(event, DataMessage):
                if publisher is not None and event.stream_id == self.publish_stream_id:
                    await self._ingest_data(publisher, event)
            elif isinstance(event, ConnectRequest):
                await self._connect(event)
            elif isinstance(event, PublishRequest):
                if await self._publish(event, publisher) is _EOF:
                    return _EOF
            elif isinstance(event, PlayRequest):
                await self._play(event)
            elif isinstance(event, (StreamDeleted, StreamCloseRequested)):
                if event.stream_id == self.publish_stream_id and publisher is not None:
                    return _UNPUBLISHED
                self._stop_player(event.stream_id)
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
            raise _Close(f"connect to unknown application {printable(event.app)!r}") from None
        self.app = event.app
        self.connect_query = dict(event.query)
        self.session.accept_connect()

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
            async with self.engine.publish(key, self._credentials(event.query), protocol=self.server.name) as pub:
                self._mark_busy()
                self.publish_stream_id = sid
                session.accept_publish(sid)
                await self.flush()
                log.info("rtmp %s:%s publishing %s", *self.peer, key)
                try:
                    outcome = await self._command_loop(pub)
                finally:
                    self.publish_stream_id = None
                log.info("rtmp %s:%s stopped publishing %s (%s)", *self.peer, key,
                         "connection closed" if outcome is _EOF else "unpublished")
                return outcome
        except InvalidStreamName as exc:
            refusal = ("NetStream.Publish.BadName", str(exc))
        except Unauthorized as exc:
            refusal = ("NetStream.Publish.Denied", str(exc))
        except StreamAlreadyPublishing as exc:
            refusal = ("NetStream.Publish.BadName", str(exc))
        except (PublisherLimitReached, AppNotFound, EngineClosed) as exc:
            refusal = ("NetStream.Publish.Rejected", str(exc))
        except PublishEnded as exc:
            session.send_on_status(sid, "status", "NetStream.Unpublish.Success", str(exc))
            raise _Close(str(exc)) from None
        session.reject_publish(sid, refusal[0], refusal[1])
        raise _Close(f"publish of {self.app}/{printable(event.name)} refused: {refusal[1]}")

    async def _ingest(self, publisher: Publisher, event: MediaMessage) -> None:
        try:
            if event.type_id == 9:
                frames = flv.parse_video_tracks(event.timestamp, event.payload)
            else:
                frames = flv.parse_audio_tracks(event.timestamp, event.payload)
        except flv.FlvUnsupported as exc:
            log.debug("rtmp %s:%s: skipped a message: %s", *self.peer, exc)
            return
        for frame in frames:
            await publisher.send(frame)

    async def _ingest_data(self, publisher: Publisher, event: DataMessage) -> None:
        frame = flv.parse_data(event.timestamp, event.body)
        if frame is None:
            return
        await publisher.send(frame)

    # ------------------------------------------------------------------ play

    async def _play(self, event: PlayRequest) -> None:
        assert self.nursery is not None
        self._stop_player(event.stream_id)
        await self.nursery.start(self._player, event)

    def _stop_player(self, stream_id: int) -> None:
        scope = self.players.pop(stream_id, None)
        if scope is not None:
            scope.cancel()

    async def _player(self, event: PlayRequest,
                      task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        session = self.session
        sid = event.stream_id
        refusal: tuple[str, str]
        try:
            key = self._key(event.name)
            async with self.engine.subscribe(key, self._credentials(event.query), protocol=self.protocol) as sub:
                self._mark_busy()
                why = "connection closed"
                try:
                    with trio.CancelScope() as scope:
                        self.players[sid] = scope
                        session.accept_play(sid)
                        await self.flush()
                        task_status.started()
                        log.info("rtmp %s:%s playing %s", *self.peer, key)
                        await self._pump(sub, sid)
                        self._say_ended(sub, sid)
                        await self.flush()
                    if scope.cancelled_caught:
                        why = "stopped by the player"
                    else:
                        why = (sub.end_reason or EndReason.STREAM_ENDED).value
                finally:
                    log.info("rtmp %s:%s stopped playing %s (%s; %d frames dropped)",
                             *self.peer, key, why, sub.dropped)
                if self.players.get(sid) is scope:
                    del self.players[sid]
                if sub.end_reason in (EndReason.EVICTED, EndReason.SHUTDOWN, EndReason.STREAM_ENDED, EndReason.REAPED,
                                      EndReason.KICKED):
                    # The stream is over for this player; closing tells every client for sure.
                    assert self.nursery is not None
                    self.nursery.cancel_scope.cancel()
            return
        except StreamNotFound as exc:
            refusal = ("NetStream.Play.StreamNotFound", str(exc))
        except InvalidStreamName as exc:
            refusal = ("NetStream.Play.StreamNotFound", str(exc))
        except (Unauthorized, AppNotFound, EngineClosed) as exc:
            refusal = ("NetStream.Play.Failed", str(exc))
        # A refused play ends the connection, as a refused publish does (the reason is sent
        # first, then logged by the handler).
        session.reject_play(sid, *refusal)
        await self.flush()
        task_status.started()
        raise _Close(f"play of {self.app}/{printable(event.name)} refused: {refusal[1]}")

    def _say_ended(self, sub: Subscription, sid: int) -> None:
        reason = sub.end_reason
        if reason is EndReason.EVICTED:
            self.session.send_on_status(sid, "error", "NetStream.Play.InsufficientBW",
                                        f"dropped {sub.dropped} frames: too slow for this stream")
            self.session.send_stream_eof(sid)
        elif reason is not None:
            self.session.send_unpublish_notify(sid, f"stream {sub.key} ended ({reason.value})")

    async def _pump(self, sub: Subscription, sid: int) -> None:
        """Write the subscription's frames, batching whatever has queued up (the stream
        already groups audio with the next video frame, see ``AppSpec.audio_hold``)."""
        session = self.session
        limit = self.server.max_batch
        while True:
            batch = await sub.next_batch(limit)
            if not batch:
                return
            chunk_size = session.out_chunk_size
            buffers: list[bytes | memoryview] = []
            for frame in batch:
                buffers += with_stream_id(frame_chunks(frame, chunk_size), sid)
            await self.write(buffers)

    async def write(self, buffers: list[bytes | memoryview]) -> None:
        """Write queued session output, then ``buffers``, under the connection's write lock.

        Fast path for the fan-out: when the lock is free it is taken without a checkpoint, and
        the shared buffers go straight to the non-blocking socket with ``writev`` (no join, no
        copy). What the kernel's send buffer did not take is written the same way as the socket
        drains, still without copying; a socket that takes nothing for the write timeout
        closes the connection.
        """
        await self._within_peer_bandwidth()
        lock = self.send_lock
        if lock.locked():
            await lock.acquire()
        else:
            lock.acquire_nowait()
        try:
            pending = self.session.data_to_send()
            if pending:
                buffers = [pending, *buffers]
            self.bytes_sent += sum(map(len, buffers))
            fd = self.fd
            if fd is None:  # TLS: the bytes must go through the stream
                await self._send_all(b"".join(buffers))
                return
            while True:
                try:
                    sent = os.writev(fd, buffers[:_IOV_MAX])
                except BlockingIOError:
                    sent = 0
                except OSError as exc:
                    raise trio.BrokenResourceError(f"write failed: {exc}") from exc
                buffers = _advance(buffers, sent)
                if not buffers:
                    return
                await self._wait_writable()
        finally:
            lock.release()

    async def _wait_writable(self) -> None:
        timeout = self.server.write_timeout
        with trio.move_on_after(timeout) as scope:
            await trio.lowlevel.wait_writable(self.stream.socket)  # type: ignore[attr-defined]  # (fd path only)
        if scope.cancelled_caught:
            raise _Timeout(f"a write blocked for {timeout:g} s (the peer does not read)")

    async def _within_peer_bandwidth(self) -> None:
        """Honour the peer's Set Peer Bandwidth: with more than that many bytes sent and not
        yet acknowledged, wait for an acknowledgement (meanwhile the subscription's queue
        fills and the kernel drops to the next keyframe for this player). A peer that never
        announced a bandwidth is not limited."""
        bandwidth = self.session.peer_bandwidth
        if bandwidth is None:
            return
        while self.bytes_sent - self.session.peer_acknowledged > bandwidth[0]:
            await self.ack_arrived.wait()


_EOF = object()
_UNPUBLISHED = object()
_REFUSED = object()


def _advance(buffers: list[bytes | memoryview], sent: int) -> list[bytes | memoryview]:
    """``buffers`` less their first ``sent`` bytes (views into the same memory: no copy)."""
    if not sent:
        return buffers
    for index, buffer in enumerate(buffers):
        size = len(buffer)
        if sent < size:
            return [memoryview(buffer)[sent:], *buffers[index + 1 :]]
        sent -= size
    return []
