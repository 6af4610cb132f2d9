"""What one stream's HLS packaging holds in storage, counted in real bytes (the byte cap's ledger).

Error policy: nothing here raises.
"""

from __future__ import annotations

__all__ = ["HeldBytes"]


class HeldBytes:
    """What one stream's packaging holds in storage, in real bytes, by key: resources a list
    names and those waiting for their deletion (``leaving``, oldest first)."""

    __slots__ = ("sizes", "total", "leaving", "dropped")

    def __init__(self) -> None:
        self.sizes: dict[str, int] = {}
        self.total = 0
        self.leaving: dict[str, None] = {}
        self.dropped = 0
        """Resources of this stream deleted early by the byte cap."""

    def stored(self, key: str, size: int) -> None:
        """``key`` now holds ``size`` bytes (stored, or stored again)."""
        self.total += size - self.sizes.get(key, 0)
        self.sizes[key] = size
        self.leaving.pop(key, None)

    def expiring(self, key: str) -> None:
        """No list names ``key`` any more: it waits for its deletion."""
        if key in self.sizes:
            self.leaving[key] = None

    def deleted(self, key: str) -> None:
        """``key`` is gone from storage."""
        self.total -= self.sizes.pop(key, 0)
        self.leaving.pop(key, None)
