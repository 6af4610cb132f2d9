"""UDP MPEG-TS ingest: one configured UDP port (unicast, or a multicast group joined) publishes one
stream.

:class:`UdpTsIngest` is a protocol worker (``engine.serve`` starts it with ``nursery.start``;
``--ingest-udp [APP/STREAM=]udp://HOST:PORT``, repeatable). It binds its port, joins the
multicast group when ``HOST`` is one (``IP_ADD_MEMBERSHIP`` on the interface of the URL's
``localaddr=``, else the system's choice), and waits. The first datagram starts a publish of its
stream (``engine.publish``, protocol ``"udp"``) with the operator's credentials (``--publish-token``,
as ``--pull`` publishes): the authorizer, the publisher limits and the takeover policy apply as to
any publisher, and the session shows in ``/api/sessions`` (with the demuxer's counters:
:meth:`UdpTsIngest.session_details`) and in the metrics, events and audit log. The datagrams go
through a :class:`~arcly_trio.media.ts_demux.TsDemuxer` into the stream.

A stream that stops sending ends after ``idle`` seconds: each wait for the sender's next
datagram runs in a cancel scope with the deadline ``idle`` seconds after the last one, and when it
expires the publish block is left normally (the publish ends as ``closed``). The next datagram starts a new publish (the
stream restarts: players see a new publish, as with an RTMP publisher that reconnects).

Attacker's view: one stream per configured port, and only the first sender's datagrams feed it;
datagrams from any other address are dropped and counted (:attr:`UdpTsIngest.foreign`) without
state, until the session ends. A datagram is read into one preallocated buffer of 64 KiB; the
demuxer's own limits bound what it holds (see :mod:`~arcly_trio.media.ts_demux`), and the
stream's ingest queue (``publisher.send``) bounds the frames in flight: a sender faster than the
server loses datagrams in the kernel's socket buffer, as UDP does, which the demuxer counts as
continuity errors and repairs at the next keyframe. A refused publish (the authorizer, a
publisher already there under the ``reject`` policy), a kick, or bytes that are not MPEG-TS
(:class:`~arcly_trio.media.ts_demux.TsError`) are logged once, and that sender's datagrams are
then ignored until it has been silent for ``idle`` seconds, so a sender cannot make the server
retry a refused publish per datagram.

Error policy: nothing a datagram carries ends the worker; a session's failure ends that session
(logged with the sender's address and the reason, both printable). A port that cannot be bound or
a group that cannot be joined raises :class:`~arcly_trio.core.errors.CannotListen` from
:meth:`UdpTsIngest.serve` (the engine stops).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs
import trio

from arcly_trio.core.errors import CannotListen, StreamError
from arcly_trio.core.keys import Credentials, StreamKey
from arcly_trio.core.text import printable
from arcly_trio.kernel.engine import Engine
from arcly_trio.media.ts_demux import TsDemuxer, TsError, TsLimits, TsStats

__all__ = ["UdpTsIngest", "UdpTsSource", "parse_ingest_udp", "DEFAULT_IDLE", "PROTOCOL"]

log = logging.getLogger("arcly_trio.udpts")

PROTOCOL = "udp"
DEFAULT_IDLE = 5.0
_DATAGRAM = 65536
_RECEIVE_BUFFER = 4 * 1024 * 1024


@attrs.frozen
class UdpTsSource:
    """One ``--ingest-udp`` value: the stream, the address to bind, and for a multicast group the
    interface to join it on (``None``: the system's choice)."""

    key: StreamKey
    host: str
    port: int
    interface: str | None = None

    @property
    def multicast(self) -> bool:
        return ipaddress.ip_address(self.host).is_multicast


def parse_ingest_udp(value: str) -> UdpTsSource:
    """Parse ``[APP/STREAM=]udp://HOST:PORT[?localaddr=IFACE]`` (without ``APP/STREAM=``: the
    stream ``live/udp-PORT``). Raises ``ValueError`` with a reason for anything else."""
    name, sep, url = value.partition("=")
    if not sep or "://" in name:
        name, url = "", value
    parts = urlsplit(url)
    if parts.scheme != "udp":
        raise ValueError(f"--ingest-udp wants udp://HOST:PORT, not {printable(url)!r}")
    try:
        port = parts.port
        host = parts.hostname or ""
        ipaddress.IPv4Address(host)
    except ValueError:
        raise ValueError(f"--ingest-udp wants an IPv4 address and a port: {printable(url)!r}") from None
    if port is None or not 0 <= port <= 65535:
        raise ValueError(f"--ingest-udp wants a port: {printable(url)!r}")
    query = parse_qs(parts.query)
    interface = query.get("localaddr", [None])[0]
    if interface is not None:
        try:
            ipaddress.IPv4Address(interface)
        except ValueError:
            raise ValueError(f"--ingest-udp: localaddr must be an IPv4 address: {printable(url)!r}") from None
    try:
        key = StreamKey.parse(name.strip() or f"live/udp-{port}")
    except ValueError as exc:
        raise ValueError(f"--ingest-udp: {exc}") from None
    return UdpTsSource(key, host, port, interface)


@attrs.define
class _Session:
    """The live publish of one sender (for ``/api/sessions``)."""

    client_id: str
    sender: tuple[str, int]
    demuxer: TsDemuxer
    datagrams: int = 0

    def document(self) -> dict[str, Any]:
        stats: TsStats = self.demuxer.stats
        return {
            "udp": {
                "sender": f"{self.sender[0]}:{self.sender[1]}",
                "datagrams": self.datagrams,
                **{field.name: getattr(stats, field.name) for field in attrs.fields(TsStats)},
            }
        }


class UdpTsIngest:
    """The UDP MPEG-TS ingest of one configured port (see the module docstring).

    Args:
        source: the stream and the address (:func:`parse_ingest_udp`).
        idle: seconds without a datagram of its sender before a publish ends.
        credentials: what the stream is published with (``token``: the publish token).
        limits: the demuxer's limits.
    """

    name = "udp-ts"
    publish_protocols = (PROTOCOL,)
    """What its publishers are counted under (the metrics list it at 0 before the first)."""

    def __init__(
        self,
        source: UdpTsSource,
        *,
        idle: float = DEFAULT_IDLE,
        credentials: Credentials | None = None,
        limits: TsLimits = TsLimits(),  # noqa: B008 (frozen)
    ) -> None:
        if idle <= 0:
            raise ValueError("idle must be > 0")
        self.source = source
        self.idle = idle
        self.credentials = credentials or Credentials()
        self.limits = limits
        self.port: int | None = None
        self.listening = False
        self.foreign = 0
        """Datagrams from another address than the sender of the live session (dropped)."""
        self.ignored = 0
        """Datagrams dropped while a refused or failed sender was waited out."""
        self.sessions_started = 0
        self.session: _Session | None = None
        self._socket: trio.socket.SocketType | None = None
        self._buffer = bytearray(_DATAGRAM)

    def _open(self) -> trio.socket.SocketType:
        source = self.source
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RECEIVE_BUFFER)
            if source.multicast:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            return sock
        except OSError:
            sock.close()
            raise

    async def serve(self, engine: Engine, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        source = self.source
        sock = self._open()
        try:
            try:
                await sock.bind((source.host, source.port))
                if source.multicast:
                    interface = socket.inet_aton(source.interface or "0.0.0.0")
                    membership = socket.inet_aton(source.host) + interface
                    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
            except OSError as exc:
                raise CannotListen(PROTOCOL, source.host, source.port, exc.errno, exc.strerror or str(exc)) from exc
            self._socket = sock
            self.port = sock.getsockname()[1]
            self.listening = True
            joined = f" (group joined on {source.interface or 'the default interface'})" if source.multicast else ""
            log.info("udp mpeg-ts ingest of %s on %s:%d%s", source.key, source.host, self.port, joined)
            task_status.started(self.port)
            while True:
                size, sender = await sock.recvfrom_into(self._buffer)
                await self._run_session(engine, bytes(self._buffer[:size]), sender)
        finally:
            self.listening = False
            self._socket = None
            sock.close()

    async def _receive(self, sender: tuple[str, int]) -> bytes:
        """The next datagram of ``sender`` (others are counted and dropped)."""
        assert self._socket is not None
        while True:
            size, address = await self._socket.recvfrom_into(self._buffer)
            if address == sender:
                return bytes(self._buffer[:size])
            self.foreign += 1

    async def _run_session(self, engine: Engine, first: bytes, sender: tuple[str, int]) -> None:
        """Publish from ``sender`` until it has been silent for ``idle`` seconds (or fails)."""
        where = f"{printable(sender[0])}:{sender[1]}"
        key = self.source.key
        credentials = attrs.evolve(self.credentials, peer=sender, protocol=PROTOCOL, client_id=engine.sessions.new_id())
        demuxer = TsDemuxer(limits=self.limits)
        session = _Session(credentials.client_id, sender, demuxer, datagrams=1)
        failure: str | None = None
        try:
            async with engine.publish(key, credentials, protocol=PROTOCOL) as publisher:
                self.session = session
                self.sessions_started += 1
                log.info("udp mpeg-ts publish of %s from %s", key, where)
                data, last = first, trio.current_time()
                while True:
                    for frame in demuxer.feed(data):
                        await publisher.send(frame)
                    with trio.move_on_at(last + self.idle) as waiting:
                        data = await self._receive(sender)
                    if waiting.cancelled_caught:  # silent for idle seconds: the publish ends as closed
                        for frame in demuxer.flush():  # with its last access unit
                            await publisher.send(frame)
                        break
                    last = trio.current_time()
                    session.datagrams += 1
            stats = demuxer.stats
            log.info(
                "udp mpeg-ts publish of %s from %s ended: no datagram for %g s (%d packets, %d lost, %d resyncs)",
                key,
                where,
                self.idle,
                stats.packets,
                stats.lost_packets,
                stats.resyncs,
            )
        except TsError as exc:
            failure = f"not MPEG-TS: {exc}"
        except StreamError as exc:
            failure = printable(str(exc))
        finally:
            self.session = None
        if failure is None:
            return
        log.warning("udp mpeg-ts publish of %s from %s ended: %s", key, where, failure)
        await self._wait_out(sender)

    async def _wait_out(self, sender: tuple[str, int]) -> None:
        """Ignore ``sender`` until it has been silent for ``idle`` seconds."""
        with trio.CancelScope(deadline=trio.current_time() + self.idle) as scope:
            while True:
                await self._receive(sender)
                self.ignored += 1
                scope.deadline = trio.current_time() + self.idle

    def session_details(self, client_id: str) -> dict[str, Any] | None:
        """The demuxer's counters of the live session with this client id (``/api/sessions``)."""
        session = self.session
        if session is None or session.client_id != client_id:
            return None
        document = session.document()
        document["udp"]["foreign_datagrams"] = self.foreign  # the port's, since it was bound
        return document

    def status(self) -> dict[str, Any]:
        """Counters for ``/api/health``."""
        return {
            "port": self.port,
            "stream": str(self.source.key),
            "publishing": self.session is not None,
            "sessions": self.sessions_started,
            "foreign_datagrams": self.foreign,
            "ignored_datagrams": self.ignored,
        }
