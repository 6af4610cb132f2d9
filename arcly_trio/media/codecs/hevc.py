"""H.265 (HEVC): the HEVCDecoderConfigurationRecord and the sequence parameter set (sans-IO).

:func:`parse_hevc_config` reads an hvcC (the payload of a video config frame),
:func:`parse_hevc_sps` a sequence parameter set (profile, level, picture size after the
conformance window); :func:`hevc_config_record` writes an hvcC from in-band VPS, SPS and PPS
(as an RTP depacketizer finds them).

Error policy: the bytes come from a peer: malformed input of any kind raises
:class:`~.errors.CodecError` (:func:`hevc_config_record` too, for an SPS it cannot read);
nothing else escapes on arbitrary bytes.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from arcly_trio.media.codecs.bits import BitReader, remove_emulation_prevention
from arcly_trio.media.codecs.errors import CodecError
from arcly_trio.media.codecs.nal import (
    HEVC_NAL_PPS,
    HEVC_NAL_SPS,
    HEVC_NAL_VPS,
    MAX_DIMENSION,
    crop_units,
    parameter_set_list,
)

__all__ = ["HevcConfig", "HevcSps", "hevc_config_record", "parse_hevc_config", "parse_hevc_sps"]


@attrs.frozen
class HevcConfig:
    """An HEVCDecoderConfigurationRecord (ISO/IEC 14496-15, 8.3.3.1).

    Attributes:
        profile: general_profile_idc (1 Main, 2 Main 10...).
        tier: general_tier_flag (0 Main tier, 1 High tier).
        level: general_level_idc (30 times the level: 93 means level 3.1).
        nal_length_size: bytes of each NAL unit length prefix in the frames (1 to 4).
        vps: video parameter set NAL units (with their two-byte NAL header).
        sps: sequence parameter set NAL units.
        pps: picture parameter set NAL units.
        other: NAL units of other array types (SEI...), in record order.
        profile_space: general_profile_space (0 to 3).
        compatibility: the 32 general_profile_compatibility_flags, as read (flag 0 first).
        constraints: the six general constraint indicator bytes.
    """

    profile: int
    tier: int
    level: int
    nal_length_size: int
    vps: tuple[bytes, ...]
    sps: tuple[bytes, ...]
    pps: tuple[bytes, ...]
    other: tuple[bytes, ...] = ()
    profile_space: int = 0
    compatibility: int = 0
    constraints: bytes = b"\x00" * 6


def parse_hevc_config(record: bytes) -> HevcConfig:
    """Parse an HEVCDecoderConfigurationRecord; raise :class:`CodecError` if malformed.

    A NAL unit is sorted by its own NAL header type (an array's declared type is only a hint).
    """
    what = "HEVCDecoderConfigurationRecord"
    if len(record) < 23:
        raise CodecError(f"{what} is truncated ({len(record)} bytes)")
    if record[0] != 1:
        raise CodecError(f"{what}: unknown configurationVersion {record[0]}")
    nal_length_size = (record[21] & 0x03) + 1
    groups: dict[int, list[bytes]] = {HEVC_NAL_VPS: [], HEVC_NAL_SPS: [], HEVC_NAL_PPS: []}
    other: list[bytes] = []
    pos = 23
    for _ in range(record[22]):
        if pos + 3 > len(record):
            raise CodecError(f"{what} is truncated")
        count = (record[pos + 1] << 8) | record[pos + 2]
        nals, pos = parameter_set_list(record, pos + 3, count, what)
        for unit in nals:
            if len(unit) < 2:
                raise CodecError(f"{what}: NAL unit shorter than its header")
            groups.get((unit[0] >> 1) & 0x3F, other).append(unit)
    return HevcConfig(
        profile=record[1] & 0x1F,
        tier=(record[1] >> 5) & 1,
        level=record[12],
        nal_length_size=nal_length_size,
        vps=tuple(groups[HEVC_NAL_VPS]),
        sps=tuple(groups[HEVC_NAL_SPS]),
        pps=tuple(groups[HEVC_NAL_PPS]),
        other=tuple(other),
        profile_space=record[1] >> 6,
        compatibility=int.from_bytes(record[2:6], "big"),
        constraints=bytes(record[6:12]),
    )


@attrs.frozen
class HevcSps:
    """What the egress and statistics need from an HEVC sequence parameter set.

    Attributes:
        profile: general_profile_idc.
        tier: general_tier_flag.
        level: general_level_idc (30 times the level).
        chroma_format: chroma_format_idc (1 is 4:2:0).
        bit_depth: luma bit depth.
        width: displayed width in samples, after the conformance window.
        height: displayed height in samples, after the conformance window.
    """

    profile: int
    tier: int
    level: int
    chroma_format: int
    bit_depth: int
    width: int
    height: int


def _skip_profile_tier_level(r: BitReader, max_sub_layers_minus1: int) -> tuple[int, int, int]:
    r.skip(2)  # general_profile_space
    tier = r.u(1)
    profile = r.u(5)
    r.skip(32 + 48)  # compatibility flags, constraint flags
    level = r.u(8)
    present = [(r.flag(), r.flag()) for _ in range(max_sub_layers_minus1)]
    if max_sub_layers_minus1 > 0:
        r.skip(2 * (8 - max_sub_layers_minus1))  # reserved_zero_2bits
    for profile_present, level_present in present:
        if profile_present:
            r.skip(88)
        if level_present:
            r.skip(8)
    return profile, tier, level


def parse_hevc_sps(nal: bytes) -> HevcSps:
    """Parse an HEVC SPS NAL unit (with its two-byte NAL header) up to the conformance window
    and the bit depth. Raises :class:`CodecError` if it is not an SPS or is malformed."""
    what = "HEVC SPS"
    if len(nal) < 2:
        raise CodecError(f"{what} is truncated")
    if nal[0] & 0x80 or (nal[0] >> 1) & 0x3F != HEVC_NAL_SPS:
        raise CodecError(f"{what}: NAL header {nal[0]:#04x} is not an SPS")
    r = BitReader(remove_emulation_prevention(nal[2:]), what)
    r.skip(4)  # sps_video_parameter_set_id
    max_sub_layers_minus1 = r.u(3)
    if max_sub_layers_minus1 > 6:
        raise CodecError(f"{what}: sps_max_sub_layers_minus1 {max_sub_layers_minus1} > 6")
    r.skip(1)  # sps_temporal_id_nesting_flag
    profile, tier, level = _skip_profile_tier_level(r, max_sub_layers_minus1)
    r.ue_max(15, "sps_seq_parameter_set_id")
    chroma_format = r.ue_max(3, "chroma_format_idc")
    separate_planes = r.flag() if chroma_format == 3 else False
    width = r.ue_max(MAX_DIMENSION, "pic_width_in_luma_samples")
    height = r.ue_max(MAX_DIMENSION, "pic_height_in_luma_samples")
    if r.flag():  # conformance_window_flag
        left, right, top, bottom = (r.ue_max(MAX_DIMENSION, "conf_win_offset") for _ in "lrtb")
        sub_w, sub_h = crop_units(chroma_format, separate_planes)
        width -= sub_w * (left + right)
        height -= sub_h * (top + bottom)
    bit_depth = r.ue_max(8, "bit_depth_luma_minus8") + 8
    if width <= 0 or height <= 0:
        raise CodecError(f"{what}: empty picture")
    return HevcSps(
        profile=profile,
        tier=tier,
        level=level,
        chroma_format=chroma_format,
        bit_depth=bit_depth,
        width=width,
        height=height,
    )


def hevc_config_record(
    vps: Sequence[bytes], sps: Sequence[bytes], pps: Sequence[bytes], nal_length_size: int = 4
) -> bytes:
    """An HEVCDecoderConfigurationRecord (ISO/IEC 14496-15, 8.3.3.1) for these parameter sets
    (NAL units with their two-byte header), the general profile, tier and level copied from the
    first SPS. Raises :class:`CodecError` if there is no SPS or it does not parse, or a NAL
    unit is too long for the record."""
    if not sps:
        raise CodecError("hvcC needs an SPS")
    parsed = parse_hevc_sps(sps[0])
    rbsp = remove_emulation_prevention(sps[0][2:24])
    if len(rbsp) < 13:
        raise CodecError("HEVC SPS is truncated")
    sub_layers = ((rbsp[0] >> 1) & 0x07) + 1
    nested = rbsp[0] & 0x01
    out = bytearray([1])
    out += rbsp[1:13]  # general profile space/tier/idc, compatibility, constraints, level
    out += b"\xf0\x00"  # min_spatial_segmentation_idc 0
    out.append(0xFC)  # parallelismType 0
    out.append(0xFC | parsed.chroma_format)
    out.append(0xF8 | (parsed.bit_depth - 8))
    out.append(0xF8 | (parsed.bit_depth - 8))
    out += b"\x00\x00"  # avgFrameRate unknown
    out.append((sub_layers << 3) | (nested << 2) | (nal_length_size - 1))
    arrays = [(HEVC_NAL_VPS, vps), (HEVC_NAL_SPS, sps), (HEVC_NAL_PPS, pps)]
    arrays = [(kind, units) for kind, units in arrays if units]
    out.append(len(arrays))
    for kind, units in arrays:
        out.append(kind)  # array_completeness 0: they may come in band too (as FFmpeg writes)
        out += len(units).to_bytes(2, "big")
        for unit in units:
            if len(unit) > 0xFFFF:
                raise CodecError("hvcC: parameter set longer than 65535 bytes")
            out += len(unit).to_bytes(2, "big") + unit
    return bytes(out)
