"""Embed the arcly-trio engine in your own trio program.

Publishes two synthetic GOPs to ``live/cam`` and prints what a subscriber receives, with the
event feed alongside. Run: ``python examples/embed.py``.
"""

import trio

from arcly_trio import AppSpec, Engine
from arcly_trio.testing import synthetic_stream


async def main() -> None:
    engine = Engine.builder().application(AppSpec("live", subscriber_queue=64)).idle_timeout(10).build()
    async with engine:
        async with engine.events("live") as events, engine.publish("live/cam") as publisher:
            frames = list(synthetic_stream(gops=2, frames_per_gop=6, audio_fps=15))
            async with engine.subscribe("live/cam") as subscription:
                for frame in frames:
                    await publisher.send(frame)  # never waits for a subscriber
                for _ in frames:
                    frame = await subscription.__anext__()
                    flags = "".join(f for f, on in (("K", frame.keyframe), ("C", frame.config)) if on)
                    print(
                        f"{frame.kind.value:5} {frame.codec:5} dts={frame.dts:4} {flags:2} {len(frame.payload)} bytes"
                    )
            stats = engine.stream("live/cam").stats()
            print(f"published {stats.video_frames_total} video and {stats.audio_frames_total} audio frames")
            while True:
                try:
                    print("event:", type(event := events.receive_nowait()).__name__, event.key)
                except trio.WouldBlock:
                    break


if __name__ == "__main__":
    trio.run(main)
