"""WHIP and WHEP with clients no one here wrote: Debian's Chromium and ffmpeg 8's WHIP muxer.

* Chromium plays WHEP (a plain ``RTCPeerConnection`` with recvonly transceivers, on a blank page
  of the server's origin) of a stream ffmpeg publishes over RTMP with H.264 and AAC: the picture
  moves (``framesDecoded`` grows) and the audio track has energy (the AAC→Opus bridge);
* Chromium publishes WHIP with its fake camera and microphone; Debian's ffmpeg 5.1 then decodes
  the video over RTMP;
* ffmpeg 8 publishes H.264 + Opus with ``-f whip``; ffmpeg 5.1 decodes the video over RTMP;
* AV1 and VP9 published by ffmpeg 8 over Enhanced RTMP play over WHEP in Chromium without
  transcoding;
* loss: a UDP relay between Chromium and the server drops and reorders 5 % of the datagrams;
  the picture keeps moving, the NACKs are answered, and no freeze lasts 2 s.

Each test waits on what the client reports (Chromium's ``getStats``, ffmpeg's exit), inside a
``trio.fail_after``; servers run in-process on port 0.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import trio

from arcly_trio import AppSpec, Engine
from arcly_trio.kernel.auth import TokenAuthenticator
from arcly_trio.services import HlsService
from arcly_trio.services.audio_bridge import AudioBridge
from arcly_trio.workers.http import HttpServer
from arcly_trio.workers.rtmp import RtmpServer
from arcly_trio.workers.webrtc import WebRtcServer
from arcly_trio.workers.webrtc import viewer as whep_viewer
from tests._browser import FAKE_MEDIA, blocking, browser
from tests._ffmpeg import run_tool
from tests._net import HOST
from tests._tools import require_ffmpeg8, require_tool
from tests._webrtc import WHEP_PLAY, WHIP_PUBLISH, ffmpeg_rtmp_publish, inbound, until_stats, wait_stream

pytestmark = pytest.mark.interop


@contextlib.asynccontextmanager
async def server(
    *, authenticator: Any = None, candidate_port: int | None = None, hls: bool = False
) -> AsyncIterator[tuple[Engine, RtmpServer, HttpServer, WebRtcServer]]:
    """The RTMP, HTTP and WebRTC workers on port 0 with the audio bridge; with ``hls``, HLS
    packaging: application ``live`` as MPEG-TS, ``ll`` as LL-HLS (fMP4) and DASH."""
    rtmp = RtmpServer(HOST, 0)
    http = HttpServer(HOST, 0)
    webrtc = WebRtcServer(HOST, 0, announced_port=candidate_port)
    builder = Engine.builder().protocol(rtmp).protocol(http).protocol(webrtc).observer(AudioBridge())
    if hls:
        builder.service(HlsService(target_duration=1.0))
        builder.application(AppSpec("live", hls=True, hls_variant="ts"))
        builder.application(AppSpec("ll", hls=True, hls_variant="ll"))
    else:
        builder.application(AppSpec("live"))
    if authenticator is not None:
        builder.authenticator(authenticator)
    async with builder.build() as engine:
        yield engine, rtmp, http, webrtc


async def test_chromium_plays_whep_of_an_rtmp_publisher_with_sound(monkeypatch):
    monkeypatch.setattr(whep_viewer, "JOIN_OPUS_FROM", 0)  # Opus in 40 ms pairs, as a busy worker sends it
    monkeypatch.setattr(whep_viewer, "BATCH_AUDIO_FROM", 0)  # and in the video frames' sends (padded runs)
    async with server() as (engine, rtmp, http, webrtc):
        args = ffmpeg_rtmp_publish(
            f"rtmp://{HOST}:{rtmp.port}/live/cam",
            video=("-c:v", "libx264", "-profile:v", "baseline", "-tune", "zerolatency", "-bf", "0"),
        )
        async with run_tool(args), browser(*FAKE_MEDIA, "--mute-audio") as driver:
            with trio.fail_after(60):
                await wait_stream(engine, "live/cam")
                await blocking(driver.get, f"http://{HOST}:{http.port}/api/server")
                started = await blocking(
                    driver.execute_async_script, WHEP_PLAY, f"http://{HOST}:{http.port}/live/cam/whep", None, None
                )
                assert started.get("ok"), started
                first = await until_stats(driver, lambda s: inbound(s, "video").get("framesDecoded", 0) >= 25)
                later = await until_stats(
                    driver,
                    lambda s: (
                        inbound(s, "video").get("framesDecoded", 0) >= inbound(first, "video")["framesDecoded"] + 25
                        and (inbound(s, "audio").get("totalAudioEnergy") or 0) > 0
                    ),
                )
        assert later["state"] == "connected"
        assert inbound(later, "video")["frameWidth"] == 640


async def decoded(ffmpeg: str, url: str, stream: str) -> tuple[int, str]:
    """How many frames of ``stream`` (``v`` or ``a``) ``ffmpeg`` decodes from ``url`` in 3 s of
    media (framemd5 writes a line per decoded frame), and what it said about the input."""
    args = [ffmpeg, "-hide_banner", "-nostdin", "-rw_timeout", "15000000", "-i", url, "-map", f"0:{stream}:0",
            "-t", "3", "-f", "framemd5", "-"]  # fmt: skip
    result = await trio.run_process(args, capture_stdout=True, capture_stderr=True, check=False)
    lines = [line for line in result.stdout.decode().splitlines() if line and not line.startswith("#")]
    return len(lines), result.stderr.decode(errors="replace")


async def wait_segments(http: HttpServer, path: str, count: int = 2) -> None:
    """Until the media playlist at ``path`` (or the first one a multivariant playlist there names)
    lists ``count`` media segments."""
    async with httpx.AsyncClient(timeout=5) as client:
        url = f"http://{HOST}:{http.port}{path}"
        while True:
            reply = await client.get(url)
            if reply.status_code == 200:
                if "#EXT-X-STREAM-INF" in reply.text:
                    lines = reply.text.splitlines()
                    found = next(i for i, line in enumerate(lines) if line.startswith("#EXT-X-STREAM-INF"))
                    url = str(httpx.URL(url).join(lines[found + 1].strip()))
                    continue
                if reply.text.count("#EXTINF") >= count:
                    return
            await trio.sleep(0.25)


async def test_chromium_publishes_whip_and_ffmpeg_decodes_it_with_audio():
    """Chromium's fake camera and microphone over WHIP (H.264 + Opus); Debian's ffmpeg 5.1 decodes
    the video and the bridged AAC over RTMP and HLS-TS, ffmpeg 8 the video over RTMP."""
    ffmpeg, ffmpeg8 = require_tool("ffmpeg"), require_ffmpeg8()
    async with server(hls=True) as (engine, rtmp, http, webrtc), browser(*FAKE_MEDIA) as driver:
        with trio.fail_after(120):
            await blocking(driver.get, f"http://{HOST}:{http.port}/api/server")
            started = await blocking(
                driver.execute_async_script, WHIP_PUBLISH, f"http://{HOST}:{http.port}/live/web/whip", None
            )
            assert started.get("ok"), started
            await wait_stream(engine, "live/web")
            rtmp_url = f"rtmp://{HOST}:{rtmp.port}/live/web"
            video, said = await decoded(ffmpeg, rtmp_url, "v")
            assert video > 30 and "Video: h264" in said, said
            audio, said = await decoded(ffmpeg, rtmp_url, "a")
            assert audio > 50 and "Audio: aac" in said, said
            video8, said = await decoded(ffmpeg8, rtmp_url, "v")
            assert video8 > 30, said
            # ffmpeg starts three segments from the live edge: past the first ones, cut before
            # the bridge had started (it starts within a second of a legacy viewer, at a keyframe)
            await wait_segments(http, "/live/web/index.m3u8", 6)
            audio, said = await decoded(ffmpeg, f"http://{HOST}:{http.port}/live/web/index.m3u8", "a")
            assert audio > 50 and "Audio: aac" in said, said


async def test_ffmpeg8_whip_muxer_publishes_h264_and_opus():
    """ffmpeg 8's WHIP muxer (H.264 + Opus, a Bearer token); ffmpeg 5.1 decodes it over RTMP
    (the bridged AAC) and HTTP-FLV, ffmpeg 8 over LL-HLS and DASH (the original Opus)."""
    ffmpeg, ffmpeg8 = require_tool("ffmpeg"), require_ffmpeg8()
    auth = TokenAuthenticator(publish_token="pub")
    async with server(authenticator=auth, hls=True) as (engine, rtmp, http, webrtc):
        args = [ffmpeg8, "-v", "error", "-re", "-f", "lavfi", "-i", "testsrc=size=640x360:rate=25", "-f", "lavfi",
                "-i", "sine=frequency=440:sample_rate=48000", "-c:v", "libx264", "-profile:v", "baseline",
                "-pix_fmt", "yuv420p", "-bf", "0", "-g", "25", "-tune", "zerolatency", "-c:a", "libopus",
                "-ar", "48000", "-ac", "2", "-authorization", "pub", "-f", "whip",
                f"http://{HOST}:{http.port}/ll/ff/whip"]  # fmt: skip
        async with run_tool(args):
            with trio.fail_after(120):
                await wait_stream(engine, "ll/ff")
                assert engine.stream("ll/ff").info.audio_codec == "opus"  # the original, kept in the stream
                for url in (f"rtmp://{HOST}:{rtmp.port}/ll/ff", f"http://{HOST}:{http.port}/ll/ff.flv"):
                    video, said = await decoded(ffmpeg, url, "v")
                    assert video > 30 and "Video: h264" in said and "640x360" in said, said
                    audio, said = await decoded(ffmpeg, url, "a")
                    assert audio > 50 and "Audio: aac" in said, said
                await wait_segments(http, "/ll/ff/index.m3u8")
                for path in ("/ll/ff/index.m3u8", "/ll/ff/index.mpd"):
                    video, said = await decoded(ffmpeg8, f"http://{HOST}:{http.port}{path}", "v")
                    assert video > 30, said
                    audio, said = await decoded(ffmpeg8, f"http://{HOST}:{http.port}{path}", "a")
                    assert audio > 50 and "opus" in said, said


@pytest.mark.parametrize(
    ("codec", "encoder"),
    [
        ("av1", ("-c:v", "libaom-av1", "-cpu-used", "8", "-row-mt", "1")),
        ("vp9", ("-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8")),
    ],
)
async def test_chromium_plays_av1_and_vp9_over_whep_without_transcoding(codec, encoder):
    ffmpeg8 = require_ffmpeg8()
    async with server() as (engine, rtmp, http, webrtc):
        args = ffmpeg_rtmp_publish(f"rtmp://{HOST}:{rtmp.port}/live/{codec}", video=encoder, binary=ffmpeg8)
        async with run_tool(args), browser(*FAKE_MEDIA, "--mute-audio") as driver:
            with trio.fail_after(90):
                await wait_stream(engine, f"live/{codec}")
                await blocking(driver.get, f"http://{HOST}:{http.port}/api/server")
                started = await blocking(
                    driver.execute_async_script, WHEP_PLAY, f"http://{HOST}:{http.port}/live/{codec}/whep", None, codec
                )
                assert started.get("ok"), started
                found = await until_stats(driver, lambda s: inbound(s, "video").get("framesDecoded", 0) >= 10)
        codec_id = inbound(found, "video")["codecId"]
        assert found[codec_id].lower() == f"video/{codec}"


class LossyRelay:
    """A UDP relay that drops and reorders a share of the datagrams in both directions."""

    def __init__(self, server: tuple[str, int], loss: float = 0.05, seed: int = 7) -> None:
        self.server = server
        self.loss = loss
        self.random = random.Random(seed)
        self.socket = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        self.client: Any = None
        self.dropped = 0
        self.forwarded = 0

    async def bind(self) -> int:
        await self.socket.bind((HOST, 0))
        return self.socket.getsockname()[1]

    async def run(self, upstream: Any) -> None:
        held: tuple[bytes, Any] | None = None
        while True:
            data, source = await self.socket.recvfrom(4096)
            if source[:2] != self.server:
                self.client = source
                target = self.server
            else:
                target = self.client
            if target is None:
                continue
            roll = self.random.random()
            if roll < self.loss:
                self.dropped += 1
                continue
            if roll < self.loss * 2 and held is None:
                held = (data, target)  # reorder: this one goes out after the next
                continue
            await self.socket.sendto(data, target)
            self.forwarded += 1
            if held is not None:
                await self.socket.sendto(*held)
                held = None


async def test_loss_is_recovered_with_nacks():
    relay_socket = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    await relay_socket.bind((HOST, 0))
    relay_port = relay_socket.getsockname()[1]
    relay_socket.close()
    async with server(candidate_port=relay_port) as (engine, rtmp, http, webrtc), trio.open_nursery() as nursery:
        relay = LossyRelay((HOST, webrtc.port_number))
        relay.socket = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        await relay.socket.bind((HOST, relay_port))
        nursery.start_soon(relay.run, None)
        args = ffmpeg_rtmp_publish(
            f"rtmp://{HOST}:{rtmp.port}/live/lossy",
            video=("-c:v", "libx264", "-profile:v", "baseline", "-tune", "zerolatency", "-bf", "0", "-b:v", "1500k"),
        )
        async with run_tool(args), browser(*FAKE_MEDIA, "--mute-audio") as driver:
            with trio.fail_after(90):
                await wait_stream(engine, "live/lossy")
                await blocking(driver.get, f"http://{HOST}:{http.port}/api/server")
                started = await blocking(
                    driver.execute_async_script, WHEP_PLAY, f"http://{HOST}:{http.port}/live/lossy/whep", None, None
                )
                assert started.get("ok"), started
                found = await until_stats(driver, lambda s: inbound(s, "video").get("framesDecoded", 0) >= 200)
        nursery.cancel_scope.cancel()
    video = inbound(found, "video")
    assert relay.dropped > 0
    assert video["nackCount"] > 0
    assert (video.get("totalFreezesDuration") or 0) < 2.0  # all freezes together: none over 2 s


PLAYER = "return window.arclyPlayer ? JSON.parse(JSON.stringify(window.arclyPlayer)) : null;"
PUBLISHER = "return window.arclyPublisher ? JSON.parse(JSON.stringify(window.arclyPublisher)) : null;"


async def until_page(driver: Any, script: str, predicate: Any) -> dict[str, Any]:
    """The page's own readout (``window.arclyPlayer``/``arclyPublisher``) once ``predicate`` holds."""
    while True:
        found = await blocking(driver.execute_script, script)
        if found and predicate(found):
            return found
        await trio.sleep(0.25)


async def test_the_pages_publish_over_whip_and_play_over_whep():
    """The built-in publish page (fake camera, ``?autostart=1``) publishes over WHIP; the watch
    page plays it over WHEP, with sound, and its readout counts decoded frames."""
    async with server() as (engine, rtmp, http, webrtc):
        base = f"http://{HOST}:{http.port}"
        async with browser(*FAKE_MEDIA, "--mute-audio") as publisher, browser(*FAKE_MEDIA, "--mute-audio") as viewer:
            with trio.fail_after(90):
                await blocking(publisher.get, f"{base}/publish/live/page?autostart=1")
                published = await until_page(publisher, PUBLISHER, lambda p: p["transport"] == "whip" and p["stats"])
                await wait_stream(engine, "live/page")
                await blocking(viewer.get, f"{base}/watch/live/page")
                first = await until_page(
                    viewer,
                    PLAYER,
                    lambda p: p["transport"] == "whep" and (p["stats"] or {}).get("framesDecoded", 0) > 10,
                )
                later = await until_page(
                    viewer,
                    PLAYER,
                    lambda p: (
                        p["stats"]["framesDecoded"] > first["stats"]["framesDecoded"] + 25
                        and p["stats"]["audioPackets"] > 25
                    ),
                )
        assert published["transport"] == "whip"
        assert later["stats"]["videoCodec"].lower().startswith("video/h264")
        assert later["stats"]["width"] > 0
