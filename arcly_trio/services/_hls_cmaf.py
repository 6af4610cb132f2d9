"""The ``fmp4`` and ``ll`` variants of the HLS service (and DASH): CMAF, packaged once per stream.

:class:`CmafPackaging` adapts a :class:`~arcly_trio.media.cmaf.CmafPackager` to the service's
packaging loop (:meth:`arcly_trio.services.hls.HlsService.serve_stream`, seen through
:class:`~._hls_base.PackagingHost`). Under
``{app}/{stream}/`` it stores the init segments, parts and segments the packager makes (before
any list names them), then the lists, rendered once per change: ``video.m3u8`` and
``audio.m3u8`` (:func:`~arcly_trio.media.llhls.media_playlist`, LL-HLS tags in the ``ll``
variant; with a DVR window in the ``ll`` variant also each one's Playlist Delta Update, stored
as ``video.delta.m3u8``, see :func:`delta_name`), ``index.m3u8`` (the multivariant playlist) and ``index.mpd``
(:func:`~arcly_trio.media.dash.render_mpd`). With ``muxed`` (``AppSpec.hls_muxed``) the packager
makes one rendition of both tracks: it stores ``video.m3u8`` (``audio.m3u8`` for an audio-only
stream) and ``index.m3u8`` only, and no MPD (DASH gets no muxed segments). Names that leave every
list are deleted after the service's :attr:`~arcly_trio.services.hls.HlsService.part_delete_delay`.

:class:`LiveCmaf` is what the routes read while the stream is packaged: the packager's model
and one condition per stream (:meth:`LiveCmaf.wait`), set each time the lists change, on which
every blocked playlist reload and preload-hinted part request of the stream waits, whatever
their number (no task per request). A change wakes them in turns of :data:`WAKE_TURN`, each
turn waking the next as it runs (a relay), so that the loop polls its sockets between turns:
thousands of held reloads answered at once would otherwise all run in one pass of trio's
scheduler, and every other connection (other streams' players) would wait for all of them
(1.4 s for 3000 reloads before this).

Error policy: :meth:`CmafPackaging.push` raises the packager's ``CodecError`` for malformed codec
bytes (the service drops the frame); storage failures are the service's to log and count.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import trio
from trio.lowlevel import ParkingLot

from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.core.keys import StreamKey
from arcly_trio.media import dash, llhls
from arcly_trio.media.cmaf import CmafPackager, PackagerEvent, ResourceExpired, ResourceReady
from arcly_trio.services._hls_dvr import QueryPieces
from arcly_trio.services._hls_held import HeldBytes

if TYPE_CHECKING:
    from arcly_trio.kernel.stream import Stream
    from arcly_trio.services._hls_base import PackagingHost

__all__ = ["CmafPackaging", "LiveCmaf", "delta_name"]

MASTER = "index.m3u8"
MPD = "index.mpd"
WAKE_TURN = 8
"""How many waiters of one change run in one pass of the scheduler (see the module docstring):
small enough that a pass stays a few milliseconds, large enough that the relay costs little."""


def delta_name(name: str) -> str:
    """Where a media playlist's delta update is stored (``video.m3u8``: ``video.delta.m3u8``);
    no route serves that name, only a ``_HLS_skip`` request for the playlist."""
    return name.removesuffix(".m3u8") + ".delta.m3u8"


class LiveCmaf:
    """The live state of one stream's CMAF packaging, for the routes (read-only to them).

    Attributes:
        packager: the stream's packager (its renditions, segments, parts, hints).
        low_latency: whether the stream is packaged as LL-HLS (blocking reloads answered).
        ended: the stream ended (its lists are final).
        waiting: requests waiting on this stream now.
        published: the packager's :attr:`~arcly_trio.media.cmaf.CmafPackager.version` whose
            lists are stored: while the packager is ahead of it (frames of a batch pushed,
            their lists not stored yet), requests wait for the next change, so an answer never
            comes from a stored list older than the model it was decided on.
    """

    def __init__(self, packager: CmafPackager, low_latency: bool) -> None:
        self.packager = packager
        self.low_latency = low_latency
        self.ended = False
        self.waiting = 0
        self.published = -1
        self._lot = ParkingLot()
        """The waiters of the next change (a new lot at each change: a relay wakes only the
        waiters of its own change, never one that came back for the next)."""

    @property
    def current(self) -> bool:
        """Whether the stored lists show what the packager holds."""
        return self.ended or self.published == self.packager.version

    def notify(self) -> None:
        """The lists changed: wake every request waiting on this stream (the first turn now,
        each woken one wakes one more: see the module docstring)."""
        lot, self._lot = self._lot, ParkingLot()
        lot.unpark(count=WAKE_TURN)

    async def wait(self, deadline: float) -> bool:
        """Wait for the next change of the lists; ``False`` if ``deadline`` came first."""
        if self.ended:
            return False
        self.waiting += 1
        lot = self._lot
        try:
            with trio.move_on_at(deadline):
                await lot.park()
                lot.unpark(count=1)  # the relay: the next waiter runs in the next pass
                return True
            return False
        finally:
            self.waiting -= 1


class CmafPackaging:
    """One stream packaged as CMAF for fMP4 HLS or LL-HLS, and DASH."""

    def __init__(self, service: PackagingHost, key: StreamKey, token: str, *, low_latency: bool,
                 window: int | None = None, muxed: bool = False) -> None:  # fmt: skip
        self.service = service
        self.base = f"{key.app}/{key.name}"
        self.packager = CmafPackager(service.target_duration, service.part_duration, window or service.window,
                                     name_prefix=f"{token}-", max_segment_bytes=service.max_segment_bytes,
                                     muxed=muxed)  # fmt: skip
        self.low_latency = low_latency
        self._memos: dict[str, llhls.SegmentMemo] | None = {} if window and window > service.window else None
        """A DVR window's playlists keep their older segments' text (:class:`~arcly_trio.media.llhls.SegmentMemo`)."""
        self._lines: dict[str, llhls.LineCache] = {}
        """Each playlist's (and delta update's) segment and part lines, formatted once
        (:class:`~arcly_trio.media.llhls.LineCache`), by name."""
        self.live = LiveCmaf(self.packager, low_latency)
        service.live[self.base] = self.live
        self.left_out = self.packager.left_out
        self.carried = self.packager.carried
        self._stored: set[str] = set()
        self.held = HeldBytes()
        """What this stream holds in the service's storage (the byte cap counts it)."""
        self._version = -1
        self._rendered: dict[str, str] = {}
        self._mpd_state: object = None
        self._master_state: tuple[object, ...] = ()
        self._reported: dict[str, int] = {}
        self.pieces: dict[str, QueryPieces] = {}
        """The playlists cut where a player's query goes, by name, once per render (see
        :class:`~._hls_dvr.QueryPieces`): every request carries a session id, so each answer is
        a join of these pieces, never a parse of the playlist."""
        self.stream: Stream | None = None
        self.lists: set[str] = set()
        """The lists stored that a player can start from (``video.m3u8``, ``audio.m3u8``,
        ``index.m3u8``, ``index.mpd``; see :meth:`_note_ready`)."""

    def push(self, frame: Frame) -> Sequence[PackagerEvent]:
        return self.packager.push(frame, time.time())

    def discontinuity(self) -> Sequence[PackagerEvent]:
        return self.packager.discontinuity()

    def finish(self) -> Sequence[PackagerEvent]:
        return self.packager.finish()

    async def apply(self, events: Sequence[object]) -> None:
        service = self.service
        for event in events:
            if isinstance(event, ResourceReady):
                key = f"{self.base}/{event.name}"
                self._stored.add(key)
                await service.store(key, event.data, self.held)
            elif isinstance(event, ResourceExpired):
                key = f"{self.base}/{event.name}"
                self._stored.discard(key)
                service.expire(key, service.part_delete_delay, self.held)
        if self.packager.version != self._version:
            self._version = self.packager.version
            await self._publish_lists()
            self.live.published = self._version
            self.live.notify()

    async def _publish_lists(self) -> None:
        packager = self.packager
        ready = False
        for kind, rendition in packager.playlists.items():
            if rendition.segments or (self.low_latency and rendition.open_parts):
                ready = True
                memo = None if self._memos is None else self._memos.setdefault(rendition.name, llhls.SegmentMemo())
                name = llhls.playlist_name(rendition)
                text = llhls.media_playlist(packager, kind, low_latency=self.low_latency, memo=memo,
                                            deltas=memo is not None, cache=self._line_cache(name))  # fmt: skip
                data = await self._put(name, text)
                if data is not None:
                    self.pieces.setdefault(name, QueryPieces()).cut(text, data, "" if memo is None else memo.run)
                if memo is not None and self.low_latency:  # a DVR window: its delta update too
                    name = delta_name(name)
                    text = llhls.media_playlist(packager, kind, low_latency=True, deltas=True, skip=True,
                                                cache=self._line_cache(name))  # fmt: skip
                    if (data := await self._put(name, text)) is not None:
                        self.pieces.setdefault(name, QueryPieces()).cut(text, data, "")
        if not ready:
            return
        # The multivariant playlist says what the renditions are (their objects: a new init
        # segment is a new one), their peak bitrates and whether segments start on keyframes:
        # rendered again only when one of these changed, not at every part.
        master_state = (packager.keyframe_aligned, *[(r, r.peak_bitrate) for r in packager.playlists.values()])
        if master_state != self._master_state:
            self._master_state = master_state
            master = llhls.multivariant_playlist(packager)
            if master is not None and (data := await self._put(MASTER, master)) is not None:
                self.pieces.setdefault(MASTER, QueryPieces()).cut(master, data, "")
        state = (packager.finished, tuple((r.init, len(r.segments), r.segments[-1].sequence if r.segments else None)
                                          for r in packager.renditions.values()))  # fmt: skip
        if state != self._mpd_state and not packager.muxed:  # a muxed packaging stores no DASH segments
            mpd = dash.render_mpd(packager, now=time.time())
            if mpd is not None:
                self._mpd_state = state
                await self._put(MPD, mpd, always=True)
        self._note_ready()

    def _line_cache(self, name: str) -> llhls.LineCache:
        cache = self._lines.get(name)
        if cache is None:
            cache = self._lines[name] = llhls.LineCache()
        return cache

    def _note_ready(self) -> None:
        """Add to :attr:`lists` what a player can now start from: a rendition's playlist once it
        lists a complete segment (players that know no parts, ffmpeg's, find nothing to play in
        a playlist of parts only: "Empty segment"), the multivariant playlist once its main
        rendition's is, the MPD once stored (it names complete segments only)."""
        ready = {llhls.playlist_name(r) for r in self.packager.playlists.values() if r.segments}
        renditions = self.packager.playlists
        main = renditions.get(FrameKind.VIDEO) or renditions.get(FrameKind.AUDIO)
        if main is not None and llhls.playlist_name(main) in ready and MASTER in self._rendered:
            ready.add(MASTER)
        if MPD in self._rendered:
            ready.add(MPD)
        if not ready <= self.lists:
            self.lists |= ready
            self.service.lists_changed()

    async def _put(self, name: str, text: str, *, always: bool = False) -> bytes | None:
        """Store the list ``name`` if it changed; its bytes (``None``: unchanged)."""
        if not always and self._rendered.get(name) == text:
            return None
        self._rendered[name] = text
        key = f"{self.base}/{name}"
        self._stored.add(key)
        data = text.encode()
        await self.service.store(key, data, self.held)
        return data

    @property
    def playlist_target_duration(self) -> int:
        return self.packager.playlist_target_duration

    def expects(self, name: str) -> bool:
        """Whether the list ``name``, not stored yet, may still come: the multivariant playlist
        and the MPD do, and a rendition's playlist while that rendition exists or the
        multivariant playlist (which names the renditions) has not been stored yet."""
        if name == MASTER or name == MPD and not self.packager.muxed:
            return True
        kinds = {llhls.playlist_name(rendition) for rendition in self.packager.playlists.values()}
        return name in kinds or MASTER not in self.lists

    async def ended(self) -> None:
        self.live.ended = True
        self.live.notify()
        if self.service.live.get(self.base) is self.live:
            del self.service.live[self.base]

    async def drop_oldest(self) -> bool:
        """Stop listing the oldest segment (the lists are stored again first); whether one was."""
        events = self.packager.drop_oldest()
        if events is None:
            return False
        await self.apply(events)
        return True

    @property
    def keyframeless_cuts(self) -> int:
        """Segments cut without a keyframe to start them (the publisher's GOP is too long)."""
        return self.packager.keyframeless_cuts

    def take_segments(self) -> list[tuple[str, float, int]]:
        """The segments completed since the last call: (rendition, seconds, bytes)."""
        done = []
        for rendition in self.packager.playlists.values():
            last = self._reported.get(rendition.name, -1)
            new = []
            for segment in reversed(rendition.segments):  # newest first: a DVR window lists thousands
                if segment.sequence <= last:
                    break
                if not segment.gap:
                    new.append((rendition.name, segment.duration, segment.size))
            done += reversed(new)
            if rendition.segments:
                self._reported[rendition.name] = max(last, rendition.segments[-1].sequence)
        return done

    def leftovers(self) -> list[str]:
        """Every key still stored for this stream (lists, init segments, segments, parts)."""
        return sorted(self._stored)
