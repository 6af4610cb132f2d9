"""What the egress rests on in the kernel and the media layer.

* ``Subscription`` (a deque and one direct wake-up per batch): a whole batch is taken in one
  call, the bound holds, a reader cancelled while parked is never woken again, one reader only,
  queued frames still come after the end.
* The fan-out offers a batch whole: a subscriber that starts or resumes in the middle of a
  batch gets its configs, the keyframe and the rest of the batch in one offer (one write); the
  batch object is a :class:`FrameBatch` shared by every live subscriber.
* Ingest without copies: an RTMP message body that FLV would write again byte for byte
  becomes the frame's FLV body, the very same object (fuzzed: a preset body always equals the
  rebuilt one), and an RTMP player gets the publisher's bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from arcly_trio import AppSpec, Engine
from arcly_trio.core.frame import Frame, FrameBatch, FrameKind
from arcly_trio.kernel.fanout import EndReason
from arcly_trio.media import flv
from arcly_trio.protocols.rtmp import MediaMessage
from arcly_trio.testing import audio, audio_config, delta, keyframe, video_config
from arcly_trio.workers.rtmp import RtmpServer
from tests._rtmp import RawClient

# ------------------------------------------------------------------- Subscription


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


# ------------------------------------------------------------------ fan-out batches


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
        async with engine.attach("live/s", sinks[0]), engine.attach("live/s", sinks[1]), \
                engine.attach("live/s", sinks[2]):
            for frame in [delta(33), audio(40), delta(66)]:
                await publisher.send(frame)
            await trio.testing.wait_all_tasks_blocked()
    batches = [sink.batches[-1] for sink in sinks]
    assert type(batches[0]) is FrameBatch and batches[0] is batches[1] is batches[2]


# -------------------------------------------------------------- ingest without copies


def test_a_received_body_becomes_the_frames_flv_body() -> None:
    avc = b"\x17\x01\x00\x00\x21" + bytes(range(200))
    aac = b"\xaf\x01" + bytes(50)
    (video,) = flv.parse_video_tracks(1000, avc)
    (sound,) = flv.parse_audio_tracks(1000, aac)
    assert flv.frame_body(video) is avc and flv.frame_body(sound) is aac
    assert video.pts == 1033 and video.payload == avc[5:]
    # Bodies FLV would not write back as they are get their own (the header is normalised).
    disposable = b"\x37\x01\x00\x00\x00" + bytes(10)
    (frame,) = flv.parse_video_tracks(0, disposable)
    assert flv.frame_body(frame) is not disposable and flv.frame_body(frame)[0] == 0x27


@given(
    header=st.sampled_from([0x17, 0x27, 0x37, 0x47]),
    packet_type=st.sampled_from([0, 1]),
    cts=st.binary(min_size=3, max_size=3),
    payload=st.binary(min_size=1, max_size=64),
)
def test_a_preset_video_body_is_what_flv_would_write(header: int, packet_type: int, cts: bytes, payload: bytes) -> None:
    body = bytes((header, packet_type)) + cts + payload
    frames = flv.parse_video_tracks(5, body)
    for frame in frames:
        assert flv.frame_body(frame) == flv.tag_body(frame)  # what is sent is what FLV would write
        if flv.frame_body(frame) is body:
            assert flv.tag_body(frame) == body


@given(header=st.integers(0xA0, 0xAF), packet_type=st.sampled_from([0, 1]), payload=st.binary(min_size=1, max_size=64))
def test_a_preset_audio_body_is_what_flv_would_write(header: int, packet_type: int, payload: bytes) -> None:
    body = bytes((header, packet_type)) + payload
    for frame in flv.parse_audio_tracks(5, body):
        assert flv.frame_body(frame) == flv.tag_body(frame)
        assert (flv.frame_body(frame) is body) == (header == 0xAF)


async def test_an_rtmp_player_gets_the_publishers_message_bodies() -> None:
    server = RtmpServer("127.0.0.1", 0)
    engine = Engine.builder().application("live").protocol(server).build()
    avc_config = b"\x17\x00\x00\x00\x00\x01\x64\x00\x1f\xff\xe1\x00\x04abcd\x01\x00\x02ef"
    bodies = [b"\x17\x01\x00\x00\x42" + bytes(range(256)) * 40, b"\x27\x01\x00\x00\x21" + b"x" * 3000]
    with trio.fail_after(10):
        async with engine:
            publisher = await RawClient.open(server.port)  # type: ignore[arg-type]
            await publisher.connect("live", server.port)  # type: ignore[arg-type]
            stream_id = await publisher.create_stream()
            publisher.session.publish(stream_id, "s")
            await publisher.flush()
            await publisher.command()
            publisher.session.send_message(6, 9, stream_id, 0, avc_config)
            for i, body in enumerate(bodies):
                publisher.session.send_message(6, 9, stream_id, 40 * i, body)
            await publisher.flush()
            player = await RawClient.open(server.port)  # type: ignore[arg-type]
            await player.connect("live", server.port)  # type: ignore[arg-type]
            player.session.play(1, "s")
            await player.flush()
            got = []
            while len(got) < 3:
                event = await player.read_event(MediaMessage)
                assert isinstance(event, MediaMessage)
                got.append(event.payload)
            stream = engine.stream("live/s")
            cached = [f for f in stream.gop.replay().frames if f.kind is FrameKind.VIDEO and not f.config]
            await publisher.aclose()
            await player.aclose()
    assert got == [avc_config, *bodies]
    assert [flv.frame_body(f) for f in cached] == bodies


# ----------------------------------------------------------------- batch interval


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


def test_the_cli_and_the_config_file_pass_the_batch_interval(tmp_path: Path) -> None:
    from arcly_trio.server.build import app_specs
    from arcly_trio.server.cli import build_parser, resolve_args

    args = resolve_args(build_parser(), ["serve", "--batch-interval", "0.1", "--http-port", "-1"])
    assert app_specs(args)["live"].batch_interval == 0.1
    config = tmp_path / "arcly.toml"
    config.write_text("batch-interval = 0.05\n[apps.live]\n[apps.studio]\nbatch-interval = 0.2\n")
    specs = app_specs(resolve_args(build_parser(), ["serve", "--config", str(config)]))
    assert (specs["live"].batch_interval, specs["studio"].batch_interval) == (0.05, 0.2)
    for bad in ("-1", "nan", "inf"):
        with pytest.raises(ValueError, match="batch.interval"):
            app_specs(resolve_args(build_parser(), ["serve", "--batch-interval", bad]))
