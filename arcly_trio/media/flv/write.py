"""Frames -> FLV tag bodies: writing RTMP audio, video and data message payloads (sans-IO).

:func:`video_body`, :func:`audio_body` and :func:`data_body` write one frame's tag body;
:func:`tag_body` dispatches on the frame's kind; :func:`frame_body` caches the body on the frame
(:meth:`Frame.encoded`), so N subscribers cost one serialisation (and a body :mod:`.read` kept
from the publisher is that cache already). The layout chosen per codec (legacy or Enhanced RTMP,
``CodedFramesX`` for a composition time of 0, a multitrack ``OneTrack`` message for
``track != 0``, the MP3 header byte derived from the payload) is described in :mod:`.tags`.

Error policy: writing raises ``LocalProtocolError`` for a frame FLV cannot carry: an unknown
codec, a legacy audio codec string that is not in the form :func:`~.tags.legacy_audio_codec`
builds, a composition time outside the signed 24-bit range, a track id over 255, a frame of the
wrong kind. (A body over 16 MiB - 1 is refused when it is put in a tag: :mod:`.container`.)
"""

from __future__ import annotations

from typing import Final

from arcly_trio.core.errors import LocalProtocolError
from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.media.flv.tags import (
    AUDIO_FOURCC_OF,
    BODY_KEY,
    CTS_CODECS,
    LEGACY_AUDIO_BYTE_OF_CODEC,
    LEGACY_VIDEO_IDS,
    SET_DATA_FRAME,
    VIDEO_FOURCC_OF,
)

__all__ = [
    "video_body",
    "audio_body",
    "data_body",
    "tag_body",
    "frame_body",
]

_CTS_MIN: Final = -0x800000
_CTS_MAX: Final = 0x7FFFFF


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
    fourcc = VIDEO_FOURCC_OF.get(codec)
    if fourcc is None:
        cid = LEGACY_VIDEO_IDS.get(codec)
        if cid is None:
            raise LocalProtocolError(f"FLV cannot carry video codec {codec!r}")
        if frame.config or frame.track:
            raise LocalProtocolError(f"FLV {codec} has no config frames nor tracks")
        return bytes((frame_type | cid,)) + frame.payload
    cts_bytes = b""
    if frame.config:
        packet_type = 0  # SequenceStart
    elif codec in CTS_CODECS:
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
    fourcc = AUDIO_FOURCC_OF.get(codec)
    if fourcc is None:
        byte = LEGACY_AUDIO_BYTE_OF_CODEC.get(codec)
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
        return SET_DATA_FRAME + frame.payload
    return frame.payload


def tag_body(frame: Frame, *, legacy_hevc: bool = False) -> bytes:
    """The FLV tag body of any frame (dispatches on ``frame.kind``); not cached."""
    kind = frame.kind
    if kind is FrameKind.VIDEO:
        return video_body(frame, legacy_hevc=legacy_hevc)
    if kind is FrameKind.AUDIO:
        return audio_body(frame)
    return data_body(frame)


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
        body = frame.encoded(BODY_KEY, tag_body)
    return body
