"""The ``ts`` variant of the HLS service: MPEG-TS segments and one media playlist per stream.

:class:`TsPackaging` adapts an :class:`~arcly_trio.media.ts_segments.HlsSegmenter` to the service's
packaging loop (:meth:`arcly_trio.services.hls.HlsService.serve_stream`, seen through
:class:`~._hls_base.PackagingHost`): segments are stored
under ``{app}/{stream}/{token}-{sequence}.ts`` before the playlist ``index.m3u8`` that lists
them (each with its ``EXT-X-PROGRAM-DATE-TIME``, from the wall clock when its timeline began);
a segment that leaves the window is deleted after the service's ``delete_delay``.
:meth:`TsPackaging.entry_playlist` is the one-variant multivariant playlist a player is given
first, which names the media playlist with the player's session id (see :mod:`.hls_routes`).
MPEG-TS carries H.264, HEVC, AAC and MP3 of track 0; anything else is left out, counted in
``left_out`` (the service logs it once per stream and shows it in the API; when nothing is
carried, HLS requests are answered with the reason: :meth:`~arcly_trio.services.hls.HlsService.unavailable`).

Error policy: :meth:`TsPackaging.push` raises the segmenter's ``CodecError`` for malformed codec
bytes (the service drops the frame); storage failures are the service's to log and count.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from arcly_trio.core.frame import Frame
from arcly_trio.core.keys import StreamKey
from arcly_trio.media.ts_segments import HlsSegmenter, SegmentClosed, SegmentEvent, SegmentExpired
from arcly_trio.services._hls_dvr import QueryPieces, TsPlaylist
from arcly_trio.services._hls_held import HeldBytes

if TYPE_CHECKING:
    from arcly_trio.kernel.stream import Stream
    from arcly_trio.services._hls_base import PackagingHost

__all__ = ["TsPackaging", "PLAYLIST"]

PLAYLIST = "index.m3u8"


class TsPackaging:
    """One stream packaged as MPEG-TS HLS."""

    def __init__(self, service: PackagingHost, key: StreamKey, token: str, *, window: int | None = None) -> None:
        self.service = service
        self.base = f"{key.app}/{key.name}"
        self.segmenter = HlsSegmenter(service.target_duration, window or service.window,
                                      name_template=f"{token}-{{sequence}}.ts",
                                      max_segment_bytes=service.max_segment_bytes)  # fmt: skip
        self.left_out = self.segmenter.left_out
        self.carried = self.segmenter.carried
        self._done: list[tuple[str, float, int]] = []
        self.held = HeldBytes()
        """What this stream holds in the service's storage (the byte cap counts it)."""
        self._dvr = TsPlaylist() if window and window > service.window else None
        self.pieces: dict[str, QueryPieces] = {}
        """A DVR window's playlist cut where a player's query goes (see
        :class:`~._hls_dvr.QueryPieces`), once per segment; empty for other streams."""
        self.stream: Stream | None = None
        self.lists: set[str] = set()
        """The playlists stored so far (``index.m3u8`` once the first segment is listed)."""

    def push(self, frame: Frame) -> Sequence[SegmentEvent]:
        return self.segmenter.push(frame, time.time())

    def discontinuity(self) -> Sequence[SegmentEvent]:
        return self.segmenter.discontinuity()

    def finish(self) -> Sequence[SegmentEvent]:
        return self.segmenter.finish()

    async def apply(self, events: Sequence[object]) -> None:
        changed = False
        for event in events:
            if isinstance(event, SegmentClosed):
                changed = True
                await self.service.store(f"{self.base}/{event.name}", event.data, self.held)
                self._done.append(("av", event.duration, len(event.data)))
            elif isinstance(event, SegmentExpired):
                changed = True
                self.service.expire(f"{self.base}/{event.name}", held=self.held)
        if changed:
            if self._dvr is None:
                await self.service.store(f"{self.base}/index.m3u8", self.segmenter.playlist().encode(), self.held)
            else:  # a long window: each segment's lines rendered once, cut for players' queries
                data, pieces = self._dvr.render(self.segmenter)
                await self.service.store(f"{self.base}/index.m3u8", data, self.held)
                self.pieces.setdefault(PLAYLIST, QueryPieces()).keep(data, pieces)
            if PLAYLIST not in self.lists:
                self.lists.add(PLAYLIST)
                self.service.lists_changed()

    @property
    def playlist_target_duration(self) -> int:
        return self.segmenter.playlist_target_duration

    def expects(self, name: str) -> bool:
        """Whether the list ``name``, not stored yet, may still come: the media playlist does."""
        return name == PLAYLIST

    def entry_playlist(self, uri: str) -> str:
        """The multivariant playlist a player gets first (see :mod:`.hls_routes`): this
        stream's one variant, the media playlist at ``uri``, with the peak bitrate of its listed
        segments."""
        peak = 1
        for segment in self.segmenter.segments:
            key = f"{self.base}/{segment.name}"
            size = self.held.sizes.get(key) or self.held.disk.get(key, 0)
            if segment.duration > 0:
                peak = max(peak, math.ceil(size * 8 / segment.duration))
        return f"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-STREAM-INF:BANDWIDTH={peak}\n{uri}\n"

    async def ended(self) -> None:
        pass

    async def drop_oldest(self) -> bool:
        """Stop listing the oldest segment (the playlist is stored again first); whether one was."""
        events = self.segmenter.drop_oldest()
        if events is None:
            return False
        await self.apply(events)
        return True

    @property
    def keyframeless_cuts(self) -> int:
        """Segments cut without a keyframe to start them (the publisher's GOP is too long)."""
        return self.segmenter.keyframeless_cuts

    def take_segments(self) -> list[tuple[str, float, int]]:
        """The segments completed since the last call: (rendition, seconds, bytes)."""
        done, self._done = self._done, []
        return done

    def leftovers(self) -> list[str]:
        """Every key still stored for this stream: the playlist and the listed segments."""
        return [f"{self.base}/index.m3u8", *(f"{self.base}/{s.name}" for s in self.segmenter.segments)]
