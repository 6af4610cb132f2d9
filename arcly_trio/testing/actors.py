"""The actors of the race machine (:class:`~.races.EngineRaces`), each a task it drives, and the
observer that records what the streams delivered.

* :class:`PublisherActor` holds ``engine.publish(key)`` and obeys commands (send, close, crash),
  making frames in the style it was drawn (tracks, audio, how the session starts, GOP size);
* :class:`SubscriberActor` holds ``engine.subscribe(key)`` and records what it reads, and under
  which announced session;
* :class:`Recorder` observes the engine: what each stream delivered, and from which publish
  session each frame came.

An actor needs of its machine only what :class:`RaceHost` says. Error policy: an actor's own
``StreamError`` (a refusal, or the engine going away) and a modelled crash end it and are kept
in its ``error``; a refusal is judged by the machine (``wrong_refusal``) for its invariants to
report; anything else propagates and fails the run.
"""

from __future__ import annotations

import itertools
import math
import weakref
from collections import defaultdict
from collections.abc import Iterator
from typing import Any, Protocol

import trio
from hypothesis import strategies as st

from arcly_trio.core.errors import StreamError
from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.core.keys import Credentials, StreamKey
from arcly_trio.kernel.engine import Engine
from arcly_trio.kernel.observe import Observer
from arcly_trio.kernel.subscription import Subscription
from arcly_trio.media import amf0
from arcly_trio.testing import frames as fb

__all__ = ["RaceHost", "RaceOptions", "PublisherActor", "SubscriberActor", "Recorder"]

_VIDEO = FrameKind.VIDEO
_AUDIO = FrameKind.AUDIO


class RaceOptions(Protocol):
    """What an actor reads of the race's setup (:class:`~.races.RaceSetup` is one)."""

    @property
    def play(self) -> Credentials: ...

    @property
    def real_media(self) -> bool: ...


class RaceHost(Protocol):
    """What an actor needs of the machine that drives it (:class:`~.races.EngineRaces` is one)."""

    @property
    def engine(self) -> Engine: ...

    @property
    def setup(self) -> RaceOptions: ...

    def clock_ms(self) -> int: ...

    def judge_refusal(
        self, action: str, key: StreamKey, credentials: Credentials, error: StreamError
    ) -> str | None: ...


class _Crash(Exception):
    """Raised inside a publish block to model a crashing publisher."""


class Recorder(Observer):
    """Records what each stream delivered, in sequence order, and which publish session each
    frame came from (whatever the publisher's protocol)."""

    def __init__(self) -> None:
        self.engine: Engine | None = None
        self.delivered: defaultdict[int, list[Frame]] = defaultdict(list)
        """What each stream delivered, by the stream's :meth:`serial`."""
        self.by_key: defaultdict[StreamKey, list[Frame]] = defaultdict(list)
        self.session_of: dict[int, int] = {}
        """The :meth:`serial` of the publish session each frame came from, by ``id(frame)``
        (the frames are held in ``delivered``, so their ids are not reused)."""
        self._serials: weakref.WeakKeyDictionary[object, int] = weakref.WeakKeyDictionary()
        self._numbers = itertools.count(1)

    def serial(self, thing: object) -> int:
        """A number for a stream or a publish session that no other one ever gets. (Not
        ``id()``: once a stream has ended and been freed, the next one may get its id, and its
        frames would be taken for the new stream's.) Holds no reference to ``thing``."""
        number = self._serials.get(thing)
        if number is None:
            number = self._serials[thing] = next(self._numbers)
        return number

    def on_frame(self, key: StreamKey, frame: Frame) -> None:
        assert self.engine is not None
        stream = self.engine.stream(key)  # the stream delivering is the one in the table
        self.delivered[self.serial(stream)].append(frame)
        self.by_key[key].append(frame)
        pumping = stream.pumping
        self.session_of[id(frame)] = self.serial(pumping) if pumping is not None else 0


class PublisherActor:
    """A task that holds ``engine.publish(key)`` and obeys commands (send, close, crash)."""

    ids = itertools.count(1)

    def __init__(self, races: RaceHost, key: StreamKey, credentials: Credentials, style: dict[str, Any]) -> None:
        self.id = next(self.ids)
        self.key = key
        self.credentials = credentials
        self.state = "starting"  # -> active -> ended | refused
        self.was_active = False
        self.error: BaseException | None = None
        self.wrong_refusal: str | None = None
        """Why its refusal was not the one its situation called for (see
        :meth:`~.races.EngineRaces.judge_refusal`); ``None`` if it was, or it was not refused."""
        self.scope = trio.CancelScope()
        self.task: trio.lowlevel.Task | None = None
        self._races = races
        self._commands, self._inbox = trio.open_memory_channel[tuple[str, Any]](math.inf)
        self.video_tracks: tuple[int, ...] = style["video_tracks"]
        self.audio: bool = style["audio"]
        self.start: str = style["start"]  # "configs" | "mid-gop" | "bare"
        self.gop: int = style["gop"]
        self._count = 0  # frames made (their payloads are unique)
        self._picture = 0  # pictures of each video track made (a keyframe every ``gop``)
        self._t = races.clock_ms()
        self._configured = False
        self._real: Iterator[Frame] | None = None

    async def run(self) -> None:
        self.task = trio.lowlevel.current_task()
        races = self._races
        try:
            with self.scope:
                async with races.engine.publish(self.key, self.credentials, protocol="race") as publisher:
                    self.state = "active"
                    self.was_active = True
                    async for command, frames in self._inbox:
                        if command == "send":
                            for frame in frames:
                                await publisher.send(frame)
                        elif command == "crash":
                            raise _Crash()
                        elif command == "close":
                            break
        except _Crash as exc:
            self.error = exc
        except StreamError as exc:
            self.error = exc
            if self.state == "starting":  # (no checkpoint since the engine decided)
                self.state = "refused"
                self.wrong_refusal = races.judge_refusal("publish", self.key, self.credentials, exc)
        finally:
            if self.state != "refused":
                self.state = "ended"
            self.task = None

    def command(self, command: str, arg: Any = None) -> None:
        self._commands.send_nowait((command, arg))

    def _frame(
        self, kind: FrameKind, tag: str, key: bool = False, config: bool = False, track: int = 0, cts: int = 0
    ) -> Frame:
        codec = "h264" if kind is _VIDEO else "aac" if kind is _AUDIO else "amf0"
        mark = f"{self.id}:{tag}:{track}:{self._count}"
        if kind is FrameKind.DATA:  # real AMF0, so that it can travel over RTMP and FLV too
            payload = amf0.encode("onMetaData" if config else "onCuePoint", {"mark": mark})
        else:
            payload = mark.encode()
        self._count += 1
        return Frame(kind, codec, self._t + cts, self._t, payload, keyframe=key, config=config, track=track)

    def configs(self, tag: str = "cfg") -> list[Frame]:
        out = [self._frame(FrameKind.DATA, "meta", config=True)]
        out += [self._frame(_VIDEO, tag, key=True, config=True, track=t) for t in self.video_tracks]
        if self.audio:
            out.append(self._frame(_AUDIO, tag, config=True))
        return out

    def next_frames(self, data: st.DataObject, n: int) -> list[Frame]:
        """The next ``n`` media frames of this session (configs first when its style says so)."""
        if self._races.setup.real_media:
            return self._next_real(data, n)
        out: list[Frame] = []
        if not self._configured:
            self._configured = True
            if self.start != "bare":
                out += self.configs()
            if self.start == "mid-gop":
                self._picture += data.draw(st.integers(1, self.gop - 1), label="mid-gop offset")
        for _ in range(n):
            self._t += data.draw(st.integers(0, 40), label="dt")
            extra = data.draw(st.sampled_from(["", "", "", "", "", "", "config", "cue"]), label="extra")
            if extra == "config" and self.video_tracks:
                out.append(
                    self._frame(
                        _VIDEO,
                        "cfg",
                        key=True,
                        config=True,
                        track=data.draw(st.sampled_from(self.video_tracks), label="cfg track"),
                    )
                )
            elif extra == "cue":
                out.append(self._frame(FrameKind.DATA, "cue"))
            for track in self.video_tracks:
                phase = 0 if track == self.video_tracks[0] else self.gop // 2
                key = (self._picture + phase) % self.gop == 0
                out.append(self._frame(_VIDEO, "v", key=key, track=track, cts=data.draw(st.sampled_from([0, 0, 33]))))
            self._picture += 1
            if self.audio:
                out.append(self._frame(_AUDIO, "a"))
        return out

    def _next_real(self, data: st.DataObject, n: int) -> list[Frame]:
        if self._real is None:
            self._real = fb.real_stream(start_ms=self._t)
            if self.start != "configs":
                configs = 3  # metadata, video and audio configs come first in the clip
                skip = configs if self.start == "bare" else configs + data.draw(st.integers(1, 40), label="skip")
                for _ in range(skip):
                    next(self._real)
        return [next(self._real) for _ in range(n * 2)]


class SubscriberActor:
    """A task that holds ``engine.subscribe(key)`` and records what it receives."""

    ids = itertools.count(1)

    def __init__(
        self,
        races: RaceHost,
        key: StreamKey,
        capacity: int,
        paused: bool,
        mode: str,
        credentials: Credentials | None = None,
    ) -> None:
        self.id = next(self.ids)
        self.key = key
        self.credentials = races.setup.play if credentials is None else credentials
        self.capacity = capacity
        self.mode = mode  # "iter" | "batch"
        self.received: list[Frame] = []
        self.sessions: list[int] = []
        """The number of the announced session (``Subscription.session``) each frame of
        ``received`` was read under; 0 for none."""
        self.unread = 0
        """Frames its subscription had taken but it had not read when it left."""
        self.subscription: Subscription | None = None
        self.state = "starting"  # -> active -> ended | refused
        self.was_active = False
        self.error: BaseException | None = None
        self.wrong_refusal: str | None = None
        """As :attr:`PublisherActor.wrong_refusal`."""
        self.scope = trio.CancelScope()
        self.gate = trio.Event()
        self.task: trio.lowlevel.Task | None = None
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
        self.task = trio.lowlevel.current_task()
        races = self._races
        try:
            with self.scope:
                async with races.engine.subscribe(
                    self.key, self.credentials, protocol="race", capacity=self.capacity
                ) as sub:
                    self.subscription = sub
                    self.state = "active"
                    self.was_active = True
                    try:
                        await self._read(sub)
                    finally:
                        self.unread = sub.queued
        except StreamError as exc:
            self.error = exc
            if self.state == "starting":  # (no checkpoint since the engine decided)
                self.state = "refused"
                self.wrong_refusal = races.judge_refusal("play", self.key, self.credentials, exc)
        finally:
            if self.state != "refused":
                self.state = "ended"
            self.task = None

    async def _read(self, sub: Subscription) -> None:
        if self.mode == "iter":
            while True:
                await self.gate.wait()
                try:
                    self.received.append(await sub.__anext__())
                except StopAsyncIteration:
                    return
                self.sessions.append(sub.session.number if sub.session is not None else 0)
        while True:
            await self.gate.wait()
            batch = await sub.next_batch(limit=3)
            if not batch:
                return
            self.received.extend(batch)
            self.sessions += [sub.session.number if sub.session is not None else 0] * len(batch)
