"""A lean LL-HLS load generator for benchmarks: thousands of viewers in one process, one thread.

**A benchmark driver, not server code.** :class:`LlhlsLoad` drives one sans-IO
:class:`~arcly_trio.clients.hls_follower.RenditionFollower` per media playlist per viewer (the
same core as the trio :func:`~arcly_trio.clients.hls.follow_llhls`) over non-blocking sockets
and one :mod:`selectors` loop (epoll on Linux), so that the load generator costs much less per
request than the server it measures:

* viewers join 100 at a time every 50 ms; each reads the multivariant playlist on its first
  connection, which then follows the first media playlist; every other rendition gets a
  connection of its own (HTTP/1.1 keep-alive, ``TCP_NODELAY``), as the trio driver does;
* a batch of requests the follower asks for goes out in one ``send``; answers are read with
  ``recv_into`` one shared buffer and cut by ``Content-Length`` with ``bytes.find``: the bodies of
  parts and init segments are counted and never copied (only playlists' bodies are kept, for the
  follower to parse), and a response head split between two reads is the only thing a
  connection keeps between them;
* no object is made per request beyond the follower's own targets; no thread, no timer wheel:
  a failed connection waits ``retry`` seconds in a list the loop looks at.

:meth:`LlhlsLoad.run` runs the loop for a number of seconds and returns; counts accumulate in
``counts`` (a :class:`~arcly_trio.clients.hls_follower.FollowerCounts`, shared by all viewers) and
``requests`` (requests sent). ``benchmarks/llhls.py --only viewers`` uses it, pinned to the other
core than the server's, and reports its own CPU per request next to the server's.

Limits: a response head over 16 KiB, a status line it cannot read, a missing
``Content-Length`` (chunked bodies are not read) or a body over ``max_body`` is an error of
that connection.

Error policy: nothing is raised out of :meth:`LlhlsLoad.run` for a connection: a refused
connect, a closed or reset connection, an unreadable response or a refused playlist
(:class:`~arcly_trio.core.errors.RemoteProtocolError` from the follower) is counted in
``counts.errors``, the socket is closed, and that rendition (or the viewer's multivariant
playlist) starts again on a new connection ``retry`` seconds later.
"""

from __future__ import annotations

import selectors
import socket
import time
from collections.abc import Callable
from typing import Final

from arcly_trio.clients.hls_follower import FollowerCounts, RenditionFollower, rendition_targets
from arcly_trio.core.errors import RemoteProtocolError

__all__ = ["LlhlsLoad"]

MAX_HEAD: Final = 16384
RAMP: Final = 100
RAMP_INTERVAL: Final = 0.05
"""Viewers join :data:`RAMP` at a time, every :data:`RAMP_INTERVAL` seconds (as a crowd
arrives, not as one burst of thousands of connects)."""
_RECEIVE: Final = 262144


class _Connection:
    """One keep-alive connection: its socket, its follower (``None`` while it reads the
    multivariant playlist), and the state of the answer being read."""

    __slots__ = ("sock", "follower", "target", "buffer", "status", "length", "skip", "outgoing", "connected")

    def __init__(self, target: bytes, follower: RenditionFollower | None) -> None:
        self.sock: socket.socket | None = None
        self.follower = follower
        self.target = target
        self.buffer = b""
        self.status = 0
        self.length = -1
        """The body length of the answer being read; ``-1`` while its head is."""
        self.skip = 0
        """Body bytes of the answer being read still to skip (a part: counted, not kept)."""
        self.outgoing = b""
        self.connected = False


class LlhlsLoad:
    """``viewers`` LL-HLS viewers of the multivariant playlist ``path`` at ``host:port``
    (see the module docstring)."""

    def __init__(self, host: str, port: int, path: str, viewers: int, *, counts: FollowerCounts | None = None,
                 retry: float = 1.0, max_body: int = 16 << 20) -> None:  # fmt: skip
        self.counts = counts if counts is not None else FollowerCounts()
        self.requests = 0
        """Requests sent (every one, multivariant playlists included)."""
        self.connections = 0
        """Connections open now."""
        self._address = (host, port)
        self._host = host.encode()
        self._retry = retry
        self._max_body = max_body
        self._selector = selectors.DefaultSelector()
        self._scratch = bytearray(_RECEIVE)
        self._view = memoryview(self._scratch)
        self._waiting: list[tuple[float, _Connection]] = []
        self._target = path.encode()
        self._to_open = viewers
        self._next_open = 0.0

    def run(self, seconds: float, until: Callable[[], bool] | None = None) -> None:
        """Follow for ``seconds``, or until ``until()`` is true (asked after each pass of the loop);
        counts keep accumulating across calls."""
        selector = self._selector
        clock = time.monotonic
        deadline = clock() + seconds
        read, write = selectors.EVENT_READ, selectors.EVENT_WRITE
        while (now := clock()) < deadline and (until is None or not until()):
            if self._to_open and now >= self._next_open:  # viewers join RAMP at a time
                for _ in range(min(RAMP, self._to_open)):
                    self._open(_Connection(self._target, None))
                self._to_open -= min(RAMP, self._to_open)
                self._next_open = now + RAMP_INTERVAL
            if self._waiting and self._waiting[0][0] <= now:
                due = [c for at, c in self._waiting if at <= now]
                self._waiting = [(at, c) for at, c in self._waiting if at > now]
                for connection in due:
                    self._open(connection)
                continue
            timeout = deadline - now if until is None else min(deadline - now, 0.05)
            if self._waiting:
                timeout = min(timeout, self._waiting[0][0] - now)
            if self._to_open:
                timeout = min(timeout, max(0.0, self._next_open - now))
            for key, mask in selector.select(timeout):
                connection = key.data
                if mask & write:
                    self._writable(connection)
                if mask & read and connection.sock is not None:
                    self._readable(connection)

    def close(self) -> None:
        """Close every connection."""
        for key in list(self._selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        self._selector.close()
        self.connections = 0

    # --- connections -------------------------------------------------------------------------

    def _open(self, connection: _Connection) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection.sock = sock
        connection.buffer = b""
        connection.length = -1
        connection.skip = 0
        connection.connected = False
        self.connections += 1
        sock.connect_ex(self._address)
        self._selector.register(sock, selectors.EVENT_WRITE, connection)

    def _fail(self, connection: _Connection) -> None:
        """Count an error, close, and open again after ``retry`` seconds."""
        self.counts.errors += 1
        self._drop(connection)
        self._waiting.append((time.monotonic() + self._retry, connection))
        self._waiting.sort(key=lambda item: item[0])

    def _drop(self, connection: _Connection) -> None:
        sock = connection.sock
        if sock is not None:
            self._selector.unregister(sock)
            sock.close()
            connection.sock = None
            self.connections -= 1

    def _writable(self, connection: _Connection) -> None:
        sock = connection.sock
        assert sock is not None
        if not connection.connected:
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                self._fail(connection)
                return
            connection.connected = True
            follower = connection.follower
            self._send(connection, [connection.target] if follower is None else follower.start())
            return
        self._flush(connection)

    def _send(self, connection: _Connection, targets: list[bytes]) -> None:
        host = self._host
        self.requests += len(targets)
        connection.outgoing += b"".join([b"GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (t, host) for t in targets])
        self._flush(connection)

    def _flush(self, connection: _Connection) -> None:
        sock = connection.sock
        assert sock is not None
        try:
            sent = sock.send(connection.outgoing)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._fail(connection)
            return
        connection.outgoing = connection.outgoing[sent:]
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if connection.outgoing else 0)
        if self._selector.get_key(sock).events != events:
            self._selector.modify(sock, events, connection)

    # --- answers -----------------------------------------------------------------------------

    def _readable(self, connection: _Connection) -> None:
        sock = connection.sock
        assert sock is not None
        try:
            received = sock.recv_into(self._scratch)
        except BlockingIOError:
            return
        except OSError:
            self._fail(connection)
            return
        if not received:
            self._fail(connection)
            return
        self._feed(connection, self._scratch, received)

    def _feed(self, connection: _Connection, data: bytearray, received: int) -> None:
        """Bytes ``data[:received]`` just read on ``connection``."""
        if connection.buffer:
            joined = connection.buffer + memoryview(data)[:received]
            self._consume(connection, joined, len(joined))
        else:
            self._consume(connection, data, received)

    def _consume(self, connection: _Connection, data: bytes | bytearray, end: int) -> None:
        """Cut the answers in ``data[:end]``; keep what is left of an unfinished one."""
        position = 0
        while position < end:
            if connection.skip:
                taken = min(connection.skip, end - position)
                connection.skip -= taken
                position += taken
                if connection.skip:
                    break
                if not self._answer(connection, b""):
                    return
                continue
            if connection.length < 0:
                head_end = data.find(b"\r\n\r\n", position, end)
                if head_end < 0:
                    if end - position > MAX_HEAD:
                        self._fail(connection)
                        return
                    break
                length = _content_length(data, position, head_end)
                try:
                    connection.status = int(data[position + 9 : position + 12])
                except ValueError:
                    length = -1
                if length < 0 or length > self._max_body:
                    self._fail(connection)
                    return
                position = head_end + 4
                connection.length = length
                follower = connection.follower
                if length and follower is not None and not follower.next_is_playlist():
                    connection.skip = length
                continue
            length = connection.length
            if end - position < length:
                break
            body = bytes(data[position : position + length])
            position += length
            if not self._answer(connection, body):
                return
        connection.buffer = bytes(data[position:end]) if position < end else b""

    def _answer(self, connection: _Connection, body: bytes) -> bool:
        """Give the answer just read to the follower; ``False`` once the connection is gone."""
        status, length = connection.status, connection.length
        connection.length = -1
        follower = connection.follower
        if follower is None:  # the multivariant playlist
            targets = rendition_targets(connection.target, body) if status == 200 else []
            if not targets:
                self._fail(connection)
                return False
            self.counts.playlists += 1
            connection.follower = follower = RenditionFollower(targets[0], self.counts)
            connection.target = targets[0]
            for other in targets[1:]:
                self._open(_Connection(other, RenditionFollower(other, self.counts)))
            self._send(connection, follower.start())
            return connection.sock is not None
        try:
            batch = follower.receive(status, body, length)
        except RemoteProtocolError:
            self._fail(connection)
            return False
        if batch:
            self._send(connection, batch)
            return connection.sock is not None
        if follower.ended:
            self._drop(connection)
            return False
        return True


def _content_length(data: bytes | bytearray, start: int, end: int) -> int:
    """The ``Content-Length`` of the head ``data[start:end]``; ``-1`` if none can be read."""
    at = data.find(b"\r\ncontent-length:", start, end)
    if at < 0:
        at = data.find(b"\r\nContent-Length:", start, end)
    if at < 0:
        lowered = bytes(data[start:end]).lower()
        found = lowered.find(b"\r\ncontent-length:")
        if found < 0:
            return -1
        at = start + found
    line_end = data.find(b"\r\n", at + 17, end)
    try:
        return int(data[at + 17 : end if line_end < 0 else line_end])
    except ValueError:
        return -1
