"""HLS starts a new timeline per publish session as the kernel announces it."""

from __future__ import annotations

import trio

from arcly_trio import AppSpec
from arcly_trio.services import HlsService
from arcly_trio.storage import MemoryStorage
from tests.test_hls_service import packaging, playlist_of, publish, settle


async def test_a_session_that_sends_no_configs_and_goes_on_forward_is_a_discontinuity(  # type: ignore[no-untyped-def]
        demo_frames) -> None:
    """A publisher back within the grace that sends neither configs nor a timestamp going back
    (what the retired ``SessionTracker`` guessed sessions from) is still a new timeline."""
    storage = MemoryStorage()
    hls = HlsService(storage, variant="ts", window=10)
    async with packaging(hls, AppSpec("live", hls=True, reconnect_grace=5)) as engine:
        await publish(engine, "live/demo", [f for f in demo_frames if f.dts < 4000])
        await trio.sleep(0.05)
        await publish(engine, "live/demo", [f for f in demo_frames if 4000 <= f.dts < 8000 and not f.config])
        await trio.sleep(0.05)
        engine.stream(engine.application("live").streams()[0].key).shutdown()
        await settle(hls)
    flags = [segment.discontinuity for segment in playlist_of(await storage.get("live/demo/index.m3u8")).segments]
    assert flags.count(True) == 1
    assert flags.index(True) == 2  # two segments from the first session, then the new one's timeline
