"""A sans-IO fragmented MP4 (CMAF) writer for the kernel's frames: init segments and fragments.

This is the container for fMP4 HLS, LL-HLS (RFC 8216bis) parts and DASH segments. It never
touches a clock, a socket or a file: frames go in, ``bytes`` come out.

Three steps:

* :func:`track_from_config` turns a config frame (a sequence header) into an :class:`Fmp4Track`:
  its codec, its ISO BMFF sample entry, its picture size or audio format, and its timescale.
  VP9 (always) and AV1 (when its ``av1C`` carries no sequence header) need the first keyframe
  too, for the picture size: :func:`needs_keyframe` says so.
* :func:`init_segment` writes the CMAF header: ``ftyp`` + ``moov`` (``mvhd``, one ``trak`` per
  track with empty sample tables, ``mvex`` with one ``trex`` per track).
* :class:`FragmentWriter` takes media frames (:meth:`~FragmentWriter.push`) and cuts them into
  fragments (:meth:`~FragmentWriter.fragment`): ``moof`` + ``mdat``, each a :class:`Fragment`
  with its bytes and what a packager needs to list it (start, duration, independent, size).

Codecs and sample entries
    ``h264`` -> ``avc1`` + ``avcC``; ``hevc`` -> ``hvc1`` + ``hvcC`` (what Apple requires; the
    records are written as the publisher sent them); ``av1`` -> ``av01`` + ``av1C``; ``vp9`` ->
    ``vp09`` + ``vpcC`` (a FullBox of version 1; the record is accepted with or without the
    version and flags in front, as FFmpeg sends it with them); ``aac`` -> ``mp4a`` + ``esds``
    (ES_Descriptor, DecoderConfigDescriptor with objectTypeIndication 0x40, DecoderSpecificInfo =
    the AudioSpecificConfig, SLConfigDescriptor 2); ``opus`` -> ``Opus`` + ``dOps``, converted
    from the ``OpusHead`` identification header that Enhanced RTMP's SequenceStart carries.
    Picture sizes come from the H.264/HEVC SPS, the AV1 sequence header OBU (in the ``av1C``
    configOBUs, else in the first keyframe) and the uncompressed header of the first VP9
    keyframe; audio rate and channels from the AudioSpecificConfig or the ``OpusHead`` (a PCE
    defined AAC layout is written as 2 channels: decoders read the PCE).

Samples
    A sample's bytes are the frame payload as it is (for H.264/HEVC the length-prefixed NAL units
    are the MP4 sample layout already), except that a leading AV1 temporal delimiter OBU is left
    out, as the AV1 ISO BMFF binding asks. Keyframes are sync samples (``sample_depends_on`` 2);
    other video samples are non-sync (``sample_depends_on`` 1, ``sample_is_non_sync_sample``).
    Audio samples are all sync. Video frames of a track before its first keyframe are dropped and
    counted in :attr:`FragmentWriter.dropped_frames`, so every video track starts decodable.

Timescales
    Video: 90 000 (1 ms is exactly 90 ticks). Audio: the sample rate (48 000 for Opus). Frame
    timestamps are milliseconds; a timestamp becomes ``round(ms * timescale / 1000)`` ticks,
    computed from the absolute timestamp every time, never accumulated, so rates that are not a
    multiple of 1000 (44 100) never drift: each sample's decode time is its own timestamp rounded
    to the nearest tick, and durations are differences of those, so they add up exactly. A
    timescale can be chosen per track (``track_from_config(..., timescale=1000)`` makes every
    value exact milliseconds).

Durations: the writer holds back one sample per track
    A sample's duration is the distance from its decode time to the next sample's of the same
    track, so the newest sample of each track stays in the writer until the next one arrives.
    :meth:`FragmentWriter.fragment` writes the samples whose duration is known (with ``until``,
    only those whose DTS is before it: a cut at any frame boundary, e.g. just before a keyframe
    that was just pushed). :meth:`FragmentWriter.flush` ends every track (at the end of a stream):
    the held-back samples get ``end - dts`` when an ``end`` is given and after them, or else the
    previous sample duration of their track (a codec frame for audio, 1/30 s for video, when
    there is none). So, per track, the durations of a fragment add up to its span and the
    ``tfdt`` of the next fragment is this ``tfdt`` plus that sum, except across a gap (below).

Timeline, jumps and discontinuities
    Output decode times never go backwards and never go below 0. The writer adds one offset
    (milliseconds, shared by all tracks so they stay in sync, 0 at first: decode times are the
    frames' own timestamps) to every timestamp. A frame is a *jump* when its DTS is not after
    the previous DTS of its track (a step back, or a repeated timestamp), lies before the end of
    what its track already wrote, would map below 0, or lies more than ``max_gap_ms`` (10 s by
    default) past the newest DTS of any track. At a jump, or at the first frame after
    :meth:`FragmentWriter.discontinuity` (the publisher restarted), the offset is changed so that
    the frame lands right at the end of everything written so far (the latest end of any
    track's newest sample): the output timeline goes on, continuous and monotonic, and the
    :class:`Fragment` that holds the frame has ``discontinuity`` set. A track that stalls (no
    frame for more than ``max_gap_ms`` while other tracks went on) resumes where its frames say:
    its last sample before the stall gets the previous duration and a gap is left in that track's
    timeline (a fragment then has two runs, two ``traf`` boxes, for that track). A gap follows a
    :meth:`FragmentWriter.flush` too when the stream then goes on.

Fragments
    ``moof`` (``mfhd`` with a sequence number that starts at 1 and counts fragments; one ``traf``
    per run of contiguous samples of a track, in track id order, with ``tfhd``
    (default-base-is-moof), ``tfdt`` (version 1, 64-bit) and ``trun`` (version 1, so negative
    composition offsets are legal, with data offset and per-sample duration, size, flags and,
    when a run has any, composition offsets)) + ``mdat`` with the runs' payloads in the same
    order. The bytes are built with one join of the headers and the payloads.

Brands
    ``ftyp`` major brand ``iso6`` (version 0), compatible ``iso6``, ``cmfc`` (CMAF), ``mp41``,
    plus ``av01`` with an AV1 track: what FFmpeg writes in CMAF mode. ``iso6`` is the ISO BMFF
    brand that covers ``tfdt`` and default-base-is-moof; players were not checked beyond
    FFmpeg (see the tests).

Error policy
    Configs and codec bytes come from the publisher: a config that does not parse (a truncated
    or inconsistent record, no SPS in ``avcC``, an ``OpusTags`` comment header instead of the
    ``OpusHead``, a picture too large for a sample entry), a keyframe whose header does not
    parse, and a frame whose composition offset does not fit 32 signed bits raise
    :class:`~arcly_trio.media.codecs.CodecError` (a
    :class:`~arcly_trio.core.errors.RemoteProtocolError`); nothing else escapes on arbitrary
    bytes, and the writer is left as it was, so the caller may drop the frame and go on.
    Misuse raises :class:`~arcly_trio.core.errors.LocalProtocolError`: a codec this module
    cannot write (see :data:`SUPPORTED_CODECS`), a config that is not a config frame, a VP9/AV1
    track without the keyframe it needs, invalid settings, duplicate tracks, a frame whose codec
    differs from its track's, a fragment over 2 GiB. Frames of no track (data frames, tracks the
    writer was not built with) and config frames are not samples: :meth:`FragmentWriter.push`
    ignores them and returns ``False`` (compare a new config frame with :attr:`Fmp4Track.config`:
    a new configuration needs a new init segment and a new writer).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from typing import Final

import attrs

from ..core.errors import LocalProtocolError
from ..core.frame import Frame, FrameKind
from .codecs import (
    CodecError,
    parse_audio_specific_config,
    parse_avc_config,
    parse_h264_sps,
    parse_hevc_config,
    parse_hevc_sps,
)

__all__ = [
    "SUPPORTED_CODECS",
    "VIDEO_TIMESCALE",
    "DEFAULT_MAX_GAP_MS",
    "BRANDS",
    "Fmp4Track",
    "TrackRun",
    "Fragment",
    "FragmentWriter",
    "track_from_config",
    "needs_keyframe",
    "init_segment",
    "ms_to_ticks",
]

#: The codecs this module writes (``Frame.codec`` names).
SUPPORTED_CODECS: Final = frozenset({"h264", "hevc", "av1", "vp9", "aac", "opus"})
#: The timescale of video tracks: 90 kHz, so a millisecond is exactly 90 ticks.
VIDEO_TIMESCALE: Final = 90_000
#: A forward DTS step past the newest DTS of the stream larger than this is a jump (ms).
DEFAULT_MAX_GAP_MS: Final = 10_000
#: The ``ftyp`` major brand and compatible brands (``av01`` is added for AV1 tracks).
BRANDS: Final = (b"iso6", b"cmfc", b"mp41")

_MAX_GAP_LIMIT_MS: Final = 3_600_000  # 1 h: keeps every duration in 32 bits at 1 MHz
_MIN_TIMESCALE: Final = 1_000  # so that timestamps 1 ms apart are at least 1 tick apart
_MAX_TIMESCALE: Final = 1_000_000
_U32: Final = 0xFFFFFFFF
_I32_MIN: Final = -0x80000000
_I32_MAX: Final = 0x7FFFFFFF
_MAX_MDAT: Final = 0x7FFFFFFF  # trun data_offset is signed 32-bit
_MAX_CONFIG_OBUS: Final = 4096  # bytes of av1C configOBUs / keyframe prefix searched
_MAX_SEQUENCE_HEADER: Final = 512  # bytes of an AV1 sequence header read (real ones: < 400)

_VIDEO_CODECS: Final = frozenset({"h264", "hevc", "av1", "vp9"})

# Sample flags (ISO/IEC 14496-12, 8.8.3.1).
_SYNC_FLAGS: Final = 0x02000000  # sample_depends_on = 2 (does not depend on others)
_NON_SYNC_FLAGS: Final = 0x01010000  # sample_depends_on = 1, sample_is_non_sync_sample

# trun flags.
_TRUN_DATA_OFFSET: Final = 0x000001
_TRUN_DURATION: Final = 0x000100
_TRUN_SIZE: Final = 0x000200
_TRUN_FLAGS: Final = 0x000400
_TRUN_CTO: Final = 0x000800
_TFHD_DEFAULT_BASE_IS_MOOF: Final = 0x020000

_UNITY_MATRIX: Final = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
_LANGUAGE_UND: Final = 0x55C4  # ISO 639-2 "und", packed 5 bits per letter

Payload = bytes | memoryview


def ms_to_ticks(ms: int, timescale: int) -> int:
    """``ms`` milliseconds in ``timescale`` ticks, rounded to the nearest tick (halves up)."""
    return (ms * timescale + 500) // 1000


def _ticks_to_ms_ceil(ticks: int, timescale: int) -> int:
    return -(-ticks * 1000 // timescale)


# --------------------------------------------------------------------------------------------
# Boxes
# --------------------------------------------------------------------------------------------


def _box(kind: bytes, *parts: bytes) -> bytes:
    body = b"".join(parts)
    return struct.pack(">I4s", 8 + len(body), kind) + body


def _full_box(kind: bytes, version: int, flags: int, *parts: bytes) -> bytes:
    return _box(kind, struct.pack(">I", (version << 24) | flags), *parts)


# --------------------------------------------------------------------------------------------
# Bit reading for the AV1 and VP9 headers (bounded inputs: a few hundred bytes at most)
# --------------------------------------------------------------------------------------------


class _Bits:
    """MSB-first bit reader over a short byte string; running out raises :class:`CodecError`."""

    __slots__ = ("_value", "_size", "_pos", "_what")

    def __init__(self, data: bytes, what: str) -> None:
        self._value = int.from_bytes(data, "big")
        self._size = len(data) * 8
        self._pos = 0
        self._what = what

    def u(self, n: int) -> int:
        """Read an ``n``-bit unsigned integer."""
        end = self._pos + n
        if end > self._size:
            raise CodecError(f"{self._what} is truncated")
        self._pos = end
        return (self._value >> (self._size - end)) & ((1 << n) - 1)

    def flag(self) -> bool:
        return self.u(1) == 1

    def uvlc(self) -> int:
        """AV1 ``uvlc()``: a variable-length unsigned code."""
        zeros = 0
        while not self.flag():
            zeros += 1
            if zeros >= 32:
                return _U32
        return self.u(zeros) + (1 << zeros) - 1


def _leb128(data: Payload, pos: int, what: str) -> tuple[int, int]:
    """An AV1 ``leb128()`` at ``pos``: ``(value, position after it)``; at most 8 bytes."""
    value = 0
    for i in range(8):
        if pos + i >= len(data):
            raise CodecError(f"{what}: leb128 is truncated")
        byte = data[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, pos + i + 1
    raise CodecError(f"{what}: leb128 longer than 8 bytes")


# --------------------------------------------------------------------------------------------
# AV1
# --------------------------------------------------------------------------------------------

_OBU_SEQUENCE_HEADER: Final = 1
_OBU_TEMPORAL_DELIMITER: Final = 2


def _obus(data: Payload, what: str) -> Iterable[tuple[int, int, int]]:
    """The OBUs of a low-overhead AV1 byte string: ``(type, payload start, payload end)``.

    An OBU without a size field runs to the end. Bounded by the input: each step advances.
    """
    pos, n = 0, len(data)
    while pos < n:
        header = data[pos]
        if header & 0x80:
            raise CodecError(f"{what}: OBU forbidden bit set")
        obu_type = (header >> 3) & 0x0F
        start = pos + 1 + ((header >> 2) & 1)  # the extension byte
        if header & 0x02:
            size, start = _leb128(data, start, what)
            end = start + size
        else:
            end = n
        if start > n or end > n:
            raise CodecError(f"{what}: OBU runs past the end")
        yield obu_type, start, end
        pos = end


def _av1_picture_size(sequence_header: bytes) -> tuple[int, int]:
    """``(width, height)`` from an AV1 sequence header OBU payload (AV1 spec 5.5.1)."""
    r = _Bits(sequence_header[:_MAX_SEQUENCE_HEADER], "AV1 sequence header")
    r.u(3)  # seq_profile
    r.u(1)  # still_picture
    if r.flag():  # reduced_still_picture_header
        r.u(5)  # seq_level_idx[0]
    else:
        decoder_model_info = False
        buffer_delay_length = 0
        if r.flag():  # timing_info_present_flag
            r.u(32)  # num_units_in_display_tick
            r.u(32)  # time_scale
            if r.flag():  # equal_picture_interval
                r.uvlc()  # num_ticks_per_picture_minus_1
            decoder_model_info = r.flag()
            if decoder_model_info:
                buffer_delay_length = r.u(5) + 1
                r.u(32)  # num_units_in_decoding_tick
                r.u(5)  # buffer_removal_time_length_minus_1
                r.u(5)  # frame_presentation_time_length_minus_1
        initial_display_delay = r.flag()
        for _ in range(r.u(5) + 1):  # operating_points_cnt_minus_1
            r.u(12)  # operating_point_idc
            if r.u(5) > 7:  # seq_level_idx
                r.u(1)  # seq_tier
            if decoder_model_info and r.flag():  # decoder_model_present_for_this_op
                r.u(buffer_delay_length)  # decoder_buffer_delay
                r.u(buffer_delay_length)  # encoder_buffer_delay
                r.u(1)  # low_delay_mode_flag
            if initial_display_delay and r.flag():
                r.u(4)  # initial_display_delay_minus_1
    width_bits = r.u(4) + 1
    height_bits = r.u(4) + 1
    return r.u(width_bits) + 1, r.u(height_bits) + 1


def _av1_sequence_header(data: Payload, what: str) -> bytes | None:
    """The payload of the first sequence header OBU in ``data`` (searched within a bounded
    prefix), or ``None``."""
    for obu_type, start, end in _obus(data, what):
        if obu_type == _OBU_SEQUENCE_HEADER:
            return bytes(data[start:end])
        if start >= _MAX_CONFIG_OBUS:
            break
    return None


def _check_av1c(record: bytes) -> None:
    if len(record) < 4:
        raise CodecError(f"AV1CodecConfigurationRecord is truncated ({len(record)} bytes)")
    if record[0] != 0x81:  # marker 1, version 1
        raise CodecError(f"AV1CodecConfigurationRecord: marker/version byte {record[0]:#04x}")


def _av1_sample(payload: bytes) -> Payload:
    """An AV1 temporal unit without its leading temporal delimiter OBU (not copied)."""
    if not payload or (payload[0] >> 3) & 0x0F != _OBU_TEMPORAL_DELIMITER or not payload[0] & 0x02:
        return payload
    try:
        size, start = _leb128(payload, 1 + ((payload[0] >> 2) & 1), "AV1 temporal unit")
    except CodecError:
        return payload
    end = start + size
    return memoryview(payload)[end:] if end <= len(payload) else payload


# --------------------------------------------------------------------------------------------
# VP9
# --------------------------------------------------------------------------------------------


def vp9_picture_size(frame: bytes) -> tuple[int, int]:
    """``(width, height)`` from the uncompressed header of a VP9 key frame (VP9 spec 6.2);
    :class:`CodecError` if it does not parse or is not a key frame."""
    r = _Bits(bytes(frame[:64]), "VP9 frame header")
    if r.u(2) != 2:
        raise CodecError("VP9 frame header: bad frame_marker")
    profile = r.u(1)
    profile |= r.u(1) << 1
    if profile == 3:
        r.u(1)  # reserved_zero
    if r.flag():
        raise CodecError("VP9 keyframe is a show_existing_frame")
    if r.u(1) != 0:
        raise CodecError("VP9 keyframe is not a KEY_FRAME")
    r.u(2)  # show_frame, error_resilient_mode
    if r.u(24) != 0x498342:
        raise CodecError("VP9 frame header: bad frame_sync_code")
    if profile >= 2:
        r.u(1)  # ten_or_twelve_bit
    if r.u(3) != 7:  # color_space is not CS_RGB
        r.u(1)  # color_range
        if profile in (1, 3):
            r.u(3)  # subsampling_x, subsampling_y, reserved_zero
    elif profile in (1, 3):
        r.u(1)  # reserved_zero
    return r.u(16) + 1, r.u(16) + 1


def _vpcc_record(config: bytes) -> bytes:
    """The VPCodecConfigurationRecord of a config frame, without FullBox version and flags.

    FFmpeg sends it with version 1 and flags 0 in front (as in a ``vpcC`` box); the bare
    record (ISO binding of VP codecs) is accepted too. The two cannot be confused: a bare
    record that starts ``01 00 00 00`` would have a bit depth of 0.
    """
    record = config[4:] if config[:4] == b"\x01\x00\x00\x00" else config
    what = "VPCodecConfigurationRecord"
    if len(record) < 8:
        raise CodecError(f"{what} is truncated ({len(record)} bytes)")
    bit_depth = record[2] >> 4
    if bit_depth not in (8, 10, 12):
        raise CodecError(f"{what}: bit depth {bit_depth}")
    init_size = (record[6] << 8) | record[7]
    if len(record) != 8 + init_size:
        raise CodecError(f"{what}: {len(record)} bytes, initialization data says {8 + init_size}")
    return bytes(record)


# --------------------------------------------------------------------------------------------
# Audio configs
# --------------------------------------------------------------------------------------------


def _descriptor(tag: int, *parts: bytes) -> bytes:
    """An MPEG-4 descriptor (ISO/IEC 14496-1, 8.3.3): tag, expandable size, body."""
    body = b"".join(parts)
    size = len(body)
    length = [size & 0x7F]
    size >>= 7
    while size:
        length.append(0x80 | (size & 0x7F))
        size >>= 7
    return bytes((tag, *reversed(length))) + body


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


@attrs.frozen
class _OpusHead:
    channels: int
    pre_skip: int
    input_rate: int
    gain: int
    family: int
    mapping: bytes  # stream count, coupled count, channel mapping (family != 0)


def _parse_opus_head(config: bytes) -> _OpusHead:
    """The fields of an Ogg Opus identification header (RFC 7845, 5.1)."""
    what = "OpusHead"
    if config[:8] == b"OpusTags":
        raise CodecError("Opus config is an OpusTags comment header, not the OpusHead")
    if config[:8] != b"OpusHead":
        raise CodecError("Opus config does not start with 'OpusHead'")
    if len(config) < 19:
        raise CodecError(f"{what} is truncated ({len(config)} bytes)")
    version, channels, pre_skip, rate, gain, family = struct.unpack_from("<BBHIhB", config, 8)
    if version >> 4:
        raise CodecError(f"{what}: incompatible version {version}")
    if channels == 0:
        raise CodecError(f"{what}: 0 channels")
    mapping = b""
    if family == 0:
        if channels > 2:
            raise CodecError(f"{what}: mapping family 0 with {channels} channels")
    else:
        mapping = bytes(config[19 : 21 + channels])
        if len(mapping) != 2 + channels:
            raise CodecError(f"{what}: channel mapping table is truncated")
        if mapping[0] == 0 or mapping[1] > mapping[0]:
            raise CodecError(f"{what}: {mapping[0]} streams, {mapping[1]} coupled")
    return _OpusHead(channels, pre_skip, rate, gain, family, mapping)


def _dops(head: _OpusHead) -> bytes:
    """The ``dOps`` box (Opus in ISO BMFF, 4.3.2): the OpusHead fields, big-endian."""
    fields = struct.pack(
        ">BBHIhB", 0, head.channels, head.pre_skip, head.input_rate, head.gain, head.family
    )
    return _box(b"dOps", fields, head.mapping)


# --------------------------------------------------------------------------------------------
# Tracks
# --------------------------------------------------------------------------------------------


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
    always for VP9, for AV1 when the ``av1C`` carries no sequence header OBU.

    Raises :class:`CodecError` for an AV1 config that does not parse and
    ``LocalProtocolError`` as :func:`track_from_config` does for a frame that is not a config.
    """
    _check_config_frame(config)
    if config.codec == "vp9":
        return True
    if config.codec == "av1":
        _check_av1c(config.payload)
        return _av1_sequence_header(config.payload[4:], "av1C configOBUs") is None
    return False


def _video_entry(config: Frame, keyframe: Frame | None) -> tuple[bytes, int, int]:
    codec, payload = config.codec, config.payload
    if codec == "h264":
        avc = parse_avc_config(payload)
        if not avc.sps:
            raise CodecError("AVCDecoderConfigurationRecord has no SPS")
        sps = parse_h264_sps(avc.sps[0])
        box = _box(b"avcC", payload)
        return _visual_sample_entry(b"avc1", sps.width, sps.height, box), sps.width, sps.height
    if codec == "hevc":
        hevc = parse_hevc_config(payload)
        if not hevc.sps:
            raise CodecError("HEVCDecoderConfigurationRecord has no SPS")
        hsps = parse_hevc_sps(hevc.sps[0])
        box = _box(b"hvcC", payload)
        return _visual_sample_entry(b"hvc1", hsps.width, hsps.height, box), hsps.width, hsps.height
    if codec == "av1":
        _check_av1c(payload)
        header = _av1_sequence_header(payload[4:], "av1C configOBUs")
        if header is None:
            header = _av1_sequence_header(_keyframe_payload(keyframe, codec), "AV1 keyframe")
            if header is None:
                raise CodecError("no AV1 sequence header in the av1C nor in the keyframe")
        width, height = _av1_picture_size(header)
        box = _box(b"av1C", payload)
        return _visual_sample_entry(b"av01", width, height, box), width, height
    # vp9
    record = _vpcc_record(payload)
    width, height = vp9_picture_size(_keyframe_payload(keyframe, codec))
    box = _full_box(b"vpcC", 1, 0, record)
    return _visual_sample_entry(b"vp09", width, height, box), width, height


def _keyframe_payload(keyframe: Frame | None, codec: str) -> bytes:
    if keyframe is None:
        raise LocalProtocolError(f"a {codec} track needs its first keyframe (see needs_keyframe)")
    if keyframe.codec != codec or keyframe.config or not keyframe.keyframe:
        raise LocalProtocolError(f"not a {codec} keyframe: {keyframe!r}")
    return keyframe.payload


def _audio_entry(config: Frame, timescale: int | None) -> tuple[bytes, int, int, int, int]:
    """``(sample entry, rate, channels, timescale, default duration)`` of an audio config."""
    if config.codec == "aac":
        aac = parse_audio_specific_config(config.payload)
        rate = aac.output_sample_rate
        if not _MIN_TIMESCALE <= min(rate, aac.sample_rate) <= rate <= _MAX_TIMESCALE:
            raise CodecError(f"AAC sample rate {rate} is outside 1000..1000000")
        channels = aac.channels or 2
        ts = timescale or rate
        # One AAC frame: 1024 samples of the core rate (twice that at the SBR rate).
        duration = max(1, (1024 * ts + aac.sample_rate // 2) // aac.sample_rate)
        entry = _audio_sample_entry(b"mp4a", channels, rate, _esds(config.payload))
        return entry, rate, channels, ts, duration
    head = _parse_opus_head(config.payload)
    ts = timescale or 48_000
    entry = _audio_sample_entry(b"Opus", head.channels, 48_000, _dops(head))
    return entry, 48_000, head.channels, ts, max(1, ts // 50)  # Opus: 48 kHz; 20 ms


def track_from_config(
    config: Frame,
    keyframe: Frame | None = None,
    *,
    track_id: int | None = None,
    timescale: int | None = None,
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

    Raises :class:`CodecError` for a config (or keyframe) that does not parse and
    ``LocalProtocolError`` for a frame that is not a config frame, a codec not in
    :data:`SUPPORTED_CODECS`, a missing keyframe, or a ``track_id``/``timescale`` out of range.
    """
    _check_config_frame(config)
    if timescale is not None and not _MIN_TIMESCALE <= timescale <= _MAX_TIMESCALE:
        raise LocalProtocolError(
            f"timescale {timescale} is outside {_MIN_TIMESCALE}..{_MAX_TIMESCALE}"
        )
    if track_id is None:
        track_id = 1 + 2 * config.track + (config.kind is FrameKind.AUDIO)
    if not 1 <= track_id <= _U32:
        raise LocalProtocolError(f"track_ID {track_id} is outside 1..2**32-1")
    if config.kind is FrameKind.VIDEO:
        entry, width, height = _video_entry(config, keyframe)
        ts = timescale or VIDEO_TIMESCALE
        return Fmp4Track(track_id, config.kind, config.codec, config.track, ts, config.payload,
                         entry, width=width, height=height,
                         default_duration=max(1, ts // 30))  # fmt: skip
    entry, rate, channels, ts, duration = _audio_entry(config, timescale)
    return Fmp4Track(track_id, config.kind, config.codec, config.track, ts, config.payload, entry,
                     sample_rate=rate, channels=channels, default_duration=duration)  # fmt: skip


# --------------------------------------------------------------------------------------------
# Init segment
# --------------------------------------------------------------------------------------------


def _check_tracks(tracks: Sequence[Fmp4Track]) -> None:
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
    mdhd = _full_box(
        b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, track.timescale, 0, _LANGUAGE_UND, 0)
    )
    handler, name = (b"vide", b"VideoHandler\x00") if video else (b"soun", b"SoundHandler\x00")
    hdlr = _full_box(b"hdlr", 0, 0, b"\x00" * 4, handler, b"\x00" * 12, name)
    media_header = (
        _full_box(b"vmhd", 0, 1, b"\x00" * 8) if video else _full_box(b"smhd", 0, 0, b"\x00" * 4)
    )
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
    _check_tracks(tracks)
    ordered = sorted(tracks, key=lambda t: t.track_id)
    moov = _box(
        b"moov",
        _mvhd(ordered[-1].track_id + 1 if ordered[-1].track_id < _U32 else _U32),
        *(_trak(t) for t in ordered),
        _box(b"mvex", *(_trex(t) for t in ordered)),
    )
    return _ftyp(tracks) + moov


# --------------------------------------------------------------------------------------------
# Fragments
# --------------------------------------------------------------------------------------------


@attrs.frozen
class TrackRun:
    """One ``traf`` of a fragment: contiguous samples of one track.

    Attributes:
        track_id: the track's ``track_ID``.
        timescale: the track's timescale.
        decode_time: the ``tfdt`` (baseMediaDecodeTime) in ticks.
        duration: the sum of the sample durations in ticks.
        samples: the number of samples.
        size: the bytes of the samples in the ``mdat``.
        starts_with_sync: the first sample is a sync sample (a keyframe, or any audio sample).
    """

    track_id: int
    timescale: int
    decode_time: int
    duration: int
    samples: int
    size: int
    starts_with_sync: bool

    @property
    def end(self) -> int:
        """The decode time (ticks) right after the run: ``decode_time + duration``."""
        return self.decode_time + self.duration


@attrs.frozen
class Fragment:
    """One ``moof`` + ``mdat``: an LL-HLS part, or a piece of a segment.

    ``start``, ``duration`` and ``first_dts`` describe the *reference run*: the runs of the
    writer's leading track (its first video track, or its first track when it has no video),
    or, when the fragment has none of them, its earliest run.

    Attributes:
        sequence: the ``mfhd`` sequence number.
        data: the bytes (``moof`` then ``mdat``).
        runs: one :class:`TrackRun` per ``traf``, in ``moof`` order.
        start: decode time of the reference run's first sample, in seconds.
        duration: seconds from ``start`` to the end of the reference track's last sample in
            this fragment (the sum of its sample durations when it has no gap).
        first_dts: the DTS (ms, as pushed) of the reference run's first sample.
        independent: the leading track has samples here and the first one is a sync sample
            (LL-HLS ``INDEPENDENT=YES``; always true for an audio-only writer).
        discontinuity: a sample in this fragment starts a new timeline (a jump or
            :meth:`FragmentWriter.discontinuity`).
    """

    sequence: int
    data: bytes = attrs.field(repr=False)
    runs: tuple[TrackRun, ...]
    start: float
    duration: float
    first_dts: int
    independent: bool
    discontinuity: bool

    @property
    def size(self) -> int:
        """The fragment's length in bytes."""
        return len(self.data)


class _Sample:
    """A sample waiting in the writer; ``duration`` is 0 until the next sample is known."""

    __slots__ = ("decode", "cto", "payload", "sync", "dts", "out", "duration", "rebased")

    def __init__(
        self, decode: int, cto: int, payload: Payload, sync: bool, dts: int, out: int, rebased: bool
    ) -> None:
        self.decode = decode  # ticks
        self.cto = cto  # ticks
        self.payload = payload
        self.sync = sync
        self.dts = dts  # ms, as pushed
        self.out = out  # ms, on the output timeline
        self.duration = 0
        self.rebased = rebased


class _TrackState:
    """What the writer keeps per track."""

    __slots__ = ("track", "held", "done", "last_out", "end", "last_duration", "max_gap", "started")

    def __init__(self, track: Fmp4Track, max_gap_ms: int) -> None:
        self.track = track
        self.held: _Sample | None = None  # the newest sample, duration unknown
        self.done: list[_Sample] = []  # complete samples, not written yet
        self.last_out: int | None = None  # output ms of the newest sample's DTS
        self.end: int | None = None  # ticks: end of the last complete sample (no held one)
        self.last_duration = track.default_duration
        self.max_gap = ms_to_ticks(max_gap_ms, track.timescale)
        self.started = track.kind is not FrameKind.VIDEO  # video waits for a keyframe

    def end_ms(self) -> int | None:
        """Where this track's media ends (output ms, rounded up), the held sample counted with
        its estimated duration."""
        ts = self.track.timescale
        if self.held is not None:
            return self.held.out + _ticks_to_ms_ceil(self.last_duration, ts)
        if self.end is not None:
            return _ticks_to_ms_ceil(self.end, ts)
        return None

    def complete(self, next_decode: int | None) -> None:
        """Give the held sample its duration: up to ``next_decode`` when that is within the gap
        limit (and after it), else the previous duration (a gap follows)."""
        held = self.held
        if held is None:
            return
        distance = -1 if next_decode is None else next_decode - held.decode
        duration = distance if 0 < distance <= self.max_gap else self.last_duration
        held.duration = duration
        self.last_duration = duration
        self.done.append(held)
        self.end = held.decode + duration
        self.held = None


def _trun(run: list[_Sample], data_offset: int) -> bytes:
    with_cto = any(s.cto for s in run)
    flags = _TRUN_DATA_OFFSET | _TRUN_DURATION | _TRUN_SIZE | _TRUN_FLAGS
    values: list[int] = []
    for s in run:
        values += (s.duration, len(s.payload), _SYNC_FLAGS if s.sync else _NON_SYNC_FLAGS)
        if with_cto:
            values.append(s.cto)
    if with_cto:
        flags |= _TRUN_CTO
        fields = ">" + "IIIi" * len(run)
    else:
        fields = ">" + "III" * len(run)
    return _full_box(
        b"trun", 1, flags, struct.pack(">Ii", len(run), data_offset), struct.pack(fields, *values)
    )


def _trun_size(run: list[_Sample]) -> int:
    return 20 + len(run) * (16 if any(s.cto for s in run) else 12)


_TRAF_FIXED: Final = 8 + 16 + 20  # traf header, tfhd (track_ID only), tfdt version 1


def _runs(samples: list[_Sample]) -> list[list[_Sample]]:
    """Split a track's samples where a sample does not start at the previous one's end."""
    runs: list[list[_Sample]] = []
    end = None
    for sample in samples:
        if sample.decode != end:
            runs.append([])
        runs[-1].append(sample)
        end = sample.decode + sample.duration
    return runs


class FragmentWriter:
    """Frames in, fragments out, for the tracks of one init segment (see the module docstring).

    Args:
        tracks: the tracks, as given to :func:`init_segment`.
        max_gap_ms: a DTS more than this past the newest DTS of the stream is a jump; a track
            whose own frames are further apart than this has a gap (1 ms to 1 h).
        sequence: the ``mfhd`` sequence number of the first fragment (1 to 2**32 - 1).

    Raises ``LocalProtocolError`` for invalid settings or tracks (as :func:`init_segment`).
    """

    def __init__(
        self,
        tracks: Sequence[Fmp4Track],
        *,
        max_gap_ms: int = DEFAULT_MAX_GAP_MS,
        sequence: int = 1,
    ) -> None:
        _check_tracks(tracks)
        if not 1 <= max_gap_ms <= _MAX_GAP_LIMIT_MS:
            raise LocalProtocolError(f"max_gap_ms {max_gap_ms} is outside 1..{_MAX_GAP_LIMIT_MS}")
        if not 1 <= sequence <= _U32:
            raise LocalProtocolError(f"sequence {sequence} is outside 1..2**32-1")
        ordered = sorted(tracks, key=lambda t: t.track_id)
        self.tracks: tuple[Fmp4Track, ...] = tuple(ordered)
        self.max_gap_ms = max_gap_ms
        #: The ``mfhd`` sequence number of the next fragment.
        self.sequence = sequence
        #: Video frames dropped because their track had no keyframe yet.
        self.dropped_frames = 0
        self._states = {(t.kind, t.track): _TrackState(t, max_gap_ms) for t in ordered}
        video = [t for t in ordered if t.kind is FrameKind.VIDEO]
        self._leading = (video or ordered)[0].track_id
        self._offset = 0
        self._rebase = False

    @property
    def offset(self) -> int:
        """Milliseconds added to the frames' timestamps on the output timeline (0 until the
        first jump or discontinuity)."""
        return self._offset

    def discontinuity(self) -> None:
        """The source starts a new timeline (the publisher restarted): the next frame pushed,
        of any track, lands at the end of what was written so far."""
        self._rebase = True

    # --- pushing --------------------------------------------------------------------------------

    def push(self, frame: Frame) -> bool:
        """Take one media frame as a sample; ``True`` if it was taken.

        Config frames, data frames and frames of no track of this writer are ignored
        (``False``), as are video frames before their track's first keyframe (counted in
        :attr:`dropped_frames`). Raises ``LocalProtocolError`` for a frame whose codec is not
        its track's, :class:`CodecError` for a composition offset beyond 32 signed bits; the
        writer is then unchanged.
        """
        state = self._states.get((frame.kind, frame.track))
        if state is None:
            return False
        track = state.track
        if frame.codec != track.codec:
            raise LocalProtocolError(
                f"{frame.codec} frame pushed for track {track.track_id} of codec {track.codec}"
            )
        if frame.config:
            return False
        if not state.started and not frame.keyframe:
            self.dropped_frames += 1
            return False
        ts = track.timescale
        offset = self._offset
        rebased = self._rebase or self._jumped(state, frame.dts + offset)
        if rebased:
            offset = self._timeline_end() - frame.dts
        out = frame.dts + offset
        decode = ms_to_ticks(out, ts)
        cto = ms_to_ticks(frame.pts + offset, ts) - decode
        if not _I32_MIN <= cto <= _I32_MAX:
            raise CodecError(
                f"composition offset of {frame.pts - frame.dts} ms does not fit a trun"
            )
        payload: Payload = _av1_sample(frame.payload) if track.codec == "av1" else frame.payload
        # Nothing below raises: the writer changes only from here on.
        if rebased:
            self._offset = offset
            self._rebase = False
        state.complete(decode)
        sync = frame.keyframe or track.kind is FrameKind.AUDIO
        state.held = _Sample(decode, cto, payload, sync, frame.dts, out, rebased)
        state.last_out = out
        state.started = True
        return True

    def _jumped(self, state: _TrackState, out: int) -> bool:
        """Whether a frame at output time ``out`` (ms) breaks the timeline (module docstring)."""
        if out < 0:
            return True
        if state.last_out is not None and out <= state.last_out:
            return True
        if state.held is None and state.end is not None:
            if ms_to_ticks(out, state.track.timescale) < state.end:
                return True
        outs = [s.last_out for s in self._states.values() if s.last_out is not None]
        return bool(outs) and out - max(outs) > self.max_gap_ms

    def _timeline_end(self) -> int:
        """Output ms where everything written so far ends (0 for a new writer)."""
        ends = [end for s in self._states.values() if (end := s.end_ms()) is not None]
        return max(ends, default=0)

    # --- cutting --------------------------------------------------------------------------------

    def straddling(self, until: int) -> int:
        """Where to cut so that a complete sample that starts before ``until`` (a DTS in ms, as
        for :meth:`fragment`) and ends after it goes after the cut: its DTS, or ``until`` when
        none does. (An audio frame that straddles a video keyframe starts the next segment, so
        that audio segments start at or a little before their video.)"""
        limit = until + self._offset
        for state in self._states.values():
            ts = state.track.timescale
            for sample in state.done:
                if sample.out < limit < sample.out + _ticks_to_ms_ceil(sample.duration, ts):
                    return sample.out - self._offset
        return until

    def fragment(self, until: int | None = None) -> Fragment | None:
        """A fragment of every sample whose duration is known, or ``None`` if there is none.

        With ``until`` (a DTS in ms on the timeline of the frames being pushed, typically the
        DTS of the frame just pushed), only the samples whose DTS is before it: push a keyframe,
        then ``fragment(keyframe.dts)`` ends a part right before it. The newest sample of each
        track stays in the writer (its duration is not known yet). Raises
        ``LocalProtocolError`` for a fragment over 2 GiB (the writer is then unchanged).
        """
        limit = None if until is None else until + self._offset
        taken: list[tuple[_TrackState, int]] = []
        for state in self._states.values():
            count = len(state.done)
            if limit is not None:
                count = next((i for i, s in enumerate(state.done) if s.out >= limit), count)
            if count:
                taken.append((state, count))
        if not taken:
            return None
        fragment = self._build([(state.track, state.done[:count]) for state, count in taken])
        for state, count in taken:
            del state.done[:count]
        return fragment

    def flush(self, end: int | None = None) -> Fragment | None:
        """Complete every track's held-back sample and return a fragment of everything left
        (``None`` if nothing is).

        A held sample lasts until ``end`` (a DTS in ms on the timeline of the frames pushed,
        e.g. the end of the stream) when that is after it and within ``max_gap_ms``, else its
        track's previous sample duration. Use it at the end of a stream; frames pushed after it
        go on the same timeline (their track may then have a gap, or they are a jump).
        """
        for state in self._states.values():
            if state.held is not None:
                ts = state.track.timescale
                state.complete(None if end is None else ms_to_ticks(end + self._offset, ts))
        return self.fragment()

    @property
    def pending(self) -> int:
        """Samples in the writer: complete ones not written yet plus the held-back ones."""
        return sum(len(s.done) + (s.held is not None) for s in self._states.values())

    def _build(self, per_track: list[tuple[Fmp4Track, list[_Sample]]]) -> Fragment:
        """Serialise the samples (already in track id order) as ``moof`` + ``mdat``."""
        runs = [(track, run) for track, samples in per_track for run in _runs(samples)]
        moof_size = 8 + 16 + sum(_TRAF_FIXED + _trun_size(run) for _, run in runs)
        mdat_payload = sum(len(s.payload) for _, run in runs for s in run)
        if moof_size + 8 + mdat_payload > _MAX_MDAT:
            raise LocalProtocolError(f"fragment of {mdat_payload} media bytes exceeds 2 GiB")
        sequence = self.sequence
        parts: list[Payload] = [b"", _full_box(b"mfhd", 0, 0, struct.pack(">I", sequence))]
        payloads: list[Payload] = []
        infos: list[TrackRun] = []
        data_offset = moof_size + 8
        for track, run in runs:
            size = sum(len(s.payload) for s in run)
            tfhd_flags = _TFHD_DEFAULT_BASE_IS_MOOF
            traf = _box(
                b"traf",
                _full_box(b"tfhd", 0, tfhd_flags, struct.pack(">I", track.track_id)),
                _full_box(b"tfdt", 1, 0, struct.pack(">Q", run[0].decode)),
                _trun(run, data_offset),
            )
            parts.append(traf)
            payloads.extend(s.payload for s in run)
            duration = sum(s.duration for s in run)
            infos.append(TrackRun(track.track_id, track.timescale, run[0].decode, duration,
                                  len(run), size, run[0].sync))  # fmt: skip
            data_offset += size
        parts[0] = struct.pack(">I4s", moof_size, b"moof")
        parts.append(struct.pack(">I4s", 8 + mdat_payload, b"mdat"))
        parts.extend(payloads)
        data = b"".join(parts)
        self.sequence = sequence % _U32 + 1
        return self._describe(sequence, data, runs, infos)

    def _describe(
        self,
        sequence: int,
        data: bytes,
        runs: list[tuple[Fmp4Track, list[_Sample]]],
        infos: list[TrackRun],
    ) -> Fragment:
        leading = [i for i, info in enumerate(infos) if info.track_id == self._leading]
        if not leading:
            starts = [info.decode_time / info.timescale for info in infos]
            leading = [starts.index(min(starts))]
        first, last = infos[leading[0]], infos[leading[-1]]
        ts = first.timescale
        return Fragment(
            sequence=sequence,
            data=data,
            runs=tuple(infos),
            start=first.decode_time / ts,
            duration=(last.end - first.decode_time) / ts,
            first_dts=runs[leading[0]][1][0].dts,
            independent=first.track_id == self._leading and first.starts_with_sync,
            discontinuity=any(s.rebased for _, run in runs for s in run),
        )
