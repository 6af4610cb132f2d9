"""The RFC 7983 demux (arcly_trio.protocols.webrtc.demux): every first-byte range, RFC 5761's
RTCP packet types under rtcp-mux, short datagrams, and any bytes classified without raising."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from arcly_trio.protocols.webrtc.demux import MIN_RTCP, MIN_RTP, PacketKind, classify
from arcly_trio.protocols.webrtc.stun import BINDING, REQUEST, build_stun


def test_a_real_stun_binding_request_is_stun() -> None:
    assert classify(build_stun(BINDING, REQUEST, bytes(12))) is PacketKind.STUN


@pytest.mark.parametrize(
    ("first", "kind"),
    [
        (0, PacketKind.STUN),
        (3, PacketKind.STUN),
        (4, PacketKind.UNKNOWN),
        (16, PacketKind.UNKNOWN),  # ZRTP
        (19, PacketKind.UNKNOWN),
        (20, PacketKind.DTLS),  # change_cipher_spec
        (22, PacketKind.DTLS),  # handshake
        (63, PacketKind.DTLS),
        (64, PacketKind.UNKNOWN),  # TURN channel
        (127, PacketKind.UNKNOWN),
        (128, PacketKind.RTP),
        (0x90, PacketKind.RTP),  # with a header extension
        (191, PacketKind.RTP),
        (192, PacketKind.UNKNOWN),
        (255, PacketKind.UNKNOWN),
    ],
)
def test_first_byte_ranges(first: int, kind: PacketKind) -> None:
    assert classify(bytes([first, 96]) + bytes(40)) is kind


@pytest.mark.parametrize("packet_type", [192, 200, 201, 202, 203, 205, 206, 207, 223])
def test_rtcp_packet_types_are_rtcp(packet_type: int) -> None:
    assert classify(bytes([0x81, packet_type]) + bytes(10)) is PacketKind.RTCP


@pytest.mark.parametrize("second", [0, 96, 111, 127, 96 | 0x80, 111 | 0x80, 63, 224, 255])
def test_rtp_payload_types_with_or_without_marker_are_rtp(second: int) -> None:
    assert classify(bytes([0x80, second]) + bytes(10)) is PacketKind.RTP


def test_short_datagrams_are_unknown() -> None:
    assert classify(b"") is PacketKind.UNKNOWN
    assert classify(bytes(19)) is PacketKind.UNKNOWN  # a STUN header is 20
    assert classify(bytes([22]) + bytes(11)) is PacketKind.UNKNOWN  # a DTLS record header is 13
    assert classify(bytes([0x80, 96]) + bytes(MIN_RTP - 3)) is PacketKind.UNKNOWN
    assert classify(bytes([0x80, 200]) + bytes(MIN_RTCP - 3)) is PacketKind.UNKNOWN
    assert classify(bytes([0x80, 200]) + bytes(MIN_RTCP - 2)) is PacketKind.RTCP


@given(st.binary(max_size=64))
def test_any_bytes_get_a_kind_consistent_with_the_first_byte(data: bytes) -> None:
    kind = classify(data)
    assert isinstance(kind, PacketKind)
    assert classify(memoryview(data)) is kind
    if kind is PacketKind.STUN:
        assert data[0] <= 3
    elif kind is PacketKind.DTLS:
        assert 20 <= data[0] <= 63
    elif kind in (PacketKind.RTP, PacketKind.RTCP):
        assert data[0] >> 6 == 2
