"""What the audit pipeline and the ``on_event`` hook share: a bounded, drop-counting queue that
one task drains, and failure logging at most once per interval.

Error policy: nothing raises; :meth:`Outbox.put` drops (and counts) what does not fit.
"""

from __future__ import annotations

import logging
from typing import Generic, TypeVar

import trio

__all__ = ["Outbox", "LogLimiter"]

T = TypeVar("T")


class Outbox(Generic[T]):
    """A bounded queue that never waits to take an item: a full queue drops it (``dropped``)."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self.dropped = 0
        self._send, self._receive = trio.open_memory_channel[T](capacity)

    def put(self, item: T) -> bool:
        """Queue ``item``; ``False`` (and counted) if the queue is full."""
        try:
            self._send.send_nowait(item)
        except trio.WouldBlock:
            self.dropped += 1
            return False
        return True

    @property
    def queued(self) -> int:
        return self._send.statistics().current_buffer_used

    async def get(self) -> T:
        return await self._receive.receive()

    def more(self, batch: list[T], limit: int) -> list[T]:
        """``batch`` with what is queued added, up to ``limit`` items, without waiting."""
        while len(batch) < limit:
            try:
                batch.append(self._receive.receive_nowait())
            except trio.WouldBlock:
                break
        return batch


class LogLimiter:
    """Logs a failure at most once per ``interval`` seconds, saying how many were not logged."""

    def __init__(self, log: logging.Logger, interval: float = 60.0) -> None:
        self.log = log
        self.interval = interval
        self._logged_at = -1e18
        self._unlogged = 0

    def failed(self, message: str, *args: object) -> None:
        now = trio.current_time()
        if now - self._logged_at >= self.interval:
            more = f" ({self._unlogged} more failures before)" if self._unlogged else ""
            self.log.warning(message + "%s", *args, more)
            self._logged_at = now
            self._unlogged = 0
        else:
            self._unlogged += 1
