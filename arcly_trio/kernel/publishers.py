"""Publisher slots and publish rate-limit buckets: how many publish, and from where.

:class:`PublisherSlots` counts the publishers the engine admits: at most ``max_publishers`` at
once, and at most ``max_per_address`` from one client address (addresses given as exempt, such
as the workers' local relays, and in-process publishers without an address are not counted), so
one address cannot take every slot. It also hands each new publish session of an application
with ``max_publish_bitrate`` its token bucket (:mod:`.ratelimit`): a full one, or the emptiest
one its address left in the last seconds, so that reconnecting does not renew the burst.

It counts only what it admitted: a claim returns its release, which counts the publisher out
exactly once however often it is called, so the counts cannot drift.

Error policy: :meth:`PublisherSlots.claim` raises ``AddressPublisherLimitReached`` at the
per-address limit and ``PublisherLimitReached`` at the limit (both
:class:`~arcly_trio.core.errors.ArclyError`); a negative limit is a ``ValueError``. Nothing
else raises.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

from arcly_trio.core.errors import AddressPublisherLimitReached, PublisherLimitReached
from arcly_trio.core.keys import Credentials
from arcly_trio.kernel.ratelimit import CarriedBuckets, PublishRateLimit
from arcly_trio.kernel.spec import AppSpec

__all__ = ["PublisherSlots"]


class PublisherSlots:
    """The engine's publisher count, its limits, and the rate-limit buckets publishers left."""

    def __init__(
        self,
        max_publishers: int | float = math.inf,
        max_per_address: int | None = None,
        exempt_addresses: Iterable[str] = (),
    ) -> None:
        self.max_publishers = max_publishers
        """At most this many publishers at once (a reload may change it; see :meth:`set_max`)."""
        self.max_per_address = max_per_address
        """At most this many publishers from one address (``None``: no limit)."""
        self.exempt_addresses = frozenset(exempt_addresses)
        """Addresses whose publishers are not counted per address (trusted peers)."""
        self.carried_buckets = CarriedBuckets()
        """Rate-limit buckets of ended publish sessions, by address (see :mod:`.ratelimit`)."""
        self.count = 0
        """Publishers admitted and not yet released."""
        self._by_address: dict[str, int] = {}

    def set_max(self, n: int | float) -> None:
        """Change the limit (a reload): publishers over a lowered limit keep publishing; new ones
        are refused until the count is under it (``ValueError`` if negative)."""
        if n < 0:
            raise ValueError("max_publishers must be >= 0")
        self.max_publishers = n

    def counted_address(self, credentials: Credentials) -> str | None:
        """The address ``credentials`` are counted under (``None``: not counted per address)."""
        peer = credentials.peer
        return peer[0] if peer is not None and peer[0] not in self.exempt_addresses else None

    def from_address(self, address: str) -> int:
        """How many publishers from ``address`` are counted against the per-address limit."""
        return self._by_address.get(address, 0)

    def claim(self, credentials: Credentials) -> Callable[[], None]:
        """Count one more publisher, from ``credentials.peer``'s address (see the module
        docstring for what it raises); returns the release."""
        address = self.counted_address(credentials)
        per_address = self.max_per_address
        if address is not None and per_address is not None and self._by_address.get(address, 0) >= per_address:
            raise AddressPublisherLimitReached(per_address, address)
        if self.count >= self.max_publishers:
            raise PublisherLimitReached(int(self.max_publishers))
        self.count += 1
        if address is not None:
            self._by_address[address] = self._by_address.get(address, 0) + 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.count -= 1
                if address is not None:
                    left = self._by_address[address] - 1
                    if left:
                        self._by_address[address] = left
                    else:
                        del self._by_address[address]

        return release

    def rate_limit(self, credentials: Credentials, spec: AppSpec, now: float) -> PublishRateLimit | None:
        """The rate limit of a new publish session of ``credentials`` in an application of
        ``spec`` (``None`` without ``max_publish_bitrate``): the emptiest bucket its address
        left in the last seconds, or a full one. A publisher without a counted address (a relay,
        a pull: it starts with its origin's GOP cache) has a burst of one GOP cache at least."""
        if spec.max_publish_bitrate <= 0:
            return None
        address = self.counted_address(credentials)
        return self.carried_buckets.bucket(
            address, spec.max_publish_bitrate, now, spec.gop_cache_bytes if address is None else 0
        )

    def rate_limit_ended(self, credentials: Credentials, bucket: PublishRateLimit, now: float) -> None:
        """A publish session with ``bucket`` ended: a reconnect gets this allowance back."""
        self.carried_buckets.ended(self.counted_address(credentials), bucket, now)
