"""Per-stream quality-of-service figures: rates over the last second, totals, descriptive info."""

from __future__ import annotations

from collections import deque

import attrs

from .keys import StreamKey

__all__ = ["RateMeter", "StreamInfo", "StreamStats"]


class RateMeter:
    """Counts events and bytes over a sliding window (one second by default).

    ``add`` is called once per frame with the batch's clock reading, so it costs a deque
    append and, now and then, a popleft.
    """

    __slots__ = ("_window", "_samples", "_bytes", "frames_total", "bytes_total")

    def __init__(self, window: float = 1.0) -> None:
        self._window = window
        self._samples: deque[tuple[float, int]] = deque()
        self._bytes = 0
        self.frames_total = 0
        self.bytes_total = 0

    def add(self, now: float, size: int) -> None:
        self._samples.append((now, size))
        self._bytes += size
        self.frames_total += 1
        self.bytes_total += size
        self._expire(now)

    def _expire(self, now: float) -> None:
        samples = self._samples
        horizon = now - self._window
        while samples and samples[0][0] <= horizon:
            self._bytes -= samples.popleft()[1]

    def rate(self, now: float) -> tuple[float, float]:
        """(frames per second, bits per second) over the window ending at ``now``."""
        self._expire(now)
        return len(self._samples) / self._window, self._bytes * 8 / self._window


@attrs.define
class StreamInfo:
    """What is known about a stream's content and its publisher.

    The kernel fills in the codecs from the frames; protocol adapters fill in the rest
    (resolution and metadata from the publisher's onMetaData, for example) through
    ``Publisher.info``.
    """

    protocol: str = ""
    peer: tuple[str, int] | None = None
    started_at: float = 0.0
    """Wall-clock time (``time.time()``) the current publish session began."""
    video_codec: str | None = None
    audio_codec: str | None = None
    width: int | None = None
    height: int | None = None
    framerate: float | None = None
    audio_sample_rate: int | None = None
    audio_channels: int | None = None
    metadata: dict[str, object] = attrs.field(factory=dict)


@attrs.frozen
class StreamStats:
    """A snapshot of one stream, for APIs and dashboards."""

    key: StreamKey
    publishing: bool
    info: StreamInfo
    video_fps: float
    video_bitrate: float
    audio_fps: float
    audio_bitrate: float
    video_frames_total: int
    audio_frames_total: int
    bytes_total: int
    subscribers: int
    subscribers_by_protocol: dict[str, int]
    drops_total: int
    uptime: float
