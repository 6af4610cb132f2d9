"""The status page in headless Chromium (selenium) with the demo stream live: each stream shows a
thumbnail ``<img>`` that loaded (a decoded JPEG, not a broken image) and its viewers and bitrate
as inline SVG sparklines drawn from ``/api/history``."""

from __future__ import annotations

import pytest
import trio

from arcly_trio import AppSpec, Engine
from arcly_trio.server.demo import publish_demo
from arcly_trio.services.stream_history import StreamHistory
from arcly_trio.services.thumbnails import Thumbnails
from arcly_trio.workers.http import HttpServer
from tests._browser import blocking, browser

pytestmark = pytest.mark.interop

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
};
"""


async def test_status_page_shows_a_live_thumbnail_and_sparklines() -> None:
    thumbnails = Thumbnails()
    http = HttpServer("127.0.0.1", 0)
    engine = (
        Engine.builder()
        .application(AppSpec("live"))
        .protocol(http)
        .observer(thumbnails)
        .observer(StreamHistory(interval=0.3))
        .build()
    )
    with trio.fail_after(60):
        async with engine, trio.open_nursery() as nursery, browser() as driver:
            nursery.start_soon(publish_demo, engine, "live/demo")
            await blocking(driver.get, f"http://127.0.0.1:{http.port}/")
            found = None
            while not (found and found["loaded"] and found["lines"] == 2 and min(found["points"]) >= 2):
                await trio.sleep(0.25)
                found = await blocking(driver.execute_script, _READ)
            nursery.cancel_scope.cancel()
    assert found["naturalWidth"] == 320  # the page asks for 320 pixels wide
    assert thumbnails.decodes >= 1
