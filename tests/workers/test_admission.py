"""Connection slots (``workers/admission.py``): a burst of real clients from one address is never
cut, connections that do nothing are.

The policy first, on :class:`Admission` alone with trio's ``MockClock`` (progress is timed), then
over real sockets: a burst of RTMP players and of HTTP requests from 127.0.0.1, scaled down from
the 3000 players of issue 19 (267 closed by the server with the defaults, because each address
could hold only 32 connections that did not serve yet): 40 at once against a quota of 8 and 56
slots (the ratio of 3000 to 4096), then the same going past the pressure mark next to idle
connections. ``benchmarks/burst.py`` measures the full burst against ``arcly-trio serve``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from arcly_trio import AppSpec, Engine
from arcly_trio.core.frame import Frame
from arcly_trio.core.keys import Credentials, StreamKey
from arcly_trio.kernel.auth import AllowAll
from arcly_trio.protocols.rtmp import MediaMessage
from arcly_trio.protocols.rtmp.handshake import ClientHandshake
from arcly_trio.workers.admission import Admission, Ticket
from arcly_trio.workers.http import HttpServer
from arcly_trio.workers.rtmp import RtmpServer
from tests._rtmp import RawClient
from tests._serving import healthy_stream

A = "192.0.2.1"
B = "192.0.2.2"


def admit_all(admission: Admission, address: str, count: int) -> list[Ticket]:
    tickets = [admission.admit(address) for _ in range(count)]
    assert all(ticket is not None for ticket in tickets)
    return tickets  # type: ignore[return-value]


# ------------------------------------------------------------------------------- the policy


async def test_below_the_pressure_mark_an_address_keeps_every_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Before: a 33rd connection from one address that served nothing yet evicted the oldest,
    however empty the server. Now the per-address quota waits for the pressure mark (three
    quarters of the slots), even for connections that have been idle for long."""
    admission = Admission(max_connections=100, max_pending_per_address=4)
    tickets = admit_all(admission, A, 40)
    await trio.sleep(admission.idle_after + 1)
    assert admission.idle(A) == 40
    tickets += admit_all(admission, A, 34)
    assert admission.open == 74 < admission.pressure_mark == 75
    assert admission.evictions == 0 and not any(ticket.evicted for ticket in tickets)


async def test_under_pressure_an_address_gives_up_idle_connections_never_ones_in_set_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Past the pressure mark, an address at its quota of idle connections gives up its oldest
    idle ones for a newcomer; its connections that keep making steps (a handshake part, a
    command) are not idle, however many they are. Before: every connection that did not serve
    yet counted, so the ones in set-up were evicted first (they were the oldest)."""
    admission = Admission(max_connections=40, max_pending_per_address=3)
    moving = admit_all(admission, A, 22)
    still = admit_all(admission, A, 6)
    others = admit_all(admission, B, 2)
    for _ in range(3):  # a step every 2 s for the movers, none for the others
        await trio.sleep(2)
        for ticket in moving:
            ticket.progress()
    assert admission.idle(A) == 6 and admission.idle(B) == 2
    assert admission.open == 30 == admission.pressure_mark
    newcomers = admit_all(admission, A, 5)
    assert [ticket.evicted for ticket in still] == [True] * 4 + [False] * 2  # oldest first, down to quota - 1
    assert admission.evictions == 4 and admission.idle(A) == 2
    assert not any(ticket.evicted for ticket in moving + others + newcomers)
    # An address under its quota keeps its idle connections.
    admit_all(admission, B, 1)
    assert admission.idle(B) == 2
    assert admission.evictions == 4


async def test_at_the_cap_the_connection_longest_without_progress_makes_room(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """At the cap a newcomer evicts the waiting connection that has gone longest without a step
    (an idle one first, then one in set-up); a busy one never; when all are busy, the newcomer
    is refused."""
    admission = Admission(max_connections=3, max_pending_per_address=None)
    first, second, third = admit_all(admission, A, 3)
    await trio.sleep(1)
    first.progress()
    await trio.sleep(admission.idle_after)
    third.progress()
    newcomer = admission.admit(B)  # second: idle since its admission; first stepped later
    assert newcomer is not None and second.evicted and not first.evicted
    second.release()
    newcomer.busy()
    third.busy()
    first.progress()
    fourth = admission.admit(B)  # no idle one: the one in set-up longest without a step
    assert fourth is not None and first.evicted
    first.release()
    fourth.busy()
    assert admission.admit(A) is None and admission.refusals == 1
    # An evicted ticket stays out, whatever its connection does before it closes.
    first.busy()
    first.pending()
    first.progress()
    assert admission.pending == 0 and admission.held == 3


async def test_a_keep_alive_connection_counts_from_its_last_request(autojump_clock: trio.testing.MockClock) -> None:
    """Between HTTP requests a connection waits; it is idle only ``idle_after`` seconds after
    its last response, not since it was opened."""
    admission = Admission(max_connections=10)
    ticket = admission.admit(A)
    assert ticket is not None
    await trio.sleep(admission.idle_after + 1)
    ticket.busy()
    assert admission.idle() == 0 and admission.pending == 0
    ticket.pending()
    assert admission.idle() == 0 and admission.pending == 1
    await trio.sleep(admission.idle_after)
    assert admission.idle() == 1


def test_limits_out_of_range_are_refused() -> None:
    for bad in (
        dict(max_connections=0),
        dict(max_connections=1, idle_after=0),
        dict(max_connections=1, pressure=0),
        dict(max_connections=1, pressure=1.5),
        dict(max_connections=1, max_pending_per_address=0),
    ):
        with pytest.raises(ValueError):
            Admission(**bad)  # type: ignore[arg-type]


# --------------------------------------------------------------------- over real sockets


@asynccontextmanager
async def rtmp_serving(authenticator: Any = None, **rtmp: Any) -> AsyncIterator[tuple[Engine, RtmpServer]]:
    server = RtmpServer("127.0.0.1", 0, **rtmp)
    builder = Engine.builder().application(AppSpec("live")).protocol(server)
    if authenticator is not None:
        builder.authenticator(authenticator)
    async with builder.build() as engine:
        yield engine, server


class SlowAuthenticator(AllowAll):
    """Allows every publish after ``delay`` seconds (a slow authorization hook)."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.waiting = 0

    async def authorize_publish(self, key: StreamKey, credentials: Credentials) -> None:
        self.waiting += 1
        await trio.sleep(self.delay)
        self.waiting -= 1


async def play_until_media(client: RawClient, port: int, done: list[RawClient], *, handshake: bool = True) -> None:
    """Set up a play of live/ok on an open connection (from its handshake, or from its
    ``connect`` when the handshake is done), then read until the first media."""
    if handshake:
        await client.handshake()
    client.session.connect("live", f"rtmp://127.0.0.1:{port}/live")
    await client.flush()
    assert (await client.command()).name == "_result"
    stream_id = await client.create_stream()
    client.session.play(stream_id, "ok")
    await client.flush()
    await client.read_event(MediaMessage)
    done.append(client)


async def test_a_burst_of_players_from_one_address_all_play(demo_frames: list[Frame]) -> None:
    """Issue 19 (scaled down): 40 players from one address, all connected before any finished
    its set-up, against 56 slots and a quota of 8 idle ones per address. Before: 32 of them
    were evicted in their handshake. Now all 40 play."""
    async with rtmp_serving(max_connections=56, max_pending_per_address=8) as (engine, server):
        async with trio.open_nursery() as nursery:
            await healthy_stream(engine, demo_frames, nursery)
            with trio.fail_after(20):
                clients = [await RawClient.open(server.port) for _ in range(40)]
                playing: list[RawClient] = []
                async with trio.open_nursery() as burst:
                    for client in clients:
                        burst.start_soon(play_until_media, client, server.port, playing)
            assert len(playing) == 40 and server.admission.evictions == 0
            assert server.connections == 40
            for client in clients:
                await client.aclose()
            nursery.cancel_scope.cancel()


async def test_a_burst_past_the_pressure_mark_evicts_only_the_idle(
    autojump_clock: trio.testing.MockClock, demo_frames: list[Frame]
) -> None:
    """The same burst near the cap (40 slots, pressure from 30 open), next to 6 connections of
    the same address that send nothing. Each player makes a step of its set-up every 3 s (a
    slow but real client); 5 s without one is idle. Four latecomers arrive under pressure: the
    address gives up its 3 oldest idle connections (it keeps fewer than its quota of 4 idle),
    never a player.
    Before: every connection counted against the quota from the start, players included."""
    async with rtmp_serving(max_connections=40, max_pending_per_address=4, handshake_timeout=60, setup_timeout=60) as (
        engine,
        server,
    ):
        async with trio.open_nursery() as nursery:
            await healthy_stream(engine, demo_frames, nursery)
            with trio.fail_after(30):
                idle = [await RawClient.open(server.port) for _ in range(6)]
                players = [await RawClient.open(server.port) for _ in range(30)]
                playing: list[RawClient] = []

                async def slow_player(client: RawClient) -> None:
                    await trio.sleep(3)
                    await client.handshake()  # two steps: C0+C1, C2
                    await trio.sleep(3)
                    await play_until_media(client, server.port, playing, handshake=False)

                async with trio.open_nursery() as burst:
                    for client in players:
                        burst.start_soon(slow_player, client)
                    await trio.sleep(6.5)  # the players stepped at 3 s, the idle ones never
                    assert server.admission.under_pressure
                    assert server.admission.idle("127.0.0.1") == 6
                    late = [await RawClient.open(server.port) for _ in range(4)]
                    for client in late:
                        burst.start_soon(play_until_media, client, server.port, playing)
                assert len(playing) == 34
                assert server.admission.evictions == 3
                for client in idle[:3]:
                    await client.assert_closed_by_server()
            assert server.connections == 34
            for client in idle + players + late:
                await client.aclose()
            nursery.cancel_scope.cancel()


async def test_the_rtmp_worker_reports_each_step_of_the_set_up(autojump_clock: trio.testing.MockClock) -> None:
    """What counts as progress: the handshake's parts and the commands; bytes that complete
    nothing (a drip) do not. While the server decides on a publish (a slow authorization),
    the connection is not idle: it is the server's turn."""
    authenticator = SlowAuthenticator(delay=20)
    async with rtmp_serving(authenticator, handshake_timeout=60, setup_timeout=60, idle_timeout=60) as (engine, server):
        admission = server.admission
        with trio.fail_after(50):
            client = await RawClient.open(server.port)
            await trio.sleep(admission.idle_after + 1)
            assert admission.idle() == 1
            handshake = ClientHandshake()
            await client.stream.send_all(handshake.initiate())  # C0+C1: a step
            while not handshake.complete:
                handshake.receive_data(await client.stream.receive_some(65536))
            assert admission.idle() == 0
            await trio.sleep(admission.idle_after + 1)
            assert admission.idle() == 1
            await client.stream.send_all(handshake.data_to_send())  # C2: a step
            await trio.sleep(0.1)
            assert admission.idle() == 0
            await trio.sleep(admission.idle_after + 1)
            assert admission.idle() == 1
            client.session.connect("live", f"rtmp://127.0.0.1:{server.port}/live")
            wire = client.session.data_to_send()
            await client.stream.send_all(wire[:-1])  # all but the last byte: no step
            await trio.sleep(0.1)
            assert admission.idle() == 1
            await client.stream.send_all(wire[-1:])
            await client.command()
            assert admission.idle() == 0 and admission.pending == 1
            stream_id = await client.create_stream()
            client.session.publish(stream_id, "cam")
            await client.flush()
            while not authenticator.waiting:
                await trio.sleep(0.01)
            await trio.sleep(admission.idle_after + 1)
            assert admission.idle() == 0 and admission.pending == 0
            assert (await client.command()).info["code"] == "NetStream.Publish.Start"
            await client.aclose()


@asynccontextmanager
async def http_serving(**http: Any) -> AsyncIterator[HttpServer]:
    server = HttpServer("127.0.0.1", 0, **http)
    async with Engine.builder().application(AppSpec("live")).protocol(server).build():
        yield server


async def test_a_burst_of_http_requests_from_one_address_is_served() -> None:
    """40 connections from one address, all open before any sent its request, against a quota
    of 8 and 56 slots. Before: 32 were evicted before their request was read."""
    async with http_serving(max_connections=56, max_pending_per_address=8) as server:
        with trio.fail_after(20):
            streams = [await trio.open_tcp_stream("127.0.0.1", server.port) for _ in range(40)]
            answers: list[bytes] = []

            async def ask(stream: trio.SocketStream) -> None:
                await stream.send_all(b"GET /api/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                data = b""
                while chunk := await stream.receive_some(65536):
                    data += chunk
                answers.append(data)

            async with trio.open_nursery() as nursery:
                for stream in streams:
                    nursery.start_soon(ask, stream)
        assert [answer[:12] for answer in answers] == [b"HTTP/1.1 200"] * 40
        assert server.admission.evictions == 0
        for stream in streams:
            await stream.aclose()
