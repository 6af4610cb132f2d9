"""Egress benchmark: arcly-trio (and the peers) through the shared fan-out harness.

Runs ``fanout.sh`` of the shared harness (``shared/bench``, see its README) for RTMP players,
HTTP-FLV viewers, WebSocket-FLV viewers and RTSP (TCP interleaved) viewers (arcly-trio only;
the generator's HTTP-FLV viewers speak RTSP through ``rtspload.py``, installed with the shim
below), against arcly-trio from this checkout and, with
``--peers``, against nginx-rtmp (RTMP) and Node-Media-Server (RTMP, HTTP-FLV, WebSocket-FLV) in
the same session with the same settings: for each repetition, every server and protocol runs
back to back, so a busy machine disturbs them alike. Each run prints one JSON line (the
harness's, plus ``protocol``, ``rep`` and the load average seen before it); at the end a
markdown table of medians goes to stderr, with the marginal CPU per viewer-second
((CPU(N) − CPU(0)) ÷ (N × window), from the ``--baseline`` runs with no viewer) and the RSS
per viewer ((RSS(N) − RSS(0)) ÷ N).

The harness is used as it is, from a writable copy (``--work``, made on first use, like the
README's ``cp -r shared/bench /tmp/bench``; run ``./setup-peers.sh`` and ``./make-sample.sh``
there). Its load generator speaks RTMP and HTTP-FLV; for WebSocket-FLV this script installs a
shim in the copy: ``rtmpload.py`` becomes a wrapper around the original
(``rtmpload_harness.py``) that, given ``--ws``, opens its HTTP-FLV viewers as WebSocket-FLV
viewers (the upgrade, then binary messages unwrapped and parsed exactly as the HTTP-FLV body
is). Everything else (pinning the server to CPU 0 and the generator and publisher to CPU 1,
the timeline, what is measured) is the harness's own.

Usage::

    python benchmarks/egress.py                               # arcly-trio, 1000 viewers, 3 reps, all 4 protocols
    python benchmarks/egress.py --protocols rtmp,http-flv,rtsp --viewers 500 --repeat 2 --baseline
    python benchmarks/egress.py --peers --viewers 1000 --repeat 3 --baseline
    python benchmarks/egress.py --protocols rtmp --viewers 3000 --repeat 1
    python benchmarks/egress.py --only nms --protocols ws-flv --viewers 200 --repeat 1
    python benchmarks/egress.py --peers --protocols rtmp --arcly-args "--batch-interval 0.1" --baseline

A benchmark, not a test: it asserts nothing, it reports.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PROTOCOLS = ("rtmp", "http-flv", "ws-flv", "rtsp")
SERVERS = ("arcly-trio", "nginx-rtmp", "nms")
SUPPORTS = {"arcly-trio": PROTOCOLS, "nms": PROTOCOLS[:3], "nginx-rtmp": ("rtmp",)}
# Ports of this benchmark (not the harness's defaults: other people may run the harness too).
PORTS = {"arcly-trio": (19460, 19461), "nginx-rtmp": (19450, None), "nms": (19452, 19453)}
RTSP_PORT = 19462
"""arcly-trio's RTSP port in this benchmark (the RTSP viewers are the generator's ``-m`` viewers
with ``--rtsp``, pointed at this port as their "HTTP" port)."""

SHIM = '''"""rtmpload.py of the harness with WebSocket-FLV viewers (``--ws``): installed in a copy of the
harness by arcly-trio's benchmarks/egress.py; the original is rtmpload_harness.py, unchanged."""
import sys

import rtmpload_harness as harness

_KEY = "dGhlIHNhbXBsZSBub25jZQ=="


class WsFlvSub(harness.FlvSub):
    """The harness's HTTP-FLV viewer over WebSocket-FLV: GET with an upgrade, 101, then each
    binary message's payload goes to the same FLV parser (FIN/opcode/length headers, unmasked
    server frames; a close frame ends it)."""

    kind = "ws-flv"

    def __init__(self, gen, idx):
        super().__init__(gen, idx)
        self.ws_head = b""
        self.ws_left = 0

    def connection_made(self, transport):
        self.transport = transport
        g = self.gen
        transport.write((
            "GET /%s/%s.flv HTTP/1.1\\r\\nHost: %s:%d\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\n"
            "Sec-WebSocket-Key: %s\\r\\nSec-WebSocket-Version: 13\\r\\n\\r\\n"
            % (g.app, g.stream, g.host, g.http_port, _KEY)).encode())

    def data_received(self, data):
        self.rx += len(data)
        if not self.in_body:
            self.hdr += data
            end = self.hdr.find(b"\\r\\n\\r\\n")
            if end < 0:
                if len(self.hdr) > 65536:
                    self.fail("http header too large")
                return
            status = bytes(self.hdr[:end]).split(b"\\r\\n", 1)[0]
            data = bytes(self.hdr[end + 4:])
            self.hdr = None
            if b" 101" not in status:
                self.fail("websocket status: %s" % status.decode("latin-1"))
                return
            self.in_body = True
            self.t_playing = harness.now()
            if not self.done.done():
                self.done.set_result(True)
        self.frames(data)

    def frames(self, data):
        pos, size = 0, len(data)
        while pos < size:
            if self.ws_left:
                n = min(self.ws_left, size - pos)
                self.flv(data[pos:pos + n] if (pos or n != size) else data)
                self.ws_left -= n
                pos += n
                continue
            head = self.ws_head + data[pos:pos + 14]
            if len(head) < 2:
                self.ws_head = head
                return
            opcode, length = head[0] & 0x0F, head[1] & 0x7F
            need = 2 + (2 if length == 126 else 8 if length == 127 else 0)
            if len(head) < need:
                self.ws_head = head
                return
            if length == 126:
                length = int.from_bytes(head[2:4], "big")
            elif length == 127:
                length = int.from_bytes(head[2:10], "big")
            pos += need - len(self.ws_head)
            self.ws_head = b""
            if opcode == 8:
                self.fail("websocket closed by the server")
                return
            if opcode not in (0, 2):
                self.fail("unexpected websocket opcode %d" % opcode)
                return
            self.ws_left = length


if "--ws" in sys.argv:
    sys.argv.remove("--ws")
    harness.FlvSub = WsFlvSub
if "--rtsp" in sys.argv:
    sys.argv.remove("--rtsp")
    import rtspload

    rtspload.install(harness)
harness.main()
'''


def prepare(harness: Path, work: Path) -> None:
    """A writable copy of the harness with the WebSocket-FLV shim and the RTSP viewers."""
    if not (work / "fanout.sh").exists():
        shutil.copytree(harness, work, dirs_exist_ok=True)
        for path in [work, *work.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)
    original = work / "rtmpload_harness.py"
    if not original.exists():
        shutil.copy2(work / "rtmpload.py", original)
    (work / "rtmpload.py").write_text(SHIM)
    shutil.copy2(Path(__file__).resolve().parent / "rtspload.py", work / "rtspload.py")


def arcly_command(rtmp: int, http: int, viewers: int, extra: str = "") -> str:
    limit = max(4096, 2 * viewers + 64)
    return (
        f"{sys.executable} -m arcly_trio serve --host 127.0.0.1 --rtmp-port {rtmp} --http-port {http} "
        f"--log-level warning --max-connections {limit} --max-idle-per-ip {limit} "
        f"--max-connections-per-ip {limit} --rtsp-port {RTSP_PORT} {extra}"
    ).strip()


def fanout(
    work: Path, server: str, protocol: str, viewers: int, seconds: float, extra: str = ""
) -> dict[str, Any] | None:
    rtmp, http = PORTS[server]
    rtmp_viewers = viewers if protocol == "rtmp" else 0
    label = f"{server} {extra}".strip()
    args = [
        "./fanout.sh",
        "custom" if server == "arcly-trio" else server,
        str(rtmp_viewers),
        str(seconds),
        "--port",
        str(rtmp),
        "--label",
        label,
    ]
    if server == "arcly-trio":
        args += ["--server-cwd", str(ROOT), "--server-cmd", arcly_command(rtmp, http, viewers, extra)]
    if protocol == "rtsp":
        http = RTSP_PORT
    if http is not None:
        args += ["--http-port", str(http)]
    if protocol != "rtmp" and viewers:
        args += ["--http-subs", str(viewers)]
        if protocol in ("ws-flv", "rtsp"):
            args += ["--gen-args", "--ws" if protocol == "ws-flv" else "--rtsp"]
    load = os.getloadavg()
    done = subprocess.run(args, cwd=work, capture_output=True, text=True, check=False)
    line = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    if done.returncode != 0 or not line.startswith("{"):
        print(f"[egress] {server} {protocol} N={viewers} failed: {done.stderr.strip()[-400:]}", file=sys.stderr)
        return None
    result: dict[str, Any] = json.loads(line)
    result.update(protocol=protocol, viewers=viewers, load_before=[round(x, 2) for x in load])
    if protocol == "rtsp" and result.get("detail"):
        try:  # the RTSP viewers' sequence gaps are in the generator's full JSON only
            detail = json.loads((work / result["detail"]).read_text())
        except (OSError, ValueError):
            detail = {}
        for key in ("rtsp_seq_gaps", "rtsp_viewers_with_gaps", "rtp_packets"):
            result[key] = detail.get(key)
    return result


def median(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [row[key] for row in rows if row.get(key) is not None]
    return statistics.median(values) if values else None


def table(results: list[dict[str, Any]]) -> str:
    """Medians per server, protocol and N; marginal CPU and RSS per viewer against N = 0."""
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for row in results:
        groups.setdefault((row["server"], row["protocol"], row["viewers"]), []).append(row)
    lines = [
        "| server | egress | N | runs | server CPU % | CPU-ms per viewer-s | marginal CPU-ms per viewer-s "
        "| RSS MB | RSS KB per viewer | kept up | startup p50 / p99 ms | first frame a keyframe | load |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (server, protocol, n), rows in sorted(groups.items()):
        if n == 0:
            continue
        base = groups.get((server, protocol, 0)) or groups.get((server, "rtmp", 0))
        cpu = median(rows, "server_cpu_pct")
        rss = median(rows, "rss_mb")
        marginal = per_viewer = "–"
        if base and cpu is not None:
            cpu0, rss0 = median(base, "server_cpu_pct"), median(base, "rss_mb")
            if cpu0 is not None:
                marginal = f"{(cpu - cpu0) * 10 / n:.3f}"  # % of a core over N viewers -> ms per viewer-second
            if rss0 is not None and rss is not None:
                per_viewer = f"{(rss - rss0) * 1024 / n:.1f}"
        kept = median(rows, "kept_up")
        p50, p99 = median(rows, "startup_p50_ms"), median(rows, "startup_p99_ms")
        key = min((row.get("first_frame_keyframe_ratio") or 0) for row in rows)
        load = median([{"l": row["load_before"][0]} for row in rows], "l")
        lines.append(
            f"| {server} | {protocol} | {n} | {len(rows)} | {cpu:.1f} | {median(rows, 'cpu_ms_per_sub_s'):.3f} "
            f"| {marginal} | {rss:.1f} | {per_viewer} | {kept:.0f}/{n} | {p50:.1f} / {p99:.1f} | {key:.2f} "
            f"| {load:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--harness",
        type=Path,
        default=ROOT.parent / "shared" / "bench",
        help="the shared harness (read only; default ../shared/bench)",
    )
    parser.add_argument(
        "--work", type=Path, default=Path("/tmp/arcly-egress-bench"), help="its writable copy, made on first use"
    )
    parser.add_argument("--protocols", default=",".join(PROTOCOLS))
    parser.add_argument("--viewers", default="1000", help="comma-separated N")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--peers", action="store_true", help="also nginx-rtmp and Node-Media-Server, back to back")
    parser.add_argument("--only", choices=SERVERS, help="one server only")
    parser.add_argument(
        "--baseline", action="store_true", help="also N = 0 (publisher only) per server, for marginal CPU"
    )
    parser.add_argument(
        "--arcly-args", default="", help="extra options for arcly-trio serve (e.g. --batch-interval 0.1)"
    )
    parser.add_argument("--record", type=Path, help="append the JSON lines to this file")
    args = parser.parse_args()
    prepare(args.harness, args.work)
    servers = [args.only] if args.only else (list(SERVERS) if args.peers else ["arcly-trio"])
    protocols = [p for p in args.protocols.split(",") if p]
    counts = [int(n) for n in args.viewers.split(",")]
    results = []
    for rep in range(1, args.repeat + 1):
        for server in servers:
            plan = [("rtmp", 0)] if args.baseline else []
            plan += [(protocol, n) for n in counts for protocol in protocols if protocol in SUPPORTS[server]]
            for protocol, n in plan:
                result = fanout(
                    args.work, server, protocol, n, args.seconds, args.arcly_args if server == "arcly-trio" else ""
                )
                if result is None:
                    continue
                result["rep"] = rep
                results.append(result)
                line = json.dumps(result)
                print(line, flush=True)
                if args.record:
                    with args.record.open("a") as out:
                        out.write(line + "\n")
    print(table(results), file=sys.stderr)


if __name__ == "__main__":
    main()
