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

The engine is seen here only through :class:`SourceHost` (what the requests and the sources
use of it), so this module does not import the engine.

A source may also have (the engine looks for them, as for stream services):

* ``async claim_publish(key, credentials) -> release`` (:class:`PublishClaimer`): consulted
  before a publish of ``key`` is accepted here (a cluster refuses a key another node owns with
  :class:`~arcly_trio.core.errors.StreamPublishedElsewhere`); ``release()`` is called once when
  that publish ends;
* ``async run(engine, *, task_status)``, ``stream_status(key)``, ``health_status()``: its
  lifecycle and what it adds to ``/api/streams`` and ``/api/health``.

Limits (a flood of plays of made-up names must neither open unbounded upstream connections nor
lock real streams out):

* at most ``max_active`` keys are brought at once (``EngineBuilder.max_pulls``);
* a key that no source had is remembered for ``negative_ttl`` seconds (at most
  ``negative_size`` keys, the oldest forgotten first): plays of it are refused at once, with
  no upstream connection (a stream published here meanwhile is found as usual);
* one address (``Credentials.peer``) starts at most ``max_pending_per_address`` pulls that have
  not started yet (plays that join a pull already starting do not count);
* a pull that has waited ``pending_grace`` seconds without starting (an upstream such as
  nginx-rtmp accepts a play of a stream it does not have and then sends nothing) gives its
  place up to a newcomer when the limits are reached: it is cancelled, its viewers get
  ``StreamNotFound``, and the newcomer's pull starts at once. Pulls that started (their stream
  is here) are never evicted. Past the limits with no such pull, a play of a key that is not
  here is refused at once (``StreamNotFound``, logged once per thousand).

Error policy: a source's ``open_stream`` that raises a :class:`~arcly_trio.core.errors.StreamError`
before it started is a refusal for the waiting viewers (the next source that provides the key is
tried); anything else it raises is logged and becomes ``StreamNotFound`` for them. Once started,
its end (whatever the reason) ends only its stream.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, contextmanager
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import trio

from arcly_trio.core.errors import StreamError, StreamNotFound
from arcly_trio.core.excgroups import unwrap_single
from arcly_trio.core.keys import Credentials, StreamKey

if TYPE_CHECKING:
    from arcly_trio.kernel.polled import PolledSessions
    from arcly_trio.kernel.stream import Publisher, Stream

__all__ = ["PublishClaimer", "SourceHost", "StreamSource", "SourceRequest", "Sourcing"]

log = logging.getLogger("arcly_trio.sources")


class SourceHost(Protocol):
    """What the sourcing and the sources use of the engine (the :class:`~.engine.Engine` is one)."""

    @property
    def service_names(self) -> frozenset[str]: ...

    polled: PolledSessions

    def has_stream(self, key: StreamKey) -> bool: ...

    def stream(self, key: StreamKey | str) -> Stream: ...

    def publish(
        self, key: StreamKey | str, credentials: Credentials | None = None, *, protocol: str = ""
    ) -> AbstractAsyncContextManager[Publisher]: ...


class StreamSource(Protocol):
    """Brings streams that are not published here (see the module docstring)."""

    name: str

    def provides(self, key: StreamKey) -> bool: ...

    async def open_stream(
        self, engine: SourceHost, request: SourceRequest, *, task_status: trio.TaskStatus[None] = ...
    ) -> None: ...


@runtime_checkable
class PublishClaimer(Protocol):
    """A source's optional hook: consulted before a publish is accepted here (see the module
    docstring); returns the release, called once when that publish ends."""

    async def claim_publish(self, key: StreamKey, credentials: Credentials) -> Callable[[], None]: ...


class SourceRequest:
    """The one pull of a key: who waits for it, when it was last wanted, whether it stops.

    Attributes:
        key: the stream it brings.
        source: the name of the source running it (once one runs).
        stopping: set (synchronously) once the source has decided to stop.
        error: why it failed, for the viewers that waited (``None`` if it started).
    """

    def __init__(self, key: StreamKey, address: str | None = None) -> None:
        self.key = key
        self.address = address
        """The address of the play that started it (``None``: not a client's)."""
        self.started_at = trio.current_time()
        self.scope = trio.CancelScope()
        """Cancelled to evict the request before it started (see the module docstring)."""
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

    def viewers(self, engine: SourceHost) -> int:
        """Subscribers of the stream other than stream services (recording, HLS, pushes), and
        the sessions of HLS and DASH players (:mod:`.polled`)."""
        try:
            stream: Stream = engine.stream(self.key)
        except StreamError:
            return 0
        services = engine.service_names
        polled = sum(engine.polled.players(self.key).values())
        return polled + sum(1 for sub in stream.fanout.subscribers if sub.protocol not in services)

    async def wait_idle(self, engine: SourceHost, idle: float) -> None:
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

    def __init__(
        self,
        sources: Sequence[StreamSource],
        *,
        max_active: int = 256,
        max_pending_per_address: int = 4,
        pending_grace: float = 1.0,
        negative_ttl: float = 10.0,
        negative_size: int = 4096,
    ) -> None:
        self.sources = tuple(sources)
        self.max_active = max_active
        """Most keys being brought at once (see the module docstring)."""
        self.max_pending_per_address = max_pending_per_address
        """Most pulls one address has starting at once."""
        self.pending_grace = pending_grace
        """Seconds a pull that has not started keeps its place against newcomers."""
        self.negative_ttl = negative_ttl
        """Seconds a key no source had is refused at once."""
        self.negative_size = negative_size
        """Most keys remembered as missing."""
        self.refused_total = 0
        """Plays refused at once for the limits (not for the negative cache)."""
        self.missing_total = 0
        """Plays refused at once because no source had the key a moment ago."""
        self.evicted_total = 0
        """Pulls that had not started, cancelled to make room for a newcomer."""
        self.active: dict[StreamKey, SourceRequest] = {}
        self.started_total = 0
        """Source runs started (each pull counts once, however many viewers shared it)."""
        self._missing: dict[StreamKey, float] = {}  # key -> until when it is refused, oldest first
        self._claimers = [source for source in self.sources if isinstance(source, PublishClaimer)]

    @property
    def claims_publishes(self) -> bool:
        """Whether a source claims publishes (:meth:`claim_publish` then asks them)."""
        return bool(self._claimers)

    async def obtain(
        self, engine: SourceHost, key: StreamKey, nursery: trio.Nursery, peer: tuple[str, int] | None = None
    ) -> None:
        """Make sure ``key`` is here if a source can bring it: returns at once when it is
        published here or no source provides it (the caller then finds it, or not), after the
        source started otherwise; raises the source's refusal. The caller subscribes right
        after, with no checkpoint in between. ``peer`` is the player's address (its pulls
        count against the per-address limit)."""
        while True:
            request = self.active.get(key)
            if request is None:
                if engine.has_stream(key):
                    return
                candidates = [source for source in self.sources if source.provides(key)]
                if not candidates:
                    return
                if self._known_missing(key):
                    self.missing_total += 1
                    raise StreamNotFound(key.app, key.name)
                address = peer[0] if peer is not None else None
                self._make_room(key, address)
                request = self.active[key] = SourceRequest(key, address)
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

    @contextmanager
    def demand(self, key: StreamKey) -> Iterator[None]:
        """Someone waits on ``key``'s stream for the duration of the block (an HLS request for
        the first playlist of a stream a pull has just brought): its pull does not stop for
        idleness meanwhile, as while viewers wait for it to start."""
        request = self.active.get(key)
        if request is None:
            yield
            return
        request.waiting += 1
        try:
            yield
        finally:
            request.waiting -= 1
            request.touch()

    def _known_missing(self, key: StreamKey) -> bool:
        until = self._missing.get(key)
        if until is None:
            return False
        if trio.current_time() < until:
            return True
        del self._missing[key]
        return False

    def _remember_missing(self, key: StreamKey) -> None:
        self._missing.pop(key, None)
        self._missing[key] = trio.current_time() + self.negative_ttl
        while len(self._missing) > self.negative_size:
            del self._missing[next(iter(self._missing))]

    def _make_room(self, key: StreamKey, address: str | None) -> None:
        """Raise ``StreamNotFound`` unless a new pull may start (evicting a stale pending one
        if that is what it takes)."""
        if address is not None:
            mine = [r for r in self.active.values() if r.address == address and not r.ready.is_set()]
            if len(mine) >= self.max_pending_per_address and not self._evict_oldest(mine):
                self._refuse(key, f"{address} has {len(mine)} pulls starting already")
        if len(self.active) >= self.max_active:
            pending = [r for r in self.active.values() if not r.ready.is_set()]
            if not self._evict_oldest(pending):
                self._refuse(key, f"{len(self.active)} streams are being pulled already")

    def _evict_oldest(self, requests: list[SourceRequest]) -> bool:
        """Cancel the oldest of ``requests`` if it has waited ``pending_grace`` without starting."""
        if not requests:
            return False
        oldest = min(requests, key=lambda r: r.started_at)
        if trio.current_time() - oldest.started_at < self.pending_grace:
            return False
        self.evicted_total += 1
        log.info(
            "the pull of %s has not started in %g s: it gives its place up",
            oldest.key,
            round(trio.current_time() - oldest.started_at, 1),
        )
        if self.active.get(oldest.key) is oldest:
            del self.active[oldest.key]
        oldest.error = StreamNotFound(oldest.key.app, oldest.key.name)
        oldest.stopping = True
        oldest.ready.set()
        oldest.scope.cancel()
        return True

    def _refuse(self, key: StreamKey, why: str) -> None:
        self.refused_total += 1
        if self.refused_total == 1 or self.refused_total % 1000 == 0:
            log.warning("%s: %s refused (%d so far)", why, key, self.refused_total)
        raise StreamNotFound(key.app, key.name)

    async def _run(self, engine: SourceHost, candidates: list[StreamSource], request: SourceRequest) -> None:
        try:
            with request.scope:  # cancelled when evicted (its error is then set already)
                error = await self._try(engine, candidates, request)
                if not request.ready.is_set():
                    request.error = error
                    if isinstance(error, StreamNotFound):  # no source had it
                        self._remember_missing(request.key)
        finally:
            if self.active.get(request.key) is request:
                del self.active[request.key]
            request.stopping = True
            request.ready.set()
            request.done.set()

    async def _try(self, engine: SourceHost, candidates: list[StreamSource], request: SourceRequest) -> StreamError:
        """Run the first of ``candidates`` that starts, until its stream ends; the last
        refusal if none started."""
        error: StreamError = StreamNotFound(request.key.app, request.key.name)
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
                break
        return error

    async def claim_publish(self, key: StreamKey, credentials: Credentials) -> Callable[[], None]:
        """Ask every source that claims publishes; returns the one release of them all."""
        releases: list[Callable[[], None]] = []
        try:
            for source in self._claimers:
                releases.append(await source.claim_publish(key, credentials))
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
        return {
            "source": request.source,
            "stopping": request.stopping,
            "idle_for": _seconds(trio.current_time() - request.last_wanted),
        }


def _seconds(value: float) -> float:
    return round(value, 3) if math.isfinite(value) else 0.0
