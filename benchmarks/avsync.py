#!/usr/bin/env python3
"""A/V sync benchmark: how far apart Chromium plays a stream's sound and picture over WHEP.

What: ``python -m arcly_trio serve`` from this checkout (pinned to CPU 0, ports of its own, as
``benchmarks/webrtc.py`` runs it) and a publisher on CPU 1 of the flash-and-beep clip of
``tests/workers/test_webrtc_avsync.py`` (white for the first 100 ms of every second, a 1 kHz
beep in the same 100 ms), over two paths:

* ``rtmp-aac``: Debian's ffmpeg over RTMP with AAC; the server's audio bridge makes the Opus;
* ``whip-opus``: ffmpeg 8's WHIP muxer with Opus, passed through.

Headless Chromium plays the stream over WHEP with that test's page (flash onsets at
``requestVideoFrameCallback``'s ``expectedDisplayTime``, beep onsets from an AudioWorklet on the
received track put on the same clock with ``getOutputTimestamp``) for ``--seconds``; the first
``--settle`` seconds are left out. One JSON line per path: the offsets' p50 (beep minus flash,
positive = sound late), p95 of their magnitude, extremes, the median of the first and the last
quarter (a drift shows there), and Chromium's jitter-buffer delays; then a markdown table on
stderr.

How to run (from the repository root, with the project's environment)::

    python benchmarks/avsync.py --seconds 30
    python benchmarks/avsync.py --paths whip-opus --seconds 60

Attacker's view: none; 127.0.0.1 only, servers it started, its own processes stopped by PID.
Error policy: a path that fails is reported as a JSON line with ``error`` and the run goes on.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.webrtc import HOST, emit, ffmpeg8, publishing, server, stop  # noqa: E402
from tests.workers.test_webrtc_avsync import (  # noqa: E402
    AVSYNC_PLAY,
    READ_REPORT,
    rtmp_aac_publisher,
    summary,
    sync_offsets,
    whip_opus_publisher,
)

PATHS = ("rtmp-aac", "whip-opus")
JITTER = """const done = arguments[0]; const out = {};
window.pc.getStats().then((stats) => { stats.forEach((e) => {
  if (e.type === 'inbound-rtp' && e.jitterBufferEmittedCount) {
    const per = (x) => Math.round(1000 * x / e.jitterBufferEmittedCount);
    out[e.kind] = per(e.jitterBufferDelay);
    out[e.kind + '_target'] = per(e.jitterBufferTargetDelay || 0);
    out[e.kind + '_minimum'] = per(e.jitterBufferMinimumDelay || 0);
  } }); done(out); }, () => done(out));"""


def publisher(path: str, ports: dict[str, int]) -> subprocess.Popen[Any]:
    if path == "rtmp-aac":
        args = rtmp_aac_publisher("ffmpeg", f"rtmp://{HOST}:{ports['rtmp']}/live/bench")
    else:
        args = whip_opus_publisher(ffmpeg8(), f"http://{HOST}:{ports['http']}/live/bench/whip")
    return subprocess.Popen(["taskset", "-c", "1", *args], stdin=subprocess.DEVNULL)


def run(path: str, seconds: float, settle: float) -> dict[str, Any]:
    from tests._browser import chromium

    with server(pin=False) as (_, ports):
        process = publisher(path, ports)
        try:
            if not publishing(ports["http"]):
                return {"mode": "avsync", "path": path, "error": "the publish did not start"}
            with chromium("--autoplay-policy=no-user-gesture-required", "--mute-audio") as driver:
                driver.get(f"http://{HOST}:{ports['http']}/api/server")
                started = driver.execute_async_script(AVSYNC_PLAY, f"http://{HOST}:{ports['http']}/live/bench/whep")
                if not started.get("ok"):
                    return {"mode": "avsync", "path": path, "error": str(started)[:300]}
                time.sleep(settle)
                first = driver.execute_script(READ_REPORT)
                time.sleep(seconds)
                report = driver.execute_script(READ_REPORT)
                jitter = driver.execute_async_script(JITTER)
        finally:
            stop(process)
    flashes, beeps = report["flashes"][len(first["flashes"]) :], report["beeps"][len(first["beeps"]) :]
    offsets = sync_offsets(flashes, beeps)
    quarter = max(1, len(offsets) // 4)
    row: dict[str, Any] = {"mode": "avsync", "path": path, "flashes": len(flashes), "beeps": len(beeps),
                           **summary(offsets), "jitter_buffer_ms": jitter}  # fmt: skip
    if offsets:
        row["first_quarter_p50_ms"] = round(statistics.median(offsets[:quarter]), 1)
        row["last_quarter_p50_ms"] = round(statistics.median(offsets[-quarter:]), 1)
    return row


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| path | pairs | p50 ms | p95 abs ms | min / max ms | first / last quarter p50 | jitter buffer a / v |",
             "|---|---:|---:|---:|---|---|---|"]  # fmt: skip
    for row in rows:
        jitter = row.get("jitter_buffer_ms") or {}
        lines.append(
            f"| {row['path']} | {row.get('pairs', 0)} | {row.get('p50_ms', '–')} | {row.get('p95_abs_ms', '–')} "
            f"| {row.get('min_ms', '–')} / {row.get('max_ms', '–')} "
            f"| {row.get('first_quarter_p50_ms', '–')} / {row.get('last_quarter_p50_ms', '–')} "
            f"| {jitter.get('audio', '–')} / {jitter.get('video', '–')} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--paths", default=",".join(PATHS))
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds of onsets per path")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds left out at the start")
    args = parser.parse_args()
    rows = []
    for path in [p for p in args.paths.split(",") if p]:
        try:
            row = run(path, args.seconds, args.settle)
        except Exception as exc:  # the browser or a tool failed: say so, go on
            row = {"mode": "avsync", "path": path, "error": f"{type(exc).__name__}: {exc}"[:300]}
        emit(**row)
        rows.append(row)
    print(table(rows), file=sys.stderr)


if __name__ == "__main__":
    main()
