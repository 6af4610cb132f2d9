"""The RTSP Transport header: what ffmpeg, GStreamer and VLC send, answers, bounds."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from arcly_trio.protocols.rtsp.transport import TransportError, TransportSpec, format_transport, parse_transport


def test_client_transports_in_order_of_preference() -> None:
    specs = parse_transport(
        'RTP/AVP/TCP;unicast;interleaved=0-1, RTP/AVP;unicast;client_port=5000-5001;mode="RECORD",'
        " RTP/AVP/UDP;unicast;client_port=6000;destination=203.0.113.9, RTP/SAVP;unicast"
    )
    assert specs[0] == TransportSpec("RTP/AVP/TCP", "tcp", interleaved=(0, 1))
    assert specs[1] == TransportSpec("RTP/AVP", "udp", client_port=(5000, 5001), mode="record")
    assert specs[2].client_port == (6000, 6001) and specs[2].destination == "203.0.113.9"
    assert specs[3].protocol == ""


def test_answers_round_trip() -> None:
    answer = TransportSpec("RTP/AVP", "udp", client_port=(5000, 5001), server_port=(20000, 20001), ssrc=0xDEADBEEF)
    text = format_transport(answer)
    assert text == "RTP/AVP;unicast;client_port=5000-5001;server_port=20000-20001;ssrc=DEADBEEF"
    assert parse_transport(text) == (answer,)
    tcp = TransportSpec("RTP/AVP/TCP", "tcp", interleaved=(2, 3), mode="play")
    assert parse_transport(format_transport(tcp)) == (tcp,)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "RTP/AVP;client_port=0-1",
        "RTP/AVP;client_port=65535",
        "RTP/AVP;client_port=a-b",
        "RTP/AVP/TCP;interleaved=255-256",
        "RTP/AVP;ssrc=zz",
        ",".join(["RTP/AVP"] * 9),
        "RTP/AVP" + ";unicast" * 17,
    ],
)
def test_bad_headers_answer_461(value: str) -> None:
    with pytest.raises(TransportError) as info:
        parse_transport(value)
    assert info.value.status == 461


def test_format_refuses_header_injection() -> None:
    with pytest.raises(ValueError):
        format_transport(TransportSpec("RTP/AVP\r\nX: y", "udp"))


@given(st.text(max_size=200))
def test_arbitrary_text_raises_only_transport_error(value: str) -> None:
    try:
        parse_transport(value)
    except TransportError:
        pass
