"""The audio bridge with real clients: ffmpeg 8 publishes H.264 + Opus over Enhanced RTMP, and
Debian's ffmpeg 5.1 (which cannot decode Enhanced RTMP Opus) decodes audio over RTMP, HTTP-FLV
and HLS-TS: the bridge's AAC."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import trio

from arcly_trio import AppSpec, Engine, StreamKey
from arcly_trio.services import HlsService
from arcly_trio.services.audio_bridge import AudioBridge
from arcly_trio.workers.http import HttpServer
from arcly_trio.workers.rtmp import RtmpServer
from tests._tools import require_ffmpeg8, require_tool

pytestmark = pytest.mark.interop


async def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(timeout):
        return await trio.run_process(list(args), capture_stdout=True, capture_stderr=True, check=False)


@asynccontextmanager
async def publishing(ffmpeg: str, clip: Path, url: str) -> AsyncIterator[None]:
    args = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1",
            "-i", str(clip), "-c", "copy", "-f", "flv", url]  # fmt: skip
    process = await trio.lowlevel.open_process(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        process.kill()
        await process.wait()


def segment_uris(playlist: str) -> list[str]:
    return [line for line in playlist.splitlines() if line and not line.startswith("#")]


async def media_playlist(client: httpx.AsyncClient, url: str) -> tuple[str, str]:
    """The media playlist at ``url``, or the first one the multivariant playlist there names:
    (its URL, its text)."""
    text = (await client.get(url)).text
    if "#EXT-X-STREAM-INF" in text:
        url = str(httpx.URL(url).join(segment_uris(text)[0]))
        text = (await client.get(url)).text
    return url, text


async def new_segments(url: str, count: int) -> None:
    """Until the media playlist at ``url`` lists ``count`` segments it did not list when called
    (segments cut from now on: a player starting at the live edge reads only those)."""
    async with httpx.AsyncClient(timeout=5) as client:
        url, text = await media_playlist(client, url)
        before = set(segment_uris(text))
        while len([uri for uri in segment_uris((await client.get(url)).text) if uri not in before]) < count:
            await trio.sleep(0.1)


async def audio_frames(ffmpeg: str, url: str) -> tuple[int, str]:
    """How many audio frames ffmpeg decodes from ``url`` in 3 s (framemd5: a line per frame)."""
    result = await run(ffmpeg, "-hide_banner", "-nostdin", "-i", url, "-map", "0:a", "-t", "3", "-f", "framemd5", "-")
    lines = [line for line in result.stdout.decode().splitlines() if line and not line.startswith("#")]
    return len(lines), result.stderr.decode()


async def test_ffmpeg51_decodes_the_bridged_aac_of_an_opus_publish_over_rtmp_flv_and_hls_ts(tmp_path: Path) -> None:
    ffmpeg, ffmpeg8 = require_tool("ffmpeg"), require_ffmpeg8()
    clip = tmp_path / "opus.flv"
    made = await run(ffmpeg8, "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30",
                     "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "6", "-c:v", "libx264",
                     "-preset", "ultrafast", "-g", "30", "-pix_fmt", "yuv420p", "-c:a", "libopus", "-ac", "2",
                     "-f", "flv", str(clip), timeout=120)  # fmt: skip
    assert made.returncode == 0, made.stderr.decode()
    rtmp, http = RtmpServer("127.0.0.1", 0), HttpServer("127.0.0.1", 0)
    bridge = AudioBridge()
    builder = Engine.builder().service(HlsService(target_duration=1.0)).observer(bridge)
    builder.application(AppSpec("live", hls=True, hls_variant="ts")).protocol(rtmp).protocol(http)
    with trio.fail_after(150):
        async with builder.build() as engine, publishing(ffmpeg8, clip, f"rtmp://127.0.0.1:{rtmp.port}/live/opus"):
            key = StreamKey("live", "opus")
            while not engine.has_stream(key) or engine.stream(key).info.audio_codec != "opus":
                await trio.sleep(0.1)
            for url in (f"rtmp://127.0.0.1:{rtmp.port}/live/opus", f"http://127.0.0.1:{http.port}/live/opus.flv"):
                count, errors = await audio_frames(ffmpeg, url)
                assert count > 50 and "Audio: aac" in errors, errors
            assert bridge.running(key, "opus->aac")
            playlist = f"http://127.0.0.1:{http.port}/live/opus/index.m3u8"
            await new_segments(playlist, 3)  # ffmpeg starts 3 from the live edge: all cut with the bridged AAC
            count, errors = await audio_frames(ffmpeg, playlist)
            assert count > 50 and "Audio: aac" in errors, errors
            (status,) = bridge.stream_status(key)["audio_bridge"]
            assert status["direction"] == "opus->aac" and status["frames_out"] > 100 and status["skipped"] == 0
