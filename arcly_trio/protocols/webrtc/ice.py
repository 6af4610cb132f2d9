"""The ICE-lite agent of one WebRTC session (RFC 8445 sections 2.5 and 7.3, RFC 7675 consent).

The server is ICE-lite (issue 22): it announces host candidates in its SDP answer and never
sends a connectivity check; it only answers the peer's Binding requests. One
:class:`IceLiteAgent` per session (WHIP publisher or WHEP viewer) checks a request's short-term
credential and answers it:

* the ``USERNAME`` must be ``"<local ufrag>:<remote ufrag>"`` (the receiver's fragment first,
  RFC 8445 section 7.2.2), ``MESSAGE-INTEGRITY`` must be the HMAC-SHA1 keyed with the local
  password, and ``FINGERPRINT``, when present, must check (browsers send it; ffmpeg 8's WHIP
  muxer too; ``PRIORITY`` is optional because ffmpeg omits it);
* the answer is :func:`~arcly_trio.protocols.webrtc.stun.binding_success`-like: the same
  transaction id, ``XOR-MAPPED-ADDRESS`` of the source, ``MESSAGE-INTEGRITY`` and, when the
  request had one, ``FINGERPRINT``;
* nomination: the first valid request selects its source (aggressive nomination, and ffmpeg,
  which sends ``USE-CANDIDATE`` on every check anyway); a later request with ``USE-CANDIDATE``
  moves :attr:`IceLiteAgent.selected` to its source (the controlling peer's regular
  nomination, or a NAT rebinding). Media goes to :attr:`IceLiteAgent.selected`;
* consent freshness (RFC 7675): browsers send a check on the selected pair every few seconds;
  :meth:`IceLiteAgent.consent_expired` says when none came for ``consent_timeout`` seconds
  (counted from the agent's creation until a pair is selected, so a session that never
  connects expires too).

:func:`local_ufrag` reads the routing key (our fragment) out of a request before any session is
known; :func:`new_credentials` makes a fresh ufrag and password.

Attacker's view: the agent holds a fixed amount of state whatever is sent (two counters, one
address, one time); nothing is kept per request. A request that fails a check gets no answer
(counted in :attr:`IceLiteAgent.rejected`), so an off-path sender learns nothing and cannot use
the server as a reflector; an answer is never larger than the request that got it (one that
would be, a short IPv6 request without ``FINGERPRINT``, is not answered). The HMAC is computed
only after the username matched this session.

Error policy: nothing here raises for peer input: a message that does not pass is answered with
``None``. :func:`new_credentials` and the constructor raise ``ValueError`` for credentials ICE
does not allow (a ufrag under 4 characters or a password under 22), a mistake of the caller.
"""

from __future__ import annotations

import secrets
import string
from typing import Final

from arcly_trio.protocols.webrtc.stun import (
    BINDING,
    FINGERPRINT,
    REQUEST,
    SUCCESS,
    USE_CANDIDATE,
    XOR_MAPPED_ADDRESS,
    StunMessage,
    build_stun,
    xor_address,
)

__all__ = ["IceLiteAgent", "local_ufrag", "new_credentials", "UFRAG_LENGTH", "PWD_LENGTH"]

UFRAG_LENGTH: Final = 8
"""Characters in a ufrag made by :func:`new_credentials` (ICE asks for at least 4)."""
PWD_LENGTH: Final = 24
"""Characters in a password made by :func:`new_credentials` (ICE asks for at least 22)."""
_ICE_CHARS: Final = string.ascii_letters + string.digits  # ice-char is ALPHA / DIGIT / "+" / "/"


def local_ufrag(message: StunMessage) -> str | None:
    """Our fragment in a request's ``USERNAME`` (the part before ``:``): the key that routes a
    datagram to its session. ``None`` without a username or a ``:`` in it."""
    username = message.username
    if username is None:
        return None
    ours, colon, _ = username.partition(":")
    return ours if colon and ours else None


def new_credentials() -> tuple[str, str]:
    """A random ``(ufrag, pwd)`` of :data:`UFRAG_LENGTH` and :data:`PWD_LENGTH` ICE characters
    (letters and digits: about 143 bits in the password)."""
    ufrag = "".join(secrets.choice(_ICE_CHARS) for _ in range(UFRAG_LENGTH))
    pwd = "".join(secrets.choice(_ICE_CHARS) for _ in range(PWD_LENGTH))
    return ufrag, pwd


class IceLiteAgent:
    """Answers the Binding requests of one session's peer and tracks the selected address.

    ``requests`` counts the Binding requests handed to :meth:`receive`; ``rejected`` those not
    answered (wrong username, failed integrity or fingerprint, not a Binding request)."""

    def __init__(
        self,
        local_ufrag: str,
        local_pwd: str,
        remote_ufrag: str,
        *,
        consent_timeout: float = 30.0,
        now: float,
    ) -> None:
        if len(local_ufrag) < 4 or len(local_pwd) < 22 or ":" in local_ufrag:
            raise ValueError("an ICE ufrag is at least 4 characters without ':', a password at least 22")
        self._username = f"{local_ufrag}:{remote_ufrag}"
        self._key = local_pwd.encode()
        self._consent_timeout = consent_timeout
        self._fresh = now
        self.selected: tuple[str, int] | None = None
        self.requests = 0
        self.rejected = 0

    def receive(self, message: StunMessage, source: tuple[str, int], now: float) -> bytes | None:
        """The answer to ``message`` from ``source`` (bytes to send back to it), or ``None``
        when it is not a valid Binding request for this session (see the module docstring)."""
        if message.method != BINDING or message.cls != REQUEST:
            self.rejected += 1
            return None
        self.requests += 1
        if message.username != self._username or not message.integrity_ok(self._key):
            self.rejected += 1
            return None
        with_fingerprint = message.has(FINGERPRINT)
        if with_fingerprint and not message.fingerprint_ok():
            self.rejected += 1
            return None
        if not 0 <= source[1] <= 0xFFFF:
            self.rejected += 1
            return None
        try:
            mapped = xor_address(source[0], source[1], message.transaction_id)
            answer = build_stun(
                BINDING,
                SUCCESS,
                message.transaction_id,
                [(XOR_MAPPED_ADDRESS, mapped)],
                integrity_key=self._key,
                fingerprint=with_fingerprint,
            )
        except ValueError:  # a source that is not an IP address
            self.rejected += 1
            return None
        if len(answer) > len(message.raw):
            self.rejected += 1
            return None
        if self.selected is None or message.has(USE_CANDIDATE):
            self.selected = source
        if source == self.selected:
            self._fresh = now
        return answer

    def consent_expired(self, now: float) -> bool:
        """Whether no valid request came from the selected address (or, before one is selected,
        none at all since the agent was made) for ``consent_timeout`` seconds."""
        return now - self._fresh >= self._consent_timeout
