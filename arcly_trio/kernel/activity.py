"""Work in progress that a graceful shutdown waits for, counted without polling.

Protocol workers count their busy connections here (:meth:`Activity.enter` when a connection
starts serving, :meth:`Activity.exit` when it stops); the engine's graceful shutdown waits until
the count reaches zero (:meth:`Activity.wait_idle`), by an event, within its deadline.

Error policy: exiting more than was entered is a bug of the caller and raises ``RuntimeError``.
"""

from __future__ import annotations

import trio

__all__ = ["Activity"]


class Activity:
    """A counter of things in progress, with an event when it is back to zero."""

    def __init__(self) -> None:
        self.count = 0
        self._idle = trio.Event()
        self._idle.set()

    def enter(self) -> None:
        if self.count == 0:
            self._idle = trio.Event()
        self.count += 1

    def exit(self) -> None:
        if self.count <= 0:
            raise RuntimeError("Activity.exit() without a matching enter()")
        self.count -= 1
        if self.count == 0:
            self._idle.set()

    async def wait_idle(self) -> None:
        """Return once nothing is in progress (at once if nothing is)."""
        await self._idle.wait()
