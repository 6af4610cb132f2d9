"""ffmpeg sends MPEG-TS over UDP (``-re -f mpegts udp://...?pkt_size=1316``: 7 packets a
datagram) to the UDP ingest; ffmpeg players decode it over RTMP, HTTP-FLV and LL-HLS."""

from __future__ import annotations

import socket

import pytest
import trio

from arcly_trio import AppSpec
from arcly_trio.core.keys import StreamKey
from arcly_trio.kernel.engine import Engine
from arcly_trio.services import HlsService
from arcly_trio.workers.http import HttpServer
from arcly_trio.workers.rtmp import RtmpServer
from arcly_trio.workers.udpts import UdpTsIngest, UdpTsSource
from tests._ffmpeg import player, run_tool
from tests._serving import wait_publishing
from tests._tools import require_tool

pytestmark = pytest.mark.interop


def udp_sender(port: int, seconds: int, host: str = "127.0.0.1", options: str = "") -> list[str]:
    return [
        require_tool("ffmpeg"), "-hide_banner", "-nostdin", "-loglevel", "error", "-re",
        "-f", "lavfi", "-i", f"testsrc=size=320x240:rate=25:duration={seconds}",
        "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=44100:duration={seconds}",
        "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-b:a", "64k",
        "-f", "mpegts", f"udp://{host}:{port}?pkt_size=1316{options}",
    ]  # fmt: skip


async def test_ffmpeg_over_udp_plays_over_rtmp_http_flv_and_ll_hls() -> None:
    ingest = UdpTsIngest(UdpTsSource(StreamKey("live", "cam"), "127.0.0.1", 0), idle=2.0)
    rtmp, http = RtmpServer("127.0.0.1", 0), HttpServer("127.0.0.1", 0)
    engine = (
        Engine.builder()
        .application(AppSpec("live", hls=True, hls_variant="ll"))
        .service(HlsService())
        .protocol(rtmp)
        .protocol(http)
        .protocol(ingest)
        .build()
    )
    with trio.fail_after(60):
        async with engine, run_tool(udp_sender(ingest.port or 0, 8)) as sender:
            await wait_publishing(engine, "live/cam", video_frames=5)
            urls = (
                f"rtmp://127.0.0.1:{rtmp.port}/live/cam",
                f"http://127.0.0.1:{http.port}/live/cam.flv",
                f"http://127.0.0.1:{http.port}/live/cam/index.m3u8",
            )
            async with player(urls[0]) as rtmp_player, player(urls[1]) as flv_player, player(urls[2]) as hls_player:
                for each in (rtmp_player, flv_player, hls_player):
                    await each.wait_frames(video=25, audio=25)
            assert sender.running or await sender.wait() == 0, sender.stderr()
            session = ingest.session
            assert session is not None
            stats = session.demuxer.stats
            assert (stats.video, stats.audio) == ("h264", "aac")
            assert stats.continuity_errors == stats.resyncs == stats.malformed == 0
            assert ingest.foreign == 0


async def test_ffmpeg_to_a_multicast_group_on_loopback_plays_over_rtmp() -> None:
    # ffmpeg 5.1 sends a group's datagrams out of the interface of its localaddr (measured).
    group = "239.255.43.9"
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.setsockopt(
            socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, socket.inet_aton(group) + socket.inet_aton("127.0.0.1")
        )
    except OSError as exc:  # pragma: no cover - depends on the sandbox
        pytest.skip(f"this machine refuses a multicast join on loopback: {exc}")
    finally:
        probe.close()
    ingest = UdpTsIngest(UdpTsSource(StreamKey("live", "cam"), group, 0, "127.0.0.1"), idle=2.0)
    rtmp = RtmpServer("127.0.0.1", 0)
    engine = Engine.builder().application("live").protocol(rtmp).protocol(ingest).build()
    with trio.fail_after(60):
        options = "&localaddr=127.0.0.1&ttl=1"
        async with engine, run_tool(udp_sender(ingest.port or 0, 5, group, options)):
            await wait_publishing(engine, "live/cam", video_frames=5)
            async with player(f"rtmp://127.0.0.1:{rtmp.port}/live/cam") as rtmp_player:
                await rtmp_player.wait_frames(video=25, audio=25)
