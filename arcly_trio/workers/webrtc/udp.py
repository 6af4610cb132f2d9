"""The WebRTC worker's one UDP port: every session's STUN, DTLS, SRTP and SRTCP.

A :class:`UdpPort` owns one bound, non-blocking UDP socket. Receiving is the server's one
receive task (:meth:`UdpPort.receive`, a trio wait); sending is synchronous and never waits
(:meth:`UdpPort.send`), so a viewer's packets are written straight from the stream's task, as
the TCP egresses write their sockets (see :mod:`arcly_trio.workers.egress`): a datagram the
kernel's socket buffer has no room for is not queued but dropped and counted, which is what a
network does to UDP anyway (the viewer asks again with a NACK, or waits for the next keyframe).

Error policy: :meth:`UdpPort.send` never raises (a full buffer or an unreachable peer is counted
in :attr:`UdpPort.send_drops` / :attr:`UdpPort.send_errors` and returns ``False``);
:meth:`UdpPort.receive` lets trio's ``OSError`` out only for a closed socket (errors that ICMP
reports for a past send, such as ``ECONNREFUSED``, are skipped).
"""

from __future__ import annotations

import errno
import socket

import trio

from arcly_trio.core.errors import CannotListen

__all__ = ["UdpPort", "MAX_DATAGRAM", "open_udp"]

MAX_DATAGRAM = 2048
"""The largest datagram read (WebRTC keeps packets under the path MTU, about 1200 bytes)."""

_SEND_BUFFER = 4 * 1024 * 1024
_RECEIVE_BUFFER = 4 * 1024 * 1024
_ICMP_ERRORS = frozenset({errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN})


class UdpPort:
    """One bound UDP socket shared by every WebRTC session (see the module docstring)."""

    __slots__ = ("socket", "_trio", "send_drops", "send_errors", "sent", "received")

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

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.socket.getsockname()[:2]
        return host, port

    def send(self, data: bytes, address: tuple[str, int]) -> bool:
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
