"""UDP port pairs for RTSP's RTP/RTCP over UDP (``--rtsp-udp-ports LOW-HIGH``).

:class:`UdpPorts` hands out an (RTP, RTCP) pair of bound, non-blocking UDP sockets on an even
port and the next one, from the configured range, and takes it back. A pair is bound per track
of a session, so the range bounds how many UDP tracks the server holds at once.

Attacker's view: pairs come only from the configured range and are returned when their session
ends; when none is free a ``SETUP`` is answered 453 (Not Enough Bandwidth) and nothing is bound.
Datagrams a socket receives are read by the session's task only from the client's own address
(see :mod:`.connection`).

An RTP socket asks for a receive buffer of :data:`RECEIVE_BUFFER` (the system's default, about
200 kB, is a fraction of a second of a publisher's video: a server short of CPU for a moment
lost packets there while its session task waited for its turn, as the other UDP workers did
before they asked for more). The kernel takes the memory only as datagrams wait, and caps the
size at ``net.core.rmem_max``.

Error policy: :meth:`UdpPorts.take` returns ``None`` when no pair can be bound (all taken, or
the system refuses): the caller answers the client; nothing raises.
"""

from __future__ import annotations

import socket

__all__ = ["UdpPair", "UdpPorts", "RECEIVE_BUFFER"]

RECEIVE_BUFFER = 1024 * 1024
"""The receive buffer an RTP socket asks for (bytes; see the module docstring)."""


class UdpPair:
    """Two bound UDP sockets: RTP on ``port`` and RTCP on ``port + 1``."""

    __slots__ = ("rtp", "rtcp", "port")

    def __init__(self, rtp: socket.socket, rtcp: socket.socket, port: int) -> None:
        self.rtp = rtp
        self.rtcp = rtcp
        self.port = port

    def close(self) -> None:
        self.rtp.close()
        self.rtcp.close()


class UdpPorts:
    """The server's UDP range (``low`` even to ``high``), on ``host``."""

    def __init__(self, host: str, low: int, high: int) -> None:
        if not 0 < low < high <= 65535:
            raise ValueError(f"bad UDP port range {low}-{high}")
        self.host = host
        self.low = low + (low & 1)
        self.high = high
        self._used: set[int] = set()
        self._next = self.low

    @property
    def in_use(self) -> int:
        return len(self._used)

    def take(self) -> UdpPair | None:
        """A free pair, bound; ``None`` if there is none."""
        count = (self.high - self.low + 1) // 2
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        for _ in range(count):
            port = self._next
            self._next = port + 2 if port + 3 <= self.high else self.low
            if port in self._used:
                continue
            rtp = socket.socket(family, socket.SOCK_DGRAM)
            rtcp = socket.socket(family, socket.SOCK_DGRAM)
            try:
                rtp.bind((self.host, port))
                rtcp.bind((self.host, port + 1))
            except OSError:
                rtp.close()
                rtcp.close()
                continue
            try:
                rtp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            except OSError:
                pass  # the system's default then
            rtp.setblocking(False)
            rtcp.setblocking(False)
            self._used.add(port)
            return UdpPair(rtp, rtcp, port)
        return None

    def give_back(self, pair: UdpPair) -> None:
        pair.close()
        self._used.discard(pair.port)
