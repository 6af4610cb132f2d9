"""``arcly-trio serve``: the streaming server on embedded defaults; ``arcly-trio sign``: signed URLs.

``serve`` runs one engine (see :mod:`.build`) with the RTMP worker, the HTTP worker, and on
request RTMPS and HTTPS, applications from ``--app`` and ``[apps.NAME]`` tables, authorization
(tokens, signed URLs, HTTP hooks), metrics, an audit log and an optional built-in demo stream.
Options come from the command line over a configuration file (``--config``, :mod:`.config`)
over the defaults (declared and resolved in :mod:`.arguments`). SIGINT/SIGTERM stop it
gracefully: publishers and players are told, tasks drain, and the process exits within the
shutdown grace. SIGHUP reloads the configuration file
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

from arcly_trio.cluster import ClusterNode
from arcly_trio.core.excgroups import leaves
from arcly_trio.kernel.engine import Engine
from arcly_trio.ops.signing import sign_url
from arcly_trio.server import worker_api
from arcly_trio.server.arguments import build_parser, resolve_args
from arcly_trio.server.build import Runtime, build_runtime, reload_runtime, reload_tls
from arcly_trio.server.config import ConfigError
from arcly_trio.server.demo import publish_demo
from arcly_trio.server.logs import configure_logging, ready_lines
from arcly_trio.server.memory import HeapTrimmer, heap_trim_available, pin_mmap_threshold
from arcly_trio.server.options import describe_listen_error
from arcly_trio.server.settings import Settings, read_secret
from arcly_trio.server.supervisor import supervise, tell_supervisor_ready, worker_count

__all__ = ["main", "build_parser", "serve", "read_secret", "resolve_args", "configure_logging"]

log = logging.getLogger("arcly_trio.server")


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
                http.srt_port = runtime.srt.port_number if runtime.srt is not None else None
                http.rtsp_port = runtime.rtsp.port if runtime.rtsp is not None else None
                http.rtsps_port = runtime.rtsps.port if runtime.rtsps is not None else None
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
                hls_muxed=settings.hls_muxed,
                demo=settings.demo,
                srt_port=runtime.srt.port_number if runtime.srt is not None else None,
                rtsp_port=runtime.rtsp.port if runtime.rtsp is not None else None,
                rtsps_port=runtime.rtsps.port if runtime.rtsps is not None else None,
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
