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
* ``vp9``, a VPCodecConfigurationRecord (vpcC, with or without the ``vpcC`` box's version 1
  and flags in front): ``vp09.PP.LL.DD`` and, when chroma subsampling, range or colours differ from the
  defaults, the long form ``.CC.cp.tc.mc.FF`` (VP9 codec string, VP9-ISOBMFF "Codecs
  Parameter String").
* ``aac``, an AudioSpecificConfig: ``mp4a.40.N`` with N the audioObjectType as signalled.
* ``opus``, an Opus identification header (``OpusHead``, RFC 7845 5.1, what Enhanced RTMP's
  Opus ``SequenceStart`` and FFmpeg carry): ``opus``.

Which records a browser decoder takes as ``description`` (:attr:`DecoderParameters.description`):
avcC (chunks are then AVCC length-prefixed NAL units), hvcC (HVCC), the AudioSpecificConfig
(chunks are raw AAC frames) and OpusHead; not vpcC nor av1C (VP9 and AV1 chunks are
self-describing).

The records are parsed by :mod:`arcly_trio.media.codecs` (the one parser of each; its typed
records are re-exported here); this module formats what they hold. A packager that has the
record parsed already passes the :class:`~arcly_trio.media.codecs.CodecConfig` to
:func:`decoder_parameters_of`.

Reverse, for ingest (:func:`config_record_for`): a vpcC from a ``vp09.…`` string, an av1C
(without configOBUs) from an ``av01.…`` string, an OpusHead from channels and rate.

Error policy: records and strings come from peers: anything malformed raises
:class:`~arcly_trio.media.codecs.CodecError` (a ``RemoteProtocolError``), whatever the bytes; a
codec this module does not know raises :class:`UnsupportedCodec` (a ``CodecError`` too, so a
caller that refuses peer input catches one class). Nothing else escapes on arbitrary input.
"""

from __future__ import annotations

import re
from typing import Final

import attrs

from arcly_trio.media.codecs import (
    Av1Config,
    Av1SequenceHeader,
    CodecConfig,
    CodecError,
    OpusHead,
    UnsupportedCodec,
    Vp9Config,
    opus_head,
    parse_audio_specific_config,
    parse_av1_config,
    parse_av1_sequence_header,
    parse_avc_config,
    parse_config,
    parse_hevc_config,
    parse_opus_head,
    parse_vp9_config,
)
from arcly_trio.media.codecs.aac import AacConfig
from arcly_trio.media.codecs.h264 import AvcConfig, H264Sps
from arcly_trio.media.codecs.hevc import HevcConfig, HevcSps

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
    "decoder_parameters_of",
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
    return _avc_string(parse_avc_config(bytes(record)))


def _avc_string(config: AvcConfig) -> str:
    return f"avc1.{config.profile:02x}{config.compatibility:02x}{config.level:02x}"


def _reverse32(value: int) -> int:
    return int(f"{value:032b}"[::-1], 2)


def hevc_codec_string(record: bytes) -> str:
    """``hvc1.…`` from an hvcC record (ISO/IEC 14496-15 Annex E)."""
    return _hevc_string(parse_hevc_config(bytes(record)))


def _hevc_string(config: HevcConfig) -> str:
    constraints = list(config.constraints)
    while constraints and constraints[-1] == 0:
        constraints.pop()
    space = config.profile_space
    parts = [
        "hvc1",
        f"{'' if space == 0 else 'ABC'[space - 1]}{config.profile}",
        f"{_reverse32(config.compatibility):X}",
        f"{'H' if config.tier else 'L'}{config.level}",
        *(f"{byte:X}" for byte in constraints),
    ]
    return ".".join(parts)


# --- AV1 ---------------------------------------------------------------------------------------


def av1_codec_string(record: bytes) -> str:
    """``av01.P.LLT.DD[.M.CCC.cp.tc.mc.F]`` from an av1C record."""
    return _av1_string(parse_av1_config(bytes(record)))


def _av1_string(config: Av1Config) -> str:
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


def vp9_codec_string(record: bytes) -> str:
    """``vp09.PP.LL.DD[.CC.cp.tc.mc.FF]`` from a vpcC record (with or without its version and
    flags)."""
    return _vp9_string(parse_vp9_config(bytes(record)))


def _vp9_string(c: Vp9Config) -> str:
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
    return f"mp4a.40.{parse_audio_specific_config(bytes(record)).object_type}"


# --- all codecs --------------------------------------------------------------------------------


def decoder_parameters(frame_codec: str, record: bytes) -> DecoderParameters:
    """Everything a WebCodecs decoder of ``frame_codec`` needs from its config ``record``.

    Raises :class:`CodecError` for a malformed record, :class:`UnsupportedCodec` for a codec
    outside :data:`VIDEO_CODECS` and :data:`AUDIO_CODECS`.
    """
    if frame_codec not in VIDEO_CODECS | AUDIO_CODECS:
        raise UnsupportedCodec(f"no WebCodecs codec string for {frame_codec!r}")
    return decoder_parameters_of(parse_config(frame_codec, record))


def decoder_parameters_of(config: CodecConfig) -> DecoderParameters:
    """:func:`decoder_parameters` of a record parsed already (no parsing here)."""
    record, sps = config.record, config.sps
    if isinstance(record, (AvcConfig, HevcConfig)):
        string = _avc_string(record) if isinstance(record, AvcConfig) else _hevc_string(record)
        if isinstance(sps, (H264Sps, HevcSps)):
            return DecoderParameters(string, True, sps.width, sps.height, bit_depth=sps.bit_depth)
        return DecoderParameters(string, True)
    if isinstance(record, Av1Config):
        seq = record.sequence_header
        return DecoderParameters(
            _av1_string(record),
            False,
            seq.max_width if seq else None,
            seq.max_height if seq else None,
            bit_depth=record.bit_depth,
        )
    if isinstance(record, Vp9Config):
        return DecoderParameters(_vp9_string(record), False, bit_depth=record.bit_depth)
    if isinstance(record, AacConfig):
        return DecoderParameters(
            f"mp4a.40.{record.object_type}", True, sample_rate=record.output_sample_rate, channels=record.channels
        )
    return DecoderParameters("opus", True, sample_rate=48000, channels=record.channels)


# --- codec strings -> frame codecs and records (ingest) ---------------------------------------

_PREFIXES: Final[dict[str, str]] = {
    "avc1": "h264",
    "avc3": "h264",
    "hvc1": "hevc",
    "hev1": "hevc",
    "av01": "av1",
    "vp09": "vp9",
    "mp4a": "aac",
    "opus": "opus",
}
_CODEC_STRING: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9.]{0,63}")
_VP09: Final = re.compile(r"vp09\.(\d\d)\.(\d\d)\.(\d\d)(?:\.(\d\d)\.(\d\d)\.(\d\d)\.(\d\d)\.(\d\d))?")
_AV01: Final = re.compile(
    r"av01\.(\d)\.(\d\d)([MH])\.(\d\d)(?:\.([01])\.([01])([01])([0-3])\.(\d\d\d?)\.(\d\d\d?)\.(\d\d\d?)\.([01]))?"
)


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


def config_record_for(codec_string: str, *, channels: int | None = None, sample_rate: int | None = None) -> bytes:
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
