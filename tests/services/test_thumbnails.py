"""The thumbnail service without HTTP: PyAV decodes of every codec (keyframes made with PyAV's
encoders), the size rules, and the caches' one-decode-per-keyframe-and-width rule with a
decoder that counts its calls and blocks until the test lets it go."""

from __future__ import annotations

import fractions
import pathlib
import threading
from typing import Any

import pytest
import trio
import trio.testing

from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.core.keys import StreamKey
from arcly_trio.kernel.gop import GopCache
from arcly_trio.media.thumbnail import (
    MAX_HEIGHT,
    MAX_PAYLOAD,
    NoPicture,
    Thumbnail,
    check_width,
    keyframe_jpeg,
    recorded_keyframe,
    scaled_size,
)
from arcly_trio.services.thumbnails import ThumbnailBusy, Thumbnails, latest_keyframe
from tests._serving import wait_until

KEY = StreamKey("live", "t")


def _video(
    pts: int, payload: bytes = b"\x00\x00\x00\x01\x65", *, keyframe: bool = False, config: bool = False
) -> Frame:
    return Frame(FrameKind.VIDEO, "h264", pts, pts, payload, keyframe=keyframe, config=config)


def _encoded(encoder: str, width: int = 128, height: int = 72, **options: str) -> tuple[bytes | None, bytes]:
    """(extradata, first keyframe) of three flat grey pictures encoded with PyAV."""
    import av

    context = av.CodecContext.create(encoder, "w")
    context.width, context.height, context.pix_fmt = width, height, "yuv420p"
    context.time_base = fractions.Fraction(1, 30)
    context.framerate = fractions.Fraction(30)
    context.options = dict(options)
    packets = []
    for index in range(3):
        picture = av.VideoFrame(width, height, "yuv420p")
        for plane in picture.planes:
            plane.update(bytes([16 + 60 * index]) * plane.buffer_size)
        picture.pts = index
        packets += context.encode(picture)
    packets += context.encode(None)
    keyframe = next(packet for packet in packets if packet.is_keyframe)
    return (bytes(context.extradata) if context.extradata else None), bytes(keyframe)


@pytest.mark.parametrize(
    ("encoder", "codec", "options"),
    [
        ("libx264", "h264", {}),
        ("libx265", "hevc", {"x265-params": "log-level=error"}),
        ("libvpx-vp9", "vp9", {}),
        ("libsvtav1", "av1", {}),
    ],
)
def test_every_codec_decodes_to_a_jpeg_of_the_width(encoder: str, codec: str, options: dict[str, str]) -> None:
    extradata, keyframe = _encoded(encoder, **options)
    made = keyframe_jpeg(codec, extradata, keyframe, 64)
    assert (made.width, made.height, made.source_width, made.source_height) == (64, 36, 128, 72)
    assert made.jpeg[:2] == b"\xff\xd8" and made.jpeg[-2:] == b"\xff\xd9"


def test_what_does_not_decode_is_no_picture() -> None:
    extradata, keyframe = _encoded("libx264")
    for codec, payload in (
        ("h264", b""),
        ("h264", b"\x00" * 64),
        ("flv1", keyframe),
        ("h264", b"x" * (MAX_PAYLOAD + 1)),
    ):
        with pytest.raises(NoPicture) as caught:
            keyframe_jpeg(codec, extradata, payload, 64)
        assert caught.value.status == 422
    with pytest.raises(ValueError):
        keyframe_jpeg("h264", extradata, keyframe, 15)


def test_sizes_follow_the_aspect_and_are_bounded() -> None:
    assert scaled_size(1920, 1080, 320) == (320, 180)
    assert scaled_size(640, 360, 1920) == (1920, 1080)  # an upscale stays within the bounds
    assert scaled_size(720, 576, 320, fractions.Fraction(16, 15)) == (320, 240)  # 4:3 display
    assert scaled_size(16, 4096, 1920) == (16, MAX_HEIGHT)  # a very tall picture is made narrower
    assert scaled_size(3, 3, 16) == (16, 16)
    for bad in (0, 15, 1921, -1):
        with pytest.raises(ValueError):
            check_width(bad)
    with pytest.raises(NoPicture):
        scaled_size(0, 10, 320)


def test_recordings_that_cannot_be_read(tmp_path: pathlib.Path) -> None:
    with pytest.raises(NoPicture):
        recorded_keyframe(tmp_path / "missing.mp4", 0)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a movie at all" * 100)
    with pytest.raises(NoPicture):
        recorded_keyframe(junk, 3.0)


def test_latest_keyframe_of_the_gop_cache() -> None:
    gop = GopCache(max_frames=4, max_bytes=0)
    assert latest_keyframe(gop) is None
    config = _video(0, b"avcC", config=True)
    gop.push(1, config)
    assert latest_keyframe(gop) is None  # a config, no keyframe yet
    first = _video(0, keyframe=True)
    gop.push(2, first)
    gop.push(3, _video(33))
    assert latest_keyframe(gop) == (config, first)
    second = _video(66, keyframe=True)
    gop.push(4, second)
    assert latest_keyframe(gop) == (config, second)
    for seq in range(5, 10):  # over the GOP cache's cap: dropped whole
        gop.push(seq, _video(66 + seq))
    assert latest_keyframe(gop) is None


class Gate:
    """A blocking decoder for the service: counts calls, blocks each until ``release``."""

    def __init__(self, *, fail: bool = False) -> None:
        self.calls: list[tuple[str, int]] = []
        self.go = threading.Event()
        self.fail = fail

    def __call__(self, codec: str, extradata: bytes | None, payload: bytes, width: int) -> Thumbnail:
        self.calls.append((codec, width))
        self.go.wait(10)
        if self.fail:
            raise NoPicture("broken keyframe")
        return Thumbnail(b"\xff\xd8" + payload + bytes([width % 256]), width, width // 2, 640, 360)


def _gop_with(keyframe: Frame) -> GopCache:
    gop = GopCache(max_frames=100, max_bytes=0)
    gop.push(1, _video(0, b"avcC", config=True))
    gop.push(2, keyframe)
    return gop


async def test_concurrent_requests_share_one_decode() -> None:
    gate = Gate()
    thumbnails = Thumbnails(decode=gate)
    gop = _gop_with(_video(0, b"one", keyframe=True))
    results: list[Any] = []

    async def ask(width: int) -> None:
        results.append(await thumbnails.live(KEY, gop, width))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for index in range(50):
                nursery.start_soon(ask, 320 if index % 2 else 160)
            await wait_until(lambda: len(gate.calls) == 2, poll=0.001)  # one per width...
            await trio.testing.wait_all_tasks_blocked()
            assert len(gate.calls) == 2 and thumbnails.decodes == 2  # ...the others wait for it
            gate.go.set()
    assert len(results) == 50 and len({id(r) for r in results}) == 2
    assert thumbnails.decodes == 2
    again = await thumbnails.live(KEY, gop, 320)
    assert again.jpeg == b"\xff\xd8one\x40" and thumbnails.decodes == 2  # cached until a new keyframe
    gop.push(3, _video(2000, b"two", keyframe=True))
    assert (await thumbnails.live(KEY, gop, 320)).jpeg == b"\xff\xd8two\x40"
    assert thumbnails.decodes == 3


async def test_a_failed_decode_is_remembered_for_its_keyframe_and_width() -> None:
    gate = Gate(fail=True)
    gate.go.set()
    thumbnails = Thumbnails(decode=gate)
    gop = _gop_with(_video(0, b"bad", keyframe=True))
    for _ in range(3):
        with pytest.raises(NoPicture) as caught:
            await thumbnails.live(KEY, gop, 320)
        assert caught.value.status == 422
    assert len(gate.calls) == 1


async def test_a_slow_decode_leaves_its_waiters_busy_then_serves(autojump_clock: trio.abc.Clock) -> None:
    gate = Gate()
    thumbnails = Thumbnails(decode=gate, timeout=5)
    gop = _gop_with(_video(0, b"slow", keyframe=True))
    outcomes: list[object] = []

    async def ask() -> None:
        try:
            outcomes.append(await thumbnails.live(KEY, gop, 320))
        except ThumbnailBusy as exc:
            outcomes.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ask)  # the first: runs the decode, waits for its thread
        while not gate.calls:
            await trio.sleep(0.001)
        nursery.start_soon(ask)  # a waiter: gives up after the timeout
        await trio.sleep(6)
        assert len(outcomes) == 1 and isinstance(outcomes[0], ThumbnailBusy)
        assert outcomes[0].status == 503
        gate.go.set()
    assert len(outcomes) == 2 and not isinstance(outcomes[1], ThumbnailBusy)
    assert len(gate.calls) == 1


async def test_a_request_cancelled_before_its_decode_started_lets_the_next_one_decode() -> None:
    gate = Gate()
    thumbnails = Thumbnails(decode=gate, threads=1)
    busy = _gop_with(_video(0, b"busy", keyframe=True))
    mine = _gop_with(_video(0, b"mine", keyframe=True))
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(thumbnails.live, StreamKey("live", "busy"), busy, 320)  # takes the one thread
            await wait_until(lambda: len(gate.calls) == 1, poll=0.001)
            with trio.move_on_after(0.05):
                await thumbnails.live(KEY, mine, 320)  # waits for the thread's turn: cancelled
            gate.go.set()
        picture = await thumbnails.live(KEY, mine, 320)
    assert picture.jpeg == b"\xff\xd8mine\x40"
    assert gate.calls == [("h264", 320), ("h264", 320)]


async def test_widths_per_keyframe_and_streams_are_bounded() -> None:
    gate = Gate()
    gate.go.set()
    thumbnails = Thumbnails(decode=gate, max_sizes=2, max_streams=2)
    gop = _gop_with(_video(0, b"k", keyframe=True))
    widths = [(await thumbnails.live(KEY, gop, width)).width for width in (100, 400, 120, 380, 1900)]
    assert widths == [100, 400, 100, 400, 400]
    assert thumbnails.decodes == 2
    for name in ("a", "b", "c"):
        await thumbnails.live(StreamKey("live", name), gop, 100)
    assert KEY not in thumbnails and StreamKey("live", "c") in thumbnails
    thumbnails.prune(lambda key: key.name == "c")
    assert StreamKey("live", "b") not in thumbnails and StreamKey("live", "c") in thumbnails


async def test_the_last_picture_holds_while_the_gop_cache_has_none() -> None:
    gate = Gate()
    gate.go.set()
    thumbnails = Thumbnails(decode=gate)
    gop = GopCache(max_frames=3, max_bytes=0)
    gop.push(1, _video(0, b"avcC", config=True))
    gop.push(2, _video(0, b"held", keyframe=True))
    first = await thumbnails.live(KEY, gop, 320)
    for seq in range(3, 8):
        gop.push(seq, _video(seq))
    assert latest_keyframe(gop) is None
    assert await thumbnails.live(KEY, gop, 320) is first
    with pytest.raises(NoPicture) as caught:
        await thumbnails.live(StreamKey("live", "other"), gop, 320)
    assert caught.value.status == 503
    with pytest.raises(NoPicture) as caught:
        await thumbnails.live(StreamKey("live", "other"), GopCache(10, 0), 320)
    assert caught.value.status == 409


def _clip(path: pathlib.Path, fmt: str) -> pathlib.Path:
    """3 s of 64x48 H.264 at 30 fps, a keyframe every second, muxed by PyAV as ``fmt``."""
    import av

    with av.open(str(path), "w", format=fmt) as output:
        stream = output.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.options = {"g": "30", "keyint_min": "30", "sc_threshold": "0", "bf": "2"}
        for index in range(90):
            picture = av.VideoFrame(64, 48, "yuv420p")
            for plane in picture.planes:
                plane.update(bytes([(index * 3) % 256]) * plane.buffer_size)
            picture.pts = index
            output.mux(stream.encode(picture))
        output.mux(stream.encode(None))
    return path


@pytest.mark.parametrize("fmt", ["mp4", "mpegts", "flv"])
def test_the_recorded_keyframe_is_the_one_at_or_before_the_moment(tmp_path: pathlib.Path, fmt: str) -> None:
    clip = _clip(tmp_path / f"clip.{fmt}", fmt)
    times = {offset: recorded_keyframe(clip, offset).time for offset in (0, 0.5, 0.99, 1.0, 2.5, 2.99, 30.0)}
    assert times == {0: 0.0, 0.5: 0.0, 0.99: 0.0, 1.0: 1.0, 2.5: 2.0, 2.99: 2.0, 30.0: 2.0}
    found = recorded_keyframe(clip, 1.5)
    made = keyframe_jpeg(found.codec, found.extradata, found.payload, 32)
    assert (made.width, made.height) == (32, 24)
