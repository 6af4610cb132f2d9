"""The RTSP message codec: requests, responses and interleaved packets, split anywhere, bounded."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from arcly_trio.protocols.rtsp.messages import (
    MAX_BODY,
    MAX_HEAD,
    MAX_HEADERS,
    Interleaved,
    RtspError,
    RtspReader,
    RtspRequest,
    RtspResponse,
    encode_interleaved,
    encode_request,
    encode_response,
    header,
    interleaved_header,
)

SDP = b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=x\r\n"


def _stream() -> bytes:
    return (
        b"\r\n"
        + encode_request("OPTIONS", "rtsp://h/live/a", [("CSeq", "1")])
        + encode_interleaved(0, b"\x80" * 20)
        + encode_request("ANNOUNCE", "rtsp://h/live/a", [("CSeq", "2"), ("Content-Type", "application/sdp")], SDP)
        + encode_interleaved(1, b"")
    )


def test_events_come_out_whole_and_in_order_when_fed_one_byte_at_a_time() -> None:
    reader = RtspReader(role="server")
    events = []
    for i, byte in enumerate(_stream()):
        events += reader.feed(bytes([byte]))
        if i == 0:
            assert not reader.in_message
    assert not reader.in_message and reader.buffered == 0
    assert events == [
        RtspRequest("OPTIONS", "rtsp://h/live/a", (("CSeq", "1"),)),
        Interleaved(0, b"\x80" * 20),
        RtspRequest(
            "ANNOUNCE",
            "rtsp://h/live/a",
            (("CSeq", "2"), ("Content-Type", "application/sdp"), ("Content-Length", str(len(SDP)))),
            SDP,
        ),
        Interleaved(1, b""),
    ]
    assert events[2].header("content-TYPE") == "application/sdp"


def test_a_client_reads_responses_and_server_requests() -> None:
    reader = RtspReader(role="client")
    data = encode_response(200, None, [("CSeq", "3"), ("Session", "abc;timeout=60")], SDP)
    data += encode_response(454, "Session Not Found", [("CSeq", "4")])
    data += encode_request("GET_PARAMETER", "rtsp://h/", [("CSeq", "9")])
    events = reader.feed(data)
    assert events[0] == RtspResponse(
        200, "OK", (("CSeq", "3"), ("Session", "abc;timeout=60"), ("Content-Length", str(len(SDP)))), SDP
    )
    assert events[1] == RtspResponse(454, "Session Not Found", (("CSeq", "4"),))
    assert isinstance(events[2], RtspRequest) and events[2].method == "GET_PARAMETER"


def test_bare_lf_line_ends_are_accepted() -> None:
    (event,) = RtspReader(role="server").feed(b"OPTIONS * RTSP/1.0\nCSeq: 1\n\n")
    assert event == RtspRequest("OPTIONS", "*", (("CSeq", "1"),))


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"OPTIONS * RTSP/2.0\r\nCSeq: 1\r\n\r\n", 505),
        (b"OPTIONS * RTSP/1.0\r\n folded: x\r\n\r\n", 400),
        (b"OPTIONS * RTSP/1.0\r\nno colon\r\n\r\n", 400),
        (b"OPTIONS * RTSP/1.0\r\nCSeq: 1\x00\r\n\r\n", 400),
        (b"OPTIONS * RTSP/1.0\r\nContent-Length: -1\r\n\r\n", 400),
        (b"OPTIONS * RTSP/1.0\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY + 1), 413),
        (b"OPTIONS * RTSP/1.0\r\n" + b"A: b\r\n" * (MAX_HEADERS + 1) + b"\r\n", 431),
        (b"OPTIONS * RTSP/1.0\r\nX: " + b"a" * MAX_HEAD, 431),
        (b"OPTIONS \xff RTSP/1.0\r\n\r\n", 400),
        (b"RTSP/1.0 200 OK\r\n\r\n", 400),
        (b"\x16\x03\x01\x02\x00\x01", 400),
    ],
)
def test_malformed_or_oversized_input_raises_rtsp_error_with_a_status(data: bytes, status: int) -> None:
    reader = RtspReader(role="server")
    with pytest.raises(RtspError) as info:
        reader.feed(data)
    assert info.value.status == status
    with pytest.raises(RtspError):  # broken for good
        reader.feed(b"OPTIONS * RTSP/1.0\r\n\r\n")


def test_an_incomplete_head_is_held_until_its_end() -> None:
    reader = RtspReader(role="server")
    assert reader.feed(b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n") == []
    assert reader.in_message and reader.buffered > 0
    assert reader.feed(b"\r\n") == [RtspRequest("OPTIONS", "*", (("CSeq", "1"),))]


def test_encoders_refuse_what_would_corrupt_the_framing() -> None:
    with pytest.raises(ValueError):
        encode_request("OPTIONS", "*", [("X", "a\r\nInjected: 1")])
    with pytest.raises(ValueError):
        encode_request("BAD METHOD", "*")
    with pytest.raises(ValueError):
        encode_response(200, "OK\r\n")
    with pytest.raises(ValueError):
        interleaved_header(256, 1)
    with pytest.raises(ValueError):
        encode_interleaved(0, bytes(0x10000))
    assert interleaved_header(3, 258) == b"$\x03\x01\x02"
    assert header([("A", "1"), ("a", "2")], "A") == "1"
    assert header([], "A") is None


@given(st.binary(max_size=300), st.sampled_from(["server", "client"]))
def test_arbitrary_bytes_raise_only_rtsp_error(data: bytes, role: str) -> None:
    reader = RtspReader(role=role)  # type: ignore[arg-type]
    try:
        reader.feed(data)
    except RtspError:
        pass


@given(
    st.lists(
        st.one_of(
            st.builds(Interleaved, st.integers(0, 255), st.binary(max_size=40)),
            st.builds(
                RtspRequest,
                st.sampled_from(["OPTIONS", "DESCRIBE", "SETUP", "PLAY"]),
                st.sampled_from(["*", "rtsp://h:8554/live/a?token=x", "rtsp://h/live/a/trackID=1"]),
                st.lists(
                    st.tuples(st.sampled_from(["CSeq", "Session", "X-Y"]), st.text("abc 1;=/", max_size=10)),
                    max_size=4,
                ).map(lambda pairs: tuple((k, v.strip()) for k, v in pairs)),
                st.binary(max_size=40),
            ),
        ),
        max_size=6,
    ),
    st.integers(1, 50),
)
def test_round_trip_in_any_split(events: list, split: int) -> None:
    data = b""
    expected = []
    for event in events:
        if isinstance(event, Interleaved):
            data += encode_interleaved(event.channel, event.data)
            expected.append(event)
        else:
            data += encode_request(event.method, event.uri, event.headers, event.body)
            headers = event.headers + ((("Content-Length", str(len(event.body))),) if event.body else ())
            expected.append(RtspRequest(event.method, event.uri, headers, event.body))
    reader = RtspReader(role="server")
    got = []
    for i in range(0, len(data), split):
        got += reader.feed(data[i : i + split])
    assert got == expected
