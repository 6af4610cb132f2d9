"""The sans-IO MPEG-TS segmenter of HLS and its live media playlist (RFC 8216) for frames.

:class:`HlsSegmenter` packages one stream once for every viewer: frames go in through
:meth:`~HlsSegmenter.push`, events come out, and :meth:`~HlsSegmenter.playlist` renders the live
media playlist. It never reads a clock: it sees frame timestamps, and the wall-clock time the
caller passes with each frame (:meth:`~HlsSegmenter.push`), used only to anchor program date times
when a timeline begins. An HTTP layer serves what the events carry and a storage layer writes it;
neither is part of this module.

Events
    :class:`SegmentOpened` when a segment starts, :class:`SegmentClosed` when it is complete (it
    carries the whole MPEG-TS bytes of the segment, its duration and its discontinuity flag: from
    then on the segment is listed in the playlist), :class:`SegmentExpired` when a segment has
    left the playlist. The playlist text changes only with a :class:`SegmentClosed` or
    :class:`SegmentExpired` (and on :meth:`~HlsSegmenter.finish`). An expired segment is no
    longer in :meth:`~HlsSegmenter.playlist`, but players that loaded an earlier playlist may
    still ask for it: delete it after a delay (a few target durations), never at once.
    :meth:`~HlsSegmenter.drop_oldest` makes the oldest listed segment expire early (a byte cap on
    what a stream holds).

Cutting
    A segment starts on a video keyframe, or on any audio frame for an audio-only stream. A new
    segment is cut on such a frame once the current one lasts at least ``target_duration``
    (measured between the DTS of the segment's first frame and the DTS of the frame at hand).
    A segment is cut on the leading track's frame that would make it longer than
    ``max_segment_duration`` (by default ``EXT-X-TARGETDURATION`` plus 0.3 s), keyframe or not:
    a publisher whose keyframes are further apart than the target duration gets segments that
    do not all start with one (counted in :attr:`HlsSegmenter.keyframeless_cuts`), so that every
    segment keeps the playlist's promise (such a segment is cut at the next keyframe once it
    lasts half the target duration, so that players find one sooner). When the leading track
    stalls (no video for longer than ``max_segment_duration`` leaves past the target, at least
    0.1 s, while the audio goes on), a frame of the other track cuts it the same way. A segment
    that grew past ``max_segment_bytes`` is cut on the next frame. A forced cut on a frame that
    comes after a hole (nothing for a second: the publisher paused) closes the segment where its
    media ends rather than stretching it over the hole; the next one starts after the hole on
    the same timeline (no discontinuity). The duration of a
    segment is the DTS difference between its first frame and the first frame of the next
    segment. A segment that ends without a successor on the same timeline (at a discontinuity
    or at :meth:`~HlsSegmenter.finish`) lasts from its first frame to its last frame of the
    leading track plus one frame interval.

Codecs
    The segmenter learns the codecs from the frames: config frames (sequence headers) and media
    frames. Each segment is written with the codecs known when it starts. A stream that
    announced video (by a config or a video frame) waits for a video keyframe to start a
    segment. When the set of codecs changes, the next segment starts at the next eligible frame
    (whatever the duration) with a new muxer and a discontinuity. Codecs MPEG-TS cannot carry
    (AV1, VP9, Opus...) and frames of tracks other than 0 are ignored and counted in
    :attr:`HlsSegmenter.ignored_frames` (data frames are ignored silently); frames that cannot
    be written yet (video before the first keyframe, a new codec before its segment starts) are
    counted in :attr:`HlsSegmenter.dropped_frames`.

Discontinuities
    :meth:`~HlsSegmenter.discontinuity` (the publisher restarted) closes the current segment at
    once. A frame whose DTS goes back from the previous DTS of its track, or jumps forward by
    more than ``max_gap`` seconds past the newest DTS of the stream (10 s by default: longer
    than any sane GOP or audio gap, shorter than a restart that resets the clock), is a
    discontinuity too: the segment open then is closed at once. The next segment carries
    ``EXT-X-DISCONTINUITY`` and is written by a new muxer (fresh continuity counters and PCR);
    ``EXT-X-DISCONTINUITY-SEQUENCE`` counts the discontinuities that slid out of the window.

Playlist
    ``#EXT-X-VERSION:3``; ``#EXT-X-TARGETDURATION`` is ``ceil(target_duration)`` (or what a
    longer ``max_segment_duration`` needs) and never changes; every segment's duration rounded
    to the nearest integer is at most it (RFC 8216 4.3.3.1). ``#EXTINF`` has three decimals;
    each segment has an ``#EXT-X-PROGRAM-DATE-TIME`` (when the caller passes the wall-clock
    time): the time its timeline's first segment started plus its media time since (players
    such as hls.js measure the latency behind live with it). Segment URIs are
    ``name_template`` formatted with the sequence number (``"{sequence}.ts"`` by default),
    relative to the playlist. After :meth:`~HlsSegmenter.finish` the playlist ends with
    ``#EXT-X-ENDLIST`` and keeps every segment still in the window.

Error policy
    Malformed codec bytes from the publisher raise
    :class:`~arcly_trio.media.codecs.CodecError` (a
    :class:`~arcly_trio.core.errors.RemoteProtocolError`) from :meth:`~HlsSegmenter.push`,
    and leave the segmenter as it was, so the caller may drop the frame and go on. Pushing after
    :meth:`~HlsSegmenter.finish`, and invalid settings, raise
    :class:`~arcly_trio.core.errors.LocalProtocolError`.
"""

from __future__ import annotations

import math
import time
from typing import Final

import attrs

from arcly_trio.core.errors import LocalProtocolError
from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.media.mpegts import SUPPORTED_AUDIO_CODECS, SUPPORTED_VIDEO_CODECS, TsMuxer

__all__ = [
    "HlsSegmenter",
    "Segment",
    "SegmentOpened",
    "SegmentClosed",
    "SegmentExpired",
    "SegmentEvent",
    "check_segmenting",
    "SegmentLimits",
    "not_carried",
    "program_date_time",
]


@attrs.frozen
class SegmentOpened:
    """Segment ``sequence`` started; its bytes come with :class:`SegmentClosed`. ``independent``
    is false for a segment of a stream with video that does not start with a keyframe."""

    sequence: int
    name: str
    discontinuity: bool = False
    independent: bool = True


@attrs.frozen
class SegmentClosed:
    """Segment ``sequence`` is complete and listed in the playlist from now on.

    ``data`` is the whole segment (MPEG-TS, starting with PAT + PMT), ``duration`` its length in
    seconds, ``discontinuity`` whether it is preceded by ``EXT-X-DISCONTINUITY``.
    """

    sequence: int
    name: str
    duration: float
    data: bytes = attrs.field(repr=lambda data: f"<{len(data)} bytes>")
    discontinuity: bool = False


@attrs.frozen
class SegmentExpired:
    """Segment ``sequence`` left the playlist window: delete it after a grace delay."""

    sequence: int
    name: str


SegmentEvent = SegmentOpened | SegmentClosed | SegmentExpired


@attrs.frozen
class Segment:
    """A segment listed in the playlist."""

    sequence: int
    name: str
    duration: float
    discontinuity: bool = False
    program_date_time: float | None = None
    """Wall-clock seconds (POSIX) of its start, if the caller gave the time."""


Codecs = tuple[str | None, str | None]


def program_date_time(seconds: float) -> str:
    """ISO 8601 in UTC with milliseconds (``2026-11-28T20:13:33.123Z``), as
    ``EXT-X-PROGRAM-DATE-TIME`` wants it."""
    millis = int(round(seconds * 1000))
    whole, ms = divmod(millis, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{ms:03d}Z"


def not_carried(frame: Frame, codecs: frozenset[str], left_out: dict[str, int]) -> bool:
    """Whether a segmenter that carries track 0 of ``codecs`` leaves ``frame`` out; if so it is
    counted in ``left_out`` under what it is (``"opus audio"``, ``"video track 1"``)."""
    if frame.track != 0:
        what = f"{frame.kind.value} track {frame.track}"
    elif frame.codec not in codecs:
        what = f"{frame.codec} {frame.kind.value}"
    else:
        return False
    left_out[what] = left_out.get(what, 0) + 1
    return True


#: What a segment may last past its video's last keyframe-free stretch so that its audio (cut on
#: the video's boundaries, whole codec frames: up to ~72 ms) still rounds to the target duration.
AUDIO_SLACK: Final = 0.2
#: A frame that comes this long (ms) after the newest frame of the stream follows a hole (the
#: publisher paused): a forced cut there ends the segment where its media ends.
HOLE_MS: Final = 1000


@attrs.frozen
class SegmentLimits:
    """How long a segment may be: ``max_segment_duration`` (seconds: a segment is cut, keyframe
    or not, before it grows longer) and ``target_duration`` (the integer
    ``EXT-X-TARGETDURATION``, fixed for the life of a playlist as RFC 8216 6.2.1 asks: every
    segment's duration rounded to the nearest integer is at most it)."""

    max_segment_duration: float
    target_duration: int
    stall_ms: int
    """A frame of the non-leading track cuts a segment that would outgrow
    ``max_segment_duration`` only once the leading track has been silent this long (ms): what
    the maximum leaves past the configured target, at least 0.1 s (a stall, not audio running a
    little ahead of the video in the interleaving)."""


def check_segmenting(target_duration: float, window: int, first_sequence: int,
                     max_segment_duration: float | None) -> SegmentLimits:  # fmt: skip
    """Check the settings every segmenter shares (``LocalProtocolError`` if one is invalid);
    return the segment limits. By default ``EXT-X-TARGETDURATION`` is ``ceil(target_duration)``
    and a segment is cut before it lasts longer than that plus 0.3 s (so that its audio, a few
    milliseconds longer or shorter, still rounds to it); a longer ``max_segment_duration``
    raises the target duration to fit it."""
    if not target_duration > 0 or not math.isfinite(target_duration):
        raise LocalProtocolError(f"target_duration must be positive, not {target_duration}")
    if window < 1:
        raise LocalProtocolError(f"window must be at least 1, not {window}")
    if first_sequence < 0:
        raise LocalProtocolError(f"first_sequence must not be negative, not {first_sequence}")
    declared = math.ceil(target_duration)
    if max_segment_duration is None:
        max_segment_duration = declared + 0.5 - AUDIO_SLACK
        target = declared
    elif not math.isfinite(max_segment_duration) or max_segment_duration < target_duration:
        raise LocalProtocolError("max_segment_duration must be at least target_duration")
    else:
        # The smallest integer T with max + slack < T + 0.5 (rounded to the nearest, <= T).
        target = max(declared, math.floor(max_segment_duration + AUDIO_SLACK + 0.5))
    stall_ms = max(100, round((max_segment_duration - target_duration) * 1000))
    return SegmentLimits(max_segment_duration, target, stall_ms)


@attrs.define
class _Open:
    """The segment being written."""

    sequence: int
    name: str
    codecs: Codecs
    first_dts: int
    discontinuity: bool
    chunks: list[bytes]
    program_date_time: float | None = None
    independent: bool = True
    size: int = 0
    last_dts: int | None = None  # DTS of the last frame of the leading track


class HlsSegmenter:
    """Cuts a stream's frames into MPEG-TS segments and keeps its live playlist.

    Args:
        target_duration: the shortest segment, in seconds; segments are cut on the first
            keyframe at or after it.
        window: how many segments the playlist lists.
        name_template: the segment URI, formatted with ``sequence``.
        first_sequence: the media sequence number of the first segment.
        max_gap: a forward DTS jump longer than this (seconds) is a discontinuity.
        max_segment_duration: the longest segment (seconds): one is cut before it grows longer,
            keyframe or not (default: ``ceil(target_duration) + 0.3``; a longer one raises
            ``EXT-X-TARGETDURATION`` to fit it).
        max_segment_bytes: a segment this large is cut even without a keyframe.
    """

    def __init__(
        self,
        target_duration: float = 2.0,
        window: int = 6,
        *,
        name_template: str = "{sequence}.ts",
        first_sequence: int = 0,
        max_gap: float = 10.0,
        max_segment_duration: float | None = None,
        max_segment_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        limits = check_segmenting(target_duration, window, first_sequence, max_segment_duration)
        max_segment_duration = limits.max_segment_duration
        try:
            if name_template.format(sequence=0) == name_template.format(sequence=1):
                raise LocalProtocolError(f"name_template {name_template!r} ignores the sequence")
        except (KeyError, IndexError, ValueError) as exc:
            raise LocalProtocolError(f"bad name_template {name_template!r}: {exc}") from None
        self.target_duration = target_duration
        self.window = window
        self.name_template = name_template
        self.max_gap = max_gap
        self.max_segment_duration = max_segment_duration
        self.max_segment_bytes = max_segment_bytes
        #: Frames ignored for good: data, tracks other than 0, codecs MPEG-TS cannot carry.
        self.ignored_frames = 0
        #: Frames that could not be written (waiting for a keyframe or for a new segment).
        self.dropped_frames = 0
        #: Segments of a stream with video that were cut without a keyframe to start them (its
        #: keyframes are further apart than the segments may last, or its video stalled).
        self.keyframeless_cuts = 0
        self.carried: set[str] = set()
        """What the segments carry (``"h264 video"``, ``"aac audio"``...)."""
        self.left_out: dict[str, int] = {}
        """What MPEG-TS cannot carry and was left out (``"opus audio"``, ``"video track 1"``...),
        with the number of frames."""

        self._target_ms = target_duration * 1000
        self._max_ms = max_segment_duration * 1000
        self._gap_ms = max_gap * 1000
        self._next_sequence = first_sequence
        self._listed: list[Segment] = []
        self._discontinuity_sequence = 0
        self._target_value = limits.target_duration
        self._stall_ms = limits.stall_ms
        self._anchor: tuple[float, int] | None = None  # (wall clock, DTS) of the timeline's start
        self._finished = False
        self._produced = False  # a segment was opened already
        self._pending_discontinuity = False
        self._codecs: dict[FrameKind, str] = {}
        self._configs: dict[FrameKind, Frame] = {}
        self._last_dts: dict[FrameKind, int] = {}
        self._intervals: dict[FrameKind, int] = {}  # the newest DTS step of each kind
        self._interval = 0  # DTS step of the leading track, for segments without a successor
        self._current: _Open | None = None
        self._segment_codecs: Codecs | None = None  # the codecs of the last segment opened
        self._muxer: TsMuxer | None = None
        self._playlist: str | None = None

    # --- properties ----------------------------------------------------------------------------

    @property
    def segments(self) -> tuple[Segment, ...]:
        """The segments the playlist lists, oldest first."""
        return tuple(self._listed)

    @property
    def media_sequence(self) -> int:
        """The sequence number of the first listed segment (``EXT-X-MEDIA-SEQUENCE``); with no
        segment listed yet, the number of the first segment that will be."""
        if self._listed:
            return self._listed[0].sequence
        return self._current.sequence if self._current is not None else self._next_sequence

    @property
    def discontinuity_sequence(self) -> int:
        """Discontinuities that left the window (``EXT-X-DISCONTINUITY-SEQUENCE``)."""
        return self._discontinuity_sequence

    @property
    def playlist_target_duration(self) -> int:
        """The ``EXT-X-TARGETDURATION`` value (it never changes)."""
        return self._target_value

    @property
    def finished(self) -> bool:
        return self._finished

    @property
    def codecs(self) -> Codecs:
        """The (video, audio) codecs known so far."""
        return self._codecs.get(FrameKind.VIDEO), self._codecs.get(FrameKind.AUDIO)

    # --- input ---------------------------------------------------------------------------------

    def push(self, frame: Frame, wallclock: float | None = None) -> list[SegmentEvent]:
        """Take in the stream's next frame (``wallclock``: POSIX seconds now, for program date
        times); return what happened to the segments."""
        if self._finished:
            raise LocalProtocolError("push() after finish()")
        kind = frame.kind
        if kind is FrameKind.DATA:
            return []
        left_out = not_carried(frame, SUPPORTED_VIDEO_CODECS | SUPPORTED_AUDIO_CODECS, self.left_out)
        if left_out:
            self.ignored_frames += 1
            return []
        self.carried.add(f"{frame.codec} {kind.value}")
        if frame.config:
            self._push_config(frame)
            return []
        return self._push_media(frame, wallclock)

    def _push_config(self, frame: Frame) -> None:
        kind = frame.kind
        muxer = self._muxer
        if muxer is not None and self._carries(muxer, frame):
            muxer.mux(frame)  # validates and updates the muxer (raises CodecError)
        else:
            video = frame.codec if kind is FrameKind.VIDEO else None
            audio = frame.codec if kind is FrameKind.AUDIO else None
            TsMuxer(video, audio).mux(frame)  # validate only
        self._configs[kind] = frame
        self._codecs[kind] = frame.codec

    @staticmethod
    def _carries(muxer: TsMuxer, frame: Frame) -> bool:
        codec = muxer.video_codec if frame.kind is FrameKind.VIDEO else muxer.audio_codec
        return codec == frame.codec

    def _jumped(self, frame: Frame) -> bool:
        """Backwards from the last DTS of the frame's track, or forward by more than
        ``max_gap`` from the newest DTS of any track (a stalled video track that resumes
        while audio went on is not a jump)."""
        last = self._last_dts.get(frame.kind)
        if last is not None and frame.dts < last:
            return True
        newest = max(self._last_dts.values(), default=None)
        return newest is not None and frame.dts - newest > self._gap_ms

    def _too_long(self, seg: _Open, frame: Frame, leading: bool) -> bool:
        """Whether ``frame`` must start a new segment, keyframe or not: the segment would grow
        past ``max_segment_duration`` with it (for a frame of the other track, only while the
        leading track is stalled), or it has grown past ``max_segment_bytes``."""
        if seg.size >= self.max_segment_bytes:
            return True
        if frame.dts - seg.first_dts + self._intervals.get(frame.kind, 0) <= self._max_ms:
            return False
        if leading:
            return True
        newest = seg.last_dts if seg.last_dts is not None else seg.first_dts
        return frame.dts - newest > self._stall_ms

    def _push_media(self, frame: Frame, wallclock: float | None) -> list[SegmentEvent]:
        kind = frame.kind
        jumped = self._jumped(frame)
        discontinuity = self._pending_discontinuity or jumped
        codecs = self._next_codecs(frame)
        video_led = codecs[0] is not None
        leading = (kind is FrameKind.VIDEO) == video_led
        can_open = leading and (frame.keyframe or not video_led)
        seg = self._current

        close_early = False  # the timeline broke: close without a successor
        cut = False  # close with this frame as the first of the next segment
        hole = False  # close where its media ends: nothing came for a while before this frame
        if seg is not None:
            elapsed = frame.dts - seg.first_dts
            if discontinuity:
                close_early = True
            elif self._too_long(seg, frame, leading):
                cut = can_open = True  # forced: keyframe or not
                hole = frame.dts - max(self._last_dts.values(), default=frame.dts) > HOLE_MS
            elif codecs != seg.codecs:
                cut = can_open
            elif can_open and (elapsed >= self._target_ms or not seg.independent and 2 * elapsed >= self._target_ms):
                cut = True  # (a segment cut without a keyframe ends at the next one sooner)
        opening = can_open and (seg is None or close_early or cut)

        data = b""
        new_muxer: TsMuxer | None = None
        if opening:
            muxer = self._muxer
            if muxer is None or discontinuity or codecs != (muxer.video_codec, muxer.audio_codec):
                muxer = new_muxer = self._new_muxer(codecs)
            data = muxer.mux(frame, with_tables=True)  # may raise: nothing committed yet
        elif seg is not None and not close_early:
            if self._muxer is None or not self._carries(self._muxer, frame):
                self.dropped_frames += 1
                self._codecs[kind] = frame.codec
                self._note_dts(frame, jumped)
                return []
            data = self._muxer.mux(frame)  # may raise: nothing committed yet

        # Commit.
        events: list[SegmentEvent] = []
        self._codecs[kind] = frame.codec
        if seg is not None and (close_early or cut):
            end = None if close_early or hole else frame.dts
            events.extend(self._close(seg, end))
        if jumped:
            self._pending_discontinuity = True
        if opening:
            if new_muxer is not None:
                self._muxer = new_muxer
            independent = not video_led or (leading and frame.keyframe)
            if not independent:
                self.keyframeless_cuts += 1
            seg = self._open(frame, codecs, wallclock)
            seg.independent = independent
            events.append(SegmentOpened(seg.sequence, seg.name, seg.discontinuity, independent))
        elif seg is None or close_early:
            self.dropped_frames += 1
            self._note_dts(frame, jumped)
            return events
        seg.chunks.append(data)
        seg.size += len(data)
        if leading:
            if seg.last_dts is not None and frame.dts > seg.last_dts:
                self._interval = frame.dts - seg.last_dts
            seg.last_dts = frame.dts
        self._note_dts(frame, jumped)
        return events

    def _note_dts(self, frame: Frame, jumped: bool) -> None:
        if jumped:
            self._last_dts.clear()
        last = self._last_dts.get(frame.kind)
        if last is not None and 0 < frame.dts - last <= HOLE_MS:  # a frame interval, not a hole
            self._intervals[frame.kind] = frame.dts - last
        self._last_dts[frame.kind] = frame.dts

    def _next_codecs(self, frame: Frame) -> Codecs:
        video = self._codecs.get(FrameKind.VIDEO)
        audio = self._codecs.get(FrameKind.AUDIO)
        if frame.kind is FrameKind.VIDEO:
            video = frame.codec
        else:
            audio = frame.codec
        return video, audio

    def _new_muxer(self, codecs: Codecs) -> TsMuxer:
        muxer = TsMuxer(*codecs)
        for config in self._configs.values():
            if self._carries(muxer, config):
                muxer.mux(config)  # validated when it arrived
        return muxer

    def _open(self, frame: Frame, codecs: Codecs, wallclock: float | None) -> _Open:
        sequence = self._next_sequence
        self._next_sequence += 1
        changed = self._segment_codecs is not None and self._segment_codecs != codecs
        discontinuity = self._produced and (self._pending_discontinuity or changed)
        self._segment_codecs = codecs
        self._produced = True
        self._pending_discontinuity = False
        name = self.name_template.format(sequence=sequence)
        if wallclock is None:
            self._anchor = None
        elif self._anchor is None or discontinuity:
            self._anchor = (wallclock, frame.dts)  # a timeline starts: anchor it to the clock
        pdt = None if self._anchor is None else self._anchor[0] + (frame.dts - self._anchor[1]) / 1000
        self._current = _Open(sequence, name, codecs, frame.dts, discontinuity, [], pdt)
        return self._current

    def _close(self, seg: _Open, end: int | None) -> list[SegmentEvent]:
        """Close ``seg``: at ``end`` (the next segment's first DTS) or, without a successor,
        one frame interval after its last frame."""
        if end is None:
            last = seg.last_dts if seg.last_dts is not None else seg.first_dts
            end = last + self._interval
        duration = max(0, end - seg.first_dts) / 1000
        self._current = None
        data = b"".join(seg.chunks)
        events: list[SegmentEvent] = [SegmentClosed(seg.sequence, seg.name, duration, data, seg.discontinuity)]
        self._listed.append(Segment(seg.sequence, seg.name, duration, seg.discontinuity, seg.program_date_time))
        while len(self._listed) > self.window:
            gone = self._listed.pop(0)
            if gone.discontinuity:
                self._discontinuity_sequence += 1
            events.append(SegmentExpired(gone.sequence, gone.name))
        self._playlist = None
        return events

    def drop_oldest(self) -> list[SegmentEvent] | None:
        """Stop listing the oldest segment now, as if the window were one shorter, while a newer
        one stays listed (what a byte cap on a stream's HLS does). Returns its
        :class:`SegmentExpired`, or ``None`` (nothing changed) when at most one is listed; the
        next segments fill the window again."""
        if len(self._listed) <= 1:
            return None
        gone = self._listed.pop(0)
        if gone.discontinuity:
            self._discontinuity_sequence += 1
        self._playlist = None
        return [SegmentExpired(gone.sequence, gone.name)]

    def discontinuity(self) -> list[SegmentEvent]:
        """The publisher restarted: close the current segment now; the next one starts a new
        timeline (``EXT-X-DISCONTINUITY``) with a new muxer."""
        if self._finished:
            raise LocalProtocolError("discontinuity() after finish()")
        events: list[SegmentEvent] = []
        if self._current is not None:
            events = self._close(self._current, None)
        self._pending_discontinuity = True
        self._last_dts.clear()
        return events

    def finish(self) -> list[SegmentEvent]:
        """The publisher is gone for good: close the current segment and end the playlist
        (``EXT-X-ENDLIST``). Calling it again does nothing."""
        if self._finished:
            return []
        events: list[SegmentEvent] = []
        if self._current is not None:
            events = self._close(self._current, None)
        self._finished = True
        self._muxer = None
        self._playlist = None
        return events

    # --- output --------------------------------------------------------------------------------

    def playlist(self) -> str:
        """The live media playlist (``\\n`` line ends, a final newline)."""
        if self._playlist is None:
            lines = [
                "#EXTM3U",
                "#EXT-X-VERSION:3",
                f"#EXT-X-TARGETDURATION:{self.playlist_target_duration}",
                f"#EXT-X-MEDIA-SEQUENCE:{self.media_sequence}",
            ]
            if self._discontinuity_sequence:
                lines.append(f"#EXT-X-DISCONTINUITY-SEQUENCE:{self._discontinuity_sequence}")
            for segment in self._listed:
                if segment.discontinuity:
                    lines.append("#EXT-X-DISCONTINUITY")
                if segment.program_date_time is not None:
                    lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{program_date_time(segment.program_date_time)}")
                lines.append(f"#EXTINF:{segment.duration:.3f},")
                lines.append(segment.name)
            if self._finished:
                lines.append("#EXT-X-ENDLIST")
            self._playlist = "\n".join(lines) + "\n"
        return self._playlist
