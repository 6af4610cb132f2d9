"""Shared fixtures: engines on port 0, the autojump clock, and a log of what was emitted."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from arcly_trio import AppSpec, Engine
from arcly_trio.testing import CountingObserver


@pytest.fixture
def observer() -> CountingObserver:
    return CountingObserver()


@pytest.fixture
async def engine(observer: CountingObserver) -> AsyncIterator[Engine]:
    """A running engine with one default application ``live`` and an idle timeout of 30 s."""
    async with Engine.builder().application(AppSpec("live")).idle_timeout(30).observer(observer).build() as eng:
        yield eng


# --- HTTP egress, HLS and recording (issue 4) ----------------------------------------------
# Self-contained: the imports are local so the fixtures above do not depend on them.


@pytest.fixture(scope="session")
def demo_frames() -> list:  # type: ignore[type-arg]
    """The frames of the bundled demo clip (10 s of H.264 + AAC, a keyframe every 2 s)."""
    from pathlib import Path

    import arcly_trio.server
    from arcly_trio.media import flv

    clip = Path(arcly_trio.server.__file__).parent / "assets" / "demo.flv"
    return flv.read_frames(clip.read_bytes())


@pytest.fixture
def http_get():  # type: ignore[no-untyped-def]
    """``await http_get(port, target, headers=(), method="GET", timeout=10)`` -> ``(status,
    headers, body)``.

    A one-shot HTTP/1.1 client on h11 (``headers`` lower-cased into a dict; ``body`` bytes),
    with a ``fail_after(timeout)`` around the whole exchange. It sends ``Host: 127.0.0.1`` unless
    ``headers`` has a ``Host`` of its own.
    """
    import h11
    import trio

    async def get(port: int, target: str, headers=(), method: str = "GET", timeout: float = 10):  # type: ignore[no-untyped-def]
        with trio.fail_after(timeout):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                conn = h11.Connection(h11.CLIENT)
                host = [] if any(name.lower() == "host" for name, _ in headers) else [("host", "127.0.0.1")]
                request = h11.Request(method=method, target=target, headers=[*host, ("connection", "close"), *headers])
                await stream.send_all(conn.send(request) + conn.send(h11.EndOfMessage()))
                status, response_headers, body = 0, {}, bytearray()
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        conn.receive_data(await stream.receive_some(65536))
                    elif isinstance(event, h11.Response):
                        status = event.status_code
                        response_headers = {k.decode(): v.decode() for k, v in event.headers}
                    elif isinstance(event, h11.Data):
                        body += event.data
                    elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                        return status, response_headers, bytes(body)

    return get
