"""One way to listen and run connections, for every protocol worker.

:class:`Listener` holds the options every listening worker shares (where to listen, the
admission limits, the write deadline, ``SO_REUSEPORT``, the Unix socket, TLS), as hypercorn's
one ``Config`` does; a worker keeps its own protocol options next to it. :class:`ConnectionRunner`
serves one listener, in the spirit of :func:`trio.serve_listeners` (which it runs): it opens the
sockets (:func:`~.listen.open_listeners`, TLS by :func:`~.listen.with_tls`), reports the bound
port through ``task_status.started`` once every accept loop runs, admits each connection
(:class:`~.admission.Admission`) and runs the worker's handler for it in its own task, under the
ticket's cancel scope (an evicted connection is cancelled), then closes it.

Resource handling: the runner owns each connection's stream: it is closed with
``aclose_forcefully`` once the handler returns or raises, whatever happened (a handler never
closes it itself). A connection that admission has no slot for is closed at once, after the
worker's ``refuse`` reply if it has one (an HTTP ``503``). The ticket is released in every case.

Error handling: a peer gone before it is admitted is closed silently. An exception a handler
lets out (a bug: handlers log the errors of their protocol themselves) is counted in
:attr:`ConnectionRunner.failures` and logged with its traceback, and closes that connection
only; the worker serves on. Errors accepting connections that mean overload (EMFILE...) are
logged and retried by :func:`trio.serve_listeners`; a port that cannot be bound
(:class:`~arcly_trio.core.errors.CannotListen`) and any other error of the runner itself
propagate to the worker's ``serve`` and stop the engine.
"""

from __future__ import annotations

import functools
import logging
import ssl
from collections.abc import Awaitable, Callable

import attrs
import trio

from arcly_trio.workers.admission import Admission, Ticket
from arcly_trio.workers.clientlog import ClientLog
from arcly_trio.workers.listen import open_listeners, peer_of, with_tls

__all__ = ["Listener", "ConnectionRunner", "Handler", "ListeningWorker", "chosen_listener"]

Handler = Callable[[trio.abc.Stream, tuple[str, int], Ticket], Awaitable[None]]
"""A worker's connection handler: the stream, its peer's ``(address, port)``, its ticket."""


@attrs.frozen
class Listener:
    """Where and how a worker listens (see :class:`~.admission.Admission` for the limits).

    Args:
        host, port: where to listen (port 0 picks one).
        max_connections: open connections at most.
        max_pending_per_address: idle connections one address may hold while the server is
            near ``max_connections``; ``None``: no quota.
        max_per_address: connections one address may hold in all (``None``: no limit).
        write_timeout: seconds one write may block before the client is dropped.
        reuse_port: listen with ``SO_REUSEPORT`` (several worker processes on one port).
        unix_socket: also listen on this Unix socket (the other workers of ``--workers``).
        ssl_context: speak TLS on the TCP listeners (the worker may swap its context while
            serving: the runner asks for it at each accept).
    """

    host: str = "0.0.0.0"
    port: int = 0
    max_connections: int = 1024
    max_pending_per_address: int | None = 32
    max_per_address: int | None = None
    write_timeout: float = 30.0
    reuse_port: bool = False
    unix_socket: str | None = None
    ssl_context: ssl.SSLContext | None = None


class ConnectionRunner:
    """Serves one :class:`Listener` for a worker named ``name`` (see the module docstring).

    ``label`` names a connection in admission's lines (``"RTMP connection"``); ``log`` is the
    worker's logger; ``refuse``, if given, is awaited (within 1 s) on a connection admission has
    no slot for, before it is closed.
    """

    def __init__(
        self,
        listener: Listener,
        *,
        name: str,
        label: str,
        log: logging.Logger,
        refuse: Callable[[trio.abc.Stream], Awaitable[None]] | None = None,
    ) -> None:
        self.listener = listener
        self.name = name
        self.log = log
        self.refuse = refuse
        self.admission = Admission(
            max_connections=listener.max_connections,
            max_pending_per_address=listener.max_pending_per_address,
            max_per_address=listener.max_per_address,
            log=log,
            label=label,
        )
        self.clients = ClientLog(log)
        """How bad and refused clients ended: a line each while few, per burst when many."""
        self.port: int | None = None
        """The bound TCP port, once serving."""
        self.listening = False
        self.accepted = 0
        """Connections admitted, in all."""
        self.failures = 0
        """Connections ended by an exception their handler let out (a bug); should stay 0."""

    async def serve(
        self,
        handler: Handler,
        *,
        context_of: Callable[[], ssl.SSLContext] | None = None,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen and run ``handler`` for every admitted connection until cancelled; reports the
        bound port once every accept loop runs. ``context_of`` gives the TLS context at each
        accept (default: the listener's ``ssl_context``, if any)."""
        listener = self.listener
        if context_of is None and listener.ssl_context is not None:
            context = listener.ssl_context
            context_of = lambda: context  # noqa: E731
        listeners = await open_listeners(
            listener.host,
            listener.port,
            reuse_port=listener.reuse_port,
            unix_socket=listener.unix_socket,
            protocol=self.name,
        )
        self.port = listeners[0].socket.getsockname()[1]
        self.log.info(
            "%s listening on %s:%d%s",
            self.name.upper(),
            listener.host,
            self.port,
            f" and {listener.unix_socket}" if listener.unix_socket else "",
        )
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.clients.run)
                await nursery.start(
                    trio.serve_listeners, functools.partial(self._run, handler), with_tls(listeners, context_of)
                )
                self.listening = True
                task_status.started(self.port)
        finally:
            self.listening = False

    async def _run(self, handler: Handler, stream: trio.abc.Stream) -> None:
        """One connection, from admission to close (see the module docstring)."""
        try:
            peer = peer_of(stream)
        except OSError:
            await trio.aclose_forcefully(stream)
            return
        ticket = self.admission.admit(peer[0])
        if ticket is None:
            if self.refuse is not None:
                with trio.move_on_after(1):
                    await self.refuse(stream)
            await trio.aclose_forcefully(stream)
            return
        self.accepted += 1
        try:
            with ticket.scope:
                await handler(stream, peer, ticket)
            if ticket.evicted:
                self.log.debug("%s %s:%s evicted (idle, its slot was needed)", self.name, *peer)
        except Exception:
            # A bug in handling this one connection must not take the worker (and the engine)
            # down with it: close the connection, log it loudly, serve the others.
            self.failures += 1
            self.log.exception("%s %s:%s closed: internal error", self.name, *peer)
        finally:
            ticket.release()
            await trio.aclose_forcefully(stream)


def chosen_listener(options: Listener, default: Listener, listener: Listener | None) -> Listener:
    """The listener a worker was made with: ``listener`` if given (its separate options, here
    ``options``, must then be left at the worker's ``default``: ``TypeError`` otherwise), else
    ``options``."""
    if listener is None:
        return options
    if options != default:
        raise TypeError("pass either listener= or its options (host, port, limits...), not both")
    return listener


class ListeningWorker:
    """What a protocol worker on a :class:`ConnectionRunner` says of where it listens, read from
    its :attr:`listener` and :attr:`runner` (the RTMP and HTTP workers share it)."""

    listener: Listener
    runner: ConnectionRunner

    @property
    def host(self) -> str:
        return self.listener.host

    @property
    def requested_port(self) -> int:
        return self.listener.port

    @property
    def reuse_port(self) -> bool:
        return self.listener.reuse_port

    @property
    def unix_socket(self) -> str | None:
        return self.listener.unix_socket

    @property
    def port(self) -> int | None:
        """The bound TCP port, once serving."""
        return self.runner.port

    @property
    def listening(self) -> bool:
        return self.runner.listening

    @property
    def open_connections(self) -> int:
        """Open TCP connections."""
        return self.runner.admission.open
