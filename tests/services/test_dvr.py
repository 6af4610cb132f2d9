"""DVR on the live HLS playlist (issue 23): ``--dvr-window`` keeps that much of the live playlist.

Checked, on the autojump clock with the demo clip looped: the playlist of every variant lists
the DVR window (a sliding live playlist: no ``EXT-X-PLAYLIST-TYPE``, a program date time on
every segment, LL-HLS parts only at the live edge); the complete segments are on disk, never in
the memory storage; a segment that leaves the window is deleted from disk after the delete
delay, not before and not much later; an ended stream leaves nothing; the service's own
temporary directory goes with its janitor. Also the option: its bounds, the ``[apps.NAME]`` key.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import attrs
import m3u8
import pytest
import trio

from arcly_trio import AppSpec, Engine, Frame, FrameKind, StreamKey
from arcly_trio.media.cmaf import CmafPackager
from arcly_trio.media.llhls import ReloadState, SegmentMemo, media_playlist, reload_state
from arcly_trio.media.ts_segments import HlsSegmenter
from arcly_trio.server.build import app_specs
from arcly_trio.server.cli import build_parser, resolve_args
from arcly_trio.server.config import ConfigError
from arcly_trio.services import HlsService
from arcly_trio.services._hls_cmaf import CmafPackaging
from arcly_trio.services._hls_dvr import DvrKeys, QueryPieces, TsPlaylist, dvr_window_segments, query_pieces
from arcly_trio.storage import MemoryStorage

SEGMENT = re.compile(r"[0-9a-f]+-(?:[va]-)?[0-9]+\.(?:m4s|ts)")
PLAYLISTS = {"ll": "video.m3u8", "fmp4": "video.m3u8", "ts": "index.m3u8"}


def looped(frames: list[Frame], times: int) -> list[Frame]:
    """``frames`` (the 10 s demo clip) ``times`` over, on one timeline."""
    media = [f for f in frames if not f.config]
    configs = [f for f in frames if f.config]
    span = max(f.dts for f in media) - min(f.dts for f in media) + 40
    out = list(configs)
    for loop in range(times):
        out += [attrs.evolve(f, dts=f.dts + loop * span, pts=f.pts + loop * span) for f in media]
    return out


class Disk(MemoryStorage):
    """The DVR's "disk", recording when each key was deleted (trio time). In memory: a
    :class:`FileStorage` runs threads, and the autojump clock jumps while they run."""

    def __init__(self) -> None:
        super().__init__()
        self.deleted: dict[str, float] = {}

    async def delete(self, key: str) -> None:
        self.deleted[key] = trio.current_time()
        await super().delete(key)


class Lists(MemoryStorage):
    """The memory storage, recording when each segment stopped being listed (trio time)."""

    def __init__(self, playlist: str) -> None:
        super().__init__()
        self.playlist = playlist
        self.listed: set[str] = set()
        self.unlisted: dict[str, float] = {}
        self.segments_in_memory: set[str] = set()

    async def put(self, key: str, data: bytes) -> None:
        base, _, name = key.rpartition("/")
        if SEGMENT.fullmatch(name):
            self.segments_in_memory.add(name)
        if name == self.playlist:
            names = {s.uri for s in m3u8.loads(data.decode()).segments}
            for gone in self.listed - names:
                self.unlisted[f"{base}/{gone}"] = trio.current_time()
            self.listed = names
        await super().put(key, data)


async def publish_paced(engine: Engine, key: str, frames: list[Frame], until: trio.Event | None = None) -> None:
    async with engine.publish(key) as publisher:
        start, first = trio.current_time(), frames[0].dts
        for frame in frames:
            await trio.sleep_until(start + (frame.dts - first) / 1000)
            await publisher.send(frame)


@pytest.mark.parametrize("variant", ["ll", "fmp4", "ts"])
async def test_the_playlist_lists_the_dvr_window_from_disk_and_old_segments_leave_on_time(  # type: ignore[no-untyped-def]
    variant: str, demo_frames, autojump_clock, tmp_path: Path
) -> None:
    name = PLAYLISTS[variant]
    memory, disk = Lists(name), Disk()
    hls = HlsService(memory, variant=variant, target_duration=2, window=3, dvr_storage=disk)
    spec = AppSpec("live", hls=True, hls_variant=variant, dvr_window=20)
    frames = looped(demo_frames, 5)  # 50 s
    async with Engine.builder().service(hls).application(spec).build() as engine:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(publish_paced, engine, "live/demo", frames)
            await trio.sleep(45)
            data = await hls.storage.get(f"live/demo/{name}")
            playlist = m3u8.loads(data.decode())
            # the playlist is cut where players' queries go, once per render
            assert hls.streams["live/demo"].pieces[name].get(data) == query_pieces(data)
            status = hls.stream_status(engine.stream("live/demo").key)["hls_tracks"]
            mpd = "" if variant == "ts" else (await hls.storage.get("live/demo/index.mpd")).decode()
        # 20 s of 2 s segments, one sliding live playlist with a date on every segment
        complete = [s for s in playlist.segments if s.uri]  # not the LL-HLS open segment's parts
        assert len(complete) == 10
        assert playlist.media_sequence >= 10 and playlist.playlist_type is None and not playlist.is_endlist
        assert all(s.program_date_time is not None for s in complete)
        assert 19 <= sum(s.duration for s in complete) <= 21
        if variant != "ts":  # DASH from the same segments: the window is its time shift buffer
            depth = re.search(r'timeShiftBufferDepth="PT([0-9.]+)S"', mpd)
            assert depth and 19 <= float(depth.group(1)) <= 21, mpd[:600]
        if variant == "ll":
            with_parts = [s for s in complete if s.parts]
            assert 1 <= len(with_parts) <= 3 and with_parts == complete[-len(with_parts) :]
        # the segments are on disk, read through the service's storage; none was in memory
        for segment in complete:
            assert await disk.get(f"live/demo/{segment.uri}") == await hls.storage.get(f"live/demo/{segment.uri}")
        assert not memory.segments_in_memory
        assert (
            status["dvr_window"] == 20 and status["dvr_bytes"] > status["held_bytes"] > 0
        )  # in memory: parts at the edge, lists
        # what left the window was deleted from disk after the delete delay (6 s), on time
        assert len(memory.unlisted) >= 5
        for key, when in memory.unlisted.items():
            if when + hls.delete_delay + 1 < trio.current_time():
                assert hls.delete_delay - 1e-6 <= disk.deleted[key] - when <= hls.delete_delay + 0.5
        assert set(disk.deleted) <= set(memory.unlisted) | {k.replace("-v-", "-a-") for k in memory.unlisted}
        # once the stream ended and the delay passed, nothing is left
        await trio.sleep(hls.delete_delay + 1)
        assert await disk.list() == [] and await memory.list() == []


async def test_segments_of_streams_without_dvr_stay_in_memory(demo_frames, autojump_clock, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    memory, disk = Lists("video.m3u8"), Disk()
    hls = HlsService(memory, target_duration=2, window=3, dvr_storage=disk)
    builder = Engine.builder().service(hls)
    builder.application(AppSpec("live", hls=True)).application(AppSpec("dvr", hls=True, dvr_window=30))
    async with builder.build() as engine:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(publish_paced, engine, "live/a", looped(demo_frames, 2))
            nursery.start_soon(publish_paced, engine, "dvr/b", looped(demo_frames, 2))
        with trio.fail_after(5):
            while hls.streams:  # both final lists stored
                await trio.sleep(0.1)
        assert {key.partition("/")[0] for key in await disk.list()} == {"dvr"}
        assert memory.segments_in_memory  # live/a's
        assert len(m3u8.loads((await hls.storage.get("dvr/b/video.m3u8")).decode()).segments) == 10
        assert len(m3u8.loads((await hls.storage.get("live/a/video.m3u8")).decode()).segments) == 3


async def test_the_service_makes_its_own_dvr_directory_and_removes_it(demo_frames, autojump_clock) -> None:  # type: ignore[no-untyped-def]
    hls = HlsService(target_duration=2, window=3)
    async with Engine.builder().service(hls).application(AppSpec("live", hls=True, dvr_window=10)).build() as engine:
        await publish_paced(engine, "live/demo", looped(demo_frames, 1))
        directory = hls._dvr_temporary
        assert directory is not None and any(
            name.endswith(".m4s") for _, _, names in os.walk(directory) for name in names
        )
    assert not os.path.exists(directory)


def test_the_window_is_bounded_and_counted_in_segments() -> None:
    assert dvr_window_segments(0, 2, 6) == 6
    assert dvr_window_segments(60, 2, 6) == 30
    assert dvr_window_segments(5, 2, 6) == 6  # never shorter than the live window
    assert dvr_window_segments(21600, 0.5, 6) == 43200
    for wrong in (-1, 21601, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            dvr_window_segments(wrong, 2, 6)
        with pytest.raises(ValueError):
            AppSpec("live", dvr_window=wrong)


def test_only_complete_segments_of_dvr_streams_go_to_disk() -> None:
    keys = DvrKeys()
    keys.tokens.add("abc1")
    assert keys.on_disk("live/s/abc1-v-12.m4s") and keys.on_disk("live/s/abc1-a-3.m4s")
    assert keys.on_disk("live/s/abc1-12.ts")
    for other in ("live/s/abc1-v-12.3.m4s", "live/s/abc1v1.mp4", "live/s/abc2-v-12.m4s", "live/s/video.m3u8",
                  "live/s/index.mpd", "live/s/abc1-v-x.m4s"):  # fmt: skip
        assert not keys.on_disk(other), other


def test_the_option_and_the_app_key(tmp_path: Path) -> None:
    path = tmp_path / "arcly.toml"
    path.write_text("dvr-window = 60\n[apps.live]\n[apps.long]\ndvr-window = 3600\n")
    specs = app_specs(resolve_args(build_parser(), ["serve", "--config", str(path)]))
    assert (specs["live"].dvr_window, specs["long"].dvr_window) == (60, 3600)
    assert app_specs(resolve_args(build_parser(), ["serve"]))["live"].dvr_window == 0
    with pytest.raises(ConfigError, match="--dvr-window 99999: a duration in seconds, from 0"):
        resolve_args(build_parser(), ["serve", "--dvr-window", "99999"])
    path.write_text("[apps.live]\ndvr-window = -5\n")
    with pytest.raises(ConfigError, match="dvr-window"):
        resolve_args(build_parser(), ["serve", "--config", str(path)])


@pytest.mark.parametrize("low_latency", [True, False])
def test_a_long_window_renders_the_same_playlist_from_its_memo(demo_frames, low_latency: bool) -> None:  # type: ignore[no-untyped-def]
    """The memo of the older segments' text (what keeps a 6 h window's render cheap at each
    part) gives the very text of a full render, at every push: through the window sliding, a
    discontinuity (a new init segment after it), early drops and the end."""
    packager = CmafPackager(2.0, 1 / 3, 12, name_prefix="t-")
    memos = {kind: SegmentMemo() for kind in (FrameKind.VIDEO, FrameKind.AUDIO)}
    cuts = {kind: QueryPieces() for kind in (FrameKind.VIDEO, FrameKind.AUDIO)}
    frames = looped(demo_frames, 3)
    renders = 0
    for index, frame in enumerate(frames):
        if index == len(frames) // 2:
            packager.discontinuity()
        if index == 2 * len(frames) // 3:
            packager.drop_oldest()
        packager.push(frame, 1e9 + frame.dts / 1000)
        for kind in packager.renditions:
            full = media_playlist(packager, kind, low_latency=low_latency)
            text = media_playlist(packager, kind, low_latency=low_latency, memo=memos[kind])
            assert text == full
            # and the playlist cut where players' queries go, from the memo's run: as a full parse
            data = text.encode()
            cuts[kind].cut(text, data, memos[kind].run)
            assert cuts[kind].get(data) == query_pieces(data)
            renders += 1
    packager.finish()
    for kind in packager.renditions:
        full = media_playlist(packager, kind, low_latency=low_latency)
        assert "#EXT-X-DISCONTINUITY\n" in full and full.count("#EXTINF") >= 10
        assert media_playlist(packager, kind, low_latency=low_latency, memo=memos[kind]) == full
    assert renders > 1000


def test_a_query_goes_after_every_uri_of_a_playlist() -> None:
    playlist = (b'#EXTM3U\n#EXT-X-MAP:URI="i.mp4"\n#EXT-X-PART:DURATION=0.3,URI="a.0.m4s",INDEPENDENT=YES\n'
                b'#EXTINF:2.000,\na.m4s\n\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI="a.1.m4s"\nb.m4s')  # fmt: skip
    assert b"?q=1".join(query_pieces(playlist)) == (
        b'#EXTM3U\n#EXT-X-MAP:URI="i.mp4?q=1"\n#EXT-X-PART:DURATION=0.3,URI="a.0.m4s?q=1",INDEPENDENT=YES\n'
        b'#EXTINF:2.000,\na.m4s?q=1\n\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI="a.1.m4s?q=1"\nb.m4s?q=1'
    )
    assert query_pieces(b"#EXTM3U\n") == [b"#EXTM3U\n"]


def test_a_long_ts_window_renders_the_segmenters_playlist_cut_for_queries(demo_frames) -> None:  # type: ignore[no-untyped-def]
    """The ``ts`` variant's DVR playlist, each segment rendered once: the segmenter's very text at
    every push (the window sliding, a discontinuity, an early drop, the end), cut where players'
    queries go as a full parse would cut it."""
    segmenter, playlist = HlsSegmenter(2.0, 9, name_template="t-{sequence}.ts"), TsPlaylist()
    frames = looped(demo_frames, 3)
    data, pieces = playlist.render(segmenter)
    assert data == segmenter.playlist().encode() and pieces == query_pieces(data)
    for index, frame in enumerate(frames):
        if index == len(frames) // 2:
            segmenter.discontinuity()
        if index == 2 * len(frames) // 3:
            segmenter.drop_oldest()
        if segmenter.push(frame, 1e9 + frame.dts / 1000):
            data, pieces = playlist.render(segmenter)
            assert data == segmenter.playlist().encode() and pieces == query_pieces(data)
    segmenter.finish()
    data, pieces = playlist.render(segmenter)
    assert data == segmenter.playlist().encode() and pieces == query_pieces(data)
    assert b"#EXT-X-DISCONTINUITY\n" in data and data.count(b"#EXTINF") >= 8 and data.endswith(b"#EXT-X-ENDLIST\n")


def test_per_batch_and_per_request_work_does_not_walk_the_window(demo_frames) -> None:  # type: ignore[no-untyped-def]
    """What runs after every batch of frames (the segments to report) and at every blocking
    playlist reload (is the part there?) looks at the live edge only, not at a 6-hour window
    (it walked all of it: some 100 ms per second and stream)."""
    packager = CmafPackager(2.0, 1 / 3, 30000, name_prefix="t-")
    for frame in looped(demo_frames, 1):
        packager.push(frame, 1e9 + frame.dts / 1000)
    video = packager.renditions[FrameKind.VIDEO]
    model = video.segments[-2]
    video.segments[:0] = [attrs.evolve(model, sequence=i - 20000, parts=()) for i in range(20000)]
    assert video.segments[-1].parts  # the live edge lists its parts
    msn, part = video.segments[-1].sequence, len(video.segments[-1].parts)
    host = type("Host", (), {"target_duration": 2.0, "part_duration": 1 / 3, "window": 6, "max_segment_bytes": 1 << 26,
                             "live": {}, "part_delete_delay": 6.0})()  # fmt: skip
    packaging = CmafPackaging(host, StreamKey("live", "x"), "t", low_latency=True)  # type: ignore[arg-type]
    packaging.packager = packager
    packaging.take_segments()
    start = time.perf_counter()
    for _ in range(200):
        assert packaging.take_segments() == []
        assert reload_state(packager, FrameKind.VIDEO, msn, part) is ReloadState.READY
    assert time.perf_counter() - start < 0.05  # walking the window took 0.3 s
