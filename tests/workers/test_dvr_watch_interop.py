"""The watch page's scrub bar over the DVR window (issue 23), in Debian's headless Chromium.

``/watch/{app}/{stream}?via=hls`` plays the stream's HLS with the hls.js the server serves
(``/pages/vendor/``, loaded by the page only then, under the pages' strict Content-Security-
Policy: nothing is injected), with a scrub bar over the ``seekable`` range and a **live**
button. Checked, in one run: the status page links the stream of an application with a DVR
window to that page (``?via=hls``, keeping ``?token=``); the page loads hls.js lazily (sent
gzipped) and starts at live; dragging the bar 20 s back plays from there (time advances,
frames decoded, "DVR" shown); the button returns to the live edge and playback goes on; sound
was decoded (the audio is an ``EXT-X-MEDIA`` rendition, which hls.js's light build does not
play). The stream is the one of :mod:`tests.services.test_dvr_interop` (30 s published at
once, then in real time), on port 0; every wait is bounded. With ``ARCLY_UPDATE_SCREENSHOTS=1`` it writes ``docs/page-watch-dvr.png``
(the page 20 s behind live).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import trio

from arcly_trio.workers.http.pages_routes import HLS_JS
from tests._browser import blocking, browser
from tests.services.test_dvr_interop import BURST, dvr_server, publishing, window_of

pytestmark = pytest.mark.interop

SCREENSHOT = Path(__file__).resolve().parent.parent.parent / "docs" / "page-watch-dvr.png"

STATE = """const v = document.getElementById("video"), p = window.arclyPlayer;
return {dvr: p.dvr || null, state: p.state, engine: p.engine, error: p.error, status: document.getElementById("status").textContent,
        paused: v.paused, frames: v.getVideoPlaybackQuality().totalVideoFrames, audio: v.webkitAudioDecodedByteCount,
        scripts: [...document.scripts].map((s) => new URL(s.src).pathname), hls: window.Hls ? window.Hls.version : null};"""

LINK = """const a = document.querySelector('.stream[data-key="dvr/demo"] a.dvr-link');
return a && {href: a.getAttribute("href"), text: a.textContent};"""


async def until(driver: Any, what: str, check: Any, timeout: float = 20) -> dict[str, Any]:
    state: dict[str, Any] = {}
    with trio.move_on_after(timeout):
        while True:
            state = await blocking(driver.execute_script, STATE)
            if state["dvr"] is not None and check(state):
                return state
            await trio.sleep(0.25)
    raise AssertionError(f"{what}: {state}")


async def test_the_watch_page_loads_hlsjs_scrubs_back_in_the_dvr_window_and_returns_to_live() -> None:
    async with dvr_server() as (engine, port), publishing(engine):
        await window_of(port, BURST - 4)
        async with browser() as driver:
            # The status page links a DVR application's stream to the watch page over HLS.
            await blocking(driver.get, f"http://127.0.0.1:{port}/?token=t")
            with trio.fail_after(10):
                while not (link := await blocking(driver.execute_script, LINK)):
                    await trio.sleep(0.2)
            assert link == {"href": "/watch/dvr/demo?token=t&via=hls", "text": "⏪ DVR 1:00"}, link
            await blocking(driver.execute_script, "document.querySelector('a.dvr-link').click();")
            live = await until(driver, "never played at live", lambda s: s["state"] == "live" and s["dvr"]["time"] > 0)
            assert live["engine"] == "hls.js" and live["hls"] == "1.7.4", ("hls.js", live)
            assert sorted(live["scripts"]) == ["/pages/common.js", f"/pages/vendor/{HLS_JS}", "/pages/watch.js"], (
                "scripts",
                live,
            )
            assert live["dvr"]["end"] - live["dvr"]["start"] >= BURST - 6, ("window", live)
            sizes = await blocking(driver.execute_script, "const [e] = performance.getEntriesByType('resource')"
                                   f".filter((e) => e.name.endsWith('{HLS_JS}')); return [e.encodedBodySize, e.decodedBodySize];")  # fmt: skip
            assert sizes[0] < 200_000 < 600_000 < sizes[1], sizes  # sent gzipped
            at = live["dvr"]["time"] - 20
            value = round((at - live["dvr"]["start"]) / (live["dvr"]["end"] - live["dvr"]["start"]) * 1000)
            await blocking(driver.execute_script, f"const s = document.getElementById('scrub'); s.value = '{value}'; "
                           "s.dispatchEvent(new Event('input')); s.dispatchEvent(new Event('change'));")  # fmt: skip
            back = await until(driver, "never played 20 s back",
                               lambda s: s["state"] == "behind" and s["dvr"]["behind"] >= 15 and s["dvr"]["time"] > at + 1)  # fmt: skip
            assert back["status"] == "DVR" and back["frames"] > live["frames"], ("behind", back)
            if os.environ.get("ARCLY_UPDATE_SCREENSHOTS") == "1":
                await blocking(driver.save_screenshot, str(SCREENSHOT))
            await blocking(driver.execute_script, "document.getElementById('golive').click();")
            again = await until(
                driver,
                "never returned to live",
                lambda s: s["state"] == "live" and s["dvr"]["time"] > back["dvr"]["time"] + 10,
            )
            last = await until(
                driver, "stopped at live", lambda s: s["frames"] > again["frames"] + 10 and not s["paused"]
            )
    # Sound was decoded (a build without alternate audio decodes none; the count lags at the start).
    assert last["audio"] > 0 and last["error"] is None, ("sound, no error", last)
