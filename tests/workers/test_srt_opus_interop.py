"""Opus over SRT play: an Enhanced RTMP Opus publish (ffmpeg 8) plays as MPEG-TS over SRT with
its Opus track (registration descriptor, control headers), which ffmpeg 8 decodes."""

from __future__ import annotations

import pytest
import trio

from arcly_trio import AppSpec, Engine, StreamKey
from arcly_trio.workers.rtmp import RtmpServer
from arcly_trio.workers.srt import SrtServer
from tests._ffmpeg import Player, run_tool
from tests._serving import HOST, rtmp_url
from tests._tools import require_ffmpeg8

pytestmark = pytest.mark.interop


async def test_ffmpeg8_decodes_opus_from_an_srt_play_of_an_enhanced_rtmp_opus_publish() -> None:
    ffmpeg8 = require_ffmpeg8()
    rtmp, srt = RtmpServer(HOST, 0), SrtServer(HOST, 0)
    publish = [ffmpeg8, "-hide_banner", "-nostdin", "-loglevel", "error", "-re",
               "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25",
               "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "8",
               "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-pix_fmt", "yuv420p",
               "-c:a", "libopus", "-ac", "2", "-f", "flv"]  # fmt: skip
    async with Engine.builder().application(AppSpec("live")).protocol(rtmp).protocol(srt).build() as engine:
        assert rtmp.port is not None
        with trio.fail_after(30):
            async with run_tool([*publish, rtmp_url(rtmp.port, "live/opus")]):
                key = StreamKey("live", "opus")
                while not engine.has_stream(key) or engine.stream(key).info.audio_codec != "opus":
                    await trio.sleep(0.05)
                url = f"srt://{HOST}:{srt.port_number}?streamid=read:live/opus"
                play = [ffmpeg8, "-hide_banner", "-nostdin", "-loglevel", "error", "-i", url,
                        "-flush_packets", "1", "-f", "framemd5", "-"]  # fmt: skip
                async with run_tool(play, Player) as watcher:
                    await watcher.wait_frames(25, 50)  # Opus: 20 ms frames, so 1 s of audio
