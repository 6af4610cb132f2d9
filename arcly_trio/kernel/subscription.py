"""A subscriber's end of a stream for Python code: a bounded channel of frames to iterate.

:class:`Subscription` is the :class:`~.fanout.Sink` that ``engine.subscribe`` gives: the stream's
task puts frames into its bounded trio memory channel with ``send_nowait`` (never waiting), and
the subscriber takes them with ``async for`` or :meth:`Subscription.next_batch`. What it missed
and why it ended are on its :class:`~.fanout.Subscriber` record, mirrored as attributes here.

Error policy: iteration never raises for a stream that ends; it stops, and ``end_reason`` says
why. Nothing else is raised here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import trio

from ..core.frame import Frame
from ..core.keys import Credentials, StreamKey
from .fanout import EndReason, Subscriber

if TYPE_CHECKING:
    from .stream import Stream

__all__ = ["EndReason", "Subscription"]


class Subscription:
    """What ``engine.subscribe`` yields: an async iterator of frames.

    The first frames are the cached metadata and configs, then the current GOP from its
    keyframe, then live frames with no gap and no duplicate at the seam. Iteration ends when the
    stream ends, the subscriber is evicted or the engine stops; ``end_reason`` then says which.

    The channel is bounded (``AppSpec.subscriber_queue``). When it is full the stream does not
    wait: this subscriber drops frames until the next keyframe, ``dropped`` counts them, and the
    observer and event feed are told. ``next_batch`` hands over everything queued at once, so an
    egress that has fallen behind can write several frames per send. The join-time frames are
    released as soon as they have been handed over, whichever way the subscription is read.
    """

    __slots__ = ("subscriber", "_stream", "_send", "_receive", "_offer", "_replay", "_replay_pos")

    def __init__(self, stream: Stream, capacity: int) -> None:
        self._stream = stream
        self._send, self._receive = trio.open_memory_channel[Frame](capacity)
        self._offer = self._send.send_nowait
        self._replay: list[Frame] = []
        self._replay_pos = 0
        self.subscriber: Subscriber = None  # type: ignore[assignment]  # set by Stream.add_subscriber

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
    def stream(self) -> Stream:
        return self._stream

    @property
    def queued(self) -> int:
        """Frames waiting to be received (join-time frames included)."""
        return (len(self._replay) - self._replay_pos) + self._receive.statistics().current_buffer_used

    # ------------------------------------------------------------------ the Sink side

    def replay(self, frames: list[Frame]) -> None:
        self._replay = frames
        self._replay_pos = 0

    def offer(self, frames: Sequence[Frame], start: int) -> int:
        offer = self._offer
        index = start
        try:
            for index in range(start, len(frames)):
                offer(frames[index])
        except trio.WouldBlock:
            return index
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return len(frames)  # nobody reads any more: nothing is missed
        return len(frames)

    def close(self, reason: EndReason) -> None:
        self._send.close()

    # ------------------------------------------------------------------ the reader side

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
        receive = self._receive
        try:
            return receive.receive_nowait()
        except trio.WouldBlock:
            pass
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise StopAsyncIteration from None
        try:
            return await receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise StopAsyncIteration from None

    async def next_batch(self, limit: int = 256) -> list[Frame]:
        """Wait for at least one frame, then return up to ``limit`` queued frames at once.

        Returns an empty list once the subscription has ended.
        """
        if self._replay_pos < len(self._replay):
            await trio.lowlevel.checkpoint()
            return self._take_replay(limit)
        receive = self._receive
        try:
            batch = [await receive.receive()]
        except (trio.EndOfChannel, trio.ClosedResourceError):
            return []
        try:
            while len(batch) < limit:
                batch.append(receive.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
            pass
        return batch

    def _detach(self) -> None:
        """The reader is gone: close both ends and let go of every frame."""
        self._send.close()
        self._receive.close()
        self._replay = []
        self._replay_pos = 0

    def __repr__(self) -> str:
        return f"<Subscription #{self.id} {self.key} {self.protocol or '-'} dropped={self.dropped}>"
