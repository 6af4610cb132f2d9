"""Recording with real clients: ffmpeg publishes over RTMP, ffprobe and ffmpeg read the segments.

* Debian's ffmpeg publishes three times in a row (two reconnects): ``/api/recordings`` lists one
  span per publish session, each about as long as what was sent, and ffprobe reads every
  segment (H.264 + AAC, no error).
* ``python -m arcly_trio serve --record DIR`` is killed with SIGKILL while ffmpeg publishes:
  ffprobe reads the segment it was writing; the index is removed, and the restarted server
  rebuilds it from the file: ``/api/recordings`` lists the segment with the duration ffprobe
  reads, and its index gets a final line.
* ffmpeg 8 publishes HEVC + AAC, AV1 + Opus and VP9 + Opus over Enhanced RTMP: every segment
  recorded names the codecs and ffmpeg 8 decodes it with no error.

Servers run on port 0 (in-process, or ``serve`` as a subprocess); every wait is bounded.
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import trio

from arcly_trio import AppSpec
from arcly_trio.core.keys import StreamKey
from arcly_trio.services.recordings import Catalog, Recorder
from arcly_trio.services.recordings.catalog import INDEX_NAME, parse_index_line
from arcly_trio.services.recordings.mp4scan import scan_path
from tests._cli import cli_server
from tests._ffmpeg import publisher
from tests._serving import serving
from tests._tools import require_ffmpeg8, require_tool

pytestmark = pytest.mark.interop

KEY = StreamKey("live", "cam")


async def probe(path: Path, ffprobe: str | None = None) -> dict[str, Any]:
    """ffprobe's streams and format of ``path``; fails on any error it reports."""
    args = [ffprobe or require_tool("ffprobe"), "-v", "error", "-show_entries",
            "stream=codec_name:format=start_time,duration", "-of", "json", str(path)]  # fmt: skip
    result = await trio.run_process(args, capture_stdout=True, capture_stderr=True, check=False)
    assert result.returncode == 0 and not result.stderr, result.stderr.decode(errors="replace")
    return json.loads(result.stdout)


def seconds(found: dict[str, Any]) -> float:
    """The media a file holds, by ffprobe: a segment's decode times go on from the previous
    segment's (the publisher's timeline), and ffprobe counts its duration from 0."""
    return float(found["format"]["duration"]) - float(found["format"]["start_time"])


async def decodes(ffmpeg: str, path: Path) -> None:
    result = await trio.run_process(
        [ffmpeg, "-v", "error", "-i", str(path), "-f", "null", "-"], capture_stderr=True, check=False
    )
    assert result.returncode == 0 and not result.stderr, result.stderr.decode(errors="replace")


async def test_three_publish_sessions_are_three_spans_of_segments_ffprobe_reads(tmp_path: Path, http_get: Any) -> None:
    recorder = Recorder(tmp_path, segment_seconds=1.0)
    with trio.fail_after(60):
        async with serving(AppSpec("live", record=True), services=(recorder,), rtmp={}) as served:
            assert served.rtmp is not None
            url = f"rtmp://127.0.0.1:{served.rtmp.port}/live/cam"
            for _ in range(3):  # a publisher that reconnects twice
                async with publisher(url, seconds=2.5, gop=15) as pub:
                    assert await pub.process.wait() == 0
                while recorder.active:
                    await trio.sleep(0.02)
            status, _, body = await http_get(served.http.port, "/api/recordings?app=live&stream=cam")
    assert status == 200
    (listed,) = json.loads(body)["recordings"]
    spans = listed["spans"]
    assert len(spans) == 3 and len({s["session"] for s in spans}) == 3, spans
    for span, following in zip(spans, spans[1:], strict=False):
        assert span["end_epoch"] <= following["start_epoch"]  # a later session never overlaps
    for span in spans:
        assert 2.0 <= span["duration"] <= 2.7, span
        assert span["codecs"][0].startswith("avc1.") and span["codecs"][1] == "mp4a.40.2"
    segments = await Catalog(tmp_path).segments(KEY)
    assert len(segments) >= 6 and all(r.final for r in segments)
    for record in segments:
        found = await probe(tmp_path / "live" / "cam" / record.file)
        assert sorted(s["codec_name"] for s in found["streams"]) == ["aac", "h264"]
        assert seconds(found) == pytest.approx(record.duration, abs=0.1)


async def test_a_killed_server_leaves_a_readable_segment_and_the_restarted_one_rebuilds_its_index(
    tmp_path: Path, http_get: Any
) -> None:
    directory = tmp_path / "live" / "cam"
    with trio.fail_after(60):
        async with cli_server("--record", str(tmp_path), "--no-hls") as server:
            async with publisher(server.url("live/cam"), gop=15):
                while True:  # a few fragments written, the publisher still sending
                    lines = (directory / INDEX_NAME).read_text().splitlines() if directory.exists() else []
                    segment = sorted(directory.glob("*.mp4")) if lines else []
                    if segment and segment[0].stat().st_size > 150_000:
                        break
                    await trio.sleep(0.05)
                server.process.send_signal(signal.SIGKILL)
                assert await server.process.wait() == -signal.SIGKILL
        (path,) = segment
        found = await probe(path)
        assert sorted(s["codec_name"] for s in found["streams"]) == ["aac", "h264"]
        duration = seconds(found)
        assert duration > 1.0
        (directory / INDEX_NAME).unlink()  # the index is gone too: rebuilt from the file
        async with cli_server("--record", str(tmp_path), "--no-hls") as server:
            assert server.http_port is not None
            status, _, body = await http_get(server.http_port, "/api/recordings")
    assert status == 200
    (listed,) = json.loads(body)["recordings"]
    (span,) = listed["spans"]
    assert span["duration"] == pytest.approx(duration, abs=0.1) and span["bytes"] <= path.stat().st_size
    (line,) = [parse_index_line(text) for text in (directory / INDEX_NAME).read_text().splitlines()]
    assert line.final and line.file == path.name  # type: ignore[union-attr]


ENHANCED = {
    "hevc+aac": (("-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error:keyint=15"),
                 ("-c:a", "aac"), ("hvc1.", "mp4a.40.2"), ["aac", "hevc"]),
    "av1+opus": (("-c:v", "libaom-av1", "-cpu-used", "8", "-usage", "realtime", "-g", "15"),
                 ("-c:a", "libopus", "-ac", "2"), ("av01.", "opus"), ["av1", "opus"]),
    "vp9+opus": (("-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-g", "15"),
                 ("-c:a", "libopus", "-ac", "2"), ("vp09.", "opus"), ["opus", "vp9"]),
}  # fmt: skip


@pytest.mark.parametrize("codecs", sorted(ENHANCED))
async def test_ffmpeg8_enhanced_rtmp_codecs_are_recorded_and_decode(tmp_path: Path, codecs: str) -> None:
    ffmpeg = require_ffmpeg8()
    video, audio, prefixes, names = ENHANCED[codecs]
    clip = tmp_path / "clip.flv"
    encode = [ffmpeg, "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30",
              "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "3", *video, "-pix_fmt", "yuv420p",
              *audio, "-f", "flv", str(clip)]  # fmt: skip
    with trio.fail_after(120):
        await trio.run_process(encode)
        recorder = Recorder(tmp_path / "rec", segment_seconds=1.0)
        async with serving(AppSpec("live", record=True), services=(recorder,), rtmp={}) as served:
            assert served.rtmp is not None
            url = f"rtmp://127.0.0.1:{served.rtmp.port}/live/cam"
            # In real time, as a publisher sends: a burst faster than the recorder's thread hops on a
            # loaded machine makes it skip to the next keyframe (counted; it never slows the publisher).
            send = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-re", "-i", str(clip), "-c", "copy",
                    "-f", "flv", url]  # fmt: skip
            await trio.run_process(send, stdout=subprocess.DEVNULL)
            while not recorder.history or recorder.active:
                await trio.sleep(0.02)
        segments = await recorder.catalog.segments(KEY)
        assert len(segments) >= 2 and sum(r.duration for r in segments) == pytest.approx(3.0, abs=0.2)
        for record in segments:
            assert record.final and record.codecs[0].startswith(prefixes[0]) and record.codecs[1] == prefixes[1]
            path = recorder.catalog.path(KEY, record.file)
            scanned = scan_path(path)  # what repair and a rebuilt index read: the same codecs
            assert (scanned.codecs, scanned.complete) == (record.codecs, record.bytes)
            found = await probe(path)  # Debian ffprobe reads these codecs in MP4 (not in FLV)
            assert sorted(s["codec_name"] for s in found["streams"]) == names
            await decodes(ffmpeg, path)
