"""An SRT publisher that ends (SHUTDOWN) gets all its frames in: the ones still in the session's
inbox and the last PES of each track, which the TS demuxer holds until the next one starts."""

from __future__ import annotations

from typing import Any

import trio

from arcly_trio import AppSpec, Engine
from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.relay.srt_push import open_srt_publisher
from arcly_trio.workers.srt import SrtServer
from tests._serving import HOST


class Counter:
    name = "counter"
    capacity = 4096

    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self.ended = trio.Event()

    def applies_to(self, spec: Any) -> bool:
        return True

    async def serve_stream(self, stream: Any, subscription: Any) -> None:
        while batch := await subscription.next_batch():
            self.frames += [frame for frame in batch if not frame.config]
        self.ended.set()


async def test_the_last_frames_of_an_ended_srt_publish_reach_the_kernel(demo_frames: list[Frame]) -> None:
    counter = Counter()
    srt = SrtServer(HOST, 0)
    sent = demo_frames[:160]
    async with Engine.builder().application(AppSpec("live")).protocol(srt).service(counter).build():
        with trio.fail_after(10):
            async with open_srt_publisher(f"srt://{HOST}:{srt.port_number}?streamid=publish:live/cam") as publisher:
                for start in range(0, len(sent), 20):
                    await publisher.send_frames(sent[start : start + 20])
            await counter.ended.wait()
    for kind in (FrameKind.VIDEO, FrameKind.AUDIO):
        want = [f.dts for f in sent if f.kind is kind and not f.config]
        assert [f.dts for f in counter.frames if f.kind is kind] == want
