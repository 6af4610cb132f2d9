"""Pull relays: a play request for a stream that is not here pulls it from an upstream.

:class:`PullSource` is a kernel :class:`~arcly_trio.kernel.sources.StreamSource` (register it
with ``EngineBuilder.source``): for the applications it has a URL template for
(``rtmp://origin/{app}/{stream}``, ``http://origin:8080/{app}/{stream}.flv`` or an IP camera's
``rtsp://user:pass@camera/{stream}``, :mod:`arcly_trio.relay.rtsp_pull`), the first
authorized viewer of a stream that is not here starts one pull, every viewer shares it (the
engine's single-flight: two viewers arriving together start one pull), and it stops once its
stream has had no viewer for ``idle`` seconds. The pulled stream is published into the engine
under protocol ``"pull"`` (so stream services and the API can tell it apart) with the
configured credentials (the engine authorizes that publish like any other).

:func:`pull_into` is the pull itself, shared with the cluster (which pulls from the node that
owns a stream, under protocol ``"cluster"``, or from another worker over its Unix socket,
``"worker"``). A pull starts only once the upstream has sent its first frames within
``timeout`` (nginx-rtmp answers ``Play.Start`` even for streams it does not have); it ends when
the upstream ends or sends nothing for ``read_timeout`` seconds, ending its stream (viewers are
told the stream ended; the log says why), or when idle.

Events: ``ServiceEvent`` ``pull-started`` and ``pull-ended`` (service ``pull``, ``cluster`` or
``worker``) for the observers (metrics) and the application's event feed.

Error policy: an upstream that refuses, cannot be reached or sends nothing in time is
``StreamNotFound`` for the waiting viewers (the reason logged); failures after the start end
that stream only. The upstream's URL is shown redacted (:func:`~arcly_trio.core.redact.redact_url`)
in ``/api/streams``, events and logs, and its secrets are scrubbed from the errors shown there.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import trio

from arcly_trio.core.errors import ConnectionLost, RemoteProtocolError, RemoteRefused, StreamNotFound
from arcly_trio.core.keys import Credentials, StreamKey
from arcly_trio.core.redact import redact_url, scrub
from arcly_trio.core.text import printable
from arcly_trio.kernel.events import ServiceEvent
from arcly_trio.protocols.rtmp.url import check_template, fill_template
from arcly_trio.relay.links import LinkStats
from arcly_trio.relay.upstream import open_upstream

if TYPE_CHECKING:
    from arcly_trio.kernel.engine import Engine
    from arcly_trio.kernel.sources import SourceRequest

__all__ = ["PullSource", "pull_into"]

log = logging.getLogger("arcly_trio.relay")


async def pull_into(
    engine: Engine,
    request: SourceRequest,
    url: str,
    *,
    stats: LinkStats,
    credentials: Credentials,
    idle: float,
    unix_socket: str | None = None,
    timeout: float = 10.0,
    read_timeout: float = 30.0,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Pull ``url`` into ``engine`` as ``request.key`` (see the module docstring)."""
    key = request.key
    where = stats.url
    # Pulls between the workers of one server are its plumbing: debug lines (its players are logged).
    level = logging.DEBUG if credentials.protocol == "worker" else logging.INFO
    try:
        async with open_upstream(url, unix_socket=unix_socket, timeout=timeout, read_timeout=read_timeout) as upstream:
            first: list[Any] = []
            with trio.move_on_after(timeout):
                first = await upstream.next_batch()
            if not first:
                reason = upstream.end or f"no frame within {timeout:g} s"
                raise RemoteRefused("play", "NoData", reason)
            async with engine.publish(key, credentials, protocol=credentials.protocol) as publisher:
                stats.set_state("connected")
                log.log(level, "pulling %s from %s", key, where)
                stream = engine.stream(key)
                stream.notify(ServiceEvent(key, trio.current_time(), credentials.protocol, "pull-started", where))
                task_status.started()
                async with trio.open_nursery() as nursery:

                    async def stop_when_idle() -> None:
                        await request.wait_idle(engine, idle)
                        upstream.end = f"no viewer for {idle:g} s"
                        nursery.cancel_scope.cancel()

                    nursery.start_soon(stop_when_idle)
                    batch = first
                    while batch:
                        for frame in batch:
                            await publisher.send(frame)
                        stats.frames += len(batch)
                        stats.bytes = upstream.bytes_received
                        stats.retries = getattr(upstream, "reconnects", 0)  # an RTSP camera's
                        batch = await upstream.next_batch()
                    request.stopping = True  # no new viewer joins a stream that is ending
                    nursery.cancel_scope.cancel()
                stats.bytes = upstream.bytes_received
                ended = printable(scrub(upstream.end or "upstream ended", url))
                log.log(level, "pull of %s from %s ended: %s", key, where, ended)
                stats.last_error = ended if upstream.end else None
                stream.notify(
                    ServiceEvent(key, trio.current_time(), credentials.protocol, "pull-ended", f"{where}: {ended}")
                )
    except (RemoteRefused, ConnectionLost, RemoteProtocolError) as exc:
        stats.last_error = printable(scrub(str(exc), url))  # an upstream's refusal may quote the URL
        log.log(level, "pull of %s from %s failed: %s", key, where, stats.last_error)
        raise StreamNotFound(key.app, key.name) from None
    finally:
        stats.set_state("stopped")


class PullSource:
    """Pulls streams from upstreams by URL template, per application (module docstring).

    Args:
        templates: application name -> URL template; the key ``None`` applies to every
            application without one of its own.
        idle: seconds without a viewer before a pull stops.
        timeout: seconds to connect and get the first frames.
        read_timeout: seconds without data before a pull is considered dead.
        credentials: what the pulled streams are published with (``token``: the publish
            token of this server, if it has one).
    """

    name = "pull"
    publish_protocols = ("pull",)

    def __init__(
        self,
        templates: Mapping[str | None, str],
        *,
        idle: float = 10.0,
        timeout: float = 10.0,
        read_timeout: float = 30.0,
        credentials: Credentials | None = None,
    ) -> None:
        self.templates = {app: check_template(template, pull=True) for app, template in templates.items()}
        self.idle = idle
        self.timeout = timeout
        self.read_timeout = read_timeout
        base = credentials or Credentials()
        self.credentials = Credentials(token=base.token, peer=None, query=base.query, protocol="pull")
        self.links: dict[StreamKey, LinkStats] = {}

    def template_for(self, app: str) -> str | None:
        return self.templates.get(app, self.templates.get(None))

    def provides(self, key: StreamKey) -> bool:
        return self.template_for(key.app) is not None

    async def open_stream(
        self, engine: Engine, request: SourceRequest, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        key = request.key
        template = self.template_for(key.app)
        if template is None:
            raise StreamNotFound(key.app, key.name)
        url = fill_template(template, key.app, key.name)
        stats = LinkStats(redact_url(url))
        self.links[key] = stats
        try:
            await pull_into(
                engine,
                request,
                url,
                stats=stats,
                credentials=self.credentials,
                idle=self.idle,
                timeout=self.timeout,
                read_timeout=self.read_timeout,
                task_status=task_status,
            )
        finally:
            if self.links.get(key) is stats:
                del self.links[key]

    def stream_status(self, key: StreamKey) -> dict[str, Any]:
        stats = self.links.get(key)
        return {"pull": stats.document()} if stats is not None else {}
