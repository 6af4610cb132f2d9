"""Tests of arcly_trio.media.codec_strings: WebCodecs codec strings from real config records.

``tests/data/codec_configs.json`` holds config records that ffmpeg 8 wrote (HEVC 8 and 10 bit,
AV1 8 and 10 bit, VP9 profiles 0 and 2, Opus), with the strings and sizes expected; the AV1,
VP9 and Opus strings are the ones ffmpeg's own DASH muxer writes for the same streams, and
Chromium's ``VideoDecoder.isConfigSupported`` accepts them (``tests/workers/test_http_pages_interop.py``).
The interop test at the end encodes fresh clips with ffmpeg 8 and compares again.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from arcly_trio.media import codec_strings as cs
from arcly_trio.media import flv
from arcly_trio.media.codecs import CodecError
from tests._tools import require_ffmpeg8

FIXTURES = json.loads((Path(__file__).parent.parent / "data" / "codec_configs.json").read_text())


@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda f: f"{f['clip']}-{f['codec']}")
def test_real_config_records_give_the_expected_strings_and_sizes(fixture: dict) -> None:  # type: ignore[type-arg]
    params = cs.decoder_parameters(fixture["codec"], bytes.fromhex(fixture["record"]))
    assert params.codec == fixture["string"]
    assert (params.coded_width, params.coded_height) == (fixture["width"], fixture["height"])
    assert (params.sample_rate, params.channels, params.bit_depth) == (
        fixture["sample_rate"],
        fixture["channels"],
        fixture["bit_depth"],
    )
    assert params.description == (fixture["codec"] in ("h264", "hevc", "aac", "opus"))


def test_the_demo_clip_is_avc1_main_3_0_and_aac_lc(demo_frames: list) -> None:  # type: ignore[type-arg]
    configs = {f.codec: f for f in demo_frames if f.config and f.codec != "amf0"}
    video = cs.decoder_parameters("h264", configs["h264"].payload)
    audio = cs.decoder_parameters("aac", configs["aac"].payload)
    assert video == cs.DecoderParameters("avc1.4d401e", True, 640, 360, bit_depth=8)
    assert audio == cs.DecoderParameters("mp4a.40.2", True, sample_rate=44100, channels=1)


def _hvcc(byte1: int, compat: int, constraints: bytes, level: int) -> bytes:
    return (
        bytes((1, byte1))
        + compat.to_bytes(4, "big")
        + constraints
        + bytes((level, 0xF0, 0, 0xFC, 0xFD, 0xF8, 0xF8, 0, 0, 0x0F, 0))
    )


def test_hevc_strings_follow_iso_14496_15_annex_e() -> None:
    # The examples of Annex E: Main profile, level 3.1, progressive source flag only...
    assert cs.hevc_codec_string(_hvcc(0x01, 0x60000000, b"\xb0" + bytes(5), 93)) == "hvc1.1.6.L93.B0"
    # ... and a profile space 1, High tier, every constraint byte set, reversed compatibility.
    record = _hvcc(0x40 | 0x20 | 0x02, 0x80000001, bytes((1, 2, 3, 4, 5, 6)), 120)
    assert cs.hevc_codec_string(record) == "hvc1.A2.80000001.H120.1.2.3.4.5.6"
    assert (
        cs.hevc_codec_string(_hvcc(0x01, 0x40000000, b"\x90\x00\x00\x00\x00\x01", 150)) == "hvc1.1.2.L150.90.0.0.0.0.1"
    )


def test_av1_long_form_when_colours_or_range_differ_from_the_defaults() -> None:
    (av1,) = [f for f in FIXTURES if f["clip"] == "av1_10"]
    assert av1["string"] == "av01.0.00M.10"  # unspecified colours: short form
    assert cs.av1_codec_string(bytes((0x81, 0x08, 0x0C, 0))) == "av01.0.08M.08"
    assert cs.av1_codec_string(bytes((0x81, 0x4D, 0xCC, 0))) == "av01.2.13H.10"
    assert cs.av1_codec_string(bytes((0x81, 0x08, 0x1C, 0))) == "av01.0.08M.08.1.110.01.01.01.0"  # monochrome


def test_vp9_long_form() -> None:
    assert cs.vp9_codec_string(bytes((1, 0, 0, 0, 0, 31, 0x82, 1, 1, 1, 0, 0))) == "vp09.00.31.08"
    assert cs.vp9_codec_string(bytes((1, 0, 0, 0, 2, 40, 0xA5, 9, 16, 9, 0, 0))) == "vp09.02.40.10.02.09.16.09.01"


def test_records_for_ingest_round_trip_through_the_strings() -> None:
    for string in ("vp09.00.10.08", "vp09.02.40.10.02.09.16.09.01", "av01.0.04M.08", "av01.2.13H.12"):
        record = cs.config_record_for(string)
        again = cs.vp9_codec_string(record) if string.startswith("vp09") else cs.av1_codec_string(record)
        assert again == string
    head = cs.parse_opus_head(cs.config_record_for("opus", channels=1, sample_rate=48000))
    assert (head.channels, head.input_sample_rate, head.mapping_family) == (1, 48000, 0)
    with pytest.raises(CodecError, match="needs its config record"):
        cs.config_record_for("avc1.42e01f")


@given(st.sampled_from(["00", "01", "02", "03"]), st.integers(10, 62), st.sampled_from([8, 10, 12]))
def test_vp9_short_strings_round_trip(profile: str, level: int, depth: int) -> None:
    string = f"vp09.{profile}.{level:02d}.{depth:02d}"
    assert cs.vp9_codec_string(cs.config_record_for(string)) == string


@given(st.integers(0, 2), st.integers(0, 31), st.sampled_from("MH"), st.sampled_from([8, 10, 12]))
def test_av1_short_strings_round_trip(profile: int, level: int, tier: str, depth: int) -> None:
    string = f"av01.{profile}.{level:02d}{tier}.{depth:02d}"
    assert cs.av1_codec_string(cs.config_record_for(string)) == string


def test_codec_strings_name_frame_codecs_and_refuse_the_rest() -> None:
    assert [
        cs.frame_codec_of(s)
        for s in (
            "avc1.42e01f",
            "avc3.640028",
            "hvc1.1.6.L93.B0",
            "hev1.1.6.L93.B0",
            "av01.0.04M.08",
            "vp09.00.10.08",
            "mp4a.40.2",
            "opus",
        )
    ] == ["h264", "h264", "hevc", "hevc", "av1", "vp9", "aac", "opus"]
    for bad in ("", "vp8", "flac", "opus.1", "avc1 42", "x" * 100, "é"):
        with pytest.raises(CodecError):
            cs.frame_codec_of(bad)
    with pytest.raises(cs.UnsupportedCodec):
        cs.decoder_parameters("mp3", b"\x00")


@given(st.sampled_from(sorted(cs.VIDEO_CODECS | cs.AUDIO_CODECS)), st.binary(max_size=64))
def test_arbitrary_records_raise_only_codec_errors(codec: str, data: bytes) -> None:
    try:
        cs.decoder_parameters(codec, data)
    except CodecError:
        pass


@given(st.sampled_from([f for f in FIXTURES]), st.data())
def test_mutated_real_records_raise_only_codec_errors(fixture: dict, data: st.DataObject) -> None:  # type: ignore[type-arg]
    record = bytearray.fromhex(fixture["record"])
    for _ in range(data.draw(st.integers(1, 4))):
        record[data.draw(st.integers(0, len(record) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(record)))
    try:
        cs.decoder_parameters(fixture["codec"], bytes(record[:cut]))
    except CodecError:
        pass


@given(st.text(max_size=80))
def test_arbitrary_codec_strings_raise_only_codec_errors(text: str) -> None:
    try:
        cs.config_record_for(text, channels=2, sample_rate=48000)
    except CodecError:
        pass


@pytest.mark.interop
@pytest.mark.parametrize(
    "video",
    [
        ("-c:v", "libaom-av1", "-cpu-used", "8"),
        ("-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8"),
        ("-c:v", "libvpx-vp9", "-pix_fmt", "yuv420p10le", "-profile:v", "2", "-deadline", "realtime", "-cpu-used", "8"),
        ("-c:v", "libx264", "-profile:v", "high", "-preset", "ultrafast"),
    ],
    ids=["av1", "vp9", "vp9-10bit", "h264-high"],
)
def test_strings_match_what_ffmpeg8_writes_in_a_dash_manifest(tmp_path: Path, video: tuple[str, ...]) -> None:
    """ffmpeg 8 encodes a clip to Enhanced RTMP FLV; our strings for its configs equal the
    ``codecs`` attributes ffmpeg's DASH muxer writes for the same streams."""
    import subprocess

    ffmpeg = require_ffmpeg8()
    clip = tmp_path / "clip.flv"
    subprocess.run(
        [
            ffmpeg,
            "-hide_banner",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=25",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-t",
            "1",
            *video,
            "-c:a",
            "libopus",
            "-ac",
            "2",
            "-f",
            "flv",
            str(clip),
        ],
        check=True,
        timeout=120,
    )
    subprocess.run(
        [
            ffmpeg,
            "-hide_banner",
            "-loglevel",
            "error",
            "-i",
            str(clip),
            "-c",
            "copy",
            "-f",
            "dash",
            str(tmp_path / "out.mpd"),
        ],
        check=True,
        timeout=60,
    )
    expected = set(re.findall(r'codecs="([^"]+)"', (tmp_path / "out.mpd").read_text()))
    ours = {
        cs.decoder_parameters(f.codec, f.payload).codec
        for f in flv.read_frames(clip.read_bytes())
        if f.config and f.codec != "amf0"
    }
    assert ours == expected
    opus = next(f for f in flv.read_frames(clip.read_bytes()) if f.config and f.codec == "opus")
    assert cs.decoder_parameters("opus", opus.payload).channels == 2
