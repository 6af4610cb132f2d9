"""``--workers 2`` against one worker: the largest N RTMP players that keep up, by bisection.

Runs the shared fan-out harness (``fanout.sh custom`` from a writable copy of
``shared/bench``, with its load generator and its ``media/sample.flv`` publisher) against
``arcly-trio serve`` with ``--workers 1`` and with ``--workers 2``, in the same session, and for
each finds the largest N whose players keep up (at least 95 % of them receive at least 95 % of
the publisher's rate over the window; a saturated generator counts as not keeping up) by
stepping up then bisecting, as ``run-matrix.sh`` does. Prints one JSON line per run, then the
two maxima, their ratio and the startup p50 of each at its largest good N.

Placement on a 2-core machine: the harness pins its generator and the ffmpeg publisher to
CPU 1. One worker is pinned to CPU 0 (the harness's rule for a server). Two workers run on
CPUs 0 and 1 (the second shares CPU 1 with the generator: that is the machine there is).

    .venv/bin/python benchmarks/workers.py --bench /tmp/bench            # both, default steps
    .venv/bin/python benchmarks/workers.py --bench /tmp/bench --only 2 --start 1500

``--bench`` is a writable copy of the harness prepared with ``WITH_UVLOOP=1 ./setup-peers.sh``
(and ``./make-sample.sh`` if it has no sample).
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(workers: int, port: int) -> subprocess.Popen[bytes]:
    cpus = "0" if workers == 1 else "0,1"
    command = [
        "taskset",
        "-c",
        cpus,
        sys.executable,
        "-m",
        "arcly_trio",
        "serve",
        "--host",
        "127.0.0.1",
        "--rtmp-port",
        str(port),
        "--http-port",
        "-1",
        "--log-level",
        "warning",
        "--workers",
        str(workers),
    ]
    process = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            time.sleep(1.5)  # every worker up
            return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit(f"the server with {workers} workers did not start")


def measure(bench: Path, workers: int, n: int, seconds: int) -> dict[str, object]:
    port = free_port()
    server = start_server(workers, port)
    try:
        result = subprocess.run(
            [
                "./fanout.sh",
                "custom",
                str(n),
                str(seconds),
                "--port",
                str(port),
                "--server-pid",
                str(server.pid),
                "--label",
                f"arcly-trio-w{workers}",
            ],
            cwd=bench,
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        return {"workers": workers, "N": n, "failed": True, "stderr": result.stderr[-500:]}
    line = json.loads(lines[-1])
    line["workers"] = workers
    return line


IGNORE_SATURATION = False


def good(line: dict[str, object]) -> bool:
    if line.get("failed") or float(line.get("kept_up_ratio") or 0) < 0.95:  # type: ignore[arg-type]
        return False
    return IGNORE_SATURATION or not line.get("gen_saturated")


def largest(bench: Path, workers: int, start: int, step: float, bisect: int, seconds: int) -> tuple[int, dict]:  # type: ignore[type-arg]
    last_good, first_bad, best = 0, None, {}
    n = start
    while first_bad is None and n <= 8000:
        line = measure(bench, workers, n, seconds)
        print(json.dumps(line), flush=True)
        if good(line):
            last_good, best, n = n, line, int(n * step)
        else:
            first_bad = n
    for _ in range(bisect):
        if first_bad is None:
            break
        mid = (last_good + first_bad) // 2
        if mid <= last_good or mid >= first_bad:
            break
        line = measure(bench, workers, mid, seconds)
        print(json.dumps(line), flush=True)
        if good(line):
            last_good, best = mid, line
        else:
            first_bad = mid
    return last_good, best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bench", type=Path, required=True, help="a writable, set-up copy of shared/bench")
    parser.add_argument("--only", type=int, choices=[1, 2], help="measure one configuration only")
    parser.add_argument("--start", type=int, default=800, help="first N (default 800)")
    parser.add_argument("--step", type=float, default=1.4, help="N grows by this factor until it fails (1.4)")
    parser.add_argument("--bisect", type=int, default=3, help="bisection steps (3)")
    parser.add_argument("--seconds", type=int, default=20, help="measurement window (20)")
    parser.add_argument(
        "--ignore-saturation",
        action="store_true",
        help="judge by kept_up alone (a shared machine keeps CPU 1 busy: the harness then "
        "flags every run as saturated; the flag is still recorded)",
    )
    args = parser.parse_args()
    global IGNORE_SATURATION
    IGNORE_SATURATION = args.ignore_saturation
    found: dict[int, tuple[int, dict]] = {}  # type: ignore[type-arg]
    for workers in [args.only] if args.only else [1, 2]:
        start = args.start if workers == 1 or args.only else max(args.start, found[1][0])
        found[workers] = largest(args.bench, workers, start, args.step, args.bisect, args.seconds)
    summary: dict[str, object] = {"summary": True}
    for workers, (n, line) in found.items():
        summary[f"max_N_w{workers}"] = n
        summary[f"startup_p50_ms_w{workers}"] = line.get("startup_p50_ms")
        summary[f"cpu_pct_w{workers}"] = line.get("server_cpu_pct")
    if 1 in found and 2 in found and found[1][0]:
        summary["ratio"] = round(found[2][0] / found[1][0], 2)
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
