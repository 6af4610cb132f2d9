"""Sample entries and the init segment of a fragmented MP4 (sans-IO).

:func:`track_from_config` turns a config frame (its record parsed once, by
:func:`arcly_trio.media.codecs.parse_config`, or given parsed) into an :class:`Fmp4Track`: its
codec, its ISO BMFF sample entry, its picture size or audio format, and its timescale.
:func:`init_segment` writes the CMAF header (``ftyp`` + ``moov``). See :mod:`arcly_trio.media.fmp4`
for the codecs, the sample entries and the brands.

Error policy: a config (or keyframe) that does not parse raises
:class:`~arcly_trio.media.codecs.CodecError`; misuse (not a config frame, a codec not in
:data:`SUPPORTED_CODECS`, a missing keyframe, settings out of range, duplicate tracks) raises
:class:`~arcly_trio.core.errors.LocalProtocolError`.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Final

import attrs

from arcly_trio.core.errors import LocalProtocolError
from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.media.codecs import (
    AacConfig,
    Av1Config,
    CodecConfig,
    CodecError,
    OpusHead,
    Vp9Config,
    parse_av1_config,
    parse_config,
    vp9_picture_size,
)
from arcly_trio.media.codecs.av1 import find_sequence_header
from arcly_trio.media.fmp4.boxes import U32 as _U32
from arcly_trio.media.fmp4.boxes import box as _box
from arcly_trio.media.fmp4.boxes import descriptor as _descriptor
from arcly_trio.media.fmp4.boxes import full_box as _full_box

__all__ = [
    "SUPPORTED_CODECS",
    "VIDEO_TIMESCALE",
    "BRANDS",
    "MIN_TIMESCALE",
    "MAX_TIMESCALE",
    "Fmp4Track",
    "check_tracks",
    "track_from_config",
    "needs_keyframe",
    "init_segment",
]

#: The codecs this module writes (``Frame.codec`` names).
SUPPORTED_CODECS: Final = frozenset({"h264", "hevc", "av1", "vp9", "aac", "opus"})
#: The timescale of video tracks: 90 kHz, so a millisecond is exactly 90 ticks.
VIDEO_TIMESCALE: Final = 90_000
#: The ``ftyp`` major brand and compatible brands (``av01`` is added for AV1 tracks).
BRANDS: Final = (b"iso6", b"cmfc", b"mp41")
#: The smallest timescale, so that timestamps 1 ms apart are at least 1 tick apart.
MIN_TIMESCALE: Final = 1_000
#: The largest timescale.
MAX_TIMESCALE: Final = 1_000_000
_MIN_TIMESCALE: Final = MIN_TIMESCALE
_MAX_TIMESCALE: Final = MAX_TIMESCALE

_VIDEO_CODECS: Final = frozenset({"h264", "hevc", "av1", "vp9"})

_UNITY_MATRIX: Final = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
_LANGUAGE_UND: Final = 0x55C4  # ISO 639-2 "und", packed 5 bits per letter


def _esds(audio_specific_config: bytes) -> bytes:
    decoder_config = _descriptor(
        0x04,
        bytes((0x40, 0x15)),  # Audio ISO/IEC 14496-3; streamType 5 (audio), upStream 0, 1
        b"\x00\x00\x00",  # bufferSizeDB
        struct.pack(">II", 0, 0),  # maxBitrate, avgBitrate: unknown
        _descriptor(0x05, audio_specific_config),
    )
    es = _descriptor(0x03, b"\x00\x00\x00", decoder_config, _descriptor(0x06, b"\x02"))
    return _full_box(b"esds", 0, 0, es)


def _dops(head: OpusHead) -> bytes:
    """The ``dOps`` box (Opus in ISO BMFF, 4.3.2): the OpusHead fields, big-endian."""
    fields = struct.pack(
        ">BBHIhB",
        0,
        head.channels,
        head.pre_skip,
        head.input_sample_rate,
        head.output_gain,
        head.mapping_family,
    )
    return _box(b"dOps", fields, head.mapping)


@attrs.frozen
class Fmp4Track:
    """One track of a fragmented MP4: what its init segment and its fragments need.

    Built by :func:`track_from_config`; the same objects go to :func:`init_segment` and
    :class:`FragmentWriter`.

    Attributes:
        track_id: the MP4 ``track_ID`` (1 and up, unique within a presentation).
        kind: video or audio.
        codec: the ``Frame.codec`` name (``h264``, ``hevc``, ``av1``, ``vp9``, ``aac``,
            ``opus``).
        track: the ``Frame.track`` index whose frames are this track's samples.
        timescale: ticks per second of the track's media timeline.
        config: the config frame's payload the track was built from.
        sample_entry: the complete sample entry box (``avc1``, ``hvc1``, ``av01``, ``vp09``,
            ``mp4a``, ``Opus``) with its configuration box.
        width: picture width in samples (video), else 0.
        height: picture height in samples (video), else 0.
        sample_rate: output sampling rate (audio), else 0.
        channels: output channel count (audio), else 0.
        default_duration: the duration (ticks) a track's last sample gets when nothing better is
            known: a codec frame for audio (1024 AAC samples, 20 ms of Opus), 1/30 s for video.
        codec_config: the config record, parsed (what playlists derive the codec string from).
    """

    track_id: int
    kind: FrameKind
    codec: str
    track: int
    timescale: int
    config: bytes = attrs.field(repr=False)
    sample_entry: bytes = attrs.field(repr=False)
    width: int = 0
    height: int = 0
    sample_rate: int = 0
    channels: int = 0
    default_duration: int = 1
    codec_config: CodecConfig | None = attrs.field(default=None, repr=False, eq=False)


def _visual_sample_entry(kind: bytes, width: int, height: int, config_box: bytes) -> bytes:
    if not 0 < width <= 0xFFFF or not 0 < height <= 0xFFFF:
        raise CodecError(f"picture of {width}x{height} does not fit a visual sample entry")
    return _box(
        kind,
        b"\x00" * 6,  # SampleEntry reserved
        struct.pack(">H", 1),  # data_reference_index
        b"\x00" * 16,  # pre_defined, reserved, pre_defined[3]
        struct.pack(">HHIII", width, height, 0x00480000, 0x00480000, 0),  # 72 dpi, reserved
        struct.pack(">H", 1),  # frame_count
        b"\x00" * 32,  # compressorname (empty Pascal string)
        struct.pack(">Hh", 0x0018, -1),  # depth, pre_defined
        config_box,
    )


def _audio_sample_entry(kind: bytes, channels: int, rate: int, config_box: bytes) -> bytes:
    # A rate over 65535 does not fit the 16.16 field: 0, as FFmpeg writes (decoders read the
    # decoder configuration).
    return _box(
        kind,
        b"\x00" * 6,
        struct.pack(">H", 1),  # data_reference_index
        b"\x00" * 8,  # reserved
        struct.pack(">HHHH", min(channels, 0xFFFF), 16, 0, 0),  # channelcount, samplesize
        struct.pack(">I", rate << 16 if rate <= 0xFFFF else 0),
        config_box,
    )


def _check_config_frame(config: Frame) -> None:
    if not config.config:
        raise LocalProtocolError("track_from_config() needs a config frame")
    if config.codec not in SUPPORTED_CODECS:
        raise LocalProtocolError(f"fragmented MP4 cannot carry codec {config.codec!r} here")
    expected = FrameKind.VIDEO if config.codec in _VIDEO_CODECS else FrameKind.AUDIO
    if config.kind is not expected:
        raise LocalProtocolError(f"a {config.kind.value} frame of codec {config.codec!r}")


def needs_keyframe(config: Frame) -> bool:
    """Whether :func:`track_from_config` needs the track's first keyframe for this config:
    always for VP9, for AV1 when the ``av1C`` carries no sequence header OBU
    (:attr:`~arcly_trio.media.codecs.CodecConfig.needs_keyframe` of a record parsed already).

    Raises :class:`CodecError` for an AV1 config that does not parse and
    ``LocalProtocolError`` as :func:`track_from_config` does for a frame that is not a config.
    """
    _check_config_frame(config)
    if config.codec == "vp9":
        return True
    if config.codec == "av1":
        return parse_av1_config(config.payload).sequence_header is None
    return False


def _video_entry(parsed: CodecConfig, keyframe: Frame | None) -> tuple[bytes, int, int]:
    codec, payload, record = parsed.codec, parsed.payload, parsed.record
    if codec in ("h264", "hevc"):
        sps = parsed.sps
        if sps is None:
            name = "AVC" if codec == "h264" else "HEVC"
            raise CodecError(f"{name}DecoderConfigurationRecord has no SPS")
        entry, box_type = (b"avc1", b"avcC") if codec == "h264" else (b"hvc1", b"hvcC")
        return _visual_sample_entry(entry, sps.width, sps.height, _box(box_type, payload)), sps.width, sps.height
    if isinstance(record, Av1Config):
        header = record.sequence_header
        if header is None:
            header = find_sequence_header(_keyframe_payload(keyframe, codec), "AV1 keyframe")
            if header is None:
                raise CodecError("no AV1 sequence header in the av1C nor in the keyframe")
        width, height = header.max_width, header.max_height
        box = _box(b"av1C", payload)
        return _visual_sample_entry(b"av01", width, height, box), width, height
    assert isinstance(record, Vp9Config)
    width, height = vp9_picture_size(_keyframe_payload(keyframe, codec))
    box = _full_box(b"vpcC", 1, 0, record.record)
    return _visual_sample_entry(b"vp09", width, height, box), width, height


def _keyframe_payload(keyframe: Frame | None, codec: str) -> bytes:
    if keyframe is None:
        raise LocalProtocolError(f"a {codec} track needs its first keyframe (see needs_keyframe)")
    if keyframe.codec != codec or keyframe.config or not keyframe.keyframe:
        raise LocalProtocolError(f"not a {codec} keyframe: {keyframe!r}")
    return keyframe.payload


def _audio_entry(parsed: CodecConfig, timescale: int | None) -> tuple[bytes, int, int, int, int]:
    """``(sample entry, rate, channels, timescale, default duration)`` of an audio config."""
    aac = parsed.record
    if isinstance(aac, AacConfig):
        rate = aac.output_sample_rate
        if not _MIN_TIMESCALE <= min(rate, aac.sample_rate) <= rate <= _MAX_TIMESCALE:
            raise CodecError(f"AAC sample rate {rate} is outside 1000..1000000")
        channels = aac.channels or 2
        ts = timescale or rate
        # One AAC frame: 1024 samples of the core rate (twice that at the SBR rate).
        duration = max(1, (1024 * ts + aac.sample_rate // 2) // aac.sample_rate)
        entry = _audio_sample_entry(b"mp4a", channels, rate, _esds(parsed.payload))
        return entry, rate, channels, ts, duration
    head = parsed.record
    assert isinstance(head, OpusHead)
    ts = timescale or 48_000
    entry = _audio_sample_entry(b"Opus", head.channels, 48_000, _dops(head))
    return entry, 48_000, head.channels, ts, max(1, ts // 50)  # Opus: 48 kHz; 20 ms


def track_from_config(
    config: Frame,
    keyframe: Frame | None = None,
    *,
    track_id: int | None = None,
    timescale: int | None = None,
    parsed: CodecConfig | None = None,
) -> Fmp4Track:
    """The :class:`Fmp4Track` of a config frame (``Frame.config``; see the module docstring).

    Args:
        config: the track's config frame (sequence header).
        keyframe: the track's first keyframe, needed for VP9 and for an AV1 ``av1C`` without a
            sequence header (:func:`needs_keyframe`), ignored otherwise.
        track_id: the MP4 ``track_ID``; by default ``1 + 2 * frame.track`` for video and
            ``2 + 2 * frame.track`` for audio (video 1, audio 2 for a plain stream).
        timescale: ticks per second; by default :data:`VIDEO_TIMESCALE` for video and the sample
            rate for audio (48 000 for Opus). From 1000 to 1 000 000.
        parsed: the config's record parsed already (:func:`~arcly_trio.media.codecs.parse_config`
            of this config frame), so that it is not parsed again.

    Raises :class:`CodecError` for a config (or keyframe) that does not parse and
    ``LocalProtocolError`` for a frame that is not a config frame, a codec not in
    :data:`SUPPORTED_CODECS`, a missing keyframe, or a ``track_id``/``timescale`` out of range.
    """
    _check_config_frame(config)
    if timescale is not None and not _MIN_TIMESCALE <= timescale <= _MAX_TIMESCALE:
        raise LocalProtocolError(f"timescale {timescale} is outside {_MIN_TIMESCALE}..{_MAX_TIMESCALE}")
    if track_id is None:
        track_id = 1 + 2 * config.track + (config.kind is FrameKind.AUDIO)
    if not 1 <= track_id <= _U32:
        raise LocalProtocolError(f"track_ID {track_id} is outside 1..2**32-1")
    if parsed is None:
        parsed = parse_config(config.codec, config.payload)
    elif parsed.codec != config.codec or parsed.payload != config.payload:
        raise LocalProtocolError("track_from_config(parsed=...) is not this config's record")
    if config.kind is FrameKind.VIDEO:
        entry, width, height = _video_entry(parsed, keyframe)
        ts = timescale or VIDEO_TIMESCALE
        return Fmp4Track(track_id, config.kind, config.codec, config.track, ts, config.payload,
                         entry, width=width, height=height,
                         default_duration=max(1, ts // 30), codec_config=parsed)  # fmt: skip
    entry, rate, channels, ts, duration = _audio_entry(parsed, timescale)
    return Fmp4Track(track_id, config.kind, config.codec, config.track, ts, config.payload, entry,
                     sample_rate=rate, channels=channels, default_duration=duration,
                     codec_config=parsed)  # fmt: skip


def check_tracks(tracks: Sequence[Fmp4Track]) -> None:
    if not tracks:
        raise LocalProtocolError("a fragmented MP4 needs at least one track")
    ids = [t.track_id for t in tracks]
    if len(set(ids)) != len(ids):
        raise LocalProtocolError(f"duplicate track_IDs in {ids}")
    keys = [(t.kind, t.track) for t in tracks]
    if len(set(keys)) != len(keys):
        raise LocalProtocolError("two tracks take the frames of the same kind and track index")


def _ftyp(tracks: Sequence[Fmp4Track]) -> bytes:
    brands = list(BRANDS)
    if any(t.codec == "av1" for t in tracks):
        brands.append(b"av01")
    return _box(b"ftyp", b"iso6", struct.pack(">I", 0), *brands)


def _mvhd(next_track_id: int) -> bytes:
    return _full_box(
        b"mvhd", 0, 0,
        struct.pack(">IIII", 0, 0, 1000, 0),  # creation, modification, timescale, duration
        struct.pack(">IHH", 0x00010000, 0x0100, 0),  # rate 1.0, volume 1.0, reserved
        b"\x00" * 8,
        _UNITY_MATRIX,
        b"\x00" * 24,  # pre_defined
        struct.pack(">I", next_track_id),
    )  # fmt: skip


def _trak(track: Fmp4Track) -> bytes:
    video = track.kind is FrameKind.VIDEO
    tkhd = _full_box(
        b"tkhd", 0, 0x000003,  # enabled, in movie
        struct.pack(">IIIII", 0, 0, track.track_id, 0, 0),  # times, track_ID, reserved, duration
        b"\x00" * 8,
        struct.pack(">hhHH", 0, 0, 0 if video else 0x0100, 0),  # layer, group, volume, reserved
        _UNITY_MATRIX,
        struct.pack(">II", track.width << 16, track.height << 16),
    )  # fmt: skip
    mdhd = _full_box(b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, track.timescale, 0, _LANGUAGE_UND, 0))
    handler, name = (b"vide", b"VideoHandler\x00") if video else (b"soun", b"SoundHandler\x00")
    hdlr = _full_box(b"hdlr", 0, 0, b"\x00" * 4, handler, b"\x00" * 12, name)
    media_header = _full_box(b"vmhd", 0, 1, b"\x00" * 8) if video else _full_box(b"smhd", 0, 0, b"\x00" * 4)
    dinf = _box(b"dinf", _full_box(b"dref", 0, 0, struct.pack(">I", 1), _full_box(b"url ", 0, 1)))
    empty = struct.pack(">I", 0)
    stbl = _box(
        b"stbl",
        _full_box(b"stsd", 0, 0, struct.pack(">I", 1), track.sample_entry),
        _full_box(b"stts", 0, 0, empty),
        _full_box(b"stsc", 0, 0, empty),
        _full_box(b"stsz", 0, 0, empty, empty),
        _full_box(b"stco", 0, 0, empty),
    )
    minf = _box(b"minf", media_header, dinf, stbl)
    return _box(b"trak", tkhd, _box(b"mdia", mdhd, hdlr, minf))


def _trex(track: Fmp4Track) -> bytes:
    # default sample description 1; durations, sizes and flags are always in the trun
    return _full_box(b"trex", 0, 0, struct.pack(">IIIII", track.track_id, 1, 0, 0, 0))


def init_segment(tracks: Sequence[Fmp4Track]) -> bytes:
    """The CMAF header (``ftyp`` + ``moov``) of a presentation with these tracks, in order.

    Raises ``LocalProtocolError`` for no track, duplicate ``track_ID``\\ s, or two tracks of the
    same kind and ``Frame.track`` index.
    """
    check_tracks(tracks)
    ordered = sorted(tracks, key=lambda t: t.track_id)
    moov = _box(
        b"moov",
        _mvhd(ordered[-1].track_id + 1 if ordered[-1].track_id < _U32 else _U32),
        *(_trak(t) for t in ordered),
        _box(b"mvex", *(_trex(t) for t in ordered)),
    )
    return _ftyp(tracks) + moov
