"""Route one HTTP request to its handler: the one path every request takes, HTTP/1.1 or HTTP/2.

:func:`dispatch` parses the target, finds the route, applies the access policy (CORS per route,
the API token with the engine's ``auth_throttle``, admin routes' local-only rule, see
:mod:`.access`), answers preflights, ``404`` and ``405``, runs the handler and maps its errors to
answers. The h11 connection (:mod:`.server`) and the HTTP/2 connection (:mod:`.h2_connection`)
both call it with their own :class:`~.exchange.Exchange`, so neither has a side door around the
policy (plays and publishes still go through ``Engine.authorize`` in the handlers).

Error policy: a bad target, a handler's :class:`BadRequest` or ``InvalidStreamName`` is answered
with its status, logged as a bad request (peer text escaped) and ends the exchange without
keep-alive; a bug in a handler is logged with its traceback and answered ``500`` if nothing was
sent; :class:`~.exchange.ClientGone` and :class:`trio.TooSlowError` propagate (the connection
decides what a gone client ends).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol

import trio

from arcly_trio.core.errors import InvalidStreamName
from arcly_trio.core.redact import redact_url
from arcly_trio.core.text import printable
from arcly_trio.protocols.http.router import BadRequest, HttpRequest, Router, parse_target
from arcly_trio.workers.http.access import admin_refusal, cors_allowed
from arcly_trio.workers.http.exchange import ClientGone, Exchange

if TYPE_CHECKING:
    from arcly_trio.kernel.engine import Engine
    from arcly_trio.workers.clientlog import ClientLog

__all__ = ["dispatch", "DispatchHost"]

log = logging.getLogger("arcly_trio.http")


class DispatchHost(Protocol):
    """What :func:`dispatch` uses of the server (the :class:`~.server.HttpServer`)."""

    name: str
    router: Router
    api_token: str | None
    clients: ClientLog

    def api_refusal(self, request: HttpRequest) -> tuple[int, str] | None: ...


RequestBuilder = Callable[[str, Mapping[str, str], Mapping[str, str]], HttpRequest]
"""Makes the :class:`HttpRequest` of a parsed target (path, query) and the route's parameters
(found before the request is made, so it is made once)."""


async def dispatch(
    server: DispatchHost,
    engine: Engine,
    exchange: Exchange,
    peer: tuple[str, int],
    method: str,
    target: str,
    websocket: bool,
    build: RequestBuilder,
) -> bool:
    """Serve one request through ``exchange``; whether its connection may serve another.

    ``method`` and ``target`` are the request's, ``websocket`` whether it is a WebSocket
    handshake (:func:`~arcly_trio.protocols.http.router.wants_websocket`)."""
    try:
        path, query = parse_target(target)
    except BadRequest as exc:
        server.clients.log(
            logging.WARNING,
            peer[0],
            "bad requests",
            "%s %s:%s bad request %s: %s",
            server.name,
            *peer,
            printable(redact_url(target)),  # no query values
            exc,
        )
        await exchange.error(exc.status, str(exc), close=True)
        return False
    router = server.router
    websocket = websocket and method == "GET"
    found = router.match(method, path, websocket=websocket)
    request = build(path, query, found[1] if found is not None else {})
    exchange.request = request
    policy_route = found if found is not None else router.match("GET", path)  # a preflight's route
    exchange.cors = cors_allowed(path, policy_route[0] if policy_route is not None else None)
    if request.method == "OPTIONS":
        await exchange.preflight(router.allowed_methods(path))
        return exchange.keep_alive
    if found is None:
        allowed = router.allowed_methods(path)
        if allowed:
            methods = ", ".join(sorted(allowed | {"OPTIONS"}))
            await exchange.error(405, f"method {request.method} is not allowed here", headers=[("allow", methods)])
        else:
            await exchange.error(404, f"not found: {path}")
        return exchange.keep_alive
    route, params = found
    if (route.protected or route.admin) and server.api_token is not None:
        throttle = engine.auth_throttle
        turn = throttle.admit(peer[0], "api")
        refusal: tuple[int, str] | None = None
        if turn is not None:
            async with turn:
                if not turn.bounced:
                    refusal = server.api_refusal(request)
                    if refusal is not None:
                        throttle.refused(peer[0], "api", f"{request.method} {printable(path)}: {refusal[1]}")
                    else:
                        throttle.allowed(peer[0], "api")
        if turn is None or turn.bounced:
            throttle.refused_busy(peer[0], "api", f"{request.method} {printable(path)}: too many at once")
            refusal = (429, "too many API requests in flight from this address; retry later")
        if refusal is not None:
            await exchange.error(*refusal)
            return exchange.keep_alive
    elif route.admin:
        refusal = admin_refusal(request, server.api_token)
        if refusal is not None:
            log.info("http %s:%s %s %s refused: not local and no --api-token", *peer, request.method, printable(path))
            await exchange.error(*refusal)
            return exchange.keep_alive
    try:
        await route.handler(request, exchange)
    except (BadRequest, InvalidStreamName) as exc:  # the client's mistake: 400, one line, no traceback
        status, headers = (exc.status, exc.headers) if isinstance(exc, BadRequest) else (400, ())
        server.clients.log(
            logging.WARNING,
            peer[0],
            "bad requests",
            "%s %s:%s bad request: %s",
            server.name,
            *peer,
            printable(str(exc)),
        )
        if not exchange.responded:
            await exchange.error(status, str(exc), headers=headers, close=True)
        return False
    except (ClientGone, trio.TooSlowError):
        raise
    except Exception:
        log.exception("http %s:%s handler of %s failed", *peer, route.pattern)
        if not exchange.responded:
            await exchange.error(500, "internal server error", close=True)
        return False
    if not exchange.responded:
        log.error("http handler of %s sent no response", route.pattern)
        await exchange.error(500, "internal server error: no response", close=True)
        return False
    return exchange.keep_alive
