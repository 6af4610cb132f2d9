"""The FLV container: the byte stream of HTTP-FLV, WebSocket-FLV and recordings (sans-IO).

An FLV stream is a 9-byte header (with its ``hasAudio``/``hasVideo`` flags), then tags: an
11-byte header (type, body size, timestamp), the body (see :mod:`.tags`) and the 4-byte size
of the tag before it. :func:`file_header` and :func:`encode_tag` write it; :func:`frame_to_tag`
builds a frame's whole tag once and keeps it with the frame (:meth:`Frame.encoded`), so every
HTTP-FLV viewer, WebSocket-FLV viewer and recording of a stream shares the same bytes.
:class:`FlvReader` reads an FLV stream incrementally (any split of the input gives the same
events); :func:`read_frames` reads a whole file held in memory.

Error policy: :class:`FlvReader` raises :class:`~.tags.FlvError` for malformed input and
:class:`~arcly_trio.core.errors.MessageTooLarge` for a tag body over its limit; after that it
is broken and raises ``LocalProtocolError``. Writing raises ``LocalProtocolError`` for what FLV
cannot carry (see :mod:`.tags`).
"""

from __future__ import annotations

import struct
from typing import Final

import attrs

from arcly_trio.core.errors import LocalProtocolError, MessageTooLarge, RemoteProtocolError
from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.media.flv.read import parse_audio, parse_audio_tracks, parse_data, parse_video, parse_video_tracks
from arcly_trio.media.flv.tags import (
    DEFAULT_MAX_TAG_BODY,
    MAX_DATA_SIZE,
    TAG_AUDIO,
    TAG_SCRIPT,
    TAG_VIDEO,
    FlvError,
)
from arcly_trio.media.flv.write import frame_body

__all__ = [
    "frame_to_tag",
    "file_header",
    "encode_tag",
    "FlvHeader",
    "FlvTag",
    "FlvEnd",
    "FlvReader",
    "tag_to_frames",
    "tag_to_frame",
    "read_frames",
]


_TAG_TYPE: Final[dict[FrameKind, int]] = {
    FrameKind.AUDIO: TAG_AUDIO,
    FrameKind.VIDEO: TAG_VIDEO,
    FrameKind.DATA: TAG_SCRIPT,
}
_TAG_KEY: Final = ("flv-tag",)
_TAG_KEY_LEGACY_HEVC: Final = ("flv-tag", "legacy-hevc")


def _build_tag(frame: Frame) -> bytes:
    return encode_tag(_TAG_TYPE[frame.kind], frame.dts, frame_body(frame))


def _build_tag_legacy_hevc(frame: Frame) -> bytes:
    return encode_tag(_TAG_TYPE[frame.kind], frame.dts, frame_body(frame, legacy_hevc=True))


def frame_to_tag(frame: Frame, *, legacy_hevc: bool = False) -> bytes:
    """The complete FLV tag of a frame (header, body, PreviousTagSize), built once per frame.

    The tag timestamp is ``dts`` (negative clamped to 0, wrapped to 32 bits). Cached with
    :meth:`Frame.encoded` under ``("flv-tag",)`` (``("flv-tag", "legacy-hevc")`` for an
    ``hevc`` frame with ``legacy_hevc=True``); the body is shared with :func:`frame_body`.
    """
    tag: bytes
    if legacy_hevc and frame.codec == "hevc":
        tag = frame.encoded(_TAG_KEY_LEGACY_HEVC, _build_tag_legacy_hevc)
    else:
        tag = frame.encoded(_TAG_KEY, _build_tag)
    return tag


# --------------------------------------------------------------------------------------------
# The FLV stream: writing
# --------------------------------------------------------------------------------------------

_TAG_HEADER: Final = struct.Struct(">II3x")
_U32: Final = struct.Struct(">I")


def file_header(has_audio: bool, has_video: bool) -> bytes:
    """The 9-byte FLV header followed by PreviousTagSize0 (13 bytes)."""
    flags = (0x04 if has_audio else 0) | (0x01 if has_video else 0)
    return b"FLV\x01" + bytes((flags,)) + b"\x00\x00\x00\x09\x00\x00\x00\x00"


def encode_tag(tag_type: int, timestamp: int, body: bytes) -> bytes:
    """One FLV tag: the 11-byte header, ``body`` and the PreviousTagSize that follows it.

    ``timestamp`` (ms) is clamped to 0 if negative and wrapped to 32 bits (24 bits plus the
    extended byte); the stream id is 0. Raises ``LocalProtocolError`` for a ``tag_type``
    outside 0..31 or a body over 16 MiB - 1.
    """
    size = len(body)
    if size > MAX_DATA_SIZE:
        raise LocalProtocolError(f"FLV tag body of {size} bytes exceeds {MAX_DATA_SIZE}")
    if tag_type < 0 or tag_type > 31:
        raise LocalProtocolError(f"FLV tag type {tag_type} does not fit 5 bits")
    ts = timestamp & 0xFFFFFFFF if timestamp > 0 else 0
    return b"".join(
        (
            _TAG_HEADER.pack((tag_type << 24) | size, ((ts & 0xFFFFFF) << 8) | (ts >> 24)),
            body,
            _U32.pack(size + 11),
        )
    )


# --------------------------------------------------------------------------------------------
# The FLV stream: reading
# --------------------------------------------------------------------------------------------


@attrs.frozen
class FlvHeader:
    """The FLV file header: which kinds of tags the stream announces (advisory)."""

    has_audio: bool
    has_video: bool
    version: int = 1


@attrs.frozen
class FlvTag:
    """One FLV tag: its type (8 audio, 9 video, 18 script data, or other), 32-bit timestamp
    (ms) and body."""

    tag_type: int
    timestamp: int
    body: bytes


@attrs.frozen
class FlvEnd:
    """The stream ended cleanly (at a tag boundary) after :meth:`FlvReader.receive_data`
    was given ``b""``."""


_HEADER: Final = 0
_PREVIOUS_SIZE: Final = 1
_TAG: Final = 2


class FlvReader:
    """Incremental, sans-IO reader of an FLV byte stream (a file, HTTP-FLV, WebSocket-FLV).

    Feed bytes with :meth:`receive_data` (``b""`` for end of stream) and call
    :meth:`next_event` until it returns ``None`` (more data needed). It yields one
    :class:`FlvHeader`, then :class:`FlvTag` events, then :class:`FlvEnd` once the end of
    stream arrives at a tag boundary (and again on every later call). Any split of the input
    gives the same events. A tag is yielded as soon as its body is complete, before the
    PreviousTagSize after it. :func:`tag_to_frame` turns tags into frames.

    Leniency, as players have: the header's version and reserved bits, each tag's reserved
    bits and stream id, and every PreviousTagSize are not checked (a wrong PreviousTagSize is
    skipped); a header DataOffset over 9 skips the extra bytes; tags of unknown types are
    yielded as they are; a stream may end with or without its last PreviousTagSize.

    Error policy: :class:`FlvError` (a ``RemoteProtocolError``) for a bad signature, a
    DataOffset under 9, a filtered (encrypted) tag, or a stream that ends inside a header or
    a tag; ``MessageTooLarge`` for a tag body (or header padding) over ``max_tag_body``,
    raised as soon as the tag header arrives, so at most ``11 + max_tag_body`` bytes are ever
    buffered for one incomplete tag. After an error the reader is unusable: every later call
    raises ``LocalProtocolError``, as does :meth:`receive_data` after the end of stream.
    """

    def __init__(self, *, max_tag_body: int = DEFAULT_MAX_TAG_BODY) -> None:
        self.max_tag_body = max_tag_body
        self._buffer = bytearray()
        self._state = _HEADER
        self._eof = False
        self._failed = False
        self._skip = 0  # header padding still to skip

    def receive_data(self, data: bytes) -> None:
        """Add bytes read from the stream; ``b""`` means the stream ended."""
        if self._failed:
            raise LocalProtocolError("FlvReader used after an error")
        if self._eof:
            if data:
                raise LocalProtocolError("FlvReader received data after the end of stream")
            return
        if data:
            self._buffer += data
        else:
            self._eof = True

    def next_event(self) -> FlvHeader | FlvTag | FlvEnd | None:
        """The next event, or ``None`` if more data is needed. See the class docstring."""
        if self._failed:
            raise LocalProtocolError("FlvReader used after an error")
        try:
            return self._next_event()
        except RemoteProtocolError:
            self._failed = True
            raise

    def _next_event(self) -> FlvHeader | FlvTag | FlvEnd | None:
        buf = self._buffer
        if self._state == _HEADER:
            have = min(len(buf), 3)
            if buf[:have] != b"FLV"[:have]:
                raise FlvError("not an FLV stream (bad signature)")
            if len(buf) < 9:
                return self._need_data("the FLV header")
            data_offset = _U32.unpack_from(buf, 5)[0]
            if data_offset < 9:
                raise FlvError(f"FLV header DataOffset {data_offset} is under 9")
            if data_offset - 9 > self.max_tag_body:
                raise MessageTooLarge("FLV header", data_offset, self.max_tag_body + 9)
            header = FlvHeader(bool(buf[4] & 0x04), bool(buf[4] & 0x01), buf[3])
            del buf[:9]
            self._skip = data_offset - 9
            self._state = _PREVIOUS_SIZE
            return header
        if self._state == _PREVIOUS_SIZE:
            if self._skip:
                dropped = min(self._skip, len(buf))
                del buf[:dropped]
                self._skip -= dropped
                if self._skip:
                    return self._need_data("the FLV header")
            if len(buf) < 4:
                if self._eof and not buf:
                    return FlvEnd()  # the last PreviousTagSize is missing: tolerated
                return self._need_data("a PreviousTagSize")
            del buf[:4]  # PreviousTagSize: not checked
            self._state = _TAG
        # self._state == _TAG
        if len(buf) < 11:
            if self._eof and not buf:
                return FlvEnd()
            return self._need_data("an FLV tag header")
        first = buf[0]
        if first & 0x20:
            raise FlvError("filtered (encrypted) FLV tags are not supported")
        body_size = (buf[1] << 16) | (buf[2] << 8) | buf[3]
        if body_size > self.max_tag_body:
            raise MessageTooLarge("FLV tag", body_size, self.max_tag_body)
        end = 11 + body_size
        if len(buf) < end:
            return self._need_data("an FLV tag body")
        timestamp = (buf[7] << 24) | (buf[4] << 16) | (buf[5] << 8) | buf[6]
        tag = FlvTag(first & 0x1F, timestamp, bytes(buf[11:end]))
        del buf[:end]
        self._state = _PREVIOUS_SIZE
        return tag

    def _need_data(self, what: str) -> None:
        if self._eof:
            raise FlvError(f"FLV stream ends inside {what}")
        return None


def tag_to_frames(tag: FlvTag) -> list[Frame]:
    """The frames of one tag (all tracks); empty for a tag without media or of unknown type.

    The frames' timestamps are the tag's 32-bit timestamp; unwrap them with
    :class:`~arcly_trio.media.timestamps.TimestampUnwrapper` for a stream that may run past 49.7 days.
    """
    if tag.tag_type == TAG_VIDEO:
        return parse_video_tracks(tag.timestamp, tag.body)
    if tag.tag_type == TAG_AUDIO:
        return parse_audio_tracks(tag.timestamp, tag.body)
    if tag.tag_type == TAG_SCRIPT:
        frame = parse_data(tag.timestamp, tag.body)
        return [] if frame is None else [frame]
    return []


def tag_to_frame(tag: FlvTag) -> Frame | None:
    """The frame of one tag, or ``None`` (no media, unknown tag type). Multitrack tags with
    several tracks raise :class:`FlvUnsupported` (see :func:`tag_to_frames`)."""
    if tag.tag_type == TAG_VIDEO:
        return parse_video(tag.timestamp, tag.body)
    if tag.tag_type == TAG_AUDIO:
        return parse_audio(tag.timestamp, tag.body)
    if tag.tag_type == TAG_SCRIPT:
        return parse_data(tag.timestamp, tag.body)
    return None


def read_frames(data: bytes, *, max_tag_body: int = DEFAULT_MAX_TAG_BODY) -> list[Frame]:
    """Every frame of a complete FLV file held in memory (all tracks), in file order.

    Raises what :class:`FlvReader` and the parsers raise.
    """
    reader = FlvReader(max_tag_body=max_tag_body)
    reader.receive_data(data)
    reader.receive_data(b"")
    frames: list[Frame] = []
    while True:
        event = reader.next_event()
        if isinstance(event, FlvTag):
            frames.extend(tag_to_frames(event))
        elif isinstance(event, FlvEnd) or event is None:
            return frames
