"""Yielding to the event loop during long runs of synchronous work.

A task that muxes a burst of large frames, or writes a long batch, holds the loop for as long as
the whole burst takes: every stream on the loop stalls meanwhile. A :class:`Pacer` counts the
work done (bytes, usually) and lets other tasks run every ``budget`` units, so the longest stall
is about one budget's worth of work, whatever the burst.

Error policy: :meth:`Pacer.spend` is a checkpoint when it yields, so it may raise
``trio.Cancelled``; nothing else.
"""

from __future__ import annotations

import trio

__all__ = ["Pacer"]


class Pacer:
    """Counts work and yields to the event loop every ``budget`` units of it."""

    __slots__ = ("budget", "_used")

    def __init__(self, budget: int = 256 * 1024) -> None:
        self.budget = budget
        self._used = 0

    async def spend(self, units: int) -> None:
        """Count ``units`` of work just done; yield once the budget is used up."""
        self._used += units
        if self._used >= self.budget:
            self._used = 0
            await trio.lowlevel.checkpoint()
