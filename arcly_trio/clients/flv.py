"""A trio HTTP-FLV player: the frames of ``http://HOST/APP/STREAM.flv`` (arcly-trio,
Node-Media-Server, SRS, nginx-http-flv...), for pull relays and tests.

``open_flv_player(url)`` returns once the server answered ``200``; iterate it for frames
(:class:`~arcly_trio.media.flv.FlvReader` parses the body incrementally, every track of
Enhanced RTMP included; 32-bit tag timestamps are unwrapped). Iteration ends when the body ends
or nothing arrives for ``read_timeout`` seconds; ``end`` says which.

Limits: a tag body over ``max_tag_body`` bytes (8 MiB by default) ends the stream with an error
before it is buffered.

Error policy: refusals (404, 403...) raise :class:`~arcly_trio.core.errors.RemoteRefused` on
entry, connection failures :class:`~arcly_trio.core.errors.ConnectionLost`; a malformed body
raises ``RemoteProtocolError`` (``FlvError``, ``MessageTooLarge``) from iteration.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from arcly_trio.clients.http import HttpResponse, open_http_get
from arcly_trio.core.errors import ConnectionLost
from arcly_trio.core.frame import Frame
from arcly_trio.media import flv
from arcly_trio.media.timestamps import TimestampUnwrapper

__all__ = ["FlvPlayer", "open_flv_player"]


class FlvPlayer:
    """An async iterator of the frames of an HTTP-FLV stream (see :func:`open_flv_player`)."""

    def __init__(self, response: HttpResponse, read_timeout: float, max_tag_body: int) -> None:
        self._response = response
        self._reader = flv.FlvReader(max_tag_body=max_tag_body)
        self._clocks: dict[int, TimestampUnwrapper] = {}
        self._read_timeout = read_timeout
        self.end: str | None = None
        self.frames_received = 0
        self.skipped = 0

    @property
    def bytes_received(self) -> int:
        return self._response.bytes_received

    def __aiter__(self) -> FlvPlayer:
        return self

    async def __anext__(self) -> Frame:
        batch = await self.next_batch(1)
        if not batch:
            raise StopAsyncIteration
        return batch[0]

    def _frames(self, tag: flv.FlvTag) -> list[Frame]:
        clock = self._clocks.get(tag.tag_type)
        if clock is None:
            clock = self._clocks[tag.tag_type] = TimestampUnwrapper()
        stamp = clock.unwrap(tag.timestamp)
        try:
            return flv.tag_to_frames(flv.FlvTag(tag.tag_type, stamp, tag.body))
        except flv.FlvUnsupported:
            self.skipped += 1
            return []

    async def next_batch(self, limit: int = 256) -> list[Frame]:
        """The frames parsed so far (waiting for at least one); ``[]`` once the stream ended."""
        frames: list[Frame] = []
        reader = self._reader
        while not frames and self.end is None:
            while len(frames) < limit and (event := reader.next_event()) is not None:
                if isinstance(event, flv.FlvTag):
                    frames += self._frames(event)
                elif isinstance(event, flv.FlvEnd):
                    self.end = "the server ended the stream"
                    break
            if frames or self.end is not None:
                break
            data = b""
            with trio.move_on_after(self._read_timeout) as scope:
                try:
                    data = await self._response.receive_some()
                except ConnectionLost as exc:
                    self.end = exc.reason
                    break
            if scope.cancelled_caught:
                self.end = f"nothing received for {self._read_timeout:g} s"
                break
            reader.receive_data(data)
        self.frames_received += len(frames)
        return frames


@asynccontextmanager
async def open_flv_player(
    url: str,
    *,
    unix_socket: str | None = None,
    timeout: float = 10.0,
    read_timeout: float = 30.0,
    max_tag_body: int = 8 * 1024 * 1024,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[FlvPlayer]:
    """Play the HTTP-FLV stream at ``url`` for the duration of the block."""
    async with open_http_get(url, unix_socket=unix_socket, timeout=timeout, ssl_context=ssl_context) as response:
        yield FlvPlayer(response, read_timeout, max_tag_body)
