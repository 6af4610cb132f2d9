"""The RTMP client and the relays against servers and clients no one here wrote: nginx-rtmp
(Debian's ``libnginx-mod-rtmp``, started by the test) and ffmpeg (as a player, a publisher, and
as a listening RTMP server with ``-listen 1``).

* The client publishes the demo clip to nginx-rtmp and to ffmpeg's own server: ffprobe and
  ffmpeg decode H.264 and AAC from there. The client plays what ffmpeg publishes to nginx-rtmp
  and what ffmpeg serves itself.
* Push: a stream published to arcly-trio (by ffmpeg) is pushed to nginx-rtmp; ffprobe plays it
  from nginx.
* Pull: ffmpeg publishes to nginx-rtmp; a player of arcly-trio (ffmpeg) gets it pulled from
  nginx, decodes it, and the pulled stream is an ordinary stream (HTTP-FLV plays it too).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio

from arcly_trio import AppSpec, Engine, StreamKey
from arcly_trio.clients import open_rtmp_player, open_rtmp_publisher
from arcly_trio.core.errors import ConnectionLost
from arcly_trio.relay import PullSource, PushService
from arcly_trio.workers.http import HttpServer
from arcly_trio.workers.rtmp import RtmpServer
from tests._ffmpeg import ffprobe_packets, player, probe_streams, publish_args, publisher, run_tool
from tests._net import free_port
from tests._peers import nginx_rtmp
from tests._tools import require_tool

pytestmark = pytest.mark.interop

HOST = "127.0.0.1"


async def codec_names(url: str) -> list[str]:
    """The codec names ffprobe finds in ``url``, sorted (live: reads a few seconds)."""
    return sorted(stream["codec_name"] for stream in await probe_streams(url, "-rw_timeout", "10000000"))


async def paced(publisher_: object, frames: list, seconds: float = 30.0) -> None:  # type: ignore[type-arg]
    """Send the demo frames in real time, looping with shifted timestamps, for ``seconds``."""
    start = trio.current_time()
    offset = 0
    span = frames[-1].dts + 40
    while trio.current_time() - start < seconds:
        for frame in frames:
            if offset and frame.config:
                continue
            shifted = frame.shifted(offset) if offset else frame
            wait = start + shifted.dts / 1000 - trio.current_time()
            if wait > 0:
                await trio.sleep(wait)
            await publisher_.send(shifted)  # type: ignore[attr-defined]
        offset += span


async def test_the_client_publishes_to_nginx_rtmp_and_ffprobe_decodes_it(demo_frames: list) -> None:  # type: ignore[type-arg]
    with trio.fail_after(40):
        async with nginx_rtmp() as port, trio.open_nursery() as nursery:
            url = f"rtmp://{HOST}:{port}/live/fromclient"
            async with open_rtmp_publisher(url) as pub:
                assert pub.ended is None
                nursery.start_soon(paced, pub, demo_frames)
                assert await codec_names(url) == ["aac", "h264"]
                packets = await ffprobe_packets(url, 10)
                assert packets and "K" in packets[0][1]
                nursery.cancel_scope.cancel()


async def test_the_client_plays_what_ffmpeg_publishes_to_nginx_rtmp() -> None:
    with trio.fail_after(40):
        async with nginx_rtmp() as port:
            url = f"rtmp://{HOST}:{port}/live/fromffmpeg"
            async with publisher(url):
                await trio.sleep(1)
                async with open_rtmp_player(url) as play:
                    frames = []
                    async for frame in play:
                        frames.append(frame)
                        if sum(1 for f in frames if f.kind.value == "video" and not f.config) >= 45:
                            break
                codecs = {(f.kind.value, f.codec) for f in frames}
                assert {("video", "h264"), ("audio", "aac")} <= codecs
                assert any(f.config and f.kind.value == "video" for f in frames)
                media = [f for f in frames if f.kind.value == "video" and not f.config]
                assert media[0].keyframe  # nginx-rtmp waits for a keyframe (wait_key)


async def test_the_client_publishes_to_ffmpegs_own_rtmp_server(demo_frames: list) -> None:  # type: ignore[type-arg]
    """ffprobe, as a one-client RTMP server, reads what the client publishes and then closes
    the connection: for the publisher that is the end of the publish (``send`` raises
    ``ConnectionLost``), which the test waits for, not ffprobe's exit (the socket may close
    before the process is reaped, so a test that waits for the exit races the publisher)."""
    port = free_port()
    url = f"rtmp://{HOST}:{port}/live/listen"
    args = [
        require_tool("ffprobe"),
        "-v",
        "error",
        "-listen",
        "1",
        "-show_entries",
        "stream=codec_name",
        "-of",
        "json",
        url,
    ]

    async def publish_until_ffprobe_hangs_up(pub: Any) -> None:
        try:
            await paced(pub, demo_frames, 8.0)
        except ConnectionLost:
            pass  # ffprobe has read enough: the end this test waits for

    with trio.fail_after(40):
        async with run_tool(args) as probe:
            for _ in range(100):  # ffprobe is listening once it accepts
                try:
                    async with open_rtmp_publisher(url, timeout=5) as pub:
                        await publish_until_ffprobe_hangs_up(pub)
                    break
                except ConnectionLost:  # not listening yet (ConnectionLost only comes from opening)
                    await trio.sleep(0.1)
            else:
                raise AssertionError("ffprobe never accepted the publisher")
            await probe.wait()
            assert probe.returncode == 0, probe.stderr()
            streams = sorted(s["codec_name"] for s in json.loads("\n".join(probe.lines))["streams"])
            assert streams == ["aac", "h264"]


async def test_the_client_plays_from_ffmpegs_own_rtmp_server() -> None:
    port = free_port()
    url = f"rtmp://{HOST}:{port}/live/served"
    # ffmpeg as an RTMP server: the usual test publisher, listening instead of connecting.
    args = [*publish_args(url, seconds=20)[:-1], "-listen", "1", url]
    with trio.fail_after(40):
        async with run_tool(args):
            for _ in range(100):
                try:
                    async with open_rtmp_player(url, timeout=5) as play:
                        frames = []
                        async for frame in play:
                            frames.append(frame)
                            if len(frames) > 60:
                                break
                    break
                except ConnectionLost:  # not listening yet (refused, or closed during the handshake)
                    await trio.sleep(0.1)
            else:
                raise AssertionError("ffmpeg's RTMP server never accepted a player")
            codecs = {(f.kind.value, f.codec) for f in frames}
            assert {("video", "h264"), ("audio", "aac")} <= codecs


async def test_push_to_nginx_rtmp_then_ffprobe_plays_it_from_nginx() -> None:
    with trio.fail_after(60):
        async with nginx_rtmp() as nginx_port:
            push = PushService([f"rtmp://{HOST}:{nginx_port}/live/{{stream}}"])
            rtmp = RtmpServer(HOST, 0)
            engine = Engine.builder().application(AppSpec("live")).protocol(rtmp).service(push).build()
            async with engine:
                async with publisher(f"rtmp://{HOST}:{rtmp.port}/live/restream"):
                    nginx_url = f"rtmp://{HOST}:{nginx_port}/live/restream"
                    with trio.fail_after(20):
                        while not push.stream_status(StreamKey("live", "restream")).get("push", [{}])[0].get("frames"):
                            await trio.sleep(0.1)
                    assert await codec_names(nginx_url) == ["aac", "h264"]
                    async with player(nginx_url) as play:
                        await play.wait_frames(video=30, audio=30)
                    link = push.stream_status(StreamKey("live", "restream"))["push"][0]
                    assert link["state"] == "connected" and link["bytes"] > 100_000 and link["retries"] == 0


async def test_pull_from_nginx_rtmp_serves_rtmp_and_http_flv_players() -> None:
    with trio.fail_after(60):
        async with nginx_rtmp() as nginx_port:
            pull = PullSource({None: f"rtmp://{HOST}:{nginx_port}/{{app}}/{{stream}}"}, idle=2)
            rtmp = RtmpServer(HOST, 0)
            http = HttpServer(HOST, 0)
            engine = Engine.builder().application(AppSpec("live")).protocol(rtmp).protocol(http).source(pull).build()
            async with engine:
                async with publisher(f"rtmp://{HOST}:{nginx_port}/live/upstream"):
                    await trio.sleep(1)
                    async with player(f"rtmp://{HOST}:{rtmp.port}/live/upstream") as play:
                        await play.wait_frames(video=45, audio=45)
                        assert play.dimensions in (None, "320x240")
                        # The pulled stream is an ordinary stream: HTTP-FLV plays it too.
                        async with player(f"http://{HOST}:{http.port}/live/upstream.flv") as flv_play:
                            await flv_play.wait_frames(video=30, audio=30)
                        assert engine.sourcing.started_total == 1
                        stream = engine.stream("live/upstream")
                        assert stream.info.protocol == "pull"
                        assert stream.info.video_codec == "h264" and stream.info.width == 320
                    # Every viewer gone: the pull stops after its idle period.
                    with trio.fail_after(10):
                        while engine.has_stream(StreamKey("live", "upstream")):
                            await trio.sleep(0.1)
