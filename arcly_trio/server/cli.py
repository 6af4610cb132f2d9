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
import signal
import sys
from collections.abc import Sequence
from functools import partial

import trio

from ..kernel.auth import AllowAll, Authenticator, TokenAuthenticator
from ..kernel.engine import Engine
from ..kernel.spec import AppSpec
from ..protocols.http import HttpServer
from ..protocols.rtmp.server import RtmpServer
from ..services import FlvRecorder, HlsService
from .demo import publish_demo

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
                         help="publishers must present ?token=SECRET (players are free)")
    serve_p.add_argument("--demo", action="store_true", help="publish a built-in looping test stream to live/demo")
    serve_p.add_argument("--shutdown-grace", type=float, default=4.0, metavar="SECONDS",
                         help="how long SIGINT/SIGTERM waits for connections to drain (default 4)")
    serve_p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return parser


def build_engine(args: argparse.Namespace) -> tuple[Engine, RtmpServer, HttpServer | None]:
    apps = args.apps or ["live"]
    if args.demo and "live" not in apps:
        apps.append("live")
    authenticator: Authenticator = (
        TokenAuthenticator(publish_token=args.publish_token) if args.publish_token else AllowAll()
    )
    rtmp = RtmpServer(args.host, args.rtmp_port)
    builder = (
        Engine.builder()
        .max_publishers(args.max_publishers)
        .idle_timeout(args.idle_timeout if args.idle_timeout > 0 else None)
        .authenticator(authenticator)
        .protocol(rtmp)
    )
    http: HttpServer | None = None
    if args.http_port >= 0:
        hls = HlsService(target_duration=args.hls_segment, window=args.hls_window) if args.hls else None
        http = HttpServer(args.host, args.http_port, hls=hls)
        builder.protocol(http)
        if hls is not None:
            builder.service(hls)
    if args.record:
        builder.service(FlvRecorder(args.record))
    for name in dict.fromkeys(apps):
        builder.application(AppSpec(name, gop_cache_frames=args.gop_cache, hls=args.hls, record=bool(args.record)))
    return builder.build(), rtmp, http


async def serve(args: argparse.Namespace, *, task_status: trio.TaskStatus[Engine] = trio.TASK_STATUS_IGNORED) -> None:
    """Run the server until SIGINT/SIGTERM (or cancellation)."""
    engine, rtmp, http = build_engine(args)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
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
            if args.demo:
                nursery.start_soon(partial(publish_demo, engine, "live/demo", token=args.publish_token))
                log.info("demo stream: ffplay rtmp://127.0.0.1:%d/live/demo", rtmp.port)
            # Everything allocated at start-up lives as long as the server: keep it out of
            # the cyclic collector's way (at thousands of players GC is a third of the CPU).
            gc.collect()
            gc.freeze()
            task_status.started(engine)
            async for signum in signals:
                log.info("%s received: shutting down (grace %g s)", signal.Signals(signum).name, args.shutdown_grace)
                break
            await engine.shutdown(grace=args.shutdown_grace)
            nursery.cancel_scope.cancel()
    log.info("arcly-trio stopped")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
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
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc if isinstance(exc, OSError) else None


if __name__ == "__main__":
    sys.exit(main())
