"""RTCP (arcly_trio.protocols.webrtc.rtcp): compound packets laid out byte by byte from RFC 3550,
4585, 5104 and the REMB draft are read; what we build parses back to the same values; NACK
PID+BLP packing round-trips for any set of sequence numbers; round-trip time from LSR/DLSR;
garbage gives RtcpError only."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from arcly_trio.protocols.webrtc.rtcp import (
    MAX_NACK_SEQUENCES,
    Bye,
    Fir,
    Nack,
    Pli,
    ReceiverReport,
    Remb,
    ReportBlock,
    RtcpBuildError,
    RtcpError,
    SenderReport,
    bye,
    fir,
    is_rtcp,
    nack,
    ntp_timestamp,
    parse_rtcp,
    pli,
    receiver_report,
    remb,
    rtt_from_report,
    sdes_cname,
    sender_report,
)

# RFC 3550 6.4.1 SR with one report block, then SDES (6.5) CNAME "ab", laid out by hand.
SR_SDES = bytes.fromhex(
    "81c8000c"  # V=2 RC=1 PT=200 length 12
    "11223344"  # SSRC of sender
    "e5f3a1b2"
    "80000000"  # NTP: seconds, fraction 0.5
    "00015f90"  # RTP timestamp 90000
    "00000064"
    "00002710"  # 100 packets, 10000 octets
    "55667788"
    "19"
    "fffffe"
    "0001ffff"
    "00000020"
    "a1b2c3d4"
    "00010000"  # block: lost -2
    "81ca0003"
    "11223344"
    "01026162"
    "00000000"  # SDES CNAME "ab", null padded
)


def test_a_sender_report_and_sdes_are_read() -> None:
    packets = parse_rtcp(SR_SDES)
    block = ReportBlock(0x55667788, 0x19, -2, 0x1FFFF, 0x20, 0xA1B2C3D4, 0x10000)
    assert packets == [SenderReport(0x11223344, (0xE5F3A1B2 << 32) | 0x80000000, 90000, 100, 10000, (block,))]
    sr = packets[0]
    assert isinstance(sr, SenderReport)
    assert sr.compact == 0xA1B28000
    assert sr.unix_time == pytest.approx(0xE5F3A1B2 - 2_208_988_800 + 0.5)


def test_building_a_sender_report_gives_the_same_bytes() -> None:
    block = ReportBlock(0x55667788, 0x19, -2, 0x1FFFF, 0x20, 0xA1B2C3D4, 0x10000)
    built = sender_report(0x11223344, 0xE5F3A1B2 - 2_208_988_800 + 0.5, 90000, 100, 10000, [block])
    assert built + sdes_cname(0x11223344, "ab") == SR_SDES


def test_feedback_messages_are_read() -> None:
    data = (
        bytes.fromhex("81cd0003000000010000000200648001")  # NACK PID 100, BLP bits 0, 15
        + bytes.fromhex("81ce00020000000100000002")  # PLI
        + bytes.fromhex("84ce000400000001000000000000000207000000")  # FIR seq 7
        + bytes.fromhex("8fce0005000000010000000052454d42010bd09000000002")  # REMB
        + bytes.fromhex("8fcd00020000000100000002")  # transport-cc: skipped
        + bytes.fromhex("81cb00020000000203627965")  # BYE "bye"
    )
    assert parse_rtcp(data) == [
        Nack(1, 2, (100, 101, 116)),
        Pli(1, 2),
        Fir(1, ((2, 7),)),
        Remb(1, 0x3D090 << 2, (2,)),
        Bye((2,), "bye"),
    ]


def test_padding_on_the_last_packet_is_stripped() -> None:
    data = bytes.fromhex("a1c900020000000900000004")
    assert parse_rtcp(bytes.fromhex("a0c900020000000900000004")) == [ReceiverReport(9)]
    with pytest.raises(RtcpError):
        parse_rtcp(data)  # RC=1 but the block is padding


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x80\xc9\x00",
        bytes.fromhex("40c9000100000009"),  # version 1
        bytes.fromhex("80c9000200000009"),  # length past the end
        bytes.fromhex("81c9000100000009"),  # a block announced, none there
        bytes.fromhex("80c8000100000009"),  # SR without sender info
        bytes.fromhex("a0c9000100000000"),  # padding 0
        bytes.fromhex("a0c9000100000009") + bytes.fromhex("80c9000100000009"),  # padding not last
        bytes.fromhex("81cd000200000001000000020064"),  # NACK entry cut (length lies)
        bytes.fromhex("81cd000100000001"),  # feedback without media SSRC
        bytes.fromhex("8fce0003000000010000000052454d42"),  # REMB cut short
        bytes.fromhex("82cb000100000001"),  # BYE of 2 with 1
    ],
)
def test_malformed_datagrams_raise_rtcp_error(data: bytes) -> None:
    with pytest.raises(RtcpError):
        parse_rtcp(data)


def test_what_we_build_parses_back() -> None:
    block = ReportBlock(5, 10, 1234, 70000, 42, 0x12345678, 3000)
    compound = (
        receiver_report(7, [block])
        + sdes_cname(7, "arcly")
        + pli(7, 5)
        + fir(7, 5, 300)
        + remb(7, 1_600_000, [5, 6])
        + bye([7], "done")
    )
    assert parse_rtcp(compound) == [
        ReceiverReport(7, (block,)),
        Pli(7, 5),
        Fir(7, ((5, 300 & 0xFF),)),
        Remb(7, 1_600_000, (5, 6)),
        Bye((7,), "done"),
    ]
    assert is_rtcp(compound) and not is_rtcp(bytes.fromhex("80600001"))


def test_builders_refuse_what_they_cannot_encode() -> None:
    with pytest.raises(RtcpBuildError):
        receiver_report(1, [ReportBlock(1)] * 32)
    with pytest.raises(RtcpBuildError):
        receiver_report(1, [ReportBlock(1, cumulative_lost=1 << 23)])
    with pytest.raises(RtcpBuildError):
        pli(1 << 32, 0)
    with pytest.raises(RtcpBuildError):
        nack(1, 2, [])
    with pytest.raises(RtcpBuildError):
        sdes_cname(1, "x" * 256)


@given(st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=200))
def test_nack_packing_round_trips(seqs: list[int]) -> None:
    (parsed,) = parse_rtcp(nack(1, 2, seqs))
    assert isinstance(parsed, Nack)
    assert sorted(parsed.sequences) == sorted(set(seqs))
    assert len(parsed.sequences) == len(set(parsed.sequences))


def test_nack_packing_is_tight_across_the_wrap() -> None:
    data = nack(1, 2, [0xFFFE, 0xFFFF, 0, 14])
    assert len(data) == 16  # one PID+BLP entry
    assert parse_rtcp(data) == [Nack(1, 2, (0xFFFE, 0xFFFF, 0, 14))]


def test_nack_expansion_is_bounded() -> None:
    entries = b"".join(struct.pack("!HH", i * 17, 0xFFFF) for i in range(50))
    data = bytes((0x81, 205)) + struct.pack("!H", 2 + len(entries) // 4) + struct.pack("!II", 1, 2) + entries
    (parsed,) = parse_rtcp(data)
    assert isinstance(parsed, Nack) and len(parsed.sequences) == 850
    both = parse_rtcp(data + data)
    assert sum(len(p.sequences) for p in both if isinstance(p, Nack)) == MAX_NACK_SEQUENCES


@given(
    st.integers(0, 0xFFFFFFFF),
    st.floats(0, 4e9, allow_nan=False),
    st.integers(0, 0xFFFFFFFF),
    st.lists(
        st.builds(
            ReportBlock,
            st.integers(0, 0xFFFFFFFF),
            st.integers(0, 255),
            st.integers(-(1 << 23), (1 << 23) - 1),
            st.integers(0, 0xFFFFFFFF),
            st.integers(0, 0xFFFFFFFF),
            st.integers(0, 0xFFFFFFFF),
            st.integers(0, 0xFFFFFFFF),
        ),
        max_size=31,
    ),
)
def test_sender_reports_round_trip(ssrc: int, when: float, ts: int, blocks: list[ReportBlock]) -> None:
    (sr,) = parse_rtcp(sender_report(ssrc, when, ts, 1 << 33, 5, blocks))
    assert isinstance(sr, SenderReport)
    assert (sr.ssrc, sr.rtp_timestamp, sr.packets, sr.octets, sr.reports) == (ssrc, ts, 0, 5, tuple(blocks))
    assert sr.ntp == ntp_timestamp(when)


@given(st.integers(0, (1 << 42) - 1))
def test_remb_keeps_18_bits_of_mantissa(bitrate: int) -> None:
    (parsed,) = parse_rtcp(remb(1, bitrate, [2]))
    assert isinstance(parsed, Remb)
    assert parsed.bitrate <= bitrate and bitrate - parsed.bitrate < max(1, bitrate >> 17)


def test_round_trip_time_from_lsr_and_dlsr() -> None:
    # RFC 3550 6.4.1: RTT = arrival - LSR - DLSR; the receiver held the SR 1.25 s, the path took 0.5 s.
    sent = 1_700_000_000.25
    lsr = (ntp_timestamp(sent) >> 16) & 0xFFFFFFFF
    block = ReportBlock(1, lsr=lsr, dlsr=5 * 65536 // 4)  # held 1.25 s by the receiver
    assert rtt_from_report(block, sent + 1.25 + 0.5) == pytest.approx(0.5, abs=1e-4)
    assert rtt_from_report(ReportBlock(1), sent) is None
    assert rtt_from_report(block, sent) is None  # negative


@given(st.binary(max_size=300))
def test_garbage_raises_only_rtcp_error(data: bytes) -> None:
    try:
        parse_rtcp(data)
    except RtcpError:
        pass


@given(st.lists(st.tuples(st.integers(0, 31), st.integers(192, 210), st.binary(max_size=40)), max_size=5))
def test_well_framed_garbage_raises_only_rtcp_error(parts: list[tuple[int, int, bytes]]) -> None:
    data = b""
    for count, kind, body in parts:
        body += bytes(-len(body) % 4)
        data += bytes((0x80 | count, kind)) + struct.pack("!H", len(body) // 4) + body
    try:
        parse_rtcp(data)
    except RtcpError:
        pass
