"""The frame protocol routes of a running server, with the Python client and raw WebSockets.

* a viewer gets ``start``, the configs, then a keyframe first (joining live or late);
* frames published over ``/ingest`` come out of HTTP-FLV unchanged;
* every kind of bad ingest (truncated, oversized, media before config, garbage, no or a wrong
  subprotocol) gets a clear close code and reason, while a healthy viewer and a healthy
  publisher on the same server are not disturbed;
* refusals (unknown stream, token, stream taken) and a server shutdown are told with their
  close codes; plain GETs of the WebSocket paths get 426; the pages and ``/api/server`` are
  served.

Servers run in-process on port 0; ``trio.fail_after`` bounds every test.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

import pytest
import trio
import trio_websocket

from arcly_trio import AppSpec, Engine, Frame, FrameKind, StreamKey, TokenAuthenticator
from arcly_trio.clients import (
    FramesRefused,
    open_frames_publisher,
    open_frames_subscription,
)
from arcly_trio.media import flv
from arcly_trio.protocols.frames import SUBPROTOCOL, CloseCode
from arcly_trio.protocols.frames.messages import HEADER
from arcly_trio.server.demo import demo_frames as load_demo_frames
from arcly_trio.server.demo import publish_demo
from arcly_trio.workers.http import HttpServer
from arcly_trio.workers.http.pages_routes import WHEP_ROUTE


@asynccontextmanager
async def frames_server(*, demo: bool = True, token: str | None = None) -> AsyncIterator[tuple[Engine, HttpServer]]:
    http = HttpServer("127.0.0.1", 0, rtmp_port=1935)
    builder = Engine.builder().application(AppSpec("live")).protocol(http)
    if token:
        builder.authenticator(TokenAuthenticator(publish_token=token))
    async with builder.build() as engine, trio.open_nursery() as nursery:
        if demo:
            nursery.start_soon(lambda: publish_demo(engine, "live/demo", token=token))
            while not engine.streams():
                await trio.sleep(0.01)
        yield engine, http
        nursery.cancel_scope.cancel()


def ws_url(http: HttpServer, path: str) -> str:
    return f"ws://127.0.0.1:{http.port}{path}"


async def raw_session(
    url: str, messages: list[str | bytes], subprotocols: list[str] | None = None
) -> tuple[list[Any], int | None, str | None]:
    """Connect, send ``messages``, read until the server closes: (texts, close code, reason)."""
    texts: list[Any] = []
    async with trio_websocket.open_websocket_url(
        url, subprotocols=subprotocols or [SUBPROTOCOL], max_message_size=1 << 20
    ) as ws:
        try:
            for message in messages:
                await ws.send_message(message)
            while True:
                received = await ws.get_message()
                if isinstance(received, str):
                    texts.append(json.loads(received))
        except trio_websocket.ConnectionClosed as exc:
            assert exc.reason is not None
            return texts, exc.reason.code, exc.reason.reason
    raise AssertionError("unreachable")


async def test_a_viewer_gets_configs_then_a_keyframe_first_live_and_late() -> None:
    with trio.fail_after(30):
        async with frames_server() as (engine, http):
            for delay in (0, 2.5):  # at once, then in the middle of a GOP
                await trio.sleep(delay)
                async with open_frames_subscription(ws_url(http, "/live/demo/frames")) as sub:
                    frames = []
                    async for frame in sub:
                        frames.append(frame)
                        if len([f for f in frames if not f.config]) >= 20:
                            break
                    assert sub.start is not None and sub.start.stream == "live/demo"
                    configs = [f for f in frames if f.config]
                    media = [f for f in frames if not f.config]
                    assert frames[: len(configs)] == configs and {f.codec for f in configs} == {"h264", "aac"}
                    assert media[0].kind is FrameKind.VIDEO and media[0].keyframe
                    video = sub.configs[(FrameKind.VIDEO, 0)]
                    audio = sub.configs[(FrameKind.AUDIO, 0)]
                    assert video.decoder_config() == {"codec": "avc1.4d401e", "codedWidth": 640, "codedHeight": 360}
                    assert audio.decoder_config() == {"codec": "mp4a.40.2", "sampleRate": 44100, "numberOfChannels": 1}
                    dts = [f.dts for f in media if f.kind is FrameKind.VIDEO]
                    assert dts == sorted(dts)


async def read_flv(http: HttpServer, path: str, count: int) -> list[Frame]:
    """The first ``count`` media frames of an HTTP-FLV response (h11 client)."""
    import h11

    stream = await trio.open_tcp_stream("127.0.0.1", http.port)  # type: ignore[arg-type]
    async with stream:
        conn = h11.Connection(h11.CLIENT)
        await stream.send_all(conn.send(h11.Request(method="GET", target=path, headers=[("host", "x")])))
        reader = flv.FlvReader()
        frames: list[Frame] = []
        while len([f for f in frames if not f.config]) < count:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Data):
                reader.receive_data(event.data)
                while (tag := reader.next_event()) is not None:
                    if isinstance(tag, flv.FlvTag):
                        frames.extend(flv.tag_to_frames(tag))
        return frames


async def test_frames_published_over_ingest_come_out_of_http_flv_unchanged() -> None:
    source = [f for f in load_demo_frames() if f.kind is not FrameKind.DATA]
    with trio.fail_after(30):
        async with frames_server(demo=False) as (engine, http):
            async with open_frames_publisher(ws_url(http, "/live/copy/ingest")) as pub:
                for frame in source[:4]:  # configs and the first frames
                    await pub.send(frame)
                while not engine.streams():
                    await trio.sleep(0.01)
                async with trio.open_nursery() as nursery:
                    received: list[Frame] = []

                    async def play() -> None:
                        received.extend(await read_flv(http, "/live/copy.flv", 100))

                    nursery.start_soon(play)
                    await trio.sleep(0.2)
                    for frame in source[4:200]:
                        await pub.send(frame)
            assert pub.close_code == CloseCode.NORMAL
    sent = {(f.kind, f.dts, f.payload) for f in source}
    media = [f for f in received if f.kind is not FrameKind.DATA]
    assert len(media) >= 100 and all((f.kind, f.dts, f.payload) in sent for f in media)
    assert next(f for f in media if not f.config).keyframe


def header(kind: int = 1, flags: int = 1, pts: int = 0, dts: int = 0) -> bytes:
    return HEADER.pack(1, kind, flags, 0, pts, dts)


BAD_INGEST = [
    ("truncated", [b"\x01\x01\x01"], None, CloseCode.MALFORMED, "shorter than"),
    ("media before config", [header() + b"\x00\x00\x00\x01\x65"], None, CloseCode.ORDER, "before its config"),
    ("garbage", ["\x00\xff not json"], None, CloseCode.MALFORMED, "not JSON"),
    ("garbage binary", [b"\xde\xad\xbe\xef" * 8], None, CloseCode.MALFORMED, "unknown binary message type"),
    ("oversized", [header() + bytes(5 << 20)], None, CloseCode.TOO_BIG, "maximum message size"),
    ("no subprotocol", [], ["something.else"], CloseCode.SUBPROTOCOL, SUBPROTOCOL),
]


async def test_bad_ingest_gets_a_clear_close_and_disturbs_nobody() -> None:
    source = [f for f in load_demo_frames() if f.kind is not FrameKind.DATA]
    with trio.fail_after(60):
        async with frames_server() as (engine, http), trio.open_nursery() as nursery:
            viewer: dict[str, Any] = {"frames": 0}
            publisher: dict[str, Any] = {}

            async def watch() -> None:
                async with open_frames_subscription(ws_url(http, "/live/demo/frames")) as sub:
                    viewer["sub"] = sub
                    async for _ in sub:
                        viewer["frames"] += 1

            async def publish() -> None:
                async with open_frames_publisher(ws_url(http, "/live/healthy/ingest")) as pub:
                    publisher["pub"] = pub
                    offset = 0
                    while True:
                        for frame in source:
                            await pub.send(frame.shifted(offset) if not frame.config else frame)
                            await trio.sleep(0.002)
                        offset += 10_000

            nursery.start_soon(watch)
            nursery.start_soon(publish)
            while viewer["frames"] < 10 or not publisher:
                await trio.sleep(0.05)
            for index, (name, messages, subprotocols, code, reason) in enumerate(BAD_INGEST):
                before = viewer["frames"], engine.stream(StreamKey("live", "healthy")).stats().video_frames_total
                texts, got_code, got_reason = await raw_session(
                    ws_url(http, f"/live/bad{index}/ingest"), messages, subprotocols
                )
                assert got_code == code, (name, got_code, got_reason, texts)
                assert got_reason is not None and reason in got_reason, (name, got_reason)
                if code != CloseCode.TOO_BIG:  # trio-websocket itself closes an oversized message
                    assert texts[-1]["type"] == "end" and reason in texts[-1]["message"], (name, texts)
                await trio.sleep(0.3)
                after = viewer["frames"], engine.stream(StreamKey("live", "healthy")).stats().video_frames_total
                assert after[0] > before[0] and after[1] > before[1], name  # both still flowing
            assert viewer["sub"].end is None and publisher["pub"].close_code is None
            assert not [s for s in engine.streams() if s.key.name.startswith("bad") and s.publishing]
            nursery.cancel_scope.cancel()


async def test_refusals_have_close_codes_and_reasons() -> None:
    with trio.fail_after(30):
        async with frames_server(token="s3cret") as (engine, http):
            cases = [
                ("/live/nope/frames", [SUBPROTOCOL], CloseCode.NOT_FOUND, "not published"),
                ("/nope/x/frames", [SUBPROTOCOL], CloseCode.NOT_FOUND, "not registered"),
                ("/live/demo/frames", ["chat", "other"], CloseCode.SUBPROTOCOL, "offered: chat, other"),
                ("/live/mine/ingest", [SUBPROTOCOL], CloseCode.UNAUTHORIZED, "no token"),
                ("/live/mine/ingest?token=wrong", [SUBPROTOCOL], CloseCode.UNAUTHORIZED, "wrong token"),
                ("/live/demo/ingest?token=s3cret", [SUBPROTOCOL], CloseCode.CONFLICT, "already has a publisher"),
            ]
            for path, subprotocols, code, reason in cases:
                texts, got_code, got_reason = await raw_session(ws_url(http, path), [], subprotocols)
                assert (got_code, texts[-1]["reason"]) == (code, "refused"), (path, got_code, texts)
                assert reason in texts[-1]["message"] and got_reason, (path, texts)
            with pytest.raises(FramesRefused) as caught:
                async with open_frames_subscription(ws_url(http, "/live/nope/frames")):
                    pass
            assert caught.value.code == CloseCode.NOT_FOUND
            async with open_frames_publisher(ws_url(http, "/live/mine/ingest?token=s3cret")) as pub:
                assert pub.close_code is None


@pytest.mark.parametrize("path", ["/live/a%20b/frames", "/live/a%20b/ingest", "/%3Cx%3E/demo/frames"])
async def test_invalid_names_are_refused_with_4400_and_one_log_line(path: str, caplog) -> None:  # type: ignore[no-untyped-def]
    # Issue 18, finding 8: the StreamKey was built outside the error handling: 500 and a traceback.
    caplog.set_level(logging.DEBUG, logger="arcly_trio")
    with trio.fail_after(30):
        async with frames_server(demo=False) as (engine, http):
            texts, code, reason = await raw_session(ws_url(http, path), [])
            assert code == CloseCode.MALFORMED and texts[-1]["reason"] == "refused"  # the protocol's 400
            assert "invalid name" in texts[-1]["message"] and reason
            lines = [r for r in caplog.records if "invalid name" in r.getMessage()]
            assert len(lines) == 1 and all(r.exc_info is None for r in caplog.records)
            assert not engine.streams()


async def test_viewers_are_told_when_the_server_stops() -> None:
    with trio.fail_after(30):
        async with frames_server() as (engine, http):
            async with open_frames_subscription(ws_url(http, "/live/demo/frames")) as sub:
                async for frame in sub:
                    if not frame.config:
                        break
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(engine.shutdown, 3)
                    async for _ in sub:
                        pass
            assert sub.close_code == CloseCode.GOING_AWAY
            assert sub.end is not None and sub.end.reason == "shutdown"


async def test_plain_gets_pages_and_server_info(http_get) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(30):
        async with frames_server(demo=False) as (engine, http):
            status, headers, body = await http_get(http.port, "/live/demo/frames")
            assert status == 426 and SUBPROTOCOL.encode() in body
            for path, kind, needle in [
                ("/", "text/html", b"live streams"),
                ("/watch/live/demo", "text/html", b"watch.js"),
                ("/publish/live/cam", "text/html", b"publish.js"),
                ("/pages/watch.js", "text/javascript", b"VideoDecoder"),
                ("/pages/style.css", "text/css", b"body"),
            ]:
                status, headers, body = await http_get(http.port, path)
                assert status == 200 and headers["content-type"].startswith(kind) and needle in body, path
                assert "default-src 'self'" in headers["content-security-policy"]
            for path in ("/pages/nope.js", "/pages/index.html"):
                status, _, _ = await http_get(http.port, path)
                assert status == 404, path
            status, headers, body = await http_get(http.port, "/api/server")
            assert status == 200 and json.loads(body) == {
                "server": "arcly-trio",
                "rtmp_port": 1935,
                "hls": False,
                "frames_protocol": SUBPROTOCOL,
                "webrtc": False,
                "srt_port": None,
                "rtsp_port": None,
                "rtsps_port": None,
            }
            # The SRT and RTSP(S) ports the CLI sets once they are bound, for the status page.
            http.srt_port, http.rtsp_port, http.rtsps_port = 8890, 8554, 8322
            _, _, body = await http_get(http.port, "/api/server")
            info = json.loads(body)
            assert (info["srt_port"], info["rtsp_port"], info["rtsps_port"]) == (8890, 8554, 8322)


async def test_pages_may_connect_to_their_own_origin_only(http_get) -> None:  # type: ignore[no-untyped-def]
    # Issue 18, finding 4: the pages' CSP had connect-src * (and the publish page took its server
    # from ?server=): a link could send a visitor's camera to any server.
    with trio.fail_after(30):
        async with frames_server(demo=False) as (engine, http):
            own = f"127.0.0.1:{http.port}"
            for path, ancestors in (("/", "*"), ("/watch/live/demo", "*"), ("/publish/live/cam", "'self'")):
                status, headers, _ = await http_get(http.port, path + "?server=http://evil.example", [("host", own)])
                policy = dict(part.strip().split(" ", 1) for part in headers["content-security-policy"].split(";"))
                assert status == 200 and policy["connect-src"] == f"'self' ws://{own} wss://{own}", policy
                assert policy["default-src"] == "'self'" and policy["frame-ancestors"] == ancestors
            # A Host header that would add a source or a directive is not used.
            for host in ("evil.example *", "x; connect-src *", "a'b", "x/y"):
                _, headers, _ = await http_get(http.port, "/publish/live/cam", [("host", host)])
                policy = headers["content-security-policy"]
                assert "connect-src 'self';" in policy and policy.count("connect-src") == 1, policy
            _, _, script = await http_get(http.port, "/pages/common.js", [("host", own)])
            assert b'params.get("server")' not in script  # no ?server= (the browser test proves it)


async def test_server_info_says_webrtc_once_a_whep_route_is_installed(http_get) -> None:  # type: ignore[no-untyped-def]
    # Issue 22: the pages try WHEP/WHIP only where the server serves it (the WebRTC worker's
    # POST route), and use the frames API otherwise.
    async def refuse(request: Any, exchange: Any) -> None:
        await exchange.error(503, "not here")

    with trio.fail_after(30):
        async with frames_server(demo=False) as (engine, http):
            http.router.add("/{app}/{stream}/whep", refuse, methods=("GET",))  # not a POST: not WHEP
            _, _, body = await http_get(http.port, "/api/server")
            assert json.loads(body)["webrtc"] is False
            http.router.add(WHEP_ROUTE, refuse, methods=("POST",))
            _, _, body = await http_get(http.port, "/api/server")
            assert json.loads(body)["webrtc"] is True


async def test_pages_never_reflect_what_the_request_carries(http_get) -> None:  # type: ignore[no-untyped-def]
    # The pages read the stream, ?token= and ?via= in their scripts: the HTML served is the
    # same bytes whatever the path and query hold.
    evil = "%3Cscript%3Ealert(1)%3C%2Fscript%3E"
    name = "%3Cb%20onclick%3Dalert(1)%3E"  # a path segment has no slash
    with trio.fail_after(30):
        async with frames_server(demo=False) as (engine, http):
            for page, path in (
                ("watch.html", f"/watch/{name}/x?via={evil}&token={evil}"),
                ("publish.html", f"/publish/live/{name}?via=whip&kbps={evil}&codec={evil}"),
                ("index.html", f"/?token={evil}&api_token={evil}"),
            ):
                status, _, body = await http_get(http.port, path)
                expected = resources.files("arcly_trio.workers.http").joinpath("pages", page).read_bytes()
                assert status == 200 and body == expected and b"alert" not in body, path


async def test_pages_speak_whep_and_whip_to_their_own_origin_only(http_get) -> None:  # type: ignore[no-untyped-def]
    # The WebRTC paths of the pages: the offer goes by fetch to this origin (connect-src 'self'),
    # with the page's ?token= as a Bearer token, and the frames API stays the fallback.
    with trio.fail_after(30):
        async with frames_server(demo=False) as (engine, http):
            _, _, common = await http_get(http.port, "/pages/common.js")
            _, _, watch = await http_get(http.port, "/pages/watch.js")
            _, _, publish = await http_get(http.port, "/pages/publish.js")
            _, _, status = await http_get(http.port, "/pages/index.js")
    assert b'"application/sdp"' in common and b'"Bearer " + token' in common
    assert b"session.origin === base.origin" in common  # a Location elsewhere is never DELETEd
    assert b'"/whep"' in watch and b"startFrames()" in watch and b"getStats()" in watch
    assert b'"/whip"' in publish and b"setParameters" in publish and b"setCodecPreferences" not in publish
    assert b"setCodecPreferences" in common and b'"/whep"' in status and b'"/whip"' in status
    for script in (common, watch, publish, status):
        assert b"http://" not in script and b"https://" not in script  # nothing from elsewhere


async def test_a_slow_viewer_skips_to_the_next_keyframe_and_is_told() -> None:
    config = next(f for f in load_demo_frames() if f.config and f.codec == "h264")
    http = HttpServer("127.0.0.1", 0)
    engine = Engine.builder().application(AppSpec("live", subscriber_queue=8)).protocol(http).build()
    with trio.fail_after(60):
        async with engine, open_frames_publisher(ws_url(http, "/live/big/ingest")) as pub:
            await pub.send(config)
            await pub.send(Frame(FrameKind.VIDEO, "h264", 0, 0, bytes(1000), keyframe=True))
            async with trio_websocket.open_websocket_url(
                ws_url(http, "/live/big/frames"),
                subprotocols=[SUBPROTOCOL],
                message_queue_size=1,
                max_message_size=1 << 20,
            ) as ws:
                assert json.loads(await ws.get_message())["type"] == "start"
                for n in range(1, 121):  # 30 MB the viewer does not read for now
                    await pub.send(
                        Frame(FrameKind.VIDEO, "h264", n * 33, n * 33, bytes(256 * 1024), keyframe=n % 10 == 0)
                    )
                await trio.sleep(0.5)
                messages: list[str | bytes] = []

                async def read() -> None:
                    while True:
                        messages.append(await ws.get_message())

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(read)
                    await trio.sleep(0.5)  # the frames queued before the gap drain
                    for n in range(130, 135):  # the next GOP: the viewer resumes on its keyframe
                        await pub.send(Frame(FrameKind.VIDEO, "h264", n * 33, n * 33, bytes(1000), keyframe=n == 130))
                    await trio.sleep(0.5)
                    nursery.cancel_scope.cancel()
    told_at = next(
        i
        for i, m in enumerate(messages)
        if isinstance(m, str) and json.loads(m)["type"] == "stats" and json.loads(m)["skipped"]
    )
    told = json.loads(messages[told_at])
    message = next(m for m in messages[told_at + 1 :] if isinstance(m, bytes) and not m[2] & 2)  # not a record
    assert told["dropped"] >= told["skipped"] > 0
    assert message[1] == 1 and message[2] & 1  # a video keyframe
    assert pub.close_code is None or pub.close_code == CloseCode.NORMAL


@pytest.mark.interop
@pytest.mark.parametrize(
    "video",
    [
        ("-c:v", "libaom-av1", "-cpu-used", "8"),
        ("-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error"),
    ],
    ids=["av1", "hevc"],
)
async def test_av1_hevc_and_opus_published_over_ingest_decode_in_ffmpeg8_over_rtmp_and_http_flv(
    tmp_path: Any, video: tuple[str, ...]
) -> None:
    from arcly_trio.workers.rtmp import RtmpServer
    from tests._tools import require_ffmpeg8

    ffmpeg = require_ffmpeg8()
    clip = tmp_path / "clip.flv"
    await trio.run_process(
        [
            ffmpeg,
            "-hide_banner",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=25",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-t",
            "4",
            "-g",
            "25",
            *video,
            "-c:a",
            "libopus",
            "-f",
            "flv",
            str(clip),
        ]
    )
    frames = [f for f in flv.read_frames(clip.read_bytes()) if f.kind is not FrameKind.DATA]
    rtmp, http = RtmpServer("127.0.0.1", 0), HttpServer("127.0.0.1", 0)
    engine = Engine.builder().application(AppSpec("live")).protocol(rtmp).protocol(http).build()
    with trio.fail_after(90):
        async with (
            engine,
            open_frames_publisher(ws_url(http, "/live/clip/ingest")) as pub,
            trio.open_nursery() as nursery,
        ):

            async def send_looping() -> None:
                start, offset = trio.current_time(), 0
                frames.sort(key=lambda f: f.dts)
                while True:
                    for frame in frames:
                        if frame.config and offset:
                            continue
                        await trio.sleep_until(start + (frame.dts + offset) / 1000)
                        await pub.send(frame.shifted(offset) if offset else frame)
                    offset += frames[-1].dts + 40  # the clip's length: timestamps never go back

            nursery.start_soon(send_looping)
            codec = "av1" if "libaom-av1" in video else "hevc"
            for url in (f"rtmp://127.0.0.1:{rtmp.port}/live/clip", f"http://127.0.0.1:{http.port}/live/clip.flv"):
                result = await trio.run_process(
                    [ffmpeg, "-hide_banner", "-i", url, "-t", "2", "-f", "null", "-"],
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                )
                text = result.stderr.decode()
                assert result.returncode == 0 and f"Video: {codec}" in text and "Audio: opus" in text, text
                assert "rror" not in text.split("Press [q]")[-1], text
            nursery.cancel_scope.cancel()
