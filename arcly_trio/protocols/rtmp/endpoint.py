"""The machinery both sides of an RTMP session share, once the handshake is done (sans-IO).

:class:`RtmpEndpoint` reads the chunk stream (:class:`~.chunks.ChunkReader`), writes our
messages (:class:`~.chunks.ChunkWriter`), and handles what needs no decision from anyone:

* the peer's Set Chunk Size and Abort Message (applied by the reader);
* acknowledgements: it records the peer's Window Acknowledgement Size and sends an
  Acknowledgement (sequence number: bytes received, modulo 2**32) each time the received byte
  count crosses that window; it records the peer's Acknowledgements
  (:attr:`~RtmpEndpoint.peer_acknowledged`, unwrapped) and Set Peer Bandwidth;
* Ping Request, answered with Ping Response;
* aggregate messages, split into their sub-messages (each held to the limit of its kind), and
  AMF3 command and data messages, unwrapped (a 0x00 format byte, then AMF0);
* timestamps: media and data events carry the message timestamp in milliseconds,
  *unwrapped* per message stream (:class:`~arcly_trio.media.timestamps.TimestampUnwrapper`).

A role (server or client) subclasses it and implements the ``_on_*`` hooks.

Chunk streams (outgoing): protocol control and user control messages go on chunk stream 2
(:data:`CSID_CONTROL`), every command and data message of the session's own on chunk stream 3
(:data:`CSID_COMMAND`), always with format 0 first headers. Chunk streams 4 (audio), 5 (data)
and 6 (video) (:data:`CSID_AUDIO`, :data:`CSID_DATA`, :data:`CSID_VIDEO`) are reserved for
media. Because the session never compresses headers against earlier messages, an adapter may
interleave shared pre-chunked media (:func:`~.chunks.chunk_message` at
:attr:`~RtmpEndpoint.out_chunk_size`) with what :meth:`~RtmpEndpoint.data_to_send` returns, on
any chunk stream, provided it writes whole outputs in order.

Limits: everything :class:`~.chunks.ChunkReader` enforces (sizes per kind, buffered bytes
counted for real, a shared :class:`~arcly_trio.core.budget.ByteBudget`, the smallest chunk
size), plus :attr:`~RtmpEndpoint.max_aggregate_parts` sub-messages per aggregate.

Error policy: any protocol violation by the peer raises
:class:`~arcly_trio.core.errors.RemoteProtocolError` (or a subclass: ``MessageTooLarge``,
``BudgetExceeded``, ``AMF0Error``) from :meth:`~RtmpEndpoint.receive_data` or
:meth:`~RtmpEndpoint.next_event`; after that the endpoint is dead and every call except
:meth:`~RtmpEndpoint.data_to_send` and :meth:`~RtmpEndpoint.close` raises
:class:`~arcly_trio.core.errors.LocalProtocolError`.
"""

from __future__ import annotations

import collections
import math
import urllib.parse
from collections.abc import Iterator
from typing import Any, Final

from arcly_trio.core.budget import ByteBudget
from arcly_trio.core.errors import LocalProtocolError, MessageTooLarge, RemoteProtocolError
from arcly_trio.media import amf0
from arcly_trio.media.timestamps import TimestampUnwrapper
from arcly_trio.protocols.rtmp.chunks import ChunkReader, ChunkWriter, RtmpMessage, chunk_message
from arcly_trio.protocols.rtmp.events import DataMessage, Event
from arcly_trio.protocols.rtmp.messages import (
    MessageType,
    UserControlEvent,
    decode_acknowledgement,
    decode_set_chunk_size,
    decode_set_peer_bandwidth,
    decode_user_control,
    decode_window_ack_size,
    encode_acknowledgement,
    encode_user_control,
    encode_window_ack_size,
)

__all__ = [
    "RtmpEndpoint",
    "CSID_CONTROL",
    "CSID_COMMAND",
    "CSID_AUDIO",
    "CSID_DATA",
    "CSID_VIDEO",
    "MAX_AGGREGATE_PARTS",
    "MASK32",
    "amf_number",
    "stream_id_arg",
    "split_query",
]

#: Chunk stream of protocol control and user control messages.
CSID_CONTROL: Final = 2
#: Chunk stream of the session's own commands and data messages.
CSID_COMMAND: Final = 3
#: Chunk stream reserved for audio messages written by the adapter.
CSID_AUDIO: Final = 4
#: Chunk stream reserved for data messages (metadata) written by the adapter.
CSID_DATA: Final = 5
#: Chunk stream reserved for video messages written by the adapter.
CSID_VIDEO: Final = 6

#: Stream ids, timestamps and byte counts are 32-bit: what wraps, and the largest valid value.
MASK32: Final = 0xFFFFFFFF

_SET_CHUNK_SIZE: Final = int(MessageType.SET_CHUNK_SIZE)
_ABORT: Final = int(MessageType.ABORT)
_ACK: Final = int(MessageType.ACKNOWLEDGEMENT)
_USER_CONTROL: Final = int(MessageType.USER_CONTROL)
_WINDOW: Final = int(MessageType.WINDOW_ACK_SIZE)
_PEER_BW: Final = int(MessageType.SET_PEER_BANDWIDTH)
_AUDIO: Final = int(MessageType.AUDIO)
_VIDEO: Final = int(MessageType.VIDEO)
_AMF3_DATA: Final = int(MessageType.AMF3_DATA)
_AMF3_COMMAND: Final = int(MessageType.AMF3_COMMAND)
_AMF0_DATA: Final = int(MessageType.AMF0_DATA)
_AMF0_COMMAND: Final = int(MessageType.AMF0_COMMAND)
_AGGREGATE: Final = int(MessageType.AGGREGATE)


#: The most sub-messages an aggregate message may hold (real encoders put a few dozen in one).
MAX_AGGREGATE_PARTS: Final = 1024

_SET_DATA_FRAME: Final = amf0.encode("@setDataFrame")


def split_query(text: str) -> tuple[str, dict[str, str]]:
    """``'live?token=x&a'`` -> ``('live', {'token': 'x', 'a': ''})``."""
    path, sep, query = text.partition("?")
    if not sep:
        return path, {}
    return path, dict(urllib.parse.parse_qsl(query, keep_blank_values=True))


def amf_number(value: object, default: float) -> float:
    """A command argument sent as an AMF0 number, or ``default`` if it is not one."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return default


def stream_id_arg(value: object) -> int | None:
    """A stream id sent as an AMF0 number, or ``None`` if it is not a plausible one."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if not math.isfinite(value) or value < 0 or value > MASK32 or value != int(value):
        return None
    return int(value)


class RtmpEndpoint:
    """Chunk stream in and out, protocol control, acknowledgements, pings, timestamp clocks.

    The machinery both roles share (:class:`~.server_session.ServerSession` and
    :class:`~.client_session.ClientSession` subclass it). A role implements the ``_on_*``
    hooks; everything else is here. See :mod:`.endpoint` for the limits and the error policy.
    """

    def __init__(
        self,
        *,
        max_chunk_size: int,
        max_video_size: int,
        max_audio_size: int,
        max_other_size: int,
        max_partial_messages: int,
        initial_bytes_received: int,
        min_chunk_size: int = 1,
        max_buffered_bytes: int | None = None,
        budget: ByteBudget | None = None,
        max_aggregate_parts: int = MAX_AGGREGATE_PARTS,
    ) -> None:
        self._reader = ChunkReader(
            max_chunk_size=max_chunk_size,
            min_chunk_size=min_chunk_size,
            max_video_size=max_video_size,
            max_audio_size=max_audio_size,
            max_other_size=max_other_size,
            max_partial_messages=max_partial_messages,
            max_buffered_bytes=max_buffered_bytes,
            budget=budget,
        )
        self.max_aggregate_parts = max_aggregate_parts
        self._writer = ChunkWriter()
        self._out = bytearray()
        self._events: collections.deque[Event] = collections.deque()
        self._bytes_received = initial_bytes_received
        self._last_ack_at = initial_bytes_received
        self._peer_window: int | None = None
        self._peer_ack_raw = 0
        self._peer_acknowledged = 0
        self._peer_bandwidth: tuple[int, int] | None = None
        self._clocks: dict[int, TimestampUnwrapper] = {}
        self._broken = False
        self.dropped_messages = 0
        self.messages_handled = 0
        """Commands, media and data messages received (protocol control, acknowledgements and
        pings do not count): what a worker's idle timeout should call progress."""

    # -- properties ---------------------------------------------------------------------------

    @property
    def out_chunk_size(self) -> int:
        """Our outgoing chunk size (what pre-chunked shared media must be cut to)."""
        return self._writer.chunk_size

    @property
    def in_chunk_size(self) -> int:
        """The peer's chunk size."""
        return self._reader.chunk_size

    @property
    def pending_bytes(self) -> int:
        """Bytes received that do not yet form a whole message (non-zero mid-message)."""
        return self._reader.unparsed_bytes + self._reader.partial_bytes

    @property
    def bytes_received(self) -> int:
        """Bytes fed to :meth:`receive_data` (plus ``initial_bytes_received``)."""
        return self._bytes_received

    @property
    def peer_window_ack_size(self) -> int | None:
        """The peer's Window Acknowledgement Size (``None`` until it sends one: no acks)."""
        return self._peer_window

    @property
    def peer_acknowledged(self) -> int:
        """Bytes the peer acknowledged, its 32-bit sequence numbers unwrapped."""
        return self._peer_acknowledged

    @property
    def peer_bandwidth(self) -> tuple[int, int] | None:
        """``(size, limit type)`` of the peer's last Set Peer Bandwidth, if any."""
        return self._peer_bandwidth

    @property
    def broken(self) -> bool:
        """The peer broke the protocol (the session raised); only ``data_to_send`` works."""
        return self._broken

    # -- bytes in and out ---------------------------------------------------------------------

    def _check_alive(self) -> None:
        if self._broken:
            raise LocalProtocolError("the RTMP session failed earlier")

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Feed bytes received from the peer (``b""`` is a no-op).

        Parsing happens in :meth:`next_event`; this only buffers, counts the bytes and queues
        an Acknowledgement when the peer's window is crossed.
        """
        self._check_alive()
        self._reader.receive_data(data)
        self._bytes_received += len(data)
        self._maybe_acknowledge()

    def data_to_send(self) -> bytes:
        """The bytes queued for the peer since the last call (possibly ``b""``)."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def events(self) -> Iterator[Event]:
        """Yield events until :meth:`next_event` returns ``None``."""
        while True:
            event = self.next_event()
            if event is None:
                return
            yield event

    def _paused(self) -> bool:
        return False

    def next_event(self) -> Event | None:
        """The next event, or ``None`` when more bytes are needed (or a decision is pending)."""
        self._check_alive()
        try:
            while True:
                if self._events:
                    return self._events.popleft()
                if self._paused():
                    return None
                message = self._reader.next_message()
                if message is None:
                    return None
                self._dispatch(message)
        except RemoteProtocolError:
            self._broken = True
            raise

    def _maybe_acknowledge(self) -> None:
        window = self._peer_window
        if window and self._bytes_received - self._last_ack_at >= window:
            self._last_ack_at = self._bytes_received
            self._send_control(_ACK, encode_acknowledgement(self._bytes_received))

    # -- sending ------------------------------------------------------------------------------

    def _send(self, csid: int, type_id: int, stream_id: int, timestamp: int, payload: bytes) -> None:
        self._out += self._writer.write(csid, type_id, stream_id, timestamp, payload)

    def _send_control(self, type_id: int, payload: bytes) -> None:
        self._send(CSID_CONTROL, type_id, 0, 0, payload)

    def _send_user_control(self, event_type: int, data: int, buffer_length: int = 0) -> None:
        self._send_control(_USER_CONTROL, encode_user_control(event_type, data, buffer_length))

    def _send_command(self, stream_id: int, name: str, transaction_id: float, *values: Any) -> None:
        self._send(CSID_COMMAND, _AMF0_COMMAND, stream_id, 0, amf0.encode(name, transaction_id, *values))

    def send_message(
        self,
        csid: int,
        type_id: int,
        stream_id: int,
        timestamp: int,
        payload: bytes | bytearray | memoryview,
    ) -> None:
        """Queue any message (format 0 first header, our chunk size; timestamp mod 2**32)."""
        self._check_alive()
        self._out += chunk_message(csid, type_id, stream_id, timestamp, payload, self._writer.chunk_size)

    def send_command(self, stream_id: int, name: str, transaction_id: float, command_object: Any, *args: Any) -> None:
        """Queue an AMF0 command ``name`` (chunk stream 3)."""
        self._check_alive()
        self._send_command(stream_id, name, transaction_id, command_object, *args)

    def send_ping_request(self, timestamp: int) -> None:
        """Queue a Ping Request; the answer surfaces as :class:`PingResponseReceived`."""
        self._check_alive()
        self._send_user_control(UserControlEvent.PING_REQUEST, timestamp & MASK32)

    def send_window_ack_size(self, size: int) -> None:
        """Queue a Window Acknowledgement Size (how often the peer should acknowledge)."""
        self._check_alive()
        self._send_control(_WINDOW, encode_window_ack_size(size))

    def set_chunk_size(self, size: int) -> None:
        """Queue a Set Chunk Size and cut everything queued after it at ``size``."""
        self._check_alive()
        self._out += self._writer.set_chunk_size(size, csid=CSID_CONTROL)

    # -- receiving ----------------------------------------------------------------------------

    def _clock(self, stream_id: int, raw: int) -> int:
        clock = self._clocks.get(stream_id)
        if clock is None:
            clock = self._clocks[stream_id] = TimestampUnwrapper()
        return clock.unwrap(raw)

    def _dispatch(self, message: RtmpMessage) -> None:
        type_id = message.type_id
        if type_id >= _AUDIO:  # commands, media, data: progress (not control, acks, pings)
            self.messages_handled += 1
        if type_id == _AUDIO or type_id == _VIDEO:
            self._on_media(message.stream_id, type_id, message.timestamp, message.payload)
        elif type_id == _AMF0_COMMAND:
            self._on_command(message.stream_id, message.payload)
        elif type_id == _AMF3_COMMAND:
            self._on_command(message.stream_id, _strip_amf3(message.payload))
        elif type_id == _AMF0_DATA:
            self._on_data(message.stream_id, message.timestamp, message.payload)
        elif type_id == _AMF3_DATA:
            self._on_data(message.stream_id, message.timestamp, _strip_amf3(message.payload))
        elif type_id == _AGGREGATE:
            if not self._wants_media(message.stream_id):
                self.dropped_messages += 1
                return
            for sub_type, stamp, body in self._split_aggregate(message):
                if sub_type == _AUDIO or sub_type == _VIDEO:
                    self._on_media(message.stream_id, sub_type, stamp, body)
                elif sub_type == _AMF0_DATA:
                    self._on_data(message.stream_id, stamp, body)
        elif type_id == _USER_CONTROL:
            control = decode_user_control(message.payload)
            if control.event_type == UserControlEvent.PING_REQUEST:
                self._send_user_control(UserControlEvent.PING_RESPONSE, control.data)
            self._on_user_control(control.event_type, control.data, control.buffer_length)
        elif type_id == _ACK:
            raw = decode_acknowledgement(message.payload)
            self._peer_acknowledged += (raw - self._peer_ack_raw) & MASK32
            self._peer_ack_raw = raw
            self._on_control(type_id, (raw,))
        elif type_id == _WINDOW:
            self._peer_window = decode_window_ack_size(message.payload)
            self._maybe_acknowledge()
            self._on_control(type_id, (self._peer_window,))
        elif type_id == _PEER_BW:
            self._peer_bandwidth = decode_set_peer_bandwidth(message.payload)
            self._on_control(type_id, self._peer_bandwidth)
        elif type_id == _SET_CHUNK_SIZE:
            self._on_control(type_id, (decode_set_chunk_size(message.payload),))
        elif type_id == _ABORT:
            pass  # applied by the reader
        else:
            self.dropped_messages += 1  # shared objects and unknown types

    def _decode_command(self, payload: bytes) -> tuple[str, float, Any, tuple[Any, ...]]:
        values = amf0.decode(payload)
        if not values or not isinstance(values[0], str):
            raise RemoteProtocolError("command message does not start with a command name")
        name = values[0]
        transaction_id = 0.0
        if len(values) > 1:
            tid = values[1]
            if isinstance(tid, bool) or not isinstance(tid, (int, float)):
                raise RemoteProtocolError(f"command {name!r} has a non-number transaction id")
            transaction_id = float(tid)
        command_object = values[2] if len(values) > 2 else None
        return name, transaction_id, command_object, tuple(values[3:])

    def _data_event(self, stream_id: int, raw_timestamp: int, payload: bytes) -> DataMessage:
        # Nothing is decoded: the @setDataFrame wrapper is recognised by its bytes.
        body = payload[len(_SET_DATA_FRAME) :] if payload.startswith(_SET_DATA_FRAME) else payload
        return DataMessage(stream_id, self._clock(stream_id, raw_timestamp), payload, body)

    def _split_aggregate(self, message: RtmpMessage) -> Iterator[tuple[int, int, bytes]]:
        """The ``(type_id, timestamp, payload)`` sub-messages of an aggregate message.

        Each sub-message is an FLV tag (11-byte header, body, 4-byte back pointer; the last
        back pointer may be missing). Sub-message times are rebased so that the first one is
        at the aggregate message's own timestamp. Every sub-message is held to the limit of
        its kind, as if it had come on its own, and an aggregate may hold at most
        :attr:`max_aggregate_parts` of them; the whole aggregate is checked before the first
        sub-message is handed out, so a bad one delivers nothing.
        """
        data = message.payload
        end = len(data)
        pos = 0
        first: int | None = None
        spans: list[tuple[int, int, int, int]] = []
        reader = self._reader
        while pos < end:
            if len(spans) >= self.max_aggregate_parts:
                raise RemoteProtocolError(f"aggregate message with more than {self.max_aggregate_parts} sub-messages")
            if pos + 11 > end:
                raise RemoteProtocolError("aggregate message ends inside a sub-message header")
            type_id = data[pos] & 0x1F
            size = (data[pos + 1] << 16) | (data[pos + 2] << 8) | data[pos + 3]
            stamp = (data[pos + 7] << 24) | (data[pos + 4] << 16) | (data[pos + 5] << 8) | data[pos + 6]
            pos += 11
            limit, kind = reader.limit_for(type_id)
            if size > limit:
                raise MessageTooLarge(f"aggregate sub-message ({kind})", size, limit)
            if pos + size > end:
                raise RemoteProtocolError("aggregate sub-message runs past the aggregate message")
            spans.append((type_id, stamp, pos, size))
            pos += size
            if end - pos >= 4:
                pos += 4
            elif pos != end:
                raise RemoteProtocolError("aggregate message ends inside a back pointer")
        base = message.timestamp
        for type_id, stamp, start, size in spans:
            if first is None:
                first = stamp
            yield type_id, (base + stamp - first) & MASK32, data[start : start + size]

    def _wants_media(self, stream_id: int) -> bool:
        """Whether media on ``stream_id`` is delivered (the server: only while publishing)."""
        return True

    def close(self) -> None:
        """The connection is over: give back every buffered byte (to a shared budget too)."""
        self._reader.close()

    # -- role hooks ---------------------------------------------------------------------------

    def _on_media(self, stream_id: int, type_id: int, timestamp: int, payload: bytes) -> None:
        raise NotImplementedError

    def _on_data(self, stream_id: int, timestamp: int, payload: bytes) -> None:
        raise NotImplementedError

    def _on_command(self, stream_id: int, payload: bytes) -> None:
        raise NotImplementedError

    def _on_user_control(self, event_type: int, data: int, buffer_length: int) -> None:
        pass

    def _on_control(self, type_id: int, values: tuple[int, ...]) -> None:
        pass


def _strip_amf3(payload: bytes) -> bytes:
    """The AMF0 part of an AMF3 command/data message (after its 0x00 format byte, if any)."""
    if payload[:1] == b"\x00":
        return payload[1:]
    return payload
