"""Thumbnails of live streams and of recordings: one decode per keyframe and size, shared.

What it is for: ``GET /{app}/{stream}/thumbnail.jpg`` (the latest keyframe of a live stream)
and ``GET /{app}/{stream}/playback.jpg?at=`` (a recorded moment, found through the recorder's
catalog), served by :mod:`.thumbnail_routes`, and the status page's live pictures. A
:class:`Thumbnails` is an engine plugin (``EngineBuilder.observer``; ``arcly-trio serve`` adds
one): it installs those routes on the HTTP workers, holds the caches and runs the decodes.

How it works:

* Live: the picture comes from the stream's GOP cache (:mod:`arcly_trio.kernel.gop`), which
  holds the current GOP from its keyframe on with the configs as they were then
  (:func:`latest_keyframe`); nothing is subscribed and the publisher's path costs nothing.
  Per stream, the cache keeps the keyframe it decoded (the frame object itself: a new keyframe
  is a new object) and, for each width asked, one *flight*: the first request starts the
  decode (:func:`arcly_trio.media.thumbnail.keyframe_jpeg` in a worker thread), every request
  for the same keyframe and width meanwhile waits for it, and later ones get its JPEG until the
  next keyframe arrives. So a flood costs one decode per keyframe per width.
* Recorded: :func:`arcly_trio.media.thumbnail.recorded_keyframe` finds the keyframe at or before
  the moment in the segment file (a demux, no decode; shared by requests for the same file and
  offset), then the JPEG is a flight keyed by the file, the keyframe's time and the width: every
  moment that lands on the same keyframe shares one decode.
* Work runs in threads under one :class:`trio.CapacityLimiter` (``threads``, 2 by default), so
  many streams' thumbnails queue instead of taking every core.

Attacker's view: every request may pick the stream, the width and (recorded) the moment. Per
stream and keyframe at most ``max_sizes`` widths are decoded; a request for another width then
gets the rendered width nearest to it (the JPEG's own size says which). The caches are
bounded: ``max_streams`` live streams (least recently asked dropped first), ``max_recorded``
recorded keyframes' pictures and four times as many found keyframes; a stream's pictures go when
its publish session ends. A decode that takes longer than ``timeout`` seconds leaves its waiters
with :class:`ThumbnailBusy` (the thread finishes on its own, its result kept). A waiter that
goes away never cancels the flight others wait for; the flight's own task is the one that asked
first, and if it is cancelled before its thread started, the flight is dropped and the next
request starts another.

Error policy: :class:`NoPicture` (a picture cannot be made: no video, no keyframe yet, an
undecodable keyframe; ``status`` says which HTTP status fits: 409, 503...) and
:class:`ThumbnailBusy` (503) are the only errors a request sees; a failed decode is remembered
for its keyframe and width like a picture (so a bad keyframe is not decoded again per request).
"""

from __future__ import annotations

import collections
import math
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

import attrs
import trio

from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.core.keys import StreamKey
from arcly_trio.kernel.observe import Observer
from arcly_trio.media.thumbnail import NoPicture, RecordedKeyframe, Thumbnail, check_width
from arcly_trio.protocols.http.router import Router
from arcly_trio.services import thumbnail_routes

if TYPE_CHECKING:
    from arcly_trio.kernel.events import StreamUnpublished
    from arcly_trio.kernel.gop import GopCache

__all__ = [
    "Picture",
    "ThumbnailBusy",
    "Thumbnails",
    "THUMBNAIL_CODECS",
    "latest_keyframe",
]

THUMBNAIL_CODECS: Final = frozenset({"h264", "hevc", "av1", "vp9"})
"""The video codecs a thumbnail can be made of."""

T = TypeVar("T")


class ThumbnailBusy(NoPicture):
    """The decode did not finish within the timeout (``503``, retry)."""

    def __init__(self, message: str = "the thumbnail is still being made; retry") -> None:
        super().__init__(message, 503)


@attrs.frozen
class Picture:
    """A thumbnail as served: the JPEG, its size, and the keyframe's time (live: the keyframe's
    pts in ms on the stream's timeline; recorded: seconds into the segment)."""

    jpeg: bytes
    width: int
    height: int
    time: float


class _Flight(Generic[T]):
    """One piece of work many requests wait for: a result or an error once ``done`` is set."""

    __slots__ = ("done", "result", "error")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.result: T | None = None
        self.error: NoPicture | None = None

    async def wait(self, timeout: float) -> T:
        with trio.move_on_after(timeout):
            await self.done.wait()
        if not self.done.is_set():
            raise ThumbnailBusy()
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


class _Live:
    """One stream's live thumbnails: the keyframe they are of, a flight per width."""

    __slots__ = ("keyframe", "sizes")

    def __init__(self) -> None:
        self.keyframe: Frame | None = None
        self.sizes: dict[int, _Flight[Picture]] = {}


def latest_keyframe(gop: GopCache) -> tuple[Frame | None, Frame] | None:
    """The primary video track's config (``None`` if none was sent) and keyframe of the GOP the
    cache holds, or ``None`` when it holds none (no video, no keyframe yet, a GOP over the
    cache's caps, or no GOP cache)."""
    primary = gop.primary
    if primary is None:
        return None
    replay = gop.replay()
    if not replay.on_keyframe:
        return None
    config: Frame | None = None
    for frame in replay.frames:
        if frame.kind is FrameKind.VIDEO and frame.track == primary:
            if frame.config:
                config = frame
            elif frame.keyframe:
                return config, frame
    return None


class Thumbnails(Observer):
    """The thumbnail caches and decodes (see the module docstring), and the engine plugin that
    serves them: add it with ``EngineBuilder.observer`` (its one hook, ``on_publish_ended``,
    drops a stream's pictures when its publish session ends; it sees no frames; its routes come
    through :meth:`install_routes`).

    Args:
        max_sizes: widths decoded per stream and keyframe (or per recorded keyframe).
        max_streams: live streams whose thumbnails are kept.
        max_recorded: recorded pictures kept (and as many found keyframes).
        threads: decodes and file reads at once.
        timeout: seconds a request waits for a decode before :class:`ThumbnailBusy`.
        decode: the blocking decoder (``keyframe_jpeg``; tests count calls with their own).
        find: the blocking keyframe finder of recordings (``recorded_keyframe``).

    :attr:`decodes` counts the decodes started.
    """

    def __init__(
        self,
        *,
        max_sizes: int = 4,
        max_streams: int = 256,
        max_recorded: int = 64,
        threads: int = 2,
        timeout: float = 10.0,
        decode: Callable[[str, bytes | None, bytes, int], Thumbnail] | None = None,
        find: Callable[[str, float], RecordedKeyframe] | None = None,
    ) -> None:
        if max_sizes < 1 or max_streams < 1 or max_recorded < 1 or threads < 1 or not timeout > 0:
            raise ValueError("Thumbnails limits must be positive")
        self.max_sizes = max_sizes
        self.max_streams = max_streams
        self.max_recorded = max_recorded
        self.timeout = timeout
        self.limiter = trio.CapacityLimiter(threads)
        """The worker threads' turns (shared by decodes and file reads)."""
        self.decodes = 0
        """Decodes started (live and recorded)."""
        self._decode = decode
        self._find = find
        self._live: collections.OrderedDict[StreamKey, _Live] = collections.OrderedDict()
        self._recorded: collections.OrderedDict[tuple[str, float], dict[int, _Flight[Picture]]] = (
            collections.OrderedDict()
        )
        self._found: collections.OrderedDict[tuple[str, float], _Flight[RecordedKeyframe]] = collections.OrderedDict()

    name = "thumbnails"

    def install_routes(self, router: Router) -> None:
        """``thumbnail.jpg`` and ``playback.jpg`` (see :mod:`.thumbnail_routes`)."""
        thumbnail_routes.install(router, self)

    # --- live ------------------------------------------------------------------------------

    async def live(self, key: StreamKey, gop: GopCache, width: int, *, starting: bool = False) -> Picture:
        """The thumbnail ``width`` pixels wide of the latest keyframe of stream ``key`` (whose
        GOP cache is ``gop``). Raises :class:`NoPicture` (with its status) or
        :class:`ThumbnailBusy`.

        A stream with no video frame yet is told apart by ``starting``: a stream that has just
        begun (its audio may come first) gets ``503`` (retry), one that has run for a while
        without video ``409``; one whose video config arrived is always ``503``."""
        check_width(width)
        entry = self._live.get(key)
        if entry is None:
            entry = self._live[key] = _Live()
            while len(self._live) > self.max_streams:
                self._live.popitem(last=False)
        else:
            self._live.move_to_end(key)
        found = latest_keyframe(gop)
        if found is None:
            stale = _nearest(entry.sizes, width, done_only=True)
            if stale is not None and stale.done.is_set() and stale.result is not None:
                return stale.result  # the GOP was dropped (over its caps): the last picture holds
            if gop.primary is None and not starting and not _has_video_config(gop):
                raise NoPicture(f"{key} has no video", 409)
            raise NoPicture(f"{key} has no keyframe yet; retry in a moment", 503)
        config, keyframe = found
        if keyframe.codec not in THUMBNAIL_CODECS:
            raise NoPicture(f"no thumbnails of {keyframe.codec[:20]} video (h264, hevc, av1 and vp9 only)", 409)
        if entry.keyframe is not keyframe:
            entry.keyframe = keyframe
            entry.sizes = {}
        flight = entry.sizes.get(width)
        if flight is None:
            if len(entry.sizes) >= self.max_sizes:
                nearest = _nearest(entry.sizes, width, done_only=False)
                assert nearest is not None
                flight = nearest
            else:
                flight = entry.sizes[width] = _Flight()
                extradata = config.payload if config is not None and keyframe.codec != "vp9" else None
                await self._fly(
                    flight,
                    lambda: _drop(entry.sizes, width, flight),
                    self._picture,
                    keyframe.codec,
                    extradata,
                    keyframe.payload,
                    width,
                    float(keyframe.pts),
                )
        return await flight.wait(self.timeout)

    def on_publish_ended(self, event: StreamUnpublished) -> None:
        """A publish session ended: its pictures and keyframe go (the next session's come new)."""
        self._live.pop(event.key, None)

    def __contains__(self, key: StreamKey) -> bool:
        """Whether stream ``key`` has live thumbnails cached."""
        return key in self._live

    def prune(self, alive: Callable[[StreamKey], bool]) -> None:
        """Drop the live thumbnails of every stream for which ``alive(key)`` is false (ended:
        their keyframes are not kept for nothing)."""
        for key in [key for key in self._live if not alive(key)]:
            del self._live[key]

    # --- recorded --------------------------------------------------------------------------

    async def recorded(self, path: str | os.PathLike[str], offset: float, width: int) -> Picture:
        """The thumbnail ``width`` pixels wide of the keyframe at or before ``offset`` seconds
        into the recorded file at ``path``. Raises :class:`NoPicture` or
        :class:`ThumbnailBusy`."""
        check_width(width)
        where = os.fspath(path)
        offset = max(0.0, round(offset, 3))
        found_key = (where, offset)
        finding = self._found.get(found_key)
        if finding is None:
            finding = self._found[found_key] = _Flight()
            _trim(self._found, self.max_recorded * 4)
            await self._fly(
                finding,
                lambda: _drop(self._found, found_key, finding),
                self._keyframe_of,
                where,
                offset,
                keep_errors=False,
            )
        else:
            self._found.move_to_end(found_key)
        keyframe = await finding.wait(self.timeout)
        picture_key = (where, keyframe.time)
        sizes = self._recorded.get(picture_key)
        if sizes is None:
            sizes = self._recorded[picture_key] = {}
            _trim(self._recorded, self.max_recorded)
        else:
            self._recorded.move_to_end(picture_key)
        flight = sizes.get(width)
        if flight is None:
            if len(sizes) >= self.max_sizes:
                nearest = _nearest(sizes, width, done_only=False)
                assert nearest is not None
                flight = nearest
            else:
                flight = sizes[width] = _Flight()
                await self._fly(
                    flight,
                    lambda: _drop(sizes, width, flight),
                    self._picture,
                    keyframe.codec,
                    keyframe.extradata,
                    keyframe.payload,
                    width,
                    keyframe.time,
                )
        return await flight.wait(self.timeout)

    # --- the work --------------------------------------------------------------------------

    async def _fly(
        self,
        flight: _Flight[Any],
        drop: Callable[[], object],
        work: Callable[..., Any],
        *args: Any,
        keep_errors: bool = True,
    ) -> None:
        """Run ``work(*args)`` in a worker thread for ``flight`` (in the task of the request
        that asked first) and settle it: its result, or its :class:`NoPicture` (remembered
        with the flight when ``keep_errors``, else the flight is dropped so the next request
        tries again).

        Once the thread runs the call cannot be cancelled (trio waits for it), so the flight
        always settles; a request cancelled while it waits for a thread's turn drops the flight
        (``drop``) and wakes its waiters with :class:`ThumbnailBusy`."""
        settled = False
        try:
            flight.result = await trio.to_thread.run_sync(work, *args, limiter=self.limiter)
            settled = True
        except NoPicture as exc:
            flight.error = exc
            settled = True
            if not keep_errors:
                drop()
        finally:
            if not settled:
                drop()
                flight.error = ThumbnailBusy()
            flight.done.set()

    def _picture(self, codec: str, extradata: bytes | None, payload: bytes, width: int, time: float) -> Picture:
        """In a worker thread: one decode."""
        self.decodes += 1  # one int add under the GIL: counted exactly
        decode = self._decode
        if decode is None:
            from arcly_trio.media.thumbnail import keyframe_jpeg

            decode = keyframe_jpeg
        made = decode(codec, extradata, payload, width)  # NoPicture (422) for an undecodable keyframe
        return Picture(made.jpeg, made.width, made.height, time)

    def _keyframe_of(self, path: str, offset: float) -> RecordedKeyframe:
        """In a worker thread: find a recorded keyframe."""
        find = self._find
        if find is None:
            from arcly_trio.media.thumbnail import recorded_keyframe

            find = recorded_keyframe
        try:
            return find(path, offset)
        except NoPicture as exc:
            raise NoPicture(str(exc), 404) from None


def _nearest(sizes: dict[int, _Flight[Picture]], width: int, *, done_only: bool) -> _Flight[Picture] | None:
    """The flight of the width nearest to ``width`` (a settled one with a picture if
    ``done_only``)."""
    best: _Flight[Picture] | None = None
    distance = math.inf
    for size, flight in sizes.items():
        if done_only and flight.result is None:
            continue
        if abs(size - width) < distance:
            best, distance = flight, abs(size - width)
    return best


def _has_video_config(gop: GopCache) -> bool:
    return any(frame.kind is FrameKind.VIDEO for _, frame in gop.configs())


def _drop(cache: dict[Any, Any], key: Any, flight: _Flight[Any]) -> None:
    """Forget ``flight`` under ``key`` (if it is still the one there)."""
    if cache.get(key) is flight:
        del cache[key]


def _trim(cache: collections.OrderedDict[Any, Any], limit: int) -> None:
    while len(cache) > limit:
        cache.popitem(last=False)
