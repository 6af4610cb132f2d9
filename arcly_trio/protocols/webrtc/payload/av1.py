"""AV1 over RTP ("RTP Payload Format For AV1", AOMedia): packetize a temporal unit, put it back.

Every RTP payload starts with the one-byte aggregation header (section 4.4): ``Z`` (the first
OBU element continues an OBU begun in the previous packet), ``Y`` (the last OBU element goes on
in the next packet), ``W`` (how many OBU elements; 0: each has a ``leb128`` length before it;
1-3: all but the last have one) and ``N`` (the first packet of a coded video sequence). OBU
elements are OBUs, or fragments of one, normally without ``obu_has_size_field``; temporal
delimiters and tile list OBUs are not sent.

The kernel holds an AV1 temporal unit as a low-overhead bitstream (every OBU with its size
field, as Enhanced RTMP and av1C carry it; a leading temporal delimiter is allowed).
:func:`packetize` drops temporal delimiters, takes the size fields out, sends the ``prefix``
(a sequence header OBU from the av1C, :func:`parameter_sets`) before a temporal unit that has
none, writes ``W`` 0 and fragments OBUs larger than a packet (``Y``/``Z``); ``N`` is set on the
first packet of a key frame that carries a sequence header. :class:`Av1Depacketizer` gives back
the low-overhead OBU stream without temporal delimiter (as the fMP4 packager stores samples); a
keyframe is a temporal unit with a sequence header whose first frame is a key frame, and
``config`` an av1C built from the sequence header when it first appears or changes.

Attacker's view: a depacketizer holds at most one temporal unit, bounded by
:data:`~arcly_trio.protocols.webrtc.payload.assembly.MAX_ACCESS_UNIT` bytes and
:data:`MAX_OBUS` OBUs; every length is checked against the bytes that arrived, and an OBU's
own size field may not claim more than its element holds.

Error policy: :class:`Av1Depacketizer` never raises for a peer's payloads (drops and counts
them, see :mod:`~arcly_trio.protocols.webrtc.payload`); :func:`packetize` raises
:class:`Av1PayloadError` (a :class:`~arcly_trio.core.errors.LocalProtocolError`) for a temporal
unit that is not a low-overhead OBU stream or a tiny MTU; :func:`parameter_sets` raises
:class:`~arcly_trio.media.codecs.errors.CodecError` for a malformed av1C.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Final

from arcly_trio.core.errors import LocalProtocolError, RemoteProtocolError
from arcly_trio.media.codecs.av1 import (
    OBU_FRAME,
    OBU_FRAME_HEADER,
    OBU_SEQUENCE_HEADER,
    OBU_TEMPORAL_DELIMITER,
    av1_config_record,
    is_key_frame_header,
    parse_av1_config,
)
from arcly_trio.media.codecs.bits import leb128, obus
from arcly_trio.media.codecs.errors import CodecError
from arcly_trio.protocols.webrtc.payload.assembly import Assembly

__all__ = [
    "MAX_OBUS",
    "MIN_MTU",
    "Av1Depacketizer",
    "Av1Error",
    "Av1PayloadError",
    "packetize",
    "parameter_sets",
]

#: The most OBUs one temporal unit may hold (real ones: a handful; tiles are inside OBUs).
MAX_OBUS: Final = 1024
#: The smallest MTU :func:`packetize` accepts.
MIN_MTU: Final = 8
_OBU_TILE_LIST: Final = 8
_NOT_SENT: Final = (OBU_TEMPORAL_DELIMITER, _OBU_TILE_LIST)


class Av1Error(RemoteProtocolError):
    """An RTP payload that is not a valid AV1 aggregation (caught inside the depacketizer)."""


class Av1PayloadError(LocalProtocolError):
    """A temporal unit :func:`packetize` cannot carry."""


def _leb128(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _split(stream: bytes) -> Iterator[tuple[int, bytes]]:
    """``(type, OBU without its size field)`` for each OBU of a low-overhead stream."""
    pos = 0
    for obu_type, start, end in obus(stream, "AV1 temporal unit"):
        header = stream[pos]
        ext = stream[pos + 1 : pos + 2] if header & 0x04 else b""
        yield obu_type, bytes([header & ~0x02 & 0xFF]) + ext + stream[start:end]
        pos = end


def parameter_sets(av1c: bytes) -> tuple[bytes, ...]:
    """The configOBUs of an av1C record (the sequence header OBU): the ``prefix`` of
    :func:`packetize` for a keyframe."""
    config = parse_av1_config(av1c)
    return (config.config_obus,) if config.config_obus else ()


def packetize(payload: bytes, mtu: int, *, prefix: Sequence[bytes] = ()) -> list[bytes]:
    """The RTP payloads of one temporal unit, each at most ``mtu`` bytes (see the module
    docstring)."""
    if mtu < MIN_MTU:
        raise Av1PayloadError(f"MTU {mtu} is below {MIN_MTU}")
    try:
        units = [(kind, obu) for kind, obu in _split(payload) if kind not in _NOT_SENT]
        if prefix and not any(kind == OBU_SEQUENCE_HEADER for kind, _ in units):
            extra = [(kind, obu) for item in prefix for kind, obu in _split(bytes(item)) if kind not in _NOT_SENT]
            units = extra + units
    except CodecError as error:
        raise Av1PayloadError(f"not a low-overhead AV1 temporal unit: {error}") from None
    if not units:
        raise Av1PayloadError("temporal unit without OBUs to send")
    frames = [obu[1 + ((obu[0] >> 2) & 1) :] for kind, obu in units if kind in (OBU_FRAME, OBU_FRAME_HEADER)]
    new_sequence = any(kind == OBU_SEQUENCE_HEADER for kind, _ in units) and bool(frames)
    new_sequence = new_sequence and is_key_frame_header(frames[0])
    packets: list[bytes] = []
    current = bytearray([0])
    for _, obu in units:
        pos = 0
        while pos < len(obu):
            left = len(obu) - pos
            room = mtu - len(current)
            whole = len(_leb128(left)) + left
            if whole <= room:
                current += _leb128(left) + obu[pos:]
                pos = len(obu)
                continue
            size = room - len(_leb128(room))
            if size < 1:
                packets.append(bytes(current))
                current = bytearray([0])
                continue
            current += _leb128(size) + obu[pos : pos + size]
            pos += size
            current[0] |= 0x40  # Y: the OBU goes on
            packets.append(bytes(current))
            current = bytearray([0x80])  # Z: this packet continues it
    if len(current) > 1:
        packets.append(bytes(current))
    if new_sequence:
        packets[0] = bytes([packets[0][0] | 0x08]) + packets[0][1:]
    return packets


class Av1Depacketizer(Assembly):
    """AV1 RTP payloads in, low-overhead temporal units out (see
    :class:`~arcly_trio.protocols.webrtc.payload.Depacketizer`)."""

    def __init__(self) -> None:
        super().__init__()
        self._obus: list[bytes] = []
        self._fragment: bytearray | None = None
        self._sequence: bytes | None = None
        self._first_frame: bytes | None = None

    def _reset(self) -> None:
        self._obus = []
        self._fragment = None
        self._sequence = None
        self._first_frame = None

    def _may_start(self, payload: bytes) -> bool:
        return bool(payload) and payload[0] & 0x88 == 0x08  # N and not Z

    def _add(self, payload: bytes) -> None:
        if len(payload) < 2:
            raise Av1Error("payload shorter than a header and one byte")
        header = payload[0]
        z, y, w = bool(header & 0x80), bool(header & 0x40), (header >> 4) & 0x03
        if z != (self._fragment is not None):
            raise Av1Error("OBU fragment continuation does not match the previous packet")
        elements: list[bytes] = []
        pos, n = 1, len(payload)
        while pos < n:
            if w and len(elements) == w - 1:
                size, pos = n - pos, pos
            else:
                try:
                    size, pos = leb128(payload, pos, "AV1 OBU element")
                except CodecError as error:
                    raise Av1Error(str(error)) from None
            if pos + size > n:
                raise Av1Error("OBU element runs past the end")
            elements.append(bytes(payload[pos : pos + size]))
            pos += size
            if len(elements) > MAX_OBUS:
                raise Av1Error(f"more than {MAX_OBUS} OBU elements")
        if not elements or (w and len(elements) != w):
            raise Av1Error("OBU element count does not match W")
        for index, element in enumerate(elements):
            if index == 0 and self._fragment is not None:
                self._fragment += element
                element, self._fragment = bytes(self._fragment), None
            if index == len(elements) - 1 and y:
                self._fragment = bytearray(element)
                break
            self._obu(element)

    def _obu(self, obu: bytes) -> None:
        if not obu:
            raise Av1Error("empty OBU element")
        header = obu[0]
        if header & 0x80:
            raise Av1Error("OBU forbidden bit set")
        start = 1 + ((header >> 2) & 1)
        if start > len(obu):
            raise Av1Error("OBU shorter than its header")
        body: bytes = obu[start:]
        if header & 0x02:
            try:
                size, at = leb128(obu, start, "AV1 OBU")
            except CodecError as error:
                raise Av1Error(str(error)) from None
            if at + size > len(obu):
                raise Av1Error("OBU size field runs past its element")
            body = obu[at : at + size]
        kind = (header >> 3) & 0x0F
        if kind in _NOT_SENT:
            return
        if len(self._obus) >= MAX_OBUS:
            raise Av1Error(f"more than {MAX_OBUS} OBUs in a temporal unit")
        full = bytes([header | 0x02]) + obu[1:start] + _leb128(len(body)) + body
        self._obus.append(full)
        if kind == OBU_SEQUENCE_HEADER and self._sequence is None:
            self._sequence = full
        elif kind in (OBU_FRAME, OBU_FRAME_HEADER) and self._first_frame is None:
            self._first_frame = body

    def _build(self) -> tuple[bytes, bool, bytes | None] | None:
        if self._fragment is not None or not self._obus:
            return None
        keyframe = self._sequence is not None and self._first_frame is not None
        keyframe = keyframe and is_key_frame_header(self._first_frame or b"")
        config = None
        if self._sequence is not None:
            try:
                config = av1_config_record(self._sequence)
            except CodecError:
                config = None
        return b"".join(self._obus), keyframe, config
