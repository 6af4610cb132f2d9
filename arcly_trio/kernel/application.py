"""An application: a namespace of streams with one policy, running in its own nursery.

It owns the stream table of one :class:`~.spec.AppSpec`: each stream is a task in the
application's nursery, and the stream services that apply to the application are started next
to it (each with its own subscription, from the stream's first frame). The application talks to
the engine through :class:`AppHost`, a narrow interface (limits, ids, services, the observer),
and to its streams through their public methods.

All bookkeeping (the stream table, the publisher count) changes in synchronous steps with no
checkpoint in between, so concurrent publishes and unpublishes cannot interleave inside it.

Error policy: the ``begin_*`` and ``subscribe`` calls raise the :mod:`~arcly_trio.core.errors`
of their refusals (``AppNotFound`` once the application has stopped or is stopping, never a
trio ``RuntimeError`` from a closing nursery); a stream service that raises is logged and the
stream goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import trio

from arcly_trio.core.errors import AppNotFound, StreamAlreadyPublishing, StreamNotFound
from arcly_trio.core.frame import Frame
from arcly_trio.core.keys import Credentials, StreamKey
from arcly_trio.kernel.events import EventBus, StreamEvent
from arcly_trio.kernel.fanout import EndReason, Sink, Subscriber
from arcly_trio.kernel.publish import PublishSession
from arcly_trio.kernel.ratelimit import PublishRateLimit
from arcly_trio.kernel.service import StreamService
from arcly_trio.kernel.spec import AppSpec, Takeover
from arcly_trio.kernel.stream import Stream
from arcly_trio.kernel.subscription import Subscription

__all__ = ["Application", "AppHost", "StreamService"]

log = logging.getLogger("arcly_trio.app")


class AppHost(Protocol):
    """What an application needs from the engine that runs it."""

    idle_timeout: float | None
    publish_start_timeout: float | None
    services: Sequence[StreamService]
    frame_hook: Callable[[StreamKey, Frame], None] | None

    def notify(self, event: StreamEvent) -> None: ...

    def next_id(self) -> int: ...

    def claim_publisher(self, credentials: Credentials) -> Callable[[], None]: ...

    def publish_rate_limit(self, credentials: Credentials, spec: AppSpec) -> PublishRateLimit | None: ...

    def stream_failed(self, stream: Stream) -> None: ...


class Application:
    """The streams of one :class:`~.spec.AppSpec`, each a task in the application's nursery."""

    def __init__(self, host: AppHost, spec: AppSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self.events = EventBus()
        self._host = host
        self.frame_hook = host.frame_hook
        self._streams: dict[str, Stream] = {}
        self._nursery: trio.Nursery | None = None
        self._open = False
        self._tasks = 0
        self._idle = trio.Event()
        self._idle.set()

    @property
    def running(self) -> bool:
        """Whether the application accepts new publishers and subscribers."""
        return self._open

    @property
    def busy(self) -> bool:
        """Whether any stream or stream service of this application is still running."""
        return self._tasks > 0

    async def wait_idle(self) -> None:
        """Return once no stream or stream service of this application runs."""
        await self._idle.wait()

    def _start(self, nursery: trio.Nursery, function: Callable[..., Awaitable[None]], *args: object, name: str) -> None:
        if self._tasks == 0:
            self._idle = trio.Event()
        self._tasks += 1
        nursery.start_soon(self._tracked, function, args, name=name)

    async def _tracked(self, function: Callable[..., Awaitable[None]], args: tuple[object, ...]) -> None:
        try:
            await function(*args)
        finally:
            self._tasks -= 1
            if self._tasks == 0:
                self._idle.set()

    def streams(self) -> list[Stream]:
        return list(self._streams.values())

    def has_stream(self, name: str) -> bool:
        return name in self._streams

    def stream(self, name: str) -> Stream:
        try:
            return self._streams[name]
        except KeyError:
            raise StreamNotFound(self.name, name) from None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the application's nursery until cancelled; its streams end with it."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._open = True
                task_status.started()
                try:
                    await trio.sleep_forever()
                finally:
                    # The nursery is closing: it takes no new task from here on.
                    self._open = False
        finally:
            self._open = False
            self._nursery = None
            self.events.close()

    def close(self) -> None:
        """Refuse new publishers and subscribers from now on (the engine is stopping)."""
        self._open = False

    def cancel(self) -> None:
        """End the application's nursery now (its streams and services end with it)."""
        self._open = False
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    # ------------------------------------------------------------ StreamOwner

    def notify(self, event: StreamEvent) -> None:
        self.events.emit(event)
        self._host.notify(event)

    def stream_failed(self, stream: Stream) -> None:
        self._host.stream_failed(stream)

    def next_id(self) -> int:
        return self._host.next_id()

    def forget(self, stream: Stream) -> None:
        if self._streams.get(stream.key.name) is stream:
            del self._streams[stream.key.name]

    # ------------------------------------------------------------ publish / subscribe

    def _nursery_open(self) -> trio.Nursery:
        nursery = self._nursery
        if nursery is None or not self._open:
            raise AppNotFound(self.name)
        return nursery

    def check_publish(self, key: StreamKey) -> None:
        """Raise ``StreamAlreadyPublishing`` if a publish of ``key`` would be refused now."""
        stream = self._streams.get(key.name)
        if stream is not None and stream.session is not None and self.spec.takeover is Takeover.REJECT:
            raise StreamAlreadyPublishing(key.app, key.name)

    def begin_publish(self, key: StreamKey, credentials: Credentials, protocol: str) -> PublishSession:
        """Claim ``key`` for a new publisher (synchronous: atomic under trio)."""
        nursery = self._nursery_open()
        stream = self._streams.get(key.name)
        if stream is not None and stream.session is not None:
            if self.spec.takeover is Takeover.REJECT:
                raise StreamAlreadyPublishing(key.app, key.name)
            log.info("publisher of %s replaced by a new one from %s", key, credentials.peer)
            stream.replace_session()  # gives back the old publisher's slot
        # PublisherLimitReached (or its per-address kind) before anything is made
        release = self._host.claim_publisher(credentials)
        if stream is None:
            stream = Stream(self, key, self._host.idle_timeout, self._host.publish_start_timeout)
            self._streams[key.name] = stream
            self._start(nursery, stream.run, name=f"stream {key}")
            for service in self._host.services:
                if service.applies_to(self.spec):
                    sub = stream.subscribe(
                        self._host.next_id(), Credentials(protocol=service.name), service.name, service.capacity
                    )
                    self._start(nursery, self._serve_stream, service, stream, sub, name=f"{service.name} {key}")
        rate_limit = self._host.publish_rate_limit(credentials, stream.spec)
        return stream.new_session(credentials, protocol, release, rate_limit)

    def subscribe(self, key: StreamKey, credentials: Credentials, protocol: str, capacity: int | None) -> Subscription:
        """Attach a new :class:`Subscription` to ``key`` (synchronous: atomic under trio)."""
        self._nursery_open()
        return self.stream(key.name).subscribe(
            self._host.next_id(), credentials, protocol, capacity or self.spec.subscriber_queue
        )

    def attach(self, key: StreamKey, credentials: Credentials, protocol: str, sink: Sink) -> Subscriber:
        """Attach a protocol worker's own ``sink`` to ``key`` (synchronous: atomic under trio)."""
        self._nursery_open()
        return self.stream(key.name).add_subscriber(self._host.next_id(), credentials, protocol, sink)

    async def _serve_stream(self, service: StreamService, stream: Stream, sub: Subscription) -> None:
        try:
            await service.serve_stream(stream, sub)
        except Exception:
            log.exception("stream service %s failed on %s; the stream goes on", service.name, stream.key)
        finally:
            self.unsubscribe(sub)

    @staticmethod
    def unsubscribe(sub: Subscription) -> None:
        sub.stream.unsubscribe(sub)

    def detach(self, subscriber: Subscriber) -> None:
        """Take a sink's subscriber off its stream (a no-op if the stream has ended)."""
        stream = self._streams.get(subscriber.key.name)
        if stream is not None:
            stream.remove_subscriber(subscriber, EndReason.UNSUBSCRIBED)

    def __repr__(self) -> str:
        return f"<Application {self.name!r} streams={len(self._streams)}>"
