"""Listening sockets for the protocol workers: TCP (optionally ``SO_REUSEPORT``) and Unix.

``--workers N`` runs N processes that each listen on the same TCP ports with ``SO_REUSEPORT``:
the kernel spreads new connections across them (each has its own accept queue, so a busy worker
does not take more than its share). Each worker also listens on Unix sockets in the server's
private run directory, where the other workers reach it: the local relay (RTMP) and the API
(HTTP). :func:`peer_of` names a Unix peer ``("local", 0)``, so admission limits and logs treat
it as one local address.

Error policy: binding errors (``OSError``: port taken, no permission) propagate to the worker's
``serve``, which stops the engine (the CLI reports them).
"""

from __future__ import annotations

import os
import socket as stdlib_socket

import trio

__all__ = ["open_listeners", "peer_of", "LOCAL_PEER"]

LOCAL_PEER = ("local", 0)
_BACKLOG = 1024


async def open_listeners(host: str, port: int, *, reuse_port: bool = False,
                         unix_socket: str | None = None) -> list[trio.SocketListener]:
    """TCP listeners on ``host:port`` (every address it resolves to; port 0 picks one), with
    ``SO_REUSEPORT`` if asked, and a Unix listener on ``unix_socket`` (mode 0600) if given."""
    if not reuse_port:
        listeners = await trio.open_tcp_listeners(port, host=host, backlog=_BACKLOG)
    else:
        listeners = []
        infos = await trio.socket.getaddrinfo(host, port, type=stdlib_socket.SOCK_STREAM,
                                              flags=stdlib_socket.AI_PASSIVE)
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
    if unix_socket is not None:
        try:
            os.unlink(unix_socket)
        except FileNotFoundError:
            pass
        sock = trio.socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
        await sock.bind(unix_socket)
        os.chmod(unix_socket, 0o600)
        sock.listen(_BACKLOG)
        listeners.append(trio.SocketListener(sock))
    return listeners


def peer_of(stream: trio.SocketStream) -> tuple[str, int]:
    """The peer's ``(address, port)``; ``LOCAL_PEER`` for a Unix socket. ``OSError`` if the
    peer is already gone."""
    if stream.socket.family == stdlib_socket.AF_UNIX:
        return LOCAL_PEER
    address = stream.socket.getpeername()
    return (address[0], address[1])
