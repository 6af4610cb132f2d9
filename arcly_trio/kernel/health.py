"""Named health checks that ``/api/health`` reports one by one.

Anything may add a check to the engine's :class:`HealthRegistry` (``engine.health.add``): the
engine adds one per protocol worker (``listening``) and one for the event loop's lag
(``event-loop``); the server adds storage checks (HLS and recording directories writable) and
the HTTP hooks add theirs (hook reachable). A check is a callable, plain or async, that returns
``None`` or ``True`` (passing), ``False`` (failing), a string (passing, with that detail) or a
:class:`CheckResult`; one that raises fails with the exception as its detail. A check marked
``critical`` makes the whole server unhealthy (``503``) when it fails.

Each check runs with a ``timeout`` (a check that takes longer fails) and its result is kept
for ``interval`` seconds, so health probes arriving at any rate run each check at most that
often; all due checks run at once, each in its own cancel scope.

Error policy: :meth:`HealthRegistry.run` never raises (a broken check fails, with its error as
the detail); adding two checks of one name raises ``ValueError``.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, runtime_checkable

import attrs
import trio

from arcly_trio.core.text import printable

__all__ = ["CheckResult", "HealthCheck", "HealthRegistry", "HealthReporter"]


@runtime_checkable
class HealthReporter(Protocol):
    """A plugin's optional hook (a stream service, a source, an observer, the authenticator):
    the fields it adds to ``/api/health`` (a cluster's directory, the HTTP hooks' reachability)."""

    def health_status(self) -> dict[str, Any]: ...


@attrs.frozen
class CheckResult:
    """The outcome of one check: ``ok`` and a ``detail`` for humans."""

    ok: bool
    detail: str = ""


CheckOutcome = CheckResult | bool | str | None
CheckFunction = Callable[[], CheckOutcome | Awaitable[CheckOutcome]]


@attrs.define(eq=False)
class HealthCheck:
    """A registered check and its last result."""

    name: str
    function: CheckFunction
    critical: bool = True
    timeout: float = 2.0
    interval: float = 2.0
    last: CheckResult | None = None
    checked_at: float = -1e18

    def document(self) -> dict[str, Any]:
        last = self.last or CheckResult(False, "not checked yet")
        return {"name": self.name, "ok": last.ok, "critical": self.critical, "detail": last.detail}


def _result(outcome: CheckOutcome) -> CheckResult:
    if isinstance(outcome, CheckResult):
        return outcome
    if outcome is None or outcome is True:
        return CheckResult(True)
    if outcome is False:
        return CheckResult(False, "failed")
    return CheckResult(True, str(outcome))


class HealthRegistry:
    """The engine's named checks (see the module docstring)."""

    def __init__(self) -> None:
        self._checks: dict[str, HealthCheck] = {}

    def add(
        self,
        name: str,
        function: CheckFunction,
        *,
        critical: bool = True,
        timeout: float = 2.0,
        interval: float = 2.0,
        replace: bool = False,
    ) -> HealthCheck:
        """Register a check (``ValueError`` if ``name`` is taken, unless ``replace``)."""
        if name in self._checks and not replace:
            raise ValueError(f"a health check named {name!r} is registered already")
        check = HealthCheck(name, function, critical, timeout, interval)
        self._checks[name] = check
        return check

    def has(self, name: str) -> bool:
        return name in self._checks

    def remove(self, name: str, check: HealthCheck | None = None) -> None:
        """Forget the check ``name`` (only if it is ``check``, when given; a no-op if there is
        none)."""
        if check is None or self._checks.get(name) is check:
            self._checks.pop(name, None)

    @property
    def checks(self) -> list[HealthCheck]:
        return list(self._checks.values())

    async def _run_one(self, check: HealthCheck) -> None:
        result = CheckResult(False, f"no answer within {check.timeout:g} s")
        with trio.move_on_after(check.timeout):
            try:
                outcome = check.function()
                if inspect.isawaitable(outcome):
                    outcome = await outcome
                result = _result(outcome)
            except Exception as exc:  # a broken check fails; it never breaks the health route
                result = CheckResult(False, printable(f"{type(exc).__name__}: {exc}"))
        check.last = result
        check.checked_at = trio.current_time()

    async def run(self) -> list[HealthCheck]:
        """Run every check whose result is older than its interval (all at once); every check."""
        now = trio.current_time()
        due = [check for check in self._checks.values() if now - check.checked_at >= check.interval]
        if due:
            async with trio.open_nursery() as nursery:
                for check in due:
                    nursery.start_soon(self._run_one, check)
        return self.checks

    @staticmethod
    def healthy(checks: list[HealthCheck]) -> bool:
        """Whether no critical check of ``checks`` fails."""
        return all(check.last is not None and check.last.ok for check in checks if check.critical)
