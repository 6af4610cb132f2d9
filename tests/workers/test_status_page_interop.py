"""The status page in headless Chromium (selenium) with the demo stream live and recorded: each
stream shows a thumbnail ``<img>`` that loaded (a decoded JPEG, not a broken image), its viewers
and bitrate as inline SVG sparklines drawn from ``/api/history``, and its recordings with links
that play them. With ``ARCLY_UPDATE_SCREENSHOTS=1`` it writes ``docs/page-status.png``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from arcly_trio import AppSpec, Engine, StreamKey
from arcly_trio.server.demo import publish_demo
from arcly_trio.services.recordings import Recorder
from arcly_trio.services.stream_history import StreamHistory
from arcly_trio.services.thumbnails import Thumbnails
from arcly_trio.workers.http import HttpServer
from tests._browser import blocking, browser

pytestmark = pytest.mark.interop

SCREENSHOT = Path(__file__).resolve().parent.parent.parent / "docs" / "page-status.png"

_READ = """
const card = document.querySelector('.stream[data-key="live/demo"]');
if (!card) return null;
const img = card.querySelector('img.thumb');
const lines = [...card.querySelectorAll('svg.sparkline polyline')];
return {
  loaded: !!img && img.complete && img.naturalWidth > 0,
  naturalWidth: img ? img.naturalWidth : 0,
  lines: lines.length,
  points: lines.map((line) => line.getAttribute('points').split(' ').length),
  links: [...card.querySelectorAll('.recordings a')].map((a) => a.getAttribute('href')),
};
"""


async def test_status_page_shows_a_live_thumbnail_sparklines_and_recordings(tmp_path: Path) -> None:
    thumbnails = Thumbnails()
    recorder = Recorder(tmp_path, all_apps=True, refresh_seconds=0.2)
    http = HttpServer("127.0.0.1", 0)
    engine = (
        Engine.builder()
        .application(AppSpec("live"))
        .protocol(http)
        .observer(thumbnails)
        .observer(StreamHistory(interval=0.3))
        .service(recorder)
        .build()
    )
    with trio.fail_after(60):
        async with engine, trio.open_nursery() as nursery, browser() as driver:
            nursery.start_soon(publish_demo, engine, "live/demo")
            key = StreamKey("live", "demo")
            while not [s for s in await recorder.catalog.segments(key) if s.duration > 0]:
                await trio.sleep(0.1)
            await blocking(driver.get, f"http://127.0.0.1:{http.port}/")
            found = None
            while not (
                found and found["loaded"] and found["lines"] == 2 and min(found["points"]) >= 2 and found["links"]
            ):
                await trio.sleep(0.25)
                found = await blocking(driver.execute_script, _READ)
            if os.environ.get("ARCLY_UPDATE_SCREENSHOTS") == "1":  # a picture with some history and an RTMP URL
                http.rtmp_port = 1935
                await trio.sleep(8)
                await blocking(driver.refresh)
                await trio.sleep(3)
                await blocking(driver.save_screenshot, str(SCREENSHOT))
            nursery.cancel_scope.cancel()
    assert found["naturalWidth"] == 320  # the page asks for 320 pixels wide
    assert thumbnails.decodes >= 1
    hls, mp4 = found["links"][:2]
    assert hls.startswith("/live/demo/playback.m3u8?start=20") and "&duration=" in hls
    assert mp4.startswith("/live/demo/playback.mp4?start=20")
