"""VP9: the VPCodecConfigurationRecord and the keyframe's uncompressed header (sans-IO).

:func:`parse_vp9_config` reads a vpcC record in either form a publisher sends it: with the
``vpcC`` FullBox version 1 and flags 0 in front (as FFmpeg and the ``vp09.…`` ingest make it),
or bare (the ISO binding of VP codecs). The two cannot be confused: a bare record's third byte
holds the bit depth (8, 10 or 12) in its high nibble, never 0 as the flags are.
:func:`vp9_picture_size` reads the picture size from a key frame's uncompressed header;
:func:`parse_vp9_frame_header` reads whether any frame is a key frame and, for a key frame, its
colour configuration and size, and :func:`vp9_config_record` writes the vpcC for it (as an RTP
depacketizer, which gets no record from the sender, needs it).

Error policy: the bytes come from a peer: anything malformed raises
:class:`~.errors.CodecError` (a record version other than 1:
:class:`~.errors.UnsupportedCodec`); nothing else escapes on arbitrary bytes.
"""

from __future__ import annotations

import attrs

from arcly_trio.media.codecs.bits import BitReader
from arcly_trio.media.codecs.errors import CodecError, UnsupportedCodec

__all__ = [
    "Vp9Config",
    "Vp9FrameHeader",
    "parse_vp9_config",
    "parse_vp9_frame_header",
    "vp9_config_record",
    "vp9_picture_size",
]


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


@attrs.frozen
class Vp9FrameHeader:
    """The start of a VP9 frame's uncompressed header (VP9 spec 6.2). The colour fields and the
    size are read from key frames only (``0`` otherwise)."""

    profile: int
    keyframe: bool
    show_existing_frame: bool = False
    bit_depth: int = 8
    color_space: int = 0
    full_range: bool = False
    subsampling_x: int = 1
    subsampling_y: int = 1
    width: int = 0
    height: int = 0


def parse_vp9_frame_header(frame: bytes) -> Vp9FrameHeader:
    """Read a VP9 frame's uncompressed header up to the key frame's size (see
    :class:`Vp9FrameHeader`); :class:`CodecError` if it does not parse."""
    r = BitReader(bytes(frame[:64]), "VP9 frame header")
    if r.u(2) != 2:
        raise CodecError("VP9 frame header: bad frame_marker")
    profile = r.u(1)
    profile |= r.u(1) << 1
    if profile == 3:
        r.u(1)  # reserved_zero
    if r.flag():
        return Vp9FrameHeader(profile=profile, keyframe=False, show_existing_frame=True)
    if r.u(1) != 0:  # frame_type: not KEY_FRAME
        return Vp9FrameHeader(profile=profile, keyframe=False)
    r.u(2)  # show_frame, error_resilient_mode
    if r.u(24) != 0x498342:
        raise CodecError("VP9 frame header: bad frame_sync_code")
    bit_depth = (12 if r.flag() else 10) if profile >= 2 else 8
    color_space = r.u(3)
    sub_x = sub_y = 1
    if color_space != 7:  # not CS_RGB
        full_range = r.flag()
        if profile in (1, 3):
            sub_x, sub_y = r.u(1), r.u(1)
            r.u(1)  # reserved_zero
    else:
        full_range = True
        if profile in (1, 3):
            sub_x = sub_y = 0
            r.u(1)  # reserved_zero
    width, height = r.u(16) + 1, r.u(16) + 1
    return Vp9FrameHeader(
        profile=profile,
        keyframe=True,
        bit_depth=bit_depth,
        color_space=color_space,
        full_range=full_range,
        subsampling_x=sub_x,
        subsampling_y=sub_y,
        width=width,
        height=height,
    )


# VP9 levels (VP9 Levels and Decoder Testing, "Levels"): the largest picture of each, in samples.
_LEVELS = (
    (10, 36864),
    (11, 73728),
    (20, 122880),
    (21, 245760),
    (30, 552960),
    (31, 983040),
    (40, 2228224),
    (50, 8912896),
    (60, 35651584),
)
# color_space (VP9 spec 7.2) -> ISO/IEC 23091-2 matrix coefficients.
_MATRIX = {0: 2, 1: 6, 2: 1, 3: 6, 4: 7, 5: 9, 6: 2, 7: 0}


def vp9_config_record(header: Vp9FrameHeader) -> bytes:
    """A vpcC (version 1, with its FullBox version and flags, as FFmpeg writes it) for a key
    frame's header: profile, the smallest level its picture fits, bit depth, chroma subsampling
    (4:2:0 is written as co-sited with luma), range and matrix; primaries and transfer are
    "unspecified" (2), except for sRGB."""
    samples = header.width * header.height
    level = next((level for level, most in _LEVELS if samples <= most), 62)
    subsampling = {(1, 1): 1, (1, 0): 2, (0, 0): 3}.get((header.subsampling_x, header.subsampling_y), 1)
    srgb = header.color_space == 7
    primaries, transfer = (1, 13) if srgb else (2, 2)
    bits = (header.bit_depth << 4) | (subsampling << 1) | int(header.full_range)
    return bytes((1, 0, 0, 0, header.profile, level, bits, primaries, transfer, _MATRIX[header.color_space], 0, 0))
