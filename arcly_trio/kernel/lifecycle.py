"""The engine's life as a state machine: every state and every legal transition in one table.

::

    NEW ──serve──> RUNNING ──stop, shutdown, leaving──> STOPPING ──nursery closed──> STOPPED
                                                           │ ↺ (asked again)            │
                      RUNNING <──────────────── serve again ─────────────────────────────┘

``STOPPING`` may be entered again (``shutdown()`` and then the nursery closing both ask for it);
an engine that stopped may be served again. Nothing else is legal: :meth:`Lifecycle.move` is
the one place the state changes and it refuses any other transition.

Error policy: an illegal transition is a bug of the kernel: :class:`IllegalTransition` (a
``RuntimeError``), and the state is left as it was.
"""

from __future__ import annotations

import enum

from arcly_trio.core.errors import ArclyError

__all__ = ["EngineState", "IllegalTransition", "Lifecycle", "TRANSITIONS"]


class EngineState(enum.Enum):
    NEW = "new"
    """Built, not served yet."""
    RUNNING = "running"
    """Serving: publishes and plays are accepted."""
    STOPPING = "stopping"
    """Begun to stop: new publishes and plays are refused, the nurseries are closing."""
    STOPPED = "stopped"
    """Every task has ended (``serve`` may be called again)."""


TRANSITIONS: dict[EngineState, frozenset[EngineState]] = {
    EngineState.NEW: frozenset({EngineState.RUNNING}),
    EngineState.RUNNING: frozenset({EngineState.STOPPING}),
    EngineState.STOPPING: frozenset({EngineState.STOPPING, EngineState.STOPPED}),
    EngineState.STOPPED: frozenset({EngineState.RUNNING}),
}
"""From each state, the states it may move to."""


class IllegalTransition(ArclyError, RuntimeError):
    """A transition the table does not have (a bug)."""

    def __init__(self, state: EngineState, to: EngineState) -> None:
        super().__init__(f"the engine cannot go from {state.value} to {to.value}")
        self.state = state
        self.to = to


class Lifecycle:
    """The engine's current :class:`EngineState`, changed only by :meth:`move`."""

    __slots__ = ("state",)

    def __init__(self) -> None:
        self.state = EngineState.NEW

    def move(self, to: EngineState) -> None:
        """Go to ``to`` (:class:`IllegalTransition` if the table does not allow it)."""
        if to not in TRANSITIONS[self.state]:
            raise IllegalTransition(self.state, to)
        self.state = to

    def can_move(self, to: EngineState) -> bool:
        return to in TRANSITIONS[self.state]

    @property
    def running(self) -> bool:
        """Accepting publishes and plays."""
        return self.state is EngineState.RUNNING

    @property
    def stopping(self) -> bool:
        return self.state is EngineState.STOPPING
