"""Tests of arcly_trio.media.codecs.opus: one OpusHead parser for the codec strings and fMP4."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.media import codec_strings
from arcly_trio.media.codecs import CodecError, UnsupportedCodec, opus_head, parse_opus_head
from arcly_trio.media.fmp4 import track_from_config


def config(payload: bytes) -> Frame:
    return Frame(FrameKind.AUDIO, "opus", 0, 0, payload, config=True)


def raised(call, payload: bytes) -> tuple[type, str] | None:  # type: ignore[no-untyped-def]
    try:
        call(payload)
    except CodecError as exc:
        return type(exc), str(exc)
    return None


MALFORMED = [
    b"OpusTags\x00\x00\x00\x00",
    b"OpusHead\x01\x02",
    b"Opus",
    b"OpusHead" + struct.pack("<BBHIhB", 0x10, 2, 0, 48000, 0, 0),
    b"OpusHead" + struct.pack("<BBHIhB", 1, 0, 0, 48000, 0, 0),
    b"OpusHead" + struct.pack("<BBHIhB", 1, 6, 0, 48000, 0, 0),
    b"OpusHead" + struct.pack("<BBHIhB", 1, 3, 0, 48000, 0, 1) + b"\x02\x01\x00",
    b"OpusHead" + struct.pack("<BBHIhB", 1, 2, 0, 48000, 0, 1) + b"\x01\x02\x00\x01",
]


@pytest.mark.parametrize("payload", MALFORMED)
def test_fmp4_and_the_codec_strings_raise_the_same_error(payload: bytes) -> None:
    """Before, the two OpusHead parsers raised different exceptions for the same input."""
    expected = raised(parse_opus_head, payload)
    assert expected is not None
    assert raised(lambda p: codec_strings.decoder_parameters("opus", p), payload) == expected
    assert raised(lambda p: track_from_config(config(p)), payload) == expected


def test_the_comment_header_is_named_and_a_new_version_is_unsupported() -> None:
    with pytest.raises(CodecError, match="OpusTags"):
        parse_opus_head(MALFORMED[0])
    with pytest.raises(UnsupportedCodec):
        parse_opus_head(MALFORMED[3])


def test_a_mapping_table_is_kept_for_the_dops_box() -> None:
    head = b"OpusHead" + struct.pack("<BBHIhB", 1, 3, 312, 44100, -5, 1) + b"\x02\x01\x00\x01\x02"
    parsed = parse_opus_head(head)
    assert (parsed.channels, parsed.pre_skip, parsed.input_sample_rate, parsed.output_gain) == (3, 312, 44100, -5)
    assert parsed.mapping_family == 1 and parsed.mapping == b"\x02\x01\x00\x01\x02"
    track = track_from_config(config(head))
    assert track.channels == 3 and track.sample_entry.endswith(b"\x02\x01\x00\x01\x02")


@given(st.sampled_from([1, 2]), st.integers(1, 2**32 - 1), st.integers(0, 2**16 - 1))
def test_opus_head_round_trip(channels: int, rate: int, pre_skip: int) -> None:
    parsed = parse_opus_head(opus_head(channels, rate, pre_skip))
    assert (parsed.channels, parsed.input_sample_rate, parsed.pre_skip) == (channels, rate, pre_skip)


@given(st.binary(max_size=40), st.binary(max_size=30))
def test_arbitrary_bytes_raise_only_codec_errors(junk: bytes, tail: bytes) -> None:
    for payload in (junk, b"OpusHead" + tail):
        try:
            parse_opus_head(payload)
        except CodecError:
            pass
