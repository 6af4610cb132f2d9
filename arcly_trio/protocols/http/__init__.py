"""The HTTP protocol worker: HTTP-FLV, WebSocket-FLV, HLS and a JSON API on one port.

:class:`HttpServer` is the worker (see :mod:`.server`); :class:`Router`, :class:`HttpRequest`
and :class:`Exchange` let more routes be added (a player page, WebSocket APIs).
"""

from .router import BadRequest, HttpRequest, Router, parse_target
from .server import ClientGone, Exchange, HttpServer

__all__ = ["HttpServer", "Router", "HttpRequest", "Exchange", "BadRequest", "ClientGone", "parse_target"]
