"""HTTP-FLV and WebSocket-FLV: ``/{app}/{stream}.flv`` as a live FLV byte stream.

Both subscribe to the stream (protocol ``"http-flv"`` or ``"ws-flv"``; ``?token=`` or
``?sign=`` is passed to the authenticator with the whole query), then send the FLV header
(``hasAudio``/``hasVideo`` from the stream's known codecs and its first frames, see
:class:`~arcly_trio.media.flv.FlvStreamWriter`), the metadata and configs, the cached
GOP from its keyframe (instant start) and then live frames. Each frame's tag is built once and
shared by every viewer and recording (:func:`arcly_trio.media.flv.frame_to_tag`); every batch
of frames the subscription has queued goes out in one write (one HTTP chunk, or one binary
WebSocket message). A viewer that cannot keep up falls behind in its subscription's queue and
the kernel makes it skip to the next keyframe; one that stops reading entirely is dropped after
the server's write timeout. A viewer that disconnects is noticed at once (even on an idle
stream) and its subscription freed.

Errors: an unknown application or stream is a ``404`` with a message that names it, a refused
play a ``403``, a stopping server a ``503`` (for WebSocket these are HTTP answers to the
handshake, declining the upgrade). When the stream ends the HTTP body ends (the final chunk)
and the WebSocket is closed with code 1000 (1001 when the server stops).
"""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

import trio
import trio_websocket

from ...core.errors import StreamError
from ...core.keys import StreamKey
from ...kernel.subscription import EndReason, Subscription
from ...media.flv import FlvStreamWriter
from ...protocols.http.router import HttpRequest
from ...core.excgroups import unwrap_single
from .exchange import Exchange, stream_error_status

if TYPE_CHECKING:
    from .server import HttpServer

__all__ = ["install"]

log = logging.getLogger("arcly_trio.http")

FLV_PATH = "/{app}/{stream}.flv"


def install(server: HttpServer) -> None:
    server.router.websocket(FLV_PATH, serve_ws_flv)
    server.router.get(FLV_PATH, serve_http_flv)


def _writer_for(sub: Subscription) -> FlvStreamWriter:
    stream = sub.stream
    info = stream.info
    return FlvStreamWriter(
        has_audio=info.audio_codec is not None,
        has_video=info.video_codec is not None or stream.has_video,
    )


async def _subscribe(
    stack: AsyncExitStack, request: HttpRequest, exchange: Exchange, protocol: str
) -> Subscription | None:
    key = StreamKey(request.params["app"], request.params["stream"])
    try:
        return await stack.enter_async_context(
            exchange.engine.subscribe(key, request.credentials(protocol), protocol=protocol)
        )
    except StreamError as exc:
        status = stream_error_status(exc)
        log.info("%s %s:%s refused %s: %s", protocol, *_peer(request), key, exc)
        await exchange.error(status, str(exc))
        return None


def _peer(request: HttpRequest) -> tuple[str, object]:
    return request.peer if request.peer is not None else ("?", "?")


async def serve_http_flv(request: HttpRequest, exchange: Exchange) -> None:
    """``GET /{app}/{stream}.flv``: chunked live FLV."""
    async with AsyncExitStack() as stack:
        sub = await _subscribe(stack, request, exchange, "http-flv")
        if sub is None:
            return
        headers = [("cache-control", "no-cache, no-store"), ("pragma", "no-cache")]
        if request.method == "HEAD":
            await exchange.respond(200, b"", content_type="video/x-flv", headers=headers)
            return
        exchange.keep_alive = False  # a live body ends with the stream; then the connection closes
        await exchange.start(200, content_type="video/x-flv", headers=headers)
        log.info("http-flv %s:%s plays %s (subscriber #%d)", *_peer(request), sub.key, sub.id)
        writer = _writer_for(sub)
        max_batch = exchange.server.max_batch
        async with exchange.until_disconnect():
            while True:
                batch = await sub.next_batch(max_batch)
                if not batch:
                    break
                data = writer.write(batch)
                if data:
                    await exchange.send(data)
            tail = writer.finish()
            if tail:
                await exchange.send(tail)
            await exchange.end()
        reason = sub.end_reason.value if sub.end_reason is not None else "client left"
        log.info("http-flv %s:%s stopped playing %s (%s; %d frames dropped)",
                 *_peer(request), sub.key, reason, sub.dropped)


async def serve_ws_flv(request: HttpRequest, exchange: Exchange) -> None:
    """``GET /{app}/{stream}.flv`` with a WebSocket handshake: FLV in binary messages."""
    async with AsyncExitStack() as stack:
        sub = await _subscribe(stack, request, exchange, "ws-flv")
        if sub is None:
            return
        gone = False
        with unwrap_single():
            async with trio.open_nursery() as nursery:
                ws = await exchange.accept_websocket(nursery)
                log.info("ws-flv %s:%s plays %s (subscriber #%d)", *_peer(request), sub.key, sub.id)

                async def drain_incoming() -> None:
                    # Messages from the player are not used; reading them keeps pings answered
                    # and tells us at once when the player leaves.
                    nonlocal gone
                    try:
                        while True:
                            await ws.get_message()
                    except trio_websocket.ConnectionClosed:
                        pass
                    gone = True
                    nursery.cancel_scope.cancel()

                nursery.start_soon(drain_incoming)
                write_timeout = exchange.server.write_timeout
                max_batch = exchange.server.max_batch
                writer = _writer_for(sub)
                try:
                    while True:
                        batch = await sub.next_batch(max_batch)
                        data = writer.write(batch) if batch else writer.finish()
                        if data:
                            with trio.fail_after(write_timeout):
                                await ws.send_message(data)
                        if not batch:
                            break
                    going_away = sub.end_reason is EndReason.SHUTDOWN
                    with trio.move_on_after(2):
                        await ws.aclose(1001 if going_away else 1000, "server stopping" if going_away else "stream ended")
                except trio_websocket.ConnectionClosed:
                    gone = True
                except trio.TooSlowError:
                    gone = True
                    log.info("ws-flv %s:%s dropped: a write blocked for %g s", *_peer(request), write_timeout)
                nursery.cancel_scope.cancel()
        reason = sub.end_reason.value if sub.end_reason is not None else "client left"
        log.info("ws-flv %s:%s stopped playing %s (%s; %d frames dropped)",
                 *_peer(request), sub.key, reason, sub.dropped)
