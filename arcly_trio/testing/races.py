"""Property-testing publish/unpublish/play races against an engine, yours or ours.

:func:`run_races` drives an engine built by your factory with *actors* — publishers and
subscribers, each a task — through steps that a hypothesis ``data`` object chooses, so a failure
shrinks to a minimal sequence. Steps **overlap**: each one starts its work and the next begins
after a drawn number of scheduler ticks (0 to a few), so authorizations, set-ups, cancellations
and frames interleave for real; every few steps the machine lets everything settle and checks the
invariants. Time is a :class:`trio.testing.MockClock` (``run_races`` makes it; it moves only when
a step says so), so idle reaping and reconnect grace are deterministic.

Your factory returns a :class:`RaceSetup`: the engine, and the credentials your authenticator
accepts (and refuses) for publishing and playing. The first step is always a publish with the
accepted credentials; if your engine refuses it, the run fails with a message saying so (a race
test that publishes nothing proves nothing). Then a viewer plays it (with room for the first
burst) and the publisher sends a GOP or more; most often that is delivered before the drawn
steps begin, so most examples play media while the rest of the steps race around them.

What the actors do:

* publishers: one video track, two (Enhanced RTMP multitrack: keyframes at different places),
  or none; with or without audio; sessions that start with configs and a keyframe, mid-GOP, or
  without configs; mid-stream config changes and cue points; they send, close, crash, or are
  cancelled (also while their authorization or set-up is in flight), and take streams over;
* subscribers: ``async for`` or ``next_batch`` readers with small queues, paused and resumed
  (slow), cancelled, joining at any time, most often a key being published; some with the
  credentials your authenticator refuses (``RaceSetup.refused_play``).

The invariants (:meth:`EngineRaces.check`), after every settle and at the end:

* **refusals**: every refused publish or play was refused with exactly the error its situation
  called for when the engine decided (:meth:`EngineRaces.expected_refusals`: ``EngineClosed`` once
  the engine is stopping, ``Unauthorized`` for refused credentials, ``StreamNotFound``,
  ``StreamAlreadyPublishing``, ``PublisherLimitReached``...), and refused credentials never
  published or played;
* **bookkeeping**: the engine's publisher count equals the publishing streams and the active
  publisher actors; at most one active publisher per key; no stream failed; at rest, no frame
  waits in a publisher's ingest queue (a returning publisher is pumped at once);
* **no leak**: every stream in the engine has exactly one running task and none runs for a
  stream that is gone; every actor that ended has no task left; services' tasks likewise;
* **order**: every subscriber received an in-order subsequence, by identity, of what its stream
  delivered (re-sent configs included);
* **decodability**: every media frame a subscriber received had its track's config current for
  its publish session (as published) delivered before it; every video track restarts on a
  keyframe after a gap in it, and starts on one;
* **exact drops**: a subscriber's ``dropped`` equals the frames offered to it that it never got,
  less those skipped while starting and those of a video track no keyframe of which had been
  offered or replayed to it (the kernel's counting rule, :mod:`arcly_trio.kernel.fanout`);
* **session announcements**: every frame a subscriber received was read under the announcement
  (``Subscription.session``) of the publish session it came from: one announced number per
  publish session, never two sessions under one number, numbers never going back.

Extend :class:`EngineRaces` with your own ``step_*`` methods (and weights) or invariants
(override :meth:`EngineRaces.check`; :meth:`EngineRaces.expected_refusals` if your engine refuses
for reasons of its own, a cluster or stream sources). Needs hypothesis (the ``test`` extra).

The actors live in :mod:`~.actors`, the invariant checkers in :mod:`~.invariants` (both
re-exported here). Error policy: a violated invariant, or a first publish refused, fails the run
with ``AssertionError``; whatever an engine task or an actor raises otherwise propagates.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import trio
import trio.testing
from hypothesis import strategies as st

from arcly_trio.core.errors import (
    AppNotFound,
    EngineClosed,
    PublisherLimitReached,
    StreamAlreadyPublishing,
    StreamError,
    StreamNotFound,
    Unauthorized,
)
from arcly_trio.core.keys import Credentials, StreamKey
from arcly_trio.kernel.engine import Engine
from arcly_trio.kernel.spec import Takeover
from arcly_trio.testing.actors import PublisherActor, Recorder, SubscriberActor
from arcly_trio.testing.invariants import check_decodable, check_delivery, check_sessions

__all__ = [
    "RaceSetup",
    "EngineRaces",
    "PublisherActor",
    "SubscriberActor",
    "run_races",
    "live_tasks",
    "check_sessions",
    "check_delivery",
    "check_decodable",
]


@attrs.define
class RaceSetup:
    """What the race machine needs from your server.

    Attributes:
        engine: the engine to race (not started); its workers, services and authenticator are
            yours.
        publish: credentials your authenticator accepts for publishing (on every key used).
        play: credentials it accepts for playing.
        refused_publish: credentials it refuses for publishing (``None``: refused publishes
            are not exercised).
        refused_play: credentials it refuses for playing (``None``: refused plays are not
            exercised).
        keys: the stream keys to race on (default: names ``a`` and ``b`` in each application).
        real_media: publish frames of a real H.264+AAC clip (the demo clip shipped with the
            package, see :func:`arcly_trio.testing.frames.real_stream`) instead of synthetic
            ones, so that your stream services (HLS, recording...) decode and package for real.
    """

    engine: Engine
    publish: Credentials = attrs.field(factory=Credentials)
    play: Credentials = attrs.field(factory=Credentials)
    refused_publish: Credentials | None = None
    refused_play: Credentials | None = None
    keys: Sequence[str] | None = None
    real_media: bool = False


def live_tasks() -> set[trio.lowlevel.Task]:
    """Every task of the current run."""
    found: set[trio.lowlevel.Task] = set()

    def walk(task: trio.lowlevel.Task) -> None:
        for nursery in task.child_nurseries:
            for child in nursery.child_tasks:
                found.add(child)
                walk(child)

    walk(trio.lowlevel.current_root_task())
    return found


# ------------------------------------------------------------------------------ the machine


class EngineRaces:
    """The machine (see the module docstring). Subclass to add ``step_*`` methods."""

    weights: dict[str, int] = {
        "step_publish": 3,
        "step_send": 12,
        "step_subscribe": 4,
        "step_toggle_slow": 5,
        "step_unpublish": 1,
        "step_crash_publisher": 1,
        "step_cancel_publisher": 2,
        "step_unsubscribe": 1,
        "step_time_passes": 2,
        "step_refused_publish": 1,
        "step_refused_play": 1,
    }
    """How often each step is drawn (steps not listed weigh 1)."""

    def __init__(
        self,
        setup: RaceSetup,
        data: st.DataObject,
        clock: trio.testing.MockClock,
        nursery: trio.Nursery,
        recorder: Recorder,
    ) -> None:
        self.setup = setup
        self.engine = setup.engine
        self.data = data
        self.clock = clock
        self.nursery = nursery
        self.recorder = recorder
        self.session_of = recorder.session_of
        self.publishers: list[PublisherActor] = []
        self.subscribers: list[SubscriberActor] = []
        self.settles = 0
        self.stopping = False
        """Set when the machine stops the engine (:func:`run_races` sets it right before it
        leaves the engine's block; a step of yours that stops the engine sets it too): from
        then on, every refusal must be ``EngineClosed`` (or ``Unauthorized`` for refused
        credentials: see :meth:`expected_refusals`)."""

    # ------------------------------------------------------------------ helpers

    def clock_ms(self) -> int:
        return int(trio.current_time() * 1000)

    def keys(self) -> list[StreamKey]:
        if self.setup.keys:
            return [StreamKey.parse(key) for key in self.setup.keys]
        return [StreamKey(app.name, name) for app in self.engine.applications() for name in ("a", "b")]

    def draw_key(self) -> StreamKey:
        """A key, most often one that has a stream already (so races collide)."""
        existing = sorted({stream.key for stream in self.engine.streams()}, key=str)
        if existing and self.data.draw(st.integers(0, 3), label="reuse") > 0:
            return self.data.draw(st.sampled_from(existing), label="existing key")
        return self.data.draw(st.sampled_from(self.keys()), label="key")

    def draw_play_key(self) -> StreamKey:
        """A key to play: most often one being published (so most plays get media), else any
        (a stream about to appear, one in its reconnect grace, or none: ``StreamNotFound``)."""
        published = sorted({stream.key for stream in self.engine.streams() if stream.publishing}, key=str)
        if published and self.data.draw(st.integers(0, 4), label="play any key?") < 4:
            return self.data.draw(st.sampled_from(published), label="published key")
        return self.draw_key()

    def expected_refusals(self, action: str, key: StreamKey, credentials: Credentials) -> set[type[StreamError]]:
        """The refusals the situation calls for when the engine refuses ``action``
        (``"publish"`` or ``"play"``) of ``key`` with ``credentials``, read from the machine's
        knowledge and the engine's public state *now*: it is called by the refused actor
        with no checkpoint since the engine decided.

        * the machine has stopped the engine: ``EngineClosed`` (or ``Unauthorized`` for
          refused credentials: their authorization may have been answered first);
        * no such application: ``AppNotFound``;
        * refused credentials: ``Unauthorized``;
        * a play of a key with no stream: ``StreamNotFound``;
        * a publish of a key that has a publisher, in an application that rejects takeovers:
          ``StreamAlreadyPublishing``; ``PublisherLimitReached`` (if as many publishers as its
          ``limit`` publish: checked by :meth:`judge_refusal`).

        Override it if your engine refuses for reasons of its own (a cluster, stream sources).
        """
        refused = credentials == (self.setup.refused_publish if action == "publish" else self.setup.refused_play)
        if self.stopping:
            return {EngineClosed, Unauthorized} if refused else {EngineClosed}
        try:
            app = self.engine.application(key.app)
        except AppNotFound:
            return {AppNotFound}
        if refused:
            return {Unauthorized}
        if action == "play":
            return set() if app.has_stream(key.name) else {StreamNotFound}
        expected: set[type[StreamError]] = {PublisherLimitReached}
        if app.has_stream(key.name) and app.stream(key.name).publishing and app.spec.takeover is Takeover.REJECT:
            expected.add(StreamAlreadyPublishing)
        return expected

    def judge_refusal(self, action: str, key: StreamKey, credentials: Credentials, error: StreamError) -> str | None:
        """``None`` if ``error`` is exactly (by type) a refusal :meth:`expected_refusals`
        allows now, else what is wrong (the machine's :meth:`check` fails with it)."""
        expected = self.expected_refusals(action, key, credentials)
        if type(error) not in expected:
            names = ", ".join(sorted(t.__name__ for t in expected)) or "none: it should have been allowed"
            return (
                f"{action} of {key} with {credentials} refused with {type(error).__name__} ({error}); "
                f"the situation calls for {names}" + (" (the engine is stopping)" if self.stopping else "")
            )
        if isinstance(error, PublisherLimitReached) and self.engine.publisher_count < error.limit:
            return f"publish of {key} refused with {error!r} while {self.engine.publisher_count} publishers publish"
        return None

    def _active(self, actors: Sequence[Any]) -> list[Any]:
        return [actor for actor in actors if actor.state == "active"]

    async def settle(self) -> None:
        await trio.testing.wait_all_tasks_blocked()
        self.settles += 1

    def steps(self) -> dict[str, Callable[[], None]]:
        return {name: getattr(self, name) for name in dir(self) if name.startswith("step_")}

    # ------------------------------------------------------------------ steps

    def publish(self, credentials: Credentials) -> PublisherActor:
        video = self.data.draw(st.sampled_from([(0,), (0,), (0, 1), ()]), label="video tracks")
        style = {
            "video_tracks": video,
            "audio": not video or self.data.draw(st.booleans(), label="audio"),
            "start": self.data.draw(st.sampled_from(["configs", "configs", "mid-gop", "bare"]), label="start"),
            "gop": self.data.draw(st.integers(2, 6), label="gop"),
        }
        actor = PublisherActor(self, self.draw_key(), credentials, style)
        self.publishers.append(actor)
        self.nursery.start_soon(actor.run, name=f"race publisher {actor.id}")
        return actor

    def step_publish(self) -> None:
        self.publish(self.setup.publish)

    def step_refused_publish(self) -> None:
        if self.setup.refused_publish is not None:
            self.publish(self.setup.refused_publish)

    def step_send(self) -> None:
        active = self._active(self.publishers)
        if active:
            actor = self.data.draw(st.sampled_from(active), label="publisher")
            actor.command("send", actor.next_frames(self.data, self.data.draw(st.integers(1, 12), label="n")))

    def step_unpublish(self) -> None:
        active = self._active(self.publishers)
        if active:
            self.data.draw(st.sampled_from(active), label="publisher").command("close")

    def step_crash_publisher(self) -> None:
        active = self._active(self.publishers)
        if active:
            self.data.draw(st.sampled_from(active), label="publisher").command("crash")

    def step_cancel_publisher(self) -> None:
        live = [a for a in self.publishers if a.state in ("starting", "active")]
        if live:
            self.data.draw(st.sampled_from(live), label="publisher").scope.cancel()

    def subscribe(
        self,
        key: StreamKey,
        credentials: Credentials | None = None,
        paused: bool | None = None,
        capacity: st.SearchStrategy[int] = st.integers(1, 8),
    ) -> SubscriberActor:
        """Start a subscriber actor (paused or not, and its queue's capacity, drawn unless given)."""
        actor = SubscriberActor(
            self,
            key,
            capacity=self.data.draw(capacity, label="capacity"),
            paused=self.data.draw(st.booleans(), label="paused") if paused is None else paused,
            mode=self.data.draw(st.sampled_from(["iter", "batch"]), label="mode"),
            credentials=credentials,
        )
        self.subscribers.append(actor)
        self.nursery.start_soon(actor.run, name=f"race subscriber {actor.id}")
        return actor

    def step_subscribe(self) -> None:
        self.subscribe(self.draw_play_key())

    def step_refused_play(self) -> None:
        if self.setup.refused_play is not None:
            self.subscribe(self.draw_play_key(), self.setup.refused_play)

    def step_unsubscribe(self) -> None:
        live = [a for a in self.subscribers if a.state in ("starting", "active")]
        if live:
            self.data.draw(st.sampled_from(live), label="subscriber").scope.cancel()

    def step_toggle_slow(self) -> None:
        active = self._active(self.subscribers)
        if active:
            actor = self.data.draw(st.sampled_from(active), label="subscriber")
            actor.gate.set() if actor.paused else actor.pause()

    def step_time_passes(self) -> None:
        self.clock.jump(self.data.draw(st.sampled_from([0.2, 2.0, 6.0, 11.0]), label="seconds"))

    # ------------------------------------------------------------------ running

    async def ticks(self) -> None:
        for _ in range(self.data.draw(st.integers(0, 4), label="ticks")):
            await trio.lowlevel.checkpoint()

    async def run(self, max_steps: int = 30) -> None:
        first = self.publish(self.setup.publish)
        await self.settle()
        if first.state != "active":
            raise AssertionError(
                f"the first publish (to {first.key}, with RaceSetup.publish = {self.setup.publish}) was "
                f"refused: {first.error!r}. Give RaceSetup the credentials your authenticator accepts, "
                "or every example would race nothing."
            )
        # A viewer of it (with room for the first burst) and a GOP or more from the publisher,
        # so that most examples play media: the viewer's authorization and the first frames
        # race; most often they are then delivered before the other steps begin (else those
        # race them too).
        self.subscribe(first.key, paused=False, capacity=st.integers(64, 128))
        await self.ticks()
        first.command("send", first.next_frames(self.data, self.data.draw(st.integers(first.gop, 12), label="n")))
        if self.data.draw(st.integers(0, 3), label="race the opening?") < 3:  # (0, the simplest: settle)
            await self.settle()
        else:
            await self.ticks()
        steps = self.steps()
        names = [name for name in sorted(steps) for _ in range(self.weights.get(name, 1))]
        for _ in range(self.data.draw(st.integers(min(5, max_steps), max_steps), label="steps")):
            steps[self.data.draw(st.sampled_from(names), label="step")]()
            await self.ticks()
            if self.data.draw(st.integers(0, 3), label="settle?") == 0:
                await self.settle()
                self.check()
        await self.settle()
        self.check()

    async def finish(self) -> None:
        """After the engine has stopped: every actor ends by itself, all invariants hold."""
        for actor in self.subscribers:
            actor.gate.set()
        await self.settle()
        assert all(a.state in ("ended", "refused") for a in self.publishers), [a.state for a in self.publishers]
        assert all(a.state in ("ended", "refused") for a in self.subscribers), [a.state for a in self.subscribers]
        assert self.engine.publisher_count == 0
        self.check_refusals()
        for actor in self.subscribers:
            self.check_subscriber(actor, final=True)
        self.check_no_task_left()

    # ------------------------------------------------------------------ invariants

    def check(self) -> None:
        engine = self.engine
        assert engine.stream_failures == 0, "a stream task failed (see the log)"
        self.check_refusals()
        publishing = [s for s in engine.streams() if s.publishing]
        active = self._active(self.publishers)
        assert engine.publisher_count == len(publishing) == len(active), (
            engine.publisher_count,
            len(publishing),
            [(a.key, a.state) for a in active],
        )
        per_key: defaultdict[StreamKey, int] = defaultdict(int)
        for actor in active:
            per_key[actor.key] += 1
        assert all(n <= 1 for n in per_key.values()), per_key
        for stream in engine.streams():
            session = stream.session
            if session is not None:  # a stream pumps its publisher at once, never later
                waiting = session.receive.statistics().current_buffer_used
                assert waiting == 0, f"{waiting} frames of {stream.key} wait in its ingest queue at rest"
        self.check_no_task_left()
        for actor in self.subscribers:
            self.check_subscriber(actor)

    def check_refusals(self) -> None:
        """Every refusal was the one its situation called for, and refused credentials never
        published or played."""
        for actor in [*self.publishers, *self.subscribers]:
            assert actor.wrong_refusal is None, actor.wrong_refusal
        if self.setup.refused_publish is not None:
            assert not any(a.was_active for a in self.publishers if a.credentials == self.setup.refused_publish), (
                "a publisher with RaceSetup.refused_publish published"
            )
        if self.setup.refused_play is not None:
            assert not any(a.was_active for a in self.subscribers if a.credentials == self.setup.refused_play), (
                "a subscriber with RaceSetup.refused_play played"
            )

    def check_no_task_left(self) -> None:
        tasks = live_tasks()
        names = [task.name for task in tasks]
        streams = {f"stream {stream.key}" for stream in self.engine.streams()}
        running = [name for name in names if name.startswith("stream ")]
        assert sorted(running) == sorted(streams), ("stream tasks", sorted(running), sorted(streams))
        for actor in [*self.publishers, *self.subscribers]:
            if actor.state in ("ended", "refused"):
                assert actor.task not in tasks, f"{actor} ended but its task is still running"

    def check_subscriber(self, actor: SubscriberActor, final: bool = False) -> None:
        sub = actor.subscription
        if sub is None:
            return
        delivered = self.recorder.delivered.get(self.recorder.serial(sub.stream), [])
        if actor.state == "active":
            exact = not actor.paused and sub.queued == 0
        else:  # it left: what it had been given and not read is not a drop
            exact = actor.unread == 0
        check_delivery(actor.received, delivered, sub, self.session_of, exact=exact)
        check_sessions(actor.received, actor.sessions, self.session_of)


# ------------------------------------------------------------------------------ running


def run_races(
    setup: Callable[[], RaceSetup],
    data: st.DataObject,
    *,
    machine: type[EngineRaces] = EngineRaces,
    max_steps: int = 30,
) -> EngineRaces:
    """Run ``machine`` against the engine ``setup()`` builds, with a fresh mock clock; stop the
    engine (while steps may still be in flight), check that every actor ended, that the
    invariants hold and that no task is left. Returns the machine (for your own checks)."""
    clock = trio.testing.MockClock()
    result: list[EngineRaces] = []

    async def main() -> None:
        race_setup = setup()
        engine = race_setup.engine
        recorder = Recorder()
        recorder.engine = engine
        engine.add_observer(recorder)
        before = live_tasks()
        async with trio.open_nursery() as actors:
            async with engine:
                races = machine(race_setup, data, clock, actors, recorder)
                await races.run(max_steps)
                if data.draw(st.booleans(), label="stop mid-step"):
                    # An authorization in flight as the engine stops (a publish, or a play).
                    if data.draw(st.booleans(), label="publish or play"):
                        races.step_publish()
                    else:
                        races.step_subscribe()
                    await races.ticks()
                races.stopping = True  # leaving the block stops the engine, with no checkpoint before
            await races.finish()
        assert engine.streams() == [] and not engine.running
        left = live_tasks() - before
        assert not left, f"tasks left behind: {left}"
        result.append(races)

    trio.run(main, clock=clock)
    return result[0]
