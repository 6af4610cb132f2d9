"""Playback of recordings in real players no one here wrote.

Recordings are made here with the project's fMP4 muxer in the recording layout: two publish
sessions of the demo clip (H.264 + AAC, 10 s each, a keyframe every 2 s, 2 s apart, each
session's decode times from 0 as a new publisher's are); the span asked crosses from one to the
other.

* Debian's ffmpeg 5.1 and ffmpeg 8 decode ``playback.m3u8`` of a span that starts on a
  keyframe and crosses the reconnect (10 s of wall clock, 8 s of media): the first frame decoded is a keyframe, the video lasts the
  span (±0.5 s, counted in frames), the audio is there, and nothing fails to decode.
* End to end with the recorder: ffmpeg publishes twice over RTMP (a reconnect), and Debian's
  ffmpeg plays ``playback.m3u8`` of a span from a keyframe of the first session into the second:
  first frame a keyframe, duration ±0.5 s.
* VLC 3.0 plays a span of one session (every byte range fetched, pictures shown).
* ffprobe reads the duration of ``playback.mp4`` of the span over HTTP (it seeks: the body's
  length is known and ranges are served).
* Debian's Chromium plays the same playlist with hls.js past the discontinuity, and
  ``playback.mp4`` of the span in a plain ``<video>`` element, whose duration is the span's.

Servers run in-process on port 0; every test is bounded by ``trio.fail_after``.
"""

from __future__ import annotations

import datetime as dt
import os
import pathlib
import re
from typing import Any
from urllib.parse import quote

import pytest
import trio

from arcly_trio.kernel.spec import AppSpec
from arcly_trio.protocols.http.router import HttpRequest
from arcly_trio.services.recordings.playback import Playback
from arcly_trio.services.recordings.recorder import Recorder
from arcly_trio.services.recordings.vod import program_date
from tests._browser import FAKE_MEDIA, blocking, browser
from tests._ffmpeg import publisher
from tests._npm import HLS_JS, npm_file
from tests._playback import KEY, T0, ListCatalog, Recordings, two_sessions
from tests._serving import serving
from tests._tools import require_ffmpeg8, require_tool

pytestmark = pytest.mark.interop

SPAN = f"start={quote(program_date(T0 + 6).replace('.000', ''))}&duration=10"  # 6..10 s, (a gap,) 12..16 s
PAGE = """<!doctype html><html><head><meta charset="utf-8"><script src="/test/hls.min.js"></script></head>
<body><video id="hls" muted playsinline></video><video id="mp4" muted playsinline preload="auto"></video>
<script>
const report = window.report = {errors: [], fatal: null, hls: [], mp4: [], mp4Duration: null};
const params = new URLSearchParams(location.search);
const hlsVideo = document.getElementById("hls"), mp4Video = document.getElementById("mp4");
const hls = new Hls();
hls.on(Hls.Events.ERROR, (e, d) => { report.errors.push(d.details); if (d.fatal) report.fatal = d.details; });
hls.on(Hls.Events.MANIFEST_PARSED, () => { hlsVideo.currentTime = 2.5; hlsVideo.play().catch(() => {}); });
hls.loadSource(params.get("m3u8"));
hls.attachMedia(hlsVideo);
mp4Video.addEventListener("error", () => { report.fatal = "mp4: " + (mp4Video.error && mp4Video.error.code); });
mp4Video.addEventListener("loadedmetadata", () => { report.mp4Duration = mp4Video.duration; mp4Video.play().catch(() => {}); });
mp4Video.src = params.get("mp4");
setInterval(() => { report.hls.push(hlsVideo.currentTime); report.mp4.push(mp4Video.currentTime); }, 200);
</script></body></html>"""


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, list[Any]]:
    return two_sessions(tmp_path_factory.mktemp("recordings"))


def recordings(recording: tuple[pathlib.Path, list[Any]]) -> Recordings:
    root, records = recording
    return Recordings(Playback(ListCatalog(root, {KEY: records})))


async def decode(ffmpeg: str, url: str) -> tuple[list[tuple[bool, float]], int, str]:
    """What ``ffmpeg`` decodes of ``url``: per video frame (keyframe, pts seconds) from
    ``showinfo``, the audio frames, and its log."""
    args = [ffmpeg, "-hide_banner", "-nostdin", "-v", "info", "-i", url, "-map", "0:v:0", "-vf", "showinfo",
            "-map", "0:a:0", "-f", "framemd5", "-"]  # fmt: skip
    with trio.fail_after(60):
        result = await trio.run_process(args, capture_stdout=True, capture_stderr=True, check=False)
    log = result.stderr.decode(errors="replace")
    assert result.returncode == 0, log[-3000:]
    video = [(m.group(2) == "1", float(m.group(1))) for m in re.finditer(r"pts_time:\s*(\S+).*?iskey:(\d)", log)]
    lines = [line for line in result.stdout.decode().splitlines() if line and not line.startswith("#")]
    audio = sum(1 for line in lines if line.startswith("1,"))
    return video, audio, log


@pytest.mark.parametrize("which", ["ffmpeg 5.1", "ffmpeg 8"])
async def test_ffmpeg_decodes_a_span_across_a_reconnect(recording: tuple[pathlib.Path, list[Any]], which: str) -> None:
    ffmpeg = require_tool("ffmpeg") if which == "ffmpeg 5.1" else require_ffmpeg8()
    async with serving(services=(recordings(recording),)) as served:
        url = f"http://127.0.0.1:{served.http.port}/live/cam/playback.m3u8?{SPAN}"
        video, audio, log = await decode(ffmpeg, url)
    assert video and video[0][0], "the first frame decoded is not a keyframe"
    rate = 30  # the demo clip's frame rate
    assert abs(len(video) / rate - 8.0) <= 0.5, (len(video), log[-2000:])
    assert audio >= 8 * 44100 / 1024 * 0.9, audio
    assert "error" not in log.lower().replace("-xerror", ""), log[-3000:]


async def test_the_recorders_segments_play_back_across_a_reconnect_in_ffmpeg(tmp_path: pathlib.Path) -> None:
    # End to end: ffmpeg publishes twice (a reconnect), the recorder writes 2 s segments, and
    # ffmpeg plays a span from a keyframe of the first session into the second.
    recorder = Recorder(tmp_path, segment_seconds=2.0)
    with trio.fail_after(90):
        async with serving(AppSpec("live", record=True), services=(recorder,), rtmp={}) as served:
            assert served.rtmp is not None
            url = f"rtmp://127.0.0.1:{served.rtmp.port}/live/cam"
            for _ in range(2):
                async with publisher(url, seconds=4, gop=30) as pub:  # a keyframe a second
                    assert await pub.process.wait() == 0
                while recorder.active:
                    await trio.sleep(0.02)
            first, second = await recorder.catalog.spans(KEY)
            start = first.start + 2.0  # a keyframe: the session's clock is its media's
            duration = first.start + first.duration - start + (second.start - first.start - first.duration) + 2.0
            when = dt.datetime.fromtimestamp(start, dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
            target = f"http://127.0.0.1:{served.http.port}/live/cam/playback.m3u8?start={quote(when)}&duration={duration:.6f}"
            video, audio, log = await decode(require_tool("ffmpeg"), target)
    expected = first.start + first.duration - start + 2.0  # media: the rest of the first session, 2 s of the second
    assert video and video[0][0], "the first frame decoded is not a keyframe"
    assert abs(len(video) / 30 - expected) <= 0.5, (len(video), expected, log[-2000:])
    assert audio > 0


async def test_vlc_plays_a_span_of_one_session(recording: tuple[pathlib.Path, list[Any]], http_get: Any) -> None:
    # VLC 3.0 fetches every byte range, across files, and shows pictures. (Across a publish
    # session it stops at the EXT-X-DISCONTINUITY: it plays one segment after it, then ends.)
    prefix = [require_tool("runuser"), "-u", "nobody", "--"] if os.geteuid() == 0 else []
    span = f"start={quote(program_date(T0 + 2).replace('.000', ''))}&duration=6"  # 2..8 s: two files
    async with serving(services=(recordings(recording),)) as served:
        url = f"http://127.0.0.1:{served.http.port}/live/cam/playback.m3u8?{span}"
        status, _, body = await http_get(served.http.port, f"/live/cam/playback.m3u8?{span}")
        listed = re.findall(r"#EXT-X-BYTERANGE:([0-9]+)@([0-9]+)\n(\S+)", body.decode())
        args = [*prefix, "sh", "-c", 'HOME=/tmp exec "$@" 2>&1', "vlc", require_tool("cvlc"), "-vv", "--rate=4",
                "--no-video-title-show", "--vout=dummy", "--aout=dummy", "--play-and-exit", url]  # fmt: skip
        with trio.fail_after(60):
            result = await trio.run_process(args, capture_stdout=True, check=False)
    log = result.stdout.decode(errors="replace")
    fetched = set(re.findall(r"Retrieving (\S+) @([0-9]+)-([0-9]+)", log))
    assert status == 200 and len(listed) == 2, body
    for length, offset, uri in listed:
        assert (
            f"http://127.0.0.1:{served.http.port}/live/cam/{uri}",
            offset,
            str(int(offset) + int(length) - 1),
        ) in fetched
    assert "VoutDisplayEvent 'resize' 640x360" in log and "end of playlist" in log, log[-3000:]


async def test_ffprobe_reads_the_duration_of_playback_mp4(recording: tuple[pathlib.Path, list[Any]]) -> None:
    ffprobe = require_tool("ffprobe")
    async with serving(services=(recordings(recording),)) as served:
        url = f"http://127.0.0.1:{served.http.port}/live/cam/playback.mp4?{SPAN}"
        with trio.fail_after(30):
            result = await trio.run_process([ffprobe, "-v", "error", "-show_entries", "format=duration", "-of",
                                             "csv=p=0", url], capture_stdout=True, capture_stderr=True, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert abs(float(result.stdout) - 8.0) <= 0.5, result.stdout


async def test_hlsjs_and_a_video_element_play_it_in_chromium(recording: tuple[pathlib.Path, list[Any]]) -> None:
    hls_js = npm_file(*HLS_JS).read_bytes()
    async with serving(services=(recordings(recording),)) as served:
        port = served.http.port

        async def page(request: HttpRequest, exchange: Any) -> None:
            await exchange.respond(200, PAGE.encode(), content_type="text/html; charset=utf-8")

        async def script(request: HttpRequest, exchange: Any) -> None:
            await exchange.respond(200, hls_js, content_type="text/javascript")

        served.http.router.get("/test/page.html", page)
        served.http.router.get("/test/hls.min.js", script)
        base = f"http://127.0.0.1:{port}/live/cam"
        target = f"http://127.0.0.1:{port}/test/page.html?m3u8={quote(f'{base}/playback.m3u8?{SPAN}')}"
        target += f"&mp4={quote(f'{base}/playback.mp4?{SPAN}')}"
        async with browser(*FAKE_MEDIA) as driver:
            await blocking(driver.get, target)
            report: dict[str, Any] = {}
            with trio.move_on_after(40):
                while True:
                    report = await blocking(driver.execute_script, "return window.report")
                    if report["fatal"] or (max(report["hls"], default=0) > 5.5 and max(report["mp4"], default=0) > 1):
                        break
                    await trio.sleep(0.25)
    assert report["fatal"] is None, report
    assert max(report["hls"]) > 5.5, report  # past the reconnect at 4 s
    assert abs(report["mp4Duration"] - 8.0) <= 0.5, report["mp4Duration"]
