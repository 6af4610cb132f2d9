"""Loads that used to hold the event loop (issue 26, part 3), each reproduced small (over real
sockets where the load comes from them), with the work per task step counted rather than timed.

* 1000 ``createStream``/``deleteStream`` pairs in one write: the RTMP connection handled a whole
  64 KiB read (some 1500 commands) in one task step; now it lets the others run every 64.
* An ``on_play`` hook that hangs for some streams: past httpx's 100 pooled connections every
  other client (a play of a stream the hook answers at once) queued behind the hung ones.
* ``storage:record`` under load: its probe's thread hops waited behind the busy loop and the
  recorder's threads ("no answer within 2 s", a 503); the recorder's own recent writes answer.
* The built-in demo publisher, behind real time after a long turn of the loop, sent one frame
  per turn (its viewers got 3-8 fps while 100 publishers kept the loop busy).

Each test fails on the code before its fix (noted per test); ``trio.fail_after`` or a mock
clock bounds each one and nothing asserts speed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import trio

from arcly_trio import AppSpec, Credentials, Engine, StreamKey
from arcly_trio.kernel.publish import Publisher
from arcly_trio.ops import HttpHooks, storage_check
from arcly_trio.protocols.rtmp import ServerSession
from arcly_trio.server.demo import publish_demo
from arcly_trio.storage import MemoryStorage
from arcly_trio.testing.rtmp import RawRtmpClient
from arcly_trio.workers.rtmp import RtmpServer


class _StepCounter(trio.abc.Instrument):
    """The most calls of a counted function in one task step (see :func:`counting`)."""

    def __init__(self) -> None:
        self.calls = 0
        self.most = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.calls = 0

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        self.most = max(self.most, self.calls)


@contextmanager
def counting(monkeypatch: pytest.MonkeyPatch, owner: type, name: str) -> Iterator[_StepCounter]:
    """Count the calls of ``owner.name`` per task step, while the block runs."""
    counter = _StepCounter()
    original = getattr(owner, name)

    def counted(*args: object, **kwargs: object) -> object:
        counter.calls += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    trio.lowlevel.add_instrument(counter)
    try:
        yield counter
    finally:
        trio.lowlevel.remove_instrument(counter)


async def test_a_read_full_of_commands_is_handled_in_small_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """Mutant killed: no checkpoint in the RTMP command loop (1000+ commands in one step)."""
    server = RtmpServer("127.0.0.1", 0)
    engine = Engine.builder().application(AppSpec("live")).protocol(server).build()
    pairs = 1000
    with trio.fail_after(20):
        async with engine:
            client = await RawRtmpClient.open(server.port)
            await client.handshake()
            client.session.connect("live", f"rtmp://127.0.0.1:{server.port}/live")
            await client.flush()
            await client.command()
            for i in range(pairs):
                client.session.create_stream()
                client.session.delete_stream(1 + i)
            with counting(monkeypatch, ServerSession, "_dispatch") as steps:
                await client.flush()
                answers = [await client.command() for _ in range(pairs)]
            await client.aclose()
    assert [a.arguments[0] for a in answers[-2:]] == [pairs - 1.0, float(pairs)]  # all handled
    assert steps.most <= 64 + 2  # (64 messages and the control messages between)


async def _hook(held: list[int], stream: trio.SocketStream) -> None:
    """An ``on_play`` hook: 200 at once, but never an answer for a stream ``hung*``."""
    buffer = b""
    async with stream:
        while True:
            while b"\r\n\r\n" not in buffer:
                data = await stream.receive_some(65536)
                if not data:
                    return
                buffer += data
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
            )
            while len(buffer) < length:
                buffer += await stream.receive_some(65536)
            body, buffer = buffer[:length], buffer[length:]
            if json.loads(body)["stream"].startswith("hung"):
                held[0] += 1
                await trio.sleep_forever()
            await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")


async def test_plays_a_hook_hangs_on_do_not_hold_up_the_others() -> None:
    """Mutant killed: httpx's default pool of 100 connections (the 121st play waits for the
    hung ones' timeout, 60 s here)."""
    held = [0]
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, lambda stream: _hook(held, stream), 0)
        port = listeners[0].socket.getsockname()[1]
        hooks = HttpHooks(on_play=f"http://127.0.0.1:{port}/on_play", timeout=60)
        engine = Engine.builder().application(AppSpec("live")).authenticator(hooks).build()
        async with engine:

            async def hung(n: int) -> None:
                await hooks.ask("play", StreamKey("live", f"hung{n}"), Credentials(peer=(f"10.0.0.{n}", 1)))

            with trio.fail_after(10):
                async with trio.open_nursery() as waiting:
                    for n in range(120):
                        waiting.start_soon(hung, n)
                    while held[0] < 120:
                        await trio.sleep(0.01)
                    key = StreamKey("live", "ok")
                    assert await hooks.ask("play", key, Credentials(peer=("10.0.1.1", 1))) == key
                    waiting.cancel_scope.cancel()
        nursery.cancel_scope.cancel()


class _Stuck(MemoryStorage):
    """A storage whose writes never finish (a disk the loop's load keeps the probe from)."""

    puts = 0

    async def put(self, key: str, data: bytes) -> None:
        self.puts += 1
        await trio.sleep_forever()


async def test_a_directory_written_to_recently_needs_no_probe(autojump_clock: trio.testing.MockClock) -> None:
    """Mutant killed: the storage check probing whatever the recorder did (it times out)."""
    storage = _Stuck()
    wrote_at: list[float | None] = [None]
    engine = Engine.builder().application(AppSpec("live")).build()
    check = storage_check(storage, what="the recording directory", witness=lambda: wrote_at[0], fresh=10)
    engine.health.add("storage:record", check, interval=0)
    wrote_at[0] = trio.current_time()
    await trio.sleep(9)
    (result,) = [c for c in await engine.health.run() if c.name == "storage:record"]
    assert result.last is not None and result.last.ok and "written 9 s ago" in result.last.detail
    assert storage.puts == 0
    await trio.sleep(2)  # the witness is stale: a probe, which here never answers
    (result,) = [c for c in await engine.health.run() if c.name == "storage:record"]
    assert result.last is not None and not result.last.ok and "no answer" in result.last.detail
    assert storage.puts == 1
    wrote_at[0] = None  # the recorder failed since its last write: a probe too
    await engine.health.run()
    assert storage.puts == 2


async def test_the_demo_publisher_catches_up_after_a_long_turn(
    monkeypatch: pytest.MonkeyPatch, mock_clock: trio.testing.MockClock
) -> None:
    """Mutant killed: ``sleep_until`` before every frame (one frame per turn when behind)."""
    engine = Engine.builder().application(AppSpec("live")).build()
    async with engine, trio.open_nursery() as nursery:
        with counting(monkeypatch, Publisher, "send") as steps:
            nursery.start_soon(publish_demo, engine)
            await trio.testing.wait_all_tasks_blocked()
            assert steps.most >= 1
            steps.most = 0
            # The loop was busy for a second: some 70 frames are due at once.
            mock_clock.jump(1.0)
            await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert steps.most >= 30
