"""The session lane: a plain HTTP/1.1 connection's hot requests answered without a handler.

A live LL-HLS viewer makes a dozen requests a second per connection (blocking playlist reloads
and preload-hinted parts, pipelined). Served through the router, an :class:`~.exchange.Exchange`,
the HLS handler and trio's ``send_all``, each costs far more server CPU than the bytes it
writes. The lane answers such a request from the route's *quick answerer* instead
(:mod:`arcly_trio.protocols.http.quick`; the HLS service's: :mod:`arcly_trio.services._hls_lane`):

* it takes only a plain ``GET``/``HEAD`` (:mod:`arcly_trio.protocols.http.head`) of a
  keep-alive HTTP/1.1 request, on a plain TCP (or Unix) socket (not TLS, not HTTP/2: they keep
  the general path), whose target is an absolute path of unreserved characters (nothing to
  percent-decode, no dot segments) with a query, and whose route has a quick answerer that
  takes it; anything else, or a request the answerer declines, is served by the general path
  exactly as before: the lane never answers what it cannot answer as the handler would;
* the answer's head is made once per kind of answer (status, CORS, content type, headers) and
  kept (a few dozen at most), then written with the body by one non-blocking ``writev`` on the
  socket; only what the socket does not take at once is awaited, with the write timeout
  (:class:`~.exchange.WriteDeadline`);
* the connection reads its next heads with a non-blocking read of the socket, and waits for
  it to be readable only when nothing is there (:meth:`SessionLane.receive`).

Everything the general path keeps for a request holds on the lane: the connection's
``connections`` count, the engine's ``activity`` and the admission ticket's busy state while it
is served (the connection's loop does it for both), the session's activity and bytes (the job),
the access log line at debug level, ``Connection: close`` once the engine stops (and no
request is taken while it stops), the head and write timeouts and graceful shutdown (the
connection's own scope and task). A connection that gets only answers that need no wait
yields to trio's scheduler every :data:`YIELD_EVERY` of them, so pipelined requests do not
keep other connections waiting.

Error policy: a client that goes away while its answer is written raises
:class:`~.exchange.ClientGone` (as an exchange's write does); nothing the client sends raises
here (the lane declines it).
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

import trio

from arcly_trio.core.redact import redact_url
from arcly_trio.core.text import printable
from arcly_trio.protocols.http.head import PlainRequest
from arcly_trio.protocols.http.quick import QuickAnswer, QuickJob
from arcly_trio.transport import describe
from arcly_trio.workers.http.access import cors_allowed
from arcly_trio.workers.http.exchange import (
    ClientGone,
    WriteDeadline,
    client_keeps_alive,
    common_headers,
    response_bytes,
)

__all__ = ["SessionLane", "YIELD_EVERY"]

log = logging.getLogger("arcly_trio.http")

YIELD_EVERY = 8
"""Answers the lane writes back to back, without waiting for anything, before it yields."""
_MAX_HEADS = 64
_SAFE_PATH = re.compile(rb"(?:/(?!\.\.?(?:/|$))[A-Za-z0-9._~-]+)+")
"""A path ``parse_target`` gives back unchanged: nothing to decode, no dot segments."""
_LENGTH = b"\r\ncontent-length: 0\r\n"


class SessionLane:
    """The lane of one plain-socket connection (see the module docstring)."""

    __slots__ = ("_server", "_engine", "_stream", "_fd", "_peer", "_deadline", "_heads", "_turns")

    def __init__(self, server: Any, engine: Any, stream: trio.SocketStream, peer: tuple[str, int],
                 deadline: WriteDeadline, heads: dict[tuple[Any, ...], tuple[bytes, bytes]]) -> None:  # fmt: skip
        self._server = server
        self._engine = engine
        self._stream = stream
        self._fd = stream.socket.fileno()
        self._peer = peer
        self._deadline = deadline
        self._heads = heads
        """The server's answer heads, cut where the length goes (shared by its connections)."""
        self._turns = 0

    @property
    def fd(self) -> int:
        """The socket's descriptor."""
        return self._fd

    def take(self, head: PlainRequest) -> tuple[QuickJob, bool] | None:
        """The job that serves ``head`` and whether its answer may carry CORS, or ``None``:
        the general path serves it."""
        path, sep, query = head.target.partition(b"?")
        if not sep or self._engine.stopping or not head.keep_alive or not client_keeps_alive(head):
            return None
        if not _SAFE_PATH.fullmatch(path):
            return None
        text = path.decode("ascii")
        found = self._server.router.match(head.method.decode("ascii"), text)
        if found is None:
            return None
        route, params = found
        quick = route.quick
        if quick is None:
            return None
        job = quick(self._engine, params, query, self._peer)
        if job is None:
            return None
        return job, self._server.cors and cors_allowed(text, route)

    async def serve(self, job: QuickJob, cors: bool, head: PlainRequest) -> bool:
        """Answer the request :meth:`take` took; whether the connection may serve another."""
        job.begin()
        status: int | None = None
        try:
            answer = job.answer()
            if answer is None:
                self._turns = 0
                while answer is None:
                    answer = job.answer() if await job.wait() else job.answer(final=True)
            else:
                self._turns += 1
            status = answer.status
            close = bool(self._engine.stopping)
            self._server.lane_answers += 1
            await self._write(answer, cors, close, head.method == b"HEAD")
        finally:
            job.end()
            if log.isEnabledFor(logging.DEBUG):
                self.log(head, status)
        if self._turns >= YIELD_EVERY:
            self._turns = 0
            await trio.lowlevel.checkpoint()
        return not close

    async def receive(self, size: int) -> bytes:
        """What the client sent next (``b""``: it closed its side): read at once when the socket
        has it, else once it is readable."""
        fd = self._fd
        while True:
            try:
                return os.read(fd, size)
            except BlockingIOError:
                self._turns = 0
                await trio.lowlevel.wait_readable(fd)
            except OSError as exc:
                raise ClientGone(describe(exc)) from None

    def _head(self, answer: QuickAnswer, cors: bool, close: bool) -> tuple[bytes, bytes]:
        """The answer's head before and after its length: what ``Exchange.respond`` writes."""
        key = (answer.status, cors, close, answer.content_type, answer.headers)
        cut = self._heads.get(key)
        if cut is not None:
            return cut
        fields = common_headers(cors)
        if close:
            fields.append((b"connection", b"close"))
        fields.append((b"content-type", answer.content_type.encode("latin-1")))
        fields.append((b"content-length", b"0"))
        fields.extend((name.encode("latin-1"), value.encode("latin-1")) for name, value in answer.headers)
        whole = response_bytes(answer.status, fields, b"")
        assert whole is not None, answer  # the answerers' headers are all valid
        before, _, after = whole.partition(_LENGTH)
        cut = (before + _LENGTH[:-3], b"\r\n" + after)
        if len(self._heads) >= _MAX_HEADS:
            self._heads.clear()
        self._heads[key] = cut
        return cut

    def parts(self, answer: QuickAnswer, cors: bool, close: bool, head_only: bool) -> tuple[tuple[bytes, ...], int]:
        """The bytes of ``answer`` (its head, and its body unless ``head_only``) and their length."""
        before, after = self._head(answer, cors, close)
        body = answer.body
        head = b"%s%d%s" % (before, len(body), after)
        if head_only or not body:
            return (head,), len(head)
        return (head, body), len(head) + len(body)

    async def _write(self, answer: QuickAnswer, cors: bool, close: bool, head_only: bool) -> None:
        parts, total = self.parts(answer, cors, close, head_only)
        try:
            sent = os.writev(self._fd, parts)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise ClientGone(describe(exc)) from None
        if sent < total:  # the socket is full: the rest within the write timeout
            rest = memoryview(b"".join(parts))[sent:]
            await self._deadline.send(self._stream, rest, self._server.write_timeout)

    def log(self, head: PlainRequest, status: int | None) -> None:
        """The access log line (``_Connection._log_access``'s)."""
        log.debug(
            "%s %s:%s %s %s: %s",
            self._server.name,
            *self._peer,
            head.method.decode("ascii", "replace"),
            printable(redact_url(head.target.decode("ascii", "replace")), 200),
            status if status is not None else "no answer",
        )
