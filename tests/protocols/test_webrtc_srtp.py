"""SRTP/SRTCP over pylibsrtp (arcly_trio.protocols.webrtc.srtp): a packet protected with
AES128_CM_SHA1_80 equals what an independent RFC 3711 implementation here (AES-CM and
HMAC-SHA1 from ``cryptography``, its key derivation checked against RFC 3711 appendix B.3)
makes of it; round trips both ways for RTP and RTCP with both profiles; tampering and replays
give SrtpError; a NACK resend is protected again and taken; many SSRCs; garbage gives
SrtpError only."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from arcly_trio.protocols.webrtc.dtls import SRTP_KEY_LENGTHS, SRTP_PROFILES, SrtpKeys
from arcly_trio.protocols.webrtc.rtp import RTP_HEADER, parse_rtp
from arcly_trio.protocols.webrtc.srtp import (
    MAX_PACKET,
    MAX_PADDING,
    MAX_PLAN_PACKETS,
    MAX_SSRCS,
    OUTBOUND_WINDOW,
    SCRATCH,
    TRAILERS,
    SrtpContext,
    SrtpError,
    SrtpProtectError,
    plan_packets,
)

# RFC 3711 appendix B.3: master key and salt, and the session keys derived from them.
MASTER_KEY = bytes.fromhex("E1F97A0D3E018BE0D64FA32C06DE4139")
MASTER_SALT = bytes.fromhex("0EC675AD498AFEEBB6960B3AABE6")
SESSION_KEY = bytes.fromhex("C61E7A93744F39EE10734AFE3FF7A087")
SESSION_SALT = bytes.fromhex("30CBBC08863D8C85D49DB34A9AE1")
SESSION_AUTH = bytes.fromhex("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4")


def aes_cm(key: bytes, iv: int, data: bytes) -> bytes:
    """AES in counter mode (RFC 3711 section 4.1.1) from the 128-bit ``iv``."""
    encryptor = Cipher(algorithms.AES(key), modes.CTR(iv.to_bytes(16, "big"))).encryptor()
    return encryptor.update(data) + encryptor.finalize()


def derive(master_key: bytes, master_salt: bytes, label: int, length: int) -> bytes:
    """RFC 3711 section 4.3.1 with key_derivation_rate 0 and index 0."""
    x = int.from_bytes(master_salt, "big") ^ (label << 48)
    return aes_cm(master_key, x << 16, bytes(length))


def reference_protect(master_key: bytes, master_salt: bytes, rtp: bytes) -> bytes:
    """RFC 3711 SRTP of a 12-byte-header RTP packet with rollover counter 0."""
    key, auth, salt = (derive(master_key, master_salt, label, n) for label, n in ((0, 16), (1, 20), (2, 14)))
    ssrc = int.from_bytes(rtp[8:12], "big")
    index = int.from_bytes(rtp[2:4], "big")
    iv = (int.from_bytes(salt, "big") << 16) ^ (ssrc << 64) ^ (index << 16)
    encrypted = rtp[:12] + aes_cm(key, iv, rtp[12:])
    tag = hmac.new(auth, encrypted + bytes(4), hashlib.sha1).digest()[:10]
    return encrypted + tag


def test_the_reference_derivation_gives_the_rfc_3711_b3_session_keys() -> None:
    assert derive(MASTER_KEY, MASTER_SALT, 0, 16) == SESSION_KEY
    assert derive(MASTER_KEY, MASTER_SALT, 1, 20) == SESSION_AUTH
    assert derive(MASTER_KEY, MASTER_SALT, 2, 14) == SESSION_SALT


def contexts(profile: str, seed: int = 1) -> tuple[SrtpContext, SrtpContext]:
    """(client, server) contexts with crosswise keys."""
    key_len, salt_len = SRTP_KEY_LENGTHS[profile]
    client_key, server_key = bytes([seed]) * key_len, bytes([seed + 1]) * key_len
    client_salt, server_salt = bytes([seed + 2]) * salt_len, bytes([seed + 3]) * salt_len
    client = SrtpContext(SrtpKeys(profile, client_key, client_salt, server_key, server_salt))
    server = SrtpContext(SrtpKeys(profile, server_key, server_salt, client_key, client_salt))
    return client, server


def rtp(sequence: int, ssrc: int = 0x11223344, payload: bytes = b"media" * 20, marker: bool = False) -> bytes:
    return (
        bytes([0x80, (0x80 if marker else 0) | 96])
        + sequence.to_bytes(2, "big")
        + (sequence * 3000).to_bytes(4, "big")
        + ssrc.to_bytes(4, "big")
        + payload
    )


def rtcp_receiver_report(ssrc: int) -> bytes:
    return bytes([0x80, 201, 0, 1]) + ssrc.to_bytes(4, "big")


@given(sequence=st.integers(0, 0xFFFF), ssrc=st.integers(0, 2**32 - 1), payload=st.binary(max_size=300))
@settings(max_examples=60, deadline=None)
def test_aes128_cm_sha1_80_protection_equals_an_independent_rfc_3711_implementation(
    sequence: int, ssrc: int, payload: bytes
) -> None:
    context = SrtpContext(
        SrtpKeys("SRTP_AES128_CM_SHA1_80", MASTER_KEY, MASTER_SALT, bytes(16), bytes(14)),
    )
    packet = rtp(sequence, ssrc, payload)
    assert context.protect(packet) == reference_protect(MASTER_KEY, MASTER_SALT, packet)


@pytest.mark.parametrize("profile", SRTP_PROFILES)
@given(
    start=st.integers(0, 0xFFFF),
    packets=st.lists(
        st.tuples(st.integers(1, 1000), st.sampled_from([1, 2, 0xFFFFFFFF]), st.binary(max_size=1200)),
        min_size=1,
        max_size=8,
    ),
)
@settings(max_examples=40, deadline=None)
def test_rtp_round_trips_both_ways(profile: str, start: int, packets: list[tuple[int, int, bytes]]) -> None:
    """Sequence numbers go forward (by up to 1000, wrapping), as a sender's do."""
    client, server = contexts(profile)
    sequence = start
    for step, ssrc, payload in packets:
        sequence = (sequence + step) & 0xFFFF
        packet = rtp(sequence, ssrc, payload)
        protected = client.protect(packet)
        assert protected != packet and len(protected) > len(packet)
        assert server.unprotect(protected) == packet
        assert client.unprotect(server.protect(packet)) == packet


@pytest.mark.parametrize("profile", SRTP_PROFILES)
def test_rtcp_round_trips_both_ways(profile: str) -> None:
    client, server = contexts(profile)
    for ssrc in (1, 2, 3):
        report = rtcp_receiver_report(ssrc)
        assert server.unprotect_rtcp(client.protect_rtcp(report)) == report
        assert client.unprotect_rtcp(server.protect_rtcp(report)) == report


@pytest.mark.parametrize("profile", SRTP_PROFILES)
@given(position=st.integers(0, 10_000), bit=st.integers(0, 7), rtcp=st.booleans())
@settings(max_examples=60, deadline=None)
def test_a_flipped_bit_anywhere_is_an_srtp_error(profile: str, position: int, bit: int, rtcp: bool) -> None:
    client, server = contexts(profile)
    protected = client.protect_rtcp(rtcp_receiver_report(7)) if rtcp else client.protect(rtp(5))
    tampered = bytearray(protected)
    tampered[position % len(tampered)] ^= 1 << bit
    with pytest.raises(SrtpError):
        (server.unprotect_rtcp if rtcp else server.unprotect)(bytes(tampered))
    # the genuine packet still passes: a forgery leaves no state behind
    assert (server.unprotect_rtcp if rtcp else server.unprotect)(protected)


@pytest.mark.parametrize("profile", SRTP_PROFILES)
def test_a_replay_is_an_srtp_error(profile: str) -> None:
    client, server = contexts(profile)
    protected = client.protect(rtp(10))
    server.unprotect(protected)
    with pytest.raises(SrtpError):
        server.unprotect(protected)
    report = client.protect_rtcp(rtcp_receiver_report(1))
    server.unprotect_rtcp(report)
    with pytest.raises(SrtpError):
        server.unprotect_rtcp(report)


@pytest.mark.parametrize("profile", SRTP_PROFILES)
def test_a_packet_resent_for_a_nack_is_protected_again_and_taken(profile: str) -> None:
    client, server = contexts(profile)
    first, lost, third = (client.protect(rtp(sequence)) for sequence in (100, 101, 102))
    assert server.unprotect(first) == rtp(100) and server.unprotect(third) == rtp(102)
    resent = client.protect(rtp(101))  # allow_repeat_tx: the same index again
    assert resent == lost
    assert server.unprotect(resent) == rtp(101)
    for sequence in range(103, 103 + OUTBOUND_WINDOW - 10):
        client.protect(rtp(sequence))
    assert client.protect(rtp(100)) == first  # still inside the outbound window


def test_many_ssrcs_work_without_being_declared() -> None:
    client, server = contexts("SRTP_AEAD_AES_128_GCM")
    for ssrc in range(1, 201):
        assert server.unprotect(client.protect(rtp(1, ssrc))) == rtp(1, ssrc)
    assert server.unprotect(client.protect(rtp(2, 200))) == rtp(2, 200)


def test_the_least_recently_seen_ssrc_is_forgotten_past_the_bound() -> None:
    client, server = contexts("SRTP_AES128_CM_SHA1_80")
    first = client.protect(rtp(1, 1))
    server.unprotect(first)
    with pytest.raises(SrtpError):
        server.unprotect(first)  # a replay while SSRC 1 is remembered
    for ssrc in range(2, MAX_SSRCS + 2):
        server.unprotect(client.protect(rtp(1, ssrc)))
    assert server.unprotect(first) == rtp(1, 1)  # forgotten: its replay window started over


def test_sizes_and_keys_are_checked() -> None:
    client, server = contexts("SRTP_AES128_CM_SHA1_80")
    with pytest.raises(SrtpError):
        server.unprotect(rtp(1, payload=bytes(MAX_PACKET)))
    with pytest.raises(SrtpProtectError):
        client.protect(rtp(1, payload=bytes(MAX_PACKET)))
    with pytest.raises(SrtpProtectError):
        client.protect(b"\x80\x60")
    with pytest.raises(ValueError):
        SrtpContext(SrtpKeys("SRTP_AES128_CM_SHA1_80", bytes(16), bytes(12), bytes(16), bytes(14)))
    with pytest.raises(ValueError):
        SrtpContext(SrtpKeys("SRTP_NULL_NULL", bytes(16), bytes(14), bytes(16), bytes(14)))


@pytest.mark.parametrize("profile", SRTP_PROFILES)
@given(garbage=st.binary(max_size=1600), rtp_version=st.booleans())
@settings(max_examples=100, deadline=None)
def test_garbage_gives_srtp_error_only(profile: str, garbage: bytes, rtp_version: bool) -> None:
    _, server = contexts(profile)
    if rtp_version and garbage:
        garbage = bytes([0x80 | (garbage[0] & 0x3F)]) + garbage[1:]
    for unprotect in (server.unprotect, server.unprotect_rtcp):
        with pytest.raises(SrtpError):
            unprotect(garbage)


def _shared(count: int, size: int = 1200) -> list[tuple[bytes, int, int]]:
    """A frame's shared packets as the WHEP viewer keeps them: (payload, timestamp, marker bit)."""
    return [(bytes([n % 251]) * (size - n % 3), 90_000 + n // 5, 0x80 if n % 5 == 4 else 0) for n in range(count)]


def _built(context: SrtpContext, packets: list[tuple[bytes, int, int]], sequence: int) -> list[bytes]:
    out: list[bytes] = []
    start = 0
    while start < len(packets):
        view, ends = context.protect_packets(packets, start, 96, (sequence + start) & 0xFFFF, 0x1234)
        begin = 0
        for end in ends:
            out.append(bytes(view[begin:end]))
            begin = end
        start += len(ends)
    return out


@pytest.mark.parametrize("profile", SRTP_PROFILES)
@pytest.mark.parametrize("in_place", [True, False])
def test_packets_protected_in_place_equal_protect_of_each_packet(profile: str, in_place: bool) -> None:
    """The viewer's batch path gives, packet for packet, what ``protect`` gives (in place through
    libsrtp, and through pylibsrtp's public ``protect`` where its internals differ), past the
    scratch buffer's size (several calls) and across the sequence number's wrap."""
    batch, single = contexts(profile)[0], contexts(profile)[0]
    if not in_place:
        batch._context = None
    packets = _shared(120)  # ~144 KB: three scratch buffers
    built = _built(batch, packets, 0xFFC0)
    expected = [
        single.protect(RTP_HEADER.pack(0x80, 96 | marker, (0xFFC0 + n) & 0xFFFF, timestamp, 0x1234) + payload)
        for n, (payload, timestamp, marker) in enumerate(packets)
    ]
    assert built == expected
    peer = contexts(profile)[1]
    assert [peer.unprotect(packet)[12:] for packet in built] == [payload for payload, _, _ in packets]


def test_a_payload_too_long_for_one_packet_is_refused() -> None:
    client, _ = contexts("SRTP_AEAD_AES_128_GCM")
    with pytest.raises(SrtpProtectError):
        client.protect_packets([(bytes(MAX_PACKET), 0, 0)], 0, 96, 1, 1)


@pytest.mark.parametrize("profile", SRTP_PROFILES)
@pytest.mark.parametrize("in_place", [True, False])
def test_one_packet_protected_in_place_equals_protect(profile: str, in_place: bool) -> None:
    """The viewer's one-packet path (an Opus frame) gives what ``protect`` gives, the marker
    or'ed into the second byte, in place and through pylibsrtp's public path; too long is refused."""
    fast, single = contexts(profile)[0], contexts(profile)[0]
    if not in_place:
        fast._context = None
    peer = contexts(profile)[1]
    for sequence, marker in ((0xFFFF, 0x80), (0, 0)):
        payload = bytes([sequence & 0xFF]) * 160
        built = bytes(fast.protect_one(payload, 48_000, 111 | marker, sequence, 0x5678))
        assert built == single.protect(RTP_HEADER.pack(0x80, 111 | marker, sequence, 48_000, 0x5678) + payload)
        assert peer.unprotect(built)[12:] == payload
    with pytest.raises(SrtpProtectError):
        fast.protect_one(bytes(MAX_PACKET), 0, 111, 1, 1)


def _planned(context: SrtpContext, packets: list[tuple[bytes, int, int]], sequence: int) -> list[bytes]:
    """The datagrams of the viewer's planned path: each plan protected and cut along its runs."""
    assert context.trailer is not None
    out: list[bytes] = []
    for plan in plan_packets(packets, context.trailer):
        view = bytes(context.protect_plan(plan, 96, sequence, 0x1234))
        assert len(view) == plan.size
        for begin, end, size, count in plan.runs:
            cut = [view[at : min(at + size, end)] for at in range(begin, end, size)]
            assert len(cut) == count
            out += cut
        sequence = (sequence + plan.count) & 0xFFFF
    return out


@pytest.mark.parametrize("profile", SRTP_PROFILES)
@given(
    sizes=st.lists(st.integers(1, MAX_PACKET - 12 - 16), min_size=1, max_size=150),
    sequence=st.integers(0, 0xFFFF),
)
@settings(max_examples=25, deadline=None)
def test_planned_packets_equal_the_packets_built_one_call_at_a_time(
    profile: str, sizes: list[int], sequence: int
) -> None:
    """The plan a frame is laid out in once for every viewer gives, datagram for datagram and in
    order, what :meth:`SrtpContext.protect_packets` gives (and so what ``protect`` gives, see
    above): any sizes, past the scratch buffer and the GSO segment limit, across the wrap."""
    planned, built = contexts(profile)[0], contexts(profile)[0]
    packets = [(bytes([n % 251]) * size, 3000 * n, 0x80 if n % 7 == 6 else 0) for n, size in enumerate(sizes)]
    plans = plan_packets(packets, TRAILERS[profile])
    assert all(plan.count <= MAX_PLAN_PACKETS and plan.size <= SCRATCH for plan in plans)
    assert sum(plan.count for plan in plans) == len(packets)
    assert _planned(planned, packets, sequence) == _built(built, packets, sequence)


def test_a_plan_refuses_a_payload_too_long_and_needs_the_in_place_path() -> None:
    with pytest.raises(SrtpProtectError):
        plan_packets([(bytes(MAX_PACKET), 0, 0)], 16)
    client, _ = contexts("SRTP_AEAD_AES_128_GCM")
    plan = plan_packets([(b"x" * 100, 0, 0)], 16)[0]
    client._context = None
    client.trailer = None
    with pytest.raises(SrtpProtectError):
        client.protect_plan(plan, 96, 1, 1)


def test_plan_runs_group_equal_sizes_and_a_shorter_last() -> None:
    """Five full packets and a shorter last are one GSO send; two equal small ones another; a
    larger one after a small one starts a run of its own."""
    sizes = [1200] * 5 + [700, 140, 140, 1200, 90]
    plan = plan_packets([(bytes(size), 0, 0) for size in sizes], 16)[0]
    assert [(size, count) for _, _, size, count in plan.runs] == [(1228, 6), (168, 2), (1228, 2)]
    assert plan.runs[-1][1] == plan.size == sum(size + 28 for size in sizes)


@pytest.mark.parametrize("profile", SRTP_PROFILES)
@given(
    sizes=st.lists(st.integers(1, MAX_PACKET - 12 - 16), min_size=1, max_size=80),
    pad=st.integers(0, 300),
    extra=st.integers(1, 400),
)
@settings(max_examples=25, deadline=None)
def test_a_padded_plan_and_a_packet_after_it_give_the_same_packets(
    profile: str, sizes: list[int], pad: int, extra: int
) -> None:
    """``pad``: the last packet padded (RTP padding, at most MAX_PADDING bytes) up to the size
    of the one before: the receiver gets the same headers and payloads. ``tail`` says when the
    last run's packets have one size and room for one more; a packet protected after the plan
    (``protect_after``) then closes that run as one more datagram, which the receiver opens."""
    sender, receiver = contexts(profile)
    trailer = TRAILERS[profile]
    packets = [(bytes([n % 251]) * size, 3000 * n, 0x80 if n == len(sizes) - 1 else 0) for n, size in enumerate(sizes)]
    plans = plan_packets(packets, trailer, pad)
    last = plans[-1]
    deficit = sizes[-2] - sizes[-1] if len(sizes) > 1 and last.count > 1 else 0
    padded = 0 < deficit <= min(pad, MAX_PADDING)
    assert last.size == sum(size + 12 + trailer for size in sizes[-last.count :]) + (deficit if padded else 0)
    sequence = 0xFFF0
    got = []
    for plan in plans:
        view = bytes(sender.protect_plan(plan, 96, sequence, 0x1234))
        if plan is last and plan.tail:
            begin, end, size, count = plan.runs[-1]
            assert end - begin == size * count and count < MAX_PLAN_PACKETS
            if extra + 12 + trailer <= plan.tail:
                view = bytes(sender.protect_after(plan.size, b"a" * extra, 480, 111, 7, 0x5678))
                runs = (*plan.runs[:-1], (begin, len(view), size, count + 1))
                assert len(view) - end <= size
                *_, closing = [view[at : min(at + size, len(view))] for at in range(begin, len(view), size)]
                opened = parse_rtp(receiver.unprotect(closing))
                assert opened.payload == b"a" * extra
                assert (opened.sequence, opened.ssrc, opened.timestamp) == (7, 0x5678, 480)
                view = view[: plan.size]
                assert runs[-1][3] == count + 1
        for begin, end, size, _ in plan.runs:
            got += [parse_rtp(receiver.unprotect(view[at : min(at + size, end)])) for at in range(begin, end, size)]
        sequence = (sequence + plan.count) & 0xFFFF
    assert [(p.payload, p.timestamp, p.marker, p.payload_type) for p in got] == [
        (payload, timestamp, bool(marker), 96) for payload, timestamp, marker in packets
    ]
    assert [p.sequence for p in got] == [(0xFFF0 + n) & 0xFFFF for n in range(len(packets))]
    if padded:
        assert last.tail == sizes[-2] + 12 + trailer or last.runs[-1][3] == MAX_PLAN_PACKETS
