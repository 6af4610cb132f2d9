"""A sans-IO DASH MPD (ISO/IEC 23009-1, live profile) for the segments of a CMAF packager.

:func:`render_mpd` renders the presentation a :class:`~.cmaf.CmafPackager` holds, from the very
segments HLS lists (nothing is packaged twice):

* ``type="dynamic"`` while the stream is live, with ``availabilityStartTime`` (fixed when the
  first segment started), ``publishTime``, ``minimumUpdatePeriod`` (one target duration),
  ``timeShiftBufferDepth`` (the listed window), ``suggestedPresentationDelay``,
  ``minBufferTime`` and ``maxSegmentDuration`` (the HLS target duration, which every segment
  keeps); ``type="static"`` with ``mediaPresentationDuration`` once it ended.
* One ``Period`` per timeline of the packager (:class:`~.cmaf.Epoch`: a new one after each
  discontinuity or init segment change), starting at the wall-clock time its timeline was
  anchored to, so that media time and wall-clock time agree (as with HLS program date times).
* One ``AdaptationSet`` per rendition (video, audio) with one ``Representation`` (``codecs``
  from the RFC 6381 codec string, ``bandwidth``, ``width``/``height`` or
  ``audioSamplingRate``), and a ``SegmentTemplate`` with ``$Number$`` (the HLS media sequence
  number), the rendition's timescale, ``presentationTimeOffset`` and a ``SegmentTimeline`` of
  the listed segments (runs of equal durations folded with ``r``). The timeline starts at the
  period's start with the period's first segment, numbered ``startNumber``, also once that one
  has left the window (the segments gone are described evenly), and names only segments that
  exist (a rendition's gap segments at the period's head are not numbered: its template names
  offset numbers the routes map back, :func:`resolve`): see :func:`_listed` for the players
  this serves. ``startWithSAP="1"`` while every segment starts with a keyframe. Players that
  ask for the segment after the last listed one before it exists (ffmpeg) are held until it
  does by the routes (:mod:`arcly_trio.services.hls_routes`).
* A ``UTCTiming`` element (``urn:mpeg:dash:utc:direct:2014``) so players need no time server.

The rendered text holds two markers that :func:`finalize` fills in per request, so the MPD is
rendered once per change however many players fetch it: the time of the response (``UTCTiming``)
and the request's query, appended to the segment URLs (``?token=...`` carried on); it also adds
the ``Location`` players reload a live MPD from (the MPD's URL with the player's session id).

Error policy: never raises on a packager's state; ``None`` before any segment is complete.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from typing import Final
from xml.sax.saxutils import escape, quoteattr

from arcly_trio.core.frame import FrameKind
from arcly_trio.media.cmaf import CmafPackager, CmafSegment, Epoch, Rendition

__all__ = ["render_mpd", "finalize", "iso_duration", "iso_time", "media_template", "resolve"]

_NOW: Final = "@@ARCLY-NOW@@"
_QUERY: Final = "@@ARCLY-QUERY@@"


def iso_duration(seconds: float) -> str:
    """An ``xs:duration`` in seconds with millisecond precision (``PT2.5S``)."""
    return f"PT{max(0.0, seconds):.3f}".rstrip("0").rstrip(".") + "S"


def iso_time(seconds: float) -> str:
    """An ``xs:dateTime`` in UTC with milliseconds."""
    millis = int(round(seconds * 1000))
    whole, ms = divmod(millis, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{ms:03d}Z"


def _timeline(runs: Iterable[tuple[int, int, int]]) -> Iterable[str]:
    """``S`` elements of ``(t, d, count)`` runs: an explicit ``t`` where a segment does not start
    where the last ended, equal durations folded into ``r``."""
    merged: list[list[int]] = []  # [t, d, r]
    end: int | None = None
    for t, d, count in runs:
        if count <= 0:
            continue
        if merged and t == end and d == merged[-1][1]:
            merged[-1][2] += count
        else:
            merged.append([t, d, count - 1])
        end = t + d * count
    previous_end: int | None = None
    for t, d, r in merged:
        head = "" if t == previous_end else f' t="{t}"'
        tail = f' r="{r}"' if r else ""
        yield f'<S{head} d="{d}"{tail}/>'
        previous_end = t + d * (r + 1)


def _listed(segments: list[CmafSegment], epoch: Epoch, ts: int,
            first_media: int) -> tuple[list[tuple[int, int, int]], int]:  # fmt: skip
    """The ``(t, d, count)`` runs of the segments a period's timeline lists, numbered from
    ``epoch.first_sequence``, and the offset from those numbers to the segments' sequence numbers.

    The timeline starts at the period's start, with the rendition's first segment with media
    in the period (sequence ``first_media``), even when that one has left the window: dashdemux2
    (GStreamer 1.22) finds the live segment only in a timeline that starts at the period's
    start, ffmpeg's dashdemux counts segments from the first ``S`` when it reloads the MPD
    (its numbers must start at ``startNumber`` there), and VLC stops asking for a rendition whose
    first segment answers ``404``. So the rendition's gap segments at the head of the period
    (audio that started a while after the video: never stored) are not numbered: the numbers
    are offset by their count (the template names them, see :func:`media_template`). The
    segments between the first with media and the first listed (gone from the window) are
    described evenly over the time they span (their own durations are not kept): they are
    outside ``timeShiftBufferDepth``, so no player asks for them. When the first listed segment
    is the first with media, it is drawn from the period's start.
    """
    pto = epoch.out_ms * ts // 1000
    while segments and segments[0].gap:
        segments = segments[1:]
    first = segments[0]
    offset = max(0, first_media - epoch.first_sequence)
    runs = [(s.decode_time, s.ticks, 1) for s in segments]
    before = first.sequence - first_media  # segments with media since the first, not listed
    span = first.decode_time - pto
    if span > 0 and (before <= 0 or span < before):
        runs[0] = (pto, first.ticks + span, 1)
    elif span > 0:
        each, longer = divmod(span, before)
        runs = [(pto, each + 1, longer), (pto + longer * (each + 1), each, before - longer), *runs]
    return runs, offset


def media_template(name_prefix: str, letter: str, offset: int) -> str:
    """The ``media`` template of a rendition's segments (``{prefix}v-$Number$.m4s``), or, when
    its numbers are offset from the sequence numbers, the name the routes map back
    (``{prefix}a3-$Number$.m4s`` is ``{prefix}a-{$Number$ + 3}.m4s``: :func:`resolve`)."""
    return f"{name_prefix}{letter}{offset or ''}-$Number$.m4s"


_OFFSET_NAME: Final = re.compile(
    r"(?P<prefix>(?:[A-Za-z0-9_]*-)*)(?P<letter>[va])(?P<offset>[1-9][0-9]{0,8})-"
    r"(?P<number>[0-9]{1,12})\.m4s"
)


def resolve(name: str) -> str:
    """The segment name a DASH request names (``{prefix}a3-12.m4s`` -> ``{prefix}a-15.m4s``);
    other names as they are."""
    found = _OFFSET_NAME.fullmatch(name)
    if found is None:
        return name
    sequence = int(found.group("number")) + int(found.group("offset"))
    return f"{found.group('prefix')}{found.group('letter')}-{sequence}.m4s"


def _adaptation_set(packager: CmafPackager, rendition: Rendition, segments: list[CmafSegment],
                    epoch: Epoch, index: int) -> list[str]:  # fmt: skip
    track = rendition.track
    ts = rendition.timescale
    pto = epoch.out_ms * ts // 1000
    first_media = rendition.media_starts.get(epoch.index, segments[0].sequence)
    runs, offset = _listed(segments, epoch, ts, first_media)
    video = rendition.kind is FrameKind.VIDEO
    kind = "video" if video else "audio"
    bandwidth = max(rendition.peak_bitrate, 1)
    if video:
        representation = (f'<Representation id="{kind}" codecs={quoteattr(rendition.codec_string)} '
                          f'bandwidth="{bandwidth}" width="{track.width}" height="{track.height}">')  # fmt: skip
    else:
        representation = (f'<Representation id="{kind}" codecs={quoteattr(rendition.codec_string)} '
                          f'bandwidth="{bandwidth}" audioSamplingRate="{track.sample_rate}">')  # fmt: skip
    media = media_template(packager.name_prefix, rendition.name[0], offset)
    sap = ' startWithSAP="1"' if packager.keyframe_aligned or not video else ""
    lines = [
        f'<AdaptationSet id="{index}" contentType="{kind}" mimeType="{kind}/mp4" segmentAlignment="true"{sap}>',
        representation,
    ]
    if not video and track.channels:
        lines.append('<AudioChannelConfiguration schemeIdUri="urn:mpeg:mpegB:cicp:ChannelConfiguration" '
                     f'value="{track.channels}"/>')  # fmt: skip
    lines += [
        f'<SegmentTemplate timescale="{ts}" presentationTimeOffset="{pto}" '
        f"initialization={quoteattr(segments[0].init + _QUERY)} media={quoteattr(media + _QUERY)} "
        f'startNumber="{epoch.first_sequence}">',
        "<SegmentTimeline>",
        *_timeline(runs),
        "</SegmentTimeline>",
        "</SegmentTemplate>",
        "</Representation>",
        "</AdaptationSet>",
    ]
    return lines


def render_mpd(packager: CmafPackager, *, now: float, suggested_delay: float | None = None) -> str | None:
    """The MPD (see the module docstring); ``now`` is the wall-clock time (``publishTime``)."""
    start = packager.availability_start
    renditions = [r for r in packager.renditions.values() if r.segments]
    if start is None or not renditions:
        return None
    target = packager.target_duration
    window = max(sum(s.duration for s in r.segments) for r in renditions)
    delay = suggested_delay if suggested_delay is not None else 3 * target
    static = packager.finished
    head = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" profiles="urn:mpeg:dash:profile:isoff-live:2011" '
        f'type="{"static" if static else "dynamic"}" availabilityStartTime="{iso_time(start)}" '
        f'publishTime="{iso_time(now)}" minBufferTime="{iso_duration(target)}" '
        f'maxSegmentDuration="{iso_duration(packager.playlist_target_duration)}"',
    ]
    periods: list[str] = []
    end = 0.0
    for epoch in packager.epochs:
        sets: list[str] = []
        for index, rendition in enumerate(renditions):
            segments = [s for s in rendition.segments if s.epoch == epoch.index]
            while segments and segments[0].gap:
                segments = segments[1:]
            if segments:
                sets += _adaptation_set(packager, rendition, segments, epoch, index)
                last = segments[-1]
                media_end = (last.decode_time + last.ticks) / rendition.timescale - epoch.out_ms / 1000
                end = max(end, epoch.wallclock - start + media_end)
        if sets:
            periods += [f'<Period id="{epoch.index}" start="{iso_duration(epoch.wallclock - start)}">', *sets,
                        "</Period>"]  # fmt: skip
    if static:
        head[-1] += f' mediaPresentationDuration="{iso_duration(end)}">'
    else:
        head[-1] += (f' minimumUpdatePeriod="{iso_duration(target)}" timeShiftBufferDepth="{iso_duration(window)}"'
                     f' suggestedPresentationDelay="{iso_duration(delay)}">')  # fmt: skip
    tail = [f'<UTCTiming schemeIdUri="urn:mpeg:dash:utc:direct:2014" value="{_NOW}"/>', "</MPD>"]
    return "\n".join(head + periods + tail) + "\n"


def finalize(mpd: bytes, now: float, query: str = "", location: str | None = None) -> bytes:
    """The MPD as sent: the ``UTCTiming`` value set to ``now``, ``?query`` (already
    URL-encoded) appended to the segment URLs and, for a dynamic MPD, ``location`` (a URL, may
    be relative) as its ``Location``: where players reload it from (a URL with the player's
    session id)."""
    suffix = escape("?" + query, {'"': "&quot;"}) if query else ""
    done = mpd.replace(_NOW.encode(), iso_time(now).encode()).replace(_QUERY.encode(), suffix.encode())
    if location is not None and b'type="dynamic"' in done:
        element = f"<Location>{escape(location)}</Location>\n".encode()
        at = done.find(b"<Period")
        if at >= 0:
            done = done[:at] + element + done[at:]
    return done
