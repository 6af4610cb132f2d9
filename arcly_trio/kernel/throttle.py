"""Throttling refused authorizations per client address.

The engine asks an :class:`AuthThrottle` before every authorization of a client whose address
is known: an address whose recent attempts at that action (publish or play) were refused waits
a short delay first, which
doubles with each refusal (``base_delay`` up to ``max_delay``) and is forgotten after
``forget_after`` seconds without a refusal, or at once when that address is allowed that
action (a successful play does not clear refused publishes). The wait happens in the client's own task, so a
guessing client slows down (together with the per-address connection limits it can only try a
handful of times per second) while every other client goes on untouched. A refusal burst is
logged as one line when it starts and one summary when it ends or every ``log_interval``
seconds, never one line per try.

The table of addresses is bounded (``max_addresses``): the oldest entries are dropped first,
which at worst forgets an attacker's history (it then starts again from the first delay).

Error policy: nothing raises; the clock is trio's (MockClock-friendly).
"""

from __future__ import annotations

import logging
from collections import OrderedDict

import trio

__all__ = ["AuthThrottle"]

log = logging.getLogger("arcly_trio.auth")


class _Record:
    __slots__ = ("refusals", "last", "burst_start", "unlogged", "logged_at")

    def __init__(self, now: float) -> None:
        self.refusals = 0
        self.last = now
        self.burst_start = now
        self.unlogged = 0
        self.logged_at = now


class AuthThrottle:
    """Growing delays for addresses whose authorizations are refused (module docstring)."""

    def __init__(
        self,
        *,
        base_delay: float = 0.05,
        max_delay: float = 2.0,
        forget_after: float = 60.0,
        max_addresses: int = 65536,
        log_interval: float = 10.0,
    ) -> None:
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.forget_after = forget_after
        self.max_addresses = max_addresses
        self.log_interval = log_interval
        self.refusals = 0
        """Refused authorizations counted, in all."""
        self.delayed = 0
        """Authorizations that had to wait."""
        self._records: OrderedDict[tuple[str, str], _Record] = OrderedDict()

    def _current(self, key: tuple[str, str], now: float) -> _Record | None:
        record = self._records.get(key)
        if record is not None and now - record.last > self.forget_after:
            self._end_burst(key, record, now)
            del self._records[key]
            return None
        return record

    def delay(self, address: str, action: str) -> float:
        """Seconds ``address`` should wait before its next ``action`` (0 if none)."""
        record = self._current((address, action), trio.current_time())
        if record is None or not record.refusals:
            return 0.0
        return min(self.max_delay, self.base_delay * 2 ** min(record.refusals - 1, 30))

    async def wait(self, address: str | None, action: str) -> None:
        """Wait the delay ``address`` has earned for ``action`` (a checkpoint either way)."""
        seconds = self.delay(address, action) if address is not None else 0.0
        if seconds:
            self.delayed += 1
            await trio.sleep(seconds)
        else:
            await trio.lowlevel.checkpoint()

    def refused(self, address: str | None, action: str, what: str) -> None:
        """Count a refused ``action`` (``what`` says why, for the log; already escaped)."""
        self.refusals += 1
        if address is None:
            log.warning("refused: %s", what)
            return
        now = trio.current_time()
        key = (address, action)
        record = self._current(key, now)
        if record is None:
            record = self._records[key] = _Record(now)
            while len(self._records) > self.max_addresses:
                self._records.popitem(last=False)
            log.warning("%s refused: %s (further refusals from this address are delayed)", address, what)
        else:
            self._records.move_to_end(key)
            record.unlogged += 1
            if now - record.logged_at >= self.log_interval:
                log.warning("%s: %d more refusals in %.0f s (last: %s)", address, record.unlogged,
                            now - record.logged_at, what)
                record.unlogged = 0
                record.logged_at = now
        record.refusals += 1
        record.last = now

    def allowed(self, address: str | None, action: str) -> None:
        """``address`` was allowed ``action``: its delay for that action is reset."""
        if address is None:
            return
        record = self._records.pop((address, action), None)
        if record is not None:
            self._end_burst((address, action), record, trio.current_time())

    @staticmethod
    def _end_burst(key: tuple[str, str], record: _Record, now: float) -> None:
        if record.unlogged:
            log.warning("%s: %d more refused %ss in %.0f s", key[0], record.unlogged, key[1],
                        now - record.logged_at)
