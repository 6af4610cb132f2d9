"""SRT with real clients (ffmpeg 5.1 with libsrt): play an RTMP-published stream over SRT;
publish over SRT and play it over RTMP; refusals with a clear reason."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from arcly_trio.kernel.auth import TokenAuthenticator
from arcly_trio.kernel.engine import Engine
from arcly_trio.workers.rtmp import RtmpServer
from arcly_trio.workers.srt import SrtServer
from tests._ffmpeg import Player, player, publish_args, publisher, run_tool
from tests._serving import HOST, rtmp_url, wait_publishing
from tests._tools import require_tool

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
