"""The direct-write egress of every protocol over real TCP sockets with small buffers.

* A slow RTMP, HTTP-FLV and WebSocket-FLV player (a small receive buffer, small reads) gets a
  byte stream that parses whole: chunks, HTTP chunks and WebSocket frames are never cut by
  another frame's bytes, however the writes were split; it lags (drops counted by the kernel)
  and resumes on a keyframe, its configs first.
* 200 stalled RTMP players (connected, never reading) next to 20 healthy ones: the healthy ones
  get every frame, the publisher is never held up (its ingest queue never fills), the stalled
  ones are dropped to the next keyframe, counted and evicted past the lag budget, memory stays
  bounded while they hang on and returns once they are gone (under the mock clock: the write
  timeout cannot outrun the evictions on a loaded machine).
* Each playing viewer costs its connection one task, whatever the protocol.

Servers run in-process on port 0; ``trio.fail_after`` bounds every test; nothing asserts speed.
"""

from __future__ import annotations

import gc
import logging
import socket
import tracemalloc
from typing import Any

import h11
import trio
import trio.testing
import wsproto
from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Request

from arcly_trio import AppSpec, Engine, StreamKey
from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.media import flv
from arcly_trio.protocols.rtmp import MediaMessage
from arcly_trio.testing import CountingObserver, audio, audio_config, delta, keyframe, video_config
from tests._rtmp import RawClient
from tests._serving import serving

SMALL = 65536


#: The RTMP options of every test here: no cap on a burst of connections from 127.0.0.1.
RTMP = {"max_pending_per_address": None}


def gops(count: int, start: int = 0, length: int = 15, key_size: int = 40_000, delta_size: int = 12_000) -> list[Frame]:
    """``count`` GOPs of big frames (every payload names its frame), audio after each picture."""
    frames = []
    ts = start
    for _ in range(count):
        for i in range(length):
            ts += 33
            frames.append(keyframe(ts, key_size) if i == 0 else delta(ts, delta_size))
            frames.append(audio(ts, 300))
    return frames


def check_received(received: list[Frame], published: list[Frame]) -> int:
    """Every frame is one that was published, whole, in order; every gap in the video ends
    on a keyframe. Returns how many media frames are missing."""
    payloads = {frame.payload: index for index, frame in enumerate(published)}
    media = [frame for frame in received if not frame.config]
    positions = [payloads[frame.payload] for frame in media]  # KeyError: bytes never published
    assert positions == sorted(positions) and len(set(positions)) == len(positions), "out of order"
    assert media[0].keyframe
    missing = 0
    last_video = None
    for frame, position in zip(media, positions):
        if frame.kind is FrameKind.VIDEO:
            if (
                last_video is not None
                and position != last_video + 1
                and published[last_video + 1].kind is FrameKind.AUDIO
            ):
                gap = position - last_video - 2  # the audio right after the last picture is fine
            else:
                gap = 0 if last_video is None else position - last_video - 1
            if gap > 0:
                assert frame.keyframe, f"a gap of {gap} frames ends on a non-keyframe"
                missing += gap
            last_video = position
    return missing


async def slow_read(receive: Any, feed: Any, until: Any) -> None:
    """Read small pieces with a pause between them until ``until()``."""
    while not until():
        data = await receive()
        if not data:
            return
        feed(data)
        await trio.sleep(0.002)


async def publish_burst_then_paced(publisher: Any, burst: list[Frame], received: list[Frame]) -> list[Frame]:
    """Publish ``burst`` as fast as the kernel takes it (the slow player lags), then paced
    GOPs until the player has been live again for 20 frames. Returns everything published."""
    published = list(burst)
    for frame in burst:
        await publisher.send(frame)
    start = 100_000
    while True:
        paced = gops(1, start=start, key_size=20_000, delta_size=3_000)
        start += 10_000
        for frame in paced:
            published.append(frame)
            await publisher.send(frame)
            await trio.sleep(0.01)
        tail = {frame.payload for frame in published[-60:]}
        if sum(frame.payload in tail for frame in received) >= 20:
            return published


def subscriber_of(engine: Engine, key: str, protocol: str) -> Any:
    subs = [s for s in engine.stream(StreamKey.parse(key)).subscribers if s.protocol == protocol]
    assert len(subs) == 1
    return subs[0]


async def wait_subscribed(engine: Engine, key: str, count: int, protocol: str | None = None) -> None:
    with trio.fail_after(10):
        while True:
            subs = engine.stream(StreamKey.parse(key)).subscribers
            if len([s for s in subs if protocol is None or s.protocol == protocol]) >= count:
                return
            await trio.sleep(0.01)


def small_receive_buffer(stream: trio.SocketStream) -> None:
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL)


# ------------------------------------------------------------------- slow players


async def test_a_slow_rtmp_player_gets_whole_chunks_and_resumes_on_a_keyframe() -> None:
    configs = [video_config(), audio_config()]
    burst = gops(8)
    async with serving(AppSpec("live", subscriber_queue=8), rtmp=RTMP) as (engine, rtmp, _):
        with trio.fail_after(30):
            async with engine.publish("live/s") as publisher, trio.open_nursery() as nursery:
                for frame in configs:
                    await publisher.send(frame)
                client = await RawClient.open(rtmp.port)  # type: ignore[arg-type]
                small_receive_buffer(client.stream)
                await client.connect("live", rtmp.port)  # type: ignore[arg-type]
                stream_id = await client.create_stream()
                client.session.play(stream_id, "s")
                await client.flush()
                await wait_subscribed(engine, "live/s", 1)
                subscriber = subscriber_of(engine, "live/s", "rtmp")
                received: list[Frame] = []

                def feed(data: bytes) -> None:
                    client.session.receive_data(data)
                    for event in client.session.events():
                        if isinstance(event, MediaMessage):
                            parse = flv.parse_video_tracks if event.type_id == 9 else flv.parse_audio_tracks
                            received.extend(parse(event.timestamp, event.payload))

                nursery.start_soon(slow_read, lambda: client.stream.receive_some(SMALL), feed, lambda: False)
                published = await publish_burst_then_paced(publisher, burst, received)
                nursery.cancel_scope.cancel()
        missing = check_received(received, published)
        assert subscriber.dropped > 0 and missing <= subscriber.dropped
        assert [f.payload for f in received if f.config][:2] == [c.payload for c in configs]
        await client.aclose()


async def play_slowly(opening: bytes, protocol: str, unwrap: Any) -> tuple[list[Frame], list[Frame], Any]:
    """A slow HTTP-side player: send ``opening``, read small pieces slowly, ``unwrap(data)``
    each into FLV body bytes (it checks the framing), parse the tags. Returns what it got,
    what was published and its kernel subscriber."""
    burst = gops(8)
    async with serving(AppSpec("live", subscriber_queue=8), rtmp=RTMP) as (engine, _, http):
        with trio.fail_after(30):
            async with engine.publish("live/s") as publisher, trio.open_nursery() as nursery:
                await publisher.send(video_config())
                await publisher.send(audio_config())
                stream = await trio.open_tcp_stream("127.0.0.1", http.port)  # type: ignore[arg-type]
                small_receive_buffer(stream)
                await stream.send_all(opening)
                reader = flv.FlvReader()
                received: list[Frame] = []

                def feed(data: bytes) -> None:
                    for piece in unwrap(data):
                        reader.receive_data(piece)
                    while (tag := reader.next_event()) is not None:
                        if isinstance(tag, flv.FlvTag):
                            received.extend(flv.tag_to_frames(tag))

                await wait_subscribed(engine, "live/s", 1)
                subscriber = subscriber_of(engine, "live/s", protocol)
                nursery.start_soon(slow_read, lambda: stream.receive_some(SMALL), feed, lambda: False)
                published = await publish_burst_then_paced(publisher, burst, received)
                nursery.cancel_scope.cancel()
                await stream.aclose()
    return received, published, subscriber


async def test_a_slow_http_flv_player_gets_whole_http_chunks() -> None:
    conn = h11.Connection(h11.CLIENT)
    opening = conn.send(h11.Request(method="GET", target="/live/s.flv", headers=[("host", "x")]))
    chunks = [0]

    def unwrap(data: bytes) -> list[bytes]:
        conn.receive_data(data)
        pieces = []
        while (event := conn.next_event()) not in (h11.NEED_DATA, h11.PAUSED):
            if isinstance(event, h11.Data):
                chunks[0] += event.chunk_end
                pieces.append(event.data)
            elif isinstance(event, h11.Response):
                assert event.status_code == 200
                assert (b"transfer-encoding", b"chunked") in list(event.headers)
        return pieces

    received, published, subscriber = await play_slowly(opening + conn.send(h11.EndOfMessage()), "http-flv", unwrap)
    missing = check_received(received, published)
    assert subscriber.dropped > 0 and missing <= subscriber.dropped
    assert chunks[0] < len(received)  # whole batches in one chunk


async def test_a_slow_websocket_flv_player_gets_whole_websocket_frames() -> None:
    ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    accepted = []

    def unwrap(data: bytes) -> list[bytes]:
        ws.receive_data(data)
        pieces = []
        for event in ws.events():
            if isinstance(event, AcceptConnection):
                accepted.append(event)
            elif isinstance(event, BytesMessage):
                pieces.append(event.data)
            elif isinstance(event, CloseConnection):
                raise AssertionError(f"closed: {event.code}")
        return pieces

    received, published, subscriber = await play_slowly(
        ws.send(Request(host="x", target="/live/s.flv")), "ws-flv", unwrap
    )
    assert accepted
    missing = check_received(received, published)
    assert subscriber.dropped > 0 and missing <= subscriber.dropped


# --------------------------------------------------------- stalled next to healthy


async def count_media_messages(client: RawClient, counter: list[int]) -> None:
    """Read media forever, adding every media message to ``counter[0]`` (a healthy player)."""
    while True:
        try:
            data = await client.stream.receive_some(65536)
        except trio.BrokenResourceError:
            return
        if not data:
            return
        client.session.receive_data(data)
        for event in client.session.events():
            if isinstance(event, MediaMessage):
                counter[0] += 1
        await client.flush()


async def test_200_stalled_players_next_to_20_healthy_ones(autojump_clock: trio.testing.MockClock) -> None:
    """Under the mock clock, so the stalled players are evicted (a matter of frames) before
    their write timeout closes them (a matter of time) however loaded the machine: in real
    time, a loaded machine took longer than the 2 s write timeout to publish the 53 frames
    that fill a stalled player's queue and lag budget, and none was evicted. The publisher
    sends each frame once the healthy players have the ones before it (they keep up: that is
    what makes them healthy), not after a pause; the write timeout (30 s of mock time) is far
    longer than publishing takes."""
    observer = CountingObserver()
    spec = AppSpec("live", subscriber_queue=32, lag_budget=20)
    configs = [video_config(), audio_config()]
    media = len(configs) + len(gops(12))  # the configs come as media messages too
    async with serving(spec, observer=observer, rtmp={**RTMP, "write_timeout": 30.0}) as (engine, rtmp, _):
        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                async with engine.publish("live/s") as publisher:
                    for frame in configs:
                        await publisher.send(frame)
                    stalled = []
                    for _ in range(200):
                        client = await RawClient.open(rtmp.port)  # type: ignore[arg-type]
                        small_receive_buffer(client.stream)
                        await client.connect("live", rtmp.port)  # type: ignore[arg-type]
                        client.session.play(1, "s")
                        await client.flush()
                        stalled.append(client)  # and never read again
                    healthy, counters = [], []
                    for _ in range(20):
                        client = await RawClient.open(rtmp.port)  # type: ignore[arg-type]
                        await client.connect("live", rtmp.port)  # type: ignore[arg-type]
                        client.session.play(1, "s")
                        await client.flush()
                        counter = [0]
                        nursery.start_soon(count_media_messages, client, counter)
                        healthy.append(client)
                        counters.append(counter)
                    await wait_subscribed(engine, "live/s", 220)
                    stream = engine.stream(StreamKey("live", "s"))
                    ingest = stream._feeding[0].receive
                    gc.collect()
                    logging.disable(logging.WARNING)  # 200 log lines held by pytest are not the server's
                    tracemalloc.start()
                    try:
                        base, _ = tracemalloc.get_traced_memory()
                        most_waiting = 0
                        # Frames made as they are sent: what stays held is the server's doing.
                        sent = len(configs)
                        for frame in gops(12, key_size=30_000, delta_size=6_000):
                            await publisher.send(frame)
                            sent += 1
                            most_waiting = max(most_waiting, ingest.statistics().current_buffer_used)
                            # The healthy players have it (but for the audio frame held until
                            # the next picture, and the frame in flight).
                            while min(c[0] for c in counters) < sent - 2:
                                await trio.sleep(0.001)
                        del frame
                        with trio.fail_after(10):
                            while min(c[0] for c in counters) < media:
                                await trio.sleep(0.01)
                        _, peak = tracemalloc.get_traced_memory()
                        # The stalled ones are evicted; their connections close at the write timeout.
                        while rtmp.open_connections > 20:
                            await trio.sleep(0.05)
                        gc.collect()
                        after, _ = tracemalloc.get_traced_memory()
                    finally:
                        tracemalloc.stop()
                        logging.disable(logging.NOTSET)
                    healthy_subs = list(stream.subscribers)
                for client in stalled + healthy:
                    await client.aclose()
                nursery.cancel_scope.cancel()
    assert most_waiting < spec.ingest_queue // 2  # the publisher never waited for a viewer
    assert all(c[0] == media for c in counters)  # every healthy player got every frame
    assert len(healthy_subs) == 20 and all(s.dropped == 0 for s in healthy_subs)
    assert observer.counts["on_subscriber_evicted"] == 200
    assert observer.counts["on_subscriber_lagged"] >= 200
    evicted = [e for e in observer.events if e.hook == "on_subscriber_evicted"]
    assert all(e.dropped_total > spec.lag_budget for e in evicted)  # type: ignore[attr-defined]
    assert peak - base < 40 * 1024 * 1024, peak - base  # shared frames, not 200 copies
    assert after - base < 2 * 1024 * 1024, after - base  # back to where it was (the last GOP, encoded)


# ------------------------------------------------------------ one task per viewer


def _tasks() -> int:
    def count(task: trio.lowlevel.Task) -> int:
        return 1 + sum(count(child) for nursery in task.child_nurseries for child in nursery.child_tasks)

    return count(trio.lowlevel.current_root_task())


async def test_each_viewer_costs_its_connection_one_task() -> None:
    async with serving(AppSpec("live"), rtmp=RTMP) as (engine, rtmp, http):
        with trio.fail_after(20):
            async with engine.publish("live/s") as publisher:
                for frame in [video_config(), audio_config(), keyframe(0, 1000)]:
                    await publisher.send(frame)
                await trio.testing.wait_all_tasks_blocked()
                before = _tasks()
                rtmp_players = []
                for _ in range(3):
                    client = await RawClient.open(rtmp.port)  # type: ignore[arg-type]
                    await client.connect("live", rtmp.port)  # type: ignore[arg-type]
                    client.session.play(1, "s")
                    await client.flush()
                    rtmp_players.append(client)
                others = []
                for target, upgrade in [("/live/s.flv", False), ("/live/s.flv", True), ("/live/s/frames", True)]:
                    stream = await trio.open_tcp_stream("127.0.0.1", http.port)  # type: ignore[arg-type]
                    if upgrade:
                        ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
                        subprotocols = ["arcly.frames.v1"] if target.endswith("frames") else []
                        await stream.send_all(ws.send(Request(host="x", target=target, subprotocols=subprotocols)))
                    else:
                        await stream.send_all(b"GET %s HTTP/1.1\r\nhost: x\r\n\r\n" % target.encode())
                    others.append(stream)
                await wait_subscribed(engine, "live/s", 6)
                await trio.testing.wait_all_tasks_blocked()
                assert _tasks() - before == 6
                for client in rtmp_players:
                    await client.aclose()
                for stream in others:
                    await stream.aclose()
