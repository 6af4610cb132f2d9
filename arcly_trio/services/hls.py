"""HLS packaging: one segmenter per stream, however many viewers, into a :class:`Storage`.

:class:`HlsService` is a kernel :class:`~arcly_trio.kernel.engine.StreamService`: register it
with ``EngineBuilder.service`` and the engine feeds it every frame of every stream of the
applications it applies to (``AppSpec.hls``, or all of them with ``all_apps=True``). For each
stream it runs an :class:`~arcly_trio.media.hls.HlsSegmenter` and writes, under
``{app}/{stream}/`` in its storage:

* ``index.m3u8``, the live playlist, rewritten each time a segment is complete or expires;
* the segments, named ``{token}-{sequence}.ts`` where the token is new for each stream, so a
  stream that comes back under the same name never reuses a name a player may have cached.

A complete segment is stored before the playlist that lists it. A segment that leaves the
window is deleted ``delete_delay`` seconds later (players that loaded an older playlist may
still fetch it), never while a stored playlist lists it. A new publish session (takeover,
reconnect) or a timestamp jump starts a new timeline with ``EXT-X-DISCONTINUITY``. When the
stream ends the playlist gets ``EXT-X-ENDLIST``; ``delete_delay`` seconds later the playlist
and its segments are deleted (the playlist only if no newer stream of the same name took it
over meanwhile).

Deletions are run by :meth:`HlsService.run`, a small janitor task the engine starts (see
:mod:`arcly_trio.kernel.service`); without it, stream tasks run the deletions that fall due while
they are alive, and the final clean-up of ended streams waits for a janitor. The HTTP routes
(:mod:`.hls_routes`) come with the service: :meth:`HlsService.install_routes`.

Error policy: nothing here ever ends a stream. A frame the segmenter rejects (malformed codec
bytes) is dropped and counted in ``bad_frames``; a storage failure is logged and counted in
``storage_errors`` and packaging goes on; a stream whose name cannot be a storage key is not
packaged (logged once).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import time
from collections.abc import Iterable
from typing import Any

import trio

from ..core.errors import RemoteProtocolError
from ..core.keys import StreamKey
from ..kernel.fanout import EndReason
from ..kernel.pacing import Pacer
from ..kernel.spec import AppSpec
from ..kernel.stream import Stream
from ..kernel.subscription import Subscription
from ..media.hls import HlsSegmenter, SegmentClosed, SegmentEvent, SegmentExpired
from ..protocols.http.router import Router
from ..storage import InvalidStorageKey, MemoryStorage, Storage, StorageError, check_key
from ._session import SessionTracker

__all__ = ["HlsService"]

log = logging.getLogger("arcly_trio.hls")

PLAYLIST = "index.m3u8"


class HlsService:
    """Packages streams as HLS into ``storage`` (a :class:`MemoryStorage` by default).

    Args:
        storage: where playlists and segments go.
        target_duration: the shortest segment in seconds (cut on the next keyframe after it).
        window: how many segments the playlist lists.
        delete_delay: seconds an expired segment (or an ended stream's playlist) is kept;
            default ``window * target_duration``.
        all_apps: package every application's streams, not only those with ``AppSpec.hls``.
        capacity: the service's subscription queue (frames); it drops to the next keyframe
            only if storage stalls for that long.
        linger: when the server shuts down, seconds the final playlists (with
            ``#EXT-X-ENDLIST``) are still served, so players end cleanly (default: one target
            duration); the engine's shutdown grace bounds it.
        skip_protocols: publish protocols whose streams are not packaged (the workers of
            ``--workers N`` share one storage, and only the worker where a stream is published
            packages it: the others skip their ``worker`` relay copies).
        locate: a playlist request for a stream that is not here asks the engine's stream
            sources for it (:meth:`~arcly_trio.kernel.engine.Engine.locate`: a pull on
            demand; each request keeps it alive). Off for workers sharing a storage.
    """

    name = "hls"

    def __init__(
        self,
        storage: Storage | None = None,
        *,
        target_duration: float = 2.0,
        window: int = 6,
        delete_delay: float | None = None,
        all_apps: bool = False,
        capacity: int = 2048,
        linger: float | None = None,
        skip_protocols: Iterable[str] = (),
        locate: bool = True,
    ) -> None:
        HlsSegmenter(target_duration, window)  # validates both (LocalProtocolError)
        if delete_delay is not None and delete_delay < 0:
            raise ValueError("delete_delay must be >= 0")
        self.storage: Storage = storage if storage is not None else MemoryStorage()
        self.target_duration = target_duration
        self.window = window
        self.delete_delay = window * target_duration if delete_delay is None else delete_delay
        self.all_apps = all_apps
        self.capacity = capacity
        self.linger = target_duration if linger is None else linger
        self.skip_protocols = frozenset(skip_protocols)
        self.locate = locate
        self.bad_frames = 0
        """Frames the segmenter rejected (malformed codec bytes), over all streams."""
        self.storage_errors = 0
        """Failed storage operations, over all streams."""
        self.streams: dict[str, HlsSegmenter] = {}
        """The segmenter of each stream being packaged, by ``"app/stream"``."""
        self._owners: dict[str, str] = {}
        self._tokens = itertools.count(1)
        self._due: list[tuple[float, int, str, str | None, str | None]] = []
        self._order = itertools.count()
        self._wake = trio.Event()
        self._janitors = 0

    # ------------------------------------------------------------------------- lookups

    def applies_to(self, spec: AppSpec) -> bool:
        return self.all_apps or spec.uses(self.name)

    @staticmethod
    def playlist_key(app: str, stream: str) -> str:
        """The storage key of a stream's playlist (``InvalidStorageKey`` if it cannot be one)."""
        return check_key(f"{app}/{stream}/{PLAYLIST}")

    @staticmethod
    def segment_key(app: str, stream: str, name: str) -> str:
        """The storage key of one of a stream's segments (``InvalidStorageKey`` if invalid)."""
        return check_key(f"{app}/{stream}/{name}")

    @property
    def pending_deletions(self) -> int:
        return len(self._due)

    # ---------------------------------------------------------------------- packaging

    async def serve_stream(self, stream: Stream, subscription: Subscription) -> None:
        """Package ``stream`` until ``subscription`` ends (run by the engine)."""
        if stream.info.protocol in self.skip_protocols:
            return
        app, name = stream.key.app, stream.key.name
        try:
            playlist_key = self.playlist_key(app, name)
        except InvalidStorageKey as exc:
            log.warning("HLS not packaged for %s: %s", stream.key, exc)
            return
        base = f"{app}/{name}"
        token = f"{int(time.time()):x}{next(self._tokens):x}"
        self._owners[base] = token
        segmenter = HlsSegmenter(self.target_duration, self.window, name_template=f"{token}-{{sequence}}.ts")
        self.streams[base] = segmenter
        tracker = SessionTracker(stream)
        pacer = Pacer()
        log.info("HLS packaging %s (segments of %g s, window %d)", stream.key, self.target_duration, self.window)
        bad_logged = False
        try:
            while True:
                batch = await subscription.next_batch(512)
                if not batch:
                    break
                events: list[SegmentEvent] = []
                for frame in batch:
                    if tracker.starts_session(stream, frame):
                        events += segmenter.discontinuity()
                    try:
                        left_out = len(segmenter.left_out)
                        events += segmenter.push(frame)
                        if len(segmenter.left_out) != left_out:
                            log.warning("HLS (MPEG-TS) of %s cannot carry %s: it is left out of the "
                                        "segments (ffmpeg and browsers see the other tracks only)",
                                        stream.key, ", ".join(sorted(segmenter.left_out)))
                        await pacer.spend(len(frame.payload))
                    except RemoteProtocolError as exc:
                        self.bad_frames += 1
                        if not bad_logged:
                            bad_logged = True
                            log.warning("HLS of %s: dropping a malformed %s frame: %s", stream.key, frame.codec, exc)
                if events:
                    await self._apply(base, segmenter, events)
                if not self._janitors:
                    await self._run_due()
            await self._apply(base, segmenter, segmenter.finish())
            log.info("HLS of %s ended (%s)", stream.key,
                     subscription.end_reason.value if subscription.end_reason else "ended")
            if subscription.end_reason is EndReason.SHUTDOWN and self.linger:
                # The server is stopping: give players a moment to read the final playlist
                # (#EXT-X-ENDLIST) so they end cleanly; the engine's shutdown waits for this
                # task within its grace.
                await trio.sleep(self.linger)
        finally:
            if self.streams.get(base) is segmenter:
                del self.streams[base]
            # Schedule the clean-up (synchronous, so it happens even when cancelled).
            due = trio.current_time() + self.delete_delay
            self._schedule(due, playlist_key, base, token)
            for segment in segmenter.segments:
                self._schedule(due, f"{base}/{segment.name}")

    async def _apply(self, base: str, segmenter: HlsSegmenter, events: list[SegmentEvent]) -> None:
        changed = False
        for event in events:
            if isinstance(event, SegmentClosed):
                changed = True
                await self._store(f"{base}/{event.name}", event.data)
            elif isinstance(event, SegmentExpired):
                changed = True
                self._schedule(trio.current_time() + self.delete_delay, f"{base}/{event.name}")
        if changed:
            await self._store(f"{base}/{PLAYLIST}", segmenter.playlist().encode())

    async def _store(self, key: str, data: bytes) -> None:
        try:
            await self.storage.put(key, data)
        except StorageError as exc:
            self._storage_failed("write", key, exc)

    def _storage_failed(self, what: str, key: str, exc: StorageError) -> None:
        self.storage_errors += 1
        count = self.storage_errors
        if count == 1 or count % 100 == 0:
            log.error("HLS storage failed to %s %s (%d failures so far): %s", what, key, count, exc)

    # ---------------------------------------------------------------------- deletions

    def _schedule(self, due: float, key: str, owner: str | None = None, token: str | None = None) -> None:
        heapq.heappush(self._due, (due, next(self._order), key, owner, token))
        self._wake.set()

    async def _run_due(self) -> None:
        now = trio.current_time()
        due = self._due
        while due and due[0][0] <= now:
            _, _, key, owner, token = heapq.heappop(due)
            if owner is not None:
                if self._owners.get(owner) != token:
                    continue  # a newer stream of the same name owns the playlist now
                del self._owners[owner]
            try:
                await self.storage.delete(key)
            except StorageError as exc:
                self._storage_failed("delete", key, exc)

    def install_routes(self, router: Router) -> None:
        """Serve the playlists and segments over HTTP (see :mod:`.hls_routes`)."""
        from . import hls_routes

        hls_routes.install(self, router)

    def stream_urls(self, key: StreamKey) -> dict[str, str]:
        return {"hls": f"/{key.app}/{key.name}/{PLAYLIST}"}

    def stream_status(self, key: StreamKey) -> dict[str, object]:
        """What the HLS of ``key`` carries, for ``/api/streams``: never a silent drop."""
        segmenter = self.streams.get(f"{key.app}/{key.name}")
        if segmenter is None:
            return {}
        return {"hls_tracks": {"variant": "ts", "carried": sorted(segmenter.carried),
                        "left_out": sorted(segmenter.left_out)}}

    async def run(self, engine: Any = None, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the janitor that deletes expired segments and ended streams' files, until
        cancelled (the engine starts it, see :mod:`arcly_trio.kernel.service`)."""
        self._janitors += 1
        try:
            task_status.started()
            while True:
                await self._run_due()
                self._wake = trio.Event()
                timeout = self._due[0][0] - trio.current_time() if self._due else math.inf
                with trio.move_on_after(max(timeout, 0.0)):
                    await self._wake.wait()
        finally:
            self._janitors -= 1
