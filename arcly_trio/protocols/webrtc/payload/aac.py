"""AAC over RTP as RFC 3640 ``mpeg4-generic``, mode AAC-hbr: packetize and depacketize.

Not a WebRTC format (browsers do not take AAC over RTP) but the one every RTSP client and camera
speaks for AAC; it lives beside the other payload formats so that RTSP uses one RTP layer with
WebRTC (issue 25), and follows the package interface (:mod:`arcly_trio.protocols.webrtc.payload`).
The SDP side (``sizelength=13;indexlength=3;indexdeltalength=3;config=<AudioSpecificConfig>``)
is :mod:`arcly_trio.protocols.rtsp.sdp`.

* :func:`packetize` puts one raw AAC frame (the kernel's frame convention) in one RTP payload:
  a 16-bit AU-headers-length (16 bits), one AU header (13-bit size, 3-bit index 0), the frame;
  a frame larger than ``mtu`` is fragmented (RFC 3640 3.2.3.1: every fragment carries the AU
  header with the whole frame's size; the caller sets the marker bit on the last one only).
* :class:`Depacketizer` reads payloads with any number of AU headers (sizelength 13, indexlength
  and indexdeltalength 3, as every AAC-hbr sender uses), returning one :class:`AccessUnit` per
  frame, the n-th frame of a payload at ``timestamp + n * frame_samples`` (1024 for AAC-LC at
  the RTP clock = sample rate), and reassembles fragmented frames.

Attacker's view: a payload announces at most :data:`MAX_AU_PER_PACKET` AU headers (more are
refused), each size is checked against the bytes present, and a fragmented frame is bounded by
its 13-bit size (8191 bytes), so nothing held between payloads exceeds that.

Error policy: :meth:`Depacketizer.push` never raises for what a peer sends: a malformed payload
is dropped and counted in ``discarded`` (every AAC frame decodes alone, so nothing waits for a
keyframe). :func:`packetize` raises :class:`AacPacketizeError` (a
:class:`~arcly_trio.core.errors.LocalProtocolError`) for an empty frame, one over 8191 bytes, or
an ``mtu`` too small for the headers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from arcly_trio.core.errors import LocalProtocolError
from arcly_trio.protocols.webrtc.payload import AccessUnit

__all__ = ["MAX_AU_PER_PACKET", "MAX_FRAME", "AacPacketizeError", "Depacketizer", "packetize"]

MAX_FRAME: Final = 8191
"""The largest frame a 13-bit AU size can carry."""
MAX_AU_PER_PACKET: Final = 64
_HEADER: Final = 4  # AU-headers-length and one AU header


class AacPacketizeError(LocalProtocolError):
    """An AAC frame that cannot be packetized (empty, too large, or an MTU under the headers)."""


def packetize(payload: bytes, mtu: int, *, prefix: Sequence[bytes] = ()) -> list[bytes]:
    """The RTP payloads of one AAC frame (see the module docstring); ``prefix`` is ignored."""
    size = len(payload)
    if not 0 < size <= MAX_FRAME:
        raise AacPacketizeError(f"an AAC frame of {size} bytes cannot be sent as mpeg4-generic")
    if mtu <= _HEADER:
        raise AacPacketizeError(f"MTU {mtu} leaves no room for an AAC frame")
    head = b"\x00\x10" + (size << 3).to_bytes(2, "big")
    room = mtu - _HEADER
    return [head + payload[offset : offset + room] for offset in range(0, size, room)]


class Depacketizer:
    """mpeg4-generic AAC-hbr payloads in, one :class:`AccessUnit` per AAC frame out."""

    def __init__(self, frame_samples: int = 1024) -> None:
        self.needs_keyframe = False
        self.discarded = 0
        self.frame_samples = frame_samples
        self._fragment: bytearray | None = None
        self._fragment_size = 0
        self._fragment_timestamp = 0

    def push(self, payload: bytes, *, marker: bool, timestamp: int, lost: bool = False) -> list[AccessUnit]:
        if lost and self._fragment is not None:
            self._fragment = None
            self.discarded += 1
        if len(payload) < 2:
            self.discarded += 1
            return []
        header_bits = (payload[0] << 8) | payload[1]
        count = header_bits // 16
        if header_bits % 16 or count == 0 or count > MAX_AU_PER_PACKET or 2 + 2 * count > len(payload):
            self.discarded += 1
            self._fragment = None
            return []
        sizes = [((payload[2 + 2 * i] << 8) | payload[3 + 2 * i]) >> 3 for i in range(count)]
        data = memoryview(payload)[2 + 2 * count :]
        if count == 1 and (sizes[0] > len(data) or self._fragment is not None):
            return self._fragmented(sizes[0], bytes(data), marker, timestamp)
        if sum(sizes) > len(data) or 0 in sizes:
            self.discarded += 1
            return []
        out = []
        position = 0
        for index, size in enumerate(sizes):
            frame = bytes(data[position : position + size])
            position += size
            out.append(
                AccessUnit(
                    timestamp=(timestamp + index * self.frame_samples) & 0xFFFFFFFF, payload=frame, keyframe=True
                )
            )
        return out

    def _fragmented(self, size: int, data: bytes, marker: bool, timestamp: int) -> list[AccessUnit]:
        if self._fragment is None or timestamp != self._fragment_timestamp or size != self._fragment_size:
            if self._fragment is not None:
                self.discarded += 1
            self._fragment = bytearray()
            self._fragment_size = size
            self._fragment_timestamp = timestamp
        self._fragment += data
        if len(self._fragment) > size:
            self._fragment = None
            self.discarded += 1
            return []
        if not marker:
            return []
        frame, self._fragment = bytes(self._fragment), None
        if len(frame) != size or size == 0:
            self.discarded += 1
            return []
        return [AccessUnit(timestamp=timestamp, payload=frame, keyframe=True)]
