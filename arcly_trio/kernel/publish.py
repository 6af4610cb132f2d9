"""The publishing side of a stream: a publish session and the :class:`Publisher` handles of it.

A :class:`PublishSession` is one publisher's tenure on a stream, from ``engine.publish`` until
its end, which happens exactly once: the publisher closed it, failed, or the kernel ended it
(reaped, replaced by a new publisher, the server stopping). It owns a trio memory channel: its
send side is the :class:`Publisher` (clonable, one clone per ingest task if a protocol wants),
its receive side is drained by the stream's task. ``Publisher.send`` waits only when that
channel is full, that is for the stream's task, never for a subscriber.

The session talks to its stream through two callables it is given (``on_finish`` and
``release``), so this module knows nothing of streams or engines.

Rate limit: a session may have a :class:`~.ratelimit.PublishRateLimit` (the application's
``max_publish_bitrate``; the engine gives it, see :class:`~.ratelimit.CarriedBuckets`). ``send``
counts every frame's payload against it, before the frame is queued: a frame that does not fit
ends the session (:class:`~arcly_trio.core.errors.PublishRateLimited`) and is not delivered.
This is the one place every protocol's publisher goes through.

Error policy: ``send`` after the end raises :class:`~arcly_trio.core.errors.PublishEnded` (or the
subclass that says why: ``PublisherReplaced``, ``StreamIdleReaped``, ``PublishRateLimited``...);
nothing else is raised.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from arcly_trio.core.errors import PublishEnded, PublishRateLimited
from arcly_trio.core.frame import Frame
from arcly_trio.core.keys import Credentials, StreamKey
from arcly_trio.kernel.ratelimit import PublishRateLimit
from arcly_trio.media.probe import StreamInfo

__all__ = ["Publisher", "PublishSession"]


class Publisher:
    """The publishing side of a stream: ``send`` frames into it.

    ``send`` never waits for a subscriber; it waits only if the stream's ingest queue is full.
    After the session has ended it raises :class:`~arcly_trio.core.errors.PublishEnded` (or the
    subclass that says why: ``PublisherReplaced``, ``StreamIdleReaped``); a frame over the
    session's rate limit ends it with ``PublishRateLimited``.

    ``clone()`` gives another publisher on the same session, for multi-track ingest from several
    tasks. The session ends when the last clone is closed. Clones are async context managers.
    """

    __slots__ = ("_session", "_send", "_closed")

    def __init__(self, session: PublishSession, send: trio.MemorySendChannel[Frame]) -> None:
        self._session = session
        self._send = send
        self._closed = False
        session.clones.add(self)

    @property
    def key(self) -> StreamKey:
        return self._session.key

    @property
    def info(self) -> StreamInfo:
        """What the kernel knows of the stream (derived from the frames; read it, don't set it)."""
        return self._session.info

    @property
    def active(self) -> bool:
        return self._session.active and not self._closed

    async def send(self, frame: Frame) -> None:
        """Queue ``frame`` for the stream's subscribers."""
        await trio.lowlevel.checkpoint_if_cancelled()
        session = self._session
        if session.rate_limit is not None and session.active:
            session.count_rate(len(frame.payload))
        try:
            self._send.send_nowait(frame)
            session.bytes += len(frame.payload)
            return
        except trio.WouldBlock:
            pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise session.ended_error() from None
        try:
            await self._send.send(frame)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise session.ended_error() from None
        session.bytes += len(frame.payload)

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

    def _force_close(self) -> None:
        self._closed = True
        self._send.close()

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
        key: StreamKey,
        credentials: Credentials,
        protocol: str,
        capacity: int,
        *,
        on_finish: Callable[[PublishSession, str], None],
        release: Callable[[], None],
        rate_limit: PublishRateLimit | None = None,
    ) -> None:
        self.key = key
        self.credentials = credentials
        self.protocol = protocol
        send, self.receive = trio.open_memory_channel[Frame](capacity)
        self.clones: set[Publisher] = set()
        self.publisher = Publisher(self, send)
        self.scope = trio.CancelScope()
        """The publisher's block runs in it: the kernel cancels it when it ends the session."""
        self.info = StreamInfo()
        """The stream's info for this session (the stream fills it in from the frames)."""
        self.active = True
        self.bytes = 0
        """Media payload bytes its publishers sent."""
        self.opened_at = trio.current_time()
        """When the publish was accepted (trio's clock)."""
        self.rate_limit = rate_limit
        """The session's rate limit (``None``: none)."""
        self.end_reason: str | None = None
        self.end_error: PublishEnded | None = None
        self._on_finish = on_finish
        self._release = release

    def ended_error(self) -> PublishEnded:
        if self.end_error is not None:
            return self.end_error
        return PublishEnded(self.key.app, self.key.name, self.end_reason or "publisher closed")

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
        self._on_finish(self, reason)
        if error is not None:
            for clone in list(self.clones):
                clone._force_close()
            self.clones.clear()
            self.scope.cancel()

    def count_rate(self, size: int) -> None:
        """Count ``size`` payload bytes against the rate limit; past it, end the session and
        raise :class:`~arcly_trio.core.errors.PublishRateLimited`."""
        limit = self.rate_limit
        assert limit is not None
        now = trio.current_time()
        if not limit.take(size, now):
            key = self.key
            self.finish("rate-limited", PublishRateLimited(key.app, key.name, limit.limit, limit.measured(now)))
            raise self.ended_error()

    def abort(self, reason: str = "failed") -> None:
        """The publisher failed: close every clone. Frames already sent are still delivered."""
        if self.active:
            self.finish(reason)
        for clone in list(self.clones):
            clone.close()
