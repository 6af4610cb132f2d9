"""One RTMP connection, one task (:class:`RtmpConnection`): the handshake, then the command loop.

The loop feeds what it reads to the sans-IO :class:`~arcly_trio.protocols.rtmp.ServerSession`
and acts on its events: connect, publish (its media and data messages become frames for the
kernel, :func:`~arcly_trio.protocols.rtmp.media.message_frames`), play (a
:class:`~arcly_trio.workers.rtmp.play.RtmpPlayer` attached to the stream, which the stream's
task writes to directly), pause, delete and unpublish. It is the connection's only task: while
it waits for the peer it also drains what the socket did not take (see
:mod:`arcly_trio.workers.egress`). Every write, media or reply, goes through the connection's
one :class:`~arcly_trio.workers.egress.Egress`, in order, so replies and media never interleave
mid-chunk. What the connection needs of its worker is :class:`ConnectionHost` (its settings,
its partial-message budget and its count of busy connections).

Fairness: a read of 64 KiB can hold well over a thousand small messages; the loop lets the
other tasks run after every 64 messages handled, so no peer holds the event loop for longer
than that much work however it packs its messages.

Flow control: acknowledgements are sent for the peer's window; a player that announced a
Set Peer Bandwidth gets no more unacknowledged bytes than it allows (the egress queues past
it, and the kernel drops to the next keyframe for this player once the queue is full).

Progress and deadlines (the limits are the worker's, see :mod:`.server`): the connection reports
each step of its set-up to its admission ticket, becomes busy once the server decides on its
publish or play, and until then is closed at its handshake, set-up or idle deadline.

Error policy: :meth:`RtmpConnection.run` sends what is queued (a rejection, an end-of-stream)
and then raises the connection's first failure as itself: one of the exceptions below
(:class:`CloseConnection` and its :class:`Refused`, :class:`LeftBeforeHandshake`,
:class:`PublishEndedByKernel`, :class:`DeadlinePassed`), a protocol or stream error of the
core and the kernel, or a transport error. The worker (:mod:`.server`) logs it and closes the
stream; a refusal is sent to the client before it is raised. Cancellation passes through.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any, Protocol

import trio

from arcly_trio.core.budget import ByteBudget
from arcly_trio.core.errors import (
    AppNotFound,
    ArclyError,
    EngineClosed,
    InvalidStreamName,
    PeerGone,
    PublishEnded,
    PublisherLimitReached,
    PublishRateLimited,
    StreamAlreadyPublishing,
    StreamNotFound,
    Unauthorized,
    WriteTimeout,
)
from arcly_trio.core.keys import Credentials, StreamKey
from arcly_trio.core.text import printable
from arcly_trio.kernel.fanout import EndReason
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
from arcly_trio.protocols.rtmp.media import message_frames
from arcly_trio.transport import TRANSPORT_ERRORS
from arcly_trio.workers.admission import Ticket
from arcly_trio.workers.clientlog import PLAY_ENDS_LOGGED, SESSION_ENDS_LOGGED
from arcly_trio.workers.egress import Egress, bridges_audio
from arcly_trio.workers.listen import LOCAL_PEER
from arcly_trio.workers.rtmp.play import RtmpPlayer

if TYPE_CHECKING:
    from arcly_trio.kernel.engine import Engine
    from arcly_trio.kernel.stream import Publisher

__all__ = [
    "CloseConnection",
    "ConnectionHost",
    "DeadlinePassed",
    "LeftBeforeHandshake",
    "PublishEndedByKernel",
    "Refused",
    "RtmpConnection",
]

log = logging.getLogger("arcly_trio.rtmp")

_RECV_SIZE = 65536
_MESSAGES_PER_CHECKPOINT = 64
"""Messages handled from one read before the connection lets the other tasks run: a read of
64 KiB holds some 1500 small commands (``createStream``/``deleteStream`` pairs at ~40 us each
would hold the loop for 60+ ms)."""


class CloseConnection(ArclyError):
    """End this connection after flushing what is queued: the client broke the protocol (the
    reason is logged by the handler as a warning)."""


class Refused(CloseConnection):
    """End this connection: what it asked for was refused (logged as a refusal; at debug level
    only when authorization refused it, which the engine's throttle logs already)."""

    def __init__(self, message: str, *, authorization: bool = False) -> None:
        super().__init__(message)
        self.authorization = authorization


class LeftBeforeHandshake(ArclyError):
    """The client went away before it said anything (a port check, a health probe)."""


class PublishEndedByKernel(ArclyError):
    """The kernel ended this connection's publish (kicked, cut by its bitrate limit, shut down):
    its "stopped publishing" line said so; the connection closes after telling the client."""


class DeadlinePassed(ArclyError):
    """A deadline of this connection passed (the reason is the message)."""


class ConnectionHost(Protocol):
    """What a connection needs of its worker (:class:`~arcly_trio.workers.rtmp.server.RtmpServer`):
    its protocol name, its settings, its partial-message budget, and its count of connections
    that publish or play (which a connection raises when it becomes busy)."""

    name: str
    chunk_size: int
    handshake_timeout: float
    setup_timeout: float
    idle_timeout: float
    write_timeout: float
    max_setup_buffer: int
    budget: ByteBudget
    connections: int


class RtmpConnection:
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
        "takes_opus",
        "publish_stream_id",
        "players",
        "busy",
        "ticket",
        "setup_deadline",
        "last_progress",
        "told",
        "_unyielded",
    )

    def __init__(self, server: ConnectionHost, engine: Engine, stream: trio.abc.Stream, peer: tuple[str, int]) -> None:
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
        self.takes_opus = False
        """The client announced Opus in ``connect``'s ``fourCcList``: its plays keep the
        original Opus audio instead of the audio bridge's AAC."""
        self.publish_stream_id: int | None = None
        self.players: dict[int, RtmpPlayer] = {}
        self.busy = False
        self.told = False
        """Its players' "stopped playing" lines said how the connection ended."""
        self.ticket: Ticket | None = None
        now = trio.current_time()
        self.setup_deadline = now + server.setup_timeout
        self.last_progress = now
        self._unyielded = 0
        """Messages handled since the connection last let the other tasks run."""

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
                f"dropped: {failure}" if isinstance(failure, (WriteTimeout, DeadlinePassed)) else "connection closed"
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
            raise CloseConnection(f"peer closed the connection in the middle of a message ({pending} bytes pending)")

    async def _handshake(self) -> None:
        handshake = ServerHandshake()
        timeout = self.server.handshake_timeout
        received = False
        with trio.move_on_after(timeout) as scope:
            while not handshake.complete:
                data = await self.stream.receive_some(_RECV_SIZE)
                if not data:
                    if not received:
                        raise LeftBeforeHandshake("closed before the handshake")
                    raise CloseConnection("peer closed during the handshake")
                received = True
                handshake.receive_data(data)
                out = handshake.data_to_send()
                if out:  # C0+C1 arrived whole: S0+S1+S2 go out
                    self._progress()
                    await self.stream.send_all(out)
        if scope.cancelled_caught:
            raise DeadlinePassed(f"handshake not completed within {timeout:g} s")
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
                self._unyielded += session.messages_handled - handled
                if self._unyielded >= _MESSAGES_PER_CHECKPOINT:  # a read full of small messages
                    self._unyielded = 0
                    await trio.lowlevel.checkpoint()
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
                    raise DeadlinePassed(reason)
            self._unyielded = 0  # waiting for the peer let the others run
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
            raise Refused(f"connect to unknown application {printable(event.app)!r} refused") from None
        self.app = event.app
        self.connect_query = dict(event.query)
        self.takes_opus = event.announces("Opus")
        self.session.accept_connect()
        log.debug("%s %s:%s connected to application %s", self.server.name, *self.peer, event.app)

    def _credentials(self, query: dict[str, str]) -> Credentials:
        merged = {**self.connect_query, **query}
        return Credentials(token=merged.get("token"), peer=self.peer, query=merged, protocol=self.server.name)

    def _key(self, name: str) -> StreamKey:
        """The key of ``name`` in the connected app (``InvalidStreamName`` for a bad name)."""
        if self.app is None:
            raise CloseConnection("publish or play before connect")
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
            raise Refused(str(exc), authorization=True) from None
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
            raise PublishEndedByKernel(str(exc)) from None
        session.reject_publish(sid, refusal[0], refusal[1])
        raise Refused(f"publish of {self.app}/{printable(event.name)} refused: {refusal[1]}")

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
        player: RtmpPlayer | None = None
        try:
            key = self._key(event.name)
            legacy = not self.takes_opus and bridges_audio(self.engine)
            player = RtmpPlayer(self.egress, sid, key, session.out_chunk_size, legacy_audio=legacy)
            self._servers_turn()
            attached = self.engine.attach(key, player, self._credentials(event.query), protocol=self.protocol)
            player.subscriber = await attached.__aenter__()
            player.attached = attached
            player.key = key = player.subscriber.key  # the authorization may have renamed it
        except (StreamNotFound, InvalidStreamName) as exc:
            refusal = ("NetStream.Play.StreamNotFound", str(exc))
        except Unauthorized as exc:  # its text says what was refused and why
            session.reject_play(sid, "NetStream.Play.Failed", str(exc))
            raise Refused(str(exc), authorization=True) from None
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
        raise Refused(f"play of {self.app}/{printable(event.name)} refused: {refusal[1]}")

    async def _stop_player(self, stream_id: int, why: str) -> None:
        player = self.players.pop(stream_id, None)
        if player is not None:
            await self._detach(player, why)

    async def _stop_players(self, why: str) -> None:
        players = list(self.players.values())
        self.players.clear()
        for player in players:
            await self._detach(player, why)

    async def _detach(self, player: RtmpPlayer, why: str) -> None:
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

    def _say_ended(self, player: RtmpPlayer, sid: int) -> None:
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
