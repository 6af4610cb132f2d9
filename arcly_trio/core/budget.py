"""Byte budgets: how much memory a group of parsers may hold at once, counted in real bytes.

A :class:`ByteBudget` is shared by every connection of a protocol worker (the RTMP worker gives
one to each chunk reader): each parser reserves the bytes it really buffers (a partial message
grows as its chunks arrive, it is never sized by what the peer announced) and releases them when
the message completes or the connection ends. A reservation that would take the budget over its
limit is refused, and the parser then fails that one connection with
:class:`~.errors.BudgetExceeded`; everyone else's reservations are untouched.

This module is plain Python (no trio): the sans-IO cores take a budget as an argument.

Error policy: :meth:`ByteBudget.reserve` returns ``False`` instead of raising; releasing more
than is held is a bug of the caller and raises ``ValueError``.
"""

from __future__ import annotations

__all__ = ["ByteBudget"]


class ByteBudget:
    """A counter of bytes held against a ``limit`` (``None``: unlimited, still counted)."""

    __slots__ = ("limit", "used", "peak", "refusals")

    def __init__(self, limit: int | None = None) -> None:
        if limit is not None and limit < 0:
            raise ValueError("a byte budget's limit must be >= 0")
        self.limit = limit
        self.used = 0
        """Bytes reserved now."""
        self.peak = 0
        """The most bytes ever reserved at once."""
        self.refusals = 0
        """Reservations refused because they would have gone over the limit."""

    def reserve(self, n: int) -> bool:
        """Take ``n`` more bytes; ``False`` (and nothing taken) if that would pass the limit."""
        used = self.used + n
        if self.limit is not None and used > self.limit:
            self.refusals += 1
            return False
        self.used = used
        if used > self.peak:
            self.peak = used
        return True

    def release(self, n: int) -> None:
        """Give back ``n`` bytes taken with :meth:`reserve`."""
        if n > self.used:
            raise ValueError(f"releasing {n} bytes, but only {self.used} are held")
        self.used -= n

    def __repr__(self) -> str:
        return f"<ByteBudget {self.used}/{self.limit if self.limit is not None else 'inf'}>"
