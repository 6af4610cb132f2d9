"""ICE-TCP passive on the WebRTC port's number: RFC 4571 framing, the routing of connections
(strangers closed with nothing sent, limits, timeouts), the bounded send queue, the announced
candidates, and Chromium playing WHEP with only TCP candidates announced."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import AsyncIterator

import httpx
import pytest
import trio

from arcly_trio import AppSpec, Engine
from arcly_trio.clients.webrtc import client_offer
from arcly_trio.protocols.webrtc import stun
from arcly_trio.protocols.webrtc.ice import new_credentials
from arcly_trio.server.build import webrtc_server
from arcly_trio.server.cli import build_parser, resolve_args
from arcly_trio.server.settings import Settings
from arcly_trio.services.audio_bridge import AudioBridge
from arcly_trio.workers.http import HttpServer
from arcly_trio.workers.rtmp import RtmpServer
from arcly_trio.workers.webrtc import WebRtcServer
from arcly_trio.workers.webrtc.tcp import MAX_FRAME, QUEUE_FRAMES, Deframer, FramingError, TcpLink, TcpPort, frame
from tests._net import HOST
from tests._serving import serving, wait_until

FINGERPRINT = "sha-256 " + ":".join(["AB"] * 32)


# ---------------------------------------------------------------------- framing


def test_frames_round_trip_across_any_split():
    packets = [b"a", os.urandom(1200), b"", os.urandom(MAX_FRAME), b"xyz"]
    wire = b"".join(frame(p) for p in packets)
    for step in (1, 2, 3, 7, 1000, len(wire)):
        deframer = Deframer()
        out = []
        for start in range(0, len(wire), step):
            out += deframer.feed(wire[start : start + step])
        assert out == [p for p in packets if p]  # an empty frame carries nothing
        assert deframer.pending == 0


def test_a_frame_over_the_limit_is_refused():
    with pytest.raises(FramingError):
        frame(bytes(MAX_FRAME + 1))
    deframer = Deframer()
    too_long = (MAX_FRAME + 1).to_bytes(2, "big")
    assert deframer.feed(frame(b"ok") + too_long[:1]) == [b"ok"]
    with pytest.raises(FramingError):
        deframer.feed(too_long[1:])


# ---------------------------------------------------------------------- a live server


async def _whip(port: int, ufrag: str, pwd: str) -> httpx.Response:
    offer = client_offer(ufrag, pwd, FINGERPRINT, send=True, ssrcs=(1111, 2222), codecs=("h264",))
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.post(
            f"http://{HOST}:{port}/live/cam/whip", content=offer.encode(), headers={"content-type": "application/sdp"}
        )


def _check(username: str, key: bytes, *, use_candidate: bool = False) -> bytes:
    attributes = [(stun.USERNAME, username.encode())]
    if use_candidate:
        attributes.append((stun.USE_CANDIDATE, b""))
    return stun.build_stun(stun.BINDING, stun.REQUEST, os.urandom(12), attributes, integrity_key=key, fingerprint=True)


async def _receive_frame(stream: trio.SocketStream, deframer: Deframer) -> bytes:
    while True:
        data = await stream.receive_some(4096)
        assert data, "the server closed the connection"
        frames = deframer.feed(data)
        if frames:
            assert len(frames) == 1
            return frames[0]


async def _closed_without_a_byte(stream: trio.SocketStream) -> None:
    """The server closes ``stream`` having written nothing to it."""
    with trio.fail_after(5):
        try:
            data = await stream.receive_some(4096)
        except trio.BrokenResourceError:
            data = b""
    assert data == b""


async def test_candidates_announce_tcp_passive_after_udp_with_lower_priority():
    async with serving(webrtc={}) as served:
        ufrag, pwd = new_credentials()
        answer = await _whip(served.http.port, ufrag, pwd)
        assert answer.status_code == 201
        port = served.webrtc.port_number
        candidates = [line.split() for line in answer.text.splitlines() if line.startswith("a=candidate:")]
        first_section = candidates[: len(candidates) // 2]
        assert [c[2] for c in first_section] == ["udp", "tcp"]
        udp, tcp = first_section
        assert int(udp[3]) > int(tcp[3])
        assert udp[5] == tcp[5] == str(port)
        assert tcp[-2:] == ["tcptype", "passive"]
        assert f"m=video {port} " in answer.text
        assert served.webrtc.tcp is not None and served.webrtc.tcp.address[1] == port


async def test_a_tcp_only_server_announces_only_tcp():
    async with serving(webrtc={"transports": ("tcp",)}) as served:
        ufrag, pwd = new_credentials()
        answer = await _whip(served.http.port, ufrag, pwd)
        lines = [line for line in answer.text.splitlines() if line.startswith("a=candidate:")]
        assert lines and all(" tcp " in line and line.endswith("tcptype passive") for line in lines)
    with pytest.raises(ValueError, match="transports"):
        WebRtcServer(HOST, 0, transports=("sctp",))


def test_the_webrtc_transports_option():
    for argv, transports in (((), ("udp", "tcp")), (("--webrtc-transports", "tcp"), ("tcp",))):
        settings = Settings.of(resolve_args(build_parser(), ["serve", *argv]))
        assert webrtc_server(settings, 0).transports == transports
    with pytest.raises(SystemExit):
        resolve_args(build_parser(), ["serve", "--webrtc-transports", "sctp"])


async def test_a_valid_check_over_tcp_binds_the_connection_and_is_answered_in_a_frame():
    async with serving(webrtc={}) as served:
        ufrag, pwd = new_credentials()
        assert (await _whip(served.http.port, ufrag, pwd)).status_code == 201
        session = next(iter(served.webrtc.sessions.values()))
        stream = await trio.open_tcp_stream(HOST, served.webrtc.port_number)
        async with stream:
            with trio.fail_after(5):
                request = _check(f"{session.ufrag}:{ufrag}", session.pwd.encode(), use_candidate=True)
                await stream.send_all(frame(request))
                reply = stun.parse_stun(await _receive_frame(stream, Deframer()))
            assert reply.cls == stun.SUCCESS and reply.integrity_ok(session.pwd.encode())
            local = stream.socket.getsockname()
            assert stun.parse_xor_address(reply.get(stun.XOR_MAPPED_ADDRESS), reply.transaction_id) == local[:2]
            (link,) = session.links
            assert session.link is link and link.session is session
            assert session.document()["transport"] == "tcp"
            assert not session.addresses  # the TCP path is not a UDP address
        # the client's close ends the path
        with trio.fail_after(5):
            await wait_until(lambda: not session.links and session.link is None)
        assert served.webrtc.tcp is not None and not served.webrtc.tcp.links


async def test_the_end_of_a_session_closes_its_connections():
    async with serving(webrtc={}) as served:
        ufrag, pwd = new_credentials()
        answer = await _whip(served.http.port, ufrag, pwd)
        session = next(iter(served.webrtc.sessions.values()))
        async with await trio.open_tcp_stream(HOST, served.webrtc.port_number) as stream:
            with trio.fail_after(5):
                await stream.send_all(frame(_check(f"{session.ufrag}:{ufrag}", session.pwd.encode())))
                deframer = Deframer()
                assert stun.parse_stun(await _receive_frame(stream, deframer)).cls == stun.SUCCESS
                async with httpx.AsyncClient(timeout=5) as client:
                    location = answer.headers["location"]
                    assert (await client.delete(f"http://{HOST}:{served.http.port}{location}")).status_code == 200
                while await stream.receive_some(4096):
                    pass  # the server closes the connection
        assert not served.webrtc.sessions
        assert served.webrtc.tcp is not None and not served.webrtc.tcp.links


async def test_strangers_connections_are_closed_and_get_nothing():
    async with serving(webrtc={"tcp_hello_timeout": 0.5}) as served:
        ufrag, pwd = new_credentials()
        assert (await _whip(served.http.port, ufrag, pwd)).status_code == 201
        session = next(iter(served.webrtc.sessions.values()))
        tcp = served.webrtc.tcp
        assert tcp is not None
        port = served.webrtc.port_number
        nobody = _check(f"nobody:{ufrag}", b"k")
        wrong_password = _check(f"{session.ufrag}:{ufrag}", b"wrong password")
        # not STUN, STUN naming no session: closed at once
        for probe in (b"\x16\xfe\xfd" + os.urandom(100), nobody):
            async with await trio.open_tcp_stream(HOST, port) as stream:
                await stream.send_all(frame(probe))
                await _closed_without_a_byte(stream)
        assert tcp.strangers == 2
        # a frame over the limit: closed
        async with await trio.open_tcp_stream(HOST, port) as stream:
            await stream.send_all((MAX_FRAME + 1).to_bytes(2, "big") + bytes(64))
            await _closed_without_a_byte(stream)
        assert tcp.bad_frames == 1
        # the right ufrag with a wrong password, or nothing at all: closed after the hello timeout
        async with await trio.open_tcp_stream(HOST, port) as stream, await trio.open_tcp_stream(HOST, port) as mute:
            await stream.send_all(frame(wrong_password))
            await _closed_without_a_byte(stream)
            await _closed_without_a_byte(mute)
        assert tcp.hello_timeouts == 2
        assert session.stats.bad_packets >= 1 and not session.links and session.link is None
        with trio.fail_after(5):
            await wait_until(lambda: not tcp.links)


async def test_connections_are_limited_per_address_and_in_all():
    async with serving(webrtc={"max_tcp_links_per_address": 2, "tcp_hello_timeout": 30}) as served:
        tcp = served.webrtc.tcp
        assert tcp is not None
        port = served.webrtc.port_number
        kept = [await trio.open_tcp_stream(HOST, port) for _ in range(2)]
        with trio.fail_after(5):
            await wait_until(lambda: len(tcp.links) == 2)
        async with await trio.open_tcp_stream(HOST, port) as third:
            await _closed_without_a_byte(third)
        assert tcp.refused == 1
        tcp.max_links_per_address, tcp.max_links = 10, 2
        async with await trio.open_tcp_stream(HOST, port) as fourth:
            await _closed_without_a_byte(fourth)
        assert tcp.refused == 2
        for stream in kept:
            await stream.aclose()
        with trio.fail_after(5):
            await wait_until(lambda: not tcp.links and not tcp.per_address)


async def test_sending_to_a_peer_that_does_not_read_never_waits_and_drops_past_the_bound():
    """The stream's task writes; the queue stays bounded; the drops are counted."""
    left, right = socket.socketpair()
    left.setblocking(False)
    for sock in (left, right):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    listener = socket.socket()
    port = TcpPort(listener, write_timeout=0.5)
    link = TcpLink(port, left, ("127.0.0.1", 1))
    packet = os.urandom(1200)
    try:
        results = [link.send(packet) for _ in range(QUEUE_FRAMES + 200)]
        assert not all(results) and results[0]
        assert link.drops == results.count(False) >= 200
        assert len(link.queue) <= QUEUE_FRAMES
        # what was accepted arrives whole and in order once the peer reads
        right.setblocking(False)
        received = Deframer()
        frames: list[bytes] = []

        class _Router:
            def route_stun(self, data: bytes) -> None:
                return None

        async with trio.open_nursery() as nursery:
            port.links.add(link)
            port.per_address["127.0.0.1"] += 1
            nursery.start_soon(link.run, _Router())
            with trio.fail_after(10):
                while len(frames) < results.count(True):
                    await trio.lowlevel.wait_readable(right)
                    frames += received.feed(right.recv(65536))
            assert all(f == packet for f in frames)
            assert link.sent == results.count(True)
            # a peer that stops reading is closed after the write timeout
            while link.send(packet):
                pass
            with trio.fail_after(5):
                await wait_until(lambda: link.closed)
        assert link.end_reason is not None and "read nothing" in link.end_reason
        assert not link.send(packet)
    finally:
        right.close()
        listener.close()


# ---------------------------------------------------------------------- Chromium over ICE-TCP


@contextlib.asynccontextmanager
async def tcp_only_server() -> AsyncIterator[tuple[Engine, RtmpServer, HttpServer, WebRtcServer]]:
    rtmp = RtmpServer(HOST, 0)
    http = HttpServer(HOST, 0)
    webrtc = WebRtcServer(HOST, 0, transports=("tcp",))
    builder = (
        Engine.builder()
        .application(AppSpec("live"))
        .protocol(rtmp)
        .protocol(http)
        .protocol(webrtc)
        .observer(AudioBridge())
    )
    async with builder.build() as engine:
        yield engine, rtmp, http, webrtc


@pytest.mark.interop
async def test_chromium_publishes_whip_over_ice_tcp_only():
    from tests._browser import FAKE_MEDIA, blocking, browser
    from tests._webrtc import WHIP_PUBLISH, wait_stream

    async with tcp_only_server() as (engine, rtmp, http, webrtc), browser(*FAKE_MEDIA) as driver:
        with trio.fail_after(60):
            await blocking(driver.get, f"http://{HOST}:{http.port}/api/server")
            started = await blocking(
                driver.execute_async_script, WHIP_PUBLISH, f"http://{HOST}:{http.port}/live/web/whip", None
            )
            assert started.get("ok"), started
            await wait_stream(engine, "live/web")
        (session,) = webrtc.sessions.values()
        assert session.link is not None and not session.addresses
        assert session.stats.packets_received > 0 and webrtc.port.received == 0


@pytest.mark.interop
async def test_chromium_plays_whep_over_ice_tcp_only():
    from tests._browser import FAKE_MEDIA, blocking, browser
    from tests._ffmpeg import run_tool
    from tests._webrtc import WHEP_PLAY, ffmpeg_rtmp_publish, inbound, until_stats, wait_stream

    async with tcp_only_server() as (engine, rtmp, http, webrtc):
        args = ffmpeg_rtmp_publish(
            f"rtmp://{HOST}:{rtmp.port}/live/cam",
            video=("-c:v", "libx264", "-profile:v", "baseline", "-tune", "zerolatency", "-bf", "0"),
        )
        async with run_tool(args), browser(*FAKE_MEDIA, "--mute-audio") as driver:
            with trio.fail_after(60):
                await wait_stream(engine, "live/cam")
                await blocking(driver.get, f"http://{HOST}:{http.port}/api/server")
                started = await blocking(
                    driver.execute_async_script, WHEP_PLAY, f"http://{HOST}:{http.port}/live/cam/whep", None, None
                )
                assert started.get("ok"), started
                found = await until_stats(driver, lambda s: inbound(s, "video").get("framesDecoded", 0) >= 50)
            (session,) = webrtc.sessions.values()
            assert session.link is not None and not session.addresses  # media went over TCP only
            assert session.stats.packets_sent > 0
            assert webrtc.port.received == 0
        assert found["state"] == "connected"
        assert inbound(found, "video")["frameWidth"] == 640
