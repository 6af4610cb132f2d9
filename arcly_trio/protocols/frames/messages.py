"""The ``arcly.frames.v1`` WebSocket frame protocol: its messages, encoded and decoded (sans-IO).

Live frames over a WebSocket, in the form a browser's WebCodecs decoders take them. Play with
``GET /{app}/{stream}/frames``, publish with ``GET /{app}/{stream}/ingest``; both need the
WebSocket subprotocol ``arcly.frames.v1`` (:data:`SUBPROTOCOL`). ``docs/frames-protocol.md``
is the full description; in short:

Text messages are JSON objects with a ``type``:

* ``start`` (server -> client, first): ``{"type": "start", "role": "play"|"publish",
  "stream": "live/demo"}``. For a publisher it means "publish accepted".
* ``config`` (both ways, one per track before its first frame and whenever it changes)::

      {"type": "config", "kind": "video", "track": 0, "format": "h264",
       "decoderConfig": {"codec": "avc1.4d401e", "codedWidth": 640, "codedHeight": 360},
       "description": true, "record": 39}

  ``decoderConfig`` is what ``VideoDecoder.configure`` / ``AudioDecoder.configure`` take
  (audio: ``codec``, ``sampleRate``, ``numberOfChannels``). ``record`` is the size of the
  codec configuration record (avcC, hvcC, av1C, vpcC, AudioSpecificConfig, OpusHead) that
  follows as the very next message, a binary frame message with the config flag (0: none
  follows). ``description`` says whether that record is the decoder's ``description``. The
  server always sends the record; a publisher may leave it out (``record`` 0) for VP9, AV1
  and Opus, and the server derives one from the codec string.
* ``stats`` (server -> client): ``{"type": "stats", "frames": 812, "dropped": 30,
  "skipped": 30, "queued": 2}``: frames sent (or, to a publisher, received), frames this
  viewer missed in all, missed since the last stats message (a slow viewer skips to the next
  keyframe), frames waiting for it in the server.
* ``end`` (both ways, last): ``{"type": "end", "reason": "stream-ended", "message": "...",
  "dropped": 0, "frames": 812}``. The WebSocket close code follows (see :class:`CloseCode`).

Binary messages: one per frame, a fixed 20-byte big-endian header, then the payload::

    offset  size  field
    0       1     message type: 1 (frame)
    1       1     kind: 1 video, 2 audio
    2       1     flags: 0x01 key (random access point), 0x02 config (the payload is the
                  track's config record); other bits are 0
    3       1     track id (0 for the main track of each kind)
    4       8     presentation timestamp, microseconds, signed
    12      8     decoding timestamp, microseconds, signed
    20      ...   payload: the chunk's data as the decoder expects for the track's
                  description: AVCC/HVCC length-prefixed NAL units for H.264/HEVC, the
                  temporal unit (AV1) or frame (VP9), a raw AAC or Opus packet

``EncodedVideoChunk({type: key ? "key" : "delta", timestamp: pts, data: payload})``.
Audio frames are always sent with the key flag. Kernel frames carry milliseconds, so a server
sends multiples of 1000; timestamps a publisher sends are floored to milliseconds.

Every binary message is built once per frame and shared by every viewer
(:meth:`~arcly_trio.core.frame.Frame.encoded`, key :data:`FRAME_MESSAGE_KEY`); a config
frame's ``config`` text is built once too (key :data:`CONFIG_MESSAGE_KEY`).

Error policy: decoding never raises anything but :class:`FramesProtocolError` (a
``RemoteProtocolError``) whatever the input; each carries the WebSocket close code that ends
the connection (:class:`CloseCode`) and a reason short enough for a close frame. Encoding a
frame the protocol cannot carry (a data frame, a track over 255) raises ``LocalProtocolError``.
This module imports nothing from trio.
"""

from __future__ import annotations

import enum
import json
import struct
from typing import Any, Final

import attrs

from arcly_trio.core.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.media import codec_strings
from arcly_trio.media.codecs import CodecError

__all__ = [
    "CONFIG_MESSAGE_KEY",
    "FLAG_CONFIG",
    "FLAG_KEY",
    "FRAME_MESSAGE_KEY",
    "HEADER",
    "HEADER_SIZE",
    "SUBPROTOCOL",
    "CloseCode",
    "Config",
    "End",
    "FrameMessage",
    "FramesProtocolError",
    "Limits",
    "Start",
    "Stats",
    "TextMessage",
    "close_reason",
    "config_for_frame",
    "config_message",
    "FrameHeader",
    "decode_frame",
    "decode_frame_header",
    "decode_text",
    "encode_frame",
    "encode_text",
    "frame_message",
]

SUBPROTOCOL: Final = "arcly.frames.v1"


class CloseCode(enum.IntEnum):
    """WebSocket close codes of the protocol (4xxx mirror HTTP statuses)."""

    NORMAL = 1000
    """The stream ended (viewer), or the publisher said ``end``."""
    GOING_AWAY = 1001
    """The server is stopping."""
    TOO_BIG = 1009
    """A message over the size limits."""
    MALFORMED = 4400
    """Not a message of this protocol: bad JSON, unknown type, bad field, bad binary header."""
    UNAUTHORIZED = 4403
    """The engine's authenticator refused (``?token=``)."""
    NOT_FOUND = 4404
    """Unknown application, or no such stream to play."""
    SUBPROTOCOL = 4406
    """The client did not offer the ``arcly.frames.v1`` subprotocol."""
    CONFLICT = 4409
    """The stream already has a publisher."""
    ENDED = 4410
    """The server ended this session (a publisher replaced by another one, idle reaped or that
    sent no media within the publish start timeout; a publisher or viewer kicked by an
    operator)."""
    UNSUPPORTED = 4415
    """A codec the protocol does not carry, or a config record that does not parse."""
    ORDER = 4422
    """Media before its config, a missing config record, timestamps going back, a first video
    frame that is not a keyframe."""
    TOO_SLOW = 4429
    """A viewer that fell behind more than the application's lag budget (evicted)."""
    TOO_MANY = 4429
    """(The same code, HTTP's "Too Many Requests".) A publisher cut for sending faster than its
    application's bitrate limit, or refused because its address holds its share of publishers."""
    INTERNAL = 4500
    """A bug in the server."""
    UNAVAILABLE = 4503
    """The server is stopping, or has reached its publisher limit."""


class FramesProtocolError(RemoteProtocolError):
    """A peer broke the frame protocol; ``code`` is the WebSocket close code to answer with."""

    def __init__(self, message: str, code: CloseCode = CloseCode.MALFORMED) -> None:
        super().__init__(message)
        self.code = code


def close_reason(message: str) -> str:
    """``message`` cut to fit a WebSocket close frame (123 bytes of UTF-8)."""
    data = message.encode("utf-8")
    if len(data) <= 123:
        return message
    return data[:120].decode("utf-8", "ignore") + "..."


@attrs.frozen
class Limits:
    """Size limits, in bytes really received.

    Attributes:
        max_text: the largest text (JSON) message.
        max_frame: the largest binary message (header included).
        max_record: the largest config record.
        max_track: the highest track id.
    """

    max_text: int = 16 * 1024
    max_frame: int = 4 * 1024 * 1024
    max_record: int = 64 * 1024
    max_track: int = 7

    @property
    def max_message(self) -> int:
        """The largest message of any kind (what the WebSocket layer is told)."""
        return max(self.max_text, self.max_frame)


# --- binary frame messages ---------------------------------------------------------------------

HEADER: Final = struct.Struct(">BBBBqq")
HEADER_SIZE: Final = HEADER.size  # 20
MESSAGE_FRAME: Final = 1
KIND_VIDEO: Final = 1
KIND_AUDIO: Final = 2
FLAG_KEY: Final = 0x01
FLAG_CONFIG: Final = 0x02
_KNOWN_FLAGS: Final = FLAG_KEY | FLAG_CONFIG
_KIND_CODE: Final = {FrameKind.VIDEO: KIND_VIDEO, FrameKind.AUDIO: KIND_AUDIO}
_KIND_OF_CODE: Final = {KIND_VIDEO: FrameKind.VIDEO, KIND_AUDIO: FrameKind.AUDIO}
_KIND_NAME: Final = {FrameKind.VIDEO: "video", FrameKind.AUDIO: "audio"}
_KIND_OF_NAME: Final = {"video": FrameKind.VIDEO, "audio": FrameKind.AUDIO}
#: Timestamps stay within what JavaScript numbers hold exactly.
MAX_TIMESTAMP_US: Final = 2**53 - 1

FRAME_MESSAGE_KEY: Final = ("arcly.frames.v1", "frame")
CONFIG_MESSAGE_KEY: Final = ("arcly.frames.v1", "config")


@attrs.frozen(slots=True)
class FrameMessage:
    """A decoded binary message: the header fields and the payload (a view, not a copy)."""

    kind: FrameKind
    track: int
    key: bool
    config: bool
    pts_us: int
    dts_us: int
    payload: memoryview


def encode_frame(frame: Frame) -> bytes:
    """The binary message of a video or audio frame (not cached: see :func:`frame_message`)."""
    code = _KIND_CODE.get(frame.kind)
    if code is None:
        raise LocalProtocolError(f"the frame protocol does not carry {frame.kind.value} frames")
    if not 0 <= frame.track <= 255:
        raise LocalProtocolError(f"track id {frame.track} does not fit the frame header")
    flags = (FLAG_KEY if frame.keyframe or code == KIND_AUDIO else 0) | (FLAG_CONFIG if frame.config else 0)
    try:
        header = HEADER.pack(MESSAGE_FRAME, code, flags, frame.track, frame.pts * 1000, frame.dts * 1000)
    except struct.error:
        raise LocalProtocolError(f"timestamps {frame.pts}/{frame.dts} ms do not fit the frame header") from None
    return header + frame.payload


def frame_message(frame: Frame) -> bytes:
    """:func:`encode_frame`, built once per frame and kept on it for every viewer."""
    message: bytes = frame.encoded(FRAME_MESSAGE_KEY, encode_frame)
    return message


FrameHeader = tuple[FrameKind, int, bool, bool, int, int]
"""A binary message's checked header: kind, track, key, config, pts and dts (microseconds)."""


def decode_frame_header(data: bytes | bytearray | memoryview, limits: Limits = Limits()) -> FrameHeader:
    """Check one binary message's size and header and return the header's fields (the payload
    is ``data[HEADER_SIZE:]``); :func:`decode_frame` without building a :class:`FrameMessage`
    (the reader's per-frame path)."""
    size = len(data)
    if size > limits.max_frame:
        raise FramesProtocolError(
            f"binary message of {size} bytes is over the limit of {limits.max_frame}", CloseCode.TOO_BIG
        )
    if size < HEADER_SIZE:
        raise FramesProtocolError(f"binary message of {size} bytes is shorter than the {HEADER_SIZE}-byte header")
    mtype, kind_code, flags, track, pts, dts = HEADER.unpack_from(data, 0)
    if mtype != MESSAGE_FRAME:
        raise FramesProtocolError(f"unknown binary message type {mtype}")
    kind = _KIND_OF_CODE.get(kind_code)
    if kind is None:
        raise FramesProtocolError(f"unknown frame kind {kind_code} (1 video, 2 audio)")
    if flags & ~_KNOWN_FLAGS:
        raise FramesProtocolError(f"reserved frame flags {flags:#04x} are set")
    if track > limits.max_track:
        raise FramesProtocolError(f"track id {track} is over the limit of {limits.max_track}")
    if abs(pts) > MAX_TIMESTAMP_US or abs(dts) > MAX_TIMESTAMP_US:
        raise FramesProtocolError("timestamp out of range (more than 2**53 microseconds)")
    if size == HEADER_SIZE:
        raise FramesProtocolError("binary message with an empty payload")
    return kind, track, bool(flags & FLAG_KEY), bool(flags & FLAG_CONFIG), pts, dts


def decode_frame(data: bytes | bytearray | memoryview, limits: Limits = Limits()) -> FrameMessage:
    """Decode one binary message (header checks only; the sequence rules are
    :class:`~.reader.FramesReader`'s)."""
    kind, track, key, config, pts, dts = decode_frame_header(data, limits)
    return FrameMessage(kind, track, key, config, pts, dts, memoryview(data)[HEADER_SIZE:])


# --- text messages -----------------------------------------------------------------------------


@attrs.frozen
class Start:
    """The server's first message: the stream and this connection's role."""

    role: str
    stream: str


@attrs.frozen
class Config:
    """A track's decoder configuration (see the module docstring)."""

    kind: FrameKind
    track: int
    format: str
    codec: str
    record: int
    description: bool
    coded_width: int | None = None
    coded_height: int | None = None
    sample_rate: int | None = None
    channels: int | None = None

    def decoder_config(self) -> dict[str, Any]:
        """The ``decoderConfig`` object (without ``description``)."""
        config: dict[str, Any] = {"codec": self.codec}
        if self.kind is FrameKind.VIDEO:
            if self.coded_width is not None and self.coded_height is not None:
                config["codedWidth"] = self.coded_width
                config["codedHeight"] = self.coded_height
        else:
            config["sampleRate"] = self.sample_rate
            config["numberOfChannels"] = self.channels
        return config


@attrs.frozen
class Stats:
    """Counters the server reports to a viewer (or a publisher)."""

    frames: int = 0
    dropped: int = 0
    skipped: int = 0
    queued: int = 0


@attrs.frozen
class End:
    """The last message: why the stream (or this connection) ended."""

    reason: str
    message: str = ""
    dropped: int = 0
    frames: int = 0


TextMessage = Start | Config | Stats | End

_INT_LIMIT: Final = 2**53


def _int(doc: dict[str, Any], name: str, low: int, high: int, default: int | None = None) -> int:
    value = doc.get(name, default)
    if value is None:
        raise FramesProtocolError(f"{name!r} is missing")
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise FramesProtocolError(f"{name!r} must be an integer from {low} to {high}, not {_show(value)}")
    return value


def _opt_int(doc: dict[str, Any], name: str, low: int, high: int) -> int | None:
    if doc.get(name) is None:
        return None
    return _int(doc, name, low, high)


def _str(doc: dict[str, Any], name: str, max_len: int = 256, default: str | None = None) -> str:
    value = doc.get(name, default)
    if value is None:
        raise FramesProtocolError(f"{name!r} is missing")
    if not isinstance(value, str) or len(value) > max_len:
        raise FramesProtocolError(f"{name!r} must be a string of at most {max_len} characters")
    return value


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _config_from(doc: dict[str, Any], limits: Limits) -> Config:
    name = doc.get("kind")
    kind = _KIND_OF_NAME.get(name) if isinstance(name, str) else None
    if kind is None:
        raise FramesProtocolError(f'config \'kind\' must be "video" or "audio", not {_show(doc.get("kind"))}')
    track = _int(doc, "track", 0, limits.max_track, 0)
    decoder = doc.get("decoderConfig")
    if not isinstance(decoder, dict):
        raise FramesProtocolError("config needs a 'decoderConfig' object")
    codec = _str(decoder, "codec", 64)
    try:
        fmt = codec_strings.frame_codec_of(codec)
    except CodecError as exc:
        raise FramesProtocolError(str(exc), CloseCode.UNSUPPORTED) from None
    if (kind is FrameKind.VIDEO) != (fmt in codec_strings.VIDEO_CODECS):
        raise FramesProtocolError(f"codec {codec!r} is not a {kind.value} codec", CloseCode.UNSUPPORTED)
    given = doc.get("format")
    if given is not None and given != fmt:
        raise FramesProtocolError(f"format {_show(given)} does not match codec {codec!r}")
    record = _int(doc, "record", 0, limits.max_record, 0)
    description = doc.get("description", record > 0)
    if not isinstance(description, bool):
        raise FramesProtocolError("'description' must be true or false")
    if description and not record:
        raise FramesProtocolError("'description' is true but no record follows ('record' is 0)")
    if kind is FrameKind.VIDEO:
        return Config(
            kind,
            track,
            fmt,
            codec,
            record,
            description,
            _opt_int(decoder, "codedWidth", 1, 65536),
            _opt_int(decoder, "codedHeight", 1, 65536),
        )
    return Config(
        kind,
        track,
        fmt,
        codec,
        record,
        description,
        sample_rate=_int(decoder, "sampleRate", 1, 768000),
        channels=_int(decoder, "numberOfChannels", 1, 255),
    )


def decode_text(text: str | bytes, limits: Limits = Limits()) -> TextMessage:
    """Decode one text message; raise :class:`FramesProtocolError` for anything malformed."""
    size = len(text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text)
    if size > limits.max_text:
        raise FramesProtocolError(
            f"text message of {size} bytes is over the limit of {limits.max_text}", CloseCode.TOO_BIG
        )
    try:
        doc = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError, UnicodeDecodeError) as exc:
        raise FramesProtocolError(f"text message is not JSON: {type(exc).__name__}") from None
    if not isinstance(doc, dict):
        raise FramesProtocolError("a text message must be a JSON object")
    kind = doc.get("type")
    if kind == "config":
        return _config_from(doc, limits)
    if kind == "end":
        return End(
            _str(doc, "reason", 64, "end"),
            _str(doc, "message", 1024, ""),
            _int(doc, "dropped", 0, _INT_LIMIT, 0),
            _int(doc, "frames", 0, _INT_LIMIT, 0),
        )
    if kind == "stats":
        return Stats(*(_int(doc, name, 0, _INT_LIMIT, 0) for name in ("frames", "dropped", "skipped", "queued")))
    if kind == "start":
        return Start(_str(doc, "role", 16), _str(doc, "stream", 512))
    raise FramesProtocolError(f"unknown message type {_show(kind)}")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def encode_text(message: TextMessage) -> str:
    """The JSON text of a text message."""
    doc: dict[str, Any]
    if isinstance(message, Config):
        doc = {
            "type": "config",
            "kind": _KIND_NAME[message.kind],
            "track": message.track,
            "format": message.format,
            "decoderConfig": message.decoder_config(),
            "description": message.description,
            "record": message.record,
        }
    elif isinstance(message, Stats):
        doc = {
            "type": "stats",
            "frames": message.frames,
            "dropped": message.dropped,
            "skipped": message.skipped,
            "queued": message.queued,
        }
    elif isinstance(message, End):
        doc = {
            "type": "end",
            "reason": message.reason,
            "message": message.message,
            "dropped": message.dropped,
            "frames": message.frames,
        }
    elif isinstance(message, Start):
        doc = {"type": "start", "role": message.role, "stream": message.stream}
    else:
        raise LocalProtocolError(f"not a text message: {message!r}")
    return json.dumps(doc, separators=(",", ":"), allow_nan=False)


# --- config frames -----------------------------------------------------------------------------


def config_for_frame(frame: Frame) -> Config:
    """The ``config`` message of a config frame (its record is the frame's payload).

    Raises ``ProtocolError``: :class:`~arcly_trio.media.codecs.CodecError` when the record does
    not parse, ``LocalProtocolError`` for a frame that is not an audio or video config.
    """
    if not frame.config or frame.kind not in _KIND_NAME:
        raise LocalProtocolError(f"not an audio or video config frame: {frame!r}")
    params = codec_strings.decoder_parameters(frame.codec, frame.payload)
    channels = params.channels
    if frame.kind is FrameKind.AUDIO and channels is None:
        channels = 2  # an AAC program config element decides; decoders take the record's word
    return Config(
        frame.kind,
        frame.track,
        frame.codec,
        params.codec,
        len(frame.payload),
        params.description,
        params.coded_width,
        params.coded_height,
        params.sample_rate,
        channels,
    )


def _build_config_message(frame: Frame) -> str | None:
    try:
        return encode_text(config_for_frame(frame))
    except ProtocolError:
        return None


def config_message(frame: Frame) -> str | None:
    """The ``config`` text of a config frame, built once per frame; ``None`` when the codec is
    not one the protocol carries or the record does not parse (viewers skip that track)."""
    text: str | None = frame.encoded(CONFIG_MESSAGE_KEY, _build_config_message)
    return text
