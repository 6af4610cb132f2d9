"""RTP (arcly_trio.protocols.webrtc.rtp): packets and RFC 8285 header extensions read and
written, sequence arithmetic across the wrap, the reorder buffer's ordering, loss, NACK and
bounds, and the send history ring; garbage gives RtpError only."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from arcly_trio.protocols.webrtc.rtp import (
    RTP_HEADER,
    ReorderBuffer,
    RtpBuildError,
    RtpError,
    RtpPacket,
    SendHistory,
    SequenceUnwrapper,
    TimestampUnwrapper,
    build_rtp,
    parse_rtp,
    rtp_header,
    seq_newer,
)

# A packet as Chrome sends it: V=2, X=1, M=1, PT 96, seq 0x1234, ts 0xdeadbeef, SSRC 0x11223344,
# one-byte extensions (RFC 8285 4.2) id 1 (1 byte: 0x5a), id 3 (3 bytes), then two padding bytes.
CHROME = bytes.fromhex("90e01234deadbeef11223344bede0002105a3201020300006869")


def packet(seq: int, ts: int = 0) -> RtpPacket:
    return RtpPacket(payload_type=96, sequence=seq & 0xFFFF, timestamp=ts, ssrc=1, marker=False, payload=b"x")


def test_a_known_packet_with_one_byte_extensions_is_read() -> None:
    p = parse_rtp(CHROME)
    assert (p.payload_type, p.sequence, p.timestamp, p.ssrc, p.marker) == (96, 0x1234, 0xDEADBEEF, 0x11223344, True)
    assert p.extensions == ((1, b"\x5a"), (3, b"\x01\x02\x03"))
    assert p.extension(3) == b"\x01\x02\x03" and p.extension(2) is None
    assert p.payload == b"hi"
    assert build_rtp(96, 0x1234, 0xDEADBEEF, 0x11223344, b"hi", marker=True, extensions=p.extensions) == CHROME


def test_two_byte_extensions_padding_and_csrcs() -> None:
    # RFC 8285 4.3: profile 0x1000, id 200 with 0 bytes, id 2 with 2 bytes; two CSRCs; 3 bytes padding.
    data = bytes.fromhex("b26f00010000000200000003000000050000000610000002c8000202abcd0000") + b"pl" + bytes((0, 0, 3))
    p = parse_rtp(data)
    assert p.csrcs == (5, 6)
    assert p.extensions == ((200, b""), (2, b"\xab\xcd"))
    assert p.payload == b"pl"
    assert p.payload_type == 0x6F and not p.marker
    built = build_rtp(0x6F, 1, 2, 3, b"pl", extensions=p.extensions)
    assert parse_rtp(built).extensions == p.extensions


def test_an_extension_block_of_another_profile_is_skipped() -> None:
    data = RTP_HEADER.pack(0x90, 96, 1, 2, 3) + bytes.fromhex("abcd0001ffffffff") + b"payload"
    p = parse_rtp(data)
    assert p.extensions == () and p.payload == b"payload"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x80" * 11,
        RTP_HEADER.pack(0x40, 96, 1, 2, 3),  # version 1
        RTP_HEADER.pack(0x81, 96, 1, 2, 3),  # a CSRC missing
        RTP_HEADER.pack(0x90, 96, 1, 2, 3) + b"\xbe\xde",  # extension header cut short
        RTP_HEADER.pack(0x90, 96, 1, 2, 3) + bytes.fromhex("bede0002") + b"\x10\x01",  # runs past
        RTP_HEADER.pack(0x90, 96, 1, 2, 3) + bytes.fromhex("bede0001") + b"\x13\x01\x02\x03",  # element past block
        RTP_HEADER.pack(0xA0, 96, 1, 2, 3) + b"ab\x00",  # padding 0
        RTP_HEADER.pack(0xA0, 96, 1, 2, 3) + b"ab\x09",  # padding past the header
    ],
)
def test_malformed_packets_raise_rtp_error(data: bytes) -> None:
    with pytest.raises(RtpError):
        parse_rtp(data)


def test_build_refuses_what_it_cannot_encode() -> None:
    with pytest.raises(RtpBuildError):
        build_rtp(128, 0, 0, 0, b"")
    with pytest.raises(RtpBuildError):
        build_rtp(96, 0, 0, 0, b"", extensions=[(0, b"\x01" * 300)])


def test_the_fast_header_matches_build_and_wraps() -> None:
    assert rtp_header(96, 0x10005, 0x1_0000_0007, 9, True) == build_rtp(96, 5, 7, 9, b"", marker=True)
    assert len(rtp_header(0, 0, 0, 0, False)) == 12


extension_lists = st.one_of(
    st.lists(st.tuples(st.integers(1, 14), st.binary(min_size=1, max_size=16)), max_size=6),
    st.lists(st.tuples(st.integers(1, 255), st.binary(max_size=255)), max_size=4),
)


@given(
    st.integers(0, 127),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.binary(max_size=300),
    st.booleans(),
    extension_lists,
)
def test_build_then_parse_round_trips(
    pt: int, seq: int, ts: int, ssrc: int, payload: bytes, marker: bool, extensions: list[tuple[int, bytes]]
) -> None:
    p = parse_rtp(build_rtp(pt, seq, ts, ssrc, payload, marker=marker, extensions=extensions))
    assert p == RtpPacket(pt, seq, ts, ssrc, marker, payload, (), tuple(extensions))


@given(st.binary(max_size=200))
def test_garbage_raises_only_rtp_error(data: bytes) -> None:
    try:
        parse_rtp(data)
    except RtpError:
        pass


@given(st.binary(min_size=12, max_size=200))
def test_garbage_with_version_2_raises_only_rtp_error(data: bytes) -> None:
    try:
        parse_rtp(bytes([0x80 | (data[0] & 0x3F)]) + data[1:])
    except RtpError:
        pass


def test_sequence_arithmetic_across_the_wrap() -> None:
    assert seq_newer(1, 0) and seq_newer(0, 0xFFFF) and not seq_newer(0xFFFF, 0)
    assert not seq_newer(5, 5) and not seq_newer(0x8000, 0)
    unwrap = SequenceUnwrapper()
    assert [unwrap.unwrap(s) for s in (0xFFFE, 0xFFFF, 0, 0xFFFD, 1, 0x8000, 0x0002)] == [
        0xFFFE,
        0xFFFF,
        0x10000,
        0xFFFD,
        0x10001,
        0x18000,
        0x10002,
    ]
    timestamps = TimestampUnwrapper()
    assert [timestamps.unwrap(t) for t in (0xFFFFFF00, 0x100, 0xFFFFFFF0)] == [0xFFFFFF00, 0x1_0000_0100, 0xFFFFFFF0]


@given(st.integers(0, 0xFFFF), st.lists(st.integers(-0x7FFF, 0x7FFF), max_size=50))
def test_unwrapping_follows_any_walk_of_small_steps(start: int, steps: list[int]) -> None:
    unwrap = SequenceUnwrapper()
    assert unwrap.unwrap(start) == start
    newest = start
    for step in steps:
        target = newest + step
        assert unwrap.unwrap(target & 0xFFFF) == target
        newest = max(newest, target)


def seqs(released: list[tuple[RtpPacket, bool]]) -> list[int]:
    return [p.sequence for p, _ in released]


def test_in_order_packets_pass_straight_through() -> None:
    buffer = ReorderBuffer()
    out = [buffer.push(packet(s), 0.0) for s in range(65530, 65540)]
    assert [seqs(o) for o in out] == [[s & 0xFFFF] for s in range(65530, 65540)]
    assert buffer.received == 10 and buffer.lost == 0 and len(buffer) == 0


def test_a_reordered_packet_is_put_back_in_order_and_nacked_meanwhile() -> None:
    buffer = ReorderBuffer(max_wait=0.1)
    assert seqs(buffer.push(packet(10), 0.0)) == [10]
    assert buffer.push(packet(12), 0.01) == []
    assert buffer.push(packet(13), 0.01) == []
    assert buffer.missing(0.01) == [11]
    assert buffer.missing(0.02) == []  # within nack_interval
    assert buffer.push(packet(11), 0.03) == [(packet(11), False), (packet(12), False), (packet(13), False)]
    assert buffer.reordered == 1 and buffer.nacked == 1 and buffer.lost == 0
    assert buffer.missing(1.0) == []


def test_a_gap_is_given_up_after_max_wait_and_flagged() -> None:
    buffer = ReorderBuffer(max_wait=0.1)
    buffer.push(packet(1), 0.0)
    assert buffer.push(packet(4), 0.0) == []
    assert buffer.flush(0.05) == []
    assert buffer.flush(0.1) == [(packet(4), True)]
    assert buffer.lost == 2
    assert buffer.push(packet(2), 0.2) == [] and buffer.late == 1
    assert buffer.push(packet(4), 0.2) == [] and buffer.duplicates == 1


def test_each_sequence_number_is_nacked_at_most_max_nacks_times() -> None:
    buffer = ReorderBuffer(max_wait=10.0, max_nacks=3, nack_interval=0.1)
    buffer.push(packet(0), 0.0)
    buffer.push(packet(3), 0.0)
    asked = [buffer.missing(t / 10) for t in range(10)]
    assert asked == [[1, 2], [1, 2], [1, 2]] + [[]] * 7
    assert buffer.nacked == 6


def test_a_jump_past_the_window_gives_up_at_once() -> None:
    buffer = ReorderBuffer(capacity=8, max_wait=10.0)
    buffer.push(packet(0), 0.0)
    buffer.push(packet(2), 0.0)
    out = buffer.push(packet(100), 0.0)
    assert out == [(packet(2), True)]
    assert buffer.lost == 1 + (100 - 8 + 1 - 3)
    assert len(buffer) == 1 and max(buffer.missing(0.0)) == 99 and len(buffer.missing(0.0)) == 0
    assert buffer.tracked <= 8


def test_a_sender_that_restarts_far_behind_is_followed() -> None:
    buffer = ReorderBuffer(capacity=4)
    buffer.push(packet(30000), 0.0)
    released = []
    for s in range(10, 20):
        released += buffer.push(packet(s), 0.0)
    assert released and released[0][1] is True
    assert seqs(released) == list(range(14, 20))


@given(
    st.integers(0, 0xFFFF),
    st.lists(st.tuples(st.integers(-40, 60), st.floats(0, 0.05)), max_size=200),
    st.integers(1, 32),
)
def test_whatever_arrives_the_buffer_stays_bounded_and_releases_in_order(
    start: int, steps: list[tuple[int, float]], capacity: int
) -> None:
    buffer = ReorderBuffer(capacity=capacity, max_wait=0.1)
    now = 0.0
    previous: int | None = None
    for offset, dt in steps:
        now += dt
        out = buffer.push(packet(start + offset), now)
        out += buffer.flush(now)
        buffer.missing(now)
        for p, lost in out:
            assert previous is None or seq_newer(p.sequence, previous) or lost
            previous = p.sequence
        assert len(buffer) <= capacity
        assert buffer.tracked <= capacity


def test_random_loss_and_reordering_release_everything_that_arrived_once() -> None:
    rng = random.Random(7)
    sent = list(range(1000))
    arrivals = [s for s in sent if rng.random() > 0.05]
    for i in range(0, len(arrivals) - 3, 5):
        arrivals[i], arrivals[i + 2] = arrivals[i + 2], arrivals[i]
    buffer = ReorderBuffer(capacity=64, max_wait=0.05)
    released: list[tuple[RtpPacket, bool]] = []
    for i, s in enumerate(arrivals):
        released += buffer.push(packet(s), i * 0.001)
    released += buffer.flush(100.0)
    got = seqs(released)
    assert got == sorted(arrivals[:1] + [s for s in arrivals if s > arrivals[0]])
    flagged = {p.sequence for p, lost in released if lost}
    assert flagged == {s for s in got if s - 1 not in set(got) and s != got[0]}
    assert buffer.lost == (got[-1] - got[0] + 1) - len(got)


def test_send_history_is_a_ring_by_sequence_number() -> None:
    history = SendHistory(4)
    for s in range(65534, 65540):
        history.add(s, f"p{s & 0xFFFF}")
    assert history.get(65534) is None and history.get(65535) is None
    assert [history.get(s) for s in (0, 1, 2, 3)] == ["p0", "p1", "p2", "p3"]
    assert history.get(4) is None
    with pytest.raises(ValueError):
        SendHistory(100)


@given(
    size=st.sampled_from([4, 64, 1024]),
    runs=st.lists(st.tuples(st.integers(0, 0xFFFF), st.integers(1, 80)), min_size=1, max_size=8),
)
def test_send_history_add_run_equals_adding_one_by_one(size: int, runs: list[tuple[int, int]]) -> None:
    """A frame's run (slice copies when it wraps neither the ring nor the 16-bit sequence
    number) leaves the history exactly as adding its packets one at a time does."""
    fast, slow = SendHistory(size), SendHistory(size)
    for sequence, count in runs:
        packets = [(sequence, n) for n in range(count)]
        fast.add_run(sequence, packets)
        for n, packet in enumerate(packets):
            slow.add(sequence + n, packet)
        assert fast._sequences == slow._sequences and fast._packets == slow._packets
