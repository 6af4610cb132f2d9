"""Races of pulls on demand, driven by hypothesis: viewers arriving together start one pull.

A fake stream source stands for an upstream: it takes a drawn time to start, may refuse, then
publishes a keyframe every 100 ms until its stream has had no viewer for its idle period.
Viewers arrive at drawn instants (many at the very same instant), stay a drawn time and leave.
Time is trio's MockClock with autojump, so every schedule is exact and repeatable, and
hypothesis shrinks a failure to the smallest schedule.

Checked, whatever the schedule:

* never two runs of the source for one key at once (two viewers arriving together, or one
  arriving while the pull starts or stops, share or wait for the one pull);
* viewers that arrive at the same instant with no pull running cause exactly one start;
* a viewer either gets frames from the pulled stream or the source's refusal
  (``StreamNotFound``); none is attached to a pull that is stopping (none sees its stream end
  while it still watches);
* once everyone has left and the idle period passed, no pull runs and nothing is left behind.
"""

from __future__ import annotations

import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arcly_trio import AppSpec, Credentials, Engine, StreamKey
from arcly_trio.core.errors import StreamNotFound
from arcly_trio.kernel.fanout import EndReason
from arcly_trio.kernel.sources import SourceRequest
from arcly_trio.testing import frames as fb

KEY = StreamKey("live", "pulled")
IDLE = 1.0


class FakeSource:
    name = "fake"

    def __init__(self, start_delays: list[float], refusals: list[bool]) -> None:
        self.start_delays = start_delays
        self.refusals = refusals
        self.starts = 0
        self.running = 0
        self.most_running = 0
        self.started_at: list[float] = []

    def provides(self, key: StreamKey) -> bool:
        return key == KEY

    async def open_stream(
        self, engine: Engine, request: SourceRequest, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        attempt = self.starts
        self.starts += 1
        self.started_at.append(trio.current_time())
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await trio.sleep(self.start_delays[attempt % len(self.start_delays)])
            if self.refusals[attempt % len(self.refusals)]:
                raise StreamNotFound(KEY.app, KEY.name)
            async with engine.publish(request.key, Credentials(protocol="pull"), protocol="pull") as publisher:
                await publisher.send(fb.video_config())
                await publisher.send(fb.keyframe(0))
                task_status.started()
                async with trio.open_nursery() as nursery:

                    async def frames() -> None:
                        dts = 0
                        while True:
                            await trio.sleep(0.1)
                            dts += 100
                            await publisher.send(fb.keyframe(dts))

                    nursery.start_soon(frames)
                    await request.wait_idle(engine, IDLE)
                    nursery.cancel_scope.cancel()
        finally:
            self.running -= 1


async def viewer(engine: Engine, arrive: float, stay: float, log: list[str]) -> None:
    await trio.sleep(arrive)
    try:
        async with engine.subscribe(KEY) as sub:
            request = engine.sourcing.active.get(KEY)
            assert request is not None and not request.stopping, "attached to a stopping pull"
            outcome = "left"
            with trio.move_on_after(stay):
                async for frame in sub:
                    if not frame.config:
                        outcome = "frame"
                        break
                await trio.sleep_forever()
            log.append(outcome)
            assert sub.end_reason is None, f"the stream ended under a viewer: {sub.end_reason}"
    except StreamNotFound:
        log.append("refused")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_viewers_arriving_together_start_one_pull(data: st.DataObject) -> None:
    arrivals = data.draw(
        st.lists(st.sampled_from([0.0, 0.0, 0.0, 0.05, 0.5, 1.2, 2.5, 4.0]), min_size=2, max_size=8), label="arrivals"
    )
    stays = data.draw(
        st.lists(st.sampled_from([0.0, 0.05, 0.3, 1.5]), min_size=len(arrivals), max_size=len(arrivals)), label="stays"
    )
    start_delays = data.draw(
        st.lists(st.sampled_from([0.0, 0.01, 0.2, 1.0]), min_size=1, max_size=4), label="start delays"
    )
    refusals = data.draw(st.lists(st.booleans(), min_size=1, max_size=4), label="refusals")
    source = FakeSource(start_delays, refusals)
    log: list[str] = []

    async def main() -> None:
        engine = Engine.builder().application(AppSpec("live")).source(source).build()
        async with engine:
            with trio.fail_after(60):
                async with trio.open_nursery() as nursery:
                    for arrive, stay in zip(arrivals, stays):
                        nursery.start_soon(viewer, engine, arrive, stay, log)
                await trio.sleep(IDLE * 3)
            assert not engine.sourcing.active
            assert not engine.has_stream(KEY)
            assert source.running == 0

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert source.most_running <= 1
    assert len(log) == len(arrivals)
    # Viewers arriving at one instant start one pull between them, never one each.
    for instant in set(arrivals):
        assert source.started_at.count(instant) <= 1, (instant, source.started_at)
    if arrivals.count(0.0) >= 2:
        assert source.started_at.count(0.0) == 1
    assert source.starts <= len(set(arrivals))


def test_the_simplest_race_two_viewers_at_once_one_start() -> None:
    source = FakeSource([0.2], [False])

    async def main() -> None:
        async with Engine.builder().application(AppSpec("live")).source(source).build() as engine:
            log: list[str] = []
            async with trio.open_nursery() as nursery:
                nursery.start_soon(viewer, engine, 0.0, 0.5, log)
                nursery.start_soon(viewer, engine, 0.0, 0.5, log)
            assert log == ["frame", "frame"]
            assert source.starts == 1 and source.most_running == 1
            await trio.sleep(IDLE * 2)
            assert source.running == 0 and not engine.sourcing.active

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_subscribers_of_a_published_stream_never_ask_the_sources() -> None:
    source = FakeSource([0.0], [False])

    async def main() -> None:
        async with Engine.builder().application(AppSpec("live")).source(source).build() as engine:
            async with engine.publish(KEY, Credentials()) as publisher:
                await publisher.send(fb.keyframe(0))
                async with engine.subscribe(KEY) as sub:
                    assert (await sub.__anext__()).keyframe
            assert source.starts == 0
            assert EndReason.STREAM_ENDED.value == "stream-ended"

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
