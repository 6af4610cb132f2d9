"""The WebRTC worker's ticker (:mod:`arcly_trio.workers.webrtc.ticker`): every viewer's periodic
work once a period from one task, spread over the period, a closed session detached at once,
one session's failure its own. MockClock with autojump: no real time."""

from __future__ import annotations

import types
from collections import Counter
from typing import Any

import pytest
import trio
import trio.testing

from arcly_trio.core.keys import Credentials, StreamKey
from arcly_trio.workers.webrtc import peer
from arcly_trio.workers.webrtc.peer import PeerSession
from arcly_trio.workers.webrtc.ticker import SLOTS, Ticker


class _Item:
    def __init__(self, ticker: Ticker, fail: bool = False) -> None:
        self.ticker = ticker
        self.runs: list[float] = []
        self.fail = fail
        self.closed: str | None = None

    def periodic(self, now: float) -> None:
        self.runs.append(now)
        if self.fail:
            raise RuntimeError("boom")

    def close(self, reason: str) -> None:
        self.closed = reason
        self.ticker.discard(self)


async def _ticking(ticker: Ticker, seconds: float) -> float:
    async with trio.open_nursery() as nursery:
        await nursery.start(ticker.run)
        start = trio.current_time()
        await trio.sleep(seconds)
        nursery.cancel_scope.cancel()
    return start


async def test_each_item_runs_once_a_period_and_a_burst_is_spread(autojump_clock: trio.testing.MockClock) -> None:
    """A thousand viewers that connect at once fire in every slot, not in one pass."""
    ticker = Ticker(period=1.0)
    items = [_Item(ticker) for _ in range(10 * SLOTS)]
    for item in items:
        ticker.add(item)
    start = await _ticking(ticker, 5.01)
    for item in items:
        offsets = [round(run - start, 6) for run in item.runs]
        assert len(offsets) == 5
        assert [round(b - a, 6) for a, b in zip(offsets, offsets[1:], strict=False)] == [1.0] * 4
        assert 0 < offsets[0] <= 1.0
    per_instant = Counter(round(item.runs[0], 6) for item in items)
    assert len(per_instant) == SLOTS and set(per_instant.values()) == {10}


async def test_a_discarded_item_stops_at_once_and_its_slot_is_reused(autojump_clock: trio.testing.MockClock) -> None:
    ticker = Ticker(period=1.0)
    first, second = _Item(ticker), _Item(ticker)
    ticker.add(first)
    ticker.add(second)  # the emptiest slot: not the first one's
    await _ticking(ticker, 2.01)
    assert len(first.runs) == len(second.runs) == 2 and first.runs[0] != second.runs[0]
    ticker.discard(first)
    await _ticking(ticker, 2.01)
    assert len(first.runs) == 2 and len(second.runs) == 4 and len(ticker) == 1


async def test_one_items_failure_closes_it_only(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    ticker = Ticker(period=1.0, slots=1)
    bad, good = _Item(ticker, fail=True), _Item(ticker)
    ticker.add(bad)
    ticker.add(good)
    await _ticking(ticker, 3.01)
    assert len(bad.runs) == 1 and bad.closed == "internal error in its periodic work"
    assert len(good.runs) == 3
    assert "periodic work failed" in caplog.text


async def test_an_empty_wheel_sleeps_until_an_item_comes(autojump_clock: trio.testing.MockClock) -> None:
    """A server without viewers does not wake twenty times a second for nothing."""
    ticker = Ticker(period=1.0)
    slots = 0
    real = ticker.run_slot

    def counted(now: float) -> int:
        nonlocal slots
        slots += 1
        return real(now)

    ticker.run_slot = counted  # type: ignore[method-assign]
    item = _Item(ticker)
    async with trio.open_nursery() as nursery:
        await nursery.start(ticker.run)
        await trio.sleep(10)
        assert slots == 0
        start = trio.current_time()
        ticker.add(item)
        await trio.sleep(2.01)
        ticker.discard(item)
        await trio.sleep(10)
        nursery.cancel_scope.cancel()
    assert [round(run - start, 6) for run in item.runs] == [0.05, 1.05]
    assert slots <= 2 * SLOTS + 1


def test_a_ticker_needs_a_period_and_slots() -> None:
    with pytest.raises(ValueError):
        Ticker(period=0)
    with pytest.raises(ValueError):
        Ticker(slots=0)


class _Viewer(PeerSession):
    """A connected session whose periodic work the ticker runs (as a WHEP viewer's)."""

    kind = "whep"
    ticked = True

    def __init__(self, host: Any) -> None:
        super().__init__(host, StreamKey("live", "cam"), Credentials(), None)  # type: ignore[arg-type]
        self.srtp = object()  # type: ignore[assignment]
        self.reports: list[float] = []

    async def _datagram(self, data: bytes, address: Any, link: Any, now: float) -> None:
        self.last_heard = now

    def periodic(self, now: float) -> None:
        self.reports.append(now)


async def test_a_ticked_session_reports_from_the_ticker_and_its_task_sleeps(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The viewer's task no longer wakes each second: its liveness window needs one scope per
    window however many datagrams come; the reports keep their cadence; a closed viewer leaves
    the wheel at once; a silent one still ends when its window does."""
    scopes = 0

    def counted(*args: Any, **kwargs: Any) -> trio.CancelScope:
        nonlocal scopes
        scopes += 1
        return trio.CancelScope(*args, **kwargs)

    counting = types.SimpleNamespace(**{name: getattr(trio, name) for name in dir(trio) if not name.startswith("__")})
    counting.CancelScope = counted
    monkeypatch.setattr(peer, "trio", counting)  # the session module's trio, counting its scopes
    ticker = Ticker(period=1.0)
    host = types.SimpleNamespace(engine=None, id_prefix="", handshake_timeout=10.0, session_timeout=5.0, mtu=1200)
    host.ticker = ticker
    viewer, silent = _Viewer(host), _Viewer(host)
    scopes = 0  # (not their own scopes, made with them)
    async with trio.open_nursery() as nursery:
        await nursery.start(ticker.run)
        start = trio.current_time()
        for session in (viewer, silent):
            ticker.add(session)

            async def serve(session: _Viewer = session) -> None:
                with session.scope:
                    await session._serve()

            nursery.start_soon(serve)
        for _ in range(100):  # 3 s of datagrams to one of them
            await trio.sleep(0.03)
            viewer.deliver(b"x", ("192.0.2.1", 9))
        assert scopes == 2  # one per task: no wakeup a second, none per datagram
        assert len(viewer.reports) == 3
        await trio.sleep(2.5)
        assert silent.end_reason == "peer silent for 5 s" and silent not in ticker
        viewer.close("DELETE")
        assert viewer not in ticker
        reports = len(viewer.reports)
        await trio.sleep(2)
        assert len(viewer.reports) == reports
        nursery.cancel_scope.cancel()
    assert silent.reports and max(silent.reports) - start < 5.0
