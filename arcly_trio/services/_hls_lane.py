"""Quick answers for a live HLS session's hot requests: its media playlist reloads and its parts.

The HTTP worker's session lane (:mod:`arcly_trio.workers.http.lane`) asks these answerers first
for a plain ``GET``/``HEAD`` of an HLS route (see :mod:`arcly_trio.protocols.http.quick`). An
answerer takes a request only when it can serve it exactly as the route's handler
(:mod:`.hls_routes`) would: the same status, headers and bytes, the same session accounting
(:meth:`~arcly_trio.kernel.polled.PolledSessions.enter` / ``leave``, the bytes counted in the
session), the same waits (a blocking reload until the playlist holds the part, within three
target durations, then ``503``; a preload-hinted part or a coming segment until it exists).
What it takes:

* the query is exactly ``arcly_session=ID`` with, for a media playlist, ``_HLS_msn`` and
  ``_HLS_part`` (each name once, values of letters, digits, ``-`` and ``_``: nothing to decode);
* the id names a live session of this stream and client address whose authorization has not
  expired (``valid_until``), an ``hls`` one for a playlist: what :func:`.hls_routes._resumed`
  requires, so a kicked, ended or expired session, or another address, goes to the handler
  (``410``, authorized again...);
* the storage answers synchronously (the default :class:`~arcly_trio.storage.MemoryStorage`,
  as long as it is the service's: a DVR window wraps it in one on disk);
  the engine has no stream sources to ask (``locate``); the stream is not unavailable; a
  non-blocking playlist is stored already (no first-list wait).

Everything else (``_HLS_skip``, a token in the query, a request ahead of the live edge, an
MPD, the entry playlist of a new session) is declined, and the handler answers it.

Error policy: an answerer never raises for what a client sent; it declines.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import trio

from arcly_trio.core.errors import RemoteProtocolError
from arcly_trio.media import dash, llhls
from arcly_trio.protocols.http.quick import QuickAnswer, QuickAnswerer
from arcly_trio.services import hls_routes
from arcly_trio.storage import InvalidStorageKey, MemoryStorage

if TYPE_CHECKING:
    from arcly_trio.core.frame import FrameKind
    from arcly_trio.kernel.polled import PolledSession, PolledSessions
    from arcly_trio.services._hls_cmaf import LiveCmaf
    from arcly_trio.services.hls_routes import HlsRoutesHost

__all__ = ["answerers"]

_PAIR = re.compile(rb"(arcly_session|_HLS_msn|_HLS_part)=([A-Za-z0-9_-]{1,64})")
_SESSION = hls_routes.SESSION_PARAMETER
_PLAYLIST_HEADERS = (("cache-control", "no-cache"),)
_RETRY = (("retry-after", "1"),)
_ERROR_TYPE = "text/plain; charset=utf-8"


def _fields(query: bytes, playlist: bool) -> dict[str, str] | None:
    """The query's fields, or ``None`` unless it is one of the plain forms taken (see the
    module docstring): then ``parse_qsl`` would give the same, and nothing else is in it."""
    fields: dict[str, str] = {}
    for pair in query.split(b"&"):
        found = _PAIR.fullmatch(pair)
        if found is None:
            return None
        name = found.group(1).decode()
        if name in fields or (not playlist and name != _SESSION):
            return None
        fields[name] = found.group(2).decode()
    return fields if _SESSION in fields else None


def _session(engine: Any, fields: Mapping[str, str], params: Mapping[str, str], peer: tuple[str, int] | None,
             protocol: str | None) -> PolledSession | None:  # fmt: skip
    """The live session the request presents, if the handler would resume it as it is
    (:func:`.hls_routes._resumed`); ``protocol``: the one a playlist's session must have."""
    session = engine.polled.get(fields[_SESSION])
    if session is None or session.ended or (protocol is not None and session.protocol != protocol):
        return None
    if session.valid_until <= time.time():
        return None
    requested = session.key
    if params.get("app") != requested.app or params.get("stream") != requested.name:
        return None
    if (session.peer[0] if session.peer is not None else None) != (peer[0] if peer is not None else None):
        return None
    return session


def _error(status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> QuickAnswer:
    """What ``exchange.error`` answers."""
    return QuickAnswer(status, _ERROR_TYPE, headers, (message + "\n").encode())


class _Job:
    """One request of a session on the lane (see :class:`~arcly_trio.protocols.http.quick.QuickJob`)."""

    __slots__ = ("_polled", "_session", "_in_url", "_live", "deadline", "_ready", "_finish")

    def __init__(self, polled: PolledSessions, session: PolledSession, in_url: bool, live: LiveCmaf | None,
                 deadline: float, ready: Callable[[], QuickAnswer | bool],
                 finish: Callable[[bool], QuickAnswer]) -> None:  # fmt: skip
        self._polled = polled
        self._session = session
        self._in_url = in_url
        self._live = live
        self.deadline = deadline
        """When a wait for the answer ends (then ``answer(final=True)``)."""
        self._ready = ready
        """Whether it can be answered now (or an answer that ends it at once)."""
        self._finish = finish
        """The answer once ready (``True``: after a wait that did not end in time)."""

    def begin(self) -> None:
        self._polled.enter(self._session, in_url=self._in_url)

    def end(self) -> None:
        self._polled.leave(self._session)

    def answer(self, final: bool = False) -> QuickAnswer | None:
        if final:
            return self._finish(True)
        ready = self._ready()
        if ready is True:
            return self._finish(False)
        return ready if isinstance(ready, QuickAnswer) else None

    @property
    def source(self) -> LiveCmaf | None:
        """What the answer waits on (its ``wait(deadline)`` returns at its next change)."""
        return self._live

    async def wait(self) -> bool:
        live = self._live
        return live is not None and await live.wait(self.deadline)


def answerers(service: HlsRoutesHost) -> dict[str, QuickAnswerer]:
    """The quick answerers of the HLS routes, by the name :func:`.hls_routes.install` knows
    them by (``video.m3u8``, ``audio.m3u8``, ``index.m3u8``, ``segment``); none when the
    storage cannot answer synchronously."""
    storage = service.storage
    if not isinstance(storage, MemoryStorage):
        return {}
    quick: dict[str, QuickAnswerer] = {
        name: _playlist_answerer(service, storage, name) for name in ("index.m3u8", "video.m3u8", "audio.m3u8")
    }
    quick["segment"] = _segment_answerer(service, storage)
    return quick


def _playlist_answerer(service: HlsRoutesHost, storage: MemoryStorage, name: str) -> QuickAnswerer:
    kind = hls_routes.RENDITIONS.get(name)

    def quick(engine: Any, params: Mapping[str, str], query: bytes, peer: tuple[str, int] | None) -> _Job | None:
        fields = _fields(query, True)
        if fields is None or service.storage is not storage or (service.locate and engine.sources):
            return None
        session = _session(engine, fields, params, peer, hls_routes.PROTOCOL)
        if session is None:
            return None
        key = session.served
        if service.unavailable(key) is not None:
            return None
        directives = None
        if kind is not None:
            try:
                directives = llhls.parse_directives(fields)
            except RemoteProtocolError:
                return None
        base = f"{key.app}/{key.name}"
        live = service.live.get(base)
        query_text = f"{_SESSION}={session.id}"

        def finish(timed_out: bool) -> QuickAnswer:
            if timed_out and not (live is not None and live.ended):
                return _error(503, "the requested segment or part did not come in time", _RETRY)
            data = storage.get_now(service.playlist_key(key.app, key.name, name))
            if data is None:
                return _error(404, f"no HLS playlist for {key} ({name}): not published, or nothing is ready yet")
            packaging = service.streams.get(base)
            cut = packaging.pieces.get(name) if packaging is not None else None
            data = hls_routes.with_query(data, query_text, cut.get(data) if cut is not None else None)
            session.bytes += len(data)
            return QuickAnswer(200, hls_routes.PLAYLIST_TYPE, _PLAYLIST_HEADERS, data)

        if kind is not None and directives is not None and live is not None and live.low_latency:
            msn, part = directives
            rendition: FrameKind = kind
            if llhls.reload_state(live.packager, rendition, msn, part) is llhls.ReloadState.TOO_FAR:
                return None  # the handler's 400

            def ready() -> QuickAnswer | bool:
                state = llhls.reload_state(live.packager, rendition, msn, part)
                if state is llhls.ReloadState.READY and live.current:
                    return True
                if state is llhls.ReloadState.TOO_FAR:
                    return _error(400, f"_HLS_msn={msn} _HLS_part={part} is too far ahead of the live edge")
                return False

            deadline = trio.current_time() + hls_routes.block_timeout(service, live)
            return _Job(engine.polled, session, True, live, deadline, ready, finish)
        if key in engine.sourcing.active:
            return None  # the handler tells the pull it has a viewer waiting (its first-list wait)
        stream = engine.stream(key) if engine.has_stream(key) else None
        if service.list_state(stream, name) is not hls_routes.ListState.READY:
            return None  # the handler's first-list wait (or 404)
        return _Job(engine.polled, session, True, None, math.inf, _always, finish)

    return quick


def _always() -> bool:
    return True


def _segment_answerer(service: HlsRoutesHost, storage: MemoryStorage) -> QuickAnswerer:
    def quick(engine: Any, params: Mapping[str, str], query: bytes, peer: tuple[str, int] | None) -> _Job | None:
        segment = dash.resolve(params["segment"])
        found = hls_routes.SEGMENT_NAME.fullmatch(segment)
        if found is None:
            return None
        fields = _fields(query, False)
        if fields is None or service.storage is not storage:
            return None
        session = _session(engine, fields, params, peer, None)
        if session is None:
            return None
        key = session.served
        content_type = hls_routes.CONTENT_TYPES[found.group(1)]

        def finish(timed_out: bool) -> QuickAnswer:
            try:
                data = storage.get_now(f"{key.app}/{key.name}/{segment}")
            except InvalidStorageKey:
                data = None
            if data is None:
                return _error(404, f"no HLS segment {segment} for {key} (expired, or never made)")
            session.bytes += len(data)
            return QuickAnswer(200, content_type, hls_routes.SEGMENT_HEADERS, data)

        live = service.live.get(f"{key.app}/{key.name}")
        if live is not None and hls_routes.hinted(live, segment):
            deadline = trio.current_time() + 3 * math.ceil(live.packager.part_duration * 1000) / 1000
            waiting: Callable[[LiveCmaf, str], bool] | None = hls_routes.hinted
        elif live is not None and hls_routes.coming(live, segment):
            deadline = trio.current_time() + hls_routes.block_timeout(service, live)
            waiting = hls_routes.coming
        else:
            return _Job(engine.polled, session, False, None, math.inf, _always, finish)
        assert live is not None and waiting is not None

        def ready() -> bool:
            return not waiting(live, segment)

        return _Job(engine.polled, session, False, live, deadline, ready, finish)

    return quick
