"""SRT with real clients (ffmpeg 5.1 with libsrt): play an RTMP-published stream over SRT;
publish over SRT and play it over RTMP; refusals with a clear reason."""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from arcly_trio import AppSpec
from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.kernel.auth import TokenAuthenticator
from arcly_trio.kernel.engine import Engine
from arcly_trio.media.mpegts import TsMuxer
from arcly_trio.protocols.srt import handshake as hs
from arcly_trio.protocols.srt.connection import SrtConnection
from arcly_trio.protocols.srt.packet import ControlPacket, ControlType, parse
from arcly_trio.services.hls import HlsService
from arcly_trio.workers.http.server import HttpServer
from arcly_trio.workers.rtmp import RtmpServer
from arcly_trio.workers.srt import SrtServer
from tests._ffmpeg import Player, player, probe_streams, publish_args, publisher, run_tool
from tests._hls import media_playlist
from tests._net import free_port
from tests._serving import HOST, find_stream, rtmp_url, wait_publishing, wait_until
from tests._tools import require_ffmpeg8, require_tool

pytestmark = pytest.mark.interop


@asynccontextmanager
async def srt_engine(authenticator: Any = None, **options: Any) -> AsyncIterator[tuple[Engine, int, int]]:
    """An engine with ``live``, RTMP on 127.0.0.1:0 and SRT on UDP 127.0.0.1:0."""
    rtmp = RtmpServer(HOST, 0)
    srt = SrtServer(HOST, 0, **options)
    builder = Engine.builder().application("live").protocol(rtmp).protocol(srt)
    if authenticator is not None:
        builder.authenticator(authenticator)
    async with builder.build() as engine:
        assert rtmp.port is not None and srt.port_number is not None
        yield engine, rtmp.port, srt.port_number


def srt_url(port: int, streamid: str, *extra: str) -> str:
    return f"srt://{HOST}:{port}?streamid={streamid}" + "".join(f"&{e}" for e in extra)


def srt_play_args(url: str) -> list[str]:
    return [
        require_tool("ffmpeg"),
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        "-i",
        url,
        "-flush_packets",
        "1",
        "-f",
        "framemd5",
        "-",
    ]


async def test_ffmpeg_plays_over_srt_an_rtmp_published_stream() -> None:
    with trio.fail_after(30):
        async with srt_engine() as (engine, rtmp_port, srt_port), publisher(rtmp_url(rtmp_port, "live/cam")):
            await wait_publishing(engine, "live/cam")
            async with run_tool(srt_play_args(srt_url(srt_port, "read:live/cam")), Player) as player:
                await player.wait_frames(30, 30)


def srt_publish_args(url: str, seconds: float | None = None) -> list[str]:
    """ffmpeg publishing the usual test pattern and tone as MPEG-TS over SRT."""
    args = publish_args(url, seconds=seconds)
    args[args.index("flv")] = "mpegts"
    return args


@pytest.mark.parametrize("streamid", ["publish:live/cam", "#!::r=live/cam,m=publish"])
async def test_ffmpeg_publishes_over_srt_and_rtmp_plays_it(streamid: str) -> None:
    with trio.fail_after(30):
        async with srt_engine() as (engine, rtmp_port, srt_port):
            async with run_tool(srt_publish_args(srt_url(srt_port, streamid))):
                await wait_publishing(engine, "live/cam")
                async with player(rtmp_url(rtmp_port, "live/cam")) as watcher:
                    await watcher.wait_frames(30, 30)


def srt_refusals(caplog: pytest.LogCaptureFixture, reason: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "arcly_trio.srt" and reason in r.getMessage()]


async def test_tokens_publish_and_play_credentials_apart(caplog: pytest.LogCaptureFixture) -> None:
    """The streamid's token goes through the authorizer: the publish token publishes, the play
    token plays, the play token never publishes (refused with UNAUTHORIZED 1401 and a log line)."""
    caplog.set_level(logging.INFO, "arcly_trio.srt")
    auth = TokenAuthenticator(publish_token="pub-secret", play_token="view-secret")
    with trio.fail_after(40):
        async with srt_engine(authenticator=auth) as (engine, _, srt_port):
            refused = await run_to_end(srt_publish_args(srt_url(srt_port, "#!::r=live/cam,m=publish,s=view-secret"), 3))
            assert refused != 0
            assert srt_refusals(caplog, "UNAUTHORIZED 1401")
            async with run_tool(srt_publish_args(srt_url(srt_port, "#!::r=live/cam,m=publish,s=pub-secret"))):
                await wait_publishing(engine, "live/cam")
                url = srt_url(srt_port, "#!::r=live/cam,m=request,s=view-secret")
                async with run_tool(srt_play_args(url), Player) as watcher:
                    await watcher.wait_frames(30, 30)


async def test_passphrase_right_one_works_both_ways_wrong_one_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "arcly_trio.srt")
    secret = "correct-horse-battery"
    with trio.fail_after(40):
        async with srt_engine(passphrase=secret) as (engine, _, srt_port):
            wrong = srt_url(srt_port, "publish:live/cam", "passphrase=wrong-passphrase", "pbkeylen=16")
            assert await run_to_end(srt_publish_args(wrong, 3)) != 0
            assert srt_refusals(caplog, "BADSECRET")
            clear = srt_url(srt_port, "publish:live/cam")
            assert await run_to_end(srt_publish_args(clear, 3)) != 0
            assert srt_refusals(caplog, "UNSECURE")
            right = srt_url(srt_port, "publish:live/cam", f"passphrase={secret}", "pbkeylen=32")
            async with run_tool(srt_publish_args(right)):
                await wait_publishing(engine, "live/cam")
                play = srt_url(srt_port, "read:live/cam", f"passphrase={secret}", "pbkeylen=16")
                async with run_tool(srt_play_args(play), Player) as watcher:
                    await watcher.wait_frames(30, 30)


refused_stderr: list[str] = []


async def run_to_end(args: list[str]) -> int:
    """Run a tool that is expected to stop by itself (refused); its exit code."""
    async with run_tool(args) as tool:
        code = await tool.wait()
        refused_stderr.append(tool.stderr())
        return code


class LossyRelay:
    """A UDP relay between one caller and the server that drops ``loss`` of the packets each
    way (a seeded random, so a run is repeatable), handshakes included."""

    def __init__(self, server_port: int, loss: float, seed: int = 24) -> None:
        self.server = (HOST, server_port)
        self.loss = loss
        self.random = random.Random(seed)
        self.outer = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        self.inner = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        self.client: Any = None
        self.dropped = 0
        self.passed = 0

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        await self.outer.bind((HOST, 0))
        await self.inner.bind((HOST, 0))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._pump_in)
            nursery.start_soon(self._pump_out)
            task_status.started(self.outer.getsockname()[1])

    def _keep(self) -> bool:
        if self.random.random() < self.loss:
            self.dropped += 1
            return False
        self.passed += 1
        return True

    async def _pump_in(self) -> None:
        while True:
            data, address = await self.outer.recvfrom(2048)
            self.client = address
            if self._keep():
                await self.inner.sendto(data, self.server)

    async def _pump_out(self) -> None:
        while True:
            data, _ = await self.inner.recvfrom(2048)
            if self.client is not None and self._keep():
                await self.outer.sendto(data, self.client)


async def test_five_percent_loss_with_200_ms_latency_decodes_without_error() -> None:
    with trio.fail_after(40):
        async with srt_engine(latency_ms=200) as (engine, rtmp_port, srt_port), trio.open_nursery() as nursery:
            relay = LossyRelay(srt_port, 0.05)
            relay_port = await nursery.start(relay.run)
            url = srt_url(relay_port, "publish:live/cam", "latency=200000")
            async with run_tool(srt_publish_args(url)) as sender:
                await wait_publishing(engine, "live/cam")
                async with player(rtmp_url(rtmp_port, "live/cam")) as watcher:
                    await watcher.wait_frames(90, 90)
                    assert watcher.running and not watcher.stderr().strip(), watcher.stderr()
                server = next(w for w in engine.workers if isinstance(w, SrtServer))
                (session,) = server.sessions.values()
                stats = session.document()
                assert (
                    relay.dropped >= 5
                    and stats["lost"] > 0
                    and stats["retransmits_received"] > 0
                    and stats["dropped"] == 0
                ), (relay.dropped, stats)
                assert sender.running
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("path", ["live/cam.flv", "live/cam/index.m3u8"])
async def test_http_flv_and_ll_hls_play_an_srt_publisher(path: str, http_get: Any) -> None:
    http = HttpServer(HOST, 0)
    srt = SrtServer(HOST, 0)
    builder = Engine.builder().application(AppSpec("live", hls=True)).protocol(http).protocol(srt)
    builder.service(HlsService(variant="ll"))
    with trio.fail_after(40):
        async with builder.build() as engine:
            async with run_tool(srt_publish_args(srt_url(srt.port_number or 0, "publish:live/cam"))):
                await wait_publishing(engine, "live/cam")
                url = f"http://{HOST}:{http.port}/{path}"
                if path.endswith(".flv"):
                    async with player(url) as watcher:
                        await watcher.wait_frames(30, 30)
                else:
                    while (await media_playlist(http_get, http.port, f"/{path}"))[0] != 200:
                        await trio.sleep(0.1)
                    streams = await probe_streams(url)
                    assert [s["codec_name"] for s in streams] == ["aac", "h264"]


def gstreamer_args(url: str, streamid: str) -> list[str]:
    """GStreamer's srtsink publishing a live H.264 (openh264) + AAC test source as MPEG-TS."""
    return [
        require_tool("gst-launch-1.0"),
        "-q",
        "videotestsrc",
        "is-live=true",
        "!",
        "video/x-raw,width=320,height=240,framerate=30/1",
        "!",
        "openh264enc",
        "!",
        "h264parse",
        "config-interval=-1",
        "!",
        "mpegtsmux",
        "name=mux",
        "!",
        "srtsink",
        f"uri={url}",
        f'streamid="{streamid}"',  # quoted: gst-launch reads ! as a link
        "audiotestsrc",
        "is-live=true",
        "!",
        "audioconvert",
        "!",
        "avenc_aac",
        "!",
        "aacparse",
        "!",
        "mux.",
    ]


async def test_gstreamer_srtsink_publishes() -> None:
    """GStreamer's srtsink (one 188-byte TS packet per SRT packet, the #!:: streamid quoted for
    gst-launch) publishes into the kernel. Its audio is asserted: the openh264 video of this
    pipeline carries no SPS/PPS once live (ffmpeg cannot decode it either; x264enc is not
    installed here)."""
    with trio.fail_after(30):
        async with srt_engine() as (engine, _, srt_port):
            async with run_tool(gstreamer_args(f"srt://{HOST}:{srt_port}", "#!::r=live/gst,m=publish")):

                def carried() -> bool:
                    stream = find_stream(engine, "live/gst")
                    return stream is not None and stream.stats().audio_frames_total >= 30

                await wait_until(carried)
                stream = find_stream(engine, "live/gst")
                assert stream is not None and stream.info.protocol == "srt" and stream.info.audio_codec == "aac"


async def test_ffmpeg8_publishes_over_srt() -> None:
    with trio.fail_after(30):
        async with srt_engine() as (engine, rtmp_port, srt_port):
            args = srt_publish_args(srt_url(srt_port, "publish:live/cam8"))
            args[0] = require_ffmpeg8()
            async with run_tool(args):
                await wait_publishing(engine, "live/cam8")
                async with player(rtmp_url(rtmp_port, "live/cam8")) as watcher:
                    await watcher.wait_frames(30, 30)


async def test_hevc_over_srt_both_ways() -> None:
    """ffmpeg publishes HEVC + AAC over SRT, and ffmpeg plays it back over SRT (the TS demuxer's
    hvcC, then the TS muxer's HEVC)."""
    with trio.fail_after(40):
        async with srt_engine() as (engine, _, srt_port):
            args = srt_publish_args(srt_url(srt_port, "publish:live/hevc"))
            args[args.index("libx264")] = "libx265"
            args[args.index("-tune") : args.index("-tune") + 2] = ["-x265-params", "log-level=error"]
            async with run_tool(args):
                await wait_publishing(engine, "live/hevc")
                stream = find_stream(engine, "live/hevc")
                assert stream is not None and stream.info.video_codec == "hevc"
                async with run_tool(srt_play_args(srt_url(srt_port, "read:live/hevc")), Player) as watcher:
                    await watcher.wait_frames(30, 30)


async def test_our_caller_pushes_to_a_libsrt_listener(demo_frames: list[Frame]) -> None:
    """The core's caller handshake and send side against libsrt: ffmpeg listens, our caller
    pushes the demo clip as MPEG-TS, ffmpeg decodes it (and its ACKs get ACKACKs)."""
    port = free_port()
    url = f"srt://{HOST}:{port}?mode=listener&latency=200000"
    with trio.fail_after(30):
        async with run_tool(srt_play_args(url), Player) as watcher, trio.open_nursery() as nursery:
            sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
            await sock.bind((HOST, 0))
            caller = hs.Caller("live/cam", latency_ms=200)
            answer: Any = None
            while answer is None:  # ffmpeg may not listen yet: resend every 250 ms, as libsrt does
                await sock.sendto(caller.induction(), (HOST, port))
                with trio.move_on_after(0.25):
                    answer = parse((await sock.recvfrom(2048))[0])
            await sock.sendto(caller.conclusion(answer), (HOST, port))
            while True:
                packet = parse((await sock.recvfrom(2048))[0])
                if isinstance(packet, ControlPacket) and packet.type == ControlType.HANDSHAKE:
                    connected = caller.concluded(packet)
                    break
            now = trio.current_time()
            connection = SrtConnection(
                our_id=caller.socket_id,
                peer_id=connected.peer_socket_id,
                isn=connected.isn,
                now=now,
                peer_timestamp=connected.timestamp,
                recv_latency=connected.recv_latency_ms / 1000,
                send_latency=connected.send_latency_ms / 1000,
            )

            async def flush() -> None:
                out, connection.outgoing = connection.outgoing, []
                for data in out:
                    await sock.sendto(data, (HOST, port))

            async def receive() -> None:
                while True:
                    data = (await sock.recvfrom(2048))[0]
                    connection.receive(parse(data), trio.current_time())
                    await flush()

            nursery.start_soon(receive)
            configs = [f for f in demo_frames if f.config]
            muxer = TsMuxer(
                *(next(f.codec for f in configs if f.kind is kind) for kind in (FrameKind.VIDEO, FrameKind.AUDIO))
            )
            for frame in configs:
                muxer.mux(frame)
            start = trio.current_time()
            pending = b""
            for frame in (f for f in demo_frames if not f.config):
                await trio.sleep_until(start + frame.dts / 1000)
                pending += muxer.mux(frame, with_tables=not pending and frame.keyframe)
                while len(pending) >= 1316:
                    connection.send(pending[:1316], trio.current_time())
                    pending = pending[1316:]
                connection.tick(trio.current_time())
                await flush()
                if watcher.video >= 30 and watcher.audio >= 30:
                    break
            assert watcher.video >= 30 and watcher.audio >= 30, watcher.stderr()
            assert connection.stats.packets_sent > 0 and connection.peer_rtt is not None  # ACKs came
            nursery.cancel_scope.cancel()
