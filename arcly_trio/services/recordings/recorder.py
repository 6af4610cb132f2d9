"""The recorder: a stream service that writes publish sessions as segment files with an index.

:class:`Recorder` is a kernel :class:`~arcly_trio.kernel.service.StreamService` (register it
with ``EngineBuilder.service``; ``arcly-trio serve --record DIR`` does). It subscribes to every
stream (so that on-demand recording can start at any time) and records:

* always, the streams of the applications that record (``AppSpec.record``, ``record = true``
  in an ``[apps.NAME]`` table; all of them with ``all_apps=True``), unless a ``stop`` asked it
  to pause until the next publish session;
* on demand, the streams asked for with :meth:`Recorder.start` (``POST
  /api/recordings/{app}/{stream}``, see :mod:`.routes`) until :meth:`Recorder.stop`
  (``DELETE``): a stream asked for before it is published is recorded once it is.

Layout and index (the recording contract, :mod:`.catalog`): ``{app}/{stream}/{UTC start}.mp4``
segments (or ``.ts`` / ``.flv`` with ``format``), cut on keyframes every ``segment_seconds``
(:mod:`.segmenter`), and ``index.jsonl`` beside them: a line when a segment's first bytes are
written, a refreshed line every ``refresh_seconds`` while it grows, a final line when it closes.
A publish session (a reconnect, a takeover) or an on-demand run is a ``session`` of its own, with a
fresh random id: a new segment, never an overwritten one (files are created exclusively), and no
empty segment (a file is created with its first bytes). At start (:meth:`Recorder.run`) every
stream's segments left open by a crash are repaired (:meth:`~.catalog.Catalog.repair`).

I/O: the segmenter runs on the stream's service task; what one batch of frames produces (a
fragment, about a second of media, or a segment's end and the next one's start) is written in
**one** worker-thread hop (``trio.to_thread.run_sync``, at most ``max_threads`` at once for the
whole recorder): the bytes, a flush to the operating system, the index lines. The publisher is
never slowed: the service reads its own bounded subscription, and if it falls behind the
fan-out drops frames for it alone, to the next keyframe; the recorder counts them
(:attr:`Recorder.lagged_frames`) and logs it (at most once a minute per stream).

Retention (:meth:`Recorder.enforce_retention`, every ``retention_interval`` seconds and after
each closed segment): per application, ``max_age`` seconds and ``max_bytes`` (the recorder's
defaults, or ``AppSpec.record_max_age`` / ``record_max_bytes``) over all of its streams'
segments: the oldest are deleted first, each logged, never one being written; the index gets
a ``deleted`` line for each.

Events: ``recording-started``, ``recording-stopped`` and ``recording-failed``
(:class:`~arcly_trio.services.recording.RecordingFileEvent`, to the observers and the event
feed: the ``--on-event`` hook's ``recording-start`` / ``recording-done``) per recording run, and
``recording-start-requested`` / ``recording-stop-requested`` for each control request (with who
asked: the audit log's ``recording-start`` / ``recording-stop``); ``on_event`` gets the
:class:`~arcly_trio.services.recording.RecordingStarted`, ``RecordingStopped`` and
``RecordingFailed`` records, also kept in :attr:`Recorder.history`.

The attacker's view: names come from :class:`~arcly_trio.core.keys.StreamKey` (checked), file
names from the wall clock, so no peer text reaches a path; the publisher's bytes are only
muxed. The set of streams asked for is bounded (:data:`MAX_REQUESTED`).

Error policy: a file-system error (disk full, permission denied, the directory gone: an
``OSError`` in a worker thread, raised as ``StorageError``) stops that recording run, never the
stream: it is logged at error level and a ``recording-failed`` event is sent; the run's frames
are dropped until the next publish session or the next ``start``. A failing retention pass or
repair is logged and retried later. An ``on_event`` callback that raises is logged and ignored.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import math
import os
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, BinaryIO, Final

import attrs
import trio

from arcly_trio.core.errors import StorageError
from arcly_trio.core.frame import Frame
from arcly_trio.core.keys import StreamKey
from arcly_trio.kernel.spec import AppSpec
from arcly_trio.kernel.stream import Stream
from arcly_trio.kernel.subscription import Subscription
from arcly_trio.protocols.http.router import Router
from arcly_trio.services.recording import (
    RecordingEvent,
    RecordingFailed,
    RecordingFileEvent,
    RecordingStarted,
    RecordingStopped,
)
from arcly_trio.services.recordings.catalog import (
    Catalog,
    SegmentRecord,
    append_index,
    deleted_line,
    index_line,
    rewrite_index,
)
from arcly_trio.services.recordings.playback import Playback
from arcly_trio.services.recordings.routes import install
from arcly_trio.services.recordings.segmenter import FORMATS, Closed, Opened, Operation, Segmenter, Wrote

__all__ = ["Recorder", "SegmentFiles", "MAX_REQUESTED", "LOCK_NAME"]

log = logging.getLogger("arcly_trio.recording")

#: The writer lock of a stream's directory (hidden: the catalog and storage listings skip it).
LOCK_NAME: Final = ".writer.lock"
#: The most streams that may be asked for at once (``start``).
MAX_REQUESTED: Final = 10_000
#: Streams whose last end and last lag warning are remembered (older ones are forgotten).
_REMEMBERED: Final = 10_000
#: Index lines a stream's recorder appends before it compacts the index (one line per segment).
_COMPACT_AFTER: Final = 500


class SegmentFiles:
    """The recorder's file operations (synchronous: they run in worker threads). A test may
    pass a subclass that fails (a full disk) to :class:`Recorder`."""

    def create(self, path: Path) -> BinaryIO:
        """A new file at ``path`` (never an existing one), its directory made if missing."""
        path.parent.mkdir(parents=True, exist_ok=True)
        return open(path, "xb")  # noqa: SIM115 - closed by close()

    def write(self, handle: BinaryIO, data: bytes) -> None:
        """Append ``data`` and hand it to the operating system."""
        handle.write(data)
        handle.flush()

    def close(self, handle: BinaryIO) -> None:
        handle.close()

    def append_index(self, directory: Path, lines: Sequence[str]) -> None:
        append_index(directory, lines)

    def rewrite_index(self, directory: Path, records: Iterable[SegmentRecord]) -> None:
        rewrite_index(directory, records)

    def delete(self, path: Path) -> None:
        path.unlink(missing_ok=True)

    def lock(self, directory: Path) -> int | None:
        """Take the stream directory's writer lock (``.writer.lock``, an ``flock`` that the
        operating system lets go when the process dies); its descriptor, or ``None`` when another
        process holds it (a worker of ``--workers`` recording that stream)."""
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except OSError:
            os.close(fd)
            raise
        return fd

    def unlock(self, fd: int) -> None:
        os.close(fd)


@attrs.define
class _Segment:
    name: str
    start: float
    codecs: tuple[str, ...]
    handle: BinaryIO | None = None
    bytes: int = 0
    duration: float = 0.0
    line_at: float = 0.0  # monotonic time of its last index line


@attrs.define
class _Run:
    """One recording run: a publish session, or an on-demand run within one."""

    key: StreamKey
    directory: Path
    session: str
    segmenter: Segmenter
    stream: Stream | None = None
    segment: _Segment | None = None
    started: bool = False  # a file was written
    lines: int = 0  # index lines appended by this run since it last compacted the index
    lock: int | None = None  # the directory's writer lock, held while the run writes
    failed: bool = False
    frames: int = 0
    bytes: int = 0
    segments: int = 0


class Recorder:
    """Records streams as segment files with an index (see the module docstring).

    Args:
        directory: the recording directory (``--record DIR``), created if missing.
        format: ``fmp4`` (default), ``ts`` or ``flv``.
        segment_seconds: cut segments on the first keyframe after this long (default 60).
        all_apps: record every application always, not only those with ``AppSpec.record``.
        max_age: delete segments older than this (seconds; ``None``: keep them), per application
            unless its ``AppSpec.record_max_age`` says otherwise.
        max_bytes: keep at most this many bytes of segments per application (``None``: no cap),
            unless its ``AppSpec.record_max_bytes`` says otherwise.
        on_event: called with each :class:`RecordingStarted`, :class:`RecordingStopped` and
            :class:`RecordingFailed` (on the recording task; keep it cheap).
        capacity: the service's subscription queue (frames).
        skip_protocols: publish protocols whose streams are not recorded (copies of streams
            published on another node or worker, recorded where they are published).
        refresh_seconds: how often an open segment's index line is refreshed.
        retention_interval: seconds between two retention passes.
        max_threads: file operations in worker threads at once, for all streams.
        files: the file operations (:class:`SegmentFiles`; tests pass failing ones).
    """

    name = "record"

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        format: str = "fmp4",
        segment_seconds: float = 60.0,
        all_apps: bool = False,
        max_age: float | None = None,
        max_bytes: int | None = None,
        on_event: Callable[[RecordingEvent], None] | None = None,
        capacity: int = 4096,
        skip_protocols: Iterable[str] = ("cluster", "worker"),
        refresh_seconds: float = 5.0,
        retention_interval: float = 10.0,
        max_threads: int = 4,
        files: SegmentFiles | None = None,
    ) -> None:
        if format not in FORMATS:
            raise ValueError(f"unknown recording format {format!r} (fmp4, ts, flv)")
        Segmenter(format, segment_seconds)  # checks the settings
        if max_age is not None and not max_age > 0:
            raise ValueError(f"max_age must be positive, not {max_age}")
        if max_bytes is not None and max_bytes < 0:
            raise ValueError(f"max_bytes must be positive, not {max_bytes}")
        self.directory = Path(directory).absolute()
        self.catalog = Catalog(self.directory)
        self.playback = Playback(self.catalog)
        """Plays the fMP4 recordings back (the HTTP worker's playback routes find it here)."""
        self.format = format
        self.segment_seconds = segment_seconds
        self.all_apps = all_apps
        self.max_age = max_age
        self.max_bytes = max_bytes
        self.on_event = on_event
        self.capacity = capacity
        self.skip_protocols = frozenset(skip_protocols)
        self.refresh_seconds = refresh_seconds
        self.retention_interval = retention_interval
        self.files = files or SegmentFiles()
        self._limiter = trio.CapacityLimiter(max_threads)
        self._engine: Any = None
        self._requested: dict[StreamKey, str] = {}  # on-demand: key -> who asked
        self._paused: set[StreamKey] = set()  # always-recording streams stopped until their next session
        self._runs: dict[StreamKey, _Run] = {}
        self._ends: dict[StreamKey, float] = {}  # where each stream's last run ended (epoch s)
        self._generation: dict[StreamKey, int] = {}  # the streams asked for: the number of their start()
        self._starts = 0
        self._lines: dict[StreamKey, int] = {}  # index lines appended per stream since its compaction
        self._retention_due = trio.Event()
        self._lag_logged: dict[StreamKey, float] = {}
        self.history: deque[RecordingEvent] = deque(maxlen=1000)
        """The latest recording events (bounded)."""
        self.failures = 0
        """Recording runs stopped by a file-system error."""
        self._wrote_at = -math.inf
        self._failed_at = -math.inf
        self.bytes_written = 0
        """Bytes written to segments, in all (the metrics' recording bytes)."""
        self.lagged_frames = 0
        """Frames the recorder missed because it fell behind (dropped by the fan-out for it)."""
        self.deleted_segments = 0
        """Segments deleted by retention."""
        self.ready = trio.Event()
        """Set once the start-up repair is done (:meth:`run`)."""

    def __repr__(self) -> str:
        return f"Recorder({str(self.directory)!r}, format={self.format!r})"

    # ------------------------------------------------------------------ control

    def applies_to(self, spec: AppSpec) -> bool:
        return True  # every stream may be asked for on demand

    def records_always(self, app: str) -> bool:
        """Whether the application ``app`` records every stream."""
        if self.all_apps:
            return True
        spec = self._spec(app)
        return spec is not None and spec.uses(self.name)

    def _spec(self, app: str) -> AppSpec | None:
        if self._engine is None:
            return None
        try:
            return self._engine.application(app).spec
        except Exception:  # noqa: BLE001 - an application that is gone (a reload) records nothing
            return None

    def wanted(self, key: StreamKey) -> bool:
        """Whether ``key`` is to be recorded now (asked for, or its application records)."""
        return key in self._requested or (key not in self._paused and self.records_always(key.app))

    def recording(self, key: StreamKey) -> bool:
        """Whether a recording run of ``key`` is writing."""
        run = self._runs.get(key)
        return run is not None and not run.failed

    @property
    def active(self) -> dict[StreamKey, str]:
        """The streams being recorded: key -> the segment file being written."""
        return {
            k: r.segment.name
            for k, r in self._runs.items()
            if r.segment is not None and r.segment.handle is not None and not r.failed
        }

    @property
    def writing(self) -> frozenset[StreamKey]:
        """The streams with a recording run (writing, or waiting for its first keyframe)."""
        return frozenset(k for k, r in self._runs.items() if not r.failed)

    @property
    def requested(self) -> frozenset[StreamKey]:
        """The streams asked for on demand."""
        return frozenset(self._requested)

    def start(self, key: StreamKey, by: str = "") -> bool:
        """Record ``key`` from its next keyframe (or once it is published) until :meth:`stop`;
        ``False`` when :data:`MAX_REQUESTED` streams are asked for already."""
        if key not in self._requested and len(self._requested) >= MAX_REQUESTED:
            return False
        self._requested[key] = by
        self._paused.discard(key)
        self._starts += 1
        self._generation[key] = self._starts  # a run that failed before may try again
        log.info("recording of %s requested by %s", key, by or "the program")
        self._notify(key, "recording-start-requested", by)
        return True

    def stop(self, key: StreamKey, by: str = "") -> bool:
        """Stop recording ``key`` (an application that records always pauses it until its next
        publish session); whether it was recording or asked for."""
        was = self._requested.pop(key, None) is not None or self.recording(key)
        self._generation.pop(key, None)
        if self.records_always(key.app):
            self._paused.add(key)
        log.info("recording of %s stopped by %s", key, by or "the program")
        self._notify(key, "recording-stop-requested", by)
        return was

    def _notify(self, key: StreamKey, what: str, detail: str) -> None:
        if self._engine is not None:
            event = RecordingFileEvent(key, trio.current_time(), self.name, what, detail, "", 0)
            try:
                self._engine.notify(event)
            except Exception:  # noqa: BLE001 - an observer's failure is not the caller's
                log.exception("notifying %s failed", what)

    # ------------------------------------------------------------------ engine hooks

    def install_routes(self, router: Router) -> None:
        """The recordings API (:mod:`.routes`)."""
        install(router, self)

    def stream_status(self, key: StreamKey) -> dict[str, Any]:
        run = self._runs.get(key)
        if run is None or run.failed:
            return {"recording": None}
        return {
            "recording": {
                "file": run.segment.name if run.segment is not None else None,
                "session": run.session,
                "segments": run.segments,
                "bytes": run.bytes,
                "format": self.format,
            }
        }

    def health_status(self) -> dict[str, Any]:
        return {
            "recording": {
                "active": len(self.active),
                "failures": self.failures,
                "lagged_frames": self.lagged_frames,
                "deleted_segments": self.deleted_segments,
            }
        }

    async def run(self, engine: Any, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Repair what a crash left open, then enforce retention until cancelled."""
        self._engine = engine
        try:
            await self.repair_all()
        finally:
            self.ready.set()
        task_status.started()
        while True:
            with trio.move_on_after(self.retention_interval):
                await self._retention_due.wait()
            self._retention_due = trio.Event()
            try:
                await self.enforce_retention()
            except StorageError as exc:
                log.error("recording retention failed (retried later): %s", exc)

    async def repair_all(self) -> int:
        """Close the segments every stream's last run left open (a crash); how many."""
        repaired = 0
        try:
            keys = await self.catalog.streams()
        except StorageError as exc:
            log.error("cannot list the recordings to repair them: %s", exc)
            return 0
        for key in keys:
            if key in self._runs:
                continue
            try:
                lock = await trio.to_thread.run_sync(self.files.lock, self.catalog.directory(key))
            except OSError as exc:
                log.error("cannot repair the recording of %s: %s", key, exc)
                continue
            if lock is None:  # another process is writing it
                continue
            try:
                fixed = await self.catalog.repair(key)
            except StorageError as exc:
                log.error("cannot repair the recording of %s: %s", key, exc)
                continue
            finally:
                await trio.to_thread.run_sync(self.files.unlock, lock)
            for record in fixed:
                log.warning(
                    "recording %s/%s was left open (a crash?): closed at %.3f s, %d bytes",
                    key,
                    record.file,
                    record.duration,
                    record.bytes,
                )
            repaired += len(fixed)
        return repaired

    # ------------------------------------------------------------------ the stream's task

    async def serve_stream(self, stream: Stream, subscription: Subscription) -> None:
        """Record ``stream`` whenever it is wanted, until ``subscription`` ends."""
        if stream.info.protocol in self.skip_protocols:
            return
        await self.ready.wait()
        key = stream.key
        session = subscription.session
        seen = Segmenter(self.format, self.segment_seconds)  # remembers configs while idle
        run: _Run | None = None
        blocked: int | None = None  # after a failure: the start() generation it happened in
        dropped = subscription.dropped
        reason = "stream ended"
        try:
            while True:
                batch = await subscription.next_batch(512)
                if not batch:
                    break
                if subscription.session is not session:  # a batch holds one session's frames
                    session = subscription.session
                    if run is not None:
                        await self._end(run, "new publish session")
                        run = None
                    self._paused.discard(key)
                    blocked = None  # a new session tries again
                    seen = Segmenter(self.format, self.segment_seconds)
                if subscription.dropped != dropped:
                    self._lagged(key, subscription.dropped - dropped)
                    dropped = subscription.dropped
                if run is not None and (run.failed or not self.wanted(key)):
                    if run.failed:
                        blocked = self._generation.get(key, 0)
                    await self._end(run, "stopped" if not run.failed else "failed")
                    run = None
                if run is None:
                    if not self.wanted(key) or blocked == self._generation.get(key, 0):
                        seen.seed(batch)  # not asked for, or failed: until a new session or start()
                        continue
                    run = await self._new_run(stream, seen)
                await self._record(run, batch)
            end = subscription.end_reason
            reason = end.value if end is not None else "stream ended"
        finally:
            if run is not None:
                with trio.CancelScope(shield=True, deadline=trio.current_time() + 10):
                    await self._end(run, reason)

    async def _new_run(self, stream: Stream, seen: Segmenter) -> _Run:
        key = stream.key
        not_before = self._ends.get(key)
        if not_before is None:  # after a restart: where the catalog's last segment ends
            try:
                segments = await self.catalog.segments(key)
            except StorageError:
                segments = []
            not_before = max((r.end for r in segments), default=0.0)
        segmenter = Segmenter(self.format, self.segment_seconds, not_before=not_before)
        segmenter.configs = dict(seen.configs)
        segmenter.metadata = seen.metadata
        run = _Run(stream.key, self.catalog.directory(stream.key), secrets.token_hex(8), segmenter, stream)
        self._runs[stream.key] = run
        return run

    def _lagged(self, key: StreamKey, frames: int) -> None:
        self.lagged_frames += frames
        now = trio.current_time()
        if now - self._lag_logged.get(key, -1e18) >= 60:
            self._lag_logged.pop(key, None)
            self._lag_logged[key] = now
            while len(self._lag_logged) > _REMEMBERED:
                del self._lag_logged[next(iter(self._lag_logged))]
            log.warning("recording of %s fell behind: %d frames missed (the stream went on)", key, frames)

    async def _record(self, run: _Run, frames: Sequence[Frame]) -> None:
        if run.failed:
            return
        run.frames += len(frames)
        operations = run.segmenter.push(frames, time.time())
        if operations:
            await self._apply(run, operations)

    async def _end(self, run: _Run, reason: str) -> None:
        try:
            await self._finish(run, reason)
        finally:
            self._ends[run.key] = max(self._ends.pop(run.key, 0.0), run.segmenter.ended_at)
            if run.lines:
                self._lines[run.key] = self._lines.get(run.key, 0) + run.lines
                run.lines = 0
            while len(self._ends) > _REMEMBERED:  # the oldest first (the catalog knows them too)
                forgotten = next(iter(self._ends))
                del self._ends[forgotten]
                self._lines.pop(forgotten, None)
            if self._runs.get(run.key) is run:  # listed until its last segment is closed
                del self._runs[run.key]

    async def _finish(self, run: _Run, reason: str) -> None:
        if run.failed:
            return
        operations = run.segmenter.finish()
        if operations:
            await self._apply(run, operations)
        await self._unlock(run)
        if run.failed or not run.started:
            return
        log.info(
            "recording of %s finished (%s): %d segments, %d bytes in %s",
            run.key,
            reason,
            run.segments,
            run.bytes,
            run.directory,
        )
        self._emit(RecordingStopped(run.key, f"{run.key}", time.time(), run.frames, run.bytes, reason))
        self._tell(run, "recording-stopped", f"{run.key} ({reason}, {run.segments} segments)")

    def wrote_at(self) -> float | None:
        """When (trio's clock) the recorder last wrote to its directory with success, unless a
        write failed since: the ``storage:record`` health check's witness (a directory the
        recorder writes to every second under load needs no probe of its own)."""
        if self._wrote_at > self._failed_at:
            return self._wrote_at
        return None

    # ------------------------------------------------------------------ files

    async def _apply(self, run: _Run, operations: list[Operation]) -> None:
        """Perform ``operations`` in one worker-thread hop; a failure stops the run."""
        was_started = run.started
        failure: StorageError | None = None
        closed = 0
        try:
            closed = await trio.to_thread.run_sync(self._perform, run, operations, limiter=self._limiter)
        except StorageError as exc:
            failure = exc
        else:
            if operations:
                self._wrote_at = trio.current_time()
        if run.started and not was_started:
            log.info("recording %s to %s", run.key, run.directory)
            self._emit(RecordingStarted(run.key, f"{run.key}", time.time()))
            self._tell(run, "recording-started", str(run.directory))
        if failure is not None:
            await self._fail(run, failure)
            return
        if closed:
            self._retention_due.set()
            if self._lines.get(run.key, 0) + run.lines > _COMPACT_AFTER:
                await self._compact(run)

    def _perform(self, run: _Run, operations: list[Operation]) -> int:
        """Write what ``operations`` say (in a worker thread); the segments closed. Raises
        ``StorageError`` for any ``OSError``."""
        lines: list[str] = []
        closed = 0
        now = time.monotonic()
        try:
            for op in operations:
                segment = run.segment
                if isinstance(op, Opened):
                    run.segment = _Segment(op.name, op.start, op.codecs)
                elif isinstance(op, Wrote) and segment is not None:
                    first = segment.handle is None
                    if first:
                        if run.lock is None:
                            run.lock = self.files.lock(run.directory)
                            if run.lock is None:
                                raise OSError(errno.EBUSY, "another process records this stream")
                        segment.handle = self.files.create(run.directory / segment.name)
                        run.segments += 1
                        run.started = True
                    self.files.write(segment.handle, op.data)  # type: ignore[arg-type]
                    segment.bytes += len(op.data)
                    segment.duration = op.duration
                    run.bytes += len(op.data)
                    self.bytes_written += len(op.data)
                    if first or now - segment.line_at >= self.refresh_seconds:
                        lines.append(index_line(self._record_of(run, segment, final=False)))
                        segment.line_at = now
                elif isinstance(op, Closed) and segment is not None:
                    run.segment = None
                    if segment.handle is not None:
                        self.files.close(segment.handle)
                        segment.handle = None
                        segment.duration = op.duration
                        lines.append(index_line(self._record_of(run, segment, final=True)))
                        closed += 1
            if lines:
                self.files.append_index(run.directory, lines)
                run.lines += len(lines)
        except OSError as exc:
            raise StorageError(f"recording {run.key}: {exc}") from exc
        return closed

    def _record_of(self, run: _Run, segment: _Segment, *, final: bool) -> SegmentRecord:
        return SegmentRecord(
            segment.name, segment.start, segment.duration, segment.bytes, segment.codecs, run.session, final
        )

    async def _compact(self, run: _Run) -> None:
        """Rewrite the stream's index with one line per segment (it grew by refresh lines)."""
        try:
            records = await self.catalog.segments(run.key)
            await trio.to_thread.run_sync(self.files.rewrite_index, run.directory, records, limiter=self._limiter)
        except (StorageError, OSError) as exc:
            log.warning("could not compact the recording index of %s (kept as it is): %s", run.key, exc)
            return
        self._lines.pop(run.key, None)
        run.lines = 0

    async def _fail(self, run: _Run, exc: StorageError) -> None:
        run.failed = True
        self._failed_at = trio.current_time()
        segment, run.segment = run.segment, None
        log.error("recording of %s stopped by a file-system error (the stream goes on): %s", run.key, exc)
        self._emit(RecordingFailed(run.key, f"{run.key}", time.time(), str(exc), run.frames, run.bytes))
        self._tell(run, "recording-failed", f"{run.key}: {exc}")
        self.failures += 1  # last: who waits on it sees the event too
        if segment is not None and segment.handle is not None:
            try:
                await trio.to_thread.run_sync(self.files.close, segment.handle, limiter=self._limiter)
            except OSError:
                pass
        await self._unlock(run)

    async def _unlock(self, run: _Run) -> None:
        lock, run.lock = run.lock, None
        if lock is not None:
            try:
                await trio.to_thread.run_sync(self.files.unlock, lock, limiter=self._limiter)
            except OSError:
                pass

    # ------------------------------------------------------------------ retention

    def _limits(self, app: str) -> tuple[float | None, int | None]:
        spec = self._spec(app)
        max_age = getattr(spec, "record_max_age", None)
        max_bytes = getattr(spec, "record_max_bytes", None)
        return (self.max_age if max_age is None else max_age or None,
                self.max_bytes if max_bytes is None else max_bytes or None)  # fmt: skip

    async def enforce_retention(self, now: float | None = None) -> list[tuple[StreamKey, str]]:
        """Delete the oldest segments of every application past its age or byte limit (never
        one being written); the (stream, file) pairs deleted."""
        now = time.time() if now is None else now
        if self.max_age is None and self.max_bytes is None and self._engine is not None:
            specs = [app.spec for app in self._engine.applications()]
            if not any(spec.record_max_age or spec.record_max_bytes for spec in specs):
                return []  # no limit anywhere: nothing to list
        writing = {(k, r.segment.name) for k, r in self._runs.items() if r.segment is not None}
        deleted: list[tuple[StreamKey, str]] = []
        apps: dict[str, list[StreamKey]] = {}
        for key in await self.catalog.streams():
            apps.setdefault(key.app, []).append(key)
        for app, keys in apps.items():
            max_age, max_bytes = self._limits(app)
            if max_age is None and max_bytes is None:
                continue
            segments: list[tuple[float, StreamKey, SegmentRecord]] = []
            for key in keys:
                segments.extend((r.start, key, r) for r in await self.catalog.segments(key))
            segments.sort(key=lambda item: (item[0], item[2].file))
            total = sum(r.bytes for _, _, r in segments)
            doomed: list[tuple[StreamKey, SegmentRecord]] = []
            for _, key, record in segments:
                old = max_age is not None and record.end < now - max_age
                big = max_bytes is not None and total > max_bytes
                if not (old or big):
                    break
                if (key, record.file) in writing:
                    continue
                doomed.append((key, record))
                total -= record.bytes
            for key, record in doomed:
                await trio.to_thread.run_sync(self._delete, key, record, limiter=self._limiter)
                log.info(
                    "recording retention deleted %s/%s (%d bytes, started %s)",
                    key,
                    record.file,
                    record.bytes,
                    time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.start)),
                )
                deleted.append((key, record.file))
                self.deleted_segments += 1
        return deleted

    def _delete(self, key: StreamKey, record: SegmentRecord) -> None:
        try:
            self.files.delete(self.catalog.path(key, record.file))
            self.files.append_index(self.catalog.directory(key), [deleted_line(record.file)])
        except OSError as exc:
            raise StorageError(f"cannot delete {key}/{record.file}: {exc}") from exc

    # ------------------------------------------------------------------ events

    def _tell(self, run: _Run, what: str, detail: str) -> None:
        if run.stream is not None:
            run.stream.notify(
                RecordingFileEvent(run.key, trio.current_time(), self.name, what, detail, str(run.directory), run.bytes)
            )

    def _emit(self, event: RecordingEvent) -> None:
        self.history.append(event)
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception:
                log.exception("recording on_event callback raised (ignored)")
