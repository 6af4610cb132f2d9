"""One authorization path: every egress asks the engine, over every protocol.

An engine with a play token (``TokenAuthenticator(play_token=...)``), the RTMP and HTTP workers
and HLS. For each protocol a client without the token is refused the way that protocol says no,
and one with it plays: RTMP (``NetStream.Play.Failed``), HTTP-FLV and WebSocket-FLV (``401``
without a token, with ``WWW-Authenticate``; ``403`` with a wrong one), HLS playlists and
segments (the same; segment URIs in a playlist carry the token on), and the
WebSocket frame API (close code 4403). Each refusal also reaches the engine's throttle.

Issue 18: a viewer's signed URL (what ``arcly-trio sign`` prints by default) never publishes,
over RTMP or the ``/ingest`` WebSocket, while the streamer's URL does; settings that would let
a viewer's credential publish stop the server. And two regressions no other test caught, each
test naming the mutant it kills: LL-HLS parts, fMP4 segments and init segments need the token;
a refused play opens no upstream connection (the pull starts after the authorization).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import parse_qsl, urlsplit

import pytest
import trio

from arcly_trio import AppSpec, Credentials, Engine, StreamKey, TokenAuthenticator, Unauthorized
from arcly_trio.clients.flv import open_flv_player
from arcly_trio.clients.frames import FramesRefused, open_frames_publisher, open_frames_subscription
from arcly_trio.clients.rtmp import open_rtmp_publisher
from arcly_trio.core.errors import RemoteRefused
from arcly_trio.core.frame import Frame
from arcly_trio.kernel.throttle import AuthThrottle
from arcly_trio.relay import PullSource
from arcly_trio.server.build import build_runtime
from arcly_trio.server.cli import build_parser, resolve_args
from arcly_trio.server.cli import main as cli_main
from arcly_trio.services import HlsService
from arcly_trio.workers.http import HttpServer
from arcly_trio.workers.rtmp import RtmpServer
from tests._cli import EPHEMERAL_PORTS
from tests._hls import media_playlist, uris
from tests._net import black_hole
from tests._rtmp import HOST, RawClient

TOKEN = "p1ay"


@asynccontextmanager
async def guarded(demo_frames: list[Frame]) -> AsyncIterator[tuple[Engine, int, int]]:
    rtmp, http = RtmpServer("127.0.0.1", 0), HttpServer("127.0.0.1", 0)
    engine = (
        Engine.builder()
        .application(AppSpec("live", hls=True))
        .service(HlsService(variant="ts", target_duration=1))
        .authenticator(TokenAuthenticator(play_token=TOKEN))
        .auth_throttle(AuthThrottle(base_delay=0.001, max_delay=0.001))
        .protocol(rtmp)
        .protocol(http)
        .build()
    )
    async with engine, engine.publish("live/cam") as publisher:
        for frame in demo_frames[:200]:  # more than two 1 s segments
            await publisher.send(frame)
        with trio.fail_after(5):
            while not engine.application("live").streams()[0].gop.gop_frames:
                await trio.sleep(0.01)
        yield engine, rtmp.port, http.port  # type: ignore[misc]


async def test_rtmp_play_needs_the_token(demo_frames) -> None:  # type: ignore[no-untyped-def]
    async with guarded(demo_frames) as (engine, rtmp, http):
        for name, code in (("cam", "NetStream.Play.Failed"), (f"cam?token={TOKEN}", "NetStream.Play.Reset")):
            client = await RawClient.open(rtmp)
            await client.connect("live", rtmp)
            stream_id = await client.create_stream()
            client.session.play(stream_id, name)
            await client.flush()
            with trio.fail_after(5):
                assert (await client.command()).info["code"] == code
            await client.aclose()
        assert engine.auth_throttle.refusals == 1


async def test_http_flv_and_ws_flv_need_the_token(demo_frames, http_get) -> None:  # type: ignore[no-untyped-def]
    async with guarded(demo_frames) as (engine, rtmp, http):
        status, headers, body = await http_get(http, "/live/cam.flv")
        assert status == 401 and b"refused: no token" in body and headers["www-authenticate"].startswith("Bearer")
        status, _, body = await http_get(http, "/live/cam.flv?token=nope")
        assert status == 403 and b"refused: wrong token" in body
        status, _, _ = await http_get(http, f"/live/cam.flv?token={TOKEN}", method="HEAD")
        assert status == 200
        ws = [
            ("upgrade", "websocket"),
            ("connection", "Upgrade"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ]
        status, _, _ = await http_get(http, "/live/cam.flv", headers=ws)
        assert status == 401
        assert engine.auth_throttle.refusals == 3


async def test_hls_needs_the_token_and_hands_it_on_to_segments(demo_frames, http_get) -> None:  # type: ignore[no-untyped-def]
    async with guarded(demo_frames) as (engine, rtmp, http):
        with trio.fail_after(10):
            while True:
                status, _, playlist, _ = await media_playlist(http_get, http, f"/live/cam/index.m3u8?token={TOKEN}")
                if status == 200:
                    break
                await trio.sleep(0.05)
        segments = uris(playlist)  # the token is handed on, with the player's session id
        assert segments and all(
            re.search(f"\\?token={TOKEN}&arcly_session=[A-Za-z0-9_-]{{16}}$", line) for line in segments
        ), segments
        status, _, data = await http_get(http, f"/live/cam/{segments[0]}")
        assert status == 200 and data[:1] == b"\x47"  # MPEG-TS sync byte
        bare = segments[0].split("?")[0]
        assert (await http_get(http, "/live/cam/index.m3u8"))[0] == 401
        assert (await http_get(http, f"/live/cam/{bare}"))[0] == 401
        assert (await http_get(http, f"/live/cam/{bare}?token=nope"))[0] == 403
        assert engine.auth_throttle.refusals == 3


async def test_the_frame_api_needs_the_token(demo_frames) -> None:  # type: ignore[no-untyped-def]
    async with guarded(demo_frames) as (engine, rtmp, http):
        with pytest.raises(FramesRefused) as refused, trio.fail_after(5):
            async with open_frames_subscription(f"ws://127.0.0.1:{http}/live/cam/frames"):
                pass
        assert refused.value.code == 4403
        with trio.fail_after(5):
            async with open_frames_subscription(f"ws://127.0.0.1:{http}/live/cam/frames?token={TOKEN}") as sub:
                async for frame in sub:
                    assert frame.config or frame.keyframe
                    break
        assert engine.auth_throttle.refusals == 1


# ------------------------------------------- issue 18: a credential names what it allows


SIGN_SECRET = "a-sign-secret-of-32-characters!!"


async def test_a_viewer_url_from_sign_never_publishes_and_the_streamers_jwt_does(capsys, demo_frames) -> None:  # type: ignore[no-untyped-def]
    """Issue 18, finding 1, its reproduction: with ``serve --sign-secret S``, the viewer URL of
    ``arcly-trio sign rtmp://HOST/live/cam --secret S`` published ``live/cam`` (so the real
    streamer's publish JWT was then refused: "already has a publisher"). Now it is refused for
    publishing over RTMP and over the ``/ingest`` WebSocket, still plays, and the streamer's
    URL (``sign --action publish``: a JWT naming publish) publishes.
    Mutants killed: a ``?sign=`` checked for every action with the one secret; ``sign``
    defaulting to ``--action *``."""
    assert cli_main(["sign", "rtmp://example.org/live/cam", "--secret", SIGN_SECRET]) == 0
    viewer = urlsplit(capsys.readouterr().out.strip()).query
    assert cli_main(["sign", "rtmp://example.org/live/cam", "--secret", SIGN_SECRET, "--action", "publish"]) == 0
    streamer = urlsplit(capsys.readouterr().out.strip()).query
    assert viewer.startswith("sign=") and streamer.startswith("jwt=")
    args = resolve_args(
        build_parser(),
        [
            "serve",
            "--host",
            HOST,
            *EPHEMERAL_PORTS,
            "--no-hls",
            "--sign-secret",
            SIGN_SECRET,
            "--auth-max-delay",
            "0.01",
        ],
    )
    runtime = build_runtime(args)
    engine = runtime.engine
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.serve)
        rtmp, http = runtime.rtmp.port, runtime.http.port  # type: ignore[union-attr]
        with trio.fail_after(10):
            with pytest.raises(RemoteRefused) as refused:
                async with open_rtmp_publisher(f"rtmp://{HOST}:{rtmp}/live/cam?{viewer}"):
                    pass
            assert refused.value.code == "NetStream.Publish.Denied" and "does not allow publish" in str(refused.value)
            with pytest.raises(FramesRefused) as closed:
                async with open_frames_publisher(f"ws://{HOST}:{http}/live/cam/ingest?{viewer}"):
                    pass
            assert closed.value.code == 4403
            assert not engine.has_stream(StreamKey("live", "cam"))
            async with open_rtmp_publisher(f"rtmp://{HOST}:{rtmp}/live/cam?{streamer}") as publisher:
                await publisher.send_frames([f for f in demo_frames[:40]])
                async with open_flv_player(f"http://{HOST}:{http}/live/cam.flv?{viewer}") as player:
                    assert await player.next_batch()  # the viewer URL plays
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    "tokens",
    [
        ["--publish-token", "same", "--play-token", "same"],
        ["--sign-secret", "s", "--publish-sign-secret", "s"],
        ["--publish-sign-secret", "p"],
    ],
)
def test_settings_where_a_viewer_credential_would_publish_stop_the_server(tokens: list[str]) -> None:
    args = resolve_args(build_parser(), ["serve", "--rtmp-port", "0", "--http-port", "-1", *tokens])
    with pytest.raises(SystemExit, match="differ|needs --sign-secret"):
        build_runtime(args)


async def test_a_publish_sign_secret_makes_an_nms_publish_url(capsys, demo_frames) -> None:  # type: ignore[no-untyped-def]
    assert (
        cli_main(
            ["sign", "rtmp://example.org/live/cam", "--action", "publish", "--publish-sign-secret", "for-streamers"]
        )
        == 0
    )
    streamer = urlsplit(capsys.readouterr().out.strip()).query
    assert streamer.startswith("sign=")
    assert cli_main(["sign", "rtmp://example.org/live/cam", "--action", "*", "--secret", SIGN_SECRET]) == 0
    both = urlsplit(capsys.readouterr().out.strip()).query
    assert both.startswith("jwt=")  # both actions: a JWT, never a ?sign=
    args = resolve_args(
        build_parser(),
        [
            "serve",
            "--host",
            HOST,
            "--rtmp-port",
            "0",
            "--rtsp-port",
            "-1",
            "--http-port",
            "-1",
            "--no-hls",
            "--sign-secret",
            SIGN_SECRET,
            "--publish-sign-secret",
            "for-streamers",
        ],
    )
    engine = build_runtime(args).engine
    async with engine:
        async with engine.publish("live/cam", Credentials(query=dict(parse_qsl(streamer)))):
            pass
        with pytest.raises(Unauthorized, match="wrong signature"):
            async with engine.subscribe("live/cam", Credentials(query=dict(parse_qsl(streamer)))):
                pass


# ------------------------------------------- regressions no other test would catch


async def test_ll_hls_parts_segments_and_init_need_the_play_token(demo_frames, http_get) -> None:  # type: ignore[no-untyped-def]
    """Every media URI of an LL-HLS playlist (fMP4 segments ``.m4s``, parts ``NAME.N.m4s``, the
    init segment ``.mp4``) is refused without the token and served with it.
    Mutants killed: the HLS routes skipping authorization for LL-HLS parts (names with two
    dots), or for every ``.m4s``."""
    http = HttpServer(HOST, 0, max_pending_per_address=None)
    engine = (
        Engine.builder()
        .application(AppSpec("live", hls=True, audio_hold=0))
        .service(HlsService(variant="ll", target_duration=1))
        .authenticator(TokenAuthenticator(play_token=TOKEN))
        .auth_throttle(AuthThrottle(base_delay=0.001, max_delay=0.001))
        .protocol(http)
        .build()
    )
    async with engine, engine.publish("live/cam") as publisher:
        for frame in demo_frames[:300]:  # several 1 s segments, each in parts
            await publisher.send(frame)
        with trio.fail_after(10):
            while True:
                status, _, playlist = await http_get(http.port, f"/live/cam/video.m3u8?token={TOKEN}")
                text = playlist.decode()
                if status == 200 and "#EXT-X-PART:" in text and re.search(r"^[^#].*\.m4s", text, re.M):
                    break
                await trio.sleep(0.05)
        uris = [
            uri.split("?")[0]
            for uri in re.findall(r'URI="([^"]+)"', text)
            + [line for line in text.splitlines() if line and not line.startswith("#")]
        ]
        parts = [uri for uri in uris if uri.count(".") == 2 and uri.endswith(".m4s")]
        segments = [uri for uri in uris if uri.count(".") == 1 and uri.endswith(".m4s")]
        inits = [uri for uri in uris if uri.endswith(".mp4")]
        assert parts and segments and inits, text
        hinted = re.search(r'#EXT-X-PRELOAD-HINT:.*URI="([^"?]+)', text)
        stored_parts = [uri for uri in parts if not hinted or uri != hinted.group(1)]
        for uri in (*stored_parts[-2:], *segments[-2:], inits[0]):
            assert (await http_get(http.port, f"/live/cam/{uri}"))[0] == 401, uri
            assert (await http_get(http.port, f"/live/cam/{uri}?token=nope"))[0] == 403, uri
            status, _, body = await http_get(http.port, f"/live/cam/{uri}?token={TOKEN}")
            assert status == 200 and body[4:8] in (b"ftyp", b"moof", b"styp"), (uri, status, body[:8])


async def test_a_refused_play_opens_no_upstream_connection(http_get) -> None:  # type: ignore[no-untyped-def]
    """A play of a stream that is not here asks the pull upstream only once it is authorized:
    refused plays over RTMP, HTTP-FLV, the frame API, HLS and in process open no connection to
    the upstream; an authorized one does (so the upstream would see one).
    Mutant killed: ``Engine`` starting the pull (``_from_sources``) before authorizing."""
    async with trio.open_nursery() as outer:
        upstream_port, upstream = await outer.start(black_hole)
        pull = PullSource({None: f"rtmp://{HOST}:{upstream_port}/{{app}}/{{stream}}"}, timeout=1)
        rtmp, http = RtmpServer(HOST, 0), HttpServer(HOST, 0)
        engine = (
            Engine.builder()
            .application(AppSpec("live", hls=True))
            .service(HlsService(variant="ts"))
            .authenticator(TokenAuthenticator(play_token=TOKEN))
            .source(pull)
            .auth_throttle(AuthThrottle(base_delay=0.001, max_delay=0.001))
            .protocol(rtmp)
            .protocol(http)
            .build()
        )
        async with engine:
            client = await RawClient.open(rtmp.port)
            await client.connect("live", rtmp.port)
            stream_id = await client.create_stream()
            client.session.play(stream_id, "elsewhere")
            await client.flush()
            with trio.fail_after(5):
                assert (await client.command()).info["code"] == "NetStream.Play.Failed"
            await client.aclose()
            assert (await http_get(http.port, "/live/elsewhere.flv"))[0] == 401
            assert (await http_get(http.port, "/live/elsewhere.flv?token=nope"))[0] == 403
            assert (await http_get(http.port, "/live/elsewhere/index.m3u8"))[0] == 401
            with pytest.raises(FramesRefused), trio.fail_after(5):
                async with open_frames_subscription(f"ws://{HOST}:{http.port}/live/elsewhere/frames"):
                    pass
            with pytest.raises(Unauthorized):
                async with engine.subscribe("live/elsewhere", Credentials(token="nope")):
                    pass
            await trio.sleep(0.2)  # a pull started anyway would have connected by now
            assert upstream["most"] == 0 and not engine.sourcing.active
            assert engine.auth_throttle.refusals == 6
            # The control: an authorized play does ask the upstream (which never answers).
            status, _, _ = await http_get(http.port, f"/live/elsewhere.flv?token={TOKEN}")
            assert status == 404 and upstream["most"] == 1
        outer.cancel_scope.cancel()
