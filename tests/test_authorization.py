"""One authorization path: every egress asks the engine, over every protocol.

An engine with a play token (``TokenAuthenticator(play_token=...)``), the RTMP and HTTP workers
and HLS. For each protocol a client without the token is refused the way that protocol says no,
and one with it plays: RTMP (``NetStream.Play.Failed``), HTTP-FLV and WebSocket-FLV (``401``
without a token, with ``WWW-Authenticate``; ``403`` with a wrong one), HLS playlists and
segments (the same; segment URIs in a playlist carry the token on), and the
WebSocket frame API (close code 4403). Each refusal also reaches the engine's throttle.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from arcly_trio import AppSpec, Engine, TokenAuthenticator
from arcly_trio.clients.frames import FramesRefused, open_frames_subscription
from arcly_trio.core.frame import Frame
from arcly_trio.kernel.throttle import AuthThrottle
from arcly_trio.services import HlsService
from arcly_trio.workers.http import HttpServer
from arcly_trio.workers.rtmp import RtmpServer
from tests._rtmp import RawClient

TOKEN = "p1ay"


@asynccontextmanager
async def guarded(demo_frames: list[Frame]) -> AsyncIterator[tuple[Engine, int, int]]:
    rtmp, http = RtmpServer("127.0.0.1", 0), HttpServer("127.0.0.1", 0)
    engine = (Engine.builder().application(AppSpec("live", hls=True)).service(HlsService(variant="ts", target_duration=1))
              .authenticator(TokenAuthenticator(play_token=TOKEN))
              .auth_throttle(AuthThrottle(base_delay=0.001, max_delay=0.001))
              .protocol(rtmp).protocol(http).build())
    async with engine, engine.publish("live/cam") as publisher:
        for frame in demo_frames[:200]:  # more than two 1 s segments
            await publisher.send(frame)
        with trio.fail_after(5):
            while not engine.application("live").streams()[0].gop.gop_frames:
                await trio.sleep(0.01)
        yield engine, rtmp.port, http.port  # type: ignore[misc]


async def test_rtmp_play_needs_the_token(demo_frames) -> None:  # type: ignore[no-untyped-def]
    async with guarded(demo_frames) as (engine, rtmp, http):
        for name, code in (("cam", "NetStream.Play.Failed"), (f"cam?token={TOKEN}", "NetStream.Play.Reset")):
            client = await RawClient.open(rtmp)
            await client.connect("live", rtmp)
            stream_id = await client.create_stream()
            client.session.play(stream_id, name)
            await client.flush()
            with trio.fail_after(5):
                assert (await client.command()).info["code"] == code
            await client.aclose()
        assert engine.auth_throttle.refusals == 1


async def test_http_flv_and_ws_flv_need_the_token(demo_frames, http_get) -> None:  # type: ignore[no-untyped-def]
    async with guarded(demo_frames) as (engine, rtmp, http):
        status, headers, body = await http_get(http, "/live/cam.flv")
        assert status == 401 and b"refused: no token" in body and headers["www-authenticate"].startswith("Bearer")
        status, _, body = await http_get(http, "/live/cam.flv?token=nope")
        assert status == 403 and b"refused: wrong token" in body
        status, _, _ = await http_get(http, f"/live/cam.flv?token={TOKEN}", method="HEAD")
        assert status == 200
        ws = [("upgrade", "websocket"), ("connection", "Upgrade"), ("sec-websocket-version", "13"),
              ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")]
        status, _, _ = await http_get(http, "/live/cam.flv", headers=ws)
        assert status == 401
        assert engine.auth_throttle.refusals == 3


async def test_hls_needs_the_token_and_hands_it_on_to_segments(demo_frames, http_get) -> None:  # type: ignore[no-untyped-def]
    async with guarded(demo_frames) as (engine, rtmp, http):
        with trio.fail_after(10):
            while True:
                status, _, playlist = await http_get(http, f"/live/cam/index.m3u8?token={TOKEN}")
                if status == 200:
                    break
                await trio.sleep(0.05)
        segments = [line for line in playlist.decode().splitlines() if line and not line.startswith("#")]
        assert segments and all(line.endswith(f"?token={TOKEN}") for line in segments)
        status, _, data = await http_get(http, f"/live/cam/{segments[0]}")
        assert status == 200 and data[:1] == b"\x47"  # MPEG-TS sync byte
        bare = segments[0].split("?")[0]
        assert (await http_get(http, "/live/cam/index.m3u8"))[0] == 401
        assert (await http_get(http, f"/live/cam/{bare}"))[0] == 401
        assert (await http_get(http, f"/live/cam/{bare}?token=nope"))[0] == 403
        assert engine.auth_throttle.refusals == 3


async def test_the_frame_api_needs_the_token(demo_frames) -> None:  # type: ignore[no-untyped-def]
    async with guarded(demo_frames) as (engine, rtmp, http):
        with pytest.raises(FramesRefused) as refused, trio.fail_after(5):
            async with open_frames_subscription(f"ws://127.0.0.1:{http}/live/cam/frames"):
                pass
        assert refused.value.code == 4403
        with trio.fail_after(5):
            async with open_frames_subscription(f"ws://127.0.0.1:{http}/live/cam/frames?token={TOKEN}") as sub:
                async for frame in sub:
                    assert frame.config or frame.keyframe
                    break
        assert engine.auth_throttle.refusals == 1
