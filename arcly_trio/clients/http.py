"""A small trio HTTP/1.1 client on h11, for what the project fetches itself: HTTP-FLV pulls,
and the JSON API of the other workers of a ``--workers`` server (over their Unix sockets).

``open_http_get(url)`` sends one ``GET`` and returns once the response head is in; the body is
read in pieces with :meth:`HttpResponse.receive_some` (``b""`` at its end) or whole with
:meth:`HttpResponse.read`. ``open_http_exchange`` does the same for any method, extra headers
and any status; ``http_request`` returns a whole :class:`HttpReply` (status, headers, body).
``unix_socket=PATH`` connects there instead of the URL's host; ``https://`` uses TLS (the
system's trust store unless ``ssl_context`` is given).

Limits: the response head must arrive within ``timeout`` and fit in 64 KiB (h11's cap);
:meth:`HttpResponse.read` refuses a body over ``limit`` bytes.

Error policy: ``open_http_get`` and ``get_json_bytes`` raise
:class:`~arcly_trio.core.errors.RemoteRefused` on a status other than 200 (stage ``"GET"``, code
the status); a connection that fails, breaks or times out raises
:class:`~arcly_trio.core.errors.ConnectionLost`; a server that breaks HTTP raises
``RemoteProtocolError``. Messages name the URL redacted
(:func:`~arcly_trio.core.redact.redact_url`); the ``Host`` header never carries a URL's user name
and password.
"""

from __future__ import annotations

import ssl
import urllib.parse
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import NamedTuple

import h11
import trio

from arcly_trio.core.errors import ConnectionLost, RemoteProtocolError, RemoteRefused
from arcly_trio.core.redact import redact_url
from arcly_trio.core.text import printable
from arcly_trio.transport import TRANSPORT_ERRORS, describe

__all__ = ["HttpReply", "HttpResponse", "get_json_bytes", "http_request", "open_http_exchange", "open_http_get"]

_RECV_SIZE = 65536


class HttpResponse:
    """The response of :func:`open_http_get`: ``status``, ``headers`` (lower-case names), the
    body by pieces."""

    def __init__(self, stream: trio.abc.Stream, connection: h11.Connection, response: h11.Response, where: str) -> None:
        self._stream = stream
        self._h11 = connection
        self.status = response.status_code
        self.headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in response.headers}
        self._where = where
        self.bytes_received = 0

    async def receive_some(self) -> bytes:
        """The next piece of the body; ``b""`` once it has ended."""
        while True:
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError as exc:
                raise RemoteProtocolError(f"{self._where}: {exc}") from None
            if event is h11.NEED_DATA:
                try:
                    data = await self._stream.receive_some(_RECV_SIZE)
                except TRANSPORT_ERRORS as exc:
                    raise ConnectionLost(f"{self._where}: connection broken: {describe(exc)}") from None
                self._h11.receive_data(bytes(data))
                continue
            if isinstance(event, h11.Data):
                self.bytes_received += len(event.data)
                return bytes(event.data)
            return b""  # EndOfMessage or ConnectionClosed

    async def read(self, limit: int = 16 * 1024 * 1024) -> bytes:
        """The whole body (``RemoteProtocolError`` past ``limit`` bytes)."""
        body = bytearray()
        while piece := await self.receive_some():
            body += piece
            if len(body) > limit:
                raise RemoteProtocolError(f"{self._where}: body over {limit} bytes")
        return bytes(body)


class HttpReply(NamedTuple):
    """A whole response of :func:`http_request`: ``status``, ``headers`` (lower-case names), ``body``."""

    status: int
    headers: dict[str, str]
    body: bytes


@asynccontextmanager
async def open_http_get(
    url: str, *, unix_socket: str | None = None, timeout: float = 10.0, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[HttpResponse]:
    """``GET url``; yields the response once its head is in (see the module docstring)."""
    async with open_http_exchange(url, unix_socket=unix_socket, timeout=timeout, ssl_context=ssl_context) as result:
        if result.status != 200:
            body = await _short_body(result)
            raise RemoteRefused("GET", str(result.status), printable(body))
        yield result


async def http_request(
    url: str,
    *,
    method: str = "GET",
    headers: Sequence[tuple[str, str]] = (),
    unix_socket: str | None = None,
    timeout: float = 10.0,
    ssl_context: ssl.SSLContext | None = None,
    limit: int = 16 * 1024 * 1024,
) -> HttpReply:
    """One request, whatever the status: the whole reply (the head within ``timeout``; the body
    up to ``limit`` bytes)."""
    async with open_http_exchange(
        url, method=method, headers=headers, unix_socket=unix_socket, timeout=timeout, ssl_context=ssl_context
    ) as response:
        return HttpReply(response.status, response.headers, await response.read(limit))


@asynccontextmanager
async def open_http_exchange(
    url: str,
    *,
    method: str = "GET",
    headers: Sequence[tuple[str, str]] = (),
    unix_socket: str | None = None,
    timeout: float = 10.0,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[HttpResponse]:
    """``method url`` with ``headers`` (a ``Host`` or ``User-Agent`` there replaces ours); yields
    the response once its head is in, whatever its status."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or (not parts.hostname and unix_socket is None):
        raise ValueError(f"not an http:// URL: {redact_url(url)!r}")
    where = redact_url(f"{parts.scheme}://{parts.netloc}{parts.path}")
    host = parts.netloc.rpartition("@")[2]  # never the user name and password
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    stream: trio.abc.Stream | None = None
    connection = h11.Connection(h11.CLIENT)
    response: h11.Response | None = None
    try:
        with trio.move_on_after(timeout) as scope:
            try:
                if unix_socket is not None:
                    stream = await trio.open_unix_socket(unix_socket)
                elif parts.scheme == "https":
                    stream = await trio.open_ssl_over_tcp_stream(
                        parts.hostname or "", parts.port or 443, ssl_context=ssl_context or ssl.create_default_context()
                    )
                else:
                    stream = await trio.open_tcp_stream(parts.hostname or "", parts.port or 80)
                request = h11.Request(method=method, target=target, headers=_request_headers(host, headers))
                await stream.send_all(connection.send(request) + connection.send(h11.EndOfMessage()))
                while response is None:
                    event = connection.next_event()
                    if event is h11.NEED_DATA:
                        connection.receive_data(bytes(await stream.receive_some(_RECV_SIZE)))
                    elif isinstance(event, h11.Response):
                        response = event
                    elif isinstance(event, h11.ConnectionClosed):
                        raise ConnectionLost(f"{where}: the server closed before answering")
            except TRANSPORT_ERRORS as exc:
                raise ConnectionLost(f"{where}: {describe(exc)}") from None
            except h11.RemoteProtocolError as exc:
                raise RemoteProtocolError(f"{where}: {exc}") from None
        if scope.cancelled_caught or stream is None or response is None:
            raise ConnectionLost(f"{where}: no response within {timeout:g} s")
        yield HttpResponse(stream, connection, response, where)
    finally:
        if stream is not None:
            await trio.aclose_forcefully(stream)


def _request_headers(host: str, extra: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """Our ``Host`` and ``User-Agent`` unless ``extra`` has its own, ``Connection: close``, then ``extra``."""
    given = {name.lower() for name, _ in extra}
    ours = [("host", host or "localhost"), ("user-agent", "arcly-trio")]
    return [*(h for h in ours if h[0] not in given), ("connection", "close"), *extra]


async def _short_body(response: HttpResponse) -> str:
    """At most 200 characters of an error response's body (for the error message)."""
    with trio.move_on_after(2):
        try:
            return (await response.read(limit=4096)).decode("utf-8", "replace").strip()[:200]
        except (ConnectionLost, RemoteProtocolError):
            pass
    return ""


async def get_json_bytes(
    url: str, *, unix_socket: str | None = None, timeout: float = 5.0, limit: int = 16 * 1024 * 1024
) -> bytes:
    """The body of ``GET url`` (for JSON APIs), within ``timeout`` in all."""
    with trio.move_on_after(timeout):
        async with open_http_get(url, unix_socket=unix_socket, timeout=timeout) as response:
            return await response.read(limit)
    raise ConnectionLost(f"{url}: no whole answer within {timeout:g} s")
