"""The thumbnail routes over real HTTP on loopback, with frames published in-process (the demo
clip: H.264 640x360, a keyframe every 2 s): JPEGs of the asked width, one decode per keyframe
and width under a flood, the bounds of every parameter, authorization, streams without video,
and recorded moments from fMP4 segments written with the project's muxer."""

from __future__ import annotations

import datetime
import pathlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio

from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.core.keys import StreamKey
from arcly_trio.kernel.auth import TokenAuthenticator
from arcly_trio.kernel.publish import Publisher
from arcly_trio.media.fmp4 import FragmentWriter, init_segment, track_from_config
from arcly_trio.services.recordings.catalog import Catalog, SegmentRecord, append_index, index_line, segment_name
from arcly_trio.services.thumbnails import Thumbnails, latest_keyframe
from tests._serving import find_stream, serving, wait_until

HttpGet = Callable[..., Any]


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a JPEG's SOF marker."""
    assert data[:2] == b"\xff\xd8", "not a JPEG"
    pos = 2
    while pos + 4 <= len(data):
        assert data[pos] == 0xFF
        marker = data[pos + 1]
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker in (0xC0, 0xC1, 0xC2):
            height = int.from_bytes(data[pos + 5 : pos + 7], "big")
            width = int.from_bytes(data[pos + 7 : pos + 9], "big")
            return width, height
        pos += 2 + length
    raise AssertionError("no SOF marker")


def _media(frames: list[Frame]) -> tuple[list[Frame], list[list[Frame]]]:
    """The clip's configs, and its media cut into GOPs (each starting at a video keyframe)."""
    configs = [f for f in frames if f.config]
    gops: list[list[Frame]] = []
    for frame in frames:
        if frame.config:
            continue
        if frame.kind is FrameKind.VIDEO and frame.keyframe:
            gops.append([])
        if gops:
            gops[-1].append(frame)
    return configs, gops


@attrs.frozen
class Thumbed:
    engine: Any
    http: Any
    thumbnails: Thumbnails


@asynccontextmanager
async def thumbs(**options: Any) -> AsyncIterator[Thumbed]:
    """An engine serving HTTP on loopback, with the :class:`Thumbnails` plugin."""
    thumbnails = Thumbnails()
    async with serving(observer=thumbnails, **options) as served:  # type: ignore[arg-type]
        yield Thumbed(served.engine, served.http, thumbnails)


@asynccontextmanager
async def published(served: Thumbed, frames: list[Frame], key: str = "live/t") -> AsyncIterator[Publisher]:
    """A publisher of ``key`` that has sent the clip's configs and first GOP."""
    configs, gops = _media(frames)
    async with served.engine.publish(key) as publisher:
        for frame in [*configs, *gops[0]]:
            await publisher.send(frame)
        await wait_until(lambda: _keyframe_is(served, key, gops[0][0]))
        yield publisher


def _keyframe_is(served: Thumbed, key: str, keyframe: Frame) -> bool:
    stream = find_stream(served.engine, key)
    found = latest_keyframe(stream.gop) if stream is not None else None
    return found is not None and found[1] is keyframe


async def test_live_thumbnail_is_a_jpeg_of_the_asked_width_and_cached_until_the_next_keyframe(
    demo_frames: list[Frame], http_get: HttpGet
) -> None:
    with trio.fail_after(20):
        async with thumbs() as served:
            async with published(served, demo_frames) as publisher:
                port = served.http.port
                status, headers, first = await http_get(port, "/live/t/thumbnail.jpg?width=160")
                assert status == 200, first
                assert headers["content-type"] == "image/jpeg"
                assert "max-age=1" in headers["cache-control"]
                assert jpeg_size(first) == (160, 90)  # 640x360: the height follows
                status, _, default = await http_get(port, "/live/t/thumbnail.jpg")
                assert status == 200 and jpeg_size(default) == (320, 180)
                assert served.thumbnails.decodes == 2
                status, _, again = await http_get(port, "/live/t/thumbnail.jpg?width=160")
                assert again == first and served.thumbnails.decodes == 2  # cached
                _, gops = _media(demo_frames)
                for frame in gops[2]:
                    await publisher.send(frame)
                await wait_until(lambda: _keyframe_is(served, "live/t", gops[2][0]))
                status, _, later = await http_get(port, "/live/t/thumbnail.jpg?width=160")
                assert status == 200 and jpeg_size(later) == (160, 90)
                assert later != first  # another keyframe, another picture
                assert served.thumbnails.decodes == 3
                assert StreamKey("live", "t") in served.thumbnails
            await wait_until(lambda: StreamKey("live", "t") not in served.thumbnails)  # the session ended


async def test_a_flood_costs_one_decode_per_keyframe_and_width(demo_frames: list[Frame], http_get: HttpGet) -> None:
    with trio.fail_after(30):
        async with thumbs() as served, published(served, demo_frames) as publisher:
            port = served.http.port
            bodies: list[bytes] = []

            async def one(width: int) -> None:
                status, _, body = await http_get(port, f"/live/t/thumbnail.jpg?width={width}", timeout=20)
                assert status == 200, body
                bodies.append(body)

            async with trio.open_nursery() as nursery:
                for index in range(50):
                    nursery.start_soon(one, 240 if index % 2 else 320)
            assert len(bodies) == 50
            assert served.thumbnails.decodes == 2  # one per width
            assert {jpeg_size(body) for body in bodies} == {(240, 136), (320, 180)}
            _, gops = _media(demo_frames)
            for frame in gops[1]:
                await publisher.send(frame)
            await wait_until(lambda: _keyframe_is(served, "live/t", gops[1][0]))
            async with trio.open_nursery() as nursery:
                for _ in range(20):
                    nursery.start_soon(one, 320)
            assert served.thumbnails.decodes == 3


async def test_widths_per_keyframe_are_bounded_the_rest_get_the_nearest(
    demo_frames: list[Frame], http_get: HttpGet
) -> None:
    with trio.fail_after(20):
        async with thumbs() as served, published(served, demo_frames):
            sizes = []
            for width in (100, 200, 300, 400, 1000, 110):
                status, _, body = await http_get(served.http.port, f"/live/t/thumbnail.jpg?width={width}")
                assert status == 200
                sizes.append(jpeg_size(body)[0])
            assert sizes == [100, 200, 300, 400, 400, 100]
            assert served.thumbnails.decodes == 4


@pytest.mark.parametrize("width", ["0", "15", "1921", "99999999", "abc", "-5", "1e3", "320.5", "%20320", "%00"])
async def test_bad_widths_are_400(demo_frames: list[Frame], http_get: HttpGet, width: str) -> None:
    with trio.fail_after(10):
        async with thumbs() as served:
            status, _, body = await http_get(served.http.port, f"/live/t/thumbnail.jpg?width={width}")
            assert status == 400, body
            assert served.thumbnails.decodes == 0


async def test_thumbnails_are_authorized_like_playback(demo_frames: list[Frame], http_get: HttpGet) -> None:
    with trio.fail_after(20):
        async with (
            thumbs(authenticator=TokenAuthenticator(play_token="s3cret")) as served,
            published(served, demo_frames),
        ):
            port = served.http.port
            status, headers, _ = await http_get(port, "/live/t/thumbnail.jpg")
            assert status == 401 and "www-authenticate" in headers
            status, _, _ = await http_get(port, "/live/t/thumbnail.jpg?token=wrong")
            assert status == 403
            status, _, _ = await http_get(port, "/live/t/playback.jpg?at=2026-12-07T01:00:00Z")
            assert status == 401
            assert served.thumbnails.decodes == 0
            status, _, body = await http_get(port, "/live/t/thumbnail.jpg?token=s3cret")
            assert status == 200 and jpeg_size(body) == (320, 180)


async def test_a_stream_without_video_or_not_live(demo_frames: list[Frame], http_get: HttpGet) -> None:
    configs, gops = _media(demo_frames)
    audio = [f for f in [*configs, *gops[0]] if f.kind is FrameKind.AUDIO]
    with trio.fail_after(20):
        async with thumbs() as served:
            port = served.http.port
            status, _, body = await http_get(port, "/live/nobody/thumbnail.jpg")
            assert status == 404 and b"not live" in body
            async with served.engine.publish("live/radio") as publisher:
                for frame in audio:
                    await publisher.send(frame)
                await wait_until(
                    lambda: (s := find_stream(served.engine, "live/radio")) and s.stats().audio_frames_total
                )
                status, headers, body = await http_get(port, "/live/radio/thumbnail.jpg")
                assert status == 503 and headers["retry-after"] == "1"  # just started: video may follow
                radio = find_stream(served.engine, "live/radio")
                assert radio is not None
                radio.created_at -= 10  # ten seconds of audio only
                status, _, body = await http_get(port, "/live/radio/thumbnail.jpg")
                assert status == 409 and b"no video" in body
            video = [f for f in [*configs, *gops[0]] if f.kind is FrameKind.VIDEO]
            async with served.engine.publish("live/late") as publisher:
                for frame in video[:1]:  # the config only: no keyframe yet
                    await publisher.send(frame)
                late = find_stream(served.engine, "live/late")
                assert late is not None
                late.created_at -= 10
                status, headers, body = await http_get(port, "/live/late/thumbnail.jpg")
                assert status == 503 and headers["retry-after"] == "1", body  # its video config came


# --- recorded moments ------------------------------------------------------------------------


class _Recorder:
    """A plugin with a ``catalog``, as the recording service is (a stream service that applies
    to no application: it only lends its catalog)."""

    name = "fake-recorder"
    capacity = 1

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def applies_to(self, spec: object) -> bool:
        return False

    async def serve_stream(self, stream: object, subscription: object) -> None:
        raise AssertionError("applies to nothing")


def write_segment(path: pathlib.Path, frames: list[Frame]) -> None:
    """The demo clip as one fragmented MP4 (a fragment per GOP), as recordings are."""
    configs = [f for f in frames if f.config and f.kind is not FrameKind.DATA]
    tracks = [track_from_config(c) for c in configs]
    writer = FragmentWriter(tracks)
    out = bytearray(init_segment(tracks))
    for frame in frames:
        if frame.config:
            continue
        if frame.kind is FrameKind.VIDEO and frame.keyframe:
            fragment = writer.fragment(frame.dts)
            if fragment is not None:
                out += fragment.data
        writer.push(frame)
    fragment = writer.flush()
    assert fragment is not None
    out += fragment.data
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(out)


START = datetime.datetime(2026, 12, 7, 1, 0, 0, tzinfo=datetime.UTC).timestamp()


def _iso(moment: float) -> str:
    return datetime.datetime.fromtimestamp(moment, datetime.UTC).isoformat().replace("+00:00", "Z")


async def test_playback_thumbnail_of_a_recorded_moment(
    demo_frames: list[Frame], http_get: HttpGet, tmp_path: pathlib.Path
) -> None:
    catalog = Catalog(tmp_path)
    key = StreamKey("live", "t")
    name = segment_name(START)
    write_segment(catalog.path(key, name), demo_frames)
    record = SegmentRecord(name, START, 10.0, catalog.path(key, name).stat().st_size, ("avc1.4d401e",), "s1", True)
    append_index(catalog.directory(key), [index_line(record)])
    with trio.fail_after(20):
        async with thumbs(services=(_Recorder(catalog),)) as served:
            port = served.http.port
            pictures = {}
            for offset in (0.5, 1.9, 2.0, 3.5, 9.0):
                status, headers, body = await http_get(
                    port, f"/live/t/playback.jpg?at={_iso(START + offset)}&width=128"
                )
                assert status == 200, body
                assert "max-age=3600" in headers["cache-control"]
                assert jpeg_size(body) == (128, 72)
                pictures[offset] = body
            assert pictures[0.5] == pictures[1.9]  # the same keyframe (0 s)
            assert pictures[2.0] == pictures[3.5]  # the keyframe at 2 s
            assert pictures[0.5] != pictures[2.0] != pictures[9.0]
            assert served.thumbnails.decodes == 3  # one per keyframe landed on
            status, _, body = await http_get(port, f"/live/t/playback.jpg?at={_iso(START - 0.000001)}")
            assert status == 200, body  # a start written to the microsecond below (as ISO texts may be)
            status, _, body = await http_get(port, f"/live/t/playback.jpg?at={START + 4.25:.2f}")
            assert status == 200 and jpeg_size(body) == (320, 180)  # epoch seconds work too
            for moment in (START - 60, START + 11):
                status, _, body = await http_get(port, f"/live/t/playback.jpg?at={_iso(moment)}")
                assert status == 404 and b"nothing of live/t is recorded" in body
            for bad in ("", "yesterday", "1999-01-01T00:00:00Z", "2026-13-01", "x" * 80, "nan", "1e400"):
                status, _, body = await http_get(port, f"/live/t/playback.jpg?at={bad}")
                assert status == 400, (bad, body)


async def test_playback_thumbnail_without_recording_is_404(http_get: HttpGet) -> None:
    with trio.fail_after(10):
        async with thumbs() as served:
            status, _, body = await http_get(served.http.port, "/live/t/playback.jpg?at=2026-12-07T01:00:00Z")
            assert status == 404 and b"does not record" in body


async def test_a_picture_over_8k_is_not_decoded(demo_frames: list[Frame], http_get: HttpGet) -> None:
    with trio.fail_after(20):
        async with thumbs() as served, published(served, demo_frames):
            stream = find_stream(served.engine, "live/t")
            assert stream is not None
            stream.info.width, stream.info.height = 16384, 16384  # what a hostile SPS could say
            status, _, body = await http_get(served.http.port, "/live/t/thumbnail.jpg")
            assert status == 409 and b"too large" in body
            assert served.thumbnails.decodes == 0
