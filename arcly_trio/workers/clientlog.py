"""Log lines about clients: one line per client while they are few, one per burst once many.

A protocol worker logs how each bad or refused client ended (a refusal, a timeout, broken
protocol) through its :class:`ClientLog`. While an address is quiet every such event is a line
of its own, naming the client's address and port and the reason (a few bad clients each get
their line). Past ``per_address`` lines of one kind from one address within ``interval``
seconds, or ``in_all`` lines from every address together, the rest of that interval is counted
instead, and each address's count comes out as one summary line when the interval ends
(``127.0.0.1: 2990 more timeouts in the last 10 s; the last: rtmp 127.0.0.1:51234 closed:
handshake not completed within 10 s``), at most ``in_all`` of them; the addresses past that,
and those past ``max_addresses``, are summed up in one more line. So an idle-connection flood,
a refused-publisher flood or a scan from any number of addresses costs a few dozen lines per
interval, not one per connection.

Debug lines are never counted or held back: the operator asked for every one.

:data:`SESSION_ENDS_LOGGED` and :data:`PLAY_ENDS_LOGGED` name the ends of sessions that the
kernel logs itself (a kick, a publisher cut by its bitrate limit or its start timeout, a player
evicted past its lag budget): the workers' own "stopped" lines for those are debug lines, so
each event is one line.

:meth:`ClientLog.run` (in the worker's nursery) writes the summaries of an interval that ended
without a later event; the clock is trio's (MockClock-friendly).

Error policy: nothing here raises; messages are formatted by :mod:`logging` (pass the peer's
text escaped, :func:`arcly_trio.core.text.printable`).
"""

from __future__ import annotations

import logging
from collections import OrderedDict

import trio

from arcly_trio.core.errors import PublisherKicked, PublishRateLimited, PublishStartTimedOut

__all__ = ["ClientLog", "SESSION_ENDS_LOGGED", "PLAY_ENDS_LOGGED"]

#: Publish sessions whose end the kernel logs itself (the kick, the cut, the start timeout, each
#: naming the session): the protocol worker's "stopped publishing" line for them is debug.
SESSION_ENDS_LOGGED = (PublisherKicked, PublishRateLimited, PublishStartTimedOut)
#: Plays whose end the kernel logs itself (``EndReason`` values: a kick, an eviction).
PLAY_ENDS_LOGGED = frozenset({"kicked", "evicted"})


class _Tally:
    __slots__ = ("level", "logged", "held", "last")

    def __init__(self, level: int) -> None:
        self.level = level
        self.logged = 0
        self.held = 0
        self.last = ""


class ClientLog:
    """Client events of one worker, one line each while few, summed up per burst (module
    docstring)."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        interval: float = 10.0,
        per_address: int = 10,
        in_all: int = 200,
        max_addresses: int = 4096,
    ) -> None:
        self.logger = logger
        self.interval = interval
        self.per_address = per_address
        self.in_all = in_all
        self.max_addresses = max_addresses
        self.held = 0
        """Lines held back and summed up, in all."""
        self._since: float | None = None
        self._lines = 0
        self._tallies: OrderedDict[tuple[str, str], _Tally] = OrderedDict()
        self._overflow = 0
        self._overflow_last = ""

    def log(self, level: int, address: str, kind: str, message: str, *args: object) -> None:
        """Log a ``kind`` of event (``"timeouts"``, ``"refusals"``...: one level each) of a
        client at ``address``: a line of its own, or counted for the interval's summary."""
        logger = self.logger
        if not logger.isEnabledFor(level):
            return
        if level <= logging.DEBUG:
            logger.log(level, message, *args)
            return
        now = trio.current_time()
        if self._since is not None and now - self._since >= self.interval:
            self.flush()
        if self._since is None:
            self._since = now
        key = (address, kind)
        tally = self._tallies.get(key)
        if tally is None and len(self._tallies) < self.max_addresses:
            tally = self._tallies[key] = _Tally(level)
        if tally is not None and tally.logged < self.per_address and self._lines < self.in_all:
            tally.logged += 1
            self._lines += 1
            logger.log(level, message, *args)
            return
        self.held += 1
        text = message % args if args else message
        if tally is None:
            self._overflow += 1
            self._overflow_last = text
        else:
            tally.held += 1
            tally.last = text

    def flush(self) -> None:
        """Write the summaries of the interval so far, and start a new one."""
        if self._since is None:
            return
        seconds = max(trio.current_time() - self._since, 0.0)
        written = 0
        for (address, kind), tally in self._tallies.items():
            if not tally.held:
                continue
            if written >= self.in_all:
                self._overflow += tally.held
                self._overflow_last = tally.last
                continue
            written += 1
            self.logger.log(
                tally.level,
                "%s: %d more %s in the last %.0f s; the last: %s",
                address,
                tally.held,
                kind,
                seconds,
                tally.last,
            )
        if self._overflow:
            self.logger.warning(
                "%d more lines about clients in the last %.0f s, from more addresses than are "
                "followed one by one; the last: %s",
                self._overflow,
                seconds,
                self._overflow_last,
            )
        self._tallies.clear()
        self._since = None
        self._lines = 0
        self._overflow = 0
        self._overflow_last = ""

    async def run(self) -> None:
        """Write each interval's summaries when it ends (also without a later event); the last
        ones when cancelled."""
        try:
            while True:
                await trio.sleep(self.interval)
                if self._since is not None and trio.current_time() - self._since >= self.interval:
                    self.flush()
        finally:
            self.flush()
