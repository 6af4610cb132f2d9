"""RTMP flow control: a player's Set Peer Bandwidth and acknowledgements are honoured."""

from __future__ import annotations

import trio
import trio.testing

from arcly_trio import AppSpec, Engine
from arcly_trio.protocols.rtmp.messages import encode_acknowledgement, encode_set_peer_bandwidth
from arcly_trio.testing import delta, keyframe, video_config
from arcly_trio.workers.rtmp import RtmpServer
from tests._rtmp import RawClient


async def _read_for(client: RawClient, seconds: float) -> None:
    with trio.move_on_after(seconds):
        while True:
            data = await client.stream.receive_some(65536)
            assert data
            client.session.receive_data(data)
            client.events.extend(client.session.events())


async def test_player_gets_no_more_unacknowledged_bytes_than_its_peer_bandwidth() -> None:
    server = RtmpServer("127.0.0.1", 0)
    engine = Engine.builder().application(AppSpec("live", subscriber_queue=64)).protocol(server).build()
    with trio.fail_after(20):
        async with engine, engine.publish("live/s") as pub:
            await pub.send(video_config())
            await pub.send(keyframe(0, size=10_000))
            client = await RawClient.open(server.port)  # type: ignore[arg-type]
            await client.handshake()
            client.session.connect("live")
            client.session.create_stream()
            client.session.play(1, "s")
            client.session.send_message(2, 6, 0, 0, encode_set_peer_bandwidth(30_000, 2))
            await client.flush()
            await _read_for(client, 0.5)
            start = client.session.bytes_received
            for ts in range(1, 21):  # 200 kB of video, one frame at a time
                await pub.send(delta(ts * 33, size=10_000))
                await trio.sleep(0.01)
            await _read_for(client, 0.5)
            held_back = client.session.bytes_received
            # At most the bandwidth plus one write beyond the last acknowledgement (none yet).
            assert held_back - start < 30_000 + 2 * 10_500, held_back - start
            client.session.send_message(2, 3, 0, 0, encode_acknowledgement(held_back))
            await client.flush()
            for ts in range(21, 31):
                await pub.send(delta(ts * 33, size=10_000))
                await trio.sleep(0.01)
            await _read_for(client, 0.5)
            assert client.session.bytes_received - held_back > 20_000  # flowing again
            await client.aclose()


async def test_a_player_without_peer_bandwidth_is_not_limited() -> None:
    server = RtmpServer("127.0.0.1", 0)
    engine = Engine.builder().application("live").protocol(server).build()
    with trio.fail_after(20):
        async with engine, engine.publish("live/s") as pub:
            await pub.send(video_config())
            await pub.send(keyframe(0, size=10_000))
            client = await RawClient.open(server.port)  # type: ignore[arg-type]
            await client.handshake()
            client.session.connect("live")
            client.session.create_stream()
            client.session.play(1, "s")
            await client.flush()
            await _read_for(client, 0.3)
            start = client.session.bytes_received
            for ts in range(1, 21):
                await pub.send(delta(ts * 33, size=10_000))
            await _read_for(client, 0.5)
            assert client.session.bytes_received - start >= 200_000
            await client.aclose()
