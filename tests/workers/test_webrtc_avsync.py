"""Audio/video sync of WHEP playback, measured in Chromium with a flash-and-beep clip.

The clip (:func:`flash_beep_inputs`, ffmpeg's lavfi): a black picture that turns white for the
first 100 ms of every second, and a 1 kHz tone that sounds for the first 100 ms of every second,
so a flash onset and a beep onset are the same media instant. The page (:data:`AVSYNC_PLAY`)
plays the stream over WHEP in a plain ``RTCPeerConnection`` (both tracks in one ``<video>``
element, unmuted: Chromium syncs the tracks of one stream) and records

* **flash onsets**: ``requestVideoFrameCallback`` draws each presented frame into a 16x9 canvas;
  a frame brighter than mid-grey after a dark one is an onset, at the frame's
  ``expectedDisplayTime`` (the compositor's time for it, on the ``performance.now()`` clock);
* **beep onsets**: the received audio track goes into WebAudio (a ``MediaStreamAudioSourceNode``
  into an ``AudioWorkletNode`` that sees every sample): the first sample over 0.1 after quiet is
  an onset at its ``AudioContext`` time, put on the ``performance.now()`` clock with
  ``getOutputTimestamp()`` (the time that sample reaches the audio output).

:func:`sync_offsets` pairs each beep with the flash nearest to it (within 400 ms): the offset is
beep minus flash, positive when the sound comes late. ``benchmarks/avsync.py`` uses the same
clip, page and pairing and prints p50/p95 over longer runs.

The interop tests (one purpose each, ~10 s of clip) publish the clip (a) with Debian's ffmpeg over
RTMP with AAC (the server's AAC→Opus bridge makes the WHEP audio) and (b) with ffmpeg 8's WHIP
muxer with Opus (passed through), and assert the median offset is within ITU-R BT.1359's
acceptability window (:data:`SOUND_EARLY_MS`, :data:`SOUND_LATE_MS`); before the fixes of the
viewer's start they measured up to 240 ms late. The unit tests (the pairing, a viewer's start) are plain
functions (milliseconds).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import struct
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
import trio

from arcly_trio import AppSpec, Engine, StreamKey
from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.protocols.webrtc.payload import h264, opus
from arcly_trio.protocols.webrtc.rtp import SendHistory
from arcly_trio.services.audio_bridge import AudioBridge
from arcly_trio.workers.http import HttpServer
from arcly_trio.workers.rtmp import RtmpServer
from arcly_trio.workers.webrtc import WebRtcServer, viewer
from arcly_trio.workers.webrtc.peer import LinkStats
from arcly_trio.workers.webrtc.viewer import (
    MAX_AUDIO_START,
    MAX_STALE_AUDIO,
    MAX_START_AGE,
    MAX_SYNCED_START_AGE,
    OutTrack,
    RtpSink,
)
from tests._browser import FAKE_MEDIA, blocking, browser
from tests._ffmpeg import run_tool
from tests._net import HOST
from tests._tools import require_ffmpeg8, require_tool
from tests._webrtc import wait_stream

MAX_PAIR_MS = 400
"""A beep and a flash further apart than this are not the same instant (the clip repeats every 1000 ms)."""
SOUND_EARLY_MS, SOUND_LATE_MS = -90, 185
"""The window the tests hold the median offset to: ITU-R BT.1359's acceptability thresholds
(sound at most 90 ms before the picture, 185 ms after). Issue 22 aims at 100 ms; the medians
measured here were -22 to +91 ms (docs/performance.md): too close to 100 for a bound on a
shared machine, while a start from an old keyframe (+109 to +242 ms) fails this one."""

AVSYNC_PLAY = r"""
const [url] = arguments; const done = arguments[arguments.length - 1];
(async () => {
  const report = window.avsync = {flashes: [], beeps: [], frames: 0, blocks: 0, errors: []};
  const pc = window.pc = new RTCPeerConnection();
  pc.addTransceiver('video', {direction: 'recvonly'}); pc.addTransceiver('audio', {direction: 'recvonly'});
  const media = new MediaStream();
  const worklet = `class Onsets extends AudioWorkletProcessor {
    constructor() { super(); this.loud = false; this.quiet = 0; }
    process(inputs) {
      const ch = inputs[0] && inputs[0][0];
      if (!ch) return true;
      let peak = 0;
      for (let i = 0; i < ch.length; i++) { const a = Math.abs(ch[i]); if (a > peak) peak = a; }
      this.port.postMessage({block: true});
      if (peak > 0.1 && !this.loud) {
        let k = 0; while (k < ch.length && Math.abs(ch[k]) <= 0.1) k++;
        this.port.postMessage({onset: currentTime + k / sampleRate});
        this.loud = true; this.quiet = 0;
      } else if (peak < 0.02 && ++this.quiet > 40) { this.loud = false; }
      else if (peak >= 0.02) { this.quiet = 0; }
      return true;
    }
  }
  registerProcessor('onsets', Onsets);`;
  async function listen(track) {
    const ac = window.ac = new AudioContext({latencyHint: 'interactive'});
    await ac.audioWorklet.addModule(URL.createObjectURL(new Blob([worklet], {type: 'application/javascript'})));
    const node = new AudioWorkletNode(ac, 'onsets');
    node.port.onmessage = (e) => {
      if (e.data.block) { report.blocks += 1; return; }
      const stamp = ac.getOutputTimestamp();
      report.beeps.push(stamp.performanceTime + (e.data.onset - stamp.contextTime) * 1000);
    };
    ac.createMediaStreamSource(new MediaStream([track])).connect(node);
    node.connect(ac.destination);
    await ac.resume();
  }
  pc.ontrack = (e) => { media.addTrack(e.track); if (e.track.kind === 'audio') listen(e.track).catch((x) => report.errors.push(String(x))); };
  await pc.setLocalDescription(await pc.createOffer());
  const r = await fetch(url, {method: 'POST', headers: {'content-type': 'application/sdp'}, body: pc.localDescription.sdp});
  const text = await r.text();
  if (r.status !== 201) { done({error: r.status + ' ' + text}); return; }
  await pc.setRemoteDescription({type: 'answer', sdp: text});
  const video = document.createElement('video');
  video.autoplay = true; video.muted = false; video.srcObject = media; document.body.appendChild(video);
  const canvas = document.createElement('canvas'); canvas.width = 16; canvas.height = 9;
  const ctx = canvas.getContext('2d', {willReadFrequently: true});
  let bright = false;
  const onFrame = (now, meta) => {
    ctx.drawImage(video, 0, 0, 16, 9);
    const d = ctx.getImageData(0, 0, 16, 9).data;
    let sum = 0; for (let i = 0; i < d.length; i += 4) sum += d[i] + d[i + 1] + d[i + 2];
    const on = sum / (3 * 16 * 9) > 128;
    report.frames += 1;
    if (on && !bright) report.flashes.push(meta.expectedDisplayTime);
    bright = on;
    video.requestVideoFrameCallback(onFrame);
  };
  video.requestVideoFrameCallback(onFrame);
  done({ok: true});
})().catch(e => done({error: String(e)}));
"""

READ_REPORT = "return window.avsync"


#: ffmpeg 8's ``-re`` catches up 5 % faster than real time once behind (the WHIP handshake blocks
#: it for about a second) and starts with a 0.5 s burst: the stream then runs fast for 20 s and
#: Chromium's audio jitter buffer grows (see docs/performance.md). Read strictly in real time.
REALTIME_FFMPEG8 = ("-readrate_initial_burst", "0", "-readrate_catchup", "1")


def flash_beep_inputs(size: str = "320x180", rate: int = 30, realtime: Sequence[str] = ()) -> list[str]:
    """ffmpeg input options: a picture white for the first 100 ms of every second (else black),
    and a mono 48 kHz 1 kHz tone in the same 100 ms (else silence); real time (``-re``, with
    ``realtime`` options)."""
    return [
        "-re",
        *realtime,
        "-f",
        "lavfi",
        "-i",
        f"color=c=black:s={size}:r={rate},drawbox=c=white:t=fill:enable='lt(mod(t,1),0.1)'",
        "-re",
        *realtime,
        "-f",
        "lavfi",
        "-i",
        "aevalsrc='if(lt(mod(t,1),0.1),0.8*sin(2*PI*1000*t),0)':s=48000",
    ]


def h264_args(gop: int = 30) -> list[str]:
    return ["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-profile:v", "baseline", "-bf", "0",
            "-g", str(gop), "-pix_fmt", "yuv420p"]  # fmt: skip


def rtmp_aac_publisher(ffmpeg: str, url: str) -> list[str]:
    """The clip over RTMP, H.264 + AAC (what OBS and most encoders send)."""
    return [ffmpeg, "-hide_banner", "-nostdin", "-v", "error", *flash_beep_inputs(), *h264_args(), "-c:a", "aac",
            "-ar", "48000", "-f", "flv", url]  # fmt: skip


def whip_opus_publisher(ffmpeg8: str, url: str) -> list[str]:
    """The clip over WHIP with ffmpeg 8's muxer, H.264 + Opus (48 kHz stereo)."""
    return [ffmpeg8, "-hide_banner", "-nostdin", "-v", "error", *flash_beep_inputs(realtime=REALTIME_FFMPEG8),
            *h264_args(), "-c:a",
            "libopus", "-ar", "48000", "-ac", "2", "-f", "whip", url]  # fmt: skip


def sync_offsets(flashes: Sequence[float], beeps: Sequence[float], max_pair: float = MAX_PAIR_MS) -> list[float]:
    """Beep minus flash (ms) for each beep that has a flash within ``max_pair`` ms (the nearest)."""
    out: list[float] = []
    ordered = sorted(flashes)
    for beep in beeps:
        nearest = min(ordered, key=lambda flash: abs(beep - flash), default=None)
        if nearest is not None and abs(beep - nearest) <= max_pair:
            out.append(beep - nearest)
    return out


def summary(offsets: Sequence[float]) -> dict[str, float]:
    """p50, p95 of |offset| and the extremes, in ms (rounded)."""
    if not offsets:
        return {}
    ordered = sorted(offsets)
    magnitudes = sorted(abs(x) for x in offsets)
    return {
        "pairs": len(ordered),
        "p50_ms": round(statistics.median(ordered), 1),
        "p95_abs_ms": round(magnitudes[min(len(magnitudes) - 1, int(len(magnitudes) * 0.95))], 1),
        "min_ms": round(ordered[0], 1),
        "max_ms": round(ordered[-1], 1),
    }


# --- unit tests of the pairing ------------------------------------------------------------------


def test_offsets_pair_each_beep_with_its_nearest_flash():
    flashes = [1000.0, 2000.0, 3000.0, 4000.0]
    beeps = [1040.0, 1985.0, 3050.0]
    assert sync_offsets(flashes, beeps) == [40.0, -15.0, 50.0]


def test_offsets_leave_out_a_beep_without_a_flash_near_it():
    # the flash of the second second was not seen (a dropped frame): that beep is no pair, and
    # it must not be paired with the flash a second away
    assert sync_offsets([1000.0, 3000.0], [1010.0, 2010.0, 3010.0]) == [10.0, 10.0]
    assert sync_offsets([], [5.0]) == []


def test_summary_reports_median_and_p95_of_magnitudes():
    found = summary([10.0, -30.0, 20.0, 15.0, 200.0])
    assert found["p50_ms"] == 15.0 and found["p95_abs_ms"] == 200.0 and found["pairs"] == 5
    assert summary([]) == {}


# --- the start of a viewer (a sink with a stand-in session) ---------------------------------------


class _Port:
    """The UDP port's two sends, recording each datagram's payload type and timestamp."""

    def __init__(self, sent: list[tuple[int, int]]) -> None:
        self.sent = sent

    def send(self, data: bytes | memoryview, address: object) -> bool:
        self.sent.append((data[1] & 0x7F, int.from_bytes(data[4:8], "big")))
        return True

    def send_many(self, data: memoryview, ends: list[int], address: object) -> bool:
        begin = 0
        for end in ends:
            self.send(data[begin:end], address)
            begin = end
        return True


class _Clear:
    """SRTP that protects nothing: the packets as the sink builds them."""

    trailer = None  # no in-place path: the sink builds each frame with protect_packets

    def protect_packets(
        self, packets: Sequence[tuple[bytes, int, int]], start: int, second: int, sequence: int, ssrc: int
    ) -> tuple[memoryview, list[int]]:
        data = bytearray()
        ends = []
        for offset, (payload, timestamp, marker) in enumerate(packets[start:]):
            data += struct.pack("!BBHII", 0x80, second | marker, (sequence + offset) & 0xFFFF, timestamp, ssrc)
            data += payload
            ends.append(len(data))
        return memoryview(data), ends

    def protect_one(self, payload: bytes, timestamp: int, second: int, sequence: int, ssrc: int) -> memoryview:
        return memoryview(struct.pack("!BBHII", 0x80, second, sequence, timestamp, ssrc) + payload)


class _Host:
    mtu = 1200

    def __init__(self, sent: list[tuple[int, int]]) -> None:
        self.keyframe_requests = 0
        self.port = _Port(sent)
        self.sessions: dict[str, object] = {}

    def request_keyframe(self, key: object) -> None:
        self.keyframe_requests += 1


class _Session:
    """What :class:`RtpSink` uses of its session: the host and its port, the key, SRTP, the address."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, int]] = []
        self.host = _Host(self.sent)
        self.key = StreamKey("live", "sync")
        self.srtp = _Clear()
        self.address = ("127.0.0.1", 9)
        self.link = None
        self.stats = LinkStats()

    def close(self, reason: str) -> None:
        pass


def _sink() -> tuple[RtpSink, _Session]:
    session = _Session()
    sink = RtpSink(session)  # type: ignore[arg-type]
    sink.video = OutTrack("video", "h264", 102, 1, 90000, history=SendHistory(256), module=h264)
    sink.audio = OutTrack("audio", "opus", 111, 2, 48000, module=opus)
    return sink, session


def _gop(seconds: float) -> list[Frame]:
    """A GOP of ``seconds``: 30 fps H.264 (a keyframe first) and 20 ms Opus frames, interleaved."""
    nal = bytes([0x65]) + bytes(40)
    frames = [Frame(FrameKind.VIDEO, "h264", 0, 0, len(nal).to_bytes(4, "big") + nal, True)]
    video_at, audio_at = 33, 0
    while audio_at < seconds * 1000:
        if audio_at <= video_at:
            frames.append(Frame(FrameKind.AUDIO, "opus", audio_at, audio_at, b"\xfc" + bytes(20)))
            audio_at += 20
        else:
            delta = bytes([0x41]) + bytes(20)
            frames.append(Frame(FrameKind.VIDEO, "h264", video_at, video_at, len(delta).to_bytes(4, "big") + delta))
            video_at += 33
    return frames


def test_a_viewer_starts_with_the_held_video_from_its_keyframe_but_only_the_latest_audio():
    sink, session = _sink()
    gop = _gop(0.8)
    sink.replay(gop)
    sink.connected()
    video = [ts for pt, ts in session.sent if pt == 102]
    audio = [ts // 48 for pt, ts in session.sent if pt == 111]
    assert video[0] == 0 and len(set(video)) == sum(1 for f in gop if f.kind is FrameKind.VIDEO)
    newest = gop[-1].dts
    assert audio and min(audio) >= newest - MAX_AUDIO_START  # no burst of old audio
    assert len(audio) == sum(1 for f in gop if f.kind is FrameKind.AUDIO and f.dts >= newest - MAX_AUDIO_START)
    # from then on every audio frame goes out
    sink.offer([Frame(FrameKind.AUDIO, "opus", newest + 20, newest + 20, b"\xfc" + bytes(20))], 0)
    assert session.sent[-1] == (111, (newest + 20) * 48)


def test_a_viewer_of_a_stream_with_audio_starts_at_the_next_keyframe_when_the_held_one_is_old():
    opus_config = Frame(FrameKind.AUDIO, "opus", 0, 0, b"OpusHead" + bytes(11), config=True)
    sink, session = _sink()
    sink.replay([opus_config, *_gop(0.8)])  # 800 ms behind: more than MAX_SYNCED_START_AGE
    sink.connected()
    assert session.sent == [] and session.host.keyframe_requests == 1
    later = _gop(0.1)
    sink.offer([Frame(f.kind, f.codec, f.pts + 2000, f.dts + 2000, f.payload, f.keyframe) for f in later], 0)
    assert session.sent[0] == (102, 2000 * 90)  # the next keyframe
    sink, session = _sink()
    sink.replay([opus_config, *_gop(MAX_SYNCED_START_AGE / 1000 - 0.05)])  # fresh enough: starts at once
    sink.connected()
    assert session.sent[0] == (102, 0) and session.host.keyframe_requests == 0
    sink, session = _sink()
    sink.replay(_gop(0.8))  # no audio in the stream: the held keyframe up to MAX_START_AGE
    sink.connected()
    assert session.sent[0] == (102, 0) and MAX_START_AGE > 800


def test_the_bridges_first_opus_starts_near_the_video_not_with_its_stale_burst():
    sink, session = _sink()
    sink.replay(_gop(0.5)[:1])  # the keyframe
    sink.connected()
    sink.offer([Frame(FrameKind.VIDEO, "h264", 1000, 1000, bytes([0, 0, 0, 2, 0x41, 0]))], 0)
    stale = [Frame(FrameKind.AUDIO, "opus", pts, pts, b"\xfc" + bytes(20)) for pts in range(500, 1000, 20)]
    for frame in stale:
        sink.deliver_bridged(frame)
    audio = [ts // 48 for pt, ts in session.sent if pt == 111]
    assert audio == [pts for pts in range(500, 1000, 20) if pts >= 1000 - MAX_AUDIO_START]
    # once audio runs, every bridged frame goes out, late or not
    sink.deliver_bridged(Frame(FrameKind.AUDIO, "opus", 700, 700, b"\xfc" + bytes(20)))
    assert session.sent[-1] == (111, 700 * 48)


def test_a_bridge_that_lags_behind_the_video_still_starts_the_audio():
    sink, session = _sink()
    sink.replay(_gop(0.5)[:1])
    sink.connected()
    sink.offer([Frame(FrameKind.VIDEO, "h264", 5000, 5000, bytes([0, 0, 0, 2, 0x41, 0]))], 0)
    for pts in range(0, 20 * (MAX_STALE_AUDIO + 5), 20):  # all far behind the video
        sink.deliver_bridged(Frame(FrameKind.AUDIO, "opus", pts, pts, b"\xfc" + bytes(20)))
    audio = [ts // 48 for pt, ts in session.sent if pt == 111]
    assert audio == list(range(20 * MAX_STALE_AUDIO, 20 * (MAX_STALE_AUDIO + 5), 20))


# --- Chromium -----------------------------------------------------------------------------------


OVERLOADED = 3.0
"""Load average per CPU over which a sync measurement is not judged (skipped, with its numbers)."""


def check_sync(report: dict[str, Any]) -> None:
    """The median offset within the window; not judged on a machine so loaded (load average
    over :data:`OVERLOADED` per CPU) that the players and the bridge wait for a CPU for
    hundreds of milliseconds: there the sound started 300 ms late and converged over 20 s."""
    offsets = report["offsets"]
    assert len(offsets) >= 5, report
    median = statistics.median(offsets)
    load = os.getloadavg()[0]
    if not SOUND_EARLY_MS <= median <= SOUND_LATE_MS and load > OVERLOADED * (os.cpu_count() or 1):
        pytest.skip(f"load average {load:.1f}: too busy to judge A/V sync ({summary(offsets)})")
    assert SOUND_EARLY_MS <= median <= SOUND_LATE_MS, (summary(offsets), offsets)


@contextlib.asynccontextmanager
async def server() -> AsyncIterator[tuple[Engine, RtmpServer, HttpServer]]:
    rtmp, http, webrtc = RtmpServer(HOST, 0), HttpServer(HOST, 0), WebRtcServer(HOST, 0)
    builder = Engine.builder().protocol(rtmp).protocol(http).protocol(webrtc).observer(AudioBridge())
    builder.application(AppSpec("live"))
    async with builder.build() as engine:
        yield engine, rtmp, http


async def measure(driver: Any, http: HttpServer, stream: str, seconds: float) -> dict[str, Any]:
    """Play ``live/STREAM`` over WHEP in the page; after the player settled (6 s: Chromium's lip
    sync converges at most 80 ms a second), collect ``seconds`` of onsets; the page's report
    with the offsets."""
    await blocking(driver.get, f"http://{HOST}:{http.port}/api/server")
    started = await blocking(driver.execute_async_script, AVSYNC_PLAY, f"http://{HOST}:{http.port}/live/{stream}/whep")
    assert started.get("ok"), started
    while len((await blocking(driver.execute_script, READ_REPORT))["flashes"]) < 6:  # playing, past the start
        await trio.sleep(0.25)
    first = await blocking(driver.execute_script, READ_REPORT)
    skip_flashes, skip_beeps = len(first["flashes"]), len(first["beeps"])
    while len((await blocking(driver.execute_script, READ_REPORT))["flashes"]) < skip_flashes + seconds:
        await trio.sleep(0.25)
    report = await blocking(driver.execute_script, READ_REPORT)
    report["offsets"] = sync_offsets(report["flashes"][skip_flashes:], report["beeps"][skip_beeps:])
    return report


@pytest.mark.interop
async def test_rtmp_aac_through_the_bridge_plays_in_sync_over_whep():
    ffmpeg = require_tool("ffmpeg")
    async with server() as (engine, rtmp, http):
        async with run_tool(rtmp_aac_publisher(ffmpeg, f"rtmp://{HOST}:{rtmp.port}/live/sync")):
            async with browser(*FAKE_MEDIA, "--mute-audio") as driver:
                with trio.fail_after(60):
                    await wait_stream(engine, "live/sync")
                    report = await measure(driver, http, "sync", 8)
    check_sync(report)


@pytest.mark.interop
async def test_whip_opus_from_ffmpeg8_plays_in_sync_over_whep(monkeypatch):
    monkeypatch.setattr(viewer, "JOIN_OPUS_FROM", 0)  # Opus in 40 ms pairs, as a busy worker sends it
    monkeypatch.setattr(viewer, "BATCH_AUDIO_FROM", 0)  # and in the video frames' sends (padded runs)
    ffmpeg8 = require_ffmpeg8()
    async with server() as (engine, rtmp, http):
        async with run_tool(whip_opus_publisher(ffmpeg8, f"http://{HOST}:{http.port}/live/sync/whip")):
            async with browser(*FAKE_MEDIA, "--mute-audio") as driver:
                with trio.fail_after(60):
                    await wait_stream(engine, "live/sync")
                    report = await measure(driver, http, "sync", 8)
    check_sync(report)


def test_opus_frames_go_out_in_pairs_decided_once_for_every_viewer(monkeypatch):
    """Two consecutive 20 ms Opus frames go out as one packet (the first one's timestamp); the
    pairs are the stream's, decided by the first viewer: one that came in between sends the
    second of a pair alone; a gap in the audio sends the one held alone. Only from
    JOIN_OPUS_FROM sessions on the worker: below, each goes out alone (no latency added)."""
    frames = [
        Frame(FrameKind.AUDIO, "opus", pts, pts, b"\xfc" + bytes([n]) * 20)
        for n, pts in enumerate((0, 20, 40, 100, 120))
    ]
    alone, session = _sink()
    session.host.sessions = {str(n): None for n in range(viewer.JOIN_OPUS_FROM - 1)}
    alone.ready, alone.wait_keyframe = True, False
    alone.offer(frames, 0)
    assert [ts // 48 for _, ts in session.sent] == [0, 20, 40, 100, 120]
    monkeypatch.setattr(viewer, "JOIN_OPUS_FROM", 0)
    first, late = _sink(), _sink()
    for sink, _ in (first, late):
        sink.ready, sink.wait_keyframe = True, False
    frames = [
        Frame(FrameKind.AUDIO, "opus", pts, pts, b"\xfc" + bytes([n]) * 20)
        for n, pts in enumerate((0, 20, 40, 100, 120))
    ]
    first[0].offer(frames[:1], 0)
    for frame in frames[1:]:
        first[0].offer([frame], 0)
        late[0].offer([frame], 0)
    assert [ts // 48 for _, ts in first[1].sent] == [0, 40, 100]  # (0, 20), 40 alone (a gap), (100, 120)
    assert [ts // 48 for _, ts in late[1].sent] == [20, 40, 100]
    assert first[0].audio is not None and first[0].audio.packets == 3


@pytest.mark.parametrize(("max_ptime", "sent"), [(None, [0, 40]), (20, [0, 20, 40, 60]), (40, [0, 40])])
def test_a_viewer_that_asks_for_shorter_packets_gets_each_opus_packet_alone(max_ptime, sent, monkeypatch):
    """An offer's ``a=maxptime`` under 40 ms keeps that viewer's Opus packets as they are."""
    from tests.protocols.test_webrtc_sdp import WHEP_OFFER, whep

    monkeypatch.setattr(viewer, "JOIN_OPUS_FROM", 0)
    line = "" if max_ptime is None else f"a=maxptime:{max_ptime}\r\n"
    session = _Session()
    sink = RtpSink(session)  # type: ignore[arg-type]
    sink.configure(whep(WHEP_OFFER.decode().replace("a=fmtp:111 ", line + "a=fmtp:111 ")))
    sink.ready, sink.wait_keyframe = True, False
    for pts in (0, 20, 40, 60):
        sink.offer([Frame(FrameKind.AUDIO, "opus", pts, pts, b"\xfc" + bytes(20))], 0)
    assert [ts // 48 for _, ts in session.sent] == sent
