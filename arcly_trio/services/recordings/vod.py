"""The HLS VOD playlist of a recorded span: byte ranges of recorded fMP4 files (sans-IO, no trio).

:func:`render` writes RFC 8216 version 7: ``#EXT-X-PLAYLIST-TYPE:VOD``, ``#EXT-X-TARGETDURATION``
(every ``EXTINF`` rounded up fits it), then per media segment an ``#EXT-X-MAP`` when its file's
init segment differs from the previous segment's (``BYTERANGE`` of the file's ``ftyp`` +
``moov``), ``#EXT-X-DISCONTINUITY`` where the timeline breaks (another publish session, or a
file whose decode times do not follow the previous one's), ``#EXT-X-PROGRAM-DATE-TIME`` (the
wall-clock time of the segment's first sample, UTC, milliseconds), ``#EXTINF``,
``#EXT-X-BYTERANGE`` and the file's URI; ``#EXT-X-ENDLIST`` last. When every segment starts with a
keyframe (:attr:`VodSegment.independent`) it says ``#EXT-X-INDEPENDENT-SEGMENTS``.

Attacker's view: the URIs are the server's own file names (checked by the caller) with the
request's query appended, percent-encoded by the caller; nothing here is echoed unescaped.
A playlist's size is linear in its segments, which the caller bounds (a span's duration).

Error policy: :func:`render` raises ``ValueError`` for no segment (the caller answers ``404``
before); nothing else.
"""

from __future__ import annotations

import datetime as dt
import math

import attrs

__all__ = ["VodSegment", "render", "program_date"]


@attrs.frozen
class VodSegment:
    """One media segment: bytes ``[offset, offset + length)`` of ``uri``, whose init segment is
    bytes ``[0, init_length)`` of the same file."""

    uri: str
    offset: int
    length: int
    init_length: int
    duration: float
    date: float
    """Epoch seconds (UTC) of its first sample."""
    discontinuity: bool = False
    independent: bool = True


def program_date(epoch: float) -> str:
    """``epoch`` as an ISO 8601 UTC date with milliseconds: ``2026-12-07T01:34:12.123Z``."""
    moment = dt.datetime.fromtimestamp(round(epoch, 3), dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def render(segments: list[VodSegment], query: str = "") -> str:
    """The playlist of ``segments`` (in order); ``query`` (already encoded) is appended to every
    URI (``?query``, or ``&query`` after a query of its own)."""
    if not segments:
        raise ValueError("a VOD playlist needs a segment")

    def with_query(uri: str) -> str:
        return f"{uri}{'&' if '?' in uri else '?'}{query}" if query else uri

    target = max(1, math.ceil(max(s.duration for s in segments) - 1e-9))
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:7",
        "#EXT-X-PLAYLIST-TYPE:VOD",
        f"#EXT-X-TARGETDURATION:{target}",
        "#EXT-X-MEDIA-SEQUENCE:0",
    ]
    if all(s.independent for s in segments):
        lines.append("#EXT-X-INDEPENDENT-SEGMENTS")
    init: tuple[str, int] | None = None
    for segment in segments:
        if segment.discontinuity and init is not None:
            lines.append("#EXT-X-DISCONTINUITY")
        file = segment.uri.partition("?")[0]
        if (file, segment.init_length) != init or segment.discontinuity:
            init = (file, segment.init_length)
            lines.append(f'#EXT-X-MAP:URI="{with_query(file)}",BYTERANGE="{segment.init_length}@0"')
        lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{program_date(segment.date)}")
        lines.append(f"#EXTINF:{segment.duration:.3f},")
        lines.append(f"#EXT-X-BYTERANGE:{segment.length}@{segment.offset}")
        lines.append(with_query(segment.uri))
    lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"
