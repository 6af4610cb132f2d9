#!/usr/bin/env python3
"""LL-HLS, fMP4 HLS and DASH: packaging cost, blocked requests against idle connections, and
the latency behind live that hls.js reaches in headless Chromium.

Six parts, each printing one JSON line per measurement
(``--only packaging|blocked|latency|wake|viewers|generator``):

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

* ``viewers``: ``arcly-trio serve --demo`` (a child process pinned to CPU 0 with ``taskset``)
  packages the clip, published by ffmpeg in real time (the shared bench sample: 720p30 H.264 +
  AAC, 1.6 Mbit/s) as ``live/bench``, as ``ll``; ``--generators`` load generator processes
  (default one), pinned to CPU 1, run ``--viewers`` LL-HLS viewers of it for ``--window``
  seconds: the sans-IO follower (:mod:`arcly_trio.clients.hls_follower`: blocking reloads and
  part fetches as hls.js in low-latency mode, one keep-alive connection per rendition) driven
  by ``--generator lean`` (:mod:`arcly_trio.clients.hls_load`, one ``selectors`` loop, the
  default) or ``trio`` (:func:`arcly_trio.clients.hls.follow_llhls`); meanwhile a healthy RTMP
  player of *another* stream (the built-in demo) counts its frames per second; then, in a
  fresh server, as many HTTP-FLV viewers of ``live/bench`` (reading and discarding). For each:
  server CPU ms per viewer-second (its CPU time over the window, from ``/proc``, less a run
  with no viewer, divided by viewers × seconds), the healthy player's lowest fps, the largest
  loop lag ``/api/health`` reported, RSS per viewer, what the viewers got (parts, playlists,
  gaps, errors), server CPU µs per request, and ``runqueue_wait_s``: the seconds the server was
  runnable but another process had its CPU (``/proc/PID/schedstat``): on a shared machine the
  loop lag and the healthy fps owe that much to others. For LL-HLS, whether the generator kept
  up: its own CPU (percent and µs per request, over the same window), requests and parts per
  viewer-second against what the stream's part rate asks for (two requests per part), gaps,
  errors, ``kept_up``. Each count in ``--counts`` (default 300,1000,3000) is one pair of runs
  (``--kinds``); ``--server-root`` runs another checkout's server (compare before and after a
  change in one session); ``--hls-muxed`` packages the stream as one muxed rendition
  (``serve --hls-muxed``: one media playlist to follow instead of two; compare runs with and
  without it).
* ``generator``: the load generator's own ceiling: a trivial LL-HLS origin answering from memory
  (every blocking reload at once; CPU 0) and each driver flat out against it on CPU 1,
  alternated: its CPU per request and the requests per second of one core that gives.

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

from arcly_trio.core.frame import Frame, FrameKind  # noqa: E402
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


# --- wake -------------------------------------------------------------------------------------


async def measure_wake(frames: list[Frame], count: int, turn: int) -> dict[str, Any]:
    """``count`` blocking reloads of the next part held by an in-process server, answered by one
    change: the longest pass of trio's scheduler while they are answered, in CPU ms of this
    thread (a probe task's gap between two of its own turns: what every other connection waited,
    whatever else the machine runs), and the CPU to answer them all."""
    from arcly_trio import AppSpec, Engine
    from arcly_trio.services import _hls_cmaf
    from arcly_trio.workers.http import HttpServer

    _hls_cmaf.WAKE_TURN = turn
    http = HttpServer(HOST, 0, max_connections=count + 64, max_pending_per_address=None)
    hls = HlsService()
    builder = Engine.builder().service(hls).protocol(http).application(AppSpec("live", hls=True, audio_hold=0))
    async with builder.build() as engine, engine.publish("live/bench") as publisher:
        configs = [f for f in frames if f.config]
        media = [f for f in frames if not f.config]
        for frame in configs:
            await publisher.send(frame)
        position = 0

        def video() -> Any:
            live = hls.live.get("live/bench")
            return None if live is None else live.packager.renditions.get(FrameKind.VIDEO)

        while video() is None or not video().segments or not hls.live["live/bench"].current:
            await publisher.send(media[position])
            position += 1
            await trio.sleep(0.001)
        rendition, live = video(), hls.live["live/bench"]
        msn, part = rendition.open_sequence, len(rendition.open_parts)
        streams = []
        request = f"GET /live/bench/video.m3u8?_HLS_msn={msn}&_HLS_part={part} HTTP/1.1\r\nHost: x\r\n\r\n"
        for _ in range(count):
            stream = await trio.open_tcp_stream(HOST, http.port)
            await stream.send_all(request.encode())
            streams.append(stream)
        with trio.fail_after(60):
            while live.waiting < count:
                await trio.sleep(0.01)
        longest = 0.0
        done = False

        async def probe() -> None:
            nonlocal longest
            while not done:
                before = time.thread_time()
                await trio.sleep(0)
                longest = max(longest, time.thread_time() - before)

        cpu0 = time.thread_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(probe)
            while live.waiting:  # frames until the part is made and every waiter woken
                if len(rendition.open_parts) <= part and rendition.open_sequence == msn:
                    await publisher.send(media[position])
                    position += 1
                await trio.sleep(0)
            for stream in streams:  # every answer arrived
                await stream.receive_some(65536)
            cpu = time.thread_time() - cpu0
            done = True
        for stream in streams:
            await stream.aclose()
    return {"part": "wake", "held": count, "turn": turn, "longest_pass_cpu_ms": round(1000 * longest, 1),
            "cpu_ms_to_answer_all": round(1000 * cpu, 1)}  # fmt: skip


def run_wake(counts: list[int]) -> None:
    frames = flv.read_frames(DEMO.read_bytes())
    for count in counts:
        for turn in (10**9, 32, 8):  # everyone in one pass (as before), then in turns
            emit(**trio.run(measure_wake, frames, count, turn))


# --- generator: the load generator's own ceiling ----------------------------------------------

RESPONDER = r"""
import selectors, socket, sys
# A trivial LL-HLS origin answering from memory (no blocking: every reload is answered at once
# with the playlist whose live edge is the part asked for), so that a load generator runs flat
# out and its own CPU per request can be read.
port, video_bytes, audio_bytes = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
PARTS = 7
def answer(body, kind=b"application/vnd.apple.mpegurl"):
    return b"HTTP/1.1 200 OK\r\ncontent-type: %s\r\ncontent-length: %d\r\n\r\n%s" % (kind, len(body), body)
MULTI = answer(b'#EXTM3U\n#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="a",NAME="a",URI="audio.m3u8"\n'
               b'#EXT-X-STREAM-INF:BANDWIDTH=1700000,AUDIO="a"\nvideo.m3u8\n')
PART = {b"v": answer(b"v" * video_bytes, b"video/mp4"), b"a": answer(b"a" * audio_bytes, b"audio/mp4")}
INIT = answer(b"i" * 700, b"video/mp4")
cache = {}
def playlist(letter, msn, part):
    # live edge: part ``part`` of segment ``msn`` (its last part: the segment is complete)
    key = (letter, msn, part)
    if key not in cache:
        if len(cache) > 20000:
            cache.clear()
        complete = msn if part == PARTS - 1 else msn - 1
        lines = [b"#EXTM3U", b"#EXT-X-VERSION:7", b"#EXT-X-TARGETDURATION:2",
                 b"#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.000",
                 b"#EXT-X-PART-INF:PART-TARGET=0.286", b"#EXT-X-MEDIA-SEQUENCE:%d" % (complete - 5),
                 b'#EXT-X-MAP:URI="%s1.mp4"' % letter]
        for sequence in range(complete - 5, complete + 1):
            lines.append(b"#EXT-X-PROGRAM-DATE-TIME:2026-12-07T11:00:00.000Z")
            if sequence >= complete - 2:
                lines += [b'#EXT-X-PART:DURATION=0.286,URI="%s-%d.%d.m4s"%s' % (letter, sequence, i,
                          b",INDEPENDENT=YES" if i == 0 else b"") for i in range(PARTS)]
            lines += [b"#EXTINF:2.000,", b"%s-%d.m4s" % (letter, sequence)]
        if complete < msn:
            lines += [b'#EXT-X-PART:DURATION=0.286,URI="%s-%d.%d.m4s"' % (letter, msn, i) for i in range(part + 1)]
            lines.append(b'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="%s-%d.%d.m4s"' % (letter, msn, part + 1))
        else:
            lines.append(b'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="%s-%d.0.m4s"' % (letter, msn + 1))
        lines.append(b'#EXT-X-RENDITION-REPORT:URI="other.m3u8",LAST-MSN=%d,LAST-PART=%d' % (msn, part))
        cache[key] = answer(b"\n".join(lines) + b"\n")
    return cache[key]
def respond(target):
    path, _, query = target.partition(b"?")
    name = path.rpartition(b"/")[2]
    if name == b"index.m3u8":
        return MULTI
    if name.endswith(b".m3u8"):
        msn, part = 100, 0
        if b"_HLS_msn=" in query:
            fields = dict(f.split(b"=", 1) for f in query.split(b"&") if b"=" in f)
            msn, part = int(fields[b"_HLS_msn"]), int(fields[b"_HLS_part"])
            if part >= PARTS:
                msn, part = msn + 1, 0
        return playlist(name[:1], msn, part)
    if name.endswith(b".mp4"):
        return INIT
    return PART[name[:1]]
selector = selectors.DefaultSelector()
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", port))
listener.listen(4096)
listener.setblocking(False)
selector.register(listener, selectors.EVENT_READ, None)
pending = {}
while True:
    for key, _ in selector.select():
        if key.data is None:
            try:
                while True:
                    conn, _ = listener.accept()
                    conn.setblocking(False)
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    selector.register(conn, selectors.EVENT_READ, [b""])
            except BlockingIOError:
                pass
            continue
        conn, state = key.fileobj, key.data
        try:
            data = conn.recv(65536)
        except OSError:
            data = b""
        if not data:
            selector.unregister(conn)
            conn.close()
            continue
        buffer = state[0] + data
        out = []
        while (end := buffer.find(b"\r\n\r\n")) >= 0:
            out.append(respond(buffer[4 : buffer.find(b" ", 4)]))
            buffer = buffer[end + 4 :]
        state[0] = buffer
        conn.setblocking(True)  # a benchmark origin: the generator always reads
        conn.sendall(b"".join(out))
        conn.setblocking(False)
"""


def responder(port: int, video_bytes: int, audio_bytes: int) -> subprocess.Popen[bytes]:
    """The trivial origin on CPU 0."""
    return subprocess.Popen(["taskset", "-c", "0", sys.executable, "-c", RESPONDER, str(port), str(video_bytes),
                             str(audio_bytes)])  # fmt: skip


def lean_generator(port: int, viewers: int, start: float, end: float) -> dict[str, Any]:
    """:class:`~arcly_trio.clients.hls_load.LlhlsLoad`: counts and this process's CPU between the
    ``time.monotonic`` instants ``start`` and ``end`` (one clock for every process)."""
    from arcly_trio.clients.hls_load import LlhlsLoad

    load = LlhlsLoad(HOST, port, "/live/bench/index.m3u8", viewers)
    load.run(start - time.monotonic())
    before = (load.requests, load.counts.parts, load.counts.playlists, load.counts.gaps, load.counts.errors,
              load.counts.bytes, time.process_time(), time.monotonic())  # fmt: skip
    load.run(end - time.monotonic())
    after = (load.requests, load.counts.parts, load.counts.playlists, load.counts.gaps, load.counts.errors,
             load.counts.bytes, time.process_time(), time.monotonic())  # fmt: skip
    load.close()
    return _generator_result(before, after, load.connections)


def trio_generator(port: int, viewers: int, start: float, end: float) -> dict[str, Any]:
    """The trio driver (:func:`~arcly_trio.clients.hls.follow_llhls`), measured as
    :func:`lean_generator`; its requests are counted as playlists plus parts (plus one init per
    rendition, before the window)."""
    from arcly_trio.clients.hls import LlhlsStats, follow_llhls

    stats = LlhlsStats()

    def snapshot() -> tuple[Any, ...]:
        return (stats.playlists + stats.parts, stats.parts, stats.playlists, stats.gaps, stats.errors, stats.bytes,
                time.process_time(), time.monotonic())  # fmt: skip

    async def main() -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            for _ in range(viewers):
                nursery.start_soon(follow_llhls, HOST, port, "/live/bench/index.m3u8", stats, stop)
            await trio.sleep(start - time.monotonic())
            before = snapshot()
            await trio.sleep(end - time.monotonic())
            after = snapshot()
            stop.set()
        return before, after

    before, after = trio.run(main)
    return _generator_result(before, after, stats.renditions)


def _generator_result(before: tuple[Any, ...], after: tuple[Any, ...], connections: int) -> dict[str, Any]:
    requests, parts, playlists, gaps, errors, size, cpu, wall = (b - a for a, b in zip(before, after, strict=True))
    return {"requests": requests, "parts": parts, "playlists": playlists, "gaps": gaps, "errors": errors,
            "bytes": size, "cpu_s": round(cpu, 3), "window_s": round(wall, 3), "connections": connections}  # fmt: skip


GENERATOR = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import llhls
driver, port, viewers, start, end = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6])
run = llhls.lean_generator if driver == "lean" else llhls.trio_generator
print(json.dumps(run(port, viewers, start, end)), flush=True)
"""


def generators(
    driver: str, processes: int, port: int, viewers: int, start: float, end: float
) -> list[subprocess.Popen[bytes]]:
    """``processes`` load generator processes on CPU 1, sharing ``viewers``; each prints its
    :func:`_generator_result` JSON once ``end`` (``time.monotonic``) is past."""
    share = [viewers // processes + (index < viewers % processes) for index in range(processes)]
    return [subprocess.Popen(["taskset", "-c", "1", sys.executable, "-c", GENERATOR, str(ROOT / "benchmarks"), driver,
                              str(port), str(count), repr(start), repr(end)], cwd=ROOT, stdout=subprocess.PIPE)
            for count in share if count]  # fmt: skip


def collect(processes: list[subprocess.Popen[bytes]]) -> dict[str, Any]:
    """The sum of the generators' results (``window_s``: the longest)."""
    total: dict[str, Any] = {}
    for process in processes:
        out, _ = process.communicate(timeout=600)
        for name, value in json.loads(out).items():
            total[name] = max(total.get(name, 0), value) if name == "window_s" else total.get(name, 0) + value
    return total


def run_generator(viewers: int, seconds: float, video_bytes: int, audio_bytes: int) -> None:
    """Each driver flat out against the trivial origin (alternated, twice): its own CPU per
    request, and the requests per second of one core that gives."""
    port = free_port()
    origin = responder(port, video_bytes, audio_bytes)
    try:
        time.sleep(1)
        for driver in ("lean", "trio", "lean", "trio"):
            now = time.monotonic()
            result = collect(generators(driver, 1, port, viewers, now + 3, now + 3 + seconds))
            per_request = result["cpu_s"] / max(1, result["requests"])
            emit(part="generator", driver=driver, viewers=viewers, **result,
                 cpu_us_per_request=round(1e6 * per_request, 2),
                 requests_per_core_s=round(1 / per_request) if per_request else None,
                 requests_per_wall_s=round(result["requests"] / result["window_s"]))  # fmt: skip
    finally:
        origin.terminate()
        origin.wait(10)


# --- viewers ----------------------------------------------------------------------------------


SERVER_ROOT = ROOT
"""The checkout whose server the viewers part runs (``--server-root``: compare two)."""
SERVER_ARGS: list[str] = []
"""More options for that server (``--hls-muxed``)."""


def serve_pinned(http_port: int, rtmp_port: int) -> subprocess.Popen[bytes]:
    """``arcly-trio serve --demo`` as ``ll`` on CPU 0 (the load generator goes on CPU 1)."""
    command = [sys.executable, "-m", "arcly_trio", "serve", "--demo", "--hls", "--hls-variant", "ll",
               "--host", HOST, "--rtmp-port", str(rtmp_port), "--http-port", str(http_port),
               "--max-connections", "16384", "--max-idle-per-ip", "16384", "--log-level", "error",
               "--srt-port", "-1", "--rtsp-port", "-1", "--webrtc-port", "-1", *SERVER_ARGS]  # fmt: skip
    return subprocess.Popen(["taskset", "-c", "0", *command], cwd=SERVER_ROOT)


def runqueue_seconds(pid: int) -> float:
    """Seconds the process's main thread spent runnable but not running (another process had
    its CPU): on a shared machine, what the loop lag owes to others rather than to the server."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9


async def api_get(port: int, target: str) -> dict[str, Any]:
    return dict(json.loads(await http_get(port, target)))


async def flv_viewer(port: int, counter: list[int], errors: list[int]) -> None:
    try:
        stream = await trio.open_tcp_stream(HOST, port)
        async with stream:
            await stream.send_all(b"GET /live/bench.flv HTTP/1.1\r\nHost: x\r\n\r\n")
            while chunk := await stream.receive_some(262144):
                counter[0] += len(chunk)
    except (OSError, trio.BrokenResourceError):
        pass
    errors[0] += 1  # every end is one: a viewer plays until the run ends


HEALTHY = r"""
import json, sys, trio
sys.path.insert(0, sys.argv[1])
from attacks import Healthy  # the reliability run's healthy RTMP player of live/demo
healthy = Healthy()
async def main():
    with trio.move_on_after(float(sys.argv[3])):
        await healthy.run(int(sys.argv[2]))
trio.run(main)
print(json.dumps(healthy.per_second))
"""


def healthy_player(rtmp_port: int, seconds: float) -> subprocess.Popen[bytes]:
    """A healthy RTMP player of live/demo in a process of its own (the load generator's own
    loop is busy), counting video frames per second of ``time.monotonic`` (one clock for every
    process): its JSON on stdout once it ends."""
    return subprocess.Popen([sys.executable, "-c", HEALTHY, str(ROOT / "benchmarks"), str(rtmp_port), str(seconds)],
                            cwd=ROOT, stdout=subprocess.PIPE)  # fmt: skip


def min_fps(per_second: dict[str, int], start: float, end: float) -> int:
    return min((per_second.get(str(s), 0) for s in range(int(start) + 1, int(end))), default=-1)


GENERATOR_DRIVER = "lean"
"""The load generator of the viewers part (``--generator``: ``lean`` or ``trio``)."""
GENERATOR_PROCESSES = 1
"""How many generator processes share the viewers (``--generators``), all on CPU 1."""


async def part_rate(port: int) -> float:
    """Parts per second of media the stream's renditions make together: for each media playlist,
    its listed parts of complete segments over the sum of their ``DURATION`` (one blocking reload
    and one part request per part is what a viewer that keeps up sends)."""
    from arcly_trio.clients.hls_follower import parse_media_playlist, rendition_targets

    rate = 0.0
    index = b"/live/bench/index.m3u8"
    for target in rendition_targets(index, await http_get(port, index.decode())):
        playlist = parse_media_playlist(await http_get(port, target.decode()))
        closed = {msn for msn, _ in playlist.closed}
        durations = [float(line.partition(b"DURATION=")[2].partition(b",")[0] or 0)
                     for msn, _, line in playlist.parts if msn in closed]  # fmt: skip
        if durations and sum(durations):
            rate += len(durations) / sum(durations)
    return rate


async def measure_viewers(kind: str, count: int, window: float, clip: Path) -> dict[str, Any]:
    http_port, rtmp_port = free_port(), free_port()
    process = serve_pinned(http_port, rtmp_port)
    publisher = None
    try:
        with trio.fail_after(30):
            while True:
                try:
                    await api_get(http_port, "/api/health")
                    break
                except (OSError, ValueError):
                    await trio.sleep(0.2)
        publisher = subprocess.Popen(["taskset", "-c", "1", "ffmpeg", "-hide_banner", "-nostdin", "-loglevel",
                                      "error", "-re", "-stream_loop", "-1", "-i", str(clip), "-c", "copy", "-f",
                                      "flv", f"rtmp://{HOST}:{rtmp_port}/live/bench"])  # fmt: skip
        with trio.fail_after(30):
            while b"#EXT-X-PART" not in await http_get(http_port, "/live/bench/video.m3u8"):
                await trio.sleep(0.3)
        settle = 5 + count / 500  # every viewer connected and following
        healthy = healthy_player(rtmp_port, window + settle + 3)
        flv_bytes, flv_ends = [0], [0]
        begin = time.monotonic() + settle
        spawned = []
        if kind == "llhls":
            spawned = generators(GENERATOR_DRIVER, GENERATOR_PROCESSES, http_port, count, begin, begin + window)
        async with trio.open_nursery() as nursery:
            for index in range(count if kind == "http-flv" else 0):
                nursery.start_soon(flv_viewer, http_port, flv_bytes, flv_ends)
                if index % 100 == 99:
                    await trio.sleep(0.05)
            await trio.sleep(max(0, begin - time.monotonic()))
            before = (flv_ends[0], flv_bytes[0])
            rss0, cpu0, start = rss_kb(process.pid), cpu_seconds(process.pid), time.monotonic()
            waited0 = runqueue_seconds(process.pid)
            await trio.sleep(max(0, begin + window - time.monotonic()))
            cpu1, end = cpu_seconds(process.pid), time.monotonic()
            waited = runqueue_seconds(process.pid) - waited0
            lags = (await api_get(http_port, "/api/health"))["loop"]["lag_ms_per_second"]
            rss1 = rss_kb(process.pid)
            rate = await part_rate(http_port)
            nursery.cancel_scope.cancel()
        load = await trio.to_thread.run_sync(collect, spawned) if spawned else {}
        per_second = json.loads((await trio.to_thread.run_sync(healthy.communicate))[0])
        span = end - start
        generator = {}
        if load:
            viewer_seconds = count * load["window_s"]
            generator = {
                "generator": f"{GENERATOR_DRIVER} x{len(spawned)}",
                "generator_cpu_percent": round(100 * load["cpu_s"] / load["window_s"], 1),
                "generator_cpu_us_per_request": round(1e6 * load["cpu_s"] / max(1, load["requests"]), 1),
                "requests_per_viewer_s": round(load["requests"] / viewer_seconds, 2),
                "expected_requests_per_viewer_s": round(2 * rate, 2),
                "parts_per_viewer_s": round(load["parts"] / viewer_seconds, 2),
                "expected_parts_per_viewer_s": round(rate, 2),
                "kept_up": load["gaps"] == 0 and load["errors"] == 0 and load["parts"] >= 0.97 * rate * viewer_seconds,
            }
        return {
            "viewers": kind,
            "count": count,
            "window_s": round(end - start, 1),
            "cpu_s": round(cpu1 - cpu0, 2),
            "runqueue_wait_s": round(waited, 2),
            "rss_kb": max(rss0, rss1),
            "healthy_fps_min": min_fps(per_second, start, end),
            "loop_lag_max_ms": max(lags[-int(end - start) :], default=0),
            "parts_per_s": round(load.get("parts", 0) / span, 1),
            "playlists_per_s": round(load.get("playlists", 0) / span, 1),
            "gaps": load.get("gaps", 0),
            "errors": load.get("errors", 0) + flv_ends[0] - before[0],
            "mbit_per_s": round(8 * ((flv_bytes[0] - before[1]) + load.get("bytes", 0)) / span / 1e6, 1),
            **generator,
        }
    finally:
        if publisher is not None:
            publisher.kill()
            publisher.wait()
        process.terminate()
        process.wait(10)


def run_viewers(counts: list[int], window: float, clip: Path, kinds: list[str]) -> None:
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {1})  # the load generator on the other core than the server
    base = trio.run(measure_viewers, "none", 0, window, clip)
    emit(part="viewers", server=str(SERVER_ROOT), server_args=SERVER_ARGS, **base)
    per_second = base["cpu_s"] / base["window_s"]
    for count in counts:
        results = {}
        for kind in kinds:
            result = trio.run(measure_viewers, kind, count, window, clip)
            marginal = result["cpu_s"] - per_second * result["window_s"]
            result["cpu_ms_per_viewer_second"] = round(1000 * marginal / (count * result["window_s"]), 3)
            requests = (result["parts_per_s"] + result["playlists_per_s"]) * result["window_s"]
            if requests:
                result["cpu_us_per_request"] = round(1e6 * marginal / requests, 1)
            result["rss_kb_per_viewer"] = round((result["rss_kb"] - base["rss_kb"]) / count, 1)
            results[kind] = result
            emit(part="viewers", server_args=SERVER_ARGS, **result)
        flv = results["http-flv"]["cpu_ms_per_viewer_second"] if len(results) == 2 else 0
        if flv > 0:
            emit(part="viewers", count=count,
                 llhls_over_flv=round(results["llhls"]["cpu_ms_per_viewer_second"] / flv, 2))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=["packaging", "blocked", "latency", "viewers", "wake", "generator"])
    parser.add_argument("--clip", type=Path, default=SAMPLE if SAMPLE.exists() else DEMO)
    parser.add_argument("--media", type=float, default=120, help="seconds of media packaged")
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=40, help="seconds hls.js plays")
    parser.add_argument("--counts", default="300,1000,3000", help="viewer counts of the viewers part")
    parser.add_argument("--server-root", type=Path, default=ROOT, help="the checkout whose server viewers run")
    parser.add_argument("--kinds", default="llhls,http-flv", help="viewers part: llhls, http-flv or both")
    parser.add_argument("--window", type=float, default=20, help="seconds the viewers part measures")
    parser.add_argument(
        "--generator",
        choices=["lean", "trio"],
        default="lean",
        help="viewers part: the LL-HLS load generator (lean: selectors, trio: follow_llhls)",
    )
    parser.add_argument(
        "--generators", type=int, default=1, help="viewers part: generator processes sharing the viewers (all on CPU 1)"
    )
    parser.add_argument("--generator-viewers", type=int, default=1000, help="generator part: viewers")
    parser.add_argument(
        "--part-bytes", default="66000,5500", help="generator part: the trivial origin's video and audio part sizes"
    )
    parser.add_argument(
        "--hls-muxed", action="store_true", help="viewers part: the server packages one muxed rendition"
    )
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        help="viewers part: one more option for the server (repeatable; e.g. --server-arg=--no-http-session-hub)",
    )
    args = parser.parse_args()
    SERVER_ARGS.extend(args.server_arg)
    if args.hls_muxed:
        SERVER_ARGS.append("--hls-muxed")
    if args.only in (None, "packaging"):
        run_packaging(args.clip, args.media)
    if args.only in (None, "blocked"):
        run_blocked(args.connections)
    if args.only in (None, "latency"):
        run_latency(args.clip, args.seconds)
    if args.only in (None, "wake"):
        run_wake([int(n) for n in args.counts.split(",")])
    if args.only in (None, "generator"):
        video_bytes, audio_bytes = (int(n) for n in args.part_bytes.split(","))
        run_generator(args.generator_viewers, args.window, video_bytes, audio_bytes)
    if args.only in (None, "viewers"):
        global SERVER_ROOT, GENERATOR_DRIVER, GENERATOR_PROCESSES
        SERVER_ROOT = args.server_root
        GENERATOR_DRIVER, GENERATOR_PROCESSES = args.generator, args.generators
        run_viewers([int(n) for n in args.counts.split(",")], args.window, args.clip, args.kinds.split(","))


if __name__ == "__main__":
    main()
