"""Prometheus metrics: ``GET /metrics`` in the text exposition format, from a private registry.

:class:`PrometheusObserver` is an observer (register it with ``EngineBuilder.observer``; it
serves ``/metrics`` on the HTTP worker through ``install_routes``, like a stream service). It
owns a private :class:`prometheus_client.CollectorRegistry` (nothing global: several engines
in one process each have their own) with two kinds of metrics:

* counted from the kernel's events as they happen: lag episodes and evictions (per app), plays
  and publishes started (per app and protocol), publishers cut by their rate limit (per app),
  authorization refusals (per action), kicks,
  HLS segments and their durations (a histogram, per app and variant) and bytes, HTTP hook
  latency (a histogram, per hook and outcome);
* read from the engine when scraped (a collector): build info, streams per app, publishers and
  subscribers per protocol (stream services' own subscriptions are not subscribers; HLS and DASH
  players' sessions are, see :mod:`arcly_trio.kernel.polled`),
  connections per protocol worker, ingress and egress bytes per protocol (media payload bytes
  of every session, closed and live, and what HLS/DASH requests were answered with), frames
  dropped per reason, HLS/DASH resources dropped early by the per-stream byte cap, recording
  bytes, the event loop's lag, audit and event-hook drops; with a WebRTC worker (a worker named
  ``webrtc`` with a ``status()``: found in ``engine.workers`` without importing it), its
  sessions per kind (``whep``, ``whip``), the datagrams no session owned, the datagrams its
  full socket dropped, and the NACKed packets and retransmissions of its sessions.

Names have the ``arcly_`` prefix and base units (seconds, bytes); counters end in ``_total``,
without the ``*_created`` series ``prometheus_client`` adds to every counter and histogram
(:meth:`PrometheusObserver.render` leaves them out: ``prometheus_client``'s own switch,
``disable_created_metrics()``, is process-wide and would change every other registry).

Series with labels exist from the start, at 0, for every label set that is known up front
(:meth:`PrometheusObserver.prime`): every application, every play and publish protocol of the
engine's workers, services and sources (each may name them in ``play_protocols`` and
``publish_protocols``; HLS and DASH are the HLS service's), both actions and both roles. So
``sum(arcly_subscribers)`` is 0, not an empty result, once the last player has left, and
``rate()`` of a counter sees its first increase.
Per-stream series (subscribers, bytes, drops, bitrate, uptime of each stream) are there only
with ``per_stream=True`` (``--metrics-per-stream``): stream names are chosen by clients, so
their labels are unbounded and opt-in.

Error policy: an observer hook never raises (the kernel contains it anyway); a scrape reads
only in-memory state and never waits.
"""

from __future__ import annotations

import platform
from collections import Counter as Tally
from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

import trio
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

import arcly_trio
from arcly_trio.kernel.events import (
    AuthDecided,
    RateLimited,
    ServiceEvent,
    SessionKicked,
    StreamPublished,
    SubscriberEvicted,
    SubscriberJoined,
    SubscriberLagged,
    SubscriberLeft,
)
from arcly_trio.kernel.observe import Observer
from arcly_trio.ops.audit import AuditPipeline
from arcly_trio.ops.hooks import EventHook, HookCalled
from arcly_trio.protocols.http.router import HttpRequest, Responder, Router
from arcly_trio.services.hls import HlsSegmentEvent, HlsService
from arcly_trio.services.recording import FlvRecorder
from arcly_trio.services.recordings import Recorder

__all__ = ["PrometheusObserver", "METRICS_PATH", "CONTENT_TYPE", "play_protocols", "publish_protocols"]

METRICS_PATH = "/metrics"
CONTENT_TYPE = CONTENT_TYPE_LATEST
_SEGMENT_BUCKETS = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 10.0, 15.0, 30.0)
_HOOK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_ACTIONS = ("publish", "play")
_ROLES = ("publish", "play")


def _declared(engine: Any, attribute: str) -> list[str]:
    found: dict[str, None] = {}
    for part in (*engine.workers, *engine.plugins):
        for protocol in getattr(part, attribute, ()) or ():
            found.setdefault(protocol, None)
    return list(found)


def play_protocols(engine: Any) -> list[str]:
    """The protocols players of ``engine`` may use: what its workers, services and sources
    declare (``play_protocols``)."""
    return _declared(engine, "play_protocols")


def publish_protocols(engine: Any) -> list[str]:
    """The protocols publishers of ``engine`` may use (``publish_protocols``)."""
    return _declared(engine, "publish_protocols")


class _WithoutCreated:
    """A registry as :func:`generate_latest` sees it, less the ``*_created`` samples."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        for metric in self.registry.collect():
            created = metric.name + "_created"
            metric.samples = [sample for sample in metric.samples if sample.name != created]
            yield metric


class PrometheusObserver(Observer):
    """Metrics of one engine in a private registry (see the module docstring).

    Args:
        per_stream: also export per-stream series (unbounded labels: opt-in).
        registry: the registry to register into (default: a new private one).
        path: where ``install_routes`` serves the text format.
    """

    name = "metrics"

    def __init__(
        self, *, per_stream: bool = False, registry: CollectorRegistry | None = None, path: str = METRICS_PATH
    ) -> None:
        self.per_stream = per_stream
        self.path = path
        self.registry = registry if registry is not None else CollectorRegistry()
        self.engine: Any = None
        r = self.registry
        self.lag_episodes = Counter(
            "arcly_subscriber_lag_episodes",
            "Times a subscriber fell behind and skipped to the next keyframe",
            ["app"],
            registry=r,
        )
        self.evictions = Counter(
            "arcly_subscriber_evictions", "Subscribers evicted past the lag budget", ["app"], registry=r
        )
        self.plays = Counter("arcly_plays", "Plays started", ["app", "protocol"], registry=r)
        self.publishes = Counter("arcly_publishes", "Publish sessions started", ["app", "protocol"], registry=r)
        self.rate_limited = Counter(
            "arcly_publishes_rate_limited",
            "Publish sessions cut for sending over the bitrate limit",
            ["app"],
            registry=r,
        )
        self.auth_refusals = Counter("arcly_auth_refusals", "Refused authorizations", ["action"], registry=r)
        self.auth_allowed = Counter("arcly_auth_allowed", "Allowed authorizations", ["action"], registry=r)
        self.kicks = Counter("arcly_sessions_kicked", "Sessions ended by an operator", ["role"], registry=r)
        self.hls_segments = Histogram(
            "arcly_hls_segment_duration_seconds",
            "Durations of the HLS segments made",
            ["app", "variant"],
            buckets=_SEGMENT_BUCKETS,
            registry=r,
        )
        self.hls_segment_bytes = Counter(
            "arcly_hls_segment_bytes", "Bytes of the HLS segments made", ["app", "variant"], registry=r
        )
        self.hook_latency = Histogram(
            "arcly_hook_duration_seconds",
            "HTTP hook calls: how long each took",
            ["hook", "outcome"],
            buckets=_HOOK_BUCKETS,
            registry=r,
        )
        self._left_drops = 0
        self.registry.register(_EngineCollector(self))

    # ---------------------------------------------------------------------- plugin

    async def run(self, engine: Any, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Remember the engine whose state scrapes read (the engine starts this)."""
        self.engine = engine
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            self.engine = None

    @property
    def left_drops(self) -> int:
        """Frames dropped for lag by the subscribers that have left (the live ones' drops are
        read from the engine at each scrape)."""
        return self._left_drops

    def bind(self, engine: Any) -> None:
        """Read ``engine``'s state at scrape time (``run`` does it when the engine starts)."""
        self.engine = engine

    def install_routes(self, router: Router) -> None:
        """Serve the metrics at :attr:`path` (the HTTP worker calls this)."""

        async def serve(request: HttpRequest, responder: Responder) -> None:
            await responder.respond(
                200, self.render(), content_type=CONTENT_TYPE, headers=[("cache-control", "no-cache")]
            )

        router.get(self.path, serve, protected=True)

    def render(self) -> bytes:
        """The registry in the text exposition format, every known label set at 0 included
        (:meth:`prime`), without ``*_created`` series."""
        self.prime()
        return generate_latest(_WithoutCreated(self.registry))  # type: ignore[arg-type]

    def prime(self) -> None:
        """Create every counter series whose labels are known up front, at 0 (see the module
        docstring); the gauges read at scrape time do the same."""
        engine = self.engine
        for action in _ACTIONS:
            self.auth_refusals.labels(action)
            self.auth_allowed.labels(action)
        for role in _ROLES:
            self.kicks.labels(role)
        if engine is None:
            return
        playing, publishing = play_protocols(engine), publish_protocols(engine)
        for app in engine.applications():
            for counter in (self.lag_episodes, self.evictions, self.rate_limited):
                counter.labels(app.name)
            for protocol in playing:
                self.plays.labels(app.name, protocol)
            for protocol in publishing:
                self.publishes.labels(app.name, protocol)

    # ---------------------------------------------------------------------- events

    def on_publish_started(self, event: StreamPublished) -> None:
        self.publishes.labels(event.key.app, event.protocol or "unknown").inc()

    def on_rate_limited(self, event: RateLimited) -> None:
        self.rate_limited.labels(event.key.app).inc()

    def on_subscriber_joined(self, event: SubscriberJoined) -> None:
        if event.client_id:
            self.plays.labels(event.key.app, event.protocol or "unknown").inc()

    def on_subscriber_left(self, event: SubscriberLeft) -> None:
        self._left_drops += event.dropped

    def on_subscriber_lagged(self, event: SubscriberLagged) -> None:
        self.lag_episodes.labels(event.key.app).inc()

    def on_subscriber_evicted(self, event: SubscriberEvicted) -> None:
        self.evictions.labels(event.key.app).inc()

    def on_auth_decided(self, event: AuthDecided) -> None:
        (self.auth_allowed if event.allowed else self.auth_refusals).labels(event.action).inc()

    def on_session_kicked(self, event: SessionKicked) -> None:
        self.kicks.labels(event.role).inc()

    def on_service_event(self, event: ServiceEvent) -> None:
        if isinstance(event, HlsSegmentEvent):
            self.hls_segments.labels(event.key.app, event.variant).observe(event.duration)
            self.hls_segment_bytes.labels(event.key.app, event.variant).inc(event.size)
        elif isinstance(event, HookCalled):
            self.hook_latency.labels(event.callback, event.outcome).observe(event.seconds)


class _EngineCollector(Collector):
    """What a scrape reads from the engine (see the module docstring)."""

    def __init__(self, owner: PrometheusObserver) -> None:
        self.owner = owner

    def describe(self) -> list[Metric]:
        return []  # read at scrape time; names vary with per_stream

    def collect(self) -> Iterator[Metric]:
        build = GaugeMetricFamily("arcly_build_info", "arcly-trio's version", labels=["version", "python", "trio"])
        build.add_metric([arcly_trio.__version__, platform.python_version(), trio.__version__], 1)
        yield build
        engine = self.owner.engine
        if engine is None:
            return
        yield from self._streams(engine)
        yield from self._traffic(engine)
        yield from self._pipelines(engine)
        yield from _webrtc(engine)
        yield from _srt(engine)
        if self.owner.per_stream:
            yield from self._per_stream(engine)

    def _streams(self, engine: Any) -> Iterator[Metric]:
        services = engine.service_names
        streams = GaugeMetricFamily("arcly_streams", "Live streams", labels=["app"])
        publishers: Tally[str] = Tally(dict.fromkeys(publish_protocols(engine), 0))
        subscribers: Tally[str] = Tally(dict.fromkeys(play_protocols(engine), 0))
        lag_drops = self.owner.left_drops
        for app in engine.applications():
            live = app.streams()
            streams.add_metric([app.name], len(live))
            for stream in live:
                if stream.session is not None:
                    publishers[stream.session.protocol or "unknown"] += 1
                for sub in stream.fanout.subscribers:
                    lag_drops += sub.dropped
                    if sub.protocol not in services:
                        subscribers[sub.protocol or "unknown"] += 1
                subscribers.update(engine.polled.players(stream.key))  # HLS and DASH players' sessions
        yield streams
        yield _gauge("arcly_publishers", "Publishers, per protocol", "protocol", publishers)
        yield _gauge("arcly_subscribers", "Players subscribed, per protocol", "protocol", subscribers)
        connections = GaugeMetricFamily(
            "arcly_connections", "Open connections, per protocol worker", labels=["protocol"]
        )
        for index, worker in enumerate(engine.workers):
            open_connections = getattr(worker, "open_connections", None)
            if open_connections is not None:
                connections.add_metric([getattr(worker, "name", f"worker{index}")], open_connections)
        yield connections
        dropped = CounterMetricFamily("arcly_frames_dropped", "Frames dropped, per reason", labels=["reason"])
        dropped.add_metric(["subscriber_lag"], lag_drops)
        bad = sum(service.bad_frames for service in engine.services if isinstance(service, HlsService))
        dropped.add_metric(["hls_malformed"], bad)
        yield dropped
        hls = [service for service in engine.services if isinstance(service, HlsService)]
        if hls:
            early = CounterMetricFamily(
                "arcly_hls_dropped_early",
                "HLS/DASH segments and parts deleted before "
                "their time because their stream held more than its byte cap",
            )
            early.add_metric([], sum(service.dropped_early for service in hls))
            yield early
        lag = GaugeMetricFamily("arcly_event_loop_lag_seconds", "The worst event loop lag of the last 10 s")
        lag.add_metric([], engine.loop_watch.recent(seconds=10))
        yield lag

    def _traffic(self, engine: Any) -> Iterator[Metric]:
        ingress = CounterMetricFamily(
            "arcly_ingress_bytes", "Media bytes received from publishers, per protocol", labels=["protocol"]
        )
        egress = CounterMetricFamily(
            "arcly_egress_bytes", "Media bytes given to players, per protocol", labels=["protocol"]
        )
        sizes: dict[tuple[str, str], int] = {
            **{("publish", protocol): 0 for protocol in publish_protocols(engine)},
            **{("play", protocol): 0 for protocol in play_protocols(engine)},
        }
        for (role, protocol), size in engine.sessions.bytes_by_protocol().items():
            sizes[role, protocol or "unknown"] = sizes.get((role, protocol or "unknown"), 0) + size
        for (role, protocol), size in sorted(sizes.items()):
            (ingress if role == "publish" else egress).add_metric([protocol], size)
        yield ingress
        yield egress
        sessions = GaugeMetricFamily("arcly_sessions", "Client sessions, per role", labels=["role"])
        roles = Tally(session.role for session in engine.sessions)
        for role in ("publish", "play"):
            sessions.add_metric([role], roles[role])
        yield sessions
        recorded = CounterMetricFamily("arcly_recording_bytes", "Bytes written to recordings")
        recorded.add_metric([], sum(s.bytes_written for s in engine.services if isinstance(s, (FlvRecorder, Recorder))))
        yield recorded

    def _pipelines(self, engine: Any) -> Iterator[Metric]:
        dropped = CounterMetricFamily(
            "arcly_notifications_dropped",
            "Audit records and event-hook notifications dropped because their queue was full",
            labels=["pipeline"],
        )
        for observer in engine.observers.observers:
            if isinstance(observer, AuditPipeline):
                dropped.add_metric(["audit"], observer.dropped)
            elif isinstance(observer, EventHook):
                dropped.add_metric(["event_hook"], observer.dropped)
        yield dropped

    def _per_stream(self, engine: Any) -> Iterator[Metric]:
        labels = ["app", "stream"]
        subscribers = GaugeMetricFamily(
            "arcly_stream_subscribers", "Players of a stream, per protocol", labels=[*labels, "protocol"]
        )
        received = CounterMetricFamily("arcly_stream_received_bytes", "Media bytes a stream received", labels=labels)
        dropped = CounterMetricFamily("arcly_stream_frames_dropped", "Frames a stream's players dropped", labels=labels)
        bitrate = GaugeMetricFamily(
            "arcly_stream_bitrate_bits_per_second", "A stream's bitrate over the last second", labels=[*labels, "kind"]
        )
        uptime = GaugeMetricFamily("arcly_stream_uptime_seconds", "How long a stream has existed", labels=labels)
        services = engine.service_names
        for stream in engine.streams():
            stats = stream.stats()
            names = [stream.key.app, stream.key.name]
            players = Tally({p: n for p, n in stats.subscribers_by_protocol.items() if p not in services})
            players.update(engine.polled.players(stream.key))
            for protocol, count in sorted(players.items()):
                subscribers.add_metric([*names, protocol], count)
            received.add_metric(names, stats.bytes_total)
            dropped.add_metric(names, stats.drops_total)
            bitrate.add_metric([*names, "video"], stats.video_bitrate)
            bitrate.add_metric([*names, "audio"], stats.audio_bitrate)
            uptime.add_metric(names, stats.uptime)
        yield from (subscribers, received, dropped, bitrate, uptime)


@runtime_checkable
class WorkerStatus(Protocol):
    """A protocol worker that reports its counters (the WebRTC worker's ``status()``: sessions
    per kind, unrouted datagrams, send drops, NACK and retransmission totals)."""

    name: str

    def status(self) -> dict[str, Any]: ...


def _webrtc(engine: Any) -> Iterator[Metric]:
    """The WebRTC workers' figures (none without one), from their ``status()``."""
    workers = [worker for worker in engine.workers if isinstance(worker, WorkerStatus) and worker.name == "webrtc"]
    if not workers:
        return
    kinds: Tally[str] = Tally({"whep": 0, "whip": 0})
    unrouted = send_drops = nacks = retransmitted = 0
    for worker in workers:
        status = worker.status()
        kinds["whep"] += status.get("viewers", 0)
        kinds["whip"] += status.get("publishers", 0)
        unrouted += status.get("unrouted_datagrams", 0)
        send_drops += status.get("send_drops", 0)
        nacks += status.get("nacks", 0)
        retransmitted += status.get("retransmitted", 0)
    yield _gauge("arcly_webrtc_sessions", "WebRTC sessions, per kind (whep: viewers, whip: publishers)", "kind", kinds)
    for name, documentation, value in (
        ("arcly_webrtc_unrouted_datagrams", "UDP datagrams no WebRTC session owned (dropped without state)", unrouted),
        ("arcly_webrtc_send_drops", "Datagrams dropped: the WebRTC socket's send buffer was full", send_drops),
        ("arcly_webrtc_nacks", "Packets NACKed: asked of us by WHEP viewers, or asked by us of WHIP publishers", nacks),
        ("arcly_webrtc_retransmissions", "Packets resent to WHEP viewers on their NACKs", retransmitted),
    ):
        family = CounterMetricFamily(name, documentation)
        family.add_metric([], value)
        yield family


def _srt(engine: Any) -> Iterator[Metric]:
    """The SRT workers' figures (none without one), from their ``status()``."""
    workers = [worker for worker in engine.workers if isinstance(worker, WorkerStatus) and worker.name == "srt"]
    if not workers:
        return
    modes: Tally[str] = Tally({"publish": 0, "play": 0})
    totals: Tally[str] = Tally()
    for worker in workers:
        status = worker.status()
        modes["publish"] += status.get("publishers", 0)
        modes["play"] += status.get("players", 0)
        for name in ("lost", "dropped", "retransmitted", "naks_sent", "naks_received", "rejections", "bad_packets"):
            totals[name] += status.get(name, 0)
    yield _gauge("arcly_srt_sessions", "SRT sessions, per mode (publish, play)", "mode", modes)
    for name, documentation in (
        ("lost", "SRT packets found missing from publishers"),
        ("dropped", "SRT packets given up: too late for the latency"),
        ("retransmitted", "SRT packets resent to players on their NAKs"),
        ("naks_sent", "SRT NAKs sent to publishers"),
        ("naks_received", "SRT NAKs received from players"),
        ("rejections", "SRT handshakes refused (with a reason code)"),
        ("bad_packets", "SRT datagrams no session owned or that could not be read (dropped without state)"),
    ):
        family = CounterMetricFamily(f"arcly_srt_{name}", documentation)
        family.add_metric([], totals[name])
        yield family


def _gauge(name: str, documentation: str, label: str, values: Tally[str]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=[label])
    for value, count in sorted(values.items()):
        family.add_metric([value], count)
    return family
