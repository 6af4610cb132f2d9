"""RTP packets (RFC 3550), header extensions (RFC 8285), sequence arithmetic, the receiver's
reorder buffer and the sender's retransmission history (sans-IO).

The media plane of the WebRTC core (issue 22). Bytes in, an :class:`RtpPacket` out; fields in,
bytes out; time passed in as a float ``now``.

* :func:`parse_rtp` reads one (decrypted) datagram: the fixed header, CSRCs, one-byte
  (``0xBEDE``) or two-byte (``0x100x``) header extensions by id, padding stripped.
  :func:`build_rtp` writes one; :func:`rtp_header` is the hot path of the WHEP egress (12 bytes,
  one ``struct`` call, no checks beyond ``struct``'s).
* :func:`seq_newer`, :class:`SequenceUnwrapper` and :class:`TimestampUnwrapper`: 16-bit
  sequence numbers and 32-bit timestamps that wrap, turned into ints that keep counting.
* :class:`ReorderBuffer` (WHIP ingest): packets in any order in, packets in sequence order out,
  each flagged when a gap was given up right before it (the depacketizer's ``lost``), with the
  sequence numbers worth a NACK now, and counters.
* :class:`SendHistory` (WHEP egress, per viewer): a ring of the last packets sent, by sequence
  number, for NACK retransmission.

Attacker's view: a datagram is parsed in one pass, allocating in proportion to what it holds
(extensions are bounded by its length). The reorder buffer holds at most ``capacity`` packets,
and its bookkeeping (missing sequence numbers, NACK counts) covers a window of ``capacity``
sequence numbers, whatever the peer sends: a jump ahead gives up the gap at once (counted as
lost), packets behind the window are dropped and counted, each sequence number is NACKed at
most ``max_nacks`` times. A stream that jumps far backwards for good (a sender restart) is
followed after ``capacity`` late packets in a row, so the buffer cannot be wedged. The send
history holds ``size`` references, never more.

Error policy: :func:`parse_rtp` raises :class:`RtpError` (a
:class:`~arcly_trio.core.errors.RemoteProtocolError`) for anything that is not a well-formed
RTP packet, and nothing else (fuzzed). :func:`build_rtp` raises :class:`RtpBuildError` (a
:class:`~arcly_trio.core.errors.LocalProtocolError`) for values it cannot encode; the buffers
never raise for what a peer sends (``ValueError`` only for a bad ``capacity`` or ``size``).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from typing import Final

import attrs

from arcly_trio.core.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "RTP_HEADER",
    "RtpError",
    "RtpBuildError",
    "RtpPacket",
    "parse_rtp",
    "build_rtp",
    "rtp_header",
    "seq_newer",
    "SequenceUnwrapper",
    "TimestampUnwrapper",
    "ReorderBuffer",
    "SendHistory",
]

RTP_HEADER: Final = struct.Struct("!BBHII")
"""The fixed RTP header: V/P/X/CC, M/PT, sequence number, timestamp, SSRC."""

_ONE_BYTE_PROFILE: Final = 0xBEDE
_TWO_BYTE_PROFILE: Final = 0x1000  # the upper 12 bits; the low 4 are "appbits"
_EXTENSION_HEADER: Final = struct.Struct("!HH")


class RtpError(RemoteProtocolError):
    """A datagram that is not a well-formed RTP packet."""


class RtpBuildError(LocalProtocolError):
    """Fields that cannot be written as an RTP packet (out of range, an extension too long)."""


@attrs.frozen(slots=True)
class RtpPacket:
    """One RTP packet, padding removed.

    Attributes:
        payload_type: 0 to 127.
        sequence: the 16-bit sequence number.
        timestamp: the 32-bit media timestamp.
        ssrc: the synchronization source.
        marker: the marker bit (video: last packet of an access unit).
        payload: the payload, without padding.
        csrcs: the contributing sources.
        extensions: the RFC 8285 header extensions as ``(id, data)`` in the order sent (an
            extension block of another profile is skipped).
    """

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    marker: bool
    payload: bytes
    csrcs: tuple[int, ...] = ()
    extensions: tuple[tuple[int, bytes], ...] = ()

    def extension(self, ident: int) -> bytes | None:
        """The data of the first header extension ``ident``, or ``None``."""
        for key, value in self.extensions:
            if key == ident:
                return value
        return None


def parse_rtp(datagram: bytes) -> RtpPacket:
    """One RTP packet from one datagram (raise :class:`RtpError` if malformed)."""
    size = len(datagram)
    if size < RTP_HEADER.size:
        raise RtpError(f"an RTP packet is at least {RTP_HEADER.size} bytes, not {size}")
    first, second, sequence, timestamp, ssrc = RTP_HEADER.unpack_from(datagram)
    if first >> 6 != 2:
        raise RtpError(f"RTP version {first >> 6}, not 2")
    position = RTP_HEADER.size
    count = first & 0x0F
    if position + 4 * count > size:
        raise RtpError(f"{count} CSRCs do not fit in {size} bytes")
    csrcs = struct.unpack_from(f"!{count}I", datagram, position) if count else ()
    position += 4 * count
    extensions: tuple[tuple[int, bytes], ...] = ()
    if first & 0x10:
        if position + 4 > size:
            raise RtpError("the RTP header extension header is cut short")
        profile, words = _EXTENSION_HEADER.unpack_from(datagram, position)
        start = position + 4
        position = start + 4 * words
        if position > size:
            raise RtpError(f"an RTP header extension of {words} words runs past the end")
        if profile == _ONE_BYTE_PROFILE:
            extensions = _one_byte_extensions(datagram, start, position)
        elif profile & 0xFFF0 == _TWO_BYTE_PROFILE:
            extensions = _two_byte_extensions(datagram, start, position)
    end = size
    if first & 0x20:
        padding = datagram[-1]
        if padding == 0 or position + padding > size:
            raise RtpError(f"RTP padding of {padding} bytes does not fit")
        end -= padding
    return RtpPacket(
        payload_type=second & 0x7F,
        sequence=sequence,
        timestamp=timestamp,
        ssrc=ssrc,
        marker=bool(second & 0x80),
        payload=bytes(datagram[position:end]),
        csrcs=tuple(csrcs),
        extensions=extensions,
    )


def _one_byte_extensions(data: bytes, position: int, end: int) -> tuple[tuple[int, bytes], ...]:
    found: list[tuple[int, bytes]] = []
    while position < end:
        byte = data[position]
        if byte == 0:  # padding between elements
            position += 1
            continue
        ident = byte >> 4
        if ident == 15:  # reserved: stop reading (RFC 8285 section 4.2)
            break
        length = (byte & 0x0F) + 1
        if position + 1 + length > end:
            raise RtpError(f"one-byte header extension {ident} runs past the extension block")
        found.append((ident, bytes(data[position + 1 : position + 1 + length])))
        position += 1 + length
    return tuple(found)


def _two_byte_extensions(data: bytes, position: int, end: int) -> tuple[tuple[int, bytes], ...]:
    found: list[tuple[int, bytes]] = []
    while position < end:
        ident = data[position]
        if ident == 0:
            position += 1
            continue
        if position + 2 > end:
            raise RtpError("a two-byte header extension element is cut short")
        length = data[position + 1]
        if position + 2 + length > end:
            raise RtpError(f"two-byte header extension {ident} runs past the extension block")
        found.append((ident, bytes(data[position + 2 : position + 2 + length])))
        position += 2 + length
    return tuple(found)


def rtp_header(payload_type: int, sequence: int, timestamp: int, ssrc: int, marker: bool) -> bytes:
    """The 12-byte fixed header (no CSRC, no extension); ``sequence`` and ``timestamp`` are
    taken modulo 2**16 and 2**32, so a caller may count past the wrap."""
    return RTP_HEADER.pack(
        0x80, (0x80 if marker else 0) | payload_type, sequence & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc
    )


def build_rtp(
    payload_type: int,
    sequence: int,
    timestamp: int,
    ssrc: int,
    payload: bytes,
    *,
    marker: bool = False,
    extensions: Iterable[tuple[int, bytes]] = (),
) -> bytes:
    """One RTP packet. Header extensions use the one-byte form when every id is 1 to 14 and
    every value 1 to 16 bytes, else the two-byte form (ids 1 to 255, values up to 255 bytes);
    :class:`RtpBuildError` for anything else or a field out of range."""
    if not 0 <= payload_type <= 127 or not 0 <= ssrc <= 0xFFFFFFFF:
        raise RtpBuildError(f"payload type {payload_type} or SSRC {ssrc} out of range")
    elements = list(extensions)
    header = bytearray(rtp_header(payload_type, sequence, timestamp, ssrc, marker))
    if elements:
        header[0] |= 0x10
        one_byte = all(1 <= ident <= 14 and 1 <= len(value) <= 16 for ident, value in elements)
        body = bytearray()
        for ident, value in elements:
            if one_byte:
                body.append((ident << 4) | (len(value) - 1))
            elif 1 <= ident <= 255 and len(value) <= 255:
                body += bytes((ident, len(value)))
            else:
                raise RtpBuildError(f"header extension {ident} of {len(value)} bytes cannot be written")
            body += value
        body += bytes(-len(body) % 4)
        if len(body) // 4 > 0xFFFF:
            raise RtpBuildError("header extensions over 65535 words")
        profile = _ONE_BYTE_PROFILE if one_byte else _TWO_BYTE_PROFILE
        header += _EXTENSION_HEADER.pack(profile, len(body) // 4) + body
    return bytes(header) + bytes(payload)


def seq_newer(a: int, b: int) -> bool:
    """Whether 16-bit sequence number ``a`` comes after ``b`` (less than half the space ahead)."""
    return 0 < ((a - b) & 0xFFFF) < 0x8000


class _Unwrapper:
    """Counts a wrapping ``bits``-bit number on: each value is taken as the nearest one to the
    newest seen (at most half the space ahead or behind)."""

    __slots__ = ("_last",)
    _BITS = 16

    def __init__(self) -> None:
        self._last: int | None = None

    def unwrap(self, value: int) -> int:
        """``value`` as an int that keeps counting across wraps (older values come out smaller;
        before the first value anything may come out negative)."""
        modulus = 1 << self._BITS
        value &= modulus - 1
        last = self._last
        if last is None:
            self._last = value
            return value
        delta = (value - last) & (modulus - 1)
        if delta >= modulus >> 1:
            delta -= modulus
        result = last + delta
        if delta > 0:
            self._last = result
        return result


class SequenceUnwrapper(_Unwrapper):
    """16-bit RTP sequence numbers as ints that keep counting (see :meth:`unwrap`)."""

    __slots__ = ()
    _BITS = 16


class TimestampUnwrapper(_Unwrapper):
    """32-bit RTP timestamps as ints that keep counting (see :meth:`unwrap`)."""

    __slots__ = ()
    _BITS = 32


class ReorderBuffer:
    """The receiving side's jitter and reorder buffer for one SSRC (see the module docstring).

    ``push`` and ``flush`` return ``(packet, lost)`` pairs in sequence order; ``lost`` is
    ``True`` when sequence numbers right before that packet were given up: waited for longer
    than ``max_wait`` seconds, or pushed out of the ``capacity`` window by a packet far ahead.
    """

    def __init__(
        self, capacity: int = 128, max_wait: float = 0.1, *, max_nacks: int = 3, nack_interval: float | None = None
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, not {capacity}")
        self.capacity = capacity
        self.max_wait = max_wait
        self.max_nacks = max_nacks
        self.nack_interval = max_wait / 3 if nack_interval is None else nack_interval
        self.received = 0
        """Packets pushed."""
        self.lost = 0
        """Sequence numbers given up."""
        self.duplicates = 0
        """Packets dropped because they had arrived already."""
        self.late = 0
        """Packets dropped because they came after their place was given up."""
        self.reordered = 0
        """Packets that arrived after a later one (and were put back in order)."""
        self.nacked = 0
        """Sequence numbers returned by :meth:`missing` (each time)."""
        self._unwrapper = SequenceUnwrapper()
        self._next: int | None = None  # the extended sequence number released next
        self._highest = 0  # the highest extended sequence number received
        self._pending: dict[int, RtpPacket] = {}
        self._missing: dict[int, list[float]] = {}  # extended seq -> [since, nacks, last nack]
        self._gap = False  # a gap was given up right before _next
        self._seen = [-1] * capacity  # extended seq received, by seq % capacity (duplicates)
        self._late_streak = 0

    def __len__(self) -> int:
        """Packets held."""
        return len(self._pending)

    @property
    def tracked(self) -> int:
        """Missing sequence numbers being waited for (at most ``capacity``)."""
        return len(self._missing)

    def push(self, packet: RtpPacket, now: float) -> list[tuple[RtpPacket, bool]]:
        """Take one packet; return what is released (with what :meth:`flush` gives up now)."""
        self.received += 1
        ext = self._unwrapper.unwrap(packet.sequence)
        out: list[tuple[RtpPacket, bool]] = []
        if self._next is None:
            self._start(ext)
        assert self._next is not None
        if ext < self._next:
            if self._seen[ext % self.capacity] == ext:
                self.duplicates += 1
            else:
                self.late += 1
            self._late_streak += 1
            if self._late_streak > self.capacity:  # the sender restarted far behind: follow it
                self._give_up(self._highest + 1, out)
                self._unwrapper = SequenceUnwrapper()
                self._start(self._unwrapper.unwrap(packet.sequence))
                self._gap = True
                return self._accept(packet, self._next, now, out)
            return out
        self._late_streak = 0
        if ext in self._pending:
            self.duplicates += 1
            return out
        return self._accept(packet, ext, now, out)

    def _start(self, ext: int) -> None:
        self._next = ext
        self._highest = ext - 1
        self._late_streak = 0

    def _accept(
        self, packet: RtpPacket, ext: int, now: float, out: list[tuple[RtpPacket, bool]]
    ) -> list[tuple[RtpPacket, bool]]:
        assert self._next is not None
        if ext >= self._next + self.capacity:
            self._give_up(ext - self.capacity + 1, out)
        if ext < self._highest:
            self.reordered += 1
        self._missing.pop(ext, None)
        for missing in range(max(self._highest + 1, self._next), ext):
            self._missing[missing] = [now, 0, 0.0]
        self._highest = max(self._highest, ext)
        self._pending[ext] = packet
        self._seen[ext % self.capacity] = ext
        self._release(out)
        self._expire(now, out)
        return out

    def _release(self, out: list[tuple[RtpPacket, bool]]) -> None:
        """Release the run of held packets from ``_next`` on."""
        assert self._next is not None
        while self._next in self._pending:
            out.append((self._pending.pop(self._next), self._gap))
            self._gap = False
            self._next += 1

    def _give_up(self, target: int, out: list[tuple[RtpPacket, bool]]) -> None:
        """Give up every sequence number before ``target``, releasing what is held there."""
        assert self._next is not None
        for ext in sorted(key for key in self._pending if key < target):
            if ext > self._next:
                self.lost += ext - self._next
                self._gap = True
            out.append((self._pending.pop(ext), self._gap))
            self._gap = False
            self._next = ext + 1
        if self._next < target:
            self.lost += target - self._next
            self._gap = True
            self._next = target
        self._highest = max(self._highest, target - 1)
        self._missing = {key: value for key, value in self._missing.items() if key >= target}
        self._release(out)

    def _expire(self, now: float, out: list[tuple[RtpPacket, bool]]) -> None:
        """Give up gaps waited for longer than ``max_wait``."""
        while self._pending:
            assert self._next is not None
            since = self._missing.get(self._next)
            if since is not None and now - since[0] < self.max_wait:
                return
            self._give_up(min(self._pending), out)

    def flush(self, now: float) -> list[tuple[RtpPacket, bool]]:
        """Give up the gaps older than ``max_wait`` and return what that releases."""
        out: list[tuple[RtpPacket, bool]] = []
        self._expire(now, out)
        return out

    def missing(self, now: float) -> list[int]:
        """The sequence numbers to NACK now: missing, NACKed fewer than ``max_nacks`` times,
        and not within ``nack_interval`` of the last NACK; counted in :attr:`nacked`."""
        due: list[int] = []
        for ext in sorted(self._missing):
            state = self._missing[ext]
            if state[1] < self.max_nacks and (state[1] == 0 or now - state[2] >= self.nack_interval):
                state[1] += 1
                state[2] = now
                due.append(ext & 0xFFFF)
        self.nacked += len(due)
        return due


class SendHistory:
    """The last ``size`` packets sent on one stream, by 16-bit sequence number, for NACK.

    A ring: adding sequence number ``n`` replaces whatever was at ``n % size``, so memory is
    ``size`` references; :meth:`get` checks the slot still holds ``n``.
    """

    __slots__ = ("_mask", "_sequences", "_packets")

    def __init__(self, size: int = 512) -> None:
        if size < 1 or size & (size - 1) or size > 0x10000:
            raise ValueError(f"size must be a power of two up to 65536, not {size}")
        self._mask = size - 1
        self._sequences = [-1] * size
        self._packets: list[object] = [None] * size

    def add(self, sequence: int, packet: object) -> None:
        sequence &= 0xFFFF
        slot = sequence & self._mask
        self._sequences[slot] = sequence
        self._packets[slot] = packet

    def add_run(self, sequence: int, packets: Sequence[object]) -> None:
        """Add ``packets`` as sequence numbers ``sequence``, ``sequence + 1``... (one call per
        frame on a viewer's hot path)."""
        mask = self._mask
        sequences = self._sequences
        held = self._packets
        sequence &= 0xFFFF
        count = len(packets)
        slot = sequence & mask
        if slot + count <= mask + 1 and sequence + count <= 0x10000:  # no wrap: two slice copies
            sequences[slot : slot + count] = range(sequence, sequence + count)
            held[slot : slot + count] = packets
            return
        for packet in packets:
            sequence &= 0xFFFF
            slot = sequence & mask
            sequences[slot] = sequence
            held[slot] = packet
            sequence += 1

    def get(self, sequence: int) -> object | None:
        """What was sent as ``sequence``, or ``None`` if it is no longer (or never was) held."""
        sequence &= 0xFFFF
        slot = sequence & self._mask
        return self._packets[slot] if self._sequences[slot] == sequence else None
