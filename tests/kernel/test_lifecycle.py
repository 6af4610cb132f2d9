"""The engine's state machine (:mod:`arcly_trio.kernel.lifecycle`): the table, and the engine
moving through it."""

from __future__ import annotations

import pytest
import trio

from arcly_trio import Engine
from arcly_trio.kernel.lifecycle import TRANSITIONS, EngineState, IllegalTransition, Lifecycle


def test_every_state_has_a_row_in_the_table() -> None:
    assert set(TRANSITIONS) == set(EngineState)


@pytest.mark.parametrize("start", list(EngineState))
@pytest.mark.parametrize("to", list(EngineState))
def test_move_applies_the_table_and_refuses_the_rest(start: EngineState, to: EngineState) -> None:
    lifecycle = Lifecycle()
    lifecycle.state = start
    if to in TRANSITIONS[start]:
        lifecycle.move(to)
        assert lifecycle.state is to
    else:
        with pytest.raises(IllegalTransition, match=f"from {start.value} to {to.value}"):
            lifecycle.move(to)
        assert lifecycle.state is start


def test_a_new_lifecycle_is_new_and_neither_running_nor_stopping() -> None:
    lifecycle = Lifecycle()
    assert lifecycle.state is EngineState.NEW
    assert not lifecycle.running and not lifecycle.stopping


async def test_the_engine_goes_new_running_stopped_and_may_serve_again() -> None:
    engine = Engine.builder().application("live").build()
    assert engine.state is EngineState.NEW
    async with engine:
        assert engine.state is EngineState.RUNNING and not engine.stopping
    assert engine.state is EngineState.STOPPED
    async with engine:
        assert engine.state is EngineState.RUNNING
    assert engine.state is EngineState.STOPPED


async def test_stop_passes_through_stopping() -> None:
    engine = Engine.builder().application("live").build()
    async with engine:
        engine.stop()
        assert engine.state is EngineState.STOPPING and engine.stopping
    assert engine.state is EngineState.STOPPED


async def test_an_engine_whose_worker_failed_stays_stopped_when_left() -> None:
    class Broken:
        name = "broken"

        async def serve(self, engine: Engine, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            task_status.started()
            raise ValueError("worker bug")

    engine = Engine.builder().application("live").protocol(Broken()).build()
    with pytest.raises(ValueError, match="worker bug"):
        async with engine:
            await trio.sleep_forever()
    assert engine.state is EngineState.STOPPED
