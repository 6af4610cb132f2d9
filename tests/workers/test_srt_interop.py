"""SRT with real clients (ffmpeg 5.1 with libsrt): play an RTMP-published stream over SRT;
publish over SRT and play it over RTMP; refusals with a clear reason."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from arcly_trio.kernel.engine import Engine
from arcly_trio.workers.rtmp import RtmpServer
from arcly_trio.workers.srt import SrtServer
from tests._ffmpeg import Player, player, publish_args, publisher, run_tool
from tests._serving import HOST, rtmp_url, wait_publishing
from tests._tools import require_tool

pytestmark = pytest.mark.interop


@asynccontextmanager
async def srt_engine(**options: Any) -> AsyncIterator[tuple[Engine, int, int]]:
    """An engine with ``live``, RTMP on 127.0.0.1:0 and SRT on UDP 127.0.0.1:0."""
    rtmp = RtmpServer(HOST, 0)
    srt = SrtServer(HOST, 0, **options)
    async with Engine.builder().application("live").protocol(rtmp).protocol(srt).build() as engine:
        assert rtmp.port is not None and srt.port_number is not None
        yield engine, rtmp.port, srt.port_number


def srt_url(port: int, streamid: str, *extra: str) -> str:
    return f"srt://{HOST}:{port}?streamid={streamid}" + "".join(f"&{e}" for e in extra)


def srt_play_args(url: str) -> list[str]:
    return [require_tool("ffmpeg"), "-hide_banner", "-nostdin", "-loglevel", "error", "-i", url, "-f", "framemd5", "-"]


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
