"""Attacks on the relays and the cluster, reproduced small over real sockets (and fuzzed).

* A flood of plays of made-up names on an edge whose upstream never answers: at most
  ``max_pulls`` upstream connections at once, the rest refused at once, all of them gone after
  the pull timeout, and a healthy player of a real stream keeps playing throughout.
* Plays of made-up names (issue 18, finding 14): 2000 of them open no more upstream plays than
  there are names (a name the upstream lacks is refused at once for a while; one address has
  at most a few pulls starting), and pulls of nothing held by nginx-rtmp (which accepts a play
  of a stream it does not have, then sends nothing) do not lock a real upstream stream out.
* An upstream that announces a 100 MiB message: the pull fails at the header (nothing of that
  size is buffered) and the viewer is told the stream was not found.
* The supervisor's directory socket: malformed requests get an error answer; a line over
  64 KiB closes that connection only; other workers' connections keep working.
* The RTMP client fed arbitrary bytes (hypothesis), in the handshake and after it: only the
  project's protocol errors come out.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from arcly_trio import AppSpec, Credentials, Engine, StreamKey
from arcly_trio.clients import open_rtmp_player, open_rtmp_publisher
from arcly_trio.cluster import DirectoryServer, LocalDirectory, MemoryDirectory, NodeInfo
from arcly_trio.core.errors import RemoteProtocolError, RemoteRefused, StreamNotFound
from arcly_trio.core.frame import Frame
from arcly_trio.protocols.rtmp import RtmpClient, parse_rtmp_url
from arcly_trio.protocols.rtmp.chunks import chunk_message
from arcly_trio.protocols.rtmp.handshake import ServerHandshake
from arcly_trio.relay import PullSource
from arcly_trio.workers.rtmp import RtmpServer
from tests._net import black_hole
from tests._nodes import feed
from tests._peers import nginx_rtmp
from tests._rtmp import count_media

HOST = "127.0.0.1"


async def test_a_flood_of_made_up_names_opens_a_bounded_number_of_pulls(demo_frames) -> None:  # type: ignore[no-untyped-def]
    async with trio.open_nursery() as outer:
        port, upstream = await outer.start(black_hole)
        pull = PullSource({None: f"rtmp://{HOST}:{port}/{{app}}/{{stream}}"}, timeout=2)
        rtmp = RtmpServer(HOST, 0, max_pending_per_address=None)
        engine = Engine.builder().application(AppSpec("live")).protocol(rtmp).source(pull).max_pulls(8).build()
        async with engine, trio.open_nursery() as nursery:
            nursery.start_soon(feed, engine, "live/real", demo_frames, 0.01, 1000)
            counter = [0]
            with trio.fail_after(5):
                while not engine.has_stream(StreamKey("live", "real")):
                    await trio.sleep(0.01)
            await nursery.start(count_media, rtmp.port, "real", counter)
            refused = [0]

            async def attacker(index: int) -> None:
                try:
                    async with open_rtmp_player(f"rtmp://{HOST}:{rtmp.port}/live/fake{index}", timeout=5):
                        pass
                except RemoteRefused:
                    refused[0] += 1

            with trio.fail_after(20):
                async with trio.open_nursery() as attackers:
                    for index in range(60):
                        attackers.start_soon(attacker, index)
                    await trio.sleep(0.5)
                    assert upstream["open"] <= 8 and len(engine.sourcing.active) <= 8
                    start = counter[0]
                    while counter[0] < start + 10:  # the healthy player plays on
                        await trio.sleep(0.02)
                assert refused[0] == 60
                assert upstream["most"] <= 8
                assert engine.sourcing.refused_total >= 60 - 8
                while upstream["open"]:
                    await trio.sleep(0.05)
                assert not engine.sourcing.active
            nursery.cancel_scope.cancel()
        outer.cancel_scope.cancel()


class CountingPlays:
    """An upstream's authenticator that lets everyone in and counts the plays it was asked."""

    def __init__(self) -> None:
        self.plays = 0

    async def authorize_publish(self, key: StreamKey, credentials: Credentials) -> bool:
        return True

    async def authorize_play(self, key: StreamKey, credentials: Credentials) -> bool:
        self.plays += 1
        return True


async def test_plays_of_made_up_names_open_at_most_one_upstream_play_per_name() -> None:
    """2000 plays of 50 made-up names from one address, in waves of 100 at once, against an
    in-process upstream that answers "not found" at once: at most 50 upstream plays (it was
    about one per name and wave, a thousand), and never more than 4 pulls starting for the
    address. Mutants killed: no negative cache; no per-address bound on pulls starting."""
    counting = CountingPlays()
    upstream_rtmp = RtmpServer(HOST, 0, max_pending_per_address=None)
    upstream = Engine.builder().application(AppSpec("live")).protocol(upstream_rtmp).authenticator(counting).build()
    async with upstream:
        pull = PullSource({None: f"rtmp://{HOST}:{upstream_rtmp.port}/{{app}}/{{stream}}"}, timeout=5)
        edge = Engine.builder().application(AppSpec("live")).source(pull).build()
        async with edge:
            refused = [0]
            starting = [0]

            async def play(index: int) -> None:
                try:
                    async with edge.subscribe(
                        f"live/ghost{index % 50}", Credentials(peer=("127.0.0.9", 40000 + index))
                    ):
                        raise AssertionError("a made-up name played")
                except StreamNotFound:
                    refused[0] += 1

            async def watch_starting() -> None:  # at every scheduling round
                while True:
                    starting[0] = max(starting[0], len(edge.sourcing.active))
                    await trio.lowlevel.checkpoint()

            with trio.fail_after(60):
                async with trio.open_nursery() as watcher:
                    watcher.start_soon(watch_starting)
                    for wave in range(20):
                        async with trio.open_nursery() as nursery:
                            for index in range(wave * 100, wave * 100 + 100):
                                nursery.start_soon(play, index)
                    watcher.cancel_scope.cancel()
        assert refused[0] == 2000
        assert counting.plays <= 50, counting.plays
        assert starting[0] <= edge.sourcing.max_pending_per_address
        assert edge.sourcing.missing_total > 1000


async def publish_looped(url: str, frames: list[Frame], *, task_status=trio.TASK_STATUS_IGNORED) -> None:  # type: ignore[no-untyped-def]
    """Publish ``frames`` to ``url`` at their pace, looped, until cancelled."""
    async with open_rtmp_publisher(url) as publisher:
        await publisher.send_frames([f for f in frames if f.config])
        task_status.started()
        loop = 0
        while True:
            for frame in frames:
                if not frame.config:
                    await publisher.send(frame.shifted(loop * 10_000) if loop else frame)
                    await trio.sleep(0.005)
            loop += 1


@pytest.mark.interop
async def test_pulls_of_nothing_held_by_nginx_do_not_lock_a_real_upstream_stream_out(demo_frames) -> None:  # type: ignore[no-untyped-def]
    """128 plays of streams nginx-rtmp does not have, from 128 addresses, fill every pull slot
    (``max_pulls`` 128: nginx-rtmp's fixture takes 256 connections) and nginx holds each of them
    without a word; a play of a stream nginx has, from another address a second later, plays
    at once instead of being refused until the pulls of nothing time out. The same from the
    address that holds pulls of nothing. Mutant killed: pulls that never started keep their
    slots until their timeout."""
    junk = 128
    with trio.fail_after(60):
        async with nginx_rtmp() as nginx_port, trio.open_nursery() as nursery:
            await nursery.start(publish_looped, f"rtmp://{HOST}:{nginx_port}/live/real", demo_frames)
            await nursery.start(publish_looped, f"rtmp://{HOST}:{nginx_port}/live/real2", demo_frames)
            pull = PullSource({None: f"rtmp://{HOST}:{nginx_port}/{{app}}/{{stream}}"}, timeout=8)
            engine = Engine.builder().application(AppSpec("live")).source(pull).max_pulls(junk).build()
            async with engine, trio.open_nursery() as attackers:

                async def nothing(index: int, address: str) -> None:
                    try:
                        async with engine.subscribe(f"live/nothing{index}", Credentials(peer=(address, 5000))):
                            raise AssertionError("a stream nginx lacks played")
                    except StreamNotFound:
                        pass

                for index in range(junk):
                    attackers.start_soon(nothing, index, f"127.0.1.{index + 1}")
                while len(engine.sourcing.active) < junk:
                    await trio.sleep(0.01)
                await trio.sleep(engine.sourcing.pending_grace + 0.1)
                with trio.fail_after(4):  # at once: the pulls of nothing would hold for 8 s
                    async with engine.subscribe("live/real", Credentials(peer=("127.0.2.1", 5000))) as sub:
                        assert sub.key == StreamKey("live", "real")
                    # The address that holds pulls of nothing (4 of them) gets its real play too.
                    for index in range(4):
                        attackers.start_soon(nothing, junk + index, "127.0.1.1")
                    await trio.sleep(engine.sourcing.pending_grace + 0.1)
                with trio.fail_after(4):
                    async with engine.subscribe("live/real2", Credentials(peer=("127.0.1.1", 5000))):
                        pass
                assert engine.sourcing.evicted_total >= 2
                attackers.cancel_scope.cancel()
            nursery.cancel_scope.cancel()


async def evil_server_handshake(stream: trio.SocketStream) -> bytes:
    """Play a server's handshake on ``stream``; return the bytes after it."""
    handshake = ServerHandshake()
    while not handshake.complete:
        handshake.receive_data(await stream.receive_some(65536))
        await stream.send_all(handshake.data_to_send())
    return handshake.leftover()


async def test_an_upstream_announcing_a_huge_message_fails_at_the_header(caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.INFO, logger="arcly_trio.relay")
    listener = (await trio.open_tcp_listeners(0, host=HOST))[0]
    port = listener.socket.getsockname()[1]

    async def evil(stream: trio.SocketStream) -> None:
        await evil_server_handshake(stream)
        # A video message header announcing 16 MiB (RTMP's largest), then a little of its body.
        big = bytearray(chunk_message(6, 9, 1, 0, b"x" * 200, 128)[:12])
        big[4:7] = (0xFFFFFF).to_bytes(3, "big")
        await stream.send_all(bytes(big) + b"x" * 1000)
        await trio.sleep(5)

    pull = PullSource({None: f"rtmp://{HOST}:{port}/{{app}}/{{stream}}"}, timeout=3)
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, evil, [listener])
        async with Engine.builder().application(AppSpec("live")).source(pull).build() as engine:
            with trio.fail_after(10):
                with pytest.raises(Exception) as info:
                    async with engine.subscribe("live/x"):
                        pass
                assert type(info.value).__name__ == "StreamNotFound"
        nursery.cancel_scope.cancel()
    failed = [r.getMessage() for r in caplog.records if "pull of live/x" in r.getMessage()]
    assert failed and "16777215 bytes exceeds the limit" in failed[0], failed


async def test_the_directory_socket_refuses_garbage_and_long_lines_per_connection() -> None:
    with tempfile.TemporaryDirectory() as root:
        path = os.path.join(root, "directory.sock")
        directory = MemoryDirectory()
        async with trio.open_nursery() as nursery:
            await nursery.start(DirectoryServer(directory, path).serve)
            client = LocalDirectory(path)
            await nursery.start(client.run)
            await client.register(NodeInfo("w0", "rtmp://h:1"), 10)
            with trio.fail_after(10):
                raw = await trio.open_unix_socket(path)
                for junk in (
                    b"not json\n",
                    b'{"id": 1}\n',
                    b'{"id": 2, "op": "explode"}\n',
                    b'{"id": 3, "op": "claim", "args": {}}\n',
                ):
                    await raw.send_all(junk)
                    answer = json.loads(await raw.receive_some(65536))
                    assert "error" in answer
                await raw.send_all(b"x" * (70 * 1024))  # no newline: over the line limit
                while await raw.receive_some(65536):
                    pass  # closed by the server
                assert await client.claim("live/a", "w0", 10) == "w0"  # the worker is unaffected
                assert (await client.owner("live/a")).id == "w0"  # type: ignore[union-attr]
            nursery.cancel_scope.cancel()


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=4000), after_handshake=st.booleans())
def test_the_rtmp_client_raises_only_protocol_errors(data: bytes, after_handshake: bool) -> None:
    client = RtmpClient(parse_rtmp_url("rtmp://h/live/x"), "play")
    client.initiate()
    try:
        if after_handshake:
            server = ServerHandshake()
            c0c1 = RtmpClient(parse_rtmp_url("rtmp://h/live/x"), "play")
            server.receive_data(c0c1.initiate())
            client = c0c1
            client.receive_data(server.data_to_send())
            client.data_to_send()
        client.receive_data(data)
        while client.next_event() is not None:
            pass
    except RemoteProtocolError:
        pass


async def test_a_push_target_that_breaks_the_protocol_affects_no_other_target(demo_frames) -> None:  # type: ignore[no-untyped-def]
    from arcly_trio.protocols.rtmp import ConnectRequest, PublishRequest, ServerSession
    from arcly_trio.relay import PushService

    listener = (await trio.open_tcp_listeners(0, host=HOST))[0]
    evil_port = listener.socket.getsockname()[1]

    async def evil(stream: trio.SocketStream) -> None:
        session = ServerSession()
        session.receive_data(await evil_server_handshake(stream))
        while True:
            for event in session.events():
                if isinstance(event, ConnectRequest):
                    session.accept_connect()
                elif isinstance(event, PublishRequest):
                    session.accept_publish(event.stream_id)
                    await stream.send_all(session.data_to_send())
                    await trio.sleep(0.2)
                    await stream.send_all(b"\x03" + b"\xff" * 64)  # a chunk header of nonsense
                    await trio.sleep(5)
                    return
            await stream.send_all(session.data_to_send())
            data = await stream.receive_some(65536)
            if not data:
                return
            session.receive_data(data)

    rtmp = RtmpServer(HOST, 0)
    target = Engine.builder().application(AppSpec("live")).protocol(rtmp).build()
    async with trio.open_nursery() as outer, target:
        await outer.start(trio.serve_listeners, evil, [listener])
        push = PushService(
            [f"rtmp://{HOST}:{evil_port}/live/{{stream}}", f"rtmp://{HOST}:{rtmp.port}/live/{{stream}}"],
            backoff=(0.2, 0.4, 5),
        )
        async with (
            Engine.builder().application(AppSpec("live")).service(push).build() as source,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(feed, source, "live/cam", demo_frames, 0.003, 100)
            with trio.fail_after(20):
                while True:
                    links = push.stream_status(StreamKey("live", "cam")).get("push", [])
                    if len(links) == 2 and links[0]["retries"] >= 2 and links[1]["frames"] > 300:
                        break
                    await trio.sleep(0.1)
                assert links[1]["state"] == "connected" and links[1]["retries"] == 0
                assert links[0]["last_error"]
                assert target.stream("live/cam").stats().video_frames_total > 100
            nursery.cancel_scope.cancel()
        outer.cancel_scope.cancel()
