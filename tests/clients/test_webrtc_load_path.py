"""The WHEP player's load-generator options: ``receive=False`` leaves the socket to the caller
(the player still sends its receiver reports) and ``local_address`` sets the source address of
the HTTP exchanges, which the server counts sessions by (benchmarks/webrtc.py needs both)."""

from __future__ import annotations

import trio

from arcly_trio.clients.webrtc import open_whep_player
from arcly_trio.protocols.webrtc.demux import PacketKind, classify
from tests._net import HOST
from tests._serving import healthy_stream, serving, wait_until


async def test_receive_false_leaves_the_socket_to_the_caller_and_local_address_spreads_sessions(demo_frames):
    async with serving(webrtc={"max_sessions_per_address": 1}) as served, trio.open_nursery() as nursery:
        await healthy_stream(served.engine, demo_frames, nursery, "live/cam")
        url = f"http://{HOST}:{served.http.port}/live/cam/whep"
        with trio.fail_after(20):
            async with (
                open_whep_player(url, decrypt=False, receive=False, local_address="127.0.0.2") as first,
                open_whep_player(url, decrypt=False, receive=False, local_address="127.0.0.3") as second,
            ):
                assert served.webrtc.per_address == {"127.0.0.2": 1, "127.0.0.3": 1}
                connected = trio.current_time()
                for player in (first, second):
                    while True:  # the media comes to whoever reads the socket: here, this test
                        data, _ = await player.link.socket.recvfrom(2048)
                        if classify(data) is PacketKind.RTP:
                            break
                    assert player.video().packets == 0  # the player itself read nothing

                sessions = list(served.webrtc.sessions.values())
                # what keeps the sessions alive: the players' receiver reports, heard after the handshake
                await wait_until(lambda: all(s.last_heard > connected for s in sessions), timeout=5)
        await wait_until(lambda: not served.webrtc.sessions, timeout=5)
        nursery.cancel_scope.cancel()
