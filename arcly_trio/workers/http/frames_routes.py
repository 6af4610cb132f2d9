"""The ``arcly.frames.v1`` WebSocket routes: play ``/{app}/{stream}/frames``, publish ``/{app}/{stream}/ingest``.

The protocol (messages, close codes) is :mod:`arcly_trio.protocols.frames` and
``docs/frames-protocol.md``. Both routes need the WebSocket subprotocol ``arcly.frames.v1``
and go through the engine: ``engine.subscribe`` / ``engine.publish`` with the credentials of
the query (``?token=``, see :meth:`~arcly_trio.protocols.http.router.HttpRequest.credentials`), protocol
``"ws-frames"``, so
the engine's authenticator, publisher limit and takeover policy apply as on every path.

Play: ``start``, then for each config frame its ``config`` text and its record, then frames
(the GOP cache from its keyframe, then live), each binary message built once per frame (with
its WebSocket frame header) and shared by every viewer. The viewer is a :class:`FramesSink`
that the stream's task writes to directly (see :mod:`arcly_trio.workers.egress`): a viewer that
takes a whole batch of frames with no message of its own in between gets the batch's shared
buffers in one ``writev``. A viewer that falls behind skips to the next keyframe in the kernel
and is told with a ``stats`` message (``skipped``) right before the frame it resumes on (the
frames queued before the gap come first); ``stats`` also goes out once a second while frames
flow. When the stream ends: ``end`` and close code 1000 (1001 when the server stops, 4429 when
evicted for lagging past the lag budget). Anything a viewer sends is read and dropped (at most
4 KiB a message) by the connection's one task, which also tells at once when it leaves.

Publish: ``start`` once the engine accepted the publish, then every message is checked by a
:class:`~arcly_trio.protocols.frames.FramesReader` and each frame goes to the stream.
``stats`` (frames received) goes back once a second.

Resource handling and limits: the subprotocol, the authorization and the engine's limits are
all checked before a single message is read; a refused client gets its WebSocket accepted
with a 1 KiB message limit only to be told why (``end`` and a close code) and closed: browsers
cannot read an HTTP error answer to a handshake. Every route's WebSocket is an
:class:`~arcly_trio.workers.http.ws_egress.EgressWebSocket`: what a peer sends is held to
:class:`~arcly_trio.protocols.http.websocket.WebSocketLimits` (bytes and fragments per message,
a minimum progress rate, control frames per second; 1008 or 1009 past them). A publisher's
messages are capped by :class:`~arcly_trio.protocols.frames.Limits` (in bytes received, before
a message is handed over) and read one at a time: the next is not read before the last one's
frame went to the stream. Every write has the server's write timeout.

Error policy: an invalid application or stream name in the path is refused like any other
refusal, with close code 4400 (``MALFORMED``, the protocol's ``400``) and the reason in ``end``
(a handshake that cannot be accepted is answered ``400`` over HTTP). Bad input from a publisher (malformed,
oversized, out of order, a codec we do not
carry) ends that publisher only: ``end`` with the reason, then the close code of the
:class:`~arcly_trio.protocols.frames.FramesProtocolError`; the stream's viewers see the stream
end as for any publisher that leaves. Peer-provided text is logged with ``%r``. A viewer or
publisher that goes away ends its own connection quietly.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import trio

from arcly_trio.core.errors import (
    AddressPublisherLimitReached,
    AppNotFound,
    EngineClosed,
    InvalidStreamName,
    LocalProtocolError,
    PeerGone,
    PublishEnded,
    PublisherKicked,
    PublisherLimitReached,
    PublisherReplaced,
    PublishRateLimited,
    PublishStartTimedOut,
    StreamAlreadyPublishing,
    StreamError,
    StreamIdleReaped,
    StreamNotFound,
    Unauthorized,
    WriteTimeout,
)
from arcly_trio.core.frame import Frame, FrameBatch, FrameKind
from arcly_trio.core.keys import StreamKey
from arcly_trio.kernel.fanout import EndReason
from arcly_trio.kernel.stream import Publisher, Stream
from arcly_trio.protocols.frames.messages import (
    SUBPROTOCOL,
    CloseCode,
    End,
    FramesProtocolError,
    Limits,
    Start,
    Stats,
    TextMessage,
    close_reason,
    config_message,
    encode_text,
    frame_message,
)
from arcly_trio.protocols.frames.reader import Event, FramesReader
from arcly_trio.protocols.http.router import BadRequest, HttpRequest, Router
from arcly_trio.protocols.http.websocket import OPCODE_TEXT, frame_header
from arcly_trio.workers.clientlog import PLAY_ENDS_LOGGED, SESSION_ENDS_LOGGED
from arcly_trio.workers.egress import Buffer, DirectSink, Egress, Encoded
from arcly_trio.workers.http.exchange import Exchange
from arcly_trio.workers.http.ws_egress import EgressWebSocket

__all__ = ["FRAMES_PATH", "INGEST_PATH", "LIMITS", "PROTOCOL", "close_code_for", "install"]

log = logging.getLogger("arcly_trio.http")

FRAMES_PATH = "/{app}/{stream}/frames"
INGEST_PATH = "/{app}/{stream}/ingest"
PROTOCOL = "ws-frames"
"""The protocol name viewers and publishers of this route have in the engine."""
LIMITS = Limits()
"""The limits publishers are held to."""

_REFUSED_MESSAGE_SIZE = 1024
_VIEWER_MESSAGE_SIZE = 4096
_STATS_INTERVAL = 1.0
_CLOSE_TIMEOUT = 2.0
_END_REASONS = {
    EndReason.STREAM_ENDED: (CloseCode.NORMAL, "stream-ended", "the publisher left"),
    EndReason.REAPED: (CloseCode.NORMAL, "reaped", "the stream was idle and reaped"),
    EndReason.SHUTDOWN: (CloseCode.GOING_AWAY, "shutdown", "the server is stopping"),
    EndReason.EVICTED: (CloseCode.TOO_SLOW, "evicted", "this viewer fell too far behind"),
    EndReason.UNSUBSCRIBED: (CloseCode.NORMAL, "unsubscribed", "unsubscribed"),
    EndReason.KICKED: (CloseCode.ENDED, "kicked", "kicked by the operator"),
}


def install(router: Router) -> None:
    router.websocket(FRAMES_PATH, serve_frames)
    router.websocket(INGEST_PATH, serve_ingest)
    router.get(FRAMES_PATH, serve_not_websocket)
    router.get(INGEST_PATH, serve_not_websocket)


def close_code_for(exc: StreamError) -> CloseCode:
    """The close code for a kernel error met on entry (or at the end of a publish)."""
    if isinstance(exc, Unauthorized):
        return CloseCode.UNAUTHORIZED
    if isinstance(exc, InvalidStreamName):
        return CloseCode.MALFORMED
    if isinstance(exc, (AppNotFound, StreamNotFound)):
        return CloseCode.NOT_FOUND
    if isinstance(exc, StreamAlreadyPublishing):
        return CloseCode.CONFLICT
    if isinstance(exc, (AddressPublisherLimitReached, PublishRateLimited)):
        return CloseCode.TOO_MANY
    if isinstance(exc, (PublisherLimitReached, EngineClosed)):
        return CloseCode.UNAVAILABLE
    if isinstance(exc, (PublisherReplaced, StreamIdleReaped, PublisherKicked, PublishStartTimedOut)):
        return CloseCode.ENDED
    if isinstance(exc, PublishEnded):
        return CloseCode.GOING_AWAY
    if isinstance(exc, FramesProtocolError):
        return exc.code
    return CloseCode.INTERNAL


async def serve_not_websocket(request: HttpRequest, exchange: Exchange) -> None:
    await exchange.error(
        426,
        f"{request.path} is a WebSocket endpoint (subprotocol {SUBPROTOCOL}); see docs/frames-protocol.md",
        headers=[("upgrade", "websocket")],
    )


def _peer(request: HttpRequest) -> tuple[str, object]:
    return request.peer if request.peer is not None else ("?", "?")


def _offers_subprotocol(request: HttpRequest) -> bool:
    value = request.header("sec-websocket-protocol") or ""
    return SUBPROTOCOL in {token.strip() for token in value.split(",")}


async def _say_goodbye(ws: EgressWebSocket, end: End, code: int, timeout: float) -> None:
    """Send ``end`` and close with ``code`` (shielded: also runs when the task is cancelled)."""
    with trio.CancelScope(shield=True):
        try:
            ws.send_text(encode_text(end))
            await ws.close(code, close_reason(end.message or end.reason), min(timeout, _CLOSE_TIMEOUT))
        except (PeerGone, WriteTimeout):
            pass


async def _refused(
    exchange: Exchange, request: HttpRequest, code: CloseCode, message: str, egress: Egress | None = None
) -> None:
    """Accept the WebSocket only to say why the request is refused, then close it: browsers
    cannot read an HTTP error answer to a handshake."""
    egress = egress or exchange.open_egress()
    try:
        ws = exchange.accept_egress_websocket(
            egress,
            max_message_size=_REFUSED_MESSAGE_SIZE,
            protocol=PROTOCOL,
            subprotocol=SUBPROTOCOL if _offers_subprotocol(request) else None,
        )
        await _say_goodbye(ws, End("refused", message), code, exchange.server.write_timeout)
    finally:
        egress.discard()


def _subprotocol_problem(request: HttpRequest) -> str | None:
    if _offers_subprotocol(request):
        return None
    offered = request.header("sec-websocket-protocol")
    return f"this endpoint needs the WebSocket subprotocol {SUBPROTOCOL}" + (
        f" (offered: {offered[:60]})" if offered else " (none offered)"
    )


# --- play --------------------------------------------------------------------------------------

_WS_MESSAGE_KEY = ("arcly.frames.v1", "ws-frame")
_WS_CONFIG_KEY = ("arcly.frames.v1", "ws-config")
_BATCH_KEY = ("arcly.frames.v1", "ws-batch")


def _ws_message(frame: Frame) -> tuple[bytes, bytes]:
    message = frame_message(frame)
    return frame_header(len(message)), message


def _ws_config(frame: Frame) -> bytes | None:
    text = config_message(frame)
    return None if text is None else _ws_text_bytes(text)


def _ws_text_bytes(text: str) -> bytes:
    data = text.encode()
    return frame_header(len(data), OPCODE_TEXT) + data


def _frames_batch(batch: FrameBatch) -> tuple[bytes, int] | None:
    """The binary messages of a batch with no config frame (``None`` otherwise), in one
    buffer, and the frames they carry: shared by every viewer with nothing to insert."""
    buffers: list[Buffer] = []
    sent = 0
    for frame in batch:
        if frame.config:
            return None
        if frame.kind is FrameKind.DATA:
            continue
        try:
            header, message = frame.encoded(_WS_MESSAGE_KEY, _ws_message)
        except LocalProtocolError:
            continue
        buffers += (header, message)
        sent += 1
    return b"".join(buffers), sent


class FramesSink(DirectSink):
    """One viewer of ``arcly.frames.v1``: its frames as binary messages, with the ``config``
    texts, ``stats`` and skipped tracks that are its own (see the module docstring)."""

    __slots__ = ("stream", "sent", "reported", "skipped", "skipped_tracks", "next_stats")

    def __init__(self, egress: Egress) -> None:
        super().__init__(egress)
        self.stream: Stream | None = None
        self.sent = 0
        self.reported = 0  # the drops already folded into ``skipped``
        self.skipped = 0  # frames missed since the last stats message said so
        self.skipped_tracks: set[tuple[FrameKind, int]] = set()  # codecs the protocol does not carry
        self.next_stats = trio.current_time() + _STATS_INTERVAL

    def write(self, frames: Sequence[Frame], start: int, end: int, counted: int) -> None:
        subscriber = self.subscriber
        if (
            start == 0
            and end == len(frames)
            and type(frames) is FrameBatch
            and not self.skipped
            and not self.skipped_tracks
            and (subscriber is None or subscriber.dropped == self.reported)
        ):
            shared = frames.encoded(_BATCH_KEY, _frames_batch)
            if shared is not None:
                self.sent += shared[1]
                self.egress.send(shared[0], counted)
                self._stats_due()
                return
        buffers, size = self.encode(frames, start, end)
        self.egress.write(buffers, size, counted)
        self._stats_due()

    def encode(self, frames: Sequence[Frame], start: int, end: int) -> Encoded:
        subscriber = self.subscriber
        dropped = subscriber.dropped if subscriber is not None else 0
        if dropped != self.reported:
            # Frames queued before the gap came first; the viewer is told right before the
            # frame it resumes on (configs, then a keyframe).
            self.skipped += dropped - self.reported
            self.reported = dropped
        has_video = self.stream is None or self.stream.has_video
        buffers: list[Buffer] = []
        for index in range(start, end):
            frame = frames[index]
            kind = frame.kind
            if kind is FrameKind.DATA:
                continue
            if self.skipped and (frame.config or frame.keyframe or not has_video):
                buffers.append(self._text(Stats(self.sent, dropped, self.skipped, self.egress.queued_frames)))
                self.skipped = 0
            track = (kind, frame.track)
            try:
                if frame.config:
                    text = frame.encoded(_WS_CONFIG_KEY, _ws_config)
                    if text is None:  # a codec the protocol does not carry: skip the track
                        self.skipped_tracks.add(track)
                        continue
                    self.skipped_tracks.discard(track)
                    buffers += (text, *frame.encoded(_WS_MESSAGE_KEY, _ws_message))
                elif track not in self.skipped_tracks:
                    buffers += frame.encoded(_WS_MESSAGE_KEY, _ws_message)
                    self.sent += 1
            except LocalProtocolError:
                continue
        return buffers, sum(map(len, buffers))

    def _stats_due(self) -> None:
        now = trio.current_time()
        if now >= self.next_stats:
            self.next_stats = now + _STATS_INTERVAL
            stats = self._text(Stats(self.sent, self.dropped, 0, self.egress.queued_frames))
            self.egress.write((stats,), len(stats))

    @staticmethod
    def _text(message: TextMessage) -> bytes:
        return _ws_text_bytes(encode_text(message))


async def serve_frames(request: HttpRequest, exchange: Exchange) -> None:
    """``GET /{app}/{stream}/frames`` with a WebSocket handshake: play over ``arcly.frames.v1``."""
    peer = _peer(request)
    key = await _key_or_refuse(request, exchange)
    if key is None:
        return
    problem = _subprotocol_problem(request)
    if problem is not None:
        exchange.server.clients.log(
            logging.INFO, str(peer[0]), "refusals", "ws-frames %s:%s play of %s refused: %s", *peer, key, problem
        )
        await _refused(exchange, request, CloseCode.SUBPROTOCOL, problem)
        return
    engine = exchange.engine
    egress = exchange.open_egress()
    sink = FramesSink(egress)
    attached = engine.attach(key, sink, request.credentials(PROTOCOL), protocol=PROTOCOL)
    try:
        sink.subscriber = subscriber = await attached.__aenter__()
    except StreamError as exc:
        exchange.log_refusal(PROTOCOL, key, exc)
        await _refused(exchange, request, close_code_for(exc), str(exc), egress)
        return
    key = subscriber.key  # the authorization may have renamed it
    why = "client left"
    try:
        sink.stream = engine.stream(key)
        egress.max_frames = engine.application(key.app).spec.subscriber_queue
        ws = exchange.accept_egress_websocket(
            egress, max_message_size=_VIEWER_MESSAGE_SIZE, subprotocol=SUBPROTOCOL, protocol=PROTOCOL
        )
        log.info("ws-frames %s:%s playing %s (subscriber #%d)", *peer, key, subscriber.id)
        ws.send_text(encode_text(Start("play", str(key))))
        sink.start()
        timeout = exchange.server.write_timeout
        try:
            while not sink.ended and await ws.serve_peer():
                pass
            if sink.ended:
                code, reason, message = _END_REASONS[sink.end_reason or EndReason.STREAM_ENDED]
                ws.send_text(encode_text(End(reason, message, subscriber.dropped, sink.sent)))
                await ws.close(code, close_reason(message), min(timeout, _CLOSE_TIMEOUT))
        except PeerGone:
            pass
        except WriteTimeout as exc:
            why = f"dropped: {exc}"
    finally:
        egress.discard()
        await attached.__aexit__(None, None, None)
    # One line for the end of the play, whatever ended it.
    ended = sink.end_reason
    reason = ended.value if ended is not None and ended is not EndReason.UNSUBSCRIBED else why
    log.log(
        logging.DEBUG if reason in PLAY_ENDS_LOGGED else logging.INFO,  # else the kernel's line says it
        "ws-frames %s:%s stopped playing %s (%s; %d frames dropped)",
        *peer,
        key,
        reason,
        subscriber.dropped,
    )


async def _key_or_refuse(request: HttpRequest, exchange: Exchange) -> StreamKey | None:
    """The stream the path names; for an invalid name, the client is told why (``end`` and
    close code 4400, the frames protocol's ``400``) and ``None`` is returned."""
    try:
        return request.stream_key()
    except BadRequest as exc:
        peer = _peer(request)
        exchange.server.clients.log(
            logging.INFO, str(peer[0]), "refusals", "ws-frames %s:%s refused: %s", *peer, exc
        )  # the name is escaped (repr)
        await _refused(exchange, request, CloseCode.MALFORMED, str(exc))
        return None


# --- publish -----------------------------------------------------------------------------------


async def serve_ingest(request: HttpRequest, exchange: Exchange) -> None:
    """``GET /{app}/{stream}/ingest`` with a WebSocket handshake: publish over ``arcly.frames.v1``."""
    peer = _peer(request)
    key = await _key_or_refuse(request, exchange)
    if key is None:
        return
    engine = exchange.engine
    timeout = exchange.server.write_timeout
    problem = _subprotocol_problem(request)
    if problem is not None:
        exchange.server.clients.log(
            logging.INFO, str(peer[0]), "refusals", "ws-frames %s:%s publish of %s refused: %s", *peer, key, problem
        )
        await _refused(exchange, request, CloseCode.SUBPROTOCOL, problem)
        return
    egress = exchange.open_egress()
    ws: EgressWebSocket | None = None
    try:
        async with engine.publish(key, request.credentials(PROTOCOL), protocol=PROTOCOL) as publisher:
            ws = exchange.accept_egress_websocket(
                egress, max_message_size=LIMITS.max_message, subprotocol=SUBPROTOCOL, protocol=PROTOCOL
            )
            key = publisher.key  # the authorization may have renamed it
            log.info("ws-frames %s:%s publishing %s", *peer, key)
            await _ingest(ws, publisher, exchange, str(key))
    except StreamError as exc:
        code = close_code_for(exc)
        if ws is None:
            authorization = isinstance(exc, Unauthorized)
            text = str(exc) if authorization else f"publish of {key} refused: {exc}"
            exchange.server.clients.log(
                logging.DEBUG if authorization else logging.INFO,
                str(peer[0]),
                "refusals",
                "ws-frames %s:%s %s",
                *peer,
                text,
            )
            await _refused(exchange, request, code, str(exc), egress)
        else:
            log.log(
                logging.DEBUG if isinstance(exc, SESSION_ENDS_LOGGED) else logging.INFO,
                "ws-frames %s:%s stopped publishing %s (%s)",
                *peer,
                key,
                exc.reason if isinstance(exc, PublishEnded) else exc,
            )
            reason = "shutdown" if code == CloseCode.GOING_AWAY else "publish-ended"
            await _say_goodbye(ws, End(reason, str(exc)), code, timeout)
    finally:
        egress.discard()


async def _ingest(ws: EgressWebSocket, publisher: Publisher, exchange: Exchange, key: str) -> None:
    """Read, check and publish one publisher's messages until it ends, leaves or breaks a rule
    (its WebSocket limits: :class:`EgressWebSocket` closes it and logs why)."""
    timeout = exchange.server.write_timeout
    reader = FramesReader("publisher", LIMITS)
    try:
        ws.send_text(encode_text(Start("publish", key)))
        next_stats = trio.current_time() + _STATS_INTERVAL
        while True:
            message = await ws.receive_message()
            if message is None:
                if ws.violation is None:
                    log.info("ws-frames %s:%s stopped publishing %s (publisher left)", *exchange.peer, key)
                return
            if type(message) is not str:  # a frame (the common case): straight to the stream
                await publisher.send(reader.receive_binary(message))
                events: list[Event] = []
            else:
                events = reader.receive_text(message)
            for event in events:
                if isinstance(event, End):
                    log.info(
                        "ws-frames %s:%s stopped publishing %s (ended by the publisher: %r)",
                        *exchange.peer,
                        key,
                        event.reason,
                    )
                    await _say_goodbye(ws, End("publisher-ended", "", 0, reader.frames), CloseCode.NORMAL, timeout)
                    return
                if isinstance(event, Frame):
                    await publisher.send(event)
            now = trio.current_time()
            if now >= next_stats:
                next_stats = now + _STATS_INTERVAL
                ws.send_text(encode_text(Stats(reader.frames)))
    except FramesProtocolError as exc:
        exchange.server.clients.log(
            logging.WARNING,
            exchange.peer[0],
            "protocol errors",
            "ws-frames %s:%s stopped publishing %s (broke the protocol: %r)",
            *exchange.peer,
            key,
            str(exc),
        )
        await _say_goodbye(ws, End("protocol-error", str(exc), 0, reader.frames), exc.code, timeout)
    except PeerGone:
        log.info("ws-frames %s:%s stopped publishing %s (publisher left)", *exchange.peer, key)
    except WriteTimeout as exc:
        log.info("ws-frames %s:%s stopped publishing %s (dropped: %s)", *exchange.peer, key, exc)
