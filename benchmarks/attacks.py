#!/usr/bin/env python3
"""The hardening review's attacks against a real ``arcly-trio serve``, measured.

Starts ``arcly-trio serve --demo`` (a healthy publisher: the built-in demo stream) as a child
process on free ports, connects a healthy RTMP player of ``live/demo``, then runs each attack of
the review's table in turn, at the scale given by ``--scale`` (1.0 = the review's numbers where
that is practical on one machine). For each attack it prints one JSON line:

* ``loop_lag_max_ms``: the worst event-loop stall the server saw during the attack (its own
  measurement, from ``/api/health``: every stream on the loop stalled that long);
* ``rss_before_mb`` / ``rss_peak_mb`` / ``rss_after_mb``: the server's resident memory before,
  at the worst during, and 2 s after the attack;
* ``healthy_fps_min``: the lowest one-second video frame rate the healthy player received
  during the attack (the demo is 30 fps);
* ``server_cpu_s`` / ``attack_s``: the server's CPU time during the attack, and how long it took
  (a loop busier than one core cannot be free of stalls);
* ``loop_runqueue_wait_s``: how long the server's event-loop thread waited for a CPU during the
  attack (``/proc/PID/schedstat``): on a shared machine, part of a stall is other processes';
* attack-specific fields (connections refused or closed, tries answered...).

Nothing here is a pass/fail test (that is ``tests/workers/test_attacks.py``); these are the numbers
docs/hardening.md quotes. Run it from the repository root:

    .venv/bin/python benchmarks/attacks.py            # every attack
    .venv/bin/python benchmarks/attacks.py --only fresh-stream-ids --scale 0.5
    .venv/bin/python benchmarks/attacks.py --only fast-publisher --server-arg=--heap-trim-interval=0

The server's ``--on-play`` hook is the bench's own (a small trio HTTP server): it allows every
play at once, except of streams named ``hung*``, which it never answers (``hung-on-play``);
``--record`` records every stream into a temporary directory (the ``storage:record`` check).

``--server-arg`` passes an option to ``serve`` (repeatable): to measure without a limit (``0``
turns most of them off) or without the heap trim.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import trio_websocket  # noqa: E402

from arcly_trio.media import amf0  # noqa: E402
from arcly_trio.protocols.frames.messages import SUBPROTOCOL  # noqa: E402
from arcly_trio.protocols.rtmp import MediaMessage  # noqa: E402
from arcly_trio.protocols.rtmp.chunks import chunk_message  # noqa: E402
from arcly_trio.protocols.rtmp.messages import encode_set_chunk_size  # noqa: E402
from arcly_trio.testing.rtmp import RawRtmpClient  # noqa: E402

HOST = "127.0.0.1"
MIB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line, 16)
        if not size:
            break
        out, body = out + body[:size], body[size + 2 :]
    return out


def cpu_seconds(pid: int) -> float:
    """The process's CPU time so far (user + system), from ``/proc/PID/stat``."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def runqueue_wait_seconds(pid: int) -> float:
    """How long the process's main thread (the event loop) waited on a run queue so far."""
    try:
        with open(f"/proc/{pid}/schedstat") as schedstat:
            return int(schedstat.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):  # no schedstats in this kernel
        return 0.0


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


# ------------------------------------------------------------------------- a small client


class Client(RawRtmpClient):
    """One RTMP connection driven by the sans-IO client session (the testing kit's raw client)."""

    async def connect(self, port: int, app: str = "live") -> None:
        await self.handshake()
        self.session.connect(app, f"rtmp://{HOST}:{port}/{app}")
        await self.flush()
        await self.command()

    async def create_stream(self) -> int:
        self.session.create_stream()
        await self.flush()
        return int((await self.command()).arguments[0])

    async def closed(self, timeout: float) -> bool:
        """Whether the server closes the connection within ``timeout`` (reading everything)."""
        with trio.move_on_after(timeout):
            while True:
                try:
                    if not await self.stream.receive_some(65536):
                        return True
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return True
        return False


class Healthy:
    """A player of live/demo that counts video frames per second."""

    def __init__(self) -> None:
        self.per_second: dict[int, int] = {}

    async def run(self, port: int) -> None:
        client = await Client.open(port)
        await client.connect(port)
        stream_id = await client.create_stream()
        client.session.play(stream_id, "demo")
        await client.flush()
        while True:
            data = await client.stream.receive_some(65536)
            if not data:
                return
            client.session.receive_data(data)
            for event in client.session.events():
                if isinstance(event, MediaMessage) and event.type_id == 9:
                    second = int(time.monotonic())
                    self.per_second[second] = self.per_second.get(second, 0) + 1
            await client.flush()

    def min_fps(self, start: float, end: float) -> int:
        seconds = range(int(start) + 1, int(end))
        return min((self.per_second.get(s, 0) for s in seconds), default=-1)


# ----------------------------------------------------------------------------- attacks


# HlsService's default delete delay: window (6) x target duration (2 s).
HLS_DELETE_DELAY = 12.0


class Bench:
    def __init__(self, rtmp: int, http: int, pid: int, scale: float) -> None:
        self.rtmp = rtmp
        self.http = http
        self.pid = pid
        self.scale = scale
        self.rss_peak = 0.0
        self.hook_held = 0
        """Requests the bench's ``--on-play`` hook holds (see :func:`_hung_hook`)."""

    def n(self, full: int, least: int = 1) -> int:
        return max(least, int(full * self.scale))

    async def health(self) -> dict[str, Any]:
        stream = await trio.open_tcp_stream(HOST, self.http)
        async with stream:
            await stream.send_all(b"GET /api/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := await stream.receive_some(65536):
                data += chunk
        return dict(json.loads(data.split(b"\r\n\r\n", 1)[1]))

    async def watch_rss(self) -> None:
        while True:
            self.rss_peak = max(self.rss_peak, rss_mb(self.pid))
            await trio.sleep(0.1)

    # Each attack returns its own fields.

    async def control(self) -> dict[str, Any]:
        """No attack for 5 s: the loop lag and frame rate of the same server unattacked, the
        figure the others compare with (on a shared machine it moves)."""
        await trio.sleep(5)
        return {}

    async def pre_connect_partials(self) -> dict[str, Any]:
        """8 connections: Set Chunk Size 2, then 8 MiB video messages, every chunk but the last
        (the review: +384 MB per connection). Now refused; then the same with commands that
        stay under the per-kind limit and pile up to the setup buffer."""
        closed = 0
        for _ in range(self.n(8)):
            client = await Client.open(self.rtmp)
            await client.handshake()
            await client.stream.send_all(chunk_message(2, 1, 0, 0, encode_set_chunk_size(2), 128))
            closed += await client.closed(5)
            await client.aclose()
            client = await Client.open(self.rtmp)
            await client.handshake()
            header = bytes([6]) + bytes(3) + (8 * MIB).to_bytes(3, "big") + b"\x09" + (1).to_bytes(4, "little")
            await client.stream.send_all(header + bytes(4096))
            closed += await client.closed(5)
            await client.aclose()
            client = await Client.open(self.rtmp)
            await client.handshake()
            try:
                for i in range(8):
                    await client.stream.send_all(chunk_message(10 + i, 20, 0, 0, bytes(60 * 1024), 128)[:-129])
            except trio.BrokenResourceError:
                pass
            closed += await client.closed(5)
            await client.aclose()
        return {"connections": 3 * self.n(8), "closed_by_server": closed}

    async def _publish_gop(self, name: str, gop_mb: float, frame_size: int = 200_000) -> tuple[Client, int]:
        from arcly_trio.media import flv
        from arcly_trio.server.demo import demo_frames

        frames = demo_frames()
        client = await Client.open(self.rtmp)
        await client.connect(self.rtmp)
        stream_id = await client.create_stream()
        client.session.publish(stream_id, f"{name}?token=right")
        await client.flush()
        await client.command()
        for frame in frames[:3]:
            if frame.is_metadata:
                client.session.send_data(stream_id, 0, *amf0.decode(frame.payload))
            else:
                client.session.send_media(stream_id, 9 if frame.is_video else 8, 0, flv.tag_body(frame))
        key = next(f for f in frames if f.keyframe and not f.config)
        client.session.send_media(stream_id, 9, 0, flv.tag_body(key))
        count = max(1, int(gop_mb * MIB / frame_size))
        for i in range(1, count + 1):
            client.session.send_media(stream_id, 9, 33 * i, b"\x27\x01\x00\x00\x00" + bytes(frame_size))
            await client.flush()
        return client, stream_id

    async def fresh_stream_ids(self) -> dict[str, Any]:
        """150 plays naming fresh message stream ids of a stream with a 12 MB GOP (the review:
        +1.8 GB in 6.5 s). Now one encoding per frame, whatever the ids."""
        publisher, _ = await self._publish_gop("gop", 12 * self.scale if self.scale < 1 else 12)
        before = rss_mb(self.pid)
        players = []
        for i in range(self.n(150)):
            client = await Client.open(self.rtmp)
            await client.connect(self.rtmp)
            client.session.play(1000 + i, "gop")
            await client.flush()
            players.append(client)

        async def drain(client: Client) -> None:
            received = 0
            with trio.move_on_after(20):
                while received < 12 * MIB * min(1.0, self.scale):
                    data = await client.stream.receive_some(1 << 20)
                    if not data:
                        return
                    received += len(data)

        async with trio.open_nursery() as nursery:
            for client in players:
                nursery.start_soon(drain, client)
        after = rss_mb(self.pid)
        for client in players:
            await client.aclose()
        await publisher.aclose()
        return {"plays": len(players), "rss_growth_mb": round(after - before, 1)}

    async def large_gop_sessions(self, frame_size: int = 200_000) -> dict[str, Any]:
        """25 publish sessions with a 12 MB GOP, one after another (the review: +340 MB never
        returned). Now every session's memory is freed when it ends, but for what HLS keeps
        for its delete delay (measured 2 s after the last session and again once it passed);
        back to back, they are over the bitrate limit, and reconnecting does not renew it."""
        before = rss_mb(self.pid)
        cut = 0
        for _i in range(self.n(25)):
            try:
                client, _ = await self._publish_gop("big", 12 * min(1.0, self.scale), frame_size)
            except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError):
                cut += 1  # the rate limit: reconnecting does not renew the allowance
                continue
            await trio.sleep(0.2)
            await client.aclose()
            await trio.sleep(0.2)
        await trio.sleep(2)
        soon = rss_mb(self.pid) - before
        # HLS (on by default) keeps an ended stream's playlist and segments for its delete
        # delay (window x target duration: 12 s by default) so players can finish them.
        await trio.sleep(HLS_DELETE_DELAY + 2)
        return {
            "sessions": self.n(25),
            "cut_by_rate_limit": cut,
            "rss_growth_after_mb": round(soon, 1),
            "rss_growth_after_hls_expiry_mb": round(rss_mb(self.pid) - before, 1),
        }

    async def small_frame_sessions(self) -> dict[str, Any]:
        """The same with 100 KB frames: under glibc's mmap threshold, they come from the heap,
        which keeps their pages once they are freed unless the server trims it (RSS +60 MB for
        good before ``--heap-trim-interval``). Run it with ``--max-publish-bitrate=0``."""
        return await self.large_gop_sessions(100_000)

    async def aggregate_metadata(self) -> dict[str, Any]:
        """onMetaData inside an 8 MiB aggregate message (the review: a 3.4-5.2 s stall per
        message). Now the data sub-message is held to the 64 KiB data limit."""
        closed = 0
        for _ in range(self.n(5)):
            client = await Client.open(self.rtmp)
            await client.connect(self.rtmp)
            stream_id = await client.create_stream()
            client.session.publish(stream_id, "agg?token=right")
            await client.flush()
            await client.command()
            body = amf0.encode("onMetaData", {"x": "y" * (8 * MIB - 100)})
            tag = bytes([18]) + len(body).to_bytes(3, "big") + bytes(7) + body + (11 + len(body)).to_bytes(4, "big")
            client.session.send_message(5, 22, stream_id, 0, tag)
            try:
                await client.flush()
            except trio.BrokenResourceError:
                pass
            closed += await client.closed(10)
            await client.aclose()
        return {"messages": self.n(5), "closed_by_server": closed}

    async def nal_bombs(self) -> dict[str, Any]:
        """H.264 keyframes of 8 MB of 1-byte NAL units, HLS on (the review: 2-4.7 s stall per
        frame in the segmenter). Now refused after 1024 NAL units."""
        client, stream_id = await self._publish_gop("nal", 0.2)
        bomb = b"\x17\x01\x00\x00\x00" + b"\x00\x00\x00\x01\x65" * (8_000_000 // 5)
        for i in range(self.n(5)):
            client.session.send_media(stream_id, 9, 5000 + 2000 * i, bomb)
            await client.flush()
            await trio.sleep(0.5)
        await client.aclose()
        return {"frames": self.n(5)}

    async def slow_drip(self) -> dict[str, Any]:
        """Connections that send 4 bytes every 20 s (the review: never reaped; 4094 of them fill
        the 4096 cap). Now reaped after the setup timeout; newcomers get in meanwhile."""
        count = self.n(1000)
        clients = []
        for _ in range(count):
            client = await Client.open(self.rtmp)
            await client.handshake()
            clients.append(client)
        started = time.monotonic()
        newcomer_ok = False
        try:
            probe = await Client.open(self.rtmp)
            with trio.fail_after(5):
                await probe.connect(self.rtmp)
                newcomer_ok = True
            await probe.aclose()
        except (ConnectionError, trio.TooSlowError, trio.BrokenResourceError, OSError):
            pass
        alive = clients

        async def drip(client: Client) -> bool:
            for _ in range(10):
                try:
                    await client.stream.send_all(b"\x03\x00\x00\x00")
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return True
                if await client.closed(2):
                    return True
            return False

        reaped = 0
        async with trio.open_nursery() as nursery:
            results: list[bool] = []

            async def one(client: Client) -> None:
                results.append(await drip(client))

            for client in alive:
                nursery.start_soon(one, client)
        reaped = sum(results)
        for client in clients:
            await client.aclose()
        return {
            "connections": count,
            "reaped": reaped,
            "newcomer_connected": newcomer_ok,
            "seconds": round(time.monotonic() - started, 1),
        }

    async def stalled_players(self) -> dict[str, Any]:
        """RTMP players that stop reading (the review: never disconnected). Now dropped after
        the write timeout."""
        clients = []
        for _ in range(self.n(50)):
            client = await Client.open(self.rtmp)
            client.stream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            await client.connect(self.rtmp)
            stream_id = await client.create_stream()
            client.session.play(stream_id, "demo")
            await client.flush()
            clients.append(client)
        started = time.monotonic()
        # The kernel's send buffer takes a while to fill at the demo's bitrate; after that a
        # write blocks and the write timeout runs. The server's own subscriber count tells.
        players = len(clients) + 1  # and the healthy one
        with trio.move_on_after(120):
            while await self.subscribers("demo") > 1:
                await trio.sleep(1)
        remaining = await self.subscribers("demo") - 1
        seconds = time.monotonic() - started
        for client in clients:
            await client.aclose()
        return {"players": players - 1, "dropped": players - 1 - remaining, "seconds_until_dropped": round(seconds, 1)}

    async def subscribers(self, name: str) -> int:
        stream = await trio.open_tcp_stream(HOST, self.http)
        async with stream:
            await stream.send_all(b"GET /api/streams HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := await stream.receive_some(65536):
                data += chunk
        body = data.split(b"\r\n\r\n", 1)[1]
        if b"transfer-encoding: chunked" in data.split(b"\r\n\r\n", 1)[0].lower():
            body = _dechunk(body)
        document = json.loads(body)
        for app in document["apps"]:
            for stream_doc in app["streams"]:
                if stream_doc["name"] == name:
                    return int(stream_doc["subscribers"]["by_protocol"].get("rtmp", 0))
        return 0

    async def idle_rtmp(self) -> dict[str, Any]:
        """4200 RTMP connections from one address that send nothing, past the 4096 cap (the
        review: 4094 filled the cap and newcomers were reset). At the cap the connection longest
        without progress makes room, and from three quarters of the cap on an address keeps at
        most 32 idle ones: a new player from the same address plays."""
        idle: list[trio.SocketStream] = []
        for _ in range(self.n(4200)):
            try:
                idle.append(await trio.open_tcp_stream(HOST, self.rtmp))
            except OSError:
                break
        await trio.sleep(0.5)
        newcomer_ok = False
        try:
            with trio.fail_after(10):
                probe = await Client.open(self.rtmp)
                await probe.connect(self.rtmp)
                stream_id = await probe.create_stream()
                probe.session.play(stream_id, "demo")
                await probe.flush()
                await probe.read_event(MediaMessage)
                newcomer_ok = True
            await probe.aclose()
        except (ConnectionError, trio.TooSlowError, trio.BrokenResourceError, OSError):
            pass
        closed = 0

        async def check(stream: trio.SocketStream) -> None:
            nonlocal closed
            try:
                data = await stream.receive_some(1)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            closed += not data

        with trio.move_on_after(1):
            async with trio.open_nursery() as nursery:
                for stream in idle:
                    nursery.start_soon(check, stream)
        for stream in idle:
            await trio.aclose_forcefully(stream)
        return {
            "idle_connections": len(idle),
            "closed_by_server": closed,
            "still_open": len(idle) - closed,
            "newcomer_played": newcomer_ok,
        }

    async def idle_http(self) -> dict[str, Any]:
        """1100 idle HTTP connections (the review: newcomers got 503 or a reset). Below three
        quarters of the cap they are simply held until the request-head timeout; near the cap
        the ones longest idle make room."""
        idle = [await trio.open_tcp_stream(HOST, self.http) for _ in range(self.n(1100))]
        ok = 0
        for _ in range(10):
            try:
                status = (await self.health()).get("status")
                ok += status == "ok"
            except (OSError, ValueError, trio.BrokenResourceError):
                pass
        for stream in idle:
            await trio.aclose_forcefully(stream)
        return {"idle_connections": len(idle), "healthy_requests_ok": f"{ok}/10"}

    async def fast_publisher(self) -> dict[str, Any]:
        """One publisher of 1.7 MB video frames at 30 fps (416 Mbit/s: the review's ffmpeg took
        RSS from 54 MB to 564 MB, 447 MB 20 s later), for up to 10 s. Now cut by the bitrate
        limit within a second; what HLS holds of a stream is capped besides (measured 2 s
        after, and again once HLS's delete delay passed)."""
        from arcly_trio.media import flv
        from arcly_trio.server.demo import demo_frames

        frames = demo_frames()
        before = rss_mb(self.pid)
        client = await Client.open(self.rtmp)
        await client.connect(self.rtmp)
        stream_id = await client.create_stream()
        client.session.publish(stream_id, "fast?token=right")
        await client.flush()
        await client.command()
        for frame in frames:
            if frame.config:
                client.session.send_media(stream_id, 9 if frame.is_video else 8, 0, flv.tag_body(frame))
        size = 1_700_000
        filler = size.to_bytes(4, "big") + b"\x0c" + bytes(size - 1)  # an H.264 filler NAL unit
        started = time.monotonic()
        sent = 0
        cut = False
        try:
            for n in range(self.n(300)):
                due = started + n / 30
                await trio.sleep(max(0.0, due - time.monotonic()))
                head = b"\x17\x01\x00\x00\x00" if n % 60 == 0 else b"\x27\x01\x00\x00\x00"
                client.session.send_media(stream_id, 9, 33 * n, head + filler)
                await client.flush()
                sent += size
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            cut = True
        seconds = time.monotonic() - started
        cut = cut or await client.closed(2)
        await client.aclose()
        await trio.sleep(2)
        soon = rss_mb(self.pid) - before
        await trio.sleep(HLS_DELETE_DELAY + 2)
        return {
            "sent_mb": round(sent / 1e6),
            "seconds": round(seconds, 1),
            "cut_by_server": cut,
            "rss_growth_after_mb": round(soon, 1),
            "rss_growth_after_hls_expiry_mb": round(rss_mb(self.pid) - before, 1),
        }

    async def mutated_publishes(self) -> dict[str, Any]:
        """300 publish sessions of the demo clip's first 60 frames with random bytes changed
        (seeded): whatever each one does, memory must come back (the review: +1.4 MB live by
        tracemalloc, RSS +61-66 MB after; 127 -> 96 MB with malloc_trim)."""
        from arcly_trio.media import flv
        from arcly_trio.server.demo import demo_frames

        frames = demo_frames()[:60]
        rng = random.Random(18)
        before = rss_mb(self.pid)
        closed = 0
        for n in range(self.n(300)):
            client = await Client.open(self.rtmp)
            try:
                await client.connect(self.rtmp)
                stream_id = await client.create_stream()
                client.session.publish(stream_id, f"mut{n % 20}?token=right")
                await client.flush()
                await client.command()
                for frame in frames:
                    body = bytearray(flv.tag_body(frame))
                    for _ in range(rng.randrange(0, 4)):
                        body[rng.randrange(len(body))] = rng.randrange(256)
                    if rng.random() < 0.1:
                        body = body[: rng.randrange(len(body))]
                    if frame.is_metadata:
                        client.session.send_message(5, 18, stream_id, 0, bytes(body))
                    else:
                        client.session.send_media(
                            stream_id,
                            9 if frame.is_video else 8,
                            max(0, frame.dts + rng.choice((0, 0, 0, -5000, 100_000))),
                            bytes(body),
                        )
                await client.flush()
                closed += await client.closed(0.05)
            except (ConnectionError, trio.BrokenResourceError, trio.ClosedResourceError):
                closed += 1
            finally:
                await client.aclose()
        await trio.sleep(2)
        soon = rss_mb(self.pid) - before
        await trio.sleep(HLS_DELETE_DELAY + 2)
        return {
            "sessions": self.n(300),
            "closed_by_server": closed,
            "rss_growth_after_mb": round(soon, 1),
            "rss_growth_after_hls_expiry_mb": round(rss_mb(self.pid) - before, 1),
        }

    async def idle_publishers(self) -> dict[str, Any]:
        """1000 WebSocket ``/ingest`` publishers from 127.0.0.1 that send nothing (the review:
        all accepted, holding every publisher slot until the idle timeout; the next publisher
        got 4503). Now one address holds at most ``--max-publishers-per-ip``, each gives its slot
        back after ``--publish-start-timeout``, and a publisher from 127.0.0.2 starts at once."""
        count = self.n(1000)
        accepted = refused = 0
        sockets = []
        started = time.monotonic()
        async with trio.open_nursery() as nursery:
            for n in range(count):
                try:
                    ws = await self._ingest(nursery, f"idle{n}", "127.0.0.1")
                except (OSError, trio_websocket.HandshakeError, trio_websocket.ConnectionClosed):
                    refused += 1
                    continue
                sockets.append(ws)
                first = json.loads(await ws.get_message())
                if first["type"] == "start":
                    accepted += 1
                else:
                    refused += 1
            attack_seconds = time.monotonic() - started
            probe_started = time.monotonic()
            second = "refused"
            try:
                with trio.fail_after(5):
                    ws = await self._ingest(nursery, "real", "127.0.0.2")
                    first = json.loads(await ws.get_message())
                    second = first["type"] if first["type"] == "start" else f"refused: {first.get('message')}"
                    await ws.aclose()
            except (OSError, trio.TooSlowError, trio_websocket.HandshakeError, trio_websocket.ConnectionClosed) as exc:
                second = f"failed: {exc!r}"
            probe = time.monotonic() - probe_started
            for ws in sockets:
                await ws.aclose()
            nursery.cancel_scope.cancel()
        return {
            "publishers": count,
            "accepted": accepted,
            "refused": refused,
            "attack_seconds": round(attack_seconds, 1),
            "second_address": second,
            "second_address_ms": round(probe * 1000),
        }

    async def _ingest(self, nursery: trio.Nursery, name: str, local: str) -> trio_websocket.WebSocketConnection:
        stream = await trio.open_tcp_stream(HOST, self.http, local_address=local)
        return await trio_websocket.wrap_client_stream(
            nursery, stream, HOST, f"/live/{name}/ingest?token=right", subprotocols=[SUBPROTOCOL]
        )

    async def wrong_tokens(self) -> dict[str, Any]:
        """Wrong publish tokens as fast as possible for 5 s (the review: 2000 in 2.3 s, no
        throttling). Now each refusal doubles the wait of that address."""
        answered = 0
        with trio.move_on_after(5):
            while True:
                client = await Client.open(self.rtmp)
                try:
                    await client.connect(self.rtmp)
                    stream_id = await client.create_stream()
                    client.session.publish(stream_id, "cam?token=wrong")
                    await client.flush()
                    await client.command()
                    answered += 1
                except (ConnectionError, trio.BrokenResourceError):
                    pass
                finally:
                    await client.aclose()
        return {"tries_answered_in_5s": answered}

    async def ingest_publishers(self) -> dict[str, Any]:
        """100 WebSocket ``/ingest`` frame-API publishers (each from its own address) sending the
        demo clip's H.264+AAC frames in real time for 15 s, each starting at its own moment within a second (the
        reliability run: +543 MB peak,
        587 ms stalls, ``/api/health`` 503 for 85 of 131 probes with ``--record``: the
        ``storage:record`` check got no answer within 2 s). The frames are encoded once and sent
        as pre-built WebSocket frames, a video frame's worth (33 ms) per write, so the bench
        stays cheap."""
        count, seconds = self.n(100), 15.0
        ticks = _ingest_ticks(seconds)
        probes = failing = 0
        failed_checks: dict[str, int] = {}
        started = ended = 0

        async def publisher(n: int) -> None:
            nonlocal started, ended
            phase = random.Random(n).uniform(0, 1)
            local = f"127.0.{1 + n // 250}.{1 + n % 250}"
            stream = await trio.open_tcp_stream(HOST, self.http, local_address=local)
            async with stream:
                request = (
                    f"GET /live/ingest{n}/ingest?token=right HTTP/1.1\r\nHost: {HOST}\r\nUpgrade: websocket\r\n"
                    f"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {SUBPROTOCOL}\r\n\r\n"
                )
                await stream.send_all(request.encode())
                head = b""
                while b"\r\n\r\n" not in head:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    head += data
                if b" 101 " not in head.split(b"\r\n", 1)[0]:
                    return
                started += 1

                async def drain() -> None:
                    while await stream.receive_some(65536):
                        pass

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(drain)
                    begin = trio.current_time() + phase  # encoders are not in step
                    try:
                        for due, data in ticks:
                            await trio.sleep_until(begin + due)
                            await stream.send_all(data)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass
                    nursery.cancel_scope.cancel()
                ended += 1

        async def probe() -> None:
            nonlocal probes, failing
            while True:
                await trio.sleep(0.5)
                try:
                    document = await self.health()
                except (OSError, ValueError, trio.BrokenResourceError):
                    failing += 1
                    probes += 1
                    continue
                probes += 1
                if document.get("status") != "ok":
                    failing += 1
                    for check in document.get("checks", []):
                        if not check.get("ok"):
                            failed_checks[check["name"]] = failed_checks.get(check["name"], 0) + 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(probe)
            async with trio.open_nursery() as publishers:
                for n in range(count):
                    publishers.start_soon(publisher, n)
            nursery.cancel_scope.cancel()
        return {
            "publishers": count,
            "publishing": started,
            "health_probes": probes,
            "health_not_ok": failing,
            "failed_checks": failed_checks,
        }

    async def hung_on_play(self) -> dict[str, Any]:
        """300 RTMP plays (from 300 addresses) whose ``--on-play`` hook never answers (the bench's hook holds every
        request for a stream named ``hung*``; it answers others at once), then a newcomer's play
        of ``live/demo`` (from another address): the time to its first video frame (the reliability run: 389-531 ms
        stalls, the newcomer waited 2.5 s). The hung plays end with the hook timeout (``--hook-timeout 10`` in the bench)."""
        count = self.n(300)
        clients: list[Client] = []

        opening = trio.CapacityLimiter(30)  # a burst the listen backlog takes

        async def play(i: int) -> None:
            async with opening:
                await start_play(i)

        async def start_play(i: int) -> None:
            # each from its own address (a crowd, not one guesser: the throttle lets an address
            # have only 2 authorizations in flight)
            client = await Client.open(self.rtmp, local_address=f"127.0.{1 + i // 250}.{1 + i % 250}")
            await client.connect(self.rtmp)
            stream_id = await client.create_stream()
            client.session.play(stream_id, f"hung{i}")
            await client.flush()
            clients.append(client)

        async with trio.open_nursery() as nursery:
            for i in range(count):
                nursery.start_soon(play, i)
        with trio.move_on_after(5):  # (the hook timeout is 10 s: the newcomer comes while they wait)
            while self.hook_held < min(count, 100):  # (100: httpx's default pool before the fix)
                await trio.sleep(0.05)
        await trio.sleep(0.5)
        held = self.hook_held
        newcomer_ms = -1.0
        with trio.move_on_after(10):
            started = time.monotonic()
            probe = await Client.open(self.rtmp, local_address="127.0.9.1")
            await probe.connect(self.rtmp)
            stream_id = await probe.create_stream()
            probe.session.play(stream_id, "demo")
            await probe.flush()
            while True:
                event = await probe.read_event(MediaMessage)
                if isinstance(event, MediaMessage) and event.type_id == 9:
                    break
            newcomer_ms = (time.monotonic() - started) * 1000
            await probe.aclose()
        for client in clients:
            await client.aclose()
        await trio.sleep(10)  # the hung plays' hook calls end with the hook timeout
        return {
            "hung_plays": count,
            "hooks_held": held,
            "newcomer_first_video_ms": round(newcomer_ms),
        }

    async def create_delete_streams(self) -> dict[str, Any]:
        """10 000 createStream/deleteStream pairs on one RTMP connection,
        1000 pairs per write (the reliability run: 72-117 ms stalls)."""
        count = self.n(10_000)
        client = await Client.open(self.rtmp)
        await client.connect(self.rtmp)
        answered = 0
        for batch in range(0, count, 1000):
            pairs = min(1000, count - batch)
            for i in range(pairs):
                client.session.create_stream()
                client.session.delete_stream(1 + batch + i)  # the id createStream gives next
            await client.flush()
            for _ in range(pairs):
                await client.command()
                answered += 1
        await client.aclose()
        return {"pairs": count, "create_answered": answered}


def _ws_frame(opcode: int, payload: bytes) -> bytes:
    """One client WebSocket frame, masked with the all-zero key (legal, and the payload stays
    as it is: no per-byte work in the bench)."""
    size = len(payload)
    if size < 126:
        head = bytes([0x80 | opcode, 0x80 | size])
    elif size < 65536:
        head = bytes([0x80 | opcode, 0x80 | 126]) + size.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + size.to_bytes(8, "big")
    return head + bytes(4) + payload


def _ingest_ticks(seconds: float, tick: float = 1 / 30) -> list[tuple[float, bytes]]:
    """The demo clip as ``/ingest`` messages for ``seconds`` (looped, timestamps going on),
    grouped in ``tick``-second writes: ``(due, bytes)`` from the start."""
    import attrs

    from arcly_trio.protocols.frames.messages import config_for_frame, encode_frame, encode_text
    from arcly_trio.server.demo import demo_frames

    frames = [f for f in demo_frames() if not f.is_metadata]
    head = b"".join(
        _ws_frame(1, encode_text(config_for_frame(f)).encode()) + _ws_frame(2, encode_frame(f))
        for f in frames
        if f.config
    )
    body = [f for f in frames if not f.config]
    length = body[-1].dts - body[0].dts + 33
    ticks: dict[int, list[bytes]] = {0: [head]}
    loop = 0
    while loop * length < seconds * 1000:
        for f in body:
            dts = f.dts - body[0].dts + loop * length
            if dts >= seconds * 1000:
                break
            shifted = attrs.evolve(f, dts=dts, pts=f.pts - f.dts + dts)
            ticks.setdefault(int(dts / 1000 / tick), []).append(_ws_frame(2, encode_frame(shifted)))
        loop += 1
    return [(n * tick, b"".join(parts)) for n, parts in sorted(ticks.items())]


async def _hung_hook(bench: Bench, stream: trio.SocketStream) -> None:
    """The bench's ``--on-play`` hook: answers 200 at once, but never for a stream ``hung*``."""
    buffer = b""
    try:
        while True:
            while b"\r\n\r\n" not in buffer:
                data = await stream.receive_some(65536)
                if not data:
                    return
                buffer += data
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            while len(buffer) < length:
                data = await stream.receive_some(65536)
                if not data:
                    return
                buffer += data
            body, buffer = buffer[:length], buffer[length:]
            if json.loads(body).get("stream", "").startswith("hung"):
                bench.hook_held += 1
                try:
                    while await stream.receive_some(65536):  # until the server gives up
                        pass
                    return
                finally:
                    bench.hook_held -= 1
            await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return


ATTACKS: dict[str, Callable[[Bench], Awaitable[dict[str, Any]]]] = {
    "control": Bench.control,
    "pre-connect-partials": Bench.pre_connect_partials,
    "fresh-stream-ids": Bench.fresh_stream_ids,
    "large-gop-sessions": Bench.large_gop_sessions,
    "small-frame-sessions": Bench.small_frame_sessions,
    "aggregate-metadata": Bench.aggregate_metadata,
    "nal-bombs": Bench.nal_bombs,
    "slow-drip": Bench.slow_drip,
    "stalled-players": Bench.stalled_players,
    "idle-rtmp": Bench.idle_rtmp,
    "idle-http": Bench.idle_http,
    "wrong-tokens": Bench.wrong_tokens,
    "fast-publisher": Bench.fast_publisher,
    "mutated-publishes": Bench.mutated_publishes,
    "idle-publishers": Bench.idle_publishers,
    "ingest-publishers": Bench.ingest_publishers,
    "hung-on-play": Bench.hung_on_play,
    "create-delete-streams": Bench.create_delete_streams,
}


async def run(args: argparse.Namespace) -> None:
    async with trio.open_nursery() as hooks:
        bench_box: list[Bench] = []
        listeners = await hooks.start(
            functools.partial(trio.serve_tcp, lambda stream: _hung_hook(bench_box[0], stream), 0, host=HOST)
        )
        hook_port = listeners[0].socket.getsockname()[1]
        with tempfile.TemporaryDirectory() as record:
            await _run(args, hook_port, bench_box, record)
        hooks.cancel_scope.cancel()


async def _run(args: argparse.Namespace, hook_port: int, bench_box: list[Bench], record: str) -> None:
    rtmp, http = free_port(), free_port()
    command = [
        sys.executable,
        "-m",
        "arcly_trio",
        "serve",
        "--demo",
        "--hls",
        "--host",
        HOST,
        "--rtmp-port",
        str(rtmp),
        "--http-port",
        str(http),
        *("--webrtc-port", "0", "--srt-port", "0", "--rtsp-port", "0"),  # never a protocol's default port
        "--publish-token",
        "right",
        "--setup-timeout",
        "5",
        "--connection-idle-timeout",
        "5",
        "--write-timeout",
        "5",
        "--log-level",
        "error",
        "--on-play",
        f"http://{HOST}:{hook_port}/on_play",
        "--hook-timeout",
        "10",
        *(["--record", record] if args.record else []),
        *(args.server_arg or []),
    ]
    server = subprocess.Popen(command, cwd=ROOT)
    try:
        bench = Bench(rtmp, http, server.pid, args.scale)
        bench_box.append(bench)
        with trio.fail_after(60):
            while True:
                try:
                    await bench.health()
                    break
                except OSError:
                    await trio.sleep(0.2)
        healthy = Healthy()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(healthy.run, rtmp)
            nursery.start_soon(bench.watch_rss)
            await trio.sleep(3)
            for name, attack in ATTACKS.items():
                if args.only and name not in args.only:
                    continue
                await trio.sleep(2)
                before = rss_mb(server.pid)
                bench.rss_peak = before
                start = time.monotonic()
                cpu = cpu_seconds(server.pid)
                waited = runqueue_wait_seconds(server.pid)
                fields = await attack(bench)
                cpu = cpu_seconds(server.pid) - cpu
                waited = runqueue_wait_seconds(server.pid) - waited
                end = time.monotonic()
                await trio.sleep(2)
                lags = (await bench.health())["loop"]["lag_ms_per_second"]
                span = int(end - start) + 4
                print(
                    json.dumps(
                        {
                            "attack": name,
                            "scale": args.scale,
                            "loop_lag_max_ms": max(lags[-span:]),
                            "rss_before_mb": round(before, 1),
                            "rss_peak_mb": round(bench.rss_peak, 1),
                            "rss_after_mb": round(rss_mb(server.pid), 1),
                            "healthy_fps_min": healthy.min_fps(start, end),
                            "server_cpu_s": round(cpu, 2),
                            "attack_s": round(end - start, 1),
                            "loop_runqueue_wait_s": round(waited, 2),
                            **fields,
                        }
                    ),
                    flush=True,
                )
            nursery.cancel_scope.cancel()
    finally:
        server.terminate()
        server.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the review's numbers (default 1)")
    parser.add_argument("--only", action="append", choices=list(ATTACKS), help="run only this attack (repeatable)")
    parser.add_argument(
        "--server-arg",
        action="append",
        metavar="OPTION",
        help="pass this option to serve (repeatable; --server-arg=--heap-trim-interval=0)",
    )
    parser.add_argument(
        "--record",
        action="store_true",
        help="record every stream (into a temporary directory): the storage:record health check runs",
    )
    args = parser.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    trio.run(run, args)


if __name__ == "__main__":
    main()
