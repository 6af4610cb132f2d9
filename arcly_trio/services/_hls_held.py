"""What one stream's HLS packaging holds in storage, counted in real bytes (the byte cap's ledger).

A DVR stream's segments on disk (:mod:`._hls_dvr`) are counted apart (``disk``): the window
bounds them, not the memory cap.

Error policy: nothing here raises.
"""

from __future__ import annotations

__all__ = ["HeldBytes"]


class HeldBytes:
    """What one stream's packaging holds in storage, in real bytes, by key: resources a list
    names and those waiting for their deletion (``leaving``, oldest first); DVR segments on disk
    in ``disk`` (never ``leaving``: the memory cap does not delete them early)."""

    __slots__ = ("sizes", "total", "leaving", "dropped", "disk", "disk_total")

    def __init__(self) -> None:
        self.sizes: dict[str, int] = {}
        self.total = 0
        self.leaving: dict[str, None] = {}
        self.dropped = 0
        """Resources of this stream deleted early by the byte cap."""
        self.disk: dict[str, int] = {}
        self.disk_total = 0
        """The bytes of ``disk``: DVR segments (see :mod:`._hls_dvr`)."""

    def stored(self, key: str, size: int, *, on_disk: bool = False) -> None:
        """``key`` now holds ``size`` bytes (stored, or stored again); ``on_disk``: a DVR
        segment on disk, not counted in ``total``."""
        if on_disk:
            self.disk_total += size - self.disk.get(key, 0)
            self.disk[key] = size
            return
        self.total += size - self.sizes.get(key, 0)
        self.sizes[key] = size
        self.leaving.pop(key, None)

    def holds(self, key: str) -> bool:
        """Whether ``key`` is stored (not deleted yet)."""
        return key in self.sizes or key in self.disk

    def expiring(self, key: str) -> None:
        """No list names ``key`` any more: it waits for its deletion."""
        if key in self.sizes:
            self.leaving[key] = None

    def deleted(self, key: str) -> None:
        """``key`` is gone from storage."""
        self.total -= self.sizes.pop(key, 0)
        self.disk_total -= self.disk.pop(key, 0)
        self.leaving.pop(key, None)
