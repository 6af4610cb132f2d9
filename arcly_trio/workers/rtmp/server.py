"""The RTMP protocol worker: OBS and ffmpeg publish to it, players play from it.

A thin trio adapter over the sans-IO cores (:mod:`arcly_trio.protocols.rtmp`,
:mod:`arcly_trio.media.flv`). :class:`RtmpServer` is the worker: it listens, admits and hands
each connection to one task, in the worker's nursery, and only one
(:class:`~arcly_trio.workers.rtmp.connection.RtmpConnection`: the handshake and the command
loop, see :mod:`.connection`); a player is a kernel sink
(:class:`~arcly_trio.workers.rtmp.play.RtmpPlayer`, see :mod:`.play` for the hot path) that the
stream's task writes to directly, and the connection's task drains what its socket did not take
(see :mod:`arcly_trio.workers.egress`).

RTMPS: with ``ssl_context`` the TCP listener speaks TLS (:func:`~arcly_trio.workers.listen.with_tls`;
the handshake is read within ``handshake_timeout``) and the worker's protocol is ``rtmps``;
``ssl_context`` may be replaced while serving (a certificate reloaded): new connections use the
new one, open ones keep theirs. A
TLS connection never takes the direct-write path on its socket: its bytes go through the
stream's ``send_all`` (see :mod:`arcly_trio.workers.egress`).

Resource handling (every limit is an argument of :class:`RtmpServer`; the listener's, in its
:class:`~arcly_trio.workers.serving.Listener`, are applied by its
:class:`~arcly_trio.workers.serving.ConnectionRunner`, which also closes each connection's stream):

* connection slots through an :class:`~arcly_trio.workers.admission.Admission`: a global cap
  where, among the connections that neither publish nor play, the one longest without
  progress is evicted to make room; a cap on idle connections per address that applies only
  while the server is near its global cap; and an optional cap per address. A connection
  reports its steps to its ticket (each handshake part, C0+C1 then C2, arriving whole; each
  command, media or data message) and is busy from the moment the server starts deciding on
  its publish or play (authorization may wait on a hook): so a client on its way to publish or
  play is never idle, however many come from one address;
* deadlines: the handshake must finish within ``handshake_timeout``; a connection must publish
  or play within ``setup_timeout``; one that does neither is closed after ``idle_timeout``
  without *progress* (a command, media or data message: bytes alone, or pings and
  acknowledgements, do not count); a socket that takes nothing for ``write_timeout`` (a player
  that stopped reading) closes the connection;
* a player's queue: at most the application's ``subscriber_queue`` frames wait for its socket
  (shared buffers, not copies); past that the kernel's lag policy drops to the next keyframe;
* memory: the sans-IO cores' size limits, small until a client publishes
  (``max_setup_buffer``), and a worker-wide :class:`~arcly_trio.core.budget.ByteBudget`
  (``max_partial_memory``) of partial-message bytes really held, given back when a
  connection ends.

Error handling: anything wrong with one connection — malformed bytes, oversized messages, a
message cut short by the peer closing, a refused connect, publish or play (after the refusal
is sent), a peer that vanishes, a timeout, even a bug in the connection's code — closes that
connection and logs one line with the peer address and the reason (peer text escaped), at the
level of its kind (``arcly_trio.server.logs``): a broken protocol a warning, a timeout or a
refusal of what it asked for information, an authorization refusal and a peer that went away
debug (the throttle logs the first; a play's or publish's "stopped" line says how it ended), a
bug an error with its traceback. Past ten of a kind from one address in 10 s they are summed up
(:class:`~arcly_trio.workers.clientlog.ClientLog`). The other workers' relays (the Unix socket)
are logged at debug level: they are not players. Nothing else is disturbed. Errors accepting
connections that mean overload (EMFILE...) are logged and retried by
:func:`trio.serve_listeners`; any other error in the worker itself propagates and stops the
engine.
"""

from __future__ import annotations

import logging
import ssl
from typing import TYPE_CHECKING

import trio

from arcly_trio.core.budget import ByteBudget
from arcly_trio.core.errors import PeerGone, ProtocolError, StreamError, WriteTimeout
from arcly_trio.transport import TRANSPORT_ERRORS, describe
from arcly_trio.workers.admission import Ticket
from arcly_trio.workers.rtmp.connection import (
    CloseConnection,
    DeadlinePassed,
    LeftBeforeHandshake,
    PublishEndedByKernel,
    Refused,
    RtmpConnection,
)
from arcly_trio.workers.serving import ConnectionRunner, Listener, ListeningWorker, chosen_listener

if TYPE_CHECKING:
    from arcly_trio.kernel.engine import Engine

__all__ = ["RtmpServer"]

log = logging.getLogger("arcly_trio.rtmp")


class RtmpServer(ListeningWorker):
    """The RTMP protocol worker; register it with ``EngineBuilder.protocol``.

    ``serve`` reports the bound port through ``task_status.started`` (port 0 picks one) and
    keeps it in ``self.port``. ``reuse_port`` listens with ``SO_REUSEPORT`` (several worker
    processes on one port); ``unix_socket`` also listens there (the local relay between
    workers: its players count under protocol ``"relay"``). ``ssl_context`` serves RTMPS on
    the TCP port. ``connections`` counts connections that publish or play (the
    engine's graceful shutdown waits for it to reach 0). See the module docstring for what
    each limit does. ``listener`` gives the listener's options at once (a
    :class:`~arcly_trio.workers.serving.Listener`, in place of ``host``, ``port``, the connection
    limits, ``write_timeout``, ``reuse_port``, ``unix_socket`` and ``ssl_context``; ``TypeError``
    if both are given).
    """

    def __init__(
        self,
        host: str = "0.0.0.0",
        port: int = 1935,
        *,
        chunk_size: int = 4096,
        handshake_timeout: float = 10.0,
        setup_timeout: float = 30.0,
        idle_timeout: float = 60.0,
        write_timeout: float = 30.0,
        max_connections: int = 4096,
        max_pending_per_address: int | None = 32,
        max_per_address: int | None = None,
        max_setup_buffer: int = 256 * 1024,
        max_partial_memory: int | None = 256 * 1024 * 1024,
        reuse_port: bool = False,
        unix_socket: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        listener: Listener | None = None,
    ) -> None:
        given = chosen_listener(
            Listener(
                host=host,
                port=port,
                max_connections=max_connections,
                max_pending_per_address=max_pending_per_address,
                max_per_address=max_per_address,
                write_timeout=write_timeout,
                reuse_port=reuse_port,
                unix_socket=unix_socket,
                ssl_context=ssl_context,
            ),
            DEFAULT_LISTENER,
            listener,
        )
        self.listener = given
        """Where and how this worker listens (see :mod:`..serving`)."""
        self.ssl_context = given.ssl_context
        self.name = "rtmps" if given.ssl_context is not None else "rtmp"
        """The protocol of this worker's clients (``rtmp`` or ``rtmps``)."""
        self.chunk_size = chunk_size
        self.handshake_timeout = handshake_timeout
        self.setup_timeout = setup_timeout
        self.idle_timeout = idle_timeout
        self.write_timeout = given.write_timeout
        self.max_setup_buffer = max_setup_buffer
        self.runner = ConnectionRunner(given, name=self.name, label="RTMP connection", log=log)
        """Listens, admits and runs the connections (see :mod:`..serving`)."""
        self.admission = self.runner.admission
        self.budget = ByteBudget(max_partial_memory)
        """Partial-message bytes held by all connections (see the module docstring)."""
        self.connections = 0
        self.clients = self.runner.clients
        """How bad and refused clients ended: a line each while few, per burst when many."""

    @property
    def play_protocols(self) -> tuple[str, ...]:
        """The protocols of this worker's players: its own, and ``relay`` (the other workers')."""
        return (self.name, "relay") if self.unix_socket else (self.name,)

    @property
    def publish_protocols(self) -> tuple[str, ...]:
        return (self.name,)

    def _tls_context(self) -> ssl.SSLContext:
        """The TLS context for the next connection: :attr:`ssl_context` may be replaced while
        serving (a certificate reloaded); connections already open keep theirs."""
        assert self.ssl_context is not None
        return self.ssl_context

    async def serve(self, engine: Engine, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        async def handler(stream: trio.abc.Stream, peer: tuple[str, int], ticket: Ticket) -> None:
            await self._handle(engine, stream, peer, ticket)

        await self.runner.serve(
            handler, context_of=self._tls_context if self.ssl_context is not None else None, task_status=task_status
        )

    async def _handle(self, engine: Engine, stream: trio.abc.Stream, peer: tuple[str, int], ticket: Ticket) -> None:
        """One admitted connection (the runner closes its stream and releases its ticket)."""
        connection = RtmpConnection(self, engine, stream, peer)
        connection.ticket = ticket
        clients, address, name = self.clients, peer[0], self.name
        try:
            await connection.run()
        except Refused as exc:
            level = logging.DEBUG if exc.authorization else logging.INFO
            clients.log(level, address, "refusals", "%s %s:%s %s", name, *peer, exc)
        except (CloseConnection, ProtocolError) as exc:
            clients.log(logging.WARNING, address, "protocol errors", "%s %s:%s closed: %s", name, *peer, exc)
        except (DeadlinePassed, WriteTimeout) as exc:
            level = logging.DEBUG if connection.told else logging.INFO  # else its "stopped playing" said it
            clients.log(level, address, "timeouts", "%s %s:%s closed: %s", name, *peer, exc)
        except PublishEndedByKernel as exc:  # its "stopped publishing" line said why
            log.debug("%s %s:%s closed: %s", name, *peer, exc)
        except (LeftBeforeHandshake, PeerGone, *TRANSPORT_ERRORS) as exc:
            # After a publish or play its "stopped" line has said how it ended.
            log.debug("%s %s:%s went away: %s", name, *peer, describe(exc))
        except StreamError as exc:
            clients.log(logging.WARNING, address, "errors", "%s %s:%s closed: %s", name, *peer, exc)
        finally:
            connection.session.close()
            if connection.busy:
                self.connections -= 1
                engine.activity.exit()


DEFAULT_LISTENER = Listener(host="0.0.0.0", port=1935, max_connections=4096)
"""The listener options :class:`RtmpServer` takes by default."""
