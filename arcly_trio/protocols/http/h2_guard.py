"""What an HTTP/2 server counts before the ``h2`` library parses a client's bytes (sans-IO).

The ``h2`` library (python-hyper) parses frames, decodes HPACK and keeps the streams' states;
two kinds of abuse are cheaper to stop in front of it:

* :class:`HeaderBlockGuard` reads only the 9-byte frame headers of the client's bytes and sums
  the payload lengths of one header block (a ``HEADERS`` frame and its ``CONTINUATION`` frames)
  as they are announced, so a block over the limit ends the connection before its bytes arrive
  or are decoded (the CONTINUATION flood, CVE-2024-27316 and its family: ``h2`` alone buffers
  up to 64 continuation frames of any size it allows).
* It also counts the ``RST_STREAM``, ``SETTINGS`` and ``PING`` frames as their headers arrive
  (:attr:`HeaderBlockGuard.resets`...), and all frames, so the connection can refuse a flood before ``h2``
  has parsed (and acknowledged) any of it.
* :class:`RateBudget` is a token bucket over trio's clock (or any clock): so many events at
  once, refilled at a steady rate. The connection spends one per client reset stream (rapid
  reset, CVE-2023-44487), per ``SETTINGS`` and per ``PING`` frame, and answers a client that
  runs out with ``GOAWAY ENHANCE_YOUR_CALM``.

Error policy: :meth:`HeaderBlockGuard.feed` raises
:class:`~arcly_trio.core.errors.MessageTooLarge` (a ``RemoteProtocolError``) for a header block
over its limit; a malformed preface or frame is left to ``h2`` (which raises its own errors).
Nothing else raises.
"""

from __future__ import annotations

from arcly_trio.core.errors import MessageTooLarge

__all__ = ["HeaderBlockGuard", "RateBudget", "PREFACE_SIZE"]

PREFACE_SIZE = 24
"""The client connection preface (``PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n``)."""

_HEADERS = 0x1
_PUSH_PROMISE = 0x5
_CONTINUATION = 0x9
_RST_STREAM = 0x3
_SETTINGS = 0x4
_PING = 0x6
_END_HEADERS = 0x4
_FRAME_HEADER = 9


class HeaderBlockGuard:
    """Follows the frame headers of the bytes a client sends and caps each header block at
    ``limit`` bytes of frame payload, counted across ``CONTINUATION`` frames as soon as each
    frame header arrives (see the module docstring)."""

    __slots__ = ("limit", "block", "in_block", "frames", "resets", "settings", "pings", "_skip", "_header")

    def __init__(self, limit: int, *, preface: bool = True) -> None:
        self.limit = limit
        self.block = 0
        """Payload bytes announced for the header block in progress."""
        self.in_block = False
        """Whether a header block has begun and not ended (``END_HEADERS`` not seen)."""
        self.frames = 0
        """Frames of any kind seen (a catch-all: empty DATA, WINDOW_UPDATE or PRIORITY floods)."""
        self.resets = 0
        """``RST_STREAM`` frames seen (the caller zeroes the counters as it spends them)."""
        self.settings = 0
        self.pings = 0
        self._skip = PREFACE_SIZE if preface else 0  # bytes to pass over: the preface, then payloads
        self._header = bytearray()  # a frame header that arrived in part

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Account for ``data``, the client's next bytes; raise
        :class:`~arcly_trio.core.errors.MessageTooLarge` for a header block over the limit."""
        view = memoryview(data)
        at = 0
        end = len(view)
        while at < end:
            if self._skip:
                step = min(self._skip, end - at)
                self._skip -= step
                at += step
                continue
            need = _FRAME_HEADER - len(self._header)
            piece = view[at : at + need]
            self._header += piece
            at += len(piece)
            if len(self._header) < _FRAME_HEADER:
                return
            header = self._header
            length = int.from_bytes(header[0:3], "big")
            kind = header[3]
            flags = header[4]
            self._header = bytearray()
            self._skip = length
            self.frames += 1
            if kind == _RST_STREAM:
                self.resets += 1
            elif kind == _SETTINGS:
                self.settings += 1
            elif kind == _PING:
                self.pings += 1
            elif kind in (_HEADERS, _PUSH_PROMISE) or (kind == _CONTINUATION and self.in_block):
                self.block = length if kind != _CONTINUATION else self.block + length
                if self.block > self.limit:
                    raise MessageTooLarge("HTTP/2 header block", self.block, self.limit)
                self.in_block = not flags & _END_HEADERS
                if not self.in_block:
                    self.block = 0


class RateBudget:
    """A token bucket: ``burst`` events at once, ``rate`` more per second after (``now`` is any
    monotonic clock in seconds, trio's in the worker)."""

    __slots__ = ("burst", "rate", "_tokens", "_at")

    def __init__(self, burst: float, rate: float, now: float) -> None:
        self.burst = burst
        self.rate = rate
        self._tokens = burst
        self._at = now

    def spend(self, now: float, count: float = 1) -> bool:
        """Take ``count`` tokens; whether there were enough (if not, the bucket is left empty)."""
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= count:
            self._tokens -= count
            return True
        self._tokens = 0
        return False
