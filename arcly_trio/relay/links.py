"""The state of one relay connection, as ``/api/streams`` shows it, and the retry backoff.

Error policy: nothing here raises (plain records and arithmetic).
"""

from __future__ import annotations

import math
import time
from typing import Any

import trio

__all__ = ["LinkStats", "Backoff"]


class LinkStats:
    """One relay link (a push target for one stream, or a pull): where, in what state, how
    many tries and bytes, and the last error (escaped text).

    ``state`` is ``connecting``, ``connected``, ``retrying`` (waiting to try again) or
    ``stopped``.
    """

    __slots__ = ("url", "state", "retries", "bytes", "frames", "skipped", "last_error", "connected_at", "since")

    def __init__(self, url: str) -> None:
        self.url = url
        self.state = "connecting"
        self.retries = 0
        self.bytes = 0
        self.frames = 0
        self.skipped = 0
        """Frames not sent because the link was down (a reconnected link resumes on a keyframe)."""
        self.last_error: str | None = None
        self.connected_at: float | None = None
        self.since = time.time()

    def set_state(self, state: str) -> None:
        self.state = state
        self.since = time.time()
        if state == "connected":
            self.connected_at = self.since

    def failed(self, error: str) -> None:
        self.last_error = error
        self.retries += 1
        self.set_state("retrying")

    def document(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "state": self.state,
            "retries": self.retries,
            "bytes": self.bytes,
            "frames": self.frames,
            "skipped": self.skipped,
            "last_error": self.last_error,
            "connected_at": self.connected_at,
            "since": round(self.since, 3),
        }


class Backoff:
    """Delays between tries: ``first``, doubling up to ``maximum``; :meth:`reset` after a
    connection that lasted ``stable`` seconds (so a flapping target does not retry fast)."""

    def __init__(self, first: float = 1.0, maximum: float = 30.0, stable: float = 10.0) -> None:
        self.first = first
        self.maximum = maximum
        self.stable = stable
        self._next = first
        self._connected_at = math.inf

    def connected(self) -> None:
        self._connected_at = trio.current_time()

    def next_delay(self) -> float:
        if trio.current_time() - self._connected_at >= self.stable:
            self._next = self.first
        self._connected_at = math.inf
        delay = self._next
        self._next = min(self.maximum, self._next * 2)
        return delay
