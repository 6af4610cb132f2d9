"""HTTP-FLV and WebSocket-FLV: ``/{app}/{stream}.flv`` as a live FLV byte stream.

Both attach a sink to the stream (``engine.attach``, protocol ``"http-flv"`` or ``"ws-flv"``;
``?token=`` or ``?sign=`` is passed to the authenticator with the whole query), then send the
FLV header (``hasAudio``/``hasVideo`` from the stream's known codecs and its first frames, see
:class:`~arcly_trio.media.flv.FlvStreamWriter`), the metadata and configs, the cached GOP from
its keyframe (instant start) and then live frames.

Egress (see :mod:`arcly_trio.workers.egress`): the viewer is an :class:`FlvSink` that the
stream's task writes to directly. Each frame's tag is built once and shared by every viewer and
recording (:func:`arcly_trio.media.flv.frame_to_tag`), and each batch the stream delivers goes
out as one HTTP chunk (HTTP/1.1; HTTP/1.0 gets the bytes as they are, the body ending when the
connection closes) or one binary WebSocket message: the chunk or message header is built once
per batch too, and every viewer that takes the batch whole gets the same buffers in one
``writev``. The handler's task is the connection's only task: it reads the client (a player
that disconnects is noticed at once, even on an idle stream, and its sink detached; WebSocket
pings are answered) and drains what the socket did not take. A viewer that cannot keep up fills
its queue and the kernel makes it skip to the next keyframe; one that takes nothing for the
server's write timeout is dropped.

Legacy audio: FLV viewers cannot be assumed to decode Opus (Debian's ffmpeg 5.1, VLC 3, OBS),
so on an engine with an audio bridge every FLV viewer is legacy (``bridged_audio``, see
:mod:`arcly_trio.workers.egress`): it gets the bridge's AAC of an Opus stream and no Opus (the
tags of a batch without Opus are the usual shared ones).

Errors: an invalid application or stream name is a ``400`` with the reason, an unknown
application or stream a ``404`` with a message that names it, a refused
play a ``403``, a stopping server a ``503`` (for WebSocket these are HTTP answers to the
handshake, declining the upgrade). When the stream ends the HTTP body ends (the final chunk)
and the WebSocket is closed with code 1000 (1001 when the server stops).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager

from arcly_trio.core.errors import PeerGone, StreamError, WriteTimeout
from arcly_trio.core.frame import Frame, FrameBatch
from arcly_trio.kernel.fanout import EndReason, Subscriber
from arcly_trio.media.flv import FlvStreamWriter, frame_tags
from arcly_trio.protocols.http.router import HttpRequest, Router
from arcly_trio.protocols.http.websocket import frame_header
from arcly_trio.workers.clientlog import PLAY_ENDS_LOGGED
from arcly_trio.workers.egress import Buffer, DirectSink, Egress, Encoded, bridges_audio, legacy_audio
from arcly_trio.workers.http.exchange import Exchange, stream_error_status

__all__ = ["install", "FlvSink", "attach"]

log = logging.getLogger("arcly_trio.http")

FLV_PATH = "/{app}/{stream}.flv"
_RECV_SIZE = 65536
_WS_MESSAGE_SIZE = 64 * 1024  # what a WebSocket-FLV viewer may send in one message (it is read and dropped)
_CRLF = b"\r\n"
_LAST_CHUNK = b"0\r\n\r\n"
_TAGS_KEY = ("flv-tags",)
_LEGACY_TAGS_KEY = ("flv-tags-legacy",)

Framing = Callable[[Sequence[Buffer], int], Encoded]


def install(router: Router) -> None:
    router.websocket(FLV_PATH, serve_ws_flv)
    router.get(FLV_PATH, serve_http_flv)


# ----------------------------------------------------------------------- framings


def chunked(parts: Sequence[Buffer], size: int) -> Encoded:
    """``parts`` as one HTTP/1.1 chunk (nothing for no bytes: an empty chunk ends the body)."""
    if not size:
        return (), 0
    head = b"%x\r\n" % size
    return (head, *parts, _CRLF), size + len(head) + 2


def identity(parts: Sequence[Buffer], size: int) -> Encoded:
    """``parts`` as they are (an HTTP/1.0 body, delimited by closing the connection)."""
    return parts, size


def websocket(parts: Sequence[Buffer], size: int) -> Encoded:
    """``parts`` as one binary WebSocket message."""
    if not size:
        return (), 0
    head = frame_header(size)
    return (head, *parts), size + len(head)


def _batch_tags(batch: FrameBatch) -> Encoded:
    tags, _ = frame_tags(batch)
    return tags, sum(map(len, tags))


def _legacy_batch_tags(batch: FrameBatch) -> Encoded:
    frames = legacy_audio(batch)
    if frames is batch:
        return batch.encoded(_TAGS_KEY, _batch_tags)
    tags, _ = frame_tags(frames)
    return tags, sum(map(len, tags))


def _framed_batch(batch: FrameBatch, framing: Framing, legacy: bool = False) -> bytes:
    """A whole batch's tags in ``framing``, in one buffer: built once per batch and framing,
    for every viewer (``legacy``: without Opus)."""
    if legacy:
        parts, size = batch.encoded(_LEGACY_TAGS_KEY, _legacy_batch_tags)
    else:
        parts, size = batch.encoded(_TAGS_KEY, _batch_tags)
    return b"".join(framing(parts, size)[0])


class FlvSink(DirectSink):
    """One HTTP-FLV or WebSocket-FLV viewer: the FLV stream of its frames, in ``framing``.

    Until the FLV header is written (:attr:`writer` decides it from the first frames) the
    viewer gets bytes of its own; from then on it shares each batch's framed tags with every
    viewer of the same framing. :attr:`writer` is set once the stream is known, before
    :meth:`~arcly_trio.workers.egress.DirectSink.start`.
    """

    __slots__ = ("writer", "framing")

    def __init__(self, egress: Egress, framing: Framing) -> None:
        super().__init__(egress)
        self.framing = framing
        self.writer = FlvStreamWriter()

    def encode(self, frames: Sequence[Frame], start: int, end: int) -> Encoded:
        writer = self.writer
        frames = frames[start:end] if start or end != len(frames) else frames
        legacy = self.bridged_audio
        parts = writer.write_parts(legacy_audio(frames) if legacy else frames)
        if writer.started and self.batch_key is None:  # the header is out: share from now on
            self.share(("flv", self.framing, legacy), _framed_batch, self.framing, legacy)
        return self.framing(parts, sum(map(len, parts)))

    def finish(self) -> None:
        """Write the end of the FLV stream: the header and held frames if it was never
        decided (the stream ended first), and the end of the HTTP body when chunked."""
        parts = self.writer.finish_parts()
        buffers, size = self.framing(parts, sum(map(len, parts)))
        self.egress.write(buffers, size)
        if self.framing is chunked:
            self.egress.write((_LAST_CHUNK,), len(_LAST_CHUNK))


async def attach(
    request: HttpRequest, exchange: Exchange, protocol: str, sink: DirectSink
) -> AbstractAsyncContextManager[Subscriber] | None:
    """Attach ``sink`` to the requested stream through the engine's one authorization path.

    Returns the entered ``engine.attach`` (the caller exits it, ``__aexit__``, when the viewer
    is done: an exit stack would cost every viewer a deque), with ``sink.subscriber`` set; or
    ``None`` once a refusal has been answered over HTTP.
    """
    key = request.stream_key()  # BadRequest (400) for an invalid name, answered by the worker
    attached = exchange.engine.attach(key, sink, request.credentials(protocol), protocol=protocol)
    try:
        sink.subscriber = await attached.__aenter__()
    except StreamError as exc:
        status = stream_error_status(exc)
        exchange.log_refusal(protocol, key, exc)
        await exchange.error(status, str(exc))
        return None
    return attached


def _prepare(sink: FlvSink, exchange: Exchange, subscriber: Subscriber) -> None:
    """Seed the FLV header's track flags with what the stream already knows. Called as soon as
    the sink is attached, with no checkpoint between (the stream is there)."""
    sink.egress.max_frames = exchange.engine.application(subscriber.key.app).spec.subscriber_queue
    stream = exchange.engine.stream(subscriber.key)
    info = stream.info
    sink.writer = FlvStreamWriter(
        has_audio=info.audio_codec is not None,
        has_video=info.video_codec is not None or stream.has_video,
    )


def _peer(request: HttpRequest) -> tuple[str, object]:
    return request.peer if request.peer is not None else ("?", "?")


async def _serve(
    request: HttpRequest,
    exchange: Exchange,
    protocol: str,
    framing: Framing,
    play: Callable[[FlvSink, Subscriber], Awaitable[None]],
) -> None:
    """Attach an :class:`FlvSink` in ``framing``, ``play`` it (the protocol's part: the
    response head or WebSocket, then reading the client until the sink ends), and let go of
    everything whatever happens, logging how it ended."""
    egress = exchange.open_egress()
    sink = FlvSink(egress, framing)
    sink.bridged_audio = bridges_audio(exchange.engine)
    attached = await attach(request, exchange, protocol, sink)
    if attached is None:
        return
    subscriber = sink.subscriber
    assert subscriber is not None
    why = "client left"
    try:
        _prepare(sink, exchange, subscriber)  # before any checkpoint: the stream may end meanwhile
        await play(sink, subscriber)
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
        "%s %s:%s stopped playing %s (%s; %d frames dropped)",
        protocol,
        *_peer(request),
        subscriber.key,
        reason,
        subscriber.dropped,
    )


def _started(protocol: str, request: HttpRequest, sink: FlvSink, subscriber: Subscriber) -> None:
    sink.start()
    log.info("%s %s:%s playing %s (subscriber #%d)", protocol, *_peer(request), subscriber.key, subscriber.id)


async def serve_http_flv(request: HttpRequest, exchange: Exchange) -> None:
    """``GET /{app}/{stream}.flv``: live FLV, chunked (HTTP/1.1) or until the connection closes."""

    async def play(sink: FlvSink, subscriber: Subscriber) -> None:
        headers = [("cache-control", "no-cache, no-store"), ("pragma", "no-cache")]
        if request.method == "HEAD":
            await exchange.respond(200, b"", content_type="video/x-flv", headers=headers)
            return
        exchange.keep_alive = False  # a live body ends with the stream; then the connection closes
        await exchange.start(200, content_type="video/x-flv", headers=headers)
        _started("http-flv", request, sink, subscriber)
        while not sink.ended:
            data = await sink.egress.receive(_RECV_SIZE)
            if data is not None and not data:
                return  # the client closed the connection
        sink.finish()
        await sink.egress.drain()

    await _serve(request, exchange, "http-flv", chunked if exchange.chunked else identity, play)


async def serve_ws_flv(request: HttpRequest, exchange: Exchange) -> None:
    """``GET /{app}/{stream}.flv`` with a WebSocket handshake: FLV in binary messages."""

    async def play(sink: FlvSink, subscriber: Subscriber) -> None:
        ws = exchange.accept_egress_websocket(sink.egress, max_message_size=_WS_MESSAGE_SIZE, protocol="ws-flv")
        _started("ws-flv", request, sink, subscriber)
        while not sink.ended and await ws.serve_peer():
            pass
        if sink.ended:
            sink.finish()
            going_away = sink.end_reason is EndReason.SHUTDOWN
            await ws.close(1001 if going_away else 1000, "server stopping" if going_away else "stream ended")

    await _serve(request, exchange, "ws-flv", websocket, play)
