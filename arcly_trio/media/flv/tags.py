"""FLV tag bodies <-> frames: the payload format of RTMP audio, video and data messages.

FLV is the payload format of RTMP audio (8), video (9) and script data (18) messages, and of
each tag's body in an FLV stream (the container is :mod:`.container`). This module is sans-IO:
bytes in, frames out, and back.

:func:`parse_video`, :func:`parse_audio`, :func:`parse_data` turn one tag body (one RTMP message
payload) into a :class:`~arcly_trio.core.frame.Frame`, or ``None`` for a body that carries no
media (an AVC end of sequence, a video command frame, an Enhanced RTMP ``Metadata`` or
``MultichannelConfig`` packet, an empty body or payload). :func:`video_body`,
:func:`audio_body`, :func:`data_body` and :func:`tag_body` do the reverse; :func:`frame_body`
caches the body on the frame (:meth:`Frame.encoded`), so N subscribers cost one serialisation.
Ingest without copies: when the body a parser was given is exactly what :func:`tag_body` would
build again (a legacy H.264 body with frame type key or inter; an AAC body with the 0xAF header
byte; as FFmpeg and OBS send them), the parsed frame keeps that very ``bytes`` object as its
cached body (:meth:`Frame.preset`), so RTMP passes the publisher's message body on and FLV
tags are built around it, with nothing rebuilt.

Video (``Frame.codec`` <- FLV):

* legacy codec id 7 (AVC) -> ``h264``; codec id 12 (the pre-standard HEVC extension) ->
  ``hevc``. AVCPacketType 0 is a config frame (the decoder configuration record), 1 coded NAL
  units with a signed 24-bit composition time (``pts = dts + cts``), 2 (end of sequence) gives
  ``None``. Config frames have ``pts == dts`` (the spec's CompositionTime 0 for them) and
  are written with a composition time of 0.
* other legacy codec ids: 2 ``h263``, 3 ``screen``, 4 ``vp6``, 5 ``vp6a``, 6 ``screen2``; the
  payload is everything after the header byte (VP6's adjustment bytes included), so the body
  round-trips. Frame type 1 is a keyframe; every other frame type (inter, disposable inter,
  generated keyframe) reads as ``keyframe=False`` and is written back as 2 (inter): the
  disposable flag of H.263 is lost. Frame type 5 (video info/command) gives ``None``.
* Enhanced RTMP (the IsExHeader bit 0x80): FourCC ``avc1`` -> ``h264``, ``hvc1`` -> ``hevc``,
  ``vvc1`` -> ``vvc`` (these three carry an SI24 composition time in ``CodedFrames``),
  ``av01`` -> ``av1``, ``vp09`` -> ``vp9``, ``vp08`` -> ``vp8``. ``SequenceStart`` and
  ``MPEG2TSSequenceStart`` are config frames (the latter's payload, an AV1 video descriptor, is
  kept verbatim but written back as ``SequenceStart``); ``CodedFrames`` and ``CodedFramesX``
  are coded frames; ``SequenceEnd`` and ``Metadata`` (HDR ``colorInfo``) give ``None``.
  ``ModEx`` prefixes are skipped (their nanosecond timestamp offset does not fit millisecond
  frames).
* Multitrack (``PacketType`` 6 video, 5 audio): every ``AvMultitrackType`` is read.
  :func:`parse_video_tracks` / :func:`parse_audio_tracks` return one frame per track, with
  ``Frame.track`` set to the track id. :func:`parse_video` / :func:`parse_audio` handle the
  common case, one track per message (``OneTrack``, as OBS sends it), and raise
  :class:`FlvUnsupported` for a message that really carries several tracks.

Video (frame -> FLV): ``h264`` is written with legacy codec id 7 (what every player reads);
``hevc`` with the Enhanced RTMP ``hvc1`` FourCC (what OBS 30 and FFmpeg 6.1+ send and accept),
or legacy codec id 12 with ``legacy_hevc=True``; ``av1``, ``vp9``, ``vp8``, ``vvc`` Enhanced.
Coded ``avc1``/``hvc1``/``vvc1`` frames use ``CodedFramesX`` when the composition time is 0,
as FFmpeg does. A frame with ``track != 0`` is written as an Enhanced multitrack ``OneTrack``
message (``h264`` then uses ``avc1``). AV1 and VP8/9 carry no composition time: ``pts`` is not
written (it reads back equal to ``dts``).

Audio (``Frame.codec`` <- FLV). Frames are never keyframes (the kernel treats audio as sync
points itself when a stream has no video).

* SoundFormat 10 (AAC) -> ``aac``: AACPacketType 0 is a config frame (AudioSpecificConfig),
  1 a raw frame. The header byte is always written as 0xAF, as the FLV specification requires
  (players ignore its rate/size/channel bits for AAC).
* SoundFormat 2 (MP3) and 14 (MP3 8 kHz) -> ``mp3``. The header byte is not kept: it is
  derived again from the first MPEG audio frame header of the payload (sample rate: 44.1, 48
  and 32 kHz are written as the 44.1 kHz flag, as FFmpeg does, 22.05/24/16 kHz as 22 kHz,
  11.025/12 kHz as 11 kHz, 8 kHz as SoundFormat 14; mono or stereo from the channel mode;
  16-bit), or 0x2F (44.1 kHz stereo) when the payload does not start with a frame header.
  Bodies written by FFmpeg round-trip byte for byte.
* Every other legacy format keeps its exact header byte in the codec string
  ``"<name>/<rate>/<bits>/<channels>"``, e.g. ``"pcm_le/44100/16/2"``: names ``pcm`` (0,
  platform endian), ``adpcm`` (1), ``pcm_le`` (3), ``nellymoser_16k`` (4),
  ``nellymoser_8k`` (5), ``nellymoser`` (6), ``alaw`` (7), ``mulaw`` (8), ``speex`` (11);
  rate one of 5512, 11025, 22050, 44100; bits 8 or 16; channels 1 or 2. See
  :func:`legacy_audio_codec`. The payload is everything after the header byte.
* Enhanced audio (SoundFormat 9): FourCC ``Opus`` -> ``opus``, ``fLaC`` -> ``flac``, ``ac-3``
  -> ``ac3``, ``ec-3`` -> ``eac3``, ``.mp3`` -> ``mp3``, ``mp4a`` -> ``aac``.
  ``SequenceStart`` is a config frame, ``CodedFrames`` a raw one, ``SequenceEnd`` and
  ``MultichannelConfig`` give ``None`` (the channel layout is not kept). ``opus``, ``flac``,
  ``ac3`` and ``eac3`` frames are written Enhanced; ``aac`` and ``mp3`` legacy, unless the
  frame has ``track != 0`` (or is an ``mp3`` config frame), which needs the Enhanced form.

Script data: :func:`parse_data` reads the leading AMF0 string name at the byte level (marker
0x02, u16 length, name) and needs no AMF0 decoder. An ``@setDataFrame`` wrapper is removed, so a
metadata frame's payload is the ``onMetaData`` name and its value, as in an FLV file. That frame
is ``kind=DATA, codec="amf0", config=True``; other data (``onCuePoint``, ``onTextData``...) has
``config=False`` and is kept whole.

Error policy:

* Parsing never raises anything but :class:`FlvError` (a ``RemoteProtocolError``) or
  :class:`~arcly_trio.core.errors.MessageTooLarge`, whatever the bytes.
  :class:`FlvUnsupported` (a subclass of :class:`FlvError`) marks a well-formed body this
  module does not handle (a reserved codec id or packet type, an unknown FourCC, several tracks
  in one message given to :func:`parse_video`): a caller may drop that message and go on.
* Writing raises ``LocalProtocolError`` for a frame FLV cannot carry: an unknown codec, a
  legacy audio codec string that is not in the form above, a composition time outside the
  signed 24-bit range, a track id over 255, a body over 16 MiB - 1, a frame of the wrong kind.
"""

from __future__ import annotations

from typing import Final

from arcly_trio.core.errors import LocalProtocolError, RemoteProtocolError
from arcly_trio.core.frame import Frame, FrameKind

__all__ = [
    "TAG_AUDIO",
    "TAG_VIDEO",
    "TAG_SCRIPT",
    "DEFAULT_MAX_TAG_BODY",
    "FlvError",
    "FlvUnsupported",
    "parse_video",
    "parse_video_tracks",
    "parse_audio",
    "parse_audio_tracks",
    "parse_data",
    "legacy_audio_codec",
    "video_body",
    "audio_body",
    "data_body",
    "tag_body",
    "frame_body",
]

TAG_AUDIO: Final = 8
TAG_VIDEO: Final = 9
TAG_SCRIPT: Final = 18

#: The largest tag body :class:`FlvReader` accepts by default (8 MiB).
DEFAULT_MAX_TAG_BODY: Final = 8 * 1024 * 1024

MAX_DATA_SIZE: Final = 0xFFFFFF
"""The largest tag body an FLV tag header can state (its DataSize is 24 bits)."""
_CTS_MIN: Final = -0x800000
_CTS_MAX: Final = 0x7FFFFF


class FlvError(RemoteProtocolError):
    """A malformed FLV tag body or FLV stream."""


class FlvUnsupported(FlvError):
    """A well-formed FLV tag body that uses something this module does not handle.

    Examples: a reserved codec id or packet type, an unknown Enhanced RTMP FourCC, a multitrack
    message with several tracks given to :func:`parse_video`. Dropping the message is safe.
    """


# --------------------------------------------------------------------------------------------
# Codec tables
# --------------------------------------------------------------------------------------------

_LEGACY_VIDEO_CODECS: Final[dict[int, str]] = {
    2: "h263",
    3: "screen",
    4: "vp6",
    5: "vp6a",
    6: "screen2",
}
_LEGACY_VIDEO_IDS: Final[dict[str, int]] = {name: cid for cid, name in _LEGACY_VIDEO_CODECS.items()}

_VIDEO_FOURCC: Final[dict[bytes, str]] = {
    b"avc1": "h264",
    b"hvc1": "hevc",
    b"vvc1": "vvc",
    b"av01": "av1",
    b"vp09": "vp9",
    b"vp08": "vp8",
}
_VIDEO_FOURCC_OF: Final[dict[str, bytes]] = {name: cc for cc, name in _VIDEO_FOURCC.items()}
# Codecs whose CodedFrames packets carry an SI24 composition time.
_CTS_CODECS: Final = frozenset({"h264", "hevc", "vvc"})

_AUDIO_FOURCC: Final[dict[bytes, str]] = {
    b"Opus": "opus",
    b"fLaC": "flac",
    b"ac-3": "ac3",
    b"ec-3": "eac3",
    b".mp3": "mp3",
    b"mp4a": "aac",
}
_AUDIO_FOURCC_OF: Final[dict[str, bytes]] = {name: cc for cc, name in _AUDIO_FOURCC.items()}

_LEGACY_AUDIO_NAMES: Final[dict[int, str]] = {
    0: "pcm",
    1: "adpcm",
    3: "pcm_le",
    4: "nellymoser_16k",
    5: "nellymoser_8k",
    6: "nellymoser",
    7: "alaw",
    8: "mulaw",
    11: "speex",
}
_SOUND_RATES: Final = (5512, 11025, 22050, 44100)

# The codec string of every legacy audio header byte, and back.
_LEGACY_AUDIO_CODEC_OF_BYTE: Final[dict[int, str]] = {}
_LEGACY_AUDIO_BYTE_OF_CODEC: Final[dict[str, int]] = {}
for _fmt, _name in _LEGACY_AUDIO_NAMES.items():
    for _flags in range(16):
        _codec = f"{_name}/{_SOUND_RATES[_flags >> 2]}/{16 if _flags & 2 else 8}/{(_flags & 1) + 1}"
        _LEGACY_AUDIO_CODEC_OF_BYTE[(_fmt << 4) | _flags] = _codec
        _LEGACY_AUDIO_BYTE_OF_CODEC[_codec] = (_fmt << 4) | _flags
del _fmt, _name, _flags, _codec


def legacy_audio_codec(name: str, rate: int, bits: int, channels: int) -> str:
    """The ``Frame.codec`` string of a legacy FLV audio format other than AAC and MP3.

    ``name`` is one of ``pcm``, ``adpcm``, ``pcm_le``, ``nellymoser_16k``, ``nellymoser_8k``,
    ``nellymoser``, ``alaw``, ``mulaw``, ``speex``; ``rate`` one of 5512, 11025, 22050, 44100;
    ``bits`` 8 or 16; ``channels`` 1 or 2. Raises ``LocalProtocolError`` for anything else.
    """
    codec = f"{name}/{rate}/{bits}/{channels}"
    if codec not in _LEGACY_AUDIO_BYTE_OF_CODEC:
        raise LocalProtocolError(f"FLV has no legacy audio format {codec!r}")
    return codec


# --------------------------------------------------------------------------------------------
# Tag bodies -> frames
# --------------------------------------------------------------------------------------------


def _si24(body: bytes, pos: int) -> int:
    value = (body[pos] << 16) | (body[pos + 1] << 8) | body[pos + 2]
    return value - 0x1000000 if value & 0x800000 else value


def _skip_mod_ex(body: bytes, pos: int, packet_type: int, what: str) -> tuple[int, int]:
    """Skip the Enhanced RTMP ``ModEx`` chain at ``pos``; return (real packet type, position)."""
    n = len(body)
    while packet_type == 7:
        if pos >= n:
            raise FlvError(f"{what} ModEx truncated")
        size = body[pos] + 1
        pos += 1
        if size == 256:
            if pos + 2 > n:
                raise FlvError(f"{what} ModEx truncated")
            size = ((body[pos] << 8) | body[pos + 1]) + 1
            pos += 2
        pos += size
        if pos >= n:
            raise FlvError(f"{what} ModEx truncated")
        packet_type = body[pos] & 0x0F
        pos += 1
    return packet_type, pos


def _multitrack_header(body: bytes, pos: int, multitrack_packet: int, what: str) -> tuple[int, int, bytes | None, int]:
    """Parse an Enhanced RTMP multitrack header at ``pos``: ``(AvMultitrackType, the tracks'
    packet type, the shared FourCC or None when each track has its own, the offset after)``."""
    if pos >= len(body):
        raise FlvError(f"{what} multitrack header truncated")
    multitrack_type = body[pos] >> 4
    packet_type = body[pos] & 0x0F
    pos += 1
    if multitrack_type > 2:
        raise FlvUnsupported(f"Enhanced RTMP AvMultitrackType {multitrack_type}")
    if packet_type == multitrack_packet:
        raise FlvError(f"{what} multitrack inside multitrack")
    fourcc: bytes | None = None
    if multitrack_type != 2:
        if pos + 4 > len(body):
            raise FlvError(f"{what} FourCC truncated")
        fourcc = body[pos : pos + 4]
        pos += 4
    return multitrack_type, packet_type, fourcc, pos


def _multitrack_spans(
    body: bytes, pos: int, multitrack_type: int, fourcc: bytes | None, what: str
) -> list[tuple[bytes, int, int, int]]:
    """Split an Enhanced RTMP multitrack body into (fourcc, track id, start, end) spans."""
    n = len(body)
    spans: list[tuple[bytes, int, int, int]] = []
    while pos < n or multitrack_type == 0:
        if multitrack_type == 2:
            if pos + 4 > n:
                raise FlvError(f"{what} multitrack FourCC truncated")
            fourcc = body[pos : pos + 4]
            pos += 4
        if pos >= n:
            raise FlvError(f"{what} multitrack track id missing")
        track = body[pos]
        pos += 1
        if multitrack_type == 0:
            assert fourcc is not None
            spans.append((fourcc, track, pos, n))
            break
        if pos + 3 > n:
            raise FlvError(f"{what} multitrack track size truncated")
        size = (body[pos] << 16) | (body[pos + 1] << 8) | body[pos + 2]
        pos += 3
        if pos + size > n:
            raise FlvError(f"{what} multitrack track of {size} bytes overruns the body")
        assert fourcc is not None
        spans.append((fourcc, track, pos, pos + size))
        pos += size
    return spans


def _ex_video_frame(
    timestamp: int,
    body: bytes,
    fourcc: bytes,
    packet_type: int,
    keyframe: bool,
    track: int,
    start: int,
    end: int,
) -> Frame | None:
    codec = _VIDEO_FOURCC.get(fourcc)
    if codec is None:
        raise FlvUnsupported(f"unknown Enhanced RTMP video FourCC {fourcc!r}")
    cts = 0
    config = False
    if packet_type == 0 or packet_type == 5:  # SequenceStart, MPEG2TSSequenceStart
        config = True
    elif packet_type == 1:  # CodedFrames
        if codec in _CTS_CODECS:
            if start + 3 > end:
                raise FlvError("Enhanced RTMP video composition time truncated")
            cts = _si24(body, start)
            start += 3
    elif packet_type == 3:  # CodedFramesX
        pass
    elif packet_type == 2 or packet_type == 4:  # SequenceEnd, Metadata
        return None
    else:
        raise FlvUnsupported(f"Enhanced RTMP video packet type {packet_type} is not supported")
    if start >= end:
        return None
    return Frame(
        FrameKind.VIDEO,
        codec,
        timestamp + cts,
        timestamp,
        body[start:end],
        keyframe,
        config,
        track,
    )


def parse_video_tracks(timestamp: int, body: bytes) -> list[Frame]:
    """All the frames of one video tag body (one per track of a multitrack message).

    ``timestamp`` (ms) becomes each frame's ``dts``. Returns an empty list for a body that
    carries no media. Raises :class:`FlvError` (or :class:`FlvUnsupported`) as the module
    docstring says.
    """
    n = len(body)
    if n == 0:
        return []
    b0 = body[0]
    frame_type = (b0 >> 4) & 0x07
    keyframe = frame_type == 1
    if not b0 & 0x80:
        if frame_type == 5:  # video info / command frame: one UI8, no picture
            return []
        codec_id = b0 & 0x0F
        if codec_id == 7 or codec_id == 12:
            if n >= 2 and body[1] == 2:  # end of sequence (some encoders cut it short)
                return []
            if n < 5:
                raise FlvError(f"{'AVC' if codec_id == 7 else 'HEVC'} video body of {n} bytes")
            packet_type = body[1]
            if packet_type > 2:
                raise FlvError(f"unknown AVCPacketType {packet_type}")
            if n == 5:
                return []
            cts = _si24(body, 2) if packet_type == 1 else 0  # the spec's 0 for config
            frame = Frame(
                FrameKind.VIDEO,
                "h264" if codec_id == 7 else "hevc",
                timestamp + cts,
                timestamp,
                body[5:],
                keyframe,
                packet_type == 0,
            )
            if (b0 == 0x17 or b0 == 0x27) and (packet_type == 1 or body[2:5] == b"\0\0\0") and type(body) is bytes:
                frame.preset(_BODY_KEY, body)  # what video_body() would build: RTMP passes it on
            return [frame]
        codec = _LEGACY_VIDEO_CODECS.get(codec_id)
        if codec is None:
            raise FlvUnsupported(f"unknown FLV video codec id {codec_id}")
        if n == 1:
            return []
        return [Frame(FrameKind.VIDEO, codec, timestamp, timestamp, body[1:], keyframe)]

    packet_type, pos = _skip_mod_ex(body, 1, b0 & 0x0F, "Enhanced RTMP video")
    if frame_type == 5 and packet_type != 4:  # a video command (seek start/end), no picture
        return []
    if packet_type == 6:  # Multitrack
        multitrack_type, packet_type, fourcc, pos = _multitrack_header(body, pos, 6, "Enhanced RTMP video")
        frames = []
        for track_fourcc, track, start, end in _multitrack_spans(
            body, pos, multitrack_type, fourcc, "Enhanced RTMP video"
        ):
            frame = _ex_video_frame(timestamp, body, track_fourcc, packet_type, keyframe, track, start, end)
            if frame is not None:
                frames.append(frame)
        return frames
    if pos + 4 > n:
        raise FlvError("Enhanced RTMP video FourCC truncated")
    frame = _ex_video_frame(timestamp, body, body[pos : pos + 4], packet_type, keyframe, 0, pos + 4, n)
    return [] if frame is None else [frame]


def parse_video(timestamp: int, body: bytes) -> Frame | None:
    """The frame of one video tag body, or ``None`` for a body without media.

    A multitrack message with several frames raises :class:`FlvUnsupported`: use
    :func:`parse_video_tracks` to accept those.
    """
    frames = parse_video_tracks(timestamp, body)
    if not frames:
        return None
    if len(frames) > 1:
        raise FlvUnsupported(f"video message carries {len(frames)} tracks (use parse_video_tracks)")
    return frames[0]


def _ex_audio_frame(
    timestamp: int, body: bytes, fourcc: bytes, packet_type: int, track: int, start: int, end: int
) -> Frame | None:
    codec = _AUDIO_FOURCC.get(fourcc)
    if codec is None:
        raise FlvUnsupported(f"unknown Enhanced RTMP audio FourCC {fourcc!r}")
    if packet_type == 2 or packet_type == 4:  # SequenceEnd, MultichannelConfig
        return None
    if packet_type > 1:
        raise FlvUnsupported(f"Enhanced RTMP audio packet type {packet_type} is not supported")
    if start >= end:
        return None
    return Frame(
        FrameKind.AUDIO,
        codec,
        timestamp,
        timestamp,
        body[start:end],
        False,
        packet_type == 0,
        track,
    )


def parse_audio_tracks(timestamp: int, body: bytes) -> list[Frame]:
    """All the frames of one audio tag body (one per track of a multitrack message).

    ``timestamp`` (ms) becomes each frame's ``pts`` and ``dts``. Returns an empty list for a
    body that carries no media. Raises :class:`FlvError` (or :class:`FlvUnsupported`).
    """
    n = len(body)
    if n == 0:
        return []
    b0 = body[0]
    sound_format = b0 >> 4
    if sound_format == 10:  # AAC
        if n < 2:
            raise FlvError("AAC audio body without AACPacketType")
        packet_type = body[1]
        if packet_type > 1:
            raise FlvError(f"unknown AACPacketType {packet_type}")
        if n == 2:
            return []
        frame = Frame(FrameKind.AUDIO, "aac", timestamp, timestamp, body[2:], False, packet_type == 0)
        if b0 == 0xAF and type(body) is bytes:
            frame.preset(_BODY_KEY, body)  # what audio_body() would build: RTMP passes it on
        return [frame]
    if sound_format == 2 or sound_format == 14:  # MP3, MP3 8 kHz
        if n == 1:
            return []
        return [Frame(FrameKind.AUDIO, "mp3", timestamp, timestamp, body[1:])]
    if sound_format != 9:
        codec = _LEGACY_AUDIO_CODEC_OF_BYTE.get(b0)
        if codec is None:
            raise FlvUnsupported(f"unknown FLV sound format {sound_format}")
        if n == 1:
            return []
        return [Frame(FrameKind.AUDIO, codec, timestamp, timestamp, body[1:])]

    packet_type, pos = _skip_mod_ex(body, 1, b0 & 0x0F, "Enhanced RTMP audio")
    if packet_type == 5:  # Multitrack
        multitrack_type, packet_type, fourcc, pos = _multitrack_header(body, pos, 5, "Enhanced RTMP audio")
        frames = []
        for track_fourcc, track, start, end in _multitrack_spans(
            body, pos, multitrack_type, fourcc, "Enhanced RTMP audio"
        ):
            frame = _ex_audio_frame(timestamp, body, track_fourcc, packet_type, track, start, end)
            if frame is not None:
                frames.append(frame)
        return frames
    if pos + 4 > n:
        raise FlvError("Enhanced RTMP audio FourCC truncated")
    frame = _ex_audio_frame(timestamp, body, body[pos : pos + 4], packet_type, 0, pos + 4, n)
    return [] if frame is None else [frame]


def parse_audio(timestamp: int, body: bytes) -> Frame | None:
    """The frame of one audio tag body, or ``None`` for a body without media.

    A multitrack message with several frames raises :class:`FlvUnsupported`: use
    :func:`parse_audio_tracks` to accept those.
    """
    frames = parse_audio_tracks(timestamp, body)
    if not frames:
        return None
    if len(frames) > 1:
        raise FlvUnsupported(f"audio message carries {len(frames)} tracks (use parse_audio_tracks)")
    return frames[0]


_SET_DATA_FRAME: Final = b"\x02\x00\x0d@setDataFrame"
_ON_METADATA: Final = b"\x02\x00\x0aonMetaData"


def _amf0_name_end(body: bytes, pos: int) -> int:
    """The end of the AMF0 short string at ``pos`` (the script data name)."""
    n = len(body)
    if pos + 3 > n or body[pos] != 0x02:
        raise FlvError("script data does not start with an AMF0 string name")
    end = pos + 3 + ((body[pos + 1] << 8) | body[pos + 2])
    if end > n:
        raise FlvError("script data name overruns the body")
    return end


def parse_data(timestamp: int, body: bytes) -> Frame | None:
    """The data frame of one script data (AMF0) tag body, or ``None`` for an empty body.

    Strips an ``@setDataFrame`` wrapper; ``onMetaData`` gives a metadata frame
    (``config=True``). Raises :class:`FlvError` when the body does not start with an AMF0
    string name (or the name is cut short); the values after the name are not checked.
    """
    if not body:
        return None
    end = _amf0_name_end(body, 0)
    if end == len(_SET_DATA_FRAME) and body.startswith(_SET_DATA_FRAME):
        if end == len(body):
            return None
        _amf0_name_end(body, end)
        body = body[end:]
    config = body.startswith(_ON_METADATA)
    return Frame(FrameKind.DATA, "amf0", timestamp, timestamp, body, False, config)


# --------------------------------------------------------------------------------------------
# Frames -> tag bodies
# --------------------------------------------------------------------------------------------


def _cts(frame: Frame) -> int:
    cts = frame.pts - frame.dts
    if cts < _CTS_MIN or cts > _CTS_MAX:
        raise LocalProtocolError(f"composition time {cts} ms does not fit FLV's signed 24 bits")
    return cts


def _track(frame: Frame) -> int:
    track = frame.track
    if track < 0 or track > 255:
        raise LocalProtocolError(f"track id {track} does not fit Enhanced RTMP's 8 bits")
    return track


def video_body(frame: Frame, *, legacy_hevc: bool = False) -> bytes:
    """The FLV video tag body (RTMP video message payload) of a video frame.

    See the module docstring for the layout chosen per codec. ``legacy_hevc=True`` writes
    track-0 ``hevc`` frames with the pre-standard codec id 12 instead of Enhanced ``hvc1``.
    Raises ``LocalProtocolError`` for a frame FLV cannot carry.
    """
    if frame.kind is not FrameKind.VIDEO:
        raise LocalProtocolError(f"video_body() given a {frame.kind.value} frame")
    codec = frame.codec
    frame_type = 0x10 if frame.keyframe else 0x20
    if frame.track == 0 and (codec == "h264" or (legacy_hevc and codec == "hevc")):
        b0 = frame_type | (7 if codec == "h264" else 12)
        if frame.config:
            header = b0 << 32  # AVCPacketType 0, CompositionTime 0
        else:
            header = (b0 << 32) | (1 << 24) | (_cts(frame) & 0xFFFFFF)
        return header.to_bytes(5, "big") + frame.payload
    fourcc = _VIDEO_FOURCC_OF.get(codec)
    if fourcc is None:
        cid = _LEGACY_VIDEO_IDS.get(codec)
        if cid is None:
            raise LocalProtocolError(f"FLV cannot carry video codec {codec!r}")
        if frame.config or frame.track:
            raise LocalProtocolError(f"FLV {codec} has no config frames nor tracks")
        return bytes((frame_type | cid,)) + frame.payload
    cts_bytes = b""
    if frame.config:
        packet_type = 0  # SequenceStart
    elif codec in _CTS_CODECS:
        cts = _cts(frame)
        if cts:
            packet_type = 1  # CodedFrames
            cts_bytes = (cts & 0xFFFFFF).to_bytes(3, "big")
        else:
            packet_type = 3  # CodedFramesX
    else:
        packet_type = 1
    if frame.track == 0:
        return b"".join((bytes((0x80 | frame_type | packet_type,)), fourcc, cts_bytes, frame.payload))
    header = bytes((0x80 | frame_type | 6, packet_type)) + fourcc + bytes((_track(frame),))
    return b"".join((header, cts_bytes, frame.payload))


_AAC_CONFIG: Final = b"\xaf\x00"
_AAC_RAW: Final = b"\xaf\x01"
_MPEG_RATE_FLAGS: Final[dict[tuple[int, int], int]] = {
    # (MPEG version bits, sample rate index) -> FLV header byte, mono (| 1 for stereo).
    (3, 0): 0x2E, (3, 1): 0x2E, (3, 2): 0x2E,  # MPEG-1: 44.1, 48, 32 kHz
    (2, 0): 0x2A, (2, 1): 0x2A, (2, 2): 0x2A,  # MPEG-2: 22.05, 24, 16 kHz
    (0, 0): 0x26, (0, 1): 0x26, (0, 2): 0xE2,  # MPEG-2.5: 11.025, 12, 8 kHz
}  # fmt: skip


def _mp3_header_byte(payload: bytes) -> int:
    if len(payload) >= 4 and payload[0] == 0xFF and payload[1] & 0xE0 == 0xE0:
        byte = _MPEG_RATE_FLAGS.get(((payload[1] >> 3) & 3, (payload[2] >> 2) & 3))
        if byte is not None:
            return byte if payload[3] >> 6 == 3 else byte | 1
    return 0x2F


def audio_body(frame: Frame) -> bytes:
    """The FLV audio tag body (RTMP audio message payload) of an audio frame.

    See the module docstring for the layout chosen per codec. Raises ``LocalProtocolError``
    for a frame FLV cannot carry.
    """
    if frame.kind is not FrameKind.AUDIO:
        raise LocalProtocolError(f"audio_body() given a {frame.kind.value} frame")
    codec = frame.codec
    track = frame.track
    if codec == "aac" and not track:
        return (_AAC_CONFIG if frame.config else _AAC_RAW) + frame.payload
    if codec == "mp3" and not track and not frame.config:
        return bytes((_mp3_header_byte(frame.payload),)) + frame.payload
    fourcc = _AUDIO_FOURCC_OF.get(codec)
    if fourcc is None:
        byte = _LEGACY_AUDIO_BYTE_OF_CODEC.get(codec)
        if byte is None:
            raise LocalProtocolError(
                f"FLV cannot carry audio codec {codec!r} (legacy formats are written "
                "'<name>/<rate>/<bits>/<channels>', see legacy_audio_codec())"
            )
        if frame.config or track:
            raise LocalProtocolError(f"FLV {codec} has no config frames nor tracks")
        return bytes((byte,)) + frame.payload
    packet_type = 0 if frame.config else 1
    if not track:
        return b"".join((bytes((0x90 | packet_type,)), fourcc, frame.payload))
    return b"".join((bytes((0x95, packet_type)), fourcc, bytes((_track(frame),)), frame.payload))


def data_body(frame: Frame, *, set_data_frame: bool = False) -> bytes:
    """The FLV script data tag body of a data frame: its AMF0 payload as it is.

    With ``set_data_frame=True`` a metadata frame gets the ``@setDataFrame`` wrapper that an
    RTMP publisher sends (a server sends ``onMetaData`` to players without it). Raises
    ``LocalProtocolError`` for a frame that is not an ``amf0`` data frame.
    """
    if frame.kind is not FrameKind.DATA or frame.codec != "amf0":
        raise LocalProtocolError(f"data_body() given a {frame.kind.value}/{frame.codec} frame")
    if set_data_frame and frame.config:
        return _SET_DATA_FRAME + frame.payload
    return frame.payload


def tag_body(frame: Frame, *, legacy_hevc: bool = False) -> bytes:
    """The FLV tag body of any frame (dispatches on ``frame.kind``); not cached."""
    kind = frame.kind
    if kind is FrameKind.VIDEO:
        return video_body(frame, legacy_hevc=legacy_hevc)
    if kind is FrameKind.AUDIO:
        return audio_body(frame)
    return data_body(frame)


_BODY_KEY: Final = ("flv-body",)
_BODY_KEY_LEGACY_HEVC: Final = ("flv-body", "legacy-hevc")


def _tag_body_legacy_hevc(frame: Frame) -> bytes:
    return tag_body(frame, legacy_hevc=True)


def frame_body(frame: Frame, *, legacy_hevc: bool = False) -> bytes:
    """:func:`tag_body`, built once per frame and kept on it (the RTMP message payload).

    The cache key is ``("flv-body",)`` (``("flv-body", "legacy-hevc")`` for an ``hevc`` frame
    with ``legacy_hevc=True``).
    """
    body: bytes
    if legacy_hevc and frame.codec == "hevc":
        body = frame.encoded(_BODY_KEY_LEGACY_HEVC, _tag_body_legacy_hevc)
    else:
        body = frame.encoded(_BODY_KEY, tag_body)
    return body
