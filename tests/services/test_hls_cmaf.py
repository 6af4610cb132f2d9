"""The HLS service's CMAF variants over HTTP: LL-HLS blocking reloads, preload hints, DASH,
tokens carried on, discontinuities, the end of a stream and shutdown, storage clean-up, and the
cost of many blocked requests (they wait on one condition per stream, hold busy connection slots
and count as activity; a disconnect storm leaks nothing).

Frames are published in-process and by hand, so each test decides exactly when a part is
complete; sockets are real (localhost, port 0), and every wait has a ``fail_after``.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import m3u8
import pytest
import trio
import trio.testing

from arcly_trio import AppSpec, Credentials, Engine, Frame, FrameKind, StreamKey
from arcly_trio.core.errors import StreamError
from arcly_trio.kernel.auth import TokenAuthenticator
from arcly_trio.media import llhls
from arcly_trio.services import HlsService
from arcly_trio.storage import MemoryStorage
from arcly_trio.workers.http import HttpServer
from tests._serving import wait_until
from tests._tools import stuffed


@asynccontextmanager
async def llhls_server(**options: Any) -> AsyncIterator[tuple[Engine, HttpServer, HlsService]]:
    apps = options.pop("apps", None) or [AppSpec("live", hls=True, audio_hold=0)]
    hub = options.pop("session_hub", None)
    http = HttpServer("127.0.0.1", 0, max_connections=options.pop("max_connections", 1024),
                      max_pending_per_address=None, **({} if hub is None else {"session_hub": hub}))  # fmt: skip
    auth = options.pop("authenticator", None)
    storage = options.pop("storage", None)  # not ``or``: an empty storage is falsy (``__len__``)
    hls = HlsService(storage if storage is not None else MemoryStorage(), **options)
    builder = Engine.builder().service(hls).protocol(http)
    for app in apps:
        builder.application(app)
    if auth is not None:
        builder.authenticator(auth)
    async with builder.build() as engine:
        yield engine, http, hls


wait_for = functools.partial(wait_until, poll=0.005, timeout=5.0)


def media(demo_frames: list[Frame]) -> tuple[list[Frame], list[Frame]]:
    configs = [f for f in demo_frames if f.config]
    return configs, [f for f in demo_frames if not f.config]


async def feed_until(publisher: Any, frames: list[Frame], pos: int, predicate: Any) -> int:
    """Send frames from ``pos`` until ``predicate()`` holds after a send; the next position."""
    while not predicate():
        await publisher.send(frames[pos])
        pos += 1
        await trio.sleep(0.001)
    return pos


def stored(hls: HlsService) -> bool:
    """The stream's lists are stored as its packager holds them."""
    live = hls.live.get("live/demo")
    return live is not None and live.current


def video_of(hls: HlsService) -> Any:
    return hls.live["live/demo"].packager.renditions[FrameKind.VIDEO]


async def packaged(publisher: Any, demo_frames: list[Frame], hls: HlsService,
                   more: Any = lambda: True) -> tuple[list[Frame], int]:  # fmt: skip
    """Send the configs, then media frames until the video rendition exists and ``more()``;
    the media frames and the position of the next one to send."""
    configs, frames = media(demo_frames)
    for frame in configs:
        await publisher.send(frame)
    pos = await feed_until(publisher, frames, 0, lambda: "live/demo" in hls.live and
                           FrameKind.VIDEO in hls.live["live/demo"].packager.renditions and more())  # fmt: skip
    return frames, pos


async def test_blocking_reload_answers_right_after_the_part_and_400s_too_far(demo_frames, http_get) -> None:  # type: ignore[no-untyped-def]
    async with llhls_server() as (engine, http, hls), engine.publish("live/demo") as publisher:
        frames, pos = await packaged(publisher, demo_frames, hls, lambda: len(video_of(hls).open_parts) >= 2)
        video = video_of(hls)
        msn, part = video.open_sequence, len(video.open_parts)
        answered: list[float] = []
        result: dict[str, Any] = {}

        async def blocked() -> None:
            result["response"] = await http_get(http.port, f"/live/demo/video.m3u8?_HLS_msn={msn}&_HLS_part={part}")
            answered.append(trio.current_time())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(blocked)
            await wait_for(lambda: hls.live["live/demo"].waiting == 1)
            await trio.sleep(0.2)
            assert not answered, "answered before the part existed"
            created = None
            while created is None:  # send frames until the part is made
                await publisher.send(frames[pos])
                pos += 1
                await trio.sleep(0.01)  # the service packages it
                if len(video_of(hls).open_parts) > part or video_of(hls).open_sequence != msn:
                    created = trio.current_time()
            await wait_for(lambda: bool(answered), timeout=hls.part_duration)
        assert answered[0] - created < hls.part_duration
        status, headers, body = result["response"]
        assert status == 200 and headers["content-type"] == "application/vnd.apple.mpegurl"
        playlist = m3u8.loads(body.decode())
        uris = [p.uri.partition("?")[0] for s in playlist.segments for p in s.parts]  # less the session id
        assert f"{video.init.split('-')[0]}-v-{msn}.{part}.m4s" in uris
        # Too far ahead: 400 at once; malformed: 400; _HLS_part alone: 400.
        live_msn, have = video_of(hls).open_sequence, len(video_of(hls).open_parts)
        for query in (
            f"_HLS_msn={live_msn + 2}",
            f"_HLS_msn={live_msn}&_HLS_part={have + 20}",
            "_HLS_msn=x",
            "_HLS_part=1",
            "_HLS_skip=yes",
        ):
            with trio.fail_after(1):
                status, _, body = await http_get(http.port, f"/live/demo/video.m3u8?{query}")
            assert status == 400, (query, body)
        # Already there: at once.
        with trio.fail_after(1):
            assert (await http_get(http.port, f"/live/demo/video.m3u8?_HLS_msn={msn}&_HLS_part=0"))[0] == 200
            # no DVR window, nothing to skip: no CAN-SKIP-UNTIL, and a skip request gets the full playlist
            status, _, body = await http_get(
                http.port, f"/live/demo/video.m3u8?_HLS_msn={msn}&_HLS_part=0&_HLS_skip=YES"
            )
        assert status == 200 and b"#EXT-X-MEDIA-SEQUENCE:" in body and b"SKIP" not in body, body


class GatedStorage(MemoryStorage):
    """A storage whose video playlist writes wait while :attr:`gate` is set and not open (a
    slow disk): the packager is then ahead of the stored lists for as long as a test likes."""

    def __init__(self) -> None:
        super().__init__()
        self.gate: trio.Event | None = None
        self.held = 0

    async def put(self, key: str, data: bytes) -> None:
        if self.gate is not None and key.endswith("/video.m3u8"):
            self.held += 1
            await self.gate.wait()
        await super().put(key, data)


async def test_a_blocking_reload_waits_until_the_new_playlist_is_stored(demo_frames, http_get) -> None:  # type: ignore[no-untyped-def]
    """The packager has made the requested part but its playlist is still being written: a
    request for that part arriving now waits for the write, and its answer lists the part.
    Mutant killed: ``_block`` answering once the packager is ready without ``live.current``
    (the old stored playlist, without the part, went out; the other blocking tests catch it
    only when the request happens to be scheduled inside the storage's one checkpoint)."""
    storage = GatedStorage()
    async with llhls_server(storage=storage) as (engine, http, hls), engine.publish("live/demo") as publisher:
        frames, pos = await packaged(
            publisher, demo_frames, hls, lambda: stored(hls) and bool(video_of(hls).open_parts)
        )
        video = video_of(hls)
        msn, part = video.open_sequence, len(video.open_parts)
        storage.gate = trio.Event()
        pos = await feed_until(publisher, frames, pos, lambda: storage.held > 0)  # the part is made, not listed
        live = hls.live["live/demo"]
        assert llhls.reload_state(live.packager, FrameKind.VIDEO, msn, part) is llhls.ReloadState.READY
        assert not live.current
        result: dict[str, Any] = {}

        async def blocked() -> None:
            result["response"] = await http_get(http.port, f"/live/demo/video.m3u8?_HLS_msn={msn}&_HLS_part={part}")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(blocked)
            await wait_for(lambda: live.waiting == 1 or "response" in result)
            storage.gate.set()
        status, _, body = result["response"]
        assert status == 200
        uris = [p.uri.partition("?")[0] for s in m3u8.loads(body.decode()).segments for p in s.parts]
        assert f"{video.init.split('-')[0]}-v-{msn}.{part}.m4s" in uris, body.decode()


async def test_blocked_request_times_out_with_503_when_the_stream_stalls(demo_frames, http_get) -> None:  # type: ignore[no-untyped-def]
    configs, frames = media(demo_frames)
    async with (
        llhls_server(target_duration=0.5, part_duration=0.2) as (engine, http, hls),
        engine.publish("live/demo") as publisher,
    ):
        for frame in configs + frames[:40]:
            await publisher.send(frame)
        await wait_for(lambda: "live/demo" in hls.live and video_of(hls).open_sequence is not None)
        msn = video_of(hls).open_sequence
        start = trio.current_time()
        status, headers, _ = await http_get(http.port, f"/live/demo/video.m3u8?_HLS_msn={msn + 1}")
        assert status == 503 and headers["retry-after"] == "1"
        # Three times EXT-X-TARGETDURATION (0.5 s segments: 1 s).
        assert 3 <= trio.current_time() - start < 4.5


async def test_preload_hinted_part_is_answered_when_it_is_made(demo_frames, http_get) -> None:  # type: ignore[no-untyped-def]
    async with llhls_server() as (engine, http, hls), engine.publish("live/demo") as publisher:
        frames, pos = await packaged(publisher, demo_frames, hls)
        hint = video_of(hls).hint
        assert hint is not None
        got: dict[str, Any] = {}

        async def fetch() -> None:
            got["response"] = await http_get(http.port, f"/live/demo/{hint}")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(fetch)
            await wait_for(lambda: hls.live["live/demo"].waiting == 1)
            await feed_until(publisher, frames, pos, lambda: "response" in got)
        status, headers, body = got["response"]
        assert status == 200 and headers["content-type"] == "video/iso.segment" and body[4:8] == b"moof"
        # A name that is neither stored nor hinted: 404 at once.
        with trio.fail_after(1):
            assert (await http_get(http.port, "/live/demo/nope-v-99.3.m4s"))[0] == 404


async def test_token_is_required_and_carried_on_every_uri(demo_frames, http_get) -> None:  # type: ignore[no-untyped-def]
    auth = TokenAuthenticator(play_token="s3cret")
    async with (
        llhls_server(authenticator=auth) as (engine, http, hls),
        engine.publish("live/demo", Credentials(token=None)) as publisher,
    ):
        for frame in demo_frames[:200]:
            await publisher.send(frame)
        await wait_for(lambda: "live/demo" in hls.live and video_of(hls).segments and stored(hls))
        for name in ("index.m3u8", "video.m3u8", "index.mpd"):
            assert (await http_get(http.port, f"/live/demo/{name}"))[0] == 401
        _, _, master = await http_get(http.port, "/live/demo/index.m3u8?token=s3cret")
        carried = re.search(r'URI="audio.m3u8\?(token=s3cret&arcly_session=[A-Za-z0-9_-]{16})"', master.decode())
        assert carried is not None and f"video.m3u8?{carried.group(1)}" in master.decode()  # and the session id
        _, _, playlist = await http_get(http.port, f"/live/demo/video.m3u8?{carried.group(1)}&_HLS_msn=0&_HLS_part=0")
        text = playlist.decode()
        uris = re.findall(r'URI="([^"]+)"', text) + [line for line in text.splitlines() if line and line[0] != "#"]
        assert uris and all(uri.endswith(f"?{carried.group(1)}") for uri in uris), text
        assert "_HLS_" not in text
        _, _, mpd = await http_get(http.port, "/live/demo/index.mpd?token=s3cret")
        assert len(re.findall(rb"\.m4s\?token=s3cret&amp;arcly_session=", mpd)) == 2
        assert len(re.findall(rb"\.mp4\?token=s3cret&amp;arcly_session=", mpd)) == 2
        init = re.search(r'MAP:URI="([^"?]+)', text)
        assert init is not None
        assert (await http_get(http.port, f"/live/demo/{init.group(1)}"))[0] == 401
        status, headers, body = await http_get(http.port, f"/live/demo/{init.group(1)}?token=s3cret")
        assert status == 200 and headers["content-type"] == "video/mp4" and body[4:8] == b"ftyp"


async def block_next_segment(nursery: trio.Nursery, http_get: Any, port: int, hls: HlsService, count: int,
                             results: list[Any]) -> None:  # fmt: skip
    """Start ``count`` requests for the segment after the one in progress; return once all wait
    (their responses go to ``results``)."""
    msn = video_of(hls).open_sequence

    async def blocked() -> None:
        results.append(await http_get(port, f"/live/demo/video.m3u8?_HLS_msn={msn + 1}"))

    for _ in range(count):
        nursery.start_soon(blocked)
    await wait_for(lambda: hls.live["live/demo"].waiting == count)


async def test_ended_stream_lists_end_and_waiters_get_the_final_playlist(demo_frames, http_get) -> None:  # type: ignore[no-untyped-def]
    configs, frames = media(demo_frames)
    results: list[Any] = []
    async with llhls_server() as (engine, http, hls):
        async with trio.open_nursery() as nursery:
            async with engine.publish("live/demo") as publisher:
                for frame in configs + frames[:100]:
                    await publisher.send(frame)
                await wait_for(
                    lambda: "live/demo" in hls.live and FrameKind.VIDEO in hls.live["live/demo"].packager.renditions
                )
                await block_next_segment(nursery, http_get, http.port, hls, 5, results)
            # The publisher left: the stream ends, and so do the waits.
        assert [r[0] for r in results] == [200] * 5
        assert all(b"#EXT-X-ENDLIST" in r[2] for r in results)
        _, _, mpd = await http_get(http.port, "/live/demo/index.mpd")
        assert b'type="static"' in mpd and b"mediaPresentationDuration" in mpd


async def test_shutdown_answers_blocked_requests_with_the_final_playlist(demo_frames, http_get) -> None:  # type: ignore[no-untyped-def]
    configs, frames = media(demo_frames)
    results: list[Any] = []
    async with llhls_server(linger=0.5) as (engine, http, hls):

        async def publish(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            try:
                async with engine.publish("live/demo") as publisher:
                    for frame in configs + frames[:100]:
                        await publisher.send(frame)
                    task_status.started()
                    await trio.sleep_forever()
            except StreamError:
                pass  # the publish ended with the engine

        async with trio.open_nursery() as nursery:
            await nursery.start(publish)
            await wait_for(
                lambda: "live/demo" in hls.live and FrameKind.VIDEO in hls.live["live/demo"].packager.renditions
            )
            await block_next_segment(nursery, http_get, http.port, hls, 3, results)
            assert engine.activity.count >= 3
            with trio.fail_after(5):
                await engine.shutdown(grace=3)
    assert [r[0] for r in results] == [200] * 3 and all(b"#EXT-X-ENDLIST" in r[2] for r in results)


async def test_a_new_session_is_a_discontinuity_in_playlists_and_a_new_period(demo_frames, http_get) -> None:  # type: ignore[no-untyped-def]
    async with llhls_server(apps=[AppSpec("live", hls=True, reconnect_grace=5)], window=10) as (engine, http, hls):
        async with engine.publish("live/demo") as publisher:
            for frame in demo_frames[:200]:
                await publisher.send(frame)
            await wait_for(lambda: "live/demo" in hls.live and video_of(hls).segments)
        async with engine.publish("live/demo") as publisher:
            for frame in demo_frames:
                await publisher.send(frame)
            await wait_for(lambda: len(video_of(hls).segments) >= 4 and stored(hls))
            _, _, playlist = await http_get(http.port, "/live/demo/video.m3u8")
            _, _, mpd = await http_get(http.port, "/live/demo/index.mpd")
        parsed = m3u8.loads(playlist.decode())
        assert [s.discontinuity for s in parsed.segments if s.uri].count(True) == 1
        assert mpd.count(b"<Period ") == 2


async def test_expired_resources_are_deleted_after_the_delay_and_never_while_listed(
    demo_frames, autojump_clock
) -> None:  # type: ignore[no-untyped-def]
    storage = ListingStorage()
    hls = HlsService(storage, window=2, delete_delay=2.0, target_duration=1.0)
    async with Engine.builder().service(hls).application(AppSpec("live", hls=True)).build() as engine:
        async with engine.publish("live/demo") as publisher:
            start = trio.current_time()
            for frame in demo_frames:
                await trio.sleep_until(start + frame.dts / 1000)
                await publisher.send(frame)
        await wait_for(lambda: not hls.streams)
        assert storage.deleted, "resources that left the lists were deleted"
        assert await storage.list("live/demo/") != []
        await trio.sleep(max(hls.delete_delay, hls.part_delete_delay) + 0.5)
        assert await storage.list() == []
    assert storage.violations == []


class ListingStorage(MemoryStorage):
    """Records deletions of a name that a stored list still names, or deleted before it left."""

    def __init__(self) -> None:
        super().__init__()
        self.deleted: list[str] = []
        self.violations: list[str] = []

    def _listed(self) -> set[str]:
        names: set[str] = set()
        for key, value in self._objects.items():
            if key.endswith((".m3u8", ".mpd")):
                text = bytes(value).decode()
                base = key.rpartition("/")[0]
                names |= {f"{base}/{n}" for n in re.findall(r'URI="([^"]+)"', text)}
                names |= {
                    f"{base}/{line}"
                    for line in text.splitlines()
                    if line and line[0] != "#" and not line.startswith("<")
                }
        return names

    async def delete(self, key: str) -> None:
        if not key.endswith((".m3u8", ".mpd")) and key in self._listed():
            self.violations.append(f"{key} deleted while listed")
        self.deleted.append(key)
        await super().delete(key)


async def test_the_api_says_what_each_variant_carries(demo_frames, http_get) -> None:  # type: ignore[no-untyped-def]
    opus_head = b"OpusHead\x01\x02\x38\x01\x80\xbb\x00\x00\x00\x00\x00"
    video = [f for f in demo_frames if f.kind is FrameKind.VIDEO]
    async with llhls_server() as (engine, http, hls), engine.publish("live/demo") as publisher:
        await publisher.send(Frame(FrameKind.AUDIO, "opus", 0, 0, opus_head, config=True))
        for frame in video[:80]:
            await publisher.send(frame)
            if not frame.config:
                await publisher.send(Frame(FrameKind.AUDIO, "opus", frame.dts, frame.dts, b"\xfc\xff\xfe"))
        await wait_for(
            lambda: (
                "live/demo" in hls.live
                and FrameKind.AUDIO in hls.live["live/demo"].packager.renditions
                and bool(video_of(hls).segments)
                and stored(hls)
            )
        )
        _, _, body = await http_get(http.port, "/api/streams")
        stream = json.loads(body)["apps"][0]["streams"][0]
        tracks = stream["hls_tracks"]
        assert tracks["variant"] == "ll" and tracks["carried"] == ["h264 video", "opus audio"]
        assert tracks["left_out"] == [] and tracks["by_variant"]["ts"]["leaves_out"] == ["opus audio"]
        assert stream["dash"] == "/live/demo/index.mpd"
        _, _, master = await http_get(http.port, "/live/demo/index.m3u8")
        assert 'CODECS="avc1.4d401e,opus"' in master.decode()


# --- many blocked requests ---------------------------------------------------------------------


async def open_blocked(port: int, target: str) -> trio.SocketStream:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return stream


@pytest.mark.parametrize("count", [1000])
async def test_a_thousand_blocked_requests_then_a_disconnect_storm_leak_nothing(
    demo_frames, http_get, count: int
) -> None:  # type: ignore[no-untyped-def]
    async with (
        llhls_server(max_connections=count + 64) as (engine, http, hls),
        engine.publish("live/demo") as publisher,
    ):
        frames, pos = await packaged(publisher, demo_frames, hls)
        live = hls.live["live/demo"]
        msn = video_of(hls).open_sequence
        baseline_activity = engine.activity.count
        with trio.fail_after(60):
            streams = [await open_blocked(http.port, f"/live/demo/video.m3u8?_HLS_msn={msn + 1}") for _ in range(count)]
            await wait_for(lambda: live.waiting == count, timeout=30)
        # Each waits on the stream's one condition: no task of its own, busy slots, activity.
        assert http.connections == count and engine.activity.count == baseline_activity + count
        assert http.admission.open == count
        # The storm: every client goes away without a word.
        for stream in streams:
            stream.socket.close()
        # The next segment wakes them all; each finds its client gone.
        with trio.fail_after(30):
            await feed_until(publisher, frames, pos, lambda: live.waiting == 0)
            await wait_for(lambda: http.admission.open == 0 and http.connections == 0, timeout=20)
        assert engine.activity.count == baseline_activity
        assert live.waiting == 0
        status, _, _ = await http_get(http.port, "/live/demo/index.m3u8")
        assert status == 200


async def test_a_publisher_flapping_configs_and_jumping_timestamps_keeps_storage_bounded(
    demo_frames, autojump_clock
) -> None:  # type: ignore[no-untyped-def]
    """Attack: a publisher that changes its audio config at every keyframe and makes its
    timestamps jump every few frames forces a new init segment, a discontinuity and a new
    period each time. What is stored stays bounded by the window (old inits, segments, parts
    and epochs expire), and the packaging goes on."""
    storage = MemoryStorage()
    hls = HlsService(storage, window=3, delete_delay=0.0)
    configs, frames = media(demo_frames)
    asc = [bytes([0x12, 0x08]), bytes([0x12, 0x10])]  # AAC-LC 44.1 kHz, mono then stereo
    async with Engine.builder().service(hls).application(AppSpec("live", hls=True)).build() as engine:
        async with engine.publish("live/demo") as publisher:
            for frame in configs:
                await publisher.send(frame)
            offset = 0
            sizes: list[int] = []
            for round_ in range(12):
                for i, frame in enumerate(frames[:150]):
                    if frame.keyframe:
                        await publisher.send(Frame(FrameKind.AUDIO, "aac", frame.dts + offset, frame.dts + offset,
                                                   asc[(round_ + i) % 2], config=True))  # fmt: skip
                    if i % 40 == 39:
                        offset += 60_000  # a jump
                    await publisher.send(Frame(frame.kind, frame.codec, frame.pts + offset, frame.dts + offset,
                                               frame.payload, frame.keyframe))  # fmt: skip
                offset += 10_000
                await wait_for(lambda: "live/demo" in hls.live and stored(hls))
                await trio.sleep(hls.part_delete_delay + 0.1)  # what expired is deleted by now
                keys = await storage.list("live/demo/")
                packager = hls.live["live/demo"].packager
                sizes.append(len(keys))
                assert len(keys) < 80, len(keys)
                assert len(packager.epochs) <= packager.window + 2
    assert hls.bad_frames == 0
    assert max(sizes[4:]) <= max(sizes[:4]), sizes  # flat, not growing


@pytest.mark.parametrize("variant", ["ts", "fmp4", "ll"])
async def test_a_fast_publisher_cannot_make_a_stream_hold_more_than_its_cap(
    demo_frames,
    autojump_clock,
    caplog,  # type: ignore[no-untyped-def]
    variant,
) -> None:
    """Attack (issue 18, finding 11): a publisher at 416 Mbit/s took the server from 54 MB to
    564 MB, mostly the HLS window kept in memory. Here video frames of 60 KB at 30 fps (14 Mbit/s:
    about 40 MB for the default window and delete delays) against a cap of 2 MiB: what the
    stream holds in storage, counted in real bytes, stays under the cap (oldest segments and
    parts deleted early, never while a stored list names them, logged once, counted); the
    ledger agrees with the storage. Mutant killed: no byte cap."""
    cap = 2 * 1024 * 1024
    storage = ListingStorage()
    hls = HlsService(storage, variant=variant, max_bytes=cap)
    configs, frames = media(demo_frames)
    samples: list[int] = []
    async with Engine.builder().service(hls).application(AppSpec("live", hls=True)).build() as engine:
        async with engine.publish("live/demo") as publisher:
            for frame in configs:
                await publisher.send(frame)
            start = trio.current_time()
            for loop in range(2):  # 20 s of stuffed video (the clip twice, on one timeline)
                for frame in frames:
                    dts = frame.dts + 10_100 * loop
                    await trio.sleep_until(start + dts / 1000)
                    await publisher.send(
                        stuffed(
                            Frame(
                                frame.kind, frame.codec, frame.pts + 10_100 * loop, dts, frame.payload, frame.keyframe
                            ),
                            60_000,
                        )
                    )
                    if frame.keyframe:
                        await trio.testing.wait_all_tasks_blocked()
                        samples.append(storage.size)
                        assert hls.streams["live/demo"].held.total == storage.size  # the ledger is true
            status = hls.stream_status(publisher.key)["hls_tracks"]
        await wait_for(lambda: not hls.streams)
    assert max(samples) <= cap, samples
    assert hls.dropped_early > 0 and status["dropped_early"] > 0  # type: ignore[index]
    assert storage.violations == []
    assert sum("holds more than its cap" in r.getMessage() for r in caplog.records) == 1


# --- issue 19: what players and operators see ------------------------------------------------


async def test_a_request_for_the_next_dash_segment_waits_for_it_instead_of_404(demo_frames, http_get) -> None:  # type: ignore[no-untyped-def]
    # DASH players ask for the segment after the last one the MPD lists as soon as they have read
    # it; ffmpeg's dashdemux skipped to the next number on each 404 (hundreds of 404s a second,
    # then audio timestamps that went back 2 s when it fell back). Such a request waits for the
    # segment; one further ahead is a 404 at once.
    async with llhls_server() as (engine, http, hls), engine.publish("live/demo") as publisher:
        frames, pos = await packaged(publisher, demo_frames, hls, lambda: bool(video_of(hls).segments))
        packager = hls.live["live/demo"].packager
        coming = packager.segment_name(packager.renditions[FrameKind.AUDIO], packager.next_sequence)
        too_far = packager.segment_name(packager.renditions[FrameKind.AUDIO], packager.next_sequence + 1)
        got: dict[str, Any] = {}

        async def fetch() -> None:
            got["response"] = await http_get(http.port, f"/live/demo/{coming}")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(fetch)
            await wait_for(lambda: hls.live["live/demo"].waiting == 1)
            with trio.fail_after(1):
                assert (await http_get(http.port, f"/live/demo/{too_far}"))[0] == 404
            assert "response" not in got
            await feed_until(publisher, frames, pos, lambda: "response" in got)
        status, headers, body = got["response"]
        assert status == 200 and headers["content-type"] == "video/iso.segment" and body[4:8] == b"moof"
        assert any(s.name == coming for s in packager.renditions[FrameKind.AUDIO].segments)


async def test_mpegts_hls_of_av1_and_opus_says_why_there_is_none(caplog, demo_frames, http_get) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.INFO, logger="arcly_trio")
    apps = [AppSpec("live", hls=True, hls_variant="ts")]
    async with llhls_server(apps=apps) as (engine, http, hls), engine.publish("live/av1") as publisher:
        await publisher.send(Frame(FrameKind.VIDEO, "av1", 0, 0, b"\x81\x00\x0c\x00", config=True))
        await publisher.send(Frame(FrameKind.AUDIO, "opus", 0, 0, OPUS_HEAD, config=True))
        for t in range(0, 3000, 20):
            await publisher.send(Frame(FrameKind.VIDEO, "av1", t, t, b"\x12\x00\x32\x00", keyframe=t % 1000 == 0))
            await publisher.send(Frame(FrameKind.AUDIO, "opus", t, t, b"\xfc\xff\xfe"))
        await wait_for(lambda: hls.unavailable(StreamKey("live", "av1")) is not None)
        status, _, body = await http_get(http.port, "/live/av1/index.m3u8")
        text = body.decode()
        assert status == 404 and "not published" not in text
        assert "video is AV1 and audio is Opus, which MPEG-TS HLS" in text and "/live/av1.flv" in text, text
        assert "--hls-variant ll" in text, text
        _, _, api = await http_get(http.port, "/api/streams")
        (stream,) = json.loads(api)["apps"][0]["streams"]
        assert stream["hls"] is None and "dash" not in stream
        assert stream["hls_tracks"]["unavailable"] == text.split(": ", 1)[1].strip()
    lines = [r.getMessage() for r in caplog.records if "cannot carry" in r.getMessage()]
    assert len(lines) == 1 and "av1 video, opus audio" in lines[0], lines


OPUS_HEAD = b"OpusHead\x01\x02\x38\x01\x80\xbb\x00\x00\x00\x00\x00"


async def test_a_muxed_stream_holds_its_hinted_part_and_its_next_segment_until_made(demo_frames, http_get) -> None:  # type: ignore[no-untyped-def]
    # hls_muxed: the preload hint and the segment being written are the muxed rendition's
    # (``m``) names; requests for them wait for them (as for video.m3u8's), and the part has a
    # traf per track. Mutants killed: the hint/segment checks looking at the per-track
    # renditions (their names are never stored when muxed: 404 at once).
    apps = [AppSpec("live", hls=True, audio_hold=0, hls_muxed=True)]
    async with llhls_server(apps=apps) as (engine, http, hls), engine.publish("live/demo") as publisher:
        frames, pos = await packaged(publisher, demo_frames, hls, lambda: bool(video_of(hls).segments))
        packager = hls.live["live/demo"].packager
        muxed = packager.playlists[FrameKind.VIDEO]
        hint, coming = muxed.hint, packager.segment_name(muxed, packager.next_sequence)
        assert hint is not None and "-m-" in hint and "-m-" in coming
        got: dict[str, Any] = {}

        async def fetch(name: str) -> None:
            got[name] = await http_get(http.port, f"/live/demo/{name}")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(fetch, hint)
            nursery.start_soon(fetch, coming)
            await wait_for(lambda: hls.live["live/demo"].waiting == 2)
            await feed_until(publisher, frames, pos, lambda: len(got) == 2)
        for name in (hint, coming):
            status, headers, body = got[name]
            assert status == 200 and headers["content-type"] == "video/iso.segment" and body[4:8] == b"moof"
        assert body.count(b"traf") >= 2  # the segment's first part: video and audio
        with trio.fail_after(1):
            assert (await http_get(http.port, "/live/demo/audio.m3u8"))[0] == 404
