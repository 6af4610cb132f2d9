"""The attacks of the hardening review, each reproduced at a small scale over real sockets.

Every test runs the RTMP and HTTP workers in-process on 127.0.0.1 (port 0), with a healthy
publisher and, where it matters, a healthy RTMP player next to the attacker, and checks what the
attack costs now: the attacker's connection is closed (with a log line that escapes what it
sent), memory comes back (``tracemalloc`` and the worker's byte budget), and the healthy player
keeps receiving media. Each one fails on the code before the hardening (noted per test as the
mutant it kills). Real time is short; ``trio.fail_after`` bounds every test; nothing asserts
speed.
"""

from __future__ import annotations

import collections
import gc
import json
import logging
import os
import socket
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import pytest
import trio
import trio_websocket

from arcly_trio import AppSpec, Credentials, Engine, StreamKey, TokenAuthenticator
from arcly_trio.clients.frames import FramesClosed, open_frames_publisher
from arcly_trio.core.excgroups import unwrap_single
from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.kernel.throttle import AuthThrottle
from arcly_trio.media import amf0, flv
from arcly_trio.ops import AnyOf, AuditPipeline, JsonLinesFile, MemorySink, SignedUrlAuthenticator
from arcly_trio.protocols.frames.messages import SUBPROTOCOL
from arcly_trio.protocols.rtmp import CSID_DATA, CSID_VIDEO, MediaMessage
from arcly_trio.protocols.rtmp.chunks import chunk_message
from arcly_trio.protocols.rtmp.messages import MessageType, encode_set_chunk_size
from arcly_trio.services import HlsService
from arcly_trio.workers.http import HttpServer
from arcly_trio.workers.rtmp import RtmpServer
from tests._rtmp import RawClient, count_media, publish_large_gop
from tests._serving import healthy_stream

MIB = 1024 * 1024


@asynccontextmanager
async def attacked(
    *, rtmp: dict[str, Any] | None = None, http: dict[str, Any] | None = None, **engine: Any
) -> AsyncIterator[tuple[Engine, RtmpServer, HttpServer]]:
    rtmp_server = RtmpServer("127.0.0.1", 0, **(rtmp or {}))
    http_server = HttpServer("127.0.0.1", 0, **(http or {}))
    app = engine.get("app") or AppSpec("live", hls=True)
    builder = Engine.builder().application(app).protocol(rtmp_server).protocol(http_server)
    if "publishers" in engine:  # (in all, per address)
        builder.max_publishers(engine["publishers"][0]).max_publishers_per_address(engine["publishers"][1])
    if "start_timeout" in engine:
        builder.publish_start_timeout(engine["start_timeout"])
    if "auth" in engine:
        builder.authenticator(engine["auth"])
    if "throttle" in engine:
        builder.auth_throttle(engine["throttle"])
    if "service" in engine:
        builder.service(engine["service"])
    if "observer" in engine:
        builder.observer(engine["observer"])
    async with builder.build() as eng:
        yield eng, rtmp_server, http_server


async def healthy_player(port: int, nursery: trio.Nursery, name: str = "ok") -> list[int]:
    """An RTMP player of ``live/{name}``; the returned counter grows with every media message."""
    counter = [0]
    await nursery.start(count_media, port, name, counter)
    return counter


async def still_flowing(counter: list[int]) -> None:
    start = counter[0]
    with trio.fail_after(5):
        while counter[0] < start + 5:
            await trio.sleep(0.02)


def closed_lines(caplog: pytest.LogCaptureFixture, client: RawClient) -> list[str]:
    return [r.getMessage() for r in caplog.records if client.tag in r.getMessage() and "closed" in r.getMessage()]


# ---------------------------------------------------------------- memory before connect


async def test_tiny_chunk_size_before_connect_is_refused(caplog, demo_frames) -> None:  # type: ignore[no-untyped-def]
    """Attack: Set Chunk Size 2, then megabytes in 2-byte chunks (~24x the bytes held).
    Mutant killed: accepting chunk sizes under 128."""
    async with attacked() as (engine, rtmp, http), trio.open_nursery() as nursery:
        await healthy_stream(engine, demo_frames, nursery)
        counter = await healthy_player(rtmp.port, nursery)
        client = await RawClient.open(rtmp.port)
        await client.handshake()
        await client.stream.send_all(chunk_message(2, 1, 0, 0, encode_set_chunk_size(2), 128))
        with trio.fail_after(5):
            await client.assert_closed_by_server()
        assert any("chunks under 128 bytes are refused" in line for line in closed_lines(caplog, client))
        await still_flowing(counter)
        nursery.cancel_scope.cancel()


async def test_partial_messages_before_connect_hold_little_memory(caplog, demo_frames) -> None:  # type: ignore[no-untyped-def]
    """Attack: before ``connect``, two video messages announced at 8 MiB, every chunk but the
    last sent (~384 MB per connection before). Now: refused at the first header; and small
    commands that stay partial are capped at the setup buffer. Memory returns to baseline.
    Mutants killed: media-sized limits before publishing; counting announced, not real, bytes."""
    async with attacked(rtmp={"max_setup_buffer": 256 * 1024}) as (engine, rtmp, http), trio.open_nursery() as nursery:
        await healthy_stream(engine, demo_frames, nursery)
        counter = await healthy_player(rtmp.port, nursery)
        tracemalloc.start()
        try:
            base, _ = tracemalloc.get_traced_memory()
            # 1. Two 8 MiB video messages: the first header is refused.
            video = await RawClient.open(rtmp.port)
            await video.handshake()
            header = bytes([CSID_VIDEO]) + bytes(3) + (8 * MIB).to_bytes(3, "big") + b"\x09" + (1).to_bytes(4, "little")
            await video.stream.send_all(header + bytes(128))
            with trio.fail_after(5):
                await video.assert_closed_by_server()
            # 2. Many 60 KiB commands on separate chunk streams, all but the last chunk each.
            commands = await RawClient.open(rtmp.port)
            await commands.handshake()
            # Each 60 KiB command in 128-byte chunks (129 bytes on the wire), less its last chunk.
            parts = [chunk_message(10 + i, 20, 0, 0, bytes(60 * 1024), 128)[:-129] for i in range(8)]
            with trio.fail_after(5):
                for part in parts:
                    try:
                        await commands.stream.send_all(part)
                    except trio.BrokenResourceError:
                        break
                await commands.assert_closed_by_server()
            peak = tracemalloc.get_traced_memory()[1] - base
            del parts, header
            await trio.sleep(0.1)
            held = tracemalloc.get_traced_memory()[0] - base
        finally:
            tracemalloc.stop()
        assert peak < 2 * MIB, peak
        assert held < 512 * 1024, held
        assert rtmp.budget.used == 0
        assert any("exceeds the limit" in line for line in closed_lines(caplog, video))
        assert any("buffered partial" in line for line in closed_lines(caplog, commands))
        await still_flowing(counter)
        nursery.cancel_scope.cancel()


# --------------------------------------------------------- encodings chosen by clients


async def test_fresh_message_stream_ids_do_not_multiply_what_a_frame_holds(demo_frames) -> None:  # type: ignore[no-untyped-def]
    """Attack: plays naming fresh message stream ids (150 plays: +1.8 GB before). Each id kept
    its own encoding of the whole cached GOP. Mutant killed: the stream id in the cache key."""
    big_gop = [demo_frames[i] for i in range(len(demo_frames)) if demo_frames[i].config]
    key = next(f for f in demo_frames if f.keyframe and not f.config)
    big_gop += [key] + [Frame(FrameKind.VIDEO, "h264", 33 * i, 33 * i, bytes(4) + bytes(60_000)) for i in range(1, 40)]
    async with attacked() as (engine, rtmp, http):
        async with engine.publish("live/gop") as publisher:
            for frame in big_gop:
                await publisher.send(frame)
            await trio.sleep(0.05)
            tracemalloc.start()
            try:
                base, _ = tracemalloc.get_traced_memory()
                players = []
                for i in range(12):
                    client = await RawClient.open(rtmp.port)
                    await client.connect("live", rtmp.port)
                    client.session.play(100 + i, "gop")  # no createStream: a fresh id each
                    await client.flush()
                    players.append(client)
                gop_bytes = sum(len(f.payload) for f in big_gop)
                for i, client in enumerate(players):
                    with trio.fail_after(10):
                        event = await client.read_event(MediaMessage)
                        assert isinstance(event, MediaMessage) and event.stream_id == 100 + i
                        received = 0  # then the rest of the GOP, unparsed
                        while received < gop_bytes - 100_000:
                            received += len(await client.stream.receive_some(1 << 20))
                held, _ = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            assert held - base < 3 * gop_bytes, (held - base, gop_bytes)
            for client in players:
                await client.aclose()


# ------------------------------------------------------------- ended streams are freed


async def test_ended_sessions_free_their_frames_without_the_cycle_collector(demo_frames) -> None:  # type: ignore[no-untyped-def]
    """Attack: 25 publish sessions with a large GOP, one after another (+340 MB never returned:
    reference cycles and no full collection). With the cyclic collector off, every frame of an
    ended session is freed by reference counting alone. Mutant killed: not breaking the
    stream/session/GOP cycles on close."""
    async with attacked() as (engine, rtmp, http):
        gc.collect()
        gc.disable()
        try:

            def frames_alive() -> int:
                return sum(1 for o in gc.get_objects() if type(o) is Frame)

            base = frames_alive()
            for session in range(25):
                client = await publish_large_gop(rtmp.port, "big", demo_frames, 29, 40_000)  # type: ignore[arg-type]
                with trio.fail_after(5):
                    while not any(s.key.name == "big" and s.gop.gop_frames >= 20 for s in engine.streams()):
                        await trio.sleep(0.01)
                await client.aclose()
                with trio.fail_after(5):
                    while any(s.key.name == "big" for s in engine.streams()):
                        await trio.sleep(0.01)
            await trio.sleep(0.05)
            assert frames_alive() - base <= 2
        finally:
            gc.enable()


# ------------------------------------------------------------- one message stalls all


async def test_metadata_inside_an_aggregate_is_held_to_the_data_limit(caplog, demo_frames) -> None:  # type: ignore[no-untyped-def]
    """Attack: onMetaData inside an 8 MiB Aggregate message (3-5 s whole-server stall, decoded
    several times). Mutant killed: aggregate sub-messages exempt from their kind's limit."""
    async with attacked() as (engine, rtmp, http), trio.open_nursery() as nursery:
        await healthy_stream(engine, demo_frames, nursery)
        counter = await healthy_player(rtmp.port, nursery)
        client = await RawClient.open(rtmp.port)
        await client.connect("live", rtmp.port)
        stream_id = await client.create_stream()
        client.session.publish(stream_id, "agg")
        await client.flush()
        await client.command()
        body = amf0.encode("onMetaData", {"junk": "x" * (1 * MIB)})
        tag = bytes([18]) + len(body).to_bytes(3, "big") + bytes(7) + body + (11 + len(body)).to_bytes(4, "big")
        client.session.send_message(CSID_DATA, MessageType.AGGREGATE, stream_id, 0, tag)
        with trio.fail_after(5):
            await client.flush()
            await client.assert_closed_by_server()
        assert any("aggregate sub-message" in line for line in closed_lines(caplog, client))
        await still_flowing(counter)
        nursery.cancel_scope.cancel()


async def test_keyframes_of_a_million_nal_units_are_refused_by_the_segmenter(demo_frames) -> None:  # type: ignore[no-untyped-def]
    """Attack: H.264 keyframes made of 8 MB of 1-byte NAL units (2-4.7 s stall per frame in
    the HLS segmenter). Now such a frame is refused after 1024 NAL units, counted, and
    packaging goes on. Mutant killed: no bound on NAL units per access unit."""
    hls = HlsService(variant="ts")  # MPEG-TS parses NAL units; fMP4 writes samples as they are
    async with attacked(service=hls) as (engine, rtmp, http):
        async with engine.publish("live/nal") as publisher:
            for frame in demo_frames[:60]:
                await publisher.send(frame)
            bomb = Frame(FrameKind.VIDEO, "h264", 2100, 2100, b"\x00\x00\x00\x01\x65" * 200_000, keyframe=True)
            await publisher.send(bomb)
            with trio.fail_after(5):
                while hls.bad_frames < 1:
                    await trio.sleep(0.01)
    assert hls.bad_frames == 1


# ------------------------------------------------------------------- slots reclaimed


async def test_a_slow_drip_does_not_keep_a_connection_alive(caplog) -> None:  # type: ignore[no-untyped-def]
    """Attack: connections that send 4 bytes every 20 s were never reaped (any byte reset the
    idle timer). Now bytes are not progress, and a connection must publish or play within the
    setup timeout. (Scaled down: 4 bytes every 0.3 s, a 1.5 s setup timeout.)
    Mutant killed: the idle timer reset on any byte."""
    caplog.set_level(logging.INFO, logger="arcly_trio")  # a timeout is an INFO line (server/logs.py)
    async with attacked(rtmp={"setup_timeout": 1.5, "idle_timeout": 1.0}) as (engine, rtmp, http):
        client = await RawClient.open(rtmp.port)
        await client.handshake()
        client.session.connect("live")
        wire = client.session.data_to_send()
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:

                async def drip() -> None:
                    for offset in range(0, len(wire) - 4, 4):
                        try:
                            await client.stream.send_all(wire[offset : offset + 4])
                        except (trio.BrokenResourceError, trio.ClosedResourceError):
                            return
                        await trio.sleep(0.3)

                nursery.start_soon(drip)
                await client.assert_closed_by_server()
                nursery.cancel_scope.cancel()
        assert any("no command for 1 s" in line for line in closed_lines(caplog, client))


async def test_a_player_that_stops_reading_is_dropped_after_the_write_timeout(caplog, demo_frames) -> None:  # type: ignore[no-untyped-def]
    """Attack: RTMP players that stop reading were never disconnected. Now a write that blocks
    for ``write_timeout`` closes the connection. Mutant killed: no RTMP write timeout."""
    caplog.set_level(logging.INFO, logger="arcly_trio")
    big = [Frame(FrameKind.VIDEO, "h264", 0, 0, bytes(4) + bytes(200_000), keyframe=True)]
    async with attacked(rtmp={"write_timeout": 0.5}) as (engine, rtmp, http), trio.open_nursery() as nursery:
        async with engine.publish("live/fat") as publisher:
            await publisher.send(demo_frames[1])  # the video config
            client = await RawClient.open(rtmp.port)
            client.stream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            await client.connect("live", rtmp.port)
            stream_id = await client.create_stream()
            client.session.play(stream_id, "fat")
            await client.flush()
            await client.command()  # Play.Reset / Start ... then it stops reading

            async def feed() -> None:
                for i in range(400):
                    await publisher.send(Frame(FrameKind.VIDEO, "h264", 33 * i, 33 * i, big[0].payload, keyframe=True))
                    await trio.sleep(0.01)

            nursery.start_soon(feed)

            def ended() -> list[str]:  # the client's lines but the one of its start
                return [
                    r.getMessage()
                    for r in caplog.records
                    if client.tag in r.getMessage() and not r.getMessage().endswith(" playing live/fat")
                ]

            with trio.fail_after(8):
                while not ended():
                    await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
        # One line says it: the play's end, with why (issue 19, item 8).
        assert [line.partition("live/fat ")[2] for line in ended()] == [
            "(dropped: a write blocked for 0.5 s (the peer does not read); 0 frames dropped)"
        ]


async def test_an_idle_flood_from_one_address_does_not_lock_players_out(  # type: ignore[no-untyped-def]
    autojump_clock, demo_frames
) -> None:
    """Attack: idle connections filling the cap (4094 of 4096; newcomers reset). Now, at the
    cap, the connection longest without progress makes room, so a real player from the same
    address still gets in; and once the server is near its cap (three quarters of it), an
    address holds at most ``max_pending_per_address`` connections idle for ``idle_after``
    seconds. Mutants killed: a plain connection cap with no eviction; no per-address quota
    under pressure."""
    async with attacked(rtmp={"max_connections": 20, "max_pending_per_address": 8}) as (engine, rtmp, http):
        async with trio.open_nursery() as nursery:
            await healthy_stream(engine, demo_frames, nursery)
            idle = [await RawClient.open(rtmp.port) for _ in range(30)]
            await trio.sleep(0.1)
            assert rtmp.admission.open == 20 and rtmp.admission.evictions == 10
            counter = await healthy_player(rtmp.port, nursery)
            await still_flowing(counter)
            assert rtmp.admission.evictions == 11
            await trio.sleep(rtmp.admission.idle_after)  # the flood is idle now
            idle += [await RawClient.open(rtmp.port) for _ in range(5)]
            await trio.sleep(0.1)
            assert rtmp.admission.idle("127.0.0.1") <= 8
            assert rtmp.admission.open <= 8 + 5 + 1
            await still_flowing(counter)
            for client in idle:
                await client.aclose()
            nursery.cancel_scope.cancel()


async def test_an_idle_http_flood_does_not_lock_requests_out(autojump_clock, http_get) -> None:  # type: ignore[no-untyped-def]
    """Attack: 1100 idle HTTP connections (newcomers got 503 or a reset). Scaled down: 30
    idle connections against 20 slots; requests from the same address are served, and once
    the flood is idle and the server near its cap the address keeps at most its quota.
    Mutant killed: no eviction at the cap."""
    async with attacked(http={"max_connections": 20, "max_pending_per_address": 4}) as (engine, rtmp, http):
        idle = [await trio.open_tcp_stream("127.0.0.1", http.port) for _ in range(30)]
        await trio.sleep(0.1)
        assert http.admission.open == 20
        for _ in range(3):
            status, _, _ = await http_get(http.port, "/api/health")
            assert status == 200
        await trio.sleep(http.admission.idle_after)
        status, _, _ = await http_get(http.port, "/api/health")
        assert status == 200
        assert http.admission.idle("127.0.0.1") <= 4
        for stream in idle:
            await stream.aclose()


async def test_refused_tokens_are_throttled_per_address_and_logged_per_burst(caplog) -> None:  # type: ignore[no-untyped-def]
    """Attack: 2000 wrong publish tokens in 2.3 s, no throttling, a log line per try. Now each
    refusal doubles the wait of that address's next try, other addresses are untouched, and a
    burst logs a line or two. Mutant killed: no throttle."""
    caplog.set_level(logging.WARNING)
    throttle = AuthThrottle(base_delay=0.01, max_delay=0.2, log_interval=60)
    async with attacked(auth=TokenAuthenticator(publish_token="right"), throttle=throttle) as (engine, rtmp, http):
        started = trio.current_time()
        for attempt in range(12):
            client = await RawClient.open(rtmp.port)
            await client.connect("live", rtmp.port)
            stream_id = await client.create_stream()
            client.session.call("publish", f"cam?token=wrong{attempt}", "live", stream_id=stream_id, transaction_id=0)
            await client.flush()
            with trio.fail_after(5):
                status = await client.command()
            assert status.info["code"] == "NetStream.Publish.Denied"
            await client.aclose()
        waited = trio.current_time() - started
        assert throttle.delayed == 11
        assert throttle.delay("127.0.0.1", "publish") == 0.2
        assert throttle.delay("127.0.0.2", "publish") == 0.0
        assert waited >= 0.01 * (1 + 2 + 4 + 8 + 16) + 0.2 * 6
        auth_lines = [r for r in caplog.records if r.name == "arcly_trio.auth"]
        assert 1 <= len(auth_lines) <= 2, [r.getMessage() for r in auth_lines]
        # The right token from the same address gets in (after its delay), and resets it.
        client = await RawClient.open(rtmp.port)
        await client.connect("live", rtmp.port)
        stream_id = await client.create_stream()
        client.session.publish(stream_id, "cam?token=right")
        await client.flush()
        with trio.fail_after(5):
            assert (await client.command()).info["code"] == "NetStream.Publish.Start"
        assert throttle.delay("127.0.0.1", "publish") == 0.0
        await client.aclose()


class _Broken:
    """An authenticator with a bug: plays make it raise ``ValueError`` (with peer text in it)."""

    async def authorize_publish(self, key: StreamKey, credentials: Credentials) -> None:
        return None

    async def authorize_play(self, key: StreamKey, credentials: Credentials) -> None:
        raise ValueError(f"cannot parse {credentials.query.get('sign')!r}\nFORGED LINE")


@pytest.mark.parametrize("broken", [False, True], ids=["signature", "broken-authenticator"])
async def test_an_authenticator_that_raises_refuses_like_any_refusal(
    caplog, http_get, demo_frames, broken: bool
) -> None:  # type: ignore[no-untyped-def]
    """Issue 18, finding 2: ``?sign=²-<32 chars>`` made the signature check raise ``ValueError``
    (``"²".isdigit()``, then ``int("²")``), not ``Unauthorized``: 15 wrong ``?token=`` guesses
    got ``500`` in 0.07 s, none delayed, counted or audited, 15 tracebacks logged; the right
    token with the same ``sign`` got ``200`` (an oracle). Now each guess is a ``403``, delayed,
    counted and audited, no request gets a ``500``, and the right token still plays; an
    authenticator that raises anything at all refuses the same way, its traceback logged once,
    escaped.
    Mutants killed: ``str.isdigit()`` for the expiry (``signature``); ``Engine.authorize``
    catching ``Unauthorized`` only (``broken-authenticator``)."""
    caplog.set_level(logging.INFO)
    sink = MemorySink()
    throttle = AuthThrottle(base_delay=0.01, max_delay=0.04)
    auth = (
        _Broken()
        if broken
        else AnyOf([TokenAuthenticator(play_token="right"), SignedUrlAuthenticator("a-secret-of-the-server")])
    )
    sign = quote("\u00b2-" + "0" * 32)
    async with attacked(auth=auth, throttle=throttle, observer=AuditPipeline(sink)) as (engine, rtmp, http):
        async with engine.publish("live/cam") as publisher:
            await publisher.send(next(f for f in demo_frames if f.config))
            started = trio.current_time()
            for guess in range(15):
                status, _, body = await http_get(http.port, f"/live/cam.flv?token=guess{guess}&sign={sign}")
                assert status == 403, (status, body)
                assert (b"authorization failed" if broken else b"wrong token; malformed signature") in body, body
            waited = trio.current_time() - started
            assert throttle.refusals == 15 and throttle.delayed == 14
            assert waited >= 0.01 + 0.02 + 0.04 * 12
            if not broken:
                status, _, _ = await http_get(http.port, f"/live/cam.flv?token=right&sign={sign}", method="HEAD")
                assert status == 200
    refused = [r for r in sink.records if r["event"] == "auth" and not r["allowed"]]
    summaries = [r for r in sink.records if r["event"] == "auth-refusals"]
    assert len(refused) == 1 and refused[0]["stream"] == "cam" and refused[0]["address"] == "127.0.0.1"
    assert [(r["refused"], r["address"]) for r in summaries] == [(14, "127.0.0.1")]
    messages = [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if "handler of" in m or "internal server error" in m], messages
    assert all("\n" not in m for m in messages)
    raised = [m for m in messages if "the authenticator raised" in m]
    assert engine.authenticator_failures == (15 if broken else 0)
    assert len(raised) == (1 if broken else 0)
    if broken:
        assert "Traceback" in raised[0] and "FORGED LINE" in raised[0] and "ValueError" in raised[0]


async def test_concurrent_guessers_from_one_address_get_no_more_tries_than_one(http_get, autojump_clock) -> None:  # type: ignore[no-untyped-def]
    """Issue 18, finding 6: the delay was slept once per request, so 600 concurrent wrong-token
    requests from one address got 245 guesses a second (one at a time: 0.5). Now an address has
    two authorizations in flight per action (and no queue once refused), the others get ``429``
    with ``Retry-After`` at once, and tries are spaced by the delay: 200 concurrent guessers
    (on the mock clock) make about as many guesses as one guesser in a row would in the same
    time.
    Mutant killed: the delay slept per request, with no bound on authorizations in flight."""
    calls: list[float] = []

    class Counting(TokenAuthenticator):
        async def authorize_play(self, key: StreamKey, credentials: Credentials) -> None:
            calls.append(trio.current_time())
            await super().authorize_play(key, credentials)

    throttle = AuthThrottle()  # the defaults: 0.05 s doubling up to 2 s, 2 in flight, 8 waiting
    statuses: collections.Counter[int] = collections.Counter()
    async with attacked(
        auth=Counting(play_token="right"),
        throttle=throttle,
        http={"max_pending_per_address": None, "max_connections": 1024},
    ) as (engine, rtmp, http):

        async def guesser(index: int) -> None:
            for attempt in range(6):
                status, headers, _ = await http_get(http.port, f"/live/cam.flv?token=g{index}-{attempt}", timeout=60)
                statuses[status] += 1
                if status == 429:
                    await trio.sleep(float(headers["retry-after"]))  # a polite guesser; a rude one is refused anyway

        async with trio.open_nursery() as nursery:
            for index in range(200):
                nursery.start_soon(guesser, index)
    assert set(statuses) == {403, 429} and statuses[403] == len(calls) == throttle.refusals - throttle.busy
    span = calls[-1] - calls[0]
    serial = serial_tries(span, throttle.base_delay, throttle.max_delay)
    # The first two were asked at once (nothing refused yet); from then on the tries are
    # spaced like one guesser's, and once the delay is at its most, by exactly that.
    assert span > 5 and len(calls) <= serial + throttle.max_in_flight, (len(calls), serial, span)
    gaps = [later - earlier for earlier, later in zip(calls, calls[1:])]
    assert all(gap >= throttle.max_delay - 1e-6 for gap in gaps[-3:]), (gaps, span, len(calls), serial)


def serial_tries(span: float, base: float, most: float) -> int:
    """How many tries one guesser in a row gets in ``span`` seconds (answers take no time)."""
    tries, at, delay = 1, 0.0, base
    while at + delay <= span:
        at += delay
        tries += 1
        delay = min(most, delay * 2)
    return tries


async def test_a_successful_play_does_not_wipe_the_refusals_of_another_stream(http_get, demo_frames) -> None:  # type: ignore[no-untyped-def]
    """Issue 18, finding 6: a successful play reset the address's delay, so a guesser holding
    one valid URL could interleave it with its guesses and never wait. Now an allowed play
    clears the refusals of its own stream only.
    Mutant killed: ``allowed()`` forgetting every stream's refusals of the address."""

    class OneOpenStream(TokenAuthenticator):
        async def authorize_play(self, key: StreamKey, credentials: Credentials) -> None:
            if key.name != "open":
                await super().authorize_play(key, credentials)

    throttle = AuthThrottle(base_delay=0.02, max_delay=1.0)
    async with attacked(auth=OneOpenStream(play_token="right"), throttle=throttle) as (engine, rtmp, http):
        async with engine.publish("live/open") as publisher:
            await publisher.send(next(f for f in demo_frames if f.config))
            for guess in range(4):
                assert (await http_get(http.port, f"/live/secret.flv?token=g{guess}"))[0] == 403
            earned = throttle.delay("127.0.0.1", "play")
            assert earned == 0.02 * 2**3
            for _ in range(3):
                assert (await http_get(http.port, "/live/open.flv", method="HEAD"))[0] == 200
                assert throttle.delay("127.0.0.1", "play") == earned
            started = trio.current_time()
            assert (await http_get(http.port, "/live/secret.flv?token=g5"))[0] == 403
            assert trio.current_time() - started >= earned
            assert (await http_get(http.port, "/live/secret.flv?token=right", method="HEAD"))[0] == 404
            assert throttle.delay("127.0.0.1", "play") == 0.0  # its own success clears it


async def test_a_flood_of_refusals_cannot_roll_the_audit_history_out(tmp_path, http_get, demo_frames) -> None:  # type: ignore[no-untyped-def]
    """Issue 18, finding 7: every refused request was an audit record (231 bytes): at 245 a
    second the default 60 MiB rolled over in 18 minutes, so an anonymous client could erase the
    history. Now the refusals of an address and action are one record when their burst starts
    and one summary per interval (and when the audit stops); allowed decisions stay one record
    each. 300 refusals in files of 8 KiB: the publish recorded before them is still there.
    Mutant killed: one audit record per refusal."""
    path = tmp_path / "audit.jsonl"
    audit = AuditPipeline(JsonLinesFile(str(path), max_bytes=8192, backups=1))
    throttle = AuthThrottle(base_delay=0.0001, max_delay=0.0001)
    async with attacked(auth=TokenAuthenticator(play_token="right"), throttle=throttle, observer=audit) as (
        engine,
        rtmp,
        http,
    ):
        async with engine.publish("live/cam", Credentials(peer=("198.51.100.7", 1935))) as publisher:
            await publisher.send(next(f for f in demo_frames if f.config))
            for guess in range(300):
                assert (await http_get(http.port, f"/live/cam.flv?token=g{guess}"))[0] == 403
            for _ in range(3):
                assert (await http_get(http.port, "/live/cam.flv?token=right", method="HEAD"))[0] == 200
    records = [
        json.loads(line)
        for name in (f"{path}.1", str(path))
        if os.path.exists(name)
        for line in open(name).read().splitlines()
    ]
    assert not os.path.exists(f"{path}.1")  # nothing rolled over
    auth = [(r["allowed"], r["address"]) for r in records if r["event"] == "auth"]
    assert auth == [
        (True, "198.51.100.7"),
        (False, "127.0.0.1"),
        (True, "127.0.0.1"),
        (True, "127.0.0.1"),
        (True, "127.0.0.1"),
    ]
    (summary,) = [r for r in records if r["event"] == "auth-refusals"]
    assert summary["refused"] == 299 and summary["reasons"] == {"wrong token": 299} and summary["action"] == "play"
    assert audit.aggregated == 299


# ---------------------------------------------------------------- names and minor ones


async def test_stream_names_with_control_characters_are_refused_and_never_logged_raw(caplog) -> None:  # type: ignore[no-untyped-def]
    """Attack: stream names with a newline forged log lines. Mutant killed: names unchecked."""
    caplog.set_level(logging.DEBUG)
    async with attacked() as (engine, rtmp, http):
        client = await RawClient.open(rtmp.port)
        await client.connect("live", rtmp.port)
        stream_id = await client.create_stream()
        client.session.publish(stream_id, "cam\n2026-01-01 INFO arcly_trio.rtmp: FORGED")
        await client.flush()
        with trio.fail_after(5):
            status = await client.command()
        assert status.info["code"] == "NetStream.Publish.BadName"
        with trio.fail_after(5):
            await client.assert_closed_by_server()
        client = await RawClient.open(rtmp.port)
        await client.handshake()
        client.session.connect("li\nve\x1b[2J")
        await client.flush()
        with trio.fail_after(5):
            await client.assert_closed_by_server()
    for record in caplog.records:
        assert "\n" not in record.getMessage() and "\x1b" not in record.getMessage(), record.getMessage()
    assert any("FORGED" in r.getMessage() for r in caplog.records)  # logged, escaped


async def test_http_rejects_what_it_cannot_serve_properly(http_get) -> None:  # type: ignore[no-untyped-def]
    """Minor ones: an HTTP/2.0 request line was answered 200; 3-byte and 10 KB
    Sec-WebSocket-Keys were accepted."""
    async with attacked() as (engine, rtmp, http):
        with trio.fail_after(5):
            stream = await trio.open_tcp_stream("127.0.0.1", http.port)
            async with stream:
                await stream.send_all(b"GET /api/health HTTP/2.0\r\nHost: x\r\n\r\n")
                assert (await stream.receive_some(1000)).startswith(b"HTTP/1.1 505 ")
        async with engine.publish("live/ws"):
            for key in ("abc", "A" * 10_000, "dGhlIHNhbXBsZSBub25jZQ=="[:-1] + "!"):
                status, _, body = await http_get(
                    http.port,
                    "/live/ws.flv",
                    headers=[
                        ("upgrade", "websocket"),
                        ("connection", "Upgrade"),
                        ("sec-websocket-version", "13"),
                        ("sec-websocket-key", key),
                    ],
                )
                assert status == 400 and b"Sec-WebSocket-Key" in body, (key[:10], status)


def test_secrets_come_from_a_file_or_the_environment(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Minor: the token was visible in the process arguments (``--publish-token``)."""
    from arcly_trio.server.cli import build_parser, read_secret

    secret = tmp_path / "token"
    secret.write_text("from-file\n")
    assert read_secret(None, str(secret), "ARCLY_TEST_TOKEN") == "from-file"
    monkeypatch.setenv("ARCLY_TEST_TOKEN", "from-env")
    assert read_secret(None, None, "ARCLY_TEST_TOKEN") == "from-env"
    assert read_secret("from-argv", str(secret), "ARCLY_TEST_TOKEN") == "from-argv"
    with pytest.raises(SystemExit, match="empty"):
        (tmp_path / "empty").write_text("\n")
        read_secret(None, str(tmp_path / "empty"), "ARCLY_TEST_TOKEN")
    args = build_parser().parse_args(["serve", "--publish-token-file", str(secret)])
    assert args.publish_token_file == str(secret)


# ------------------------------------------------------------- publishers (issue 18: 11, 12)


async def ingest_from(
    port: int, name: str, nursery: trio.Nursery, local: str = "127.0.0.1"
) -> tuple[trio_websocket.WebSocketConnection, dict[str, Any]]:
    """A WebSocket ``/live/{name}/ingest`` publisher from the address ``local``, and the server's
    first message (``start``, or the ``end`` of a refusal)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port, local_address=local)
    ws = await trio_websocket.wrap_client_stream(
        nursery, stream, "127.0.0.1", f"/live/{name}/ingest", subprotocols=[SUBPROTOCOL]
    )
    return ws, json.loads(await ws.get_message())


async def close_code(ws: trio_websocket.WebSocketConnection) -> int | None:
    """Read until the server closes ``ws``; its close code."""
    with trio.fail_after(5):
        try:
            while True:
                await ws.get_message()
        except trio_websocket.ConnectionClosed as exc:
            return exc.reason.code if exc.reason is not None else None


@pytest.mark.parametrize("publishers, per_address", [(40, 4), (24, None)])
async def test_idle_publishers_from_one_address_leave_another_address_publishing(
    demo_frames, publishers: int, per_address: int | None
) -> None:  # type: ignore[no-untyped-def]
    """Attack: 1000 idle ``/ingest`` publishers from 127.0.0.1 held every publisher slot (``--max-publishers
    1000``) until the idle timeout; the next publisher, a real streamer, got ``4503``. Here as many
    idle publishers as there are slots, from one address: only ``--max-publishers-per-ip`` of them
    are accepted (the rest get ``4429`` at once, RTMP publishers from that address
    ``NetStream.Publish.Rejected``), and a publisher from another address (127.0.0.2) starts at
    once. Once with the limit lowered, once at ``serve``'s default. Mutant killed: counting
    publishers only in all."""
    from arcly_trio.server.cli import build_parser

    limit = per_address or build_parser().parse_args(["serve"]).max_publishers_per_ip
    async with attacked(publishers=(publishers, limit)) as (engine, rtmp, http), trio.open_nursery() as nursery:
        accepted, refused = [], []
        with trio.fail_after(30):
            for i in range(publishers):
                ws, first = await ingest_from(http.port, f"idle{i}", nursery)
                (accepted if first["type"] == "start" else refused).append(ws)
            assert len(accepted) == limit and engine.publishers_from("127.0.0.1") == limit
            assert {await close_code(ws) for ws in refused} == {4429}
            client = await RawClient.open(rtmp.port)
            await client.connect("live", rtmp.port)
            client.session.publish(await client.create_stream(), "rtmp-idle")
            await client.flush()
            statuses = [e.info for e in await client.read_until_closed() if getattr(e, "name", "") == "onStatus"]
            assert statuses[-1]["code"] == "NetStream.Publish.Rejected"
            assert "per address" in statuses[-1]["description"]
            real, first = await ingest_from(http.port, "real", nursery, local="127.0.0.2")
            assert first["type"] == "start", first
            assert engine.publisher_count == limit + 1
            for ws in [*accepted, real]:
                await ws.aclose()
        nursery.cancel_scope.cancel()


async def test_an_ingest_publisher_that_sends_nothing_is_closed_after_the_start_timeout() -> None:
    """Attack: a publisher that is accepted and then sends nothing kept its slot for the 30 s idle
    timeout. With ``--publish-start-timeout`` (0.5 s here) it is closed with ``4410`` and the
    reason, and its slot is free again. Mutant killed: only the idle timeout."""
    async with attacked(start_timeout=0.5, publishers=(1, 1)) as (engine, rtmp, http), trio.open_nursery() as nursery:
        with trio.fail_after(10):
            ws, first = await ingest_from(http.port, "idle", nursery)
            assert first["type"] == "start"
            end = json.loads(await ws.get_message())
            assert end["type"] == "end" and "no media within 0.5 s" in end["message"], end
            assert await close_code(ws) == 4410
            again, first = await ingest_from(http.port, "again", nursery)
            assert first["type"] == "start"
            await again.aclose()
        nursery.cancel_scope.cancel()


async def test_a_publisher_over_the_bitrate_limit_is_cut_and_told(demo_frames, caplog) -> None:  # type: ignore[no-untyped-def]
    """Attack: one publisher at 416 Mbit/s (no token needed by default) took RSS from 54 MB to
    564 MB; over ``/ingest``, 40 keyframes of 4 MiB in 4.7 s took it to 363 MB. With the
    application's bitrate limit (8 Mbit/s here: 4 MB of burst) an RTMP publisher of 200 KB
    frames as fast as it can is cut within a few megabytes and told why
    (``NetStream.Publish.Rejected``), an ``/ingest`` one is closed with ``4429`` and the reason;
    the healthy player goes on. Mutant killed: no rate limit in the kernel's publish path."""
    limited = AppSpec("live", hls=True, max_publish_bitrate=8_000_000)
    async with attacked(app=limited) as (engine, rtmp, http), trio.open_nursery() as nursery:
        await healthy_stream(engine, demo_frames, nursery)
        counter = await healthy_player(rtmp.port, nursery)
        configs = [f for f in demo_frames if f.config]
        key = next(f for f in demo_frames if f.keyframe and not f.config)
        client = await RawClient.open(rtmp.port)
        await client.connect("live", rtmp.port)
        stream_id = await client.create_stream()
        client.session.publish(stream_id, "fast")
        await client.flush()
        await client.command()
        sent = 0

        async def flood() -> None:
            nonlocal sent
            for frame in [*configs, key]:
                if frame.kind is not FrameKind.DATA:
                    client.session.send_media(stream_id, 9 if frame.is_video else 8, 0, flv.tag_body(frame))
            try:
                for i in range(1, 500):  # up to 100 MB
                    client.session.send_media(stream_id, 9, 33 * i, b"\x27\x01\x00\x00\x00" + bytes(200_000))
                    await client.flush()
                    sent += 200_000
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

        with trio.fail_after(20):
            async with trio.open_nursery() as attack:
                attack.start_soon(flood)
                events = await client.read_until_closed()
                attack.cancel_scope.cancel()
        statuses = [e.info for e in events if getattr(e, "name", "") == "onStatus"]
        assert statuses[-1]["code"] == "NetStream.Publish.Rejected" and statuses[-1]["level"] == "error"
        assert "over the limit of 8 Mbit/s (rate limited)" in statuses[-1]["description"]
        assert sent < 20 * MIB, sent
        assert any("live/fast from 127.0.0.1 over rtmp cut" in r.getMessage() for r in caplog.records)
        with trio.fail_after(20):
            with pytest.raises(FramesClosed) as closed, unwrap_single():
                async with open_frames_publisher(f"ws://127.0.0.1:{http.port}/live/fast2/ingest") as pub:
                    for frame in configs:
                        await pub.send(frame)
                    await pub.send(key)
                    for i in range(1, 500):
                        await pub.send(Frame(FrameKind.VIDEO, "h264", 33 * i, 33 * i, bytes(4) + bytes(200_000)))
        assert closed.value.code == 4429 and "rate limited" in str(closed.value)
        assert engine.publisher_count == 1  # the healthy one
        await still_flowing(counter)
        nursery.cancel_scope.cancel()
