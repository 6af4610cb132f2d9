"""Signed, expiring URLs: Node-Media-Server's ``?sign=`` and HS256 JSON Web Tokens.

Node-Media-Server's format: ``?sign=EXPIRY-HASH`` where ``EXPIRY`` is a time in unix seconds and
``HASH`` is ``md5("/{app}/{stream}-{EXPIRY}-{SECRET}")`` in lower-case hex. The path is in the
hash, so a signature made for one stream is refused for every other one (a URL "replayed
across streams"); the expiry is in the hash too, so it cannot be pushed back.

JWT: ``?jwt=TOKEN`` or an ``Authorization: Bearer TOKEN`` header (HTTP), signed with HS256 and the
same secret (PyJWT). Its claims say what it allows: ``exp`` (required), ``app`` and ``stream``
(the stream it is for; ``"*"`` for any), and ``action`` (``"publish"``, ``"play"``, a list of
them, or ``"*"``).

:class:`SignedUrlAuthenticator` accepts either; ``actions`` says which actions need one (an
action it does not guard is allowed). :func:`nms_sign`, :func:`sign_url` and :func:`make_jwt`
make them (``arcly-trio sign`` prints them for operators).

Clock: the wall clock (``time.time``), as the signatures carry unix times; ``leeway`` seconds of
clock skew are tolerated for JWTs.

Error policy: every refusal is an :class:`~arcly_trio.core.errors.Unauthorized` whose reason
says what was wrong (``no signature``, ``malformed signature``, ``signature expired``, ``wrong
signature``, ``token is for another stream``...) and is marked ``missing`` when the client
presented nothing; nothing else is raised. Secrets are compared in constant time and never
logged.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Iterable
from urllib.parse import urlencode, urlsplit, urlunsplit

import jwt

from ..core.errors import Unauthorized
from ..core.keys import Credentials, StreamKey

__all__ = ["SignedUrlAuthenticator", "nms_sign", "sign_url", "make_jwt", "MAX_SIGNATURE"]

MAX_SIGNATURE = 4096
"""The longest ``sign`` or JWT looked at (longer ones are refused before any parsing)."""


def nms_sign(app: str, stream: str, expiry: int, secret: str) -> str:
    """Node-Media-Server's ``sign`` value for ``/app/stream`` valid until ``expiry`` (unix s)."""
    digest = hashlib.md5(f"/{app}/{stream}-{expiry}-{secret}".encode()).hexdigest()  # noqa: S324 - NMS's format
    return f"{expiry}-{digest}"


def make_jwt(secret: str, app: str, stream: str, expiry: int, action: str | list[str] = "*") -> str:
    """An HS256 JWT for ``action`` on ``app/stream`` (``"*"`` for any), valid until ``expiry``."""
    return jwt.encode({"app": app, "stream": stream, "action": action, "exp": int(expiry)}, secret,
                      algorithm="HS256")


def sign_url(url: str, secret: str, expiry: int, *, style: str = "nms", action: str = "*") -> str:
    """``url`` (``rtmp://host/app/stream``, ``http://host/app/stream.flv``, ``.../index.m3u8``...)
    with ``sign=`` (``style="nms"``) or ``jwt=`` (``style="jwt"``) added to its query.

    The app and stream are the first two path segments (a ``.flv`` suffix dropped).
    Raises ``ValueError`` when the URL has no ``/app/stream`` path.
    """
    parts = urlsplit(url)
    segments = [segment for segment in parts.path.split("/") if segment]
    if len(segments) < 2:
        raise ValueError(f"{url!r} names no /app/stream")
    app, stream = segments[0], segments[1]
    if stream.endswith(".flv"):
        stream = stream[: -len(".flv")]
    StreamKey(app, stream)  # the names must be valid (InvalidStreamName, a ValueError)
    if style == "nms":
        added = {"sign": nms_sign(app, stream, expiry, secret)}
    elif style == "jwt":
        added = {"jwt": make_jwt(secret, app, stream, expiry, action)}
    else:
        raise ValueError(f"unknown signature style {style!r} (nms or jwt)")
    query = "&".join(part for part in (parts.query, urlencode(added)) if part)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


class SignedUrlAuthenticator:
    """Accepts a valid NMS ``sign`` or HS256 JWT for the guarded ``actions`` (module docstring).

    Args:
        secret: the shared secret.
        actions: the actions that need a signature (default both).
        nms, jwt: which formats are accepted.
        leeway: seconds of clock skew tolerated for a JWT's ``exp``.
        clock: the time in unix seconds (tests give their own).
    """

    def __init__(self, secret: str, *, actions: Iterable[str] = ("publish", "play"), nms: bool = True,
                 jwt: bool = True, leeway: float = 0.0, clock: Callable[[], float] = time.time) -> None:
        if not secret:
            raise ValueError("the signing secret must not be empty")
        self._secret = secret
        self.actions = frozenset(actions)
        self.nms = nms
        self.jwt = jwt
        self.leeway = leeway
        self._clock = clock

    async def authorize_publish(self, key: StreamKey, credentials: Credentials) -> None:
        self.check("publish", key, credentials)

    async def authorize_play(self, key: StreamKey, credentials: Credentials) -> None:
        self.check("play", key, credentials)

    def check(self, action: str, key: StreamKey, credentials: Credentials) -> None:
        """Return if ``credentials`` carry a valid signature for ``action`` on ``key``; raise
        ``Unauthorized`` saying why not."""
        if action not in self.actions:
            return
        query = credentials.query
        sign = query.get("sign") if self.nms else None
        token = (query.get("jwt") or credentials.bearer) if self.jwt else None
        if not sign and not token:
            raise Unauthorized(key.app, key.name, action, "no signature", missing=True)
        if sign:
            self._check_nms(action, key, sign)
        else:
            self._check_jwt(action, key, token or "")

    def _refuse(self, action: str, key: StreamKey, reason: str) -> Unauthorized:
        return Unauthorized(key.app, key.name, action, reason)

    def _check_nms(self, action: str, key: StreamKey, sign: str) -> None:
        expiry_text, sep, digest = sign[:MAX_SIGNATURE].partition("-")
        if not sep or not expiry_text.isdigit() or len(expiry_text) > 12 or len(digest) != 32:
            raise self._refuse(action, key, "malformed signature")
        expiry = int(expiry_text)
        if expiry < self._clock():
            raise self._refuse(action, key, "signature expired")
        expected = nms_sign(key.app, key.name, expiry, self._secret).partition("-")[2]
        if not hmac.compare_digest(digest.lower().encode(), expected.encode()):
            raise self._refuse(action, key, "wrong signature (or one made for another stream)")

    def _check_jwt(self, action: str, key: StreamKey, token: str) -> None:
        if len(token) > MAX_SIGNATURE:
            raise self._refuse(action, key, "malformed token")
        try:
            claims = jwt.decode(token, self._secret, algorithms=["HS256"], options={"require": ["exp"],
                                "verify_exp": False})
        except jwt.InvalidSignatureError:
            raise self._refuse(action, key, "wrong token signature") from None
        except jwt.PyJWTError:
            raise self._refuse(action, key, "malformed token") from None
        exp = claims.get("exp")
        if not isinstance(exp, (int, float)) or exp + self.leeway < self._clock():
            raise self._refuse(action, key, "token expired")
        if claims.get("app") not in (key.app, "*") or claims.get("stream") not in (key.name, "*"):
            raise self._refuse(action, key, "token is for another stream")
        allowed = claims.get("action", "*")
        allowed = [allowed] if isinstance(allowed, str) else allowed
        if not isinstance(allowed, list) or not ("*" in allowed or action in allowed):
            raise self._refuse(action, key, f"token does not allow {action}")
