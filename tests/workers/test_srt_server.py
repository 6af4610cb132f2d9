"""The SRT worker driven by a Python caller on a real UDP socket (no ffmpeg): no state before
the cookie, no answer larger than the request, refusals with their reason codes, limits, and a
player that gets MPEG-TS from a published stream."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from arcly_trio.core.frame import Frame
from arcly_trio.kernel.auth import TokenAuthenticator
from arcly_trio.kernel.engine import Engine
from arcly_trio.ops import PrometheusObserver
from arcly_trio.protocols.srt import packet as p
from arcly_trio.workers.http.api_routes import sessions_document
from arcly_trio.workers.srt import SrtServer
from tests._net import HOST
from tests._serving import healthy_stream, wait_until


@asynccontextmanager
async def srt(
    authenticator: Any = None, observer: Any = None, **options: Any
) -> AsyncIterator[tuple[Engine, SrtServer]]:
    server = SrtServer(HOST, 0, **options)
    builder = Engine.builder().application("live").protocol(server)
    if authenticator is not None:
        builder.authenticator(authenticator)
    if observer is not None:
        builder.observer(observer)
    async with builder.build() as engine:
        yield engine, server


class Caller:
    """A minimal SRT caller: induction, conclusion, then packets."""

    def __init__(self, port: int) -> None:
        self.sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        self.port = port
        self.socket_id = 4242

    async def __aenter__(self) -> Caller:
        await self.sock.bind((HOST, 0))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.sock.close()

    async def send(self, packet: p.ControlPacket | p.DataPacket | bytes) -> None:
        data = packet if isinstance(packet, bytes) else packet.to_bytes()
        await self.sock.sendto(data, (HOST, self.port))

    async def receive(self, timeout: float = 1.0) -> bytes | None:
        with trio.move_on_after(timeout):
            data, _ = await self.sock.recvfrom(2048)
            return data
        return None

    def induction(self) -> p.ControlPacket:
        hs = p.Handshake(4, 0, 2, 777, 1500, 8192, p.HandshakeType.INDUCTION, self.socket_id, 0)
        return p.ControlPacket(p.ControlType.HANDSHAKE, 0, 0, 0, 0, hs.to_bytes())

    def conclusion(self, cookie: int, streamid: str) -> p.ControlPacket:
        extensions = (
            p.HsExtension(p.Extension.HSREQ, p.SrtHs(0x010501, 0xBF, 120, 120).to_bytes()),
            p.HsExtension(p.Extension.SID, p.encode_streamid(streamid)),
        )
        hs = p.Handshake(
            5, 0, 5, 777, 1500, 8192, p.HandshakeType.CONCLUSION, self.socket_id, cookie, bytes(16), extensions
        )
        return p.ControlPacket(p.ControlType.HANDSHAKE, 0, 0, 1000, 0, hs.to_bytes())

    async def connect(self, streamid: str) -> p.Handshake:
        await self.send(self.induction())
        answer = await self.receive()
        assert answer is not None
        cookie = p.Handshake.parse(p.parse(answer).body).cookie  # type: ignore[union-attr]
        await self.send(self.conclusion(cookie, streamid))
        while True:
            data = await self.receive(3.0)
            assert data is not None
            packet = p.parse(data)
            if isinstance(packet, p.ControlPacket) and packet.type == p.ControlType.HANDSHAKE:
                return p.Handshake.parse(packet.body)


async def test_induction_keeps_no_state_and_answers_no_larger() -> None:
    with trio.fail_after(10):
        async with srt() as (_, server), Caller(server.port_number or 0) as caller:
            request = caller.induction()
            for _ in range(5):
                await caller.send(request)
                answer = await caller.receive()
                assert answer is not None and len(answer) <= len(request.to_bytes())
            assert not server.sessions and not server.by_caller
            # a conclusion with a forged cookie: no answer, no state
            await caller.send(caller.conclusion(12345, "publish:live/cam"))
            assert await caller.receive(0.3) is None
            assert not server.sessions and server.bad_packets == 1


@pytest.mark.parametrize(
    ("streamid", "code"),
    [
        ("#!::r=live/cam,m=bidirectional", 1400),
        ("no-slash", 1400),
        ("read:live/none", 1404),
        ("publish:other/cam", 1404),
        ("#!::r=live/cam,m=publish,s=play-secret", 1401),
    ],
)
async def test_refusals_carry_their_reason(streamid: str, code: int, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "arcly_trio.srt")
    auth = TokenAuthenticator(publish_token="pub-secret")
    with trio.fail_after(10):
        async with srt(auth) as (_, server), Caller(server.port_number or 0) as caller:
            hs = await caller.connect(streamid)
            assert hs.type == 1000 + code
            assert any(f" {code}: " in r.getMessage() for r in caplog.records if r.name == "arcly_trio.srt")
            assert not server.sessions


async def test_streamid_is_escaped_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "arcly_trio.srt")
    with trio.fail_after(10):
        async with srt() as (_, server), Caller(server.port_number or 0) as caller:
            hs = await caller.connect("read:live/x\n\x1b[31mFAKE LINE")
            assert hs.type == 1000 + 1400 or hs.type == 1000 + 1404
            (line,) = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
            assert "\n" not in line and "\x1b" not in line


async def test_sessions_per_address_are_capped() -> None:
    with trio.fail_after(10):
        async with srt(max_sessions_per_address=1) as (_, server), Caller(server.port_number or 0) as first:
            assert (await first.connect("publish:live/a")).type == p.HandshakeType.CONCLUSION
            async with Caller(server.port_number or 0) as second:
                assert (await second.connect("publish:live/b")).type == 1000 + 1402


async def test_handshakes_are_rate_limited() -> None:
    with trio.fail_after(10):
        async with srt(handshake_rate=3) as (_, server), Caller(server.port_number or 0) as caller:
            for _ in range(10):
                await caller.send(caller.induction())
            answers = 0
            while await caller.receive(0.3) is not None:
                answers += 1
            assert answers <= 3 + 3  # this second's allowance (and the next one's, at a boundary)
            assert server.handshakes_dropped >= 4


async def test_a_player_gets_mpeg_ts_and_its_acks_are_answered(demo_frames: list[Frame]) -> None:
    metrics = PrometheusObserver()
    with trio.fail_after(10):
        async with srt(observer=metrics) as (engine, server), trio.open_nursery() as nursery:
            await healthy_stream(engine, demo_frames, nursery, "live/ok")
            async with Caller(server.port_number or 0) as caller:
                hs = await caller.connect("read:live/ok")
                assert hs.type == p.HandshakeType.CONCLUSION
                srt_hs = p.SrtHs.parse(hs.extension(p.Extension.HSRSP) or b"")
                assert (srt_hs.recv_delay, srt_hs.send_delay) == (120, 120)
                payload = b""
                newest = 0
                while len(payload) < 188 * 20:
                    data = await caller.receive()
                    assert data is not None
                    packet = p.parse(data)
                    if isinstance(packet, p.DataPacket):
                        assert packet.dest == caller.socket_id and len(packet.payload) <= 1316
                        payload += packet.payload
                        newest = packet.seq
                assert all(payload[i] == 0x47 for i in range(0, len(payload), 188))
                # a NAK at once (the send buffer keeps packets for the latency + 100 ms)
                nak = p.ControlPacket(
                    p.ControlType.NAK, 0, 0, 0, hs.socket_id, p.encode_losses([(p.seq_add(newest, -1), newest)])
                )
                await caller.send(nak)
                ack = p.ControlPacket(p.ControlType.ACK, 0, 1, 0, hs.socket_id, p.Ack(p.seq_add(777, 1)).to_bytes())
                await caller.send(ack)
                while True:
                    data = await caller.receive()
                    assert data is not None
                    packet = p.parse(data)
                    if isinstance(packet, p.ControlPacket) and packet.type == p.ControlType.ACKACK:
                        assert packet.info == 1
                        break
                (session,) = server.sessions.values()
                assert session.document()["mode"] == "play"
                (listed,) = [d for d in sessions_document(engine)["sessions"] if d.get("protocol") == "srt"]
                assert set(listed["srt"]) >= {"rtt_ms", "latency_ms", "lost", "dropped", "retransmitted"}
                await wait_until(lambda: server.status()["retransmitted"] >= 1)
                figures = {
                    (s.name, tuple(sorted(s.labels.items()))): s.value
                    for family in text_string_to_metric_families(metrics.render().decode())
                    for s in family.samples
                }
                assert figures[("arcly_srt_sessions", (("mode", "play"),))] == 1
                assert figures[("arcly_srt_retransmitted_total", ())] == 2
                assert figures[("arcly_srt_naks_received_total", ())] == 1
            nursery.cancel_scope.cancel()


async def test_a_burst_is_read_with_few_wakeups(monkeypatch: pytest.MonkeyPatch) -> None:
    """Datagrams already in the socket's buffer are taken without a trio wait each: 600 data
    packets queued at once cost a few awaited receives, and all reach the session in order."""
    import socket

    from arcly_trio.workers.srt import server as srt_server
    from arcly_trio.workers.webrtc.udp import UdpPort

    waits = 0
    receive = UdpPort.receive

    async def counting(self: UdpPort) -> tuple[bytes, tuple[str, int]]:
        nonlocal waits
        waits += 1
        return await receive(self)

    monkeypatch.setattr(UdpPort, "receive", counting)
    null_ts = (b"\x47\x1f\xff\x10" + bytes(184)) * 7  # null packets: the demuxer skips them
    with trio.fail_after(10):
        async with srt() as (_, server), Caller(server.port_number or 0) as caller:
            hs = await caller.connect("publish:live/burst")
            assert hs.type == p.HandshakeType.CONCLUSION
            (session,) = server.sessions.values()
            connection = session.connection
            assert connection is not None
            blocking = socket.fromfd(caller.sock.fileno(), socket.AF_INET, socket.SOCK_DGRAM)
            blocking.setblocking(True)
            waits = 0
            for index in range(600):  # no checkpoint in between: all queued before the server runs
                packet = p.DataPacket(p.seq_add(777, index), index + 1, 1000 + index, hs.socket_id, null_ts)
                blocking.sendto(packet.to_bytes(), (HOST, server.port_number or 0))
            blocking.close()
            await wait_until(lambda: connection.stats.packets_received == 600)
            assert connection.rcv_next == p.seq_add(777, 600) and connection.stats.lost == 0
            assert waits <= 600 // srt_server.DRAIN_BURST + 3


async def test_garbage_never_takes_the_worker_down() -> None:
    import random

    rng = random.Random(7)
    with trio.fail_after(10):
        async with srt() as (_, server), Caller(server.port_number or 0) as caller:
            for index in range(300):
                body = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 120)))
                if index % 3 == 0:  # a handshake header with a random body (v5 with broken extensions...)
                    version = rng.choice([4, 5]).to_bytes(4, "big")
                    kind = rng.choice([1, 0xFFFFFFFF, 7]).to_bytes(4, "big")
                    body = version + body[:16].ljust(16, b"\0") + kind + body[16:]
                    await caller.send(p.ControlPacket(p.ControlType.HANDSHAKE, 0, 0, 0, 0, body))
                else:
                    await caller.send(bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 64))))
            while await caller.receive(0.2) is not None:
                pass  # the answers to the garbage's valid inductions
            # still serving: a real caller gets its answer
            hs = await caller.connect("read:live/none")
            assert hs.type == 1000 + 1404
            assert server.bad_packets > 0 and not server.sessions


def test_serve_options_build_the_worker() -> None:
    from arcly_trio.server.build import build_runtime
    from arcly_trio.server.cli import build_parser, resolve_args
    from arcly_trio.server.config import ConfigError

    base = ["serve", "--http-port", "-1", "--rtmp-port", "0", "--webrtc-port", "-1"]
    runtime = build_runtime(resolve_args(build_parser(), base))
    assert runtime.srt is not None and runtime.srt.requested_port == 8890 and runtime.srt.latency_ms == 120
    args = resolve_args(
        build_parser(), [*base, "--srt-port", "0", "--srt-latency", "200", "--srt-passphrase", "p" * 12]
    )
    runtime = build_runtime(args)
    assert runtime.srt is not None
    assert (runtime.srt.requested_port, runtime.srt.latency_ms, runtime.srt.passphrase) == (0, 200, "p" * 12)
    assert build_runtime(resolve_args(build_parser(), [*base, "--srt-port", "-1"])).srt is None
    with pytest.raises(ConfigError) as refused:
        resolve_args(build_parser(), [*base, "--srt-passphrase", "short-one"])
    assert "short-one" not in str(refused.value.problems)  # a secret is never quoted back
