"""DVR on the live HLS playlist: how long the window is, and where its segments are kept.

An application with ``AppSpec.dvr_window`` (``--dvr-window SECONDS``, per application in
``[apps.NAME]``) keeps that much of each live stream listed, so that players (hls.js, Safari,
dash.js for DASH) can seek back in it and return to live. The playlist stays a sliding live
playlist (no ``EXT-X-PLAYLIST-TYPE:EVENT``; every segment keeps its
``EXT-X-PROGRAM-DATE-TIME``; LL-HLS parts only for the segments at the live edge): only its
window is longer. :func:`dvr_window_segments` turns the seconds into the packagers' window of
segments; a segment that leaves it is deleted after the service's ``delete_delay``, as any
other.

Where the segments go: a DVR stream's complete segments (not its parts, init segments and
lists) go to storage on disk, so that the memory one stream holds does not grow with the window
(and they do not count against the memory cap of ``--hls-max-mib``; the window bounds them).
When the service's storage is in memory (:class:`~arcly_trio.storage.MemoryStorage`, the
default of one process), :class:`DvrStorage` wraps it and sends those segments to a
:class:`~arcly_trio.storage.FileStorage` (a directory of its own); when the storage is already
on disk (the shared directory of ``--workers N``), they stay in it. Which keys are DVR segments
is decided from the key alone (:meth:`DvrKeys.on_disk`: the stream's token, a segment's name),
so nothing per segment is remembered.

Attacker's view: the window is the operator's, bounded to :data:`~arcly_trio.kernel.spec.MAX_DVR_WINDOW`
(6 hours); a player's request picks nothing here (it reads what is stored, by names the routes
check). What a publisher can make the disk hold is its bitrate (bounded by
``--max-publish-bitrate``) times the window.

Error policy: :func:`dvr_window_segments` raises ``ValueError`` for a window out of range;
:class:`DvrStorage` raises what the storage it forwards to raises (the service logs and counts
storage errors, as for any storage).
"""

from __future__ import annotations

import collections
import math
import re
from typing import Final

from arcly_trio.kernel.spec import MAX_DVR_WINDOW
from arcly_trio.media.ts_segments import HlsSegmenter, program_date_time
from arcly_trio.storage import AppendHandle, Storage

__all__ = ["DvrKeys", "DvrStorage", "dvr_window_segments", "query_pieces", "QueryPieces", "TsPlaylist"]

_URI_ATTRIBUTE: Final = re.compile(rb'URI="([^"]*)"')
#: A complete segment's name: CMAF ``{token}-v-12.m4s`` / ``{token}-a-12.m4s`` (not a part,
#: ``{token}-v-12.3.m4s``, nor an init segment), MPEG-TS ``{token}-12.ts``.
_SEGMENT: Final = re.compile(r"([0-9a-f]+)-(?:[va]-)?[0-9]+\.(?:m4s|ts)")


def dvr_window_segments(seconds: float, target_duration: float, live_window: int) -> int:
    """How many segments a playlist lists to keep ``seconds`` of DVR with segments of
    ``target_duration``: the live window and the DVR's segments (``live_window`` when
    ``seconds`` is 0)."""
    if not 0 <= seconds <= MAX_DVR_WINDOW:
        raise ValueError(f"the DVR window must be from 0 to {MAX_DVR_WINDOW:g} seconds, not {seconds!r}")
    if seconds == 0:
        return live_window
    return max(live_window, math.ceil(seconds / target_duration - 1e-9))


def query_pieces(playlist: bytes) -> list[bytes]:
    """``playlist`` cut where a player's query goes (joined with ``b"?" + query`` between the
    pieces): after every URI line and every ``URI="..."`` value (see :mod:`.hls_routes`)."""
    pieces: list[bytes] = []
    start = position = 0
    for line in playlist.split(b"\n"):
        end = position + len(line)
        if line.startswith(b"#"):
            for found in _URI_ATTRIBUTE.finditer(line):
                cut = position + found.end(1)
                pieces.append(playlist[start:cut])
                start = cut
        elif line:
            pieces.append(playlist[start:end])
            start = end
        position = end + 1
    pieces.append(playlist[start:])
    return pieces


def _joined(first: list[bytes], second: list[bytes]) -> list[bytes]:
    """The pieces of two texts one after the other (cut at a line boundary)."""
    return [*first[:-1], first[-1] + second[0], *second[1:]]


class QueryPieces:
    """A long (DVR) media playlist cut where a player's query goes, once per render that a
    request reads, so that a request with a query (a session id, a token: every one) costs a
    join, not a parse of the whole playlist (33 ms for a 6-hour window). The cut is made when
    first asked for (:meth:`get`), not at each render: a stream nobody reads between two
    renders (every part) costs nothing here. The run of older segments
    (:class:`~arcly_trio.media.llhls.SegmentMemo`) is cut once each time it changes (once per
    segment); only what is around it is cut at each render read."""

    __slots__ = ("_run", "_run_pieces", "_text", "_text_run", "_pieces", "data")

    def __init__(self) -> None:
        self._run = ""
        self._run_pieces: list[bytes] = [b""]
        self._text = ""
        self._text_run = ""
        self.data = b""
        """The playlist last cut (its bytes as stored)."""
        self._pieces: list[bytes] | None = [b""]

    def cut(self, text: str, data: bytes, run: str) -> None:
        """``data`` (``text`` encoded) holds ``run`` (the memo's run of older segments, or ""):
        it is cut when first read (:attr:`pieces`)."""
        self._text, self._text_run, self.data, self._pieces = text, run, data, None

    def keep(self, data: bytes, pieces: list[bytes]) -> None:
        """``data`` is cut into ``pieces`` already (:class:`TsPlaylist`)."""
        self.data, self._pieces = data, pieces

    @property
    def pieces(self) -> list[bytes]:
        """The pieces of :attr:`data` (joined with ``b"?" + query``)."""
        if self._pieces is None:
            self._pieces = self._cut(self._text, self.data, self._text_run)
        return self._pieces

    def _cut(self, text: str, data: bytes, run: str) -> list[bytes]:
        at = text.find(run) if run else -1
        if at < 0:
            return query_pieces(data)
        if run is not self._run:
            self._run, self._run_pieces = run, query_pieces(run.encode())
        head, tail = text[:at].encode(), text[at + len(run) :].encode()
        return _joined(_joined(query_pieces(head), self._run_pieces), query_pieces(tail))

    def get(self, data: bytes) -> list[bytes] | None:
        """The pieces of ``data`` if it is the playlist last cut."""
        return self.pieces if data is self.data or data == self.data else None


class TsPlaylist:
    """The ``ts`` variant's media playlist of a long (DVR) window: the very text of
    :meth:`~arcly_trio.media.ts_segments.HlsSegmenter.playlist` (80 ms for a 6-hour window),
    with each segment's lines rendered once (the window's render then costs a join, 0.5 ms),
    already cut where players' queries go (after each segment's URI)."""

    __slots__ = ("_chunks",)

    def __init__(self) -> None:
        self._chunks: collections.deque[tuple[int, bytes]] = collections.deque()
        """``b"\\n"`` and the lines of each listed segment, by sequence number."""

    def render(self, segmenter: HlsSegmenter) -> tuple[bytes, list[bytes]]:
        """The playlist's bytes and their pieces (joined with ``b"?" + query``)."""
        segments = segmenter.segments
        chunks = self._chunks
        first = segments[0].sequence if segments else None
        while chunks and (first is None or chunks[0][0] < first):
            chunks.popleft()
        if chunks and not (chunks[0][0] == first and len(chunks) <= len(segments)
                           and segments[len(chunks) - 1].sequence == chunks[-1][0]):  # fmt: skip
            chunks.clear()  # not the window it held: start over
        for segment in segments[len(chunks) :]:
            lines = ["#EXT-X-DISCONTINUITY"] if segment.discontinuity else []
            if segment.program_date_time is not None:
                lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{program_date_time(segment.program_date_time)}")
            lines += [f"#EXTINF:{segment.duration:.3f},", segment.name]
            chunks.append((segment.sequence, ("\n" + "\n".join(lines)).encode()))
        head = ["#EXTM3U", "#EXT-X-VERSION:3", f"#EXT-X-TARGETDURATION:{segmenter.playlist_target_duration}",
                f"#EXT-X-MEDIA-SEQUENCE:{segmenter.media_sequence}"]  # fmt: skip
        if segmenter.discontinuity_sequence:
            head.append(f"#EXT-X-DISCONTINUITY-SEQUENCE:{segmenter.discontinuity_sequence}")
        pieces = ["\n".join(head).encode()]
        pieces += [chunk for _, chunk in chunks]
        if len(pieces) > 1:
            pieces[:2] = [pieces[0] + pieces[1]]
        pieces.append(b"\n#EXT-X-ENDLIST\n" if segmenter.finished else b"\n")
        if len(pieces) == 2 and not chunks:
            pieces = [pieces[0] + pieces[1]]
        return b"".join(pieces), pieces


class DvrKeys:
    """The streams (by their token, new for each stream) whose segments are DVR segments."""

    __slots__ = ("tokens",)

    def __init__(self) -> None:
        self.tokens: set[str] = set()

    def on_disk(self, key: str) -> bool:
        """Whether ``key`` (``app/stream/name``) is a complete segment of a DVR stream."""
        if not self.tokens:
            return False  # no DVR stream: every store of every stream asks, no regex for it
        name = key.rpartition("/")[2]
        found = _SEGMENT.fullmatch(name)
        return found is not None and found.group(1) in self.tokens


class DvrStorage:
    """A :class:`~arcly_trio.storage.Storage` that keeps DVR segments (:class:`DvrKeys`) in
    ``disk`` and everything else in ``memory``."""

    def __init__(self, memory: Storage, disk: Storage, keys: DvrKeys) -> None:
        self.memory = memory
        self.disk = disk
        self.keys = keys

    def __repr__(self) -> str:
        return f"DvrStorage({self.memory!r}, {self.disk!r})"

    def _of(self, key: str) -> Storage:
        return self.disk if self.keys.on_disk(key) else self.memory

    async def put(self, key: str, data: bytes) -> None:
        await self._of(key).put(key, data)

    async def get(self, key: str) -> bytes:
        return await self._of(key).get(key)

    async def delete(self, key: str) -> None:
        await self._of(key).delete(key)

    async def list(self, prefix: str = "") -> list[str]:
        return sorted({*await self.memory.list(prefix), *await self.disk.list(prefix)})

    async def open_append(self, key: str) -> AppendHandle:
        return await self._of(key).open_append(key)
