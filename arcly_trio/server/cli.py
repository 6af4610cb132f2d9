"""``arcly-trio serve``: the streaming server on embedded defaults.

Runs one engine with the RTMP worker (and the HTTP worker once configured), applications from
``--app``, optional token auth for publishers, and an optional built-in demo stream.
SIGINT/SIGTERM stop it gracefully: publishers and players are told, tasks drain, and the
process exits within the shutdown grace (5 s by default).
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Sequence
from functools import partial

import trio

from ..core.excgroups import leaves
from ..kernel.auth import AllowAll, Authenticator, TokenAuthenticator
from ..kernel.engine import Engine
from ..kernel.throttle import AuthThrottle
from ..kernel.spec import AppSpec
from ..workers.http import HttpServer
from ..workers.rtmp import RtmpServer
from ..cluster import ClusterDirectory, ClusterNode, LocalDirectory
from ..core.keys import Credentials
from ..relay import PullSource, PushService
from ..services import FlvRecorder, HlsService
from ..storage import FileStorage
from . import worker_api
from .demo import publish_demo
from .supervisor import supervise, worker_count

__all__ = ["main", "build_parser", "build_engine", "serve"]

log = logging.getLogger("arcly_trio.server")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="arcly-trio", description="Live-media streaming server on trio.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_p = commands.add_parser("serve", help="run the streaming server")
    serve_p.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    serve_p.add_argument("--rtmp-port", type=int, default=1935, help="RTMP port (default 1935; 0 picks one)")
    serve_p.add_argument("--http-port", type=int, default=8080,
                         help="HTTP port for HTTP-FLV, WebSocket-FLV, HLS and the API (default 8080; 0 picks one; -1 = off)")
    serve_p.add_argument("--hls", action="store_true", help="package every stream as HLS (served on the HTTP port)")
    serve_p.add_argument("--hls-segment", type=float, default=2.0, metavar="SECONDS",
                         help="HLS target segment duration (default 2)")
    serve_p.add_argument("--hls-window", type=int, default=6, metavar="SEGMENTS",
                         help="segments listed in the HLS playlist (default 6)")
    serve_p.add_argument("--record", metavar="DIR",
                         help="record every publish session as DIR/{app}/{stream}-{UTC start}.flv")
    serve_p.add_argument("--app", action="append", dest="apps", metavar="NAME",
                         help="application name, repeatable (default: live)")
    serve_p.add_argument("--gop-cache", type=int, default=1024, metavar="FRAMES",
                         help="frames of the current GOP kept for instant start (0 = off; default 1024)")
    serve_p.add_argument("--idle-timeout", type=float, default=30.0, metavar="SECONDS",
                         help="reap a stream after this long without a frame (default 30)")
    serve_p.add_argument("--max-publishers", type=int, default=1000, help="concurrent publishers (default 1000)")
    serve_p.add_argument("--publish-token", metavar="SECRET",
                         help="publishers must present ?token=SECRET (visible to other users in the "
                              "process list: prefer --publish-token-file or ARCLY_PUBLISH_TOKEN)")
    serve_p.add_argument("--publish-token-file", metavar="PATH",
                         help="read the publish token from the first line of PATH")
    serve_p.add_argument("--play-token", metavar="SECRET",
                         help="players must present ?token=SECRET (or --play-token-file, ARCLY_PLAY_TOKEN)")
    serve_p.add_argument("--play-token-file", metavar="PATH", help="read the play token from the first line of PATH")
    limits = serve_p.add_argument_group("limits (see README, Limits and hardening)")
    limits.add_argument("--max-connections", type=int, default=4096, metavar="N",
                        help="open connections per port; the oldest idle one makes room for a newcomer (default 4096)")
    limits.add_argument("--max-idle-per-ip", type=int, default=32, metavar="N",
                        help="connections one address may hold without publishing, playing or requesting (default 32)")
    limits.add_argument("--max-connections-per-ip", type=int, default=0, metavar="N",
                        help="connections one address may hold in all (default 0 = no limit)")
    limits.add_argument("--setup-timeout", type=float, default=30.0, metavar="SECONDS",
                        help="an RTMP connection must publish or play within this (default 30)")
    limits.add_argument("--connection-idle-timeout", type=float, default=60.0, metavar="SECONDS",
                        help="close an RTMP connection that neither publishes nor plays after this long "
                             "without a command (default 60)")
    limits.add_argument("--write-timeout", type=float, default=30.0, metavar="SECONDS",
                        help="drop a player whose socket takes no data for this long (default 30)")
    limits.add_argument("--max-ingest-memory", type=float, default=256.0, metavar="MIB",
                        help="partial RTMP messages held by all connections together (default 256 MiB)")
    limits.add_argument("--max-pulls", type=int, default=256, metavar="N",
                        help="streams pulled (--pull, clusters, workers) at once; plays of more are refused (default 256)")
    limits.add_argument("--auth-max-delay", type=float, default=2.0, metavar="SECONDS",
                        help="the longest delay a refused address waits before its next try (default 2)")
    relay = serve_p.add_argument_group("relay, workers and clusters (see docs/cluster.md)")
    relay.add_argument("--push", action="append", default=[], metavar="[APP=]URL",
                       help="forward every publish (of APP) to this RTMP URL; {app} and {stream} are "
                            "replaced; repeatable")
    relay.add_argument("--pull", action="append", default=[], metavar="[APP=]URL",
                       help="a play of a stream that is not here pulls it from this rtmp:// or http:// "
                            "(HTTP-FLV) URL template, e.g. rtmp://origin/{app}/{stream}; repeatable per app")
    relay.add_argument("--pull-idle", type=float, default=10.0, metavar="SECONDS",
                       help="stop a pull after this long without a viewer (default 10)")
    relay.add_argument("--workers", default="1", metavar="N",
                       help="worker processes on the same ports (SO_REUSEPORT); 'auto' = one per CPU (default 1)")
    relay.add_argument("--cluster", metavar="redis://HOST:PORT/DB",
                       help="join the origin/edge cluster whose directory is this Redis")
    relay.add_argument("--node-id", metavar="ID", help="this node's id in the cluster (default HOST:RTMP-PORT)")
    relay.add_argument("--public-host", metavar="HOST",
                       help="the host other nodes reach this one at (default: --host, or this machine's name)")
    relay.add_argument("--cluster-ttl", type=float, default=10.0, metavar="SECONDS",
                       help="lifetime of a node's registration and stream leases without a heartbeat (default 10)")
    for hidden in ("--worker-dir", "--worker-index", "--worker-count"):
        relay.add_argument(hidden, help=argparse.SUPPRESS)
    serve_p.add_argument("--demo", action="store_true", help="publish a built-in looping test stream to live/demo")
    serve_p.add_argument("--shutdown-grace", type=float, default=4.0, metavar="SECONDS",
                         help="how long SIGINT/SIGTERM waits for connections to drain (default 4)")
    serve_p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return parser


def read_secret(value: str | None, path: str | None, env: str) -> str | None:
    """A secret from the command line, else the first line of a file, else the environment.

    Raises ``SystemExit`` with a clear message if the file cannot be read or is empty.
    """
    if value:
        return value
    if path:
        try:
            with open(path, encoding="utf-8") as file:
                secret = file.readline().strip()
        except OSError as exc:
            raise SystemExit(f"arcly-trio: cannot read the secret file {path}: {exc.strerror}") from None
        if not secret:
            raise SystemExit(f"arcly-trio: the secret file {path} is empty")
        return secret
    return os.environ.get(env) or None


def pull_templates(values: Sequence[str]) -> dict[str | None, str]:
    """``--pull [APP=]URL`` values as PullSource templates (``None``: every other app)."""
    templates: dict[str | None, str] = {}
    for value in values:
        app, sep, rest = value.partition("=")
        if sep and "/" not in app and ":" not in app:
            templates[app] = rest
        else:
            templates[None] = value
    return templates


def cluster_node(args: argparse.Namespace) -> ClusterNode | None:
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
        from ..cluster.redis import RedisDirectory  # noqa: PLC0415 - coredis only when clustering

        directory = RedisDirectory(args.cluster)
    else:
        directory = LocalDirectory(os.path.join(worker_dir, "directory.sock"))
    http_url = f"http://{public}:{args.http_port}" if args.http_port >= 0 else None
    return ClusterNode(
        directory, node_id=node_id, rtmp_url=f"rtmp://{public}:{args.rtmp_port}", http_url=http_url,
        relay_socket=os.path.join(worker_dir, f"rtmp-{index}.sock") if worker_dir else None,
        machine=machine, ttl=args.cluster_ttl, idle=args.pull_idle,
        play_token=args.play_token, publish_token=args.publish_token,
    )


def build_engine(args: argparse.Namespace) -> tuple[Engine, RtmpServer, HttpServer | None]:
    apps = args.apps or ["live"]
    if args.demo and "live" not in apps:
        apps.append("live")
    args.publish_token = read_secret(args.publish_token, args.publish_token_file, "ARCLY_PUBLISH_TOKEN")
    args.play_token = read_secret(args.play_token, args.play_token_file, "ARCLY_PLAY_TOKEN")
    authenticator: Authenticator = (
        TokenAuthenticator(publish_token=args.publish_token, play_token=args.play_token)
        if args.publish_token or args.play_token else AllowAll()
    )
    per_ip = args.max_connections_per_ip or None
    worker_dir = args.worker_dir
    index = int(args.worker_index or 0)
    rtmp = RtmpServer(
        args.host, args.rtmp_port,
        reuse_port=worker_dir is not None,
        unix_socket=os.path.join(worker_dir, f"rtmp-{index}.sock") if worker_dir else None,
        setup_timeout=args.setup_timeout,
        idle_timeout=args.connection_idle_timeout,
        write_timeout=args.write_timeout,
        max_connections=args.max_connections,
        max_pending_per_address=args.max_idle_per_ip,
        max_per_address=per_ip,
        max_partial_memory=int(args.max_ingest_memory * 1024 * 1024),
    )
    builder = (
        Engine.builder()
        .max_publishers(args.max_publishers)
        .idle_timeout(args.idle_timeout if args.idle_timeout > 0 else None)
        .authenticator(authenticator)
        .auth_throttle(AuthThrottle(max_delay=args.auth_max_delay))
        .max_pulls(args.max_pulls)
        .protocol(rtmp)
    )
    http: HttpServer | None = None
    if args.http_port >= 0:
        # `--hls` stays MPEG-TS (issue 12 brings `--hls-variant`; the library default is "ll").
        hls = None
        if args.hls and worker_dir:  # the workers share one HLS storage; the origin packages
            hls = HlsService(FileStorage(os.path.join(worker_dir, "hls")), variant="ts",
                             target_duration=args.hls_segment, window=args.hls_window,
                             skip_protocols=("worker",), locate=False)
        elif args.hls:
            hls = HlsService(variant="ts", target_duration=args.hls_segment, window=args.hls_window)
        http = HttpServer(
            args.host, args.http_port,
            max_connections=args.max_connections,
            max_pending_per_address=args.max_idle_per_ip,
            max_per_address=per_ip,
            write_timeout=args.write_timeout,
            reuse_port=worker_dir is not None,
            unix_socket=os.path.join(worker_dir, f"http-{index}.sock") if worker_dir else None,
        )
        builder.protocol(http)
        if hls is not None:
            builder.service(hls)
    if args.record:
        builder.service(FlvRecorder(args.record))
    try:
        node = cluster_node(args)
        if node is not None:
            builder.source(node)
        if args.push:
            builder.service(PushService(args.push))
        if args.pull:
            builder.source(PullSource(pull_templates(args.pull), idle=args.pull_idle,
                                      credentials=Credentials(token=args.publish_token)))
    except ValueError as exc:
        raise SystemExit(f"arcly-trio: {exc}") from None
    for name in dict.fromkeys(apps):
        builder.application(AppSpec(name, gop_cache_frames=args.gop_cache, hls=args.hls, record=bool(args.record)))
    return builder.build(), rtmp, http


async def serve(args: argparse.Namespace, *, task_status: trio.TaskStatus[Engine] = trio.TASK_STATUS_IGNORED) -> None:
    """Run the server until SIGINT/SIGTERM (or cancellation)."""
    engine, rtmp, http = build_engine(args)
    if http is not None and args.worker_dir:
        worker_api.install(http, args.worker_dir, int(args.worker_index), int(args.worker_count))
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(engine.serve)
            log.info("arcly-trio ready: rtmp://%s:%d/{app}/{stream} (apps: %s)",
                     args.host, rtmp.port, ", ".join(app.name for app in engine.applications()))
            if http is not None:
                http.rtmp_port = rtmp.port  # for the pages' copyable rtmp:// URLs
                log.info("pages http://%s:%d/ (status), /watch/{app}/{stream}, /publish/{app}/{stream}; "
                         "frames ws://...:%d/{app}/{stream}/frames", args.host, http.port, http.port)
                log.info("HTTP-FLV http://%s:%d/{app}/{stream}.flv, WebSocket-FLV ws://...same path%s, API /api/streams",
                         args.host, http.port, ", HLS /{app}/{stream}/index.m3u8" if args.hls else "")
            for source in engine.sources:
                if isinstance(source, ClusterNode) and not args.worker_dir:
                    public = source.rtmp_url.rpartition(":")[0]
                    source.set_urls(f"{public}:{rtmp.port}", f"{public.replace('rtmp', 'http', 1)}:{http.port}"
                                    if http is not None else None)
            if args.demo and not int(args.worker_index or 0):  # with --workers, worker 0 publishes it
                nursery.start_soon(partial(publish_demo, engine, "live/demo", token=args.publish_token))
                log.info("demo stream: ffplay rtmp://127.0.0.1:%d/live/demo", rtmp.port)
            # Everything allocated at start-up lives as long as the server: keep it out of
            # the cyclic collector's way (at thousands of players GC is a third of the CPU).
            gc.collect()
            gc.freeze()
            task_status.started(engine)
            stop = trio.Event()
            nursery.start_soon(_until_signalled, signals, stop, args.shutdown_grace)
            if args.worker_dir:
                nursery.start_soon(_until_orphaned, os.getppid(), stop)
            await stop.wait()
            await engine.shutdown(grace=args.shutdown_grace)
            nursery.cancel_scope.cancel()
    log.info("arcly-trio stopped")


async def _until_signalled(signals: AsyncIterator[int], stop: trio.Event, grace: float) -> None:
    """Set ``stop`` on SIGINT or SIGTERM (SIGHUP is logged: there is nothing to reload)."""
    async for signum in signals:
        if signum == signal.SIGHUP:
            log.info("SIGHUP received: nothing to reload (the configuration is the command line)")
            continue
        log.info("%s received: shutting down (grace %g s)", signal.Signals(signum).name, grace)
        break
    stop.set()


async def _until_orphaned(parent: int, stop: trio.Event) -> None:
    """A worker stops when its supervisor is gone (it is then adopted by another process)."""
    while os.getppid() == parent:
        await trio.sleep(1)
    log.warning("the supervisor (pid %d) is gone: shutting down", parent)
    stop.set()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    worker = f"w{args.worker_index} " if args.worker_dir else ""
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format=f"%(asctime)s {worker}%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        count = worker_count(args.workers)
    except ValueError:
        raise SystemExit(f"arcly-trio: --workers takes a number or 'auto', not {args.workers!r}") from None
    if count > 1 and not args.worker_dir:
        return supervise(args, argv, count)
    try:
        trio.run(serve, args)
    except (OSError, BaseExceptionGroup) as exc:
        # Binding the port fails inside serve's nursery, so the OSError comes in a group.
        error = _lone_os_error(exc)
        if error is None:
            raise
        log.error("cannot start: %s", error)
        return 1
    return 0


def _lone_os_error(exc: BaseException) -> OSError | None:
    """The OSError that ``exc`` is, or is the only leaf of (an exception group); else None."""
    if isinstance(exc, BaseExceptionGroup):
        found = leaves(exc)
        exc = found[0] if len(found) == 1 else exc
    return exc if isinstance(exc, OSError) else None


if __name__ == "__main__":
    sys.exit(main())
