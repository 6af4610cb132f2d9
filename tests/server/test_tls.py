"""RTMPS and HTTPS in one process: the workers behind ``trio.SSLStream``, with a certificate
the test makes (trustme).

Checked: the project's RTMP client publishes the demo clip over ``rtmps://`` and a second one
plays it back whole, byte for byte the same frames (a write that bypassed TLS on the socket's
descriptor, the RTMP fast path, would garble the stream: the TLS connection must take the
stream's ``send_all``); the sessions say ``rtmps``; HTTPS serves the API and HTTP-FLV with a
client that verifies the certificate; a client that connects and never finishes the TLS
handshake is closed by the handshake deadline; a plain-text client on the TLS port is refused
without disturbing the others; SIGHUP's reload puts a renewed certificate in place for new RTMPS
and HTTPS connections (open ones go on), and a certificate file that does not load keeps the
running one, with an error line.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

import httpx
import pytest
import trio
import trustme

from arcly_trio import AppSpec, Engine
from arcly_trio.clients import open_rtmp_player, open_rtmp_publisher
from arcly_trio.core.frame import Frame
from arcly_trio.server.build import build_runtime
from arcly_trio.server.cli import build_parser, reload, resolve_args
from arcly_trio.workers.http import HttpServer
from arcly_trio.workers.rtmp import RtmpServer


@pytest.fixture(scope="module")
def authority() -> trustme.CA:
    return trustme.CA()


def server_context(authority: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


def client_context(authority: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    authority.configure_trust(context)
    return context


async def test_rtmps_publish_and_play_and_https(authority: trustme.CA, demo_frames: list[Frame]) -> None:
    rtmps = RtmpServer("127.0.0.1", 0, ssl_context=server_context(authority), handshake_timeout=1)
    https = HttpServer("127.0.0.1", 0, ssl_context=server_context(authority))
    engine = Engine.builder().application(AppSpec("live")).protocol(rtmps).protocol(https).build()
    frames = demo_frames[:150]
    async with engine:
        assert (rtmps.name, https.name) == ("rtmps", "https")
        url = f"rtmps://127.0.0.1:{rtmps.port}/live/secure"
        async with (
            open_rtmp_publisher(url, ssl_context=client_context(authority)) as publisher,
            httpx.AsyncClient(verify=client_context(authority)) as client,
        ):
            await publisher.send_frames(frames[:2])  # metadata and configs first
            with trio.fail_after(10):
                while not engine.application("live").has_stream("secure"):
                    await trio.sleep(0.01)
                async with open_rtmp_player(url, ssl_context=client_context(authority)) as player:
                    await publisher.send_frames(frames[2:])
                    received: list[Frame] = []
                    while len([f for f in received if not f.config and f.kind.value != "data"]) < 100:
                        received += await player.next_batch()
                    sessions = (await client.get(f"https://127.0.0.1:{https.port}/api/sessions")).json()
                    assert sorted(s["protocol"] for s in sessions["sessions"]) == ["rtmps", "rtmps"]
            media = [(f.kind, f.dts, bytes(f.payload)) for f in received if not f.config and f.kind.value != "data"]
            sent = [(f.kind, f.dts, bytes(f.payload)) for f in frames if not f.config and f.kind.value != "data"]
            start = sent.index(media[0])
            assert media == sent[start : start + len(media)]
            health = (await client.get(f"https://127.0.0.1:{https.port}/api/health")).json()
            checks = {check["name"]: check["ok"] for check in health["checks"]}
            assert checks["listening:rtmps"] and checks["listening:https"]
            async with client.stream("GET", f"https://127.0.0.1:{https.port}/live/secure.flv") as answer:
                assert answer.status_code == 200
                head = b""
                async for chunk in answer.aiter_bytes():
                    head += chunk
                    if len(head) > 13:
                        break
                assert head.startswith(b"FLV\x01")


async def test_stalled_and_plain_text_clients_on_the_tls_port(authority: trustme.CA) -> None:
    rtmps = RtmpServer("127.0.0.1", 0, ssl_context=server_context(authority), handshake_timeout=0.5)
    engine = Engine.builder().application("live").protocol(rtmps).build()
    async with engine:
        stalled = await trio.open_tcp_stream("127.0.0.1", rtmps.port)
        plain = await trio.open_tcp_stream("127.0.0.1", rtmps.port)
        await plain.send_all(b"\x03" + b"\x00" * 1536)  # an RTMP C0+C1 instead of a TLS hello
        with trio.fail_after(5):
            while rtmps.open_connections:  # both closed: one refused, one by the deadline
                await trio.sleep(0.05)
            assert await stalled.receive_some(100) == b""
        await stalled.aclose()
        await plain.aclose()


def write_cert(authority: trustme.CA, name: str, cert: Path, key: Path) -> None:
    """A certificate for 127.0.0.1 that also names ``name`` (to tell them apart), and its key."""
    issued = authority.issue_cert("127.0.0.1", name)
    cert.write_bytes(b"".join(pem.bytes() for pem in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(key))


async def tls_names(port: int, authority: trustme.CA) -> tuple[trio.SSLStream[trio.SocketStream], set[str]]:
    """A new TLS connection to ``port`` and the DNS names of the certificate it was shown."""
    stream = await trio.open_ssl_over_tcp_stream(
        "127.0.0.1", port, ssl_context=client_context(authority), https_compatible=True
    )
    await stream.do_handshake()
    peer = stream.getpeercert()
    assert peer is not None
    return stream, {value for kind, value in peer["subjectAltName"] if kind == "DNS"}


async def get_ok(stream: trio.SSLStream[trio.SocketStream]) -> bool:
    """One keep-alive request on ``stream``: whether it got ``200``."""
    await stream.send_all(b"GET /api/server HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += await stream.receive_some(65536)
    return answer.startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize("with_config", [True, False], ids=["config file", "command line only"])
async def test_sighup_reloads_the_certificate_for_new_connections_and_keeps_it_if_the_new_one_is_bad(
    authority: trustme.CA, tmp_path: Path, caplog: pytest.LogCaptureFixture, with_config: bool
) -> None:
    """Mutant killed: the TLS context read once, when the listeners start."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    write_cert(authority, "first.example", cert, key)
    options = [
        "--host",
        "127.0.0.1",
        "--rtmp-port",
        "0",
        "--http-port",
        "-1",
        "--rtmps-port",
        "0",
        "--https-port",
        "0",
        "--tls-cert",
        str(cert),
        "--tls-key",
        str(key),
    ]
    if with_config:
        config = tmp_path / "arcly.toml"
        config.write_text('app = ["live"]\n')
        options += ["--config", str(config)]
    argv = ["serve", "--webrtc-port", "0", "--rtsp-port", "0", *options]
    runtime = build_runtime(resolve_args(build_parser(), argv))
    assert runtime.rtmps is not None and runtime.https is not None
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(runtime.engine.serve)
            https, rtmps = runtime.https.port, runtime.rtmps.port
            old, names = await tls_names(https, authority)
            assert "first.example" in names and await get_ok(old)
            write_cert(authority, "second.example", cert, key)  # renewed
            assert await reload(runtime, argv)
            for port in (https, rtmps):
                new, names = await tls_names(port, authority)
                assert "second.example" in names and "first.example" not in names, port
                await new.aclose()
            assert await get_ok(old)  # the connection made before goes on
            cert.write_text("not a certificate\n")
            caplog.set_level(logging.ERROR, "arcly_trio.server")
            await reload(runtime, argv)
            assert any(
                "TLS certificate reload failed; the running certificate is kept" in r.getMessage()
                and r.levelno == logging.ERROR
                for r in caplog.records
            )
            for port in (https, rtmps):
                new, names = await tls_names(port, authority)
                assert "second.example" in names, port
                await new.aclose()
            await old.aclose()
            nursery.cancel_scope.cancel()
