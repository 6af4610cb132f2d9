"""Fan-out benchmark of the arcly-trio kernel against the bare trio primitive.

For each N subscribers, one publisher sends the synthetic 30 fps video + 46.875 fps audio
pattern (``arcly_trio.testing.frames``) as fast as the kernel accepts it, with no pacing, to N
in-process subscribers that drain their queues with ``Subscription.next_batch``. Deliveries
(frames received, summed over subscribers) are counted over a fixed wall-clock window after a
warm-up.

In the same run the bare limit of the primitive is measured: the same frames pushed with
``send_nowait`` through N raw trio memory channels of the same capacity to N tasks draining them
with ``async for``, by a publisher loop that offers each frame to every channel (dropping and
counting on ``WouldBlock``) and then yields with ``await trio.sleep(0)``.

Each (N, mode) runs in a fresh subprocess, so ``peak_rss_mb`` (VmHWM) belongs to that N alone.
``bytes_per_subscriber`` is (RSS with N subscribers attached, each with its draining task parked
waiting for a frame, minus RSS before they were created) / N: channel, Subscription, context
manager and task included. It is only meaningful for large N (RSS moves in 4 KiB pages).

Usage::

    python benchmarks/fanout.py                 # N = 1, 10, 100, 1000, 10000
    python benchmarks/fanout.py --quick         # N = 1000 only, under 20 s
    python benchmarks/fanout.py --subscribers 100,1000 --seconds 5
    python benchmarks/fanout.py --split         # where a subscriber's bytes go (tracemalloc)

One JSON line per N is printed on stdout; progress and notes go to stderr. This is a
benchmark, not a test: it asserts nothing, it reports.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import platform
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import trio
import trio.testing

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from arcly_trio.kernel.engine import Engine  # noqa: E402
from arcly_trio.kernel.frame import Frame  # noqa: E402
from arcly_trio.kernel.spec import AppSpec  # noqa: E402
from arcly_trio.testing.frames import synthetic_stream  # noqa: E402

DEFAULT_SUBSCRIBERS = (1, 10, 100, 1000, 10000)
KEY = "bench/s"
# Capacity of every subscriber queue, kernel and raw alike.
QUEUE = 256
# Frames a publisher may have in flight to the stream task. The stream task offers a whole
# ingest batch (up to this many frames, plus one per blocked sender) to each subscriber without
# yielding, and a subscriber that is scheduled late in a round can find two batches queued: the
# queue must hold 2 x (INGEST + 2) for a subscriber that drains everything it is given never to
# drop. 64 leaves a 2x margin under 256 and is big enough to amortise the per-batch task switch.
INGEST = 64
BATCH_LIMIT = 1024  # next_batch limit: larger than the queue, so a wake-up takes everything
GOPS = 10  # distinct GOPs cycled by the publisher (154 frames each: 60 video + 94 audio)


# ------------------------------------------------------------------ helpers


def _status(field: str) -> int:
    """A ``/proc/self/status`` field in bytes (VmRSS, VmHWM)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def rss() -> int:
    gc.collect()
    return _status("VmRSS")


def peak_rss() -> int:
    return _status("VmHWM")


def make_frames() -> tuple[list[Frame], list[Frame]]:
    """(metadata and configs, the GOP frames that the publisher cycles through)."""
    frames = list(synthetic_stream(GOPS))
    head = [f for f in frames if f.config]
    body = [f for f in frames if not f.config]
    return head, body


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Window:
    """Snapshots a delivery counter at the end of the warm-up and of the window, then stops."""

    def __init__(self, warmup: float, seconds: float, counter: list[int]) -> None:
        self.warmup = warmup
        self.seconds = seconds
        self.counter = counter
        self.done = False
        self.deliveries = 0
        self.elapsed = 0.0

    async def run(self) -> None:
        await trio.sleep(self.warmup)
        c0, t0 = self.counter[0], time.perf_counter()
        await trio.sleep(self.seconds)
        c1, t1 = self.counter[0], time.perf_counter()
        self.deliveries, self.elapsed = c1 - c0, t1 - t0
        self.done = True


# ------------------------------------------------------------ the kernel run


async def kernel_run(n: int, seconds: float, warmup: float, queue: int, ingest: int) -> dict[str, Any]:
    spec = AppSpec("bench", subscriber_queue=queue, ingest_queue=ingest)
    engine = Engine.builder().application(spec).build()
    head, body = make_frames()
    counter = [0]
    attached = [0]
    all_attached = trio.Event()
    window = Window(warmup, seconds, counter)

    async def subscriber() -> None:
        async with engine.subscribe(KEY) as sub:
            attached[0] += 1
            if attached[0] == n:
                all_attached.set()
            next_batch = sub.next_batch
            while batch := await next_batch(BATCH_LIMIT):
                counter[0] += len(batch)

    async with engine:
        async with engine.publish(KEY) as pub:
            stream = engine.streams()[0]
            await trio.testing.wait_all_tasks_blocked()
            before = rss()
            async with trio.open_nursery() as nursery:
                for _ in range(n):
                    nursery.start_soon(subscriber)
                await all_attached.wait()
                await trio.testing.wait_all_tasks_blocked()
                attached_rss = rss()
                nursery.start_soon(window.run)
                for frame in head:
                    await pub.send(frame)
                send = pub.send
                frames = itertools.cycle(body)
                published = len(head)
                while not window.done:
                    await send(next(frames))
                    published += 1
                pub.close()  # the stream ends once its queued frames are delivered
            drops = stream.drops_total
    return {
        "deliveries": window.deliveries,
        "elapsed": window.elapsed,
        "drops": drops,
        "published": published,
        "bytes_per_subscriber": (attached_rss - before) / n,
        "peak_rss": peak_rss(),
    }


# --------------------------------------------------------------- the raw run


async def raw_run(n: int, seconds: float, warmup: float, queue: int) -> dict[str, Any]:
    head, body = make_frames()
    counter = [0]
    window = Window(warmup, seconds, counter)
    drops = 0

    async def drainer(receive: trio.MemoryReceiveChannel[Frame]) -> None:
        async with receive:
            async for _frame in receive:
                counter[0] += 1

    await trio.testing.wait_all_tasks_blocked()
    before = rss()
    async with trio.open_nursery() as nursery:
        sends = []
        for _ in range(n):
            send, receive = trio.open_memory_channel[Frame](queue)
            sends.append(send)
            nursery.start_soon(drainer, receive)
        await trio.testing.wait_all_tasks_blocked()
        attached_rss = rss()
        nursery.start_soon(window.run)
        offers = [send.send_nowait for send in sends]
        frames = itertools.chain(head, itertools.cycle(body))
        published = 0
        while not window.done:
            frame = next(frames)
            for offer in offers:
                try:
                    offer(frame)
                except trio.WouldBlock:
                    drops += 1
            published += 1
            await trio.sleep(0)
        for send in sends:
            send.close()
    return {
        "deliveries": window.deliveries,
        "elapsed": window.elapsed,
        "drops": drops,
        "published": published,
        "bytes_per_subscriber": (attached_rss - before) / n,
        "peak_rss": peak_rss(),
    }


# ------------------------------------------------- where a subscriber's bytes go


async def split_run(n: int, queue: int) -> dict[str, float]:
    """Bytes per subscriber by part, from tracemalloc (Python allocations only)."""
    spec = AppSpec("bench", subscriber_queue=queue, ingest_queue=INGEST)
    engine = Engine.builder().application(spec).build()
    out: dict[str, float] = {}

    def measure(name: str, make: Callable[[], Any]) -> Any:
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        kept = make()
        gc.collect()
        out[name] = (tracemalloc.get_traced_memory()[0] - base) / n
        tracemalloc.stop()
        return kept

    async def idle_task() -> None:
        await trio.sleep_forever()

    async def raw_drainer(receive: trio.MemoryReceiveChannel[Frame]) -> None:
        async for _frame in receive:
            pass

    async def kernel_subscriber(ready: list[int]) -> None:
        async with engine.subscribe(KEY) as sub:
            ready[0] += 1
            while await sub.next_batch(BATCH_LIMIT):
                pass

    async def spawn_and_park(nursery: trio.Nursery, fn: Callable[..., Any], args: list[tuple[Any, ...]]) -> None:
        for a in args:
            nursery.start_soon(fn, *a)
        await trio.testing.wait_all_tasks_blocked()

    async with engine:
        async with engine.publish(KEY):
            await trio.testing.wait_all_tasks_blocked()
            async with trio.open_nursery() as nursery:
                # a raw channel pair
                pairs = measure("raw channel pair", lambda: [trio.open_memory_channel[Frame](queue) for _ in range(n)])
                # a parked task (bare: sleep_forever)
                gc.collect()
                tracemalloc.start()
                base = tracemalloc.get_traced_memory()[0]
                await spawn_and_park(nursery, idle_task, [() for _ in range(n)])
                gc.collect()
                out["bare parked task"] = (tracemalloc.get_traced_memory()[0] - base) / n
                # a raw drainer task parked in `async for` on a channel it was given
                base = tracemalloc.get_traced_memory()[0]
                await spawn_and_park(nursery, raw_drainer, [(rx,) for _, rx in pairs])
                gc.collect()
                out["raw drainer task (async for)"] = (tracemalloc.get_traced_memory()[0] - base) / n
                tracemalloc.stop()
                # Subscriptions created synchronously (no task): object + channel + bookkeeping
                stream = engine.streams()[0]
                from arcly_trio.kernel.keys import Credentials

                subs = measure(
                    "Subscription incl. its channel (no task)",
                    lambda: [stream.add_subscriber(i, Credentials(), "", queue) for i in range(n)],
                )
                sub0 = subs[0]
                out["  of which channel pair (estimate)"] = out["raw channel pair"]
                out["  of which Subscription object + __dict__"] = float(
                    sys.getsizeof(sub0) + sys.getsizeof(sub0.__dict__)
                )
                out["  of which Credentials"] = float(
                    sys.getsizeof(Credentials()) + sys.getsizeof(Credentials().query) + sys.getsizeof({})
                )
                for s in subs:
                    stream.remove_subscriber(s, __import__("arcly_trio.kernel.subscription").kernel.subscription.EndReason.UNSUBSCRIBED)
                    s._close()
                del subs, sub0
                # the full kernel subscriber: engine.subscribe() context + draining task
                ready = [0]
                gc.collect()
                tracemalloc.start()
                base = tracemalloc.get_traced_memory()[0]
                await spawn_and_park(nursery, kernel_subscriber, [(ready,) for _ in range(n)])
                gc.collect()
                out["kernel subscriber (subscribe ctx + Subscription + channel + task)"] = (
                    tracemalloc.get_traced_memory()[0] - base
                ) / n
                tracemalloc.stop()
                for send, _ in pairs:
                    send.close()
                nursery.cancel_scope.cancel()
    return out


# ----------------------------------------------------------------- driver


def child(mode: str, n: int, args: argparse.Namespace) -> None:
    if mode == "kernel":
        result = trio.run(kernel_run, n, args.seconds, args.warmup, args.queue, args.ingest)
    else:
        result = trio.run(raw_run, n, args.seconds, args.warmup, args.queue)
    print(json.dumps(result))


def run_child(mode: str, n: int, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [
        sys.executable, __file__, "--child", mode, "--subscribers", str(n),
        "--seconds", str(args.seconds), "--warmup", str(args.warmup),
        "--queue", str(args.queue), "--ingest", str(args.ingest),
    ]
    done = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(n: int, args: argparse.Namespace) -> dict[str, Any]:
    kernel = run_child("kernel", n, args)
    raw = run_child("raw", n, args)
    rate = kernel["deliveries"] / kernel["elapsed"]
    raw_rate = raw["deliveries"] / raw["elapsed"]
    return {
        "subscribers": n,
        "deliveries_per_s": round(rate),
        "raw_trio_deliveries_per_s": round(raw_rate),
        "ratio": round(rate / raw_rate, 3),
        "peak_rss_mb": round(kernel["peak_rss"] / 2**20, 1),
        "bytes_per_subscriber": round(kernel["bytes_per_subscriber"]),
        "drops": kernel["drops"],
        "raw_drops": raw["drops"],
        "raw_peak_rss_mb": round(raw["peak_rss"] / 2**20, 1),
        "raw_bytes_per_subscriber": round(raw["bytes_per_subscriber"]),
        "frames_published": kernel["published"],
        "raw_frames_published": raw["published"],
        "seconds": args.seconds,
        "queue": args.queue,
        "ingest_queue": args.ingest,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="N = 1000 only (under 20 s)")
    parser.add_argument("--subscribers", default=None, help="comma-separated N values")
    parser.add_argument("--seconds", type=float, default=None, help="measurement window per run")
    parser.add_argument("--warmup", type=float, default=0.5, help="warm-up before the window")
    parser.add_argument("--queue", type=int, default=QUEUE, help="subscriber queue capacity")
    parser.add_argument("--ingest", type=int, default=INGEST, help="publisher ingest queue")
    parser.add_argument("--split", action="store_true", help="per-subscriber memory by part")
    parser.add_argument("--record", type=Path, default=None,
                        help="also append the lines, with date and machine, to this JSONL file")
    parser.add_argument("--child", choices=["kernel", "raw"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.split:
        n = int(args.subscribers or 1000)
        for name, value in trio.run(split_run, n, args.queue).items():
            print(f"{value:10.0f}  {name}")
        return
    if args.seconds is None:
        args.seconds = 2.0 if args.quick else 3.0
    if args.child:
        child(args.child, int(args.subscribers), args)
        return
    if args.subscribers:
        counts = [int(x) for x in args.subscribers.split(",")]
    else:
        counts = [1000] if args.quick else list(DEFAULT_SUBSCRIBERS)
    meta = {
        "run": "quick" if args.quick else "full",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "trio": trio.__version__,
    }
    for n in counts:
        line = measure(n, args)
        print(json.dumps(line), flush=True)
        if line["drops"] or line["raw_drops"]:
            log(f"note: N={n}: {line['drops']} kernel drops, {line['raw_drops']} raw drops: "
                "deliveries were lost, the rates do not compare like for like")
        if args.record:
            with args.record.open("a") as f:
                f.write(json.dumps({**line, **meta}) + "\n")


if __name__ == "__main__":
    main()
