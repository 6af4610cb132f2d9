"""Where a playing viewer's memory goes: tracemalloc, by allocation site, per viewer.

Runs the arcly-trio server in this process (the CLI's engine, from this checkout), publishes
the shared harness's clip with ffmpeg, starts the harness's load generator with N viewers of
one protocol (RTMP, HTTP-FLV, or WebSocket-FLV through ``benchmarks/egress.py``'s shim), and
once they all play compares two tracemalloc snapshots (before the viewers, and with them) by
the allocating line. Prints the bytes per viewer in all and the largest sites, grouped by what
they are; Python allocations only (RSS adds allocator slack and page rounding: compare with
``benchmarks/egress.py``'s RSS per viewer).

Usage::

    python benchmarks/viewer_memory.py --protocol rtmp --viewers 500
    python benchmarks/viewer_memory.py --protocol ws-flv --viewers 500 --work /tmp/arcly-egress-bench

A benchmark, not a test: it asserts nothing, it reports.
"""

from __future__ import annotations

import argparse
import gc
import os
import subprocess
import sys
import tracemalloc
from collections import defaultdict
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from arcly_trio.core.keys import StreamKey  # noqa: E402
from arcly_trio.server import cli  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from egress import prepare  # noqa: E402

RTMP_PORT, HTTP_PORT = 19470, 19471


def group(filename: str) -> str:
    """What an allocation site is, by the module that made it."""
    name = filename.replace(os.sep, "/")
    for part, label in (
        ("/trio/", "trio (task, socket, epoll registration, cancel scopes)"),
        ("/h11/", "h11 (the request)"),
        ("/wsproto/", "wsproto (the viewer's WebSocket)"),
        ("/protocols/rtmp/", "RTMP session (sans-IO)"),
        ("/workers/", "worker (connection, sink, egress)"),
        ("/kernel/", "kernel (subscriber record)"),
        ("/media/", "per-frame encodings (shared)"),
        ("/protocols/http/", "HTTP request"),
        ("/core/", "core (keys, credentials, frame caches)"),
    ):
        if part in name:
            return label
    return "other"


async def main(args: argparse.Namespace) -> None:
    options = cli.build_parser().parse_args(
        [
            "serve",
            "--rtmp-port",
            str(RTMP_PORT),
            "--http-port",
            str(HTTP_PORT),
            "--host",
            "127.0.0.1",
            "--log-level",
            "warning",
            "--max-connections",
            "20000",
            "--max-idle-per-ip",
            "20000",
        ]
    )
    engine, _, _ = cli.build_engine(options)
    n = args.viewers
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.serve)
        gc.collect()
        gc.freeze()
        publisher = subprocess.Popen(
            [
                "ffmpeg",
                "-hide_banner",
                "-nostdin",
                "-loglevel",
                "error",
                "-re",
                "-stream_loop",
                "-1",
                "-i",
                str(args.work / "media" / "sample.flv"),
                "-c",
                "copy",
                "-f",
                "flv",
                f"rtmp://127.0.0.1:{RTMP_PORT}/live/bench",
            ]
        )
        generator = None
        try:
            while not engine.streams():
                await trio.sleep(0.2)
            await trio.sleep(4)  # the GOP cache fills
            tracemalloc.start(8)
            gc.collect()
            before = tracemalloc.take_snapshot()
            viewers = (
                ["-n", str(n)] if args.protocol == "rtmp" else ["-n", "0", "-m", str(n), "--http-port", str(HTTP_PORT)]
            )
            if args.protocol == "ws-flv":
                viewers.append("--ws")
            python = args.work / ".peers" / "venv" / "bin" / "python"
            generator = subprocess.Popen(
                [
                    str(python if python.exists() else sys.executable),
                    "rtmpload.py",
                    "--port",
                    str(RTMP_PORT),
                    *viewers,
                    "--seconds",
                    "30",
                    "--warmup",
                    "1",
                    "--ramp",
                    "2",
                    "--expected-kbps",
                    "1665",
                ],
                cwd=args.work,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            stream = engine.stream(StreamKey("live", "bench"))
            while stream.stats().subscribers < n:
                await trio.sleep(0.2)
            await trio.sleep(4)
            gc.collect()
            after = tracemalloc.take_snapshot()
        finally:
            for process in (generator, publisher):
                if process is not None:
                    process.kill()
            nursery.cancel_scope.cancel()
    stats = after.compare_to(before, "lineno")
    total = sum(stat.size_diff for stat in stats)
    print(f"{args.protocol}, {n} viewers: {total / n:,.0f} B per viewer (Python allocations)")
    groups: dict[str, float] = defaultdict(float)
    for stat in stats:
        groups[group(stat.traceback[0].filename)] += stat.size_diff / n
    for label, size in sorted(groups.items(), key=lambda item: -item[1]):
        print(f"{size:8,.0f} B  {label}")
    print("largest sites:")
    for stat in stats[: args.top]:
        frame = stat.traceback[0]
        print(
            f"{stat.size_diff / n:8,.0f} B  {stat.count_diff / n:5.1f} blocks  "
            f"{os.path.relpath(frame.filename, ROOT) if str(ROOT) in frame.filename else frame.filename}:{frame.lineno}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--protocol", choices=("rtmp", "http-flv", "ws-flv"), default="rtmp")
    parser.add_argument("--viewers", type=int, default=500)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--harness", type=Path, default=ROOT.parent / "shared" / "bench")
    parser.add_argument("--work", type=Path, default=Path("/tmp/arcly-egress-bench"))
    arguments = parser.parse_args()
    prepare(arguments.harness, arguments.work)
    trio.run(main, arguments)
