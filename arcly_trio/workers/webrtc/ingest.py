"""WHIP ingest: a browser's (or ffmpeg's) RTP put back into frames and published into the kernel.

A :class:`WhipSession` negotiates the answer first (:func:`~arcly_trio.protocols.webrtc.sdp.answer_whip`:
the codecs the kernel carries, H.264 first), then publishes through the engine
(``engine.publish``, protocol ``"whip"``: the authorizer, the publisher limits and the takeover
policy apply as on every path). Each negotiated track gets an :class:`InTrack`:

* a :class:`~arcly_trio.protocols.webrtc.rtp.ReorderBuffer` (bounded) puts packets back in order
  and says which are missing: they are NACKed (RFC 4585) on the session's tick, and given up
  after the buffer's wait;
* the codec's depacketizer (:mod:`arcly_trio.protocols.webrtc.payload`) makes access units; after
  a loss it holds output until the next keyframe and the session sends a PLI (at most every
  :data:`PLI_INTERVAL` seconds), as it does when a WHEP viewer of the stream asks for one;
* timestamps: each track's RTP clock is unwrapped and turned into milliseconds from the moment
  its first packet arrived on the session's clock, so audio and video share one timeline.

Packets are matched to tracks by SSRC (from the offer's ``a=ssrc``), else by the ``sdes:mid``
header extension, else by payload type; at most :data:`MAX_SSRCS` SSRCs are learnt.

Receiver reports go back every second (with the loss the buffer saw), so the sender's
congestion control sees the path; their cumulative loss saturates at the field's 24 bits
(sequence jumps a publisher sends cannot make the report fail and end its session).

Error policy: bad media (a packet no track owns, a payload the depacketizer cannot use) is
dropped and counted; the kernel's end of the publish session (kicked, replaced, rate-limited) ends
the WHIP session with that reason.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs

from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.kernel.publish import Publisher
from arcly_trio.media.codecs.opus import opus_head
from arcly_trio.protocols.webrtc import rtcp
from arcly_trio.protocols.webrtc.payload import Depacketizer, av1, h264, h265, opus, vp9
from arcly_trio.protocols.webrtc.rtp import ReorderBuffer, RtpPacket, SequenceUnwrapper, TimestampUnwrapper
from arcly_trio.protocols.webrtc.sdp import Answer, Track, answer_whip
from arcly_trio.workers.webrtc.peer import PeerSession

__all__ = ["WhipSession", "InTrack", "PLI_INTERVAL", "MAX_SSRCS"]

PLI_INTERVAL = 0.5
MAX_SSRCS = 8
_DEPACKETIZERS: dict[str, Callable[[], Depacketizer]] = {
    "h264": h264.Depacketizer,
    "h265": h265.H265Depacketizer,
    "av1": av1.Av1Depacketizer,
    "vp9": vp9.Vp9Depacketizer,
    "opus": opus.Depacketizer,
}
_KERNEL_NAMES = {"h265": "hevc"}
_MAX_CUMULATIVE_LOST = 0x7FFFFF


@attrs.define(slots=True, eq=False)
class InTrack:
    """One track a publisher sends: reordering, depacketizing, its timeline."""

    kind: FrameKind
    codec: str
    """The kernel's codec name (``h264``, ``hevc``, ``av1``, ``vp9``, ``opus``)."""
    payload_type: int
    clock: int
    depacketizer: Depacketizer
    reorder: ReorderBuffer = attrs.field(factory=ReorderBuffer)
    timestamps: TimestampUnwrapper = attrs.field(factory=TimestampUnwrapper)
    ssrc: int | None = None
    origin: tuple[int, int] | None = None
    """(first unwrapped RTP timestamp, its millisecond on the session's timeline)."""
    configured: bool = False
    last_pli: float = -1e9
    frames: int = 0
    received_at_report: int = 0
    expected_at_report: int = 0
    first_sequence: int | None = None
    sequences: SequenceUnwrapper = attrs.field(factory=SequenceUnwrapper)
    highest: int = 0
    lost: int = 0
    """Packets that never arrived (expected from the sequence numbers less received)."""

    def pts(self, timestamp: int, arrival_ms: int) -> int:
        unwrapped = self.timestamps.unwrap(timestamp)
        if self.origin is None:
            self.origin = (unwrapped, arrival_ms)
        first, at = self.origin
        return at + (unwrapped - first) * 1000 // self.clock


def _in_track(track: Track) -> InTrack | None:
    name = track.codec.name
    make = _DEPACKETIZERS.get(name)
    if make is None:
        return None
    kind = FrameKind.AUDIO if track.kind == "audio" else FrameKind.VIDEO
    return InTrack(kind, _KERNEL_NAMES.get(name, name), track.codec.payload_type, track.codec.clock_rate, make())


class WhipSession(PeerSession):
    """One WHIP publisher (see the module docstring)."""

    kind = "whip"
    tick_interval = 0.05

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tracks: list[InTrack] = []
        self.by_ssrc: dict[int, InTrack] = {}
        self.by_mid: dict[str, InTrack] = {}
        self.mid_extension: int | None = None
        self.publisher: Publisher | None = None
        self.our_ssrc = secrets.randbits(32) or 1
        self.epoch: float | None = None
        self._next_report = 0.0
        self._keyframe_wanted = False

    @asynccontextmanager
    async def admitted(self) -> AsyncIterator[Answer]:
        answer = answer_whip(self.offer, self.local_endpoint())
        for track in answer.tracks:
            made = _in_track(track)
            if made is None:
                continue
            self.tracks.append(made)
            self.by_mid[track.mid] = made
            if track.mid_extension is not None:
                self.mid_extension = track.mid_extension
            for ssrc in track.remote_ssrcs[:1]:  # the primary SSRC (no RTX is negotiated)
                made.ssrc = ssrc
                self.by_ssrc[ssrc] = made
        self.setup(answer)
        async with self.engine.publish(self.key, self.credentials, protocol="whip") as publisher:
            self.publisher = publisher
            self.host.publishing(self)
            try:
                yield answer
            finally:
                self.host.unpublishing(self)

    def request_keyframe(self) -> None:
        """A viewer of the stream wants a keyframe: ask the publisher (on the next tick)."""
        self._keyframe_wanted = True

    def _track_of(self, packet: RtpPacket) -> InTrack | None:
        track = self.by_ssrc.get(packet.ssrc)
        if track is not None:
            return track
        if len(self.by_ssrc) >= MAX_SSRCS:
            return None
        found = None
        if self.mid_extension is not None:
            for ident, value in packet.extensions:
                if ident == self.mid_extension:
                    found = self.by_mid.get(value.decode("ascii", "replace"))
                    break
        if found is None:
            for candidate in self.tracks:
                if candidate.payload_type == packet.payload_type:
                    found = candidate
                    break
        if found is None or found.payload_type != packet.payload_type or found.ssrc is not None:
            return None
        found.ssrc = packet.ssrc
        self.by_ssrc[packet.ssrc] = found
        return found

    async def on_rtp(self, packet: RtpPacket, now: float) -> None:
        track = self._track_of(packet)
        if track is None or packet.payload_type != track.payload_type:
            self.stats.bad_packets += 1
            return
        track.highest = max(track.highest, track.sequences.unwrap(packet.sequence))
        if track.first_sequence is None:
            track.first_sequence = track.highest
        await self._publish(track, track.reorder.push(packet, now), now)

    async def _publish(self, track: InTrack, released: list[tuple[RtpPacket, bool]], now: float) -> None:
        publisher = self.publisher
        if publisher is None or not released:
            return
        if self.epoch is None:
            self.epoch = now
        arrival_ms = int((now - self.epoch) * 1000)
        for packet, lost in released:
            for unit in track.depacketizer.push(
                packet.payload, marker=packet.marker, timestamp=packet.timestamp, lost=lost
            ):
                pts = track.pts(unit.timestamp, arrival_ms)
                if track.kind is FrameKind.AUDIO:
                    if not track.configured:
                        track.configured = True
                        await publisher.send(Frame(FrameKind.AUDIO, "opus", pts, pts, opus_head(2), config=True))
                    await publisher.send(Frame(FrameKind.AUDIO, track.codec, pts, pts, unit.payload))
                else:
                    if unit.config is not None:
                        track.configured = True
                        await publisher.send(Frame(FrameKind.VIDEO, track.codec, pts, pts, unit.config, config=True))
                    if not track.configured:
                        continue  # a decoder needs the configuration first
                    await publisher.send(Frame(FrameKind.VIDEO, track.codec, pts, pts, unit.payload, unit.keyframe))
                track.frames += 1

    def on_rtcp(self, packets: list[Any], now: float) -> None:
        for packet in packets:
            if isinstance(packet, rtcp.SenderReport):
                for block in packet.reports:
                    rtt = rtcp.rtt_from_report(block, time.time())
                    if rtt is not None:
                        self.stats.rtt = rtt

    async def tick(self, now: float) -> None:
        parts: list[bytes] = []
        for track in self.tracks:
            await self._publish(track, track.reorder.flush(now), now)
            if track.ssrc is None:
                continue
            missing = track.reorder.missing(now)
            if missing:
                self.stats.nacks += len(missing)
                parts.append(rtcp.nack(self.our_ssrc, track.ssrc, missing))
            if track.kind is FrameKind.VIDEO and (track.depacketizer.needs_keyframe or self._keyframe_wanted):
                if now - track.last_pli >= PLI_INTERVAL:
                    track.last_pli = now
                    self.stats.keyframe_requests += 1
                    parts.append(rtcp.pli(self.our_ssrc, track.ssrc))
                    self._keyframe_wanted = False
        if now >= self._next_report:
            self._next_report = now + 1.0
            blocks = [self._report_block(track) for track in self.tracks if track.first_sequence is not None]
            if blocks:
                self.stats.lost = sum(track.lost for track in self.tracks)
                parts.insert(0, rtcp.receiver_report(self.our_ssrc, blocks))
        if parts:
            self.send_rtcp(b"".join(parts))

    def _report_block(self, track: InTrack) -> rtcp.ReportBlock:
        first = track.first_sequence or 0
        expected = track.highest - first + 1
        received = track.reorder.received
        expected_interval = expected - track.expected_at_report
        received_interval = received - track.received_at_report
        track.expected_at_report = expected
        track.received_at_report = received
        lost_interval = expected_interval - received_interval
        fraction = (
            0 if expected_interval <= 0 or lost_interval <= 0 else min(255, (lost_interval << 8) // expected_interval)
        )
        track.lost = max(0, expected - received)
        cumulative = min(track.lost, _MAX_CUMULATIVE_LOST)  # a 24-bit field: saturate (RFC 3550 6.4.1)
        self.stats.fraction_lost = fraction / 256
        assert track.ssrc is not None
        return rtcp.ReportBlock(
            ssrc=track.ssrc,
            fraction_lost=fraction,
            cumulative_lost=cumulative,
            highest_sequence=track.highest & 0xFFFFFFFF,
            jitter=0,
            lsr=0,
            dlsr=0,
        )

    def document(self) -> dict[str, Any]:
        out = super().document()
        out["tracks"] = [{"kind": t.kind.value, "codec": t.codec, "frames": t.frames} for t in self.tracks]
        return out
