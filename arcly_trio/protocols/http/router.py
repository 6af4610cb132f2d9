"""Requests, request targets and a small router for the HTTP worker (sans-IO, no trio).

:func:`parse_target` turns an HTTP request target into a decoded path and query, refusing
anything that could walk out of a namespace (``..`` or ``.`` segments, backslashes, control
characters, invalid UTF-8 once percent-decoded). :class:`Router` maps a method and a path to a
handler with ``{name}`` placeholders (each matches one non-empty path segment; a placeholder
may be followed by a literal suffix, as in ``/{app}/{stream}.flv``). WebSocket routes are kept
apart from plain ones, so the same path can serve HTTP-FLV and WebSocket-FLV. Later features (a
player page, more WebSocket routes) add routes here; nothing else changes.

Error policy: :func:`parse_target` raises :class:`BadRequest` (a ``RemoteProtocolError``
that carries the HTTP status to answer with); the router itself never raises at match time.
Registering a malformed pattern raises ``ValueError``.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any, Protocol
from urllib.parse import parse_qsl, unquote, urlsplit

import attrs

from arcly_trio.core.errors import InvalidStreamName, RemoteProtocolError
from arcly_trio.core.keys import Credentials, StreamKey
from arcly_trio.protocols.http.quick import QuickAnswerer

__all__ = ["BadRequest", "HttpRequest", "Handler", "Responder", "Route", "Router", "parse_target", "wants_websocket"]

_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f\\]")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_MEMO_SIZE = 1024
_MEMO_PATH = 256
_UNKNOWN: Any = object()


class BadRequest(RemoteProtocolError):
    """The request cannot be served as sent; answer with ``status`` (400 by default) and the
    extra response ``headers``."""

    def __init__(self, message: str, status: int = 400, headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers


def parse_target(target: str) -> tuple[str, dict[str, str]]:
    """Split a request target into its percent-decoded path and its query parameters.

    Accepts origin-form (``/a/b?x=1``) and absolute-form (``http://host/a/b``). The path must
    start with ``/``; after decoding it must not hold ``.`` or ``..`` segments, backslashes,
    control characters or invalid UTF-8 (all :class:`BadRequest`). Query values are decoded;
    a repeated name keeps its last value.
    """
    if target.startswith(("http://", "https://")):
        parts = urlsplit(target)
        raw_path, raw_query = parts.path or "/", parts.query
    else:
        raw_path, _, raw_query = target.partition("?")
        raw_path = raw_path.partition("#")[0]
    if not raw_path.startswith("/"):
        raise BadRequest(f"request target {target[:100]!r} is not an absolute path")
    try:
        path = unquote(raw_path, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise BadRequest("the request path is not valid UTF-8 once decoded") from None
    if _FORBIDDEN.search(path):
        raise BadRequest("the request path holds a backslash or a control character")
    if any(segment in (".", "..") for segment in path.split("/")):
        raise BadRequest("path traversal ('.' or '..' segments) is not allowed")
    try:
        query = dict(parse_qsl(raw_query, keep_blank_values=True, errors="strict"))
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("the query string is not valid UTF-8 once decoded") from None
    return path, query


def _tokens(headers: Iterable[tuple[str, str]], name: str) -> set[str]:
    return {
        token.strip().lower() for key, value in headers if key == name for token in value.split(",") if token.strip()
    }


def wants_websocket(headers: Iterable[tuple[str, str]]) -> bool:
    """Whether request ``headers`` (lower-case names) open a WebSocket: ``Upgrade: websocket``
    and ``Connection: upgrade`` (:attr:`HttpRequest.wants_websocket`)."""
    return "websocket" in _tokens(headers, "upgrade") and "upgrade" in _tokens(headers, "connection")


@attrs.frozen
class HttpRequest:
    """One request as a handler sees it.

    ``path`` is percent-decoded and safe (see :func:`parse_target`); ``headers`` have lower-case
    names and ISO-8859-1-decoded values, in the order received; ``params`` are the route's
    placeholders; ``peer`` is the client's (address, port).
    """

    method: str
    target: str
    path: str
    query: Mapping[str, str]
    headers: tuple[tuple[str, str], ...]
    peer: tuple[str, int] | None = None
    http_version: str = "1.1"
    params: Mapping[str, str] = attrs.field(factory=dict, converter=lambda v: MappingProxyType(dict(v)))

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (case-insensitive), or ``None``; repeated headers are
        joined with ``", "``."""
        name = name.lower()
        values = [value for key, value in self.headers if key == name]
        return ", ".join(values) if values else None

    def header_tokens(self, name: str) -> set[str]:
        """The comma-separated tokens of header ``name``, lower-cased."""
        value = self.header(name) or ""
        return {token.strip().lower() for token in value.split(",") if token.strip()}

    @property
    def wants_websocket(self) -> bool:
        """A WebSocket opening handshake: ``Upgrade: websocket`` and ``Connection: upgrade``."""
        return wants_websocket(self.headers)

    @property
    def bearer(self) -> str | None:
        """The token of an ``Authorization: Bearer TOKEN`` header, or ``None``."""
        value = self.header("authorization") or ""
        scheme, _, token = value.strip().partition(" ")
        token = token.strip()
        return token if scheme.lower() == "bearer" and token else None

    def stream_key(self) -> StreamKey:
        """The stream the route's ``{app}`` and ``{stream}`` name; :class:`BadRequest` (``400``,
        the name's problem, escaped, as the reason) for a name :func:`~arcly_trio.core.keys.check_name`
        refuses."""
        try:
            return StreamKey(self.params["app"], self.params["stream"])
        except InvalidStreamName as exc:
            raise BadRequest(str(exc)) from None

    def credentials(self, protocol: str) -> Credentials:
        """What the client presented, for the engine's authorization: ``?token=`` (or
        ``?sign=``, as Node-Media-Server names it), an ``Authorization: Bearer`` token, its
        address and its whole query."""
        query = self.query
        token = query.get("token") or query.get("sign") or None
        return Credentials(token=token, peer=self.peer, query=query, protocol=protocol, bearer=self.bearer)


class Responder(Protocol):
    """What a route handler answers through (the HTTP worker's ``Exchange`` is one).

    Services that install routes (``install_routes``) use only this, so they need nothing of
    the worker: ``engine`` to authorize and find streams, ``respond``/``error``/``json`` for
    whole responses.
    """

    engine: Any

    async def respond(
        self,
        status: int,
        body: bytes = b"",
        *,
        content_type: str = ...,
        headers: Iterable[tuple[str, str]] = ...,
        close: bool = ...,
    ) -> None: ...

    async def error(
        self, status: int, message: str, *, headers: Iterable[tuple[str, str]] = ..., close: bool = ...
    ) -> None: ...

    async def json(self, status: int, document: Any, *, headers: Iterable[tuple[str, str]] = ...) -> None: ...


Handler = Callable[[HttpRequest, Any], Awaitable[None]]
"""A route handler: ``await handler(request, responder)`` answers through the
:class:`Responder` (the worker's ``Exchange``, which can also stream and upgrade)."""


@attrs.frozen
class Route:
    """One route. ``protected`` routes (the JSON API, ``/metrics``) need the server's API token
    when it has one; ``admin`` routes (what names or ends client sessions) need it too, and
    without one answer only requests from the server's own machine. Neither kind is served with
    CORS headers."""

    pattern: str
    regex: re.Pattern[str]
    methods: frozenset[str]
    handler: Handler
    websocket: bool
    protected: bool = False
    admin: bool = False
    prefix: str = ""
    """The pattern's literal text before its first placeholder (the whole pattern without one)."""
    suffix: str = ""
    """The pattern's literal text after its last placeholder (the whole pattern without one):
    a path must start with ``prefix`` and end with ``suffix`` for the regex to be worth trying
    (two string comparisons, not a regex per route, on every request's hot path)."""
    quick: QuickAnswerer | None = None
    """What answers the route's hot requests without its handler, or declines them (see
    :mod:`.quick`); ``None``: the handler serves every request."""


def _first_segment(pattern: str) -> str | None:
    """A pattern's first path segment if it is all literal (``/api/health``: ``api``; ``/``:
    the empty one), else ``None`` (``/{app}/...``)."""
    segment = pattern[1:].partition("/")[0]
    return None if "{" in segment else segment


class Router:
    """An ordered list of routes; the first that matches wins.

    Matching a plain (not WebSocket) request looks only at the routes that could match its
    path's first segment: those whose pattern begins with that literal segment and those that
    begin with a placeholder, in their order (an index made when first needed after a change),
    so a media request does not try the API's and the pages' routes; and the last 1024 plain
    matches are remembered (the viewers of a stream all ask for the same parts; a client's
    made-up paths cost that many entries of at most 256 characters)."""

    def __init__(self) -> None:
        self._routes: list[Route] = []
        self._by_segment: dict[str, tuple[Route, ...]] | None = None
        self._any_segment: tuple[Route, ...] = ()
        self._memo: dict[tuple[str, str], tuple[Route, dict[str, str]] | None] = {}
        """The last plain matches by method and path (every viewer of a stream asks for the
        same parts and playlists), at most :data:`_MEMO_SIZE`, forgotten when a route is added."""

    @property
    def routes(self) -> list[Route]:
        return list(self._routes)

    @staticmethod
    def compile(pattern: str) -> re.Pattern[str]:
        """``/{app}/{stream}.flv`` -> a regex with one named group per placeholder."""
        if not pattern.startswith("/"):
            raise ValueError(f"route pattern {pattern!r} must start with '/'")
        out: list[str] = []
        pos = 0
        names: set[str] = set()
        for match in _PLACEHOLDER.finditer(pattern):
            name = match.group(1)
            if name in names:
                raise ValueError(f"route pattern {pattern!r} repeats {{{name}}}")
            names.add(name)
            out.append(re.escape(pattern[pos : match.start()]))
            out.append(f"(?P<{name}>[^/]+?)")
            pos = match.end()
        out.append(re.escape(pattern[pos:]))
        return re.compile("".join(out))

    def add(
        self,
        pattern: str,
        handler: Handler,
        *,
        methods: tuple[str, ...] = ("GET", "HEAD"),
        websocket: bool = False,
        first: bool = False,
        protected: bool = False,
        admin: bool = False,
        quick: QuickAnswerer | None = None,
    ) -> Route:
        """Add a route (after the others; ``first=True``: before them, so it overrides;
        ``protected=True``: it needs the server's API token, if it has one; ``admin=True``: that,
        and local requests only when there is no token)."""
        route = Route(
            pattern,
            self.compile(pattern),
            frozenset(m.upper() for m in methods),
            handler,
            websocket,
            protected,
            admin,
            pattern.partition("{")[0],
            pattern.rpartition("}")[2],
            quick,
        )
        if first:
            self._routes.insert(0, route)
        else:
            self._routes.append(route)
        self._by_segment = None
        self._memo.clear()
        return route

    def _index(self) -> dict[str, tuple[Route, ...]]:
        """The plain routes a path's first segment may match, per literal segment (the others:
        :attr:`_any_segment`), each in the routes' order."""
        plain = [route for route in self._routes if not route.websocket]
        segments = {_first_segment(route.pattern) for route in plain} - {None}
        self._any_segment = tuple(route for route in plain if _first_segment(route.pattern) is None)
        index = {
            segment: tuple(route for route in plain if _first_segment(route.pattern) in (segment, None))
            for segment in segments
            if segment is not None
        }
        self._by_segment = index
        return index

    def get(self, pattern: str, handler: Handler, *, protected: bool = False, admin: bool = False,
            quick: QuickAnswerer | None = None) -> Route:  # fmt: skip
        """A ``GET`` (and ``HEAD``) route (``quick``: see :mod:`.quick`)."""
        return self.add(pattern, handler, protected=protected, admin=admin, quick=quick)

    def websocket(self, pattern: str, handler: Handler) -> Route:
        """A route for WebSocket opening handshakes (a ``GET`` with ``Upgrade: websocket``)."""
        return self.add(pattern, handler, methods=("GET",), websocket=True)

    def match(self, method: str, path: str, *, websocket: bool = False) -> tuple[Route, dict[str, str]] | None:
        """The route for a request and its parameters, or ``None``.

        A WebSocket handshake tries the WebSocket routes first, then the plain ones (which
        then answer over HTTP, declining the upgrade).
        """
        if not websocket:
            memo = self._memo
            known = memo.get((method, path), _UNKNOWN)
            if known is not _UNKNOWN:
                return None if known is None else (known[0], dict(known[1]))
            index = self._by_segment if self._by_segment is not None else self._index()
            matched: tuple[Route, dict[str, str]] | None = None
            for route in index.get(path[1:].partition("/")[0], self._any_segment):
                if method in route.methods and path.startswith(route.prefix) and path.endswith(route.suffix):
                    found = route.regex.fullmatch(path)
                    if found is not None:
                        matched = route, found.groupdict()
                        break
            if len(path) <= _MEMO_PATH:
                if len(memo) >= _MEMO_SIZE:
                    memo.clear()
                memo[method, path] = matched
            return None if matched is None else (matched[0], dict(matched[1]))
        candidates = [r for r in self._routes if r.websocket] + [r for r in self._routes if not r.websocket]
        for route in candidates:
            if route.websocket and not websocket:
                continue
            if method not in route.methods or not (path.startswith(route.prefix) and path.endswith(route.suffix)):
                continue
            found = route.regex.fullmatch(path)
            if found is not None:
                return route, found.groupdict()
        return None

    def allowed_methods(self, path: str) -> set[str]:
        """Every method some plain route accepts for ``path`` (for a 405 ``Allow`` header)."""
        return {
            m
            for r in self._routes
            if not r.websocket and path.startswith(r.prefix) and path.endswith(r.suffix) and r.regex.fullmatch(path)
            for m in r.methods
        }
