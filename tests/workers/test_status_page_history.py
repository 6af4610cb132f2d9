"""The status page's sparkline data: :class:`StreamHistory`'s ring buffers (bounded, a stream
gone is forgotten, viewers counted as ``/api/streams`` counts them) and ``GET /api/history``
(protected like ``/api/streams``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import trio

from arcly_trio.core.frame import Frame
from arcly_trio.kernel.engine import Engine
from arcly_trio.services.stream_history import StreamHistory
from tests._serving import serving, wait_publishing

HttpGet = Callable[..., Any]


async def _send_clip(publisher: Any, frames: list[Frame], count: int) -> None:
    for frame in frames[:count]:
        await publisher.send(frame)


async def test_samples_are_bounded_and_count_viewers(demo_frames: list[Frame]) -> None:
    history = StreamHistory(interval=5, samples=3)
    engine = Engine.builder().application("live").observer(history).build()
    with trio.fail_after(10):
        async with engine:
            async with engine.publish("live/t") as publisher:
                await _send_clip(publisher, demo_frames, 60)
                await wait_publishing(engine, "live/t", 10)
                history.sample(engine)
                async with engine.subscribe("live/t", protocol="http-flv"):
                    for _ in range(4):
                        history.sample(engine)
                series = history.series(engine.stream("live/t").key)
                assert series is not None
                assert series["interval"] == 5
                assert series["viewers"] == [1, 1, 1]  # three kept, the oldest (0 viewers) dropped
                assert len(series["bitrate"]) == 3 and all(isinstance(rate, int) for rate in series["bitrate"])
            await trio.testing.wait_all_tasks_blocked()
            while engine.streams():
                await trio.sleep(0.01)
            history.sample(engine)
            assert history.document()["streams"] == {}  # a stream gone is forgotten


def test_history_settings_are_checked() -> None:
    for interval, samples in ((0, 10), (5, 1), (5, 10_001), (-1, 10)):
        with pytest.raises(ValueError):
            StreamHistory(interval=interval, samples=samples)


async def test_api_history_is_served_and_protected(demo_frames: list[Frame], http_get: HttpGet) -> None:
    history = StreamHistory(interval=0.05, samples=20)
    with trio.fail_after(10):
        async with serving(observer=history, api_token="k3y") as served:  # type: ignore[arg-type]
            async with served.engine.publish("live/t") as publisher:
                await _send_clip(publisher, demo_frames, 60)
                await wait_publishing(served.engine, "live/t", 10)
                port = served.http.port
                status, _, _ = await http_get(port, "/api/history")
                assert status == 401
                while True:
                    status, headers, body = await http_get(port, "/api/history?api_token=k3y")
                    assert status == 200 and headers["content-type"].startswith("application/json")
                    document = json.loads(body)
                    if len(document["streams"].get("live/t", {}).get("bitrate", [])) >= 2:
                        break
                    await trio.sleep(0.05)
                assert document["interval"] == 0.05 and document["samples"] == 20
                assert "access-control-allow-origin" not in headers  # an API answer: no CORS
