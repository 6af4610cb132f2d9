"""WebRTC clients on trio: a WHEP player and a WHIP publisher, for tests, relays and benchmarks.

Play (count what arrives, optionally put the video back into frames)::

    async with open_whep_player("http://127.0.0.1:8080/live/cam/whep", token="s3cret") as player:
        await player.wait_frames(30)           # 30 video access units received
        print(player.stats)                     # packets, bytes, gaps per track

Publish (kernel frames in: configs first, then media)::

    async with open_whip_publisher("http://127.0.0.1:8080/live/cam/whip", token="s3cret") as pub:
        for frame in frames:
            await pub.send(frame)

Both speak the same protocols as a browser, from the other side of the server's sans-IO cores:
an SDP offer POSTed over HTTP (httpx), ICE as the controlling agent (binding requests with
``USE-CANDIDATE`` to the first UDP candidate of the answer, or with ``transport="tcp"`` over one
ICE-TCP connection to its passive TCP candidate, RFC 4571 framing), DTLS as the client, SRTP. A player
sends receiver reports every second (which keeps the session alive on the server) and can skip
decryption (``decrypt=False``: a load generator counts packets and sequence gaps from the RTP
headers, which SRTP leaves in the clear). A publisher packetizes H.264 and Opus, answers NACKs
from its own history and counts PLIs.

Error policy: a refusal (any non-201 answer) raises :class:`~arcly_trio.core.errors.RemoteRefused`
with the status and the server's text; ICE or DTLS not completing within ``timeout`` raises
:class:`~arcly_trio.core.errors.ConnectionLost`; leaving the block sends ``DELETE`` (errors
ignored: the server ends an abandoned session by itself).
"""

from __future__ import annotations

import os
import secrets
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import attrs
import httpx
import trio

from arcly_trio.core.errors import ConnectionLost, RemoteRefused
from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.media.codecs.h264 import parse_avc_config
from arcly_trio.protocols.webrtc import rtcp, stun
from arcly_trio.protocols.webrtc.certificate import DtlsCertificate
from arcly_trio.protocols.webrtc.demux import PacketKind, classify
from arcly_trio.protocols.webrtc.dtls import DtlsError, DtlsTransport
from arcly_trio.protocols.webrtc.ice import new_credentials
from arcly_trio.protocols.webrtc.payload import h264, opus
from arcly_trio.protocols.webrtc.rtp import RtpError, SendHistory, SequenceUnwrapper, parse_rtp, rtp_header
from arcly_trio.protocols.webrtc.sdp import SdpError, SessionDescription, parse_sdp
from arcly_trio.protocols.webrtc.srtp import SrtpContext, SrtpError

__all__ = ["open_whep_player", "open_whip_publisher", "WhepPlayer", "WhipPublisher", "TrackStats", "client_offer"]

_VIDEO_PT = 102
_AUDIO_PT = 111
_H264_PROFILES = ("42e01f", "42001f", "4d001f", "640032")


def client_offer(
    ufrag: str, pwd: str, fingerprint: str, *, send: bool, ssrcs: Sequence[int] = (), codecs: Sequence[str] = ("h264",)
) -> str:
    """An SDP offer as a browser makes it: BUNDLE of a video and an audio section, rtcp-mux,
    ``a=setup:actpass``; ``send``: sendonly with ``ssrcs`` (video, audio), else recvonly.
    ``codecs``: the video codecs offered (``h264`` with several profiles, ``vp9``, ``av1``)."""
    session = secrets.randbits(62)
    lines = [
        "v=0",
        f"o=- {session} 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0 1",
        "a=msid-semantic: WMS arcly",
    ]
    direction = "sendonly" if send else "recvonly"
    video: list[tuple[int, str, str]] = []
    pt = _VIDEO_PT
    for codec in codecs:
        if codec == "h264":
            for profile in _H264_PROFILES[:1] if send else _H264_PROFILES:
                fmtp = f"level-asymmetry-allowed=1;packetization-mode=1;profile-level-id={profile}"
                video.append((pt, "H264/90000", fmtp))
                pt += 2
        elif codec == "vp9":
            video.append((pt, "VP9/90000", "profile-id=0"))
            pt += 2
        elif codec == "av1":
            video.append((pt, "AV1/90000", ""))
            pt += 2
    sections = [
        ("video", "0", video),
        ("audio", "1", [(_AUDIO_PT, "opus/48000/2", "minptime=10;useinbandfec=1")]),
    ]
    for index, (kind, mid, codecs_of) in enumerate(sections):
        lines += [
            f"m={kind} 9 UDP/TLS/RTP/SAVPF {' '.join(str(p) for p, _, _ in codecs_of)}",
            "c=IN IP4 0.0.0.0",
            "a=rtcp:9 IN IP4 0.0.0.0",
            f"a=ice-ufrag:{ufrag}",
            f"a=ice-pwd:{pwd}",
            "a=ice-options:trickle",
            f"a=fingerprint:{fingerprint}",
            "a=setup:actpass",
            f"a=mid:{mid}",
            f"a={direction}",
            "a=rtcp-mux",
            "a=rtcp-rsize",
        ]
        for payload_type, name, fmtp in codecs_of:
            lines.append(f"a=rtpmap:{payload_type} {name}")
            if kind == "video":
                lines += [f"a=rtcp-fb:{payload_type} nack", f"a=rtcp-fb:{payload_type} nack pli"]
            if fmtp:
                lines.append(f"a=fmtp:{payload_type} {fmtp}")
        if send and index < len(ssrcs):
            lines += [f"a=msid:arcly {kind}", f"a=ssrc:{ssrcs[index]} cname:arcly-client"]
    return "\r\n".join(lines) + "\r\n"


@attrs.define
class TrackStats:
    """What one received track brought: packets, payload bytes, sequence gaps, access units."""

    kind: str = ""
    codec: str = ""
    payload_type: int = -1
    packets: int = 0
    bytes: int = 0
    gaps: int = 0
    """Packets missing between the highest and the lowest sequence number seen."""
    highest: int | None = None
    frames: int = 0
    keyframes: int = 0
    first_at: float | None = None


def _candidate(answer: SessionDescription, transport: str = "udp") -> tuple[str, int]:
    """The first host candidate of an answer for ``transport`` (a passive one for TCP)."""
    for media in answer.media:
        for value in media.candidates:
            parts = value.split()
            if len(parts) >= 6 and parts[2].lower() == transport and (transport == "udp" or "passive" in parts):
                return parts[4], int(parts[5])
    raise ConnectionLost(f"the answer has no {transport.upper()} candidate")


class _TcpPath:
    """ICE-TCP (RFC 6544) to the server's passive candidate, each packet in an RFC 4571 frame
    (a 2-byte length first): what :class:`_Link` needs of its socket, over one TCP connection."""

    def __init__(self, remote: tuple[str, int], family: int) -> None:
        self.remote = remote
        self.family = family
        self.stream: trio.SocketStream | None = None
        self._buffer = bytearray()
        self._lock = trio.StrictFIFOLock()

    async def bind(self, address: Any) -> None:
        """Connect (the UDP socket's ``bind``, for :meth:`_Link.connect`)."""
        self.stream = await trio.open_tcp_stream(*self.remote)

    async def sendto(self, data: bytes, address: Any) -> None:
        if self.stream is None:
            raise OSError("not connected")
        async with self._lock:
            try:
                await self.stream.send_all(len(data).to_bytes(2, "big") + data)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise OSError(f"the ICE-TCP connection is gone: {exc}") from None

    async def recvfrom(self, size: int) -> tuple[bytes, tuple[str, int]]:
        buffer = self._buffer
        while True:
            if len(buffer) >= 2:
                length = (buffer[0] << 8) | buffer[1]
                if len(buffer) >= 2 + length:
                    data = bytes(buffer[2 : 2 + length])
                    del buffer[: 2 + length]
                    if data:
                        return data, self.remote
                    continue
            if self.stream is None:
                raise ConnectionLost("the ICE-TCP connection is not open")
            try:
                chunk = await self.stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                chunk = b""
            if not chunk:
                raise ConnectionLost("the server closed the ICE-TCP connection")
            buffer += chunk

    def close(self) -> None:
        if self.stream is not None:
            self.stream.socket.close()


class _Link:
    """The client side of one peer connection: controlling ICE, DTLS client, SRTP."""

    def __init__(
        self, answer: SessionDescription, ufrag: str, pwd: str, certificate: DtlsCertificate, transport: str = "udp"
    ) -> None:
        # the first section the server accepted (a rejected one, port 0, may carry nothing)
        media = next((m for m in answer.media if m.ice_ufrag is not None and m.ice_pwd is not None), None)
        if media is None or media.ice_ufrag is None or media.ice_pwd is None:
            raise ConnectionLost("the answer has no ICE credentials")
        self.remote = _candidate(answer, transport)
        self.username = f"{media.ice_ufrag}:{ufrag}".encode()
        self.remote_pwd = media.ice_pwd.encode()
        self.ufrag, self.pwd = ufrag, pwd
        family = trio.socket.AF_INET6 if ":" in self.remote[0] else trio.socket.AF_INET
        self.socket: Any = (
            _TcpPath(self.remote, family) if transport == "tcp" else trio.socket.socket(family, trio.socket.SOCK_DGRAM)
        )
        self.dtls = DtlsTransport(
            certificate, server=False, remote_fingerprints=media.fingerprints, now=trio.current_time()
        )
        self.srtp: SrtpContext | None = None

    async def connect(self, timeout: float) -> None:
        await self.socket.bind(("::" if self.socket.family == trio.socket.AF_INET6 else "0.0.0.0", 0))
        with trio.move_on_after(timeout) as scope:
            await self._ice()
            await self._handshake()
        if scope.cancelled_caught:
            raise ConnectionLost(f"ICE/DTLS with {self.remote[0]}:{self.remote[1]} did not complete in {timeout:g} s")

    def _binding_request(self) -> tuple[bytes, bytes]:
        transaction = os.urandom(12)
        attributes = [
            (stun.USERNAME, self.username),
            (stun.PRIORITY, (1853824767).to_bytes(4, "big")),
            (stun.ICE_CONTROLLING, os.urandom(8)),
            (stun.USE_CANDIDATE, b""),
        ]
        return transaction, stun.build_stun(
            stun.BINDING, stun.REQUEST, transaction, attributes, integrity_key=self.remote_pwd
        )

    async def _ice(self) -> None:
        while True:
            transaction, request = self._binding_request()
            await self.socket.sendto(request, self.remote)
            with trio.move_on_after(0.2):
                while True:
                    data, _ = await self.socket.recvfrom(2048)
                    if classify(data) is not PacketKind.STUN:
                        continue
                    try:
                        message = stun.parse_stun(data)
                    except stun.StunError:
                        continue
                    if message.transaction_id == transaction and message.cls == stun.SUCCESS:
                        if message.integrity_ok(self.remote_pwd):
                            return

    async def _handshake(self) -> None:
        dtls = self.dtls
        for datagram in dtls.start(trio.current_time()):
            await self.socket.sendto(datagram, self.remote)
        while not dtls.established:
            deadline = dtls.timeout()
            with trio.move_on_at(deadline if deadline is not None else trio.current_time() + 1):
                data, _ = await self.socket.recvfrom(2048)
                if classify(data) is PacketKind.DTLS:
                    try:
                        out = dtls.receive(data, trio.current_time())
                    except DtlsError as exc:
                        raise ConnectionLost(f"DTLS failed: {exc}") from None
                    for datagram in out:
                        await self.socket.sendto(datagram, self.remote)
                continue
            try:
                out = dtls.handle_timeout(trio.current_time())
            except DtlsError as exc:
                raise ConnectionLost(f"DTLS failed: {exc}") from None
            for datagram in out:
                await self.socket.sendto(datagram, self.remote)
        assert dtls.keys is not None
        self.srtp = SrtpContext(dtls.keys)

    async def send(self, data: bytes) -> None:
        try:
            await self.socket.sendto(data, self.remote)
        except OSError:
            pass

    async def send_rtcp(self, packet: bytes) -> None:
        if self.srtp is not None:
            await self.send(self.srtp.protect_rtcp(packet))

    async def close(self) -> None:
        if self.dtls.established:
            try:
                for datagram in self.dtls.close():
                    await self.send(datagram)
            except DtlsError:
                pass
        self.socket.close()


def _http(timeout: float, local_address: str | None) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(local_address=local_address) if local_address else None
    return httpx.AsyncClient(timeout=timeout, transport=transport)


async def _post(
    url: str, offer: str, token: str | None, timeout: float, stage: str, local_address: str | None = None
) -> tuple[str, str]:
    headers = {"content-type": "application/sdp"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    try:
        async with _http(timeout, local_address) as client:
            response = await client.post(url, content=offer.encode(), headers=headers)
    except httpx.HTTPError as exc:
        raise ConnectionLost(f"POST {url}: {exc}") from None
    if response.status_code != 201:
        raise RemoteRefused(stage, str(response.status_code), response.text.strip()[:300])
    location = urllib.parse.urljoin(url, response.headers.get("location", ""))
    return response.text, location


async def _delete(location: str, local_address: str | None = None) -> None:
    try:
        async with _http(5, local_address) as client:
            await client.delete(location)
    except httpx.HTTPError:
        pass


async def _negotiate(
    url: str,
    offer_for: Any,
    token: str | None,
    timeout: float,
    stage: str,
    local_address: str | None = None,
    transport: str = "udp",
) -> tuple[_Link, SessionDescription, str]:
    certificate = DtlsCertificate.generate()
    ufrag, pwd = new_credentials()
    offer = offer_for(ufrag, pwd, f"sha-256 {certificate.fingerprint('sha-256')}")
    text, location = await _post(url, offer, token, timeout, stage, local_address)
    try:
        answer = parse_sdp(text)
    except SdpError as exc:
        await _delete(location, local_address)
        raise ConnectionLost(f"the answer does not parse: {exc}") from None
    try:
        link = _Link(answer, ufrag, pwd, certificate, transport)
    except ConnectionLost:
        await _delete(location, local_address)
        raise
    try:
        await link.connect(timeout)
    except BaseException:
        await link.close()
        await _delete(location, local_address)
        raise
    return link, answer, location


@asynccontextmanager
async def _running(
    link: _Link, location: str, local_address: str | None, run: Callable[..., Awaitable[None]], *args: Any
) -> AsyncIterator[None]:
    """Run a session's receive task (``run(*args)``) for the block; then say goodbye: DTLS
    ``close_notify`` and ``DELETE`` of its resource, even when cancelled."""
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, *args)
            try:
                yield
            finally:
                nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await link.close()
            await _delete(location, local_address)


class WhepPlayer:
    """A WHEP session's receiving side (see the module docstring)."""

    def __init__(self, link: _Link, answer: SessionDescription, decrypt: bool) -> None:
        self.link = link
        self.decrypt = decrypt
        self.tracks: dict[int, TrackStats] = {}
        self.by_type: dict[int, tuple[str, str]] = {}
        for media in answer.media:
            for codec in media.codecs:
                self.by_type[codec.payload_type] = (media.kind, codec.name)
        self.srtp_errors = 0
        self._unwrap: dict[int, SequenceUnwrapper] = {}
        self._depacketizers: dict[int, Any] = {}
        self._changed = trio.Event()
        self.ssrc = secrets.randbits(32) or 1

    @property
    def stats(self) -> dict[str, TrackStats]:
        return {track.kind: track for track in self.tracks.values()}

    def video(self) -> TrackStats:
        return self.stats.get("video", TrackStats(kind="video"))

    def audio(self) -> TrackStats:
        return self.stats.get("audio", TrackStats(kind="audio"))

    async def wait_frames(self, count: int, kind: str = "video") -> None:
        """Until ``count`` access units (video) or packets (audio) of ``kind`` have arrived."""
        while True:
            track = self.stats.get(kind)
            if track is not None and (track.frames if kind == "video" else track.packets) >= count:
                return
            await self._changed.wait()

    async def _run(self, receive: bool = True) -> None:
        link = self.link
        next_report = trio.current_time() + 1.0
        while True:
            with trio.move_on_at(next_report):
                if not receive:
                    await trio.sleep_forever()
                data, _ = await link.socket.recvfrom(2048)
                if classify(data) is PacketKind.RTP:
                    self._packet(data)
                continue
            next_report = trio.current_time() + 1.0
            await self.send_report()

    def receiver_report(self) -> bytes:
        """This player's receiver report (RTCP, before SRTP): one block per track it counted."""
        blocks = [
            rtcp.ReportBlock(
                ssrc=ssrc,
                fraction_lost=0,
                cumulative_lost=track.gaps,
                highest_sequence=(track.highest or 0) & 0xFFFFFFFF,
                jitter=0,
                lsr=0,
                dlsr=0,
            )
            for ssrc, track in self.tracks.items()
        ]
        return rtcp.receiver_report(self.ssrc, blocks)

    async def send_report(self) -> None:
        """Send a receiver report (what keeps the session alive on the server)."""
        try:
            await self.link.send_rtcp(self.receiver_report())
        except SrtpError:
            pass

    def _packet(self, data: bytes) -> None:
        srtp = self.link.srtp
        if self.decrypt and srtp is not None:
            try:
                data = srtp.unprotect(data)
            except SrtpError:
                self.srtp_errors += 1
                return
        try:
            packet = parse_rtp(data)  # without decryption: the header is in the clear, the payload is not
        except RtpError:
            return
        track = self.tracks.get(packet.ssrc)
        if track is None:
            kind, codec = self.by_type.get(packet.payload_type, ("?", "?"))
            track = self.tracks[packet.ssrc] = TrackStats(kind=kind, codec=codec, payload_type=packet.payload_type)
            track.first_at = time.monotonic()
            self._unwrap[packet.ssrc] = SequenceUnwrapper()
            if self.decrypt and kind == "video" and codec == "h264":
                self._depacketizers[packet.ssrc] = h264.Depacketizer()
        sequence = self._unwrap[packet.ssrc].unwrap(packet.sequence)
        if track.highest is not None and sequence > track.highest + 1:
            track.gaps += sequence - track.highest - 1
        if track.highest is None or sequence > track.highest:
            track.highest = sequence
        track.packets += 1
        track.bytes += len(packet.payload)
        depacketizer = self._depacketizers.get(packet.ssrc)
        if depacketizer is not None:
            for unit in depacketizer.push(packet.payload, marker=packet.marker, timestamp=packet.timestamp):
                track.frames += 1
                track.keyframes += unit.keyframe
        elif track.kind == "video" and packet.marker:
            track.frames += 1
        self._changed.set()
        self._changed = trio.Event()


@asynccontextmanager
async def open_whep_player(
    url: str,
    *,
    token: str | None = None,
    timeout: float = 10.0,
    decrypt: bool = True,
    codecs: Sequence[str] = ("h264",),
    receive: bool = True,
    local_address: str | None = None,
    transport: str = "udp",
) -> AsyncIterator[WhepPlayer]:
    """Play the stream of a WHEP ``url`` for the duration of the block (see the module docstring).

    ``receive=False``: the player only sends its receiver reports; the caller reads
    ``player.link.socket`` itself (a load generator's cheaper receive loop), or nothing (a
    viewer that stops reading). ``local_address``: the source address of the HTTP exchanges
    (the server counts sessions per client address). ``transport``: ``"udp"`` or ``"tcp"``
    (ICE-TCP to the server's passive candidate).
    """
    if transport not in ("udp", "tcp"):
        raise ValueError(f"transport: udp or tcp, not {transport!r}")

    def offer(ufrag: str, pwd: str, fingerprint: str) -> str:
        return client_offer(ufrag, pwd, fingerprint, send=False, codecs=codecs)

    link, answer, location = await _negotiate(url, offer, token, timeout, "whep", local_address, transport)
    player = WhepPlayer(link, answer, decrypt)
    async with _running(link, location, local_address, player._run, receive):
        yield player


class WhipPublisher:
    """A WHIP session's sending side: H.264 video and Opus audio (see the module docstring)."""

    def __init__(self, link: _Link, answer: SessionDescription, ssrcs: tuple[int, int]) -> None:
        self.link = link
        self.video_ssrc, self.audio_ssrc = ssrcs
        self.video_pt = _VIDEO_PT
        self.audio_pt = _AUDIO_PT
        for media in answer.media:
            if media.codecs and media.port != 0:
                if media.kind == "video":
                    self.video_pt = media.codecs[0].payload_type
                elif media.kind == "audio":
                    self.audio_pt = media.codecs[0].payload_type
        self.sequences = [secrets.randbelow(0x8000), secrets.randbelow(0x8000)]
        self.history = SendHistory(1024)
        self.prefix: tuple[bytes, ...] = ()
        self.keyframe_requests = 0
        self.nacks = 0
        self.packets = 0

    async def send(self, frame: Frame) -> None:
        """Send one kernel frame (H.264 video, Opus audio); configs only set the parameter sets."""
        srtp = self.link.srtp
        assert srtp is not None
        if frame.kind is FrameKind.VIDEO and frame.codec == "h264":
            if frame.config:
                avc = parse_avc_config(frame.payload)
                self.prefix = (*avc.sps, *avc.pps)
                return
            payloads = h264.packetize(frame.payload, 1200, prefix=self.prefix if frame.keyframe else ())
            await self._send(0, self.video_pt, self.video_ssrc, payloads, (frame.pts * 90) & 0xFFFFFFFF, True)
        elif frame.kind is FrameKind.AUDIO and frame.codec == "opus" and not frame.config:
            payloads = opus.packetize(frame.payload, 1200)
            await self._send(1, self.audio_pt, self.audio_ssrc, payloads, (frame.pts * 48) & 0xFFFFFFFF, False)

    async def _send(self, index: int, pt: int, ssrc: int, payloads: list[bytes], timestamp: int, marker: bool) -> None:
        srtp = self.link.srtp
        assert srtp is not None
        last = len(payloads) - 1
        for position, payload in enumerate(payloads):
            sequence = self.sequences[index]
            self.sequences[index] = (sequence + 1) & 0xFFFF
            packet = rtp_header(pt, sequence, timestamp, ssrc, marker and position == last) + payload
            if index == 0:
                self.history.add(sequence, packet)
            await self.link.send(srtp.protect(packet))
            self.packets += 1

    async def _run(self) -> None:
        link = self.link
        while True:
            data, _ = await link.socket.recvfrom(2048)
            if classify(data) is not PacketKind.RTCP or link.srtp is None:
                continue
            try:
                packets = rtcp.parse_rtcp(link.srtp.unprotect_rtcp(data))
            except (SrtpError, rtcp.RtcpError):
                continue
            for packet in packets:
                if isinstance(packet, rtcp.Nack):
                    for sequence in packet.sequences:
                        self.nacks += 1
                        resent = self.history.get(sequence)
                        if isinstance(resent, bytes):
                            await link.send(link.srtp.protect(resent))
                elif isinstance(packet, (rtcp.Pli, rtcp.Fir)):
                    self.keyframe_requests += 1


@asynccontextmanager
async def open_whip_publisher(
    url: str, *, token: str | None = None, timeout: float = 10.0
) -> AsyncIterator[WhipPublisher]:
    """Publish to a WHIP ``url`` for the duration of the block (see the module docstring)."""
    ssrcs = (secrets.randbits(32) or 1, secrets.randbits(32) or 2)

    def offer(ufrag: str, pwd: str, fingerprint: str) -> str:
        return client_offer(ufrag, pwd, fingerprint, send=True, ssrcs=ssrcs)

    link, answer, location = await _negotiate(url, offer, token, timeout, "whip")
    publisher = WhipPublisher(link, answer, ssrcs)
    async with _running(link, location, None, publisher._run):
        yield publisher
