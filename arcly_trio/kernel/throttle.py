"""Throttling authorizations per client address: few at once, and refused ones slowed down.

The engine takes a turn from its :class:`AuthThrottle` before every authorization of a client
whose address is known (``turn = throttle.admit(address, action)``, then ``async with turn:``
around the authenticator's call) and tells it the outcome (:meth:`~AuthThrottle.refused`,
:meth:`~AuthThrottle.allowed`). Per address and action (``publish``, ``play``; the HTTP
worker's API token uses ``api``):

* **In flight.** At most ``max_in_flight`` (2) authorizations are asked at once, or wait for
  their slot (below). An address without recent refusals may have ``max_waiting`` (1024) more
  waiting for a place, first come first served (players behind one NAT or a load balancer
  starting together, an edge of a cluster starting pulls: each waiter is a connection the
  worker's connection limits already admitted); an address with refusals has no such queue, and a refusal
  sends the turns still waiting away (:attr:`Turn.bounced`). Past that :meth:`admit` answers
  ``None`` and the caller refuses at once without asking anyone (the engine raises
  :class:`~arcly_trio.core.errors.AuthorizationBusy`: HTTP ``429`` with ``Retry-After``). Such
  a refusal is counted (:attr:`AuthThrottle.busy`) and logged with the burst; it does not
  lengthen the delay (nothing was guessed). So a refused address holds at most
  ``max_in_flight`` requests, each waiting at most ``max_in_flight * max_delay`` seconds.
  Addresses in ``exempt`` (the private sockets of ``--workers``) take no turn at all.
* **Delay.** An address whose recent tries were refused waits before its next one:
  ``base_delay`` doubled with each refusal, up to ``max_delay``. Tries are *spaced*, not just
  delayed: each one starts no earlier than the delay after its arrival **and** after the
  previous try's start (or refusal), so any number of concurrent guessers from one address get
  no more tries a second than one guesser in a row (at most one per ``max_delay`` once the delay
  has grown). The wait happens in the client's own task; every other address goes on untouched.
* **Per stream.** Refusals are remembered per stream key (at most ``max_keys`` per address and
  action; older keys are merged into one bucket that only time clears). The delay counts them
  all; an allowed authorization of a key clears that key's refusals only, so a successful play
  of one stream does not wipe what the address earned guessing another. A record is forgotten
  ``forget_after`` seconds after its last refusal.

A refusal burst is logged as one line when it starts and one summary when it ends or every
``log_interval`` seconds (how many more, with the count of each stream and reason: at most 8
kinds, the rest as "other refusals"), never one line per try. These are the log's only lines of
a refusal by authorization: the protocol workers log theirs at debug level.

The table is bounded (``max_addresses`` records): the oldest is dropped first, which at worst
forgets an attacker's history (it starts again from the first delay); authorizations in flight
finish on the record they hold.

Error policy: nothing raises but cancellation (a turn cancelled while waiting gives its place
back); the clock is trio's (MockClock-friendly).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable
from types import TracebackType

import trio

__all__ = ["AuthThrottle", "Turn"]

log = logging.getLogger("arcly_trio.auth")

_OTHER_KEYS = ""
"""The bucket of the refusals of keys pushed out of a record's ``by_key``."""
_MAX_REASONS = 8
_OTHER_REASONS = "other refusals"


class _Record:
    """What the throttle knows of one (address, action)."""

    __slots__ = (
        "by_key",
        "refusals",
        "last",
        "next_at",
        "in_flight",
        "waiting",
        "lot",
        "burst",
        "unlogged",
        "logged_at",
        "reasons",
    )

    def __init__(self, now: float) -> None:
        self.by_key: OrderedDict[str, int] = OrderedDict()
        self.refusals = 0
        """The sum of ``by_key``: what the delay counts."""
        self.last = now
        self.next_at = now
        """The earliest start of the next try (its slot)."""
        self.in_flight = 0
        self.waiting = 0
        self.lot = trio.lowlevel.ParkingLot()
        self.burst = False
        """Whether a refusal burst was logged and not yet summed up."""
        self.unlogged = 0
        self.logged_at = now
        self.reasons: dict[str, int] = {}
        """The refusals not logged on a line of their own, by what was refused and why (for the
        summary; at most ``_MAX_REASONS``, the rest under ``_OTHER_REASONS``)."""

    @property
    def idle(self) -> bool:
        return not self.refusals and not self.in_flight and not self.waiting


class Turn:
    """One authorization's place among its address's (see :meth:`AuthThrottle.admit`):
    ``async with turn:`` waits for a place in flight and for the try's slot, and gives the place
    back on exit. If the address was refused while this turn waited in the queue, it leaves the
    queue without a place: :attr:`bounced` is then true and the caller refuses at once, as for
    an :meth:`~AuthThrottle.admit` of ``None``."""

    __slots__ = ("_throttle", "_key", "_record", "_state", "_seen", "bounced")

    def __init__(self, throttle: AuthThrottle, key: tuple[str, str] | None, record: _Record | None) -> None:
        self._throttle = throttle
        self._key = key
        self._record = record
        self._state = "waiting"  # waiting -> in flight -> done
        self._seen = record.refusals if record is not None else 0
        self.bounced = False
        """Sent away from the queue by a refusal of its address (refuse at once)."""

    async def __aenter__(self) -> Turn:
        record = self._record
        if record is None:
            await trio.lowlevel.checkpoint()
            return self
        throttle = self._throttle
        try:
            while record.in_flight >= throttle.max_in_flight:
                await record.lot.park()
                if record.refusals > self._seen:  # refused meanwhile: no queue for this address now
                    self.bounced = True
                    self._leave()
                    return self
        except BaseException:
            self._leave()
            raise
        record.waiting -= 1
        record.in_flight += 1
        self._state = "in flight"
        seconds = throttle.current_delay(record)
        if not seconds:
            await self._checkpoint()
            return self
        now = trio.current_time()
        start = max(now + seconds, record.next_at)
        record.next_at = start + seconds
        throttle.delayed += 1
        try:
            await trio.sleep_until(start)
        except BaseException:
            self._leave()
            raise
        return self

    async def _checkpoint(self) -> None:
        try:
            await trio.lowlevel.checkpoint()
        except BaseException:
            self._leave()
            raise

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._leave()

    def _leave(self) -> None:
        """Give the place back (once), wake the next waiter, drop the record if it is idle."""
        record, state = self._record, self._state
        if record is None or state == "done":
            return
        self._state = "done"
        if state == "waiting":
            record.waiting -= 1
        else:
            record.in_flight -= 1
            record.lot.unpark()
        self._throttle._drop_if_idle(self._key, record)


class AuthThrottle:
    """Authorizations in flight and growing delays per address and action (module docstring)."""

    def __init__(
        self,
        *,
        base_delay: float = 0.05,
        max_delay: float = 2.0,
        forget_after: float = 60.0,
        max_addresses: int = 65536,
        log_interval: float = 10.0,
        max_in_flight: int = 2,
        max_waiting: int = 1024,
        max_keys: int = 16,
        exempt: Iterable[str] = (),
    ) -> None:
        if max_in_flight < 1 or max_waiting < 0 or max_keys < 2:
            raise ValueError("max_in_flight must be >= 1, max_waiting >= 0, max_keys >= 2")
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.forget_after = forget_after
        self.max_addresses = max_addresses
        self.log_interval = log_interval
        self.max_in_flight = max_in_flight
        self.max_waiting = max_waiting
        self.max_keys = max_keys
        self.exempt = frozenset(exempt)
        """Addresses that take no turn (trusted: the workers' private sockets)."""
        self.refusals = 0
        """Refused authorizations counted, in all (the busy ones included)."""
        self.delayed = 0
        """Authorizations that had to wait for their slot."""
        self.busy = 0
        """Authorizations refused at once because their address had too many in flight."""
        self._records: OrderedDict[tuple[str, str], _Record] = OrderedDict()

    def __len__(self) -> int:
        """How many (address, action) records are held."""
        return len(self._records)

    # ------------------------------------------------------------------ records

    def _current(self, key: tuple[str, str], now: float) -> _Record | None:
        record = self._records.get(key)
        if record is not None and record.refusals and now - record.last > self.forget_after:
            self._end_burst(key, record, now)
            record.by_key.clear()
            record.refusals = 0
            if record.idle:
                del self._records[key]
                return None
        return record

    def _record(self, key: tuple[str, str], now: float) -> _Record:
        record = self._current(key, now)
        if record is None:
            record = self._records[key] = _Record(now)
            while len(self._records) > self.max_addresses:
                self._records.popitem(last=False)
        else:
            self._records.move_to_end(key)
        return record

    def _drop_if_idle(self, key: tuple[str, str] | None, record: _Record) -> None:
        if key is not None and record.idle and self._records.get(key) is record:
            self._end_burst(key, record, trio.current_time())
            del self._records[key]

    def current_delay(self, record: _Record) -> float:
        """The delay ``record``'s refusals have earned."""
        if not record.refusals:
            return 0.0
        return min(self.max_delay, self.base_delay * 2 ** min(record.refusals - 1, 30))

    def delay(self, address: str, action: str) -> float:
        """Seconds ``address``'s next ``action`` waits after it arrives (0 if none)."""
        record = self._current((address, action), trio.current_time())
        return 0.0 if record is None else self.current_delay(record)

    def in_flight(self, address: str, action: str) -> int:
        """How many of ``address``'s ``action`` authorizations are in flight or waiting."""
        record = self._records.get((address, action))
        return 0 if record is None else record.in_flight + record.waiting

    # ------------------------------------------------------------------ turns

    def admit(self, address: str | None, action: str) -> Turn | None:
        """A turn for one authorization of ``action`` by ``address`` (``async with`` it around
        the authenticator's call), or ``None`` when the address already has ``max_in_flight``
        in flight and ``max_waiting`` waiting (none waiting if it has refusals): refuse at once
        (and call :meth:`refused_busy`).
        A client without an address, or from an ``exempt`` one, gets a turn that never waits."""
        if address is None or address in self.exempt:
            return Turn(self, None, None)
        key = (address, action)
        record = self._record(key, trio.current_time())
        room = self.max_in_flight + (0 if record.refusals else self.max_waiting)
        if record.in_flight + record.waiting >= room:
            return None
        record.waiting += 1
        return Turn(self, key, record)

    # ------------------------------------------------------------------ outcomes

    def refused(self, address: str | None, action: str, what: str, stream: str = "") -> None:
        """Count a refused ``action`` of ``stream`` (``what`` says why, for the log; already
        escaped): the address's next tries wait longer."""
        self.refusals += 1
        if address is None:
            log.warning("refused: %s", what)
            return
        now = trio.current_time()
        key = (address, action)
        record = self._record(key, now)
        self._log_refusal(key, record, now, what)
        by_key = record.by_key
        if stream not in by_key:
            while len(by_key) >= self.max_keys:  # the oldest stream joins the merged bucket
                oldest = next(k for k in by_key if k != _OTHER_KEYS)
                by_key[_OTHER_KEYS] = by_key.get(_OTHER_KEYS, 0) + by_key.pop(oldest)
        by_key[stream] = by_key.get(stream, 0) + 1
        by_key.move_to_end(stream)
        record.refusals += 1
        record.last = now
        record.next_at = max(record.next_at, now + self.current_delay(record))
        if record.waiting:
            record.lot.unpark_all()  # the queued turns of a refused address are sent away

    def refused_busy(self, address: str | None, action: str, what: str) -> None:
        """Count a refusal of :meth:`admit` (too many in flight): logged with the burst, no
        longer delay."""
        self.refusals += 1
        self.busy += 1
        if address is None:
            return
        now = trio.current_time()
        key = (address, action)
        record = self._records.get(key)
        if record is not None:
            self._log_refusal(key, record, now, what)

    def allowed(self, address: str | None, action: str, stream: str = "") -> None:
        """``address`` was allowed ``action`` on ``stream``: that stream's refusals are
        forgotten (the others' stay)."""
        if address is None:
            return
        key = (address, action)
        record = self._records.get(key)
        if record is None:
            return
        cleared = record.by_key.pop(stream, 0)
        if cleared:
            record.refusals -= cleared
            if not record.refusals:
                self._end_burst(key, record, trio.current_time())
                record.next_at = trio.current_time()
        self._drop_if_idle(key, record)

    # ------------------------------------------------------------------ logging

    def _log_refusal(self, key: tuple[str, str], record: _Record, now: float, what: str) -> None:
        if not record.burst:
            record.burst = True
            record.unlogged = 0
            record.logged_at = now
            log.warning("%s refused: %s (further refusals from this address are delayed)", key[0], what)
            return
        record.unlogged += 1
        reasons = record.reasons
        if what not in reasons and len(reasons) >= _MAX_REASONS:
            what = _OTHER_REASONS
        reasons[what] = reasons.get(what, 0) + 1
        if now - record.logged_at >= self.log_interval:
            _sum_up(key, record, now)
            record.logged_at = now

    @staticmethod
    def _end_burst(key: tuple[str, str], record: _Record, now: float) -> None:
        if record.unlogged:
            _sum_up(key, record, now)
        record.burst = False


def _sum_up(key: tuple[str, str], record: _Record, now: float) -> None:
    """One line for the refusals of a burst not logged yet: how many, and each reason's count."""
    reasons = "; ".join(f"{count} x {what}" for what, count in record.reasons.items())
    log.warning(
        "%s: %d more %s refusals in %.0f s: %s", key[0], record.unlogged, key[1], now - record.logged_at, reasons
    )
    record.unlogged = 0
    record.reasons = {}
