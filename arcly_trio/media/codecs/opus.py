"""Opus: the ``OpusHead`` identification header (RFC 7845, 5.1), sans-IO.

What Enhanced RTMP's Opus ``SequenceStart`` and FFmpeg carry as the config record.
:func:`parse_opus_head` reads it, :func:`opus_head` writes a minimal one (mono or stereo).

Error policy: the bytes come from a peer: anything malformed raises
:class:`~.errors.CodecError` (an incompatible version, or a head asked for more than two
channels without a mapping table: :class:`~.errors.UnsupportedCodec`); nothing else escapes on
arbitrary bytes.
"""

from __future__ import annotations

import struct
from typing import Final

import attrs

from arcly_trio.media.codecs.errors import CodecError, UnsupportedCodec

__all__ = ["OpusHead", "parse_opus_head", "opus_head"]

_OPUS_MAGIC: Final = b"OpusHead"


@attrs.frozen
class OpusHead:
    """An Opus identification header (RFC 7845, 5.1).

    ``mapping`` is the channel mapping table after the mapping family (stream count, coupled
    count, one byte per channel), empty for family 0.
    """

    channels: int
    pre_skip: int
    input_sample_rate: int
    output_gain: int
    mapping_family: int
    mapping: bytes = b""


def parse_opus_head(record: bytes) -> OpusHead:
    """Parse an ``OpusHead`` identification header (an ``OpusTags`` comment header is refused
    by name)."""
    what = "OpusHead"
    if record[:8] == b"OpusTags":
        raise CodecError("Opus config is an OpusTags comment header, not the OpusHead")
    if record[:8] != _OPUS_MAGIC:
        raise CodecError(f"{what}: not an Opus identification header ({len(record)} bytes)")
    if len(record) < 19:
        raise CodecError(f"{what} is truncated ({len(record)} bytes)")
    version, channels, pre_skip, rate, gain, family = struct.unpack_from("<BBHIhB", record, 8)
    if version >> 4:
        raise UnsupportedCodec(f"{what} version {version}")
    if channels == 0:
        raise CodecError(f"{what}: 0 channels")
    mapping = b""
    if family == 0:
        if channels > 2:
            raise CodecError(f"{what}: mapping family 0 with {channels} channels")
    else:
        mapping = bytes(record[19 : 21 + channels])
        if len(mapping) != 2 + channels:
            raise CodecError(f"{what}: channel mapping table truncated")
        if mapping[0] == 0 or mapping[1] > mapping[0]:
            raise CodecError(f"{what}: {mapping[0]} streams, {mapping[1]} coupled")
    return OpusHead(channels, pre_skip, rate, gain, family, mapping)


def opus_head(channels: int, sample_rate: int = 48000, pre_skip: int = 0) -> bytes:
    """A minimal ``OpusHead`` (mapping family 0: mono or stereo)."""
    if channels not in (1, 2):
        raise UnsupportedCodec(f"an OpusHead for {channels} channels needs a mapping table")
    if not 0 < sample_rate < 2**32 or not 0 <= pre_skip < 2**16:
        raise CodecError(f"OpusHead: sample rate {sample_rate} or pre-skip {pre_skip} out of range")
    return _OPUS_MAGIC + struct.pack("<BBHIhB", 1, channels, pre_skip, sample_rate, 0, 0)
