"""Tests of arcly_trio.media.codecs.records: a config record is parsed once per config change,
and every parser of the package raises only CodecError on garbage."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.media import codecs
from arcly_trio.media.cmaf import CmafPackager
from arcly_trio.media.codecs import CodecError, UnsupportedCodec, parse_config
from arcly_trio.media.codecs import records as records_module
from arcly_trio.media.codecs.bits import BitReader, leb128, obus

RECORD_PARSERS = [
    "parse_avc_config",
    "parse_h264_sps",
    "parse_hevc_config",
    "parse_hevc_sps",
    "parse_av1_config",
    "parse_vp9_config",
    "parse_audio_specific_config",
    "parse_opus_head",
]


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Counts the calls of every record parser that parse_config uses."""
    counts: Counter[str] = Counter()
    for name in RECORD_PARSERS:
        real = getattr(records_module, name)

        def counting(*args: Any, _real: Callable[..., Any] = real, _name: str = name) -> Any:
            counts[_name] += 1
            return _real(*args)

        monkeypatch.setattr(records_module, name, counting)
    return counts


def test_the_packager_parses_each_config_once_per_change(demo_frames, parses) -> None:  # type: ignore[no-untyped-def]
    packager = CmafPackager(name_prefix="t-")
    for frame in demo_frames:
        packager.push(frame)
    assert set(packager.renditions) == {FrameKind.VIDEO, FrameKind.AUDIO}
    # One config of each kind: the avcC, its SPS and the AudioSpecificConfig, once each.
    assert parses == {"parse_avc_config": 1, "parse_h264_sps": 1, "parse_audio_specific_config": 1}
    video_config = next(f for f in demo_frames if f.config and f.kind is FrameKind.VIDEO)
    packager.push(Frame(FrameKind.VIDEO, "h264", 0, 0, bytes(video_config.payload), config=True))
    assert sum(parses.values()) == 3  # the same bytes again: no parse
    first_audio_init = packager.renditions[FrameKind.AUDIO].init
    packager.push(Frame(FrameKind.AUDIO, "aac", 0, 0, bytes([0x12, 0x08]), config=True))
    last = max(f.dts for f in demo_frames)
    for frame in demo_frames:
        if not frame.config:
            packager.push(Frame(frame.kind, frame.codec, frame.pts + last + 100, frame.dts + last + 100,
                                frame.payload, frame.keyframe, frame.config, frame.track))  # fmt: skip
    assert packager.renditions[FrameKind.AUDIO].init != first_audio_init  # the new config is used
    assert parses["parse_audio_specific_config"] == 2  # one change, one parse
    assert sum(parses.values()) == 4


def test_parse_config_types_the_record(demo_frames) -> None:  # type: ignore[no-untyped-def]
    video = next(f for f in demo_frames if f.config and f.kind is FrameKind.VIDEO)
    parsed = parse_config("h264", video.payload)
    assert isinstance(parsed.record, codecs.AvcConfig) and isinstance(parsed.sps, codecs.H264Sps)
    assert not parsed.needs_keyframe
    assert parse_config("av1", b"\x81\x00\x0c\x00").needs_keyframe
    with pytest.raises(UnsupportedCodec):
        parse_config("mp3", b"\xff\xfb")


@settings(max_examples=300)
@given(st.sampled_from(sorted(codecs.CONFIG_CODECS)), st.binary(max_size=120))
def test_arbitrary_records_raise_only_codec_errors(codec: str, data: bytes) -> None:
    try:
        parsed = parse_config(codec, data)
    except CodecError:
        return
    assert parsed.codec == codec and parsed.payload == data


@given(st.binary(max_size=64), st.lists(st.sampled_from(["u", "ue", "se", "uvlc", "skip"]), max_size=40),
       st.integers(0, 40))  # fmt: skip
def test_the_bit_reader_raises_only_codec_errors(data: bytes, reads: list[str], width: int) -> None:
    r = BitReader(data, "test")
    try:
        for read in reads:
            value = r.u(width) if read == "u" else r.skip(width) if read == "skip" else getattr(r, read)()
            if read in ("u", "ue", "uvlc"):
                assert value >= 0
    except CodecError:
        pass


@given(st.binary(max_size=64), st.integers(0, 70))
def test_leb128_and_obus_raise_only_codec_errors(data: bytes, pos: int) -> None:
    try:
        value, end = leb128(data, pos, "test")
        assert pos < end <= min(len(data), pos + 8) and value >= 0
    except CodecError:
        pass
    try:
        for obu_type, start, end in obus(data, "test"):
            assert 0 <= obu_type <= 15 and start <= end <= len(data)
    except CodecError:
        pass


@given(st.integers(0, 2**56 - 1))
def test_leb128_round_trip(value: int) -> None:
    encoded = bytearray()
    rest = value
    while True:
        byte, rest = rest & 0x7F, rest >> 7
        encoded.append(byte | (0x80 if rest else 0))
        if not rest:
            break
    assert leb128(bytes(encoded), 0, "test") == (value, len(encoded))
