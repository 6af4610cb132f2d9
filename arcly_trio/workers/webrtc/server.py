"""The WebRTC worker: WHIP publishers and WHEP viewers on one UDP port (and ICE-TCP on its number).

:class:`WebRtcServer` is a protocol worker (``engine.serve`` starts it with ``nursery.start``)
that is also a route installer: the HTTP worker gives it its router, and the WHIP/WHEP
exchanges (:mod:`.routes`) create sessions here (:meth:`WebRtcServer.open`). Each session is one
task in this worker's nursery (:class:`~.peer.PeerSession`), started with ``nursery.start`` so
that the engine's refusal or the SDP answer goes back to the HTTP request that asked.

All media share one UDP port (``port``, default 8189), as with SRS, MediaMTX and
OvenMediaEngine: one receive task reads every datagram and hands it to its session's inbox:

* from an address a session has bound (one that passed that session's ICE check): to it;
* else, a STUN binding request whose ``USERNAME`` starts with a live session's ICE username
  fragment: to that session, whose ICE agent checks its ``MESSAGE-INTEGRITY`` before answering
  or binding anything;
* anything else is dropped and counted (:attr:`WebRtcServer.unrouted`): no state, no answer.

The answer announces host candidates for ``candidate_hosts`` (``--webrtc-host``, or the
addresses found on this machine when listening on every address) on the UDP port, then, with a
lower priority, ``tcptype passive`` ones on a TCP listener of the same port number (ICE-TCP,
RFC 6544, for networks that block UDP: see :mod:`.tcp`; its connections are routed like
datagrams, by the ufrag of their first STUN check). ``transports`` chooses what is announced:
``("udp", "tcp")`` by default, ``("tcp",)`` to have clients use TCP only.

Attacker's view: sessions exist only after an authorized WHIP/WHEP exchange, at most
``max_sessions`` in all and ``max_sessions_per_address`` per client address (the HTTP
request's); a datagram from elsewhere costs one dictionary lookup and, for STUN, one bounded
parse. Nothing is ever sent to an address that has not proved it knows a session's ICE password,
and a STUN answer is never larger than its request.

Error policy: a session's failure ends that session only (see :mod:`.peer`); the receive loop
survives anything a datagram carries. A port that cannot be bound raises
:class:`~arcly_trio.core.errors.CannotListen` from :meth:`serve` (the engine stops).
"""

from __future__ import annotations

import logging
import socket
import weakref
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import attrs
import trio

from arcly_trio.core.errors import ArclyError, CannotListen
from arcly_trio.core.keys import Credentials, StreamKey
from arcly_trio.kernel.engine import Engine
from arcly_trio.protocols.http.router import Router
from arcly_trio.protocols.webrtc.certificate import DtlsCertificate
from arcly_trio.protocols.webrtc.demux import PacketKind, classify
from arcly_trio.protocols.webrtc.ice import local_ufrag
from arcly_trio.protocols.webrtc.sdp import Answer, Candidate, LocalEndpoint, SessionDescription
from arcly_trio.protocols.webrtc.stun import StunError, parse_stun
from arcly_trio.workers.webrtc import routes
from arcly_trio.workers.webrtc.ingest import WhipSession
from arcly_trio.workers.webrtc.peer import PeerSession
from arcly_trio.workers.webrtc.tcp import TcpPort, open_tcp
from arcly_trio.workers.webrtc.ticker import Ticker
from arcly_trio.workers.webrtc.udp import UdpPort, open_udp
from arcly_trio.workers.webrtc.viewer import PictureIds, WhepSession

__all__ = ["WebRtcServer", "WebRtcBusy", "DEFAULT_PORT", "RECEIVE_BATCH"]

log = logging.getLogger("arcly_trio.webrtc")

DEFAULT_PORT = 8189
RECEIVE_BATCH = 64
"""Datagrams the receive task reads per wakeup at most (:meth:`~.udp.UdpPort.receive_batch`):
a burst is drained at once, and each goes to its session's bounded inbox without waiting."""
TRANSPORTS = ("udp", "tcp")
_UDP_PRIORITY = 2130706431
"""Type preference 126 (host), local preference 65535, component 1."""
_TCP_PRIORITY = 1518280447
"""Below every UDP candidate (what Chromium gives its own TCP host candidates)."""
_PORT_TRIES = 8


class WebRtcBusy(ArclyError):
    """No room for another WebRTC session (``status``: 503 in all, 429 for one address)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def local_addresses() -> list[str]:
    """This machine's addresses to announce when listening on every address: loopback and
    the address of the default route (found without sending anything)."""
    found = ["127.0.0.1"]
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))  # TEST-NET-1: routing only, no packet is sent
        address = probe.getsockname()[0]
        if address not in found and not address.startswith("0."):
            found.append(address)
    except OSError:
        pass
    finally:
        probe.close()
    return found


class WebRtcServer:
    """The WebRTC worker (see the module docstring).

    Args:
        host, port: where the UDP port listens (port 0 picks one: see :attr:`port_number`).
        candidate_hosts: the addresses announced to peers (behind NAT: the public one);
            default: ``host``, or this machine's addresses when ``host`` is ``0.0.0.0``.
        announced_port: the port announced in the candidates when it is not the bound one (a
            port forwarded by NAT or a relay in front of the server); default: the bound port.
        certificate: the DTLS certificate (default: a self-signed ECDSA one made at start).
        ice_servers: STUN/TURN URLs offered to clients in ``Link`` headers.
        max_sessions, max_sessions_per_address: session limits.
        handshake_timeout: seconds ICE and DTLS have to complete after the answer.
        session_timeout: seconds without anything valid from a peer before its session ends.
        mtu: the largest RTP payload sent (RTP header and SRTP tag come on top).
        transports: the candidates announced: ``"udp"``, ``"tcp"`` (ICE-TCP passive on the same
            port number) or both (UDP first: ffmpeg reads only the first candidate).
        max_tcp_links, max_tcp_links_per_address: ICE-TCP connection limits.
        tcp_hello_timeout: seconds an ICE-TCP connection has to pass a session's ICE check.
        id_prefix: what starts every session's resource id (``w{index}-`` under ``--workers``).
        elsewhere: ``await elsewhere(session_id, path)`` passes a ``DELETE`` of a session this
            worker does not hold to the worker that does (``--workers``); whether it ended one.
    """

    name = "webrtc"

    def __init__(
        self,
        host: str = "0.0.0.0",
        port: int = DEFAULT_PORT,
        *,
        candidate_hosts: Sequence[str] = (),
        announced_port: int | None = None,
        certificate: DtlsCertificate | None = None,
        ice_servers: Sequence[str] = (),
        max_sessions: int = 2000,
        max_sessions_per_address: int = 32,
        handshake_timeout: float = 10.0,
        session_timeout: float = 30.0,
        mtu: int = 1200,
        id_prefix: str = "",
        elsewhere: Callable[[str, str], Awaitable[bool]] | None = None,
        transports: Sequence[str] = TRANSPORTS,
        max_tcp_links: int = 1000,
        max_tcp_links_per_address: int = 16,
        tcp_hello_timeout: float = 5.0,
    ) -> None:
        transports = tuple(transports)
        if not transports or any(t not in TRANSPORTS for t in transports) or len(set(transports)) != len(transports):
            raise ValueError(f"transports: some of {TRANSPORTS}, not {transports!r}")
        self.transports = transports
        self.max_tcp_links = max_tcp_links
        self.max_tcp_links_per_address = max_tcp_links_per_address
        self.tcp_hello_timeout = tcp_hello_timeout
        self.host = host
        self.requested_port = port
        self.candidate_hosts = tuple(candidate_hosts)
        self.announced_port = announced_port
        self._certificate = certificate
        self.ice_servers = tuple(ice_servers)
        self.max_sessions = max_sessions
        self.max_sessions_per_address = max_sessions_per_address
        self.handshake_timeout = handshake_timeout
        self.session_timeout = session_timeout
        self.mtu = mtu
        self.id_prefix = id_prefix
        self.elsewhere = elsewhere
        self.engine: Engine = None  # type: ignore[assignment]  # set by serve()
        self._port: UdpPort | None = None
        self._tcp: TcpPort | None = None
        self._nursery: trio.Nursery | None = None
        self.ticker = Ticker()
        """The WHEP viewers' sender reports: one task for all, spread over the second (:mod:`.ticker`)."""
        self.sessions: dict[str, PeerSession] = {}
        self.by_ufrag: dict[str, PeerSession] = {}
        self.by_address: dict[tuple[str, int], PeerSession] = {}
        self.by_client: dict[str, PeerSession] = {}
        self.publishers: dict[StreamKey, WhipSession] = {}
        self.per_address: Counter[str] = Counter()
        self.unrouted = 0
        """Datagrams no session owns (dropped without state)."""
        self.refused_busy = 0
        self.ended_nacks = 0
        self.ended_retransmitted = 0
        self._announced: tuple[Candidate, ...] = ()
        self._pictures: weakref.WeakValueDictionary[StreamKey, PictureIds] = weakref.WeakValueDictionary()

    # ------------------------------------------------------------------ properties

    @property
    def port(self) -> UdpPort:
        assert self._port is not None, "the WebRTC worker is not serving"
        return self._port

    @property
    def port_number(self) -> int | None:
        """The bound UDP port, once serving."""
        return self._port.address[1] if self._port is not None else None

    @property
    def tcp(self) -> TcpPort | None:
        """The ICE-TCP listener, once serving with ``"tcp"`` in :attr:`transports`."""
        return self._tcp

    @property
    def certificate(self) -> DtlsCertificate:
        if self._certificate is None:
            self._certificate = DtlsCertificate.generate()
        return self._certificate

    @property
    def serving(self) -> bool:
        return self._nursery is not None

    # ------------------------------------------------------------------ the worker

    async def serve(self, engine: Engine, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        self.engine = engine
        self.certificate  # noqa: B018 - made now, not on the first request
        self._open_ports()
        bound = self.port.address[1]
        hosts = self.candidate_hosts or (tuple(local_addresses()) if self.host in ("0.0.0.0", "::") else (self.host,))
        announced = []
        for transport in self.transports:
            for index, host in enumerate(hosts):
                tcp = transport == "tcp"
                announced.append(
                    Candidate(
                        foundation=str(len(announced) + 1),
                        transport=transport,
                        priority=(_TCP_PRIORITY if tcp else _UDP_PRIORITY) - index,
                        host=host,
                        port=self.announced_port or bound,
                        tcptype="passive" if tcp else None,
                    )
                )
        self._announced = tuple(announced)
        listening = "+".join(self.transports)
        log.info("webrtc listening on %s %s:%d (candidates %s)", listening, self.host, bound, ", ".join(hosts))
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                if self._tcp is not None:
                    nursery.start_soon(self._tcp.serve, self)
                await nursery.start(self.ticker.run)
                task_status.started(bound)
                await self._receive_loop()
        finally:
            self._nursery = None
            self.port.close()
            if self._tcp is not None:
                self._tcp.close()

    def _open_ports(self) -> None:
        """Bind the UDP port, and the TCP listener on its number (port 0: a number free for both)."""
        for attempt in range(_PORT_TRIES):
            self._port = open_udp(self.host, self.requested_port)
            if "tcp" not in self.transports:
                return
            try:
                self._tcp = open_tcp(
                    self.host,
                    self._port.address[1],
                    max_links=self.max_tcp_links,
                    max_links_per_address=self.max_tcp_links_per_address,
                    hello_timeout=self.tcp_hello_timeout,
                )
                return
            except CannotListen:
                self._port.close()
                self._port = None
                if self.requested_port != 0 or attempt == _PORT_TRIES - 1:
                    raise

    def install_routes(self, router: Router) -> None:
        routes.install(router, self)

    async def _receive_loop(self) -> None:
        port = self.port
        by_address = self.by_address
        while True:
            for data, address in await port.receive_batch(RECEIVE_BATCH):
                session = by_address.get(address)
                if session is None:
                    session = self.route_stun(data)
                    if session is None:
                        self.unrouted += 1
                        continue
                session.deliver(data, address)

    def route_stun(self, data: bytes) -> PeerSession | None:
        """The live session a STUN request's ``USERNAME`` names (its ICE agent checks the rest),
        for a datagram from an unbound address or an ICE-TCP connection's first frames."""
        if classify(data) is not PacketKind.STUN:
            return None
        try:
            ufrag = local_ufrag(parse_stun(data))
        except StunError:
            return None
        return self.by_ufrag.get(ufrag) if ufrag is not None else None

    # ------------------------------------------------------------------ what sessions ask

    def local_endpoint(self, ufrag: str, pwd: str) -> LocalEndpoint:
        return LocalEndpoint(
            ice_ufrag=ufrag,
            ice_pwd=pwd,
            fingerprint=f"sha-256 {self.certificate.fingerprint('sha-256')}",
            candidates=self._announced,
        )

    def bind(self, session: PeerSession, address: tuple[str, int]) -> bool:
        """Route ``address`` to ``session`` (it passed the session's ICE check)."""
        previous = self.by_address.get(address)
        if previous is not None and previous is not session:
            previous.addresses.discard(address)
        self.by_address[address] = session
        return True

    def request_keyframe(self, key: StreamKey) -> None:
        """A WHEP viewer wants a keyframe: ask the stream's WHIP publisher, if it has one here."""
        publisher = self.publishers.get(key)
        if publisher is not None:
            publisher.request_keyframe()

    def picture_ids(self, key: StreamKey) -> PictureIds:
        """The VP9 picture ids of ``key``'s shared packetization (kept while a viewer holds them)."""
        found = self._pictures.get(key)
        if found is None:
            found = self._pictures[key] = PictureIds()
        return found

    def publishing(self, session: WhipSession) -> None:
        self.publishers[session.key] = session

    def unpublishing(self, session: WhipSession) -> None:
        if self.publishers.get(session.key) is session:
            del self.publishers[session.key]

    # ------------------------------------------------------------------ the HTTP side

    async def open(
        self, kind: str, key: StreamKey, credentials: Credentials, offer: SessionDescription
    ) -> tuple[PeerSession, Answer]:
        """Start a ``"whep"`` or ``"whip"`` session for an offer: the session and its answer.

        Raises :class:`WebRtcBusy`, the engine's refusal (``Unauthorized``, ``StreamNotFound``...)
        or :class:`~arcly_trio.protocols.webrtc.sdp.NoCommonCodec`.
        """
        nursery = self._nursery
        if nursery is None:
            raise WebRtcBusy("WebRTC is not serving", 503)
        address = credentials.peer[0] if credentials.peer is not None else "?"
        if len(self.sessions) >= self.max_sessions:
            self.refused_busy += 1
            raise WebRtcBusy(f"the server holds its maximum of {self.max_sessions} WebRTC sessions", 503)
        if self.per_address[address] >= self.max_sessions_per_address:
            self.refused_busy += 1
            raise WebRtcBusy(f"too many WebRTC sessions from {address} (at most {self.max_sessions_per_address})", 429)
        if not credentials.client_id:
            credentials = attrs.evolve(credentials, client_id=self.engine.sessions.new_id())
        cls: type[PeerSession] = WhepSession if kind == "whep" else WhipSession
        session = cls(self, key, credentials, offer)
        self._remember(session, address)
        try:
            answer: Answer = await nursery.start(self._run, session, address)
        except BaseException:
            self._forget(session, address)
            raise
        return session, answer

    async def _run(self, session: PeerSession, address: str, *, task_status: trio.TaskStatus[Answer]) -> None:
        try:
            await session.run(task_status=task_status)
        finally:
            self._forget(session, address)

    def _remember(self, session: PeerSession, address: str) -> None:
        self.sessions[session.id] = session
        self.by_ufrag[session.ufrag] = session
        self.by_client[session.client_id] = session
        self.per_address[address] += 1

    def _forget(self, session: PeerSession, address: str) -> None:
        if self.sessions.pop(session.id, None) is None:
            return
        self.by_ufrag.pop(session.ufrag, None)
        self.by_client.pop(session.client_id, None)
        for bound in session.addresses:
            if self.by_address.get(bound) is session:
                del self.by_address[bound]
        self.ended_nacks += session.stats.nacks
        self.ended_retransmitted += session.stats.retransmitted
        self.per_address[address] -= 1
        if self.per_address[address] <= 0:
            del self.per_address[address]

    def has_session(self, session_id: str, key: StreamKey, kind: str) -> bool:
        """Whether ``session_id`` is a live session of that kind on that stream."""
        session = self.sessions.get(session_id)
        return session is not None and session.key == key and session.kind == kind

    async def close_elsewhere(self, session_id: str, path: str) -> bool:
        """``DELETE`` of a session another worker of ``--workers`` holds (its id does not start
        with this worker's prefix): passed on to it with ``elsewhere``; whether it ended one."""
        if self.elsewhere is None or session_id.startswith(self.id_prefix):
            return False
        return await self.elsewhere(session_id, path)

    def close_session(self, session_id: str, key: StreamKey, kind: str) -> bool:
        """``DELETE`` of a session's resource: end it; whether it existed (for this stream and kind)."""
        session = self.sessions.get(session_id)
        if session is None or session.key != key or session.kind != kind:
            return False
        session.close("ended by the client (DELETE)")
        return True

    def session_details(self, client_id: str) -> dict[str, Any] | None:
        """The link figures of the session with this client id (``/api/sessions``), if it is ours."""
        session = self.by_client.get(client_id)
        return session.document() if session is not None else None

    def status(self) -> dict[str, Any]:
        """Counters for ``/api/health`` and the metrics."""
        port = self._port
        return {
            "port": self.port_number,
            "sessions": len(self.sessions),
            "viewers": sum(1 for s in self.sessions.values() if s.kind == "whep"),
            "publishers": sum(1 for s in self.sessions.values() if s.kind == "whip"),
            "unrouted_datagrams": self.unrouted,
            "send_drops": port.send_drops if port is not None else 0,
            "gso": port.gso if port is not None else False,
            "gso_sends": port.gso_sends if port is not None else 0,
            **self._tcp_status(),
            "refused_busy": self.refused_busy,
            # totals that survive the sessions (monotonic, for counters): the ended ones' and the live ones'
            "nacks": self.ended_nacks + sum(s.stats.nacks for s in self.sessions.values()),
            "retransmitted": self.ended_retransmitted + sum(s.stats.retransmitted for s in self.sessions.values()),
        }

    def _tcp_status(self) -> dict[str, Any]:
        tcp = self._tcp
        if tcp is None:
            return {}
        return {
            "tcp_links": len(tcp.links),
            "tcp_refused": tcp.refused,
            "tcp_strangers": tcp.strangers,
            "tcp_hello_timeouts": tcp.hello_timeouts,
            "tcp_send_drops": sum(link.drops for link in tcp.links),
            "tcp_stalled": tcp.stalled,
        }
