"""A sans-IO DASH MPD (ISO/IEC 23009-1, live profile) for the segments of a CMAF packager.

:func:`render_mpd` renders the presentation a :class:`~.cmaf.CmafPackager` holds, from the very
segments HLS lists (nothing is packaged twice):

* ``type="dynamic"`` while the stream is live, with ``availabilityStartTime`` (fixed when the
  first segment started), ``publishTime``, ``minimumUpdatePeriod`` (one target duration),
  ``timeShiftBufferDepth`` (the listed window), ``suggestedPresentationDelay`` and
  ``minBufferTime``; ``type="static"`` with ``mediaPresentationDuration`` once it ended.
* One ``Period`` per timeline of the packager (:class:`~.cmaf.Epoch`: a new one after each
  discontinuity or init segment change), starting at the wall-clock time its timeline was
  anchored to, so that media time and wall-clock time agree (as with HLS program date times).
* One ``AdaptationSet`` per rendition (video, audio) with one ``Representation`` (``codecs``
  from the RFC 6381 codec string, ``bandwidth``, ``width``/``height`` or
  ``audioSamplingRate``), and a ``SegmentTemplate`` with ``$Number$`` (the HLS media sequence
  number), the rendition's timescale, ``presentationTimeOffset`` and a ``SegmentTimeline`` of
  the listed segments (runs of equal durations folded with ``r``).
* A ``UTCTiming`` element (``urn:mpeg:dash:utc:direct:2014``) so players need no time server.

The rendered text holds two markers that :func:`finalize` fills in per request, so the MPD is
rendered once per change however many players fetch it: the time of the response (``UTCTiming``)
and the request's query, appended to the segment URLs (``?token=...`` carried on); it also adds
the ``Location`` players reload a live MPD from (the MPD's URL with the player's session id).

Error policy: never raises on a packager's state; ``None`` before any segment is complete.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Final
from xml.sax.saxutils import escape, quoteattr

from ..core.frame import FrameKind
from .cmaf import CmafPackager, CmafSegment, Rendition

__all__ = ["render_mpd", "finalize", "iso_duration", "iso_time"]

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


def _timeline(segments: list[CmafSegment]) -> Iterable[str]:
    """``S`` elements: an explicit ``t`` where a segment does not start where the last ended,
    equal durations folded into ``r``."""
    runs: list[list[int]] = []  # [t, d, r]
    end: int | None = None
    for segment in segments:
        if runs and segment.decode_time == end and segment.ticks == runs[-1][1]:
            runs[-1][2] += 1
        else:
            runs.append([segment.decode_time, segment.ticks, 0])
        end = segment.decode_time + segment.ticks
    previous_end: int | None = None
    for t, d, r in runs:
        head = "" if t == previous_end else f' t="{t}"'
        tail = f' r="{r}"' if r else ""
        yield f'<S{head} d="{d}"{tail}/>'
        previous_end = t + d * (r + 1)


def _adaptation_set(packager: CmafPackager, rendition: Rendition, segments: list[CmafSegment],
                    out_ms: int, index: int) -> list[str]:  # fmt: skip
    track = rendition.track
    ts = rendition.timescale
    video = rendition.kind is FrameKind.VIDEO
    kind = "video" if video else "audio"
    bandwidth = max(rendition.peak_bitrate, 1)
    if video:
        representation = (f'<Representation id="{kind}" codecs={quoteattr(rendition.codec_string)} '
                          f'bandwidth="{bandwidth}" width="{track.width}" height="{track.height}">')  # fmt: skip
    else:
        representation = (f'<Representation id="{kind}" codecs={quoteattr(rendition.codec_string)} '
                          f'bandwidth="{bandwidth}" audioSamplingRate="{track.sample_rate}">')  # fmt: skip
    media = packager.segment_name(rendition, 0)[: -len("0.m4s")] + "$Number$.m4s"
    lines = [
        f'<AdaptationSet id="{index}" contentType="{kind}" mimeType="{kind}/mp4" segmentAlignment="true" '
        f'startWithSAP="1">',
        representation,
    ]
    if not video and track.channels:
        lines.append('<AudioChannelConfiguration schemeIdUri="urn:mpeg:mpegB:cicp:ChannelConfiguration" '
                     f'value="{track.channels}"/>')  # fmt: skip
    lines += [
        f'<SegmentTemplate timescale="{ts}" presentationTimeOffset="{out_ms * ts // 1000}" '
        f'initialization={quoteattr(segments[0].init + _QUERY)} media={quoteattr(media + _QUERY)} '
        f'startNumber="{segments[0].sequence}">',
        "<SegmentTimeline>",
        *_timeline(segments),
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
        f'publishTime="{iso_time(now)}" minBufferTime="{iso_duration(target)}"',
    ]
    periods: list[str] = []
    end = 0.0
    for epoch in packager.epochs:
        sets: list[str] = []
        for index, rendition in enumerate(renditions):
            segments = [s for s in rendition.segments if s.epoch == epoch.index]
            if segments:
                sets += _adaptation_set(packager, rendition, segments, epoch.out_ms, index)
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
