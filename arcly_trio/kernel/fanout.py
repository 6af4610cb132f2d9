"""Fan-out: handing a stream's frames to its subscribers, and the lag policy, in one place.

Every subscriber of a stream is a :class:`Subscriber`: the kernel's record of it (who, which
protocol, what it missed) around a :class:`Sink`, the thing its frames go into. A sink takes
frames without ever waiting: it says how many of the offered frames it took, and the rest are
the subscriber's problem, never the publisher's. :class:`~.subscription.Subscription` is the
sink Python code iterates; protocol workers may bring their own (a socket written directly).

The policy (:class:`Fanout`):

* A subscriber that joins gets the GOP cache's replay first (configs, then the current GOP from
  its keyframe), given to its sink whole. Without a cached GOP on a stream with video it
  *starts*: it waits for the next keyframe of the primary video track (any audio frame on a
  stream without video) and gets the configs published meanwhile right before it.
* Every video track needs a keyframe before its frames are delivered: a subscriber keeps the
  set of video tracks it is *synced* on (it got a keyframe of them since its last start), and a
  frame of another video track is skipped until that track's keyframe. So a secondary track of a
  multitrack publisher, a track that appears later, or a first session that starts mid-GOP never
  reaches a decoder without its keyframe.
* A subscriber whose sink does not take a frame *lags*: from that frame on it drops everything
  until the next primary keyframe. Right before that keyframe it gets the configs published
  since its gap began (still current ones only), then the keyframe, and it is live again, synced
  on the primary track only (the other tracks wait for their own keyframes).
* When a new publish session starts on the stream (a takeover, a publisher back within the
  reconnect grace), every subscriber starts again, as a joiner without a cached GOP does: it
  waits for the new session's first keyframe and gets its configs right before it, so no decoder
  is ever fed a new publisher's frames with the old one's configs, or mid-GOP.
* Every publish session that delivers a frame is announced to every sink present, in band: the
  sink's ``start_session`` is given a :class:`SessionStart` (the session's number on the stream
  and its :class:`~.qos.StreamInfo`) right before the first frame of that session is offered to
  it, so a consumer that cuts per session (a recording file, an HLS discontinuity) knows where
  the boundary is, even when the new session's frames look like a continuation of the old
  one's (no new configs, timestamps that keep going). A subscriber that joins mid-session is
  given the current session's announcement before its replay. A session that delivers no frame
  is never announced. The announcement costs nothing per frame: it is one check per batch.
* Counting, exactly: :attr:`Subscriber.dropped` counts every frame offered to the subscriber
  after it joined that it will never receive, except the frames skipped while it starts (before
  its first sync frame after a join or a session switch) and the frames of a video track of
  which no keyframe has been offered to it since then, nor given in its replay (those it could
  not have decoded anyway: no keyframe came yet). Configs given again are not counted.
* Bridged frames (:attr:`~arcly_trio.core.frame.Frame.bridged`: the audio bridge's AAC of an
  Opus stream, :meth:`~.stream.Stream.deliver_bridged`) come in batches of their own and are
  offered only to the sinks whose ``bridged_audio`` attribute is true (legacy egress: FLV,
  RTMP players that did not announce Opus, HLS-TS), in their replay and resumption configs
  too; every other sink never sees one. Until a stream's first bridged batch this costs
  nothing (one flag per batch, none per subscriber or frame).
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
from typing import Any, Protocol

import attrs

from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.core.keys import Credentials, StreamKey
from arcly_trio.kernel.events import StreamEvent, SubscriberEvicted, SubscriberLagged, SubscriberResumed
from arcly_trio.kernel.gop import GopCache
from arcly_trio.kernel.qos import StreamInfo

__all__ = ["EndReason", "SessionStart", "Sink", "Subscriber", "Fanout"]

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
    KICKED = "kicked"
    """An operator ended it (``DELETE /api/sessions/{id}``, ``Engine.kick``)."""
    IDLE = "idle"
    """A player that polls (HLS, DASH) made no request within its session's idle timeout (see
    :mod:`.polled`)."""
    SESSION_LIMIT = "session-limit"
    """A polling player's session was the least recently active one when its address, or the
    server, reached its cap on such sessions (see :mod:`.polled`)."""


@attrs.frozen
class SessionStart:
    """The announcement that a publish session starts on a stream (see the module docstring).

    ``number`` counts the publish sessions of the stream from 1 (a session that delivered no
    frame keeps its number, so numbers may skip); ``info`` is the session's
    :class:`~.qos.StreamInfo` (protocol, peer, ``started_at``). Immutable; one object per
    session, shared by every sink.
    """

    number: int
    info: StreamInfo


class Sink(Protocol):
    """Where a subscriber's frames go. Called by the stream's task only; never waits.

    * ``replay(frames)``: the frames a subscriber gets when it joins (configs and the cached
      GOP); the sink takes them all, whatever its capacity (they are shared frames).
    * ``offer(frames, start)``: take ``frames[start:]`` in order, as many as there is room for;
      return the index of the first frame not taken (``len(frames)`` if all were).
    * ``close(reason)``: no more frames will come; the sink delivers what it holds, then ends.
    * ``start_session(start)``: the frames offered from now on belong to the publish session
      ``start`` (see :class:`SessionStart`); called before ``replay`` for a subscriber that joins
      mid-session, and before the first ``offer`` of each session that follows.
    """

    def start_session(self, start: SessionStart) -> None: ...

    def replay(self, frames: list[Frame]) -> None: ...

    def offer(self, frames: Sequence[Frame], start: int) -> int: ...

    def close(self, reason: EndReason) -> None: ...


class Subscriber:
    """The kernel's record of one subscriber of a stream, and its lag state.

    Read-only for everyone but the :class:`Fanout`: ``dropped`` (frames it will never receive
    because it was too slow, exactly: see the module docstring), ``lag_episodes``,
    ``end_reason``, ``joined_seq`` (the stream sequence number of the first live frame it was
    offered), ``left_seq`` (the first one it was not, once it has left; ``None`` while it is
    attached), ``join_state`` (``"live"`` when it joined on a cached keyframe or on a stream
    without video yet, ``"starting"`` when it had to wait for the next keyframe) and ``bytes``
    (the media payload bytes its sink took, replay included).
    """

    __slots__ = (
        "id",
        "key",
        "credentials",
        "protocol",
        "sink",
        "offer",
        "joined_seq",
        "left_seq",
        "join_state",
        "dropped",
        "lag_episodes",
        "end_reason",
        "bytes",
        "_state",
        "_gap_start",
        "_gap_dropped",
        "_synced",
        "_ever_synced",
    )

    def __init__(self, subscriber_id: int, key: StreamKey, credentials: Credentials, protocol: str, sink: Sink) -> None:
        self.id = subscriber_id
        self.key = key
        self.credentials = credentials
        self.protocol = protocol
        self.sink = sink
        self.offer = sink.offer  # bound once: the fan-out calls it for every batch
        self.joined_seq = 0
        self.left_seq: int | None = None
        self.join_state = "live"
        self.dropped = 0
        self.lag_episodes = 0
        self.end_reason: EndReason | None = None
        self.bytes = 0
        self._state = LIVE
        self._gap_start = 0  # seq of the first frame missed (while starting: the first after joining)
        self._gap_dropped = 0
        self._synced: set[int] = set()  # video tracks it may be given frames of (a keyframe came)
        self._ever_synced: set[int] = set()  # ... at some point since its last start

    @property
    def lagging(self) -> bool:
        return self._state == LAGGING

    @property
    def starting(self) -> bool:
        """Joined without a cached GOP and still waiting for its first keyframe."""
        return self._state == STARTING

    def __repr__(self) -> str:
        return f"<Subscriber #{self.id} {self.key} {self.protocol or '-'} dropped={self.dropped}>"


def _payload(frames: Sequence[Frame]) -> int:
    """The payload bytes of ``frames``."""
    return sum(len(frame.payload) for frame in frames)


def _run_end(batch: Sequence[Frame], start: int, synced: set[int]) -> int:
    """The end of the run of frames from ``start`` that a live subscriber synced on the video
    tracks ``synced`` can take as they are: up to a non-key frame of a video track it is not
    synced on (a keyframe of such a track syncs it)."""
    gained: set[int] = set()
    end = start
    last = len(batch)
    while end < last:
        frame = batch[end]
        if frame.kind is _VIDEO and not frame.config and frame.track not in synced and frame.track not in gained:
            if not frame.keyframe:
                break
            gained.add(frame.track)
        end += 1
    return end


class Fanout:
    """The subscribers of one stream and the lag policy (see the module docstring)."""

    def __init__(
        self,
        key: StreamKey,
        gop: GopCache,
        lag_budget: int | None,
        notify: Callable[[StreamEvent], None],
        clock: Callable[[], float],
    ) -> None:
        self.key = key
        self.gop = gop
        self.lag_budget = lag_budget
        self._notify = notify
        self._clock = clock
        self.subscribers: list[Subscriber] = []
        self.drops_total = 0
        self.last_seq = 0
        """The sequence number of the last frame delivered."""
        self.session: SessionStart | None = None
        """The publish session whose frames are delivered now (announced to every sink)."""
        self._sessions = 0
        self._pending: SessionStart | None = None  # announced with the next batch
        self._evicted: list[Subscriber] = []
        self.bridging = False
        """Whether bridged frames were ever delivered (then joins and resumptions filter them)."""

    # ---------------------------------------------------------------- membership

    def add(self, sub: Subscriber, next_seq: int) -> None:
        """Attach ``sub``: its sink gets the replay now, live frames from ``next_seq`` on."""
        replay = self.gop.replay()
        sub.joined_seq = next_seq
        sub._gap_start = next_seq
        if replay.on_keyframe or self.gop.primary is None:
            sub._state = LIVE
            sub._synced = set(replay.synced_tracks)
            sub.join_state = "live"
        else:
            sub._state = STARTING
            sub._synced = set()
            sub.join_state = "starting"
        sub._ever_synced = set(sub._synced)
        self.subscribers.append(sub)
        if self.session is not None:
            sub.sink.start_session(self.session)
        frames = replay.frames
        if self.bridging and not _takes_bridged(sub):
            frames = [frame for frame in frames if not frame.bridged]
        sub.sink.replay(frames)
        sub.bytes += _payload(frames)

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

    def new_session(self, info: StreamInfo) -> SessionStart:
        """A new publish session (described by ``info``) starts: when its first frame comes, it
        is announced to every sink and everyone present starts again (not on the stream's first
        session: who joined before any frame gets them all, each video track from its first
        keyframe)."""
        self._sessions += 1
        self._pending = SessionStart(self._sessions, info)
        return self._pending

    def _start_session(self, start: SessionStart, first_seq: int) -> None:
        """Announce ``start`` to every sink, before the session's first frame; everyone present
        starts again if frames of an earlier session were delivered."""
        self._pending = None
        self.session = start
        restart = self.last_seq > 0
        for sub in self.subscribers:
            if restart and sub._state != EVICTED:
                sub._state = STARTING
                sub._gap_start = first_seq
                sub._synced = set()
                sub._ever_synced = set()
            sub.sink.start_session(start)

    def close_all(self, reason: EndReason) -> list[Subscriber]:
        gone = list(self.subscribers)
        for sub in gone:
            self.remove(sub, reason)
        self._evicted.clear()
        return gone

    # ----------------------------------------------------------------- the hot path

    def deliver(self, batch: Sequence[Frame], first_seq: int, bridged: bool = False) -> list[Subscriber]:
        """Push ``batch`` (frames ``first_seq``, ``first_seq + 1``...) into the GOP cache and
        offer it to every subscriber. Returns the subscribers evicted by this batch (already
        removed and closed).

        Live subscribers take the whole batch in one ``offer``. The others (lagging, starting,
        waiting for a secondary keyframe, or falling behind in this very batch) are walked frame
        by frame in step with the GOP cache, so the configs a resuming subscriber is given are
        exactly those current at its keyframe; a frame it can take goes out with the run of
        frames after it that it can take as they are, in one offer (an egress writes it at
        once).

        ``bridged``: the batch is bridged frames, offered only to the sinks that take them.
        """
        gop = self.gop
        last = len(batch)
        if self._pending is not None:
            self._start_session(self._pending, first_seq)
        # The video tracks of this batch: a live subscriber synced on all of them takes the whole
        # batch at once; the others go frame by frame.
        tracks = {frame.track for frame in batch if frame.kind is _VIDEO and not frame.config}
        size = _payload(batch)
        slow: list[list[Any]] = []  # [subscriber, index of the next frame to walk for it]
        subscribers = self.subscribers
        if bridged:
            self.bridging = True
            subscribers = [sub for sub in subscribers if _takes_bridged(sub)]
        for sub in subscribers:
            if sub._state == LIVE and tracks <= sub._synced:
                taken = sub.offer(batch, 0)
                if taken == last:
                    sub.bytes += size
                    continue
                sub.bytes += _payload(batch[:taken])
                self._lag(sub, batch[taken], first_seq + taken)
                slow.append([sub, taken + 1])
            else:
                slow.append([sub, 0])
        seq = first_seq
        for index in range(last):
            gop.push(seq, batch[index])
            for entry in slow:
                if index >= entry[1]:
                    # Past this frame, or past the run it was offered with it.
                    entry[1] = self._offer_slow(entry[0], batch, index, seq, gop)
            seq += 1
        self.last_seq = seq - 1
        evicted = self._evicted
        if evicted:
            self._evicted = []
            for sub in evicted:
                self.remove(sub, EndReason.EVICTED)
        return evicted

    def _offer_slow(self, sub: Subscriber, batch: Sequence[Frame], index: int, seq: int, gop: GopCache) -> int:
        """Offer frame ``index`` to a subscriber that is lagging, starting, evicted, not synced
        on every track of the batch, or that fell behind earlier in this very batch. Returns the
        index of the next frame of the batch to walk for it: further on when the frame went
        out with the run of frames after it that the subscriber can take as they are (one
        offer, one write for an egress)."""
        following = index + 1
        state = sub._state
        if state == EVICTED:
            return following
        frame = batch[index]
        if frame.keyframe and frame.kind is _VIDEO and not frame.config and state != STARTING:
            sub._ever_synced.add(frame.track)  # offered: from here on its frames count if missed
        if state == LIVE:
            if frame.kind is _VIDEO and not frame.config and frame.track not in sub._synced and not frame.keyframe:
                self._missed(sub, frame, seq)
                return following
            run = batch[index : _run_end(batch, index, sub._synced)]
            return index + self._account_run(sub, run, sub.offer(run, 0), seq)
        if not gop.is_sync(frame):
            self._missed(sub, frame, seq)
            return following
        # A sync point: the configs published since the gap began, then the frame, then the run
        # of frames after it that the subscriber, synced on the primary track, can take.
        pending = gop.configs_since(sub._gap_start)
        if self.bridging and not _takes_bridged(sub):
            pending = [entry for entry in pending if not entry[1].bridged]
        given = [entry[1] for entry in pending]
        given.append(frame)
        synced = len(given)
        primary = gop.primary
        now_synced = {primary} if primary is not None else set()
        run = batch[following : _run_end(batch, following, now_synced)]
        taken = sub.offer(given + run if run else given, 0)
        sub.bytes += _payload(given[:taken])
        if taken < synced:
            # What it took of the configs is not missed (any more); the rest and the frame are.
            if state == LAGGING:
                self._uncount(sub, taken)
            sub._gap_start = pending[taken][0] if taken < len(pending) else seq
            self._missed(sub, frame, seq)
            return following
        if state == LAGGING:
            self._uncount(sub, len(pending))
        sub._state = LIVE
        sub._synced = now_synced
        if state == STARTING:
            sub._ever_synced = set(sub._synced)
        else:
            log.debug("subscriber #%d of %s resumed after dropping %d", sub.id, self.key, sub._gap_dropped)
            self._notify(SubscriberResumed(self.key, self._clock(), sub.id, sub._gap_dropped, sub.dropped))
        if not run:
            return following
        return following + self._account_run(sub, run, taken - synced, seq + 1)

    def _account_run(self, sub: Subscriber, run: Sequence[Frame], taken: int, seq: int) -> int:
        """``sub`` (live) took ``taken`` frames of ``run`` (frames ``seq``...: see
        :func:`_run_end`): count their bytes, sync it on the tracks whose keyframes it took,
        and make it lag from the first frame it did not take. Returns how far into ``run`` to
        walk on from."""
        sub.bytes += _payload(run[:taken])
        synced = sub._synced
        for position, given in enumerate(run[: taken + 1]):
            if given.keyframe and given.kind is _VIDEO and not given.config:
                sub._ever_synced.add(given.track)  # offered: from here on its frames count if missed
                if position < taken:
                    synced.add(given.track)
        if taken < len(run):
            self._lag(sub, run[taken], seq + taken)
            return taken + 1
        return taken

    # -------------------------------------------------------------- accounting

    def _counts(self, sub: Subscriber, frame: Frame) -> bool:
        """Whether missing ``frame`` counts: not while starting, and not for a video track of
        which no keyframe was offered since the subscriber started (see the module docstring)."""
        if sub._state == STARTING:
            return False
        return not (frame.kind is _VIDEO and not frame.config and frame.track not in sub._ever_synced)

    def _lag(self, sub: Subscriber, frame: Frame, seq: int) -> None:
        """``sub``'s sink did not take ``frame``: it lags from here to the next primary keyframe."""
        sub._state = LAGGING
        sub._gap_start = seq
        sub._gap_dropped = 0
        sub.lag_episodes += 1
        counted = self._counts(sub, frame)
        if counted:
            sub.dropped += 1
            sub._gap_dropped += 1
            self.drops_total += 1
        log.debug("subscriber #%d of %s is lagging (dropped %d so far)", sub.id, self.key, sub.dropped)
        self._notify(SubscriberLagged(self.key, self._clock(), sub.id, sub.dropped))
        if counted:
            self._check_budget(sub, seq)

    def _missed(self, sub: Subscriber, frame: Frame, seq: int) -> None:
        if not self._counts(sub, frame):
            return
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
            log.warning(
                "evicting subscriber #%d of %s: %d frames dropped, lag budget %d", sub.id, self.key, sub.dropped, budget
            )
            self._notify(SubscriberEvicted(self.key, self._clock(), sub.id, sub.dropped, budget))


def _takes_bridged(sub: Subscriber) -> bool:
    """Whether ``sub``'s sink takes bridged frames (its optional ``bridged_audio``)."""
    return bool(getattr(sub.sink, "bridged_audio", False))
