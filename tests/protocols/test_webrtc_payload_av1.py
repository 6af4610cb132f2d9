"""AV1 over RTP (arcly_trio.protocols.webrtc.payload.av1, the AOMedia payload format): aggregation
headers and OBU elements read as the spec draws them (W 0 and W > 0, Y/Z fragments, size fields
inside packets, temporal delimiters dropped), a real libaom clip round-tripped frame by frame with
the av1C equal to the one FFmpeg 8 writes, the sequence header prefix, hypothesis round trips,
loss and garbage that never raises."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arcly_trio.media.codecs.av1 import av1_config_record, parse_av1_config, strip_temporal_delimiter
from arcly_trio.protocols.webrtc.payload.av1 import (
    Av1Depacketizer,
    Av1PayloadError,
    packetize,
    parameter_sets,
)
from tests._rtp_payloads import ivf_frames, push_all

FRAMES = ivf_frames("av1.ivf")
# The av1C FFmpeg 8 writes when it muxes the clip into MP4 (`ffmpeg -i av1.ivf -c copy x.mp4`).
FFMPEG_AV1C = bytes.fromhex("81000c000a0a00000003b4fdf36be401")
SEQUENCE_HEADER = FRAMES[0][2:14]  # after the temporal delimiter (0x12 0x00)
TD = b"\x12\x00"
PADDING = bytes([15 << 3 | 2, 3]) + b"abc"  # OBU_PADDING with a size field


def tu(frame: bytes) -> bytes:
    """A temporal unit as the depacketizer gives it: without its temporal delimiter."""
    return bytes(strip_temporal_delimiter(frame))


def primed() -> Av1Depacketizer:
    depacketizer = Av1Depacketizer()
    assert push_all(depacketizer, packetize(FRAMES[0], 1200), 0)
    return depacketizer


def test_av1_config_record_is_what_ffmpeg_writes() -> None:
    assert av1_config_record(SEQUENCE_HEADER) == FFMPEG_AV1C
    assert parse_av1_config(FFMPEG_AV1C).sequence_header is not None
    assert parameter_sets(FFMPEG_AV1C) == (SEQUENCE_HEADER,)


def test_packets_carry_obus_without_size_fields_or_temporal_delimiter() -> None:
    [packet] = packetize(FRAMES[2], 1200)  # TD + a frame header OBU
    # Aggregation header: Z 0, Y 0, W 0, N 0; one element: its leb128 length, the OBU without
    # obu_has_size_field.
    assert packet == b"\x00\x02\x18\xa8"
    [unit] = push_all(primed(), [packet], 9)
    assert unit.payload == tu(FRAMES[2])


def test_the_first_packet_of_a_coded_video_sequence_has_n() -> None:
    packets = packetize(FRAMES[0], 100)
    assert packets[0][0] & 0x08
    assert not any(packet[0] & 0x08 for packet in packets[1:])
    assert not any(packet[0] & 0x08 for packet in packetize(FRAMES[1], 100))
    assert all(packet[0] & 0x30 == 0 for packet in packets)  # W 0


def test_w_counts_elements_and_the_last_has_no_length() -> None:
    # W 2: the first element after its length, the second running to the end of the packet;
    # OBUs that keep their size field, and a temporal delimiter, are read too.
    first = bytes([0x1A]) + b"\x01\xa8"  # OBU_FRAME_HEADER with a size field
    packet = bytes([0x20, len(TD)]) + TD + first
    depacketizer = primed()
    [unit] = depacketizer.push(packet, marker=True, timestamp=3)
    assert unit.payload == first
    packet = bytes([0x30, 1, 0x18, 1, 0x18]) + PADDING  # W 3
    [unit] = depacketizer.push(packet, marker=True, timestamp=4)
    assert unit.payload == b"\x1a\x00\x1a\x00" + PADDING
    assert depacketizer.discarded == 0


def test_an_obu_fragmented_over_packets_with_y_and_z() -> None:
    body = bytes(range(250))
    obu = bytes([6 << 3]) + body  # OBU_FRAME, no size field
    packets = [
        bytes([0x40, 100]) + obu[:100],  # Y
        bytes([0xC0, 100]) + obu[100:200],  # Z and Y
        bytes([0x80, len(obu) - 200]) + obu[200:],  # Z
    ]
    depacketizer = primed()
    assert push_all(depacketizer, packets, 7)[0].payload == bytes([6 << 3 | 2, 250, 1]) + body
    # A continuation without its beginning is dropped, and so is the rest of its picture.
    depacketizer = primed()
    assert push_all(depacketizer, packets[1:], 8) == []
    assert depacketizer.discarded == 2 and depacketizer.needs_keyframe


def test_every_frame_of_the_clip_round_trips() -> None:
    for mtu in (100, 1200):
        depacketizer = Av1Depacketizer()
        for index, frame in enumerate(FRAMES):
            packets = packetize(frame, mtu)
            assert all(len(packet) <= mtu for packet in packets)
            [out] = push_all(depacketizer, packets, index * 9000)
            assert (out.payload, out.timestamp) == (tu(frame), index * 9000)
            assert out.keyframe == (index in (0, 6))
            assert out.config == (FFMPEG_AV1C if index == 0 else None)
        assert depacketizer.discarded == 0


def test_the_prefix_is_sent_before_a_keyframe_without_sequence_header() -> None:
    bare = FRAMES[6][:2] + FRAMES[6][14:]  # the key frame without its sequence header
    [unit] = push_all(Av1Depacketizer(), packetize(bare, 100, prefix=parameter_sets(FFMPEG_AV1C)), 0)
    assert (unit.payload, unit.keyframe, unit.config) == (tu(FRAMES[6]), True, FFMPEG_AV1C)
    assert packetize(FRAMES[6], 100, prefix=parameter_sets(FFMPEG_AV1C)) == packetize(FRAMES[6], 100)
    # Without a sequence header it is no keyframe: nothing comes out of a fresh depacketizer.
    assert push_all(Av1Depacketizer(), packetize(bare, 100), 0) == []


def test_packetize_refuses_what_it_cannot_carry() -> None:
    for payload, mtu in ((b"\x80\x00", 1200), (b"\x32\x09\x00", 1200), (TD, 1200), (FRAMES[0], 4)):
        with pytest.raises(Av1PayloadError):
            packetize(payload, mtu)


def test_a_lost_packet_costs_the_pictures_up_to_the_next_keyframe() -> None:
    depacketizer = Av1Depacketizer()
    out = []
    for index, frame in enumerate(FRAMES):
        packets = packetize(frame, 100)
        out += push_all(depacketizer, packets[1:] if index == 1 else packets, index, lost_first=index == 1)
    assert [unit.timestamp for unit in out] == [0, 6, 7, 8, 9, 10, 11]


def _leb128(value: int) -> bytes:
    out = bytearray()
    while True:
        out.append((value & 0x7F) | (0x80 if value >> 7 else 0))
        value >>= 7
        if not value:
            return bytes(out)


obu_units = st.builds(
    lambda kind, extension, body: (
        bytes([kind << 3 | 2 | (4 if extension is not None else 0)])
        + (bytes([extension]) if extension is not None else b"")
        + _leb128(len(body))
        + body
    ),
    st.sampled_from([3, 4, 5, 6, 15]),
    st.none() | st.integers(0, 255),
    st.binary(max_size=3000),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(obu_units, min_size=1, max_size=10), st.booleans(), st.integers(100, 1500))
def test_packetize_then_depacketize_gives_the_temporal_unit_back(obus: list[bytes], delimiter: bool, mtu: int) -> None:
    stream = b"".join(obus)
    packets = packetize((TD if delimiter else b"") + stream, mtu)
    assert all(len(packet) <= mtu for packet in packets)
    [unit] = push_all(primed(), packets, 1)
    assert (unit.payload, unit.keyframe, unit.config) == (stream, False, None)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.binary(max_size=64), st.booleans(), st.integers(0, 3), st.booleans()), max_size=40))
def test_garbage_never_raises(pushes: list[tuple[bytes, bool, int, bool]]) -> None:
    depacketizer = primed()
    for payload, marker, timestamp, lost in pushes:
        for unit in depacketizer.push(payload, marker=marker, timestamp=timestamp, lost=lost):
            assert unit.payload
