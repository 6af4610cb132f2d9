"""The engine: applications, publishers, subscribers and protocol workers under one nursery.

Structure (all of it structured concurrency, nothing global)::

    engine nursery
    ├── loop watch (how late the event loop runs)
    ├── application "live" nursery ── stream task, stream service tasks, ...
    ├── application "other" nursery ── ...
    └── protocol workers (RTMP, HTTP, ...), each started with ``nursery.start``

Running: ``async with engine:`` or ``await nursery.start(engine.serve)``. Both return once every
application runs and every protocol worker is ready (its port bound). Leaving cancels everything
and returns only when every task has ended. From the moment the engine starts to stop
(``stop()``, leaving the block, ``shutdown()``) it refuses new publishers and subscribers with
:class:`~arcly_trio.core.errors.EngineClosed`, even those whose authorization was in flight.
Its state (new, running, stopping, stopped) moves only through the table of :mod:`.lifecycle`.

Authorization: every publish and play of every protocol goes through :meth:`Engine.authorize`,
the engine's :class:`~.gate.AuthorizationGate` (``publish`` calls it, and ``subscribe`` and
``attach`` through their one admission step; HLS and DASH, which serve without
subscribing, call it themselves, once per player's session: :mod:`.polled`), which lets each
address have only a few authorizations in flight per action and spaces the tries of addresses
whose attempts were refused (:mod:`.throttle`), tells the observers each decision
(:class:`~.events.AuthDecided`) and follows an authenticator's rename (redirect).

Publisher slots and rate limits: :attr:`Engine.publishers` (:mod:`.publishers`) admits at most
``max_publishers`` publishers at once and ``max_publishers_per_address`` from one client
address, and gives each publish session of an application with ``max_publish_bitrate`` its token
bucket. A publish that sends no media within ``publish_start_timeout`` seconds gives its slot
back (see :mod:`.stream`).

Sessions: each publish and play gets a client id before it is authorized and is listed in
:attr:`Engine.sessions` while it lasts (see :mod:`.sessions`); :meth:`Engine.kick` ends one and
says who asked. Players that poll (HLS, DASH) have sessions too, kept by the egress in
:attr:`Engine.polled` (see :mod:`.polled`): begun once authorized, ended after an idle timeout,
counted and listed like subscribers.
Health: :attr:`Engine.health` holds named checks (see :mod:`.health`); the engine adds one per
protocol worker and one for the event loop's lag.

Plugins: stream services, stream sources, observers and the authenticator may each have
``run(engine, *, task_status)`` (started with the engine, before the protocol workers),
``install_routes(router)`` (HTTP routes) and ``health_status()`` (see :attr:`Engine.plugins`).

Error policy: a protocol worker that raises brings the engine down with that exception (a single
exception comes out as itself, not wrapped in an exception group). A stream or a subscriber that
fails is logged and ended; nothing else is disturbed. An authenticator that raises anything but
``Unauthorized`` refuses (``Unauthorized("authorization failed")``, counted, delayed, told to
the observers, its detail logged once): :meth:`Engine.authorize` never lets another exception
out. Errors meant for callers are the :mod:`arcly_trio.core.errors` hierarchy.
"""

from __future__ import annotations

import functools
import itertools
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Protocol, runtime_checkable

import trio

from arcly_trio.core.errors import AppAlreadyRegistered, AppNotFound, EngineClosed, PublisherKicked
from arcly_trio.core.excgroups import unwrap_single
from arcly_trio.core.frame import Frame
from arcly_trio.core.keys import Credentials, StreamKey
from arcly_trio.core.text import printable
from arcly_trio.kernel.activity import Activity
from arcly_trio.kernel.application import Application
from arcly_trio.kernel.auth import Authenticator
from arcly_trio.kernel.builder import EngineOptions
from arcly_trio.kernel.events import EventFeed, SessionKicked, StreamEvent
from arcly_trio.kernel.fanout import EndReason, Sink, Subscriber
from arcly_trio.kernel.gate import AuthorizationGate
from arcly_trio.kernel.health import CheckResult, HealthRegistry
from arcly_trio.kernel.lifecycle import EngineState, Lifecycle
from arcly_trio.kernel.loopwatch import LoopWatch
from arcly_trio.kernel.observe import Observer, ObserverSet
from arcly_trio.kernel.polled import PolledSessions
from arcly_trio.kernel.publishers import PublisherSlots
from arcly_trio.kernel.ratelimit import PublishRateLimit
from arcly_trio.kernel.service import StreamService
from arcly_trio.kernel.sessions import ClientSession, SessionTable
from arcly_trio.kernel.sources import Sourcing, StreamSource
from arcly_trio.kernel.spec import AppSpec
from arcly_trio.kernel.stream import Publisher, Stream
from arcly_trio.kernel.subscription import Subscription
from arcly_trio.kernel.throttle import AuthThrottle

__all__ = ["Engine", "EngineBuilder", "ProtocolWorker", "RunsWithEngine", "StreamService", "StreamSource"]

log = logging.getLogger("arcly_trio.engine")


@runtime_checkable
class ProtocolWorker(Protocol):
    """A protocol server (RTMP, HTTP...) that the engine runs.

    ``serve`` is started with ``nursery.start(worker.serve, engine)``: it must call
    ``task_status.started(...)`` once it accepts connections (port bound), then serve until
    cancelled. An exception out of ``serve`` stops the engine. A worker counts its busy
    connections in ``engine.activity`` so that a graceful shutdown can wait for them.
    """

    async def serve(self, engine: Engine, *, task_status: trio.TaskStatus[Any] = ...) -> None: ...


@runtime_checkable
class RunsWithEngine(Protocol):
    """A plugin's optional lifecycle hook (a stream service, a source, an observer, the
    authenticator: :attr:`Engine.plugins`): ``run`` is started with
    ``nursery.start(plugin.run, engine)`` when the engine starts, before the workers; it reports
    ``task_status.started()`` once ready and runs until cancelled. Its exception stops the engine."""

    async def run(self, engine: Engine, *, task_status: trio.TaskStatus[None] = ...) -> None: ...


class EngineBuilder(EngineOptions):
    """Fluent configuration of an :class:`Engine` (its options: :class:`~.builder.EngineOptions`)
    plus its protocol workers; ``build()`` makes one (many may coexist)."""

    def __init__(self) -> None:
        super().__init__()
        self._workers: list[ProtocolWorker] = []

    def protocol(self, worker: ProtocolWorker) -> EngineBuilder:
        self._workers.append(worker)
        return self

    def build(self) -> Engine:
        settings = self.settings
        return Engine(
            max_publishers=settings.max_publishers,
            max_publishers_per_address=settings.max_publishers_per_address,
            exempt_addresses=settings.exempt_addresses,
            idle_timeout=settings.idle_timeout,
            publish_start_timeout=settings.publish_start_timeout,
            apps=list(settings.apps.values()),
            authenticator=settings.authenticator,
            observers=list(settings.observers),
            workers=list(self._workers),
            services=list(settings.services),
            sources=list(settings.sources),
            max_pulls=settings.max_pulls,
            auth_throttle=settings.auth_throttle,
            session_prefix=settings.session_prefix,
            max_loop_lag=settings.max_loop_lag,
        )


class Engine:
    """A streaming engine (see the module docstring). Make one with :meth:`Engine.builder`."""

    def __init__(
        self,
        *,
        max_publishers: int | float,
        idle_timeout: float | None,
        apps: list[AppSpec],
        max_publishers_per_address: int | None = None,
        exempt_addresses: Iterable[str] = (),
        publish_start_timeout: float | None = None,
        authenticator: Authenticator,
        workers: list[ProtocolWorker],
        observer: Observer | None = None,
        observers: Sequence[Observer] = (),
        services: Sequence[StreamService] = (),
        sources: Sequence[StreamSource] = (),
        max_pulls: int = 256,
        auth_throttle: AuthThrottle | None = None,
        session_prefix: str = "",
        max_loop_lag: float = 1.0,
    ) -> None:
        self.publishers = PublisherSlots(max_publishers, max_publishers_per_address, exempt_addresses)
        """The publisher count, its limits and the publish rate-limit buckets (see :mod:`.publishers`)."""
        self.idle_timeout = idle_timeout
        self.publish_start_timeout = publish_start_timeout
        """Seconds a new publish may take to send its first media frame (``None``: no limit)."""
        self._initial_apps = apps
        self.observers = ObserverSet([*([observer] if observer is not None else []), *observers])
        """Every observer, each failure-proof (see :mod:`.observe`)."""
        self._workers = workers
        self.services: Sequence[StreamService] = tuple(services)
        self.service_names = frozenset(service.name for service in self.services)
        """The names stream services subscribe under (their subscriptions are not viewers)."""
        self.sourcing = Sourcing(sources, max_active=max_pulls)
        """The stream sources and their one request per key (see :mod:`.sources`)."""
        self.gate = AuthorizationGate(
            authenticator, auth_throttle if auth_throttle is not None else AuthThrottle(), self.notify
        )
        """Every publish's and play's authorization (see :mod:`.gate`)."""
        self.loop_watch = LoopWatch()
        """How late the event loop runs (see :mod:`.loopwatch`)."""
        self.activity = Activity()
        """Busy connections of the protocol workers (a graceful shutdown waits for them)."""
        self.sessions = SessionTable(session_prefix)
        """Every client's publish and play while it lasts (see :mod:`.sessions`)."""
        self.health = HealthRegistry()
        """Named health checks for ``/api/health`` (see :mod:`.health`)."""
        self.max_loop_lag = max_loop_lag
        self.lifecycle = Lifecycle()
        """The engine's :class:`~.lifecycle.EngineState`, changed only through its table."""
        self._stopped = trio.Event()
        self._apps: dict[str, Application] = {}
        self._ids = itertools.count(1)
        self.polled = PolledSessions(self.sessions, self._notify_app, self.next_id)
        """The sessions of players that poll, HLS and DASH (see :mod:`.polled`)."""
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

    def add_observer(self, observer: Observer) -> None:
        """Add an observer before the engine starts (``RuntimeError`` once it runs)."""
        if self._nursery is not None:
            raise RuntimeError("observers are added before the engine starts")
        self.observers = ObserverSet([*self.observers.observers, observer])

    # ------------------------------------------------------------- AppHost

    @property
    def frame_hook(self) -> Callable[[StreamKey, Frame], None] | None:
        return self.observers.frame_hook

    def notify(self, event: StreamEvent) -> None:
        self.observers.notify(event)

    def next_id(self) -> int:
        return next(self._ids)

    def _notify_app(self, event: StreamEvent) -> None:
        """Tell ``event`` to its application's feed and the observers (only the observers if
        the application is gone)."""
        app = self._apps.get(event.key.app)
        if app is not None:
            app.notify(event)
        else:
            self.observers.notify(event)

    def claim_publisher(self, credentials: Credentials) -> Callable[[], None]:
        """Count one more publisher (see :meth:`.publishers.PublisherSlots.claim`)."""
        return self.publishers.claim(credentials)

    def publish_rate_limit(self, credentials: Credentials, spec: AppSpec) -> PublishRateLimit | None:
        """A new publish session's rate limit (see :meth:`.publishers.PublisherSlots.rate_limit`)."""
        return self.publishers.rate_limit(credentials, spec, trio.current_time())

    @property
    def max_publishers_per_address(self) -> int | None:
        return self.publishers.max_per_address

    @max_publishers_per_address.setter
    def max_publishers_per_address(self, n: int | None) -> None:
        self.publishers.max_per_address = n

    @property
    def exempt_addresses(self) -> frozenset[str]:
        return self.publishers.exempt_addresses

    def publishers_from(self, address: str) -> int:
        """How many publishers from ``address`` are counted against the per-address limit."""
        return self.publishers.from_address(address)

    def stream_failed(self, stream: Stream) -> None:
        self.stream_failures += 1

    # ------------------------------------------------------------- running

    @property
    def running(self) -> bool:
        return self._nursery is not None

    @property
    def stopping(self) -> bool:
        """True once the engine has begun to stop: new publishes and plays are refused."""
        return self.lifecycle.stopping

    @property
    def state(self) -> EngineState:
        return self.lifecycle.state

    @property
    def publisher_count(self) -> int:
        return self.publishers.count

    @property
    def max_publisher_count(self) -> int | float:
        return self.publishers.max_publishers

    def set_max_publishers(self, n: int | float) -> None:
        """Change the publisher limit while running (a reload): publishers over a lowered
        limit keep publishing; new ones are refused until the count is under it
        (``ValueError`` if negative)."""
        self.publishers.set_max(n)

    @property
    def sources(self) -> Sequence[StreamSource]:
        return self.sourcing.sources

    @property
    def authenticator(self) -> Authenticator:
        return self.gate.authenticator

    @property
    def auth_throttle(self) -> AuthThrottle:
        """Slows down addresses whose authorizations are refused (see :mod:`.throttle`)."""
        return self.gate.throttle

    @property
    def authenticator_failures(self) -> int:
        """Authorizations refused because the authenticator raised something other than
        ``Unauthorized`` (a bug); should stay 0."""
        return self.gate.authenticator_failures

    @property
    def plugins(self) -> list[Any]:
        """Stream services, stream sources, observers and the authenticator (each once): what
        may have ``run`` (:class:`RunsWithEngine`), ``install_routes``, ``stream_urls``,
        ``stream_status`` and ``health_status`` (all optional, each a protocol declared where it
        is called: see :mod:`.service`)."""
        found: dict[int, Any] = {}
        for plugin in (*self.services, *self.sources, *self.observers.observers, self.gate.authenticator):
            found.setdefault(id(plugin), plugin)
        return list(found.values())

    @property
    def workers(self) -> list[ProtocolWorker]:
        return list(self._workers)

    async def serve(self, *, task_status: trio.TaskStatus[Engine] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the engine until cancelled. ``started`` once all apps and workers are ready."""
        if self._nursery is not None:
            raise RuntimeError("this engine is already running")
        self._stopped = trio.Event()
        with unwrap_single():
            try:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    self.lifecycle.move(EngineState.RUNNING)
                    try:
                        await nursery.start(self.loop_watch.run, name="loop watch")
                        await nursery.start(self.polled.run, name="polled sessions")
                        self._add_health_checks()
                        for plugin in self.plugins:
                            if isinstance(plugin, RunsWithEngine):
                                name = getattr(plugin, "name", type(plugin).__name__)
                                await nursery.start(plugin.run, self, name=f"plugin {name}")
                        for spec in self._initial_apps:
                            await self._start_app(spec)
                        for index, worker in enumerate(self._workers):
                            self.worker_info[index] = await nursery.start(worker.serve, self)
                        task_status.started(self)
                        await trio.sleep_forever()
                    finally:
                        self._begin_stopping()
            finally:
                self._nursery = None
                self.lifecycle.move(EngineState.STOPPED)
                self._apps.clear()
                self._stopped.set()

    def _add_health_checks(self) -> None:
        """The engine's own checks: the event loop's lag and each protocol worker listening."""
        if not self.health.has("event-loop"):
            self.health.add("event-loop", self._loop_check, interval=0.0)
        for index, worker in enumerate(self._workers):
            name = f"listening:{getattr(worker, 'name', f'worker{index}')}"
            if self.health.has(name):
                name = f"{name}:{index}"
            if not self.health.has(name):
                self.health.add(name, functools.partial(self._worker_check, index, worker), interval=0.0)

    def _loop_check(self) -> CheckResult:
        lag = self.loop_watch.recent(seconds=10)
        detail = f"worst lag {lag * 1000:.1f} ms in the last 10 s (limit {self.max_loop_lag * 1000:.0f} ms)"
        return CheckResult(lag < self.max_loop_lag, detail)

    def _worker_check(self, index: int, worker: ProtocolWorker) -> CheckResult:
        listening = getattr(worker, "listening", index in self.worker_info)
        if listening:
            return CheckResult(True, _listening_on(worker, self.worker_info.get(index)))
        return CheckResult(False, "not listening")

    def _begin_stopping(self) -> None:
        """From now on nothing new is accepted (the nurseries are about to close)."""
        if self.lifecycle.state is EngineState.STOPPED:
            return  # it stopped by itself (a worker failed) before it was asked to
        self.lifecycle.move(EngineState.STOPPING)
        for app in self._apps.values():
            app.close()

    async def __aenter__(self) -> Engine:
        outer = trio.open_nursery()
        nursery = await outer.__aenter__()
        try:
            await nursery.start(self.serve)
        except BaseException as exc:
            nursery.cancel_scope.cancel()
            with unwrap_single():
                await outer.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        self._outer = (outer, nursery)
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> bool | None:
        outer, nursery = self._outer
        self._outer = None
        self._begin_stopping()
        nursery.cancel_scope.cancel()
        with unwrap_single():
            return await outer.__aexit__(exc_type, exc, tb)  # type: ignore[no-any-return]

    def stop(self) -> None:
        """Cancel the engine's nursery (everything ends; ``serve`` returns)."""
        if self._nursery is not None:
            self._begin_stopping()
            self._nursery.cancel_scope.cancel()

    async def shutdown(self, grace: float = 5.0) -> None:
        """Stop gracefully: refuse newcomers, end every stream (publishers get
        ``PublishEnded``, subscribers end with ``SHUTDOWN`` after their queued frames, so
        protocol workers can say goodbye and services can finish their files), then give the
        engine's nursery a deadline of ``grace`` seconds: it is cancelled as soon as every
        stream, stream service and busy connection has ended, or at the deadline, whichever is
        first. Returns when the engine has stopped."""
        nursery = self._nursery
        if nursery is None:
            return
        self._begin_stopping()
        nursery.cancel_scope.deadline = min(nursery.cancel_scope.deadline, trio.current_time() + grace)
        for stream in self.streams():
            stream.shutdown()
        for app in list(self._apps.values()):
            await app.wait_idle()
        await self.activity.wait_idle()
        self.polled.end_all(EndReason.SHUTDOWN)  # told before the observers' tasks stop
        nursery.cancel_scope.cancel()
        await self._stopped.wait()

    # -------------------------------------------------------- applications

    async def _start_app(self, spec: AppSpec) -> Application:
        nursery = self._nursery
        if nursery is None or not self.lifecycle.running:
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

    def update_application(self, spec: AppSpec) -> Application:
        """Give a running application a new policy: streams made from now on follow it, live
        ones keep theirs (``AppNotFound`` if there is no such application)."""
        app = self.application(spec.name)
        app.spec = spec
        return app

    async def remove_application(self, name: str, grace: float = 5.0) -> None:
        """Stop an application at runtime: it takes no new publisher or player at once, its
        streams end as in a shutdown (publishers and players told), and within ``grace``
        seconds its nursery is cancelled (``AppNotFound`` if there is none)."""
        app = self.application(name)
        del self._apps[name]
        app.close()
        for stream in app.streams():
            stream.shutdown()
        with trio.move_on_after(grace):
            await app.wait_idle()
        app.cancel()

    def applications(self) -> list[Application]:
        return list(self._apps.values())

    def application(self, name: str) -> Application:
        try:
            return self._apps[name]
        except KeyError:
            raise AppNotFound(name) from None

    def streams(self) -> list[Stream]:
        return [stream for app in self._apps.values() for stream in app.streams()]

    def has_stream(self, key: StreamKey) -> bool:
        """Whether a stream lives at ``key`` now (published here, or brought by a source)."""
        app = self._apps.get(key.app)
        return app is not None and app.has_stream(key.name)

    def stream(self, key: StreamKey | str) -> Stream:
        """The live stream at ``key`` (``AppNotFound``/``StreamNotFound`` if there is none)."""
        key = StreamKey.parse(key) if isinstance(key, str) else key
        return self.application(key.app).stream(key.name)

    @asynccontextmanager
    async def events(self, app: str, capacity: int = 256) -> AsyncIterator[EventFeed]:
        """The event feed of one application (see :mod:`.events`)."""
        async with self.application(app).events.listen(capacity) as feed:
            yield feed

    # -------------------------------------------------- publish / subscribe

    def _running_app(self, key: StreamKey) -> Application:
        if self._nursery is None or not self.lifecycle.running:
            raise EngineClosed()
        app = self.application(key.app)
        if not app.running:
            raise EngineClosed()
        return app

    def authorize(self, action: str, key: StreamKey, credentials: Credentials) -> Coroutine[Any, Any, StreamKey]:
        """Ask the authenticator whether ``credentials`` may ``action`` (``"publish"`` or
        ``"play"``) ``key``; raise :class:`~arcly_trio.core.errors.Unauthorized` if not. Returns
        the key to use: ``key``, or the one the authenticator renamed it to (a redirect).

        The one authorization path (:attr:`gate`, see :mod:`.gate`): ``publish``, ``subscribe``
        and ``attach`` call it, and so does every egress that serves a stream without
        subscribing to it (HLS). Each authorization takes a turn of its address's
        (:attr:`auth_throttle`); past the few waiting, it is refused at once with
        :class:`~arcly_trio.core.errors.AuthorizationBusy` (HTTP ``429``). Every refusal is
        counted and every decision told to the observers (:class:`~.events.AuthDecided`).
        Any exception an authenticator raises that is not ``Unauthorized`` is a refusal too,
        with the generic reason ``authorization failed``, never passed on to the worker.

        It hands back the gate's own coroutine (``await engine.authorize(...)``): a player's
        admission keeps no extra frame, which showed as RSS per subscriber.
        """
        return self.gate.authorize(action, key, credentials)

    def kick(self, session_id: str, *, by: str = "") -> ClientSession | None:
        """End the client session ``session_id`` (see :mod:`.sessions`); it, or ``None``.
        ``by`` says who asked (``"api-token holder at 203.0.113.7"``...: escaped, it goes into
        the log line and the :class:`~.events.SessionKicked` event)."""
        session = self.sessions.get(session_id)
        if session is not None:
            by = printable(by, 200)
            log.info(
                "session %s (%s of %s over %s from %s) kicked by %s",
                session.id,
                session.role,
                session.key,
                session.protocol,
                session.peer[0] if session.peer else "?",
                by or "the embedding program",
            )
            self.observers.notify(
                SessionKicked(
                    session.key, trio.current_time(), session.id, session.role, session.protocol, session.peer, by
                )
            )
            self.sessions.kick(session_id)
        return session

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
        ``reject``; ``StreamPublishedElsewhere`` when a stream source that claims publishes,
        a cluster, says another node has it), ``PublisherLimitReached`` (``AddressPublisherLimitReached``
        when the client's address holds its share), ``EngineClosed`` on
        entry. Leaving the block ends
        the publish exactly once, whatever the exit (an exception ends it as "failed"; frames
        already sent are still delivered). If the kernel ends the session first (reaped,
        replaced, engine stopping), the block is cancelled and leaving it raises the
        ``PublishEnded`` subclass that says why.
        """
        key = StreamKey.parse(key) if isinstance(key, str) else key
        credentials = self.sessions.identify(credentials or Credentials(protocol=protocol))
        self._running_app(key)
        key = await self.authorize("publish", key, credentials)
        release_claim = None
        if self.sourcing.claims_publishes:
            self._running_app(key).check_publish(key)  # refused here anyway: ask no one else
            release_claim = await self.sourcing.claim_publish(key, credentials)
        try:
            app = self._running_app(key)
            session = app.begin_publish(key, credentials, protocol or credentials.protocol)
            publisher = session.publisher

            def kick(session: Any = session, key: StreamKey = key) -> None:
                session.finish("kicked", PublisherKicked(key.app, key.name))

            try:
                with (
                    self.sessions.holding("publish", key, credentials, session.protocol, lambda: session.bytes, kick),
                    session.scope,
                ):
                    yield publisher
            except BaseException as exc:
                session.abort("cancelled" if isinstance(exc, trio.Cancelled) else "failed")
                raise
            finally:
                publisher.close()
                if session.rate_limit is not None:  # a reconnect gets this allowance back, not a new one
                    self.publishers.rate_limit_ended(credentials, session.rate_limit, trio.current_time())
        finally:
            if release_claim is not None:
                release_claim()
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

        Raises ``AppNotFound``, ``Unauthorized``, ``StreamNotFound``, ``EngineClosed`` on
        entry. A key that is not published here is asked of the stream sources (see
        :mod:`.sources`) once authorized; their refusal is raised. ``capacity`` overrides the application's
        ``subscriber_queue`` for this subscriber.
        """
        key, credentials, app = await self._admit_player(key, credentials, protocol)
        sub = app.subscribe(key, credentials, protocol or credentials.protocol, capacity)
        try:
            with self._holding_play(sub.subscriber):
                yield sub
        finally:
            app.unsubscribe(sub)

    @asynccontextmanager
    async def attach(
        self,
        key: StreamKey | str,
        sink: Sink,
        credentials: Credentials | None = None,
        *,
        protocol: str = "",
    ) -> AsyncIterator[Subscriber]:
        """Like :meth:`subscribe`, with a protocol worker's own :class:`~.fanout.Sink`.

        The stream's task hands frames straight to ``sink`` (which must never wait); the
        returned :class:`~.fanout.Subscriber` says what it missed and why it ended.
        """
        key, credentials, app = await self._admit_player(key, credentials, protocol)
        subscriber = app.attach(key, credentials, protocol or credentials.protocol, sink)
        try:
            with self._holding_play(subscriber):
                yield subscriber
        finally:
            app.detach(subscriber)

    async def _admit_player(
        self, key: StreamKey | str, credentials: Credentials | None, protocol: str
    ) -> tuple[StreamKey, Credentials, Application]:
        """The one admission step of a player (``subscribe`` and ``attach``): identified,
        refused at once if the engine or application is closed, authorized (the key it may be
        renamed to), brought by a stream source if it is not here; the key, the credentials
        and the running application to play from."""
        key = StreamKey.parse(key) if isinstance(key, str) else key
        credentials = self.sessions.identify(credentials or Credentials(protocol=protocol))
        self._running_app(key)
        key = await self.authorize("play", key, credentials)
        await self._from_sources(key, credentials.peer)
        return key, credentials, self._running_app(key)

    def _holding_play(self, subscriber: Subscriber) -> Any:
        """Register a player's session; kicking it ends its subscription (``KICKED``)."""

        def kick() -> None:
            app = self._apps.get(subscriber.key.app)
            if app is not None and app.has_stream(subscriber.key.name):
                app.stream(subscriber.key.name).remove_subscriber(subscriber, EndReason.KICKED)

        return self.sessions.holding(
            "play", subscriber.key, subscriber.credentials, subscriber.protocol, lambda: subscriber.bytes, kick
        )

    async def _from_sources(self, key: StreamKey, peer: tuple[str, int] | None) -> None:
        """Have a stream source bring ``key`` if it is not here (see :mod:`.sources`);
        ``peer`` is the address of the player that asks."""
        if self.sourcing.sources and self._nursery is not None:
            await self.sourcing.obtain(self, key, self._nursery, peer)

    async def locate(self, key: StreamKey | str, *, peer: tuple[str, int] | None = None) -> Stream:
        """The stream at ``key``, brought by a stream source if it is not here.

        For egresses that serve a stream without subscribing to it (HLS): call it once the
        request is authorized (``authorize("play", ...)``); each call counts as demand that
        keeps a pulled stream from going idle; ``peer``, the client's address, counts its
        pulls against the per-address limit (see :mod:`.sources`). Raises ``StreamNotFound`` (or the source's
        refusal), ``AppNotFound``, ``EngineClosed``.
        """
        key = StreamKey.parse(key) if isinstance(key, str) else key
        self._running_app(key)
        await self._from_sources(key, peer)
        return self.stream(key)


def _listening_on(worker: object, started: object) -> str:
    """Where a protocol worker listens, for its health check: ``host:port`` (``[::1]:port``),
    from its ``host`` and the port its ``serve`` reported as started (else its ``port``, when
    that is a number: the WebRTC worker's ``port`` is its UDP socket); its Unix socket's path;
    or ``""`` when it says neither."""
    port = started if isinstance(started, int) else getattr(worker, "port", None)
    if isinstance(port, bool) or not isinstance(port, int):
        unix = getattr(worker, "unix_socket", None)
        return unix if isinstance(unix, str) else ""
    host = getattr(worker, "host", None)
    if not isinstance(host, str) or not host:
        return f"port {port}"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
