"""DVR on the live HLS playlist with real players (issue 23).

* hls.js (pinned, from npm) in Debian's headless Chromium plays a live LL-HLS stream of an
  application with a 60 s DVR window, seeks 20 s back (after 30 s of stream), plays from there
  (``currentTime`` advances, frames are decoded) and returns to live (near the end of the
  ``seekable`` range); it reloads the playlist as delta updates (``_HLS_skip=YES``), as the
  playlist's ``CAN-SKIP-UNTIL`` allows.
* Debian's ffmpeg 5.1 reads the DVR playlist (80 s of stream: the 60 s window has slid) from
  its first segment (``-live_start_index 0``) and decodes frames from it.

The publisher is the demo clip looped, published in-process: its first 30 s at once, so the
window is long enough to seek back in without waiting for it, then in real time (ffmpeg 8's
``-readrate_initial_burst`` sends no burst with ``-c copy``). Servers run in-process on port 0; every wait is bounded by ``trio.fail_after``.
"""

from __future__ import annotations

import contextlib
import itertools
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import m3u8
import pytest
import trio

import arcly_trio.server
from arcly_trio import AppSpec, Engine
from arcly_trio.media import flv
from arcly_trio.protocols.http.router import HttpRequest
from arcly_trio.services import HlsService
from arcly_trio.workers.http import HttpServer
from tests._browser import blocking, browser
from tests._npm import HLS_JS, npm_file
from tests._tools import require_tool

pytestmark = pytest.mark.interop

DEMO = Path(arcly_trio.server.__file__).parent / "assets" / "demo.flv"
PLAYERS = Path(__file__).parent.parent / "data" / "players.html"
BURST = 30  # seconds of stream sent at once


@contextlib.asynccontextmanager
async def dvr_server(*, players: bool = False) -> AsyncIterator[tuple[Engine, int]]:
    """HTTP out: application ``dvr`` (LL-HLS, 2 s segments, a 60 s DVR window); the engine and
    the HTTP port. With ``players`` the test player page and hls.js are served under ``/test/``."""
    http = HttpServer("127.0.0.1", 0)
    if players:
        bodies = {"players.html": (PLAYERS.read_bytes(), "text/html; charset=utf-8"),
                  "hls.min.js": (npm_file(*HLS_JS).read_bytes(), "text/javascript")}  # fmt: skip

        async def serve_file(request: HttpRequest, exchange: Any) -> None:
            body, kind = bodies[request.path.rpartition("/")[2]]
            await exchange.respond(200, body, content_type=kind)

        for name in bodies:
            http.router.get(f"/test/{name}", serve_file)
    hls = HlsService(target_duration=2, window=4, capacity=16384)  # takes an 80 s burst without a drop
    builder = Engine.builder().service(hls).protocol(http)
    builder.application(AppSpec("dvr", hls=True, hls_variant="ll", dvr_window=60))
    async with builder.build() as engine:
        yield engine, http.port


@contextlib.asynccontextmanager
async def publishing(engine: Engine, burst: float = BURST) -> AsyncIterator[None]:
    """The demo clip looped into ``dvr/demo``: ``burst`` seconds at once, then in real time."""
    frames = flv.read_frames(DEMO.read_bytes())
    configs, media = [f for f in frames if f.config], [f for f in frames if not f.config]
    span = media[-1].dts - media[0].dts + 40

    async def run() -> None:
        async with engine.publish("dvr/demo") as publisher:
            for frame in configs:
                await publisher.send(frame)
            start = trio.current_time() - burst
            for loop in itertools.count():
                for frame in media:
                    dts = frame.dts + loop * span
                    await trio.sleep_until(start + dts / 1000)
                    await publisher.send(attrs.evolve(frame, dts=dts, pts=frame.pts + loop * span))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        yield
        nursery.cancel_scope.cancel()


async def get(port: int, path: str) -> tuple[int, bytes]:
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
            data = b""
            while chunk := await stream.receive_some(65536):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def window_of(port: int, seconds: float, sequence: int = 0) -> m3u8.M3U8:
    """The video playlist once it lists ``seconds`` of complete segments from ``sequence`` on."""
    with trio.fail_after(40):
        while True:
            status, body = await get(port, "/dvr/demo/video.m3u8")
            if status == 200:
                playlist = m3u8.loads(body.decode())
                listed = sum(s.duration for s in playlist.segments if s.uri)
                if listed >= seconds and playlist.media_sequence >= sequence:
                    return playlist
            await trio.sleep(0.25)


STATE = """const v = document.getElementById("v"), s = v.seekable;
return {time: v.currentTime, paused: v.paused, frames: v.getVideoPlaybackQuality().totalVideoFrames,
        start: s.length ? s.start(0) : null, end: s.length ? s.end(s.length - 1) : null,
        live: window.player.liveSyncPosition, fatal: window.report.fatal, errors: window.report.errors};"""


async def until(driver: Any, what: str, check: Any, timeout: float = 20) -> dict[str, Any]:
    """Poll the player's state until ``check(state)``; fail with ``what`` and the last state."""
    state: dict[str, Any] = {}
    with trio.move_on_after(timeout):
        while True:
            state = await blocking(driver.execute_script, STATE)
            assert state["fatal"] is None, state["errors"]
            if check(state):
                return state
            await trio.sleep(0.25)
    raise AssertionError(f"{what}: {state}")


async def test_hlsjs_seeks_back_20_s_in_the_dvr_window_plays_and_returns_to_live() -> None:
    async with dvr_server(players=True) as (engine, port), publishing(engine):
        await window_of(port, BURST - 4)
        async with browser() as driver:
            src = f"http://127.0.0.1:{port}/dvr/demo/index.m3u8"
            await blocking(driver.get, f"http://127.0.0.1:{port}/test/players.html?kind=hls&src={src}")
            playing = await until(driver, "never played", lambda s: s["time"] > 1 and not s["paused"])
            assert playing["end"] - playing["start"] >= BURST - 6, playing  # the window is seekable
            first = await until(driver, "never played on", lambda s: s["time"] >= playing["time"] + 1)
            # it reloads the long playlist as delta updates (CAN-SKIP-UNTIL: issue 26), and plays on
            reloads = await blocking(driver.execute_script, "return performance.getEntriesByType('resource')"
                                     ".map(e => e.name).filter(n => n.includes('/video.m3u8?'));")  # fmt: skip
            assert any("_HLS_skip=YES" in uri for uri in reloads), reloads[-3:]
            target = first["time"] - 20
            assert target >= first["start"], first
            await blocking(driver.execute_script, f"document.getElementById('v').currentTime = {target};")
            back = await until(driver, "never played from 20 s back",
                               lambda s: target + 2 <= s["time"] <= target + 8 and s["frames"] > first["frames"] + 30)  # fmt: skip
            assert back["end"] - back["time"] >= 15, back  # still far behind live
            await blocking(driver.execute_script, "const v = document.getElementById('v'); "
                           "v.currentTime = window.player.liveSyncPosition || v.seekable.end(v.seekable.length - 1) - 3;")  # fmt: skip
            live = await until(
                driver, "never returned to live", lambda s: s["end"] - s["time"] <= 8 and s["time"] > back["time"] + 10
            )
            await until(
                driver,
                "stopped playing at live",
                lambda s: s["time"] >= live["time"] + 1 and s["frames"] > live["frames"],
            )


async def test_ffmpeg51_reads_the_dvr_playlist_from_its_start() -> None:
    ffmpeg = require_tool("ffmpeg")
    async with dvr_server() as (engine, port), publishing(engine, burst=80):
        playlist = await window_of(port, 58, sequence=10)  # the 60 s window, slid past the stream's start
        first, last = (
            playlist.media_sequence,
            playlist.media_sequence + len([s for s in playlist.segments if s.uri]) - 1,
        )
        with trio.fail_after(60):
            result = await trio.run_process(
                [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "verbose", "-live_start_index", "0",
                 "-i", f"http://127.0.0.1:{port}/dvr/demo/index.m3u8", "-t", "4", "-f", "null", "-"],
                capture_stdout=True, capture_stderr=True, check=False)  # fmt: skip
    log = result.stderr.decode(errors="replace")
    assert result.returncode == 0, log[-2000:]
    opened = [int(n) for n in re.findall(r"Opening '[^']*/dvr/demo/[^'?]+-v-([0-9]+)\.m4s", log)]
    # the oldest listed segment first (the window may have slid by one since), not the live end
    assert opened and opened[0] - first in (0, 1) and opened[0] <= last - 20, (first, last, opened[:3])
    decoded = re.findall(r"frame=\s*([0-9]+)", log)
    assert decoded and int(decoded[-1]) >= 90, log[-1500:]  # 4 s of 30 fps video
    assert "error" not in log.lower().replace("error_recognition", ""), log[-1500:]
