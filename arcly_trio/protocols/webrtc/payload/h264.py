"""H.264 over RTP (RFC 6184), packetization-mode 1: single NAL unit packets, STAP-A, FU-A.

The H.264 payload format of the WebRTC core (issue 22), following the package interface
(:mod:`arcly_trio.protocols.webrtc.payload`).

* :func:`packetize` cuts one access unit (length-prefixed NAL units, 4-byte lengths: the
  kernel's frame convention) into RTP payloads of at most ``mtu`` bytes: runs of NAL units that
  fit together go in one STAP-A (RFC 6184 5.7.1), a NAL unit alone in a packet goes as a single
  NAL unit packet (5.6), a NAL unit larger than ``mtu`` is cut into FU-A fragments (5.8) of
  one size (the last at most a byte per fragment shorter: as many packets as full ones would
  take, and a WHEP viewer can send them and a padded last one in one GSO run).
  Access unit delimiters (type 9) and filler data (type 12) are dropped. ``prefix`` (the SPS and
  PPS of the stream's config, see :func:`parameter_sets`) is put in front of a keyframe (an IDR
  picture) that does not carry its own parameter sets.
* :class:`Depacketizer` puts single NAL unit packets, STAP-A and FU-A back into access units
  (other packet types are discarded): an access unit ends on the marker bit or when the
  timestamp changes. In-band SPS and PPS are **kept** in the payload and, when they first
  appear or change, give the access unit a ``config`` (an AVCDecoderConfigurationRecord built
  with :func:`~arcly_trio.media.codecs.h264.avc_config`). Nothing is returned before the first
  keyframe for which the SPS and PPS are known, nor after a loss until the next keyframe.

Attacker's view: an access unit being assembled is bounded by :data:`MAX_ACCESS_UNIT` bytes
and :data:`~arcly_trio.media.codecs.nal.MAX_NAL_UNITS` NAL units; beyond either it is dropped
(and the depacketizer waits for a keyframe), so a peer that never sets the marker bit nor
changes the timestamp holds at most that much. STAP-A sizes are checked against the packet.

Error policy: :meth:`Depacketizer.push` never raises for what a peer sends: a malformed
payload or a broken access unit is dropped, counted in ``discarded``, and output waits for the
next keyframe (``needs_keyframe``). :func:`packetize` raises :class:`H264PacketizeError` (a
:class:`~arcly_trio.core.errors.LocalProtocolError`) for an access unit it cannot cut (malformed
length prefixes, ``mtu`` under 3); :func:`parameter_sets` raises
:class:`~arcly_trio.media.codecs.errors.CodecError` for a malformed record.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from arcly_trio.core.errors import LocalProtocolError
from arcly_trio.media.codecs.errors import CodecError
from arcly_trio.media.codecs.h264 import avc_config, parse_avc_config
from arcly_trio.media.codecs.nal import (
    H264_NAL_AUD,
    H264_NAL_IDR,
    H264_NAL_PPS,
    H264_NAL_SPS,
    MAX_NAL_UNITS,
    split_nal_units,
)
from arcly_trio.protocols.webrtc.payload import AccessUnit

__all__ = [
    "MAX_ACCESS_UNIT",
    "STAP_A",
    "FU_A",
    "H264PacketizeError",
    "packetize",
    "parameter_sets",
    "Depacketizer",
]

STAP_A: Final = 24
FU_A: Final = 28
_FILLER: Final = 12
_DROPPED: Final = frozenset({H264_NAL_AUD, _FILLER})

MAX_ACCESS_UNIT: Final = 8 << 20
"""The most bytes of NAL units one access unit may gather (a 4K IDR picture is a few MB)."""


class H264PacketizeError(LocalProtocolError):
    """An access unit that cannot be cut into RTP payloads."""


def parameter_sets(avcc_record: bytes) -> tuple[bytes, ...]:
    """The SPS and PPS NAL units of an AVCDecoderConfigurationRecord, in that order: the
    ``prefix`` :func:`packetize` puts before a keyframe."""
    config = parse_avc_config(avcc_record)
    return config.sps + config.pps


def packetize(payload: bytes, mtu: int, *, prefix: Sequence[bytes] = ()) -> list[bytes]:
    """The RTP payloads of one access unit (see the module docstring)."""
    if mtu < 3:
        raise H264PacketizeError(f"an MTU of {mtu} bytes cannot carry H.264")
    try:
        nals = [nal for nal in split_nal_units(payload) if nal[0] & 0x1F not in _DROPPED]
    except CodecError as error:
        raise H264PacketizeError(f"an H.264 access unit that does not split: {error}") from None
    if prefix:
        types = {nal[0] & 0x1F for nal in nals}
        if H264_NAL_IDR in types and not {H264_NAL_SPS, H264_NAL_PPS} <= types:
            nals = [nal for nal in prefix if nal] + nals
    packets: list[bytes] = []
    index = 0
    while index < len(nals):
        nal = nals[index]
        if len(nal) > mtu:
            packets.extend(_fragments(nal, mtu))
            index += 1
            continue
        group = [nal]
        size = 1 + 2 + len(nal)
        index += 1
        while index < len(nals) and size + 2 + len(nals[index]) <= mtu:
            group.append(nals[index])
            size += 2 + len(nals[index])
            index += 1
        packets.append(nal if len(group) == 1 else _stap_a(group))
    return packets


def _stap_a(group: list[bytes]) -> bytes:
    forbidden = 0
    nri = 0
    for nal in group:
        forbidden |= nal[0] & 0x80
        nri = max(nri, nal[0] & 0x60)
    out = bytearray((forbidden | nri | STAP_A,))
    for nal in group:
        out += len(nal).to_bytes(2, "big") + nal
    return bytes(out)


def _fragments(nal: bytes, mtu: int) -> list[bytes]:
    indicator = (nal[0] & 0xE0) | FU_A
    kind = nal[0] & 0x1F
    body = memoryview(nal)[1:]
    pieces = -(-len(body) // (mtu - 2))
    step = -(-len(body) // pieces)  # balanced: every fragment one size, the last at most `pieces - 1` bytes shorter
    out: list[bytes] = []
    for start in range(0, len(body), step):
        header = kind
        if start == 0:
            header |= 0x80
        if start + step >= len(body):
            header |= 0x40
        out.append(bytes((indicator, header)) + body[start : start + step])
    return out


class Depacketizer:
    """Puts one H.264 RTP stream back into access units (see the module docstring)."""

    def __init__(self) -> None:
        self.needs_keyframe = True
        self.discarded = 0
        self._timestamp: int | None = None
        self._nals: list[bytes] = []
        self._size = 0
        self._parts = 0  # payloads in the access unit being assembled
        self._broken = False  # something of this access unit was dropped
        self._fragment: bytearray | None = None  # the FU-A NAL unit being gathered
        self._sps: tuple[bytes, ...] = ()
        self._pps: tuple[bytes, ...] = ()
        self._config: bytes | None = None  # the record of _sps/_pps, once built
        self._pending_config: bytes | None = None  # a new record not yet handed out

    def push(self, payload: bytes, *, marker: bool, timestamp: int, lost: bool = False) -> list[AccessUnit]:
        out: list[AccessUnit] = []
        if lost:
            self._drop()
            self.needs_keyframe = True
        if self._timestamp is not None and timestamp != self._timestamp and self._parts:
            self._finish(out)
        self._timestamp = timestamp
        self._parts += 1
        self._read(payload)
        if self._size > MAX_ACCESS_UNIT or len(self._nals) > MAX_NAL_UNITS:
            self._broken = True
        if self._broken:  # this access unit is lost already: hold none of it
            self._nals, self._size, self._fragment = [], 0, None
        if marker:
            self._finish(out)
        return out

    def _read(self, payload: bytes) -> None:
        if not payload or payload[0] & 0x80:
            self._broken = True
            return
        kind = payload[0] & 0x1F
        if 1 <= kind <= 23:
            self._add(bytes(payload))
        elif kind == STAP_A:
            position = 1
            units = []
            while position < len(payload):
                if position + 2 > len(payload):
                    self._broken = True
                    return
                size = (payload[position] << 8) | payload[position + 1]
                position += 2
                if size == 0 or position + size > len(payload):
                    self._broken = True
                    return
                units.append(bytes(payload[position : position + size]))
                position += size
            for unit in units:
                self._add(unit)
        elif kind == FU_A:
            self._read_fragment(payload)
        else:  # STAP-B, MTAP, FU-B and reserved types are not in packetization-mode 1
            self.discarded += 1
            self._parts -= 1

    def _read_fragment(self, payload: bytes) -> None:
        if len(payload) < 3:
            self._broken = True
            return
        header = payload[1]
        if header & 0x80:  # start
            if self._fragment is not None:
                self._broken = True  # the previous fragmented unit never ended
            self._fragment = bytearray(((payload[0] & 0xE0) | (header & 0x1F),))
        elif self._fragment is None:
            self._broken = True  # its start was lost
            return
        self._fragment += payload[2:]
        self._size += len(payload) - 2
        if header & 0x40:  # end
            self._nals.append(bytes(self._fragment))
            self._fragment = None

    def _add(self, nal: bytes) -> None:
        if self._fragment is not None:
            self._broken = True
            self._fragment = None
        self._nals.append(nal)
        self._size += len(nal)

    def _drop(self) -> None:
        """Forget the access unit being assembled, counting its payloads as discarded."""
        self.discarded += self._parts
        self._nals = []
        self._size = 0
        self._parts = 0
        self._broken = False
        self._fragment = None

    def _finish(self, out: list[AccessUnit]) -> None:
        timestamp = self._timestamp
        if self._broken or self._fragment is not None or timestamp is None:  # incomplete
            self._drop()
            self.needs_keyframe = True
            return
        nals = self._nals
        parts = self._parts
        self._nals, self._size, self._parts = [], 0, 0
        if not nals:
            self.discarded += parts
            return
        types = [nal[0] & 0x1F for nal in nals]
        sps = tuple(nal for nal, kind in zip(nals, types, strict=True) if kind == H264_NAL_SPS)
        pps = tuple(nal for nal, kind in zip(nals, types, strict=True) if kind == H264_NAL_PPS)
        if (sps or pps) and (sps or self._sps, pps or self._pps) != (self._sps, self._pps):
            new_sps, new_pps = sps or self._sps, pps or self._pps
            if new_sps and new_pps:
                try:
                    record = avc_config(new_sps, new_pps)
                except CodecError:
                    self.discarded += parts
                    self.needs_keyframe = True
                    return
                self._config = self._pending_config = record
            self._sps, self._pps = new_sps, new_pps
        if all(kind in (H264_NAL_SPS, H264_NAL_PPS, H264_NAL_AUD) for kind in types):
            return  # parameter sets alone: kept for the picture that follows
        keyframe = H264_NAL_IDR in types
        if self.needs_keyframe and not (keyframe and self._config is not None):
            self.discarded += parts
            return
        self.needs_keyframe = False
        config, self._pending_config = self._pending_config, None
        data = b"".join(len(nal).to_bytes(4, "big") + nal for nal in nals)
        out.append(AccessUnit(timestamp=timestamp, payload=data, keyframe=keyframe, config=config))
