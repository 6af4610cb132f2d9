"""The RTSP protocol worker: players read any stream over RTSP, encoders and cameras publish.

A thin trio adapter over the sans-IO RTSP cores (:mod:`arcly_trio.protocols.rtsp`) and the RTP
layer shared with WebRTC. :class:`RtspServer` listens (``--rtsp-port``, default 8554), admits
and hands each connection to one task (:class:`~.connection.RtspConnection`); a player is a
kernel sink (:class:`~.play.RtspSink`, see :mod:`.play` for the hot path) that the stream's task
writes to directly. RTP over UDP uses port pairs from ``udp_ports`` (``--rtsp-udp-ports``);
without a range only TCP interleaved is offered.

RTSPS: with ``ssl_context`` (``--rtsps-port``, the certificate of ``--tls-cert``) the same
worker speaks TLS on its TCP listener (:func:`~arcly_trio.workers.listen.with_tls`) and its
protocol is ``rtsps``; it offers TCP interleaved only (RTP over UDP would leave the TLS
channel in clear, so ``udp_ports`` is ignored). ``ssl_context`` may be replaced while serving
(a certificate reloaded): new connections use the new one, open ones keep theirs.

Resource handling: connection slots and per-address caps through the listener's
:class:`~arcly_trio.workers.admission.Admission` (as RTMP); one session per connection, at most
:data:`~.connection.MAX_TRACKS` tracks each (so interleaved channels and UDP pairs are bounded
per connection, and per address by the admission caps); request heads bounded in size by the
reader and in time by ``head_timeout``; sessions end ``session_timeout`` after the last
keep-alive; a player's queue is the application's ``subscriber_queue`` frames, past which the
kernel drops to the next keyframe and evicts past the lag budget; a socket that takes nothing
for ``write_timeout`` closes the connection.

Error handling: anything wrong with one connection (malformed requests, answered 400 first;
timeouts; refusals; a peer that goes away; a bug) closes that connection and logs one line with
the peer address and the reason, at the level of its kind through the
:class:`~arcly_trio.workers.clientlog.ClientLog`; nothing else is disturbed. A port that cannot
be bound stops the engine (:class:`~arcly_trio.core.errors.CannotListen`).
"""

from __future__ import annotations

import logging
import ssl
from typing import TYPE_CHECKING

import trio

from arcly_trio.core.errors import PeerGone, ProtocolError, PublishEnded, StreamError, WriteTimeout
from arcly_trio.transport import TRANSPORT_ERRORS, describe
from arcly_trio.workers.admission import Ticket
from arcly_trio.workers.rtsp.connection import CloseConnection, Refused, RtspConnection
from arcly_trio.workers.rtsp.udp import UdpPorts
from arcly_trio.workers.serving import ConnectionRunner, Listener, ListeningWorker, chosen_listener

if TYPE_CHECKING:
    from arcly_trio.kernel.engine import Engine

__all__ = ["RtspServer", "DEFAULT_LISTENER"]

log = logging.getLogger("arcly_trio.rtsp")


class RtspServer(ListeningWorker):
    """The RTSP protocol worker; register it with ``EngineBuilder.protocol``.

    ``serve`` reports the bound port through ``task_status.started`` (port 0 picks one).
    ``max_sessions_per_address`` caps the sessions one address holds at once (``None``: no
    cap), so one client cannot take every UDP port pair. ``udp_ports`` is the ``(low, high)``
    range of RTP/RTCP port pairs for UDP transport (``None``: TCP interleaved only).
    ``ssl_context`` serves RTSPS (TLS, TCP interleaved only; the protocol is ``rtsps``).
    ``connections`` counts connections that play or publish.
    """

    def __init__(
        self,
        host: str = "0.0.0.0",
        port: int = 8554,
        *,
        udp_ports: tuple[int, int] | None = None,
        head_timeout: float = 10.0,
        setup_timeout: float = 30.0,
        session_timeout: float = 60.0,
        write_timeout: float = 30.0,
        max_connections: int = 4096,
        max_per_address: int | None = None,
        max_sessions_per_address: int | None = 64,
        listener: Listener | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        given = chosen_listener(
            Listener(
                host=host,
                port=port,
                max_connections=max_connections,
                max_per_address=max_per_address,
                write_timeout=write_timeout,
                ssl_context=ssl_context,
            ),
            DEFAULT_LISTENER,
            listener,
        )
        self.listener = given
        self.ssl_context = given.ssl_context
        """The TLS context of RTSPS (``None``: plain RTSP); may be replaced while serving."""
        self.name = "rtsps" if given.ssl_context is not None else "rtsp"
        self.head_timeout = head_timeout
        self.setup_timeout = setup_timeout
        self.session_timeout = session_timeout
        self.write_timeout = given.write_timeout
        self.udp = UdpPorts(given.host, *udp_ports) if udp_ports is not None and self.ssl_context is None else None
        self.runner = ConnectionRunner(given, name=self.name, label="RTSP connection", log=log)
        self.admission = self.runner.admission
        self.connections = 0
        self.max_sessions_per_address = max_sessions_per_address
        self.sessions_per_address: dict[str, int] = {}
        """Sessions (a DESCRIBE or ANNOUNCE that succeeded, until the connection ends) per address."""
        self.publishers: set[RtspConnection] = set()
        self.clients = self.runner.clients

    @property
    def play_protocols(self) -> tuple[str, ...]:
        return (self.name,)

    @property
    def publish_protocols(self) -> tuple[str, ...]:
        return (self.name,)

    def publishing(self, connection: RtspConnection) -> None:
        self.publishers.add(connection)

    def unpublishing(self, connection: RtspConnection) -> None:
        self.publishers.discard(connection)

    async def serve(self, engine: Engine, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        async def handler(stream: trio.abc.Stream, peer: tuple[str, int], ticket: Ticket) -> None:
            await self._handle(engine, stream, peer, ticket)

        await self.runner.serve(
            handler, context_of=self._tls_context if self.ssl_context is not None else None, task_status=task_status
        )

    def _tls_context(self) -> ssl.SSLContext:
        """The TLS context for the next connection (:attr:`ssl_context` may be replaced)."""
        assert self.ssl_context is not None
        return self.ssl_context

    async def _handle(self, engine: Engine, stream: trio.abc.Stream, peer: tuple[str, int], ticket: Ticket) -> None:
        connection = RtspConnection(self, engine, stream, peer)
        connection.ticket = ticket
        clients, address, name = self.clients, peer[0], self.name
        try:
            await connection.run()
        except Refused as exc:
            level = logging.DEBUG if exc.authorization else logging.INFO
            clients.log(level, address, "refusals", "%s %s:%s %s", name, *peer, exc)
        except (CloseConnection, ProtocolError) as exc:
            clients.log(logging.INFO, address, "closed", "%s %s:%s closed: %s", name, *peer, exc)
        except WriteTimeout as exc:
            clients.log(logging.INFO, address, "timeouts", "%s %s:%s closed: %s", name, *peer, exc)
        except PublishEnded as exc:
            log.info("%s %s:%s publish ended: %s", name, *peer, exc)
        except (PeerGone, *TRANSPORT_ERRORS) as exc:
            log.debug("%s %s:%s went away: %s", name, *peer, describe(exc))
        except StreamError as exc:
            clients.log(logging.WARNING, address, "errors", "%s %s:%s closed: %s", name, *peer, exc)
        finally:
            if connection.busy:
                self.connections -= 1
                engine.activity.exit()


DEFAULT_LISTENER = Listener(host="0.0.0.0", port=8554, max_connections=4096)
"""The listener options :class:`RtspServer` takes by default."""
