"""RTCP (RFC 3550, RFC 4585, RFC 5104, REMB): compound packets parsed, and what WHIP/WHEP send
built (sans-IO).

The control plane of the WebRTC core (issue 22): a WHEP viewer's receiver reports (loss,
jitter, round-trip time), its NACKs (retransmission from the viewer's
:class:`~arcly_trio.protocols.webrtc.rtp.SendHistory`), its PLI/FIR (start it at the next
keyframe), its REMB (estimated bandwidth); a WHIP publisher's sender reports (lip sync).

* :func:`parse_rtcp` reads one (decrypted) compound datagram into a list of
  :class:`SenderReport`, :class:`ReceiverReport`, :class:`Bye`, :class:`Nack`, :class:`Pli`,
  :class:`Fir` and :class:`Remb`; SDES, APP, XR, transport-wide congestion control feedback
  and anything unknown are skipped (each packet's length is still checked).
* :func:`sender_report`, :func:`receiver_report`, :func:`sdes_cname`, :func:`bye`,
  :func:`nack` (sequence numbers packed into PID+BLP), :func:`pli`, :func:`fir` and
  :func:`remb` build one packet each; a compound packet is their concatenation.
* :func:`rtt_from_report` is the round trip of RFC 3550 section 6.4.1 from a report block's
  LSR/DLSR; :func:`ntp_timestamp` converts a Unix time to the 64-bit NTP format.

Attacker's view: a datagram is parsed in one pass; each packet's length field is checked
against what is left before it is read, so nothing is read past the end and allocation is in
proportion to the datagram. A NACK is expanded to at most :data:`MAX_NACK_SEQUENCES` sequence
numbers per datagram (a retransmission storm is the caller's budget, but the list is bounded).

Error policy: :func:`parse_rtcp` raises :class:`RtcpError` (a
:class:`~arcly_trio.core.errors.RemoteProtocolError`) for a datagram that is not well-formed
RTCP (version, lengths, padding, a known packet too short for what it announces) and nothing
else (fuzzed). The builders raise :class:`RtcpBuildError` (a
:class:`~arcly_trio.core.errors.LocalProtocolError`) for values they cannot encode.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Final

import attrs

from arcly_trio.core.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "SR",
    "RR",
    "SDES",
    "BYE",
    "APP",
    "RTPFB",
    "PSFB",
    "MAX_NACK_SEQUENCES",
    "RtcpError",
    "RtcpBuildError",
    "ReportBlock",
    "SenderReport",
    "ReceiverReport",
    "Bye",
    "Nack",
    "Pli",
    "Fir",
    "Remb",
    "RtcpPacket",
    "is_rtcp",
    "parse_rtcp",
    "sender_report",
    "receiver_report",
    "sdes_cname",
    "bye",
    "nack",
    "pli",
    "fir",
    "remb",
    "ntp_timestamp",
    "rtt_from_report",
]

SR: Final = 200
RR: Final = 201
SDES: Final = 202
BYE: Final = 203
APP: Final = 204
RTPFB: Final = 205
PSFB: Final = 206

_FMT_NACK: Final = 1
_FMT_PLI: Final = 1
_FMT_FIR: Final = 4
_FMT_AFB: Final = 15

MAX_NACK_SEQUENCES: Final = 1024
"""The most sequence numbers read from the NACKs of one datagram."""

_HEADER: Final = struct.Struct("!BBH")
_REPORT_BLOCK: Final = struct.Struct("!IBBHIIII")
_SENDER_INFO: Final = struct.Struct("!IIIIII")  # ssrc, ntp msw, ntp lsw, rtp ts, packets, octets
_NTP_EPOCH_OFFSET: Final = 2_208_988_800  # seconds from 1900-01-01 to 1970-01-01


class RtcpError(RemoteProtocolError):
    """A datagram that is not well-formed RTCP."""


class RtcpBuildError(LocalProtocolError):
    """Values that cannot be written as RTCP (out of range, too many report blocks)."""


@attrs.frozen(slots=True)
class ReportBlock:
    """One reception report (RFC 3550 section 6.4.1) about the source ``ssrc``.

    ``fraction_lost`` is out of 256 since the last report, ``cumulative_lost`` a signed 24-bit
    count, ``highest_sequence`` the extended highest sequence number received, ``jitter`` in
    timestamp units, ``lsr`` the middle 32 bits of the last SR's NTP time and ``dlsr`` the delay
    since it, in 1/65536 seconds.
    """

    ssrc: int
    fraction_lost: int = 0
    cumulative_lost: int = 0
    highest_sequence: int = 0
    jitter: int = 0
    lsr: int = 0
    dlsr: int = 0


@attrs.frozen(slots=True)
class SenderReport:
    """SR: ``ntp`` is the 64-bit NTP timestamp (see :attr:`unix_time`, :attr:`compact`)."""

    ssrc: int
    ntp: int
    rtp_timestamp: int
    packets: int
    octets: int
    reports: tuple[ReportBlock, ...] = ()

    @property
    def unix_time(self) -> float:
        """The NTP timestamp as seconds since 1970."""
        return (self.ntp >> 32) - _NTP_EPOCH_OFFSET + (self.ntp & 0xFFFFFFFF) / 2**32

    @property
    def compact(self) -> int:
        """The middle 32 bits of the NTP timestamp: the ``lsr`` a report about this sender carries."""
        return (self.ntp >> 16) & 0xFFFFFFFF


@attrs.frozen(slots=True)
class ReceiverReport:
    """RR from ``ssrc``."""

    ssrc: int
    reports: tuple[ReportBlock, ...] = ()


@attrs.frozen(slots=True)
class Bye:
    """BYE: the sources leaving and the reason given (decoded leniently)."""

    ssrcs: tuple[int, ...]
    reason: str = ""


@attrs.frozen(slots=True)
class Nack:
    """Generic NACK (RFC 4585 6.2.1): the sequence numbers ``media_ssrc`` should resend."""

    sender_ssrc: int
    media_ssrc: int
    sequences: tuple[int, ...]


@attrs.frozen(slots=True)
class Pli:
    """Picture loss indication (RFC 4585 6.3.1): send a keyframe on ``media_ssrc``."""

    sender_ssrc: int
    media_ssrc: int


@attrs.frozen(slots=True)
class Fir:
    """Full intra request (RFC 5104 4.3.1): ``entries`` are ``(media ssrc, command sequence)``."""

    sender_ssrc: int
    entries: tuple[tuple[int, int], ...]


@attrs.frozen(slots=True)
class Remb:
    """Receiver estimated maximum bitrate (draft-alvestrand-rmcat-remb): ``bitrate`` in bit/s
    for the streams ``ssrcs``."""

    sender_ssrc: int
    bitrate: int
    ssrcs: tuple[int, ...]


RtcpPacket = SenderReport | ReceiverReport | Bye | Nack | Pli | Fir | Remb


def is_rtcp(datagram: bytes) -> bool:
    """Whether an RTP-or-RTCP datagram (first byte 128-191, RFC 7983) is RTCP: payload type
    (with the marker bit) 192 to 223 (RFC 5761 section 4)."""
    return len(datagram) >= 2 and 192 <= datagram[1] <= 223


def parse_rtcp(datagram: bytes) -> list[RtcpPacket]:
    """The packets of one compound RTCP datagram that this module reads (see the module
    docstring); raise :class:`RtcpError` if malformed."""
    packets: list[RtcpPacket] = []
    position, size = 0, len(datagram)
    nack_budget = [MAX_NACK_SEQUENCES]
    if size < _HEADER.size:
        raise RtcpError(f"an RTCP packet is at least {_HEADER.size} bytes, not {size}")
    while position < size:
        if position + _HEADER.size > size:
            raise RtcpError("an RTCP header is cut short")
        first, kind, words = _HEADER.unpack_from(datagram, position)
        if first >> 6 != 2:
            raise RtcpError(f"RTCP version {first >> 6}, not 2")
        end = position + 4 * (words + 1)
        if end > size:
            raise RtcpError(f"an RTCP packet of {4 * (words + 1)} bytes runs past the datagram")
        body_end = end
        if first & 0x20:
            if end != size:
                raise RtcpError("RTCP padding on a packet that is not the last of the compound")
            padding = datagram[end - 1]
            if padding == 0 or padding > end - position - _HEADER.size:
                raise RtcpError(f"RTCP padding of {padding} bytes does not fit")
            body_end -= padding
        body = bytes(datagram[position + _HEADER.size : body_end])
        parsed = _parse_one(first & 0x1F, kind, body, nack_budget)
        if parsed is not None:
            packets.append(parsed)
        position = end
    return packets


def _parse_one(count: int, kind: int, body: bytes, nack_budget: list[int]) -> RtcpPacket | None:
    if kind == SR:
        if len(body) < _SENDER_INFO.size + _REPORT_BLOCK.size * count:
            raise RtcpError(f"an SR with {count} report blocks is cut short")
        ssrc, msw, lsw, rtp_ts, packets, octets = _SENDER_INFO.unpack_from(body)
        reports = _report_blocks(body, _SENDER_INFO.size, count)
        return SenderReport(ssrc, (msw << 32) | lsw, rtp_ts, packets, octets, reports)
    if kind == RR:
        if len(body) < 4 + _REPORT_BLOCK.size * count:
            raise RtcpError(f"an RR with {count} report blocks is cut short")
        return ReceiverReport(struct.unpack_from("!I", body)[0], _report_blocks(body, 4, count))
    if kind == BYE:
        if len(body) < 4 * count:
            raise RtcpError(f"a BYE of {count} sources is cut short")
        ssrcs = struct.unpack_from(f"!{count}I", body)
        reason = ""
        if len(body) > 4 * count:
            length = body[4 * count]
            reason = body[4 * count + 1 : 4 * count + 1 + length].decode("utf-8", "replace")
        return Bye(tuple(ssrcs), reason)
    if kind in (RTPFB, PSFB):
        if len(body) < 8:
            raise RtcpError(f"a feedback message of {len(body)} bytes has no SSRCs")
        sender, media = struct.unpack_from("!II", body)
        fci = body[8:]
        if kind == RTPFB and count == _FMT_NACK:
            return Nack(sender, media, _nack_sequences(fci, nack_budget))
        if kind == PSFB and count == _FMT_PLI:
            return Pli(sender, media)
        if kind == PSFB and count == _FMT_FIR:
            if len(fci) % 8:
                raise RtcpError("a FIR whose entries are not 8 bytes each")
            entries = tuple((ssrc, seq) for ssrc, seq, _ in struct.iter_unpack("!IB3s", fci))
            return Fir(sender, entries)
        if kind == PSFB and count == _FMT_AFB and fci[:4] == b"REMB":
            return _remb(sender, fci)
    return None  # SDES, APP, XR, transport-cc and anything unknown


def _report_blocks(body: bytes, position: int, count: int) -> tuple[ReportBlock, ...]:
    blocks = []
    for index in range(count):
        ssrc, fraction, lost_high, lost_low, highest, jitter, lsr, dlsr = _REPORT_BLOCK.unpack_from(
            body, position + index * _REPORT_BLOCK.size
        )
        lost = (lost_high << 16) | lost_low
        if lost & 0x800000:
            lost -= 1 << 24
        blocks.append(ReportBlock(ssrc, fraction, lost, highest, jitter, lsr, dlsr))
    return tuple(blocks)


def _nack_sequences(fci: bytes, budget: list[int]) -> tuple[int, ...]:
    if len(fci) % 4:
        raise RtcpError("a generic NACK whose entries are not 4 bytes each")
    sequences: list[int] = []
    for pid, blp in struct.iter_unpack("!HH", fci):
        for bit in range(17):
            if budget[0] <= 0:
                return tuple(sequences)
            if bit == 0 or blp & (1 << (bit - 1)):
                sequences.append((pid + bit) & 0xFFFF)
                budget[0] -= 1
    return tuple(sequences)


def _remb(sender: int, fci: bytes) -> Remb:
    if len(fci) < 8:
        raise RtcpError("a REMB is cut short")
    count = fci[4]
    if len(fci) < 8 + 4 * count:
        raise RtcpError(f"a REMB of {count} SSRCs is cut short")
    exponent = fci[5] >> 2
    mantissa = ((fci[5] & 0x03) << 16) | (fci[6] << 8) | fci[7]
    ssrcs = struct.unpack_from(f"!{count}I", fci, 8)
    return Remb(sender, mantissa << exponent, tuple(ssrcs))


def _packet(count: int, kind: int, body: bytes) -> bytes:
    if len(body) % 4:
        raise RtcpBuildError("an RTCP body must be a whole number of words")
    if not 0 <= count <= 31 or len(body) // 4 > 0xFFFF:
        raise RtcpBuildError(f"an RTCP packet with count {count} and {len(body)} bytes")
    return _HEADER.pack(0x80 | count, kind, len(body) // 4) + body


def _blocks(reports: Iterable[ReportBlock]) -> tuple[int, bytes]:
    blocks = list(reports)
    if len(blocks) > 31:
        raise RtcpBuildError(f"{len(blocks)} report blocks, over 31")
    data = bytearray()
    try:
        for b in blocks:
            lost = b.cumulative_lost & 0xFFFFFF
            if not -(1 << 23) <= b.cumulative_lost < 1 << 23:
                raise RtcpBuildError(f"cumulative loss {b.cumulative_lost} is not 24 bits")
            data += _REPORT_BLOCK.pack(
                b.ssrc, b.fraction_lost, lost >> 16, lost & 0xFFFF, b.highest_sequence, b.jitter, b.lsr, b.dlsr
            )
    except struct.error as error:
        raise RtcpBuildError(f"a report block out of range: {error}") from None
    return len(blocks), bytes(data)


def ntp_timestamp(unix_time: float) -> int:
    """The 64-bit NTP timestamp of a Unix time in seconds."""
    seconds = int(unix_time // 1)
    fraction = int((unix_time - seconds) * 2**32) & 0xFFFFFFFF
    return (((seconds + _NTP_EPOCH_OFFSET) & 0xFFFFFFFF) << 32) | fraction


def sender_report(
    ssrc: int,
    ntp_time: float,
    rtp_timestamp: int,
    packets: int,
    octets: int,
    reports: Iterable[ReportBlock] = (),
) -> bytes:
    """SR for ``ssrc`` at wall-clock ``ntp_time`` (Unix seconds) matching ``rtp_timestamp``;
    ``packets`` and ``octets`` are taken modulo 2**32 (RFC 3550: they wrap)."""
    count, blocks = _blocks(reports)
    ntp = ntp_timestamp(ntp_time)
    try:
        info = _SENDER_INFO.pack(
            ssrc, ntp >> 32, ntp & 0xFFFFFFFF, rtp_timestamp & 0xFFFFFFFF, packets & 0xFFFFFFFF, octets & 0xFFFFFFFF
        )
    except struct.error as error:
        raise RtcpBuildError(f"an SR field out of range: {error}") from None
    return _packet(count, SR, info + blocks)


def receiver_report(ssrc: int, reports: Iterable[ReportBlock] = ()) -> bytes:
    """RR from ``ssrc`` with up to 31 report blocks."""
    count, blocks = _blocks(reports)
    return _packet(count, RR, _ssrcs(ssrc) + blocks)


def sdes_cname(ssrc: int, cname: str) -> bytes:
    """SDES with one chunk: the CNAME of ``ssrc`` (at most 255 UTF-8 bytes)."""
    text = cname.encode()
    if len(text) > 255:
        raise RtcpBuildError(f"a CNAME of {len(text)} bytes, over 255")
    chunk = _ssrcs(ssrc) + bytes((1, len(text))) + text
    chunk += bytes(4 - len(chunk) % 4)  # the item list ends with at least one null byte
    return _packet(1, SDES, chunk)


def bye(ssrcs: Iterable[int], reason: str = "") -> bytes:
    """BYE for ``ssrcs`` (up to 31) with an optional reason (at most 255 UTF-8 bytes)."""
    sources = list(ssrcs)
    body = _ssrcs(*sources)
    if reason:
        text = reason.encode()
        if len(text) > 255:
            raise RtcpBuildError(f"a BYE reason of {len(text)} bytes, over 255")
        body += bytes((len(text),)) + text
        body += bytes(-len(body) % 4)
    return _packet(len(sources), BYE, body)


def nack(sender_ssrc: int, media_ssrc: int, seqs: Iterable[int]) -> bytes:
    """Generic NACK asking ``media_ssrc`` for ``seqs`` (16-bit, duplicates ignored), packed into
    as few PID+BLP entries as the sequence numbers allow, in order from the first given
    (across the wrap)."""
    wanted = [s & 0xFFFF for s in seqs]
    if not wanted:
        raise RtcpBuildError("a NACK needs at least one sequence number")
    origin = wanted[0]
    ordered = sorted(set(wanted), key=lambda s: (s - origin) & 0xFFFF)
    fci = bytearray()
    index = 0
    while index < len(ordered):
        pid = ordered[index]
        blp = 0
        index += 1
        while index < len(ordered) and 0 < (ordered[index] - pid) & 0xFFFF <= 16:
            blp |= 1 << (((ordered[index] - pid) & 0xFFFF) - 1)
            index += 1
        fci += struct.pack("!HH", pid, blp)
    return _packet(_FMT_NACK, RTPFB, _ssrcs(sender_ssrc, media_ssrc) + bytes(fci))


def pli(sender_ssrc: int, media_ssrc: int) -> bytes:
    """Picture loss indication: ask ``media_ssrc`` for a keyframe."""
    return _packet(_FMT_PLI, PSFB, _ssrcs(sender_ssrc, media_ssrc))


def fir(sender_ssrc: int, media_ssrc: int, sequence: int) -> bytes:
    """Full intra request to ``media_ssrc``; ``sequence`` is the command sequence number
    (taken modulo 256), to be increased for each new request."""
    fci = _ssrcs(media_ssrc) + bytes((sequence & 0xFF, 0, 0, 0))
    return _packet(_FMT_FIR, PSFB, _ssrcs(sender_ssrc, 0) + fci)


def remb(sender_ssrc: int, bitrate: int, ssrcs: Iterable[int]) -> bytes:
    """REMB: ``bitrate`` (bit/s, rounded down to 18 bits of mantissa) for ``ssrcs``."""
    sources = list(ssrcs)
    if bitrate < 0 or len(sources) > 255:
        raise RtcpBuildError("a REMB needs a bitrate >= 0 and at most 255 SSRCs")
    exponent = max(0, bitrate.bit_length() - 18)
    if exponent > 63:
        raise RtcpBuildError(f"a REMB bitrate of {bitrate} is too large")
    mantissa = bitrate >> exponent
    fci = b"REMB" + bytes((len(sources), (exponent << 2) | (mantissa >> 16), (mantissa >> 8) & 0xFF, mantissa & 0xFF))
    return _packet(_FMT_AFB, PSFB, _ssrcs(sender_ssrc, 0) + fci + _ssrcs(*sources))


def _ssrcs(*values: int) -> bytes:
    try:
        return struct.pack(f"!{len(values)}I", *values)
    except struct.error as error:
        raise RtcpBuildError(f"an SSRC out of range: {error}") from None


def rtt_from_report(block: ReportBlock, now_ntp: float) -> float | None:
    """The round-trip time in seconds to the receiver that sent ``block`` about one of our
    streams (RFC 3550 6.4.1: arrival - LSR - DLSR), where ``now_ntp`` is the arrival time as
    Unix seconds on the clock our SRs were stamped with (:func:`sender_report`'s ``ntp_time``);
    ``None`` without an SR to refer to (LSR 0) or when the result would be negative."""
    if block.lsr == 0:
        return None
    arrival = (ntp_timestamp(now_ntp) >> 16) & 0xFFFFFFFF
    rtt = (arrival - block.lsr - block.dlsr) & 0xFFFFFFFF
    if rtt >= 1 << 31:
        return None
    return rtt / 65536
