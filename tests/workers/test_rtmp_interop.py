"""The RTMP worker against the real ffmpeg and ffprobe, over real sockets on 127.0.0.1.

Each test runs an in-process engine with :class:`RtmpServer` on port 0, drives ffmpeg/ffprobe
as subprocesses (a publisher encoding lavfi test sources to H.264+AAC at 320x240, players that
decode to ``framemd5`` so every decoded frame is one line) and checks what the players decoded
and what the kernel saw (an observer records every published frame and event). Real time is
kept short; nothing asserts wall-clock speed. A ``trio.fail_after`` bounds every test.

The helpers here (engine, publisher, player, polling) are shared with
``test_rtmp_robustness.py``.
"""

from __future__ import annotations

import logging
import re
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import IO, Any

import pytest
import trio

from arcly_trio.kernel.auth import Authenticator, TokenAuthenticator
from arcly_trio.kernel.engine import Engine
from arcly_trio.core.errors import StreamNotFound
from arcly_trio.kernel.events import (
    StreamClosed,
    StreamPublished,
    StreamUnpublished,
    SubscriberJoined,
    SubscriberLeft,
)
from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.core.keys import StreamKey
from arcly_trio.kernel.stream import Stream
from arcly_trio.workers.rtmp import RtmpServer
from arcly_trio.testing import CountingObserver
from tests._tools import require_tool

pytestmark = pytest.mark.interop

HOST = "127.0.0.1"


# --------------------------------------------------------------------------------- helpers


class RecordingObserver(CountingObserver):
    """Counts events like :class:`CountingObserver`, and follows the video of every stream.

    ``newest_video`` / ``newest_keyframe``: dts of the latest published video frame and the latest
    keyframe. ``joins``: for each subscriber join, ``(newest_video, newest_keyframe)`` at that
    instant (the hooks run synchronously in the kernel, so this is exactly what the stream had
    published when the subscriber was attached).
    """

    def __init__(self) -> None:
        super().__init__()
        self.newest_video: int | None = None
        self.newest_keyframe: int | None = None
        self.keyframes: list[int] = []
        self.joins: list[tuple[int | None, int | None]] = []

    def on_frame(self, key: StreamKey, frame: Frame) -> None:
        super().on_frame(key, frame)
        if frame.kind is FrameKind.VIDEO and not frame.config:
            self.newest_video = frame.dts
            if frame.keyframe:
                self.newest_keyframe = frame.dts
                self.keyframes.append(frame.dts)

    def on_subscriber_joined(self, event: SubscriberJoined) -> None:  # type: ignore[override]
        self._record(event)
        self.joins.append((self.newest_video, self.newest_keyframe))


@asynccontextmanager
async def rtmp_engine(
    *,
    observer: CountingObserver | None = None,
    authenticator: Authenticator | None = None,
    **server_options: Any,
) -> AsyncIterator[tuple[Engine, RtmpServer]]:
    """A running engine with the application ``live`` and an RTMP server on 127.0.0.1:0."""
    server = RtmpServer(HOST, 0, **server_options)
    builder = Engine.builder().application("live").protocol(server)
    if observer is not None:
        builder.observer(observer)
    if authenticator is not None:
        builder.authenticator(authenticator)
    async with builder.build() as engine:
        assert server.port and engine.worker_info[0] == server.port
        yield engine, server


def rtmp_url(port: int, path: str) -> str:
    return f"rtmp://{HOST}:{port}/{path}"


def find_stream(engine: Engine, key: str) -> Stream | None:
    try:
        return engine.stream(StreamKey.parse(key))
    except StreamNotFound:
        return None


async def wait_until(predicate: Callable[[], bool], poll: float = 0.02) -> None:
    """Poll ``predicate`` until it holds (bounded by the caller's ``fail_after``)."""
    while not predicate():
        await trio.sleep(poll)


async def wait_publishing(engine: Engine, key: str, video_frames: int = 1) -> Stream:
    """Wait until ``key`` is published and has carried ``video_frames`` video frames."""

    def ready() -> bool:
        stream = find_stream(engine, key)
        return bool(stream and stream.publishing and stream.stats().video_frames_total >= video_frames)

    await wait_until(ready)
    stream = find_stream(engine, key)
    assert stream is not None
    return stream


def publish_args(url: str, *, gop: int = 30, seconds: float | None = None) -> list[str]:
    """ffmpeg publishing a 320x240 30 fps H.264 test pattern and a 440 Hz AAC tone in real time."""
    args = [
        require_tool("ffmpeg"), "-hide_banner", "-nostdin", "-loglevel", "error",
        "-re", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=30",
        "-re", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
    ]
    if seconds is not None:
        args += ["-t", f"{seconds:g}"]
    args += [
        "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-pix_fmt", "yuv420p",
        "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0",
        "-c:a", "aac", "-b:a", "64k",
        "-f", "flv", url,
    ]
    return args


def play_args(url: str) -> list[str]:
    """ffmpeg playing ``url`` and writing one line per *decoded* frame (framemd5)."""
    return [
        require_tool("ffmpeg"), "-hide_banner", "-nostdin", "-loglevel", "error",
        "-i", url, "-f", "framemd5", "-",
    ]


class Tool:
    """A running ffmpeg/ffprobe: its process, its stdout lines as they come, its stderr."""

    def __init__(self, process: trio.Process, stderr: IO[bytes]) -> None:
        self.process = process
        self.lines: list[str] = []
        self._stderr = stderr

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    @property
    def running(self) -> bool:
        return self.process.returncode is None

    async def wait(self) -> int:
        return await self.process.wait()

    def stderr(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def on_line(self, line: str) -> None:
        self.lines.append(line)

    async def _read(self) -> None:
        assert self.process.stdout is not None
        pending = b""
        async for chunk in self.process.stdout:
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for line in complete:
                self.on_line(line.decode(errors="replace"))
        if pending:
            self.on_line(pending.decode(errors="replace"))


class Player(Tool):
    """An ffmpeg player writing framemd5: counts decoded video and audio frames."""

    def __init__(self, process: trio.Process, stderr: IO[bytes]) -> None:
        super().__init__(process, stderr)
        self.media_types: dict[str, str] = {}
        self.dimensions: str | None = None
        self.video = 0
        self.audio = 0

    def on_line(self, line: str) -> None:
        if line.startswith("#media_type"):
            index, _, kind = line[len("#media_type"):].partition(":")
            self.media_types[index.strip()] = kind.strip()
        elif line.startswith("#dimensions"):
            self.dimensions = line.partition(":")[2].strip()
        elif line and not line.startswith("#"):
            kind = self.media_types.get(line.partition(",")[0].strip())
            if kind == "video":
                self.video += 1
            elif kind == "audio":
                self.audio += 1

    async def wait_frames(self, video: int, audio: int) -> None:
        """Wait until it has decoded at least this many video and audio frames."""
        while self.video < video or self.audio < audio:
            if not self.running:
                raise AssertionError(
                    f"player exited ({self.returncode}) after {self.video} video and {self.audio} "
                    f"audio frames: {self.stderr()}"
                )
            await trio.sleep(0.02)

    async def keeps_decoding(self, frames: int = 15) -> None:
        """Prove the player is alive: ``frames`` more video and audio frames decoded from now."""
        await self.wait_frames(self.video + frames, self.audio + frames)


@asynccontextmanager
async def run_tool(args: Sequence[str], kind: type[Tool] = Tool) -> AsyncIterator[Any]:
    """Start ``args``; on exit stop it (SIGTERM, then SIGKILL after 5 s) and reap it."""
    with tempfile.TemporaryFile() as stderr:
        process = await trio.lowlevel.open_process(
            list(args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr
        )
        tool = kind(process, stderr)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(tool._read)
                try:
                    yield tool
                finally:
                    with trio.CancelScope(shield=True):
                        if process.returncode is None:
                            process.terminate()
                            with trio.move_on_after(5):
                                await process.wait()
                        if process.returncode is None:
                            process.kill()
                            await process.wait()
        finally:
            if process.returncode is None:  # pragma: no cover - cancelled before the finally ran
                process.kill()


def publisher(url: str, **options: Any) -> Any:
    return run_tool(publish_args(url, **options))


def player(url: str) -> Any:
    return run_tool(play_args(url), Player)


async def ffprobe_packets(url: str, count: int) -> list[tuple[int, str]]:
    """``(dts, flags)`` of the first ``count`` video packets ffprobe reads from ``url``."""
    args = [
        require_tool("ffprobe"), "-v", "error", "-select_streams", "v:0",
        "-show_entries", "packet=dts,flags", "-of", "csv=p=0",
        "-read_intervals", f"%+#{count}", url,
    ]
    result = await trio.run_process(args, capture_stdout=True, capture_stderr=True, check=False)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    packets = []
    for line in result.stdout.decode().split():
        dts, _, flags = line.partition(",")
        packets.append((int(dts), flags))
    return packets


def records(caplog: pytest.LogCaptureFixture, *needles: str) -> list[logging.LogRecord]:
    """Captured records of the RTMP worker whose message contains every one of ``needles``."""
    return [
        r for r in caplog.records
        if r.name == "arcly_trio.rtmp" and all(n in r.getMessage() for n in needles)
    ]


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
    assert len(warnings) == 2 and warnings[0] == (f"{HOST} refused: publish of live/cam over rtmp: wrong token "
                                                  "(further refusals from this address are delayed)")
    assert re.fullmatch(rf"{HOST}: 1 more publish refusals in \d+ s: 1 x publish of live/cam over rtmp: no token",
                        warnings[1]), warnings


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
