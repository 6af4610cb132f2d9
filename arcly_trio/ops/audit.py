"""The audit log: who was allowed or refused what, who published and played, kicks, reloads.

:class:`AuditPipeline` is an observer (register it with ``EngineBuilder.observer``) that turns
every authorization decision, publish start and end, play start and end (players only, not the
stream services' own subscriptions) and kick into a JSON record, and takes other records from
the server (``record({...})``: configuration reloads). Records go into a bounded queue
(``capacity``) that one task (its ``run``, started by the engine) drains into an
:class:`AuditSink` in batches. Emitting never waits: when the queue is full the record is
dropped and counted (:attr:`AuditPipeline.dropped`), so a slow disk never slows a stream. On
shutdown what is queued is written (within two seconds).

A record::

    {"time": "2026-11-30T10:00:00.123Z", "event": "auth", "action": "publish", "allowed": false,
     "reason": "wrong token", "app": "live", "stream": "cam", "protocol": "rtmp",
     "address": "203.0.113.7", "port": 50412, "client_id": "kq3Fz0bN8hXcV1aE"}

Events: ``auth`` (``allowed``, ``reason``, ``renamed``), ``auth-refusals`` (a summary, below),
``publish-start``, ``publish-end`` (``reason``, ``bytes``), ``rate-limited`` (a publisher cut
for sending over its bitrate limit: ``limit`` and ``measured`` in bits/s, ``bytes``), ``play-start``, ``play-end``
(``reason``, ``bytes``, ``dropped``; HLS and DASH players have one ``play-start`` and one
``play-end`` per session, see :mod:`arcly_trio.kernel.polled`), ``kick`` (``client_id``,
``role``, ``by``: who asked), ``recording-start`` and ``recording-stop`` (on-demand recording
control, ``by``: who asked), ``config-reload``
(``ok``, ``file``, ``changes`` or ``error``).

Refusals are aggregated, as the log does, so that a flood of refused requests cannot roll the
history out of the files: every allowed decision is a record of its own, but of the refusals
of one address and action only the first of a burst is; the others are counted, and once per
``refusal_interval`` seconds (60) while the burst goes on, and when it ends, one summary
says how many there were::

    {"time": "...", "event": "auth-refusals", "action": "play", "address": "203.0.113.7",
     "since": "...", "seconds": 60.0, "refused": 14210, "streams": 3,
     "reasons": {"wrong token": 14208, "no token": 2}}

(at most four reasons, the rest as ``"(other)"``; ``streams`` counts distinct streams up to
64). At most ``max_bursts`` (128) bursts are followed one by one; refusals from further
addresses go into one summary per action (``"address": "*"``, with ``addresses``, the number
of distinct addresses up to 1024) and get no record of their own. A burst writes at most one
record per interval (its first, or a summary; it ends after an interval without refusals), so
whatever their rate, refusals add about ``max_bursts + 2`` records per ``refusal_interval`` at
most (README, Limits and hardening, says how long the default files last under a flood).

Sinks: :class:`JsonLinesFile` (one JSON object per line, rotated by size like logrotate:
``FILE.1`` ... ``FILE.{backups}``, written from a worker thread) or any object with
``async write(records)`` and ``async aclose()``.

Error policy: a sink that raises loses that batch; the failure is counted
(:attr:`AuditPipeline.failed`) and logged at most once a minute; the pipeline goes on. Peer
text in records is JSON-escaped by the encoder. Open bursts are summed up when the pipeline
stops (within its two seconds).
"""

from __future__ import annotations

import datetime
import json
import logging
import os
from typing import Any, Protocol, runtime_checkable

import trio

from arcly_trio.kernel.events import (
    AuthDecided,
    RateLimited,
    ServiceEvent,
    SessionKicked,
    StreamPublished,
    StreamUnpublished,
    SubscriberJoined,
    SubscriberLeft,
)
from arcly_trio.kernel.observe import Observer
from arcly_trio.ops._outbox import LogLimiter, Outbox

__all__ = ["AuditPipeline", "AuditSink", "JsonLinesFile", "MemorySink"]

log = logging.getLogger("arcly_trio.audit")

_BATCH = 256
#: The recorder's control events and the audit events they become.
_RECORDING_CONTROL = {
    "recording-start-requested": "recording-start",
    "recording-stop-requested": "recording-stop",
}


@runtime_checkable
class AuditSink(Protocol):
    """Where audit records go."""

    async def write(self, records: list[dict[str, Any]]) -> None: ...

    async def aclose(self) -> None: ...


class MemorySink:
    """Keeps the records in a list (tests, or a library user who ships them elsewhere)."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    async def write(self, records: list[dict[str, Any]]) -> None:
        self.records.extend(records)

    async def aclose(self) -> None:
        pass


class JsonLinesFile:
    """JSON lines in ``path``, rotated once it passes ``max_bytes`` (``backups`` old files kept).

    Writes happen in a worker thread (``trio.to_thread``), one batch at a time.
    """

    def __init__(self, path: str, *, max_bytes: int = 10 * 1024 * 1024, backups: int = 5) -> None:
        if max_bytes < 1024:
            raise ValueError("max_bytes must be at least 1024")
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._file: Any = None

    def _open(self) -> Any:
        if self._file is None:
            directory = os.path.dirname(self.path)
            if directory:
                os.makedirs(directory, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open between batches
        return self._file

    def _rotate(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        for index in range(self.backups - 1, 0, -1):
            older = f"{self.path}.{index}"
            if os.path.exists(older):
                os.replace(older, f"{self.path}.{index + 1}")
        if self.backups > 0:
            os.replace(self.path, f"{self.path}.1")
        else:
            os.unlink(self.path)

    def write_sync(self, lines: list[str]) -> None:
        """Append ``lines`` (each ends with a newline), rotating first if the file is full."""
        file = self._open()
        if file.tell() > 0 and file.tell() + sum(map(len, lines)) > self.max_bytes:
            self._rotate()
            file = self._open()
        file.write("".join(lines))
        file.flush()

    async def write(self, records: list[dict[str, Any]]) -> None:
        lines = [json.dumps(record, separators=(",", ":"), default=str) + "\n" for record in records]
        await trio.to_thread.run_sync(self.write_sync, lines)

    async def aclose(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            await trio.to_thread.run_sync(file.close)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _peer(peer: tuple[str, int] | None) -> dict[str, Any]:
    return {"address": peer[0], "port": peer[1]} if peer else {"address": None, "port": None}


_MAX_REASONS = 4
_MAX_STREAMS = 64
_MAX_ADDRESSES = 1024


class _Burst:
    """The refusals of one address and action in the current window (or of every address
    past ``max_bursts``: the overflow)."""

    __slots__ = ("started", "since", "count", "reasons", "streams", "addresses")

    def __init__(self, now: float) -> None:
        self.started = now
        self.since = _now()
        self.count = 0
        self.reasons: dict[str, int] = {}
        self.streams: set[str] = set()
        self.addresses: set[str] = set()

    def add(self, event: AuthDecided, address: str | None) -> None:
        self.count += 1
        reason = event.reason or "refused"
        if reason in self.reasons or len(self.reasons) < _MAX_REASONS:
            self.reasons[reason] = self.reasons.get(reason, 0) + 1
        else:
            self.reasons["(other)"] = self.reasons.get("(other)", 0) + 1
        if len(self.streams) < _MAX_STREAMS:
            self.streams.add(str(event.key))
        if address is not None and len(self.addresses) < _MAX_ADDRESSES:
            self.addresses.add(address)

    def summary(self, action: str, address: str | None, now: float, overflow: bool) -> dict[str, Any]:
        record: dict[str, Any] = {
            "event": "auth-refusals",
            "action": action,
            "address": "*" if overflow else address,
            "since": self.since,
            "seconds": round(now - self.started, 1),
            "refused": self.count,
            "streams": len(self.streams),
            "reasons": dict(self.reasons),
        }
        if overflow:
            record["addresses"] = len(self.addresses)
        return record


class AuditPipeline(Observer):
    """Audit records from the engine's events into a sink (see the module docstring).

    Args:
        sink: where the records go.
        capacity: records queued at most (more are dropped and counted).
        log_interval: a failing sink is logged at most once per this many seconds.
        refusal_interval: seconds of refusals of one address and action summed up in one
            record (0: every refusal is a record of its own).
        max_bursts: addresses and actions whose refusals are summed up one by one; the others
            share one summary per action.
    """

    name = "audit"

    def __init__(
        self,
        sink: AuditSink,
        *,
        capacity: int = 10000,
        log_interval: float = 60.0,
        refusal_interval: float = 60.0,
        max_bursts: int = 128,
    ) -> None:
        if refusal_interval < 0 or max_bursts < 0:
            raise ValueError("refusal_interval and max_bursts must be >= 0")
        self.sink = sink
        self.written = 0
        self.failed = 0
        self.refusal_interval = refusal_interval
        self.max_bursts = max_bursts
        self.aggregated = 0
        """Refusals counted in a summary instead of written one by one."""
        self._outbox: Outbox[dict[str, Any]] = Outbox(capacity)
        self._failures = LogLimiter(log, log_interval)
        self._bursts: dict[tuple[str | None, str], _Burst] = {}
        self._overflow: dict[str, _Burst] = {}

    @property
    def dropped(self) -> int:
        """Records dropped because the queue was full."""
        return self._outbox.dropped

    # ------------------------------------------------------------------ records

    def record(self, record: dict[str, Any]) -> None:
        """Queue ``record`` (a ``time`` is added); dropped and counted when the queue is full."""
        self._outbox.put({"time": _now(), **record})

    def on_auth_decided(self, event: AuthDecided) -> None:
        if not event.allowed and self.refusal_interval > 0 and not self._first_of_burst(event):
            return
        self.record(
            {
                "event": "auth",
                "action": event.action,
                "allowed": event.allowed,
                "reason": event.reason or None,
                "app": event.key.app,
                "stream": event.key.name,
                "renamed": str(event.renamed) if event.renamed else None,
                "protocol": event.protocol,
                **_peer(event.peer),
                "client_id": event.client_id,
            }
        )

    # ------------------------------------------------------------------ refusal bursts

    def _first_of_burst(self, event: AuthDecided) -> bool:
        """Whether the refusal ``event`` starts a burst (and gets a record of its own); if not,
        it is counted in its burst's (or the overflow's) summary."""
        now = trio.current_time()
        address = event.peer[0] if event.peer else None
        key = (address, event.action)
        burst = self._bursts.get(key)
        if burst is not None and now - burst.started >= self.refusal_interval:
            self._end_window(key, burst, now)
            burst = self._bursts.get(key)
        if burst is None:
            if len(self._bursts) < self.max_bursts:
                self._bursts[key] = _Burst(now)
                return True
            burst = self._overflow.get(event.action)
            if burst is not None and now - burst.started >= self.refusal_interval:
                self._end_overflow(event.action, burst, now)
                burst = None
            if burst is None:
                burst = self._overflow[event.action] = _Burst(now)
        burst.add(event, address)
        self.aggregated += 1
        return False

    def _end_window(self, key: tuple[str | None, str], burst: _Burst, now: float) -> None:
        """A burst's window is over: its summary if it counted any, then a new window (or the
        end of the burst when it counted none)."""
        if not burst.count:
            del self._bursts[key]
            return
        self.record(burst.summary(key[1], key[0], now, overflow=False))
        self._bursts[key] = _Burst(now)

    def _end_overflow(self, action: str, burst: _Burst, now: float) -> None:
        if burst.count:
            self.record(burst.summary(action, None, now, overflow=True))
        del self._overflow[action]

    def roll(self, *, final: bool = False) -> None:
        """Sum up the bursts whose window is over (every open one when ``final``); the
        pipeline's ``run`` calls this every quarter interval."""
        now = trio.current_time()
        for key, burst in list(self._bursts.items()):
            if final:
                if burst.count:
                    self.record(burst.summary(key[1], key[0], now, overflow=False))
                del self._bursts[key]
            elif now - burst.started >= self.refusal_interval:
                self._end_window(key, burst, now)
        for action, burst in list(self._overflow.items()):
            if final or now - burst.started >= self.refusal_interval:
                self._end_overflow(action, burst, now)

    async def _roll_forever(self) -> None:
        while True:
            await trio.sleep(self.refusal_interval / 4)
            self.roll()

    def on_publish_started(self, event: StreamPublished) -> None:
        self.record(
            {
                "event": "publish-start",
                "app": event.key.app,
                "stream": event.key.name,
                "protocol": event.protocol,
                **_peer(event.peer),
                "client_id": event.client_id,
            }
        )

    def on_publish_ended(self, event: StreamUnpublished) -> None:
        self.record(
            {
                "event": "publish-end",
                "app": event.key.app,
                "stream": event.key.name,
                "reason": event.reason,
                "protocol": event.protocol,
                "bytes": event.bytes,
                "client_id": event.client_id,
            }
        )

    def on_rate_limited(self, event: RateLimited) -> None:
        self.record(
            {
                "event": "rate-limited",
                "app": event.key.app,
                "stream": event.key.name,
                "limit": event.limit,
                "measured": round(event.measured),
                "bytes": event.bytes,
                "protocol": event.protocol,
                **_peer(event.peer),
                "client_id": event.client_id,
            }
        )

    def on_subscriber_joined(self, event: SubscriberJoined) -> None:
        if event.client_id:
            self.record(
                {
                    "event": "play-start",
                    "app": event.key.app,
                    "stream": event.key.name,
                    "protocol": event.protocol,
                    **_peer(event.peer),
                    "client_id": event.client_id,
                }
            )

    def on_subscriber_left(self, event: SubscriberLeft) -> None:
        if event.client_id:
            self.record(
                {
                    "event": "play-end",
                    "app": event.key.app,
                    "stream": event.key.name,
                    "reason": event.reason,
                    "protocol": event.protocol,
                    "bytes": event.bytes,
                    "dropped": event.dropped,
                    "client_id": event.client_id,
                }
            )

    def on_service_event(self, event: ServiceEvent) -> None:
        """Recording control requests (``POST``/``DELETE /api/recordings/...``), with who asked."""
        if event.service == "record" and event.what in _RECORDING_CONTROL:
            self.record(
                {
                    "event": _RECORDING_CONTROL[event.what],
                    "app": event.key.app,
                    "stream": event.key.name,
                    "by": event.detail,
                }
            )

    def on_session_kicked(self, event: SessionKicked) -> None:
        self.record(
            {
                "event": "kick",
                "app": event.key.app,
                "stream": event.key.name,
                "client_id": event.client_id,
                "role": event.role,
                "protocol": event.protocol,
                **_peer(event.peer),
                "by": event.by,
            }
        )

    # ------------------------------------------------------------------ writing

    async def run(self, engine: Any = None, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Write queued records until cancelled, then the open bursts' summaries and what is
        left (the engine starts this)."""
        taken: list[dict[str, Any]] = []  # out of the queue, not yet written
        try:
            async with trio.open_nursery() as nursery:
                if self.refusal_interval > 0:
                    nursery.start_soon(self._roll_forever)
                task_status.started()
                while True:
                    taken = self._outbox.more([await self._outbox.get()], _BATCH)
                    await self._write(taken)
                    taken = []
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                # A cancellation that came between taking a batch and writing it (a sink's
                # first checkpoint, such as a worker thread's start) must not lose the batch.
                self.roll(final=True)
                leftover = self._outbox.more(taken, _BATCH)
                while leftover:
                    await self._write(leftover)
                    leftover = self._outbox.more([], _BATCH)
                try:
                    await self.sink.aclose()
                except Exception:
                    log.exception("closing the audit sink failed")

    async def _write(self, batch: list[dict[str, Any]]) -> None:
        try:
            await self.sink.write(batch)
            self.written += len(batch)
        except Exception as exc:
            self.failed += len(batch)
            self._failures.failed("audit sink failed (%d records lost so far): %s", self.failed, exc)

    def health_status(self) -> dict[str, object]:
        return {
            "audit": {
                "written": self.written,
                "dropped": self.dropped,
                "failed": self.failed,
                "aggregated": self.aggregated,
            }
        }
