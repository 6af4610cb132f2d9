"""Signed, expiring URLs: Node-Media-Server's ``?sign=`` and HS256 JSON Web Tokens.

A signed URL names what it allows, and allows only that: a viewer's URL never publishes.

Node-Media-Server's format: ``?sign=EXPIRY-HASH`` where ``EXPIRY`` is a time in unix seconds
(``[0-9]{1,12}``) and ``HASH`` is ``md5("/{app}/{stream}-{EXPIRY}-{SECRET}")`` in lower-case hex.
The path is in the hash, so a signature made for one stream is refused for every other one (a
URL "replayed across streams"); the expiry is in the hash too, so it cannot be pushed back. The
action is not in the hash, so the form says it by its secret: made with ``secret`` it is a
**play** signature (what Node-Media-Server's tools make: compatible for viewers); made with
``publish_secret`` (a second, different secret) it is a **publish** signature. Without a
``publish_secret`` no ``?sign=`` publishes.

JWT: ``?jwt=TOKEN`` or an ``Authorization: Bearer TOKEN`` header (HTTP), signed with HS256 and
``secret`` (PyJWT). Its claims say what it allows: ``exp`` (required), ``app`` and ``stream`` (the
stream it is for; ``"*"`` for any), and ``action`` (required: ``"publish"``, ``"play"``, a list of
them, or ``"*"`` written out; a token without it is refused, ``token names no action``).

:class:`SignedUrlAuthenticator` accepts either; ``actions`` says which actions need one (an
action it does not guard is allowed). :func:`nms_sign`, :func:`sign_url` and :func:`make_jwt`
make them (``arcly-trio sign`` prints them for operators; a play URL by default).

Clock: the wall clock (``time.time``), as the signatures carry unix times; ``leeway`` seconds of
clock skew are tolerated for JWTs.

Error policy: every refusal is an :class:`~arcly_trio.core.errors.Unauthorized` whose reason
says what was wrong (``no signature``, ``malformed signature``, ``signature expired``, ``wrong
signature``, ``token is for another stream``, ``token names no action``...) and is marked
``missing`` when the client presented nothing; nothing else is raised (and the engine would
refuse anything else, see :meth:`~arcly_trio.kernel.engine.Engine.authorize`). Secrets are
compared in constant time and never logged. The constructors and :func:`sign_url` raise
``ValueError`` for unusable arguments (an empty secret, equal play and publish secrets, a
``?sign=`` asked for an action it cannot carry).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Callable, Iterable
from urllib.parse import urlencode, urlsplit, urlunsplit

import jwt

from arcly_trio.core.errors import Unauthorized
from arcly_trio.core.keys import Credentials, StreamKey

__all__ = ["SignedUrlAuthenticator", "nms_sign", "sign_url", "make_jwt", "MAX_SIGNATURE"]

MAX_SIGNATURE = 4096
"""The longest ``sign`` or JWT looked at (longer ones are refused before any parsing)."""

_NMS = re.compile(r"([0-9]{1,12})-([0-9A-Fa-f]{32})", re.ASCII)
"""A well-formed ``sign``: an ASCII expiry of 1-12 digits, a dash, 32 hex digits."""


def nms_sign(app: str, stream: str, expiry: int, secret: str) -> str:
    """Node-Media-Server's ``sign`` value for ``/app/stream`` valid until ``expiry`` (unix s)."""
    digest = hashlib.md5(f"/{app}/{stream}-{expiry}-{secret}".encode()).hexdigest()  # noqa: S324 - NMS's format
    return f"{expiry}-{digest}"


def make_jwt(secret: str, app: str, stream: str, expiry: int, action: str | list[str] = "play") -> str:
    """An HS256 JWT for ``action`` (``"play"``, ``"publish"``, a list, or ``"*"`` for any) on
    ``app/stream`` (``"*"`` for any), valid until ``expiry``."""
    return jwt.encode({"app": app, "stream": stream, "action": action, "exp": int(expiry)}, secret, algorithm="HS256")


def sign_url(
    url: str,
    secret: str | None,
    expiry: int,
    *,
    style: str = "nms",
    action: str = "play",
    publish_secret: str | None = None,
) -> str:
    """``url`` (``rtmp://host/app/stream``, ``http://host/app/stream.flv``, ``.../index.m3u8``...)
    with ``sign=`` (``style="nms"``) or ``jwt=`` (``style="jwt"``) added to its query, valid for
    ``action`` only.

    ``style="jwt"`` signs with ``secret`` and names ``action`` in the token. ``style="nms"``
    makes a play signature with ``secret``, or (``action="publish"``) a publish signature with
    ``publish_secret``; it carries no other action. The app and stream are the first two path
    segments (a ``.flv`` suffix dropped). Raises ``ValueError`` when the URL has no
    ``/app/stream`` path, a needed secret is missing, or the style cannot carry the action.
    """
    parts = urlsplit(url)
    segments = [segment for segment in parts.path.split("/") if segment]
    if len(segments) < 2:
        raise ValueError(f"{url!r} names no /app/stream")
    app, stream = segments[0], segments[1]
    if stream.endswith(".flv"):
        stream = stream[: -len(".flv")]
    StreamKey(app, stream)  # the names must be valid (InvalidStreamName, a ValueError)
    if action not in ("play", "publish", "*"):
        raise ValueError(f"unknown action {action!r} (play, publish or *)")
    if style == "nms":
        if action == "play":
            signing = secret
        elif action == "publish":
            signing = publish_secret
            if not signing:
                raise ValueError(
                    "a ?sign= for publishing needs the publish signing secret (--publish-sign-secret); or make a JWT"
                )
        else:
            raise ValueError(
                "a ?sign= is valid for one action (play, or publish with the publish signing "
                "secret); make a JWT for both"
            )
        if not signing:
            raise ValueError("the signing secret is missing")
        added = {"sign": nms_sign(app, stream, expiry, signing)}
    elif style == "jwt":
        if not secret:
            raise ValueError("the signing secret is missing")
        added = {"jwt": make_jwt(secret, app, stream, expiry, action)}
    else:
        raise ValueError(f"unknown signature style {style!r} (nms or jwt)")
    query = "&".join(part for part in (parts.query, urlencode(added)) if part)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


class SignedUrlAuthenticator:
    """Accepts a valid NMS ``sign`` or HS256 JWT for the guarded ``actions`` (module docstring);
    each signature for its own action only.

    Args:
        secret: the shared secret (JWTs; NMS play signatures).
        publish_secret: the secret of NMS publish signatures (``None``: no ``?sign=``
            publishes; a JWT naming ``publish`` still does). Must differ from ``secret``.
        actions: the actions that need a signature (default both).
        nms, jwt: which formats are accepted.
        leeway: seconds of clock skew tolerated for a JWT's ``exp``.
        clock: the time in unix seconds (tests give their own).
    """

    def __init__(
        self,
        secret: str,
        *,
        publish_secret: str | None = None,
        actions: Iterable[str] = ("publish", "play"),
        nms: bool = True,
        jwt: bool = True,
        leeway: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not secret:
            raise ValueError("the signing secret must not be empty")
        if publish_secret is not None and not publish_secret:
            raise ValueError("the publish signing secret must not be empty")
        if publish_secret is not None and hmac.compare_digest(publish_secret.encode(), secret.encode()):
            raise ValueError(
                "the publish signing secret must differ from the signing secret "
                "(else every viewer's ?sign= would publish)"
            )
        self._secret = secret
        self._publish_secret = publish_secret
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
        if not token:
            self._check_nms(action, key, sign or "")
        elif not sign:
            self._check_jwt(action, key, token)
        else:  # both: either will do (a viewer's ?sign= left on a streamer's URL)
            try:
                self._check_nms(action, key, sign)
            except Unauthorized as nms_refusal:
                try:
                    self._check_jwt(action, key, token)
                except Unauthorized as jwt_refusal:
                    raise self._refuse(action, key, f"{nms_refusal.reason}; {jwt_refusal.reason}") from None

    def valid_until(self, action: str, key: StreamKey, credentials: Credentials) -> float | None:
        """Until when (unix seconds) the signature that authorizes ``credentials`` stays valid,
        ``None`` if ``action`` needs none: what a decision reused for later requests (an HLS
        player's session, :mod:`arcly_trio.kernel.polled`) must not outlive. The latest of the
        valid signatures presented; ``0.0`` if none is valid now."""
        if action not in self.actions:
            return None
        query = credentials.query
        sign = query.get("sign") if self.nms else None
        token = (query.get("jwt") or credentials.bearer) if self.jwt else None
        until = 0.0
        if sign:
            try:
                self._check_nms(action, key, sign)
                until = float(int(sign.partition("-")[0]))
            except Unauthorized:
                pass
        if token:
            try:
                self._check_jwt(action, key, token)
                claims = jwt.decode(token, self._secret, algorithms=["HS256"], options={"verify_exp": False})
                until = max(until, float(claims["exp"]) + self.leeway)
            except Unauthorized:
                pass
        return until

    def _refuse(self, action: str, key: StreamKey, reason: str) -> Unauthorized:
        return Unauthorized(key.app, key.name, action, reason)

    def _check_nms(self, action: str, key: StreamKey, sign: str) -> None:
        found = _NMS.fullmatch(sign[: MAX_SIGNATURE + 1])
        if found is None:
            raise self._refuse(action, key, "malformed signature")
        secret = self._secret if action == "play" else self._publish_secret
        if secret is None:
            raise self._refuse(action, key, f"a ?sign= does not allow {action} (use a token that names {action})")
        expiry_text, digest = found.groups()
        expiry = int(expiry_text)
        if expiry < self._clock():
            raise self._refuse(action, key, "signature expired")
        expected = nms_sign(key.app, key.name, expiry, secret).partition("-")[2]
        if not hmac.compare_digest(digest.lower().encode(), expected.encode()):
            raise self._refuse(action, key, f"wrong signature (or one made for another stream, or not for {action})")

    def _check_jwt(self, action: str, key: StreamKey, token: str) -> None:
        if len(token) > MAX_SIGNATURE:
            raise self._refuse(action, key, "malformed token")
        try:
            claims = jwt.decode(
                token, self._secret, algorithms=["HS256"], options={"require": ["exp"], "verify_exp": False}
            )
        except jwt.InvalidSignatureError:
            raise self._refuse(action, key, "wrong token signature") from None
        except jwt.PyJWTError:
            raise self._refuse(action, key, "malformed token") from None
        exp = claims.get("exp")
        if not isinstance(exp, (int, float)) or isinstance(exp, bool) or exp + self.leeway < self._clock():
            raise self._refuse(action, key, "token expired")
        if claims.get("app") not in (key.app, "*") or claims.get("stream") not in (key.name, "*"):
            raise self._refuse(action, key, "token is for another stream")
        if "action" not in claims:
            raise self._refuse(action, key, "token names no action")
        allowed = claims["action"]
        allowed = [allowed] if isinstance(allowed, str) else allowed
        if not isinstance(allowed, list) or not ("*" in allowed or action in allowed):
            raise self._refuse(action, key, f"token does not allow {action}")
