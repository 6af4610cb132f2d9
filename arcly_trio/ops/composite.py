"""Authenticators made of authenticators: any of them, all of them, for some actions only.

* :class:`AnyOf`: the client needs *one* credential that a member accepts (a shared token or a
  signed URL or a JWT). Members are asked in order; the first that allows decides (its rename,
  if any, too). When every member refuses, the refusal names every reason, and it counts as a
  missing credential (HTTP ``401``) only if every member said the credential was missing.
* :class:`AllOf`: every member must allow, in order (a token check, then an HTTP hook); a
  member's rename is what the next one is asked about, and the last rename wins.
* :class:`ForActions`: an authenticator applied to some actions (``"publish"``, ``"play"``)
  only; the other actions are allowed by it.
* :class:`ByApp`: one authenticator per application (a configuration file's ``[apps.NAME]``
  authorization), and a default for the others.
* :class:`TrustedPeers`: allows clients from given peers without asking the authenticator (the
  workers of ``--workers N`` relaying to each other over their private Unix sockets: the player
  that caused the relay was authorized by the worker it came to);
* :class:`Swappable`: holds one authenticator that can be replaced while the engine runs (a
  configuration reload): the new one is started (its ``run``) before it takes over, and the old
  one is stopped ``linger`` seconds later, so calls in flight finish with it.

``arcly-trio serve`` builds ``AllOf([ForActions(AnyOf([token, signed]), {"publish"}),
ForActions(AnyOf([token, signed]), {"play"}), hooks])`` from its options.

Each composite forwards ``run(engine)``, ``health_status()`` and ``valid_until`` (when a
decision expires: :mod:`arcly_trio.kernel.auth`) to the members that have them
(the engine starts the authenticator like a plugin), so an HTTP hook inside a composite still
gets its client and its health check.

Error policy: a member's ``Unauthorized`` is the refusal; any other exception propagates to
:meth:`~arcly_trio.kernel.engine.Engine.authorize`, which refuses with a generic reason (a
broken authenticator refuses rather than lets through).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import trio

from arcly_trio.core.errors import Unauthorized
from arcly_trio.core.keys import Credentials, StreamKey
from arcly_trio.kernel.auth import Authenticator, decision
from arcly_trio.kernel.engine import RunsWithEngine
from arcly_trio.kernel.health import HealthReporter

__all__ = ["AnyOf", "AllOf", "ForActions", "ByApp", "Swappable", "TrustedPeers", "ask"]


async def ask(authenticator: Authenticator, action: str, key: StreamKey, credentials: Credentials) -> StreamKey:
    """Ask one authenticator about ``action``: the key to go on with, or ``Unauthorized``."""
    check = authenticator.authorize_publish if action == "publish" else authenticator.authorize_play
    return decision(await check(key, credentials), key, action)


def until(member: Authenticator, action: str, key: StreamKey, credentials: Credentials) -> float:
    """``member``'s ``valid_until`` as a number: ``inf`` when it has none or needs none (its
    decisions do not expire); ``nan`` when it cannot tell (no ``valid_until``)."""
    check = getattr(member, "valid_until", None)
    if check is None:
        return math.nan
    found = check(action, key, credentials)
    return math.inf if found is None else float(found)


def _known(value: float) -> float | None:
    return None if math.isnan(value) or math.isinf(value) else value


class _Composite:
    """What every composite does with its members' lifecycles."""

    members: Sequence[Authenticator]

    async def run(self, engine: Any, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the members that have a ``run`` (in this task's nursery), then report ready."""
        async with trio.open_nursery() as nursery:
            for member in self.members:
                if isinstance(member, RunsWithEngine):
                    await nursery.start(member.run, engine)
            task_status.started()

    def health_status(self) -> dict[str, object]:
        found: dict[str, object] = {}
        for member in self.members:
            if isinstance(member, HealthReporter):
                found.update(member.health_status())
        return found

    def valid_until(self, action: str, key: StreamKey, credentials: Credentials) -> float | None:
        """Until when (unix seconds) a decision for ``credentials`` holds, from the members'
        own ``valid_until`` (see :mod:`arcly_trio.kernel.auth`); ``None``: no expiry known."""
        return None

    async def authorize_publish(self, key: StreamKey, credentials: Credentials) -> StreamKey:
        return await self.decide("publish", key, credentials)

    async def authorize_play(self, key: StreamKey, credentials: Credentials) -> StreamKey:
        return await self.decide("play", key, credentials)

    async def decide(self, action: str, key: StreamKey, credentials: Credentials) -> StreamKey:
        raise NotImplementedError


class AnyOf(_Composite):
    """Allowed when one member allows (see the module docstring)."""

    def __init__(self, members: Iterable[Authenticator]) -> None:
        self.members = tuple(members)
        if not self.members:
            raise ValueError("AnyOf needs at least one authenticator")

    async def decide(self, action: str, key: StreamKey, credentials: Credentials) -> StreamKey:
        refusals: list[Unauthorized] = []
        for member in self.members:
            try:
                return await ask(member, action, key, credentials)
            except Unauthorized as exc:
                refusals.append(exc)
        reasons = "; ".join(dict.fromkeys(exc.reason for exc in refusals if exc.reason))
        raise Unauthorized(key.app, key.name, action, reasons, missing=all(exc.missing for exc in refusals))

    def valid_until(self, action: str, key: StreamKey, credentials: Credentials) -> float | None:
        """The latest of the members' (one allowing is enough); unknown if a member cannot tell."""
        values = [until(member, action, key, credentials) for member in self.members]
        return None if any(math.isnan(v) for v in values) else _known(max(values))


class AllOf(_Composite):
    """Allowed when every member allows, in order (see the module docstring)."""

    def __init__(self, members: Iterable[Authenticator]) -> None:
        self.members = tuple(members)

    async def decide(self, action: str, key: StreamKey, credentials: Credentials) -> StreamKey:
        for member in self.members:
            key = await ask(member, action, key, credentials)
        return key

    def valid_until(self, action: str, key: StreamKey, credentials: Credentials) -> float | None:
        """The earliest of the members that can tell (every one must allow)."""
        values = [v for member in self.members if not math.isnan(v := until(member, action, key, credentials))]
        return _known(min(values, default=math.inf))


class ForActions(_Composite):
    """``authenticator`` for ``actions`` only; the other actions are allowed."""

    def __init__(self, authenticator: Authenticator, actions: Iterable[str]) -> None:
        self.members = (authenticator,)
        self.actions = frozenset(actions)
        unknown = self.actions - {"publish", "play"}
        if unknown:
            raise ValueError(f"unknown actions {sorted(unknown)}: only publish and play")

    async def decide(self, action: str, key: StreamKey, credentials: Credentials) -> StreamKey:
        if action not in self.actions:
            return key
        return await ask(self.members[0], action, key, credentials)

    def valid_until(self, action: str, key: StreamKey, credentials: Credentials) -> float | None:
        return None if action not in self.actions else _known(until(self.members[0], action, key, credentials))


class ByApp(_Composite):
    """``per_app[key.app]`` decides for its application, ``default`` for the others."""

    def __init__(self, default: Authenticator, per_app: dict[str, Authenticator]) -> None:
        self.default = default
        self.per_app = dict(per_app)
        self.members = (default, *self.per_app.values())

    async def decide(self, action: str, key: StreamKey, credentials: Credentials) -> StreamKey:
        return await ask(self.per_app.get(key.app, self.default), action, key, credentials)

    def valid_until(self, action: str, key: StreamKey, credentials: Credentials) -> float | None:
        return _known(until(self.per_app.get(key.app, self.default), action, key, credentials))


class Swappable(_Composite):
    """One authenticator, replaceable while the engine runs (see the module docstring)."""

    def __init__(self, authenticator: Authenticator, *, linger: float = 10.0) -> None:
        self.members = (authenticator,)
        self.linger = linger
        self._engine: Any = None
        self._nursery: trio.Nursery | None = None
        self._scopes: dict[int, trio.CancelScope] = {}

    @property
    def current(self) -> Authenticator:
        return self.members[0]

    async def run(self, engine: Any, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._engine = engine
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await nursery.start(self._run_member, self.members[0])
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None

    async def _run_member(
        self, member: Authenticator, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        with trio.CancelScope() as scope:
            self._scopes[id(member)] = scope
            try:
                if not isinstance(member, RunsWithEngine):
                    task_status.started()
                    await trio.sleep_forever()
                await member.run(self._engine, task_status=task_status)
            finally:
                self._scopes.pop(id(member), None)

    async def swap(self, authenticator: Authenticator) -> None:
        """Start ``authenticator`` and let it decide from now on; the old one stops after
        ``linger`` seconds."""
        old = self.members[0]
        nursery = self._nursery
        if nursery is not None:
            await nursery.start(self._run_member, authenticator)
        self.members = (authenticator,)
        if nursery is not None:
            nursery.start_soon(self._retire, old)

    async def _retire(self, old: Authenticator) -> None:
        await trio.sleep(self.linger)
        scope = self._scopes.get(id(old))
        if scope is not None:
            scope.cancel()

    async def decide(self, action: str, key: StreamKey, credentials: Credentials) -> StreamKey:
        return await ask(self.members[0], action, key, credentials)

    def valid_until(self, action: str, key: StreamKey, credentials: Credentials) -> float | None:
        return _known(until(self.members[0], action, key, credentials))


class TrustedPeers(_Composite):
    """Clients whose ``Credentials.peer`` is one of ``peers`` are allowed; the others are asked
    to ``authenticator``."""

    def __init__(self, authenticator: Authenticator, peers: Iterable[tuple[str, int]]) -> None:
        self.members = (authenticator,)
        self.peers = frozenset(peers)

    async def decide(self, action: str, key: StreamKey, credentials: Credentials) -> StreamKey:
        if credentials.peer in self.peers:
            return key
        return await ask(self.members[0], action, key, credentials)

    def valid_until(self, action: str, key: StreamKey, credentials: Credentials) -> float | None:
        return None if credentials.peer in self.peers else _known(until(self.members[0], action, key, credentials))
