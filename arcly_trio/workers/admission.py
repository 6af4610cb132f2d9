"""Connection slots: who may hold a connection to a worker, and who gives theirs up.

Every protocol worker admits each accepted connection through an :class:`Admission` before it
reads a byte. A connection is *pending* until it serves something (an RTMP publish or play, an
HTTP request) and *busy* while it does; an HTTP keep-alive connection goes back to pending
between requests. The limits:

* ``max_connections``: open connections in all. When they are all taken, the oldest *pending*
  connection is evicted to make room for the newcomer: connections that do nothing (an idle
  flood, half-open handshakes) cannot lock real clients out, and a real client, busy within
  milliseconds, is never evicted. Only when every slot is busy is the newcomer refused.
* ``max_pending_per_address``: pending connections from one IP address. Past it, that
  address's oldest pending connection is evicted (so one address cannot hold many slots
  without using them, and a client behind the same address still gets in).
* ``max_per_address`` (off by default): connections from one address, busy or not. Past it the
  newcomer is refused.

An eviction cancels the evicted connection's :attr:`Ticket.scope`; its handler then closes it.
Evictions and refusals are counted, and logged once per burst (:class:`BurstLog`), never once
per connection.

Error policy: :meth:`Admission.admit` returns ``None`` to refuse (the caller closes the socket
and may say why first); nothing here raises.
"""

from __future__ import annotations

import logging
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
    cancels it. Call :meth:`busy`/:meth:`pending` as the connection starts and stops serving,
    and :meth:`release` (idempotent) when it closes."""

    __slots__ = ("address", "scope", "evicted", "_admission", "_busy", "_released")

    def __init__(self, admission: Admission, address: str) -> None:
        self.address = address
        self.scope = trio.CancelScope()
        self.evicted = False
        self._admission = admission
        self._busy = False
        self._released = False

    @property
    def is_busy(self) -> bool:
        return self._busy

    def busy(self) -> None:
        """The connection serves something: it can no longer be evicted."""
        if not self._busy and not self._released:
            self._busy = True
            self._admission._unpend(self)

    def pending(self) -> None:
        """The connection is idle again (between HTTP requests): evictable, oldest last."""
        if self._busy and not self._released:
            self._busy = False
            self._admission._pend(self)

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
        log: logging.Logger | None = None,
        label: str = "connection",
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be >= 1")
        for name, value in (("max_pending_per_address", max_pending_per_address),
                            ("max_per_address", max_per_address)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or None")
        self.max_connections = max_connections
        self.max_pending_per_address = max_pending_per_address
        self.max_per_address = max_per_address
        self.open = 0
        """Connections admitted and not yet released."""
        self.evictions = 0
        self.refusals = 0
        self._pending: OrderedDict[Ticket, None] = OrderedDict()
        self._pending_by_address: dict[str, OrderedDict[Ticket, None]] = {}
        self._per_address: dict[str, int] = {}
        logger = log or logging.getLogger("arcly_trio.admission")
        self._evict_log = BurstLog(logger, f"{label}s evicted to make room")
        self._refuse_log = BurstLog(logger, f"{label}s refused")

    @property
    def pending(self) -> int:
        """Admitted connections that serve nothing yet."""
        return len(self._pending)

    def admit(self, address: str) -> Ticket | None:
        """A slot for a new connection from ``address``, or ``None`` (refused)."""
        if self.max_per_address is not None and self._per_address.get(address, 0) >= self.max_per_address:
            self._refuse(f"%s refused: {self.max_per_address} connections from this address already",
                         address)
            return None
        mine = self._pending_by_address.get(address)
        if self.max_pending_per_address is not None and mine and len(mine) >= self.max_pending_per_address:
            self._evict(next(iter(mine)), f"%s: the oldest of {len(mine)} idle connections from this "
                        "address was closed to admit a new one")
        elif self.open >= self.max_connections:
            if not self._pending:
                self._refuse(f"%s refused: all {self.max_connections} connections are serving", address)
                return None
            self._evict(next(iter(self._pending)), f"%s: the oldest idle connection was closed, all "
                        f"{self.max_connections} slots being taken")
        ticket = Ticket(self, address)
        self.open += 1
        self._per_address[address] = self._per_address.get(address, 0) + 1
        self._pend(ticket)
        return ticket

    def _refuse(self, message: str, address: str) -> None:
        self.refusals += 1
        self._refuse_log.note(message, address)

    def _evict(self, ticket: Ticket, message: str) -> None:
        self.evictions += 1
        self._evict_log.note(message, ticket.address)
        ticket.evicted = True
        ticket.scope.cancel()
        self._unpend(ticket)  # it no longer counts as pending, though it is still open

    def _pend(self, ticket: Ticket) -> None:
        self._pending[ticket] = None
        self._pending_by_address.setdefault(ticket.address, OrderedDict())[ticket] = None

    def _unpend(self, ticket: Ticket) -> None:
        self._pending.pop(ticket, None)
        mine = self._pending_by_address.get(ticket.address)
        if mine is not None:
            mine.pop(ticket, None)
            if not mine:
                del self._pending_by_address[ticket.address]

    def _release(self, ticket: Ticket) -> None:
        self._unpend(ticket)
        self.open -= 1
        count = self._per_address[ticket.address] - 1
        if count:
            self._per_address[ticket.address] = count
        else:
            del self._per_address[ticket.address]
