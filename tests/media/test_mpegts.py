"""Tests of arcly_trio.media.mpegts: packet structure, tables, timestamps and PCR parsed back by
an independent reader (``tests/_mpegts.py``), for hypothesis-generated frame sequences; and interop: ffmpeg and ffprobe
decode what the muxer writes from real ffmpeg-encoded H.264/HEVC/AAC/MP3.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arcly_trio.core.errors import LocalProtocolError
from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.media.codecs import (
    HEVC_NAL_AUD,
    HEVC_NAL_PPS,
    HEVC_NAL_SPS,
    HEVC_NAL_VPS,
    CodecError,
    adts_header,
    nal_type,
    parse_audio_specific_config,
)
from arcly_trio.media.mpegts import (
    AUDIO_PID,
    PCR_DELAY,
    PCR_INTERVAL,
    PMT_PID,
    TIMESTAMP_OFFSET,
    VIDEO_PID,
    TsMuxer,
    crc32_mpeg2,
    ms_to_90k,
)
from tests._media import build_avcc, build_hvcc, encode_flv, encode_hevc, ffprobe_json, read_flv, split_annexb
from tests._mpegts import Pes, demux, parse_packets, read_pat, read_pmt, read_section
from tests._tools import require_tool

# --- unit tests ----------------------------------------------------------------------------------


def test_crc32_mpeg2_check_value() -> None:
    assert crc32_mpeg2(b"123456789") == 0x0376E6E7
    assert crc32_mpeg2(b"") == 0xFFFFFFFF


@pytest.mark.parametrize(
    ("video", "audio", "types"),
    [
        ("h264", "aac", {VIDEO_PID: 0x1B, AUDIO_PID: 0x0F}),
        ("hevc", "mp3", {VIDEO_PID: 0x24, AUDIO_PID: 0x03}),
        ("h264", None, {VIDEO_PID: 0x1B}),
        (None, "aac", {AUDIO_PID: 0x0F}),
    ],
)
def test_tables(video: str | None, audio: str | None, types: dict[int, int]) -> None:
    muxer = TsMuxer(video, audio)
    packets = parse_packets(muxer.header() + muxer.header())
    assert [p.pid for p in packets] == [0, PMT_PID, 0, PMT_PID]
    assert [p.cc for p in packets] == [0, 0, 1, 1]
    assert read_pat(read_section(packets[0])) == {1: PMT_PID}
    pcr_pid, streams = read_pmt(read_section(packets[1]))
    assert streams == types
    assert pcr_pid == (VIDEO_PID if video else AUDIO_PID)


def test_bad_construction_and_codec_mismatch() -> None:
    with pytest.raises(LocalProtocolError):
        TsMuxer(None, None)
    with pytest.raises(LocalProtocolError):
        TsMuxer("av1", "aac")
    with pytest.raises(LocalProtocolError):
        TsMuxer("h264", "vorbis")  # Opus it carries (tests/media/test_mpegts_opus.py)
    muxer = TsMuxer("h264", "aac")
    with pytest.raises(LocalProtocolError):
        muxer.mux(Frame(FrameKind.VIDEO, "hevc", 0, 0, b"\x00\x00\x00\x01\x26"))
    # What the program does not carry is ignored.
    audio_only = TsMuxer(None, "mp3")
    assert audio_only.mux(Frame(FrameKind.VIDEO, "h264", 0, 0, b"\x00\x00\x00\x01\x65")) == b""
    assert audio_only.mux(Frame(FrameKind.DATA, "amf0", 0, 0, b"x", config=True)) == b""
    assert audio_only.mux(Frame(FrameKind.AUDIO, "mp3", 0, 0, b"\xff\xfb", track=1)) == b""


ASC = bytes.fromhex("1210")  # AAC-LC, 44.1 kHz, stereo
SPS = bytes.fromhex("6764001fac2ca40140169b0110")
PPS = bytes.fromhex("68ebe3cb22c0")


def avcc(*nals: bytes) -> bytes:
    return b"".join(len(n).to_bytes(4, "big") + n for n in nals)


def test_es_conversion_and_config_handling() -> None:
    muxer = TsMuxer("h264", "aac")
    out = muxer.mux(Frame(FrameKind.AUDIO, "aac", 0, 0, b"raw"))
    assert out == b"" and muxer.dropped_frames == 1  # AAC before its config
    config = build_avcc([SPS], [PPS])
    assert muxer.mux(Frame(FrameKind.VIDEO, "h264", 0, 0, config, config=True)) == b""
    assert muxer.mux(Frame(FrameKind.AUDIO, "aac", 0, 0, ASC, config=True)) == b""
    idr = b"\x65\x88\x84\x00"
    first = avcc(b"\x09\x10", b"\x06\x05", idr)  # its own AUD, an SEI, the IDR
    data = muxer.mux(Frame(FrameKind.VIDEO, "h264", 40, 0, first, keyframe=True))
    data += muxer.mux(Frame(FrameKind.VIDEO, "h264", 80, 40, avcc(b"\x41\x9a")))
    data += muxer.mux(Frame(FrameKind.VIDEO, "h264", 120, 80, avcc(SPS, PPS, idr)))  # IDR, in-band
    data += muxer.mux(Frame(FrameKind.AUDIO, "aac", 23, 23, b"raw"))
    packets, pes = demux(data)
    sc = b"\x00\x00\x00\x01"
    assert pes[0].data == sc + b"\x09\xf0" + sc + SPS + sc + PPS + sc + b"\x06\x05" + sc + idr
    assert pes[1].data == sc + b"\x09\xf0" + sc + b"\x41\x9a"
    assert pes[2].data == sc + b"\x09\xf0" + sc + SPS + sc + PPS + sc + idr
    assert pes[3].data == adts_header(parse_audio_specific_config(ASC), 3) + b"raw"
    assert [p.rai for p in pes] == [True, False, True, False]
    assert [p.stream_id for p in pes] == [0xE0, 0xE0, 0xE0, 0xC0]
    assert [p.length == 0 for p in pes] == [True, True, True, False]
    # Tables come before each keyframe, and only there.
    pids = [p.pid for p in packets if p.pid in (0, PMT_PID)]
    assert len(pids) == 4
    assert pes[0].pts == ms_to_90k(40) == 40 * 90 + TIMESTAMP_OFFSET
    assert pes[0].dts == TIMESTAMP_OFFSET
    assert pes[3].has_dts is False


def test_malformed_frames_raise_codec_errors_and_leave_state_alone() -> None:
    muxer = TsMuxer("h264", "aac")
    good = Frame(FrameKind.VIDEO, "h264", 0, 0, avcc(b"\x65\x88"), keyframe=True)
    out = muxer.mux(good, with_tables=True)
    with pytest.raises(CodecError):
        muxer.mux(Frame(FrameKind.VIDEO, "h264", 40, 40, b"\x00\x00\x01\x00\x65"))
    with pytest.raises(CodecError):
        muxer.mux(Frame(FrameKind.VIDEO, "h264", 40, 40, b"\x01", config=True))
    with pytest.raises(CodecError):  # HE-AAC with USAC core cannot be ADTS
        muxer.mux(Frame(FrameKind.AUDIO, "aac", 0, 0, bytes.fromhex("f94840"), config=True))
    muxer.mux(Frame(FrameKind.AUDIO, "aac", 0, 0, ASC, config=True))
    with pytest.raises(CodecError):  # too long for ADTS
        muxer.mux(Frame(FrameKind.AUDIO, "aac", 10, 10, bytes(9000)))
    out += muxer.mux(Frame(FrameKind.VIDEO, "h264", 40, 40, avcc(b"\x41\x9a")))
    out += muxer.mux(Frame(FrameKind.AUDIO, "aac", 20, 20, b"ok"))
    _, pes = demux(out)  # continuity counters unbroken
    assert len(pes) == 3


@pytest.mark.parametrize("video", [True, False])
def test_every_pes_size_packs_and_stuffs_correctly(video: bool) -> None:
    """ES sizes around every packet boundary: stuffing of 0, 1, 2 and more bytes."""
    muxer = TsMuxer("h264" if video else None, "mp3")
    out = b""
    sizes = list(range(1, 420)) + [65_000, 65_600]
    for i, size in enumerate(sizes):
        payload = bytes([i % 251]) * size
        if video:
            payload = avcc(b"\x41" + payload[1:])
            frame = Frame(FrameKind.VIDEO, "h264", i * 10, i * 10, payload, keyframe=i % 50 == 0)
        else:
            frame = Frame(FrameKind.AUDIO, "mp3", i * 10, i * 10, payload)
        out += muxer.mux(frame)
    _, pes = demux(out)
    assert len(pes) == len(sizes)
    for i, (size, unit) in enumerate(zip(sizes, pes)):
        if video:
            prefix = b"\x00\x00\x00\x01\x09\xf0\x00\x00\x00\x01\x41"
            assert unit.data == prefix + bytes([i % 251]) * (size - 1)
        else:
            assert unit.data == bytes([i % 251]) * size
            assert unit.length == (0 if size + 8 > 0xFFFF else size + 8)


def test_timestamps_wrap_at_33_bits() -> None:
    muxer = TsMuxer("h264", None)
    wrap_ms = (1 << 33) // 90
    out = b""
    dts_list = [wrap_ms - 1500, wrap_ms - 1450, wrap_ms - 1400, wrap_ms - 1350]
    for dts in dts_list:
        out += muxer.mux(Frame(FrameKind.VIDEO, "h264", dts + 80, dts, avcc(b"\x41\x9a")))
    packets, pes = demux(out)
    assert [p.dts for p in pes] == [(d * 90 + TIMESTAMP_OFFSET) % (1 << 33) for d in dts_list]
    assert pes[-1].dts < pes[0].dts  # wrapped
    pcrs = [p.pcr for p in packets if p.pcr is not None]
    assert len(pcrs) == 4 and not any(p.discontinuity for p in packets)
    assert all((b - a) % (1 << 33) == 50 * 90 for a, b in zip(pcrs, pcrs[1:]))


def test_pcr_discontinuity() -> None:
    muxer = TsMuxer("h264", None)
    out = muxer.mux(Frame(FrameKind.VIDEO, "h264", 50_000, 50_000, avcc(b"\x65"), keyframe=True))
    out += muxer.mux(Frame(FrameKind.VIDEO, "h264", 51_000, 49_000, avcc(b"\x41")))  # jitter: held
    out += muxer.mux(Frame(FrameKind.VIDEO, "h264", 0, 0, avcc(b"\x65"), keyframe=True))  # restart
    muxer.discontinuity()
    out += muxer.mux(Frame(FrameKind.VIDEO, "h264", 100_000, 100_000, avcc(b"\x65"), keyframe=True))
    packets, _ = demux(out)
    marked = [(p.pcr, p.discontinuity) for p in packets if p.pcr is not None]
    base = 50_000 * 90 + TIMESTAMP_OFFSET - PCR_DELAY
    assert marked == [
        (base, False),
        (base, False),
        (TIMESTAMP_OFFSET - PCR_DELAY, True),
        (100_000 * 90 + TIMESTAMP_OFFSET - PCR_DELAY, True),
    ]


# --- property: generated frame sequences ---------------------------------------------------------


@st.composite
def frame_sequences(draw: st.DrawFn) -> tuple[str | None, str | None, list[Frame]]:
    video = draw(st.sampled_from(["h264", "hevc", None]))
    audio = draw(st.sampled_from(["aac", "mp3", None] if video else ["aac", "mp3"]))
    tracks: list[list[Frame]] = []
    if video:
        if video == "h264":
            config = build_avcc([SPS], [PPS])
            key_nal, other_nal = b"\x65\x88", b"\x41\x9a"
        else:
            config = build_hvcc(b"\x40\x01\x0c", b"\x42\x01\x01", b"\x44\x01\xc0")
            key_nal, other_nal = b"\x26\x01\xaf", b"\x02\x01\xd0"
        frames = [Frame(FrameKind.VIDEO, video, 0, 0, config, config=True)]
        dts = draw(st.integers(0, 10**7))
        for i in range(draw(st.integers(1, 25))):
            dts += draw(st.integers(0, 150))
            key = i == 0 or draw(st.booleans())
            size = draw(st.integers(0, 1200))
            payload = avcc((key_nal if key else other_nal) + bytes(size))
            cts = draw(st.integers(0, 200))
            frames.append(Frame(FrameKind.VIDEO, video, dts + cts, dts, payload, keyframe=key))
        tracks.append(frames)
        start = frames[1].dts
    else:
        start = draw(st.integers(0, 10**7))
    if audio:
        frames = [Frame(FrameKind.AUDIO, "aac", 0, 0, ASC, config=True)] if audio == "aac" else []
        dts = start + draw(st.integers(-300, 300))
        for _ in range(draw(st.integers(1, 25))):
            dts += draw(st.integers(0, 150))
            frames.append(Frame(FrameKind.AUDIO, audio, dts, dts, bytes(draw(st.integers(1, 700)))))
        tracks.append(frames)
    # Configs first, then the tracks interleaved by DTS with up to 300 ms of jitter (as
    # publishers interleave), keeping each track's own order.
    merged = [f for t in tracks for f in t if f.config]
    heads = [[f for f in t if not f.config] for t in tracks]
    keys = [[f.dts + draw(st.integers(0, 300)) for f in t] for t in heads]
    while any(heads):
        i = min((i for i in range(len(heads)) if heads[i]), key=lambda i: keys[i][0])
        merged.append(heads[i].pop(0))
        keys[i].pop(0)
    return video, audio, merged


@settings(max_examples=120, deadline=None)
@given(frame_sequences(), st.data())
def test_generated_sequences_mux_to_valid_transport_streams(case, data) -> None:
    video, audio, frames = case
    muxer = TsMuxer(video, audio)
    out = b""
    for frame in frames:
        out += muxer.mux(frame, with_tables=data.draw(st.booleans()))
    packets, pes = demux(out)
    media = [f for f in frames if not f.config]
    assert len(pes) == len(media)
    # PAT/PMT are well-formed wherever they appear.
    for packet in packets:
        if packet.pid == 0:
            assert read_pat(read_section(packet)) == {1: PMT_PID}
        elif packet.pid == PMT_PID:
            read_pmt(read_section(packet))
    pcr_pid = VIDEO_PID if video else AUDIO_PID
    last_pcr = None
    seen_pcr: int | None = None
    per_pid: dict[int, list[Pes]] = {}
    pes_iter = iter(pes)
    for packet in packets:
        if packet.pcr is not None:
            assert packet.pid == pcr_pid
            if last_pcr is not None:
                assert packet.pcr >= last_pcr, "PCR went backwards"
            last_pcr = seen_pcr = packet.pcr
        if packet.pid in (VIDEO_PID, AUDIO_PID) and packet.pusi:
            unit = next(pes_iter)
            assert seen_pcr is not None, "a PES before any PCR"
            # The PCR is at most PCR_INTERVAL (100 ms) older than this frame's own PCR time...
            assert unit.dts - PCR_DELAY - seen_pcr <= PCR_INTERVAL
            # ...and never ahead of it by more than the interleaving jitter of the input.
            assert seen_pcr <= unit.dts - PCR_DELAY + 300 * 90
            per_pid.setdefault(unit.pid, []).append(unit)
    for pid, units in per_pid.items():
        dts = [u.dts for u in units]
        assert dts == sorted(dts), "DTS not monotonic"
        assert all(u.pts >= u.dts for u in units)
        if pid == pcr_pid:
            assert all(u.pcr is not None for u in units)
    for frame, unit in zip(media, pes):
        assert unit.pid == (VIDEO_PID if frame.is_video else AUDIO_PID)
        assert unit.pts == ms_to_90k(frame.pts) and unit.dts == ms_to_90k(frame.dts)
        assert unit.has_dts == (frame.pts != frame.dts)
        assert unit.rai == (frame.is_video and frame.keyframe)
        if frame.is_audio:
            header = b""
            if audio == "aac":
                header = adts_header(parse_audio_specific_config(ASC), len(frame.payload))
            assert unit.data == header + frame.payload
        else:
            nals = split_annexb(unit.data)
            aud = nal_type(nals[0], video)
            assert aud == (9 if video == "h264" else HEVC_NAL_AUD)
            if frame.keyframe:
                expected = [7, 8] if video == "h264" else [HEVC_NAL_VPS, HEVC_NAL_SPS, HEVC_NAL_PPS]
                assert [nal_type(n, video) for n in nals[1 : 1 + len(expected)]] == expected
    # Tables appear before each keyframe.
    if video:
        for i, packet in enumerate(packets):
            if packet.pid == VIDEO_PID and packet.rai:
                assert [p.pid for p in packets[i - 2 : i]] == [0, PMT_PID]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(["h264", "hevc"]), st.booleans())
def test_arbitrary_video_payloads_raise_only_codec_errors(payload: bytes, codec: str, config: bool) -> None:
    muxer = TsMuxer(codec, "aac")
    try:
        out = muxer.mux(Frame(FrameKind.VIDEO, codec, 0, 0, payload, keyframe=True, config=config))
    except CodecError:
        return
    demux(out)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=20), st.binary(max_size=100))
def test_arbitrary_audio_payloads_raise_only_codec_errors(config: bytes, payload: bytes) -> None:
    muxer = TsMuxer(None, "aac")
    try:
        muxer.mux(Frame(FrameKind.AUDIO, "aac", 0, 0, config, config=True))
    except CodecError:
        return
    demux(muxer.mux(Frame(FrameKind.AUDIO, "aac", 0, 0, payload)))


# --- interop with ffmpeg / ffprobe ---------------------------------------------------------------


def run_quiet_decode(path: Path) -> None:
    ffmpeg = require_tool("ffmpeg")
    result = subprocess.run(
        [ffmpeg, "-v", "error", "-i", str(path), "-f", "null", "-"],
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == 0
    assert result.stderr.decode() == "", result.stderr.decode()


def count_frames(path: Path) -> dict[str, int]:
    probe = ffprobe_json(path, "-count_frames", "-show_entries", "stream=codec_name,nb_read_frames")
    return {s["codec_name"]: int(s["nb_read_frames"]) for s in probe["streams"]}


def mux_all(frames: list[Frame], video: str | None, audio: str | None) -> bytes:
    muxer = TsMuxer(video, audio)
    return b"".join(muxer.mux(f, with_tables=i == 0) for i, f in enumerate(frames))


@pytest.mark.interop
def test_ffmpeg_decodes_h264_aac(tmp_path: Path) -> None:
    frames = read_flv(encode_flv(tmp_path / "in.flv", size="640x360", seconds=3, gop=25))
    assert any(f.pts != f.dts for f in frames), "expected B-frames"
    path = tmp_path / "out.ts"
    data = mux_all(frames, "h264", "aac")
    path.write_bytes(data)
    demux(data)
    run_quiet_decode(path)
    expected_video = sum(1 for f in frames if f.is_video and not f.config)
    expected_audio = sum(1 for f in frames if f.is_audio and not f.config)
    assert count_frames(path) == {"h264": expected_video, "aac": expected_audio}
    probe = ffprobe_json(path, "-show_entries", "stream=codec_name,width,height,start_time")
    video = next(s for s in probe["streams"] if s["codec_name"] == "h264")
    assert (video["width"], video["height"]) == (640, 360)
    assert float(video["start_time"]) >= TIMESTAMP_OFFSET / 90_000
    # Packet timestamps survive: ffprobe's video packet PTS are the frames' PTS + 1.4 s.
    probe = ffprobe_json(path, "-select_streams", "v:0", "-show_entries", "packet=pts,dts")
    packets = probe["packets"]
    expected = [(ms_to_90k(f.pts), ms_to_90k(f.dts)) for f in frames if f.is_video and not f.config]
    assert [(p["pts"], p["dts"]) for p in packets] == expected


@pytest.mark.interop
def test_ffmpeg_decodes_mp3_audio_only(tmp_path: Path) -> None:
    frames = read_flv(encode_flv(tmp_path / "in.flv", seconds=2, video=False, audio_args=("-c:a", "libmp3lame")))
    media = [f for f in frames if not f.config]
    assert media and all(f.codec == "mp3" for f in media)
    path = tmp_path / "out.ts"
    data = mux_all(frames, None, "mp3")
    path.write_bytes(data)
    packets, _ = demux(data)
    assert any(p.pcr is not None and p.pid == AUDIO_PID for p in packets)
    run_quiet_decode(path)
    assert count_frames(path) == {"mp3": len(media)}


@pytest.mark.interop
def test_ffmpeg_decodes_hevc(tmp_path: Path) -> None:
    params = "log-level=error:bframes=0:keyint=10"
    units = split_annexb(encode_hevc(tmp_path / "in.hevc", "320x240", 20, params))
    params = {nal_type(u, "hevc"): u for u in units if nal_type(u, "hevc") in (32, 33, 34)}
    config = build_hvcc(params[HEVC_NAL_VPS], params[HEVC_NAL_SPS], params[HEVC_NAL_PPS])
    # Group the other NAL units into access units: a new picture starts at each slice whose
    # first_slice_segment_in_pic_flag is set (x265 writes one slice per picture here).
    access_units: list[list[bytes]] = []
    pending: list[bytes] = []
    for unit in units:
        kind = nal_type(unit, "hevc")
        if kind in (32, 33, 34, HEVC_NAL_AUD):
            continue
        pending.append(unit)
        if kind < 32:  # a slice ends the access unit
            access_units.append(pending)
            pending = []
    assert len(access_units) == 20
    frames = [Frame(FrameKind.VIDEO, "hevc", 0, 0, config, config=True)]
    for i, au in enumerate(access_units):
        key = any(16 <= nal_type(n, "hevc") <= 23 for n in au)
        frames.append(Frame(FrameKind.VIDEO, "hevc", i * 100, i * 100, avcc(*au), keyframe=key))
    path = tmp_path / "out.ts"
    data = mux_all(frames, "hevc", None)
    path.write_bytes(data)
    demux(data)
    run_quiet_decode(path)
    assert count_frames(path) == {"hevc": 20}
