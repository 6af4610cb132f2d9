"""Recording cuts a file per publish session as the kernel announces it (not as frames suggest)."""

from __future__ import annotations

from pathlib import Path

import trio

from arcly_trio import AppSpec
from arcly_trio.media import flv
from arcly_trio.services import FlvRecorder, RecordingStopped
from tests.test_recording import NAME, files, finished, recording


async def test_a_session_that_sends_no_configs_and_goes_on_forward_gets_its_own_file(  # type: ignore[no-untyped-def]
        tmp_path: Path, demo_frames) -> None:
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
