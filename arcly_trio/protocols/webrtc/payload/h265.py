"""H.265 (HEVC) over RTP, RFC 7798: packetize an access unit, put access units back together.

The kernel carries HEVC access units as NAL units after 4-byte lengths (HVCC). Three of the
RFC's payload structures are used, without decoding order numbers (``sprop-max-don-diff`` 0,
so no DONL/DOND fields):

* a single NAL unit packet: the NAL unit as it is (types 0 to 47);
* an aggregation packet (AP, type 48): a payload header, then NAL units each after a 16-bit
  size, for small NAL units (parameter sets, SEI) that fit together;
* a fragmentation unit (FU, type 49): a payload header, an FU header (``S``, ``E``, the NAL
  unit type) and a piece of a NAL unit too large for one packet.

:func:`packetize` sends the ``prefix`` NAL units first (VPS, SPS and PPS for a receiver joining
at a keyframe: :func:`parameter_sets` reads them from an hvcC) unless the access unit carries
its own, then every NAL unit, aggregating what fits. :class:`H265Depacketizer` gives back HVCC
access units; a keyframe is one holding an IRAP picture (NAL types 16-23); ``config`` is an hvcC
built from the VPS, SPS and PPS when they appear in band or change.

Attacker's view: a depacketizer holds at most one access unit, bounded by
:data:`~arcly_trio.protocols.webrtc.payload.assembly.MAX_ACCESS_UNIT` bytes and
:data:`~arcly_trio.media.codecs.nal.MAX_NAL_UNITS` NAL units; PACI packets and reserved types
are dropped; every length is checked against what arrived.

Error policy: :class:`H265Depacketizer` never raises for a peer's payloads (it drops and
counts them, see :mod:`~arcly_trio.protocols.webrtc.payload`); :func:`packetize` raises
:class:`H265PayloadError` (a :class:`~arcly_trio.core.errors.LocalProtocolError`) for an access
unit it cannot carry (malformed HVCC, an MTU too small); :func:`parameter_sets` raises
:class:`~arcly_trio.media.codecs.errors.CodecError` for a malformed hvcC.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from arcly_trio.core.errors import LocalProtocolError, RemoteProtocolError
from arcly_trio.media.codecs.errors import CodecError
from arcly_trio.media.codecs.hevc import hevc_config_record, parse_hevc_config
from arcly_trio.media.codecs.nal import (
    HEVC_NAL_PPS,
    HEVC_NAL_SPS,
    HEVC_NAL_VPS,
    MAX_NAL_UNITS,
    has_idr,
    split_nal_units,
)
from arcly_trio.protocols.webrtc.payload.assembly import Assembly

__all__ = [
    "AP",
    "FU",
    "MIN_MTU",
    "H265Depacketizer",
    "H265PayloadError",
    "H265Error",
    "packetize",
    "parameter_sets",
]

AP: Final = 48
FU: Final = 49
_PACI: Final = 50
#: The smallest MTU :func:`packetize` accepts (a payload header, an FU header and some data).
MIN_MTU: Final = 8


class H265PayloadError(LocalProtocolError):
    """An access unit :func:`packetize` cannot carry."""


class H265Error(RemoteProtocolError):
    """An RTP payload that is not valid RFC 7798 H.265 (caught inside the depacketizer)."""


def _type(nal: bytes) -> int:
    return (nal[0] >> 1) & 0x3F


def parameter_sets(hvcc: bytes) -> tuple[bytes, ...]:
    """The VPS, SPS and PPS NAL units of an hvcC record, in that order: the ``prefix`` of
    :func:`packetize` for a keyframe."""
    config = parse_hevc_config(hvcc)
    return config.vps + config.sps + config.pps


def packetize(payload: bytes, mtu: int, *, prefix: Sequence[bytes] = ()) -> list[bytes]:
    """The RTP payloads of one HVCC access unit, each at most ``mtu`` bytes (see the module
    docstring)."""
    if mtu < MIN_MTU:
        raise H265PayloadError(f"MTU {mtu} is below {MIN_MTU}")
    try:
        nals = split_nal_units(payload, 4)
    except CodecError as error:
        raise H265PayloadError(f"access unit is not HVCC: {error}") from None
    if any(len(nal) < 2 or nal[0] & 0x80 or _type(nal) >= AP for nal in nals):
        raise H265PayloadError("a NAL unit shorter than its header, with F set or of a type RTP reserves (48-63)")
    own = {_type(nal) for nal in nals}
    if prefix and not {HEVC_NAL_VPS, HEVC_NAL_SPS, HEVC_NAL_PPS} <= own:
        nals = [bytes(nal) for nal in prefix if len(nal) >= 2 and not nal[0] & 0x80 and _type(nal) < AP] + nals
    packets: list[bytes] = []
    group: list[bytes] = []

    def flush() -> None:
        if len(group) == 1:
            packets.append(group[0])
        elif group:
            f = max(nal[0] & 0x80 for nal in group)
            layer = min(((nal[0] & 1) << 5) | (nal[1] >> 3) for nal in group)
            tid = min(nal[1] & 0x07 for nal in group)
            header = bytes([f | (AP << 1) | (layer >> 5), ((layer & 0x1F) << 3) | tid])
            packets.append(header + b"".join(len(nal).to_bytes(2, "big") + nal for nal in group))
        group.clear()

    def size(units: list[bytes]) -> int:
        return len(units[0]) if len(units) == 1 else 2 + sum(2 + len(u) for u in units)

    for nal in nals:
        if len(nal) > mtu:
            flush()
            header = bytes([(nal[0] & 0x81) | (FU << 1), nal[1]])
            body = memoryview(nal)[2:]
            step = mtu - 3
            for start in range(0, len(body), step):
                fu = _type(nal)
                if start == 0:
                    fu |= 0x80
                if start + step >= len(body):
                    fu |= 0x40
                packets.append(header + bytes([fu]) + bytes(body[start : start + step]))
            continue
        if group and size([*group, nal]) > mtu:
            flush()
        group.append(nal)
    flush()
    return packets


class H265Depacketizer(Assembly):
    """RFC 7798 payloads in, HVCC access units out (see
    :class:`~arcly_trio.protocols.webrtc.payload.Depacketizer`)."""

    def __init__(self) -> None:
        super().__init__()
        self._nals: list[bytes] = []
        self._fragment: bytearray | None = None

    def _reset(self) -> None:
        self._nals = []
        self._fragment = None

    def _nal(self, nal: bytes) -> None:
        if len(nal) < 2 or nal[0] & 0x80:
            raise H265Error("NAL unit shorter than its header or with F set")
        if len(self._nals) >= MAX_NAL_UNITS:
            raise H265Error(f"more than {MAX_NAL_UNITS} NAL units in an access unit")
        self._nals.append(nal)

    def _add(self, payload: bytes) -> None:
        if len(payload) < 2:
            raise H265Error("payload shorter than a payload header")
        kind = _type(payload)
        if kind == FU:
            if len(payload) < 3:
                raise H265Error("FU without its FU header")
            fu = payload[2]
            start, end = bool(fu & 0x80), bool(fu & 0x40)
            if start:
                if self._fragment is not None:
                    raise H265Error("FU start inside an unfinished FU")
                header = bytes([(payload[0] & 0x81) | ((fu & 0x3F) << 1), payload[1]])
                self._fragment = bytearray(header)
            elif self._fragment is None:
                raise H265Error("FU continuation without a start")
            self._fragment += payload[3:]
            if end:
                nal, self._fragment = bytes(self._fragment), None
                self._nal(nal)
            return
        if self._fragment is not None:
            raise H265Error("unfinished FU")
        if kind == AP:
            pos = 2
            while pos < len(payload):
                if pos + 2 > len(payload):
                    raise H265Error("AP: truncated NAL unit size")
                size = (payload[pos] << 8) | payload[pos + 1]
                pos += 2
                if size == 0 or pos + size > len(payload):
                    raise H265Error("AP: NAL unit size runs past the end")
                self._nal(bytes(payload[pos : pos + size]))
                pos += size
            return
        if kind >= _PACI:
            raise H265Error(f"unsupported payload type {kind}")
        self._nal(bytes(payload))

    def _build(self) -> tuple[bytes, bool, bytes | None] | None:
        if self._fragment is not None or not self._nals:
            return None
        nals = self._nals
        payload = b"".join(len(nal).to_bytes(4, "big") + nal for nal in nals)
        groups: dict[int, list[bytes]] = {HEVC_NAL_VPS: [], HEVC_NAL_SPS: [], HEVC_NAL_PPS: []}
        for nal in nals:
            if _type(nal) in groups:
                groups[_type(nal)].append(nal)
        config = None
        if all(groups.values()):
            try:
                config = hevc_config_record(groups[HEVC_NAL_VPS], groups[HEVC_NAL_SPS], groups[HEVC_NAL_PPS])
            except CodecError:
                config = None
        return payload, has_idr(nals, "hevc"), config
