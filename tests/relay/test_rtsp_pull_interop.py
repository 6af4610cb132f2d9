"""A camera made of real ffmpeg output is pulled over RTSP and played by ffprobe over RTMP and
LL-HLS, and by the project's WHEP client.

ffmpeg cannot be an RTSP camera itself: ``-rtsp_flags listen`` is an option of its RTSP
*demuxer* (it waits for a client to ANNOUNCE/RECORD to it), its RTSP muxer only publishes (ffmpeg
8.0, measured). So the stand-in camera is the test's small RTSP server
(:class:`tests.relay.test_rtsp_pull.FakeCamera`) answering DESCRIBE with the SDP ffmpeg wrote
(``-sdp_file``) and relaying, interleaved, the RTP ffmpeg sends it: H.264 from libx264 (parameter
sets in band, ``-bf 0`` as cameras) and G.711 A-law at 8 kHz (``-c:a pcm_alaw -ar 8000``), the
usual camera pair. The edge pulls it with Digest credentials through an ``rtsp://`` template;
ffprobe reads the stream over RTMP (H.264 and AAC made from the G.711), the LL-HLS playlist
is served and the WHEP client receives video and audio (the audio bridge's Opus of that AAC); the camera's RTSP side is then killed and started again on its port, the pull
reconnects (its link's ``retries``) and ffprobe reads the stream again. One ffmpeg run of a few
seconds.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio

from arcly_trio import AppSpec, Engine, StreamKey
from arcly_trio.clients.webrtc import open_whep_player
from arcly_trio.protocols.rtsp.messages import encode_interleaved
from arcly_trio.relay import PullSource
from arcly_trio.services import HlsService
from arcly_trio.services.audio_bridge import AudioBridge
from arcly_trio.workers.http import HttpServer
from arcly_trio.workers.rtmp import RtmpServer
from arcly_trio.workers.webrtc.server import WebRtcServer
from tests._ffmpeg import probe_streams
from tests._hls import media_playlist
from tests._tools import require_ffmpeg8
from tests.relay.test_rtsp_pull import HOST, PASSWORD, USER, FakeCamera

pytestmark = pytest.mark.interop


class FfmpegCamera(FakeCamera):
    """The stand-in camera with ffmpeg's SDP and RTP (module docstring)."""

    def __init__(self, sdp_text: str) -> None:
        super().__init__([], auth="digest")
        self.sdp_text = sdp_text
        self.sessions: list[Any] = []

    def sdp(self) -> str:
        return self.sdp_text

    async def media(self, send: Any, udp_socket: Any, udp: list[tuple[str, int] | None]) -> None:
        self.sessions.append(send)
        try:
            await trio.sleep_forever()
        finally:
            self.sessions.remove(send)

    async def relay(self, sock: trio.socket.SocketType, track: int) -> None:
        while True:
            packet = await sock.recv(65536)
            for send in list(self.sessions):
                try:
                    await send(encode_interleaved(2 * track, packet))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass


async def udp_socket() -> trio.socket.SocketType:
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    await sock.bind((HOST, 0))
    return sock


async def test_an_ffmpeg_camera_with_g711_is_pulled_and_plays_over_rtmp_ll_hls_and_whep(
    tmp_path: Any, http_get: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    ffmpeg = require_ffmpeg8()
    sockets = [await udp_socket() for _ in range(4)]  # video RTP, video RTCP, audio RTP, audio RTCP
    port = [s.getsockname()[1] for s in sockets]
    sdp_file = tmp_path / "camera.sdp"
    args = [
        ffmpeg, "-hide_banner", "-loglevel", "error", "-re",
        "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=8000",
        "-t", "12",
        "-map", "0:v", "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "25", "-bf", "0",
        "-f", "rtp", f"rtp://{HOST}:{port[0]}?rtcpport={port[1]}",
        "-map", "1:a", "-c:a", "pcm_alaw", "-ar", "8000", "-ac", "1",
        "-f", "rtp", f"rtp://{HOST}:{port[2]}?rtcpport={port[3]}",
        "-sdp_file", str(sdp_file),
    ]  # fmt: skip
    with trio.fail_after(40):
        async with trio.open_nursery() as nursery:
            process = await nursery.start(
                lambda task_status: trio.run_process(args, task_status=task_status, check=False)
            )
            while not (sdp_file.exists() and b"m=audio" in sdp_file.read_bytes()):
                await trio.sleep(0.05)  # ffmpeg writes the file once its outputs are open
            cam = FfmpegCamera(sdp_file.read_text())
            nursery.start_soon(cam.relay, sockets[0], 0)
            nursery.start_soon(cam.relay, sockets[2], 1)
            scope = trio.CancelScope()

            async def run_camera(task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
                with scope:
                    await cam.serve(task_status=task_status)

            await nursery.start(run_camera)
            template = f"rtsp://{USER}:{PASSWORD}@{HOST}:{cam.port}/{{stream}}"
            pull = PullSource({None: template}, idle=1.0)
            hls = HlsService(variant="ll", target_duration=0.5, all_apps=True)
            edge_rtmp, edge_http = RtmpServer(HOST, 0), HttpServer(HOST, 0)
            builder = Engine.builder().application(AppSpec("live")).idle_timeout(30).source(pull).service(hls)
            builder.protocol(edge_rtmp).protocol(edge_http).protocol(WebRtcServer(HOST, 0)).observer(AudioBridge())
            async with builder.build():
                rtmp = f"rtmp://{HOST}:{edge_rtmp.port}/live/cam"
                streams = await probe_streams(rtmp, "-rw_timeout", "15000000")
                assert [(s["codec_type"], s["codec_name"]) for s in streams] == [("audio", "aac"), ("video", "h264")]
                assert streams[1]["width"] == 320 and streams[1]["height"] == 240
                status, body = 0, b""
                while status != 200 or b"#EXT-X-PART:" not in body:
                    status, _, body, _ = await media_playlist(http_get, edge_http.port, "/live/cam/index.m3u8")
                    await trio.sleep(0.1)
                async with open_whep_player(f"http://{HOST}:{edge_http.port}/live/cam/whep") as player:
                    await player.wait_frames(10)
                    await player.wait_frames(20, "audio")
                # The camera restarts (its RTSP side: connections closed, the port taken again):
                # the pull reconnects, the stream stays up, and ffprobe reads it again.
                link = pull.links[StreamKey("live", "cam")]
                scope.cancel()
                scope = trio.CancelScope()
                await nursery.start(run_camera)
                while link.retries < 1:
                    await trio.sleep(0.05)
                frames = link.frames
                while link.frames < frames + 25:
                    await trio.sleep(0.05)
                assert cam.plays >= 1 and link.state == "connected"
                assert [s["codec_name"] for s in await probe_streams(rtmp, "-rw_timeout", "15000000")] == [
                    "aac",
                    "h264",
                ]
            assert cam.authorizations and cam.authorizations[0].startswith("Digest ")
            process.terminate()
            nursery.cancel_scope.cancel()
    for sock in sockets:
        sock.close()
    assert PASSWORD not in caplog.text
