"""H.264 over RTP (arcly_trio.protocols.webrtc.payload.h264, RFC 6184 packetization-mode 1):
single NAL unit packets, STAP-A and FU-A laid out as the RFC says; any access unit round-trips
through packetize and the depacketizer for any MTU; loss, bad input and boundaries; the avcC
builder of arcly_trio.media.codecs.h264; garbage never raises."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arcly_trio.core.errors import LocalProtocolError
from arcly_trio.media.codecs.errors import CodecError
from arcly_trio.media.codecs.h264 import avc_config, parse_avc_config
from arcly_trio.protocols.webrtc.payload import AccessUnit
from arcly_trio.protocols.webrtc.payload.h264 import (
    FU_A,
    MAX_ACCESS_UNIT,
    STAP_A,
    Depacketizer,
    H264PacketizeError,
    packetize,
    parameter_sets,
)

SPS = bytes.fromhex("6742c01f8c8d40501e900f08846a")  # constrained baseline, level 3.1
PPS = bytes.fromhex("68ce3c80")
IDR = bytes.fromhex("65b8") + bytes(range(40))
SLICE = bytes.fromhex("41e0") + bytes(range(30))


def avcc(*nals: bytes) -> bytes:
    return b"".join(len(nal).to_bytes(4, "big") + nal for nal in nals)


def depacketize(depacketizer: Depacketizer, payloads: list[bytes], timestamp: int) -> list[AccessUnit]:
    out: list[AccessUnit] = []
    for index, payload in enumerate(payloads):
        out += depacketizer.push(payload, marker=index == len(payloads) - 1, timestamp=timestamp)
    return out


def test_avc_config_writes_a_record_that_parses_back() -> None:
    record = avc_config([SPS], [PPS])
    assert record[:6] == bytes((1, 0x42, 0xC0, 0x1F, 0xFF, 0xE1))
    config = parse_avc_config(record)
    assert (config.profile, config.compatibility, config.level, config.nal_length_size) == (0x42, 0xC0, 0x1F, 4)
    assert (config.sps, config.pps) == ((SPS,), (PPS,))
    assert parameter_sets(record) == (SPS, PPS)
    with pytest.raises(CodecError):
        avc_config([b"\x67\x42"], [PPS])
    with pytest.raises(CodecError):
        avc_config([], [PPS])


def test_small_nal_units_share_one_stap_a() -> None:
    # RFC 6184 5.7.1: STAP-A header (F, max NRI, type 24), then each unit after a 16-bit size.
    (packet,) = packetize(avcc(b"\x09\xf0", SPS, PPS, IDR), 1200)
    assert packet[0] == 0x60 | STAP_A
    assert packet[1:] == b"".join(len(n).to_bytes(2, "big") + n for n in (SPS, PPS, IDR))


def test_a_nal_unit_alone_goes_as_a_single_nal_unit_packet() -> None:
    assert packetize(avcc(SLICE, b"\x0c\xff\xff"), 1200) == [SLICE]  # filler data dropped
    assert packetize(avcc(SLICE, SLICE), len(SLICE) + 2) == [SLICE, SLICE]


def test_a_large_nal_unit_is_cut_into_fu_a_fragments() -> None:
    """As few fragments as full ones would take, balanced: one size, the last at most a byte
    per fragment shorter (a WHEP viewer pads it and sends its Opus packet in the same GSO run)."""
    nal = b"\x65" + bytes(i % 251 for i in range(2999))
    packets = packetize(avcc(nal), 1200)
    assert [len(p) for p in packets] == [1002, 1002, 1001]  # 2998 bytes after the NAL header in 3
    assert all(p[0] == (0x60 | FU_A) for p in packets)  # FU indicator: F, NRI of the unit, 28
    assert [p[1] for p in packets] == [0x80 | 5, 5, 0x40 | 5]  # FU header: S, E, type
    assert b"".join(p[2:] for p in packets) == nal[1:]


def test_prefix_goes_before_a_keyframe_without_parameter_sets_only() -> None:
    assert packetize(avcc(IDR), 1200, prefix=(SPS, PPS)) == packetize(avcc(SPS, PPS, IDR), 1200)
    assert packetize(avcc(SLICE), 1200, prefix=(SPS, PPS)) == [SLICE]
    assert packetize(avcc(SPS, PPS, IDR), 1200, prefix=(SPS, PPS)) == packetize(avcc(SPS, PPS, IDR), 1200)


def test_packetize_refuses_what_it_cannot_cut() -> None:
    with pytest.raises(H264PacketizeError):
        packetize(b"\x00\x00\x00\x09\x65", 1200)
    with pytest.raises(LocalProtocolError):
        packetize(avcc(IDR), 2)


def test_the_depacketizer_waits_for_a_keyframe_with_parameter_sets() -> None:
    d = Depacketizer()
    assert d.needs_keyframe
    assert depacketize(d, [SLICE], 1) == [] and d.discarded == 1
    assert depacketize(d, [IDR], 2) == []  # a keyframe, but no SPS/PPS known yet
    assert depacketize(d, packetize(avcc(SPS, PPS), 1200), 3) == []  # parameter sets alone: kept
    (au,) = depacketize(d, [IDR], 4)
    assert au == AccessUnit(4, avcc(IDR), True, avc_config([SPS], [PPS]))
    assert not d.needs_keyframe
    assert depacketize(d, [SLICE], 5) == [AccessUnit(5, avcc(SLICE), False, None)]


def test_parameter_sets_stay_in_the_payload_and_a_change_gives_a_new_config() -> None:
    d = Depacketizer()
    (first,) = depacketize(d, packetize(avcc(SPS, PPS, IDR), 1200), 1)
    assert first.payload == avcc(SPS, PPS, IDR) and first.config == avc_config([SPS], [PPS])
    (same,) = depacketize(d, packetize(avcc(SPS, PPS, IDR), 1200), 2)
    assert same.config is None
    other = SPS[:3] + b"\x28" + SPS[4:]
    (changed,) = depacketize(d, packetize(avcc(other, PPS, IDR), 1200), 3)
    assert changed.config == avc_config([other], [PPS])


def test_a_timestamp_change_ends_an_access_unit_without_marker() -> None:
    d = Depacketizer()
    out = d.push(packetize(avcc(SPS, PPS, IDR), 1200)[0], marker=False, timestamp=10)
    assert out == []
    out = d.push(SLICE, marker=False, timestamp=20)
    assert [au.timestamp for au in out] == [10]
    assert d.push(SLICE, marker=True, timestamp=20) == [AccessUnit(20, avcc(SLICE, SLICE), False, None)]


def test_loss_drops_the_access_unit_and_waits_for_the_next_keyframe() -> None:
    d = Depacketizer()
    depacketize(d, packetize(avcc(SPS, PPS, IDR), 1200), 1)
    big = b"\x41" + bytes(3000)
    fragments = packetize(avcc(big), 1200)
    assert d.push(fragments[0], marker=False, timestamp=2) == []
    assert d.push(fragments[2], marker=True, timestamp=2, lost=True) == []  # the middle one lost
    assert d.needs_keyframe and d.discarded == 2
    assert depacketize(d, [SLICE], 3) == []
    (au,) = depacketize(d, packetize(avcc(SPS, PPS, IDR), 1200), 4)
    assert au.keyframe and au.config is None


def test_a_missing_fragment_start_or_end_breaks_the_access_unit() -> None:
    d = Depacketizer()
    depacketize(d, packetize(avcc(SPS, PPS, IDR), 1200), 1)
    fragments = packetize(avcc(b"\x41" + bytes(3000)), 1200)
    assert depacketize(d, fragments[1:], 2) == [] and d.needs_keyframe
    depacketize(d, packetize(avcc(SPS, PPS, IDR), 1200), 3)
    assert depacketize(d, fragments[:2], 4) == [] and d.needs_keyframe


@pytest.mark.parametrize(
    "payload",
    [b"", b"\x98\x00", bytes((STAP_A, 0, 9, 1)), bytes((STAP_A, 0)), bytes((STAP_A, 0, 0)), bytes((FU_A, 0x85))],
)
def test_malformed_payloads_are_dropped_and_counted(payload: bytes) -> None:
    d = Depacketizer()
    depacketize(d, packetize(avcc(SPS, PPS, IDR), 1200), 1)
    assert d.push(payload, marker=True, timestamp=2) == []
    assert d.discarded == 1 and d.needs_keyframe


def test_other_packet_types_are_discarded() -> None:
    d = Depacketizer()
    depacketize(d, packetize(avcc(SPS, PPS, IDR), 1200), 1)
    assert d.push(bytes((25, 1, 2)), marker=False, timestamp=2) == []  # STAP-B
    assert d.push(SLICE, marker=True, timestamp=2) == [AccessUnit(2, avcc(SLICE), False, None)]
    assert d.discarded == 1


def test_an_endless_access_unit_is_bounded() -> None:
    d = Depacketizer()
    depacketize(d, packetize(avcc(SPS, PPS, IDR), 1200), 1)
    chunk = b"\x41" + bytes(60000)
    for _ in range(MAX_ACCESS_UNIT // len(chunk) + 5):
        assert d.push(chunk, marker=False, timestamp=2) == []
    assert d.push(SLICE, marker=True, timestamp=2) == []
    assert d.needs_keyframe and d.discarded == MAX_ACCESS_UNIT // len(chunk) + 6


nal_units = st.builds(
    lambda header, body: bytes((header,)) + body,
    st.integers(0, 3).flatmap(lambda nri: st.sampled_from([1, 2, 5, 6]).map(lambda kind: (nri << 5) | kind)),
    st.binary(max_size=3000),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(nal_units, min_size=1, max_size=8), st.lists(nal_units, min_size=1, max_size=8), st.integers(100, 1500))
def test_any_access_units_round_trip_for_any_mtu(first: list[bytes], second: list[bytes], mtu: int) -> None:
    keyframe = [SPS, PPS, IDR, *first]
    d = Depacketizer()
    out = []
    for timestamp, nals in ((1000, keyframe), (4000, second)):
        payloads = packetize(avcc(*nals), mtu)
        assert all(len(p) <= mtu for p in payloads)
        out += depacketize(d, payloads, timestamp)
    assert out == [
        AccessUnit(1000, avcc(*keyframe), True, avc_config([SPS], [PPS])),
        AccessUnit(4000, avcc(*second), any(n[0] & 0x1F == 5 for n in second), None),
    ]
    assert d.discarded == 0


@given(st.lists(st.tuples(st.binary(max_size=60), st.booleans(), st.integers(0, 3), st.booleans()), max_size=40))
def test_garbage_never_raises_from_push(pushes: list[tuple[bytes, bool, int, bool]]) -> None:
    d = Depacketizer()
    depacketize(d, packetize(avcc(SPS, PPS, IDR), 1200), 0)
    for payload, marker, timestamp, lost in pushes:
        for au in d.push(payload, marker=marker, timestamp=timestamp, lost=lost):
            assert au.payload


@given(st.lists(st.binary(min_size=1, max_size=40), max_size=20))
def test_stap_a_garbage_never_raises_from_push(units: list[bytes]) -> None:
    d = Depacketizer()
    body = b"".join(len(u).to_bytes(2, "big") + u for u in units)
    d.push(bytes((STAP_A,)) + body, marker=True, timestamp=0)
    d.push(bytes((STAP_A,)) + body[:-1], marker=True, timestamp=1)


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 60_000), st.integers(100, 1500))
def test_fragments_are_as_few_as_full_ones_and_balanced(length: int, mtu: int) -> None:
    nal = b"\x41" + bytes(length - 1)
    packets = packetize(avcc(nal), mtu)
    if length <= mtu:
        assert packets == [nal]
        return
    sizes = [len(p) for p in packets]
    assert len(sizes) == -(-(length - 1) // (mtu - 2)) and max(sizes) <= mtu
    assert set(sizes[:-1]) == {sizes[0]} and 0 <= sizes[0] - sizes[-1] < len(sizes)
