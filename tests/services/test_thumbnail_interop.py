"""Thumbnails of a stream ffmpeg publishes over RTMP (a moving test pattern, a keyframe every
second): a JPEG of the asked width whose pixels change between two keyframes, a flood of 50
concurrent requests that costs at most one decode per keyframe per width, and a moment of the
same stream as the recorder wrote it (``playback.jpg``, through the real catalog)."""

from __future__ import annotations

import datetime

import pytest
import trio

from arcly_trio.core.keys import StreamKey
from arcly_trio.kernel.engine import Engine
from arcly_trio.services.recordings import Recorder
from arcly_trio.services.thumbnails import Thumbnails
from arcly_trio.workers.http import HttpServer
from arcly_trio.workers.rtmp import RtmpServer
from tests._ffmpeg import publish_args, run_tool
from tests._net import HOST
from tests._serving import RecordingObserver, rtmp_url, wait_publishing, wait_until
from tests._tools import require_ffmpeg8

pytestmark = pytest.mark.interop


def luma(jpeg: bytes) -> tuple[int, int, bytes]:
    """Width, height and the Y plane of a JPEG, decoded with PyAV."""
    import av

    decoder = av.CodecContext.create("mjpeg", "r")
    (picture,) = decoder.decode(av.Packet(jpeg))
    plane = picture.planes[0]
    rows = bytes(plane)
    return (
        picture.width,
        picture.height,
        b"".join(rows[row * plane.line_size : row * plane.line_size + picture.width] for row in range(picture.height)),
    )


async def test_thumbnails_of_an_ffmpeg_stream_change_per_keyframe_and_a_flood_decodes_once(http_get, tmp_path) -> None:  # type: ignore[no-untyped-def]
    thumbnails = Thumbnails()
    recorder = Recorder(tmp_path, all_apps=True, refresh_seconds=0.5)
    observer = RecordingObserver()
    rtmp, http = RtmpServer(HOST, 0), HttpServer(HOST, 0)
    engine = (
        Engine.builder()
        .application("live")
        .protocol(rtmp)
        .protocol(http)
        .observer(thumbnails)
        .observer(observer)
        .service(recorder)
        .build()
    )
    with trio.fail_after(60):
        async with engine, run_tool(publish_args(rtmp_url(rtmp.port, "live/moving"), gop=30, seconds=8)):
            await wait_publishing(engine, "live/moving", 1)
            await wait_until(lambda: len(observer.keyframes) >= 1)
            status, headers, first = await http_get(http.port, "/live/moving/thumbnail.jpg?width=200")
            assert status == 200 and headers["content-type"] == "image/jpeg", first
            width, height, first_luma = luma(first)
            assert (width, height) == (200, 150)  # 320x240
            seen = len(observer.keyframes)
            await wait_until(lambda: len(observer.keyframes) >= seen + 1)
            status, _, second = await http_get(http.port, "/live/moving/thumbnail.jpg?width=200")
            assert status == 200
            _, _, second_luma = luma(second)
            changed = sum(a != b for a, b in zip(first_luma, second_luma, strict=True))
            assert changed > len(first_luma) // 50, changed  # the pattern moved between keyframes

            decodes, keyframes = thumbnails.decodes, len(observer.keyframes)
            bodies: list[bytes] = []

            async def one() -> None:
                status, _, body = await http_get(http.port, "/live/moving/thumbnail.jpg?width=160", timeout=20)
                assert status == 200
                bodies.append(body)

            async with trio.open_nursery() as nursery:
                for _ in range(50):
                    nursery.start_soon(one)
            during = len(observer.keyframes) - keyframes + 1  # the keyframe current at the start, and any new
            assert len(bodies) == 50
            assert 1 <= thumbnails.decodes - decodes <= during, (thumbnails.decodes - decodes, during)
            assert StreamKey("live", "moving") in thumbnails

            key = StreamKey("live", "moving")

            async def recorded() -> float:
                segments = await recorder.catalog.segments(key)
                return segments[0].duration if segments else 0.0

            while await recorded() < 2.5:
                await trio.sleep(0.1)
            (segment,) = await recorder.catalog.segments(key)
            at = datetime.datetime.fromtimestamp(segment.start + 2.2, datetime.UTC).isoformat()
            status, headers, moment = await http_get(http.port, f"/live/moving/playback.jpg?width=96&at={at}")
            assert status == 200, moment
            width, height, _ = luma(moment)
            assert (width, height) == (96, 72)


@pytest.mark.parametrize(
    ("codec", "encoder"),
    [
        ("hevc", ["-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error:keyint=15"]),
        ("av1", ["-c:v", "libsvtav1", "-preset", "12", "-svtav1-params", "keyint=15"]),
        ("vp9", ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-g", "15"]),
    ],
)
async def test_thumbnails_of_enhanced_rtmp_codecs_from_ffmpeg8(http_get, codec: str, encoder: list[str]) -> None:  # type: ignore[no-untyped-def]
    """ffmpeg 8 publishes HEVC, AV1 or VP9 (Enhanced RTMP, with Opus): the thumbnail decodes from
    the stream's own config record (``hvcC``, ``av1C``) and keyframe."""
    ffmpeg8 = require_ffmpeg8()
    thumbnails = Thumbnails()
    rtmp, http = RtmpServer(HOST, 0), HttpServer(HOST, 0)
    engine = Engine.builder().application("live").protocol(rtmp).protocol(http).observer(thumbnails).build()
    with trio.fail_after(60):
        async with engine:
            args = [ffmpeg8, "-hide_banner", "-nostdin", "-loglevel", "error", "-re", "-f", "lavfi", "-i",
                    "testsrc=size=320x240:rate=30", "-re", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
                    "-t", "4", "-pix_fmt", "yuv420p", *encoder, "-c:a", "libopus", "-f", "flv",
                    rtmp_url(rtmp.port, f"live/{codec}")]  # fmt: skip
            async with run_tool(args):
                stream = await wait_publishing(engine, f"live/{codec}", 1)
                while True:  # 503 until the first keyframe
                    status, _, body = await http_get(http.port, f"/live/{codec}/thumbnail.jpg?width=160")
                    if status != 503:
                        break
                    await trio.sleep(0.1)
                assert status == 200, body
                assert stream.gop.primary is not None
                assert luma(body)[:2] == (160, 120)
                assert thumbnails.decodes == 1
