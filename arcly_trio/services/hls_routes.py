"""HLS and DASH over HTTP: what the HLS service stored, behind authorization, with blocking reloads.

Installed on the HTTP worker's router by :meth:`~arcly_trio.services.hls.HlsService.install_routes`:

* ``GET /{app}/{stream}/index.m3u8``: the entry playlist (the MPEG-TS media playlist, or the
  multivariant playlist of the ``fmp4`` and ``ll`` variants);
* ``GET /{app}/{stream}/video.m3u8`` and ``audio.m3u8``: the CMAF media playlists;
* ``GET /{app}/{stream}/index.mpd``: the DASH MPD of the CMAF variants (the same segments);
* ``GET /{app}/{stream}/{name}``: segments (``.ts``, ``.m4s``), parts (``.m4s``) and init
  segments (``.mp4``); the MPD may name a rendition's segments with offset numbers
  (``{prefix}a3-12.m4s`` is ``{prefix}a-15.m4s``, see :func:`arcly_trio.media.dash.resolve`).

Packaging happens once per stream in the service; these routes only read its storage (and, for
blocking requests, its in-memory model), so any number of viewers costs one storage read per
request.

Blocking playlist reload (``ll`` variant, RFC 8216bis 6.2.5.2): a media playlist request with
``_HLS_msn`` (and ``_HLS_part``) is answered once the playlist holds that segment (or part), or
at once when it does already or the stream ended; it waits on the stream's one condition
(:class:`~arcly_trio.services._hls_cmaf.LiveCmaf`), with no task of its own, and answers ``503``
after three target durations without it. A request more than two segments, or more parts than the
Advance Part Limit, ahead gets ``400`` at once, as do malformed directives and ``_HLS_part``
without ``_HLS_msn``. A request for the part an ``EXT-X-PRELOAD-HINT`` names waits for it the
same way (``404`` if it does not come within three part targets), and so does a request for a
CMAF segment that is being written or comes next (DASH players ask for the segment after the last
one the MPD lists as soon as they have read it; ffmpeg skips to the next number on a ``404``):
it is answered once the segment is complete (``404`` if it does not come within three target
durations; further ahead, ``404`` at once). A waiting request is a request
being served: it holds a busy connection slot (the HTTP worker's admission) and counts in the
engine's ``activity``, so connection limits and graceful shutdown see it; when the stream ends
every waiter is answered with the final playlist.

Authorization: every request is a play of the stream for the engine's authenticator
(``engine.authorize("play", ...)``, protocol ``"hls"`` or ``"dash"``, with the request's
``?token=`` and query), like every other egress. So that players keep presenting their
credentials, playlists and MPDs are served with the request's query (less the ``_HLS_``
directives) appended to every URI they name.

On demand: when the engine has stream sources (a pull relay, a cluster), a playlist request
for a stream that is not here asks them for it once authorized (``engine.locate``), so HLS
viewers start pulls like other viewers do, and keep them alive while they poll the playlist.

A rename by the authenticator (an HTTP hook's redirect) serves the stream it names: the
playlist's relative URIs keep naming the requested path, and each of their requests is renamed
the same way.

Errors: ``404`` with a message when the application is unknown, has no HLS, or the stream has no
such playlist, MPD or segment (saying why when the stream is live but its application's variant
can carry none of its tracks: AV1 or VP9 with Opus in MPEG-TS...); ``403`` for a refused play
(``401`` when the client presented no credential at all); names other than
``<letters, digits, '-', '_'>[.<part>].(ts|m4s|mp4)`` are refused with ``404``, and storage
keys are checked again by the storage.
"""

from __future__ import annotations

import logging
import math
import re
import time
from typing import TYPE_CHECKING
from urllib.parse import urlencode

import trio

from ..core.errors import AppNotFound, InvalidStreamName, RemoteProtocolError, StreamError, Unauthorized
from ..core.frame import FrameKind
from ..core.keys import StreamKey
from ..media import dash, llhls
from ..protocols.http.router import HttpRequest, Responder, Router
from ..storage import InvalidStorageKey, StorageError, StorageNotFound

if TYPE_CHECKING:
    from ._hls_cmaf import LiveCmaf
    from .hls import HlsService

__all__ = ["install"]

log = logging.getLogger("arcly_trio.http")

_SEGMENT = re.compile(r"[A-Za-z0-9_-]{1,128}(?:\.[0-9]{1,6})?\.(ts|m4s|mp4)")
_CONTENT_TYPES = {"ts": "video/mp2t", "m4s": "video/iso.segment", "mp4": "video/mp4"}
_RENDITIONS = {"video.m3u8": FrameKind.VIDEO, "audio.m3u8": FrameKind.AUDIO}
_URI_ATTRIBUTE = re.compile(rb'URI="([^"]*)"')
PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
PROTOCOL = "hls"


def install(service: HlsService, router: Router) -> None:
    async def entry(request: HttpRequest, exchange: Responder) -> None:
        await serve_playlist(service, request, exchange, "index.m3u8")

    async def video(request: HttpRequest, exchange: Responder) -> None:
        await serve_playlist(service, request, exchange, "video.m3u8")

    async def audio(request: HttpRequest, exchange: Responder) -> None:
        await serve_playlist(service, request, exchange, "audio.m3u8")

    async def mpd(request: HttpRequest, exchange: Responder) -> None:
        await serve_mpd(service, request, exchange)

    async def segment(request: HttpRequest, exchange: Responder) -> None:
        await serve_segment(service, request, exchange)

    router.get("/{app}/{stream}/index.m3u8", entry)
    router.get("/{app}/{stream}/video.m3u8", video)
    router.get("/{app}/{stream}/audio.m3u8", audio)
    router.get("/{app}/{stream}/index.mpd", mpd)
    router.get("/{app}/{stream}/{segment}", segment)


async def _allowed(service: HlsService, request: HttpRequest, exchange: Responder,
                   protocol: str = PROTOCOL) -> StreamKey | None:  # fmt: skip
    """The stream's key if HLS serves it to this client; otherwise answered and ``None``."""
    try:
        key = StreamKey(request.params["app"], request.params["stream"])
        app = exchange.engine.application(key.app)
    except (AppNotFound, InvalidStreamName) as exc:
        await exchange.error(404, str(exc))
        return None
    if not service.applies_to(app.spec):
        await exchange.error(404, f"HLS is not enabled for application {key.app!r}")
        return None
    try:
        renamed = await exchange.engine.authorize("play", key, request.credentials(protocol))
    except Unauthorized as exc:
        await exchange.error(exc.http_status, str(exc))
        return None
    if renamed.app != key.app:
        try:
            enabled = service.applies_to(exchange.engine.application(renamed.app).spec)
        except AppNotFound as exc:
            await exchange.error(404, str(exc))
            return None
        if not enabled:
            await exchange.error(404, f"HLS is not enabled for application {renamed.app!r}")
            return None
    return renamed


async def _read(service: HlsService, exchange: Responder | None, key: str, missing: str) -> bytes | None:
    """The stored object, or ``None`` (answered with ``404``/``500`` when ``exchange`` is given)."""
    try:
        return await service.storage.get(key)
    except (StorageNotFound, InvalidStorageKey):
        if exchange is not None:
            await exchange.error(404, missing)
    except StorageError as exc:
        log.error("HLS storage failed to read %s: %s", key, exc)
        if exchange is not None:
            await exchange.error(500, "storage error")
    return None


def _carried_query(request: HttpRequest) -> str:
    """The request's query to hand on to the URIs it names (without delivery directives)."""
    return urlencode({k: v for k, v in request.query.items() if not k.startswith("_HLS_")})


def _with_query(playlist: bytes, query: str) -> bytes:
    """Every URI of ``playlist`` (URI lines and ``URI="..."`` attributes) with ``?query``."""
    suffix = b"?" + query.encode()
    lines = []
    for line in playlist.split(b"\n"):
        if line.startswith(b"#"):
            line = _URI_ATTRIBUTE.sub(lambda m: b'URI="' + m.group(1) + suffix + b'"', line)
        elif line:
            line += suffix
        lines.append(line)
    return b"\n".join(lines)


async def serve_playlist(service: HlsService, request: HttpRequest, exchange: Responder, name: str) -> None:
    key = await _allowed(service, request, exchange)
    if key is None:
        return
    engine = exchange.engine
    if service.locate and engine.sources:
        try:  # a stream published elsewhere is pulled here on demand (each request keeps it)
            await engine.locate(key)
        except StreamError:
            pass
    kind = _RENDITIONS.get(name)
    if kind is not None:
        try:
            directives = llhls.parse_directives(request.query)
        except RemoteProtocolError as exc:
            await exchange.error(400, str(exc))
            return
        live = service.live.get(f"{key.app}/{key.name}")
        if directives is not None and live is not None and live.low_latency:
            if not await _block(service, live, kind, *directives, exchange):
                return
    reason = service.unavailable(key)
    missing = (f"no HLS for {key}: {reason}" if reason is not None else
               f"no HLS playlist for {key} ({name}): not published, or nothing is ready yet")
    data = await _read(service, exchange, service.playlist_key(key.app, key.name, name), missing)
    if data is None:
        return
    query = _carried_query(request)
    if query:
        data = _with_query(data, query)
    _served(exchange, PROTOCOL, data)
    await exchange.respond(200, data, content_type=PLAYLIST_TYPE, headers=[("cache-control", "no-cache")])


def _block_timeout(service: HlsService, live: LiveCmaf) -> float:
    return 3 * max(live.packager.playlist_target_duration, service.target_duration)


async def _block(service: HlsService, live: LiveCmaf, kind: FrameKind, msn: int, part: int | None,
                 exchange: Responder) -> bool:  # fmt: skip
    """Hold a blocking reload until the playlist can answer it; ``False`` once answered with
    an error."""
    deadline = trio.current_time() + _block_timeout(service, live)
    while True:
        state = llhls.reload_state(live.packager, kind, msn, part)
        if state is llhls.ReloadState.READY and live.current:
            return True
        elif state is llhls.ReloadState.TOO_FAR:
            await exchange.error(400, f"_HLS_msn={msn} _HLS_part={part} is too far ahead of the live edge")
            return False
        if not await live.wait(deadline):
            if live.ended:
                return True
            await exchange.error(503, "the requested segment or part did not come in time", headers=[("retry-after", "1")])
            return False


async def serve_mpd(service: HlsService, request: HttpRequest, exchange: Responder) -> None:
    key = await _allowed(service, request, exchange, "dash")
    if key is None:
        return
    reason = service.unavailable(key)
    missing = (f"no DASH for {key}: {reason}" if reason is not None else
               f"no DASH MPD for {key}: not published, not packaged as CMAF, or no segment is ready yet")
    data = await _read(service, exchange, service.playlist_key(key.app, key.name, "index.mpd"), missing)
    if data is None:
        return
    data = dash.finalize(data, time.time(), _carried_query(request))
    _served(exchange, "dash", data)
    await exchange.respond(200, data, content_type="application/dash+xml", headers=[("cache-control", "no-cache")])


async def serve_segment(service: HlsService, request: HttpRequest, exchange: Responder) -> None:
    segment = dash.resolve(request.params["segment"])  # a DASH name with offset numbers
    found = _SEGMENT.fullmatch(segment)
    if not found:
        await exchange.error(404, f"not found: {request.path}")
        return
    key = await _allowed(service, request, exchange)
    if key is None:
        return
    storage_key = service.segment_key(key.app, key.name, segment)
    missing = f"no HLS segment {segment} for {key} (expired, or never made)"
    live = service.live.get(f"{key.app}/{key.name}")
    if live is not None and _hinted(live, segment):
        # A preload-hinted part: answer as soon as it exists (RFC 8216bis 6.2.6).
        deadline = trio.current_time() + 3 * math.ceil(live.packager.part_duration * 1000) / 1000
        while _hinted(live, segment) and await live.wait(deadline):
            pass
    elif live is not None and _coming(live, segment):
        # The segment being written, or the next one: answer once it is complete (DASH players
        # such as ffmpeg's ask for the segment after the last listed one before it exists, and
        # skip ahead on a 404), within the blocking-reload bound.
        deadline = trio.current_time() + _block_timeout(service, live)
        while _coming(live, segment) and await live.wait(deadline):
            pass
    data = await _read(service, exchange, storage_key, missing)
    if data is not None:
        _served(exchange, PROTOCOL, data)
        await exchange.respond(200, data, content_type=_CONTENT_TYPES[found.group(1)],
                               headers=[("cache-control", "max-age=60")])  # fmt: skip


def _served(exchange: Responder, protocol: str, data: bytes) -> None:
    """Count what a request is answered with in the engine's egress bytes (metrics)."""
    exchange.engine.sessions.count("play", protocol, len(data))


_LETTERS = {"v": FrameKind.VIDEO, "a": FrameKind.AUDIO}
_CMAF_SEGMENT = re.compile(r"(?P<prefix>[A-Za-z0-9_-]*)(?P<letter>[va])-(?P<sequence>[0-9]{1,12})\.m4s")


def _coming(live: LiveCmaf, name: str) -> bool:
    """Whether ``name`` is a segment of the stream's packaging that does not exist yet but
    will soon: the one being written or the next (or the stored lists lag the packager)."""
    found = _CMAF_SEGMENT.fullmatch(name)
    packager = live.packager
    if found is None or found.group("prefix") != packager.name_prefix or live.ended:
        return False
    sequence = int(found.group("sequence"))
    if sequence > packager.next_sequence:
        return False  # further ahead than the next segment: 404 at once
    rendition = packager.renditions.get(_LETTERS[found.group("letter")])
    if rendition is not None and rendition.segments and rendition.segments[-1].sequence >= sequence:
        return not live.current  # complete: answer once its lists are stored
    upcoming = packager.open_sequence if packager.open_sequence is not None else packager.next_sequence
    return sequence >= upcoming


def _hinted(live: LiveCmaf, name: str) -> bool:
    """Whether ``name`` is a part the stored lists hint at (or the packager holds but has not
    stored yet)."""
    renditions = live.packager.renditions.values()
    return not live.current or any(rendition.hint == name for rendition in renditions)
