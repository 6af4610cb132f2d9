"""Tests of arcly_trio.media.fmp4.

* An independent ISO BMFF box reader (``tests/_boxes.py``) parses back every init segment and fragment the
  writer makes: box sizes, the fields written, the samples that ``trun`` data offsets and sizes
  point at.
* Hypothesis drives the writer with random multi-track frame sequences (B-frame-like composition
  offsets, random cut points, timestamp jumps, discontinuities) and the config parsers with
  random AV1 sequence headers, VP9 frame headers, OpusHead and AudioSpecificConfig records (and
  arbitrary bytes).
* Interop: real clips (the bundled H.264 + AAC demo; HEVC, AV1, VP9 and Opus encoded by FFmpeg 8
  into Enhanced RTMP FLV) go through ``flv.read_frames`` and the writer, then ffmpeg decodes the
  result without a single error and ffprobe reports the codecs, sizes, rates, frame counts and
  per-packet timestamps and durations the source frames imply.
"""

from __future__ import annotations

import ast
import json
import struct
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arcly_trio.core.errors import LocalProtocolError
from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.media import flv, fmp4
from arcly_trio.media.codecs import CodecError
from arcly_trio.media.fmp4 import (
    Fmp4Track,
    Fragment,
    FragmentWriter,
    init_segment,
    track_from_config,
)
from arcly_trio.media.timestamps import TimestampUnwrapper
from tests._boxes import Box, Sample, esds_config, full_box, parse_fragment, parse_init
from tests._tools import require_ffmpeg8, require_tool

DEMO = Path(fmp4.__file__).parent.parent.parent / "server" / "assets" / "demo.flv"

# --------------------------------------------------------------------------------------------
# Checks on the boxes the independent reader (tests/_boxes.py) parsed
# --------------------------------------------------------------------------------------------


def check_trak(trak: Box, track: Fmp4Track) -> Box:
    """Check a trak against its track; return its sample entry."""
    _, _, rest = full_box(trak.one("tkhd"))
    width, height = struct.unpack_from(">II", rest, len(rest) - 8)
    volume = struct.unpack_from(">H", rest, 32)[0]
    assert (width >> 16, height >> 16) == (track.width, track.height)
    assert volume == (0 if track.kind is FrameKind.VIDEO else 0x0100)
    _, _, rest = full_box(trak.path("mdia", "mdhd"))
    assert struct.unpack_from(">I", rest, 8)[0] == track.timescale
    _, _, rest = full_box(trak.path("mdia", "hdlr"))
    assert rest[4:8] == (b"vide" if track.kind is FrameKind.VIDEO else b"soun")
    minf = trak.path("mdia", "minf")
    assert minf.all("vmhd" if track.kind is FrameKind.VIDEO else "smhd")
    _, url_flags, _ = full_box(minf.path("dinf", "dref", "url "))
    assert url_flags == 1
    stbl = minf.one("stbl")
    assert [c.type for c in stbl.children] == ["stsd", "stts", "stsc", "stsz", "stco"]
    for kind in ("stts", "stsc", "stco"):
        assert full_box(stbl.one(kind))[2] == b"\x00\x00\x00\x00"
    assert full_box(stbl.one("stsz"))[2] == b"\x00" * 8
    [entry] = stbl.one("stsd").children
    assert struct.unpack_from(">H", entry.body, 6)[0] == 1  # data_reference_index
    if track.kind is FrameKind.VIDEO:
        assert struct.unpack_from(">HH", entry.body, 24) == (track.width, track.height)
    else:
        channels, bits = struct.unpack_from(">HH", entry.body, 16)
        rate = struct.unpack_from(">I", entry.body, 24)[0] >> 16
        # 16.16 fixed point: a rate over 65535 Hz does not fit and is written as 0
        expected_rate = track.sample_rate if track.sample_rate <= 0xFFFF else 0
        assert (channels, bits, rate) == (track.channels, 16, expected_rate)
    return entry


# --------------------------------------------------------------------------------------------
# Real configs and test-side builders
# --------------------------------------------------------------------------------------------


def demo_tracks() -> tuple[Frame, Frame]:
    frames = flv.read_frames(DEMO.read_bytes())
    video = next(f for f in frames if f.config and f.codec == "h264")
    audio = next(f for f in frames if f.config and f.codec == "aac")
    return video, audio


_DEMO_VIDEO, _DEMO_AUDIO = demo_tracks()


def opus_head(channels: int = 2, pre_skip: int = 312, rate: int = 48_000, gain: int = 0,
              family: int = 0, mapping: bytes = b"") -> bytes:  # fmt: skip
    return b"OpusHead" + struct.pack("<BBHIhB", 1, channels, pre_skip, rate, gain, family) + mapping


def config_frame(kind: FrameKind, codec: str, payload: bytes, track: int = 0) -> Frame:
    return Frame(kind, codec, 0, 0, payload, config=True, track=track)


class BitWriter:
    def __init__(self) -> None:
        self.bits: list[int] = []

    def u(self, n: int, value: int) -> None:
        assert 0 <= value < (1 << n)
        self.bits.extend((value >> (n - 1 - i)) & 1 for i in range(n))

    def uvlc(self, value: int) -> None:
        value += 1
        n = value.bit_length()
        self.u(n - 1, 0)
        self.u(n, value)

    def bytes(self) -> bytes:
        bits = self.bits + [0] * (-len(self.bits) % 8)
        return bytes(int("".join(map(str, bits[i : i + 8])), 2) for i in range(0, len(bits), 8))


def leb128(value: int) -> bytes:
    out = []
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def obu(kind: int, payload: bytes, extension: bool = False, sized: bool = True) -> bytes:
    header = bytes((kind << 3 | (4 if extension else 0) | (2 if sized else 0),))
    if extension:
        header += b"\x00"
    return header + (leb128(len(payload)) if sized else b"") + payload


# --------------------------------------------------------------------------------------------
# Module hygiene
# --------------------------------------------------------------------------------------------


def test_module_imports_no_runtime() -> None:
    """The fmp4 package imports the standard library, attrs, and the trio-free kernel/media
    modules only."""
    imported: set[str] = set()
    for module in Path(fmp4.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                imported.add(("." * node.level) + (node.module or ""))
    assert imported <= {"__future__", "struct", "collections.abc", "typing", "attrs",
                        "arcly_trio.core.errors", "arcly_trio.core.frame", "arcly_trio.media.codecs",
                        "arcly_trio.media.codecs.av1", "arcly_trio.media.codecs.bits",
                        "arcly_trio.media.fmp4.boxes", "arcly_trio.media.fmp4.init",
                        "arcly_trio.media.fmp4.fragment"}, imported  # fmt: skip


# --------------------------------------------------------------------------------------------
# Tracks and init segments
# --------------------------------------------------------------------------------------------


def test_demo_tracks_match_ffprobe_facts() -> None:
    # 640x360 H.264, 44.1 kHz mono AAC: what ffprobe reports for the bundled demo clip.
    video = track_from_config(_DEMO_VIDEO)
    audio = track_from_config(_DEMO_AUDIO)
    assert (video.track_id, video.timescale, video.width, video.height) == (1, 90_000, 640, 360)
    assert (audio.track_id, audio.timescale, audio.sample_rate, audio.channels) == (
        2,
        44_100,
        44_100,
        1,
    )
    assert audio.default_duration == 1024 and video.default_duration == 3000


def test_init_segment_structure() -> None:
    opus = track_from_config(config_frame(FrameKind.AUDIO, "opus", opus_head(2), track=1))
    tracks = [track_from_config(_DEMO_VIDEO), track_from_config(_DEMO_AUDIO), opus]
    info = parse_init(init_segment(tracks))
    assert info.major == b"iso6"
    assert info.compatible == [b"iso6", b"cmfc", b"mp41"]
    assert set(info.traks) == {1, 2, 4} and info.next_track_id == 5
    assert info.trex == {1: (1, 0, 0, 0), 2: (1, 0, 0, 0), 4: (1, 0, 0, 0)}
    avc1 = check_trak(info.traks[1], tracks[0])
    assert avc1.type == "avc1" and avc1.one("avcC").body == _DEMO_VIDEO.payload
    mp4a = check_trak(info.traks[2], tracks[1])
    assert mp4a.type == "mp4a" and esds_config(mp4a.one("esds")) == _DEMO_AUDIO.payload
    entry = check_trak(info.traks[4], opus)
    assert entry.type == "Opus" and entry.one("dOps")


def test_init_segment_rejects_bad_track_sets() -> None:
    video = track_from_config(_DEMO_VIDEO)
    with pytest.raises(LocalProtocolError):
        init_segment([])
    with pytest.raises(LocalProtocolError):
        init_segment([video, track_from_config(_DEMO_VIDEO, track_id=7)])  # same frames
    with pytest.raises(LocalProtocolError):
        init_segment([video, track_from_config(_DEMO_AUDIO, track_id=1)])  # same track_ID
    with pytest.raises(LocalProtocolError):
        FragmentWriter([video, video])


def test_track_from_config_misuse() -> None:
    media = Frame(FrameKind.VIDEO, "h264", 0, 0, _DEMO_VIDEO.payload)
    with pytest.raises(LocalProtocolError):
        track_from_config(media)  # not a config frame
    with pytest.raises(LocalProtocolError):
        track_from_config(config_frame(FrameKind.AUDIO, "mp3", b"\xff\xfb"))
    with pytest.raises(LocalProtocolError):
        track_from_config(config_frame(FrameKind.AUDIO, "h264", _DEMO_VIDEO.payload))
    with pytest.raises(LocalProtocolError):
        track_from_config(_DEMO_VIDEO, timescale=999)
    with pytest.raises(LocalProtocolError):
        track_from_config(_DEMO_VIDEO, track_id=0)
    vp9 = config_frame(FrameKind.VIDEO, "vp9", b"\x01\x00\x00\x00\x00\x14\x82\x02\x02\x02\x00\x00")
    assert fmp4.needs_keyframe(vp9)
    with pytest.raises(LocalProtocolError):
        track_from_config(vp9)  # the picture size is in the first keyframe


def test_opus_tags_is_not_a_config() -> None:
    with pytest.raises(CodecError, match="OpusTags"):
        track_from_config(config_frame(FrameKind.AUDIO, "opus", b"OpusTags\x00\x00\x00\x00"))


def test_timescale_override_is_used() -> None:
    video = track_from_config(_DEMO_VIDEO, timescale=1000)
    audio = track_from_config(_DEMO_AUDIO, timescale=1000)
    assert (video.timescale, audio.timescale, audio.default_duration) == (1000, 1000, 23)
    writer = FragmentWriter([video, audio])
    for dts in (0, 23, 46):
        writer.push(Frame(FrameKind.AUDIO, "aac", dts, dts, b"a"))
    fragment = writer.flush()
    assert fragment is not None
    [traf] = parse_fragment(fragment.data).trafs
    assert traf.decode_time == 0 and [s.duration for s in traf.samples] == [23, 23, 23]


# --- AV1 -------------------------------------------------------------------------------------


@dataclass
class Av1OperatingPoint:
    idc: int
    level: int
    tier: int
    decoder_model: bool
    decoder_buffer_delay: int
    low_delay: int
    initial_display_delay: int | None


AV1_OPERATING_POINT = st.builds(
    Av1OperatingPoint,
    idc=st.integers(0, 0xFFF),
    level=st.integers(0, 31),
    tier=st.integers(0, 1),
    decoder_model=st.booleans(),
    decoder_buffer_delay=st.integers(0, 2**32 - 1),
    low_delay=st.integers(0, 1),
    initial_display_delay=st.one_of(st.none(), st.integers(0, 15)),
)


@st.composite
def av1_sequence_headers(draw: st.DrawFn) -> tuple[bytes, int, int]:
    """A random AV1 sequence header OBU payload and its (width, height)."""
    w = BitWriter()
    w.u(3, draw(st.integers(0, 2)))  # seq_profile
    w.u(1, draw(st.integers(0, 1)))  # still_picture
    reduced = draw(st.booleans())
    w.u(1, reduced)
    if reduced:
        w.u(5, draw(st.integers(0, 31)))
    else:
        timing = draw(st.booleans())
        w.u(1, timing)
        decoder_model = False
        delay_bits = 1
        if timing:
            w.u(32, draw(st.integers(0, 2**32 - 1)))
            w.u(32, draw(st.integers(0, 2**32 - 1)))
            equal = draw(st.booleans())
            w.u(1, equal)
            if equal:
                w.uvlc(draw(st.integers(0, 2**20)))
            decoder_model = draw(st.booleans())
            w.u(1, decoder_model)
            if decoder_model:
                delay_bits = draw(st.integers(1, 32))
                w.u(5, delay_bits - 1)
                w.u(32, draw(st.integers(0, 2**32 - 1)))
                w.u(5, draw(st.integers(0, 31)))
                w.u(5, draw(st.integers(0, 31)))
        initial_display = draw(st.booleans())
        w.u(1, initial_display)
        points = draw(st.lists(AV1_OPERATING_POINT, min_size=1, max_size=32))
        w.u(5, len(points) - 1)
        for point in points:
            w.u(12, point.idc)
            w.u(5, point.level)
            if point.level > 7:
                w.u(1, point.tier)
            if decoder_model:
                w.u(1, point.decoder_model)
                if point.decoder_model:
                    delay = point.decoder_buffer_delay & ((1 << delay_bits) - 1)
                    w.u(delay_bits, delay)
                    w.u(delay_bits, delay)
                    w.u(1, point.low_delay)
            if initial_display:
                w.u(1, point.initial_display_delay is not None)
                if point.initial_display_delay is not None:
                    w.u(4, point.initial_display_delay)
    width = draw(st.integers(1, 65535))
    height = draw(st.integers(1, 65535))
    width_bits = min(16, max(1, (width - 1).bit_length()) + draw(st.integers(0, 2)))
    height_bits = min(16, max(1, (height - 1).bit_length()) + draw(st.integers(0, 2)))
    w.u(4, width_bits - 1)
    w.u(4, height_bits - 1)
    w.u(width_bits, width - 1)
    w.u(height_bits, height - 1)
    w.u(draw(st.integers(24, 40)), 0)  # the rest of the header (zeros: no tools, default colours)
    return w.bytes(), width, height


@settings(max_examples=100, deadline=None)
@given(av1_sequence_headers(), st.booleans(), st.booleans(), st.binary(max_size=40))
def test_av1_track_from_sequence_header(
    header: tuple[bytes, int, int], in_config: bool, extension: bool, frame_data: bytes
) -> None:
    payload, width, height = header
    sequence_obu = obu(1, payload, extension)
    av1c = b"\x81\x00\x0c\x00" + (sequence_obu if in_config else b"")
    config = config_frame(FrameKind.VIDEO, "av1", av1c)
    temporal_delimiter = obu(2, b"")
    key_payload = temporal_delimiter + sequence_obu + obu(6, frame_data, sized=False)
    keyframe = Frame(FrameKind.VIDEO, "av1", 0, 0, key_payload, keyframe=True)
    assert fmp4.needs_keyframe(config) is not in_config
    track = track_from_config(config, keyframe)
    assert (track.width, track.height) == (width, height)
    info = parse_init(init_segment([track]))
    assert info.compatible[-1] == b"av01"
    entry = check_trak(info.traks[1], track)
    assert entry.type == "av01" and entry.one("av1C").body == av1c
    # The temporal delimiter is left out of the sample, the rest is the payload as it is.
    writer = FragmentWriter([track])
    assert writer.push(keyframe)
    fragment = writer.flush()
    assert fragment is not None
    [traf] = parse_fragment(fragment.data).trafs
    assert [s.data for s in traf.samples] == [key_payload[len(temporal_delimiter) :]]


def test_av1_without_sequence_header_anywhere() -> None:
    config = config_frame(FrameKind.VIDEO, "av1", b"\x81\x00\x0c\x00")
    keyframe = Frame(FrameKind.VIDEO, "av1", 0, 0, obu(2, b"") + obu(6, b"\x10"), keyframe=True)
    with pytest.raises(CodecError):
        track_from_config(config, keyframe)
    with pytest.raises(CodecError):  # an AV1 video descriptor (MPEG2TSSequenceStart)
        track_from_config(config_frame(FrameKind.VIDEO, "av1", b"\x80\x04\x81\x00\x0c\x00"))


# --- VP9 -------------------------------------------------------------------------------------


@st.composite
def vp9_keyframes(draw: st.DrawFn) -> tuple[bytes, int, int, int]:
    """A random VP9 key frame (uncompressed header + junk), its profile, width, height."""
    profile = draw(st.integers(0, 3))
    w = BitWriter()
    w.u(2, 2)  # frame_marker
    w.u(1, profile & 1)
    w.u(1, profile >> 1)
    if profile == 3:
        w.u(1, 0)
    w.u(1, 0)  # show_existing_frame
    w.u(1, 0)  # KEY_FRAME
    w.u(1, draw(st.integers(0, 1)))  # show_frame
    w.u(1, draw(st.integers(0, 1)))  # error_resilient_mode
    w.u(24, 0x498342)
    if profile >= 2:
        w.u(1, draw(st.integers(0, 1)))
    color_space = draw(st.integers(0, 7))
    w.u(3, color_space)
    if color_space != 7:
        w.u(1, draw(st.integers(0, 1)))
        if profile in (1, 3):
            w.u(2, draw(st.integers(0, 3)))
            w.u(1, 0)
    elif profile in (1, 3):
        w.u(1, 0)
    width, height = draw(st.integers(1, 65535)), draw(st.integers(1, 65535))
    w.u(16, width - 1)
    w.u(16, height - 1)
    return w.bytes() + draw(st.binary(max_size=30)), profile, width, height


@settings(max_examples=100, deadline=None)
@given(vp9_keyframes(), st.booleans(), st.sampled_from([8, 10, 12]), st.integers(0, 7),
       st.integers(0, 255), st.binary(max_size=0))  # fmt: skip
def test_vp9_track_from_keyframe(
    keyframe: tuple[bytes, int, int, int], full_box_prefix: bool, bit_depth: int,
    chroma: int, level: int, init_data: bytes,
) -> None:  # fmt: skip
    payload, profile, width, height = keyframe
    record = bytes((profile, level, bit_depth << 4 | chroma << 1, 1, 1, 1)) + b"\x00\x00" + init_data
    config = config_frame(FrameKind.VIDEO, "vp9", (b"\x01\x00\x00\x00" if full_box_prefix else b"") + record)
    key = Frame(FrameKind.VIDEO, "vp9", 0, 0, payload, keyframe=True)
    track = track_from_config(config, key)
    assert (track.width, track.height) == (width, height)
    entry = check_trak(parse_init(init_segment([track])).traks[1], track)
    version, flags, body = full_box(entry.one("vpcC"))
    assert entry.type == "vp09" and (version, flags, body) == (1, 0, record)


@pytest.mark.parametrize(
    "record",
    [
        b"\x00\x14\x92\x02\x02\x02\x00\x00",  # bit depth 9
        b"\x00\x14\x82\x02\x02\x02\x00\x00\xff",  # a byte after the record
        b"\x00\x14\x82\x02\x02\x02\x00\x02\xff",  # initialization data cut short
        b"\x01\x00\x00\x00\x00\x14\x82",  # truncated
    ],
)
def test_vp9_rejects_malformed_records(record: bytes) -> None:
    key = Frame(FrameKind.VIDEO, "vp9", 0, 0, b"\x82\x49\x83\x42\x00\x13\xf0\x0e\xf6", keyframe=True)
    with pytest.raises(CodecError):
        track_from_config(config_frame(FrameKind.VIDEO, "vp9", record), key)
    good = track_from_config(config_frame(FrameKind.VIDEO, "vp9", b"\x00\x14\x82\x02\x02\x02\x00\x00"), key)
    assert (good.width, good.height) == (320, 240)  # the header of a real libvpx keyframe


def test_vp9_rejects_non_key_frames() -> None:
    config = config_frame(FrameKind.VIDEO, "vp9", b"\x00\x14\x82\x02\x02\x02\x00\x00")
    inter = Frame(FrameKind.VIDEO, "vp9", 0, 0, b"\x86\x00\x40\x92", keyframe=True)  # an inter frame
    with pytest.raises(CodecError):
        track_from_config(config, inter)
    with pytest.raises(LocalProtocolError):  # not flagged as a keyframe
        track_from_config(config, Frame(FrameKind.VIDEO, "vp9", 0, 0, b"\x82"))


# --- audio -----------------------------------------------------------------------------------

AAC_RATES = (
    96000,
    88200,
    64000,
    48000,
    44100,
    32000,
    24000,
    22050,
    16000,
    12000,
    11025,
    8000,
    7350,
)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 4), st.integers(0, 12), st.integers(1, 7),
       st.one_of(st.binary(max_size=20), st.binary(min_size=110, max_size=20_000)))  # fmt: skip
def test_aac_esds_carries_the_audio_specific_config(
    object_type: int, index: int, channel_config: int, tail: bytes
) -> None:
    asc = struct.pack(">H", object_type << 11 | index << 7 | channel_config << 3) + tail
    track = track_from_config(config_frame(FrameKind.AUDIO, "aac", asc))
    rate = AAC_RATES[index]
    channels = 8 if channel_config == 7 else channel_config
    assert (track.sample_rate, track.channels, track.timescale) == (rate, channels, rate)
    entry = check_trak(parse_init(init_segment([track])).traks[2], track)
    assert entry.type == "mp4a" and esds_config(entry.one("esds")) == asc


@st.composite
def opus_heads(draw: st.DrawFn) -> tuple[bytes, dict[str, int], bytes]:
    family = draw(st.sampled_from([0, 1, 255]))
    channels = draw(st.integers(1, 2 if family == 0 else 8))
    mapping = b""
    if family:
        streams = draw(st.integers(1, channels))
        coupled = draw(st.integers(0, streams))
        mapping = bytes((streams, coupled)) + bytes(
            draw(st.lists(st.integers(0, 255), min_size=channels, max_size=channels))
        )
    fields = {"channels": channels, "pre_skip": draw(st.integers(0, 65535)),
              "rate": draw(st.integers(0, 2**32 - 1)), "gain": draw(st.integers(-32768, 32767)),
              "family": family}  # fmt: skip
    head = opus_head(fields["channels"], fields["pre_skip"], fields["rate"], fields["gain"], family, mapping)
    return head, fields, mapping


@settings(max_examples=100, deadline=None)
@given(opus_heads())
def test_opus_head_becomes_dops(case: tuple[bytes, dict[str, int], bytes]) -> None:
    head, fields, mapping = case
    track = track_from_config(config_frame(FrameKind.AUDIO, "opus", head))
    assert (track.timescale, track.sample_rate, track.channels) == (
        48_000,
        48_000,
        fields["channels"],
    )
    entry = check_trak(parse_init(init_segment([track])).traks[2], track)
    dops = entry.one("dOps").body
    version, channels, pre_skip, rate, gain, family = struct.unpack_from(">BBHIhB", dops)
    assert version == 0
    assert (channels, pre_skip, rate, gain, family) == (
        fields["channels"],
        fields["pre_skip"],
        fields["rate"],
        fields["gain"],
        fields["family"],
    )
    assert dops[11:] == mapping


CONFIG_CODECS = [(FrameKind.VIDEO, c) for c in ("h264", "hevc", "av1", "vp9")] + [
    (FrameKind.AUDIO, c) for c in ("aac", "opus")
]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(CONFIG_CODECS), st.binary(max_size=64), st.binary(max_size=64))
def test_arbitrary_config_bytes_raise_only_codec_errors(
    codec: tuple[FrameKind, str], payload: bytes, key_payload: bytes
) -> None:
    kind, name = codec
    config = config_frame(kind, name, payload)
    keyframe = Frame(kind, name, 0, 0, key_payload, keyframe=True)
    try:
        track = track_from_config(config, keyframe)
    except CodecError:
        return
    parse_init(init_segment([track]))


# --------------------------------------------------------------------------------------------
# Fragments from random frame sequences
# --------------------------------------------------------------------------------------------


def _tracks() -> list[Fmp4Track]:
    """h264 (track 0, id 1), aac (track 0, id 2), h264 (track 1, id 3), opus (track 1, id 4)."""
    video1 = Frame(FrameKind.VIDEO, "h264", 0, 0, _DEMO_VIDEO.payload, config=True, track=1)
    return [
        track_from_config(_DEMO_VIDEO),
        track_from_config(_DEMO_AUDIO),
        track_from_config(video1),
        track_from_config(config_frame(FrameKind.AUDIO, "opus", opus_head(2), track=1)),
    ]


TRACKS = _tracks()
TRACK_OF = {(t.kind, t.track): t for t in TRACKS}


@st.composite
def track_frames(draw: st.DrawFn, track: Fmp4Track, start: int) -> list[Frame]:
    video = track.kind is FrameKind.VIDEO
    count = draw(st.integers(1, 30))
    dts = start
    frames = []
    for i in range(count):
        if video:
            key = i == 0 or draw(st.integers(0, 9)) == 0
            cts = draw(st.one_of(st.integers(0, 250), st.integers(-60, 0)))
        else:
            key, cts = False, 0
        payload = f"{track.track_id}:{i}:".encode() + draw(st.binary(max_size=24))
        frames.append(Frame(track.kind, track.codec, dts + cts, dts, payload, keyframe=key, track=track.track))
        dts += draw(st.integers(1, 100) if video else st.integers(15, 30))
    return frames


@st.composite
def multitrack_streams(
    draw: st.DrawFn,
) -> tuple[list[Fmp4Track], list[Frame], list[str], int | None]:
    """Tracks, interleaved frames (in DTS order), an action after each frame and a flush end."""
    tracks = [TRACKS[0]] + [t for t in TRACKS[1:] if draw(st.booleans())]
    base = draw(st.integers(0, 5_000_000))
    frames: list[Frame] = []
    for track in tracks:
        frames += draw(track_frames(track, base + draw(st.integers(0, 100))))
    # A couple of leading non-keyframes on the main video track: dropped by the writer.
    leading = draw(st.integers(0, 2))
    frames += [Frame(FrameKind.VIDEO, "h264", base - 10 - i, base - 10 - i, b"drop", track=0)
               for i in range(leading)]  # fmt: skip
    frames.sort(key=lambda f: f.dts)
    actions = draw(st.lists(st.sampled_from(["", "", "", "until", "all"]),
                            min_size=len(frames), max_size=len(frames)))  # fmt: skip
    end = draw(st.one_of(st.none(), st.integers(base, base + 5_000)))
    return tracks, frames, actions, end


def run_writer(
    tracks: Sequence[Fmp4Track], frames: list[Frame], actions: list[str], end: int | None
) -> tuple[FragmentWriter, list[Fragment], list[Frame]]:
    writer = FragmentWriter(tracks)
    fragments: list[Fragment] = []
    taken: list[Frame] = []
    for frame, action in zip(frames, actions):
        if writer.push(frame):
            taken.append(frame)
        fragment = writer.fragment(frame.dts) if action == "until" else writer.fragment() if action else None
        if fragment is not None:
            fragments.append(fragment)
    last = writer.flush(end)
    if last is not None:
        fragments.append(last)
    assert writer.pending == 0
    return writer, fragments, taken


def ticks_of(ms: int, timescale: int) -> float:
    return ms * timescale / 1000


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(multitrack_streams())
def test_random_streams_parse_back(
    stream: tuple[list[Fmp4Track], list[Frame], list[str], int | None],
) -> None:
    tracks, frames, actions, end = stream
    writer, fragments, taken = run_writer(tracks, frames, actions, end)
    by_id = {t.track_id: t for t in tracks}
    assert writer.dropped_frames == sum(f.payload == b"drop" for f in frames)
    samples: dict[int, list[tuple[int, Sample]]] = {t.track_id: [] for t in tracks}
    ends: dict[int, int] = {}
    for number, fragment in enumerate(fragments, start=1):
        parsed = parse_fragment(fragment.data)
        assert parsed.sequence == fragment.sequence == number
        assert fragment.size == len(fragment.data)
        assert [t.track_id for t in parsed.trafs] == sorted(t.track_id for t in parsed.trafs)
        assert len(parsed.trafs) == len(fragment.runs)
        for traf, run in zip(parsed.trafs, fragment.runs):
            # The info matches the boxes; tfdt(n+1) = tfdt(n) + sum of durations, per track.
            assert (run.track_id, run.decode_time, run.duration, run.samples) == (
                traf.track_id,
                traf.decode_time,
                traf.duration,
                len(traf.samples),
            )
            assert run.size == sum(s.size for s in traf.samples)
            if traf.track_id in ends:
                assert traf.decode_time == ends[traf.track_id]
            ends[traf.track_id] = traf.decode_time + traf.duration
            decode = traf.decode_time
            for sample in traf.samples:
                assert sample.duration > 0
                samples[traf.track_id].append((decode, sample))
                decode += sample.duration
        lead = next((r for r in fragment.runs if r.track_id == 1), None)
        reference = lead or min(fragment.runs, key=lambda r: r.decode_time / r.timescale)
        assert fragment.start == reference.decode_time / reference.timescale
        assert fragment.duration == reference.duration / reference.timescale
        assert fragment.independent == (lead is not None and parsed.trafs[fragment.runs.index(lead)].samples[0].sync)
        assert not fragment.discontinuity
    # Every taken frame is a sample, once, in order, with its bytes, time and flags.
    for track_id, got in samples.items():
        track = by_id[track_id]
        expected = [f for f in taken if TRACK_OF[(f.kind, f.track)].track_id == track_id]
        assert [s.data for _, s in got] == [f.payload for f in expected]
        ts = track.timescale
        for (decode, sample), frame in zip(got, expected):
            assert abs(decode - ticks_of(frame.dts, ts)) <= 0.5  # no offset: no jump here
            assert abs(decode + sample.cto - ticks_of(frame.pts, ts)) <= 1
            assert sample.sync == (frame.keyframe or track.kind is FrameKind.AUDIO)
            if track.kind is FrameKind.VIDEO:
                assert sample.cto == (frame.pts - frame.dts) * 90  # exact at 90 kHz
        # The held-back last sample: until the flush end, or the previous duration.
        if got:
            last_decode, last = got[-1]
            if end is not None and ms_round(end, ts) > last_decode:
                assert abs(last_decode + last.duration - ticks_of(end, ts)) <= 0.5
            elif len(got) > 1:
                assert last.duration == got[-2][1].duration
            else:
                assert last.duration == track.default_duration


def test_cut_before_a_keyframe_makes_independent_parts() -> None:
    """The LL-HLS pattern: push a keyframe, cut before it; the next part starts with it."""
    video, audio = track_from_config(_DEMO_VIDEO), track_from_config(_DEMO_AUDIO)
    writer = FragmentWriter([video, audio])
    parts: list[Fragment] = []
    for i in range(60):
        key = i % 20 == 0
        writer.push(Frame(FrameKind.VIDEO, "h264", i * 40, i * 40, b"v%d" % i, keyframe=key))
        writer.push(Frame(FrameKind.AUDIO, "aac", i * 40 + 5, i * 40 + 5, b"a%d" % i))
        if key and i:
            part = writer.fragment(i * 40)
            assert part is not None
            parts.append(part)
    tail = writer.flush()
    assert tail is not None
    parts.append(tail)
    assert [p.independent for p in parts] == [True, True, True]
    assert [p.first_dts for p in parts] == [0, 800, 1600]
    assert [p.start for p in parts] == [0.0, 0.8, 1.6]
    assert [p.duration for p in parts] == [0.8, 0.8, 0.8]
    for part in parts:
        video_traf = parse_fragment(part.data).trafs[0]
        assert video_traf.samples[0].sync and not any(s.sync for s in video_traf.samples[1:])


def test_cut_excludes_samples_at_until() -> None:
    """``until`` is exclusive: a complete sample whose DTS is ``until`` waits for the next cut."""
    writer = FragmentWriter([track_from_config(_DEMO_AUDIO)])
    for dts in (0, 23, 46, 69):
        writer.push(Frame(FrameKind.AUDIO, "aac", dts, dts, b"%d" % dts))
    first = writer.fragment(46)
    rest = writer.flush()
    assert first is not None and rest is not None
    assert [s.data for s in parse_fragment(first.data).trafs[0].samples] == [b"0", b"23"]
    assert [s.data for s in parse_fragment(rest.data).trafs[0].samples] == [b"46", b"69"]
    assert first.first_dts == 0 and rest.first_dts == 46


def test_nothing_to_cut() -> None:
    writer = FragmentWriter([track_from_config(_DEMO_AUDIO)])
    assert writer.fragment() is None and writer.flush() is None
    writer.push(Frame(FrameKind.AUDIO, "aac", 0, 0, b"x"))
    assert writer.fragment() is None  # its duration is not known yet
    assert writer.pending == 1


def test_push_ignores_what_is_not_a_sample() -> None:
    writer = FragmentWriter([track_from_config(_DEMO_VIDEO)])
    assert not writer.push(_DEMO_VIDEO)  # config
    assert not writer.push(Frame(FrameKind.DATA, "amf0", 0, 0, b"onMetaData", config=True))
    assert not writer.push(Frame(FrameKind.AUDIO, "aac", 0, 0, b"x"))  # no audio track
    assert not writer.push(Frame(FrameKind.VIDEO, "h264", 0, 0, b"x", track=1))  # other track
    assert not writer.push(Frame(FrameKind.VIDEO, "h264", 0, 0, b"x"))  # before a keyframe
    assert writer.dropped_frames == 1 and writer.pending == 0


def test_push_errors_leave_the_writer_unchanged() -> None:
    video = track_from_config(_DEMO_VIDEO)
    writer = FragmentWriter([video])
    writer.push(Frame(FrameKind.VIDEO, "h264", 0, 0, b"k", keyframe=True))
    with pytest.raises(LocalProtocolError):
        writer.push(Frame(FrameKind.VIDEO, "hevc", 40, 40, b"x"))
    with pytest.raises(CodecError):  # 30 000 s of composition offset: over 2**31 ticks
        writer.push(Frame(FrameKind.VIDEO, "h264", 30_000_040, 40, b"x"))
    writer.push(Frame(FrameKind.VIDEO, "h264", 40, 40, b"y"))
    fragment = writer.flush()
    assert fragment is not None
    [traf] = parse_fragment(fragment.data).trafs
    assert [s.data for s in traf.samples] == [b"k", b"y"]
    assert [s.duration for s in traf.samples] == [3600, 3600]


def test_writer_settings_are_checked() -> None:
    video = track_from_config(_DEMO_VIDEO)
    for kwargs in (
        {"max_gap_ms": 0},
        {"max_gap_ms": 3_600_001},
        {"sequence": 0},
        {"sequence": 2**32},
    ):
        with pytest.raises(LocalProtocolError):
            FragmentWriter([video], **kwargs)
    with pytest.raises(LocalProtocolError):
        FragmentWriter([])


def test_sequence_numbers_start_where_asked_and_wrap() -> None:
    writer = FragmentWriter([track_from_config(_DEMO_AUDIO)], sequence=2**32 - 1)
    numbers = []
    for i in range(3):
        writer.push(Frame(FrameKind.AUDIO, "aac", i * 23, i * 23, b"x"))
        writer.push(Frame(FrameKind.AUDIO, "aac", i * 23 + 10, i * 23 + 10, b"y"))
        fragment = writer.fragment()
        assert fragment is not None
        numbers.append(parse_fragment(fragment.data).sequence)
    assert numbers == [2**32 - 1, 1, 2]


# --------------------------------------------------------------------------------------------
# Jumps, wraps and discontinuities
# --------------------------------------------------------------------------------------------

STEPS = st.one_of(
    st.integers(1, 60),  # normal
    st.integers(-60, 0),  # jitter back, repeats
    st.integers(10_001, 4_000_000_000),  # huge forward jump (a 32-bit wrap misread)
    st.integers(-4_000_000_000, -10_001),  # huge backward jump (publisher restart)
)


@st.composite
def jumpy_streams(draw: st.DrawFn) -> tuple[list[Frame], list[str]]:
    video_dts = draw(st.integers(-10_000, 10_000_000))
    audio_dts = video_dts + draw(st.integers(-100, 100))
    frames: list[Frame] = []
    for i in range(draw(st.integers(1, 60))):
        if draw(st.booleans()):
            cts = draw(st.integers(0, 200))
            key = i == 0 or draw(st.integers(0, 5)) == 0
            frames.append(Frame(FrameKind.VIDEO, "h264", video_dts + cts, video_dts, b"v%d" % i, keyframe=key))
            video_dts += draw(STEPS)
        else:
            frames.append(Frame(FrameKind.AUDIO, "aac", audio_dts, audio_dts, b"a%d" % i))
            audio_dts += draw(STEPS)
    actions = draw(st.lists(st.sampled_from(["", "", "until", "all", "flush", "discontinuity"]),
                            min_size=len(frames), max_size=len(frames)))  # fmt: skip
    return frames, actions


@settings(max_examples=100, deadline=None)
@given(jumpy_streams())
def test_decode_times_never_go_back(stream: tuple[list[Frame], list[str]]) -> None:
    frames, actions = stream
    video, audio = track_from_config(_DEMO_VIDEO), track_from_config(_DEMO_AUDIO)
    writer = FragmentWriter([video, audio])
    fragments, taken = [], []
    for frame, action in zip(frames, actions):
        if action == "discontinuity":
            writer.discontinuity()
        if writer.push(frame):
            taken.append(frame)
        if action == "until":
            fragments.append(writer.fragment(frame.dts))
        elif action == "all":
            fragments.append(writer.fragment())
        elif action == "flush":
            fragments.append(writer.flush())
    fragments.append(writer.flush())
    done = [f for f in fragments if f is not None]
    assert [f.sequence for f in done] == list(range(1, len(done) + 1))
    got: dict[int, list[tuple[int, Sample]]] = {1: [], 2: []}
    for fragment in done:
        for traf in parse_fragment(fragment.data).trafs:
            assert traf.decode_time >= 0
            decode = traf.decode_time
            for sample in traf.samples:
                got[traf.track_id].append((decode, sample))
                decode += sample.duration
    for track_id, track in ((1, video), (2, audio)):
        samples = got[track_id]
        expected = [f for f in taken if f.kind is track.kind]
        assert [s.data for _, s in samples] == [f.payload for f in expected]
        max_gap = writer.max_gap_ms * track.timescale // 1000
        for (decode, sample), (next_decode, _) in zip(samples, samples[1:]):
            assert 0 < sample.duration <= max_gap + 1
            assert decode + sample.duration <= next_decode  # no overlap, never backwards
        for (_, sample), frame in zip(samples, expected):
            assert sample.cto == (frame.pts - frame.dts) * (90 if track_id == 1 else 0)


def frames_of(fragments: Sequence[Fragment | None]) -> dict[int, list[tuple[int, Sample]]]:
    out: dict[int, list[tuple[int, Sample]]] = {}
    for fragment in fragments:
        if fragment is None:
            continue
        for traf in parse_fragment(fragment.data).trafs:
            decode = traf.decode_time
            for sample in traf.samples:
                out.setdefault(traf.track_id, []).append((decode, sample))
                decode += sample.duration
    return out


def av_session(writer: FragmentWriter, start: int, count: int, tag: bytes) -> None:
    for i in range(count):
        writer.push(
            Frame(
                FrameKind.VIDEO,
                "h264",
                start + i * 40,
                start + i * 40,
                tag + b"v%d" % i,
                keyframe=i == 0,
            )
        )
        writer.push(Frame(FrameKind.AUDIO, "aac", start + 10 + i * 40, start + 10 + i * 40, tag + b"a%d" % i))


@pytest.mark.parametrize("second_start", [0, 5_000, 100_000_000, -3_000])
def test_publisher_restart_continues_the_timeline_in_sync(second_start: int) -> None:
    """A second session whose timestamps go back (or leap forward) is placed right after the
    first one; audio keeps its 10 ms lead over video (the offset is shared by the tracks)."""
    writer = FragmentWriter([track_from_config(_DEMO_VIDEO), track_from_config(_DEMO_AUDIO)])
    av_session(writer, 60_000, 25, b"1")
    first = writer.fragment()
    av_session(writer, second_start, 25, b"2")
    second = writer.flush()
    assert first is not None and second is not None
    assert not first.discontinuity and second.discontinuity
    got = frames_of([first, second])
    video = [(d, s) for d, s in got[1] if s.data.startswith(b"2")]
    audio = [(d, s) for d, s in got[2] if s.data.startswith(b"2")]
    # The second session starts where the first ended (its last video sample lasted 40 ms,
    # the audio's last one 40 ms too; audio ended 10 ms later, so that is the end of all).
    assert video[0][0] == (60_000 + 24 * 40 + 10 + 40) * 90
    assert audio[0][0] / 44.1 - video[0][0] / 90 == pytest.approx(10, abs=0.02)
    assert writer.offset == 60_000 + 24 * 40 + 50 - second_start
    for samples in got.values():
        decodes = [d for d, _ in samples]
        assert decodes == sorted(decodes) and len(set(decodes)) == len(decodes)


def test_32_bit_timestamp_wrap_unwrapped_by_the_ingest_stays_continuous() -> None:
    """RTMP timestamps wrap at 2**32 ms (49.7 days); flv.TimestampUnwrapper makes them grow,
    and the writer's 64-bit tfdt carries them on, without a discontinuity."""
    unwrapper = TimestampUnwrapper()
    writer = FragmentWriter([track_from_config(_DEMO_VIDEO)])
    fragments = []
    for i in range(10):
        wire = (2**32 - 200 + i * 40) & 0xFFFFFFFF  # what the 32-bit wire carries
        dts = unwrapper.unwrap(wire)
        writer.push(Frame(FrameKind.VIDEO, "h264", dts, dts, b"%d" % i, keyframe=i % 5 == 0))
        if i % 5 == 0 and i:
            fragments.append(writer.fragment(dts))
    fragments.append(writer.flush())
    assert all(f is not None and not f.discontinuity for f in fragments)
    got = frames_of(fragments)[1]
    decodes = [d for d, _ in got]
    assert decodes == [(2**32 - 200 + i * 40) * 90 for i in range(10)]  # past 2**32 * 90
    assert [s.data for _, s in got] == [b"%d" % i for i in range(10)]


def test_explicit_discontinuity_rebases_even_monotonic_timestamps() -> None:
    writer = FragmentWriter([track_from_config(_DEMO_AUDIO)])
    for dts in (0, 23, 46):
        writer.push(Frame(FrameKind.AUDIO, "aac", dts, dts, b"a"))
    writer.discontinuity()
    writer.push(Frame(FrameKind.AUDIO, "aac", 5_000, 5_000, b"b"))  # a 5 s step: not a jump
    writer.push(Frame(FrameKind.AUDIO, "aac", 5_023, 5_023, b"c"))
    fragment = writer.flush()
    assert fragment is not None and fragment.discontinuity
    [traf] = parse_fragment(fragment.data).trafs  # contiguous: one run
    decodes = [traf.decode_time + sum(s.duration for s in traf.samples[:i]) for i in range(5)]
    assert decodes[:3] == [0, 1014, 2029]  # 0, 23, 46 ms at 44.1 kHz, rounded
    # b lands right after the end of the last sample before the discontinuity (its estimated
    # duration is the previous one, 1015 ticks), rounded up to a whole millisecond.
    assert 2029 + 1015 <= decodes[3] <= 2029 + 1015 + 45
    assert decodes[4] - decodes[3] in (1014, 1015)  # c is 23 ms after b


def test_repeated_timestamp_is_a_jump_not_a_zero_duration() -> None:
    writer = FragmentWriter([track_from_config(_DEMO_AUDIO)])
    for dts in (100, 123, 123, 146):
        writer.push(Frame(FrameKind.AUDIO, "aac", dts, dts, b"x"))
    fragment = writer.flush()
    assert fragment is not None and fragment.discontinuity
    [traf] = parse_fragment(fragment.data).trafs
    assert len(traf.samples) == 4 and all(s.duration > 0 for s in traf.samples)


def test_stalled_track_leaves_a_gap() -> None:
    """Video stops for 15 s while audio goes on: its last sample keeps its duration and video
    resumes at its own timestamp, in a second run, still in sync with audio."""
    writer = FragmentWriter([track_from_config(_DEMO_VIDEO), track_from_config(_DEMO_AUDIO)])
    for i in range(3):
        writer.push(Frame(FrameKind.VIDEO, "h264", i * 40, i * 40, b"v", keyframe=i == 0))
    for dts in range(0, 16_000, 23):
        writer.push(Frame(FrameKind.AUDIO, "aac", dts, dts, b"a"))
    writer.push(Frame(FrameKind.VIDEO, "h264", 15_080, 15_080, b"w", keyframe=True))
    writer.push(Frame(FrameKind.VIDEO, "h264", 15_120, 15_120, b"w"))
    fragment = writer.flush()
    assert fragment is not None and not fragment.discontinuity
    video_runs = [t for t in parse_fragment(fragment.data).trafs if t.track_id == 1]
    assert [(t.decode_time, [s.duration for s in t.samples]) for t in video_runs] == [
        (0, [3600, 3600, 3600]),
        (15_080 * 90, [3600, 3600]),
    ]
    assert fragment.duration == pytest.approx(15.16)


def test_flush_end_before_a_held_sample_uses_the_previous_duration() -> None:
    writer = FragmentWriter([track_from_config(_DEMO_VIDEO)])
    for i in range(3):
        writer.push(Frame(FrameKind.VIDEO, "h264", i * 40, i * 40, b"v", keyframe=i == 0))
    fragment = writer.flush(end=50)  # before the last sample (80): ignored for it
    assert fragment is not None
    [traf] = parse_fragment(fragment.data).trafs
    assert [s.duration for s in traf.samples] == [3600, 3600, 3600]


# --------------------------------------------------------------------------------------------
# Interop: real clips, real decoders
# --------------------------------------------------------------------------------------------


def package(frames: list[Frame], part_ms: int = 300) -> tuple[list[Fmp4Track], bytes, list[Fragment]]:
    """An LL-HLS-like packaging of a whole clip: tracks from its first configs, an init segment,
    parts of about ``part_ms`` cut right before each video keyframe and wherever a part is long
    enough, and a final flush."""
    configs: dict[tuple[FrameKind, int], Frame] = {}
    for frame in frames:
        if frame.config and frame.codec in fmp4.SUPPORTED_CODECS:
            configs.setdefault((frame.kind, frame.track), frame)
    tracks = []
    for config in configs.values():
        keyframe = None
        if fmp4.needs_keyframe(config):
            keyframe = next(f for f in frames if f.kind is config.kind and f.keyframe and not f.config)
        tracks.append(track_from_config(config, keyframe))
    writer = FragmentWriter(tracks)
    fragments: list[Fragment] = []
    part_start: int | None = None
    for frame in frames:
        if not writer.push(frame) or not frame.is_video:
            continue
        if part_start is None:
            part_start = frame.dts
        elif frame.keyframe or frame.dts - part_start >= part_ms:
            fragment = writer.fragment(frame.dts)
            if fragment is not None:
                fragments.append(fragment)
                part_start = frame.dts
    last = writer.flush()
    assert last is not None
    fragments.append(last)
    return tracks, init_segment(tracks), fragments


def decode_quietly(ffmpeg: str, path: Path) -> None:
    result = subprocess.run([ffmpeg, "-v", "error", "-i", str(path), "-f", "null", "-"],
                            capture_output=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    assert result.stderr.decode() == ""


def ffprobe(path: Path, *args: str) -> dict:  # type: ignore[type-arg]
    out = subprocess.run([require_tool("ffprobe"), "-v", "error", "-of", "json", *args, str(path)],
                         check=True, capture_output=True, timeout=120).stdout  # fmt: skip
    return json.loads(out)  # type: ignore[no-any-return]


def expected_packets(frames: list[Frame], kind: FrameKind, timescale: int) -> tuple[list[tuple[int, int]], int]:
    """From the source frames alone: (pts, dts) per sample in ticks (the frames' timestamps
    rounded to the timescale) and where the track ends (the last sample lasts as long as the
    one before it)."""
    media = [f for f in frames if f.kind is kind and not f.config]
    stamps = [(ms_round(f.pts, timescale), ms_round(f.dts, timescale)) for f in media]
    last, before = stamps[-1][1], stamps[-2][1]
    return stamps, last + (last - before)


def ms_round(ms: int, timescale: int) -> int:
    return int(ms * timescale / 1000 + 0.5)


def probe_packets(path: Path, stream: str) -> tuple[list[tuple[int, int]], int]:
    """ffprobe's (pts, dts) of each packet of ``stream`` and the stream's duration_ts: the end
    of its last sample. (FFmpeg's demuxer places each sample of a trun at the tfdt plus the
    durations before it, and ends the track at the last sample's end; the packet durations it
    reports for fragmented files come from the codec, not from the trun.)"""
    probe = ffprobe(path, "-select_streams", stream, "-show_entries", "packet=pts,dts:stream=duration_ts")
    packets = [(int(p["pts"]), int(p["dts"])) for p in probe["packets"]]
    return packets, int(probe["streams"][0]["duration_ts"])


def probe_file_streams(path: Path) -> dict[str, dict]:  # type: ignore[type-arg]
    entries = "stream=codec_name,width,height,sample_rate,channels,nb_read_frames,time_base"
    probe = ffprobe(path, "-count_frames", "-show_entries", entries)
    return {s["codec_name"]: s for s in probe["streams"]}


@pytest.mark.interop
def test_ffmpeg_plays_the_demo_clip(tmp_path: Path) -> None:
    frames = flv.read_frames(DEMO.read_bytes())
    tracks, init, fragments = package(frames)
    assert len(fragments) > 30 and sum(f.independent for f in fragments) == 5  # a part per GOP start
    path = tmp_path / "demo.mp4"
    path.write_bytes(init + b"".join(f.data for f in fragments))
    decode_quietly(require_tool("ffmpeg"), path)
    streams = probe_file_streams(path)
    video_frames = sum(1 for f in frames if f.is_video and not f.config)
    audio_frames = sum(1 for f in frames if f.is_audio and not f.config)
    assert (video_frames, audio_frames) == (300, 430)
    assert streams["h264"]["width"] == 640 and streams["h264"]["height"] == 360
    assert int(streams["h264"]["nb_read_frames"]) == video_frames
    assert streams["h264"]["time_base"] == "1/90000"
    assert streams["aac"]["sample_rate"] == "44100" and streams["aac"]["channels"] == 1
    assert int(streams["aac"]["nb_read_frames"]) == audio_frames
    # Every packet's timestamps and duration are what the source frames say.
    assert probe_packets(path, "v:0") == expected_packets(frames, FrameKind.VIDEO, 90_000)
    assert probe_packets(path, "a:0") == expected_packets(frames, FrameKind.AUDIO, 44_100)


@pytest.mark.interop
def test_ffmpeg_joins_at_an_independent_part(tmp_path: Path) -> None:
    """A player that joins a live stream loads the init segment, then parts from one marked
    independent: that must decode on its own."""
    frames = flv.read_frames(DEMO.read_bytes())
    _, init, fragments = package(frames)
    join = [i for i, f in enumerate(fragments) if f.independent][2]
    path = tmp_path / "join.mp4"
    path.write_bytes(init + b"".join(f.data for f in fragments[join:]))
    decode_quietly(require_tool("ffmpeg"), path)
    probe = ffprobe(path, "-select_streams", "v:0", "-show_entries", "packet=dts,flags")
    packets = probe["packets"]
    assert packets[0]["flags"].startswith("K")
    assert int(packets[0]["dts"]) == round(fragments[join].start * 90_000)
    assert len(packets) == sum(r.samples for f in fragments[join:] for r in f.runs if r.track_id == 1)


ENCODES = {
    "hevc+aac": (["-c:v", "libx265", "-x265-params", "log-level=error:keyint=25:bframes=3"],
                 ["-c:a", "aac"], "hevc", "aac", 44_100),
    "av1+opus": (["-c:v", "libsvtav1", "-preset", "10", "-g", "25", "-svtav1-params", "lp=1"],
                 ["-c:a", "libopus"], "av1", "opus", 48_000),
    "vp9+opus": (["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-g", "25"],
                 ["-c:a", "libopus"], "vp9", "opus", 48_000),
}  # fmt: skip


@pytest.mark.interop
@pytest.mark.parametrize("name", list(ENCODES))
def test_ffmpeg_plays_enhanced_rtmp_codecs(tmp_path: Path, name: str) -> None:
    """FFmpeg 8 encodes a 2 s clip into Enhanced RTMP FLV; the frames that flv.read_frames gets
    from it go through the writer; FFmpeg 8 and Debian's FFmpeg decode the result without an
    error, and ffprobe sees the codecs, picture size, audio rate and every frame."""
    ffmpeg8 = require_ffmpeg8()
    video_args, audio_args, video_codec, audio_codec, rate = ENCODES[name]
    source = tmp_path / "source.flv"
    subprocess.run(
        [ffmpeg8, "-v", "error", "-y",
         "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=2",
         "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate={rate}:duration=2",
         *video_args, *audio_args, "-f", "flv", str(source)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    frames = flv.read_frames(source.read_bytes())
    assert {f.codec for f in frames if f.is_video} == {video_codec}
    assert {f.codec for f in frames if f.is_audio} == {audio_codec}
    tracks, init, fragments = package(frames)
    assert [(t.codec, t.width, t.height) for t in tracks if t.kind is FrameKind.VIDEO] == [(video_codec, 320, 240)]
    path = tmp_path / "out.mp4"
    path.write_bytes(init + b"".join(f.data for f in fragments))
    decode_quietly(ffmpeg8, path)
    decode_quietly(require_tool("ffmpeg"), path)
    streams = probe_file_streams(path)
    assert set(streams) == {video_codec, audio_codec}
    assert (streams[video_codec]["width"], streams[video_codec]["height"]) == (320, 240)
    assert streams[audio_codec]["sample_rate"] == str(rate)
    assert int(streams[video_codec]["nb_read_frames"]) == sum(1 for f in frames if f.is_video and not f.config)
    assert int(streams[audio_codec]["nb_read_frames"]) == sum(1 for f in frames if f.is_audio and not f.config)
    assert probe_packets(path, "v:0") == expected_packets(frames, FrameKind.VIDEO, 90_000)
    assert probe_packets(path, "a:0") == expected_packets(frames, FrameKind.AUDIO, rate)
    if video_codec == "hevc":
        assert any(f.pts != f.dts for f in frames), "expected B-frames"
