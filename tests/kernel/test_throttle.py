"""The authorization throttle on its own, on trio's mock clock (issue 18, finding 6).

Checked: an address gets ``max_in_flight`` turns at once and ``max_waiting`` more in a queue
(none once it has refusals, and a refusal sends the queue away), the rest are refused at once
and logged with the burst, not per try; exempt addresses take no turn; a turn cancelled while it waits gives its place back; tries of concurrent turns are spaced
by the delay; refusals are kept per stream (bounded), an allowed stream clears its own only,
and time forgets them; the table stays bounded whatever the number of addresses and is empty
again once the clients are gone.
"""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

from arcly_trio.kernel.throttle import AuthThrottle

ADDRESS = "203.0.113.9"


async def hold(
    throttle: AuthThrottle,
    started: list[float],
    release: trio.Event,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Take a turn (reported once admitted), note when it starts, hold it until ``release``."""
    turn = throttle.admit(ADDRESS, "play")
    assert turn is not None
    task_status.started()
    async with turn:
        started.append(trio.current_time())
        await release.wait()


async def test_a_few_in_flight_a_small_queue_then_refused_at_once(autojump_clock) -> None:
    throttle = AuthThrottle(max_in_flight=2, max_waiting=3)
    started: list[float] = []
    release = trio.Event()
    async with trio.open_nursery() as nursery:
        for _ in range(5):
            await nursery.start(hold, throttle, started, release)
        await trio.sleep(1)
        assert len(started) == 2 and throttle.in_flight(ADDRESS, "play") == 5
        assert throttle.admit(ADDRESS, "play") is None  # refused at once
        for other in (("198.51.100.1", "play"), (ADDRESS, "publish")):  # other addresses, actions: untouched
            turn = throttle.admit(*other)
            assert turn is not None
            async with turn:
                pass
        release.set()
    assert len(started) == 5 and len(throttle) == 0  # every record gone with its clients


async def test_an_address_with_refusals_gets_no_queue(autojump_clock) -> None:
    throttle = AuthThrottle(max_in_flight=2, max_waiting=8)
    throttle.refused(ADDRESS, "play", "wrong token", "live/a")
    release = trio.Event()
    async with trio.open_nursery() as nursery:
        for _ in range(2):
            await nursery.start(hold, throttle, [], release)
        assert throttle.admit(ADDRESS, "play") is None
        release.set()


async def test_a_refusal_sends_the_queue_away_and_exempt_addresses_take_no_turn(autojump_clock) -> None:
    throttle = AuthThrottle(max_in_flight=1, max_waiting=5, exempt={"local"})
    release = trio.Event()
    bounced: list[bool] = []

    async def queued(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        turn = throttle.admit(ADDRESS, "play")
        assert turn is not None
        task_status.started()
        async with turn:
            bounced.append(turn.bounced)

    async with trio.open_nursery() as nursery:
        await nursery.start(hold, throttle, [], release)
        for _ in range(5):
            await nursery.start(queued)
        await trio.sleep(1)
        throttle.refused(ADDRESS, "play", "wrong token", "live/a")  # the one in flight was refused
        await trio.testing.wait_all_tasks_blocked()
        assert bounced == [True] * 5 and throttle.in_flight(ADDRESS, "play") == 1
        for _ in range(100):  # trusted: never waits, never refused for room
            turn = throttle.admit("local", "play")
            assert turn is not None
        release.set()
    assert len(throttle) == 1  # the refused address is remembered; "local" never was


async def test_a_turn_cancelled_while_it_waits_gives_its_place_back(autojump_clock) -> None:
    throttle = AuthThrottle(max_in_flight=1, max_waiting=1)
    release = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(hold, throttle, [], release)
        with trio.move_on_after(1):
            await hold(throttle, [], release)  # waits for the place, then is cancelled
        assert throttle.in_flight(ADDRESS, "play") == 1
        release.set()
    assert throttle.in_flight(ADDRESS, "play") == 0 and len(throttle) == 0
    throttle.refused(ADDRESS, "play", "x", "live/a")  # a delay: a turn now waits for its slot
    with trio.move_on_after(0.01):
        await hold(throttle, [], trio.Event())
    assert throttle.in_flight(ADDRESS, "play") == 0
    assert throttle.admit(ADDRESS, "play") is not None  # its place is free again


async def test_concurrent_turns_are_spaced_by_the_delay(autojump_clock) -> None:
    throttle = AuthThrottle(base_delay=1.0, max_delay=1.0, max_in_flight=2)
    throttle.refused(ADDRESS, "play", "x", "live/a")
    start = trio.current_time()
    starts: list[float] = []

    async def one() -> None:
        turn = throttle.admit(ADDRESS, "play")
        assert turn is not None
        async with turn:
            starts.append(trio.current_time() - start)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(one)
        nursery.start_soon(one)
    assert starts == [1.0, 2.0]  # one per delay, as if one after the other
    assert throttle.delayed == 2


async def test_refusals_are_kept_per_stream_and_a_success_clears_its_own(autojump_clock) -> None:
    throttle = AuthThrottle(base_delay=0.1, max_delay=10, max_keys=4, forget_after=60)
    for n in range(3):
        throttle.refused(ADDRESS, "play", "x", "live/b")
    throttle.refused(ADDRESS, "play", "x", "live/c")
    assert throttle.delay(ADDRESS, "play") == pytest.approx(0.8)
    throttle.allowed(ADDRESS, "play", "live/a")  # another stream: nothing forgotten
    assert throttle.delay(ADDRESS, "play") == pytest.approx(0.8)
    throttle.allowed(ADDRESS, "play", "live/c")
    assert throttle.delay(ADDRESS, "play") == pytest.approx(0.4)
    # Many streams: the record keeps max_keys of them, and the count of all.
    for n in range(100):
        throttle.refused(ADDRESS, "play", "x", f"live/s{n}")
    record = throttle._records[(ADDRESS, "play")]
    assert len(record.by_key) <= 4 and record.refusals == 103
    for n in range(100):
        throttle.allowed(ADDRESS, "play", f"live/s{n}")
    assert record.refusals >= 100 - 3  # the merged ones are not cleared by a success
    await trio.sleep(61)
    assert throttle.delay(ADDRESS, "play") == 0 and len(throttle) == 0  # forgotten in time


async def test_the_table_is_bounded_and_bursts_are_logged_not_each_try(autojump_clock, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.WARNING, logger="arcly_trio.auth")
    throttle = AuthThrottle(max_addresses=100, max_in_flight=1, max_waiting=0, log_interval=10)
    for n in range(1000):
        throttle.refused(f"10.0.{n // 256}.{n % 256}", "play", "wrong token", "live/a")
    assert len(throttle) == 100
    caplog.clear()
    release = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(hold, throttle, [], release)
        for _ in range(500):
            assert throttle.admit(ADDRESS, "play") is None
            throttle.refused_busy(ADDRESS, "play", "play of live/a: too many")
        release.set()
    assert throttle.busy == 500
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and lines[1].endswith("499 more play refusals in 0 s: 499 x play of live/a: too many"), lines
