"""The SRT worker: one UDP socket, the listener's handshake, one task per session.

What: callers (ffmpeg/libsrt, OBS, GStreamer) connect to ``--srt-port``; the streamid says which
stream and whether they publish or play (:mod:`arcly_trio.protocols.srt.streamid`). A publisher's
payloads (MPEG-TS) go through the TS demuxer into the kernel (``engine.publish``, protocol
``"srt"``); a player gets the stream's frames as MPEG-TS (:class:`~arcly_trio.media.mpegts.TsMuxer`)
in 1316-byte payloads (``engine.attach``). Authorization is the engine's: the streamid's token
goes in :class:`~arcly_trio.core.keys.Credentials` and ``engine.publish``/``engine.attach`` ask
the authenticator for ``publish`` or ``play`` (a play credential never publishes). A refusal is
a handshake rejection with a reason code (``UNAUTHORIZED`` 1401, ``NOTFOUND`` 1404, ``CONFLICT``
1409, ``OVERLOAD`` 1402, ``BAD_REQUEST`` 1400, ``BADSECRET``, ``UNSECURE``) and a log line.

How: the receive task reads every datagram, a burst at a time (after one trio wait, up to
:data:`DRAIN_BURST` in all already queued, with :meth:`UdpPort.receive_batch`); handshakes go to the stateless
:class:`~arcly_trio.protocols.srt.handshake.Listener`; a valid conclusion starts a session task
in the worker's nursery (``nursery.start``); it is answered once the kernel admitted it (a
repeated conclusion gets the same answer again). Other packets are routed by their destination
socket id, and only from the address that made the session. Each session runs its
:class:`~arcly_trio.protocols.srt.connection.SrtConnection`'s timers every 10 ms.

Attacker's view: nothing is kept for an address before it returns its cookie; inductions are
answered at most :attr:`SrtServer.handshake_rate` per second (and never with more bytes than
they had); sessions are capped in total (:attr:`SrtServer.max_sessions`) and per address
(:attr:`SrtServer.max_sessions_per_address`); a session's receive buffer is bounded in packets;
streamids are at most 512 bytes and escaped in logs; a publisher whose TS cannot be demuxed
ends with a log line, alone.

Error policy: a malformed datagram is counted (:attr:`SrtServer.bad_packets`) and dropped; a
session's failure ends that session (logged) and never the worker; a socket that cannot be
bound raises :class:`~arcly_trio.core.errors.CannotListen` out of ``serve``.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Sequence
from itertools import accumulate
from typing import Any

import trio

from arcly_trio.core.errors import (
    AppNotFound,
    ArclyError,
    CannotListen,
    PublisherLimitReached,
    StreamAlreadyPublishing,
    StreamNotFound,
    Unauthorized,
)
from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.core.keys import Credentials, StreamKey
from arcly_trio.core.text import printable
from arcly_trio.kernel.engine import Engine
from arcly_trio.kernel.fanout import EndReason, SessionStart
from arcly_trio.media.mpegts import TS_AUDIO_CODECS, TsMuxer
from arcly_trio.protocols.srt import handshake as hs
from arcly_trio.protocols.srt.connection import PAYLOAD_SIZE, SrtConnection, new_socket_id
from arcly_trio.protocols.srt.packet import ControlPacket, ControlType, DataPacket, HandshakeType, parse
from arcly_trio.protocols.srt.streamid import BadStreamId, Route, parse_streamid
from arcly_trio.workers.webrtc.udp import UdpPort

__all__ = ["SrtServer", "SrtSession", "TsSink"]

log = logging.getLogger("arcly_trio.srt")

TICK = 0.01
"""A publisher's timers (its ACKs go out every 10 ms, as libsrt's do)."""
PLAY_TICK = 0.1
"""A player's timers (keepalive, send buffer, idle): NAKs are answered as they arrive."""
WAKE_PACKETS = 64
"""Payloads a publisher's session lets pile up before its task is woken ahead of its tick."""
DRAIN_BURST = 256
"""Datagrams the receive task takes from the socket's buffer without a checkpoint (one trio
wakeup for a burst rather than one per datagram)."""
_TOTALS = ("lost", "dropped", "retransmitted", "naks_sent", "naks_received")
_VIDEO = frozenset({"h264", "hevc"})
_AUDIO = TS_AUDIO_CODECS
_BUFFER = 4 * 1024 * 1024
MAX_PENDING = 8 * 1024 * 1024
"""MPEG-TS a player's sink holds before its session is admitted (the replay of a cached GOP)."""


class SrtServer:
    """The SRT worker (see the module docstring)."""

    name = "srt"

    def __init__(
        self,
        host: str = "0.0.0.0",
        port: int = 8890,
        *,
        latency_ms: int = 120,
        passphrase: str | None = None,
        max_sessions: int = 1000,
        max_sessions_per_address: int = 16,
        handshake_rate: int = 200,
        idle_timeout: float = 5.0,
        buffer_packets: int = 8192,
    ) -> None:
        self.host = host
        self.requested_port = port
        self.latency_ms = latency_ms
        self.passphrase = passphrase
        self.max_sessions = max_sessions
        self.max_sessions_per_address = max_sessions_per_address
        self.handshake_rate = handshake_rate
        self.idle_timeout = idle_timeout
        self.buffer_packets = buffer_packets
        self.listener = hs.Listener()
        self.port: UdpPort | None = None
        self.engine: Engine | None = None
        self.sessions: dict[int, SrtSession] = {}
        self.by_caller: dict[tuple[tuple[str, int], int], SrtSession] = {}
        self.by_client: dict[str, SrtSession] = {}
        self.per_address: dict[str, int] = {}
        self.bad_packets = 0
        self.ended_totals: dict[str, int] = dict.fromkeys(_TOTALS, 0)
        """The loss figures of the sessions that ended (``status()`` adds the live ones)."""
        self.handshakes_dropped = 0
        self.rejections = 0
        self._bucket = (0.0, 0)
        self._nursery: trio.Nursery | None = None

    @property
    def port_number(self) -> int | None:
        return self.port.address[1] if self.port is not None else None

    async def serve(self, engine: Engine, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        self.engine = engine
        self.port = _open(self.host, self.requested_port)
        bound = self.port.address[1]
        log.info("srt listening on udp %s:%d (latency %d ms)", self.host, bound, self.latency_ms)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started(bound)
                await self._receive_loop()
        finally:
            self._nursery = None
            self.port.close()

    async def _receive_loop(self) -> None:
        port = self.port
        assert port is not None
        while True:
            # the next burst after a checkpoint: the sessions' tasks get their turn
            for data, address in await port.receive_batch(DRAIN_BURST):
                await self._datagram(data, address, trio.current_time())

    async def _datagram(self, data: bytes, address: tuple[str, int], now: float) -> None:
        if len(data) >= 16 and not data[0] & 0x80:  # a data packet: the common case first
            session = self.sessions.get(int.from_bytes(data[12:16], "big"))
            if session is None or session.address != address:
                self.bad_packets += 1
                return
            try:
                data_packet = parse(data)
            except ArclyError:
                self.bad_packets += 1
                return
            session.on_packet(data_packet, now)
            return
        try:
            packet = parse(data)
        except ArclyError:
            self.bad_packets += 1
            return
        if isinstance(packet, ControlPacket) and packet.type == ControlType.HANDSHAKE:
            await self._handshake(packet, address, now)
            return
        session = self.sessions.get(packet.dest)
        if session is None or session.address != address:
            self.bad_packets += 1
            return
        session.on_packet(packet, now)

    # ------------------------------------------------------------------ handshakes

    def _allow_handshake(self, now: float) -> bool:
        second, count = self._bucket
        if int(now) != second:
            self._bucket = (int(now), 1)
            return True
        if count >= self.handshake_rate:
            self.handshakes_dropped += 1
            return False
        self._bucket = (second, count + 1)
        return True

    async def _handshake(self, packet: ControlPacket, address: tuple[str, int], now: float) -> None:
        port = self.port
        assert port is not None
        if len(packet.body) < 48:
            self.bad_packets += 1
            return
        kind = int.from_bytes(packet.body[20:24], "big")
        wall = trio.current_time()
        if kind == HandshakeType.INDUCTION:
            if self._allow_handshake(now):
                try:
                    answer = self.listener.induction(packet, address, wall)
                except ArclyError:
                    self.bad_packets += 1
                    return
                if answer:
                    port.send(answer, address)
            return
        if kind != HandshakeType.CONCLUSION:
            self.bad_packets += 1
            return
        caller_id = int.from_bytes(packet.body[24:28], "big")
        known = self.by_caller.get((address, caller_id))
        if known is not None:
            if known.answer is not None:
                port.send(known.answer, address)
            return
        try:
            conclusion = self.listener.conclusion(packet, address, wall)
        except hs.Rejected as refused:
            self._reject(packet, address, refused.reason, refused.message, "")
            return
        except ArclyError:
            self.bad_packets += 1  # a wrong cookie: no state, no answer
            return
        if not self._allow_handshake(now):
            return
        try:
            route = parse_streamid(conclusion.streamid)
            key = StreamKey.parse(route.resource)
        except (BadStreamId, ValueError) as exc:
            self._reject(packet, address, hs.Reject.BAD_REQUEST, f"bad streamid ({exc})", conclusion.streamid)
            return
        if len(self.sessions) >= self.max_sessions:
            self._reject(packet, address, hs.Reject.OVERLOAD, "too many SRT sessions", conclusion.streamid)
            return
        if self.per_address.get(address[0], 0) >= self.max_sessions_per_address:
            self._reject(
                packet, address, hs.Reject.OVERLOAD, "too many SRT sessions from this address", conclusion.streamid
            )
            return
        keys: Any = None
        if self.passphrase is not None or conclusion.km is not None:
            keys = self._keys(conclusion, packet, address)
            if keys is None:
                return
        session = SrtSession(self, address, conclusion, route, key, keys, packet)
        self.by_caller[(address, caller_id)] = session
        self.sessions[session.our_id] = session
        self.per_address[address[0]] = self.per_address.get(address[0], 0) + 1
        assert self._nursery is not None
        await self._nursery.start(session.run)

    def _keys(self, conclusion: hs.Conclusion, packet: ControlPacket, address: tuple[str, int]) -> Any:
        """The session's keys from the caller's KMREQ and our passphrase, or ``None`` (rejected)."""
        if self.passphrase is None:
            self._reject(
                packet, address, hs.Reject.UNSECURE, "encrypted caller, no passphrase here", conclusion.streamid
            )
            return None
        if conclusion.km is None:
            self._reject(
                packet, address, hs.Reject.UNSECURE, "no encryption, a passphrase is required", conclusion.streamid
            )
            return None
        try:
            from arcly_trio.protocols.srt.crypto import KeyMaterial, SrtKeys
        except ImportError:  # pragma: no cover - the crypto module not in this build
            self._reject(packet, address, hs.Reject.UNSECURE, "encryption not available", conclusion.streamid)
            return None
        try:
            km = KeyMaterial.parse(conclusion.km)
            return _Ciphers(SrtKeys.from_km(km, self.passphrase.encode()), 2 if km.kk == 2 else 1)
        except Exception:  # the crypto module's SrtCryptoError, or a malformed KM
            self._reject(packet, address, hs.Reject.BADSECRET, "wrong passphrase", conclusion.streamid)
            return None

    def _reject(
        self, packet: ControlPacket, address: tuple[str, int], reason: hs.Reject, why: str, streamid: str
    ) -> None:
        self.rejections += 1
        log.info(
            "srt %s:%d refused (%s %d: %s) streamid %s",
            address[0],
            address[1],
            reason.name,
            int(reason),
            printable(why, 200),
            printable(streamid, 200),
        )
        answer = hs.reject(packet, reason, self.listener.socket_id, address)
        if answer and self.port is not None:
            self.port.send(answer, address)

    def forget(self, session: SrtSession) -> None:
        if session.connection is not None:
            figures = session.connection.document()
            for name in _TOTALS:
                self.ended_totals[name] += int(figures[name])  # type: ignore[call-overload]
        self.sessions.pop(session.our_id, None)
        self.by_client.pop(session.client_id, None)
        self.by_caller.pop((session.address, session.conclusion.socket_id), None)
        left = self.per_address.get(session.address[0], 1) - 1
        if left > 0:
            self.per_address[session.address[0]] = left
        else:
            self.per_address.pop(session.address[0], None)

    def session_details(self, client_id: str) -> dict[str, Any] | None:
        """The link figures of the session with this client id (``/api/sessions``), if it is ours."""
        session = self.by_client.get(client_id)
        if session is None or session.connection is None:
            return None
        return {"srt": session.connection.document()}

    def status(self) -> dict[str, Any]:
        """Counters and sessions (for ``/api/health`` and the status of the worker)."""
        totals = dict(self.ended_totals)
        for session in self.sessions.values():
            if session.connection is not None:
                figures = session.connection.document()
                for name in _TOTALS:
                    totals[name] += int(figures[name])  # type: ignore[call-overload]
        return {
            "port": self.port_number,
            "latency_ms": self.latency_ms,
            "encrypted": self.passphrase is not None,
            "publishers": sum(1 for s in self.sessions.values() if s.publishing and s.connection is not None),
            "players": sum(1 for s in self.sessions.values() if not s.publishing and s.connection is not None),
            **totals,
            "sessions": [s.document() for s in self.sessions.values()],
            "bad_packets": self.bad_packets,
            "handshakes_dropped": self.handshakes_dropped,
            "rejections": self.rejections,
        }


class SrtSession:
    """One caller: a publisher or a player (see the module docstring)."""

    def __init__(
        self,
        server: SrtServer,
        address: tuple[str, int],
        conclusion: hs.Conclusion,
        route: Route,
        key: StreamKey,
        keys: Any,
        request: ControlPacket,
    ) -> None:
        self.server = server
        self.address = address
        self.conclusion = conclusion
        self.route = route
        self.key = key
        self.keys = keys
        self.request = request
        self.our_id = new_socket_id()
        while self.our_id in server.sessions:
            self.our_id = new_socket_id()
        self.answer: bytes | None = None
        self.connection: SrtConnection | None = None
        self.inbox: list[bytes] = []
        self.wake = trio.Event()
        self.frames = 0
        self.end_reason = ""
        self.client_id = ""

    @property
    def publishing(self) -> bool:
        return self.route.publish

    def credentials(self) -> Credentials:
        query = dict(self.route.query)
        if self.route.user:
            query.setdefault("user", self.route.user)
        if self.route.token:
            query.setdefault("token", self.route.token)
        return Credentials(token=self.route.token, peer=self.address, query=query, protocol="srt")

    def _accept(self) -> None:
        now = trio.current_time()
        server = self.server
        recv_ms, send_ms = hs.agreed_latency(self.conclusion, server.latency_ms)
        keys = self.keys
        self.connection = SrtConnection(
            our_id=self.our_id,
            peer_id=self.conclusion.socket_id,
            isn=self.conclusion.isn,
            now=now,
            peer_timestamp=self.conclusion.timestamp,
            recv_latency=recv_ms / 1000,
            send_latency=send_ms / 1000,
            buffer_packets=server.buffer_packets,
            idle_timeout=server.idle_timeout,
            decrypt=keys.decrypt if keys is not None else None,
            encrypt=keys.encrypt if keys is not None else None,
            refresh=keys.refresh if keys is not None else None,
        )
        self.answer = hs.accept(
            self.conclusion,
            socket_id=self.our_id,
            latency_ms=server.latency_ms,
            timestamp=0,
            address=self.address,
            km_response=self.conclusion.km if keys is not None else None,
        )
        self._send(self.answer)
        log.info(
            "srt %s:%d %s %s (latency %d/%d ms%s)",
            self.address[0],
            self.address[1],
            "publishes" if self.publishing else "plays",
            self.key,
            recv_ms,
            send_ms,
            ", encrypted" if keys is not None else "",
        )

    def _send(self, data: bytes) -> None:
        if self.server.port is not None:
            self.server.port.send(data, self.address)

    def flush(self) -> None:
        connection = self.connection
        if connection is None or not connection.outgoing:
            return
        port = self.server.port
        out, connection.outgoing = connection.outgoing, []
        if port is None:
            return
        if len(out) == 1:
            port.send(out[0], self.address)
        else:  # a frame's packets: one GSO send per run of equal sizes (see workers.webrtc.udp)
            port.send_many(memoryview(b"".join(out)), list(accumulate(map(len, out))), self.address)

    def on_packet(self, packet: DataPacket | ControlPacket, now: float) -> None:
        connection = self.connection
        if connection is None:
            return
        delivered = connection.receive(packet, now)
        if delivered:
            if len(self.inbox) + len(delivered) > self.server.buffer_packets:
                connection.stats.dropped += len(delivered)
            else:
                self.inbox += delivered
        self.flush()
        if connection.closed is not None or len(self.inbox) >= WAKE_PACKETS:
            self.wake.set()  # else the next tick (10 ms) takes what came: one wakeup for many packets

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        engine = self.server.engine
        assert engine is not None
        credentials = engine.sessions.identify(self.credentials())
        self.client_id = credentials.client_id
        self.server.by_client[self.client_id] = self
        engine.activity.enter()
        try:
            if self.publishing:
                async with engine.publish(self.key, credentials, protocol="srt") as publisher:
                    self._accept()
                    await self._publish(publisher)
            else:
                sink = TsSink(self)
                async with engine.attach(self.key, sink, credentials, protocol="srt"):
                    self._accept()
                    sink.send_pending()
                    await self._loop(lambda: sink.ended, tick=PLAY_TICK)
        except Unauthorized as exc:
            self._refuse(hs.Reject.UNAUTHORIZED, exc)
        except (StreamNotFound, AppNotFound) as exc:
            self._refuse(hs.Reject.NOTFOUND, exc)
        except StreamAlreadyPublishing as exc:
            self._refuse(hs.Reject.CONFLICT, exc)
        except PublisherLimitReached as exc:
            self._refuse(hs.Reject.OVERLOAD, exc)
        except ArclyError as exc:
            self._refuse(hs.Reject.PEER, exc)
        finally:
            engine.activity.exit()
            if self.connection is not None:
                self.connection.shutdown(trio.current_time(), self.end_reason or "closed")
                self.flush()
                log.info(
                    "srt %s:%d ended %s (%s) %s",
                    self.address[0],
                    self.address[1],
                    self.key,
                    printable(self.connection.closed or self.end_reason, 200),
                    self.connection.document(),
                )
            self.server.forget(self)

    def _refuse(self, reason: hs.Reject, exc: Exception) -> None:
        if self.connection is None:
            self.server._reject(self.request, self.address, reason, str(exc), self.conclusion.streamid)
        else:
            self.end_reason = printable(str(exc), 200)

    async def _loop(
        self, ended: Callable[[], bool], take: Callable[[list[bytes]], Any] | None = None, *, tick: float = TICK
    ) -> None:
        connection = self.connection
        assert connection is not None
        while connection.closed is None and not ended():
            with trio.move_on_after(tick):
                await self.wake.wait()
            self.wake = trio.Event()
            released = connection.tick(trio.current_time())
            if released:
                self.inbox += released
            self.flush()
            if take is not None and self.inbox:
                payloads, self.inbox = self.inbox, []
                await take(payloads)

    async def _publish(self, publisher: Any) -> None:
        from arcly_trio.media.ts_demux import TsDemuxer

        demuxer = TsDemuxer()

        async def take(payloads: list[bytes]) -> None:
            frames = demuxer.feed(b"".join(payloads))
            for frame in frames:
                await publisher.send(frame)
            self.frames += len(frames)

        await self._loop(lambda: False, take)
        # The caller ended (SHUTDOWN) or went silent: what arrived, and the frames the demuxer
        # still holds (its last PES of each track ends only at the next one), go in before the end.
        if self.inbox:
            payloads, self.inbox = self.inbox, []
            await take(payloads)
        tail = demuxer.flush()
        for frame in tail:
            await publisher.send(frame)
        self.frames += len(tail)

    def document(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "address": f"{self.address[0]}:{self.address[1]}",
            "stream": str(self.key),
            "mode": "publish" if self.publishing else "play",
            "socket_id": self.our_id,
        }
        if self.connection is not None:
            out.update(self.connection.document())
        return out


class TsSink:
    """The kernel's sink for one SRT player: frames → MPEG-TS → 1316-byte SRT payloads, sent
    at once from the stream's task (never waits; the UDP port counts what it could not send).

    The muxer is made at the first video keyframe (with the configs seen so far), or at the
    first audio frame of a stream with no video config; frames before it are skipped."""

    def __init__(self, session: SrtSession) -> None:
        self.session = session
        self.muxer: TsMuxer | None = None
        self.configs: dict[FrameKind, Frame] = {}
        self.ended = False
        self.skipped = 0
        self.pending: list[bytes] = []
        self.pending_bytes = 0

    def start_session(self, start: SessionStart) -> None:
        self.muxer = None  # a new publish session may bring other codecs: start at its keyframe

    def replay(self, frames: list[Frame]) -> None:
        self.offer(frames, 0)

    def offer(self, frames: Sequence[Frame], start: int) -> int:
        count = len(frames)
        if self.ended:
            return count
        out = self.pending
        for index in range(start, count):
            data = self._mux(frames[index])
            if data:
                out.append(data)
                self.pending_bytes += len(data)
        if self.pending_bytes > MAX_PENDING:  # not admitted yet and far behind: start again at a keyframe
            self.pending.clear()
            self.pending_bytes = 0
            self.muxer = None
        self.send_pending()
        return count

    def send_pending(self) -> None:
        """Send what was muxed (once the session is admitted: the replay comes before)."""
        connection = self.session.connection
        if connection is None or not self.pending:
            return
        data = b"".join(self.pending)
        self.pending.clear()
        self.pending_bytes = 0
        now = trio.current_time()
        for offset in range(0, len(data), PAYLOAD_SIZE):
            connection.send(data[offset : offset + PAYLOAD_SIZE], now)
        self.session.flush()

    def _mux(self, frame: Frame) -> bytes:
        if frame.track != 0:
            return b""
        if frame.config:
            self.configs[frame.kind] = frame
            muxer = self.muxer
            if muxer is not None and (
                frame.kind is FrameKind.AUDIO
                and muxer.audio_codec is None
                and frame.codec in _AUDIO
                or frame.kind is FrameKind.VIDEO
                and muxer.video_codec is None
                and frame.codec in _VIDEO
            ):
                self.muxer = None  # a track the program lacks: a new program from the next keyframe
            if self.muxer is not None:
                try:
                    self.muxer.mux(frame)
                except ArclyError:
                    pass
            return b""
        muxer = self.muxer
        if muxer is None:
            video = self.configs.get(FrameKind.VIDEO)
            if (
                frame.kind is FrameKind.VIDEO
                and not frame.keyframe
                or frame.kind is FrameKind.AUDIO
                and video is not None
            ):
                self.skipped += 1
                return b""
            audio = self.configs.get(FrameKind.AUDIO)
            video_codec = video.codec if video is not None and video.codec in _VIDEO else None
            audio_codec = audio.codec if audio is not None and audio.codec in _AUDIO else None
            if audio_codec is None and frame.kind is FrameKind.AUDIO and frame.codec == "mp3":
                audio_codec = "mp3"
            if video_codec is None and audio_codec is None:
                self.skipped += 1
                return b""
            muxer = self.muxer = TsMuxer(video_codec, audio_codec)
            for config in self.configs.values():
                try:
                    muxer.mux(config)
                except ArclyError:
                    pass
            try:
                return muxer.mux(frame, with_tables=True)
            except ArclyError:
                return b""
        try:
            return muxer.mux(frame)
        except ArclyError:
            return b""

    def close(self, reason: EndReason) -> None:
        self.ended = True
        self.session.end_reason = f"stream {reason.value}"
        self.session.wake.set()


class _Ciphers:
    """A session's payload ciphers: the caller's keys (its KMREQ) both ways, as libsrt's
    listener does; a player's packets go out under the key the caller announced."""

    def __init__(self, keys: Any, kk: int) -> None:
        self.keys = keys
        self.kk = kk

    def decrypt(self, kk: int, index: int, payload: bytes) -> bytes:
        return bytes(self.keys.decrypt(kk, index, payload))

    def encrypt(self, index: int, payload: bytes) -> tuple[int, bytes]:
        return self.kk, bytes(self.keys.decrypt(self.kk, index, payload))  # AES-CTR: the same operation

    def refresh(self, km: bytes) -> bytes | None:
        """A KM refresh from the caller (its next key): applied, echoed; ``None`` if unusable."""
        from arcly_trio.protocols.srt.crypto import KeyMaterial

        try:
            self.keys.apply(KeyMaterial.parse(km))
        except Exception:  # the crypto module's SrtCryptoError
            return None
        return km


def _open(host: str, port: int) -> UdpPort:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, _BUFFER)
            except OSError:
                pass
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise CannotListen("srt", host, port, exc.errno, exc.strerror or str(exc)) from None
    return UdpPort(sock)
