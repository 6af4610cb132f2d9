"""The RTSP server with a raw client on loopback: requests, play over TCP and UDP, auth, limits.

Rules: localhost, port 0, every test under ``fail_after``; timeouts are tested on the
autojump clock; the published stream is the bundled demo clip (H.264 + AAC).
"""

from __future__ import annotations

import base64
import hashlib
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.core.keys import Credentials
from arcly_trio.kernel.auth import TokenAuthenticator
from arcly_trio.kernel.engine import Engine
from arcly_trio.protocols.rtsp.messages import (
    Interleaved,
    RtspReader,
    RtspResponse,
    encode_interleaved,
    encode_request,
)
from arcly_trio.protocols.rtsp.sdp import parse_sdp
from arcly_trio.protocols.rtsp.transport import parse_transport
from arcly_trio.protocols.webrtc.rtp import parse_rtp
from arcly_trio.workers.rtsp.connection import stream_key
from arcly_trio.workers.rtsp.server import RtspServer
from tests._net import HOST
from tests._serving import healthy_stream


class Client:
    """A raw RTSP client: requests out, responses and interleaved packets in."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.reader = RtspReader(role="client")
        self.cseq = 0
        self.packets: list[Interleaved] = []
        self.pending: list[RtspResponse] = []

    async def request(
        self, method: str, uri: str, headers: list[tuple[str, str]] | None = None, body: bytes = b""
    ) -> RtspResponse:
        self.cseq += 1
        await self.stream.send_all(encode_request(method, uri, [("CSeq", str(self.cseq)), *(headers or [])], body))
        return await self.response()

    async def response(self) -> RtspResponse:
        while not self.pending:
            data = await self.stream.receive_some(65536)
            assert data, "the server closed the connection"
            for event in self.reader.feed(data):
                if isinstance(event, Interleaved):
                    self.packets.append(event)
                else:
                    assert isinstance(event, RtspResponse)
                    self.pending.append(event)
        return self.pending.pop(0)

    async def until_packets(self, count: int) -> None:
        while len(self.packets) < count:
            data = await self.stream.receive_some(65536)
            assert data
            for event in self.reader.feed(data):
                if isinstance(event, Interleaved):
                    self.packets.append(event)

    async def closed(self) -> bool:
        while True:
            try:
                data = await self.stream.receive_some(65536)
            except trio.BrokenResourceError:
                return True
            if not data:
                return True


@asynccontextmanager
async def _engine(
    authenticator: TokenAuthenticator | None = None, **options: object
) -> AsyncIterator[tuple[Engine, RtspServer]]:
    server = RtspServer(HOST, 0, **options)  # type: ignore[arg-type]
    builder = Engine.builder().application("live").protocol(server)
    if authenticator is not None:
        builder.authenticator(authenticator)
    async with builder.build() as engine:
        yield engine, server


@pytest.fixture
async def served(demo_frames: list[Frame]) -> AsyncIterator[tuple[Engine, RtspServer]]:
    async with _engine(udp_ports=(47000, 47999)) as pair:
        async with trio.open_nursery() as nursery:
            await healthy_stream(pair[0], demo_frames, nursery)
            yield pair
            nursery.cancel_scope.cancel()


async def _client(server: RtspServer) -> Client:
    assert server.port is not None
    return Client(await trio.open_tcp_stream(HOST, server.port))


def url(server: RtspServer, path: str = "live/ok") -> str:
    return f"rtsp://{HOST}:{server.port}/{path}"


async def test_describe_setup_play_over_tcp_sends_rtp_from_a_keyframe(served: tuple[Engine, RtspServer]) -> None:
    engine, server = served
    with trio.fail_after(10):
        client = await _client(server)
        options = await client.request("OPTIONS", url(server))
        assert options.status == 200 and "DESCRIBE" in (options.header("Public") or "")
        described = await client.request("DESCRIBE", url(server), [("Accept", "application/sdp")])
        assert described.status == 200
        sdp = parse_sdp(described.body)
        assert [t.codec for t in sdp.tracks] == ["h264", "aac"]
        assert sdp.tracks[0].config is not None and sdp.tracks[1].config is not None
        base = described.header("Content-Base")
        assert base == url(server) + "/"
        setup = await client.request(
            "SETUP", base + "trackID=0", [("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1")]
        )
        assert setup.status == 200
        session = (setup.header("Session") or "").split(";")[0]
        assert parse_transport(setup.header("Transport") or "")[0].interleaved == (0, 1)
        setup = await client.request(
            "SETUP", base + "trackID=1", [("Transport", "RTP/AVP/TCP;unicast;interleaved=2-3"), ("Session", session)]
        )
        assert setup.status == 200
        assert (await client.request("PLAY", base, [("Session", session)])).status == 200
        assert server.connections == 1
        assert [(s.role, s.protocol) for s in engine.sessions if s.protocol == "rtsp"] == [("play", "rtsp")]
        await client.until_packets(40)
        video = [parse_rtp(p.data) for p in client.packets if p.channel == 0]
        assert video[0].payload_type == 96
        first = video[0].payload
        # H.264 starting at a keyframe: the parameter sets first (STAP-A or SPS alone), then IDR
        assert first[0] & 0x1F in (24, 7)
        sequences = [p.sequence for p in video]
        assert all((b - a) & 0xFFFF == 1 for a, b in zip(sequences, sequences[1:], strict=False))
        assert (await client.request("GET_PARAMETER", base, [("Session", session)])).status == 200
        assert (await client.request("PLAY", base, [("Session", "wrong")])).status == 454
        assert (await client.request("TEARDOWN", base, [("Session", session)])).status == 200
        assert await client.closed()
        while server.connections:
            await trio.sleep(0.01)


async def test_udp_rtp_goes_to_the_clients_own_address_not_the_destination_asked(
    served: tuple[Engine, RtspServer],
) -> None:
    engine, server = served
    with trio.fail_after(10):
        rtp = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        await rtp.bind((HOST, 0))
        port = rtp.getsockname()[1]
        client = await _client(server)
        described = await client.request("DESCRIBE", url(server))
        base = described.header("Content-Base") or ""
        transport = f"RTP/AVP;unicast;destination=198.51.100.7;client_port={port}-{port + 1}"
        setup = await client.request("SETUP", base + "trackID=0", [("Transport", transport)])
        assert setup.status == 200
        answer = parse_transport(setup.header("Transport") or "")[0]
        assert answer.destination is None and answer.server_port is not None
        assert 47000 <= answer.server_port[0] <= 47999
        session = (setup.header("Session") or "").split(";")[0]
        assert (await client.request("PLAY", base, [("Session", session)])).status == 200
        data, source = await rtp.recvfrom(2048)
        assert source == (HOST, answer.server_port[0])
        assert parse_rtp(data).payload_type == 96
        rtp.close()


@pytest.mark.parametrize(
    ("first", "status"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"OPTIONS * RTSP/2.0\r\nCSeq: 1\r\n\r\n", 505),
        (b"OPTIONS * RTSP/1.0\r\nContent-Length: 99999999\r\n\r\n", 413),
    ],
)
async def test_malformed_requests_get_a_status_and_the_connection_closes(
    served: tuple[Engine, RtspServer], first: bytes, status: int
) -> None:
    _, server = served
    with trio.fail_after(10):
        client = await _client(server)
        await client.stream.send_all(first)
        response = await client.response()
        assert response.status == status
        assert await client.closed()
        assert server.runner.failures == 0


async def test_requests_out_of_order_or_for_nothing_are_answered_not_fatal(served: tuple[Engine, RtspServer]) -> None:
    _, server = served
    with trio.fail_after(10):
        client = await _client(server)
        assert (
            await client.request("SETUP", url(server) + "/trackID=0", [("Transport", "RTP/AVP/TCP;interleaved=0-1")])
        ).status == 455
        assert (await client.request("PLAY", url(server))).status == 455
        assert (await client.request("DESCRIBE", url(server, "live/nothing"))).status == 404
        assert (await client.request("DESCRIBE", url(server, "justone"))).status == 404
        assert (await client.request("BREW", url(server))).status == 501
        assert (await client.request("DESCRIBE", url(server))).status == 200
        bad = await client.request(
            "SETUP", url(server) + "/trackID=0", [("Transport", "RTP/AVP/TCP;interleaved=300-301")]
        )
        assert bad.status == 461
        none = await client.request("SETUP", url(server) + "/trackID=0", [("Transport", "RTP/SAVP;unicast")])
        assert none.status == 461
        assert server.runner.failures == 0


async def test_a_slow_request_head_is_cut_off(autojump_clock: trio.testing.MockClock) -> None:
    async with _engine(head_timeout=5.0) as (_, server):
        with trio.fail_after(60):
            client = await _client(server)
            await client.stream.send_all(b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n")
            before = trio.current_time()
            assert await client.closed()
            assert 5.0 <= trio.current_time() - before < 6.0


async def test_an_idle_connection_is_closed_after_the_setup_timeout(autojump_clock: trio.testing.MockClock) -> None:
    async with _engine(setup_timeout=7.0) as (_, server):
        with trio.fail_after(60):
            client = await _client(server)
            assert (await client.request("OPTIONS", "*")).status == 200
            before = trio.current_time()
            assert await client.closed()
            assert 7.0 <= trio.current_time() - before < 8.0


def _digest(method: str, uri: str, challenge: str, token: str, algorithm: str) -> str:
    fields = dict(part.strip().split("=", 1) for part in challenge.removeprefix("Digest ").split(","))
    nonce = fields["nonce"].strip('"')
    h = hashlib.md5 if algorithm == "MD5" else hashlib.sha256

    def hx(text: str) -> str:
        return h(text.encode()).hexdigest()

    response = hx(f"{hx(f'user:arcly-trio:{token}')}:{nonce}:{hx(f'{method}:{uri}')}")
    return f'Digest username="user", realm="arcly-trio", nonce="{nonce}", uri="{uri}", response="{response}", algorithm={algorithm}'


@pytest.mark.parametrize("scheme", ["query", "basic", "md5", "sha256", "wrong"])
async def test_play_authorization_basic_digest_and_query_token(demo_frames: list[Frame], scheme: str) -> None:
    async with _engine(TokenAuthenticator(publish_token="pub", play_token="secret")) as (engine, server):
        async with trio.open_nursery() as nursery:
            with trio.fail_after(10):
                await _publish_with_token(engine, demo_frames, nursery)
                client = await _client(server)
                target = url(server)
                refused = await client.request("DESCRIBE", target)
                assert refused.status == 401
                challenges = [v for k, v in refused.headers if k == "WWW-Authenticate"]
                assert any(c.startswith("Basic") for c in challenges)
                headers: list[tuple[str, str]] = []
                if scheme == "query":
                    target += "?token=secret"
                elif scheme == "basic":
                    headers = [("Authorization", "Basic " + base64.b64encode(b"user:secret").decode())]
                elif scheme in ("md5", "sha256"):
                    algorithm = "MD5" if scheme == "md5" else "SHA-256"
                    challenge = next(c for c in challenges if c.endswith(f"algorithm={algorithm}"))
                    headers = [("Authorization", _digest("DESCRIBE", target, challenge, "secret", algorithm))]
                else:
                    headers = [("Authorization", "Basic " + base64.b64encode(b"user:nope").decode())]
                answer = await client.request("DESCRIBE", target, headers)
                assert answer.status == (401 if scheme == "wrong" else 200)
            nursery.cancel_scope.cancel()


async def _publish_with_token(engine: Engine, demo_frames: list[Frame], nursery: trio.Nursery) -> None:
    async def run() -> None:
        async with engine.publish("live/ok", Credentials(token="pub")) as publisher:
            for frame in demo_frames:
                await publisher.send(frame)
                if not frame.config:
                    await trio.sleep(0.02)
            await trio.sleep_forever()

    nursery.start_soon(run)
    while not any(s.publishing for s in engine.streams()):
        await trio.sleep(0.01)


def test_stream_key_reads_the_path_query_and_track_control() -> None:
    key, query, rest = stream_key("rtsp://h:8554/live/cam?token=x/trackID=1")
    assert (str(key), query, rest) == ("live/cam", {"token": "x"}, "trackID=1")
    key, query, rest = stream_key("rtsp://h/live/cam/streamid=0")
    assert (str(key), query, rest) == ("live/cam", {}, "streamid=0")
    with pytest.raises(ValueError):
        stream_key("rtsp://h/onlyone")


async def test_a_kicked_player_is_disconnected(served: tuple[Engine, RtspServer]) -> None:
    engine, server = served
    with trio.fail_after(10):
        client = await _client(server)
        base = (await client.request("DESCRIBE", url(server))).header("Content-Base") or ""
        setup = await client.request("SETUP", base + "trackID=0", [("Transport", "RTP/AVP/TCP;interleaved=0-1")])
        session = (setup.header("Session") or "").split(";")[0]
        assert (await client.request("PLAY", base, [("Session", session)])).status == 200
        (mine,) = [s for s in engine.sessions if s.protocol == "rtsp"]
        engine.kick(mine.id, by="test")
        assert await client.closed()
        while server.connections:
            await trio.sleep(0.01)


def test_digest_finds_the_token_inside_the_servers_swappable_authenticator() -> None:
    from arcly_trio.ops.composite import Swappable
    from arcly_trio.workers.rtsp.connection import _expected_token

    wrapped = Swappable(TokenAuthenticator(publish_token="pub", play_token="secret"))
    assert (_expected_token(wrapped, "play"), _expected_token(wrapped, "publish")) == ("secret", "pub")
    assert _expected_token(object(), "play") is None


async def test_a_player_that_sets_up_only_the_audio_gets_audio(served: tuple[Engine, RtspServer]) -> None:
    _, server = served
    with trio.fail_after(10):
        client = await _client(server)
        base = (await client.request("DESCRIBE", url(server))).header("Content-Base") or ""
        setup = await client.request("SETUP", base + "trackID=1", [("Transport", "RTP/AVP/TCP;interleaved=0-1")])
        session = (setup.header("Session") or "").split(";")[0]
        assert (await client.request("PLAY", base, [("Session", session)])).status == 200
        await client.until_packets(5)
        assert {parse_rtp(p.data).payload_type for p in client.packets if p.channel == 0} == {97}


def _announce_sdp(demo_frames: list[Frame]) -> bytes:
    from arcly_trio.protocols.rtsp.sdp import build_sdp, describe_track

    configs = {f.kind: f for f in demo_frames if f.config and f.kind is not FrameKind.DATA}
    tracks = [
        describe_track("h264", configs[FrameKind.VIDEO].payload, payload_type=96, control="streamid=0"),
        describe_track("aac", configs[FrameKind.AUDIO].payload, payload_type=97, control="streamid=1"),
    ]
    return build_sdp(tracks)


def _rtp_of(frame: Frame, sequence: int) -> list[bytes]:
    from arcly_trio.protocols.webrtc.payload import aac, h264
    from arcly_trio.protocols.webrtc.rtp import build_rtp

    video = frame.kind is FrameKind.VIDEO
    payloads = (h264 if video else aac).packetize(frame.payload, 1200)
    clock = 90 if video else 44
    return [
        build_rtp(
            96 if video else 97,
            sequence + i,
            frame.pts * clock,
            1 if video else 2,
            payload,
            marker=i == len(payloads) - 1,
        )
        for i, payload in enumerate(payloads)
    ]


async def test_a_publisher_announces_records_over_tcp_and_the_kernel_gets_frames_with_configs(
    demo_frames: list[Frame],
) -> None:
    async with _engine(TokenAuthenticator(publish_token="pub")) as (engine, server):
        with trio.fail_after(10):
            client = await _client(server)
            target = url(server, "live/in")
            sdp = _announce_sdp(demo_frames)
            refused = await client.request("ANNOUNCE", target, [("Content-Type", "application/sdp")], sdp)
            assert refused.status == 401
            # ffmpeg asks again with the credentials, on the same connection
            basic = ("Authorization", "Basic " + base64.b64encode(b"u:pub").decode())
            announced = await client.request("ANNOUNCE", target, [("Content-Type", "application/sdp"), basic], sdp)
            assert announced.status == 200
            session = (announced.header("Session") or "").split(";")[0]
            for index in (0, 1):
                transport = f"RTP/AVP/TCP;unicast;interleaved={2 * index}-{2 * index + 1};mode=record"
                setup = await client.request(
                    "SETUP", f"{target}?token=pub/streamid={index}", [("Transport", transport), ("Session", session)]
                )
                assert setup.status == 200, setup
            assert (await client.request("RECORD", target, [("Session", session)])).status == 200
            async with engine.subscribe("live/in") as subscription:
                sequences = {FrameKind.VIDEO: 0, FrameKind.AUDIO: 0}
                data = b""
                for frame in [f for f in demo_frames if not f.config and f.kind is not FrameKind.DATA][:120]:
                    packets = _rtp_of(frame, sequences[frame.kind])
                    sequences[frame.kind] += len(packets)
                    channel = 0 if frame.kind is FrameKind.VIDEO else 2
                    data += b"".join(encode_interleaved(channel, packet) for packet in packets)
                await client.stream.send_all(data)
                got: list[Frame] = []
                async for frame in subscription:
                    got.append(frame)
                    if sum(not f.config and f.kind is FrameKind.VIDEO for f in got) >= 20:
                        break
            kinds = {(f.kind, f.codec, f.config) for f in got}
            assert {(FrameKind.VIDEO, "h264", True), (FrameKind.AUDIO, "aac", True)} <= kinds
            assert (FrameKind.VIDEO, "h264", False) in kinds and (FrameKind.AUDIO, "aac", False) in kinds
            assert [(s.role, s.protocol) for s in engine.sessions if s.protocol == "rtsp"] == [("publish", "rtsp")]


async def test_sessions_per_address_are_capped(demo_frames: list[Frame]) -> None:
    async with _engine(max_sessions_per_address=1) as (engine, server):
        async with trio.open_nursery() as nursery:
            with trio.fail_after(10):
                await healthy_stream(engine, demo_frames, nursery)
                first, second = await _client(server), await _client(server)
                assert (await first.request("DESCRIBE", url(server))).status == 200
                assert (await second.request("DESCRIBE", url(server))).status == 453
                await first.stream.aclose()
                while server.sessions_per_address:
                    await trio.sleep(0.01)
                assert (await second.request("DESCRIBE", url(server))).status == 200
            nursery.cancel_scope.cancel()


async def test_a_udp_publishers_loss_and_reordering_are_counted_and_video_resumes(demo_frames: list[Frame]) -> None:
    async with _engine(udp_ports=(47000, 47999)) as (engine, server):
        with trio.fail_after(10):
            sender = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            await sender.bind((HOST, 0))
            port = sender.getsockname()[1]
            client = await _client(server)
            target = url(server, "live/udp")
            announced = await client.request(
                "ANNOUNCE", target, [("Content-Type", "application/sdp")], _announce_sdp(demo_frames)
            )
            session = (announced.header("Session") or "").split(";")[0]
            setup = await client.request(
                "SETUP",
                target + "/streamid=0",
                [("Transport", f"RTP/AVP;unicast;client_port={port}-{port + 1};mode=record"), ("Session", session)],
            )
            server_port = parse_transport(setup.header("Transport") or "")[0].server_port
            assert server_port is not None
            assert (await client.request("RECORD", target, [("Session", session)])).status == 200
            video = [f for f in demo_frames if f.kind is FrameKind.VIDEO and not f.config][:70]  # keyframes 0 and 60
            packets: list[bytes] = []
            ends: set[int] = set()
            for frame in video:
                packets += _rtp_of(frame, len(packets))
                ends.add(len(packets) - 1)
            first_end = min(ends)
            lost = first_end + 2  # the second picture after the keyframe
            order = [i for i in range(len(packets)) if i != lost]
            swap = order.index(first_end + 5)
            order[swap], order[swap + 1] = order[swap + 1], order[swap]
            async with engine.subscribe("live/udp") as subscription:
                for index in order:
                    await sender.sendto(packets[index], (HOST, server_port[0]))
                    if index in ends:
                        await trio.lowlevel.checkpoint()  # let the server read: no burst past its socket buffer
                keyframes = 0
                async for frame in subscription:
                    keyframes += frame.keyframe
                    if keyframes == 2:  # the next GOP came through after the loss
                        break
            (connection,) = server.publishers
            while connection.packets_lost < 1:
                await trio.sleep(0.01)
            assert (connection.packets_lost, connection.packets_reordered) == (1, 1)
            sender.close()


async def test_a_udp_player_without_keepalives_times_out(
    demo_frames: list[Frame], autojump_clock: trio.testing.MockClock
) -> None:
    async with _engine(udp_ports=(47000, 47999), session_timeout=20.0) as (engine, server):
        async with trio.open_nursery() as nursery:
            with trio.fail_after(120):
                await healthy_stream(engine, demo_frames, nursery)
                rtp = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                await rtp.bind((HOST, 0))
                port = rtp.getsockname()[1]
                client = await _client(server)
                base = (await client.request("DESCRIBE", url(server))).header("Content-Base") or ""
                transport = f"RTP/AVP;unicast;client_port={port}-{port + 1}"
                setup = await client.request("SETUP", base + "trackID=0", [("Transport", transport)])
                session = (setup.header("Session") or "").split(";")[0]
                assert (await client.request("PLAY", base, [("Session", session)])).status == 200
                before = trio.current_time()
                assert await client.closed()
                assert 20.0 <= trio.current_time() - before < 21.0
                assert server.udp is not None
                while server.udp.in_use:
                    await trio.sleep(0.01)
                rtp.close()
            nursery.cancel_scope.cancel()


def test_an_rtp_socket_asks_for_a_receive_buffer_of_a_second_of_video() -> None:
    """The system's default receive buffer (~200 kB) overflowed while a busy server's session
    task waited for its turn (a UDP publisher lost audio under load); the RTP socket asks for
    more, as far as ``net.core.rmem_max`` allows."""
    from pathlib import Path

    from arcly_trio.workers.rtsp.udp import RECEIVE_BUFFER, UdpPorts

    ports = UdpPorts("127.0.0.1", 40000, 40999)
    pair = ports.take()
    assert pair is not None
    try:
        allowed = int(Path("/proc/sys/net/core/rmem_max").read_text())
        # Linux reports twice what was set (its bookkeeping overhead).
        assert pair.rtp.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= min(RECEIVE_BUFFER, allowed)
    finally:
        ports.give_back(pair)
