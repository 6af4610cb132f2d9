"""What a new user met with the first server, each reproduced and now fixed.

* the demo passed its clip's onMetaData through (``duration: 10.067``, ``filesize``), so
  ffprobe showed a 10 s live stream and rtmpdump an incomplete download;
* ``framerate``, ``sample_rate`` and ``channels`` were ``null`` in ``/api/streams`` for the demo
  (only the RTMP adapter filled them in, from metadata);
* on SIGTERM, HLS playlists got no ``#EXT-X-ENDLIST`` (hls.js ended in a network error);
* players whose stream the server ended were logged as "client left";
* HLS (MPEG-TS) dropped AV1, VP9 and Opus tracks without a word.
"""

from __future__ import annotations

import logging
import signal

import pytest
import trio

from arcly_trio import AppSpec, Engine, Frame, FrameKind
from arcly_trio.media import amf0
from arcly_trio.server.demo import demo_frames, publish_demo
from arcly_trio.services import HlsService
from arcly_trio.workers.http import HttpServer
from tests._hls import media_playlist
from tests._tools import require_tool
from tests.test_cli import cli_server


def test_the_demo_announces_no_file_duration_or_size() -> None:
    metadata = [frame for frame in demo_frames() if frame.is_metadata]
    assert len(metadata) == 1
    _, fields = amf0.decode(metadata[0].payload)[:2]
    assert isinstance(fields, dict) and fields["width"] == 640
    assert not {"duration", "filesize"} & set(fields)


@pytest.mark.interop
async def test_ffprobe_sees_the_demo_as_live() -> None:
    with trio.fail_after(30):
        async with cli_server("--demo") as server:
            result = await trio.run_process(
                [require_tool("ffprobe"), "-v", "error", "-show_entries", "format=duration", "-of",
                 "default=nw=1", server.url("live/demo")], capture_stdout=True, capture_stderr=True)
    assert result.stdout.decode().strip() == "duration=N/A", result.stdout


async def test_stream_info_comes_from_the_frames_whatever_the_publisher(autojump_clock, http_get) -> None:  # type: ignore[no-untyped-def]
    http = HttpServer("127.0.0.1", 0)
    async with Engine.builder().application("live").protocol(http).build() as engine:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(publish_demo, engine)
            await trio.sleep(3)
            document = engine.stream("live/demo").info
            nursery.cancel_scope.cancel()
    assert document.protocol == "demo"
    assert (document.width, document.height) == (640, 360)
    assert document.framerate == pytest.approx(30, abs=0.5)
    assert document.audio_sample_rate == 44100 and document.audio_channels == 1
    assert document.video_codec_string == "avc1.4d401e" and document.audio_codec_string == "mp4a.40.2"


@pytest.mark.interop
async def test_sigterm_ends_hls_playlists_and_serves_them_meanwhile(http_get) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(60):
        async with cli_server("--demo", "--hls", "--hls-variant", "ts", "--hls-segment", "1") as server:
            assert server.http_port
            while (await http_get(server.http_port, "/live/demo/index.m3u8"))[0] != 200:
                await trio.sleep(0.2)
            server.process.send_signal(signal.SIGTERM)
            # A player reloads the playlist about once per target duration (1 s here): its next
            # reload comes a while after the signal, and must still find the final playlist.
            await trio.sleep(0.6)
            try:  # the entry playlist names the media playlist (with a session id): follow it
                status, _, body, _ = await media_playlist(http_get, server.http_port, "/live/demo/index.m3u8")
                ended = status == 200 and b"#EXT-X-ENDLIST" in body
            except OSError:
                ended = False
            with trio.fail_after(10):
                assert await server.process.wait() == 0
    assert ended, "no playlist with #EXT-X-ENDLIST was served during the shutdown"


async def test_players_of_a_stream_that_ended_are_not_logged_as_gone(caplog, demo_frames) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.INFO)
    http = HttpServer("127.0.0.1", 0)
    async with Engine.builder().application("live").protocol(http).build() as engine:
        async with engine.publish("live/cam") as publisher:
            for frame in demo_frames[:30]:
                await publisher.send(frame)
            stream = await trio.open_tcp_stream("127.0.0.1", http.port)
            await stream.send_all(b"GET /live/cam.flv HTTP/1.1\r\nHost: x\r\n\r\n")
            with trio.fail_after(5):
                await stream.receive_some(65536)
        with trio.fail_after(5):
            while await stream.receive_some(65536):
                pass
        await trio.sleep(0.1)
    lines = [r.getMessage() for r in caplog.records if "stopped playing live/cam" in r.getMessage()]
    assert len(lines) == 1 and "(stream-ended;" in lines[0], lines


async def test_hls_mpegts_says_which_tracks_it_cannot_carry(caplog, http_get, demo_frames) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.WARNING, logger="arcly_trio.hls")
    http = HttpServer("127.0.0.1", 0)
    engine = Engine.builder().application(AppSpec("live", hls=True)).service(HlsService(variant="ts")).protocol(http).build()
    async with engine, engine.publish("live/opus") as publisher:
        video = [f for f in demo_frames if f.kind is not FrameKind.AUDIO]
        await publisher.send(Frame(FrameKind.AUDIO, "opus", 0, 0, b"OpusHead\x01\x02\x38\x01\x80\xbb\x00\x00\x00\x00\x00", config=True))
        for frame in video[:40]:
            await publisher.send(frame)
            if not frame.config:
                await publisher.send(Frame(FrameKind.AUDIO, "opus", frame.dts, frame.dts, b"\xfc\xff\xfe"))
        with trio.fail_after(5):
            while True:
                status, _, body = await http_get(http.port, "/api/streams")
                document = __import__("json").loads(body)
                streams = document["apps"][0]["streams"]
                if streams and streams[0].get("hls_tracks", {}).get("left_out"):
                    break
                await trio.sleep(0.02)
    tracks = streams[0]["hls_tracks"]
    assert {k: tracks[k] for k in ("variant", "carried", "left_out")} == {
        "variant": "ts", "carried": ["h264 video"], "left_out": ["opus audio"]}
    assert tracks["by_variant"]["ts"] == {"carries": ["h264 video"], "leaves_out": ["opus audio"]}
    assert tracks["by_variant"]["ll"] == {"carries": ["h264 video", "opus audio"], "leaves_out": []}
    warnings = [r.getMessage() for r in caplog.records if "cannot carry" in r.getMessage()]
    assert len(warnings) == 1 and "opus audio" in warnings[0]
