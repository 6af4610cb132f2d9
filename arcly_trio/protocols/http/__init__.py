"""Sans-IO pieces of HTTP serving: request targets, the router, WebSocket handshake checks.

The HTTP worker that uses them (h11 over trio sockets) is :mod:`arcly_trio.workers.http`.
"""

from arcly_trio.protocols.http.router import BadRequest, HttpRequest, Route, Router, parse_target
from arcly_trio.protocols.http.websocket import handshake_problem, rebuild_request_head

__all__ = [
    "BadRequest",
    "HttpRequest",
    "Route",
    "Router",
    "parse_target",
    "handshake_problem",
    "rebuild_request_head",
]
