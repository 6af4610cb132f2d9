"""WebCodecs / RFC 6381 codec strings and decoder parameters from codec config records (sans-IO).

A browser's ``VideoDecoder.configure`` / ``AudioDecoder.configure`` needs a fully qualified
codec string, and for some codecs the config record itself as ``description``. This module
derives both from the payload of a kernel config frame (see :mod:`arcly_trio.core.frame` and
:mod:`arcly_trio.media.flv` for the payload conventions), and goes the other way for ingest
from browsers, whose encoders give a codec string but no record for VP9, AV1 and (sometimes)
Opus.

Strings (``Frame.codec`` -> WebCodecs codec string):

* ``h264``, an AVCDecoderConfigurationRecord (avcC): ``avc1.PPCCLL``: AVCProfileIndication,
  profile_compatibility and AVCLevelIndication as two hex digits each (RFC 6381, 3.3).
* ``hevc``, an HEVCDecoderConfigurationRecord (hvcC): ``hvc1.[A-C]<profile>.<compat>.<tier><level>
  [.<constraint byte>]*`` as ISO/IEC 14496-15 Annex E says: the profile space as a letter
  (none for 0), general_profile_idc in decimal, the 32 compatibility flags in reverse bit order
  in hex without leading zeros, ``L`` or ``H`` and general_level_idc in decimal, then the six
  constraint-indicator bytes in hex, trailing zero bytes left out.
* ``av1``, an AV1CodecConfigurationRecord (av1C): ``av01.P.LLT.DD`` (AV1 codecs parameter
  string, AV1-ISOBMFF): seq_profile, seq_level_idx_0 as two digits, ``M``/``H`` for the tier,
  the bit depth as two digits; the long form ``.M.CCC.cp.tc.mc.F`` is added only when the
  stream is not 4:2:0 8/10/12-bit studio-range video with default colours, read from the
  sequence header OBU in the record's configOBUs (when there is none, the short form). The
  sequence header also gives the coded size.
* ``vp9``, a VPCodecConfigurationRecord (vpcC, the ``vpcC`` box payload with its version 1
  and flags): ``vp09.PP.LL.DD`` and, when chroma subsampling, range or colours differ from the
  defaults, the long form ``.CC.cp.tc.mc.FF`` (VP9 codec string, VP9-ISOBMFF "Codecs
  Parameter String").
* ``aac``, an AudioSpecificConfig: ``mp4a.40.N`` with N the audioObjectType as signalled.
* ``opus``, an Opus identification header (``OpusHead``, RFC 7845 5.1, what Enhanced RTMP's
  Opus ``SequenceStart`` and FFmpeg carry): ``opus``.

Which records a browser decoder takes as ``description`` (:attr:`DecoderParameters.description`):
avcC (chunks are then AVCC length-prefixed NAL units), hvcC (HVCC), the AudioSpecificConfig
(chunks are raw AAC frames) and OpusHead; not vpcC nor av1C (VP9 and AV1 chunks are
self-describing).

Reverse, for ingest (:func:`config_record_for`): a vpcC from a ``vp09.…`` string, an av1C
(without configOBUs) from an ``av01.…`` string, an OpusHead from channels and rate.

Error policy: records and strings come from peers: anything malformed raises
:class:`~arcly_trio.media.codecs.CodecError` (a ``RemoteProtocolError``), whatever the bytes; a
codec this module does not know raises :class:`UnsupportedCodec` (a ``CodecError`` too, so a
caller that refuses peer input catches one class). Nothing else escapes on arbitrary input.
"""

from __future__ import annotations

import re
import struct
from typing import Final

import attrs

from .codecs import (
    CodecError,
    _BitReader,
    parse_audio_specific_config,
    parse_avc_config,
    parse_h264_sps,
    parse_hevc_config,
    parse_hevc_sps,
)

__all__ = [
    "AUDIO_CODECS",
    "VIDEO_CODECS",
    "Av1Config",
    "Av1SequenceHeader",
    "DecoderParameters",
    "OpusHead",
    "UnsupportedCodec",
    "Vp9Config",
    "aac_codec_string",
    "av1_codec_string",
    "avc_codec_string",
    "config_record_for",
    "decoder_parameters",
    "frame_codec_of",
    "hevc_codec_string",
    "opus_head",
    "parse_av1_config",
    "parse_av1_sequence_header",
    "parse_opus_head",
    "parse_vp9_config",
    "takes_description",
    "vp9_codec_string",
]

#: ``Frame.codec`` names of the video codecs this module describes.
VIDEO_CODECS: Final = frozenset({"h264", "hevc", "av1", "vp9"})
#: ``Frame.codec`` names of the audio codecs this module describes.
AUDIO_CODECS: Final = frozenset({"aac", "opus"})

_DESCRIPTION_CODECS: Final = frozenset({"h264", "hevc", "aac", "opus"})


class UnsupportedCodec(CodecError):
    """A codec (or a codec string, or a record version) this module does not handle."""


@attrs.frozen
class DecoderParameters:
    """What a WebCodecs decoder needs, derived from one config record.

    Attributes:
        codec: the fully qualified codec string (``avc1.4d401e``, ``opus``...).
        description: whether the decoder takes the record as ``description``.
        coded_width, coded_height: the picture size, where the record says it.
        sample_rate, channels: audio parameters, where the record says them.
        bit_depth: video bit depth, where known.
    """

    codec: str
    description: bool
    coded_width: int | None = None
    coded_height: int | None = None
    sample_rate: int | None = None
    channels: int | None = None
    bit_depth: int | None = None


def takes_description(frame_codec: str) -> bool:
    """Whether a WebCodecs decoder of ``frame_codec`` takes the config record as description."""
    return frame_codec in _DESCRIPTION_CODECS


# --- H.264 / HEVC ------------------------------------------------------------------------------


def avc_codec_string(record: bytes) -> str:
    """``avc1.PPCCLL`` from an avcC record."""
    config = parse_avc_config(record)
    return f"avc1.{config.profile:02x}{config.compatibility:02x}{config.level:02x}"


def _reverse32(value: int) -> int:
    return int(f"{value:032b}"[::-1], 2)


def hevc_codec_string(record: bytes) -> str:
    """``hvc1.…`` from an hvcC record (ISO/IEC 14496-15 Annex E)."""
    parse_hevc_config(record)  # validates the whole record
    space = record[1] >> 6
    tier = (record[1] >> 5) & 1
    profile = record[1] & 0x1F
    compat = _reverse32(int.from_bytes(record[2:6], "big"))
    constraints = list(record[6:12])
    while constraints and constraints[-1] == 0:
        constraints.pop()
    parts = [
        "hvc1",
        f"{'' if space == 0 else 'ABC'[space - 1]}{profile}",
        f"{compat:X}",
        f"{'H' if tier else 'L'}{record[12]}",
        *(f"{byte:X}" for byte in constraints),
    ]
    return ".".join(parts)


# --- AV1 ---------------------------------------------------------------------------------------


@attrs.frozen
class Av1SequenceHeader:
    """What a codec string and a decoder need from an AV1 sequence header OBU."""

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


def _leb128(data: bytes, pos: int, what: str) -> tuple[int, int]:
    value = 0
    for i in range(8):
        if pos >= len(data):
            raise CodecError(f"{what}: leb128 truncated")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, pos
    raise CodecError(f"{what}: leb128 longer than 8 bytes")


def _uvlc(r: _BitReader) -> int:
    zeros = 0
    while not r.flag():
        zeros += 1
        if zeros >= 32:
            raise CodecError("AV1 sequence header: uvlc longer than 32 bits")
    return (1 << zeros) - 1 + r.u(zeros) if zeros else 0


def parse_av1_sequence_header(payload: bytes) -> Av1SequenceHeader:
    """Parse an AV1 ``sequence_header_obu()`` payload (AV1 5.5) up to its ``color_config``."""
    r = _BitReader(bytes(payload), "AV1 sequence header")
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
                _uvlc(r)
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
        profile=profile, level=level, tier=tier, bit_depth=bit_depth, monochrome=monochrome,
        subsampling_x=sub_x, subsampling_y=sub_y, chroma_sample_position=position,
        color_primaries=primaries, transfer_characteristics=transfer, matrix_coefficients=matrix,
        full_range=full_range, max_width=max_width, max_height=max_height,
    )


def _av1_sequence_header_in(obus: bytes) -> Av1SequenceHeader | None:
    """The first sequence header OBU among ``obus`` (low-overhead format), parsed."""
    pos = 0
    what = "av1C configOBUs"
    while pos < len(obus):
        header = obus[pos]
        if header & 0x80:
            raise CodecError(f"{what}: OBU forbidden bit set")
        obu_type = (header >> 3) & 0x0F
        pos += 2 if header & 0x04 else 1
        if not header & 0x02:  # no obu_size: the OBU runs to the end
            size = len(obus) - pos
        else:
            size, pos = _leb128(obus, pos, what)
        if pos + size > len(obus):
            raise CodecError(f"{what}: OBU of {size} bytes runs past the end")
        if obu_type == 1:
            return parse_av1_sequence_header(obus[pos : pos + size])
        pos += size
    return None


def parse_av1_config(record: bytes) -> Av1Config:
    """Parse an av1C record, and the sequence header among its configOBUs if there is one."""
    what = "AV1CodecConfigurationRecord"
    if len(record) < 4:
        raise CodecError(f"{what} is truncated ({len(record)} bytes)")
    if record[0] != 0x81:
        raise CodecError(f"{what}: marker/version byte {record[0]:#04x} is not 0x81")
    b1, b2 = record[1], record[2]
    high_bitdepth, twelve_bit = bool(b2 & 0x40), bool(b2 & 0x20)
    obus = bytes(record[4:])
    return Av1Config(
        profile=b1 >> 5,
        level=b1 & 0x1F,
        tier=b2 >> 7,
        bit_depth=(12 if twelve_bit else 10) if high_bitdepth else 8,
        monochrome=bool(b2 & 0x10),
        subsampling_x=(b2 >> 3) & 1,
        subsampling_y=(b2 >> 2) & 1,
        chroma_sample_position=b2 & 0x03,
        config_obus=obus,
        sequence_header=_av1_sequence_header_in(obus) if obus else None,
    )


def av1_codec_string(record: bytes) -> str:
    """``av01.P.LLT.DD[.M.CCC.cp.tc.mc.F]`` from an av1C record."""
    config = parse_av1_config(record)
    base = f"av01.{config.profile}.{config.level:02d}{'H' if config.tier else 'M'}.{config.bit_depth:02d}"
    seq = config.sequence_header
    chroma = f"{config.subsampling_x}{config.subsampling_y}{config.chroma_sample_position}"
    if seq is None:
        colours = (1, 1, 1, False)
    else:
        colours = (seq.color_primaries, seq.transfer_characteristics, seq.matrix_coefficients, seq.full_range)
        if colours[:3] == (2, 2, 2):  # unspecified: the defaults say no more
            colours = (1, 1, 1, colours[3])
    if not config.monochrome and chroma in ("110", "111", "112") and colours == (1, 1, 1, False):
        return base
    cp, tc, mc, full = colours
    return f"{base}.{int(config.monochrome)}.{chroma}.{cp:02d}.{tc:02d}.{mc:02d}.{int(full)}"


# --- VP9 ---------------------------------------------------------------------------------------


@attrs.frozen
class Vp9Config:
    """A VPCodecConfigurationRecord, version 1 (VP9-ISOBMFF)."""

    profile: int
    level: int
    bit_depth: int
    chroma_subsampling: int
    full_range: bool
    color_primaries: int
    transfer_characteristics: int
    matrix_coefficients: int


def parse_vp9_config(record: bytes) -> Vp9Config:
    """Parse a vpcC box payload (version 1, with its 4-byte version and flags)."""
    what = "VPCodecConfigurationRecord"
    if len(record) < 12:
        raise CodecError(f"{what} is truncated ({len(record)} bytes)")
    if record[0] != 1:
        raise UnsupportedCodec(f"{what} version {record[0]} (only version 1 is supported)")
    size = (record[10] << 8) | record[11]
    if 12 + size > len(record):
        raise CodecError(f"{what}: codecInitializationData runs past the end")
    bits = record[6]
    bit_depth = bits >> 4
    if bit_depth not in (8, 10, 12):
        raise CodecError(f"{what}: bit depth {bit_depth}")
    if record[4] > 3:
        raise CodecError(f"{what}: profile {record[4]}")
    return Vp9Config(
        profile=record[4],
        level=record[5],
        bit_depth=bit_depth,
        chroma_subsampling=(bits >> 1) & 0x07,
        full_range=bool(bits & 1),
        color_primaries=record[7],
        transfer_characteristics=record[8],
        matrix_coefficients=record[9],
    )


def vp9_codec_string(record: bytes) -> str:
    """``vp09.PP.LL.DD[.CC.cp.tc.mc.FF]`` from a vpcC record."""
    c = parse_vp9_config(record)
    base = f"vp09.{c.profile:02d}.{c.level:02d}.{c.bit_depth:02d}"
    colours = (c.color_primaries, c.transfer_characteristics, c.matrix_coefficients)
    if colours == (2, 2, 2):
        colours = (1, 1, 1)
    if c.chroma_subsampling == 1 and colours == (1, 1, 1) and not c.full_range:
        return base
    cp, tc, mc = colours
    return f"{base}.{c.chroma_subsampling:02d}.{cp:02d}.{tc:02d}.{mc:02d}.{int(c.full_range):02d}"


# --- audio -------------------------------------------------------------------------------------


def aac_codec_string(record: bytes) -> str:
    """``mp4a.40.N`` from an AudioSpecificConfig."""
    return f"mp4a.40.{parse_audio_specific_config(record).object_type}"


@attrs.frozen
class OpusHead:
    """An Opus identification header (RFC 7845, 5.1)."""

    channels: int
    pre_skip: int
    input_sample_rate: int
    output_gain: int
    mapping_family: int


_OPUS_MAGIC: Final = b"OpusHead"


def parse_opus_head(record: bytes) -> OpusHead:
    """Parse an ``OpusHead`` identification header."""
    what = "OpusHead"
    if len(record) < 19 or not record.startswith(_OPUS_MAGIC):
        raise CodecError(f"{what}: not an Opus identification header ({len(record)} bytes)")
    version, channels, pre_skip, rate, gain, family = struct.unpack_from("<BBHIhB", record, 8)
    if version >> 4:
        raise UnsupportedCodec(f"{what} version {version}")
    if channels == 0:
        raise CodecError(f"{what}: 0 channels")
    if family != 0 and len(record) < 21 + channels:
        raise CodecError(f"{what}: channel mapping table truncated")
    if family == 0 and channels > 2:
        raise CodecError(f"{what}: mapping family 0 with {channels} channels")
    return OpusHead(channels, pre_skip, rate, gain, family)


def opus_head(channels: int, sample_rate: int = 48000, pre_skip: int = 0) -> bytes:
    """A minimal ``OpusHead`` (mapping family 0: mono or stereo)."""
    if channels not in (1, 2):
        raise UnsupportedCodec(f"an OpusHead for {channels} channels needs a mapping table")
    if not 0 < sample_rate < 2**32 or not 0 <= pre_skip < 2**16:
        raise CodecError(f"OpusHead: sample rate {sample_rate} or pre-skip {pre_skip} out of range")
    return _OPUS_MAGIC + struct.pack("<BBHIhB", 1, channels, pre_skip, sample_rate, 0, 0)


# --- all codecs --------------------------------------------------------------------------------


def decoder_parameters(frame_codec: str, record: bytes) -> DecoderParameters:
    """Everything a WebCodecs decoder of ``frame_codec`` needs from its config ``record``.

    Raises :class:`CodecError` for a malformed record, :class:`UnsupportedCodec` for a codec
    outside :data:`VIDEO_CODECS` and :data:`AUDIO_CODECS`.
    """
    record = bytes(record)
    if frame_codec == "h264":
        avc = parse_avc_config(record)
        width = height = depth = None
        if avc.sps:
            sps = parse_h264_sps(avc.sps[0])
            width, height, depth = sps.width, sps.height, sps.bit_depth
        return DecoderParameters(avc_codec_string(record), True, width, height, bit_depth=depth)
    if frame_codec == "hevc":
        hevc = parse_hevc_config(record)
        width = height = depth = None
        if hevc.sps:
            hsps = parse_hevc_sps(hevc.sps[0])
            width, height, depth = hsps.width, hsps.height, hsps.bit_depth
        return DecoderParameters(hevc_codec_string(record), True, width, height, bit_depth=depth)
    if frame_codec == "av1":
        av1 = parse_av1_config(record)
        seq = av1.sequence_header
        return DecoderParameters(
            av1_codec_string(record), False,
            seq.max_width if seq else None, seq.max_height if seq else None, bit_depth=av1.bit_depth,
        )
    if frame_codec == "vp9":
        vp9 = parse_vp9_config(record)
        return DecoderParameters(vp9_codec_string(record), False, bit_depth=vp9.bit_depth)
    if frame_codec == "aac":
        asc = parse_audio_specific_config(record)
        return DecoderParameters(
            f"mp4a.40.{asc.object_type}", True, sample_rate=asc.output_sample_rate, channels=asc.channels
        )
    if frame_codec == "opus":
        head = parse_opus_head(record)
        return DecoderParameters("opus", True, sample_rate=48000, channels=head.channels)
    raise UnsupportedCodec(f"no WebCodecs codec string for {frame_codec!r}")


# --- codec strings -> frame codecs and records (ingest) ---------------------------------------

_PREFIXES: Final[dict[str, str]] = {
    "avc1": "h264", "avc3": "h264", "hvc1": "hevc", "hev1": "hevc",
    "av01": "av1", "vp09": "vp9", "mp4a": "aac", "opus": "opus",
}
_CODEC_STRING: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9.]{0,63}")
_VP09: Final = re.compile(r"vp09\.(\d\d)\.(\d\d)\.(\d\d)(?:\.(\d\d)\.(\d\d)\.(\d\d)\.(\d\d)\.(\d\d))?")
_AV01: Final = re.compile(r"av01\.(\d)\.(\d\d)([MH])\.(\d\d)(?:\.([01])\.([01])([01])([0-3])\.(\d\d\d?)\.(\d\d\d?)\.(\d\d\d?)\.([01]))?")


def frame_codec_of(codec_string: str) -> str:
    """The ``Frame.codec`` name for a WebCodecs codec string (``avc1.42e01f`` -> ``h264``)."""
    if not isinstance(codec_string, str) or not _CODEC_STRING.fullmatch(codec_string):
        raise CodecError(f"malformed codec string {str(codec_string)[:80]!r}")
    name = _PREFIXES.get(codec_string.split(".", 1)[0])
    if name is None:
        raise UnsupportedCodec(f"unsupported codec {codec_string!r} (H.264, HEVC, AV1, VP9, AAC, Opus)")
    if name == "opus" and codec_string != "opus":
        raise CodecError(f"malformed codec string {codec_string!r}")
    return name


def _vpcc_from(codec_string: str) -> bytes:
    m = _VP09.fullmatch(codec_string)
    if m is None:
        raise CodecError(f"malformed VP9 codec string {codec_string!r}")
    profile, level, depth = int(m[1]), int(m[2]), int(m[3])
    chroma, cp, tc, mc, full = (int(m[i]) for i in range(4, 9)) if m[4] else (1, 2, 2, 2, 0)
    if profile > 3 or depth not in (8, 10, 12) or chroma > 3 or full > 1 or max(cp, tc, mc) > 255:
        raise CodecError(f"VP9 codec string {codec_string!r} is out of range")
    return bytes((1, 0, 0, 0, profile, level, (depth << 4) | (chroma << 1) | full, cp, tc, mc, 0, 0))


def _av1c_from(codec_string: str) -> bytes:
    m = _AV01.fullmatch(codec_string)
    if m is None:
        raise CodecError(f"malformed AV1 codec string {codec_string!r}")
    profile, level, tier, depth = int(m[1]), int(m[2]), int(m[3] == "H"), int(m[4])
    mono, sub_x, sub_y, position = (int(m[i]) for i in range(5, 9)) if m[5] else (0, 1, 1, 0)
    if profile > 2 or level > 31 or depth not in (8, 10, 12):
        raise CodecError(f"AV1 codec string {codec_string!r} is out of range")
    high, twelve = int(depth > 8), int(depth == 12)
    b2 = (tier << 7) | (high << 6) | (twelve << 5) | (mono << 4) | (sub_x << 3) | (sub_y << 2) | position
    return bytes((0x81, (profile << 5) | level, b2, 0))


def config_record_for(
    codec_string: str, *, channels: int | None = None, sample_rate: int | None = None
) -> bytes:
    """A config record for a codec whose browser encoder gives none: vpcC for ``vp09.…``, av1C
    (with no configOBUs: AV1 keyframes carry their sequence header) for ``av01.…``, OpusHead
    for ``opus`` (``channels``, ``sample_rate``). Other codecs need the encoder's record:
    :class:`CodecError` says so."""
    name = frame_codec_of(codec_string)
    if name == "vp9":
        return _vpcc_from(codec_string)
    if name == "av1":
        return _av1c_from(codec_string)
    if name == "opus":
        return opus_head(channels or 2, sample_rate or 48000)
    raise CodecError(f"{codec_string!r} needs its config record (description) from the encoder")
