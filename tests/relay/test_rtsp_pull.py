"""The RTSP camera pull against a stand-in camera: TCP and UDP, Basic and Digest, reconnect,
keep-alives, G.711 to AAC, the pull relay (``rtsp://`` templates), credentials never shown.

:class:`FakeCamera` is a small RTSP server in the test (trio, port 0): it answers OPTIONS,
DESCRIBE (H.264 with ``sprop-parameter-sets`` only, no parameter sets in band, as many cameras
do, and PCMA audio), SETUP (interleaved or UDP), PLAY, GET_PARAMETER and TEARDOWN, asks for
credentials when it has some, and sends the demo clip's H.264 packetized with the WebRTC RTP
layer plus a 440 Hz A-law tone in 20 ms packets. Every test has a ``fail_after``; real time is a
few tenths of a second each.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from arcly_trio import StreamKey
from arcly_trio.clients import open_rtmp_player
from arcly_trio.core.errors import RemoteRefused
from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.media.transcode import PcmaToAac, PcmuToAac
from arcly_trio.protocols.rtsp.messages import (
    Interleaved,
    RtspReader,
    RtspRequest,
    encode_interleaved,
    encode_response,
)
from arcly_trio.protocols.webrtc.payload import h264
from arcly_trio.protocols.webrtc.rtp import build_rtp
from arcly_trio.relay import PullSource
from arcly_trio.relay.rtsp_pull import open_rtsp_player
from tests._nodes import node

HOST = "127.0.0.1"
USER, PASSWORD = "admin", "cam-s3cret-pw"
NONCE = "0123456789abcdef"
REALM = "IP Camera"


def alaw_tone(seconds: float = 1.0, frequency: int = 440) -> bytes:
    """A 440 Hz tone in G.711 A-law at 8 kHz, encoded by FFmpeg's ``pcm_alaw``."""
    import array

    import av

    samples = int(8000 * seconds)
    pcm = array.array("h", (int(12000 * math.sin(2 * math.pi * frequency * i / 8000)) for i in range(samples)))
    encoder = av.CodecContext.create("pcm_alaw", "w")
    encoder.sample_rate, encoder.layout, encoder.format = 8000, "mono", "s16"
    encoder.open()
    frame = av.AudioFrame(format="s16", layout="mono", samples=samples)
    frame.sample_rate = 8000
    frame.planes[0].update(pcm.tobytes())
    return b"".join(bytes(p) for p in [*encoder.encode(frame), *encoder.encode(None)])


TONE = alaw_tone()


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


class FakeCamera:
    """A stand-in IP camera (module docstring). ``auth``: ``None``, ``"basic"`` or ``"digest"``."""

    def __init__(self, video: list[Frame], *, auth: str | None = None, session_timeout: int = 60) -> None:
        self.video = [f for f in video if f.kind is FrameKind.VIDEO]
        self.config = next((f.payload for f in self.video if f.config), b"")
        self.auth = auth
        self.session_timeout = session_timeout
        self.port = 0
        self.methods: list[str] = []
        self.authorizations: list[str] = []
        self.plays = 0
        self.playing = trio.Event()
        self.keepalive = trio.Event()
        self.pace = 0.005
        self.drop_every = 0  # over UDP: leave out every n-th video packet (loss)

    def sdp(self) -> str:
        import base64

        sprops = ",".join(base64.b64encode(n).decode() for n in h264.parameter_sets(self.config))
        return (
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=cam\r\nt=0 0\r\n"
            "m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
            f"a=fmtp:96 packetization-mode=1;sprop-parameter-sets={sprops}\r\na=control:trackID=0\r\n"
            "m=audio 0 RTP/AVP 8\r\na=control:trackID=1\r\n"
        )

    def authorized(self, request: RtspRequest) -> bool:
        given = request.header("authorization")
        if self.auth is None:
            return True
        if given is None:
            return False
        self.authorizations.append(given)
        if self.auth == "basic":
            import base64

            return given == "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        fields = dict(part.strip().split("=", 1) for part in given.removeprefix("Digest ").split(","))
        fields = {k: v.strip('"') for k, v in fields.items()}
        ha1 = _md5(f"{USER}:{REALM}:{PASSWORD}")
        ha2 = _md5(f"{request.method}:{fields.get('uri')}")
        return fields.get("response") == _md5(f"{ha1}:{NONCE}:{ha2}")

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(self.port, host=HOST)
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self.port)
        await trio.serve_listeners(self.connection, listeners)

    async def connection(self, stream: trio.SocketStream) -> None:
        reader = RtspReader(role="server")
        channels: dict[int, Any] = {}
        udp: list[tuple[str, int] | None] = []
        udp_socket = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        await udp_socket.bind((HOST, 0))
        lock = trio.Lock()

        async def send(data: bytes) -> None:
            async with lock:
                await stream.send_all(data)

        async with stream, trio.open_nursery() as nursery:
            try:
                while data := await stream.receive_some(65536):
                    for message in reader.feed(data):
                        if isinstance(message, Interleaved):
                            continue
                        assert isinstance(message, RtspRequest)
                        self.methods.append(message.method)
                        cseq = (("CSeq", message.header("cseq") or "0"),)
                        if message.method not in ("OPTIONS",) and not self.authorized(message):
                            challenge = (
                                f'Digest realm="{REALM}", nonce="{NONCE}"'
                                if self.auth == "digest"
                                else f'Basic realm="{REALM}"'
                            )
                            await send(encode_response(401, None, (*cseq, ("WWW-Authenticate", challenge))))
                            continue
                        session = (("Session", f"12345678;timeout={self.session_timeout}"),)
                        if message.method == "OPTIONS":
                            public = "OPTIONS, DESCRIBE, SETUP, PLAY, GET_PARAMETER, TEARDOWN"
                            await send(encode_response(200, None, (*cseq, ("Public", public))))
                        elif message.method == "DESCRIBE":
                            base = (("Content-Base", f"rtsp://{HOST}:{self.port}/cam/"),)
                            body = self.sdp().encode()
                            await send(
                                encode_response(200, None, (*cseq, *base, ("Content-Type", "application/sdp")), body)
                            )
                        elif message.method == "SETUP":
                            transport = message.header("transport") or ""
                            if "client_port=" in transport:
                                port = int(transport.split("client_port=")[1].split("-")[0])
                                udp.append((HOST, port))
                                mine = udp_socket.getsockname()[1]
                                answer = f"RTP/AVP;unicast;client_port={port}-{port + 1};server_port={mine}-{mine + 1}"
                            else:
                                udp.append(None)
                                answer = transport
                            await send(encode_response(200, None, (*cseq, *session, ("Transport", answer))))
                        elif message.method == "PLAY":
                            answer = encode_response(200, None, (*cseq, *session))
                            self.plays += 1
                            self.playing.set()
                            if udp and all(u is None for u in udp):
                                # The answer and the first packets in one write, as cameras do.
                                first: list[bytes] = [answer]

                                async def with_answer(data: bytes, first: list[bytes] = first) -> None:
                                    if first:
                                        data = first.pop() + data
                                    await send(data)

                                nursery.start_soon(self.media, with_answer, udp_socket, list(udp))
                            else:
                                await send(answer)
                                nursery.start_soon(self.media, send, udp_socket, list(udp))
                        elif message.method == "GET_PARAMETER":
                            self.keepalive.set()
                            await send(encode_response(200, None, (*cseq, *session)))
                        elif message.method == "TEARDOWN":
                            await send(encode_response(200, None, cseq))
                        else:
                            await send(encode_response(405, None, cseq))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            finally:
                nursery.cancel_scope.cancel()
                udp_socket.close()
        del channels

    async def media(self, send: Any, udp_socket: Any, udp: list[tuple[str, int] | None]) -> None:
        async def out(track: int, packet: bytes) -> None:
            if udp[track] is None:
                await send(encode_interleaved(2 * track, packet))
            else:
                await udp_socket.sendto(packet, udp[track])

        sequence = [0, 0]
        audio_ts = 0
        loop = 0
        try:
            while True:
                for frame in self.video:
                    if frame.config:
                        continue
                    ts = (frame.pts + loop * 10_000) * 90
                    payloads = h264.packetize(frame.payload, 1200)
                    for i, payload in enumerate(payloads):
                        packet = build_rtp(96, sequence[0], ts, 0x1111, payload, marker=i == len(payloads) - 1)
                        sequence[0] += 1
                        if self.drop_every and udp[0] is not None and sequence[0] % self.drop_every == 0:
                            continue
                        await out(0, packet)
                    while audio_ts < (frame.pts + loop * 10_000) * 8:
                        start = audio_ts % len(TONE)
                        await out(1, build_rtp(8, sequence[1], audio_ts, 0x2222, TONE[start : start + 160]))
                        sequence[1] += 1
                        audio_ts += 160
                    await trio.sleep(self.pace)
                loop += 1
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            return


@asynccontextmanager
async def camera(demo_frames: list[Frame], **options: Any) -> AsyncIterator[tuple[FakeCamera, trio.CancelScope]]:
    cam = FakeCamera(demo_frames, **options)
    async with trio.open_nursery() as nursery:
        await nursery.start(cam.serve)
        yield cam, nursery.cancel_scope
        nursery.cancel_scope.cancel()


async def take(player: Any, count: int) -> list[Frame]:
    got: list[Frame] = []
    while len(got) < count:
        batch = await player.next_batch()
        assert batch, player.end
        got += batch
    return got


def url_of(cam: FakeCamera, *, credentials: str = "", query: str = "") -> str:
    return f"rtsp://{credentials}{HOST}:{cam.port}/cam{query}"


# --------------------------------------------------------------------------------------- play


@pytest.mark.parametrize("auth", [None, "basic", "digest"])
async def test_a_camera_plays_as_h264_and_aac_frames_over_tcp(
    demo_frames: list[Frame], auth: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with trio.fail_after(10):
        async with camera(demo_frames, auth=auth) as (cam, _):
            url = url_of(cam, credentials=f"{USER}:{PASSWORD}@")
            async with open_rtsp_player(url, timeout=5) as player:
                got = await take(player, 120)
            assert cam.methods[:2] == ["OPTIONS", "DESCRIBE"] and "TEARDOWN" in cam.methods
    video = [f for f in got if f.kind is FrameKind.VIDEO]
    audio = [f for f in got if f.kind is FrameKind.AUDIO]
    # The configuration comes from the SDP's sprop-parameter-sets (none is in band).
    assert video[0].config and video[0].codec == "h264" and video[1].keyframe
    # The first picture came in the same read as PLAY's answer: it is not lost.
    first_key = next(f for f in demo_frames if f.kind is FrameKind.VIDEO and f.keyframe and not f.config)
    assert video[1].payload.endswith(first_key.payload)
    sent = {f.payload for f in demo_frames if f.kind is FrameKind.VIDEO and not f.config}
    assert all(f.payload in sent for f in video[2:])  # the first carries the SDP's SPS and PPS too
    assert audio and audio[0].config and audio[0].codec == "aac" and len(audio) > 3  # G.711 became AAC
    if auth:
        assert cam.authorizations and cam.authorizations[0].lower().startswith(auth)
    assert PASSWORD not in caplog.text and player.url == f"rtsp://***@{HOST}:{cam.port}/cam"


async def test_a_camera_plays_over_udp_and_only_from_its_own_address(demo_frames: list[Frame]) -> None:
    with trio.fail_after(10):
        async with camera(demo_frames) as (cam, _):
            async with open_rtsp_player(url_of(cam, query="?transport=udp"), timeout=5) as player:
                got = await take(player, 60)
            assert not any("interleaved" in m for m in cam.methods)
    assert any(f.kind is FrameKind.VIDEO and f.keyframe for f in got)
    assert any(f.kind is FrameKind.AUDIO and not f.config for f in got)


async def test_udp_loss_is_counted_and_the_video_resumes_on_keyframes(demo_frames: list[Frame]) -> None:
    with trio.fail_after(10):
        async with camera(demo_frames) as (cam, _):
            cam.drop_every = 97
            async with open_rtsp_player(url_of(cam, query="?transport=udp"), timeout=5) as player:
                got: list[Frame] = []
                while sum(f.kind is FrameKind.VIDEO and f.keyframe for f in got) < 3:
                    got += await take(player, 1)
            assert player.lost > 0
    sent = {f.payload for f in demo_frames if f.kind is FrameKind.VIDEO}
    video = [f for f in got if f.kind is FrameKind.VIDEO and not f.config]
    assert sum(f.payload not in sent for f in video) <= 1  # no broken picture is passed on (the first has SPS/PPS)
    assert len(video) < 110  # 121 pictures from the first to the third keyframe: those after a loss are left out


@pytest.mark.parametrize("auth", ["basic", "digest"])
async def test_wrong_credentials_are_refused_and_never_shown(
    demo_frames: list[Frame], auth: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with trio.fail_after(10):
        async with camera(demo_frames, auth=auth) as (cam, _):
            for credentials in (f"{USER}:wrong-password-1@", ""):
                with pytest.raises(RemoteRefused) as caught:
                    async with open_rtsp_player(url_of(cam, credentials=credentials), timeout=5):
                        pass
                assert caught.value.code == "401" and "wrong-password-1" not in str(caught.value)
            assert cam.plays == 0
    assert "wrong-password-1" not in caplog.text


async def test_keepalives_follow_the_session_timeout(demo_frames: list[Frame]) -> None:
    with trio.fail_after(10):
        async with camera(demo_frames, session_timeout=2) as (cam, _):
            async with open_rtsp_player(url_of(cam), timeout=5) as player:
                await take(player, 1)
                await cam.keepalive.wait()  # GET_PARAMETER after half the 2 s timeout


async def test_a_camera_that_restarts_is_pulled_again(demo_frames: list[Frame]) -> None:
    reconnected = trio.Event()
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            cam = FakeCamera(demo_frames)
            scope = trio.CancelScope()

            async def run_camera(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
                with scope:
                    await cam.serve(task_status=task_status)

            await nursery.start(run_camera)
            async with open_rtsp_player(
                url_of(cam), timeout=2, read_timeout=5, on_reconnect=lambda _: reconnected.set()
            ) as player:
                before = await take(player, 30)
                scope.cancel()  # the camera goes away ...
                scope = trio.CancelScope()
                await nursery.start(run_camera)  # ... and comes back on the same port
                await reconnected.wait()
                after: list[Frame] = []
                while not any(f.kind is FrameKind.VIDEO and f.keyframe for f in after):
                    after += await take(player, 1)
            assert player.reconnects == 1 and cam.plays >= 1
            nursery.cancel_scope.cancel()
    assert max(f.pts for f in after) >= max(f.pts for f in before)  # the timeline goes on


async def test_a_camera_gone_for_good_ends_the_stream(demo_frames: list[Frame]) -> None:
    with trio.fail_after(10):
        async with camera(demo_frames) as (cam, scope):
            async with open_rtsp_player(url_of(cam), timeout=1, read_timeout=0.5, reconnect_for=0.5) as player:
                await take(player, 5)
                scope.cancel()
                while await player.next_batch():
                    pass
                assert player.end


async def test_a_url_of_a_bad_transport_is_refused_on_entry() -> None:
    with trio.fail_after(5), pytest.raises(RemoteRefused) as caught:
        async with open_rtsp_player(f"rtsp://{USER}:{PASSWORD}@{HOST}:1/cam?transport=sctp"):
            pass
    assert PASSWORD not in str(caught.value)


async def test_a_camera_that_cannot_be_reached_fails_on_entry() -> None:
    listener = trio.socket.socket()
    await listener.bind((HOST, 0))
    port = listener.getsockname()[1]
    listener.close()
    with trio.fail_after(10), pytest.raises(Exception) as caught:
        async with open_rtsp_player(f"rtsp://{USER}:{PASSWORD}@{HOST}:{port}/cam", timeout=2):
            pass
    assert PASSWORD not in str(caught.value)


# ------------------------------------------------------------------------------ the pull relay


async def test_an_rtsp_template_pulls_a_camera_for_rtmp_players(
    demo_frames: list[Frame], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with trio.fail_after(20):
        async with camera(demo_frames, auth="digest") as (cam, _):
            template = f"rtsp://{USER}:{PASSWORD}@{HOST}:{cam.port}/{{stream}}"
            pull = PullSource({None: template}, idle=0.3)
            async with node(sources=(pull,)) as (edge, edge_rtmp, _):
                url = f"rtmp://{HOST}:{edge_rtmp.port}/live/cam"
                async with open_rtmp_player(url) as player:
                    got = []
                    async for frame in player:
                        got.append(frame)
                        if sum(f.kind is FrameKind.AUDIO and not f.config for f in got) >= 5 and len(got) > 30:
                            break
                    stream = edge.stream("live/cam")
                    assert stream.info.protocol == "pull"
                    status = pull.stream_status(stream.key)["pull"]
                    assert status["state"] == "connected" and PASSWORD not in str(status)
                    assert status["url"] == f"rtsp://***@{HOST}:{cam.port}/cam"
                assert any(f.codec == "aac" for f in got) and any(f.codec == "h264" and f.keyframe for f in got)
                while edge.has_stream(StreamKey("live", "cam")):  # idle stop: nobody watches
                    await trio.sleep(0.05)
    assert PASSWORD not in caplog.text


async def test_an_rtsp_template_with_wrong_credentials_is_stream_not_found(demo_frames: list[Frame]) -> None:
    with trio.fail_after(20):
        async with camera(demo_frames, auth="digest") as (cam, _):
            pull = PullSource({None: f"rtsp://{USER}:nope-nope@{HOST}:{cam.port}/{{stream}}"}, timeout=3)
            async with node(sources=(pull,)) as (edge, edge_rtmp, _):
                with pytest.raises(RemoteRefused):
                    async with open_rtmp_player(f"rtmp://{HOST}:{edge_rtmp.port}/live/cam"):
                        pass
                assert cam.plays == 0 and not edge.has_stream(StreamKey("live", "cam"))
                assert "nope-nope" not in str(pull.links) and cam.methods.count("DESCRIBE") == 2


# ------------------------------------------------------------------------------ G.711 and AAC


@pytest.mark.parametrize("transcoder", [PcmaToAac, PcmuToAac])
def test_g711_becomes_aac_with_the_input_timeline(transcoder: type) -> None:
    from tests.media.test_transcode import decode

    t = transcoder()
    out: list[Frame] = []
    for i in range(100):  # 2 s in 20 ms packets (A-law: the tone; mu-law: its zero level, 0xff)
        chunk = TONE[(i % 50) * 160 : (i % 50 + 1) * 160] if t.in_codec == "pcma" else b"\xff" * 160
        out += t.push(Frame(FrameKind.AUDIO, t.in_codec, 5000 + i * 20, 5000 + i * 20, chunk))
    out += t.flush()
    assert out[0].config and out[0].codec == "aac" and t.skipped == 0
    media = [f for f in out if not f.config]
    assert media[0].pts == 5000 and math.isclose(media[-1].pts, 5000 + 2000, abs_tol=40)
    rate, samples, rms, channels = decode(out)
    assert rate == 48000 and channels == 1 and math.isclose(samples, 96000, rel_tol=0.05)
    assert (rms > 0.2) if t.in_codec == "pcma" else (rms < 0.01)


async def test_the_cameras_g711_reaches_webrtc_as_opus_through_the_audio_bridge(demo_frames: list[Frame]) -> None:
    from arcly_trio.services.audio_bridge import AudioBridge
    from tests.media.test_transcode import decode

    bridge = AudioBridge(poll_interval=0.05)
    with trio.fail_after(20):
        async with camera(demo_frames) as (cam, _):
            pull = PullSource({None: f"rtsp://{HOST}:{cam.port}/{{stream}}"}, idle=0.3)
            async with node(sources=(pull,), observer=bridge) as (_edge, edge_rtmp, _):
                async with open_rtmp_player(f"rtmp://{HOST}:{edge_rtmp.port}/live/cam") as player:
                    await player.next_batch()  # the pull runs
                    got: list[Frame] = []
                    release = bridge.want_opus(StreamKey("live", "cam"), got.append)
                    while len(got) < 30:
                        await trio.sleep(0.02)
                    release()
    assert got[0].config and all(f.codec == "opus" for f in got)
    rate, _, rms, _ = decode(got)
    assert rate == 48000 and rms > 0.1  # the tone, not silence


# ----------------------------------------------------------- against this project's RTSP server


async def test_an_arcly_rtsp_server_is_pulled_with_digest_and_its_aac(demo_frames: list[Frame]) -> None:
    """The RTSP worker of another arcly-trio is a camera too: H.264 and AAC (RFC 3640
    ``mpeg4-generic``) come back as they were published; its Digest takes the play token."""
    from arcly_trio import Credentials, Engine
    from arcly_trio.kernel.auth import TokenAuthenticator
    from arcly_trio.workers.rtsp.server import RtspServer

    rtsp = RtspServer(HOST, 0)
    builder = Engine.builder().application("live").protocol(rtsp)
    builder.authenticator(TokenAuthenticator(play_token="play-t0ken"))
    with trio.fail_after(15):
        async with builder.build() as origin, trio.open_nursery() as nursery:

            async def publish() -> None:
                async with origin.publish("live/cam", Credentials(protocol="test")) as publisher:
                    for loop in range(20):
                        for frame in demo_frames:
                            await publisher.send(frame.shifted(loop * 10_000) if loop else frame)
                            if not frame.config:
                                await trio.sleep(0.002)

            nursery.start_soon(publish)
            while not origin.has_stream(StreamKey("live", "cam")):
                await trio.sleep(0.01)
            with pytest.raises(RemoteRefused):
                async with open_rtsp_player(f"rtsp://any:wrong-t0ken@{HOST}:{rtsp.port}/live/cam", timeout=5):
                    pass
            async with open_rtsp_player(f"rtsp://any:play-t0ken@{HOST}:{rtsp.port}/live/cam", timeout=5) as player:
                got = await take(player, 200)
            nursery.cancel_scope.cancel()
    sent = {f.payload for f in demo_frames if not f.config}
    video = [f for f in got if f.kind is FrameKind.VIDEO and not f.config]
    audio = [f for f in got if f.kind is FrameKind.AUDIO and not f.config]
    assert video and audio and all(f.payload in sent for f in audio)
    # Pictures come back as published; keyframes with parameter sets in front (the server's, the SDP's).
    assert all(f.payload in sent for f in video if not f.keyframe) and sum(f.keyframe for f in video) >= 1
    assert any(f.config and f.codec == "aac" for f in got)


def test_rtsp_templates_are_for_pulls_only() -> None:
    from arcly_trio.protocols.rtmp.url import check_template
    from arcly_trio.relay import PushTarget
    from arcly_trio.server.options import _pull_template

    template = f"rtsp://{USER}:{PASSWORD}@{HOST}/{{stream}}?transport=udp"
    assert check_template(template, pull=True) == template and _pull_template(f"cams={template}") is None
    with pytest.raises(ValueError) as caught:
        check_template(template)  # a push cannot go to a camera
    assert PASSWORD not in str(caught.value)
    with pytest.raises(ValueError):
        PushTarget.parse(template)
    assert _pull_template("rtsp:///nohost") is not None
