"""What a WebSocket peer may make the server do, on every WebSocket route (issue 18, finding 13).

Attack: endless zero-length continuation frames on a ``/frames`` viewer stalled the event loop
for up to 1.5 s and were never closed; 1-byte continuation fragments on ``/ingest`` made the
server hold +80-123 MB (a part object per fragment; the 4 MiB message limit was never reached).
Now a message is capped in fragments as well as bytes, must keep a minimum rate once it is past
its grace, control frames are rate-limited, and one turn of a connection's task handles a
bounded number of frames.

A raw WebSocket client written here with wsproto (masked frames built by hand) attacks a server
running in-process on 127.0.0.1, port 0; each case checks the close code and reason, that the
server stopped after a bounded number of frames (its one log line says how many it handled and
how many bytes of a message it held), and that the log line is there once. ``trio.fail_after``
bounds every test; the timed ones run on the autojump clock.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
import wsproto
from hypothesis import given
from hypothesis import strategies as st
from wsproto.events import AcceptConnection, CloseConnection, Request

from arcly_trio import AppSpec, Engine
from arcly_trio.protocols.frames import SUBPROTOCOL
from arcly_trio.protocols.http.websocket import POLICY_VIOLATION, TOO_BIG, WebSocketGuard, WebSocketLimits
from arcly_trio.server.demo import demo_frames as load_demo_frames
from arcly_trio.workers.egress import Egress
from arcly_trio.workers.http import HttpServer
from arcly_trio.workers.http.ws_egress import EVENTS_PER_TURN, MESSAGES_PER_TURN, accept

LIMITS = WebSocketLimits(4096)
CONTINUATION, TEXT, BINARY, PING = 0x0, 0x1, 0x2, 0x9


def client_frame(opcode: int, payload: bytes = b"", fin: bool = True) -> bytes:
    """One masked client frame (a zero mask: the payload goes as it is)."""
    assert len(payload) < 126
    return bytes(((0x80 if fin else 0) | opcode, 0x80 | len(payload))) + bytes(4) + payload


class RawWebSocket:
    """A client that sends whatever bytes it is told and reads until the server closes."""

    def __init__(self, stream: trio.SocketStream, ws: wsproto.WSConnection) -> None:
        self.stream = stream
        self.ws = ws

    @classmethod
    async def open(cls, port: int, path: str, subprotocols: list[str]) -> RawWebSocket:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        await stream.send_all(ws.send(Request(host="127.0.0.1", target=path, subprotocols=subprotocols)))
        while True:
            data = await stream.receive_some(65536)
            assert data, "the server closed before accepting"
            ws.receive_data(data)
            if any(isinstance(event, AcceptConnection) for event in ws.events()):
                return cls(stream, ws)

    async def send(self, data: bytes) -> bool:
        """Send ``data``; ``False`` once the server has closed the connection."""
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        return True

    async def flood(self, frames: bytes, times: int) -> None:
        for _ in range(times):
            if not await self.send(frames):
                return

    async def closed_with(self) -> tuple[int, str]:
        """Read (dropping messages) until the server's close frame: its code and reason."""
        while True:
            try:
                data = await self.stream.receive_some(65536)
            except trio.BrokenResourceError:
                data = b""
            if not data:
                raise AssertionError("the connection ended without a close frame")
            self.ws.receive_data(data)
            for event in self.ws.events():
                if isinstance(event, CloseConnection):
                    return event.code, event.reason

    async def aclose(self) -> None:
        await self.stream.aclose()


@asynccontextmanager
async def server(demo: bool = True) -> AsyncIterator[HttpServer]:
    http = HttpServer("127.0.0.1", 0)
    async with Engine.builder().application(AppSpec("live")).protocol(http).build() as engine:
        async with engine.publish("live/demo") as publisher:
            if demo:
                for frame in load_demo_frames()[:40]:
                    await publisher.send(frame)
            yield http


ROUTES = [
    ("/live/demo/frames", [SUBPROTOCOL]),  # a frame API viewer
    ("/live/demo.flv", []),  # a WebSocket-FLV viewer
    ("/live/pub/ingest", [SUBPROTOCOL]),  # a frame API publisher
]
FLOODS = {
    # (the frames repeated, code, what the reason says, most frames handled, most bytes held)
    "empty continuations": (
        client_frame(CONTINUATION, b"", fin=False) * 1000,
        POLICY_VIOLATION,
        "fragments",
        LIMITS.max_fragments + 1,
        0,
    ),
    "1-byte continuations": (
        client_frame(CONTINUATION, b"x", fin=False) * 1000,
        POLICY_VIOLATION,
        "fragments",
        LIMITS.max_fragments + 1,
        LIMITS.max_fragments + 1,
    ),
    "pings": (client_frame(PING, b"p") * 1000, POLICY_VIOLATION, "control frames", LIMITS.control_burst + 3, 0),
}


def closed_lines(caplog: pytest.LogCaptureFixture, path: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if path in r.getMessage() and " closed (" in r.getMessage()]


@pytest.mark.parametrize("attack", list(FLOODS))
@pytest.mark.parametrize(("path", "subprotocols"), ROUTES, ids=[route for route, _ in ROUTES])
async def test_a_flood_of_fragments_or_pings_is_closed_after_a_bounded_number_of_frames(
    caplog: pytest.LogCaptureFixture, path: str, subprotocols: list[str], attack: str
) -> None:
    """Mutants killed: no fragment count per message (only bytes); no control-frame rate."""
    caplog.set_level(logging.INFO, "arcly_trio.http")
    frames, code, reason, most_frames, most_held = FLOODS[attack]
    with trio.fail_after(20):
        async with server() as http:
            client = await RawWebSocket.open(http.port, path, subprotocols)
            opening = client_frame(BINARY, b"", fin=False) if "continuations" in attack else b""
            async with trio.open_nursery() as nursery:
                await client.send(opening)
                nursery.start_soon(client.flood, frames, 200)  # 200 000 frames, if it were let
                got_code, got_reason = await client.closed_with()
                nursery.cancel_scope.cancel()
            await client.aclose()
            assert (got_code, reason in got_reason) == (code, True), (got_code, got_reason)
            with trio.fail_after(5):
                while not closed_lines(caplog, path):
                    await trio.sleep(0.01)
            [line] = closed_lines(caplog, path)
            match = re.search(r"after (\d+) frames \((\d+) bytes of a message held\)", line)
            assert match is not None, line
            handled, held = int(match[1]), int(match[2])
            assert handled <= most_frames and held <= most_held, line


async def test_a_message_over_the_byte_limit_is_closed_with_1009(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "arcly_trio.http")
    with trio.fail_after(10):
        async with server() as http:
            client = await RawWebSocket.open(http.port, "/live/demo/frames", [SUBPROTOCOL])
            piece = client_frame(CONTINUATION, b"y" * 100, fin=False)
            await client.send(client_frame(BINARY, b"y" * 100, fin=False) + piece * 60)
            code, reason = await client.closed_with()
            await client.aclose()
    assert code == TOO_BIG and "maximum message size of 4096 bytes" in reason


async def trickle(client: RawWebSocket, size: int, every: float) -> None:
    """One message, ``size`` bytes every ``every`` seconds, never finished."""
    if not await client.send(client_frame(BINARY, b"z" * size, fin=False)):
        return
    while every:
        await trio.sleep(every)
        if not await client.send(client_frame(CONTINUATION, b"z" * size, fin=False)):
            return


@pytest.mark.parametrize("every", [0.5, 0], ids=["trickled", "then silent"])
async def test_a_message_that_does_not_keep_the_minimum_rate_is_closed(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture, every: float
) -> None:
    """50 bytes every half second (100 bytes/s, under the 8 KiB/s minimum), or one piece and
    then nothing: closed once the message is past its 5 s grace (virtual time).
    Mutant killed: no progress rate (the message would stay open for ever)."""
    caplog.set_level(logging.INFO, "arcly_trio.http")
    with trio.fail_after(60):
        async with server(demo=False) as http:
            client = await RawWebSocket.open(http.port, "/live/demo/frames", [SUBPROTOCOL])
            start = trio.current_time()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trickle, client, 50, every)
                code, reason = await client.closed_with()
                took = trio.current_time() - start
                nursery.cancel_scope.cancel()
            await client.aclose()
    assert code == POLICY_VIOLATION and "message too slow" in reason, reason
    assert LIMITS.message_grace <= took <= LIMITS.message_grace + 1.5, took


async def test_one_turn_handles_a_bounded_number_of_frames() -> None:
    """Ten thousand empty messages in one read (60 KB) are handled a turn at a time, with the
    other tasks let run in between; all of them in the end, and the WebSocket stays open.
    Mutant killed: a read's frames all handled in one go (the event loop stalls)."""
    server_side, client_side = trio.testing.memory_stream_pair()
    egress = Egress(server_side, write_timeout=5)
    client = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    ws = accept(egress, client.send(Request(host="x", target="/")), [], subprotocol=None, limits=LIMITS)
    await client_side.send_all(client_frame(BINARY) * 10_000)
    with trio.fail_after(10):
        assert await ws.serve_peer()
        assert ws.guard.frames == EVENTS_PER_TURN
        turns = 1
        while ws.guard.frames < 10_000:
            assert await ws.serve_peer()
            turns += 1
    assert turns >= 10_000 // EVENTS_PER_TURN and not ws.closed


async def test_the_messages_of_one_read_go_out_a_few_per_trip_through_the_scheduler() -> None:
    """An ``/ingest`` publisher's messages that came in one read (a video frame and the audio
    with it) are handed out MESSAGES_PER_TURN at a time between two trips through the
    scheduler, not one per trip (each trip costs as much as a frame's own work); the other
    tasks still run at least every MESSAGES_PER_TURN messages.
    Mutants killed: a checkpoint after every message; none between the messages of a read."""
    server_side, client_side = trio.testing.memory_stream_pair()
    egress = Egress(server_side, write_timeout=5)
    client = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    ws = accept(egress, client.send(Request(host="x", target="/")), [], subprotocol=None, limits=LIMITS)
    count = 40
    await client_side.send_all(b"".join(client_frame(BINARY, bytes([n])) for n in range(count)))
    runs = 0

    async def other() -> None:
        nonlocal runs
        while True:
            runs += 1
            await trio.lowlevel.checkpoint()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(other)
            await trio.lowlevel.checkpoint()
            before = runs
            messages = [await ws.receive_message() for _ in range(count)]
            trips = runs - before
            nursery.cancel_scope.cancel()
    assert messages == [bytes([n]) for n in range(count)]
    assert count // MESSAGES_PER_TURN - 1 <= trips <= count // MESSAGES_PER_TURN + 5, trips


events = st.lists(st.tuples(st.integers(0, 2000), st.booleans(), st.booleans(), st.floats(0, 3)), max_size=300)


@given(events)
def test_the_guard_holds_what_it_lets_through_to_its_limits(steps: list[tuple[int, bool, bool, float]]) -> None:
    """Whatever frames arrive, as long as the guard says nothing is wrong, the message in
    progress holds at most ``max_message`` bytes in at most ``max_fragments`` fragments and
    has kept the minimum rate past its grace."""
    limits = WebSocketLimits(4096, max_fragments=8, message_grace=1.0, min_rate=1000)
    now = 0.0
    guard = WebSocketGuard(limits, now)
    for size, frame_finished, message_finished, wait in steps:
        now += wait
        violation = guard.on_data(size, frame_finished, frame_finished and message_finished, now)
        if violation is not None:
            assert violation.code in (POLICY_VIOLATION, TOO_BIG)
            return
        assert guard.held <= limits.max_message and guard.fragments <= limits.max_fragments
        assert guard.check_progress(now) is None


def test_control_frames_are_allowed_at_their_rate_and_refused_past_it() -> None:
    guard = WebSocketGuard(LIMITS, 0.0)
    assert all(guard.on_control(0.0) is None for _ in range(LIMITS.control_burst))
    assert guard.on_control(0.0) is not None
    now = 0.0
    for _ in range(100):  # a ping every 0.2 s is well within 10 a second
        now += 0.2
        assert guard.on_control(now) is None
