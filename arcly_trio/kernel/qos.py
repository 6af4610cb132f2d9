"""Per-stream quality-of-service figures: rates over the last second, totals, a stats snapshot.

What a stream carries (codecs, size, rates) is :class:`~arcly_trio.media.probe.StreamInfo`,
derived from the frames by :class:`~arcly_trio.media.probe.MediaProbe`.

Error policy: nothing raises.
"""

from __future__ import annotations

import attrs

from arcly_trio.core.keys import StreamKey
from arcly_trio.media.probe import StreamInfo

__all__ = ["RateMeter", "StreamInfo", "StreamStats"]


class RateMeter:
    """Counts frames and bytes over the last second, in constant memory.

    Time is cut into ``slots`` buckets of ``window / slots`` seconds; ``rate`` sums the
    ``slots`` whole buckets before the current one, so it always covers exactly one window.
    ``add`` costs a division and two increments (plus clearing buckets when time moves on);
    a batch of frames seen at once is counted in one ``add``.
    """

    __slots__ = ("_width", "_slots", "_frames", "_bytes", "_current", "frames_total", "bytes_total")

    def __init__(self, window: float = 1.0, slots: int = 10) -> None:
        self._width = window / slots
        self._slots = slots
        self._frames = [0] * (slots + 1)
        self._bytes = [0] * (slots + 1)
        self._current = 0
        self.frames_total = 0
        self.bytes_total = 0

    def _advance(self, now: float) -> int:
        bucket = int(now / self._width)
        current = self._current
        if bucket != current:
            ring = self._slots + 1
            for b in range(max(current + 1, bucket - ring + 1), bucket + 1):
                self._frames[b % ring] = 0
                self._bytes[b % ring] = 0
            self._current = bucket
        return bucket

    def add(self, now: float, size: int, frames: int = 1) -> None:
        """Count ``frames`` frames of ``size`` bytes in all, seen at ``now``."""
        index = self._advance(now) % (self._slots + 1)
        self._frames[index] += frames
        self._bytes[index] += size
        self.frames_total += frames
        self.bytes_total += size

    def rate(self, now: float) -> tuple[float, float]:
        """(frames per second, bits per second) over the last whole window before ``now``."""
        current = self._advance(now) % (self._slots + 1)
        window = self._width * self._slots
        frames = sum(self._frames) - self._frames[current]
        size = sum(self._bytes) - self._bytes[current]
        return frames / window, size * 8 / window


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
