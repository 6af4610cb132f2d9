"""What ``/api/streams`` says about a stream's video, derived from its frames
(:mod:`arcly_trio.media.probe`): the frame rate measured over timestamps and the picture size of
VP9 (issue 19, item 9).

* A 30 fps stream has millisecond timestamps 33, 34, 33 ms apart: the rate was the inverse of
  the median interval, 30.303; it is the frames counted over the time they span, reported as
  the common rate it matches within its precision (30; 29.97 stays 29.97 once a few seconds are
  measured; an odd rate is rounded to two decimals).
* VP9's configuration record has no picture size: the browser publish page's VP9 stream had
  ``width``/``height`` null; they come from each keyframe's uncompressed header (the parser the
  fMP4 writer uses).
"""

from __future__ import annotations

import pytest
import trio
from hypothesis import example, given
from hypothesis import strategies as st

from arcly_trio import Engine
from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.media.probe import COMMON_RATES, MediaProbe, measured_rate
from arcly_trio.server.demo import publish_demo
from arcly_trio.workers.http import HttpServer

#: A libvpx keyframe's first bytes (320x240) and a VP9 configuration record, as tests/media/test_fmp4.py.
VP9_KEYFRAME = b"\x82\x49\x83\x42\x00\x13\xf0\x0e\xf6"
VP9_RECORD = b"\x01\x00\x00\x00\x00\x14\x82\x02\x02\x02\x00\x00"


def video_frames(fps: float, seconds: float, codec: str = "h264", start: int = 0) -> list[Frame]:
    """Frames at ``fps`` with millisecond timestamps, as RTMP carries them."""
    return [Frame(FrameKind.VIDEO, codec, start + round(i * 1000 / fps), start + round(i * 1000 / fps), b"x",
                  keyframe=i % 60 == 0) for i in range(int(fps * seconds))]  # fmt: skip


@pytest.mark.parametrize(("fps", "seconds", "expected"), [
    (30, 1, 30.0), (30, 20, 30.0), (29.97, 5, 29.97), (25, 3, 25.0), (23.976, 5, 23.976), (59.94, 5, 59.94),
    (60, 2, 60.0), (27.3, 5, 27.3), (12.5, 4, 12.5),
])  # fmt: skip
def test_framerate_is_measured_over_timestamps_and_rounded_sensibly(
    fps: float, seconds: float, expected: float
) -> None:
    probe = MediaProbe()
    for frame in video_frames(fps, seconds):
        probe.push(frame)
    assert probe.info.framerate == expected  # 30 fps used to say 30.303


def test_framerate_measures_the_new_run_after_a_jump() -> None:
    probe = MediaProbe()
    for frame in video_frames(25, 4) + video_frames(30, 4, start=90_000):
        probe.push(frame)
    assert probe.info.framerate == 30.0


@given(st.integers(-(10**6), 10**6), st.integers(0, 10**6), st.integers(0, 300))
@example(0, 800_001, 5)  # 0.005 frames a second rounded to 0.0 (hypothesis found it)
def test_measured_rate_is_a_positive_rate_or_nothing(first: int, span: int, frames: int) -> None:
    rate = measured_rate(first, first + span, frames)
    assert rate is None or (rate > 0 and (rate in COMMON_RATES or rate == round(rate, 2)))


@given(st.integers(0, 10**6), st.integers(1, 10**6), st.integers(5, 300))
@example(0, 1000, 25)  # 24 fps: a common rate itself
@example(0, 2000, 109)  # 54 fps: as near 50 as 58 (neither: 54.0 within no tolerance)
def test_measured_rate_snaps_to_the_nearest_common_rate_the_lower_of_two(first: int, span: int, frames: int) -> None:
    """The common rate it snaps to is the nearest (the lower of two as near), as a scan of
    every common rate finds it (the probe runs this on every video frame: it looks at two)."""
    rate = (frames - 1) * 1000 / span
    nearest = min(COMMON_RATES, key=lambda common: abs(common - rate))
    snapped = abs(nearest - rate) <= max(rate * 1.5 / span, rate * 0.0005)
    rounded = round(rate, 2)
    expected = nearest if snapped else rounded if rounded > 0 else None
    assert measured_rate(first, first + span, frames) == expected


def test_vp9_width_and_height_come_from_the_keyframes() -> None:
    probe = MediaProbe()
    probe.push(Frame(FrameKind.VIDEO, "vp9", 0, 0, VP9_RECORD, config=True))
    assert (probe.info.width, probe.info.height) == (None, None)  # the record does not say
    probe.push(Frame(FrameKind.VIDEO, "vp9", 0, 0, VP9_KEYFRAME, keyframe=True))
    assert (probe.info.width, probe.info.height) == (320, 240)
    # A keyframe whose header does not parse changes nothing; metadata does not override it.
    probe.push(Frame(FrameKind.VIDEO, "vp9", 33, 33, b"\x00", keyframe=True))
    assert (probe.info.width, probe.info.height) == (320, 240)


async def test_stream_info_comes_from_the_frames_whatever_the_publisher(autojump_clock, http_get) -> None:  # type: ignore[no-untyped-def]
    http = HttpServer("127.0.0.1", 0)
    async with Engine.builder().application("live").protocol(http).build() as engine:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(publish_demo, engine)
            await trio.sleep(3)
            document = engine.stream("live/demo").info
            nursery.cancel_scope.cancel()
    assert document.protocol == "demo"
    assert (document.width, document.height) == (640, 360)
    assert document.framerate == pytest.approx(30, abs=0.5)
    assert document.audio_sample_rate == 44100 and document.audio_channels == 1
    assert document.video_codec_string == "avc1.4d401e" and document.audio_codec_string == "mp4a.40.2"
