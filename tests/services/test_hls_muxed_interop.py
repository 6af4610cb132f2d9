"""The muxed LL-HLS rendition (``AppSpec.hls_muxed``) against real clients.

Debian's ffmpeg publishes the demo clip (H.264 + AAC) over RTMP to an ``ll`` application with
``hls_muxed``. The multivariant playlist names one variant with both codecs and no alternative
audio rendition (``audio.m3u8`` and the MPD are not served); ffprobe finds the video and the
audio in ``index.m3u8`` and ffmpeg decodes it with no error; headless Chromium plays it with
hls.js in ``lowLatencyMode``: the video's frame count and the audio's decoded bytes grow and no
fatal error is raised.

The server runs in-process on port 0; the test is bounded by ``trio.fail_after`` and waits on
what the player reports, never on a fixed sleep.
"""

from __future__ import annotations

import contextlib
from typing import Any

import m3u8
import pytest
import trio

from arcly_trio import AppSpec, Engine
from arcly_trio.core.keys import StreamKey
from arcly_trio.protocols.http.router import HttpRequest
from arcly_trio.services import HlsService
from arcly_trio.workers.http import HttpServer
from arcly_trio.workers.rtmp import RtmpServer
from tests._browser import FAKE_MEDIA, chromium
from tests._npm import HLS_JS, npm_file
from tests._tools import require_tool
from tests.services.test_hls_cmaf_interop import DEMO, PLAYERS, blocking, decodes_cleanly, get, publishing, run

pytestmark = pytest.mark.interop

_STATE = """const v = document.getElementById("v");
return {fatal: window.report.fatal, errors: window.report.errors, time: v.currentTime,
        frames: v.getVideoPlaybackQuality().totalVideoFrames, audio: v.webkitAudioDecodedByteCount,
        audioTracks: window.player.audioTracks.length};"""


async def test_hlsjs_and_ffmpeg_play_both_tracks_of_a_muxed_ll_stream() -> None:
    ffmpeg, ffprobe = require_tool("ffmpeg"), require_tool("ffprobe")
    rtmp, http = RtmpServer("127.0.0.1", 0), HttpServer("127.0.0.1", 0)
    bodies = {"players.html": (PLAYERS.read_bytes(), "text/html; charset=utf-8"),
              "hls.min.js": (npm_file(*HLS_JS).read_bytes(), "text/javascript"),
              "dash.all.min.js": (b"", "text/javascript")}  # fmt: skip

    async def serve_file(request: HttpRequest, exchange: Any) -> None:
        body, kind = bodies[request.path.rpartition("/")[2]]
        await exchange.respond(200, body, content_type=kind)

    for name in bodies:
        http.router.get(f"/test/{name}", serve_file)
    hls = HlsService()
    builder = Engine.builder().service(hls).protocol(rtmp).protocol(http)
    builder.application(AppSpec("mux", hls=True, hls_variant="ll", hls_muxed=True))
    async with builder.build(), publishing(ffmpeg, DEMO, f"rtmp://127.0.0.1:{rtmp.port}/mux/demo"):
        port = http.port
        with trio.fail_after(30):
            while (await get(port, "/mux/demo/index.m3u8"))[0] != 200:
                await trio.sleep(0.2)
            _, master = await get(port, "/mux/demo/index.m3u8")
            (variant,) = m3u8.loads(master.decode()).playlists
            assert "EXT-X-MEDIA" not in master.decode()
            assert variant.stream_info.codecs.startswith("avc1.") and ",mp4a.40.2" in variant.stream_info.codecs
            _, media = await get(port, "/mux/demo/video.m3u8")
            assert "-m-" in media.decode() and "EXT-X-RENDITION-REPORT" not in media.decode()
            assert (await get(port, "/mux/demo/audio.m3u8"))[0] == 404
            assert (await get(port, "/mux/demo/index.mpd"))[0] == 404
            assert "dash" not in hls.stream_urls(StreamKey("mux", "demo"))
        url = f"http://127.0.0.1:{port}/mux/demo/index.m3u8"
        probe = await run(ffprobe, "-v", "error", "-show_entries", "stream=codec_name", "-of", "csv=p=0", url)
        assert sorted(set(probe.stdout.decode().split())) == ["aac", "h264"], probe.stderr.decode()[-2000:]
        await decodes_cleanly(ffmpeg, url)

        stack = contextlib.ExitStack()
        driver = await blocking(stack.enter_context, chromium(*FAKE_MEDIA))
        try:
            await blocking(driver.get, f"http://127.0.0.1:{port}/test/players.html?kind=hls&src={url}")
            with trio.fail_after(60):
                first = await blocking(driver.execute_script, _STATE)
                while not first["frames"] or not first["audio"]:  # playing: both decoders fed
                    assert first["fatal"] is None, first["errors"]
                    await trio.sleep(0.25)
                    first = await blocking(driver.execute_script, _STATE)
                state = first
                while state["frames"] < first["frames"] + 60 or state["audio"] <= first["audio"]:
                    assert state["fatal"] is None, state["errors"]
                    await trio.sleep(0.25)
                    state = await blocking(driver.execute_script, _STATE)
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(stack.close)
    assert state["time"] > first["time"] and state["audioTracks"] == 0, state  # no alternative audio rendition
