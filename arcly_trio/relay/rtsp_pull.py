"""The RTSP camera pull: play an ``rtsp://`` URL (an IP camera, an NVR, another RTSP server) as frames.

What it is for: ``--pull rtsp://user:pass@camera/{stream}`` (and ``--pull APP=rtsp://...``)
makes a play of a stream that is not here pull it from the camera, through the pull relay
(:class:`~arcly_trio.relay.pull.PullSource`: single-flight, idle stop when nobody watches,
published under protocol ``pull``); :func:`open_rtsp_player` is the :class:`~arcly_trio.relay.
upstream.Upstream` it uses for ``rtsp://`` URLs (``open_upstream`` dispatches on the scheme), so
the camera's H.264/H.265 plays over every protocol the server speaks.

How it works: a background task runs :class:`~arcly_trio.protocols.rtsp.client.RtspClient`
over TCP (``OPTIONS``, ``DESCRIBE`` with the URL's credentials when the camera asks, ``SETUP``,
``PLAY``, a keep-alive every half session timeout) and takes the RTP either interleaved on the
TCP connection (the default) or on two UDP sockets per track (``?transport=udp`` in the URL, or
``transport="udp"``; the sockets are bound to the camera's address: datagrams from anyone else
are dropped). Each track's RTP goes through the WebRTC RTP layer: a
:class:`~arcly_trio.protocols.webrtc.rtp.ReorderBuffer` (loss and reordering on UDP are counted
and the video resumes on the next keyframe) and the codec's depacketizer
(:mod:`arcly_trio.protocols.webrtc.payload`). The SDP's
``sprop-parameter-sets`` (H.264) and ``sprop-vps/sps/pps`` (H.265) are fed to the depacketizer
before the first picture, as most cameras send them only there. Timestamps: each track's RTP
clock from its first packet, placed at that packet's arrival on one timeline per player (which
goes on across reconnects, so the published stream's time only moves forward). G.711 audio
(``PCMA``/``PCMU``, 8 kHz, what most cameras send) becomes AAC (:class:`~arcly_trio.media.
transcode.PcmaToAac`) in a thread, a batch per hop; the kernel's legacy paths take that AAC as
it is and the audio bridge makes Opus of it for WebRTC players.

Reconnect: when the camera goes away (connection lost, nothing for ``read_timeout`` seconds, an
RTSP error) after it had played, the player tries again with backoff (0.5 s doubling to 10 s)
for ``reconnect_for`` seconds, the published stream staying up meanwhile (its players wait,
then resume on the camera's next keyframe); :attr:`RtspPlayer.reconnects` counts the successes.
Past that, the stream ends (``end`` says why).

Attacker's view: the camera is a peer on the network. Its messages are bounded by the RTSP
reader, its access units by the depacketizers, its audio frames by the transcoder; at most one
video and one audio track are set up; the frames waiting for the publisher are a bounded
channel (the reader waits when it is full: TCP pushes back on the camera). The URL's
credentials are sent only to the camera the URL names, and only after a ``401``; every URL
shown (logs, ``end``, errors, ``/api/streams``, events) is :func:`~arcly_trio.core.redact.
redact_url`'s and every error text is scrubbed of the URL's secrets
(:func:`~arcly_trio.core.redact.scrub`).

Error policy: on entry, a camera that refuses (401 after the credentials, 404...) raises
:class:`~arcly_trio.core.errors.RemoteRefused`; one that cannot be reached or breaks the
protocol raises :class:`~arcly_trio.core.errors.ConnectionLost` (the pull relay turns both into
``StreamNotFound`` for the waiting viewers). After the start, failures are retried as above and
never raise: :meth:`RtspPlayer.next_batch` returns ``[]`` once the stream ended.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Literal

import trio

from arcly_trio.core.errors import ConnectionLost, RemoteProtocolError, RemoteRefused
from arcly_trio.core.excgroups import unwrap_single
from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.core.redact import redact_url, scrub
from arcly_trio.core.text import printable
from arcly_trio.media.codecs.opus import opus_head
from arcly_trio.media.transcode import PcmaToAac, PcmuToAac, Transcoder
from arcly_trio.protocols.rtsp.client import Described, Playing, RtpData, RtspClient
from arcly_trio.protocols.rtsp.sdp import SdpTrack
from arcly_trio.protocols.webrtc.payload import AccessUnit, aac, g711, h264, h265, opus
from arcly_trio.protocols.webrtc.rtp import ReorderBuffer, RtpError, RtpPacket, TimestampUnwrapper, parse_rtp
from arcly_trio.relay.links import Backoff
from arcly_trio.transport import TRANSPORT_ERRORS, describe

__all__ = ["RtspPlayer", "open_rtsp_player"]

log = logging.getLogger("arcly_trio.relay")

_RECV_SIZE = 65536
#: An AAC RTP payload carries at most this many access units (RFC 3640 AU headers).
MAX_AAC_UNITS = 64


_Depacketizer = h264.Depacketizer | h265.H265Depacketizer | aac.Depacketizer | opus.Depacketizer | g711.Depacketizer


class _Track:
    """One set-up track: its depacketizer, reorder buffer and clock."""

    def __init__(self, sdp: SdpTrack) -> None:
        self.sdp = sdp
        self.kind = FrameKind.VIDEO if sdp.kind == "video" else FrameKind.AUDIO
        self.codec = "aac" if sdp.codec in ("pcma", "pcmu") else sdp.codec
        self.depacketizer: (
            h264.Depacketizer | h265.H265Depacketizer | aac.Depacketizer | opus.Depacketizer | g711.Depacketizer
        )
        self.prefix: list[bytes] = []
        self.config: bytes | None = None
        if sdp.codec == "h264":
            self.depacketizer = h264.Depacketizer()
            self.prefix = _sprops(sdp.parameter("sprop-parameter-sets") or "")
        elif sdp.codec == "hevc":
            self.depacketizer = h265.H265Depacketizer()
            self.prefix = [
                n for key in ("sprop-vps", "sprop-sps", "sprop-pps") for n in _sprops(sdp.parameter(key) or "")
            ]
        elif sdp.codec == "aac":
            self.depacketizer = aac.Depacketizer()
            self.config = sdp.config  # the AudioSpecificConfig of the fmtp
        elif sdp.codec == "opus":
            self.depacketizer = opus.Depacketizer()
            self.config = sdp.config or opus_head(2 if sdp.channels == 2 else 1)
        else:
            self.depacketizer = g711.Depacketizer()
        self.configured = False
        self.reorder = ReorderBuffer(capacity=256, max_wait=0.2)
        self.restart()

    def restart(self) -> None:
        """A new RTSP session: new SSRC, sequence and clock."""
        self.timestamps = TimestampUnwrapper()
        self.first_ts: int | None = None
        self.base_ms = 0
        self.ssrc: int | None = None
        self.reorder = ReorderBuffer(capacity=256, max_wait=0.2)
        self.last_timestamp: int | None = None
        if self.kind is FrameKind.VIDEO:  # a fresh depacketizer gives the configuration out again
            self.depacketizer = h264.Depacketizer() if self.sdp.codec == "h264" else h265.H265Depacketizer()
            self.configured = False
            self.prefix_done = False

    def pts(self, timestamp: int, arrival_ms: int) -> int:
        ext = self.timestamps.unwrap(timestamp)
        if self.first_ts is None:
            self.first_ts = ext
            self.base_ms = arrival_ms
        return self.base_ms + (ext - self.first_ts) * 1000 // self.sdp.clock_rate


def _sprops(text: str) -> list[bytes]:
    out = []
    for item in text.split(",")[:8]:
        try:
            nal = base64.b64decode(item.strip(), validate=True)
        except ValueError:
            continue
        if 0 < len(nal) <= 4096:
            out.append(nal)
    return out


class RtspPlayer:
    """Frames of an RTSP URL (module docstring); an :class:`~arcly_trio.relay.upstream.Upstream`.

    Attributes:
        url: the URL as shown (redacted).
        end: why it ended (``None`` while it goes on).
        reconnects: sessions started again after the camera went away.
        lost: RTP packets given up (UDP loss); ``reordered``: put back in order.
    """

    def __init__(
        self,
        url: str,
        *,
        transport: Literal["tcp", "udp"],
        timeout: float,
        read_timeout: float,
        reconnect_for: float,
        on_reconnect: Callable[[RtspPlayer], None] | None = None,
    ) -> None:
        self._secret_url = url
        self.url = redact_url(url)
        self.transport = transport
        self.timeout = timeout
        self.read_timeout = read_timeout
        self.reconnect_for = reconnect_for
        self.on_reconnect = on_reconnect
        self.end: str | None = None
        self.reconnects = 0
        self.lost = 0
        self.reordered = 0
        self.frames = 0
        self._bytes = 0
        self._tracks: list[_Track] = []
        self._transcoder: Transcoder | None = None
        self._epoch = trio.current_time()
        self._send, self._receive = trio.open_memory_channel[list[Frame]](64)
        self._playing = trio.Event()
        self._last_media = trio.current_time()

    @property
    def bytes_received(self) -> int:
        return self._bytes

    async def next_batch(self, limit: int = 256) -> list[Frame]:
        """Wait for frames and return those there are (about ``limit`` at most); ``[]`` once
        the stream ended."""
        try:
            frames = list(await self._receive.receive())
        except trio.EndOfChannel:
            return []
        while len(frames) < limit:
            try:
                frames += self._receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                break
        return frames

    def _shown(self, text: str) -> str:
        return printable(scrub(text, self._secret_url))[:300]

    # ------------------------------------------------------------------ the sessions

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Play until the camera is gone for good; ``started`` once the first ``PLAY`` is
        answered (errors before that propagate: see the module docstring)."""
        backoff = Backoff(first=0.5, maximum=10.0, stable=10.0)
        started = False
        async with self._send:
            while True:
                try:
                    await self._session(backoff, task_status if not started else None)
                    reason = "the camera ended the stream"
                except (ConnectionLost, RemoteProtocolError, RemoteRefused) as exc:
                    if not started and not self._playing.is_set():
                        raise
                    reason = self._shown(str(exc))
                started = True
                if trio.current_time() - self._last_media > self.reconnect_for:
                    self.end = reason
                    return
                delay = backoff.next_delay()
                log.info("RTSP pull of %s: %s; trying again in %g s", self.url, reason, delay)
                await trio.sleep(delay)
                if trio.current_time() - self._last_media > self.reconnect_for:
                    self.end = reason
                    return

    async def _session(self, backoff: Backoff, task_status: trio.TaskStatus[None] | None) -> None:
        try:
            client = RtspClient(self._secret_url, transport=self.transport)
        except ValueError as exc:  # its text is redacted
            raise RemoteRefused("connect", "URL", str(exc)) from None
        host, port = _address(client.url)
        try:
            with trio.fail_after(self.timeout):
                stream = await trio.open_tcp_stream(host, port)
        except trio.TooSlowError:
            raise ConnectionLost(f"{self.url}: no connection within {self.timeout:g} s") from None
        except TRANSPORT_ERRORS as exc:
            raise ConnectionLost(self._shown(f"{self.url}: {describe(exc)}")) from None
        error: ConnectionLost | RemoteProtocolError | RemoteRefused | None = None
        async with stream, trio.open_nursery() as nursery:
            try:
                await self._play(stream, client, nursery, backoff, task_status)
            except (ConnectionLost, RemoteProtocolError, RemoteRefused) as exc:
                error = exc  # raised below, outside the nursery (not in an exception group)
            finally:
                nursery.cancel_scope.cancel()
        if error is not None:
            raise error

    async def _play(
        self,
        stream: trio.SocketStream,
        client: RtspClient,
        nursery: trio.Nursery,
        backoff: Backoff,
        task_status: trio.TaskStatus[None] | None,
    ) -> None:
        sockets: list[tuple[trio.socket.SocketType, trio.socket.SocketType]] = []
        try:
            try:
                client.start()
                await stream.send_all(client.data_to_send())
                with trio.fail_after(self.timeout):
                    playing, early = await self._handshake(stream, client, sockets)
            except trio.TooSlowError:
                raise ConnectionLost(f"{self.url}: no answer within {self.timeout:g} s") from None
            if not self._tracks or [t.sdp for t in self._tracks] != list(playing.tracks):
                self._tracks = [_Track(t) for t in playing.tracks]
            else:
                for track in self._tracks:
                    track.restart()
            if self._playing.is_set():
                self.reconnects += 1
                log.info("RTSP pull of %s: reconnected", self.url)
                if self.on_reconnect is not None:
                    self.on_reconnect(self)
            self._playing.set()
            self._last_media = trio.current_time()
            backoff.connected()
            if task_status is not None:
                task_status.started()
            now = trio.current_time()  # media that came with the PLAY answer: the first keyframe, often
            await self._publish([u for event in early for u in self._on_rtp(event.track, event.data, now)])
            lock = trio.Lock()

            async def send(data: bytes) -> None:
                if data:
                    async with lock:
                        await stream.send_all(data)

            async def keepalive() -> None:
                while True:
                    await trio.sleep(client.keepalive_interval)
                    client.keepalive()
                    try:
                        await send(client.data_to_send())
                    except TRANSPORT_ERRORS:
                        return  # the reading loop finds the connection broken

            nursery.start_soon(keepalive)
            for index, (rtp, _rtcp) in enumerate(sockets):
                nursery.start_soon(self._udp_reader, rtp, index)
            wait = self.read_timeout if client.transport == "tcp" else min(self.read_timeout, 1.0)
            while True:
                with trio.move_on_after(wait):
                    data = await stream.receive_some(_RECV_SIZE)
                    if not data:
                        raise ConnectionLost("the camera closed the connection")
                    self._bytes += len(data)
                    events = client.receive_data(data)
                    await send(client.data_to_send())
                    now = trio.current_time()
                    units = []
                    for event in events:
                        if isinstance(event, RtpData) and not event.rtcp:
                            units += self._on_rtp(event.track, event.data, now)
                    await self._publish(units)
                if trio.current_time() - self._last_media >= self.read_timeout:
                    raise ConnectionLost(f"no media for {self.read_timeout:g} s")
        except TRANSPORT_ERRORS as exc:
            raise ConnectionLost(self._shown(f"{self.url}: {describe(exc)}")) from None
        finally:
            for pair in sockets:
                for sock in pair:
                    sock.close()
            client.teardown()
            with trio.move_on_after(0.5) as cleanup:
                cleanup.shield = True
                try:
                    await stream.send_all(client.data_to_send())
                except TRANSPORT_ERRORS:
                    pass

    async def _handshake(
        self,
        stream: trio.SocketStream,
        client: RtspClient,
        sockets: list[tuple[trio.socket.SocketType, trio.socket.SocketType]],
    ) -> tuple[Playing, list[RtpData]]:
        """Run the exchange to PLAY's answer; return it and the RTP read with it."""
        while True:
            data = await stream.receive_some(_RECV_SIZE)
            if not data:
                raise ConnectionLost(f"{self.url}: the camera closed the connection")
            self._bytes += len(data)
            events = client.receive_data(data)
            for position, event in enumerate(events):
                if isinstance(event, Described):
                    ports = None
                    if client.transport == "udp":
                        peer = stream.socket.getpeername()
                        for _track in event.tracks:
                            sockets.append(await _udp_pair(peer[0]))
                        ports = [(a.getsockname()[1], b.getsockname()[1]) for a, b in sockets]
                    client.setup(ports)
                elif isinstance(event, Playing):
                    if client.transport == "udp":
                        await _connect_udp(stream, sockets, event)
                    await stream.send_all(client.data_to_send())
                    early = [e for e in events[position + 1 :] if isinstance(e, RtpData) and not e.rtcp]
                    return event, early
            await stream.send_all(client.data_to_send())

    async def _udp_reader(self, sock: trio.socket.SocketType, index: int) -> None:
        while True:
            try:
                data = await sock.recv(_RECV_SIZE)
            except OSError:
                continue  # an ICMP error for a datagram of ours: the camera's port is not open yet
            self._bytes += len(data)
            await self._publish(self._on_rtp(index, data, trio.current_time()))

    # ------------------------------------------------------------------ media

    def _on_rtp(self, index: int, data: bytes, now: float) -> list[tuple[_Track, AccessUnit, int]]:
        try:
            packet = parse_rtp(data)
        except RtpError:
            return []
        track = self._tracks[index]
        if packet.payload_type != track.sdp.payload_type:
            return []
        if track.ssrc != packet.ssrc:
            if track.ssrc is not None:
                track.restart()
            track.ssrc = packet.ssrc
        before_lost, before_reordered = track.reorder.lost, track.reorder.reordered
        released = track.reorder.push(packet, now)
        self.lost += track.reorder.lost - before_lost
        self.reordered += track.reorder.reordered - before_reordered
        self._last_media = now
        arrival_ms = int((now - self._epoch) * 1000)
        out = []
        for rtp, lost in released:
            for unit in self._depacketize(track, rtp, lost):
                out.append((track, unit, track.pts(unit.timestamp, arrival_ms)))
        return out

    def _depacketize(self, track: _Track, rtp: RtpPacket, lost: bool) -> list[AccessUnit]:
        units: list[AccessUnit] = []
        if track.prefix and not track.prefix_done and rtp.timestamp != track.last_timestamp:
            # Until a configuration is out, each access unit starts with the SDP's parameter sets.
            for nal in track.prefix:
                units += track.depacketizer.push(nal, marker=False, timestamp=rtp.timestamp, lost=lost)
            lost = False
        track.last_timestamp = rtp.timestamp
        units += track.depacketizer.push(rtp.payload, marker=rtp.marker, timestamp=rtp.timestamp, lost=lost)
        if any(unit.config is not None for unit in units):
            track.prefix_done = True
        return units

    async def _publish(self, units: list[tuple[_Track, AccessUnit, int]]) -> None:
        frames: list[Frame] = []
        g711_in: list[Frame] = []
        for track, unit, pts in units:
            if track.kind is FrameKind.VIDEO:
                if unit.config is not None:
                    track.configured = True
                    frames.append(Frame(FrameKind.VIDEO, track.codec, pts, pts, unit.config, config=True))
                if not track.configured:
                    continue
                frames.append(Frame(FrameKind.VIDEO, track.codec, pts, pts, unit.payload, unit.keyframe))
            elif track.sdp.codec in ("pcma", "pcmu"):
                g711_in.append(Frame(FrameKind.AUDIO, track.sdp.codec, pts, pts, unit.payload))
            else:
                if not track.configured and track.config is not None:
                    track.configured = True
                    frames.append(Frame(FrameKind.AUDIO, track.codec, pts, pts, track.config, config=True))
                if track.configured:
                    frames.append(Frame(FrameKind.AUDIO, track.codec, pts, pts, unit.payload))
        if g711_in:
            if self._transcoder is None:
                self._transcoder = PcmaToAac() if g711_in[0].codec == "pcma" else PcmuToAac()
            transcoder = self._transcoder
            frames += await trio.to_thread.run_sync(lambda: [out for f in g711_in for out in transcoder.push(f)])
        if frames:
            self.frames += len(frames)
            await self._send.send(frames)


def _address(url: str) -> tuple[str, int]:
    from urllib.parse import urlsplit  # noqa: PLC0415

    parts = urlsplit(url)
    return parts.hostname or "", parts.port or 554


async def _udp_pair(host: str) -> tuple[trio.socket.SocketType, trio.socket.SocketType]:
    family = trio.socket.AF_INET6 if ":" in host else trio.socket.AF_INET
    rtp = trio.socket.socket(family, trio.socket.SOCK_DGRAM)
    rtcp = trio.socket.socket(family, trio.socket.SOCK_DGRAM)
    await rtp.bind(("::" if family == trio.socket.AF_INET6 else "0.0.0.0", 0))
    await rtcp.bind(("::" if family == trio.socket.AF_INET6 else "0.0.0.0", 0))
    return rtp, rtcp


async def _connect_udp(
    stream: trio.SocketStream,
    sockets: list[tuple[trio.socket.SocketType, trio.socket.SocketType]],
    playing: Playing,
) -> None:
    """Only the camera may send to our UDP ports: connect each socket to its server port."""
    host = stream.socket.getpeername()[0]
    for (rtp, rtcp), ports in zip(sockets, playing.server_ports, strict=True):
        if ports is not None:
            await rtp.connect((host, ports[0]))
            await rtcp.connect((host, ports[1]))


@asynccontextmanager
async def open_rtsp_player(
    url: str,
    *,
    transport: Literal["tcp", "udp"] = "tcp",
    timeout: float = 10.0,
    read_timeout: float = 30.0,
    reconnect_for: float | None = None,
    on_reconnect: Callable[[RtspPlayer], None] | None = None,
) -> AsyncIterator[RtspPlayer]:
    """Play ``url`` for the duration of the block (module docstring); ``reconnect_for``
    defaults to ``read_timeout``."""
    player = RtspPlayer(
        url,
        transport=transport,
        timeout=timeout,
        read_timeout=read_timeout,
        reconnect_for=read_timeout if reconnect_for is None else reconnect_for,
        on_reconnect=on_reconnect,
    )
    with unwrap_single():  # the camera's refusal, or the block's own error, as itself
        async with trio.open_nursery() as nursery:
            await nursery.start(player.run)
            try:
                yield player
            finally:
                nursery.cancel_scope.cancel()
