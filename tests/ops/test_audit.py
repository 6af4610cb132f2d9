"""The audit pipeline's writer (arcly_trio.ops.audit.AuditPipeline.run): what it took out of its
queue is written even when the engine stops right then."""

from __future__ import annotations

from typing import Any

import trio

from arcly_trio.ops.audit import AuditPipeline


class CheckpointingSink:
    """A sink that checkpoints before it writes, as a worker thread's start does
    (``trio.to_thread.run_sync`` raises ``Cancelled`` there, before the thread runs)."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    async def write(self, records: list[dict[str, Any]]) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        self.records.extend(records)

    async def aclose(self) -> None:
        pass


async def test_a_batch_taken_when_the_pipeline_is_cancelled_is_still_written() -> None:
    """The file audit log lost the last allowed play of tests/workers/test_attacks.py now and
    then: the writer had taken the record and was cancelled at the thread's start. Mutant
    killed: the taken batch forgotten on cancellation."""
    sink = CheckpointingSink()
    pipeline = AuditPipeline(sink, refusal_interval=0)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(pipeline.run)
            pipeline.record({"event": "test", "n": 1})  # wakes the writer, which takes it...
            nursery.cancel_scope.cancel()  # ...and is cancelled before it writes
    assert [record["n"] for record in sink.records] == [1]
    assert pipeline.written == 1
