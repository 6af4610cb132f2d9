#!/usr/bin/env python3
"""The server CPU of one keep-alive HTTP/1.1 GET: an LL-HLS part, a playlist, a small API JSON.

In-process: a real :class:`~arcly_trio.workers.http.HttpServer` with the HLS service (variant
``ll``) on a loopback port, the bench sample published into it until the video rendition has a
segment and parts. Then a child process (plain blocking sockets, so its work is not this
process's CPU) opens ``--clients`` keep-alive connections and, on each, sends ``--requests``
GETs in pipelined batches of ``--batch``, reading every answer, for one target at a time: the
latest whole part (with the session id its playlist gave), the video playlist with that id and
without blocking parameters, the same without the id (a session begun per request),
``/api/health``; each with the HTTP worker's session lane on and off (``--lane``, see
:mod:`arcly_trio.workers.http.lane`: the part and the session's playlist are its requests), or
the lane's connections served by the session hub (``hub``, :mod:`arcly_trio.workers.http.hub`). The
server's CPU is ``time.process_time`` of this process around each run (the publisher is idle
then), divided by the requests answered. Each target is measured ``--repeat`` times; one JSON
line per target gives the µs per request of every run (the machine may be shared: a range).

    .venv/bin/python benchmarks/http_requests.py --clients 20 --requests 2000 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from arcly_trio import AppSpec, Engine  # noqa: E402
from arcly_trio.core.frame import FrameKind  # noqa: E402
from arcly_trio.media import flv  # noqa: E402
from arcly_trio.services import HlsService  # noqa: E402
from arcly_trio.workers.http import HttpServer  # noqa: E402

SAMPLE = Path("/work/shared/bench/media/sample.flv")
DEMO = ROOT / "arcly_trio" / "server" / "assets" / "demo.flv"
HOST = "127.0.0.1"

CLIENT = r"""
import socket, sys
host, port, target, clients, requests, batch = sys.argv[1], int(sys.argv[2]), sys.argv[3], *map(int, sys.argv[4:7])
request = ("GET %s HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n" % (target, host, port)).encode()
def answers(data):
    count, at = 0, 0
    while True:
        end = data.find(b"\r\n\r\n", at)
        if end < 0:
            return count, at
        head = data[at:end].lower()
        length = int(head.split(b"content-length: ")[1].split(b"\r\n")[0])
        if len(data) < end + 4 + length:
            return count, at
        count, at = count + 1, end + 4 + length
for _ in range(clients):
    # one connection at a time, opened when it is used: a connection opened earlier would sit
    # idle while the others run, and the server closes idle keep-alive connections
    sock = socket.create_connection((host, port))
    sent = 0
    buffer = b""
    while sent < requests:
        n = min(batch, requests - sent)
        sock.sendall(request * n)
        got = 0
        while got < n:
            data = sock.recv(1 << 20)
            if not data:
                sys.exit("the server closed the connection before answering every request")
            buffer += data
            count, used = answers(buffer)
            got, buffer = got + count, buffer[used:]
            if count and not buffer.startswith(b"HTTP/1.1 200"):
                pass
        sent += n
    sock.close()
print("ok")
"""


async def run(args: argparse.Namespace) -> None:
    clip = SAMPLE if SAMPLE.exists() else DEMO
    frames = flv.read_frames(clip.read_bytes())
    lanes = args.lane.split(",")
    http = HttpServer(HOST, 0, max_connections=4096, max_pending_per_address=None, session_hub="hub" in lanes)
    hls = HlsService(variant="ll")
    builder = Engine.builder().service(hls).protocol(http).application(AppSpec("live", hls=True, audio_hold=0))
    async with builder.build() as engine, engine.publish("live/bench") as publisher:
        for frame in frames[: len(frames) // 2]:
            await publisher.send(frame)
        await trio.sleep(0.2)
        live = hls.live.get("live/bench")
        rendition = None if live is None else live.packager.renditions.get(FrameKind.VIDEO)
        if rendition is None or not rendition.segments:
            raise SystemExit("the sample made no segment")
        stream = await trio.open_tcp_stream(HOST, http.port)
        await stream.send_all(b"GET /live/bench/video.m3u8 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        playlist = b""
        while data := await stream.receive_some(65536):
            playlist += data
        parts = re.findall(rb'#EXT-X-PART:[^\n]*URI="([^"]+)"', playlist)
        if not parts:
            raise SystemExit(f"no part in the playlist:\n{playlist.decode(errors='replace')}")
        session = parts[-1].decode().partition("arcly_session=")[2]
        targets = {
            "part": "/live/bench/" + parts[-1].decode(),
            "playlist": "/live/bench/video.m3u8",
            "session-playlist": f"/live/bench/video.m3u8?arcly_session={session}",
            "api": "/api/health",
        }
        for name, lane in [(name, lane) for name in args.targets.split(",") for lane in lanes]:
            http.session_lane = lane in ("on", "hub")  # read by each connection as it opens
            http.session_hub = lane == "hub"
            runs = []
            for _ in range(args.repeat):
                command = [sys.executable, "-c", CLIENT, HOST, str(http.port), targets[name], str(args.clients),
                           str(args.requests), str(args.batch)]  # fmt: skip
                cpu0 = time.process_time()
                process = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE)
                assert process.stdout is not None
                out = b""
                while chunk := await process.stdout.receive_some(4096):
                    out += chunk
                await process.wait()
                cpu = time.process_time() - cpu0
                if process.returncode or b"ok" not in out:
                    raise SystemExit(f"the client failed on {name}")
                runs.append(round(cpu / (args.clients * args.requests) * 1e6, 1))
            print(json.dumps({"target": name, "lane": lane, "clients": args.clients, "requests": args.requests,
                              "batch": args.batch, "server_cpu_us_per_request": runs}), flush=True)  # fmt: skip
        if args.profile:
            import cProfile
            import pstats

            command = [sys.executable, "-c", CLIENT, HOST, str(http.port), targets["part"], str(args.clients),
                       str(args.requests), str(args.batch)]  # fmt: skip
            profile = cProfile.Profile(time.process_time)
            profile.enable()
            await trio.run_process(command, stdout=subprocess.DEVNULL)
            profile.disable()
            for sort in ("tottime", "cumulative"):
                pstats.Stats(profile).sort_stats(sort).print_stats(40)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--requests", type=int, default=1000, help="GETs per client connection")
    parser.add_argument("--batch", type=int, default=1, help="GETs pipelined at once (1: request, answer, ...)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--targets", default="part,session-playlist,playlist,api")
    parser.add_argument(
        "--lane",
        default="on,off",
        help="the HTTP worker's session lane: on, off, hub (its connections served by the session hub), or several (on,off)",
    )
    parser.add_argument("--profile", action="store_true", help="then cProfile the server on part GETs")
    trio.run(run, parser.parse_args())


if __name__ == "__main__":
    main()
