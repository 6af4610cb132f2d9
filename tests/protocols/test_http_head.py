"""The strict request-head reader (``protocols/http/head.py``) against h11, its reference.

For any bytes, :func:`read_plain_head` either declines or yields exactly what h11 yields (method,
target, version, headers as h11 normalises them, the keep-alive decision, where the head ends),
never accepts what h11 refuses, and waits for more data only when h11 would wait too
(hypothesis, on generated heads, their mutations and their prefixes, and on arbitrary bytes).
"""

from __future__ import annotations

import h11
import pytest
from h11._connection import _keep_alive
from hypothesis import given, settings
from hypothesis import strategies as st

from arcly_trio.protocols.http.head import DECLINED, NEED_DATA, PlainRequest, read_plain_head
from arcly_trio.protocols.http.websocket import head_size

LIMIT = 16 * 1024


def h11_reading(data: bytes, limit: int = LIMIT) -> tuple[str, h11.Request | None, h11.Connection]:
    """What h11 (as the worker configures it) makes of ``data`` as the start of a connection."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=limit)
    if data:  # an empty receive_data is h11's end of file
        conn.receive_data(data)
    try:
        event = conn.next_event()
    except h11.RemoteProtocolError:
        return "error", None, conn
    if event is h11.NEED_DATA:
        return "need", None, conn
    assert isinstance(event, h11.Request)
    return "request", event, conn


def check_against_h11(data: bytes, limit: int = LIMIT) -> PlainRequest | None:
    result = read_plain_head(data, limit)
    kind, event, conn = h11_reading(data, limit)
    if result is DECLINED:
        return None
    if result is NEED_DATA:
        assert kind == "need", (data, kind)
        return None
    assert isinstance(result, PlainRequest)
    assert kind == "request", (data, kind)
    assert event is not None
    assert result.method == event.method
    assert result.target == event.target
    assert result.http_version == event.http_version
    assert result.headers == list(event.headers)
    assert result.keep_alive == _keep_alive(event)
    assert result.size == head_size(event) <= limit
    # no body: h11's next event is the end of the message, and the head ended where we say
    assert isinstance(conn.next_event(), h11.EndOfMessage)
    alone = h11.Connection(h11.SERVER, max_incomplete_event_size=limit)
    alone.receive_data(data[: result.end])
    assert isinstance(alone.next_event(), h11.Request)
    assert isinstance(alone.next_event(), h11.EndOfMessage)
    return result


METHODS = st.sampled_from([b"GET"] * 6 + [b"HEAD"] * 2 + [b"POST", b"OPTIONS", b"get", b"G T", b""])
VERSIONS = st.sampled_from([b"1.1"] * 5 + [b"1.0"] * 2 + [b"2.0", b"1.2", b"11"])
TARGETS = st.one_of(
    st.sampled_from([b"/", b"/live/cam.m3u8?_HLS_msn=3&_HLS_part=1"]),
    st.sampled_from([b"/", b"/live/cam.m3u8?_HLS_msn=3&_HLS_part=1", b"*", b"http://h/x", b"/a b"]),
    st.binary(max_size=12),
)
NAMES = st.one_of(
    st.sampled_from([b"Host", b"Accept", b"Connection"]),
    st.sampled_from([b"User-Agent", b"Accept", b"Connection", b"Content-Length"]),
    st.sampled_from(
        [
            b"Host",
            b"host",
            b"Connection",
            b"Content-Length",
            b"Transfer-Encoding",
            b"Upgrade",
            b"Expect",
            b"User-Agent",
            b"X-A",
            b"Bad Name",
            b"",
            b" Host",
        ]
    ),
    st.binary(max_size=6),
)
VALUES = st.one_of(
    st.sampled_from([b"x", b"*/*", b"close", b"keep-alive"]),
    st.sampled_from(
        [b"x", b"close", b"Keep-Alive, CLOSE", b"keep-alive", b"0", b"00", b"1", b"0, 0", b"chunked", b"websocket"]
    ),
    st.binary(max_size=10),
)
SPACES = st.sampled_from([b"", b" ", b"  ", b"\t", b" \t"])
EOLS = st.sampled_from([b"\r\n"] * 40 + [b"\n", b"\r", b"\r\r\n"])


@st.composite
def heads(draw: st.DrawFn) -> bytes:
    eol = draw(EOLS)
    head = draw(METHODS) + b" " + draw(TARGETS) + b" HTTP/" + draw(VERSIONS) + eol
    if draw(st.integers(0, 3)):
        head += b"Host: example" + draw(EOLS)
    for _ in range(draw(st.integers(0, 5))):
        head += draw(NAMES) + b":" + draw(SPACES) + draw(VALUES) + draw(SPACES) + draw(EOLS)
    return head + draw(EOLS)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(heads()))
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(data)))
        if draw(st.booleans()) and at < len(data):
            del data[at]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=2))
    return bytes(data)


@settings(max_examples=1000, deadline=None)
@given(heads())
def test_generated_heads_read_as_h11_reads_them(data: bytes) -> None:
    check_against_h11(data)


@settings(max_examples=600, deadline=None)
@given(mutated())
def test_mutated_heads_read_as_h11_reads_them(data: bytes) -> None:
    check_against_h11(data)


@settings(max_examples=500, deadline=None)
@given(heads(), st.data())
def test_any_prefix_waits_only_when_h11_waits(data: bytes, drawn: st.DataObject) -> None:
    cut = drawn.draw(st.integers(0, len(data)))
    check_against_h11(data[:cut])


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_crash_and_never_disagree(data: bytes) -> None:
    check_against_h11(data)


@settings(max_examples=300, deadline=None)
@given(st.lists(heads(), min_size=2, max_size=4), st.integers(40, 400))
def test_pipelined_heads_and_small_limits(parts: list[bytes], limit: int) -> None:
    """Several heads in one buffer: each read from where the last ended, as h11 reads them one
    cycle after another; a small ``limit`` declines what h11 would refuse with 431."""
    data = b"".join(parts)
    start = 0
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=limit)
    conn.receive_data(data)
    while True:
        result = read_plain_head(data, limit, start)
        if not isinstance(result, PlainRequest):
            return
        assert check_against_h11(data[start:], limit) is not None
        event = conn.next_event()
        assert isinstance(event, h11.Request) and event.target == result.target
        assert isinstance(conn.next_event(), h11.EndOfMessage)
        if not result.keep_alive:
            return
        conn.send(h11.Response(status_code=200, headers=[(b"content-length", b"0")]))
        conn.send(h11.EndOfMessage())
        conn.start_next_cycle()
        start = result.end


def test_plain_gets_are_read() -> None:
    data = b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\nHEAD /b HTTP/1.0\r\n\r\n"
    first = check_against_h11(data)
    assert first is not None and first.keep_alive and first.target == b"/a"
    second = read_plain_head(data, LIMIT, first.end)
    assert isinstance(second, PlainRequest)
    assert (second.method, second.http_version, second.keep_alive) == (b"HEAD", b"1.0", False)
    assert read_plain_head(data, LIMIT, second.end) is NEED_DATA


@pytest.mark.parametrize(
    "data",
    [
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
        b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",  # no Host
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET / HTTP/2.0\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n",  # obsolete fold
        b"GET / HTTP/1.1\nHost: x\n\n",  # bare LF: h11 reads it, we leave it to h11
        b"\x16\x03\x01",  # a TLS hello on the plain port
    ],
)
def test_outside_the_subset_is_declined(data: bytes) -> None:
    assert read_plain_head(data, LIMIT) is DECLINED


def test_a_head_over_the_limit_is_declined_whole_or_not() -> None:
    head = b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 200 + b"\r\n\r\n"
    assert read_plain_head(head, 100) is DECLINED
    assert read_plain_head(head[:150], 100) is DECLINED  # incomplete and already too long
    assert h11_reading(head[:150], 100)[0] == "error"
