"""Tests of arcly_trio.media.ts_segments: the segmenter's events and playlist, checked after every call
against the `m3u8` parser and an independent reading of the segments' MPEG-TS, for generated
streams with restarts and timestamp jumps; and a real clip whose segments ffmpeg decodes.
"""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import m3u8
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arcly_trio.core.errors import LocalProtocolError
from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.media.codecs import CodecError
from arcly_trio.media.mpegts import AUDIO_PID, PMT_PID, STREAM_TYPES, VIDEO_PID
from arcly_trio.media.ts_segments import (
    HlsSegmenter,
    Segment,
    SegmentClosed,
    SegmentEvent,
    SegmentExpired,
    SegmentOpened,
)
from tests._media import build_avcc, encode_flv, ffprobe_json, read_flv
from tests._mpegts import demux, read_pmt, read_section
from tests._tools import require_tool

SPS = bytes.fromhex("6764001fac2ca40140169b0110")
PPS = bytes.fromhex("68ebe3cb22c0")
ASC = bytes.fromhex("1210")


def avcc(*nals: bytes) -> bytes:
    return b"".join(len(n).to_bytes(4, "big") + n for n in nals)


def video_config() -> Frame:
    return Frame(FrameKind.VIDEO, "h264", 0, 0, build_avcc([SPS], [PPS]), config=True)


def audio_config() -> Frame:
    return Frame(FrameKind.AUDIO, "aac", 0, 0, ASC, config=True)


def video(dts: int, key: bool = False, size: int = 50, cts: int = 0) -> Frame:
    nal = (b"\x65" if key else b"\x41") + bytes(size)
    return Frame(FrameKind.VIDEO, "h264", dts + cts, dts, avcc(nal), keyframe=key)


def audio(dts: int, size: int = 20) -> Frame:
    return Frame(FrameKind.AUDIO, "aac", dts, dts, bytes(size))


# --- a checker that validates every step ---------------------------------------------------------


class Checker:
    """Drives a segmenter and checks its events and playlist after every call."""

    def __init__(self, segmenter: HlsSegmenter, *, slack: float = 0.0) -> None:
        """``slack``: how far (seconds) a segment may outgrow ``max_segment_duration`` (the
        segmenter predicts the next frame from the last interval: a stream whose frame interval
        jumps within a segment may overshoot by the jump)."""
        self.seg = segmenter
        self.slack = slack
        self.next_sequence = segmenter.media_sequence
        self.open: SegmentOpened | None = None
        self.closed: dict[int, SegmentClosed] = {}
        self.expired: list[int] = []
        self.order: list[int] = []
        self.closed_by: dict[int, str] = {}  # "cut", "early" (discontinuity/finish)
        self.independent: dict[int, bool] = {}

    def push(self, frame: Frame) -> list[SegmentEvent]:
        return self._apply(self.seg.push(frame), "cut")

    def discontinuity(self) -> list[SegmentEvent]:
        return self._apply(self.seg.discontinuity(), "early")

    def finish(self) -> list[SegmentEvent]:
        return self._apply(self.seg.finish(), "early")

    def _apply(self, events: list[SegmentEvent], how: str) -> list[SegmentEvent]:
        for event in events:
            if isinstance(event, SegmentOpened):
                assert self.open is None, "opened a segment while one is open"
                assert event.sequence == self.next_sequence
                assert event.name == self.seg.name_template.format(sequence=event.sequence)
                self.next_sequence += 1
                self.open = event
                self.independent[event.sequence] = event.independent
            elif isinstance(event, SegmentClosed):
                assert self.open is not None and event.sequence == self.open.sequence
                assert event.discontinuity == self.open.discontinuity
                assert 0 <= event.duration <= self.seg.max_segment_duration + self.slack + 1e-9
                self.closed[event.sequence] = event
                self.order.append(event.sequence)
                # A close followed by an open in the same batch is a cut at a frame.
                self.closed_by[event.sequence] = how
                self.open = None
            else:
                assert isinstance(event, SegmentExpired)
                assert event.sequence in self.closed and event.sequence not in self.expired
                assert event.name == self.closed[event.sequence].name
                self.expired.append(event.sequence)
        if how == "cut":
            # A segment closed by a frame without a new one opening ended early (timeline broke).
            for event in events:
                if isinstance(event, SegmentClosed) and not any(isinstance(e, SegmentOpened) for e in events):
                    self.closed_by[event.sequence] = "early"
        self.check_playlist()
        return events

    def check_playlist(self) -> None:
        text = self.seg.playlist()
        playlist = m3u8.M3U8(text, strict=True)
        listed = [s for s in self.order if s not in self.expired]
        assert [s.uri for s in playlist.segments] == [self.closed[s].name for s in listed]
        assert len(listed) == min(self.seg.window, len(self.order))
        assert list(self.seg.segments) == [
            Segment(s, self.closed[s].name, self.closed[s].duration, self.closed[s].discontinuity) for s in listed
        ]
        # Expired segments are gone from the text; everything listed was closed and not expired.
        for sequence in self.expired:
            assert f"\n{self.closed[sequence].name}\n" not in text
        assert playlist.version == 3
        upcoming = self.open.sequence if self.open is not None else self.next_sequence
        assert playlist.media_sequence == (listed[0] if listed else upcoming)
        # RFC 8216 6.2.1: the target duration never changes; 4.3.3.1: every segment's duration
        # rounded to the nearest integer is at most it.
        assert playlist.target_duration == self.seg.playlist_target_duration >= math.ceil(self.seg.target_duration)
        for segment, sequence in zip(playlist.segments, listed):
            assert math.floor(segment.duration + 0.5 - self.slack) <= playlist.target_duration
            assert segment.duration == round(self.closed[sequence].duration, 3)
            assert segment.discontinuity == self.closed[sequence].discontinuity
        expected_dseq = sum(1 for s in self.expired if self.closed[s].discontinuity)
        assert (playlist.discontinuity_sequence or 0) == expected_dseq
        if expected_dseq == 0:
            assert "DISCONTINUITY-SEQUENCE" not in text
        assert playlist.is_endlist == self.seg.finished
        assert text.startswith("#EXTM3U\n#EXT-X-VERSION:3\n") and text.endswith("\n")

    def check_segments(self, *, has_video: bool, forced_ok: bool = False) -> None:
        """Read every closed segment back: tables first, keyframe first, cut at the first
        keyframe past the target, durations from the first DTS of consecutive segments."""
        target_ticks = self.seg.target_duration * 90_000
        firsts: dict[int, int] = {}
        for sequence in self.order:
            closed = self.closed[sequence]
            packets, pes = demux(closed.data)
            assert [p.pid for p in packets[:2]] == [0, PMT_PID]
            _, streams = read_pmt(read_section(packets[1]))
            assert (VIDEO_PID in streams) == has_video
            assert pes, "an empty segment"
            first = pes[0]
            firsts[sequence] = first.dts
            if has_video and not self.independent[sequence]:
                # Cut without a keyframe: a GOP longer than the segments, or the video stalled.
                assert not (first.pid == VIDEO_PID and first.rai)
                assert self.seg.keyframeless_cuts
            elif has_video:
                assert first.pid == VIDEO_PID
                assert first.rai or forced_ok, "segment does not start on a keyframe"
                for unit in pes[1:]:
                    if unit.pid == VIDEO_PID and unit.rai:
                        assert unit.dts - first.dts < target_ticks, "a keyframe past target not cut"
            else:
                assert first.pid == AUDIO_PID
                for unit in pes[1:]:
                    assert unit.dts - first.dts < target_ticks or forced_ok
        for a, b in zip(self.order, self.order[1:]):
            if self.closed_by[a] == "cut" and not self.closed[b].discontinuity:
                expected = (firsts[b] - firsts[a]) / 90_000
                assert self.closed[a].duration == pytest.approx(expected, abs=1e-6)
                duration = self.closed[a].duration
                forced = not self.independent[b] or duration + 0.25 > self.seg.max_segment_duration
                resync = not self.independent[a] and 2 * duration >= self.seg.target_duration
                forced = forced or resync
                assert self.closed[a].duration >= self.seg.target_duration or forced_ok or forced


# --- simple cases --------------------------------------------------------------------------------


def av_stream(seconds: float, gop_ms: int = 1000, interval: int = 40, start: int = 0) -> list[Frame]:
    """Configs, then 40 ms video frames with a keyframe every ``gop_ms`` and 23 ms audio."""
    frames = [video_config(), audio_config()]
    a = start
    for t in range(start, start + int(seconds * 1000), interval):
        frames.append(video(t, key=(t - start) % gop_ms == 0))
        while a < t + interval:
            frames.append(audio(a))
            a += 23
    return frames


def test_cuts_on_keyframes_and_slides_the_window() -> None:
    checker = Checker(HlsSegmenter(target_duration=2.0, window=3))
    for frame in av_stream(13.0, gop_ms=1000):
        checker.push(frame)
    assert checker.order == [0, 1, 2, 3, 4, 5]
    assert [checker.closed[s].duration for s in checker.order] == [2.0] * 6
    assert checker.expired == [0, 1, 2]
    checker.finish()
    assert checker.order == [0, 1, 2, 3, 4, 5, 6]
    assert checker.closed[6].duration == 1.0  # 12.0 .. 12.96 + one 40 ms frame interval
    assert checker.expired == [0, 1, 2, 3]
    assert checker.seg.playlist() == (
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:4\n"
        "#EXTINF:2.000,\n4.ts\n#EXTINF:2.000,\n5.ts\n#EXTINF:1.000,\n6.ts\n#EXT-X-ENDLIST\n"
    )
    checker.check_segments(has_video=True)
    assert checker.finish() == []  # idempotent
    with pytest.raises(LocalProtocolError):
        checker.seg.push(video(20_000, key=True))
    with pytest.raises(LocalProtocolError):
        checker.seg.discontinuity()


def test_long_gops_are_cut_between_keyframes_and_the_target_duration_holds() -> None:
    # Keyframes every 3.52 s, segments of 2 s: the playlist keeps EXT-X-TARGETDURATION:2 (RFC
    # 8216 6.2.1: it never changes) and every segment fits it, cut without a keyframe at 2.28 s
    # (the frame that would make it longer than 2.3 s); those cuts are counted. (It was 4 and
    # segments of 3.52 s, against 4.3.3.1 for a playlist that had promised 2.)
    checker = Checker(HlsSegmenter(target_duration=2.0, window=5))
    for frame in av_stream(15.0, gop_ms=3520):
        checker.push(frame)
    # A segment cut without a keyframe ends at the next keyframe once it lasts half the target,
    # so that every other segment starts with one.
    assert [checker.closed[s].duration for s in checker.order] == [2.28, 1.24] * 4
    assert "#EXT-X-TARGETDURATION:2\n" in checker.seg.playlist()
    assert [checker.independent[s] for s in checker.order] == [True, False] * 4
    assert checker.seg.keyframeless_cuts == 4
    checker.check_segments(has_video=True)


def test_every_segment_has_a_program_date_time_from_the_clock_at_its_timeline_start() -> None:
    checker = Checker(HlsSegmenter(target_duration=1.0, window=10))
    frames = av_stream(3.0, start=5_000)
    for frame in frames:
        checker.seg.push(frame, 1_700_000_000.0 + frame.dts / 1000)  # 5 s of drift on purpose
    checker.seg.discontinuity()
    for frame in av_stream(2.0, start=0):  # the publisher restarted: a new anchor
        checker.seg.push(frame, 1_700_000_100.0 + frame.dts / 1000)
    text = checker.seg.playlist()
    dates = [line.split(":", 1)[1] for line in text.splitlines() if line.startswith("#EXT-X-PROGRAM-DATE-TIME:")]
    assert (
        dates
        == [
            "2023-11-14T22:13:25.000Z",
            "2023-11-14T22:13:26.000Z",
            "2023-11-14T22:13:27.000Z",
            "2023-11-14T22:15:00.000Z",
            "2023-11-14T22:15:01.000Z",
        ][: len(dates)]
    )
    assert len(dates) == len(checker.seg.segments) == 4
    playlist = m3u8.loads(text)
    assert all(segment.program_date_time is not None for segment in playlist.segments)
    # Without the clock (a caller that does not pass it), there is no date to promise.
    bare = HlsSegmenter(target_duration=1.0)
    for frame in av_stream(3.0):
        bare.push(frame)
    assert "PROGRAM-DATE-TIME" not in bare.playlist()


def test_audio_only_cuts_on_duration() -> None:
    checker = Checker(HlsSegmenter(target_duration=1.0, window=10))
    checker.push(audio_config())
    for i in range(200):  # 23 ms frames: 4.6 s
        checker.push(audio(1000 + i * 23))
    durations = [checker.closed[s].duration for s in checker.order]
    assert durations == [1.012] * 4  # 44 frames of 23 ms: the first frame at or past 1 s
    checker.finish()
    checker.check_segments(has_video=False)


def test_waits_for_a_keyframe_and_counts_what_it_drops() -> None:
    seg = HlsSegmenter()
    checker = Checker(seg)
    checker.push(video_config())
    checker.push(audio_config())
    assert checker.push(audio(0)) == []  # the stream announced video: wait for a keyframe
    assert checker.push(video(0)) == []
    opened = checker.push(video(40, key=True))
    assert opened == [SegmentOpened(0, "0.ts", False)]
    assert seg.dropped_frames == 2
    # Codecs MPEG-TS cannot carry, other tracks and data frames are ignored.
    checker.push(Frame(FrameKind.AUDIO, "opus", 50, 50, b"x"))
    checker.push(Frame(FrameKind.VIDEO, "h264", 60, 60, avcc(b"\x41"), track=1))
    checker.push(Frame(FrameKind.DATA, "amf0", 0, 0, b"meta", config=True))
    assert seg.ignored_frames == 2
    assert seg.codecs == ("h264", "aac")


def test_explicit_discontinuity_and_discontinuity_sequence() -> None:
    checker = Checker(HlsSegmenter(target_duration=1.0, window=2))
    for frame in av_stream(3.0, start=50_000):
        checker.push(frame)
    events = checker.discontinuity()  # the publisher restarted
    assert [type(e) for e in events] == [SegmentClosed, SegmentExpired]
    assert checker.seg.discontinuity() == []  # nothing open: nothing to close
    for frame in av_stream(3.0, start=0):  # its clock starts over
        checker.push(frame)
    restarted = [s for s in checker.order if checker.closed[s].discontinuity]
    assert restarted == [3]
    assert "#EXT-X-DISCONTINUITY\n" in checker.seg.playlist()
    for frame in av_stream(3.0, start=3000)[2:]:
        checker.push(frame)
    # Segment 3 (the discontinuity) slid out of the window.
    assert 3 in checker.expired
    assert "#EXT-X-DISCONTINUITY-SEQUENCE:1\n" in checker.seg.playlist()
    checker.check_segments(has_video=True)


@pytest.mark.parametrize("jump", [-5_000, -1, 10_001, 60_000])
def test_timestamp_jumps_mark_discontinuities(jump: int) -> None:
    checker = Checker(HlsSegmenter(target_duration=1.0, window=10, max_gap=10.0))
    for frame in av_stream(2.5, start=20_000):
        checker.push(frame)
    # Backwards from the last video DTS, or forward past the newest DTS of any track.
    first = av_stream(2.5, start=20_000)
    last = max(f.dts for f in first if f.is_video or jump > 0)
    for frame in av_stream(2.5, start=last + jump)[2:]:
        checker.push(frame)
    checker.finish()
    flagged = [s for s in checker.order if checker.closed[s].discontinuity]
    assert len(flagged) == 1
    checker.check_segments(has_video=True)


def test_small_forward_gap_is_not_a_discontinuity() -> None:
    checker = Checker(HlsSegmenter(target_duration=1.0, window=10, max_gap=10.0))
    frames = av_stream(2.5, start=0)
    frames += av_stream(2.5, start=2520 + 9_000)[2:]
    for frame in frames:
        checker.push(frame)
    assert not any(c.discontinuity for c in checker.closed.values())


def test_stalled_video_resuming_is_not_a_discontinuity() -> None:
    checker = Checker(HlsSegmenter(target_duration=1.0, window=20, max_gap=10.0))
    for frame in av_stream(2.0):
        checker.push(frame)
    for i in range(700):  # the camera stops for 16 s, the microphone goes on
        checker.push(audio(2000 + i * 23))
    for frame in av_stream(2.0, start=18_120)[2:]:
        checker.push(frame)
    checker.finish()
    assert not any(c.discontinuity for c in checker.closed.values())
    # The audio cuts the segments while the video is away, so each keeps EXT-X-TARGETDURATION:1.
    assert checker.seg.playlist_target_duration == 1
    durations = [checker.closed[s].duration for s in checker.order]
    assert max(durations) <= 1.3 and sum(durations) == pytest.approx(20.12, abs=0.05)
    stalled = [s for s in checker.order if not checker.independent[s]]
    assert len(stalled) >= 12  # cut on audio frames (check_segments reads them back)
    checker.check_segments(has_video=True)


def test_codec_changes_start_a_new_segment_with_a_discontinuity() -> None:
    checker = Checker(HlsSegmenter(target_duration=1.0, window=10))
    checker.push(audio_config())
    for i in range(30):
        checker.push(audio(i * 23))
    # Video appears: the next segment starts at its first keyframe, whatever the duration.
    checker.push(video_config())
    checker.push(audio(30 * 23))
    checker.push(video(700))  # not a keyframe: dropped
    events = checker.push(video(740, key=True))
    assert [type(e) for e in events] == [SegmentClosed, SegmentOpened]
    assert events[1].discontinuity
    assert checker.closed[0].duration == pytest.approx(0.74)
    for t in range(780, 3000, 40):
        checker.push(video(t, key=(t - 740) % 1000 == 0))
        checker.push(audio(t))
    checker.finish()
    _, pes = demux(checker.closed[0].data)
    assert {p.pid for p in pes} == {AUDIO_PID}
    _, pes = demux(checker.closed[1].data)
    assert {p.pid for p in pes} == {VIDEO_PID, AUDIO_PID}
    assert checker.seg.dropped_frames == 1


def test_forced_cut_without_keyframes() -> None:
    seg = HlsSegmenter(target_duration=1.0, window=10, max_segment_duration=3.0)
    checker = Checker(seg)
    checker.push(video_config())
    checker.push(video(0, key=True))
    for t in range(40, 10_000, 40):
        checker.push(video(t))
    durations = [checker.closed[s].duration for s in checker.order]
    assert durations == [3.0, 3.0, 3.0]
    checker.check_segments(has_video=True, forced_ok=True)


def test_malformed_frames_leave_the_segmenter_as_it_was() -> None:
    checker = Checker(HlsSegmenter(target_duration=1.0))
    for frame in av_stream(1.5):
        checker.push(frame)
    before = checker.seg.playlist()
    with pytest.raises(CodecError):
        truncated = b"\x00\x00\x09\x00"  # a NAL unit length past the end
        checker.seg.push(Frame(FrameKind.VIDEO, "h264", 2000, 2000, truncated, keyframe=True))
    with pytest.raises(CodecError):
        checker.seg.push(Frame(FrameKind.VIDEO, "h264", 0, 0, b"\x02", config=True))
    with pytest.raises(CodecError):
        checker.seg.push(Frame(FrameKind.AUDIO, "aac", 0, 0, b"", config=True))
    assert checker.seg.playlist() == before
    for frame in av_stream(1.5, start=1520)[2:]:
        checker.push(frame)
    checker.finish()
    checker.check_segments(has_video=True)


def test_settings_are_validated() -> None:
    for kwargs in (
        {"target_duration": 0},
        {"window": 0},
        {"name_template": "segment.ts"},
        {"name_template": "{seq}.ts"},
        {"first_sequence": -1},
        {"target_duration": 5, "max_segment_duration": 2},
    ):
        with pytest.raises(LocalProtocolError):
            HlsSegmenter(**kwargs)


def test_name_template_and_first_sequence() -> None:
    segmenter = HlsSegmenter(target_duration=1.0, name_template="live-{sequence:05d}.ts", first_sequence=42)
    checker = Checker(segmenter)
    for frame in av_stream(2.5):
        checker.push(frame)
    assert checker.seg.segments[0].name == "live-00042.ts"
    assert "#EXT-X-MEDIA-SEQUENCE:42\n" in checker.seg.playlist()


# --- property: generated streams -----------------------------------------------------------------


@st.composite
def stream_scripts(draw: st.DrawFn) -> tuple[bool, bool, list[Frame | str]]:
    has_video = draw(st.booleans())
    has_audio = draw(st.booleans()) or not has_video
    script: list[Frame | str] = []

    def configs() -> None:
        if has_video:
            script.append(video_config())
        if has_audio:
            script.append(audio_config())

    configs()
    t = draw(st.integers(0, 10**6))
    a = t
    for _ in range(draw(st.integers(1, 10))):
        action = draw(st.sampled_from(["gop"] * 6 + ["restart", "jump_back", "jump_forward"]))
        if action == "restart":
            script.append("restart")
            configs()
            t = a = draw(st.integers(0, 5000))
            continue
        if action == "jump_back":
            t = a = max(0, t - draw(st.integers(1, 20_000)))
        elif action == "jump_forward":
            t = a = t + draw(st.integers(10_001, 60_000))
        interval = draw(st.sampled_from([20, 33, 40, 100, 250]))
        count = draw(st.integers(1, 40))
        for i in range(count):
            if has_video:
                size = draw(st.integers(0, 400))
                cts = draw(st.sampled_from([0, interval]))
                script.append(video(t, key=i == 0, size=size, cts=cts))
            while has_audio and a < t + interval:
                script.append(audio(a))
                a += 23
            t += interval
    if draw(st.booleans()):
        script.append("finish")
    return has_video, has_audio, script


@settings(max_examples=80, deadline=None)
@given(stream_scripts(), st.sampled_from([0.5, 1.0, 2.0, 2.5]), st.integers(1, 6))
def test_generated_streams(script_case, target: float, window: int) -> None:
    has_video, _, script = script_case
    checker = Checker(HlsSegmenter(target_duration=target, window=window), slack=0.25)
    for step in script:
        if step == "restart":
            checker.discontinuity()
        elif step == "finish":
            checker.finish()
        else:
            checker.push(step)
    checker.check_segments(has_video=has_video)


# --- interop: a real clip ------------------------------------------------------------------------


@pytest.mark.interop
def test_segments_of_a_real_clip_decode_with_ffmpeg(tmp_path: Path) -> None:
    ffmpeg = require_tool("ffmpeg")
    frames = read_flv(encode_flv(tmp_path / "demo.flv", size="640x360", rate=25, seconds=9, gop=25))
    seg = HlsSegmenter(target_duration=2.0, window=20)
    checker = Checker(seg)
    out = tmp_path / "hls"
    out.mkdir()

    def save(events: list[SegmentEvent]) -> None:
        for event in events:
            if isinstance(event, SegmentClosed):
                (out / event.name).write_bytes(event.data)

    for frame in frames:
        save(checker.push(frame))
    save(checker.finish())
    (out / "index.m3u8").write_text(seg.playlist())
    assert len(checker.order) == 5
    assert sum(c.duration for c in checker.closed.values()) == pytest.approx(9.0)
    total_video = 0
    for sequence in checker.order:
        path = out / checker.closed[sequence].name
        result = subprocess.run(
            [ffmpeg, "-v", "error", "-i", str(path), "-f", "null", "-"],
            capture_output=True,
            timeout=60,
        )
        assert result.returncode == 0 and result.stderr == b"", result.stderr
        probe = ffprobe_json(path, "-count_frames", "-show_entries", "stream=codec_name,nb_read_frames")
        counts = {s["codec_name"]: int(s["nb_read_frames"]) for s in probe["streams"]}
        assert set(counts) == {"h264", "aac"}
        total_video += counts["h264"]
    assert total_video == sum(1 for f in frames if f.is_video and not f.config)
    # The playlist as a whole plays through ffmpeg's HLS demuxer.
    result = subprocess.run(
        [ffmpeg, "-v", "error", "-i", str(out / "index.m3u8"), "-f", "null", "-"],
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 0 and result.stderr == b"", result.stderr
    probe = ffprobe_json(
        out / "index.m3u8",
        "-count_frames",
        "-select_streams",
        "v:0",
        "-show_entries",
        "stream=nb_read_frames",
    )
    assert int(probe["streams"][0]["nb_read_frames"]) == total_video
    assert STREAM_TYPES["h264"] == 0x1B
