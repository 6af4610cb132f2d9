"""Bad input against the running RTMP server, over real sockets, while ffmpeg streams through it.

Every test starts an engine whose RTMP server has 1 s handshake and idle timeouts, an ffmpeg
publisher (H.264+AAC, 320x240) and an ffmpeg player that decodes it, then opens one misbehaving
connection: a garbage handshake, an oversized chunk size or message, a truncated message, a
slowloris that never finishes the handshake, a client that connects and then does nothing, a
connect to an unknown application, a play of a missing stream, AMF0 garbage in a command.
Each time:

* that connection is closed by the server (the client reads EOF; for the rejections, after
  the right ``_error``/``onStatus`` code);
* exactly one log line of the RTMP worker names the client's address and the reason, at the
  level of its kind of event (``arcly_trio.server.logs``: a broken protocol is a warning, a
  timeout or a refusal of what it asked for is information), on every protocol alike;
* nothing else is disturbed: the publisher is still publishing (the same session), the player
  keeps decoding video and audio, and the server accepts a new connection.

Timeouts are real (1 s for the slowloris and the idle client); a ``trio.fail_after`` bounds
every test.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Awaitable, Callable

import pytest
import trio

from arcly_trio.media import amf0
from arcly_trio.protocols.rtmp import CommandReceived, Event
from arcly_trio.protocols.rtmp.chunks import chunk_message
from tests._ffmpeg import player, publisher
from tests._rtmp import RawClient
from tests._serving import records, rtmp_engine, rtmp_url, wait_publishing, wait_until

pytestmark = pytest.mark.interop


def commands(events: list[Event]) -> list[CommandReceived]:
    return [event for event in events if isinstance(event, CommandReceived)]


# ------------------------------------------------------------------------ the bad clients
# Each opens one connection, misbehaves, checks how the server ends it, and returns the client
# (its address tags the server's log line) and a piece of the reason the line must give.

Attack = Callable[[int], Awaitable[tuple[RawClient, str]]]


async def garbage_version(port: int) -> tuple[RawClient, str]:
    client = await RawClient.open(port)
    await client.stream.send_all(b"\x06" + bytes(range(256)) * 6)  # RTMPE's C0, then filler
    await client.assert_closed_by_server()
    return client, "unsupported RTMP version 6"


async def random_bytes(port: int) -> tuple[RawClient, str]:
    client = await RawClient.open(port)
    await client.stream.send_all(b"GET /live/cam HTTP/1.1\r\nHost: x\r\n\r\n" + bytes(3000))
    await client.assert_closed_by_server()
    return client, "unsupported RTMP version 71"  # 71 is "G"


async def oversized_chunk_size(port: int) -> tuple[RawClient, str]:
    client = await RawClient.open(port)
    await client.handshake()
    # Set Chunk Size (type 1) of 1 GiB, far above the 64 KiB the server accepts.
    await client.stream.send_all(chunk_message(2, 1, 0, 0, struct.pack(">I", 1 << 30), 128))
    await client.assert_closed_by_server()
    return client, "chunk message of 1073741824 bytes exceeds the limit of 65536"


async def oversized_message(port: int) -> tuple[RawClient, str]:
    client = await RawClient.open(port)
    await client.handshake()
    # A format-0 header on chunk stream 3 announcing a 16 MiB AMF0 command (type 20), and the
    # first few bytes of it: the header alone is enough to refuse it.
    header = bytes([0x03]) + (0).to_bytes(3, "big") + (0xFFFFFF).to_bytes(3, "big") + bytes([20])
    await client.stream.send_all(header + struct.pack("<I", 0) + b"\x02\x00\x07connect")
    await client.assert_closed_by_server()
    return client, "message of 16777215 bytes exceeds the limit of 65536"


async def truncated_message(port: int) -> tuple[RawClient, str]:
    client = await RawClient.open(port)
    await client.handshake()
    client.session.connect("live")
    connect = client.session.data_to_send()
    await client.stream.send_all(connect[: len(connect) // 2])
    await trio.sleep(0.2)  # let the server take in the half chunk
    await client.stream.send_eof()
    await client.assert_closed_by_server()
    return client, "in the middle of a message"


async def slowloris(port: int) -> tuple[RawClient, str]:
    client = await RawClient.open(port)
    await client.stream.send_all(b"\x03" + bytes(700))  # C0 and half a C1, then nothing
    start = trio.current_time()
    await client.assert_closed_by_server()
    assert trio.current_time() - start >= 0.5  # closed by the timeout, not at once
    return client, "handshake not completed within 1 s"


async def idle_after_connect(port: int) -> tuple[RawClient, str]:
    client = await RawClient.open(port)
    await client.handshake()
    client.session.connect("live", rtmp_url(port, "live"))
    await client.flush()
    start = trio.current_time()
    replies = commands(await client.read_until_closed())  # connected, then nothing: reaped
    assert trio.current_time() - start >= 0.5
    assert [c.info.get("code") for c in replies if c.name == "_result"] == ["NetConnection.Connect.Success"]
    return client, "no command for 1 s (neither publishing nor playing)"


async def unknown_app(port: int) -> tuple[RawClient, str]:
    client = await RawClient.open(port)
    await client.handshake()
    tid = client.session.connect("nope", rtmp_url(port, "nope"))
    await client.flush()
    replies = commands(await client.read_until_closed())
    answer = [c for c in replies if c.transaction_id == tid]
    assert [c.name for c in answer] == ["_error"], replies
    assert answer[0].info["code"] == "NetConnection.Connect.Rejected"
    return client, "connect to unknown application 'nope'"


async def missing_stream(port: int) -> tuple[RawClient, str]:
    client = await RawClient.open(port)
    await client.handshake()
    client.session.connect("live", rtmp_url(port, "live"))
    tid = client.session.create_stream()
    await client.flush()
    stream_id = None
    while stream_id is None:
        data = await client.stream.receive_some(65536)
        assert data, "closed before createStream was answered"
        client.session.receive_data(data)
        for event in client.session.events():
            client.events.append(event)
            if isinstance(event, CommandReceived) and event.transaction_id == tid:
                assert event.name == "_result"
                stream_id = int(event.arguments[0])
    client.session.play(stream_id, "missing")
    await client.flush()
    statuses = [c.info.get("code") for c in commands(await client.read_until_closed()) if c.name == "onStatus"]
    assert statuses == ["NetStream.Play.StreamNotFound"]
    return client, "play of live/missing refused"


#: The level of each attack's line: one per kind of event (arcly_trio/server/logs.py, README Logs).
LEVELS = {
    "slowloris": logging.INFO,
    "idle-after-connect": logging.INFO,  # timeouts
    "unknown-app": logging.INFO,
    "missing-stream": logging.INFO,  # refusals of what was asked
}

ATTACKS: dict[str, Attack] = {
    "garbage-version": garbage_version,
    "random-bytes": random_bytes,
    "oversized-chunk-size": oversized_chunk_size,
    "oversized-message": oversized_message,
    "truncated-message": truncated_message,
    "slowloris": slowloris,
    "idle-after-connect": idle_after_connect,
    "unknown-app": unknown_app,
    "missing-stream": missing_stream,
}


@pytest.mark.parametrize("attack", list(ATTACKS))
async def test_bad_client_is_closed_logged_and_disturbs_nothing(attack: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="arcly_trio")
    with trio.fail_after(30):
        async with rtmp_engine(handshake_timeout=1.0, idle_timeout=1.0) as (engine, server):
            url = rtmp_url(server.port, "live/cam")
            async with publisher(url) as pub:
                stream = await wait_publishing(engine, "live/cam")
                session = stream.session
                async with player(url) as play:
                    await play.wait_frames(video=5, audio=5)

                    client, reason = await ATTACKS[attack](server.port)
                    await client.aclose()

                    # Nothing else noticed: the player keeps decoding both tracks, the
                    # publisher's session is the one it was, the server takes new clients.
                    await play.keeps_decoding()
                    assert pub.running, pub.stderr()
                    assert stream.session is session and stream.publishing
                    fresh = await RawClient.open(server.port)
                    await fresh.handshake()
                    await fresh.aclose()
                    # Every connection but the publisher's and the player's is gone.
                    await wait_until(lambda: server.open_connections == 2)

            lines = [r for r in caplog.records if r.name == "arcly_trio.rtmp" and client.tag in r.getMessage()]
            assert len(lines) == 1, [r.getMessage() for r in lines]
            assert reason in lines[0].getMessage()
            assert lines[0].levelno == LEVELS.get(attack, logging.WARNING)  # else: it broke the protocol
            assert engine.stream_failures == 0


async def test_many_bad_clients_at_once_leave_the_stream_alone(caplog: pytest.LogCaptureFixture) -> None:
    """All the bad clients together, concurrently, twice over."""
    caplog.set_level(logging.INFO, logger="arcly_trio")
    with trio.fail_after(30):
        async with rtmp_engine(handshake_timeout=1.0, idle_timeout=1.0) as (engine, server):
            url = rtmp_url(server.port, "live/cam")
            async with publisher(url) as pub:
                stream = await wait_publishing(engine, "live/cam")
                async with player(url) as play:
                    await play.wait_frames(video=5, audio=5)
                    clients: list[tuple[RawClient, str]] = []

                    async def run(attack: Attack) -> None:
                        client, reason = await attack(server.port)
                        await client.aclose()
                        clients.append((client, reason))

                    async with trio.open_nursery() as nursery:
                        for attack in list(ATTACKS.values()) * 2:
                            nursery.start_soon(run, attack)
                    await play.keeps_decoding()
                    assert pub.running and stream.publishing
            for client, reason in clients:
                assert len(records(caplog, client.tag)) == 1
                assert len(records(caplog, client.tag, reason)) == 1
            assert len(clients) == 2 * len(ATTACKS)
            assert engine.stream_failures == 0


async def test_amf0_garbage_in_a_command_closes_only_that_connection(caplog: pytest.LogCaptureFixture) -> None:
    """A well-framed command message whose AMF0 body is garbage (an AMF3 switch, then junk)."""
    caplog.set_level(logging.INFO, logger="arcly_trio")
    with trio.fail_after(20):
        async with rtmp_engine() as (engine, server):
            url = rtmp_url(server.port, "live/cam")
            async with publisher(url) as pub:
                await wait_publishing(engine, "live/cam")
                async with player(url) as play:
                    await play.wait_frames(video=5, audio=5)
                    client = await RawClient.open(server.port)
                    await client.handshake()
                    body = amf0.encode("connect", 1.0) + b"\x11\x0a\x0b\x01\xff\xff"
                    await client.stream.send_all(chunk_message(3, 20, 0, 0, body, 128))
                    await client.assert_closed_by_server()
                    await client.aclose()
                    await play.keeps_decoding()
                    assert pub.running
            lines = records(caplog, client.tag)
            assert len(lines) == 1 and "closed" in lines[0].getMessage()
