"""RTSPS: the RTSP worker over TLS (``ssl_context``; ``--rtsps-port``), TCP interleaved only.

A raw RTSP client over TLS (trustme's test CA) checks the session and that UDP is refused;
ffmpeg 5.1 plays ``rtsps://`` (it does not verify the certificate by default). Loopback, port
0, every wait under ``fail_after``.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trustme

from arcly_trio.core.frame import Frame
from arcly_trio.kernel.engine import Engine
from arcly_trio.relay.sources import StreamSources
from arcly_trio.server.build import build_runtime, reload_tls
from arcly_trio.server.cli import build_parser, resolve_args
from arcly_trio.server.config import ConfigError
from arcly_trio.workers.rtmp import RtmpServer
from arcly_trio.workers.rtsp.server import RtspServer
from tests._ffmpeg import publish_args, run_tool
from tests._net import HOST
from tests._serving import healthy_stream, wait_publishing
from tests._tools import require_tool
from tests.workers.test_rtsp_server import Client


@pytest.fixture(scope="module")
def authority() -> trustme.CA:
    return trustme.CA()


def _server_context(authority: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert(HOST, "localhost").configure_cert(context)
    return context


@asynccontextmanager
async def _served(authority: trustme.CA) -> AsyncIterator[tuple[Engine, RtmpServer, RtspServer]]:
    rtmp = RtmpServer(HOST, 0)
    rtsps = RtspServer(HOST, 0, udp_ports=(47000, 47999), ssl_context=_server_context(authority))
    async with Engine.builder().application("live").protocol(rtmp).protocol(rtsps).build() as engine:
        yield engine, rtmp, rtsps


async def test_a_player_plays_over_tls_and_udp_transport_is_refused(
    authority: trustme.CA, demo_frames: list[Frame]
) -> None:
    with trio.fail_after(10):
        async with _served(authority) as (engine, _rtmp, server), trio.open_nursery() as nursery:
            assert server.name == "rtsps" and server.udp is None
            await healthy_stream(engine, demo_frames, nursery)
            trust = ssl.create_default_context()
            authority.configure_trust(trust)
            assert server.port is not None
            tcp = await trio.open_tcp_stream(HOST, server.port)
            client = Client(trio.SSLStream(tcp, trust, server_hostname=HOST))  # type: ignore[arg-type]
            url = f"rtsps://{HOST}:{server.port}/live/ok"
            described = await client.request("DESCRIBE", url, [("Accept", "application/sdp")])
            assert described.status == 200
            base = described.header("Content-Base") or ""
            udp = await client.request(
                "SETUP", base + "trackID=0", [("Transport", "RTP/AVP;unicast;client_port=50000-50001")]
            )
            assert udp.status == 461
            setup = await client.request(
                "SETUP", base + "trackID=0", [("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1")]
            )
            assert setup.status == 200
            session = (setup.header("Session") or "").split(";")[0]
            assert (await client.request("PLAY", base, [("Session", session)])).status == 200
            await client.until_packets(5)
            assert {packet.channel for packet in client.packets} <= {0, 1}
            await client.stream.aclose()
            nursery.cancel_scope.cancel()


@pytest.mark.interop
async def test_ffmpeg_plays_rtsps(authority: trustme.CA) -> None:
    with trio.fail_after(30):
        async with _served(authority) as (engine, rtmp, rtsps):
            async with run_tool(publish_args(f"rtmp://{HOST}:{rtmp.port}/live/a")):
                await wait_publishing(engine, "live/a")
                args = [require_tool("ffmpeg"), "-hide_banner", "-nostdin", "-loglevel", "error"]
                args += ["-i", f"rtsps://{HOST}:{rtsps.port}/live/a", "-t", "2", "-f", "framemd5", "-"]
                async with run_tool(args) as tool:
                    await tool.wait()
                    stderr = tool.stderr()
    video = sum(line.startswith("0,") for line in tool.lines)
    audio = sum(line.startswith("1,") for line in tool.lines)
    assert video >= 55 and audio >= 80, stderr  # 2 s of 30 fps and 44.1 kHz AAC


def test_serve_builds_rtsps_and_the_sources_and_reloads_the_certificate(authority: trustme.CA, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    leaf = authority.issue_cert("localhost")
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    argv = ["serve", "--host", HOST, "--rtmp-port", "0", "--http-port", "-1", "--webrtc-port", "0"]
    argv += ["--srt-port", "0", "--rtsp-port", "0", "--rtsps-port", "0", "--tls-cert", str(cert), "--tls-key", str(key)]
    argv += ["--source", "live/door=rtsp://u:p@127.0.0.1:1/cam?always=1"]
    runtime = build_runtime(resolve_args(build_parser(), argv))
    assert runtime.rtsps is not None and runtime.rtsps.name == "rtsps" and runtime.rtsps.udp is None
    before = runtime.rtsps.ssl_context
    assert reload_tls(runtime, str(cert), str(key)) is not None
    assert runtime.rtsps.ssl_context is not before  # a renewed certificate reaches RTSPS too
    sources = [s for s in runtime.engine.sources if isinstance(s, StreamSources)]
    assert [(str(s.key), s.always) for one in sources for s in one.sources.values()] == [("live/door", True)]
    with pytest.raises(ConfigError, match="--rtsps-port 0: needs --tls-cert and --tls-key"):
        resolve_args(build_parser(), ["serve", "--rtsps-port", "0"])
