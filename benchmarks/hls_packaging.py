"""HLS packaging benchmark: the CPU (or instructions) per published frame of one stream's CMAF
packaging alone, in-process.

A :class:`~arcly_trio.services._hls_cmaf.CmafPackaging` (``--variant``: ``ll`` LL-HLS, ``fmp4``,
``dvr`` LL-HLS with a 40-segment window and delta updates, ``muxed``) packages ``--seconds`` of
the demo clip (:func:`arcly_trio.testing.frames.real_stream`) in batches of ``--batch`` frames, as
the service's loop takes them; its host stores nothing (it counts what a storage would hold),
so what is measured is the packager, the fMP4 writer and the lists. Nobody reads the lists.

Printed (one JSON line): the frames, ``runs``, and the best CPU time per frame of the runs
(``time.process_time``). For a count that does not depend on the machine's load, run it under
callgrind with ``--runs 1`` and ``--runs 0`` (setup only) and divide the difference of the
instructions by the frames::

    python benchmarks/hls_packaging.py --variant ll
    valgrind --tool=callgrind python benchmarks/hls_packaging.py --runs 1   # minus --runs 0

Run it alternated against two checkouts to compare before and after: ``PYTHONPATH=CHECKOUT``
packages with that checkout's code (this script needs nothing else of it). This is a benchmark, not a
test: it asserts nothing, it reports.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parent.parent
if importlib.util.find_spec("arcly_trio") is None:  # (with PYTHONPATH set, another checkout's code: "before")
    sys.path.insert(0, str(ROOT))

from arcly_trio.core.frame import Frame  # noqa: E402
from arcly_trio.core.keys import StreamKey  # noqa: E402
from arcly_trio.services._hls_cmaf import CmafPackaging  # noqa: E402
from arcly_trio.services._hls_held import HeldBytes  # noqa: E402
from arcly_trio.testing.frames import real_stream  # noqa: E402

VARIANTS: dict[str, dict[str, Any]] = {
    "ll": {"low_latency": True},
    "fmp4": {"low_latency": False},
    "dvr": {"low_latency": True, "window": 40},
    "muxed": {"low_latency": True, "muxed": True},
}


class CountingHost:
    """The service's side of a packaging (:class:`~arcly_trio.services._hls_base.PackagingHost`),
    storing nothing: it counts the stores and the bytes held, as the service does."""

    target_duration = 2.0
    part_duration = 1 / 3
    window = 6
    max_segment_bytes = 64 * 1024 * 1024
    part_delete_delay = 6.0

    def __init__(self) -> None:
        self.live: dict[str, Any] = {}
        self.stores = 0

    async def store(self, key: str, data: bytes, held: HeldBytes | None = None) -> None:
        self.stores += 1
        if held is not None:
            held.stored(key, len(data))

    def expire(self, key: str, delay: float | None = None, held: HeldBytes | None = None) -> None:
        pass

    def lists_changed(self) -> None:
        pass


async def package(frames: list[Frame], variant: str, batch: int) -> None:
    packaging = CmafPackaging(CountingHost(), StreamKey("live", "bench"), "t0", **VARIANTS[variant])  # type: ignore[arg-type]
    for at in range(0, len(frames), batch):
        events: list[object] = []
        for frame in frames[at : at + batch]:
            events += packaging.push(frame)
        await packaging.apply(events)
    await packaging.apply(packaging.finish())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="ll")
    parser.add_argument("--seconds", type=float, default=120.0, help="seconds of media packaged")
    parser.add_argument("--batch", type=int, default=3, help="frames per batch")
    parser.add_argument("--runs", type=int, default=5, help="runs (0: the setup alone, for callgrind)")
    args = parser.parse_args()
    frames = []
    for frame in real_stream():
        if frame.dts > args.seconds * 1000:
            break
        frames.append(frame)
    best = float("inf")
    for _ in range(args.runs):
        start = time.process_time()
        trio.run(package, frames, args.variant, args.batch)
        best = min(best, time.process_time() - start)
    print(
        json.dumps(
            {
                "benchmark": "hls-packaging",
                "variant": args.variant,
                "frames": len(frames),
                "runs": args.runs,
                "cpu_us_per_frame": round(best / len(frames) * 1e6, 2) if args.runs else None,
            }
        )
    )


if __name__ == "__main__":
    main()
