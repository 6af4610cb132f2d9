"""STUN for ICE-lite (arcly_trio.protocols.webrtc.stun): the RFC 5769 test vectors read and
checked, ICE-lite answers round-trip, and garbage gives StunError only."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from arcly_trio.protocols.webrtc.stun import (
    BINDING,
    ICE_CONTROLLED,
    MAX_MESSAGE,
    MESSAGE_INTEGRITY,
    PRIORITY,
    REQUEST,
    SOFTWARE,
    SUCCESS,
    USE_CANDIDATE,
    USERNAME,
    XOR_MAPPED_ADDRESS,
    StunError,
    binding_success,
    build_stun,
    is_stun,
    parse_stun,
    parse_xor_address,
    xor_address,
)

# RFC 5769 section 2: test vectors (data of the RFC), short-term credential.
PASSWORD = b"VOkJxbRl1RmTxUk/WvJxBt"
TRANSACTION = bytes.fromhex("b7e7a701bc34d686fa87dfae")
SAMPLE_REQUEST = bytes.fromhex(
    "000100582112a442b7e7a701bc34d686fa87dfae"
    "80220010" + b"STUN test client".hex() + "002400046e0001ff"
    "80290008932ff9b151263b36"
    "00060009" + b"evtj:h6vY   ".hex() + "00080014"
    "9aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a2"
    "80280004e57a3bcf"
)
SAMPLE_IPV4_RESPONSE = bytes.fromhex(
    "0101003c2112a442b7e7a701bc34d686fa87dfae"
    "8022000b" + b"test vector ".hex() + "002000080001a147e112a643"
    "000800142b91f599fd9e90c38c7489f92af9ba53f06be7d7"
    "80280004c07d4c96"
)
SAMPLE_IPV6_RESPONSE = bytes.fromhex(
    "010100482112a442b7e7a701bc34d686fa87dfae"
    "8022000b" + b"test vector ".hex() + "002000140002a1470113a9faa5d3f179bc25f4b5bed2b9d9"
    "00080014a382954e4be67bf11784c97c8292c275bfe3ed41"
    "80280004c8fb0b4c"
)


def test_the_rfc_5769_request_is_read_and_both_checks_pass() -> None:
    assert is_stun(SAMPLE_REQUEST)
    message = parse_stun(SAMPLE_REQUEST)
    assert (message.method, message.cls, message.transaction_id) == (BINDING, REQUEST, TRANSACTION)
    assert message.username == "evtj:h6vY"
    assert message.get(SOFTWARE) == b"STUN test client"
    assert struct.unpack("!I", message.get(PRIORITY) or b"")[0] == 0x6E0001FF
    assert message.has(ICE_CONTROLLED) and not message.has(USE_CANDIDATE)
    assert message.integrity_ok(PASSWORD) and message.fingerprint_ok()
    assert not message.integrity_ok(b"wrong password")


@pytest.mark.parametrize(
    ("sample", "address"),
    [
        (SAMPLE_IPV4_RESPONSE, ("192.0.2.1", 32853)),
        (SAMPLE_IPV6_RESPONSE, ("2001:db8:1234:5678:11:2233:4455:6677", 32853)),
    ],
)
def test_the_rfc_5769_responses_give_their_mapped_address(sample: bytes, address: tuple[str, int]) -> None:
    message = parse_stun(sample)
    assert (message.method, message.cls) == (BINDING, SUCCESS)
    assert message.integrity_ok(PASSWORD) and message.fingerprint_ok()
    assert parse_xor_address(message.get(XOR_MAPPED_ADDRESS) or b"", TRANSACTION) == address
    # Built again from its parts, the response is the same bytes (padding aside: RFC 5769 pads
    # SOFTWARE with a space, this builder with zeros, so compare after the SOFTWARE padding).
    rebuilt = build_stun(
        BINDING,
        SUCCESS,
        TRANSACTION,
        [(SOFTWARE, b"test vector"), (XOR_MAPPED_ADDRESS, xor_address(*address, TRANSACTION))],
        integrity_key=PASSWORD,
    )
    assert parse_stun(rebuilt).get(XOR_MAPPED_ADDRESS) == message.get(XOR_MAPPED_ADDRESS)
    assert parse_stun(rebuilt).integrity_ok(PASSWORD) and parse_stun(rebuilt).fingerprint_ok()


def test_a_tampered_message_fails_its_checks() -> None:
    tampered = bytearray(SAMPLE_REQUEST)
    tampered[30] ^= 0x01  # a byte of SOFTWARE, covered by both
    message = parse_stun(bytes(tampered))
    assert not message.integrity_ok(PASSWORD) and not message.fingerprint_ok()


def test_the_ice_lite_answer_is_no_larger_than_the_request_and_checks_out() -> None:
    request = parse_stun(SAMPLE_REQUEST)
    answer = binding_success(request, ("203.0.113.9", 50000), PASSWORD)
    assert len(answer) <= len(SAMPLE_REQUEST)  # no amplification
    message = parse_stun(answer)
    assert (message.method, message.cls, message.transaction_id) == (BINDING, SUCCESS, TRANSACTION)
    assert parse_xor_address(message.get(XOR_MAPPED_ADDRESS) or b"", TRANSACTION) == ("203.0.113.9", 50000)
    assert message.integrity_ok(PASSWORD) and message.fingerprint_ok()
    assert [kind for kind, _ in message.attributes][-2:] == [MESSAGE_INTEGRITY, 0x8028]


def test_dtls_rtp_and_short_packets_are_not_stun() -> None:
    assert not is_stun(bytes([22, 254, 253]) + bytes(30))  # DTLS
    assert not is_stun(bytes([0x80, 96]) + bytes(30))  # RTP
    assert not is_stun(SAMPLE_REQUEST[:19])


_ATTRIBUTES = st.lists(st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=40)), max_size=8)


@given(
    st.integers(0, 0xFFF),
    st.integers(0, 3),
    st.binary(min_size=12, max_size=12),
    _ATTRIBUTES,
    st.none() | st.binary(max_size=32),
    st.booleans(),
)
def test_build_then_parse_gives_back_what_was_built(
    method: int, cls: int, transaction: bytes, attributes: list[tuple[int, bytes]], key: bytes | None, fp: bool
) -> None:
    data = build_stun(method, cls, transaction, attributes, integrity_key=key, fingerprint=fp)
    message = parse_stun(data)
    assert (message.method, message.cls, message.transaction_id) == (method, cls, transaction)
    extra = (1 if key is not None else 0) + (1 if fp else 0)
    assert list(message.attributes[: len(attributes)]) == attributes
    assert len(message.attributes) == len(attributes) + extra
    if key is not None and not any(kind == MESSAGE_INTEGRITY for kind, _ in attributes):
        assert message.integrity_ok(key)
    if fp:
        assert message.fingerprint_ok()


@given(st.binary(max_size=MAX_MESSAGE + 10))
def test_garbage_gives_stun_error_only(data: bytes) -> None:
    try:
        message = parse_stun(data)
    except StunError:
        return
    message.integrity_ok(b"key")
    message.fingerprint_ok()
    _ = message.username


@given(st.binary(max_size=64))
def test_a_valid_header_with_garbage_attributes_gives_stun_error_only(body: bytes) -> None:
    body = body + bytes(-len(body) % 4)
    data = struct.pack("!HHI12s", 0x0001, len(body), 0x2112A442, TRANSACTION) + body
    try:
        parse_stun(data)
    except StunError:
        pass


def test_limits_hold() -> None:
    with pytest.raises(StunError, match="over 1500"):
        parse_stun(SAMPLE_REQUEST + bytes(MAX_MESSAGE))
    many = build_stun(BINDING, REQUEST, TRANSACTION, [(USERNAME, b"")] * 33, fingerprint=False)
    with pytest.raises(StunError, match="over 32 attributes"):
        parse_stun(many)
    with pytest.raises(StunError, match="does not match"):
        parse_stun(SAMPLE_REQUEST[:-4])
