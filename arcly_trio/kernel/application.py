"""An application: a namespace of streams with one policy, running in its own nursery."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from ..core.errors import AppNotFound, PublisherLimitReached, StreamAlreadyPublishing, StreamNotFound
from .events import EventBus, StreamEvent
from ..core.frame import Frame
from ..core.keys import Credentials, StreamKey
from .spec import AppSpec, Takeover
from .stream import PublishSession, Stream
from .subscription import EndReason, Subscription

if TYPE_CHECKING:
    from .engine import Engine, StreamService

__all__ = ["Application"]

log = logging.getLogger("arcly_trio.app")


class Application:
    """The streams of one :class:`~.spec.AppSpec`, each a task in the application's nursery.

    All bookkeeping (the stream table, the publisher count) changes in synchronous steps with no
    checkpoint in between, so concurrent publishes and unpublishes cannot interleave inside it.
    """

    def __init__(self, engine: Engine, spec: AppSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self.events = EventBus()
        self._engine = engine
        self._observer = engine._observer
        self.frame_hook: Callable[[StreamKey, Frame], None] | None = engine._observer.frame_hook
        self._streams: dict[str, Stream] = {}
        self._nursery: trio.Nursery | None = None

    @property
    def running(self) -> bool:
        return self._nursery is not None

    @property
    def busy(self) -> bool:
        """Whether any stream or stream service of this application is still running."""
        return bool(self._nursery is not None and self._nursery.child_tasks)

    def streams(self) -> list[Stream]:
        return list(self._streams.values())

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
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None
            self.events.close()

    def notify(self, event: StreamEvent) -> None:
        self.events.emit(event)
        self._observer.notify(event)

    def stream_failed(self, stream: Stream) -> None:
        self._engine.stream_failures += 1

    def forget(self, stream: Stream) -> None:
        if self._streams.get(stream.key.name) is stream:
            del self._streams[stream.key.name]

    def begin_publish(self, key: StreamKey, credentials: Credentials, protocol: str) -> PublishSession:
        """Claim ``key`` for a new publisher (synchronous: atomic under trio)."""
        engine = self._engine
        nursery = self._nursery
        if nursery is None:
            raise AppNotFound(self.name)
        stream = self._streams.get(key.name)
        takeover = stream is not None and stream.session is not None
        if takeover and self.spec.takeover is Takeover.REJECT:
            raise StreamAlreadyPublishing(key.app, key.name)
        if not takeover and engine._publishers >= engine._max_publishers:
            raise PublisherLimitReached(engine._max_publishers)
        if stream is None:
            stream = Stream(self, key, engine._idle_timeout)
            self._streams[key.name] = stream
            nursery.start_soon(stream.run, name=f"stream {key}")
            for service in engine._services:
                if service.applies_to(self.spec):
                    sub = stream.add_subscriber(engine._next_id(), Credentials(protocol=service.name),
                                                service.name, service.capacity)
                    nursery.start_soon(self._serve_stream, service, stream, sub,
                                       name=f"{service.name} {key}")
        elif takeover:
            log.info("publisher of %s replaced by a new one from %s", key, credentials.peer)
            stream.replace_session()
        engine._publishers += 1
        session = PublishSession(stream, credentials, protocol, self.spec.ingest_queue, engine._release_publisher)
        stream.attach(session)
        return session

    def subscribe(self, key: StreamKey, credentials: Credentials, protocol: str, capacity: int | None) -> Subscription:
        """Attach a new subscriber to ``key`` (synchronous: atomic under trio)."""
        if self._nursery is None:
            raise AppNotFound(self.name)
        stream = self.stream(key.name)
        return stream.add_subscriber(
            self._engine._next_id(), credentials, protocol, capacity or self.spec.subscriber_queue
        )

    async def _serve_stream(self, service: StreamService, stream: Stream, sub: Subscription) -> None:
        try:
            await service.serve_stream(stream, sub)
        except Exception:
            log.exception("stream service %s failed on %s; the stream goes on", service.name, stream.key)
        finally:
            self.unsubscribe(sub)

    @staticmethod
    def unsubscribe(sub: Subscription) -> None:
        sub.stream.remove_subscriber(sub, EndReason.UNSUBSCRIBED)
        sub._close()
