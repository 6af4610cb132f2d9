"""FLV tag bodies -> frames: reading RTMP audio, video and data message payloads (sans-IO).

:func:`parse_video`, :func:`parse_audio`, :func:`parse_data` turn one tag body (one RTMP message
payload) into a :class:`~arcly_trio.core.frame.Frame`, or ``None`` for a body that carries no
media (an AVC end of sequence, a video command frame, an Enhanced RTMP ``Metadata`` or
``MultichannelConfig`` packet, an empty body or payload). :func:`parse_video_tracks` /
:func:`parse_audio_tracks` return one frame per track of an Enhanced RTMP multitrack message;
:func:`parse_video` / :func:`parse_audio` handle the common case, one track per message. How
each codec's body reads is described in :mod:`.tags` (the format is one for reading and
writing; :mod:`.write` writes it). Ingest without copies: when the body a parser was given is
exactly what :func:`~.write.tag_body` would build again, the frame keeps that very ``bytes``
object as its cached body (:meth:`Frame.preset` with :data:`~.tags.BODY_KEY`).

Script data: :func:`parse_data` reads the leading AMF0 string name at the byte level and needs
no AMF0 decoder; an ``@setDataFrame`` wrapper is removed.

Error policy: parsing never raises anything but :class:`~.tags.FlvError` (a
``RemoteProtocolError``) or :class:`~arcly_trio.core.errors.MessageTooLarge`, whatever the
bytes. :class:`~.tags.FlvUnsupported` (a subclass of :class:`~.tags.FlvError`) marks a
well-formed body this module does not handle (a reserved codec id or packet type, an unknown
FourCC, several tracks in one message given to :func:`parse_video`): a caller may drop that
message and go on.
"""

from __future__ import annotations

from typing import Final

from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.media.flv.tags import (
    AUDIO_FOURCC,
    BODY_KEY,
    CTS_CODECS,
    LEGACY_AUDIO_CODEC_OF_BYTE,
    LEGACY_VIDEO_CODECS,
    SET_DATA_FRAME,
    VIDEO_FOURCC,
    FlvError,
    FlvUnsupported,
)

__all__ = [
    "parse_video",
    "parse_video_tracks",
    "parse_audio",
    "parse_audio_tracks",
    "parse_data",
]


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
    codec = VIDEO_FOURCC.get(fourcc)
    if codec is None:
        raise FlvUnsupported(f"unknown Enhanced RTMP video FourCC {fourcc!r}")
    cts = 0
    config = False
    if packet_type == 0 or packet_type == 5:  # SequenceStart, MPEG2TSSequenceStart
        config = True
    elif packet_type == 1:  # CodedFrames
        if codec in CTS_CODECS:
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
                frame.preset(BODY_KEY, body)  # what video_body() would build: RTMP passes it on
            return [frame]
        codec = LEGACY_VIDEO_CODECS.get(codec_id)
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
    codec = AUDIO_FOURCC.get(fourcc)
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
            frame.preset(BODY_KEY, body)  # what audio_body() would build: RTMP passes it on
        return [frame]
    if sound_format == 2 or sound_format == 14:  # MP3, MP3 8 kHz
        if n == 1:
            return []
        return [Frame(FrameKind.AUDIO, "mp3", timestamp, timestamp, body[1:])]
    if sound_format != 9:
        codec = LEGACY_AUDIO_CODEC_OF_BYTE.get(b0)
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
    if end == len(SET_DATA_FRAME) and body.startswith(SET_DATA_FRAME):
        if end == len(body):
            return None
        _amf0_name_end(body, end)
        body = body[end:]
    config = body.startswith(_ON_METADATA)
    return Frame(FrameKind.DATA, "amf0", timestamp, timestamp, body, False, config)
