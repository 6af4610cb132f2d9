"""What the log says (issue 19, item 8): one line per event, one level per kind of event on
every protocol (``arcly_trio/server/logs.py``, README Logs), read from the captured records.

In one process, over loopback sockets: a play refused by authorization is the throttle's one
warning, with its reason once, on RTMP and HTTP-FLV alike (the workers' own lines are debug);
a play of a missing stream is one information line on both; a player that resets its
connection after playing leaves its "stopped playing" line and nothing else; the other
workers' relays are not players; an idle flood, a refused-publisher flood and an idle HTTP flood
from one address are ten lines and a summary, not one line per connection; a pull the cluster
stops is one line, one that ends by itself one line too (the relay's); other libraries are
held to warnings unless the level is debug. ``tests/server/test_cli.py`` reads a real ``serve``'s
log (ready, URLs, ``--workers``, ``--log-level debug``, coredis).
"""

from __future__ import annotations

import logging
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from arcly_trio import AppSpec, Credentials, Engine, TokenAuthenticator
from arcly_trio.clients import open_rtmp_player
from arcly_trio.core.errors import RemoteRefused
from arcly_trio.protocols.rtmp import CommandReceived
from arcly_trio.server.logs import ThirdPartyFilter
from arcly_trio.workers.clientlog import ClientLog
from arcly_trio.workers.http import HttpServer
from arcly_trio.workers.rtmp import RtmpServer
from tests._rtmp import RawClient

HOST = "127.0.0.1"


@asynccontextmanager
async def servers(**options: Any) -> AsyncIterator[tuple[Engine, RtmpServer, HttpServer]]:
    """An engine with ``live``, an RTMP and an HTTP worker on 127.0.0.1:0."""
    rtmp = RtmpServer(HOST, 0, **options.pop("rtmp", {}))
    http = HttpServer(HOST, 0, **options.pop("http", {}))
    builder = Engine.builder().application(AppSpec("live")).protocol(rtmp).protocol(http)
    if "authenticator" in options:
        builder.authenticator(options.pop("authenticator"))
    if "per_address" in options:
        builder.max_publishers_per_address(options.pop("per_address"))
    async with builder.build() as engine:
        yield engine, rtmp, http


def lines(caplog: pytest.LogCaptureFixture, *needles: str, level: int = logging.DEBUG) -> list[logging.LogRecord]:
    """The captured records at ``level`` or above whose message has every one of ``needles``."""
    return [r for r in caplog.records if r.levelno >= level and all(n in r.getMessage() for n in needles)]


async def http_status(port: int, target: str, local_address: str = HOST) -> int:
    stream = await trio.open_tcp_stream(HOST, port, local_address=local_address)
    async with stream:
        await stream.send_all(f"GET {target} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
        head = await stream.receive_some(65536)
    return int(head.split(b" ")[1])


async def play_raw(port: int, name: str, local_address: str = HOST) -> RawClient:
    """A raw RTMP player of ``live/name`` that has received its first media message."""
    client = await RawClient.open(port, local_address=local_address)
    await client.connect("live", port)
    stream_id = await client.create_stream()
    client.session.play(stream_id, name)
    await client.flush()
    return client


# ------------------------------------------------------------------ one level per kind, every protocol


async def test_a_refused_play_is_the_throttles_one_warning_with_its_reason_once_on_every_protocol(
    caplog: pytest.LogCaptureFixture, demo_frames: list
) -> None:  # type: ignore[type-arg]
    """Before: "play of live/cam refused: play of live/cam refused: no token" (doubled), logged
    by ``auth`` and again by ``rtmp`` at WARNING, while HTTP-FLV's second line was INFO."""
    caplog.set_level(logging.DEBUG, logger="arcly_trio")
    with trio.fail_after(20):
        async with servers(authenticator=TokenAuthenticator(play_token="v")) as (engine, rtmp, http):
            async with engine.publish("live/cam") as publisher:
                await publisher.send(demo_frames[0])
                with pytest.raises(RemoteRefused):
                    async with open_rtmp_player(f"rtmp://{HOST}:{rtmp.port}/live/cam"):
                        pass
                assert await http_status(http.port, "/live/cam.flv", local_address="127.0.0.2") == 401
    for protocol, address, worker in (("rtmp", HOST, "arcly_trio.rtmp"), ("http-flv", "127.0.0.2", "arcly_trio.http")):
        warnings = lines(caplog, address, level=logging.WARNING)
        assert [r.getMessage() for r in warnings] == [
            f"{address} refused: play of live/cam over {protocol}: no token (further refusals from this address are "
            "delayed)"
        ]
        assert warnings[0].name == "arcly_trio.auth"
        own = [
            r for r in caplog.records if r.name == worker and "refused" in r.getMessage() and address in r.getMessage()
        ]
        assert [(r.levelno, r.getMessage().partition(" ")[2].partition(" ")[2]) for r in own] == [
            (logging.DEBUG, "play of live/cam refused: no token")
        ]


async def test_a_play_of_a_missing_stream_is_one_info_line_on_rtmp_and_http_flv(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="arcly_trio")
    with trio.fail_after(20):
        async with servers() as (engine, rtmp, http):
            with pytest.raises(RemoteRefused):
                async with open_rtmp_player(f"rtmp://{HOST}:{rtmp.port}/live/none"):
                    pass
            assert await http_status(http.port, "/live/none.flv") == 404
    refused = lines(caplog, "play of live/none refused", level=logging.INFO)
    assert sorted((r.name, r.levelno) for r in refused) == [
        ("arcly_trio.http", logging.INFO),
        ("arcly_trio.rtmp", logging.INFO),
    ]
    assert all(r.getMessage().count("refused") == 1 for r in refused)
    assert not lines(caplog, level=logging.WARNING)


async def test_a_player_that_resets_its_connection_after_playing_leaves_only_its_stop_line(
    caplog: pytest.LogCaptureFixture, demo_frames: list
) -> None:  # type: ignore[type-arg]
    """Before: "stopped playing live/cam (connection closed...)" and then "went away: socket
    connection broken: [Errno 104] Connection reset by peer" for the same player."""
    caplog.set_level(logging.INFO, logger="arcly_trio")
    with trio.fail_after(20):
        async with servers() as (engine, rtmp, http):
            async with engine.publish("live/cam") as publisher:
                for frame in demo_frames[:40]:
                    await publisher.send(frame)
                client = await play_raw(rtmp.port, "cam")
                await client.read_event(CommandReceived)
                client.stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                await client.aclose()  # a reset
                while not lines(caplog, client.tag, "stopped playing"):
                    await trio.sleep(0.02)
                while rtmp.open_connections:
                    await trio.sleep(0.02)
    assert [r.getMessage().partition(client.tag)[2].split(" (")[0] for r in lines(caplog, client.tag)] == [
        " playing live/cam",
        " stopped playing live/cam",
    ]


async def test_the_other_workers_relays_are_not_players_in_the_log(
    caplog: pytest.LogCaptureFixture, demo_frames: list, tmp_path: Path
) -> None:  # type: ignore[type-arg]
    """Before: "rtmp local:0 playing live/cam" for every pull of another worker."""
    caplog.set_level(logging.DEBUG, logger="arcly_trio")
    relay = str(tmp_path / "rtmp.sock")
    with trio.fail_after(20):
        async with servers(rtmp={"unix_socket": relay}) as (engine, rtmp, http):
            async with engine.publish("live/cam") as publisher:
                for frame in demo_frames[:40]:
                    await publisher.send(frame)
                async with open_rtmp_player("rtmp://localhost/live/cam", unix_socket=relay) as player:
                    assert await player.next_batch()
            while rtmp.open_connections:
                await trio.sleep(0.02)
    assert not lines(caplog, "local:0", level=logging.INFO)
    assert [r.getMessage() for r in lines(caplog, "local:0", "playing live/cam")] == [
        "relay local:0 playing live/cam",
        "relay local:0 stopped playing live/cam (stopped by the player; 0 frames dropped)",
    ]


# ------------------------------------------------------------------ floods: a few lines and a summary


async def test_an_idle_rtmp_flood_from_one_address_is_ten_lines_and_a_summary(caplog: pytest.LogCaptureFixture) -> None:
    """Before: one "handshake not completed" WARNING per connection (3000 lines for 3000)."""
    caplog.set_level(logging.INFO, logger="arcly_trio")
    with trio.fail_after(30):
        async with servers(rtmp={"handshake_timeout": 0.3}) as (engine, rtmp, http):
            async with trio.open_nursery() as nursery:
                for _ in range(40):
                    nursery.start_soon(_closed_by_server, rtmp.port)
            rtmp.clients.flush()
    timeouts = lines(caplog, "handshake not completed within 0.3 s")
    assert len([r for r in timeouts if "more" not in r.getMessage()]) == 10
    summary = [r.getMessage() for r in timeouts if "more" in r.getMessage()]
    assert len(summary) == 1 and summary[0].startswith(f"{HOST}: 30 more timeouts in the last "), summary
    assert {r.levelno for r in timeouts} == {logging.INFO}


async def test_an_idle_http_flood_from_one_address_is_ten_lines_and_a_summary(caplog: pytest.LogCaptureFixture) -> None:
    """Before: one "request head not complete" line per connection."""
    caplog.set_level(logging.INFO, logger="arcly_trio")
    with trio.fail_after(30):
        async with servers(http={"header_timeout": 0.3}) as (engine, rtmp, http):
            async with trio.open_nursery() as nursery:
                for _ in range(30):
                    nursery.start_soon(_closed_by_server, http.port)
            http.clients.flush()
    assert len([r for r in lines(caplog, "closed: request head not complete") if "more" not in r.getMessage()]) == 10
    summary = [r.getMessage() for r in lines(caplog, "more timeouts")]
    assert len(summary) == 1 and summary[0].startswith(f"{HOST}: 20 more timeouts in the last "), summary
    assert "request head not complete after 0.3 s" in summary[0]


async def test_refused_publishers_past_the_per_address_cap_are_ten_lines_and_a_summary(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before: one line per refused publisher (1000 for 1000)."""
    caplog.set_level(logging.INFO, logger="arcly_trio")
    with trio.fail_after(30):
        async with servers(per_address=1) as (engine, rtmp, http):
            async with engine.publish("live/first", Credentials(peer=(HOST, 1))):
                async with trio.open_nursery() as nursery:
                    for n in range(25):
                        nursery.start_soon(_refused_publisher, rtmp.port, f"s{n}")
            rtmp.clients.flush()
    refused = lines(caplog, "publish of live/s", "refused: ", level=logging.INFO)
    assert len([r for r in refused if "more refusals" not in r.getMessage()]) == 10, [r.getMessage() for r in refused]
    summary = [r.getMessage() for r in lines(caplog, "more refusals")]
    assert len(summary) == 1 and summary[0].startswith(f"{HOST}: 15 more refusals in the last "), summary


async def _closed_by_server(port: int) -> None:
    stream = await trio.open_tcp_stream(HOST, port)
    async with stream:
        try:
            while await stream.receive_some(65536):
                pass
        except trio.BrokenResourceError:
            pass


async def _refused_publisher(port: int, name: str) -> None:
    client = await RawClient.open(port)
    try:
        await client.connect("live", port)
        stream_id = await client.create_stream()
        client.session.publish(stream_id, name)
        await client.flush()
        await client.assert_closed_by_server()
    finally:
        await client.aclose()


def test_client_lines_are_bounded_in_all_and_summed_up_per_address(autojump_clock: Any) -> None:  # noqa: ARG001
    """Many addresses: at most ``in_all`` lines of their own in an interval, and the addresses past
    what is followed one by one are summed up in one line."""
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    logger = logging.getLogger("arcly_trio.test-clientlog")
    logger.setLevel(logging.INFO)
    logger.addHandler(Keep())
    logger.propagate = False

    async def main() -> None:
        log = ClientLog(logger, per_address=2, in_all=5, max_addresses=4)
        for n in range(10):
            for _ in range(3):
                log.log(logging.INFO, f"10.0.0.{n}", "timeouts", "client %s timed out", f"10.0.0.{n}")
        log.log(logging.DEBUG, "10.0.0.1", "timeouts", "a debug line is never held back")
        await trio.sleep(11)
        log.log(logging.INFO, "10.0.0.1", "timeouts", "client %s timed out", "10.0.0.1")  # a new interval
        assert log.held == 30 - 5

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert records[:5] == [
        "client 10.0.0.0 timed out",
        "client 10.0.0.0 timed out",
        "client 10.0.0.1 timed out",
        "client 10.0.0.1 timed out",
        "client 10.0.0.2 timed out",
    ]
    assert records[5:9] == [
        "10.0.0.0: 1 more timeouts in the last 11 s; the last: client 10.0.0.0 timed out",
        "10.0.0.1: 1 more timeouts in the last 11 s; the last: client 10.0.0.1 timed out",
        "10.0.0.2: 2 more timeouts in the last 11 s; the last: client 10.0.0.2 timed out",
        "10.0.0.3: 3 more timeouts in the last 11 s; the last: client 10.0.0.3 timed out",
    ]
    assert records[9] == (
        "18 more lines about clients in the last 11 s, from more addresses than are followed one "
        "by one; the last: client 10.0.0.9 timed out"
    )
    assert records[10:] == ["client 10.0.0.1 timed out"]


# ------------------------------------------------------------------ relays and clusters: one line each


async def test_a_pull_the_cluster_ends_and_one_that_ends_by_itself_are_one_line_each(
    caplog: pytest.LogCaptureFixture, demo_frames: list
) -> None:  # type: ignore[type-arg]
    """Before: the relay's "pull of live/cam from ... ended: no viewer for 0.5 s" and the
    cluster's "pull of live/cam from node A ended: no viewer for 0.5 s" for one end."""
    from arcly_trio.cluster import MemoryDirectory
    from tests._nodes import cluster_node, publish_frames

    caplog.set_level(logging.INFO, logger="arcly_trio")
    directory = MemoryDirectory()
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(cluster_node(directory, "A"))
        b = await stack.enter_async_context(cluster_node(directory, "B"))
        nursery = await stack.enter_async_context(trio.open_nursery())
        with trio.fail_after(20):
            await nursery.start(publish_frames, f"rtmp://{HOST}:{a[1].port}/live/cam", demo_frames)
            async with open_rtmp_player(f"rtmp://{HOST}:{b[1].port}/live/cam") as player:
                assert await player.next_batch()
            while not lines(caplog, "pull of live/cam", "ended"):
                await trio.sleep(0.05)
            await trio.sleep(0.3)
            nursery.cancel_scope.cancel()
    ended = [r.getMessage() for r in lines(caplog, "pull of live/cam", "ended")]
    assert len(ended) == 1 and ended[0].endswith("ended: no viewer for 0.5 s"), ended


# ------------------------------------------------------------------ other libraries


def test_other_libraries_are_held_to_warnings_unless_the_level_is_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    """coredis logs a "Retry attempt" line every 10 ms against an unreachable Redis, and "No
    matching script. Please use EVAL." in normal operation, at INFO."""
    keep = ThirdPartyFilter()
    root = logging.getLogger()

    def record(name: str, level: int) -> logging.LogRecord:
        return logging.LogRecord(name, level, __file__, 1, "x", None, None)

    monkeypatch.setattr(root, "level", logging.INFO)
    assert not keep.filter(record("coredis", logging.INFO))
    assert not keep.filter(record("coredis.pool", logging.INFO))
    assert keep.filter(record("coredis", logging.WARNING))
    assert keep.filter(record("arcly_trio.rtmp", logging.INFO))
    monkeypatch.setattr(root, "level", logging.DEBUG)
    assert keep.filter(record("coredis", logging.INFO)) and keep.filter(record("hpack.hpack", logging.DEBUG))
    assert not keep.filter(record("httpx", logging.INFO))  # it names a hook's whole URL, password and all
    assert keep.filter(record("arcly_trio.http", logging.DEBUG))


async def test_a_renamed_publish_is_logged_under_the_key_it_publishes(caplog: pytest.LogCaptureFixture) -> None:
    """An authenticator (a hook's redirect) renames a streamer's secret key to the public
    name: the worker's lines name the stream that is published, as they do for a play."""
    from arcly_trio import StreamKey
    from arcly_trio.clients import open_rtmp_publisher

    class Renamer:
        async def authorize_publish(self, key: StreamKey, credentials: Credentials) -> StreamKey:
            return StreamKey(key.app, "public")

        async def authorize_play(self, key: StreamKey, credentials: Credentials) -> None:
            return None

    caplog.set_level(logging.INFO, logger="arcly_trio")
    with trio.fail_after(20):
        async with servers(authenticator=Renamer()) as (engine, rtmp, http):
            async with open_rtmp_publisher(f"rtmp://{HOST}:{rtmp.port}/live/secret-key"):
                while not lines(caplog, "publishing live/"):
                    await trio.sleep(0.02)
            while not lines(caplog, "stopped publishing"):
                await trio.sleep(0.02)
    assert [r.getMessage().split(" ", 2)[2] for r in lines(caplog, "publishing live/")] == [
        "publishing live/public",
        "stopped publishing live/public (unpublished)",
    ]


async def test_players_of_a_stream_that_ended_are_not_logged_as_gone(caplog, demo_frames) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.INFO)
    http = HttpServer("127.0.0.1", 0)
    async with Engine.builder().application("live").protocol(http).build() as engine:
        async with engine.publish("live/cam") as publisher:
            for frame in demo_frames[:30]:
                await publisher.send(frame)
            stream = await trio.open_tcp_stream("127.0.0.1", http.port)
            await stream.send_all(b"GET /live/cam.flv HTTP/1.1\r\nHost: x\r\n\r\n")
            with trio.fail_after(5):
                await stream.receive_some(65536)
        with trio.fail_after(5):
            while await stream.receive_some(65536):
                pass
        await trio.sleep(0.1)
    lines = [r.getMessage() for r in caplog.records if "stopped playing live/cam" in r.getMessage()]
    assert len(lines) == 1 and "(stream-ended;" in lines[0], lines
