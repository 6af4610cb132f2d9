"""Stream sources: where a stream that is not published here comes from (pulls, cluster peers).

A :class:`StreamSource` is consulted by the engine when a play request (``subscribe``,
``attach``, or :meth:`~arcly_trio.kernel.engine.Engine.locate` for egresses that serve without
subscribing) names a key with no live stream, *after* the request was authorized
(``engine.authorize``: a pulled stream's viewers go through the one authorization path like any
other). If a source ``provides(key)``, the engine runs its ``open_stream`` for that key: the
source connects to wherever the stream is, publishes it into the engine with
``engine.publish`` (so it is an ordinary stream: GOP cache, services, every egress) and reports
``task_status.started()`` once it publishes; the waiting viewers then subscribe.

Single flight: there is at most one :class:`SourceRequest` per key. Viewers that arrive while a
source is starting wait for that one; viewers that arrive while it runs subscribe to its stream;
the first failure is given to every waiter (``StreamNotFound`` when no source had it). A source
stops by itself when its stream has had no viewer for its idle period
(:meth:`SourceRequest.wait_idle`): the decision and the mark that the request is stopping happen
in one synchronous step, and a viewer arriving after it waits for that pull to end and starts a
new one, so no viewer is ever attached to a pull that is going away.

A source may also have (the engine looks for them, as for stream services):

* ``async claim_publish(key, credentials) -> release``: consulted before a publish of ``key``
  is accepted here (a cluster refuses a key another node owns with
  :class:`~arcly_trio.core.errors.StreamPublishedElsewhere`); ``release()`` is called once when
  that publish ends;
* ``async run(engine, *, task_status)``, ``stream_status(key)``, ``health_status()``: its
  lifecycle and what it adds to ``/api/streams`` and ``/api/health``.

Limits: at most ``max_active`` keys are brought at once (``EngineBuilder.max_pulls``); past it
a play of a key that is not here is refused at once (``StreamNotFound``, logged once per
thousand), so a flood of plays of made-up names cannot open unbounded upstream connections.

Error policy: a source's ``open_stream`` that raises a :class:`~arcly_trio.core.errors.StreamError`
before it started is a refusal for the waiting viewers (the next source that provides the key is
tried); anything else it raises is logged and becomes ``StreamNotFound`` for them. Once started,
its end (whatever the reason) ends only its stream.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import trio

from ..core.errors import StreamError, StreamNotFound
from ..core.excgroups import unwrap_single
from ..core.keys import Credentials, StreamKey

if TYPE_CHECKING:
    from .engine import Engine
    from .stream import Stream

__all__ = ["StreamSource", "SourceRequest", "Sourcing"]

log = logging.getLogger("arcly_trio.sources")


class StreamSource(Protocol):
    """Brings streams that are not published here (see the module docstring)."""

    name: str

    def provides(self, key: StreamKey) -> bool: ...

    async def open_stream(self, engine: Engine, request: SourceRequest, *,
                          task_status: trio.TaskStatus[None] = ...) -> None: ...


class SourceRequest:
    """The one pull of a key: who waits for it, when it was last wanted, whether it stops.

    Attributes:
        key: the stream it brings.
        source: the name of the source running it (once one runs).
        stopping: set (synchronously) once the source has decided to stop.
        error: why it failed, for the viewers that waited (``None`` if it started).
    """

    def __init__(self, key: StreamKey) -> None:
        self.key = key
        self.source = ""
        self.ready = trio.Event()
        """Set once the source publishes the stream, or has failed (``error``)."""
        self.done = trio.Event()
        """Set once the request has ended."""
        self.error: StreamError | None = None
        self.stopping = False
        self.waiting = 0
        self.last_wanted = trio.current_time()

    def touch(self) -> None:
        """Someone wants the stream now (a viewer arrived, an HLS playlist was asked for)."""
        self.last_wanted = trio.current_time()

    def viewers(self, engine: Engine) -> int:
        """Subscribers of the stream other than stream services (recording, HLS, pushes)."""
        try:
            stream: Stream = engine.stream(self.key)
        except StreamError:
            return 0
        services = engine.service_names
        return sum(1 for sub in stream.fanout.subscribers if sub.protocol not in services)

    async def wait_idle(self, engine: Engine, idle: float) -> None:
        """Return once the stream has had no viewer and no demand for ``idle`` seconds; the
        request is then marked ``stopping`` in the same step, so no new viewer joins it."""
        poll = max(0.05, min(1.0, idle / 4))
        while True:
            await trio.sleep(poll)
            now = trio.current_time()
            if self.waiting or self.viewers(engine):
                self.last_wanted = now
            elif now - self.last_wanted >= idle:
                self.stopping = True
                return

    def __repr__(self) -> str:
        state = "stopping" if self.stopping else ("ready" if self.ready.is_set() else "starting")
        return f"<SourceRequest {self.key} {self.source or '-'} {state}>"


class Sourcing:
    """The engine's sources and their requests, one per key (see the module docstring)."""

    def __init__(self, sources: Sequence[StreamSource], *, max_active: int = 256) -> None:
        self.sources = tuple(sources)
        self.max_active = max_active
        """Most keys being brought at once: a flood of plays of names that are not here
        (each one an upstream connection) is refused past it, with ``StreamNotFound``."""
        self.refused_total = 0
        self.active: dict[StreamKey, SourceRequest] = {}
        self.started_total = 0
        """Source runs started (each pull counts once, however many viewers shared it)."""
        self._claimers = [source for source in self.sources if hasattr(source, "claim_publish")]

    async def obtain(self, engine: Engine, key: StreamKey, nursery: trio.Nursery) -> None:
        """Make sure ``key`` is here if a source can bring it: returns at once when it is
        published here or no source provides it (the caller then finds it, or not), after the
        source started otherwise; raises the source's refusal. The caller subscribes right
        after, with no checkpoint in between."""
        while True:
            request = self.active.get(key)
            if request is None:
                if engine.has_stream(key):
                    return
                candidates = [source for source in self.sources if source.provides(key)]
                if not candidates:
                    return
                if len(self.active) >= self.max_active:
                    self.refused_total += 1
                    if self.refused_total == 1 or self.refused_total % 1000 == 0:
                        log.warning("%d streams are being pulled already: %s refused (%d so far)",
                                    len(self.active), key, self.refused_total)
                    raise StreamNotFound(key.app, key.name)
                request = self.active[key] = SourceRequest(key)
                self.started_total += 1
                nursery.start_soon(self._run, engine, candidates, request, name=f"source {key}")
            if request.stopping:
                await request.done.wait()
                continue
            request.touch()
            if not request.ready.is_set():
                request.waiting += 1
                try:
                    await request.ready.wait()
                finally:
                    request.waiting -= 1
                request.touch()
            if request.error is not None:
                raise request.error
            return

    async def _run(self, engine: Engine, candidates: list[StreamSource], request: SourceRequest) -> None:
        error: StreamError = StreamNotFound(request.key.app, request.key.name)
        try:
            for source in candidates:
                request.source = source.name
                try:
                    with unwrap_single():
                        async with trio.open_nursery() as nursery:
                            try:
                                with unwrap_single():
                                    await nursery.start(source.open_stream, engine, request)
                            except StreamError as exc:
                                error = exc
                                continue
                            request.ready.set()
                except StreamError as exc:  # after it started: its stream ended, for this reason
                    log.info("source %s of %s ended: %s", source.name, request.key, exc)
                except Exception:
                    log.exception("source %s of %s failed", source.name, request.key)
                if request.ready.is_set():
                    return
            request.error = error
        finally:
            if self.active.get(request.key) is request:
                del self.active[request.key]
            request.stopping = True
            request.ready.set()
            request.done.set()

    async def claim_publish(self, key: StreamKey, credentials: Credentials) -> Callable[[], None]:
        """Ask every source that claims publishes; returns the one release of them all."""
        releases: list[Callable[[], None]] = []
        try:
            for source in self._claimers:
                releases.append(await source.claim_publish(key, credentials))  # type: ignore[attr-defined]
        except BaseException:
            for release in releases:
                release()
            raise

        def release_all() -> None:
            for release in releases:
                release()
            releases.clear()

        return release_all

    def status(self, key: StreamKey) -> dict[str, Any] | None:
        request = self.active.get(key)
        if request is None:
            return None
        return {"source": request.source, "stopping": request.stopping,
                "idle_for": _seconds(trio.current_time() - request.last_wanted)}


def _seconds(value: float) -> float:
    return round(value, 3) if math.isfinite(value) else 0.0
