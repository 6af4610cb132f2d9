"""The codec parsers: one parser per record, bytes in, typed values out (sans-IO).

Modules, one codec or one job each:

* :mod:`.errors`: :class:`CodecError`, :class:`UnsupportedCodec`.
* :mod:`.bits`: the one :class:`~.bits.BitReader` (fixed-width fields, exp-Golomb, ``uvlc``),
  :func:`~.bits.leb128` and the AV1 OBU walker :func:`~.bits.obus`.
* :mod:`.nal`: H.264/HEVC NAL units and access units (AVCC/HVCC, Annex B).
* :mod:`.h264`, :mod:`.hevc`: avcC/hvcC and the SPS. :mod:`.aac`: AudioSpecificConfig, ADTS.
  :mod:`.av1`: av1C, the sequence header OBU. :mod:`.vp9`: vpcC (with or without its FullBox
  version and flags), the keyframe header. :mod:`.opus`: ``OpusHead``. :mod:`.opus_packet`:
  an Opus packet's frames (RFC 6716 3.2), read and joined into one packet.
* :mod:`.records`: :func:`~.records.parse_config`, a config frame's record parsed once into a
  :class:`~.records.CodecConfig` that the packagers pass down.

Every public name is importable from here (``from arcly_trio.media.codecs import ...``), but
:mod:`.opus_packet`'s, which are used through their module (``opus_packet.join``).

Error policy: every input comes from a peer (a publisher), so malformed input of any kind
(truncated, inconsistent, out of range) raises :class:`CodecError`, a
:class:`~arcly_trio.core.errors.RemoteProtocolError`. Nothing else escapes on arbitrary bytes
(no ``IndexError``, ``struct.error``...). Passing a value of the wrong type, or a codec name a
function does not know, is our own bug and raises
:class:`~arcly_trio.core.errors.LocalProtocolError`.
"""

from __future__ import annotations

from arcly_trio.media.codecs.aac import AAC_SAMPLE_RATES, AacConfig, adts_header, parse_audio_specific_config
from arcly_trio.media.codecs.av1 import (
    Av1Config,
    Av1SequenceHeader,
    av1_config_record,
    is_key_frame_header,
    parse_av1_config,
    parse_av1_sequence_header,
)
from arcly_trio.media.codecs.bits import BitReader, remove_emulation_prevention
from arcly_trio.media.codecs.errors import CodecError, UnsupportedCodec
from arcly_trio.media.codecs.h264 import AvcConfig, H264Sps, parse_avc_config, parse_h264_sps
from arcly_trio.media.codecs.hevc import HevcConfig, HevcSps, hevc_config_record, parse_hevc_config, parse_hevc_sps
from arcly_trio.media.codecs.nal import (
    H264_AUD,
    H264_NAL_AUD,
    H264_NAL_IDR,
    H264_NAL_PPS,
    H264_NAL_SEI,
    H264_NAL_SPS,
    HEVC_AUD,
    HEVC_NAL_AUD,
    HEVC_NAL_PPS,
    HEVC_NAL_SPS,
    HEVC_NAL_VPS,
    MAX_NAL_UNITS,
    annexb,
    avcc_to_annexb,
    has_aud,
    has_idr,
    has_parameter_sets,
    nal_type,
    nal_types,
    split_nal_units,
)
from arcly_trio.media.codecs.opus import OpusHead, opus_head, parse_opus_head
from arcly_trio.media.codecs.records import CONFIG_CODECS, CodecConfig, ConfigRecord, parse_config
from arcly_trio.media.codecs.vp9 import (
    Vp9Config,
    Vp9FrameHeader,
    parse_vp9_config,
    parse_vp9_frame_header,
    vp9_config_record,
    vp9_picture_size,
)

__all__ = [
    "CodecError",
    "UnsupportedCodec",
    "BitReader",
    "AvcConfig",
    "H264Sps",
    "HevcConfig",
    "HevcSps",
    "AacConfig",
    "Av1Config",
    "Av1SequenceHeader",
    "Vp9Config",
    "OpusHead",
    "CodecConfig",
    "ConfigRecord",
    "CONFIG_CODECS",
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
    "parse_av1_config",
    "parse_av1_sequence_header",
    "parse_vp9_config",
    "vp9_picture_size",
    "Vp9FrameHeader",
    "parse_vp9_frame_header",
    "vp9_config_record",
    "hevc_config_record",
    "av1_config_record",
    "is_key_frame_header",
    "parse_opus_head",
    "opus_head",
    "parse_config",
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
