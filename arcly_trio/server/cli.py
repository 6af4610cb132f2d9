"""``arcly-trio serve``: the streaming server on embedded defaults; ``arcly-trio sign``: signed URLs.

``serve`` runs one engine (see :mod:`.build`) with the RTMP worker, the HTTP worker, and on
request RTMPS and HTTPS, applications from ``--app`` and ``[apps.NAME]`` tables, authorization
(tokens, signed URLs, HTTP hooks), metrics, an audit log and an optional built-in demo stream.
Options come from the command line over a configuration file (``--config``, :mod:`.config`)
over the defaults. SIGINT/SIGTERM stop it gracefully: publishers and players are told, tasks
drain, and the process exits within the shutdown grace. SIGHUP reloads the configuration file
(:func:`~.build.reload_runtime`) and the TLS certificate and key (:func:`~.build.reload_tls`);
a file that does not load is logged and the running configuration (or certificate) kept.

``sign`` prints a URL signed with the server's secret for operators to hand out, valid for one
action: a viewer's (``--action play``, the default: Node-Media-Server's ``?sign=``, or a JWT with
``--jwt``) or a streamer's (``--action publish``: a JWT naming publish, or a ``?sign=`` made with
the publish signing secret).

Error policy: every option is checked before anything starts, on the command line and in the
configuration file alike (:mod:`.options`): the wrong ones exit with code 2, every problem at
once, one line each naming the option (``--rtmp-port 99999: a port is 0-65535``); argparse's own
errors (an unknown option, a choice that is not one) exit with code 2 too. A secret file or
TLS file that cannot be read exits with code 1 and a message; a port that cannot be bound with
code 1, naming its option and address. ``--version`` prints the version.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Sequence
from functools import partial

import trio

import arcly_trio
from arcly_trio.cluster import ClusterNode
from arcly_trio.core.excgroups import leaves
from arcly_trio.kernel.engine import Engine
from arcly_trio.kernel.spec import DEFAULT_MAX_PUBLISH_BITRATE
from arcly_trio.ops.signing import sign_url
from arcly_trio.server import worker_api
from arcly_trio.server.build import Runtime, build_runtime, reload_runtime, reload_tls
from arcly_trio.server.config import ConfigError, command_line_problems, explicit_options, load, option_keys, resolve
from arcly_trio.server.demo import publish_demo
from arcly_trio.server.logs import configure_logging, ready_lines
from arcly_trio.server.memory import HeapTrimmer, heap_trim_available, pin_mmap_threshold
from arcly_trio.server.options import describe_listen_error, integer, number, together
from arcly_trio.server.settings import Settings, read_secret
from arcly_trio.server.supervisor import supervise, tell_supervisor_ready, worker_count

__all__ = ["main", "build_parser", "serve", "read_secret", "resolve_args", "configure_logging"]

log = logging.getLogger("arcly_trio.server")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="arcly-trio", description="Live-media streaming server on trio.")
    parser.add_argument("--version", action="version", version=f"arcly-trio {arcly_trio.__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_p = commands.add_parser("serve", help="run the streaming server")
    serve_p.add_argument(
        "--config",
        metavar="FILE",
        help="read options from this TOML file (command-line options override it; "
        "SIGHUP reloads it; see docs/config.md)",
    )
    serve_p.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    serve_p.add_argument("--rtmp-port", type=integer, default=1935, help="RTMP port (default 1935; 0 picks one)")
    serve_p.add_argument(
        "--http-port",
        type=integer,
        default=8080,
        help="HTTP port for HTTP-FLV, WebSocket-FLV, HLS and the API (default 8080; 0 picks one; -1 = off)",
    )
    serve_p.add_argument(
        "--hls",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="package every stream as HLS, served on the HTTP port (default on; --no-hls: off)",
    )
    serve_p.add_argument(
        "--hls-variant",
        choices=["ll", "fmp4", "ts"],
        default="ll",
        help="HLS packaging: ll (Low-Latency HLS on fMP4, and DASH), fmp4, or ts (MPEG-TS) (default ll)",
    )
    serve_p.add_argument(
        "--hls-segment",
        type=number,
        default=2.0,
        metavar="SECONDS",
        help="HLS target segment duration, from 0.5 to 60 (default 2)",
    )
    serve_p.add_argument(
        "--hls-window",
        type=integer,
        default=6,
        metavar="SEGMENTS",
        help="segments listed in the HLS playlist (default 6)",
    )
    serve_p.add_argument(
        "--hls-max-mib",
        type=number,
        default=64.0,
        metavar="MIB",
        help="the most one stream's HLS and DASH may hold (segments, parts, and those kept for "
        "late players); past it its oldest are deleted early (default 64; 0 = no cap)",
    )
    serve_p.add_argument(
        "--record", metavar="DIR", help="record every publish session as DIR/{app}/{stream}-{UTC start}.flv"
    )
    serve_p.add_argument(
        "--app", action="append", dest="apps", metavar="NAME", help="application name, repeatable (default: live)"
    )
    apps = serve_p.add_argument_group("every application's stream policy (per application: [apps.NAME] in --config)")
    apps.add_argument(
        "--gop-cache",
        type=integer,
        default=1024,
        metavar="FRAMES",
        help="frames of the current GOP kept for instant start (0 = off; default 1024)",
    )
    apps.add_argument(
        "--subscriber-queue",
        type=integer,
        default=256,
        metavar="FRAMES",
        help="frames a player may have queued before it drops to the next keyframe (default 256)",
    )
    apps.add_argument(
        "--lag-budget",
        type=integer,
        default=None,
        metavar="FRAMES",
        help="evict a player that dropped more frames than this (default: never; 0 evicts at the first dropped frame)",
    )
    apps.add_argument(
        "--takeover",
        choices=["reject", "replace"],
        default="reject",
        help="a second publisher of a stream is refused, or replaces the first (default reject)",
    )
    apps.add_argument(
        "--reconnect-grace",
        type=number,
        default=0.0,
        metavar="SECONDS",
        help="how long players wait for a publisher that left to come back (default 0)",
    )
    apps.add_argument(
        "--max-publish-bitrate",
        type=integer,
        default=DEFAULT_MAX_PUBLISH_BITRATE,
        metavar="BITS",
        help="the most a publisher may send, in bits/s, with a burst of 4 s of it; past it the publish "
        "is cut (default 50000000 = 50 Mbit/s; 0 = no limit)",
    )
    apps.add_argument(
        "--batch-interval",
        type=number,
        default=0.0,
        metavar="SECONDS",
        help="gather frames for up to this long between writes to each viewer: fewer, larger "
        "writes (less CPU per viewer) for that much more latency (default 0: at once)",
    )
    serve_p.add_argument(
        "--idle-timeout",
        type=number,
        default=30.0,
        metavar="SECONDS",
        help="reap a stream after this long without a frame (default 30; 0 = never)",
    )
    serve_p.add_argument("--max-publishers", type=integer, default=1000, help="concurrent publishers (default 1000)")
    serve_p.add_argument(
        "--max-publishers-per-ip",
        type=integer,
        default=8,
        metavar="N",
        help="concurrent publishers from one address (the workers' own relays are not counted; "
        "default 8; 0 = no limit)",
    )
    serve_p.add_argument(
        "--publish-start-timeout",
        type=number,
        default=10.0,
        metavar="SECONDS",
        help="end a publish that sends no audio or video within this long of being accepted "
        "(default 10; 0 = only the idle timeout)",
    )
    auth = serve_p.add_argument_group("authorization (see README, Authorization)")
    auth.add_argument(
        "--publish-token",
        metavar="SECRET",
        help="publishers must present ?token=SECRET (visible to other users in the "
        "process list: prefer --publish-token-file or ARCLY_PUBLISH_TOKEN)",
    )
    auth.add_argument("--publish-token-file", metavar="PATH", help="read the publish token from the first line of PATH")
    auth.add_argument(
        "--play-token",
        metavar="SECRET",
        help="players must present ?token=SECRET (or --play-token-file, ARCLY_PLAY_TOKEN)",
    )
    auth.add_argument("--play-token-file", metavar="PATH", help="read the play token from the first line of PATH")
    auth.add_argument(
        "--sign-secret",
        metavar="SECRET",
        help="accept signed URLs: Node-Media-Server's ?sign=EXPIRY-MD5 made with this secret (for play "
        "only) and HS256 JWTs (?jwt=, Authorization: Bearer) for the actions their 'action' claim "
        "names; for the actions of --sign-actions, either a signature or the action's token will do "
        "(or --sign-secret-file, ARCLY_SIGN_SECRET)",
    )
    auth.add_argument("--sign-secret-file", metavar="PATH", help="read the signing secret from the first line of PATH")
    auth.add_argument(
        "--publish-sign-secret",
        metavar="SECRET",
        help="a second secret (different from --sign-secret): a ?sign= made with it allows publishing "
        "(without it only a JWT naming publish does) (or --publish-sign-secret-file, "
        "ARCLY_PUBLISH_SIGN_SECRET)",
    )
    auth.add_argument(
        "--publish-sign-secret-file", metavar="PATH", help="read the publish signing secret from the first line of PATH"
    )
    auth.add_argument(
        "--sign-actions",
        default="publish,play",
        metavar="ACTIONS",
        help="the actions that need a signed URL (or their token): publish, play or both (default "
        "both); a signature is only ever valid for the action it names",
    )
    auth.add_argument(
        "--on-publish",
        metavar="URL",
        help="POST every publish to this HTTP hook first: 2xx allows, 3xx+Location renames, else refused",
    )
    auth.add_argument("--on-play", metavar="URL", help="POST every play (every protocol) to this HTTP hook first")
    auth.add_argument(
        "--on-event",
        metavar="URL",
        help="POST notifications here: publish/play start and end, recording done, stream reaped",
    )
    auth.add_argument(
        "--hook-timeout",
        type=number,
        default=3.0,
        metavar="SECONDS",
        help="how long a hook may take to answer (default 3)",
    )
    auth.add_argument(
        "--hook-fail-open",
        action="store_true",
        help="allow when a hook times out or cannot be reached (default: refuse)",
    )
    ops = serve_p.add_argument_group("operations: API, metrics, audit, TLS")
    ops.add_argument(
        "--api-token",
        metavar="SECRET",
        help="/api/* (but /api/health) and /metrics need Authorization: Bearer SECRET or ?api_token= "
        "(or --api-token-file, ARCLY_API_TOKEN); without it, /api/sessions and kicks answer "
        "only this machine",
    )
    ops.add_argument("--api-token-file", metavar="PATH", help="read the API token from the first line of PATH")
    ops.add_argument(
        "--metrics-per-stream",
        action="store_true",
        help="/metrics also has per-stream series (stream names as labels: unbounded, opt-in)",
    )
    ops.add_argument("--audit", metavar="FILE", help="write the audit log (JSON lines) to FILE")
    ops.add_argument(
        "--audit-max-mib",
        type=number,
        default=10.0,
        metavar="MIB",
        help="rotate the audit log past this size (default 10 MiB)",
    )
    ops.add_argument(
        "--audit-backups",
        type=integer,
        default=5,
        metavar="N",
        help="rotated audit files kept (FILE.1 ... FILE.N; default 5)",
    )
    ops.add_argument(
        "--rtmps-port",
        type=integer,
        default=-1,
        metavar="PORT",
        help="also serve RTMPS (RTMP over TLS) on this port (needs --tls-cert, --tls-key; default off)",
    )
    ops.add_argument(
        "--https-port",
        type=integer,
        default=-1,
        metavar="PORT",
        help="also serve HTTPS (everything of the HTTP port) on this port (default off)",
    )
    ops.add_argument("--tls-cert", metavar="PEM", help="the TLS certificate chain (PEM)")
    ops.add_argument("--tls-key", metavar="PEM", help="the TLS private key (PEM)")
    limits = serve_p.add_argument_group("limits (see README, Limits and hardening)")
    limits.add_argument(
        "--max-connections",
        type=integer,
        default=4096,
        metavar="N",
        help="open connections per port; when all are taken, the one longest without progress "
        "(an idle one first) makes room for a newcomer (default 4096)",
    )
    limits.add_argument(
        "--max-idle-per-ip",
        type=integer,
        default=32,
        metavar="N",
        help="idle connections one address may hold once three quarters of max-connections are "
        "open; a client on its way to publish, play or request is not idle (default 32)",
    )
    limits.add_argument(
        "--max-connections-per-ip",
        type=integer,
        default=0,
        metavar="N",
        help="connections one address may hold in all (default 0 = no limit)",
    )
    limits.add_argument(
        "--setup-timeout",
        type=number,
        default=30.0,
        metavar="SECONDS",
        help="an RTMP connection must publish or play within this (default 30)",
    )
    limits.add_argument(
        "--connection-idle-timeout",
        type=number,
        default=60.0,
        metavar="SECONDS",
        help="close an RTMP connection that neither publishes nor plays after this long without a command (default 60)",
    )
    limits.add_argument(
        "--write-timeout",
        type=number,
        default=30.0,
        metavar="SECONDS",
        help="drop a player whose socket takes no data for this long (default 30)",
    )
    limits.add_argument(
        "--max-ingest-memory",
        type=number,
        default=256.0,
        metavar="MIB",
        help="partial RTMP messages held by all connections together (default 256 MiB)",
    )
    limits.add_argument(
        "--max-pulls",
        type=integer,
        default=256,
        metavar="N",
        help="streams pulled (--pull, clusters, workers) at once; plays of more are refused (default 256)",
    )
    limits.add_argument(
        "--auth-max-delay",
        type=number,
        default=2.0,
        metavar="SECONDS",
        help="the longest delay a refused address waits before its next try (default 2)",
    )
    limits.add_argument(
        "--heap-trim-interval",
        type=number,
        default=10.0,
        metavar="SECONDS",
        help="give freed memory back to the system (glibc's malloc_trim) this often, and soon "
        "after a stream ends (default 10; 0 = off)",
    )
    relay = serve_p.add_argument_group("relay, workers and clusters (see docs/cluster.md)")
    relay.add_argument(
        "--push",
        action="append",
        default=[],
        metavar="[APP=]URL",
        help="forward every publish (of APP) to this RTMP URL; {app} and {stream} are replaced; repeatable",
    )
    relay.add_argument(
        "--pull",
        action="append",
        default=[],
        metavar="[APP=]URL",
        help="a play of a stream that is not here pulls it from this rtmp:// or http:// "
        "(HTTP-FLV) URL template, e.g. rtmp://origin/{app}/{stream}; repeatable per app",
    )
    relay.add_argument(
        "--pull-idle",
        type=number,
        default=10.0,
        metavar="SECONDS",
        help="stop a pull after this long without a viewer (default 10)",
    )
    relay.add_argument(
        "--workers",
        default="1",
        metavar="N",
        help="worker processes on the same ports (SO_REUSEPORT); 'auto' = one per CPU (default 1)",
    )
    relay.add_argument(
        "--cluster", metavar="redis://HOST:PORT/DB", help="join the origin/edge cluster whose directory is this Redis"
    )
    relay.add_argument("--node-id", metavar="ID", help="this node's id in the cluster (default HOST:RTMP-PORT)")
    relay.add_argument(
        "--public-host",
        metavar="HOST",
        help="the host other nodes reach this one at (default: --host, or this machine's name)",
    )
    relay.add_argument(
        "--cluster-ttl",
        type=number,
        default=10.0,
        metavar="SECONDS",
        help="lifetime of a node's registration and stream leases without a heartbeat (default 10)",
    )
    for hidden in ("--worker-dir", "--worker-index", "--worker-count"):
        relay.add_argument(hidden, help=argparse.SUPPRESS)
    serve_p.add_argument("--demo", action="store_true", help="publish a built-in looping test stream to live/demo")
    serve_p.add_argument(
        "--shutdown-grace",
        type=number,
        default=4.0,
        metavar="SECONDS",
        help="how long SIGINT/SIGTERM waits for connections to drain (default 4)",
    )
    serve_p.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="how much to log (default info; debug adds every request, connect and allowed "
        "authorization, and other libraries' lines)",
    )
    sign_p = commands.add_parser("sign", help="print a signed URL (see --sign-secret): a viewer's by default")
    sign_p.add_argument("url", help="the URL to sign: rtmp://HOST/APP/STREAM, http://HOST/APP/STREAM.flv...")
    sign_p.add_argument("--secret", metavar="SECRET", help="the signing secret (or --secret-file, ARCLY_SIGN_SECRET)")
    sign_p.add_argument("--secret-file", metavar="PATH", help="read the signing secret from the first line of PATH")
    sign_p.add_argument(
        "--publish-sign-secret",
        metavar="SECRET",
        help="with --action publish: make a ?sign= with this secret (the server's "
        "--publish-sign-secret) instead of a JWT (or --publish-sign-secret-file, "
        "ARCLY_PUBLISH_SIGN_SECRET)",
    )
    sign_p.add_argument(
        "--publish-sign-secret-file", metavar="PATH", help="read the publish signing secret from the first line of PATH"
    )
    sign_p.add_argument(
        "--expires", type=float, default=3600.0, metavar="SECONDS", help="valid for this long from now (default 3600)"
    )
    sign_p.add_argument("--expiry", type=int, metavar="UNIX", help="valid until this unix time (overrides --expires)")
    sign_p.add_argument("--jwt", action="store_true", help="sign with an HS256 JWT (?jwt=) instead of ?sign=")
    sign_p.add_argument(
        "--action",
        choices=["play", "publish", "*"],
        default="play",
        help="what the URL allows (default play: a viewer's URL, which never publishes); publish "
        "makes a JWT, or a ?sign= with --publish-sign-secret; * (both) only as a JWT",
    )
    return parser


def _serve_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices["serve"]  # type: ignore[no-any-return]
    raise LookupError("no serve command")


def resolve_args(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """The options of ``argv`` over its ``--config`` file over the defaults, each checked
    (:mod:`.options`): :class:`~.config.ConfigError` with every problem found, of the command
    line and of the file, at once."""
    args = parser.parse_args(argv)
    if args.command != "serve":
        return args
    problems = command_line_problems(parser, args, explicit_options(parser, argv))
    config = None
    if args.config:
        try:
            config = load(args.config, option_keys(_serve_parser(parser)))
        except ConfigError as exc:
            problems += exc.problems
    if problems:
        raise ConfigError(problems)
    args = resolve(parser, argv, args, config)
    problems = together(vars(args))
    if problems:
        raise ConfigError(problems)
    return args


async def serve(
    options: Settings | argparse.Namespace,
    *,
    argv: Sequence[str] | None = None,
    task_status: trio.TaskStatus[Engine] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the server until SIGINT/SIGTERM (or cancellation); SIGHUP reloads ``--config``
    (re-read with the same command line ``argv``)."""
    runtime = build_runtime(options)
    settings = runtime.settings  # built once, its secrets read
    engine, rtmp = runtime.engine, runtime.rtmp
    if settings.heap_trim_interval > 0 and heap_trim_available():
        engine.add_observer(HeapTrimmer(interval=settings.heap_trim_interval))  # see server.memory
    if settings.worker_dir:
        for server in runtime.http_servers:
            worker_api.install(server, settings.worker_dir, int(settings.worker_index), int(settings.worker_count))
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(engine.serve)
            for http in runtime.http_servers:
                http.rtmp_port = rtmp.port  # for the pages' copyable rtmp:// URLs
            for source in engine.sources:
                if isinstance(source, ClusterNode) and not settings.worker_dir:
                    public = source.rtmp_url.rpartition(":")[0]
                    source.set_urls(
                        f"{public}:{rtmp.port}",
                        f"{public.replace('rtmp', 'http', 1)}:{runtime.http.port}"
                        if runtime.http is not None
                        else None,
                    )
            # With --workers the supervisor says it, once every worker listens.
            level = logging.DEBUG if settings.worker_dir else logging.INFO
            for line in ready_lines(
                host=settings.host,
                public_host=settings.public_host,
                rtmp_port=rtmp.port,
                rtmps_port=runtime.rtmps.port if runtime.rtmps is not None else None,
                http=[
                    ("https" if http.ssl_context is not None else "http", http.port) for http in runtime.http_servers
                ],
                apps=[app.name for app in engine.applications()],
                hls_variant=settings.hls_variant if settings.hls else None,
                demo=settings.demo,
            ):
                log.log(level, "%s", line)
            if settings.demo and not int(settings.worker_index or 0):  # with --workers, worker 0 publishes it
                nursery.start_soon(partial(publish_demo, engine, "live/demo", token=settings.publish_token))
            if settings.worker_dir:
                tell_supervisor_ready()
            # Everything allocated at start-up lives as long as the server: keep it out of
            # the cyclic collector's way (at thousands of players GC is a third of the CPU).
            gc.collect()
            gc.freeze()
            pin_mmap_threshold()  # freed frames give their memory back (see server.memory)
            task_status.started(engine)
            stop = trio.Event()
            nursery.start_soon(_until_signalled, signals, stop, runtime, list(argv if argv is not None else []))
            if settings.worker_dir:
                nursery.start_soon(_until_orphaned, os.getppid(), stop)
            await stop.wait()
            await engine.shutdown(grace=settings.shutdown_grace)
            nursery.cancel_scope.cancel()
    log.info("arcly-trio stopped")


async def reload(runtime: Runtime, argv: Sequence[str]) -> bool:
    """Re-read the configuration file and apply it (SIGHUP), the TLS certificate and key
    included (without a configuration file: those alone); whether it was applied. A file that
    does not load, or settings that cannot be used, are logged and change nothing (TLS files
    that do not load keep the running certificate)."""
    path = runtime.settings.config
    if not path:
        tls = reload_tls(runtime, runtime.settings.tls_cert, runtime.settings.tls_key)
        if tls is None:
            log.info("SIGHUP received: nothing to reload (no --config file, no TLS)")
            return False
        log.info("SIGHUP received: %s", tls)
        if runtime.audit is not None:
            runtime.audit.record({"event": "config-reload", "ok": True, "file": None, "changes": [tls]})
        return True
    try:
        args = resolve_args(build_parser(), argv)
        changes = await reload_runtime(runtime, args)
    except (ConfigError, ValueError, SystemExit) as exc:
        error = "; ".join(exc.problems) if isinstance(exc, ConfigError) else str(exc)  # one line, every problem
        log.error("configuration reload from %s failed; the running configuration is kept: %s", path, error)
        if runtime.audit is not None:
            runtime.audit.record({"event": "config-reload", "ok": False, "file": path, "error": error})
        return False
    log.info("configuration reloaded from %s: %s", path, "; ".join(changes) or "nothing changed")
    if runtime.audit is not None:
        runtime.audit.record({"event": "config-reload", "ok": True, "file": path, "changes": changes})
    return True


async def _until_signalled(
    signals: AsyncIterator[int], stop: trio.Event, runtime: Runtime, argv: Sequence[str]
) -> None:
    """Set ``stop`` on SIGINT or SIGTERM; reload the configuration on SIGHUP."""
    async for signum in signals:
        if signum == signal.SIGHUP:
            await reload(runtime, argv)
            continue
        log.info(
            "%s received: shutting down (grace %g s)", signal.Signals(signum).name, runtime.settings.shutdown_grace
        )
        break
    stop.set()


async def _until_orphaned(parent: int, stop: trio.Event) -> None:
    """A worker stops when its supervisor is gone (it is then adopted by another process)."""
    while os.getppid() == parent:
        await trio.sleep(1)
    log.warning("the supervisor (pid %d) is gone: shutting down", parent)
    stop.set()


def sign_command(args: argparse.Namespace) -> int:
    """``arcly-trio sign URL``: print the signed URL, valid for ``--action`` only (default play).

    A play URL is Node-Media-Server's ``?sign=`` (or a JWT with ``--jwt``); a publish URL is a
    ``?sign=`` made with the publish signing secret when one is given, else a JWT naming
    ``publish``; both actions (``*``) only a JWT."""
    secret = read_secret(args.secret, args.secret_file, "ARCLY_SIGN_SECRET")
    publish_secret = read_secret(args.publish_sign_secret, args.publish_sign_secret_file, "ARCLY_PUBLISH_SIGN_SECRET")
    nms = not args.jwt and (args.action == "play" or (args.action == "publish" and publish_secret is not None))
    needed = publish_secret if nms and args.action == "publish" else secret
    if not needed:
        print("arcly-trio sign: give the secret (--secret, --secret-file or ARCLY_SIGN_SECRET)", file=sys.stderr)
        return 2
    expiry = args.expiry if args.expiry is not None else int(time.time() + args.expires)
    url = args.url if "://" in args.url or args.url.startswith("/") else f"/{args.url}"
    try:
        print(
            sign_url(
                url, secret, expiry, style="nms" if nms else "jwt", action=args.action, publish_secret=publish_secret
            )
        )
    except ValueError as exc:
        print(f"arcly-trio sign: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "sign":
        return sign_command(args)
    try:
        args = resolve_args(parser, argv)
    except ConfigError as exc:
        for line in exc.problems:
            print(f"arcly-trio: {line}", file=sys.stderr)
        return 2
    configure_logging(args.log_level, f"w{args.worker_index} " if args.worker_dir else "")
    count = worker_count(args.workers)
    if count > 1 and not args.worker_dir:
        return supervise(args, argv, count)
    try:
        trio.run(partial(serve, args, argv=argv))
    except (OSError, BaseExceptionGroup) as exc:
        # Binding the port fails inside serve's nursery, so the OSError comes in a group.
        error = _lone_os_error(exc)
        if error is None:
            raise
        log.error("cannot start: %s", describe_listen_error(error))
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
