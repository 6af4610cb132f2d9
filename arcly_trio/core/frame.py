"""The unit of media that flows through the kernel.

A :class:`Frame` is one access unit of one track: a video picture, an audio frame or a data
message (metadata). Frames are immutable and shared: the same object, and the same payload
``bytes``, reaches every subscriber of a stream. Nothing in the kernel copies a payload.

Payload conventions (what each protocol adapter produces and consumes):

* video ``h264``/``hevc``: length-prefixed (AVCC/HVCC) NAL units; a config frame carries the
  decoder configuration record. ``pts - dts`` is the composition time offset.
* video ``av1``/``vp9``: the codec's bitstream as carried in Enhanced RTMP; a config frame carries
  the ``av1C``/``vpcC`` record.
* audio ``aac``: one raw AAC frame; a config frame carries the AudioSpecificConfig.
* audio ``mp3`` and other legacy FLV audio codecs: the raw codec frame.
* data: a config frame carries the stream's metadata (the AMF0 ``onMetaData`` body, without the
  ``@setDataFrame`` wrapper); other data frames are forwarded live and not cached.

Egress formats serialise a frame once for all their subscribers with :meth:`Frame.encoded`,
which keeps the bytes with the frame itself (a per-frame, per-format packet cache). The cache
lives and dies with the frame, so it needs no eviction policy of its own.

A stream hands its frames to subscribers in batches (one ingest batch at a time): a
:class:`FrameBatch` is that list of frames with the same kind of cache, so what a format writes
for a whole batch (the buffers of every frame plus the framing around them: an HTTP chunk, a
WebSocket message) is built once and shared by every subscriber that takes the batch whole.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Hashable, Iterable
from typing import Any

import attrs

__all__ = ["Frame", "FrameBatch", "FrameKind"]


class FrameKind(enum.Enum):
    """What a frame carries."""

    VIDEO = "video"
    AUDIO = "audio"
    DATA = "data"

    # Members are singletons compared by identity: hash them by identity too (C, not
    # ``Enum.__hash__``'s Python call), since the hot path keys dicts by kind on every frame.
    __hash__ = object.__hash__


@attrs.frozen(slots=True, eq=False)
class Frame:
    """One immutable access unit of a track.

    Attributes:
        kind: video, audio or data.
        codec: lower-case codec name: ``h264``, ``hevc``, ``av1``, ``vp9``, ``aac``, ``mp3``,
            ``pcm``, ``amf0`` (data), ...
        pts: presentation timestamp in milliseconds.
        dts: decoding timestamp in milliseconds.
        payload: the codec bytes (see the module docstring); never copied per subscriber.
        keyframe: a video random access point (IDR / key picture).
        config: a codec configuration (sequence header) or, for data, the stream metadata.
        track: the track index, 0 for the main track of each kind (Enhanced RTMP multitrack).
        bridged: made by the server, not the publisher: the audio bridge's AAC of a stream whose
            audio is Opus, for the players that cannot decode Opus. The kernel offers such frames
            only to sinks that ask for them (a sink's ``bridged_audio``, see
            :mod:`arcly_trio.kernel.fanout`); they carry the original's timestamps and track.

    Equality is identity: two frames are the same frame only if they are the same object. This
    keeps comparisons cheap on the hot path and makes "the subscriber received exactly what was
    published" testable with ``is``.
    """

    kind: FrameKind
    codec: str
    pts: int
    dts: int
    payload: bytes
    keyframe: bool = False
    config: bool = False
    track: int = 0
    bridged: bool = False
    _wire: dict[Hashable, Any] = attrs.field(factory=dict, repr=False, alias="_wire")

    @property
    def is_video(self) -> bool:
        return self.kind is FrameKind.VIDEO

    @property
    def is_audio(self) -> bool:
        return self.kind is FrameKind.AUDIO

    @property
    def is_metadata(self) -> bool:
        """A data frame that carries the stream's metadata (cached for late joiners)."""
        return self.kind is FrameKind.DATA and self.config

    @property
    def composition_time(self) -> int:
        """``pts - dts`` in milliseconds (the FLV/RTMP CompositionTime)."""
        return self.pts - self.dts

    def shifted(self, ms: int) -> Frame:
        """The same media ``ms`` milliseconds later, with an empty packet cache (the cached
        encodings carry timestamps, so they are not shared with the original)."""
        return Frame(
            self.kind,
            self.codec,
            self.pts + ms,
            self.dts + ms,
            self.payload,
            self.keyframe,
            self.config,
            self.track,
            self.bridged,
        )

    def preset(self, fmt: Hashable, value: Any) -> None:
        """Give this frame its ``fmt`` serialisation when it is already at hand, so it is never
        built: an ingest that received exactly those bytes (an RTMP message body is the frame's
        FLV body). ``value`` must be what the format's ``build`` would return."""
        self._wire[fmt] = value

    def encoded(self, fmt: Hashable, build: Callable[..., Any], *args: Any) -> Any:
        """Return this frame serialised for ``fmt``, building it on first use only.

        ``fmt`` names an egress format and every parameter its bytes depend on (for example
        ``("rtmp", chunk_size, stream_id)``). ``build(frame, *args)`` is called at most once
        per ``fmt`` for the lifetime of the frame, so N subscribers of one format cost one
        serialisation; passing parameters as ``args`` (not in a closure) keeps the cache hit
        free of allocations. A ``build`` that raises caches nothing.
        """
        wire = self._wire
        if fmt in wire:  # the hit (every viewer but the first) in line: no second call
            return wire[fmt]
        return _encoded(wire, fmt, build, self, args)


def _encoded(
    wire: dict[Hashable, Any], fmt: Hashable, build: Callable[..., Any], owner: Any, args: tuple[Any, ...]
) -> Any:
    """``wire[fmt]``, made with ``build(owner, *args)`` the first time (nothing kept if it raises)."""
    try:
        return wire[fmt]
    except KeyError:
        value = wire[fmt] = build(owner, *args)
        return value


class FrameBatch(list[Frame]):
    """A list of frames handed to subscribers together, with a per-format cache like
    :meth:`Frame.encoded`'s.

    The stream's task makes one per delivery and offers the same object to every live
    subscriber, so an egress format builds what it writes for the batch once
    (:meth:`encoded`) and every viewer that takes the whole batch shares it. A slice of a
    batch is a plain ``list`` (a subscriber that takes part of a batch builds its own bytes
    from the frames' caches). The batch must not be changed once it has been offered.
    """

    __slots__ = ("encodings",)

    def __init__(self, frames: Iterable[Frame] = ()) -> None:
        super().__init__(frames)
        self.encodings: dict[Hashable, Any] = {}
        """What :meth:`encoded` built, by format: read-only for others (an egress's hot path
        looks its format up here, with no call, before it calls :meth:`encoded`)."""

    def encoded(self, fmt: Hashable, build: Callable[..., Any], *args: Any) -> Any:
        """This batch serialised for ``fmt``: ``build(batch, *args)``, called at most once
        per ``fmt`` (see :meth:`Frame.encoded`)."""
        return _encoded(self.encodings, fmt, build, self, args)
