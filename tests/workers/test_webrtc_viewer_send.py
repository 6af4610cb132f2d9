"""A WHEP viewer's send path end to end (arcly_trio.workers.webrtc.viewer): real SRTP keys, a
real UDP port and a receiving socket. Opus frames (one packet each, sent without building a
run) and video frames (runs, UDP GSO) go out as SRTP the browser's keys open, with consecutive
sequence numbers per track and the session's counters right; a socket that keeps refusing
makes the sink stop taking frames after MAX_FAILED_FRAMES (the kernel's lag policy)."""

from __future__ import annotations

import errno
import os
import socket
from typing import Any

import pytest

from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.protocols.webrtc.dtls import SrtpKeys
from arcly_trio.protocols.webrtc.payload import h264, opus
from arcly_trio.protocols.webrtc.rtp import SendHistory, parse_rtp
from arcly_trio.protocols.webrtc.srtp import SrtpContext
from arcly_trio.workers.webrtc import viewer as viewer_module
from arcly_trio.workers.webrtc.peer import LinkStats
from arcly_trio.workers.webrtc.udp import open_udp
from arcly_trio.workers.webrtc.viewer import MAX_FAILED_FRAMES, OutTrack, RtpSink
from tests._net import HOST

PROFILE = "SRTP_AEAD_AES_128_GCM"


class _Host:
    mtu = 1200

    def __init__(self) -> None:
        self.port = open_udp(HOST, 0)
        self.sessions: dict[str, object] = {}

    def picture_ids(self, key: Any) -> None:
        return None

    def request_keyframe(self, key: Any) -> None:
        pass


class _Session:
    def __init__(self, address: tuple[str, int], keys: SrtpKeys) -> None:
        self.host = _Host()
        self.key = None
        self.link = None
        self.address = address
        self.srtp = SrtpContext(keys)
        self.stats = LinkStats()

    def close(self, reason: str) -> None:
        pass


@pytest.fixture
async def viewer():
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind((HOST, 0))
    receiver.settimeout(5)
    ours, theirs = os.urandom(16), os.urandom(16)
    salt, peer_salt = os.urandom(12), os.urandom(12)
    session = _Session(receiver.getsockname(), SrtpKeys(PROFILE, ours, salt, theirs, peer_salt))
    browser = SrtpContext(SrtpKeys(PROFILE, theirs, peer_salt, ours, salt))
    sink = RtpSink(session)  # type: ignore[arg-type]
    sink.video = OutTrack("video", "h264", 102, 0x1111, 90000, history=SendHistory(64), module=h264)
    sink.audio = OutTrack("audio", "opus", 111, 0x2222, 48000, module=opus)
    sink.ready = True
    sink.wait_keyframe = False
    try:
        yield sink, session, receiver, browser
    finally:
        session.host.port.close()
        receiver.close()


def _opus(ms: int) -> Frame:
    """A 20 ms Opus frame (TOC 0xfc: CELT fullband 20 ms, stereo, one frame)."""
    return Frame(FrameKind.AUDIO, "opus", ms, ms, b"\xfc" + bytes([ms // 20 % 256]) * 119)


def _opus60(ms: int) -> Frame:
    """A 60 ms Opus frame (TOC 0x18: SILK narrowband 60 ms): too long to be joined, sent alone."""
    return Frame(FrameKind.AUDIO, "opus", ms, ms, b"\x18" + bytes([ms // 20 % 256]) * 119)


def _video(ms: int, size: int) -> Frame:
    nal = b"\x41" + bytes([ms % 256]) * (size - 1)
    return Frame(FrameKind.VIDEO, "h264", ms, ms, len(nal).to_bytes(4, "big") + nal)


async def test_audio_and_video_go_out_as_srtp_the_browser_opens(viewer, monkeypatch) -> None:
    monkeypatch.setattr(viewer_module, "JOIN_OPUS_FROM", 0)  # Opus in pairs (a busy worker)
    sink, session, receiver, browser = viewer
    frames = [_opus(0), _video(0, 3000), _opus(20), _opus(40), _video(33, 200), _opus(60)]
    assert sink.offer(frames, 0) == len(frames)
    got: dict[int, list[tuple[int, int, bytes]]] = {0x1111: [], 0x2222: []}
    sent = 0
    while sent < session.stats.packets_sent:
        packet = browser.unprotect(receiver.recv(2048))
        sent += 1
        ssrc = int.from_bytes(packet[8:12], "big")
        got[ssrc].append((int.from_bytes(packet[2:4], "big"), packet[1], packet[12:]))
    audio = got[0x2222]
    # two 20 ms frames a packet: one Opus packet of two frames (code 1: of equal sizes)
    pairs = [(0, 20), (40, 60)]
    assert [payload for _, _, payload in audio] == [
        b"\xfd" + _opus(a).payload[1:] + _opus(b).payload[1:] for a, b in pairs
    ]
    assert all(second == 111 for _, second, _ in audio)
    first = audio[0][0]
    assert [sequence for sequence, _, _ in audio] == [(first + n) & 0xFFFF for n in range(2)]
    video = got[0x1111]
    assert len(video) == 4  # three packets of the 3 KB picture (FU-A), one of the small one
    assert [second >> 7 for _, second, _ in video] == [0, 0, 1, 1]
    assert sink.audio is not None and sink.audio.packets == 2 and sink.audio.octets == 2 * 239
    assert session.stats.packets_sent == 6 and session.stats.bytes_sent > 3000 + 2 * 239
    assert session.stats.send_drops == 0


class _Full:
    """A socket whose send buffer is full."""

    def sendto(self, *args: Any) -> int:
        raise BlockingIOError(errno.EAGAIN, "full")

    def sendmsg(self, *args: Any) -> int:
        raise BlockingIOError(errno.EAGAIN, "full")


async def test_audio_the_path_keeps_refusing_is_not_taken_after_the_limit(viewer) -> None:
    sink, session, _, _ = viewer
    real = session.host.port.socket
    session.host.port.socket = _Full()
    try:
        frames = [_opus60(60 * n) for n in range(MAX_FAILED_FRAMES + 1)]
        assert sink.offer(frames, 0) == MAX_FAILED_FRAMES - 1
        assert session.stats.send_drops == MAX_FAILED_FRAMES
        assert sink.refused == 1
        session.host.port.socket = real
        assert sink.offer(frames, MAX_FAILED_FRAMES) == len(frames)  # taken again once the path takes it
        assert session.stats.packets_sent == 1
    finally:
        session.host.port.socket = real


def _datagrams(receiver: socket.socket, count: int) -> list[bytes]:
    return [receiver.recv(2048) for _ in range(count)]


async def test_the_planned_video_path_sends_what_the_per_packet_path_sends(viewer) -> None:
    """Video frames laid out once for every viewer (``PacketPlan``, the in-place SRTP path) go
    out as exactly the datagrams, in order, that the per-packet path builds for the same viewer
    state: a keyframe past the scratch buffer (several plans), small and medium pictures."""
    sink, session, receiver, browser = viewer
    assert session.srtp.trailer is not None
    video = sink.video
    assert video is not None
    frames = [_video(0, 70_000), _video(33, 5800), _video(66, 300), _video(99, 1199)]
    start = video.sequence
    assert sink.offer(frames, 0) == len(frames)
    planned = _datagrams(receiver, session.stats.packets_sent)
    # the same viewer again, from the same sequence number, through the per-packet path
    video.sequence = start
    session.srtp.trailer = None
    sent = session.stats.packets_sent
    assert sink.offer([_video(ms, size) for ms, size in ((0, 70_000), (33, 5800), (66, 300), (99, 1199))], 0) == 4
    assert session.stats.packets_sent == 2 * sent
    assert _datagrams(receiver, sent) == planned
    sequences = [int.from_bytes(browser.unprotect(packet)[2:4], "big") for packet in planned]
    assert sequences == [(start + n) & 0xFFFF for n in range(len(planned))]
    assert len(planned) > 48  # more than one plan


async def test_video_the_path_keeps_refusing_is_not_taken_after_the_limit(viewer) -> None:
    sink, session, _, _ = viewer
    real = session.host.port.socket
    session.host.port.socket = _Full()
    try:
        frames = [_video(33 * n, 3000) for n in range(MAX_FAILED_FRAMES + 1)]
        assert sink.offer(frames, 0) == MAX_FAILED_FRAMES - 1
        assert session.stats.send_drops == 3 * MAX_FAILED_FRAMES and sink.refused == 1
        session.host.port.socket = real
        assert sink.offer(frames, MAX_FAILED_FRAMES) == len(frames)
        assert session.stats.packets_sent == 3
    finally:
        session.host.port.socket = real


class _Counting:
    """A socket that counts the system calls that send."""

    def __init__(self, real: socket.socket) -> None:
        self.real = real
        self.calls = 0

    def sendto(self, *args: Any) -> int:
        self.calls += 1
        return self.real.sendto(*args)

    def sendmsg(self, *args: Any) -> int:
        self.calls += 1
        return self.real.sendmsg(*args)


def _opened(browser: SrtpContext, datagrams: list[bytes]) -> dict[int, list[Any]]:
    got: dict[int, list[Any]] = {0x1111: [], 0x2222: []}
    for datagram in datagrams:
        packet = parse_rtp(browser.unprotect(datagram))
        got[packet.ssrc].append(packet)
    return got


async def test_on_a_busy_worker_an_opus_packet_goes_out_in_the_next_video_frames_send(viewer, monkeypatch) -> None:
    """From BATCH_AUDIO_FROM sessions, the Opus packet waits for the next video frame and is the
    last datagram of that frame's GSO send: one system call for both (the frame's last packet
    padded to its run's size), the same payloads and sequence numbers for the browser. Without
    video in between, it goes out alone when the next Opus packet comes (it waits no longer)."""
    monkeypatch.setattr(viewer_module, "JOIN_OPUS_FROM", 0)
    monkeypatch.setattr(viewer_module, "BATCH_AUDIO_FROM", 0)
    sink, session, receiver, browser = viewer
    port = session.host.port
    if not port.gso:
        pytest.skip("no UDP GSO here")
    counting = _Counting(port.socket)
    port.socket = counting  # type: ignore[assignment]
    assert sink.offer([_video(0, 3000)], 0) == 1
    assert counting.calls == 1  # three FU-A packets, one GSO send
    assert sink.offer([_opus(0), _opus(20)], 0) == 2
    assert counting.calls == 1 and sink.audio is not None and sink.audio.packets == 0  # the pair waits
    assert sink.offer([_video(33, 3000)], 0) == 1
    assert counting.calls == 2  # the frame and the Opus pair: one system call
    assert sink.audio.packets == 1 and session.stats.packets_sent == 7 and session.stats.send_drops == 0
    got = _opened(browser, _datagrams(receiver, 7))
    assert [p.payload for p in got[0x2222]] == [b"\xfd" + _opus(0).payload[1:] + _opus(20).payload[1:]]
    assert [p.payload for p in got[0x1111]] == h264.packetize(_video(0, 3000).payload, 1200) + h264.packetize(
        _video(33, 3000).payload, 1200
    )
    video_sequences = [p.sequence for p in got[0x1111]]
    assert video_sequences == [(video_sequences[0] + n) & 0xFFFF for n in range(6)]
    # no video frame before the next pair: the waiting one goes alone then, the new one waits
    assert sink.offer([_opus(40), _opus(60), _opus(80), _opus(100)], 0) == 4
    assert counting.calls == 3 and sink.audio.packets == 2
    (alone,) = _opened(browser, _datagrams(receiver, 1))[0x2222]
    assert alone.timestamp == 40 * 48 and alone.sequence == (got[0x2222][0].sequence + 1) & 0xFFFF


async def test_below_batch_audio_from_an_opus_packet_goes_out_at_once(viewer, monkeypatch) -> None:
    monkeypatch.setattr(viewer_module, "JOIN_OPUS_FROM", 0)
    sink, session, receiver, _ = viewer
    session.host.sessions = {}  # fewer than BATCH_AUDIO_FROM
    assert sink.offer([_video(0, 3000), _opus(0), _opus(20)], 0) == 3
    assert sink.audio is not None and sink.audio.packets == 1 and session.stats.packets_sent == 4
