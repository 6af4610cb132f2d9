#!/usr/bin/env python3
"""The HLS route's own CPU per request, without the HTTP connection layer (issue 26, part 2).

In-process: an engine with the HLS service (variant ``ll``), the bench sample published into it
until the video rendition has segments and parts; one player session begun by a playlist
request. Then the routes' handlers (:mod:`arcly_trio.services.hls_routes`) are called directly
with a request object and a responder that only records the answer, ``--requests`` times per
target: the latest part with the session id, the video playlist with the session id, and a
blocking reload of a part the playlist already holds (answered at once). The CPU
(``time.process_time``) per call is printed, one JSON line per target with every run's µs
(``--repeat``), so two checkouts can be compared alternately on a shared machine:

    PYTHONPATH=. .venv/bin/python benchmarks/hls_route.py --requests 20000 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from arcly_trio import AppSpec, Engine  # noqa: E402
from arcly_trio.core.frame import FrameKind  # noqa: E402
from arcly_trio.media import flv  # noqa: E402
from arcly_trio.protocols.http.router import HttpRequest  # noqa: E402
from arcly_trio.services import HlsService, hls_routes  # noqa: E402

SAMPLE = Path("/work/shared/bench/media/sample.flv")
DEMO = ROOT / "arcly_trio" / "server" / "assets" / "demo.flv"
PEER = ("127.0.0.1", 40000)


class Recorder:
    """A responder that keeps the last answer (no connection)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.status = 0
        self.body = b""

    async def respond(self, status: int, body: bytes = b"", **_: Any) -> None:
        self.status, self.body = status, body

    async def error(self, status: int, message: str, **_: Any) -> None:
        self.status, self.body = status, message.encode()


def request(path: str, query: dict[str, str], params: dict[str, str]) -> HttpRequest:
    return HttpRequest("GET", path, path, query, (("host", "x"),), PEER, "1.1", params)


async def run(args: argparse.Namespace) -> None:
    clip = SAMPLE if SAMPLE.exists() else DEMO
    frames = flv.read_frames(clip.read_bytes())
    hls = HlsService(variant="ll", session_timeout=3600)
    builder = Engine.builder().service(hls).application(AppSpec("live", hls=True, audio_hold=0))
    async with builder.build() as engine, engine.publish("live/bench") as publisher:
        for frame in frames[: len(frames) // 2]:
            await publisher.send(frame)
        await trio.sleep(0.2)
        live = hls.live["live/bench"]
        rendition = live.packager.renditions[FrameKind.VIDEO]
        params = {"app": "live", "stream": "bench"}
        exchange = Recorder(engine)
        await hls_routes.serve_playlist(hls, request("/live/bench/video.m3u8", {}, params), exchange, "video.m3u8")
        found = re.findall(rb'#EXT-X-PART:[^\n]*URI="([^"?]+)\?arcly_session=([^"&]+)"', exchange.body)
        if exchange.status != 200 or not found:
            raise SystemExit(f"no part in the playlist: {exchange.status} {exchange.body[:200]!r}")
        part, session = found[-1][0].decode(), found[-1][1].decode()
        with_session = {"arcly_session": session}
        msn = rendition.open_sequence if rendition.open_parts else rendition.segments[-1].sequence
        blocking = {"_HLS_msn": str(msn), "_HLS_part": "0", **with_session}
        calls: dict[str, Any] = {
            "part": lambda: hls_routes.serve_segment(
                hls, request(f"/live/bench/{part}", with_session, {**params, "segment": part}), exchange
            ),
            "playlist": lambda: hls_routes.serve_playlist(
                hls, request("/live/bench/video.m3u8", with_session, params), exchange, "video.m3u8"
            ),
            "blocking-ready": lambda: hls_routes.serve_playlist(
                hls, request("/live/bench/video.m3u8", blocking, params), exchange, "video.m3u8"
            ),
        }
        for name in args.targets.split(","):
            call = calls[name]
            runs = []
            for _ in range(args.repeat):
                cpu0 = time.process_time()
                for _ in range(args.requests):
                    await call()
                runs.append(round((time.process_time() - cpu0) / args.requests * 1e6, 2))
                if exchange.status != 200:
                    raise SystemExit(f"{name}: {exchange.status} {exchange.body[:200]!r}")
            print(json.dumps({"target": name, "requests": args.requests, "cpu_us_per_request": runs}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--targets", default="part,playlist,blocking-ready")
    trio.run(run, parser.parse_args())


if __name__ == "__main__":
    main()
