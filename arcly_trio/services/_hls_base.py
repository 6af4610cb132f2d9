"""What the HLS service and its packagings know of each other: two narrow protocols.

:class:`Packaging` is what the service's packaging loop drives (one variant's packager of one
stream: :class:`~._hls_ts.TsPackaging`, :class:`~._hls_cmaf.CmafPackaging`);
:class:`PackagingHost` is what a packaging uses of the service that runs it (its settings, the
storage with its delayed deletions, the live state of CMAF streams, the wake-up of requests
waiting for a first list). :class:`~.hls.HlsService` is the one host; the packagings never import
it, so the service imports them plainly (no circle, no lazy import).

Error policy: declarations only; nothing here raises.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from arcly_trio.kernel.stream import Stream
    from arcly_trio.services._hls_dvr import QueryPieces
    from arcly_trio.services._hls_held import HeldBytes

__all__ = ["Packaging", "PackagingHost"]


class Packaging(Protocol):
    """What the packaging loop drives: one variant's packager of one stream (see
    :mod:`._hls_ts`, :mod:`._hls_cmaf`). ``stream`` is the stream it packages (set by the
    service), ``lists`` the names of the playlists and MPD it has stored that a player can start
    from (a media playlist once it lists a complete segment)."""

    left_out: dict[str, int]
    carried: set[str]
    held: HeldBytes
    stream: Stream | None
    lists: set[str]
    pieces: dict[str, QueryPieces]
    """A DVR window's playlists cut where a player's query goes, by name (:mod:`._hls_dvr`)."""

    @property
    def playlist_target_duration(self) -> int:
        """The ``EXT-X-TARGETDURATION`` its playlists say now (the longest segment, rounded)."""

    def expects(self, name: str) -> bool:
        """Whether the list ``name``, not stored yet, may still come."""

    keyframeless_cuts: int

    def push(self, frame: Any) -> Sequence[object]: ...

    def discontinuity(self) -> Sequence[object]: ...

    def finish(self) -> Sequence[object]: ...

    async def apply(self, events: Sequence[object]) -> None: ...

    async def ended(self) -> None: ...

    def leftovers(self) -> list[str]: ...

    def take_segments(self) -> list[tuple[str, float, int]]: ...

    async def drop_oldest(self) -> bool: ...


class PackagingHost(Protocol):
    """What a packaging uses of the service that runs it (:class:`~.hls.HlsService` is one)."""

    target_duration: float
    part_duration: float
    window: int
    max_segment_bytes: int
    live: dict[str, Any]
    """The live state of each stream packaged as CMAF, by ``app/stream`` (the blocking reloads')."""

    @property
    def part_delete_delay(self) -> float: ...

    async def store(self, key: str, data: bytes, held: HeldBytes | None = None) -> None: ...

    def expire(self, key: str, delay: float | None = None, held: HeldBytes | None = None) -> None: ...

    def lists_changed(self) -> None: ...
