"""An LL-HLS viewer on trio: :func:`follow_llhls` drives the sans-IO
:class:`~arcly_trio.clients.hls_follower.RenditionFollower` over trio sockets (tests, relays).

:func:`follow_llhls` plays ``http://HOST:PORT/APP/STREAM/index.m3u8`` the way hls.js follows it
in ``lowLatencyMode``: it reads the multivariant playlist, then, for each media playlist it names
(video, and the audio rendition), on one HTTP/1.1 keep-alive connection of its own, sends the
batches of requests the follower asks for (a plain reload; then, pipelined, the parts listed
after the newest one fetched, the blocking reload of the next part and the preload-hinted part)
and feeds it the answers. It counts what it got in a :class:`LlhlsStats` (many viewers may share
one): playlists, parts and bytes, gaps (see :mod:`~arcly_trio.clients.hls_follower`) and errors.

It is a load generator, not a player: it does not decode media, and reads only
``Content-Length`` bodies (what arcly-trio sends for playlists and parts). For thousands of
viewers in one process, benchmarks use the lean driver of the same follower,
:mod:`arcly_trio.clients.hls_load`.

Error policy: :func:`follow_llhls` returns when ``stop`` is set; a refused playlist or init
segment, a closed connection or a response it cannot read (no length, over ``max_body``) is
counted in ``errors`` and the rendition starts again after ``retry`` seconds on a new connection.
"""

from __future__ import annotations

import attrs
import trio

from arcly_trio.clients.hls_follower import (
    FollowerCounts,
    MediaPlaylist,
    RenditionFollower,
    parse_media_playlist,
    rendition_targets,
)
from arcly_trio.core.errors import RemoteProtocolError

__all__ = ["LlhlsStats", "MediaPlaylist", "follow_llhls", "parse_media_playlist"]


@attrs.define(slots=True)
class LlhlsStats(FollowerCounts):
    """What viewers fetched (shared by as many as count together)."""

    renditions: int = 0
    """Media playlists being followed now."""


class _Connection:
    """One HTTP/1.1 keep-alive connection: requests sent together, answers read in order."""

    def __init__(self, stream: trio.SocketStream, host: str, max_body: int) -> None:
        self._stream = stream
        self._host = host
        self._buffer = bytearray()
        self._max_body = max_body

    async def send(self, targets: list[bytes]) -> None:
        host = self._host.encode()
        await self._stream.send_all(b"".join(b"GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (t, host) for t in targets))

    async def get(self, *targets: bytes) -> list[tuple[int, bytes]]:
        await self.send(list(targets))
        return [await self.response() for _ in targets]

    async def response(self) -> tuple[int, bytes]:
        buffer = self._buffer
        while (end := buffer.find(b"\r\n\r\n")) < 0:
            if len(buffer) > 16384:
                raise RemoteProtocolError("response head over 16 KiB")
            await self._fill()
        head = bytes(buffer[:end]).lower()
        try:
            status = int(head[9:12])
            at = head.index(b"\r\ncontent-length:") + 17
            length = int(head[at : head.find(b"\r\n", at) if head.find(b"\r\n", at) > 0 else None])
        except ValueError:
            raise RemoteProtocolError("response without a status or a Content-Length") from None
        if length > self._max_body:
            raise RemoteProtocolError(f"response body of {length} bytes")
        start = end + 4
        while len(buffer) < start + length:
            await self._fill()
        body = bytes(buffer[start : start + length])
        del buffer[: start + length]
        return status, body

    async def _fill(self) -> None:
        data = await self._stream.receive_some(65536)
        if not data:
            raise trio.BrokenResourceError("connection closed")
        self._buffer += data


async def follow_llhls(host: str, port: int, path: str, stats: LlhlsStats, stop: trio.Event, *,
                       retry: float = 1.0, max_body: int = 16 << 20) -> None:  # fmt: skip
    """Follow the LL-HLS presentation at ``path`` (its multivariant playlist) until ``stop`` is set
    (see the module docstring)."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_stopper, stop, nursery.cancel_scope)
        target = path.encode()
        while True:
            try:
                stream = await trio.open_tcp_stream(host, port)
                async with stream:
                    status, body = (await _Connection(stream, host, max_body).get(target))[0]
                if status != 200:
                    raise RemoteProtocolError(f"multivariant playlist answered {status}")
            except (OSError, trio.BrokenResourceError, RemoteProtocolError):
                stats.errors += 1
                await trio.sleep(retry)
                continue
            stats.playlists += 1
            for rendition in rendition_targets(target, body):
                nursery.start_soon(_rendition, host, port, rendition, stats, retry, max_body)
            return


async def _stopper(stop: trio.Event, scope: trio.CancelScope) -> None:
    await stop.wait()
    scope.cancel()


async def _rendition(host: str, port: int, target: bytes, stats: LlhlsStats, retry: float, max_body: int) -> None:
    """Follow one media playlist for ever (restarting on errors)."""
    follower = RenditionFollower(target, stats)
    stats.renditions += 1
    try:
        while True:
            try:
                await _follow(host, port, follower, max_body)
            except (OSError, trio.BrokenResourceError, RemoteProtocolError):
                stats.errors += 1
            if follower.ended:
                return
            await trio.sleep(retry)
    finally:
        stats.renditions -= 1


async def _follow(host: str, port: int, follower: RenditionFollower, max_body: int) -> None:
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        connection = _Connection(stream, host, max_body)
        batch = follower.start()
        while batch:
            await connection.send(batch)
            batch = []
            while not batch and follower.pending:
                status, body = await connection.response()
                batch = follower.receive(status, body)
