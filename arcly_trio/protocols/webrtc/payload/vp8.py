"""VP8 over RTP, RFC 7741: the payload descriptor, packetizing a frame, putting frames back.

Every RTP payload starts with a payload descriptor (RFC 7741 section 4.2): a first byte with
``X`` (extensions follow), ``N`` (non-reference frame), ``S`` (start of a partition) and the
partition index ``PID``; with ``X``, a byte of ``I`` (picture ID), ``L`` (TL0PICIDX), ``T``
(TID) and ``K`` (KEYIDX) flags, then a 7- or 15-bit picture ID, a TL0PICIDX byte, and a byte of
TID/Y/KEYIDX, each when flagged. :func:`parse_descriptor` reads one into a
:class:`Vp8Descriptor`.

:func:`packetize` cuts one frame into payloads with a 15-bit picture ID (the caller counts
``picture_id`` up per frame), ``S`` set and ``PID`` 0 on the first. :class:`Vp8Depacketizer`
gives the frame back; it is a keyframe when the ``P`` bit (bit 0 of the frame's first byte,
RFC 7741 section 4.3) is 0 and the key frame start code follows.

The kernel has no FLV/fMP4 mapping for VP8, so an :class:`AccessUnit
<arcly_trio.protocols.webrtc.payload.AccessUnit>`'s payload is the raw VP8 frame and its
``config`` is always ``None`` (tests, a later transcoder).

Attacker's view: a descriptor is at most 6 bytes, read with bounds checks; a frame is held up
to :data:`~arcly_trio.protocols.webrtc.payload.assembly.MAX_ACCESS_UNIT` bytes; a frame must
begin with ``S``=1 and ``PID``=0, so a stream joined mid-frame gives nothing until a keyframe.

Error policy: :func:`parse_descriptor` raises :class:`Vp8Error` (a
:class:`~arcly_trio.core.errors.RemoteProtocolError`) for a malformed descriptor and nothing
else; :class:`Vp8Depacketizer` never raises for a peer's payloads (drops and counts them);
:func:`packetize` raises :class:`Vp8PayloadError` (a
:class:`~arcly_trio.core.errors.LocalProtocolError`) for an empty frame or a tiny MTU.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import attrs

from arcly_trio.core.errors import LocalProtocolError, RemoteProtocolError
from arcly_trio.protocols.webrtc.payload.assembly import Assembly

__all__ = [
    "MIN_MTU",
    "Vp8Depacketizer",
    "Vp8Descriptor",
    "Vp8Error",
    "Vp8PayloadError",
    "is_keyframe",
    "packetize",
    "parse_descriptor",
]

#: The smallest MTU :func:`packetize` accepts (a 4-byte descriptor and some data).
MIN_MTU: Final = 8
_KEY_START_CODE: Final = b"\x9d\x01\x2a"


class Vp8Error(RemoteProtocolError):
    """A malformed VP8 payload descriptor or frame start."""


class Vp8PayloadError(LocalProtocolError):
    """A frame :func:`packetize` cannot carry."""


@attrs.frozen
class Vp8Descriptor:
    """A VP8 payload descriptor (RFC 7741 section 4.2); ``size`` is its length in bytes.
    ``picture_id``, ``tl0_pic_idx``, ``tid`` (with ``layer_sync``) and ``key_idx`` are
    ``None`` when absent."""

    non_reference: bool
    start: bool
    partition: int
    size: int
    picture_id: int | None = None
    tl0_pic_idx: int | None = None
    tid: int | None = None
    layer_sync: bool = False
    key_idx: int | None = None


def parse_descriptor(payload: bytes) -> Vp8Descriptor:
    """Read the payload descriptor at the start of a VP8 RTP payload."""
    if not payload:
        raise Vp8Error("empty payload")
    first = payload[0]
    pos = 1
    picture_id = tl0 = tid = key_idx = None
    sync = False
    if first & 0x80:
        if len(payload) < 2:
            raise Vp8Error("descriptor: truncated extension byte")
        ext = payload[1]
        pos = 2
        if ext & 0x80:  # I
            if pos >= len(payload):
                raise Vp8Error("descriptor: truncated picture ID")
            if payload[pos] & 0x80:  # M: 15 bits
                if pos + 2 > len(payload):
                    raise Vp8Error("descriptor: truncated picture ID")
                picture_id = ((payload[pos] & 0x7F) << 8) | payload[pos + 1]
                pos += 2
            else:
                picture_id = payload[pos]
                pos += 1
        if ext & 0x40:  # L
            if pos >= len(payload):
                raise Vp8Error("descriptor: truncated TL0PICIDX")
            tl0 = payload[pos]
            pos += 1
        if ext & 0x30:  # T or K
            if pos >= len(payload):
                raise Vp8Error("descriptor: truncated TID/KEYIDX")
            byte = payload[pos]
            pos += 1
            if ext & 0x20:
                tid, sync = byte >> 6, bool(byte & 0x20)
            if ext & 0x10:
                key_idx = byte & 0x1F
    return Vp8Descriptor(
        non_reference=bool(first & 0x20),
        start=bool(first & 0x10),
        partition=first & 0x07,
        size=pos,
        picture_id=picture_id,
        tl0_pic_idx=tl0,
        tid=tid,
        layer_sync=sync,
        key_idx=key_idx,
    )


def is_keyframe(frame: bytes) -> bool:
    """Whether a VP8 frame is a key frame (``P`` bit 0 and the start code present)."""
    return len(frame) >= 10 and not frame[0] & 0x01 and frame[3:6] == _KEY_START_CODE


def packetize(payload: bytes, mtu: int, *, prefix: Sequence[bytes] = (), picture_id: int = 0) -> list[bytes]:
    """The RTP payloads of one VP8 frame (``prefix`` is ignored: VP8 has no parameter sets)."""
    if mtu < MIN_MTU:
        raise Vp8PayloadError(f"MTU {mtu} is below {MIN_MTU}")
    if not payload:
        raise Vp8PayloadError("empty VP8 frame")
    pid = picture_id & 0x7FFF
    tail = bytes([0x80, 0x80 | (pid >> 8), pid & 0xFF])  # X=1; I=1; M=1 and 15 bits
    step = mtu - 4
    view = memoryview(payload)
    return [
        bytes([0x90 if start == 0 else 0x80]) + tail + bytes(view[start : start + step])
        for start in range(0, len(payload), step)
    ]


class Vp8Depacketizer(Assembly):
    """RFC 7741 payloads in, VP8 frames out (see
    :class:`~arcly_trio.protocols.webrtc.payload.Depacketizer`)."""

    def __init__(self) -> None:
        super().__init__()
        self._parts: list[bytes] = []

    def _reset(self) -> None:
        self._parts = []

    def _may_start(self, payload: bytes) -> bool:
        try:
            descriptor = parse_descriptor(payload)
        except Vp8Error:
            return False
        return descriptor.start and descriptor.partition == 0

    def _add(self, payload: bytes) -> None:
        descriptor = parse_descriptor(payload)
        first = descriptor.start and descriptor.partition == 0
        if first != (not self._parts):
            raise Vp8Error("frame start missing or repeated")
        data = bytes(payload[descriptor.size :])
        if not data:
            raise Vp8Error("payload without VP8 data")
        self._parts.append(data)

    def _build(self) -> tuple[bytes, bool, bytes | None] | None:
        if not self._parts:
            return None
        frame = b"".join(self._parts)
        keyframe = not frame[0] & 0x01
        if keyframe and not is_keyframe(frame):
            raise Vp8Error("key frame without its start code")
        return frame, keyframe, None
