"""Kernel correctness: the bugs of the kernel review and the mutants the suite used to let live.

Mutation checklist (each test names the deliberately broken kernel it fails on):

* engine exit while an authorization is in flight leaked ``RuntimeError`` and a stream with no
  task -> ``test_engine_exit_during_authorization_refuses_cleanly``;
* the GOP cache and lag policy ignored ``Frame.track`` ->
  ``test_a_late_joiner_of_two_tracks_gets_each_tracks_config_and_keyframe``;
* ``async for`` kept the join-time GOP alive -> ``test_async_for_releases_the_join_time_gop``;
* the reconnect-grace wake-up removed -> ``test_a_returning_publisher_is_pumped_at_once``;
* the GOP cache not cleared on a new session -> ``test_a_new_session_starts_from_its_own_configs_and_gop``;
* the gap start recorded one frame late / ``configs_since`` off by one ->
  ``test_a_config_dropped_first_in_a_gap_is_given_again``;
* drops counted while a subscriber is still starting ->
  ``test_nothing_is_counted_before_a_subscriber_has_started``;
* the burst cap removed -> ``test_a_subscriber_that_keeps_up_never_drops_in_a_burst``;
* the publisher's cancel scope not cancelled when the kernel ends it (a hang: under the autojump
  clock, a spin) -> every unit test has a short timeout (``pytest-timeout``, 60 s:
  ``tests/conftest.py``), and ``test_a_reaped_publisher_block_is_cancelled``.
"""

from __future__ import annotations

import trio
import trio.testing

from arcly_trio import (
    AppSpec,
    Credentials,
    Engine,
    EngineClosed,
    Frame,
    FrameKind,
    PublisherReplaced,
    StreamIdleReaped,
    Takeover,
)
from arcly_trio.kernel.auth import AllowAll
from arcly_trio.testing import frames as fb


class SlowAuth(AllowAll):
    """Authorizes after ``delay`` seconds (so an engine can stop while it is in flight)."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    async def authorize_publish(self, key, credentials):  # type: ignore[no-untyped-def]
        await trio.sleep(self.delay)

    async def authorize_play(self, key, credentials):  # type: ignore[no-untyped-def]
        await trio.sleep(self.delay)


class LingeringService:
    """A stream service whose clean-up takes a while (so an application's nursery stays
    closing, "closed to new arrivals", for that long after the engine is told to stop)."""

    name = "linger"
    capacity = 16

    def applies_to(self, spec: AppSpec) -> bool:
        return True

    async def serve_stream(self, stream, subscription) -> None:  # type: ignore[no-untyped-def]
        try:
            async for _frame in subscription:
                pass
        finally:
            with trio.CancelScope(shield=True):
                await trio.sleep(3)


async def test_engine_exit_during_authorization_refuses_cleanly(autojump_clock: trio.testing.MockClock) -> None:
    engine = Engine.builder().application("live").authenticator(SlowAuth(1.0)).service(LingeringService()).build()
    outcome: list[BaseException | str] = []

    async def publish(name: str) -> None:
        try:
            async with engine.publish(f"live/{name}") as publisher:
                outcome.append("published")
                await publisher.send(fb.video_config())
                await trio.sleep_forever()
        except BaseException as exc:  # noqa: BLE001 - what leaks is the point
            outcome.append(exc)
            if not isinstance(exc, (trio.Cancelled, Exception)):
                raise

    async with trio.open_nursery() as nursery:
        async with engine:
            app = engine.application("live")
            nursery.start_soon(publish, "first")
            await trio.sleep(1.2)  # "first" publishes; its service task lingers when cancelled
            nursery.start_soon(publish, "second")
            await trio.sleep(0.5)  # the second authorization is in flight as the engine exits
        await trio.sleep(5)
        nursery.cancel_scope.cancel()
    assert outcome[0] == "published"
    ends = sorted(type(o).__name__ for o in outcome[1:])
    assert ends == ["EngineClosed", "PublishEnded"], outcome  # never a RuntimeError from a nursery
    assert app.streams() == []


async def test_stop_during_authorization_refuses_cleanly(autojump_clock: trio.testing.MockClock) -> None:
    engine = Engine.builder().application("live").authenticator(SlowAuth(1.0)).build()
    outcome: list[BaseException] = []

    async def subscribe() -> None:
        try:
            async with engine.subscribe("live/cam"):
                pass
        except BaseException as exc:  # noqa: BLE001
            outcome.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(engine.serve)
        await trio.sleep(0.1)
        async with engine.publish("live/cam", Credentials()) as publisher:
            await publisher.send(fb.video_config())
            nursery.start_soon(subscribe)
            await trio.sleep(0.5)
            engine.stop()
    assert len(outcome) == 1 and isinstance(outcome[0], (EngineClosed, trio.Cancelled)), outcome


def two_track_gop(start: int) -> list[Frame]:
    """Track 0 and track 1 video, their keyframes at different places."""
    out: list[Frame] = []
    for i in range(6):
        ts = start + 33 * i
        out.append(Frame(FrameKind.VIDEO, "h264", ts, ts, b"t0-%d" % ts, keyframe=i == 0, track=0))
        out.append(Frame(FrameKind.VIDEO, "h264", ts, ts, b"t1-%d" % ts, keyframe=i == 3, track=1))
    return out


async def test_a_late_joiner_of_two_tracks_gets_each_tracks_config_and_keyframe(engine: Engine) -> None:
    config0 = Frame(FrameKind.VIDEO, "h264", 0, 0, b"avcC-0", keyframe=True, config=True, track=0)
    config1 = Frame(FrameKind.VIDEO, "h264", 0, 0, b"avcC-1", keyframe=True, config=True, track=1)
    async with engine.publish("live/multi") as publisher:
        for frame in [config0, config1, *two_track_gop(0)]:
            await publisher.send(frame)
        await trio.testing.wait_all_tasks_blocked()
        async with engine.subscribe("live/multi") as sub:
            got = await sub.next_batch(100)  # the join-time frames
            await publisher.send(Frame(FrameKind.VIDEO, "h264", 200, 200, b"t1-200", track=1))
            await trio.testing.wait_all_tasks_blocked()
            got += await sub.next_batch(100)
    assert got[:2] == [config0, config1]
    media = [f for f in got if not f.config]
    first0 = next(f for f in media if f.track == 0)
    first1 = next(f for f in media if f.track == 1)
    assert first0.keyframe and first0.dts == 0
    assert first1.keyframe and first1.dts == 99  # track 1's deltas before its keyframe are left out
    assert [f.dts for f in media if f.track == 1] == [99, 132, 165, 200]


async def test_a_lagging_subscriber_resumes_each_track_on_its_own_keyframe() -> None:
    async with Engine.builder().application(AppSpec("live", subscriber_queue=4)).build() as engine:
        async with engine.publish("live/multi") as publisher:
            await publisher.send(Frame(FrameKind.VIDEO, "h264", 0, 0, b"c0", keyframe=True, config=True))
            await publisher.send(Frame(FrameKind.VIDEO, "h264", 0, 0, b"c1", keyframe=True, config=True, track=1))
            async with engine.subscribe("live/multi", capacity=2) as sub:
                for frame in two_track_gop(0) + two_track_gop(1000):  # overflows a queue of 2
                    await publisher.send(frame)
                await trio.testing.wait_all_tasks_blocked()
                got: list[Frame] = []
                while sub.queued:
                    got += await sub.next_batch(100)
                for frame in two_track_gop(2000):
                    await publisher.send(frame)
                    await trio.testing.wait_all_tasks_blocked()
                    got += await sub.next_batch(100) if sub.queued else []
    assert sub.dropped > 0
    # After every gap, each track starts again on one of its own keyframes.
    for track in (0, 1):
        frames = [f for f in got if f.track == track and not f.config]
        assert frames[0].keyframe
        published = [f for g in (0, 1000, 2000) for f in two_track_gop(g) if f.track == track]
        positions = [next(i for i, p in enumerate(published) if p.payload == f.payload) for f in frames]
        for before, after, frame in zip(positions, positions[1:], frames[1:]):
            if after != before + 1:
                assert frame.keyframe, (track, frame)


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


async def test_a_returning_publisher_is_pumped_at_once(autojump_clock: trio.testing.MockClock) -> None:
    async with Engine.builder().application(AppSpec("live", reconnect_grace=10)).build() as engine:
        async with engine.publish("live/cam") as publisher:
            await publisher.send(fb.video_config())
            await publisher.send(fb.keyframe(0))
        async with engine.subscribe("live/cam") as sub:
            await trio.sleep(1)
            async with engine.publish("live/cam") as publisher:
                back = trio.current_time()
                await publisher.send(fb.video_config(payload=b"new"))
                await publisher.send(fb.keyframe(5000))
                async for frame in sub:
                    if frame.keyframe and not frame.config and frame.dts == 5000:
                        break
                assert trio.current_time() - back < 1, "the comeback waited for the grace to end"


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


async def test_a_reaped_publisher_block_is_cancelled(autojump_clock: trio.testing.MockClock) -> None:
    async with Engine.builder().application("live").idle_timeout(5).build() as engine:
        reached = False
        try:
            async with engine.publish("live/cam") as publisher:
                await publisher.send(fb.video_config())
                await trio.sleep_forever()  # only the kernel's cancellation ends this
        except StreamIdleReaped:
            reached = True
        assert reached
