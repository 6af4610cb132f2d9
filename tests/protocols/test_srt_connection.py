"""The SRT core: the listener's stateless handshake and one session's receive and send sides,
driven with plain packets and a hand-moved clock."""

from __future__ import annotations

import random

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arcly_trio.core.errors import RemoteProtocolError
from arcly_trio.protocols.srt import handshake as h
from arcly_trio.protocols.srt import packet as p
from arcly_trio.protocols.srt.connection import SrtConnection

ADDRESS = ("192.0.2.7", 5000)


def induction(socket_id: int = 11) -> p.ControlPacket:
    hs = p.Handshake(4, 0, 2, 1000, 1500, 8192, p.HandshakeType.INDUCTION, socket_id, 0)
    return p.ControlPacket(p.ControlType.HANDSHAKE, 0, 0, 5, 0, hs.to_bytes())


def conclusion(
    cookie: int, *, streamid: str = "publish:live/cam", version: int = 5, hsreq: bool = True
) -> p.ControlPacket:
    extensions = []
    if hsreq:
        extensions.append(p.HsExtension(p.Extension.HSREQ, p.SrtHs(0x010501, 0xBF, 200, 0).to_bytes()))
    extensions.append(p.HsExtension(p.Extension.SID, p.encode_streamid(streamid)))
    hs = p.Handshake(
        version, 0, 5, 1000, 1500, 8192, p.HandshakeType.CONCLUSION, 11, cookie, bytes(16), tuple(extensions)
    )
    return p.ControlPacket(p.ControlType.HANDSHAKE, 0, 0, 9000, 0, hs.to_bytes())


def test_induction_answer_is_stateless_v5_and_no_larger() -> None:
    listener = h.Listener(42)
    request = induction()
    answer = listener.induction(request, ADDRESS, 100.0)
    assert len(answer) <= len(request.to_bytes())
    packet = p.parse(answer)
    assert isinstance(packet, p.ControlPacket) and packet.dest == 11
    hs = p.Handshake.parse(packet.body)
    assert (hs.version, hs.extension_field, hs.socket_id) == (5, p.SRT_MAGIC, 42)
    assert hs.cookie == listener.cookie(ADDRESS, 100.0)


def test_conclusion_needs_the_cookie_of_that_address() -> None:
    listener = h.Listener(42)
    cookie = listener.cookie(ADDRESS, 100.0)
    with pytest.raises(RemoteProtocolError):
        listener.conclusion(conclusion(cookie), ("192.0.2.8", 5000), 100.0)
    with pytest.raises(RemoteProtocolError):
        listener.conclusion(conclusion(cookie), ADDRESS, 100.0 + 3 * h.COOKIE_PERIOD)
    got = listener.conclusion(conclusion(cookie), ADDRESS, 100.0 + h.COOKIE_PERIOD)  # the minute before still counts
    assert (got.streamid, got.socket_id, got.isn, got.timestamp) == ("publish:live/cam", 11, 1000, 9000)


def test_conclusion_without_hsv5_is_rejected_with_version() -> None:
    listener = h.Listener(42)
    cookie = listener.cookie(ADDRESS, 0.0)
    for request in (conclusion(cookie, version=4), conclusion(cookie, hsreq=False)):
        with pytest.raises(h.Rejected) as caught:
            listener.conclusion(request, ADDRESS, 0.0)
        assert caught.value.reason is h.Reject.VERSION


def test_accept_and_reject_answers() -> None:
    listener = h.Listener(42)
    request = conclusion(listener.cookie(ADDRESS, 0.0))
    got = listener.conclusion(request, ADDRESS, 0.0)
    answer = p.parse(h.accept(got, socket_id=99, latency_ms=120, timestamp=0, address=ADDRESS))
    assert isinstance(answer, p.ControlPacket) and answer.dest == 11
    hs = p.Handshake.parse(answer.body)
    srt = p.SrtHs.parse(hs.extension(p.Extension.HSRSP) or b"")
    assert (hs.type, hs.socket_id, hs.isn) == (p.HandshakeType.CONCLUSION, 99, 1000)
    assert srt.recv_delay == 120 and srt.send_delay == 200  # the larger wish per direction
    assert h.agreed_latency(got, 120) == (120, 200)
    refusal = p.parse(h.reject(request, h.Reject.UNAUTHORIZED, 99, ADDRESS))
    assert isinstance(refusal, p.ControlPacket)
    assert p.Handshake.parse(refusal.body).type == 1000 + 1401


def pair(now: float = 0.0, **kwargs: object) -> tuple[SrtConnection, SrtConnection]:
    sender = SrtConnection(our_id=1, peer_id=2, isn=p.SEQ_MASK - 3, now=now, **kwargs)  # type: ignore[arg-type]
    receiver = SrtConnection(our_id=2, peer_id=1, isn=p.SEQ_MASK - 3, now=now, **kwargs)  # type: ignore[arg-type]
    return sender, receiver


def drain(conn: SrtConnection) -> list[p.DataPacket | p.ControlPacket]:
    out = [p.parse(d) for d in conn.outgoing]
    conn.outgoing.clear()
    return out


def test_in_order_packets_are_delivered_at_once_across_the_wrap() -> None:
    sender, receiver = pair()
    for index in range(8):
        sender.send(bytes([index]) * 10, 0.001 * index)
    got = []
    for packet in drain(sender):
        got += receiver.receive(packet, 0.01)
    assert got == [bytes([i]) * 10 for i in range(8)]
    assert receiver.rcv_next == p.seq_add(p.SEQ_MASK - 3, 8)


@pytest.mark.parametrize("encrypted", [False, True])
def test_sent_datagrams_are_the_codecs_bytes(encrypted: bool) -> None:
    """The send path packs headers itself (no packet object per payload) and a retransmission
    patches the R bit: the bytes are exactly what :class:`DataPacket` writes, across the
    sequence wrap, with the key bits of an encrypted session."""

    def encrypt(seq: int, payload: bytes) -> tuple[int, bytes]:
        return 2, bytes(b ^ 0x5A for b in payload)

    sender = SrtConnection(our_id=1, peer_id=77, isn=p.SEQ_MASK - 1, now=0.0, encrypt=encrypt if encrypted else None)
    sender.msgno = 0x03FFFFFE  # the message number wraps too
    for index in range(4):
        sender.send(bytes([index]) * 1316, 0.25 * index)
    sent = list(sender.outgoing)
    sender.outgoing.clear()
    for index, datagram in enumerate(sent):
        payload = bytes([index]) * 1316
        expected = p.DataPacket(
            p.seq_add(p.SEQ_MASK - 1, index),
            [0x03FFFFFE, 0x03FFFFFF, 1, 2][index],
            250_000 * index,
            77,
            encrypt(0, payload)[1] if encrypted else payload,
            key=2 if encrypted else 0,
        )
        assert datagram == expected.to_bytes()
    nak = p.ControlPacket(p.ControlType.NAK, 0, 0, 0, 1, p.encode_losses([(p.SEQ_MASK, 0)]))
    sender.receive(nak, 1.0)
    again = [p.parse(d) for d in sender.outgoing]
    assert [d.seq for d in again] == [p.SEQ_MASK, 0]  # type: ignore[union-attr]
    assert all(d.retransmitted for d in again)  # type: ignore[union-attr]
    assert (
        [a.to_bytes() for a in again]
        == [
            attrs.evolve(p.parse(d), retransmitted=True).to_bytes()  # type: ignore[misc]
            for d in sent[1:3]
        ]
    )


def test_loss_is_nakked_retransmitted_and_filled() -> None:
    sender, receiver = pair()
    for index in range(5):
        sender.send(bytes([index]), 0.0)
    packets = drain(sender)
    got = []
    for packet in packets[:2] + packets[3:]:
        got += receiver.receive(packet, 0.001)
    assert got == [b"\x00", b"\x01"]
    naks = [c for c in drain(receiver) if isinstance(c, p.ControlPacket) and c.type == p.ControlType.NAK]
    assert len(naks) == 1 and receiver.stats.lost == 1
    sender.receive(naks[0], 0.002)
    (again,) = drain(sender)
    assert isinstance(again, p.DataPacket) and again.retransmitted and again.payload == b"\x02"
    assert receiver.receive(again, 0.003) == [b"\x02", b"\x03", b"\x04"]
    assert sender.stats.retransmitted == 1 and receiver.stats.dropped == 0


def test_a_gap_is_given_up_when_the_next_packet_is_due() -> None:
    sender, receiver = pair(recv_latency=0.2)
    for index in range(3):
        sender.send(bytes([index]), 0.0)
    packets = drain(sender)
    receiver.receive(packets[0], 0.0)
    assert receiver.receive(packets[2], 0.0) == []
    assert receiver.tick(0.1) == []  # not due yet: the retransmission may still come
    assert receiver.tick(0.21) == [b"\x02"]
    assert receiver.stats.dropped == 1 and not receiver.losses
    assert receiver.receive(packets[1], 0.22) == []  # too late now
    assert receiver.stats.duplicates == 1


def test_ack_ackack_measures_rtt_and_frees_the_send_buffer() -> None:
    sender, receiver = pair()
    sender.send(b"x", 0.0)
    receiver.receive(drain(sender)[0], 0.0)
    receiver.tick(0.02)
    (ack,) = [c for c in drain(receiver) if isinstance(c, p.ControlPacket) and c.type == p.ControlType.ACK]
    sender.receive(ack, 0.03)
    assert not sender.sent
    (ackack,) = drain(sender)
    assert isinstance(ackack, p.ControlPacket) and ackack.type == p.ControlType.ACKACK
    receiver.receive(ackack, 0.07)
    assert receiver.rtt == pytest.approx(0.875 * 0.1 + 0.125 * 0.05)


def test_one_ack_per_period_with_the_last_seconds_rates() -> None:
    """Many packets in one 10 ms period give one ACK; its packet and byte rates count the
    arrivals of the last second only (a running total, not a sum per ACK)."""
    sender, receiver = pair()
    acks: list[p.Ack] = []
    for index in range(300):  # 3 s at 100 packets/s of 100 bytes
        now = 0.01 * index
        sender.send(bytes(100), now)
        receiver.receive(drain(sender)[0], now)
        sender.send(bytes(100), now)
        receiver.receive(drain(sender)[0], now)
        receiver.tick(now + 0.005)
        sent = [c for c in drain(receiver) if isinstance(c, p.ControlPacket) and c.type == p.ControlType.ACK]
        assert len(sent) <= 1
        acks += [p.Ack.parse(c.body) for c in sent]
    assert len(acks) >= 140  # one per period with something new (every other tick here)
    last = acks[-1]
    assert 198 <= last.packet_rate <= 202 and last.byte_rate == 100 * last.packet_rate
    assert len(receiver._window) == last.packet_rate


def test_window_is_bounded() -> None:
    sender, receiver = pair(buffer_packets=16)
    for index in range(40):
        sender.send(bytes([index]), 0.0)
    packets = drain(sender)
    receiver.receive(packets[0], 0.0)
    for packet in packets[2:17]:
        receiver.receive(packet, 0.0)
    assert len(receiver.received) == 15
    out = receiver.receive(packets[30], 0.0)  # 30 ahead: past the window
    assert len(receiver.received) == 0 and out[-1] == bytes([30])
    assert len(receiver.losses) == 0


def test_idle_peer_ends_the_session_and_keepalives_go_out() -> None:
    _, receiver = pair(idle_timeout=5.0)
    receiver.tick(1.5)
    assert any(c.type == p.ControlType.KEEPALIVE for c in drain(receiver) if isinstance(c, p.ControlPacket))
    receiver.tick(5.5)
    assert receiver.closed == "peer idle timeout"


def test_shutdown_both_ways() -> None:
    sender, receiver = pair()
    sender.shutdown(0.0)
    (bye,) = drain(sender)
    receiver.receive(bye, 0.0)
    assert receiver.closed == "the peer shut the session down"


def test_send_buffer_ages_out_after_the_latency() -> None:
    sender, _ = pair(send_latency=0.12)
    sender.send(b"a", 0.0)
    sender.tick(0.1)
    assert sender.sent
    sender.tick(0.3)
    assert not sender.sent and sender.stats.send_dropped == 1


@given(
    st.lists(st.booleans(), min_size=1, max_size=60),
    st.randoms(use_true_random=False),
)
@settings(max_examples=60, deadline=None)
def test_any_loss_and_reordering_is_repaired_in_order(drops: list[bool], rng: random.Random) -> None:
    """Whatever the first transmission loses and however it is reordered, NAKs and
    retransmissions (lossless) give the receiver every payload once, in order."""
    sender, receiver = pair()
    for index in range(len(drops)):
        sender.send(index.to_bytes(2, "big"), 0.0)
    first = [packet for packet, dropped in zip(drain(sender), drops, strict=True) if not dropped]
    rng.shuffle(first)
    got: list[bytes] = []
    now = 0.0
    for packet in first:
        got += receiver.receive(packet, now)
    for _ in range(5):  # a few periodic-NAK rounds
        now += 0.05
        got += receiver.tick(now)
        for control in drain(receiver):
            sender.receive(control, now)
        for packet in drain(sender):
            if isinstance(packet, p.DataPacket):
                got += receiver.receive(packet, now)
    expected = [index.to_bytes(2, "big") for index in range(len(drops))]
    if drops[-1]:  # the last one lost: nothing after it shows the gap; it is simply not there yet
        assert got == expected[: len(got)]
    else:
        assert got == expected
    assert receiver.stats.dropped == 0


def test_caller_and_listener_agree() -> None:
    listener = h.Listener(42)
    caller = h.Caller("#!::r=live/cam,m=publish", socket_id=11, isn=500, latency_ms=300)
    request = p.parse(caller.induction())
    assert isinstance(request, p.ControlPacket)
    answer = p.parse(listener.induction(request, ADDRESS, 0.0))
    assert isinstance(answer, p.ControlPacket)
    conclusion = p.parse(caller.conclusion(answer))
    assert isinstance(conclusion, p.ControlPacket)
    got = listener.conclusion(conclusion, ADDRESS, 0.0)
    assert (got.streamid, got.socket_id, got.isn) == ("#!::r=live/cam,m=publish", 11, 500)
    accepted = p.parse(h.accept(got, socket_id=99, latency_ms=120, timestamp=7, address=ADDRESS))
    assert isinstance(accepted, p.ControlPacket)
    connected = caller.concluded(accepted)
    assert (connected.peer_socket_id, connected.isn, connected.timestamp) == (99, 500, 7)
    assert (connected.recv_latency_ms, connected.send_latency_ms) == (300, 300)  # the larger wish
    refused = p.parse(h.reject(conclusion, h.Reject.CONFLICT, 99, ADDRESS))
    assert isinstance(refused, p.ControlPacket)
    with pytest.raises(h.Rejected) as caught:
        caller.concluded(refused)
    assert caught.value.reason is h.Reject.CONFLICT
