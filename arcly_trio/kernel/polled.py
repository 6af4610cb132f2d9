"""Sessions of players that poll (HLS, DASH): a series of requests tied by an id, counted as a play.

An HLS or DASH player holds no connection: it asks for a playlist (or an MPD), then for segments
and for the playlist again, for as long as it plays. :class:`PolledSessions` ties those requests
into one session, so that such a player is authorized once, counted and listed like a
subscriber, and can be kicked:

* :meth:`PolledSessions.begin` starts a session once the egress has authorized a request
  (``engine.authorize``) that carried no live session id. Its id (from
  :meth:`~.sessions.SessionTable.new_id`: 96 random bits) is what the egress hands on in every
  URI it answers with, so the player's next requests carry it.
* :meth:`PolledSessions.resume` finds the session of a request that carries an id: it must be
  live, of the same stream (the key the client asked for) and from the same address. Otherwise
  the egress authorizes the request again, and :meth:`begin` continues the same id (a player
  that was idle too long, or whose address changed, keeps its URLs; an id that does not look
  like one of ours, or that names another kind of session, is never taken over). A session
  whose authorization expired (:attr:`PolledSession.valid_until`, set by the egress from the
  authenticator: a signed URL's expiry) is not found either, so its next request is
  authorized again.
* :meth:`PolledSessions.request` wraps each request of a session: a request in flight is
  activity, so a blocking playlist reload never times its session out.
* A session ends when it has had no request for its ``idle_timeout`` seconds
  (``EndReason.IDLE``, :meth:`run` ends them), when it is kicked (``KICKED``: its id is then
  refused, :meth:`was_kicked`), when a cap needs its place (``SESSION_LIMIT``, below) and when
  the engine stops (``SHUTDOWN``).

Each session is registered in the engine's :class:`~.sessions.SessionTable` (``/api/sessions``,
kicks, byte totals) and told to the observers and the application's event feed as a subscriber:
:class:`~.events.SubscriberJoined` when it begins, :class:`~.events.SubscriberLeft` (its reason
and bytes) when it ends; so the metrics, the audit log and the event hook count its play like
any other. :meth:`players` counts a stream's sessions per protocol (the API's ``subscribers``,
the metrics' ``arcly_subscribers``, the idle stop of pulls).

A client that reloads its entry URL without the id it was handed (ffmpeg's DASH demuxer reloads
the MPD at the URL it was given) is recognized by the id it gets back in another way (an HTTP
cookie): :meth:`rejoin` finds its session if it is live, of the same stream, protocol, address
and credentials, and its client has never presented the id in a playlist or MPD URL
(``joinable``). Players that do use the ids (every HLS player after the first playlist, dash.js
with the MPD's ``Location``) are never joined, so a second player of the same browser, which
sends the same cookie, gets a session of its own.

Limits (what a client that starts a session per request can make the server hold): at most
``max_per_address`` sessions per client address and ``max_sessions`` in all; past either, the
least recently active session (of that address, or of all) ends to make room, so players that
keep polling keep theirs and the table never grows past the caps. A session holds a fixed set
of small fields (its id, a 16-byte digest of the credentials, counters, keys). Kicked ids are
refused for ``kicked_ttl`` seconds (at most ``max_kicked`` of them remembered, the oldest
forgotten first).

Error policy: nothing here raises (an id that is not live gives ``None``); the observers are
failure-proof (:mod:`.observe`). Invalid limits given to the constructor raise ``ValueError``.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import attrs
import trio

from arcly_trio.core.keys import Credentials, StreamKey
from arcly_trio.kernel.events import StreamEvent, SubscriberJoined, SubscriberLeft
from arcly_trio.kernel.fanout import EndReason
from arcly_trio.kernel.sessions import ClientSession, SessionTable

__all__ = ["PolledSession", "PolledSessions", "SESSION_ID"]

log = logging.getLogger("arcly_trio.sessions")

SESSION_ID = re.compile(r"(?:w[0-9]{1,6}-)?[A-Za-z0-9_-]{16}")
"""What a session id looks like (:meth:`~.sessions.SessionTable.new_id`): only such ids are
continued by :meth:`PolledSessions.begin`."""


_TOUCH_GRANULARITY = 0.001
"""Seconds a request must last for its end to count as activity apart from its start: most
requests are answered at once, and moving the session in the recency orders twice per
request is half of what keeping a session costs a request."""


class PolledSession:
    """One polling player's session (see the module docstring); read-only outside
    :class:`PolledSessions`.

    Attributes:
        id: its id (also its ``client_id`` and its ``/api/sessions`` id).
        key: the stream the client asked for (the URIs it is handed name it).
        served: the stream it plays (``key``, or the authenticator's rename).
        protocol: ``"hls"`` or ``"dash"``.
        peer: the client's address of its latest authorization.
        digest: a digest of the credentials it was authorized with.
        bytes: what its requests were answered with (media and playlists).
        requests: how many requests it made.
        joinable: whether :meth:`PolledSessions.rejoin` may find it (its client never
            presented the id in a playlist or MPD URL).
    """

    __slots__ = (
        "id",
        "key",
        "served",
        "protocol",
        "peer",
        "digest",
        "idle_timeout",
        "subscriber_id",
        "last_active",
        "in_flight",
        "bytes",
        "requests",
        "joinable",
        "ended",
        "client",
        "valid_until",
    )

    def __init__(self, session_id: str, key: StreamKey, served: StreamKey, protocol: str,
                 peer: tuple[str, int] | None, digest: bytes, idle_timeout: float, subscriber_id: int,
                 now: float) -> None:  # fmt: skip
        self.id = session_id
        self.key = key
        self.served = served
        self.protocol = protocol
        self.peer = peer
        self.digest = digest
        self.idle_timeout = idle_timeout
        self.subscriber_id = subscriber_id
        self.last_active = now
        self.in_flight = 0
        self.bytes = 0
        self.requests = 0
        self.joinable = True
        self.ended = False
        self.client: ClientSession | None = None
        self.valid_until = math.inf
        """Wall-clock time (unix seconds) its authorization expires (a signed URL's or token's
        expiry): from then on :meth:`PolledSessions.resume` no longer finds it, so its next
        request is authorized again."""

    def __repr__(self) -> str:
        return f"<PolledSession {self.id} {self.protocol} {self.served}{' ended' if self.ended else ''}>"


def _address(peer: tuple[str, int] | None) -> str | None:
    return peer[0] if peer is not None else None


class PolledSessions:
    """The engine's polling players' sessions (see the module docstring).

    Args:
        table: the engine's session table (where they are listed and kicked).
        notify: tells an event to the observers and the application's feed.
        next_id: the engine's subscriber ids (the events' ``subscriber_id``).
        max_sessions: most sessions at once.
        max_per_address: most sessions of one client address at once.
        max_kicked: most kicked ids remembered.
        kicked_ttl: seconds a kicked id is refused.
    """

    def __init__(self, table: SessionTable, notify: Callable[[StreamEvent], None], next_id: Callable[[], int], *,
                 max_sessions: int = 16384, max_per_address: int = 1024, max_kicked: int = 4096,
                 kicked_ttl: float = 600.0) -> None:  # fmt: skip
        if max_sessions < 1 or max_per_address < 1 or max_kicked < 1:
            raise ValueError("the limits of polled sessions must be >= 1")
        self._table = table
        self._notify = notify
        self._next_id = next_id
        self.max_sessions = max_sessions
        self.max_per_address = max_per_address
        self.max_kicked = max_kicked
        self.kicked_ttl = kicked_ttl
        self.started_total = 0
        """Sessions begun (a session continued under its id after it ended counts again)."""
        self.limited_total = 0
        """Sessions ended to make room for a new one (``SESSION_LIMIT``)."""
        self._live: dict[str, PolledSession] = {}
        self._recent: OrderedDict[str, PolledSession] = OrderedDict()  # least recently active first
        self._by_address: dict[str | None, OrderedDict[str, PolledSession]] = {}
        self._by_timeout: dict[float, OrderedDict[str, PolledSession]] = {}
        self._players: dict[StreamKey, Counter[str]] = {}
        self._kicked: OrderedDict[str, float] = OrderedDict()  # id -> refused until, oldest first
        self._wake = trio.Event()

    # ------------------------------------------------------------------ lookups

    def __len__(self) -> int:
        return len(self._live)

    def __iter__(self) -> Iterator[PolledSession]:
        return iter(list(self._live.values()))

    def get(self, session_id: str) -> PolledSession | None:
        return self._live.get(session_id)

    def players(self, key: StreamKey) -> Mapping[str, int]:
        """The live sessions playing ``key``, per protocol."""
        return dict(self._players.get(key, ()))

    def resume(self, session_id: str, key: StreamKey, peer: tuple[str, int] | None) -> PolledSession | None:
        """The live session ``session_id`` if it was begun for ``key`` from ``peer``'s address;
        else ``None`` (the request is then authorized again)."""
        session = self._live.get(session_id)
        if session is None or session.key != key or _address(session.peer) != _address(peer):
            return None
        if session.valid_until <= time.time():
            return None  # its authorization expired: the request is authorized again
        return session

    def rejoin(self, session_id: str, key: StreamKey, peer: tuple[str, int] | None, protocol: str,
               digest: bytes) -> PolledSession | None:  # fmt: skip
        """The session of a request that came without the id in its URL but gave it back
        otherwise (see the module docstring), or ``None``."""
        session = self.resume(session_id, key, peer)
        if session is None or not session.joinable or session.protocol != protocol or session.digest != digest:
            return None
        return session

    def was_kicked(self, session_id: str) -> bool:
        """Whether ``session_id`` was kicked in the last ``kicked_ttl`` seconds."""
        until = self._kicked.get(session_id)
        if until is None:
            return False
        if trio.current_time() < until:
            return True
        del self._kicked[session_id]
        return False

    # ------------------------------------------------------------------ lifecycle

    def begin(self, key: StreamKey, served: StreamKey, protocol: str, credentials: Credentials, digest: bytes,
              idle_timeout: float, *, in_url: bool = False) -> PolledSession:  # fmt: skip
        """Begin a session for a request authorized to play ``served`` (asked for as ``key``)
        with ``credentials`` (the request that begins it counts as its first). Its id is
        ``credentials.client_id`` when that is an id of ours that no other kind of session has
        (a live session of that id and protocol moves to this request's address and stream),
        else a new one. ``in_url``: the request presented that id in a playlist or MPD URL."""
        if idle_timeout <= 0:
            raise ValueError("idle_timeout must be > 0")
        wanted = credentials.client_id
        current = self._live.get(wanted) if wanted else None
        if current is not None and current.protocol == protocol:
            self._move(current, key, served, credentials.peer, digest)
            current.requests += 1
            current.joinable = current.joinable and not in_url
            return current
        if not (wanted and current is None and SESSION_ID.fullmatch(wanted) and self._table.get(wanted) is None):
            wanted = self._table.new_id()
        address = _address(credentials.peer)
        self._make_room(address)
        now = trio.current_time()
        session = PolledSession(wanted, key, served, protocol, credentials.peer, digest, idle_timeout,
                                self._next_id(), now)  # fmt: skip
        session.requests = 1
        session.joinable = not (in_url and wanted == credentials.client_id)
        session.client = self._table.open("play", served, attrs.evolve(credentials, client_id=wanted), protocol,
                                          lambda: session.bytes, lambda: self._kick(session))  # fmt: skip
        self._live[wanted] = session
        self._recent[wanted] = session
        self._by_address.setdefault(address, OrderedDict())[wanted] = session
        self._by_timeout.setdefault(idle_timeout, OrderedDict())[wanted] = session
        self._players.setdefault(served, Counter())[protocol] += 1
        self.started_total += 1
        self._notify(SubscriberJoined(served, now, session.subscriber_id, protocol, credentials.peer, wanted))
        self._wake.set()
        return session

    def _move(self, session: PolledSession, key: StreamKey, served: StreamKey, peer: tuple[str, int] | None,
              digest: bytes) -> None:  # fmt: skip
        """Re-authorized from another address (or for another stream): the session goes on there."""
        old, new = _address(session.peer), _address(peer)
        if old != new:
            group = self._by_address.get(old)
            if group is not None:
                group.pop(session.id, None)
                if not group:
                    del self._by_address[old]
            self._make_room(new, one_more=False)  # the same number of sessions, one more at ``new``
            self._by_address.setdefault(new, OrderedDict())[session.id] = session
        if served != session.served:
            self._count(session.served, session.protocol, -1)
            self._count(served, session.protocol, +1)
        session.key, session.served, session.peer, session.digest = key, served, peer, digest
        if session.client is not None:
            session.client.peer = peer
            session.client.key = served
        self._touch(session)

    def enter(self, session: PolledSession, *, in_url: bool = False) -> None:
        """A request of ``session`` begins (activity); ``in_url``: a playlist or MPD request
        that presented the id in its URL. Every :meth:`enter` is followed by one :meth:`leave`
        (the HTTP worker's session lane calls both itself: see :meth:`request`)."""
        session.in_flight += 1
        session.requests += 1
        if in_url:
            session.joinable = False
        self._touch(session)

    def leave(self, session: PolledSession) -> None:
        """The request :meth:`enter` began has been answered (or failed)."""
        session.in_flight -= 1
        # Activity at the end too (a held reload may last seconds), unless the request took
        # less than the clock's granularity here: then its start was the same activity.
        if not session.ended and trio.current_time() - session.last_active >= _TOUCH_GRANULARITY:
            self._touch(session)

    @contextmanager
    def request(self, session: PolledSession, *, in_url: bool = False) -> Iterator[PolledSession]:
        """One request of ``session`` for the duration of the block (:meth:`enter` and
        :meth:`leave`)."""
        self.enter(session, in_url=in_url)
        try:
            yield session
        finally:
            self.leave(session)

    def end(self, session: PolledSession, reason: EndReason) -> None:
        """End ``session`` (a no-op if it has ended): unlisted, uncounted, told."""
        if session.ended:
            return
        session.ended = True
        sid = session.id
        del self._live[sid]
        self._recent.pop(sid, None)
        address = _address(session.peer)
        group = self._by_address.get(address)
        if group is not None:
            group.pop(sid, None)
            if not group:
                del self._by_address[address]
        timed = self._by_timeout.get(session.idle_timeout)
        if timed is not None:
            timed.pop(sid, None)
            if not timed:
                del self._by_timeout[session.idle_timeout]
        self._count(session.served, session.protocol, -1)
        if session.client is not None:
            self._table.close(session.client)
        self._notify(SubscriberLeft(session.served, trio.current_time(), session.subscriber_id, reason.value, 0,
                                    session.protocol, session.bytes, sid))  # fmt: skip

    def end_all(self, reason: EndReason) -> None:
        """End every session (the engine stops)."""
        for session in list(self._live.values()):
            self.end(session, reason)

    def expire(self) -> float:
        """End the sessions idle for their timeout; when the next one will be (``inf``: none)."""
        now = trio.current_time()
        due = math.inf
        for timeout, group in list(self._by_timeout.items()):
            while group:
                session = next(iter(group.values()))
                if session.last_active + timeout > now:
                    due = min(due, session.last_active + timeout)
                    break
                if session.in_flight:
                    self._touch(session)  # a request being served is activity: not due yet
                else:
                    self.end(session, EndReason.IDLE)
        return due

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """End idle sessions as they fall due, until cancelled; then end every session (the
        engine runs this)."""
        task_status.started()
        try:
            while True:
                self._wake = trio.Event()
                due = self.expire()
                with trio.move_on_at(due):
                    await self._wake.wait()
        finally:
            self.end_all(EndReason.SHUTDOWN)

    # ------------------------------------------------------------------ internals

    def _touch(self, session: PolledSession) -> None:
        session.last_active = trio.current_time()
        sid = session.id
        self._recent.move_to_end(sid)
        group = self._by_address.get(_address(session.peer))
        if group is not None and sid in group:
            group.move_to_end(sid)
        self._by_timeout[session.idle_timeout].move_to_end(sid)

    def _count(self, key: StreamKey, protocol: str, change: int) -> None:
        counts = self._players.setdefault(key, Counter())
        counts[protocol] += change
        if counts[protocol] <= 0:
            del counts[protocol]
        if not counts:
            del self._players[key]

    def _make_room(self, address: str | None, *, one_more: bool = True) -> None:
        """End the least recently active sessions a new one of ``address`` needs the place of
        (``one_more``: a new session, which needs a place in all too)."""
        group = self._by_address.get(address)
        if group is not None and len(group) >= self.max_per_address:
            self._limit(next(iter(group.values())), f"{address} has {len(group)}")
        if one_more and len(self._live) >= self.max_sessions:
            self._limit(next(iter(self._recent.values())), f"the server has {len(self._live)}")

    def _limit(self, session: PolledSession, why: str) -> None:
        self.limited_total += 1
        if self.limited_total == 1 or self.limited_total % 1000 == 0:
            log.warning(
                "%s polling sessions (HLS, DASH), its cap: the least recently active one ends to make room (%d so far)",
                why,
                self.limited_total,
            )
        self.end(session, EndReason.SESSION_LIMIT)

    def _kick(self, session: PolledSession) -> None:
        kicked = self._kicked
        now = trio.current_time()
        while kicked and (len(kicked) >= self.max_kicked or next(iter(kicked.values())) <= now):
            kicked.popitem(last=False)
        kicked[session.id] = now + self.kicked_ttl
        self.end(session, EndReason.KICKED)
