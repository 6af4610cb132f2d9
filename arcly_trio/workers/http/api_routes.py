"""The JSON API: ``GET /api/streams`` (every application and stream), ``GET /api/health``,
``GET /api/sessions`` and ``DELETE /api/sessions/{id}``.

``/api/streams``::

    {"apps": [{"name": "live", "services": ["hls"], "hls": true, "record": false, "streams": [
        {"name": "demo", "key": "live/demo", "publishing": true,
         "publisher": {"protocol": "rtmp", "address": "127.0.0.1", "port": 50412,
                       "started_at": 1714564800.0},
         "video": {"codec": "h264", "width": 640, "height": 360, "framerate": 30.0,
                   "fps": 30.0, "bitrate": 812000.0, "frames": 300},
         "audio": {"codec": "aac", "sample_rate": 44100, "channels": 2, "fps": 43.0,
                   "bitrate": 128000.0, "frames": 430},
         "subscribers": {"total": 3, "by_protocol": {"http-flv": 2, "hls": 1}},
         "drops": 0, "bytes": 1234567, "uptime": 12.5,
         "flv": "/live/demo.flv", "frames": "/live/demo/frames",
         "hls": "/live/demo/index.m3u8"}]}],
     "streams": 1, "publishers": 1}

``subscribers`` counts players: subscribers, and the sessions of HLS and DASH players (one per
player, from its first playlist or MPD until it has made no request for a few target durations:
see :mod:`arcly_trio.kernel.polled`), per protocol (the stream services' own subscriptions, HLS
packaging, recording, pushes, are not viewers). ``fps`` and ``bitrate`` are measured over the last second (frames
and bits per second);
``uptime`` is in seconds; ``codec_string``, ``width``, ``height``, ``framerate``,
``sample_rate`` and ``channels`` are derived by the kernel from what any publisher sends (codec
configs and VP9 keyframes, timestamps: ``framerate`` is measured over them and reported as the
common rate it matches, 30 or 29.97, metadata; ``null`` when nothing says); ``video``/``audio``
are ``null`` for a track not seen. The per-stream paths come from the egress routes and from every stream service
that applies to the application and from the stream sources (``stream_urls``: ``hls``...;
``dash`` for the CMAF variants; ``stream_status``: ``hls_tracks`` says what the HLS variant
carries and what it leaves out, ``by_variant`` what each variant would, and ``unavailable`` why
a stream has no HLS at all (then it has no ``hls`` and ``dash`` paths); ``push`` the state of
each push target, ``pull`` where a pulled stream comes from; lists that several services give
under one field are joined). Services and sources with ``health_status()`` add fields to
``/api/health`` (``cluster``...), and observers' and the authenticator's too (``audit``,
``event_hook``). ``/api/health`` runs the engine's named health checks (see
:mod:`arcly_trio.kernel.health`) and lists them under ``checks`` (``name``, ``ok``,
``critical``, ``detail``); it answers ``200`` ``{"status": "ok", ...}`` while the engine runs
and every critical check passes, ``503`` ``{"status": "failing"}`` when one fails and ``503``
``{"status": "stopping"}`` during a graceful shutdown.

``/api/sessions`` lists every client's publish and play (see
:mod:`arcly_trio.kernel.sessions`)::

    {"sessions": [{"id": "kq3Fz0bN8hXcV1aE", "role": "play", "protocol": "http-flv", "address": "127.0.0.1",
                   "port": 50414, "app": "live", "stream": "demo", "key": "live/demo",
                   "bytes": 1234567, "started_at": 1714564800.0}], "count": 1}

(HLS and DASH players' sessions too, protocol ``hls`` or ``dash``) and ``DELETE
/api/sessions/{id}`` kicks one: ``200`` with the session it ended, ``404`` if there is none of
that id. The kick's log line, audit record and event say who asked: ``api-token holder at
ADDRESS`` (a request that presented the API token), ``local operator at ADDRESS`` (a local
request to a server without one), or, for a kick another worker of ``--workers`` passed on, what
that worker said.

Who may ask (see :mod:`.access`): ``/api/streams`` is a *protected* route: when the HTTP worker
has an API token (``HttpServer(api_token=...)``, ``--api-token``) it needs it (as ``/metrics``
does); without one it is open, but the publishers' addresses and ports are ``null`` unless the
request comes from the server's own machine. ``/api/sessions`` and the kick are *admin* routes:
they need the token, and without one they answer only local requests (others get ``403``
saying how to set ``--api-token``). ``/api/health`` and ``/api/server`` are open. No answer of
the API carries CORS headers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from arcly_trio.core.keys import StreamKey
from arcly_trio.core.text import printable
from arcly_trio.kernel.application import Application
from arcly_trio.kernel.health import HealthReporter
from arcly_trio.kernel.stream import Stream
from arcly_trio.protocols.http.router import HttpRequest, Router
from arcly_trio.workers.http.exchange import Exchange, ExchangeHost
from arcly_trio.workers.listen import LOCAL_PEER

if TYPE_CHECKING:
    from arcly_trio.kernel.engine import Engine

__all__ = [
    "install",
    "streams_document",
    "stream_document",
    "health_document",
    "health_report",
    "sessions_document",
    "without_client_addresses",
    "kicked_by",
    "KICKED_BY_HEADER",
]

KICKED_BY_HEADER = "x-arcly-kicked-by"
"""Who asked for a kick that another worker passes on (trusted only over the workers' sockets)."""


@runtime_checkable
class StreamUrls(Protocol):
    """A stream service's or source's optional hook: the paths it serves a stream at, for
    ``/api/streams`` (HLS: ``{"hls": ..., "dash": ...}``)."""

    def stream_urls(self, key: StreamKey) -> dict[str, Any]: ...


@runtime_checkable
class StreamStatus(Protocol):
    """A stream service's or source's optional hook: what it adds about a stream to
    ``/api/streams`` (a pull's link, HLS's status)."""

    def stream_status(self, key: StreamKey) -> dict[str, Any]: ...


@runtime_checkable
class SessionDetails(Protocol):
    """A protocol worker's optional hook: more about one of its client sessions for
    ``/api/sessions`` (WebRTC: RTT, loss, NACKs), by the session's client id; ``None`` if it is
    not one of its own."""

    def session_details(self, client_id: str) -> dict[str, Any] | None: ...


def install(router: Router) -> None:
    router.get("/api/health", serve_health)
    router.get("/api/streams", serve_streams, protected=True)
    router.get("/api/sessions", serve_sessions, admin=True)
    router.add("/api/sessions/{id}", serve_kick, methods=("DELETE",), admin=True)


def _number(value: float) -> float:
    return round(value, 3) if math.isfinite(value) else 0.0


def stream_document(
    stream: Stream,
    *,
    urls: dict[str, object] | None = None,
    services: frozenset[str] = frozenset(),
    polled: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """One stream as ``/api/streams`` shows it (``urls``: what the services add for it, their
    paths and their status: ``hls`` and ``hls_status``...; ``services``: the protocols of
    stream services' own subscriptions, which are not viewers; ``polled``: the sessions of
    players that poll it, per protocol)."""
    stats = stream.stats()
    viewers = {protocol: n for protocol, n in stats.subscribers_by_protocol.items() if protocol not in services}
    for protocol, n in (polled or {}).items():
        viewers[protocol] = viewers.get(protocol, 0) + n
    info = stats.info
    key = stats.key
    publisher: dict[str, Any] | None = None
    if stats.publishing:
        peer = info.peer
        address, port = (peer[0], peer[1]) if peer is not None and len(peer) >= 2 else (None, None)
        publisher = {
            "protocol": info.protocol or None,
            "address": address,
            "port": port,
            "started_at": info.started_at or None,
        }
    document: dict[str, Any] = {
        "name": key.name,
        "key": str(key),
        "publishing": stats.publishing,
        "publisher": publisher,
        "video": None,
        "audio": None,
        "subscribers": {"total": sum(viewers.values()), "by_protocol": viewers},
        "drops": stats.drops_total,
        "bytes": stats.bytes_total,
        "uptime": _number(stats.uptime),
        "flv": f"/{key.app}/{key.name}.flv",
        "frames": f"/{key.app}/{key.name}/frames",
        "hls": None,
        **(urls or {}),
    }
    if info.video_codec is not None or stats.video_frames_total:
        document["video"] = {
            "codec": info.video_codec,
            "codec_string": info.video_codec_string,
            "width": info.width,
            "height": info.height,
            "framerate": info.framerate,
            "fps": _number(stats.video_fps),
            "bitrate": _number(stats.video_bitrate),
            "frames": stats.video_frames_total,
        }
    if info.audio_codec is not None or stats.audio_frames_total:
        document["audio"] = {
            "codec": info.audio_codec,
            "codec_string": info.audio_codec_string,
            "sample_rate": info.audio_sample_rate,
            "channels": info.audio_channels,
            "fps": _number(stats.audio_fps),
            "bitrate": _number(stats.audio_bitrate),
            "frames": stats.audio_frames_total,
        }
    return document


def _merge(found: dict[str, object], more: dict[str, object]) -> None:
    """Add what one service says of a stream; lists under the same field are joined."""
    for field, value in more.items():
        if isinstance(value, list) and isinstance(found.get(field), list):
            found[field] = [*found[field], *value]  # type: ignore[misc]
        else:
            found[field] = value


def _app_document(app: Application, engine: Engine) -> dict[str, Any]:
    services = [service for service in engine.services if service.applies_to(app.spec)]
    plugins = [*services, *engine.sources]

    def urls(stream: Stream) -> dict[str, object]:
        found: dict[str, object] = {}
        for plugin in plugins:
            if isinstance(plugin, StreamUrls):
                _merge(found, plugin.stream_urls(stream.key))
            if isinstance(plugin, StreamStatus):
                _merge(found, plugin.stream_status(stream.key))
        return found

    names = list(dict.fromkeys(service.name for service in services))
    return {
        "name": app.name,
        "services": names,
        "hls": "hls" in names,
        "record": "record" in names,
        "streams": [
            stream_document(
                stream, urls=urls(stream), services=engine.service_names, polled=engine.polled.players(stream.key)
            )
            for stream in app.streams()
        ],
    }


def streams_document(engine: Engine, server: ExchangeHost | None = None) -> dict[str, Any]:
    """Every application and its streams (see the module docstring)."""
    apps = [_app_document(app, engine) for app in engine.applications()]
    return {
        "apps": apps,
        "streams": sum(len(app["streams"]) for app in apps),
        "publishers": engine.publisher_count,
    }


def health_document(engine: Engine, server: ExchangeHost | None = None) -> dict[str, Any]:
    document: dict[str, Any] = {
        "status": "stopping" if engine.stopping else "ok",
        "applications": len(engine.applications()),
        "streams": len(engine.streams()),
        "publishers": engine.publisher_count,
        "loop": {
            "lag_ms": round(engine.loop_watch.recent(seconds=10) * 1000, 1),
            "worst_ms": round(engine.loop_watch.worst * 1000, 1),
            "lag_ms_per_second": [round(lag * 1000, 1) for lag in engine.loop_watch.per_second()],
        },
    }
    if server is not None:
        document["http_connections"] = server.open_connections
    for plugin in engine.plugins:
        if isinstance(plugin, HealthReporter):
            document.update(plugin.health_status())
    return document


async def health_report(engine: Engine, server: ExchangeHost | None = None) -> tuple[int, dict[str, Any]]:
    """Run the engine's health checks: the status code and the ``/api/health`` document."""
    document = health_document(engine, server)
    checks = await engine.health.run()
    document["checks"] = [check.document() for check in checks]
    if not engine.stopping and not engine.health.healthy(checks):
        document["status"] = "failing"
    return (200 if document["status"] == "ok" else 503), document


async def serve_health(request: HttpRequest, exchange: Exchange) -> None:
    status, document = await health_report(exchange.engine, exchange.server)
    await exchange.json(status, document)


def sessions_document(engine: Engine) -> dict[str, Any]:
    """Every client session of this engine (see the module docstring)."""
    detailing = [worker for worker in engine.workers if isinstance(worker, SessionDetails)]
    sessions = []
    for session in engine.sessions:
        document = session.document()
        for worker in detailing:
            details = worker.session_details(session.id)
            if details is not None:
                document.update(details)
        sessions.append(document)
    return {"sessions": sessions, "count": len(sessions)}


async def serve_sessions(request: HttpRequest, exchange: Exchange) -> None:
    await exchange.json(200, sessions_document(exchange.engine))


def kicked_by(request: HttpRequest, api_token: str | None) -> str:
    """Who asks for a kick (see the module docstring): the admin routes answered only the API
    token's holders (with a token) or local requests (without one)."""
    peer = request.peer
    if peer == LOCAL_PEER:
        passed_on = request.header(KICKED_BY_HEADER)
        return printable(passed_on, 200) if passed_on else "another worker"
    address = peer[0] if peer is not None else "?"
    return f"{'api-token holder' if api_token is not None else 'local operator'} at {address}"


async def serve_kick(request: HttpRequest, exchange: Exchange) -> None:
    session = exchange.engine.kick(request.params["id"], by=kicked_by(request, exchange.server.api_token))
    if session is None:
        await exchange.json(404, {"error": f"no session {request.params['id'][:64]!r}"})
        return
    await exchange.json(200, {"kicked": session.document()})


def without_client_addresses(document: dict[str, Any]) -> dict[str, Any]:
    """A ``/api/streams`` document with every publisher's address and port set to ``null``
    (for a request that may not see who the clients are, see :mod:`.access`); changed in place."""
    for app in document.get("apps", []):
        for stream in app.get("streams", []):
            publisher = stream.get("publisher")
            if isinstance(publisher, dict):
                publisher["address"] = publisher["port"] = None
    return document


async def serve_streams(request: HttpRequest, exchange: Exchange) -> None:
    document = streams_document(exchange.engine, exchange.server)
    if not exchange.server.privileged(request):
        without_client_addresses(document)
    await exchange.json(200, document)
