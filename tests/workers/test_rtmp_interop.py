"""The RTMP worker against the real ffmpeg and ffprobe, over real sockets on 127.0.0.1.

Each test runs an in-process engine with :class:`RtmpServer` on port 0, drives ffmpeg/ffprobe
as subprocesses (a publisher encoding lavfi test sources to H.264+AAC at 320x240, players that
decode to ``framemd5`` so every decoded frame is one line) and checks what the players decoded
and what the kernel saw (an observer records every published frame and event). Real time is
kept short; nothing asserts wall-clock speed. A ``trio.fail_after`` bounds every test.

The helpers (engine, publisher, player, polling) are in ``tests/_serving.py`` and
``tests/_ffmpeg.py``, shared with ``tests/workers/test_rtmp_robustness.py`` and others.
"""

from __future__ import annotations

import logging
import re

import pytest
import trio

from arcly_trio.kernel.auth import TokenAuthenticator
from arcly_trio.kernel.events import (
    StreamClosed,
    StreamPublished,
    StreamUnpublished,
    SubscriberLeft,
)
from tests._ffmpeg import ffprobe_packets, player, publisher
from tests._net import HOST
from tests._serving import RecordingObserver, find_stream, records, rtmp_engine, rtmp_url, wait_publishing, wait_until

pytestmark = pytest.mark.interop


# --------------------------------------------------------------------------------- helpers


# ----------------------------------------------------------------------------------- tests


async def test_ffmpeg_publishes_and_ffmpeg_decodes_video_and_audio() -> None:
    observer = RecordingObserver()
    with trio.fail_after(30):
        async with rtmp_engine(observer=observer) as (engine, server):
            url = rtmp_url(server.port, "live/cam")
            async with publisher(url) as pub:
                stream = await wait_publishing(engine, "live/cam")
                async with player(url) as play:
                    await play.wait_frames(video=30, audio=30)
                assert pub.running, pub.stderr()
            assert play.dimensions == "320x240"
            assert set(play.media_types.values()) == {"video", "audio"}
            info = stream.info
            assert (info.video_codec, info.audio_codec) == ("h264", "aac")
            assert (info.width, info.height) == (320, 240)
            assert observer.counts["on_publish_started"] == 1
            assert observer.counts["on_subscriber_joined"] == 1


async def test_late_player_starts_on_the_cached_keyframe_of_the_current_gop() -> None:
    """A player joining 1.2+ s into a 4 s GOP gets that GOP's keyframe first: a frame published
    before it joined, so it never waited for the next keyframe."""
    observer = RecordingObserver()
    with trio.fail_after(30):
        async with rtmp_engine(observer=observer) as (engine, server):
            url = rtmp_url(server.port, "live/cam")
            async with publisher(url, gop=120):
                await wait_publishing(engine, "live/cam")

                def mid_gop() -> bool:
                    newest, keyframe = observer.newest_video, observer.newest_keyframe
                    return newest is not None and keyframe is not None and newest - keyframe >= 1200

                await wait_until(mid_gop)
                packets = await ffprobe_packets(url, 3)

    assert len(observer.joins) == 1
    newest_at_join, keyframe_at_join = observer.joins[0]
    assert newest_at_join is not None and keyframe_at_join is not None
    # Joined in the middle of a GOP: the next keyframe was still >= 1 s of stream away.
    assert newest_at_join - keyframe_at_join >= 1000
    first_dts, first_flags = packets[0]
    assert "K" in first_flags, packets
    # The first packet is the cached keyframe, published before the player joined.
    assert first_dts == keyframe_at_join
    assert first_dts < newest_at_join
    # And the packets after it follow on from it (the GOP replay is in order).
    assert [dts for dts, _ in packets] == sorted(dts for dts, _ in packets)


@pytest.mark.parametrize("how", ["finishes", "killed"])
async def test_two_players_end_when_the_publisher_leaves(how: str) -> None:
    observer = RecordingObserver()
    with trio.fail_after(30):
        async with rtmp_engine(observer=observer) as (engine, server):
            url = rtmp_url(server.port, "live/cam")
            seconds = 4 if how == "finishes" else None
            async with publisher(url, seconds=seconds) as pub:
                await wait_publishing(engine, "live/cam")
                async with player(url) as one, player(url) as two:
                    await one.wait_frames(video=10, audio=10)
                    await two.wait_frames(video=10, audio=10)
                    if how == "killed":
                        pub.process.kill()
                    # Both players are told the stream is over and exit by themselves.
                    assert await one.wait() == 0, one.stderr()
                    assert await two.wait() == 0, two.stderr()
                # ffmpeg unpublishes before it exits: wait for its exit rather than race it.
                code = await pub.wait()
                if how == "finishes":
                    assert code == 0, pub.stderr()
            await wait_until(lambda: not engine.streams())
            assert engine.publisher_count == 0
            assert find_stream(engine, "live/cam") is None

    published = observer.of_type(StreamPublished)
    unpublished = observer.of_type(StreamUnpublished)
    left = observer.of_type(SubscriberLeft)
    closed = observer.of_type(StreamClosed)
    assert len(published) == 1 and published[0].protocol == "rtmp"  # type: ignore[attr-defined]
    assert len(unpublished) == 1
    # A clean exit says goodbye; a killed ffmpeg's socket may end in a reset instead.
    expected = {"closed"} if how == "finishes" else {"closed", "failed"}
    assert unpublished[0].reason in expected  # type: ignore[attr-defined]
    assert len(left) == 2
    assert {event.reason for event in left} == {"stream-ended"}  # type: ignore[attr-defined]
    assert all(event.dropped == 0 for event in left)  # type: ignore[attr-defined]
    assert [event.reason for event in closed] == ["stream-ended"]  # type: ignore[attr-defined]
    assert one.video > 0 and one.audio > 0 and two.video > 0 and two.audio > 0


async def test_second_publisher_on_the_same_key_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="arcly_trio")
    observer = RecordingObserver()
    with trio.fail_after(30):
        async with rtmp_engine(observer=observer) as (engine, server):
            url = rtmp_url(server.port, "live/cam")
            async with publisher(url) as first:
                stream = await wait_publishing(engine, "live/cam")
                session = stream.session
                async with player(url) as play:
                    await play.wait_frames(video=10, audio=10)
                    async with publisher(url) as second:
                        code = await second.wait()
                    assert code != 0
                    refused = records(caplog, "refused", "live/cam", "already has a publisher")
                    assert len(refused) == 1
                    assert refused[0].levelno == logging.INFO  # a refusal of what was asked (server/logs.py)
                    assert f"rtmp {HOST}:" in refused[0].getMessage()
                    # The first publisher and the player go on as if nothing happened.
                    await play.keeps_decoding()
                    assert first.running, first.stderr()
                    assert stream.session is session and find_stream(engine, "live/cam") is stream
    assert observer.counts["on_publish_started"] == 1
    assert observer.counts["on_publish_ended"] == 1  # the first one's, when the test ended
    assert observer.counts["on_subscriber_left"] == 1


async def test_publish_token_refuses_wrong_and_missing_tokens(caplog: pytest.LogCaptureFixture) -> None:
    """Each refusal is one line of the RTMP worker at debug level, saying what was refused and
    why once ("publish of live/cam refused: publish of live/cam refused: ..." before); the
    warning is the authorization throttle's, once per burst (its first refusal, then a summary
    with the last reason)."""
    caplog.set_level(logging.DEBUG, logger="arcly_trio")
    observer = RecordingObserver()
    auth = TokenAuthenticator(publish_token="s3cret")
    with trio.fail_after(30):
        async with rtmp_engine(observer=observer, authenticator=auth) as (engine, server):
            base = rtmp_url(server.port, "live/cam")
            for query, reason in [("?token=guess", "wrong token"), ("", "no token")]:
                async with publisher(base + query) as refused:
                    assert await refused.wait() != 0
                lines = records(caplog, "publish of live/cam refused", reason)
                assert len(lines) == 1, [r.getMessage() for r in caplog.records]
                assert f"rtmp {HOST}:" in lines[0].getMessage() and lines[0].levelno == logging.DEBUG
                assert lines[0].getMessage().count("refused") == 1
                assert find_stream(engine, "live/cam") is None
            assert observer.counts["on_publish_started"] == 0

            async with publisher(base + "?token=s3cret") as accepted:
                await wait_publishing(engine, "live/cam")
                # Players need no token (only a publish token is set).
                async with player(base) as play:
                    await play.wait_frames(video=10, audio=10)
                assert accepted.running, accepted.stderr()
            assert observer.counts["on_publish_started"] == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2 and warnings[0] == (
        f"{HOST} refused: publish of live/cam over rtmp: wrong token (further refusals from this address are delayed)"
    )
    assert re.fullmatch(
        rf"{HOST}: 1 more publish refusals in \d+ s: 1 x publish of live/cam over rtmp: no token", warnings[1]
    ), warnings


async def test_graceful_shutdown_tells_the_player_and_the_publisher(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="arcly_trio")
    observer = RecordingObserver()
    with trio.fail_after(30):
        async with rtmp_engine(observer=observer) as (engine, server):
            url = rtmp_url(server.port, "live/cam")
            async with publisher(url) as pub:
                await wait_publishing(engine, "live/cam")
                async with player(url) as play:
                    await play.wait_frames(video=10, audio=10)
                    with trio.fail_after(5):
                        await engine.shutdown(grace=4)
                        # Both clients were told and closed by the server: they exit by themselves.
                        assert await play.wait() == 0, play.stderr()
                        await pub.wait()
                    assert not engine.running
                    assert server.connections == 0 and server.open_connections == 0
    assert [e.reason for e in observer.of_type(SubscriberLeft)] == ["shutdown"]  # type: ignore[attr-defined]
    assert [e.reason for e in observer.of_type(StreamUnpublished)] == ["shutdown"]  # type: ignore[attr-defined]
    assert len(records(caplog, "stopped publishing live/cam (the server is shutting down)")) == 1
