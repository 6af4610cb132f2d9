"""One WebRTC peer connection: ICE-lite, DTLS-SRTP and its timers, driven by one trio task.

A :class:`PeerSession` is what a WHEP viewer (:mod:`.viewer`) or a WHIP publisher
(:mod:`.ingest`) has in common. The sans-IO cores do the protocol work
(:mod:`arcly_trio.protocols.webrtc`: :class:`~arcly_trio.protocols.webrtc.ice.IceLiteAgent`,
:class:`~arcly_trio.protocols.webrtc.dtls.DtlsTransport`,
:class:`~arcly_trio.protocols.webrtc.srtp.SrtpContext`, the RFC 7983 demux); this module moves
datagrams between them and the server's one UDP port, and keeps their clocks with trio's. A
path may also be an ICE-TCP connection (:mod:`.tcp`): its frames arrive like datagrams, tagged
with their link; a link that passed a check is bound to the session (:attr:`PeerSession.links`)
and, once the peer selects it, carries everything the session sends (:attr:`PeerSession.link`).

Life of a session, all in its one task (:meth:`PeerSession.run`, started by the server with
``nursery.start``): the subclass's :meth:`~PeerSession.admitted` goes through the engine (``attach``
for a viewer, ``publish`` for a publisher: the one authorization path) and negotiates the SDP
answer, which goes back to the HTTP handler through ``task_status.started``. Then the task
waits for datagrams (the server's receive task hands them over through a bounded channel, see
:meth:`deliver`) or for its next deadline (one cancel scope per timer period, its deadline moved
when a datagram brings it earlier): a DTLS retransmission, the subclass's tick (RTCP
reports, NACKs; a WHEP viewer's sender reports run from the worker's one ticker instead, see
:mod:`.ticker`), the end of the handshake window, the end of the peer's liveness.

Attacker's view: a session is created only by an authorized WHIP/WHEP exchange. Before that,
the server keeps no state for a datagram (see :mod:`.server`). A STUN request must carry the
session's username and pass ``MESSAGE-INTEGRITY`` to be answered, and only an address (or an
ICE-TCP link) that did so may speak DTLS or SRTP to the session (others are dropped, counted). The inbox is bounded
(:data:`INBOX`: a flood is dropped, counted, not queued); ICE and DTLS must complete within
``handshake_timeout`` seconds of the answer, and a session that receives nothing valid for
``session_timeout`` seconds ends. A session binds at most :data:`MAX_ADDRESSES` addresses and links.

Error policy: bad input from the peer (a malformed STUN, RTP or RTCP packet, SRTP that fails
authentication) is dropped and counted in :class:`LinkStats`; a DTLS failure, a silent peer or
a handshake that does not finish ends the session with a reason (:attr:`PeerSession.end_reason`,
logged once). A refusal before the answer (the engine's, or
:class:`~arcly_trio.protocols.webrtc.sdp.NoCommonCodec`) is raised to the HTTP handler. Nothing
a session meets after its answer is raised into the server's nursery: an unexpected exception
is logged with its traceback and ends that session only.
"""

from __future__ import annotations

import logging
import secrets
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import attrs
import trio

from arcly_trio.core.errors import ArclyError
from arcly_trio.core.keys import Credentials, StreamKey
from arcly_trio.core.text import printable
from arcly_trio.protocols.webrtc.demux import PacketKind, classify
from arcly_trio.protocols.webrtc.dtls import DtlsError, DtlsTransport
from arcly_trio.protocols.webrtc.ice import IceLiteAgent, new_credentials
from arcly_trio.protocols.webrtc.rtcp import RtcpError, parse_rtcp
from arcly_trio.protocols.webrtc.rtp import RtpError, RtpPacket, parse_rtp
from arcly_trio.protocols.webrtc.sdp import Answer, LocalEndpoint, SessionDescription
from arcly_trio.protocols.webrtc.srtp import SrtpContext, SrtpError, SrtpProtectError
from arcly_trio.protocols.webrtc.stun import StunError, parse_stun

if TYPE_CHECKING:
    from arcly_trio.kernel.engine import Engine
    from arcly_trio.protocols.webrtc.certificate import DtlsCertificate
    from arcly_trio.workers.webrtc.tcp import TcpLink
    from arcly_trio.workers.webrtc.ticker import Ticker
    from arcly_trio.workers.webrtc.udp import UdpPort

__all__ = ["PeerSession", "SessionHost", "LinkStats", "INBOX", "MAX_ADDRESSES"]

log = logging.getLogger("arcly_trio.webrtc")

INBOX = 512
"""Datagrams waiting for a session's task at most; more are dropped (counted)."""
MAX_ADDRESSES = 8
"""Addresses and ICE-TCP links one session may bind (its peer's candidates that passed a check)."""


class SessionHost(Protocol):
    """What a session needs of the server that runs it (:class:`~.server.WebRtcServer`)."""

    engine: Engine
    port: UdpPort
    certificate: DtlsCertificate
    handshake_timeout: float
    session_timeout: float
    mtu: int
    ticker: Ticker
    """Runs the periodic work of sessions whose class says :attr:`PeerSession.ticked` (:mod:`.ticker`)."""

    def local_endpoint(self, ufrag: str, pwd: str) -> LocalEndpoint: ...

    def bind(self, session: PeerSession, address: tuple[str, int]) -> bool: ...

    id_prefix: str
    """Starts every session's resource id: the worker's ``w{index}-`` under ``--workers``."""

    def request_keyframe(self, key: StreamKey) -> None: ...

    def picture_ids(self, key: StreamKey) -> Any: ...


@attrs.define(slots=True)
class LinkStats:
    """What a session counts, for ``/api/sessions``, the metrics and its last log line."""

    packets_sent: int = 0
    bytes_sent: int = 0
    packets_received: int = 0
    bytes_received: int = 0
    nacks: int = 0
    """NACKed packets: asked of us by a viewer, or asked by us of a publisher."""
    retransmitted: int = 0
    keyframe_requests: int = 0
    """PLI/FIR: received from a viewer, or sent to a publisher."""
    lost: int = 0
    """Packets lost: the viewer's cumulative count (its receiver reports), or ours for a publisher."""
    fraction_lost: float = 0.0
    rtt: float | None = None
    send_drops: int = 0
    """RTP packets this peer's path did not take (the UDP socket's send buffer full or a send
    error, the ICE-TCP link's queue full): each is lost, not skipped to a keyframe; the viewer
    repairs the loss with NACKs. Only when a track's frames fail many times in a row does the
    kernel's lag policy drop to the next keyframe (:mod:`.viewer`; counted in the subscriber's
    ``dropped``, not here)."""
    inbox_drops: int = 0
    bad_packets: int = 0
    srtp_errors: int = 0

    def document(self) -> dict[str, Any]:
        out = attrs.asdict(self)
        out["rtt_ms"] = None if self.rtt is None else round(self.rtt * 1000, 1)
        del out["rtt"]
        return out


class PeerSession:
    """One WHIP or WHEP peer connection (see the module docstring); subclasses give
    :meth:`admitted`, :meth:`on_connected`, :meth:`on_rtp`, :meth:`on_rtcp` and the tick."""

    kind: ClassVar[str] = ""
    """``"whep"`` or ``"whip"``: the resource path segment and the engine's protocol name."""
    tick_interval: ClassVar[float] = 1.0
    ticked: ClassVar[bool] = False
    """Whether the host's ticker (:mod:`.ticker`) runs this session's :meth:`periodic` once a
    second instead of its own task running :meth:`tick` (a WHEP viewer: its only periodic work
    is a sender report, and a thousand viewers' tasks waking each second cost a fifth of their CPU)."""

    def __init__(self, host: SessionHost, key: StreamKey, credentials: Credentials, offer: SessionDescription) -> None:
        self.host = host
        self.engine = host.engine
        self.key = key
        self.credentials = credentials
        self.offer = offer
        self.id = f"{host.id_prefix}{secrets.token_urlsafe(16)}"
        """The resource id in the ``Location`` URL (96+ random bits: only its creator knows it)."""
        self.client_id = credentials.client_id
        self.ufrag, self.pwd = new_credentials()
        self.answer: Answer | None = None
        self.agent: IceLiteAgent | None = None
        self.dtls: DtlsTransport | None = None
        self.srtp: SrtpContext | None = None
        self.address: tuple[str, int] | None = None
        """Where media goes: the address the peer nominated."""
        self.addresses: set[tuple[str, int]] = set()
        """Addresses that passed a connectivity check (the only ones heard beyond STUN)."""
        self.link: TcpLink | None = None
        """The ICE-TCP connection media goes to, when the selected path is TCP (see :mod:`.tcp`)."""
        self.links: set[TcpLink] = set()
        """ICE-TCP connections that passed a check (bound to this session; counted with the addresses)."""
        self.stats = LinkStats()
        self.created = trio.current_time()
        self.connected_at: float | None = None
        self.last_heard = self.created
        self.end_reason: str | None = None
        self.scope = trio.CancelScope()
        self._send_inbox, self._inbox = trio.open_memory_channel[tuple[bytes, tuple[str, int], "TcpLink | None"]](INBOX)
        self._next_tick = self.created + self.tick_interval
        self.dtls_client = False
        self._dtls_started = False

    # ------------------------------------------------------------------ the subclass's part

    def admitted(self) -> AbstractAsyncContextManager[Answer]:
        """Go through the engine and negotiate: the SDP answer, for as long as the session
        lasts. Raises the engine's refusal, or ``NoCommonCodec``, before yielding."""
        raise NotImplementedError

    def on_connected(self, now: float) -> None:
        """DTLS is up and SRTP keyed: media may flow."""

    async def on_rtp(self, packet: RtpPacket, now: float) -> None:
        """An authenticated RTP packet from the peer."""
        self.stats.bad_packets += 1

    def on_rtcp(self, packets: list[Any], now: float) -> None:
        """Authenticated RTCP from the peer."""

    async def tick(self, now: float) -> None:
        """Periodic work (every :attr:`tick_interval` seconds once connected)."""

    def periodic(self, now: float) -> None:
        """Periodic work run by the host's ticker (for a :attr:`ticked` session; never waits)."""

    def document(self) -> dict[str, Any]:
        """The session's link figures for ``/api/sessions``."""
        return {
            "webrtc_id": self.id,
            "state": "connected" if self.srtp is not None else "connecting",
            "transport": "tcp" if self.link is not None else "udp",
            **self.stats.document(),
        }

    # ------------------------------------------------------------------ the server's side

    def deliver(self, data: bytes, address: tuple[str, int], link: TcpLink | None = None) -> None:
        """A datagram for this session (called by the server's receive task, or by the task of
        the ICE-TCP ``link`` it came on; never waits)."""
        try:
            self._send_inbox.send_nowait((data, address, link))
        except trio.WouldBlock:
            self.stats.inbox_drops += 1
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass

    def link_lost(self, link: TcpLink) -> None:
        """An ICE-TCP connection of this session closed: it is no longer a path."""
        self.links.discard(link)
        if self.link is link:
            self.link = None
            self.address = None

    def close(self, reason: str) -> None:
        """End the session (``DELETE``, a kick, the stream's end...): its task returns."""
        if self.end_reason is None:
            self.end_reason = reason
        if self.ticked:
            self.host.ticker.discard(self)  # detached at once, not when its task gets to run
        self.scope.cancel()

    def setup(self, answer: Answer) -> None:
        """Keep the negotiated answer and make the ICE agent and the DTLS transport for it."""
        now = trio.current_time()
        self.answer = answer
        self.agent = IceLiteAgent(
            self.ufrag, self.pwd, answer.remote_ufrag, consent_timeout=self.host.session_timeout, now=now
        )
        # We answer a=setup:passive (DTLS server) to actpass/active offers; an offer that says
        # passive (ffmpeg 8's WHIP muxer) makes us the DTLS client, once ICE has an address.
        self.dtls_client = answer.remote_setup == "passive"
        self.dtls = DtlsTransport(
            self.host.certificate,
            server=not self.dtls_client,
            remote_fingerprints=answer.remote_fingerprints,
            now=now,
            handshake_timeout=self.host.handshake_timeout,
            mtu=self.host.mtu,
        )

    def local_endpoint(self) -> LocalEndpoint:
        return self.host.local_endpoint(self.ufrag, self.pwd)

    async def run(self, *, task_status: trio.TaskStatus[Answer] = trio.TASK_STATUS_IGNORED) -> None:
        """The session's one task: admitted, answered, served until it ends."""
        started = False
        try:
            with self.scope:
                async with self.admitted() as answer:
                    started = True
                    task_status.started(answer)
                    self.engine.activity.enter()
                    try:
                        await self._serve()
                    finally:
                        self.engine.activity.exit()
        except trio.Cancelled:
            raise
        except BaseException as exc:
            if not started:
                raise
            self._ended_by(exc)
        finally:
            if self.ticked:
                self.host.ticker.discard(self)
            self._send_inbox.close()
            self._say_goodbye()
            for link in list(self.links):
                link.close("its session ended")
        self._log_end()

    def _ended_by(self, exc: BaseException) -> None:
        if isinstance(exc, ArclyError):
            if self.end_reason is None:
                self.end_reason = str(exc) or type(exc).__name__
        elif isinstance(exc, Exception):
            log.exception("%s session %s for %s failed", self.kind, self.id, self.key)
            if self.end_reason is None:
                self.end_reason = f"internal error: {type(exc).__name__}"
        else:
            raise exc

    def _say_goodbye(self) -> None:
        """DTLS close_notify to the peer (it ends its side at once instead of timing out)."""
        dtls = self.dtls
        if dtls is not None and dtls.established and self.address is not None:
            try:
                for datagram in dtls.close():
                    self._send(datagram)
            except DtlsError:
                pass

    def _log_end(self) -> None:
        stats = self.stats
        peer = self.credentials.peer or ("?", "?")
        log.info(
            "%s %s:%s session %s on %s ended (%s; %d packets sent, %d received, %d NACKed, %d lost)",
            self.kind,
            *peer,
            self.id,
            self.key,
            printable(self.end_reason or "closed"),
            stats.packets_sent,
            stats.packets_received,
            stats.nacks,
            stats.lost,
        )

    # ------------------------------------------------------------------ the loop

    async def _serve(self) -> None:
        """Datagrams until the next deadline, then the timers, until the session ends.

        One cancel scope per timer period, not one per wait: a viewer's task wakes for each
        RTCP report and consent check, and a scope entered, registered and left each time was
        a measurable part of its cost (see ``docs/performance.md``). The scope's deadline moves
        when a datagram brings the session's earlier (a DTLS flight); one that moves it later
        (the liveness window, on every datagram) leaves it: the scope then ends early, the
        timers find nothing due and the next scope has the new deadline, so a viewer's task
        wakes once per window for it, not once per datagram. A datagram that makes a deadline
        due (the handshake done: the first tick now) runs the timers at once."""
        inbox = self._inbox
        receive = inbox.receive
        while True:
            with trio.CancelScope(deadline=self._deadline()) as timer:
                while True:
                    data, address, link = await receive()
                    now = trio.current_time()
                    await self._datagram(data, address, link, now)
                    deadline = self._deadline()
                    if now >= deadline:
                        break
                    if deadline < timer.deadline:
                        timer.deadline = deadline
            await self._timers(trio.current_time())

    def _deadline(self) -> float:
        dtls = self.dtls
        if self.srtp is None:
            deadline = self.created + self.host.handshake_timeout
            if dtls is not None:
                retransmit = dtls.timeout()
                if retransmit is not None:
                    deadline = min(deadline, retransmit)
            return deadline
        if self.ticked:
            return self.last_heard + self.host.session_timeout
        return min(self._next_tick, self.last_heard + self.host.session_timeout)

    async def _timers(self, now: float) -> None:
        if self.srtp is None:
            if now >= self.created + self.host.handshake_timeout:
                what = "DTLS" if self.addresses else "ICE"
                self.close(f"{what} did not complete within {self.host.handshake_timeout:g} s")
                return
            dtls = self.dtls
            if dtls is not None and self.address is not None:
                timeout = dtls.timeout()
                if timeout is not None and now >= timeout:
                    try:
                        self._send_all(dtls.handle_timeout(now))
                    except DtlsError as exc:
                        self.close(f"DTLS: {exc}")
            return
        if now >= self.last_heard + self.host.session_timeout:
            self.close(f"peer silent for {self.host.session_timeout:g} s")
            return
        if not self.ticked and now >= self._next_tick:
            self._next_tick = now + self.tick_interval
            await self.tick(now)

    def _send(self, data: bytes) -> bool:
        """One packet on the selected path (the ICE-TCP link, else the UDP port); never waits."""
        link = self.link
        if link is not None:
            return link.send(data)
        address = self.address
        if address is None:
            return False
        return self.host.port.send(data, address)

    def _send_all(self, datagrams: list[bytes]) -> None:
        for datagram in datagrams:
            self._send(datagram)

    def _checked(self, address: tuple[str, int], link: TcpLink | None) -> bool:
        """Whether this path passed a check: the link for ICE-TCP, the address for UDP."""
        return link in self.links if link is not None else address in self.addresses

    async def _datagram(self, data: bytes, address: tuple[str, int], link: TcpLink | None, now: float) -> None:
        kind = classify(data)
        if kind is PacketKind.STUN:
            self._stun(data, address, link, now)
            return
        if not self._checked(address, link):
            self.stats.bad_packets += 1  # only an address that passed a check is heard
            return
        if kind is PacketKind.DTLS:
            self._dtls(data, now)
        elif kind is PacketKind.RTP:
            srtp = self.srtp
            if srtp is None:
                return
            try:
                plain = srtp.unprotect(data)
            except SrtpError:
                self.stats.srtp_errors += 1
                return
            self.last_heard = now
            try:
                packet = parse_rtp(plain)
            except RtpError:
                self.stats.bad_packets += 1
                return
            self.stats.packets_received += 1
            self.stats.bytes_received += len(packet.payload)
            await self.on_rtp(packet, now)
        elif kind is PacketKind.RTCP:
            srtp = self.srtp
            if srtp is None:
                return
            try:
                plain = srtp.unprotect_rtcp(data)
            except SrtpError:
                self.stats.srtp_errors += 1
                return
            self.last_heard = now
            try:
                packets = parse_rtcp(plain)
            except RtcpError:
                self.stats.bad_packets += 1
                return
            self.on_rtcp(packets, now)
        else:
            self.stats.bad_packets += 1

    def _stun(self, data: bytes, address: tuple[str, int], link: TcpLink | None, now: float) -> None:
        agent = self.agent
        if agent is None:
            return
        try:
            message = parse_stun(data)
        except StunError:
            self.stats.bad_packets += 1
            return
        reply = agent.receive(message, address, now)
        if reply is None:
            self.stats.bad_packets += 1
            return
        self.last_heard = now
        paths = len(self.addresses) + len(self.links)
        if link is not None:
            if link not in self.links and paths < MAX_ADDRESSES and link.bind(self):
                self.links.add(link)
            if link not in self.links:
                return  # not ours (bound to another session, or closed): nothing goes back
            link.send(reply)
        else:
            self.host.port.send(reply, address)
            if address not in self.addresses and paths < MAX_ADDRESSES and self.host.bind(self, address):
                self.addresses.add(address)
        if self._checked(address, link) and (agent.selected == address or self.address is None):
            self.address = address
            self.link = link
        dtls = self.dtls
        if self.dtls_client and dtls is not None and not self._dtls_started and self.address is not None:
            self._dtls_started = True
            try:
                self._send_all(dtls.start(now))
            except DtlsError as exc:
                self.close(f"DTLS: {exc}")

    def _dtls(self, data: bytes, now: float) -> None:
        dtls = self.dtls
        if dtls is None:
            return
        try:
            self._send_all(dtls.receive(data, now))
        except DtlsError as exc:
            self.close(f"DTLS: {exc}")
            return
        if dtls.closed:
            self.close("the peer closed the connection")
            return
        if self.srtp is None and dtls.established and dtls.keys is not None:
            try:
                self.srtp = SrtpContext(dtls.keys)
            except SrtpError as exc:
                self.close(f"SRTP: {exc}")
                return
            self.connected_at = now
            self.last_heard = now
            self._next_tick = now
            self.on_connected(now)
            if self.ticked and self.end_reason is None:
                self.periodic(now)  # a first report at once (after what on_connected sent), then the wheel's
                self.host.ticker.add(self)

    # ------------------------------------------------------------------ sending

    def send_rtp(self, packet: bytes) -> bool:
        """Protect and send one RTP packet to the peer now (never waits)."""
        srtp = self.srtp
        address = self.address
        if srtp is None or address is None:
            return False
        try:
            data = srtp.protect(packet)
        except (SrtpError, SrtpProtectError):
            self.stats.srtp_errors += 1
            return False
        if not self._send(data):
            self.stats.send_drops += 1
            return False
        self.stats.packets_sent += 1
        self.stats.bytes_sent += len(data)
        return True

    def send_rtcp(self, packet: bytes) -> bool:
        """Protect and send one (compound) RTCP packet to the peer now (never waits)."""
        srtp = self.srtp
        address = self.address
        if srtp is None or address is None:
            return False
        try:
            data = srtp.protect_rtcp(packet)
        except (SrtpError, SrtpProtectError):
            self.stats.srtp_errors += 1
            return False
        return self._send(data)
