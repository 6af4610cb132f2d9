"""Tests of the AMF0 codec: spec byte vectors, references, leniency, limits, and properties."""

from __future__ import annotations

import math
import struct
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arcly_trio.core.errors import LocalProtocolError, RemoteProtocolError
from arcly_trio.media.amf0 import (
    MAX_DEPTH,
    UNDEFINED,
    AMF0Date,
    AMF0Error,
    ECMAArray,
    TypedObject,
    decode,
    decode_one,
    encode,
)
from tests._tools import require_tool


def s16(text: str) -> bytes:
    """A property name or string body: u16 length and UTF-8."""
    raw = text.encode()
    return struct.pack(">H", len(raw)) + raw


def num(value: float) -> bytes:
    return b"\x00" + struct.pack(">d", value)


def string(text: str) -> bytes:
    return b"\x02" + s16(text)


END = b"\x00\x00\x09"


def normalize(value: object) -> object:
    """Make a value comparable after a round trip, types included (True is not 1.0)."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, (int, float)):
        return ("number", float(value))
    if isinstance(value, ECMAArray):
        return ("ecma", {k: normalize(v) for k, v in value.items()})
    if isinstance(value, dict):
        return ("object", {k: normalize(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return ("array", [normalize(v) for v in value])
    if isinstance(value, TypedObject):
        return ("typed", value.class_name, normalize(value.fields))
    return (type(value).__name__, value)


# --------------------------------------------------------------------------------------------
# Known byte vectors


# The connect command body FFmpeg 5.1's native RTMP client sent when publishing to
# rtmp://127.0.0.1:37109/live/x (captured from the wire).
CONNECT_BODY = bytes.fromhex(
    "020007636f6e6e656374003ff00000000000000300036170700200046c69766500047479706502000a6e6f6e"
    "707269766174650008666c617368566572020024464d4c452f332e302028636f6d70617469626c653b204c61"
    "766635392e32372e313030290005746355726c02001b72746d703a2f2f3132372e302e302e313a3337313039"
    "2f6c697665000009"
)


def test_connect_command_vector() -> None:
    values = decode(CONNECT_BODY)
    assert values == [
        "connect",
        1.0,
        {
            "app": "live",
            "type": "nonprivate",
            "flashVer": "FMLE/3.0 (compatible; Lavf59.27.100)",
            "tcUrl": "rtmp://127.0.0.1:37109/live",
        },
    ]
    assert type(values[1]) is float
    assert type(values[2]) is dict
    # Encoding gives back the exact bytes (dicts keep insertion order).
    assert encode(*values) == CONNECT_BODY
    # The same bytes, written out from the AMF0 specification.
    by_spec = (
        string("connect")
        + num(1.0)
        + b"\x03"
        + s16("app")
        + string("live")
        + s16("type")
        + string("nonprivate")
        + s16("flashVer")
        + string("FMLE/3.0 (compatible; Lavf59.27.100)")
        + s16("tcUrl")
        + string("rtmp://127.0.0.1:37109/live")
        + END
    )
    assert by_spec == CONNECT_BODY


def test_scalar_vectors() -> None:
    assert encode(1.5) == bytes.fromhex("003ff8000000000000")
    assert encode(1) == bytes.fromhex("003ff0000000000000")
    assert encode(True, False) == bytes.fromhex("01010100")
    assert encode(None) == b"\x05"
    assert encode(UNDEFINED) == b"\x06"
    assert encode("") == b"\x02\x00\x00"
    assert encode("é") == b"\x02\x00\x02\xc3\xa9"
    assert encode(AMF0Date(1000.0, 0)) == b"\x0b" + struct.pack(">dh", 1000.0, 0)
    assert encode([1, "a"]) == b"\x0a\x00\x00\x00\x02" + num(1.0) + string("a")
    assert encode(ECMAArray(duration=0)) == b"\x08\x00\x00\x00\x01" + s16("duration") + num(0) + END
    assert encode(TypedObject("flex.A", {"x": None})) == b"\x10" + s16("flex.A") + s16("x") + b"\x05" + END
    assert decode(b"\x01\x07") == [True]  # any non-zero byte is true


def test_long_string_threshold() -> None:
    short = "a" * 0xFFFF
    long = "a" * 0x10000
    assert encode(short)[:3] == b"\x02\xff\xff"
    assert encode(long)[:5] == b"\x0c\x00\x01\x00\x00"
    assert decode(encode(short, long)) == [short, long]
    # The threshold is on the UTF-8 size, not the number of characters.
    wide = "é" * 40000
    assert encode(wide)[0] == 0x0C
    assert decode(encode(wide)) == [wide]


def test_xml_document_and_unsupported_marker() -> None:
    xml = "<a>b</a>"
    assert decode(b"\x0f" + struct.pack(">I", len(xml)) + xml.encode()) == [xml]
    assert decode(b"\x0d") == [UNDEFINED]


def test_undefined_sentinel() -> None:
    assert not UNDEFINED
    assert repr(UNDEFINED) == "UNDEFINED"
    assert UNDEFINED is not None
    assert decode(b"\x06\x05") == [UNDEFINED, None]
    assert decode(b"\x06")[0] is UNDEFINED


def test_decode_one_offsets() -> None:
    data = encode("a", {"k": [1, 2]}, 3)
    value, offset = decode_one(data)
    assert value == "a" and offset == 4
    value, offset = decode_one(data, offset)
    assert value == {"k": [1.0, 2.0]}
    value, offset = decode_one(data, offset)
    assert value == 3.0 and offset == len(data)
    with pytest.raises(AMF0Error):
        decode_one(data, len(data))
    with pytest.raises(AMF0Error):
        decode_one(data, -1)
    assert decode_one(memoryview(data)) == ("a", 4)
    assert decode(bytearray(data)) == decode(data)


def test_ecma_array_count_is_advisory() -> None:
    """@setDataFrame, onMetaData, then an ECMA array whose count says 0 (as some encoders do)."""
    body = (
        string("@setDataFrame")
        + string("onMetaData")
        + b"\x08\x00\x00\x00\x00"  # count 0 although there are entries: must be ignored
        + s16("duration")
        + num(0.0)
        + s16("width")
        + num(160.0)
        + s16("videocodecid")
        + num(7.0)
        + s16("encoder")
        + string("Lavf61.7.100")
        + END
    )
    values = decode(body)
    assert values[:2] == ["@setDataFrame", "onMetaData"]
    meta = values[2]
    assert isinstance(meta, ECMAArray)
    assert meta == {"duration": 0.0, "width": 160.0, "videocodecid": 7.0, "encoder": "Lavf61.7.100"}


@pytest.mark.parametrize("tail", [b"", b"\x00", b"\x00\x00"])
def test_ecma_array_missing_end_marker_at_end_of_data(tail: bytes) -> None:
    body = string("onMetaData") + b"\x08\x00\x00\x00\x01" + s16("width") + num(1.0) + tail
    assert decode(body) == ["onMetaData", ECMAArray(width=1.0)]


def test_missing_end_marker_not_tolerated_elsewhere() -> None:
    # An anonymous object must end with its marker.
    with pytest.raises(AMF0Error):
        decode(b"\x03" + s16("a") + num(1.0))
    # An ECMA array nested in an object leaves the object unterminated.
    with pytest.raises(AMF0Error):
        decode(b"\x03" + s16("a") + b"\x08\x00\x00\x00\x00")
    # Empty name followed by something other than the end marker.
    with pytest.raises(AMF0Error):
        decode(b"\x03\x00\x00\x05")


@pytest.mark.interop
def test_ffmpeg_onmetadata() -> None:
    """The onMetaData script tag FFmpeg's FLV muxer writes decodes, and re-encodes identically."""
    ffmpeg = require_tool("ffmpeg")
    flv = subprocess.run(
        [
            ffmpeg, "-nostdin", "-loglevel", "error", "-f", "lavfi",
            "-i", "testsrc=size=160x120:rate=5", "-f", "lavfi", "-i", "sine=frequency=440",
            "-t", "0.4", "-c:v", "libx264", "-c:a", "aac", "-f", "flv", "-",
        ],
        check=True, capture_output=True, timeout=60,
    ).stdout  # fmt: skip
    assert flv[:3] == b"FLV"
    tag = flv[9 + 4 :]  # FLV header, PreviousTagSize0
    assert tag[0] == 18  # script data
    size = int.from_bytes(tag[1:4], "big")
    body = tag[11 : 11 + size]
    values = decode(body)
    assert values[0] == "onMetaData"
    meta = values[1]
    assert isinstance(meta, ECMAArray)
    assert meta["width"] == 160.0 and meta["height"] == 120.0
    assert meta["videocodecid"] == 7.0  # AVC
    assert meta["audiocodecid"] == 10.0  # AAC
    assert isinstance(meta["encoder"], str) and meta["encoder"].startswith("Lavf")
    assert isinstance(meta["stereo"], bool)
    assert encode(*values) == body


# --------------------------------------------------------------------------------------------
# References


def test_reference_to_earlier_object() -> None:
    inner = b"\x03" + s16("x") + num(1.0) + END
    data = b"\x0a\x00\x00\x00\x02" + inner + b"\x07\x00\x01"
    [array] = decode(data)
    assert array == [{"x": 1.0}, {"x": 1.0}]
    assert array[0] is array[1]


def test_reference_numbering_counts_every_complex_kind_in_start_order() -> None:
    # 0: outer ECMA array, 1: strict array, 2: typed object, 3: object
    data = (
        b"\x08\x00\x00\x00\x00"
        + s16("list")
        + b"\x0a\x00\x00\x00\x01"
        + b"\x10"
        + s16("T")
        + s16("o")
        + b"\x03"
        + END
        + END
        + s16("r0")
        + b"\x07\x00\x00"
        + s16("r1")
        + b"\x07\x00\x01"
        + s16("r2")
        + b"\x07\x00\x02"
        + s16("r3")
        + b"\x07\x00\x03"
        + END
    )
    [outer] = decode(data)
    assert isinstance(outer, ECMAArray)
    assert outer["r0"] is outer  # a cycle, legal in AMF0
    assert outer["r1"] is outer["list"]
    assert outer["r2"] is outer["list"][0]
    assert isinstance(outer["r2"], TypedObject) and outer["r2"].class_name == "T"
    assert outer["r3"] is outer["list"][0].fields["o"]


def test_references_span_values_in_decode() -> None:
    data = b"\x03" + END + b"\x07\x00\x00"
    first, second = decode(data)
    assert first is second


def test_dangling_reference() -> None:
    with pytest.raises(AMF0Error, match="reference"):
        decode(b"\x07\x00\x00")
    with pytest.raises(AMF0Error):
        decode(b"\x03" + END + b"\x07\x00\x01")


# --------------------------------------------------------------------------------------------
# Errors and limits


def test_amf3_switch_is_refused_clearly() -> None:
    with pytest.raises(AMF0Error, match="AMF3.*not supported"):
        decode(b"\x11\x02\x01")
    assert issubclass(AMF0Error, RemoteProtocolError)


@pytest.mark.parametrize("marker", [0x04, 0x0E, 0x12, 0xFF])
def test_unsupported_markers(marker: int) -> None:
    with pytest.raises(AMF0Error, match=f"0x{marker:02X}"):
        decode(bytes([marker]))


def test_object_end_where_value_expected() -> None:
    with pytest.raises(AMF0Error, match="end marker"):
        decode(b"\x09")


@pytest.mark.parametrize(
    "data",
    [
        b"\x00\x3f\xf0",  # number cut short
        b"\x01",  # boolean without its byte
        b"\x02\x00\x05abc",  # string cut short
        b"\x0c\x00\x00\x00\x05ab",  # long string cut short
        b"\x0b" + b"\x00" * 9,  # date cut short
        b"\x03\x00\x01a",  # object property without value
        b"\x03\x00",  # object cut inside a name length
        b"\x08\x00\x00",  # ECMA count cut short
        b"\x0a\x00\x00\x00\x02\x05",  # strict array with one of two values
        b"\x07\x00",  # reference cut short
        b"\x10\x00\x05ab",  # class name cut short
    ],
)
def test_truncations(data: bytes) -> None:
    with pytest.raises(AMF0Error):
        decode(data)


def test_invalid_utf8() -> None:
    with pytest.raises(AMF0Error, match="UTF-8"):
        decode(b"\x02\x00\x02\xc3\x28")
    with pytest.raises(AMF0Error, match="UTF-8"):
        decode(b"\x03\x00\x01\xff\x05" + END)


def test_huge_strict_array_count_is_refused_without_allocating() -> None:
    with pytest.raises(AMF0Error, match="claims"):
        decode(b"\x0a\xff\xff\xff\xff\x05\x05")


def test_huge_ecma_count_is_ignored() -> None:
    assert decode(b"\x08\xff\xff\xff\xff" + END) == [ECMAArray()]


def test_huge_string_length_is_a_truncation() -> None:
    with pytest.raises(AMF0Error):
        decode(b"\x0c\xff\xff\xff\xffabc")


@pytest.mark.parametrize(
    "opener",
    [
        b"\x03" + s16("a"),  # object
        b"\x0a\x00\x00\x00\x01",  # strict array
        b"\x08\x00\x00\x00\x01" + s16("a"),  # ECMA array
        b"\x10" + s16("T") + s16("a"),  # typed object
    ],
)
def test_depth_bomb(opener: bytes) -> None:
    # 100 000 levels would overflow Python's stack if the limit were not enforced.
    with pytest.raises(AMF0Error, match="deeper"):
        decode(opener * 100_000 + b"\x05")


def test_depth_limit_is_exact() -> None:
    ok: object = None
    for _ in range(MAX_DEPTH):
        ok = [ok]
    assert normalize(decode(encode(ok))[0]) == normalize(ok)
    too_deep = [ok]
    with pytest.raises(LocalProtocolError, match="deeper"):
        encode(too_deep)
    raw = b"\x0a\x00\x00\x00\x01" * (MAX_DEPTH + 1) + b"\x05"
    with pytest.raises(AMF0Error, match="deeper"):
        decode(raw)


def test_encode_errors() -> None:
    with pytest.raises(LocalProtocolError):
        encode(b"bytes")
    with pytest.raises(LocalProtocolError):
        encode(object())
    with pytest.raises(LocalProtocolError):
        encode({1: "non-str key"})
    with pytest.raises(LocalProtocolError):
        encode({"": "empty key"})
    with pytest.raises(LocalProtocolError):
        encode(10**400)
    with pytest.raises(LocalProtocolError):
        encode("\ud800")
    with pytest.raises(LocalProtocolError):
        encode(AMF0Date(0.0, 40000))
    cycle: list[object] = []
    cycle.append(cycle)
    with pytest.raises(LocalProtocolError, match="deeper"):
        encode(cycle)


def test_nan_and_infinities() -> None:
    [nan, inf, ninf] = decode(encode(math.nan, math.inf, -math.inf))
    assert math.isnan(nan) and inf == math.inf and ninf == -math.inf


# --------------------------------------------------------------------------------------------
# Properties

keys = st.text(min_size=1, max_size=12)
scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.none(),
    st.just(UNDEFINED),
    st.builds(
        AMF0Date,
        st.floats(allow_nan=False),
        st.integers(min_value=-32768, max_value=32767),
    ),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.tuples(children, children),
        st.dictionaries(keys, children, max_size=5),
        st.dictionaries(keys, children, max_size=5).map(ECMAArray),
        st.builds(TypedObject, st.text(max_size=10), st.dictionaries(keys, children, max_size=4)),
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(values, max_size=4))
def test_round_trip(items: list[object]) -> None:
    data = encode(*items)
    decoded = decode(data)
    assert [normalize(v) for v in decoded] == [normalize(v) for v in items]
    assert encode(*decoded) == data
    # decode_one walks the same values with consistent offsets.
    offset = 0
    for item in items:
        value, offset = decode_one(data, offset)
        assert normalize(value) == normalize(item)
    assert offset == len(data)


@settings(max_examples=200, deadline=None)
@given(st.lists(values, min_size=1, max_size=3), st.data())
def test_truncations_raise_only_amf0_error(items: list[object], data: st.DataObject) -> None:
    encoded = encode(*items)
    cut = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1))
    try:
        decoded = decode(encoded[:cut])
    except AMF0Error:
        return
    # Only whole leading values can decode (the last one may be an ECMA array cut at its end).
    assert len(decoded) <= len(items)


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_amf0_error(data: bytes) -> None:
    try:
        decode(data)
    except AMF0Error:
        pass


complex_openers = st.sampled_from(
    [b"\x03", b"\x08\x00\x00\x00\x02", b"\x0a\x00\x00\x00\x03", b"\x10\x00\x01T", b"\x00\x01a"]
)


@settings(max_examples=800, deadline=None)
@given(st.lists(st.one_of(complex_openers, st.binary(max_size=6)), max_size=40))
def test_structured_garbage_raises_only_amf0_error(parts: list[bytes]) -> None:
    """Garbage built from AMF0 fragments gets deeper into the decoder than uniform bytes."""
    try:
        decode(b"".join(parts))
    except AMF0Error:
        pass
