"""The RTMP client: the sans-IO conversation against the sans-IO server session, and the trio
client against the real RTMP worker over loopback.

Sans-IO: bytes are pumped between :class:`RtmpClient` and :class:`ServerSession` in pieces
hypothesis chooses; the conversation reaches publishing or playing whatever the split, every
refusal surfaces as the right event, and the goodbye reaches the server. Trio: frames published
with ``open_rtmp_publisher`` come out of ``open_rtmp_player`` identical (the demo clip: H.264,
AAC, metadata), refusals raise ``RemoteRefused`` with the server's code, a server that goes
away is ``ConnectionLost``, and the client answers the server's acknowledgement window.
"""

from __future__ import annotations

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from arcly_trio import Engine, TokenAuthenticator
from arcly_trio.clients import open_rtmp_player, open_rtmp_publisher
from arcly_trio.core.errors import ConnectionLost, RemoteRefused
from arcly_trio.protocols.rtmp import (
    ClientState,
    ConnectRequest,
    PlayRequest,
    PublishRequest,
    Refused,
    RtmpClient,
    ServerSession,
    StreamDeleted,
    StreamEnded,
    StreamStarted,
    StreamUnpublishRequested,
    parse_rtmp_url,
)
from arcly_trio.protocols.rtmp.handshake import ServerHandshake
from arcly_trio.protocols.rtmp.url import fill_template
from arcly_trio.workers.rtmp import RtmpServer

HOST = "127.0.0.1"


# ----------------------------------------------------------------------------- sans-IO


class Pair:
    """A client and a server session joined in memory; bytes move in chosen piece sizes."""

    def __init__(self, url: str, mode: str, sizes: list[int]) -> None:
        self.client = RtmpClient(parse_rtmp_url(url), mode)
        self.handshake: ServerHandshake | None = ServerHandshake()
        self.server = ServerSession()
        self.sizes = sizes or [65536]
        self.turn = 0
        self.to_server = bytearray(self.client.initiate())
        self.client_events: list[object] = []
        self.server_events: list[object] = []

    def _piece(self, buffer: bytearray) -> bytes:
        size = self.sizes[self.turn % len(self.sizes)]
        self.turn += 1
        piece = bytes(buffer[:size])
        del buffer[:size]
        return piece

    def pump(self, decide) -> None:  # type: ignore[no-untyped-def]
        to_client = bytearray()
        for _ in range(10_000):
            if not self.to_server and not to_client:
                self.to_server += self.client.data_to_send()
                to_client += self.server.data_to_send()
                if not self.to_server and not to_client:
                    return
            if self.to_server:
                piece = self._piece(self.to_server)
                if self.handshake is not None:
                    self.handshake.receive_data(piece)
                    to_client += self.handshake.data_to_send()
                    if self.handshake.complete:
                        self.server.receive_data(self.handshake.leftover())
                        self.handshake = None
                else:
                    self.server.receive_data(piece)
                for event in self.server.events():
                    self.server_events.append(event)
                    decide(self.server, event)
                to_client += self.server.data_to_send()
            if to_client:
                self.client.receive_data(self._piece(to_client))
                while (event := self.client.next_event()) is not None:
                    self.client_events.append(event)
        raise AssertionError("the conversation did not settle")


def accept_all(server: ServerSession, event: object) -> None:
    if isinstance(event, ConnectRequest):
        server.accept_connect()
    elif isinstance(event, PublishRequest):
        server.accept_publish(event.stream_id)
    elif isinstance(event, PlayRequest):
        server.accept_play(event.stream_id)


@settings(max_examples=60, deadline=None)
@given(mode=st.sampled_from(["publish", "play"]), sizes=st.lists(st.integers(1, 3000), max_size=6))
def test_the_conversation_reaches_the_stream_whatever_the_split(mode: str, sizes: list[int]) -> None:
    pair = Pair("rtmp://example.org/live/cam?token=t", mode, sizes)
    pair.pump(accept_all)
    assert pair.client.state is (ClientState.PUBLISHING if mode == "publish" else ClientState.PLAYING)
    assert pair.client.digest  # our server answers a digest handshake with a digest
    started = [e for e in pair.client_events if isinstance(e, StreamStarted)]
    assert started == [StreamStarted(pair.client.stream_id, mode)]
    connect = next(e for e in pair.server_events if isinstance(e, ConnectRequest))
    assert connect.app == "live" and connect.tc_url == "rtmp://example.org:1935/live"
    assert "hvc1" in connect.command_object["fourCcList"]  # Enhanced RTMP announced
    request = next(e for e in pair.server_events if isinstance(e, (PublishRequest, PlayRequest)))
    assert request.name == "cam" and request.query == {"token": "t"}
    assert pair.server.in_chunk_size == 4096  # our Set Chunk Size arrived before the commands
    # The goodbye reaches the server.
    pair.client.close()
    pair.pump(accept_all)
    assert any(isinstance(e, StreamDeleted) for e in pair.server_events)
    if mode == "publish":
        assert any(isinstance(e, StreamUnpublishRequested) for e in pair.server_events)
    assert pair.client.state is ClientState.CLOSED


@pytest.mark.parametrize("stage", ["connect", "publish", "play"])
def test_refusals_are_events_with_the_server_code(stage: str) -> None:
    mode = "play" if stage == "play" else "publish"

    def refuse(server: ServerSession, event: object) -> None:
        if isinstance(event, ConnectRequest):
            if stage == "connect":
                server.reject_connect("go away")
            else:
                server.accept_connect()
        elif isinstance(event, PublishRequest):
            server.reject_publish(event.stream_id, "NetStream.Publish.Denied", "bad token")
        elif isinstance(event, PlayRequest):
            server.reject_play(event.stream_id)

    pair = Pair("rtmp://h/live/x", mode, [])
    pair.pump(refuse)
    refused = [e for e in pair.client_events if isinstance(e, Refused)]
    assert len(refused) == 1 and refused[0].stage == stage
    assert (
        refused[0].code
        == {
            "connect": "NetConnection.Connect.Rejected",
            "publish": "NetStream.Publish.Denied",
            "play": "NetStream.Play.StreamNotFound",
        }[stage]
    )
    assert pair.client.state is ClientState.CLOSED


def test_unpublish_notify_ends_a_play() -> None:
    pair = Pair("rtmp://h/live/x", "play", [])
    pair.pump(accept_all)
    pair.server.send_unpublish_notify(pair.client.stream_id, "gone")
    pair.pump(accept_all)
    ended = [e for e in pair.client_events if isinstance(e, StreamEnded)]
    assert [e.code for e in ended] == ["NetStream.Play.UnpublishNotify"]
    assert pair.client.state is ClientState.CLOSED


def test_urls_and_templates() -> None:
    url = parse_rtmp_url("rtmp://a.rtmp.youtube.com/live2/abcd-efgh-ijkl?x=1")
    assert (url.host, url.port, url.app, url.stream, url.query) == (
        "a.rtmp.youtube.com",
        1935,
        "live2",
        "abcd-efgh-ijkl",
        "x=1",
    )
    assert url.tc_url == "rtmp://a.rtmp.youtube.com:1935/live2"
    assert "abcd-efgh" not in url.redacted() and "x=1" not in url.redacted()
    assert parse_rtmp_url("rtmps://live-api-s.facebook.com/rtmp/KEY").port == 443
    assert fill_template("rtmp://o/{app}/{stream}", "live", "cam") == "rtmp://o/live/cam"
    for bad in ("http://h/a/b", "rtmp:///a/b", "rtmp://h/onlyapp", "rtmp://h:99999/a/b"):
        with pytest.raises(ValueError):
            parse_rtmp_url(bad)


# ----------------------------------------------------------------------------- over sockets


async def _engine(**options: object):  # type: ignore[no-untyped-def]
    server = RtmpServer(HOST, 0)
    builder = Engine.builder().application("live").protocol(server)
    if "authenticator" in options:
        builder.authenticator(options["authenticator"])  # type: ignore[arg-type]
    return builder.build(), server


async def test_frames_round_trip_through_the_server(demo_frames: list) -> None:  # type: ignore[type-arg]
    engine, server = await _engine()
    async with engine:
        url = f"rtmp://{HOST}:{server.port}/live/round"
        frames = demo_frames[:300]
        with trio.fail_after(20):
            async with open_rtmp_publisher(url) as publisher:
                await publisher.send_frames(frames[:40])
                async with open_rtmp_player(url) as player:
                    got = []
                    async with trio.open_nursery() as nursery:

                        async def rest() -> None:
                            for frame in frames[40:]:
                                await publisher.send(frame)

                        nursery.start_soon(rest)
                        async for frame in player:
                            got.append(frame)
                            if frame is not None and frame.dts >= frames[-1].dts and not frame.config:
                                break
                assert publisher.bytes_sent > 0 and player.bytes_received > 0
        sent = {(f.kind, f.track, f.dts, f.pts, f.keyframe, f.config, f.payload) for f in frames}
        assert got and all((f.kind, f.track, f.dts, f.pts, f.keyframe, f.config, f.payload) in sent for f in got)
        assert got[0].kind.value == "data" and got[0].config  # metadata, configs, then the GOP
        kinds = {(f.kind.value, f.codec) for f in got}
        assert {("video", "h264"), ("audio", "aac")} <= kinds


async def test_refusals_raise_remote_refused() -> None:
    engine, server = await _engine(authenticator=TokenAuthenticator(publish_token="s3cret"))
    async with engine:
        base = f"rtmp://{HOST}:{server.port}"
        with trio.fail_after(10):
            with pytest.raises(RemoteRefused) as info:
                async with open_rtmp_player(f"{base}/live/nothing"):
                    pass
            assert info.value.stage == "play" and info.value.code == "NetStream.Play.StreamNotFound"
            with pytest.raises(RemoteRefused) as info:
                async with open_rtmp_publisher(f"{base}/live/cam?token=wrong"):
                    pass
            assert info.value.code == "NetStream.Publish.Denied"
            with pytest.raises(RemoteRefused) as info:
                async with open_rtmp_publisher(f"{base}/nope/cam"):
                    pass
            assert info.value.stage == "connect"
            async with open_rtmp_publisher(f"{base}/live/cam?token=s3cret") as publisher:
                assert publisher.ended is None


async def test_a_server_that_goes_away_is_connection_lost() -> None:
    with trio.fail_after(10):
        listener = (await trio.open_tcp_listeners(0, host=HOST))[0]
        port = listener.socket.getsockname()[1]
        async with trio.open_nursery() as nursery:

            async def close_at_once() -> None:
                stream = await listener.accept()
                await stream.aclose()

            nursery.start_soon(close_at_once)
            with pytest.raises(ConnectionLost):
                async with open_rtmp_player(f"rtmp://{HOST}:{port}/live/x"):
                    pass
        await listener.aclose()
        with pytest.raises(ConnectionLost):  # nothing listens there any more
            async with open_rtmp_player(f"rtmp://{HOST}:{port}/live/x", timeout=2):
                pass


async def test_the_publisher_learns_when_the_server_ends_its_publish(demo_frames: list) -> None:  # type: ignore[type-arg]
    engine, server = await _engine()
    async with engine:
        with trio.fail_after(10):
            async with open_rtmp_publisher(f"rtmp://{HOST}:{server.port}/live/end") as publisher:
                await publisher.send_frames(demo_frames[:20])
                while not engine.has_stream(parse_key("live/end")):
                    await trio.sleep(0.01)
                engine.stream("live/end").shutdown()  # the kernel ends the publish
                while publisher.ended is None:
                    await trio.sleep(0.01)
                assert "Unpublish" in publisher.ended
                with pytest.raises(ConnectionLost):
                    await publisher.send_frames(demo_frames[20:40])


def parse_key(text: str):  # type: ignore[no-untyped-def]
    from arcly_trio.core.keys import StreamKey

    return StreamKey.parse(text)


@pytest.mark.parametrize("video", ["hevc", "av1", "vp9"])
async def test_enhanced_rtmp_codecs_round_trip_through_the_client(video: str) -> None:
    from arcly_trio.core.frame import Frame, FrameKind
    from arcly_trio.testing import frames as fb

    sent = [
        fb.video_config(0, codec=video, payload=b"\x01cfg" + video.encode()),
        fb.audio_config(0, codec="opus", payload=b"OpusHead\x01\x02\x00\x0f\x80\xbb\x00\x00\x00\x00\x00"),
        Frame(FrameKind.VIDEO, video, 0, 0, b"second track config", keyframe=True, config=True, track=1),
    ]
    for index in range(60):
        ts = index * 33
        sent.append(fb.keyframe(ts, codec=video) if index % 30 == 0 else fb.delta(ts, codec=video))
        sent.append(fb.audio(ts, codec="opus"))
        if index % 30 == 0:
            sent.append(Frame(FrameKind.VIDEO, video, ts, ts, b"K" * 40, keyframe=True, track=1))
    engine, server = await _engine()
    async with engine:
        url = f"rtmp://{HOST}:{server.port}/live/enhanced"
        with trio.fail_after(10):
            async with open_rtmp_publisher(url) as publisher:
                await publisher.send_frames(sent[:3])
                async with open_rtmp_player(url) as player:
                    await publisher.send_frames(sent[3:])
                    got = []
                    async for frame in player:
                        got.append(frame)
                        if frame.kind is FrameKind.AUDIO and frame.dts == 59 * 33:
                            break
        wanted = {(f.kind, f.codec, f.track, f.dts, f.keyframe, f.config, f.payload) for f in sent}
        assert all((f.kind, f.codec, f.track, f.dts, f.keyframe, f.config, f.payload) in wanted for f in got)
        assert {(f.codec, f.track) for f in got if f.kind is FrameKind.VIDEO} == {(video, 0), (video, 1)}
        assert any(f.codec == "opus" and f.config for f in got)
