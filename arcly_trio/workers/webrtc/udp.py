"""The WebRTC worker's one UDP port: every session's STUN, DTLS, SRTP and SRTCP.

A :class:`UdpPort` owns one bound, non-blocking UDP socket. Receiving is the server's one
receive task (:meth:`UdpPort.receive_batch`: a trio wait, then what the socket already holds,
up to a limit, without one scheduler pass per datagram); sending is synchronous and never waits
(:meth:`UdpPort.send`), so a viewer's packets are written straight from the stream's task, as
the TCP egresses write their sockets (see :mod:`arcly_trio.workers.egress`): a datagram the
kernel's socket buffer has no room for is not queued but dropped and counted, which is what a
network does to UDP anyway (the viewer asks again with a NACK, or waits for the next keyframe).

**UDP GSO** (generic segmentation offload, Linux 4.18+): a viewer's packets of one frame are
built back to back (:meth:`~arcly_trio.protocols.webrtc.srtp.SrtpContext.protect_packets`) and
all but the last have the same size, so :meth:`UdpPort.send_many` sends each run of equal-sized
packets (a shorter last one included) with one ``sendmsg`` carrying a ``UDP_SEGMENT`` control
message: the kernel cuts it into the datagrams, one system call per viewer and frame instead of
one per packet (measured on loopback: ~2 µs per packet instead of ~4.7, ~0.8 µs when the
receiver takes them coalesced with ``UDP_GRO``). A kernel or route that refuses it (``EIO``: no
checksum offload; ``EINVAL``, ``ENOPROTOOPT``, ``EOPNOTSUPP``: no GSO; ``EMSGSIZE``) gets those
packets one ``sendto`` at a time, and if GSO never worked on the port it is not tried again
(:attr:`UdpPort.gso`; ``EMSGSIZE`` excepted: that run was too large, not GSO missing). The
datagrams on the wire are the same either way.

Error policy: :meth:`UdpPort.send` and :meth:`UdpPort.send_many` never raise (a full buffer or
an unreachable peer is counted in :attr:`UdpPort.send_drops` / :attr:`UdpPort.send_errors` and
they return ``False``);
:meth:`UdpPort.receive` lets trio's ``OSError`` out only for a closed socket (errors that ICMP
reports for a past send, such as ``ECONNREFUSED``, are skipped).
"""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Sequence

import trio

from arcly_trio.core.errors import CannotListen

__all__ = ["UdpPort", "MAX_DATAGRAM", "MAX_SEGMENTS", "open_udp"]

MAX_DATAGRAM = 2048
"""The largest datagram read (WebRTC keeps packets under the path MTU, about 1200 bytes)."""

_SEND_BUFFER = 4 * 1024 * 1024
_RECEIVE_BUFFER = 4 * 1024 * 1024
MAX_SEGMENTS = 64
"""Datagrams one GSO send carries at most (the kernel's ``UDP_MAX_SEGMENTS``)."""

_ICMP_ERRORS = frozenset({errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN})
_UDP_SEGMENT = getattr(socket, "UDP_SEGMENT", 103)
_SOL_UDP = getattr(socket, "SOL_UDP", 17)
_NO_GSO = frozenset(
    {errno.EIO, errno.EINVAL, errno.ENOPROTOOPT, errno.EOPNOTSUPP, errno.EMSGSIZE, errno.ENOTSUP, errno.ENOSYS}
)
_SEGMENT_SIZES = {size: struct.pack("=H", size) for size in range(1, 1501)}


class UdpPort:
    """One bound UDP socket shared by every WebRTC session (see the module docstring)."""

    __slots__ = ("socket", "_trio", "send_drops", "send_errors", "sent", "received", "gso", "gso_sends", "_gso_worked")

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.socket = sock
        self._trio = trio.socket.from_stdlib_socket(sock)
        self.send_drops = 0
        """Datagrams dropped because the socket's send buffer was full."""
        self.send_errors = 0
        """Datagrams the kernel refused (an unreachable address...)."""
        self.sent = 0
        self.received = 0
        self.gso = True
        """Whether runs of packets go out with UDP GSO (false once the kernel refused it before it ever worked)."""
        self.gso_sends = 0
        """System calls that sent several datagrams at once."""
        self._gso_worked = False

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.socket.getsockname()[:2]
        return host, port

    def send(self, data: bytes | memoryview, address: tuple[str, int]) -> bool:
        """Send one datagram now if the socket takes it; never waits, never raises."""
        try:
            self.socket.sendto(data, address)
        except BlockingIOError:
            self.send_drops += 1
            return False
        except OSError:
            self.send_errors += 1
            return False
        self.sent += 1
        return True

    def send_many(self, data: memoryview, ends: Sequence[int], address: tuple[str, int]) -> bool:
        """Send the packets laid back to back in ``data`` (packet ``i`` ends at ``ends[i]``)
        now, each run of equal-sized ones with one GSO ``sendmsg`` (see the module docstring);
        whether every one went out. Never waits, never raises."""
        ok = True
        begin = 0
        index = 0
        count = len(ends)
        while index < count:
            end = ends[index]
            size = end - begin
            following = index + 1
            while following < count and following - index < MAX_SEGMENTS and ends[following] - end == size:
                end = ends[following]
                following += 1
            if following < count and following - index < MAX_SEGMENTS and ends[following] - end < size:
                end = ends[following]  # a shorter last datagram closes the run
                following += 1
            if following - index == 1 or not self.gso or size > 1500:
                for offset in range(begin, end, size):
                    if not self.send(data[offset : min(offset + size, end)], address):
                        ok = False
            elif not self._send_segments(data[begin:end], size, following - index, address):
                ok = False
            begin = end
            index = following
        return ok

    def send_runs(self, data: memoryview, runs: Sequence[tuple[int, int, int, int]], address: tuple[str, int]) -> bool:
        """:meth:`send_many` with the runs worked out already (``(begin, end, segment size,
        count)``, as :class:`~arcly_trio.protocols.webrtc.srtp.PacketPlan` has them: the same
        for every viewer of a frame); the same datagrams. Never waits, never raises."""
        ok = True
        for begin, end, size, count in runs:
            if count == 1 or not self.gso or size > 1500:
                for offset in range(begin, end, size):
                    if not self.send(data[offset : min(offset + size, end)], address):
                        ok = False
            elif not self._send_segments(data[begin:end], size, count, address):
                ok = False
        return ok

    def _send_segments(self, data: memoryview, size: int, count: int, address: tuple[str, int]) -> bool:
        try:
            self.socket.sendmsg([data], [(_SOL_UDP, _UDP_SEGMENT, _SEGMENT_SIZES[size])], 0, address)
        except BlockingIOError:
            self.send_drops += count
            return False
        except OSError as exc:
            if exc.errno not in _NO_GSO:
                self.send_errors += count
                return False
            if not self._gso_worked and exc.errno != errno.EMSGSIZE:
                self.gso = False  # this kernel does not do it: one datagram at a time from now on
            ok = True
            for offset in range(0, len(data), size):
                if not self.send(data[offset : offset + size], address):
                    ok = False
            return ok
        self._gso_worked = True
        self.gso_sends += 1
        self.sent += count
        return True

    async def receive(self) -> tuple[bytes, tuple[str, int]]:
        """The next datagram and the address it came from."""
        while True:
            try:
                data, address = await self._trio.recvfrom(MAX_DATAGRAM)
            except OSError as exc:
                if exc.errno in _ICMP_ERRORS:
                    continue
                raise
            self.received += 1
            return data, (address[0], address[1])

    async def receive_batch(self, limit: int = 64) -> list[tuple[bytes, tuple[str, int]]]:
        """The next datagram (waiting for it) and up to ``limit - 1`` more the socket already
        holds, read without waiting: one wakeup of the receive task drains a burst. (One
        scheduler pass per datagram let the socket's buffer fill while the process was short of
        CPU: measured, a WHIP publisher's packets then were dropped by the kernel.) Errors as
        :meth:`receive`; one that comes after the first datagram ends the batch."""
        batch = [await self.receive()]
        recvfrom = self.socket.recvfrom
        for _ in range(limit - 1):
            try:
                data, address = recvfrom(MAX_DATAGRAM)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno in _ICMP_ERRORS:
                    continue
                break  # (the next receive raises it)
            self.received += 1
            batch.append((data, (address[0], address[1])))
        return batch

    def close(self) -> None:
        self._trio.close()


def open_udp(host: str, port: int) -> UdpPort:
    """Bind a UDP socket on ``host``:``port`` (IPv6 if the host is an IPv6 address).

    Raises :class:`~arcly_trio.core.errors.CannotListen` when the address cannot be bound.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        for option, size in ((socket.SO_SNDBUF, _SEND_BUFFER), (socket.SO_RCVBUF, _RECEIVE_BUFFER)):
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, size)
            except OSError:
                pass
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise CannotListen("webrtc", host, port, exc.errno, exc.strerror or str(exc)) from None
    return UdpPort(sock)
