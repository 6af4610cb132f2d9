"""AV1: the AV1CodecConfigurationRecord, the sequence header OBU and temporal units (sans-IO).

* :func:`parse_av1_config` reads an av1C (AV1-ISOBMFF 2.3.3) and the sequence header among its
  configOBUs, if there is one.
* :func:`parse_av1_sequence_header` reads a ``sequence_header_obu()`` payload (AV1 5.5) up to
  its ``color_config``: profile, level, tier, bit depth, chroma, colours, the coded size.
* :func:`find_sequence_header` finds the first sequence header OBU in a bounded prefix of OBUs
  (av1C configOBUs, or a keyframe's temporal unit).
* :func:`strip_temporal_delimiter`: a temporal unit without its leading temporal delimiter OBU,
  as the AV1 ISO BMFF binding stores samples.
* :func:`av1_config_record` writes an av1C around a sequence header OBU (as an RTP
  depacketizer, which gets no record from the sender, needs it); :func:`is_key_frame_header`
  says whether a frame (header) OBU starts a key frame.

Error policy: the bytes come from a peer: anything malformed raises
:class:`~.errors.CodecError`; nothing else escapes on arbitrary bytes.
"""

from __future__ import annotations

from typing import Final

import attrs

from arcly_trio.media.codecs.bits import BitReader, Payload, leb128, obus
from arcly_trio.media.codecs.errors import CodecError

__all__ = [
    "Av1Config",
    "Av1SequenceHeader",
    "MAX_CONFIG_OBUS",
    "OBU_SEQUENCE_HEADER",
    "OBU_TEMPORAL_DELIMITER",
    "OBU_FRAME_HEADER",
    "OBU_FRAME",
    "av1_config_record",
    "is_key_frame_header",
    "find_sequence_header",
    "parse_av1_config",
    "parse_av1_sequence_header",
    "strip_temporal_delimiter",
]

OBU_SEQUENCE_HEADER: Final = 1
OBU_TEMPORAL_DELIMITER: Final = 2
OBU_FRAME_HEADER: Final = 3
OBU_FRAME: Final = 6
#: Bytes of av1C configOBUs or of a keyframe searched for a sequence header.
MAX_CONFIG_OBUS: Final = 4096
_MAX_SEQUENCE_HEADER: Final = 512  # bytes of a sequence header read (real ones: < 400)


@attrs.frozen
class Av1SequenceHeader:
    """What a codec string, a decoder and a sample entry need from an AV1 sequence header OBU."""

    profile: int
    level: int
    tier: int
    bit_depth: int
    monochrome: bool
    subsampling_x: int
    subsampling_y: int
    chroma_sample_position: int
    color_primaries: int
    transfer_characteristics: int
    matrix_coefficients: int
    full_range: bool
    max_width: int
    max_height: int


@attrs.frozen
class Av1Config:
    """An AV1CodecConfigurationRecord (AV1-ISOBMFF 2.3.3)."""

    profile: int
    level: int
    tier: int
    bit_depth: int
    monochrome: bool
    subsampling_x: int
    subsampling_y: int
    chroma_sample_position: int
    config_obus: bytes
    sequence_header: Av1SequenceHeader | None


def parse_av1_sequence_header(payload: bytes) -> Av1SequenceHeader:
    """Parse an AV1 ``sequence_header_obu()`` payload (AV1 5.5) up to its ``color_config``."""
    r = BitReader(bytes(payload[:_MAX_SEQUENCE_HEADER]), "AV1 sequence header")
    profile = r.u(3)
    if profile > 2:
        raise CodecError(f"AV1 sequence header: seq_profile {profile} is reserved")
    r.skip(1)  # still_picture
    reduced = r.flag()
    tier = 0
    if reduced:
        level = r.u(5)
    else:
        if r.flag():  # timing_info_present_flag
            r.skip(64)  # num_units_in_display_tick, time_scale
            if r.flag():  # equal_picture_interval
                r.uvlc()  # num_ticks_per_picture_minus_1
            decoder_model = r.flag()
            if decoder_model:
                buffer_delay_length = r.u(5) + 1
                r.skip(32)  # num_units_in_decoding_tick
                r.skip(10)  # buffer_removal_time_length_minus_1, frame_presentation_time_length_minus_1
        else:
            decoder_model = False
            buffer_delay_length = 0
        initial_display_delay = r.flag()
        level = 0
        for index in range(r.u(5) + 1):
            r.skip(12)  # operating_point_idc
            op_level = r.u(5)
            op_tier = r.u(1) if op_level > 7 else 0
            if index == 0:
                level, tier = op_level, op_tier
            if decoder_model and r.flag():
                r.skip(2 * buffer_delay_length + 1)
            if initial_display_delay and r.flag():
                r.skip(4)
    width_bits = r.u(4) + 1
    height_bits = r.u(4) + 1
    max_width = r.u(width_bits) + 1
    max_height = r.u(height_bits) + 1
    if not reduced and r.flag():  # frame_id_numbers_present_flag
        r.skip(7)
    r.skip(3)  # use_128x128_superblock, enable_filter_intra, enable_intra_edge_filter
    if not reduced:
        r.skip(4)  # interintra, masked compound, warped motion, dual filter
        order_hint = r.flag()
        if order_hint:
            r.skip(2)  # enable_jnt_comp, enable_ref_frame_mvs
        force_screen_content = 2 if r.flag() else r.u(1)
        if force_screen_content > 0 and not r.flag():  # seq_choose_integer_mv
            r.skip(1)  # seq_force_integer_mv
        if order_hint:
            r.skip(3)
    r.skip(3)  # enable_superres, enable_cdef, enable_restoration
    # color_config()
    bit_depth = 8
    if r.flag():  # high_bitdepth
        bit_depth = 12 if profile == 2 and r.flag() else 10
    monochrome = False if profile == 1 else r.flag()
    primaries = transfer = matrix = 2
    if r.flag():  # color_description_present_flag
        primaries, transfer, matrix = r.u(8), r.u(8), r.u(8)
    position = 0
    if monochrome:
        full_range = r.flag()
        sub_x = sub_y = 1
    elif primaries == 1 and transfer == 13 and matrix == 0:  # sRGB
        full_range, sub_x, sub_y = True, 0, 0
    else:
        full_range = r.flag()
        if profile == 0:
            sub_x = sub_y = 1
        elif profile == 1:
            sub_x = sub_y = 0
        elif bit_depth == 12:
            sub_x = r.u(1)
            sub_y = r.u(1) if sub_x else 0
        else:
            sub_x, sub_y = 1, 0
        if sub_x and sub_y:
            position = r.u(2)
    return Av1SequenceHeader(
        profile=profile,
        level=level,
        tier=tier,
        bit_depth=bit_depth,
        monochrome=monochrome,
        subsampling_x=sub_x,
        subsampling_y=sub_y,
        chroma_sample_position=position,
        color_primaries=primaries,
        transfer_characteristics=transfer,
        matrix_coefficients=matrix,
        full_range=full_range,
        max_width=max_width,
        max_height=max_height,
    )


def find_sequence_header(data: Payload, what: str) -> Av1SequenceHeader | None:
    """The first sequence header OBU in ``data`` (low-overhead OBUs, searched within the first
    :data:`MAX_CONFIG_OBUS` bytes), parsed; ``None`` if there is none."""
    for obu_type, start, end in obus(data, what):
        if obu_type == OBU_SEQUENCE_HEADER:
            return parse_av1_sequence_header(bytes(data[start:end]))
        if start >= MAX_CONFIG_OBUS:
            break
    return None


def parse_av1_config(record: bytes) -> Av1Config:
    """Parse an av1C record, and the sequence header among its configOBUs if there is one."""
    what = "AV1CodecConfigurationRecord"
    if len(record) < 4:
        raise CodecError(f"{what} is truncated ({len(record)} bytes)")
    if record[0] != 0x81:  # marker 1, version 1
        raise CodecError(f"{what}: marker/version byte {record[0]:#04x} is not 0x81")
    b1, b2 = record[1], record[2]
    high_bitdepth, twelve_bit = bool(b2 & 0x40), bool(b2 & 0x20)
    config_obus = bytes(record[4:])
    return Av1Config(
        profile=b1 >> 5,
        level=b1 & 0x1F,
        tier=b2 >> 7,
        bit_depth=(12 if twelve_bit else 10) if high_bitdepth else 8,
        monochrome=bool(b2 & 0x10),
        subsampling_x=(b2 >> 3) & 1,
        subsampling_y=(b2 >> 2) & 1,
        chroma_sample_position=b2 & 0x03,
        config_obus=config_obus,
        sequence_header=find_sequence_header(config_obus, "av1C configOBUs") if config_obus else None,
    )


def strip_temporal_delimiter(payload: bytes) -> Payload:
    """An AV1 temporal unit without its leading temporal delimiter OBU (not copied); the
    payload as it is when it does not start with one it can skip."""
    if not payload or (payload[0] >> 3) & 0x0F != OBU_TEMPORAL_DELIMITER or not payload[0] & 0x02:
        return payload
    try:
        size, start = leb128(payload, 1 + ((payload[0] >> 2) & 1), "AV1 temporal unit")
    except CodecError:
        return payload
    end = start + size
    return memoryview(payload)[end:] if end <= len(payload) else payload


def av1_config_record(sequence_header_obu: bytes) -> bytes:
    """An av1C (AV1-ISOBMFF 2.3.3) whose fields come from ``sequence_header_obu`` (one
    low-overhead sequence header OBU, with its size field) and whose configOBUs are that OBU.
    :class:`CodecError` if it is not a sequence header OBU that parses."""
    what = "AV1 sequence header OBU"
    found = next(iter(obus(sequence_header_obu, what)), None)
    if found is None or found[0] != OBU_SEQUENCE_HEADER:
        raise CodecError(f"{what}: not a sequence header")
    _, start, end = found
    header = parse_av1_sequence_header(bytes(sequence_header_obu[start:end]))
    high, twelve = int(header.bit_depth > 8), int(header.bit_depth == 12)
    b2 = (
        (header.tier << 7)
        | (high << 6)
        | (twelve << 5)
        | (int(header.monochrome) << 4)
        | (header.subsampling_x << 3)
        | (header.subsampling_y << 2)
        | header.chroma_sample_position
    )
    return bytes((0x81, (header.profile << 5) | header.level, b2, 0)) + bytes(sequence_header_obu[:end])


def is_key_frame_header(payload: Payload) -> bool:
    """Whether the payload of an OBU_FRAME or OBU_FRAME_HEADER starts a key frame:
    ``show_existing_frame`` 0 and ``frame_type`` KEY_FRAME (AV1 5.9.2; for a sequence without
    ``reduced_still_picture_header``, which a real-time stream does not use)."""
    return bool(payload) and payload[0] & 0xE0 == 0
