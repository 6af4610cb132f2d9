"""Thumbnails over HTTP: ``GET /{app}/{stream}/thumbnail.jpg`` and ``GET /{app}/{stream}/playback.jpg``.

Routes:

* ``GET /{app}/{stream}/thumbnail.jpg?width=320``: a JPEG of the stream's latest keyframe,
  ``width`` pixels wide (:data:`~arcly_trio.media.thumbnail.MIN_WIDTH` to
  :data:`~arcly_trio.media.thumbnail.MAX_WIDTH`, 320 by default; the height follows the
  picture's aspect ratio). It changes with every keyframe; ``Cache-Control: private,
  max-age=1``.
* ``GET /{app}/{stream}/playback.jpg?at=2026-12-07T01:34:12Z&width=320``: a JPEG of the
  recorded keyframe at or before ``at`` (ISO 8601, UTC unless it says otherwise, or epoch
  seconds), found through the recording catalog
  (:class:`arcly_trio.services.recordings.catalog.Catalog`) of the engine's recorder;
  ``Cache-Control: private, max-age=3600`` (a recorded moment does not change).

A live stream that is not here is asked of the stream sources once the request is authorized
(``engine.locate``: another worker of ``--workers``, a cluster node, a pull), like HLS does; its
first keyframe may then take a moment (``503``, retry).

Both are authorized like live playback (``engine.authorize("play", ...)`` with the request's
``?token=``, signed URL or ``Authorization: Bearer``; protocol ``thumbnail``): ``401`` without a
credential the server wants, ``403`` with a refused one. The decoding, its caches and its
one-decode-per-keyframe-and-width rule are :class:`arcly_trio.services.thumbnails.Thumbnails`',
the engine plugin whose ``install_routes`` adds these routes (in front of the others, so a
stream service's catch-all ``/{app}/{stream}/{segment}`` does not take them).

Answers: ``200`` ``image/jpeg``; ``400`` for a width that is not a whole number in the bounds
or an ``at`` that is not a time (or not within the years 2000 to 2200); ``404`` for a stream
that is not live (``thumbnail.jpg``), a server that does not record, or nothing recorded at
``at``; ``409`` for a stream without video (after its first 5 s: a stream just started may send
its audio first) or of a codec without thumbnails (h264, hevc, av1
and vp9 have them); ``503`` with ``Retry-After: 1`` before the first keyframe, while the
decoders are too busy, or when the recording directory cannot be read (logged); ``422`` for a
keyframe that does not decode.

Attacker's view: every parameter is bounded before anything is looked up (width digits, ``at``
at most 64 characters); a live picture larger than 8K (as the stream's codec config says) is not
decoded at all (``409``); the work a request can cause is bounded by the service (one decode per
keyframe and width, a few widths per keyframe, a few threads); error texts hold only validated
names and the service's own reasons.

Error policy: a bad parameter raises :class:`~arcly_trio.protocols.http.router.BadRequest`
(``400``, logged by the worker as a bad request); a refusal is answered with its status (the
engine's gate logs it); every error of the service is answered with its status. No
request of these routes is a ``500`` unless the code has a bug.
"""

from __future__ import annotations

import datetime
import logging
import math
import re
from typing import Any, Final, Protocol, runtime_checkable

import trio

from arcly_trio.core.errors import ArclyError, EngineClosed, StorageError, Unauthorized
from arcly_trio.core.keys import StreamKey
from arcly_trio.core.text import printable
from arcly_trio.kernel.gop import GopCache
from arcly_trio.media.thumbnail import DEFAULT_WIDTH, MAX_SOURCE_PIXELS, MAX_WIDTH, MIN_WIDTH, NoPicture
from arcly_trio.protocols.http.router import BadRequest, HttpRequest, Responder, Router

__all__ = [
    "install",
    "parse_moment",
    "parse_width",
    "LIVE_ROUTE",
    "RECORDED_ROUTE",
    "RecordingCatalog",
    "ThumbnailMaker",
]

log = logging.getLogger("arcly_trio.thumbnails")

LIVE_ROUTE: Final = "/{app}/{stream}/thumbnail.jpg"
RECORDED_ROUTE: Final = "/{app}/{stream}/playback.jpg"
PROTOCOL: Final = "thumbnail"
"""The protocol name thumbnail requests are authorized under."""
_DIGITS = re.compile(r"[0-9]{1,5}")
_NUMBER = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,9})?")
_MAX_MOMENT = 64
_EARLIEST = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC).timestamp()
_LATEST = datetime.datetime(2200, 1, 1, tzinfo=datetime.UTC).timestamp()
_SLACK = 0.5
"""Seconds past a closed segment's end that still count as in it (its last frame lasts)."""
_EPSILON = 0.001
"""A moment this close before a segment's start is in it (a start read back from an ISO 8601 text
of the index's float may round either way)."""
_STARTING = 5.0
"""Seconds a new stream without video yet is taken to be starting (``503``, not ``409``)."""
_GROWING = 10.0
"""Seconds past a growing segment's end (as its index line last said: the recorder refreshes it
every few seconds) that still count as in it."""


@runtime_checkable
class RecordingCatalog(Protocol):
    """What the playback thumbnail needs of the recording catalog
    (:class:`arcly_trio.services.recordings.catalog.Catalog` is one)."""

    def path(self, key: StreamKey, file: str) -> Any: ...

    async def segments(self, key: StreamKey, start: float | None = None, end: float | None = None) -> list[Any]: ...


class Jpeg(Protocol):
    """A picture as the routes send it."""

    jpeg: bytes


class ThumbnailMaker(Protocol):
    """What the routes ask for pictures (:class:`arcly_trio.services.thumbnails.Thumbnails`)."""

    def __contains__(self, key: StreamKey) -> bool: ...

    def prune(self, alive: Any) -> None: ...

    async def live(self, key: StreamKey, gop: GopCache, width: int, *, starting: bool = False) -> Jpeg: ...

    async def recorded(self, path: Any, offset: float, width: int) -> Jpeg: ...


def parse_width(query: Any) -> int:
    """The ``width`` parameter: 320 when absent; :class:`BadRequest` unless it is a whole
    number from 16 to 1920."""
    raw = query.get("width")
    if raw is None or raw == "":
        return DEFAULT_WIDTH
    if not _DIGITS.fullmatch(raw) or not MIN_WIDTH <= int(raw) <= MAX_WIDTH:
        raise BadRequest(f"width must be a whole number of pixels from {MIN_WIDTH} to {MAX_WIDTH}")
    return int(raw)


def parse_moment(raw: str | None) -> float:
    """``at`` as epoch seconds: ISO 8601 (``2026-12-07T01:34:12.5Z``; without a zone: UTC) or a
    number of epoch seconds; :class:`BadRequest` for anything else or outside 2000..2200."""
    if not raw:
        raise BadRequest("at= is required: the moment, as ISO 8601 (2026-12-07T01:34:12Z) or epoch seconds")
    if len(raw) > _MAX_MOMENT:
        raise BadRequest("at= is too long to be a time")
    if _NUMBER.fullmatch(raw):
        moment = float(raw)
    else:
        try:
            parsed = datetime.datetime.fromisoformat(raw.replace(" ", "+"))  # a '+' decoded to ' '
        except ValueError:
            raise BadRequest("at= is not an ISO 8601 time (2026-12-07T01:34:12Z) or epoch seconds") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=datetime.UTC)
        moment = parsed.timestamp()
    if not math.isfinite(moment) or not _EARLIEST <= moment < _LATEST:
        raise BadRequest("at= must be a time from the year 2000 to 2200")
    return moment


def _catalog(engine: Any) -> RecordingCatalog | None:
    """The recording catalog of the engine's recorder (a plugin with a ``catalog``), or ``None``."""
    for plugin in engine.plugins:
        catalog = getattr(plugin, "catalog", None)
        if isinstance(catalog, RecordingCatalog):
            return catalog
    return None


async def _authorized(request: HttpRequest, exchange: Responder) -> StreamKey | None:
    """The stream the request may see (the authenticator may rename it), or answered and ``None``."""
    requested = request.stream_key()
    try:
        return await exchange.engine.authorize("play", requested, request.credentials(PROTOCOL))
    except Unauthorized as exc:
        await exchange.error(exc.http_status, str(exc))
        return None


async def _send(exchange: Responder, picture: Jpeg, max_age: int) -> None:
    await exchange.respond(
        200,
        picture.jpeg,
        content_type="image/jpeg",
        headers=[("cache-control", f"private, max-age={max_age}"), ("x-content-type-options", "nosniff")],
    )


async def _refuse(exchange: Responder, exc: NoPicture) -> None:
    headers = [("retry-after", "1")] if exc.status == 503 else []
    await exchange.error(exc.status, str(exc), headers=headers)


def install(router: Router, thumbnails: ThumbnailMaker) -> None:
    """Add the thumbnail routes of ``thumbnails`` (its caches and decodes) in front of
    ``router``'s routes."""

    async def serve_live(request: HttpRequest, exchange: Responder) -> None:
        width = parse_width(request.query)
        key = await _authorized(request, exchange)
        if key is None:
            return
        engine = exchange.engine
        try:
            stream = await engine.locate(key, peer=request.peer)  # a pull, a cluster: brought here
        except EngineClosed:
            await exchange.error(503, "the server is stopping", headers=[("retry-after", "1")])
            return
        except ArclyError:  # not found here nor by a stream source, or the source refused
            stream = None
        if stream is None or not stream.publishing:
            await exchange.error(404, f"{key} is not live")
            return
        info = stream.info
        if info.width and info.height and info.width * info.height > MAX_SOURCE_PIXELS:
            await exchange.error(409, f"{key}'s picture ({info.width}x{info.height}) is too large for thumbnails")
            return
        if key not in thumbnails:
            thumbnails.prune(engine.has_stream)
        try:
            starting = trio.current_time() - stream.created_at < _STARTING
            picture = await thumbnails.live(key, stream.gop, width, starting=starting)
        except NoPicture as exc:
            await _refuse(exchange, exc)
            return
        await _send(exchange, picture, 1)

    async def serve_recorded(request: HttpRequest, exchange: Responder) -> None:
        width = parse_width(request.query)
        moment = parse_moment(request.query.get("at"))
        key = await _authorized(request, exchange)
        if key is None:
            return
        catalog = _catalog(exchange.engine)
        if catalog is None:
            await exchange.error(404, "this server does not record (--record)")
            return
        try:
            segments = await catalog.segments(key, moment - _GROWING, moment + _EPSILON)
            covering = [
                s for s in segments if s.start - _EPSILON <= moment <= s.end + (_SLACK if s.final else _GROWING)
            ]
            segment = max(covering, key=lambda s: s.start) if covering else None
            path = catalog.path(key, segment.file) if segment is not None else None
        except StorageError as exc:  # the index or directory cannot be read, a bad segment name
            log.warning("playback.jpg of %s: %s", key, printable(str(exc), 200))
            await exchange.error(503, "the recordings cannot be read now", headers=[("retry-after", "1")])
            return
        if segment is None or path is None:
            when = datetime.datetime.fromtimestamp(moment, datetime.UTC).isoformat().replace("+00:00", "Z")
            await exchange.error(404, f"nothing of {key} is recorded at {when}")
            return
        try:
            picture = await thumbnails.recorded(path, moment - segment.start, width)
        except NoPicture as exc:
            await _refuse(exchange, exc)
            return
        await _send(exchange, picture, 3600)

    router.add(LIVE_ROUTE, serve_live, first=True)
    router.add(RECORDED_ROUTE, serve_recorded, first=True)
