"""HLS over HTTP: playlists and segments served from the HLS service's storage.

``GET /{app}/{stream}/index.m3u8`` and ``GET /{app}/{stream}/{segment}.ts``. Packaging happens
once per stream in :class:`~arcly_trio.services.HlsService`; these routes only read its
storage, so any number of viewers costs one storage read per request.

Errors: ``404`` with a message when the application is unknown, has no HLS, or the stream has
no playlist (not published, or its first segment is not complete yet) or no such segment;
segment names other than ``<letters, digits, '-', '_'>.ts`` are refused with ``404`` and
storage keys are checked again by the storage (``..`` and the like never reach it: the router
refuses them with ``400``).
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

from ...core.errors import AppNotFound
from ...storage import InvalidStorageKey, StorageError, StorageNotFound
from ...protocols.http.router import HttpRequest
from .server import Exchange

if TYPE_CHECKING:
    from .server import HttpServer

__all__ = ["install"]

log = logging.getLogger("arcly_trio.http")

_SEGMENT = re.compile(r"[A-Za-z0-9_-]{1,128}\.ts")


def install(server: HttpServer) -> None:
    server.router.get("/{app}/{stream}/index.m3u8", serve_playlist)
    server.router.get("/{app}/{stream}/{segment}", serve_segment)


async def _check_app(request: HttpRequest, exchange: Exchange) -> bool:
    app_name = request.params["app"]
    hls = exchange.server.hls
    try:
        app = exchange.engine.application(app_name)
    except AppNotFound as exc:
        await exchange.error(404, str(exc))
        return False
    if hls is None or not hls.applies_to(app.spec):
        await exchange.error(404, f"HLS is not enabled for application {app_name!r}")
        return False
    return True


async def _serve(exchange: Exchange, key: str, content_type: str, cache: str, missing: str) -> None:
    hls = exchange.server.hls
    assert hls is not None
    try:
        data = await hls.storage.get(key)
    except (StorageNotFound, InvalidStorageKey):
        await exchange.error(404, missing)
        return
    except StorageError as exc:
        log.error("HLS storage failed to read %s: %s", key, exc)
        await exchange.error(500, "storage error")
        return
    await exchange.respond(200, data, content_type=content_type, headers=[("cache-control", cache)])


async def serve_playlist(request: HttpRequest, exchange: Exchange) -> None:
    if not await _check_app(request, exchange):
        return
    app, stream = request.params["app"], request.params["stream"]
    await _serve(
        exchange,
        f"{app}/{stream}/index.m3u8",
        "application/vnd.apple.mpegurl",
        "no-cache",
        f"no HLS playlist for {app}/{stream}: not published, or its first segment is not ready yet",
    )


async def serve_segment(request: HttpRequest, exchange: Exchange) -> None:
    if not await _check_app(request, exchange):
        return
    app, stream, segment = request.params["app"], request.params["stream"], request.params["segment"]
    if not _SEGMENT.fullmatch(segment):
        await exchange.error(404, f"not found: {request.path}")
        return
    await _serve(
        exchange,
        f"{app}/{stream}/{segment}",
        "video/mp2t",
        "max-age=60",
        f"no HLS segment {segment} for {app}/{stream} (expired, or never made)",
    )
