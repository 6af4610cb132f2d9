"""H.265 over RTP (arcly_trio.protocols.webrtc.payload.h265, RFC 7798): the payload structures
written and read as the RFC draws them, a real libx265 clip round-tripped frame by frame, the
hvcC built from in-band parameter sets equal to the one FFmpeg 8 writes for that clip,
hypothesis round trips, loss, and garbage that never raises."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arcly_trio.media.codecs.hevc import hevc_config_record, parse_hevc_config
from arcly_trio.protocols.webrtc.payload.assembly import MAX_ACCESS_UNIT
from arcly_trio.protocols.webrtc.payload.h265 import (
    AP,
    FU,
    H265Depacketizer,
    H265PayloadError,
    packetize,
    parameter_sets,
)
from tests._rtp_payloads import hevc_access_units, hvcc, push_all

UNITS = hevc_access_units("h265.hevc")
# The hvcC FFmpeg 8 writes when it muxes the clip into MP4 (`ffmpeg -i h265.hevc -c copy x.mp4`).
FFMPEG_HVCC = bytes.fromhex(
    "0101600000009000000000001ef000fcfdf8f800000f03200001001840010c01ffff016000000300900000030000"
    "03001e959409210001002942010101600000030090000003000003001ea01420616595952930bc05a0200000030020"
    "000003014122000100064401c073c189"
)
VPS, SPS, PPS = (UNITS[0][1],), (UNITS[0][2],), (UNITS[0][3],)
IDR = bytes([19 << 1, 1]) + b"\xaf" * 40  # IDR_W_RADL
TRAIL = bytes([1 << 1, 1]) + b"\x55" * 40  # TRAIL_R


def primed() -> H265Depacketizer:
    """A depacketizer past its first keyframe."""
    depacketizer = H265Depacketizer()
    assert push_all(depacketizer, packetize(hvcc([IDR]), 1200), 0)
    return depacketizer


def test_the_clip_has_two_keyframes() -> None:
    assert len(UNITS) == 12
    assert [index for index, unit in enumerate(UNITS) if any(16 <= (nal[0] >> 1) & 0x3F <= 23 for nal in unit)] == [
        0,
        5,
    ]
    assert [(nal[0] >> 1) & 0x3F for nal in UNITS[0][:4]] == [35, 32, 33, 34]  # AUD, VPS, SPS, PPS


def test_hevc_config_record_is_what_ffmpeg_writes() -> None:
    record = hevc_config_record(VPS, SPS, PPS)
    assert record == FFMPEG_HVCC
    config = parse_hevc_config(record)
    assert (config.profile, config.level, config.vps, config.sps, config.pps) == (1, 30, VPS, SPS, PPS)
    assert parameter_sets(record) == VPS + SPS + PPS


def test_a_single_nal_unit_packet_is_the_nal_unit() -> None:
    assert packetize(hvcc([TRAIL]), 1200) == [TRAIL]


def test_small_nal_units_share_an_aggregation_packet() -> None:
    # RFC 7798 section 4.4.2, figure 7: payload header (type 48), then each NAL unit after a
    # 16-bit size; the header's layer id and TID are the lowest of the aggregated units.
    a = bytes([32 << 1, 1]) + b"\x01\x02"
    b = bytes([34 << 1, 2]) + b"\x03"
    [packet] = packetize(hvcc([a, b]), 1200)
    assert packet == bytes([AP << 1, 1]) + b"\x00\x04" + a + b"\x00\x03" + b
    assert push_all(primed(), [packet], 9)[0].payload == hvcc([a, b])


def test_a_large_nal_unit_is_fragmented() -> None:
    # RFC 7798 section 4.4.3, figures 9 and 10: payload header (type 49, the NAL unit's layer
    # and TID), FU header S|E|FuType, then the NAL unit without its two-byte header.
    nal = bytes([19 << 1, 1]) + bytes(range(256)) * 2
    packets = packetize(hvcc([nal]), 100)
    assert all(len(packet) <= 100 for packet in packets)
    assert [packet[:2] for packet in packets] == [bytes([FU << 1, 1])] * len(packets)
    assert [packet[2] for packet in packets] == [0x80 | 19] + [19] * (len(packets) - 2) + [0x40 | 19]
    assert b"".join(packet[3:] for packet in packets) == nal[2:]
    [unit] = push_all(H265Depacketizer(), packets, 0)
    assert unit.payload == hvcc([nal]) and unit.keyframe and unit.config is None


def test_every_frame_of_the_clip_round_trips() -> None:
    for mtu in (100, 1200):
        depacketizer = H265Depacketizer()
        for index, unit in enumerate(UNITS):
            packets = packetize(hvcc(unit), mtu)
            assert all(len(packet) <= mtu for packet in packets)
            [out] = push_all(depacketizer, packets, index * 9000)
            assert out.payload == hvcc(unit)
            assert out.timestamp == index * 9000
            assert out.keyframe == (index in (0, 5))
            assert out.config == (FFMPEG_HVCC if index == 0 else None)
        assert depacketizer.discarded == 0 and not depacketizer.needs_keyframe


def test_the_prefix_is_sent_before_a_keyframe_without_parameter_sets() -> None:
    prefix = parameter_sets(FFMPEG_HVCC)
    [unit] = push_all(H265Depacketizer(), packetize(hvcc([IDR]), 1200, prefix=prefix), 0)
    assert unit.payload == hvcc([*prefix, IDR])
    assert unit.config == FFMPEG_HVCC
    # An access unit with its own parameter sets gets no second copy.
    assert packetize(hvcc(UNITS[0]), 1200, prefix=prefix) == packetize(hvcc(UNITS[0]), 1200)


def test_packetize_refuses_what_it_cannot_carry() -> None:
    for payload, mtu in (
        (b"\x00\x00\x00\x09\x40", 1200),  # length past the end
        (hvcc([b"\x02"]), 1200),  # shorter than a NAL header
        (hvcc([bytes([AP << 1, 1, 0])]), 1200),  # a type RTP reserves
        (hvcc([TRAIL]), 4),
    ):
        with pytest.raises(H265PayloadError):
            packetize(payload, mtu)


def test_a_lost_packet_costs_the_pictures_up_to_the_next_keyframe() -> None:
    depacketizer = H265Depacketizer()
    out = []
    for index, unit in enumerate(UNITS):
        packets = packetize(hvcc(unit), 100)
        if index == 2:
            packets = packets[:1] + packets[2:]
            out += depacketizer.push(packets[0], marker=False, timestamp=index)
            out += push_all(depacketizer, packets[1:], index, lost_first=True)
            assert depacketizer.needs_keyframe
            continue
        out += push_all(depacketizer, packets, index)
    assert [unit.timestamp for unit in out] == [0, 1, 5, 6, 7, 8, 9, 10, 11]
    assert depacketizer.discarded == len(packetize(hvcc(UNITS[2]), 100)) - 1 + sum(
        len(packetize(hvcc(unit), 100)) for unit in UNITS[3:5]
    )


def test_an_access_unit_too_large_is_dropped() -> None:
    depacketizer = primed()
    big = TRAIL + b"\x00" * (1 << 20)
    for _ in range(MAX_ACCESS_UNIT // len(big) + 1):
        assert depacketizer.push(big, marker=False, timestamp=5) == []
    assert depacketizer.discarded > 0 and depacketizer.needs_keyframe
    assert depacketizer.push(big, marker=True, timestamp=5) == []


nal_units = st.builds(
    lambda kind, layer, tid, body: bytes([(kind << 1) | (layer >> 5), ((layer & 0x1F) << 3) | tid]) + body,
    st.integers(0, 47),
    st.integers(0, 63),
    st.integers(1, 7),
    st.binary(min_size=0, max_size=3000),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(nal_units, min_size=1, max_size=12), st.integers(100, 1500))
def test_packetize_then_depacketize_gives_the_access_unit_back(nals: list[bytes], mtu: int) -> None:
    packets = packetize(hvcc(nals), mtu)
    assert all(len(packet) <= mtu for packet in packets)
    depacketizer = primed()
    [unit] = push_all(depacketizer, packets, 1)
    assert unit.payload == hvcc(nals)
    assert unit.keyframe == any(16 <= (nal[0] >> 1) & 0x3F <= 23 for nal in nals)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.binary(max_size=64), st.booleans(), st.integers(0, 3), st.booleans()), max_size=40))
def test_garbage_never_raises(pushes: list[tuple[bytes, bool, int, bool]]) -> None:
    depacketizer = primed()
    for payload, marker, timestamp, lost in pushes:
        for unit in depacketizer.push(payload, marker=marker, timestamp=timestamp, lost=lost):
            assert unit.payload
    assert depacketizer.discarded >= 0
