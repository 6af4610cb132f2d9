"""Listening sockets for the protocol workers: TCP (optionally ``SO_REUSEPORT``), Unix, and TLS.

``--workers N`` runs N processes that each listen on the same TCP ports with ``SO_REUSEPORT``:
the kernel spreads new connections across them (each has its own accept queue, so a busy worker
does not take more than its share). Each worker also listens on Unix sockets in the server's
private run directory, where the other workers reach it: the local relay (RTMP) and the API
(HTTP). :func:`peer_of` names a Unix peer ``("local", 0)``, so admission limits and logs treat
it as one local address.

TLS (RTMPS, HTTPS): :func:`with_tls` wraps the TCP listeners in a :class:`TlsListener`, so a
worker gets :class:`trio.SSLStream` connections and reads and writes them as any stream (the
handshake happens on the first read, within the worker's first deadline). The listener asks
for the worker's TLS context at every accept: a context swapped in (a certificate reloaded on
SIGHUP) serves the connections accepted from then on, and those already open keep theirs. A connection whose
stream is not a plain :class:`trio.SocketStream` (:func:`raw_socket` returns ``None``) must
never be written to through its socket's file descriptor: those bytes would bypass TLS.

Error policy: a TCP port that cannot be bound (taken, no permission) is
:class:`~arcly_trio.core.errors.CannotListen` (an ``OSError`` naming the protocol, host and port),
which propagates to the worker's ``serve`` and stops the engine (the CLI reports it with the
option that set the port); other binding errors propagate as they are.
"""

from __future__ import annotations

import os
import socket as stdlib_socket
import ssl
from collections.abc import Callable

import trio

from arcly_trio.core.errors import CannotListen

__all__ = ["open_listeners", "peer_of", "raw_socket", "with_tls", "TlsListener", "LOCAL_PEER"]

LOCAL_PEER = ("local", 0)
_BACKLOG = 1024


async def open_listeners(
    host: str, port: int, *, reuse_port: bool = False, unix_socket: str | None = None, protocol: str = ""
) -> list[trio.SocketListener]:
    """TCP listeners on ``host:port`` (every address it resolves to; port 0 picks one), with
    ``SO_REUSEPORT`` if asked, and a Unix listener on ``unix_socket`` (mode 0600) if given.
    :class:`~arcly_trio.core.errors.CannotListen` (naming ``protocol``, the host and the port)
    if the TCP port cannot be bound."""
    try:
        listeners = await _tcp_listeners(host, port, reuse_port)
    except OSError as exc:
        raise CannotListen(protocol, host, port, exc.errno, exc.strerror or str(exc)) from None
    if unix_socket is not None:
        sock = trio.socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
        try:
            try:
                os.unlink(unix_socket)
            except FileNotFoundError:
                pass
            await sock.bind(unix_socket)
            os.chmod(unix_socket, 0o600)
            sock.listen(_BACKLOG)
        except BaseException:
            sock.close()
            for listener in listeners:
                listener.socket.close()
            raise
        listeners.append(trio.SocketListener(sock))
    return listeners


async def _tcp_listeners(host: str, port: int, reuse_port: bool) -> list[trio.SocketListener]:
    if not reuse_port:
        listeners = await trio.open_tcp_listeners(port, host=host, backlog=_BACKLOG)
    else:
        listeners = []
        infos = await trio.socket.getaddrinfo(
            host, port, type=stdlib_socket.SOCK_STREAM, flags=stdlib_socket.AI_PASSIVE
        )
        for family, type_, proto, _, address in infos:
            sock = trio.socket.socket(family, type_, proto)
            try:
                sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_REUSEADDR, 1)
                sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_REUSEPORT, 1)
                if family == stdlib_socket.AF_INET6:
                    sock.setsockopt(stdlib_socket.IPPROTO_IPV6, stdlib_socket.IPV6_V6ONLY, 1)
                await sock.bind(address)
                sock.listen(_BACKLOG)
            except BaseException:
                sock.close()
                for listener in listeners:
                    listener.socket.close()
                raise
            listeners.append(trio.SocketListener(sock))
    return listeners


class TlsListener(trio.abc.Listener[trio.SSLStream[trio.SocketStream]]):
    """What :class:`trio.SSLListener` is, except that the context is ``context_of()`` at each
    accept (so a new certificate takes effect for new connections without restarting the
    listener)."""

    def __init__(self, transport_listener: trio.SocketListener, context_of: Callable[[], ssl.SSLContext]) -> None:
        self.transport_listener = transport_listener
        self.context_of = context_of

    async def accept(self) -> trio.SSLStream[trio.SocketStream]:
        transport_stream = await self.transport_listener.accept()
        return trio.SSLStream(transport_stream, self.context_of(), server_side=True, https_compatible=True)

    async def aclose(self) -> None:
        await self.transport_listener.aclose()


def with_tls(
    listeners: list[trio.SocketListener], context_of: Callable[[], ssl.SSLContext] | None
) -> list[trio.abc.Listener]:  # type: ignore[type-arg]
    """``listeners`` with the TCP ones wrapped in TLS (the context ``context_of()`` gives at
    each accept; ``None``: unchanged). Unix listeners (the workers' private sockets) stay
    plain."""
    if context_of is None:
        return list(listeners)
    return [
        listener if listener.socket.family == stdlib_socket.AF_UNIX else TlsListener(listener, context_of)
        for listener in listeners
    ]


def raw_socket(stream: trio.abc.Stream) -> trio.socket.SocketType | None:
    """The socket of a plain TCP or Unix connection; ``None`` for a TLS one (whose bytes must
    go through the stream)."""
    return stream.socket if isinstance(stream, trio.SocketStream) else None


def peer_of(stream: trio.abc.Stream) -> tuple[str, int]:
    """The peer's ``(address, port)`` (of the TCP connection under a TLS one); ``LOCAL_PEER``
    for a Unix socket. ``OSError`` if the peer is already gone."""
    while isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    assert isinstance(stream, trio.SocketStream)
    if stream.socket.family == stdlib_socket.AF_UNIX:
        return LOCAL_PEER
    address = stream.socket.getpeername()
    return (address[0], address[1])
