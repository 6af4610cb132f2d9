"""ICE-TCP passive (RFC 6544) on the WebRTC port's number: for networks that block UDP.

What: a TCP listener on the same port number as the worker's UDP port. Its candidates are
announced with ``tcptype passive`` after the UDP ones, with a lower priority: a client that can
use UDP does, one that cannot connects here. Every STUN, DTLS, SRTP and SRTCP packet travels in
one RFC 4571 frame (a 2-byte big-endian length, then the packet): :func:`frame` and
:class:`Deframer` are the sans-IO framing.

How: each accepted connection is a :class:`TcpLink` with one task (in the listener's nursery).
Its frames are routed like UDP datagrams (see :mod:`.server`): until the link is bound to a
session, every frame must be a STUN request whose ``USERNAME`` names a live session's ufrag
(the server's router says which, :class:`LinkRouter`); it is handed to that session, whose ICE
agent checks ``MESSAGE-INTEGRITY`` and, when it passes, binds the link (:meth:`TcpLink.bind`).
After that the link's frames all go to its session, which answers over the link and, when the
client selects this path, sends its media there (:meth:`TcpLink.send`).

Sending never waits: :meth:`TcpLink.send` writes the frame to the non-blocking socket at once;
what the kernel does not take is queued (at most :data:`QUEUE_FRAMES` frames and
:data:`QUEUE_BYTES` bytes) and the link's own task drains it when the socket is writable, as
the TCP egresses do (:mod:`arcly_trio.workers.egress`). Past the bound a frame is dropped and
counted, and ``send`` says ``False``: the viewer then skips to the next keyframe, as when the
UDP socket's buffer is full. A frame written in part is always finished first, so frames never
interleave.

Attacker's view: a connection costs one task and one socket, at most ``max_links`` in all and
``max_links_per_address`` per client address (more are closed at once, counted). A connection
whose first frames are not STUN naming a live session is closed at once; one not bound by a
valid check within ``hello_timeout`` seconds is closed; a frame longer than :data:`MAX_FRAME`
closes the connection. Nothing is ever written to a connection that has not passed a session's
ICE check, and a STUN answer is never larger than its request. A peer that stops reading cannot
hold memory (the queue is bounded) and is closed after ``write_timeout`` seconds without
progress.

Error policy: nothing a connection does raises out of its task: a reset, a framing error or a
timeout closes that connection only (its session, if any, loses this path; see
:meth:`~.peer.PeerSession.link_lost`). :meth:`TcpLink.send` never raises. A failing ``accept``
(out of descriptors) is retried after a pause, logged unless it is a usual one. A listener that
cannot be bound raises :class:`~arcly_trio.core.errors.CannotListen` from :func:`open_tcp`.
"""

from __future__ import annotations

import errno
import logging
import math
import socket
from collections import Counter, deque
from typing import Any, Protocol

import trio

from arcly_trio.core.errors import CannotListen, RemoteProtocolError

__all__ = [
    "MAX_FRAME",
    "QUEUE_FRAMES",
    "QUEUE_BYTES",
    "FramingError",
    "Deframer",
    "frame",
    "LinkOwner",
    "LinkRouter",
    "TcpLink",
    "TcpPort",
    "open_tcp",
]

log = logging.getLogger("arcly_trio.webrtc")

MAX_FRAME = 2048
"""The longest RFC 4571 frame accepted (WebRTC packets stay under the path MTU, about 1200)."""
QUEUE_FRAMES = 512
"""Frames a link queues at most while its socket is full; more are dropped (counted)."""
QUEUE_BYTES = 512 * 1024
"""Bytes a link queues at most while its socket is full."""
_RECEIVE = 16384
_ACCEPT_ERRORS = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.EMFILE, errno.ENFILE, errno.ENOBUFS})


class FramingError(RemoteProtocolError):
    """A frame longer than :data:`MAX_FRAME` (or than the length field holds)."""


def frame(data: bytes) -> bytes:
    """``data`` in one RFC 4571 frame. Raises :class:`FramingError` past :data:`MAX_FRAME`."""
    if len(data) > MAX_FRAME:
        raise FramingError(f"a {len(data)}-byte packet is over the {MAX_FRAME}-byte frame limit")
    return len(data).to_bytes(2, "big") + data


class Deframer:
    """Splits a TCP byte stream into RFC 4571 frames (sans-IO; empty frames are skipped)."""

    __slots__ = ("_buffer", "max_frame")

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._buffer = bytearray()
        self.max_frame = max_frame

    @property
    def pending(self) -> int:
        """Bytes held of an unfinished frame."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """The frames completed by ``data``. Raises :class:`FramingError` for a length over the limit."""
        buffer = self._buffer
        buffer += data
        out: list[bytes] = []
        start = 0
        end = len(buffer)
        while end - start >= 2:
            length = (buffer[start] << 8) | buffer[start + 1]
            if length > self.max_frame:
                raise FramingError(f"a {length}-byte frame is over the {self.max_frame}-byte limit")
            if end - start - 2 < length:
                break
            if length:
                out.append(bytes(buffer[start + 2 : start + 2 + length]))
            start += 2 + length
        del buffer[:start]
        return out


class LinkOwner(Protocol):
    """What a link needs of a session (:class:`~.peer.PeerSession`)."""

    def deliver(self, data: bytes, address: tuple[str, int], link: TcpLink | None = None) -> None: ...

    def link_lost(self, link: TcpLink) -> None: ...


class LinkRouter(Protocol):
    """What a link asks of the server: the session a first STUN frame names."""

    def route_stun(self, data: bytes) -> LinkOwner | None: ...


class TcpLink:
    """One accepted ICE-TCP connection (see the module docstring)."""

    def __init__(self, port: TcpPort, sock: socket.socket, address: tuple[str, int]) -> None:
        self.port = port
        self.socket = sock
        self.address = address
        self.session: LinkOwner | None = None
        self.created = trio.current_time()
        self.queue: deque[bytes | memoryview] = deque()
        self.queued_bytes = 0
        self.sent = 0
        """Frames written to the socket (entirely)."""
        self.drops = 0
        """Frames dropped because the queue was full."""
        self.received = 0
        self.closed = False
        self.stalled = False
        """Closed because the peer read nothing for ``write_timeout`` seconds (a viewer too slow)."""
        self.end_reason: str | None = None
        self.scope = trio.CancelScope()
        self._wake = trio.Event()

    # ------------------------------------------------------------------ the session's side

    def bind(self, session: LinkOwner) -> bool:
        """Give the link to ``session`` (its ICE check passed); ``False`` once bound elsewhere or closed."""
        if self.closed or (self.session is not None and self.session is not session):
            return False
        self.session = session
        return True

    def send(self, data: bytes) -> bool:
        """Frame ``data`` and write it now, or queue it if the socket is full; never waits or raises.

        ``False``: not sent (the link is closed, the packet is too long, or the queue is full)."""
        if self.closed or len(data) > MAX_FRAME:
            return False
        framed = len(data).to_bytes(2, "big") + data
        queue = self.queue
        if queue:
            if len(queue) >= QUEUE_FRAMES or self.queued_bytes + len(framed) > QUEUE_BYTES:
                self.drops += 1
                return False
            queue.append(framed)
            self.queued_bytes += len(framed)
            return True
        try:
            written = self.socket.send(framed)
        except BlockingIOError:
            written = 0
        except OSError as exc:
            self.close(f"write failed: {exc.strerror or exc}")
            return False
        if written == len(framed):
            self.sent += 1
            return True
        rest = memoryview(framed)[written:]
        queue.append(rest)
        self.queued_bytes += len(rest)
        self._wake.set()
        return True

    def close(self, reason: str) -> None:
        """End the link (its task closes the socket); writes stop at once."""
        if self.end_reason is None:
            self.end_reason = reason
        self.closed = True
        self.queue.clear()
        self.queued_bytes = 0
        self.scope.cancel()

    # ------------------------------------------------------------------ the link's task

    async def run(self, router: LinkRouter) -> None:
        try:
            with self.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._writer)
                    await self._reader(router)
                    nursery.cancel_scope.cancel()
        finally:
            self.closed = True
            self.queue.clear()
            trio.lowlevel.notify_closing(self.socket)
            self.socket.close()
            session = self.session
            if session is not None:
                session.link_lost(self)
            self.port.forget(self)

    async def _reader(self, router: LinkRouter) -> None:
        deframer = Deframer()
        sock = self.socket
        hello_deadline = self.created + self.port.hello_timeout
        while True:
            deadline = hello_deadline if self.session is None else math.inf
            data = None
            with trio.move_on_at(deadline):
                await trio.lowlevel.wait_readable(sock)
                try:
                    data = sock.recv(_RECEIVE)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    self.close(f"read failed: {exc.strerror or exc}")
                    return
            if data is None:
                self.port.hello_timeouts += 1
                self.close(f"no valid ICE check within {self.port.hello_timeout:g} s")
                return
            if not data:
                self.close("closed by the peer")
                return
            try:
                frames = deframer.feed(data)
            except FramingError as exc:
                self.port.bad_frames += 1
                self.close(str(exc))
                return
            for packet in frames:
                self.received += 1
                session = self.session
                if session is None:
                    session = router.route_stun(packet)
                    if session is None:
                        self.port.strangers += 1
                        self.close("not a STUN check for a live session")
                        return
                session.deliver(packet, self.address, self)

    async def _writer(self) -> None:
        port = self.port
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            while self.queue:
                with trio.move_on_after(port.write_timeout) as waited:
                    await trio.lowlevel.wait_writable(self.socket)
                if waited.cancelled_caught:
                    self.stalled = True
                    port.stalled += 1
                    self.close(f"the peer read nothing for {port.write_timeout:g} s")
                    return
                self._flush()

    def _flush(self) -> None:
        queue = self.queue
        while queue:
            head = queue[0]
            try:
                written = self.socket.send(head)
            except BlockingIOError:
                return
            except OSError as exc:
                self.close(f"write failed: {exc.strerror or exc}")
                return
            self.queued_bytes -= written
            if written < len(head):
                queue[0] = memoryview(head)[written:]
                return
            queue.popleft()
            self.sent += 1


class TcpPort:
    """The ICE-TCP listener and its links (see the module docstring).

    Args:
        sock: a bound, listening TCP socket.
        max_links, max_links_per_address: connection limits (in all, per client address).
        hello_timeout: seconds a connection has to pass a session's ICE check.
        write_timeout: seconds a link's queue may wait for the peer to read before it is closed.
    """

    def __init__(
        self,
        sock: socket.socket,
        *,
        max_links: int = 1000,
        max_links_per_address: int = 16,
        hello_timeout: float = 5.0,
        write_timeout: float = 10.0,
    ) -> None:
        sock.setblocking(False)
        self.socket = sock
        self.max_links = max_links
        self.max_links_per_address = max_links_per_address
        self.hello_timeout = hello_timeout
        self.write_timeout = write_timeout
        self.links: set[TcpLink] = set()
        self.per_address: Counter[str] = Counter()
        self.accepted = 0
        self.refused = 0
        """Connections closed at once: over a limit."""
        self.strangers = 0
        """Connections closed because a frame before their ICE check named no live session."""
        self.hello_timeouts = 0
        self.bad_frames = 0
        self.stalled = 0
        """Links closed because their peer read nothing for ``write_timeout`` seconds."""

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.socket.getsockname()[:2]
        return host, port

    async def serve(self, router: LinkRouter) -> None:
        """Accept connections until cancelled; each link runs in a task of this call's nursery."""
        listener = self.socket
        try:
            async with trio.open_nursery() as nursery:
                while True:
                    await trio.lowlevel.wait_readable(listener)
                    try:
                        sock, peer = listener.accept()
                    except BlockingIOError:
                        continue
                    except OSError as exc:
                        if exc.errno not in _ACCEPT_ERRORS:
                            log.warning("webrtc: accepting an ICE-TCP connection failed: %s", exc)
                        await trio.sleep(0.05)  # out of descriptors...: let others finish
                        continue
                    address = (peer[0], peer[1])
                    if len(self.links) >= self.max_links or self.per_address[address[0]] >= self.max_links_per_address:
                        self.refused += 1
                        sock.close()
                        continue
                    sock.setblocking(False)
                    try:
                        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    except OSError:
                        pass
                    self.accepted += 1
                    link = TcpLink(self, sock, address)
                    self.links.add(link)
                    self.per_address[address[0]] += 1
                    nursery.start_soon(link.run, router)
        finally:
            trio.lowlevel.notify_closing(listener)
            listener.close()

    def forget(self, link: TcpLink) -> None:
        if link in self.links:
            self.links.discard(link)
            host = link.address[0]
            self.per_address[host] -= 1
            if self.per_address[host] <= 0:
                del self.per_address[host]

    def close(self) -> None:
        self.socket.close()


def open_tcp(host: str, port: int, **limits: Any) -> TcpPort:
    """Listen on TCP ``host``:``port`` (IPv6 if the host is an IPv6 address).

    Raises :class:`~arcly_trio.core.errors.CannotListen` when the address cannot be bound.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise CannotListen("webrtc", host, port, exc.errno, exc.strerror or str(exc)) from None
    return TcpPort(sock, **limits)
