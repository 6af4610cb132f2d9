"""Playback of recordings over HTTP: an HLS VOD playlist or one MP4 of a recorded span, by time.

Routes (installed by the HTTP worker before the stream services', so ``playback.m3u8`` is not
taken for an HLS segment name):

* ``GET /{app}/{stream}/playback.m3u8?start=TIME&duration=SECONDS``: an HLS VOD playlist of the
  span (``#EXT-X-PLAYLIST-TYPE:VOD``, ``#EXT-X-PROGRAM-DATE-TIME`` per segment, discontinuities
  across publish sessions, the recorded files' init segments as ``EXT-X-MAP``) whose segments
  are byte ranges of the recorded files, starting at the keyframe at or before ``start``. Every
  URI it names carries the request's query (less ``start`` and ``duration``), so a ``?token=``
  or a signed URL's ``?sign=`` reaches the segment requests.
* ``GET /{app}/{stream}/playback/{file}``: a recorded file (``{UTC start}.mp4``), whole or a
  byte range (``Range: bytes=A-B``, ``A-`` or ``-N``: ``206`` with ``Content-Range``; past the
  end ``416`` with ``Content-Range: bytes */SIZE``; several ranges or a malformed header: the
  whole file, ``200``, as RFC 9110 allows). With ``?shift=MICROSECONDS`` (the playlist adds it
  to a file whose timeline does not follow the previous file's: a publisher that reconnected
  starts again from 0) its fragments' decode times are moved by that much as they are sent,
  bytes in place, so the playlist's media has one timeline.
* ``GET /{app}/{stream}/playback.mp4?start=TIME&duration=SECONDS``: one fragmented MP4 of the
  span, sent as it is read and re-based (see :mod:`arcly_trio.services.recordings.playback`),
  with its ``Content-Length`` known in advance and byte ranges served (a ``<video>`` element and
  ffmpeg seek in it, and read its duration: a player that cannot seek sees only the first
  fragment's); it stops before a file whose tracks differ from the first file's (a publisher
  that came back with another codec or configuration) and then says so in the
  ``X-Playback-Stopped`` header.
* MediaMTX's playback API, the same names: ``GET /get?path=APP/STREAM&start=&duration=&format=``
  (``format`` ``fmp4``, the default, or ``mp4``: both get the fragmented MP4) and ``GET
  /list?path=APP/STREAM&start=&end=`` (JSON: the recorded spans, each with ``start``,
  ``duration`` and the ``url`` of its ``/get``).

``TIME`` is RFC 3339 (ISO 8601 with a time zone): ``2026-12-07T01:34:12Z``,
``2026-12-07T02:34:12.5+01:00``; in a URL the ``+`` must be encoded (``%2B``), but a ``+`` that a
form encoding turned into a space is read as ``+``. ``SECONDS`` is a positive decimal number, at
most :data:`MAX_DURATION` (a day).

Authorization: exactly as live playback: ``engine.authorize("play", key, credentials)`` with
the request's ``?token=``/``?sign=``/``?jwt=``, its ``Authorization: Bearer`` header and its
query (protocol ``"playback"``), for every request, byte ranges included: a play token or
signed URL for a stream plays its recordings, a publish-only or another stream's credential does
not. An authenticator's rename serves the recordings of the stream it names.

Where the recordings are: the routes use the ``playback`` attribute of an engine plugin (the
recording service's: a :class:`PlaybackProvider`); with none, every route answers ``404`` (the
server does not record).

Attacker's view: the parameters are parsed strictly and bounded (400 with the reason,
before authorization and before any disk access); a file name must look like a recording's
and is resolved by the catalog, which refuses anything outside the stream's directory; a range
is checked against the file's size; a body is sent as it is read, a batch at a time, under the
server's write timeout, so a slow client costs a connection and no memory; peer text in logs
is escaped.

Error policy: ``400`` for a bad parameter or stream name, ``401``/``403``/``429`` for a refused
play, ``404`` when nothing is recorded in the span (or the server does not record, or no such
file), ``416`` for a range past the end; a file that vanishes while it is sent ends the
response early (the connection is closed: the client sees a short body). Nothing the client
sends can cause a ``500``.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any, Final, Protocol
from urllib.parse import urlencode

from arcly_trio.core.errors import ClientGone, InvalidStreamName, Unauthorized
from arcly_trio.core.keys import StreamKey
from arcly_trio.core.text import printable
from arcly_trio.protocols.http.router import BadRequest, HttpRequest, Router
from arcly_trio.workers.http.exchange import Exchange

__all__ = [
    "install",
    "PlaybackProvider",
    "parse_time",
    "parse_duration",
    "parse_range",
    "RangeNotSatisfiable",
    "MAX_DURATION",
    "PROTOCOL",
]

log = logging.getLogger("arcly_trio.http")

PROTOCOL: Final = "playback"
"""The protocol name playback requests are authorized and counted under."""
MAX_DURATION: Final = 86_400.0
"""The longest span one request may ask for (seconds)."""
PLAYLIST_TYPE: Final = "application/vnd.apple.mpegurl"
_CHUNK: Final = 256 * 1024
_TIME: Final = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]{1,9})?([Zz]|[+\- ][0-9]{2}:[0-9]{2})"
)
_DURATION: Final = re.compile(r"[0-9]{1,9}(?:\.[0-9]{1,9})?")
_LATEST: Final = 253370764800  # 9999-01-01T00:00:00Z: a span's end is a date too
_RANGE: Final = re.compile(r"bytes=([0-9]{0,18})-([0-9]{0,18})")
_CARRIED_OUT: Final = frozenset({"start", "duration", "end", "format", "path", "shift"})
_SHIFT: Final = re.compile(r"-?[0-9]{1,15}")


class PlaybackProvider(Protocol):
    """What the routes use (:class:`arcly_trio.services.recordings.playback.Playback` is one)."""

    async def plan(self, key: StreamKey, start: float, duration: float, *, whole_fragments: bool = False) -> Any: ...

    def playlist(self, plan: Any, prefix: str, query: str = "") -> str: ...

    async def layout(self, plan: Any) -> Any: ...

    def mp4(self, plan: Any, layout: Any, first: int = 0, last: int | None = None) -> AsyncIterator[bytes]: ...

    async def file(self, key: StreamKey, name: str) -> tuple[Any, int] | None: ...

    async def read(self, path: Any, offset: int, length: int) -> bytes: ...

    async def spans(self, key: StreamKey, start: float | None = None, end: float | None = None) -> Sequence[Any]: ...

    async def patches(self, path: Any, shift: int) -> list[tuple[int, bytes]]: ...

    def apply_patches(self, data: bytes, position: int, patches: Sequence[tuple[int, bytes]]) -> bytes: ...


class RangeNotSatisfiable(BadRequest):
    """A range that starts past the end of the file: ``416``."""

    def __init__(self, size: int) -> None:
        super().__init__(f"the range is outside the file's {size} bytes", 416, (("content-range", f"bytes */{size}"),))


def parse_time(text: str, name: str = "start") -> float:
    """An RFC 3339 time as epoch seconds; :class:`BadRequest` (``400``) otherwise."""
    found = _TIME.fullmatch(text) if len(text) <= 64 else None
    if found is None:
        raise BadRequest(f"{name} must be an RFC 3339 time with a time zone, like 2026-12-07T01:34:12Z")
    year, month, day, hour, minute, second = (int(found.group(i)) for i in range(1, 7))
    fraction = float(found.group(7) or 0)
    zone = found.group(8)
    try:
        if zone in ("Z", "z"):
            tz = dt.UTC
        else:
            hours, minutes = int(zone[1:3]), int(zone[4:6])
            if minutes > 59:
                raise ValueError("minutes")
            sign = -1 if zone[0] == "-" else 1
            tz = dt.timezone(sign * dt.timedelta(hours=hours, minutes=minutes))
        moment = dt.datetime(year, month, day, hour, minute, second, tzinfo=tz)
    except (ValueError, OverflowError):
        raise BadRequest(f"{name} is not a valid date and time") from None
    epoch = moment.timestamp() + fraction
    if not 0 <= epoch < _LATEST:
        raise BadRequest(f"{name} is out of range (1970 to 9998)")
    return epoch


def parse_duration(text: str) -> float:
    """Positive decimal seconds, at most :data:`MAX_DURATION`; :class:`BadRequest` otherwise."""
    if not _DURATION.fullmatch(text):
        raise BadRequest("duration must be a number of seconds, like 60 or 12.5")
    value = float(text)
    if not 0 < value <= MAX_DURATION:
        raise BadRequest(f"duration must be above 0 and at most {MAX_DURATION:g} seconds")
    return value


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The byte range ``(first, last)`` (inclusive) a ``Range`` header asks of ``size`` bytes, or
    ``None`` to send the whole file (no header, a malformed one, several ranges, another unit);
    :class:`RangeNotSatisfiable` when it starts at or past the end."""
    if header is None:
        return None
    found = _RANGE.fullmatch(header.strip())
    if found is None:
        return None
    first_text, last_text = found.groups()
    if not first_text:
        if not last_text:
            return None
        suffix = int(last_text)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable(size)
        return max(0, size - suffix), size - 1
    first = int(first_text)
    if last_text and int(last_text) < first:
        return None  # invalid: ignored (RFC 9110 14.2)
    if first >= size:
        raise RangeNotSatisfiable(size)
    return first, min(int(last_text), size - 1) if last_text else size - 1


def install(router: Router) -> None:
    router.get("/{app}/{stream}/playback.m3u8", serve_playlist)
    router.get("/{app}/{stream}/playback.mp4", serve_mp4)
    router.get("/{app}/{stream}/playback/{file}", serve_file)
    router.get("/get", serve_get)
    router.get("/list", serve_list)


def provider(engine: Any) -> PlaybackProvider | None:
    """The engine's playback (the ``playback`` attribute of its first plugin that has one)."""
    for plugin in engine.plugins:
        found = getattr(plugin, "playback", None)
        if found is not None:
            return found  # type: ignore[no-any-return]
    return None


def _span(request: HttpRequest) -> tuple[float, float]:
    query = request.query
    if "start" not in query or "duration" not in query:
        raise BadRequest("start (RFC 3339) and duration (seconds) are required")
    return parse_time(query["start"]), parse_duration(query["duration"])


def _carried(request: HttpRequest) -> str:
    """The request's query as handed on to the URIs it names (credentials), less the span."""
    return urlencode({k: v for k, v in request.query.items() if k not in _CARRIED_OUT})


async def _authorized(request: HttpRequest, exchange: Exchange, key: StreamKey) -> StreamKey | None:
    try:
        return await exchange.engine.authorize("play", key, request.credentials(PROTOCOL))
    except Unauthorized as exc:
        exchange.log_refusal(PROTOCOL, key, exc)
        await exchange.error(exc.http_status, str(exc))
        return None


async def _admit(request: HttpRequest, exchange: Exchange, key: StreamKey) -> tuple[PlaybackProvider, StreamKey] | None:
    found = provider(exchange.engine)
    authorized = await _authorized(request, exchange, key)
    if authorized is None:
        return None
    if found is None:
        await exchange.error(404, "this server does not record streams (see --record)")
        return None
    return found, authorized


async def _plan(
    request: HttpRequest, exchange: Exchange, key: StreamKey, start: float, duration: float, *, whole: bool
) -> tuple[PlaybackProvider, Any] | None:
    admitted = await _admit(request, exchange, key)
    if admitted is None:
        return None
    playback, key = admitted
    plan = await playback.plan(key, start, duration, whole_fragments=whole)
    if plan is None:
        await exchange.error(404, f"nothing of {key} is recorded between {_iso(start)} and {_iso(start + duration)}")
        return None
    return playback, plan


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat().replace("+00:00", "Z")


async def serve_playlist(request: HttpRequest, exchange: Exchange) -> None:
    """``GET /{app}/{stream}/playback.m3u8``."""
    key = request.stream_key()
    start, duration = _span(request)
    planned = await _plan(request, exchange, key, start, duration, whole=True)
    if planned is None:
        return
    playback, plan = planned
    body = playback.playlist(plan, "playback/", _carried(request)).encode()
    exchange.engine.sessions.count("play", PROTOCOL, len(body))
    await exchange.respond(200, body, content_type=PLAYLIST_TYPE, headers=[("cache-control", "max-age=10")])


async def _send_mp4(request: HttpRequest, exchange: Exchange, key: StreamKey, start: float, duration: float) -> None:
    planned = await _plan(request, exchange, key, start, duration, whole=False)
    if planned is None:
        return
    playback, plan = planned
    layout = await playback.layout(plan)
    if layout is None:
        await exchange.error(404, f"the recording of {key} at {_iso(start)} cannot be read")
        return
    wanted = parse_range(request.header("range"), layout.size)  # RangeNotSatisfiable: 416, answered by the worker
    first, last = wanted if wanted is not None else (0, layout.size - 1)
    headers = [
        ("accept-ranges", "bytes"),
        ("cache-control", "no-cache"),
        ("content-disposition", f'inline; filename="{key.app}-{key.name}-{_stamp(plan.start)}.mp4"'),
        ("content-length", str(last - first + 1)),
    ]
    if wanted is not None:
        headers.append(("content-range", f"bytes {first}-{last}/{layout.size}"))
    if plan.stopped:
        headers.append(("x-playback-stopped", printable(plan.stopped, 200)))
    await exchange.start(206 if wanted is not None else 200, content_type="video/mp4", headers=headers)
    if request.method == "HEAD":
        await exchange.end()
        return
    sent = 0
    try:
        async for piece in playback.mp4(plan, layout, first, last):
            await exchange.send(piece)
            sent += len(piece)
    finally:
        exchange.engine.sessions.count("play", PROTOCOL, sent)
    if sent != last - first + 1:  # a file changed or failed (logged): the body is short, so the connection ends
        exchange.keep_alive = False
        raise ClientGone(f"the MP4 of {key} ended {last - first + 1 - sent} bytes early")
    await exchange.end()
    log.debug("playback %s:%s got %s from %s: %d bytes", *_peer(request), key, _iso(plan.start), sent)


def _stamp(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def _peer(request: HttpRequest) -> tuple[str, object]:
    return request.peer if request.peer is not None else ("?", "?")


async def serve_mp4(request: HttpRequest, exchange: Exchange) -> None:
    """``GET /{app}/{stream}/playback.mp4``."""
    key = request.stream_key()
    start, duration = _span(request)
    await _send_mp4(request, exchange, key, start, duration)


def _path_key(request: HttpRequest) -> StreamKey:
    path = request.query.get("path")
    if not path:
        raise BadRequest("path=APP/STREAM is required")
    try:
        return StreamKey.parse(path.strip("/"))
    except (InvalidStreamName, ValueError) as exc:
        raise BadRequest(f"path: {exc}") from None


async def serve_get(request: HttpRequest, exchange: Exchange) -> None:
    """MediaMTX's ``GET /get?path=&start=&duration=&format=``."""
    key = _path_key(request)
    start, duration = _span(request)
    kind = request.query.get("format", "fmp4")
    if kind not in ("fmp4", "mp4"):
        raise BadRequest("format must be fmp4 or mp4")
    await _send_mp4(request, exchange, key, start, duration)


async def serve_list(request: HttpRequest, exchange: Exchange) -> None:
    """MediaMTX's ``GET /list?path=&start=&end=``: the recorded spans as JSON."""
    key = _path_key(request)
    start = parse_time(request.query["start"]) if request.query.get("start") else None
    end = parse_time(request.query["end"], "end") if request.query.get("end") else None
    if start is not None and end is not None and end <= start:
        raise BadRequest("end must be after start")
    admitted = await _admit(request, exchange, key)
    if admitted is None:
        return
    playback, key = admitted
    spans = await playback.spans(key, start, end)
    if not spans:
        await exchange.error(404, f"nothing of {key} is recorded" + (" in that time" if start or end else ""))
        return
    carried = _carried(request)
    listed = []
    for span in spans:
        when = _iso(span.start)
        query = urlencode({"path": f"{key.app}/{key.name}", "start": when, "duration": f"{span.duration:.3f}"})
        listed.append(
            {
                "start": when,
                "duration": round(span.duration, 3),
                "url": f"/get?{query}" + (f"&{carried}" if carried else ""),
            }
        )
    await exchange.json(200, listed)


async def serve_file(request: HttpRequest, exchange: Exchange) -> None:
    """``GET /{app}/{stream}/playback/{file}``, whole or a byte range."""
    key = request.stream_key()
    name = request.params["file"]
    shift_text = request.query.get("shift", "0")
    if not _SHIFT.fullmatch(shift_text):
        raise BadRequest("shift must be a whole number of microseconds")
    shift = int(shift_text)
    admitted = await _admit(request, exchange, key)
    if admitted is None:
        return
    playback, key = admitted
    found = await playback.file(key, name)
    if found is None:
        await exchange.error(404, f"{key} has no recording {printable(name, 80)!r}")
        return
    path, size = found
    patches = await playback.patches(path, shift) if shift else []
    wanted = parse_range(request.header("range"), size)  # RangeNotSatisfiable: 416, answered by the worker
    first, last = wanted if wanted is not None else (0, size - 1)
    length = max(0, last - first + 1)
    headers = [("accept-ranges", "bytes"), ("cache-control", "max-age=3600"), ("content-length", str(length))]
    status = 200
    if wanted is not None:
        status = 206
        headers.append(("content-range", f"bytes {first}-{last}/{size}"))
    await exchange.start(status, content_type="video/mp4", headers=headers)
    if request.method == "HEAD":
        await exchange.end()
        return
    position = first
    try:
        while position <= last:
            data = await playback.read(path, position, min(_CHUNK, last + 1 - position))
            if not data:
                break
            await exchange.send(playback.apply_patches(data, position, patches) if patches else data)
            position += len(data)
    except OSError as exc:
        log.warning("playback of %s %s failed: %s", key, printable(name, 80), exc)
    finally:
        exchange.engine.sessions.count("play", PROTOCOL, position - first)
    if position <= last:  # the file shrank or failed: the body is short, so the connection ends
        exchange.keep_alive = False
        raise ClientGone(f"recording {printable(name, 80)} ended before the range it was asked")
    await exchange.end()
