"""One task per WebRTC worker that runs every WHEP viewer's periodic work, spread over the period.

A viewer's periodic work is small (a sender report a second: :meth:`~.viewer.WhepSession.periodic`)
but, run from the viewer's own task, it cost a wakeup of that task, a cancel scope and trio's
scheduling each second: about a fifth of a viewer's CPU with a thousand of them (see
``docs/performance.md``). A :class:`Ticker` is a timer wheel instead: :data:`SLOTS` slots per
:attr:`~Ticker.period`, one task that wakes at each slot and calls, synchronously, the work of the
sessions in it. A session goes into the slot with the fewest (the first such one due), so a
thousand viewers that connect at once still fire a thousandth of a period apart in twentieths,
not in one pass that would hold the event loop (and every frame) for milliseconds.

The session keeps its own task for what the peer sends and for its other timers (the handshake
window, DTLS retransmissions, the liveness window: see :mod:`.peer`); only the cadence moves here.
A session leaves the wheel at once when it closes (:meth:`Ticker.discard`, from
:meth:`~.peer.PeerSession.close` and the end of its task).

Error policy: an exception from one session's work is logged with its traceback and closes that
session (as an unexpected exception in its own task would); the wheel and the other sessions go
on. Nothing here raises into the worker's nursery.
"""

from __future__ import annotations

import logging
from typing import Protocol

import trio

__all__ = ["Ticker", "Ticked", "SLOTS"]

log = logging.getLogger("arcly_trio.webrtc")

SLOTS = 20
"""Slots of the wheel per period (50 ms apart for a one-second period)."""


class Ticked(Protocol):
    """What the wheel runs: a session's periodic work, and its end if that work fails."""

    def periodic(self, now: float) -> None: ...

    def close(self, reason: str) -> None: ...


class Ticker:
    """A timer wheel of :data:`SLOTS` slots per ``period`` seconds (see the module docstring)."""

    def __init__(self, period: float = 1.0, slots: int = SLOTS) -> None:
        if period <= 0 or slots < 1:
            raise ValueError(f"a period of {period} s in {slots} slots")
        self.period = period
        self._slots: list[dict[Ticked, None]] = [{} for _ in range(slots)]
        self._where: dict[Ticked, int] = {}
        self._next = 0
        """The slot that runs next."""
        self._added = trio.Event()
        """Set when an item is added: the task sleeps on it while the wheel is empty."""

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, item: object) -> bool:
        return item in self._where

    def add(self, item: Ticked) -> None:
        """Run ``item.periodic`` once a period from now on, in the emptiest slot (the first of
        them due: its first call comes at most one period from now)."""
        if item in self._where:
            return
        slots = self._slots
        count = len(slots)
        best = min(range(count), key=lambda offset: (len(slots[(self._next + offset) % count]), offset))
        index = (self._next + best) % count
        slots[index][item] = None
        self._where[item] = index
        self._added.set()

    def discard(self, item: Ticked) -> None:
        """Stop running ``item`` (at once: a slot being run skips it)."""
        index = self._where.pop(item, None)
        if index is not None:
            del self._slots[index][item]

    def run_slot(self, now: float) -> int:
        """Run the next slot's items now; how many ran."""
        index = self._next
        self._next = (index + 1) % len(self._slots)
        items = list(self._slots[index])
        where = self._where
        for item in items:
            if where.get(item) != index:
                continue  # discarded by an earlier item's work
            try:
                item.periodic(now)
            except Exception:
                log.exception("a WebRTC session's periodic work failed")
                self.discard(item)
                item.close("internal error in its periodic work")
        return len(items)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The wheel's task (``nursery.start``): a slot every ``period / slots`` seconds, on a
        fixed grid (a late wakeup does not shift the ones after it); asleep while the wheel is
        empty (a server without viewers does not wake twenty times a second)."""
        step = self.period / len(self._slots)
        due = trio.current_time() + step
        task_status.started()
        while True:
            if not self._where:
                self._added = trio.Event()
                await self._added.wait()
                due = trio.current_time() + step
            await trio.sleep_until(due)
            now = trio.current_time()
            self.run_slot(now)
            due += step
            if due < now:  # more than a step late (a stalled loop): no burst of slots to catch up
                due = now + step
