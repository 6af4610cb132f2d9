"""RTMP message types, protocol control messages and user control events (spec 5.4, 7.1).

This module names the RTMP message type ids and turns the payloads of the small fixed-layout
messages into Python values and back:

* protocol control messages (types 1, 2, 3, 5, 6): Set Chunk Size, Abort Message,
  Acknowledgement, Window Acknowledgement Size, Set Peer Bandwidth;
* user control messages (type 4): Stream Begin, Stream EOF, Stream Dry, Set Buffer Length,
  Stream Is Recorded, Ping Request, Ping Response.

Encoders and decoders work on message *payloads* only; the chunk stream (:mod:`.chunks`) frames
them. Protocol control messages travel on chunk stream 2 with message stream id 0.

Error policy:

* the ``decode_*`` functions raise :class:`~arcly_trio.core.errors.RemoteProtocolError` for a
  payload shorter than its layout or a value the specification forbids (a chunk size of zero or
  with its top bit set); trailing bytes after the layout are ignored, as FFmpeg does;
* the ``encode_*`` functions raise :class:`~arcly_trio.core.errors.LocalProtocolError` for a
  value that does not fit its field.
"""

from __future__ import annotations

import enum
import struct
from typing import Final

import attrs

from arcly_trio.core.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "MessageType",
    "UserControlEvent",
    "PeerBandwidthLimit",
    "UserControl",
    "MAX_CHUNK_SIZE",
    "encode_set_chunk_size",
    "decode_set_chunk_size",
    "encode_abort",
    "decode_abort",
    "encode_acknowledgement",
    "decode_acknowledgement",
    "encode_window_ack_size",
    "decode_window_ack_size",
    "encode_set_peer_bandwidth",
    "decode_set_peer_bandwidth",
    "encode_user_control",
    "decode_user_control",
]

#: The largest chunk size the specification allows (31 bits).
MAX_CHUNK_SIZE: Final = 0x7FFFFFFF

_U32 = struct.Struct(">I")
_U16 = struct.Struct(">H")
_U32_U8 = struct.Struct(">IB")
_USER_CONTROL_1 = struct.Struct(">HI")
_USER_CONTROL_2 = struct.Struct(">HII")


class MessageType(enum.IntEnum):
    """RTMP message type ids (the ``type_id`` of a message header)."""

    SET_CHUNK_SIZE = 1
    ABORT = 2
    ACKNOWLEDGEMENT = 3
    USER_CONTROL = 4
    WINDOW_ACK_SIZE = 5
    SET_PEER_BANDWIDTH = 6
    AUDIO = 8
    VIDEO = 9
    AMF3_DATA = 15
    AMF3_SHARED_OBJECT = 16
    AMF3_COMMAND = 17
    AMF0_DATA = 18
    AMF0_SHARED_OBJECT = 19
    AMF0_COMMAND = 20
    AGGREGATE = 22


class UserControlEvent(enum.IntEnum):
    """User control event types (the first two bytes of a type 4 message)."""

    STREAM_BEGIN = 0
    STREAM_EOF = 1
    STREAM_DRY = 2
    SET_BUFFER_LENGTH = 3
    STREAM_IS_RECORDED = 4
    PING_REQUEST = 6
    PING_RESPONSE = 7


class PeerBandwidthLimit(enum.IntEnum):
    """The limit type of a Set Peer Bandwidth message."""

    HARD = 0
    SOFT = 1
    DYNAMIC = 2


@attrs.frozen(slots=True)
class UserControl:
    """One decoded user control event.

    Attributes:
        event_type: the event type (a :class:`UserControlEvent` value, or another int for the
            events this module does not know, such as Red5's buffer empty/ready 31/32).
        data: the stream id for stream events, the timestamp for ping events; for unknown
            events the first four bytes of event data (0 when there are fewer).
        buffer_length: the buffer length in milliseconds (Set Buffer Length only, else 0).
    """

    event_type: int
    data: int
    buffer_length: int = 0


def _u32(value: int, what: str) -> bytes:
    if not 0 <= value <= 0xFFFFFFFF:
        raise LocalProtocolError(f"{what} {value} does not fit 32 bits")
    return _U32.pack(value)


def _need(payload: bytes, size: int, what: str) -> None:
    if len(payload) < size:
        raise RemoteProtocolError(f"{what} payload of {len(payload)} bytes, need {size}")


def encode_set_chunk_size(size: int) -> bytes:
    """Payload of a Set Chunk Size message announcing ``size`` (1 ..= 0x7FFFFFFF)."""
    if not 1 <= size <= MAX_CHUNK_SIZE:
        raise LocalProtocolError(f"chunk size {size} is outside 1..{MAX_CHUNK_SIZE}")
    return _U32.pack(size)


def decode_set_chunk_size(payload: bytes) -> int:
    """The chunk size a Set Chunk Size payload announces; rejects 0 and a set top bit."""
    _need(payload, 4, "Set Chunk Size")
    (size,) = _U32.unpack_from(payload)
    if size & 0x80000000:
        raise RemoteProtocolError(f"Set Chunk Size with its top bit set (0x{size:08X})")
    if size == 0:
        raise RemoteProtocolError("Set Chunk Size of 0")
    return size


def encode_abort(csid: int) -> bytes:
    """Payload of an Abort Message for chunk stream ``csid``."""
    return _u32(csid, "chunk stream id")


def decode_abort(payload: bytes) -> int:
    """The chunk stream id an Abort Message names."""
    _need(payload, 4, "Abort Message")
    return int(_U32.unpack_from(payload)[0])


def encode_acknowledgement(sequence_number: int) -> bytes:
    """Payload of an Acknowledgement; ``sequence_number`` is taken modulo 2**32."""
    return _U32.pack(sequence_number & 0xFFFFFFFF)


def decode_acknowledgement(payload: bytes) -> int:
    """The sequence number (bytes received so far, modulo 2**32) of an Acknowledgement."""
    _need(payload, 4, "Acknowledgement")
    return int(_U32.unpack_from(payload)[0])


def encode_window_ack_size(size: int) -> bytes:
    """Payload of a Window Acknowledgement Size message."""
    return _u32(size, "window acknowledgement size")


def decode_window_ack_size(payload: bytes) -> int:
    """The window a Window Acknowledgement Size message announces (0 is kept: no acks)."""
    _need(payload, 4, "Window Acknowledgement Size")
    return int(_U32.unpack_from(payload)[0])


def encode_set_peer_bandwidth(size: int, limit_type: int = PeerBandwidthLimit.DYNAMIC) -> bytes:
    """Payload of a Set Peer Bandwidth message (``limit_type``: 0 hard, 1 soft, 2 dynamic)."""
    if not 0 <= limit_type <= 0xFF:
        raise LocalProtocolError(f"peer bandwidth limit type {limit_type} does not fit a byte")
    return _u32(size, "peer bandwidth") + bytes([limit_type])


def decode_set_peer_bandwidth(payload: bytes) -> tuple[int, int]:
    """``(window size, limit type)`` of a Set Peer Bandwidth message.

    The limit type is returned as sent; a missing limit type byte (seen from some encoders) is
    read as dynamic.
    """
    _need(payload, 4, "Set Peer Bandwidth")
    if len(payload) < 5:
        return int(_U32.unpack_from(payload)[0]), int(PeerBandwidthLimit.DYNAMIC)
    size, limit = _U32_U8.unpack_from(payload)
    return int(size), int(limit)


def encode_user_control(event_type: int, data: int = 0, buffer_length: int = 0) -> bytes:
    """Payload of a user control message.

    ``data`` is the stream id (stream events) or the timestamp (ping events; taken modulo
    2**32). Set Buffer Length also carries ``buffer_length`` (milliseconds).
    """
    if not 0 <= event_type <= 0xFFFF:
        raise LocalProtocolError(f"user control event type {event_type} does not fit 16 bits")
    if event_type in (UserControlEvent.PING_REQUEST, UserControlEvent.PING_RESPONSE):
        data &= 0xFFFFFFFF
    if not 0 <= data <= 0xFFFFFFFF:
        raise LocalProtocolError(f"user control event data {data} does not fit 32 bits")
    if event_type == UserControlEvent.SET_BUFFER_LENGTH:
        if not 0 <= buffer_length <= 0xFFFFFFFF:
            raise LocalProtocolError(f"buffer length {buffer_length} does not fit 32 bits")
        return _USER_CONTROL_2.pack(event_type, data, buffer_length)
    return _USER_CONTROL_1.pack(event_type, data)


def decode_user_control(payload: bytes) -> UserControl:
    """Decode a user control message.

    The events of :class:`UserControlEvent` must carry their full layout; an unknown event type
    is accepted with whatever data it has (see :class:`UserControl`).
    """
    _need(payload, 2, "User Control")
    (event_type,) = _U16.unpack_from(payload)
    if event_type == UserControlEvent.SET_BUFFER_LENGTH:
        _need(payload, 10, "User Control Set Buffer Length")
        _, stream_id, length = _USER_CONTROL_2.unpack_from(payload)
        return UserControl(event_type, int(stream_id), int(length))
    if event_type in _KNOWN_EVENTS:
        _need(payload, 6, f"User Control event {event_type}")
        return UserControl(event_type, int(_USER_CONTROL_1.unpack_from(payload)[1]))
    if len(payload) >= 6:
        return UserControl(event_type, int(_USER_CONTROL_1.unpack_from(payload)[1]))
    return UserControl(event_type, 0)


_KNOWN_EVENTS: Final = frozenset(int(e) for e in UserControlEvent)
