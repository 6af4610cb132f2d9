"""A publisher's rate limit: a token bucket over the media bytes it sends.

What it is for: a publisher decides how much the server receives, and through the stream
services (HLS windows, recordings, queues) how much it holds. :class:`PublishRateLimit` gives
each publish session a budget of ``limit`` bits per second with a burst allowance of
:data:`BURST_SECONDS` seconds of that rate (a keyframe, a GOP replayed by a relay, an encoder's
backlog after a reconnect): over any stretch of time the session may send at most
``burst + limit * stretch``. Past it the kernel ends the session
(:class:`~arcly_trio.core.errors.PublishRateLimited`, see :mod:`.publish`), for every protocol
alike, because every publisher sends through :meth:`~.publish.Publisher.send`.

The bucket starts full and takes the clock's time from its caller (trio's clock in the
kernel), so it is tested with a fake clock. :meth:`PublishRateLimit.measured` is the sender's
rate over the stretch since the bucket was last full: the stretch that used the allowance up.

Error policy: nothing here raises; :meth:`PublishRateLimit.take` says whether a send fits.
"""

from __future__ import annotations

import math

__all__ = ["BURST_SECONDS", "PublishRateLimit"]

#: The burst allowance, in seconds of the limit.
BURST_SECONDS = 4.0
_INSTANT = 0.001  # the shortest stretch a rate is measured over (seconds)


class PublishRateLimit:
    """A token bucket of ``limit`` bits/s and ``burst_seconds`` of burst, full at ``now``."""

    __slots__ = ("limit", "capacity", "_rate", "_tokens", "_at", "_full_at", "_since_full")

    def __init__(self, limit: int, now: float, burst_seconds: float = BURST_SECONDS) -> None:
        if limit <= 0 or not math.isfinite(burst_seconds) or burst_seconds <= 0:
            raise ValueError("a rate limit needs limit > 0 and burst_seconds > 0")
        self.limit = limit
        self._rate = limit / 8  # bytes per second
        self.capacity = self._rate * burst_seconds
        """The burst allowance, in bytes."""
        self._tokens = self.capacity
        self._at = now
        self._full_at = now
        self._since_full = 0  # bytes taken since the bucket was last full

    def take(self, size: int, now: float) -> bool:
        """Count ``size`` bytes sent at ``now``; ``False`` if they do not fit the allowance
        (then they are counted anyway: :meth:`measured` includes them)."""
        tokens = self._tokens + (now - self._at) * self._rate
        self._at = now
        if tokens >= self.capacity:
            tokens = self.capacity
            self._full_at = now
            self._since_full = 0
        self._tokens = tokens - size
        self._since_full += size
        return self._tokens >= 0

    def measured(self, now: float) -> float:
        """The sender's rate (bits/s) since the bucket was last full."""
        return self._since_full * 8 / max(now - self._full_at, _INSTANT)
