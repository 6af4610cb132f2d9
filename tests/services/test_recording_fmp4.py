"""The segment recorder: the sans-IO segmenter (cuts on keyframes, fragments of about a second,
new segments for a new configuration, every format) and the recorder service on a real engine
(sessions, on-demand control, a full disk, retention, the index it keeps), checked through the
catalog and the box scan. Real codecs: the demo clip's H.264 + AAC; ffmpeg-published codecs are
in ``test_recording_interop.py``."""

from __future__ import annotations

import errno
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, BinaryIO

import pytest
import trio

from arcly_trio import AppSpec, Engine
from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.core.keys import StreamKey
from arcly_trio.media import flv
from arcly_trio.services.recording import RecordingFailed, RecordingStarted, RecordingStopped
from arcly_trio.services.recordings import Catalog
from arcly_trio.services.recordings.catalog import INDEX_NAME, parse_index_line, parse_segment_name
from arcly_trio.services.recordings.mp4scan import scan_bytes, scan_path
from arcly_trio.services.recordings.recorder import Recorder, SegmentFiles
from arcly_trio.services.recordings.segmenter import Closed, Opened, Operation, Segmenter, Wrote
from arcly_trio.testing.frames import real_stream

KEY = StreamKey("live", "cam")
WALL = 1796607252.0


def frames_until(ms: int, start_ms: int = 0) -> list[Frame]:
    """The demo clip (H.264 + AAC, a keyframe every 2 s) from ``start_ms`` to ``ms``."""
    out: list[Frame] = []
    for frame in real_stream(start_ms):
        if not frame.config and frame.dts >= ms:
            return out
        out.append(frame)
    raise AssertionError("unreachable")


def run_segmenter(segmenter: Segmenter, frames: list[Frame], batch: int = 5) -> list[Operation]:
    ops: list[Operation] = []
    for i in range(0, len(frames), batch):
        ops += segmenter.push(frames[i : i + batch], WALL + i / 100)
    return ops + segmenter.finish()


def files_of(ops: list[Operation]) -> list[tuple[Opened, bytes, float]]:
    """(opened, bytes, closed duration) per segment."""
    out: list[tuple[Opened, bytes, float]] = []
    current: list[Any] = []
    for op in ops:
        if isinstance(op, Opened):
            current = [op, b""]
        elif isinstance(op, Wrote):
            current[1] += op.data
        elif isinstance(op, Closed):
            out.append((current[0], current[1], op.duration))
    return out


# --- the segmenter ---------------------------------------------------------------------------


def test_segments_are_cut_on_keyframes_and_follow_each_other(tmp_path: Path) -> None:
    frames = frames_until(9000)
    segments = files_of(run_segmenter(Segmenter("fmp4", 3.0), frames))
    # Keyframes every 2 s: cuts at the first keyframe 3 s or more after the segment's start.
    assert [round(s[0].start - WALL, 3) for s in segments] == [0, 4, 8]
    assert [s[0].name for s in segments] == sorted(s[0].name for s in segments)
    assert parse_segment_name(segments[1][0].name) == pytest.approx(WALL + 4)
    for (opened, data, duration), following in zip(segments, [*segments[1:], None], strict=True):
        found = scan_bytes(data)
        assert found.codecs == opened.codecs == ("avc1.4d401e", "mp4a.40.2")
        assert found.duration == pytest.approx(duration, abs=0.001)
        assert len(found.fragments) >= round(duration)  # about a second per fragment
        if following is not None:
            assert opened.start + duration == pytest.approx(following[0].start, abs=0.001)


def test_every_batch_writes_at_most_a_second_of_media(tmp_path: Path) -> None:
    ops = run_segmenter(Segmenter("fmp4", 60.0), frames_until(5000), batch=1)
    wrote = [op for op in ops if isinstance(op, Wrote)]
    durations = [b.duration - a.duration for a, b in zip(wrote, wrote[1:], strict=False)]
    assert len(wrote) >= 5 and max(durations) <= 1.05


def test_a_stalled_video_track_does_not_hold_the_audio_back() -> None:
    frames = frames_until(8000)
    stalled = [f for f in frames if f.config or f.kind is FrameKind.AUDIO or f.dts < 1000]  # video stops at 1 s
    segmenter = Segmenter("fmp4", 60.0)
    wrote: list[float] = []  # the last audio dts when bytes came out
    for frame in stalled:
        if any(isinstance(op, Wrote) for op in segmenter.push([frame], WALL)):
            wrote.append(frame.dts)
    gaps = [b - a for a, b in zip([1000.0, *wrote], wrote, strict=False)]
    assert wrote and wrote[-1] > 6000 and max(gaps) <= 2100, wrote


def test_recording_starts_on_a_keyframe_and_renews_on_a_new_config() -> None:
    frames = frames_until(7000)
    configs = [f for f in frames if f.config]
    media = [f for f in frames if not f.config]
    segmenter = Segmenter("fmp4", 60.0)
    segmenter.seed(configs)
    late = [f for f in media if f.dts >= 500]  # mid-GOP: waits for the keyframe at 2 s
    ops = segmenter.push(late[:200], WALL)
    (opened,) = [op for op in ops if isinstance(op, Opened)]
    assert opened.start == WALL and segmenter.dropped > 0
    video = next(c for c in configs if c.kind is FrameKind.VIDEO)
    changed = Frame(video.kind, "h264", 4100, 4100, bytes(video.payload[:-1]) + b"\x00", config=True)
    ops = segmenter.push([changed, *late[200:]], WALL + 5)
    assert [type(op) for op in ops if not isinstance(op, Wrote)] == [Closed, Opened]


@pytest.mark.parametrize("fmt", ["ts", "flv"])
def test_the_other_formats_write_readable_segments(fmt: str) -> None:
    segments = files_of(run_segmenter(Segmenter(fmt, 2.0), frames_until(3990)))
    assert len(segments) == 2
    for opened, data, duration in segments:
        assert opened.name.endswith("." + fmt) and 1.9 < duration < 2.1
        if fmt == "ts":
            assert len(data) % 188 == 0 and data[::188] == b"\x47" * (len(data) // 188)
        else:
            kinds = {(f.kind, f.config) for f in flv.read_frames(data)}
            assert (FrameKind.VIDEO, True) in kinds and (FrameKind.AUDIO, False) in kinds


def test_invalid_settings_are_refused() -> None:
    for kwargs in ({"format": "mkv"}, {"segment_seconds": 0}, {"fragment_ms": 20_000}):
        with pytest.raises(ValueError):
            Segmenter(**kwargs)  # type: ignore[arg-type]


# --- the recorder on an engine -------------------------------------------------------------------


@asynccontextmanager
async def recording(recorder: Recorder, *apps: AppSpec) -> AsyncIterator[Engine]:
    builder = Engine.builder().service(recorder)
    for app in apps or (AppSpec("live", record=True),):
        builder.application(app)
    async with builder.build() as engine:
        with trio.fail_after(5):
            await recorder.ready.wait()
        yield engine


async def publish(engine: Engine, frames: list[Frame], key: str = "live/cam") -> None:
    async with engine.publish(key) as publisher:
        for frame in frames:
            await publisher.send(frame)


async def ended(recorder: Recorder, count: int) -> None:
    """Wait until ``count`` recording runs have ended and none is writing."""
    with trio.fail_after(10):
        while (
            recorder.active or sum(isinstance(e, (RecordingStopped, RecordingFailed)) for e in recorder.history) < count
        ):
            await trio.sleep(0.01)


def index_records(directory: Path) -> list[Any]:
    return [parse_index_line(line) for line in (directory / INDEX_NAME).read_text().splitlines()]


async def test_each_publish_session_is_a_span_of_final_segments(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path, segment_seconds=2.0)
    async with recording(recorder) as engine:
        assert recorder.wrote_at() is None  # (the storage health check's witness)
        await publish(engine, frames_until(5000))
        await ended(recorder, 1)
        assert recorder.wrote_at() is not None
        await publish(engine, frames_until(3000))  # the publisher reconnects
        await ended(recorder, 2)
    catalog = Catalog(tmp_path)
    segments = await catalog.segments(KEY)
    assert len(segments) == 3 + 2 and all(r.final for r in segments)
    sessions = [r.session for r in segments]
    assert len(set(sessions[:3])) == 1 and len(set(sessions[3:])) == 1 and sessions[0] != sessions[3]
    spans = await catalog.spans(KEY)
    assert [s.session for s in spans] == [sessions[0], sessions[3]]
    assert spans[0].duration == pytest.approx(5.0, abs=0.1) and spans[1].duration == pytest.approx(3.0, abs=0.1)
    for record in segments:
        path = catalog.path(KEY, record.file)
        found = scan_path(path)
        assert (found.codecs, found.complete, found.size, found.problem) == (
            record.codecs,
            record.bytes,
            record.bytes,
            None,
        )
        assert found.duration == pytest.approx(record.duration, abs=0.001)
    # The index: a first line per segment and a final one (no refresh in 5 s of fast media).
    lines = index_records(tmp_path / "live" / "cam")
    assert sum(1 for r in lines if r.final) == 5 and len(lines) == 10
    assert [type(e) for e in recorder.history] == [RecordingStarted, RecordingStopped] * 2
    assert recorder.bytes_written == sum(r.bytes for r in segments)


async def test_on_demand_recording_starts_and_stops(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path, segment_seconds=60.0)
    frames = frames_until(9000)
    async with recording(recorder, AppSpec("live")) as engine:
        async with engine.publish("live/cam") as publisher:
            for frame in frames[:200]:  # not recorded: nobody asked
                await publisher.send(frame)
            assert recorder.start(KEY, by="a test")
            for frame in frames[200:]:
                await publisher.send(frame)
                if frame.dts == 7000 and frame.kind is FrameKind.VIDEO:
                    with trio.fail_after(5):
                        while not recorder.recording(KEY):
                            await trio.sleep(0.01)
                    assert recorder.stop(KEY, by="a test")
            with trio.fail_after(5):
                while recorder.recording(KEY):
                    await publisher.send(frames[-1].shifted(40))
                    await trio.sleep(0.01)
    (segment,) = await Catalog(tmp_path).segments(KEY)
    first_keyframe_after = next(f.dts for f in frames[200:] if f.keyframe)
    assert segment.final and segment.duration < (9000 - first_keyframe_after) / 1000 + 0.1
    assert not recorder.requested


class FullDisk(SegmentFiles):
    """Writes fail with ENOSPC once ``room`` bytes were written."""

    def __init__(self, room: int) -> None:
        self.room = room

    def write(self, handle: BinaryIO, data: bytes) -> None:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        super().write(handle, data)


async def test_a_full_disk_stops_the_recording_not_the_stream(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, "arcly_trio.recording")
    recorder = Recorder(tmp_path, segment_seconds=60.0, files=FullDisk(200_000))
    async with recording(recorder) as engine:
        frames = frames_until(6000)
        async with engine.publish("live/cam") as publisher:  # never refused, never slowed
            for frame in frames:
                await publisher.send(frame)
            with trio.fail_after(5):
                while not recorder.failures:
                    await publisher.send(frames[-1].shifted(40))
                    await trio.sleep(0.01)
            for frame in frames_until(10100, 6100):  # the session goes on: no new try, no new event
                await publisher.send(frame)
            with trio.move_on_after(0.3):  # (a negative check: give a retry the time to show)
                while recorder.failures == 1:
                    await trio.sleep(0.01)
            assert engine.has_stream(KEY) and recorder.failures == 1 and not recorder.recording(KEY)
            assert recorder.wrote_at() is None  # a failure since the last write: no witness
    assert [type(e) for e in recorder.history] == [RecordingStarted, RecordingFailed]
    assert "No space left on device" in recorder.history[-1].error  # type: ignore[union-attr]
    assert any("stopped by a file-system error (the stream goes on)" in r.getMessage() for r in caplog.records)
    (segment,) = await Catalog(tmp_path).segments(KEY)  # what was written before stays listed
    assert not segment.final and segment.bytes <= 200_000


async def test_retention_deletes_the_oldest_segments_first(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path, segment_seconds=1.0, retention_interval=3600)
    async with recording(recorder, AppSpec("live", record=True)) as engine:
        await publish(engine, frames_until(9000), "live/a")
        await publish(engine, frames_until(3000), "live/b")
        await ended(recorder, 2)
        catalog = recorder.catalog
        a, b = await catalog.segments(StreamKey("live", "a")), await catalog.segments(StreamKey("live", "b"))
        assert len(a) == 5 and len(b) == 2
        keys = {r.file: StreamKey("live", "a") for r in a} | {r.file: StreamKey("live", "b") for r in b}
        everything = sorted(a + b, key=lambda r: r.start)  # the streams' segments interleave in time
        recorder.max_bytes = sum(r.bytes for r in everything[2:])  # room for all but the two oldest
        deleted = await recorder.enforce_retention()
        assert deleted == [(keys[r.file], r.file) for r in everything[:2]]
        left = await catalog.segments(StreamKey("live", "a")) + await catalog.segments(StreamKey("live", "b"))
        assert sorted(left, key=lambda r: r.start) == everything[2:]
        gone = everything[0]
        assert not (tmp_path / "live" / keys[gone.file].name / gone.file).exists()
        assert index_records(tmp_path / "live" / keys[gone.file].name)[-1] in (everything[0].file, everything[1].file)
        recorder.max_bytes = None
        recorder.max_age = 1.0
        newest = everything[-1]
        deleted = await recorder.enforce_retention(now=newest.end + 0.5)  # all that ended over 1 s before
        assert [f for _, f in deleted] == [r.file for r in everything[2:] if r.end < newest.end - 0.5]
        assert len(deleted) >= 3


async def test_retention_never_deletes_the_segment_being_written(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path, segment_seconds=60.0, max_bytes=1, retention_interval=3600)
    async with recording(recorder) as engine:
        async with engine.publish("live/cam") as publisher:
            for frame in frames_until(3000):
                await publisher.send(frame)
            with trio.fail_after(5):
                while not recorder.active:
                    await trio.sleep(0.01)
            assert await recorder.enforce_retention() == []
            assert (tmp_path / "live" / "cam" / recorder.active[KEY]).exists()


async def test_start_up_repair_leaves_a_stream_another_process_writes(tmp_path: Path) -> None:
    """With ``--workers``, a restarted worker must not cut the segment another worker writes:
    the stream directory's lock (an ``flock``, gone with its process) says who writes."""
    ops = run_segmenter(Segmenter("fmp4", 60.0), frames_until(3000))
    ((opened, data, _),) = files_of(ops)
    directory = tmp_path / "live" / "cam"
    directory.mkdir(parents=True)
    (directory / opened.name).write_bytes(data[: len(data) - 1000])  # being written: mid-fragment
    files = SegmentFiles()
    held = files.lock(directory)  # another process's lock: a second open file description
    assert held is not None and files.lock(directory) is None
    recorder = Recorder(tmp_path)
    async with recording(recorder):
        assert (directory / opened.name).stat().st_size == len(data) - 1000  # left alone
    files.unlock(held)
    recorder = Recorder(tmp_path)
    async with recording(recorder):
        (record,) = await recorder.catalog.segments(KEY)
    assert record.final and (directory / opened.name).stat().st_size == record.bytes < len(data) - 1000


async def test_the_index_is_compacted_across_short_sessions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from arcly_trio.services.recordings import recorder as module

    monkeypatch.setattr(module, "_COMPACT_AFTER", 6)
    recorder = Recorder(tmp_path, segment_seconds=1.0)
    async with recording(recorder) as engine:
        for n in range(4):  # short sessions: none alone appends enough lines to compact
            await publish(engine, frames_until(2000))
            await ended(recorder, n + 1)
    segments = await Catalog(tmp_path).segments(KEY)
    assert len(segments) == 4 and all(r.final for r in segments)  # a keyframe every 2 s: one per session
    lines = index_records(tmp_path / "live" / "cam")
    assert len(lines) < 2 * len(segments)  # two lines per segment were written: some were compacted
    assert {r.file for r in lines} == {r.file for r in segments}
