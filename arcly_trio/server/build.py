"""What ``arcly-trio serve`` runs, built from its resolved options, and how a reload changes it.

:func:`build_runtime` turns the options (command line over configuration file over defaults,
see :mod:`.config`), made once into a typed :class:`~.settings.Settings` with its secrets read,
into a :class:`Runtime`: the engine with its applications, the protocol
workers (RTMP, RTMPS, HTTP, HTTPS), the stream services and sources, the authenticator (tokens,
signed URLs, HTTP hooks, per application, inside a :class:`~arcly_trio.ops.Swappable`) and the
observers (Prometheus metrics, the audit log, the ``on_event`` hook, and the audio bridge:
:class:`~arcly_trio.services.audio_bridge.AudioBridge`, idle until someone asks it for Opus).

:func:`reload_runtime` applies a new set of options to a running :class:`Runtime` (SIGHUP):

* the authenticator is rebuilt and swapped (tokens, signed URLs, hooks, per-application auth)
  first, before any application is added or removed, so a new application never runs for a
  moment under the old authorization;
* then applications added are started, removed ones stopped (their streams end), and the
  settings of those that stay apply to their new streams; no stream of an application that
  stays is touched;
* the ``on_event`` URL, the API token, ``--metrics-per-stream``, the idle timeout, the
  publish start timeout, the publisher limits (in all and per address) and the refusal delay
  are applied;
* the TLS certificate and key are read again (:func:`reload_tls`, also on a SIGHUP without a
  configuration file: a renewed certificate needs no restart); new RTMPS and HTTPS connections
  use them, open ones keep theirs; files that do not load keep the running certificate, with
  an error line;
* anything else that changed (ports, HLS packaging, recording, relays, workers...) is
  logged as needing a restart.

It returns the list of what changed, for the log and the audit record.

Error policy: a setting that cannot be used (a TLS file that cannot be read, a bad hook URL, a
bad application name) raises ``SystemExit`` with a message from :func:`build_runtime`, and
``ValueError`` from :func:`reload_runtime` (the running configuration is then kept); TLS files
that do not load on a reload keep the running certificate (an error line), the rest applies.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import socket
import ssl
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs
import httpx

from arcly_trio.cluster import ClusterDirectory, ClusterNode, LocalDirectory
from arcly_trio.core.errors import InvalidStreamName
from arcly_trio.core.keys import Credentials
from arcly_trio.kernel.auth import AllowAll, Authenticator, TokenAuthenticator
from arcly_trio.kernel.engine import Engine
from arcly_trio.kernel.spec import AppSpec
from arcly_trio.kernel.throttle import AuthThrottle
from arcly_trio.ops import (
    AllOf,
    AnyOf,
    AuditPipeline,
    ByApp,
    EventHook,
    ForActions,
    HttpHooks,
    JsonLinesFile,
    PrometheusObserver,
    SignedUrlAuthenticator,
    Swappable,
    TrustedPeers,
    storage_check,
)
from arcly_trio.protocols.webrtc.certificate import DtlsCertificate
from arcly_trio.relay import PullSource, PushService
from arcly_trio.relay.sources import StreamSources, parse_source
from arcly_trio.server.options import udp_range
from arcly_trio.server.settings import Settings, read_secret
from arcly_trio.services import HlsService
from arcly_trio.services.audio_bridge import AudioBridge
from arcly_trio.services.recordings import Recorder
from arcly_trio.services.stream_history import StreamHistory
from arcly_trio.services.thumbnails import Thumbnails
from arcly_trio.storage import FileStorage
from arcly_trio.workers.http import HttpServer
from arcly_trio.workers.listen import LOCAL_PEER
from arcly_trio.workers.rtmp import RtmpServer
from arcly_trio.workers.rtsp.server import RtspServer
from arcly_trio.workers.serving import Listener
from arcly_trio.workers.srt import SrtServer
from arcly_trio.workers.udpts import UdpTsIngest, parse_ingest_udp
from arcly_trio.workers.webrtc import WebRtcServer

__all__ = [
    "Runtime",
    "build_runtime",
    "reload_runtime",
    "reload_tls",
    "app_specs",
    "authenticator_for",
    "read_secret",
    "tls_context",
]

log = logging.getLogger("arcly_trio.server")

#: Options a reload applies (the others need a restart).
RELOADABLE = frozenset(
    {
        "apps",
        "app_tables",
        "gop_cache",
        "lag_budget",
        "subscriber_queue",
        "takeover",
        "reconnect_grace",
        "hls",
        "hls_variant",
        "hls_muxed",
        "dvr_window",
        "record_apps",
        "publish_token",
        "publish_token_file",
        "play_token",
        "play_token_file",
        "sign_secret",
        "sign_secret_file",
        "publish_sign_secret",
        "publish_sign_secret_file",
        "sign_actions",
        "on_publish",
        "on_play",
        "hook_timeout",
        "hook_fail_open",
        "on_event",
        "api_token",
        "api_token_file",
        "metrics_per_stream",
        "idle_timeout",
        "max_publishers",
        "auth_max_delay",
        "log_level",
        "tls_cert",
        "tls_key",
        "max_publish_bitrate",
        "max_publishers_per_ip",
        "publish_start_timeout",
    }
)


@attrs.define
class Runtime:
    """Everything one ``serve`` process runs (see the module docstring)."""

    settings: Settings
    """The options it was built with (secrets read), replaced by a reload."""
    engine: Engine
    rtmp: RtmpServer
    http: HttpServer | None
    rtmps: RtmpServer | None = None
    https: HttpServer | None = None
    auth: Swappable | None = None
    metrics: PrometheusObserver | None = None
    audit: AuditPipeline | None = None
    events: EventHook | None = None
    webrtc: WebRtcServer | None = None
    srt: SrtServer | None = None
    rtsp: RtspServer | None = None
    rtsps: RtspServer | None = None

    @property
    def http_servers(self) -> list[HttpServer]:
        return [server for server in (self.http, self.https) if server is not None]


def tls_context(cert: str | None, key: str | None) -> ssl.SSLContext:
    """A server TLS context from PEM files; ``SystemExit`` with a message when they are missing
    or cannot be loaded."""
    if not cert or not key:
        raise SystemExit("arcly-trio: --rtmps-port, --https-port and --rtsps-port need --tls-cert and --tls-key")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise SystemExit(f"arcly-trio: cannot load the TLS certificate {cert} and key {key}: {exc}") from None
    return context


def reload_tls(runtime: Runtime, cert: str | None, key: str | None) -> str | None:
    """Read the TLS certificate and key again for the RTMPS and HTTPS workers: new connections
    use them, open ones keep theirs. What happened, for the log and the audit record (``None``
    without TLS). Files that do not load keep the running certificate; that is logged as an
    error, and never raises."""
    servers: list[RtmpServer | HttpServer | RtspServer] = [
        server for server in (runtime.rtmps, runtime.https, runtime.rtsps) if server is not None
    ]
    if not servers:
        return None
    try:
        context = tls_context(cert, key)
        https = tls_context(cert, key) if runtime.https is not None else None  # its own: it gets ALPN h2
    except SystemExit as exc:
        log.error(
            "TLS certificate reload failed; the running certificate is kept: %s", str(exc).removeprefix("arcly-trio: ")
        )
        return "TLS certificate kept (the new one does not load)"
    for server in servers:
        server.ssl_context = https if server is runtime.https and https is not None else context
    return f"TLS certificate reloaded from {cert}"


def _apps_of(args: Settings) -> list[str]:
    apps = list(dict.fromkeys([*(args.apps or []), *args.app_tables]))
    if not apps:
        apps = ["live"]
    if args.demo and "live" not in apps:
        apps.append("live")
    return apps


def app_specs(options: Settings | argparse.Namespace) -> dict[str, AppSpec]:
    """Every application's spec: the global options, then its ``[apps.NAME]`` table."""
    args = Settings.of(options)
    tables = args.app_tables
    specs = {}
    for name in _apps_of(args):
        fields: dict[str, Any] = {
            "gop_cache_frames": args.gop_cache,
            "subscriber_queue": args.subscriber_queue,
            "lag_budget": args.lag_budget,
            "takeover": args.takeover,
            "reconnect_grace": args.reconnect_grace,
            "hls": args.hls,
            "hls_variant": args.hls_variant,
            "hls_muxed": args.hls_muxed,
            "record": bool(args.record) and not args.record_on_demand,
            "batch_interval": args.batch_interval,
            "max_publish_bitrate": args.max_publish_bitrate,
            "dvr_window": args.dvr_window,
        }
        from arcly_trio.server.config import APP_KEYS  # noqa: PLC0415 - config imports nothing of this module

        for key, value in (tables.get(name) or {}).items():
            field = APP_KEYS[key].field
            if not field.startswith("auth:"):
                fields[field] = value
        try:
            specs[name] = AppSpec(name, **fields)
        except (ValueError, InvalidStreamName) as exc:
            raise ValueError(f"application {name!r}: {exc}") from None
    return specs


def _auth_settings(args: Settings, table: Mapping[str, Any] | None = None) -> dict[str, Any]:
    values = args.as_dict()
    settings = {
        name: values[name]
        for name in ("publish_token", "play_token", "sign_secret", "publish_sign_secret", "on_publish", "on_play")
    }
    for key, value in (table or {}).items():
        from arcly_trio.server.config import APP_KEYS  # noqa: PLC0415

        field = APP_KEYS[key].field
        if field.startswith("auth:"):
            settings[field[len("auth:") :]] = value
    return settings


def check_credentials(settings: Mapping[str, Any]) -> None:
    """``ValueError`` when a viewer's credential would also publish: equal publish and play
    tokens, a publish signing secret equal to the signing secret (or without one)."""
    if settings.get("publish_token") and settings.get("publish_token") == settings.get("play_token"):
        raise ValueError("the publish token and the play token must differ (every viewer could publish)")
    publish_secret = settings.get("publish_sign_secret")
    if publish_secret and not settings.get("sign_secret"):
        raise ValueError("--publish-sign-secret needs --sign-secret")
    if publish_secret and publish_secret == settings.get("sign_secret"):
        raise ValueError("--publish-sign-secret must differ from --sign-secret (every viewer's ?sign= would publish)")


def authenticator_for(settings: Mapping[str, Any], args: Settings) -> Authenticator:
    """Tokens or signatures (either does, per action), then the HTTP hooks (see the README).
    Each credential allows its own action only: a play token or a play signature never
    publishes (``ValueError`` from :func:`check_credentials` when settings would let one)."""
    check_credentials(settings)
    members: list[Authenticator] = []
    sign_actions = {action.strip() for action in args.sign_actions.split(",") if action.strip()}
    for action in ("publish", "play"):
        accepted: list[Authenticator] = []
        token = settings[f"{action}_token"]
        if token:
            accepted.append(TokenAuthenticator(**{f"{action}_token": token}))
        if settings["sign_secret"] and action in sign_actions:
            accepted.append(
                SignedUrlAuthenticator(
                    settings["sign_secret"],
                    actions={action},
                    publish_secret=settings.get("publish_sign_secret") or None,
                )
            )
        if accepted:
            members.append(ForActions(accepted[0] if len(accepted) == 1 else AnyOf(accepted), {action}))
    if settings["on_publish"] or settings["on_play"]:
        members.append(
            HttpHooks(
                settings["on_publish"],
                settings["on_play"],
                timeout=args.hook_timeout,
                fail_open=args.hook_fail_open,
                node=args.node_id or "",
            )
        )
    if not members:
        return AllowAll()
    return members[0] if len(members) == 1 else AllOf(members)


def build_authenticator(args: Settings) -> Authenticator:
    """The whole server's authenticator: the global one, and one per application that has its
    own authorization keys in the file."""
    bad = {action for action in args.sign_actions.split(",") if action.strip()} - {"publish", "play"}
    if bad:
        raise ValueError(f"--sign-actions takes publish and/or play, not {', '.join(sorted(bad))}")
    default = authenticator_for(_auth_settings(args), args)
    per_app = {}
    for name, table in args.app_tables.items():
        if any(
            k in table
            for k in ("publish-token", "play-token", "sign-secret", "publish-sign-secret", "on-publish", "on-play")
        ):
            try:
                per_app[name] = authenticator_for(_auth_settings(args, table), args)
            except ValueError as exc:
                raise ValueError(f"[apps.{name}]: {exc}") from None
    chosen = ByApp(default, per_app) if per_app else default
    # The workers relay to each other over private Unix sockets (0600, in a 0700 directory): the
    # player behind a relay was authorized by the worker it came to.
    return TrustedPeers(chosen, {LOCAL_PEER}) if args.worker_dir else chosen


def cluster_node(args: Settings) -> ClusterNode | None:
    """The cluster node of a worker (``--workers``) or of a ``--cluster`` node, or ``None``."""
    worker_dir = args.worker_dir
    if worker_dir is None and not args.cluster:
        return None
    index = int(args.worker_index or 0)
    public = args.public_host or (args.host if args.host not in ("0.0.0.0", "::", "") else socket.gethostname())
    machine = args.node_id or (f"{public}:{args.rtmp_port}" if args.rtmp_port else f"{public}-{os.getpid()}")
    node_id = f"{machine}/w{index}" if worker_dir else machine
    directory: ClusterDirectory
    if args.cluster:
        from arcly_trio.cluster.redis import RedisDirectory  # noqa: PLC0415 - coredis only when clustering

        directory = RedisDirectory(args.cluster)
    else:
        directory = LocalDirectory(os.path.join(worker_dir, "directory.sock"))
    http_url = f"http://{public}:{args.http_port}" if args.http_port >= 0 else None
    return ClusterNode(
        directory,
        node_id=node_id,
        rtmp_url=f"rtmp://{public}:{args.rtmp_port}",
        http_url=http_url,
        relay_socket=os.path.join(worker_dir, f"rtmp-{index}.sock") if worker_dir else None,
        machine=machine,
        ttl=args.cluster_ttl,
        idle=args.pull_idle,
        play_token=args.play_token,
        publish_token=args.publish_token,
    )


def pull_templates(values: list[str]) -> dict[str | None, str]:
    """``--pull [APP=]URL`` values as PullSource templates (``None``: every other app)."""
    templates: dict[str | None, str] = {}
    for value in values:
        app, sep, rest = value.partition("=")
        if sep and "/" not in app and ":" not in app:
            templates[app] = rest
        else:
            templates[None] = value
    return templates


def _audit_path(path: str, worker_dir: str | None, index: int) -> str:
    """Each worker of ``--workers`` writes its own audit file (``audit-w1.jsonl``)."""
    if not worker_dir:
        return path
    root, ext = os.path.splitext(path)
    return f"{root}-w{index}{ext}"


def build_runtime(options: Settings | argparse.Namespace) -> Runtime:
    """Everything ``serve`` runs, from its resolved options (see the module docstring); the
    settings it used (secrets read) are its :attr:`Runtime.settings`."""
    args = Settings.of(options).with_secrets()
    try:
        specs = app_specs(args)
        authenticator = build_authenticator(args)
    except ValueError as exc:
        raise SystemExit(f"arcly-trio: {exc}") from None
    per_ip = args.max_connections_per_ip or None
    worker_dir = args.worker_dir
    index = int(args.worker_index or 0)
    listener = Listener(
        host=args.host,
        max_connections=args.max_connections,
        max_pending_per_address=args.max_idle_per_ip,
        max_per_address=per_ip,
        write_timeout=args.write_timeout,
        reuse_port=worker_dir is not None,
    )
    rtmp_options: dict[str, Any] = dict(
        setup_timeout=args.setup_timeout,
        idle_timeout=args.connection_idle_timeout,
        max_partial_memory=int(args.max_ingest_memory * 1024 * 1024),
    )
    rtmp = RtmpServer(
        listener=attrs.evolve(
            listener,
            port=args.rtmp_port,
            unix_socket=os.path.join(worker_dir, f"rtmp-{index}.sock") if worker_dir else None,
        ),
        **rtmp_options,
    )
    tls_ports = (args.rtmps_port, args.https_port, args.rtsps_port)
    tls = tls_context(args.tls_cert, args.tls_key) if max(tls_ports) >= 0 else None
    auth = Swappable(authenticator)
    hls_max_bytes = int(args.hls_max_mib * 1024 * 1024) if args.hls_max_mib > 0 else None
    builder = (
        Engine.builder()
        .max_publishers(args.max_publishers)
        # The workers' relays come over their private Unix sockets (LOCAL_PEER): not counted.
        .max_publishers_per_address(args.max_publishers_per_ip or None, exempt={LOCAL_PEER[0]})
        .publish_start_timeout(args.publish_start_timeout if args.publish_start_timeout > 0 else None)
        .idle_timeout(args.idle_timeout if args.idle_timeout > 0 else None)
        .authenticator(auth)
        .auth_throttle(AuthThrottle(max_delay=args.auth_max_delay, exempt={LOCAL_PEER[0]} if worker_dir else ()))
        .max_pulls(args.max_pulls)
        .session_prefix(f"w{index}-" if worker_dir else "")
        .protocol(rtmp)
    )
    runtime = Runtime(args, None, rtmp, None, auth=auth)  # type: ignore[arg-type]
    if args.rtmps_port >= 0:
        runtime.rtmps = RtmpServer(
            listener=attrs.evolve(listener, port=args.rtmps_port, ssl_context=tls), **rtmp_options
        )
        builder.protocol(runtime.rtmps)
    hls: HlsService | None = None
    if args.http_port >= 0 or args.https_port >= 0:
        if args.http_port >= 0:
            runtime.http = HttpServer(
                listener=attrs.evolve(
                    listener,
                    port=args.http_port,
                    unix_socket=os.path.join(worker_dir, f"http-{index}.sock") if worker_dir else None,
                ),
                api_token=args.api_token,
                http2_cleartext=args.http2_cleartext,
                session_hub=args.http_session_hub,
            )
            builder.protocol(runtime.http)
        if args.https_port >= 0:
            runtime.https = HttpServer(
                # a context of its own: the worker sets its ALPN protocols (h2), RTMPS's must not offer them
                listener=attrs.evolve(
                    listener, port=args.https_port, ssl_context=tls_context(args.tls_cert, args.tls_key)
                ),
                api_token=args.api_token,
                http2=args.http2,
            )
            builder.protocol(runtime.https)
        if worker_dir:  # the workers share one HLS storage; the worker where a stream is published packages it
            hls = HlsService(
                FileStorage(os.path.join(worker_dir, "hls")),
                variant=args.hls_variant,
                target_duration=args.hls_segment,
                window=args.hls_window,
                skip_protocols=("worker",),
                locate=False,
                max_bytes=hls_max_bytes,
            )
        else:
            hls = HlsService(
                variant=args.hls_variant,
                target_duration=args.hls_segment,
                window=args.hls_window,
                max_bytes=hls_max_bytes,
            )
        builder.service(hls)
    if args.rtsp_port >= 0:
        runtime.rtsp = RtspServer(
            listener=attrs.evolve(listener, port=args.rtsp_port),
            udp_ports=udp_range(args.rtsp_udp_ports),
            setup_timeout=args.setup_timeout,
            session_timeout=args.connection_idle_timeout,
            max_sessions_per_address=args.rtsp_max_sessions_per_address or None,
        )
        builder.protocol(runtime.rtsp)
    if args.rtsps_port >= 0:
        runtime.rtsps = RtspServer(
            listener=attrs.evolve(listener, port=args.rtsps_port, ssl_context=tls),
            setup_timeout=args.setup_timeout,
            session_timeout=args.connection_idle_timeout,
            max_sessions_per_address=args.rtsp_max_sessions_per_address or None,
        )
        builder.protocol(runtime.rtsps)
    if args.webrtc_port >= 0 and (args.http_port >= 0 or args.https_port >= 0):
        runtime.webrtc = webrtc_server(args, index if worker_dir else 0, worker_dir)
        builder.protocol(runtime.webrtc)
    if args.srt_port >= 0:
        srt_index = index if worker_dir else 0
        runtime.srt = SrtServer(
            args.host,
            args.srt_port + srt_index if args.srt_port else 0,
            latency_ms=args.srt_latency,
            passphrase=args.srt_passphrase,
        )
        builder.protocol(runtime.srt)
    if index == 0:  # one receiver per UDP port: with --workers, the first worker's
        try:
            sources = [parse_ingest_udp(value) for value in args.ingest_udp]
        except ValueError as exc:
            raise SystemExit(f"arcly-trio: {exc}") from None
        for source in sources:
            credentials = Credentials(token=args.publish_token)
            builder.protocol(UdpTsIngest(source, idle=args.ingest_udp_idle, credentials=credentials))
    recorder = (
        Recorder(
            args.record,
            format=args.record_format,
            segment_seconds=args.record_segment,
            max_age=args.record_max_age or None,
            max_bytes=args.record_max_bytes or None,
        )
        if args.record
        else None
    )
    if recorder is not None:
        builder.service(recorder)
    try:
        node = cluster_node(args)
        if node is not None:
            builder.source(node)
        if args.push:
            builder.service(PushService(args.push))
        if args.pull:
            builder.source(
                PullSource(
                    pull_templates(args.pull), idle=args.pull_idle, credentials=Credentials(token=args.publish_token)
                )
            )
        if args.source:
            builder.source(
                StreamSources(
                    [parse_source(value) for value in args.source],
                    idle=args.pull_idle,
                    credentials=Credentials(token=args.publish_token),
                )
            )
        runtime.events = EventHook(args.on_event, node=args.node_id or "")
    except ValueError as exc:
        raise SystemExit(f"arcly-trio: {exc}") from None
    runtime.metrics = PrometheusObserver(per_stream=args.metrics_per_stream)
    builder.observer(runtime.metrics).observer(runtime.events)
    builder.observer(AudioBridge())  # idle until a WebRTC player asks for Opus (issue 22)
    builder.observer(Thumbnails()).observer(StreamHistory())  # thumbnail.jpg, /api/history (issue 23)
    if args.audit:
        runtime.audit = AuditPipeline(
            JsonLinesFile(
                _audit_path(args.audit, worker_dir, index),
                max_bytes=int(args.audit_max_mib * 1024 * 1024),
                backups=args.audit_backups,
            )
        )
        builder.observer(runtime.audit)
    for spec in specs.values():
        builder.application(spec)
    engine = runtime.engine = builder.build()
    if recorder is not None:
        record_storage = FileStorage(recorder.directory)
        engine.health.add(
            "storage:record",
            storage_check(record_storage, what="the recording directory", witness=recorder.wrote_at),
            interval=10.0,
        )
    if hls is not None and isinstance(hls.storage, FileStorage):
        engine.health.add("storage:hls", storage_check(hls.storage, what="the HLS directory"), interval=10.0)
    return runtime


def _delete_on_worker(run_dir: str) -> Callable[[str, str], Awaitable[bool]]:
    """How a worker of ``--workers`` passes a WHIP/WHEP ``DELETE`` on to the worker whose
    session it is (the id's ``w{index}-``), over that worker's private HTTP socket."""

    async def forward(session_id: str, path: str) -> bool:
        found = re.match(r"w([0-9]{1,6})-", session_id)
        if found is None:
            return False
        sock = os.path.join(run_dir, f"http-{found.group(1)}.sock")
        try:
            transport = httpx.AsyncHTTPTransport(uds=sock)
            async with httpx.AsyncClient(transport=transport, timeout=2.0) as client:
                reply = await client.delete(f"http://worker{path}")
        except httpx.HTTPError:
            return False
        return reply.status_code == 200

    return forward


def webrtc_server(args: Settings, index: int, run_dir: str | None = None) -> WebRtcServer:
    """The WHIP/WHEP worker: its UDP port (``--webrtc-port``, plus the worker's index under
    ``--workers``; ICE-TCP on the same number), the candidates it announces (and on which
    transports: ``--webrtc-transports``) and the DTLS certificate (the TLS one if given, else a
    self-signed one made at start)."""
    port = args.webrtc_port + index if args.webrtc_port else 0
    hosts = args.webrtc_host or ([args.public_host] if args.public_host else [])
    certificate = None
    if args.tls_cert and args.tls_key:
        try:
            certificate = DtlsCertificate.from_files(args.tls_cert, args.tls_key)
        except (OSError, ValueError) as exc:
            raise SystemExit(f"arcly-trio: cannot use the TLS certificate for DTLS: {exc}") from None
    return WebRtcServer(
        args.host,
        port,
        candidate_hosts=hosts,
        certificate=certificate,
        ice_servers=args.ice_server,
        transports=tuple(args.webrtc_transports.split(",")),
        id_prefix=f"w{index}-" if run_dir else "",
        elsewhere=_delete_on_worker(run_dir) if run_dir else None,
    )


async def reload_runtime(runtime: Runtime, options: Settings | argparse.Namespace) -> list[str]:
    """Apply ``options`` (a new resolved configuration) to a running server; what changed (see
    the module docstring). ``ValueError`` (nothing changed) if the new settings cannot be used."""
    args = Settings.of(options).with_secrets()
    specs = app_specs(args)
    authenticator = build_authenticator(args)
    if args.on_event:
        from arcly_trio.ops.hooks import check_hook_url  # noqa: PLC0415

        check_hook_url(args.on_event)
    old = runtime.settings
    engine = runtime.engine
    changes: list[str] = []
    # The new authorization first: an application added below is served under it from its
    # first moment (adding one yields to other tasks, which may play or publish there).
    auth_keys = (
        "publish_token",
        "play_token",
        "sign_secret",
        "publish_sign_secret",
        "sign_actions",
        "on_publish",
        "on_play",
        "hook_timeout",
        "hook_fail_open",
        "app_tables",
    )
    before, after = old.as_dict(), args.as_dict()
    if any(before[name] != after[name] for name in auth_keys) and runtime.auth is not None:
        await runtime.auth.swap(authenticator)
        changes.append("authorization (tokens, signed URLs, hooks) rebuilt")
    current = {app.name: app for app in engine.applications()}
    for name in [name for name in current if name not in specs]:
        await engine.remove_application(name, grace=min(5.0, args.shutdown_grace))
        changes.append(f"application {name} removed")
    for name, spec in specs.items():
        if name not in current:
            await engine.add_application(spec)
            changes.append(f"application {name} added")
        elif current[name].spec != spec:
            engine.update_application(spec)
            changes.append(f"application {name}: new settings for its new streams")
    if runtime.events is not None and old.on_event != args.on_event:
        runtime.events.set_url(args.on_event)
        changes.append("on_event hook changed")
    if old.api_token != args.api_token:
        for server in runtime.http_servers:
            server.api_token = args.api_token
        changes.append("API token changed")
    if runtime.metrics is not None and old.metrics_per_stream != args.metrics_per_stream:
        runtime.metrics.per_stream = args.metrics_per_stream
        changes.append(f"per-stream metrics {'on' if args.metrics_per_stream else 'off'}")
    if old.idle_timeout != args.idle_timeout:
        engine.idle_timeout = args.idle_timeout if args.idle_timeout > 0 else None
        changes.append("idle timeout changed (for new streams)")
    if old.max_publishers != args.max_publishers:
        engine.set_max_publishers(args.max_publishers)
        changes.append("publisher limit changed")
    if old.max_publishers_per_ip != args.max_publishers_per_ip:
        engine.max_publishers_per_address = args.max_publishers_per_ip or None
        changes.append("per-address publisher limit changed")
    if old.publish_start_timeout != args.publish_start_timeout:
        engine.publish_start_timeout = args.publish_start_timeout if args.publish_start_timeout > 0 else None
        changes.append("publish start timeout changed (for new streams)")
    if old.auth_max_delay != args.auth_max_delay:
        engine.auth_throttle.max_delay = args.auth_max_delay
        changes.append("refusal delay changed")
    if old.log_level != args.log_level:
        logging.getLogger().setLevel(getattr(logging, args.log_level.upper()))
        changes.append(f"log level {args.log_level}")
    tls = reload_tls(runtime, args.tls_cert, args.tls_key)
    if tls is not None:
        changes.append(tls)
    before, after = old.configuration(), args.configuration()
    for name in sorted(set(before) | set(after)):
        if name not in RELOADABLE and before.get(name) != after.get(name):
            log.warning("configuration reload: %s changed; it takes effect after a restart", name.replace("_", "-"))
            changes.append(f"{name.replace('_', '-')} changed (needs a restart)")
    runtime.settings = args
    return changes
