"""The RTMP worker (``workers/rtmp/``: ``server.py``, ``connection.py``, ``play.py``) in one process:
ingest without copies, an RTMP player gets the publisher's message bodies byte for byte.
"""

from __future__ import annotations

import trio
import trio.testing

from arcly_trio import Engine
from arcly_trio.core.frame import FrameKind
from arcly_trio.media import flv
from arcly_trio.protocols.rtmp import MediaMessage
from arcly_trio.workers.rtmp import RtmpServer
from tests._rtmp import RawClient


async def test_an_rtmp_player_gets_the_publishers_message_bodies() -> None:
    server = RtmpServer("127.0.0.1", 0)
    engine = Engine.builder().application("live").protocol(server).build()
    avc_config = b"\x17\x00\x00\x00\x00\x01\x64\x00\x1f\xff\xe1\x00\x04abcd\x01\x00\x02ef"
    bodies = [b"\x17\x01\x00\x00\x42" + bytes(range(256)) * 40, b"\x27\x01\x00\x00\x21" + b"x" * 3000]
    with trio.fail_after(10):
        async with engine:
            publisher = await RawClient.open(server.port)  # type: ignore[arg-type]
            await publisher.connect("live", server.port)  # type: ignore[arg-type]
            stream_id = await publisher.create_stream()
            publisher.session.publish(stream_id, "s")
            await publisher.flush()
            await publisher.command()
            publisher.session.send_message(6, 9, stream_id, 0, avc_config)
            for i, body in enumerate(bodies):
                publisher.session.send_message(6, 9, stream_id, 40 * i, body)
            await publisher.flush()
            player = await RawClient.open(server.port)  # type: ignore[arg-type]
            await player.connect("live", server.port)  # type: ignore[arg-type]
            player.session.play(1, "s")
            await player.flush()
            got = []
            while len(got) < 3:
                event = await player.read_event(MediaMessage)
                assert isinstance(event, MediaMessage)
                got.append(event.payload)
            stream = engine.stream("live/s")
            cached = [f for f in stream.gop.replay().frames if f.kind is FrameKind.VIDEO and not f.config]
            await publisher.aclose()
            await player.aclose()
    assert got == [avc_config, *bodies]
    assert [flv.frame_body(f) for f in cached] == bodies
