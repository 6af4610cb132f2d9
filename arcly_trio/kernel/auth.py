"""Who may publish and who may play.

Every publish and every subscribe in the engine goes through the engine's
:class:`Authenticator`. An authenticator refuses by raising :class:`~.errors.Unauthorized` (or by
returning ``False``, which the engine turns into ``Unauthorized``). It may also *rename* the
stream by returning another :class:`~arcly_trio.core.keys.StreamKey` (an HTTP hook's redirect):
the publish or play then goes to that key. Any other answer, and any other exception it raises,
is a refusal too:
:meth:`~.engine.Engine.authorize` turns it into ``Unauthorized("authorization failed")``
(counted, delayed, logged once with its detail), so a broken authenticator refuses rather than
lets through, and never answers a client with an internal error.

An authenticator whose decisions expire (signed URLs, JWTs:
:class:`~arcly_trio.ops.signing.SignedUrlAuthenticator`) may also have
``valid_until(action, key, credentials) -> float | None``: until when (unix seconds) the
decision for ``credentials`` holds. What reuses a decision for later requests (an HLS or DASH
player's session, :mod:`.polled`) reuses it no longer than that; without it, for as long as the
session lives.
"""

from __future__ import annotations

import hmac
import math
from typing import Protocol, runtime_checkable

from arcly_trio.core.errors import Unauthorized
from arcly_trio.core.keys import Credentials, StreamKey

__all__ = ["Authenticator", "AllowAll", "TokenAuthenticator", "decision"]


@runtime_checkable
class Authenticator(Protocol):
    """Decides whether ``credentials`` may publish to or play ``key``."""

    async def authorize_publish(self, key: StreamKey, credentials: Credentials) -> bool | StreamKey | None:
        """Return ``None``/``True`` to allow (a ``StreamKey``: allow, on that key instead);
        raise ``Unauthorized`` or return ``False`` to refuse."""
        ...

    async def authorize_play(self, key: StreamKey, credentials: Credentials) -> bool | StreamKey | None:
        """Return ``None``/``True`` to allow (a ``StreamKey``: allow, on that key instead);
        raise ``Unauthorized`` or return ``False`` to refuse."""
        ...


def decision(result: object, key: StreamKey, action: str) -> StreamKey:
    """The key an authenticator's answer ``result`` allows ``action`` on: ``key`` for
    ``None``/``True``, the ``StreamKey`` it names; ``Unauthorized`` for ``False``; ``TypeError``
    for anything else (a bug: the engine refuses it too, see the module docstring)."""
    if result is None or result is True:
        return key
    if isinstance(result, StreamKey):
        return result
    if result is False:
        raise Unauthorized(key.app, key.name, action)
    raise TypeError(f"an authenticator answered {type(result).__name__}, not None, a bool or a StreamKey")


class AllowAll:
    """The default authenticator: everyone may publish and play."""

    async def authorize_publish(self, key: StreamKey, credentials: Credentials) -> None:
        return None

    async def authorize_play(self, key: StreamKey, credentials: Credentials) -> None:
        return None


class TokenAuthenticator:
    """Shared-secret tokens: publishers (and, if set, players) must present the right token.

    ``None`` for a token leaves that action open. Tokens are compared in constant time.
    """

    def __init__(self, publish_token: str | None = None, play_token: str | None = None) -> None:
        self._publish_token = publish_token
        self._play_token = play_token

    @staticmethod
    def _check(expected: str | None, key: StreamKey, creds: Credentials, action: str) -> None:
        if expected is None:
            return
        given = creds.token or ""
        if not hmac.compare_digest(given.encode(), expected.encode()):
            reason = "no token" if not given else "wrong token"
            raise Unauthorized(key.app, key.name, action, reason, missing=not given)

    def expected_token(self, action: str) -> str | None:
        """The token ``action`` (``"publish"``/``"play"``) needs, ``None`` if it is open: what a
        challenge-response scheme (RTSP's Digest) checks a client's answer against."""
        return self._publish_token if action == "publish" else self._play_token

    def valid_until(self, action: str, key: StreamKey, credentials: Credentials) -> float | None:
        """``None`` if ``action`` is open, ``inf`` for the right token (it does not expire),
        ``0.0`` for a wrong one (see the module docstring)."""
        expected = self.expected_token(action)
        if expected is None:
            return None
        given = credentials.token or ""
        return math.inf if hmac.compare_digest(given.encode(), expected.encode()) else 0.0

    async def authorize_publish(self, key: StreamKey, credentials: Credentials) -> None:
        self._check(self._publish_token, key, credentials, "publish")

    async def authorize_play(self, key: StreamKey, credentials: Credentials) -> None:
        self._check(self._play_token, key, credentials, "play")
