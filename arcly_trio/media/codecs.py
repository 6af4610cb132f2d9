"""Codec-level helpers shared by the egress formats (HLS/MPEG-TS) and stream statistics.

Everything here is pure and sans-IO: bytes in, values out.

* H.264 (AVC): :func:`parse_avc_config` reads an AVCDecoderConfigurationRecord (the payload of a
  video config frame), :func:`parse_h264_sps` reads a sequence parameter set (profile, level,
  picture size after cropping).
* H.265 (HEVC): :func:`parse_hevc_config` reads an HEVCDecoderConfigurationRecord,
  :func:`parse_hevc_sps` reads a sequence parameter set (profile, level, picture size after the
  conformance window).
* NAL units: :func:`split_nal_units` cuts a length-prefixed (AVCC/HVCC) access unit into NAL units,
  :func:`annexb` / :func:`avcc_to_annexb` write them with start codes, :func:`nal_types`,
  :func:`has_idr`, :func:`has_aud`, :func:`has_parameter_sets` say what an access unit holds.
* AAC: :func:`parse_audio_specific_config` reads an AudioSpecificConfig (the payload of an audio
  config frame), :func:`adts_header` builds the 7-byte ADTS header (no CRC) for one raw frame.

Error policy: every input here comes from a peer (a publisher), so malformed input of any kind
(truncated, inconsistent, out of range) raises :class:`CodecError`, a
:class:`~arcly_trio.core.errors.RemoteProtocolError`. Nothing else escapes on arbitrary bytes
(no ``IndexError``, ``struct.error``...). Passing a value of the wrong type, or a codec name this
module does not know, is our own bug and raises
:class:`~arcly_trio.core.errors.LocalProtocolError`.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from ..core.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "CodecError",
    "AvcConfig",
    "H264Sps",
    "HevcConfig",
    "HevcSps",
    "AacConfig",
    "H264_NAL_IDR",
    "H264_NAL_SEI",
    "H264_NAL_SPS",
    "H264_NAL_PPS",
    "H264_NAL_AUD",
    "HEVC_NAL_VPS",
    "HEVC_NAL_SPS",
    "HEVC_NAL_PPS",
    "HEVC_NAL_AUD",
    "H264_AUD",
    "HEVC_AUD",
    "AAC_SAMPLE_RATES",
    "remove_emulation_prevention",
    "parse_avc_config",
    "parse_h264_sps",
    "parse_hevc_config",
    "parse_hevc_sps",
    "split_nal_units",
    "MAX_NAL_UNITS",
    "annexb",
    "avcc_to_annexb",
    "nal_type",
    "nal_types",
    "has_idr",
    "has_aud",
    "has_parameter_sets",
    "parse_audio_specific_config",
    "adts_header",
]


class CodecError(RemoteProtocolError):
    """Codec bytes from the peer are malformed (a config record, a parameter set, an access
    unit or an AAC config that cannot be parsed)."""


# --- NAL unit types ----------------------------------------------------------------------------

H264_NAL_IDR = 5
H264_NAL_SEI = 6
H264_NAL_SPS = 7
H264_NAL_PPS = 8
H264_NAL_AUD = 9

HEVC_NAL_VPS = 32
HEVC_NAL_SPS = 33
HEVC_NAL_PPS = 34
HEVC_NAL_AUD = 35
# IRAP pictures (BLA_W_LP .. CRA_NUT, plus the two reserved IRAP types): random access points.
_HEVC_IRAP = range(16, 24)

#: An H.264 access unit delimiter NAL unit (primary_pic_type 7: any slice type).
H264_AUD = b"\x09\xf0"
#: An HEVC access unit delimiter NAL unit (layer 0, temporal id 0, pic_type 2: I, P or B).
HEVC_AUD = b"\x46\x01\x50"

_START_CODE = b"\x00\x00\x00\x01"

#: AAC sampling frequencies by sampling_frequency_index (ISO/IEC 14496-3, 1.6.3.4).
AAC_SAMPLE_RATES: tuple[int, ...] = (
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
)

# Output channels by channelConfiguration (ISO/IEC 23001-8 for the values above 7).
_AAC_CHANNELS = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6, 7: 8, 11: 7, 12: 8, 13: 24, 14: 8}

_H264_HIGH_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})
_MAX_DIMENSION = 1 << 16  # no real picture is wider or taller than 65536 samples


# --- bit reading -------------------------------------------------------------------------------


def remove_emulation_prevention(data: bytes) -> bytes:
    """Return the RBSP of a NAL unit: every ``00 00 03`` becomes ``00 00``."""
    if b"\x00\x00\x03" not in data:
        return bytes(data)
    out = bytearray()
    zeros = 0
    for byte in data:
        if zeros >= 2 and byte == 3:
            zeros = 0
            continue
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


class _BitReader:
    """MSB-first bit reader over an RBSP; running past the end raises :class:`CodecError`."""

    __slots__ = ("_data", "_pos", "_end", "_what")

    def __init__(self, data: bytes, what: str) -> None:
        self._data = data
        self._pos = 0
        self._end = len(data) * 8
        self._what = what

    def _short(self) -> CodecError:
        return CodecError(f"{self._what} is truncated")

    def u(self, n: int) -> int:
        """Read an ``n``-bit unsigned integer."""
        if self._pos + n > self._end:
            raise self._short()
        value = 0
        data, pos = self._data, self._pos
        for i in range(pos, pos + n):
            value = (value << 1) | ((data[i >> 3] >> (7 - (i & 7))) & 1)
        self._pos = pos + n
        return value

    def flag(self) -> bool:
        return self.u(1) == 1

    def skip(self, n: int) -> None:
        if self._pos + n > self._end:
            raise self._short()
        self._pos += n

    def ue(self) -> int:
        """Read an unsigned exp-Golomb code (at most 32 leading zero bits)."""
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 32:
                raise CodecError(f"{self._what}: exp-Golomb code longer than 32 bits")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        """Read a signed exp-Golomb code."""
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


def _ue_max(r: _BitReader, limit: int, name: str) -> int:
    value = r.ue()
    if value > limit:
        raise CodecError(f"{r._what}: {name} {value} is out of range (max {limit})")
    return value


# --- H.264 -------------------------------------------------------------------------------------


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


def _read_u16_list(data: bytes, pos: int, count: int, what: str) -> tuple[list[bytes], int]:
    items: list[bytes] = []
    for _ in range(count):
        if pos + 2 > len(data):
            raise CodecError(f"{what} is truncated")
        size = (data[pos] << 8) | data[pos + 1]
        pos += 2
        if pos + size > len(data):
            raise CodecError(f"{what} is truncated")
        items.append(bytes(data[pos : pos + size]))
        pos += size
    return items, pos


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
    sps, pos = _read_u16_list(record, 6, record[5] & 0x1F, what)
    if pos >= len(record):
        raise CodecError(f"{what} is truncated")
    pps, pos = _read_u16_list(record, pos + 1, record[pos], what)
    return AvcConfig(
        profile=record[1],
        compatibility=record[2],
        level=record[3],
        nal_length_size=nal_length_size,
        sps=tuple(sps),
        pps=tuple(pps),
    )


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


def _skip_scaling_list(r: _BitReader, size: int) -> None:
    last = next_scale = 8
    for _ in range(size):
        if next_scale != 0:
            delta = r.se()
            if not -128 <= delta <= 127:
                raise CodecError("H.264 SPS: delta_scale out of range")
            next_scale = (last + delta + 256) % 256
        last = next_scale if next_scale != 0 else last


def _crop_units(chroma_format: int, separate_planes: bool) -> tuple[int, int]:
    """SubWidthC and SubHeightC, or (1, 1) for monochrome or separate colour planes."""
    if separate_planes or chroma_format == 0:
        return 1, 1
    if chroma_format == 1:
        return 2, 2
    if chroma_format == 2:
        return 2, 1
    return 1, 1


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
    r = _BitReader(remove_emulation_prevention(nal[1:]), what)
    profile = r.u(8)
    constraints = r.u(8)
    level = r.u(8)
    _ue_max(r, 31, "seq_parameter_set_id")
    chroma_format = 1
    separate_planes = False
    bit_depth = 8
    if profile in _H264_HIGH_PROFILES:
        chroma_format = _ue_max(r, 3, "chroma_format_idc")
        if chroma_format == 3:
            separate_planes = r.flag()
        bit_depth = _ue_max(r, 6, "bit_depth_luma_minus8") + 8
        _ue_max(r, 6, "bit_depth_chroma_minus8")
        r.skip(1)  # qpprime_y_zero_transform_bypass_flag
        if r.flag():  # seq_scaling_matrix_present_flag
            for i in range(12 if chroma_format == 3 else 8):
                if r.flag():
                    _skip_scaling_list(r, 16 if i < 6 else 64)
    _ue_max(r, 12, "log2_max_frame_num_minus4")
    poc_type = _ue_max(r, 2, "pic_order_cnt_type")
    if poc_type == 0:
        _ue_max(r, 12, "log2_max_pic_order_cnt_lsb_minus4")
    elif poc_type == 1:
        r.skip(1)  # delta_pic_order_always_zero_flag
        r.se()  # offset_for_non_ref_pic
        r.se()  # offset_for_top_to_bottom_field
        for _ in range(_ue_max(r, 255, "num_ref_frames_in_pic_order_cnt_cycle")):
            r.se()
    r.ue()  # max_num_ref_frames
    r.skip(1)  # gaps_in_frame_num_value_allowed_flag
    width_mbs = _ue_max(r, _MAX_DIMENSION // 16, "pic_width_in_mbs_minus1") + 1
    height_units = _ue_max(r, _MAX_DIMENSION // 16, "pic_height_in_map_units_minus1") + 1
    frame_mbs_only = r.flag()
    if not frame_mbs_only:
        r.skip(1)  # mb_adaptive_frame_field_flag
    r.skip(1)  # direct_8x8_inference_flag
    width = width_mbs * 16
    height = height_units * 16 * (1 if frame_mbs_only else 2)
    if r.flag():  # frame_cropping_flag
        left, right, top, bottom = (_ue_max(r, _MAX_DIMENSION, "frame_crop_offset") for _ in "lrtb")
        sub_w, sub_h = _crop_units(chroma_format, separate_planes)
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


# --- HEVC --------------------------------------------------------------------------------------


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
    """

    profile: int
    tier: int
    level: int
    nal_length_size: int
    vps: tuple[bytes, ...]
    sps: tuple[bytes, ...]
    pps: tuple[bytes, ...]
    other: tuple[bytes, ...] = ()


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
        nals, pos = _read_u16_list(record, pos + 3, count, what)
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


def _skip_profile_tier_level(r: _BitReader, max_sub_layers_minus1: int) -> tuple[int, int, int]:
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
    r = _BitReader(remove_emulation_prevention(nal[2:]), what)
    r.skip(4)  # sps_video_parameter_set_id
    max_sub_layers_minus1 = r.u(3)
    if max_sub_layers_minus1 > 6:
        raise CodecError(f"{what}: sps_max_sub_layers_minus1 {max_sub_layers_minus1} > 6")
    r.skip(1)  # sps_temporal_id_nesting_flag
    profile, tier, level = _skip_profile_tier_level(r, max_sub_layers_minus1)
    _ue_max(r, 15, "sps_seq_parameter_set_id")
    chroma_format = _ue_max(r, 3, "chroma_format_idc")
    separate_planes = r.flag() if chroma_format == 3 else False
    width = _ue_max(r, _MAX_DIMENSION, "pic_width_in_luma_samples")
    height = _ue_max(r, _MAX_DIMENSION, "pic_height_in_luma_samples")
    if r.flag():  # conformance_window_flag
        left, right, top, bottom = (_ue_max(r, _MAX_DIMENSION, "conf_win_offset") for _ in "lrtb")
        sub_w, sub_h = _crop_units(chroma_format, separate_planes)
        width -= sub_w * (left + right)
        height -= sub_h * (top + bottom)
    bit_depth = _ue_max(r, 8, "bit_depth_luma_minus8") + 8
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


# --- access units ------------------------------------------------------------------------------


#: The most NAL units one access unit may hold (real encoders use a few dozen slices at most;
#: a frame of a million 1-byte NAL units would otherwise cost seconds to rewrite).
MAX_NAL_UNITS = 1024


def split_nal_units(data: bytes, nal_length_size: int = 4, max_units: int = MAX_NAL_UNITS) -> list[bytes]:
    """Cut a length-prefixed (AVCC/HVCC) access unit into its NAL units.

    Zero-length NAL units are dropped. A length that runs past the end, or more than
    ``max_units`` NAL units, raises :class:`CodecError` (so the work is bounded whatever the
    bytes); a ``nal_length_size`` other than 1 to 4 is a
    :class:`~arcly_trio.core.errors.LocalProtocolError`.
    """
    if not 1 <= nal_length_size <= 4:
        raise LocalProtocolError(f"nal_length_size must be 1 to 4, not {nal_length_size}")
    units: list[bytes] = []
    pos, end = 0, len(data)
    while pos < end:
        if len(units) >= max_units:
            raise CodecError(f"access unit: more than {max_units} NAL units")
        if pos + nal_length_size > end:
            raise CodecError("access unit: truncated NAL unit length")
        size = int.from_bytes(data[pos : pos + nal_length_size], "big")
        pos += nal_length_size
        if pos + size > end:
            raise CodecError(f"access unit: NAL unit of {size} bytes runs past the end")
        if size:
            units.append(bytes(data[pos : pos + size]))
        pos += size
    return units


def annexb(nals: Iterable[bytes]) -> bytes:
    """Write NAL units in Annex B byte stream format (each after a 4-byte start code)."""
    return b"".join(_START_CODE + nal for nal in nals)


def avcc_to_annexb(data: bytes, nal_length_size: int = 4) -> bytes:
    """Convert a length-prefixed access unit to Annex B (see :func:`split_nal_units`)."""
    return annexb(split_nal_units(data, nal_length_size))


def _check_codec(codec: str) -> None:
    if codec not in ("h264", "hevc"):
        raise LocalProtocolError(f"not a NAL-unit codec: {codec!r}")


def nal_type(nal: bytes, codec: str) -> int:
    """The NAL unit type of ``nal`` for ``codec`` (``"h264"`` or ``"hevc"``); -1 if empty."""
    _check_codec(codec)
    if not nal:
        return -1
    return nal[0] & 0x1F if codec == "h264" else (nal[0] >> 1) & 0x3F


def nal_types(nals: Iterable[bytes], codec: str) -> list[int]:
    """The NAL unit types of an access unit, in order."""
    return [nal_type(nal, codec) for nal in nals]


def has_idr(nals: Iterable[bytes], codec: str) -> bool:
    """Whether the access unit holds a random access picture (H.264 IDR, HEVC IRAP)."""
    types = nal_types(nals, codec)
    if codec == "h264":
        return H264_NAL_IDR in types
    return any(t in _HEVC_IRAP for t in types)


def has_aud(nals: Iterable[bytes], codec: str) -> bool:
    """Whether the access unit holds an access unit delimiter."""
    aud = H264_NAL_AUD if codec == "h264" else HEVC_NAL_AUD
    return aud in nal_types(nals, codec)


def has_parameter_sets(nals: Iterable[bytes], codec: str) -> bool:
    """Whether the access unit carries every parameter set a decoder needs in-band
    (SPS and PPS for H.264; VPS, SPS and PPS for HEVC)."""
    types = set(nal_types(nals, codec))
    if codec == "h264":
        return {H264_NAL_SPS, H264_NAL_PPS} <= types
    return {HEVC_NAL_VPS, HEVC_NAL_SPS, HEVC_NAL_PPS} <= types


# --- AAC ---------------------------------------------------------------------------------------


@attrs.frozen
class AacConfig:
    """An AudioSpecificConfig (ISO/IEC 14496-3, 1.6.2.1), up to the explicit SBR/PS signalling.

    Attributes:
        object_type: audioObjectType as signalled (2 AAC-LC, 5 SBR/HE-AAC, 29 PS/HE-AACv2...).
        sample_rate: the sampling frequency of the core (the rate ADTS carries).
        channel_config: channelConfiguration (0: defined by a program config element in-band).
        core_object_type: the object type of the core coder: ``object_type`` itself, or the one
            that follows the explicit SBR/PS extension signalling (usually 2).
        extension_sample_rate: the SBR output rate for explicit HE-AAC, else ``None``.
        sampling_index: sampling_frequency_index of the core rate, or 15 when the rate was given
            explicitly.
    """

    object_type: int
    sample_rate: int
    channel_config: int
    core_object_type: int
    extension_sample_rate: int | None = None
    sampling_index: int = 15

    @property
    def channels(self) -> int | None:
        """Number of output channels, or ``None`` when a program config element defines them."""
        return _AAC_CHANNELS.get(self.channel_config)

    @property
    def output_sample_rate(self) -> int:
        """The decoded sampling rate (the SBR rate for explicitly signalled HE-AAC)."""
        return self.extension_sample_rate or self.sample_rate


def _aac_object_type(r: _BitReader) -> int:
    value = r.u(5)
    return 32 + r.u(6) if value == 31 else value


def _aac_sample_rate(r: _BitReader) -> tuple[int, int]:
    index = r.u(4)
    if index == 15:
        rate = r.u(24)
    elif index < len(AAC_SAMPLE_RATES):
        rate = AAC_SAMPLE_RATES[index]
    else:
        raise CodecError(f"AudioSpecificConfig: reserved sampling_frequency_index {index}")
    if rate == 0:
        raise CodecError("AudioSpecificConfig: sampling frequency 0")
    return index, rate


def parse_audio_specific_config(data: bytes) -> AacConfig:
    """Parse an AudioSpecificConfig; raise :class:`CodecError` if it is malformed.

    Reads the object type (with the escape for types above 30), the sampling frequency (with the
    explicit 24-bit escape, index 15) and the channel configuration, and follows explicit SBR/PS
    signalling (object types 5 and 29) to the core object type. The codec-specific
    ``GASpecificConfig`` after that is not read.
    """
    r = _BitReader(bytes(data), "AudioSpecificConfig")
    object_type = _aac_object_type(r)
    if object_type == 0:
        raise CodecError("AudioSpecificConfig: audioObjectType 0 is reserved")
    index, rate = _aac_sample_rate(r)
    channel_config = r.u(4)
    core = object_type
    extension_rate: int | None = None
    if object_type in (5, 29):
        _, extension_rate = _aac_sample_rate(r)
        core = _aac_object_type(r)
        if core == 22:  # ER BSAC carries an extension channel configuration
            r.skip(4)
    return AacConfig(
        object_type=object_type,
        sample_rate=rate,
        channel_config=channel_config,
        core_object_type=core,
        extension_sample_rate=extension_rate,
        sampling_index=index,
    )


def _nearest_sampling_index(rate: int) -> int:
    return min(range(len(AAC_SAMPLE_RATES)), key=lambda i: abs(AAC_SAMPLE_RATES[i] - rate))


def adts_header(config: AacConfig, frame_length: int) -> bytes:
    """The 7-byte ADTS header (MPEG-4, no CRC) for one raw AAC frame of ``frame_length`` bytes.

    ADTS has two bits for the profile, so the core object type must be 1 to 4 (Main, LC, SSR,
    LTP); HE-AAC is written as its AAC-LC core, which decoders extend implicitly. An explicit
    sampling rate is written as the nearest table index. Raises :class:`CodecError` when the
    object type or the channel configuration (3 bits in ADTS) cannot be carried, or the frame
    is too long for the 13-bit length field.
    """
    profile = config.core_object_type - 1
    if not 0 <= profile <= 3:
        raise CodecError(f"AAC object type {config.core_object_type} cannot be carried in ADTS")
    if config.channel_config > 7:
        raise CodecError(f"AAC channel configuration {config.channel_config} cannot be in ADTS")
    total = frame_length + 7
    if frame_length < 0 or total > 0x1FFF:
        raise CodecError(f"AAC frame of {frame_length} bytes is too long for ADTS")
    index = config.sampling_index
    if index >= len(AAC_SAMPLE_RATES):
        index = _nearest_sampling_index(config.sample_rate)
    channels = config.channel_config
    return bytes(
        (
            0xFF,
            0xF1,  # sync, MPEG-4, layer 0, protection_absent
            (profile << 6) | (index << 2) | (channels >> 2),
            ((channels & 0x3) << 6) | (total >> 11),
            (total >> 3) & 0xFF,
            ((total & 0x7) << 5) | 0x1F,  # buffer fullness 0x7FF (VBR)
            0xFC,  # buffer fullness, one raw data block
        )
    )
