"""How a handler answers a request that came on an HTTP/2 stream: :class:`H2Exchange`.

:class:`H2Exchange` is an :class:`~.exchange.Exchange` (same methods, same meaning) whose
answers are ``h2`` frames on one stream of an :class:`~.h2_connection.H2Connection` instead of
h11 bytes: a whole response is a ``HEADERS`` and ``DATA`` ending the stream, a streamed one
``DATA`` frames (no chunked coding: :attr:`H2Exchange.chunked` is false, so a live HTTP-FLV body
is plain FLV). The direct-write egress of live bodies (:meth:`~.exchange.Exchange.open_egress`)
writes to an :class:`H2StreamChannel`, a ``trio.abc.Stream`` over the stream, so the egress's
ordinary path applies unchanged: its bounded queue, the kernel's lag policy for a viewer that
falls behind, and ``write_timeout`` for a client whose flow-control window stays closed.
``Connection: close`` and the other connection-specific headers do not exist in HTTP/2 and are
never sent; WebSocket handshakes are refused (``400``; they come over HTTP/1.1).

:class:`H2Stream` is one request stream's state as the connection's reading task fills it:
headers, the body's bytes not yet read (held within the flow-control window), reset.

Error policy: as :class:`~.exchange.Exchange`: writes raise :class:`~.exchange.ClientGone`
when the client reset the stream, closed the connection or did not open its window within
the write timeout; :meth:`H2Exchange.read_body` raises :class:`BadRequest` (``413``, ``408``).
An inherited method that would write h11's raw bytes raises ``LocalProtocolError`` (a bug: it
needs an HTTP/2 form here), answered ``500`` by the worker.
:class:`H2StreamChannel` raises ``trio.BrokenResourceError`` (a transport error) instead, as a
socket would.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

import trio

from arcly_trio.core.errors import LocalProtocolError
from arcly_trio.protocols.http.router import BadRequest
from arcly_trio.workers.egress import Egress
from arcly_trio.workers.http.exchange import (
    ClientGone,
    Exchange,
    ExchangeHost,
    common_headers,
    log_write_timeout,
    status_headers,
)
from arcly_trio.workers.http.ws_egress import EgressWebSocket

if TYPE_CHECKING:
    from arcly_trio.kernel.engine import Engine

__all__ = ["H2Exchange", "H2Stream", "H2StreamChannel"]

_CONNECTION_HEADERS = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"})


class H2Writer(Protocol):
    """What a stream's exchange uses of its connection (the :class:`~.h2_connection.H2Connection`)."""

    @property
    def broken(self) -> bool: ...

    async def flush(self) -> None: ...

    async def send_headers(
        self, stream: H2Stream, headers: list[tuple[bytes, bytes]], end: bool, *, flush: bool = True
    ) -> None: ...

    async def send_data(self, stream: H2Stream, data: bytes | bytearray | memoryview, end: bool) -> None: ...

    def acknowledge(self, stream: H2Stream, size: int) -> None: ...


class H2Stream:
    """One request stream: its headers, body and state (see the module docstring)."""

    __slots__ = (
        "id",
        "headers",
        "method",
        "target",
        "body_done",
        "ended",
        "reset",
        "started",
        "truncated",
        "head_sent",
        "scope",
        "unread",
        "_body",
        "_changed",
    )

    def __init__(self, stream_id: int, headers: list[tuple[bytes, bytes]], *, body_done: bool) -> None:
        self.id = stream_id
        self.headers = headers
        pseudo = {name: value for name, value in headers if name.startswith(b":")}
        self.method = pseudo.get(b":method", b"GET")
        self.target = pseudo.get(b":path", b"")
        self.body_done = body_done
        """The client ended its side of the stream (its body is whole)."""
        self.ended = False
        """Our side is ended (the response is whole)."""
        self.reset = False
        """The client reset the stream or the connection ended."""
        self.head_sent = False
        """The response's head (``HEADERS``) has been handed to ``h2``."""
        self.truncated = False
        """A write of its body did not finish (timed out, failed): it must not end cleanly."""
        self.started = False
        """Whether its handler's task was started."""
        self.started = False
        """Whether its handler's task was started."""
        self.scope = trio.CancelScope()
        """The handler's scope, cancelled when the stream is reset."""
        self.unread = 0
        """Flow-controlled bytes received and not yet acknowledged."""
        self._body = bytearray()
        self._changed = trio.Event()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def take(self, data: bytes, size: int) -> None:
        """Body bytes arrived (``size``: their flow-controlled length, padding included)."""
        self._body += data
        self.unread += size
        self._wake()

    def finish(self) -> None:
        self.body_done = True
        self._wake()

    def gone(self) -> None:
        self.reset = True
        self.scope.cancel()
        self._wake()

    def read(self, max_bytes: int) -> tuple[bytes, int]:
        """Up to ``max_bytes`` of the buffered body, and the flow-controlled bytes to acknowledge."""
        data = bytes(self._body[:max_bytes])
        del self._body[:max_bytes]
        acknowledged = self.unread if not self._body else min(self.unread, len(data))
        self.unread -= acknowledged
        return data, acknowledged

    @property
    def buffered(self) -> int:
        return len(self._body)

    async def changed(self) -> None:
        """Wait for body bytes, its end or a reset."""
        await self._changed.wait()


class H2StreamChannel(trio.abc.Stream):
    """A ``trio.abc.Stream`` over one HTTP/2 stream (what the egress writes a live body to):
    ``send_all`` sends ``DATA`` as the windows allow; ``receive_some`` gives the request body's
    bytes, then waits, and returns ``b""`` once the stream is reset or the connection ends."""

    def __init__(self, connection: H2Writer, stream: H2Stream) -> None:
        self.connection = connection
        self.h2_stream = stream

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        done = False
        try:
            await self.connection.send_data(self.h2_stream, data, end=False)
            done = True
        except ClientGone as exc:
            raise trio.BrokenResourceError(str(exc)) from None
        finally:
            if not done:
                self.h2_stream.truncated = True

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def send_eof(self) -> None:
        try:
            await self.connection.send_data(self.h2_stream, b"", end=True)
        except ClientGone as exc:
            raise trio.BrokenResourceError(str(exc)) from None

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        stream = self.h2_stream
        while True:
            if stream.reset or self.connection.broken:
                await trio.lowlevel.checkpoint()
                return b""
            if stream.buffered:
                data, acknowledged = stream.read(max_bytes or 65536)
                self.connection.acknowledge(stream, acknowledged)
                await trio.lowlevel.checkpoint()
                return data
            await stream.changed()

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


class H2Exchange(Exchange):
    """An :class:`~.exchange.Exchange` answering on an HTTP/2 stream (see the module docstring)."""

    def __init__(
        self, server: ExchangeHost, engine: Engine, connection: H2Writer, stream: H2Stream, peer: tuple[str, int]
    ) -> None:
        # Not Exchange.__init__: there is no h11 connection or event; the same attributes.
        self._stream = H2StreamChannel(connection, stream)
        self._connection = connection
        self._h2_stream = stream
        self.request = None
        self.server = server
        self.engine = engine
        self.peer = peer
        self.responded = False
        self.status = None
        self.keep_alive = True
        self.client_gone = False
        self.cors = True
        self._head = stream.method == b"HEAD"

    def _h2_headers(self, status: int, extra: Iterable[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
        headers = [(b":status", b"%d" % status), *common_headers(self.server.cors and self.cors)]
        for name, value in extra:
            key = name.lower().encode("latin-1")
            if key not in _CONNECTION_HEADERS:
                headers.append((key, value.encode("latin-1")))
        return headers

    async def _write(self, headers: list[tuple[bytes, bytes]] | None, body: bytes, end: bool) -> None:
        connection = self._connection
        stream = self._h2_stream
        stream.truncated = True  # until the write is done
        try:
            with trio.fail_after(self.server.write_timeout):
                if headers is not None:
                    # a head with a body goes out with the body's first DATA, in one write
                    await connection.send_headers(stream, headers, end and not body, flush=not body)
                if body or (end and headers is None):
                    await connection.send_data(stream, body, end)
        except trio.TooSlowError:
            log_write_timeout(self.server, self.peer, f"stream {stream.id}'s window stayed closed")
            raise ClientGone("write timeout") from None
        stream.truncated = False

    async def respond(
        self,
        status: int,
        body: bytes = b"",
        *,
        content_type: str = "text/plain; charset=utf-8",
        headers: Iterable[tuple[str, str]] = (),
        close: bool = False,
    ) -> None:
        headers = status_headers(status, headers)
        fields = self._h2_headers(
            status, [("content-type", content_type), ("content-length", str(len(body))), *headers]
        )
        self.responded = True
        self.status = status
        await self._write(fields, b"" if self._head else body, True)

    async def read_body(self, limit: int) -> bytes:
        stream = self._h2_stream
        parts: list[bytes] = []
        size = 0
        with trio.move_on_after(self.server.header_timeout):
            while True:
                if stream.buffered:
                    data, acknowledged = stream.read(65536)
                    self._connection.acknowledge(stream, acknowledged)
                    size += len(data)
                    if size > limit:
                        raise BadRequest(f"the request body is larger than {limit} bytes", 413)
                    parts.append(data)
                    await self._connection.flush()  # the window updates of what was read
                    continue  # (and look again: more may have come meanwhile)
                if stream.body_done:
                    return b"".join(parts)
                if stream.reset:
                    raise ClientGone("the client reset the stream in its request body")
                await stream.changed()  # no checkpoint since the look: no wake-up is missed
        raise BadRequest("the request body did not arrive in time", 408)

    async def start(self, status: int, *, content_type: str, headers: Iterable[tuple[str, str]] = ()) -> None:
        self.responded = True
        self.status = status
        await self._write(self._h2_headers(status, [("content-type", content_type), *headers]), b"", self._head)

    async def send(self, data: bytes) -> None:
        if data and not self._head:
            await self._write(None, data, False)

    async def end(self) -> None:
        if not self._h2_stream.ended:
            await self._write(None, b"", True)

    async def _send_raw(self, data: bytes) -> None:
        """HTTP/1.1 bytes (h11's) mean nothing on an HTTP/2 stream: a method of
        :class:`~.exchange.Exchange` that writes them must be given an HTTP/2 form here."""
        raise LocalProtocolError("raw HTTP/1.1 bytes cannot be written to an HTTP/2 stream")

    @property
    def chunked(self) -> bool:
        return False

    def _check_upgrade(self) -> None:
        raise BadRequest("WebSocket is served over HTTP/1.1 only", 400)

    def accept_egress_websocket(
        self,
        egress: Egress,
        *,
        max_message_size: int = 64 * 1024,
        subprotocol: str | None = None,
        protocol: str = "websocket",
    ) -> EgressWebSocket:
        self._check_upgrade()
        raise AssertionError("unreachable")
