"""Connection slots: who may hold a connection to a worker, and who gives theirs up.

Every protocol worker admits each accepted connection through an :class:`Admission` before it
reads a byte. A connection is *busy* while it serves something (an RTMP publish or play, an
HTTP request, and while the server decides whether to allow a publish or play) and *waiting*
otherwise: on its way there (an RTMP handshake and set-up commands, an HTTP request head) or
between requests (HTTP keep-alive). A busy connection is never evicted.

Progress: a waiting connection is *setting up* while it makes a step at least every
``idle_after`` seconds (5 s by default), and *idle* otherwise. The worker says what a step is
(:meth:`Ticket.progress`): for RTMP, each part of the handshake arriving whole (C0+C1, then
C2: 1.5 KB each, so at least ~300 bytes a second) and each command, media or data message
(``connect``, ``createStream``, ``play``...; pings, acknowledgements and stray bytes are not
steps); for HTTP, a request served (between keep-alive requests the connection counts from the
end of the last response). Being admitted starts the count: a new connection has
``idle_after`` seconds for its first step. So a burst of real clients from one address (a load
balancer, a CGNAT, a test rig) is never idle while each client moves, however many there are;
connections that do nothing, or drip bytes that never complete a step, are idle after
``idle_after`` seconds.

The limits:

* ``max_connections``: open connections in all. When they are all taken, the waiting
  connection that has gone longest without a step (an idle one whenever there is one) is
  evicted to make room for the newcomer: connections that do nothing cannot lock real clients
  out. Only when every slot is busy is the newcomer refused. (Connections that keep making
  steps without ever serving, a client going through set-up commands over and over, can push
  others' set-ups out at the cap until their worker's set-up timeout; ``max_per_address``
  bounds what one address can do so.)
* ``max_pending_per_address`` (the CLI's ``--max-idle-per-ip``): *under pressure* only (at
  least ``pressure`` × ``max_connections`` connections held, three quarters by default), the
  idle connections one IP address may hold: an address at its quota that opens another
  connection gives up its oldest idle ones, so one address cannot hold many slots without
  using them while the server is filling up. Below that mark an address may hold any number
  of waiting connections, idle or not: the workers' timeouts close the ones that never get
  anywhere (RTMP's handshake, set-up and idle timeouts, HTTP's request-head timeout).
* ``max_per_address`` (off by default): connections from one address, busy or not. Past it the
  newcomer is refused.

An eviction cancels the evicted connection's :attr:`Ticket.scope`; its handler then closes it.
Evictions and refusals are counted, and logged once per burst (:class:`BurstLog`), never once
per connection. Time is trio's clock (:func:`trio.current_time`): tests drive it with
``MockClock``.

Error policy: :meth:`Admission.admit` returns ``None`` to refuse (the caller closes the socket
and may say why first); nothing here raises but the constructor (``ValueError`` for limits out
of range).
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict

import trio

__all__ = ["Admission", "Ticket", "BurstLog"]


class BurstLog:
    """Logs the first event of a burst at once, then one summary per ``interval`` seconds.

    ``note(message, *args)`` is called for every event; the first one (after a quiet interval)
    is logged with its text, the rest are counted and reported as "N more in S s" on the next
    event after ``interval`` has passed. So an attack produces a few lines, not one per try.
    """

    def __init__(self, logger: logging.Logger, what: str, interval: float = 10.0) -> None:
        self._log = logger
        self._what = what
        self._interval = interval
        self._since: float | None = None
        self._suppressed = 0
        self.total = 0

    def note(self, message: str, *args: object) -> None:
        self.total += 1
        now = trio.current_time()
        since = self._since
        if since is None or now - since >= self._interval:
            if self._suppressed:
                self._log.warning("%s: %d more in the last %.0f s", self._what, self._suppressed, now - since)
            self._log.warning(message, *args)
            self._since = now
            self._suppressed = 0
        else:
            self._suppressed += 1


class Ticket:
    """One admitted connection's slot. ``scope`` wraps the connection's handling: eviction
    cancels it. Call :meth:`progress` at each step of the connection's set-up,
    :meth:`busy`/:meth:`pending` as it starts and stops serving, and :meth:`release`
    (idempotent) when it closes. Calls after an eviction or a release do nothing."""

    __slots__ = ("address", "scope", "evicted", "last_step", "_admission", "_busy", "_released")

    def __init__(self, admission: Admission, address: str, now: float) -> None:
        self.address = address
        self.scope = trio.CancelScope()
        self.evicted = False
        self.last_step = now
        """When the connection was admitted or last made a step (trio's clock)."""
        self._admission = admission
        self._busy = False
        self._released = False

    @property
    def is_busy(self) -> bool:
        return self._busy

    def _live(self) -> bool:
        return not (self._released or self.evicted)

    def progress(self) -> None:
        """The connection made a step on its way to serving: not idle for ``idle_after`` s."""
        if not self._busy and self._live():
            self._admission._step(self)

    def busy(self) -> None:
        """The connection serves something: it can no longer be evicted."""
        if not self._busy and self._live():
            self._busy = True
            self._admission._unwait(self)

    def pending(self) -> None:
        """The connection waits again (between HTTP requests): evictable again, idle
        ``idle_after`` s from now unless it steps or serves meanwhile."""
        if self._busy and self._live():
            self._busy = False
            self._admission._step(self)

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        self._admission._release(self)


class Admission:
    """The connection slots of one worker (see the module docstring)."""

    def __init__(
        self,
        *,
        max_connections: int,
        max_pending_per_address: int | None = 32,
        max_per_address: int | None = None,
        idle_after: float = 5.0,
        pressure: float = 0.75,
        log: logging.Logger | None = None,
        label: str = "connection",
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be >= 1")
        for name, value in (("max_pending_per_address", max_pending_per_address), ("max_per_address", max_per_address)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or None")
        if not idle_after > 0:
            raise ValueError("idle_after must be > 0")
        if not 0 < pressure <= 1:
            raise ValueError("pressure must be in (0, 1]")
        self.max_connections = max_connections
        self.max_pending_per_address = max_pending_per_address
        self.max_per_address = max_per_address
        self.idle_after = idle_after
        self.pressure_mark = max(1, math.ceil(max_connections * pressure))
        """Open connections from which ``max_pending_per_address`` applies."""
        self.open = 0
        """Connections admitted and not yet released."""
        self.evictions = 0
        self.refusals = 0
        self._evicting = 0  # evicted, not yet released: their slots are being given back
        # Waiting tickets, the one longest without a step first (a step moves a ticket last).
        self._waiting: OrderedDict[Ticket, None] = OrderedDict()
        self._waiting_by_address: dict[str, OrderedDict[Ticket, None]] = {}
        self._per_address: dict[str, int] = {}
        logger = log or logging.getLogger("arcly_trio.admission")
        self._evict_log = BurstLog(logger, f"{label}s evicted to make room")
        self._refuse_log = BurstLog(logger, f"{label}s refused")

    @property
    def pending(self) -> int:
        """Admitted connections that serve nothing (in set-up, idle or between requests)."""
        return len(self._waiting)

    def idle(self, address: str | None = None) -> int:
        """Waiting connections without a step for ``idle_after`` s (of ``address``, or all)."""
        waiting = self._waiting if address is None else self._waiting_by_address.get(address, {})
        return len(self._idle_prefix(waiting))

    @property
    def held(self) -> int:
        """Open connections less those evicted and on their way out."""
        return self.open - self._evicting

    @property
    def under_pressure(self) -> bool:
        """Whether the per-address idle quota applies (``held >= pressure_mark``)."""
        return self.held >= self.pressure_mark

    def admit(self, address: str) -> Ticket | None:
        """A slot for a new connection from ``address``, or ``None`` (refused)."""
        if self.max_per_address is not None and self._per_address.get(address, 0) >= self.max_per_address:
            self._refuse(f"%s refused: {self.max_per_address} connections from this address already", address)
            return None
        quota = self.max_pending_per_address
        mine = self._waiting_by_address.get(address)
        if quota is not None and mine is not None and len(mine) >= quota and self.under_pressure:
            idle = self._idle_prefix(mine)
            for ticket in idle[: max(0, len(idle) - quota + 1)]:
                self._evict(
                    ticket,
                    f"%s: the oldest of {len(idle)} idle connections from this address was "
                    f"closed to admit a new one ({self.held} of {self.max_connections} slots taken)",
                )
        if self.held >= self.max_connections:
            if not self._waiting:
                self._refuse(f"%s refused: all {self.max_connections} connections are serving", address)
                return None
            victim = next(iter(self._waiting))
            state = "idle" if self._is_idle(victim, trio.current_time()) else "in set-up"
            self._evict(
                victim,
                f"%s: the connection longest without progress ({state}) was closed, all "
                f"{self.max_connections} slots being taken",
            )
        ticket = Ticket(self, address, trio.current_time())
        self.open += 1
        self._per_address[address] = self._per_address.get(address, 0) + 1
        self._wait(ticket)
        return ticket

    def _is_idle(self, ticket: Ticket, now: float) -> bool:
        return now - ticket.last_step >= self.idle_after

    def _idle_prefix(self, waiting: OrderedDict[Ticket, None] | dict[Ticket, None]) -> list[Ticket]:
        """The idle tickets of ``waiting``, oldest first: since ``waiting`` is ordered by last
        step, the walk stops at the first ticket that is not idle."""
        now = trio.current_time()
        idle = []
        for ticket in waiting:
            if not self._is_idle(ticket, now):
                break
            idle.append(ticket)
        return idle

    def _refuse(self, message: str, address: str) -> None:
        self.refusals += 1
        self._refuse_log.note(message, address)

    def _evict(self, ticket: Ticket, message: str) -> None:
        self.evictions += 1
        self._evicting += 1
        self._evict_log.note(message, ticket.address)
        ticket.evicted = True
        ticket.scope.cancel()
        self._unwait(ticket)  # it no longer counts as waiting, though it is still open

    def _wait(self, ticket: Ticket) -> None:
        self._waiting[ticket] = None
        self._waiting_by_address.setdefault(ticket.address, OrderedDict())[ticket] = None

    def _step(self, ticket: Ticket) -> None:
        """``ticket`` made a step (or stopped serving): waiting, the most recent one."""
        ticket.last_step = trio.current_time()
        self._unwait(ticket)
        self._wait(ticket)

    def _unwait(self, ticket: Ticket) -> None:
        self._waiting.pop(ticket, None)
        mine = self._waiting_by_address.get(ticket.address)
        if mine is not None:
            mine.pop(ticket, None)
            if not mine:
                del self._waiting_by_address[ticket.address]

    def _release(self, ticket: Ticket) -> None:
        self._unwait(ticket)
        if ticket.evicted:
            self._evicting -= 1
        self.open -= 1
        count = self._per_address[ticket.address] - 1
        if count:
            self._per_address[ticket.address] = count
        else:
            del self._per_address[ticket.address]
