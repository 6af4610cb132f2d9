"""The SRT wire codec: round trips, bounds, and arbitrary bytes raising only our error."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from arcly_trio.core.errors import RemoteProtocolError
from arcly_trio.protocols.srt import packet as p
from arcly_trio.protocols.srt.streamid import BadStreamId, parse_streamid

u32 = st.integers(0, 0xFFFFFFFF)
seqs = st.integers(0, p.SEQ_MASK)


@given(
    seqs,
    st.integers(0, p.MSG_MASK),
    u32,
    u32,
    st.binary(max_size=1316),
    st.integers(0, 3),
    st.booleans(),
    st.integers(0, 2),
    st.booleans(),
)
def test_data_round_trip(
    seq: int, msgno: int, ts: int, dest: int, payload: bytes, pp: int, order: bool, kk: int, rexmit: bool
) -> None:
    packet = p.DataPacket(seq, msgno, ts, dest, payload, pp, order, kk, rexmit)
    assert p.parse(packet.to_bytes()) == packet


@given(st.integers(0, 0x7FFF), st.integers(0, 0xFFFF), u32, u32, u32, st.binary(max_size=200))
def test_control_round_trip(kind: int, sub: int, info: int, ts: int, dest: int, body: bytes) -> None:
    packet = p.ControlPacket(kind, sub, info, ts, dest, body)
    assert p.parse(packet.to_bytes()) == packet


@given(st.binary(max_size=1600))
def test_arbitrary_bytes_raise_only_our_error(data: bytes) -> None:
    try:
        packet = p.parse(data)
        if isinstance(packet, p.ControlPacket):
            if packet.type == p.ControlType.HANDSHAKE:
                p.Handshake.parse(packet.body)
            elif packet.type == p.ControlType.NAK:
                p.decode_losses(packet.body)
            elif packet.type == p.ControlType.ACK:
                p.Ack.parse(packet.body)
    except RemoteProtocolError:
        pass


def test_packet_bounds() -> None:
    with pytest.raises(RemoteProtocolError):
        p.parse(bytes(15))
    with pytest.raises(RemoteProtocolError):
        p.parse(bytes(1501))


@given(st.text(max_size=120))
def test_streamid_round_trip(text: str) -> None:
    if "\0" in text or len(text.encode()) > p.MAX_STREAMID:
        return
    assert p.decode_streamid(p.encode_streamid(text)) == text


def test_streamid_wire_order_is_libsrt_s() -> None:
    # libsrt sends "abcdefg" as the words "dcba" and "\0gfe"
    assert p.encode_streamid("abcdefg") == b"dcba\0gfe"


def test_handshake_round_trip_with_extensions() -> None:
    hs = p.Handshake(
        5,
        0,
        5,
        1234,
        1500,
        8192,
        p.HandshakeType.CONCLUSION,
        77,
        99,
        bytes(16),
        (
            p.HsExtension(p.Extension.HSREQ, p.SrtHs(0x010501, 0xBF, 120, 0).to_bytes()),
            p.HsExtension(p.Extension.SID, p.encode_streamid("publish:live/cam")),
        ),
    )
    back = p.Handshake.parse(hs.to_bytes())
    assert back == hs
    assert p.decode_streamid(back.extension(p.Extension.SID) or b"") == "publish:live/cam"
    assert p.SrtHs.parse(back.extension(p.Extension.HSREQ) or b"").recv_delay == 120


def test_handshake_extension_longer_than_packet_is_refused() -> None:
    body = p.Handshake(5, 0, 0, 0, 1500, 8192, -1, 1, 1).to_bytes() + b"\x00\x05\x00\x10abcd"
    with pytest.raises(RemoteProtocolError):
        p.Handshake.parse(body)


def test_too_many_extensions_are_refused() -> None:
    body = p.Handshake(5, 0, 0, 0, 1500, 8192, -1, 1, 1).to_bytes() + b"\x00\x09\x00\x00" * 17
    with pytest.raises(RemoteProtocolError):
        p.Handshake.parse(body)


@given(st.lists(st.tuples(seqs, st.integers(0, 1000)), max_size=40))
def test_losses_round_trip(items: list[tuple[int, int]]) -> None:
    ranges = [(first, p.seq_add(first, span)) for first, span in items]
    assert p.decode_losses(p.encode_losses(ranges)) == ranges


def test_seq_arithmetic_wraps() -> None:
    assert p.seq_add(p.SEQ_MASK, 1) == 0
    assert p.seq_diff(0, p.SEQ_MASK) == 1
    assert p.seq_less(p.SEQ_MASK, 0)


@pytest.mark.parametrize(
    ("text", "resource", "publish", "token", "user"),
    [
        ("#!::r=live/cam,m=publish", "live/cam", True, None, None),
        ("#!::r=live/cam,m=request,s=abc,u=bob", "live/cam", False, "abc", "bob"),
        ("#!::r=live/cam,m=publish,t=sekrit", "live/cam", True, "sekrit", None),
        ("#!::r=live/cam,t=stream", "live/cam", False, None, None),
        ("#!::r=live/cam?token=q1,m=publish", "live/cam", True, "q1", None),
        ("publish:live/cam", "live/cam", True, None, None),
        ("publish:live/cam:alice:pw", "live/cam", True, "pw", "alice"),
        ("read:live/cam?token=z", "live/cam", False, "z", None),
        ("live/cam", "live/cam", False, None, None),
    ],
)
def test_streamid_forms(text: str, resource: str, publish: bool, token: str | None, user: str | None) -> None:
    route = parse_streamid(text)
    assert (route.resource, route.publish, route.token, route.user) == (resource, publish, token, user)


@pytest.mark.parametrize("text", ["#!::r=live/cam,m=bidirectional", "#!::r=live/cam,junk"])
def test_bad_streamids(text: str) -> None:
    with pytest.raises(BadStreamId):
        parse_streamid(text)
