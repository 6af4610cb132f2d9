"""The SRT wire codec: data and control packets, the handshake's body and its extensions.

What: every packet is a 16-byte header (a data/control bit, then a 31-bit sequence number or a
15-bit control type and a 16-bit subtype; a message word or type-specific word; a 32-bit
microsecond timestamp; the destination socket id), then a payload (data) or a control
information field (CIF). Facts from the IETF draft ``draft-sharabayko-srt`` (sections 3.1-3.2)
and libsrt's ``packet.h``/``handshake.h``: field layouts, the handshake types (induction 1,
conclusion -1, rejection 1000 + reason), the extension types (HSREQ 1, HSRSP 2, KMREQ 3, KMRSP 4,
SID 5, congestion 6) and the streamid's byte order (each 32-bit word of the string reversed).

How: frozen attrs classes and ``parse``/``to_bytes`` pairs; sequence arithmetic on 31 bits.

Attacker's view: every length is checked against the datagram before it is read; a datagram
is at most :data:`MAX_PACKET` bytes, a handshake carries at most :data:`MAX_EXTENSIONS`
extensions, a streamid at most :data:`MAX_STREAMID` bytes, a NAK at most :data:`MAX_NAK_ITEMS`
words: nothing a peer sends makes this module allocate more than the datagram's size.

Error policy: malformed input raises :class:`~arcly_trio.core.errors.RemoteProtocolError`
(and nothing else); building a packet from values out of range raises
:class:`~arcly_trio.core.errors.LocalProtocolError`.
"""

from __future__ import annotations

import enum
import struct

import attrs

from arcly_trio.core.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "MAX_PACKET",
    "MAX_STREAMID",
    "MAX_EXTENSIONS",
    "MAX_NAK_ITEMS",
    "SEQ_MASK",
    "MSG_MASK",
    "ControlType",
    "HandshakeType",
    "Extension",
    "DataPacket",
    "ControlPacket",
    "Handshake",
    "HsExtension",
    "SrtHs",
    "Ack",
    "parse",
    "seq_add",
    "seq_diff",
    "seq_less",
    "encode_streamid",
    "decode_streamid",
    "encode_losses",
    "decode_losses",
    "HS_VERSION_4",
    "HS_VERSION_5",
    "SRT_MAGIC",
    "HEADER",
    "HANDSHAKE_CIF",
]

MAX_PACKET = 1500
HEADER = 16
HANDSHAKE_CIF = 48
MAX_STREAMID = 512
MAX_EXTENSIONS = 16
MAX_NAK_ITEMS = 256
SEQ_MASK = 0x7FFFFFFF
MSG_MASK = 0x03FFFFFF
HS_VERSION_4 = 4
HS_VERSION_5 = 5
SRT_MAGIC = 0x4A17
"""The extension field of a v5 listener's induction response."""

_WORDS = struct.Struct(">IIII")


class ControlType(enum.IntEnum):
    HANDSHAKE = 0
    KEEPALIVE = 1
    ACK = 2
    NAK = 3
    CONGESTION = 4
    SHUTDOWN = 5
    ACKACK = 6
    DROPREQ = 7
    PEERERROR = 8
    USER = 0x7FFF


class HandshakeType(enum.IntEnum):
    WAVEAHAND = 0
    INDUCTION = 1
    CONCLUSION = 0xFFFFFFFF
    AGREEMENT = 0xFFFFFFFE
    DONE = 0xFFFFFFFD


class Extension(enum.IntEnum):
    HSREQ = 1
    HSRSP = 2
    KMREQ = 3
    KMRSP = 4
    SID = 5
    CONGESTION = 6
    FILTER = 7
    GROUP = 8


FLAG_HSREQ = 0x1
FLAG_KMREQ = 0x2
FLAG_CONFIG = 0x4

# SRT flags of HSREQ/HSRSP
TSBPDSND = 0x01
TSBPDRCV = 0x02
CRYPT = 0x04
TLPKTDROP = 0x08
PERIODICNAK = 0x10
REXMITFLG = 0x20
STREAM = 0x40
PACKET_FILTER = 0x80


def seq_add(seq: int, n: int) -> int:
    return (seq + n) & SEQ_MASK


def seq_diff(a: int, b: int) -> int:
    """``a - b`` on the 31-bit circle, in ``[-2**30, 2**30)``."""
    d = (a - b) & SEQ_MASK
    return d - 0x80000000 if d >= 0x40000000 else d


def seq_less(a: int, b: int) -> bool:
    return seq_diff(a, b) < 0


@attrs.frozen(slots=True)
class DataPacket:
    """A data packet: ``position`` is the PP bits (3 = a whole message), ``key`` the KK bits
    (0 clear, 1 even key, 2 odd key), ``retransmitted`` the R bit."""

    seq: int
    msgno: int
    timestamp: int
    dest: int
    payload: bytes
    position: int = 3
    in_order: bool = False
    key: int = 0
    retransmitted: bool = False

    def to_bytes(self) -> bytes:
        if not 0 <= self.seq <= SEQ_MASK or not 0 <= self.msgno <= MSG_MASK or not 0 <= self.key <= 3:
            raise LocalProtocolError("SRT data packet field out of range")
        word1 = (
            (self.position & 3) << 30
            | int(self.in_order) << 29
            | self.key << 27
            | int(self.retransmitted) << 26
            | self.msgno
        )
        return _WORDS.pack(self.seq, word1, self.timestamp & 0xFFFFFFFF, self.dest) + self.payload


@attrs.frozen(slots=True)
class ControlPacket:
    """A control packet; ``info`` is the type-specific word, ``body`` the CIF."""

    type: int
    subtype: int
    info: int
    timestamp: int
    dest: int
    body: bytes = b""

    def to_bytes(self) -> bytes:
        if not 0 <= self.type <= 0x7FFF:
            raise LocalProtocolError("SRT control type out of range")
        word0 = 0x80000000 | self.type << 16 | (self.subtype & 0xFFFF)
        return _WORDS.pack(word0, self.info & 0xFFFFFFFF, self.timestamp & 0xFFFFFFFF, self.dest) + self.body


def parse(data: bytes) -> DataPacket | ControlPacket:
    """One datagram (see the module docstring for the bounds)."""
    if len(data) < HEADER:
        raise RemoteProtocolError("SRT packet shorter than its header")
    if len(data) > MAX_PACKET:
        raise RemoteProtocolError("SRT packet larger than the MTU")
    word0, word1, timestamp, dest = _WORDS.unpack_from(data)
    if word0 & 0x80000000:
        return ControlPacket((word0 >> 16) & 0x7FFF, word0 & 0xFFFF, word1, timestamp, dest, bytes(data[HEADER:]))
    return DataPacket(
        seq=word0,
        msgno=word1 & MSG_MASK,
        timestamp=timestamp,
        dest=dest,
        payload=bytes(data[HEADER:]),
        position=word1 >> 30,
        in_order=bool(word1 >> 29 & 1),
        key=word1 >> 27 & 3,
        retransmitted=bool(word1 >> 26 & 1),
    )


@attrs.frozen(slots=True)
class HsExtension:
    type: int
    content: bytes


@attrs.frozen(slots=True)
class SrtHs:
    """The HSREQ/HSRSP extension: version, flags and the two TSBPD delays (ms)."""

    version: int
    flags: int
    recv_delay: int
    send_delay: int

    def to_bytes(self) -> bytes:
        return struct.pack(">IIHH", self.version, self.flags, self.recv_delay & 0xFFFF, self.send_delay & 0xFFFF)

    @classmethod
    def parse(cls, content: bytes) -> SrtHs:
        if len(content) < 12:
            raise RemoteProtocolError("SRT HSREQ shorter than 12 bytes")
        version, flags, recv_delay, send_delay = struct.unpack_from(">IIHH", content)
        return cls(version, flags, recv_delay, send_delay)


_HS = struct.Struct(">IHHIIIIII16s")


@attrs.frozen(slots=True)
class Handshake:
    """The handshake CIF (48 bytes) and its extensions (v5 conclusion only)."""

    version: int
    encryption: int
    extension_field: int
    isn: int
    mtu: int
    flow_window: int
    type: int
    socket_id: int
    cookie: int
    peer_ip: bytes = bytes(16)
    extensions: tuple[HsExtension, ...] = ()

    def to_bytes(self) -> bytes:
        out = [
            _HS.pack(
                self.version,
                self.encryption,
                self.extension_field,
                self.isn,
                self.mtu,
                self.flow_window,
                self.type & 0xFFFFFFFF,
                self.socket_id,
                self.cookie,
                self.peer_ip,
            )
        ]
        for ext in self.extensions:
            if len(ext.content) % 4:
                raise LocalProtocolError("SRT handshake extension not a whole number of words")
            out.append(struct.pack(">HH", ext.type, len(ext.content) // 4) + ext.content)
        return b"".join(out)

    @classmethod
    def parse(cls, body: bytes) -> Handshake:
        if len(body) < HANDSHAKE_CIF:
            raise RemoteProtocolError("SRT handshake shorter than 48 bytes")
        fields = _HS.unpack_from(body)
        extensions: list[HsExtension] = []
        offset = HANDSHAKE_CIF
        if fields[0] == HS_VERSION_5:
            while offset + 4 <= len(body):
                if len(extensions) >= MAX_EXTENSIONS:
                    raise RemoteProtocolError("too many SRT handshake extensions")
                kind, words = struct.unpack_from(">HH", body, offset)
                offset += 4
                end = offset + words * 4
                if end > len(body):
                    raise RemoteProtocolError("SRT handshake extension longer than the packet")
                extensions.append(HsExtension(kind, bytes(body[offset:end])))
                offset = end
        return cls(*fields, extensions=tuple(extensions))

    def extension(self, kind: int) -> bytes | None:
        for ext in self.extensions:
            if ext.type == kind:
                return ext.content
        return None


def encode_streamid(text: str) -> bytes:
    """The SID extension's content: UTF-8, zero-padded to words, each word's bytes reversed."""
    raw = text.encode()
    if len(raw) > MAX_STREAMID:
        raise LocalProtocolError("SRT streamid longer than 512 bytes")
    raw += bytes(-len(raw) % 4)
    return b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))


def decode_streamid(content: bytes) -> str:
    if len(content) > MAX_STREAMID or len(content) % 4:
        raise RemoteProtocolError("SRT streamid too long or not whole words")
    raw = b"".join(content[i : i + 4][::-1] for i in range(0, len(content), 4)).rstrip(b"\0")
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise RemoteProtocolError("SRT streamid is not UTF-8") from None


@attrs.frozen(slots=True)
class Ack:
    """A full ACK's CIF (a light ACK has only ``last``)."""

    last: int
    rtt: int = 100_000
    rtt_var: int = 50_000
    buffer: int = 8192
    packet_rate: int = 0
    capacity: int = 0
    byte_rate: int = 0

    def to_bytes(self) -> bytes:
        return struct.pack(
            ">IIIIIII", self.last, self.rtt, self.rtt_var, self.buffer, self.packet_rate, self.capacity, self.byte_rate
        )

    @classmethod
    def parse(cls, body: bytes) -> Ack:
        if len(body) < 4:
            raise RemoteProtocolError("SRT ACK without a sequence number")
        words = [int.from_bytes(body[i : i + 4], "big") for i in range(0, min(len(body), 28) // 4 * 4, 4)]
        return cls(words[0] & SEQ_MASK, *words[1:7])


def encode_losses(ranges: list[tuple[int, int]]) -> bytes:
    """A NAK's CIF: a single loss as its number, a range as first|0x80000000, last."""
    out = bytearray()
    for first, last in ranges:
        if first == last:
            out += first.to_bytes(4, "big")
        else:
            out += (first | 0x80000000).to_bytes(4, "big") + last.to_bytes(4, "big")
    return bytes(out)


def decode_losses(body: bytes) -> list[tuple[int, int]]:
    """The (first, last) ranges of a NAK (bounded by :data:`MAX_NAK_ITEMS` words)."""
    count = min(len(body) // 4, MAX_NAK_ITEMS)
    words = [int.from_bytes(body[i * 4 : i * 4 + 4], "big") for i in range(count)]
    out: list[tuple[int, int]] = []
    index = 0
    while index < count:
        word = words[index]
        if word & 0x80000000:
            if index + 1 >= count:
                raise RemoteProtocolError("SRT NAK range without its end")
            first, last = word & SEQ_MASK, words[index + 1] & SEQ_MASK
            if seq_less(last, first):
                raise RemoteProtocolError("SRT NAK range backwards")
            out.append((first, last))
            index += 2
        else:
            out.append((word & SEQ_MASK, word & SEQ_MASK))
            index += 1
    return out
