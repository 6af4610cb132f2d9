"""HTTP/2 on the HTTPS port with real clients: curl ``--http2`` against ``arcly-trio serve``
(LL-HLS playlist, a blocking part, ``/api/streams``, a live HTTP-FLV body, each answered over
HTTP/2), hls.js in Debian's Chromium playing LL-HLS over h2 (``nextHopProtocol``), and the
watch page loaded over h2 playing through the frame API's WebSocket (HTTP/1.1). ffmpeg
5.1, which offers no ALPN, plays HTTP-FLV over the same port by HTTP/1.1 in
``tests/ops/test_ops_interop.py`` (the fallback)."""

from __future__ import annotations

import re
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme

from arcly_trio import AppSpec, Engine
from arcly_trio.protocols.http.router import HttpRequest
from arcly_trio.server.demo import publish_demo
from arcly_trio.services import HlsService
from arcly_trio.workers.http import HttpServer
from arcly_trio.workers.rtmp import RtmpServer
from tests._browser import FAKE_MEDIA, blocking, browser
from tests._cli import cli_server
from tests._npm import HLS_JS, npm_file
from tests._tools import require_tool
from tests.services.test_hls_cmaf_interop import DEMO, PLAYERS, publishing

pytestmark = pytest.mark.interop


def certificate(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A CA, and a certificate for 127.0.0.1 and localhost it signed, with its key."""
    authority = trustme.CA()
    issued = authority.issue_cert("127.0.0.1", "localhost")
    paths = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    authority.cert_pem.write_to_path(str(paths[0]))
    paths[1].write_bytes(b"".join(pem.bytes() for pem in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(paths[2]))
    return paths


async def curl(ca: Path, url: str) -> tuple[str, int, bytes]:
    """``curl --http2`` ``url``: the HTTP version it spoke, the status, the body."""
    result = await trio.run_process(
        [require_tool("curl"), "-s", "--http2", "--cacert", str(ca), "-w", "\n%{http_version} %{http_code}", url],
        capture_stdout=True,
        check=True,
    )
    body, _, trailer = result.stdout.rpartition(b"\n")
    version, status = trailer.decode().split()
    return version, int(status), body


async def test_curl_gets_llhls_the_api_and_live_flv_over_http2(tmp_path: Path) -> None:
    ca, cert, key = certificate(tmp_path)
    with trio.fail_after(60):
        async with cli_server("--demo", "--https-port", "0", "--tls-cert", str(cert), "--tls-key", str(key)) as server:
            await server.wait_log("HTTPS listening")
            port = int(re.search(r"HTTPS listening on [\d.]+:(\d+)", server.log()).group(1))  # type: ignore[union-attr]
            base = f"https://127.0.0.1:{port}"
            version, status, body = await curl(ca, f"{base}/api/streams")
            assert (version, status) == ("2", 200) and b'"key": "live/demo"' in body
            while True:  # the demo's first parts
                version, status, body = await curl(ca, f"{base}/live/demo/video.m3u8")
                if status == 200 and b"#EXT-X-PRELOAD-HINT" in body:
                    break
                await trio.sleep(0.1)
            assert version == "2"
            hint = re.search(rb'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="([^"]+)"', body)
            assert hint is not None
            version, status, part = await curl(ca, f"{base}/live/demo/{hint.group(1).decode()}")  # blocks until made
            assert (version, status) == ("2", 200) and part[4:8] in (b"moof", b"styp")
            args = [require_tool("curl"), "-s", "-v", "--http2", "--cacert", str(ca), f"{base}/live/demo.flv"]
            process = await trio.lowlevel.open_process(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            try:
                assert process.stdout is not None and process.stderr is not None
                flv = b""
                while len(flv) < 256 * 1024:  # a live body for a while: several seconds of the demo
                    chunk = await process.stdout.receive_some(65536)
                    assert chunk, "the live body ended"
                    flv += chunk
            finally:
                process.kill()
                await process.wait()
            assert flv.startswith(b"FLV\x01")
            log = (await process.stderr.receive_some(65536)).decode(errors="replace")
            assert "ALPN: server accepted h2" in log and "< HTTP/2 200" in log, log
            assert "Traceback" not in server.log()


async def test_hlsjs_in_chromium_plays_llhls_over_http2(tmp_path: Path) -> None:
    ffmpeg = require_tool("ffmpeg")
    _, cert, key = certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    rtmp = RtmpServer("127.0.0.1", 0)
    https = HttpServer("127.0.0.1", 0, ssl_context=context)
    files = {"players.html": (PLAYERS.read_bytes(), "text/html; charset=utf-8"),
             "hls.min.js": (npm_file(*HLS_JS).read_bytes(), "text/javascript")}  # fmt: skip

    async def serve_file(request: HttpRequest, exchange: Any) -> None:
        body, kind = files[request.path.rpartition("/")[2]]
        await exchange.respond(200, body, content_type=kind)

    for name in files:
        https.router.get(f"/test/{name}", serve_file)
    engine = Engine.builder().service(HlsService()).protocol(rtmp).protocol(https)
    engine.application(AppSpec("ll", hls=True, hls_variant="ll"))
    async with (
        engine.build(),
        publishing(ffmpeg, DEMO, f"rtmp://127.0.0.1:{rtmp.port}/ll/demo"),
        browser(*FAKE_MEDIA, "--ignore-certificate-errors") as driver,
    ):
        base = f"https://localhost:{https.port}"
        await blocking(driver.get, f"{base}/test/players.html?kind=hls&src={base}/ll/demo/index.m3u8")
        with trio.fail_after(60):
            while True:  # until it has played two seconds
                report = await blocking(driver.execute_script, "return window.report")
                assert report["fatal"] is None, report["errors"]
                if report["samples"] and report["samples"][-1][1] >= 2:
                    break
                await trio.sleep(0.25)
            entries = await blocking(
                driver.execute_script,
                "return performance.getEntriesByType('resource').map(e => [e.name, e.nextHopProtocol])",
            )
    media = [(name, protocol) for name, protocol in entries if ".m3u8" in name or ".m4s" in name or ".mp4" in name]
    assert media and {protocol for _, protocol in media} == {"h2"}, entries
    assert any("_HLS_msn=" in name for name, _ in media)  # blocking reloads, over the one h2 connection


async def test_the_watch_page_over_http2_plays_through_the_frames_websocket(tmp_path: Path) -> None:
    # HTTP/2 offers no WebSocket (no SETTINGS_ENABLE_CONNECT_PROTOCOL): Chromium opens the frame
    # API's wss:// on a separate HTTP/1.1 connection, and the page plays.
    _, cert, key = certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    https = HttpServer("127.0.0.1", 0, ssl_context=context)
    engine = Engine.builder().application(AppSpec("live")).protocol(https).build()
    with trio.fail_after(60):
        async with (
            engine,
            trio.open_nursery() as nursery,
            browser("--ignore-certificate-errors", "--autoplay-policy=no-user-gesture-required") as driver,
        ):
            nursery.start_soon(publish_demo, engine, "live/demo")
            await blocking(driver.get, f"https://localhost:{https.port}/watch/live/demo?via=frames")
            script = "return JSON.parse(JSON.stringify(window.arclyWatch || null))"
            while ((await blocking(driver.execute_script, script)) or {}).get("rendered", 0) < 30:
                await trio.sleep(0.2)
            page = await blocking(
                driver.execute_script, "return performance.getEntriesByType('navigation')[0].nextHopProtocol"
            )
            nursery.cancel_scope.cancel()
    assert page == "h2"
