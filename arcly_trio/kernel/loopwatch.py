"""How late the event loop runs: a task that measures its own oversleep.

:class:`LoopWatch` sleeps ``interval`` seconds at a time and records how much later than asked
it woke up. A late wake-up means something held the loop (a long synchronous step in some
task): every stream on the loop stalled that long. It keeps the worst lag of each of the last
``window`` seconds (constant memory) and the worst ever, for health checks and benchmarks.

Error policy: nothing raises; the watch is started in the engine's nursery and ends with it.
"""

from __future__ import annotations

import math

import trio

__all__ = ["LoopWatch"]


class LoopWatch:
    """The event loop's recent lag (see the module docstring)."""

    def __init__(self, interval: float = 0.01, window: int = 60) -> None:
        self.interval = interval
        self.window = window
        self._seconds = [0.0] * window
        self._stamp = [-1] * window
        self.worst = 0.0
        """The worst lag seen since start, in seconds."""

    def record(self, now: float, lag: float) -> None:
        second = math.floor(now)
        slot = second % self.window
        if self._stamp[slot] != second:
            self._stamp[slot] = second
            self._seconds[slot] = 0.0
        if lag > self._seconds[slot]:
            self._seconds[slot] = lag
        if lag > self.worst:
            self.worst = lag

    def recent(self, now: float | None = None, seconds: int | None = None) -> float:
        """The worst lag of the last ``seconds`` whole seconds (default: the whole window)."""
        now = trio.current_time() if now is None else now
        span = min(self.window, seconds or self.window)
        current = math.floor(now)
        return max(
            (lag for lag, stamp in zip(self._seconds, self._stamp, strict=False) if current - span < stamp <= current),
            default=0.0,
        )

    def per_second(self, now: float | None = None) -> list[float]:
        """The worst lag of each of the last ``window`` seconds, oldest first."""
        now = trio.current_time() if now is None else now
        current = math.floor(now)
        out = []
        for second in range(current - self.window + 1, current + 1):
            slot = second % self.window
            out.append(self._seconds[slot] if self._stamp[slot] == second else 0.0)
        return out

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        interval = self.interval
        while True:
            start = trio.current_time()
            await trio.sleep(interval)
            now = trio.current_time()
            self.record(now, max(0.0, now - start - interval))
