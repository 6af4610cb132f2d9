"""The engine: applications, publishers, subscribers and protocol workers under one nursery.

Structure (all of it structured concurrency, nothing global)::

    engine nursery
    ├── application "live" nursery ── stream task, stream task, ...
    ├── application "other" nursery ── ...
    └── protocol workers (RTMP, HTTP, ...), each started with ``nursery.start``

Running: ``async with engine:`` or ``await nursery.start(engine.serve)``. Both return once every
application runs and every protocol worker is ready (its port bound). Leaving cancels everything
and returns only when every task has ended.

Error policy: a protocol worker that raises brings the engine down with that exception (a single
exception comes out as itself, not wrapped in an exception group). A stream or a subscriber that
fails is logged and ended; nothing else is disturbed. Errors meant for callers are the
:mod:`~.errors` hierarchy.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Protocol, runtime_checkable

import trio

from .application import Application
from .auth import AllowAll, Authenticator
from ..core.errors import AppAlreadyRegistered, AppNotFound, EngineClosed, Unauthorized
from .events import EventFeed
from ..core.keys import Credentials, StreamKey
from ..core.text import printable
from .observe import Observer, SafeObserver
from .spec import AppSpec
from .stream import Publisher, Stream
from .subscription import Subscription
from .throttle import AuthThrottle

__all__ = ["Engine", "EngineBuilder", "ProtocolWorker", "StreamService"]

log = logging.getLogger("arcly_trio.engine")


@runtime_checkable
class ProtocolWorker(Protocol):
    """A protocol server (RTMP, HTTP...) that the engine runs.

    ``serve`` is started with ``nursery.start(worker.serve, engine)``: it must call
    ``task_status.started(...)`` once it accepts connections (port bound), then serve until
    cancelled. An exception out of ``serve`` stops the engine.
    """

    async def serve(self, engine: Engine, *, task_status: trio.TaskStatus[Any] = ...) -> None: ...


@runtime_checkable
class StreamService(Protocol):
    """Per-stream work (HLS packaging, recording...) that the engine runs for every stream.

    When an application that the service ``applies_to`` creates a stream, the engine subscribes
    the service to it at once (protocol ``name``, queue ``capacity``: it sees every frame from
    the first) and runs ``serve_stream`` in the application's nursery until the subscription
    ends. An exception from ``serve_stream`` is logged; it never disturbs the stream.
    """

    name: str
    capacity: int

    def applies_to(self, spec: AppSpec) -> bool: ...

    async def serve_stream(self, stream: Stream, subscription: Subscription) -> None: ...


class EngineBuilder:
    """Fluent configuration of an :class:`Engine`; ``build()`` makes one (many may coexist)."""

    def __init__(self) -> None:
        self._max_publishers: int | float = math.inf
        self._idle_timeout: float | None = None
        self._apps: dict[str, AppSpec] = {}
        self._authenticator: Authenticator = AllowAll()
        self._observer: Observer = Observer()
        self._workers: list[ProtocolWorker] = []
        self._services: list[StreamService] = []
        self._throttle: AuthThrottle | None = None

    def max_publishers(self, n: int) -> EngineBuilder:
        """At most ``n`` concurrent publishers across all applications."""
        if n < 0:
            raise ValueError("max_publishers must be >= 0")
        self._max_publishers = n
        return self

    def idle_timeout(self, seconds: float | None) -> EngineBuilder:
        """Reap a stream after ``seconds`` without a frame (``None``: never)."""
        if seconds is not None and seconds <= 0:
            raise ValueError("idle_timeout must be > 0 or None")
        self._idle_timeout = seconds
        return self

    def application(self, spec: AppSpec | str) -> EngineBuilder:
        spec = AppSpec(spec) if isinstance(spec, str) else spec
        if spec.name in self._apps:
            raise AppAlreadyRegistered(spec.name)
        self._apps[spec.name] = spec
        return self

    def authenticator(self, authenticator: Authenticator) -> EngineBuilder:
        self._authenticator = authenticator
        return self

    def auth_throttle(self, throttle: AuthThrottle) -> EngineBuilder:
        """How refused authorizations are slowed down per address (default: ``AuthThrottle()``)."""
        self._throttle = throttle
        return self

    def observer(self, observer: Observer) -> EngineBuilder:
        self._observer = observer
        return self

    def protocol(self, worker: ProtocolWorker) -> EngineBuilder:
        self._workers.append(worker)
        return self

    def service(self, service: StreamService) -> EngineBuilder:
        self._services.append(service)
        return self

    def build(self) -> Engine:
        return Engine(
            max_publishers=self._max_publishers,
            idle_timeout=self._idle_timeout,
            apps=list(self._apps.values()),
            authenticator=self._authenticator,
            observer=self._observer,
            workers=list(self._workers),
            services=list(self._services),
            auth_throttle=self._throttle,
        )


@contextmanager
def _unwrap_single() -> Iterator[None]:
    """Let a lone exception out of a nursery as itself rather than in an ExceptionGroup."""
    try:
        yield
    except BaseExceptionGroup as group:
        leaves = _leaves(group)
        if len(leaves) == 1:
            raise leaves[0] from None
        raise


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            out.extend(_leaves(exc))
        else:
            out.append(exc)
    return out


class Engine:
    """A streaming engine (see the module docstring). Make one with :meth:`Engine.builder`."""

    def __init__(
        self,
        *,
        max_publishers: int | float,
        idle_timeout: float | None,
        apps: list[AppSpec],
        authenticator: Authenticator,
        observer: Observer,
        workers: list[ProtocolWorker],
        services: list[StreamService] | None = None,
        auth_throttle: AuthThrottle | None = None,
    ) -> None:
        self._max_publishers = max_publishers
        self._idle_timeout = idle_timeout
        self._initial_apps = apps
        self._authenticator = authenticator
        self._observer = SafeObserver(observer)
        self._workers = workers
        self._services = services or []
        self.auth_throttle = auth_throttle if auth_throttle is not None else AuthThrottle()
        """Slows down addresses whose authorizations are refused (see :mod:`.throttle`)."""
        self._stopping = False
        self._stopped = trio.Event()
        self._apps: dict[str, Application] = {}
        self._publishers = 0
        self._ids = itertools.count(1)
        self._nursery: trio.Nursery | None = None
        self._outer: Any = None
        self.stream_failures = 0
        """Streams that ended because of a bug (an exception in the kernel); should stay 0."""
        self.worker_info: dict[int, Any] = {}
        """What each protocol worker passed to ``task_status.started`` (its bound port...),
        keyed by the worker's index in registration order."""

    @staticmethod
    def builder() -> EngineBuilder:
        return EngineBuilder()

    # ------------------------------------------------------------- running

    @property
    def running(self) -> bool:
        return self._nursery is not None

    @property
    def publisher_count(self) -> int:
        return self._publishers

    @property
    def max_publisher_count(self) -> int | float:
        return self._max_publishers

    @property
    def workers(self) -> list[ProtocolWorker]:
        return list(self._workers)

    async def serve(self, *, task_status: trio.TaskStatus[Engine] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the engine until cancelled. ``started`` once all apps and workers are ready."""
        if self._nursery is not None:
            raise RuntimeError("this engine is already running")
        self._stopped = trio.Event()
        with _unwrap_single():
            try:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    for spec in self._initial_apps:
                        await self._start_app(spec)
                    for index, worker in enumerate(self._workers):
                        self.worker_info[index] = await nursery.start(worker.serve, self)
                    task_status.started(self)
                    await trio.sleep_forever()
            finally:
                self._nursery = None
                self._stopping = False
                self._apps.clear()
                self._stopped.set()

    async def __aenter__(self) -> Engine:
        outer = trio.open_nursery()
        nursery = await outer.__aenter__()
        try:
            await nursery.start(self.serve)
        except BaseException as exc:
            nursery.cancel_scope.cancel()
            with _unwrap_single():
                await outer.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        self._outer = (outer, nursery)
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> bool | None:
        outer, nursery = self._outer
        self._outer = None
        nursery.cancel_scope.cancel()
        with _unwrap_single():
            return await outer.__aexit__(exc_type, exc, tb)  # type: ignore[no-any-return]

    def stop(self) -> None:
        """Cancel the engine's nursery (everything ends; ``serve`` returns)."""
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    @property
    def stopping(self) -> bool:
        """True once a graceful shutdown has begun: new publishes and plays are refused."""
        return self._stopping

    async def shutdown(self, grace: float = 5.0) -> None:
        """Stop gracefully: refuse newcomers, end every stream (publishers get
        ``PublishEnded``, subscribers end with ``SHUTDOWN`` after their queued frames, so
        protocol workers can say goodbye and services can finish their files), wait up to
        ``grace`` seconds for streams, services and the protocol workers' connections to wind
        down, then cancel whatever is left. Returns when the engine has stopped."""
        nursery = self._nursery
        if nursery is None:
            return
        self._stopping = True
        with trio.move_on_after(grace):
            for stream in self.streams():
                stream.shutdown()
            while any(app.busy for app in self._apps.values()) or any(
                getattr(worker, "connections", 0) for worker in self._workers
            ):
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
        await self._stopped.wait()

    # -------------------------------------------------------- applications

    async def _start_app(self, spec: AppSpec) -> Application:
        nursery = self._nursery
        if nursery is None:
            raise EngineClosed()
        if spec.name in self._apps:
            raise AppAlreadyRegistered(spec.name)
        app = Application(self, spec)
        self._apps[spec.name] = app
        try:
            await nursery.start(app.run, name=f"app {spec.name}")
        except BaseException:
            self._apps.pop(spec.name, None)
            raise
        return app

    async def add_application(self, spec: AppSpec | str) -> Application:
        """Register and start an application at runtime (``AppAlreadyRegistered`` if taken)."""
        return await self._start_app(AppSpec(spec) if isinstance(spec, str) else spec)

    def applications(self) -> list[Application]:
        return list(self._apps.values())

    def application(self, name: str) -> Application:
        try:
            return self._apps[name]
        except KeyError:
            raise AppNotFound(name) from None

    def streams(self) -> list[Stream]:
        return [stream for app in self._apps.values() for stream in app.streams()]

    def stream(self, key: StreamKey | str) -> Stream:
        """The live stream at ``key`` (``AppNotFound``/``StreamNotFound`` if there is none)."""
        key = StreamKey.parse(key) if isinstance(key, str) else key
        return self.application(key.app).stream(key.name)

    @asynccontextmanager
    async def events(self, app: str, capacity: int = 256) -> AsyncIterator[EventFeed]:
        """The event feed of one application (see :mod:`~.events`)."""
        async with self.application(app).events.listen(capacity) as feed:
            yield feed

    # -------------------------------------------------- publish / subscribe

    def _next_id(self) -> int:
        return next(self._ids)

    def _release_publisher(self) -> None:
        self._publishers -= 1

    def _running_app(self, key: StreamKey) -> Application:
        if self._nursery is None or self._stopping:
            raise EngineClosed()
        return self.application(key.app)

    async def authorize(self, action: str, key: StreamKey, credentials: Credentials) -> None:
        """Ask the authenticator whether ``credentials`` may ``action`` (``"publish"`` or
        ``"play"``) ``key``; raise :class:`~arcly_trio.core.errors.Unauthorized` if not.

        The one authorization path: ``publish`` and ``subscribe`` call it, and so does every
        egress that serves a stream without subscribing to it (HLS). A client whose address
        was refused recently waits first (:attr:`auth_throttle`); every refusal is counted
        there and logged once per burst.
        """
        address = credentials.peer[0] if credentials.peer else None
        await self.auth_throttle.wait(address, action)
        check = (self._authenticator.authorize_publish if action == "publish"
                 else self._authenticator.authorize_play)
        try:
            if await check(key, credentials) is False:
                raise Unauthorized(key.app, key.name, action)
        except Unauthorized as exc:
            via = f" over {credentials.protocol}" if credentials.protocol else ""
            self.auth_throttle.refused(address, action, f"{action} of {key}{via}: {printable(exc.reason) or 'refused'}")
            raise
        self.auth_throttle.allowed(address, action)

    @asynccontextmanager
    async def publish(
        self,
        key: StreamKey | str,
        credentials: Credentials | None = None,
        *,
        protocol: str = "",
    ) -> AsyncIterator[Publisher]:
        """Publish to ``key`` for the duration of the block.

        Raises ``AppNotFound``, ``Unauthorized``, ``StreamAlreadyPublishing`` (policy
        ``reject``), ``PublisherLimitReached`` on entry. Leaving the block ends the publish exactly
        once, whatever the exit (an exception ends it as "failed"; frames already sent are still
        delivered). If the kernel ends the session first (reaped, replaced, engine stopping), the
        block is cancelled and leaving it raises the ``PublishEnded`` subclass that says why.
        """
        key = StreamKey.parse(key) if isinstance(key, str) else key
        credentials = credentials or Credentials(protocol=protocol)
        app = self._running_app(key)
        await self.authorize("publish", key, credentials)
        app = self._running_app(key)
        session = app.begin_publish(key, credentials, protocol or credentials.protocol)
        publisher = session.publisher
        try:
            with session.scope:
                yield publisher
        except BaseException as exc:
            session.abort("cancelled" if isinstance(exc, trio.Cancelled) else "failed")
            raise
        finally:
            publisher.close()
        if session.scope.cancelled_caught and session.end_error is not None:
            raise session.end_error

    @asynccontextmanager
    async def subscribe(
        self,
        key: StreamKey | str,
        credentials: Credentials | None = None,
        *,
        protocol: str = "",
        capacity: int | None = None,
    ) -> AsyncIterator[Subscription]:
        """Subscribe to ``key`` for the duration of the block (see :class:`Subscription`).

        Raises ``AppNotFound``, ``Unauthorized`` or ``StreamNotFound`` on entry. ``capacity``
        overrides the application's ``subscriber_queue`` for this subscriber.
        """
        key = StreamKey.parse(key) if isinstance(key, str) else key
        credentials = credentials or Credentials(protocol=protocol)
        self._running_app(key)
        await self.authorize("play", key, credentials)
        app = self._running_app(key)
        sub = app.subscribe(key, credentials, protocol or credentials.protocol, capacity)
        try:
            yield sub
        finally:
            app.unsubscribe(sub)
