"""The browser pages: status ``/``, player ``/watch/{app}/{stream}``, publisher ``/publish/{app}/{stream}``.

Plain HTML, JavaScript and CSS from the package data folder ``pages/`` (no library, no build
step, nothing loaded from elsewhere), read once when the routes are installed and served from
memory:

* ``GET /``: ``index.html``, the status page (it polls ``/api/streams``).
* ``GET /watch/{app}/{stream}``: ``watch.html``, WebCodecs player on ``/{app}/{stream}/frames``.
* ``GET /publish/{app}/{stream}``: ``publish.html``, camera (or test pattern) publisher on
  ``/{app}/{stream}/ingest``.
* ``GET /pages/{name}``: the pages' scripts and style sheet.
* ``GET /api/server``: what the pages cannot guess from their own URL, as JSON:
  ``{"server": "arcly-trio", "rtmp_port": 1935, "hls": false, "frames_protocol":
  "arcly.frames.v1"}``. ``rtmp_port`` is :attr:`HttpServer.rtmp_port` (``null`` when unknown:
  the CLI sets it, embedders may), so the status page can show ``rtmp://`` URLs.

The pages take the stream from their own path and the server from ``?server=`` (default: the
origin they came from), so a copy served elsewhere can point at any server it can reach; every
response carries CORS headers. Pages are never built from request data (the stream name is read
by the page's script), so nothing a client sends is reflected into HTML.

Error policy: an unknown asset name is a ``404``; names are matched against the files that
exist, never joined to a path.
"""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING

from ...protocols.frames.messages import SUBPROTOCOL
from ...protocols.http.router import HttpRequest
from .exchange import Exchange

if TYPE_CHECKING:
    from .server import HttpServer

__all__ = ["PAGE_FILES", "install"]

PAGE_FILES = ("index.html", "watch.html", "publish.html", "common.js", "index.js", "watch.js", "publish.js",
              "style.css")
_TYPES = {"html": "text/html; charset=utf-8", "js": "text/javascript; charset=utf-8", "css": "text/css; charset=utf-8"}
_HEADERS = [
    ("cache-control", "no-cache"),
    ("x-content-type-options", "nosniff"),
    ("content-security-policy",
     "default-src 'self'; connect-src * ws: wss:; img-src 'self' data: blob:; media-src 'self' blob:; "
     "object-src 'none'; base-uri 'none'; frame-ancestors *"),
]


def _load() -> dict[str, bytes]:
    folder = resources.files(__package__).joinpath("pages")
    return {name: folder.joinpath(name).read_bytes() for name in PAGE_FILES}


def install(server: HttpServer) -> None:
    pages = _load()

    async def send(exchange: Exchange, name: str) -> None:
        await exchange.respond(200, pages[name], content_type=_TYPES[name.rsplit(".", 1)[1]], headers=_HEADERS)

    async def serve_index(request: HttpRequest, exchange: Exchange) -> None:
        await send(exchange, "index.html")

    async def serve_watch(request: HttpRequest, exchange: Exchange) -> None:
        await send(exchange, "watch.html")

    async def serve_publish(request: HttpRequest, exchange: Exchange) -> None:
        await send(exchange, "publish.html")

    async def serve_asset(request: HttpRequest, exchange: Exchange) -> None:
        name = request.params["name"]
        if name not in pages or name.endswith(".html"):
            await exchange.error(404, f"no page asset {name[:80]!r}")
            return
        await send(exchange, name)

    async def serve_server_info(request: HttpRequest, exchange: Exchange) -> None:
        await exchange.json(200, {
            "server": "arcly-trio",
            "rtmp_port": server.rtmp_port,
            "hls": any(service.name == "hls" for service in exchange.engine.services),
            "frames_protocol": SUBPROTOCOL,
        })

    server.router.get("/", serve_index)
    server.router.get("/watch/{app}/{stream}", serve_watch)
    server.router.get("/publish/{app}/{stream}", serve_publish)
    server.router.get("/pages/{name}", serve_asset)
    server.router.get("/api/server", serve_server_info)
