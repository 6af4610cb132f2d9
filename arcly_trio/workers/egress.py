"""Direct-write egress: the stream's task writes each viewer's shared bytes straight to its socket.

The egress hot path of the protocol workers (RTMP, HTTP-FLV, WebSocket-FLV, the frame API). A
viewer is a :class:`DirectSink` (a kernel :class:`~arcly_trio.kernel.fanout.Sink`) over its
connection's :class:`Egress`:

* When a batch of frames reaches a stream, the stream's task offers it to every sink. A sink
  turns it into the buffers its format writes: built once per batch and format, and shared by
  every viewer that takes the whole batch (:meth:`~arcly_trio.core.frame.FrameBatch.encoded`:
  RTMP chunks per chunk size, FLV tags inside one HTTP chunk or one WebSocket message), or
  from each frame's own cached bytes (:meth:`~arcly_trio.core.frame.Frame.encoded`) for a
  viewer that takes part of a batch. The egress writes them with one non-blocking ``writev``
  on the socket: no join, no copy, no task switch.
* What the socket does not take is queued (views of the same shared buffers) and the
  connection's own task is woken: it waits for the socket to be writable and drains the queue,
  within the write timeout. Until the queue is empty every later write is queued behind it, so
  bytes never interleave: a frame that was written in part is finished before anything else
  goes out, replies and control messages included. Once ``max_frames`` offered frames are
  queued, a sink takes no more and the kernel's lag policy applies (drop to the next keyframe,
  counted, evicted past the lag budget). The replay a viewer gets when it joins is queued
  whole and not counted (it is shared frames, as the kernel's sink contract says).
* The connection's task spends its life in :meth:`Egress.receive`: reading what the peer sends
  inside a cancel scope that the egress cancels when the queue needs draining, or when a sink
  has news for the task (:meth:`Egress.poke`: its stream ended). A viewer costs one task, woken
  by its peer, by a full socket, or at its end; never per frame.
* Flow control: :attr:`Egress.limit` caps the bytes written (RTMP's Set Peer Bandwidth: the
  connection raises it as acknowledgements arrive); past it everything is queued, bounded the
  same way, and the connection's task goes on reading (it is waiting for the peer).

**Where the fast path stops.** Only a plain TCP :class:`trio.SocketStream` is written directly.
Any other stream (TLS: :class:`trio.SSLStream`, for RTMPS and HTTPS; an in-memory stream; a
stream some wrapper gives) takes the ordinary path: every write is queued, and the connection's
task sends the queue with ``send_all`` (same queue, bound, ordering and write timeout; the
write only happens in the connection's task instead of the stream's). The ordinary path needs
the stream's ``receive_some`` to lose nothing when cancelled, as trio's streams guarantee.

**Legacy audio** (issue 22): a sink whose ``bridged_audio`` is true plays for a client that
cannot decode Opus (HTTP-FLV, WebSocket-FLV, an RTMP player that did not announce Opus in
``fourCcList``): the kernel gives it the audio bridge's AAC of an Opus stream (bridged frames,
see :mod:`arcly_trio.kernel.fanout`) and its format leaves the original Opus out
(:func:`legacy_audio`). Sinks are made legacy only on an engine that runs an audio bridge
(:func:`bridges_audio`): without one, Opus goes out as it came.

Error policy: nothing here raises into the stream's task (a sink's encoding skips a frame its
format cannot carry). A write that fails (the peer reset the connection) marks the egress
:attr:`~Egress.failed`, drops what is queued and pokes the connection's task, whose next
:meth:`Egress.receive` or :meth:`Egress.drain` raises :class:`~arcly_trio.core.errors.PeerGone`
(as do the transport's errors while reading); a peer that takes no data for ``write_timeout``
seconds makes :meth:`Egress.drain` raise :class:`~arcly_trio.core.errors.WriteTimeout`.
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from itertools import islice
from typing import Any

import trio

from arcly_trio.core.errors import LocalProtocolError, PeerGone, WriteTimeout
from arcly_trio.core.frame import Frame, FrameBatch
from arcly_trio.kernel.fanout import EndReason, SessionStart, Subscriber
from arcly_trio.transport import TRANSPORT_ERRORS, describe, map_transport_errors

__all__ = ["Buffer", "Encoded", "Egress", "DirectSink", "encode_frames", "bridges_audio", "legacy_audio"]

Buffer = bytes | bytearray | memoryview
Encoded = tuple[Sequence[Buffer], int]
"""What a sink writes for some frames: the buffers and their total size in bytes."""

_IOV_MAX = 1024  # buffers per writev (Linux's IOV_MAX)
_write = os.write


class Egress:
    """The outgoing side of one connection (see the module docstring).

    ``write`` is synchronous and never waits (called by sinks from the stream's task, and by
    the connection for its own messages); ``receive`` and ``drain`` are the connection task's.
    ``max_frames`` bounds the frames queued before sinks refuse more (``AppSpec.subscriber_queue``
    of the stream being played; a connection may set it when it knows the application).
    """

    __slots__ = (
        "stream",
        "write_timeout",
        "max_frames",
        "sent",
        "failed",
        "queued_frames",
        "fast_fd",
        "_limit",
        "_fd",
        "_socket",
        "_queue",
        "_marks",
        "_in",
        "_out",
        "_scope",
        "_poked",
    )

    def __init__(self, stream: trio.abc.Stream, *, write_timeout: float, max_frames: int = 256) -> None:
        self.stream = stream
        self.write_timeout = write_timeout
        self.max_frames = max_frames
        self._limit: float = math.inf
        self.sent = 0
        """Bytes written to the peer."""
        self.failed: PeerGone | None = None
        """Why writing failed (the peer is gone); nothing is written or queued after."""
        self.queued_frames = 0
        """Frames offered by sinks and still queued (the bound of the lag policy)."""
        # The fast path stops here: only a plain TCP socket stream is written directly (see the
        # module docstring); TLS and every other stream take the ordinary path.
        if type(stream) is trio.SocketStream:
            self._socket: Any = stream.socket
            self._fd = stream.socket.fileno()
        else:
            self._socket = None
            self._fd = -1
        # What the socket did not take, and (queued bytes in all at the end of a write, the
        # frames it carried); empty tuples until something is queued (a viewer that keeps up
        # never holds a deque), and again once drained.
        self._queue: deque[Buffer] | tuple[()] = ()
        self._marks: deque[tuple[int, int]] | tuple[()] = ()
        self._in = 0  # bytes ever queued
        self._out = 0  # bytes ever written out of the queue
        self._scope: trio.CancelScope | None = None
        self._poked = False
        self.fast_fd = self._fd
        """The socket's descriptor while a sink may write a whole batch to it at once (direct,
        nothing queued, no failure, no flow control); -1 otherwise (see :meth:`DirectSink.offer`)."""

    def _refresh(self) -> None:
        self.fast_fd = self._fd if not self._queue and self.failed is None and self._limit == math.inf else -1

    @property
    def limit(self) -> float:
        """Write no more once :attr:`sent` reaches this (flow control); ``inf``: no limit."""
        return self._limit

    @limit.setter
    def limit(self, value: float) -> None:
        self._limit = value
        self._refresh()

    @property
    def direct(self) -> bool:
        """Whether writes go straight to a socket (the fast path)."""
        return self._fd >= 0

    @property
    def queued_bytes(self) -> int:
        return self._in - self._out

    @property
    def blocked(self) -> bool:
        """Whether something is queued (new writes queue behind it)."""
        return bool(self._queue)

    # ------------------------------------------------------- writing (never waits)

    def write(self, buffers: Sequence[Buffer], size: int, frames: int = 0) -> None:
        """Write ``buffers`` (``size`` bytes in all; ``frames`` offered frames they carry) now
        if the socket takes them (one ``write`` or ``writev``); queue what it does not, and
        wake the connection's task."""
        if not size or self.failed is not None:
            return
        if self._queue or self._fd < 0 or self.sent >= self.limit:
            self._enqueue(buffers, 0, size, frames)
            return
        try:
            if len(buffers) == 1:
                sent = _write(self._fd, buffers[0])
            else:
                sent = os.writev(self._fd, buffers if len(buffers) <= _IOV_MAX else buffers[:_IOV_MAX])
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._fail(exc)
            return
        self.sent += sent
        if sent != size:
            self._enqueue(buffers, sent, size, frames)

    def send(self, data: bytes, frames: int = 0) -> None:
        """:meth:`write` of one buffer (a batch's shared bytes)."""
        self.write((data,), len(data), frames)

    def resume(self) -> None:
        """Try to write what is queued now (after :attr:`limit` was raised), without waiting."""
        if self._queue and self._fd >= 0:
            self._write_queued()
            if self._queue and self.sent < self.limit:
                self._wake()

    def poke(self) -> None:
        """Make the connection's task look (its current or next :meth:`receive` returns ``None``)."""
        self._poked = True
        self._wake()

    def discard(self) -> None:
        """Let go of everything queued (the connection is ending)."""
        self._queue = ()
        self._marks = ()
        self._out = self._in
        self.queued_frames = 0
        self._refresh()

    def _enqueue(self, buffers: Sequence[Buffer], skip: int, size: int, frames: int) -> None:
        """Queue ``buffers`` less their first ``skip`` bytes (already written)."""
        queue = self._queue
        wake = not queue
        if wake:
            self._queue = queue = deque()
            self.fast_fd = -1
        self._in += size - skip
        for buffer in buffers:
            length = len(buffer)
            if skip >= length:
                skip -= length
                continue
            queue.append(memoryview(buffer)[skip:] if skip else buffer)
            skip = 0
        if frames:
            if not self._marks:
                self._marks = deque()
            self._marks.append((self._in, frames))  # type: ignore[union-attr]
            self.queued_frames += frames
        if wake:
            self._wake()

    def _fail(self, exc: OSError) -> None:
        self.failed = PeerGone(f"write failed: {exc.strerror or exc}")
        self.discard()
        self._wake()

    def _wake(self) -> None:
        scope = self._scope
        if scope is not None:
            scope.cancel()

    def _take(self) -> list[Buffer]:
        """The front of the queue, at most ``_IOV_MAX`` buffers and what :attr:`limit` allows."""
        buffers = list(islice(self._queue, _IOV_MAX))
        allowed = self.limit - self.sent
        if allowed != math.inf:
            total = 0
            for index, buffer in enumerate(buffers):
                total += len(buffer)
                if total >= allowed:
                    cut = len(buffer) - int(total - allowed)
                    buffers[index] = memoryview(buffer)[:cut]
                    del buffers[index + 1 :]
                    break
        return buffers

    def _consume(self, n: int) -> None:
        """``n`` bytes from the front of the queue were written."""
        self.sent += n
        self._out += n
        queue = self._queue
        assert isinstance(queue, deque)
        while n:
            length = len(queue[0])
            if n < length:
                queue[0] = memoryview(queue[0])[n:]
                break
            queue.popleft()
            n -= length
        marks = self._marks
        out = self._out
        while marks and marks[0][0] <= out:
            self.queued_frames -= marks.popleft()[1]  # type: ignore[union-attr]
        if not queue:
            self._queue = ()
            self._marks = ()
            self._refresh()

    def _write_queued(self) -> None:
        """Write from the queue until the socket or the limit says stop (never waits)."""
        fd = self._fd
        queue = self._queue
        while queue and self.sent < self.limit:
            try:
                sent = os.writev(fd, self._take())
            except BlockingIOError:
                return
            except OSError as exc:
                self._fail(exc)
                return
            if not sent:
                return
            self._consume(sent)

    # ------------------------------------------------------- the connection's task

    def check(self) -> None:
        """Raise :class:`PeerGone` if a write failed."""
        if self.failed is not None:
            raise self.failed

    async def drain(self) -> None:
        """Write everything queued (up to :attr:`limit`), waiting for the peer as needed.

        Raises :class:`PeerGone` if a write fails, :class:`WriteTimeout` if the peer takes
        nothing for ``write_timeout`` seconds.
        """
        self.check()
        if self._fd < 0:
            await self._drain_stream()
            return
        timeout = self.write_timeout
        deadline = trio.current_time() + timeout
        while self._queue and self.sent < self.limit:
            before = self._out
            self._write_queued()
            self.check()
            if not self._queue or self.sent >= self.limit:
                return
            if self._out != before:
                deadline = trio.current_time() + timeout
            with trio.move_on_at(deadline) as scope:
                await trio.lowlevel.wait_writable(self._socket)
            if scope.cancelled_caught:
                raise WriteTimeout(timeout)

    async def _drain_stream(self) -> None:
        """The ordinary path: ``send_all`` the queue from the connection's task."""
        timeout = self.write_timeout
        while self._queue and self.sent < self.limit:
            buffers = self._take()
            data = b"".join(buffers)
            try:
                with trio.move_on_after(timeout) as scope:
                    await self.stream.send_all(data)
            except TRANSPORT_ERRORS as exc:
                self.failed = PeerGone(f"write failed: {describe(exc)}")
                self.discard()
                raise self.failed from None
            if scope.cancelled_caught:
                raise WriteTimeout(timeout)
            self._consume(len(data))

    async def receive(self, max_bytes: int) -> bytes | None:
        """Drain what is queued, then read from the peer.

        Returns what was read (``b""`` at end of file), or ``None`` if the read was
        interrupted: the queue needs draining, or :meth:`poke` was called. Raises
        :class:`PeerGone` (a failed write, or the transport broken while reading),
        :class:`WriteTimeout` (from :meth:`drain`).
        """
        if self._queue and self.sent < self.limit:
            await self.drain()
        self.check()
        if self._poked:
            self._poked = False
            await trio.lowlevel.checkpoint()
            return None
        with trio.CancelScope() as scope:
            self._scope = scope
            try:
                with map_transport_errors(PeerGone):
                    return await self.stream.receive_some(max_bytes)
            finally:
                self._scope = None
        self._poked = False
        return None


def encode_frames(frames: Sequence[Frame], start: int, end: int, encode: Callable[[Frame], bytes]) -> Encoded:
    """Each frame's own shared bytes (``encode(frame)``, cached on the frame), for a viewer that
    takes part of a batch. A frame the format cannot carry (``LocalProtocolError``) is left
    out. Never raises."""
    buffers: list[Buffer] = []
    size = 0
    for index in range(start, end):
        try:
            data = encode(frames[index])
        except LocalProtocolError:
            continue
        buffers.append(data)
        size += len(data)
    return buffers, size


def bridges_audio(engine: Any) -> bool:
    """Whether ``engine`` runs an audio bridge (a plugin with a true ``bridges_audio``), so that
    players that cannot decode Opus get its AAC (see the module docstring)."""
    return any(getattr(plugin, "bridges_audio", False) for plugin in engine.plugins)


def legacy_audio(frames: Sequence[Frame]) -> Sequence[Frame]:
    """``frames`` without Opus audio (for a legacy sink: it gets the bridge's AAC instead);
    ``frames`` itself when there is none (one look per frame, no copy)."""
    for frame in frames:
        if frame.codec == "opus":
            return [frame for frame in frames if frame.codec != "opus"]
    return frames


class DirectSink:
    """A kernel :class:`~arcly_trio.kernel.fanout.Sink` that writes one viewer's frames through
    its connection's :class:`Egress`.

    A format subclasses it with :meth:`encode` (the bytes of ``frames[start:end]`` for this
    viewer, from each frame's cached bytes) and, for the shared fast path, calls :meth:`share`
    with a key and a function of a batch alone (and arguments) that returns the bytes of the
    whole batch, or ``None`` for a batch it leaves to :meth:`encode`: every viewer with the same
    key gets the same ``bytes`` object, built once per batch, written with one system call.
    A viewer that needs bytes of its own (a header not yet written, a message to insert) shares
    nothing until it calls :meth:`share`. A format with per-viewer state around the frames
    overrides :meth:`write`.

    Until :meth:`start` the sink holds the frames it is given (its connection has not said
    "play" yet); then it writes them, replay first. After :meth:`close` or a failed write it
    takes everything and writes nothing, and its connection's task is poked to say goodbye
    (``ended``, ``end_reason``).
    ``bridged_audio``: the viewer cannot decode Opus (see the module docstring); the kernel then
    offers it bridged frames, and the format leaves Opus out.
    """

    __slots__ = (
        "egress",
        "bridged_audio",
        "subscriber",
        "ended",
        "end_reason",
        "batch_key",
        "batch_build",
        "batch_args",
        "_shared",
        "_started",
        "_held",
        "_held_live",
    )

    def __init__(self, egress: Egress) -> None:
        self.egress = egress
        self.bridged_audio = False
        self.subscriber: Subscriber | None = None
        self.ended = False
        self.end_reason: EndReason | None = None
        self.batch_key: Hashable | None = None
        self.batch_build: Callable[..., bytes | None] | None = None
        self.batch_args: tuple[Any, ...] = ()
        self._shared = False  # started, not ended, sharing: the fast path of offer()
        self._started = False
        self._held: list[Frame] = []
        self._held_live = 0

    def encode(self, frames: Sequence[Frame], start: int, end: int) -> Encoded:
        """The bytes of ``frames[start:end]`` for this viewer (a format provides it). Must not
        raise."""
        raise NotImplementedError

    def share(self, key: Hashable, build: Callable[..., bytes | None], *args: Any) -> None:
        """From now on, a whole batch is written as ``batch.encoded(key, build, *args)``."""
        self.batch_key = key
        self.batch_build = build
        self.batch_args = args
        self._shared = self._started and not self.ended

    # ------------------------------------------------------------------ the Sink

    def start_session(self, start: SessionStart) -> None:
        pass  # a viewer's stream goes on across publish sessions (its configs come in band)

    def replay(self, frames: list[Frame]) -> None:
        if not self._started:
            self._held += frames
        elif not self.ended:
            self.write(frames, 0, len(frames), 0)

    def offer(self, frames: Sequence[Frame], start: int) -> int:
        # The hot path: a live viewer whose socket keeps up, given a whole batch: the batch's
        # shared bytes, one write() on its socket, in line (no further call per viewer).
        if self._shared and not start and type(frames) is FrameBatch:
            egress = self.egress
            fd = egress.fast_fd
            if fd >= 0:
                data = frames.encodings.get(self.batch_key)
                if data is None:
                    data = frames.encoded(self.batch_key, self.batch_build, *self.batch_args)
                    if data is None:
                        return self._offer(frames, start)
                try:
                    sent = _write(fd, data)
                except BlockingIOError:
                    sent = 0
                except OSError as exc:
                    egress._fail(exc)
                    return len(frames)
                egress.sent += sent
                if sent != len(data):
                    egress._enqueue((data,), sent, len(data), len(frames))
                return len(frames)
        return self._offer(frames, start)

    def _offer(self, frames: Sequence[Frame], start: int) -> int:
        end = len(frames)
        egress = self.egress
        if self.ended or egress.failed is not None:
            return end  # nobody to write to: nothing is missed
        if not self._started:
            room = egress.max_frames - self._held_live
            if room <= 0:
                return start
            if end - start > room:
                end = start + room
            self._held += frames[start:end]
            self._held_live += end - start
            return end
        if egress._queue:
            room = egress.max_frames - egress.queued_frames
            if room <= 0:
                return start
            if end - start > room:
                end = start + room
        self.write(frames, start, end, end - start)
        return end

    def close(self, reason: EndReason) -> None:
        self.ended = True
        self._shared = False
        self.end_reason = reason
        self.egress.poke()

    def write(self, frames: Sequence[Frame], start: int, end: int, counted: int) -> None:
        """Write ``frames[start:end]`` (``counted`` of them live frames, bounded by the queue):
        the batch's shared bytes when this viewer takes a whole batch, else its own."""
        key = self.batch_key
        if key is not None and start == 0 and end == len(frames) and type(frames) is FrameBatch:
            data = frames.encoded(key, self.batch_build, *self.batch_args)
            if data is not None:
                self.egress.send(data, counted)
                return
        buffers, size = self.encode(frames, start, end)
        self.egress.write(buffers, size, counted)

    # ------------------------------------------------------------- the connection

    def start(self) -> None:
        """The viewer may now be written to: the frames held so far go out (replay first)."""
        if self._started:
            return
        self._started = True
        held = self._held
        self._held = []
        if held and not self.ended:
            self.write(held, 0, len(held), self._held_live)
        self._held_live = 0
        self._shared = self.batch_key is not None and not self.ended

    @property
    def dropped(self) -> int:
        """Frames this viewer missed (the kernel's count)."""
        return self.subscriber.dropped if self.subscriber is not None else 0
