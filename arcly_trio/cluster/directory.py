"""The cluster directory: which nodes exist and which node owns each published stream.

A :class:`ClusterDirectory` is all a node needs from whatever keeps that list:

* nodes register themselves with a TTL and re-register as a heartbeat (:class:`NodeInfo`: id,
  public RTMP/HTTP URLs, the Unix socket of its local relay and the machine it runs on, load);
* publishing a stream takes an ownership lease (``claim``: set if nobody has it, with a TTL,
  refreshed by the owner), so the same key cannot be published on two nodes;
* publish and unpublish are announced (:class:`Announcement`) to every node that listens.

Implementations: :class:`~.memory.MemoryDirectory` (in-process: tests, and the supervisor of
``--workers``, which serves it to its workers over a Unix socket, :mod:`.local`) and
:class:`~.redis.RedisDirectory` (machines sharing a Redis). Media never goes through a
directory: nodes pull streams from each other over RTMP.

Error policy: every method raises :class:`~arcly_trio.core.errors.DirectoryUnavailable` when the
directory cannot be reached; nothing else on purpose.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

import attrs

__all__ = ["NodeInfo", "Announcement", "ClusterDirectory"]


@attrs.frozen
class NodeInfo:
    """One node as the directory lists it.

    Attributes:
        id: unique in the cluster.
        rtmp: the node's RTMP base URL for other nodes (``rtmp://host:1935``).
        http: its HTTP base URL (``http://host:8080``), if it serves HTTP.
        relay: the Unix socket of its RTMP relay listener, for nodes on the same ``machine``.
        machine: nodes with the same machine name reach each other over ``relay``.
        load: what it serves (``streams``, ``viewers``, ``publishers``).
    """

    id: str
    rtmp: str
    http: str | None = None
    relay: str | None = None
    machine: str = ""
    load: dict[str, int] = attrs.field(factory=dict)

    def to_json(self) -> str:
        return json.dumps(attrs.asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> NodeInfo:
        data = json.loads(text)
        return cls(
            id=str(data["id"]),
            rtmp=str(data["rtmp"]),
            http=data.get("http"),
            relay=data.get("relay"),
            machine=str(data.get("machine", "")),
            load=dict(data.get("load") or {}),
        )

    def document(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.frozen
class Announcement:
    """``publish`` or ``unpublish`` of stream ``key`` (``app/name``) on node ``node``."""

    event: str
    key: str
    node: str

    def to_json(self) -> str:
        return json.dumps(attrs.asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> Announcement:
        data = json.loads(text)
        return cls(str(data["event"]), str(data["key"]), str(data["node"]))


class ClusterDirectory(Protocol):
    """What a node needs from the directory (see the module docstring)."""

    async def register(self, node: NodeInfo, ttl: float) -> None:
        """Add or refresh ``node`` for ``ttl`` seconds."""

    async def unregister(self, node_id: str) -> None:
        """Remove the node now (a clean shutdown)."""

    async def nodes(self) -> list[NodeInfo]:
        """Every registered node."""

    async def claim(self, key: str, node_id: str, ttl: float) -> str:
        """Take the lease of ``key`` for ``node_id`` if nobody holds it; return the holder
        after the call (``node_id`` if it is ours now, or was already)."""

    async def refresh(self, keys: Sequence[str], node_id: str, ttl: float) -> list[str]:
        """Extend our leases of ``keys``; return those that are no longer ours (taken back
        only if nobody else took them meanwhile)."""

    async def release(self, key: str, node_id: str) -> None:
        """Give up our lease of ``key`` (nothing if it is not ours)."""

    async def owner(self, key: str) -> NodeInfo | None:
        """The registered node that holds the lease of ``key``, if any."""

    async def announce(self, announcement: Announcement) -> None:
        """Tell every listening node."""

    def listen(self) -> AbstractAsyncContextManager[AsyncIterator[Announcement]]:
        """Announcements from now on, for the duration of the block."""
