"""The direct-write egress against real clients no one here wrote.

* Debian's ffmpeg 5.1 decodes a live ffmpeg stream over RTMP and HTTP-FLV (``-xerror``: any
  decoding error fails it) while 150 players next to it have stopped reading (RTMP and
  HTTP-FLV, small receive buffers): their partial writes and queues never corrupt anyone's
  framing, and the stalled ones are evicted past the lag budget.
* Headless Chromium plays WebSocket-FLV: its WebSocket takes the server's directly written
  frames (headers built once per batch), the FLV byte stream inside parses tag by tag
  (``PreviousTagSize`` checked), starting on a keyframe, and the close code is 1000 when the
  stream ends.

Servers run in-process on port 0; a ``trio.fail_after`` bounds every test; nothing asserts speed.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from arcly_trio import AppSpec, Engine
from arcly_trio.testing import CountingObserver
from arcly_trio.workers.http import HttpServer
from arcly_trio.workers.rtmp import RtmpServer
from tests._browser import blocking, browser
from tests._ffmpeg import Player, publisher, run_tool
from tests._rtmp import RawClient
from tests._serving import rtmp_url, wait_publishing
from tests._tools import require_tool

pytestmark = pytest.mark.interop


@contextlib.asynccontextmanager
async def servers(
    spec: AppSpec, observer: CountingObserver | None = None, write_timeout: float = 30
) -> AsyncIterator[tuple[Engine, RtmpServer, HttpServer]]:
    rtmp = RtmpServer("127.0.0.1", 0, max_pending_per_address=None, write_timeout=write_timeout)
    http = HttpServer("127.0.0.1", 0, max_pending_per_address=None, write_timeout=write_timeout)
    builder = Engine.builder().application(spec).protocol(rtmp).protocol(http)
    if observer is not None:
        builder.observer(observer)
    async with builder.build() as engine:
        yield engine, rtmp, http


def decoding_player(url: str) -> Any:
    """ffmpeg playing ``url``, failing on the first decoding error, one framemd5 line per frame."""
    return run_tool(
        [
            require_tool("ffmpeg"),
            "-hide_banner",
            "-nostdin",
            "-loglevel",
            "error",
            "-xerror",
            "-i",
            url,
            "-f",
            "framemd5",
            "-",
        ],
        Player,
    )


async def test_ffmpeg_decodes_rtmp_and_http_flv_next_to_150_stalled_players() -> None:
    observer = CountingObserver()
    spec = AppSpec("live", subscriber_queue=32, lag_budget=30)
    with trio.fail_after(60):
        async with servers(spec, observer, write_timeout=3) as (engine, rtmp, http):
            url = rtmp_url(rtmp.port, "live/cam")  # type: ignore[arg-type]
            async with publisher(url, gop=15) as pub:
                await wait_publishing(engine, "live/cam", video_frames=15)
                stalled: list[Any] = []
                for _ in range(100):
                    client = await RawClient.open(rtmp.port)  # type: ignore[arg-type]
                    client.stream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                    await client.connect("live", rtmp.port)  # type: ignore[arg-type]
                    client.session.play(1, "cam")
                    await client.flush()
                    stalled.append(client)
                for _ in range(50):
                    sock = await trio.open_tcp_stream("127.0.0.1", http.port)  # type: ignore[arg-type]
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                    await sock.send_all(b"GET /live/cam.flv HTTP/1.1\r\nhost: x\r\n\r\n")
                    stalled.append(sock)
                async with (
                    decoding_player(url) as over_rtmp,
                    decoding_player(f"http://127.0.0.1:{http.port}/live/cam.flv") as over_http,
                ):
                    await over_rtmp.wait_frames(video=150, audio=150)
                    await over_http.wait_frames(video=150, audio=150)
                    assert over_rtmp.running and over_http.running
                assert pub.running, pub.stderr()
                assert observer.counts["on_subscriber_evicted"] == 150
                for item in stalled:
                    await (item.aclose() if isinstance(item, RawClient) else trio.aclose_forcefully(item))


_PLAY_FLV = """
const done = arguments[arguments.length - 1];
const result = {tags: 0, video: 0, keyframes: 0, firstVideoKey: null, errors: [], close: null, bytes: 0};
window.flvResult = result;
const ws = new WebSocket(arguments[0]);
ws.binaryType = "arraybuffer";
let buf = new Uint8Array(0), header = false;
ws.onmessage = (event) => {
  const chunk = new Uint8Array(event.data);
  result.bytes += chunk.length;
  const merged = new Uint8Array(buf.length + chunk.length);
  merged.set(buf); merged.set(chunk, buf.length); buf = merged;
  let pos = 0;
  if (!header) {
    if (buf.length < 13) return;
    if (buf[0] !== 0x46 || buf[1] !== 0x4c || buf[2] !== 0x56) result.errors.push("no FLV signature");
    pos = 13; header = true;
  }
  while (buf.length - pos >= 11) {
    const type = buf[pos], size = (buf[pos + 1] << 16) | (buf[pos + 2] << 8) | buf[pos + 3];
    if (buf.length - pos < 15 + size) break;
    const end = pos + 11 + size;
    const previous = ((buf[end] << 24) | (buf[end + 1] << 16) | (buf[end + 2] << 8) | buf[end + 3]) >>> 0;
    if (previous !== 11 + size) result.errors.push("PreviousTagSize " + previous + " != " + (11 + size));
    if (type !== 8 && type !== 9 && type !== 18) result.errors.push("tag type " + type);
    result.tags++;
    if (type === 9 && buf[pos + 12] === 1) {  // AVC NALU packets (not the sequence header)
      const key = (buf[pos + 11] >> 4) === 1;
      if (result.firstVideoKey === null) result.firstVideoKey = key;
      result.video++; if (key) result.keyframes++;
    }
    pos = end + 4;
  }
  buf = buf.slice(pos);
};
ws.onclose = (event) => { result.close = event.code; };
ws.onopen = () => done(true);
ws.onerror = () => done(false);
"""


async def test_chromium_plays_websocket_flv_until_the_stream_ends() -> None:
    with trio.fail_after(90):
        async with servers(AppSpec("live")) as (engine, rtmp, http):
            url = rtmp_url(rtmp.port, "live/cam")  # type: ignore[arg-type]
            async with browser() as driver:
                async with publisher(url, gop=15, seconds=12):
                    await wait_publishing(engine, "live/cam", video_frames=20)
                    await blocking(driver.get, f"http://127.0.0.1:{http.port}/api/health")
                    opened = await blocking(
                        driver.execute_async_script, _PLAY_FLV, f"ws://127.0.0.1:{http.port}/live/cam.flv"
                    )
                    assert opened
                    for _ in range(600):
                        result = await blocking(driver.execute_script, "return window.flvResult;")
                        if result["video"] >= 120:
                            break
                        await trio.sleep(0.05)
                    assert result["video"] >= 120, result
                # The publisher has left: the stream ends, the WebSocket closes with 1000.
                for _ in range(400):
                    result = await blocking(driver.execute_script, "return window.flvResult;")
                    if result["close"] is not None:
                        break
                    await trio.sleep(0.05)
    assert result["errors"] == [], result["errors"][:5]
    assert result["firstVideoKey"] is True
    assert result["close"] == 1000
