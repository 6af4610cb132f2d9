"""Fan-out: handing a stream's frames to its subscribers, and the lag policy, in one place.

Every subscriber of a stream is a :class:`Subscriber`: the kernel's record of it (who, which
protocol, what it missed) around a :class:`Sink`, the thing its frames go into. A sink takes
frames without ever waiting: it says how many of the offered frames it took, and the rest are
the subscriber's problem, never the publisher's. :class:`~.subscription.Subscription` is the
sink Python code iterates; protocol workers may bring their own (a socket written directly).

The policy (:class:`Fanout`):

* A subscriber that joins gets the GOP cache's replay first (configs, then the current GOP from
  its keyframe), given to its sink whole. Without a cached GOP it *starts* on the next keyframe
  of the primary video track (any audio frame on a stream without video); what it skips before
  that is not counted.
* A subscriber whose sink does not take a frame *lags*: from that frame on it drops everything
  until the next primary keyframe. Right before that keyframe it gets the configs published
  since its gap began (still current ones only), then the keyframe, and it is live again. Every
  frame it will never receive is counted in :attr:`Subscriber.dropped` (configs given again are
  not), exactly.
* Secondary video tracks (multitrack) need their own keyframe: after a join or a resumption,
  a secondary track's frames are skipped until that track's keyframe (counted after a lag, not
  after a join).
* When a new publish session starts on the stream (a takeover, a publisher back within the
  reconnect grace), every subscriber starts again as if it had just joined without a cached
  GOP: it waits for the new session's first keyframe and gets its configs right before it, so
  no decoder is ever fed a new publisher's frames with the old one's configs, or mid-GOP.
  A subscriber whose sink does not take that keyframe (still full from before) lags from it,
  counted, like any other.
* Past the application's lag budget a subscriber is evicted: its sink is closed with
  ``EndReason.EVICTED``.
* The start of a lag, the resumption and an eviction are told through ``notify`` (the event
  feed and observer) and logged.

Error policy: a sink's exception is a bug in that sink; the stream task that calls into it is
what fails (and ends the stream loudly). Nothing here waits or raises on its own.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from ..core.frame import Frame, FrameKind
from ..core.keys import Credentials, StreamKey
from .events import StreamEvent, SubscriberEvicted, SubscriberLagged, SubscriberResumed
from .gop import GopCache

__all__ = ["EndReason", "Sink", "Subscriber", "Fanout"]

log = logging.getLogger("arcly_trio.stream")

_VIDEO = FrameKind.VIDEO

# Delivery states, as small ints because the fan-out loop tests them per frame.
LIVE = 0
LAGGING = 1  # dropped frames; resumes on the next primary keyframe; drops are counted
STARTING = 2  # joined with no cached GOP; starts on the next primary keyframe; nothing counted
EVICTED = 3


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


class Sink(Protocol):
    """Where a subscriber's frames go. Called by the stream's task only; never waits.

    * ``replay(frames)``: the frames a subscriber gets when it joins (configs and the cached
      GOP); the sink takes them all, whatever its capacity (they are shared frames).
    * ``offer(frames, start)``: take ``frames[start:]`` in order, as many as there is room for;
      return the index of the first frame not taken (``len(frames)`` if all were).
    * ``close(reason)``: no more frames will come; the sink delivers what it holds, then ends.
    """

    def replay(self, frames: list[Frame]) -> None: ...

    def offer(self, frames: Sequence[Frame], start: int) -> int: ...

    def close(self, reason: EndReason) -> None: ...


class Subscriber:
    """The kernel's record of one subscriber of a stream, and its lag state.

    Read-only for everyone but the :class:`Fanout`: ``dropped`` (frames it will never receive
    because it was too slow, exactly), ``lag_episodes``, ``end_reason``, ``joined_seq`` (the
    stream sequence number of the first live frame it was offered) and ``left_seq`` (the first
    one it was not, once it has left; ``None`` while it is attached).
    """

    __slots__ = ("id", "key", "credentials", "protocol", "sink", "offer", "joined_seq", "left_seq", "dropped",
                 "lag_episodes", "end_reason", "_state", "_gap_start", "_gap_dropped", "_pending",
                 "_pending_counted")

    def __init__(self, subscriber_id: int, key: StreamKey, credentials: Credentials, protocol: str,
                 sink: Sink) -> None:
        self.id = subscriber_id
        self.key = key
        self.credentials = credentials
        self.protocol = protocol
        self.sink = sink
        self.offer = sink.offer  # bound once: the fan-out calls it for every batch
        self.joined_seq = 0
        self.left_seq: int | None = None
        self.dropped = 0
        self.lag_episodes = 0
        self.end_reason: EndReason | None = None
        self._state = LIVE
        self._gap_start = 0  # seq of the first frame missed (while starting: the first after joining)
        self._gap_dropped = 0
        self._pending: frozenset[int] | set[int] = frozenset()  # secondary tracks waiting for a keyframe
        self._pending_counted = False  # whether frames skipped on pending tracks are counted

    @property
    def lagging(self) -> bool:
        return self._state == LAGGING

    @property
    def starting(self) -> bool:
        """Joined without a cached GOP and still waiting for its first keyframe."""
        return self._state == STARTING

    def __repr__(self) -> str:
        return f"<Subscriber #{self.id} {self.key} {self.protocol or '-'} dropped={self.dropped}>"


class Fanout:
    """The subscribers of one stream and the lag policy (see the module docstring)."""

    def __init__(self, key: StreamKey, gop: GopCache, lag_budget: int | None,
                 notify: Callable[[StreamEvent], None], clock: Callable[[], float]) -> None:
        self.key = key
        self.gop = gop
        self.lag_budget = lag_budget
        self._notify = notify
        self._clock = clock
        self.subscribers: list[Subscriber] = []
        self.drops_total = 0
        self.last_seq = 0
        """The sequence number of the last frame delivered."""
        self._evicted: list[Subscriber] = []

    # ---------------------------------------------------------------- membership

    def add(self, sub: Subscriber, next_seq: int) -> None:
        """Attach ``sub``: its sink gets the replay now, live frames from ``next_seq`` on."""
        replay = self.gop.replay()
        sub.joined_seq = next_seq
        sub._gap_start = next_seq
        started = replay.on_keyframe or self.gop.primary is None
        sub._state = LIVE if started else STARTING
        sub._pending = replay.pending_tracks if started else frozenset()
        sub._pending_counted = False
        self.subscribers.append(sub)
        sub.sink.replay(replay.frames)

    def remove(self, sub: Subscriber, reason: EndReason) -> bool:
        """Detach ``sub`` and close its sink with ``reason`` (idempotent: False if gone)."""
        try:
            self.subscribers.remove(sub)
        except ValueError:
            return False
        if sub.end_reason is None:
            sub.end_reason = reason
        if sub.left_seq is None:
            sub.left_seq = self.last_seq + 1
        sub.sink.close(reason)
        return True

    def new_session(self, next_seq: int) -> None:
        """A new publish session starts with frame ``next_seq``: everyone waits for its keyframe
        (not on the stream's first session: who joined before any frame gets them all)."""
        if not self.last_seq:
            return
        for sub in self.subscribers:
            if sub._state != EVICTED:
                sub._state = STARTING
                sub._gap_start = next_seq
                sub._pending = frozenset()

    def close_all(self, reason: EndReason) -> list[Subscriber]:
        gone = list(self.subscribers)
        for sub in gone:
            self.remove(sub, reason)
        self._evicted.clear()
        return gone

    # ----------------------------------------------------------------- the hot path

    def deliver(self, batch: Sequence[Frame], first_seq: int) -> list[Subscriber]:
        """Push ``batch`` (frames ``first_seq``, ``first_seq + 1``...) into the GOP cache and
        offer it to every subscriber. Returns the subscribers evicted by this batch (already
        removed and closed).

        Live subscribers take the whole batch in one ``offer``. The others (lagging, starting,
        waiting for a secondary keyframe, or falling behind in this very batch) are walked frame
        by frame in step with the GOP cache, so the configs a resuming subscriber is given are
        exactly those current at its keyframe; once one is live again, it is offered the rest
        of the batch in one go (an egress writes it at once).
        """
        gop = self.gop
        last = len(batch)
        slow: list[list] = []  # [subscriber, index of the next frame to walk]
        for sub in self.subscribers:
            if sub._state == LIVE and not sub._pending:
                taken = sub.offer(batch, 0)
                if taken == last:
                    continue
                self._lag(sub, first_seq + taken)
                slow.append([sub, taken + 1])
            else:
                slow.append([sub, 0])
        seq = first_seq
        for index in range(last):
            gop.push(seq, batch[index])
            for entry in slow:
                sub = entry[0]
                if index < entry[1]:
                    continue
                following = self._offer_slow(sub, batch, index, seq, gop)
                if following > index + 1:  # it resumed and took the rest of the batch with it
                    entry[1] = following
                elif sub._state == LIVE and not sub._pending and following < last:
                    taken = sub.offer(batch, following)
                    if taken < last:
                        self._lag(sub, first_seq + taken)
                    entry[1] = taken + 1
            seq += 1
        self.last_seq = seq - 1
        evicted = self._evicted
        if evicted:
            self._evicted = []
            for sub in evicted:
                self.remove(sub, EndReason.EVICTED)
        return evicted

    def _offer_slow(self, sub: Subscriber, batch: Sequence[Frame], index: int, seq: int, gop: GopCache) -> int:
        """Offer frame ``index`` to a subscriber that is lagging, starting, evicted or waiting
        for a secondary track's keyframe. Returns the index of the next frame of the batch to
        walk for it: past the batch's end when it resumed on this frame and was offered the
        rest of the batch with it."""
        following = index + 1
        state = sub._state
        if state == EVICTED:
            return following
        frame = batch[index]
        if state == LIVE:  # only pending secondary tracks make a live subscriber come here
            if frame.kind is _VIDEO and not frame.config and frame.track in sub._pending:
                if not frame.keyframe:
                    if sub._pending_counted:
                        self._drop(sub, seq)
                    return following
                pending = set(sub._pending)
                pending.discard(frame.track)
                sub._pending = pending
            if sub.offer(batch[index:following], 0) == 0:
                self._lag(sub, seq)
            return following
        if not gop.is_sync(frame):
            if state == LAGGING:
                self._drop(sub, seq)
            return following
        # A sync point: the configs published since the gap began, then the frame; then the rest
        # of the batch in the same offer, unless secondary tracks will need their keyframes.
        pending = gop.configs_since(sub._gap_start)
        given = [entry[1] for entry in pending]
        given.append(frame)
        synced = len(given)
        secondary = gop.video_tracks - {gop.primary} if gop.primary is not None else set()
        if not secondary:
            given += batch[following:]
        taken = sub.offer(given, 0)
        if taken < synced:
            if state == LAGGING:
                # What it took of the configs is not missed; the rest and the frame are.
                self._uncount(sub, taken)
                self._drop(sub, seq)
            else:
                # Too slow to take the keyframe it was waiting for (a subscriber that was live
                # when a new session began, its queue still full): from here on it lags, and
                # what it misses is counted.
                self._lag(sub, seq)
            sub._gap_start = pending[taken][0] if taken < len(pending) else seq
            return following
        sub._pending = frozenset(secondary)
        sub._pending_counted = state == LAGGING
        sub._state = LIVE
        if state == LAGGING:
            self._uncount(sub, len(pending))
            log.debug("subscriber #%d of %s resumed after dropping %d", sub.id, self.key, sub._gap_dropped)
            self._notify(SubscriberResumed(self.key, self._clock(), sub.id, sub._gap_dropped, sub.dropped))
        if secondary:
            return following
        following += taken - synced
        if following < len(batch):  # it took part of the rest: it lags from the first it did not
            self._lag(sub, seq + taken - synced + 1)
            return following + 1
        return following

    # -------------------------------------------------------------- accounting

    def _lag(self, sub: Subscriber, seq: int) -> None:
        sub._state = LAGGING
        sub._gap_start = seq
        sub._gap_dropped = 1
        sub.dropped += 1
        sub.lag_episodes += 1
        self.drops_total += 1
        log.debug("subscriber #%d of %s is lagging (dropped %d so far)", sub.id, self.key, sub.dropped)
        self._notify(SubscriberLagged(self.key, self._clock(), sub.id, sub.dropped))
        self._check_budget(sub, seq)

    def _drop(self, sub: Subscriber, seq: int) -> None:
        sub.dropped += 1
        sub._gap_dropped += 1
        self.drops_total += 1
        self._check_budget(sub, seq)

    def _uncount(self, sub: Subscriber, n: int) -> None:
        sub.dropped -= n
        sub._gap_dropped -= n
        self.drops_total -= n

    def _check_budget(self, sub: Subscriber, seq: int) -> None:
        budget = self.lag_budget
        if budget is not None and sub.dropped > budget and sub._state != EVICTED:
            sub._state = EVICTED
            sub.left_seq = seq + 1  # nothing after this frame is offered, or counted
            self._evicted.append(sub)
            log.warning("evicting subscriber #%d of %s: %d frames dropped, lag budget %d",
                        sub.id, self.key, sub.dropped, budget)
            self._notify(SubscriberEvicted(self.key, self._clock(), sub.id, sub.dropped, budget))
