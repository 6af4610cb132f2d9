"""The session hub: one task of the HTTP worker serving every session-lane connection (Linux).

On the session lane (:mod:`.lane`) each request of a live LL-HLS viewer still costs one trio
task wake: the connection's task waking for its readable socket, or for the part its held
reload waits on. The hub removes that wake: a connection that the lane has served *lends* its
socket to the hub (:meth:`SessionHub.lend`) and its task stays parked, at no CPU per request,
while the hub serves it. The hub is one task with a private ``select.epoll`` whose descriptor
it awaits (``trio.lowlevel.wait_readable``); per wake it drains every ready socket (a
non-blocking read, heads read by :mod:`arcly_trio.protocols.http.head`, answered by the routes'
quick answerers, written by one non-blocking ``writev``), and it yields to trio every
:data:`YIELD_EVERY` answers so that other tasks never stall.

Held requests (a blocking reload, a preload-hinted part) are parked by what they wait on (the
job's :attr:`~arcly_trio.protocols.http.quick.QuickJob.source`: the stream's
:class:`~arcly_trio.services._hls_cmaf.LiveCmaf`): one watcher task per source awaits its next
change and answers all of its parked requests in one pass (one wake per update, however many
viewers). Their deadlines (``503``, ``404``) and the connections' head and keep-alive timeouts
are kept by a coarse timer: a heap checked at each wake, the hub's sleep ending at the
earliest.

What the connection keeps: its task, ticket, cancel scope and counters. The hub does each
request's accounting as the lane does (``connections``, ``engine.activity``, the ticket busy
then pending, the session's activity and bytes by the job), logs it at debug, writes
``Connection: close`` once the engine stops (then hands the connection back to close). It
hands the connection back (:class:`HandBack`) with its unread bytes in the connection's own
buffer for anything it does not answer: a request the lane declines (the general path serves
it, ``Connection: close`` and the engine stopping included), the client's EOF, a head or
keep-alive timeout (the connection logs it as its own), an answer the socket did not take
whole (the connection writes the rest within the write timeout, then does the accounting),
and a client gone. Cancelling the connection's task (shutdown, eviction) withdraws it from the
hub synchronously: a held request ends (``job.end``, accounting) as it would have on the lane.

Error policy: nothing a client sends raises in the hub (a read or write error hands its
connection back as gone); an error of the hub itself hands every lent connection back to be
closed, then propagates.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import os
import select
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import outcome
import trio

from arcly_trio.protocols.http.head import DECLINED, PlainRequest, read_plain_head
from arcly_trio.protocols.http.quick import ChangeSource, QuickAnswer, QuickJob
from arcly_trio.transport import describe

if TYPE_CHECKING:
    from arcly_trio.workers.admission import Ticket
    from arcly_trio.workers.http.lane import SessionLane

__all__ = ["HandBack", "SessionHub", "available", "YIELD_EVERY"]

log = logging.getLogger("arcly_trio.http")

YIELD_EVERY = 16
"""Answers the hub writes before it yields to trio's scheduler."""
_RECV_SIZE = 65536
_EPOLLIN = getattr(select, "EPOLLIN", 1)


def available() -> bool:
    """Whether this platform has ``select.epoll`` (the hub's only need)."""
    return hasattr(select, "epoll")


class HandBack:
    """Why the hub gave a connection back (see the module docstring).

    ``reason``: ``"declined"`` (the buffer's next head is for the general path), ``"eof"``,
    ``"timeout"`` (``noticed``: a head had begun), ``"close"`` (the last answer said so),
    ``"gone"`` (``detail``: why) or ``"write"`` (``rest``: bytes of the answer to ``head``
    still to write, the request still in service: ``job`` to end, ``close`` after it)."""

    __slots__ = ("reason", "noticed", "detail", "rest", "job", "head", "close", "status")

    def __init__(self, reason: str, *, noticed: bool = False, detail: str = "", rest: bytes = b"",
                 job: QuickJob | None = None, head: PlainRequest | None = None, close: bool = False,
                 status: int | None = None) -> None:  # fmt: skip
        self.reason = reason
        self.noticed = noticed
        self.detail = detail
        self.rest = rest
        self.job = job
        self.head = head
        self.close = close
        self.status = status


class _Lent:
    """A connection the hub serves."""

    __slots__ = ("fd", "lane", "ticket", "buffer", "task", "active", "registered", "eof", "noticed",
                 "armed", "deadline", "queued", "job", "cors", "head")  # fmt: skip

    def __init__(self, fd: int, lane: SessionLane, ticket: Ticket, buffer: bytearray, task: trio.lowlevel.Task) -> None:
        self.fd = fd
        self.lane = lane
        self.ticket = ticket
        self.buffer = buffer
        self.task = task
        self.active = True
        self.registered = False
        self.eof = False
        self.noticed = bool(buffer)
        self.armed = False
        """A head is awaited with a deadline (the head or keep-alive timeout)."""
        self.deadline = math.inf
        """When its held request or its awaited head times out."""
        self.queued: float | None = None
        """The deadline of its live entry in the hub's timer heap."""
        self.job: QuickJob | None = None
        """The request in service (held: waiting on its source)."""
        self.cors = False
        self.head: PlainRequest | None = None


class SessionHub:
    """The hub of one HTTP worker (see the module docstring); :meth:`run` is its task."""

    def __init__(self, server: Any, engine: Any) -> None:
        self._server = server
        self._engine = engine
        self._epoll = select.epoll()
        self._lent: dict[int, _Lent] = {}
        self._again: list[_Lent] = []
        """Connections with heads left unread after a slice (served in the next round)."""
        self._held: dict[ChangeSource, list[tuple[_Lent, QuickJob]]] = {}
        self._timers: list[tuple[float, int, _Lent]] = []
        """(deadline, number, connection): the coarse timer (see :meth:`_arm`)."""
        self._numbers = itertools.count(1)
        self._nursery: trio.Nursery | None = None
        self._sleep: trio.CancelScope | None = None
        self._answered = 0
        self._returned: dict[int, HandBack] = {}
        """What :meth:`lend` returns when its connection goes back before it parks."""
        self.closed = False
        """The hub's task has ended (connections are no longer lent to it)."""
        self.wakes = 0
        """Times the hub's task woke (its work: a measure of the wakes it saved)."""

    @property
    def lent(self) -> int:
        """Connections the hub serves now."""
        return len(self._lent)

    async def run(self) -> None:
        """Serve lent connections until cancelled."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await self._loop()
        finally:
            self.closed = True
            for lent in list(self._lent.values()):
                job, head = lent.job, lent.head
                if job is not None and head is not None:
                    lent.job = lent.head = None
                    self._done(lent, job, head, None)
                self._end(lent, HandBack("close"))
            self._epoll.close()

    async def lend(self, lane: SessionLane, ticket: Ticket, buffer: bytearray) -> HandBack:
        """Serve the lane's connection (its unread bytes: ``buffer``, shared) until the hub hands
        it back; cancelling the caller withdraws it."""
        if self.closed:
            return HandBack("declined")
        lent = _Lent(lane.fd, lane, ticket, buffer, trio.lowlevel.current_task())
        self._lent[lent.fd] = lent
        self._pump(lent)
        if not lent.active:
            return self._returned.pop(lent.fd)
        if lent.job is None and not lent.registered:
            self._register(lent)

        def abort(_: Callable[[], object]) -> trio.lowlevel.Abort:
            self._withdraw(lent)
            return trio.lowlevel.Abort.SUCCEEDED

        back: HandBack = await trio.lowlevel.wait_task_rescheduled(abort)
        return back

    # ------------------------------------------------------------------ the loop

    async def _loop(self) -> None:
        epoll = self._epoll
        fd = epoll.fileno()
        while True:
            if not self._again:
                with trio.CancelScope(deadline=self._timers[0][0] if self._timers else math.inf) as sleep:
                    self._sleep = sleep
                    await trio.lowlevel.wait_readable(fd)
                self._sleep = None
            self.wakes += 1
            self._answered = 0
            for ready, _ in epoll.poll(0):
                lent = self._lent.get(ready)
                if lent is not None:
                    self._read(lent)
                    await self._slice()
            again, self._again = self._again, []
            for lent in again:
                if lent.active:
                    self._pump(lent)
                    await self._slice()
            await self._expire()
            if self._again:
                await trio.lowlevel.checkpoint()

    async def _slice(self) -> None:
        if self._answered >= YIELD_EVERY:
            self._answered = 0
            await trio.lowlevel.checkpoint()

    def _wake(self) -> None:
        """End the hub's sleep now (a connection came, or its timers changed)."""
        if self._sleep is not None:
            self._sleep.cancel()

    def _register(self, lent: _Lent) -> None:
        self._epoll.register(lent.fd, _EPOLLIN)
        lent.registered = True

    def _unregister(self, lent: _Lent) -> None:
        if lent.registered:
            lent.registered = False
            try:
                self._epoll.unregister(lent.fd)
            except (OSError, ValueError):
                pass

    def _read(self, lent: _Lent) -> None:
        """Take what the socket holds, then serve what it completes."""
        try:
            data = os.read(lent.fd, _RECV_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            self._end(lent, HandBack("gone", detail=describe(exc)))
            return
        if data:
            lent.buffer += data
            lent.noticed = True
        else:
            lent.eof = True
        if lent.job is not None:  # held: keep it, but read no more than a head's worth meanwhile
            if lent.eof or len(lent.buffer) > self._server.max_head_size:
                self._unregister(lent)
            return
        self._pump(lent)

    # --------------------------------------------------------------- requests

    def _pump(self, lent: _Lent) -> None:
        """Serve the heads ``lent``'s buffer holds (a slice of them), until one is held, the
        buffer needs more, or the connection goes back."""
        server = self._server
        lane = lent.lane
        served = 0
        while lent.active and lent.job is None:
            if served >= YIELD_EVERY:
                self._again.append(lent)
                self._wake()
                return
            buffer = lent.buffer
            found = read_plain_head(buffer, server.max_head_size)
            if isinstance(found, PlainRequest):
                quick = lane.take(found)
                if quick is None:
                    self._end(lent, HandBack("declined", noticed=True))
                    return
                del buffer[: found.end]
                self._disarm(lent)
                lent.noticed = bool(buffer)
                served += 1
                self._start(lent, quick[0], quick[1], found)
            elif found is DECLINED:
                self._end(lent, HandBack("declined", noticed=True))
                return
            elif lent.eof:
                self._end(lent, HandBack("eof", noticed=lent.noticed))
                return
            else:  # NEED_DATA
                if not lent.armed:
                    lent.armed = True
                    self._arm(lent, trio.current_time() + server.header_timeout)
                if not lent.registered:
                    self._register(lent)
                return

    def _start(self, lent: _Lent, job: QuickJob, cors: bool, head: PlainRequest) -> None:
        self._server.connections += 1
        self._engine.activity.enter()
        lent.ticket.busy()
        lent.job, lent.cors, lent.head = job, cors, head
        job.begin()
        answer = job.answer()
        if answer is not None:
            self._finish(lent, answer)
            return
        source = job.source
        if source is None or source.ended:
            self._finish(lent, job.answer(final=True))
            return
        self._arm(lent, job.deadline)
        parked = self._held.get(source)
        if parked is None:
            parked = self._held[source] = []
            assert self._nursery is not None
            self._nursery.start_soon(self._watch, source)
        parked.append((lent, job))

    def _finish(self, lent: _Lent, answer: QuickAnswer | None) -> None:
        """Write ``answer`` to ``lent``'s request (``None``: a held request ends unanswered);
        the caller then serves the connection's next heads (:meth:`_pump`) if it is still lent."""
        job, head = lent.job, lent.head
        assert job is not None and head is not None
        lent.job = lent.head = None
        if answer is None:
            self._done(lent, job, head, None)
            return
        server = self._server
        lane = lent.lane
        close = bool(self._engine.stopping)
        server.lane_answers += 1
        self._answered += 1
        parts, total = lane.parts(answer, lent.cors, close, head.method == b"HEAD")
        try:
            sent = os.writev(lent.fd, parts)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._done(lent, job, head, answer.status)
            self._end(lent, HandBack("gone", detail=describe(exc)))
            return
        if sent < total:
            rest = b"".join(parts)[sent:]
            self._end(lent, HandBack("write", rest=rest, job=job, head=head, close=close, status=answer.status))
            return
        self._done(lent, job, head, answer.status)
        if close:
            self._end(lent, HandBack("close"))
            return
        self._disarm(lent)
        if not lent.registered and not lent.eof and len(lent.buffer) <= self._server.max_head_size:
            self._register(lent)

    def _done(self, lent: _Lent, job: QuickJob, head: PlainRequest, status: int | None) -> None:
        """The request's end: what the lane does after its answer (or without one)."""
        job.end()
        self._server.connections -= 1
        self._engine.activity.exit()
        lent.ticket.pending()
        if log.isEnabledFor(logging.DEBUG):
            lent.lane.log(head, status)

    async def _watch(self, source: ChangeSource) -> None:
        """Answer the requests parked on ``source`` at each of its changes, all in one pass."""
        while self._held.get(source):
            changed = await source.wait(math.inf)
            parked = self._held.pop(source, [])
            kept: list[tuple[_Lent, QuickJob]] = []
            self._held[source] = kept
            self._answered = 0
            for lent, job in parked:
                if not lent.active or lent.job is not job:
                    continue
                answer = job.answer() if changed else job.answer(final=True)
                if answer is None:
                    kept.append((lent, job))
                    continue
                self._finish(lent, answer)
                self._pump(lent)
                await self._slice()
        self._held.pop(source, None)

    # ----------------------------------------------------------------- timers

    def _arm(self, lent: _Lent, deadline: float) -> None:
        """``lent``'s deadline is ``deadline`` (a held request's, or its next head's). The
        heap keeps at most one live entry per connection: a later deadline is moved on when
        the earlier entry comes up, so a request costs no heap entry of its own."""
        lent.deadline = deadline
        queued = lent.queued
        if queued is not None and queued <= deadline:
            return
        self._push(lent, deadline)

    def _push(self, lent: _Lent, deadline: float) -> None:
        lent.queued = deadline
        timers = self._timers
        heapq.heappush(timers, (deadline, next(self._numbers), lent))
        if timers[0][2] is lent:
            self._wake()

    def _disarm(self, lent: _Lent) -> None:
        lent.deadline = math.inf
        lent.armed = False

    async def _expire(self) -> None:
        timers = self._timers
        now = trio.current_time()
        while timers and timers[0][0] <= now:
            at, _, lent = heapq.heappop(timers)
            if not lent.active or lent.queued != at:
                continue  # gone, or a stale entry (an earlier one replaced it)
            lent.queued = None
            if lent.deadline > now:
                if lent.deadline < math.inf:
                    self._push(lent, lent.deadline)
                continue
            lent.deadline = math.inf
            job = lent.job
            if job is not None:  # a held request's deadline: its final answer
                self._finish(lent, job.answer(final=True))
                self._pump(lent)
                await self._slice()
            else:
                self._end(lent, HandBack("timeout", noticed=lent.noticed))

    # ---------------------------------------------------------- giving back

    def _end(self, lent: _Lent, back: HandBack) -> None:
        """Hand ``lent`` back to its task with ``back``."""
        if not lent.active:
            return
        lent.active = False
        self._unregister(lent)
        self._lent.pop(lent.fd, None)
        if lent.task is trio.lowlevel.current_task():  # still in lend(): it returns ``back``
            self._returned[lent.fd] = back
        else:
            trio.lowlevel.reschedule(lent.task, outcome.Value(back))

    def _withdraw(self, lent: _Lent) -> None:
        """The connection's task was cancelled: forget it, ending its request in service."""
        if not lent.active:
            return
        lent.active = False
        self._unregister(lent)
        self._lent.pop(lent.fd, None)
        job, head = lent.job, lent.head
        if job is not None and head is not None:
            lent.job = lent.head = None
            self._done(lent, job, head, None)
