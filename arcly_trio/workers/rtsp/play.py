"""One RTSP player, as the kernel sees it: the :class:`RtspSink` and the RTP it sends.

Hot path: a frame is packetized once for every RTSP player of the stream (the RTP payloads, cut
for :data:`MTU` by the codec's payload format, cached with the frame by
:meth:`~arcly_trio.core.frame.Frame.encoded`, as the WHEP viewers do); each player then adds a
16-byte head of its own per packet (the 4-byte ``$`` interleaved head and the 12-byte RTP header
with its sequence number, SSRC and timestamp base) and writes ``[head, payload]`` pairs with one
``writev`` through its connection's :class:`~arcly_trio.workers.egress.Egress` (TCP), or one
``sendmsg`` per packet to its client's UDP port (UDP). No payload is copied per player.

A player starts at a keyframe (the replay's, or the next), so its first picture decodes. Its
RTP timestamps are ``base + pts * clock / 1000`` on each track, with one random ``base`` per
track, and :meth:`RtspSink.sender_reports` maps them to the wall clock the same way for every
track (RTCP SR, RFC 3550 6.4.1): that is what players sync audio and video by.

Slow players (TCP): the egress queue holds at most the application's ``subscriber_queue``
frames; past that the kernel's lag policy drops to the next keyframe and evicts past the lag
budget. A UDP player never queues: a datagram the socket refuses is lost (counted), as on the
network.

Error policy: nothing here raises into the stream's task: a frame the payload format cannot
carry, or a codec the DESCRIBE did not announce, is skipped and counted in ``skipped``.
"""

from __future__ import annotations

import secrets
import struct
import time
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

import attrs

from arcly_trio.core.errors import LocalProtocolError
from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.core.keys import StreamKey
from arcly_trio.protocols.rtsp.sdp import SdpTrack
from arcly_trio.protocols.webrtc import rtcp
from arcly_trio.protocols.webrtc.payload import aac, av1, h264, h265, opus
from arcly_trio.workers.egress import Buffer, DirectSink, Egress, Encoded
from arcly_trio.workers.webrtc.viewer import prefix_of

__all__ = ["MTU", "OutTrack", "RtspSink", "MODULES"]

MTU = 1400
"""The most payload bytes per RTP packet (fits a 1500-byte Ethernet MTU with the headers)."""
MODULES: dict[str, ModuleType] = {"h264": h264, "hevc": h265, "av1": av1, "aac": aac, "opus": opus}
"""The payload format of each codec an RTSP player can receive."""
_MASK32 = 0xFFFFFFFF
_HEAD = struct.Struct(">BBHBBHII")  # $, channel, length, V/P/X/CC, M/PT, sequence, timestamp, SSRC
_RTP = struct.Struct(">BBHII")


def _payloads(frame: Frame, module: ModuleType, prefix: tuple[bytes, ...]) -> tuple[tuple[bytes, ...], int]:
    """A frame's RTP payloads (built once per frame for every RTSP player) and their bytes."""
    try:
        payloads = module.packetize(frame.payload, MTU, prefix=prefix if frame.keyframe else ())
    except LocalProtocolError:
        return (), 0
    return tuple(payloads), sum(len(p) for p in payloads)


def _prefix(frame: Frame) -> tuple[bytes, ...]:
    return prefix_of(frame.codec, frame.payload)


@attrs.define(slots=True, eq=False)
class OutTrack:
    """One track a player receives: as described (SDP), and its RTP state."""

    sdp: SdpTrack
    kind: FrameKind
    module: ModuleType
    ssrc: int = attrs.field(factory=lambda: secrets.randbits(32) or 1)
    sequence: int = attrs.field(factory=lambda: secrets.randbelow(0x8000))
    base: int = attrs.field(factory=lambda: secrets.randbits(32))
    channel: int | None = None
    """The interleaved RTP channel (TCP); RTCP goes on ``channel + 1``."""
    udp: tuple[Any, tuple[str, int], tuple[str, int]] | None = None
    """(server RTP socket, client RTP address, client RTCP address) for UDP."""
    udp_rtcp: Any = None
    setup: bool = False
    packets: int = 0
    octets: int = 0
    lost: int = 0
    prefix: tuple[bytes, ...] = ()
    last_timestamp: int = 0

    def timestamp(self, pts: int) -> int:
        return (self.base + pts * self.sdp.clock_rate // 1000) & _MASK32


class RtspSink(DirectSink):
    """The kernel sink of one RTSP player (see the module docstring)."""

    __slots__ = ("key", "tracks", "configs", "on_config", "wait_keyframe", "skipped", "wall_base", "codecs")

    def __init__(self, egress: Egress, key: StreamKey) -> None:
        super().__init__(egress)
        self.key = key
        self.tracks: dict[FrameKind, OutTrack] = {}
        self.configs: dict[FrameKind, Frame] = {}
        """The latest config frame of each kind (main track): what DESCRIBE announces."""
        self.on_config: Callable[[], None] | None = None
        self.wait_keyframe = True
        self.skipped = 0
        self.wall_base: tuple[float, int] | None = None
        """(wall clock, pts) of the first frame sent: the sender reports' mapping."""

    # --------------------------------------------------------------- the kernel's Sink

    def _note(self, frames: Sequence[Frame], start: int) -> None:
        for index in range(start, len(frames)):
            frame = frames[index]
            if frame.config and frame.track == 0 and not frame.bridged and frame.kind is not FrameKind.DATA:
                self.configs[frame.kind] = frame
                track = self.tracks.get(frame.kind)
                if track is not None and frame.kind is FrameKind.VIDEO:
                    track.prefix = frame.encoded(("rtp-prefix",), _prefix)
                if self.on_config is not None:
                    self.on_config()

    def replay(self, frames: list[Frame]) -> None:
        self._note(frames, 0)
        super().replay(frames)

    def offer(self, frames: Sequence[Frame], start: int) -> int:
        self._note(frames, start)
        return super().offer(frames, start)

    def start_session(self, start: Any) -> None:
        self.wait_keyframe = True

    # --------------------------------------------------------------- tracks

    def add_track(self, track: OutTrack) -> None:
        self.tracks[track.kind] = track
        config = self.configs.get(track.kind)
        if config is not None and track.kind is FrameKind.VIDEO:
            track.prefix = config.encoded(("rtp-prefix",), _prefix)

    def _track_of(self, frame: Frame) -> OutTrack | None:
        if frame.config or frame.track or frame.bridged:
            return None
        track = self.tracks.get(frame.kind)
        if track is None or not track.setup or track.sdp.codec != frame.codec:
            return None
        if frame.kind is FrameKind.VIDEO and self.wait_keyframe:
            if not frame.keyframe:
                return None
            self.wait_keyframe = False
        elif frame.kind is FrameKind.AUDIO and self.wait_keyframe and self._video_set_up():
            return None  # audio starts with the picture
        if self.wall_base is None:
            self.wall_base = (time.time(), frame.pts)
        return track

    def _video_set_up(self) -> bool:
        video = self.tracks.get(FrameKind.VIDEO)
        return video is not None and video.setup

    # --------------------------------------------------------------- writing

    def encode(self, frames: Sequence[Frame], start: int, end: int) -> Encoded:
        """TCP interleaved: per packet a 16-byte head of this player and the shared payload."""
        buffers: list[Buffer] = []
        size = 0
        pack = _HEAD.pack
        for index in range(start, end):
            frame = frames[index]
            track = self._track_of(frame)
            if track is None:
                if not frame.config:
                    self.skipped += 1
                continue
            payloads, octets = frame.encoded(("rtsp-rtp", frame.codec), _payloads, track.module, track.prefix)
            if not payloads:
                self.skipped += 1
                continue
            timestamp = track.timestamp(frame.pts)
            track.last_timestamp = timestamp
            channel = track.channel or 0
            pt = track.sdp.payload_type
            last = len(payloads) - 1
            video = track.kind is FrameKind.VIDEO
            sequence = track.sequence
            for i, payload in enumerate(payloads):
                marker = 0x80 if (i == last and (video or track.sdp.codec == "aac")) else 0
                head = pack(0x24, channel, len(payload) + 12, 0x80, marker | pt, sequence, timestamp, track.ssrc)
                sequence = (sequence + 1) & 0xFFFF
                buffers.append(head)
                buffers.append(payload)
                size += 16 + len(payload)
            track.sequence = sequence
            track.packets += len(payloads)
            track.octets += octets
        return buffers, size

    def write(self, frames: Sequence[Frame], start: int, end: int, counted: int) -> None:
        if not any(track.udp is not None for track in self.tracks.values()):
            buffers, size = self.encode(frames, start, end)
            self.egress.write(buffers, size, counted)
            return
        for index in range(start, end):
            frame = frames[index]
            track = self._track_of(frame)
            if track is None or track.udp is None:
                if not frame.config:
                    self.skipped += 1
                continue
            payloads, octets = frame.encoded(("rtsp-rtp", frame.codec), _payloads, track.module, track.prefix)
            timestamp = track.timestamp(frame.pts)
            track.last_timestamp = timestamp
            sock, destination, _ = track.udp
            last = len(payloads) - 1
            video = track.kind is FrameKind.VIDEO
            pt = track.sdp.payload_type
            for i, payload in enumerate(payloads):
                marker = 0x80 if (i == last and (video or track.sdp.codec == "aac")) else 0
                header = _RTP.pack(0x80, marker | pt, track.sequence, timestamp, track.ssrc)
                track.sequence = (track.sequence + 1) & 0xFFFF
                try:
                    sock.sendmsg([header, payload], [], 0, destination)
                except (BlockingIOError, OSError):
                    track.lost += 1
            track.packets += len(payloads)
            track.octets += octets

    # --------------------------------------------------------------- RTCP

    def sender_reports(self, now: float) -> list[tuple[OutTrack, bytes]]:
        """One SR per track that has sent, mapping the wall clock ``now`` to its RTP clock the
        same way for every track (see the module docstring)."""
        base = self.wall_base
        if base is None:
            return []
        wall, pts = base
        media_ms = pts + int((now - wall) * 1000)
        out = []
        for track in self.tracks.values():
            if track.packets:
                report = rtcp.sender_report(track.ssrc, now, track.timestamp(media_ms), track.packets, track.octets)
                out.append((track, report))
        return out

    def send_rtcp(self, track: OutTrack, data: bytes) -> None:
        """An RTCP packet of ``track`` to its client (interleaved or UDP); never waits."""
        if track.udp is not None:
            _, _, destination = track.udp
            sock = track.udp_rtcp
            try:
                sock.sendto(data, destination)
            except OSError:
                pass
        elif track.channel is not None and not self.ended:
            self.egress.send(struct.pack(">BBH", 0x24, track.channel + 1, len(data)) + data)
