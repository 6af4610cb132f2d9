"""A trio RTMP client: publish :class:`~arcly_trio.core.frame.Frame` objects to a server, or
play a stream from one as frames.

Publish (to arcly-trio, nginx-rtmp, SRS, YouTube, Twitch...)::

    async with open_rtmp_publisher("rtmp://127.0.0.1/live/cam?token=s3cret") as pub:
        for frame in frames:                  # metadata and configs first, then media
            await pub.send(frame)

Play::

    async with open_rtmp_player("rtmp://127.0.0.1/live/cam") as player:
        async for frame in player:            # metadata, configs, then media
            ...
        print(player.end)                     # why it ended

Both run the whole conversation of :class:`~arcly_trio.protocols.rtmp.client.RtmpClient`
(digest handshake, ``connect`` with Enhanced RTMP's ``fourCcList``, chunk size and
acknowledgement windows, ``createStream``, ``publish``/``play``) and return once the server has
started the stream. Leaving the block says goodbye (``FCUnpublish``/``deleteStream``) and closes
the connection. ``rtmps://`` runs RTMP over TLS (``ssl_context``, default: the system's trust
store); ``unix_socket=PATH`` connects to a local server's Unix socket instead of the URL's host
(the URL still names the application and stream): arcly-trio's workers relay to each other so.

Frames are sent as the server's players receive them: each frame's chunks are built once per
chunk size and shared with every other connection sending it
(:func:`arcly_trio.protocols.rtmp.media.frame_chunks`), so a relay pushing one stream to several
targets encodes it once.

Error policy: a refusal (unknown application or stream, bad token, stream taken) raises
:class:`~arcly_trio.core.errors.RemoteRefused` on entry; connection failures, timeouts and a
server that goes away raise :class:`~arcly_trio.core.errors.ConnectionLost` (trio's transport
errors and ``OSError``, :data:`~arcly_trio.transport.TRANSPORT_ERRORS`, are mapped to it here); a
server that breaks the protocol raises ``RemoteProtocolError``. A player's iteration ends
without raising when the server ends the stream (``end`` says how); a publisher's ``send`` raises
``ConnectionLost`` once the server has ended the publish.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio

from arcly_trio.core.errors import ConnectionLost, RemoteProtocolError, RemoteRefused
from arcly_trio.core.frame import Frame
from arcly_trio.core.text import printable
from arcly_trio.media import flv
from arcly_trio.protocols.rtmp import (
    ClientMode,
    DataMessage,
    MediaMessage,
    Refused,
    RtmpClient,
    RtmpUrl,
    StreamEnded,
    StreamStarted,
    parse_rtmp_url,
)
from arcly_trio.protocols.rtmp.media import message_frames
from arcly_trio.transport import TRANSPORT_ERRORS, describe

__all__ = ["RtmpPublisher", "RtmpPlayer", "open_rtmp_publisher", "open_rtmp_player"]

_RECV_SIZE = 65536


class _Connection:
    """One client connection: its transport, the sans-IO conversation, a write lock."""

    def __init__(self, url: RtmpUrl, client: RtmpClient, write_timeout: float) -> None:
        self.url = url
        self.client = client
        self.write_timeout = write_timeout
        self.stream: trio.abc.Stream | None = None
        self.lock = trio.StrictFIFOLock()
        self.bytes_sent = 0
        self.bytes_received = 0

    def lost(self, what: str, exc: BaseException | None = None) -> ConnectionLost:
        detail = f": {describe(exc)}" if exc is not None else ""
        return ConnectionLost(f"{self.url.redacted()}: {what}{detail}")

    async def open(self, unix_socket: str | None, ssl_context: ssl.SSLContext | None) -> None:
        url = self.url
        try:
            if unix_socket is not None:
                self.stream = await trio.open_unix_socket(unix_socket)
            elif url.tls:
                context = ssl_context or ssl.create_default_context()
                self.stream = await trio.open_ssl_over_tcp_stream(url.host, url.port, ssl_context=context)
            else:
                self.stream = await trio.open_tcp_stream(url.host, url.port)
        except TRANSPORT_ERRORS as exc:
            raise self.lost("cannot connect", exc) from None
        sock = getattr(self.stream, "socket", None)
        if sock is not None and unix_socket is None:
            try:
                sock.setsockopt(trio.socket.IPPROTO_TCP, trio.socket.TCP_NODELAY, 1)
            except OSError:
                pass
        await self.write([self.client.initiate()])

    async def start(self) -> StreamStarted:
        """Read until the server starts our stream; raise what it says otherwise."""
        while True:
            event = self.client.next_event()
            if event is None:
                await self.flush()
                await self.receive()
                continue
            if isinstance(event, StreamStarted):
                await self.flush()
                return event
            if isinstance(event, Refused):
                raise RemoteRefused(event.stage, printable(event.code), printable(event.description))
            if isinstance(event, StreamEnded):
                raise RemoteRefused(self.client.mode.value, printable(event.code), printable(event.description))

    async def receive(self) -> None:
        assert self.stream is not None
        try:
            data = await self.stream.receive_some(_RECV_SIZE)
        except TRANSPORT_ERRORS as exc:
            raise self.lost("connection broken", exc) from None
        if not data:
            raise self.lost("the server closed the connection")
        self.bytes_received += len(data)
        self.client.receive_data(data)

    async def flush(self) -> None:
        data = self.client.data_to_send()
        if data:
            await self.write([data])

    async def write(self, buffers: Sequence[bytes | memoryview]) -> None:
        assert self.stream is not None
        data = b"".join(buffers) if len(buffers) != 1 else buffers[0]
        async with self.lock:
            with trio.move_on_after(self.write_timeout) as scope:
                try:
                    await self.stream.send_all(data)
                except TRANSPORT_ERRORS as exc:
                    raise self.lost("connection broken", exc) from None
            if scope.cancelled_caught:
                raise self.lost(f"a write blocked for {self.write_timeout:g} s")
        self.bytes_sent += len(data)

    async def goodbye(self) -> None:
        """Say goodbye if we can (within a second, shielded) and close the transport."""
        stream = self.stream
        if stream is None:
            return
        with trio.move_on_after(1) as scope:
            scope.shield = True
            try:
                self.client.close()
                await self.flush()
            except (ConnectionLost, *TRANSPORT_ERRORS):
                pass
        await trio.aclose_forcefully(stream)


@asynccontextmanager
async def _opened(
    url: str | RtmpUrl,
    mode: ClientMode,
    *,
    unix_socket: str | None,
    ssl_context: ssl.SSLContext | None,
    timeout: float,
    write_timeout: float,
    client_options: dict[str, Any],
) -> AsyncIterator[_Connection]:
    parsed = parse_rtmp_url(url) if isinstance(url, str) else url
    connection = _Connection(parsed, RtmpClient(parsed, mode, **client_options), write_timeout)
    try:
        with trio.move_on_after(timeout) as scope:
            await connection.open(unix_socket, ssl_context)
            await connection.start()
        if scope.cancelled_caught:
            raise connection.lost(f"the server did not start the {mode.value} within {timeout:g} s")
        yield connection
    finally:
        await connection.goodbye()


class RtmpPublisher:
    """Sends frames to an RTMP server (see :func:`open_rtmp_publisher`).

    Attributes:
        url: where it publishes.
        ended: why the server ended the publish (``None`` while it goes on).
    """

    def __init__(self, connection: _Connection) -> None:
        self._connection = connection
        self.url = connection.url
        self.ended: str | None = None
        self.frames_sent = 0

    @property
    def bytes_sent(self) -> int:
        return self._connection.bytes_sent

    @property
    def acknowledged(self) -> int:
        """Bytes the server acknowledged (if it announced a window to itself; many do not)."""
        return self._connection.client.session.peer_acknowledged

    async def send(self, frame: Frame) -> None:
        """Send one frame (``ConnectionLost`` if the connection or the publish is over)."""
        await self.send_frames((frame,))

    async def send_frames(self, frames: Sequence[Frame]) -> None:
        """Send several frames in one write."""
        if self.ended is not None:
            raise self._connection.lost(f"the server ended the publish ({self.ended})")
        client = self._connection.client
        buffers: list[bytes | memoryview] = []
        pending = client.data_to_send()
        if pending:
            buffers.append(pending)
        for frame in frames:
            buffers += client.frame_buffers(frame)
        await self._connection.write(buffers)
        self.frames_sent += len(frames)

    async def _read(self) -> None:
        """Take what the server says (acknowledgements, pings, the end of the publish)."""
        connection = self._connection
        try:
            while True:
                await connection.receive()
                while (event := connection.client.next_event()) is not None:
                    if isinstance(event, StreamEnded):
                        self.ended = printable(f"{event.code}: {event.description}")
                        return
                await connection.flush()
        except ConnectionLost as exc:
            self.ended = exc.reason
        except RemoteProtocolError as exc:  # the server broke the protocol: the publish is over
            self.ended = printable(str(exc))


@asynccontextmanager
async def open_rtmp_publisher(
    url: str | RtmpUrl,
    *,
    unix_socket: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    timeout: float = 10.0,
    write_timeout: float = 30.0,
    **client_options: Any,
) -> AsyncIterator[RtmpPublisher]:
    """Publish to ``url`` for the duration of the block; returns once the server said
    ``NetStream.Publish.Start``. ``client_options`` go to
    :class:`~arcly_trio.protocols.rtmp.client.RtmpClient` (``chunk_size``...)."""
    async with _opened(
        url,
        ClientMode.PUBLISH,
        unix_socket=unix_socket,
        ssl_context=ssl_context,
        timeout=timeout,
        write_timeout=write_timeout,
        client_options=client_options,
    ) as connection:
        publisher = RtmpPublisher(connection)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(publisher._read)
            try:
                yield publisher
            finally:
                nursery.cancel_scope.cancel()


class RtmpPlayer:
    """An async iterator of the frames an RTMP server plays to us (see :func:`open_rtmp_player`).

    Attributes:
        url: what it plays.
        end: why the stream ended (``None`` while it goes on).
        frames_received: frames handed out; ``skipped``: messages FLV could not carry.
    """

    def __init__(self, connection: _Connection, read_timeout: float) -> None:
        self._connection = connection
        self._read_timeout = read_timeout
        self.url = connection.url
        self.end: str | None = None
        self.frames_received = 0
        self.skipped = 0

    @property
    def bytes_received(self) -> int:
        return self._connection.bytes_received

    def __aiter__(self) -> RtmpPlayer:
        return self

    async def __anext__(self) -> Frame:
        while True:
            batch = await self.next_batch(1)
            if not batch:
                raise StopAsyncIteration
            return batch[0]

    async def next_batch(self, limit: int = 256) -> list[Frame]:
        """Wait for frames and return those parsed so far (up to about ``limit``); an empty
        list once the stream has ended."""
        connection = self._connection
        client = connection.client
        frames: list[Frame] = []
        while not frames:
            if self.end is not None:
                return []
            while len(frames) < limit and (event := client.next_event()) is not None:
                if isinstance(event, (MediaMessage, DataMessage)):
                    frames += self._frames(event)
                elif isinstance(event, StreamEnded):
                    self.end = printable(f"{event.code}: {event.description}")
                    break
            if frames or self.end is not None:
                break
            await connection.flush()
            with trio.move_on_after(self._read_timeout) as scope:
                try:
                    await connection.receive()
                except ConnectionLost as exc:
                    self.end = exc.reason
            if scope.cancelled_caught:
                self.end = f"nothing received for {self._read_timeout:g} s"
        self.frames_received += len(frames)
        return frames

    def _frames(self, event: MediaMessage | DataMessage) -> list[Frame]:
        try:
            return message_frames(event)
        except flv.FlvUnsupported:
            self.skipped += 1
            return []


@asynccontextmanager
async def open_rtmp_player(
    url: str | RtmpUrl,
    *,
    unix_socket: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    timeout: float = 10.0,
    read_timeout: float = 30.0,
    write_timeout: float = 30.0,
    **client_options: Any,
) -> AsyncIterator[RtmpPlayer]:
    """Play ``url`` for the duration of the block; returns once the server said
    ``NetStream.Play.Start``. Iteration ends when the server ends the stream or nothing arrives
    for ``read_timeout`` seconds (``end`` says which)."""
    async with _opened(
        url,
        ClientMode.PLAY,
        unix_socket=unix_socket,
        ssl_context=ssl_context,
        timeout=timeout,
        write_timeout=write_timeout,
        client_options=client_options,
    ) as connection:
        yield RtmpPlayer(connection, read_timeout)
