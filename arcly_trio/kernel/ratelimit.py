"""A publisher's rate limit: a token bucket over the media bytes it sends.

What it is for: a publisher decides how much the server receives, and through the stream
services (HLS windows, recordings, queues) how much it holds. :class:`PublishRateLimit` gives
each publish session a budget of ``limit`` bits per second with a burst allowance of
:data:`BURST_SECONDS` seconds of that rate (a keyframe, a GOP replayed by a relay, an encoder's
backlog after a reconnect): over any stretch of time the session may send at most
``burst + limit * stretch``. Past it the kernel ends the session
(:class:`~arcly_trio.core.errors.PublishRateLimited`, see :mod:`.publish`), for every protocol
alike, because every publisher sends through :meth:`~.publish.Publisher.send`.

A new session's bucket starts full, unless its address ended a session whose bucket is not
full again yet: then it gets that bucket back (:class:`CarriedBuckets`, the emptiest one its
address left), so reconnecting does not renew the burst allowance (the review's 25 publish
sessions of a 12 MB GOP each got a fresh one). A relay (an in-process publisher with no client
address: a pull, a cluster or worker relay) starts by replaying its origin's GOP cache, so its
burst allowance is at least the application's ``gop_cache_bytes``. Buckets take the clock's time from their
caller (trio's clock in the kernel), so they are tested with a fake clock.
:meth:`PublishRateLimit.measured` is the sender's rate over the stretch since the bucket was
last full: the stretch that used the allowance up.

Error policy: nothing here raises; :meth:`PublishRateLimit.take` says whether a send fits.
"""

from __future__ import annotations

import math

__all__ = ["BURST_SECONDS", "CarriedBuckets", "PublishRateLimit"]

#: The burst allowance, in seconds of the limit.
BURST_SECONDS = 4.0
_INSTANT = 0.001  # the shortest stretch a rate is measured over (seconds)


class PublishRateLimit:
    """A token bucket of ``limit`` bits/s and ``burst_seconds`` of burst (at least
    ``min_burst`` bytes), full at ``now``."""

    __slots__ = ("limit", "capacity", "_rate", "_tokens", "_at", "_full_at", "_since_full")

    def __init__(self, limit: int, now: float, burst_seconds: float = BURST_SECONDS, min_burst: int = 0) -> None:
        if limit <= 0 or not math.isfinite(burst_seconds) or burst_seconds <= 0:
            raise ValueError("a rate limit needs limit > 0 and burst_seconds > 0")
        self.limit = limit
        self._rate = limit / 8  # bytes per second
        self.capacity = max(self._rate * burst_seconds, float(min_burst))
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

    def tokens(self, now: float) -> float:
        """The allowance left at ``now`` (bytes; negative past it)."""
        return min(self.capacity, self._tokens + (now - self._at) * self._rate)


class CarriedBuckets:
    """The buckets of ended sessions, by address, until they are full again (a few seconds):
    :meth:`bucket` gives a new session from an address the emptiest one that address left, or a
    full one. At most ``per_address`` are kept per address (the fullest is let go first)."""

    def __init__(self, per_address: int = 16) -> None:
        self.per_address = per_address
        self._by_address: dict[str, list[PublishRateLimit]] = {}
        self._sweep_at = 64

    def __len__(self) -> int:
        """Addresses with a bucket kept."""
        return len(self._by_address)

    def bucket(self, address: str | None, limit: int, now: float, min_burst: int = 0) -> PublishRateLimit:
        """The bucket of a new session from ``address`` (``None``: always a full one; see
        :class:`PublishRateLimit` for ``min_burst``)."""
        kept = self._by_address.pop(address, None) if address is not None else None
        if kept:
            kept = [bucket for bucket in kept if bucket.limit == limit and bucket.tokens(now) < bucket.capacity]
            if kept:
                kept.sort(key=lambda bucket: bucket.tokens(now))
                emptiest = kept.pop(0)
                if kept:
                    self._by_address[address] = kept  # type: ignore[index]
                return emptiest
        return PublishRateLimit(limit, now, min_burst=min_burst)

    def ended(self, address: str | None, bucket: PublishRateLimit, now: float) -> None:
        """A session from ``address`` ended with ``bucket``: keep it until it is full again."""
        if address is None or bucket.tokens(now) >= bucket.capacity:
            return
        kept = self._by_address.setdefault(address, [])
        kept.append(bucket)
        if len(kept) > self.per_address:
            kept.remove(max(kept, key=lambda b: b.tokens(now)))
        if len(self._by_address) > self._sweep_at:  # let go of what is full again (amortized)
            for key in list(self._by_address):
                still = [b for b in self._by_address[key] if b.tokens(now) < b.capacity]
                if still:
                    self._by_address[key] = still
                else:
                    del self._by_address[key]
            self._sweep_at = max(64, 2 * len(self._by_address))
