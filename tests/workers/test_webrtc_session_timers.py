"""A WebRTC session's own timers (:meth:`PeerSession._serve`): the tick's cadence while
datagrams keep coming, the liveness window, deadlines a datagram moves, and the cost of a wait
(one cancel scope per timer period, not one per datagram). MockClock with autojump: no real time."""

from __future__ import annotations

import types
from typing import Any

import pytest
import trio
import trio.testing

from arcly_trio.core.keys import Credentials, StreamKey
from arcly_trio.workers.webrtc import peer
from arcly_trio.workers.webrtc.peer import PeerSession


class _Session(PeerSession):
    kind = "whep"

    def __init__(self, host: Any) -> None:
        super().__init__(host, StreamKey("live", "cam"), Credentials(), None)  # type: ignore[arg-type]
        self.srtp = object()  # type: ignore[assignment]  # connected: the tick and the liveness window apply
        self.ticks: list[float] = []
        self.heard: list[float] = []
        self.move_tick_to: float | None = None

    async def _datagram(self, data: bytes, address: Any, link: Any, now: float) -> None:
        self.heard.append(now)
        self.last_heard = now
        if self.move_tick_to is not None:
            self._next_tick, self.move_tick_to = self.move_tick_to, None

    async def tick(self, now: float) -> None:
        self.ticks.append(now)


def _host(session_timeout: float = 5.0) -> Any:
    return types.SimpleNamespace(
        engine=None, id_prefix="", handshake_timeout=10.0, session_timeout=session_timeout, mtu=1200
    )


async def _serve(session: _Session) -> None:
    with session.scope:
        await session._serve()


async def test_the_tick_keeps_its_cadence_while_datagrams_come(autojump_clock: trio.testing.MockClock) -> None:
    """A sender report a second whatever the peer sends in between (here every 30 ms)."""
    session = _Session(_host())
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_serve, session)
        for _ in range(200):  # 6 s of datagrams
            await trio.sleep(0.03)
            session.deliver(b"x", ("192.0.2.1", 9))
        session.close("done")
    assert len(session.heard) == 200
    offsets = [round(tick - start, 6) for tick in session.ticks]
    assert offsets == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]


async def test_a_silent_peer_ends_the_session_after_the_window(autojump_clock: trio.testing.MockClock) -> None:
    session = _Session(_host(session_timeout=5.0))
    start = trio.current_time()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_serve, session)
            await trio.sleep(2.5)
            session.deliver(b"x", ("192.0.2.1", 9))  # heard at 2.5: the window ends at 7.5
    assert session.end_reason == "peer silent for 5 s"
    assert trio.current_time() - start == pytest.approx(7.5)


async def test_a_datagram_that_moves_a_deadline_earlier_is_kept(autojump_clock: trio.testing.MockClock) -> None:
    """The scope's deadline follows the session's (a DTLS flight's retransmission, here the tick)."""
    session = _Session(_host())
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_serve, session)
        await trio.sleep(0.2)
        session.move_tick_to = start + 0.5
        session.deliver(b"x", ("192.0.2.1", 9))
        await trio.sleep(1.0)
        session.close("done")
    assert [round(tick - start, 6) for tick in session.ticks] == [0.5]


async def test_one_cancel_scope_per_timer_period_not_per_datagram(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A viewer's task wakes for each RTCP report and consent check: each wait used to enter a
    cancel scope of its own (``move_on_at``); now one lasts until the next timer is due."""
    scopes = 0

    def counted(make: Any) -> Any:
        def make_counted(*args: Any, **kwargs: Any) -> trio.CancelScope:
            nonlocal scopes
            scopes += 1
            return make(*args, **kwargs)

        return make_counted

    # The session module's view of trio, counting the scopes it makes (trio's own are not counted).
    counting = types.SimpleNamespace(
        **{name: getattr(trio, name) for name in dir(trio) if not name.startswith("__")},
    )
    counting.CancelScope = counted(trio.CancelScope)
    counting.move_on_at = counted(trio.move_on_at)
    session = _Session(_host())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_serve, session)
        await trio.sleep(0.01)
        monkeypatch.setattr(peer, "trio", counting)
        for _ in range(100):  # 3 s, 100 datagrams
            await trio.sleep(0.03)
            session.deliver(b"x", ("192.0.2.1", 9))
        monkeypatch.undo()
        session.close("done")
    assert len(session.heard) == 100
    assert scopes <= 4  # one per tick (3), not one per datagram (100)
