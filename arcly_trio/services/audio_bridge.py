"""The audio bridge: AAC <-> Opus, per stream, in a thread, only while someone needs it.

What it is for, in two directions:

* **AAC -> Opus** (WebRTC players get Opus only; RTMP/OBS/ffmpeg publishers send AAC): the
  WebRTC worker asks the bridge for Opus of a stream (:meth:`AudioBridge.want_opus`) and gets
  every Opus frame through a callback until it releases it.
* **Opus -> AAC** (browser publishers, WHIP and Enhanced RTMP send Opus; Debian's ffmpeg 5.1,
  VLC 3, OBS and MPEG-TS cannot take it): while a stream's audio is Opus and one of its sinks
  is *legacy* (``bridged_audio``: FLV viewers, RTMP players that did not announce Opus in
  ``fourCcList``, HLS-TS packaging), the bridge delivers AAC into the stream as *bridged*
  frames (:meth:`~arcly_trio.kernel.stream.Stream.deliver_bridged`,
  :attr:`~arcly_trio.core.frame.Frame.bridged`): the kernel offers them to legacy sinks only
  (which leave the original Opus out), and keeps their config in the GOP cache for the next
  legacy viewer. The stream's own frames are never changed; Opus players (WebRTC, the frames
  API, fMP4/CMAF HLS, DASH, Enhanced RTMP players, recordings and relays) never see the AAC.
  The bridge looks at the streams every ``poll_interval`` seconds and when a subscriber joins,
  and stops a stream's AAC ``linger`` seconds after its last legacy sink left. The bridge is an engine plugin (an
:class:`~arcly_trio.kernel.observe.Observer` with a ``run`` hook, :class:`~arcly_trio.kernel.
engine.RunsWithEngine`): the server registers one by default (``server/build.py``), an embedder
adds it with ``EngineBuilder.observer(AudioBridge())``; the worker finds it with
``next(p for p in engine.plugins if isinstance(p, AudioBridge))``.

How it works: the first ``want_opus`` for a stream starts one bridge task for it in the
plugin's nursery; every later caller shares it. The task opens a service subscription on the
stream (:meth:`~arcly_trio.kernel.stream.Stream.service_subscription`: not a viewer, not
authorized, not counted by pulls), takes the AAC frames of the main audio track in batches and
runs :class:`~arcly_trio.media.transcode.AacToOpus` on each batch with
``trio.to_thread.run_sync`` (one thread hop per batch, so the event loop never decodes). Each
Opus frame goes to every caller's ``deliver`` in the bridge's task; a caller that joins a
running bridge gets the current ``OpusHead`` config frame first. When the stream ends (or
is not there yet) the task waits for a stream at the same key (a publish event wakes it, else it
looks again every second) and carries on with a new transcoder. The last release cancels the
task: the thread finishes its batch, the subscription ends, nothing stays.

Costs: nothing at all for a stream nobody asks Opus of and no legacy viewer needs AAC of; for
a bridged stream, per direction, one kernel subscription and one decode + encode in a thread
(a few percent of a core per stereo stream); the streams are looked at once a second.
The publisher never waits for the bridge: if the transcoder falls behind, the kernel's lag
policy drops frames of the bridge's subscription and counts them (``dropped``).

Attacker's view: the input is a publisher's AAC; the transcoder bounds what one frame may
expand to and skips (counts) what FFmpeg refuses. Callers are local code (the worker); the
number of bridges is bounded by the number of streams people watch over WebRTC.

State: :meth:`AudioBridge.stream_status` gives ``{"audio_bridge": [{...}]}`` for
``/api/streams`` (per direction: callers, frames in and out, skipped, dropped, CPU seconds spent
in the thread); :meth:`AudioBridge.stats` gives the same for every bridged stream.

Error policy: a ``deliver`` that raises is logged and that caller is dropped (its release still
works, and is what stops the bridge); a bug in a bridge task is logged and ends that bridge
only, never the stream or the engine (its callers simply get no more frames).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
import trio

from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.core.keys import StreamKey
from arcly_trio.kernel.events import StreamPublished, SubscriberJoined
from arcly_trio.kernel.observe import Observer

if TYPE_CHECKING:
    from arcly_trio.kernel.engine import Engine
    from arcly_trio.kernel.stream import Stream
    from arcly_trio.kernel.subscription import Subscription
    from arcly_trio.media.transcode import Transcoder

__all__ = ["AudioBridge", "BridgeStats"]

log = logging.getLogger("arcly_trio.audio_bridge")

_AUDIO = FrameKind.AUDIO


@attrs.define
class BridgeStats:
    """What one stream's bridge did (see :meth:`AudioBridge.stream_status`)."""

    direction: str
    callers: int = 0
    frames_in: int = 0
    frames_out: int = 0
    skipped: int = 0
    dropped: int = 0
    cpu_seconds: float = 0.0
    sessions: int = 0

    def document(self) -> dict[str, Any]:
        return {
            "direction": self.direction,
            "callers": self.callers,
            "frames_in": self.frames_in,
            "frames_out": self.frames_out,
            "skipped": self.skipped,
            "dropped": self.dropped,
            "cpu_seconds": round(self.cpu_seconds, 3),
            "sessions": self.sessions,
        }


class _Caller:
    __slots__ = ("deliver", "primed")

    def __init__(self, deliver: Callable[[Frame], None]) -> None:
        self.deliver = deliver
        self.primed = False


def _transcode(transcoder: Transcoder, frames: list[Frame]) -> tuple[list[Frame], float]:
    """Run in a worker thread: the frames through ``transcoder``, and the CPU time it took."""
    start = time.thread_time()
    out: list[Frame] = []
    for frame in frames:
        out += transcoder.push(frame)
    return out, time.thread_time() - start


class _Bridge:
    """One stream's transcoding task and its callers."""

    def __init__(self, owner: AudioBridge, key: StreamKey) -> None:
        self.owner = owner
        self.key = key
        self.callers: list[_Caller] = []
        self.scope = trio.CancelScope()
        self.wake = trio.Event()
        self.config: Frame | None = None
        self.stats = BridgeStats("aac->opus")

    async def run(self) -> None:
        try:
            with self.scope:
                while True:
                    stream = self.owner.find_stream(self.key)
                    if stream is not None:
                        await self._serve(stream)
                    # No stream, or it ended (or evicted us): wait for a publish, or look again.
                    self.wake = trio.Event()
                    with trio.move_on_after(self.owner.poll_interval):
                        await self.wake.wait()
        except Exception:  # a bug here ends this bridge only
            log.exception("audio bridge of %s failed", self.key)
        finally:
            self.owner.forget(self)

    async def _serve(self, stream: Stream) -> None:
        from arcly_trio.media.transcode import AacToOpus  # PyAV loads with the first bridge

        owner = self.owner
        transcoder = AacToOpus()
        self.config = None
        self.stats.sessions += 1
        with stream.service_subscription(owner.name, owner.capacity) as subscription:
            dropped = 0
            skipped = self.stats.skipped
            while True:
                batch = await subscription.next_batch(owner.batch)
                if not batch:
                    break
                audio = [f for f in batch if f.kind is _AUDIO and f.track == 0 and f.codec == "aac"]
                if not audio:
                    continue
                out, cpu = await trio.to_thread.run_sync(_transcode, transcoder, audio)
                stats = self.stats
                stats.cpu_seconds += cpu
                stats.frames_in += len(audio)
                stats.frames_out += len(out)
                stats.skipped = skipped + transcoder.skipped
                self._deliver(out)
                self.stats.dropped += subscription.dropped - dropped
                dropped = subscription.dropped

    def _deliver(self, frames: list[Frame]) -> None:
        for frame in frames:
            if frame.config:
                self.config = frame
            for caller in list(self.callers):
                try:
                    if frame.config:
                        caller.primed = True
                    elif not caller.primed:
                        caller.primed = True
                        if self.config is not None:
                            caller.deliver(self.config)
                    caller.deliver(frame)
                except Exception:
                    log.exception("an audio bridge consumer of %s failed; it gets no more frames", self.key)
                    if caller in self.callers:
                        self.callers.remove(caller)
                    self.stats.callers = len(self.callers)


class _AacBridge:
    """One Opus stream's AAC for its legacy sinks: runs while the stream lives and needs it."""

    def __init__(self, owner: AudioBridge, stream: Stream) -> None:
        self.owner = owner
        self.stream = stream
        self.key = stream.key
        self.scope = trio.CancelScope()
        self.stats = BridgeStats("opus->aac", sessions=1)
        self.unneeded_since: float | None = None

    async def run(self) -> None:
        from arcly_trio.media.transcode import OpusToAac  # PyAV loads with the first bridge

        owner, stream, stats = self.owner, self.stream, self.stats
        transcoder = OpusToAac()
        try:
            with self.scope, stream.service_subscription(owner.name, owner.capacity) as subscription:
                await self._pump(transcoder, subscription)
        except Exception:  # a bug here ends this bridge only
            log.exception("audio bridge (Opus to AAC) of %s failed", self.key)
        finally:
            stats.skipped = transcoder.skipped
            owner.forget_aac(self)

    async def _pump(self, transcoder: Transcoder, subscription: Subscription) -> None:
        stream, stats = self.stream, self.stats
        while True:
            batch = await subscription.next_batch(self.owner.batch)
            if not batch:
                return
            opus = [f for f in batch if f.kind is _AUDIO and f.track == 0 and f.codec == "opus" and not f.bridged]
            if not opus:
                continue
            out, cpu = await trio.to_thread.run_sync(_transcode, transcoder, opus)
            stats.cpu_seconds += cpu
            stats.frames_in += len(opus)
            stats.frames_out += len(out)
            stats.skipped = transcoder.skipped
            stats.dropped = subscription.dropped
            stream.deliver_bridged(
                [Frame(f.kind, f.codec, f.pts, f.dts, f.payload, f.keyframe, f.config, f.track, True) for f in out]
            )


def _needs_aac(stream: Stream) -> bool:
    """Whether ``stream``'s audio is Opus and one of its sinks takes bridged AAC."""
    if stream.info.audio_codec != "opus":
        return False
    return any(getattr(sub.sink, "bridged_audio", False) for sub in stream.subscribers)


class AudioBridge(Observer):
    """Opus for WebRTC players of AAC streams (see the module docstring).

    Args:
        capacity: frames the bridge's subscription queues before the kernel drops (counted).
        batch: frames per thread hop at most.
        poll_interval: seconds between looks for a stream that is not there, and at which
            streams need AAC (a publish or a subscriber that joins wakes the bridge sooner).
        linger: seconds a stream's AAC goes on after its last legacy sink left.
    """

    name = "audio-bridge"
    bridges_audio = True
    """Tells the protocol workers that legacy players get AAC of Opus streams here
    (:func:`arcly_trio.workers.egress.bridges_audio`)."""

    def __init__(
        self, *, capacity: int = 512, batch: int = 128, poll_interval: float = 1.0, linger: float = 5.0
    ) -> None:
        self.capacity = capacity
        self.batch = batch
        self.poll_interval = poll_interval
        self.linger = linger
        self._engine: Engine | None = None
        self._nursery: trio.Nursery | None = None
        self._bridges: dict[StreamKey, _Bridge] = {}
        self._aac: dict[StreamKey, _AacBridge] = {}
        self._look = trio.Event()

    async def run(self, engine: Engine, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The plugin's lifetime (started by the engine): the nursery of the bridge tasks."""
        self._engine = engine
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await self._watch(engine, nursery)
        finally:
            self._nursery = None
            self._engine = None

    def want_opus(self, key: StreamKey, deliver: Callable[[Frame], None]) -> Callable[[], None]:
        """Call ``deliver`` with every Opus frame of ``key``'s audio (config first) until the
        returned function is called (idempotent). ``deliver`` runs in the bridge's task and
        must not block. Only AAC of the main audio track is transcoded: a stream whose audio
        is Opus already gives nothing here (take its own frames). Raises ``RuntimeError`` if
        the engine is not running the bridge."""
        nursery = self._nursery
        if nursery is None:
            raise RuntimeError("the audio bridge is not running (is it registered with the engine?)")
        bridge = self._bridges.get(key)
        if bridge is None:
            bridge = self._bridges[key] = _Bridge(self, key)
            nursery.start_soon(bridge.run, name=f"audio bridge {key}")
        caller = _Caller(deliver)
        bridge.callers.append(caller)
        bridge.stats.callers = len(bridge.callers)

        def release() -> None:
            if caller in bridge.callers:
                bridge.callers.remove(caller)
            bridge.stats.callers = len(bridge.callers)
            if not bridge.callers:
                bridge.scope.cancel()
                self.forget(bridge)

        return release

    # ------------------------------------------------------------ Opus -> AAC

    async def _watch(self, engine: Engine, nursery: trio.Nursery) -> None:
        """Start and stop the streams' AAC as they need it (see the module docstring)."""
        while True:
            now = trio.current_time()
            for stream in engine.streams():
                bridge = self._aac.get(stream.key)
                if bridge is not None and bridge.stream is not stream:
                    bridge.scope.cancel()  # a stream that ended: its bridge ends with it
                    bridge = None
                if _needs_aac(stream):
                    if bridge is None:
                        bridge = self._aac[stream.key] = _AacBridge(self, stream)
                        nursery.start_soon(bridge.run, name=f"audio bridge (AAC) {stream.key}")
                    bridge.unneeded_since = None
                elif bridge is not None:
                    if bridge.unneeded_since is None:
                        bridge.unneeded_since = now
                    elif now - bridge.unneeded_since >= self.linger:
                        bridge.scope.cancel()
            self._look = trio.Event()
            with trio.move_on_after(self.poll_interval):
                await self._look.wait()

    def forget_aac(self, bridge: _AacBridge) -> None:
        if self._aac.get(bridge.key) is bridge:
            del self._aac[bridge.key]

    def on_subscriber_joined(self, event: SubscriberJoined) -> None:
        if event.protocol != self.name:
            self._look.set()

    # ------------------------------------------------------------ for the bridge tasks

    def find_stream(self, key: StreamKey) -> Stream | None:
        """The live stream at ``key``, if any."""
        engine = self._engine
        if engine is None or not engine.has_stream(key):
            return None
        return engine.stream(key)

    def forget(self, bridge: _Bridge) -> None:
        if self._bridges.get(bridge.key) is bridge:
            del self._bridges[bridge.key]

    def on_publish_started(self, event: StreamPublished) -> None:
        bridge = self._bridges.get(event.key)
        if bridge is not None:
            bridge.wake.set()
        self._look.set()

    # ------------------------------------------------------------ state

    def running(self, key: StreamKey, direction: str = "aac->opus") -> bool:
        """Whether a bridge runs for ``key`` in ``direction`` (``"aac->opus"``, ``"opus->aac"``)."""
        return key in (self._bridges if direction == "aac->opus" else self._aac)

    def stats(self) -> dict[StreamKey, list[BridgeStats]]:
        """Every running bridge's counters, by stream (one per direction)."""
        found: dict[StreamKey, list[BridgeStats]] = {}
        for key, bridge in self._bridges.items():
            found.setdefault(key, []).append(bridge.stats)
        for key, aac in self._aac.items():
            found.setdefault(key, []).append(aac.stats)
        return found

    def stream_status(self, key: StreamKey) -> dict[str, Any]:
        running = self.stats().get(key)
        return {"audio_bridge": [stats.document() for stats in running]} if running else {}
