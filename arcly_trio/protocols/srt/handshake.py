"""The SRT listener's handshake (HSv5): a stateless induction, then the conclusion.

What: a caller sends an *induction* (version 4, no cookie); the listener answers with version 5,
the SRT magic ``0x4A17`` in the extension field and a SYN cookie; the caller sends a
*conclusion* (version 5, the cookie, HSREQ, optionally KMREQ and the streamid SID); the
listener answers with its own conclusion (HSRSP, KMRSP) or a *rejection* (handshake type
``1000 + reason``; draft-sharabayko-srt 3.2.1 and libsrt's ``handshake.h``/``access_control.h``
for the reason codes).

How: :class:`Listener` keeps one secret; the cookie is an HMAC of the caller's address and
port and a minute counter, so it is checked with no state (the current minute or the one
before). :meth:`Listener.induction` answers an induction with a packet of the request's own
size; :meth:`Listener.conclusion` checks the cookie and returns a :class:`Conclusion` (or
raises :class:`Rejected`); :func:`accept` and :func:`reject` build the answers.

Attacker's view: nothing is kept before a valid cookie comes back (a spoofed source address
gets one answer of the request's size: no amplification); a forged cookie costs one HMAC.
The streamid is bounded (512 bytes) by the codec.

Error policy: a malformed handshake raises
:class:`~arcly_trio.core.errors.RemoteProtocolError`; one this listener refuses raises
:class:`Rejected` with the reason code to send back.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import ipaddress
import secrets

import attrs

from arcly_trio.core.errors import RemoteProtocolError
from arcly_trio.protocols.srt.packet import (
    CRYPT,
    FLAG_CONFIG,
    FLAG_HSREQ,
    FLAG_KMREQ,
    HS_VERSION_5,
    PERIODICNAK,
    REXMITFLG,
    SRT_MAGIC,
    TLPKTDROP,
    TSBPDRCV,
    TSBPDSND,
    ControlPacket,
    ControlType,
    Extension,
    Handshake,
    HandshakeType,
    HsExtension,
    SrtHs,
    decode_streamid,
    encode_streamid,
)

__all__ = [
    "Caller",
    "Connected",
    "Reject",
    "Rejected",
    "Listener",
    "Conclusion",
    "accept",
    "agreed_latency",
    "reject",
    "SRT_VERSION",
    "peer_ip",
]

SRT_VERSION = 0x010503
"""The SRT version this core speaks (1.5.3)."""
URQ_FAILURE_TYPE = 1000
COOKIE_PERIOD = 60.0


class Reject(enum.IntEnum):
    """Rejection reasons (libsrt's ``SRT_REJ_*`` and the access-control ``SRT_REJX_*``)."""

    UNKNOWN = 0
    SYSTEM = 1
    PEER = 2
    RESOURCE = 3
    ROGUE = 4
    BACKLOG = 5
    VERSION = 8
    BADSECRET = 10
    UNSECURE = 11
    MESSAGEAPI = 12
    CONGESTION = 13
    TIMEOUT = 16
    BAD_REQUEST = 1400
    UNAUTHORIZED = 1401
    OVERLOAD = 1402
    FORBIDDEN = 1403
    NOTFOUND = 1404
    BAD_MODE = 1405
    CONFLICT = 1409


class Rejected(RemoteProtocolError):
    """The listener refuses a conclusion; ``reason`` goes back in the handshake type."""

    def __init__(self, reason: Reject, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@attrs.frozen(slots=True)
class Conclusion:
    """A caller's valid conclusion request, as the worker needs it."""

    handshake: Handshake
    timestamp: int
    """The request's header timestamp (µs on the caller's clock): the TSBPD time base."""
    socket_id: int
    isn: int
    mtu: int
    flow_window: int
    streamid: str
    srt: SrtHs
    km: bytes | None


def peer_ip(host: str) -> bytes:
    """The handshake's 16-byte peer address (libsrt writes each 32-bit word little-endian)."""
    try:
        packed = ipaddress.ip_address(host).packed
    except ValueError:
        return bytes(16)
    packed += bytes(16 - len(packed))
    return b"".join(packed[i : i + 4][::-1] for i in range(0, 16, 4))


class Listener:
    """Stateless induction and cookie check (see the module docstring)."""

    def __init__(self, socket_id: int | None = None, *, secret: bytes | None = None) -> None:
        self.secret = secret or secrets.token_bytes(32)
        self.socket_id = socket_id if socket_id is not None else secrets.randbits(31) or 1

    def cookie(self, address: tuple[str, int], now: float, *, previous: bool = False) -> int:
        bucket = int(now // COOKIE_PERIOD) - int(previous)
        message = f"{address[0]}|{address[1]}|{bucket}".encode()
        return int.from_bytes(hmac.new(self.secret, message, hashlib.sha256).digest()[:4], "big")

    def induction(self, packet: ControlPacket, address: tuple[str, int], now: float) -> bytes:
        """The answer to an induction request (never larger than the request)."""
        hs = Handshake.parse(packet.body)
        if hs.type != HandshakeType.INDUCTION:
            raise RemoteProtocolError("not an SRT induction")
        answer = Handshake(
            version=HS_VERSION_5,
            encryption=0,
            extension_field=SRT_MAGIC,
            isn=hs.isn,
            mtu=hs.mtu,
            flow_window=hs.flow_window,
            type=HandshakeType.INDUCTION,
            socket_id=self.socket_id,
            cookie=self.cookie(address, now),
            peer_ip=peer_ip(address[0]),
        ).to_bytes()
        out = ControlPacket(ControlType.HANDSHAKE, 0, 0, packet.timestamp, hs.socket_id, answer).to_bytes()
        return out if len(out) <= 16 + len(packet.body) else b""

    def conclusion(self, packet: ControlPacket, address: tuple[str, int], now: float) -> Conclusion:
        """Check a conclusion request: the cookie (else :class:`~arcly_trio.core.errors.RemoteProtocolError`:
        no answer at all), then the version and the extensions (else :class:`Rejected`)."""
        hs = Handshake.parse(packet.body)
        if hs.type != HandshakeType.CONCLUSION:
            raise RemoteProtocolError("not an SRT conclusion")
        if hs.cookie not in (self.cookie(address, now), self.cookie(address, now, previous=True)):
            raise RemoteProtocolError("SRT conclusion with a wrong cookie")
        if hs.version != HS_VERSION_5:
            raise Rejected(Reject.VERSION, f"handshake version {hs.version} (only 5)")
        content = hs.extension(Extension.HSREQ)
        if content is None:
            raise Rejected(Reject.VERSION, "no HSREQ extension")
        srt = SrtHs.parse(content)
        if srt.flags & 0x40:  # STREAM: file mode
            raise Rejected(Reject.MESSAGEAPI, "stream (file) mode is not served, only live mode")
        congestion = hs.extension(Extension.CONGESTION)
        if congestion is not None and decode_streamid(congestion) not in ("", "live"):
            raise Rejected(Reject.CONGESTION, "only the live congestion control")
        sid = hs.extension(Extension.SID)
        streamid = decode_streamid(sid) if sid is not None else ""
        return Conclusion(
            handshake=hs,
            timestamp=packet.timestamp,
            socket_id=hs.socket_id,
            isn=hs.isn & 0x7FFFFFFF,
            mtu=hs.mtu,
            flow_window=hs.flow_window,
            streamid=streamid,
            srt=srt,
            km=hs.extension(Extension.KMREQ),
        )


def accept(
    conclusion: Conclusion,
    *,
    socket_id: int,
    latency_ms: int,
    timestamp: int,
    address: tuple[str, int],
    km_response: bytes | None = None,
    flow_window: int = 8192,
) -> bytes:
    """Our conclusion answer: HSRSP with the latency agreed (the larger wish per direction), and
    KMRSP when the caller sent KMREQ."""
    srt = conclusion.srt
    flags = TSBPDSND | TSBPDRCV | TLPKTDROP | PERIODICNAK | REXMITFLG | (CRYPT if km_response else 0)
    hsrsp = SrtHs(SRT_VERSION, flags, max(latency_ms, srt.send_delay), max(latency_ms, srt.recv_delay))
    extensions = [HsExtension(Extension.HSRSP, hsrsp.to_bytes())]
    if km_response is not None:
        extensions.append(HsExtension(Extension.KMRSP, km_response))
    hs = conclusion.handshake
    answer = Handshake(
        version=HS_VERSION_5,
        encryption=hs.encryption,
        extension_field=FLAG_HSREQ | (FLAG_KMREQ if km_response is not None else 0),
        isn=conclusion.isn,
        mtu=min(conclusion.mtu, 1500),
        flow_window=flow_window,
        type=HandshakeType.CONCLUSION,
        socket_id=socket_id,
        cookie=hs.cookie,
        peer_ip=peer_ip(address[0]),
        extensions=tuple(extensions),
    ).to_bytes()
    return ControlPacket(ControlType.HANDSHAKE, 0, 0, timestamp, conclusion.socket_id, answer).to_bytes()


def agreed_latency(conclusion: Conclusion, latency_ms: int) -> tuple[int, int]:
    """(our receive latency, our send latency) in ms, as :func:`accept` announces them."""
    return max(latency_ms, conclusion.srt.send_delay), max(latency_ms, conclusion.srt.recv_delay)


def reject(packet: ControlPacket, reason: Reject, socket_id: int, address: tuple[str, int]) -> bytes:
    """A rejection of a conclusion request (handshake type ``1000 + reason``), of its size at most."""
    try:
        hs = Handshake.parse(packet.body)
    except RemoteProtocolError:
        return b""
    answer = Handshake(
        version=HS_VERSION_5,
        encryption=0,
        extension_field=0,
        isn=hs.isn,
        mtu=hs.mtu,
        flow_window=hs.flow_window,
        type=URQ_FAILURE_TYPE + int(reason),
        socket_id=socket_id,
        cookie=hs.cookie,
        peer_ip=peer_ip(address[0]),
    ).to_bytes()
    return ControlPacket(ControlType.HANDSHAKE, 0, 0, packet.timestamp, hs.socket_id, answer).to_bytes()


@attrs.frozen(slots=True)
class Connected:
    """What a caller's handshake agreed with the listener."""

    peer_socket_id: int
    isn: int
    recv_latency_ms: int
    send_latency_ms: int
    km_response: bytes | None
    timestamp: int
    """The listener's timestamp on its conclusion answer (its clock: our TSBPD time base)."""


class Caller:
    """The caller's side of the HSv5 handshake (for pushing to an SRT listener): an induction,
    then, with the listener's cookie, a conclusion with HSREQ, the streamid and an optional
    KMREQ; the listener's answer is :class:`Connected` or raises :class:`Rejected`.

    Sans-IO: each method returns the datagram to send; the caller of this class resends the
    last one every 250 ms until an answer comes (libsrt does so), and gives up after its timeout.
    """

    def __init__(
        self,
        streamid: str = "",
        *,
        socket_id: int | None = None,
        isn: int | None = None,
        latency_ms: int = 120,
        mtu: int = 1500,
        flow_window: int = 8192,
        km: bytes | None = None,
        encryption: int = 0,
    ) -> None:
        self.streamid = streamid
        self.socket_id = socket_id if socket_id is not None else secrets.randbits(30) + 1
        self.isn = isn if isn is not None else secrets.randbits(31)
        self.latency_ms = latency_ms
        self.mtu = mtu
        self.flow_window = flow_window
        self.km = km
        self.encryption = encryption
        self.cookie: int | None = None
        self.peer_listener_id = 0

    def induction(self, timestamp: int = 0) -> bytes:
        hs = Handshake(4, 0, 2, self.isn, self.mtu, self.flow_window, HandshakeType.INDUCTION, self.socket_id, 0)
        return ControlPacket(ControlType.HANDSHAKE, 0, 0, timestamp, 0, hs.to_bytes()).to_bytes()

    def conclusion(self, answer: ControlPacket, timestamp: int = 0) -> bytes:
        """The conclusion request, from the listener's induction answer (its cookie)."""
        hs = Handshake.parse(answer.body)
        if hs.type != HandshakeType.INDUCTION or hs.version != HS_VERSION_5 or hs.extension_field != SRT_MAGIC:
            raise RemoteProtocolError("not an HSv5 listener's induction answer")
        self.cookie = hs.cookie
        self.peer_listener_id = hs.socket_id
        flags = TSBPDSND | TSBPDRCV | TLPKTDROP | PERIODICNAK | REXMITFLG | (CRYPT if self.km else 0)
        extensions = [
            HsExtension(Extension.HSREQ, SrtHs(SRT_VERSION, flags, self.latency_ms, self.latency_ms).to_bytes())
        ]
        if self.km is not None:
            extensions.append(HsExtension(Extension.KMREQ, self.km))
        if self.streamid:
            extensions.append(HsExtension(Extension.SID, encode_streamid(self.streamid)))
        field = FLAG_HSREQ | (FLAG_KMREQ if self.km is not None else 0) | (FLAG_CONFIG if self.streamid else 0)
        request = Handshake(
            HS_VERSION_5,
            self.encryption,
            field,
            self.isn,
            self.mtu,
            self.flow_window,
            HandshakeType.CONCLUSION,
            self.socket_id,
            hs.cookie,
            hs.peer_ip,
            tuple(extensions),
        )
        return ControlPacket(ControlType.HANDSHAKE, 0, 0, timestamp, 0, request.to_bytes()).to_bytes()

    def concluded(self, answer: ControlPacket) -> Connected:
        """The listener's answer to our conclusion: :class:`Connected`, or :class:`Rejected`."""
        hs = Handshake.parse(answer.body)
        if hs.type >= URQ_FAILURE_TYPE and hs.type < HandshakeType.DONE:
            code = hs.type - URQ_FAILURE_TYPE
            try:
                reason = Reject(code)
            except ValueError:
                reason = Reject.UNKNOWN
            raise Rejected(reason, f"the listener refused: code {code}")
        if hs.type != HandshakeType.CONCLUSION or hs.version != HS_VERSION_5:
            raise RemoteProtocolError("not a conclusion answer")
        content = hs.extension(Extension.HSRSP)
        if content is None:
            raise RemoteProtocolError("conclusion answer without HSRSP")
        srt = SrtHs.parse(content)
        return Connected(
            peer_socket_id=hs.socket_id,
            isn=hs.isn & 0x7FFFFFFF,
            recv_latency_ms=srt.send_delay,
            send_latency_ms=srt.recv_delay,
            km_response=hs.extension(Extension.KMRSP),
            timestamp=answer.timestamp,
        )
