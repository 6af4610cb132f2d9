"""The WebRTC worker's figures in ``/metrics``: sessions per kind, unrouted datagrams, send
drops, NACKs and retransmissions, scraped over HTTP from a running engine whose WHEP viewer
(the project's client, real ICE/DTLS/SRTP on loopback) asks for retransmissions."""

from __future__ import annotations

import os
import socket

import trio
from prometheus_client.parser import text_string_to_metric_families

from arcly_trio.clients.webrtc import open_whep_player
from arcly_trio.ops import PrometheusObserver
from arcly_trio.protocols.webrtc import rtcp
from tests._net import HOST
from tests._serving import healthy_stream, serving, wait_until
from tests._webrtc import post_sdp, sdp_offer

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_metrics_show_webrtc_sessions_unrouted_drops_and_nacks(demo_frames, http_get) -> None:  # type: ignore[no-untyped-def]
    metrics = PrometheusObserver()
    async with serving(webrtc={}, observer=metrics) as served, trio.open_nursery() as nursery:  # type: ignore[arg-type]
        webrtc = served.webrtc
        assert webrtc is not None
        first = samples(metrics.render().decode())
        assert first[("arcly_webrtc_sessions", (("kind", "whep"),))] == 0
        assert first[("arcly_webrtc_sessions", (("kind", "whip"),))] == 0
        assert first[("arcly_webrtc_unrouted_datagrams_total", ())] == 0
        await healthy_stream(served.engine, demo_frames, nursery, "live/cam")
        assert (await post_sdp(served.http.port, "/live/other/whip", sdp_offer(send=True))).status_code == 201
        with trio.fail_after(20):
            async with open_whep_player(f"http://{HOST}:{served.http.port}/live/cam/whep") as player:
                await player.wait_frames(10)
                video_ssrc = next(ssrc for ssrc, track in player.tracks.items() if track.kind == "video")
                highest = player.video().highest or 0
                wanted = [(highest - n) & 0xFFFF for n in range(5)]
                await player.link.send_rtcp(rtcp.nack(player.ssrc, video_ssrc, wanted))
                (session,) = [s for s in webrtc.sessions.values() if s.kind == "whep"]
                await wait_until(lambda: session.stats.retransmitted >= 1)
                stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                try:
                    for _ in range(7):
                        stranger.sendto(os.urandom(100), (HOST, webrtc.port_number))
                finally:
                    stranger.close()
                await wait_until(lambda: webrtc.unrouted >= 7)
                status, headers, body = await http_get(served.http.port, "/metrics")
                assert status == 200
                found = samples(body.decode())
                assert found[("arcly_webrtc_sessions", (("kind", "whep"),))] == 1
                assert found[("arcly_webrtc_sessions", (("kind", "whip"),))] == 1
                assert found[("arcly_webrtc_unrouted_datagrams_total", ())] == webrtc.unrouted >= 7
                assert found[("arcly_webrtc_send_drops_total", ())] == webrtc.port.send_drops
                assert found[("arcly_webrtc_nacks_total", ())] >= 5
                assert found[("arcly_webrtc_retransmissions_total", ())] == session.stats.retransmitted >= 1
            # counters: the ended session's NACKs and retransmissions stay in the totals
            await wait_until(lambda: not any(s.kind == "whep" for s in webrtc.sessions.values()))
            after = samples(metrics.render().decode())
            assert after[("arcly_webrtc_sessions", (("kind", "whep"),))] == 0
            assert after[("arcly_webrtc_nacks_total", ())] >= found[("arcly_webrtc_nacks_total", ())]
            assert (
                after[("arcly_webrtc_retransmissions_total", ())] == found[("arcly_webrtc_retransmissions_total", ())]
            )
        nursery.cancel_scope.cancel()


async def test_no_webrtc_series_without_a_webrtc_worker() -> None:
    metrics = PrometheusObserver()
    async with serving(observer=metrics):  # type: ignore[arg-type]
        assert "arcly_webrtc" not in metrics.render().decode()
