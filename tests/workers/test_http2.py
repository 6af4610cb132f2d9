"""HTTP/2 on the HTTPS port (ALPN ``h2``): the routes over h2 with httpx's HTTP/2 client, the
ALPN fallback to HTTP/1.1, and the known HTTP/2 attacks with hand-driven ``h2`` client frames
(rapid reset, CONTINUATION flood, HPACK bomb, SETTINGS and PING floods, too many streams, a
zero window, a preface that never comes): each bounded, answered with GOAWAY or a reset, and the
server still serves a new client afterwards."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
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
from hypothesis import given, settings
from hypothesis import strategies as st

from arcly_trio import AppSpec
from arcly_trio.core.errors import MessageTooLarge
from arcly_trio.core.frame import Frame
from arcly_trio.protocols.http.h2_guard import HeaderBlockGuard, RateBudget
from arcly_trio.workers.http import HttpServer
from arcly_trio.workers.http.h2_connection import FRAME_BURST, MAX_STREAMS, RESET_BURST
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


def refused(client: RawClient, caplog: pytest.LogCaptureFixture, code: ErrorCodes, text: str) -> bool:
    """The server ended the connection for ``text`` (its log line), with a GOAWAY of ``code``
    if the client read it before the close (a close with the client's bytes unread resets)."""
    return client.closed and goaway_code(client) in (code, None) and text in caplog.text


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


# ---------------------------------------------------------------------------- the attacks


def frame(kind: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream_id.to_bytes(4, "big") + payload


async def settle(server: HttpServer) -> None:
    """Wait until the server holds no connection and no request (memory back to baseline)."""
    while server.connections or server.open_connections:
        await trio.sleep(0.01)


async def test_rapid_reset_is_bounded_and_ends_with_enhance_your_calm(
    authority: trustme.CA, caplog: pytest.LogCaptureFixture
) -> None:
    async with https(authority) as (_, _, server):
        with trio.fail_after(20):
            async with raw_client(server.port, authority) as client:
                for _ in range(RESET_BURST + 50):
                    stream_id = client.request("/api/health")
                    client.conn.reset_stream(stream_id, ErrorCodes.CANCEL)
                try:
                    await client.flush()
                except trio.BrokenResourceError:
                    pass
                await client.until_closed()
                assert refused(client, caplog, ErrorCodes.ENHANCE_YOUR_CALM, "too many reset streams")
            await settle(server)
            await still_serves(server.port, authority)


async def test_continuation_flood_is_cut_at_max_head_size(
    authority: trustme.CA, caplog: pytest.LogCaptureFixture
) -> None:
    async with https(authority, max_head_size=4096) as (_, _, server):
        with trio.fail_after(20):
            async with raw_client(server.port, authority) as client:
                block = client.conn.encoder.encode([(b":method", b"GET"), (b":path", b"/"), (b":scheme", b"https")])
                sent = 0
                try:
                    await client.send_raw(frame(0x1, 0, 1, block))  # HEADERS without END_HEADERS
                    for _ in range(1000):  # 1 MB of CONTINUATION if nothing stopped it
                        await client.send_raw(frame(0x9, 0, 1, b"\x00" * 1000))
                        sent += 1
                except trio.BrokenResourceError:
                    pass
                await client.until_closed()
                assert refused(client, caplog, ErrorCodes.ENHANCE_YOUR_CALM, "header block")
                assert sent < 1000
            await settle(server)
            await still_serves(server.port, authority)


async def test_hpack_bomb_is_refused_by_the_header_list_cap(
    authority: trustme.CA, caplog: pytest.LogCaptureFixture
) -> None:
    async with https(authority, max_head_size=8192) as (_, _, server):
        with trio.fail_after(20):
            async with raw_client(server.port, authority) as client:
                big = (b"x-bomb", b"b" * 3000)
                request = [
                    (b":method", b"GET"),
                    (b":path", b"/"),
                    (b":scheme", b"https"),
                    (b":authority", b"localhost"),
                ]
                headers = [*request, *[big] * 10]
                block = client.conn.encoder.encode(headers)  # 3 kB once, then 1-byte references
                assert len(block) < 4096  # small on the wire: 30 kB decoded (h2's own cap: 64 KiB)
                await client.send_raw(frame(0x1, 0x4 | 0x1, 1, block))
                await client.until_closed()
                assert refused(client, caplog, ErrorCodes.ENHANCE_YOUR_CALM, "header")
                assert not any(isinstance(e, h2.events.ResponseReceived) for e in client.events)
            await settle(server)


@pytest.mark.parametrize("flood", ["settings", "ping"])
async def test_settings_and_ping_floods_end_with_goaway(
    authority: trustme.CA, caplog: pytest.LogCaptureFixture, flood: str
) -> None:
    async with https(authority) as (_, _, server):
        with trio.fail_after(20):
            async with raw_client(server.port, authority) as client:
                one = frame(0x4, 0, 0, b"") if flood == "settings" else frame(0x6, 0, 0, b"12345678")
                try:
                    await client.send_raw(one * 500)
                except trio.BrokenResourceError:
                    pass
                await client.until_closed()
                assert refused(client, caplog, ErrorCodes.ENHANCE_YOUR_CALM, f"too many {flood.upper()} frames")
                acks = [e for e in client.events if isinstance(e, h2.events.PingAckReceived)]
                assert not acks  # refused before h2 parsed (and acknowledged) any of them
            await settle(server)
            await still_serves(server.port, authority)


async def test_streams_past_the_advertised_limit_end_the_connection(
    authority: trustme.CA, caplog: pytest.LogCaptureFixture, demo_frames: list[Frame]
) -> None:
    async with https(authority) as (engine, _, server):
        with trio.fail_after(30):
            async with engine.publish("live/demo", protocol="rtmp") as publisher:
                for frame_ in demo_frames[:50]:
                    await publisher.send(frame_)
                async with raw_client(server.port, authority) as client:
                    await client.until(h2.events.RemoteSettingsChanged)
                    assert client.conn.remote_settings.max_concurrent_streams == MAX_STREAMS
                    for _ in range(MAX_STREAMS):  # live bodies: each stream stays open
                        client.request("/live/demo.flv")
                    await client.flush()
                    answers = await client.until(h2.events.ResponseReceived, MAX_STREAMS)
                    assert len(answers) == MAX_STREAMS and server.connections == MAX_STREAMS
                    client.conn.local_settings = h2.settings.Settings(client=True)  # h2 would refuse to send
                    client.conn.remote_settings.update({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1000})
                    client.conn.remote_settings.acknowledge()
                    client.request("/live/demo.flv")
                    await client.flush()
                    await client.until_closed()
                    assert refused(client, caplog, ErrorCodes.PROTOCOL_ERROR, "Max inbound streams")
                await settle(server)
            await still_serves(server.port, authority)


async def test_a_closed_window_drops_the_stream_after_write_timeout(authority: trustme.CA) -> None:
    async with https(authority, write_timeout=0.5) as (_, _, server):
        with trio.fail_after(20):
            async with raw_client(server.port, authority) as client:
                client.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
                stream_id = client.request("/")  # the status page: several kB
                await client.flush()
                resets = await client.until(h2.events.StreamReset)
                assert resets and resets[0].stream_id == stream_id
                assert resets[0].error_code == ErrorCodes.CANCEL
                assert not any(isinstance(e, h2.events.DataReceived) and e.data for e in client.events)
                assert server.connections == 0
            await settle(server)


async def test_a_preface_that_never_comes_is_closed_after_header_timeout(authority: trustme.CA) -> None:
    async with https(authority, header_timeout=0.5) as (_, _, server):
        with trio.fail_after(20):
            tcp = await trio.open_tcp_stream("127.0.0.1", server.port)
            stream = trio.SSLStream(tcp, client_context(authority, ["h2"]), server_hostname="localhost")
            async with stream:
                await stream.do_handshake()
                assert stream.selected_alpn_protocol() == "h2"
                received = b""
                while True:  # the server's SETTINGS, its GOAWAY, then the end
                    try:
                        data = await stream.receive_some(65536)
                    except trio.BrokenResourceError:
                        break
                    if not data:
                        break
                    received += data
                assert received  # the server spoke first (SETTINGS), then closed
            await settle(server)


async def test_a_flood_of_window_updates_ends_with_goaway(
    authority: trustme.CA, caplog: pytest.LogCaptureFixture
) -> None:
    async with https(authority) as (_, _, server):
        with trio.fail_after(20):
            async with raw_client(server.port, authority) as client:
                try:
                    await client.send_raw(frame(0x8, 0, 0, (1).to_bytes(4, "big")) * (3 * FRAME_BURST))
                except trio.BrokenResourceError:
                    pass
                await client.until_closed()
                assert refused(client, caplog, ErrorCodes.ENHANCE_YOUR_CALM, "too many frames")
            await settle(server)


async def test_request_bodies_are_flow_controlled_and_capped(authority: trustme.CA) -> None:
    async with https(authority) as (_, _, server):

        async def echo(request: Any, exchange: Any) -> None:
            body = await exchange.read_body(int(request.query.get("limit", 256 * 1024)))
            await exchange.respond(200, b"%d" % len(body))

        server.router.add("/echo", echo, methods=("POST",))
        base = f"https://localhost:{server.port}"
        with trio.fail_after(20):
            async with httpx.AsyncClient(http2=True, verify=client_context(authority, ["h2"])) as client:
                # 200 kB: more than the 64 KiB windows, so only the handler's reading lets it in
                answer = await client.post(f"{base}/echo", content=b"x" * 200_000)
                assert (answer.http_version, answer.status_code, answer.text) == ("HTTP/2", 200, "200000")
                answer = await client.post(f"{base}/echo?limit=1000", content=b"x" * 50_000)
                assert answer.status_code == 413
                answer = await client.post(f"{base}/nowhere", content=b"x" * 100_000)  # nobody reads it
                assert answer.status_code == 404
                answer = await client.get(f"{base}/api/health")  # the same connection goes on
                assert answer.status_code == 200
        await settle(server)


async def test_a_live_viewer_whose_window_stays_closed_is_a_slow_viewer(
    authority: trustme.CA, demo_frames: list[Frame]
) -> None:
    async with https(authority, write_timeout=1) as (engine, _, server):
        with trio.fail_after(30):
            async with engine.publish("live/demo", protocol="rtmp") as publisher:
                for frame_ in demo_frames[:20]:
                    await publisher.send(frame_)
                async with raw_client(server.port, authority) as client:
                    client.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
                    stream_id = client.request("/live/demo.flv")
                    await client.flush()
                    await client.until(h2.events.ResponseReceived)
                    for frame_ in demo_frames[20:]:  # the publisher never waits for the viewer
                        await publisher.send(frame_)
                    await client.until(h2.events.StreamReset)
                    resets = [e for e in client.events if isinstance(e, h2.events.StreamReset)]
                    assert resets and resets[0].stream_id == stream_id
                    assert not any(isinstance(e, h2.events.DataReceived) and e.data for e in client.events)
                    await settle_streams(server)
                    assert not [s for s in engine.stream("live/demo").subscribers if s.protocol == "http-flv"]


async def settle_streams(server: HttpServer) -> None:
    while server.connections:
        await trio.sleep(0.01)


async def test_shutdown_closes_an_idle_http2_connection(authority: trustme.CA) -> None:
    with trio.fail_after(20):
        async with AsyncExitStack() as clients:
            async with https(authority) as (engine, _, server):
                client = await clients.enter_async_context(raw_client(server.port, authority))
                client.request("/api/health")
                await client.flush()
                await client.until(h2.events.StreamEnded)
            # the engine stopped while the client held its connection: closed
            await client.until_closed()


@given(st.binary(max_size=400), st.lists(st.integers(1, 50), max_size=20))
@settings(max_examples=200, deadline=None)
def test_the_header_block_guard_reads_any_bytes_in_any_pieces(data: bytes, cuts: list[int]) -> None:
    whole = HeaderBlockGuard(300)
    pieces = HeaderBlockGuard(300)
    try:
        whole.feed(data)
        failed = None
    except MessageTooLarge as exc:
        failed = exc.size
    at = 0
    try:
        for cut in [*cuts, len(data)]:
            pieces.feed(data[at : at + cut])
            at += cut
        pieces.feed(data[at:])
    except MessageTooLarge as exc:
        assert failed == exc.size
    else:
        assert failed is None
        assert (pieces.frames, pieces.resets, pieces.block) == (whole.frames, whole.resets, whole.block)


def test_the_header_block_guard_counts_across_continuations() -> None:
    guard = HeaderBlockGuard(100)
    guard.feed(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    guard.feed(frame(0x1, 0, 1, b"h" * 60))  # HEADERS, no END_HEADERS
    assert guard.in_block and guard.block == 60
    with pytest.raises(MessageTooLarge):
        guard.feed(frame(0x9, 0, 1, b"c" * 41)[:9])  # the CONTINUATION's frame header is enough
    fresh = HeaderBlockGuard(100, preface=False)
    fresh.feed(frame(0x1, 0x4, 1, b"h" * 100) + frame(0x1, 0x4, 3, b"h" * 100))  # two whole blocks
    assert not fresh.in_block and fresh.frames == 2


def test_the_rate_budget_refills() -> None:
    budget = RateBudget(3, 1.0, now=0)
    assert all(budget.spend(0) for _ in range(3)) and not budget.spend(0)
    assert budget.spend(1.0) and not budget.spend(1.0)


async def test_a_stream_reset_mid_write_leaves_the_connection_whole(authority: trustme.CA) -> None:
    big = b"x" * (16 * 1024 * 1024)
    async with https(authority) as (_, _, server):

        async def huge(request: Any, exchange: Any) -> None:  # a streamed body: the stream stays open
            await exchange.start(200, content_type="application/octet-stream")
            await exchange.send(big)
            await exchange.end()

        server.router.add("/huge", huge)
        with trio.fail_after(30):
            async with raw_client(server.port, authority) as client:
                client.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
                client.conn.increment_flow_control_window(2**31 - 1 - 65535)
                stream_id = client.request("/huge")
                await client.flush()
                while not server.connections:
                    await trio.sleep(0.01)
                await trio.sleep(0.3)  # the server is writing 16 MB the client does not read yet
                client.conn.reset_stream(stream_id, ErrorCodes.CANCEL)  # its handler is cancelled
                await client.flush()
                while server.connections:  # read what was in flight
                    with trio.move_on_after(0.05):
                        await client.pump()
                second = client.request("/api/health")  # the same connection serves on
                await client.flush()
                while not any(isinstance(e, h2.events.StreamEnded) and e.stream_id == second for e in client.events):
                    assert not client.closed, "the connection broke"
                    await client.pump()


async def test_a_handler_that_writes_http11_bytes_gets_its_stream_reset_not_a_broken_connection(
    authority: trustme.CA, caplog: pytest.LogCaptureFixture
) -> None:
    async with https(authority) as (_, _, server):

        async def raw(request: Any, exchange: Any) -> None:  # a method written for h11 only
            exchange.responded = True
            await exchange._send_raw(b"HTTP/1.1 200 OK\r\n\r\n")

        server.router.add("/raw", raw)
        with trio.fail_after(20):
            async with raw_client(server.port, authority) as client:
                stream_id = client.request("/raw")
                await client.flush()
                resets = await client.until(h2.events.StreamReset)
                assert resets[0].stream_id == stream_id
                assert "cannot be written to an HTTP/2 stream" in caplog.text
                await still_serves(server.port, authority)


# ----------------------------------------------------------------------------- h2c


async def test_h2c_with_prior_knowledge_on_the_plain_port_beside_http11() -> None:
    async with serving(http2_cleartext=True) as (_, _, server):
        with trio.fail_after(20):
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            async with stream:
                client = RawClient(stream)  # type: ignore[arg-type]
                client.conn.initiate_connection()
                stream_id = client.request("/api/health")
                await client.flush()
                answers = await client.until(h2.events.ResponseReceived)
                assert answers[0].stream_id == stream_id and dict(answers[0].headers)[b":status"] == b"200"
                await client.until(h2.events.StreamEnded)
            async with httpx.AsyncClient() as plain:  # HTTP/1.1 on the same port, as before
                answer = await plain.get(f"http://127.0.0.1:{server.port}/api/health")
                assert answer.http_version == "HTTP/1.1" and answer.status_code == 200
            async with httpx.AsyncClient(http1=False, http2=True) as h2c:  # httpx's prior knowledge
                answer = await h2c.get(f"http://127.0.0.1:{server.port}/api/health")
                assert answer.http_version == "HTTP/2" and answer.status_code == 200
        await settle(server)


async def test_without_the_option_the_plain_port_refuses_the_preface() -> None:
    async with serving() as (_, _, server):
        with trio.fail_after(20):
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            async with stream:
                await stream.send_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
                answer = b""
                while chunk := await stream.receive_some(65536):
                    answer += chunk
                assert answer.startswith(b"HTTP/1.1 ")  # h11's refusal (its version 2.0 is not 1.x)
