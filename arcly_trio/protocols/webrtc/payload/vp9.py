"""VP9 over RTP, RFC 9628: the payload descriptor, packetizing a frame, putting frames back.

Every RTP payload starts with a payload descriptor (RFC 9628 section 4.2): a first byte of
flags ``I`` (picture ID present), ``P`` (inter-picture predicted), ``L`` (layer indices
present), ``F`` (flexible mode), ``B`` (start of a frame), ``E`` (end of a frame), ``V``
(scalability structure present) and ``Z``; then, each when flagged, a 7- or 15-bit picture ID,
the layer indices (one byte, plus TL0PICIDX in non-flexible mode), up to three reference
indices (flexible mode with ``P``) and the scalability structure (SS). :func:`parse_descriptor`
reads one into a :class:`Vp9Descriptor`.

:func:`packetize` writes the non-flexible mode with a 15-bit picture ID (the caller counts
``picture_id`` up per frame), one spatial and temporal layer: ``B`` on the first payload, ``E``
on the last, ``P`` on all but key frames, and on a key frame an SS giving its size (so a
receiver knows the resolution before decoding). A frame is sent as the kernel holds it: a
superframe stays whole.

:class:`Vp9Depacketizer` gives the frame back; keyframes are read from the frame header
(:func:`~arcly_trio.media.codecs.vp9.parse_vp9_frame_header`), and ``config`` is a vpcC
written from a key frame's header when it is first seen or changes. Only the base spatial
layer is kept (payloads of higher spatial layers are skipped).

Attacker's view: a descriptor is read with bounds checks (the SS at most 8 layers and 255
picture groups, all counted against the bytes present); a frame is held up to
:data:`~arcly_trio.protocols.webrtc.payload.assembly.MAX_ACCESS_UNIT` bytes; a frame must begin
with ``B``, so a stream joined mid-frame gives nothing until a keyframe.

Error policy: :func:`parse_descriptor` raises :class:`Vp9Error` (a
:class:`~arcly_trio.core.errors.RemoteProtocolError`) for a malformed descriptor and nothing
else; :class:`Vp9Depacketizer` never raises for a peer's payloads (drops and counts them);
:func:`packetize` raises :class:`Vp9PayloadError` (a
:class:`~arcly_trio.core.errors.LocalProtocolError`) for an empty frame or a tiny MTU.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import attrs

from arcly_trio.core.errors import LocalProtocolError, RemoteProtocolError
from arcly_trio.media.codecs.errors import CodecError
from arcly_trio.media.codecs.vp9 import parse_vp9_frame_header, vp9_config_record
from arcly_trio.protocols.webrtc.payload.assembly import Assembly

__all__ = [
    "MIN_MTU",
    "Vp9Depacketizer",
    "Vp9Descriptor",
    "Vp9Error",
    "Vp9PayloadError",
    "packetize",
    "parse_descriptor",
]

#: The smallest MTU :func:`packetize` accepts (a key frame's descriptor with its SS, and data).
MIN_MTU: Final = 16


class Vp9Error(RemoteProtocolError):
    """A malformed VP9 payload descriptor or frame."""


class Vp9PayloadError(LocalProtocolError):
    """A frame :func:`packetize` cannot carry."""


@attrs.frozen
class Vp9Descriptor:
    """A VP9 payload descriptor (RFC 9628 section 4.2); ``size`` is its length in bytes;
    ``sizes`` the ``(width, height)`` of each spatial layer when an SS gives them."""

    predicted: bool
    flexible: bool
    begin: bool
    end: bool
    size: int
    picture_id: int | None = None
    temporal_id: int = 0
    spatial_id: int = 0
    tl0_pic_idx: int | None = None
    references: tuple[int, ...] = ()
    sizes: tuple[tuple[int, int], ...] = ()


def parse_descriptor(payload: bytes) -> Vp9Descriptor:
    """Read the payload descriptor at the start of a VP9 RTP payload."""
    n = len(payload)

    def need(pos: int, what: str) -> None:
        if pos > n:
            raise Vp9Error(f"descriptor: truncated {what}")

    need(1, "flags")
    flags = payload[0]
    pos = 1
    picture_id = tl0 = None
    tid = sid = 0
    references: list[int] = []
    sizes: list[tuple[int, int]] = []
    flexible = bool(flags & 0x10)
    if flags & 0x80:  # I
        need(pos + 1, "picture ID")
        if payload[pos] & 0x80:
            need(pos + 2, "picture ID")
            picture_id = ((payload[pos] & 0x7F) << 8) | payload[pos + 1]
            pos += 2
        else:
            picture_id = payload[pos]
            pos += 1
    if flags & 0x20:  # L
        need(pos + 1, "layer indices")
        tid, sid = payload[pos] >> 5, (payload[pos] >> 1) & 0x07
        pos += 1
        if not flexible:
            need(pos + 1, "TL0PICIDX")
            tl0 = payload[pos]
            pos += 1
    if flexible and flags & 0x40:  # P: reference indices
        while True:
            if len(references) == 3:
                raise Vp9Error("descriptor: more than 3 reference indices")
            need(pos + 1, "reference index")
            references.append(payload[pos] >> 1)
            pos += 1
            if not payload[pos - 1] & 0x01:
                break
    if flags & 0x02:  # V: scalability structure
        need(pos + 1, "SS")
        ss = payload[pos]
        pos += 1
        layers = (ss >> 5) + 1
        if ss & 0x10:  # Y
            need(pos + 4 * layers, "SS sizes")
            for i in range(layers):
                at = pos + 4 * i
                width = int.from_bytes(payload[at : at + 2], "big")
                sizes.append((width, int.from_bytes(payload[at + 2 : at + 4], "big")))
            pos += 4 * layers
        if ss & 0x08:  # G
            need(pos + 1, "SS picture groups")
            groups = payload[pos]
            pos += 1
            for _ in range(groups):
                need(pos + 1, "SS picture group")
                refs = (payload[pos] >> 2) & 0x03
                pos += 1 + refs
                need(pos, "SS picture group")
    return Vp9Descriptor(
        predicted=bool(flags & 0x40),
        flexible=flexible,
        begin=bool(flags & 0x08),
        end=bool(flags & 0x04),
        size=pos,
        picture_id=picture_id,
        temporal_id=tid,
        spatial_id=sid,
        tl0_pic_idx=tl0,
        references=tuple(references),
        sizes=tuple(sizes),
    )


def packetize(payload: bytes, mtu: int, *, prefix: Sequence[bytes] = (), picture_id: int = 0) -> list[bytes]:
    """The RTP payloads of one VP9 frame (``prefix`` is ignored: VP9 has no parameter sets)."""
    if mtu < MIN_MTU:
        raise Vp9PayloadError(f"MTU {mtu} is below {MIN_MTU}")
    if not payload:
        raise Vp9PayloadError("empty VP9 frame")
    try:
        header = parse_vp9_frame_header(payload)
    except CodecError:
        header = None
    keyframe = header is not None and header.keyframe
    pid = picture_id & 0x7FFF
    pid_bytes = bytes([0x80 | (pid >> 8), pid & 0xFF])
    flags = 0x80 if keyframe else 0xC0  # I, and P unless a key frame
    ss = b""
    if keyframe and header is not None:
        flags |= 0x02  # V
        ss = bytes([0x10]) + header.width.to_bytes(2, "big") + header.height.to_bytes(2, "big")  # N_S 0, Y
    view = memoryview(payload)
    packets: list[bytes] = []
    pos = 0
    while pos < len(payload):
        first = pos == 0
        extra = ss if first else b""
        step = mtu - 3 - len(extra)
        chunk = bytes(view[pos : pos + step])
        pos += len(chunk)
        bits = flags if first else flags & ~0x02
        if first:
            bits |= 0x08
        if pos >= len(payload):
            bits |= 0x04
        packets.append(bytes([bits]) + pid_bytes + extra + chunk)
    return packets


class Vp9Depacketizer(Assembly):
    """RFC 9628 payloads in, VP9 frames out (see
    :class:`~arcly_trio.protocols.webrtc.payload.Depacketizer`)."""

    def __init__(self) -> None:
        super().__init__()
        self._parts: list[bytes] = []
        self._ended = False

    def _reset(self) -> None:
        self._parts = []
        self._ended = False

    def _may_start(self, payload: bytes) -> bool:
        try:
            descriptor = parse_descriptor(payload)
        except Vp9Error:
            return False
        return descriptor.begin and descriptor.spatial_id == 0

    def _add(self, payload: bytes) -> None:
        descriptor = parse_descriptor(payload)
        if descriptor.spatial_id:
            return  # a higher spatial layer: not kept
        if descriptor.begin != (not self._parts) or self._ended:
            raise Vp9Error("frame start missing or repeated")
        data = bytes(payload[descriptor.size :])
        if not data:
            raise Vp9Error("payload without VP9 data")
        self._parts.append(data)
        self._ended = descriptor.end

    def _build(self) -> tuple[bytes, bool, bytes | None] | None:
        if not self._parts or not self._ended:
            return None
        frame = b"".join(self._parts)
        header = parse_vp9_frame_header(frame)
        config = vp9_config_record(header) if header.keyframe else None
        return frame, header.keyframe, config
