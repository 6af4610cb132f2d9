"""Playing recordings back: a span of a stream's recorded fMP4 segments as an HLS VOD playlist over
byte ranges of the files, or as one fragmented MP4 re-based onto one timeline.

:class:`Playback` answers for a recording directory through its catalog (the record service's
:class:`~arcly_trio.services.recordings.catalog.Catalog`, or anything with the same
``segments`` and ``path``: :class:`RecordingCatalog`). The HTTP routes
(:mod:`arcly_trio.workers.http.playback_routes`) find it as the ``playback`` attribute of an
engine plugin (:class:`~arcly_trio.workers.http.playback_routes.PlaybackProvider`), authorize
the request, and call:

* :meth:`Playback.plan`: which files, and which fragments of each, cover ``[start, start +
  duration)``: from the last fragment that starts with a keyframe at or before ``start`` (so
  playback starts on a keyframe, up to one GOP early; when nothing was recorded at ``start``,
  before or between recordings, at the first keyframe after it) to the last fragment that
  starts before the end. Each
  file is scanned once by its box headers (:mod:`.mp4scan`) in a thread and the result is kept
  while the file's size and modification time stay the same (a file still being written is
  scanned again when it grew), for at most :attr:`Playback.cache_files` files.
* :meth:`Playback.playlist`: the HLS VOD playlist of a plan (:mod:`.vod`): one media segment per
  run of fragments from a keyframe to the first keyframe at least :data:`SEGMENT_SECONDS` later
  (so each is independent), its bytes a range of the file, the file's init segment as
  ``EXT-X-MAP``, a discontinuity across publish sessions. A fragment is listed when its middle
  is before the end, so the playlist's duration is within half a fragment of what was asked.
  Where a file's decode times do not follow the previous file's (a publisher that reconnected
  starts again from 0: ffmpeg's MP4 reader drops the fragments that go back), its URI asks for
  them moved (``?shift=MICROSECONDS``, :func:`timeline`), which :meth:`Playback.patches` and
  :func:`apply_patches` do in place as the bytes are sent, so that ranges still hold.
* :meth:`Playback.layout` and :meth:`Playback.mp4`: one fMP4 of the plan: the first file's init
  segment with the span's duration (:func:`~.mp4rebase.span_init`), then every fragment rebuilt
  (:func:`~.mp4rebase.rewrite_fragment`): numbered 1, 2, 3..., each file's decode times moved so
  the files follow one another from 0 (gaps between files closed), the last fragment cut at the
  requested end to the frame. The layout says where every byte comes from before one is read
  (sizes from the scans, :func:`~.mp4rebase.rebuilt_size`; only cut fragments are rebuilt to
  be measured), so the length is known and any byte range is made alone (a ``<video>`` element
  and ffmpeg seek in it to read its duration). **Codec changes:** an MP4 has one
  ``moov``, so the span stops before the first file whose tracks differ from the first file's
  (another codec, configuration, picture size, track ids or timescales: a publisher that came
  back with other settings); :attr:`Plan.stopped` says so, and the route sends a header.
  (The HLS playlist has no such limit: each file brings its init segment.)
* :meth:`Playback.file` and :meth:`Playback.read`: a recorded file's size and bytes, for the
  byte ranges the playlist names.

Everything that touches the disk runs in ``trio.to_thread.run_sync`` under one capacity
limiter per :class:`Playback` (:attr:`Playback.threads` at once); an MP4 is read and rebuilt a
batch of fragments (about :data:`BATCH_BYTES`) per thread hop, never whole in memory.

Attacker's view: start and duration are the client's (the routes parse them strictly and bound
the duration to :data:`MAX_DURATION`); what a span costs is bounded by the recordings it covers
(at most a day's files, each scanned once and cached); file names come from the catalog, or for
a byte-range request are checked against :data:`FILE_NAME` and resolved by the catalog's
``path`` (which refuses anything outside the stream's directory); the caches are bounded.

Error policy: a file that vanished, cannot be read or does not parse is left out of a plan
(logged at warning level once per file and size), and so is a segment in another format (TS,
FLV); :meth:`plan` returns ``None`` when nothing recorded covers the span, or the catalog
cannot be read (logged). :meth:`layout` returns ``None`` when the first file's init segment
cannot be read. :meth:`mp4` stops early (logged) when a file cannot be read or no longer
matches its scan: the route then closes the connection, so the client sees a short body, never
wrong bytes. :meth:`read` raises ``OSError`` from the disk.
"""

from __future__ import annotations

import bisect
import functools
import logging
import os
import pathlib
import re
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from typing import Any, Final, Protocol

import attrs
import trio

from arcly_trio.core.keys import StreamKey
from arcly_trio.core.text import printable
from arcly_trio.services.recordings.mp4rebase import rebuilt_size, rewrite_fragment, span_init
from arcly_trio.services.recordings.mp4scan import FragmentInfo, Mp4Index, TrackInfo, scan_path
from arcly_trio.services.recordings.vod import VodSegment, render
from arcly_trio.storage import StorageError

__all__ = [
    "Playback",
    "Plan",
    "Piece",
    "RecordingCatalog",
    "RecordedSegment",
    "MAX_DURATION",
    "FILE_NAME",
    "BATCH_BYTES",
    "SEGMENT_SECONDS",
    "apply_patches",
    "timeline",
    "Mp4Layout",
]

log = logging.getLogger("arcly_trio.playback")

MAX_DURATION: Final = 86_400.0
"""The longest span one request may ask for (seconds): a day."""
SEGMENT_SECONDS: Final = 4.0
"""A playlist's media segment ends at the first keyframe this long after its start (or at the
end of its file): segments of 4 to 6 s with the usual GOPs of 1 or 2 s, one GOP each when GOPs
are longer."""
BATCH_BYTES: Final = 1 << 20
"""About how many bytes of an MP4 body one thread hop reads and rebuilds."""
FILE_NAME: Final = re.compile(r"[0-9]{8}T[0-9]{6}(?:\.[0-9]{1,9})?Z(?:-[0-9]{1,6})?\.mp4")
"""A recorded segment's file name (``{UTC start}.mp4``, see the recording contract)."""
_EPSILON: Final = 0.001


class RecordedSegment(Protocol):
    """What :class:`Playback` reads of a catalog's segment record."""

    @property
    def file(self) -> str: ...
    @property
    def start(self) -> float: ...
    @property
    def duration(self) -> float: ...
    @property
    def session(self) -> str: ...


class RecordingCatalog(Protocol):
    """What :class:`Playback` needs of the recording catalog."""

    def path(self, key: StreamKey, file: str) -> pathlib.Path: ...

    async def segments(
        self, key: StreamKey, start: float | None = None, end: float | None = None
    ) -> Sequence[RecordedSegment]: ...

    async def spans(self, key: StreamKey, start: float | None = None, end: float | None = None) -> Sequence[Any]: ...


@attrs.frozen
class Piece:
    """One file's part of a span: ``fragments`` of ``file`` (in order); the file's own time ``t``
    (seconds) is wall-clock ``base + t``; ``cut``: where the span ends inside the last fragment
    (file time), or ``None``."""

    file: str
    path: pathlib.Path
    session: str
    index: Mp4Index
    fragments: tuple[FragmentInfo, ...]
    base: float
    cut: float | None = None

    @functools.cached_property
    def firsts(self) -> dict[int, float]:
        """File time of each track's first sample in the piece."""
        scales = {t.track_id: t.timescale for t in self.index.tracks}
        out: dict[int, float] = {}
        for fragment in self.fragments:
            for time in fragment.times:
                out.setdefault(time.track_id, time.decode_time / scales[time.track_id])
        return out

    @functools.cached_property
    def ends(self) -> dict[int, float]:
        """File time where each track's last sample in the piece ends, the cut applied."""
        scales = {t.track_id: t.timescale for t in self.index.tracks}
        out: dict[int, float] = {}
        for fragment in self.fragments:
            for time in fragment.times:
                end = time.end / scales[time.track_id]
                if self.cut is not None:
                    end = min(end, max(self.cut, time.decode_time / scales[time.track_id]))
                out[time.track_id] = max(out.get(time.track_id, 0.0), end)
        return out

    @property
    def start(self) -> float:
        """Wall-clock time of the piece's first fragment."""
        return self.base + self.fragments[0].start

    @property
    def end(self) -> float:
        """Wall-clock time where the piece's last fragment ends (the cut applied)."""
        last = self.fragments[-1].end
        return self.base + (min(last, self.cut) if self.cut is not None else last)


@attrs.frozen
class Plan:
    """What plays for a request: ``pieces`` from ``start`` (wall clock, the first keyframe) to
    ``end``; ``stopped``: why an MP4 plan ends before what was asked (or ``None``)."""

    key: StreamKey
    start: float
    end: float
    pieces: tuple[Piece, ...]
    stopped: str | None = None
    duration: float = attrs.field(init=False)
    """Seconds of media on the MP4's timeline (gaps between files left out)."""

    @duration.default
    def _duration(self) -> float:
        return timeline(self.pieces, from_zero=True)[1]


def timeline(pieces: Sequence[Piece], *, from_zero: bool) -> tuple[list[float], float]:
    """How far each piece's decode times move (seconds) so that the pieces follow one another,
    every track after its own previous end (within a publish session, where the files follow
    one another already, that is 0; after a reconnect, whose decode times start again, it moves
    them past the previous session's), and where the last track then ends. The first piece
    moves to 0 (``from_zero``: the MP4) or stays where it is (HLS)."""
    shifts: list[float] = []
    ends: dict[int, float] = {}
    for piece in pieces:
        firsts = piece.firsts
        if not shifts:
            shift = -min(firsts.values(), default=0.0) if from_zero else 0.0
        else:
            common = [ends[track] - first for track, first in firsts.items() if track in ends]
            shift = max(common) if common else max(ends.values(), default=0.0) - min(firsts.values(), default=0.0)
            if abs(shift) < 0.001:
                shift = 0.0  # the files follow one another already
        shifts.append(shift)
        for track, end in piece.ends.items():
            ends[track] = max(ends.get(track, 0.0), end + shift)
    return shifts, max(ends.values(), default=0.0)


def _compatible(a: Mp4Index, b: Mp4Index) -> bool:
    return a is b or a.signature == b.signature


def _stat(path: pathlib.Path) -> tuple[int, int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_size, info.st_mtime_ns


def _read(path: pathlib.Path, offset: int, length: int) -> bytes:
    with open(path, "rb") as file:
        file.seek(offset)
        return file.read(length)


class Playback:
    """Plans, playlists and MP4 bodies over one recording catalog (see the module docstring).

    Args:
        catalog: the recording catalog.
        threads: file reads and scans at once.
        cache_files: scanned files remembered.
    """

    def __init__(self, catalog: RecordingCatalog, *, threads: int = 2, cache_files: int = 2048) -> None:
        if threads < 1 or cache_files < 1:
            raise ValueError("threads and cache_files must be at least 1")
        self.catalog = catalog
        self.threads = threads
        self.cache_files = cache_files
        self.limiter = trio.CapacityLimiter(threads)
        self._indexes: OrderedDict[pathlib.Path, tuple[tuple[int, int], Mp4Index]] = OrderedDict()
        self._warned: set[tuple[pathlib.Path, int]] = set()
        self._scanning: dict[pathlib.Path, trio.Event] = {}
        self.scans = 0
        """Files scanned (not answered from the cache), for tests and metrics."""

    # ---------------------------------------------------------------- files

    async def index(self, path: pathlib.Path, stat: tuple[int, int] | None = None) -> Mp4Index | None:
        """The scan of ``path`` (cached by size and modification time: ``stat``, which is read
        when not given), or ``None`` when it cannot be read."""
        if stat is None:
            stat = await trio.to_thread.run_sync(_stat, path, limiter=self.limiter)
        if stat is None:
            return None
        while (scanning := self._scanning.get(path)) is not None:
            await scanning.wait()  # one scan of a file at a time: a flood of requests costs one
        cached = self._indexes.get(path)
        if cached is not None and cached[0] == stat:
            self._indexes.move_to_end(path)
            return cached[1]
        done = self._scanning[path] = trio.Event()
        try:
            index = await trio.to_thread.run_sync(scan_path, path, stat[0], limiter=self.limiter)
        except OSError as exc:
            self._warn(path, stat[0], f"cannot be read: {exc}")
            return None
        finally:
            del self._scanning[path]
            done.set()
        self.scans += 1
        if index.problem is not None:
            self._warn(path, stat[0], f"is damaged after {len(index.fragments)} fragments: {index.problem}")
        self._indexes[path] = (stat, index)
        self._indexes.move_to_end(path)
        while len(self._indexes) > self.cache_files:
            self._indexes.popitem(last=False)
        return index

    def _warn(self, path: pathlib.Path, size: int, what: str) -> None:
        if (path, size) in self._warned:
            return
        if len(self._warned) > self.cache_files:
            self._warned.clear()
        self._warned.add((path, size))
        log.warning("recording %s %s", printable(str(path)), printable(what))

    async def file(self, key: StreamKey, name: str) -> tuple[pathlib.Path, int] | None:
        """The path and size of the recorded file ``name`` of ``key``, or ``None`` when the name
        is not a recording's or there is no such file. (The catalog's ``path`` may raise
        ``ValueError`` for a name it refuses: ``None`` too.)"""
        if not FILE_NAME.fullmatch(name):
            return None
        return await trio.to_thread.run_sync(self._file, key, name, limiter=self.limiter)

    def _file(self, key: StreamKey, name: str) -> tuple[pathlib.Path, int] | None:
        try:
            path = self.catalog.path(key, name)  # it resolves the path: in a thread
        except (StorageError, ValueError, OSError):
            return None
        stat = _stat(path)
        if stat is None or not os.path.isfile(path):
            return None
        return path, stat[0]

    def _paths(self, key: StreamKey, files: list[str]) -> list[tuple[pathlib.Path, tuple[int, int]] | None]:
        """Each file's path and (size, modification time), or ``None`` (one thread hop for all)."""
        out: list[tuple[pathlib.Path, tuple[int, int]] | None] = []
        for file in files:
            try:
                path = self.catalog.path(key, file)
            except (StorageError, ValueError, OSError):
                out.append(None)
                continue
            stat = _stat(path)
            out.append(None if stat is None else (path, stat))
        return out

    async def spans(self, key: StreamKey, start: float | None = None, end: float | None = None) -> Sequence[Any]:
        """The catalog's spans of ``key`` overlapping ``[start, end)`` (``/list``; none when the
        catalog cannot be read, logged)."""
        try:
            return await self.catalog.spans(key, start, end)
        except StorageError as exc:
            log.warning("the recordings of %s cannot be listed: %s", key, exc)
            return []

    async def read(self, path: pathlib.Path, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes of ``path`` from ``offset`` (a thread hop)."""
        return await trio.to_thread.run_sync(_read, path, offset, length, limiter=self.limiter)

    # ---------------------------------------------------------------- plans

    async def plan(
        self, key: StreamKey, start: float, duration: float, *, whole_fragments: bool = False
    ) -> Plan | None:
        """What plays for ``[start, start + duration)`` of ``key`` (see the module docstring),
        or ``None`` when nothing recorded covers it. ``whole_fragments`` (HLS): fragments are
        not cut; one is listed when its middle is before the end. Otherwise (MP4) the last one is
        cut at the end and the plan stops before a file whose tracks differ from the first's."""
        end = start + min(duration, MAX_DURATION)
        try:
            records = [r for r in await self.catalog.segments(key, start, end) if r.file.endswith(".mp4")]
        except StorageError as exc:
            log.warning("the recordings of %s cannot be listed: %s", key, exc)
            return None
        paths = await trio.to_thread.run_sync(self._paths, key, [r.file for r in records], limiter=self.limiter)
        scanned: list[tuple[RecordedSegment, pathlib.Path, Mp4Index]] = []
        for record, found in zip(records, paths, strict=True):
            if found is None:
                continue
            path, stat = found
            index = await self.index(path, stat)
            if index is not None and index.fragments and index.init_size:
                scanned.append((record, path, index))
        # Every fragment on the wall clock: (file number, fragment number, start).
        timeline: list[tuple[int, int, float]] = []
        for number, (record, _, index) in enumerate(scanned):
            base = record.start - index.fragments[0].start
            timeline.extend((number, i, base + f.start) for i, f in enumerate(index.fragments))
        first = None
        recorded = False  # whether a fragment holds `start` (else it falls before or between recordings)
        for position, (number, i, at) in enumerate(timeline):
            fragment = scanned[number][2].fragments[i]
            if at <= start + _EPSILON:
                recorded = recorded or start < at + fragment.duration
                if fragment.sync:
                    first = position
        if not recorded:  # from the first keyframe after it
            first = next(
                (
                    p
                    for p, (n, i, at) in enumerate(timeline)
                    if scanned[n][2].fragments[i].sync and at >= start - _EPSILON
                ),
                None,
            )
        if first is None:
            return None
        chosen: dict[int, list[int]] = {}
        for number, i, at in timeline[first:]:
            fragment = scanned[number][2].fragments[i]
            if at >= end - _EPSILON or (whole_fragments and at + fragment.duration / 2 >= end and chosen):
                break
            if number not in chosen and not fragment.sync:
                continue  # a file's part begins on a keyframe
            chosen.setdefault(number, []).append(i)
        pieces: list[Piece] = []
        stopped = None
        for number, indexes in chosen.items():
            record, path, index = scanned[number]
            if not whole_fragments and pieces and not _compatible(index, pieces[0].index):
                stopped = f"the recording's tracks change at {record.file} (another codec or configuration)"
                break
            base = record.start - index.fragments[0].start
            fragments = tuple(index.fragments[i] for i in indexes)
            cut = None
            if not whole_fragments and base + fragments[-1].end > end + _EPSILON:
                cut = end - base
            pieces.append(Piece(record.file, path, record.session, index, fragments, base, cut))
        if not pieces:
            return None
        return Plan(key, pieces[0].start, pieces[-1].end, tuple(pieces), stopped)

    # ---------------------------------------------------------------- HLS

    @staticmethod
    def playlist(plan: Plan, prefix: str, query: str = "") -> str:
        """The HLS VOD playlist of ``plan``; each file's URI is ``prefix + file`` (+ ``?query``),
        with ``shift=MICROSECONDS`` first in its query when its decode times must move to
        follow the previous file's (see :meth:`patches`)."""
        segments: list[VodSegment] = []
        previous: Piece | None = None
        moves, _ = timeline(plan.pieces, from_zero=False)
        for piece, move in zip(plan.pieces, moves, strict=True):
            broken = previous is not None and (
                piece.session != previous.session or not _compatible(piece.index, previous.index)
            )
            shift = round(move * 1_000_000)
            previous = piece
            uri = prefix + piece.file + (f"?shift={shift}" if shift else "")
            group: list[FragmentInfo] = []
            for fragment in piece.fragments:
                long_enough = group and fragment.sync and fragment.start - group[0].start >= SEGMENT_SECONDS
                if group and (long_enough or fragment.offset != group[-1].offset + group[-1].size):
                    segments.append(_segment(piece, group, uri, broken))
                    broken = False
                    group = []
                group.append(fragment)
            segments.append(_segment(piece, group, uri, broken))
        return render(segments, query)

    async def patches(self, path: pathlib.Path, shift: int) -> list[tuple[int, bytes]]:
        """Where the decode times of ``path`` are, and their bytes moved by ``shift``
        microseconds (each track in its own timescale, never below 0): what
        :func:`apply_patches` writes over the file's bytes, so that a byte range of a file whose
        timeline does not follow the previous file's can be served with one that does (ffmpeg's
        MP4 reader drops the samples of a fragment whose decode times go back)."""
        index = await self.index(path)
        if index is None or not shift:
            return []
        scales = {t.track_id: t.timescale for t in index.tracks}
        out = []
        for fragment in index.fragments:
            for time in fragment.times:
                if time.field < 0:
                    continue
                moved = max(0, time.decode_time + round(shift * scales[time.track_id] / 1_000_000))
                if time.wide:
                    out.append((time.field, min(moved, (1 << 64) - 1).to_bytes(8, "big")))
                else:
                    out.append((time.field, min(moved, 0xFFFFFFFF).to_bytes(4, "big")))
        return out

    @staticmethod
    def apply_patches(data: bytes, position: int, patches: Sequence[tuple[int, bytes]]) -> bytes:
        """:func:`apply_patches` (for the routes, which reach this module only through an object)."""
        return apply_patches(data, position, patches)

    # ---------------------------------------------------------------- MP4

    async def layout(self, plan: Plan) -> Mp4Layout | None:
        """Where every byte of the MP4 of ``plan`` comes from, so that its length is known before
        it is sent (``Content-Length``) and any byte range of it can be made alone: its init
        segment, and each fragment's place, size and rebuilding. Sizes come from the scans; only
        the fragments the end cuts are rebuilt here (in a thread) to measure them. ``None`` when
        the first file's init segment cannot be read."""
        first = plan.pieces[0]
        tracks = {t.track_id: t for t in first.index.tracks}
        try:
            init = span_init(await self.read(first.path, 0, first.index.init_size), plan.duration)
        except (OSError, ValueError) as exc:
            log.warning("recording %s: no MP4 init segment: %s", printable(first.file), exc)
            return None
        moves, _ = timeline(plan.pieces, from_zero=True)
        shifts = tuple({t.track_id: round(move * t.timescale) for t in first.index.tracks} for move in moves)
        cuts = tuple(
            None if piece.cut is None else {t.track_id: round(piece.cut * t.timescale) for t in tracks.values()}
            for piece in plan.pieces
        )
        parts: list[tuple[int, int, int, int]] = []
        offset = len(init)
        for number, piece in enumerate(plan.pieces):
            cut = cuts[number]
            measured: dict[int, int] = {}
            if cut is not None:
                touched = [i for i, f in enumerate(piece.fragments) if any(t.end > cut[t.track_id] for t in f.times)]
                try:
                    sizes = await trio.to_thread.run_sync(
                        _sizes, piece.path, [piece.fragments[i] for i in touched], shifts[number], tracks, cut,
                        limiter=self.limiter,
                    )  # fmt: skip
                except (OSError, ValueError) as exc:
                    log.warning("recording %s cannot be played back: %s", printable(piece.file), exc)
                    return None
                measured = dict(zip(touched, sizes, strict=True))
            for i, fragment in enumerate(piece.fragments):
                size = measured.get(i, rebuilt_size(fragment.times))
                if size:
                    parts.append((offset, size, number, i))
                    offset += size
        return Mp4Layout(init, tuple(parts), offset, shifts, cuts)

    async def mp4(self, plan: Plan, layout: Mp4Layout, first: int = 0, last: int | None = None) -> AsyncIterator[bytes]:
        """Bytes ``first`` to ``last`` (inclusive; by default all) of the MP4 of ``plan`` laid out
        as ``layout``, a batch of fragments at a time (see the module docstring). Ends early
        (logged) if a file cannot be read or no longer matches its scan."""
        last = layout.size - 1 if last is None else min(last, layout.size - 1)
        if first < len(layout.init):
            yield layout.init[first : last + 1]
        tracks = {t.track_id: t for t in plan.pieces[0].index.tracks}
        wanted = [k for k, (offset, size, _, _) in enumerate(layout.parts) if offset + size > first and offset <= last]
        for batch in _part_batches(layout, plan, wanted):
            number = layout.parts[batch[0]][2]
            piece = plan.pieces[number]
            fragments = [piece.fragments[layout.parts[k][3]] for k in batch]
            try:
                rebuilt = await trio.to_thread.run_sync(
                    _rebuilt, piece.path, fragments, [k + 1 for k in batch], layout.shifts[number], tracks,
                    layout.cuts[number], limiter=self.limiter,
                )  # fmt: skip
            except (OSError, ValueError) as exc:
                log.warning("recording %s cannot be played back past here: %s", printable(piece.file), exc)
                return
            for k, data in zip(batch, rebuilt, strict=True):
                offset, size = layout.parts[k][:2]
                if len(data) != size:
                    log.warning("recording %s changed since it was scanned", printable(piece.file))
                    return
                yield data[max(0, first - offset) : last + 1 - offset]


@attrs.frozen
class Mp4Layout:
    """The MP4 of a plan, byte by byte: ``init`` (the span's init segment), then ``parts``
    (``(offset, size, piece number, fragment number)``, in order), ``size`` bytes in all; each
    piece's decode-time ``shifts`` and ``cuts`` (ticks per track)."""

    init: bytes = attrs.field(repr=False)
    parts: tuple[tuple[int, int, int, int], ...] = attrs.field(repr=False)
    size: int
    shifts: tuple[dict[int, int], ...] = attrs.field(repr=False)
    cuts: tuple[dict[int, int] | None, ...] = attrs.field(repr=False)


def _part_batches(layout: Mp4Layout, plan: Plan, wanted: list[int]) -> list[list[int]]:
    """The wanted parts in runs of one piece, contiguous in its file, of about
    :data:`BATCH_BYTES` (one thread hop each)."""
    batches: list[list[int]] = []
    size = 0
    previous: FragmentInfo | None = None
    for k in wanted:
        _, part_size, number, i = layout.parts[k]
        fragment = plan.pieces[number].fragments[i]
        if (
            not batches
            or layout.parts[batches[-1][-1]][2] != number
            or previous is None
            or fragment.offset != previous.offset + previous.size
            or size + fragment.size > BATCH_BYTES
        ):
            batches.append([])
            size = 0
        batches[-1].append(k)
        size += fragment.size
        previous = fragment
    return batches


def apply_patches(data: bytes, position: int, patches: Sequence[tuple[int, bytes]]) -> bytes:
    """``data`` (bytes ``[position, position + len(data))`` of a file) with the parts of
    ``patches`` (``(offset, bytes)`` in the file, sorted) that fall in it written over."""
    end = position + len(data)
    if not patches or not data:
        return data
    first = bisect.bisect_left(patches, position - 8, key=lambda patch: patch[0])
    out = bytearray(data)
    for offset, value in patches[first:]:
        if offset >= end:
            break
        low, high = max(offset, position), min(offset + len(value), end)
        if low < high:
            out[low - position : high - position] = value[low - offset : high - offset]
    return bytes(out)


def _segment(piece: Piece, group: list[FragmentInfo], uri: str, discontinuity: bool) -> VodSegment:
    last = group[-1]
    return VodSegment(
        uri=uri,
        offset=group[0].offset,
        length=last.offset + last.size - group[0].offset,
        init_length=piece.index.init_size,
        duration=max(0.0, last.end - group[0].start),
        date=piece.base + group[0].start,
        discontinuity=discontinuity,
        independent=group[0].sync,
    )


def _rebuilt(
    path: pathlib.Path,
    batch: list[FragmentInfo],
    sequences: list[int],
    shifts: dict[int, int],
    tracks: dict[int, TrackInfo],
    cut: dict[int, int] | None,
) -> list[bytes]:
    """Read a contiguous batch of fragments and rebuild each (in a thread)."""
    start = batch[0].offset
    data = _read(path, start, batch[-1].offset + batch[-1].size - start)
    out = []
    for fragment, sequence in zip(batch, sequences, strict=True):
        begin = fragment.offset - start
        piece = data[begin : begin + fragment.size]
        if len(piece) != fragment.size:
            raise OSError(f"the file is shorter than its fragment at {fragment.offset}")
        out.append(rewrite_fragment(piece, sequence, shifts, tracks, offset=fragment.offset, cut=cut))
    return out


def _sizes(
    path: pathlib.Path,
    fragments: list[FragmentInfo],
    shifts: dict[int, int],
    tracks: dict[int, TrackInfo],
    cut: dict[int, int] | None,
) -> list[int]:
    """The rebuilt sizes of ``fragments`` (each read and rebuilt alone, in a thread)."""
    return [len(_rebuilt(path, [fragment], [1], shifts, tracks, cut)[0]) for fragment in fragments]
