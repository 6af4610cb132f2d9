"""A sans-IO CMAF packager: one stream's frames into init segments, parts and segments per track.

:class:`CmafPackager` packages a stream once for fMP4 HLS, LL-HLS and DASH alike: the same
bytes serve every format and every viewer. Frames go in (:meth:`~CmafPackager.push`), events
come out (:class:`ResourceReady`: store these bytes under this name; :class:`ResourceExpired`:
this name has left every playlist, delete it after a grace delay), and the packager keeps the
model that the playlist and MPD writers render (:mod:`.llhls`, :mod:`.dash`): its
:class:`Rendition`\\ s, their listed :class:`CmafSegment`\\ s and the parts of the newest ones.
It never reads a clock: the caller passes the wall-clock time with each frame, and it is used
only to anchor program date times (``EXT-X-PROGRAM-DATE-TIME``, the MPD's
``availabilityStartTime`` and period starts) when a timeline begins.

Renditions
    One per kind: ``video`` (track 0 of the stream's video) and ``audio`` (track 0 of its audio),
    each a single-track fragmented MP4 with its own init segment (:mod:`.fmp4`), so HLS lists
    them as a video rendition and an alternative audio rendition, and DASH as two adaptation
    sets, from the same files. Every codec :mod:`.fmp4` writes is carried (H.264, HEVC, AV1,
    VP9, AAC, Opus); what it cannot carry (other tracks, MP3...) is counted in
    :attr:`CmafPackager.left_out`, never dropped silently. A rendition appears when its track's
    config (and, for VP9 and some AV1, its first keyframe) is known, from the next segment on.

Muxed
    With ``muxed=True`` the packager also makes one rendition of every track
    (:attr:`CmafPackager.muxed_rendition`, :attr:`CmafPackager.playlists`): at each cut, the
    per-track parts just made are merged into one part, a ``moof`` with a ``traf`` per track
    (:func:`~.fmp4.merge_fragments`; video track 1, audio 2), whose duration and independence
    are the leading track's part's; its segments are its parts joined and span the leading
    track's segments (same media sequence numbers, discontinuities, program date times; a gap
    when no track has media); its init segment lists every track and is made again when a
    track's init segment is. Only its resources are stored: the per-track renditions are cut
    as always (they are the model of its parts) but emit nothing, so they have no playlist and
    no DASH. Named ``m``: ``{prefix}m{n}.mp4``, ``{prefix}m-{sequence}.{part}.m4s``.

Cutting
    The *leading* track is the video (the audio for a stream without video). Segments start on a
    leading keyframe (any audio frame for audio-only streams) once the current one lasts at least
    ``target_duration``. A segment is cut on the leading frame that would make it longer than
    ``max_segment_duration`` (by default ``EXT-X-TARGETDURATION`` plus 0.3 s), keyframe or not, so
    that every segment keeps the playlists' promise (``EXT-X-TARGETDURATION`` is fixed: the
    configured value); such cuts are counted in :attr:`CmafPackager.keyframeless_cuts` (a
    publisher whose keyframes are further apart than the segments), and while there are any,
    segments are not announced as independent. When the leading track stalls (silent
    while the other goes on for what ``max_segment_duration`` leaves past the target), a frame
    of the other track cuts the segment the same way (the stalled track's last frame keeps its
    usual duration; it resumes after a hole). A forced cut after a hole (nothing for
    a second: the publisher paused) closes the segment where its media ends and starts the next
    after the hole, on the same timeline. A segment past ``max_segment_bytes`` is cut on the
    next leading frame. Within a segment, parts are cut on leading frames so that each lasts at
    most ``part_duration`` (the part is cut before the frame that would make it longer: with
    30 fps video and 1/3 s parts, parts of 0.3 s).
    All renditions are cut at the same decode times: a segment boundary (a leading keyframe)
    waits until every other rendition has a frame at or past it (at most one part duration, at
    least 0.2 s, of leading media), so that the audio frames that end before the boundary end
    the segment and the one that straddles it starts the next, whatever the interleaving: audio
    segments start at their video's boundary or less than one audio frame before it. A part starting with a keyframe is
    *independent* (``INDEPENDENT=YES``); audio parts always are. A rendition that has no sample in
    a whole segment (its track stalled) gets a gap segment (``EXT-X-GAP``) so the media sequence
    numbers of all renditions stay aligned. A segment's bytes are its parts' bytes joined.

Timeline
    Output decode times are the frames' timestamps plus one offset shared by all renditions (0 at
    first), so audio and video stay in sync. A frame whose DTS does not move forward on its track,
    or jumps more than ``max_gap`` seconds past the newest DTS of the stream, and the first frame
    after :meth:`~CmafPackager.discontinuity` (the publisher restarted) start a new timeline: the
    open segment is closed at once (its last samples keep their previous durations), the offset
    is changed so that output time goes on from the end of what was written, and the next
    segment carries ``discontinuity`` (``EXT-X-DISCONTINUITY``, a new DASH period). A new codec
    configuration (a config frame whose bytes differ) needs a new init segment: it takes effect at
    the next segment, which is a discontinuity too. Each timeline (:class:`Epoch`) is anchored to
    the wall clock when its first segment starts: program date times are that anchor plus the
    output time since.

Lists and expiry
    ``window`` complete segments are listed. Parts are listed for the segments that end within
    ``3 * target_duration`` of the live edge, and for the open segment, followed by the hint of
    the next part. When a segment leaves the window, its name (and its parts', if still listed)
    and any init segment no listed segment uses any more expire; when parts stop being listed,
    their names expire. :meth:`~CmafPackager.drop_oldest` stops listing the oldest segment early
    (a byte cap on what a stream holds). :meth:`~CmafPackager.finish` closes the open segment and
    ends the lists.

Error policy
    Malformed codec bytes from the publisher (a config that does not parse, a VP9/AV1 keyframe
    whose header does not parse, a composition offset beyond 32 bits) raise
    :class:`~arcly_trio.media.codecs.CodecError` (a ``RemoteProtocolError``) from
    :meth:`~CmafPackager.push`, and the packager is left as it was, so the caller may drop the
    frame and go on. Invalid settings and pushing after :meth:`~CmafPackager.finish` raise
    :class:`~arcly_trio.core.errors.LocalProtocolError`.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Final

import attrs

from arcly_trio.core.errors import LocalProtocolError
from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.media.codec_strings import decoder_parameters, decoder_parameters_of
from arcly_trio.media.codecs import CodecConfig, CodecError, parse_config
from arcly_trio.media.fmp4 import (
    SUPPORTED_CODECS,
    Fmp4Track,
    Fragment,
    FragmentWriter,
    init_segment,
    merge_fragments,
    track_from_config,
)
from arcly_trio.media.ts_segments import HOLE_MS, check_segmenting, not_carried

__all__ = [
    "CmafPackager",
    "CmafPart",
    "CmafSegment",
    "Epoch",
    "OpenSegment",
    "Rendition",
    "ResourceReady",
    "ResourceExpired",
    "PackagerEvent",
    "RENDITION_NAMES",
]

#: The rendition of each kind, by name (also the media playlist's base name).
RENDITION_NAMES: Final = {FrameKind.VIDEO: "video", FrameKind.AUDIO: "audio"}
_LETTERS: Final = {FrameKind.VIDEO: "v", FrameKind.AUDIO: "a"}
_MUXED_LETTER: Final = "m"
# The kinds as module constants: a member of an enum costs a descriptor call each time it is
# named (140 ns on CPython 3.11), and the per-frame path names them several times a frame.
_VIDEO: Final = FrameKind.VIDEO
_AUDIO: Final = FrameKind.AUDIO
_DATA: Final = FrameKind.DATA
#: Parts are listed for segments that end within this many target durations of the live edge.
PART_LIST_TARGETS: Final = 3


@attrs.frozen
class ResourceReady:
    """Store ``data`` under ``name`` (an init segment, a part or a segment) before the lists that
    name it are published."""

    name: str
    data: bytes = attrs.field(repr=lambda data: f"<{len(data)} bytes>")


@attrs.frozen
class ResourceExpired:
    """``name`` left every list: delete it after a grace delay (players may still ask for it)."""

    name: str


PackagerEvent = ResourceReady | ResourceExpired


@attrs.frozen
class CmafPart:
    """One part (LL-HLS partial segment): a ``moof`` + ``mdat`` of one rendition."""

    index: int
    name: str
    duration: float
    independent: bool


@attrs.frozen
class CmafSegment:
    """One complete segment of one rendition.

    Attributes:
        sequence: the media sequence number (the same across renditions for the same span).
        name: the segment's resource name.
        duration: seconds.
        decode_time: decode time of its first sample, in the rendition's timescale.
        ticks: its duration in the rendition's timescale.
        parts: its parts, while they are listed (empty once they are not, and for a gap).
        discontinuity: a new timeline or a new init segment starts here.
        dsn: its discontinuity sequence number.
        init: the name of its init segment.
        epoch: the index of its :class:`Epoch` (a DASH period).
        program_date_time: wall-clock seconds (POSIX) of its start.
        gap: the rendition has no media for this span (``EXT-X-GAP``); ``name`` is never stored.
        size: its bytes.
    """

    sequence: int
    name: str
    duration: float
    decode_time: int
    ticks: int
    parts: tuple[CmafPart, ...]
    discontinuity: bool
    dsn: int
    init: str
    epoch: int
    program_date_time: float
    gap: bool = False
    size: int = 0


@attrs.frozen
class Epoch:
    """One continuous timeline with one set of init segments (a DASH period).

    ``out_ms`` is the output time (ms) where it starts, ``wallclock`` the wall-clock time
    (POSIX seconds) it is anchored to and ``first_sequence`` the media sequence number of its
    first segment.
    """

    index: int
    out_ms: int
    wallclock: float
    first_sequence: int = 0


def _codec_string(track: Fmp4Track) -> str:
    parsed = track.codec_config
    if parsed is None:
        return decoder_parameters(track.codec, track.config).codec
    return decoder_parameters_of(parsed).codec


class Rendition:
    """One track's rendition (or the muxed rendition of every track): what its media playlist
    and adaptation set list.

    Attributes (read them, never change them):
        kind, name: video or audio; ``"video"`` or ``"audio"`` (the muxed rendition's are its
            leading track's).
        track: the :class:`~.fmp4.Fmp4Track` of the current init segment (the muxed rendition's
            leading track).
        tracks: every track of its init segment (one, except in the muxed rendition).
        letter: what its resource names start with after the prefix (``v``, ``a``; ``m``: muxed).
        codec_string: its RFC 6381 codec string (``CODECS``, DASH ``codecs``; the muxed
            rendition's lists every track's, comma-separated).
        init: the name of the current init segment.
        segments: the listed complete segments, oldest first.
        open_parts: the parts of the segment being written.
        open_sequence: the media sequence number of the segment being written (``None``
            between segments).
        hint: the name of the part that comes next (``EXT-X-PRELOAD-HINT``), or ``None``.
        peak_bitrate: the highest segment bitrate seen (bits/s), or an estimate from the parts.
        media_starts: the sequence number of its first segment with media (not a gap) in each
            epoch that has one, by epoch index (a DASH timeline numbers its segments from it).
    """

    def __init__(self, kind: FrameKind, track: Fmp4Track, init: str, *, tracks: Sequence[Fmp4Track] = ()) -> None:
        self.kind = kind
        self.name = RENDITION_NAMES[kind]
        self.track = track
        self.tracks = tuple(tracks) or (track,)
        self.letter = _MUXED_LETTER if tracks else _LETTERS[kind]
        self.codec_string = ",".join(_codec_string(t) for t in self.tracks)
        self.init = init
        self.segments: list[CmafSegment] = []
        self.open_parts: list[CmafPart] = []
        self.open_sequence: int | None = None
        self.hint: str | None = None
        self.peak_bitrate = 0
        self.media_starts: dict[int, int] = {}
        self._writer = FragmentWriter([track], max_gap_ms=_MAX_GAP_MS)
        self._chunks: list[bytes] = []  # the open segment's parts (none kept for a muxed packager's tracks)
        self._size = 0  # the open segment's bytes
        self._open_start: int | None = None  # ticks: decode time of the open segment's first sample
        self._open_end: int | None = None  # ticks
        self._end: int | None = None  # ticks: end of everything written
        self._next_part = 0
        self._sources: list[str] = []  # the muxed rendition's: the init segments of its tracks

    @property
    def timescale(self) -> int:
        return self.track.timescale

    def end_ms(self) -> int | None:
        """Where what this rendition wrote ends (output ms, rounded up)."""
        if self._end is None:
            return None
        return -(-self._end * 1000 // self.track.timescale)

    def last_part(self) -> tuple[int, int] | None:
        """``(sequence, index)`` of the newest listed part, or ``None``."""
        if self.open_parts and self.open_sequence is not None:
            return self.open_sequence, self.open_parts[-1].index
        for segment in reversed(self.segments):
            if segment.parts:
                return segment.sequence, segment.parts[-1].index
            break
        return None


@attrs.define
class OpenSegment:
    """The segment being written (read-only for playlist writers): its media sequence number,
    where it starts (output ms), whether a discontinuity precedes it, its epoch."""

    sequence: int
    start_ms: int  # output ms of its first leading frame
    part_start_ms: int
    discontinuity: bool
    epoch: int
    size: int = 0
    independent: bool = True  # it starts with a keyframe (or the stream has no video)


_MAX_GAP_MS: Final = 3_600_000  # the packager detects jumps itself; the writer never has to
_ROUNDING_MS: Final = 2  # millisecond timestamps of 30 fps video step by 33 or 34
_MAX_CTO_MS: Final = 23_000_000  # a composition offset that fits a trun at 90 kHz
_SETTLE_MS: Final = 200  # the longest a segment boundary waits for a lagging rendition (at least a part)


@attrs.frozen
class _PendingCut:
    """A segment boundary at output ms ``at`` that waits for the other renditions to reach it."""

    at: int
    wallclock: float
    independent: bool


class CmafPackager:
    """Packages one stream into CMAF renditions (see the module docstring).

    Args:
        target_duration: the shortest segment, in seconds (cut on the next keyframe after it).
        part_duration: the longest part, in seconds (LL-HLS ``PART-TARGET``).
        window: how many complete segments are listed.
        name_prefix: put in front of every resource name (a token new for each stream, so a
            stream that comes back under the same name never reuses a name a player cached).
        first_sequence: the media sequence number of the first segment.
        max_gap: a forward DTS jump longer than this (seconds) starts a new timeline.
        max_segment_duration: a segment this long is cut even without a keyframe (default:
            ``max(10 * target_duration, 30)``).
        max_segment_bytes: a segment this large is cut even without a keyframe.
        muxed: package every track into one rendition as well (:attr:`muxed_rendition`; see
            the module docstring): only its resources are stored (the per-track renditions
            are still cut, as the model of its parts, but store nothing: no DASH).
    """

    def __init__(
        self,
        target_duration: float = 2.0,
        part_duration: float = 1 / 3,
        window: int = 6,
        *,
        name_prefix: str = "",
        first_sequence: int = 0,
        max_gap: float = 10.0,
        max_segment_duration: float | None = None,
        max_segment_bytes: int = 64 * 1024 * 1024,
        muxed: bool = False,
    ) -> None:
        limits = check_segmenting(target_duration, window, first_sequence, max_segment_duration)
        max_segment_duration = limits.max_segment_duration
        if not 0.05 <= part_duration <= target_duration:
            raise LocalProtocolError(f"part_duration must be from 0.05 s to target_duration, not {part_duration}")
        if not 0 < max_gap <= 3600:
            raise LocalProtocolError(f"max_gap must be in (0, 3600], not {max_gap}")
        if any(c not in _NAME_CHARS for c in name_prefix) or len(name_prefix) > 64:
            raise LocalProtocolError(f"name_prefix {name_prefix!r} may hold only letters, digits, '-', '_'")
        self.target_duration = target_duration
        self.part_duration = part_duration
        self.window = window
        self.name_prefix = name_prefix
        self.max_gap = max_gap
        self.max_segment_duration = max_segment_duration
        self.max_segment_bytes = max_segment_bytes
        self.renditions: dict[FrameKind, Rendition] = {}
        """The renditions, video first (read-only)."""
        self.muxed = muxed
        self.muxed_rendition: Rendition | None = None
        """With ``muxed``: the one rendition of every track (read-only), from the first segment on."""
        self.epochs: list[Epoch] = []
        """The timelines that listed segments belong to, oldest first (read-only)."""
        self.carried: set[str] = set()
        """What the renditions carry (``"h264 video"``, ``"opus audio"``...)."""
        self.left_out: dict[str, int] = {}
        """What is not carried (``"video track 1"``, ``"mp3 audio"``...), with frame counts."""
        self.dropped_frames = 0
        """Frames that could not be written (before the first keyframe, before a segment)."""
        self.keyframeless_cuts = 0
        """Segments of a stream with video cut without a keyframe to start them (its keyframes
        are further apart than ``max_segment_duration``, or its video stalled)."""
        self.version = 0
        """Counts changes of what the lists show (a new part, segment, rendition or the end)."""

        self._target_ms = target_duration * 1000
        self._part_ms = part_duration * 1000
        self._max_ms = max_segment_duration * 1000
        self._gap_ms = max_gap * 1000
        self._next_sequence = first_sequence
        self._target_duration_value = limits.target_duration
        self._settle_ms = max(self._part_ms, _SETTLE_MS)
        self._stall_ms = limits.stall_ms
        self._cut: _PendingCut | None = None
        self._finished = False
        self._configs: dict[FrameKind, Frame] = {}  # the newest config of each kind
        self._parsed: dict[FrameKind, CodecConfig] = {}  # its record, parsed once
        self._ready: dict[FrameKind, Fmp4Track] = {}  # its track, when it needs no keyframe
        self._stale: set[FrameKind] = set()  # kinds whose rendition needs a new init segment
        self._inits = 0
        self._availability_start: float | None = None
        self._open: OpenSegment | None = None
        self._offset = 0
        self._rebase = False  # the next media frame starts a new timeline
        self._pending_discontinuity = False
        self._last_dts: dict[FrameKind, int] = {}  # source DTS of each kind's newest frame
        self._newest_dts: int | None = None  # the newest of them (each kind's only moves forward)
        self._last_out: dict[FrameKind, int] = {}  # output ms of each kind's newest frame
        self._interval: dict[FrameKind, int] = {}  # ms between each kind's newest frames
        self._dsn = 0  # discontinuity sequence number of the newest segment
        self._discontinuity_sequence: dict[FrameKind, int] = {}
        self._events: list[PackagerEvent] = []
        self._mux_fragments: list[tuple[Rendition, Fragment]] = []  # the parts of one cut, per track
        self._mux_sequence = 1  # the muxed parts' mfhd sequence number

    # --- the model -----------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self._finished

    @property
    def offset(self) -> int:
        """Milliseconds added to the frames' timestamps on the output timeline."""
        return self._offset

    @property
    def playlists(self) -> dict[FrameKind, Rendition]:
        """The renditions that have a media playlist, by kind: :attr:`renditions`, or with
        ``muxed`` the muxed rendition under its leading kind (nothing before it exists)."""
        if not self.muxed:
            return self.renditions
        muxed = self.muxed_rendition
        return {} if muxed is None else {muxed.kind: muxed}

    def _all_renditions(self) -> list[Rendition]:
        """The per-track renditions, then the muxed one if any."""
        muxed = [] if self.muxed_rendition is None else [self.muxed_rendition]
        return [*self.renditions.values(), *muxed]

    @property
    def leading(self) -> FrameKind | None:
        """The kind that decides the cuts: video once the stream has shown any, else audio."""
        if _VIDEO in self.renditions or _VIDEO in self._configs:
            return _VIDEO
        if self.renditions or self._configs:
            return _AUDIO
        return None

    @property
    def open_sequence(self) -> int | None:
        """The media sequence number of the segment being written, if any."""
        return self._open.sequence if self._open is not None else None

    @property
    def open_segment(self) -> OpenSegment | None:
        """The segment being written, if any (read-only)."""
        return self._open

    @property
    def availability_start(self) -> float | None:
        """Wall-clock time (POSIX seconds) of output time 0, fixed when the first segment
        starts (the MPD's ``availabilityStartTime``); ``None`` before."""
        return self._availability_start

    @property
    def next_sequence(self) -> int:
        """The media sequence number the next segment will get."""
        return self._next_sequence

    @property
    def playlist_target_duration(self) -> int:
        """``EXT-X-TARGETDURATION``: ``ceil(target_duration)`` (or what a longer
        ``max_segment_duration`` needs); it never changes, and every segment's duration rounded
        to the nearest integer is at most it."""
        return self._target_duration_value

    @property
    def keyframe_aligned(self) -> bool:
        """Whether every segment so far starts with a keyframe (``EXT-X-INDEPENDENT-SEGMENTS``,
        DASH ``startWithSAP``)."""
        return self.keyframeless_cuts == 0

    def discontinuity_sequence(self, rendition: Rendition) -> int:
        """``EXT-X-DISCONTINUITY-SEQUENCE`` of ``rendition``'s list."""
        if not rendition.segments:
            return self._dsn
        first = rendition.segments[0]
        return first.dsn - (1 if first.discontinuity else 0)

    def program_date_time(self, epoch: int, out_ms: int) -> float:
        anchor = self._epoch(epoch)
        return anchor.wallclock + (out_ms - anchor.out_ms) / 1000

    def _epoch(self, index: int) -> Epoch:
        for epoch in reversed(self.epochs):
            if epoch.index == index:
                return epoch
        raise LocalProtocolError(f"no epoch {index}")

    # --- input ---------------------------------------------------------------------------------

    def push(self, frame: Frame, wallclock: float = 0.0) -> list[PackagerEvent]:
        """Take in the stream's next frame (``wallclock``: POSIX seconds now, for program date
        times); return the resources to store and to expire, in order."""
        if self._finished:
            raise LocalProtocolError("push() after finish()")
        if frame.kind is _DATA or not_carried(frame, SUPPORTED_CODECS, self.left_out):
            return []
        if frame.config:
            self._push_config(frame)
            return []
        return self._push_media(frame, wallclock)

    def _push_config(self, frame: Frame) -> None:
        kind = frame.kind
        current = self._configs.get(kind)
        if current is not None and current.codec == frame.codec and current.payload == frame.payload:
            return
        parsed = parse_config(frame.codec, frame.payload)  # raises CodecError: nothing changed
        track = None
        if not parsed.needs_keyframe:
            track = track_from_config(frame, track_id=1, parsed=parsed)  # validate now (CodecError)
        self._configs[kind] = frame
        self._parsed[kind] = parsed
        if track is None:
            self._ready.pop(kind, None)
        else:
            self._ready[kind] = track
        rendition = self.renditions.get(kind)
        if rendition is None or rendition.track.config != frame.payload or rendition.track.codec != frame.codec:
            self._stale.add(kind)
        else:
            self._stale.discard(kind)

    def discontinuity(self) -> list[PackagerEvent]:
        """The publisher restarted: close the open segment now; the next frame starts a new
        timeline that goes on from the end of what was written."""
        if self._finished:
            raise LocalProtocolError("discontinuity() after finish()")
        self._close_open(None)
        self._rebase = True
        self._last_dts.clear()
        self._newest_dts = None
        return self._take_events()

    def finish(self) -> list[PackagerEvent]:
        """The stream ended: close the open segment and end the lists (``EXT-X-ENDLIST``,
        a static MPD). Calling it again does nothing."""
        if self._finished:
            return []
        self._close_open(None)
        self._finished = True
        for rendition in self._all_renditions():
            rendition.hint = None
        self.version += 1
        return self._take_events()

    def drop_oldest(self) -> list[PackagerEvent] | None:
        """Stop listing the oldest complete segment of every rendition (with its parts) now, as
        if the window were one shorter, while a newer one stays listed (what a byte cap on a
        stream's HLS does). Returns the names that expire, or ``None`` (nothing changed) when
        at most one segment is listed; the next segments fill the window again."""
        longest = max((len(rendition.segments) for rendition in self.renditions.values()), default=0)
        if longest <= 1:
            return None
        self._expire(longest - 1)
        self.version += 1
        return self._take_events()

    def _take_events(self) -> list[PackagerEvent]:
        events, self._events = self._events, []
        return events

    # --- media ---------------------------------------------------------------------------------

    def _jumped(self, frame: Frame) -> bool:
        last = self._last_dts.get(frame.kind)
        if last is not None and frame.dts <= last:
            return True
        newest = self._newest_dts
        return newest is not None and frame.dts - newest > self._gap_ms

    def _timeline_end(self) -> int:
        ends = [end for r in self.renditions.values() if (end := r.end_ms()) is not None]
        ends += [out + self._interval.get(kind, 0) for kind, out in self._last_out.items()]
        return max(ends, default=0)

    def _push_media(self, frame: Frame, wallclock: float) -> list[PackagerEvent]:
        kind = frame.kind
        if kind not in self._configs:
            self.dropped_frames += 1  # no config yet: nothing can decode it
            return []
        if abs(frame.pts - frame.dts) > _MAX_CTO_MS:
            raise CodecError(f"composition offset of {frame.pts - frame.dts} ms does not fit a trun")
        lead = self.leading
        leading = kind is lead
        video_led = lead is _VIDEO
        if self._rebase or self._jumped(frame):
            # A new timeline: close what is open, then land this frame at the end of it all.
            self._close_open(None)
            self._offset = self._timeline_end() - frame.dts
            self._rebase = False
            self._pending_discontinuity = True
            self._last_dts.clear()
            self._newest_dts = None
            self._last_out.clear()
        source_dts = frame.dts
        out = frame.dts + self._offset
        if self._offset:
            frame = Frame(kind, frame.codec, frame.pts + self._offset, out, frame.payload,
                          frame.keyframe, frame.config, frame.track)  # fmt: skip
        cut = self._cut
        if cut is not None:
            # A segment boundary waits for the other renditions to pass it (see _defer).
            if leading and out < cut.at + self._settle_ms or not leading and out < cut.at:
                return self._append(frame, source_dts, out)
            if not leading:
                self._append(frame, source_dts, out)  # its predecessor gets its duration first
                self._settle()
                return self._take_events()
            self._settle()
        seg = self._open
        eligible = leading and (frame.keyframe or not video_led)
        boundary = None  # "segment" or "part"
        forced = False
        if seg is None:
            boundary = "segment" if eligible else None
        elif leading:
            elapsed = out - seg.start_ms
            interval = self._interval.get(kind, 0)
            if eligible and (
                elapsed >= self._target_ms
                or (self._stale and self._can_renew(frame))
                or not seg.independent
                and 2 * elapsed >= self._target_ms
            ):
                boundary = "segment"  # (a segment cut without a keyframe ends at the next one sooner)
            elif elapsed + interval > self._max_ms or seg.size >= self.max_segment_bytes:
                boundary, forced = "segment", True  # the segment would outgrow its promise
            elif out - seg.part_start_ms + interval > self._part_ms - _ROUNDING_MS:
                boundary = "part"
        elif self._stalled(seg, kind, out):
            boundary, forced = "segment", True  # the leading track stalled: cut on this one

        renewed: dict[FrameKind, Rendition] = {}
        if boundary == "segment":
            renewed = self._renewed_renditions(frame)  # may raise CodecError: nothing changed yet
        target = renewed.get(kind) or self.renditions.get(kind)
        if seg is None and boundary is None or target is None or target.track.codec != frame.codec:
            self._note(kind, source_dts, out)
            self.dropped_frames += 1  # before a segment, or a track that joins at the next one
            return self._take_events()
        pushed = False
        independent = not (video_led and not frame.keyframe)
        if boundary == "segment":
            if not independent:
                self.keyframeless_cuts += 1
            if seg is not None and forced and out - max(self._last_out.values(), default=out) > HOLE_MS:
                self._close_open(None)  # after a hole: the segment ends where its media does
            elif seg is not None:
                if target is self.renditions.get(kind):
                    pushed = target._writer.push(frame)  # the frame's predecessor gets its duration
                if self._defer(out, wallclock, renewed, leading, independent):
                    self._note(kind, source_dts, out)
                    seg.size += len(frame.payload)
                    return self._take_events()
                stalled = {lead} if not leading and lead is not None else set()
                self._close_open(out, flush=set(renewed), stalled=stalled)
            self._open_segment(out, wallclock, renewed)
            assert self._open is not None
            self._open.independent = independent
        if not pushed and not target._writer.push(frame):
            self.dropped_frames += 1
        self._note(kind, source_dts, out)
        seg = self._open
        assert seg is not None
        seg.size += len(frame.payload)
        if boundary == "part":
            self._cut_parts(out)
            seg.part_start_ms = out
        return self._take_events()

    def _append(self, frame: Frame, source_dts: int, out: int) -> list[PackagerEvent]:
        """Write ``frame`` into the open segment with no boundary (a cut is pending)."""
        rendition = self.renditions.get(frame.kind)
        if rendition is None or rendition.track.codec != frame.codec or not rendition._writer.push(frame):
            self.dropped_frames += 1
        self._note(frame.kind, source_dts, out)
        if self._open is not None:
            self._open.size += len(frame.payload)
        return self._take_events()

    def _stalled(self, seg: OpenSegment, kind: FrameKind, out: int) -> bool:
        """Whether a frame of the non-leading ``kind`` at ``out`` must cut the open segment: it
        would outgrow ``max_segment_duration`` while the leading track has been silent for
        ``stall_ms`` (see :class:`~.ts_segments.SegmentLimits`: a stall, not audio running ahead in the
        interleaving)."""
        if out - seg.start_ms + self._interval.get(kind, 0) <= self._max_ms:
            return False
        lead = self.leading
        newest = self._last_out.get(lead) if lead is not None else None
        return newest is None or out - newest > self._stall_ms

    def _defer(self, at: int, wallclock: float, renewed: dict[FrameKind, Rendition], leading: bool,
               independent: bool) -> bool:  # fmt: skip
        """Hold the segment boundary at ``at`` (output ms of a leading frame) until every other
        rendition has a frame at or past it, so that each cuts on the same boundary: the audio
        frame that starts before the video's keyframe and is still held back (its duration not
        known) belongs to the segment that ends. ``False`` when no rendition lags (cut now)."""
        if renewed or not leading:
            return False
        lagging = [k for k in self.renditions if k is not self.leading and self._last_out.get(k, at) < at]
        if not lagging:
            return False
        self._cut = _PendingCut(at, wallclock, independent)
        return True

    def _settle(self) -> None:
        """Make the pending cut: close the open segment at its boundary, open the next there."""
        cut = self._cut
        assert cut is not None
        self._cut = None
        self._close_open(cut.at)
        self._open_segment(cut.at, cut.wallclock, {})
        assert self._open is not None
        self._open.independent = cut.independent

    def _note(self, kind: FrameKind, dts: int, out: int) -> None:
        last = self._last_out.get(kind)
        if last is not None and 0 < out - last <= HOLE_MS:  # a frame interval, not a hole
            self._interval[kind] = out - last
        self._last_dts[kind] = dts
        if self._newest_dts is None or dts > self._newest_dts:
            self._newest_dts = dts
        self._last_out[kind] = out

    def _can_renew(self, frame: Frame) -> bool:
        """Whether the stale renditions can get their new init segment at ``frame``."""
        for kind in self._stale:
            if kind is _VIDEO and frame.kind is not _VIDEO and self._parsed[kind].needs_keyframe:
                return False
        return True

    def _renewed_renditions(self, frame: Frame) -> dict[FrameKind, Rendition]:
        """New renditions for the kinds whose config changed (or that have none yet) and can be
        built at this frame (a keyframe when the codec needs one). Raises CodecError."""
        made: dict[FrameKind, Rendition] = {}
        for kind, config in self._configs.items():
            if kind in self.renditions and kind not in self._stale:
                continue
            track = self._ready.get(kind)
            if track is None:
                if frame.kind is not kind or not frame.keyframe or frame.codec != config.codec:
                    continue  # built at a later segment, on a keyframe of its own
                track = track_from_config(config, frame, track_id=1, parsed=self._parsed[kind])
            self._inits += 1
            name = f"{self.name_prefix}{_LETTERS[kind]}{self._inits}.mp4"
            made[kind] = Rendition(kind, track, name)
        return made

    def _open_segment(self, out: int, wallclock: float, renewed: dict[FrameKind, Rendition]) -> None:
        had_media = any(r.segments or r.open_parts for r in self.renditions.values())
        # (a track that joins changes the muxed rendition's tracks: RFC 8216 asks for a discontinuity)
        replaced = any(kind in self.renditions for kind in renewed) or self.muxed and bool(renewed)
        discontinuity = had_media and (self._pending_discontinuity or replaced)
        self._pending_discontinuity = False
        if self._availability_start is None:
            self._availability_start = wallclock - out / 1000
        if not self.epochs or discontinuity:
            index = self.epochs[-1].index + 1 if self.epochs else 0
            self.epochs.append(Epoch(index, out, wallclock, self._next_sequence))
        if discontinuity:
            self._dsn += 1
        for kind, rendition in renewed.items():
            old = self.renditions.get(kind)
            if old is not None:
                rendition.segments = old.segments
                rendition.media_starts = old.media_starts
                rendition.peak_bitrate = old.peak_bitrate
                rendition._end = old._end
            self.renditions[kind] = rendition
            self._stale.discard(kind)
            if not self.muxed:
                self._events.append(ResourceReady(rendition.init, init_segment([rendition.track])))
            self.carried.add(f"{rendition.track.codec} {kind.value}")
        if FrameKind.VIDEO in self.renditions and next(iter(self.renditions)) is not FrameKind.VIDEO:
            self.renditions = {
                k: self.renditions[k] for k in (FrameKind.VIDEO, FrameKind.AUDIO) if k in self.renditions
            }
        if self.muxed:
            self._renew_muxed()
        sequence = self._next_sequence
        self._next_sequence += 1
        self._open = OpenSegment(sequence, out, out, discontinuity, self.epochs[-1].index)
        for rendition in self._all_renditions():
            rendition.open_sequence = sequence
            rendition.open_parts = []
            rendition._chunks = []
            rendition._size = 0
            rendition._open_start = rendition._open_end = None
            rendition._next_part = 0
            rendition.hint = self._part_name(rendition, sequence, 0)
        self.version += 1

    def _renew_muxed(self) -> None:
        """A new muxed rendition (and init segment) when the per-track renditions changed: its
        tracks are theirs, numbered 1, 2... in their order (video first). It goes on with the
        old one's list."""
        old = self.muxed_rendition
        inits = [rendition.init for rendition in self.renditions.values()]
        if not inits or old is not None and old._sources == inits:
            return
        tracks = [attrs.evolve(r.track, track_id=i) for i, r in enumerate(self.renditions.values(), 1)]
        self._inits += 1
        muxed = Rendition(tracks[0].kind, tracks[0], f"{self.name_prefix}{_MUXED_LETTER}{self._inits}.mp4",
                          tracks=tracks)  # fmt: skip
        muxed._sources = inits
        if old is not None:
            muxed.segments = old.segments
            muxed.peak_bitrate = old.peak_bitrate
        self.muxed_rendition = muxed
        self._events.append(ResourceReady(muxed.init, init_segment(tracks)))

    def _part_name(self, rendition: Rendition, sequence: int, index: int) -> str:
        return f"{self.name_prefix}{rendition.letter}-{sequence}.{index}.m4s"

    def segment_name(self, rendition: Rendition, sequence: int) -> str:
        """The resource name of ``rendition``'s segment ``sequence`` (a DASH ``$Number$``)."""
        return f"{self.name_prefix}{rendition.letter}-{sequence}.m4s"

    def _add_part(self, rendition: Rendition, fragment: Fragment) -> None:
        seg = self._open
        assert seg is not None
        run = fragment.runs[0]
        first, end = run.decode_time, fragment.runs[-1].end
        if rendition._open_start is None:
            rendition._open_start = first
        rendition._open_end = end
        rendition._end = end
        index = rendition._next_part
        rendition._next_part += 1
        name = self._part_name(rendition, seg.sequence, index)
        duration = (end - first) / rendition.timescale
        independent = fragment.independent
        rendition.open_parts.append(CmafPart(index, name, duration, independent))
        rendition._size += len(fragment.data)
        if not self.muxed:
            rendition._chunks.append(fragment.data)
        rendition.hint = self._part_name(rendition, seg.sequence, rendition._next_part)
        if duration > 0:
            rendition.peak_bitrate = max(
                rendition.peak_bitrate, int(len(fragment.data) * 8 / max(duration, self.part_duration))
            )
        if self.muxed:
            self._mux_fragments.append((rendition, fragment))
        else:
            self._events.append(ResourceReady(name, fragment.data))

    def _add_muxed_part(self) -> None:
        """The muxed part of one cut: the per-track parts just made, merged into one ``moof``
        (a ``traf`` per track); its duration and independence are the leading track's part's
        (a part without the leading track's media, while it stalls, is not independent)."""
        fragments, self._mux_fragments = self._mux_fragments, []
        muxed, seg = self.muxed_rendition, self._open
        if muxed is None or seg is None or not fragments:
            return
        ids = {track.kind: track.track_id for track in muxed.tracks}
        data = merge_fragments([(fragment.data, ids[r.kind]) for r, fragment in fragments], self._mux_sequence)
        self._mux_sequence = self._mux_sequence % 0xFFFFFFFF + 1
        lead = next((fragment for r, fragment in fragments if r.kind is muxed.kind), None)
        reference = lead if lead is not None else fragments[0][1]
        run = reference.runs[0]
        duration = (reference.runs[-1].end - run.decode_time) / run.timescale
        independent = lead is not None and lead.independent
        index = muxed._next_part
        muxed._next_part += 1
        name = self._part_name(muxed, seg.sequence, index)
        muxed.open_parts.append(CmafPart(index, name, duration, independent))
        muxed._chunks.append(data)
        muxed._size += len(data)
        muxed.hint = self._part_name(muxed, seg.sequence, muxed._next_part)
        if duration > 0:
            muxed.peak_bitrate = max(muxed.peak_bitrate, int(len(data) * 8 / max(duration, self.part_duration)))
        self._events.append(ResourceReady(name, data))

    def _cut_parts(self, until: int | None, flush: Collection[FrameKind] = (),
                   stalled: Collection[FrameKind] = ()) -> None:  # fmt: skip
        """A part of every rendition with its samples before ``until`` (output ms; ``None``:
        all of them); the writers of the kinds in ``flush`` are ending: all their samples, the
        last one lasting until ``until``; those of the kinds in ``stalled`` too, the last one
        lasting as long as the one before it (its track resumes later, after a hole)."""
        lead = self.leading
        for kind, rendition in self.renditions.items():
            writer = rendition._writer
            if kind in stalled:
                fragment = writer.flush(None)
            elif until is None or kind in flush:
                fragment = writer.flush(until)
            elif kind is not lead:
                fragment = writer.fragment(writer.straddling(until))  # a straddling frame goes after
            else:
                fragment = writer.fragment(until)
            if fragment is not None:
                self._add_part(rendition, fragment)
        if self.muxed:
            self._add_muxed_part()
        self.version += 1

    def _close_open(self, until: int | None, flush: Collection[FrameKind] = (),
                    stalled: Collection[FrameKind] = ()) -> None:  # fmt: skip
        """Close the open segment: at ``until`` (the next segment's first leading frame) or, at
        a discontinuity or the end, with everything written so far (``flush``: the kinds whose
        writer is replaced, so all their samples go in). A pending cut is made first."""
        if until is None and self._cut is not None:
            self._settle()
        seg = self._open
        if seg is None:
            return
        self._cut_parts(until, flush, stalled)
        self._open = None
        end_ms = until if until is not None else self._timeline_end()
        lead_duration = max(0, end_ms - seg.start_ms) / 1000
        for rendition in self.renditions.values():
            name = self.segment_name(rendition, seg.sequence)
            ts = rendition.timescale
            first = rendition._open_start
            wall = self.program_date_time(seg.epoch, seg.start_ms if first is None else first * 1000 // ts)
            if rendition._open_start is None or rendition._open_end is None:
                start = rendition._end if rendition._end is not None else seg.start_ms * ts // 1000
                ticks = round(lead_duration * ts)
                segment = CmafSegment(seg.sequence, name, lead_duration, start, ticks, (), seg.discontinuity,
                                      self._dsn, rendition.init, seg.epoch, wall, gap=True)  # fmt: skip
            else:
                size = rendition._size
                ticks = rendition._open_end - rendition._open_start
                duration = ticks / rendition.timescale
                segment = CmafSegment(seg.sequence, name, duration, rendition._open_start, ticks,
                                      tuple(rendition.open_parts), seg.discontinuity, self._dsn, rendition.init,
                                      seg.epoch, wall, size=size)  # fmt: skip
                if duration > 0:
                    rendition.peak_bitrate = max(rendition.peak_bitrate, int(size * 8 / duration))
                rendition.media_starts.setdefault(seg.epoch, seg.sequence)
                if not self.muxed:
                    self._events.append(ResourceReady(name, b"".join(rendition._chunks)))
            rendition.segments.append(segment)
            self._end_segment(rendition)
        muxed = self.muxed_rendition
        if muxed is not None and muxed.open_sequence is not None:
            # The muxed segment spans its leading track's (the same media sequence number).
            lead = self.renditions[muxed.kind].segments[-1]
            name = self.segment_name(muxed, seg.sequence)
            if muxed.open_parts:
                data = b"".join(muxed._chunks)
                segment = attrs.evolve(lead, name=name, parts=tuple(muxed.open_parts), init=muxed.init, gap=False,
                                       size=len(data))  # fmt: skip
                if segment.duration > 0:
                    muxed.peak_bitrate = max(muxed.peak_bitrate, int(len(data) * 8 / segment.duration))
                self._events.append(ResourceReady(name, data))
            else:
                segment = attrs.evolve(lead, name=name, parts=(), init=muxed.init, gap=True, size=0)
            muxed.segments.append(segment)
            self._end_segment(muxed)
        self._expire()
        self.version += 1

    def _end_segment(self, rendition: Rendition) -> None:
        rendition.open_parts = []
        rendition._chunks = []
        rendition._size = 0
        rendition.open_sequence = None
        # The next part is the first of the next segment (the hint stays while none is open).
        rendition.hint = self._part_name(rendition, self._next_sequence, 0)

    def _expire(self, window: int | None = None) -> None:
        """Slide the window (of ``window`` segments, default :attr:`window`), stop listing old
        parts, forget unused init segments and epochs."""
        limit = self.window if window is None else window
        stored = self.playlists.values()
        for rendition in self._all_renditions():
            expired: list[PackagerEvent] = []
            segments = rendition.segments
            while len(segments) > limit:
                gone = segments.pop(0)
                if not gone.gap:
                    expired.append(ResourceExpired(gone.name))
                expired.extend(ResourceExpired(part.name) for part in gone.parts)
                if gone.init != rendition.init and all(s.init != gone.init for s in segments):
                    expired.append(ResourceExpired(gone.init))
            horizon = PART_LIST_TARGETS * self.playlist_target_duration
            age = 0.0
            for i in range(len(segments) - 1, -1, -1):
                segment = segments[i]
                age += segment.duration
                if age > horizon and segment.parts:
                    expired.extend(ResourceExpired(part.name) for part in segment.parts)
                    segments[i] = attrs.evolve(segment, parts=())
            if any(rendition is r for r in stored):
                self._events.extend(expired)
        used = {s.epoch for r in self.renditions.values() for s in r.segments}
        if self._open is not None:
            used.add(self._open.epoch)
        while len(self.epochs) > 1 and self.epochs[0].index not in used:
            gone = self.epochs.pop(0).index
            for rendition in self.renditions.values():
                rendition.media_starts.pop(gone, None)


_NAME_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")
