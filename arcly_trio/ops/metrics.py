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
  bytes, the event loop's lag, audit and event-hook drops.

Names have the ``arcly_`` prefix and base units (seconds, bytes); counters end in ``_total``.
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
from typing import Any

import trio
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

import arcly_trio

from ..kernel.events import (
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
from ..kernel.observe import Observer
from ..protocols.http.router import HttpRequest, Responder, Router
from ..services.hls import HlsSegmentEvent, HlsService
from ..services.recording import FlvRecorder
from .audit import AuditPipeline
from .hooks import EventHook, HookCalled

__all__ = ["PrometheusObserver", "METRICS_PATH", "CONTENT_TYPE"]

METRICS_PATH = "/metrics"
CONTENT_TYPE = CONTENT_TYPE_LATEST
_SEGMENT_BUCKETS = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 10.0, 15.0, 30.0)
_HOOK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class PrometheusObserver(Observer):
    """Metrics of one engine in a private registry (see the module docstring).

    Args:
        per_stream: also export per-stream series (unbounded labels: opt-in).
        registry: the registry to register into (default: a new private one).
        path: where ``install_routes`` serves the text format.
    """

    name = "metrics"

    def __init__(self, *, per_stream: bool = False, registry: CollectorRegistry | None = None,
                 path: str = METRICS_PATH) -> None:
        self.per_stream = per_stream
        self.path = path
        self.registry = registry if registry is not None else CollectorRegistry()
        self.engine: Any = None
        r = self.registry
        self.lag_episodes = Counter("arcly_subscriber_lag_episodes", "Times a subscriber fell behind and "
                                    "skipped to the next keyframe", ["app"], registry=r)
        self.evictions = Counter("arcly_subscriber_evictions", "Subscribers evicted past the lag budget",
                                 ["app"], registry=r)
        self.plays = Counter("arcly_plays", "Plays started", ["app", "protocol"], registry=r)
        self.publishes = Counter("arcly_publishes", "Publish sessions started", ["app", "protocol"], registry=r)
        self.rate_limited = Counter("arcly_publishes_rate_limited", "Publish sessions cut for sending over the "
                                    "bitrate limit", ["app"], registry=r)
        self.auth_refusals = Counter("arcly_auth_refusals", "Refused authorizations", ["action"], registry=r)
        self.auth_allowed = Counter("arcly_auth_allowed", "Allowed authorizations", ["action"], registry=r)
        self.kicks = Counter("arcly_sessions_kicked", "Sessions ended by an operator", ["role"], registry=r)
        self.hls_segments = Histogram("arcly_hls_segment_duration_seconds", "Durations of the HLS segments made",
                                      ["app", "variant"], buckets=_SEGMENT_BUCKETS, registry=r)
        self.hls_segment_bytes = Counter("arcly_hls_segment_bytes", "Bytes of the HLS segments made",
                                         ["app", "variant"], registry=r)
        self.hook_latency = Histogram("arcly_hook_duration_seconds", "HTTP hook calls: how long each took",
                                      ["hook", "outcome"], buckets=_HOOK_BUCKETS, registry=r)
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

    def bind(self, engine: Any) -> None:
        """Read ``engine``'s state at scrape time (``run`` does it when the engine starts)."""
        self.engine = engine

    def install_routes(self, router: Router) -> None:
        """Serve the metrics at :attr:`path` (the HTTP worker calls this)."""

        async def serve(request: HttpRequest, responder: Responder) -> None:
            await responder.respond(200, self.render(), content_type=CONTENT_TYPE,
                                    headers=[("cache-control", "no-cache")])

        router.get(self.path, serve, protected=True)

    def render(self) -> bytes:
        """The registry in the text exposition format."""
        return generate_latest(self.registry)

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
        if self.owner.per_stream:
            yield from self._per_stream(engine)

    def _streams(self, engine: Any) -> Iterator[Metric]:
        services = engine.service_names
        streams = GaugeMetricFamily("arcly_streams", "Live streams", labels=["app"])
        publishers: Tally[str] = Tally()
        subscribers: Tally[str] = Tally()
        lag_drops = self.owner._left_drops
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
        connections = GaugeMetricFamily("arcly_connections", "Open connections, per protocol worker",
                                        labels=["protocol"])
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
            early = CounterMetricFamily("arcly_hls_dropped_early", "HLS/DASH segments and parts deleted before "
                                        "their time because their stream held more than its byte cap")
            early.add_metric([], sum(service.dropped_early for service in hls))
            yield early
        lag = GaugeMetricFamily("arcly_event_loop_lag_seconds", "The worst event loop lag of the last 10 s")
        lag.add_metric([], engine.loop_watch.recent(seconds=10))
        yield lag

    def _traffic(self, engine: Any) -> Iterator[Metric]:
        ingress = CounterMetricFamily("arcly_ingress_bytes", "Media bytes received from publishers, per protocol",
                                      labels=["protocol"])
        egress = CounterMetricFamily("arcly_egress_bytes", "Media bytes given to players, per protocol",
                                     labels=["protocol"])
        for (role, protocol), size in sorted(engine.sessions.bytes_by_protocol().items()):
            (ingress if role == "publish" else egress).add_metric([protocol or "unknown"], size)
        yield ingress
        yield egress
        sessions = GaugeMetricFamily("arcly_sessions", "Client sessions, per role", labels=["role"])
        roles = Tally(session.role for session in engine.sessions)
        for role in ("publish", "play"):
            sessions.add_metric([role], roles[role])
        yield sessions
        recorded = CounterMetricFamily("arcly_recording_bytes", "Bytes written to recordings")
        recorded.add_metric([], sum(s.bytes_written for s in engine.services if isinstance(s, FlvRecorder)))
        yield recorded

    def _pipelines(self, engine: Any) -> Iterator[Metric]:
        dropped = CounterMetricFamily("arcly_notifications_dropped", "Audit records and event-hook notifications "
                                      "dropped because their queue was full", labels=["pipeline"])
        for observer in engine.observers.observers:
            if isinstance(observer, AuditPipeline):
                dropped.add_metric(["audit"], observer.dropped)
            elif isinstance(observer, EventHook):
                dropped.add_metric(["event_hook"], observer.dropped)
        yield dropped

    def _per_stream(self, engine: Any) -> Iterator[Metric]:
        labels = ["app", "stream"]
        subscribers = GaugeMetricFamily("arcly_stream_subscribers", "Players of a stream, per protocol",
                                        labels=[*labels, "protocol"])
        received = CounterMetricFamily("arcly_stream_received_bytes", "Media bytes a stream received", labels=labels)
        dropped = CounterMetricFamily("arcly_stream_frames_dropped", "Frames a stream's players dropped",
                                      labels=labels)
        bitrate = GaugeMetricFamily("arcly_stream_bitrate_bits_per_second", "A stream's bitrate over the last second",
                                    labels=[*labels, "kind"])
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


def _gauge(name: str, documentation: str, label: str, values: Tally[str]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=[label])
    for value, count in sorted(values.items()):
        family.add_metric([value], count)
    return family
