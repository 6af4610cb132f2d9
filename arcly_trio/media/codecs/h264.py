"""H.264 (AVC): the AVCDecoderConfigurationRecord and the sequence parameter set (sans-IO).

:func:`parse_avc_config` reads an avcC (the payload of a video config frame),
:func:`avc_config` writes one from in-band parameter sets (what an RTP depacketizer sees),
:func:`parse_h264_sps` a sequence parameter set (profile, level, picture size after cropping).

Error policy: the bytes come from a peer: malformed input of any kind (truncated,
inconsistent, out of range) raises :class:`~.errors.CodecError`; nothing else escapes on
arbitrary bytes. :func:`avc_config` raises it too for parameter sets that cannot go in a
record (an SPS too short to name its profile, too many or too long units).
"""

from __future__ import annotations

import attrs

from arcly_trio.media.codecs.bits import BitReader, remove_emulation_prevention
from arcly_trio.media.codecs.errors import CodecError
from arcly_trio.media.codecs.nal import H264_NAL_SPS, MAX_DIMENSION, crop_units, parameter_set_list

__all__ = ["AvcConfig", "H264Sps", "avc_config", "parse_avc_config", "parse_h264_sps"]

_H264_HIGH_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})


@attrs.frozen
class AvcConfig:
    """An AVCDecoderConfigurationRecord (ISO/IEC 14496-15, 5.3.3.1).

    Attributes:
        profile: AVCProfileIndication.
        compatibility: profile_compatibility (the constraint flags byte).
        level: AVCLevelIndication (``level_idc``: 31 means level 3.1).
        nal_length_size: bytes of each NAL unit length prefix in the frames (1 to 4).
        sps: the sequence parameter set NAL units (with their NAL header byte).
        pps: the picture parameter set NAL units.
    """

    profile: int
    compatibility: int
    level: int
    nal_length_size: int
    sps: tuple[bytes, ...]
    pps: tuple[bytes, ...]


def parse_avc_config(record: bytes) -> AvcConfig:
    """Parse an AVCDecoderConfigurationRecord; raise :class:`CodecError` if malformed.

    The optional high-profile trailer (chroma format, bit depths, SPS extensions) is ignored.
    """
    what = "AVCDecoderConfigurationRecord"
    if len(record) < 7:
        raise CodecError(f"{what} is truncated ({len(record)} bytes)")
    if record[0] != 1:
        raise CodecError(f"{what}: unknown configurationVersion {record[0]}")
    nal_length_size = (record[4] & 0x03) + 1
    sps, pos = parameter_set_list(record, 6, record[5] & 0x1F, what)
    if pos >= len(record):
        raise CodecError(f"{what} is truncated")
    pps, pos = parameter_set_list(record, pos + 1, record[pos], what)
    return AvcConfig(
        profile=record[1],
        compatibility=record[2],
        level=record[3],
        nal_length_size=nal_length_size,
        sps=tuple(sps),
        pps=tuple(pps),
    )


def avc_config(
    sps: tuple[bytes, ...] | list[bytes], pps: tuple[bytes, ...] | list[bytes], nal_length_size: int = 4
) -> bytes:
    """An AVCDecoderConfigurationRecord for these SPS and PPS NAL units (with their NAL header
    byte); profile, compatibility and level come from the first SPS. The optional
    high-profile trailer is not written (readers, :func:`parse_avc_config` included, do not
    need it). Raises :class:`CodecError` for no SPS, an SPS under 4 bytes, more than 31 SPS or
    255 PPS, or a unit over 65535 bytes.
    """
    what = "AVCDecoderConfigurationRecord"
    if not sps or len(sps[0]) < 4:
        raise CodecError(f"{what}: needs an SPS of at least 4 bytes")
    if len(sps) > 31 or len(pps) > 255 or any(len(unit) > 0xFFFF for unit in (*sps, *pps)):
        raise CodecError(f"{what}: too many or too long parameter sets")
    if not 1 <= nal_length_size <= 4:
        raise CodecError(f"{what}: nal_length_size {nal_length_size} is not 1 to 4")
    first = sps[0]
    out = bytearray((1, first[1], first[2], first[3], 0xFC | (nal_length_size - 1), 0xE0 | len(sps)))
    for unit in sps:
        out += len(unit).to_bytes(2, "big") + unit
    out.append(len(pps))
    for unit in pps:
        out += len(unit).to_bytes(2, "big") + unit
    return bytes(out)


@attrs.frozen
class H264Sps:
    """What the egress and statistics need from an H.264 sequence parameter set.

    Attributes:
        profile: profile_idc (66 baseline, 77 main, 100 high...).
        constraints: the constraint_set flags byte.
        level: level_idc (31 means level 3.1).
        chroma_format: chroma_format_idc (1 is 4:2:0).
        bit_depth: luma bit depth.
        width: displayed width in samples, after cropping.
        height: displayed height in samples, after cropping.
        frame_mbs_only: ``False`` for streams that may be interlaced (field coding).
    """

    profile: int
    constraints: int
    level: int
    chroma_format: int
    bit_depth: int
    width: int
    height: int
    frame_mbs_only: bool

    @property
    def codec_string(self) -> str:
        """The RFC 6381 codec string, e.g. ``avc1.64001f``."""
        return f"avc1.{self.profile:02x}{self.constraints:02x}{self.level:02x}"


def _skip_scaling_list(r: BitReader, size: int) -> None:
    last = next_scale = 8
    for _ in range(size):
        if next_scale != 0:
            delta = r.se()
            if not -128 <= delta <= 127:
                raise CodecError("H.264 SPS: delta_scale out of range")
            next_scale = (last + delta + 256) % 256
        last = next_scale if next_scale != 0 else last


def parse_h264_sps(nal: bytes) -> H264Sps:
    """Parse an H.264 SPS NAL unit (with its one-byte NAL header, as in avcC).

    Handles high profiles (chroma format, bit depths, scaling lists), every picture order count
    type, field coding (``frame_mbs_only_flag`` 0) and frame cropping. Emulation prevention
    bytes are removed first. Raises :class:`CodecError` if the NAL unit is not an SPS or is
    malformed; the VUI that follows the cropping window is not read.
    """
    what = "H.264 SPS"
    if not nal:
        raise CodecError(f"{what} is empty")
    if nal[0] & 0x80 or nal[0] & 0x1F != H264_NAL_SPS:
        raise CodecError(f"{what}: NAL header {nal[0]:#04x} is not an SPS")
    r = BitReader(remove_emulation_prevention(nal[1:]), what)
    profile = r.u(8)
    constraints = r.u(8)
    level = r.u(8)
    r.ue_max(31, "seq_parameter_set_id")
    chroma_format = 1
    separate_planes = False
    bit_depth = 8
    if profile in _H264_HIGH_PROFILES:
        chroma_format = r.ue_max(3, "chroma_format_idc")
        if chroma_format == 3:
            separate_planes = r.flag()
        bit_depth = r.ue_max(6, "bit_depth_luma_minus8") + 8
        r.ue_max(6, "bit_depth_chroma_minus8")
        r.skip(1)  # qpprime_y_zero_transform_bypass_flag
        if r.flag():  # seq_scaling_matrix_present_flag
            for i in range(12 if chroma_format == 3 else 8):
                if r.flag():
                    _skip_scaling_list(r, 16 if i < 6 else 64)
    r.ue_max(12, "log2_max_frame_num_minus4")
    poc_type = r.ue_max(2, "pic_order_cnt_type")
    if poc_type == 0:
        r.ue_max(12, "log2_max_pic_order_cnt_lsb_minus4")
    elif poc_type == 1:
        r.skip(1)  # delta_pic_order_always_zero_flag
        r.se()  # offset_for_non_ref_pic
        r.se()  # offset_for_top_to_bottom_field
        for _ in range(r.ue_max(255, "num_ref_frames_in_pic_order_cnt_cycle")):
            r.se()
    r.ue()  # max_num_ref_frames
    r.skip(1)  # gaps_in_frame_num_value_allowed_flag
    width_mbs = r.ue_max(MAX_DIMENSION // 16, "pic_width_in_mbs_minus1") + 1
    height_units = r.ue_max(MAX_DIMENSION // 16, "pic_height_in_map_units_minus1") + 1
    frame_mbs_only = r.flag()
    if not frame_mbs_only:
        r.skip(1)  # mb_adaptive_frame_field_flag
    r.skip(1)  # direct_8x8_inference_flag
    width = width_mbs * 16
    height = height_units * 16 * (1 if frame_mbs_only else 2)
    if r.flag():  # frame_cropping_flag
        left, right, top, bottom = (r.ue_max(MAX_DIMENSION, "frame_crop_offset") for _ in "lrtb")
        sub_w, sub_h = crop_units(chroma_format, separate_planes)
        width -= sub_w * (left + right)
        height -= sub_h * (1 if frame_mbs_only else 2) * (top + bottom)
    if width <= 0 or height <= 0:
        raise CodecError(f"{what}: cropping leaves an empty picture")
    return H264Sps(
        profile=profile,
        constraints=constraints,
        level=level,
        chroma_format=chroma_format,
        bit_depth=bit_depth,
        width=width,
        height=height,
        frame_mbs_only=frame_mbs_only,
    )
