"""The sans-IO MPEG-TS demuxer: round trips through the project's own muxer, chunking, loss and
resynchronisation, 33-bit wrap, limits, fuzzing, and captures made by ffmpeg 5.1 and ffmpeg 8."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.media.codecs import parse_avc_config, parse_hevc_config, split_nal_units
from arcly_trio.media.codecs.h264 import avc_config
from arcly_trio.media.mpegts import PACKET_SIZE, VIDEO_PID, TsMuxer, crc32_mpeg2
from arcly_trio.media.ts_demux import TsDemuxer, TsError, TsLimits, annexb_nal_units
from tests._tools import require_ffmpeg8, require_tool

SPS = bytes.fromhex("6764001fac2ca40140169b0110")
PPS = bytes.fromhex("68ebe3cb22c0")
ASC = bytes.fromhex("1210")  # AAC-LC, 44.1 kHz, stereo
AVCC = avc_config([SPS], [PPS])


def avcc(*nals: bytes) -> bytes:
    return b"".join(len(n).to_bytes(4, "big") + n for n in nals)


def demux_all(data: bytes, chunk: int = 1316, **kwargs: object) -> tuple[TsDemuxer, list[Frame]]:
    demuxer = TsDemuxer(**kwargs)  # type: ignore[arg-type]
    frames: list[Frame] = []
    for i in range(0, len(data), chunk):
        frames += demuxer.feed(data[i : i + chunk])
    frames += demuxer.flush()
    return demuxer, frames


def media(frames: list[Frame], kind: FrameKind) -> list[Frame]:
    return [f for f in frames if f.kind is kind and not f.config]


def without_parameter_sets(payload: bytes) -> list[bytes]:
    return [n for n in split_nal_units(payload) if n[0] & 0x1F not in (7, 8)]


def mux(frames: list[Frame], video: str | None = "h264", audio: str | None = "aac", **kwargs: object) -> bytes:
    muxer = TsMuxer(video, audio, **kwargs)  # type: ignore[arg-type]
    return muxer.header() + b"".join(muxer.mux(f) for f in frames)


def gop_stream(count: int = 12, gop: int = 4, body: int = 1500) -> list[Frame]:
    frames = [
        Frame(FrameKind.VIDEO, "h264", 0, 0, AVCC, config=True),
        Frame(FrameKind.AUDIO, "aac", 0, 0, ASC, config=True),
    ]
    for i in range(count):
        key = i % gop == 0
        nal = (b"\x65" if key else b"\x41") + bytes([i + 1]) * body
        frames.append(Frame(FrameKind.VIDEO, "h264", i * 40 + 40, i * 40, avcc(nal), keyframe=key))
        frames.append(Frame(FrameKind.AUDIO, "aac", i * 40 + 5, i * 40 + 5, bytes([0x21, i + 1]) * 50))
    return frames


# --- round trips through the project's muxer ---------------------------------------------------


@st.composite
def streams(draw: st.DrawFn) -> list[Frame]:
    frames = [
        Frame(FrameKind.VIDEO, "h264", 0, 0, AVCC, config=True),
        Frame(FrameKind.AUDIO, "aac", 0, 0, ASC, config=True),
    ]
    dts = 0
    nonzero = st.binary(min_size=1, max_size=3000).map(lambda b: bytes(x or 1 for x in b))
    for i in range(draw(st.integers(1, 20))):
        key = i == 0 or draw(st.booleans())
        nals = [(b"\x65" if key else b"\x41") + draw(nonzero) for _ in range(draw(st.integers(1, 3)))]
        cts = draw(st.integers(0, 200))
        frames.append(Frame(FrameKind.VIDEO, "h264", dts + cts, dts, avcc(*nals), keyframe=key))
        for _ in range(draw(st.integers(0, 2))):
            audio = dts + draw(st.integers(0, 40))
            frames.append(Frame(FrameKind.AUDIO, "aac", audio, audio, draw(st.binary(min_size=1, max_size=800))))
        dts += draw(st.integers(1, 100))
    return frames


def check_round_trip(sent: list[Frame], got: list[Frame]) -> None:
    video_in, video_out = media(sent, FrameKind.VIDEO), media(got, FrameKind.VIDEO)
    audio_in, audio_out = media(sent, FrameKind.AUDIO), media(got, FrameKind.AUDIO)
    assert [(f.pts, f.dts, f.keyframe) for f in video_out] == [(f.pts, f.dts, f.keyframe) for f in video_in]
    assert [without_parameter_sets(f.payload) for f in video_out] == [split_nal_units(f.payload) for f in video_in]
    assert [(f.pts, f.payload) for f in audio_out] == [(f.pts, f.payload) for f in audio_in]
    configs = [f for f in got if f.config]
    expected = [("h264", AVCC)] + ([("aac", ASC)] if audio_in else [])
    assert sorted((f.codec, f.payload) for f in configs) == sorted(expected)
    # Each config comes before the first frame of its stream.
    for config in configs:
        first = next(f for f in got if f.kind is config.kind and not f.config)
        assert got.index(config) < got.index(first)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(), st.lists(st.integers(1, 4000), min_size=1, max_size=30))
def test_round_trip_through_the_muxer_in_any_chunking(sent: list[Frame], cuts: list[int]) -> None:
    data = mux(sent)
    whole, expected = demux_all(data, chunk=len(data))
    check_round_trip(sent, expected)
    demuxer = TsDemuxer()
    got: list[Frame] = []
    pos = 0
    for cut in cuts * (len(data) // sum(cuts) + 1):
        got += demuxer.feed(data[pos : pos + cut])
        pos += cut
        if pos >= len(data):
            break
    got += demuxer.flush()
    assert [(f.kind, f.pts, f.dts, f.payload, f.keyframe, f.config) for f in got] == [
        (f.kind, f.pts, f.dts, f.payload, f.keyframe, f.config) for f in expected
    ]
    assert demuxer.stats.continuity_errors == demuxer.stats.resyncs == demuxer.stats.malformed == 0


def test_timestamps_unwrap_across_the_33_bit_wrap() -> None:
    sent = gop_stream(count=30)
    # The first DTS is 2 s before the wrap: the stream crosses it half way.
    data = mux(sent, timestamp_offset=(1 << 33) - 2 * 90_000)
    _, got = demux_all(data)
    check_round_trip(sent, got)
    assert media(got, FrameKind.VIDEO)[-1].dts == 29 * 40


def test_audio_only_and_pcr_on_the_frames_timeline() -> None:
    sent = [f for f in gop_stream() if f.is_audio]
    demuxer, got = demux_all(mux(sent, video=None))
    # The first DTS of the stream (5 ms here) is 0 on the frames' timeline.
    expected = [(f.pts - 5, f.payload) for f in media(sent, FrameKind.AUDIO)]
    assert [(f.pts, f.payload) for f in media(got, FrameKind.AUDIO)] == expected
    assert demuxer.stats.video is None and demuxer.stats.audio == "aac"
    assert demuxer.stats.pcr_ms is not None and demuxer.stats.pcr_ms < sent[-1].dts


def test_several_adts_frames_in_one_pes_are_spaced_by_1024_samples() -> None:
    muxer = TsMuxer(None, "aac")
    muxer.mux(Frame(FrameKind.AUDIO, "aac", 0, 0, ASC, config=True))
    single = [muxer.mux(Frame(FrameKind.AUDIO, "aac", 0, 0, bytes([i + 1]) * 20)) for i in range(3)]
    # Rebuild one PES holding the three ADTS frames from the three PES packets the muxer made.
    adts = b"".join(p[4 + 1 + p[4] + 14 : 188] for p in single)  # after the AF and the PES header
    first = single[0]
    header = first[4 + 1 + first[4] : 4 + 1 + first[4] + 14]
    pes = header[:4] + (len(adts) + 8).to_bytes(2, "big") + header[6:] + adts
    assert len(pes) <= 184
    packet = bytes((0x47, 0x41, 0x01, 0x10)) + pes
    packet = (
        packet[:4] + bytes((183 - len(pes),)) + (b"\x00" + b"\xff" * (182 - len(pes)) if len(pes) < 183 else b"") + pes
    )
    packet = bytes((0x47, 0x41, 0x01, 0x30)) + packet[4:]
    got = TsDemuxer().feed(muxer.header() + packet)
    frames = media(got, FrameKind.AUDIO)
    assert [f.payload for f in frames] == [bytes([i + 1]) * 20 for i in range(3)]
    assert [f.pts for f in frames] == [0, 1024 * 1000 // 44100, 2 * 1024 * 1000 // 44100]


# --- loss, duplicates, garbage --------------------------------------------------------------


def packets_of(data: bytes) -> list[bytes]:
    return [data[i : i + PACKET_SIZE] for i in range(0, len(data), PACKET_SIZE)]


def pid_of(packet: bytes) -> int:
    return (packet[1] & 0x1F) << 8 | packet[2]


def test_a_lost_packet_drops_video_until_the_next_keyframe() -> None:
    sent = gop_stream(count=12, gop=4)
    packets = packets_of(mux(sent))
    # Drop a packet in the middle of frame 1 (a non-keyframe): frames 1-3 go, 4 (a keyframe) plays.
    starts = [i for i, p in enumerate(packets) if pid_of(p) == VIDEO_PID and p[1] & 0x40]
    victim = starts[1] + 3
    assert pid_of(packets[victim]) == VIDEO_PID
    demuxer, got = demux_all(b"".join(packets[:victim] + packets[victim + 1 :]))
    video = media(got, FrameKind.VIDEO)
    assert [f.dts for f in video] == [0] + [i * 40 for i in range(4, 12)]
    assert demuxer.stats.continuity_errors == 1
    assert demuxer.stats.lost_packets == 1
    assert demuxer.stats.dropped_frames == 2  # frames 2 and 3 (frame 1 was the broken PES)
    assert len(media(got, FrameKind.AUDIO)) == 12


def test_duplicates_and_garbage_between_packets_change_nothing() -> None:
    sent = gop_stream()
    packets = packets_of(mux(sent))
    noisy = b"".join(p + p + b"\x47garbage\x00" if i % 7 == 3 else p for i, p in enumerate(packets))
    demuxer, got = demux_all(noisy, chunk=500)
    check_round_trip(sent, got)
    assert demuxer.stats.duplicates > 0
    assert demuxer.stats.resyncs > 0
    assert demuxer.stats.continuity_errors == 0


@given(
    st.lists(
        st.tuples(st.integers(0, 10_000), st.sampled_from(["drop", "repeat", "cc", "start", "adaptation", "error"])),
        max_size=12,
    ),
    st.sampled_from([1316, 188 * 3, 500]),
    st.sampled_from([TsLimits(), TsLimits(max_video_pes=2000)]),
)
@settings(max_examples=30, deadline=None)
def test_feed_matches_the_packet_by_packet_path(edits: list[tuple[int, str]], chunk: int, limits: TsLimits) -> None:
    """``feed`` takes PES continuation packets on a fast path: whatever the damage (lost,
    repeated, renumbered packets, a start or adaptation field where none was, transport errors,
    a PES over its limit), its frames and counters are those of the general per-packet path."""
    sizes = iter([347, 715, 600] * 4)  # audio PES packets (they carry their length) over 2, 4, 4 TS packets
    frames = [  # (the first two fill them exactly: no adaptation field in their last packet)
        attrs.evolve(f, payload=bytes([0x21]) * next(sizes)) if f.kind is FrameKind.AUDIO and not f.config else f
        for f in gop_stream(count=6, gop=3, body=2500)
    ]
    packets = packets_of(mux(frames))
    for index, edit in edits:
        index %= len(packets)
        packet = bytearray(packets[index])
        if edit == "drop":
            del packets[index]
            continue
        if edit == "repeat":
            packets.insert(index, bytes(packet))
            continue
        if edit == "cc":
            packet[3] = packet[3] & 0xF0 | (packet[3] + 5) & 0x0F
        elif edit == "start":
            packet[1] |= 0x40
        elif edit == "adaptation":
            packet[3] |= 0x20
            packet[4] = 0
        else:
            packet[1] |= 0x80
        packets[index] = bytes(packet)
    data = b"".join(packets)
    fed = TsDemuxer(limits=limits)
    got: list[Frame] = []
    for offset in range(0, len(data), chunk):
        got += fed.feed(data[offset : offset + chunk])
        assert all(es.size <= es.limit for es in fed._es.values())
    reference = TsDemuxer(limits=limits)
    for packet in packets:
        reference._packet(packet)  # the general path, one packet at a time

    def key(frames: list[Frame]) -> list[tuple[object, ...]]:
        return [(f.kind, f.codec, f.pts, f.dts, bytes(f.payload), f.keyframe, f.config) for f in frames]

    assert key(got) == key(reference._out)
    assert fed.stats == reference.stats.__class__(**{**attrs.asdict(reference.stats), "bytes": len(data)})


def test_bytes_that_are_not_mpeg_ts_raise_ts_error() -> None:
    demuxer = TsDemuxer(limits=TsLimits(max_unsynced=10_000))
    demuxer.feed(b"\x00" * 5000)
    assert demuxer.held == 0  # bytes with no sync byte at all are not kept
    with pytest.raises(TsError):
        demuxer.feed(b"\x00" * 6000)
    assert demuxer.held < 2 * PACKET_SIZE


def test_an_oversized_pes_is_dropped_and_the_next_keyframe_plays() -> None:
    sent = gop_stream(count=8, gop=4, body=1500)
    big = Frame(FrameKind.VIDEO, "h264", 1000, 1000, avcc(b"\x41" + b"\x07" * 20_000))
    sent.insert(6, big)  # after frame 1
    sent = sorted((f for f in sent if not f.config), key=lambda f: f.dts)
    sent = [
        Frame(FrameKind.VIDEO, "h264", 0, 0, AVCC, config=True),
        Frame(FrameKind.AUDIO, "aac", 0, 0, ASC, config=True),
        *sent,
    ]
    demuxer, got = demux_all(mux(sent), limits=TsLimits(max_video_pes=10_000))
    assert demuxer.stats.oversized_pes == 1
    assert all(len(f.payload) < 10_000 for f in got)
    assert [f.dts for f in media(got, FrameKind.VIDEO)][-4:] == [160, 200, 240, 280]


def section_packet(pid: int, section: bytes) -> bytes:
    body = section + crc32_mpeg2(section).to_bytes(4, "big")
    packet = bytes((0x47, 0x40 | pid >> 8, pid & 0xFF, 0x10, 0)) + body
    return packet + b"\xff" * (PACKET_SIZE - len(packet))


def pmt_with(streams: bytes) -> bytes:
    body = b"\x00\x01\xc1\x00\x00" + (0xE000 | VIDEO_PID).to_bytes(2, "big") + b"\xf0\x00" + streams
    return b"\x02" + (0xB000 | (len(body) + 4)).to_bytes(2, "big") + body


def test_scte35_and_unknown_pids_are_ignored_and_a_bad_crc_is_counted() -> None:
    sent = gop_stream()
    packets = packets_of(mux(sent))
    # A PMT with an SCTE-35 stream on PID 0x200 (and the normal two), then packets on it.
    streams = b"\x1b\xe1\x00\xf0\x00" + b"\x0f\xe1\x01\xf0\x00" + b"\x86\xe2\x00\xf0\x00"
    pmt = section_packet(0x1000, pmt_with(streams))
    pmt = pmt[:3] + bytes((0x11,)) + pmt[4:]  # continuity counter 1 (after the muxer's 0)
    bad = bytearray(section_packet(0x1000, pmt_with(b"\x02\xe1\x00\xf0\x00")))
    bad[3] = 0x12
    bad[20] ^= 0xFF
    scte = bytes((0x47, 0x42, 0x00, 0x10)) + bytes(range(184))
    data = packets[0] + packets[1] + pmt + bytes(bad) + scte * 3 + b"".join(packets[2:])
    demuxer, got = demux_all(data)
    check_round_trip(sent, got)
    assert demuxer.stats.crc_errors == 1
    assert demuxer.stats.video == "h264"


# --- fuzzing ----------------------------------------------------------------------------------

SMALL = TsLimits(max_video_pes=4096, max_audio_pes=1024, max_unsynced=4096)
HELD_BOUND = 2 * PACKET_SIZE + 2 * 1024 + SMALL.max_video_pes + SMALL.max_audio_pes + 0x1FFF


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=600), max_size=12))
def test_arbitrary_bytes_raise_only_ts_error_and_hold_at_most_the_limits(chunks: list[bytes]) -> None:
    demuxer = TsDemuxer(limits=SMALL)
    for chunk in chunks:
        try:
            demuxer.feed(chunk)
        except TsError:
            return
        assert demuxer.held <= HELD_BOUND


FUZZ_BASE = mux(gop_stream(count=6, body=300))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(FUZZ_BASE) - 1), st.integers(0, 255)), min_size=1, max_size=40))
def test_mutated_streams_raise_only_ts_error_and_hold_at_most_the_limits(edits: list[tuple[int, int]]) -> None:
    data = bytearray(FUZZ_BASE)
    for pos, value in edits:
        data[pos] = value
    demuxer = TsDemuxer(limits=SMALL)
    try:
        for i in range(0, len(data), 188 * 3):
            demuxer.feed(bytes(data[i : i + 188 * 3]))
            assert demuxer.held <= HELD_BOUND
        demuxer.flush()
    except TsError:
        pass


def test_annexb_nal_units() -> None:
    assert annexb_nal_units(b"junk\x00\x00\x00\x01\x67\x01\x00\x00\x01\x68\x02\x00\x00") == [b"\x67\x01", b"\x68\x02"]
    assert annexb_nal_units(b"") == []


# --- captures made by ffmpeg ------------------------------------------------------------------


def capture(tool: str, path: Path, video: str, audio: str) -> bytes:
    subprocess.run(
        [tool, "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=30",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "2",
         "-c:v", video, "-g", "30", "-c:a", audio, "-f", "mpegts", str(path)],
        check=True, timeout=60,
    )  # fmt: skip
    return path.read_bytes()


@pytest.mark.interop
@pytest.mark.parametrize(
    ("video", "audio", "codecs", "ffmpeg8"),
    [
        ("libx264", "aac", ("h264", "aac"), False),
        ("libx265", "aac", ("hevc", "aac"), False),
        ("libx264", "libopus", ("h264", "opus"), True),
    ],
)
def test_ffmpeg_captures(tmp_path: Path, video: str, audio: str, codecs: tuple[str, str], ffmpeg8: bool) -> None:
    tool = require_ffmpeg8() if ffmpeg8 else require_tool("ffmpeg")
    data = capture(tool, tmp_path / "in.ts", video, audio)
    demuxer, got = demux_all(data)
    configs = [f for f in got if f.config]
    assert [(f.kind, f.codec) for f in configs] == [(FrameKind.VIDEO, codecs[0]), (FrameKind.AUDIO, codecs[1])]
    video_frames, audio_frames = media(got, FrameKind.VIDEO), media(got, FrameKind.AUDIO)
    assert len(video_frames) == 60
    assert video_frames[0].keyframe and video_frames[0].dts == 0
    assert sum(f.keyframe for f in video_frames) == 2
    assert all(b.dts > a.dts for a, b in zip(video_frames, video_frames[1:]))
    assert video_frames[-1].dts == 1966
    # 2 s of audio (AAC: 1024-sample frames at 48 kHz, Opus: 20 ms), on the same timeline.
    assert 1900 <= audio_frames[-1].pts - audio_frames[0].pts + (20 if codecs[1] == "opus" else 21) <= 2100
    assert abs(audio_frames[0].pts - video_frames[0].dts) < 100
    if codecs[0] == "h264":
        assert parse_avc_config(configs[0].payload).sps
    else:
        assert parse_hevc_config(configs[0].payload).sps
    stats = demuxer.stats
    assert (stats.continuity_errors, stats.malformed, stats.dropped_frames, stats.resyncs) == (0, 0, 0, 0)


# --- the other audio codecs and the table bounds ------------------------------------------------

MP3_HEADER = bytes.fromhex("fffb9064")  # MPEG-1 layer III, 128 kbit/s, 44.1 kHz


def test_mp3_round_trip_and_other_mpeg_audio_layers_are_dropped() -> None:
    frames = [Frame(FrameKind.AUDIO, "mp3", i * 26, i * 26, MP3_HEADER + bytes([i + 1]) * 413) for i in range(5)]
    demuxer, got = demux_all(mux(frames, video=None, audio="mp3"))
    assert [(f.codec, f.pts, f.payload) for f in got] == [("mp3", f.pts, f.payload) for f in frames]
    layer2 = [Frame(FrameKind.AUDIO, "mp3", 0, 0, bytes.fromhex("fffd9004") + bytes(200))]
    demuxer, got = demux_all(mux(layer2, video=None, audio="mp3"))
    assert got == [] and demuxer.stats.malformed == 1


def opus_pes_stream(units: bytes, descriptors: bytes, stream_type: int = 0x06) -> bytes:
    """PAT, a PMT with one audio stream (PID 0x101, Opus's stream type 0x06 unless told), one
    PES of ``units``."""
    pat_body = b"\x00\x01\xc1\x00\x00" + b"\x00\x01\xf0\x00"
    pat = section_packet(0, b"\x00" + (0xB000 | (len(pat_body) + 4)).to_bytes(2, "big") + pat_body)
    entry = bytes((stream_type,)) + b"\xe1\x01" + (0xF000 | len(descriptors)).to_bytes(2, "big") + descriptors
    body = b"\x00\x01\xc1\x00\x00" + b"\xe1\x01" + b"\xf0\x00" + entry
    pmt = section_packet(0x1000, b"\x02" + (0xB000 | (len(body) + 4)).to_bytes(2, "big") + body)
    pts = 90_000
    stamp = bytes(
        (
            0x21 | (pts >> 29) & 0x0E,
            (pts >> 22) & 0xFF,
            (pts >> 14) & 0xFE | 1,
            (pts >> 7) & 0xFF,
            (pts << 1) & 0xFE | 1,
        )
    )
    pes = b"\x00\x00\x01\xbd" + (len(units) + 8).to_bytes(2, "big") + b"\x80\x80\x05" + stamp + units
    assert len(pes) <= 182
    packet = (
        bytes((0x47, 0x41, 0x01, 0x30, 183 - len(pes)))
        + (b"\x00" + b"\xff" * (182 - len(pes)) if len(pes) < 183 else b"")
        + pes
    )
    return pat + pmt + packet


def test_opus_access_units_with_trims_and_extensions() -> None:
    first = b"\xfc" + b"\x01" * 30  # TOC config 31 (CELT 20 ms), one frame
    second = b"\x08" + b"\x02" * 20  # config 1 (SILK 20 ms), code 0
    units = b"\x7f\xe0" + bytes((len(first),)) + first
    units += b"\x7f\xfc" + bytes((len(second),)) + b"\x00\x10" + b"\x00\x20" + b"\x02\xaa\xbb" + second
    descriptors = b"\x05\x04Opus" + b"\x7f\x02\x80\x01"  # registration, extension: 1 channel
    got = TsDemuxer().feed(opus_pes_stream(units, descriptors))
    assert [(f.codec, f.config, f.pts) for f in got] == [("opus", True, 0), ("opus", False, 0), ("opus", False, 20)]
    assert got[0].payload[:8] == b"OpusHead" and got[0].payload[9] == 1
    assert [f.payload for f in got[1:]] == [first, second]
    # Without the registration descriptor the stream is not Opus: ignored.
    assert TsDemuxer().feed(opus_pes_stream(units, b"")) == []


def test_pat_and_pmt_entries_read_are_bounded() -> None:
    limits = TsLimits(max_programs=3, max_streams=2)
    entries = b"".join((n).to_bytes(2, "big") + (0xE000 | (0x1000 + n)).to_bytes(2, "big") for n in range(1, 200))
    body = b"\x00\x01\xc1\x00\x00" + entries
    pat = b"\x00" + (0xB000 | (len(body) + 4)).to_bytes(2, "big") + body
    # A section longer than one packet: the first 183 bytes, then the rest in a continuation packet.
    whole = pat + crc32_mpeg2(pat).to_bytes(4, "big")
    assert len(whole) <= 1024
    packets = b""
    pos, cc, first = 0, 0, True
    while pos < len(whole):
        room = 183 if first else 184
        chunk = whole[pos : pos + room]
        head = bytes((0x47, 0x40 if first else 0x00, 0x00, 0x10 | cc)) + (b"\x00" if first else b"")
        packets += (head + chunk).ljust(PACKET_SIZE, b"\xff")
        pos, cc, first = pos + room, cc + 1, False
    demuxer = TsDemuxer(limits=limits)
    demuxer.feed(packets)
    assert demuxer.stats.programs == 3 and demuxer.stats.crc_errors == 0
    assert demuxer._program == 1 and demuxer._pmt is not None and demuxer._pmt.pid == 0x1001
    # PMT entries past max_streams are not read: an H.264 stream third in the list is not seen.
    pmt = section_packet(0x1001, pmt_with(b"\x86\xe2\x00\xf0\x00" * 2 + b"\x1b\xe1\x00\xf0\x00"))
    demuxer.feed(pmt)
    assert demuxer.stats.video is None
    demuxer = TsDemuxer(limits=TsLimits(max_programs=3, max_streams=3))
    demuxer.feed(packets + pmt)
    assert demuxer.stats.video == "h264"


def test_a_new_pmt_that_moves_the_video_restarts_it_with_a_config_first() -> None:
    before = packets_of(mux(gop_stream(count=4)))
    later = [f.shifted(1000) if not f.config else f for f in gop_stream(count=4)]
    after = []
    new_pmt = section_packet(0x1000, pmt_with(b"\x1b\xe1\x02\xf0\x00" + b"\x0f\xe1\x01\xf0\x00"))
    for packet in packets_of(mux(later)):
        if pid_of(packet) == 0x1000:
            after.append(new_pmt)
        elif pid_of(packet) == VIDEO_PID:
            after.append(packet[:1] + bytes((packet[1] & 0xE0 | 0x01, 0x02)) + packet[3:])  # PID 0x102
        else:
            after.append(packet)
    demuxer, got = demux_all(b"".join(before + after))
    video = [f for f in got if f.is_video]
    assert [(f.config, f.dts) for f in video] == [(True, 0)] + [(False, t) for t in (0, 40, 80, 120)] + [
        (True, 1000)
    ] + [(False, t) for t in (1000, 1040, 1080, 1120)]


_CAPTURE: list[bytes] = []


def ffmpeg_capture() -> bytes:
    """One second of H.264 + AAC from ffmpeg 5.1, made once per test session."""
    if not _CAPTURE:
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / "capture.ts"
            subprocess.run(
                [require_tool("ffmpeg"), "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=25",
                 "-f", "lavfi", "-i", "sine=sample_rate=44100", "-t", "1", "-c:v", "libx264", "-g", "10",
                 "-c:a", "aac", "-f", "mpegts", str(path)],
                check=True, timeout=60,
            )  # fmt: skip
            _CAPTURE.append(path.read_bytes())
    return _CAPTURE[0]


@pytest.mark.interop
@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["flip", "drop", "repeat"]), st.integers(0, 10**6), st.integers(1, 2000)),
        min_size=1,
        max_size=8,
    )
)
def test_damaged_ffmpeg_captures_raise_only_ts_error_and_stay_bounded(edits: list[tuple[str, int, int]]) -> None:
    data = bytearray(ffmpeg_capture())
    for kind, where, size in edits:
        where %= len(data)
        if kind == "flip":
            data[where] ^= 1 + size % 255
        elif kind == "drop":
            del data[where : where + size]
        else:
            data[where:where] = data[where : where + size]
    demuxer = TsDemuxer(limits=SMALL)
    try:
        for i in range(0, len(data), 1316):
            for frame in demuxer.feed(bytes(data[i : i + 1316])):
                assert frame.codec in ("h264", "aac")
            assert demuxer.held <= HELD_BOUND
        demuxer.flush()
    except TsError:
        pass


@pytest.mark.interop
def test_latm_aac_gives_the_frames_adts_gives(tmp_path: Path) -> None:
    # The same encode framed as LATM (stream type 0x11) and as ADTS: the same config and frames.
    results = []
    for flags in (["-mpegts_flags", "latm"], []):
        path = tmp_path / "audio.ts"
        subprocess.run(
            [require_tool("ffmpeg"), "-v", "error", "-y", "-f", "lavfi", "-i", "sine=sample_rate=48000",
             "-t", "1", "-c:a", "aac", *flags, "-f", "mpegts", str(path)],
            check=True, timeout=60,
        )  # fmt: skip
        demuxer, got = demux_all(path.read_bytes())
        assert demuxer.stats.malformed == 0 and demuxer.stats.audio == "aac"
        results.append([(f.config, f.pts, f.payload) for f in got])
    assert len(results[0]) > 40 and results[0] == results[1]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=160))
def test_arbitrary_latm_payloads_are_counted_never_raised(units: bytes) -> None:
    demuxer = TsDemuxer()
    for frame in demuxer.feed(opus_pes_stream(b"\x56\xe0" + bytes((len(units),)) + units, b"", 0x11)):
        assert frame.codec == "aac"
