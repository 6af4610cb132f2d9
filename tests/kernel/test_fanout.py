"""The fan-out announces publish sessions in band (:class:`~arcly_trio.kernel.fanout.SessionStart`).

Every sink is told, right before the first frame of each publish session that delivers a frame,
which session its frames belong to; a :class:`~arcly_trio.kernel.subscription.Subscription`
keeps the announcement at its place in the queue, so ``next_batch`` never mixes two sessions
and ``Subscription.session`` names the session of the frames last handed out.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import trio
import trio.testing

from arcly_trio import AppSpec, Engine, Frame
from arcly_trio.core.keys import Credentials
from arcly_trio.kernel.fanout import SessionStart
from arcly_trio.kernel.subscription import Subscription
from arcly_trio.testing import frames as fb


def first_session() -> list[Frame]:
    return [fb.video_config(), fb.audio_config(), fb.keyframe(0), fb.audio(10), fb.delta(33), fb.audio(40)]


def continuing_session() -> list[Frame]:
    """A publisher back without configs and with timestamps that go on forward."""
    return [fb.keyframe(66), fb.audio(70), fb.delta(100), fb.audio(110)]


async def publish(engine: Engine, frames: list[Frame]) -> None:
    async with engine.publish("live/cam") as publisher:
        for frame in frames:
            await publisher.send(frame)
        await trio.testing.wait_all_tasks_blocked()


@asynccontextmanager
async def subscribed_from_the_start() -> AsyncIterator[tuple[Engine, Subscription]]:
    """An engine and a subscription of ``live/cam`` made before any frame; the first session,
    :func:`first_session`, is published and over."""
    async with Engine.builder().application(AppSpec("live", reconnect_grace=5)).build() as engine:
        async with AsyncExitStack() as stack:
            publisher = await stack.enter_async_context(engine.publish("live/cam"))
            sub = await stack.enter_async_context(engine.subscribe("live/cam"))
            for frame in first_session():
                await publisher.send(frame)
            await trio.testing.wait_all_tasks_blocked()
            await publisher.aclose()
            yield engine, sub


async def test_a_session_that_sends_no_configs_and_goes_on_forward_is_announced_in_band() -> None:
    async with subscribed_from_the_start() as (engine, sub):
        await publish(engine, continuing_session())
        # Both sessions wait in the queue: the subscription is still in the first.
        assert sub.session is not None and sub.session.number == 1
        first = await sub.next_batch(100)
        one = sub.session
        second = await sub.next_batch(100)
        two = sub.session
    assert isinstance(one, SessionStart) and isinstance(two, SessionStart)
    assert (one.number, two.number) == (1, 2)  # a batch never holds two sessions' frames
    assert [f.dts for f in first if not f.config] == [0, 10, 33, 40]
    assert [f.dts for f in second] == [66, 70, 100, 110]
    assert one.info is not two.info


async def test_iterating_frame_by_frame_switches_at_the_first_frame_of_the_session() -> None:
    async with subscribed_from_the_start() as (engine, sub):
        await publish(engine, continuing_session())
        seen: list[tuple[int, int]] = []
        while sub.queued:
            frame = await sub.__anext__()
            assert sub.session is not None
            seen.append((sub.session.number, frame.dts))
    assert seen == [(1, 0), (1, 0), (1, 0), (1, 10), (1, 33), (1, 40), (2, 66), (2, 70), (2, 100), (2, 110)]


async def test_a_joiner_is_told_the_current_session_before_its_replay() -> None:
    async with Engine.builder().application(AppSpec("live", reconnect_grace=5)).build() as engine:
        await publish(engine, first_session())
        async with engine.publish("live/cam") as publisher:
            for frame in continuing_session():
                await publisher.send(frame)
            await trio.testing.wait_all_tasks_blocked()
            stream = engine.application("live").streams()[0]
            async with engine.subscribe("live/cam") as sub:
                assert sub.session is not None and sub.session.number == 2
                assert sub.session.info is stream.info
                replay = await sub.next_batch(100)
                assert [f.dts for f in replay] == [66, 70, 100, 110]
                assert sub.session.number == 2


async def test_a_session_without_frames_is_never_announced() -> None:
    async with subscribed_from_the_start() as (engine, sub):
        await publish(engine, [])  # back, and gone again without a frame
        await publish(engine, continuing_session())
        numbers = []
        while sub.queued:
            await sub.next_batch(100)
            assert sub.session is not None
            numbers.append(sub.session.number)
    assert numbers == [1, 3]


async def test_every_sink_is_told_before_the_first_frame_of_each_session() -> None:
    """The announcement reaches a sink that is not a Subscription too, in order with offers."""

    class Log:
        def __init__(self) -> None:
            self.seen: list[object] = []

        def start_session(self, start: SessionStart) -> None:
            self.seen.append(start.number)

        def replay(self, frames: list[Frame]) -> None:
            self.seen += [f.dts for f in frames]

        def offer(self, frames: list[Frame], start: int) -> int:
            self.seen += [f.dts for f in frames[start:] if not f.config]
            return len(frames)

        def close(self, reason: object) -> None:
            self.seen.append("closed")

    async with Engine.builder().application(AppSpec("live", reconnect_grace=5)).build() as engine:
        sink = Log()
        async with engine.publish("live/cam") as publisher:
            for frame in first_session()[:3]:
                await publisher.send(frame)
            await trio.testing.wait_all_tasks_blocked()
            stream = engine.application("live").streams()[0]
            stream.add_subscriber(999, Credentials(), "test", sink)
        await publish(engine, continuing_session())
        stream.shutdown()
    assert sink.seen[:2] == [1, 0]  # the current session, then the replay (configs, keyframe)
    assert sink.seen[sink.seen.index(2):] == [2, 66, 70, 100, 110, "closed"]
