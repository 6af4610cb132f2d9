"""The per-application event feed: what happened to streams and subscribers.

Each event is a frozen attrs class carrying its fields. An application's :class:`EventBus` hands
every event to each listener's own bounded channel. Emitting never waits: a listener whose
channel is full misses the event, and the miss is counted (``EventFeed.dropped``) — the feed is
bounded and drop-counting, like a subscriber.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import ClassVar

import attrs
import trio

from arcly_trio.core.keys import StreamKey

__all__ = [
    "StreamEvent",
    "StreamPublished",
    "StreamUnpublished",
    "RateLimited",
    "StreamClosed",
    "StreamReaped",
    "SubscriberJoined",
    "SubscriberLeft",
    "SubscriberLagged",
    "SubscriberResumed",
    "SubscriberEvicted",
    "ServiceEvent",
    "AuthDecided",
    "SessionKicked",
    "EventBus",
    "EventFeed",
]


@attrs.frozen(slots=True)
class StreamEvent:
    """Base of every event: which stream, and when (trio clock seconds)."""

    hook: ClassVar[str] = ""
    key: StreamKey
    at: float


@attrs.frozen(slots=True)
class StreamPublished(StreamEvent):
    """A publisher started (or took over, or came back to) the stream."""

    hook: ClassVar[str] = "on_publish_started"
    protocol: str
    peer: tuple[str, int] | None
    client_id: str = ""
    """The publisher's session id (``/api/sessions``); empty for a publisher the engine did not
    give one (none: every ``Engine.publish`` does)."""


@attrs.frozen(slots=True)
class StreamUnpublished(StreamEvent):
    """A publish session ended. ``reason``: ``"closed"``, ``"replaced"``, ``"reaped"``,
    ``"failed"``, ``"kicked"``, ``"shutdown"``, ``"rate-limited"`` (see :class:`RateLimited`) or
    ``"no-media"`` (no media within the publish start timeout). ``bytes``: the media payload
    bytes it published."""

    hook: ClassVar[str] = "on_publish_ended"
    reason: str
    protocol: str = ""
    bytes: int = 0
    client_id: str = ""


@attrs.frozen(slots=True)
class RateLimited(StreamEvent):
    """A publisher sent faster than its application's ``max_publish_bitrate`` for longer than the
    burst allowance, and its session was cut (a :class:`StreamUnpublished` with reason
    ``"rate-limited"`` follows). ``limit`` and ``measured`` are bits/s (``measured``: its rate
    over the stretch that used the allowance up); ``bytes`` what the session had sent."""

    hook: ClassVar[str] = "on_rate_limited"
    limit: int
    measured: float
    protocol: str
    peer: tuple[str, int] | None
    client_id: str = ""
    bytes: int = 0


@attrs.frozen(slots=True)
class StreamClosed(StreamEvent):
    """The stream is gone: its publisher did not come back within the grace, or it was reaped."""

    hook: ClassVar[str] = "on_stream_closed"
    reason: str


@attrs.frozen(slots=True)
class StreamReaped(StreamEvent):
    """No frame arrived within the idle timeout; the stream was reaped."""

    hook: ClassVar[str] = "on_stream_reaped"
    idle_timeout: float


@attrs.frozen(slots=True)
class SubscriberJoined(StreamEvent):
    """A player started (a subscriber of the stream, or the session of a player that polls,
    HLS and DASH, see :mod:`.polled`), or a stream service subscribed (no ``client_id``)."""

    hook: ClassVar[str] = "on_subscriber_joined"
    subscriber_id: int
    protocol: str
    peer: tuple[str, int] | None
    client_id: str = ""
    """The player's session id; empty for a stream service's own subscription (HLS packaging,
    recording, a push), which is not a player."""


@attrs.frozen(slots=True)
class SubscriberLeft(StreamEvent):
    """A subscriber is gone. ``reason`` is an :class:`~.stream.EndReason` value; ``bytes`` the
    media payload bytes it was given."""

    hook: ClassVar[str] = "on_subscriber_left"
    subscriber_id: int
    reason: str
    dropped: int
    protocol: str = ""
    bytes: int = 0
    client_id: str = ""


@attrs.frozen(slots=True)
class SubscriberLagged(StreamEvent):
    """A subscriber's queue was full: it drops frames until the next keyframe."""

    hook: ClassVar[str] = "on_subscriber_lagged"
    subscriber_id: int
    dropped_total: int


@attrs.frozen(slots=True)
class SubscriberResumed(StreamEvent):
    """A lagging subscriber caught up again on a keyframe after dropping ``dropped`` frames."""

    hook: ClassVar[str] = "on_subscriber_resumed"
    subscriber_id: int
    dropped: int
    dropped_total: int


@attrs.frozen(slots=True)
class SubscriberEvicted(StreamEvent):
    """A subscriber dropped more than its application's lag budget and was ended."""

    hook: ClassVar[str] = "on_subscriber_evicted"
    subscriber_id: int
    dropped_total: int
    lag_budget: int


@attrs.frozen(slots=True)
class ServiceEvent(StreamEvent):
    """Something a stream service (HLS packaging, recording...) reports about a stream.

    ``service`` names the service, ``what`` says what happened (``"recording-started"``,
    ``"recording-failed"``...), ``detail`` is for humans (a path, an error message).
    """

    hook: ClassVar[str] = "on_service_event"
    service: str
    what: str
    detail: str


@attrs.frozen(slots=True)
class AuthDecided(StreamEvent):
    """The engine's authorization decided on a publish or a play (observers only, not the
    application's event feed: a refused client has no stream).

    ``action`` is ``"publish"`` or ``"play"``, ``allowed`` the decision, ``reason`` why it was
    refused (the authenticator's words, escaped when logged), ``renamed`` the key the client
    was sent to instead of ``key`` (an HTTP hook's redirect), ``seconds`` how long the
    authenticator took.
    """

    hook: ClassVar[str] = "on_auth_decided"
    action: str
    allowed: bool
    reason: str
    protocol: str
    peer: tuple[str, int] | None
    client_id: str
    renamed: StreamKey | None = None
    seconds: float = 0.0


@attrs.frozen(slots=True)
class SessionKicked(StreamEvent):
    """An operator ended a client's session (``DELETE /api/sessions/{id}``): ``role`` is
    ``"publish"`` or ``"play"``; ``by`` says who asked (``"api-token holder at 203.0.113.7"``,
    ``"local operator at 127.0.0.1"``; empty when the embedding program called
    ``Engine.kick`` itself)."""

    hook: ClassVar[str] = "on_session_kicked"
    client_id: str
    role: str
    protocol: str
    peer: tuple[str, int] | None
    by: str = ""


class EventFeed:
    """One listener's view of an application's events: an async iterator of events.

    ``dropped`` counts the events this listener missed because its queue was full.
    """

    def __init__(self, capacity: int) -> None:
        self._send, self._receive = trio.open_memory_channel[StreamEvent](capacity)
        self.dropped = 0

    def _offer(self, event: StreamEvent) -> None:
        try:
            self._send.send_nowait(event)
        except trio.WouldBlock:
            self.dropped += 1
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    def __aiter__(self) -> EventFeed:
        return self

    async def __anext__(self) -> StreamEvent:
        try:
            return await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise StopAsyncIteration from None

    def receive_nowait(self) -> StreamEvent:
        """The next queued event; ``trio.WouldBlock`` when there is none."""
        return self._receive.receive_nowait()

    def _close(self) -> None:
        self._send.close()
        self._receive.close()


class EventBus:
    """Fans an application's events out to its listeners without ever waiting."""

    def __init__(self) -> None:
        self._feeds: list[EventFeed] = []
        self.emitted = 0

    def emit(self, event: StreamEvent) -> None:
        self.emitted += 1
        for feed in self._feeds:
            feed._offer(event)

    @asynccontextmanager
    async def listen(self, capacity: int = 256) -> AsyncIterator[EventFeed]:
        """Receive every event emitted from now until the block exits (bounded, drop-counting)."""
        if capacity < 1 and capacity != math.inf:
            raise ValueError("capacity must be >= 1")
        feed = EventFeed(capacity)
        self._feeds.append(feed)
        try:
            yield feed
        finally:
            self._feeds.remove(feed)
            feed._close()

    def close(self) -> None:
        """End every listener's iteration (the application stopped)."""
        for feed in self._feeds:
            feed._send.close()
