"""The RTMP command conversation after the handshake: a sans-IO server session (and a client).

:class:`ServerSession` is the server side of one RTMP connection once the handshake is done
(it receives the chunk stream bytes only). Feed it what the socket gives with
:meth:`~ServerSession.receive_data`, take events with :meth:`~ServerSession.next_event`
until it returns ``None``, answer the events that need a decision, and write what
:meth:`~ServerSession.data_to_send` returns. It never touches a socket.

What the session does by itself:

* applies the peer's Set Chunk Size and Abort Message (through its :class:`~.chunks.ChunkReader`);
* records the peer's Window Acknowledgement Size and sends an Acknowledgement (sequence number:
  bytes received, modulo 2**32) each time the received byte count crosses that window;
* records the Acknowledgements and Set Peer Bandwidth the peer sends
  (:attr:`~ServerSession.peer_acknowledged` can drive throttling);
* answers Ping Request with Ping Response;
* answers ``releaseStream``, ``FCPublish`` (``onFCPublish`` NetStream.Publish.Start, as common
  servers do), ``FCUnpublish``, ``FCSubscribe``, ``getStreamLength`` and ``createStream``, and
  ``_error`` for unknown commands that carry a transaction id;
* splits aggregate messages into their sub-messages, and unwraps AMF3 command and data
  messages (a 0x00 format byte followed by AMF0) into the same events as their AMF0 forms.

What needs a decision: a :class:`ConnectRequest` (answer :meth:`~ServerSession.accept_connect`
or :meth:`~ServerSession.reject_connect`), a :class:`PublishRequest`
(:meth:`~ServerSession.accept_publish` / :meth:`~ServerSession.reject_publish`) and a
:class:`PlayRequest` (:meth:`~ServerSession.accept_play` / :meth:`~ServerSession.reject_play`).
While one is unanswered the session is *paused*: :meth:`~ServerSession.next_event` returns
``None`` and parses nothing more, so that no reply to a later command can overtake the answer,
and no media arrives for a stream that is not accepted yet. Bytes received meanwhile are
buffered up to ``max_paused_input`` (a peer that sends more is misbehaving).

Chunk streams (outgoing): the session writes protocol control and user control messages on
chunk stream 2 (:data:`CSID_CONTROL`) and every command and data message of its own on chunk
stream 3 (:data:`CSID_COMMAND`), always with format 0 first headers. Chunk streams 4 (audio),
5 (data) and 6 (video) (:data:`CSID_AUDIO`, :data:`CSID_DATA`, :data:`CSID_VIDEO`) are
reserved for media. Because the session never compresses headers against earlier messages, the
adapter may interleave shared pre-chunked media (:func:`~.chunks.chunk_message` at
:attr:`~ServerSession.out_chunk_size`) with what :meth:`~ServerSession.data_to_send` returns,
on any chunk stream, provided it writes whole outputs in order: first ``data_to_send()``, then
its own bytes. After :meth:`~ServerSession.accept_connect` the outgoing chunk size changes
with the Set Chunk Size it queues, so pre-chunk with :attr:`~ServerSession.out_chunk_size`
read *after* that call and write ``data_to_send()`` first.

Timestamps: media and data events carry the message timestamp in milliseconds, *unwrapped*:
the 32-bit wire value is extended per message stream into an int that keeps growing past
2**32 (each timestamp is taken as the value nearest to the previous one of that message
stream; the first is the wire value). It goes below zero only if a peer steps back across
zero.

Error policy: any protocol violation by the peer raises
:class:`~arcly_trio.core.errors.RemoteProtocolError` (or its subclasses ``MessageTooLarge``
and ``AMF0Error``) from :meth:`~ServerSession.receive_data` or
:meth:`~ServerSession.next_event`: malformed chunks or AMF0, a command before ``connect`` or a
second ``connect``, ``publish``/``play`` on stream 0, too many streams, oversized messages.
After that the session is dead: every further call except :meth:`~ServerSession.data_to_send`
raises :class:`~arcly_trio.core.errors.LocalProtocolError`. Calling a method at the wrong
time (``accept_publish`` without a pending publish...) raises ``LocalProtocolError`` too.

:class:`ClientSession` plays the client role (connect, createStream, publish, play...) with the
same machinery. It exists for tests (this project's and its users'), not as a full client.
"""

from __future__ import annotations

import collections
import math
import urllib.parse
from collections.abc import Iterator
from typing import Any, Final

import attrs

from arcly_trio.core.errors import LocalProtocolError, MessageTooLarge, RemoteProtocolError
from arcly_trio.protocols.rtmp import amf0
from arcly_trio.protocols.rtmp.chunks import ChunkReader, ChunkWriter, RtmpMessage, chunk_message
from arcly_trio.protocols.rtmp.messages import (
    MessageType,
    PeerBandwidthLimit,
    UserControlEvent,
    decode_acknowledgement,
    decode_set_chunk_size,
    decode_set_peer_bandwidth,
    decode_user_control,
    decode_window_ack_size,
    encode_acknowledgement,
    encode_set_peer_bandwidth,
    encode_user_control,
    encode_window_ack_size,
)

__all__ = [
    "CSID_CONTROL",
    "CSID_COMMAND",
    "CSID_AUDIO",
    "CSID_DATA",
    "CSID_VIDEO",
    "Event",
    "ConnectRequest",
    "StreamCreated",
    "PublishRequest",
    "PlayRequest",
    "PauseRequest",
    "StreamDeleted",
    "StreamClosed",
    "StreamUnpublishRequested",
    "UnknownCommand",
    "MediaMessage",
    "DataMessage",
    "PingResponseReceived",
    "BufferLengthChanged",
    "CommandReceived",
    "UserControlReceived",
    "ControlReceived",
    "ServerSession",
    "ClientSession",
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

_MASK32: Final = 0xFFFFFFFF

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


# --------------------------------------------------------------------------------------------
# Events


class Event:
    """Base class of everything :meth:`ServerSession.next_event` (or the client's) returns."""

    __slots__ = ()


@attrs.frozen(slots=True)
class ConnectRequest(Event):
    """The client sent ``connect``; answer with ``accept_connect()`` or ``reject_connect()``.

    ``app`` is the command object's ``app`` without its query string and trailing ``/``;
    ``query`` merges the query strings of ``tcUrl`` and ``app`` (``app``'s win), e.g. from
    ``rtmp://host/live?token=x`` or an app of ``live?token=x``. ``arguments`` are the optional
    user arguments after the command object.
    """

    transaction_id: float
    app: str
    tc_url: str
    query: dict[str, str]
    command_object: dict[str, Any]
    arguments: tuple[Any, ...] = ()


@attrs.frozen(slots=True)
class StreamCreated(Event):
    """``createStream`` allocated message stream ``stream_id`` (already answered)."""

    stream_id: int
    transaction_id: float


@attrs.frozen(slots=True)
class PublishRequest(Event):
    """``publish`` on ``stream_id``; answer ``accept_publish()`` or ``reject_publish()``.

    ``name`` is the stream name without its query string, ``query`` the parsed query
    (``stream?key=x``); ``publish_type`` is ``live``, ``record`` or ``append`` as sent.
    """

    stream_id: int
    name: str
    query: dict[str, str]
    publish_type: str
    transaction_id: float


@attrs.frozen(slots=True)
class PlayRequest(Event):
    """``play`` on ``stream_id``; answer ``accept_play()`` or ``reject_play()``.

    ``start`` (seconds, or -2 any / -1 live; FFmpeg sends -2000) and ``duration`` are as sent,
    defaulting to -2 and -1; ``reset`` defaults to true.
    """

    stream_id: int
    name: str
    query: dict[str, str]
    start: float
    duration: float
    reset: bool
    transaction_id: float


@attrs.frozen(slots=True)
class PauseRequest(Event):
    """``pause`` on ``stream_id``: ``paused`` true to pause, false to resume at ``position`` ms.

    Answer with ``accept_pause()`` if the adapter supports pausing.
    """

    stream_id: int
    paused: bool
    position: float


@attrs.frozen(slots=True)
class StreamDeleted(Event):
    """``deleteStream``: message stream ``stream_id`` is gone (ends its publish or play)."""

    stream_id: int


@attrs.frozen(slots=True)
class StreamClosed(Event):
    """``closeStream`` on ``stream_id``: its publish or play ended; the stream id stays valid."""

    stream_id: int


@attrs.frozen(slots=True)
class StreamUnpublishRequested(Event):
    """``FCUnpublish`` of ``name`` (already answered); ``deleteStream`` usually follows."""

    name: str
    transaction_id: float


@attrs.frozen(slots=True)
class UnknownCommand(Event):
    """A command the session does not know (already answered ``_error`` if it had a tid)."""

    stream_id: int
    name: str
    transaction_id: float
    command_object: Any
    arguments: tuple[Any, ...]


@attrs.frozen(slots=True)
class MediaMessage(Event):
    """An audio (8) or video (9) message; ``timestamp`` in ms, unwrapped (module docstring)."""

    stream_id: int
    type_id: int
    timestamp: int
    payload: bytes


@attrs.frozen(slots=True)
class DataMessage(Event):
    """An AMF0 data message (AMF3 data is unwrapped to this too).

    ``values`` are the decoded AMF0 values, ``payload`` the AMF0 bytes as received, and
    ``body`` the payload without a leading ``@setDataFrame`` string: for
    ``@setDataFrame onMetaData {...}`` it is the ``onMetaData`` body the kernel keeps.
    """

    stream_id: int
    timestamp: int
    values: list[Any]
    payload: bytes
    body: bytes


@attrs.frozen(slots=True)
class PingResponseReceived(Event):
    """The peer answered a Ping Request of ours with ``timestamp``."""

    timestamp: int


@attrs.frozen(slots=True)
class BufferLengthChanged(Event):
    """The player told its buffer length (user control Set Buffer Length), in ms."""

    stream_id: int
    buffer_length: int


@attrs.frozen(slots=True)
class CommandReceived(Event):
    """(Client side) a command from the server: ``_result``, ``_error``, ``onStatus``..."""

    stream_id: int
    name: str
    transaction_id: float
    command_object: Any
    arguments: tuple[Any, ...]

    @property
    def info(self) -> dict[str, Any]:
        """The first argument when it is an object (``onStatus``/``_result`` information)."""
        if self.arguments and isinstance(self.arguments[0], dict):
            return self.arguments[0]
        return {}


@attrs.frozen(slots=True)
class UserControlReceived(Event):
    """(Client side) a user control event (Stream Begin, Stream EOF, ...)."""

    event_type: int
    data: int
    buffer_length: int = 0


@attrs.frozen(slots=True)
class ControlReceived(Event):
    """(Client side) a protocol control message: ``values`` are its decoded fields.

    Set Chunk Size, Acknowledgement and Window Acknowledgement Size give one value; Set Peer
    Bandwidth gives ``(size, limit type)``.
    """

    type_id: int
    values: tuple[int, ...]


# --------------------------------------------------------------------------------------------
# Helpers


def _split_query(text: str) -> tuple[str, dict[str, str]]:
    """``'live?token=x&a'`` -> ``('live', {'token': 'x', 'a': ''})``."""
    path, sep, query = text.partition("?")
    if not sep:
        return path, {}
    return path, dict(urllib.parse.parse_qsl(query, keep_blank_values=True))


def _number(value: object, default: float) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return default


def _stream_id_arg(value: object) -> int | None:
    """A stream id sent as an AMF0 number, or ``None`` if it is not a plausible one."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if not math.isfinite(value) or value < 0 or value > _MASK32 or value != int(value):
        return None
    return int(value)


def _split_aggregate(message: RtmpMessage) -> list[tuple[int, int, bytes]]:
    """The ``(type_id, timestamp, payload)`` sub-messages of an aggregate message.

    Each sub-message is an FLV tag (11-byte header, body, 4-byte back pointer; the last back
    pointer may be missing). Sub-message times are rebased so that the first one is at the
    aggregate message's own timestamp.
    """
    data = message.payload
    end = len(data)
    pos = 0
    first: int | None = None
    out: list[tuple[int, int, bytes]] = []
    while pos < end:
        if pos + 11 > end:
            raise RemoteProtocolError("aggregate message ends inside a sub-message header")
        type_id = data[pos] & 0x1F
        size = (data[pos + 1] << 16) | (data[pos + 2] << 8) | data[pos + 3]
        stamp = (data[pos + 7] << 24) | (data[pos + 4] << 16) | (data[pos + 5] << 8) | data[pos + 6]
        pos += 11
        if pos + size > end:
            raise RemoteProtocolError("aggregate sub-message runs past the aggregate message")
        body = data[pos : pos + size]
        pos += size
        if end - pos >= 4:
            pos += 4
        elif pos != end:
            raise RemoteProtocolError("aggregate message ends inside a back pointer")
        if first is None:
            first = stamp
        out.append((type_id, (message.timestamp + stamp - first) & _MASK32, body))
    return out


class _Clock:
    """Unwraps 32-bit timestamps of one message stream into an extended int."""

    __slots__ = ("raw", "value")

    def __init__(self, raw: int) -> None:
        self.raw = raw
        self.value = raw

    def advance(self, raw: int) -> int:
        delta = (raw - self.raw) & _MASK32
        if delta >= 0x80000000:
            delta -= 0x100000000
        self.raw = raw
        self.value += delta
        return self.value


# --------------------------------------------------------------------------------------------
# The common machinery of both roles


class _Endpoint:
    """Chunk stream in and out, protocol control, acknowledgements, pings, timestamp clocks."""

    def __init__(
        self,
        *,
        max_chunk_size: int,
        max_video_size: int,
        max_audio_size: int,
        max_other_size: int,
        max_partial_messages: int,
        initial_bytes_received: int,
    ) -> None:
        self._reader = ChunkReader(
            max_chunk_size=max_chunk_size,
            max_video_size=max_video_size,
            max_audio_size=max_audio_size,
            max_other_size=max_other_size,
            max_partial_messages=max_partial_messages,
        )
        self._writer = ChunkWriter()
        self._out = bytearray()
        self._events: collections.deque[Event] = collections.deque()
        self._bytes_received = initial_bytes_received
        self._last_ack_at = initial_bytes_received
        self._peer_window: int | None = None
        self._peer_ack_raw = 0
        self._peer_acknowledged = 0
        self._peer_bandwidth: tuple[int, int] | None = None
        self._clocks: dict[int, _Clock] = {}
        self._broken = False
        self.dropped_messages = 0

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

    def _send(
        self, csid: int, type_id: int, stream_id: int, timestamp: int, payload: bytes
    ) -> None:
        self._out += self._writer.write(csid, type_id, stream_id, timestamp, payload)

    def _send_control(self, type_id: int, payload: bytes) -> None:
        self._send(CSID_CONTROL, type_id, 0, 0, payload)

    def _send_user_control(self, event_type: int, data: int, buffer_length: int = 0) -> None:
        self._send_control(_USER_CONTROL, encode_user_control(event_type, data, buffer_length))

    def _send_command(self, stream_id: int, name: str, transaction_id: float, *values: Any) -> None:
        self._send(
            CSID_COMMAND, _AMF0_COMMAND, stream_id, 0, amf0.encode(name, transaction_id, *values)
        )

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
        self._out += chunk_message(
            csid, type_id, stream_id, timestamp, payload, self._writer.chunk_size
        )

    def send_command(
        self, stream_id: int, name: str, transaction_id: float, command_object: Any, *args: Any
    ) -> None:
        """Queue an AMF0 command ``name`` (chunk stream 3)."""
        self._check_alive()
        self._send_command(stream_id, name, transaction_id, command_object, *args)

    def send_ping_request(self, timestamp: int) -> None:
        """Queue a Ping Request; the answer surfaces as :class:`PingResponseReceived`."""
        self._check_alive()
        self._send_user_control(UserControlEvent.PING_REQUEST, timestamp & _MASK32)

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
            self._clocks[stream_id] = _Clock(raw)
            return raw
        return clock.advance(raw)

    def _dispatch(self, message: RtmpMessage) -> None:
        type_id = message.type_id
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
            for sub_type, stamp, body in _split_aggregate(message):
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
            self._peer_acknowledged += (raw - self._peer_ack_raw) & _MASK32
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
        values = amf0.decode(payload)
        body = payload
        if values and values[0] == "@setDataFrame":
            _, offset = amf0.decode_one(payload)
            body = payload[offset:]
        return DataMessage(stream_id, self._clock(stream_id, raw_timestamp), values, payload, body)

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


# --------------------------------------------------------------------------------------------
# Server


_IDLE: Final = "idle"
_PUBLISH_PENDING: Final = "publish-pending"
_PUBLISHING: Final = "publishing"
_PLAY_PENDING: Final = "play-pending"
_PLAYING: Final = "playing"


class _Stream:
    __slots__ = ("state", "name", "reset")

    def __init__(self) -> None:
        self.state = _IDLE
        self.name = ""
        self.reset = True


class ServerSession(_Endpoint):
    """The server side of one RTMP connection after the handshake (sans-IO).

    See the module docstring for what it answers by itself, what needs a decision, which chunk
    streams it uses, how timestamps are unwrapped and what it raises.

    Arguments (all keyword):

    * ``chunk_size``: the outgoing chunk size announced on ``accept_connect()`` (>= 4096);
    * ``window_ack_size`` and ``peer_bandwidth``: what ``accept_connect()`` announces
      (Window Acknowledgement Size, and Set Peer Bandwidth with limit type dynamic);
    * ``max_streams``: message streams a connection may hold at once (``createStream``);
    * ``max_paused_input``: bytes that may pile up unparsed while a decision is pending;
    * ``initial_bytes_received``: bytes to count as received before the first
      ``receive_data`` (e.g. the handshake's, if the acknowledgements should include them);
    * ``fms_version`` and ``capabilities``: the server identity ``_result`` of ``connect``
      reports;
    * the :class:`~.chunks.ChunkReader` limits ``max_chunk_size``, ``max_video_size``,
      ``max_audio_size``, ``max_other_size`` and ``max_partial_messages``.
    """

    def __init__(
        self,
        *,
        chunk_size: int = 4096,
        window_ack_size: int = 2_500_000,
        peer_bandwidth: int = 2_500_000,
        max_streams: int = 16,
        max_paused_input: int = 4 * 1024 * 1024,
        initial_bytes_received: int = 0,
        fms_version: str = "FMS/3,0,1,123",
        capabilities: float = 31.0,
        max_chunk_size: int = 65536,
        max_video_size: int = 8 * 1024 * 1024,
        max_audio_size: int = 1024 * 1024,
        max_other_size: int = 64 * 1024,
        max_partial_messages: int = 64,
    ) -> None:
        super().__init__(
            max_chunk_size=max_chunk_size,
            max_video_size=max_video_size,
            max_audio_size=max_audio_size,
            max_other_size=max_other_size,
            max_partial_messages=max_partial_messages,
            initial_bytes_received=initial_bytes_received,
        )
        if not 4096 <= chunk_size <= 0x7FFFFFFF:
            raise LocalProtocolError(f"chunk_size must be at least 4096, not {chunk_size}")
        if max_streams < 1:
            raise LocalProtocolError("max_streams must be positive")
        self._chunk_size_to_announce = chunk_size
        self._window_ack_size = window_ack_size
        self._peer_bandwidth_to_announce = peer_bandwidth
        self.max_streams = max_streams
        self.max_paused_input = max_paused_input
        self._fms_version = fms_version
        self._capabilities = capabilities
        self._state = "new"  # new, connect-pending, connected, rejected
        self._connect_tid = 0.0
        self._pending: tuple[str, int] | None = None
        self._streams: dict[int, _Stream] = {}
        self._next_stream_id = 1
        self._app: str | None = None

    # -- properties ---------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """``accept_connect()`` was called."""
        return self._state == "connected"

    @property
    def app(self) -> str | None:
        """The application the client connected to (once it sent ``connect``)."""
        return self._app

    @property
    def awaiting_decision(self) -> tuple[str, int] | None:
        """``("connect" | "publish" | "play", stream_id)`` while an answer is pending, else None."""
        return self._pending

    @property
    def streams(self) -> dict[int, str]:
        """Allocated message stream ids and their states (idle, publishing, playing...)."""
        return {stream_id: stream.state for stream_id, stream in self._streams.items()}

    # -- input --------------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Feed received bytes; raises ``MessageTooLarge`` if too much piles up while paused."""
        super().receive_data(data)
        if self._pending is not None and self._reader.unparsed_bytes > self.max_paused_input:
            self._broken = True
            raise MessageTooLarge(
                "input while a decision is pending",
                self._reader.unparsed_bytes,
                self.max_paused_input,
            )

    def _paused(self) -> bool:
        return self._pending is not None

    def _on_media(self, stream_id: int, type_id: int, timestamp: int, payload: bytes) -> None:
        stream = self._streams.get(stream_id)
        if stream is None or stream.state != _PUBLISHING:
            self.dropped_messages += 1
            return
        self._events.append(
            MediaMessage(stream_id, type_id, self._clock(stream_id, timestamp), payload)
        )

    def _on_data(self, stream_id: int, timestamp: int, payload: bytes) -> None:
        stream = self._streams.get(stream_id)
        if stream is None or stream.state != _PUBLISHING:
            self.dropped_messages += 1
            return
        self._events.append(self._data_event(stream_id, timestamp, payload))

    def _on_user_control(self, event_type: int, data: int, buffer_length: int) -> None:
        if event_type == UserControlEvent.PING_RESPONSE:
            self._events.append(PingResponseReceived(data))
        elif event_type == UserControlEvent.SET_BUFFER_LENGTH:
            self._events.append(BufferLengthChanged(data, buffer_length))

    def _on_command(self, stream_id: int, payload: bytes) -> None:
        name, tid, command_object, args = self._decode_command(payload)
        if self._state != "connected":
            if self._state == "new" and name == "connect":
                self._on_connect(tid, command_object, args)
                return
            if name == "connect":
                raise RemoteProtocolError("a second connect on one connection")
            raise RemoteProtocolError(f"command {name!r} before a successful connect")
        if name == "connect":
            raise RemoteProtocolError("a second connect on one connection")
        handler = _HANDLERS.get(name)
        if handler is None:
            self._unknown(stream_id, name, tid, command_object, args)
        else:
            handler(self, stream_id, tid, args)

    def _on_connect(self, tid: float, command_object: Any, args: tuple[Any, ...]) -> None:
        if not isinstance(command_object, dict):
            raise RemoteProtocolError("connect without a command object")
        app = command_object.get("app", "")
        if not isinstance(app, str):
            raise RemoteProtocolError("connect with a non-string app")
        tc_url = command_object.get("tcUrl", "")
        if not isinstance(tc_url, str):
            tc_url = ""
        app_path, app_query = _split_query(app)
        _, tc_query = _split_query(tc_url)
        app_path = app_path.rstrip("/")
        self._app = app_path
        self._state = "connect-pending"
        self._connect_tid = tid
        self._pending = ("connect", 0)
        self._events.append(
            ConnectRequest(tid, app_path, tc_url, {**tc_query, **app_query}, command_object, args)
        )

    def _unknown(
        self, stream_id: int, name: str, tid: float, command_object: Any, args: tuple[Any, ...]
    ) -> None:
        if tid and not name.startswith(("_", "on")):
            self._send_command(
                stream_id,
                "_error",
                tid,
                None,
                {
                    "level": "error",
                    "code": "NetConnection.Call.Failed",
                    "description": f"Method not found ({name}).",
                },
            )
        self._events.append(UnknownCommand(stream_id, name, tid, command_object, args))

    def _release_stream(self, stream_id: int, tid: float, args: tuple[Any, ...]) -> None:
        if tid:
            self._send_command(stream_id, "_result", tid, None, amf0.UNDEFINED)

    def _fc_publish(self, stream_id: int, tid: float, args: tuple[Any, ...]) -> None:
        name = args[0] if args and isinstance(args[0], str) else ""
        self._send_command(
            stream_id,
            "onFCPublish",
            0,
            None,
            {"code": "NetStream.Publish.Start", "description": name},
        )
        if tid:
            self._send_command(stream_id, "_result", tid, None, amf0.UNDEFINED)

    def _fc_unpublish(self, stream_id: int, tid: float, args: tuple[Any, ...]) -> None:
        name = args[0] if args and isinstance(args[0], str) else ""
        self._send_command(
            stream_id,
            "onFCUnpublish",
            0,
            None,
            {"code": "NetStream.Unpublish.Success", "description": name},
        )
        if tid:
            self._send_command(stream_id, "_result", tid, None, amf0.UNDEFINED)
        self._events.append(StreamUnpublishRequested(_split_query(name)[0], tid))

    def _fc_subscribe(self, stream_id: int, tid: float, args: tuple[Any, ...]) -> None:
        if tid:
            self._send_command(stream_id, "_result", tid, None, amf0.UNDEFINED)

    def _get_stream_length(self, stream_id: int, tid: float, args: tuple[Any, ...]) -> None:
        if tid:
            self._send_command(stream_id, "_result", tid, None, 0.0)

    def _allocate(self, stream_id: int) -> _Stream:
        if len(self._streams) >= self.max_streams:
            raise RemoteProtocolError(f"more than {self.max_streams} streams on one connection")
        stream = self._streams[stream_id] = _Stream()
        return stream

    def _create_stream(self, stream_id: int, tid: float, args: tuple[Any, ...]) -> None:
        while self._next_stream_id in self._streams:
            self._next_stream_id += 1
        new_id = self._next_stream_id
        if new_id > _MASK32:
            raise RemoteProtocolError("message stream ids exhausted")
        self._allocate(new_id)
        self._next_stream_id += 1
        self._send_command(stream_id, "_result", tid, None, float(new_id))
        self._events.append(StreamCreated(new_id, tid))

    def _stream_for(self, stream_id: int, command: str) -> _Stream:
        if stream_id == 0:
            raise RemoteProtocolError(f"{command} on message stream 0")
        stream = self._streams.get(stream_id)
        if stream is None:
            # Lenient: a client that skipped createStream gets the stream it names.
            stream = self._allocate(stream_id)
        return stream

    def _publish(self, stream_id: int, tid: float, args: tuple[Any, ...]) -> None:
        stream = self._stream_for(stream_id, "publish")
        if not args or not isinstance(args[0], str):
            raise RemoteProtocolError("publish without a stream name")
        name, query = _split_query(args[0])
        publish_type = args[1] if len(args) > 1 and isinstance(args[1], str) else "live"
        if stream.state != _IDLE:
            self._status(stream_id, "error", "NetStream.Publish.BadName", "Stream is busy.")
            return
        stream.state = _PUBLISH_PENDING
        stream.name = name
        self._pending = ("publish", stream_id)
        self._events.append(PublishRequest(stream_id, name, query, publish_type, tid))

    def _play(self, stream_id: int, tid: float, args: tuple[Any, ...]) -> None:
        stream = self._stream_for(stream_id, "play")
        if not args or not isinstance(args[0], str):
            raise RemoteProtocolError("play without a stream name")
        name, query = _split_query(args[0])
        start = _number(args[1] if len(args) > 1 else None, -2.0)
        duration = _number(args[2] if len(args) > 2 else None, -1.0)
        reset = True
        if len(args) > 3 and isinstance(args[3], (bool, int, float)):
            reset = bool(args[3])
        if stream.state != _IDLE:
            self._status(stream_id, "error", "NetStream.Play.Failed", "Stream is busy.")
            return
        stream.state = _PLAY_PENDING
        stream.name = name
        stream.reset = reset
        self._pending = ("play", stream_id)
        self._events.append(PlayRequest(stream_id, name, query, start, duration, reset, tid))

    def _pause(self, stream_id: int, tid: float, args: tuple[Any, ...]) -> None:
        if stream_id not in self._streams:
            return
        paused = bool(args[0]) if args and isinstance(args[0], (bool, int, float)) else True
        position = _number(args[1] if len(args) > 1 else None, 0.0)
        self._events.append(PauseRequest(stream_id, paused, position))

    def _delete_stream(self, stream_id: int, tid: float, args: tuple[Any, ...]) -> None:
        target = _stream_id_arg(args[0]) if args else None
        if target is None or target not in self._streams:
            return
        del self._streams[target]
        self._clocks.pop(target, None)
        self._events.append(StreamDeleted(target))

    def _close_stream(self, stream_id: int, tid: float, args: tuple[Any, ...]) -> None:
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        stream.state = _IDLE
        self._clocks.pop(stream_id, None)
        self._events.append(StreamClosed(stream_id))

    # -- answers ------------------------------------------------------------------------------

    def _status(
        self, stream_id: int, level: str, code: str, description: str, **extra: Any
    ) -> None:
        info: dict[str, Any] = {"level": level, "code": code, "description": description}
        info.update(extra)
        self._send_command(stream_id, "onStatus", 0, None, info)

    def _take_pending(self, kind: str, stream_id: int = 0) -> None:
        self._check_alive()
        if self._pending != (kind, stream_id):
            raise LocalProtocolError(
                f"no {kind} request pending on stream {stream_id} (pending: {self._pending})"
            )
        self._pending = None

    def accept_connect(
        self,
        *,
        properties: dict[str, Any] | None = None,
        information: dict[str, Any] | None = None,
    ) -> None:
        """Accept the pending ``connect``.

        Queues Window Acknowledgement Size, Set Peer Bandwidth (dynamic), Set Chunk Size (the
        ``chunk_size`` argument, from now on :attr:`out_chunk_size`) and ``_result`` with
        ``{fmsVer, capabilities, mode}`` and ``{level: status, code:
        NetConnection.Connect.Success, description, objectEncoding: 0}``; ``properties`` and
        ``information`` add fields to those two objects.
        """
        self._take_pending("connect")
        self._state = "connected"
        self._send_control(_WINDOW, encode_window_ack_size(self._window_ack_size))
        self._send_control(
            _PEER_BW,
            encode_set_peer_bandwidth(self._peer_bandwidth_to_announce, PeerBandwidthLimit.DYNAMIC),
        )
        self._out += self._writer.set_chunk_size(self._chunk_size_to_announce, csid=CSID_CONTROL)
        props: dict[str, Any] = {
            "fmsVer": self._fms_version,
            "capabilities": self._capabilities,
            "mode": 1.0,
        }
        props.update(properties or {})
        info: dict[str, Any] = {
            "level": "status",
            "code": "NetConnection.Connect.Success",
            "description": "Connection succeeded.",
            "objectEncoding": 0.0,
        }
        info.update(information or {})
        self._send_command(0, "_result", self._connect_tid, props, info)

    def reject_connect(
        self,
        description: str = "Connection rejected.",
        *,
        code: str = "NetConnection.Connect.Rejected",
    ) -> None:
        """Reject the pending ``connect`` with ``_error`` (level error, ``code``).

        The connection should then be closed once :meth:`data_to_send` is written; any further
        command from the peer is a ``RemoteProtocolError``.
        """
        self._take_pending("connect")
        self._state = "rejected"
        self._send_command(
            0,
            "_error",
            self._connect_tid,
            None,
            {"level": "error", "code": code, "description": description},
        )

    def accept_publish(self, stream_id: int) -> None:
        """Accept the pending ``publish``: Stream Begin, onStatus NetStream.Publish.Start."""
        self._take_pending("publish", stream_id)
        stream = self._streams[stream_id]
        stream.state = _PUBLISHING
        self._send_user_control(UserControlEvent.STREAM_BEGIN, stream_id)
        self._status(
            stream_id,
            "status",
            "NetStream.Publish.Start",
            f"{stream.name} is now published.",
            details=stream.name,
        )

    def reject_publish(
        self,
        stream_id: int,
        code: str = "NetStream.Publish.BadName",
        description: str = "Publishing refused.",
    ) -> None:
        """Refuse the pending ``publish`` with an onStatus of level error.

        Codes real servers use: ``NetStream.Publish.BadName`` (name in use or invalid, the
        default), ``NetStream.Publish.Denied`` (not authorised), ``NetStream.Publish.Rejected``.
        The stream goes back to idle.
        """
        self._take_pending("publish", stream_id)
        self._streams[stream_id].state = _IDLE
        self._status(stream_id, "error", code, description)

    def accept_play(self, stream_id: int) -> None:
        """Accept the pending ``play``.

        Queues Stream Begin, onStatus NetStream.Play.Reset (if the request's ``reset``),
        onStatus NetStream.Play.Start and the ``|RtmpSampleAccess`` data message.
        """
        self._take_pending("play", stream_id)
        stream = self._streams[stream_id]
        stream.state = _PLAYING
        self._send_user_control(UserControlEvent.STREAM_BEGIN, stream_id)
        if stream.reset:
            self._status(
                stream_id,
                "status",
                "NetStream.Play.Reset",
                f"Playing and resetting {stream.name}.",
                details=stream.name,
            )
        self._status(
            stream_id,
            "status",
            "NetStream.Play.Start",
            f"Started playing {stream.name}.",
            details=stream.name,
        )
        self._send(
            CSID_COMMAND, _AMF0_DATA, stream_id, 0, amf0.encode("|RtmpSampleAccess", True, True)
        )

    def reject_play(
        self,
        stream_id: int,
        code: str = "NetStream.Play.StreamNotFound",
        description: str | None = None,
    ) -> None:
        """Refuse the pending ``play`` with an onStatus of level error; the stream goes idle.

        Codes: ``NetStream.Play.StreamNotFound`` (the default), ``NetStream.Play.Failed``.
        """
        self._take_pending("play", stream_id)
        stream = self._streams[stream_id]
        stream.state = _IDLE
        if description is None:
            description = f"No such stream: {stream.name}."
        self._status(stream_id, "error", code, description)

    def accept_pause(self, stream_id: int, paused: bool) -> None:
        """Answer a :class:`PauseRequest` as nginx-rtmp does.

        Pausing: Stream EOF and onStatus NetStream.Pause.Notify; resuming: Stream Begin and
        onStatus NetStream.Unpause.Notify.
        """
        self._check_alive()
        if paused:
            self._send_user_control(UserControlEvent.STREAM_EOF, stream_id)
            self._status(stream_id, "status", "NetStream.Pause.Notify", "Paused live.")
        else:
            self._send_user_control(UserControlEvent.STREAM_BEGIN, stream_id)
            self._status(stream_id, "status", "NetStream.Unpause.Notify", "Unpaused live.")

    def send_stream_begin(self, stream_id: int) -> None:
        """Queue a user control Stream Begin."""
        self._check_alive()
        self._send_user_control(UserControlEvent.STREAM_BEGIN, stream_id)

    def send_stream_eof(self, stream_id: int) -> None:
        """Queue a user control Stream EOF (playback of ``stream_id`` is over)."""
        self._check_alive()
        self._send_user_control(UserControlEvent.STREAM_EOF, stream_id)

    def send_on_status(
        self, stream_id: int, level: str, code: str, description: str, **extra: Any
    ) -> None:
        """Queue ``onStatus(0, null, {level, code, description, **extra})`` on ``stream_id``."""
        self._check_alive()
        self._status(stream_id, level, code, description, **extra)

    def send_unpublish_notify(
        self, stream_id: int, description: str = "Stream unpublished."
    ) -> None:
        """Tell a player its stream ended: onStatus NetStream.Play.UnpublishNotify, Stream EOF.

        FFmpeg ends its input on that status.
        """
        self._check_alive()
        self._status(stream_id, "status", "NetStream.Play.UnpublishNotify", description)
        self._send_user_control(UserControlEvent.STREAM_EOF, stream_id)


_HANDLERS: Final[dict[str, Any]] = {
    "releaseStream": ServerSession._release_stream,
    "FCPublish": ServerSession._fc_publish,
    "FCUnpublish": ServerSession._fc_unpublish,
    "FCSubscribe": ServerSession._fc_subscribe,
    "getStreamLength": ServerSession._get_stream_length,
    "createStream": ServerSession._create_stream,
    "publish": ServerSession._publish,
    "play": ServerSession._play,
    "pause": ServerSession._pause,
    "deleteStream": ServerSession._delete_stream,
    "closeStream": ServerSession._close_stream,
}


# --------------------------------------------------------------------------------------------
# Client (for tests)


class ClientSession(_Endpoint):
    """A minimal client side of an RTMP connection after the handshake (sans-IO), for tests.

    Each command method queues the command and returns its transaction id. Everything the
    server sends surfaces as an event: :class:`CommandReceived`, :class:`UserControlReceived`,
    :class:`ControlReceived` (Set Chunk Size, Window Acknowledgement Size, Set Peer Bandwidth,
    Acknowledgement), :class:`MediaMessage` and :class:`DataMessage` (on any stream).
    Ping Requests are answered and Acknowledgements sent by the common machinery. Errors as in
    :class:`ServerSession`.
    """

    def __init__(
        self,
        *,
        max_chunk_size: int = 65536,
        max_video_size: int = 8 * 1024 * 1024,
        max_audio_size: int = 1024 * 1024,
        max_other_size: int = 64 * 1024,
        max_partial_messages: int = 64,
    ) -> None:
        super().__init__(
            max_chunk_size=max_chunk_size,
            max_video_size=max_video_size,
            max_audio_size=max_audio_size,
            max_other_size=max_other_size,
            max_partial_messages=max_partial_messages,
            initial_bytes_received=0,
        )
        self._transactions = 0

    def _on_media(self, stream_id: int, type_id: int, timestamp: int, payload: bytes) -> None:
        self._events.append(
            MediaMessage(stream_id, type_id, self._clock(stream_id, timestamp), payload)
        )

    def _on_data(self, stream_id: int, timestamp: int, payload: bytes) -> None:
        self._events.append(self._data_event(stream_id, timestamp, payload))

    def _on_command(self, stream_id: int, payload: bytes) -> None:
        name, tid, command_object, args = self._decode_command(payload)
        self._events.append(CommandReceived(stream_id, name, tid, command_object, args))

    def _on_user_control(self, event_type: int, data: int, buffer_length: int) -> None:
        self._events.append(UserControlReceived(event_type, data, buffer_length))

    def _on_control(self, type_id: int, values: tuple[int, ...]) -> None:
        self._events.append(ControlReceived(type_id, values))

    def call(
        self,
        name: str,
        *args: Any,
        stream_id: int = 0,
        command_object: Any = None,
        transaction_id: float | None = None,
    ) -> float:
        """Queue any command; a new transaction id is used unless one is given."""
        self._check_alive()
        if transaction_id is None:
            self._transactions += 1
            transaction_id = float(self._transactions)
        self._send_command(stream_id, name, transaction_id, command_object, *args)
        return transaction_id

    def connect(
        self, app: str, tc_url: str | None = None, *, extra: dict[str, Any] | None = None
    ) -> float:
        """Queue ``connect`` (FFmpeg-like command object plus ``extra``)."""
        command_object: dict[str, Any] = {
            "app": app,
            "type": "nonprivate",
            "flashVer": "FMLE/3.0 (compatible; arcly-trio)",
            "tcUrl": tc_url if tc_url is not None else f"rtmp://localhost/{app}",
        }
        command_object.update(extra or {})
        return self.call("connect", command_object=command_object)

    def release_stream(self, name: str) -> float:
        return self.call("releaseStream", name)

    def fc_publish(self, name: str) -> float:
        return self.call("FCPublish", name)

    def fc_unpublish(self, name: str) -> float:
        return self.call("FCUnpublish", name)

    def create_stream(self) -> float:
        return self.call("createStream")

    def publish(self, stream_id: int, name: str, publish_type: str = "live") -> None:
        self.call("publish", name, publish_type, stream_id=stream_id, transaction_id=0.0)

    def play(
        self,
        stream_id: int,
        name: str,
        start: float = -2.0,
        duration: float = -1.0,
        reset: bool = True,
    ) -> None:
        self.call(
            "play", name, start, duration, reset, stream_id=stream_id, transaction_id=0.0
        )

    def pause(self, stream_id: int, paused: bool, position: float = 0.0) -> None:
        self.call("pause", paused, position, stream_id=stream_id, transaction_id=0.0)

    def close_stream(self, stream_id: int) -> None:
        self.call("closeStream", stream_id=stream_id, transaction_id=0.0)

    def delete_stream(self, stream_id: int) -> None:
        self.call("deleteStream", float(stream_id), transaction_id=0.0)

    def send_media(
        self,
        stream_id: int,
        type_id: int,
        timestamp: int,
        payload: bytes,
        *,
        csid: int | None = None,
    ) -> None:
        """Queue an audio (8) or video (9) message on its reserved chunk stream."""
        if csid is None:
            csid = CSID_AUDIO if type_id == _AUDIO else CSID_VIDEO
        self.send_message(csid, type_id, stream_id, timestamp, payload)

    def send_data(self, stream_id: int, timestamp: int, *values: Any) -> None:
        """Queue an AMF0 data message (e.g. ``"@setDataFrame", "onMetaData", {...}``)."""
        self.send_message(CSID_DATA, _AMF0_DATA, stream_id, timestamp, amf0.encode(*values))

    def send_set_buffer_length(self, stream_id: int, buffer_length: int) -> None:
        """Queue a user control Set Buffer Length (as FFmpeg does after ``play``)."""
        self._check_alive()
        self._send_user_control(UserControlEvent.SET_BUFFER_LENGTH, stream_id, buffer_length)
