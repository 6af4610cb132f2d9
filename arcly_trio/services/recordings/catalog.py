"""The recording catalog: which segments a stream's recording holds, read from its index.

A recording directory (``--record DIR``) holds, per stream, the segment files and an index
beside them::

    DIR/{app}/{stream}/20261207T013412.123456Z.mp4     a segment (UTC start of its first sample)
    DIR/{app}/{stream}/index.jsonl                     one JSON object per line, appended

Each index line describes one segment (:func:`index_line` writes them, :func:`parse_index_line`
reads them); the **last line for a given file wins**, so the recorder appends a line when a
segment opens, refreshes it while it grows and writes a ``"final": true`` line when it closes.
Retention appends ``{"file": ..., "deleted": true}`` for a segment it removed. A
:class:`Catalog` answers from the index without opening the segments: it reads a stream's index
once, then only what was appended since (it remembers the offset, and starts over when the file
was replaced or shrank), and lists the directory to drop segments that are gone and to find
segments the index does not name (those, and only those, are scanned: :mod:`.mp4scan`), both
cached by the file's size and modification time. A day of 60 s segments (1440 lines) is read in
a few milliseconds, then answered from memory with a binary search.

Times: ``start`` is epoch seconds (UTC) of the segment's first sample; the recorder anchors a
publish session's wall-clock start once and adds media time to it, so the segments of one
session follow each other exactly (the ``end`` of one is the ``start`` of the next) and a
:class:`Span` is a run of segments of one session with no gap over :data:`SPAN_GAP` seconds.
A new session (reconnect, takeover) is a discontinuity: a new span.

Inside a segment (fMP4): the decode times are the publisher's timestamps (the project's muxer
maps milliseconds to each track's timescale), so the segments of one session continue each
other's timeline, and the first ``tfdt`` of a segment is the media time that ``start`` names;
a player that opens one segment alone starts at that time (ffprobe's ``duration`` then counts
from 0: subtract its ``start_time``).

Repair (:meth:`Catalog.repair`, which the recorder runs at start for every stream before it
records): a segment without a final line (the server died while writing it) or without any
line (the index was lost) is scanned, its file cut back to the end of its last complete
fragment, and a final line written; a missing index is rebuilt whole. Without repair the
catalog still lists such segments, from what the last line (or a scan) says, as not final.

The attacker's view: the index and the files are ours, but a disk may cut a line in half, and an
operator may drop anything in the directory. Every index line is parsed strictly (bounded length,
types and ranges checked, the file name must be a segment name: no path can come out of it);
lines that do not parse are skipped and counted (:attr:`Catalog.skipped_lines`); a half-written
last line is left until it is complete. :meth:`Catalog.path` checks a file name and that the
path stays under the root (no symlink out). Names in ``streams`` are checked with
:func:`~arcly_trio.core.keys.check_name`; other directories are ignored.

Error policy: :meth:`Catalog.path` raises :class:`~arcly_trio.storage.InvalidStorageKey` for a
name that is not a segment of the stream; every query raises
:class:`~arcly_trio.core.errors.StorageError` when the directory cannot be read (permission,
I/O error); a stream without a directory is simply empty. File reads run in worker threads
(``trio.to_thread.run_sync``), one at a time per catalog, so a slow disk never stalls the loop.
"""

from __future__ import annotations

import bisect
import calendar
import datetime
import json
import math
import os
import pathlib
import re
import time
from collections.abc import Iterable, Sequence
from typing import Any, Final

import attrs
import trio

from arcly_trio.core.errors import InvalidStreamName, StorageError
from arcly_trio.core.keys import StreamKey, check_name
from arcly_trio.services.recordings.mp4scan import scan_path
from arcly_trio.storage import InvalidStorageKey

__all__ = [
    "SegmentRecord",
    "Span",
    "Catalog",
    "INDEX_NAME",
    "SEGMENT_EXTENSIONS",
    "SPAN_GAP",
    "segment_name",
    "parse_segment_name",
    "index_line",
    "deleted_line",
    "parse_index_line",
    "spans_of",
    "read_index",
    "append_index",
    "rewrite_index",
]

#: The index file of a stream's directory.
INDEX_NAME: Final = "index.jsonl"
#: Segment file extensions, by recording format.
SEGMENT_EXTENSIONS: Final = (".mp4", ".ts", ".flv")
#: Two segments of one session further apart than this (seconds) are in different spans.
SPAN_GAP: Final = 1.0
#: The longest index line read (characters); longer lines are skipped.
MAX_LINE: Final = 4096
#: The most codec strings a segment lists.
MAX_CODECS: Final = 16

_NAME: Final = re.compile(r"([0-9]{8}T[0-9]{6})\.([0-9]{6})Z\.(mp4|ts|flv)")
_CODEC: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9.]{0,63}")
_SESSION: Final = re.compile(r"[A-Za-z0-9_.:@+=~-]{0,128}")
_MAX_START: Final = 253402300799.0  # 9999-12-31T23:59:59Z
_MAX_DURATION: Final = 7 * 86400.0


@attrs.frozen
class SegmentRecord:
    """One segment file of a stream's recording, as its index (or a scan) describes it.

    Attributes:
        file: the file name within the stream's directory (``20261207T013412.123456Z.mp4``).
        start: epoch seconds (UTC) of its first sample.
        duration: seconds of media written (so far, while ``final`` is false).
        bytes: the file's size as of the line (for a repaired file: up to its last complete
            fragment).
        codecs: RFC 6381 codec strings of its tracks (``avc1.64001f``, ``mp4a.40.2``).
        session: the publish session it belongs to; a change is a discontinuity.
        final: the segment is closed (no more bytes will be added).
    """

    file: str
    start: float
    duration: float
    bytes: int
    codecs: tuple[str, ...]
    session: str
    final: bool

    @property
    def end(self) -> float:
        """``start + duration``."""
        return self.start + self.duration


@attrs.frozen
class Span:
    """A contiguous run of segments of one publish session (see the module docstring)."""

    start: float
    duration: float
    bytes: int
    codecs: tuple[str, ...]
    session: str

    @property
    def end(self) -> float:
        """``start + duration``."""
        return self.start + self.duration


# --- names and lines --------------------------------------------------------------------------


def segment_name(start: float, extension: str = ".mp4") -> str:
    """The file name of a segment whose first sample is at ``start`` (epoch seconds):
    ``YYYYMMDDTHHMMSS.ffffffZ`` + ``extension``."""
    if extension not in SEGMENT_EXTENSIONS:
        raise ValueError(f"not a segment extension: {extension!r}")
    micros = round(start * 1_000_000)
    seconds, fraction = divmod(micros, 1_000_000)
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(seconds)) + f".{fraction:06d}Z{extension}"


def parse_segment_name(file: str) -> float | None:
    """The start (epoch seconds) a segment file name says, or ``None`` if ``file`` is not a
    segment name."""
    if not isinstance(file, str) or len(file) > 40:
        return None
    match = _NAME.fullmatch(file)
    if match is None:
        return None
    stamp = match.group(1)
    try:  # datetime checks the ranges (no 13th month), much faster than strptime
        moment = datetime.datetime(
            int(stamp[0:4]), int(stamp[4:6]), int(stamp[6:8]), int(stamp[9:11]), int(stamp[11:13]),
            int(stamp[13:15]), tzinfo=datetime.UTC,
        )  # fmt: skip
    except ValueError:
        return None
    return calendar.timegm(moment.timetuple()) + int(match.group(2)) / 1_000_000


def index_line(record: SegmentRecord) -> str:
    """The index line (with its ``\\n``) that describes ``record``."""
    return (
        json.dumps(
            {
                "file": record.file,
                "start": round(record.start, 6),
                "duration": round(record.duration, 6),
                "bytes": record.bytes,
                "codecs": list(record.codecs),
                "session": record.session,
                "final": record.final,
            },
            separators=(", ", ": "),
        )
        + "\n"
    )


def deleted_line(file: str) -> str:
    """The index line that says ``file`` was deleted."""
    return json.dumps({"file": file, "deleted": True}) + "\n"


def _number(value: Any, low: float, high: float) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    if not math.isfinite(value) or not low <= value <= high:
        return None
    return value


def parse_index_line(line: str | bytes) -> SegmentRecord | str | None:
    """One index line: a :class:`SegmentRecord`, the file name of a ``deleted`` line, or
    ``None`` for a line that does not parse or does not check (never raises)."""
    if len(line) > MAX_LINE:
        return None
    try:
        value = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, dict):
        return None
    file = value.get("file")
    if not isinstance(file, str) or parse_segment_name(file) is None:
        return None
    if value.get("deleted") is True:
        return file
    start = _number(value.get("start"), 0.0, _MAX_START)
    duration = _number(value.get("duration"), 0.0, _MAX_DURATION)
    size = value.get("bytes")
    codecs = value.get("codecs")
    session = value.get("session")
    final = value.get("final")
    if start is None or duration is None or not isinstance(final, bool):
        return None
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size < 1 << 53:
        return None
    if not isinstance(codecs, list) or len(codecs) > MAX_CODECS:
        return None
    if not all(isinstance(c, str) and _CODEC.fullmatch(c) for c in codecs):
        return None
    if not isinstance(session, str) or not _SESSION.fullmatch(session):
        return None
    return SegmentRecord(file, start, duration, size, tuple(codecs), session, final)


def read_index(data: bytes) -> tuple[dict[str, SegmentRecord | None], int, int]:
    """Parse the complete lines of an index's bytes: (file -> last record, or ``None`` for a
    deleted file; bytes consumed, up to the last ``\\n``; lines skipped)."""
    records: dict[str, SegmentRecord | None] = {}
    consumed = data.rfind(b"\n") + 1
    skipped = 0
    for raw in data[:consumed].split(b"\n"):
        if not raw.strip():
            continue
        parsed = parse_index_line(raw)
        if parsed is None:
            skipped += 1
        elif isinstance(parsed, str):
            records[parsed] = None
        else:
            records[parsed.file] = parsed
    return records, consumed, skipped


def spans_of(segments: Iterable[SegmentRecord], gap: float = SPAN_GAP) -> list[Span]:
    """Group sorted ``segments`` into :class:`Span` runs (one session, no gap over ``gap``)."""
    spans: list[Span] = []
    run: list[SegmentRecord] = []

    def close() -> None:
        if run:
            codecs: list[str] = []
            for segment in run:
                codecs.extend(c for c in segment.codecs if c not in codecs)
            start = run[0].start
            end = max(s.end for s in run)
            spans.append(Span(start, end - start, sum(s.bytes for s in run), tuple(codecs), run[0].session))

    for segment in segments:
        if run and (segment.session != run[-1].session or segment.start - max(s.end for s in run[-1:]) > gap):
            close()
            run = []
        run.append(segment)
    close()
    return spans


# --- the catalog ------------------------------------------------------------------------------


@attrs.define
class _StreamState:
    """What the catalog knows of one stream directory."""

    index_id: tuple[int, int] | None = None  # (device, inode) of the index read
    offset: int = 0  # bytes of the index consumed
    lines: dict[str, SegmentRecord | None] = attrs.field(factory=dict)
    scanned: dict[str, tuple[tuple[int, int], SegmentRecord | None]] = attrs.field(factory=dict)
    listing_id: tuple[int, int] | None = None  # (mtime_ns, inode) of the directory listed
    files: dict[str, int] = attrs.field(factory=dict)  # segment file -> size
    ordered: list[SegmentRecord] = attrs.field(factory=list)
    starts: list[float] = attrs.field(factory=list)
    max_duration: float = 0.0


def _scan_record(path: pathlib.Path, file: str, start: float) -> SegmentRecord | None:
    """A record for a segment the index does not describe, from its boxes (``None`` when it is
    not a readable fragmented MP4, or is not an MP4)."""
    if not file.endswith(".mp4"):
        try:
            size = path.stat().st_size
        except OSError:
            return None
        return SegmentRecord(file, start, 0.0, size, (), "", False)
    try:
        found = scan_path(path)
    except OSError:
        return None
    if not found.tracks:  # no ftyp + moov: not a recording
        return None
    return SegmentRecord(file, start, found.duration, found.complete, found.codecs, "", False)


class Catalog:
    """The segments of every stream recorded under ``root`` (see the module docstring).

    Args:
        root: the recording directory (``--record DIR``); it need not exist yet.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = pathlib.Path(root).absolute()
        self._states: dict[StreamKey, _StreamState] = {}
        self._lock = trio.Lock()
        self.skipped_lines = 0
        """Index lines that did not parse, in all."""

    def __repr__(self) -> str:
        return f"Catalog({str(self.root)!r})"

    # --- paths -------------------------------------------------------------------------------

    def directory(self, key: StreamKey) -> pathlib.Path:
        """The directory of ``key``'s recording (names are checked by :class:`StreamKey`)."""
        return self.root / key.app / key.name

    def path(self, key: StreamKey, file: str) -> pathlib.Path:
        """The absolute path of segment ``file`` of ``key``; raises
        :class:`~arcly_trio.storage.InvalidStorageKey` when ``file`` is not a segment name or
        the path leaves the root (a symlink)."""
        if parse_segment_name(file) is None:
            raise InvalidStorageKey(str(file)[:64], "not a recording segment name")
        path = self.directory(key) / file
        try:
            root = self.root.resolve()
            resolved = path.resolve()
        except (OSError, RuntimeError) as exc:
            raise InvalidStorageKey(file, f"cannot be resolved: {exc}") from exc
        if resolved != root / key.app / key.name / file:
            raise InvalidStorageKey(file, "resolves outside the recording directory")
        return path

    # --- queries -----------------------------------------------------------------------------

    async def segments(
        self, key: StreamKey, start: float | None = None, end: float | None = None
    ) -> list[SegmentRecord]:
        """The segments of ``key`` that overlap ``[start, end)`` (either may be ``None``:
        unbounded), sorted by start. A segment with no duration yet counts from its start."""
        state = await self._refresh(key)
        ordered, starts = state.ordered, state.starts
        if start is None:
            lo = 0
        else:
            # Segments that start before `start - max_duration` cannot reach it.
            lo = bisect.bisect_left(starts, start - state.max_duration - 1e-6)
        hi = len(ordered) if end is None else bisect.bisect_left(starts, end)
        out: list[SegmentRecord] = []
        for record in ordered[lo:hi]:
            if start is not None and record.end <= start and not (record.duration == 0 and record.start >= start):
                continue
            out.append(record)
        return out

    async def spans(self, key: StreamKey, start: float | None = None, end: float | None = None) -> list[Span]:
        """The :class:`Span` runs of the segments :meth:`segments` returns for the same
        arguments."""
        return spans_of(await self.segments(key, start, end))

    async def streams(self, app: str | None = None) -> list[StreamKey]:
        """The streams with a recording (a directory holding an index or a segment), sorted;
        only the application ``app`` when given (raises
        :class:`~arcly_trio.core.errors.InvalidStreamName` for an invalid name)."""
        if app is not None:
            check_name(app, "application name")
        return await trio.to_thread.run_sync(self._streams, app)

    def _streams(self, app: str | None) -> list[StreamKey]:
        keys: list[StreamKey] = []
        try:
            apps = [app] if app is not None else sorted(os.listdir(self.root))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StorageError(f"cannot list the recording directory: {exc}") from exc
        for app_name in apps:
            try:
                check_name(app_name, "application name")
                names = sorted(os.listdir(self.root / app_name))
            except (InvalidStreamName, NotADirectoryError, FileNotFoundError):
                continue
            except OSError as exc:
                raise StorageError(f"cannot list the recordings of {app_name!r}: {exc}") from exc
            for name in names:
                try:
                    key = StreamKey(app_name, name)
                    entries = os.listdir(self.root / app_name / name)
                except (InvalidStreamName, NotADirectoryError, FileNotFoundError):
                    continue
                except OSError as exc:
                    raise StorageError(f"cannot list the recordings of {app_name}/{name}: {exc}") from exc
                if any(e == INDEX_NAME or parse_segment_name(e) is not None for e in entries):
                    keys.append(key)
        return keys

    # --- repair ------------------------------------------------------------------------------

    async def repair(self, key: StreamKey, keep: Sequence[str] = ()) -> list[SegmentRecord]:
        """Close the segments of ``key`` left open (see the module docstring); the records
        written. ``keep``: files being written now, left alone. Raises ``StorageError`` when a
        file cannot be read or the index written."""
        async with self._lock:
            return await trio.to_thread.run_sync(self._repair, key, frozenset(keep))

    def _repair(self, key: StreamKey, keep: frozenset[str]) -> list[SegmentRecord]:
        state = self._load(key)
        directory = self.directory(key)
        lines: list[str] = []
        fixed: list[SegmentRecord] = []
        for file in sorted(state.files):
            if file in keep:
                continue
            known = state.lines.get(file)
            if known is not None and known.final:
                continue
            start = parse_segment_name(file)
            assert start is not None
            path = self.path(key, file)
            record = _scan_record(path, file, start)
            if record is None:
                continue
            if file.endswith(".mp4"):
                try:
                    if path.stat().st_size > record.bytes:
                        os.truncate(path, record.bytes)
                except OSError as exc:
                    raise StorageError(f"cannot cut {file!r} back to its last fragment: {exc}") from exc
            if known is not None:  # keep what only the index knows: the start, the session
                duration = record.duration if file.endswith(".mp4") else known.duration
                record = attrs.evolve(known, duration=duration, bytes=record.bytes, final=True)
                if not record.codecs:
                    record = attrs.evolve(record, codecs=known.codecs)
            else:
                record = attrs.evolve(record, final=True)
            lines.append(index_line(record))
            fixed.append(record)
        if lines:
            append_index(directory, lines)
        return fixed

    # --- loading -----------------------------------------------------------------------------

    async def _refresh(self, key: StreamKey) -> _StreamState:
        async with self._lock:
            return await trio.to_thread.run_sync(self._load, key)

    def _load(self, key: StreamKey) -> _StreamState:
        """Bring ``key``'s state up to date with its directory and index (in a thread)."""
        directory = self.directory(key)
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = _StreamState()
        try:
            info = os.stat(directory)
        except (FileNotFoundError, NotADirectoryError):
            self._states.pop(key, None)
            return _StreamState()
        except OSError as exc:
            raise StorageError(f"cannot read the recordings of {key}: {exc}") from exc
        # The index first: a new segment always comes with a line, so a changed index is a
        # reason to list the directory again even if its mtime did not move (coarse clocks).
        changed = self._read_index(directory, state)
        listing_id = (info.st_mtime_ns, info.st_ino)
        if changed or listing_id != state.listing_id:
            try:
                names = os.listdir(directory)
            except OSError as exc:
                raise StorageError(f"cannot list the recordings of {key}: {exc}") from exc
            state.files = {name: 0 for name in names if parse_segment_name(name) is not None}
            state.listing_id = listing_id
            changed = True
        # Files the index does not describe: scan them (cached by size and mtime).
        for file in state.files:
            if state.lines.get(file) is not None:
                continue
            try:
                stat = os.stat(directory / file)
            except OSError:
                continue
            stamp = (stat.st_size, stat.st_mtime_ns)
            cached = state.scanned.get(file)
            if cached is None or cached[0] != stamp:
                start = parse_segment_name(file)
                assert start is not None
                state.scanned[file] = (stamp, _scan_record(directory / file, file, start))
                changed = True
        for file in [f for f in state.scanned if f not in state.files or state.lines.get(f) is not None]:
            del state.scanned[file]
            changed = True
        if changed or not state.ordered and state.files:
            records: list[SegmentRecord] = []
            for file in state.files:
                record = state.lines.get(file)
                if record is None and file in state.scanned:
                    record = state.scanned[file][1]
                if record is not None:
                    records.append(record)
            records.sort(key=lambda r: (r.start, r.file))
            state.ordered = records
            state.starts = [r.start for r in records]
            state.max_duration = max((r.duration for r in records), default=0.0)
        return state

    def _read_index(self, directory: pathlib.Path, state: _StreamState) -> bool:
        """Read what was appended to the index since last time; whether anything changed."""
        path = directory / INDEX_NAME
        try:
            with open(path, "rb") as handle:
                stat = os.fstat(handle.fileno())
                index_id = (stat.st_dev, stat.st_ino)
                if index_id != state.index_id or stat.st_size < state.offset:
                    state.index_id, state.offset, state.lines = index_id, 0, {}
                if stat.st_size == state.offset:
                    return False
                handle.seek(state.offset)
                data = handle.read(stat.st_size - state.offset)
        except FileNotFoundError:
            changed = state.index_id is not None
            state.index_id, state.offset, state.lines = None, 0, {}
            return changed
        except OSError as exc:
            raise StorageError(f"cannot read {path}: {exc}") from exc
        records, consumed, skipped = read_index(data)
        self.skipped_lines += skipped
        state.lines.update(records)
        state.offset += consumed
        return bool(records) or skipped > 0


def append_index(directory: pathlib.Path, lines: Sequence[str]) -> None:
    """Append ``lines`` to the index of ``directory`` (synchronously: call it in a thread). A
    last line left without its ``\\n`` (a crash mid-write) is ended first, so it stays one bad
    line instead of spoiling the next one. Raises ``StorageError``."""
    path = directory / INDEX_NAME
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with open(path, "ab+") as handle:
            size = handle.seek(0, os.SEEK_END)
            prefix = b""
            if size:
                handle.seek(size - 1)
                if handle.read(1) != b"\n":
                    prefix = b"\n"
            handle.write(prefix + "".join(lines).encode())
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc}") from exc


def rewrite_index(directory: pathlib.Path, records: Iterable[SegmentRecord]) -> None:
    """Replace the index of ``directory`` with one line per record, atomically (a temporary
    file renamed over it; synchronously: call it in a thread). Raises ``StorageError``."""
    path = directory / INDEX_NAME
    temp = directory / f".{INDEX_NAME}.{os.getpid()}.tmp"
    try:
        with open(temp, "w", encoding="utf-8") as handle:
            handle.write("".join(index_line(r) for r in records))
        os.replace(temp, path)
    except OSError as exc:
        try:
            temp.unlink(missing_ok=True)
        except OSError:
            pass
        raise StorageError(f"cannot rewrite {path}: {exc}") from exc
