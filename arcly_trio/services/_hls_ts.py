"""The ``ts`` variant of the HLS service: MPEG-TS segments and one media playlist per stream.

:class:`TsPackaging` adapts an :class:`~arcly_trio.media.hls.HlsSegmenter` to the service's
packaging loop (:meth:`arcly_trio.services.hls.HlsService.serve_stream`): segments are stored
under ``{app}/{stream}/{token}-{sequence}.ts`` before the playlist ``index.m3u8`` that lists
them (each with its ``EXT-X-PROGRAM-DATE-TIME``, from the wall clock when its timeline began);
a segment that leaves the window is deleted after the service's ``delete_delay``.
MPEG-TS carries H.264, HEVC, AAC and MP3 of track 0; anything else is left out, counted in
``left_out`` (the service logs it once per stream and shows it in the API; when nothing is
carried, HLS requests are answered with the reason: :meth:`~arcly_trio.services.hls.HlsService.unavailable`).

Error policy: :meth:`TsPackaging.push` raises the segmenter's ``CodecError`` for malformed codec
bytes (the service drops the frame); storage failures are the service's to log and count.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..core.frame import Frame
from ..core.keys import StreamKey
from ..media.hls import HlsSegmenter, SegmentClosed, SegmentEvent, SegmentExpired

if TYPE_CHECKING:
    from .hls import HlsService

__all__ = ["TsPackaging"]


class TsPackaging:
    """One stream packaged as MPEG-TS HLS."""

    def __init__(self, service: HlsService, key: StreamKey, token: str) -> None:
        self.service = service
        self.base = f"{key.app}/{key.name}"
        self.segmenter = HlsSegmenter(service.target_duration, service.window,
                                      name_template=f"{token}-{{sequence}}.ts")  # fmt: skip
        self.left_out = self.segmenter.left_out
        self.carried = self.segmenter.carried
        self._done: list[tuple[str, float, int]] = []

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
                await self.service.store(f"{self.base}/{event.name}", event.data)
                self._done.append(("av", event.duration, len(event.data)))
            elif isinstance(event, SegmentExpired):
                changed = True
                self.service.expire(f"{self.base}/{event.name}")
        if changed:
            await self.service.store(f"{self.base}/index.m3u8", self.segmenter.playlist().encode())

    async def ended(self) -> None:
        pass

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
