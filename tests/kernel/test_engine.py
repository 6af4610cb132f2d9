"""Kernel behaviour, one property per test: replay, lag, eviction, reaping, takeover, grace,
limits, clones, auth, observers, events, QoS, workers, runtime apps."""

from __future__ import annotations

import logging
import math

import pytest
import trio
import trio.testing

from arcly_trio import (
    AddressPublisherLimitReached,
    AppAlreadyRegistered,
    AppNotFound,
    AppSpec,
    Credentials,
    EndReason,
    Engine,
    EngineClosed,
    Frame,
    FrameKind,
    Observer,
    PublishEnded,
    PublisherLimitReached,
    PublisherReplaced,
    PublishRateLimited,
    PublishStartTimedOut,
    RateLimited,
    StreamAlreadyPublishing,
    StreamIdleReaped,
    StreamKey,
    StreamNotFound,
    StreamUnpublished,
    SubscriberEvicted,
    SubscriberLagged,
    SubscriberResumed,
    Takeover,
    TokenAuthenticator,
    Unauthorized,
)
from arcly_trio.kernel.auth import AllowAll
from arcly_trio.testing import (
    CountingObserver,
    audio,
    audio_config,
    delta,
    keyframe,
    metadata,
    synthetic_gop,
    video_config,
)
from arcly_trio.testing import frames as fb


async def drain(sub, n: int) -> list[Frame]:  # type: ignore[no-untyped-def]
    """Receive up to ``n`` frames (fewer if the subscription ends); fail after 10 s."""
    out: list[Frame] = []
    with trio.fail_after(10):
        while len(out) < n:
            batch = await sub.next_batch(limit=n - len(out))
            if not batch:
                break
            out.extend(batch)
    return out


async def settle() -> None:
    await trio.testing.wait_all_tasks_blocked()


def engine_with(*specs: AppSpec, **kw: object) -> Engine:
    builder = Engine.builder()
    for spec in specs:
        builder.application(spec)
    for name, value in kw.items():
        getattr(builder, name)(value)
    return builder.build()


async def test_late_joiner_gets_configs_then_gop_then_live_without_gap(engine: Engine) -> None:
    head = [metadata(), video_config(), audio_config()]
    gop = synthetic_gop(0, frames=10)
    async with engine.publish("live/s") as pub:
        for f in head + gop:
            await pub.send(f)
        await settle()
        async with engine.subscribe("live/s") as sub:
            live = synthetic_gop(400, frames=5)
            for f in live:
                await pub.send(f)
            got = await drain(sub, len(head) + len(gop) + len(live))
    assert [id(f) for f in got] == [id(f) for f in head + gop + live]


async def test_nothing_is_cached_before_the_first_keyframe(engine: Engine) -> None:
    async with engine.publish("live/s") as pub:
        for f in [video_config(), audio_config(), delta(0), audio(1), delta(33)]:
            await pub.send(f)
        await settle()
        async with engine.subscribe("live/s") as sub:
            await pub.send(d := delta(66))
            await pub.send(k := keyframe(99))
            got = await drain(sub, 3)
    assert [f.config for f in got[:2]] == [True, True]
    assert got[2] is k and all(f is not d for f in got)


@pytest.mark.parametrize("cap", [{"gop_cache_frames": 5}, {"gop_cache_bytes": 200}])
async def test_gop_past_its_cap_is_dropped_whole_until_the_next_keyframe(cap: dict[str, int]) -> None:
    async with engine_with(AppSpec("live", **cap)) as eng:
        async with eng.publish("live/s") as pub:
            await pub.send(video_config())
            for f in [keyframe(0, size=64)] + [delta(t, size=40) for t in range(1, 10)]:
                await pub.send(f)
            await settle()
            stream = eng.stream(StreamKey("live", "s"))
            assert stream.gop.gop_frames == 0
            async with eng.subscribe("live/s") as sub:
                await pub.send(delta(20))
                await pub.send(k := keyframe(30))
                got = await drain(sub, 2)
            assert got[0].config and got[1] is k


async def test_slow_subscriber_drops_to_keyframe_counts_and_tells(observer: CountingObserver) -> None:
    eng = engine_with(AppSpec("live", subscriber_queue=4), observer=observer)
    async with eng:
        async with eng.events("live") as feed, eng.publish("live/s") as pub:
            await pub.send(video_config())
            await pub.send(keyframe(0))
            await settle()
            async with eng.subscribe("live/s") as slow:
                first = await drain(slow, 2)  # configs + keyframe replay
                sent = [delta(t) for t in range(1, 11)]
                with trio.fail_after(1):  # the publisher never waits for the slow subscriber
                    for f in sent:
                        await pub.send(f)
                    await settle()
                assert slow.lagging and slow.dropped == 10 - 4
                queued = await drain(slow, 4)
                assert [id(f) for f in queued] == [id(f) for f in sent[:4]]
                await pub.send(cfg := video_config(50, payload=b"new"))
                await pub.send(k := keyframe(60))
                resumed = await drain(slow, 2)
                # The config missed during the gap is given again, right before the keyframe.
                assert resumed[0] is cfg and resumed[1] is k
                assert slow.dropped == 6 and not slow.lagging and slow.lag_episodes == 1
            events = []
            while True:
                try:
                    events.append(feed.receive_nowait())
                except trio.WouldBlock:
                    break
    assert first[1].keyframe
    lagged = [e for e in events if isinstance(e, SubscriberLagged)]
    resumed_ev = [e for e in events if isinstance(e, SubscriberResumed)]
    assert len(lagged) == 1 and len(resumed_ev) == 1 and resumed_ev[0].dropped == 6
    assert observer.counts["on_subscriber_lagged"] == 1
    assert observer.counts["on_subscriber_resumed"] == 1


async def test_one_slow_subscriber_does_not_disturb_a_fast_one() -> None:
    async with engine_with(AppSpec("live", subscriber_queue=2)) as eng:
        async with (
            eng.publish("live/s") as pub,
            eng.subscribe("live/s") as slow,
            eng.subscribe("live/s", capacity=1000) as fast,
        ):
            frames = [video_config(), *synthetic_gop(0, frames=30)]
            for f in frames:
                await pub.send(f)
            got = await drain(fast, len(frames))
            assert [id(f) for f in got] == [id(f) for f in frames]
            assert slow.dropped > 0 and fast.dropped == 0


async def test_lag_budget_evicts_and_says_why(observer: CountingObserver) -> None:
    async with engine_with(AppSpec("live", subscriber_queue=1, lag_budget=3), observer=observer) as eng:
        async with eng.publish("live/s") as pub, eng.subscribe("live/s") as sub:
            for f in [video_config(), keyframe(0), *[delta(t) for t in range(1, 8)]]:
                await pub.send(f)
            await settle()
            rest = await drain(sub, 100)
            assert sub.end_reason is EndReason.EVICTED and len(rest) == 1
            assert sub.dropped == 4
    evicted = observer.of_type(SubscriberEvicted)
    assert len(evicted) == 1 and evicted[0].lag_budget == 3  # type: ignore[attr-defined]


async def test_idle_stream_is_reaped_with_a_clear_error(
    autojump_clock: trio.testing.MockClock, observer: CountingObserver
) -> None:
    async with engine_with(AppSpec("live"), idle_timeout=5, observer=observer) as eng:
        start = trio.current_time()
        with pytest.raises(StreamIdleReaped) as info:
            async with eng.publish("live/s") as pub:
                await pub.send(video_config())
                await trio.sleep(3)
                await pub.send(keyframe(0))  # pushes the deadline: reaped 5 s after this
                await trio.sleep_forever()
        assert trio.current_time() - start == pytest.approx(8, abs=0.01)
        assert info.value.idle_timeout == 5
        assert eng.publisher_count == 0 and eng.streams() == []
    assert observer.counts["on_stream_reaped"] == 1


async def test_idle_is_counted_from_creation_when_nothing_is_sent(autojump_clock: trio.testing.MockClock) -> None:
    async with engine_with(AppSpec("live"), idle_timeout=5) as eng:
        start = trio.current_time()
        with pytest.raises(StreamIdleReaped):
            async with eng.publish("live/s"):
                await trio.sleep_forever()
        assert trio.current_time() - start == pytest.approx(5, abs=0.01)


async def test_subscribers_of_a_reaped_stream_end_with_reason(autojump_clock: trio.testing.MockClock) -> None:
    async with engine_with(AppSpec("live"), idle_timeout=5) as eng:
        async with trio.open_nursery() as nursery:

            async def publisher() -> None:
                with pytest.raises(StreamIdleReaped):
                    async with eng.publish("live/s"):
                        await trio.sleep_forever()

            nursery.start_soon(publisher)
            await settle()
            async with eng.subscribe("live/s") as sub:
                assert await drain(sub, 1) == []
                assert sub.end_reason is EndReason.REAPED


async def test_second_publisher_is_rejected_by_default(engine: Engine) -> None:
    async with engine.publish("live/s"):
        with pytest.raises(StreamAlreadyPublishing) as info:
            async with engine.publish("live/s"):
                pass
        assert (info.value.app, info.value.stream) == ("live", "s")
        assert engine.publisher_count == 1


async def test_replace_takes_over_and_subscribers_stay() -> None:
    async with engine_with(AppSpec("live", takeover=Takeover.REPLACE)) as eng:
        async with trio.open_nursery() as nursery:
            old_ready = trio.Event()
            outcome: list[BaseException] = []

            async def old_publisher() -> None:
                try:
                    async with eng.publish("live/s") as pub:
                        await pub.send(video_config())
                        await pub.send(keyframe(0))
                        old_ready.set()
                        await trio.sleep_forever()
                except PublishEnded as exc:
                    outcome.append(exc)

            nursery.start_soon(old_publisher)
            await old_ready.wait()
            async with eng.subscribe("live/s") as sub:
                async with eng.publish("live/s") as new:
                    await settle()
                    assert isinstance(outcome[0], PublisherReplaced)
                    assert eng.publisher_count == 1
                    await new.send(cfg := video_config(100))
                    await new.send(k := keyframe(100))
                    got = await drain(sub, 4)
                assert got[2] is cfg and got[3] is k and sub.end_reason is None


async def test_reconnect_grace_keeps_subscribers(autojump_clock: trio.testing.MockClock) -> None:
    async with engine_with(AppSpec("live", reconnect_grace=3)) as eng:
        async with eng.subscribe("live/s") if False else eng.publish("live/s") as pub:
            await pub.send(video_config())
            await pub.send(keyframe(0))
        async with eng.subscribe("live/s") as sub:  # the stream waits out its grace
            await trio.sleep(2)
            async with eng.publish("live/s") as pub:
                await pub.send(k := keyframe(2000))
                got = await drain(sub, 3)
                assert got[-1] is k
            start = trio.current_time()
            assert await drain(sub, 1) == []
            assert sub.end_reason is EndReason.STREAM_ENDED
            assert trio.current_time() - start == pytest.approx(3, abs=0.01)


async def test_publisher_limit_is_engine_wide() -> None:
    async with engine_with(AppSpec("a"), AppSpec("b"), max_publishers=2) as eng:
        async with eng.publish("a/1"), eng.publish("b/1"):
            with pytest.raises(PublisherLimitReached) as info:
                async with eng.publish("a/2"):
                    pass
            assert info.value.limit == 2
        async with eng.publish("a/2"):
            assert eng.publisher_count == 1


async def test_clones_keep_the_session_until_the_last_closes(engine: Engine) -> None:
    async with engine.subscribe("live/s") if False else engine.publish("live/s") as pub:
        audio_track = pub.clone()
        await audio_track.send(audio_config())
    # The block is left but the clone is open: still publishing.
    assert engine.publisher_count == 1
    async with engine.subscribe("live/s") as sub:
        await audio_track.send(a := audio(5))
        got = await drain(sub, 2)
        assert got[-1] is a
        await audio_track.aclose()
        assert engine.publisher_count == 0
        assert await drain(sub, 1) == [] and sub.end_reason is EndReason.STREAM_ENDED


async def test_sends_after_the_end_raise(engine: Engine) -> None:
    async with engine.publish("live/s") as pub:
        pass
    with pytest.raises(PublishEnded):
        await pub.send(keyframe(0))


async def test_a_crashing_publisher_ends_the_publish_and_delivers_what_it_sent(engine: Engine) -> None:
    async with engine.subscribe("live/x") if False else engine.publish("live/warm"):
        pass
    frames = [video_config(), keyframe(0), delta(33)]
    async with trio.open_nursery() as nursery:
        got: list[Frame] = []

        async def reader() -> None:
            async with engine.subscribe("live/s") as sub:
                got.extend(await drain(sub, 100))

        with pytest.raises(RuntimeError):
            async with engine.publish("live/s") as pub:
                nursery.start_soon(reader)
                await settle()
                for f in frames:
                    await pub.send(f)
                raise RuntimeError("encoder died")
    assert [id(f) for f in got] == [id(f) for f in frames]
    assert engine.publisher_count == 0


async def test_unknown_app_and_stream(engine: Engine) -> None:
    with pytest.raises(AppNotFound):
        async with engine.publish("nope/s"):
            pass
    with pytest.raises(StreamNotFound) as info:
        async with engine.subscribe("live/none"):
            pass
    assert info.value.stream == "none"


async def test_authenticator_guards_publish_and_play() -> None:
    auth = TokenAuthenticator(publish_token="pub", play_token="play")
    async with engine_with(AppSpec("live"), authenticator=auth) as eng:
        with pytest.raises(Unauthorized) as info:
            async with eng.publish("live/s", Credentials(token="wrong")):
                pass
        assert info.value.action == "publish" and info.value.reason == "wrong token"
        async with eng.publish("live/s", Credentials(token="pub")):
            with pytest.raises(Unauthorized):
                async with eng.subscribe("live/s", Credentials()):
                    pass
            async with eng.subscribe("live/s", Credentials(token="play")):
                pass
        assert eng.publisher_count == 0


async def test_cancelled_during_authorisation_leaks_nothing(autojump_clock: trio.testing.MockClock) -> None:
    class SlowAuth(TokenAuthenticator):
        async def authorize_publish(self, key, credentials):  # type: ignore[no-untyped-def]
            await trio.sleep(10)

    async with engine_with(AppSpec("live"), authenticator=SlowAuth()) as eng:
        with trio.move_on_after(1):
            async with eng.publish("live/s"):
                pytest.fail("unreachable")
        assert eng.publisher_count == 0 and eng.streams() == []


async def test_an_observer_that_raises_is_logged_and_harmless(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(Observer):
        def on_frame(self, key, frame):  # type: ignore[no-untyped-def]
            raise ValueError("observer bug")

        def on_subscriber_joined(self, event):  # type: ignore[no-untyped-def]
            raise ValueError("observer bug")

    caplog.set_level(logging.ERROR)
    async with engine_with(AppSpec("live"), observer=Broken()) as eng:
        async with eng.publish("live/s") as pub, eng.subscribe("live/s") as sub:
            frames = [video_config(), keyframe(0), delta(1)]
            for f in frames:
                await pub.send(f)
            assert [id(f) for f in await drain(sub, 3)] == [id(f) for f in frames]
    assert (
        sum(
            "observer bug" in r.getMessage() or (r.exc_info and "observer bug" in str(r.exc_info[1]))
            for r in caplog.records
        )
        == 2
    )  # first failure per hook, with traceback


async def test_event_feed_is_bounded_and_counts_drops(engine: Engine) -> None:
    async with engine.events("live", capacity=2) as feed:
        async with engine.publish("live/s"):
            for _ in range(3):
                async with engine.subscribe("live/s"):
                    pass
        await settle()  # the stream task closes the stream
    assert feed.dropped == 1 + 6 + 1 + 1 - 2  # published, 3x(joined, left), unpublished, closed


async def test_qos_over_the_last_second(autojump_clock: trio.testing.MockClock, engine: Engine) -> None:
    async with engine.publish("live/s") as pub:
        await pub.send(video_config())
        for i in range(60):  # 2 s at 30 fps of 1000-byte frames
            await pub.send(keyframe(i * 33, size=1000) if i % 30 == 0 else delta(i * 33, size=1000))
            await pub.send(audio(i * 33, size=100))
            await trio.sleep(1 / 30)
        await settle()
        stats = engine.stream(StreamKey("live", "s")).stats()
    assert stats.video_fps == pytest.approx(30, abs=1)
    assert stats.video_bitrate == pytest.approx(30 * 1000 * 8, rel=0.05)
    assert stats.audio_fps == pytest.approx(30, abs=1)
    assert stats.video_frames_total == 60 and stats.info.video_codec == "h264"
    assert stats.info.audio_codec == "aac" and stats.publishing


class _Worker:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.running = False

    async def serve(self, engine: Engine, *, task_status=trio.TASK_STATUS_IGNORED) -> None:  # type: ignore[no-untyped-def]
        self.running = True
        task_status.started(1234)
        try:
            if self.fail:
                await trio.sleep(0)
                raise OSError("port exploded")
            await trio.sleep_forever()
        finally:
            self.running = False


async def test_workers_are_ready_when_the_engine_is_and_stop_with_it() -> None:
    worker = _Worker()
    eng = Engine.builder().application("live").protocol(worker).build()
    async with eng:
        assert worker.running and eng.worker_info == {0: 1234}
    assert not worker.running and not eng.running


async def test_a_crashing_worker_brings_the_engine_down_loudly() -> None:
    eng = Engine.builder().application("live").protocol(_Worker(fail=True)).build()
    with pytest.raises(OSError, match="port exploded"):
        async with eng:
            await trio.sleep_forever()


async def test_engine_serve_under_nursery_start() -> None:
    eng = Engine.builder().application("live").build()
    async with trio.open_nursery() as nursery:
        started = await nursery.start(eng.serve)
        assert started is eng and eng.running
        nursery.cancel_scope.cancel()
    assert not eng.running


async def test_applications_at_runtime(engine: Engine) -> None:
    await engine.add_application(AppSpec("extra", gop_cache_frames=0))
    assert sorted(app.name for app in engine.applications()) == ["extra", "live"]
    with pytest.raises(AppAlreadyRegistered):
        await engine.add_application("extra")
    async with engine.publish("extra/s"):
        assert engine.publisher_count == 1


async def test_engines_coexist() -> None:
    a = Engine.builder().application("live").max_publishers(1).build()
    b = Engine.builder().application("live").max_publishers(1).build()
    async with a, b:
        async with a.publish("live/s"), b.publish("live/s"):
            assert a.publisher_count == b.publisher_count == 1


def test_frames_are_immutable_and_serialised_once() -> None:
    f = keyframe(0)
    calls: list[int] = []
    for _ in range(3):
        assert f.encoded(("fmt", 1), lambda fr: calls.append(1) or b"x" + fr.payload) == b"x" + f.payload
    assert calls == [1]
    with pytest.raises(AttributeError):
        f.pts = 5  # type: ignore[misc]
    assert Frame(FrameKind.AUDIO, "aac", 1, 1, b"") != Frame(FrameKind.AUDIO, "aac", 1, 1, b"")


def test_app_spec_validates() -> None:
    with pytest.raises(ValueError):
        AppSpec("a/b")
    with pytest.raises(ValueError):
        AppSpec("x", subscriber_queue=0)
    assert AppSpec("x", takeover="replace").takeover is Takeover.REPLACE
    assert math.isinf(Engine.builder().build().max_publisher_count)


class _Recorder:
    name = "rec"
    capacity = 10_000

    def __init__(self) -> None:
        self.got: dict[str, list[Frame]] = {}
        self.ended: list[str] = []

    def applies_to(self, spec: AppSpec) -> bool:
        return spec.record

    async def serve_stream(self, stream, subscription) -> None:  # type: ignore[no-untyped-def]
        frames = self.got.setdefault(str(stream.key), [])
        async for frame in subscription:
            frames.append(frame)
        self.ended.append(subscription.end_reason.value)


async def test_stream_services_see_every_frame_from_the_first() -> None:
    rec = _Recorder()
    eng = Engine.builder().application(AppSpec("rec", record=True)).application("plain").service(rec).build()
    async with eng:
        frames = [video_config(), delta(0), keyframe(1)]
        async with eng.publish("rec/s") as pub:
            for f in frames:
                await pub.send(f)
        async with eng.publish("plain/s") as pub:
            await pub.send(keyframe(0))
        await settle()
    # Every frame from the first, except a video delta before the track's first keyframe.
    assert [id(f) for f in rec.got["rec/s"]] == [id(frames[0]), id(frames[2])]
    assert list(rec.got) == ["rec/s"] and rec.ended == ["stream-ended"]


async def test_graceful_shutdown_tells_publishers_and_drains_subscribers(autojump_clock) -> None:  # type: ignore[no-untyped-def]
    rec = _Recorder()
    eng = Engine.builder().application(AppSpec("rec", record=True)).service(rec).build()
    outcome: list[BaseException] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(eng.serve)

        async def publisher() -> None:
            try:
                async with eng.publish("rec/s") as pub:
                    for f in [video_config(), keyframe(0), delta(1)]:
                        await pub.send(f)
                    await trio.sleep_forever()
            except PublishEnded as exc:
                outcome.append(exc)

        nursery.start_soon(publisher)
        await settle()
        start = trio.current_time()
        await eng.shutdown(grace=5)
        assert trio.current_time() - start < 1
    assert "shutting down" in str(outcome[0])
    assert len(rec.got["rec/s"]) == 3 and rec.ended == ["shutdown"]
    assert not eng.running


async def test_audio_is_grouped_with_the_next_video_frame(
    autojump_clock: trio.testing.MockClock, engine: Engine
) -> None:
    async with engine.publish("live/s") as pub, engine.subscribe("live/s") as sub:
        for f in [video_config(), keyframe(0)]:
            await pub.send(f)
        assert len(await sub.next_batch()) == 2
        await pub.send(a1 := audio(10))
        await pub.send(a2 := audio(31))
        await settle()
        assert sub.queued == 0  # held: no wake-up for audio alone
        await pub.send(v := delta(33))
        batch = await sub.next_batch()
        assert [id(f) for f in batch] == [id(a1), id(a2), id(v)]  # one wake-up, order kept
        await pub.send(a3 := audio(52))
        start = trio.current_time()
        assert await sub.next_batch() == [a3]  # video stalled: released after the hold limit
        assert trio.current_time() - start == pytest.approx(0.1, abs=0.01)


async def test_timer_keeps_hold_and_idle_exact_while_frames_flow(autojump_clock: trio.testing.MockClock) -> None:
    """The stream's one timer (moved forward only now and then, see ``Stream._pump``) never
    delays a batch while a publisher sends at 30 fps with audio held at every tick, nor fires
    what is not due; once the publisher stops, the held audio goes out 0.1 s after it was
    held and the stream is reaped exactly ``idle_timeout`` after the last batch."""
    async with engine_with(AppSpec("live"), idle_timeout=5) as eng:
        with pytest.raises(StreamIdleReaped):
            async with eng.publish("live/s") as pub, eng.subscribe("live/s") as sub:
                await pub.send(video_config())
                await pub.send(keyframe(0))
                assert len(await sub.next_batch()) == 2
                for tick in range(1, 91):  # 3 s of media
                    sent = trio.current_time()
                    await pub.send(v := delta(tick * 33))
                    batch = await sub.next_batch()
                    assert batch[-1] is v and trio.current_time() == sent  # delivered at once
                    await pub.send(audio(tick * 33 + 10))  # held until the next video frame
                    await trio.sleep(1 / 30)
                await pub.send(a := audio(3000))
                held_at = trio.current_time()
                late = await sub.next_batch()
                assert late[-1] is a and trio.current_time() - held_at == pytest.approx(0.1, abs=1e-6)
                await trio.sleep_forever()
        assert trio.current_time() - held_at == pytest.approx(5, abs=1e-6)


async def test_audio_only_streams_are_not_held(engine: Engine) -> None:
    async with engine.publish("live/s") as pub, engine.subscribe("live/s") as sub:
        await pub.send(audio_config())
        await pub.send(a := audio(0))
        await settle()
        assert sub.queued == 2 and (await sub.next_batch())[-1] is a


async def test_shutdown_delivers_frames_still_in_flight() -> None:
    rec = _Recorder()
    eng = Engine.builder().application(AppSpec("rec", record=True)).service(rec).build()
    async with trio.open_nursery() as nursery:
        await nursery.start(eng.serve)
        sent: list[Frame] = []

        async def publisher() -> None:
            with pytest.raises(PublishEnded):
                async with eng.publish("rec/s") as pub:
                    for f in [video_config(), *synthetic_gop(0, frames=20, audio_fps=0)]:
                        await pub.send(f)  # fits the ingest queue: no checkpoint, all still queued
                        sent.append(f)
                    stream = eng.stream("rec/s")
                    assert stream.stats().video_frames_total == 0  # nothing delivered yet
                    stream.shutdown()
                    await trio.sleep_forever()

        nursery.start_soon(publisher)
        await trio.testing.wait_all_tasks_blocked()
        await eng.shutdown(grace=5)
        assert not eng.running  # shutdown returns once the engine has stopped
    assert [id(f) for f in rec.got["rec/s"]] == [id(f) for f in sent]


async def test_stream_info_reads_codec_and_resolution_from_the_video_config(engine: Engine) -> None:
    from arcly_trio.server.demo import demo_frames

    configs = [f for f in demo_frames() if f.config]
    async with engine.publish("live/s") as pub:
        for f in configs:
            await pub.send(f)
        await settle()
        info = engine.stream("live/s").stats().info
    assert (info.video_codec, info.width, info.height) == ("h264", 640, 360)


# --- publish limits (issue 18, findings 11 and 12) ---------------------------------------------


async def test_a_publisher_over_its_bitrate_is_cut_with_the_rate_it_sent(
    autojump_clock: trio.testing.MockClock, observer: CountingObserver
) -> None:
    """Attack: one publisher sending far more than any encoder (the review: 416 Mbit/s took RSS to
    564 MB). The kernel's publish path counts every payload byte against the application's
    limit (a 4 s burst allowance): at 2x the limit the session is cut after about 4 s, told why,
    with the rate it sent; the observers and the audit log hear of it. Mutant killed: no check in
    ``Publisher.send``."""
    from arcly_trio.ops import AuditPipeline, MemorySink

    sink = MemorySink()
    limit = 8_000_000  # 1 MB/s; the burst allowance is 4 MB
    builder = Engine.builder().application(AppSpec("live", max_publish_bitrate=limit)).observer(observer)
    async with builder.observer(AuditPipeline(sink)).build() as eng:
        start = trio.current_time()
        sent = 0
        with pytest.raises(PublishRateLimited) as info:
            async with eng.publish("live/fast", Credentials(peer=("203.0.113.7", 5000))) as pub:
                await pub.send(video_config())
                for n in range(10_000):  # 50 KB every 25 ms: 16 Mbit/s
                    frame = keyframe(25 * n, 50_000) if n % 40 == 0 else delta(25 * n, 50_000)
                    await pub.send(frame)
                    sent += 1
                    await trio.sleep(0.025)
        cut_after = trio.current_time() - start
        assert 3.5 < cut_after < 5, cut_after  # 4 MB of burst drained at 1 MB/s over the limit
        assert info.value.limit == limit and 15e6 < info.value.measured < 17e6
        assert f"sent {info.value.measured / 1e6:.1f} Mbit/s, over the limit of 8 Mbit/s" in str(info.value)
        assert eng.publisher_count == 0
        await trio.sleep(1)  # the audit pipeline writes
    [event] = observer.of_type(RateLimited)
    assert isinstance(event, RateLimited) and event.limit == limit and event.peer == ("203.0.113.7", 5000)
    assert event.bytes == sent * 50_000 + len(video_config().payload)  # the frame over the limit is not taken
    ended = observer.of_type(StreamUnpublished)
    assert [e.reason for e in ended] == ["rate-limited"]  # type: ignore[attr-defined]
    [record] = [r for r in sink.records if r["event"] == "rate-limited"]
    assert record["limit"] == limit and record["address"] == "203.0.113.7" and record["stream"] == "fast"


async def test_a_publisher_under_its_bitrate_with_keyframe_bursts_is_never_cut(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """6 Mbit/s on average with a 1 MB keyframe every 2 s (and a 3.5 MB frame to start) under an
    8 Mbit/s limit: two minutes without a cut. Mutant killed: no burst allowance."""
    async with engine_with(AppSpec("live", max_publish_bitrate=8_000_000)) as eng:
        async with eng.publish("live/ok") as pub:
            await pub.send(video_config())
            await pub.send(keyframe(0, 3_500_000))
            await trio.sleep(4)
            for n in range(1, 60 * 30 * 2):  # 30 fps for 2 minutes
                size = 1_000_000 if n % 60 == 0 else 8_000
                await pub.send(keyframe(4000 + n * 33, size) if n % 60 == 0 else delta(4000 + n * 33, size))
                await trio.sleep(1 / 30)
            assert pub.active


async def test_one_address_holds_at_most_its_share_of_publishers() -> None:
    """Attack: one address opening publisher after publisher (the review: 1000 idle /ingest
    publishers from 127.0.0.1 held every slot). Past ``max_publishers_per_address`` that address
    is refused; another address, an exempt one (the workers' relays) and in-process publishers
    are not. Mutant killed: counting publishers only in all."""
    builder = Engine.builder().application(AppSpec("live")).max_publishers(10)
    async with builder.max_publishers_per_address(2, exempt={"local"}).build() as eng:
        attacker = Credentials(peer=("198.51.100.9", 1))
        async with eng.publish("live/a1", attacker), eng.publish("live/a2", attacker):
            with pytest.raises(AddressPublisherLimitReached) as info:
                async with eng.publish("live/a3", Credentials(peer=("198.51.100.9", 2))):
                    pass
            assert (info.value.limit, info.value.address) == (2, "198.51.100.9")
            assert "per address" in str(info.value) and isinstance(info.value, PublisherLimitReached)
            assert eng.publishers_from("198.51.100.9") == 2
            async with (
                eng.publish("live/b", Credentials(peer=("192.0.2.1", 1))),
                eng.publish("live/r1", Credentials(peer=("local", 0))),
                eng.publish("live/r2", Credentials(peer=("local", 0))),
                eng.publish("live/r3", Credentials(peer=("local", 0))),
                eng.publish("live/demo"),
            ):
                assert eng.publisher_count == 7 and eng.publishers_from("local") == 0
        assert eng.publishers_from("198.51.100.9") == 0
        async with eng.publish("live/a3", attacker):  # its slots came back
            pass


async def test_a_publish_without_media_gives_its_slot_back_after_the_start_timeout(
    autojump_clock: trio.testing.MockClock, observer: CountingObserver
) -> None:
    """Attack: publishers that are accepted and then send nothing (or only metadata and configs),
    holding slots until the 30 s idle timeout. Without audio or video within the publish start
    timeout (10 s) the session ends and gives its slot back; one whose first keyframe comes at
    9 s goes on. Mutant killed: only the idle timeout."""
    builder = Engine.builder().application(AppSpec("live")).idle_timeout(30).observer(observer)
    async with builder.publish_start_timeout(10).max_publishers(1).build() as eng:
        start = trio.current_time()
        with pytest.raises(PublishStartTimedOut) as info:
            async with eng.publish("live/idle") as pub:
                await pub.send(metadata())
                await pub.send(video_config())
                await trio.sleep(2)
                await pub.send(audio_config())
                await trio.sleep_forever()
        assert trio.current_time() - start == pytest.approx(10, abs=0.01)
        assert info.value.timeout == 10 and "no media within 10 s" in str(info.value)
        assert eng.publisher_count == 0
        async with eng.publish("live/real") as pub:  # the one slot is free again
            await pub.send(video_config())
            await trio.sleep(9)
            await pub.send(keyframe(0))
            await trio.sleep(11)
            await pub.send(delta(33))
            assert pub.active
    assert [e.reason for e in observer.of_type(StreamUnpublished)] == ["no-media", "closed"]  # type: ignore[attr-defined]


async def test_reconnecting_does_not_renew_the_burst_allowance(autojump_clock: trio.testing.MockClock) -> None:
    """Attack: publish sessions one after another, each sending its whole burst allowance at once
    (the review: 25 sessions of a 12 MB GOP; a fresh allowance per session made the rate limit
    moot). A new session from an address gets back the bucket that address's last session left
    until it is full again; another address, or the same one once it is refilled, starts full. Mutant
    killed: a full bucket for every session."""
    async with engine_with(AppSpec("live", max_publish_bitrate=8_000_000)) as eng:  # 4 MB of burst

        async def burst(peer: tuple[str, int], size: int = 3_000_000) -> None:
            async with eng.publish("live/s", Credentials(peer=peer)) as pub:
                await pub.send(video_config())
                await pub.send(keyframe(0, size))

        await burst(("198.51.100.1", 1))
        with pytest.raises(PublishRateLimited):  # 1 MB left, not 4
            await burst(("198.51.100.1", 2))
        await burst(("192.0.2.7", 1))  # another address starts full
        await trio.sleep(6)  # the cut frame's debt paid, the allowance full again
        await burst(("198.51.100.1", 3))
        assert len(eng.publishers.carried_buckets) == 2


def test_carried_buckets_stay_few_and_go_once_full() -> None:
    """What ``CarriedBuckets`` keeps is bounded: ``per_address`` buckets per address (the fullest
    let go first), and addresses whose buckets are full again are swept as others come."""
    from arcly_trio.kernel.ratelimit import CarriedBuckets, PublishRateLimit

    carried = CarriedBuckets(per_address=2)
    used = []
    for spent in (1_000_000, 3_000_000, 2_000_000):  # 8 Mbit/s: 4 MB of burst
        bucket = PublishRateLimit(8_000_000, 0.0)
        bucket.take(spent, 0.0)
        used.append(bucket)
        carried.ended("a", bucket, 0.0)
    assert carried.bucket("a", 8_000_000, 0.0) is used[1]  # the emptiest
    assert carried.bucket("a", 8_000_000, 0.0) is used[2]
    assert carried.bucket("a", 8_000_000, 0.0) not in used  # the fullest was let go: a full one
    for n in range(200):
        bucket = PublishRateLimit(8_000_000, float(n))
        bucket.take(100, float(n))
        carried.ended(f"10.0.{n}.1", bucket, float(n))
    assert len(carried) < 64  # those that refilled (4 s) are gone


async def test_a_relay_may_replay_a_whole_gop_cache_at_once(autojump_clock: trio.testing.MockClock) -> None:
    """A relay (a pull, a cluster or worker relay: an in-process publisher without a client
    address) starts with its origin's GOP cache, which may be more than 4 s of the limit: its
    burst allowance is one GOP cache at least; a client's is not. Mutant killed: cutting relays
    at their first GOP."""
    spec = AppSpec("live", max_publish_bitrate=8_000_000, gop_cache_bytes=12_000_000)  # 4 MB of burst
    async with engine_with(spec) as eng:
        async with eng.publish("live/relayed", Credentials(protocol="pull")) as pub:
            await pub.send(video_config())
            await pub.send(keyframe(0, 6_000_000))
            await pub.send(delta(33, 5_000_000))
        with pytest.raises(PublishRateLimited):
            async with eng.publish("live/client", Credentials(peer=("198.51.100.3", 1))) as pub:
                await pub.send(video_config())
                await pub.send(keyframe(0, 6_000_000))


# --------------------------- the kernel review's bugs (authorization in flight, grace, reaping)


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


# ------------------------------------------------------------ (merged)
async def test_set_max_publishers_applies_to_the_next_publisher() -> None:
    engine = Engine.builder().max_publishers(1).application("live").build()
    async with engine:
        release = engine.claim_publisher(Credentials())
        with pytest.raises(PublisherLimitReached):
            engine.claim_publisher(Credentials())
        engine.set_max_publishers(2)
        assert engine.max_publisher_count == 2
        engine.claim_publisher(Credentials())()
        release()
    with pytest.raises(ValueError):
        engine.set_max_publishers(-1)
