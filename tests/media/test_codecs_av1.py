"""Tests of arcly_trio.media.codecs.av1: the one av1C and sequence header parser."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from arcly_trio.media.codec_strings import av1_codec_string
from arcly_trio.media.codecs import CodecError, parse_av1_config, parse_av1_sequence_header
from arcly_trio.media.codecs.av1 import find_sequence_header, strip_temporal_delimiter


def bits(*fields: tuple[int, int]) -> bytes:
    """Pack ``(width, value)`` fields MSB first, zero-padded to whole bytes."""
    value = length = 0
    for width, field in fields:
        value, length = (value << width) | field, length + width
    pad = -length % 8
    return (value << pad).to_bytes((length + pad) // 8, "big")


# A reduced still-picture sequence header: profile 0, level 5, 1280x720, 8-bit 4:2:0, then
# no tools, no colour description, studio range.
SEQUENCE_HEADER = b"\x0a\x00" + bits(
    (3, 0), (1, 1), (1, 1), (5, 5), (4, 15), (4, 15), (16, 1279), (16, 719), (6, 0), (4, 0), (2, 0)
)


def obu(obu_type: int, payload: bytes) -> bytes:
    assert len(payload) < 128
    return bytes(((obu_type << 3) | 0x02, len(payload))) + payload


def test_the_sequence_header_in_the_config_and_in_a_keyframe_agree() -> None:
    header = parse_av1_sequence_header(SEQUENCE_HEADER[2:])
    config = parse_av1_config(b"\x81\x05\x0c\x00" + obu(1, SEQUENCE_HEADER[2:]))
    assert config.sequence_header == header
    keyframe = obu(2, b"") + obu(1, SEQUENCE_HEADER[2:]) + obu(6, b"\x10\x00")
    assert find_sequence_header(keyframe, "AV1 keyframe") == header
    assert bytes(strip_temporal_delimiter(keyframe)) == keyframe[2:]
    assert (header.max_width, header.max_height, header.level, header.bit_depth) == (1280, 720, 5, 8)
    assert av1_codec_string(b"\x81\x05\x0c\x00").startswith("av01.0.05M.08")


@given(st.binary(max_size=80))
def test_arbitrary_records_and_headers_raise_only_codec_errors(data: bytes) -> None:
    for call in (parse_av1_config, parse_av1_sequence_header, lambda d: find_sequence_header(d, "x")):
        try:
            call(data)
        except CodecError:
            pass
    for record in (b"\x81\x00\x0c\x00" + data,):
        try:
            parse_av1_config(record)
        except CodecError:
            pass


@given(st.binary(max_size=40))
def test_strip_temporal_delimiter_never_raises(data: bytes) -> None:
    out = bytes(strip_temporal_delimiter(data))
    assert data.endswith(out)
