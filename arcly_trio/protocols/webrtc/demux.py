"""Which protocol a datagram on the one WebRTC port belongs to (RFC 7983, RFC 5761).

Issue 22 carries ICE (STUN), DTLS and SRTP/SRTCP of every WebRTC session on one UDP port (and
ICE-TCP framing on the same number). The first byte tells them apart (RFC 7983 section 7):

* 0-3: STUN (also needs the 20-byte header: shorter is :attr:`PacketKind.UNKNOWN`);
* 20-63: DTLS (a record header is 13 bytes);
* 128-191: RTP or RTCP (version 2). With rtcp-mux (RFC 5761 section 4), RTCP is told from RTP
  by the second byte: an RTCP packet type is 192-223 (the byte with its marker bit cleared is
  64-95); RTP payload types in that range are not used with rtcp-mux. RTP needs its 12-byte
  fixed header, RTCP its 8-byte one (a receiver report without blocks).

Everything else (ZRTP 16-19, TURN channels 64-79, anything unassigned, an empty datagram) is
:attr:`PacketKind.UNKNOWN`, which the worker drops and counts.

Attacker's view: a pure function of at most the first two bytes and the length; it copies
nothing and keeps no state, so it is safe on every datagram before any session is found.

Error policy: :func:`classify` never raises (any ``bytes``-like input gives a kind); what it
cannot place is :attr:`PacketKind.UNKNOWN`, not an error.
"""

from __future__ import annotations

import enum
from typing import Final

__all__ = ["PacketKind", "classify", "MIN_STUN", "MIN_DTLS", "MIN_RTP", "MIN_RTCP"]

MIN_STUN: Final = 20
"""A STUN header's size: the shortest STUN message."""
MIN_DTLS: Final = 13
"""A DTLS record header's size."""
MIN_RTP: Final = 12
"""The RTP fixed header's size."""
MIN_RTCP: Final = 8
"""The shortest RTCP packet (a receiver report without report blocks)."""


class PacketKind(enum.Enum):
    """What a datagram on the WebRTC port is."""

    STUN = "stun"
    DTLS = "dtls"
    RTP = "rtp"
    RTCP = "rtcp"
    UNKNOWN = "unknown"


def classify(datagram: bytes | bytearray | memoryview) -> PacketKind:
    """The kind of ``datagram`` by RFC 7983's first-byte ranges and RFC 5761's RTCP types."""
    size = len(datagram)
    if size == 0:
        return PacketKind.UNKNOWN
    first = datagram[0]
    if first <= 3:
        return PacketKind.STUN if size >= MIN_STUN else PacketKind.UNKNOWN
    if 20 <= first <= 63:
        return PacketKind.DTLS if size >= MIN_DTLS else PacketKind.UNKNOWN
    if 128 <= first <= 191:
        if size >= 2 and 64 <= (datagram[1] & 0x7F) <= 95:
            return PacketKind.RTCP if size >= MIN_RTCP else PacketKind.UNKNOWN
        return PacketKind.RTP if size >= MIN_RTP else PacketKind.UNKNOWN
    return PacketKind.UNKNOWN
