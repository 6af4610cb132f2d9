"""The HTTP protocol worker: HTTP-FLV, WebSocket-FLV, HLS and a JSON API on one port.

:class:`HttpServer` is the worker (see :mod:`.server`); routes are added to its
:attr:`~HttpServer.router` and answer through an :class:`Exchange`.
"""

from arcly_trio.protocols.http.router import BadRequest, HttpRequest, Router, parse_target
from arcly_trio.workers.http.exchange import ClientGone, Exchange
from arcly_trio.workers.http.server import HttpServer

__all__ = ["HttpServer", "Router", "HttpRequest", "Exchange", "BadRequest", "ClientGone", "parse_target"]
