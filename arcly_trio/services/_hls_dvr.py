"""DVR on the live HLS playlist: how long the window is, and where its segments are kept.

An application with ``AppSpec.dvr_window`` (``--dvr-window SECONDS``, per application in
``[apps.NAME]``) keeps that much of each live stream listed, so that players (hls.js, Safari,
dash.js for DASH) can seek back in it and return to live. The playlist stays a sliding live
playlist (no ``EXT-X-PLAYLIST-TYPE:EVENT``; every segment keeps its
``EXT-X-PROGRAM-DATE-TIME``; LL-HLS parts only for the segments at the live edge): only its
window is longer. :func:`dvr_window_segments` turns the seconds into the packagers' window of
segments; a segment that leaves it is deleted after the service's ``delete_delay``, as any
other.

Where the segments go: a DVR stream's complete segments (not its parts, init segments and
lists) go to storage on disk, so that the memory one stream holds does not grow with the window
(and they do not count against the memory cap of ``--hls-max-mib``; the window bounds them).
When the service's storage is in memory (:class:`~arcly_trio.storage.MemoryStorage`, the
default of one process), :class:`DvrStorage` wraps it and sends those segments to a
:class:`~arcly_trio.storage.FileStorage` (a directory of its own); when the storage is already
on disk (the shared directory of ``--workers N``), they stay in it. Which keys are DVR segments
is decided from the key alone (:meth:`DvrKeys.on_disk`: the stream's token, a segment's name),
so nothing per segment is remembered.

Attacker's view: the window is the operator's, bounded to :data:`~arcly_trio.kernel.spec.MAX_DVR_WINDOW`
(6 hours); a player's request picks nothing here (it reads what is stored, by names the routes
check). What a publisher can make the disk hold is its bitrate (bounded by
``--max-publish-bitrate``) times the window.

Error policy: :func:`dvr_window_segments` raises ``ValueError`` for a window out of range;
:class:`DvrStorage` raises what the storage it forwards to raises (the service logs and counts
storage errors, as for any storage).
"""

from __future__ import annotations

import math
import re
from typing import Final

from arcly_trio.kernel.spec import MAX_DVR_WINDOW
from arcly_trio.storage import AppendHandle, Storage

__all__ = ["DvrKeys", "DvrStorage", "dvr_window_segments"]

#: A complete segment's name: CMAF ``{token}-v-12.m4s`` / ``{token}-a-12.m4s`` (not a part,
#: ``{token}-v-12.3.m4s``, nor an init segment), MPEG-TS ``{token}-12.ts``.
_SEGMENT: Final = re.compile(r"([0-9a-f]+)-(?:[va]-)?[0-9]+\.(?:m4s|ts)")


def dvr_window_segments(seconds: float, target_duration: float, live_window: int) -> int:
    """How many segments a playlist lists to keep ``seconds`` of DVR with segments of
    ``target_duration``: the live window and the DVR's segments (``live_window`` when
    ``seconds`` is 0)."""
    if not 0 <= seconds <= MAX_DVR_WINDOW:
        raise ValueError(f"the DVR window must be from 0 to {MAX_DVR_WINDOW:g} seconds, not {seconds!r}")
    if seconds == 0:
        return live_window
    return max(live_window, math.ceil(seconds / target_duration - 1e-9))


class DvrKeys:
    """The streams (by their token, new for each stream) whose segments are DVR segments."""

    __slots__ = ("tokens",)

    def __init__(self) -> None:
        self.tokens: set[str] = set()

    def on_disk(self, key: str) -> bool:
        """Whether ``key`` (``app/stream/name``) is a complete segment of a DVR stream."""
        name = key.rpartition("/")[2]
        found = _SEGMENT.fullmatch(name)
        return found is not None and found.group(1) in self.tokens


class DvrStorage:
    """A :class:`~arcly_trio.storage.Storage` that keeps DVR segments (:class:`DvrKeys`) in
    ``disk`` and everything else in ``memory``."""

    def __init__(self, memory: Storage, disk: Storage, keys: DvrKeys) -> None:
        self.memory = memory
        self.disk = disk
        self.keys = keys

    def __repr__(self) -> str:
        return f"DvrStorage({self.memory!r}, {self.disk!r})"

    def _of(self, key: str) -> Storage:
        return self.disk if self.keys.on_disk(key) else self.memory

    async def put(self, key: str, data: bytes) -> None:
        await self._of(key).put(key, data)

    async def get(self, key: str) -> bytes:
        return await self._of(key).get(key)

    async def delete(self, key: str) -> None:
        await self._of(key).delete(key)

    async def list(self, prefix: str = "") -> list[str]:
        return sorted({*await self.memory.list(prefix), *await self.disk.list(prefix)})

    async def open_append(self, key: str) -> AppendHandle:
        return await self._of(key).open_append(key)
