"""Stateful property test of the kernel: overlapping publish, unpublish, crash, cancel (also
inside authorization and set-up), takeover, subscribe, unsubscribe, slow subscribers, multitrack
and mid-GOP sessions, and time passing, across apps and keys — with exact drop accounting and
decodability checked (see :mod:`arcly_trio.testing.races`)."""

from __future__ import annotations

import pytest
import trio
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from arcly_trio import AppSpec, Credentials, Engine, Takeover, TokenAuthenticator
from arcly_trio.testing import CountingObserver
from arcly_trio.testing.races import RaceSetup, run_races


class SlowTokenAuth(TokenAuthenticator):
    """Token auth with a checkpoint inside, so cancellation can land during authorization."""

    async def authorize_publish(self, key, credentials):  # type: ignore[no-untyped-def]
        await trio.sleep(0)
        await super().authorize_publish(key, credentials)


def race_setup(observer: CountingObserver) -> RaceSetup:
    engine = (
        Engine.builder()
        .max_publishers(3)
        .idle_timeout(10)
        .application(AppSpec("rej", gop_cache_frames=6))
        .application(AppSpec("rep", takeover=Takeover.REPLACE, reconnect_grace=5, lag_budget=6))
        .application(AppSpec("big", gop_cache_frames=0, subscriber_queue=2))
        .authenticator(SlowTokenAuth(publish_token="good"))
        .observer(observer)
        .build()
    )
    return RaceSetup(engine, publish=Credentials(token="good"), refused_publish=Credentials(token="bad"))


@pytest.mark.timeout(900)
@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_overlapping_races_keep_the_engine_consistent(data: st.DataObject) -> None:
    observer = CountingObserver()
    races = run_races(lambda: race_setup(observer), data, max_steps=40)
    for hook, count in observer.counts.items():
        if count:
            event(hook)
    event(f"settles: {min(races.settles, 10)}+")
    # Every publish that started also ended, exactly once; every subscriber that joined left.
    assert observer.counts["on_publish_started"] == observer.counts["on_publish_ended"]
    assert observer.counts["on_subscriber_joined"] == observer.counts["on_subscriber_left"]


def real_media_setup(services: list) -> RaceSetup:  # type: ignore[type-arg]
    """Real H.264+AAC frames, with HLS and recording services that package them for real."""
    from arcly_trio.services import FlvRecorder, HlsService
    from arcly_trio.storage import MemoryStorage

    hls, recorder = HlsService(target_duration=1), FlvRecorder(MemoryStorage())
    services[:] = [hls, recorder]
    engine = (
        Engine.builder()
        .max_publishers(3)
        .idle_timeout(10)
        .application(AppSpec("live", hls=True, record=True, gop_cache_frames=90))
        .application(AppSpec("rep", takeover=Takeover.REPLACE, reconnect_grace=5, hls=True))
        .service(hls)
        .service(recorder)
        .build()
    )
    return RaceSetup(engine, real_media=True)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_races_with_real_media_and_services(data: st.DataObject) -> None:
    services: list = []  # type: ignore[type-arg]
    run_races(lambda: real_media_setup(services), data, max_steps=30)
    hls, recorder = services
    assert hls.bad_frames == 0 and hls.storage_errors == 0  # real media, packaged for real


def test_the_race_recorder_keeps_streams_apart_when_a_freed_one_s_id_is_reused() -> None:
    """The recorder filed frames under ``id(stream)``: once an ended stream was freed, the next
    stream could get its address, and the checker took the old stream's frames for the new
    one's (a subscriber that joined the new stream at its first frame was "missing" the old
    one's; the race test failed now and then with a count off by one). Each stream and
    session now gets a serial number no other one gets."""
    from arcly_trio.core.frame import Frame, FrameKind
    from arcly_trio.core.keys import StreamKey
    from arcly_trio.testing.races import _Recorder

    class Stream:  # what the recorder reads of a stream
        pumping: object = None

    class Engine:
        def __init__(self) -> None:
            self.current = Stream()

        def stream(self, key: StreamKey) -> Stream:
            return self.current

    recorder = _Recorder()
    engine = recorder.engine = Engine()  # type: ignore[assignment]
    key = StreamKey("live", "s")
    frame = Frame(FrameKind.AUDIO, "aac", 0, 0, b"a")
    recorder.on_frame(key, frame)
    first_id, first_serial = id(engine.current), recorder.serial(engine.current)
    for _ in range(1000):  # a new stream at the freed one's address (CPython reuses it)
        engine.current = Stream()
        if id(engine.current) == first_id:
            break
    else:
        pytest.skip("the allocator did not reuse the address")
    second = Frame(FrameKind.AUDIO, "aac", 1, 1, b"b")
    recorder.on_frame(key, second)
    assert recorder.serial(engine.current) != first_serial
    assert recorder.delivered[recorder.serial(engine.current)] == [second]
