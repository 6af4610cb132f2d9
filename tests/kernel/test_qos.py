"""The QoS rate meter: a batch counted at once counts as its frames one by one."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from arcly_trio.kernel.qos import RateMeter


@given(
    st.lists(
        st.tuples(st.floats(0, 0.5), st.lists(st.integers(0, 10_000), min_size=1, max_size=6)),
        max_size=40,
    )
)
def test_a_batch_counted_at_once_equals_its_frames_one_by_one(batches: list[tuple[float, list[int]]]) -> None:
    one_by_one, at_once = RateMeter(), RateMeter()
    now = 0.0
    for step, sizes in batches:
        now += step
        for size in sizes:
            one_by_one.add(now, size)
        at_once.add(now, sum(sizes), len(sizes))
        assert at_once.rate(now) == one_by_one.rate(now)
    assert (at_once.frames_total, at_once.bytes_total) == (one_by_one.frames_total, one_by_one.bytes_total)
