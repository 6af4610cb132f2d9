"""The WebSocket frame reader reads any client byte stream as wsproto does (the server's reference).

* Equivalence (hypothesis): frame sequences built from valid and invalid parts (every opcode,
  RSV bits, masked or not, minimal or padded lengths, fragmented and interleaved messages, text
  valid or not as UTF-8, close frames with every kind of code and reason), serialized and split
  into arbitrary chunks, give the same events as wsproto 1.x's server ``Connection``: the same
  pieces with the same flags, pings, pongs, close code and reason, and for what wsproto refuses
  a close with the same code at the same place. Raw random bytes are compared the same way.
* Unmasking agrees with wsproto's masker for every size and key, across both methods.
* ``close_frame`` writes what wsproto writes for the same code and reason.
* What the reader holds once it asks for more bytes is at most a header and a control frame's
  payload (139 bytes): a data frame's bytes are handed out as they come.

Error policy: plain asserts; hypothesis shrinks a failing stream to the smallest one.
"""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
from wsproto.frame_protocol import CloseReason, FrameProtocol, XorMaskerSimple

from arcly_trio.protocols.http.ws_reader import CloseReceived, Received, WebSocketReader, close_frame, unmask

Normal = tuple[str, object, bool, bool]


def wsproto_events(chunks: list[bytes]) -> list[Normal]:
    connection = Connection(ConnectionType.SERVER)
    found: list[Normal] = []
    for chunk in chunks:
        connection.receive_data(chunk)
        for event in connection.events():
            if isinstance(event, TextMessage):
                found.append(("text", event.data, event.frame_finished, event.message_finished))
            elif isinstance(event, BytesMessage):
                found.append(("binary", bytes(event.data), event.frame_finished, event.message_finished))
            elif isinstance(event, Ping):
                found.append(("ping", bytes(event.payload), True, True))
            elif isinstance(event, Pong):
                found.append(("pong", bytes(event.payload), True, True))
            elif isinstance(event, CloseConnection):
                # a refusal keeps the connection OPEN; the peer's close moves it on
                broken = connection.state.name == "OPEN"
                found.append(("close", event.code if broken else (event.code, event.reason), broken, True))
    return found


def reader_events(chunks: list[bytes]) -> list[Normal]:
    reader = WebSocketReader()
    found: list[Normal] = []
    names = {0x1: "text", 0x2: "binary", 0x9: "ping", 0xA: "pong"}
    for chunk in chunks:
        reader.feed(chunk)
        while (event := reader.next_event()) is not None:
            if isinstance(event, CloseReceived):
                found.append(("close", event.code if event.broken else (event.code, event.reason), event.broken, True))
            else:
                assert isinstance(event, Received)
                data = event.data if isinstance(event.data, str) else bytes(event.data)
                found.append((names[event.opcode], data, event.frame_finished, event.message_finished))
        assert reader.buffered <= 14 + 125  # at most a frame header and a control frame's payload
    return found


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    """One frame, mostly valid, sometimes broken in one of the ways a peer can break it."""
    kind = draw(st.sampled_from(["binary", "text", "continuation", "ping", "pong", "close", "other"]))
    opcode = {"binary": 2, "text": 1, "continuation": 0, "ping": 9, "pong": 10, "close": 8}.get(kind)
    if opcode is None:
        opcode = draw(st.integers(0, 15))
    if kind == "text":
        text = draw(st.text(max_size=40))
        payload = text.encode()
        if draw(st.integers(0, 9)) == 0:
            payload += draw(st.sampled_from([b"\xff", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80"]))
        if payload and draw(st.booleans()):  # a character cut across frames
            payload = payload[: draw(st.integers(0, len(payload)))]
    elif kind == "close":
        code = draw(
            st.one_of(
                st.sampled_from([1000, 1001, 1002, 1004, 1005, 1006, 1008, 1014, 1015, 2999, 3000, 4999]),
                st.integers(0, 65535),
            )
        )
        reason = draw(st.one_of(st.text(max_size=20).map(str.encode), st.sampled_from([b"\xff\xfe", b"ok"])))
        payload = draw(st.sampled_from([b"", code.to_bytes(2, "big") + reason, b"\x03"]))
        if draw(st.integers(0, 9)) == 0:
            payload = code.to_bytes(2, "big") + reason[:10]
    else:
        size = draw(st.sampled_from([0, 1, 5, 125, 126, 127, 700, 70000]))
        payload = draw(st.binary(min_size=min(size, 8), max_size=min(size, 8))) * (size // 8 + 1)
        payload = payload[:size]
    fin = draw(st.booleans()) if kind in ("binary", "text", "continuation", "other") else draw(st.integers(0, 19)) > 0
    rsv = draw(st.sampled_from([0] * 12 + [0x10, 0x20, 0x40]))
    masked = draw(st.integers(0, 29)) > 0
    key = draw(st.binary(min_size=4, max_size=4))
    size = len(payload)
    length_form = draw(st.sampled_from(["minimal"] * 8 + ["two", "eight", "top"]))
    if (length_form == "two" and size <= 0xFFFF) or (length_form == "minimal" and 125 < size <= 0xFFFF):
        extended = bytes((126 | (0x80 if masked else 0),)) + struct.pack("!H", size)
    elif length_form != "minimal" or size > 0xFFFF:
        value = size | (1 << 63) if length_form == "top" else size
        extended = bytes((127 | (0x80 if masked else 0),)) + struct.pack("!Q", value)
    else:
        extended = bytes((size | (0x80 if masked else 0),))
    if masked:
        body = key + bytes(XorMaskerSimple(key).process(bytearray(payload)))
    else:
        body = payload
    return bytes(((0x80 if fin else 0) | rsv | opcode,)) + extended + body


@st.composite
def split(draw: st.DrawFn, stream: bytes) -> list[bytes]:
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    if draw(st.integers(0, 4)) == 0 and len(stream) < 400:  # a byte at a time
        return [stream[i : i + 1] for i in range(len(stream))]
    pieces, start = [], 0
    for cut in [*cuts, len(stream)]:
        pieces.append(stream[start:cut])
        start = cut
    return pieces


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_frame_streams_read_as_wsproto_reads_them(data: st.DataObject) -> None:
    stream = b"".join(data.draw(st.lists(frames(), max_size=8)))
    chunks = data.draw(split(stream))
    assert reader_events(chunks) == wsproto_events(chunks)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(1, 64))
def test_random_bytes_read_as_wsproto_reads_them(stream: bytes, step: int) -> None:
    chunks = [stream[i : i + step] for i in range(0, len(stream), step)]
    assert reader_events(chunks) == wsproto_events(chunks)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=4, max_size=4), st.integers(0, 3000))
def test_unmask_agrees_with_wsproto(key: bytes, size: int) -> None:
    payload = bytes(range(256)) * (size // 256 + 1)
    payload = payload[:size]
    assert unmask(payload, key) == bytes(XorMaskerSimple(key).process(bytearray(payload)))
    assert unmask(bytearray(payload), key) == unmask(payload, key)


@given(st.one_of(st.none(), st.integers(1000, 4999)), st.text(max_size=80))
def test_close_frame_is_wsprotos(code: int | None, reason: str) -> None:
    if code is None or code == 1005:  # no code (1005 is "none was sent"): no reason either
        reason = ""
    # what wsproto answers a close frame with: a code it knows as its enum (1005: no payload)
    known = CloseReason(code) if code in CloseReason._value2member_map_ else code
    assert close_frame(code, reason) == bytes(FrameProtocol(client=False, extensions=[]).close(known, reason))


def test_a_message_in_pieces_then_a_close() -> None:
    """A spelled-out case: a text message in two frames around a ping, the peer's close."""
    key = b"\x01\x02\x03\x04"

    def frame(first: int, payload: bytes) -> bytes:
        return bytes((first, 0x80 | len(payload))) + key + unmask(payload, key)

    stream = frame(0x01, "hé".encode()[:2]) + frame(0x89, b"hi") + frame(0x80, "hé".encode()[2:])
    stream += frame(0x88, (1000).to_bytes(2, "big") + b"bye") + frame(0x82, b"ignored")
    reader = WebSocketReader()
    reader.feed(stream)
    events = []
    while (event := reader.next_event()) is not None:
        events.append(event)
    assert events == [
        Received(1, "h", True, False),
        Received(9, b"hi", True, True),
        Received(1, "é", True, True),
        CloseReceived(1000, "bye"),
    ]
    assert reader_events([stream]) == wsproto_events([stream])


def masked(first: int, payload: bytes, length: bytes | None = None, key: bytes = b"\x0f\xf0\x55\xaa") -> bytes:
    """A client frame: ``first`` byte, the length (minimal unless given, mask bit added), key, payload."""
    if length is None:
        size = len(payload)
        length = bytes((size,)) if size < 126 else bytes((126,)) + struct.pack("!H", size)
    return bytes((first, length[0] | 0x80)) + length[1:] + key + unmask(payload, key)


REFUSED = {
    "unknown opcode": (masked(0x83, b""), 1002),
    "fragmented ping": (masked(0x09, b""), 1002),
    "long ping": (bytes((0x89, 0xFE, 0, 126)) + b"k" * 130, 1002),
    "125 bytes in a 2-byte length": (masked(0x82, b"x" * 125, bytes((126, 0, 125))), 1002),
    "65535 bytes in an 8-byte length": (masked(0x82, b"", bytes((127,)) + struct.pack("!Q", 0xFFFF)), 1002),
    "length with its top bit": (masked(0x82, b"", bytes((127,)) + struct.pack("!Q", 1 << 63 | 1 << 20)), 1002),
    "reserved bit": (masked(0xC2, b"a"), 1002),
    "unmasked": (bytes((0x82, 1)) + b"a", 1002),
    "continuation first": (masked(0x80, b"a"), 1002),
    "text inside a binary message": (masked(0x02, b"a") + masked(0x81, b"b"), 1002),
    "text not UTF-8": (masked(0x81, b"\xff"), 1007),
    "text cut at its end": (masked(0x81, "é".encode()[:1]), 1007),
    "1-byte close": (masked(0x88, b"\x03"), 1002),
    "close code 999": (masked(0x88, (999).to_bytes(2, "big")), 1002),
    "close code 1005": (masked(0x88, (1005).to_bytes(2, "big")), 1002),
    "close code 1004": (masked(0x88, (1004).to_bytes(2, "big")), 1002),
    "close code 5000": (masked(0x88, (5000).to_bytes(2, "big")), 1002),
    "close reason not UTF-8": (masked(0x88, (1000).to_bytes(2, "big") + b"\xff"), 1007),
}


def test_each_refusal_has_wsprotos_code() -> None:
    for name, (stream, code) in REFUSED.items():
        for chunks in ([stream], [stream[i : i + 1] for i in range(len(stream))]):
            events = reader_events(chunks)
            assert events == wsproto_events(chunks), name
            assert events[-1] == ("close", code, True, True), name
