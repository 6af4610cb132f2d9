"""The watch page's scrub bar over the DVR window (issue 23), in Debian's headless Chromium.

``/watch/{app}/{stream}?via=hls`` plays the stream's HLS with hls.js when the page has it,
with a scrub bar over the ``seekable`` range and a **live** button. The server serves no
library, so the test gives the page the pinned hls.js before its own scripts run (DevTools'
``Page.addScriptToEvaluateOnNewDocument``, which the page's CSP does not apply to). Checked:
the page starts at live; dragging the bar 20 s back plays from there (time advances, frames
decoded, "DVR" shown); the button returns to the live edge. Chromium 156's own HLS player
(``canPlayType`` says ``"maybe"``) plays a live playlist from its first segment with an empty
``seekable`` range and ignores seeks: without hls.js the page hides the bar and says so. The stream is the one of :mod:`tests.services.test_dvr_interop`
(30 s published at once, then in real time), on port 0; every wait is bounded.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from tests._browser import blocking, browser
from tests._npm import HLS_JS, npm_file
from tests.services.test_dvr_interop import BURST, dvr_server, publishing, window_of

pytestmark = pytest.mark.interop

STATE = """const v = document.getElementById("video"), p = window.arclyPlayer;
return {dvr: p.dvr || null, state: p.state, engine: p.engine, error: p.error, status: document.getElementById("status").textContent,
        paused: v.paused, frames: v.getVideoPlaybackQuality().totalVideoFrames};"""


async def until(driver: Any, what: str, check: Any, timeout: float = 20) -> dict[str, Any]:
    state: dict[str, Any] = {}
    with trio.move_on_after(timeout):
        while True:
            state = await blocking(driver.execute_script, STATE)
            if state["dvr"] is not None and check(state):
                return state
            await trio.sleep(0.25)
    raise AssertionError(f"{what}: {state}")


async def test_the_watch_page_scrubs_back_in_the_dvr_window_and_returns_to_live() -> None:
    async with dvr_server() as (engine, port), publishing(engine):
        await window_of(port, BURST - 4)
        async with browser() as driver:
            hls_js = npm_file(*HLS_JS).read_text()
            await blocking(driver.execute_cdp_cmd, "Page.addScriptToEvaluateOnNewDocument", {"source": hls_js})
            await blocking(driver.get, f"http://127.0.0.1:{port}/watch/dvr/demo?via=hls")
            live = await until(driver, "never played at live", lambda s: s["state"] == "live" and s["dvr"]["time"] > 0)
            assert live["engine"] == "hls.js" and live["dvr"]["end"] - live["dvr"]["start"] >= BURST - 6, live
            at = live["dvr"]["time"] - 20
            value = round((at - live["dvr"]["start"]) / (live["dvr"]["end"] - live["dvr"]["start"]) * 1000)
            await blocking(driver.execute_script, f"const s = document.getElementById('scrub'); s.value = '{value}'; "
                           "s.dispatchEvent(new Event('input')); s.dispatchEvent(new Event('change'));")  # fmt: skip
            back = await until(driver, "never played 20 s back",
                               lambda s: s["state"] == "behind" and s["dvr"]["behind"] >= 15 and s["dvr"]["time"] > at + 1)  # fmt: skip
            assert back["status"] == "DVR" and back["frames"] > live["frames"], back
            await blocking(driver.execute_script, "document.getElementById('golive').click();")
            again = await until(
                driver,
                "never returned to live",
                lambda s: s["state"] == "live" and s["dvr"]["time"] > back["dvr"]["time"] + 10,
            )
            await until(driver, "stopped at live", lambda s: s["frames"] > again["frames"] + 10 and not s["paused"])


async def test_without_hlsjs_chromium_plays_hls_natively_and_the_page_says_it_cannot_seek() -> None:
    async with dvr_server() as (engine, port), publishing(engine):
        await window_of(port, BURST - 4)
        async with browser() as driver:
            await blocking(driver.get, f"http://127.0.0.1:{port}/watch/dvr/demo?via=hls")
            with trio.fail_after(20):
                while True:
                    state = await blocking(driver.execute_script, STATE)
                    if state["state"] == "playing" and state["frames"] > 30:
                        break
                    await trio.sleep(0.25)
            shown = await blocking(driver.execute_script, "return [document.getElementById('scrub').hidden, "
                                   "document.getElementById('behind').textContent]")  # fmt: skip
    assert state["engine"] == "native" and state["dvr"] is None
    assert shown[0] is True and "cannot seek" in shown[1], shown
