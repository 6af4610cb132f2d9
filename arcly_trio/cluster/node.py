"""A node of a cluster (a machine of a Redis cluster, or a worker of ``--workers N``).

:class:`ClusterNode` plugs into the engine as a stream source (register it with
``EngineBuilder.source``):

* **Registration.** Its ``run`` registers the node in the :class:`~.directory.ClusterDirectory`
  (id, public RTMP/HTTP URLs, the Unix socket of its local relay, its machine, its load) and
  re-registers every ``ttl / 3`` seconds: a heartbeat whose TTL lets a dead node disappear.
* **Ownership.** Before a publish is accepted here (``claim_publish``) it takes the stream's
  lease in the directory; a key whose lease another node holds is refused with
  :class:`~arcly_trio.core.errors.StreamPublishedElsewhere` (a ``StreamAlreadyPublishing``: the
  RTMP worker answers ``NetStream.Publish.BadName`` as for a local duplicate). The owner
  refreshes its leases with the heartbeat and gives a lease back when the publish ends; publish
  and unpublish are announced. Pulled copies (protocols ``pull``, ``cluster``, ``worker``) take
  no lease.
* **Pull from the owner.** A play request for a stream that is not here (after authorization)
  asks the directory who owns it and pulls it from that node with the relay's pull
  (:func:`arcly_trio.relay.pull_into`): over the owner's Unix relay socket when it runs on the
  same machine (another worker; protocol ``worker``), else from its public RTMP URL (protocol
  ``cluster``). Viewers share the pull; it stops ``idle`` seconds after the last one left.
* **Failures.** When the owner dies its connection breaks (or its lease expires, checked every
  ``ttl / 3``, or it is announced unpublished): the pull ends and so does its stream here, with
  the reason logged; a publisher reconnecting to any node then takes the stream over (once the
  dead node's lease has expired, at most ``ttl`` seconds). When the directory is unreachable the
  node keeps serving its local streams (and accepts local publishes, claiming their leases once
  the directory is back), logs it once, reports it in ``/api/health`` (``cluster``), and
  re-registers as soon as it answers again.

Error policy: directory failures never end a stream or the engine (they are logged and
reported); a pull that cannot start is ``StreamNotFound`` for its viewers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import trio

from arcly_trio.cluster.directory import Announcement, ClusterDirectory, NodeInfo
from arcly_trio.cluster.local import LocalDirectory
from arcly_trio.core.errors import DirectoryUnavailable, StreamNotFound, StreamPublishedElsewhere
from arcly_trio.core.keys import Credentials, StreamKey
from arcly_trio.core.redact import redact_url
from arcly_trio.core.text import printable
from arcly_trio.relay.links import LinkStats
from arcly_trio.relay.pull import pull_into

if TYPE_CHECKING:
    from arcly_trio.kernel.engine import Engine
    from arcly_trio.kernel.sources import SourceRequest

__all__ = ["ClusterNode", "RELAYED_PROTOCOLS", "RunningDirectory"]

log = logging.getLogger("arcly_trio.cluster")

#: Publish protocols of streams that are copies of a stream published elsewhere.
RELAYED_PROTOCOLS = frozenset({"pull", "cluster", "worker"})


def _noop() -> None:
    pass


@runtime_checkable
class RunningDirectory(Protocol):
    """A directory's optional hook: a task of its own (a Redis directory's subscription, the
    local directory's socket server), started by the node's ``run`` before it registers."""

    async def run(self, *, task_status: trio.TaskStatus[None] = ...) -> None: ...


class _Pull:
    __slots__ = ("owner", "stats", "scope", "stopped")

    def __init__(self, owner: str, stats: LinkStats, scope: trio.CancelScope) -> None:
        self.owner = owner
        self.stats = stats
        self.scope = scope
        self.stopped = ""
        """Why the cluster stopped this pull itself (the relay logs the other ends)."""

    def stop(self, reason: str) -> None:
        self.stats.last_error = self.stopped = reason
        self.scope.cancel()


class ClusterNode:
    """This engine as a node of a cluster (see the module docstring).

    Args:
        directory: the cluster directory.
        node_id: this node's id (unique in the cluster).
        rtmp_url: how other machines reach this node over RTMP (``rtmp://host:port``).
        http_url: how they reach its HTTP port, if any.
        relay_socket: the Unix socket of this node's RTMP relay listener (workers of one machine).
        machine: nodes with the same machine name pull from each other over ``relay_socket``.
        ttl: seconds a registration or a lease lives without a heartbeat.
        idle: seconds a pull goes on without a viewer.
        play_token: presented to the owner when pulling (its play token).
        publish_token: what pulled copies are published with here (this server's publish token).
    """

    name = "cluster"

    def __init__(
        self,
        directory: ClusterDirectory,
        *,
        node_id: str,
        rtmp_url: str,
        http_url: str | None = None,
        relay_socket: str | None = None,
        machine: str = "",
        ttl: float = 10.0,
        idle: float = 10.0,
        timeout: float = 10.0,
        play_token: str | None = None,
        publish_token: str | None = None,
    ) -> None:
        self.directory = directory
        self.workers_only = isinstance(directory, LocalDirectory)
        """The directory is the supervisor's (``--workers`` without ``--cluster``): its
        registrations are routine, logged at debug level only."""
        self.publish_protocols = (
            ("worker",) if self.workers_only else ("cluster", "worker") if relay_socket else ("cluster",)
        )
        """What pulled copies are published as here (for the metrics' series at 0)."""
        self.id = node_id
        self.rtmp_url = rtmp_url.rstrip("/")
        self.http_url = http_url
        self.relay_socket = relay_socket
        self.machine = machine or node_id
        self.ttl = ttl
        self.idle = idle
        self.timeout = timeout
        self.play_token = play_token
        self.publish_token = publish_token
        self.held: dict[str, int] = {}
        """Keys published here and how many local publish sessions hold each."""
        self.pulls: dict[StreamKey, _Pull] = {}
        self.remote: dict[str, str] = {}
        """Streams announced by other nodes: key -> node."""
        self.available = False
        self.last_error: str | None = None
        self.since = time.time()
        self.conflicts = 0
        self._engine: Engine | None = None
        self._nursery: trio.Nursery | None = None

    # ------------------------------------------------------------------ lifecycle

    def info(self) -> NodeInfo:
        engine = self._engine
        load: dict[str, int] = {}
        if engine is not None:
            streams = engine.streams()
            load = {
                "streams": len(streams),
                "publishers": engine.publisher_count,
                "viewers": sum(len(stream.fanout.subscribers) for stream in streams),
            }
        return NodeInfo(self.id, self.rtmp_url, self.http_url, self.relay_socket, self.machine, load)

    async def run(self, engine: Engine, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._engine = engine
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                if isinstance(self.directory, RunningDirectory):
                    await nursery.start(self.directory.run)
                await self._beat()
                nursery.start_soon(self._heartbeat)
                nursery.start_soon(self._listen)
                task_status.started()
        finally:
            self._nursery = None
            with trio.move_on_after(1) as scope:
                scope.shield = True
                try:
                    for key in list(self.held):
                        await self.directory.release(key, self.id)
                    await self.directory.unregister(self.id)
                except DirectoryUnavailable:
                    pass

    def set_urls(self, rtmp_url: str, http_url: str | None) -> None:
        """The node's public URLs once its ports are bound (port 0); registered at once."""
        self.rtmp_url = rtmp_url.rstrip("/")
        self.http_url = http_url
        self._spawn(self._beat)

    def _set_available(self, available: bool, error: str | None = None) -> None:
        if available and not self.available:
            log.log(
                logging.DEBUG if self.workers_only else logging.INFO,
                "cluster node %s registered in the directory (leases: %d)",
                self.id,
                len(self.held),
            )
        elif not available and (self.available or self.last_error is None):
            log.warning("cluster directory unreachable: %s; serving local streams only, retrying", error)
        if available != self.available:
            self.since = time.time()
        self.available = available
        self.last_error = error if not available else self.last_error

    async def _beat(self) -> None:
        """Register, and refresh (or take back) the leases of what is published here."""
        try:
            await self.directory.register(self.info(), self.ttl)
            if self.held:
                for key in await self.directory.refresh(list(self.held), self.id, self.ttl):
                    self.conflicts += 1
                    log.warning(
                        "stream %s is published here and on another node (it took the lease while "
                        "the directory was unreachable); this node keeps serving its own",
                        key,
                    )
        except DirectoryUnavailable as exc:
            self._set_available(False, exc.reason)
            return
        self._set_available(True)

    async def _heartbeat(self) -> None:
        while True:
            await trio.sleep(self.ttl / 3 if self.available else min(1.0, self.ttl / 3))
            await self._beat()

    async def _listen(self) -> None:
        while True:
            try:
                async with self.directory.listen() as announcements:
                    async for announcement in announcements:
                        self._heard(announcement)
            except DirectoryUnavailable:
                pass
            await trio.sleep(1.0)

    def _heard(self, announcement: Announcement) -> None:
        if announcement.node == self.id:
            return
        if announcement.event == "publish":
            self.remote[announcement.key] = announcement.node
            return
        if self.remote.get(announcement.key) == announcement.node:
            del self.remote[announcement.key]
        pull = self.pulls.get(StreamKey.parse(announcement.key))
        if pull is not None and pull.owner == announcement.node:
            pull.stop(f"node {announcement.node} unpublished it")

    def _spawn(self, function: Callable[..., Any], *args: Any) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(function, *args)

    async def _quietly(self, function: Callable[..., Any], *args: Any) -> None:
        try:
            await function(*args)
        except DirectoryUnavailable as exc:
            self._set_available(False, exc.reason)

    # ------------------------------------------------------------------ ownership

    async def claim_publish(self, key: StreamKey, credentials: Credentials) -> Callable[[], None]:
        """Take the lease of ``key`` for a publish here (see the module docstring)."""
        if credentials.protocol in RELAYED_PROTOCOLS:
            return _noop
        name = str(key)
        if name not in self.held:
            try:
                owner = await self.directory.claim(name, self.id, self.ttl)
            except DirectoryUnavailable as exc:
                self._set_available(False, exc.reason)
                log.warning(
                    "publish of %s accepted without a lease (directory unreachable); "
                    "it is claimed when the directory is back",
                    key,
                )
                owner = self.id
            if owner != self.id:
                raise StreamPublishedElsewhere(key.app, key.name, printable(owner))
            self._spawn(self._quietly, self.directory.announce, Announcement("publish", name, self.id))
        self.held[name] = self.held.get(name, 0) + 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            count = self.held.get(name, 0) - 1
            if count > 0:
                self.held[name] = count
                return
            self.held.pop(name, None)
            self._spawn(self._release, name)

        return release

    async def _release(self, name: str) -> None:
        await self._quietly(self.directory.release, name, self.id)
        await self._quietly(self.directory.announce, Announcement("unpublish", name, self.id))

    # ------------------------------------------------------------------ pulling from the owner

    def provides(self, key: StreamKey) -> bool:
        return True

    async def open_stream(
        self, engine: Engine, request: SourceRequest, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        key = request.key
        try:
            owner = await self.directory.owner(str(key))
        except DirectoryUnavailable as exc:
            self._set_available(False, exc.reason)
            raise StreamNotFound(key.app, key.name) from None
        if owner is None or owner.id == self.id:
            raise StreamNotFound(key.app, key.name)
        query = f"?token={self.play_token}" if self.play_token else ""
        if owner.machine == self.machine and owner.relay:
            url, unix, protocol = f"rtmp://localhost/{key.app}/{key.name}{query}", owner.relay, "worker"
        else:
            url, unix, protocol = f"{owner.rtmp}/{key.app}/{key.name}{query}", None, "cluster"
        stats = LinkStats(f"{owner.id} {redact_url(url)}")
        credentials = Credentials(token=self.publish_token, protocol=protocol)
        async with trio.open_nursery() as nursery:
            pull = _Pull(owner.id, stats, nursery.cancel_scope)
            self.pulls[key] = pull
            try:
                await nursery.start(self._pull, engine, request, url, unix, stats, credentials, nursery.cancel_scope)
            except BaseException:
                if self.pulls.get(key) is pull:
                    del self.pulls[key]
                raise
            task_status.started()
            nursery.start_soon(self._watch_owner, request, owner.id, pull)
        if self.pulls.get(key) is pull:
            del self.pulls[key]
        if pull.stopped:  # the relay's pull was cancelled: it logged nothing (else it said how it ended)
            log.info("pull of %s from node %s ended: %s", key, owner.id, printable(pull.stopped))

    async def _pull(
        self,
        engine: Engine,
        request: SourceRequest,
        url: str,
        unix: str | None,
        stats: LinkStats,
        credentials: Credentials,
        scope: trio.CancelScope,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            await pull_into(
                engine,
                request,
                url,
                stats=stats,
                credentials=credentials,
                idle=self.idle,
                unix_socket=unix,
                timeout=self.timeout,
                read_timeout=max(self.ttl, 5.0),
                task_status=task_status,
            )
        finally:
            request.stopping = True
            scope.cancel()

    async def _watch_owner(self, request: SourceRequest, owner: str, pull: _Pull) -> None:
        """End the pull when ``owner`` no longer holds the stream's lease."""
        while True:
            await trio.sleep(max(0.2, self.ttl / 3))
            try:
                now = await self.directory.owner(str(request.key))
            except DirectoryUnavailable:
                continue  # media goes on; the directory is not the media path
            if now is None or now.id != owner:
                request.stopping = True
                pull.stop(f"node {owner} no longer owns the stream (lease expired or moved)")
                return

    # ------------------------------------------------------------------ reporting

    def stream_status(self, key: StreamKey) -> dict[str, Any]:
        pull = self.pulls.get(key)
        if pull is not None:
            return {"cluster": {"owner": pull.owner, "relay": pull.stats.document()}}
        if str(key) in self.held:
            return {"cluster": {"owner": self.id}}
        return {}

    def health_status(self) -> dict[str, Any]:
        return {
            "cluster": {
                "node": self.id,
                "directory": "ok" if self.available else "unreachable",
                "last_error": None if self.available else self.last_error,
                "since": round(self.since, 3),
                "leases": len(self.held),
                "pulls": len(self.pulls),
                "remote_streams": len(self.remote),
                "conflicts": self.conflicts,
            }
        }
