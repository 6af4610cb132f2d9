"""The authorization gate (:mod:`arcly_trio.kernel.gate`) on its own: allowed, refused,
renamed, busy, and a broken authenticator (a counted, delayed, audited refusal)."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

from arcly_trio import Credentials, Engine, StreamKey, Unauthorized
from arcly_trio.core.errors import AuthorizationBusy
from arcly_trio.kernel.events import AuthDecided
from arcly_trio.kernel.gate import AUTHORIZATION_FAILED, AuthorizationGate
from arcly_trio.kernel.throttle import AuthThrottle

KEY = StreamKey("live", "cam")
PEER = Credentials(protocol="rtmp", peer=("203.0.113.7", 5000))


class Scripted:
    """An authenticator that answers plays with ``answer`` (raised if an exception)."""

    def __init__(self, answer: object) -> None:
        self.answer = answer
        self.calls = 0

    async def authorize_publish(self, key: StreamKey, credentials: Credentials) -> object:
        return await self.authorize_play(key, credentials)

    async def authorize_play(self, key: StreamKey, credentials: Credentials) -> object:
        self.calls += 1
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer


def gate_of(answer: object, **throttle: float) -> tuple[AuthorizationGate, list[AuthDecided]]:
    told: list[AuthDecided] = []
    gate = AuthorizationGate(Scripted(answer), AuthThrottle(base_delay=0.5, max_delay=2.0, **throttle), told.append)
    return gate, told


async def test_an_allowed_play_returns_its_key_and_is_told() -> None:
    gate, told = gate_of(True)
    assert await gate.authorize("play", KEY, PEER) == KEY
    assert [(event.allowed, event.action, event.peer) for event in told] == [(True, "play", PEER.peer)]
    assert gate.throttle.refusals == 0


async def test_a_rename_is_returned_and_told() -> None:
    target = StreamKey("live", "other")
    gate, told = gate_of(target)
    assert await gate.authorize("play", KEY, PEER) == target
    assert told[0].renamed == target


async def test_a_refusal_is_counted_told_and_raised() -> None:
    gate, told = gate_of(Unauthorized("live", "cam", "play", "wrong token"))
    with pytest.raises(Unauthorized, match="wrong token"):
        await gate.authorize("play", KEY, PEER)
    assert gate.throttle.refusals == 1
    assert [(event.allowed, event.reason) for event in told] == [(False, "wrong token")]
    assert gate.authenticator_failures == 0


async def test_a_broken_authenticator_is_a_counted_delayed_audited_refusal(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="arcly_trio.engine")
    gate, told = gate_of(KeyError("no such field"))
    for _ in range(3):
        with pytest.raises(Unauthorized, match=AUTHORIZATION_FAILED) as refused:
            await gate.authorize("play", KEY, PEER)
        assert type(refused.value) is Unauthorized and refused.value.__cause__ is None
    assert gate.authenticator_failures == 3 and gate.throttle.refusals == 3
    assert gate.throttle.delay(PEER.peer[0], "play") > 0  # the next try waits
    assert [(event.allowed, event.reason) for event in told] == [(False, AUTHORIZATION_FAILED)] * 3
    traced = [record for record in caplog.records if "logged once" in record.getMessage()]
    assert len(traced) == 1 and "KeyError" in traced[0].getMessage()


async def test_an_exception_that_cannot_be_shown_is_still_a_refusal() -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    gate, told = gate_of(Unprintable())
    with pytest.raises(Unauthorized, match=AUTHORIZATION_FAILED):
        await gate.authorize("publish", KEY, PEER)
    assert gate.authenticator_failures == 1 and told[0].action == "publish"


async def test_an_address_past_its_waiting_room_is_refused_busy_at_once() -> None:
    gate, told = gate_of(True, max_in_flight=1, max_waiting=0)
    release = trio.Event()

    class Slow(Scripted):
        async def authorize_play(self, key: StreamKey, credentials: Credentials) -> object:
            await release.wait()
            return True

    gate.authenticator = Slow(True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(gate.authorize, "play", KEY, PEER)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(AuthorizationBusy):
            await gate.authorize("play", KEY, PEER)
        release.set()
    assert gate.throttle.busy == 1
    assert [event.allowed for event in told] == [False, True]


async def test_the_engine_authorizes_through_its_gate() -> None:
    engine = Engine.builder().application("live").authenticator(Scripted(RuntimeError("bug"))).build()
    assert engine.authenticator is engine.gate.authenticator
    assert engine.auth_throttle is engine.gate.throttle
    async with engine:
        with pytest.raises(Unauthorized, match=AUTHORIZATION_FAILED):
            async with engine.subscribe("live/cam", PEER):
                pass  # pragma: no cover
        with pytest.raises(Unauthorized, match=AUTHORIZATION_FAILED):
            async with engine.attach("live/cam", object(), PEER):  # type: ignore[arg-type]
                pass  # pragma: no cover
    assert engine.authenticator_failures == 2 and engine.auth_throttle.refusals == 2
