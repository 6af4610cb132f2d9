"""FLV recording: one file per publish session, complete whatever way the session ends.

:class:`FlvRecorder` is a kernel :class:`~arcly_trio.kernel.engine.StreamService`: register it
with ``EngineBuilder.service`` and it records every publish session of the applications it
applies to (``AppSpec.record``, or all of them with ``all_apps=True``) to
``{app}/{stream}-{UTC start}.flv`` in its storage (a directory by default; the start is the
session's wall-clock start, ``YYYYMMDDTHHMMSSZ``, with ``-2``, ``-3``... appended if that name
is taken). A recording starts with the session's first frame, not with the publish: a publisher
that never sends a frame leaves no file. A new publish session on the same stream (takeover,
reconnect within the grace, as the kernel announces it:
:attr:`~arcly_trio.kernel.subscription.Subscription.session`) starts a new file, whatever its
frames look like.

Completeness: the service sees every frame from the first (the engine subscribes it when the
stream is created) and writes each batch of frames, then flushes it to the operating system,
before taking the next. So whatever ends the session (a clean unpublish, a publisher that
crashes or is killed, an idle reap, a server shutdown or even a crash of this process after
the flush) the file holds every frame received up to then: the FLV header, then the metadata
and configs, then the media, and ffprobe can play it. File writes are synchronous (buffered,
one flush per batch) and run on the service's own task: no threads.

Error policy: a storage error (``OSError`` from the disk: full, read-only, gone) stops that
recording, never the stream: it is logged at error level, a :class:`RecordingFailed` event is
recorded in :attr:`FlvRecorder.history` and passed to ``on_event``, and the frames of that
session are dropped until the next session, which tries a new file. An ``on_event`` callback
that raises is logged and ignored.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence

import attrs
import trio

from arcly_trio.core.frame import Frame
from arcly_trio.core.keys import StreamKey
from arcly_trio.kernel.events import ServiceEvent
from arcly_trio.kernel.qos import StreamInfo
from arcly_trio.kernel.spec import AppSpec
from arcly_trio.kernel.stream import Stream
from arcly_trio.kernel.subscription import Subscription
from arcly_trio.media.flv import FlvStreamWriter
from arcly_trio.storage import AppendHandle, FileStorage, Storage, StorageError, check_key

__all__ = [
    "FlvRecorder",
    "RecordingStarted",
    "RecordingStopped",
    "RecordingFailed",
    "RecordingEvent",
    "RecordingFileEvent",
]

log = logging.getLogger("arcly_trio.recording")


@attrs.frozen
class RecordingStarted:
    """A recording file was opened for a publish session."""

    key: StreamKey
    path: str
    """The storage key (a path relative to the recording directory)."""
    at: float
    """Wall-clock time (``time.time()``)."""


@attrs.frozen
class RecordingStopped:
    """A recording ended normally; ``reason`` says why (the subscription's end reason,
    ``"new publish session"``...)."""

    key: StreamKey
    path: str
    at: float
    frames: int
    bytes: int
    reason: str


@attrs.frozen
class RecordingFailed:
    """A storage error stopped a recording (the stream goes on)."""

    key: StreamKey
    path: str
    at: float
    error: str
    frames: int
    bytes: int


RecordingEvent = RecordingStarted | RecordingStopped | RecordingFailed


@attrs.frozen(slots=True)
class RecordingFileEvent(ServiceEvent):
    """The :class:`~arcly_trio.kernel.events.ServiceEvent` a recording reports to the
    observers and the event feed (``recording-started``, ``recording-stopped``,
    ``recording-failed``): ``file`` is where it is (a path on disk for a directory), ``bytes``
    what was written."""

    file: str = ""
    bytes: int = 0


@attrs.define
class _Recording:
    key: StreamKey
    path: str
    handle: AppendHandle | None
    writer: FlvStreamWriter = attrs.field(factory=FlvStreamWriter)
    bytes: int = 0
    failed: bool = False
    stream: Stream | None = None


class FlvRecorder:
    """Records publish sessions as FLV files (see the module docstring).

    Args:
        directory: a directory (made into a :class:`FileStorage`) or any :class:`Storage`.
        all_apps: record every application, not only those with ``AppSpec.record``.
        on_event: called with each :class:`RecordingStarted`, :class:`RecordingStopped` and
            :class:`RecordingFailed` (synchronously, on the recording task; keep it cheap).
        capacity: the service's subscription queue (frames).
        skip_protocols: publish protocols whose streams are not recorded: by default the
            copies of streams published on another node or worker of a cluster (``cluster``,
            ``worker``), which are recorded where they are published. Streams pulled from an
            upstream (``pull``) are recorded like any other.
    """

    name = "record"

    def __init__(
        self,
        directory: str | os.PathLike[str] | Storage,
        *,
        all_apps: bool = False,
        on_event: Callable[[RecordingEvent], None] | None = None,
        capacity: int = 4096,
        skip_protocols: Iterable[str] = ("cluster", "worker"),
    ) -> None:
        self.skip_protocols = frozenset(skip_protocols)
        if isinstance(directory, (str, os.PathLike)):
            self.storage: Storage = FileStorage(directory)
        else:
            self.storage = directory
        self.all_apps = all_apps
        self.on_event = on_event
        self.capacity = capacity
        self.history: deque[RecordingEvent] = deque(maxlen=1000)
        """The latest recording events (bounded)."""
        self.active: dict[str, StreamKey] = {}
        """Recordings being written: storage key -> stream."""
        self.failures = 0
        """Recordings stopped by a storage error."""
        self.bytes_written = 0
        """Bytes written to recordings, in all (the metrics' recording bytes)."""

    def applies_to(self, spec: AppSpec) -> bool:
        return self.all_apps or spec.uses(self.name)

    def file_path(self, path: str) -> str:
        """Where a recording's storage key is on disk (for a :class:`FileStorage`), else the key."""
        if isinstance(self.storage, FileStorage):
            return str(self.storage.path_of(path))
        return path

    # ------------------------------------------------------------------------ service

    async def serve_stream(self, stream: Stream, subscription: Subscription) -> None:
        """Record ``stream``'s sessions until ``subscription`` ends (run by the engine)."""
        if stream.info.protocol in self.skip_protocols:
            return
        session = subscription.session
        recording: _Recording | None = None  # opened with a session's first frame
        reason = "cancelled"
        try:
            while True:
                batch = await subscription.next_batch(512)
                if not batch:
                    break
                if subscription.session is not session:  # a batch holds one session's frames
                    if recording is not None:
                        await self._close(recording, "new publish session")
                        recording = None
                    session = subscription.session
                info = session.info if session is not None else stream.info
                recording = await self._record(recording, stream, info, batch)
            end = subscription.end_reason
            reason = end.value if end is not None else "stream ended"
        finally:
            # Closing is a flush and a close(): shield it so a cancelled service still
            # leaves a complete file.
            if recording is not None:
                with trio.CancelScope(shield=True, deadline=trio.current_time() + 10):
                    await self._close(recording, reason)

    async def _record(
        self, recording: _Recording | None, stream: Stream, info: StreamInfo, frames: Sequence[Frame]
    ) -> _Recording | None:
        """Write ``frames`` of the session ``info`` to ``recording``, opened now if it is not yet."""
        if not frames:
            return recording
        if recording is None:
            recording = await self._open(stream.key, info.started_at)
            recording.stream = stream
            self._tell(recording, "recording-started", recording.path)
        await self._write(recording, frames)
        return recording

    # ------------------------------------------------------------------------ files

    async def _open(self, key: StreamKey, started_at: float) -> _Recording:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started_at or time.time()))
        path = f"{key.app}/{key.name}-{stamp}.flv"
        try:
            check_key(path)
            taken = set(await self.storage.list(f"{key.app}/{key.name}-{stamp}"))
            suffix = 2
            while path in taken:
                path = f"{key.app}/{key.name}-{stamp}-{suffix}.flv"
                suffix += 1
            handle = await self.storage.open_append(path)
        except StorageError as exc:
            recording = _Recording(key, path, None)
            await self._fail(recording, exc)
            return recording
        recording = _Recording(key, path, handle)
        self.active[path] = key
        log.info("recording %s to %s", key, self.file_path(path))
        self._emit(RecordingStarted(key, path, time.time()))
        return recording

    async def _write(self, recording: _Recording, frames: Sequence[Frame]) -> None:
        if recording.failed or not frames or recording.handle is None:
            return
        data = recording.writer.write(frames)
        if not data:
            return
        try:
            await recording.handle.write(data)
            await recording.handle.flush()
        except StorageError as exc:
            await self._fail(recording, exc)
            return
        recording.bytes += len(data)
        self.bytes_written += len(data)

    async def _close(self, recording: _Recording, reason: str) -> None:
        handle = recording.handle
        if recording.failed or handle is None:
            return
        recording.handle = None
        try:
            tail = recording.writer.finish()
            if tail:
                await handle.write(tail)
                recording.bytes += len(tail)
                self.bytes_written += len(tail)
            await handle.aclose()
        except StorageError as exc:
            recording.handle = handle
            await self._fail(recording, exc)
            return
        self.active.pop(recording.path, None)
        frames = recording.writer.frames
        log.info(
            "recording of %s finished (%s): %s, %d frames, %d bytes",
            recording.key,
            reason,
            self.file_path(recording.path),
            frames,
            recording.bytes,
        )
        self._emit(RecordingStopped(recording.key, recording.path, time.time(), frames, recording.bytes, reason))
        self._tell(recording, "recording-stopped", f"{recording.path} ({reason}, {frames} frames)")

    async def _fail(self, recording: _Recording, exc: StorageError) -> None:
        recording.failed = True
        self.failures += 1
        self.active.pop(recording.path, None)
        handle, recording.handle = recording.handle, None
        if handle is not None:
            try:
                await handle.aclose()
            except StorageError:
                pass
        log.error(
            "recording of %s to %s stopped by a storage error (the stream goes on): %s",
            recording.key,
            recording.path,
            exc,
        )
        self._emit(
            RecordingFailed(
                recording.key, recording.path, time.time(), str(exc), recording.writer.frames, recording.bytes
            )
        )
        self._tell(recording, "recording-failed", f"{recording.path}: {exc}")

    def _tell(self, recording: _Recording, what: str, detail: str) -> None:
        """Put a recording event on the application's event feed and to the observer."""
        if recording.stream is not None:
            recording.stream.notify(
                RecordingFileEvent(
                    recording.key,
                    trio.current_time(),
                    self.name,
                    what,
                    detail,
                    self.file_path(recording.path),
                    recording.bytes,
                )
            )

    def _emit(self, event: RecordingEvent) -> None:
        self.history.append(event)
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception:
                log.exception("recording on_event callback raised (ignored)")
