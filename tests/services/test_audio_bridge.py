"""The audio bridge: Opus for the callers of an AAC stream, one transcoder per stream shared by
all, config first to each caller, running only while someone holds it, across a publisher's
restart; a failing consumer drops out alone."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
import trio

from arcly_trio import AppSpec, Engine, Frame, StreamKey
from arcly_trio.media.codecs.opus import parse_opus_head
from arcly_trio.services.audio_bridge import AudioBridge
from tests.media.test_transcode import decode, encoded_sine

KEY = StreamKey("live", "demo")
AAC = encoded_sine("aac", 44100, 2, 1.0, 0)


@asynccontextmanager
async def bridged() -> AsyncIterator[tuple[Engine, AudioBridge]]:
    bridge = AudioBridge(poll_interval=0.05)
    async with Engine.builder().application(AppSpec("live")).observer(bridge).build() as engine:
        found = next(p for p in engine.plugins if isinstance(p, AudioBridge))
        assert found is bridge
        yield engine, bridge


async def publish(engine: Engine, frames: list[Frame], offset: int = 0) -> None:
    async with engine.publish(KEY) as publisher:
        for frame in frames:
            await publisher.send(frame.shifted(offset) if offset else frame)
        await trio.sleep(0.05)


async def until(condition: Callable[[], bool]) -> None:
    with trio.fail_after(10):
        while not condition():
            await trio.sleep(0.01)


def media(frames: list[Frame]) -> list[Frame]:
    return [f for f in frames if not f.config]


async def test_opus_for_an_aac_stream_config_first_then_released() -> None:
    async with bridged() as (engine, bridge):
        got: list[Frame] = []
        release = bridge.want_opus(KEY, got.append)  # before the stream exists
        assert bridge.running(KEY)
        async with engine.publish(KEY) as publisher:
            for frame in AAC:
                await publisher.send(frame)
            await until(lambda: len(media(got)) >= 45)
            assert got[0].config and got[0].codec == "opus" and parse_opus_head(got[0].payload).channels == 2
            assert all(f.codec == "opus" for f in got)
            rate, _, rms, _ = decode(got)
            assert rate == 48000 and rms > 0.1
            status = bridge.stream_status(KEY)["audio_bridge"]
            assert status["direction"] == "aac->opus" and status["callers"] == 1
            assert status["frames_in"] == len(AAC) and status["frames_out"] == len(got)
            assert status["cpu_seconds"] > 0 and status["skipped"] == 0
            assert bridge.stats()[KEY].frames_out == len(got)
            stream = engine.stream(KEY)
            assert any(s.protocol == "audio-bridge" for s in stream.subscribers)
            release()
            release()  # idempotent
            assert not bridge.running(KEY) and bridge.stream_status(KEY) == {}
            await until(lambda: not any(s.protocol == "audio-bridge" for s in stream.subscribers))


async def test_one_transcoder_shared_a_late_caller_gets_the_config_first() -> None:
    async with bridged() as (engine, bridge):
        first: list[Frame] = []
        second: list[Frame] = []
        release_first = bridge.want_opus(KEY, first.append)
        async with engine.publish(KEY) as publisher:
            for frame in AAC[:20]:
                await publisher.send(frame)
            await until(lambda: len(first) > 5)
            release_second = bridge.want_opus(KEY, second.append)
            for frame in AAC[20:]:
                await publisher.send(frame)
            await until(lambda: len(second) > 5)
        assert second[0] is first[0]  # the same OpusHead, then the frames from where it joined
        assert second[1:] == first[len(first) - len(second) + 1 :]
        assert bridge.stats()[KEY].sessions == 1
        release_first()
        assert bridge.running(KEY)
        release_second()
        assert not bridge.running(KEY)


async def test_the_bridge_follows_a_stream_that_ends_and_comes_back() -> None:
    async with bridged() as (engine, bridge):
        got: list[Frame] = []
        release = bridge.want_opus(KEY, got.append)
        await publish(engine, AAC)
        await until(lambda: len(media(got)) >= 45)
        if engine.has_stream(KEY):
            engine.stream(KEY).shutdown()
        await until(lambda: not engine.has_stream(KEY))
        before = len(got)
        await publish(engine, AAC, offset=5000)
        await until(lambda: len(media(got[before:])) >= 45)
        assert got[before].config  # a new transcoder: its config first
        assert media(got[before:])[0].pts == AAC[1].pts + 5000
        release()


async def test_a_failing_consumer_drops_out_alone() -> None:
    async with bridged() as (engine, bridge):
        good: list[Frame] = []

        def bad(frame: Frame) -> None:
            raise RuntimeError("boom")

        release_bad = bridge.want_opus(KEY, bad)
        release = bridge.want_opus(KEY, good.append)
        await publish(engine, AAC)
        await until(lambda: len(media(good)) >= 45)
        assert bridge.stream_status(KEY)["audio_bridge"]["callers"] == 1
        release_bad()
        assert bridge.running(KEY)
        release()
        assert not bridge.running(KEY)


def test_want_opus_needs_the_engine_running_it() -> None:
    with pytest.raises(RuntimeError):
        AudioBridge().want_opus(KEY, lambda frame: None)
