"""HTTP egress and recording against the real ffmpeg and ffprobe.

ffmpeg publishes the bundled demo clip over RTMP (faster than real time with ``-readrate``
where the test only needs media, in real time where it measures durations); ffprobe and ffmpeg
read it back as HTTP-FLV and HLS; the HLS playlist is parsed with the ``m3u8`` package and every
listed segment is decoded; recordings survive ``kill -9`` of the publisher and a graceful
server shutdown (what ``SIGTERM`` triggers in ``arcly-trio serve``). A ``trio.fail_after``
bounds every test.
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import m3u8
import pytest
import trio

import arcly_trio.server
from arcly_trio import AppSpec, Engine, Frame, FrameKind, StreamKey, StreamNotFound
from arcly_trio.clients.flv import open_flv_player
from arcly_trio.media import flv
from arcly_trio.services import FlvRecorder, HlsService, RecordingStopped
from arcly_trio.testing import CountingObserver
from arcly_trio.workers.http import HttpServer
from arcly_trio.workers.rtmp import RtmpServer
from tests._ffmpeg import probe_streams
from tests._hls import media_playlist
from tests._serving import wait_until
from tests._tools import require_tool

pytestmark = pytest.mark.interop

DEMO = Path(arcly_trio.server.__file__).parent / "assets" / "demo.flv"


class VideoObserver(CountingObserver):
    """Remembers the newest video dts the stream carried."""

    def __init__(self) -> None:
        super().__init__()
        self.newest_video = -1

    def on_frame(self, key: StreamKey, frame: Frame) -> None:
        super().on_frame(key, frame)
        if frame.kind is FrameKind.VIDEO and not frame.config:
            self.newest_video = max(self.newest_video, frame.dts)


@asynccontextmanager
async def full_server(
    tmp_path: Path, observer: CountingObserver | None = None
) -> AsyncIterator[tuple[Engine, RtmpServer, HttpServer, FlvRecorder]]:
    """RTMP in, HTTP out, HLS (2 s segments, window 6) and recording for the app ``live``."""
    hls = HlsService(variant="ts")
    recorder = FlvRecorder(tmp_path / "recordings")
    rtmp = RtmpServer("127.0.0.1", 0)
    http = HttpServer("127.0.0.1", 0)
    builder = (
        Engine.builder()
        .application(AppSpec("live", hls=True, record=True))
        .protocol(rtmp)
        .protocol(http)
        .service(hls)
        .service(recorder)
    )
    if observer is not None:
        builder.observer(observer)
    async with builder.build() as engine:
        yield engine, rtmp, http, recorder


@asynccontextmanager
async def ffmpeg_publishing(port: int, *, readrate: float = 1.0, loop: bool = False) -> AsyncIterator[trio.Process]:
    """ffmpeg sending the demo clip to rtmp://127.0.0.1:port/live/demo, killed on exit."""
    args = [require_tool("ffmpeg"), "-hide_banner", "-nostdin", "-loglevel", "error"]
    if loop:
        args += ["-stream_loop", "-1"]
    args += [
        "-readrate",
        f"{readrate:g}",
        "-i",
        str(DEMO),
        "-c",
        "copy",
        "-f",
        "flv",
        f"rtmp://127.0.0.1:{port}/live/demo",
    ]
    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(partial(trio.run_process, args, check=False))
        try:
            yield process
        finally:
            if process.returncode is None:
                process.kill()
            nursery.cancel_scope.cancel()


def video_frames(engine: Engine) -> int:
    try:
        return engine.stream(StreamKey("live", "demo")).stats().video_frames_total
    except StreamNotFound:
        return 0


async def run(*args: str) -> trio.CompletedProcess[bytes]:
    return await trio.run_process(list(args), capture_stdout=True, capture_stderr=True, check=False)


def assert_monotonic(frames: list[Frame]) -> None:
    """Each track's timestamps never go back; a video track's pictures strictly go forward."""
    last: dict[tuple[FrameKind, int], int] = {}
    last_picture: dict[int, int] = {}
    for frame in frames:
        track = (frame.kind, frame.track)
        assert frame.dts >= last.get(track, frame.dts), f"{track}: dts {last[track]} then {frame.dts}"
        last[track] = frame.dts
        if frame.kind is FrameKind.VIDEO and not frame.config:
            previous = last_picture.get(frame.track, -1)
            assert frame.dts > previous, f"video {frame.track}: picture dts {previous} then {frame.dts}"
            last_picture[frame.track] = frame.dts


async def test_ffprobe_and_ffmpeg_read_http_flv_of_an_rtmp_stream(tmp_path: Path) -> None:
    """The player's DTS go forward on every track (checked on the bytes the server sends, over
    the publisher's loops), and ffmpeg decodes them without a complaint.

    ffmpeg decodes with ``-enc_time_base:v -1``: by default its ``null`` output puts the decoded
    pictures on a 1/30 s grid that starts at the input's first timestamp, the first audio frame
    after the join's keyframe, up to a frame's length after the keyframe's DTS. When that offset
    is about half a frame, two pictures 33 ms apart round to one tick, and ffmpeg says
    "non monotonically increasing dts to muxer" about its own output (a saved capture of the
    server's bytes does the same offline; the server's DTS were increasing). With the
    input's time base (1 ms) it complains only if the stream repeats or goes back.
    """
    with trio.fail_after(40):
        async with full_server(tmp_path) as (engine, rtmp, http, _):
            async with ffmpeg_publishing(rtmp.port, readrate=2, loop=True):  # type: ignore[arg-type]
                await wait_until(lambda: video_frames(engine) >= 30)
                url = f"http://127.0.0.1:{http.port}/live/demo.flv"
                streams = await probe_streams(url)
                assert [s["codec_name"] for s in streams] == ["aac", "h264"]
                assert (streams[1]["width"], streams[1]["height"]) == (640, 360)
                received: list[Frame] = []
                async with open_flv_player(url) as player:
                    async for frame in player:  # past a loop of the publisher (10 s at 2x)
                        received.append(frame)
                        if sum(f.kind is FrameKind.VIDEO for f in received) >= 400:
                            break
                assert_monotonic(received)
                decoded = await run(
                    require_tool("ffmpeg"),
                    "-v",
                    "error",
                    "-i",
                    url,
                    "-frames:v",
                    "45",
                    "-enc_time_base:v",
                    "-1",
                    "-f",
                    "null",
                    "-",
                )
                assert decoded.returncode == 0 and decoded.stderr == b"", decoded.stderr.decode()


async def test_late_http_flv_joiner_of_an_rtmp_stream_starts_on_a_keyframe(tmp_path: Path, http_get) -> None:  # type: ignore[no-untyped-def]
    import h11

    with trio.fail_after(40):
        async with full_server(tmp_path) as (engine, rtmp, http, _):
            async with ffmpeg_publishing(rtmp.port, readrate=2, loop=True):  # type: ignore[arg-type]
                await wait_until(lambda: video_frames(engine) >= 100)  # well past the first GOP
                stream = await trio.open_tcp_stream("127.0.0.1", http.port)
                async with stream:
                    conn = h11.Connection(h11.CLIENT)
                    await stream.send_all(
                        conn.send(h11.Request(method="GET", target="/live/demo.flv", headers=[("host", "x")]))
                    )
                    reader = flv.FlvReader()
                    frames: list[Frame] = []
                    while not any(f.kind is FrameKind.VIDEO and not f.config for f in frames):
                        event = conn.next_event()
                        if event is h11.NEED_DATA:
                            conn.receive_data(await stream.receive_some(65536))
                        elif isinstance(event, h11.Data):
                            reader.receive_data(event.data)
                            while (tag := reader.next_event()) is not None:
                                if isinstance(tag, flv.FlvTag):
                                    frames.extend(flv.tag_to_frames(tag))
    assert frames[0].is_metadata
    picture = next(f for f in frames if f.kind is FrameKind.VIDEO and not f.config)
    assert picture.keyframe and picture.dts > 0


async def test_hls_of_an_rtmp_stream_parses_and_every_segment_decodes(tmp_path: Path, http_get) -> None:  # type: ignore[no-untyped-def]
    ffmpeg = require_tool("ffmpeg")
    with trio.fail_after(40):
        async with full_server(tmp_path) as (engine, rtmp, http, _):
            async with ffmpeg_publishing(rtmp.port, readrate=4, loop=True):  # type: ignore[arg-type]
                playlist_url = f"http://127.0.0.1:{http.port}/live/demo/index.m3u8"
                while True:  # the entry playlist names the media playlist (with a session id)
                    status, headers, body, target = await media_playlist(http_get, http.port, "/live/demo/index.m3u8")
                    if status == 200 and len(m3u8.loads(body.decode()).segments) >= 3:
                        break
                    await trio.sleep(0.1)
                assert headers["content-type"] == "application/vnd.apple.mpegurl"
                playlist = m3u8.loads(body.decode(), uri=f"http://127.0.0.1:{http.port}{target}")
                assert playlist.target_duration == 2 and not playlist.is_endlist
                for segment in playlist.segments:
                    status, headers, data = await http_get(http.port, f"/live/demo/{segment.uri}")
                    assert status == 200 and headers["content-type"] == "video/mp2t"
                    path = tmp_path / segment.uri.partition("?")[0]
                    path.write_bytes(data)
                    # Decode every frame (passthrough timestamps: a segment played alone starts
                    # with audio a little before the keyframe's pts, and the CLI's constant-rate
                    # output would warn about that, which is not a decoding problem).
                    decoded = await run(
                        ffmpeg, "-v", "error", "-i", str(path), "-fps_mode", "passthrough", "-f", "framemd5", "-"
                    )
                    assert decoded.returncode == 0 and decoded.stderr == b"", decoded.stderr.decode()
                    lines = decoded.stdout.decode().splitlines()
                    pictures = sum(line.startswith("0,") for line in lines)
                    assert abs(pictures - 30 * segment.duration) <= 2  # every picture of a 30 fps clip
                    streams = await probe_streams(str(path))
                    assert [s["codec_name"] for s in streams] == ["aac", "h264"]
                    assert 1.9 <= segment.duration <= 2.2
                # A real HLS client reads the live playlist too.
                streams = await probe_streams(playlist_url)
                assert [s["codec_name"] for s in streams] == ["aac", "h264"]


async def recorded_video_end(path: Path) -> float:
    """The last video pts (s) of a recording, after checking that ffmpeg decodes it cleanly."""
    ffprobe, ffmpeg = require_tool("ffprobe"), require_tool("ffmpeg")
    decoded = await run(ffmpeg, "-v", "error", "-i", str(path), "-f", "null", "-")
    assert decoded.returncode == 0 and decoded.stderr == b"", decoded.stderr.decode()
    packets = await run(
        ffprobe,
        "-v",
        "error",
        "-select_streams",
        "v:0",
        "-show_entries",
        "packet=pts_time",
        "-of",
        "csv=p=0",
        str(path),
    )
    return max(float(line.strip(",")) for line in packets.stdout.decode().split() if line.strip(","))


async def test_recording_survives_kill_9_of_the_publishing_ffmpeg(tmp_path: Path) -> None:
    observer = VideoObserver()
    with trio.fail_after(40):
        async with full_server(tmp_path, observer) as (engine, rtmp, http, recorder):
            async with ffmpeg_publishing(rtmp.port, readrate=2) as process:  # type: ignore[arg-type]
                await wait_until(lambda: observer.newest_video >= 5000)
                process.send_signal(signal.SIGKILL)
                await process.wait()
            await wait_until(lambda: any(isinstance(e, RecordingStopped) for e in recorder.history))
            published = observer.newest_video / 1000
    (path,) = sorted((tmp_path / "recordings" / "live").glob("demo-*.flv"))
    end = await recorded_video_end(path)
    assert published >= 5
    assert abs(end - published) <= 2.0  # within one GOP of what was published


async def test_recording_survives_a_graceful_server_shutdown(tmp_path: Path) -> None:
    observer = VideoObserver()
    hls = HlsService(variant="ts")
    recorder = FlvRecorder(tmp_path / "recordings")
    rtmp = RtmpServer("127.0.0.1", 0)
    engine = (
        Engine.builder()
        .application(AppSpec("live", record=True, hls=True))
        .protocol(rtmp)
        .protocol(HttpServer("127.0.0.1", 0))
        .service(hls)
        .service(recorder)
        .observer(observer)
        .build()
    )
    with trio.fail_after(40):
        async with trio.open_nursery() as nursery:
            await nursery.start(engine.serve)
            async with ffmpeg_publishing(rtmp.port, readrate=2):  # type: ignore[arg-type]
                await wait_until(lambda: observer.newest_video >= 4000)
                await engine.shutdown(grace=5)  # what SIGTERM does in ``arcly-trio serve``
                published = observer.newest_video / 1000
    (path,) = sorted((tmp_path / "recordings" / "live").glob("demo-*.flv"))
    end = await recorded_video_end(path)
    assert abs(end - published) <= 2.0
    assert recorder.history[-1].reason == "shutdown"  # type: ignore[union-attr]
