"""HLS packaging: one packager per stream, however many viewers, into a :class:`Storage`.

:class:`HlsService` is a kernel :class:`~arcly_trio.kernel.engine.StreamService`: register it
with ``EngineBuilder.service`` and the engine feeds it every frame of every stream of the
applications it applies to (``AppSpec.hls``, or all of them with ``all_apps=True``). Each
application is packaged in one *variant* (``AppSpec.hls_variant``, else the service's
``variant``):

* ``ts``: MPEG-TS segments (:mod:`arcly_trio.media.ts_segments`), which take the audio bridge's
  AAC of an Opus stream (bridged frames, :mod:`arcly_trio.kernel.fanout`; the bridge runs while
  such a packaging needs it: :mod:`.audio_bridge`); tracks MPEG-TS cannot carry (AV1,
  VP9, Opus...) are left out, with one warning logged per stream (once media flows; a track
  that joins later gets its own line) and the API saying so; a stream with nothing it can carry
  has no HLS, and its requests are answered with the reason (:meth:`HlsService.unavailable`)
  (:mod:`._hls_ts`);
* ``fmp4``: fragmented MP4 (CMAF) segments of every codec, a multivariant playlist with a video
  and an audio rendition, ``#EXT-X-MAP``, version 7, and DASH (``index.mpd``) from the same
  segments (:mod:`._hls_cmaf`);
* ``ll``: the same, as Low-Latency HLS: parts, preload hints, blocking playlist reload,
  rendition reports (the default).

With ``AppSpec.hls_muxed`` the ``fmp4`` and ``ll`` variants package one rendition whose parts
and segments carry both tracks (``video.m3u8``, its init segment with both), no alternative
audio rendition and no DASH: an LL-HLS player then makes one blocking reload and one part
request per part instead of two of each.

Under ``{app}/{stream}/`` in its storage it writes ``index.m3u8`` (the TS media playlist, or
the multivariant playlist), and for CMAF ``video.m3u8``, ``audio.m3u8`` and ``index.mpd``; the
segments (and parts and init segments) are named with a token that is new for each stream, so a
stream that comes back under the same name never reuses a name a player may have cached.

A resource is stored before the playlist that lists it. One that leaves every list is deleted
``delete_delay`` seconds later (at least three target durations for parts, as RFC 8216bis
asks), never while a stored playlist lists it. A new publish session (takeover, reconnect, as the
kernel announces it: :attr:`~arcly_trio.kernel.subscription.Subscription.session`) or a
timestamp jump starts a new timeline with ``EXT-X-DISCONTINUITY`` (a new DASH period). When the
stream ends the playlists get ``EXT-X-ENDLIST`` (the MPD becomes ``static``); ``delete_delay``
seconds later they and every resource are deleted (the playlists only if no newer stream of the
same name took them over meanwhile).

Memory: what one stream makes the service hold (listed segments and parts, init segments, and
what waits for its deletion) is counted in real bytes per stream (:class:`HeldBytes`) and capped
at ``max_bytes`` (``--hls-max-mib``): past it, the stream's resources that no list names any
more are deleted at once instead of after their delay, then its oldest listed segments (with
their parts) stop being listed and are deleted, newest kept; segments are cut at a quarter of
the cap even without a keyframe. The first time for a stream it is logged; every early deletion
is counted (:attr:`HlsService.dropped_early`). So the memory (or disk) a stream's HLS and DASH
take is bounded by configuration, not by how fast its publisher sends.

DVR: an application with ``AppSpec.dvr_window`` (``--dvr-window``) keeps that many seconds of
its streams listed (:meth:`HlsService.window_for`), so players seek back and return to live; its
complete segments go to disk (the storage itself when it is on disk, else ``dvr_storage`` or a
temporary directory of the service's own: :class:`._hls_dvr.DvrStorage`) and are counted apart
from the memory cap; the older segments' playlist text is kept, and each media playlist is cut
where players' queries go once per render, so that neither a render nor a request costs a pass
over the whole window (:mod:`._hls_dvr`).

Deletions are run by :meth:`HlsService.run`, a small janitor task the engine starts (see
:mod:`arcly_trio.kernel.service`); without it, stream tasks run the deletions that fall due while
they are alive, and the final clean-up of ended streams waits for a janitor. The HTTP routes
(:mod:`.hls_routes`) come with the service: :meth:`HlsService.install_routes`; they answer
blocking playlist reloads from :attr:`HlsService.live`, one condition per stream, hold a request
for a starting stream's first list on the service's one condition (:meth:`HlsService.list_state`,
:meth:`HlsService.wait_lists`: each packaging records the lists a player can start from, and an
earlier stream's final lists still in storage are never served as a live stream's), and keep
players' sessions (:attr:`HlsService.session_timeout`).

Error policy: nothing here ever ends a stream. A frame the packager rejects (malformed codec
bytes) is dropped and counted in ``bad_frames``; a publisher whose keyframes are further apart
than the segments is warned about once per stream; a storage failure is logged and counted in
``storage_errors`` and packaging goes on; a stream whose name cannot be a storage key is not
packaged (logged once). Invalid settings raise ``LocalProtocolError`` or ``ValueError``.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import shutil
import tempfile
import time
from collections.abc import Iterable, Sequence
from typing import Any, Final

import attrs
import trio

from arcly_trio.core.errors import LocalProtocolError, RemoteProtocolError
from arcly_trio.core.keys import StreamKey
from arcly_trio.core.text import printable
from arcly_trio.kernel.events import ServiceEvent
from arcly_trio.kernel.fanout import EndReason
from arcly_trio.kernel.pacing import Pacer
from arcly_trio.kernel.spec import AppSpec
from arcly_trio.kernel.stream import Stream
from arcly_trio.kernel.subscription import Subscription
from arcly_trio.media import fmp4, mpegts
from arcly_trio.media.ts_segments import HlsSegmenter
from arcly_trio.protocols.http.router import Router
from arcly_trio.services import _hls_lane, hls_routes
from arcly_trio.services._hls_base import Packaging
from arcly_trio.services._hls_cmaf import CmafPackaging
from arcly_trio.services._hls_dvr import DvrKeys, DvrStorage, dvr_window_segments
from arcly_trio.services._hls_held import HeldBytes
from arcly_trio.services._hls_lists import ListState
from arcly_trio.services._hls_ts import TsPackaging
from arcly_trio.storage import FileStorage, InvalidStorageKey, MemoryStorage, Storage, StorageError, check_key

__all__ = ["HlsService", "HlsSegmentEvent", "ListState", "VARIANTS"]

log = logging.getLogger("arcly_trio.hls")

PLAYLIST = "index.m3u8"
_SEGMENT_BYTES = 64 * 1024 * 1024  # the packagers' own cut of an oversized segment
#: The HLS variants: MPEG-TS, fragmented MP4, Low-Latency HLS on fragmented MP4.
VARIANTS: Final = ("ts", "fmp4", "ll")
_CARRIES: Final = {
    "ts": mpegts.SUPPORTED_VIDEO_CODECS | mpegts.SUPPORTED_AUDIO_CODECS,
    "fmp4": fmp4.SUPPORTED_CODECS,
    "ll": fmp4.SUPPORTED_CODECS,
}


@attrs.frozen(slots=True)
class HlsSegmentEvent(ServiceEvent):
    """A segment was completed and listed (``what`` is ``"segment"``): the observers' view of
    packaging (the metrics' segment histogram). ``rendition`` is ``"video"``/``"audio"`` for
    the CMAF variants, ``"av"`` for MPEG-TS."""

    variant: str = ""
    rendition: str = ""
    duration: float = 0.0
    size: int = 0


_CODEC_NAMES: Final = {
    "h264": "H.264",
    "hevc": "HEVC",
    "av1": "AV1",
    "vp9": "VP9",
    "vp8": "VP8",
    "aac": "AAC",
    "opus": "Opus",
    "mp3": "MP3",
}


def _describe(left_out: str) -> str:
    """``"av1 video"`` -> ``"video is AV1"``; ``"video track 1"`` stays as it is."""
    words = left_out.split()
    if len(words) == 2:
        return f"{words[1]} is {_CODEC_NAMES.get(words[0], words[0])}"
    return left_out


class HlsService:
    """Packages streams as HLS (and DASH) into ``storage`` (a :class:`MemoryStorage` by default).

    Args:
        storage: where playlists and segments go.
        variant: ``"ll"`` (default), ``"fmp4"`` or ``"ts"`` for the applications whose
            ``AppSpec.hls_variant`` does not say.
        target_duration: the shortest segment in seconds (cut on the next keyframe after it).
        part_duration: the longest LL-HLS part in seconds (``PART-TARGET``; 0.05 to
            ``target_duration``).
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
        max_bytes: the most bytes one stream's packaging may hold in storage (see the module
            docstring); ``None``: no cap (the window and the publisher's rate bound it).
        locate: a playlist request for a stream that is not here asks the engine's stream
            sources for it (:meth:`~arcly_trio.kernel.engine.Engine.locate`: a pull on
            demand; each request keeps it alive). Off for workers sharing a storage.
        session_timeout: seconds without a request after which an HLS or DASH player's
            session ends (see :mod:`.hls_routes`); default three target durations (of the
            stream's playlist when its segments are longer: :meth:`session_timeout_for`), at
            least 6.
        first_list_timeout: seconds a playlist or MPD request for a live stream whose
            packaging has not stored that list yet waits for it (a stream that is starting,
            or being pulled) before it is answered ``503``; default three target durations,
            at least 10 (a long GOP makes the first segment late).
        dvr_storage: where the segments of the applications with a DVR window
            (``AppSpec.dvr_window``) go when ``storage`` is in memory; default: a temporary
            directory of the service's own, made when the first such stream starts and removed
            when the janitor (:meth:`run`) ends (see :mod:`._hls_dvr`).
    """

    name = "hls"
    play_protocols = ("hls", "dash")
    """The protocols of this service's players (for the metrics' series at 0)."""

    def __init__(
        self,
        storage: Storage | None = None,
        *,
        variant: str = "ll",
        target_duration: float = 2.0,
        part_duration: float = 1 / 3,
        window: int = 6,
        delete_delay: float | None = None,
        all_apps: bool = False,
        capacity: int = 2048,
        linger: float | None = None,
        skip_protocols: Iterable[str] = (),
        locate: bool = True,
        max_bytes: int | None = None,
        session_timeout: float | None = None,
        first_list_timeout: float | None = None,
        dvr_storage: Storage | None = None,
    ) -> None:
        HlsSegmenter(target_duration, window)  # validates both (LocalProtocolError)
        if variant not in VARIANTS:
            raise LocalProtocolError(f"HLS variant {variant!r} is not one of {', '.join(VARIANTS)}")
        if not 0.05 <= part_duration <= target_duration:
            raise LocalProtocolError(f"part_duration must be from 0.05 s to target_duration, not {part_duration}")
        if delete_delay is not None and delete_delay < 0:
            raise ValueError("delete_delay must be >= 0")
        if max_bytes is not None and max_bytes < 1024 * 1024:
            raise ValueError("max_bytes must be at least 1 MiB (or None)")
        if session_timeout is not None and not 0 < session_timeout < math.inf:
            raise ValueError("session_timeout must be > 0 (or None)")
        if first_list_timeout is not None and not 0 <= first_list_timeout < math.inf:
            raise ValueError("first_list_timeout must be >= 0 (or None)")
        self.storage: Storage = storage if storage is not None else MemoryStorage()
        self.variant = variant
        self.target_duration = target_duration
        self.part_duration = part_duration
        self.window = window
        self.delete_delay = window * target_duration if delete_delay is None else delete_delay
        self.all_apps = all_apps
        self.capacity = capacity
        self.linger = target_duration if linger is None else linger
        self.skip_protocols = frozenset(skip_protocols)
        self.locate = locate
        self.session_timeout = max(3 * target_duration, 6.0) if session_timeout is None else session_timeout
        """Seconds without a request that end an HLS or DASH player's session (at least three
        of a stream's longest segments unless given: :meth:`session_timeout_for`)."""
        self._session_timeout_given = session_timeout is not None
        self.first_list_timeout = (max(3 * target_duration, 10.0) if first_list_timeout is None
                                   else first_list_timeout)  # fmt: skip
        """Seconds a request waits for the first list of a stream that is starting."""
        self._lists_changed = trio.Event()
        self.bad_frames = 0
        """Frames the packagers rejected (malformed codec bytes), over all streams."""
        self.storage_errors = 0
        """Failed storage operations, over all streams."""
        self.max_bytes = max_bytes
        self.max_segment_bytes = min(_SEGMENT_BYTES, max_bytes // 4) if max_bytes is not None else _SEGMENT_BYTES
        """A segment is cut at this size even without a keyframe (a quarter of the byte cap)."""
        self.dropped_early = 0
        """Resources deleted before their time because their stream held more than
        ``max_bytes``, over all streams."""
        self.streams: dict[str, Packaging] = {}
        """The packaging of each stream being packaged, by ``"app/stream"``."""
        self.live: dict[str, Any] = {}
        """The live state of each stream packaged as CMAF (:class:`._hls_cmaf.LiveCmaf`), by
        ``"app/stream"``: what the routes answer blocking reloads from."""
        self._variants: dict[str, str] = {}
        self._muxed: set[str] = set()  # the applications whose streams were last packaged muxed
        self._owners: dict[str, str] = {}
        self._tokens = itertools.count(1)
        self._due: list[tuple[float, int, tuple[str, ...], str | None, str | None, HeldBytes | None]] = []
        self._order = itertools.count()
        self._wake = trio.Event()
        self._janitors = 0
        self._dvr_keys = DvrKeys()
        self._dvr_disk = dvr_storage
        self._dvr_temporary: str | None = None

    # ------------------------------------------------------------------------- lookups

    def applies_to(self, spec: AppSpec) -> bool:
        return self.all_apps or spec.uses(self.name)

    def variant_for(self, spec: AppSpec) -> str:
        """The variant the streams of ``spec``'s application are packaged in."""
        return spec.hls_variant or self.variant

    def app_variant(self, app: str) -> str:
        """The variant of application ``app`` (the service's default until one of its streams
        was packaged)."""
        return self._variants.get(app, self.variant)

    @staticmethod
    def playlist_key(app: str, stream: str, name: str = PLAYLIST) -> str:
        """The storage key of a stream's playlist (``InvalidStorageKey`` if it cannot be one)."""
        return check_key(f"{app}/{stream}/{name}")

    @staticmethod
    def segment_key(app: str, stream: str, name: str) -> str:
        """The storage key of one of a stream's segments (``InvalidStorageKey`` if invalid)."""
        return check_key(f"{app}/{stream}/{name}")

    def packages(self, stream: Stream) -> bool:
        """Whether this service packages ``stream`` (its application's, its publisher's
        protocol, its name)."""
        if not self.applies_to(stream.spec) or stream.info.protocol in self.skip_protocols:
            return False
        try:
            self.playlist_key(stream.key.app, stream.key.name)
        except InvalidStorageKey:
            return False
        return True

    def list_state(self, stream: Stream | None, name: str) -> ListState:
        """Whether a request for the list ``name`` (``index.m3u8``, ``video.m3u8``,
        ``audio.m3u8``, ``index.mpd``) of ``stream``, the live stream of its key (``None``:
        none), is answered from the storage now (``READY``: stored by the stream's packaging, or
        the stream is not packaged here: an ended stream's final list, or nothing), waits for it
        (``WAIT``: the stream's packaging has not stored it yet but will) or finds nothing
        (``NONE``: its packaging will not make it, such as an MPD of the ``ts`` variant). While
        a stream is packaged here, what the storage holds under a name its packaging has not
        stored is an earlier stream's (a final list, ``#EXT-X-ENDLIST``), never served as this
        one's."""
        if stream is None or not self.packages(stream):
            return ListState.READY
        packaging = self.streams.get(f"{stream.key.app}/{stream.key.name}")
        if packaging is None or packaging.stream is not stream:
            return ListState.WAIT  # its packaging has not started yet
        if name in packaging.lists:
            return ListState.READY
        return ListState.WAIT if packaging.expects(name) else ListState.NONE

    def session_timeout_for(self, key: StreamKey) -> float:
        """Seconds without a request that end a session playing ``key``: the ``session_timeout``
        given, else the default or three of the stream's longest segments if that is longer (a
        stream whose keyframes are further apart than the target duration has longer segments,
        and players reload its playlist less often)."""
        if self._session_timeout_given:
            return self.session_timeout
        packaging = self.streams.get(f"{key.app}/{key.name}")
        longest = packaging.playlist_target_duration if packaging is not None else 0
        return max(self.session_timeout, 3.0 * longest)

    def lists_changed(self) -> None:
        """A packaging started or ended, or stored a list it had not stored before: wake the
        requests waiting for a first list (:meth:`wait_lists`)."""
        changed, self._lists_changed = self._lists_changed, trio.Event()
        changed.set()

    async def wait_lists(self, deadline: float) -> bool:
        """Wait for the next :meth:`lists_changed`; ``False`` if ``deadline`` came first."""
        with trio.move_on_at(deadline):
            await self._lists_changed.wait()
            return True
        return False

    @property
    def pending_deletions(self) -> int:
        return len(self._due)

    @property
    def part_delete_delay(self) -> float:
        """How long a part is kept once it is no longer listed (RFC 8216bis: three target
        durations at least)."""
        return max(self.delete_delay, 3 * self.target_duration)

    # ---------------------------------------------------------------------- packaging

    async def serve_stream(self, stream: Stream, subscription: Subscription) -> None:
        """Package ``stream`` until ``subscription`` ends (run by the engine)."""
        if stream.info.protocol in self.skip_protocols:
            return
        app, name = stream.key.app, stream.key.name
        try:
            self.playlist_key(app, name)
        except InvalidStorageKey as exc:
            log.warning("HLS not packaged for %s: %s", stream.key, exc)
            return
        base = f"{app}/{name}"
        token = f"{int(time.time()):x}{next(self._tokens):x}"
        self._owners[base] = token
        variant = self.variant_for(stream.spec)
        self._variants[app] = variant
        muxed = stream.spec.hls_muxed and variant != "ts"
        (self._muxed.add if muxed else self._muxed.discard)(app)
        window = self.window_for(stream.spec)
        if window != self.window:
            self._dvr_keys.tokens.add(token)
            self._dvr_storage()
        packaging: Packaging
        if variant == "ts":
            packaging = TsPackaging(self, stream.key, token, window=window)
            subscription.bridged_audio = True  # MPEG-TS gets the audio bridge's AAC of an Opus stream
        else:
            packaging = CmafPackaging(self, stream.key, token, low_latency=variant == "ll", window=window, muxed=muxed)
        packaging.stream = stream
        self.streams[base] = packaging
        self.lists_changed()
        log.info(
            "HLS (%s%s) packaging %s (segments of %g s, window %d%s)",
            variant,
            ", muxed" if muxed else "",
            stream.key,
            self.target_duration,
            window,
            f", DVR of {stream.spec.dvr_window:g} s" if window != self.window else "",
        )
        try:
            await self._package(stream, subscription, packaging)
            log.info(
                "HLS of %s ended (%s)",
                stream.key,
                subscription.end_reason.value if subscription.end_reason else "ended",
            )
            if subscription.end_reason is EndReason.SHUTDOWN and self.linger:
                # The server is stopping: give players a moment to read the final playlist
                # (#EXT-X-ENDLIST) so they end cleanly; the engine's shutdown waits for this
                # task within its grace.
                await trio.sleep(self.linger)
        finally:
            if self.streams.get(base) is packaging:
                del self.streams[base]
            self.lists_changed()
            # Schedule the clean-up (synchronous, so it happens even when cancelled).
            due = trio.current_time() + self.delete_delay
            leftovers = packaging.leftovers()
            playlists = tuple(key for key in leftovers if key.endswith((".m3u8", ".mpd")))
            self._schedule(due, playlists, base, token)
            self._schedule(due, tuple(key for key in leftovers if key not in playlists), held=packaging.held)

    def window_for(self, spec: AppSpec) -> int:
        """How many segments the playlists of ``spec``'s streams list: the service's window, or
        the DVR window's segments (``AppSpec.dvr_window``, see :mod:`._hls_dvr`)."""
        return dvr_window_segments(spec.dvr_window, self.target_duration, self.window)

    def _dvr_storage(self) -> None:
        """Make sure DVR segments go to disk: wrap an in-memory storage (once)."""
        if isinstance(self.storage, DvrStorage) or not isinstance(self.storage, MemoryStorage):
            return  # wrapped already, or the storage is on disk already
        if self._dvr_disk is None:
            self._dvr_temporary = tempfile.mkdtemp(prefix="arcly-dvr-")
            self._dvr_disk = FileStorage(self._dvr_temporary)
            log.info("HLS DVR segments are kept in %s", self._dvr_temporary)
        self.storage = DvrStorage(self.storage, self._dvr_disk, self._dvr_keys)

    async def _package(self, stream: Stream, subscription: Subscription, packaging: Packaging) -> None:
        session = subscription.session
        pacer = Pacer()
        bad_logged = False
        reported: set[str] = set()  # what was logged as left out
        warned_keyframes = False
        try:
            while True:
                batch = await subscription.next_batch(512)
                if not batch:
                    break
                events: list[object] = []
                if subscription.session is not session:  # a batch holds one session's frames
                    if session is not None:
                        events += packaging.discontinuity()
                    session = subscription.session
                for frame in batch:
                    try:
                        events += packaging.push(frame)
                        if not frame.config and len(packaging.left_out) > len(reported):
                            # Once media flows (the configs of every track are in by then): one
                            # line for what is left out, another only for a track that joins later.
                            new = sorted(set(packaging.left_out) - reported)
                            reported.update(new)
                            log.warning(
                                "HLS (%s) of %s cannot carry %s: %s",
                                self.app_variant(stream.key.app),
                                stream.key,
                                printable(", ".join(new)),
                                printable(self._left_out_advice(stream.key, packaging), 400),
                            )
                        if not warned_keyframes and packaging.keyframeless_cuts:
                            warned_keyframes = True
                            log.warning(
                                "HLS of %s: the publisher's keyframes are further apart than the %g s "
                                "segments, so some segments start without one (players that join wait "
                                "for the next keyframe); set the encoder's keyframe interval to %g s or "
                                "less (ffmpeg -g, OBS 'Keyframe Interval')",
                                stream.key,
                                self.target_duration,
                                self.target_duration,
                            )
                        await pacer.spend(len(frame.payload))
                    except RemoteProtocolError as exc:
                        self.bad_frames += 1
                        if not bad_logged:
                            bad_logged = True
                            log.warning("HLS of %s: dropping a malformed %s frame: %s", stream.key, frame.codec, exc)
                await self._apply(stream, packaging, events)
                self._report_segments(stream, packaging)
                if not self._janitors:
                    await self._run_due()
            await self._apply(stream, packaging, packaging.finish())
            self._report_segments(stream, packaging)
        finally:
            await packaging.ended()

    async def _apply(self, stream: Stream, packaging: Packaging, events: Sequence[object]) -> None:
        await packaging.apply(events)
        if self.max_bytes is not None and packaging.held.total > self.max_bytes:
            await self._trim(stream.key, packaging, self.max_bytes)

    async def _trim(self, key: StreamKey, packaging: Packaging, cap: int) -> None:
        """Bring what ``packaging`` holds under ``cap``: first delete at once what no list
        names any more, then stop listing its oldest segments (lists stored first) and delete
        them, until one is left."""
        held = packaging.held
        before = held.dropped
        while held.total > cap:
            if held.leaving:
                await self._delete(next(iter(held.leaving)), held)
                held.dropped += 1
                self.dropped_early += 1
            elif held.disk or not await packaging.drop_oldest():
                break  # a DVR stream's segments are on disk: dropping them frees no memory
        if held.dropped != before and not before:
            log.warning(
                "HLS of %s holds more than its cap of %.0f MiB: its oldest segments and parts are "
                "deleted early from now on (counted; players that lag see fewer segments)",
                key,
                cap / (1024 * 1024),
            )

    def _report_segments(self, stream: Stream, packaging: Packaging) -> None:
        """Tell the observers (and the event feed) of each segment completed."""
        variant = self.app_variant(stream.key.app)
        for rendition, duration, size in packaging.take_segments():
            stream.notify(
                HlsSegmentEvent(
                    stream.key,
                    trio.current_time(),
                    self.name,
                    "segment",
                    f"{rendition} {duration:.3f} s",
                    variant,
                    rendition,
                    duration,
                    size,
                )
            )

    async def store(self, key: str, data: bytes, held: HeldBytes | None = None) -> None:
        """Store ``data`` under ``key`` (counted in ``held``); a failure is logged and counted,
        never raised."""
        try:
            await self.storage.put(key, data)
        except StorageError as exc:
            self._storage_failed("write", key, exc)
            return
        if held is not None:
            held.stored(key, len(data), on_disk=self._dvr_keys.on_disk(key))

    async def _delete(self, key: str, held: HeldBytes | None) -> None:
        try:
            await self.storage.delete(key)
        except StorageError as exc:
            self._storage_failed("delete", key, exc)
        if held is not None:
            held.deleted(key)

    def _storage_failed(self, what: str, key: str, exc: StorageError) -> None:
        self.storage_errors += 1
        count = self.storage_errors
        if count == 1 or count % 100 == 0:
            log.error("HLS storage failed to %s %s (%d failures so far): %s", what, key, count, exc)

    # ---------------------------------------------------------------------- deletions

    def expire(self, key: str, delay: float | None = None, held: HeldBytes | None = None) -> None:
        """Delete ``key`` after ``delay`` seconds (default ``delete_delay``); until then it is
        held, and leaving, in ``held``."""
        if held is not None:
            held.expiring(key)
        self._schedule(trio.current_time() + (self.delete_delay if delay is None else delay), (key,), held=held)

    def _schedule(
        self,
        due: float,
        keys: tuple[str, ...],
        owner: str | None = None,
        token: str | None = None,
        held: HeldBytes | None = None,
    ) -> None:
        if keys:
            heapq.heappush(self._due, (due, next(self._order), keys, owner, token, held))
            self._wake.set()

    async def _run_due(self) -> None:
        now = trio.current_time()
        due = self._due
        while due and due[0][0] <= now:
            _, _, keys, owner, token, held = heapq.heappop(due)
            if owner is not None:
                if self._owners.get(owner) != token:
                    continue  # a newer stream of the same name owns the playlists now
                del self._owners[owner]
            for key in keys:
                if held is not None and not held.holds(key):
                    continue  # deleted early already (the byte cap)
                await self._delete(key, held)

    def install_routes(self, router: Router) -> None:
        """Serve the playlists, segments and MPDs over HTTP (see :mod:`.hls_routes`)."""
        hls_routes.install(self, router, _hls_lane.answerers(self))

    def stream_urls(self, key: StreamKey) -> dict[str, str]:
        """The stream's HLS (and, for the CMAF variants, DASH) paths; none while the stream is
        packaged but none of its tracks can be carried (see :meth:`unavailable`)."""
        if self.unavailable(key) is not None:
            return {}
        urls = {"hls": f"/{key.app}/{key.name}/{PLAYLIST}"}
        if self.app_variant(key.app) != "ts" and key.app not in self._muxed:
            urls["dash"] = f"/{key.app}/{key.name}/index.mpd"
        return urls

    def unavailable(self, key: StreamKey) -> str | None:
        """Why the stream being packaged has no HLS at all, in words for the people who asked
        (the HTTP answer, the API, the status page), or ``None``: its variant carries none of
        its tracks (AV1/VP9 with Opus in MPEG-TS...)."""
        packaging = self.streams.get(f"{key.app}/{key.name}")
        if packaging is None or packaging.carried or not packaging.left_out:
            return None
        variant = self.app_variant(key.app)
        container = "MPEG-TS HLS" if variant == "ts" else "fMP4 HLS"
        what = " and ".join(_describe(kind) for kind in sorted(packaging.left_out))
        return (
            f"{key}'s {what}, which {container} (the {variant!r} variant of application {key.app!r}) cannot "
            f"carry; {self._left_out_advice(key, packaging)}"
        )

    def _left_out_advice(self, key: StreamKey, packaging: Packaging) -> str:
        """What a viewer or operator can do about the tracks the variant leaves out."""
        variant = self.app_variant(key.app)
        base = f"/{key.app}/{key.name}"
        others = f"play it over HTTP-FLV ({base}.flv), WebSocket-FLV or the frame API ({base}/frames)"
        if variant == "ts" and any(t.split()[0] in fmp4.SUPPORTED_CODECS for t in packaging.left_out):
            others += ", or package the application as fmp4 or ll (--hls-variant ll), which also serves DASH"
        if packaging.carried:
            return f"HLS players get {', '.join(sorted(packaging.carried))} only; {others}"
        return others

    def stream_status(self, key: StreamKey) -> dict[str, object]:
        """What the HLS of ``key`` carries, for ``/api/streams``: never a silent drop. Also what
        each variant would carry of the stream's tracks (``by_variant``)."""
        packaging = self.streams.get(f"{key.app}/{key.name}")
        if packaging is None:
            return {}
        seen = packaging.carried | set(packaging.left_out)
        by_variant = {}
        for variant, codecs in _CARRIES.items():
            carries = sorted(t for t in seen if t.split()[0] in codecs and "track" not in t)
            by_variant[variant] = {"carries": carries, "leaves_out": sorted(seen - set(carries))}
        return {
            "hls_tracks": {
                "variant": self.app_variant(key.app),
                "carried": sorted(packaging.carried),
                "left_out": sorted(packaging.left_out),
                "by_variant": by_variant,
                "held_bytes": packaging.held.total,
                "dvr_window": packaging.stream.spec.dvr_window if packaging.stream is not None else 0.0,
                "dvr_bytes": packaging.held.disk_total,
                "dropped_early": packaging.held.dropped,
                "unavailable": self.unavailable(key),
            }
        }

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
            if not self._janitors and self._dvr_temporary is not None:
                shutil.rmtree(self._dvr_temporary, ignore_errors=True)  # the DVR's own directory
                self._dvr_temporary = None
