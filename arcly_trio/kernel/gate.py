"""The authorization gate: the one path every publish and play of every protocol goes through.

:meth:`AuthorizationGate.authorize` asks the authenticator whether some credentials may
``publish`` or ``play`` a key, and returns the key to use (the authenticator may rename it: a
redirect). Each authorization takes a turn of its address's
:class:`~.throttle.AuthThrottle`: a few at once per address and action, spaced by the delay that
address's refusals earned; past the few waiting it is refused at once with
:class:`~arcly_trio.core.errors.AuthorizationBusy` (HTTP ``429``). Every refusal is counted
there and logged once per burst, and every decision is told to the observers
(:class:`~.events.AuthDecided`, the audit trail).

Error policy: the gate raises :class:`~arcly_trio.core.errors.Unauthorized` (or its subclass
``AuthorizationBusy``) and nothing else. Any other exception an authenticator raises (a bug, a
value it could not parse) is a refusal too, with the generic reason ``authorization failed``:
counted (:attr:`AuthorizationGate.authenticator_failures`), delayed and told like any other;
its detail and traceback are logged, escaped, the first time that failure is seen.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable

import trio

from arcly_trio.core.errors import AuthorizationBusy, Unauthorized
from arcly_trio.core.keys import Credentials, StreamKey
from arcly_trio.core.text import printable
from arcly_trio.kernel.auth import Authenticator, decision
from arcly_trio.kernel.events import AuthDecided
from arcly_trio.kernel.throttle import AuthThrottle

__all__ = ["AuthorizationGate", "AUTHORIZATION_FAILED"]

log = logging.getLogger("arcly_trio.engine")

AUTHORIZATION_FAILED = "authorization failed"
"""The reason clients are given when the authenticator raised something unexpected."""
_MAX_FAILURE_KINDS = 64


class AuthorizationGate:
    """An authenticator behind a refusal throttle, with every decision told to ``tell``."""

    def __init__(
        self, authenticator: Authenticator, throttle: AuthThrottle, tell: Callable[[AuthDecided], None]
    ) -> None:
        self.authenticator = authenticator
        self.throttle = throttle
        """Slows down addresses whose authorizations are refused (see :mod:`.throttle`)."""
        self.tell = tell
        """Where every decision goes (the engine's observers)."""
        self.authenticator_failures = 0
        """Authorizations refused because the authenticator raised something other than
        ``Unauthorized`` (a bug); should stay 0."""
        self._failure_kinds: set[tuple[str, str]] = set()

    async def authorize(self, action: str, key: StreamKey, credentials: Credentials) -> StreamKey:
        """Whether ``credentials`` may ``action`` (``"publish"`` or ``"play"``) ``key``: the key
        to use (``key`` or the authenticator's rename), or :class:`Unauthorized` (see the
        module docstring)."""
        address = credentials.peer[0] if credentials.peer else None
        via = f" over {credentials.protocol}" if credentials.protocol else ""
        throttle = self.throttle
        turn = throttle.admit(address, action)
        if turn is None:
            raise self._busy(action, key, credentials, address, via)
        async with turn:
            if turn.bounced:
                raise self._busy(action, key, credentials, address, via)
            check = self.authenticator.authorize_publish if action == "publish" else self.authenticator.authorize_play
            started = trio.current_time()
            try:
                target = decision(await check(key, credentials), key, action)
            except Unauthorized as exc:
                throttle.refused(
                    address, action, f"{action} of {key}{via}: {printable(exc.reason) or 'refused'}", str(key)
                )
                self._decided(action, key, credentials, started, exc.reason or "refused")
                raise
            except Exception as exc:  # a broken authenticator refuses, like any other refusal
                detail = self._authenticator_failed(exc)
                refusal = Unauthorized(key.app, key.name, action, AUTHORIZATION_FAILED)
                throttle.refused(
                    address, action, f"{action} of {key}{via}: {AUTHORIZATION_FAILED} ({detail})", str(key)
                )
                self._decided(action, key, credentials, started, AUTHORIZATION_FAILED)
                raise refusal from None
            throttle.allowed(address, action, str(key))
            self._decided(action, key, credentials, started, None, target if target != key else None)
            log.debug("%s of %s%s from %s allowed", action, key, via, address or "a local client")
        if target != key:
            log.info("%s of %s renamed to %s by the authenticator", action, key, target)
        return target

    def _busy(
        self, action: str, key: StreamKey, credentials: Credentials, address: str | None, via: str
    ) -> AuthorizationBusy:
        """The refusal of an authorization its address's throttle had no room for (counted and
        told)."""
        busy = AuthorizationBusy(key.app, key.name, action)
        self.throttle.refused_busy(address, action, f"{action} of {key}{via}: {busy.reason}")
        self._decided(action, key, credentials, trio.current_time(), busy.reason)
        return busy

    def _authenticator_failed(self, exc: Exception) -> str:
        """Log an authenticator's exception (with its traceback, escaped, the first time this
        kind of failure is seen; at most ``_MAX_FAILURE_KINDS`` kinds remembered); its
        one-line detail for the refusal's log line."""
        self.authenticator_failures += 1
        detail = printable(type(exc).__qualname__)
        try:  # an exception whose str() raises too must not get out of here
            detail = printable(f"{type(exc).__name__}: {exc}")
            frames = traceback.extract_tb(exc.__traceback__)
            where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else ""
            kind = (type(exc).__qualname__, where)
            if kind not in self._failure_kinds and len(self._failure_kinds) < _MAX_FAILURE_KINDS:
                self._failure_kinds.add(kind)  # past the limit, failures are counted, not traced
                trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
                log.error(
                    "the authenticator raised %s (a refusal; this failure is logged once): %s",
                    detail,
                    printable(trace, 8000),
                )
        except Exception:
            log.error("the authenticator raised %s, which cannot even be shown (a refusal)", detail)
        return detail

    def _decided(
        self,
        action: str,
        key: StreamKey,
        credentials: Credentials,
        started: float,
        refused: str | None,
        renamed: StreamKey | None = None,
    ) -> None:
        now = trio.current_time()
        self.tell(
            AuthDecided(
                key,
                now,
                action,
                refused is None,
                refused or "",
                credentials.protocol,
                credentials.peer,
                credentials.client_id,
                renamed,
                now - started,
            )
        )
