"""Tests of the sans-IO RTMP handshake: both sides, both schemes, any split, and real ffmpeg.

The digest checks here are written from the scheme's description (offsets, keys, HMACs)
independently of the module, so a mistake in one is not mirrored in the other; the ffmpeg tests
check both against a real implementation.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from arcly_trio.core.errors import LocalProtocolError, RemoteProtocolError
from arcly_trio.media import amf0
from arcly_trio.protocols.rtmp.handshake import (
    PACKET_SIZE,
    ClientHandshake,
    HandshakeError,
    ServerHandshake,
)
from tests._net import free_port
from tests._tools import require_tool

# --------------------------------------------------------------------------------------------
# An independent reading of the digest scheme

TAIL = bytes(
    [
        0xF0, 0xEE, 0xC2, 0x4A, 0x80, 0x68, 0xBE, 0xE8, 0x2E, 0x00, 0xD0, 0xD1, 0x02, 0x9E, 0x7E, 0x57,
        0x6E, 0xEC, 0x5D, 0x2D, 0x29, 0x80, 0x6F, 0xAB, 0x93, 0xB8, 0xE6, 0x36, 0xCF, 0xEB, 0x31, 0xAE,
    ]
)  # fmt: skip
PLAYER_TEXT = b"Genuine Adobe Flash Player 001"
SERVER_TEXT = b"Genuine Adobe Flash Media Server 001"
PLAYER_KEY = PLAYER_TEXT + TAIL
SERVER_KEY = SERVER_TEXT + TAIL


def sha(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def digest_at(packet: bytes, scheme: int) -> int:
    if scheme == 0:
        return 12 + (packet[8] + packet[9] + packet[10] + packet[11]) % 728
    return 776 + (packet[772] + packet[773] + packet[774] + packet[775]) % 728


def carried_digest(packet: bytes, key: bytes) -> bytes | None:
    """The digest ``packet`` carries under ``key`` in either scheme, or None."""
    for scheme in (0, 1):
        at = digest_at(packet, scheme)
        if sha(key, packet[:at] + packet[at + 32 :]) == packet[at : at + 32]:
            return packet[at : at + 32]
    return None


def make_digest_c1(scheme: int, rng: random.Random, version: int = 0x0A000C02) -> bytes:
    packet = bytearray(struct.pack(">II", 1234, version) + rng.randbytes(PACKET_SIZE - 8))
    at = digest_at(bytes(packet), scheme)
    packet[at : at + 32] = sha(PLAYER_TEXT, bytes(packet[:at] + packet[at + 32 :]))
    return bytes(packet)


def response_ok(packet: bytes, peer_digest: bytes, full_key: bytes) -> bool:
    """Is ``packet`` a digest-scheme S2/C2 answering ``peer_digest``?"""
    return sha(sha(full_key, peer_digest), packet[:1504]) == packet[1504:]


def seeded(seed: int) -> Callable[[int], bytes]:
    return random.Random(seed).randbytes


def feed(side: ServerHandshake | ClientHandshake, data: bytes, sizes: list[int]) -> bytes | None:
    """Feed ``data`` in pieces of ``sizes`` (cycled) until complete.

    Returns the bytes that belong to the chunk stream (leftover plus pieces not fed), or None
    if the handshake did not complete.
    """
    pos = 0
    index = 0
    while pos < len(data):
        size = sizes[index % len(sizes)]
        index += 1
        side.receive_data(data[pos : pos + size])
        pos += size
        if side.complete:
            return side.leftover() + data[pos:]
    return None


# --------------------------------------------------------------------------------------------
# Client <-> server


def run_handshake(
    digest: bool, sizes: list[int], client_extra: bytes, server_extra: bytes, seed: int = 1
) -> tuple[ServerHandshake, ClientHandshake]:
    server = ServerHandshake(random_bytes=seeded(seed))
    client = ClientHandshake(digest=digest, random_bytes=seeded(seed + 1), epoch=77)
    c0c1 = client.initiate()
    assert len(c0c1) == 1 + PACKET_SIZE
    assert feed(server, c0c1, sizes) is None
    s0s1s2 = server.data_to_send()
    # S0+S1+S2 go out as soon as C1 is in, before C2.
    assert len(s0s1s2) == 1 + 2 * PACKET_SIZE
    assert server.data_to_send() == b""
    assert client.data_to_send() == b""
    assert feed(client, s0s1s2 + server_extra, sizes) == server_extra
    c2 = client.data_to_send()
    assert len(c2) == PACKET_SIZE
    assert not server.complete
    assert feed(server, c2 + client_extra, sizes) == client_extra
    assert server.complete and client.complete
    return server, client


sizes_strategy = st.lists(st.integers(min_value=1, max_value=3100), min_size=1, max_size=8)


@settings(max_examples=60, deadline=None)
@given(
    digest=st.booleans(),
    sizes=sizes_strategy,
    client_extra=st.binary(max_size=300),
    server_extra=st.binary(max_size=50),
    seed=st.integers(0, 1000),
)
def test_client_server_any_split(
    digest: bool, sizes: list[int], client_extra: bytes, server_extra: bytes, seed: int
) -> None:
    server, client = run_handshake(digest, sizes, client_extra, server_extra, seed)
    assert server.digest is digest
    assert client.digest is digest
    assert server.peer_epoch == 77
    assert server.peer_version == (0x09007C02 if digest else 0)
    assert client.peer_version == (0x05000301 if digest else 0)


@settings(max_examples=40, deadline=None)
@given(
    digest=st.booleans(),
    sizes=sizes_strategy,
    extra=st.binary(min_size=1, max_size=500),
    seed=st.integers(0, 1000),
)
def test_server_whole_client_stream_any_split(digest: bool, sizes: list[int], extra: bytes, seed: int) -> None:
    """C0+C1, C2 and chunk bytes as one stream, split anywhere (C2 may share a read with C1)."""
    # First pass: learn C2 (deterministic randomness makes a second server answer the same).
    first = ServerHandshake(random_bytes=seeded(seed))
    client = ClientHandshake(digest=digest, random_bytes=seeded(seed + 1))
    c0c1 = client.initiate()
    first.receive_data(c0c1)
    answer = first.data_to_send()
    client.receive_data(answer)
    stream = c0c1 + client.data_to_send() + extra

    server = ServerHandshake(random_bytes=seeded(seed))
    assert feed(server, stream, sizes) == extra
    assert server.data_to_send() == answer
    assert server.digest is digest
    with pytest.raises(LocalProtocolError):
        server.receive_data(b"\x03")


def test_leftover_in_same_read_as_c2() -> None:
    chunk = bytes.fromhex("030000000000d5140000000002000763") + b"onnect"
    server, _ = run_handshake(True, [1 + PACKET_SIZE, PACKET_SIZE + len(chunk)], chunk, b"")
    assert server.leftover() == b""  # returned once, then cleared


@pytest.mark.parametrize("scheme", [0, 1])
def test_server_answers_digest_c1_per_spec(scheme: int) -> None:
    rng = random.Random(scheme)
    c1 = make_digest_c1(scheme, rng)
    server = ServerHandshake(random_bytes=seeded(5), epoch=99)
    server.receive_data(b"\x03" + c1)
    assert server.digest
    assert server.peer_version == 0x0A000C02 and server.peer_epoch == 1234
    out = server.data_to_send()
    s0, s1, s2 = out[:1], out[1 : 1 + PACKET_SIZE], out[1 + PACKET_SIZE :]
    assert s0 == b"\x03"
    assert struct.unpack(">I", s1[:4]) == (99,)
    assert s1[4] >= 3  # FFmpeg only validates a digest when this byte is >= 3
    # S1 is signed with the server text key, in the scheme the client used.
    at = digest_at(s1, scheme)
    assert sha(SERVER_TEXT, s1[:at] + s1[at + 32 :]) == s1[at : at + 32]
    # S2 answers the client's digest under the full server key.
    c1_digest = c1[digest_at(c1, scheme) : digest_at(c1, scheme) + 32]
    assert response_ok(s2, c1_digest, SERVER_KEY)
    assert s2 != c1


def test_client_digest_c1_and_c2_per_spec() -> None:
    client = ClientHandshake(digest=True, random_bytes=seeded(3), epoch=5)
    c0c1 = client.initiate()
    c1 = c0c1[1:]
    assert c0c1[0] == 3
    assert struct.unpack(">II", c1[:8]) == (5, 0x09007C02)
    at = digest_at(c1, 0)  # FFmpeg and librtmp use scheme 0 too
    c1_digest = c1[at : at + 32]
    assert sha(PLAYER_TEXT, c1[:at] + c1[at + 32 :]) == c1_digest

    # A digest S1 (scheme 1) and S2 built here from the description.
    rng = random.Random(9)
    s1 = bytearray(struct.pack(">II", 0, 0x03050101) + rng.randbytes(PACKET_SIZE - 8))
    s_at = digest_at(bytes(s1), 1)
    s1[s_at : s_at + 32] = sha(SERVER_TEXT, bytes(s1[:s_at] + s1[s_at + 32 :]))
    s1_digest = bytes(s1[s_at : s_at + 32])
    filler = rng.randbytes(1504)
    s2 = filler + sha(sha(SERVER_KEY, c1_digest), filler)

    client.receive_data(b"\x03" + bytes(s1))
    assert not client.complete
    c2 = client.data_to_send()
    assert response_ok(c2, s1_digest, PLAYER_KEY)
    assert client.digest and client.peer_version == 0x03050101
    client.receive_data(s2)
    assert client.complete


def test_simple_client_sends_zero_version_and_echoes_s1() -> None:
    client = ClientHandshake(digest=False, random_bytes=seeded(3))
    c1 = client.initiate()[1:]
    assert c1[4:8] == b"\x00\x00\x00\x00"
    s1 = bytes(8) + random.Random(1).randbytes(PACKET_SIZE - 8)
    client.receive_data(b"\x03" + s1)
    assert client.data_to_send() == s1
    client.receive_data(bytes(PACKET_SIZE))  # S2 not checked in the simple scheme
    assert client.complete and not client.digest


def test_digest_client_against_simple_server_falls_back() -> None:
    client = ClientHandshake(digest=True, random_bytes=seeded(3))
    client.initiate()
    s1 = bytes(8) + random.Random(1).randbytes(PACKET_SIZE - 8)
    client.receive_data(b"\x03" + s1 + bytes(PACKET_SIZE) + b"tail")
    assert client.complete and not client.digest
    assert client.data_to_send() == s1
    assert client.leftover() == b"tail"


# --------------------------------------------------------------------------------------------
# Garbage


@pytest.mark.parametrize("version", [0, 1, 2, 4, 6, 8, 0x47, 255])
def test_server_rejects_other_versions_at_once(version: int) -> None:
    server = ServerHandshake()
    with pytest.raises(HandshakeError, match=f"version {version}"):
        server.receive_data(bytes([version]))
    assert isinstance(HandshakeError("x"), RemoteProtocolError)
    with pytest.raises(LocalProtocolError):
        server.receive_data(b"\x03")


def test_server_falls_back_to_simple_for_bad_digest() -> None:
    rng = random.Random(4)
    c1 = struct.pack(">II", 0, 0x0A000C02) + rng.randbytes(PACKET_SIZE - 8)  # version, no digest
    server = ServerHandshake()
    server.receive_data(b"\x03" + c1)
    out = server.data_to_send()
    assert not server.digest
    assert server.peer_version == 0x0A000C02
    assert out[5:9] == b"\x00\x00\x00\x00"  # simple S1
    assert out[1 + PACKET_SIZE :] == c1  # S2 echoes C1

    # A valid digest that was then tampered with also falls back.
    tampered = bytearray(make_digest_c1(0, rng))
    at = digest_at(bytes(tampered), 0)
    tampered[at] ^= 1
    server = ServerHandshake()
    server.receive_data(b"\x03" + bytes(tampered))
    assert not server.digest
    assert server.data_to_send()[1 + PACKET_SIZE :] == bytes(tampered)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3300), sizes_strategy)
def test_server_arbitrary_bytes(data: bytes, sizes: list[int]) -> None:
    server = ServerHandshake()
    try:
        rest = feed(server, data, sizes)
    except HandshakeError:
        assert data[0] != 3
        return
    assert not data or data[0] == 3
    if len(data) >= 1 + 2 * PACKET_SIZE:
        assert rest == data[1 + 2 * PACKET_SIZE :]
    else:
        assert rest is None and not server.complete
    if len(data) > PACKET_SIZE:
        assert len(server.data_to_send()) == 1 + 2 * PACKET_SIZE


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3300), sizes_strategy, st.booleans())
def test_client_arbitrary_bytes(data: bytes, sizes: list[int], digest: bool) -> None:
    client = ClientHandshake(digest=digest)
    client.initiate()
    try:
        feed(client, data, sizes)
    except HandshakeError:
        pass


def test_client_rejects_bad_s0_and_forged_digests() -> None:
    client = ClientHandshake()
    client.initiate()
    with pytest.raises(HandshakeError, match="S0"):
        client.receive_data(b"\x06")

    # S1 claims a version (so a digest) but carries none.
    client = ClientHandshake(digest=True)
    client.initiate()
    s1 = struct.pack(">II", 0, 0x05000301) + random.Random(2).randbytes(PACKET_SIZE - 8)
    with pytest.raises(HandshakeError, match="S1"):
        client.receive_data(b"\x03" + s1)

    # A genuine digest S1 from our server, then a corrupted S2.
    server = ServerHandshake()
    client = ClientHandshake(digest=True)
    server.receive_data(client.initiate())
    answer = bytearray(server.data_to_send())
    answer[-1] ^= 0xFF
    with pytest.raises(HandshakeError, match="S2"):
        client.receive_data(bytes(answer))
    assert not client.complete


def test_misuse_is_local() -> None:
    client = ClientHandshake()
    with pytest.raises(LocalProtocolError):
        client.receive_data(b"\x03")
    client.initiate()
    with pytest.raises(LocalProtocolError):
        client.initiate()
    with pytest.raises(LocalProtocolError):
        ServerHandshake(epoch=-1)
    with pytest.raises(LocalProtocolError):
        ClientHandshake(epoch=2**32)
    with pytest.raises(LocalProtocolError):
        ClientHandshake(random_bytes=lambda n: b"short").initiate()
    server, client = run_handshake(False, [4096], b"", b"")
    with pytest.raises(LocalProtocolError):
        server.receive_data(b"x")
    with pytest.raises(LocalProtocolError):
        client.receive_data(b"x")


# --------------------------------------------------------------------------------------------
# Real ffmpeg


async def receive_exactly(stream: trio.SocketStream, buffer: bytearray, size: int) -> None:
    """Grow ``buffer`` to ``size`` bytes from ``stream``; fail on EOF."""
    while len(buffer) < size:
        data = await stream.receive_some(65536)
        assert data, f"peer closed after {len(buffer)} of {size} bytes"
        buffer += data


async def read_first_message(stream: trio.SocketStream, buffer: bytearray) -> tuple[int, bytes]:
    """Read the first RTMP message, which must open chunk stream 3 with a type-0 header.

    Returns ``(message type, body)``; assumes the default 128-byte chunk size.
    """
    await receive_exactly(stream, buffer, 12)
    assert buffer[0] == 0x03, f"basic header {buffer[0]:#04x}: want fmt 0 on chunk stream 3"
    length = int.from_bytes(buffer[4:7], "big")
    message_type = buffer[7]
    assert int.from_bytes(buffer[8:12], "little") == 0  # message stream 0
    body = bytearray()
    pos = 12
    while len(body) < length:
        take = min(128, length - len(body))
        await receive_exactly(stream, buffer, pos + take)
        body += buffer[pos : pos + take]
        pos += take
        if len(body) < length:
            await receive_exactly(stream, buffer, pos + 1)
            assert buffer[pos] == 0xC3  # fmt 3 continuation on chunk stream 3
            pos += 1
    return message_type, bytes(body)


async def ffmpeg_handshake(args: list[str], log: Path) -> tuple[ServerHandshake, bytes, bytes, bytes]:
    """Run ffmpeg against a one-connection server driving ServerHandshake.

    Returns the handshake, what we sent (S0+S1+S2), the raw bytes received up to C2, and the
    body of ffmpeg's first message, which is asserted to be an AMF0 command on chunk stream 3.
    """
    ffmpeg = require_tool("ffmpeg")
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    argv = [ffmpeg, "-nostdin", "-loglevel", "error"] + [arg.replace("PORT", str(port)) for arg in args]
    with log.open("wb") as err:
        process = await trio.lowlevel.open_process(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err
        )
    try:
        with trio.fail_after(30):
            stream = await listeners[0].accept()
            async with stream:
                server = ServerHandshake()
                received = bytearray()
                sent = bytearray()
                while not server.complete:
                    data = await stream.receive_some(65536)
                    assert data, f"ffmpeg closed during the handshake: {log.read_text()}"
                    received += data
                    server.receive_data(data)
                    out = server.data_to_send()
                    if out:
                        sent += out
                        await stream.send_all(out)
                chunks = bytearray(server.leftover())
                handshake_bytes = bytes(received[: len(received) - len(chunks)])
                message_type, body = await read_first_message(stream, chunks)
                assert message_type == 20, f"message type {message_type}: want 20 (AMF0 command)"
    finally:
        process.kill()
        await process.wait()
        for listener in listeners:
            await listener.aclose()
    return server, bytes(sent), handshake_bytes, body


@pytest.mark.interop
async def test_ffmpeg_publisher_digest_handshake(tmp_path: Path) -> None:
    """ffmpeg's native client publishes with a digest C1; after C2 comes its connect command."""
    server, _, received, body = await ffmpeg_handshake(
        [
            "-re", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=5", "-t", "2",
            "-c:v", "libx264", "-f", "flv", "rtmp://127.0.0.1:PORT/live/x",
        ],
        tmp_path / "ffmpeg.log",
    )  # fmt: skip
    assert server.digest is True
    assert server.peer_version != 0
    assert len(received) == 1 + 2 * PACKET_SIZE
    assert carried_digest(received[1 : 1 + PACKET_SIZE], PLAYER_TEXT) is not None
    values = amf0.decode(body)
    assert values[0] == "connect"
    assert values[1] == 1.0
    command = values[2]
    assert isinstance(command, dict)
    assert command["app"] == "live"
    assert command["tcUrl"].startswith("rtmp://127.0.0.1:")


@pytest.mark.interop
async def test_ffmpeg_player_accepts_our_digest_answer(tmp_path: Path) -> None:
    """ffmpeg as a player validates our S1 and S2 digests before it sends anything more."""
    server, sent, received, body = await ffmpeg_handshake(
        ["-rw_timeout", "20000000", "-i", "rtmp://127.0.0.1:PORT/live/x", "-f", "null", "-"],
        tmp_path / "ffmpeg.log",
    )
    assert server.digest is True
    assert amf0.decode(body)[0] == "connect"
    # ffmpeg answered with a digest C2 keyed by our S1 digest: check it independently.
    s1 = sent[1 : 1 + PACKET_SIZE]
    s1_digest = carried_digest(s1, SERVER_TEXT)
    assert s1_digest is not None
    c2 = received[1 + PACKET_SIZE :]
    assert response_ok(c2, s1_digest, PLAYER_KEY)


@pytest.mark.interop
@pytest.mark.parametrize("digest", [True, False])
async def test_client_against_ffmpeg_server(tmp_path: Path, digest: bool) -> None:
    """ffmpeg's RTMP server checks that C2 echoes its S1, then answers our connect."""
    ffmpeg = require_tool("ffmpeg")
    port = free_port()
    log = tmp_path / "ffmpeg.log"
    with log.open("wb") as err:
        process = await trio.lowlevel.open_process(
            [
                ffmpeg, "-nostdin", "-loglevel", "error", "-listen", "1", "-timeout", "20",
                "-f", "flv", "-i", f"rtmp://127.0.0.1:{port}/live/x", "-f", "null", "-",
            ],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
    try:
        with trio.fail_after(30):
            while True:
                try:
                    stream = await trio.open_tcp_stream("127.0.0.1", port)
                    break
                except OSError:
                    assert process.poll() is None, log.read_text()
                    await trio.sleep(0.05)
            async with stream:
                client = ClientHandshake(digest=digest)
                await stream.send_all(client.initiate())
                while not client.complete:
                    data = await stream.receive_some(65536)
                    assert data, f"ffmpeg closed during the handshake: {log.read_text()}"
                    client.receive_data(data)
                    out = client.data_to_send()
                    if out:
                        await stream.send_all(out)
                assert client.digest is False  # ffmpeg's server only speaks the simple scheme
                body = amf0.encode("connect", 1, {"app": "live", "tcUrl": f"rtmp://127.0.0.1:{port}/live"})
                assert len(body) <= 128
                header = b"\x03" + bytes(3) + len(body).to_bytes(3, "big") + b"\x14" + bytes(4)
                await stream.send_all(header + body)
                # ffmpeg answers connect only if it accepted our C2 (it closes otherwise).
                reply = bytearray(client.leftover())
                await receive_exactly(stream, reply, 1)
                assert reply[0] & 0x3F == 2, f"first reply {bytes(reply[:16]).hex()}"
    finally:
        process.kill()
        await process.wait()
