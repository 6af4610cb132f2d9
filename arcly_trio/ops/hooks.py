"""HTTP callbacks, the nginx-rtmp / SRS convention: ask a web service before a publish or a play,
and tell it what happens.

:class:`HttpHooks` is an authenticator (register it with ``EngineBuilder.authenticator``, alone
or inside a composite, see :mod:`.composite`): before a publish it POSTs to ``on_publish``,
before a play to ``on_play``, over every protocol (the engine's one authorization path), a JSON
document::

    {"action": "publish", "app": "live", "stream": "cam", "query": {"token": "..."},
     "address": "203.0.113.7", "port": 50412, "protocol": "rtmp", "client_id": "kq3Fz0bN8hXcV1aE",
     "node": "edge-1"}

A ``2xx`` answer allows; a ``3xx`` answer with a ``Location`` renames the stream, as nginx-rtmp's
redirect does (``Location: newname`` keeps the application, ``/app/name`` or a URL whose path is
``/app/name`` names both; the publish or play then goes there); a ``4xx`` (or a ``3xx`` without
``Location``) refuses, with the status and the start of the body (escaped) as the reason (the
hook's words for the client); a ``5xx`` refuses as a failure does (below). The body of the
answer is read up to ``max_body`` bytes and otherwise ignored.

Each call runs in its own cancel scope of ``timeout`` seconds, in the asking client's own task
and on a connection of its own (the pool has no cap, see ``_LIMITS``), so a slow or dead hook,
or one that hangs for some streams only, delays only the clients waiting for it; on a timeout or a connection
error the client is refused, unless ``fail_open`` (then allowed, with a warning). For these and
a ``5xx`` answer the client is told only ``authorization service unavailable`` (for a redirect
to an invalid name: ``authorization service gave an invalid answer``); the log says what went
wrong, with the hook's URL stripped of its user, password and query, at most once per
``log_interval`` seconds. Plays over HLS and DASH are requests, a player makes several a
second: an allowed answer for those is kept ``cache_seconds`` for the same stream, address and
query (at most ``cache_size`` answers).

:class:`EventHook` is an observer that POSTs fire-and-forget notifications to ``on_event``::

    {"event": "publish-start" | "publish-end" | "play-start" | "play-end" | "recording-start" | "recording-done"
              | "stream-reaped", "app": ..., "stream": ..., "at": UNIX_SECONDS, ...}

from a bounded queue (``capacity``) drained by one task: emitting never waits, and what does not
fit is dropped and counted (:attr:`EventHook.dropped`); a failed POST is counted
(:attr:`EventHook.failed`) and logged once per ``log_interval`` seconds.

Both use one httpx ``AsyncClient`` (trio-native) for as long as the engine runs (their ``run``,
started by the engine), add a ``hook-reachable:...`` health check (a TCP connection to the hook's
host, not critical), and report every call to the observers as a :class:`HookCalled` service
event (its latency: the metrics' hook histogram).

Error policy: a hook that fails refuses (or allows with ``fail_open``) with a generic reason,
never raises anything but ``Unauthorized``; its answers are peer text, escaped in logs and
reasons. Bad URLs given to the constructors raise ``ValueError``. A hook URL's secrets (user
name, password, query values) never leave this module: health checks are named after its host
and port, log lines show it redacted and error texts have its secrets scrubbed
(:mod:`arcly_trio.core.redact`).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import urlsplit

import attrs
import httpx
import trio

from arcly_trio.core.errors import InvalidStreamName, Unauthorized
from arcly_trio.core.keys import Credentials, StreamKey
from arcly_trio.core.redact import redact_url, scrub
from arcly_trio.core.text import printable
from arcly_trio.kernel.events import (
    ServiceEvent,
    StreamEvent,
    StreamPublished,
    StreamReaped,
    StreamUnpublished,
    SubscriberJoined,
    SubscriberLeft,
)
from arcly_trio.kernel.health import CheckResult
from arcly_trio.kernel.observe import Observer
from arcly_trio.ops._outbox import LogLimiter, Outbox

__all__ = [
    "HttpHooks",
    "EventHook",
    "HookCalled",
    "check_hook_url",
    "parse_redirect",
    "HOOK_UNAVAILABLE",
    "HOOK_INVALID",
]

log = logging.getLogger("arcly_trio.hooks")

HOOK_UNAVAILABLE = "authorization service unavailable"
"""The reason a client is given when a hook times out or cannot be reached (the log has why)."""
HOOK_INVALID = "authorization service gave an invalid answer"
"""The reason a client is given when a hook's redirect names no valid stream (the log has it)."""

_CACHED_PROTOCOLS = frozenset({"hls", "dash"})


_LIMITS = httpx.Limits(max_connections=None, max_keepalive_connections=20)
"""No cap on the hook connections at once: httpx's default (100) made every client beyond the
hundredth wait in the pool's queue behind the ones the hook does not answer (a legitimate
newcomer waited for the hung ones' timeouts), and the pool's queue costs work per queued
request on every change (hundreds queued stalled the loop for 400+ ms). What bounds them is
what bounds the clients being authorized: the workers' connection limits and the throttle's
two authorizations in flight per address. Up to 20 are kept alive between calls."""


@attrs.frozen(slots=True)
class HookCalled(ServiceEvent):
    """One HTTP hook call: ``callback`` (``on_publish``, ``on_play``, ``on_event``), ``outcome``
    (``allowed``, ``renamed``, ``refused``, ``failed``, ``timeout``, ``sent``), the HTTP
    ``status`` (0 without an answer) and how long it took (``seconds``)."""

    callback: str = ""
    outcome: str = ""
    status: int = 0
    seconds: float = 0.0


def check_hook_url(url: str) -> str:
    """``url`` if it is an ``http://`` or ``https://`` URL with a host; ``ValueError`` if not."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"a hook URL must be http:// or https:// with a host, not {redact_url(url)!r}")
    return url


def parse_redirect(location: str, key: StreamKey) -> StreamKey:
    """The key a hook's ``Location`` names (see the module docstring); ``InvalidStreamName``
    (a ``ValueError``) if it names none."""
    parts = urlsplit(location.strip())
    path = parts.path if (parts.scheme or parts.netloc) else location.strip().partition("?")[0]
    segments = [segment for segment in path.split("/") if segment]
    if segments and segments[-1].endswith(".flv"):
        segments[-1] = segments[-1][: -len(".flv")]
    if len(segments) == 1:
        return StreamKey(key.app, segments[0])
    if len(segments) == 2:
        return StreamKey(segments[0], segments[1])
    raise InvalidStreamName(location[:128], "a redirect names /app/stream or stream")


class _HookBase:
    """What both hooks share: the client's lifetime, the engine, reachability checks."""

    name = "hooks"
    timeout: float
    _urls: dict[str, str]

    def __init__(self) -> None:
        self._client: httpx.AsyncClient | None = None
        self._engine: Any = None
        self._checks: list[Any] = []

    def _add_checks(self) -> None:
        engine = self._engine
        for check in self._checks:
            engine.health.remove(check.name, check)
        self._checks = [
            engine.health.add(
                f"hook-reachable:{hook} {_host_port(url)}",
                lambda url=url: _reachable(url, self.timeout),
                critical=False,
                timeout=self.timeout + 1,
                interval=10.0,
                replace=True,
            )
            for hook, url in self._urls.items()
        ]

    async def _serve(self, engine: Any, task_status: trio.TaskStatus[None], body: Any = None) -> None:
        self._engine = engine
        self._add_checks()
        try:
            async with httpx.AsyncClient(timeout=None, follow_redirects=False, limits=_LIMITS) as client:
                self._client = client
                task_status.started()
                if body is None:
                    await trio.sleep_forever()
                await body()
        finally:
            self._client = None
            for check in self._checks:
                engine.health.remove(check.name, check)
            self._checks = []

    def _tell(self, key: StreamKey, hook: str, outcome: str, status: int, seconds: float, detail: str = "") -> None:
        engine = self._engine
        if engine is not None:
            engine.observers.notify(
                HookCalled(key, trio.current_time(), "hooks", hook, detail, hook, outcome, status, seconds)
            )

    async def _post(self, url: str, document: Mapping[str, Any], max_body: int) -> tuple[int, str, bytes]:
        """POST ``document``; the status, the ``Location`` and at most ``max_body`` bytes of
        the body. httpx's errors propagate."""
        client = self._client
        if client is None:  # not run by an engine (a library user's own wiring): one-off client
            async with httpx.AsyncClient(timeout=None, follow_redirects=False, limits=_LIMITS) as once:
                return await _post_with(once, url, document, max_body)
        return await _post_with(client, url, document, max_body)


async def _post_with(
    client: httpx.AsyncClient, url: str, document: Mapping[str, Any], max_body: int
) -> tuple[int, str, bytes]:
    async with client.stream("POST", url, json=document) as response:
        body = b""
        async for chunk in response.aiter_bytes():
            body += chunk[: max_body - len(body)]
            if len(body) >= max_body:
                break
        return response.status_code, response.headers.get("location", ""), body


def _address(url: str) -> tuple[str, int]:
    """The host and port a hook URL connects to (never its user name or password)."""
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


def _host_port(url: str) -> str:
    host, port = _address(url)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _reachable(url: str, timeout: float) -> CheckResult:
    host, port = _address(url)
    where = _host_port(url)
    try:
        with trio.fail_after(timeout):
            stream = await trio.open_tcp_stream(host, port)
        await stream.aclose()
    except (OSError, trio.TooSlowError) as exc:
        return CheckResult(False, f"{where} unreachable: {scrub(str(exc), url) or 'timed out'}")
    return CheckResult(True, f"{where} accepts connections")


class HttpHooks(_HookBase):
    """``on_publish`` / ``on_play`` HTTP callbacks as an authenticator (see the module docstring).

    Args:
        on_publish, on_play: the URLs to ask (``None``: that action is not asked).
        timeout: seconds one call may take.
        fail_open: allow when the hook cannot be reached or times out (default: refuse).
        cache_seconds: how long an allowed HLS/DASH play is remembered (0: never).
        cache_size: how many such answers are remembered at most.
        max_body: the most bytes of an answer read.
        node: this server's name, sent as ``node``.
        log_interval: a failing hook is logged at most once per this many seconds (with a count
            of the failures in between).
    """

    def __init__(
        self,
        on_publish: str | None = None,
        on_play: str | None = None,
        *,
        timeout: float = 3.0,
        fail_open: bool = False,
        cache_seconds: float = 30.0,
        cache_size: int = 10000,
        max_body: int = 65536,
        node: str = "",
        log_interval: float = 10.0,
    ) -> None:
        super().__init__()
        if timeout <= 0:
            raise ValueError("the hook timeout must be > 0")
        self._urls = {
            hook: check_hook_url(url) for hook, url in (("on_publish", on_publish), ("on_play", on_play)) if url
        }
        self.timeout = timeout
        self.fail_open = fail_open
        self.cache_seconds = cache_seconds
        self.cache_size = cache_size
        self.max_body = max_body
        self.node = node
        self.calls = 0
        self.failures = 0
        self._failures = LogLimiter(log, log_interval)
        self._cache: OrderedDict[tuple[Any, ...], tuple[float, StreamKey]] = OrderedDict()

    async def run(self, engine: Any, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep one HTTP client while the engine runs (the engine starts this)."""
        await self._serve(engine, task_status)

    async def authorize_publish(self, key: StreamKey, credentials: Credentials) -> StreamKey:
        return await self.ask("publish", key, credentials)

    async def authorize_play(self, key: StreamKey, credentials: Credentials) -> StreamKey:
        return await self.ask("play", key, credentials)

    def document(self, action: str, key: StreamKey, credentials: Credentials) -> dict[str, Any]:
        """What is POSTed for ``action`` on ``key``."""
        address, port = credentials.peer if credentials.peer is not None else (None, None)
        return {
            "action": action,
            "app": key.app,
            "stream": key.name,
            "query": dict(credentials.query),
            "address": address,
            "port": port,
            "protocol": credentials.protocol,
            "client_id": credentials.client_id,
            "node": self.node,
        }

    async def ask(self, action: str, key: StreamKey, credentials: Credentials) -> StreamKey:
        """Ask the hook of ``action``: the key to go on with, or ``Unauthorized``."""
        hook = f"on_{action}"
        url = self._urls.get(hook)
        if url is None:
            return key
        cache_key = self._cache_key(action, key, credentials)
        if cache_key is not None:
            cached = self._cache.get(cache_key)
            if cached is not None and cached[0] > trio.current_time():
                return cached[1]
        self.calls += 1
        started = trio.current_time()
        failure = ""
        answer: tuple[int, str, bytes] | None = None
        with trio.move_on_after(self.timeout):
            try:
                answer = await self._post(url, self.document(action, key, credentials), self.max_body)
            except (httpx.HTTPError, OSError) as exc:
                failure = f"failed: {type(exc).__name__}: {scrub(str(exc), url)}"
        seconds = trio.current_time() - started
        if answer is None:
            self.failures += 1
            outcome = "failed" if failure else "timeout"
            failure = failure or f"timed out after {self.timeout:g} s"
            self._tell(key, hook, outcome, 0, seconds, failure)
            verdict = "allowed: fail-open" if self.fail_open else "refused"
            self._failures.failed(
                "%s hook %s for %s of %s (%s; %s)",
                hook,
                printable(failure),
                action,
                key,
                printable(redact_url(url)),
                verdict,
            )
            if self.fail_open:
                return key
            raise Unauthorized(key.app, key.name, action, HOOK_UNAVAILABLE)
        status, location, body = answer
        if 200 <= status < 300:
            self._tell(key, hook, "allowed", status, seconds)
            self._remember(cache_key, key)
            return key
        if 300 <= status < 400 and location:
            try:
                target = parse_redirect(location, key)
            except InvalidStreamName:
                self._tell(key, hook, "refused", status, seconds, "bad redirect")
                self._failures.failed(
                    "%s hook redirected %s of %s to an invalid name %r (%s; refused)",
                    hook,
                    action,
                    key,
                    printable(location, 80),
                    printable(redact_url(url)),
                )
                raise Unauthorized(key.app, key.name, action, HOOK_INVALID) from None
            self._tell(key, hook, "renamed", status, seconds, str(target))
            self._remember(cache_key, target)
            return target
        self._tell(key, hook, "refused", status, seconds)
        said = printable(body.decode("utf-8", "replace").strip(), 120)
        if status >= 500 or status < 200:  # the service broke: its words are not for the client
            self._failures.failed(
                "%s hook answered %d for %s of %s (%s; refused)%s",
                hook,
                status,
                action,
                key,
                printable(redact_url(url)),
                f": {said}" if said else "",
            )
            raise Unauthorized(key.app, key.name, action, HOOK_UNAVAILABLE)
        raise Unauthorized(key.app, key.name, action, f"{hook} hook answered {status}" + (f": {said}" if said else ""))

    def _cache_key(self, action: str, key: StreamKey, credentials: Credentials) -> tuple[Any, ...] | None:
        if self.cache_seconds <= 0 or credentials.protocol not in _CACHED_PROTOCOLS:
            return None
        query = tuple(sorted((k, v) for k, v in credentials.query.items() if not k.startswith("_HLS_")))
        address = credentials.peer[0] if credentials.peer else None
        return (action, key, address, query, credentials.bearer)

    def _remember(self, cache_key: tuple[Any, ...] | None, target: StreamKey) -> None:
        if cache_key is None:
            return
        self._cache[cache_key] = (trio.current_time() + self.cache_seconds, target)
        self._cache.move_to_end(cache_key)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)


class EventHook(_HookBase, Observer):
    """Fire-and-forget notifications to ``url`` (see the module docstring)."""

    name = "event-hook"
    _RECORDING: ClassVar[frozenset[str]] = frozenset({"recording-stopped", "recording-failed"})

    def __init__(
        self, url: str | None, *, capacity: int = 1024, timeout: float = 3.0, node: str = "", log_interval: float = 60.0
    ) -> None:
        super().__init__()
        self._urls = {"on_event": check_hook_url(url)} if url else {}
        self.url = url
        self.timeout = timeout
        self.node = node
        self.sent = 0
        self.failed = 0
        self._outbox: Outbox[tuple[StreamKey, dict[str, Any]]] = Outbox(capacity)
        self._failures = LogLimiter(log, log_interval)

    @property
    def dropped(self) -> int:
        """Notifications dropped because the queue was full."""
        return self._outbox.dropped

    def set_url(self, url: str | None) -> None:
        """Send to ``url`` from now on (``None``: notify nothing; a configuration reload)."""
        self._urls = {"on_event": check_hook_url(url)} if url else {}
        self.url = url
        if self._engine is not None:
            self._add_checks()

    def queue(self, event: StreamEvent, name: str, **fields: Any) -> None:
        """Queue a notification (dropped and counted when the queue is full)."""
        if not self.url:
            return
        document = {
            "event": name,
            "app": event.key.app,
            "stream": event.key.name,
            "at": round(time.time(), 3),
            "node": self.node,
            **fields,
        }
        self._outbox.put((event.key, document))

    def on_publish_started(self, event: StreamPublished) -> None:
        self.queue(event, "publish-start", protocol=event.protocol, client_id=event.client_id, **_peer(event.peer))

    def on_publish_ended(self, event: StreamUnpublished) -> None:
        self.queue(
            event,
            "publish-end",
            reason=event.reason,
            protocol=event.protocol,
            client_id=event.client_id,
            bytes=event.bytes,
        )

    def on_subscriber_joined(self, event: SubscriberJoined) -> None:
        if event.client_id:  # a player, not a stream service's own subscription
            self.queue(event, "play-start", protocol=event.protocol, client_id=event.client_id, **_peer(event.peer))

    def on_subscriber_left(self, event: SubscriberLeft) -> None:
        if event.client_id:
            self.queue(
                event,
                "play-end",
                reason=event.reason,
                protocol=event.protocol,
                client_id=event.client_id,
                bytes=event.bytes,
                dropped=event.dropped,
            )

    def on_stream_reaped(self, event: StreamReaped) -> None:
        self.queue(event, "stream-reaped", idle_timeout=event.idle_timeout)

    def on_service_event(self, event: ServiceEvent) -> None:
        if event.service == "record" and event.what == "recording-started":
            self.queue(event, "recording-start", file=getattr(event, "file", "") or event.detail)
        if event.service == "record" and event.what in self._RECORDING:
            self.queue(
                event,
                "recording-done",
                ok=event.what == "recording-stopped",
                file=getattr(event, "file", "") or event.detail,
                bytes=getattr(event, "bytes", None),
                detail=event.detail,
            )

    async def run(self, engine: Any, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Send the queued notifications, one at a time, while the engine runs."""
        await self._serve(engine, task_status, self._drain)

    async def _drain(self) -> None:
        while True:
            key, document = await self._outbox.get()
            if not self.url:
                continue
            started = trio.current_time()
            outcome, status, failure = "timeout", 0, f"timed out after {self.timeout:g} s"
            with trio.move_on_after(self.timeout):
                try:
                    status = (await self._post(self.url, document, 4096))[0]  # type: ignore[arg-type]
                    outcome, failure = ("sent", "") if 200 <= status < 300 else ("refused", f"answered {status}")
                except (httpx.HTTPError, OSError) as exc:
                    outcome, failure = "failed", f"{type(exc).__name__}: {scrub(str(exc), self.url)}"
            self._tell(key, "on_event", outcome, status, trio.current_time() - started, failure)
            if outcome == "sent":
                self.sent += 1
            else:
                self.failed += 1
                self._failures.failed("on_event hook %s: %s", redact_url(self.url), printable(failure))

    def health_status(self) -> dict[str, object]:
        return {
            "event_hook": {
                "sent": self.sent,
                "failed": self.failed,
                "dropped": self.dropped,
                "queued": self._outbox.queued,
            }
        }


def _peer(peer: tuple[str, int] | None) -> dict[str, object]:
    return {"address": peer[0], "port": peer[1]} if peer else {"address": None, "port": None}
