"""An LL-HLS load generator: viewers that follow a low-latency playlist as hls.js does, cheaply.

:func:`follow_llhls` plays ``http://HOST:PORT/APP/STREAM/index.m3u8`` the way hls.js follows it
in ``lowLatencyMode``: it reads the multivariant playlist, then, for each media playlist it names
(video, and the audio rendition), on one HTTP/1.1 keep-alive connection of its own: one plain
reload, the init segment, then, for ever, a blocking reload (``_HLS_msn``/``_HLS_part`` of the part
after the newest one it has) pipelined with the request for the part the last playlist's
``EXT-X-PRELOAD-HINT`` names (which the server answers as soon as that part exists), and a fetch
of any other part the playlist lists that it has not fetched yet. It counts what it got in a
:class:`LlhlsStats` (many viewers may share one): playlists, parts and bytes, and gaps (a part
the playlist listed after the newest fetched one, that disappeared from the playlist before it
was fetched, or a jump in media sequence numbers).

It is a load generator, not a player: it parses only what it needs (the media sequence number,
the ``EXT-X-PART`` and ``EXT-X-PRELOAD-HINT`` URIs, ``EXT-X-MAP``) with byte searches, does not
decode media, and answers only ``Content-Length`` bodies (what arcly-trio sends for playlists
and parts).

Error policy: :func:`follow_llhls` returns when ``stop`` is set; a refused request (a status
other than ``200``) or a closed connection is counted in ``errors`` and the rendition starts
again after ``retry`` seconds on a new connection; a response it cannot read (no length, over
``max_body``) raises :class:`~arcly_trio.core.errors.RemoteProtocolError`.
"""

from __future__ import annotations

import re

import attrs
import trio

from arcly_trio.core.errors import RemoteProtocolError

__all__ = ["LlhlsStats", "follow_llhls", "parse_media_playlist", "MediaPlaylist"]

_URI = re.compile(rb'URI="([^"]*)"')
_PART = re.compile(rb'#EXT-X-PART:[^\n]*URI="([^"]*)"')
_SEQUENCE = re.compile(rb"#EXT-X-MEDIA-SEQUENCE:(\d+)")
_HINT = re.compile(rb'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="([^"]*)"')
_MAP = re.compile(rb'#EXT-X-MAP:URI="([^"]*)"')
_MEDIA = re.compile(rb'#EXT-X-MEDIA:[^\n]*URI="([^"]*)"')


@attrs.define(slots=True)
class LlhlsStats:
    """What viewers fetched (shared by as many as count together)."""

    playlists: int = 0
    parts: int = 0
    bytes: int = 0
    gaps: int = 0
    errors: int = 0
    renditions: int = 0
    """Media playlists being followed now."""


@attrs.frozen(slots=True)
class MediaPlaylist:
    """What a load generator needs of a media playlist."""

    open_msn: int
    """The media sequence number of the segment the last parts belong to (being written)."""
    open_parts: int
    """How many parts of that segment the playlist lists."""
    parts: tuple[bytes, ...]
    """Every ``EXT-X-PART`` URI, in order (without the query)."""
    hint: bytes | None
    init: bytes | None
    ended: bool


def parse_media_playlist(body: bytes) -> MediaPlaylist:
    """The :class:`MediaPlaylist` of an LL-HLS media playlist (``RemoteProtocolError`` when it has
    no ``EXT-X-MEDIA-SEQUENCE``)."""
    found = _SEQUENCE.search(body)
    if found is None:
        raise RemoteProtocolError("media playlist without #EXT-X-MEDIA-SEQUENCE")
    segments = body.count(b"#EXTINF")
    last = body.rfind(b"#EXTINF")
    tail = body if last < 0 else body[last:]
    hint = _HINT.search(body)
    init = _MAP.search(body)
    return MediaPlaylist(
        open_msn=int(found.group(1)) + segments,
        open_parts=tail.count(b"#EXT-X-PART:"),
        parts=tuple(uri.partition(b"?")[0] for uri in _PART.findall(body)),
        hint=None if hint is None else hint.group(1).partition(b"?")[0],
        init=None if init is None else init.group(1),
        ended=b"#EXT-X-ENDLIST" in body,
    )


class _Connection:
    """One HTTP/1.1 keep-alive connection: requests sent together, answers read in order."""

    def __init__(self, stream: trio.SocketStream, host: str, max_body: int) -> None:
        self._stream = stream
        self._host = host
        self._buffer = bytearray()
        self._max_body = max_body

    async def get(self, *targets: str) -> list[tuple[int, bytes]]:
        request = "".join(f"GET {target} HTTP/1.1\r\nHost: {self._host}\r\n\r\n" for target in targets)
        await self._stream.send_all(request.encode())
        return [await self._response() for _ in targets]

    async def _response(self) -> tuple[int, bytes]:
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


def _resolve(base: str, uri: bytes) -> str:
    """``uri`` (relative to the playlist at ``base``, a path) as a request target."""
    text = uri.decode("ascii", "replace")
    return text if text.startswith("/") else base.rpartition("/")[0] + "/" + text


async def follow_llhls(host: str, port: int, path: str, stats: LlhlsStats, stop: trio.Event, *,
                       retry: float = 1.0, max_body: int = 16 << 20) -> None:  # fmt: skip
    """Follow the LL-HLS presentation at ``path`` (its multivariant playlist) until ``stop`` is set
    (see the module docstring)."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_stopper, stop, nursery.cancel_scope)
        while True:
            try:
                stream = await trio.open_tcp_stream(host, port)
                async with stream:
                    status, body = (await _Connection(stream, host, max_body).get(path))[0]
                if status != 200:
                    raise RemoteProtocolError(f"multivariant playlist answered {status}")
            except (OSError, trio.BrokenResourceError, RemoteProtocolError):
                stats.errors += 1
                await trio.sleep(retry)
                continue
            stats.playlists += 1
            media = _MEDIA.findall(body)
            variant = [line for line in body.split(b"\n") if line and not line.startswith(b"#")]
            for uri in [*variant[:1], *media]:
                nursery.start_soon(_rendition, host, port, _resolve(path, uri), stats, retry, max_body)
            return


async def _stopper(stop: trio.Event, scope: trio.CancelScope) -> None:
    await stop.wait()
    scope.cancel()


async def _rendition(host: str, port: int, target: str, stats: LlhlsStats, retry: float, max_body: int) -> None:
    """Follow one media playlist for ever (restarting on errors)."""
    path, _, query = target.partition("?")
    suffix = "?" + query if query else ""
    joiner = "&" if query else "?"
    stats.renditions += 1
    try:
        while True:
            try:
                await _follow(host, port, path, suffix, joiner, stats, max_body)
            except (OSError, trio.BrokenResourceError, RemoteProtocolError):
                stats.errors += 1
            await trio.sleep(retry)
    finally:
        stats.renditions -= 1


async def _follow(host: str, port: int, path: str, suffix: str, joiner: str, stats: LlhlsStats,
                  max_body: int) -> None:  # fmt: skip
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        connection = _Connection(stream, host, max_body)
        status, body = (await connection.get(path + suffix))[0]
        if status != 200:
            raise RemoteProtocolError(f"media playlist answered {status}")
        stats.playlists += 1
        playlist = parse_media_playlist(body)
        if playlist.init is not None:
            status, init = (await connection.get(_resolve(path, playlist.init) + suffix))[0]
            if status != 200:
                raise RemoteProtocolError(f"init segment answered {status}")
            stats.bytes += len(init)
        # Start at the live edge: the newest independent-ish part is what hls.js would load
        # first; a load generator starts with the newest listed part.
        fetched: set[bytes] = set(playlist.parts[:-1])
        newest = playlist.parts[-1] if playlist.parts else None
        if newest is not None:
            await _fetch(connection, path, suffix, [newest], stats)
            fetched.add(newest)
        while not playlist.ended:
            msn, part = playlist.open_msn, playlist.open_parts  # the next part
            reload = f"{path}{suffix}{joiner}_HLS_msn={msn}&_HLS_part={part}"
            targets = [reload]
            hint = playlist.hint if playlist.hint is not None and playlist.hint not in fetched else None
            if hint is not None:
                targets.append(_resolve(path, hint) + suffix)
            answers = await connection.get(*targets)
            status, body = answers[0]
            if status != 200:
                raise RemoteProtocolError(f"blocking reload answered {status}")
            stats.playlists += 1
            if hint is not None:
                hint_status, data = answers[1]
                if hint_status == 200:
                    stats.parts += 1
                    stats.bytes += len(data)
                    fetched.add(hint)
            playlist = parse_media_playlist(body)
            listed = set(playlist.parts)
            if newest is not None and newest not in listed and fetched.isdisjoint(listed):
                stats.gaps += 1  # everything we had left the playlist: we fell behind
            missing = []
            seen = newest is None or newest not in listed
            for uri in playlist.parts:
                if seen and uri not in fetched:
                    missing.append(uri)
                if uri == newest:
                    seen = True
            if missing:
                await _fetch(connection, path, suffix, missing, stats)
                fetched.update(missing)
            if playlist.parts:
                newest = playlist.parts[-1]
            fetched &= listed  # forget what left the playlist (bounded by the window)


async def _fetch(connection: _Connection, path: str, suffix: str, uris: list[bytes], stats: LlhlsStats) -> None:
    for status, data in await connection.get(*(_resolve(path, uri) + suffix for uri in uris)):
        if status == 200:
            stats.parts += 1
            stats.bytes += len(data)
        else:
            stats.gaps += 1
