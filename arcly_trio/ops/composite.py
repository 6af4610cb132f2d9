"""Authenticators made of authenticators: any of them, all of them, for some actions only.

* :class:`AnyOf`: the client needs *one* credential that a member accepts (a shared token or a
  signed URL or a JWT). Members are asked in order; the first that allows decides (its rename,
  if any, too). When every member refuses, the refusal names every reason, and it counts as a
  missing credential (HTTP ``401``) only if every member said the credential was missing.
* :class:`AllOf`: every member must allow, in order (a token check, then an HTTP hook); a
  member's rename is what the next one is asked about, and the last rename wins.
* :class:`ForActions`: an authenticator applied to some actions (``"publish"``, ``"play"``)
  only; the other actions are allowed by it.

``arcly-trio serve`` builds ``AllOf([ForActions(AnyOf([token, signed]), {"publish"}),
ForActions(AnyOf([token, signed]), {"play"}), hooks])`` from its options.

Each composite forwards ``run(engine)`` and ``health_status()`` to the members that have them
(the engine starts the authenticator like a plugin), so an HTTP hook inside a composite still
gets its client and its health check.

Error policy: a member's ``Unauthorized`` is the refusal; any other exception propagates (a
broken authenticator refuses rather than lets through).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import trio

from ..core.errors import Unauthorized
from ..core.keys import Credentials, StreamKey
from ..kernel.auth import Authenticator

__all__ = ["AnyOf", "AllOf", "ForActions", "ask"]


async def ask(authenticator: Authenticator, action: str, key: StreamKey, credentials: Credentials) -> StreamKey:
    """Ask one authenticator about ``action``: the key to go on with, or ``Unauthorized``."""
    check = authenticator.authorize_publish if action == "publish" else authenticator.authorize_play
    result = await check(key, credentials)
    if result is False:
        raise Unauthorized(key.app, key.name, action)
    return result if isinstance(result, StreamKey) else key


class _Composite:
    """What every composite does with its members' lifecycles."""

    members: Sequence[Authenticator]

    async def run(self, engine: Any, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the members that have a ``run`` (in this task's nursery), then report ready."""
        async with trio.open_nursery() as nursery:
            for member in self.members:
                run = getattr(member, "run", None)
                if run is not None:
                    await nursery.start(run, engine)
            task_status.started()

    def health_status(self) -> dict[str, object]:
        found: dict[str, object] = {}
        for member in self.members:
            method = getattr(member, "health_status", None)
            if method is not None:
                found.update(method())
        return found

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


class AllOf(_Composite):
    """Allowed when every member allows, in order (see the module docstring)."""

    def __init__(self, members: Iterable[Authenticator]) -> None:
        self.members = tuple(members)

    async def decide(self, action: str, key: StreamKey, credentials: Credentials) -> StreamKey:
        for member in self.members:
            key = await ask(member, action, key, credentials)
        return key


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
