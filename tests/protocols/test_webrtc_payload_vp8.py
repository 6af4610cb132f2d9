"""VP8 over RTP (arcly_trio.protocols.webrtc.payload.vp8, RFC 7741): payload descriptors read as
the RFC draws them, the descriptor packetize writes, a real libvpx clip round-tripped frame by
frame, hypothesis round trips, loss, and garbage that never raises."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arcly_trio.protocols.webrtc.payload.vp8 import (
    Vp8Depacketizer,
    Vp8Descriptor,
    Vp8Error,
    Vp8PayloadError,
    is_keyframe,
    packetize,
    parse_descriptor,
)
from tests._rtp_payloads import ivf_frames, push_all

FRAMES = ivf_frames("vp8.ivf")
KEY = b"\x10\x02\x00\x9d\x01\x2a\xa0\x00\x60\x00" + b"\x11" * 30  # P=0, start code, 160x96


def primed() -> Vp8Depacketizer:
    depacketizer = Vp8Depacketizer()
    assert push_all(depacketizer, packetize(KEY, 1200), 0)
    return depacketizer


def test_descriptors_as_rfc_7741_draws_them() -> None:
    # Section 4.2: no extension, S=1, PID 0.
    assert parse_descriptor(b"\x10\xaa") == Vp8Descriptor(non_reference=False, start=True, partition=0, size=1)
    # X, N, PID 3; I with a 7-bit picture ID, L, T with Y, K.
    assert parse_descriptor(b"\xa3\xf0\x11\x22\x7a\xff") == Vp8Descriptor(
        non_reference=True,
        start=False,
        partition=3,
        size=5,
        picture_id=0x11,
        tl0_pic_idx=0x22,
        tid=1,
        layer_sync=True,
        key_idx=0x1A,
    )
    # A 15-bit picture ID (M set).
    assert parse_descriptor(b"\x90\x80\xab\xcd").picture_id == 0x2BCD
    for truncated in (b"", b"\x80", b"\x80\x80", b"\x80\x80\x80", b"\x80\x40", b"\x80\x20"):
        with pytest.raises(Vp8Error):
            parse_descriptor(truncated)


def test_packetize_writes_a_15_bit_picture_id_and_s_on_the_first() -> None:
    packets = packetize(bytes(range(200)), 100, picture_id=0x8123)  # wraps to 15 bits
    assert [packet[:4] for packet in packets] == [b"\x90\x80\x81\x23", b"\x80\x80\x81\x23", b"\x80\x80\x81\x23"]
    assert b"".join(packet[4:] for packet in packets) == bytes(range(200))
    assert all(len(packet) <= 100 for packet in packets)


def test_every_frame_of_the_clip_round_trips() -> None:
    assert is_keyframe(FRAMES[0])
    for mtu in (100, 1200):
        depacketizer = Vp8Depacketizer()
        for index, frame in enumerate(FRAMES):
            packets = packetize(frame, mtu, picture_id=index)
            assert all(len(packet) <= mtu for packet in packets)
            [out] = push_all(depacketizer, packets, index * 9000)
            assert (out.payload, out.timestamp, out.config) == (frame, index * 9000, None)
            assert out.keyframe == is_keyframe(frame) == (index in (0, 6))
        assert depacketizer.discarded == 0


def test_packetize_refuses_an_empty_frame_or_a_tiny_mtu() -> None:
    for payload, mtu in ((b"", 1200), (KEY, 4)):
        with pytest.raises(Vp8PayloadError):
            packetize(payload, mtu)


def test_a_lost_packet_costs_the_pictures_up_to_the_next_keyframe() -> None:
    depacketizer = Vp8Depacketizer()
    out = []
    for index, frame in enumerate(FRAMES):
        packets = packetize(frame, 100)
        out += push_all(depacketizer, packets[1:] if index == 2 else packets, index, lost_first=index == 2)
    assert [unit.timestamp for unit in out] == [0, 1, 6, 7, 8, 9, 10, 11]
    # After a loss, a payload that starts a frame (S=1, PID 0) is used at once.
    depacketizer = primed()
    [unit] = push_all(depacketizer, packetize(KEY, 100), 9, lost_first=True)
    assert unit.keyframe and unit.timestamp == 9


def test_a_frame_without_its_start_is_dropped() -> None:
    depacketizer = primed()
    assert push_all(depacketizer, packetize(b"\x01" * 300, 100)[1:], 5) == []
    assert depacketizer.needs_keyframe and depacketizer.discarded == 3


@settings(max_examples=150, deadline=None)
@given(st.binary(min_size=1, max_size=20000), st.booleans(), st.integers(100, 1500), st.integers(0, 1 << 16))
def test_packetize_then_depacketize_gives_the_frame_back(body: bytes, key: bool, mtu: int, picture_id: int) -> None:
    frame = KEY + body if key else bytes([body[0] | 1]) + body[1:]
    packets = packetize(frame, mtu, picture_id=picture_id)
    assert all(len(packet) <= mtu for packet in packets)
    [unit] = push_all(primed(), packets, 1)
    assert (unit.payload, unit.keyframe) == (frame, key)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.binary(max_size=64), st.booleans(), st.integers(0, 3), st.booleans()), max_size=40))
def test_garbage_never_raises(pushes: list[tuple[bytes, bool, int, bool]]) -> None:
    depacketizer = primed()
    for payload, marker, timestamp, lost in pushes:
        for unit in depacketizer.push(payload, marker=marker, timestamp=timestamp, lost=lost):
            assert unit.payload


@given(st.binary(max_size=16))
def test_arbitrary_descriptors_raise_only_vp8_error(data: bytes) -> None:
    try:
        descriptor = parse_descriptor(data)
    except Vp8Error:
        return
    assert descriptor.size <= len(data)
