"""An observer that counts and remembers what it saw, for assertions in tests."""

from __future__ import annotations

from collections import Counter, deque

from arcly_trio.core.frame import Frame
from arcly_trio.core.keys import StreamKey
from arcly_trio.kernel.events import StreamEvent
from arcly_trio.kernel.observe import Observer

__all__ = ["CountingObserver"]


class CountingObserver(Observer):
    """Counts every hook call and keeps the last ``keep`` events (bounded memory).

    ``counts`` is keyed by hook name (``"on_subscriber_lagged"``...); ``frames`` counts
    ``on_frame`` calls per stream key.
    """

    def __init__(self, keep: int = 10_000) -> None:
        self.counts: Counter[str] = Counter()
        self.frames: Counter[StreamKey] = Counter()
        self.events: deque[StreamEvent] = deque(maxlen=keep)

    def _record(self, event: StreamEvent) -> None:
        self.counts[event.hook] += 1
        self.events.append(event)

    def of_type(self, cls: type[StreamEvent]) -> list[StreamEvent]:
        return [event for event in self.events if isinstance(event, cls)]

    on_publish_started = on_publish_ended = on_stream_closed = on_stream_reaped = _record  # type: ignore[assignment]
    on_subscriber_joined = on_subscriber_left = on_subscriber_lagged = _record  # type: ignore[assignment]
    on_subscriber_resumed = on_subscriber_evicted = on_service_event = _record  # type: ignore[assignment]
    on_rate_limited = _record  # type: ignore[assignment]

    def on_frame(self, key: StreamKey, frame: Frame) -> None:
        self.frames[key] += 1
