"""VP9 over RTP (arcly_trio.protocols.webrtc.payload.vp9, RFC 9628): payload descriptors read as
the RFC draws them (non-flexible and flexible mode, the scalability structure), what packetize
writes, a real libvpx-vp9 clip round-tripped frame by frame with the vpcC equal to the one
FFmpeg 8 writes for it, the frame header reader, hypothesis round trips, loss and garbage."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arcly_trio.media.codecs.errors import CodecError
from arcly_trio.media.codecs.vp9 import (
    Vp9FrameHeader,
    parse_vp9_config,
    parse_vp9_frame_header,
    vp9_config_record,
    vp9_picture_size,
)
from arcly_trio.protocols.webrtc.payload.vp9 import (
    Vp9Depacketizer,
    Vp9Error,
    Vp9PayloadError,
    packetize,
    parse_descriptor,
)
from tests._rtp_payloads import ivf_frames, push_all

FRAMES = ivf_frames("vp9.ivf")
# The vpcC FFmpeg 8 writes when it muxes the clip into MP4 (`ffmpeg -i vp9.ivf -c copy x.mp4`).
FFMPEG_VPCC = bytes.fromhex("01000000000a820202020000")


def primed() -> Vp9Depacketizer:
    depacketizer = Vp9Depacketizer()
    assert push_all(depacketizer, packetize(FRAMES[0], 1200), 0)
    return depacketizer


def test_the_frame_header_of_a_key_frame_and_its_vpcc() -> None:
    header = parse_vp9_frame_header(FRAMES[0])
    assert header == Vp9FrameHeader(profile=0, keyframe=True, color_space=0, width=160, height=96)
    assert (header.width, header.height) == vp9_picture_size(FRAMES[0])
    assert vp9_config_record(header) == FFMPEG_VPCC
    config = parse_vp9_config(FFMPEG_VPCC)
    assert (config.profile, config.level, config.bit_depth, config.chroma_subsampling) == (0, 10, 8, 1)
    assert not parse_vp9_frame_header(FRAMES[1]).keyframe
    with pytest.raises(CodecError):
        parse_vp9_frame_header(b"\x00")


def test_descriptors_as_rfc_9628_draws_them() -> None:
    # Section 4.2, non-flexible mode: I (15-bit picture ID), L (TID 2, U, SID 0, D), TL0PICIDX,
    # B, then V with an SS of one layer with its size and one picture group of two references.
    data = bytes([0xAA | 0x02, 0x81, 0x02, 0x51, 0x07, 0x18, 0x01, 0x40, 0x00, 0xF0, 0x01, 0x28, 0x01, 0x02])
    descriptor = parse_descriptor(data)
    assert (descriptor.picture_id, descriptor.temporal_id, descriptor.spatial_id) == (0x102, 2, 0)
    assert (descriptor.tl0_pic_idx, descriptor.begin, descriptor.end, descriptor.flexible) == (7, True, False, False)
    assert descriptor.sizes == ((320, 240),)
    assert descriptor.size == len(data)
    # Flexible mode with P: reference indices, each N bit saying another follows.
    descriptor = parse_descriptor(bytes([0xDC, 0x05, 0x03, 0x05, 0x06]))
    assert (descriptor.flexible, descriptor.references, descriptor.size, descriptor.end) == (True, (1, 2, 3), 5, True)
    for truncated in (b"", b"\x80", b"\x80\x80", b"\x20", b"\x20\x00", b"\x50", b"\x02", b"\x02\x10\x00"):
        with pytest.raises(Vp9Error):
            parse_descriptor(truncated)
    with pytest.raises(Vp9Error):  # a fourth reference index
        parse_descriptor(bytes([0x50, 0x01, 0x01, 0x01, 0x01]))


def test_packetize_writes_picture_id_b_e_p_and_an_ss_on_key_frames() -> None:
    key = packetize(FRAMES[0], 100, picture_id=0x8005)
    first = parse_descriptor(key[0])
    assert (first.begin, first.end, first.predicted, first.picture_id, first.sizes) == (
        True,
        False,
        False,
        5,
        ((160, 96),),
    )
    last = parse_descriptor(key[-1])
    assert (last.begin, last.end, last.sizes) == (False, True, ())
    [only] = packetize(FRAMES[1], 1200, picture_id=6)
    descriptor = parse_descriptor(only)
    assert (descriptor.begin, descriptor.end, descriptor.predicted, descriptor.sizes) == (True, True, True, ())


def test_every_frame_of_the_clip_round_trips() -> None:
    for mtu in (100, 1200):
        depacketizer = Vp9Depacketizer()
        for index, frame in enumerate(FRAMES):
            packets = packetize(frame, mtu, picture_id=index)
            assert all(len(packet) <= mtu for packet in packets)
            [out] = push_all(depacketizer, packets, index * 9000)
            assert (out.payload, out.timestamp) == (frame, index * 9000)
            assert out.keyframe == (index in (0, 6))
            assert out.config == (FFMPEG_VPCC if index == 0 else None)
        assert depacketizer.discarded == 0


def test_packetize_refuses_an_empty_frame_or_a_tiny_mtu() -> None:
    for payload, mtu in ((b"", 1200), (FRAMES[0], 8)):
        with pytest.raises(Vp9PayloadError):
            packetize(payload, mtu)


def test_a_lost_packet_costs_the_pictures_up_to_the_next_keyframe() -> None:
    depacketizer = Vp9Depacketizer()
    out = []
    for index, frame in enumerate(FRAMES):
        packets = packetize(frame, 100)
        if index == 1:
            packets = packets[:-1]  # the end of the frame (and the marker) lost
        out += push_all(depacketizer, packets, index, lost_first=index == 2)
    assert [unit.timestamp for unit in out] == [0, 6, 7, 8, 9, 10, 11]
    assert depacketizer.discarded > 0


def test_higher_spatial_layers_are_skipped() -> None:
    depacketizer = primed()
    [packet] = packetize(FRAMES[1], 1200)
    upper = bytes([packet[0] | 0x20]) + packet[1:3] + bytes([0x02, 0x00]) + packet[3:]  # L: SID 1
    assert depacketizer.push(packet, marker=False, timestamp=1) == []
    [unit] = depacketizer.push(upper, marker=True, timestamp=1)
    assert unit.payload == FRAMES[1]


@settings(max_examples=150, deadline=None)
@given(st.integers(0, len(FRAMES) - 1), st.binary(max_size=20000), st.integers(100, 1500), st.integers(0, 1 << 16))
def test_packetize_then_depacketize_gives_the_frame_back(index: int, tail: bytes, mtu: int, picture_id: int) -> None:
    frame = FRAMES[index] + tail
    packets = packetize(frame, mtu, picture_id=picture_id)
    assert all(len(packet) <= mtu for packet in packets)
    [unit] = push_all(primed(), packets, 1)
    assert (unit.payload, unit.keyframe) == (frame, index in (0, 6))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.binary(max_size=64), st.booleans(), st.integers(0, 3), st.booleans()), max_size=40))
def test_garbage_never_raises(pushes: list[tuple[bytes, bool, int, bool]]) -> None:
    depacketizer = primed()
    for payload, marker, timestamp, lost in pushes:
        for unit in depacketizer.push(payload, marker=marker, timestamp=timestamp, lost=lost):
            assert unit.payload


@given(st.binary(max_size=40))
def test_arbitrary_descriptors_and_headers_raise_only_their_errors(data: bytes) -> None:
    try:
        assert parse_descriptor(data).size <= len(data)
    except Vp9Error:
        pass
    try:
        parse_vp9_frame_header(data)
    except CodecError:
        pass


def key_frame(width: int, height: int) -> bytes:
    """A VP9 key frame's uncompressed header (profile 0, shown, colour space unknown), padded."""
    bits = "10" + "00" + "0" + "0" + "1" + "0" + f"{0x498342:024b}" + "000" + "0"
    bits += f"{width - 1:016b}{height - 1:016b}"
    bits += "0" * (-len(bits) % 8)
    return int(bits, 2).to_bytes(len(bits) // 8, "big") + b"\x00" * 20


def test_the_vpcc_comes_again_when_the_key_frames_change() -> None:
    depacketizer = Vp9Depacketizer()
    configs = []
    for index, (width, height) in enumerate([(160, 96), (160, 96), (1920, 1080), (1920, 1080)]):
        [unit] = push_all(depacketizer, packetize(key_frame(width, height), 1200), index)
        assert unit.keyframe
        configs.append(unit.config)
    assert configs[0] == FFMPEG_VPCC and configs[1] is None and configs[3] is None
    assert configs[2] is not None and parse_vp9_config(configs[2]).level == 40


def test_a_frame_whose_marker_never_came_ends_at_the_next_timestamp() -> None:
    depacketizer = primed()
    [packet] = packetize(FRAMES[1], 1200)
    assert depacketizer.push(packet, marker=False, timestamp=1) == []
    [first, second] = depacketizer.push(packet, marker=True, timestamp=2)
    assert (first.timestamp, second.timestamp, first.payload) == (1, 2, FRAMES[1])
