"""The RTMP chunk stream (spec sections 5.3 and 5.4): messages cut into chunks, and back.

An RTMP connection, once the handshake is over, is a sequence of *chunks*. Each chunk has a
basic header (format 0-3 and chunk stream id 2..65599, in 1 to 3 bytes), a message header
whose size depends on the format (11, 7, 3 or 0 bytes), an optional 4-byte extended timestamp
and up to *chunk size* bytes of one message's payload. Formats 1-3 compress the header against
the previous one of the same chunk stream.

:class:`ChunkReader` turns received bytes into :class:`RtmpMessage` objects. It parses through
a buffer with commit and rollback (the wsproto ``frame_protocol`` pattern), so any split of the
byte stream gives the same messages. It applies the peer's Set Chunk Size and Abort Message
itself, the moment it completes them, since they govern how the following chunks are read (it
still returns them, for the record).

Timestamps, extended timestamps and type 3 headers follow FFmpeg (``rtmppkt.c``) and librtmp,
which agree:

* a format 0 header carries the absolute timestamp, formats 1 and 2 a delta; the field that a
  header carried (absolute or delta, extended when the 24-bit field is 0xFFFFFF) is remembered
  per chunk stream;
* a format 3 header that starts a new message reuses that remembered field as its delta (so
  after a format 0 header of time T, a format 3 message is at T + T, exactly as in FFmpeg and
  librtmp);
* whenever the remembered field was extended, every format 3 chunk carries the 4-byte extended
  timestamp: continuation chunks (its value is read and ignored) and new messages (its value
  is the delta);
* timestamps are 32-bit and wrap: arithmetic is modulo 2**32 (unwrapping into an ever-growing
  value is the session's business, see :mod:`.session`).

A chunk stream whose first header has format 1 (librtmp sends its first control messages that
way) starts from message stream 0 and time 0; one whose first header has format 2 or 3 is an
error, since the message length is unknown.

Serialisation: :func:`chunk_message` is the pure, fast path for media fan-out: it always writes
a format 0 first chunk and format 3 continuation chunks, so its bytes depend on nothing but its
arguments and can be built once and written to every subscriber that uses the same outgoing
chunk size. :func:`encode_message` and :class:`ChunkWriter` can also compress headers
(formats 1 and 2) against the previous message of the chunk stream.

Error policy:

* :class:`ChunkReader` raises :class:`~arcly_trio.core.errors.RemoteProtocolError` for
  malformed input (a format 2/3 header on a fresh chunk stream, a continuation chunk whose
  header changes the message length, a bad Set Chunk Size) and
  :class:`~arcly_trio.core.errors.MessageTooLarge` as soon as a header announces a message
  over its type's limit, a Set Chunk Size over ``max_chunk_size``, or partial messages whose
  sizes add up to more than ``max_buffered_bytes``; too many chunk streams with a partial
  message (or in all) is a ``RemoteProtocolError``. Once it has raised, the reader is broken:
  further calls raise :class:`~arcly_trio.core.errors.LocalProtocolError`.
* The encoders raise ``LocalProtocolError`` for arguments that do not fit the wire format
  (a chunk stream id outside 2..65599, a payload of 16 MiB or more, a chunk size outside
  1..0x7FFFFFFF). Timestamps are taken modulo 2**32.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Final

import attrs

from arcly_trio.core.budget import ByteBudget
from arcly_trio.core.errors import (
    BudgetExceeded,
    LocalProtocolError,
    MessageTooLarge,
    RemoteProtocolError,
)
from arcly_trio.protocols.rtmp.messages import (
    MAX_CHUNK_SIZE,
    MessageType,
    decode_abort,
    decode_set_chunk_size,
    encode_set_chunk_size,
)

__all__ = [
    "RtmpMessage",
    "ChunkReader",
    "ChunkWriter",
    "HeaderState",
    "chunk_message",
    "encode_message",
    "DEFAULT_CHUNK_SIZE",
    "MIN_CSID",
    "MAX_CSID",
]

#: The chunk size of both directions until a Set Chunk Size says otherwise.
DEFAULT_CHUNK_SIZE: Final = 128
#: The smallest chunk stream id a message may use (0 and 1 select the longer basic headers).
MIN_CSID: Final = 2
#: The largest chunk stream id (a 3-byte basic header: 64 + 65535).
MAX_CSID: Final = 65599

_MASK32: Final = 0xFFFFFFFF
_EXTENDED: Final = 0xFFFFFF
_MAX_LENGTH: Final = 0xFFFFFF

_U32 = struct.Struct(">I")
_U32_LE = struct.Struct("<I")

_AUDIO: Final = int(MessageType.AUDIO)
_VIDEO: Final = int(MessageType.VIDEO)
_AGGREGATE: Final = int(MessageType.AGGREGATE)
_SET_CHUNK_SIZE: Final = int(MessageType.SET_CHUNK_SIZE)
_ABORT: Final = int(MessageType.ABORT)


@attrs.frozen(slots=True)
class RtmpMessage:
    """One complete RTMP message, as reassembled from its chunks.

    Attributes:
        type_id: the message type id (see :class:`~.messages.MessageType`).
        stream_id: the message stream id (0 for control and connection-level commands).
        timestamp: milliseconds, modulo 2**32 (as on the wire, not unwrapped).
        payload: the message body.
        csid: the chunk stream it arrived on.
    """

    type_id: int
    stream_id: int
    timestamp: int
    payload: bytes
    csid: int


class _ChunkStream:
    """What the reader remembers of one chunk stream: the last header and a partial message."""

    __slots__ = (
        "timestamp",
        "delta",
        "extended",
        "length",
        "type_id",
        "stream_id",
        "partial",
    )

    def __init__(self) -> None:
        self.timestamp = 0  # absolute time of the current (or last) message, modulo 2**32
        self.delta = 0  # the last timestamp field: absolute (format 0) or delta, with extension
        self.extended = False  # that field was 0xFFFFFF: format 3 chunks carry 4 more bytes
        self.length = 0
        self.type_id = 0
        self.stream_id = 0
        self.partial: bytearray | None = None  # the partial message so far, None when none


class ChunkReader:
    """Reassembles RTMP messages from the received chunk stream bytes (sans-IO).

    Feed bytes with :meth:`receive_data`; take complete messages with :meth:`next_message`
    (``None`` means more bytes are needed) or iterate :meth:`messages`.

    Limits (keyword arguments; the defaults suit ingest of live media):

    * ``max_chunk_size``: the largest Set Chunk Size accepted from the peer (65536);
    * ``min_chunk_size``: the smallest (1, as the specification allows; servers should ask for
      128, as SRS does: tiny chunks multiply the parsing work per byte);
    * ``max_video_size``, ``max_audio_size``, ``max_other_size``: the largest message of each
      kind (8 MiB for video and aggregate messages, 1 MiB audio, 64 KiB for everything else),
      checked when the first chunk's header announces the length, before anything is buffered;
    * ``max_partial_messages``: chunk streams that may hold a partial message at once (64);
    * ``max_chunk_streams``: chunk streams the reader keeps header state for (1024);
    * ``max_buffered_bytes``: the bytes really held in all partial messages together (default:
      twice the largest per-kind limit);
    * ``budget``: a :class:`~arcly_trio.core.budget.ByteBudget` shared with other readers (all
      the connections of a worker), charged with the same bytes.

    The per-kind limits and ``max_buffered_bytes`` are attributes and may be changed between
    calls (a server keeps them small until a client is allowed to publish). Unparsed input is
    at most one chunk plus whatever was fed since the last :meth:`next_message` that returned
    ``None``.
    """

    def __init__(
        self,
        *,
        max_chunk_size: int = 65536,
        min_chunk_size: int = 1,
        max_video_size: int = 8 * 1024 * 1024,
        max_audio_size: int = 1024 * 1024,
        max_other_size: int = 64 * 1024,
        max_partial_messages: int = 64,
        max_chunk_streams: int = 1024,
        max_buffered_bytes: int | None = None,
        budget: ByteBudget | None = None,
    ) -> None:
        if not DEFAULT_CHUNK_SIZE <= max_chunk_size <= MAX_CHUNK_SIZE:
            raise LocalProtocolError(f"max_chunk_size must be within {DEFAULT_CHUNK_SIZE}..{MAX_CHUNK_SIZE}")
        if not 1 <= min_chunk_size <= DEFAULT_CHUNK_SIZE:
            raise LocalProtocolError(f"min_chunk_size must be within 1..{DEFAULT_CHUNK_SIZE}")
        for name, value in (
            ("max_video_size", max_video_size),
            ("max_audio_size", max_audio_size),
            ("max_other_size", max_other_size),
            ("max_partial_messages", max_partial_messages),
            ("max_chunk_streams", max_chunk_streams),
        ):
            if value < 1:
                raise LocalProtocolError(f"{name} must be positive, not {value}")
        largest = max(max_video_size, max_audio_size, max_other_size)
        if max_buffered_bytes is None:
            max_buffered_bytes = 2 * largest
        if max_buffered_bytes < largest:
            raise LocalProtocolError("max_buffered_bytes must hold the largest message")
        self.max_chunk_size = max_chunk_size
        self.min_chunk_size = min_chunk_size
        self.max_video_size = max_video_size
        self.max_audio_size = max_audio_size
        self.max_other_size = max_other_size
        self.max_partial_messages = max_partial_messages
        self.max_chunk_streams = max_chunk_streams
        self.max_buffered_bytes = max_buffered_bytes
        self._buf = bytearray()
        self._pos = 0
        self._chunk_size = DEFAULT_CHUNK_SIZE
        self._streams: dict[int, _ChunkStream] = {}
        self._partials = 0
        self._partial_bytes = 0
        self._budget = budget if budget is not None else ByteBudget()
        self._broken = False

    @property
    def chunk_size(self) -> int:
        """The peer's current chunk size (128 until its Set Chunk Size)."""
        return self._chunk_size

    @property
    def unparsed_bytes(self) -> int:
        """Bytes received and not yet parsed into a chunk."""
        return len(self._buf) - self._pos

    @property
    def partial_bytes(self) -> int:
        """The bytes really held in partial messages (received, not yet a whole message)."""
        return self._partial_bytes

    def close(self) -> None:
        """Give every buffered byte back (to the shared budget too); the reader is done.

        Idempotent. Call it when the connection ends, whatever the reason.
        """
        for state in self._streams.values():
            state.partial = None
        self._budget.release(self._partial_bytes)
        self._partials = 0
        self._partial_bytes = 0
        self._buf = bytearray()
        self._pos = 0
        self._broken = True

    def _hold(self, n: int) -> None:
        """Count ``n`` more buffered bytes (raises before anything is changed)."""
        held = self._partial_bytes + n
        if held > self.max_buffered_bytes:
            raise MessageTooLarge("buffered partial", held, self.max_buffered_bytes)
        if not self._budget.reserve(n):
            raise BudgetExceeded("server-wide partial message memory", n, self._budget.limit)
        self._partial_bytes = held

    def _unhold(self, n: int) -> None:
        self._partial_bytes -= n
        self._budget.release(n)

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Add received bytes (an empty ``data`` is a no-op: EOF is the caller's business)."""
        if self._broken:
            raise LocalProtocolError("the chunk reader failed earlier")
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def messages(self) -> Iterator[RtmpMessage]:
        """Yield every message the received bytes complete."""
        while True:
            message = self.next_message()
            if message is None:
                return
            yield message

    def next_message(self) -> RtmpMessage | None:
        """Parse chunks until a message is complete and return it; ``None`` if bytes are short.

        Raises ``RemoteProtocolError`` / ``MessageTooLarge`` (see the module docstring).
        """
        if self._broken:
            raise LocalProtocolError("the chunk reader failed earlier")
        try:
            while True:
                result = self._next_chunk()
                if result is not None:
                    if result is _NEED_DATA:
                        return None
                    return result  # type: ignore[return-value]
        except RemoteProtocolError:
            self._broken = True
            raise

    def limit_for(self, type_id: int) -> tuple[int, str]:
        """``(largest size, kind name)`` of a message of type ``type_id`` (the current limits)."""
        if type_id == _VIDEO:
            return self.max_video_size, "video"
        if type_id == _AGGREGATE:
            return self.max_video_size, "aggregate"
        if type_id == _AUDIO:
            return self.max_audio_size, "audio"
        return self.max_other_size, f"type {type_id}"

    def _next_chunk(self) -> RtmpMessage | object | None:
        """Parse one chunk: a message, ``None`` (chunk consumed, no message) or ``_NEED_DATA``.

        Nothing is changed unless the whole chunk is in the buffer (the rollback is simply not
        moving ``self._pos``); header checks raise as soon as the header is complete.
        """
        buf = self._buf
        end = len(buf)
        p = self._pos
        if p >= end:
            return _NEED_DATA
        b0 = buf[p]
        p += 1
        fmt = b0 >> 6
        csid = b0 & 0x3F
        if csid == 0:
            if p + 1 > end:
                return _NEED_DATA
            csid = 64 + buf[p]
            p += 1
        elif csid == 1:
            if p + 2 > end:
                return _NEED_DATA
            csid = 64 + buf[p] + (buf[p + 1] << 8)
            p += 2

        field = 0
        length = 0
        type_id = 0
        stream_id = 0
        if fmt == 0:
            if p + 11 > end:
                return _NEED_DATA
            field = (buf[p] << 16) | (buf[p + 1] << 8) | buf[p + 2]
            length = (buf[p + 3] << 16) | (buf[p + 4] << 8) | buf[p + 5]
            type_id = buf[p + 6]
            stream_id = _U32_LE.unpack_from(buf, p + 7)[0]
            p += 11
        elif fmt == 1:
            if p + 7 > end:
                return _NEED_DATA
            field = (buf[p] << 16) | (buf[p + 1] << 8) | buf[p + 2]
            length = (buf[p + 3] << 16) | (buf[p + 4] << 8) | buf[p + 5]
            type_id = buf[p + 6]
            p += 7
        elif fmt == 2:
            if p + 3 > end:
                return _NEED_DATA
            field = (buf[p] << 16) | (buf[p + 1] << 8) | buf[p + 2]
            p += 3

        state = self._streams.get(csid)
        if state is None and fmt >= 2:
            raise RemoteProtocolError(f"chunk stream {csid} starts with a format {fmt} header (no previous header)")
        extended = state.extended if fmt == 3 else field == _EXTENDED  # type: ignore[union-attr]
        if extended:
            if p + 4 > end:
                return _NEED_DATA
            field = _U32.unpack_from(buf, p)[0]
            p += 4

        chunk_size = self._chunk_size
        if state is not None and state.partial is not None:
            # A continuation chunk of the partial message on this chunk stream.
            if fmt <= 1 and length != state.length:
                raise RemoteProtocolError(
                    f"chunk stream {csid}: a format {fmt} header announces {length} bytes "
                    f"in the middle of a {state.length}-byte message"
                )
            partial = state.partial
            n = state.length - len(partial)
            if n > chunk_size:
                n = chunk_size
            if p + n > end:
                return _NEED_DATA
            self._hold(n)
            partial += memoryview(buf)[p : p + n]
            self._pos = p + n
            if len(partial) < state.length:
                return None
            payload = bytes(partial)
            state.partial = None
            self._partials -= 1
            self._unhold(state.length)
            return self._complete(RtmpMessage(state.type_id, state.stream_id, state.timestamp, payload, csid))

        # The first chunk of a new message.
        if fmt == 0:
            timestamp = field
        else:
            if state is None:  # format 1 on a fresh chunk stream (librtmp does this)
                previous = 0
            else:
                previous = state.timestamp
                stream_id = state.stream_id
                if fmt >= 2:
                    length = state.length
                    type_id = state.type_id
                if fmt == 3 and not extended:
                    field = state.delta
            timestamp = (previous + field) & _MASK32

        limit, kind = self.limit_for(type_id)
        if length > limit:
            raise MessageTooLarge(kind, length, limit)
        if state is None and len(self._streams) >= self.max_chunk_streams:
            raise RemoteProtocolError(f"more than {self.max_chunk_streams} chunk streams in use by the peer")
        n = length if length <= chunk_size else chunk_size
        partial = n < length
        if partial and self._partials >= self.max_partial_messages:
            raise RemoteProtocolError(f"more than {self.max_partial_messages} chunk streams interleave messages")
        if p + n > end:
            return _NEED_DATA
        if partial:
            self._hold(n)

        # Commit.
        if state is None:
            state = self._streams[csid] = _ChunkStream()
        state.timestamp = timestamp
        state.delta = field
        state.extended = extended
        state.length = length
        state.type_id = type_id
        state.stream_id = stream_id
        with memoryview(buf) as view:
            if partial:
                state.partial = bytearray(view[p : p + n])
            else:
                piece = bytes(view[p : p + n])
        self._pos = p + n
        if partial:
            self._partials += 1
            return None
        return self._complete(RtmpMessage(type_id, stream_id, timestamp, piece, csid))

    def _complete(self, message: RtmpMessage) -> RtmpMessage:
        """Apply the protocol control messages that change how chunks are read."""
        if message.type_id == _SET_CHUNK_SIZE:
            size = decode_set_chunk_size(message.payload)
            if size > self.max_chunk_size:
                raise MessageTooLarge("chunk", size, self.max_chunk_size)
            if size < self.min_chunk_size:
                raise RemoteProtocolError(
                    f"Set Chunk Size of {size}: chunks under {self.min_chunk_size} bytes are refused"
                )
            self._chunk_size = size
        elif message.type_id == _ABORT:
            state = self._streams.get(decode_abort(message.payload))
            if state is not None and state.partial is not None:
                self._unhold(len(state.partial))
                state.partial = None
                self._partials -= 1
        return message


_NEED_DATA: Final = object()


# --------------------------------------------------------------------------------------------
# Serialisation


def _basic_header(fmt: int, csid: int) -> bytes:
    if csid < 64:
        return bytes([(fmt << 6) | csid])
    if csid < 320:
        return bytes([fmt << 6, csid - 64])
    rest = csid - 64
    return bytes([(fmt << 6) | 1, rest & 0xFF, rest >> 8])


def _check(csid: int, type_id: int, stream_id: int, length: int, chunk_size: int) -> None:
    if not MIN_CSID <= csid <= MAX_CSID:
        raise LocalProtocolError(f"chunk stream id {csid} is outside {MIN_CSID}..{MAX_CSID}")
    if not 0 <= type_id <= 0xFF:
        raise LocalProtocolError(f"message type id {type_id} does not fit a byte")
    if not 0 <= stream_id <= _MASK32:
        raise LocalProtocolError(f"message stream id {stream_id} does not fit 32 bits")
    if length > _MAX_LENGTH:
        raise LocalProtocolError(f"message of {length} bytes does not fit the 24-bit length")
    if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
        raise LocalProtocolError(f"chunk size {chunk_size} is outside 1..{MAX_CHUNK_SIZE}")


def _assemble(
    first_header: bytes,
    continuation: bytes,
    payload: bytes | bytearray | memoryview,
    chunk_size: int,
) -> bytes:
    length = len(payload)
    if length <= chunk_size:
        return first_header + bytes(payload)
    view = memoryview(payload)
    parts: list[bytes | memoryview] = [first_header, view[:chunk_size]]
    for offset in range(chunk_size, length, chunk_size):
        parts.append(continuation)
        parts.append(view[offset : offset + chunk_size])
    return b"".join(parts)


def chunk_message(
    csid: int,
    type_id: int,
    stream_id: int,
    timestamp: int,
    payload: bytes | bytearray | memoryview,
    chunk_size: int,
) -> bytes:
    """Return the chunks of one message: a format 0 first chunk, format 3 continuations.

    A pure function: the bytes depend only on the arguments, so the chunks of a media message
    can be built once and written to every connection whose outgoing chunk size is
    ``chunk_size``, interleaved with anything else that connection sends on *other* chunk
    streams. The timestamp is taken modulo 2**32; at 0xFFFFFF and above it goes in an extended
    timestamp, repeated on every continuation chunk (as FFmpeg writes and reads it).
    """
    length = len(payload)
    _check(csid, type_id, stream_id, length, chunk_size)
    timestamp &= _MASK32
    if timestamp >= _EXTENDED:
        ext = _U32.pack(timestamp)
        field = _EXTENDED
    else:
        ext = b""
        field = timestamp
    header = b"".join(
        (
            _basic_header(0, csid),
            field.to_bytes(3, "big"),
            length.to_bytes(3, "big"),
            bytes([type_id]),
            _U32_LE.pack(stream_id),
            ext,
        )
    )
    return _assemble(header, _basic_header(3, csid) + ext, payload, chunk_size)


@attrs.frozen(slots=True)
class HeaderState:
    """What the peer's reader remembers of a chunk stream after one of our messages.

    ``delta`` is the timestamp field the last header carried (absolute for format 0), taken
    modulo 2**32; ``timestamp`` is the message's absolute time modulo 2**32.
    """

    type_id: int
    stream_id: int
    length: int
    timestamp: int
    delta: int


def encode_message(
    csid: int,
    type_id: int,
    stream_id: int,
    timestamp: int,
    payload: bytes | bytearray | memoryview,
    chunk_size: int,
    *,
    prev: HeaderState | None,
) -> tuple[bytes, HeaderState]:
    """Return the chunks of one message with a compressed first header, and the new state.

    ``prev`` is the state the previous message on ``csid`` left (``None``: none, or unknown,
    e.g. after someone else wrote on that chunk stream). The first header is format 0 when
    there is no ``prev``, the message stream differs or time goes backwards; format 2 when
    type and length match ``prev``; format 1 otherwise. Format 3 is only used for
    continuation chunks.
    """
    length = len(payload)
    _check(csid, type_id, stream_id, length, chunk_size)
    timestamp &= _MASK32
    delta = 0
    fmt = 0
    if prev is not None and prev.stream_id == stream_id:
        delta = (timestamp - prev.timestamp) & _MASK32
        if delta < 0x80000000:
            fmt = 2 if prev.type_id == type_id and prev.length == length else 1
    field_value = timestamp if fmt == 0 else delta
    if field_value >= _EXTENDED:
        ext = _U32.pack(field_value)
        field = _EXTENDED
    else:
        ext = b""
        field = field_value
    parts = [_basic_header(fmt, csid), field.to_bytes(3, "big")]
    if fmt <= 1:
        parts.append(length.to_bytes(3, "big"))
        parts.append(bytes([type_id]))
    if fmt == 0:
        parts.append(_U32_LE.pack(stream_id))
    parts.append(ext)
    data = _assemble(b"".join(parts), _basic_header(3, csid) + ext, payload, chunk_size)
    return data, HeaderState(type_id, stream_id, length, timestamp, field_value)


class ChunkWriter:
    """Serialises outgoing messages with our chunk size (sans-IO; returns bytes to send).

    It tracks the outgoing chunk size (128 until :meth:`set_chunk_size`) and, when
    ``compress`` is true, the per-chunk-stream header state for format 1/2 headers. Without
    compression every message starts with a format 0 header, which is always correct whatever
    else is written on the same connection. With compression, call :meth:`forget` for a chunk
    stream on which other bytes (for example shared pre-chunked media) were written.

    Raises ``LocalProtocolError`` for arguments that do not fit the wire format.
    """

    def __init__(self, chunk_size: int = DEFAULT_CHUNK_SIZE, *, compress: bool = False) -> None:
        if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
            raise LocalProtocolError(f"chunk size {chunk_size} is outside 1..{MAX_CHUNK_SIZE}")
        self._chunk_size = chunk_size
        self.compress = compress
        self._states: dict[int, HeaderState] = {}

    @property
    def chunk_size(self) -> int:
        """The chunk size our messages are cut to."""
        return self._chunk_size

    def write(
        self,
        csid: int,
        type_id: int,
        stream_id: int,
        timestamp: int,
        payload: bytes | bytearray | memoryview,
    ) -> bytes:
        """Return the chunks of one message at the current chunk size."""
        if not self.compress:
            return chunk_message(csid, type_id, stream_id, timestamp, payload, self._chunk_size)
        data, state = encode_message(
            csid,
            type_id,
            stream_id,
            timestamp,
            payload,
            self._chunk_size,
            prev=self._states.get(csid),
        )
        self._states[csid] = state
        return data

    def set_chunk_size(self, size: int, *, csid: int = 2) -> bytes:
        """Return a Set Chunk Size message (cut at the old size) and switch to ``size``."""
        data = self.write(csid, _SET_CHUNK_SIZE, 0, 0, encode_set_chunk_size(size))
        self._chunk_size = size
        return data

    def forget(self, csid: int | None = None) -> None:
        """Drop the header compression state of ``csid`` (of every chunk stream if ``None``)."""
        if csid is None:
            self._states.clear()
        else:
            self._states.pop(csid, None)
