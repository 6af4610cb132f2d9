"""The engine's publisher slots (arcly_trio.kernel.publishers): limits, per-address counts,
releases that count out exactly once, rate-limit buckets carried over a reconnect."""

from __future__ import annotations

import pytest

from arcly_trio.core.errors import AddressPublisherLimitReached, PublisherLimitReached
from arcly_trio.core.keys import Credentials
from arcly_trio.kernel.publishers import PublisherSlots
from arcly_trio.kernel.spec import AppSpec


def _from(address: str | None) -> Credentials:
    return Credentials(peer=(address, 1935) if address is not None else None)


def test_the_limit_and_the_per_address_limit_refuse_and_a_release_counts_out_once() -> None:
    slots = PublisherSlots(max_publishers=3, max_per_address=2, exempt_addresses=["10.0.0.9"])
    first = slots.claim(_from("10.0.0.1"))
    slots.claim(_from("10.0.0.1"))
    with pytest.raises(AddressPublisherLimitReached):
        slots.claim(_from("10.0.0.1"))
    slots.claim(_from("10.0.0.9"))  # exempt: not counted per address, but counted
    assert (slots.count, slots.from_address("10.0.0.1"), slots.from_address("10.0.0.9")) == (3, 2, 0)
    with pytest.raises(PublisherLimitReached):
        slots.claim(_from(None))
    first()
    first()  # a second release changes nothing
    assert (slots.count, slots.from_address("10.0.0.1")) == (2, 1)
    slots.claim(_from(None))  # in-process: no address
    assert slots.count == 3


def test_a_lowered_limit_keeps_publishers_and_refuses_new_ones() -> None:
    slots = PublisherSlots(max_publishers=2)
    releases = [slots.claim(_from("10.0.0.1")), slots.claim(_from("10.0.0.2"))]
    slots.set_max(1)
    with pytest.raises(PublisherLimitReached):
        slots.claim(_from("10.0.0.3"))
    releases[0]()
    releases[1]()
    slots.claim(_from("10.0.0.3"))
    with pytest.raises(ValueError):
        slots.set_max(-1)


def test_a_reconnect_gets_the_bucket_it_left_not_a_full_one() -> None:
    slots = PublisherSlots()
    assert slots.rate_limit(_from("10.0.0.1"), AppSpec("live"), now=0.0) is None  # no max_publish_bitrate
    spec = AppSpec("live", max_publish_bitrate=1_000_000)
    bucket = slots.rate_limit(_from("10.0.0.1"), spec, now=0.0)
    assert bucket is not None
    assert bucket.tokens(0.0) == bucket.capacity
    bucket.take(int(bucket.capacity), now=0.0)  # the whole burst spent, then the session ends
    slots.rate_limit_ended(_from("10.0.0.1"), bucket, now=0.0)
    again = slots.rate_limit(_from("10.0.0.1"), spec, now=0.1)
    assert again is not None and again.tokens(0.1) < again.capacity / 2  # not renewed by reconnecting
    other = slots.rate_limit(_from("10.0.0.2"), spec, now=0.1)
    assert other is not None and other.tokens(0.1) == other.capacity  # another address: a full one
