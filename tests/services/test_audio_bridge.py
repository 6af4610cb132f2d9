"""The audio bridge: Opus for the callers of an AAC stream, one transcoder per stream shared by
all, config first to each caller, running only while someone holds it, across a publisher's
restart; a failing consumer drops out alone."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

import pytest
import trio

from arcly_trio import AppSpec, Engine, Frame, FrameKind, StreamKey
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
            (status,) = bridge.stream_status(KEY)["audio_bridge"]
            assert status["direction"] == "aac->opus" and status["callers"] == 1
            assert status["frames_in"] == len(AAC) and status["frames_out"] == len(got)
            assert status["cpu_seconds"] > 0 and status["skipped"] == 0
            assert bridge.stats()[KEY][0].frames_out == len(got)
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
        assert bridge.stats()[KEY][0].sessions == 1
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
        assert bridge.stream_status(KEY)["audio_bridge"][0]["callers"] == 1
        release_bad()
        assert bridge.running(KEY)
        release()
        assert not bridge.running(KEY)


def test_want_opus_needs_the_engine_running_it() -> None:
    with pytest.raises(RuntimeError):
        AudioBridge().want_opus(KEY, lambda frame: None)


OPUS = encoded_sine("opus", 48000, 2, 1.0, 0)


class LegacySink:
    """A kernel sink that takes bridged frames (as an FLV viewer's does) and keeps them all."""

    bridged_audio = True

    def __init__(self) -> None:
        self.frames: list[Frame] = []

    def start_session(self, start: object) -> None:
        pass

    def replay(self, frames: list[Frame]) -> None:
        self.frames += frames

    def offer(self, frames: Sequence[Frame], start: int) -> int:
        self.frames += frames[start:]
        return len(frames)

    def close(self, reason: object) -> None:
        pass


async def test_aac_for_legacy_sinks_of_an_opus_stream_only_while_they_are_there() -> None:
    bridge = AudioBridge(poll_interval=0.05, linger=0.1)
    async with Engine.builder().application(AppSpec("live")).observer(bridge).build() as engine:
        async with engine.publish(KEY) as publisher:
            await publisher.send(OPUS[0])
            await publisher.send(OPUS[1])
            await until(lambda: engine.has_stream(KEY) and engine.stream(KEY).info.audio_codec == "opus")
            async with engine.subscribe(KEY) as legacy, engine.subscribe(KEY) as modern:
                legacy.bridged_audio = True
                await until(lambda: bridge.running(KEY, "opus->aac"))
                for frame in OPUS[2:]:
                    await publisher.send(frame)
                legacy_got: list[Frame] = []
                modern_got: list[Frame] = []
                with trio.fail_after(10):
                    while sum(1 for f in legacy_got if f.bridged and not f.config) < 40:
                        legacy_got += await legacy.next_batch()
                    while len(modern_got) < len(OPUS) - 2:
                        modern_got += await modern.next_batch()
                bridged = [f for f in legacy_got if f.bridged]
                assert bridged[0].config and bridged[0].codec == "aac"
                assert all(f.codec == "aac" and f.track == 0 for f in bridged)
                assert decode(bridged)[2] > 0.1  # the AAC has the sine's energy
                # A/V sync: the AAC keeps the Opus frames' timeline (it starts at the first Opus
                # frame the bridge saw, then counts samples).
                assert bridged[1].pts in {f.pts for f in OPUS}
                assert [f.pts for f in bridged[1:]] == [
                    bridged[1].pts + round(n * 64 / 3) for n in range(len(bridged) - 1)
                ]
                assert not any(f.bridged for f in modern_got)  # other sinks never see it
                assert [f for f in legacy_got if not f.bridged and f.codec == "opus"]  # originals unchanged
                (status,) = bridge.stream_status(KEY)["audio_bridge"]
                assert status["direction"] == "opus->aac" and status["frames_out"] >= len(bridged)
                # A legacy viewer that joins now gets the bridged AAC config in its replay.
                late = LegacySink()
                async with engine.attach(KEY, late):
                    assert any(f.bridged and f.config for f in late.frames)
                async with engine.subscribe(KEY) as other:
                    assert not any(f.bridged for f in await other.next_batch())
            await until(lambda: not bridge.running(KEY, "opus->aac"))  # the legacy sinks left
            assert engine.stream(KEY).info.audio_codec == "opus"  # the probe never saw the AAC


async def test_an_aac_stream_needs_no_aac_bridge() -> None:
    bridge = AudioBridge(poll_interval=0.01)
    async with Engine.builder().application(AppSpec("live")).observer(bridge).build() as engine:
        async with engine.publish(KEY) as publisher:
            for frame in AAC[:10]:
                await publisher.send(frame)
            async with engine.subscribe(KEY) as legacy:
                legacy.bridged_audio = True
                await trio.sleep(0.1)
                assert not bridge.running(KEY, "opus->aac") and bridge.stream_status(KEY) == {}


async def test_flv_viewers_get_aac_rtmp_players_that_announce_opus_keep_it() -> None:
    from arcly_trio.clients.flv import open_flv_player
    from arcly_trio.clients.rtmp import open_rtmp_player
    from arcly_trio.workers.http import HttpServer
    from arcly_trio.workers.rtmp import RtmpServer

    rtmp, http = RtmpServer("127.0.0.1", 0), HttpServer("127.0.0.1", 0)
    bridge = AudioBridge(poll_interval=0.05)
    builder = Engine.builder().application(AppSpec("live")).observer(bridge).protocol(rtmp).protocol(http)
    async with builder.build() as engine, trio.open_nursery() as nursery:

        async def publish_looping() -> None:
            async with engine.publish(KEY) as publisher:
                await publisher.send(OPUS[0])
                offset = 0
                while True:
                    for frame in OPUS[1:]:
                        await publisher.send(frame.shifted(offset))
                        await trio.sleep(0.005)
                    offset += 1000

        nursery.start_soon(publish_looping)
        await until(lambda: engine.has_stream(KEY) and engine.stream(KEY).info.audio_codec == "opus")
        with trio.fail_after(10):
            async with open_flv_player(f"http://127.0.0.1:{http.port}/live/demo.flv") as flv_player:
                flv_got: list[Frame] = []
                async for frame in flv_player:
                    flv_got.append(frame)
                    if sum(1 for f in flv_got if f.codec == "aac" and not f.config) >= 20:
                        break
            assert not any(f.codec == "opus" for f in flv_got)  # legacy: the AAC only
            assert any(f.codec == "aac" and f.config for f in flv_got)
            async with open_rtmp_player(f"rtmp://127.0.0.1:{rtmp.port}/live/demo") as rtmp_player:
                rtmp_got: list[Frame] = []
                async for frame in rtmp_player:
                    rtmp_got.append(frame)
                    if len(rtmp_got) >= 30:
                        break
            assert all(f.codec == "opus" for f in rtmp_got if f.kind is FrameKind.AUDIO)  # announced Opus
        nursery.cancel_scope.cancel()


def test_connect_announces_a_fourcc() -> None:
    from arcly_trio.protocols.rtmp.events import ConnectRequest

    def connect(command: dict[str, object]) -> ConnectRequest:
        return ConnectRequest(1.0, "live", "", {}, command)

    assert connect({"fourCcList": ["avc1", "Opus"]}).announces("Opus")
    assert connect({"fourCcList": ["*"]}).announces("Opus")
    assert not connect({"fourCcList": ["avc1", "mp4a"]}).announces("Opus")
    assert not connect({"fourCcList": "Opus"}).announces("Opus")
    assert not connect({"fourCcList": [1, None, {"Opus": 1}]}).announces("Opus")
    assert not connect({}).announces("Opus")


class GatedSink(LegacySink):
    """A sink that refuses everything while ``full`` (so its subscriber lags)."""

    def __init__(self, legacy: bool) -> None:
        super().__init__()
        self.bridged_audio = legacy
        self.full = False

    def offer(self, frames: Sequence[Frame], start: int) -> int:
        return start if self.full else super().offer(frames, start)


def test_the_fanout_gives_bridged_frames_to_legacy_sinks_only_live_on_resume_and_on_join() -> None:
    from arcly_trio.core.keys import Credentials
    from arcly_trio.kernel.fanout import Fanout, Subscriber
    from arcly_trio.kernel.gop import GopCache

    def video(pts: int, key: bool = False, config: bool = False) -> Frame:
        return Frame(FrameKind.VIDEO, "h264", pts, pts, b"v", keyframe=key or config, config=config)

    def audio(pts: int, codec: str, config: bool = False, bridged: bool = False) -> Frame:
        return Frame(FrameKind.AUDIO, codec, pts, pts, codec.encode(), config=config, bridged=bridged)

    fanout = Fanout(KEY, GopCache(1000, 0), None, lambda event: None, lambda: 0.0)
    seq = 1

    def deliver(frames: list[Frame], bridged: bool = False) -> None:
        nonlocal seq
        fanout.deliver(frames, seq, bridged=bridged)
        seq += len(frames)

    def join(sink: GatedSink) -> None:
        fanout.add(Subscriber(seq, KEY, Credentials(), "test", sink), seq)

    legacy, modern = GatedSink(True), GatedSink(False)
    join(legacy)
    join(modern)
    deliver([video(0, config=True), audio(0, "opus", config=True), video(0, key=True), audio(0, "opus")])
    deliver([audio(0, "aac", config=True, bridged=True), audio(0, "aac", bridged=True)], bridged=True)
    assert [f.bridged for f in legacy.frames] == [False] * 4 + [True, True]
    assert not any(f.bridged for f in modern.frames)
    # Both lag; a new bridged config comes meanwhile; on the next keyframe only the legacy sink
    # is given it with the configs it missed.
    legacy.full = modern.full = True
    deliver([video(33), audio(20, "opus")])
    deliver([audio(20, "aac", config=True, bridged=True)], bridged=True)
    legacy.full = modern.full = False
    before_legacy, before_modern = len(legacy.frames), len(modern.frames)
    deliver([video(66), video(1000, key=True)])
    assert any(f.bridged and f.config for f in legacy.frames[before_legacy:])
    assert not any(f.bridged for f in modern.frames[before_modern:])
    # Joiners: the replay has the bridged config for a legacy sink only.
    late_legacy, late_modern = GatedSink(True), GatedSink(False)
    join(late_legacy)
    join(late_modern)
    assert any(f.bridged and f.config for f in late_legacy.frames)
    assert late_modern.frames and not any(f.bridged for f in late_modern.frames)
