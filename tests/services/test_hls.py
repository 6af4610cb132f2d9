"""The HLS service: packaged once per stream into storage, playlists that parse, expired segments
deleted after a delay and never while listed, discontinuities on a new session, clean-up that
spares a newer stream of the same name, and errors that never stop the stream."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import m3u8
import pytest
import trio

from arcly_trio import AppSpec, Engine, Frame, FrameKind
from arcly_trio.core.errors import InvalidStreamName
from arcly_trio.services import HlsService
from arcly_trio.storage import AppendHandle, MemoryStorage, StorageError
from arcly_trio.workers.http import HttpServer


@asynccontextmanager
async def packaging(hls: HlsService, *apps: AppSpec) -> AsyncIterator[Engine]:
    """An engine with ``hls`` as a service (the engine runs its janitor)."""
    builder = Engine.builder().service(hls)
    for app in apps or (AppSpec("live", hls=True),):
        builder.application(app)
    async with builder.build() as engine:
        yield engine


async def publish(engine: Engine, key: str, frames: list[Frame], *, realtime: bool = False, **kw: Any) -> None:
    """Publish ``frames``; with ``realtime`` pace them by their timestamps (use the autojump clock)."""
    async with engine.publish(key, **kw) as publisher:
        start = trio.current_time()
        first = frames[0].dts
        for frame in frames:
            if realtime:
                await trio.sleep_until(start + (frame.dts - first) / 1000)
            await publisher.send(frame)


async def settle(hls: HlsService) -> None:
    """Wait until no stream is being packaged any more."""
    with trio.fail_after(5):
        while hls.streams:
            await trio.sleep(0.01)


def playlist_of(data: bytes) -> m3u8.M3U8:
    return m3u8.loads(data.decode())


async def test_a_stream_is_packaged_once_into_a_playlist_that_parses(demo_frames) -> None:  # type: ignore[no-untyped-def]
    storage = MemoryStorage()
    hls = HlsService(storage, variant="ts", window=3)
    async with packaging(hls, AppSpec("live", hls=True), AppSpec("plain")) as engine:
        async with engine.publish("live/demo") as publisher, engine.publish("plain/demo") as other:
            for frame in demo_frames:
                await publisher.send(frame)
                await other.send(frame)
            await trio.sleep(0.05)
            stats = engine.stream(publisher.key).stats()
            assert stats.subscribers_by_protocol == {"hls": 1}
            assert engine.stream(other.key).stats().subscribers_by_protocol == {}
            live = playlist_of(await storage.get("live/demo/index.m3u8"))
            assert not live.is_endlist and len(live.segments) == 3
        await settle(hls)
        final = playlist_of(await storage.get("live/demo/index.m3u8"))
    assert final.is_endlist
    assert final.target_duration == 2
    assert 1 <= len(final.segments) <= 3
    assert final.media_sequence == 5 - len(final.segments) + 0  # five 2 s GOPs in the clip
    for segment in final.segments:
        data = await storage.get(f"live/demo/{segment.uri}")
        assert len(data) % 188 == 0 and data[0] == 0x47
        assert 1.9 <= segment.duration <= 2.2
    assert await storage.list("plain/") == []


class CheckingStorage(MemoryStorage):
    """Records every breach of the HLS invariants (checked at each write and delete; the
    service would swallow an assertion raised in its task, so breaches are collected)."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay
        self.listed: dict[str, set[str]] = {}
        self.unlisted_at: dict[str, float] = {}
        self.deleted: list[str] = []
        self.violations: list[str] = []

    async def put(self, key: str, data: bytes) -> None:
        if key.endswith("index.m3u8"):
            base = key.rpartition("/")[0]
            names = {segment.uri for segment in playlist_of(data).segments}
            for name in names:
                if f"{base}/{name}" not in self._objects:
                    self.violations.append(f"{name} listed before it was stored")
            for name in self.listed.get(base, set()) - names:
                self.unlisted_at[f"{base}/{name}"] = trio.current_time()
            self.listed[base] = names
        await super().put(key, data)

    async def delete(self, key: str) -> None:
        base, _, name = key.rpartition("/")
        if key.endswith(".ts"):
            if name in self.listed.get(base, set()) and f"{base}/index.m3u8" in self._objects:
                self.violations.append(f"{key} deleted while the stored playlist lists it")
            if key in self.unlisted_at and trio.current_time() - self.unlisted_at[key] < self.delay - 1e-9:
                self.violations.append(f"{key} deleted before the delay")
        else:
            self.listed.pop(base, None)
        self.deleted.append(key)
        await super().delete(key)


async def test_expired_segments_are_deleted_after_the_delay_never_while_listed(demo_frames, autojump_clock) -> None:  # type: ignore[no-untyped-def]
    storage = CheckingStorage(delay=3.0)
    hls = HlsService(storage, variant="ts", window=2, delete_delay=3.0)
    async with packaging(hls) as engine:
        frames = demo_frames + [  # loop the clip once more on the same timeline
            Frame(f.kind, f.codec, f.pts + 10_100, f.dts + 10_100, f.payload, f.keyframe, f.config)
            for f in demo_frames
            if not f.config
        ]
        await publish(engine, "live/demo", frames, realtime=True)
        await settle(hls)
        expired = [key for key in storage.deleted if key.endswith(".ts")]
        assert len(expired) >= 5, "segments that left the window were deleted"
        assert await storage.list("live/demo/") != []  # the ended stream's files are kept a while
        await trio.sleep(3.5)
        assert await storage.list() == []  # ... then deleted, playlist and all
    assert hls.pending_deletions == 0
    assert storage.violations == []


async def test_a_new_publish_session_starts_a_discontinuity(demo_frames) -> None:  # type: ignore[no-untyped-def]
    storage = MemoryStorage()
    hls = HlsService(storage, variant="ts", window=10)
    async with packaging(hls, AppSpec("live", hls=True, reconnect_grace=5)) as engine:
        first = [f for f in demo_frames if f.dts < 4000]
        await publish(engine, "live/demo", first)
        await trio.sleep(0.05)
        await publish(engine, "live/demo", demo_frames)  # comes back: timestamps restart
        await trio.sleep(0.05)
        engine.stream(engine.application("live").streams()[0].key).shutdown()
        await settle(hls)
    playlist = playlist_of(await storage.get("live/demo/index.m3u8"))
    flags = [segment.discontinuity for segment in playlist.segments]
    assert flags.count(True) == 1
    assert flags.index(True) == 2  # two segments from the first session, then the new timeline
    assert "#EXT-X-DISCONTINUITY" in (await storage.get("live/demo/index.m3u8")).decode()


async def test_cleanup_spares_a_newer_stream_of_the_same_name(demo_frames, autojump_clock) -> None:  # type: ignore[no-untyped-def]
    storage = MemoryStorage()
    hls = HlsService(storage, variant="ts", window=3, delete_delay=5.0)
    async with packaging(hls) as engine:
        await publish(engine, "live/demo", demo_frames[:400])
        await settle(hls)
        old = set(await storage.list("live/demo/"))
        async with engine.publish("live/demo") as publisher:
            for frame in demo_frames:
                await publisher.send(frame)
            await trio.sleep(6)  # the first stream's clean-up falls due now
            now = set(await storage.list("live/demo/"))
            assert "live/demo/index.m3u8" in now
            assert not (old - {"live/demo/index.m3u8"}) & now, "the old stream's segments are gone"
            playlist = playlist_of(await storage.get("live/demo/index.m3u8"))
            assert all(f"live/demo/{s.uri}" in now for s in playlist.segments)
            assert not playlist.is_endlist


async def test_storage_errors_are_logged_and_never_stop_the_stream(demo_frames, caplog) -> None:  # type: ignore[no-untyped-def]
    class BrokenStorage(MemoryStorage):
        async def put(self, key: str, data: bytes) -> None:
            raise StorageError("disk on fire")

        async def open_append(self, key: str) -> AppendHandle:
            raise StorageError("disk on fire")

    caplog.set_level(logging.ERROR, logger="arcly_trio.hls")
    hls = HlsService(BrokenStorage())
    async with packaging(hls) as engine:
        async with engine.publish("live/demo") as publisher:
            async with engine.subscribe("live/demo", capacity=1000) as sub:
                for frame in demo_frames:
                    await publisher.send(frame)
                got = []
                with trio.fail_after(5):
                    while len(got) < len(demo_frames):
                        got += await sub.next_batch()
            assert hls.storage_errors > 0
            assert engine.stream(publisher.key).stats().subscribers_by_protocol == {"hls": 1}
    assert any("disk on fire" in r.getMessage() for r in caplog.records)


async def test_malformed_codec_data_is_dropped_and_counted(demo_frames) -> None:  # type: ignore[no-untyped-def]
    storage = MemoryStorage()
    hls = HlsService(storage, variant="ts")
    async with packaging(hls) as engine:
        bad = Frame(FrameKind.VIDEO, "h264", 0, 0, b"\x01", keyframe=True, config=True)
        await publish(engine, "live/demo", [bad, *demo_frames])
        await settle(hls)
    assert hls.bad_frames == 1
    playlist = playlist_of(await storage.get("live/demo/index.m3u8"))
    assert len(playlist.segments) >= 3


async def test_stream_names_that_cannot_be_keys_never_reach_packaging(demo_frames) -> None:  # type: ignore[no-untyped-def]
    # Names are checked when the key is made, so HLS (and its storage keys) never sees them.
    storage = MemoryStorage()
    hls = HlsService(storage, variant="ts")
    async with packaging(hls) as engine:
        for name in ("live/..", "live/.hidden", "live/a b", "live/x\nforged"):
            with pytest.raises(InvalidStreamName):
                await publish(engine, name, demo_frames[:50])
        await trio.sleep(0.05)
    assert await storage.list() == []


def test_settings_are_validated() -> None:
    from arcly_trio.core.errors import LocalProtocolError

    with pytest.raises(LocalProtocolError):
        HlsService(target_duration=0)
    with pytest.raises(LocalProtocolError):
        HlsService(window=0)
    with pytest.raises(ValueError):
        HlsService(delete_delay=-1)
    assert HlsService(window=4, target_duration=3).delete_delay == 12
    assert HlsService().applies_to(AppSpec("x", hls=True)) and not HlsService().applies_to(AppSpec("x"))
    assert HlsService(all_apps=True).applies_to(AppSpec("x"))


async def test_hls_mpegts_says_which_tracks_it_cannot_carry(caplog, http_get, demo_frames) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.WARNING, logger="arcly_trio.hls")
    http = HttpServer("127.0.0.1", 0)
    engine = (
        Engine.builder().application(AppSpec("live", hls=True)).service(HlsService(variant="ts")).protocol(http).build()
    )
    async with engine, engine.publish("live/opus") as publisher:
        video = [f for f in demo_frames if f.kind is not FrameKind.AUDIO]
        await publisher.send(
            Frame(FrameKind.AUDIO, "opus", 0, 0, b"OpusHead\x01\x02\x38\x01\x80\xbb\x00\x00\x00\x00\x00", config=True)
        )
        for frame in video[:40]:
            await publisher.send(frame)
            if not frame.config:
                await publisher.send(Frame(FrameKind.AUDIO, "opus", frame.dts, frame.dts, b"\xfc\xff\xfe"))
        with trio.fail_after(5):
            while True:
                status, _, body = await http_get(http.port, "/api/streams")
                document = __import__("json").loads(body)
                streams = document["apps"][0]["streams"]
                if streams and streams[0].get("hls_tracks", {}).get("left_out"):
                    break
                await trio.sleep(0.02)
    tracks = streams[0]["hls_tracks"]
    assert {k: tracks[k] for k in ("variant", "carried", "left_out")} == {
        "variant": "ts",
        "carried": ["h264 video"],
        "left_out": ["opus audio"],
    }
    assert tracks["by_variant"]["ts"] == {"carries": ["h264 video"], "leaves_out": ["opus audio"]}
    assert tracks["by_variant"]["ll"] == {"carries": ["h264 video", "opus audio"], "leaves_out": []}
    warnings = [r.getMessage() for r in caplog.records if "cannot carry" in r.getMessage()]
    assert len(warnings) == 1 and "opus audio" in warnings[0]


# ------------------------------------------------------------ (merged)
async def test_a_session_that_sends_no_configs_and_goes_on_forward_is_a_discontinuity(  # type: ignore[no-untyped-def]
    demo_frames,
) -> None:
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
