#!/usr/bin/env python3
"""LL-HLS, fMP4 HLS and DASH: packaging cost, blocked requests against idle connections, and
the latency behind live that hls.js reaches in headless Chromium.

Three parts, each printing one JSON line per measurement (``--only packaging|blocked|latency``):

* ``packaging``: the HLS service's packaging of one stream, in-process: frames of a clip
  (default: the shared bench sample, 720p30 H.264 + AAC at 1665 kbit/s) go through the variant's
  packaging as fast as possible (packager, storage writes to memory, list rendering), looped to
  ``--media`` seconds of media with continuous timestamps. ``core_percent`` is CPU seconds per
  second of media, in percent of one core: the cost of packaging that stream live. It runs once
  per stream: viewers only read what it stored, so it does not grow with their number.
* ``blocked``: a server (a child process: HTTP, the demo stream packaged as ``ll``) is given
  ``--connections`` idle TCP connections, then, after they are closed, as many blocking playlist
  reloads (``_HLS_msn`` of the next segment, so each waits up to one segment): the server's RSS
  growth and CPU percent while they wait, per connection, side by side.
* ``latency``: ffmpeg publishes the clip in real time over RTMP to a server packaging it as
  ``ll``; Debian's headless Chromium plays ``index.m3u8`` with hls.js in ``lowLatencyMode``
  (over HTTP/1.1, from npm, as the browser tests do) for ``--seconds``; every 250 ms the page
  samples wall clock minus hls.js's ``playingDate`` (the program date time of what is on screen,
  anchored to the server's wall clock when the frames arrived). p50/p90 in milliseconds.

Run from the repository root: ``.venv/bin/python benchmarks/llhls.py [--only NAME]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from arcly_trio.core.frame import Frame  # noqa: E402
from arcly_trio.core.keys import StreamKey  # noqa: E402
from arcly_trio.media import flv  # noqa: E402
from arcly_trio.services import HlsService  # noqa: E402

SAMPLE = Path("/work/shared/bench/media/sample.flv")
DEMO = ROOT / "arcly_trio" / "server" / "assets" / "demo.flv"
HOST = "127.0.0.1"


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


# --- packaging ------------------------------------------------------------------------------


def looped(frames: list[Frame], seconds: float) -> list[Frame]:
    media = [f for f in frames if not f.config]
    configs = [f for f in frames if f.config]
    span = media[-1].dts - media[0].dts + 33
    out = list(configs)
    offset = 0
    while offset < seconds * 1000:
        out += [Frame(f.kind, f.codec, f.pts + offset, f.dts + offset, f.payload, f.keyframe, f.config, f.track)
                for f in media]  # fmt: skip
        offset += span
    return out


async def package(variant: str, frames: list[Frame]) -> float:
    hls = HlsService(variant=variant)
    key = StreamKey("live", "bench")
    packaging: Any
    if variant == "ts":
        from arcly_trio.services._hls_ts import TsPackaging

        packaging = TsPackaging(hls, key, "t")
    else:
        from arcly_trio.services._hls_cmaf import CmafPackaging

        packaging = CmafPackaging(hls, key, "t", low_latency=variant == "ll")
    start = time.process_time()
    for frame in frames:  # the service applies what each batch made; live batches are a frame or two
        await packaging.apply(packaging.push(frame))
    await packaging.apply(packaging.finish())
    return time.process_time() - start


def run_packaging(clip: Path, media_seconds: float) -> None:
    frames = looped(flv.read_frames(clip.read_bytes()), media_seconds)
    media = (frames[-1].dts - frames[0].dts) / 1000
    bits = sum(len(f.payload) for f in frames) * 8 / media
    for variant in ("ts", "fmp4", "ll"):
        cpu = min(trio.run(package, variant, frames) for _ in range(3))
        emit(
            part="packaging",
            variant=variant,
            clip=clip.name,
            media_seconds=round(media, 1),
            kbit_per_s=round(bits / 1000),
            cpu_seconds=round(cpu, 3),
            core_percent=round(100 * cpu / media, 3),
        )


# --- a server in a child process -------------------------------------------------------------

SERVER = r"""
import sys, trio, logging
from arcly_trio import AppSpec, Engine
from arcly_trio.services import HlsService
from arcly_trio.workers.http import HttpServer
from arcly_trio.workers.rtmp import RtmpServer
from arcly_trio.server.demo import publish_demo
logging.basicConfig(level=logging.WARNING)
http_port, rtmp_port, demo = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "demo"
async def main():
    http = HttpServer("127.0.0.1", http_port, max_connections=8192, max_pending_per_address=None)
    if len(sys.argv) > 4:
        from pathlib import Path
        files = {"players.html": Path(sys.argv[4]), "hls.min.js": Path(sys.argv[5])}
        async def serve_file(request, exchange):
            name = request.path.rpartition("/")[2]
            await exchange.respond(200, files[name].read_bytes(),
                                   content_type="text/html" if name.endswith("html") else "text/javascript")
        for name in files:
            http.router.get(f"/test/{name}", serve_file)
    builder = (Engine.builder().service(HlsService(variant="ll")).protocol(http)
               .protocol(RtmpServer("127.0.0.1", rtmp_port)).application(AppSpec("live", hls=True)))
    async with builder.build() as engine:
        if demo:
            await publish_demo(engine, "live/demo")
        else:
            await trio.sleep_forever()
trio.run(main)
"""


@contextlib.contextmanager
def server(*extra: str, demo: bool = True) -> Any:
    http_port, rtmp_port = free_port(), free_port()
    process = subprocess.Popen([sys.executable, "-c", SERVER, str(http_port), str(rtmp_port),
                                "demo" if demo else "none", *extra], cwd=ROOT)  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection((HOST, http_port), timeout=1):
                break
            time.sleep(0.1)
        yield process, http_port, rtmp_port
    finally:
        process.terminate()
        process.wait(10)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def http_get(port: int, target: str) -> bytes:
    stream = await trio.open_tcp_stream(HOST, port)
    async with stream:
        await stream.send_all(f"GET {target} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
    return data.partition(b"\r\n\r\n")[2]


async def measure_blocked(pid: int, port: int, count: int, mode: str) -> None:
    with trio.fail_after(30):
        while b"#EXT-X-PART" not in await http_get(port, "/live/demo/video.m3u8"):
            await trio.sleep(0.2)
    await trio.sleep(1)
    playlist = (await http_get(port, "/live/demo/video.m3u8")).decode()
    msn = int(playlist.split("#EXT-X-MEDIA-SEQUENCE:")[1].split()[0]) + playlist.count("#EXTINF")
    before = rss_kb(pid)
    streams = []
    for _ in range(count):
        stream = await trio.open_tcp_stream(HOST, port)
        if mode == "blocked":  # the segment after the one in progress: a wait of 2 to 4 s
            await stream.send_all(f"GET /live/demo/video.m3u8?_HLS_msn={msn + 1} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        streams.append(stream)
    await trio.sleep(0.3)
    held, cpu_before, t0 = rss_kb(pid), cpu_seconds(pid), time.monotonic()
    await trio.sleep(1)
    cpu_after, t1 = cpu_seconds(pid), time.monotonic()
    emit(
        part="blocked",
        mode=mode,
        connections=count,
        rss_growth_kb=held - before,
        bytes_per_connection=round((held - before) * 1024 / count),
        server_cpu_percent_while_held=round(100 * (cpu_after - cpu_before) / (t1 - t0), 1),
    )
    for stream in streams:
        await stream.aclose()


def run_blocked(count: int) -> None:
    for mode in ("idle", "blocked", "idle", "blocked"):  # each in a fresh server
        with server() as (process, http_port, _):
            trio.run(measure_blocked, process.pid, http_port, count, mode)


# --- latency ----------------------------------------------------------------------------------


def run_latency(clip: Path, seconds: float) -> None:
    from tests._browser import chromium
    from tests._npm import HLS_JS, npm_file

    players = ROOT / "tests" / "data" / "players.html"
    with server(str(players), str(npm_file(*HLS_JS)), demo=False) as (process, http_port, rtmp_port):
        publisher = subprocess.Popen(["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-re",
                                      "-stream_loop", "-1", "-i", str(clip), "-c", "copy", "-f", "flv",
                                      f"rtmp://{HOST}:{rtmp_port}/live/demo"])  # fmt: skip
        try:
            time.sleep(4)
            with chromium("--autoplay-policy=no-user-gesture-required") as driver:
                src = f"http://{HOST}:{http_port}/live/demo/index.m3u8"
                driver.get(f"http://{HOST}:{http_port}/test/players.html?kind=hls&src={src}")
                time.sleep(seconds)
                report = driver.execute_script("return window.report")
        finally:
            publisher.kill()
    latency = sorted(report["latency"][8:])  # after the first 2 s
    if not latency:
        emit(part="latency", error="no sample", errors=report["errors"][:5])
        return
    emit(
        part="latency",
        player="hls.js lowLatencyMode",
        clip=clip.name,
        samples=len(latency),
        p50_ms=latency[len(latency) // 2],
        p90_ms=latency[int(len(latency) * 0.9)],
        min_ms=latency[0],
        max_ms=latency[-1],
        fatal=report["fatal"],
        errors=len(report["errors"]),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=["packaging", "blocked", "latency"])
    parser.add_argument("--clip", type=Path, default=SAMPLE if SAMPLE.exists() else DEMO)
    parser.add_argument("--media", type=float, default=120, help="seconds of media packaged")
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=40, help="seconds hls.js plays")
    args = parser.parse_args()
    if args.only in (None, "packaging"):
        run_packaging(args.clip, args.media)
    if args.only in (None, "blocked"):
        run_blocked(args.connections)
    if args.only in (None, "latency"):
        run_latency(args.clip, args.seconds)


if __name__ == "__main__":
    main()
