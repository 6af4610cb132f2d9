"""The one bit reader of the codec parsers, AV1's ``leb128()`` and the OBU walker (sans-IO).

* :class:`BitReader`: MSB-first reads of fixed-width fields, exp-Golomb codes (H.264/HEVC
  ``ue(v)``/``se(v)``) and AV1 ``uvlc()``.
* :func:`remove_emulation_prevention`: the RBSP of an H.264/HEVC NAL unit.
* :func:`leb128` and :func:`obus`: AV1 low-overhead bitstream framing.

Error policy: the bytes come from a peer; running past the end, an over-long code or an OBU
that does not fit raises :class:`~.errors.CodecError`, nothing else escapes on arbitrary bytes.
"""

from __future__ import annotations

from collections.abc import Iterator

from arcly_trio.media.codecs.errors import CodecError

__all__ = ["BitReader", "remove_emulation_prevention", "leb128", "obus", "Payload"]

Payload = bytes | memoryview


def remove_emulation_prevention(data: bytes) -> bytes:
    """Return the RBSP of a NAL unit: every ``00 00 03`` becomes ``00 00``."""
    if b"\x00\x00\x03" not in data:
        return bytes(data)
    out = bytearray()
    zeros = 0
    for byte in data:
        if zeros >= 2 and byte == 3:
            zeros = 0
            continue
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


class BitReader:
    """MSB-first bit reader; running past the end raises :class:`CodecError`.

    ``what`` names the structure read (``"H.264 SPS"``) in the error messages.
    """

    __slots__ = ("_data", "_pos", "_end", "what")

    def __init__(self, data: bytes, what: str) -> None:
        self._data = data
        self._pos = 0
        self._end = len(data) * 8
        self.what = what

    def _short(self) -> CodecError:
        return CodecError(f"{self.what} is truncated")

    def u(self, n: int) -> int:
        """Read an ``n``-bit unsigned integer."""
        if self._pos + n > self._end:
            raise self._short()
        value = 0
        data, pos = self._data, self._pos
        for i in range(pos, pos + n):
            value = (value << 1) | ((data[i >> 3] >> (7 - (i & 7))) & 1)
        self._pos = pos + n
        return value

    def flag(self) -> bool:
        return self.u(1) == 1

    def skip(self, n: int) -> None:
        if self._pos + n > self._end:
            raise self._short()
        self._pos += n

    def ue(self) -> int:
        """Read an unsigned exp-Golomb code (at most 32 leading zero bits)."""
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 32:
                raise CodecError(f"{self.what}: exp-Golomb code longer than 32 bits")
        return (1 << zeros) - 1 + self.u(zeros)

    def ue_max(self, limit: int, name: str) -> int:
        """Read an unsigned exp-Golomb code that must be at most ``limit`` (field ``name``)."""
        value = self.ue()
        if value > limit:
            raise CodecError(f"{self.what}: {name} {value} is out of range (max {limit})")
        return value

    def se(self) -> int:
        """Read a signed exp-Golomb code."""
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)

    def uvlc(self) -> int:
        """Read an AV1 ``uvlc()`` (at most 31 leading zero bits)."""
        zeros = 0
        while not self.flag():
            zeros += 1
            if zeros >= 32:
                raise CodecError(f"{self.what}: uvlc longer than 32 bits")
        return (1 << zeros) - 1 + self.u(zeros) if zeros else 0


def leb128(data: Payload, pos: int, what: str) -> tuple[int, int]:
    """An AV1 ``leb128()`` at ``pos``: ``(value, position after it)``; at most 8 bytes."""
    value = 0
    for i in range(8):
        if pos + i >= len(data):
            raise CodecError(f"{what}: leb128 is truncated")
        byte = data[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, pos + i + 1
    raise CodecError(f"{what}: leb128 longer than 8 bytes")


def obus(data: Payload, what: str) -> Iterator[tuple[int, int, int]]:
    """The OBUs of a low-overhead AV1 byte string: ``(type, payload start, payload end)``.

    An OBU without a size field runs to the end. Bounded by the input: each step advances.
    """
    pos, n = 0, len(data)
    while pos < n:
        header = data[pos]
        if header & 0x80:
            raise CodecError(f"{what}: OBU forbidden bit set")
        obu_type = (header >> 3) & 0x0F
        start = pos + 1 + ((header >> 2) & 1)  # the extension byte
        if header & 0x02:
            size, start = leb128(data, start, what)
            end = start + size
        else:
            end = n
        if start > n or end > n:
            raise CodecError(f"{what}: OBU runs past the end")
        yield obu_type, start, end
        pos = end
