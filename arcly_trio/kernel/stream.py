"""A live stream: one task that fans a publisher's frames out to its subscribers.

Shape: each publish session owns a memory channel. Its send side (clonable, one clone per
ingest track if the protocol wants) is the :class:`Publisher`; its receive side is drained by
the stream's task, which hands every frame to each subscriber's bounded channel with
``send_nowait``. The publisher waits only for the stream task (when its ingest queue is full),
never for a subscriber.

Slow subscribers: a full channel makes that subscriber drop frames until the next keyframe
(configs it missed are given to it again right before that keyframe). Every dropped frame is
counted; the start of a lag episode, the resumption and an eviction past the lag budget are told
to the observer and the application's event feed, and logged.

Lifetime: the stream ends when its publisher has gone and the reconnect grace has passed, or
when no frame arrives within the idle timeout (a cancel scope deadline pushed forward on every
batch of frames; counted from creation if nothing is ever sent). Every exit path, including
cancellation when the engine stops and a bug in this module, ends the publish session exactly
once, ends every subscriber with a reason and removes the stream from its application.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from ..core.errors import PublishEnded, PublisherReplaced, StreamIdleReaped
from .events import (
    StreamClosed,
    StreamEvent,
    StreamPublished,
    StreamReaped,
    StreamUnpublished,
    SubscriberEvicted,
    SubscriberJoined,
    SubscriberLagged,
    SubscriberLeft,
    SubscriberResumed,
)
from ..core.frame import Frame, FrameKind
from .gop import GopCache
from ..core.keys import Credentials, StreamKey
from .qos import RateMeter, StreamInfo, StreamStats, describe_video_config
from .subscription import LAGGING, LIVE, EndReason, Subscription

if TYPE_CHECKING:
    from .application import Application

__all__ = ["Stream", "PublishSession", "Publisher"]

log = logging.getLogger("arcly_trio.stream")

EVICTED = 3
MAX_BATCH = 512
AUDIO_HOLD_SECONDS = 0.1
_VIDEO = FrameKind.VIDEO
_AUDIO = FrameKind.AUDIO


class Publisher:
    """The publishing side of a stream: ``send`` frames into it.

    ``send`` never waits for a subscriber; it waits only if the stream's ingest queue is full.
    After the session has ended it raises :class:`~.errors.PublishEnded` (or the subclass that
    says why: ``PublisherReplaced``, ``StreamIdleReaped``).

    ``clone()`` gives another publisher on the same session, for multi-track ingest from several
    tasks. The session ends when the last clone is closed. Clones are async context managers.
    """

    def __init__(self, session: PublishSession, send: trio.MemorySendChannel[Frame]) -> None:
        self._session = session
        self._send = send
        self._closed = False
        session.clones.add(self)

    @property
    def key(self) -> StreamKey:
        return self._session.stream.key

    @property
    def info(self) -> StreamInfo:
        """Descriptive info of the stream; protocol adapters fill in resolution and metadata."""
        return self._session.stream.info

    @property
    def active(self) -> bool:
        return self._session.active and not self._closed

    async def send(self, frame: Frame) -> None:
        """Queue ``frame`` for the stream's subscribers."""
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            self._send.send_nowait(frame)
            return
        except trio.WouldBlock:
            pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise self._session.ended_error() from None
        try:
            await self._send.send(frame)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise self._session.ended_error() from None

    def clone(self) -> Publisher:
        """Another publisher on the same session (for another track or task)."""
        if self._closed:
            raise self._session.ended_error()
        try:
            return Publisher(self._session, self._send.clone())
        except trio.ClosedResourceError:
            raise self._session.ended_error() from None

    def close(self) -> None:
        """Close this clone; closing the last one ends the publish session. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._send.close()
        session = self._session
        session.clones.discard(self)
        if not session.clones:
            session.finish("closed")

    async def aclose(self) -> None:
        self.close()
        await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> Publisher:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()


class PublishSession:
    """One publisher's tenure on a stream, from ``publish`` until its end (exactly once)."""

    def __init__(
        self,
        stream: Stream,
        credentials: Credentials,
        protocol: str,
        capacity: int,
        release: Callable[[], None],
    ) -> None:
        self.stream = stream
        self.credentials = credentials
        self.protocol = protocol
        send, self.receive = trio.open_memory_channel[Frame](capacity)
        self.clones: set[Publisher] = set()
        self.publisher = Publisher(self, send)
        self.scope = trio.CancelScope()
        self.active = True
        self.end_reason: str | None = None
        self.end_error: PublishEnded | None = None
        self._release = release

    def ended_error(self) -> PublishEnded:
        if self.end_error is not None:
            return self.end_error
        key = self.stream.key
        return PublishEnded(key.app, key.name, self.end_reason or "publisher closed")

    def finish(self, reason: str, error: PublishEnded | None = None) -> None:
        """End the session (idempotent). With ``error`` the kernel is ending it: every clone is
        closed (frames already sent are still delivered), further sends fail with ``error`` and
        the publisher's block is cancelled and raises ``error`` when it exits."""
        if not self.active:
            return
        self.active = False
        self.end_reason = reason
        self.end_error = error
        self._release()
        self.stream._session_finished(self, reason)
        if error is not None:
            for clone in list(self.clones):
                clone._closed = True
                clone._send.close()
            self.clones.clear()
            self.scope.cancel()

    def abort(self, reason: str = "failed") -> None:
        """The publisher failed: close every clone. Frames already sent are still delivered."""
        if self.active:
            self.finish(reason)
        for clone in list(self.clones):
            clone.close()


class Stream:
    """One live stream of an application (see the module docstring)."""

    def __init__(self, app: Application, key: StreamKey, idle_timeout: float | None) -> None:
        spec = app.spec
        self.key = key
        self._app = app
        self._spec = spec
        self._notify = app.notify
        self._frame_hook = app.frame_hook
        self._idle_timeout = idle_timeout
        deadline = trio.current_time() + idle_timeout if idle_timeout else math.inf
        self._idle_scope = trio.CancelScope(deadline=deadline)
        self.gop = GopCache(spec.gop_cache_frames, spec.gop_cache_bytes)
        self.has_video = False
        self.session: PublishSession | None = None
        self._feeding: deque[PublishSession] = deque()
        self._arrived: trio.Event | None = None
        self._subs: list[Subscription] = []
        self._evicted: list[Subscription] = []
        self._seq = 0
        self.video = RateMeter()
        self.audio = RateMeter()
        self.drops_total = 0
        self.info = StreamInfo()
        self.created_at = trio.current_time()
        self.closed = False
        self._shutting_down = False

    # ----------------------------------------------------------------- views

    @property
    def publishing(self) -> bool:
        return self.session is not None

    @property
    def next_seq(self) -> int:
        """The sequence number the next published frame will get."""
        return self._seq + 1

    @property
    def subscribers(self) -> list[Subscription]:
        return list(self._subs)

    def stats(self) -> StreamStats:
        now = trio.current_time()
        vfps, vbps = self.video.rate(now)
        afps, abps = self.audio.rate(now)
        by_protocol: dict[str, int] = {}
        for sub in self._subs:
            by_protocol[sub.protocol] = by_protocol.get(sub.protocol, 0) + 1
        return StreamStats(
            key=self.key,
            publishing=self.publishing,
            info=self.info,
            video_fps=vfps,
            video_bitrate=vbps,
            audio_fps=afps,
            audio_bitrate=abps,
            video_frames_total=self.video.frames_total,
            audio_frames_total=self.audio.frames_total,
            bytes_total=self.video.bytes_total + self.audio.bytes_total,
            subscribers=len(self._subs),
            subscribers_by_protocol=by_protocol,
            drops_total=self.drops_total,
            uptime=now - self.created_at,
        )

    # ------------------------------------------------- sessions (called by the app)

    def attach(self, session: PublishSession) -> None:
        """A new publish session starts feeding this stream (first, takeover or comeback)."""
        self.session = session
        self._feeding.append(session)
        creds = session.credentials
        self.info = StreamInfo(protocol=session.protocol, peer=creds.peer, started_at=time.time())
        self._emit(StreamPublished(self.key, trio.current_time(), session.protocol, creds.peer))
        if self._arrived is not None:
            self._arrived.set()

    def _session_finished(self, session: PublishSession, reason: str) -> None:
        if self.session is session:
            self.session = None
        self._emit(StreamUnpublished(self.key, trio.current_time(), reason))

    def add_subscriber(
        self, subscriber_id: int, credentials: Credentials, protocol: str, capacity: int
    ) -> Subscription:
        replay, on_keyframe = self.gop.replay()
        sub = Subscription(self, subscriber_id, credentials, protocol, capacity, replay, on_keyframe)
        self._subs.append(sub)
        self._emit(SubscriberJoined(self.key, trio.current_time(), sub.id, protocol, credentials.peer))
        return sub

    def remove_subscriber(self, sub: Subscription, reason: EndReason) -> None:
        """Take ``sub`` off the stream (idempotent) and tell everyone once."""
        try:
            self._subs.remove(sub)
        except ValueError:
            return
        sub._close_channel(reason)
        self._emit(
            SubscriberLeft(self.key, trio.current_time(), sub.id, sub.end_reason.value, sub.dropped)  # type: ignore[union-attr]
        )

    # -------------------------------------------------------------- the task

    async def run(self) -> None:
        """The stream's task: pump sessions, wait out the grace, then close."""
        reason = EndReason.SHUTDOWN
        try:
            with self._idle_scope:
                await self._feed()
            if self._shutting_down:
                reason = EndReason.SHUTDOWN
            elif self._idle_scope.cancelled_caught:
                reason = EndReason.REAPED
            else:
                reason = EndReason.STREAM_ENDED
        except trio.Cancelled:
            raise
        except Exception:
            self._app.stream_failed(self)
            log.exception("stream %s failed; ending its publisher and subscribers", self.key)
        finally:
            self._close(reason)

    async def _feed(self) -> None:
        while True:
            while self._feeding:
                session = self._feeding[0]
                self.gop.clear()
                self.has_video = False
                await self._pump(session.receive)
                self._feeding.popleft()
            if not await self._await_publisher():
                return

    async def _await_publisher(self) -> bool:
        grace = self._spec.reconnect_grace
        if grace > 0 and not self._shutting_down:
            self._arrived = trio.Event()
            with trio.move_on_after(grace):
                await self._arrived.wait()
            self._arrived = None
        return bool(self._feeding)

    async def _pump(self, receive: trio.MemoryReceiveChannel[Frame]) -> None:
        """Drain one session's frames in batches and deliver them.

        Audio interleave: on a stream with video, audio frames that arrive after the last video
        frame of a batch are held until the next video frame (at most ``AppSpec.audio_hold``
        frames, and never longer than ``AUDIO_HOLD_SECONDS``), so every subscriber is woken
        once per video frame rather than once per frame. Order is unchanged.
        """
        idle = self._idle_timeout
        scope = self._idle_scope
        hold_limit = self._spec.audio_hold
        # Never offer a subscriber more frames in one go than half its queue holds, so a
        # subscriber that keeps up never drops because of a burst from the publisher.
        max_batch = max(1, min(MAX_BATCH, self._spec.subscriber_queue // 2))
        held: list[Frame] = []
        while True:
            try:
                if held:
                    first: Frame | None = None
                    with trio.move_on_after(AUDIO_HOLD_SECONDS):
                        first = await receive.receive()
                    if first is None:  # nothing within the hold time: let the audio go
                        self._deliver(held, trio.current_time())
                        held = []
                        continue
                    batch = [first]
                else:
                    batch = [await receive.receive()]
            except (trio.EndOfChannel, trio.ClosedResourceError):
                if held:
                    self._deliver(held, trio.current_time())
                return
            try:
                while len(batch) < max_batch:
                    batch.append(receive.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                pass
            now = trio.current_time()
            if idle:
                scope.deadline = now + idle
            if hold_limit and self.has_video:
                if held:
                    batch = held + batch
                    held = []
                cut = len(batch)
                while cut and batch[cut - 1].kind is _AUDIO:
                    cut -= 1
                if 0 < len(batch) - cut < hold_limit:
                    held = batch[cut:]
                    batch = batch[:cut]
                if not batch:
                    continue
            self._deliver(batch, now)

    def _deliver(self, batch: list[Frame], now: float) -> None:
        """The hot path: ingest each frame once, offer it to every subscriber."""
        gop = self.gop
        subs = self._subs
        hook = self._frame_hook
        key = self.key
        info = self.info
        seq = self._seq
        for frame in batch:
            seq += 1
            kind = frame.kind
            if frame.config:  # codec configs and metadata: not media, not counted in QoS
                sync = False
                if kind is _VIDEO:
                    self.has_video = True
                    describe_video_config(info, frame)
            elif kind is _VIDEO:
                self.has_video = True
                self.video.add(now, len(frame.payload))
                sync = frame.keyframe
                if info.video_codec is None:
                    info.video_codec = frame.codec
            elif kind is _AUDIO:
                self.audio.add(now, len(frame.payload))
                sync = not self.has_video
                if info.audio_codec is None:
                    info.audio_codec = frame.codec
            else:
                sync = False
            gop.push(seq, frame)
            if hook is not None:
                hook(key, frame)
            for sub in subs:
                if sub._state:
                    self._offer_slow(sub, frame, seq, sync, now)
                    continue
                try:
                    sub._offer(frame)
                except trio.WouldBlock:
                    self._lag(sub, seq, now)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
        self._seq = seq
        if self._evicted:
            for sub in self._evicted:
                self.remove_subscriber(sub, EndReason.EVICTED)
            self._evicted.clear()

    def _lag(self, sub: Subscription, seq: int, now: float) -> None:
        sub._state = LAGGING
        sub._gap_start = seq
        sub._gap_dropped = 1
        sub.dropped += 1
        sub.lag_episodes += 1
        self.drops_total += 1
        log.debug("subscriber #%d of %s is lagging (dropped %d so far)", sub.id, self.key, sub.dropped)
        self._emit(SubscriberLagged(self.key, now, sub.id, sub.dropped))
        self._check_budget(sub, now)

    def _drop(self, sub: Subscription, now: float) -> None:
        sub.dropped += 1
        sub._gap_dropped += 1
        self.drops_total += 1
        self._check_budget(sub, now)

    def _check_budget(self, sub: Subscription, now: float) -> None:
        budget = self._spec.lag_budget
        if budget is not None and sub.dropped > budget and sub._state != EVICTED:
            sub._state = EVICTED
            self._evicted.append(sub)
            log.warning(
                "evicting subscriber #%d of %s: %d frames dropped, lag budget %d",
                sub.id, self.key, sub.dropped, budget,
            )
            self._emit(SubscriberEvicted(self.key, now, sub.id, sub.dropped, budget))

    def _uncount(self, sub: Subscription, n: int) -> None:
        sub.dropped -= n
        sub._gap_dropped -= n
        self.drops_total -= n

    def _offer_slow(self, sub: Subscription, frame: Frame, seq: int, sync: bool, now: float) -> None:
        """Offer a frame to a subscriber that is not live: lagging, starting or evicted.

        Until a sync point (a video keyframe; any audio frame on a stream without video) the
        frame is skipped, and counted if the subscriber is lagging. At a sync point the configs
        published since the gap began are given first, then the frame, and the subscriber is
        live again. Configs given again are uncounted, so ``dropped`` is exactly the number of
        frames it will never receive.
        """
        state = sub._state
        if state == EVICTED:
            return
        if not sync:
            if state == LAGGING:
                self._drop(sub, now)
            return
        pending = self.gop.configs_since(sub._gap_start)
        pending.append((seq, frame))
        redelivered = 0
        offer = sub._offer
        for pending_seq, pending_frame in pending:
            try:
                offer(pending_frame)
            except trio.WouldBlock:
                sub._gap_start = pending_seq
                if state == LAGGING:
                    self._uncount(sub, redelivered)
                    self._drop(sub, now)
                return
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            redelivered += 1
        sub._state = LIVE
        if state == LAGGING:
            self._uncount(sub, redelivered - 1)
            log.debug("subscriber #%d of %s resumed after dropping %d", sub.id, self.key, sub._gap_dropped)
            self._emit(SubscriberResumed(self.key, now, sub.id, sub._gap_dropped, sub.dropped))

    # ----------------------------------------------------------------- ending

    def _close(self, reason: EndReason) -> None:
        """End everything about this stream, synchronously and exactly once."""
        if self.closed:
            return
        self.closed = True
        self._app.forget(self)
        key = self.key
        now = trio.current_time()
        session = self.session
        if session is not None:
            if reason is EndReason.REAPED:
                error: PublishEnded = StreamIdleReaped(key.app, key.name, self._idle_timeout or 0.0)
                session.finish("reaped", error)
            else:
                session.finish("shutdown", PublishEnded(key.app, key.name, "the server is shutting down"))
        for leftover in self._feeding:
            leftover.receive.close()
        self._feeding.clear()
        for sub in list(self._subs):
            self.remove_subscriber(sub, reason)
        # Nothing of an ended stream outlives it: whoever still holds its Publisher or a
        # Subscription (a protocol adapter until its connection ends) holds no frame.
        self.gop.clear()
        self._evicted.clear()
        self.session = None
        if reason is EndReason.REAPED:
            log.info("stream %s reaped: no frame for %g s", key, self._idle_timeout)
            self._emit(StreamReaped(key, now, self._idle_timeout or 0.0))
        self._emit(StreamClosed(key, now, reason.value))

    def shutdown(self) -> None:
        """End the stream because the engine is stopping (see ``Engine.shutdown``).

        The publish session ends at once (its publisher is told), but frames it had already
        sent are still delivered before the subscribers end: nothing received is lost.
        """
        self._shutting_down = True
        key = self.key
        if self.session is not None:
            self.session.finish("shutdown", PublishEnded(key.app, key.name, "the server is shutting down"))
        elif not self._feeding:
            self._idle_scope.cancel()

    def notify(self, event: StreamEvent) -> None:
        """Emit ``event`` to the application's event feed and the observer (for services)."""
        self._emit(event)

    def replace_session(self) -> None:
        """End the current session because a new publisher takes over (policy ``replace``)."""
        session = self.session
        if session is not None:
            session.finish("replaced", PublisherReplaced(self.key.app, self.key.name))

    def _emit(self, event: StreamEvent) -> None:
        self._notify(event)
