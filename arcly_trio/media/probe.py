"""What a stream carries, derived once from its frames, whatever the publisher (sans-IO).

:class:`MediaProbe` watches a stream's frames and keeps a :class:`StreamInfo` up to date:

* the codecs, and from the config records: the coded size of H.264, HEVC and AV1 video (and of
  VP9 from the uncompressed header of each keyframe, as its record does not say), the codec
  string (RFC 6381 / WebCodecs), the audio sample rate and channel count of AAC
  (AudioSpecificConfig) and Opus (OpusHead);
* the frame rate, measured over the video timestamps of the last frames (up to 256, about 8 s
  at 30 fps): frames counted over the time they span, so millisecond timestamps (33, 34, 33 ms
  apart at 30 fps) give 30, not the 30.3 of one interval; the measure is reported as the common
  rate it matches within its precision (29.97 and 30 are told apart once a few seconds are
  measured), else rounded to two decimals;
* the onMetaData fields (decoded once per metadata frame, scalars only, bounded), which fill in
  what the configs do not say (a publisher's metadata is advice; the configs are the truth).

RTMP, WebSocket, relays and the built-in demo all publish frames, so every stream gets the same
info in ``/api/streams``. The probe looks at configs and metadata (rare) and reads one integer
per video frame; it never decodes media.

Error policy: never raises: a config or metadata that does not parse leaves the info as it was.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from typing import Any

import attrs

from arcly_trio.core.errors import RemoteProtocolError
from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.media import amf0
from arcly_trio.media.codec_strings import decoder_parameters
from arcly_trio.media.codecs import vp9_picture_size

__all__ = ["StreamInfo", "MediaProbe", "METADATA_FIELDS", "METADATA_TEXT", "COMMON_RATES", "measured_rate"]

#: The most onMetaData fields kept (scalars only) and the longest text value kept.
METADATA_FIELDS = 64
METADATA_TEXT = 256

_TIMESTAMPS = 256
#: Frame rates publishers use; a measured rate that matches one within its precision is it.
COMMON_RATES = (
    10.0,
    12.0,
    12.5,
    15.0,
    20.0,
    23.976,
    24.0,
    25.0,
    29.97,
    30.0,
    48.0,
    50.0,
    59.94,
    60.0,
    90.0,
    100.0,
    119.88,
    120.0,
    144.0,
    240.0,
)


def measured_rate(first: int, last: int, frames: int) -> float | None:
    """The frame rate of ``frames`` frames whose (millisecond) timestamps run from ``first`` to
    ``last``: the common rate it matches within the precision of the timestamps, else rounded to
    two decimals; ``None`` when there is too little to measure (under 5 frames, no time between
    them, or under 0.01 frames a second, which two decimals cannot tell from none)."""
    span = last - first
    if frames < 5 or span <= 0:
        return None
    rate = (frames - 1) * 1000 / span
    tolerance = rate * 1.5 / span  # each end is rounded to the millisecond
    # The nearest common rate (the lower of two as near): one of the two around ``rate``.
    above = bisect_left(COMMON_RATES, rate)
    nearest = COMMON_RATES[min(above, len(COMMON_RATES) - 1)]
    if above and rate - COMMON_RATES[above - 1] <= abs(nearest - rate):
        nearest = COMMON_RATES[above - 1]
    if abs(nearest - rate) <= max(tolerance, rate * 0.0005):
        return nearest
    rounded = round(rate, 2)
    return rounded if rounded > 0 else None


@attrs.define
class StreamInfo:
    """What is known about a stream's content and its current publisher."""

    protocol: str = ""
    peer: tuple[str, int] | None = None
    started_at: float = 0.0
    """Wall-clock time (``time.time()``) the current publish session began."""
    video_codec: str | None = None
    audio_codec: str | None = None
    video_codec_string: str | None = None
    audio_codec_string: str | None = None
    width: int | None = None
    height: int | None = None
    framerate: float | None = None
    audio_sample_rate: int | None = None
    audio_channels: int | None = None
    metadata: dict[str, object] = attrs.field(factory=dict)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if value == value and 0 < value < 1e9 else None


class MediaProbe:
    """Keeps one :class:`StreamInfo` up to date from the frames of a stream."""

    __slots__ = ("info", "_timestamps", "_from_config")

    def __init__(self, info: StreamInfo | None = None) -> None:
        self.info = info if info is not None else StreamInfo()
        self._timestamps: deque[int] = deque(maxlen=_TIMESTAMPS)  # of the video frames, in a run
        self._from_config: set[str] = set()  # fields the configs gave (metadata may not override)

    def reset(self, info: StreamInfo) -> None:
        """A new publish session: start over with ``info``."""
        self.info = info
        self._timestamps.clear()
        self._from_config = set()

    def push(self, frame: Frame) -> None:
        """Look at the stream's next frame."""
        kind = frame.kind
        if frame.config:
            if kind is FrameKind.DATA:
                self._metadata(frame.payload)
            else:
                self._config(frame)
            return
        info = self.info
        if kind is FrameKind.VIDEO:
            if info.video_codec is None:
                info.video_codec = frame.codec
            if frame.track == 0:
                self._timestamp(frame.dts)
                if frame.keyframe and frame.codec == "vp9":
                    self._vp9_size(frame.payload)
        elif kind is FrameKind.AUDIO and info.audio_codec is None:
            info.audio_codec = frame.codec

    def _timestamp(self, dts: int) -> None:
        stamps = self._timestamps
        if stamps and not 0 < dts - stamps[-1] <= 1000:
            stamps.clear()  # a jump or a gap: measure the new run
        stamps.append(dts)
        rate = measured_rate(stamps[0], dts, len(stamps))
        if rate is not None:
            self.info.framerate = rate
            self._from_config.add("framerate")

    def _vp9_size(self, payload: bytes) -> None:
        """The picture size from a VP9 keyframe's uncompressed header (its record has none)."""
        try:
            width, height = vp9_picture_size(payload)
        except RemoteProtocolError:
            return
        self.info.width, self.info.height = width, height
        self._from_config |= {"width", "height"}

    def _config(self, frame: Frame) -> None:
        info = self.info
        video = frame.kind is FrameKind.VIDEO
        if frame.track != 0:
            return
        if video:
            info.video_codec = frame.codec
        else:
            info.audio_codec = frame.codec
        try:
            params = decoder_parameters(frame.codec, frame.payload)
        except RemoteProtocolError:
            return
        if video:
            info.video_codec_string = params.codec
            if params.coded_width and params.coded_height:
                info.width, info.height = params.coded_width, params.coded_height
                self._from_config |= {"width", "height"}
        else:
            info.audio_codec_string = params.codec
            if params.sample_rate:
                info.audio_sample_rate = params.sample_rate
                self._from_config.add("sample_rate")
            if params.channels:
                info.audio_channels = params.channels
                self._from_config.add("channels")

    def _metadata(self, payload: bytes) -> None:
        try:
            values = amf0.decode(payload)
        except RemoteProtocolError:
            return
        fields = next((value for value in values if isinstance(value, dict)), None)
        if fields is None:
            return
        kept: dict[str, object] = {}
        for name, value in fields.items():
            if len(kept) >= METADATA_FIELDS:
                break
            if isinstance(value, str):
                kept[str(name)[:METADATA_TEXT]] = value[:METADATA_TEXT]
            elif isinstance(value, (bool, int, float)):
                kept[str(name)[:METADATA_TEXT]] = value
        info = self.info
        info.metadata = kept
        given = self._from_config
        width, height = _number(fields.get("width")), _number(fields.get("height"))
        if width and height and "width" not in given:
            info.width, info.height = int(width), int(height)
        rate = _number(fields.get("framerate")) or _number(fields.get("fps"))
        if rate and "framerate" not in given:
            info.framerate = rate
        sample_rate = _number(fields.get("audiosamplerate"))
        if sample_rate and "sample_rate" not in given:
            info.audio_sample_rate = int(sample_rate)
        stereo: Any = fields.get("stereo")
        if isinstance(stereo, bool) and "channels" not in given:
            info.audio_channels = 2 if stereo else 1
