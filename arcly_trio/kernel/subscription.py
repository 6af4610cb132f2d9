"""A subscriber's end of a stream for Python code: a bounded queue of frames to iterate.

:class:`Subscription` is the :class:`~.fanout.Sink` that ``engine.subscribe`` gives: the stream's
task appends frames to its bounded queue (never waiting) and wakes its reader, once per batch,
if the reader is parked; the subscriber takes them with ``async for`` or
:meth:`Subscription.next_batch`. What it missed and why it ended are on its
:class:`~.fanout.Subscriber` record, mirrored as attributes here.

Publish sessions: :attr:`Subscription.session` is the :class:`~.fanout.SessionStart` of the
frames last handed out. The fan-out announces each session in band (``start_session``), and the
subscription keeps the announcement as a mark at its place in the queue: ``next_batch`` never
hands out frames of two sessions at once, so a consumer that cuts per session compares
``session`` after each batch (or each frame it iterates). Without a pending mark reading costs
what it did: one test per batch (per frame when iterating).

The queue is a plain ``deque`` and the wake-up a direct ``trio.lowlevel.reschedule`` of the one
parked reader (a subscription has one reader task): a whole batch costs one ``extend`` and at
most one task switch, where a memory channel cost a ``send_nowait`` per frame.

Error policy: iteration never raises for a stream that ends; it stops, and ``end_reason`` says
why. Nothing else is raised here. Only one task may read a subscription at a time.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any, Protocol

import trio

from arcly_trio.core.frame import Frame
from arcly_trio.core.keys import Credentials, StreamKey
from arcly_trio.kernel.fanout import EndReason, SessionStart, Subscriber

__all__ = ["EndReason", "SubscribedStream", "Subscription"]


class SubscribedStream(Protocol):
    """What a subscription knows of its stream (the :class:`~.stream.Stream` is one)."""

    @property
    def key(self) -> StreamKey: ...

    def unsubscribe(self, sub: Subscription) -> None: ...


class Subscription:
    """What ``engine.subscribe`` yields: an async iterator of frames.

    The first frames are the cached metadata and configs, then the current GOP from its
    keyframe, then live frames with no gap and no duplicate at the seam. Iteration ends when the
    stream ends, the subscriber is evicted or the engine stops; ``end_reason`` then says which.

    The queue is bounded (``AppSpec.subscriber_queue``). When it is full the stream does not
    wait: this subscriber drops frames until the next keyframe, ``dropped`` counts them, and the
    observer and event feed are told. ``next_batch`` hands over everything queued at once, so an
    egress that has fallen behind can write several frames per send. The join-time frames are
    released as soon as they have been handed over, whichever way the subscription is read.
    """

    __slots__ = (
        "subscriber",
        "session",
        "_stream",
        "_queue",
        "_capacity",
        "_waiter",
        "_ended",
        "_gone",
        "_replay",
        "_replay_pos",
        "_marks",
        "bridged_audio",
    )

    def __init__(
        self, stream: SubscribedStream, capacity: int, subscriber_id: int, credentials: Credentials, protocol: str
    ) -> None:
        self._stream = stream
        self._queue: deque[Frame] = deque()
        self._capacity = capacity
        self._waiter: trio.lowlevel.Task | None = None
        self._ended = False  # no more frames will be offered (the queued ones are still read)
        self._gone = False  # the reader left: offers are taken and forgotten
        self._replay: list[Frame] = []
        self._replay_pos = 0
        self.session: SessionStart | None = None
        """The publish session of the frames last handed out (see the module docstring)."""
        self._marks: list[list[Any]] | None = None  # [queued frames before it, SessionStart]; made when needed
        self.bridged_audio = False
        """Whether this subscription takes bridged frames (see :mod:`.fanout`): a service that
        packages for legacy players (HLS-TS) sets it."""
        self.subscriber = Subscriber(subscriber_id, stream.key, credentials, protocol, self)
        """The kernel's record of this subscriber (the stream adds it to its fan-out)."""

    # --------------------------------------------------------------- the Subscriber record

    @property
    def id(self) -> int:
        return self.subscriber.id

    @property
    def key(self) -> StreamKey:
        return self.subscriber.key

    @property
    def credentials(self) -> Credentials:
        return self.subscriber.credentials

    @property
    def protocol(self) -> str:
        return self.subscriber.protocol

    @property
    def dropped(self) -> int:
        """Frames this subscriber missed because its queue was full (exact)."""
        return self.subscriber.dropped

    @property
    def lag_episodes(self) -> int:
        """How many times it fell behind and had to skip to a keyframe."""
        return self.subscriber.lag_episodes

    @property
    def end_reason(self) -> EndReason | None:
        return self.subscriber.end_reason

    @property
    def lagging(self) -> bool:
        return self.subscriber.lagging

    @property
    def stream(self) -> SubscribedStream:
        return self._stream

    @property
    def queued(self) -> int:
        """Frames waiting to be received (join-time frames included)."""
        return (len(self._replay) - self._replay_pos) + len(self._queue)

    # ------------------------------------------------------------------ the Sink side

    def start_session(self, start: SessionStart) -> None:
        if self._gone:
            return
        if self.session is None and not self._queue and not self._marks:
            self.session = start  # nothing of an earlier session to hand out first
        else:
            if self._marks is None:
                self._marks = []
            self._marks.append([len(self._queue), start])

    def replay(self, frames: list[Frame]) -> None:
        self._replay = frames
        self._replay_pos = 0

    def offer(self, frames: Sequence[Frame], start: int) -> int:
        end = len(frames)
        if self._gone:
            return end  # nobody reads any more: nothing is missed
        queue = self._queue
        room = self._capacity - len(queue)
        if room >= end - start:
            queue.extend(frames[start:] if start else frames)
            stop = end
        elif room <= 0:
            return start
        else:
            stop = start + room
            queue.extend(frames[start:stop])
        if self._waiter is not None:
            self._wake()
        return stop

    def close(self, reason: EndReason) -> None:
        self._ended = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            trio.lowlevel.reschedule(waiter)

    # ------------------------------------------------------------------ the reader side

    async def _park(self) -> None:
        """Wait until frames are offered or the subscription ends (cancellable)."""
        if self._waiter is not None:
            raise trio.BusyResourceError("another task is already reading this subscription")
        self._waiter = trio.lowlevel.current_task()

        def abort(_: object) -> trio.lowlevel.Abort:
            self._waiter = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def __aiter__(self) -> Subscription:
        return self

    def _take_replay(self, limit: int) -> list[Frame]:
        replay = self._replay
        start = self._replay_pos
        batch = replay[start : start + limit]
        self._replay_pos = start + len(batch)
        if self._replay_pos >= len(replay):  # release the join-time GOP once it is given
            self._replay = []
            self._replay_pos = 0
        return batch

    async def __anext__(self) -> Frame:
        if self._replay_pos < len(self._replay):
            await trio.lowlevel.checkpoint()
            return self._take_replay(1)[0]
        queue = self._queue
        if not queue:
            if self._ended:
                raise StopAsyncIteration
            await self._park()
            if not queue:
                raise StopAsyncIteration
        if self._marks:
            self._pass_marks(1)
        return queue.popleft()

    async def next_batch(self, limit: int = 256) -> list[Frame]:
        """Wait for at least one frame, then return up to ``limit`` queued frames at once.

        Returns an empty list once the subscription has ended.
        """
        if self._replay_pos < len(self._replay):
            await trio.lowlevel.checkpoint()
            return self._take_replay(limit)
        queue = self._queue
        if queue or self._ended:
            await trio.lowlevel.checkpoint()
        else:
            await self._park()
        if self._marks:
            limit = self._pass_marks(limit)
        if len(queue) <= limit:
            batch = list(queue)
            queue.clear()
            return batch
        popleft = queue.popleft
        return [popleft() for _ in range(limit)]

    def _pass_marks(self, limit: int) -> int:
        """About to hand out up to ``limit`` queued frames: take on the session announced right
        before the first of them, if any, and return how many may go (up to the next mark)."""
        marks = self._marks
        if not marks:
            return limit
        while marks and marks[0][0] <= 0:
            self.session = marks.pop(0)[1]
        if marks:
            limit = min(limit, marks[0][0], len(self._queue))
            for mark in marks:
                mark[0] -= limit
        return limit

    def detach(self) -> None:
        """The reader is gone: let go of every frame; later offers are taken and forgotten."""
        self._gone = True
        self._ended = True
        self._queue.clear()
        self._marks = None
        self._replay = []
        self._replay_pos = 0
        self._wake()

    def __repr__(self) -> str:
        return f"<Subscription #{self.id} {self.key} {self.protocol or '-'} dropped={self.dropped}>"
