"""HLS and DASH over HTTP: what the HLS service stored, behind authorization, with players' sessions.

Installed on the HTTP worker's router by :meth:`~arcly_trio.services.hls.HlsService.install_routes`:

* ``GET /{app}/{stream}/index.m3u8``: the entry playlist (the multivariant playlist of the
  ``fmp4`` and ``ll`` variants; for ``ts``, a one-variant multivariant playlist naming the
  MPEG-TS media playlist, which is ``index.m3u8`` with a session id: see *Sessions*);
* ``GET /{app}/{stream}/video.m3u8`` and ``audio.m3u8``: the CMAF media playlists;
* ``GET /{app}/{stream}/index.mpd``: the DASH MPD of the CMAF variants (the same segments);
* ``GET /{app}/{stream}/{name}``: segments (``.ts``, ``.m4s``), parts (``.m4s``) and init
  segments (``.mp4``); the MPD may name a rendition's segments with offset numbers
  (``{prefix}a3-12.m4s`` is ``{prefix}a-15.m4s``, see :func:`arcly_trio.media.dash.resolve`).

Packaging happens once per stream in the service; these routes only read its storage (and, for
blocking requests, its in-memory model), so any number of viewers costs one storage read per
request.

Sessions: an HLS or DASH player is one session (protocol ``hls`` or ``dash``, see
:mod:`arcly_trio.kernel.polled`), authorized once and then counted like a subscriber (the API's
``subscribers``, the metrics, ``play-start``/``play-end`` in the audit log and the event hook),
listed in ``/api/sessions`` and kicked like one. A playlist or MPD request without a live
session id is authorized (``engine.authorize("play", ...)``, with the request's ``?token=`` and
query) and begins a session; every URI the answer names carries the request's query (less the
``_HLS_`` directives) and ``arcly_session=ID``, so the player's next requests present the id and
are served without being authorized again. For the MPEG-TS variant, whose entry playlist is the
media playlist players reload, the first answer is a multivariant playlist with that one
variant, ``index.m3u8?...&arcly_session=ID``; a live MPD names its own URL with the id in its
``Location``, where players reload it from. The answer to a request without the id in its URL
also sets the cookie ``arcly_session`` (path ``/{app}/{stream}/``): a client that reloads the
MPD at the URL it was first given (ffmpeg) presents it back and stays in its session, as long as
it never presented the id in a URL itself.

A session id is bound to the stream and the client's address; a request whose id is not live
(the player was idle for the session timeout, or its address changed, or the cap ended it) is
authorized again and continues under the same id. The decision is reused only while it holds:
when the authenticator says until when (``valid_until``: a signed URL's or JWT's expiry,
:class:`~arcly_trio.ops.signing.SignedUrlAuthenticator`), the session's next request after
then is authorized again, with what it presents (an expired signature: ``403``). A request of a
live session is resumed by dictionary lookups only (:func:`_resumed`): no name validation,
application lookup or query encoding, so the route's own work per part is a few lookups and
one storage read of the stored bytes. A kicked session's id is answered ``410``.
A segment request without a live id is authorized on its own and counted in no session. A
session ends after :attr:`~arcly_trio.services.hls.HlsService.session_timeout` seconds without
a request (a request being served is activity).

Streams that are starting: a playlist or MPD request for a stream that is live here and
packaged by the service, whose packaging has not stored that list yet (the stream was just
published, or a pull brought it), waits for it, up to the service's ``first_list_timeout``
(then ``503`` with ``Retry-After``); it is never answered with what the storage holds under that
name meanwhile, an earlier stream's final list (``#EXT-X-ENDLIST``, or a static MPD).

Blocking playlist reload (``ll`` variant, RFC 8216bis 6.2.5.2): a media playlist request with
``_HLS_msn`` (and ``_HLS_part``) is answered once the playlist holds that segment (or part), or
at once when it does already or the stream ended; it waits on the stream's one condition
(:class:`~arcly_trio.services._hls_cmaf.LiveCmaf`), with no task of its own, and answers ``503``
after three target durations without it. A request more than two segments, or more parts than the
Advance Part Limit, ahead gets ``400`` at once, as do malformed directives, ``_HLS_part``
without ``_HLS_msn`` and an ``_HLS_skip`` other than ``YES`` or ``v2``.

Delta updates (RFC 8216bis 6.2.5.1): a media playlist request with ``_HLS_skip=YES`` (or ``v2``;
with or without ``_HLS_msn``) is answered with the playlist's delta update where the packaging
stores one (the ``ll`` variant with a DVR window, whose playlist advertises ``CAN-SKIP-UNTIL``),
rendered once per change like the playlist; elsewhere with the full playlist, as the spec asks of
a server that cannot skip. A request for the part an ``EXT-X-PRELOAD-HINT`` names waits for it the
same way (``404`` if it does not come within three part targets), and so does a request for a
CMAF segment that is being written or comes next (DASH players ask for the segment after the last
one the MPD lists as soon as they have read it; ffmpeg skips to the next number on a ``404``):
it is answered once the segment is complete (``404`` if it does not come within three target
durations; further ahead, ``404`` at once). A waiting request is a request
being served: it holds a busy connection slot (the HTTP worker's admission) and counts in the
engine's ``activity``, so connection limits and graceful shutdown see it; when the stream ends
every waiter is answered with the final playlist.

On demand: when the engine has stream sources (a pull relay, a cluster), a playlist or MPD
request for a stream that is not here asks them for it once authorized (``engine.locate``), so
HLS and DASH viewers start pulls like other viewers do; their sessions keep the pull alive.

A rename by the authenticator (an HTTP hook's redirect) serves the stream it names: the
playlist's relative URIs keep naming the requested path, and each of their requests is served
from the session's stream (or renamed the same way).

Errors: ``400`` with the reason for an invalid application or stream name (and one log line);
``404`` with a message when the application is unknown, has no HLS, or the stream has no
such playlist, MPD or segment (saying why when the stream is live but its application's variant
can carry none of its tracks: AV1 or VP9 with Opus in MPEG-TS...); ``403`` for a refused play (``401`` when the
client presented no
credential at all); ``410`` for a kicked session's id; ``503`` for a starting stream's list that
did not come in time; names other than
``<letters, digits, '-', '_'>[.<part>].(ts|m4s|mp4)`` are refused with ``404``, and storage
keys are checked again by the storage.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlencode

import attrs
import trio

from arcly_trio.core.errors import AppNotFound, InvalidStreamName, RemoteProtocolError, StreamError, Unauthorized
from arcly_trio.core.frame import FrameKind
from arcly_trio.core.keys import Credentials, StreamKey
from arcly_trio.kernel.polled import SESSION_ID, PolledSession
from arcly_trio.media import dash, llhls
from arcly_trio.protocols.http.quick import QuickAnswerer
from arcly_trio.protocols.http.router import HttpRequest, Responder, Router
from arcly_trio.services._hls_cmaf import delta_name
from arcly_trio.services._hls_dvr import query_pieces
from arcly_trio.services._hls_lists import ListState
from arcly_trio.services._hls_ts import PLAYLIST as TS_PLAYLIST
from arcly_trio.services._hls_ts import TsPackaging
from arcly_trio.storage import InvalidStorageKey, StorageError, StorageNotFound

if TYPE_CHECKING:
    from arcly_trio.kernel.spec import AppSpec
    from arcly_trio.kernel.stream import Stream
    from arcly_trio.services._hls_base import Packaging
    from arcly_trio.services._hls_cmaf import LiveCmaf
    from arcly_trio.storage import Storage

__all__ = ["install", "HlsRoutesHost", "SESSION_PARAMETER", "SESSION_COOKIE"]

log = logging.getLogger("arcly_trio.http")

SEGMENT_NAME = re.compile(r"[A-Za-z0-9_-]{1,128}(?:\.[0-9]{1,6})?\.(ts|m4s|mp4)")
CONTENT_TYPES = {"ts": "video/mp2t", "m4s": "video/iso.segment", "mp4": "video/mp4"}
SEGMENT_HEADERS = (("cache-control", "max-age=60"),)
RENDITIONS = {"video.m3u8": FrameKind.VIDEO, "audio.m3u8": FrameKind.AUDIO}
PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
PROTOCOL = "hls"
SESSION_PARAMETER = "arcly_session"
"""The query parameter that carries a player's session id in the URIs it is handed."""
SESSION_COOKIE = "arcly_session"
"""The cookie that gives the session id back for clients that reload without it."""
_COOKIE_BYTES = 4096


class HlsRoutesHost(Protocol):
    """What the routes use of the service they serve (:class:`~.hls.HlsService` is the one)."""

    storage: Storage
    streams: dict[str, Packaging]
    live: dict[str, LiveCmaf]
    locate: bool
    target_duration: float
    first_list_timeout: float

    def applies_to(self, spec: AppSpec) -> bool: ...

    def list_state(self, stream: Stream | None, name: str) -> ListState: ...

    def playlist_key(self, app: str, stream: str, name: str = ...) -> str: ...

    def segment_key(self, app: str, stream: str, name: str) -> str: ...

    def session_timeout_for(self, key: StreamKey) -> float: ...

    def unavailable(self, key: StreamKey) -> str | None: ...

    async def wait_lists(self, deadline: float) -> bool: ...


def install(service: HlsRoutesHost, router: Router, quick: Mapping[str, QuickAnswerer] | None = None) -> None:
    """Add the routes; ``quick``: their quick answerers by playlist name and ``segment`` (see
    :mod:`._hls_lane`)."""
    quick = quick or {}

    async def entry(request: HttpRequest, exchange: Responder) -> None:
        await serve_playlist(service, request, exchange, "index.m3u8")

    async def video(request: HttpRequest, exchange: Responder) -> None:
        await serve_playlist(service, request, exchange, "video.m3u8")

    async def audio(request: HttpRequest, exchange: Responder) -> None:
        await serve_playlist(service, request, exchange, "audio.m3u8")

    async def mpd(request: HttpRequest, exchange: Responder) -> None:
        await serve_mpd(service, request, exchange)

    async def segment(request: HttpRequest, exchange: Responder) -> None:
        await serve_segment(service, request, exchange)

    router.get("/{app}/{stream}/index.m3u8", entry, quick=quick.get("index.m3u8"))
    router.get("/{app}/{stream}/video.m3u8", video, quick=quick.get("video.m3u8"))
    router.get("/{app}/{stream}/audio.m3u8", audio, quick=quick.get("audio.m3u8"))
    router.get("/{app}/{stream}/index.mpd", mpd)
    router.get("/{app}/{stream}/{segment}", segment, quick=quick.get("segment"))


@attrs.define(slots=True)
class _Access:
    """What a request may be served: ``key`` (the stream), in ``session`` (``None``: a segment
    request outside any session, or a session that :meth:`begin` starts once the request is
    answered); ``in_url``: its URL presented the session's id; ``query``: what the URIs of its
    answer carry."""

    key: StreamKey
    requested: StreamKey
    session: PolledSession | None
    in_url: bool
    query: str
    carried: str = ""
    """The request's query as it is handed on, without the session id."""
    given: str = ""
    """The session id the request's URL presented (if it looks like one)."""
    pending: tuple[Credentials, bytes, float, float] | None = None
    """The authorized credentials, their digest, the idle timeout of the session to begin and
    when its authorization expires (wall clock: :func:`_valid_until`)."""

    def begin(self, polled: Any) -> None:
        """Begin the pending session, if any, once its first answer is about to be a ``200``
        (a request that fails begins none)."""
        if self.pending is None:
            return
        credentials, digest, timeout, valid_until = self.pending
        self.pending = None
        self.session = polled.begin(self.requested, self.key, credentials.protocol, credentials, digest, timeout,
                                    in_url=bool(self.given))  # fmt: skip
        self.session.valid_until = valid_until
        self.in_url = self.session.id == self.given
        self.query = _with_session(self.carried, self.session)

    def cookie(self) -> list[tuple[str, str]]:
        """The ``Set-Cookie`` header of an answer that began (or rejoined) a session for a
        request without the id in its URL."""
        if self.session is None or self.in_url:
            return []
        path = f"/{self.requested.app}/{self.requested.name}/"
        return [("set-cookie", f"{SESSION_COOKIE}={self.session.id}; Path={path}; HttpOnly; SameSite=Lax")]


def _peer(request: HttpRequest) -> str:
    return f"{request.peer[0]}:{request.peer[1]}" if request.peer is not None else "?"


def _presented(request: HttpRequest) -> dict[str, str]:
    """The request's query as credentials (without the session id and the directives)."""
    return {k: v for k, v in request.query.items() if k != SESSION_PARAMETER and not k.startswith("_HLS_")}


def _digest(query: dict[str, str], bearer: str | None) -> bytes:
    """16 bytes that tell whether two requests presented the same credentials."""
    text = repr((sorted(query.items()), bearer))
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def _cookie(request: HttpRequest) -> str:
    """The session id the ``Cookie`` header gives back, or ``""``."""
    value = request.header("cookie") or ""
    if len(value) > _COOKIE_BYTES:
        return ""
    for part in value.split(";"):
        name, _, found = part.strip().partition("=")
        if name == SESSION_COOKIE and SESSION_ID.fullmatch(found):
            return found
    return ""


async def _admit(service: HlsRoutesHost, request: HttpRequest, exchange: Responder, protocol: str, *,
                 entry: bool) -> _Access | None:  # fmt: skip
    """What this request may be served (see the module docstring); otherwise answered and
    ``None``. ``entry``: a playlist or MPD request (which begins sessions)."""
    resumed = _resumed(request, exchange, protocol, entry=entry)
    if resumed is not None:
        return resumed
    try:
        requested = StreamKey(request.params["app"], request.params["stream"])
    except InvalidStreamName as exc:
        log.info("http %s refused: %s", _peer(request), exc)  # the name is escaped (repr)
        await exchange.error(400, str(exc))
        return None
    try:
        app = exchange.engine.application(requested.app)
    except AppNotFound as exc:
        await exchange.error(404, str(exc))
        return None
    if not service.applies_to(app.spec):
        await exchange.error(404, f"HLS is not enabled for application {requested.app!r}")
        return None
    engine = exchange.engine
    polled = engine.polled
    given = request.query.get(SESSION_PARAMETER, "")
    if not SESSION_ID.fullmatch(given):
        given = ""  # not one of ours: as if there were none
    presented = _presented(request)
    carried = urlencode(presented)
    access = _Access(requested, requested, None, False, carried, carried, given)
    if given:
        if polled.was_kicked(given):
            await exchange.error(410, "this session was ended by the server's operator")
            return None
        session = polled.resume(given, requested, request.peer)
        if session is not None and (not entry or session.protocol == protocol):
            return attrs.evolve(
                access, key=session.served, session=session, in_url=True, query=_with_session(carried, session)
            )
    digest = _digest(presented, request.bearer)
    if entry and not given:
        cookie = _cookie(request)
        session = polled.rejoin(cookie, requested, request.peer, protocol, digest) if cookie else None
        if session is not None:
            return attrs.evolve(access, key=session.served, session=session, query=_with_session(carried, session))
    if not entry and not given:  # a segment outside any session: authorized on its own
        key = await _authorized(service, request, exchange, requested, request.credentials(protocol))
        return None if key is None else attrs.evolve(access, key=key)
    # The session's id (the one presented, continued, or a new one) is the hook's client_id.
    credentials = engine.sessions.identify(attrs.evolve(request.credentials(protocol), query=presented,
                                                        client_id=given))  # fmt: skip
    key = await _authorized(service, request, exchange, requested, credentials)
    if key is None:
        return None
    if not entry:  # an id that is not live: the segment is served, its playlist continues the session
        return attrs.evolve(access, key=key)
    until = _valid_until(exchange.engine, requested, credentials)
    return attrs.evolve(access, key=key, pending=(credentials, digest, service.session_timeout_for(key), until))


def _valid_until(engine: Any, key: StreamKey, credentials: Credentials) -> float:
    """Until when (unix seconds) the decision that authorized ``credentials`` to play ``key``
    holds: the authenticator's ``valid_until`` if it has one (a signed URL's or token's expiry,
    :class:`~arcly_trio.ops.signing.SignedUrlAuthenticator`), else for as long as the session
    lives. A session is resumed only until then; its next request is authorized again."""
    check = getattr(engine.authenticator, "valid_until", None)
    until = None if check is None else check("play", key, credentials)
    return math.inf if until is None else float(until)


def _resumed(request: HttpRequest, exchange: Responder, protocol: str, *, entry: bool) -> _Access | None:
    """The access of a request of a live session, found by dictionary lookups only (``None``:
    take the full path of :func:`_admit`). The session was authorized when it began and is
    live, so it was not kicked (a kick ends it) nor idle, and its key was checked then: the
    same answer :func:`_admit` gives, without validating the names, finding the application
    or encoding the query again. A segment's answer names no URI, so its access carries no
    query."""
    given = request.query.get(SESSION_PARAMETER)
    if not given:
        return None
    session = exchange.engine.polled.get(given)
    if session is None or session.ended or (entry and session.protocol != protocol):
        return None
    if session.valid_until <= time.time():  # its authorization expired: authorized again
        return None
    params = request.params
    requested = session.key
    if params.get("app") != requested.app or params.get("stream") != requested.name:
        return None
    if _address(session.peer) != _address(request.peer):
        return None
    if not entry:
        return _Access(session.served, requested, session, True, "", "", given)
    presented = _presented(request)
    if not presented:  # a player's usual reload: the id (and directives) only; ids need no escaping
        return _Access(session.served, requested, session, True, f"{SESSION_PARAMETER}={given}", "", given)
    carried = urlencode(presented)
    return _Access(session.served, requested, session, True, _with_session(carried, session), carried, given)


def _address(peer: tuple[str, int] | None) -> str | None:
    return peer[0] if peer is not None else None


async def _authorized(service: HlsRoutesHost, request: HttpRequest, exchange: Responder, requested: StreamKey,
                      credentials: Credentials) -> StreamKey | None:  # fmt: skip
    """The stream ``credentials`` may play (``requested`` or the authenticator's rename), or
    answered and ``None``."""
    try:
        renamed = await exchange.engine.authorize("play", requested, credentials)
    except Unauthorized as exc:
        await exchange.error(exc.http_status, str(exc))
        return None
    if renamed.app != requested.app:
        try:
            enabled = service.applies_to(exchange.engine.application(renamed.app).spec)
        except AppNotFound as exc:
            await exchange.error(404, str(exc))
            return None
        if not enabled:
            await exchange.error(404, f"HLS is not enabled for application {renamed.app!r}")
            return None
    return renamed


def _with_session(carried: str, session: PolledSession) -> str:
    session_part = urlencode({SESSION_PARAMETER: session.id})
    return f"{carried}&{session_part}" if carried else session_part


async def _read(service: HlsRoutesHost, exchange: Responder | None, key: str, missing: str) -> bytes | None:
    """The stored object, or ``None`` (answered with ``404``/``500`` when ``exchange`` is given)."""
    try:
        return await service.storage.get(key)
    except (StorageNotFound, InvalidStorageKey):
        if exchange is not None:
            await exchange.error(404, missing)
    except StorageError as exc:
        log.error("HLS storage failed to read %s: %s", key, exc)
        if exchange is not None:
            await exchange.error(500, "storage error")
    return None


def with_query(playlist: bytes, query: str, pieces: list[bytes] | None = None) -> bytes:
    """Every URI of ``playlist`` (URI lines and ``URI="..."`` attributes) with ``?query``;
    ``pieces``: the playlist already cut there (a DVR window's: :class:`~._hls_dvr.QueryPieces`)."""
    return (b"?" + query.encode()).join(query_pieces(playlist) if pieces is None else pieces)


async def _locate(service: HlsRoutesHost, request: HttpRequest, exchange: Responder, key: StreamKey) -> None:
    """Bring ``key`` here if a stream source can (a pull, the cluster) and it is not here."""
    engine = exchange.engine
    if service.locate and engine.sources:
        try:
            await engine.locate(key, peer=request.peer)
        except StreamError:
            pass  # nothing brings it: what the storage has (or a 404)


async def _first_list(service: HlsRoutesHost, exchange: Responder, key: StreamKey, name: str) -> bool:
    """Wait until the packaging of ``key``, if it is live and packaged here, has stored
    ``name`` (see :meth:`~arcly_trio.services.hls.HlsService.list_state`); ``False`` once
    answered: ``404`` when it will not, ``503`` when it did not within ``first_list_timeout``."""
    engine = exchange.engine
    deadline = trio.current_time() + service.first_list_timeout
    with engine.sourcing.demand(key):  # a pull that brought it waits for this viewer
        while True:
            state = service.list_state(engine.stream(key) if engine.has_stream(key) else None, name)
            if state is ListState.READY:
                return True
            if state is ListState.NONE:
                await exchange.error(404, f"{key} has no {name} (not in its HLS variant, or no such track)")
                return False
            if not await service.wait_lists(deadline):
                await exchange.error(
                    503, f"{key} is starting: its {name} is not ready yet", headers=[("retry-after", "1")]
                )
                return False


async def serve_playlist(service: HlsRoutesHost, request: HttpRequest, exchange: Responder, name: str) -> None:
    access = await _admit(service, request, exchange, PROTOCOL, entry=True)
    if access is None:
        return
    session, polled = access.session, exchange.engine.polled  # the request of a session (if any)
    if session is not None:
        polled.enter(session, in_url=access.in_url)
    try:
        await _serve_playlist(service, request, exchange, name, access)
    finally:
        if session is not None:
            polled.leave(session)


async def _serve_playlist(service: HlsRoutesHost, request: HttpRequest, exchange: Responder, name: str,
                          access: _Access) -> None:  # fmt: skip
    key = access.key
    await _locate(service, request, exchange, key)
    reason = service.unavailable(key)
    if reason is not None:
        await exchange.error(404, f"no HLS for {key}: {reason}")
        return
    kind = RENDITIONS.get(name)
    directives = None
    skip = False
    if kind is not None:
        try:
            directives = llhls.parse_directives(request.query)
            skip = llhls.parse_skip(request.query)
        except RemoteProtocolError as exc:
            await exchange.error(400, str(exc))
            return
    live = service.live.get(f"{key.app}/{key.name}")
    if kind is not None and directives is not None and live is not None and live.low_latency:
        if not await _block(service, live, kind, *directives, exchange):  # it waits for the list too
            return
    elif not await _first_list(service, exchange, key, name):
        return
    packaging = service.streams.get(f"{key.app}/{key.name}")
    if (
        name == TS_PLAYLIST
        and not access.given
        and (access.session or access.pending) is not None
        and isinstance(packaging, TsPackaging)
        and TS_PLAYLIST in packaging.lists
    ):
        # MPEG-TS: players reload the media playlist, so they are given it with the session id.
        access.begin(exchange.engine.polled)
        data = packaging.entry_playlist(f"{TS_PLAYLIST}?{access.query}").encode()
    else:
        stored = name
        data = None
        if skip:  # the delta update, where the packaging makes one (a DVR window); else the playlist
            stored = delta_name(name)
            data = await _read(service, None, service.playlist_key(key.app, key.name, stored), "")
        if data is None:
            stored = name
            data = await _read(
                service,
                exchange,
                service.playlist_key(key.app, key.name, name),
                f"no HLS playlist for {key} ({name}): not published, or nothing is ready yet",
            )
        if data is None:
            return
        access.begin(exchange.engine.polled)
        if access.query:
            cut = packaging.pieces.get(stored) if packaging is not None else None
            data = with_query(data, access.query, cut.get(data) if cut is not None else None)
    _served(exchange, access, data)
    await exchange.respond(
        200, data, content_type=PLAYLIST_TYPE, headers=[("cache-control", "no-cache"), *access.cookie()]
    )


def block_timeout(service: HlsRoutesHost, live: LiveCmaf) -> float:
    return 3 * max(live.packager.playlist_target_duration, service.target_duration)


async def _block(service: HlsRoutesHost, live: LiveCmaf, kind: FrameKind, msn: int, part: int | None,
                 exchange: Responder) -> bool:  # fmt: skip
    """Hold a blocking reload until the playlist can answer it; ``False`` once answered with
    an error."""
    deadline = trio.current_time() + block_timeout(service, live)
    while True:
        state = llhls.reload_state(live.packager, kind, msn, part)
        if state is llhls.ReloadState.READY and live.current:
            return True
        elif state is llhls.ReloadState.TOO_FAR:
            await exchange.error(400, f"_HLS_msn={msn} _HLS_part={part} is too far ahead of the live edge")
            return False
        if not await live.wait(deadline):
            if live.ended:
                return True
            await exchange.error(
                503, "the requested segment or part did not come in time", headers=[("retry-after", "1")]
            )
            return False


async def serve_mpd(service: HlsRoutesHost, request: HttpRequest, exchange: Responder) -> None:
    access = await _admit(service, request, exchange, "dash", entry=True)
    if access is None:
        return
    session, polled = access.session, exchange.engine.polled
    if session is not None:
        polled.enter(session, in_url=access.in_url)
    try:
        await _serve_mpd(service, request, exchange, access)
    finally:
        if session is not None:
            polled.leave(session)


async def _serve_mpd(service: HlsRoutesHost, request: HttpRequest, exchange: Responder, access: _Access) -> None:
    key = access.key
    await _locate(service, request, exchange, key)
    reason = service.unavailable(key)
    if reason is not None:
        await exchange.error(404, f"no DASH for {key}: {reason}")
        return
    if not await _first_list(service, exchange, key, "index.mpd"):
        return
    data = await _read(
        service,
        exchange,
        service.playlist_key(key.app, key.name, "index.mpd"),
        f"no DASH MPD for {key}: not published, not packaged as CMAF, or no segment is ready yet",
    )
    if data is None:
        return
    access.begin(exchange.engine.polled)
    location = f"index.mpd?{access.query}" if access.session is not None else None
    data = dash.finalize(data, time.time(), access.query, location)
    _served(exchange, access, data)
    await exchange.respond(
        200, data, content_type="application/dash+xml", headers=[("cache-control", "no-cache"), *access.cookie()]
    )


async def serve_segment(service: HlsRoutesHost, request: HttpRequest, exchange: Responder) -> None:
    segment = dash.resolve(request.params["segment"])  # a DASH name with offset numbers
    found = SEGMENT_NAME.fullmatch(segment)
    if not found:
        await exchange.error(404, f"not found: {request.path}")
        return
    access = await _admit(service, request, exchange, PROTOCOL, entry=False)
    if access is None:
        return
    session, polled = access.session, exchange.engine.polled
    if session is not None:
        polled.enter(session)
    try:
        await _serve_segment(service, exchange, segment, found.group(1), access)
    finally:
        if session is not None:
            polled.leave(session)


async def _serve_segment(service: HlsRoutesHost, exchange: Responder, segment: str, extension: str,
                         access: _Access) -> None:  # fmt: skip
    key = access.key
    live = service.live.get(f"{key.app}/{key.name}")
    if live is not None and hinted(live, segment):
        # A preload-hinted part: answer as soon as it exists (RFC 8216bis 6.2.6).
        deadline = trio.current_time() + 3 * math.ceil(live.packager.part_duration * 1000) / 1000
        while hinted(live, segment) and await live.wait(deadline):
            pass
    elif live is not None and coming(live, segment):
        # The segment being written, or the next one: answer once it is complete (DASH players
        # such as ffmpeg's ask for the segment after the last listed one before it exists, and
        # skip ahead on a 404), within the blocking-reload bound.
        deadline = trio.current_time() + block_timeout(service, live)
        while coming(live, segment) and await live.wait(deadline):
            pass
    storage_key = f"{key.app}/{key.name}/{segment}"  # the storage checks it (once)
    try:
        data = await service.storage.get(storage_key)
    except (StorageNotFound, InvalidStorageKey):  # the message is made only for a miss
        await exchange.error(404, f"no HLS segment {segment} for {key} (expired, or never made)")
        return
    except StorageError as exc:
        log.error("HLS storage failed to read %s: %s", storage_key, exc)
        await exchange.error(500, "storage error")
        return
    _served(exchange, access, data)
    await exchange.respond(200, data, content_type=CONTENT_TYPES[extension], headers=SEGMENT_HEADERS)


def _served(exchange: Responder, access: _Access, data: bytes) -> None:
    """Count what a request is answered with: in its session (its bytes, which go to the
    engine's egress totals when it ends), or in the egress totals at once (metrics)."""
    session = access.session
    if session is not None:
        session.bytes += len(data)
    else:
        exchange.engine.sessions.count("play", PROTOCOL, len(data))


_CMAF_SEGMENT = re.compile(r"(?P<prefix>[A-Za-z0-9_-]*)(?P<letter>[vam])-(?P<sequence>[0-9]{1,12})\.m4s")


def coming(live: LiveCmaf, name: str) -> bool:
    """Whether ``name`` is a segment of the stream's packaging that does not exist yet but
    will soon: the one being written or the next (or the stored lists lag the packager)."""
    found = _CMAF_SEGMENT.fullmatch(name)
    packager = live.packager
    if found is None or found.group("prefix") != packager.name_prefix or live.ended:
        return False
    sequence = int(found.group("sequence"))
    if sequence > packager.next_sequence:
        return False  # further ahead than the next segment: 404 at once
    letter = found.group("letter")
    rendition = next((r for r in packager.playlists.values() if r.letter == letter), None)
    if rendition is not None and rendition.segments and rendition.segments[-1].sequence >= sequence:
        return not live.current  # complete: answer once its lists are stored
    upcoming = packager.open_sequence if packager.open_sequence is not None else packager.next_sequence
    return sequence >= upcoming


def hinted(live: LiveCmaf, name: str) -> bool:
    """Whether ``name`` is a part the stored lists hint at (or the packager holds but has not
    stored yet)."""
    renditions = live.packager.playlists.values()
    return not live.current or any(rendition.hint == name for rendition in renditions)
