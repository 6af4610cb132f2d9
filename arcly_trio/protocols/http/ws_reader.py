"""What a WebSocket client sends to the server, read frame by frame (sans-IO, RFC 6455 section 5).

The server's WebSockets (:mod:`arcly_trio.workers.http.ws_egress`: the frame API's viewers and
``/ingest`` publishers, WebSocket-FLV) read their peer with :class:`WebSocketReader` rather than
wsproto's ``Connection``: a publisher sends 30 to 50 messages a second, and wsproto's general
machinery (a buffer with commit and rollback, generators, a masker object and a named tuple per
frame, an event object per piece) cost about a fifth of the CPU of each published frame. The
handshake is still wsproto's (it is read once).

:class:`WebSocketReader` is hypothesis-tested to read any byte stream, split anywhere, exactly as
wsproto 1.x's server ``Connection`` does (``tests/protocols/test_ws_reader.py``): the same pieces
of the same messages (a data frame is handed out as its bytes arrive, with whether the frame and
the message are complete; text decoded as UTF-8 incrementally), the same pings, pongs and close
frames, and, for what wsproto refuses, a close with the same code (1002 for a frame that breaks
the protocol, 1007 for text or a close reason that is not UTF-8) at the same place in the stream.
No extension is negotiated (no RSV bit may be set), every frame must be masked.

Resource handling: a data frame's bytes are handed out as they arrive, so what the reader holds is
the unparsed rest of what it was fed (at most one frame header or control frame, 139 bytes, once
:meth:`WebSocketReader.next_event` returned ``None``); the size of a message is the caller's to
limit (:class:`~arcly_trio.protocols.http.websocket.WebSocketGuard`). Unmasking costs one pass over
the payload: ``int.from_bytes`` XOR for a short piece, one ``bytes.translate`` per key byte over a
strided slice for a longer one (measured faster above ~500 bytes).

Error policy: nothing raises on what the peer sends; a frame that breaks the protocol ends the
reading with a :class:`CloseReceived` whose ``broken`` is true (the code to close with, a reason
written here, never the peer's bytes), and nothing more is read after it or after the peer's own
close frame.
"""

from __future__ import annotations

import codecs
from typing import NamedTuple

__all__ = [
    "OPCODE_CLOSE",
    "OPCODE_PING",
    "OPCODE_PONG",
    "PROTOCOL_ERROR",
    "INVALID_DATA",
    "CloseReceived",
    "Received",
    "WebSocketReader",
    "close_frame",
    "unmask",
]

OPCODE_CONTINUATION = 0x0
OPCODE_TEXT = 0x1
OPCODE_BINARY = 0x2
OPCODE_CLOSE = 0x8
OPCODE_PING = 0x9
OPCODE_PONG = 0xA
_OPCODES = frozenset((0x0, 0x1, 0x2, 0x8, 0x9, 0xA))

PROTOCOL_ERROR = 1002
INVALID_DATA = 1007
_NO_STATUS = 1005
_LOCAL_ONLY = frozenset((1005, 1006, 1015))
# The codes wsproto knows (its CloseReason); an unknown one under 3000 is refused.
_KNOWN_CODES = frozenset((1000, 1001, 1002, 1003, 1005, 1006, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1015))
_MAX_CLOSE_REASON = 123  # bytes: a control frame carries at most 125, two of them the code

_XOR_TABLES = [bytes(byte ^ key for byte in range(256)) for key in range(256)]
_TRANSLATE_FROM = 512  # bytes: from here strided translate beats one big-int XOR


class Received(NamedTuple):
    """A piece of a data frame (``opcode`` text or binary: ``data`` is ``str`` or ``bytes``),
    or a whole ping or pong (``data`` its payload, both flags true)."""

    opcode: int
    data: bytes | str
    frame_finished: bool
    message_finished: bool


class CloseReceived(NamedTuple):
    """The peer's close frame (``code`` 1005 if it had none), or, with ``broken``, what the
    server closes with because the peer broke the protocol (``reason`` says how)."""

    code: int
    reason: str
    broken: bool = False


class _Broken(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def unmask(payload: bytes | bytearray, key: bytes) -> bytes:
    """``payload`` XOR the 4-byte masking ``key`` repeated (RFC 6455 section 5.3)."""
    size = len(payload)
    if size < _TRANSLATE_FROM:
        if not size:
            return b""
        mask = int.from_bytes((key * ((size >> 2) + 1))[:size], "little")
        return (int.from_bytes(payload, "little") ^ mask).to_bytes(size, "little")
    data = bytearray(payload)
    tables = _XOR_TABLES
    data[::4] = data[::4].translate(tables[key[0]])
    data[1::4] = data[1::4].translate(tables[key[1]])
    data[2::4] = data[2::4].translate(tables[key[2]])
    data[3::4] = data[3::4].translate(tables[key[3]])
    return bytes(data)


def close_frame(code: int | None, reason: str = "") -> bytes:
    """An unmasked close frame with ``code`` and ``reason`` (cut to 123 bytes on a character
    boundary), as wsproto writes it: no payload for ``None`` or 1005, 1000 for another code a
    peer may not send (1006, 1015)."""
    if code is None or code == _NO_STATUS:
        return bytes((0x80 | OPCODE_CLOSE, 0))
    if code in _LOCAL_ONLY:
        code = 1000
    text = reason.encode("utf-8")
    if len(text) > _MAX_CLOSE_REASON:
        text = text[:_MAX_CLOSE_REASON].decode("utf-8", errors="ignore").encode("utf-8")
    payload = code.to_bytes(2, "big") + text
    return bytes((0x80 | OPCODE_CLOSE, len(payload))) + payload


class WebSocketReader:
    """Reads a client's frames (see the module docstring): :meth:`feed` bytes in,
    :meth:`next_event` events out until it returns ``None`` (more bytes needed)."""

    __slots__ = (
        "_buffer",
        "_position",
        "_done",
        "_in_frame",
        "_opcode",
        "_fin",
        "_remaining",
        "_key",
        "_message",
        "_decoder",
    )

    def __init__(self) -> None:
        self._buffer: bytes | bytearray = b""
        self._position = 0  # bytes of _buffer already read
        self._done = False  # the peer's close frame, or a broken frame, was read
        self._in_frame = False  # a data frame's header is read, its payload not all handed out
        self._opcode = 0  # the frame's opcode (continuation once a piece was handed out)
        self._fin = False
        self._remaining = 0  # payload bytes of the frame not handed out yet
        self._key = b""  # masking key, rotated to the next payload byte
        self._message = 0  # opcode of the message in progress (0: none)
        self._decoder: codecs.IncrementalDecoder | None = None

    @property
    def finished(self) -> bool:
        """A close frame (the peer's, or for a broken frame) was read: nothing more will be."""
        return self._done

    @property
    def buffered(self) -> int:
        """Bytes fed and not read yet."""
        return len(self._buffer) - self._position

    def feed(self, data: bytes) -> None:
        """What the peer sent next (ignored once a close was read)."""
        if self._done or not data:
            return
        position = self._position
        buffer = self._buffer
        if position >= len(buffer):
            self._buffer = data
        else:
            rest = bytearray(buffer[position:]) if position else bytearray(buffer)
            rest += data
            self._buffer = rest
        self._position = 0

    def next_event(self) -> Received | CloseReceived | None:
        """The next event, or ``None`` until more bytes are fed (for good after a close)."""
        if self._done:
            return None
        try:
            if not self._in_frame:
                return self._read_frame_start()
            return self._read_piece()
        except _Broken as broken:
            self._done = True
            self._buffer = b""
            self._position = 0
            return CloseReceived(broken.code, broken.reason, True)

    def _read_frame_start(self) -> Received | CloseReceived | None:
        buffer = self._buffer
        position = self._position
        available = len(buffer) - position
        if available < 2:
            return None
        first = buffer[position]
        second = buffer[position + 1]
        opcode = first & 0x0F
        if opcode not in _OPCODES:
            raise _Broken(PROTOCOL_ERROR, f"invalid opcode {opcode:#x}")
        fin = bool(first & 0x80)
        control = opcode >= OPCODE_CLOSE
        if control and not fin:
            raise _Broken(PROTOCOL_ERROR, "a control frame cannot be fragmented")
        size = second & 0x7F
        if control and size > 125:
            raise _Broken(PROTOCOL_ERROR, "a control frame with a payload over 125 bytes")
        header = 2
        if size == 126:
            if available < 4:
                return None
            size = (buffer[position + 2] << 8) | buffer[position + 3]
            if size <= 125:
                raise _Broken(PROTOCOL_ERROR, "a payload length in 2 bytes where 1 would do")
            header = 4
        elif size == 127:
            if available < 10:
                return None
            size = int.from_bytes(buffer[position + 2 : position + 10], "big")
            if size <= 0xFFFF:
                raise _Broken(PROTOCOL_ERROR, "a payload length in 8 bytes where 2 would do")
            if size >> 63:
                raise _Broken(PROTOCOL_ERROR, "a payload length with its top bit set")
            header = 10
        if first & 0x70:
            raise _Broken(PROTOCOL_ERROR, "a reserved bit is set (no extension was negotiated)")
        if not second & 0x80:
            raise _Broken(PROTOCOL_ERROR, "a client frame is not masked")
        if available < header + 4:
            return None
        key = bytes(buffer[position + header : position + header + 4])
        if control:
            end = position + header + 4 + size
            if len(buffer) < end:
                return None  # a control frame is handed out whole
            self._position = end
            payload = unmask(buffer[end - size : end], key)
            if opcode == OPCODE_CLOSE:
                return self._close(payload)
            return Received(opcode, payload, True, True)
        self._position = position + header + 4
        self._in_frame = True
        self._opcode = opcode
        self._fin = fin
        self._remaining = size
        self._key = key
        return self._read_piece()

    def _read_piece(self) -> Received | None:
        buffer = self._buffer
        position = self._position
        remaining = self._remaining
        size = min(len(buffer) - position, remaining)
        if not size and remaining:
            return None
        opcode = self._opcode
        key = self._key
        payload = unmask(buffer[position : position + size], key) if size else b""
        self._position = position + size
        remaining -= size
        self._remaining = remaining
        frame_finished = not remaining
        if frame_finished:
            self._in_frame = False
        else:
            self._opcode = OPCODE_CONTINUATION
            turn = size & 3
            if turn:
                self._key = key[turn:] + key[:turn]
        message = self._message
        if not message:
            if opcode == OPCODE_CONTINUATION:
                raise _Broken(PROTOCOL_ERROR, "a continuation frame outside a message")
            self._message = message = opcode
            if opcode == OPCODE_TEXT:
                self._decoder = codecs.getincrementaldecoder("utf-8")()
        elif opcode != OPCODE_CONTINUATION:
            raise _Broken(PROTOCOL_ERROR, "a new message before the last one ended")
        finished = frame_finished and self._fin
        data: bytes | str = payload
        decoder = self._decoder
        if decoder is not None:
            try:
                data = decoder.decode(payload, finished)
            except UnicodeDecodeError:
                raise _Broken(INVALID_DATA, "a text message that is not UTF-8") from None
        if finished:
            self._message = 0
            self._decoder = None
        return Received(message, data, frame_finished, finished)

    def _close(self, payload: bytes) -> CloseReceived:
        if not payload:
            code, reason = _NO_STATUS, ""
        elif len(payload) == 1:
            raise _Broken(PROTOCOL_ERROR, "a close frame with a 1-byte payload")
        else:
            code = (payload[0] << 8) | payload[1]
            if code < 1000 or code > 4999:
                raise _Broken(PROTOCOL_ERROR, "a close frame with an invalid code")
            if code in _LOCAL_ONLY:
                raise _Broken(PROTOCOL_ERROR, "a close frame with a code only an endpoint may use")
            if code < 3000 and code not in _KNOWN_CODES:
                raise _Broken(PROTOCOL_ERROR, "a close frame with an unknown reserved code")
            try:
                reason = payload[2:].decode("utf-8")
            except UnicodeDecodeError:
                raise _Broken(INVALID_DATA, "a close reason that is not UTF-8") from None
        self._done = True
        self._buffer = b""
        self._position = 0
        return CloseReceived(code, reason)
