"""The SRT side of push relays: a caller that publishes a kernel stream as MPEG-TS to an SRT
listener (``--push srt://HOST:PORT?streamid=...&passphrase=...&latency=...``).

What: :func:`parse_srt_target` checks a push URL (host, port, ``streamid``, ``passphrase``,
``pbkeylen``, ``latency`` in milliseconds as srt-live-transmit takes it); :func:`open_srt_publisher`
connects (the core's caller handshake, :class:`~arcly_trio.protocols.srt.handshake.Caller`,
resent every 250 ms until the listener answers) and yields an :class:`SrtPublisher` with the
interface :mod:`.push` uses for its links (``send_frames``, ``bytes_sent``, ``ended``).

How: frames go through :class:`~arcly_trio.media.mpegts.TsMuxer` (made at the first video
keyframe, or first audio frame of an audio-only stream, from the configs seen so far; a config
of a codec the program lacks starts a new program at the next keyframe) into 1316-byte payloads
for the sans-IO :class:`~arcly_trio.protocols.srt.connection.SrtConnection`; a background task
reads the listener's ACKs/NAKs and runs the connection's timers. With a passphrase the caller
sends a KMREQ (AES-CTR, ``pbkeylen`` 16/24/32) and key refreshes as libsrt does.

Attacker's view (the listener is the peer): everything it sends goes through the core (bounded
there); a listener that stops answering for ``write_timeout`` ends the link (retried by the push
service); the passphrase never leaves this module: it is not in :func:`redact_url`'s output,
``repr`` or any error text.

Error policy: a refused handshake raises ``RemoteRefused`` (the listener's reject code), no
answer in ``timeout`` or a socket error ``ConnectionLost``, a malformed answer
``RemoteProtocolError``; :meth:`SrtPublisher.send_frames` raises ``ConnectionLost`` once the
session is over; frames TS cannot carry are skipped (counted), never raised.
"""

from __future__ import annotations

import socket as _socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import attrs
import trio

from arcly_trio.core.errors import ArclyError, ConnectionLost, RemoteProtocolError, RemoteRefused
from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.core.redact import redact_url
from arcly_trio.media.mpegts import TS_AUDIO_CODECS, TsMuxer
from arcly_trio.protocols.srt import handshake as hs
from arcly_trio.protocols.srt.connection import KM_REQUEST, PAYLOAD_SIZE, SrtConnection
from arcly_trio.protocols.srt.packet import ControlPacket, ControlType, Handshake, HandshakeType, parse

__all__ = ["SrtTarget", "SrtPublisher", "parse_srt_target", "open_srt_publisher", "caller_handshake"]

MAX_LATENCY_MS = 10_000
MAX_STREAMID = 512
_VIDEO_CODECS = frozenset({"h264", "hevc"})
_AUDIO_CODECS = TS_AUDIO_CODECS
_RESEND = 0.25


@attrs.frozen(slots=True, repr=False)
class SrtTarget:
    """A parsed ``srt://`` push URL (its ``repr`` hides the streamid and passphrase)."""

    host: str
    port: int
    streamid: str = ""
    passphrase: str | None = None
    key_len: int = 16
    latency_ms: int = 120

    def __repr__(self) -> str:
        return f"<SrtTarget {self.host}:{self.port}>"


def parse_srt_target(url: str) -> SrtTarget:
    """``srt://HOST:PORT?streamid=...&passphrase=...&pbkeylen=16&latency=MS``; ``ValueError``
    (with the URL redacted) for anything else."""
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError(f"not an srt:// URL: {shown!r}") from None
    if parts.scheme.lower() != "srt" or not parts.hostname or port is None or port == 0:
        raise ValueError(f"SRT push URLs are srt://HOST:PORT?..., not {shown!r}")
    if parts.username or parts.password or parts.path not in ("", "/"):
        raise ValueError(f"SRT push URLs carry no user or path (the streamid names the stream): {shown!r}")
    options: dict[str, str] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True, max_num_fields=16):
        if name not in ("streamid", "passphrase", "pbkeylen", "latency", "mode"):
            raise ValueError(f"unknown SRT option {name!r} in {shown!r}")
        options[name] = value
    if options.get("mode", "caller") != "caller":
        raise ValueError(f"a push is the caller: mode=caller or none, in {shown!r}")
    streamid = options.get("streamid", "")
    if len(streamid.encode()) > MAX_STREAMID:
        raise ValueError(f"streamid over {MAX_STREAMID} bytes in {shown!r}")
    passphrase = options.get("passphrase")
    if passphrase is not None and not 10 <= len(passphrase) <= 79:
        raise ValueError("an SRT passphrase has 10 to 79 characters")
    try:
        key_len = int(options.get("pbkeylen", "16"))
        latency = int(options.get("latency", "120"))
    except ValueError:
        raise ValueError(f"pbkeylen and latency are integers in {shown!r}") from None
    if key_len not in (16, 24, 32):
        raise ValueError("pbkeylen is 16, 24 or 32")
    if not 0 <= latency <= MAX_LATENCY_MS:
        raise ValueError(f"latency is in milliseconds (as srt-live-transmit takes it), 0 to {MAX_LATENCY_MS}")
    return SrtTarget(parts.hostname, port, streamid, passphrase, key_len, latency)


class _TsPackager:
    """Frames → MPEG-TS bytes for one push session (see the module docstring)."""

    def __init__(self) -> None:
        self.muxer: TsMuxer | None = None
        self.configs: dict[FrameKind, Frame] = {}
        self.skipped = 0

    def mux(self, frame: Frame) -> bytes:
        if frame.track != 0:
            return b""
        if frame.config:
            self.configs[frame.kind] = frame
            muxer = self.muxer
            if muxer is not None:
                lacks = (
                    frame.kind is FrameKind.AUDIO
                    and muxer.audio_codec is None
                    and frame.codec in _AUDIO_CODECS
                    or frame.kind is FrameKind.VIDEO
                    and muxer.video_codec is None
                    and frame.codec in _VIDEO_CODECS
                )
                if lacks:
                    self.muxer = None
                else:
                    self._quiet(muxer, frame)
            return b""
        muxer = self.muxer
        if muxer is None:
            video = self.configs.get(FrameKind.VIDEO)
            audio = self.configs.get(FrameKind.AUDIO)
            video_codec = video.codec if video is not None and video.codec in _VIDEO_CODECS else None
            audio_codec = audio.codec if audio is not None and audio.codec in _AUDIO_CODECS else None
            waiting = frame.kind is FrameKind.VIDEO and not frame.keyframe
            if waiting or (frame.kind is FrameKind.AUDIO and video_codec is not None):
                self.skipped += 1
                return b""
            if video_codec is None and audio_codec is None:
                self.skipped += 1
                return b""
            muxer = self.muxer = TsMuxer(video_codec, audio_codec)
            for config in self.configs.values():
                self._quiet(muxer, config)
            return self._quiet(muxer, frame, with_tables=True)
        return self._quiet(muxer, frame)

    def _quiet(self, muxer: TsMuxer, frame: Frame, *, with_tables: bool = False) -> bytes:
        try:
            return muxer.mux(frame, with_tables=with_tables) if not frame.config else muxer.mux(frame)
        except ArclyError:
            self.skipped += 1
            return b""


class SrtPublisher:
    """One connected push session (made by :func:`open_srt_publisher`)."""

    def __init__(self, sock: trio.socket.SocketType, address: Any, connection: SrtConnection, keys: Any) -> None:
        self.sock = sock
        self.address = address
        self.connection = connection
        self.keys = keys
        self.packager = _TsPackager()
        self.pending = b""
        self.ended: str | None = None

    @property
    def bytes_sent(self) -> int:
        return self.connection.stats.bytes_sent

    def document(self) -> dict[str, object]:
        return self.connection.document()

    async def flush(self) -> None:
        out, self.connection.outgoing = self.connection.outgoing, []
        try:
            for data in out:
                await self.sock.sendto(data, self.address)
        except OSError as exc:
            self.ended = self.ended or f"send failed: {exc.strerror or exc}"

    async def send_frames(self, frames: Sequence[Frame]) -> None:
        """Mux and send ``frames``; ``ConnectionLost`` once the session is over."""
        connection = self.connection
        if connection.closed is not None or self.ended is not None:
            raise ConnectionLost(self.ended or connection.closed or "closed")
        data = self.pending + b"".join(self.packager.mux(frame) for frame in frames)
        now = trio.current_time()
        whole = len(data) - len(data) % PAYLOAD_SIZE
        for offset in range(0, whole, PAYLOAD_SIZE):
            connection.send(data[offset : offset + PAYLOAD_SIZE], now)
            self._refresh_keys(now)
        self.pending = data[whole:]
        if self.pending and frames and frames[-1].kind is FrameKind.VIDEO:
            connection.send(self.pending, now)  # a frame's end goes out now, not with the next frame
            self._refresh_keys(now)
            self.pending = b""
        connection.tick(now)
        await self.flush()

    def _refresh_keys(self, now: float) -> None:
        if self.keys is None:
            return
        km = self.keys.take_key_material()
        if km is not None:
            connection = self.connection
            connection.outgoing.append(
                ControlPacket(
                    ControlType.USER, KM_REQUEST, 0, connection.timestamp(now), connection.peer_id, km.to_bytes()
                ).to_bytes()
            )

    async def run(self) -> None:
        """Read the listener's packets and run the timers until the session ends."""
        connection = self.connection
        while connection.closed is None and self.ended is None:
            with trio.move_on_at(connection.next_deadline()):
                try:
                    data, _ = await self.sock.recvfrom(2048)
                except OSError as exc:  # e.g. ICMP port unreachable: the listener is gone
                    self.ended = f"receive failed: {exc.strerror or exc}"
                    break
                try:
                    packet = parse(data)
                except RemoteProtocolError:
                    continue
                connection.receive(packet, trio.current_time())
            connection.tick(trio.current_time())
            await self.flush()


def _is_induction(packet: ControlPacket) -> bool:
    try:
        return Handshake.parse(packet.body).type == HandshakeType.INDUCTION
    except RemoteProtocolError:
        return False


async def caller_handshake(
    sock: trio.socket.SocketType, address: Any, caller: hs.Caller, timeout: float
) -> tuple[hs.Connected, float]:
    """The caller's handshake on ``sock`` (induction, conclusion, each resent every 250 ms):
    what was agreed and the time it was; ``RemoteRefused`` or ``ConnectionLost`` (see above)."""
    start = trio.current_time()

    async def answer_to(request: bytes, *, skip_induction: bool = False) -> ControlPacket:
        while True:
            await sock.sendto(request, address)
            with trio.move_on_after(_RESEND):
                while True:
                    data, _ = await sock.recvfrom(2048)
                    try:
                        packet = parse(data)
                    except RemoteProtocolError:
                        continue
                    if not isinstance(packet, ControlPacket) or packet.type != ControlType.HANDSHAKE:
                        continue
                    if skip_induction and _is_induction(packet):
                        continue  # a late answer to one of our resent inductions
                    return packet

    with trio.move_on_after(timeout):
        induction = await answer_to(caller.induction())
        request = caller.conclusion(induction, int((trio.current_time() - start) * 1e6))
        concluded = await answer_to(request, skip_induction=True)
        try:
            return caller.concluded(concluded), trio.current_time()
        except hs.Rejected as exc:
            raise RemoteRefused("connect", exc.reason.name, "the SRT listener refused") from None
    raise ConnectionLost(f"no SRT handshake answer in {timeout:g} s")


@asynccontextmanager
async def open_srt_publisher(
    url: str | SrtTarget, *, timeout: float = 10.0, write_timeout: float = 10.0
) -> AsyncIterator[SrtPublisher]:
    """Connect to the SRT listener of ``url`` and yield the publisher; shut down on exit."""
    target = url if isinstance(url, SrtTarget) else parse_srt_target(url)
    try:
        infos = await trio.socket.getaddrinfo(target.host, target.port, type=_socket.SOCK_DGRAM)
    except OSError as exc:
        raise ConnectionLost(f"cannot resolve the SRT host: {exc.strerror or exc}") from None
    family, _, _, _, address = infos[0]
    keys = None
    km = None
    encryption = 0
    if target.passphrase is not None:
        from arcly_trio.protocols.srt.crypto import SrtKeys, encryption_field, parse_kmrsp

        keys, material = SrtKeys.generate(target.passphrase.encode(), target.key_len)
        km = material.to_bytes()
        encryption = encryption_field(target.key_len)
    sock = trio.socket.socket(family, _socket.SOCK_DGRAM)
    with sock:
        try:
            await sock.connect(address)  # ICMP errors then reach us; and only the listener's packets
            caller = hs.Caller(target.streamid, latency_ms=target.latency_ms, km=km, encryption=encryption)
            connected, now = await caller_handshake(sock, address, caller, timeout)
        except OSError as exc:
            raise ConnectionLost(f"SRT connect failed: {exc.strerror or exc}") from None
        if keys is not None:
            answer = parse_kmrsp(connected.km_response) if connected.km_response is not None else None
            if answer is None or not hasattr(answer, "kk"):
                state = getattr(answer, "name", "no KMRSP")
                raise RemoteRefused("connect", "BADSECRET", f"the SRT listener did not take the key ({state})")
        elif connected.km_response is not None:
            raise RemoteRefused("connect", "UNSECURE", "the SRT listener wants a passphrase")
        connection = SrtConnection(
            our_id=caller.socket_id,
            peer_id=connected.peer_socket_id,
            isn=connected.isn,
            now=now,
            peer_timestamp=connected.timestamp,
            recv_latency=connected.recv_latency_ms / 1000,
            send_latency=max(connected.send_latency_ms / 1000, 0.12),
            idle_timeout=write_timeout,
            encrypt=keys.encrypt if keys is not None else None,
        )
        publisher = SrtPublisher(sock, address, connection, keys)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(publisher.run)
            try:
                yield publisher
            finally:
                nursery.cancel_scope.cancel()
                with trio.CancelScope(shield=True), trio.move_on_after(1):
                    if publisher.pending and connection.closed is None:  # the last frame's tail
                        connection.send(publisher.pending, trio.current_time())
                        publisher.pending = b""
                    connection.shutdown(trio.current_time())
                    await publisher.flush()
