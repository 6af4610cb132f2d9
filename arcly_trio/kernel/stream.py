"""A live stream: one task that takes a publisher's frames and fans them out to subscribers.

Shape: each publish session (:mod:`.publish`) owns a memory channel whose send side is its
:class:`~.publish.Publisher`; the stream's task drains the receive side in batches, numbers each
frame (its sequence number), lets the GOP cache, the media probe and the QoS meters see it once,
and hands the batch (a :class:`~arcly_trio.core.frame.FrameBatch`) to its
:class:`~.fanout.Fanout`, which offers it to every subscriber's sink without waiting (the lag
policy lives there). The publisher waits only for the stream task (when its ingest queue is
full), never for a subscriber.

Lifetime: the stream ends when its publisher has gone and the reconnect grace has passed, or
when no frame arrives within the idle timeout (counted from the last batch of frames, or from
creation if nothing is ever sent; watched by a timer that is not moved on every batch: see
:meth:`Stream._pump`). A publish session that sends no
media frame (audio or video; configs and metadata do not count) within the publish start
timeout is ended (:class:`~arcly_trio.core.errors.PublishStartTimedOut`): an idle publisher
gives its slot back in seconds, not after the idle timeout. A session cut by its rate limit
(see :mod:`.publish`) is logged and told to the observers (:class:`~.events.RateLimited`).
Every exit path, including
cancellation when the engine stops and a bug in this module, ends the publish session exactly
once, ends every subscriber with a reason, removes the stream from its owner and lets go of
every frame (so an ended stream's memory is freed at once, without the cyclic collector).

The stream knows its owner (the application) only through :class:`StreamOwner`.

Error policy: a bug in the stream task (or in a sink it calls) is logged with its traceback,
counted by the owner, and ends this stream only.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

import trio

from arcly_trio.core.errors import (
    PublishEnded,
    PublisherReplaced,
    PublishRateLimited,
    PublishStartTimedOut,
    StreamIdleReaped,
)
from arcly_trio.core.frame import Frame, FrameBatch, FrameKind
from arcly_trio.core.keys import Credentials, StreamKey
from arcly_trio.kernel.events import (
    RateLimited,
    StreamClosed,
    StreamEvent,
    StreamPublished,
    StreamReaped,
    StreamUnpublished,
    SubscriberJoined,
    SubscriberLeft,
)
from arcly_trio.kernel.fanout import EndReason, Fanout, Sink, Subscriber
from arcly_trio.kernel.gop import GopCache
from arcly_trio.kernel.publish import Publisher, PublishSession
from arcly_trio.kernel.qos import RateMeter, StreamStats
from arcly_trio.kernel.ratelimit import PublishRateLimit
from arcly_trio.kernel.spec import AppSpec
from arcly_trio.kernel.subscription import Subscription
from arcly_trio.media.probe import MediaProbe, StreamInfo

__all__ = ["Stream", "StreamOwner", "Publisher", "PublishSession"]

log = logging.getLogger("arcly_trio.stream")

MAX_BATCH = 512
AUDIO_HOLD_SECONDS = 0.1
_VIDEO = FrameKind.VIDEO
_AUDIO = FrameKind.AUDIO


class StreamOwner(Protocol):
    """What a stream needs from whoever runs it (the application)."""

    spec: AppSpec
    frame_hook: Callable[[StreamKey, Frame], None] | None

    def notify(self, event: StreamEvent) -> None: ...

    def next_id(self) -> int: ...

    def forget(self, stream: Stream) -> None: ...

    def stream_failed(self, stream: Stream) -> None: ...


class Stream:
    """One live stream of an application (see the module docstring)."""

    def __init__(
        self, owner: StreamOwner, key: StreamKey, idle_timeout: float | None, start_timeout: float | None = None
    ) -> None:
        spec = owner.spec
        self.key = key
        self._owner = owner
        self._spec = spec
        self._notify = owner.notify
        self._frame_hook = owner.frame_hook
        self._idle_timeout = idle_timeout
        self._start_timeout = start_timeout
        deadline = trio.current_time() + idle_timeout if idle_timeout else math.inf
        self._idle_scope = trio.CancelScope(deadline=deadline)
        self.gop = GopCache(spec.gop_cache_frames, spec.gop_cache_bytes)
        self.fanout = Fanout(key, self.gop, spec.lag_budget, owner.notify, trio.current_time)
        self.probe = MediaProbe()
        self.session: PublishSession | None = None
        self.pumping: PublishSession | None = None
        """The session whose frames the stream delivers now (the old one drains after a
        takeover while ``session`` is already the new one)."""
        self._feeding: deque[PublishSession] = deque()
        self._arrived: trio.Event | None = None
        self._seq = 0
        self.video = RateMeter()
        self.audio = RateMeter()
        self.info = StreamInfo()
        """The current publish session's info (see :class:`~arcly_trio.media.probe.StreamInfo`)."""
        self.created_at = trio.current_time()
        self._delivered_at = -math.inf  # when the last batch went out (AppSpec.batch_interval)
        self.closed = False
        self._shutting_down = False

    # ----------------------------------------------------------------- views

    @property
    def spec(self) -> AppSpec:
        """The policy of the stream's application."""
        return self._spec

    @property
    def publishing(self) -> bool:
        return self.session is not None

    @property
    def has_video(self) -> bool:
        return self.gop.primary is not None

    @property
    def next_seq(self) -> int:
        """The sequence number the next published frame will get."""
        return self._seq + 1

    @property
    def drops_total(self) -> int:
        return self.fanout.drops_total

    @property
    def subscribers(self) -> list[Subscriber]:
        return list(self.fanout.subscribers)

    def stats(self) -> StreamStats:
        now = trio.current_time()
        vfps, vbps = self.video.rate(now)
        afps, abps = self.audio.rate(now)
        by_protocol: dict[str, int] = {}
        for sub in self.fanout.subscribers:
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
            subscribers=len(self.fanout.subscribers),
            subscribers_by_protocol=by_protocol,
            drops_total=self.fanout.drops_total,
            uptime=now - self.created_at,
        )

    # ------------------------------------------------- sessions (called by the owner)

    def new_session(
        self,
        credentials: Credentials,
        protocol: str,
        release: Callable[[], None],
        rate_limit: PublishRateLimit | None = None,
    ) -> PublishSession:
        """A publish session on this stream (the owner has checked the limits and policy and
        gives its rate limit, for ``spec.max_publish_bitrate``)."""
        session = PublishSession(
            self.key,
            credentials,
            protocol,
            self._spec.ingest_queue,
            on_finish=self._session_finished,
            release=release,
            rate_limit=rate_limit,
        )
        session.info = StreamInfo(protocol=protocol, peer=credentials.peer, started_at=time.time())
        self.session = session
        self.info = session.info
        self._feeding.append(session)
        self._emit(StreamPublished(self.key, trio.current_time(), protocol, credentials.peer, credentials.client_id))
        if self._arrived is not None:
            self._arrived.set()
        return session

    def _session_finished(self, session: PublishSession, reason: str) -> None:
        if self.session is session:
            self.session = None
        error = session.end_error
        if isinstance(error, PublishRateLimited):
            peer = session.credentials.peer
            log.warning(
                "publish of %s from %s over %s cut: %s",
                self.key,
                peer[0] if peer else "?",
                session.protocol or "?",
                error.reason,
            )
            self._emit(
                RateLimited(
                    self.key,
                    trio.current_time(),
                    error.limit,
                    error.measured,
                    session.protocol,
                    peer,
                    session.credentials.client_id,
                    session.bytes,
                )
            )
        elif isinstance(error, PublishStartTimedOut):
            peer = session.credentials.peer
            log.info(
                "publish of %s from %s over %s ended: %s",
                self.key,
                peer[0] if peer else "?",
                session.protocol or "?",
                error.reason,
            )
        self._emit(
            StreamUnpublished(
                self.key, trio.current_time(), reason, session.protocol, session.bytes, session.credentials.client_id
            )
        )

    def replace_session(self) -> None:
        """End the current session because a new publisher takes over (policy ``replace``)."""
        session = self.session
        if session is not None:
            session.finish("replaced", PublisherReplaced(self.key.app, self.key.name))

    # ------------------------------------------------------------ subscribers

    def add_subscriber(self, subscriber_id: int, credentials: Credentials, protocol: str, sink: Sink) -> Subscriber:
        """Attach ``sink`` as a new subscriber (synchronous: atomic under trio)."""
        sub = Subscriber(subscriber_id, self.key, credentials, protocol, sink)
        self._join(sub)
        return sub

    def _join(self, sub: Subscriber) -> None:
        self.fanout.add(sub, self.next_seq)
        self._emit(
            SubscriberJoined(
                self.key, trio.current_time(), sub.id, sub.protocol, sub.credentials.peer, sub.credentials.client_id
            )
        )

    def subscribe(self, subscriber_id: int, credentials: Credentials, protocol: str, capacity: int) -> Subscription:
        """A new :class:`~.subscription.Subscription` (a channel sink) on this stream."""
        subscription = Subscription(self, capacity, subscriber_id, credentials, protocol)
        self._join(subscription.subscriber)
        return subscription

    @contextmanager
    def service_subscription(self, protocol: str, capacity: int) -> Iterator[Subscription]:
        """Another subscription for a stream service that needs more than the one it is given
        (a push service: one per target), ended when the block exits. Like the service's own,
        it is not a viewer's: it is not authorized, and pulls do not count it."""
        sub = self.subscribe(self._owner.next_id(), Credentials(protocol=protocol), protocol, capacity)
        try:
            yield sub
        finally:
            self.unsubscribe(sub)

    def unsubscribe(self, sub: Subscription) -> None:
        """End ``sub`` (idempotent) and let go of its frames."""
        self.remove_subscriber(sub.subscriber, EndReason.UNSUBSCRIBED)
        sub.detach()

    def remove_subscriber(self, sub: Subscriber, reason: EndReason) -> None:
        """Take ``sub`` off the stream (idempotent) and tell everyone once."""
        if self.fanout.remove(sub, reason):
            self._left(sub)

    def _left(self, sub: Subscriber) -> None:
        reason = sub.end_reason.value if sub.end_reason is not None else "unknown"
        self._emit(
            SubscriberLeft(
                self.key,
                trio.current_time(),
                sub.id,
                reason,
                sub.dropped,
                sub.protocol,
                sub.bytes,
                sub.credentials.client_id,
            )
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
            self._owner.stream_failed(self)
            log.exception("stream %s failed; ending its publisher and subscribers", self.key)
        finally:
            self._close(reason)

    async def _feed(self) -> None:
        while True:
            while self._feeding:
                session = self._feeding[0]
                # A new session starts from scratch: no config, GOP or info of the previous one.
                self.gop.clear()
                self.probe.reset(session.info)
                self.fanout.new_session(session.info)
                self.pumping = session
                await self._pump(session)
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

    async def _pump(self, session: PublishSession) -> None:
        """Drain one session's frames in batches and deliver them.

        Until the session's first media frame has come, waiting for frames is bounded by the
        publish start timeout (counted from when the publish was accepted); past it the session
        is ended and what it had queued is still delivered.

        Audio interleave: on a stream with video, audio frames that arrive after the last video
        frame of a batch are held until the next video frame (at most ``AppSpec.audio_hold``
        frames, and never longer than ``AUDIO_HOLD_SECONDS``), so every subscriber is woken
        once per video frame rather than once per frame. With ``AppSpec.batch_interval``, frames
        that arrive within that long after a delivery wait for it to pass (or for a full
        batch) and go out together: fewer, larger writes to every viewer for that much more
        latency. Order is unchanged.

        Timers: what is due next (the held frames, the start timeout, the idle timeout) is
        watched by one cancel scope, the *timer*, entered again only when it fires (set to
        exactly what is due). Its deadline is never later than what is due; while frames flow
        it is moved forward only when it comes within half a hold time, and then at most a
        hold time ahead, not on every batch: a cancel scope entered and left, or a deadline
        moved, per batch cost more than the batch's own work (trio's deadline bookkeeping).
        When it fires early, nothing is due and the wait starts again. While the session is
        pumped the idle deadline lives in the timer (the stream's idle scope is told to
        cancel when it passes) and goes back to the idle scope when the session ends.
        """
        receive = session.receive
        idle = self._idle_timeout
        idle_scope = self._idle_scope
        awaiting_media = self._start_timeout is not None
        media_due = session.opened_at + self._start_timeout if self._start_timeout is not None else math.inf
        hold_limit = self._spec.audio_hold
        interval = self._spec.batch_interval
        # Never offer a subscriber more frames in one go than half its queue holds, so a
        # subscriber that keeps up never drops because of a burst from the publisher.
        max_batch = max(1, min(MAX_BATCH, self._spec.subscriber_queue // 2))
        # How far ahead the timer is moved while frames flow: no further than a hold lasts when
        # frames may be held (so a new hold never has to pull it back), and when it comes
        # within half of that.
        ahead = AUDIO_HOLD_SECONDS if hold_limit or interval else math.inf
        near = AUDIO_HOLD_SECONDS / 2
        held: list[Frame] = []
        held_until = math.inf  # when the held frames go out at the latest
        idle_due = idle_scope.deadline  # creation (or the last batch) + the idle timeout, or inf
        if idle:
            idle_scope.deadline = math.inf  # the timer watches it meanwhile
        try:
            while True:
                now = trio.current_time()
                due = min(idle_due, held_until if held else math.inf, media_due if awaiting_media else math.inf)
                with trio.CancelScope(deadline=due) as timer:
                    while True:
                        due = min(idle_due, held_until if held else math.inf, media_due if awaiting_media else math.inf)
                        deadline = timer.deadline
                        if deadline > due or (deadline < due and deadline - now < near):
                            timer.deadline = min(due, now + ahead)
                        first: Frame | None = None
                        try:
                            if awaiting_media:  # frames already queued count, even past the deadline
                                with contextlib.suppress(trio.WouldBlock):
                                    first = receive.receive_nowait()
                            if first is None:
                                first = await receive.receive()
                        except (trio.EndOfChannel, trio.ClosedResourceError):
                            if held:
                                self._deliver(held)
                            return
                        batch = [first]
                        try:
                            # Held frames go out with this batch: together they stay within the burst cap.
                            while len(batch) + len(held) < max_batch:
                                batch.append(receive.receive_nowait())
                        except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                            pass
                        now = trio.current_time()
                        if idle:
                            idle_due = now + idle
                        if awaiting_media and any(
                            not frame.config and (frame.kind is _VIDEO or frame.kind is _AUDIO) for frame in batch
                        ):
                            awaiting_media = False
                        if interval:
                            if held:
                                batch = held + batch
                                held = []
                            due_at = self._delivered_at + interval
                            if now < due_at and len(batch) < max_batch:
                                held = batch
                                held_until = due_at
                                continue
                        if hold_limit and self.gop.primary is not None:
                            if held:
                                batch = held + batch
                                held = []
                            cut = len(batch)
                            while cut and batch[cut - 1].kind is _AUDIO:
                                cut -= 1
                            if 0 < len(batch) - cut < min(hold_limit, max_batch):
                                held = batch[cut:]
                                batch = batch[:cut]
                                held_until = now + AUDIO_HOLD_SECONDS
                            if not batch:
                                continue
                        self._deliver(batch)
                # The timer fired: deliver or end what is due (an early fire finds nothing).
                now = trio.current_time()
                if awaiting_media and now >= media_due:
                    awaiting_media = False
                    self._no_media(session)  # its channel closes: what it queued comes next
                if held and now >= held_until:  # nothing within the hold time: let them go
                    self._deliver(held)
                    held = []
                if now >= idle_due:
                    idle_scope.cancel()  # the stream is reaped (the idle scope catches it)
                    await trio.lowlevel.checkpoint()
        finally:
            if idle:
                idle_scope.deadline = idle_due

    def _no_media(self, session: PublishSession) -> None:
        """End ``session``: no media frame within the publish start timeout."""
        timeout = self._start_timeout or 0.0
        session.finish("no-media", PublishStartTimedOut(self.key.app, self.key.name, timeout))

    def _deliver(self, batch: list[Frame]) -> None:
        """The hot path: see each frame once (cache, probe, QoS), then fan the batch out."""
        now = self._delivered_at = trio.current_time()
        probe = self.probe
        hook = self._frame_hook
        key = self.key
        video_frames = video_bytes = audio_frames = audio_bytes = 0
        for frame in batch:
            kind = frame.kind
            if frame.config:
                probe.push(frame)
            elif kind is _VIDEO:
                video_frames += 1
                video_bytes += len(frame.payload)
                probe.push(frame)
            elif kind is _AUDIO:
                audio_frames += 1
                audio_bytes += len(frame.payload)
                if probe.info.audio_codec is None:
                    probe.push(frame)
            if hook is not None:
                hook(key, frame)
        if video_frames:  # the meters count the batch at once (one time: now)
            self.video.add(now, video_bytes, video_frames)
        if audio_frames:
            self.audio.add(now, audio_bytes, audio_frames)
        first_seq = self._seq + 1
        self._seq += len(batch)
        # One FrameBatch per delivery: the same object goes to every live subscriber, so
        # egress formats build what they write for it once (see FrameBatch.encoded).
        for sub in self.fanout.deliver(FrameBatch(batch), first_seq):
            self._left(sub)

    def deliver_bridged(self, frames: list[Frame]) -> None:
        """Deliver frames the server made for this stream (the audio bridge's AAC, each
        :attr:`~arcly_trio.core.frame.Frame.bridged`) to the sinks that take them, in a batch of
        their own (see :mod:`.fanout`). Called from another task, synchronously; not seen by the
        probe, the QoS meters, the frame hook or the idle timer (the publisher's frames are).
        Ignored once the stream has ended."""
        if self.closed or not frames:
            return
        first_seq = self._seq + 1
        self._seq += len(frames)
        for sub in self.fanout.deliver(FrameBatch(frames), first_seq, bridged=True):
            self._left(sub)

    # ----------------------------------------------------------------- ending

    def _close(self, reason: EndReason) -> None:
        """End everything about this stream, synchronously and exactly once."""
        if self.closed:
            return
        self.closed = True
        self._owner.forget(self)
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
        for sub in self.fanout.close_all(reason):
            self._left(sub)
        # Nothing of an ended stream outlives it: whoever still holds its Publisher or a
        # Subscription (a protocol adapter until its connection ends) holds no frame of it.
        self.gop.clear()
        self.session = None
        self.pumping = None
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

    def _emit(self, event: StreamEvent) -> None:
        self._notify(event)
