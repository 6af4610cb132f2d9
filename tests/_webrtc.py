"""Shared helpers of the WebRTC tests: offers and WHIP/WHEP POSTs for the in-process tests, and
for the browser tests the page scripts that play WHEP and publish WHIP with a plain
``RTCPeerConnection``, Chromium's statistics, and an ffmpeg RTMP publisher.

Error policy: helpers raise what their tools raise; the waits have no deadline of their own
(every test wraps them in ``trio.fail_after``).
"""

from __future__ import annotations

from typing import Any

import httpx
import trio

from arcly_trio import Engine
from arcly_trio.clients.webrtc import client_offer
from arcly_trio.protocols.webrtc.ice import new_credentials
from tests._browser import blocking
from tests._net import HOST
from tests._tools import require_tool

FINGERPRINT = "sha-256 " + ":".join(["AB"] * 32)


def sdp_offer(send: bool = False, codecs: tuple[str, ...] = ("h264",)) -> str:
    ufrag, pwd = new_credentials()
    return client_offer(ufrag, pwd, FINGERPRINT, send=send, ssrcs=(1111, 2222), codecs=codecs)


async def post_sdp(port: int, path: str, body: str | bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.post(
            f"http://{HOST}:{port}{path}",
            content=body.encode() if isinstance(body, str) else body,
            headers={"content-type": "application/sdp", **(headers or {})},
        )


WHEP_PLAY = """
const [url, token, codec] = arguments; const done = arguments[arguments.length - 1];
(async () => {
  const pc = new RTCPeerConnection();
  const video = pc.addTransceiver('video', {direction: 'recvonly'});
  pc.addTransceiver('audio', {direction: 'recvonly'});
  if (codec) {
    const caps = RTCRtpReceiver.getCapabilities('video').codecs;
    video.setCodecPreferences(caps.filter(c => c.mimeType.toLowerCase() === 'video/' + codec));
  }
  const media = new MediaStream();
  pc.ontrack = e => media.addTrack(e.track);
  await pc.setLocalDescription(await pc.createOffer());
  const headers = {'content-type': 'application/sdp'};
  if (token) headers.authorization = 'Bearer ' + token;
  const r = await fetch(url, {method: 'POST', headers, body: pc.localDescription.sdp});
  const text = await r.text();
  if (r.status !== 201) { done({error: r.status + ' ' + text}); return; }
  await pc.setRemoteDescription({type: 'answer', sdp: text});
  const v = document.createElement('video');
  v.autoplay = true; v.muted = false; v.srcObject = media; document.body.appendChild(v);
  window.pc = pc; window.location_ = r.headers.get('location');
  done({ok: true});
})().catch(e => done({error: String(e)}));
"""

WHIP_PUBLISH = """
const [url, token] = arguments; const done = arguments[arguments.length - 1];
(async () => {
  const media = await navigator.mediaDevices.getUserMedia({video: {width: 640, height: 360}, audio: true});
  const pc = new RTCPeerConnection();
  for (const track of media.getTracks()) pc.addTransceiver(track, {direction: 'sendonly'});
  await pc.setLocalDescription(await pc.createOffer());
  const headers = {'content-type': 'application/sdp'};
  if (token) headers.authorization = 'Bearer ' + token;
  const r = await fetch(url, {method: 'POST', headers, body: pc.localDescription.sdp});
  const text = await r.text();
  if (r.status !== 201) { done({error: r.status + ' ' + text}); return; }
  await pc.setRemoteDescription({type: 'answer', sdp: text});
  window.pc = pc;
  done({ok: true});
})().catch(e => done({error: String(e)}));
"""

STATS = """
const done = arguments[arguments.length - 1];
window.pc.getStats().then(stats => {
  const out = {state: window.pc.connectionState};
  stats.forEach(r => {
    if (r.type === 'inbound-rtp' || r.type === 'outbound-rtp') {
      out[r.type + ':' + r.kind] = {
        framesDecoded: r.framesDecoded, framesEncoded: r.framesEncoded, packetsReceived: r.packetsReceived,
        packetsSent: r.packetsSent, packetsLost: r.packetsLost, nackCount: r.nackCount,
        totalAudioEnergy: r.totalAudioEnergy, frameWidth: r.frameWidth, codecId: r.codecId,
        freezeCount: r.freezeCount, totalFreezesDuration: r.totalFreezesDuration,
      };
    }
    if (r.type === 'codec') out[r.id] = r.mimeType;
  });
  done(out);
}).catch(e => done({error: String(e)}));
"""


async def stats(driver: Any) -> dict[str, Any]:
    return await blocking(driver.execute_async_script, STATS)


async def until_stats(driver: Any, predicate: Any, poll: float = 0.25) -> dict[str, Any]:
    """Chromium's stats once ``predicate`` holds (polled: the browser has no push of its stats)."""
    while True:
        found = await stats(driver)
        if predicate(found):
            return found
        await trio.sleep(poll)


def inbound(found: dict[str, Any], kind: str) -> dict[str, Any]:
    return found.get(f"inbound-rtp:{kind}") or {}


def ffmpeg_rtmp_publish(
    url: str, *, video: tuple[str, ...] = ("-c:v", "libx264"), binary: str | None = None
) -> list[str]:
    """A real-time testsrc + sine publisher (H.264 baseline + AAC by default) to ``url``."""
    return [
        binary or require_tool("ffmpeg"),
        "-v",
        "error",
        "-re",
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=640x360:rate=25",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=44100",
        *video,
        "-pix_fmt",
        "yuv420p",
        "-g",
        "25",
        "-c:a",
        "aac",
        "-f",
        "flv",
        url,
    ]


async def wait_stream(engine: Engine, key: str) -> None:
    while not any(str(s.key) == key and s.publishing and s.stats().video_frames_total > 5 for s in engine.streams()):
        await trio.sleep(0.05)
