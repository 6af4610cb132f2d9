"""VP9: the VPCodecConfigurationRecord and the keyframe's uncompressed header (sans-IO).

:func:`parse_vp9_config` reads a vpcC record in either form a publisher sends it: with the
``vpcC`` FullBox version 1 and flags 0 in front (as FFmpeg and the ``vp09.…`` ingest make it),
or bare (the ISO binding of VP codecs). The two cannot be confused: a bare record's third byte
holds the bit depth (8, 10 or 12) in its high nibble, never 0 as the flags are.
:func:`vp9_picture_size` reads the picture size from a key frame's uncompressed header.

Error policy: the bytes come from a peer: anything malformed raises
:class:`~.errors.CodecError` (a record version other than 1:
:class:`~.errors.UnsupportedCodec`); nothing else escapes on arbitrary bytes.
"""

from __future__ import annotations

import attrs

from arcly_trio.media.codecs.bits import BitReader
from arcly_trio.media.codecs.errors import CodecError, UnsupportedCodec

__all__ = ["Vp9Config", "parse_vp9_config", "vp9_picture_size"]


@attrs.frozen
class Vp9Config:
    """A VPCodecConfigurationRecord, version 1 (VP9-ISOBMFF).

    ``record`` is the record without the FullBox version and flags: the body of a ``vpcC`` box
    of version 1.
    """

    profile: int
    level: int
    bit_depth: int
    chroma_subsampling: int
    full_range: bool
    color_primaries: int
    transfer_characteristics: int
    matrix_coefficients: int
    record: bytes = attrs.field(default=b"", repr=False)


def parse_vp9_config(config: bytes) -> Vp9Config:
    """Parse a vpcC record, with or without its 4-byte FullBox version and flags."""
    what = "VPCodecConfigurationRecord"
    if len(config) >= 4 and config[1:4] == b"\x00\x00\x00":  # version + flags 0
        if config[0] != 1:
            raise UnsupportedCodec(f"{what} version {config[0]} (only version 1 is supported)")
        record = bytes(config[4:])
    else:
        record = bytes(config)
    if len(record) < 8:
        raise CodecError(f"{what} is truncated ({len(record)} bytes)")
    bits = record[2]
    bit_depth = bits >> 4
    if bit_depth not in (8, 10, 12):
        raise CodecError(f"{what}: bit depth {bit_depth}")
    if record[0] > 3:
        raise CodecError(f"{what}: profile {record[0]}")
    init_size = (record[6] << 8) | record[7]
    if len(record) != 8 + init_size:
        raise CodecError(f"{what}: {len(record)} bytes, initialization data says {8 + init_size}")
    return Vp9Config(
        profile=record[0],
        level=record[1],
        bit_depth=bit_depth,
        chroma_subsampling=(bits >> 1) & 0x07,
        full_range=bool(bits & 1),
        color_primaries=record[3],
        transfer_characteristics=record[4],
        matrix_coefficients=record[5],
        record=record,
    )


def vp9_picture_size(frame: bytes) -> tuple[int, int]:
    """``(width, height)`` from the uncompressed header of a VP9 key frame (VP9 spec 6.2);
    :class:`CodecError` if it does not parse or is not a key frame."""
    r = BitReader(bytes(frame[:64]), "VP9 frame header")
    if r.u(2) != 2:
        raise CodecError("VP9 frame header: bad frame_marker")
    profile = r.u(1)
    profile |= r.u(1) << 1
    if profile == 3:
        r.u(1)  # reserved_zero
    if r.flag():
        raise CodecError("VP9 keyframe is a show_existing_frame")
    if r.u(1) != 0:
        raise CodecError("VP9 keyframe is not a KEY_FRAME")
    r.u(2)  # show_frame, error_resilient_mode
    if r.u(24) != 0x498342:
        raise CodecError("VP9 frame header: bad frame_sync_code")
    if profile >= 2:
        r.u(1)  # ten_or_twelve_bit
    if r.u(3) != 7:  # color_space is not CS_RGB
        r.u(1)  # color_range
        if profile in (1, 3):
            r.u(3)  # subsampling_x, subsampling_y, reserved_zero
    elif profile in (1, 3):
        r.u(1)  # reserved_zero
    return r.u(16) + 1, r.u(16) + 1
