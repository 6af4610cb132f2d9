"""A config frame's record, parsed once into a typed :class:`CodecConfig` (sans-IO).

The packagers (fragmented MP4, CMAF, the codec strings of playlists and manifests) take a
:class:`CodecConfig` rather than the record's bytes, so each config a publisher sends is parsed
once, by :func:`parse_config`, when it arrives.

Error policy: the record comes from a peer: one that does not parse raises
:class:`~.errors.CodecError`; a codec this package has no record parser for raises
:class:`~.errors.UnsupportedCodec` (a ``CodecError`` too). Nothing else escapes on arbitrary
bytes.
"""

from __future__ import annotations

from typing import Final

import attrs

from arcly_trio.media.codecs.aac import AacConfig, parse_audio_specific_config
from arcly_trio.media.codecs.av1 import Av1Config, parse_av1_config
from arcly_trio.media.codecs.errors import UnsupportedCodec
from arcly_trio.media.codecs.h264 import AvcConfig, H264Sps, parse_avc_config, parse_h264_sps
from arcly_trio.media.codecs.hevc import HevcConfig, HevcSps, parse_hevc_config, parse_hevc_sps
from arcly_trio.media.codecs.opus import OpusHead, parse_opus_head
from arcly_trio.media.codecs.vp9 import Vp9Config, parse_vp9_config

__all__ = ["CONFIG_CODECS", "CodecConfig", "ConfigRecord", "parse_config"]

ConfigRecord = AvcConfig | HevcConfig | Av1Config | Vp9Config | AacConfig | OpusHead

#: The ``Frame.codec`` names whose config record :func:`parse_config` reads.
CONFIG_CODECS: Final = frozenset({"h264", "hevc", "av1", "vp9", "aac", "opus"})


@attrs.frozen
class CodecConfig:
    """One config frame's record, parsed.

    Attributes:
        codec: the ``Frame.codec`` name.
        payload: the record's bytes, as the publisher sent them.
        record: the parsed record (:class:`~.h264.AvcConfig`, :class:`~.hevc.HevcConfig`,
            :class:`~.av1.Av1Config`, :class:`~.vp9.Vp9Config`, :class:`~.aac.AacConfig`,
            :class:`~.opus.OpusHead`).
        sps: the first SPS of an avcC or hvcC, parsed (``None`` when the record has none).
    """

    codec: str
    payload: bytes = attrs.field(repr=False)
    record: ConfigRecord
    sps: H264Sps | HevcSps | None = None

    @property
    def needs_keyframe(self) -> bool:
        """Whether a sample entry also needs the first keyframe, for the picture size: always
        for VP9, for AV1 when the ``av1C`` carries no sequence header OBU."""
        if self.codec == "vp9":
            return True
        return isinstance(self.record, Av1Config) and self.record.sequence_header is None


def parse_config(codec: str, payload: bytes) -> CodecConfig:
    """Parse the config record of a ``codec`` config frame (see the module docstring)."""
    payload = bytes(payload)
    if codec == "h264":
        avc = parse_avc_config(payload)
        return CodecConfig(codec, payload, avc, parse_h264_sps(avc.sps[0]) if avc.sps else None)
    if codec == "hevc":
        hevc = parse_hevc_config(payload)
        return CodecConfig(codec, payload, hevc, parse_hevc_sps(hevc.sps[0]) if hevc.sps else None)
    if codec == "av1":
        return CodecConfig(codec, payload, parse_av1_config(payload))
    if codec == "vp9":
        return CodecConfig(codec, payload, parse_vp9_config(payload))
    if codec == "aac":
        return CodecConfig(codec, payload, parse_audio_specific_config(payload))
    if codec == "opus":
        return CodecConfig(codec, payload, parse_opus_head(payload))
    raise UnsupportedCodec(f"no config record parser for codec {codec!r}")
