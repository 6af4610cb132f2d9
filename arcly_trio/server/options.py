"""What each option of ``arcly-trio serve`` accepts: checked in one place, for the command line
and the configuration file alike.

:data:`RULES` maps every option that takes a number, a URL, a name or a list (by argparse
``dest``) to its check: ports are 0-65535 (``-1`` too where it turns the port off), durations
are finite and more than 0 seconds (0 or more where 0 is documented to mean "off" or "at
once"), counts at least 1 (0 or more where 0 means "off" or "no limit"), URLs and names what
their users accept. :data:`APP_RULES` holds the same checks for the keys of ``[apps.NAME]``
tables. :func:`problem` says what is wrong with one value, :func:`together` what is wrong with
a set of options that are each fine (RTMPS without a certificate, on-demand recording without
a recording directory...), and
:func:`describe_listen_error` names the option of a port that cannot be bound.

The command line parses numbers with :data:`integer` and :data:`number`, which never fail: a
value that is not a number is kept as :class:`Unparsed` and reported with the other problems,
so every wrong option is named at once (argparse would stop at the first).

Error policy: nothing here raises; problems are returned as text, one per value, that names
what the value must be and never quotes a secret (URLs are shown redacted).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from arcly_trio.core.errors import CannotListen, InvalidStreamName
from arcly_trio.core.keys import check_name
from arcly_trio.core.redact import redact_url

__all__ = [
    "Rule",
    "Unparsed",
    "integer",
    "number",
    "RULES",
    "APP_RULES",
    "problem",
    "app_problem",
    "together",
    "PORT_OPTIONS",
    "describe_listen_error",
    "udp_range",
]


class Unparsed(str):
    """A command-line value that should have been a number and is not (reported later, with
    every other problem)."""


class _Parse:
    """An argparse ``type`` that never fails (see the module docstring); ``kind`` tells the
    configuration file what the option's key holds."""

    def __init__(self, kind: str, convert: Callable[[str], Any]) -> None:
        self.kind = kind
        self.convert = convert
        self.__name__ = kind  # argparse names the type in its messages

    def __call__(self, text: str) -> Any:
        try:
            return self.convert(text)
        except ValueError:
            return Unparsed(text)


integer = _Parse("int", int)
number = _Parse("float", float)


@attrs.frozen
class Rule:
    """The numbers one option accepts: ``low`` up to ``high`` (``above``: more than ``low``),
    ``also`` one more value outside that range (``-1``: off), and what to say otherwise."""

    low: float
    high: float | None = None
    above: bool = False
    also: float | None = None
    says: str = ""
    whole: bool = False
    """Only integers (the option is a count or a port)."""

    def __call__(self, value: Any) -> str | None:
        if isinstance(value, Unparsed) or isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"not {'an integer' if self.whole else 'a number'}; {self.says}"
        if self.whole and not isinstance(value, int):
            return f"not an integer; {self.says}"
        if self.also is not None and value == self.also:
            return None
        if not math.isfinite(value):
            return self.says
        if value < self.low or (self.above and value == self.low) or (self.high is not None and value > self.high):
            return self.says
        return None


def _seconds(zero: str = "") -> Rule:
    """Durations: more than 0 seconds, or 0 or more when 0 means ``zero``."""
    if zero:
        return Rule(0, says=f"a duration in seconds, 0 or more (0: {zero})")
    return Rule(0, above=True, says="a duration in seconds, more than 0")


def _count(zero: str = "") -> Rule:
    """Counts: at least 1, or 0 or more when 0 means ``zero``."""
    if zero:
        return Rule(0, whole=True, says=f"a whole number, 0 or more (0: {zero})")
    return Rule(1, whole=True, says="a whole number, at least 1")


_MAX_MIB = 1024 * 1024  # 1 TiB: sizes are held as bytes in integers
PORT = Rule(0, 65535, whole=True, says="a port is 0-65535 (0 picks a free one)")
PORT_OR_OFF = Rule(0, 65535, also=-1, whole=True, says="a port is 0-65535 (0 picks a free one), or -1 for off")


def _hook_url(value: Any) -> str | None:
    from arcly_trio.ops.hooks import check_hook_url  # noqa: PLC0415 - ops is heavier; only when a hook is given

    try:
        check_hook_url(value)
    except ValueError as exc:
        return str(exc)
    return None


def _push_target(value: Any) -> str | None:
    from arcly_trio.relay.push import PushTarget  # noqa: PLC0415

    try:
        PushTarget.parse(value)
    except ValueError as exc:
        return str(exc)
    return None


def _ingest_udp(value: Any) -> str | None:
    from arcly_trio.workers.udpts import parse_ingest_udp  # noqa: PLC0415

    try:
        parse_ingest_udp(value)
    except ValueError as exc:
        return str(exc)
    return None


def _pull_template(value: Any) -> str | None:
    from arcly_trio.protocols.rtmp.url import check_template  # noqa: PLC0415

    app, sep, rest = value.partition("=")
    try:
        if sep and "/" not in app and ":" not in app:
            check_name(app, "application name")
            value = rest
        check_template(value, pull=True)
    except ValueError as exc:  # InvalidStreamName is one too
        return str(exc)
    return None


def _stream_source(value: Any) -> str | None:
    from arcly_trio.relay.sources import parse_source  # noqa: PLC0415

    try:
        parse_source(value)
    except ValueError as exc:  # InvalidStreamName is one too; the message has no credentials
        return str(exc)
    return None


def _app_name(value: Any) -> str | None:
    try:
        check_name(value, "application name")
    except InvalidStreamName as exc:
        return str(exc)
    return None


def _passphrase(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not 10 <= len(value.encode()) <= 79:
        return "an SRT passphrase is 10 to 79 bytes"  # never quoted back: it is a secret
    return None


def _directory_url(value: Any) -> str | None:
    if not value.startswith(("redis://", "rediss://", "unix://")):
        return f"--cluster takes a redis://, rediss:// or unix:// URL, not {redact_url(value)!r}"
    return None


def _sign_actions(value: Any) -> str | None:
    actions = [action.strip() for action in value.split(",")]
    if not [action for action in actions if action] or {action for action in actions if action} - {"publish", "play"}:
        return "publish, play or publish,play"
    return None


def _workers(value: Any) -> str | None:
    if value == "auto":
        return None
    try:
        count = int(value)
    except (TypeError, ValueError):
        count = 0
    return None if count >= 1 else 'a whole number, at least 1, or "auto"'


def udp_range(text: str) -> tuple[int, int] | None:
    """``"LOW-HIGH"`` as ports (``None`` for ``""``); ``ValueError`` if it is not a range of at
    least two ports within 1-65535."""
    if not text:
        return None
    low, dash, high = text.partition("-")
    if not dash or not low.strip().isdigit() or not high.strip().isdigit():
        raise ValueError(text)
    pair = (int(low), int(high))
    if not 0 < pair[0] < pair[1] <= 65535:
        raise ValueError(text)
    return pair


def _udp_range(value: Any) -> str | None:
    try:
        udp_range(str(value))
    except ValueError:
        return "a range of UDP ports LOW-HIGH within 1-65535 (e.g. 8000-8099), or empty for none"
    return None if isinstance(value, str) else "a range of UDP ports LOW-HIGH, as a string"


#: Every ``serve`` option with a check (by argparse ``dest``); ``tests/server/test_config.py`` checks
#: that every option taking a number has one, and that every default passes.
RULES: Mapping[str, Callable[[Any], str | None]] = {
    "rtmp_port": PORT,
    "http_port": PORT_OR_OFF,
    "webrtc_port": PORT_OR_OFF,
    "srt_port": PORT_OR_OFF,
    "srt_latency": Rule(20, 10000, whole=True, says="a latency in milliseconds, from 20 to 10000"),
    "srt_passphrase": _passphrase,
    "rtsp_port": PORT_OR_OFF,
    "rtsp_udp_ports": _udp_range,
    "rtsps_port": PORT_OR_OFF,
    "rtsp_max_sessions_per_address": _count("no cap"),
    "rtmps_port": PORT_OR_OFF,
    "https_port": PORT_OR_OFF,
    # LL-HLS parts are 1/3 s, and HLS players want segments of a few seconds
    "hls_segment": Rule(0.5, 60, says="a duration in seconds, from 0.5 to 60"),
    "hls_window": _count(),
    "hls_max_mib": Rule(1, _MAX_MIB, also=0, says="a size in MiB, from 1 to 1048576 (or 0: no cap)"),
    "record_segment": Rule(1, 86400, says="a duration in seconds, from 1 to 86400"),
    "record_max_age": _seconds("keep every segment"),
    "record_max_bytes": _count("no cap"),
    "dvr_window": Rule(0, 21600, says="a duration in seconds, from 0 (off) to 21600 (6 hours)"),
    "apps": _app_name,
    "gop_cache": _count("off"),
    "subscriber_queue": _count(),
    "lag_budget": _count("evict a player at its first dropped frame"),
    "reconnect_grace": _seconds("none"),
    "max_publish_bitrate": _count("no limit"),
    "batch_interval": _seconds("at once"),
    "idle_timeout": _seconds("never reap"),
    "max_publishers": _count(),
    "max_publishers_per_ip": _count("no limit"),
    "publish_start_timeout": _seconds("only the idle timeout"),
    "sign_actions": _sign_actions,
    "on_publish": _hook_url,
    "on_play": _hook_url,
    "on_event": _hook_url,
    "hook_timeout": _seconds(),
    "audit_max_mib": Rule(0.001, _MAX_MIB, says="a size in MiB, from 0.001 (1 KiB) to 1048576"),
    "audit_backups": _count("no rotated files kept"),
    "max_connections": _count(),
    "max_idle_per_ip": _count(),
    "max_connections_per_ip": _count("no limit"),
    "setup_timeout": _seconds(),
    "connection_idle_timeout": _seconds(),
    "write_timeout": _seconds(),
    "max_ingest_memory": Rule(0, _MAX_MIB, above=True, says="a size in MiB, more than 0 and at most 1048576"),
    "max_pulls": _count(),
    "auth_max_delay": _seconds(),
    "heap_trim_interval": _seconds("off"),
    "push": _push_target,
    "pull": _pull_template,
    "pull_idle": _seconds(),
    "source": _stream_source,
    "ingest_udp": _ingest_udp,
    "ingest_udp_idle": _seconds(),
    "workers": _workers,
    "cluster": _directory_url,
    "cluster_ttl": _seconds(),
    "shutdown_grace": _seconds("at once"),
}

#: The checks of the ``[apps.NAME]`` keys that take numbers (the same as their global options').
APP_RULES: Mapping[str, Callable[[Any], str | None]] = {
    "gop-cache": RULES["gop_cache"],
    "gop-cache-bytes": _count("no cap"),
    "queue": RULES["subscriber_queue"],
    "lag-budget": RULES["lag_budget"],
    "grace": RULES["reconnect_grace"],
    "batch-interval": RULES["batch_interval"],
    "max-publish-bitrate": RULES["max_publish_bitrate"],
    "record-max-age": RULES["record_max_age"],
    "record-max-bytes": RULES["record_max_bytes"],
    "dvr-window": RULES["dvr_window"],
    "on-publish": _hook_url,
    "on-play": _hook_url,
}


def problem(dest: str, value: Any) -> str | None:
    """What is wrong with ``value`` for the option ``dest`` (``None``: nothing; a list is
    checked item by item, ``None`` means the option was not given)."""
    check = RULES.get(dest)
    if check is None or value is None:
        return None
    if isinstance(value, list):
        for item in value:
            found = check(item)
            if found:
                return found
        return None
    return check(value)


def app_problem(key: str, value: Any) -> str | None:
    """What is wrong with ``value`` for the ``[apps.NAME]`` key ``key`` (``None``: nothing)."""
    check = APP_RULES.get(key)
    return None if check is None or value is None else check(value)


def together(values: Mapping[str, Any]) -> list[str]:
    """What is wrong with options that are each fine (by ``dest``), as lines naming them."""
    found = []
    for port in ("rtmps_port", "https_port", "rtsps_port"):
        if values.get(port, -1) >= 0 and not (values.get("tls_cert") and values.get("tls_key")):
            found.append(f"--{port.replace('_', '-')} {values[port]}: needs --tls-cert and --tls-key")
    if values.get("record_on_demand") and not values.get("record"):
        found.append("--record-on-demand: needs --record DIR (the recording directory)")
    return found


#: The option of each protocol worker's port, for the messages of ports that cannot be bound.
PORT_OPTIONS = {
    "rtmp": "--rtmp-port",
    "rtmps": "--rtmps-port",
    "http": "--http-port",
    "https": "--https-port",
    "rtsp": "--rtsp-port",
    "rtsps": "--rtsps-port",
}


def describe_listen_error(error: OSError) -> str:
    """``error`` for the log: a port that cannot be bound names its option and address
    (``--rtmp-port 1935: 0.0.0.0:1935 is already in use``)."""
    if isinstance(error, CannotListen):
        option = PORT_OPTIONS.get(error.protocol, error.protocol)
        return f"{option} {error.port}: {error}"
    return str(error)
