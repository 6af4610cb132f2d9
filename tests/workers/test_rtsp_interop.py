"""RTSP with real clients: ffmpeg 5.1 publishes (TCP and UDP) and RTMP plays it back; ffmpeg
(TCP and UDP) and GStreamer's ``rtspsrc`` play an RTMP-published stream; ffmpeg 8 publishes over
RTSP and HTTP-FLV, LL-HLS (ffmpeg decodes) and WHEP (the project's WHEP client) play it.

Each test has one purpose and a few seconds of media; every wait is bounded by ``fail_after``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from arcly_trio import AppSpec
from arcly_trio.clients.webrtc import open_whep_player
from arcly_trio.kernel.auth import TokenAuthenticator
from arcly_trio.kernel.engine import Engine
from arcly_trio.services import HlsService
from arcly_trio.services.audio_bridge import AudioBridge
from arcly_trio.workers.http import HttpServer
from arcly_trio.workers.rtmp import RtmpServer
from arcly_trio.workers.rtsp.server import RtspServer
from arcly_trio.workers.webrtc.server import WebRtcServer
from tests._ffmpeg import publish_args, run_tool
from tests._hls import media_playlist
from tests._net import HOST
from tests._serving import wait_publishing, wait_until
from tests._tools import require_ffmpeg8, require_tool

pytestmark = pytest.mark.interop

UDP_PORTS = (46000, 46999)


@asynccontextmanager
async def servers(
    authenticator: TokenAuthenticator | None = None,
) -> AsyncIterator[tuple[Engine, RtmpServer, RtspServer]]:
    rtmp = RtmpServer(HOST, 0)
    rtsp = RtspServer(HOST, 0, udp_ports=UDP_PORTS)
    builder = Engine.builder().application("live").protocol(rtmp).protocol(rtsp)
    if authenticator is not None:
        builder.authenticator(authenticator)
    async with builder.build() as engine:
        yield engine, rtmp, rtsp


def _decoded(lines: list[str]) -> tuple[int, int]:
    """Video and audio frames of ffmpeg's framemd5 output."""
    return sum(line.startswith("0,") for line in lines), sum(line.startswith("1,") for line in lines)


async def _ffmpeg_reads(url: str, *options: str) -> tuple[int, int, str]:
    args = [require_tool("ffmpeg"), "-hide_banner", "-nostdin", "-loglevel", "error", *options, "-i", url]
    args += ["-t", "2", "-f", "framemd5", "-"]
    async with run_tool(args) as tool:
        await tool.wait()
        stderr = tool.stderr()
    return (*_decoded(tool.lines), stderr)


@pytest.mark.parametrize("transport", ["tcp", "udp"])
async def test_ffmpeg_publishes_over_rtsp_and_rtmp_plays_it(transport: str) -> None:
    with trio.fail_after(30):
        async with servers() as (engine, rtmp, rtsp):
            args = publish_args(f"rtsp://{HOST}:{rtsp.port}/live/cam")
            args[-2:-1] = ["rtsp", "-rtsp_transport", transport]
            async with run_tool(args):
                await wait_publishing(engine, "live/cam")
                assert rtsp.connections == 1 and rtsp.publishers
                video, audio, stderr = await _ffmpeg_reads(f"rtmp://{HOST}:{rtmp.port}/live/cam")
    assert video >= 55 and audio >= 80, stderr  # 2 s of 30 fps and 44.1 kHz AAC (1024 samples a frame)


@pytest.mark.parametrize("transport", ["tcp", "udp"])
async def test_ffmpeg_plays_an_rtmp_published_stream_over_rtsp(transport: str) -> None:
    with trio.fail_after(30):
        async with servers() as (engine, rtmp, rtsp):
            async with run_tool(publish_args(f"rtmp://{HOST}:{rtmp.port}/live/a")):
                await wait_publishing(engine, "live/a")
                url = f"rtsp://{HOST}:{rtsp.port}/live/a"
                video, audio, stderr = await _ffmpeg_reads(url, "-rtsp_transport", transport)
    assert video >= 55 and audio >= 80, stderr
    assert "error" not in stderr.lower(), stderr


@pytest.mark.parametrize("protocols", ["tcp", "udp"])
async def test_gstreamer_rtspsrc_plays_video_and_audio(protocols: str) -> None:
    gst = require_tool("gst-launch-1.0")
    with trio.fail_after(30):
        async with servers() as (engine, rtmp, rtsp):
            async with run_tool(publish_args(f"rtmp://{HOST}:{rtmp.port}/live/g")):
                await wait_publishing(engine, "live/g")
                url = f"rtsp://{HOST}:{rtsp.port}/live/g"
                args = [gst, "-v", "rtspsrc", f"location={url}", f"protocols={protocols}", "name=src"]
                for kind, depay, decoder in (
                    ("video", "rtph264depay", "avdec_h264"),
                    ("audio", "rtpmp4gdepay", "avdec_aac"),
                ):
                    args += [
                        "src.",
                        "!",
                        depay,
                        "!",
                        decoder,
                        "!",
                        "fakesink",
                        f"name={kind}",
                        "silent=false",
                        "sync=false",
                    ]

                def decoded(kind: str) -> int:
                    return sum(f":{kind}: last-message = chain" in line for line in tool.lines)

                async with run_tool(args) as tool:
                    await wait_until(lambda: decoded("video") >= 30 and decoded("audio") >= 30 or not tool.running)
                    assert decoded("video") >= 30 and decoded("audio") >= 30, "\n".join(tool.lines[-20:])


async def test_ffmpeg_publishes_hevc_with_a_password_and_plays_it_back_over_rtsp() -> None:
    # ffmpeg sends ANNOUNCE without credentials, takes the 401 and asks again on the same
    # connection; its HEVC parameter sets are only in the SDP (global headers). (ffmpeg 5.1
    # cannot play HEVC over RTMP: it reads it back over RTSP.)
    with trio.fail_after(30):
        async with servers(TokenAuthenticator(publish_token="pub")) as (engine, rtmp, rtsp):
            args = publish_args(f"rtsp://user:pub@{HOST}:{rtsp.port}/live/h")
            args[args.index("libx264")] = "libx265"
            args[args.index("-tune") : args.index("-tune") + 2] = ["-x265-params", "log-level=error"]
            args[-2:-1] = ["rtsp", "-rtsp_transport", "tcp"]
            async with run_tool(args):
                stream = await wait_publishing(engine, "live/h")
                await wait_until(lambda: stream.info.audio_codec == "aac")  # DESCRIBE names the tracks there are
                url = f"rtsp://{HOST}:{rtsp.port}/live/h"
                video, audio, stderr = await _ffmpeg_reads(url, "-rtsp_transport", "tcp")
    assert video >= 55 and audio >= 80, stderr


async def test_every_other_protocol_plays_an_rtsp_published_stream(http_get: Any) -> None:
    """ffmpeg 8 publishes H.264 + AAC over RTSP (TCP); ffmpeg decodes it over HTTP-FLV and
    LL-HLS, and the project's WHEP client receives its video and (bridged Opus) audio."""
    ffmpeg8 = require_ffmpeg8()
    rtsp, http, webrtc = RtspServer(HOST, 0), HttpServer(HOST, 0), WebRtcServer(HOST, 0)
    builder = Engine.builder().application(AppSpec("live", hls=True)).protocol(rtsp).protocol(http)
    builder.protocol(webrtc).service(HlsService(variant="ll", target_duration=1.0)).observer(AudioBridge())
    with trio.fail_after(60):
        async with builder.build() as engine:
            args = publish_args(f"rtsp://{HOST}:{rtsp.port}/live/cam")
            args[0] = ffmpeg8
            args[-2:-1] = ["rtsp", "-rtsp_transport", "tcp"]
            async with run_tool(args):
                await wait_publishing(engine, "live/cam")
                assert rtsp.publishers
                video, audio, stderr = await _ffmpeg_reads(f"http://{HOST}:{http.port}/live/cam.flv")
                assert video >= 55 and audio >= 80, stderr
                async with open_whep_player(f"http://{HOST}:{http.port}/live/cam/whep") as player:
                    await player.wait_frames(10)
                    await player.wait_frames(20, "audio")
                playlist = "/live/cam/index.m3u8"
                status, body = 0, b""
                while status != 200 or body.count(b"#EXTINF") < 4 or b"#EXT-X-PART:" not in body:
                    status, _, body, _ = await media_playlist(http_get, http.port, playlist)
                    await trio.sleep(0.2)
                video, audio, stderr = await _ffmpeg_reads(f"http://{HOST}:{http.port}{playlist}")
    assert video >= 55 and audio >= 80, stderr
