"""WHEP playback: a viewer is a kernel sink whose frames go out as SRTP on the server's UDP port.

A :class:`WhepSession` attaches an :class:`RtpSink` to its stream (``engine.attach``, protocol
``"whep"``: the one authorization path of every player), negotiates the answer from what the
stream carries (:func:`video_source`: the codec and, for H.264, the profile and level of its
SPS), and from then on the stream's task hands it frames, as to every direct-write egress
(:mod:`arcly_trio.workers.egress`):

* **Packetized once per stream.** A frame's RTP packets (payload, timestamp, marker) are built once
  (:meth:`~arcly_trio.core.frame.Frame.encoded`, key ``("rtp", codec, mtu)``) and shared by every
  WHEP viewer; each viewer adds its own 12-byte RTP header (its SSRC, its sequence numbers) and
  protects the packet with its own SRTP keys (on UDP: from the frame's
  :class:`~arcly_trio.protocols.webrtc.srtp.PacketPlan` s, laid out once per frame and SRTP
  profile for every viewer, cached on the frame as its packets are), then the UDP port sends it at once
  (:meth:`~.udp.UdpPort.send` never waits). No task per frame, no queue per viewer.
* **Start.** Until DTLS is up the sink holds the frames from the latest keyframe (bounded by
  :data:`MAX_HELD`); once connected it sends them if they are fresh (at most
  :data:`MAX_START_AGE` ms of media: a low-latency player must not start seconds behind;
  :data:`MAX_SYNCED_START_AGE` for a stream with audio, for lip sync), else
  it waits for the next keyframe and asks a WHIP publisher of the stream for one
  (:meth:`~.peer.SessionHost.request_keyframe`). The audio starts at most
  :data:`MAX_AUDIO_START` ms behind the video: a burst of audio would be played late (see there).
* **Loss.** Each viewer keeps a ring of what it sent (:class:`~arcly_trio.protocols.webrtc.rtp.SendHistory`:
  references to the shared payloads, :data:`HISTORY` packets); a NACK is answered from it
  (:data:`MAX_RETRANSMITS` per second at most). A PLI or FIR (the browser cannot decode what
  follows) makes the viewer resume at the next keyframe, and is passed on to a WHIP publisher of
  the stream so that one comes at once; any other source's next keyframe comes on its own.
* **Slow viewers** are the kernel's, as every other sink's (:mod:`arcly_trio.kernel.fanout`). A
  frame whose packets the path would not take (the UDP socket's buffer full: ``EAGAIN``,
  ``ENOBUFS``; an ICE-TCP link's queue full because the peer reads too slowly) is a loss the
  viewer repairs with NACKs, until :data:`MAX_FAILED_FRAMES` tracks' frames in a row failed: then
  the sink does not take that frame (:meth:`RtpSink.offer`) and the kernel's lag policy applies:
  the viewer drops everything to the next keyframe (counted in the subscriber's ``dropped``,
  an event, a log line) and, past the application's lag budget (``lag-budget``), is evicted: its
  session ends (``evicted``, logged). An ICE-TCP viewer that reads nothing for the link's
  ``write_timeout`` loses its link (:mod:`.tcp`) and, that being its path, its session, as a
  TCP egress that times out is closed.
* **Audio.** Opus frames go out as they are (RFC 7587), or, on a worker with at least
  :data:`JOIN_OPUS_FROM` WebRTC sessions, two consecutive 20 ms packets as one 40 ms packet
  (:func:`_opus_role`: half the audio datagrams for 20 ms more latency; not for a viewer whose
  offer's ``a=maxptime`` is under 40); for a stream whose audio is AAC the
  session asks the audio bridge (an engine plugin with ``want_opus``, see :class:`OpusBridge`)
  for Opus while it plays, and sends what the bridge delivers. From :data:`BATCH_AUDIO_FROM`
  sessions, an Opus packet waits for the viewer's next video frame and goes out as the last
  datagram of that frame's GSO send (the frame's last packet padded to its run's size by the
  shared plan): one system call for both, for at most a video frame interval more latency.
* **Sync.** Sender reports map each track's RTP clock to one wall clock (the same media
  timestamp gives the same NTP time on both tracks), so the browser keeps lips in sync.

Error policy: nothing here raises into the stream's task: a frame the payload format cannot
carry is skipped (counted in ``skipped``), a codec that is not the negotiated one too. The end
of the stream ends the session (:meth:`RtpSink.close`).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Callable, Sequence, Sized
from contextlib import asynccontextmanager
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final, Protocol, runtime_checkable

import attrs

from arcly_trio.core.errors import LocalProtocolError, RemoteProtocolError
from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.core.keys import StreamKey
from arcly_trio.kernel.fanout import EndReason, SessionStart, Subscriber
from arcly_trio.media.codecs import opus_packet
from arcly_trio.media.codecs.errors import CodecError
from arcly_trio.media.probe import StreamInfo
from arcly_trio.protocols.webrtc import rtcp
from arcly_trio.protocols.webrtc.payload import av1, h264, h265, opus, vp9
from arcly_trio.protocols.webrtc.rtp import SendHistory
from arcly_trio.protocols.webrtc.sdp import Answer, Track, VideoSource, answer_whep
from arcly_trio.protocols.webrtc.srtp import (
    MAX_PADDING,
    TRAILERS,
    PacketPlan,
    SrtpContext,
    SrtpProtectError,
    plan_packets,
)
from arcly_trio.workers.webrtc.peer import PeerSession

if TYPE_CHECKING:
    from arcly_trio.workers.webrtc.tcp import TcpLink

__all__ = [
    "WhepSession",
    "RtpSink",
    "OpusBridge",
    "video_source",
    "MAX_HELD",
    "MAX_START_AGE",
    "MAX_AUDIO_START",
    "MAX_STALE_AUDIO",
    "HISTORY",
    "JOIN_OPUS_SAMPLES",
    "JOIN_OPUS_FROM",
    "BATCH_AUDIO_FROM",
]

MAX_HELD = 600
"""Frames a viewer holds while it connects (from the latest keyframe); past it, it waits for the next."""
MAX_START_AGE = 1000
"""Milliseconds of media a viewer may start behind; older held frames are dropped for the next keyframe."""
MAX_SYNCED_START_AGE = 50
""":data:`MAX_START_AGE` for a stream with audio: a viewer starts from the held keyframe only
if it is at most this old, else at the next keyframe (asking a WHIP publisher for one).

A start from an older keyframe sends its frames as a burst, and Chromium then plays the sound
behind the picture for ten seconds and more while its lip sync converges: measured with the
flash-and-beep clip under load, the first offsets were 270 ms (RTMP, the bridge) and
decreasing 10-15 ms a second (and a 300 ms burst still started one at 250 ms); starting at the
next keyframe they were 105 ms at most and 15-55 ms after a few seconds. The price is the time
to the first picture: up to one GOP more (a WHIP publisher sends one on the PLI at once)."""
MAX_AUDIO_START = 40
"""How far (ms) a viewer's first audio may be behind its latest video: older audio of the start
is left out (the held burst is video from the keyframe, audio only from the last 40 ms; from the
audio bridge, at most :data:`MAX_STALE_AUDIO` stale frames are skipped before the first).

The video of a start must go back to its keyframe (up to :data:`MAX_START_AGE`), but audio
sent in that burst fills the browser's audio jitter buffer (NetEq) with as much, which it then
plays that much late: measured in Chromium, a start with the whole held GOP put the sound
300-400 ms behind the picture for five seconds (its lip sync moves the video at most ~80 ms a
second), a start without it did not."""
MAX_STALE_AUDIO = 50
"""Bridged Opus frames (20 ms each) a viewer skips at most while waiting for fresh audio."""
JOIN_OPUS_SAMPLES = 960
"""Opus packets of at most this many 48 kHz samples (20 ms) go out to WHEP viewers joined in
pairs (:func:`_opus_role`): a viewer's audio datagrams halved for 20 ms more audio latency."""
JOIN_OPUS_FROM = 100
"""WebRTC sessions on the worker from which Opus packets are joined in pairs: below, the CPU
they save (~10-15 % of a viewer's) is not worth the latency they add (measured in Chromium,
WHIP to WHEP with sound: p50 +20-35 ms); from there on, it is."""
BATCH_AUDIO_FROM = JOIN_OPUS_FROM
"""WebRTC sessions on the worker from which a WHEP viewer's Opus packet waits for its next
video frame and goes out as the last datagram of that frame's GSO send (:meth:`OutTrack.send_plans`):
a send system call per audio packet saved (the audio's ``sendto`` was ~10 % of the server's
samples in a py-spy profile at 500 viewers) for at most one video frame interval more audio
latency. The packet waits for the next video frame or the next audio packet, whichever comes
first (so never more than one audio packet's duration), and only while the viewer's video is
flowing, on UDP with in-place SRTP, and if the viewer joins its Opus packets
(:data:`JOIN_OPUS_FROM`, ``a=maxptime``)."""
HISTORY = 1024
"""Video packets each viewer can resend on a NACK (references to shared payloads)."""
MAX_RETRANSMITS = 400
"""Retransmissions per second per viewer at most (a NACK storm cannot multiply our work)."""
MAX_FAILED_FRAMES = 3
"""Frames of a track in a row whose packets the path refused (in part) before a frame is not
taken and the kernel's lag policy applies (fewer are a loss the viewer repairs with NACKs)."""

_PAYLOADS: dict[str, ModuleType] = {"h264": h264, "hevc": h265, "av1": av1, "vp9": vp9}
_PARAMETER_SETS: dict[str, Callable[[bytes], Sequence[bytes]]] = {
    "h264": h264.parameter_sets,
    "hevc": h265.parameter_sets,
    "av1": av1.parameter_sets,
}
_MASK32 = 0xFFFFFFFF
_VIDEO = FrameKind.VIDEO
_AUDIO = FrameKind.AUDIO


@runtime_checkable
class OpusBridge(Protocol):
    """An engine plugin that makes Opus of a stream's AAC while someone asks
    (:class:`arcly_trio.services.audio_bridge.AudioBridge` is one)."""

    def want_opus(self, key: StreamKey, deliver: Callable[[Frame], None]) -> Callable[[], None]: ...


def video_source(info: StreamInfo) -> VideoSource | None:
    """What the stream's video is, for the answer: its codec and, for H.264, its
    ``profile-level-id`` (from the codec string ``avc1.PPCCLL``); ``None`` for no video or one
    WebRTC cannot carry."""
    codec = info.video_codec
    if codec not in _PAYLOADS:
        return None
    profile_level_id = None
    string = info.video_codec_string or ""
    if codec == "h264" and string.startswith(("avc1.", "avc3.")) and len(string) == 11:
        profile_level_id = string[5:].lower()
    return VideoSource(codec=codec, profile_level_id=profile_level_id)


def prefix_of(codec: str, record: bytes) -> tuple[bytes, ...]:
    """What goes before a keyframe for a viewer that starts there: the parameter sets (H.264,
    H.265) or the sequence header OBU (AV1) of a configuration record; ``()`` if unreadable."""
    parameter_sets = _PARAMETER_SETS.get(codec)
    if parameter_sets is None:
        return ()
    try:
        return tuple(parameter_sets(record))
    except RemoteProtocolError:
        return ()


class PictureIds:
    """The picture ids of one stream's VP8/VP9 payload descriptors: one per frame, counted up in
    the order frames are packetized (once per stream, shared by every viewer)."""

    __slots__ = ("next", "__weakref__")

    def __init__(self) -> None:
        self.next = secrets.randbelow(0x8000)

    def take(self) -> int:
        value = self.next
        self.next = (value + 1) & 0x7FFF
        return value


Packet = tuple[bytes, int, int]
"""One RTP packet of a frame, as every viewer sends it: payload, RTP timestamp, marker bit
(``0x80`` or ``0``, or'ed into the header's second byte). Built once per frame and shared: each
viewer adds its own header (sequence number, SSRC) and keeps a reference in its send history."""


def _packetize(
    frame: Frame, module: ModuleType, mtu: int, prefix: tuple[bytes, ...], pictures: PictureIds | None, video: bool
) -> tuple[tuple[Packet, ...], int]:
    """A frame's RTP packets (built once per frame for every WHEP viewer) and the payload bytes
    they carry: the RTP clock is 90 kHz for video (the marker on the last packet of the picture)
    and 48 kHz for Opus; none if the format cannot carry the frame."""
    try:
        if pictures is not None:
            payloads: list[bytes] = module.packetize(frame.payload, mtu, picture_id=pictures.take())
        else:
            payloads = module.packetize(frame.payload, mtu, prefix=prefix if frame.keyframe else ())
    except LocalProtocolError:
        return _NOTHING
    timestamp = (frame.pts * (90 if video else 48)) & _MASK32
    last = len(payloads) - 1
    packets = tuple(
        (payload, timestamp, 0x80 if video and index == last else 0) for index, payload in enumerate(payloads)
    )
    return packets, sum(len(payload) for payload in payloads)


_NOTHING: tuple[tuple[Packet, ...], int] = ((), 0)


def _prefix(frame: Frame) -> tuple[bytes, ...]:
    return prefix_of(frame.codec, frame.payload)


def _opus_alone(frame: Frame, mtu: int) -> tuple[tuple[Packet, ...], int]:
    """An Opus frame's own RTP packet (as :func:`_packetize` makes it)."""
    return _packetize(frame, opus, mtu, (), None, False)


_HOLD: Final = "hold"
"""An Opus frame's :func:`_opus_role` when it is the first of a pair."""

OpusRole = tuple[Frame, tuple[tuple[Packet, ...], int]] | str | None
"""What a viewer does with an Opus frame (see :func:`_opus_role`)."""


def _opus_role(frame: Frame, previous: Frame | None, mtu: int, key: tuple[str, int], sessions: Sized) -> OpusRole:
    """What every viewer does with an Opus frame, decided once per frame for the stream.

    A WHEP viewer sends two consecutive Opus packets of at most :data:`JOIN_OPUS_SAMPLES` as one
    (:func:`~arcly_trio.media.codecs.opus_packet.join`): half the datagrams of the audio, the
    first frame of each pair 20 ms later. The role is :data:`_HOLD` for the first of a pair,
    ``(previous, (packets, octets))`` for the second (the joined packet, which goes out in
    place of the two if the viewer holds ``previous``), ``None`` for a frame that goes out alone
    (malformed, too long, or the pair would not fit the MTU). ``previous`` is the stream's
    previous Opus frame as the first viewer to see this one saw it (every viewer of a stream is
    handed its frames in the same order; a viewer that missed it only loses the pairing).
    While the worker has fewer than :data:`JOIN_OPUS_FROM` ``sessions``, every frame goes alone."""
    if len(sessions) < JOIN_OPUS_FROM:
        return None
    try:
        samples = opus_packet.duration(frame.payload)
    except CodecError:
        return None
    if samples > JOIN_OPUS_SAMPLES or not 0 < len(frame.payload) <= mtu:
        return None
    if previous is not None and previous.encoded(key, _opus_role, None, mtu, key, sessions) is _HOLD:
        gap = frame.pts - previous.pts - opus_packet.duration(previous.payload) // 48
        if -1 <= gap <= 1:
            joined = opus_packet.join((previous.payload, frame.payload))
            if joined is not None and len(joined) <= mtu:
                timestamp = (previous.pts * 48) & _MASK32
                return previous, (((joined, timestamp, 0),), len(joined))
    return _HOLD


@attrs.define(slots=True, eq=False)
class OutTrack:
    """One track a viewer sends: its negotiated payload type, SSRC, clock and counters."""

    kind: str
    codec: str
    payload_type: int
    ssrc: int
    clock: int
    sequence: int = attrs.field(factory=lambda: secrets.randbelow(0x8000))
    packets: int = 0
    octets: int = 0
    last_pts: int | None = None
    history: SendHistory | None = None
    prefix: tuple[bytes, ...] = ()
    module: ModuleType | None = None
    failed_frames: int = 0
    joined: int = 0
    """Packets that went out in another track's send (Opus in a video frame's: :data:`BATCH_AUDIO_FROM`)."""
    mtu: int = 0
    """The MTU :attr:`key` and :attr:`plan_keys` are for (0: not made yet, see :meth:`keyed`)."""
    key: tuple[str, str, int] = ("rtp", "", 0)
    """The key of a frame's shared packets in :meth:`Frame.encoded` (made once, not 30 times a
    second per viewer)."""
    plan_keys: dict[int, tuple[str, str, int, int, int]] = attrs.field(factory=dict)
    """The keys of its :class:`PacketPlan` s: per SRTP trailer, padded (see
    :data:`BATCH_AUDIO_FROM`); per minus the trailer, not padded."""

    def keyed(self, mtu: int) -> None:
        """Make :attr:`key` and :attr:`plan_keys` for packets of ``mtu`` bytes."""
        self.mtu = mtu
        self.key = ("rtp", self.codec, mtu)
        for trailer in TRAILERS.values():
            self.plan_keys[trailer] = ("rtp-plan", self.codec, mtu, trailer, MAX_PADDING)
            self.plan_keys[-trailer] = ("rtp-plan", self.codec, mtu, trailer, 0)

    def send(self, session: PeerSession, packets: Sequence[Packet], octets: int) -> bool:
        """Send a frame's shared ``packets`` (``octets`` payload bytes) as consecutive sequence
        numbers; whether every one went out. The hot path of a WHEP viewer: the packets are
        built and protected back to back (:meth:`~.srtp.SrtpContext.protect_packets`) and go
        out in one GSO ``sendmsg`` per run of equal-sized ones (:meth:`~.udp.UdpPort.send_many`)."""
        count = len(packets)
        sequence = self.sequence
        self.sequence = (sequence + count) & 0xFFFF
        self.packets += count
        self.octets += octets
        if self.history is not None:
            self.history.add_run(sequence, packets)
        return send_packets(session, packets, self.payload_type, sequence, self.ssrc)

    def send_plans(
        self,
        session: PeerSession,
        packets: Sequence[Packet],
        octets: int,
        plans: Sequence[PacketPlan],
        audio: OutTrack | None = None,
        waiting: tuple[Packet, int] | None = None,
    ) -> bool:
        """:meth:`send` on a UDP path with in-place SRTP: the frame's ``plans`` (its ``packets``
        laid out once for every viewer, :func:`~.srtp.plan_packets`) are copied, given this
        viewer's headers and protected (:meth:`~.srtp.SrtpContext.protect_plan`) and sent with
        the runs worked out once (:meth:`~.udp.UdpPort.send_runs`): the same datagrams as
        :meth:`send`, with no per-packet work but the header and libsrtp's call.

        ``waiting``: an Opus packet of the ``audio`` track (and its payload bytes) that goes out
        with the frame: as the last datagram of the last plan's last run when it fits there
        (:attr:`~.srtp.PacketPlan.tail`: one system call for both), else on its own after
        the frame (see :data:`BATCH_AUDIO_FROM`). Whether the frame's packets all went out."""
        count = len(packets)
        sequence = self.sequence
        self.sequence = (sequence + count) & 0xFFFF
        self.packets += count
        self.octets += octets
        if self.history is not None:
            self.history.add_run(sequence, packets)
        srtp = session.srtp
        address = session.address
        stats = session.stats
        assert srtp is not None and address is not None  # (the caller checked)
        port = session.host.port
        payload_type = self.payload_type
        ssrc = self.ssrc
        ok = True
        last = plans[-1]
        for plan in plans:
            try:
                data = srtp.protect_plan(plan, payload_type, sequence, ssrc)
            except SrtpProtectError:
                stats.srtp_errors += plan.count
                ok = False
                break
            runs = plan.runs
            count = plan.count
            size = plan.size
            if waiting is not None and audio is not None and plan is last and plan.tail:
                joined = _join_audio(srtp, plan, audio, waiting)
                if joined is not None:
                    waiting = None
                    data = joined
                    begin, _, segment, segments = runs[-1]
                    runs = (*runs[:-1], (begin, len(data), segment, segments + 1))
                    count += 1
                    size = len(data)
            if port.send_runs(data, runs, address):
                stats.packets_sent += count
                stats.bytes_sent += size
            else:
                stats.send_drops += count  # (some of them may have gone: a drop is a drop to the viewer)
                ok = False
            sequence = (sequence + plan.count) & 0xFFFF
        if waiting is not None and audio is not None:  # it did not fit the frame's last run
            went = send_one(session, audio, *waiting)
            audio.failed_frames = 0 if went else min(audio.failed_frames + 1, MAX_FAILED_FRAMES - 1)
        return ok


def _join_audio(srtp: SrtpContext, plan: PacketPlan, audio: OutTrack, waiting: tuple[Packet, int]) -> memoryview | None:
    """The waiting Opus packet protected after ``plan`` (just protected) in the scratch buffer,
    if it fits the plan's last run; the buffer to send, counted on the ``audio`` track."""
    (payload, timestamp, marker), octets = waiting
    trailer = srtp.trailer
    if trailer is None or len(payload) + 12 + trailer > plan.tail:
        return None
    sequence = audio.sequence
    try:
        data = srtp.protect_after(plan.size, payload, timestamp, audio.payload_type | marker, sequence, audio.ssrc)
    except SrtpProtectError:
        return None
    audio.sequence = (sequence + 1) & 0xFFFF
    audio.packets += 1
    audio.octets += octets
    audio.joined += 1
    audio.failed_frames = 0
    return data


def send_one(session: PeerSession, track: OutTrack, packet: Packet, octets: int) -> bool:
    """One packet of ``track`` (``octets`` payload bytes: an Opus packet) protected and sent on
    the session's UDP path now (the caller checked it has one and SRTP); whether it went out.
    What :meth:`OutTrack.send` and :func:`send_packets` do, without their calls: a third of a
    viewer's packets are Opus ones."""
    sequence = track.sequence
    track.sequence = (sequence + 1) & 0xFFFF
    track.packets += 1
    track.octets += octets
    payload, timestamp, marker = packet
    stats = session.stats
    srtp = session.srtp
    address = session.address
    assert srtp is not None and address is not None  # (the caller checked)
    try:
        data = srtp.protect_one(payload, timestamp, track.payload_type | marker, sequence, track.ssrc)
    except SrtpProtectError:
        stats.srtp_errors += 1
        return False
    if session.host.port.send(data, address):
        stats.packets_sent += 1
        stats.bytes_sent += len(data)
        return True
    stats.send_drops += 1
    return False


def _plan(frame: Frame, packets: Sequence[Packet], trailer: int, pad: int) -> tuple[PacketPlan, ...]:
    return plan_packets(packets, trailer, pad)


def send_packets(session: PeerSession, packets: Sequence[Packet], payload_type: int, sequence: int, ssrc: int) -> bool:
    """Protect ``packets`` (sequence numbers from ``sequence``) and send them on the session's
    path now; whether every one went out (the session's counters say what did not)."""
    srtp = session.srtp
    address = session.address
    stats = session.stats
    count = len(packets)
    if srtp is None or address is None:
        stats.send_drops += count
        return False
    link = session.link
    port = session.host.port
    if count == 1 and link is None:  # an Opus frame, a small picture: no run to build
        payload, timestamp, marker = packets[0]
        try:
            data = srtp.protect_one(payload, timestamp, payload_type | marker, sequence, ssrc)
        except SrtpProtectError:
            stats.srtp_errors += 1
            return False
        if port.send(data, address):
            stats.packets_sent += 1
            stats.bytes_sent += len(data)
            return True
        stats.send_drops += 1
        return False
    ok = True
    start = 0
    while start < count:
        try:
            data, ends = srtp.protect_packets(packets, start, payload_type, (sequence + start) & 0xFFFF, ssrc)
        except SrtpProtectError:
            stats.srtp_errors += count - start
            return False
        built = len(ends)
        start += built
        if link is None:
            went = port.send(data[: ends[0]], address) if built == 1 else port.send_many(data, ends, address)
        else:
            went = True
            begin = 0
            for end in ends:
                if not link.send(bytes(data[begin:end])):
                    went = False
                begin = end
        if went:
            stats.packets_sent += built
            stats.bytes_sent += ends[-1]
        else:
            stats.send_drops += built  # (some of them may have gone: a drop is a drop to the viewer)
            ok = False
    return ok


class RtpSink:
    """The kernel sink of one WHEP viewer (see the module docstring)."""

    def __init__(self, session: WhepSession) -> None:
        self.session = session
        self.video: OutTrack | None = None
        self.audio: OutTrack | None = None
        self.mtu = session.host.mtu
        self._opus_key = ("rtp", "opus", self.mtu)
        """The shared Opus packets' key in :meth:`Frame.encoded` (made once: 50 lookups a second)."""
        self._pair_key = ("rtp-opus-pair", self.mtu)
        """The key of an Opus frame's :func:`_opus_role` in :meth:`Frame.encoded`."""
        self._audio_last: Frame | None = None
        """The last Opus frame this viewer was handed (the stream's previous one, for :func:`_opus_role`)."""
        self._audio_held: Frame | None = None
        """The first Opus frame of a pair, until the second comes."""
        self.join_opus = True
        """Whether this viewer's Opus packets go out in pairs (not if its offer's ``a=maxptime``
        is under 40 ms)."""
        self.ready = False
        self.ended = False
        self.end_reason: EndReason | None = None
        self.wait_keyframe = True
        self.held: list[Frame] = []
        self.configs: dict[FrameKind, Frame] = {}
        self.skipped = 0
        """Frames not sent: waiting for a keyframe, a codec the answer did not negotiate."""
        self.refused = 0
        """Frames not taken because the path kept refusing (the kernel then drops to a keyframe)."""
        self.pictures: PictureIds | None = None
        """The stream's VP9 picture ids (shared with its other viewers), for a VP9 track."""
        self.base: tuple[float, int] | None = None
        """(wall clock, media timestamp) of the first frame sent: the sender reports' mapping."""
        self._retransmit_window = (0.0, 0)
        self._stale_audio = 0
        self._audio_waiting: tuple[Packet, int] | None = None
        """An Opus packet (and its payload bytes) waiting for the next video frame (see
        :data:`BATCH_AUDIO_FROM`)."""

    def configure(self, answer: Answer) -> None:
        """The tracks the answer negotiated."""
        for track in answer.tracks:
            if track.send_ssrc is None:
                continue
            if track.kind == "video" and self.video is None:
                self.video = _out_track(track)
                if self.video.codec == "vp9":
                    self.pictures = self.session.host.picture_ids(self.session.key)
                held = self.configs.get(FrameKind.VIDEO)
                if held is not None:  # the replay came before the answer
                    self._config(held)
            elif track.kind == "audio" and self.audio is None and track.codec.name == "opus":
                self.audio = _out_track(track)
                # a peer that said it wants shorter packets gets each Opus packet as it is
                self.join_opus = track.max_ptime is None or track.max_ptime * 48 >= 2 * JOIN_OPUS_SAMPLES

    # ------------------------------------------------------------------ the kernel's Sink

    def start_session(self, start: SessionStart) -> None:
        self.wait_keyframe = True  # a new publish session: start again at a keyframe

    def replay(self, frames: list[Frame]) -> None:
        for frame in frames:
            self._take(frame)

    def offer(self, frames: Sequence[Frame], start: int) -> int:
        count = len(frames)
        if self.ended:
            return count
        send = self._send if self.ready else None
        for index in range(start, count):
            frame = frames[index]
            if frame.config:
                self._config(frame)
            elif send is None:
                self._hold(frame)
            elif not send(frame):
                return index  # the path keeps refusing: the kernel's lag policy (see the module docstring)
        return count

    def close(self, reason: EndReason) -> None:
        self.ended = True
        self.end_reason = reason
        if reason is EndReason.EVICTED:
            self.session.close("evicted: it could not keep up (past the lag budget)")
        else:
            self.session.close(f"stream {reason.value}")

    # ------------------------------------------------------------------ frames

    def _take(self, frame: Frame) -> bool:
        """Whether the frame was taken (sent, held, skipped): not when the path keeps refusing."""
        if self.ended:
            return True
        if frame.config:
            self._config(frame)
        elif self.ready:
            return self._send(frame)
        else:
            self._hold(frame)
        return True

    def _config(self, frame: Frame) -> None:
        self.configs[frame.kind] = frame
        video = self.video
        if frame.kind is FrameKind.VIDEO and video is not None and frame.codec == video.codec:
            video.prefix = frame.encoded(("rtp-prefix",), _prefix)  # parsed once for every viewer

    def _hold(self, frame: Frame) -> None:
        held = self.held
        if frame.kind is FrameKind.VIDEO and frame.keyframe:
            held.clear()
            held.append(frame)
        elif held:
            if len(held) >= MAX_HELD:
                held.clear()
            else:
                held.append(frame)

    def connected(self) -> None:
        """DTLS is up: send what was held if it is fresh, else wait for the next keyframe."""
        self.ready = True
        held, self.held = self.held, []
        with_audio = self.audio is not None and FrameKind.AUDIO in self.configs
        if held and held[-1].dts - held[0].dts <= (MAX_SYNCED_START_AGE if with_audio else MAX_START_AGE):
            newest = held[-1].dts
            for frame in held:
                if frame.kind is FrameKind.AUDIO and frame.dts < newest - MAX_AUDIO_START:
                    continue  # the video needs its keyframe; the audio would only be heard late
                self._send(frame)
        elif self.video is not None:
            self.session.host.request_keyframe(self.session.key)

    def _send(self, frame: Frame) -> bool:
        kind = frame.kind
        if kind is _AUDIO:
            if frame.codec == "opus" and not frame.track:
                return self._send_audio(frame)
            return True
        if kind is _VIDEO:
            track = self.video
            if track is None or frame.codec != track.codec or frame.track:
                self.skipped += 1
                return True
            if self.wait_keyframe:
                if not frame.keyframe:
                    self.skipped += 1
                    return True
                self.wait_keyframe = False
            if track.mtu != self.mtu:
                track.keyed(self.mtu)
            packets, octets = frame.encoded(
                track.key, _packetize, track.module, self.mtu, track.prefix, self.pictures, True
            )
            if not packets:
                self.skipped += 1
                return True
            if self.base is None:
                self.base = (time.time(), frame.pts)
            track.last_pts = frame.pts
            session = self.session
            srtp = session.srtp
            trailer = srtp.trailer if srtp is not None else None
            if trailer is not None and session.link is None and session.address is not None:
                # the last packet padded to its run's size where an Opus packet may close that run
                plan_key = track.plan_keys[trailer if self._batching() else -trailer]
                try:  # laid out once per frame and profile for every viewer (see OutTrack.send_plans)
                    plans = frame.encoded(plan_key, _plan, packets, plan_key[3], plan_key[4])
                except SrtpProtectError:
                    self.skipped += 1
                    return True
                waiting = self._audio_waiting
                if waiting is None:
                    return self._sent(track, track.send_plans(session, packets, octets, plans))
                self._audio_waiting = None
                return self._sent(track, track.send_plans(session, packets, octets, plans, self.audio, waiting))
            return self._sent(track, track.send(session, packets, octets))
        return True

    def _sent(self, track: OutTrack, ok: bool) -> bool:
        """Whether a frame the path took in part counts as taken: a burst is a loss the viewer
        repairs (NACK); :data:`MAX_FAILED_FRAMES` in a row are the kernel's lag policy's."""
        if ok:
            track.failed_frames = 0
            return True
        track.failed_frames += 1
        if track.failed_frames < MAX_FAILED_FRAMES:
            return True
        track.failed_frames = 0
        self.refused += 1
        return False

    def deliver_bridged(self, frame: Frame) -> None:
        """Opus from the audio bridge (a stream whose audio is AAC); called by the bridge's task.
        Until the first audio frame went out, frames more than :data:`MAX_AUDIO_START` ms behind
        the video sent are skipped (the bridge's start transcodes the stream's cached GOP: a
        burst), :data:`MAX_STALE_AUDIO` at most."""
        if not self.ready or self.ended or frame.config:
            return
        audio, video = self.audio, self.video
        if (
            audio is not None
            and audio.packets == 0
            and video is not None
            and video.last_pts is not None
            and frame.pts < video.last_pts - MAX_AUDIO_START
            and self._stale_audio < MAX_STALE_AUDIO
        ):
            self._stale_audio += 1
            return
        self._send_audio(frame)

    def _send_audio(self, frame: Frame) -> bool:
        """An Opus frame: the first of a pair is held until the second comes, and the two go
        out as one 40 ms packet (see :func:`_opus_role`); a frame that cannot be joined goes
        out alone, after the one held if any."""
        track = self.audio
        if track is None:
            return True
        if not self.join_opus:
            return self._send_opus(track, frame.pts, frame.encoded(self._opus_key, _opus_alone, self.mtu))
        key = self._pair_key
        role = frame.encoded(key, _opus_role, self._audio_last, self.mtu, key, self.session.host.sessions)
        self._audio_last = frame
        held = self._audio_held
        if role is _HOLD:
            self._audio_held = frame
            if held is None:
                return True
            return self._send_opus(track, held.pts, held.encoded(self._opus_key, _opus_alone, self.mtu))
        self._audio_held = None
        if role is not None and held is role[0]:
            return self._send_opus(track, held.pts, role[1])
        ok = True
        if held is not None:
            ok = self._send_opus(track, held.pts, held.encoded(self._opus_key, _opus_alone, self.mtu))
        return self._send_opus(track, frame.pts, frame.encoded(self._opus_key, _opus_alone, self.mtu)) and ok

    def _send_opus(self, track: OutTrack, pts: int, built: tuple[tuple[Packet, ...], int]) -> bool:
        """Send an Opus packet (its media time ``pts``) on the audio track."""
        if self.base is None:
            self.base = (time.time(), pts)
        packets, octets = built
        track.last_pts = pts
        session = self.session
        srtp = session.srtp
        address = session.address
        waiting = self._audio_waiting
        if len(packets) != 1 or session.link is not None or srtp is None or address is None:
            if waiting is not None:  # the path changed (to ICE-TCP): nothing waits any more
                self._audio_waiting = None
                track.send(session, (waiting[0],), waiting[1])
            return self._sent(track, track.send(session, packets, octets))
        video = self.video
        if (
            video is not None
            and video.last_pts is not None
            and not self.wait_keyframe
            and srtp.trailer is not None
            and self._batching()
        ):
            self._audio_waiting = (packets[0], octets)  # for the next video frame's send
            if waiting is None:
                return True
            return self._sent(track, send_one(session, track, *waiting))  # no video frame came: alone
        if waiting is not None:
            self._audio_waiting = None
            send_one(session, track, *waiting)
        return self._sent(track, send_one(session, track, packets[0], octets))

    def _batching(self) -> bool:
        """Whether this viewer's Opus packets go out in its video frames' sends (:data:`BATCH_AUDIO_FROM`)."""
        return self.join_opus and len(self.session.host.sessions) >= BATCH_AUDIO_FROM

    # ------------------------------------------------------------------ RTCP

    def sender_reports(self, wall: float) -> bytes:
        """A compound RTCP packet: a sender report and CNAME for each track that sent.

        Both tracks map media time to the wall clock the same way (the first frame sent gives
        the origin), so the NTP time ``wall`` (now: the receiver's RTT needs it) stands for the
        same media instant on both and the browser keeps them in sync."""
        base = self.base
        parts: list[bytes] = []
        if base is None:
            return b""
        wall0, pts0 = base
        media_now = pts0 + (wall - wall0) * 1000
        for track in (self.video, self.audio):
            if track is None or track.last_pts is None:
                continue
            rtp_ts = int(media_now * (track.clock // 1000)) & _MASK32
            parts.append(rtcp.sender_report(track.ssrc, wall, rtp_ts, track.packets & _MASK32, track.octets & _MASK32))
            parts.append(rtcp.sdes_cname(track.ssrc, "arcly-trio"))
        return b"".join(parts)

    def retransmit(self, sequences: Sequence[int], now: float) -> int:
        """Resend the NACKed ``sequences`` of the video track that are still in the history."""
        track = self.video
        if track is None or track.history is None:
            return 0
        second, count = self._retransmit_window
        if now - second >= 1.0:
            second, count = now, 0
        sent = 0
        for sequence in sequences:
            if count >= MAX_RETRANSMITS:
                break
            entry = track.history.get(sequence)
            if entry is None:
                continue
            count += 1
            if send_packets(self.session, (entry,), track.payload_type, sequence, track.ssrc):  # type: ignore[arg-type]
                sent += 1
        self._retransmit_window = (second, count)
        return sent


def _out_track(track: Track) -> OutTrack:
    assert track.send_ssrc is not None
    codec = track.codec
    if track.kind == "audio":
        return OutTrack("audio", "opus", codec.payload_type, track.send_ssrc, 48000, module=opus)
    kernel = "hevc" if codec.name == "h265" else codec.name
    return OutTrack(
        "video",
        kernel,
        codec.payload_type,
        track.send_ssrc,
        90000,
        history=SendHistory(HISTORY),
        module=_PAYLOADS.get(kernel),
    )


def _ssrc() -> int:
    return secrets.randbits(32) or 1


class WhepSession(PeerSession):
    """One WHEP viewer: an :class:`RtpSink` on its stream, and RTCP with its browser."""

    kind = "whep"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sink = RtpSink(self)
        self.subscriber: Subscriber | None = None

    @asynccontextmanager
    async def admitted(self) -> AsyncIterator[Answer]:
        async with self.engine.attach(self.key, self.sink, self.credentials, protocol="whep") as subscriber:
            self.subscriber = subscriber
            info = self.engine.stream(subscriber.key).info
            answer = answer_whep(self.offer, self.local_endpoint(), video=video_source(info), audio=True, ssrcs=_ssrc)
            self.setup(answer)
            self.sink.configure(answer)
            release = None
            if self.sink.audio is not None and info.audio_codec == "aac":
                for plugin in self.engine.plugins:
                    if isinstance(plugin, OpusBridge):
                        release = plugin.want_opus(subscriber.key, self.sink.deliver_bridged)
                        break
            try:
                yield answer
            finally:
                if release is not None:
                    release()

    def on_connected(self, now: float) -> None:
        self.sink.connected()

    def on_rtcp(self, packets: list[Any], now: float) -> None:
        stats = self.stats
        sink = self.sink
        for packet in packets:
            if isinstance(packet, rtcp.Nack):
                stats.nacks += len(packet.sequences)
                stats.retransmitted += sink.retransmit(packet.sequences, now)
            elif isinstance(packet, (rtcp.Pli, rtcp.Fir)):
                # The browser cannot decode what follows: a WHIP publisher is asked for a
                # keyframe; whatever the source, this viewer resumes at the next one (sending
                # frames it cannot decode would only cost bandwidth).
                stats.keyframe_requests += 1
                self.host.request_keyframe(self.key)
                sink.wait_keyframe = True
            elif isinstance(packet, (rtcp.ReceiverReport, rtcp.SenderReport)):
                for block in packet.reports:
                    if sink.video is not None and block.ssrc == sink.video.ssrc or sink.video is None:
                        stats.lost = max(0, block.cumulative_lost)
                        stats.fraction_lost = block.fraction_lost / 256
                    rtt = rtcp.rtt_from_report(block, time.time())
                    if rtt is not None:
                        stats.rtt = rtt

    ticked = True

    def periodic(self, now: float) -> None:
        """A sender report for each track that sent (run by the worker's ticker once a second)."""
        report = self.sink.sender_reports(time.time())
        if report:
            self.send_rtcp(report)

    async def tick(self, now: float) -> None:
        self.periodic(now)

    def document(self) -> dict[str, Any]:
        out = super().document()
        out["skipped_frames"] = self.sink.skipped
        out["refused_frames"] = self.sink.refused
        audio = self.sink.audio
        out["audio_in_video_sends"] = audio.joined if audio is not None else 0
        return out

    def link_lost(self, link: TcpLink) -> None:
        """An ICE-TCP link closed: when it was the viewer's path and it closed because the peer
        read nothing for the write timeout (:attr:`~.tcp.TcpLink.stalled`), the viewer is too
        slow and its session ends, as a TCP egress that times out is closed."""
        selected = self.link is link
        super().link_lost(link)
        if selected and link.stalled and self.link is None:
            self.close(f"evicted: {link.end_reason or 'the peer stopped reading'}")
