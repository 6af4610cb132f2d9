"""The WebRTC worker end to end in one process: WHEP and WHIP with the project's own clients
(real ICE, DTLS, SRTP over loopback UDP), every refusal of the HTTP exchange, and the attacker's
view of the shared UDP port."""

from __future__ import annotations

import os
import socket

import httpx
import pytest
import trio

from arcly_trio import AppSpec
from arcly_trio.clients.webrtc import open_whep_player, open_whip_publisher
from arcly_trio.core.errors import RemoteRefused
from arcly_trio.core.frame import FrameKind
from arcly_trio.kernel.auth import TokenAuthenticator
from arcly_trio.protocols.webrtc import stun
from tests._net import HOST
from tests._serving import healthy_stream, serving, wait_until
from tests._webrtc import post_sdp, sdp_offer


async def test_whep_plays_a_published_stream(demo_frames):
    async with serving(webrtc={}) as served, trio.open_nursery() as nursery:
        await healthy_stream(served.engine, demo_frames, nursery, "live/cam")
        with trio.fail_after(20):
            async with open_whep_player(f"http://{HOST}:{served.http.port}/live/cam/whep") as player:
                await player.wait_frames(20)
                assert player.video().keyframes >= 1
                assert player.video().codec == "h264"
                sessions = served.engine.sessions
                (session,) = [s for s in sessions if s.protocol == "whep"]
                assert session.role == "play"
                details = served.webrtc.session_details(session.id)
                assert details is not None and details["packets_sent"] > 0
        await wait_until(lambda: not served.webrtc.sessions, timeout=5)
        nursery.cancel_scope.cancel()


async def test_two_viewers_send_the_same_packets_each_with_its_own_header(demo_frames):
    """Packetized once per stream: what two WHEP viewers resend on a NACK (their send history)
    is the same packet objects, not a copy per viewer; their sequence numbers are their own."""
    async with serving(webrtc={}) as served, trio.open_nursery() as nursery:
        await healthy_stream(served.engine, demo_frames, nursery, "live/cam")
        url = f"http://{HOST}:{served.http.port}/live/cam/whep"
        with trio.fail_after(20):
            async with open_whep_player(url) as first, open_whep_player(url) as second:
                await first.wait_frames(20)
                await second.wait_frames(20)
                one, two = (session.sink.video for session in served.webrtc.sessions.values())
                sent = [
                    {
                        id(packet)
                        for n in range(track.sequence - 200, track.sequence)
                        if (packet := track.history.get(n))
                    }
                    for track in (one, two)
                ]
                assert len(sent[0] & sent[1]) >= 20  # the same shared packets in both histories (a copy: none)
        nursery.cancel_scope.cancel()


async def test_whip_publishes_into_the_kernel(demo_frames):
    video = [f for f in demo_frames if f.kind is FrameKind.VIDEO]
    async with serving(webrtc={}) as served:
        with trio.fail_after(20):
            async with open_whip_publisher(f"http://{HOST}:{served.http.port}/live/cam/whip") as publisher:
                async with served.engine.subscribe("live/cam") as subscription:
                    sent = 0
                    received = []
                    async with trio.open_nursery() as nursery:

                        async def feed() -> None:
                            nonlocal sent
                            for frame in video[:60]:
                                await publisher.send(frame)
                                sent += 1
                                await trio.sleep(0.01)

                        nursery.start_soon(feed)
                        async for frame in subscription:
                            received.append(frame)
                            if sum(1 for f in received if f.is_video and not f.config) >= 20:
                                nursery.cancel_scope.cancel()
                                break
        configs = [f for f in received if f.config and f.is_video]
        assert configs and configs[0].codec == "h264"
        media = [f for f in received if f.is_video and not f.config]
        assert media[0].keyframe
        sent_media = [f for f in video if not f.config]
        # the timeline survives RTP: the same presentation times, relative to the first frame
        assert [f.pts - media[0].pts for f in media] == [f.pts - sent_media[0].pts for f in sent_media[: len(media)]]


async def test_refusals_are_http_answers_never_500():
    auth = TokenAuthenticator(publish_token="pub", play_token="view")
    async with serving(AppSpec("live"), webrtc={}, authenticator=auth) as served:
        port = served.http.port
        offer = sdp_offer()
        assert (await post_sdp(port, "/live/cam/whep", offer, {"content-type": "text/plain"})).status_code == 415
        assert (await post_sdp(port, "/live/cam/whep", b"v=0\r\n" + b"a=x\r\n" * 20000)).status_code == 413
        bad = await post_sdp(port, "/live/cam/whep", "this is not SDP")
        assert bad.status_code == 400 and "SDP" in bad.text
        assert (await post_sdp(port, "/live/cam/whip", sdp_offer(send=True))).status_code == 401
        # a play credential never publishes
        refused = await post_sdp(port, "/live/cam/whip", sdp_offer(send=True), {"authorization": "Bearer view"})
        assert refused.status_code == 403
        assert (await post_sdp(port, "/live/cam/whep", offer, {"authorization": "Bearer view"})).status_code == 404
        assert (await post_sdp(port, "/nope/cam/whep", offer)).status_code == 404
        vp8_only = sdp_offer(send=True).replace("H264/90000", "VP8/90000").replace("opus/48000/2", "PCMU/8000")
        unusable = await post_sdp(port, "/live/cam/whip", vp8_only, {"authorization": "Bearer pub"})
        assert unusable.status_code == 406, unusable.text
        async with httpx.AsyncClient(timeout=5) as client:
            gone = await client.delete(f"http://{HOST}:{port}/live/cam/whep/nosuchsession")
        assert gone.status_code == 404


async def test_delete_ends_the_session():
    async with serving(webrtc={}) as served:
        port = served.http.port
        answer = await post_sdp(port, "/live/cam/whip", sdp_offer(send=True))
        assert answer.status_code == 201, answer.text
        location = answer.headers["location"]
        assert location.startswith("/live/cam/whip/")
        assert "a=ice-lite" in answer.text
        assert served.webrtc.sessions
        async with httpx.AsyncClient(timeout=5) as client:
            assert (await client.delete(f"http://{HOST}:{port}{location}")).status_code == 200
        with trio.fail_after(5):
            await wait_until(lambda: not served.webrtc.sessions)


async def test_a_session_that_never_connects_ends_after_the_handshake_window():
    async with serving(webrtc={"handshake_timeout": 0.5}) as served:
        answer = await post_sdp(served.http.port, "/live/cam/whip", sdp_offer(send=True))
        assert answer.status_code == 201
        with trio.fail_after(5):
            await wait_until(lambda: not served.webrtc.sessions)
        assert not served.engine.streams() or not any(s.publishing for s in served.engine.streams())


async def test_sessions_per_address_are_limited():
    async with serving(webrtc={"max_sessions_per_address": 2}) as served:
        port = served.http.port
        for stream in ("a", "b"):
            assert (await post_sdp(port, f"/live/{stream}/whip", sdp_offer(send=True))).status_code == 201
        third = await post_sdp(port, "/live/c/whip", sdp_offer(send=True))
        assert third.status_code == 429


async def test_datagrams_from_strangers_get_nothing_back():
    """No answer, no state for STUN that names no session, fails integrity, or is not STUN."""
    async with serving(webrtc={}) as served:
        answer = await post_sdp(served.http.port, "/live/cam/whip", sdp_offer(send=True))
        assert answer.status_code == 201
        session = next(iter(served.webrtc.sessions.values()))
        udp = served.webrtc.port_number
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        try:
            probes = [
                os.urandom(200),
                b"\x16\xfe\xfd" + os.urandom(100),  # a DTLS-looking record
                stun.build_stun(
                    stun.BINDING, stun.REQUEST, os.urandom(12), [(stun.USERNAME, b"nobody:x")], integrity_key=b"k"
                ),
                stun.build_stun(
                    stun.BINDING,
                    stun.REQUEST,
                    os.urandom(12),
                    [(stun.USERNAME, f"{session.ufrag}:x".encode())],
                    integrity_key=b"wrong password",
                ),
            ]
            before = served.webrtc.unrouted
            for probe in probes:
                sock.sendto(probe, (HOST, udp))
            with trio.fail_after(5):
                await wait_until(lambda: served.webrtc.unrouted >= before + 3 and session.stats.bad_packets >= 1)
            await trio.sleep(0.2)
            with pytest.raises(BlockingIOError):
                sock.recvfrom(2048)
            assert not session.addresses
        finally:
            sock.close()


async def test_refused_whep_client_gets_remote_refused():
    async with serving(webrtc={}) as served:
        with trio.fail_after(10), pytest.raises(RemoteRefused, match="404"):  # noqa: PT012
            async with open_whep_player(f"http://{HOST}:{served.http.port}/live/none/whep"):
                pass


async def test_the_health_checks_say_where_each_worker_listens() -> None:
    """``listening:webrtc`` names its UDP address (it showed the socket object's repr)."""
    async with serving(webrtc={}) as served:
        with trio.fail_after(10):
            checks = {c.name: c.document() for c in await served.engine.health.run()}
        assert checks["listening:webrtc"]["ok"] and checks["listening:http"]["ok"]
        assert checks["listening:webrtc"]["detail"] == f"{HOST}:{served.webrtc.port_number}"
        assert checks["listening:http"]["detail"] == f"{HOST}:{served.http.port}"
