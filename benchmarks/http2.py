#!/usr/bin/env python3
"""HTTPS requests over HTTP/2 and HTTP/1.1 side by side: the server's CPU time per request.

Starts ``arcly-trio serve`` (no demo: nothing else runs on the loop) with HTTPS on a free port
and a throw-away certificate (trustme), then has ``curl`` fetch the same URL ``--requests``
times on one connection (curl reuses it for repeated URLs): once with ``--http1.1`` and once
with ``--http2``, alternating, ``--repeat`` times each; and once more with ``--parallel``
(HTTP/2: multiplexed streams on one connection; HTTP/1.1: up to 50 connections). For each run
it reads the server's user+system CPU time from ``/proc/PID/stat`` before and after, and prints
one JSON line per mode: the CPU microseconds per request of every run (a range: the machine may
be shared) and ``ratio_h2``, HTTP/2's median over HTTP/1.1's, measured in the same run.

    .venv/bin/python benchmarks/http2.py --requests 2000 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trustme

ROOT = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def start_server(directory: Path) -> tuple[subprocess.Popen[bytes], int, Path]:
    authority = trustme.CA()
    issued = authority.issue_cert("127.0.0.1", "localhost")
    ca, cert, key = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    authority.cert_pem.write_to_path(str(ca))
    cert.write_bytes(b"".join(pem.bytes() for pem in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(key))
    log = directory / "server.log"
    args = [sys.executable, "-m", "arcly_trio", "serve", "--host", "127.0.0.1", "--rtmp-port", "0",
            "--http-port", "0", "--webrtc-port", "-1", "--srt-port", "-1", "--rtsp-port", "-1", "--no-hls",
            "--https-port", "0", "--tls-cert", str(cert), "--tls-key", str(key)]  # fmt: skip
    process = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log.open("wb"))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        match = re.search(r"HTTPS listening on [\d.]+:(\d+)", log.read_text(errors="replace"))
        if match:
            return process, int(match.group(1)), ca
        time.sleep(0.1)
    process.kill()
    raise SystemExit(f"the server did not start:\n{log.read_text()}")


def run_curl(version: str, url: str, count: int, ca: Path, parallel: bool) -> None:
    args = ["curl", "-s", version, "--cacert", str(ca)]
    if parallel:
        args += ["--parallel", "--parallel-max", "50"]
    subprocess.run([*args, *[url] * count], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--path", default="/api/health")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        process, port, ca = start_server(Path(tmp))
        try:
            url = f"https://localhost:{port}{options.path}"
            run_curl("--http2", url, 50, ca, False)  # warm up
            for parallel in (False, True):
                per_request: dict[str, list[float]] = {"--http1.1": [], "--http2": []}
                for _ in range(options.repeat):
                    for version in per_request:
                        before = cpu_seconds(process.pid)
                        run_curl(version, url, options.requests, ca, parallel)
                        used = cpu_seconds(process.pid) - before
                        per_request[version].append(round(used / options.requests * 1e6, 1))
                h1, h2 = per_request["--http1.1"], per_request["--http2"]
                print(json.dumps({
                    "mode": "parallel" if parallel else "sequential",
                    "path": options.path,
                    "requests": options.requests,
                    "cpu_us_per_request_http1": h1,
                    "cpu_us_per_request_http2": h2,
                    "ratio_h2": round(statistics.median(h2) / statistics.median(h1), 2),
                }))  # fmt: skip
        finally:
            process.terminate()
            process.wait(10)


if __name__ == "__main__":
    main()
