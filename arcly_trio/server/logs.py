"""The log of ``arcly-trio serve``: one line per event, one level per kind of event.

Every protocol logs the same kind of event at the same level (README, Logs):

=====================================================================  ========  ==============================
event                                                                  level     lines
=====================================================================  ========  ==============================
listening, ready (with URLs that reach it), signals, reloads, stopped  INFO      one each
a publish or play starts or stops, on every protocol; a pull or push   INFO      one at the start, one at the
starts or stops; HLS packaging starts or ends                                    end (with why)
a client refused what it asked: unknown application, stream not        INFO      one per client, then one per
published, invalid name, already published, publisher limits                     address and burst
a client refused by authorization (token, signature, hook)             WARNING   ``arcly_trio.auth``: the first
                                                                                 of a burst per address and
                                                                                 action, then summaries; the
                                                                                 protocol's own line is DEBUG
a client too slow or silent: handshake, request head, set-up and       INFO      one per client, then one per
idle timeouts; a player that stops reading                                       address and burst
a client that broke its protocol (malformed bytes, oversized           WARNING   one per client, then one per
messages, bad requests)                                                          address and burst
connections refused or evicted by the connection limits                WARNING   one per burst
a publisher cut by its bitrate limit, a player evicted past its lag    WARNING   one each
budget, a push or pull failing, the cluster directory unreachable
a bug (an exception in a handler, stream, service or authenticator),   ERROR     one each, with the traceback
a storage failure
a client that went away (reset, closed), relays between workers,       DEBUG     one each
registrations in the workers' directory, allowed authorizations,
every HTTP request (an access log), RTMP connects, lagging players
=====================================================================  ========  ==============================

"Then one per address and burst": :class:`~arcly_trio.workers.clientlog.ClientLog` (10 lines of a
kind per address in 10 s, then a summary).

Other libraries' loggers (coredis, which logs every connection retry and "No matching script"
at INFO in normal operation; hpack; anyio...) are held to warnings unless ``--log-level
debug``; httpx and httpcore always (they log a hook's whole URL, its password and query
included: the hooks log their own calls, redacted).

"Ready" is logged once the server listens (with ``--workers``, by the supervisor once every
worker listens: :func:`ready_lines`), with URLs a client can use: a server listening on every
interface (``0.0.0.0``, ``::``) is reached at ``127.0.0.1`` from its own machine and at its name
(``--public-host``, else the machine's name) from others; the listening address is said too.

Error policy: nothing here raises but :func:`configure_logging` for a level that is not one
(``AttributeError``; the command line allows only the four).
"""

from __future__ import annotations

import logging
import socket
import sys
from collections.abc import Sequence

__all__ = ["configure_logging", "ThirdPartyFilter", "ALWAYS_QUIET", "ready_lines", "local_host"]

#: Libraries whose records are held to warnings at every level (they show secrets).
ALWAYS_QUIET = ("httpx", "httpcore")


class ThirdPartyFilter(logging.Filter):
    """Lets every ``arcly_trio`` record through, and other libraries' records only from
    warnings up, unless the root logger is at debug level (then all but :data:`ALWAYS_QUIET`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        if name == "arcly_trio" or name.startswith("arcly_trio."):
            return True
        if record.levelno >= logging.WARNING:
            return True
        if name.partition(".")[0] in ALWAYS_QUIET:
            return False
        return logging.getLogger().getEffectiveLevel() <= logging.DEBUG


def configure_logging(level: str, prefix: str = "") -> None:
    """Log to stderr at ``level`` (``prefix`` names the worker), other libraries held to
    warnings (see the module docstring)."""
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format=f"%(asctime)s {prefix}%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for handler in logging.getLogger().handlers:
        if not any(isinstance(found, ThirdPartyFilter) for found in handler.filters):
            handler.addFilter(ThirdPartyFilter())
    for noisy in ALWAYS_QUIET:  # not even made into records
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


_EVERY_INTERFACE = ("", "0.0.0.0", "::")


def local_host(host: str) -> str:
    """The host part of a URL that reaches a listener on ``host`` from this machine."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def ready_lines(
    *,
    host: str,
    public_host: str | None,
    rtmp_port: int,
    rtmps_port: int | None,
    http: Sequence[tuple[str, int]],
    apps: Sequence[str],
    hls_variant: str | None,
    demo: bool,
    srt_port: int | None = None,
    srt_workers: int = 1,
    rtsp_port: int | None = None,
    rtsps_port: int | None = None,
    hls_muxed: bool = False,
) -> list[str]:
    """What ``serve`` logs once it listens: the URLs to publish, play and open the pages at
    (``http``: each HTTP worker's scheme and port), reachable from this machine, and from other
    machines when it listens on every interface (see the module docstring). ``hls_variant``:
    ``None`` without HLS (DASH comes with ``fmp4`` and ``ll``, unless ``hls_muxed``). ``srt_port``, ``rtsp_port``,
    ``rtsps_port``: ``None`` when that listener is off; ``srt_workers``: with ``--workers N`` each
    worker's SRT port is ``srt_port`` + its index."""
    here = local_host(host)
    elsewhere = public_host or (socket.gethostname() if host in _EVERY_INTERFACE else None)
    where = ""
    if host in _EVERY_INTERFACE:
        where = f"; listening on {host or '0.0.0.0'}:{rtmp_port}"
    if elsewhere and elsewhere != host:
        where += f"; from other machines rtmp://{elsewhere}:{rtmp_port}/{{app}}/{{stream}}"
    lines = [f"arcly-trio ready: rtmp://{here}:{rtmp_port}/{{app}}/{{stream}} (apps: {', '.join(apps)}){where}"]
    if rtmps_port is not None:
        lines.append(f"RTMPS rtmps://{elsewhere or here}:{rtmps_port}/{{app}}/{{stream}}")
    if srt_port is not None:
        lines.append(
            f"SRT srt://{here}:{srt_port}?streamid=publish:{{app}}/{{stream}} (play: streamid=read:{{app}}/{{stream}})"
            + (f"; worker ports {srt_port}-{srt_port + srt_workers - 1}" if srt_workers > 1 else "")
        )
    if rtsp_port is not None or rtsps_port is not None:
        urls = [f"rtsp://{here}:{rtsp_port}/{{app}}/{{stream}}"] if rtsp_port is not None else []
        if rtsps_port is not None:
            urls.append(f"rtsps://{elsewhere or here}:{rtsps_port}/{{app}}/{{stream}}")
        lines.append(f"RTSP {', '.join(urls)} (play, and publish with ANNOUNCE/RECORD)")
    for scheme, port in http:
        base = f"{scheme}://{here}:{port}"
        lines.append(
            f"pages {base}/ (status), /watch/{{app}}/{{stream}}, /publish/{{app}}/{{stream}}; frames "
            "/{app}/{stream}/frames; API /api/streams, /api/sessions, /api/health; metrics /metrics"
        )
        lines.append(
            f"HTTP-FLV {base}/{{app}}/{{stream}}.flv, WebSocket-FLV on the same path"
            + (", HLS /{app}/{stream}/index.m3u8" if hls_variant else "")
            + (", DASH /{app}/{stream}/index.mpd" if hls_variant in ("fmp4", "ll") and not hls_muxed else "")
        )
    if demo:
        lines.append(f"demo stream: ffplay rtmp://{here}:{rtmp_port}/live/demo")
    return lines
