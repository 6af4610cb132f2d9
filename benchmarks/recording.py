"""Recording benchmark: N streams recorded at once, on one core, and how late the loop ran.

N in-process publishers each send the demo clip (640x360 H.264 + AAC, about 0.7 Mbit/s, a
keyframe every 2 s: ``arcly_trio.testing.frames.real_stream``) in real time, paced by their
timestamps, to an engine with the :class:`~arcly_trio.services.recordings.Recorder` (fMP4
segments of ``--segment`` seconds into a temporary directory, ``--dir`` to choose where). The
process is pinned to one CPU (``--cpus``), worker threads included, so the file I/O competes
with the loop as it would on a loaded server; the cyclic collector's start-up objects are
frozen as ``arcly-trio serve`` freezes them. A :class:`~arcly_trio.kernel.loopwatch.LoopWatch`
(10 ms ticks) measures how late the event loop wakes up: its worst lag is the longest stall
any stream saw. On a shared machine that includes the time other processes took the CPU away;
``worst_batch_cpu_ms`` (a trio instrument: the main thread's CPU time between two I/O waits,
one scheduler batch) is the loop's own longest stall, whatever the neighbours do.

Printed (one JSON line on stdout): the worst loop stall and the 99th percentile of the
per-second worsts (ms), the frames the recorder missed because it fell behind
(``lagged_frames``: 0 means it never slowed down enough for the fan-out to drop anything for
it), media seconds recorded, bytes written, segments, the CPU used (share of the one core) and
the publishers' own pacing lateness (how far behind real time they fell: a stall there is
the loop's too).

Usage::

    python benchmarks/recording.py                       # 100 streams, 20 s, one CPU
    python benchmarks/recording.py --streams 200 --seconds 30 --segment 10
    python benchmarks/recording.py --baseline            # the same publishers, nothing recorded

This is a benchmark, not a test: it asserts nothing, it reports.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from arcly_trio.core.frame import Frame  # noqa: E402
from arcly_trio.kernel.engine import Engine  # noqa: E402
from arcly_trio.kernel.loopwatch import LoopWatch  # noqa: E402
from arcly_trio.kernel.spec import AppSpec  # noqa: E402
from arcly_trio.services.recordings import Catalog, Recorder  # noqa: E402
from arcly_trio.testing.frames import real_stream  # noqa: E402


def clip(seconds: float) -> list[Frame]:
    """The demo clip's configs and ``seconds`` of its media (looped)."""
    out: list[Frame] = []
    for frame in real_stream():
        if not frame.config and frame.dts > seconds * 1000:
            return out
        out.append(frame)
    raise AssertionError("unreachable")


class BatchClock(trio.abc.Instrument):
    """The main thread's CPU time in each scheduler batch (between two I/O waits): the loop's
    own stalls, whatever other processes on the machine take from it."""

    def __init__(self) -> None:
        self.started = time.thread_time()
        self.batches: list[float] = []

    def after_io_wait(self, timeout: float) -> None:
        self.started = time.thread_time()

    def before_io_wait(self, timeout: float) -> None:
        self.batches.append(time.thread_time() - self.started)


async def publish(engine: Engine, key: str, frames: list[Frame], start: float, lateness: list[float]) -> None:
    """Send ``frames`` at their timestamps from ``start`` (trio clock), a tick's worth at a time."""
    async with engine.publish(key) as publisher:
        i = 0
        while i < len(frames):
            due = start + max(frames[i].dts, 0) / 1000
            now = trio.current_time()
            if due > now:
                await trio.sleep(due - now)
            else:
                lateness.append(now - due)
            now = trio.current_time()
            while i < len(frames) and start + max(frames[i].dts, 0) / 1000 <= now:
                await publisher.send(frames[i])
                i += 1


async def run(streams: int, seconds: float, segment: float, directory: Path, record: bool = True) -> dict[str, Any]:
    frames = clip(seconds)
    recorder = Recorder(directory, segment_seconds=segment)
    builder = Engine.builder().application(AppSpec("bench", record=record, ingest_queue=256))
    engine = (builder.service(recorder) if record else builder).build()
    watch = LoopWatch(interval=0.01, window=3600)
    lateness: list[float] = [0.0]
    clock = BatchClock()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    wall0 = time.perf_counter()
    async with engine:
        gc.collect()  # as ``arcly-trio serve`` does once started
        gc.freeze()
        async with trio.open_nursery() as nursery:
            await nursery.start(watch.run)
            trio.lowlevel.add_instrument(clock)
            start = trio.current_time() + 0.5
            async with trio.open_nursery() as publishers:
                for n in range(streams):
                    publishers.start_soon(publish, engine, f"bench/s{n}", frames, start + n * 0.002, lateness)
            with trio.fail_after(30):
                while recorder.active:
                    await trio.sleep(0.05)
            now_after = trio.current_time()
            trio.lowlevel.remove_instrument(clock)
            nursery.cancel_scope.cancel()
    wall = time.perf_counter() - wall0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    catalog = Catalog(directory)
    media = 0.0
    segments = 0
    for key in await catalog.streams():
        records = await catalog.segments(key)
        segments += len(records)
        media += sum(r.duration for r in records)
    per_second = sorted(watch.per_second(now_after)[-int(wall) - 1 :])
    p99 = per_second[int(0.99 * (len(per_second) - 1))] if per_second else 0.0
    lateness.sort()
    return {
        "benchmark": "recording" if record else "recording-baseline",
        "streams": streams,
        "seconds": seconds,
        "segment_seconds": segment,
        "worst_stall_ms": round(watch.worst * 1000, 1),
        "p99_second_worst_ms": round(p99 * 1000, 1),
        "worst_batch_cpu_ms": round(max(clock.batches, default=0.0) * 1000, 1),
        "p999_batch_cpu_ms": round(sorted(clock.batches)[int(0.999 * (len(clock.batches) - 1))] * 1000, 1),
        "publisher_lateness_max_ms": round(lateness[-1] * 1000, 1),
        "lagged_frames": recorder.lagged_frames,
        "failures": recorder.failures,
        "media_seconds_recorded": round(media, 1),
        "bytes_written": recorder.bytes_written,
        "segments": segments,
        "cpu_share": round(cpu / wall, 3),
        "wall_seconds": round(wall, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--segment", type=float, default=60.0, help="recording segment seconds (default 60)")
    parser.add_argument("--cpus", default="0", help="pin to these CPUs, comma-separated (default 0: one core)")
    parser.add_argument("--dir", help="record here (default: a temporary directory, removed after)")
    parser.add_argument(
        "--baseline", action="store_true", help="the same publishers without the recorder (what the kernel costs)"
    )
    args = parser.parse_args()
    cpus = {int(c) for c in args.cpus.split(",") if c}
    if cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cpus)
    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        print(f"recording {args.streams} streams for {args.seconds:g} s into {directory}", file=sys.stderr)
        result = trio.run(run, args.streams, args.seconds, args.segment, Path(directory), not args.baseline)
    result.update(
        {
            "cpus": sorted(cpus),
            "python": platform.python_version(),
            "machine": platform.machine(),
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
        }
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
