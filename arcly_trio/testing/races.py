"""A reusable stateful machine for publish/unpublish/subscribe races against an engine.

:class:`EngineRaces` drives a running engine with actors — publishers and subscribers, each a
task — through steps that a hypothesis ``data`` object chooses one at a time, so the sequence
shrinks to a minimal failing one. Time is a :class:`trio.testing.MockClock` without autojump:
it moves only when a step says so, which makes idle reaping and reconnect grace deterministic.
After every step the machine lets every task settle and checks its invariants:

* the engine's publisher count equals the number of publishing streams and the number of
  publisher actors that are inside their ``publish`` block and not ended by the kernel;
* at most one such publisher per key;
* every subscriber received an in-order subsequence (by identity) of what was published on its
  key, starting with configs then a keyframe; after a gap, the next non-config frame is a
  keyframe; the frames missing from gaps never exceed the subscriber's ``dropped`` count, and
  equal it once the subscriber is live and drained.

Subclass it to add steps (methods named ``step_*``) or invariants (override
``check_invariants``); run it with :func:`run_races`. Needs hypothesis (the ``test`` extra).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

import trio
import trio.testing
from hypothesis import strategies as st

from ..kernel.engine import Engine
from ..core.errors import StreamError
from ..core.frame import Frame
from ..core.keys import Credentials, StreamKey
from ..kernel.subscription import Subscription
from . import frames as fb
from .strategies import gops

__all__ = ["EngineRaces", "PublisherActor", "SubscriberActor", "run_races", "live_tasks"]


class _Crash(Exception):
    """Raised inside a publish block to model a crashing publisher."""


def live_tasks() -> set[trio.lowlevel.Task]:
    """Every task of the current run (for 'no task left behind' assertions)."""
    found: set[trio.lowlevel.Task] = set()

    def walk(task: trio.lowlevel.Task) -> None:
        for nursery in task.child_nurseries:
            for child in nursery.child_tasks:
                found.add(child)
                walk(child)

    walk(trio.lowlevel.current_root_task())
    return found


class PublisherActor:
    """A task that holds ``engine.publish(key)`` and obeys commands."""

    def __init__(self, races: EngineRaces, key: StreamKey, token: str | None) -> None:
        self.key = key
        self.token = token
        self.state = "starting"  # -> active -> ended | refused
        self.error: BaseException | None = None
        self.scope = trio.CancelScope()
        self._races = races
        self._commands, self._inbox = trio.open_memory_channel[tuple[str, Any]](math.inf)
        self._fresh = True
        self._pending: list[Frame] = []

    async def run(self) -> None:
        races = self._races
        try:
            with self.scope:
                creds = Credentials(token=self.token, protocol="test")
                async with races.engine.publish(self.key, creds) as publisher:
                    self.state = "active"
                    async for command, arg in self._inbox:
                        if command == "send":
                            for frame in arg:
                                await publisher.send(frame)
                                races.published[self.key].append(frame)
                        elif command == "crash":
                            raise _Crash()
                        elif command == "close":
                            break
        except _Crash as exc:
            self.error = exc
        except StreamError as exc:
            self.error = exc
            if self.state == "starting":
                self.state = "refused"
        finally:
            if self.state != "refused":
                self.state = "ended"

    def next_frames(self, data: st.DataObject, n: int) -> list[Frame]:
        """The next ``n`` frames of this publisher's session (configs first, then whole GOPs)."""
        out: list[Frame] = []
        if self._fresh:
            self._fresh = False
            out += [fb.metadata(), fb.video_config(), fb.audio_config()]
        while len(self._pending) < n:
            self._pending += data.draw(gops(start_ms=self._races.clock_ms(), max_frames=8), label="gop")
        out += self._pending[:n]
        del self._pending[:n]
        return out

    def command(self, command: str, arg: Any = None) -> None:
        self._commands.send_nowait((command, arg))


class SubscriberActor:
    """A task that holds ``engine.subscribe(key)`` and records what it receives."""

    def __init__(self, races: EngineRaces, key: StreamKey, capacity: int, paused: bool) -> None:
        self.key = key
        self.capacity = capacity
        self.received: list[Frame] = []
        self.subscription: Subscription | None = None
        self.state = "starting"  # -> active -> ended | refused
        self.error: BaseException | None = None
        self.scope = trio.CancelScope()
        self.gate = trio.Event()
        if not paused:
            self.gate.set()
        self._races = races

    @property
    def paused(self) -> bool:
        return not self.gate.is_set()

    def pause(self) -> None:
        if self.gate.is_set():
            self.gate = trio.Event()

    async def run(self) -> None:
        try:
            with self.scope:
                async with self._races.engine.subscribe(self.key, Credentials(protocol="test"),
                                                        capacity=self.capacity) as sub:
                    self.subscription = sub
                    self.state = "active"
                    while True:
                        await self.gate.wait()
                        batch = await sub.next_batch(limit=3)
                        if not batch:
                            break
                        self.received.extend(batch)
        except StreamError as exc:
            self.error = exc
            self.state = "refused"
        finally:
            if self.state != "refused":
                self.state = "ended"


class EngineRaces:
    """The machine; see the module docstring. ``apps``/``names`` pick the keys it uses."""

    names: tuple[str, ...] = ("a", "b")
    weights: dict[str, int] = {
        "step_publish": 3, "step_send": 10, "step_subscribe": 4, "step_toggle_slow": 5,
        "step_unpublish": 1, "step_crash_publisher": 1, "step_cancel_publisher": 1,
        "step_unsubscribe": 1, "step_time_passes": 2,
    }
    """How often each step is drawn (steps not listed weigh 1)."""

    def __init__(self, engine: Engine, data: st.DataObject, clock: trio.testing.MockClock,
                 nursery: trio.Nursery) -> None:
        self.engine = engine
        self.data = data
        self.clock = clock
        self.nursery = nursery
        self.published: defaultdict[StreamKey, list[Frame]] = defaultdict(list)
        self.publishers: list[PublisherActor] = []
        self.subscribers: list[SubscriberActor] = []

    # ----------------------------------------------------------- helpers

    def clock_ms(self) -> int:
        return int(trio.current_time() * 1000)

    def draw_key(self) -> StreamKey:
        """A key, most often one that has a stream already (so races collide)."""
        existing = sorted({stream.key for stream in self.engine.streams()}, key=str)
        if existing and self.data.draw(st.integers(0, 3), label="reuse") > 0:
            return self.data.draw(st.sampled_from(existing), label="existing key")
        apps = [app.name for app in self.engine.applications()]
        return StreamKey(self.data.draw(st.sampled_from(apps), label="app"),
                         self.data.draw(st.sampled_from(self.names), label="stream"))

    def _active(self, actors: list[Any]) -> list[Any]:
        return [actor for actor in actors if actor.state == "active"]

    async def settle(self) -> None:
        await trio.testing.wait_all_tasks_blocked()

    def steps(self) -> dict[str, Callable[[], Awaitable[None]]]:
        return {name: getattr(self, name) for name in dir(self) if name.startswith("step_")}

    # ------------------------------------------------------------- steps

    async def step_publish(self) -> None:
        token = self.data.draw(st.sampled_from([None, None, "bad"]), label="token")
        actor = PublisherActor(self, self.draw_key(), token)
        self.publishers.append(actor)
        self.nursery.start_soon(actor.run)

    async def step_send(self) -> None:
        active = self._active(self.publishers)
        if active:
            actor = self.data.draw(st.sampled_from(active), label="publisher")
            actor.command("send", actor.next_frames(self.data, self.data.draw(st.integers(1, 24), label="n")))

    async def step_unpublish(self) -> None:
        active = self._active(self.publishers)
        if active:
            self.data.draw(st.sampled_from(active), label="publisher").command("close")

    async def step_crash_publisher(self) -> None:
        active = self._active(self.publishers)
        if active:
            self.data.draw(st.sampled_from(active), label="publisher").command("crash")

    async def step_cancel_publisher(self) -> None:
        live = [a for a in self.publishers if a.state in ("starting", "active")]
        if live:
            self.data.draw(st.sampled_from(live), label="publisher").scope.cancel()

    async def step_subscribe(self) -> None:
        capacity = self.data.draw(st.integers(1, 8), label="capacity")
        paused = self.data.draw(st.booleans(), label="paused")
        actor = SubscriberActor(self, self.draw_key(), capacity, paused)
        self.subscribers.append(actor)
        self.nursery.start_soon(actor.run)

    async def step_unsubscribe(self) -> None:
        live = [a for a in self.subscribers if a.state in ("starting", "active")]
        if live:
            self.data.draw(st.sampled_from(live), label="subscriber").scope.cancel()

    async def step_toggle_slow(self) -> None:
        active = self._active(self.subscribers)
        if active:
            actor = self.data.draw(st.sampled_from(active), label="subscriber")
            actor.gate.set() if actor.paused else actor.pause()

    async def step_time_passes(self) -> None:
        self.clock.jump(self.data.draw(st.sampled_from([0.5, 2.0, 6.0, 11.0]), label="seconds"))

    # -------------------------------------------------------- invariants

    def check_invariants(self) -> None:
        engine = self.engine
        assert engine.stream_failures == 0, "a stream task failed (see the log)"
        publishing = [s for s in engine.streams() if s.publishing]
        active = self._active(self.publishers)
        assert engine.publisher_count == len(publishing) == len(active), (
            engine.publisher_count, len(publishing), [(a.key, a.state) for a in active])
        per_key: defaultdict[StreamKey, int] = defaultdict(int)
        for actor in active:
            per_key[actor.key] += 1
        assert all(n <= 1 for n in per_key.values()), per_key
        for sub in self.subscribers:
            self.check_subscriber(sub)

    def check_subscriber(self, actor: SubscriberActor, final: bool = False) -> None:
        received = actor.received
        if not received:
            return
        published = self.published[actor.key]
        index = {id(frame): i for i, frame in enumerate(published)}
        positions = []
        for frame in received:
            assert id(frame) in index, f"subscriber got a frame never published: {frame}"
            positions.append(index[id(frame)])
        assert all(a < b for a, b in zip(positions, positions[1:])), "out of order or duplicated"
        # Frames skipped before the first keyframe may be the start-up skip (uncounted: they
        # came before the subscriber could start) or a real lag (counted); every frame skipped
        # after it must be counted.
        started = False
        missing_start = missing = 0
        expect_key = False
        for i, (pos, frame) in enumerate(zip(positions, received)):
            gap = pos - positions[i - 1] - 1 if i else 0
            if not started:
                missing_start += gap
                if frame.config:
                    continue
                assert frame.keyframe, f"first non-config frame is not a keyframe: {frame}"
                started = True
                continue
            if gap:
                missing += gap
                expect_key = True
            if expect_key and not frame.config:
                assert frame.keyframe, f"a gap ends on a non-keyframe: {frame}"
                expect_key = False
        sub = actor.subscription
        assert sub is not None
        assert missing <= sub.dropped, (missing, sub.dropped)
        if final:
            # Whatever else was counted was skipped before the start or after the last frame.
            trailing = len(published) - 1 - positions[-1]
            assert sub.dropped <= missing + missing_start + trailing, (
                sub.dropped, missing, missing_start, trailing)
            if sub.end_reason is not None and sub.subscriber._state == 0 and trailing == 0:
                assert sub.dropped <= missing + missing_start

    # --------------------------------------------------------------- run

    async def run(self, max_steps: int = 30) -> None:
        steps = self.steps()
        names = [name for name in sorted(steps) for _ in range(self.weights.get(name, 1))]
        await self.step_publish()
        await self.settle()
        for _ in range(self.data.draw(st.integers(min(5, max_steps), max_steps), label="steps")):
            await steps[self.data.draw(st.sampled_from(names), label="step")]()
            await self.settle()
            self.check_invariants()

    async def finish(self) -> None:
        """After the engine has stopped: every actor ends on its own, all invariants hold."""
        for actor in self.subscribers:
            actor.gate.set()
        await self.settle()
        assert all(a.state in ("ended", "refused") for a in self.publishers), [a.state for a in self.publishers]
        assert all(a.state in ("ended", "refused") for a in self.subscribers), [a.state for a in self.subscribers]
        assert self.engine.publisher_count == 0
        for actor in self.subscribers:
            self.check_subscriber(actor, final=True)


async def run_races(machine_cls: type[EngineRaces], engine: Engine, data: st.DataObject,
                    clock: trio.testing.MockClock, max_steps: int = 30) -> EngineRaces:
    """Run ``machine_cls`` against ``engine`` (not yet started), stop the engine, check that
    every actor ended and that no task of the engine is left. Returns the machine."""
    before = live_tasks()
    async with trio.open_nursery() as actors:
        async with engine:
            machine = machine_cls(engine, data, clock, actors)
            await machine.run(max_steps)
        await machine.finish()
    assert engine.streams() == [] and not engine.running
    left = live_tasks() - before
    assert not left, f"tasks left behind: {left}"
    return machine
