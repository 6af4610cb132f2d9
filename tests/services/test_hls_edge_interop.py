"""HLS and DASH of pulled and cluster streams, and HLS/DASH players' sessions, against real players
(issue 19, items 1 and 2).

The upstream is another arcly-trio (in-process) that Debian's ffmpeg 5.1 publishes the demo clip
to, in real time; the edge brings the stream on demand with a pull (``--pull``) or as a node of
the same cluster (a :class:`~arcly_trio.cluster.MemoryDirectory`):

* ffmpeg decodes the edge's ``index.m3u8`` from its very first request (it gave up on the ``404``
  the edge answered while the pull started);
* after an idle pull stop, ffmpeg reads the new pull live (it got the previous pull's final
  playlist, ``#EXT-X-ENDLIST``, read it at 1200x and exited);
* hls.js in Debian's headless Chromium plays the edge's stream from the first request;
* ffmpeg (HLS and DASH) and hls.js/dash.js are each one session while they play: listed in
  ``/api/sessions``, counted in ``subscribers``, authorized once, one ``play-start`` and one
  ``play-end``.

Each test waits on events (ffmpeg's exit, the server's state, the page's report), bounded by
``trio.fail_after``.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

import arcly_trio.server
from arcly_trio import AppSpec, Engine, StreamKey
from arcly_trio.cluster import MemoryDirectory
from arcly_trio.ops import AuditPipeline, MemorySink
from arcly_trio.protocols.http.router import HttpRequest
from arcly_trio.relay import PullSource
from arcly_trio.services import HlsService
from arcly_trio.workers.http import HttpServer
from arcly_trio.workers.rtmp import RtmpServer
from tests._browser import FAKE_MEDIA, chromium
from tests._nodes import cluster_node, node
from tests._npm import DASH_JS, HLS_JS, npm_file
from tests._tools import require_tool

pytestmark = pytest.mark.interop

HOST = "127.0.0.1"
DEMO = Path(arcly_trio.server.__file__).parent / "assets" / "demo.flv"
PLAYERS = Path(__file__).parent.parent / "data" / "players.html"
EDGES = ("pull", "cluster")


@contextlib.asynccontextmanager
async def ffmpeg_publishing(url: str) -> AsyncIterator[None]:
    """Debian's ffmpeg sending the demo clip in real time, looped, to ``url`` (killed on exit)."""
    args = [require_tool("ffmpeg"), "-hide_banner", "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1",
            "-i", str(DEMO), "-c", "copy", "-f", "flv", url]  # fmt: skip
    process = await trio.lowlevel.open_process(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        process.kill()
        await process.wait()


def install_players(http: HttpServer) -> None:
    """Serve the player page, hls.js and dash.js under ``/test/`` (nothing from the internet)."""
    files = {"players.html": (PLAYERS, "text/html; charset=utf-8"), "hls.min.js": (npm_file(*HLS_JS), "text/javascript"),
             "dash.all.min.js": (npm_file(*DASH_JS), "text/javascript")}  # fmt: skip
    bodies = {name: (path.read_bytes(), kind) for name, (path, kind) in files.items()}

    async def serve_file(request: HttpRequest, exchange: Any) -> None:
        body, kind = bodies[request.path.rpartition("/")[2]]
        await exchange.respond(200, body, content_type=kind)

    for name in bodies:
        http.router.get(f"/test/{name}", serve_file)


@contextlib.asynccontextmanager
async def edge(kind: str, hls: HlsService, *, players: bool = False) -> AsyncIterator[tuple[Engine, HttpServer]]:
    """An origin arcly-trio that ffmpeg publishes ``live/cam`` to, and an edge (HTTP, ``hls``)
    that brings it from there on demand: by a pull (``kind="pull"``) or as another node of the
    origin's cluster (``"cluster"``). Nothing asks the edge for the stream before the test."""
    async with contextlib.AsyncExitStack() as stack:
        if kind == "pull":
            origin, origin_rtmp, _ = await stack.enter_async_context(node())
            pull = PullSource({None: f"rtmp://{HOST}:{origin_rtmp.port}/{{app}}/{{stream}}"}, idle=0.5)
            edge_engine, _, edge_http = await stack.enter_async_context(
                node(sources=(pull,), services=(hls,), http=True)
            )
        else:
            directory = MemoryDirectory()
            origin, origin_rtmp, _ = await stack.enter_async_context(cluster_node(directory, "origin"))
            edge_http = HttpServer(HOST, 0)
            edge_engine, _, _ = await stack.enter_async_context(
                cluster_node(directory, "edge", http=edge_http, hls=hls)
            )
        assert edge_http is not None
        if players:
            install_players(edge_http)
        await stack.enter_async_context(ffmpeg_publishing(f"rtmp://{HOST}:{origin_rtmp.port}/live/cam"))
        with trio.fail_after(20):
            while not origin.has_stream(StreamKey("live", "cam")):
                await trio.sleep(0.05)
        assert not edge_engine.has_stream(StreamKey("live", "cam"))
        yield edge_engine, edge_http


async def ffmpeg_reads(url: str, seconds: float) -> tuple[int, float, str]:
    """Decode ``seconds`` of ``url`` with ffmpeg: its exit status, how many seconds of media it
    decoded (its last ``time=``) and its messages."""
    args = [require_tool("ffmpeg"), "-hide_banner", "-nostdin", "-loglevel", "info", "-i", url, "-t", str(seconds),
            "-f", "null", "-"]  # fmt: skip
    with trio.fail_after(seconds + 60):
        result = await trio.run_process(args, capture_stdout=True, capture_stderr=True, check=False)
    messages = result.stderr.decode(errors="replace")
    times = re.findall(r"time=(\d+):(\d+):(\d+(?:\.\d+)?)", messages)
    decoded = max((int(h) * 3600 + int(m) * 60 + float(s) for h, m, s in times), default=0.0)
    return result.returncode, decoded, messages


@pytest.mark.parametrize("kind", EDGES)
async def test_ffmpeg_decodes_an_edges_hls_from_its_first_request(kind: str) -> None:
    async with edge(kind, HlsService(all_apps=True)) as (engine, http):
        status, decoded, messages = await ffmpeg_reads(f"http://{HOST}:{http.port}/live/cam/index.m3u8", 4)
    assert status == 0 and decoded >= 3.5, messages[-2000:]
    assert "404" not in messages and "Video: h264" in messages and "Audio: aac" in messages


async def test_after_an_idle_pull_stop_ffmpeg_reads_the_new_pull_live_not_the_old_final_playlist(http_get) -> None:  # type: ignore[no-untyped-def]
    hls = HlsService(variant="ts", target_duration=1, all_apps=True, session_timeout=5, delete_delay=60)
    async with edge("pull", hls) as (engine, http):
        key = StreamKey("live", "cam")
        with trio.fail_after(30):
            status, _, _ = await http_get(http.port, "/live/cam/index.m3u8")  # a first viewer, who leaves
            assert status == 200
            while engine.has_stream(key) or hls.streams:  # its session ends, then the pull
                await trio.sleep(0.05)
        assert b"#EXT-X-ENDLIST" in await hls.storage.get("live/cam/index.m3u8")  # the old final playlist
        status, decoded, messages = await ffmpeg_reads(f"http://{HOST}:{http.port}/live/cam/index.m3u8", 8)
    assert engine.sourcing.started_total == 2
    # Live: ffmpeg waits for the new segments and decodes the 8 seconds it asked for (the old
    # final playlist holds ~2 s of the first pull: read at once, then the end).
    assert status == 0 and decoded >= 7.5, messages[-2000:]


async def blocking(fn: Any, *args: Any) -> Any:
    return await trio.to_thread.run_sync(fn, *args, abandon_on_cancel=True)


async def page_report(url: str, seconds: float) -> dict[str, Any]:
    """Open the player page at ``url`` in Chromium for ``seconds``: its report."""
    stack = contextlib.ExitStack()
    driver = await blocking(stack.enter_context, chromium(*FAKE_MEDIA))
    try:
        await blocking(driver.get, url)
        with trio.fail_after(seconds + 60):
            await trio.sleep(seconds)
            report: dict[str, Any] = await blocking(driver.execute_script, "return window.report")
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(stack.close)
    return report


def plays(report: dict[str, Any], after_ms: int = 5000) -> bool:
    """Whether the page's video advanced without a fatal error once ``after_ms`` had passed."""
    samples = report["samples"]
    late = [t for at, t, _ in samples if at >= after_ms]
    return report["fatal"] is None and len(late) > 4 and late[-1] - late[0] >= 0.5 * (samples[-1][0] - after_ms) / 1000


@pytest.mark.parametrize("kind", EDGES)
async def test_hlsjs_plays_an_edges_stream_from_its_first_request(kind: str) -> None:
    async with edge(kind, HlsService(all_apps=True), players=True) as (engine, http):
        src = f"http://{HOST}:{http.port}/live/cam/index.m3u8"
        report = await page_report(f"http://{HOST}:{http.port}/test/players.html?kind=hls&src={src}", 12)
    assert plays(report), (report["errors"], report["samples"][-8:])


# --- players' sessions ----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def counted_server(*, players: bool = False) -> AsyncIterator[tuple[Engine, HttpServer, MemorySink, int]]:
    """RTMP in (ffmpeg publishes ``ts/cam`` and ``ll/cam``), HLS and DASH out, an audit log in
    memory; yields the engine, the HTTP server, the audit records and the RTMP port."""
    rtmp, http, audit = RtmpServer(HOST, 0), HttpServer(HOST, 0), MemorySink()
    if players:
        install_players(http)
    builder = (Engine.builder().service(HlsService(session_timeout=3)).protocol(rtmp).protocol(http)
               .observer(AuditPipeline(audit)))  # fmt: skip
    for variant in ("ts", "ll"):
        builder.application(AppSpec(variant, hls=True, hls_variant=variant))
    async with builder.build() as engine:
        assert rtmp.port is not None and http.port is not None
        async with (
            ffmpeg_publishing(f"rtmp://{HOST}:{rtmp.port}/ts/cam"),
            ffmpeg_publishing(f"rtmp://{HOST}:{rtmp.port}/ll/cam"),
        ):
            with trio.fail_after(20):
                while not (engine.has_stream(StreamKey("ts", "cam")) and engine.has_stream(StreamKey("ll", "cam"))):
                    await trio.sleep(0.05)
            yield engine, http, audit, rtmp.port


async def one_session_while(engine: Engine, http_get: Any, port: int, app: str, protocol: str,
                            done: Any) -> list[dict[str, Any]]:  # fmt: skip
    """Watch ``/api/sessions`` and ``/api/streams`` until ``done()``: what they said of the
    players of ``app/cam`` each time they had one."""
    seen: list[dict[str, Any]] = []
    while not done():
        sessions = [s for s in json.loads((await http_get(port, "/api/sessions"))[2])["sessions"]
                    if s["role"] == "play"]  # fmt: skip
        streams = json.loads((await http_get(port, "/api/streams"))[2])["apps"]
        subscribers = next(s["subscribers"] for a in streams if a["name"] == app for s in a["streams"])
        if sessions:
            seen.append({"sessions": [(s["id"], s["protocol"]) for s in sessions], "subscribers": subscribers})
        await trio.sleep(0.5)
    return seen


@pytest.mark.parametrize(
    "app,entry,protocol", [("ts", "index.m3u8", "hls"), ("ll", "index.m3u8", "hls"), ("ll", "index.mpd", "dash")]
)
async def test_ffmpeg_playing_hls_or_dash_is_one_session_authorized_once(
    http_get, app: str, entry: str, protocol: str
) -> None:
    async with counted_server() as (engine, http, audit, _):
        result: dict[str, Any] = {}

        async def read() -> None:
            result["ffmpeg"] = await ffmpeg_reads(f"http://{HOST}:{http.port}/{app}/cam/{entry}", 8)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            seen = await one_session_while(engine, http_get, http.port, app, protocol, lambda: "ffmpeg" in result)
        status, decoded, messages = result["ffmpeg"]
        assert status == 0 and decoded >= 7.5, messages[-1500:]
        # While it played: one session of its protocol, listed and counted.
        assert seen and len({s["sessions"][0] for s in seen}) == 1, seen
        assert all(len(s["sessions"]) == 1 and s["sessions"][0][1] == protocol for s in seen), seen
        assert all(s["subscribers"] == {"total": 1, "by_protocol": {protocol: 1}} for s in seen), seen
        session = seen[0]["sessions"][0][0]
        with trio.fail_after(20):  # ffmpeg has gone: its session ends after the timeout
            while not any(r["event"] == "play-end" for r in audit.records):
                await trio.sleep(0.1)
    plays_ = [(r["event"], r["client_id"], r["protocol"]) for r in audit.records if r["event"].startswith("play")]
    assert plays_ == [("play-start", session, protocol), ("play-end", session, protocol)]
    auth = [r for r in audit.records if r["event"] == "auth" and r["action"] == "play"]
    assert [r["client_id"] for r in auth] == [session]


@pytest.mark.parametrize("kind", ["hls", "dash"])
async def test_hlsjs_and_dashjs_playing_are_one_session_each(http_get, kind: str) -> None:
    async with counted_server(players=True) as (engine, http, audit, _):
        entry = "index.m3u8" if kind == "hls" else "index.mpd"
        with trio.fail_after(20):
            while (await http_get(http.port, f"/ll/cam/{entry}?probe=1"))[0] != 200:
                await trio.sleep(0.2)
            while engine.polled:  # that probe's session ends first
                await trio.sleep(0.1)
        src = f"http://{HOST}:{http.port}/ll/cam/{entry}"
        started = engine.polled.started_total
        result: dict[str, Any] = {}

        async def watch() -> None:
            result["report"] = await page_report(
                f"http://{HOST}:{http.port}/test/players.html?kind={kind}&src={src}", 14
            )

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            seen = await one_session_while(engine, http_get, http.port, "ll", kind, lambda: "report" in result)
    report = result["report"]
    assert plays(report, 6000), (report["errors"], report["samples"][-8:])
    assert engine.polled.started_total == started + 1  # the player's whole play: one session
    assert seen and all(s["subscribers"] == {"total": 1, "by_protocol": {kind: 1}} for s in seen), seen
