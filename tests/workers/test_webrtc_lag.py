"""Slow WHEP viewers (issue 22): the kernel's lag policy, as for every other sink. A viewer whose
path keeps refusing (an ICE-TCP viewer that stops reading; a UDP socket failing with ENOBUFS)
drops to the next keyframe, counted; past the application's lag budget it is evicted (counted,
the session closed); an ICE-TCP viewer that reads nothing for the link's write timeout loses its
session; a short burst is only a drop to the next keyframe. Real sessions over loopback (the
project's WHEP client, ICE-TCP or UDP), each under ``fail_after``."""

from __future__ import annotations

import errno
import socket
from typing import Any

import trio

from arcly_trio import AppSpec
from arcly_trio.clients.webrtc import WhepPlayer, open_whep_player
from arcly_trio.kernel.events import SubscriberEvicted, SubscriberLagged
from arcly_trio.testing import CountingObserver
from arcly_trio.workers.webrtc import tcp
from arcly_trio.workers.webrtc.viewer import WhepSession
from tests._net import HOST
from tests._serving import Served, healthy_stream, serving, wait_until


class _Refusing:
    """The UDP port's socket while the kernel refuses every send (``ENOBUFS``: the queue is full)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def sendto(self, *args: Any) -> int:
        raise OSError(errno.ENOBUFS, "No buffer space available")

    sendmsg = sendto

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


def _session(served: Served) -> WhepSession:
    (session,) = served.webrtc.sessions.values()
    assert isinstance(session, WhepSession)
    return session


def _stop_reading(served: Served, player: WhepPlayer) -> None:
    """Small socket buffers at both ends of the viewer's ICE-TCP link (the player reads nothing
    after the handshake: ``receive=False``), so its backlog builds in a second."""
    (link,) = served.webrtc.tcp.links  # type: ignore[union-attr]
    link.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    player.link.socket.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)


async def test_an_ice_tcp_viewer_that_stops_reading_is_evicted_past_the_lag_budget(demo_frames, monkeypatch):
    monkeypatch.setattr(tcp, "QUEUE_FRAMES", 32)
    monkeypatch.setattr(tcp, "QUEUE_BYTES", 16 * 1024)
    observer = CountingObserver()
    app = AppSpec("live", lag_budget=5)
    async with (
        serving(app, webrtc={"transports": ("tcp",)}, observer=observer) as served,
        trio.open_nursery() as nursery,
    ):
        await healthy_stream(served.engine, demo_frames, nursery, "live/cam")
        url = f"http://{HOST}:{served.http.port}/live/cam/whep"
        with trio.fail_after(30):
            async with open_whep_player(url, transport="tcp", receive=False) as player:
                session = _session(served)
                _stop_reading(served, player)
                await wait_until(lambda: session.end_reason is not None)
                assert session.end_reason is not None and session.end_reason.startswith("evicted")
                assert session.sink.refused >= 1
                assert session.subscriber is not None and session.subscriber.dropped > 5
        (evicted,) = observer.of_type(SubscriberEvicted)
        assert evicted.lag_budget == 5  # type: ignore[attr-defined]
        await wait_until(lambda: not served.webrtc.sessions, timeout=5)
        nursery.cancel_scope.cancel()


async def test_an_ice_tcp_viewer_that_reads_nothing_for_the_write_timeout_loses_its_session(demo_frames):
    async with serving(webrtc={"transports": ("tcp",)}) as served, trio.open_nursery() as nursery:
        await healthy_stream(served.engine, demo_frames, nursery, "live/cam")
        assert served.webrtc.tcp is not None
        served.webrtc.tcp.write_timeout = 0.5
        url = f"http://{HOST}:{served.http.port}/live/cam/whep"
        with trio.fail_after(30):
            async with open_whep_player(url, transport="tcp", receive=False) as player:
                session = _session(served)
                _stop_reading(served, player)
                await wait_until(lambda: session.end_reason is not None)
                assert session.end_reason == "evicted: the peer read nothing for 0.5 s"
                assert served.webrtc.status()["tcp_stalled"] == 1
        nursery.cancel_scope.cancel()


async def test_a_short_burst_of_refused_sends_only_drops_to_the_next_keyframe(demo_frames):
    observer = CountingObserver()
    async with serving(AppSpec("live", lag_budget=10_000), webrtc={}, observer=observer) as served:
        async with trio.open_nursery() as nursery:
            await healthy_stream(served.engine, demo_frames, nursery, "live/cam")
            url = f"http://{HOST}:{served.http.port}/live/cam/whep"
            with trio.fail_after(30):
                async with open_whep_player(url) as player:
                    await player.wait_frames(5)
                    session = _session(served)
                    subscriber = session.subscriber
                    assert subscriber is not None
                    port = served.webrtc.port
                    real = port.socket
                    port.socket = _Refusing(real)  # type: ignore[assignment]
                    await wait_until(lambda: subscriber.lagging)
                    port.socket = real
                    keyframes = player.video().keyframes
                    await wait_until(lambda: not subscriber.lagging)  # resumed at the next keyframe
                    await wait_until(lambda: player.video().keyframes > keyframes)
                    assert subscriber.dropped > 0 and session.sink.refused == 1
                    assert session.end_reason is None and session in served.webrtc.sessions.values()
            nursery.cancel_scope.cancel()
    assert observer.of_type(SubscriberLagged) and not observer.of_type(SubscriberEvicted)
