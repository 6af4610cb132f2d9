"""Stream services: per-stream work (HLS packaging, recording...) that plugs into the engine.

A stream service is an object with:

* ``name`` and ``capacity``: it subscribes to every stream of the applications it applies to
  under protocol ``name``, with a queue of ``capacity`` frames;
* ``applies_to(spec)``: whether it applies to an application (the built-in ones apply to the
  applications whose :class:`~.spec.AppSpec` lists their name, ``AppSpec.uses(name)``);
* ``async serve_stream(stream, subscription)``: the per-stream work, run in the application's
  nursery from the stream's first frame until the subscription ends.

And, optionally (the engine and the HTTP worker look for them, nothing else needs to be wired;
each hook is a ``runtime_checkable`` protocol declared where it is called):

* ``async run(engine, *, task_status)`` (:class:`~.engine.RunsWithEngine`): the service's own
  lifecycle, started in the engine's nursery with ``nursery.start`` before the protocol workers
  (a janitor, a connection pool...);
* ``install_routes(router)`` (:class:`~arcly_trio.workers.http.server.RouteInstaller`): HTTP
  routes the service serves (the HTTP worker calls it when it starts; handlers receive the
  request and a :class:`~arcly_trio.protocols.http.router.Responder`);
* ``stream_urls(key)`` (:class:`~arcly_trio.workers.http.api_routes.StreamUrls`): the paths it
  serves for a stream, for ``/api/streams`` and the pages;
* ``stream_status(key)`` (:class:`~arcly_trio.workers.http.api_routes.StreamStatus`): more
  fields of the stream for ``/api/streams`` (lists under one field from several services are
  joined); ``health_status()`` (:class:`~.health.HealthReporter`): fields for ``/api/health``.

A service that needs more than one subscription per stream (the push service: one per target,
so the lag policy applies to each alone) opens them with
:meth:`~arcly_trio.kernel.stream.Stream.service_subscription`. Stream sources
(:mod:`.sources`) may have ``run``, ``stream_status`` and ``health_status`` too.

Error policy: an exception from ``serve_stream`` is logged and the stream goes on; one from
``run`` stops the engine, as a protocol worker's does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from arcly_trio.kernel.spec import AppSpec

if TYPE_CHECKING:
    from arcly_trio.kernel.stream import Stream
    from arcly_trio.kernel.subscription import Subscription

__all__ = ["StreamService"]


class StreamService(Protocol):
    """Per-stream work that the engine runs for every stream (see the module docstring)."""

    name: str
    capacity: int

    def applies_to(self, spec: AppSpec) -> bool: ...

    async def serve_stream(self, stream: Stream, subscription: Subscription) -> None: ...
