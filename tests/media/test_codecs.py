"""Tests of arcly_trio.media.codecs: parameter sets and configs from real encoders, checked
against ffprobe; round trips of the NAL unit helpers; arbitrary bytes raise only CodecError.

The helpers the MPEG-TS and HLS tests share (:func:`encode_flv`, :func:`read_flv`, the avcC and
hvcC builders) are in ``tests/_media.py``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arcly_trio.core.errors import LocalProtocolError, RemoteProtocolError
from arcly_trio.media.codecs import (
    AAC_SAMPLE_RATES,
    HEVC_NAL_PPS,
    HEVC_NAL_SPS,
    HEVC_NAL_VPS,
    AacConfig,
    CodecError,
    adts_header,
    annexb,
    avcc_to_annexb,
    has_aud,
    has_idr,
    has_parameter_sets,
    nal_type,
    nal_types,
    parse_audio_specific_config,
    parse_avc_config,
    parse_h264_sps,
    parse_hevc_config,
    parse_hevc_sps,
    remove_emulation_prevention,
    split_nal_units,
)
from tests._media import build_avcc, build_hvcc, encode_flv, encode_hevc, ffprobe_json, read_flv, split_annexb
from tests._tools import require_tool

# --- H.264 -------------------------------------------------------------------------------------

H264_CASES = [
    # size, extra x264 arguments
    ("640x360", ()),
    ("1280x720", ()),
    ("1920x1080", ()),  # cropped from 1088
    ("176x144", ("-profile:v", "baseline")),
    ("322x242", ("-profile:v", "main")),  # cropping on both axes
    ("320x240", ("-pix_fmt", "yuv444p")),  # High 4:4:4, chroma_format_idc 3
    ("320x240", ("-pix_fmt", "yuv422p")),  # High 4:2:2
    ("320x240", ("-x264-params", "cqm=jvt")),  # scaling matrices in the SPS
    ("720x576", ("-flags", "+ildct+ilme", "-x264-params", "tff=1")),  # field coding
    ("1920x1080", ("-flags", "+ildct+ilme", "-x264-params", "tff=1")),  # fields and cropping
]


@pytest.mark.interop
@pytest.mark.parametrize(("size", "extra"), H264_CASES)
def test_h264_sps_matches_ffprobe(tmp_path: Path, size: str, extra: tuple[str, ...]) -> None:
    path = tmp_path / "clip.flv"
    flv = encode_flv(path, size=size, rate=10, seconds=0.3, audio=False, video_args=extra)
    frames = read_flv(flv)
    config = next(f for f in frames if f.config and f.is_video)
    avc = parse_avc_config(config.payload)
    assert avc.nal_length_size == 4
    assert len(avc.sps) == 1 and len(avc.pps) == 1
    sps = parse_h264_sps(avc.sps[0])
    probe = ffprobe_json(path, "-select_streams", "v:0", "-show_entries", "stream=width,height,level,profile")
    stream = probe["streams"][0]
    assert (sps.width, sps.height) == (stream["width"], stream["height"])
    assert sps.level == stream["level"] == avc.level
    assert sps.profile == avc.profile
    expected_profile = {66: "Baseline", 77: "Main", 100: "High", 122: "High 4:2:2", 244: "High 4:4:4"}
    assert stream["profile"].startswith(expected_profile[sps.profile]) or (
        sps.profile == 66 and "Baseline" in stream["profile"]
    )
    if "+ildct+ilme" in extra:
        assert not sps.frame_mbs_only
    if "yuv444p" in extra:
        assert sps.chroma_format == 3
    assert sps.codec_string.startswith("avc1.")


class BitWriter:
    """MSB-first bit writer with exp-Golomb codes, to build parameter sets in tests."""

    def __init__(self) -> None:
        self.bits: list[str] = []

    def u(self, n: int, value: int) -> None:
        if n:
            self.bits.append(format(value, f"0{n}b"))

    def ue(self, value: int) -> None:
        code = value + 1
        self.u(code.bit_length() - 1, 0)
        self.u(code.bit_length(), code)

    def se(self, value: int) -> None:
        self.ue(2 * value - 1 if value > 0 else -2 * value)

    def rbsp(self) -> bytes:
        bits = "".join(self.bits) + "1"
        bits += "0" * (-len(bits) % 8)
        return int(bits, 2).to_bytes(len(bits) // 8, "big")


def add_emulation_prevention(rbsp: bytes) -> bytes:
    out = bytearray()
    zeros = 0
    for byte in rbsp:
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


@st.composite
def h264_sps(draw: st.DrawFn) -> tuple[bytes, dict[str, int | bool]]:
    """A random but valid H.264 SPS and the fields it must parse to."""
    w = BitWriter()
    profile = draw(st.sampled_from([66, 77, 88, 100, 110, 122, 244, 118]))
    level = draw(st.integers(10, 62))
    w.u(8, profile)
    w.u(8, draw(st.integers(0, 255)))
    w.u(8, level)
    w.ue(draw(st.integers(0, 31)))
    chroma, separate, bit_depth = 1, False, 8
    if profile >= 100:
        chroma = draw(st.integers(0, 3))
        w.ue(chroma)
        if chroma == 3:
            separate = draw(st.booleans())
            w.u(1, separate)
        bit_depth = draw(st.integers(8, 14))
        w.ue(bit_depth - 8)
        w.ue(draw(st.integers(0, 6)))
        w.u(1, draw(st.integers(0, 1)))
        scaling = draw(st.booleans())
        w.u(1, scaling)
        if scaling:
            for i in range(12 if chroma == 3 else 8):
                present = draw(st.booleans())
                w.u(1, present)
                if present:
                    size = 16 if i < 6 else 64
                    deltas = draw(st.lists(st.integers(-128, 127), min_size=size, max_size=size))
                    last = 8
                    for delta in deltas:
                        w.se(delta)
                        nxt = (last + delta + 256) % 256
                        if nxt == 0:
                            break
                        last = nxt
    w.ue(draw(st.integers(0, 12)))
    poc_type = draw(st.integers(0, 2))
    w.ue(poc_type)
    if poc_type == 0:
        w.ue(draw(st.integers(0, 12)))
    elif poc_type == 1:
        w.u(1, draw(st.integers(0, 1)))
        w.se(draw(st.integers(-1000, 1000)))
        w.se(draw(st.integers(-1000, 1000)))
        cycle = draw(st.lists(st.integers(-100, 100), max_size=5))
        w.ue(len(cycle))
        for offset in cycle:
            w.se(offset)
    w.ue(draw(st.integers(0, 16)))
    w.u(1, draw(st.integers(0, 1)))
    width_mbs = draw(st.integers(1, 200))
    height_units = draw(st.integers(1, 120))
    w.ue(width_mbs - 1)
    w.ue(height_units - 1)
    frame_mbs_only = draw(st.booleans())
    w.u(1, frame_mbs_only)
    if not frame_mbs_only:
        w.u(1, draw(st.integers(0, 1)))
    w.u(1, 1)
    # Crop units (H.264 Table 6-1 and equations 7-19 to 7-22).
    sub_w, sub_h = {0: (1, 1), 1: (2, 2), 2: (2, 1), 3: (1, 1)}[0 if separate else chroma]
    unit_y = sub_h * (2 - frame_mbs_only)
    full_w, full_h = width_mbs * 16, height_units * 16 * (2 - frame_mbs_only)
    crop = draw(st.booleans())
    w.u(1, crop)
    width, height = full_w, full_h
    if crop:
        left = draw(st.integers(0, (full_w - 1) // sub_w))
        right = draw(st.integers(0, (full_w - 1) // sub_w - left))
        top = draw(st.integers(0, (full_h - 1) // unit_y))
        bottom = draw(st.integers(0, (full_h - 1) // unit_y - top))
        for value in (left, right, top, bottom):
            w.ue(value)
        width -= sub_w * (left + right)
        height -= unit_y * (top + bottom)
    w.u(1, 0)  # no VUI
    nal = b"\x67" + add_emulation_prevention(w.rbsp())
    expected = {
        "profile": profile,
        "level": level,
        "chroma_format": chroma,
        "bit_depth": bit_depth,
        "width": width,
        "height": height,
        "frame_mbs_only": frame_mbs_only,
    }
    return nal, expected


@settings(max_examples=300, deadline=None)
@given(h264_sps())
def test_h264_sps_round_trip(case: tuple[bytes, dict[str, int | bool]]) -> None:
    nal, expected = case
    info = parse_h264_sps(nal)
    assert {key: getattr(info, key) for key in expected} == expected
    for cut in range(1, len(nal) - 1, 3):
        try:
            parse_h264_sps(nal[:cut])
        except CodecError:
            pass


def test_remove_emulation_prevention() -> None:
    assert remove_emulation_prevention(b"\x00\x00\x03\x01") == b"\x00\x00\x01"
    assert remove_emulation_prevention(b"\x00\x00\x03\x00\x00\x03\x03") == b"\x00\x00\x00\x00\x03"
    assert remove_emulation_prevention(b"\x01\x00\x03") == b"\x01\x00\x03"
    assert remove_emulation_prevention(b"abc") == b"abc"


@given(
    st.lists(st.binary(min_size=1, max_size=40), max_size=3),
    st.lists(st.binary(min_size=1, max_size=40), max_size=3),
    st.sampled_from([1, 2, 4]),
)
def test_avc_config_round_trip(sps: list[bytes], pps: list[bytes], size: int) -> None:
    config = parse_avc_config(build_avcc(sps, pps, size))
    assert config.sps == tuple(sps)
    assert config.pps == tuple(pps)
    assert config.nal_length_size == size
    assert (config.profile, config.level) == (100, 31)


def test_avc_config_errors() -> None:
    good = build_avcc([b"\x67\x42"], [b"\x68"])
    for cut in range(len(good)):
        with pytest.raises(CodecError):
            parse_avc_config(good[:cut])
    with pytest.raises(CodecError):
        parse_avc_config(b"\x00" + good[1:])  # configurationVersion 0
    with pytest.raises(CodecError):
        parse_h264_sps(b"\x68\x42\x00\x1f")  # a PPS header
    with pytest.raises(CodecError):
        parse_h264_sps(b"")


# --- HEVC --------------------------------------------------------------------------------------


@pytest.mark.interop
@pytest.mark.parametrize("size", ["640x360", "1920x1080", "642x362", "176x144"])
def test_hevc_sps_and_config_match_ffprobe(tmp_path: Path, size: str) -> None:
    path = tmp_path / "clip.hevc"
    units = split_annexb(encode_hevc(path, size))
    by_type = {}
    for unit in units:
        by_type.setdefault(nal_type(unit, "hevc"), unit)
    sps = parse_hevc_sps(by_type[HEVC_NAL_SPS])
    probe = ffprobe_json(path, "-select_streams", "v:0", "-show_entries", "stream=width,height,level")
    stream = probe["streams"][0]
    assert (sps.width, sps.height) == (stream["width"], stream["height"])
    assert sps.level == stream["level"]
    assert sps.profile == 1 and sps.chroma_format == 1 and sps.bit_depth == 8
    record = build_hvcc(by_type[HEVC_NAL_VPS], by_type[HEVC_NAL_SPS], by_type[HEVC_NAL_PPS], 4)
    config = parse_hevc_config(record)
    assert config.vps == (by_type[HEVC_NAL_VPS],)
    assert config.sps == (by_type[HEVC_NAL_SPS],)
    assert config.pps == (by_type[HEVC_NAL_PPS],)
    assert (config.nal_length_size, config.level, config.profile) == (4, 93, 1)
    for cut in range(len(record)):
        with pytest.raises(CodecError):
            parse_hevc_config(record[:cut])


# --- access units ------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=300), max_size=8), st.sampled_from([1, 2, 3, 4]))
def test_split_nal_units_round_trip(nals: list[bytes], size: int) -> None:
    nals = [n[: (1 << (8 * size)) - 1] for n in nals]
    data = b"".join(len(n).to_bytes(size, "big") + n for n in nals)
    assert split_nal_units(data, size) == nals
    assert avcc_to_annexb(data, size) == b"".join(b"\x00\x00\x00\x01" + n for n in nals)
    assert annexb(nals) == avcc_to_annexb(data, size)


def test_split_nal_units_errors() -> None:
    with pytest.raises(CodecError):
        split_nal_units(b"\x00\x00\x00\x05abc", 4)
    with pytest.raises(CodecError):
        split_nal_units(b"\x00\x00", 4)
    with pytest.raises(LocalProtocolError):
        split_nal_units(b"", 5)
    assert split_nal_units(b"\x00\x00\x00\x00\x00\x00\x00\x01\x09", 4) == [b"\x09"]


def test_access_unit_predicates() -> None:
    h264 = [b"\x09\xf0", b"\x67\x42", b"\x68\xce", b"\x65\x88"]
    assert nal_types(h264, "h264") == [9, 7, 8, 5]
    assert has_idr(h264, "h264") and has_aud(h264, "h264") and has_parameter_sets(h264, "h264")
    assert not has_idr([b"\x41\x9a"], "h264")
    assert not has_parameter_sets([b"\x67\x42", b"\x65"], "h264")
    hevc = [b"\x46\x01\x50", b"\x40\x01", b"\x42\x01", b"\x44\x01", b"\x26\x01\xaf"]
    assert nal_types(hevc, "hevc") == [35, 32, 33, 34, 19]
    assert has_idr(hevc, "hevc") and has_aud(hevc, "hevc") and has_parameter_sets(hevc, "hevc")
    assert not has_idr([b"\x02\x01"], "hevc")  # TRAIL_R
    assert has_idr([b"\x2a\x01"], "hevc")  # CRA
    with pytest.raises(LocalProtocolError):
        nal_type(b"\x65", "vp9")


# --- AAC ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("asc", "expected"),
    [
        ("1210", (2, 44100, 2, 2, None)),
        ("1188", (2, 48000, 1, 2, None)),
        ("1590", (2, 8000, 2, 2, None)),
        # HE-AAC explicit: object type 5, core 24 kHz stereo, SBR at 48 kHz, core type AAC-LC.
        ("2b1188", (5, 24000, 2, 2, 48000)),
        # escape: sampling index 15 with an explicit 44100, mono.
        ("1780562208", (2, 44100, 1, 2, None)),
    ],
)
def test_audio_specific_config(asc: str, expected: tuple) -> None:
    config = parse_audio_specific_config(bytes.fromhex(asc))
    got = (
        config.object_type,
        config.sample_rate,
        config.channel_config,
        config.core_object_type,
        config.extension_sample_rate,
    )
    assert got == expected
    assert config.channels == config.channel_config


def test_audio_specific_config_escapes() -> None:
    # audioObjectType escape: 31 then 6 bits (32 + 10 = 42, USAC), index 4, stereo.
    bits = "11111" + "001010" + "0100" + "0010" + "00000"  # padded to 24 bits
    data = int(bits, 2).to_bytes(3, "big")
    config = parse_audio_specific_config(data)
    assert (config.object_type, config.sample_rate, config.channel_config) == (42, 44100, 2)
    with pytest.raises(CodecError):
        adts_header(config, 10)  # USAC cannot be carried in ADTS
    # empty, truncated, object type 0, reserved sampling index 13, explicit rate 0
    for bad in ("", "12", "0000", "1690", "1780000008"):
        with pytest.raises(CodecError):
            parse_audio_specific_config(bytes.fromhex(bad))
    assert AacConfig(2, 7350, 1, 2).channels == 1
    assert AacConfig(2, 48000, 7, 2).channels == 8
    assert AacConfig(2, 48000, 0, 2).channels is None


def parse_adts(header: bytes) -> tuple[int, int, int, int]:
    value = int.from_bytes(header, "big")
    assert value >> 44 == 0xFFF
    profile = (value >> 38) & 3
    index = (value >> 34) & 0xF
    channels = (value >> 30) & 7
    length = (value >> 13) & 0x1FFF
    return profile, index, channels, length


def test_adts_header_fields() -> None:
    config = parse_audio_specific_config(bytes.fromhex("1210"))
    header = adts_header(config, 100)
    assert len(header) == 7 and header[:2] == b"\xff\xf1"
    assert parse_adts(header) == (1, 4, 2, 107)
    explicit = parse_audio_specific_config(bytes.fromhex("1780562208"))
    assert parse_adts(adts_header(explicit, 0)) == (1, AAC_SAMPLE_RATES.index(44100), 1, 7)
    he = parse_audio_specific_config(bytes.fromhex("2b1188"))
    assert parse_adts(adts_header(he, 5)) == (1, AAC_SAMPLE_RATES.index(24000), 2, 12)
    with pytest.raises(CodecError):
        adts_header(config, 8185)
    with pytest.raises(CodecError):  # 7.1 as channelConfiguration 12 needs a PCE
        adts_header(AacConfig(2, 48000, 12, 2, sampling_index=3), 10)
    assert parse_adts(adts_header(AacConfig(2, 48000, 7, 2, sampling_index=3), 10))[2] == 7


@pytest.mark.interop
def test_adts_stream_decodes_with_ffmpeg(tmp_path: Path) -> None:
    """Raw AAC frames from ffmpeg's FLV, framed with our ADTS headers, decode with ffmpeg."""
    frames = read_flv(encode_flv(tmp_path / "a.flv", seconds=1.0, video=False))
    config = parse_audio_specific_config(next(f for f in frames if f.config).payload)
    assert (config.object_type, config.sample_rate, config.channel_config) == (2, 44100, 1)
    raw = [f.payload for f in frames if not f.config]
    stream = b"".join(adts_header(config, len(p)) + p for p in raw)
    path = tmp_path / "a.aac"
    path.write_bytes(stream)
    ffmpeg = require_tool("ffmpeg")
    result = subprocess.run(
        [ffmpeg, "-v", "error", "-i", str(path), "-f", "null", "-"], capture_output=True, timeout=60
    )
    assert result.returncode == 0 and result.stderr == b""
    probe = ffprobe_json(
        path,
        "-count_frames",
        "-show_entries",
        "stream=codec_name,sample_rate,channels,nb_read_frames",
    )
    stream_info = probe["streams"][0]
    assert stream_info["codec_name"] == "aac"
    assert int(stream_info["sample_rate"]) == 44100 and stream_info["channels"] == 1
    assert int(stream_info["nb_read_frames"]) == len(raw)


# --- arbitrary bytes ---------------------------------------------------------------------------

PARSERS = [
    parse_avc_config,
    parse_hevc_config,
    parse_h264_sps,
    parse_hevc_sps,
    parse_audio_specific_config,
    lambda data: split_nal_units(data, 4),
    lambda data: split_nal_units(data, 2),
    lambda data: parse_h264_sps(b"\x67" + data),
    lambda data: parse_hevc_sps(b"\x42\x01" + data),
    lambda data: parse_avc_config(b"\x01" + data),
    lambda data: parse_hevc_config(b"\x01" + data),
]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.sampled_from(range(len(PARSERS))))
def test_arbitrary_bytes_raise_only_codec_errors(data: bytes, which: int) -> None:
    try:
        PARSERS[which](data)
    except CodecError as exc:
        assert isinstance(exc, RemoteProtocolError)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=3, max_size=64))
def test_mutated_real_sps_raise_only_codec_errors(tail: bytes) -> None:
    base = bytes.fromhex("67f4000d919b28283f6022000003000200000300641e28532c")
    for cut in (len(base) // 2, len(base)):
        try:
            parse_h264_sps(base[:cut] + tail)
        except CodecError:
            pass
