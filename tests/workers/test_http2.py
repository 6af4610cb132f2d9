"""HTTP/2 on the HTTPS port (ALPN ``h2``): the routes over h2 with httpx's HTTP/2 client, the
ALPN fallback to HTTP/1.1, and the known HTTP/2 attacks with hand-driven ``h2`` client frames
(rapid reset, CONTINUATION flood, HPACK bomb, SETTINGS and PING floods, too many streams, a
zero window, a preface that never comes): each bounded, answered with GOAWAY or a reset, and the
server still serves a new client afterwards."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
import httpx
import pytest
import trio
import trustme
from h2.errors import ErrorCodes

from arcly_trio import AppSpec
from arcly_trio.core.frame import Frame
from arcly_trio.workers.http import HttpServer
from arcly_trio.workers.http.h2_connection import MAX_STREAMS, RESET_BURST
from tests._serving import Served, serving


@pytest.fixture(scope="module")
def authority() -> trustme.CA:
    return trustme.CA()


def server_context(authority: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


def client_context(authority: trustme.CA, alpn: list[str]) -> ssl.SSLContext:
    context = ssl.create_default_context()
    authority.configure_trust(context)
    context.set_alpn_protocols(alpn)
    return context


@asynccontextmanager
async def https(authority: trustme.CA, **options: Any) -> AsyncIterator[Served]:
    async with serving(AppSpec("live", hls=True), hls=True, ssl_context=server_context(authority), **options) as s:
        yield s


class RawClient:
    """An HTTP/2 client driven frame by frame (the ``h2`` library as client, over TLS)."""

    def __init__(self, stream: trio.SSLStream[trio.SocketStream]) -> None:
        self.stream = stream
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.events: list[h2.events.Event] = []
        self.closed = False

    async def flush(self) -> None:
        await self.stream.send_all(self.conn.data_to_send())

    async def send_raw(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def pump(self) -> list[h2.events.Event]:
        """Read once; the events (also kept in :attr:`events`); ``closed`` at end of file."""
        try:
            data = await self.stream.receive_some(65536)
        except trio.BrokenResourceError:
            data = b""
        if not data:
            self.closed = True
            return []
        events = self.conn.receive_data(data)
        self.events += events
        await self.flush()
        return events

    async def until(self, kind: type, count: int = 1) -> list[Any]:
        while sum(isinstance(e, kind) for e in self.events) < count and not self.closed:
            await self.pump()
        return [e for e in self.events if isinstance(e, kind)]

    async def until_closed(self) -> None:
        while not self.closed:
            await self.pump()

    def request(self, path: str, *, end: bool = True, method: str = "GET") -> int:
        stream_id = self.conn.get_next_available_stream_id()
        headers = [(":method", method), (":path", path), (":scheme", "https"), (":authority", "localhost")]
        self.conn.send_headers(stream_id, [(n.encode(), v.encode()) for n, v in headers], end_stream=end)
        return stream_id


@asynccontextmanager
async def raw_client(port: int, authority: trustme.CA) -> AsyncIterator[RawClient]:
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    stream = trio.SSLStream(tcp, client_context(authority, ["h2"]), server_hostname="localhost")
    async with stream:
        await stream.do_handshake()
        assert stream.selected_alpn_protocol() == "h2"
        client = RawClient(stream)
        client.conn.initiate_connection()
        await client.flush()
        yield client


def goaway_code(client: RawClient) -> ErrorCodes | int | None:
    codes = [e.error_code for e in client.events if isinstance(e, h2.events.ConnectionTerminated)]
    return codes[-1] if codes else None


async def still_serves(port: int, authority: trustme.CA) -> None:
    async with httpx.AsyncClient(http2=True, verify=client_context(authority, ["h2", "http/1.1"])) as client:
        answer = await client.get(f"https://localhost:{port}/api/health")
        assert answer.status_code == 200 and answer.http_version == "HTTP/2"


# ---------------------------------------------------------------------------- the routes


async def test_routes_over_h2_and_alpn_fallback(authority: trustme.CA, demo_frames: list[Frame]) -> None:
    async with https(authority) as (engine, _, server):
        base = f"https://localhost:{server.port}"
        with trio.fail_after(30):
            async with httpx.AsyncClient(http2=True, verify=client_context(authority, ["h2", "http/1.1"])) as client:
                answer = await client.get(f"{base}/api/health")
                assert answer.http_version == "HTTP/2" and answer.status_code == 200
                assert answer.json()["status"] == "ok"
                assert "access-control-allow-origin" not in answer.headers  # the API's CORS policy
                assert "connection" not in answer.headers
                missing = await client.get(f"{base}/live/nothing.m3u8")
                assert missing.status_code == 404 and missing.http_version == "HTTP/2"
                wrong = await client.post(f"{base}/api/health", content=b"x" * 100_000)
                assert wrong.status_code == 405
                page = await client.get(f"{base}/")
                assert page.status_code == 200 and b"<html" in page.content.lower()
                head = await client.head(f"{base}/api/health")
                assert head.status_code == 200 and head.content == b""
                preflight = await client.options(f"{base}/live/a.flv", headers={"origin": "https://x.example"})
                assert preflight.status_code == 204
                async with engine.publish("live/demo", protocol="rtmp") as publisher:
                    for frame in demo_frames[:300]:
                        await publisher.send(frame)
                    playlist = await client.get(f"{base}/live/demo/index.m3u8")
                    assert playlist.status_code == 200 and playlist.http_version == "HTTP/2"
                    media = playlist
                    while media.text.startswith("#EXTM3U"):  # the multivariant playlist, a media one, a segment
                        uri = next(line for line in media.text.splitlines() if line and line[0] != "#")
                        media = await client.get(media.url.join(uri))
                    assert media.status_code == 200 and media.content[:1] == b"G"  # MPEG-TS sync byte
                    assert server.connections == 0
                    async with client.stream("GET", f"{base}/live/demo.flv") as live:
                        assert live.http_version == "HTTP/2" and live.status_code == 200
                        assert server.connections == 1  # a stream in service counts as a request
                        body = b""
                        async for chunk in live.aiter_bytes():
                            body += chunk
                            if len(body) > 13:
                                break
                        for frame in demo_frames[300:400]:
                            await publisher.send(frame)
                        assert body.startswith(b"FLV\x01")  # plain FLV: no chunked coding in h2
            async with httpx.AsyncClient(http2=False, verify=client_context(authority, ["http/1.1"])) as client:
                answer = await client.get(f"{base}/api/health")
                assert answer.http_version == "HTTP/1.1" and answer.status_code == 200
            while server.connections:
                await trio.sleep(0.01)


async def test_no_http2_offers_only_http11(authority: trustme.CA) -> None:
    async with https(authority, http2=False) as (_, _, server):
        with trio.fail_after(10):
            async with httpx.AsyncClient(http2=True, verify=client_context(authority, ["h2", "http/1.1"])) as client:
                answer = await client.get(f"https://localhost:{server.port}/api/health")
                assert answer.http_version == "HTTP/1.1"
