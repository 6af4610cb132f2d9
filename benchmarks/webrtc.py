#!/usr/bin/env python3
"""WebRTC benchmark: WHEP viewers per core next to RTMP and HTTP-FLV, and glass-to-glass latency.

What: two modes, each printing one JSON line per measurement and, at the end, a markdown table
(to stderr). A benchmark, not a test: it asserts nothing, it reports ratios measured in the same
run.

* ``viewers``: for each egress (WHEP, RTMP, HTTP-FLV) a fresh ``python -m arcly_trio serve``
  from this checkout (``--no-hls``, ports of its own) pinned to CPU 0; ffmpeg 8 publishes the
  shared bench clip (720p30 H.264 at ~1.5 Mbit/s, video copied) over WHIP with the audio as
  Opus, pinned to CPU 1. The server's CPU (utime+stime of ``/proc/PID/stat``, every thread) is
  measured over a window with 0 viewers, with 1 viewer and with N viewers: CPU ms per
  viewer-second, marginal against 0 and against 1 (the one viewer pays what is paid once per
  stream: the Opus to AAC bridge of the legacy egresses), and RSS KB per viewer. WHEP viewers are
  the project's own client (``arcly_trio.clients.webrtc``, ``decrypt=False``) in a load-generator
  process pinned to CPU 1: the handshakes in trio, then a plain non-blocking epoll loop that
  counts packets and sequence gaps per viewer from the RTP headers (which SRTP leaves in the
  clear) and sends each viewer's receiver report every 2 s. RTMP and HTTP-FLV viewers are the
  shared harness's load generator (``/work/shared/bench/rtmpload.py``), also on CPU 1.
* ``hotpath``: the WHEP send path in process, without a server: ``--viewers`` real
  :class:`~arcly_trio.workers.webrtc.viewer.RtpSink` s (each with its own
  :class:`~arcly_trio.protocols.webrtc.srtp.SrtpContext`) on one real
  :class:`~arcly_trio.workers.webrtc.udp.UdpPort` sending to a loopback socket that is not
  read, offered the 1.6 Mbit/s stream's shape (30 pictures a second of ~5.8 KB, a 40 KB keyframe
  every 2 s, 50 Opus frames of 160 bytes) frame by frame as the fan-out does; the process's CPU
  (min of ``--repeat`` passes) per viewer-second and per packet. ``--no-send`` stubs the socket
  calls out (what the rest costs), ``--profile`` prints cProfile's top functions.
* ``sessions``: the WHEP viewers' own tasks in process, without media: ``--viewers`` real
  :class:`~arcly_trio.workers.webrtc.viewer.WhepSession` s, connected (real SRTP keys, a track
  of each kind that has sent), each served by its task (``_serve``) and, in a checkout that has
  it, the worker's ticker; each viewer's "browser" sends an SRTCP receiver report (with SDES)
  every ``--report-every`` seconds, phases spread and delivered in 10 ms batches, and each
  viewer sends its sender reports to a loopback socket. The process's CPU per viewer-second over
  ``--seconds`` (it includes the trio loop's idle wakeups, ~100-250 µs each on this VM: compare
  runs of the same N only). Compare two checkouts back to back (``PYTHONPATH``).
* ``latency``: glass-to-glass in Debian's headless Chromium (selenium, as tests/_browser.py). ffmpeg
  encodes a test pattern (640x360, 30 fps, x264 ``-tune zerolatency``, GOP 1 s) after burning the
  wall clock into the picture as a pixel code: ``setpts`` sets each frame's timestamp to
  ``RTCTIME`` (the wall clock when the frame reaches the filter, just before the encoder), and
  24 ``drawbox`` filters, each enabled when its bit of the milliseconds is 1, draw white blocks
  on a black bar. The page draws what is on screen into a canvas on every
  ``requestVideoFrameCallback``, reads the blocks back and samples ``Date.now()`` minus the code.
  Paths: RTMP (ffmpeg 5.1) to WHEP, WHIP (ffmpeg 8) to WHEP, WHIP to HTTP-FLV (the page's own
  FLV parser feeding WebCodecs' VideoDecoder: no player library such as mpegts.js is available
  offline, so this is the decode-as-it-arrives floor of an HTTP-FLV player, without a player's
  jitter buffer), WHIP to LL-HLS (hls.js ``lowLatencyMode`` from the npm cache, as
  benchmarks/llhls.py). Chromium runs with ``--disable-web-security`` so a ``file://`` page may
  talk to the server. For WHEP the row also has Chromium's mean jitter-buffer delay per kind
  (``getStats``); ``--no-audio`` publishes video only (with audio, Chromium holds the video for
  lip sync behind the audio's jitter buffer).

How to run (from the repository root, with the project's environment)::

    python benchmarks/webrtc.py viewers --viewers 250,500,1000 --seconds 15
    python benchmarks/webrtc.py hotpath --viewers 300 --seconds 2 [--no-send] [--profile]
    python benchmarks/webrtc.py sessions --viewers 1000 --seconds 5
    python benchmarks/webrtc.py latency --seconds 30
    python benchmarks/webrtc.py latency --seconds 30 --paths rtmp-whep,whip-whep --no-audio

Attacker's view: none; it talks to 127.0.0.1 only, to servers it started, and stops only its own
processes, by PID. Error policy: a path or egress that fails is reported as a JSON line with
``error`` and the run goes on.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

HOST = "127.0.0.1"
SAMPLE = Path("/work/shared/bench/media/sample.flv")
HARNESS = Path("/work/shared/bench")
DEMO = ROOT / "arcly_trio" / "server" / "assets" / "demo.flv"
EPOCH_S = 1_796_000_000  # the pixel code counts milliseconds from here (24 bits: 4.6 hours)
BITS = 24
# hotpath: an Opus packet's TOC as libopus makes it at 96 kbit/s (CELT fullband 20 ms, stereo, one frame)
OPUS_TOC = bytes((0xFC,))


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu0_times() -> tuple[int, int]:
    """(busy, total) jiffies of CPU 0, from /proc/stat: how busy the server's core was, whoever used it."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu0 "):
            values = [int(v) for v in line.split()[1:]]
            idle = values[3] + values[4]
            return sum(values) - idle, sum(values)
    return 0, 1


def busy_pct(before: tuple[int, int], after: tuple[int, int]) -> float:
    return round(100 * (after[0] - before[0]) / max(1, after[1] - before[1]), 1)


def ffmpeg8() -> str:
    from tests._tools import require_ffmpeg8

    return require_ffmpeg8()


def stop(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


# --- a server and a publisher ----------------------------------------------------------------


@contextlib.contextmanager
def server(
    viewers: int = 0, *, hls: bool = False, pin: bool = True
) -> Iterator[tuple[subprocess.Popen[Any], dict[str, int]]]:
    """``python -m arcly_trio serve`` from this checkout, on ports of its own (pinned to CPU 0
    with ``pin``)."""
    ports = {"rtmp": free_port(), "http": free_port(), "webrtc": free_port(socket.SOCK_DGRAM)}
    limit = str(max(4096, 2 * viewers + 64))
    args = [*(["taskset", "-c", "0"] if pin else []), sys.executable, "-m", "arcly_trio", "serve", "--host", HOST,
            "--rtmp-port", str(ports["rtmp"]), "--http-port", str(ports["http"]),
            "--webrtc-port", str(ports["webrtc"]), "--log-level", "warning", "--max-connections", limit,
            "--max-idle-per-ip", limit, "--max-connections-per-ip", limit, "--rtsp-port", "-1", "--srt-port", "-1",
            *(["--hls-variant", "ll"] if hls else ["--no-hls"])]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection((HOST, ports["http"]), timeout=1):
                break
            time.sleep(0.1)
        yield process, ports
    finally:
        stop(process)
        log.seek(0)
        tail = log.read().decode(errors="replace").strip().splitlines()[-5:]
        if process.returncode not in (0, -15) and tail:
            print("[webrtc] server log:", *tail, sep="\n  ", file=sys.stderr)


def publishing(http: int, stream: str = "bench", timeout: float = 30) -> bool:
    """Whether ``live/STREAM`` has a publisher, waiting up to ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            with urllib.request.urlopen(f"http://{HOST}:{http}/api/streams", timeout=2) as answer:
                info = json.loads(answer.read())
            for app in info.get("apps", []):
                for item in app.get("streams", []):
                    if item.get("name") in (stream, f"live/{stream}") or str(item.get("key", "")).endswith(stream):
                        return True
        time.sleep(0.3)
    return False


def publish_clip(http: int, clip: Path) -> subprocess.Popen[Any]:
    """ffmpeg 8 publishing ``clip`` in a loop over WHIP (video copied, audio as Opus), on CPU 1."""
    args = ["taskset", "-c", "1", ffmpeg8(), "-hide_banner", "-nostdin", "-loglevel", "error", "-re",
            "-stream_loop", "-1", "-i", str(clip), "-c:v", "copy", "-c:a", "libopus", "-ar", "48000",
            "-ac", "2", "-b:a", "96k", "-f", "whip", f"http://{HOST}:{http}/live/bench/whip"]  # fmt: skip
    return subprocess.Popen(args, stdin=subprocess.DEVNULL)


# --- the WHEP load generator (a child process on CPU 1) --------------------------------------

_HEADER = struct.Struct("!H4xI")
_UDP_GRO = 104  # linux/udp.h: receive GSO runs coalesced (the control message gives the segment size)
_GRO_CMSG = socket.CMSG_SPACE(4)


def receive_loop(players: list[Any], warmup: float, seconds: float, server_pid: int) -> dict[str, Any]:
    """Count packets and gaps per viewer with epoll and non-blocking ``recvmsg_into`` (trio is
    idle meanwhile); with ``UDP_GRO`` on each socket, a run of packets the server sent with one GSO
    ``sendmsg`` comes back as one read (its segment size in a control message), so the generator
    keeps up with one read per viewer and frame; send each viewer's receiver report every 2 s;
    measure the server over the window."""
    poller = select.epoll()
    sockets: dict[int, socket.socket] = {}
    index: dict[int, int] = {}
    own: list[socket.socket] = []
    for i, player in enumerate(players):
        sock = socket.socket(fileno=os.dup(player.link.socket.fileno()))
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_UDP, _UDP_GRO, 1)
        sockets[sock.fileno()] = sock
        index[sock.fileno()] = i
        own.append(sock)
        poller.register(sock.fileno(), select.EPOLLIN)
    count = len(players)
    packets, gaps, octets = [0] * count, [0] * count, [0] * count
    last: list[dict[int, int]] = [{} for _ in range(count)]
    buffer = bytearray(65536)
    buffers = [buffer]
    reads = 0
    now = time.monotonic()
    window_at, end_at = now + warmup, now + warmup + seconds
    next_report = now
    measuring = False
    cpu0 = cpu_s0 = gen0 = 0.0
    core0 = (0, 1)
    while True:
        now = time.monotonic()
        if not measuring and now >= window_at:
            measuring = True
            packets, gaps, octets = [0] * count, [0] * count, [0] * count
            reads = 0
            cpu0, cpu_s0, gen0 = now, cpu_seconds(server_pid), time.process_time()
            core0 = cpu0_times()
        if now >= end_at:
            break
        if now >= next_report:
            next_report = now + 2.0
            for player, sock in zip(players, own, strict=True):
                if player.link.srtp is not None:
                    with contextlib.suppress(OSError):
                        sock.sendto(player.link.srtp.protect_rtcp(player.receiver_report()), player.link.remote)
        for fd, _ in poller.poll(0.05):
            sock, i = sockets[fd], index[fd]
            seen = last[i]
            while True:
                try:
                    size, ancillary, _, _ = sock.recvmsg_into(buffers, _GRO_CMSG)
                except BlockingIOError:
                    break
                reads += 1
                segment = size
                for level, kind, value in ancillary:
                    if level == socket.SOL_UDP and kind == _UDP_GRO and len(value) >= 2:
                        segment = int.from_bytes(value[:2], sys.byteorder) or size
                for offset in range(0, size, segment):
                    length = min(segment, size - offset)
                    if length < 12 or 192 <= buffer[offset + 1] <= 223:  # RTCP (sender reports) or runt
                        continue
                    sequence, ssrc = _HEADER.unpack_from(buffer, offset + 2)
                    packets[i] += 1
                    octets[i] += length
                    previous = seen.get(ssrc)
                    if previous is not None:
                        step = (sequence - previous) & 0xFFFF
                        if step == 0 or step >= 0x8000:  # a resend or a reordered packet
                            continue
                        gaps[i] += step - 1
                    seen[ssrc] = sequence
    elapsed = time.monotonic() - cpu0
    server_cpu = cpu_seconds(server_pid) - cpu_s0
    core = busy_pct(core0, cpu0_times())
    generator_cpu = time.process_time() - gen0
    for sock in sockets.values():
        poller.unregister(sock.fileno())
        sock.close()
    poller.close()
    rates = sorted(p / elapsed for p in packets)
    return {
        "window_s": round(elapsed, 2),
        "server_cpu_pct": round(100 * server_cpu / elapsed, 1),
        "server_rss_kb": rss_kb(server_pid),
        "cpu0_busy_pct": core,
        "gen_cpu_pct": round(100 * generator_cpu / elapsed, 1),
        "packets_per_s_median": round(rates[len(rates) // 2], 1) if rates else 0,
        "packets_per_s_min": round(rates[0], 1) if rates else 0,
        "kbps_median": round(sorted(octets)[count // 2] * 8 / elapsed / 1000) if count else 0,
        "gaps_total": sum(gaps),
        "loss_pct": round(100 * sum(gaps) / max(1, sum(gaps) + sum(packets)), 3),
        "viewers_with_gaps": sum(1 for g in gaps if g),
        "packets_per_read": round(sum(packets) / max(1, reads), 2),
    }


def server_send_drops(url: str) -> int | None:
    """The WHEP sessions' ``send_drops`` summed (``/api/sessions`` of the server ``url`` is on):
    a gap the generator counts that the server did not count was lost on the generator's side."""
    base = url.split("/live/", 1)[0]
    try:
        with urllib.request.urlopen(f"{base}/api/sessions", timeout=30) as response:
            sessions = json.loads(response.read())["sessions"]
    except (OSError, ValueError, KeyError):
        return None
    return sum(int(s.get("send_drops") or 0) for s in sessions if s.get("protocol") == "whep")


def whep_load(url: str, viewers: int, warmup: float, seconds: float, server_pid: int, concurrency: int) -> None:
    """The child: open ``viewers`` WHEP sessions (``concurrency`` handshakes at a time, 30 per
    source address), then :func:`receive_loop`; print one JSON line."""
    import trio

    from arcly_trio.clients.webrtc import open_whep_player

    async def main() -> None:
        players: list[Any] = []
        failures: list[str] = []
        done, stop_event = trio.Event(), trio.Event()
        limiter = trio.CapacityLimiter(concurrency)
        settled = [0]
        started = time.monotonic()
        handshake_ms: list[float] = []

        async def one(i: int) -> None:
            group = i // 30
            address = f"127.1.{group // 250}.{2 + group % 250}"
            manager = open_whep_player(url, decrypt=False, receive=False, local_address=address, timeout=30)
            try:
                async with limiter:
                    t0 = time.monotonic()
                    player = await manager.__aenter__()
                    handshake_ms.append(1000 * (time.monotonic() - t0))
            except Exception as exc:  # a refusal or a timeout: counted, the others go on
                failures.append(f"{type(exc).__name__}: {exc}"[:200])
                settled[0] += 1
                if settled[0] == viewers:
                    done.set()
                return
            players.append(player)
            settled[0] += 1
            if settled[0] == viewers:
                done.set()
            try:
                await stop_event.wait()
            finally:
                with trio.CancelScope(shield=True):
                    await manager.__aexit__(None, None, None)

        async with trio.open_nursery() as nursery:
            for i in range(viewers):
                nursery.start_soon(one, i)
            await done.wait()
            connect_s = time.monotonic() - started
            result = receive_loop(players, warmup, seconds, server_pid) if players else {}
            if players:  # what the server could not send (its counters), before the players leave
                result["server_send_drops"] = await trio.to_thread.run_sync(server_send_drops, url)
            handshake_ms.sort()
            emit(
                viewers=viewers,
                connected=len(players),
                failed=len(failures),
                failures=sorted(set(failures))[:3],
                connect_s=round(connect_s, 1),
                handshake_p50_ms=round(handshake_ms[len(handshake_ms) // 2]) if handshake_ms else None,
                **result,
            )
            stop_event.set()

    trio.run(main)


# --- viewers mode ----------------------------------------------------------------------------


def idle_window(pid: int, seconds: float) -> dict[str, Any]:
    cpu, t0, core = cpu_seconds(pid), time.monotonic(), cpu0_times()
    time.sleep(seconds)
    elapsed = time.monotonic() - t0
    return {"server_cpu_pct": round(100 * (cpu_seconds(pid) - cpu) / elapsed, 1), "server_rss_kb": rss_kb(pid),
            "cpu0_busy_pct": busy_pct(core, cpu0_times())}  # fmt: skip


def run_whep(pid: int, ports: dict[str, int], viewers: int, seconds: float, warmup: float) -> dict[str, Any]:
    args = ["taskset", "-c", "1", sys.executable, str(Path(__file__).resolve()), "whep-load",
            "--url", f"http://{HOST}:{ports['http']}/live/bench/whep", "--viewers", str(viewers),
            "--seconds", str(seconds), "--warmup", str(warmup), "--server-pid", str(pid)]  # fmt: skip
    try:
        done = subprocess.run(args, capture_output=True, text=True, check=False, timeout=900)
    except subprocess.TimeoutExpired:
        return {"error": "the load generator did not finish in 900 s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        return {"error": done.stderr.strip()[-400:]}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def run_harness(pid: int, ports: dict[str, int], protocol: str, viewers: int, seconds: float) -> dict[str, Any]:
    """The shared harness's generator: N RTMP (``-n``) or HTTP-FLV (``-m``) players, on CPU 1."""
    count = ["-n", str(viewers), "-m", "0"] if protocol == "rtmp" else ["-n", "0", "-m", str(viewers)]
    args = ["taskset", "-c", "1", sys.executable, str(HARNESS / "rtmpload.py"), "--host", HOST,
            "--port", str(ports["rtmp"]), "--http-port", str(ports["http"]), "--app", "live",
            "--stream", "bench", *count, "--seconds", str(seconds), "--ramp", "1",
            "--server-pid", str(pid), "--expected-kbps", "1500"]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, check=False, timeout=600, cwd=HARNESS)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        return {"error": (done.stderr or done.stdout).strip()[-400:]}
    raw = json.loads(lines[-1])
    return {
        "connected": viewers - int(raw.get("errors", 0) or 0),
        "server_cpu_pct": raw.get("server_cpu_pct"),
        "server_rss_kb": round(float(raw.get("server_rss_end_mb") or 0) * 1024),
        "cpu0_busy_pct": raw.get("cpu0_busy_pct"),
        "gen_cpu_pct": raw.get("gen_cpu_pct"),
        "gen_saturated": raw.get("gen_saturated"),
        "kbps_median": raw.get("kbps_median"),
        "kept_up": raw.get("kept_up"),
        "startup_p50_ms": raw.get("startup_p50_ms"),
    }


def run_viewers(
    protocols: list[str], viewers: list[int], seconds: float, clip: Path, warmup: float
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for protocol in protocols:
        with server(max(viewers)) as (process, ports):
            publisher = publish_clip(ports["http"], clip)
            try:
                if not publishing(ports["http"]):
                    emit(mode="viewers", protocol=protocol, error="the WHIP publish did not start")
                    continue
                time.sleep(3)
                pid = process.pid
                for n in (0, 1, *viewers):
                    load = os.getloadavg()[0]
                    if n == 0:
                        result = idle_window(pid, seconds)
                    elif protocol == "whep":
                        result = run_whep(pid, ports, n, seconds, warmup)
                    else:
                        result = run_harness(pid, ports, protocol, n, seconds)
                    row = {"mode": "viewers", "protocol": protocol, "viewers": n, "load_before": round(load, 2),
                           **result}  # fmt: skip
                    emit(**row)
                    rows.append(row)
            finally:
                stop(publisher)
    return rows


def viewers_table(rows: list[dict[str, Any]]) -> str:
    """Per egress: CPU per viewer-second and RSS per viewer, marginal against 0 and against 1 viewer."""
    lines = [
        "| egress | N | connected | server CPU % (0 / 1 / N) | CPU-ms per viewer-s | marginal vs 0 | marginal vs 1 "
        "| RSS MB (0 / 1 / N) | RSS KB per viewer vs 0 / vs 1 | kbit/s per viewer | packets/s per viewer (median / min) "
        "| gaps per viewer | loss % | µs per packet numbered (vs 1) | CPU-ms per viewer-s at the full rate (vs 1) "
        "| generator CPU % | CPU 0 busy % |",
        "|---|---:|---:|---|---:|---:|---:|---|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    # rows of one run go together: saved lines may carry a "run" tag (results-webrtc.jsonl does)
    by: dict[tuple[str, str, int], dict[str, Any]] = {(r.get("run", ""), r["protocol"], r["viewers"]): r for r in rows}

    def fmt(value: float | None, digits: int = 3) -> str:
        return "–" if value is None else f"{value:.{digits}f}"

    for (run, protocol, n), row in by.items():
        if n <= 1 or row.get("server_cpu_pct") is None:
            continue
        zero, one = by.get((run, protocol, 0), {}), by.get((run, protocol, 1), {})
        cpu, cpu0, cpu1 = row["server_cpu_pct"], zero.get("server_cpu_pct"), one.get("server_cpu_pct")
        connected = row.get("connected") or n
        marginal0 = (cpu - cpu0) * 10 / connected if cpu0 is not None else None
        marginal1 = (cpu - cpu1) * 10 / (connected - 1) if cpu1 is not None and connected > 1 else None
        rss, rss0, rss1 = row["server_rss_kb"], zero.get("server_rss_kb"), one.get("server_rss_kb")
        per0 = (rss - rss0) / connected if rss0 else None
        per1 = (rss - rss1) / (connected - 1) if rss1 and connected > 1 else None
        # WHEP: what a packet costs, and so a viewer of the whole stream (the 1-viewer window's
        # packet rate) when the N viewers got less of it (the server short of CPU)
        # (packets the server numbered: those received and the sequence gaps)
        rate, full = row.get("packets_per_s_median"), one.get("packets_per_s_median")
        if rate and row.get("gaps_total") and row.get("window_s"):
            rate += row["gaps_total"] / row["window_s"] / connected
        per_packet = (cpu - cpu1) * 1e4 / (connected * rate) if rate and cpu1 is not None else None
        full_rate = per_packet * full / 1000 if per_packet is not None and full else None
        mb = " / ".join(fmt(v / 1024 if v else None, 1) for v in (rss0, rss1, rss))
        lines.append(
            f"| {f'{run}: ' if run else ''}{protocol} | {n} | {connected} | {cpu0} / {cpu1} / {cpu} | {fmt(cpu * 10 / connected)} "
            f"| {fmt(marginal0)} | {fmt(marginal1)} | {mb} | {fmt(per0, 1)} / {fmt(per1, 1)} "
            f"| {row.get('kbps_median', '–')} | {row.get('packets_per_s_median', '–')} / {row.get('packets_per_s_min', '–')} "
            f"| {fmt(row['gaps_total'] / connected, 2) if 'gaps_total' in row else '–'} "
            f"| {row.get('loss_pct', '–')} | {fmt(per_packet, 2)} | {fmt(full_rate)} | {row.get('gen_cpu_pct', '–')} "
            f"| {row.get('cpu0_busy_pct', '–')} |"
        )
    return "\n".join(lines)


# --- latency mode -----------------------------------------------------------------------------

PATHS = ("rtmp-whep", "whip-whep", "whip-flv", "whip-llhls")

PAGE = r"""<!doctype html><html><head><meta charset="utf-8"><script src="hls.min.js"></script></head>
<body><video id="v" muted autoplay playsinline></video><canvas id="c"></canvas><script>
// Reads the pixel code ffmpeg burnt into the picture (BITS blocks on a black bar) from what is on
// screen and samples Date.now() minus it. window.report = {samples, bad, errors, state}.
const q = new URLSearchParams(location.search), kind = q.get("kind"), src = q.get("src");
const epochMs = Number(q.get("epoch")) * 1000, BITS = Number(q.get("bits"));
const report = window.report = {samples: [], bad: 0, errors: [], state: "starting", frames: 0};
const video = document.getElementById("v"), canvas = document.getElementById("c");
const ctx = canvas.getContext("2d", {willReadFrequently: true});
function read(source, width, height) {
  if (!width) return;
  if (canvas.width !== width) { canvas.width = width; canvas.height = height; }
  ctx.drawImage(source, 0, 0, width, height);
  const row = ctx.getImageData(0, 20, 8 + BITS * 26, 1).data;
  let code = 0;
  for (let i = 0; i < BITS; i++) if (row[(8 + i * 26 + 12) * 4] > 128) code += 2 ** i;
  const latency = Date.now() - (epochMs + code);
  report.frames += 1;
  if (latency < -200 || latency > 30000) { report.bad += 1; return; }
  report.samples.push(latency);
}
function onVideoFrame() { read(video, video.videoWidth, video.videoHeight); video.requestVideoFrameCallback(onVideoFrame); }
function fail(e) { report.errors.push(String(e && e.message || e)); }
async function whep() {
  const pc = window.pc = new RTCPeerConnection();
  pc.addTransceiver("video", {direction: "recvonly"}); pc.addTransceiver("audio", {direction: "recvonly"});
  pc.ontrack = (e) => { if (!video.srcObject) video.srcObject = e.streams[0] || new MediaStream([e.track]); else video.srcObject.addTrack(e.track); };
  await pc.setLocalDescription(await pc.createOffer());
  const answer = await fetch(src, {method: "POST", headers: {"content-type": "application/sdp"}, body: pc.localDescription.sdp});
  if (answer.status !== 201) throw new Error("WHEP " + answer.status + " " + await answer.text());
  await pc.setRemoteDescription({type: "answer", sdp: await answer.text()});
  report.state = "negotiated";
}
function hls() {
  const player = new Hls({lowLatencyMode: true});
  player.on(Hls.Events.ERROR, (_, d) => { if (d.fatal) fail("hls.js " + d.details); });
  player.loadSource(src); player.attachMedia(video);
}
async function flv() {  // HTTP-FLV parsed here, H.264 into WebCodecs' VideoDecoder, drawn as decoded
  const decoder = new VideoDecoder({output: (frame) => { read(frame, frame.displayWidth, frame.displayHeight); frame.close(); }, error: fail});
  const reader = (await fetch(src)).body.getReader();
  let buf = new Uint8Array(0), pos = 0, header = false, configured = false, keyed = false;
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    const joined = new Uint8Array(buf.length - pos + value.length);
    joined.set(buf.subarray(pos)); joined.set(value, buf.length - pos); buf = joined; pos = 0;
    if (!header) { if (buf.length < 13) continue; pos = 13; header = true; }  // FLV header, PreviousTagSize0
    while (buf.length - pos >= 11) {
      const size = (buf[pos + 1] << 16) | (buf[pos + 2] << 8) | buf[pos + 3];
      if (buf.length - pos < 11 + size + 4) break;
      const type = buf[pos], ts = ((buf[pos + 7] << 24) | (buf[pos + 4] << 16) | (buf[pos + 5] << 8) | buf[pos + 6]) >>> 0;
      const body = buf.subarray(pos + 11, pos + 11 + size);
      pos += 11 + size + 4;
      if (type !== 9 || (body[0] & 15) !== 7) continue;
      if (body[1] === 0) {
        const hex = (b) => b.toString(16).padStart(2, "0");
        decoder.configure({codec: "avc1." + hex(body[6]) + hex(body[7]) + hex(body[8]), description: body.slice(5), optimizeForLatency: true});
        configured = true;
      } else if (body[1] === 1 && configured) {
        const key = (body[0] >> 4) === 1;
        keyed = keyed || key;
        if (!keyed) continue;  // a decoder starts at a keyframe
        decoder.decode(new EncodedVideoChunk({type: key ? "key" : "delta", timestamp: ts * 1000, data: body.slice(5)}));
      }
    }
  }
}
window.jitter = async () => {  // WHEP: mean jitter-buffer delay per kind, in ms (Chromium's getStats)
  const out = {};
  if (window.pc) (await window.pc.getStats()).forEach((e) => {
    if (e.type === "inbound-rtp" && e.jitterBufferEmittedCount) out[e.kind] = Math.round(1000 * e.jitterBufferDelay / e.jitterBufferEmittedCount);
  });
  return out;
};
video.requestVideoFrameCallback(onVideoFrame);
({whep, hls, flv})[kind]().catch(fail);
</script></body></html>
"""


def burn_clock_filter(epoch: int) -> str:
    """The video filter that burns the wall clock (ms since ``epoch``, 24 bits) into the picture."""
    boxes = ["drawbox=x=0:y=0:w=iw:h=40:color=black:t=fill"]
    for i in range(BITS):
        boxes.append(f"drawbox=x={8 + i * 26}:y=4:w=24:h=32:color=white:t=fill:"
                     f"enable='eq(mod(floor(t*1000/{2**i}),2),1)'")  # fmt: skip
    return ",".join([f"settb=1/1000,setpts='(RTCTIME-{epoch * 1_000_000})/1000'", *boxes,
                     "setpts=N/30/TB"])  # fmt: skip


#: ffmpeg 8 reads ``-re`` input in real time but, once behind (the WHIP handshake blocks it for
#: about a second before the first packet), catches up 5 % faster (``-readrate_catchup``'s
#: default) and starts with a 0.5 s burst: its packets then arrive up to 5 % faster than their
#: timestamps for 20 s, and Chromium's audio jitter buffer grows with it. A live source does
#: neither: read strictly in real time.
REALTIME_FFMPEG8 = ("-readrate_initial_burst", "0", "-readrate_catchup", "1")


def latency_publisher(
    path: str, ports: dict[str, int], epoch: int, audio: bool = True, *, pin: bool = False
) -> subprocess.Popen[Any]:
    """ffmpeg encoding a 640x360 30 fps pattern with the clock burnt in, zerolatency, GOP 1 s
    (and a 440 Hz tone unless ``audio`` is false); on CPU 1 with ``pin``."""
    video = ["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-profile:v", "baseline",
             "-bf", "0", "-g", "30", "-pix_fmt", "yuv420p", "-b:v", "1M"]  # fmt: skip
    whip = not path.startswith("rtmp")
    realtime = ["-re", *(REALTIME_FFMPEG8 if whip else ())]
    inputs = [*realtime, "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30"]
    if audio:
        inputs += [*realtime, "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]
    inputs += ["-vf", burn_clock_filter(epoch)]
    if not whip:
        sound = ["-c:a", "aac"] if audio else []
        args = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", *inputs, *video, *sound,
                "-f", "flv", f"rtmp://{HOST}:{ports['rtmp']}/live/bench"]  # fmt: skip
    else:
        sound = ["-c:a", "libopus", "-ar", "48000", "-ac", "2"] if audio else []
        args = [ffmpeg8(), "-hide_banner", "-nostdin", "-loglevel", "error", *inputs, *video, *sound,
                "-f", "whip", f"http://{HOST}:{ports['http']}/live/bench/whip"]  # fmt: skip
    return subprocess.Popen([*(["taskset", "-c", "1"] if pin else []), *args], stdin=subprocess.DEVNULL)


class RunQueue:
    """How long processes waited for a CPU (``/proc/PID/task/*/schedstat``: time runnable but
    not running), sampled every 20 ms in a thread: a process that waits 100 ms for a CPU stalls
    its stream that long, whatever its code does."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.samples: list[tuple[float, dict[str, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def waited_ns(pid: int) -> int:
        total = 0
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError, ValueError, IndexError):
                    total += int(Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()[1])
        return total

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.samples.append((time.monotonic(), {name: self.waited_ns(pid) for name, pid in self.pids.items()}))

    def __enter__(self) -> RunQueue:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict[str, Any]:
        """Per process: the wait in ms per second, and the longest wait within any 100 ms."""
        out: dict[str, Any] = {}
        samples = self.samples
        if len(samples) < 2:
            return out
        span = samples[-1][0] - samples[0][0]
        for name in self.pids:
            total = (samples[-1][1][name] - samples[0][1][name]) / 1e6
            worst, j = 0.0, 0
            for i in range(len(samples)):
                while samples[i][0] - samples[j][0] > 0.1:
                    j += 1
                worst = max(worst, (samples[i][1][name] - samples[j][1][name]) / 1e6)
            out[f"{name}_runq_ms_per_s"] = round(total / span, 1)
            out[f"{name}_runq_worst_100ms"] = round(worst)
        return out


def run_latency(paths: list[str], seconds: float, audio: bool = True, pin: bool = False) -> list[dict[str, Any]]:
    from tests._browser import chromium
    from tests._npm import HLS_JS, npm_file

    rows: list[dict[str, Any]] = []
    folder = Path(tempfile.mkdtemp(prefix="arcly-webrtc-latency-"))
    page = folder / "latency.html"
    page.write_text(PAGE)
    shutil.copy(npm_file(*HLS_JS), folder / "hls.min.js")
    epoch = int(time.time()) - 60
    try:
        for path in paths:
            egress = path.split("-", 1)[1]
            with server(hls=egress == "llhls", pin=pin) as (process, ports):
                publisher = latency_publisher(path, ports, epoch, audio, pin=pin)
                try:
                    if not publishing(ports["http"]):
                        emit(mode="latency", path=path, error="the publish did not start")
                        continue
                    time.sleep(2)
                    base = f"http://{HOST}:{ports['http']}/live/bench"
                    src = {"whep": f"{base}/whep", "flv": f"{base}.flv", "llhls": f"{base}/index.m3u8"}[egress]
                    kind = {"whep": "whep", "flv": "flv", "llhls": "hls"}[egress]
                    try:
                        with RunQueue({"server": process.pid, "publisher": publisher.pid}) as waits:
                            report = play_in_chromium(chromium, f"{page.as_uri()}?kind={kind}&src={src}"
                                                      f"&epoch={epoch}&bits={BITS}", seconds)  # fmt: skip
                    except Exception as exc:  # the browser failed: say so, go on with the next path
                        emit(mode="latency", path=path, error=f"{type(exc).__name__}: {exc}"[:300])
                        continue
                finally:
                    stop(publisher)
            rows.append({**latency_row(path, report), "audio": audio, "pinned": pin, **waits.summary(),
                         "load_1min": round(os.getloadavg()[0], 2)})  # fmt: skip
            emit(**rows[-1])
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return rows


def play_in_chromium(chromium: Any, url: str, seconds: float) -> dict[str, Any]:
    """Open the page in a fresh headless Chromium, let it play, return its report (with WHEP's
    jitter-buffer delays)."""
    with chromium("--autoplay-policy=no-user-gesture-required", "--disable-web-security") as driver:
        driver.get(url)
        time.sleep(seconds)
        report: dict[str, Any] = driver.execute_script("return window.report")
        report["jitter"] = driver.execute_async_script(
            "const done = arguments[0]; window.jitter().then(done, () => done({}));"
        )
    return report


def latency_row(path: str, report: dict[str, Any]) -> dict[str, Any]:
    samples = report.get("samples") or []
    skip = min(len(samples) // 4, 90)  # the first ~3 s (30 fps): the player settling
    kept = sorted(samples[skip:])
    row: dict[str, Any] = {"mode": "latency", "path": path, "samples": len(kept), "bad_codes": report.get("bad", 0),
                           "errors": (report.get("errors") or [])[:3]}  # fmt: skip
    if report.get("jitter"):
        row["jitter_buffer_ms"] = report["jitter"]
    if kept:
        row.update(
            p50_ms=kept[len(kept) // 2],
            p95_ms=kept[min(len(kept) - 1, int(len(kept) * 0.95))],
            min_ms=kept[0],
            max_ms=kept[-1],
            mean_ms=round(statistics.fmean(kept)),
        )
    return row


def latency_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| path | samples | p50 ms | p95 ms | min ms | max ms | jitter buffer a / v ms "
             "| run-queue worst 100 ms: server / publisher |",
             "|---|---:|---:|---:|---:|---:|---|---|"]  # fmt: skip
    for row in rows:
        jitter = row.get("jitter_buffer_ms") or {}
        lines.append(
            f"| {row['path']} | {row['samples']} | {row.get('p50_ms', '–')} | {row.get('p95_ms', '–')} "
            f"| {row.get('min_ms', '–')} | {row.get('max_ms', '–')} | {jitter.get('audio', '–')} / "
            f"{jitter.get('video', '–')} | {row.get('server_runq_worst_100ms', '–')} / "
            f"{row.get('publisher_runq_worst_100ms', '–')} |"
        )
    return "\n".join(lines)


_DRAIN = """
import os, socket, sys
sock = socket.socket(fileno=int(sys.argv[1]))
sock.setsockopt(socket.SOL_UDP, 104, 1)  # UDP_GRO: a GSO run arrives as one read, as in the load generator
sock.settimeout(2)
buffer = bytearray(65536)
try:
    while True:
        sock.recv_into(buffer)
except OSError:
    pass
"""


def run_hotpath(
    viewers: int, seconds: int, repeat: int, send: bool, profile: bool, drain: bool = False
) -> dict[str, Any]:
    """The ``hotpath`` mode (see the module docstring): one JSON-able row."""
    import cProfile
    import pstats
    import types

    from arcly_trio.core.frame import Frame, FrameKind
    from arcly_trio.protocols.webrtc.dtls import SrtpKeys
    from arcly_trio.protocols.webrtc.payload import h264, opus
    from arcly_trio.protocols.webrtc.rtp import SendHistory
    from arcly_trio.protocols.webrtc.srtp import SrtpContext
    from arcly_trio.workers.webrtc.peer import LinkStats
    from arcly_trio.workers.webrtc.udp import open_udp
    from arcly_trio.workers.webrtc.viewer import HISTORY, OutTrack, RtpSink

    port = open_udp("127.0.0.1", 0)
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    drainer = None
    if drain:  # a reader on CPU 1 in a process of its own (its CPU is not counted)
        receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
        drainer = subprocess.Popen(["taskset", "-c", "1", sys.executable, "-c", _DRAIN, str(receiver.fileno())],
                                   pass_fds=(receiver.fileno(),))  # fmt: skip
        time.sleep(0.5)
    real = port.socket
    if not send:

        class _Stub:
            def sendto(self, *args: Any) -> int:
                return 0

            def sendmsg(self, *args: Any) -> int:
                return 0

        port.socket = _Stub()  # type: ignore[assignment]
    host = types.SimpleNamespace(
        mtu=1200, port=port, picture_ids=lambda key: None, request_keyframe=lambda key: None, sessions=range(viewers)
    )
    sinks = []
    for n in range(viewers):
        keys = SrtpKeys("SRTP_AEAD_AES_128_GCM", os.urandom(16), os.urandom(12), os.urandom(16), os.urandom(12))
        session = types.SimpleNamespace(
            host=host, key=None, link=None, address=receiver.getsockname(), srtp=SrtpContext(keys), stats=LinkStats()
        )
        sink = RtpSink(session)  # type: ignore[arg-type]
        sink.video = OutTrack("video", "h264", 102, 1000 + n, 90000, history=SendHistory(HISTORY), module=h264)
        sink.audio = OutTrack("audio", "opus", 111, 5000 + n, 48000, module=opus)
        sink.ready = True
        sink.wait_keyframe = False
        sinks.append(sink)
    frames = []
    video_at = audio_at = 0
    while video_at < seconds * 1000 or audio_at < seconds * 1000:
        if video_at <= audio_at:
            key = video_at % 2000 == 0
            nal = bytes([0x65 if key else 0x41]) + os.urandom(40000 if key else 5800)
            payload = len(nal).to_bytes(4, "big") + nal
            frames.append(Frame(FrameKind.VIDEO, "h264", video_at, video_at, payload, keyframe=key))
            video_at += 33
        else:
            frames.append(Frame(FrameKind.AUDIO, "opus", audio_at, audio_at, OPUS_TOC + os.urandom(159)))
            audio_at += 20

    class _Counting:  # one untimed pass counts the system calls that send
        def __init__(self, inner: Any) -> None:
            self.inner, self.calls = inner, 0

        def sendto(self, *args: Any) -> int:
            self.calls += 1
            return int(self.inner.sendto(*args))

        def sendmsg(self, *args: Any) -> int:
            self.calls += 1
            return int(self.inner.sendmsg(*args))

    counting = _Counting(port.socket)
    port.socket = counting  # type: ignore[assignment]
    for frame in frames:
        for sink in sinks:
            sink.offer([frame], 0)
    port.socket = counting.inner
    best = float("inf")
    profiler = cProfile.Profile() if profile else None
    for _ in range(repeat):
        for sink in sinks:
            sink.session.stats = LinkStats()
        started = time.process_time()
        if profiler is not None:
            profiler.enable()
        for frame in frames:
            batch = [frame]
            for sink in sinks:
                sink.offer(batch, 0)
        if profiler is not None:
            profiler.disable()
        best = min(best, time.process_time() - started)
    packets = sum(sink.session.stats.packets_sent for sink in sinks)
    drops = sum(sink.session.stats.send_drops for sink in sinks)
    real.close()
    receiver.close()
    if drainer is not None:
        drainer.wait(timeout=10)
    if profiler is not None:
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(15)
    return {
        "mode": "hotpath",
        "viewers": viewers,
        "seconds": seconds,
        "send": send,
        "drain": drain,
        "cpu_ms_per_viewer_s": round(best * 1000 / (viewers * seconds), 3),
        "us_per_packet": round(best * 1e6 / max(1, packets), 2),
        "packets_per_viewer_s": round(packets / (viewers * seconds), 1),
        "sends_per_viewer_s": round(counting.calls / (viewers * seconds), 1),
        "send_drops": drops,
        "gso_sends": port.gso_sends,
        "load_before": os.getloadavg()[0],
    }


def run_sessions(viewers: int, seconds: float, report_every: float) -> dict[str, Any]:
    """The ``sessions`` mode (see the module docstring): one JSON-able row."""
    import types

    import trio

    from arcly_trio.core.keys import Credentials, StreamKey
    from arcly_trio.protocols.webrtc import rtcp
    from arcly_trio.protocols.webrtc.dtls import SrtpKeys
    from arcly_trio.protocols.webrtc.payload import h264, opus
    from arcly_trio.protocols.webrtc.rtp import SendHistory
    from arcly_trio.protocols.webrtc.srtp import SrtpContext
    from arcly_trio.workers.webrtc.udp import open_udp
    from arcly_trio.workers.webrtc.viewer import HISTORY, OutTrack, WhepSession

    try:
        from arcly_trio.workers.webrtc.ticker import Ticker
    except ImportError:  # a checkout before the shared ticker: each viewer's task ticks
        Ticker = None  # type: ignore[assignment,misc]  # noqa: N806

    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    profile = "SRTP_AEAD_AES_128_GCM"

    async def main() -> dict[str, Any]:
        port = open_udp("127.0.0.1", 0)
        host = types.SimpleNamespace(
            engine=None, id_prefix="", handshake_timeout=10.0, session_timeout=30.0, mtu=1200, port=port,
            picture_ids=lambda key: None, request_keyframe=lambda key: None,
        )  # fmt: skip
        ticker = host.ticker = Ticker() if Ticker is not None else None
        sessions = []
        reports: list[list[bytes]] = []
        count = int(seconds / report_every) + 2
        for n in range(viewers):
            session = WhepSession(host, StreamKey("live", "bench"), Credentials(), None)  # type: ignore[arg-type]
            ours, theirs, salt, peer_salt = os.urandom(16), os.urandom(16), os.urandom(12), os.urandom(12)
            session.srtp = SrtpContext(SrtpKeys(profile, ours, salt, theirs, peer_salt))
            browser = SrtpContext(SrtpKeys(profile, theirs, peer_salt, ours, salt))
            address = receiver.getsockname()  # (a closed port would bill ICMP errors to the run)
            session.address = address
            session.addresses.add(address)
            sink = session.sink
            sink.video = OutTrack("video", "h264", 102, 1000 + n, 90000, history=SendHistory(HISTORY), module=h264)
            sink.audio = OutTrack("audio", "opus", 111, 5000 + n, 48000, module=opus)
            sink.video.last_pts = sink.audio.last_pts = 0
            sink.base = (time.time(), 0)
            block = rtcp.ReportBlock(sink.video.ssrc, highest_sequence=1000)
            compound = rtcp.receiver_report(7 + n, [block]) + rtcp.sdes_cname(7 + n, "browser")
            reports.append([browser.protect_rtcp(compound) for _ in range(count)])
            sessions.append(session)
        started = time.process_time()
        async with trio.open_nursery() as nursery:
            if ticker is not None:
                await nursery.start(ticker.run)
            for session in sessions:

                async def serve(session: WhepSession = session) -> None:
                    with session.scope:
                        await session._serve()

                nursery.start_soon(serve)
                if ticker is not None:
                    ticker.add(session)
            ready = time.process_time()
            # Every viewer's browser reports once per report_every, their phases spread: delivered
            # by 10 ms batches (a trio sleep per datagram, shorter than epoll's millisecond,
            # would spin and bill the run ~200 µs each).
            batches = max(1, round(report_every / 0.01))
            begin = trio.current_time()
            for index in range(count - 2):
                for batch in range(batches):
                    await trio.sleep_until(begin + index * report_every + batch * report_every / batches)
                    for n in range(batch, viewers, batches):
                        sessions[n].deliver(reports[n][index], sessions[n].address)
            await trio.sleep_until(begin + seconds)
            used = time.process_time() - ready
            sent = sum(1 for _ in iter(lambda: _drain(receiver), None))
            nursery.cancel_scope.cancel()
        port.close()
        return {
            "used": used,
            "setup": ready - started,
            "sent_reports": sent,
            "nacks": sum(s.stats.nacks for s in sessions),
            "bad": sum(s.stats.bad_packets + s.stats.srtp_errors for s in sessions),
        }

    row = trio.run(main)
    receiver.close()
    return {
        "mode": "sessions",
        "viewers": viewers,
        "seconds": seconds,
        "report_every_s": report_every,
        "ticker": Ticker is not None,
        "cpu_us_per_viewer_s": round(row["used"] * 1e6 / (viewers * seconds), 1),
        "bad_packets": row["bad"],
        "load_before": os.getloadavg()[0],
    }


def _drain(sock: socket.socket) -> bytes | None:
    try:
        return sock.recv(2048, socket.MSG_DONTWAIT)
    except BlockingIOError:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    viewers = sub.add_parser("viewers", help="server CPU and RSS per WHEP, RTMP and HTTP-FLV viewer")
    viewers.add_argument("--viewers", default="200", help="viewer counts, comma-separated (e.g. 250,500,1000)")
    viewers.add_argument("--seconds", type=float, default=20.0, help="each measurement window")
    viewers.add_argument("--warmup", type=float, default=2.0, help="after the WHEP handshakes, before the window")
    viewers.add_argument("--protocols", default="whep,rtmp,http-flv")
    viewers.add_argument("--clip", type=Path, default=SAMPLE if SAMPLE.exists() else DEMO)
    viewers.add_argument("--table", type=Path, help="only print the table of the JSON lines in this file")
    latency = sub.add_parser("latency", help="glass-to-glass in Chromium")
    latency.add_argument("--seconds", type=float, default=30.0, help="seconds each path plays")
    latency.add_argument("--paths", default=",".join(PATHS))
    latency.add_argument("--no-audio", action="store_true", help="publish video only")
    latency.add_argument("--pin", action="store_true", help="server on CPU 0, publisher on CPU 1 (as viewers)")
    hotpath = sub.add_parser("hotpath", help="the WHEP send path in process (no server): CPU per viewer and packet")
    hotpath.add_argument("--viewers", type=int, default=300)
    hotpath.add_argument("--seconds", type=int, default=2, help="seconds of media offered per pass")
    hotpath.add_argument("--repeat", type=int, default=5, help="passes; the least CPU counts")
    hotpath.add_argument("--no-send", action="store_true", help="stub the socket calls out")
    hotpath.add_argument("--profile", action="store_true", help="cProfile's top functions to stderr")
    hotpath.add_argument(
        "--drain", action="store_true", help="a UDP_GRO reader in a process on CPU 1 takes the datagrams"
    )
    sessions = sub.add_parser("sessions", help="the WHEP sessions' own tasks in process: CPU per viewer-second")
    sessions.add_argument("--viewers", type=int, default=500)
    sessions.add_argument("--seconds", type=float, default=10.0)
    sessions.add_argument("--report-every", type=float, default=1.0, help="each browser's receiver report period")
    load = sub.add_parser("whep-load", help="(internal) the WHEP load generator")
    load.add_argument("--url", required=True)
    load.add_argument("--viewers", type=int, required=True)
    load.add_argument("--seconds", type=float, required=True)
    load.add_argument("--warmup", type=float, default=2.0)
    load.add_argument("--server-pid", type=int, required=True)
    load.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    if args.mode == "whep-load":
        whep_load(args.url, args.viewers, args.warmup, args.seconds, args.server_pid, args.concurrency)
    elif args.mode == "viewers" and args.table:
        lines = [json.loads(line) for line in args.table.read_text().splitlines() if line.startswith("{")]
        print(viewers_table([row for row in lines if row.get("mode") == "viewers"]))
    elif args.mode == "hotpath":
        row = run_hotpath(
            min(max(1, args.viewers), 5000), min(max(1, args.seconds), 60), max(1, args.repeat),
            not args.no_send, args.profile, args.drain,
        )  # fmt: skip
        print(json.dumps(row))
    elif args.mode == "sessions":
        print(json.dumps(run_sessions(min(max(1, args.viewers), 5000), max(1.0, args.seconds), args.report_every)))
    elif args.mode == "viewers":
        counts = [int(n) for n in args.viewers.split(",") if n.strip()]
        rows = run_viewers([p for p in args.protocols.split(",") if p], counts, args.seconds, args.clip,
                           args.warmup)  # fmt: skip
        print(viewers_table(rows), file=sys.stderr)
    else:
        rows = run_latency([p for p in args.paths.split(",") if p], args.seconds, not args.no_audio, args.pin)
        print(latency_table(rows), file=sys.stderr)


if __name__ == "__main__":
    main()
