"""One established SRT session (live mode): its receive side, its send side, its timers.

What: the receive side puts data packets back in order, NAKs the gaps at once and again every
``RTT + 4·RTTVar`` (at least 20 ms), sends a full ACK every 10 ms when something new arrived
(answering the peer's ACKACK gives the RTT), and gives a gap up when the packet after it is due
(TSBPD: the peer's timestamp + the latency, on a time base taken from the conclusion
handshake): the missing packets are counted as dropped, too late. The send side numbers and
stamps payloads, keeps each for retransmission until it is acknowledged or older than the send
latency, and answers NAKs with retransmissions (R bit set). A keepalive goes out after a second
of silence; a peer silent for :attr:`SrtConnection.idle_timeout` ends the session, as does its
SHUTDOWN.

How: sans-IO: :meth:`SrtConnection.receive` takes a parsed packet and the time and returns the
payloads now in order; :meth:`SrtConnection.tick` runs the timers; :meth:`SrtConnection.send`
queues a payload; datagrams to send accumulate in :attr:`SrtConnection.outgoing` for the caller
to write. Payloads of packets in order are handed over at once (the kernel paces by the media's
own timestamps); only gaps wait for the latency. Optional ``decrypt``/``encrypt`` callables
(:mod:`.crypto`) are applied to data payloads.

Attacker's view: the receive buffer holds at most ``buffer_packets`` packets past the next
expected one (a packet beyond that resets the window, counted); the loss list and a NAK's
retransmissions are bounded by the same number; a NAK's ranges by :data:`~.packet.MAX_NAK_ITEMS`;
the ACK-time table by :data:`MAX_ACKS`. Nothing a peer sends makes state grow past these.

Error policy: :meth:`receive` never raises: a packet for another session, a duplicate or a
packet that cannot be decrypted is dropped and counted; the session's end is
:attr:`SrtConnection.closed` (a reason string), never an exception.
"""

from __future__ import annotations

import secrets
import struct
from collections import OrderedDict, deque
from collections.abc import Callable

import attrs

from arcly_trio.protocols.srt.packet import (
    SEQ_MASK,
    Ack,
    ControlPacket,
    ControlType,
    DataPacket,
    decode_losses,
    encode_losses,
    seq_add,
    seq_diff,
    seq_less,
)

__all__ = [
    "SrtConnection",
    "SrtStats",
    "new_socket_id",
    "MAX_ACKS",
    "ACK_INTERVAL",
    "KEEPALIVE_INTERVAL",
    "PAYLOAD_SIZE",
]

ACK_INTERVAL = 0.01
KEEPALIVE_INTERVAL = 1.0
MIN_NAK_INTERVAL = 0.02
MAX_ACKS = 64
KM_REQUEST = 3
KM_RESPONSE = 4
MAX_KM_REFRESHES = 1000
"""KM refreshes (user-defined control, subtype 3) one session answers: libsrt sends one per key switch."""
PAYLOAD_SIZE = 1316
"""Seven 188-byte TS packets: the live-mode payload libsrt and ffmpeg use."""
_WRAP = 1 << 32
_DATA_HEADER = struct.Struct(">IIII")
_WHOLE = 3 << 30
"""PP bits 11: the packet is a whole message (live mode)."""
_RETRANSMITTED = 0x04
"""The R bit (bit 26 of the message word) in the word's first byte."""


@attrs.define(slots=True)
class SrtStats:
    packets_received: int = 0
    bytes_received: int = 0
    packets_sent: int = 0
    bytes_sent: int = 0
    lost: int = 0
    """Packets found missing (each gap counted once)."""
    dropped: int = 0
    """Packets given up: too late for the latency (or pushed out of the window)."""
    duplicates: int = 0
    retransmitted: int = 0
    """Packets we sent again on a NAK."""
    retransmits_received: int = 0
    naks_sent: int = 0
    naks_received: int = 0
    undecryptable: int = 0
    send_dropped: int = 0
    """Packets aged out of the send buffer before they were acknowledged."""


class SrtConnection:
    """One session (see the module docstring). Times are seconds on the caller's clock."""

    def __init__(
        self,
        *,
        our_id: int,
        peer_id: int,
        isn: int,
        now: float,
        peer_timestamp: int = 0,
        recv_latency: float = 0.12,
        send_latency: float = 0.12,
        buffer_packets: int = 8192,
        idle_timeout: float = 5.0,
        decrypt: Callable[[int, int, bytes], bytes] | None = None,
        encrypt: Callable[[int, bytes], tuple[int, bytes]] | None = None,
        refresh: Callable[[bytes], bytes | None] | None = None,
    ) -> None:
        self.our_id = our_id
        self.peer_id = peer_id
        self.start = now
        self.recv_latency = recv_latency
        self.send_latency = send_latency
        self.buffer_packets = buffer_packets
        self.idle_timeout = idle_timeout
        self.decrypt = decrypt
        self.encrypt = encrypt
        self.refresh = refresh
        self.km_refreshes = 0
        self.outgoing: list[bytes] = []
        self.closed: str | None = None
        self.stats = SrtStats()
        # receive side
        self.rcv_next = isn
        self.rcv_highest = seq_add(isn, -1)
        self.received: dict[int, tuple[bytes, int]] = {}
        self.losses: dict[int, float] = {}
        self.peer_base = now - peer_timestamp / 1e6
        self._ts_last = peer_timestamp
        self._ts_wraps = 0
        self.ack_number = 0
        self.acked = isn
        self.ack_times: OrderedDict[int, float] = OrderedDict()
        self.rtt = 0.1
        self.rtt_var = 0.05
        self.next_ack = now + ACK_INTERVAL
        self.next_nak = now + MIN_NAK_INTERVAL
        self.last_heard = now
        self._window: deque[tuple[float, int]] = deque()
        self._window_bytes = 0
        """The payload bytes in :attr:`_window` (the last second's arrivals, for the ACK's rates)."""
        # send side
        self.snd_next = isn
        self.msgno = 1
        self.sent: OrderedDict[int, tuple[bytes, float]] = OrderedDict()
        """The datagrams sent and not yet acknowledged (by sequence number) and when."""
        self.last_sent = now
        self.peer_rtt: float | None = None

    # ------------------------------------------------------------------ clock

    def timestamp(self, now: float) -> int:
        return int((now - self.start) * 1e6) & 0xFFFFFFFF

    def _control(self, kind: ControlType, info: int, body: bytes, now: float) -> None:
        self.outgoing.append(ControlPacket(kind, 0, info, self.timestamp(now), self.peer_id, body).to_bytes())
        self.last_sent = now

    def _peer_time(self, timestamp: int) -> float:
        """The peer's timestamp unwrapped (32 bits of µs wrap every ~71 minutes), in seconds."""
        if timestamp < self._ts_last and self._ts_last - timestamp > _WRAP // 2:
            self._ts_wraps += 1
        elif timestamp > self._ts_last and timestamp - self._ts_last > _WRAP // 2:
            return (timestamp + (self._ts_wraps - 1) * _WRAP) / 1e6  # a straggler from before a wrap
        self._ts_last = timestamp
        return (timestamp + self._ts_wraps * _WRAP) / 1e6

    def due(self, timestamp: float) -> float:
        """When a packet stamped ``timestamp`` (unwrapped seconds) is to be delivered."""
        return self.peer_base + timestamp + self.recv_latency

    # ------------------------------------------------------------------ input

    def receive(self, packet: DataPacket | ControlPacket, now: float) -> list[bytes]:
        """Take one packet of this session; the payloads now deliverable, in order."""
        if self.closed is not None:
            return []
        self.last_heard = now
        if isinstance(packet, DataPacket):
            return self._data(packet, now)
        kind = packet.type
        if kind == ControlType.ACK:
            self._on_ack(packet, now)
        elif kind == ControlType.ACKACK:
            sent = self.ack_times.pop(packet.info, None)
            if sent is not None:
                sample = now - sent
                self.rtt_var = 0.75 * self.rtt_var + 0.25 * abs(self.rtt - sample)
                self.rtt = 0.875 * self.rtt + 0.125 * sample
        elif kind == ControlType.NAK:
            self._on_nak(packet, now)
        elif kind == ControlType.SHUTDOWN:
            self.closed = "the peer shut the session down"
        elif kind == ControlType.DROPREQ:
            return self._on_dropreq(packet)
        elif kind == ControlType.USER and packet.subtype == KM_REQUEST and self.refresh is not None:
            self.km_refreshes += 1
            if self.km_refreshes <= MAX_KM_REFRESHES:  # each may cost a key derivation
                answer = self.refresh(packet.body)
                if answer is not None:
                    self.outgoing.append(
                        ControlPacket(
                            ControlType.USER, KM_RESPONSE, 0, self.timestamp(now), self.peer_id, answer
                        ).to_bytes()
                    )
        return []

    def _data(self, packet: DataPacket, now: float) -> list[bytes]:
        stats = self.stats
        seq = packet.seq
        stats.packets_received += 1
        stats.bytes_received += len(packet.payload)
        if packet.retransmitted:
            stats.retransmits_received += 1
        ahead = seq_diff(seq, self.rcv_next)
        if ahead < 0 or seq in self.received:
            stats.duplicates += 1
            return []
        sent_at = self._peer_time(packet.timestamp)
        if now - sent_at < self.peer_base:  # the peer's clock runs ahead of our estimate: follow it
            self.peer_base = now - sent_at
        payload = packet.payload
        if packet.key:
            if self.decrypt is None:
                stats.undecryptable += 1
                return []
            try:
                payload = self.decrypt(packet.key, seq, payload)
            except Exception:  # the crypto module's error: a packet we cannot read is dropped
                stats.undecryptable += 1
                return []
        if ahead >= self.buffer_packets:  # past the window: give up what is held, start again here
            stats.dropped += seq_diff(seq, self.rcv_next) - len(self.received)
            out = [self.received[s][0] for s in sorted(self.received, key=lambda s: seq_diff(s, self.rcv_next))]
            self.received.clear()
            self.losses.clear()
            self.rcv_next = seq
            self.rcv_highest = seq_add(seq, -1)
            return out + self._store(seq, payload, sent_at, now)
        gap = seq_diff(seq, self.rcv_highest)
        if gap > 1:
            first = seq_add(self.rcv_highest, 1)
            last = seq_add(seq, -1)
            for index in range(gap - 1):
                self.losses[seq_add(first, index)] = now
            stats.lost += gap - 1
            stats.naks_sent += 1
            self._control(ControlType.NAK, 0, encode_losses([(first, last)]), now)
        else:
            self.losses.pop(seq, None)
        return self._store(seq, payload, sent_at, now)

    def _store(self, seq: int, payload: bytes, sent_at: float, now: float) -> list[bytes]:
        self.received[seq] = (payload, int(sent_at * 1e6))
        if seq_less(self.rcv_highest, seq):
            self.rcv_highest = seq
        size = len(payload)
        self._window.append((now, size))
        self._window_bytes += size
        return self._deliver()

    def _deliver(self) -> list[bytes]:
        out: list[bytes] = []
        received = self.received
        while self.rcv_next in received:
            out.append(received.pop(self.rcv_next)[0])
            self.losses.pop(self.rcv_next, None)
            self.rcv_next = seq_add(self.rcv_next, 1)
        return out

    def _on_dropreq(self, packet: ControlPacket) -> list[bytes]:
        if len(packet.body) < 8:
            return []
        first = int.from_bytes(packet.body[0:4], "big") & 0x7FFFFFFF
        last = int.from_bytes(packet.body[4:8], "big") & 0x7FFFFFFF
        span = seq_diff(last, first)
        if span < 0 or span >= self.buffer_packets:
            return []
        for index in range(span + 1):
            self.losses.pop(seq_add(first, index), None)
        if seq_diff(self.rcv_next, first) >= 0 and seq_diff(last, self.rcv_next) >= 0:
            self.stats.dropped += seq_diff(last, self.rcv_next) + 1
            self.rcv_next = seq_add(last, 1)
            for seq in [s for s in self.received if seq_less(s, self.rcv_next)]:
                del self.received[seq]
            return self._deliver()
        return []

    def _on_ack(self, packet: ControlPacket, now: float) -> None:
        try:
            ack = Ack.parse(packet.body)
        except Exception:
            return
        ahead = seq_diff(ack.last, self.snd_next)
        if ahead > 0:
            return  # acknowledges what we never sent
        sent = self.sent
        while sent:
            seq = next(iter(sent))
            if not seq_less(seq, ack.last):
                break
            del sent[seq]
        if len(packet.body) >= 16:
            self.peer_rtt = ack.rtt / 1e6
            self._control(ControlType.ACKACK, packet.info, b"", now)

    def _on_nak(self, packet: ControlPacket, now: float) -> None:
        self.stats.naks_received += 1
        try:
            ranges = decode_losses(packet.body)
        except Exception:
            return
        budget = self.buffer_packets
        for first, last in ranges:
            count = seq_diff(last, first) + 1
            for index in range(min(count, budget)):
                held = self.sent.get(seq_add(first, index))
                if held is None:
                    continue
                again = bytearray(held[0])
                again[4] |= _RETRANSMITTED  # the R bit of the message word
                self.outgoing.append(bytes(again))
                self.stats.retransmitted += 1
            budget -= count
            if budget <= 0:
                break
        self.last_sent = now

    # ------------------------------------------------------------------ output

    def send(self, payload: bytes, now: float) -> None:
        """Queue one payload (at most :data:`PAYLOAD_SIZE` bytes) as a data packet."""
        seq = self.snd_next
        key = 0
        if self.encrypt is not None:
            key, payload = self.encrypt(seq, payload)
        # The packet's header in one pack (what DataPacket.to_bytes writes: a whole message, PP 3).
        datagram = _DATA_HEADER.pack(seq, _WHOLE | key << 27 | self.msgno, self.timestamp(now), self.peer_id) + payload
        self.snd_next = (seq + 1) & SEQ_MASK
        self.msgno = self.msgno % 0x03FFFFFF + 1
        self.outgoing.append(datagram)
        stats = self.stats
        stats.packets_sent += 1
        stats.bytes_sent += len(payload)
        sent = self.sent
        sent[seq] = (datagram, now)
        if len(sent) > self.buffer_packets:
            sent.popitem(last=False)
            stats.send_dropped += 1
        self.last_sent = now

    def shutdown(self, now: float, reason: str = "closed") -> None:
        if self.closed is None:
            self._control(ControlType.SHUTDOWN, 0, bytes(4), now)
            self.closed = reason

    # ------------------------------------------------------------------ timers

    def tick(self, now: float) -> list[bytes]:
        """Run the timers; the payloads released because a gap was given up."""
        if self.closed is not None:
            return []
        if now - self.last_heard > self.idle_timeout:
            self.closed = "peer idle timeout"
            return []
        out = self._give_up(now)
        if now >= self.next_ack:
            self.next_ack = now + ACK_INTERVAL
            if self.rcv_next != self.acked:
                self._send_ack(now)
        if self.losses and now >= self.next_nak:
            self.next_nak = now + max(self.rtt + 4 * self.rtt_var, MIN_NAK_INTERVAL)
            self.stats.naks_sent += 1
            self._control(ControlType.NAK, 0, encode_losses(self._loss_ranges()), now)
        sent = self.sent
        while sent:
            packet, at = next(iter(sent.values()))
            if now - at <= self.send_latency + 0.1:
                break
            sent.popitem(last=False)
            self.stats.send_dropped += 1
        if now - self.last_sent >= KEEPALIVE_INTERVAL:
            self._control(ControlType.KEEPALIVE, 0, bytes(4), now)
        return out

    def _give_up(self, now: float) -> list[bytes]:
        """TSBPD: when the first packet held past a gap is due, the gap is dropped."""
        out: list[bytes] = []
        while self.received and self.rcv_next not in self.received:
            first = min(self.received, key=lambda s: seq_diff(s, self.rcv_next))
            if self.due(self.received[first][1] / 1e6) > now:
                break
            missing = seq_diff(first, self.rcv_next)
            self.stats.dropped += missing
            for index in range(missing):
                self.losses.pop(seq_add(self.rcv_next, index), None)
            self.rcv_next = first
            out += self._deliver()
        return out

    def _send_ack(self, now: float) -> None:
        self.ack_number = self.ack_number % 0x7FFFFFFF + 1
        self.acked = self.rcv_next
        cutoff = now - 1.0
        window = self._window
        while window and window[0][0] < cutoff:
            self._window_bytes -= window.popleft()[1]
        ack = Ack(
            last=self.rcv_next,
            rtt=int(self.rtt * 1e6),
            rtt_var=int(self.rtt_var * 1e6),
            buffer=max(2, self.buffer_packets - len(self.received)),
            packet_rate=len(window),
            capacity=max(len(window), 1000),
            byte_rate=self._window_bytes,
        )
        self.ack_times[self.ack_number] = now
        if len(self.ack_times) > MAX_ACKS:
            self.ack_times.popitem(last=False)
        self._control(ControlType.ACK, self.ack_number, ack.to_bytes(), now)

    def _loss_ranges(self) -> list[tuple[int, int]]:
        seqs = sorted(self.losses, key=lambda s: seq_diff(s, self.rcv_next))[:256]
        ranges: list[tuple[int, int]] = []
        for seq in seqs:
            if ranges and seq_add(ranges[-1][1], 1) == seq:
                ranges[-1] = (ranges[-1][0], seq)
            else:
                ranges.append((seq, seq))
        return ranges[:128]

    def next_deadline(self) -> float:
        """When :meth:`tick` has something to do next (at the latest)."""
        return self.next_ack

    def document(self) -> dict[str, object]:
        s = self.stats
        return {
            "rtt_ms": round((self.peer_rtt if self.peer_rtt is not None else self.rtt) * 1000, 3),
            "latency_ms": round(max(self.recv_latency, self.send_latency) * 1000),
            "packets_received": s.packets_received,
            "packets_sent": s.packets_sent,
            "lost": s.lost,
            "dropped": s.dropped,
            "retransmitted": s.retransmitted,
            "retransmits_received": s.retransmits_received,
            "naks_sent": s.naks_sent,
            "naks_received": s.naks_received,
        }


def new_socket_id() -> int:
    return secrets.randbits(30) + 1
