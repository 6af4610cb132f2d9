"""HLS over HTTP: the playlists and segments the HLS service has stored, behind authorization.

``GET /{app}/{stream}/index.m3u8`` and ``GET /{app}/{stream}/{segment}.ts``, installed on the HTTP
worker's router by :meth:`~arcly_trio.services.hls.HlsService.install_routes`. Packaging happens
once per stream in the service; these routes only read its storage, so any number of viewers
costs one storage read per request.

Authorization: every request (playlist and segment) is a play of the stream for the engine's
authenticator (``engine.authorize("play", ...)``, protocol ``"hls"``, with the request's
``?token=`` and query), like every other egress. So that players keep presenting their
credentials, the playlist is served with the request's query appended to every segment URI.

On demand: when the engine has stream sources (a pull relay, a cluster), a playlist request
for a stream that is not here asks them for it once authorized (``engine.locate``), so HLS
viewers start pulls like other viewers do, and keep them alive while they poll the playlist.

Errors: ``404`` with a message when the application is unknown, has no HLS, or the stream has no
playlist (not published, or its first segment is not complete yet) or no such segment; ``403``
for a refused play; segment names other than ``<letters, digits, '-', '_'>.ts`` are refused with
``404``, and storage keys are checked again by the storage.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from ..core.errors import AppNotFound, InvalidStreamName, StreamError, Unauthorized
from ..core.keys import StreamKey
from ..protocols.http.router import HttpRequest, Responder, Router
from ..storage import InvalidStorageKey, StorageError, StorageNotFound

if TYPE_CHECKING:
    from .hls import HlsService

__all__ = ["install"]

log = logging.getLogger("arcly_trio.http")

_SEGMENT = re.compile(r"[A-Za-z0-9_-]{1,128}\.ts")
PROTOCOL = "hls"


def install(service: HlsService, router: Router) -> None:
    async def playlist(request: HttpRequest, exchange: Responder) -> None:
        await serve_playlist(service, request, exchange)

    async def segment(request: HttpRequest, exchange: Responder) -> None:
        await serve_segment(service, request, exchange)

    router.get("/{app}/{stream}/index.m3u8", playlist)
    router.get("/{app}/{stream}/{segment}", segment)


async def _allowed(service: HlsService, request: HttpRequest, exchange: Responder) -> StreamKey | None:
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
        await exchange.engine.authorize("play", key, request.credentials(PROTOCOL))
    except Unauthorized as exc:
        await exchange.error(403, str(exc))
        return None
    return key


async def _read(service: HlsService, exchange: Responder, key: str, missing: str) -> bytes | None:
    try:
        return await service.storage.get(key)
    except (StorageNotFound, InvalidStorageKey):
        await exchange.error(404, missing)
    except StorageError as exc:
        log.error("HLS storage failed to read %s: %s", key, exc)
        await exchange.error(500, "storage error")
    return None


def _with_query(playlist: bytes, query: str) -> bytes:
    """Every URI line of ``playlist`` with ``?query`` appended (comments and tags untouched)."""
    suffix = b"?" + query.encode()
    return b"\n".join(line + suffix if line and not line.startswith(b"#") else line
                      for line in playlist.split(b"\n"))


async def serve_playlist(service: HlsService, request: HttpRequest, exchange: Responder) -> None:
    key = await _allowed(service, request, exchange)
    if key is None:
        return
    engine = exchange.engine
    if service.locate and engine.sources:
        try:  # a stream published elsewhere is pulled here on demand (each request keeps it)
            await engine.locate(key)
        except StreamError:
            pass
    data = await _read(service, exchange, service.playlist_key(key.app, key.name),
                       f"no HLS playlist for {key}: not published, or its first segment is not ready yet")
    if data is None:
        return
    if request.query:
        data = _with_query(data, urlencode(dict(request.query)))
    await exchange.respond(200, data, content_type="application/vnd.apple.mpegurl",
                           headers=[("cache-control", "no-cache")])


async def serve_segment(service: HlsService, request: HttpRequest, exchange: Responder) -> None:
    segment = request.params["segment"]
    if not _SEGMENT.fullmatch(segment):
        await exchange.error(404, f"not found: {request.path}")
        return
    key = await _allowed(service, request, exchange)
    if key is None:
        return
    data = await _read(service, exchange, service.segment_key(key.app, key.name, segment),
                       f"no HLS segment {segment} for {key} (expired, or never made)")
    if data is not None:
        await exchange.respond(200, data, content_type="video/mp2t", headers=[("cache-control", "max-age=60")])
