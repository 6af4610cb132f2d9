"""The WebRTC worker's UDP port (arcly_trio.workers.webrtc.udp): a viewer's packets laid back to
back go out as the same datagrams whether the kernel does UDP GSO or not; a kernel that refuses
GSO before it ever worked is not asked again, one that refuses it later (a route) gets that run
one datagram at a time; a full buffer drops the run, counted."""

from __future__ import annotations

import errno
import socket
from typing import Any

import pytest
import trio

from arcly_trio.workers.webrtc.udp import MAX_SEGMENTS, UdpPort, open_udp
from tests._net import HOST

SIZES = [1228] * 5 + [700, 140, 140, 1228, 1228, 90]
"""A video frame's packets (five full ones and a shorter last), two audio ones, a two-packet frame, a runt."""


def _laid_out(sizes: list[int]) -> tuple[memoryview, list[int], list[bytes]]:
    packets = [bytes([n]) * size for n, size in enumerate(sizes)]
    ends: list[int] = []
    total = 0
    for packet in packets:
        total += len(packet)
        ends.append(total)
    return memoryview(b"".join(packets)), ends, packets


class _Refusing:
    """A socket whose ``sendmsg`` fails with ``error`` (as a kernel without GSO does); counts calls."""

    def __init__(self, sock: socket.socket, error: int) -> None:
        self.sock = sock
        self.error = error
        self.sendmsg_calls = 0

    def sendmsg(self, *args: Any) -> int:
        self.sendmsg_calls += 1
        raise OSError(self.error, "refused")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


def _receive(sock: socket.socket, count: int) -> list[bytes]:
    out = []
    for _ in range(count):
        out.append(sock.recv(65536))
    return out


@pytest.fixture
async def pair():
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind((HOST, 0))
    receiver.settimeout(5)
    port = open_udp(HOST, 0)
    try:
        yield port, receiver
    finally:
        port.close()
        receiver.close()


async def test_runs_of_equal_packets_go_out_as_the_same_datagrams(pair: tuple[UdpPort, socket.socket]) -> None:
    port, receiver = pair
    data, ends, packets = _laid_out(SIZES)
    with trio.fail_after(5):
        assert port.send_many(data, ends, receiver.getsockname())
        assert _receive(receiver, len(packets)) == packets
    assert port.sent == len(packets)
    # On this kernel GSO works: 5 full + the shorter last in one call, the two audio packets in
    # one run (equal), the two full ones and the runt in one: three system calls for 11 datagrams.
    if port.gso:
        assert port.gso_sends == 3


async def test_precomputed_runs_send_what_send_many_sends(pair: tuple[UdpPort, socket.socket]) -> None:
    """The runs a frame's plan carries (worked out once for every viewer) give the same
    datagrams, in order, with the same GSO sends as :meth:`UdpPort.send_many`; a full buffer
    drops and counts them."""
    port, receiver = pair
    data, ends, packets = _laid_out(SIZES)
    runs = ((0, 6840, 1228, 6), (6840, 7120, 140, 2), (7120, 9666, 1228, 3))
    assert runs[-1][1] == ends[-1]
    with trio.fail_after(5):
        assert port.send_runs(data, runs, receiver.getsockname())
        assert _receive(receiver, len(packets)) == packets
    if port.gso:
        assert port.gso_sends == 3
    port.socket = _Refusing(port.socket, errno.EAGAIN)  # type: ignore[assignment]
    assert not port.send_runs(data, runs[:1], receiver.getsockname())
    assert port.send_drops == 6


async def test_more_than_the_segment_limit_is_split(pair: tuple[UdpPort, socket.socket]) -> None:
    port, receiver = pair
    data, ends, packets = _laid_out([200] * (MAX_SEGMENTS + 5))
    with trio.fail_after(5):
        assert port.send_many(data, ends, receiver.getsockname())
        assert _receive(receiver, len(packets)) == packets


@pytest.mark.parametrize("error", [errno.EIO, errno.EINVAL])
async def test_a_kernel_that_refuses_gso_gets_datagrams_one_by_one_from_then_on(
    pair: tuple[UdpPort, socket.socket], error: int
) -> None:
    port, receiver = pair
    refusing = _Refusing(port.socket, error)
    port.socket = refusing  # type: ignore[assignment]
    data, ends, packets = _laid_out(SIZES)
    with trio.fail_after(5):
        assert port.send_many(data, ends, receiver.getsockname())
        assert _receive(receiver, len(packets)) == packets
        assert not port.gso and refusing.sendmsg_calls == 1
        assert port.send_many(data, ends, receiver.getsockname())
        assert _receive(receiver, len(packets)) == packets
    assert refusing.sendmsg_calls == 1  # not asked again
    assert port.sent == 2 * len(packets) and port.send_errors == 0


async def test_a_refusal_after_gso_worked_falls_back_for_that_run_only(pair: tuple[UdpPort, socket.socket]) -> None:
    port, receiver = pair
    data, ends, packets = _laid_out(SIZES[:6])
    with trio.fail_after(5):
        assert port.send_many(data, ends, receiver.getsockname())
        _receive(receiver, 6)
        if not port.gso:
            pytest.skip("this kernel does not do UDP GSO")
        real = port.socket
        port.socket = _Refusing(real, errno.EMSGSIZE)  # type: ignore[assignment]
        assert port.send_many(data, ends, receiver.getsockname())
        assert _receive(receiver, 6) == packets
    assert port.gso  # still tried for the next run


async def test_a_full_buffer_drops_the_run_and_counts_it(pair: tuple[UdpPort, socket.socket]) -> None:
    port, receiver = pair
    port.socket = _Refusing(port.socket, errno.EAGAIN)  # type: ignore[assignment]
    data, ends, _ = _laid_out(SIZES[:6])
    assert not port.send_many(data, ends, receiver.getsockname())
    assert port.send_drops == 6 and port.sent == 0
    assert port.gso  # a full buffer says nothing about GSO


async def test_a_run_too_large_for_one_gso_send_does_not_turn_gso_off(pair: tuple[UdpPort, socket.socket]) -> None:
    """EMSGSIZE says the run or the route is too large, not that the kernel lacks GSO."""
    port, receiver = pair
    refusing = _Refusing(port.socket, errno.EMSGSIZE)
    port.socket = refusing  # type: ignore[assignment]
    data, ends, packets = _laid_out(SIZES[:6])
    with trio.fail_after(5):
        assert port.send_many(data, ends, receiver.getsockname())
        assert _receive(receiver, 6) == packets
    assert port.gso and refusing.sendmsg_calls == 1


async def test_a_burst_is_read_in_batches_in_order(pair: tuple[UdpPort, socket.socket]) -> None:
    """One wakeup of the receive task reads what the socket holds, up to the limit, in order;
    the rest comes with the next call; an ICMP error in the burst is skipped, not returned."""
    port, receiver = pair
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sender.bind((HOST, 0))
        for n in range(100):  # (loopback queues each datagram before sendto returns)
            sender.sendto(n.to_bytes(2, "big"), port.address)
        with trio.fail_after(5):
            first = await port.receive_batch(64)
            second = await port.receive_batch(64)
        assert [data for data, _ in first + second] == [n.to_bytes(2, "big") for n in range(100)]
        assert len(first) == 64 and {address for _, address in first + second} == {sender.getsockname()}
        assert port.received == 100
        closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        closed.bind((HOST, 0))
        gone = closed.getsockname()
        closed.close()
        port.send(b"x", gone)  # the port answers with ICMP: an error queued on our socket
        sender.sendto(b"after", port.address)
        with trio.fail_after(5):
            batch = await port.receive_batch(64)
            while not batch or batch[-1][0] != b"after":
                batch += await port.receive_batch(64)
        assert [data for data, _ in batch] == [b"after"]
    finally:
        sender.close()
