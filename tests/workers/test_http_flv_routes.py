"""HTTP-FLV and WebSocket-FLV egress, in process: header flags, instant start on a keyframe,
shared tag bytes, batched writes, end of stream, disconnects freeing subscriptions, shutdown."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import h11
import pytest
import trio
import trio_websocket

from arcly_trio import AppSpec, Engine, Frame, FrameKind, PublishEnded, StreamKey
from arcly_trio.media import flv
from arcly_trio.testing import audio, audio_config
from arcly_trio.workers.http import HttpServer
from tests._serving import serving


class FlvClient:
    """An HTTP-FLV player on h11: parses the body with FlvReader, counts HTTP chunks."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.conn = h11.Connection(h11.CLIENT)
        self.reader = flv.FlvReader()
        self.status = 0
        self.headers: dict[str, str] = {}
        self.header: flv.FlvHeader | None = None
        self.tags: list[flv.FlvTag] = []
        self.chunks = 0
        self.ended = False

    @classmethod
    @asynccontextmanager
    async def open(cls, port: int, target: str) -> AsyncIterator[FlvClient]:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            client = cls(stream)
            request = h11.Request(method="GET", target=target, headers=[("host", "127.0.0.1")])
            await stream.send_all(client.conn.send(request) + client.conn.send(h11.EndOfMessage()))
            yield client

    async def pump(self) -> bool:
        """Process the next network read; False once the response has ended."""
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                if self.ended:
                    return False
                self.conn.receive_data(await self.stream.receive_some(65536))
                continue
            if isinstance(event, h11.Response):
                self.status = event.status_code
                self.headers = {k.decode(): v.decode() for k, v in event.headers}
                return True
            elif isinstance(event, h11.Data):
                if event.chunk_end:
                    self.chunks += 1
                self.reader.receive_data(event.data)
                self._drain()
                return True
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                self.ended = True
                self.reader.receive_data(b"")
                self._drain()
                return False

    def _drain(self) -> None:
        while True:
            event = self.reader.next_event()
            if event is None or isinstance(event, flv.FlvEnd):
                return
            if isinstance(event, flv.FlvHeader):
                self.header = event
            else:
                self.tags.append(event)

    async def read_until(self, predicate: Any) -> None:
        while not predicate(self):
            if not await self.pump():
                return

    def frames(self) -> list[Frame]:
        return [frame for tag in self.tags for frame in flv.tag_to_frames(tag)]


def first_picture(frames: list[Frame]) -> Frame:
    return next(f for f in frames if f.kind is FrameKind.VIDEO and not f.config)


async def test_http_flv_late_joiner_starts_on_a_keyframe(demo_frames) -> None:  # type: ignore[no-untyped-def]
    async with serving() as (engine, _, server):
        async with engine.publish("live/demo") as publisher:
            published = [f for f in demo_frames if f.dts < 5000]
            for frame in published:
                await publisher.send(frame)
            await trio.sleep(0.05)
            with trio.fail_after(10):
                async with FlvClient.open(server.port, "/live/demo.flv") as client:
                    await client.read_until(lambda c: len(c.tags) >= 40)
        assert client.status == 200
        assert client.headers["content-type"] == "video/x-flv"
        assert client.headers["transfer-encoding"] == "chunked"
        assert client.header is not None and client.header.has_audio and client.header.has_video
        frames = client.frames()
        # onMetaData, then both configs, then the GOP cache from its keyframe.
        assert frames[0].is_metadata
        assert {(f.kind, f.config) for f in frames[1:3]} == {(FrameKind.VIDEO, True), (FrameKind.AUDIO, True)}
        picture = first_picture(frames)
        assert picture.keyframe and picture.dts == 4000
        # The bytes are exactly the published frames' shared tags.
        replayed = [f for f in published if f.dts >= 4000 and not f.config]
        got = [f for f in frames if not f.config]
        assert [f.payload for f in got[: len(replayed)]] == [f.payload for f in replayed][: len(got)]


async def test_http_flv_header_flags_follow_the_stream(demo_frames) -> None:  # type: ignore[no-untyped-def]
    async with serving() as (engine, _, server):
        async with engine.publish("live/radio") as publisher:
            await publisher.send(audio_config(0))
            for ts in range(0, 500, 23):
                await publisher.send(audio(ts))
            with trio.fail_after(10):
                async with FlvClient.open(server.port, "/live/radio.flv") as client:
                    await wait_for_subscribers(engine, "live/radio", "http-flv", 1)
                    for ts in range(500, 1000, 23):  # no GOP cache without video: live audio only
                        await publisher.send(audio(ts))
                    await client.read_until(lambda c: c.header is not None and len(c.tags) >= 3)
        assert client.header is not None
        assert (client.header.has_audio, client.header.has_video) == (True, False)


async def test_http_flv_before_any_frame_waits_for_metadata_then_flags(demo_frames) -> None:  # type: ignore[no-untyped-def]
    # A player that joins an empty stream: the header waits for the metadata, which names both tracks.
    async with serving() as (engine, _, server):
        async with engine.publish("live/demo") as publisher:
            await publisher.send(Frame(FrameKind.AUDIO, "aac", 0, 0, b"\x12\x10", config=True))
            await trio.sleep(0)
            with trio.fail_after(10):
                async with FlvClient.open(server.port, "/live/demo.flv") as client:
                    await client.pump()  # response head
                    assert client.header is None
                    for frame in demo_frames[:30]:
                        await publisher.send(frame)
                    await client.read_until(lambda c: c.header is not None and len(c.tags) > 5)
        assert client.header is not None and client.header.has_video and client.header.has_audio


async def test_http_flv_writes_are_batched_and_the_body_ends_with_the_stream(demo_frames) -> None:  # type: ignore[no-untyped-def]
    async with serving() as (engine, _, server):
        with trio.fail_after(10):
            async with engine.publish("live/demo") as publisher:
                for frame in demo_frames[:3]:
                    await publisher.send(frame)
                client_cm = FlvClient.open(server.port, "/live/demo.flv")
                client = await client_cm.__aenter__()
                await client.read_until(lambda c: len(c.tags) >= 3)
                chunks_before = client.chunks
                burst = demo_frames[3:203]
                for frame in burst:  # one burst: the stream task hands it over in one batch
                    await publisher.send(frame)
                await client.read_until(lambda c: len(c.tags) >= 203)
                assert client.chunks - chunks_before <= 5, "frames were not batched into few writes"
            # The publisher left (no grace): the body ends with the final chunk.
            await client.read_until(lambda c: False)
            await client_cm.__aexit__(None, None, None)
        assert client.ended and len(client.tags) == len(demo_frames[:203])


async def wait_for_subscribers(engine: Engine, key: str, protocol: str, count: int) -> None:
    with trio.fail_after(3):
        while True:
            stats = engine.stream(StreamKey.parse(key)).stats()
            if stats.subscribers_by_protocol.get(protocol, 0) == count:
                return
            await trio.sleep(0.01)


@pytest.mark.parametrize("idle", [True, False], ids=["idle-stream", "live-stream"])
async def test_disconnect_frees_the_subscription_at_once(demo_frames, idle: bool) -> None:  # type: ignore[no-untyped-def]
    async with serving() as (engine, _, server):
        async with engine.publish("live/demo") as publisher, trio.open_nursery() as nursery:
            for frame in demo_frames[:50]:
                await publisher.send(frame)
            if not idle:

                async def feed() -> None:
                    for frame in demo_frames[50:]:
                        await publisher.send(frame)
                        await trio.sleep(0.01)

                nursery.start_soon(feed)
            with trio.fail_after(5):
                async with FlvClient.open(server.port, "/live/demo.flv") as client:
                    await client.read_until(lambda c: len(c.tags) >= 10)
                    await wait_for_subscribers(engine, "live/demo", "http-flv", 1)
                    assert server.connections == 1
            # The socket is closed: the server notices without having to write.
            await wait_for_subscribers(engine, "live/demo", "http-flv", 0)
            with trio.fail_after(3):
                while server.connections or server.open_connections:
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()


async def test_ws_flv_gives_a_valid_flv_byte_stream(demo_frames) -> None:  # type: ignore[no-untyped-def]
    async with serving() as (engine, _, server):
        async with engine.publish("live/demo") as publisher:
            for frame in demo_frames[:150]:
                await publisher.send(frame)
            reader = flv.FlvReader()
            header = None
            tags: list[flv.FlvTag] = []
            with trio.fail_after(10):
                url = f"ws://127.0.0.1:{server.port}/live/demo.flv?token=x"
                async with trio_websocket.open_websocket_url(url) as ws:
                    await wait_for_subscribers(engine, "live/demo", "ws-flv", 1)
                    for frame in demo_frames[150:350]:
                        await publisher.send(frame)
                    while len(tags) < 150:
                        message = await ws.get_message()
                        assert isinstance(message, bytes)
                        reader.receive_data(message)
                        while (event := reader.next_event()) is not None:
                            if isinstance(event, flv.FlvHeader):
                                header = event
                            else:
                                tags.append(event)
                await wait_for_subscribers(engine, "live/demo", "ws-flv", 0)
        assert header is not None and header.has_video and header.has_audio
        frames = [f for tag in tags for f in flv.tag_to_frames(tag)]
        assert frames[0].is_metadata
        picture = first_picture(frames)
        assert picture.keyframe
        by_payload = {f.payload for f in demo_frames}
        assert all(f.payload in by_payload for f in frames)


async def test_ws_flv_end_of_stream_closes_the_websocket(demo_frames) -> None:  # type: ignore[no-untyped-def]
    async with serving() as (engine, _, server):
        published, unpublish = trio.Event(), trio.Event()

        async def publish() -> None:
            async with engine.publish("live/demo") as publisher:
                for frame in demo_frames[:20]:
                    await publisher.send(frame)
                published.set()
                await unpublish.wait()

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(publish)
                await published.wait()
                async with trio_websocket.open_websocket_url(f"ws://127.0.0.1:{server.port}/live/demo.flv") as ws:
                    await ws.get_message()
                    unpublish.set()
                    with pytest.raises(trio_websocket.ConnectionClosed) as info:
                        while True:
                            await ws.get_message()
        assert info.value.reason.code == 1000


async def test_ws_flv_unknown_stream_is_refused_with_404() -> None:
    async with serving() as (engine, _, server):
        with trio.fail_after(5):
            with pytest.raises(trio_websocket.ConnectionRejected) as info:
                async with trio_websocket.open_websocket_url(f"ws://127.0.0.1:{server.port}/live/none.flv"):
                    pass
        assert info.value.status_code == 404
        assert b"live/none is not published" in (info.value.body or b"")


async def _raw_answer(port: int, request: bytes) -> bytes:
    """Send ``request`` as is on a new connection; everything the server answers until it closes."""
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(request)
            response = b""
            while chunk := await stream.receive_some(65536):
                response += chunk
    return response


async def test_bad_websocket_handshake_is_an_http_error(demo_frames) -> None:  # type: ignore[no-untyped-def]
    async with serving() as (engine, _, server):
        async with engine.publish("live/demo") as publisher:
            await publisher.send(demo_frames[0])
            request = (
                b"GET /live/demo.flv HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Version: 8\r\nSec-WebSocket-Key: abc\r\n\r\n"
            )
            response = await _raw_answer(server.port, request)
        assert response.startswith(b"HTTP/1.1 426 ")
        assert b"sec-websocket-version: 13" in response.lower()


async def test_a_websocket_handshake_with_a_non_ascii_host_is_a_400_not_a_traceback(demo_frames, caplog) -> None:  # type: ignore[no-untyped-def]
    # found by the HTTP fuzz test: wsproto decodes Host as IDNA and raised UnicodeDecodeError
    # out of the handler (no answer at all, a traceback in the log)
    caplog.set_level(logging.INFO, logger="arcly_trio.http")
    async with serving() as (engine, _, server):
        async with engine.publish("live/demo") as publisher:
            await publisher.send(demo_frames[0])
            request = (
                b"GET /live/demo.flv HTTP/1.1\r\nHost: \x80\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            response = await _raw_answer(server.port, request)
    assert response.startswith(b"HTTP/1.1 400 "), response[:200]
    assert "Traceback" not in caplog.text


async def test_graceful_shutdown_ends_players_and_drains_connections(demo_frames, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.INFO, logger="arcly_trio.http")
    server = HttpServer("127.0.0.1", 0)
    engine = Engine.builder().application(AppSpec("live")).protocol(server).build()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(engine.serve)

            async def publish() -> None:
                with pytest.raises(PublishEnded):
                    async with engine.publish("live/demo") as publisher:
                        for frame in demo_frames:
                            await publisher.send(frame)
                            await trio.sleep(0.005)

            nursery.start_soon(publish)
            await trio.sleep(0.05)
            async with FlvClient.open(server.port, "/live/demo.flv") as client:
                await client.read_until(lambda c: len(c.tags) >= 10)
                started = trio.current_time()
                await engine.shutdown(grace=5)
                await client.read_until(lambda c: False)
            assert trio.current_time() - started < 2
            assert client.ended
            assert server.connections == 0


async def test_head_request_for_a_live_stream(http_get, demo_frames) -> None:  # type: ignore[no-untyped-def]
    async with serving() as (engine, _, server):
        async with engine.publish("live/demo") as publisher:
            await publisher.send(demo_frames[0])
            status, headers, body = await http_get(server.port, "/live/demo.flv", method="HEAD")
            assert status == 200 and headers["content-type"] == "video/x-flv" and body == b""
            await wait_for_subscribers(engine, "live/demo", "http-flv", 0)
