"""AAC: the AudioSpecificConfig and the ADTS header (sans-IO).

:func:`parse_audio_specific_config` reads an AudioSpecificConfig (the payload of an audio
config frame), :func:`adts_header` builds the 7-byte ADTS header (no CRC) for one raw frame.

Error policy: the bytes come from a peer: a malformed config raises
:class:`~.errors.CodecError`, and so does a config ADTS cannot carry; nothing else escapes on
arbitrary bytes.
"""

from __future__ import annotations

import attrs

from arcly_trio.media.codecs.bits import BitReader
from arcly_trio.media.codecs.errors import CodecError

__all__ = ["AAC_SAMPLE_RATES", "AacConfig", "parse_audio_specific_config", "adts_header"]

#: AAC sampling frequencies by sampling_frequency_index (ISO/IEC 14496-3, 1.6.3.4).
AAC_SAMPLE_RATES: tuple[int, ...] = (
    96000,
    88200,
    64000,
    48000,
    44100,
    32000,
    24000,
    22050,
    16000,
    12000,
    11025,
    8000,
    7350,
)

# Output channels by channelConfiguration (ISO/IEC 23001-8 for the values above 7).
_AAC_CHANNELS = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6, 7: 8, 11: 7, 12: 8, 13: 24, 14: 8}


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


def _aac_object_type(r: BitReader) -> int:
    value = r.u(5)
    return 32 + r.u(6) if value == 31 else value


def _aac_sample_rate(r: BitReader) -> tuple[int, int]:
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
    r = BitReader(bytes(data), "AudioSpecificConfig")
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
