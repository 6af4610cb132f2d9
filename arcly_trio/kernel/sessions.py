"""Client sessions: every publish and every play a client holds, with an id, and kicking one.

The engine gives each ``publish``, ``subscribe`` and ``attach`` a *client id* before it asks the
authenticator (so an HTTP hook is told which client asks, and the id in ``/api/sessions`` is the
one the hook saw), and registers a :class:`ClientSession` here for as long as the publish or
play lasts. No protocol worker has to do anything: every publisher and player of every protocol
(RTMP, RTMPS, HTTP-FLV, WebSocket-FLV, the frame API, relays) goes through those three calls.
HLS and DASH players make requests, not connections: their sessions are a series of requests tied
by an id (see :mod:`.polled`), registered here with :meth:`SessionTable.open` and
:meth:`SessionTable.close` and listed and kicked like the others.

What a session shows: its id, role (``publish`` or ``play``), protocol, client address, stream,
start time (wall clock) and bytes: the media payload bytes the publisher sent or the player was
given (protocol framing and TLS not counted). :meth:`SessionTable.kick` ends one: a publisher's
session ends with :class:`~arcly_trio.core.errors.PublisherKicked` (RTMP publishers are told
``NetStream.Unpublish.Success`` and disconnected), a player's subscription ends with
``EndReason.KICKED`` (its protocol says goodbye as for an ended stream and closes). Kicked
sessions are reported to the observers (:class:`~.events.SessionKicked`).

Byte totals per protocol survive the sessions (:meth:`SessionTable.bytes_by_protocol`: closed
sessions' bytes plus the live ones'), for monotonic metrics; what an egress serves outside any
session (an HLS segment requested without a session id) is added with :meth:`SessionTable.count`.

Ids are ``{prefix}{random}``: 16 URL-safe characters from :func:`secrets.token_urlsafe` (96
bits), so an id seen nowhere cannot be guessed (to kick a session, or to recognise one in a
hook's log); the workers of ``--workers N`` use the prefix ``w{index}-`` so that any worker can
tell which one holds a session.

Error policy: nothing raises; kicking an unknown id returns ``None``.
"""

from __future__ import annotations

import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import attrs

from arcly_trio.core.keys import Credentials, StreamKey

__all__ = ["ClientSession", "SessionTable"]


@attrs.define(eq=False, slots=True)
class ClientSession:
    """One client's publish or play (see the module docstring)."""

    id: str
    role: str
    """``"publish"`` or ``"play"``."""
    key: StreamKey
    protocol: str
    peer: tuple[str, int] | None
    started_at: float
    """Wall-clock seconds (``time.time()``) when it started."""
    _bytes: Callable[[], int]
    _kick: Callable[[], None]

    @property
    def bytes(self) -> int:
        """Media payload bytes published (role ``publish``) or given (``play``) so far."""
        return self._bytes()

    def document(self) -> dict[str, Any]:
        """The session as ``/api/sessions`` lists it."""
        address, port = self.peer if self.peer is not None else (None, None)
        return {
            "id": self.id,
            "role": self.role,
            "protocol": self.protocol,
            "address": address,
            "port": port,
            "app": self.key.app,
            "stream": self.key.name,
            "key": str(self.key),
            "bytes": self.bytes,
            "started_at": round(self.started_at, 3),
        }


class SessionTable:
    """The engine's live client sessions and its byte totals (see the module docstring)."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self._live: dict[str, ClientSession] = {}
        self._closed: Counter[tuple[str, str]] = Counter()
        self.kicked = 0
        """Sessions ended by :meth:`kick`."""

    def new_id(self) -> str:
        """A new client id: the prefix and 96 random bits (see the module docstring)."""
        while True:
            candidate = f"{self.prefix}{secrets.token_urlsafe(12)}"
            if candidate not in self._live:
                return candidate

    def identify(self, credentials: Credentials) -> Credentials:
        """``credentials`` with a client id (a new one unless it has one)."""
        if credentials.client_id:
            return credentials
        return attrs.evolve(credentials, client_id=self.new_id())

    @contextmanager
    def holding(
        self,
        role: str,
        key: StreamKey,
        credentials: Credentials,
        protocol: str,
        bytes_: Callable[[], int],
        kick: Callable[[], None],
    ) -> Iterator[ClientSession]:
        """Register a session for the duration of the block."""
        session = self.open(role, key, credentials, protocol, bytes_, kick)
        try:
            yield session
        finally:
            self._close(session)

    def open(
        self,
        role: str,
        key: StreamKey,
        credentials: Credentials,
        protocol: str,
        bytes_: Callable[[], int],
        kick: Callable[[], None],
    ) -> ClientSession:
        """Register a session until :meth:`close` (for sessions that are no block of code: the
        polling players of :mod:`.polled`). Its id is ``credentials.client_id``, which must not
        be another live session's (a new one if it is empty)."""
        session = ClientSession(
            credentials.client_id or self.new_id(), role, key, protocol, credentials.peer, time.time(), bytes_, kick
        )
        self._live[session.id] = session
        return session

    def close(self, session: ClientSession) -> None:
        """Unregister ``session`` (its bytes go to the totals); a no-op if it is not live."""
        self._close(session)

    def _close(self, session: ClientSession) -> None:
        if self._live.get(session.id) is session:
            del self._live[session.id]
            self.count(session.role, session.protocol, session.bytes)

    def count(self, role: str, protocol: str, size: int) -> None:
        """Add ``size`` bytes to the totals of ``role`` (``"publish"``: ingress, ``"play"``:
        egress) over ``protocol`` (for request-served egress such as HLS)."""
        if size:
            self._closed[(role, protocol)] += size

    def __iter__(self) -> Iterator[ClientSession]:
        return iter(list(self._live.values()))

    def __len__(self) -> int:
        return len(self._live)

    def get(self, session_id: str) -> ClientSession | None:
        return self._live.get(session_id)

    def kick(self, session_id: str) -> ClientSession | None:
        """End session ``session_id`` (see the module docstring); the session, or ``None``."""
        session = self._live.get(session_id)
        if session is None:
            return None
        self.kicked += 1
        session._kick()
        self._close(session)  # it is over: not listed (nor kicked) again
        return session

    def bytes_by_protocol(self) -> dict[tuple[str, str], int]:
        """Bytes of every session ever, by ``(role, protocol)``: closed plus live."""
        totals = Counter(self._closed)
        for session in self._live.values():
            totals[(session.role, session.protocol)] += session.bytes
        return dict(totals)
