"""The fan-out (``kernel/fanout.py``): batches, sessions, gaps and drops.

* A batch is offered whole: a subscriber that starts or resumes in the middle of a batch gets
  its configs, the keyframe and the rest of the batch in one offer (one write); the batch object
  is a :class:`FrameBatch` shared by every live subscriber; a batch interval gathers frames
  between deliveries.
* Mutation checklist (each test names the deliberately broken kernel it fails on): the GOP cache
  not cleared on a new session -> ``test_a_new_session_starts_from_its_own_configs_and_gop``;
  the gap start recorded one frame late / ``configs_since`` off by one ->
  ``test_a_config_dropped_first_in_a_gap_is_given_again``; drops counted while a subscriber is
  still starting -> ``test_nothing_is_counted_before_a_subscriber_has_started``; the burst cap
  removed -> ``test_a_subscriber_that_keeps_up_never_drops_in_a_burst``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager

import trio
import trio.testing

from arcly_trio import AppSpec, Engine, PublisherReplaced, Takeover
from arcly_trio.core.frame import Frame, FrameBatch, FrameKind
from arcly_trio.core.keys import Credentials
from arcly_trio.kernel.fanout import EndReason, SessionStart
from arcly_trio.kernel.subscription import Subscription
from arcly_trio.testing import audio, audio_config, delta, keyframe, video_config
from arcly_trio.testing import frames as fb


class Recorder:
    """A sink that records every offer and takes everything."""

    def __init__(self) -> None:
        self.offers: list[list[Frame]] = []
        self.batches: list[Sequence[Frame]] = []
        self.times: list[float] = []

    def start_session(self, start: object) -> None:
        pass

    def replay(self, frames: list[Frame]) -> None:
        self.offers.append(list(frames))

    def offer(self, frames: Sequence[Frame], start: int) -> int:
        self.offers.append(list(frames[start:]))
        self.batches.append(frames)
        self.times.append(trio.current_time())
        return len(frames)

    def close(self, reason: EndReason) -> None:
        pass


async def test_a_starting_subscriber_gets_keyframe_and_rest_of_batch_in_one_offer() -> None:
    engine = Engine.builder().application(AppSpec("live", gop_cache_frames=0, audio_hold=0)).build()
    configs = [video_config(), audio_config()]
    first = [*configs, keyframe(0), delta(33)]
    batch = [delta(66), audio(70), delta(99), keyframe(132), delta(165), audio(170), delta(198)]
    async with engine, engine.publish("live/s") as publisher:
        for frame in first:
            await publisher.send(frame)
        await trio.testing.wait_all_tasks_blocked()
        one, two = Recorder(), Recorder()
        async with engine.attach("live/s", one), engine.attach("live/s", two):
            assert one.offers == [configs]  # the replay: configs, no GOP (cache off): starting
            for frame in batch:
                await publisher.send(frame)  # no checkpoint in between: one batch
            await trio.testing.wait_all_tasks_blocked()
    assert one.offers[1:] == [batch[3:]]  # the keyframe and the rest of the batch: one offer
    assert two.offers == one.offers


async def test_live_subscribers_share_one_frame_batch() -> None:
    engine = Engine.builder().application(AppSpec("live", audio_hold=0)).build()
    async with engine, engine.publish("live/s") as publisher:
        await publisher.send(keyframe(0))
        await trio.testing.wait_all_tasks_blocked()
        sinks = [Recorder() for _ in range(3)]
        async with (
            engine.attach("live/s", sinks[0]),
            engine.attach("live/s", sinks[1]),
            engine.attach("live/s", sinks[2]),
        ):
            for frame in [delta(33), audio(40), delta(66)]:
                await publisher.send(frame)
            await trio.testing.wait_all_tasks_blocked()
    batches = [sink.batches[-1] for sink in sinks]
    assert type(batches[0]) is FrameBatch and batches[0] is batches[1] is batches[2]


async def test_a_batch_interval_gathers_frames_between_deliveries(autojump_clock: trio.testing.MockClock) -> None:
    """Frames 33 ms apart with a 100 ms batch interval: the first goes out at once, then the
    viewer gets about three pictures per write, each within the interval of when it came."""
    engine = Engine.builder().application(AppSpec("live", batch_interval=0.1)).build()
    sink = Recorder()
    async with engine, engine.publish("live/s") as publisher:
        await publisher.send(keyframe(0))
        await trio.testing.wait_all_tasks_blocked()
        async with engine.attach("live/s", sink):
            await trio.sleep(0.5)  # a quiet spell
            arrival: dict[int, float] = {}
            for i in range(1, 31):
                await trio.sleep(0.033)
                arrival[i * 33] = trio.current_time()
                await publisher.send(delta(i * 33))
                await publisher.send(audio(i * 33 + 5))
                if i == 1:
                    await trio.testing.wait_all_tasks_blocked()
                    assert sink.offers[-1][0].dts == 33  # the first after a quiet spell: at once
            await trio.sleep(0.2)
            offers = sink.offers[1:]
            times = sink.times
    pictures = [[f for f in offer if f.kind is FrameKind.VIDEO] for offer in offers]
    waits = [at - arrival[f.dts] for offer, at in zip(offers, times) for f in offer if f.dts in arrival]
    assert max(waits) <= 0.1 + 1e-9  # none waits longer than the interval
    assert sum(len(p) for p in pictures) == 30
    assert len(offers) <= 12  # ~30 pictures in 1 s, one write per 100 ms
    assert max(len(p) for p in pictures) >= 3


# --------------------------------------------------------------------- sessions, gaps and drops


async def test_a_new_session_starts_from_its_own_configs_and_gop() -> None:
    spec = AppSpec("live", takeover=Takeover.REPLACE)
    async with Engine.builder().application(spec).build() as engine:
        old_config = fb.video_config(payload=b"old-avcC")
        old_audio = fb.audio_config(payload=b"\x11\x90")
        new_config = fb.video_config(payload=b"new-avcC")

        async def old_publisher() -> None:
            try:
                async with engine.publish("live/cam") as old:
                    for frame in [old_config, old_audio, fb.keyframe(0), fb.delta(33)]:
                        await old.send(frame)
                    await trio.sleep_forever()
            except PublisherReplaced:
                pass

        async with trio.open_nursery() as nursery:
            nursery.start_soon(old_publisher)
            await trio.testing.wait_all_tasks_blocked()
            async with engine.publish("live/cam") as new:
                for frame in [new_config, fb.keyframe(100), fb.delta(133)]:
                    await new.send(frame)
                await trio.testing.wait_all_tasks_blocked()
                async with engine.subscribe("live/cam") as sub:
                    replay = list(sub._replay)
        assert replay[0] is new_config
        assert old_config not in replay and old_audio not in replay
        assert [f.dts for f in replay if not f.config] == [100, 133]


async def test_subscribers_wait_for_a_new_sessions_keyframe() -> None:
    spec = AppSpec("live", reconnect_grace=5)
    async with Engine.builder().application(spec).build() as engine:
        async with engine.publish("live/cam") as publisher:
            for frame in [fb.video_config(), fb.keyframe(0)]:
                await publisher.send(frame)
            await trio.testing.wait_all_tasks_blocked()
        async with engine.subscribe("live/cam") as sub:
            async with engine.publish("live/cam") as publisher:
                new_config = fb.video_config(10_050, payload=b"new")
                for frame in [fb.delta(10_000), fb.delta(10_033), new_config, fb.keyframe(10_066)]:
                    await publisher.send(frame)
                await trio.testing.wait_all_tasks_blocked()
                got = await sub.next_batch(100)
                got += await sub.next_batch(100) if sub.queued else []
    live = [f for f in got if f.dts >= 10_000]
    assert live == [new_config, live[1]] and live[1].keyframe  # no mid-GOP deltas of the new session
    assert sub.dropped == 0


async def test_a_config_dropped_first_in_a_gap_is_given_again() -> None:
    async with Engine.builder().application(AppSpec("live", subscriber_queue=64)).build() as engine:
        async with engine.publish("live/cam") as publisher:
            await publisher.send(fb.video_config())
            await publisher.send(fb.keyframe(0))
            await trio.testing.wait_all_tasks_blocked()
            async with engine.subscribe("live/cam", capacity=2) as sub:
                while sub.queued:  # take the join-time frames
                    await sub.next_batch(100)
                await publisher.send(fb.delta(33))
                await publisher.send(fb.delta(50))  # the queue of 2 is full
                await trio.testing.wait_all_tasks_blocked()
                changed = fb.video_config(66, payload=b"changed")
                await publisher.send(changed)  # the first frame of the gap
                await publisher.send(fb.delta(99))
                await trio.testing.wait_all_tasks_blocked()
                assert sub.lagging and sub.dropped == 2
                got = await sub.next_batch(100)
                await publisher.send(fb.keyframe(132))
                await trio.testing.wait_all_tasks_blocked()
                got += await sub.next_batch(100)
    assert [f.dts for f in got] == [33, 50, 66, 132]
    assert got[2] is changed and got[3].keyframe
    assert sub.dropped == 1  # the delta at 99; the config was given again


async def test_nothing_is_counted_before_a_subscriber_has_started() -> None:
    """A joiner without a cached GOP skips everything until the next keyframe, uncounted: the
    audio too (video deltas are not counted anyway: no keyframe of their track was offered
    to it yet, so the audio is what this test is about). Mutant killed: ``Fanout._counts``
    without its ``STARTING`` rule (the audio counted, the subscriber evicted)."""
    spec = AppSpec("live", gop_cache_frames=0, lag_budget=0, audio_hold=0)
    async with Engine.builder().application(spec).build() as engine:
        async with engine.publish("live/cam") as publisher:
            await publisher.send(fb.video_config())
            await publisher.send(fb.audio_config())
            await publisher.send(fb.keyframe(0))
            await trio.testing.wait_all_tasks_blocked()
            async with engine.subscribe("live/cam", capacity=1) as sub:
                assert sub.subscriber.starting  # no cached GOP: it waits for the next keyframe
                for i in range(1, 10):  # before its first keyframe
                    await publisher.send(fb.delta(33 * i))
                    await publisher.send(fb.audio(33 * i + 10))
                await trio.testing.wait_all_tasks_blocked()
                assert sub.dropped == 0 and sub.end_reason is None  # not evicted either
                await publisher.send(fb.keyframe(330))
                await trio.testing.wait_all_tasks_blocked()
                got: list[Frame] = []
                while sub.queued:
                    got += await sub.next_batch(10)
                assert sub.end_reason is None
    assert [f.dts for f in got if not f.config] == [330]
    assert sum(f.config for f in got) == 2  # both configs, right before the keyframe
    assert sub.dropped == 0


async def test_a_subscriber_that_keeps_up_never_drops_in_a_burst(autojump_clock: trio.testing.MockClock) -> None:
    async with Engine.builder().application(AppSpec("live", subscriber_queue=16)).build() as engine:
        async with engine.publish("live/cam") as publisher:
            async with engine.subscribe("live/cam") as sub:
                received = 0

                async def read() -> None:
                    nonlocal received
                    async for _frame in sub:
                        received += 1

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(read)
                    burst = list(fb.synthetic_stream(gops=2, frames_per_gop=30))
                    for frame in burst:  # far more than the queue holds, sent without a pause
                        await publisher.send(frame)
                    await trio.sleep(1)  # past the audio hold
                    nursery.cancel_scope.cancel()
    assert sub.dropped == 0 and received == len(burst)


# ------------------------------------------------------------ (merged)
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
    assert sink.seen[sink.seen.index(2) :] == [2, 66, 70, 100, 110, "closed"]
