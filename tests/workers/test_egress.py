"""The direct-write egress (``arcly_trio.workers.egress``) on real sockets with small buffers.

A test sink writes each frame as a small record (length, flags, dts, payload), shared per
batch like the real formats, so the byte stream a reader gets can be checked exactly: partial
writes are finished before anything else (another frame, a control message) goes out, even
once the reader has freed room in the socket before the queue is drained; a full socket queues
in order and the connection's task drains it, the kernel's lag policy applies once the queue is
full (drops counted exactly, resumption on a keyframe), a reader that stops reading is dropped
after the write timeout and one that reads slowly but steadily is not (mock clock), a reset peer
fails the egress and never the stream's task, and the ordinary path (a stream that is not a
socket) gives the same bytes.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Sequence

import pytest
import trio
import trio.testing

from arcly_trio import AppSpec, Engine
from arcly_trio.core.errors import PeerGone, WriteTimeout
from arcly_trio.core.frame import Frame, FrameBatch, FrameKind
from arcly_trio.workers.egress import DirectSink, Egress, Encoded, encode_frames

_RECORD = struct.Struct(">IBq")  # payload length, flags (1 key, 2 config), dts
_KEY = ("test-record",)


def record(frame: Frame) -> bytes:
    flags = (1 if frame.keyframe else 0) | (2 if frame.config else 0)
    return _RECORD.pack(len(frame.payload), flags, frame.dts) + frame.payload


def _cached(frame: Frame) -> bytes:
    data: bytes = frame.encoded(_KEY, record)
    return data


def _batch(batch: FrameBatch) -> bytes:
    return b"".join(_cached(frame) for frame in batch)


class RecordSink(DirectSink):
    """Frames as records; a whole batch shared by every viewer."""

    def __init__(self, egress: Egress) -> None:
        super().__init__(egress)
        self.share(("test-batch",), _batch)

    def encode(self, frames: Sequence[Frame], start: int, end: int) -> Encoded:
        return encode_frames(frames, start, end, _cached)


def parse(data: bytes) -> list[tuple[int, int, bytes]]:
    """(flags, dts, payload) of every record; the stream must be records only, whole."""
    out = []
    pos = 0
    while pos < len(data):
        size, flags, dts = _RECORD.unpack_from(data, pos)
        pos += _RECORD.size
        out.append((flags, dts, data[pos : pos + size]))
        pos += size
    assert pos == len(data), "the byte stream ends in the middle of a record"
    return out


def small_socketpair() -> tuple[trio.SocketStream, trio.socket.SocketType]:
    """(the server end as a trio stream, the client's socket), with small kernel buffers."""
    server, client = trio.socket.socketpair()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return trio.SocketStream(server), client


def video(i: int, size: int, key: bool = False) -> Frame:
    return Frame(FrameKind.VIDEO, "h264", i, i, bytes([i % 251]) * size, keyframe=key)


async def read_all(sock: trio.socket.SocketType, size: int, chunk: int = 1000) -> bytes:
    """Read exactly ``size`` bytes in small pieces, yielding between reads (a slow reader)."""
    out = bytearray()
    while len(out) < size:
        data = await sock.recv(min(chunk, size - len(out)))
        assert data, "closed early"
        out += data
        await trio.sleep(0)
    return bytes(out)


async def test_partial_writes_finish_each_frame_before_anything_else() -> None:
    stream, client = small_socketpair()
    egress = Egress(stream, write_timeout=10, max_frames=10_000)
    assert egress.direct
    sink = RecordSink(egress)
    sink.start()
    frames = [video(i, 1000 + (i * 7919) % 30_000, key=i % 10 == 0) for i in range(90)]
    expected = bytearray()
    for i in range(0, len(frames), 3):
        batch = FrameBatch(frames[i : i + 3])
        assert sink.offer(batch, 0) == 3
        expected += _batch(batch)
        marker = b"\x00\x00\x00\x00\x04" + struct.pack(">q", -i)  # a record of its own: a "reply"
        egress.write((marker,), len(marker))
        expected += marker
    assert egress.blocked and egress.queued_frames > 0, "the socket should have been full"
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:

            async def drain() -> None:
                while egress.blocked:
                    await egress.drain()

            nursery.start_soon(drain)
            received = await read_all(client, len(expected))
    assert received == bytes(expected)
    assert egress.queued_frames == 0 and egress.queued_bytes == 0 and not egress.blocked
    records = parse(received)
    assert len(records) == len(frames) + 30


async def test_receive_is_interrupted_to_drain_and_by_a_poke() -> None:
    stream, client = small_socketpair()
    egress = Egress(stream, write_timeout=10)
    sink = RecordSink(egress)
    sink.start()
    results: list[bytes | None] = []

    async def connection_task() -> None:
        results.append(await egress.receive(1024))  # interrupted: the queue needs draining
        results.append(await egress.receive(1024))  # drains first, then poked
        results.append(await egress.receive(1024))  # the client's bytes

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connection_task)
            await trio.testing.wait_all_tasks_blocked()
            big = FrameBatch([video(1, 200_000, key=True)])
            sink.offer(big, 0)  # the socket takes a few KiB; the rest is queued
            assert egress.blocked
            await trio.testing.wait_all_tasks_blocked()
            assert results == [None]
            received = await read_all(client, len(_batch(big)), chunk=65536)
            assert parse(received)[0][2] == big[0].payload
            await trio.testing.wait_all_tasks_blocked()
            egress.poke()
            await trio.testing.wait_all_tasks_blocked()
            assert results == [None, None]
            await client.send(b"hello")
    assert results == [None, None, b"hello"]


async def test_the_lag_policy_applies_once_the_queue_is_full() -> None:
    """A viewer whose socket is full queues up to its application's queue, then drops to the
    next keyframe, counted exactly; once it reads again it resumes on a keyframe."""
    engine = Engine.builder().application(AppSpec("live", subscriber_queue=8, gop_cache_frames=0)).build()
    stream, client = small_socketpair()
    egress = Egress(stream, write_timeout=30, max_frames=8)
    sink = RecordSink(egress)
    published: list[Frame] = []
    with trio.fail_after(10):
        async with engine, engine.publish("live/s") as publisher, trio.open_nursery() as nursery:
            async with engine.attach("live/s", sink) as subscriber:
                sink.subscriber = subscriber
                sink.start()

                async def publish(count: int, paced: bool = False) -> None:
                    for _ in range(count):
                        i = len(published)
                        frame = video(i, 6000, key=i % 20 == 0)
                        published.append(frame)
                        await publisher.send(frame)
                        if paced:
                            await trio.testing.wait_all_tasks_blocked()
                    await trio.testing.wait_all_tasks_blocked()

                await publish(100)  # nobody reads: the socket fills, then the queue, then drops
                assert subscriber.lagging and subscriber.dropped > 0
                assert egress.queued_frames <= 8
                received = bytearray()

                async def reader() -> None:
                    while True:
                        data = await client.recv(65536)
                        if not data:
                            return
                        received.extend(data)

                async def connection_task() -> None:
                    while True:
                        await egress.receive(1024)

                nursery.start_soon(reader)
                nursery.start_soon(connection_task)
                await trio.testing.wait_all_tasks_blocked()
                await publish(40, paced=True)  # reading again: resumes on the next keyframe
                assert not subscriber.lagging
                await trio.sleep(0.1)
                records = parse(bytes(received))
                nursery.cancel_scope.cancel()
    dts = [d for _, d, _ in records]
    assert dts == sorted(dts)
    assert records[0][0] & 1  # starts on a keyframe
    assert len(records) + subscriber.dropped == len(published)  # every frame: received or counted
    gap = next(i for i in range(1, len(dts)) if dts[i] != dts[i - 1] + 1)
    assert records[gap][0] & 1, "the frame after the gap is not a keyframe"


async def test_a_reader_that_stops_is_dropped_after_the_write_timeout(autojump_clock: trio.testing.MockClock) -> None:
    stream, client = small_socketpair()
    egress = Egress(stream, write_timeout=30)
    sink = RecordSink(egress)
    sink.start()
    sink.offer(FrameBatch([video(1, 100_000, key=True)]), 0)
    assert egress.blocked
    start = trio.current_time()
    with pytest.raises(WriteTimeout, match="a write blocked for 30 s"):
        await egress.drain()
    assert trio.current_time() - start == pytest.approx(30)
    client.close()


async def test_a_write_waits_behind_the_queue_when_the_reader_frees_room() -> None:
    """The reader takes some bytes of a big queued frame (the socket has room again) before the
    connection's task drains: a new write must still go out after the whole frame. Mutant
    killed: ``Egress.write`` not checking ``self._queue`` (``if self._fd < 0 or ...``), which
    wrote the new bytes straight into the socket, inside the frame still queued (corrupt
    FLV/RTMP)."""
    stream, client = small_socketpair()
    egress = Egress(stream, write_timeout=10)
    sink = RecordSink(egress)
    sink.start()
    big = FrameBatch([video(1, 300_000, key=True)])
    sink.offer(big, 0)
    assert egress.blocked  # the socket took a few KiB; the rest is queued
    with trio.fail_after(10):
        first = await client.recv(65536)  # the socket has room again; nothing was drained
    assert first and egress.blocked
    marker = b"\x00\x00\x00\x00\x04" + struct.pack(">q", -1)  # a record of its own: a "reply"
    egress.write((marker,), len(marker))
    small = FrameBatch([video(2, 100)])
    sink.offer(small, 0)
    expected = _batch(big) + marker + _batch(small)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(egress.drain)
            received = first + await read_all(client, len(expected) - len(first), chunk=65536)
    assert received == expected
    assert [dts for _, dts, _ in parse(received)] == [1, -1, 2]


async def test_a_slow_reader_that_keeps_reading_is_not_cut(autojump_clock: trio.testing.MockClock) -> None:
    """A viewer that takes a little every 5 s stays connected far longer than the 10 s write
    timeout: the deadline moves each time the peer takes data. Mutant killed: the deadline
    never pushed back in ``Egress.drain`` (a slow but steady reader cut after
    ``write_timeout`` in total)."""
    stream, client = small_socketpair()
    egress = Egress(stream, write_timeout=10)
    sink = RecordSink(egress)
    sink.start()
    big = FrameBatch([video(1, 200_000, key=True)])
    sink.offer(big, 0)
    assert egress.blocked
    received = bytearray()

    async def slow_reader() -> None:
        while len(received) < len(_batch(big)):
            await trio.sleep(5)  # half the write timeout between two reads
            received.extend(await client.recv(8192))

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(slow_reader)
        await egress.drain()  # raises WriteTimeout under the mutant
    assert not egress.blocked
    assert trio.current_time() - start > 5 * egress.write_timeout  # far longer than one timeout
    assert parse(bytes(received))[0][2] == big[0].payload


async def test_a_reset_peer_fails_the_egress_and_never_the_stream_task() -> None:
    stream, client = small_socketpair()
    egress = Egress(stream, write_timeout=30)
    sink = RecordSink(egress)
    sink.start()
    client.close()
    batch = FrameBatch([video(1, 50_000, key=True)])
    assert sink.offer(batch, 0) == 1  # no exception in the caller (the stream's task)
    assert egress.failed is not None
    assert sink.offer(FrameBatch([video(2, 10)]), 0) == 1  # taken and forgotten: nothing counted
    assert egress.queued_bytes == 0
    with pytest.raises(PeerGone):
        await egress.receive(1024)


async def test_the_ordinary_path_gives_the_same_bytes() -> None:
    """A stream that is not a plain socket (TLS later) is written by the connection's task."""
    server, client = trio.testing.memory_stream_pair()
    egress = Egress(server, write_timeout=10)
    assert not egress.direct
    sink = RecordSink(egress)
    frames = [video(i, 500 + 13 * i, key=i % 5 == 0) for i in range(20)]
    sink.replay(frames[:2])
    sink.start()
    for i in range(2, 20, 6):
        sink.offer(FrameBatch(frames[i : i + 6]), 0)
    assert egress.blocked  # everything waits for the connection's task
    with trio.fail_after(5):
        await egress.drain()
        data = b""
        while len(data) < sum(len(record(f)) for f in frames):
            data += await client.receive_some()
    assert [payload for _, _, payload in parse(data)] == [f.payload for f in frames]


async def test_flow_control_holds_writes_past_the_limit() -> None:
    stream, client = small_socketpair()
    egress = Egress(stream, write_timeout=10)
    egress.limit = 100
    egress.write((b"x" * 150,), 150)  # under the limit when it started: written whole
    egress.write((b"y" * 50,), 50)  # past it: queued
    assert egress.sent == 150 and egress.queued_bytes == 50
    egress.limit = 170
    egress.resume()  # up to the limit exactly
    assert egress.sent == 170 and egress.queued_bytes == 30
    egress.limit = float("inf")
    egress.resume()
    assert egress.sent == 200 and not egress.blocked
    assert await read_all(client, 200) == b"x" * 150 + b"y" * 50


async def test_frames_given_before_start_are_held_then_written_in_order() -> None:
    stream, client = small_socketpair()
    egress = Egress(stream, write_timeout=10, max_frames=3)
    sink = RecordSink(egress)
    frames = [video(i, 100, key=i == 0) for i in range(6)]
    sink.replay(frames[:2])  # replay: held whatever the bound
    assert sink.offer(FrameBatch(frames[2:6]), 0) == 3  # live: held up to the queue's bound (3)
    assert egress.sent == 0
    egress.write((b"\x00" * 13,), 13)  # the "play accepted" reply goes first
    sink.start()
    data = await read_all(client, 13 + sum(len(record(f)) for f in frames[:5]))
    assert [p for _, _, p in parse(data)[1:]] == [f.payload for f in frames[:5]]
