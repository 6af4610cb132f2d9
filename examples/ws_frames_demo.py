"""Publish a picture to arcly-trio over the WebSocket frame protocol (``arcly.frames.v1``).

The frames are those of the shipped demo clip (a moving test picture with a tone, H.264 +
AAC), sent in real time and looping, like ``arcly-trio serve --demo`` does, but from a
separate trio program through ``arcly_trio.clients.frames.open_frames_publisher``.

With a server running (``python3 scripts/dev.py serve``, or ``arcly-trio serve``)::

    python examples/ws_frames_demo.py                       # -> ws://127.0.0.1:8080/live/wsdemo/ingest

then open **http://127.0.0.1:8080/watch/live/wsdemo** in a browser (or any player:
``ffplay rtmp://127.0.0.1/live/wsdemo``, ``ffplay http://127.0.0.1:8080/live/wsdemo.flv``).
The status page http://127.0.0.1:8080/ lists it.

Options: ``--url ws://HOST:PORT/APP/STREAM/ingest[?token=SECRET]``, ``--seconds N`` (stop
after N seconds), ``--serve`` (run an in-process server on a free port instead, and check with
a frames subscriber that what was published comes back: what the example test does).
"""

from __future__ import annotations

import argparse
import math

import trio

from arcly_trio import AppSpec, Engine, FrameKind
from arcly_trio.clients import open_frames_publisher, open_frames_subscription
from arcly_trio.server.demo import LOOP_MS, demo_frames
from arcly_trio.workers.http import HttpServer


async def publish(url: str, seconds: float) -> int:
    """Send the demo clip to ``url`` in real time, looping, for ``seconds``; frames sent."""
    frames = [f for f in demo_frames() if f.kind is not FrameKind.DATA]
    head = [f for f in frames if f.config]
    body = [f for f in frames if not f.config]
    async with open_frames_publisher(url) as publisher:
        print(f"publishing to {url}", flush=True)
        for frame in head:
            await publisher.send(frame)
        start = trio.current_time()
        loop = 0
        while True:
            offset = loop * LOOP_MS
            for frame in body:
                due = (frame.dts + offset) / 1000
                if due >= seconds:
                    print(f"published {publisher.frames} frames in {seconds:g} s", flush=True)
                    return publisher.frames
                await trio.sleep_until(start + due)
                await publisher.send(frame.shifted(offset) if offset else frame)
            loop += 1


async def serve_and_check(seconds: float) -> None:
    """An in-process server; publish to it and watch what comes back over ``/frames``."""
    http = HttpServer("127.0.0.1", 0)
    async with Engine.builder().application(AppSpec("live")).protocol(http).build() as engine:
        base = f"ws://127.0.0.1:{http.port}/live/wsdemo"
        print(f"server on http://127.0.0.1:{http.port}/ (watch page: /watch/live/wsdemo)", flush=True)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(publish, base + "/ingest", seconds)
            while not engine.streams():
                await trio.sleep(0.01)
            async with open_frames_subscription(base + "/frames") as subscription:
                media = 0
                async for frame in subscription:
                    if frame.config:
                        config = subscription.configs.get((frame.kind, frame.track))
                        print(f"config {frame.kind.value}: {config.codec if config else '?'}", flush=True)
                    else:
                        if media == 0:
                            print(f"first {frame.kind.value} frame: keyframe={frame.keyframe}", flush=True)
                        media += 1
            print(
                f"watched {media} frames; stream ended: {subscription.end.reason if subscription.end else '?'}",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="ws://127.0.0.1:8080/live/wsdemo/ingest")
    parser.add_argument("--seconds", type=float, default=math.inf)
    parser.add_argument("--serve", action="store_true")
    args = parser.parse_args()
    if args.serve:
        trio.run(serve_and_check, 5.0 if math.isinf(args.seconds) else args.seconds)
    else:
        trio.run(publish, args.url, args.seconds)


if __name__ == "__main__":
    main()
