"""An in-process :class:`~.directory.ClusterDirectory`: for tests, hypothesis machines and the
supervisor of ``--workers`` (which serves it to its workers, :mod:`.local`).

Nodes and leases expire on trio's clock (so tests run them on a MockClock); announcements go to
every listener's bounded queue (a listener that does not keep up loses announcements, counted
in ``dropped``, and never slows the announcer).

Error policy: never raises (``kill``/``outage`` let tests make it fail).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import trio

from arcly_trio.cluster.directory import Announcement, NodeInfo
from arcly_trio.core.errors import DirectoryUnavailable

__all__ = ["MemoryDirectory"]


class MemoryDirectory:
    """Nodes, leases and announcements in memory (see the module docstring)."""

    def __init__(self, *, queue: int = 256) -> None:
        self._nodes: dict[str, tuple[NodeInfo, float]] = {}
        self._leases: dict[str, tuple[str, float]] = {}
        self._listeners: set[trio.MemorySendChannel[Announcement]] = set()
        self._queue = queue
        self.dropped = 0
        self.down = False
        """While true every call raises ``DirectoryUnavailable`` (tests of an outage)."""

    def _check(self) -> float:
        if self.down:
            raise DirectoryUnavailable("the in-memory directory is down (test)")
        return trio.current_time()

    async def register(self, node: NodeInfo, ttl: float) -> None:
        self._nodes[node.id] = (node, self._check() + ttl)
        await trio.lowlevel.checkpoint()

    async def unregister(self, node_id: str) -> None:
        self._check()
        self._nodes.pop(node_id, None)
        await trio.lowlevel.checkpoint()

    def _live_node(self, node_id: str, now: float) -> NodeInfo | None:
        entry = self._nodes.get(node_id)
        if entry is None or entry[1] <= now:
            self._nodes.pop(node_id, None)
            return None
        return entry[0]

    async def nodes(self) -> list[NodeInfo]:
        now = self._check()
        await trio.lowlevel.checkpoint()
        return [node for node_id in list(self._nodes) if (node := self._live_node(node_id, now)) is not None]

    def _holder(self, key: str, now: float) -> str | None:
        entry = self._leases.get(key)
        if entry is None or entry[1] <= now:
            self._leases.pop(key, None)
            return None
        return entry[0]

    async def claim(self, key: str, node_id: str, ttl: float) -> str:
        now = self._check()
        holder = self._holder(key, now)
        if holder is None:
            self._leases[key] = (node_id, now + ttl)
            holder = node_id
        await trio.lowlevel.checkpoint()
        return holder

    async def refresh(self, keys: Sequence[str], node_id: str, ttl: float) -> list[str]:
        now = self._check()
        lost = []
        for key in keys:
            holder = self._holder(key, now)
            if holder is None or holder == node_id:
                self._leases[key] = (node_id, now + ttl)
            else:
                lost.append(key)
        await trio.lowlevel.checkpoint()
        return lost

    async def release(self, key: str, node_id: str) -> None:
        now = self._check()
        if self._holder(key, now) == node_id:
            del self._leases[key]
        await trio.lowlevel.checkpoint()

    async def owner(self, key: str) -> NodeInfo | None:
        now = self._check()
        await trio.lowlevel.checkpoint()
        holder = self._holder(key, now)
        return None if holder is None else self._live_node(holder, now)

    async def announce(self, announcement: Announcement) -> None:
        self._check()
        for send in list(self._listeners):
            try:
                send.send_nowait(announcement)
            except trio.WouldBlock:
                self.dropped += 1
            except trio.BrokenResourceError:
                self._listeners.discard(send)
        await trio.lowlevel.checkpoint()

    @asynccontextmanager
    async def listen(self) -> AsyncIterator[AsyncIterator[Announcement]]:
        self._check()
        send, receive = trio.open_memory_channel[Announcement](self._queue)
        self._listeners.add(send)
        try:
            async with receive:
                yield receive
        finally:
            self._listeners.discard(send)
            send.close()

    # -- for the supervisor and tests --------------------------------------------------------

    def drop_node(self, node_id: str) -> list[str]:
        """Forget ``node_id`` and its leases now (its worker died); return the keys it held."""
        self._nodes.pop(node_id, None)
        held = [key for key, (holder, _) in self._leases.items() if holder == node_id]
        for key in held:
            del self._leases[key]
        return held

    def expire_all(self) -> None:
        """Let every TTL run out now (tests)."""
        self._nodes = {k: (node, -math.inf) for k, (node, _) in self._nodes.items()}
        self._leases = {k: (holder, -math.inf) for k, (holder, _) in self._leases.items()}
