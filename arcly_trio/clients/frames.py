"""A trio client of the ``arcly.frames.v1`` WebSocket frame protocol (trio-websocket).

Play::

    async with open_frames_subscription("ws://127.0.0.1:8080/live/demo/frames") as sub:
        async for frame in sub:                 # kernel Frames: configs first, then a keyframe
            print(frame.kind.value, frame.codec, frame.dts, frame.keyframe)
        print(sub.end, sub.close_code)          # why it ended

Publish (frames follow the payload conventions of :mod:`arcly_trio.core.frame`; a config
frame is sent as its ``config`` message and its record, so its record must parse)::

    async with open_frames_publisher("ws://127.0.0.1:8080/live/mine/ingest?token=s3cret") as pub:
        for frame in frames:
            await pub.send(frame)

Both check everything the server sends with a :class:`~arcly_trio.protocols.frames.FramesReader`
(or the message decoder), so a test can trust what it receives.

Error policy: a server that refuses (unknown stream, bad token, stream taken, no subprotocol)
raises :class:`FramesRefused` on entry; a publisher whose connection the server closes gets
:class:`FramesClosed` (with the close code and the ``end`` message) from ``send``; a
subscription ends its iteration when the server closes and keeps the reason in ``end``,
``close_code`` and ``close_reason``. A server that breaks the protocol raises
:class:`~arcly_trio.protocols.frames.FramesProtocolError`. Connection failures are
trio-websocket's (``HandshakeError``, ``OSError``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
import trio_websocket

from arcly_trio.core.errors import StreamError
from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.protocols.frames.messages import (
    SUBPROTOCOL,
    Config,
    End,
    FramesProtocolError,
    Limits,
    Start,
    Stats,
    config_for_frame,
    decode_text,
    encode_text,
    frame_message,
)
from arcly_trio.protocols.frames.reader import FramesReader

__all__ = [
    "FramesClosed",
    "FramesPublisher",
    "FramesRefused",
    "FramesSubscription",
    "open_frames_publisher",
    "open_frames_subscription",
]


class FramesClosed(StreamError):
    """The server closed the frame connection: ``code``, ``reason``, and its ``end`` message."""

    def __init__(self, code: int | None, reason: str | None, end: End | None = None) -> None:
        detail = (end.message if end is not None and end.message else reason) or "no reason given"
        super().__init__(f"frame connection closed ({code}): {detail}")
        self.code = code
        self.reason = reason
        self.end = end


class FramesRefused(FramesClosed):
    """The server refused the connection before it started (see :class:`FramesClosed`)."""


class FramesSubscription:
    """An async iterator of the stream's :class:`Frame` objects (config frames included).

    Attributes:
        start: the server's ``start`` message.
        configs: the current config message of each (kind, track).
        stats: the latest ``stats`` message.
        end: the ``end`` message, once the stream has ended.
        close_code, close_reason: how the WebSocket closed, once it has.
    """

    def __init__(self, ws: trio_websocket.WebSocketConnection, limits: Limits) -> None:
        self._ws = ws
        self._reader = FramesReader("server", limits)
        self.start: Start | None = None
        self.stats: Stats | None = None
        self.end: End | None = None
        self.close_code: int | None = None
        self.close_reason: str | None = None

    @property
    def configs(self) -> dict[tuple[FrameKind, int], Config]:
        return self._reader.configs

    async def _next_start(self) -> None:
        """Wait for ``start``; raise :class:`FramesRefused` if the server refuses instead."""
        while self.start is None:
            try:
                message = await self._ws.get_message()
            except trio_websocket.ConnectionClosed as exc:
                self._closed(exc)
                raise FramesRefused(self.close_code, self.close_reason, self.end) from None
            if not isinstance(message, str):
                raise FramesProtocolError("a binary message before 'start'")
            for event in self._reader.receive_text(message):
                self._note(event)

    def _closed(self, exc: trio_websocket.ConnectionClosed) -> None:
        if exc.reason is not None:
            self.close_code, self.close_reason = exc.reason.code, exc.reason.reason

    def _note(self, event: object) -> None:
        if isinstance(event, Start):
            self.start = event
        elif isinstance(event, Stats):
            self.stats = event
        elif isinstance(event, End):
            self.end = event

    def __aiter__(self) -> FramesSubscription:
        return self

    async def __anext__(self) -> Frame:
        while True:
            try:
                message = await self._ws.get_message()
            except trio_websocket.ConnectionClosed as exc:
                self._closed(exc)
                raise StopAsyncIteration from None
            if isinstance(message, str):
                for event in self._reader.receive_text(message):
                    if isinstance(event, Frame):
                        return event
                    self._note(event)
            else:
                return self._reader.receive_binary(message)


@asynccontextmanager
async def open_frames_subscription(
    url: str, *, limits: Limits = Limits(), connect_timeout: float = 10.0
) -> AsyncIterator[FramesSubscription]:
    """Play ``url`` (``ws://host:port/{app}/{stream}/frames[?token=...]``)."""
    async with trio_websocket.open_websocket_url(
        url,
        subprotocols=[SUBPROTOCOL],
        max_message_size=limits.max_message,
        connect_timeout=connect_timeout,
        disconnect_timeout=2,
    ) as ws:
        subscription = FramesSubscription(ws, limits)
        await subscription._next_start()
        yield subscription


class FramesPublisher:
    """Sends frames to a server's ``/ingest`` route (see :func:`open_frames_publisher`).

    Attributes:
        stats: the latest ``stats`` message from the server (frames it received).
        end: the server's ``end`` message, if it closed the connection.
        close_code, close_reason: how the WebSocket closed, once it has.
    """

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self._ws = ws
        self.stats: Stats | None = None
        self.end: End | None = None
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.frames = 0
        """Media frames sent."""

    def _error(self) -> FramesClosed:
        return FramesClosed(self.close_code, self.close_reason, self.end)

    async def _read(self) -> None:
        try:
            while True:
                message = await self._ws.get_message()
                if isinstance(message, str):
                    event = decode_text(message)
                    if isinstance(event, Stats):
                        self.stats = event
                    elif isinstance(event, End):
                        self.end = event
        except trio_websocket.ConnectionClosed as exc:
            if exc.reason is not None:
                self.close_code, self.close_reason = exc.reason.code, exc.reason.reason

    async def send_message(self, message: str | bytes) -> None:
        """Send one raw protocol message (for tests of servers, and extensions)."""
        try:
            await self._ws.send_message(message)
        except trio_websocket.ConnectionClosed as exc:
            if exc.reason is not None and self.close_code is None:
                self.close_code, self.close_reason = exc.reason.code, exc.reason.reason
            raise self._error() from None

    async def send(self, frame: Frame) -> None:
        """Send a frame: a config frame as its ``config`` message and record; data frames are
        not carried and are skipped."""
        if frame.kind is FrameKind.DATA:
            return
        if frame.config:
            await self.send_message(encode_text(config_for_frame(frame)))
        else:
            self.frames += 1
        await self.send_message(frame_message(frame))

    async def finish(self, reason: str = "done") -> None:
        """Say ``end`` and close the connection normally."""
        if self.close_code is not None:
            return
        try:
            await self._ws.send_message(encode_text(End(reason)))
        except trio_websocket.ConnectionClosed:
            return
        with trio.move_on_after(2):
            while self.close_code is None and not self._ws.closed:
                await trio.sleep(0.01)


@asynccontextmanager
async def open_frames_publisher(url: str, *, connect_timeout: float = 10.0) -> AsyncIterator[FramesPublisher]:
    """Publish to ``url`` (``ws://host:port/{app}/{stream}/ingest[?token=...]``).

    Returns once the server said ``start`` (publish accepted); leaving the block sends ``end``.
    """
    async with trio_websocket.open_websocket_url(
        url,
        subprotocols=[SUBPROTOCOL],
        max_message_size=64 * 1024,
        connect_timeout=connect_timeout,
        disconnect_timeout=2,
    ) as ws:
        publisher = FramesPublisher(ws)
        try:
            first = await ws.get_message()
        except trio_websocket.ConnectionClosed as exc:
            code, reason = (exc.reason.code, exc.reason.reason) if exc.reason else (None, None)
            raise FramesRefused(code, reason) from None
        event = decode_text(first) if isinstance(first, str) else None
        if isinstance(event, End):
            with trio.move_on_after(2):
                try:
                    await ws.get_message()
                except trio_websocket.ConnectionClosed as exc:
                    if exc.reason is not None:
                        raise FramesRefused(exc.reason.code, exc.reason.reason, event) from None
            raise FramesRefused(None, event.reason, event)
        if not isinstance(event, Start):
            raise FramesProtocolError("the server did not start with 'start'")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(publisher._read)
            try:
                yield publisher
                await publisher.finish()
            finally:
                nursery.cancel_scope.cancel()
