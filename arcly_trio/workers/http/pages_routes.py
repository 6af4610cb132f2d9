"""The browser pages: status ``/``, player ``/watch/{app}/{stream}``, publisher ``/publish/{app}/{stream}``.

Plain HTML, JavaScript and CSS from the package data folder ``pages/`` (no build step, nothing
loaded from elsewhere), read once when the routes are installed and served from memory:

* ``GET /``: ``index.html``, the status page (it polls ``/api/streams``).
* ``GET /watch/{app}/{stream}``: ``watch.html``, a WHEP player (``POST /{app}/{stream}/whep``,
  a ``<video>`` fed by an ``RTCPeerConnection``) when the server serves WebRTC, falling back to
  the WebCodecs player on ``/{app}/{stream}/frames``.
* ``GET /publish/{app}/{stream}``: ``publish.html``, camera (or test pattern) publisher over
  WHIP (``POST /{app}/{stream}/whip``) when the server serves WebRTC, falling back to
  ``/{app}/{stream}/ingest``.
* ``GET /pages/{name}``: the pages' scripts and style sheet (``Cache-Control: no-cache``).
* ``GET /pages/vendor/{name}``: the one library, hls.js (:data:`VENDOR_FILES`: the exact file of
  the npm package, its version in the name; ``pages/vendor/README.md`` has its sha256 and
  ``hls.js.LICENSE`` its license), which the watch page loads only when it plays HLS (the DVR
  scrub bar). Its URL changes with its version, so it is cached for a year (``immutable``).
  A client whose ``Accept-Encoding`` takes gzip gets the packaged ``NAME.gz`` (``gzip -9n`` of
  the file: 190 kB instead of 624 kB) with ``Content-Encoding: gzip``; nothing is compressed
  while serving.
* ``GET /api/server``: what the pages cannot guess from their own URL, as JSON:
  ``{"server": "arcly-trio", "rtmp_port": 1935, "hls": false, "frames_protocol":
  "arcly.frames.v1"}``. ``rtmp_port`` is :attr:`HttpServer.rtmp_port` (``null`` when unknown:
  the CLI sets it, embedders may), so the status page can show ``rtmp://`` URLs; ``srt_port``,
  ``rtsp_port`` and ``rtsps_port`` likewise (``null``: off), for its ``srt://``, ``rtsp://`` and
  ``rtsps://`` play URLs, and ``webrtc`` says whether WHEP/WHIP are served.

The pages take the stream from their own path and talk only to the origin they came from: there
is no ``?server=`` (a link must not be able to send a visitor's camera, or its API token, to
another server), and every page is served with a Content-Security-Policy whose ``connect-src`` is
``'self'`` and this host's ``ws://`` and ``wss://`` (:func:`content_security_policy`, built from
the request's ``Host`` header when it is a well-formed host name or address, else ``'self'``
alone), so even a modified copy of a script cannot connect elsewhere (WHEP and WHIP are
``fetch`` calls to this origin; the media then flows to the ICE candidates of the server's own
SDP answer). The publish page may not
be framed by another origin (``frame-ancestors 'self'``) and its ``?autostart=1`` only works
when it is not framed; the status and watch pages may be embedded anywhere. Pages are never
built from request data (the stream name is read by the page's script), so nothing a client
sends is reflected into HTML. The library is third-party code run by the pages under the same
policy (``script-src`` falls back to ``default-src 'self'``; hls.js runs without its ``blob:``
worker): it is pinned by name and sha256, never fetched from elsewhere, and a request can only
choose between the two fixed bodies (``Accept-Encoding`` is read up to its 64th item).

Error policy: an unknown asset name is a ``404``; names are matched against the files that
exist, never joined to a path. A page file missing from the package (a broken install) fails
:func:`install`, at start, not a request.
"""

from __future__ import annotations

import re
from importlib import resources

from arcly_trio.protocols.frames.messages import SUBPROTOCOL
from arcly_trio.protocols.http.router import HttpRequest, Router
from arcly_trio.workers.http.exchange import Exchange

__all__ = [
    "HLS_JS",
    "PAGE_FILES",
    "VENDOR_FILES",
    "WHEP_ROUTE",
    "accepts_gzip",
    "content_security_policy",
    "install",
    "serves_webrtc",
]

PAGE_FILES = (
    "index.html",
    "watch.html",
    "publish.html",
    "common.js",
    "index.js",
    "watch.js",
    "publish.js",
    "style.css",
)
HLS_JS = "hls-1.7.4.min.js"
"""hls.js (npm ``hls.js`` 1.7.4, ``dist/hls.min.js``), served at ``/pages/vendor/hls-1.7.4.min.js``."""
VENDOR_FILES = (HLS_JS,)
"""The libraries in ``pages/vendor/`` that are served (its README and license are not)."""
WHEP_ROUTE = "/{app}/{stream}/whep"
"""The route pattern of WHEP playback (the WebRTC worker's); its presence turns the pages to WebRTC."""
_TYPES = {"html": "text/html; charset=utf-8", "js": "text/javascript; charset=utf-8", "css": "text/css; charset=utf-8"}
_HEADERS = [
    ("cache-control", "no-cache"),
    ("x-content-type-options", "nosniff"),
]
_VENDOR_HEADERS = [
    ("cache-control", "public, max-age=31536000, immutable"),
    ("x-content-type-options", "nosniff"),
    ("vary", "accept-encoding"),
]
_FRAMEABLE = frozenset({"index.html", "watch.html"})
"""Pages another site may embed (a player); the publish page may be framed only by this origin."""
_HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?")


def content_security_policy(host: str | None, *, frameable: bool) -> str:
    """The pages' policy: everything from this origin only; connections to this origin and to
    ``ws://host`` and ``wss://host`` (``host``: the request's ``Host`` header, used only when
    it is a well-formed host name or address with an optional port: anything else, which could
    add a source or a directive, leaves ``'self'`` alone)."""
    connect = "'self'"
    if host is not None and _HOST.fullmatch(host):
        connect += f" ws://{host} wss://{host}"
    ancestors = "*" if frameable else "'self'"
    return (
        f"default-src 'self'; connect-src {connect}; img-src 'self' data: blob:; media-src 'self' blob:; "
        f"object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors {ancestors}"
    )


def serves_webrtc(router: Router) -> bool:
    """Whether ``router`` has the WHEP route (``POST /{app}/{stream}/whep``): the pages' cue to
    play over WHEP and publish over WHIP."""
    return any(route.pattern == WHEP_ROUTE and "POST" in route.methods for route in router.routes)


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether an ``Accept-Encoding`` value takes gzip (``gzip``, ``x-gzip`` or ``*`` with a
    weight other than ``q=0``; RFC 9110 12.5.3). An unreadable weight counts as ``q=1``."""
    for item in (accept_encoding or "").split(",")[:64]:
        coding, _, params = item.partition(";")
        if coding.strip().lower() not in ("gzip", "x-gzip", "*"):
            continue
        name, _, weight = params.partition("=")
        if name.strip().lower() != "q":
            return True
        try:
            return float(weight.strip()[:8]) > 0
        except ValueError:
            return True
    return False


def _load() -> tuple[dict[str, bytes], dict[str, tuple[bytes, bytes]]]:
    folder = resources.files(__package__).joinpath("pages")
    pages = {name: folder.joinpath(name).read_bytes() for name in PAGE_FILES}
    vendor = {
        name: (folder.joinpath("vendor", name).read_bytes(), folder.joinpath("vendor", name + ".gz").read_bytes())
        for name in VENDOR_FILES
    }
    return pages, vendor


def install(router: Router) -> None:
    pages, vendor = _load()

    async def send(request: HttpRequest, exchange: Exchange, name: str) -> None:
        policy = content_security_policy(request.header("host"), frameable=name in _FRAMEABLE)
        await exchange.respond(
            200,
            pages[name],
            content_type=_TYPES[name.rsplit(".", 1)[1]],
            headers=[*_HEADERS, ("content-security-policy", policy)],
        )

    async def serve_index(request: HttpRequest, exchange: Exchange) -> None:
        await send(request, exchange, "index.html")

    async def serve_watch(request: HttpRequest, exchange: Exchange) -> None:
        await send(request, exchange, "watch.html")

    async def serve_publish(request: HttpRequest, exchange: Exchange) -> None:
        await send(request, exchange, "publish.html")

    async def serve_asset(request: HttpRequest, exchange: Exchange) -> None:
        name = request.params["name"]
        if name not in pages or name.endswith(".html"):
            await exchange.error(404, f"no page asset {name[:80]!r}")
            return
        await send(request, exchange, name)

    async def serve_vendor(request: HttpRequest, exchange: Exchange) -> None:
        name = request.params["name"]
        if name not in vendor:
            await exchange.error(404, f"no page library {name[:80]!r}")
            return
        plain, gzipped = vendor[name]
        if accepts_gzip(request.header("accept-encoding")):
            headers = [*_VENDOR_HEADERS, ("content-encoding", "gzip")]
            await exchange.respond(200, gzipped, content_type=_TYPES["js"], headers=headers)
        else:
            await exchange.respond(200, plain, content_type=_TYPES["js"], headers=_VENDOR_HEADERS)

    async def serve_server_info(request: HttpRequest, exchange: Exchange) -> None:
        await exchange.json(
            200,
            {
                "server": "arcly-trio",
                "rtmp_port": exchange.server.rtmp_port,
                "hls": any(service.name == "hls" for service in exchange.engine.services),
                "frames_protocol": SUBPROTOCOL,
                "webrtc": serves_webrtc(router),
                "srt_port": exchange.server.srt_port,
                "rtsp_port": exchange.server.rtsp_port,
                "rtsps_port": exchange.server.rtsps_port,
            },
        )

    router.get("/", serve_index)
    router.get("/watch/{app}/{stream}", serve_watch)
    router.get("/publish/{app}/{stream}", serve_publish)
    router.get("/pages/{name}", serve_asset)
    router.get("/pages/vendor/{name}", serve_vendor)
    router.get("/api/server", serve_server_info)
