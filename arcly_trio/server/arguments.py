"""The command line's options: the parser of ``arcly-trio`` (``serve``, ``sign``) and the one
step that resolves a command line over its configuration file over the defaults.

:func:`build_parser` declares every option with its help and default (the checks of their values
are in :mod:`.options`, shared with the configuration file); :func:`resolve_args` gives the
options ``serve`` runs with, which :class:`~.settings.Settings` then types.

Error policy: :func:`resolve_args` raises :class:`~.config.ConfigError` with every problem
found, of the command line and of the file, at once (one line each, naming the option; a secret
is never quoted); argparse's own errors (an unknown option) exit with code 2 as argparse does.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import arcly_trio
from arcly_trio.kernel.spec import DEFAULT_MAX_PUBLISH_BITRATE
from arcly_trio.server.config import (
    ConfigError,
    command_line_problems,
    explicit_options,
    load,
    option_keys,
    resolve,
    serve_parser,
)
from arcly_trio.server.options import integer, number, together

__all__ = ["build_parser", "resolve_args"]


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
        "--hls-muxed",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="fmp4/ll HLS: one rendition carrying video and audio (half the LL-HLS requests; no DASH) (default off)",
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
        "--dvr-window",
        type=number,
        default=0.0,
        metavar="SECONDS",
        help="keep this much of each live HLS playlist so players can seek back and return to live "
        "(DVR; segments on disk; up to 21600; default 0: off)",
    )
    serve_p.add_argument(
        "--record",
        metavar="DIR",
        help="record every publish session as segments DIR/{app}/{stream}/{UTC start}.mp4 with an index "
        "(docs/recording.md); with --record-on-demand only the streams asked for by the API",
    )
    serve_p.add_argument(
        "--record-format",
        choices=["fmp4", "ts", "flv"],
        default="fmp4",
        help="recording segments as fragmented MP4 (default), MPEG-TS or FLV",
    )
    serve_p.add_argument(
        "--record-segment",
        type=number,
        default=60.0,
        metavar="SECONDS",
        help="cut recording segments on the first keyframe after this long, from 1 to 86400 (default 60)",
    )
    serve_p.add_argument(
        "--record-max-age",
        type=number,
        default=0.0,
        metavar="SECONDS",
        help="delete recorded segments older than this, per application (default 0: keep them)",
    )
    serve_p.add_argument(
        "--record-max-bytes",
        type=integer,
        default=0,
        metavar="BYTES",
        help="keep at most this many bytes of recordings per application, oldest deleted first (default 0: no cap)",
    )
    serve_p.add_argument(
        "--record-on-demand",
        action="store_true",
        help="record only the streams asked for (POST /api/recordings/{app}/{stream}) and the applications "
        "with record = true in their [apps.NAME] table",
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
    srt = serve_p.add_argument_group("SRT: publish and play MPEG-TS over SRT (see docs/srt.md)")
    srt.add_argument(
        "--srt-port",
        type=integer,
        default=8890,
        help="UDP port for every SRT session, publishers and players (default 8890; 0 picks one; -1 = off; "
        "--workers N use PORT+index)",
    )
    srt.add_argument(
        "--srt-latency",
        type=integer,
        default=120,
        metavar="MS",
        help="SRT latency (TSBPD) in milliseconds: how long a lost packet may be waited for; the larger of "
        "this and the caller's wins (default 120)",
    )
    srt.add_argument(
        "--srt-passphrase",
        default=None,
        metavar="SECRET",
        help="require SRT encryption with this passphrase (10 to 79 characters; AES-128/192/256 as the caller "
        "chooses); without it, encrypted callers are refused (default: none)",
    )
    rtsp = serve_p.add_argument_group("RTSP: publish and play (see docs/rtsp.md)")
    rtsp.add_argument(
        "--rtsp-port",
        type=integer,
        default=8554,
        help="RTSP port: play any stream, publish with ANNOUNCE/RECORD (default 8554; 0 picks one; -1 = off)",
    )
    rtsp.add_argument(
        "--rtsp-udp-ports",
        default="",
        metavar="LOW-HIGH",
        help="UDP ports for RTP/RTCP over UDP, a pair per track (e.g. 8000-8099; default: none, TCP interleaved only)",
    )
    rtsp.add_argument(
        "--rtsps-port",
        type=integer,
        default=-1,
        metavar="PORT",
        help="also serve RTSPS (RTSP over TLS, TCP interleaved only) on this port (needs --tls-cert, --tls-key; "
        "default off)",
    )
    rtsp.add_argument(
        "--rtsp-max-sessions-per-address",
        type=integer,
        default=64,
        metavar="N",
        help="RTSP sessions (publish or play) one client address may hold at once, on RTSP and RTSPS "
        "each (default 64; 0 = no cap)",
    )
    webrtc = serve_p.add_argument_group("WebRTC: WHIP publish and WHEP play (see docs/webrtc.md)")
    webrtc.add_argument(
        "--webrtc-port",
        type=integer,
        default=8189,
        help="UDP port for every WebRTC session's media; WHIP/WHEP are served on the HTTP ports "
        "(default 8189; 0 picks one; -1 = off; --workers N use PORT+index)",
    )
    webrtc.add_argument(
        "--webrtc-host",
        action="append",
        default=[],
        metavar="ADDRESS",
        help="an address announced to WebRTC peers as a candidate (behind NAT: the public one); repeatable "
        "(default: --public-host, or --host, or this machine's addresses)",
    )
    webrtc.add_argument(
        "--ice-server",
        action="append",
        default=[],
        metavar="URL",
        help="a STUN/TURN URL offered to WHIP/WHEP clients in Link headers; repeatable (default none)",
    )
    webrtc.add_argument(
        "--webrtc-transports",
        choices=["udp,tcp", "udp", "tcp"],
        default="udp,tcp",
        help="the WebRTC candidates announced: UDP and ICE-TCP passive on the same port number (default), "
        "or only one (tcp: for networks that block UDP)",
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
    ops.add_argument(
        "--http2",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="offer HTTP/2 on the HTTPS port (ALPN h2; what Safari and iOS need for Low-Latency HLS); "
        "HTTP/1.1 clients are served as before (default on; --no-http2: HTTP/1.1 only)",
    )
    ops.add_argument(
        "--http2-cleartext",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="also serve HTTP/2 with prior knowledge (h2c) on the plain HTTP port, for clients and proxies "
        "that open with the HTTP/2 preface; browsers never do (default off)",
    )
    ops.add_argument(
        "--http-session-hub",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="serve live LL-HLS viewers' plain HTTP/1.1 connections from one task of each HTTP worker "
        "(a private epoll, no task wake per request; Linux; default on; --no-http-session-hub: a task each)",
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
        help="a play of a stream that is not here pulls it from this rtmp://, http:// "
        "(HTTP-FLV) or rtsp:// (IP camera) URL template, e.g. rtmp://origin/{app}/{stream}; repeatable per app",
    )
    relay.add_argument(
        "--source",
        action="append",
        default=[],
        metavar="APP/STREAM=URL",
        help="this stream comes from this rtsp:// (IP camera), rtmp:// or http:// (HTTP-FLV) URL: pulled on "
        "the first play and stopped when idle, or always (reconnecting) with ?always=1 on the URL; repeatable",
    )
    relay.add_argument(
        "--pull-idle",
        type=number,
        default=10.0,
        metavar="SECONDS",
        help="stop a pull after this long without a viewer (default 10)",
    )
    relay.add_argument(
        "--ingest-udp",
        action="append",
        default=[],
        metavar="[APP/STREAM=]udp://HOST:PORT",
        help="publish APP/STREAM (default live/udp-PORT) from the MPEG-TS datagrams sent to this "
        "address (a multicast group is joined; ?localaddr=IP picks its interface); repeatable",
    )
    relay.add_argument(
        "--ingest-udp-idle",
        type=number,
        default=5.0,
        metavar="SECONDS",
        help="end a UDP MPEG-TS publish after this long without a datagram (default 5)",
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
            config = load(args.config, option_keys(serve_parser(parser)))
        except ConfigError as exc:
            problems += exc.problems
    if problems:
        raise ConfigError(problems)
    args = resolve(parser, argv, args, config)
    problems = together(vars(args))
    if problems:
        raise ConfigError(problems)
    return args
