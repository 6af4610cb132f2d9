"""Per-stream quality-of-service figures: rates over the last second, totals, descriptive info."""

from __future__ import annotations

import attrs

from ..core.errors import ProtocolError
from ..core.frame import Frame
from ..core.keys import StreamKey

__all__ = ["RateMeter", "StreamInfo", "StreamStats", "describe_video_config"]


class RateMeter:
    """Counts frames and bytes over the last second, in constant memory.

    Time is cut into ``slots`` buckets of ``window / slots`` seconds; ``rate`` sums the
    ``slots`` whole buckets before the current one, so it always covers exactly one window.
    ``add`` costs a division and two increments (plus clearing buckets when time moves on).
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

    def add(self, now: float, size: int) -> None:
        index = self._advance(now) % (self._slots + 1)
        self._frames[index] += 1
        self._bytes[index] += size
        self.frames_total += 1
        self.bytes_total += size

    def rate(self, now: float) -> tuple[float, float]:
        """(frames per second, bits per second) over the last whole window before ``now``."""
        current = self._advance(now) % (self._slots + 1)
        window = self._width * self._slots
        frames = sum(self._frames) - self._frames[current]
        size = sum(self._bytes) - self._bytes[current]
        return frames / window, size * 8 / window


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


def describe_video_config(info: StreamInfo, frame: Frame) -> None:
    """Fill ``info``'s video codec and, for H.264/HEVC, resolution from a video config frame.

    Called by the stream for every publisher, whatever its protocol. A config that does not
    parse leaves the resolution as it was (metadata may still supply it).
    """
    from ..media import codecs  # sans-IO; imported late to keep the kernel's import light

    info.video_codec = frame.codec
    try:
        if frame.codec == "h264":
            avc = codecs.parse_avc_config(frame.payload)
            if avc.sps:
                sps = codecs.parse_h264_sps(avc.sps[0])
                info.width, info.height = sps.width, sps.height
        elif frame.codec == "hevc":
            hevc = codecs.parse_hevc_config(frame.payload)
            if hevc.sps:
                hsps = codecs.parse_hevc_sps(hevc.sps[0])
                info.width, info.height = hsps.width, hsps.height
    except ProtocolError:
        pass


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
