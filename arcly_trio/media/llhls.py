"""Sans-IO HLS playlists for CMAF renditions: fMP4 HLS and Low-Latency HLS (RFC 8216bis).

Renders what a :class:`~.cmaf.CmafPackager` holds; never reads a clock, never touches I/O.

:func:`media_playlist` renders one rendition's media playlist:

* ``fmp4``: ``#EXT-X-VERSION:7``, ``#EXT-X-MAP`` (again after a discontinuity that changes the
  init segment), ``#EXT-X-PROGRAM-DATE-TIME`` on every segment, ``#EXT-X-DISCONTINUITY`` and
  ``#EXT-X-DISCONTINUITY-SEQUENCE``, ``#EXT-X-GAP`` for a span the rendition has no media for,
  ``#EXT-X-ENDLIST`` once the stream ended.
* ``ll`` adds ``#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=`` (three part
  targets), ``#EXT-X-PART-INF:PART-TARGET=``, the ``#EXT-X-PART`` tags of the segments that end
  within three target durations of the live edge and of the segment being written
  (``INDEPENDENT=YES`` on parts that start with a keyframe; every audio part), the
  ``#EXT-X-PRELOAD-HINT:TYPE=PART`` of the next part, and an ``#EXT-X-RENDITION-REPORT`` for each
  other rendition (its last media sequence number and part), as a multivariant presentation
  with an alternative audio rendition wants.
* ``ll`` with ``deltas`` (a DVR window: a live window of six segments has nothing older than six
  target durations to skip) adds ``CAN-SKIP-UNTIL=`` (:func:`skip_until`: six target durations,
  the least RFC 8216bis allows) to ``EXT-X-SERVER-CONTROL``; with ``skip`` too it renders the
  Playlist Delta Update (RFC 8216bis 6.2.5.1) a ``_HLS_skip=YES`` request gets: the segments
  that start more than the Skip Boundary before the end of the last complete one are replaced by
  ``#EXT-X-SKIP:SKIPPED-SEGMENTS=N`` (``#EXT-X-VERSION:9``; ``EXT-X-MEDIA-SEQUENCE`` and
  ``EXT-X-DISCONTINUITY-SEQUENCE`` unchanged), and the first segment after it repeats its
  ``EXT-X-DISCONTINUITY`` (if it starts one), its ``EXT-X-MAP`` and its
  ``EXT-X-PROGRAM-DATE-TIME``, so that the merged playlist keeps its timeline; the rest is the
  full playlist's. No ``EXT-X-DATERANGE`` is ever rendered, so no ``CAN-SKIP-DATERANGES``.

:func:`multivariant_playlist` renders the entry playlist (``#EXT-X-INDEPENDENT-SEGMENTS`` while
every segment starts with a keyframe): the video rendition as the variant
stream (``BANDWIDTH``, ``CODECS`` from the RFC 6381 codec strings of every rendition,
``RESOLUTION``), the audio rendition as its ``EXT-X-MEDIA`` group (or as the variant stream of an
audio-only presentation). A muxed packager (``CmafPackager(muxed=True)``) has one playlist, its
muxed rendition's, under its leading kind (``video.m3u8``, or ``audio.m3u8`` without video):
the variant stream alone, with the codecs of both tracks and no ``EXT-X-MEDIA`` group; its
media playlist has no ``EXT-X-RENDITION-REPORT`` (there is no other rendition).

:func:`reload_state` answers a blocking playlist reload (``_HLS_msn``, ``_HLS_part``) against a
rendition: ready, wait, or too far ahead (RFC 8216bis 6.2.5.2: more than two segments past the
last one, or more parts past the last part than the Advance Part Limit).

A long window (a DVR's: thousands of segments) is rendered with a :class:`SegmentMemo`, which
keeps the text of the segments that list no parts: a render then costs what the live edge
costs, plus one join per new segment. A :class:`LineCache` (one per playlist, kept by the
caller) keeps each listed segment's and open part's lines, so that a render (once per part)
formats only what is new; the text is the same as without it.

URIs are the packager's resource names, relative to the playlist. Every function returns text
with ``\\n`` line ends and a final newline.

Error policy: these functions never raise on a packager's state; :func:`parse_directives`
and :func:`parse_skip` raise :class:`~arcly_trio.core.errors.RemoteProtocolError` for delivery
directives that are not decimal integers in range, ``_HLS_part`` without ``_HLS_msn``, or an
``_HLS_skip`` other than ``YES`` and ``v2``.
"""

from __future__ import annotations

import bisect
import collections
import enum
import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Final

from arcly_trio.core.errors import RemoteProtocolError
from arcly_trio.core.frame import FrameKind
from arcly_trio.media.cmaf import CmafPackager, CmafPart, CmafSegment, Rendition
from arcly_trio.media.ts_segments import program_date_time

__all__ = [
    "LineCache",
    "ReloadState",
    "SegmentMemo",
    "media_playlist",
    "multivariant_playlist",
    "parse_directives",
    "parse_skip",
    "skip_until",
    "reload_state",
    "playlist_name",
    "part_target",
    "program_date_time",
]

#: Playlist version of fMP4 playlists (EXT-X-MAP without I-frames needs 6; 7 as issued).
VERSION: Final = 7
#: Playlist version of a Playlist Delta Update (RFC 8216bis section 7: ``EXT-X-SKIP`` needs 9).
DELTA_VERSION: Final = 9
#: The Skip Boundary in target durations: RFC 8216bis's least.
SKIP_TARGETS: Final = 6
_MAX_DIRECTIVE: Final = 2**63 - 1


def playlist_name(rendition: Rendition) -> str:
    """The media playlist's resource name: ``video.m3u8`` or ``audio.m3u8``."""
    return f"{rendition.name}.m3u8"


def part_target(packager: CmafPackager) -> float:
    """``PART-TARGET``: the part duration rounded up to the millisecond (no part is longer)."""
    return math.ceil(packager.part_duration * 1000 - 1e-6) / 1000


def skip_until(packager: CmafPackager) -> float:
    """``CAN-SKIP-UNTIL``: the Skip Boundary of delta updates, six target durations."""
    return float(SKIP_TARGETS * packager.playlist_target_duration)


def skipped_segments(segments: Sequence[CmafSegment], until: float) -> int:
    """How many of the listed ``segments`` a delta update skips: those that start more than
    ``until`` seconds before the end of the last one (counted from the live edge, so the cost
    is the few segments within the boundary, not the window)."""
    kept = 0.0
    index = len(segments)
    while index > 0 and kept + segments[index - 1].duration <= until + 1e-9:
        index -= 1
        kept += segments[index].duration
    return index


def _part_line(duration: float, name: str, independent: bool) -> str:
    return f'#EXT-X-PART:DURATION={duration:.3f},URI="{name}"' + (",INDEPENDENT=YES" if independent else "")


def media_playlist(packager: CmafPackager, kind: FrameKind, *, low_latency: bool,
                   memo: SegmentMemo | None = None, deltas: bool = False, skip: bool = False,
                   cache: LineCache | None = None) -> str:  # fmt: skip
    """The media playlist of the rendition of ``kind`` (see the module docstring); ``memo``
    (one per rendition and ``low_latency``, kept by the caller) keeps the text of the listed
    segments without parts, so that a long window (DVR) is not rendered again at each part;
    ``cache`` (one per rendition and ``low_latency``, kept by the caller) keeps each listed
    segment's and open part's lines, so that a render (once per part) formats only what is new.
    ``deltas``: advertise delta updates (``ll`` only); ``skip``: render the delta update (the
    full playlist when it would skip nothing)."""
    rendition = packager.playlists[kind]
    deltas = deltas and low_latency
    segments = rendition.segments
    until = skip_until(packager)
    skipped = skipped_segments(segments, until) if deltas and skip else 0
    if skipped >= len(segments):
        skipped = 0  # never reached: a segment is never longer than the target duration
    version = DELTA_VERSION if skipped else VERSION
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{version}", f"#EXT-X-TARGETDURATION:{packager.playlist_target_duration}"]
    target = part_target(packager)
    if low_latency:
        skipping = f",CAN-SKIP-UNTIL={until:.3f}" if deltas else ""
        lines.append(f"#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES{skipping},PART-HOLD-BACK={3 * target:.3f}")
        lines.append(f"#EXT-X-PART-INF:PART-TARGET={target:.3f}")
    first = segments[0].sequence if segments else (rendition.open_sequence or packager.next_sequence)
    lines.append(f"#EXT-X-MEDIA-SEQUENCE:{first}")
    dsn = packager.discontinuity_sequence(rendition)
    if dsn:
        lines.append(f"#EXT-X-DISCONTINUITY-SEQUENCE:{dsn}")
    init: str | None = None
    start = 0
    if skipped:
        lines.append(f"#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}")
        if segments[skipped].discontinuity:
            lines.append("#EXT-X-DISCONTINUITY")  # from the last skipped segment, which the client has
        init = _segment_lines(lines, segments[skipped], None, low_latency)  # its EXT-X-MAP, its PDT
        start = skipped + 1
    elif memo is not None and len(segments) > 2:
        end = len(segments)
        while low_latency and end > 1 and (segments[end - 1].parts or segments[end - 1].gap):
            end -= 1  # the segments at the live edge list their parts: rendered each time
        init = _segment_lines(lines, segments[0], None, low_latency)
        if end > 1:
            lines.append(memo.text(segments, end, low_latency))
            init = segments[end - 1].init
        start = max(end, 1)
    if cache is None:
        for segment in segments[start:]:
            init = _segment_lines(lines, segment, init, low_latency)
    else:
        for segment in segments[start:]:
            lines.append(cache.segment(segment, init, low_latency))
            init = segment.init
        cache.keep_from(segments[start].sequence if start < len(segments) else None, len(segments) - start)
    if low_latency and not packager.finished and rendition.open_sequence is not None:
        open_segment = packager.open_segment
        if open_segment is not None:
            if open_segment.discontinuity and (segments or rendition.open_parts):
                lines.append("#EXT-X-DISCONTINUITY")
            if init != rendition.init:
                lines.append(f'#EXT-X-MAP:URI="{rendition.init}"')
            if not segments or open_segment.discontinuity:
                start = packager.program_date_time(open_segment.epoch, open_segment.start_ms)
                lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{program_date_time(start)}")
        if cache is None:
            lines.extend(_part_line(p.duration, p.name, p.independent) for p in rendition.open_parts)
        elif rendition.open_parts:
            lines.append(cache.open_parts(rendition.open_parts))
    if low_latency and not packager.finished and rendition.hint is not None:
        lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="{rendition.hint}"')
    if low_latency and not packager.finished:
        for other in packager.playlists.values():
            if other is not rendition:
                lines.append(_rendition_report(other))
    if packager.finished:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def _segment_lines(lines: list[str], segment: CmafSegment, init: str | None, low_latency: bool) -> str:
    """A listed segment's lines; returns the init segment in force after it."""
    init = _segment_head(lines, segment, init)
    if low_latency:
        lines.extend(_part_line(p.duration, p.name, p.independent) for p in segment.parts)
    if segment.gap:
        lines.append("#EXT-X-GAP")
    lines.append(f"#EXTINF:{segment.duration:.3f},")
    lines.append(segment.name)
    return init


class LineCache:
    """The lines of one rendition's listed segments and open parts, each formatted once (see
    :func:`media_playlist`'s ``cache``). A segment's lines depend only on it (a frozen
    :class:`~.cmaf.CmafSegment`: one that stops listing its parts is a new object), the init
    segment in force before it and ``low_latency``; a part's only on it. Entries are found by
    identity (the object is kept with its text), so a segment made again is formatted again.
    One per rendition (of one ``low_latency``); it holds what the window lists, no more."""

    __slots__ = ("_segments", "_parts", "_parts_text")

    def __init__(self) -> None:
        self._segments: dict[int, tuple[CmafSegment, str | None, str]] = {}
        self._parts: list[CmafPart] = []
        self._parts_text: list[str] = []

    def segment(self, segment: CmafSegment, init: str | None, low_latency: bool) -> str:
        """``segment``'s lines after one whose init segment is ``init``, joined (no final line end)."""
        entry = self._segments.get(segment.sequence)
        if entry is not None and entry[0] is segment and entry[1] == init:
            return entry[2]
        lines: list[str] = []
        _segment_lines(lines, segment, init, low_latency)
        text = "\n".join(lines)
        self._segments[segment.sequence] = (segment, init, text)
        return text

    def keep_from(self, sequence: int | None, count: int) -> None:
        """Keep only the ``count`` segments rendered last, from ``sequence`` on (``None``: none)."""
        segments = self._segments
        if len(segments) > count:
            for old in [s for s in segments if sequence is None or s < sequence]:
                del segments[old]

    def open_parts(self, parts: Sequence[CmafPart]) -> str:
        """The ``EXT-X-PART`` lines of the open segment's ``parts``, joined (no final line end)."""
        kept, texts = self._parts, self._parts_text
        same = 0
        while same < len(kept) and same < len(parts) and kept[same] is parts[same]:
            same += 1
        del kept[same:], texts[same:]
        for part in parts[same:]:
            kept.append(part)
            texts.append(_part_line(part.duration, part.name, part.independent))
        return "\n".join(texts)


class SegmentMemo:
    """The text of a media playlist's listed segments from the second to the first that lists
    parts (every one of them without ``low_latency``): each segment's lines are rendered once,
    and joined again only when that run changes (once per segment), not at each render (once
    per part). A segment's text depends only on it and its predecessor's init segment, both
    fixed once listed. One per rendition (of one ``low_latency``)."""

    __slots__ = ("_chunks", "_text")

    def __init__(self) -> None:
        self._chunks: collections.deque[tuple[int, str]] = collections.deque()
        self._text = ""

    @property
    def run(self) -> str:
        """The text of the run as last rendered (one object until the run changes)."""
        return self._text

    def text(self, segments: Sequence[CmafSegment], end: int, low_latency: bool) -> str:
        """The lines of ``segments[1:end]``, joined with line ends (no final one)."""
        chunks = self._chunks
        changed = False
        first = segments[1].sequence if end > 1 else None
        while chunks and (first is None or chunks[0][0] < first):
            chunks.popleft()
            changed = True
        done = 1
        if chunks:
            done = end - 1 - (segments[end - 1].sequence - chunks[-1][0])
            if not (chunks[0][0] == first and 1 <= done < end and segments[done].sequence == chunks[-1][0]):
                chunks.clear()  # not the run it held (a window that shrank): start over
                done = 1
            else:
                done += 1
        for index in range(done, end):
            lines: list[str] = []
            _segment_lines(lines, segments[index], segments[index - 1].init, low_latency)
            chunks.append((segments[index].sequence, "\n".join(lines)))
            changed = True
        if changed:
            self._text = "\n".join(chunk for _, chunk in chunks)
        return self._text


def _segment_head(lines: list[str], segment: CmafSegment, init: str | None) -> str:
    """The tags before a segment's parts; returns the init segment in force after it."""
    if segment.discontinuity and init is not None:
        lines.append("#EXT-X-DISCONTINUITY")
    if segment.init != init:
        lines.append(f'#EXT-X-MAP:URI="{segment.init}"')
    lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{program_date_time(segment.program_date_time)}")
    return segment.init


def _rendition_report(rendition: Rendition) -> str:
    uri = playlist_name(rendition)
    last = rendition.last_part()
    if last is not None:
        return f'#EXT-X-RENDITION-REPORT:URI="{uri}",LAST-MSN={last[0]},LAST-PART={last[1]}'
    msn = rendition.segments[-1].sequence if rendition.segments else 0
    return f'#EXT-X-RENDITION-REPORT:URI="{uri}",LAST-MSN={msn}'


def multivariant_playlist(packager: CmafPackager) -> str | None:
    """The multivariant playlist, or ``None`` before any rendition exists."""
    video = packager.playlists.get(FrameKind.VIDEO)  # the muxed rendition of a muxed packager
    audio = packager.playlists.get(FrameKind.AUDIO)
    if video is None and audio is None:
        return None
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{VERSION}"]
    if packager.keyframe_aligned:
        lines.append("#EXT-X-INDEPENDENT-SEGMENTS")  # every segment starts with a keyframe
    codecs = [r.codec_string for r in (video, audio) if r is not None]
    bandwidth = sum(max(r.peak_bitrate, 1) for r in (video, audio) if r is not None)
    attributes = [f"BANDWIDTH={bandwidth}", f'CODECS="{",".join(codecs)}"']
    if video is not None:
        track = video.track
        attributes.append(f"RESOLUTION={track.width}x{track.height}")
        if audio is not None:
            channels = f',CHANNELS="{audio.track.channels}"' if audio.track.channels else ""
            lines.append(f'#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="audio",NAME="audio",DEFAULT=YES,AUTOSELECT=YES'
                         f'{channels},URI="{playlist_name(audio)}"')  # fmt: skip
            attributes.append('AUDIO="audio"')
        main = video
    else:
        assert audio is not None
        main = audio
    lines.append("#EXT-X-STREAM-INF:" + ",".join(attributes))
    lines.append(playlist_name(main))
    return "\n".join(lines) + "\n"


# --- blocking playlist reload -------------------------------------------------------------------


class ReloadState(enum.Enum):
    """What to do with a blocking playlist reload."""

    READY = "ready"
    """Answer now: the playlist has what was asked for (or has ended)."""
    WAIT = "wait"
    """Hold the request until the playlist changes, then ask again."""
    TOO_FAR = "too far"
    """Answer ``400`` at once: it asks for more than two segments, or more parts than the
    Advance Part Limit, past the live edge."""


def parse_directives(query: Mapping[str, str]) -> tuple[int, int | None] | None:
    """``(msn, part)`` from a playlist request's ``_HLS_msn`` and ``_HLS_part``, or ``None``
    when there is no ``_HLS_msn`` (an ordinary reload). Raises ``RemoteProtocolError`` for
    values that are not decimal integers in range, and for ``_HLS_part`` alone."""
    msn_text, part_text = query.get("_HLS_msn"), query.get("_HLS_part")
    if msn_text is None:
        if part_text is not None:
            raise RemoteProtocolError("_HLS_part without _HLS_msn")
        return None
    msn = _decimal(msn_text, "_HLS_msn")
    return msn, None if part_text is None else _decimal(part_text, "_HLS_part")


def parse_skip(query: Mapping[str, str]) -> bool:
    """Whether a playlist request asks for a delta update (``_HLS_skip=YES``, or ``v2``, which
    also skips date ranges: none are rendered). Raises ``RemoteProtocolError`` for other values."""
    value = query.get("_HLS_skip")
    if value is None:
        return False
    if value not in ("YES", "v2"):
        raise RemoteProtocolError(f"_HLS_skip must be YES or v2, not {value[:32]!r}")
    return True


def _decimal(text: str, name: str) -> int:
    if not (0 < len(text) <= 19 and text.isascii() and text.isdigit()):
        raise RemoteProtocolError(f"{name} must be a decimal integer, not {text[:32]!r}")
    value = int(text)
    if value > _MAX_DIRECTIVE:
        raise RemoteProtocolError(f"{name} is out of range")
    return value


def advance_part_limit(packager: CmafPackager) -> int:
    """RFC 8216bis: three divided by the part target when it is under a second, else three."""
    target = part_target(packager)
    return max(3, math.floor(3 / target)) if target < 1 else 3


def reload_state(packager: CmafPackager, kind: FrameKind, msn: int, part: int | None) -> ReloadState:
    """Whether the playlist of the rendition of ``kind`` can answer ``_HLS_msn=msn`` (and
    ``_HLS_part=part``) now (RFC 8216bis 6.2.5.2)."""
    if packager.finished:
        return ReloadState.READY
    rendition = packager.playlists.get(kind)
    if rendition is None:
        return ReloadState.WAIT
    complete = rendition.segments[-1].sequence if rendition.segments else None
    live = rendition.open_sequence  # the segment being written, if any
    newest = live if live is not None else (complete if complete is not None else packager.next_sequence - 1)
    if msn > newest + 1:
        return ReloadState.TOO_FAR
    if part is None:
        return ReloadState.READY if complete is not None and complete >= msn else ReloadState.WAIT
    # A part index past a complete segment's last part is part 0 of the next segment (from
    # segment msn on: a DVR window lists thousands before it).
    start = bisect.bisect_left(rendition.segments, msn, key=lambda segment: segment.sequence)
    for segment in itertools.islice(rendition.segments, start, None):
        if segment.sequence == msn and part >= len(segment.parts) and segment.parts:
            msn, part = msn + 1, 0
    if complete is not None and msn <= complete:
        return ReloadState.READY
    have = len(rendition.open_parts) if live == msn else 0
    if part < have or (live is not None and msn < live):
        return ReloadState.READY
    last = have - 1 if live == msn else -1
    if part - last > advance_part_limit(packager):
        return ReloadState.TOO_FAR
    return ReloadState.WAIT
