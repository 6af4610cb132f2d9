#!/usr/bin/env python3
"""A burst of RTMP players from one address against ``arcly-trio serve`` with its default limits.

Issue 19: 3000 players from 127.0.0.1 connecting within ~8 s (a load balancer, a CGNAT, a test
rig) lost 267 of them, closed by the server in their handshake, because each address could hold
only ``--max-idle-per-ip`` (32) connections that did not play yet. This starts
``arcly-trio serve --demo`` (the built-in looping stream ``live/demo``) with nothing but ports
and ``--demo`` (plus ``--serve-args``), then runs the shared harness's load generator
(``shared/bench/rtmpload.py``, see its README): ``--players`` RTMP players of ``live/demo``, their
starts spread over ``--ramp`` seconds, at most ``--concurrency`` in set-up at once; once all
play (or failed), a ``--seconds`` window. It prints one JSON line: the generator's summary
(``kept_up``: players that received media through the whole window without an error;
``errors`` and ``error_kinds``: ``closed by server`` is an eviction or a refusal;
``server_cpu_pct``: the server's CPU over the window) and the server's warnings about evicted or
refused connections (the first of each burst and the per-burst counts, see
``workers/admission.py``).

A benchmark, not a test (``tests/workers/test_admission.py`` has the scaled-down burst). From the
repository root::

    .venv/bin/python benchmarks/burst.py                                  # 3000 players in 8 s
    .venv/bin/python benchmarks/burst.py --players 3000 --concurrency 256
    .venv/bin/python benchmarks/burst.py --serve-args "--max-idle-per-ip 100000"
"""

from __future__ import annotations

import argparse
import json
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited ({process.returncode})")
        try:
            socket.create_connection((HOST, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("the server did not start listening")


def run(args: argparse.Namespace) -> dict[str, Any]:
    rtmp, http = free_port(), free_port()
    command = [
        sys.executable,
        "-m",
        "arcly_trio",
        "serve",
        "--demo",
        "--host",
        HOST,
        "--rtmp-port",
        str(rtmp),
        "--http-port",
        str(http),
        "--log-level",
        "warning",
        *shlex.split(args.serve_args),
    ]
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_listening(rtmp, server)
            time.sleep(3)  # the demo publisher is on
            generator = [
                sys.executable,
                str(args.harness / "rtmpload.py"),
                "--port",
                str(rtmp),
                "--stream",
                "demo",
                "-n",
                str(args.players),
                "--ramp",
                str(args.ramp),
                "--connect-concurrency",
                str(args.concurrency),
                "--seconds",
                str(args.seconds),
                "--server-pid",
                str(server.pid),
            ]
            done = subprocess.run(generator, capture_output=True, text=True, check=False)
            lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
            if done.returncode != 0 or not lines:
                raise SystemExit(f"the load generator failed: {done.stderr.strip()[-500:]}")
            result: dict[str, Any] = json.loads(lines[-1])
        finally:
            server.terminate()
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        log.seek(0)
        warnings = [
            line
            for line in log.read().decode(errors="replace").splitlines()
            if "evicted" in line or "refused" in line or "closed to admit" in line or "was closed" in line
        ]
    keep = (
        "subs",
        "connected_playing",
        "kept_up",
        "errors",
        "error_kinds",
        "connect_phase_s",
        "startup_p50_ms",
        "startup_p99_ms",
        "server_cpu_pct",
        "server_rss_mb",
        "gen_saturated",
        "cpu0_busy_pct",
        "cpu1_busy_pct",
    )
    return {
        "players": args.players,
        "ramp_s": args.ramp,
        "concurrency": args.concurrency,
        "serve_args": args.serve_args,
        **{key: result.get(key) for key in keep},
        "server_admission_warnings": warnings[:6],
        "server_admission_warning_lines": len(warnings),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--players", type=int, default=3000)
    parser.add_argument("--ramp", type=float, default=8.0, help="spread the players' starts over this (s)")
    parser.add_argument("--concurrency", type=int, default=64, help="players in set-up at once, at most")
    parser.add_argument("--seconds", type=float, default=10.0, help="the window once all play (s)")
    parser.add_argument("--serve-args", default="", help="more options for arcly-trio serve")
    parser.add_argument(
        "--harness",
        type=Path,
        default=ROOT.parent / "shared" / "bench",
        help="the shared harness with rtmpload.py (default ../shared/bench)",
    )
    parser.add_argument("--record", type=Path, help="append the JSON line to this file")
    args = parser.parse_args()
    line = json.dumps(run(args))
    print(line, flush=True)
    if args.record:
        with args.record.open("a") as out:
            out.write(line + "\n")


if __name__ == "__main__":
    main()
