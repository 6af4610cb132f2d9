"""The last minutes of every live stream's viewers and bitrate, for the status page's sparklines.

What it is for: people would rather look at a line than read numbers; the status page draws
each stream's viewer count and bitrate over the last minutes. :class:`StreamHistory` is an
engine plugin (an observer with no hooks, so the frame path never sees it) that samples every
stream every ``interval`` seconds into a ring buffer of ``samples`` values per series, and
serves them (its ``install_routes`` hook) as ``GET /api/history``, a *protected* route like
``/api/streams`` (it needs the API token when the server has one)::

    {"interval": 5.0, "samples": 60,
     "streams": {"live/demo": {"viewers": [0, 1, 3, ...], "bitrate": [812000, ...]}}}

oldest first, the newest sample last; ``bitrate`` is the video and audio bits per second,
``viewers`` counts players as ``/api/streams``' ``subscribers.total`` does (subscribers but the
stream services' own subscriptions, and the sessions of HLS and DASH players).

How: one task (``run``, started by the engine) wakes every ``interval`` seconds, reads each
stream's :meth:`~arcly_trio.kernel.stream.Stream.stats` once and appends to
``collections.deque`` buffers of fixed length. A stream that is gone is forgotten at the next
sample.

Attacker's view: nothing here is driven by a request: memory is ``2 x samples`` numbers per
live stream, the work one stats read per stream per interval; the streams themselves are
bounded by the engine's publisher limits.

Error policy: nothing raises; a stream that disappears between the listing and its stats read
is skipped.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Any, Final

import trio

from arcly_trio.core.errors import ArclyError
from arcly_trio.core.keys import StreamKey
from arcly_trio.kernel.observe import Observer
from arcly_trio.protocols.http.router import HttpRequest, Responder, Router

if TYPE_CHECKING:
    from arcly_trio.kernel.engine import Engine

__all__ = ["StreamHistory", "DEFAULT_INTERVAL", "DEFAULT_SAMPLES"]

DEFAULT_INTERVAL: Final = 5.0
"""Seconds between samples."""
DEFAULT_SAMPLES: Final = 60
"""Samples kept per series (five minutes at the default interval)."""


class _Series:
    __slots__ = ("viewers", "bitrate")

    def __init__(self, samples: int) -> None:
        self.viewers: collections.deque[int] = collections.deque(maxlen=samples)
        self.bitrate: collections.deque[int] = collections.deque(maxlen=samples)


class StreamHistory(Observer):
    """Viewers and bitrate of every stream over the last ``interval * samples`` seconds (see
    the module docstring). Add it with ``EngineBuilder.observer``."""

    name = "history"

    def __init__(self, interval: float = DEFAULT_INTERVAL, samples: int = DEFAULT_SAMPLES) -> None:
        if not interval > 0 or not 2 <= samples <= 10_000:
            raise ValueError("StreamHistory needs interval > 0 and 2 <= samples <= 10000")
        self.interval = interval
        self.samples = samples
        self._series: dict[StreamKey, _Series] = {}

    async def run(self, engine: Engine, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Sample every ``interval`` seconds until cancelled."""
        task_status.started()
        while True:
            self.sample(engine)
            await trio.sleep(self.interval)

    def sample(self, engine: Engine) -> None:
        """Take one sample of every stream of ``engine`` now."""
        seen: set[StreamKey] = set()
        services = engine.service_names
        for stream in engine.streams():
            try:
                stats = stream.stats()
            except ArclyError:
                continue
            key = stream.key
            seen.add(key)
            viewers = sum(n for protocol, n in stats.subscribers_by_protocol.items() if protocol not in services)
            viewers += sum(engine.polled.players(key).values())
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = _Series(self.samples)
            series.viewers.append(viewers)
            series.bitrate.append(round(stats.video_bitrate + stats.audio_bitrate))
        for key in [key for key in self._series if key not in seen]:
            del self._series[key]

    def series(self, key: StreamKey) -> dict[str, Any] | None:
        """The history of stream ``key`` (``interval``, ``viewers``, ``bitrate``), or ``None``."""
        series = self._series.get(key)
        if series is None:
            return None
        return {"interval": self.interval, "viewers": list(series.viewers), "bitrate": list(series.bitrate)}

    def document(self) -> dict[str, Any]:
        """What ``GET /api/history`` answers (see the module docstring)."""
        return {
            "interval": self.interval,
            "samples": self.samples,
            "streams": {
                str(key): {"viewers": list(series.viewers), "bitrate": list(series.bitrate)}
                for key, series in self._series.items()
            },
        }

    def install_routes(self, router: Router) -> None:
        """``GET /api/history`` (protected, see the module docstring)."""

        async def serve(request: HttpRequest, responder: Responder) -> None:
            await responder.json(200, self.document())

        router.get("/api/history", serve, protected=True)
