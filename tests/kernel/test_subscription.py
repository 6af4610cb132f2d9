"""``Subscription`` (``kernel/subscription.py``): a deque and one direct wake-up per batch.

A whole batch is taken in one call, the bound holds, a reader cancelled while parked is never
woken again, one reader only, queued frames still come after the end; ``async for`` does not
keep the join-time GOP alive (mutation: keeping it fails
``test_async_for_releases_the_join_time_gop``).
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from arcly_trio import AppSpec, Credentials, Engine, StreamKey
from arcly_trio.kernel.fanout import EndReason
from arcly_trio.kernel.subscription import Subscription
from arcly_trio.testing import audio, keyframe
from arcly_trio.testing import frames as fb


async def test_a_burst_is_taken_in_one_call_and_the_bound_holds() -> None:
    engine = Engine.builder().application(AppSpec("live", subscriber_queue=6, audio_hold=0)).build()
    async with engine, engine.publish("live/s") as publisher, engine.subscribe("live/s") as sub:
        for i in range(10):
            await publisher.send(audio(i))  # no checkpoint in between: one ingest batch
        await trio.testing.wait_all_tasks_blocked()
        assert sub.queued == 6 and sub.dropped == 4  # the bound
        batch = await sub.next_batch(100)
        assert [f.dts for f in batch] == [0, 1, 2, 3, 4, 5]


async def test_a_parked_reader_cancelled_is_never_woken_and_one_reader_only() -> None:
    engine = Engine.builder().application("live").build()
    async with engine, engine.publish("live/s") as publisher, engine.subscribe("live/s") as sub:
        with trio.move_on_after(0.01):
            await sub.next_batch()
        await publisher.send(audio(1))  # would reschedule a task that left: trio would fail
        await trio.testing.wait_all_tasks_blocked()
        assert [f.dts for f in await sub.next_batch()] == [1]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sub.next_batch)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(trio.BusyResourceError):
                await sub.next_batch()
            nursery.cancel_scope.cancel()


async def test_queued_frames_still_come_after_the_end() -> None:
    engine = Engine.builder().application("live").build()
    async with engine:
        async with engine.publish("live/s") as publisher:
            async with engine.subscribe("live/s") as sub:
                for i in range(3):
                    await publisher.send(audio(i))
                await trio.testing.wait_all_tasks_blocked()
                publisher.close()
                await trio.testing.wait_all_tasks_blocked()
                assert sub.end_reason is EndReason.STREAM_ENDED
                assert [f.dts async for f in sub] == [0, 1, 2]
                assert await sub.next_batch() == []


async def test_async_for_releases_the_join_time_gop(engine: Engine) -> None:
    async with engine.publish("live/cam") as publisher:
        for frame in fb.synthetic_stream(gops=1, frames_per_gop=10, audio_fps=0):
            await publisher.send(frame)
        await trio.testing.wait_all_tasks_blocked()
        async with engine.subscribe("live/cam") as sub:
            joined = len(sub._replay)
            assert joined >= 10
            seen = 0
            async for _frame in sub:
                seen += 1
                if seen == joined:
                    break
            assert sub._replay == []  # the join-time frames are not held any more


# ------------------------------------------------------------ (merged)
class FakeStream:
    key = StreamKey("live", "s")

    def __init__(self) -> None:
        self.unsubscribed: list[Subscription] = []

    def unsubscribe(self, sub: Subscription) -> None:
        self.unsubscribed.append(sub)


def test_the_record_exists_from_the_start() -> None:
    stream = FakeStream()
    sub = Subscription(stream, 8, 7, Credentials(protocol="rtmp"), "rtmp")
    assert sub.subscriber.id == sub.id == 7
    assert sub.key == stream.key and sub.protocol == "rtmp" and sub.stream is stream
    assert sub.subscriber.sink is sub and sub.dropped == 0 and sub.end_reason is None


def test_detach_lets_go_of_the_frames_and_takes_no_more() -> None:
    sub = Subscription(FakeStream(), 8, 1, Credentials(), "")
    assert sub.offer([keyframe(0)], 0) == 1 and sub.queued == 1
    sub.detach()
    assert sub.queued == 0
    assert sub.offer([keyframe(40), keyframe(80)], 0) == 2  # taken and forgotten
    assert sub.queued == 0


async def test_unsubscribing_through_the_engine_detaches(engine) -> None:  # type: ignore[no-untyped-def]
    async with engine.publish("live/s") as publisher:
        await publisher.send(keyframe(0))
        async with engine.subscribe("live/s") as sub:
            assert sub.subscriber in engine.stream("live/s").fanout.subscribers
        assert sub.end_reason is EndReason.UNSUBSCRIBED and sub.queued == 0
