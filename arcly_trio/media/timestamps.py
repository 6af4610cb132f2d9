"""Unwrapping 32-bit millisecond timestamps (RTMP, FLV) into one growing timeline (sans-IO).

Error policy: never raises.
"""

from __future__ import annotations

__all__ = ["TimestampUnwrapper"]


class TimestampUnwrapper:
    """Turns successive 32-bit RTMP/FLV timestamps (ms) into an unbounded integer timeline.

    Each timestamp is read as the nearest value, modulo 2**32, to the previous result: a step
    forward of less than 2**31 ms (24.8 days) goes forward (across the 2**32 wrap too), a
    larger one is a step backwards. So small backwards jitter (B-frame muxers, interleaving)
    stays small and backwards, and wraps never jump. The first timestamp is taken as it is.
    Results are monotonic only as far as the input is; they go below 0 only if the stream
    steps back from near 0. Never raises.
    """

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last: int | None = None

    @property
    def last(self) -> int | None:
        """The last result, or ``None`` before the first timestamp."""
        return self._last

    def unwrap(self, timestamp: int) -> int:
        """The extended value of the 32-bit ``timestamp``."""
        last = self._last
        if last is None:
            value = timestamp & 0xFFFFFFFF
        else:
            delta = (timestamp - last) & 0xFFFFFFFF
            if delta >= 0x80000000:
                delta -= 0x100000000
            value = last + delta
        self._last = value
        return value

    def reset(self) -> None:
        """Forget the history: the next timestamp is taken as it is."""
        self._last = None
