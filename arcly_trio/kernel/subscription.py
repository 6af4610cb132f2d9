"""A subscriber's end of a stream: a bounded channel of frames and its lag bookkeeping."""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

import trio

from ..core.frame import Frame
from ..core.keys import Credentials, StreamKey

if TYPE_CHECKING:
    from .stream import Stream

__all__ = ["EndReason", "Subscription"]

# Delivery states, as small ints because the fan-out loop tests them per frame.
LIVE = 0
LAGGING = 1  # dropped frames; resumes on the next keyframe; drops are counted
STARTING = 2  # joined with no cached GOP; starts on the next keyframe; nothing is counted


class EndReason(enum.Enum):
    """Why a subscription ended."""

    UNSUBSCRIBED = "unsubscribed"
    """The subscriber left (its ``subscribe`` block exited)."""
    STREAM_ENDED = "stream-ended"
    """The publisher left and did not come back within the reconnect grace."""
    EVICTED = "evicted"
    """It dropped more frames than the application's lag budget allows."""
    REAPED = "reaped"
    """The stream was reaped for idleness."""
    SHUTDOWN = "shutdown"
    """The engine (or the application) stopped."""


class Subscription:
    """What ``engine.subscribe`` yields: an async iterator of frames.

    The first frames are the cached metadata and configs, then the current GOP from its
    keyframe, then live frames with no gap and no duplicate at the seam. Iteration ends when the
    stream ends, the subscriber is evicted or the engine stops; ``end_reason`` then says which.

    The channel is bounded (``AppSpec.subscriber_queue``). When it is full the stream does not
    wait: this subscriber drops frames until the next keyframe, ``dropped`` counts them, and the
    observer and event feed are told. ``next_batch`` hands over everything queued at once, so an
    egress that has fallen behind can write several frames per send.
    """

    __slots__ = (
        "id", "key", "credentials", "protocol", "_stream", "_send", "_receive", "_offer", "_replay",
        "_replay_pos", "_state", "_gap_start", "_gap_dropped", "dropped", "lag_episodes", "end_reason",
    )

    def __init__(
        self,
        stream: Stream,
        subscriber_id: int,
        credentials: Credentials,
        protocol: str,
        capacity: int,
        replay: list[Frame],
        starts_on_keyframe: bool,
    ) -> None:
        self.id = subscriber_id
        self.key: StreamKey = stream.key
        self.credentials = credentials
        self.protocol = protocol
        self._stream = stream
        self._send, self._receive = trio.open_memory_channel[Frame](capacity)
        self._offer = self._send.send_nowait
        self._replay = replay
        self._replay_pos = 0
        self._state = LIVE if starts_on_keyframe or not stream.has_video else STARTING
        # Seq of the first frame this subscriber missed (while starting: the first after joining).
        self._gap_start = stream.next_seq
        self._gap_dropped = 0
        self.dropped = 0  # frames this subscriber missed because its queue was full
        self.lag_episodes = 0  # how many times it fell behind and had to skip to a keyframe
        self.end_reason: EndReason | None = None

    @property
    def stream(self) -> Stream:
        return self._stream

    @property
    def lagging(self) -> bool:
        return self._state == LAGGING

    @property
    def queued(self) -> int:
        """Frames waiting to be received (replay included)."""
        return (len(self._replay) - self._replay_pos) + self._receive.statistics().current_buffer_used

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Frame:
        replay = self._replay
        if self._replay_pos < len(replay):
            await trio.lowlevel.checkpoint()
            frame = replay[self._replay_pos]
            self._replay_pos += 1
            if self._replay_pos >= len(replay):  # release the join-time GOP once it is given
                self._replay = []
                self._replay_pos = 0
            return frame
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
        replay = self._replay
        if self._replay_pos < len(replay):
            await trio.lowlevel.checkpoint()
            start = self._replay_pos
            batch = replay[start : start + limit]
            self._replay_pos = start + len(batch)
            if self._replay_pos >= len(replay):
                self._replay = []
                self._replay_pos = 0
            return batch
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

    def _close_channel(self, reason: EndReason) -> None:
        if self.end_reason is None:
            self.end_reason = reason
        self._send.close()

    def _close(self) -> None:
        self._send.close()
        self._receive.close()
        self._replay = []
        self._replay_pos = 0

    def __repr__(self) -> str:
        return f"<Subscription #{self.id} {self.key} {self.protocol or '-'} dropped={self.dropped}>"
