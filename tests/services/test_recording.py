"""FLV recording: one complete, ffprobe-playable file per publish session however it ends
(clean unpublish, publisher crash, idle reap, graceful shutdown, hard stop), a new file per
session, and storage errors that stop the recording, never the stream."""

from __future__ import annotations

import errno
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from arcly_trio import AppSpec, Engine, Frame, FrameKind, PublishEnded, StreamIdleReaped, StreamKey
from arcly_trio.media import flv
from arcly_trio.services import FlvRecorder, RecordingFailed, RecordingStarted, RecordingStopped
from arcly_trio.storage import AppendHandle, FileStorage, StorageError
from arcly_trio.testing import CountingObserver
from tests._tools import require_tool

NAME = re.compile(r"demo-\d{8}T\d{6}Z(-\d+)?\.flv")


@asynccontextmanager
async def recording(recorder: FlvRecorder, app: AppSpec | None = None, **kw: Any) -> AsyncIterator[Engine]:
    builder = Engine.builder().application(app or AppSpec("live", record=True)).service(recorder)
    if "idle_timeout" in kw:
        builder.idle_timeout(kw["idle_timeout"])
    async with builder.build() as engine:
        yield engine


async def finished(recorder: FlvRecorder, count: int = 1) -> None:
    """Wait until ``count`` recordings have ended (stopped or failed) and none is open."""
    with trio.fail_after(5):
        while (
            recorder.active or sum(isinstance(e, (RecordingStopped, RecordingFailed)) for e in recorder.history) < count
        ):
            await trio.sleep(0.01)


def files(directory: Path) -> list[Path]:
    return sorted((directory / "live").glob("*.flv"))


async def probe(path: Path) -> tuple[list[str], float]:
    """(codec names, last video pts in seconds) as ffprobe reads the file; also checks that
    ffmpeg decodes the whole file without an error."""
    ffprobe, ffmpeg = require_tool("ffprobe"), require_tool("ffmpeg")
    with trio.fail_after(30):
        codecs = await trio.run_process(
            [ffprobe, "-v", "error", "-show_entries", "stream=codec_name", "-of", "csv=p=0", str(path)],
            capture_stdout=True,
            capture_stderr=True,
        )
        packets = await trio.run_process(
            [
                ffprobe,
                "-v",
                "error",
                "-select_streams",
                "v:0",
                "-show_entries",
                "packet=pts_time",
                "-of",
                "csv=p=0",
                str(path),
            ],
            capture_stdout=True,
            capture_stderr=True,
        )
        decode = await trio.run_process(
            [ffmpeg, "-v", "error", "-i", str(path), "-f", "null", "-"], capture_stderr=True, check=False
        )
    assert decode.returncode == 0 and decode.stderr == b"", decode.stderr.decode()
    times = [float(line.strip(",")) for line in packets.stdout.decode().split() if line.strip(",")]
    return sorted(codecs.stdout.decode().split()), max(times)


def last_video_dts(frames: list[Frame]) -> float:
    return max(f.dts for f in frames if f.kind is FrameKind.VIDEO) / 1000


@pytest.mark.interop
async def test_clean_unpublish_records_every_frame(tmp_path: Path, demo_frames) -> None:  # type: ignore[no-untyped-def]
    recorder = FlvRecorder(tmp_path)
    async with recording(recorder) as engine:
        async with engine.publish("live/demo") as publisher:
            for frame in demo_frames:
                await publisher.send(frame)
        await finished(recorder)
    (path,) = files(tmp_path)
    assert NAME.fullmatch(path.name)
    recorded = flv.read_frames(path.read_bytes())
    assert [f.payload for f in recorded] == [f.payload for f in demo_frames]
    assert [f.dts for f in recorded] == [f.dts for f in demo_frames]
    header = path.read_bytes()[:5]
    assert header[:3] == b"FLV" and header[4] == 0x05  # audio and video
    codecs, end = await probe(path)
    assert codecs == ["aac", "h264"]
    assert end == pytest.approx(max(f.pts for f in demo_frames if f.kind is FrameKind.VIDEO) / 1000, abs=0.05)
    kinds = [type(e) for e in recorder.history]
    assert kinds == [RecordingStarted, RecordingStopped]
    stopped = recorder.history[-1]
    assert isinstance(stopped, RecordingStopped) and stopped.frames == len(demo_frames)
    assert stopped.reason == "stream-ended" and stopped.bytes == path.stat().st_size


@pytest.mark.interop
async def test_publisher_crash_leaves_a_complete_file(tmp_path: Path, demo_frames) -> None:  # type: ignore[no-untyped-def]
    recorder = FlvRecorder(tmp_path)
    async with recording(recorder) as engine:
        with pytest.raises(RuntimeError):
            async with engine.publish("live/demo") as publisher:
                for frame in demo_frames[:300]:
                    await publisher.send(frame)
                raise RuntimeError("publisher crashed")
        await finished(recorder)
    (path,) = files(tmp_path)
    assert len(flv.read_frames(path.read_bytes())) == 300
    codecs, end = await probe(path)
    assert codecs == ["aac", "h264"]
    assert end == pytest.approx(last_video_dts(demo_frames[:300]), abs=0.2)


@pytest.mark.interop
async def test_idle_reap_leaves_a_complete_file(tmp_path: Path, demo_frames) -> None:  # type: ignore[no-untyped-def]
    recorder = FlvRecorder(tmp_path)
    async with recording(recorder, idle_timeout=0.3) as engine:
        with pytest.raises(StreamIdleReaped):
            async with engine.publish("live/demo") as publisher:
                for frame in demo_frames[:250]:
                    await publisher.send(frame)
                await trio.sleep_forever()  # the publisher hangs: the stream is reaped
        await finished(recorder)
    (path,) = files(tmp_path)
    assert len(flv.read_frames(path.read_bytes())) == 250
    assert recorder.history[-1].reason == "reaped"  # type: ignore[union-attr]
    codecs, _ = await probe(path)
    assert codecs == ["aac", "h264"]


@pytest.mark.interop
async def test_graceful_shutdown_leaves_a_complete_file(tmp_path: Path, demo_frames) -> None:  # type: ignore[no-untyped-def]
    recorder = FlvRecorder(tmp_path)
    observer = CountingObserver()  # counts the frames the stream delivered
    engine = Engine.builder().application(AppSpec("live", record=True)).service(recorder).observer(observer).build()
    sent = 0
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(engine.serve)

            async def publish() -> None:
                nonlocal sent
                with pytest.raises(PublishEnded):
                    async with engine.publish("live/demo") as publisher:
                        for frame in demo_frames:
                            await publisher.send(frame)
                            sent += 1
                            await trio.sleep(0.001)

            nursery.start_soon(publish)
            while sent < 200:
                await trio.sleep(0.01)
            await engine.shutdown(grace=5)
    (path,) = files(tmp_path)
    recorded = flv.read_frames(path.read_bytes())
    assert len(recorded) == observer.frames[StreamKey("live", "demo")] >= 200  # every frame the stream delivered
    assert sent - len(recorded) <= 2  # (one still in the ingest queue may be dropped at shutdown)
    assert recorder.history[-1].reason == "shutdown"  # type: ignore[union-attr]
    codecs, _ = await probe(path)
    assert codecs == ["aac", "h264"]


@pytest.mark.interop
async def test_hard_stop_still_leaves_a_playable_file(tmp_path: Path, demo_frames) -> None:  # type: ignore[no-untyped-def]
    recorder = FlvRecorder(tmp_path)
    async with recording(recorder) as engine:
        with pytest.raises(PublishEnded):
            async with engine.publish("live/demo") as publisher:
                for frame in demo_frames[:300]:
                    await publisher.send(frame)
                size = len(flv.FlvStreamWriter().write(demo_frames[:300]))
                with trio.fail_after(10):  # the recorder has flushed them (on disk, not closed)
                    while sum(p.stat().st_size for p in files(tmp_path)) < size:
                        await trio.sleep(0.005)
                engine.stop()  # cancel everything, no goodbye
                await trio.sleep_forever()
    (path,) = files(tmp_path)
    assert len(flv.read_frames(path.read_bytes())) == 300  # flushed batch by batch
    codecs, _ = await probe(path)
    assert codecs == ["aac", "h264"]


async def test_each_publish_session_gets_its_own_file(tmp_path: Path, demo_frames) -> None:  # type: ignore[no-untyped-def]
    recorder = FlvRecorder(tmp_path)
    async with recording(recorder, AppSpec("live", record=True, reconnect_grace=5)) as engine:
        for count in (200, 300):
            async with engine.publish("live/demo") as publisher:  # comes back within the grace
                for frame in demo_frames[:count]:
                    await publisher.send(frame)
            await trio.sleep(0.05)
        engine.application("live").streams()[0].shutdown()
        await finished(recorder, 2)
    first, second = files(tmp_path)
    assert NAME.fullmatch(first.name) and NAME.fullmatch(second.name)
    counts = sorted(len(flv.read_frames(p.read_bytes())) for p in (first, second))
    assert counts == [200, 300]
    reasons = [e.reason for e in recorder.history if isinstance(e, RecordingStopped)]
    assert reasons == ["new publish session", "shutdown"]


async def test_a_publish_that_sends_no_frame_leaves_no_file(tmp_path: Path, demo_frames) -> None:  # type: ignore[no-untyped-def]
    """Attack (issue 18, finding 12): 1000 idle publishers left 999 empty 13-byte recordings. A
    recording starts with a session's first frame: sessions without frames (here three, one of
    them taking over within the grace) leave no file, the one with frames its own. Mutant
    killed: opening the file when the stream starts."""
    recorder = FlvRecorder(tmp_path)
    async with recording(recorder, AppSpec("live", record=True, reconnect_grace=5)) as engine:
        for name in ("idle1", "idle2"):
            async with engine.publish(f"live/{name}"):
                pass
        async with engine.publish("live/demo"):
            pass  # no frame; the next session comes back within the grace with frames
        async with engine.publish("live/demo") as publisher:
            for frame in demo_frames[:100]:
                await publisher.send(frame)
        for stream in engine.streams():
            stream.shutdown()
        await finished(recorder, 1)
    (path,) = files(tmp_path)
    assert NAME.fullmatch(path.name) and len(flv.read_frames(path.read_bytes())) == 100
    assert [type(e) for e in recorder.history] == [RecordingStarted, RecordingStopped]


class FullDisk(FileStorage):
    """A directory whose disk fills up after ``limit`` bytes (ENOSPC on write); ``written``
    counts what it took, ``refused`` says whether it refused a write."""

    def __init__(self, root: Path, limit: int) -> None:
        super().__init__(root)
        self.limit = limit
        self.written = 0
        self.refused = False

    async def open_append(self, key: str) -> AppendHandle:
        handle = await super().open_append(key)
        disk = self

        class Handle:
            def __init__(self) -> None:
                self.key = key

            async def write(self, data: bytes) -> None:
                if disk.written + len(data) > disk.limit:
                    disk.refused = True
                    raise StorageError(f"cannot write {key!r}") from OSError(errno.ENOSPC, "No space left on device")
                disk.written += len(data)
                await handle.write(data)

            async def flush(self) -> None:
                await handle.flush()

            async def aclose(self) -> None:
                await handle.aclose()

        return Handle()


@pytest.mark.interop
async def test_disk_error_stops_the_recording_not_the_stream(tmp_path: Path, demo_frames, caplog) -> None:  # type: ignore[no-untyped-def]
    """The disk fills up in the middle of a recording: the recording stops, the stream goes on,
    what was written is a playable prefix, and the next session records again.

    The frames go out 50 at a time, each lot once the recorder has written the previous one
    (or the disk has refused it): the recorder writes small batches whatever the load, so the
    disk fills part of the way in. (A pause of 5 ms between lots was not enough on a loaded
    machine: a recorder whose file took longer to open got 512 frames in its first batch,
    more than the disk's 300 kB, and recorded nothing.)"""
    caplog.set_level(logging.INFO, logger="arcly_trio.recording")
    seen: list[object] = []
    disk = FullDisk(tmp_path, limit=300_000)
    recorder = FlvRecorder(disk, on_event=seen.append)
    reference = flv.FlvStreamWriter()  # the bytes a recording of what was sent so far takes
    expected = 0
    async with recording(recorder, AppSpec("live", record=True, reconnect_grace=60)) as engine:
        async with engine.publish("live/demo") as publisher:
            async with engine.subscribe("live/demo", capacity=1000) as sub:
                for start in range(0, len(demo_frames), 50):
                    lot = demo_frames[start : start + 50]
                    for frame in lot:
                        await publisher.send(frame)
                    expected += len(reference.write(lot))
                    with trio.fail_after(10):
                        while not disk.refused and disk.written < expected:
                            await trio.sleep(0.005)
                assert disk.refused
                got: list[Frame] = []
                with trio.fail_after(5):
                    while len(got) < len(demo_frames):
                        got += await sub.next_batch()
            with trio.fail_after(5):
                while not recorder.failures:
                    await trio.sleep(0.01)
        assert [f.payload for f in got] == [f.payload for f in demo_frames]  # the stream went on
        failures = [e for e in seen if isinstance(e, RecordingFailed)]
        assert len(failures) == 1 and "cannot write" in failures[0].error
        assert recorder.failures == 1 and not recorder.active
        assert any(
            r.levelno == logging.ERROR and "stopped by a storage error" in r.getMessage() for r in caplog.records
        )
        # What was written before the error is a valid, playable prefix.
        (path,) = files(tmp_path)
        assert 0 < len(flv.read_frames(path.read_bytes())) < len(demo_frames)
        codecs, _ = await probe(path)
        assert codecs == ["aac", "h264"]
        # The next session (disk freed) records again.
        recorder.storage.limit = 10**9  # type: ignore[attr-defined]
        async with engine.publish("live/demo") as publisher:  # a new session of the same stream
            for frame in demo_frames[:100]:
                await publisher.send(frame)
        engine.application("live").streams()[0].shutdown()  # what was sent is still delivered
        await finished(recorder, 2)
    assert isinstance(seen[-1], RecordingStopped) and seen[-1].frames == 100


async def test_a_directory_that_cannot_be_written_fails_the_recording_only(tmp_path: Path, demo_frames, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.ERROR, logger="arcly_trio.recording")
    (tmp_path / "live").write_bytes(b"a file where the app's directory should be")
    recorder = FlvRecorder(tmp_path)
    async with recording(recorder) as engine:
        async with engine.publish("live/demo") as publisher:
            for frame in demo_frames[:100]:
                await publisher.send(frame)
            assert engine.stream(publisher.key).publishing
        await finished(recorder)
    assert isinstance(recorder.history[-1], RecordingFailed)
    assert any("stopped by a storage error" in r.getMessage() for r in caplog.records)


async def test_only_apps_that_record(tmp_path: Path, demo_frames) -> None:  # type: ignore[no-untyped-def]
    recorder = FlvRecorder(tmp_path)
    engine = Engine.builder().application(AppSpec("live")).service(recorder).build()
    async with engine:
        async with engine.publish("live/demo") as publisher:
            await publisher.send(demo_frames[0])
        await trio.sleep(0.05)
    assert files(tmp_path) == [] and not recorder.history
    assert FlvRecorder(tmp_path, all_apps=True).applies_to(AppSpec("live"))


# ------------------------------------------------------------ (merged)
async def test_a_session_that_sends_no_configs_and_goes_on_forward_gets_its_own_file(  # type: ignore[no-untyped-def]
    tmp_path: Path, demo_frames
) -> None:
    """A publisher back within the grace that sends neither configs nor a timestamp going back
    (what the retired ``SessionTracker`` guessed sessions from) still starts a new file."""
    recorder = FlvRecorder(tmp_path)
    later = [frame for frame in demo_frames[200:400] if not frame.config]
    async with recording(recorder, AppSpec("live", record=True, reconnect_grace=5)) as engine:
        for frames in (demo_frames[:200], later):
            async with engine.publish("live/demo") as publisher:
                for frame in frames:
                    await publisher.send(frame)
            await trio.sleep(0.05)
        engine.application("live").streams()[0].shutdown()
        await finished(recorder, 2)
    first, second = files(tmp_path)
    assert NAME.fullmatch(first.name) and NAME.fullmatch(second.name)
    one, two = sorted((flv.read_frames(path.read_bytes()) for path in (first, second)), key=len, reverse=True)
    assert len(one) == 200
    assert two and {f.dts for f in two} <= {f.dts for f in later}  # from the new session's first keyframe
    reasons = [e.reason for e in recorder.history if isinstance(e, RecordingStopped)]
    assert reasons == ["new publish session", "shutdown"]
