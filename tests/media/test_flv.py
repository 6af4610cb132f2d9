"""Tests of arcly_trio.media.flv: tag bodies <-> frames, the FLV stream, the demo clip.

Interop: the shipped demo clip (made by FFmpeg) is parsed and rewritten byte for byte, FFmpeg
decodes the rewrite without a message, and FFmpeg-written legacy codecs round-trip exactly.
Enhanced RTMP layouts are checked against vectors written by hand from the spec (the FFmpeg in
this environment predates Enhanced RTMP), and every parser is fuzzed with hypothesis.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arcly_trio.core.errors import LocalProtocolError, MessageTooLarge, RemoteProtocolError
from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.media import flv
from arcly_trio.media.flv import (
    FlvEnd,
    FlvError,
    FlvHeader,
    FlvReader,
    FlvTag,
    FlvUnsupported,
)
from arcly_trio.media.timestamps import TimestampUnwrapper
from tests._tools import require_tool

DEMO = Path(__file__).resolve().parent.parent.parent / "arcly_trio" / "server" / "assets" / "demo.flv"


def fields(frame: Frame) -> tuple[object, ...]:
    return (
        frame.kind,
        frame.codec,
        frame.pts,
        frame.dts,
        frame.payload,
        frame.keyframe,
        frame.config,
        frame.track,
    )


def read_events(data: bytes, *, chunks: list[int] | None = None, **kwargs: int) -> list[object]:
    """All events of ``data``, fed in pieces of the given sizes (then the rest, then EOF)."""
    reader = FlvReader(**kwargs)
    events: list[object] = []
    pos = 0

    def drain() -> None:
        while (event := reader.next_event()) is not None:
            events.append(event)
            if isinstance(event, FlvEnd):
                return

    for size in chunks or []:
        if data[pos : pos + size]:  # b"" would mean end of stream
            reader.receive_data(data[pos : pos + size])
        pos += size
        drain()
    if data[pos:]:
        reader.receive_data(data[pos:])
        drain()
    reader.receive_data(b"")
    drain()
    return events


# ---------------------------------------------------------------------------------------------
# The demo clip
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo() -> bytes:
    return DEMO.read_bytes()


def test_demo_clip_structure(demo: bytes) -> None:
    assert len(demo) < 2 * 1024 * 1024
    events = read_events(demo)
    assert events[0] == FlvHeader(has_audio=True, has_video=True, version=1)
    assert isinstance(events[-1], FlvEnd)
    tags = events[1:-1]
    assert all(isinstance(tag, FlvTag) for tag in tags)
    frames = [frame for tag in tags for frame in flv.tag_to_frames(tag)]  # type: ignore[arg-type]

    metadata, avc_config, aac_config = frames[:3]
    assert metadata.is_metadata and metadata.codec == "amf0"
    assert metadata.payload.startswith(b"\x02\x00\x0aonMetaData")
    assert (avc_config.codec, avc_config.config, avc_config.keyframe) == ("h264", True, True)
    assert avc_config.payload[0] == 1  # AVCDecoderConfigurationRecord version
    assert (aac_config.codec, aac_config.config) == ("aac", True)
    assert not any(frame.config for frame in frames[3:])

    video = [f for f in frames if f.is_video and not f.config]
    audio = [f for f in frames if f.is_audio and not f.config]
    assert len(video) == 300  # 10 s at 30 fps
    assert [i for i, f in enumerate(video) if f.keyframe] == [0, 60, 120, 180, 240]
    assert any(f.composition_time != 0 for f in video)  # B-frames
    assert all(f.pts >= f.dts for f in video)
    assert [f.dts for f in video] == sorted(f.dts for f in video)
    assert video[-1].dts < 10_000
    # The audio of one 10 s turn ends before the next turn's first audio frame starts.
    assert audio[-1].dts + 1024_000 / 44_100 <= 10_000 + audio[0].dts
    assert all(not f.keyframe for f in audio)


def test_demo_clip_metadata_decodes(demo: bytes) -> None:
    amf0 = pytest.importorskip("arcly_trio.media.amf0")
    metadata = flv.read_frames(demo)[0]
    name, values = amf0.decode(metadata.payload)
    assert name == "onMetaData"
    assert values["width"] == 640 and values["height"] == 360
    assert values["framerate"] == 30
    assert values["videocodecid"] == 7 and values["audiocodecid"] == 10
    assert values["audiosamplerate"] == 44100


@pytest.mark.interop
def test_demo_clip_frame_counts_match_ffprobe(demo: bytes) -> None:
    ffprobe = require_tool("ffprobe")
    out = subprocess.run(
        [ffprobe, "-v", "error", "-count_frames", "-show_entries",
         "stream=codec_type,nb_read_frames", "-of", "json", str(DEMO)],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    counts = {s["codec_type"]: int(s["nb_read_frames"]) for s in json.loads(out)["streams"]}
    frames = flv.read_frames(demo)
    assert counts["video"] == sum(1 for f in frames if f.is_video and not f.config)
    assert counts["audio"] == sum(1 for f in frames if f.is_audio and not f.config)


def rewrite(data: bytes) -> bytes:
    header = read_events(data)[0]
    assert isinstance(header, FlvHeader)
    frames = flv.read_frames(data)
    return flv.file_header(header.has_audio, header.has_video) + b"".join(flv.frame_to_tag(frame) for frame in frames)


@pytest.mark.interop
def test_demo_clip_round_trip_is_byte_exact(demo: bytes, tmp_path: Path) -> None:
    rewritten = rewrite(demo)
    # FFmpeg ends the file with an AVC end-of-sequence tag, which carries no frame:
    # everything before it comes back byte for byte (headers, timestamps, bodies).
    events = read_events(demo)
    last = events[-2]
    assert isinstance(last, FlvTag) and last.body[:2] == b"\x17\x02"
    assert rewritten == demo[: len(demo) - (11 + len(last.body) + 4)]

    ffmpeg = require_tool("ffmpeg")
    path = tmp_path / "rewritten.flv"
    path.write_bytes(rewritten)
    result = subprocess.run(
        [ffmpeg, "-v", "error", "-i", str(path), "-f", "null", "-"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0
    assert result.stdout == "" and result.stderr == ""


def test_frame_to_tag_is_built_once_and_shared(demo: bytes) -> None:
    frame = flv.read_frames(demo)[3]
    tag = flv.frame_to_tag(frame)
    assert flv.frame_to_tag(frame) is tag
    body = flv.frame_body(frame)
    assert flv.frame_body(frame) is body
    assert tag[11:-4] == body


# ---------------------------------------------------------------------------------------------
# Legacy codecs written by FFmpeg
# ---------------------------------------------------------------------------------------------

LEGACY_AUDIO = [
    (["-c:a", "libmp3lame", "-ar", "44100", "-ac", "2"], "mp3", 0x2F),
    (["-c:a", "libmp3lame", "-ar", "22050", "-ac", "1"], "mp3", 0x2A),
    (["-c:a", "libmp3lame", "-ar", "11025", "-ac", "1"], "mp3", 0x26),
    (["-c:a", "libmp3lame", "-ar", "48000", "-ac", "2"], "mp3", 0x2F),
    (["-c:a", "pcm_s16le", "-ar", "44100", "-ac", "2"], "pcm_le/44100/16/2", 0x3F),
    (["-c:a", "pcm_u8", "-ar", "22050", "-ac", "1"], "pcm/22050/8/1", 0x08),
    (["-c:a", "adpcm_swf", "-ar", "22050", "-ac", "2"], "adpcm/22050/16/2", 0x1B),
    (["-c:a", "nellymoser", "-ar", "44100", "-ac", "1"], "nellymoser/44100/16/1", 0x6E),
    (["-c:a", "nellymoser", "-ar", "16000", "-ac", "1"], "nellymoser_16k/5512/16/1", 0x42),
    (["-c:a", "nellymoser", "-ar", "8000", "-ac", "1"], "nellymoser_8k/5512/16/1", 0x52),
    (["-c:a", "pcm_alaw", "-ar", "8000", "-ac", "1"], "alaw/5512/16/1", 0x72),
    (["-c:a", "pcm_mulaw", "-ar", "8000", "-ac", "1"], "mulaw/5512/16/1", 0x82),
    (["-c:a", "libspeex", "-ar", "16000", "-ac", "1"], "speex/11025/16/1", 0xB6),
]


@pytest.mark.interop
@pytest.mark.parametrize(("args", "codec", "header_byte"), LEGACY_AUDIO)
def test_ffmpeg_legacy_audio_round_trips(tmp_path: Path, args: list[str], codec: str, header_byte: int) -> None:
    ffmpeg = require_tool("ffmpeg")
    path = tmp_path / "audio.flv"
    subprocess.run(
        [ffmpeg, "-v", "error", "-y", "-f", "lavfi", "-i",
         "sine=frequency=440:sample_rate=44100:duration=0.3", *args, "-f", "flv", str(path)],
        check=True,
    )  # fmt: skip
    data = path.read_bytes()
    tags = [e for e in read_events(data) if isinstance(e, FlvTag) and e.tag_type == flv.TAG_AUDIO]
    assert tags and all(tag.body[0] == header_byte for tag in tags)
    for tag in tags:
        frame = flv.parse_audio(tag.timestamp, tag.body)
        assert frame is not None and frame.codec == codec and frame.payload == tag.body[1:]
        assert flv.audio_body(frame) == tag.body
    assert rewrite(data) == data


@pytest.mark.interop
def test_ffmpeg_sorenson_h263_round_trips(tmp_path: Path) -> None:
    ffmpeg = require_tool("ffmpeg")
    path = tmp_path / "h263.flv"
    subprocess.run(
        [ffmpeg, "-v", "error", "-y", "-f", "lavfi", "-i",
         "testsrc2=size=160x120:rate=10:duration=1", "-c:v", "flv", "-g", "5",
         "-f", "flv", str(path)],
        check=True,
    )  # fmt: skip
    data = path.read_bytes()
    video = [f for f in flv.read_frames(data) if f.is_video]
    assert len(video) == 10 and {f.codec for f in video} == {"h263"}
    assert [f.keyframe for f in video] == [True, False, False, False, False] * 2
    assert rewrite(data) == data


# ---------------------------------------------------------------------------------------------
# Known-answer vectors (from the FLV and Enhanced RTMP specifications)
# ---------------------------------------------------------------------------------------------


def vframe(codec: str, payload: bytes = b"\x00\x00\x00\x01\x65", **kw: object) -> Frame:
    args: dict[str, object] = {"pts": 1000, "dts": 1000, "keyframe": True}
    args.update(kw)
    return Frame(FrameKind.VIDEO, codec, payload=payload, **args)  # type: ignore[arg-type]


def aframe(codec: str, payload: bytes = b"\x21\x10", **kw: object) -> Frame:
    args: dict[str, object] = {"pts": 1000, "dts": 1000}
    args.update(kw)
    return Frame(FrameKind.AUDIO, codec, payload=payload, **args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("frame", "body"),
    [
        # legacy AVC: frame type/codec id, AVCPacketType, SI24 composition time
        (vframe("h264", config=True), b"\x17\x00\x00\x00\x00" + b"\x00\x00\x00\x01\x65"),
        (vframe("h264", pts=1040), b"\x17\x01\x00\x00\x28" + b"\x00\x00\x00\x01\x65"),
        (vframe("h264", pts=990, keyframe=False), b"\x27\x01\xff\xff\xf6\x00\x00\x00\x01\x65"),
        # Enhanced HEVC: IsExHeader | frame type | packet type, FourCC, [SI24]
        (vframe("hevc", config=True, payload=b"rec"), b"\x90hvc1rec"),
        (vframe("hevc", pts=1033, payload=b"nal"), b"\x91hvc1\x00\x00\x21nal"),
        (vframe("hevc", keyframe=False, payload=b"nal"), b"\xa3hvc1nal"),  # CodedFramesX
        (vframe("av1", config=True, payload=b"av1C"), b"\x90av01av1C"),
        (vframe("av1", keyframe=False, payload=b"obu"), b"\xa1av01obu"),
        (vframe("vp9", payload=b"vp"), b"\x91vp09vp"),
        # Multitrack OneTrack: PacketType 6, then AvMultitrackType | PacketType, FourCC, track id
        (vframe("h264", track=2, pts=1001, payload=b"n"), b"\x96\x01avc1\x02\x00\x00\x01n"),
        (vframe("av1", track=1, config=True, payload=b"c"), b"\x96\x00av01\x01c"),
        (vframe("vp6", payload=b"\x00pic"), b"\x14\x00pic"),
        (vframe("h263", keyframe=False, payload=b"pic"), b"\x22pic"),
        (aframe("aac", config=True, payload=b"\x12\x10"), b"\xaf\x00\x12\x10"),
        (aframe("aac"), b"\xaf\x01\x21\x10"),
        (aframe("mp3", payload=b"\xff\xfb\x90\x64"), b"\x2f\xff\xfb\x90\x64"),  # MPEG-1 stereo
        (aframe("mp3", payload=b"\xff\xf3\x90\xc4"), b"\x2a\xff\xf3\x90\xc4"),  # MPEG-2 mono
        (aframe("mp3", payload=b"\xff\xe3\x88\xc4"), b"\xe2\xff\xe3\x88\xc4"),  # 8 kHz
        (aframe("pcm_le/44100/16/2", payload=b"pcm"), b"\x3fpcm"),
        (aframe("speex/11025/16/1", payload=b"spx"), b"\xb6spx"),
        # Enhanced audio: SoundFormat 9 | AudioPacketType, FourCC
        (aframe("opus", config=True, payload=b"OpusHead"), b"\x90OpusOpusHead"),
        (aframe("flac", payload=b"fr"), b"\x91fLaCfr"),
        (aframe("eac3", payload=b"fr"), b"\x91ec-3fr"),
        # audio Multitrack OneTrack: PacketType 5
        (aframe("aac", track=3, payload=b"raw"), b"\x95\x01mp4a\x03raw"),
    ],
)
def test_known_bodies(frame: Frame, body: bytes) -> None:
    assert flv.tag_body(frame) == body
    parsed = (flv.parse_video if frame.is_video else flv.parse_audio)(frame.dts, body)
    assert parsed is not None and fields(parsed) == fields(frame)


def test_legacy_hevc_option() -> None:
    frame = vframe("hevc", pts=1002, payload=b"nal")
    assert flv.video_body(frame, legacy_hevc=True) == b"\x1c\x01\x00\x00\x02nal"
    assert flv.frame_to_tag(frame, legacy_hevc=True)[11:-4] == b"\x1c\x01\x00\x00\x02nal"
    assert flv.frame_to_tag(frame)[11:-4] == b"\x91hvc1\x00\x00\x02nal"
    parsed = flv.parse_video(1000, b"\x1c\x01\x00\x00\x02nal")
    assert parsed is not None and fields(parsed) == fields(frame)


@pytest.mark.parametrize(
    "body",
    [
        b"\x17\x02\x00\x00\x00",  # AVC end of sequence
        b"\x17\x02",  # ... cut short
        b"\x17\x01\x00\x00\x00",  # no NAL units
        b"\x50\x00",  # video command frame
        b"\xd0\x01",  # Enhanced video command (frame type 5)
        b"\x92hvc1",  # SequenceEnd
        b"\x94hvc1\x02\x00\x09colorInfo\x03\x00\x00\x09",  # Metadata
        b"\x93av01",  # no payload
        b"",
    ],
)
def test_video_bodies_without_media(body: bytes) -> None:
    assert flv.parse_video(0, body) is None


@pytest.mark.parametrize(
    "body",
    [b"\xaf\x01", b"\x2f", b"\x92Opus", b"\x94Opus\x01\x02\x00\x00\x00\x03", b""],
)
def test_audio_bodies_without_media(body: bytes) -> None:
    assert flv.parse_audio(0, body) is None


def test_mpeg2ts_sequence_start_is_config() -> None:
    frame = flv.parse_video(5, b"\x95av01\x80\x04desc")
    assert frame is not None and (frame.codec, frame.config) == ("av1", True)
    assert frame.payload == b"\x80\x04desc"


def test_mod_ex_is_skipped() -> None:
    # ModEx (7): size-1, data, ModExType | next PacketType; here TimestampOffsetNano of 3 bytes.
    body = b"\x97\x02\x00\x01\x00\x01hvc1\x00\x00\x05nal"
    frame = flv.parse_video(100, body)
    expected = vframe("hevc", pts=105, dts=100, payload=b"nal")
    assert frame is not None and fields(frame) == fields(expected)
    # the 16-bit size escape: UI8 255 means "UI16 + 1 follows"
    body = b"\x97\xff\x01\x00" + bytes(257) + b"\x03av01obu"
    frame = flv.parse_video(100, body)
    assert frame is not None and (frame.codec, frame.payload) == ("av1", b"obu")
    audio = flv.parse_audio(7, b"\x97\x00\x00\x01Opusfr")
    assert audio is not None and (audio.codec, audio.payload) == ("opus", b"fr")


def test_multitrack_many_tracks() -> None:
    # ManyTracks (1), CodedFramesX (3), one FourCC, then track id + UI24 size + data per track
    body = b"\x96\x13hvc1" + b"\x00\x00\x00\x02ab" + b"\x01\x00\x00\x03cde"
    frames = flv.parse_video_tracks(40, body)
    assert [(f.codec, f.track, f.payload, f.keyframe) for f in frames] == [
        ("hevc", 0, b"ab", True),
        ("hevc", 1, b"cde", True),
    ]
    with pytest.raises(FlvUnsupported):
        flv.parse_video(40, body)
    # ManyTracksManyCodecs (2): a FourCC per track
    body = b"\x95\x21" + b"Opus\x00\x00\x00\x01x" + b"mp4a\x01\x00\x00\x02yz"
    frames = flv.parse_audio_tracks(40, body)
    assert [(f.codec, f.track, f.payload) for f in frames] == [("opus", 0, b"x"), ("aac", 1, b"yz")]
    with pytest.raises(FlvUnsupported):
        flv.parse_audio(40, body)
    # a track size that overruns the body
    with pytest.raises(FlvError):
        flv.parse_video_tracks(0, b"\x96\x13hvc1\x00\x00\x00\x09ab")


@pytest.mark.parametrize(
    ("parse", "body", "error"),
    [
        (flv.parse_video, b"\x18\x00", FlvUnsupported),  # codec id 8: reserved
        (flv.parse_video, b"\x91xxxx\x00\x00\x00nal", FlvUnsupported),  # unknown FourCC
        (flv.parse_video, b"\x98hvc1", FlvUnsupported),  # packet type 8: reserved
        (flv.parse_video, b"\x17\x05\x00\x00\x00", FlvError),  # unknown AVCPacketType
        (flv.parse_video, b"\x17\x01\x00", FlvError),  # truncated
        (flv.parse_video, b"\x91hvc1\x00", FlvError),  # truncated composition time
        (flv.parse_audio, b"\xc0", FlvUnsupported),  # sound format 12: reserved
        (flv.parse_audio, b"\xaf\x02x", FlvError),  # unknown AACPacketType
        (flv.parse_audio, b"\x91Vorbxx", FlvUnsupported),  # unknown FourCC
        (flv.parse_audio, b"\x91Opu", FlvError),  # truncated FourCC
        (flv.parse_data, b"\x00\x00", FlvError),  # no string name
        (flv.parse_data, b"\x02\x00\x09onMeta", FlvError),  # truncated name
    ],
)
def test_malformed_bodies(parse: object, body: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse(0, body)  # type: ignore[operator]


def test_parse_data_strips_set_data_frame() -> None:
    on_metadata = b"\x02\x00\x0aonMetaData\x08\x00\x00\x00\x00\x00\x00\x09"
    for body in (on_metadata, b"\x02\x00\x0d@setDataFrame" + on_metadata):
        frame = flv.parse_data(1234, body)
        assert frame is not None
        assert fields(frame) == (FrameKind.DATA, "amf0", 1234, 1234, on_metadata, False, True, 0)
    metadata = flv.parse_data(0, on_metadata)
    assert metadata is not None
    assert flv.data_body(metadata) == on_metadata
    wrapped = flv.data_body(metadata, set_data_frame=True)
    assert wrapped == b"\x02\x00\x0d@setDataFrame" + on_metadata
    cue = b"\x02\x00\x0aonCuePoint\x03\x00\x00\x09"
    frame = flv.parse_data(0, cue)
    assert frame is not None and not frame.config and frame.payload == cue
    assert flv.data_body(frame, set_data_frame=True) == cue
    assert flv.parse_data(0, b"") is None
    assert flv.parse_data(0, b"\x02\x00\x0d@setDataFrame") is None


@pytest.mark.parametrize(
    "frame",
    [
        vframe("mpeg2video"),
        vframe("h264", pts=1000 + 0x800000),
        vframe("h264", pts=1000 - 0x800001),
        vframe("hevc", track=256),
        vframe("h263", config=True),
        vframe("vp6", track=1),
        aframe("pcm"),
        aframe("pcm_le/48000/16/2"),
        aframe("alaw/5512/16/1", track=1),
        aframe("vorbis"),
        Frame(FrameKind.DATA, "amf3", 0, 0, b"x"),
    ],
)
def test_frames_flv_cannot_carry(frame: Frame) -> None:
    with pytest.raises(LocalProtocolError):
        flv.tag_body(frame)


def test_body_functions_check_the_kind() -> None:
    with pytest.raises(LocalProtocolError):
        flv.video_body(aframe("aac"))
    with pytest.raises(LocalProtocolError):
        flv.audio_body(vframe("h264"))
    with pytest.raises(LocalProtocolError):
        flv.data_body(vframe("h264"))


def test_legacy_audio_codec() -> None:
    assert flv.legacy_audio_codec("pcm_le", 44100, 16, 2) == "pcm_le/44100/16/2"
    with pytest.raises(LocalProtocolError):
        flv.legacy_audio_codec("pcm_le", 48000, 16, 2)
    with pytest.raises(LocalProtocolError):
        flv.legacy_audio_codec("mp3", 44100, 16, 2)


# ---------------------------------------------------------------------------------------------
# The FLV stream
# ---------------------------------------------------------------------------------------------


def test_file_header_and_encode_tag() -> None:
    assert flv.file_header(True, True) == b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00"
    assert flv.file_header(False, True)[4] == 0x01
    assert flv.file_header(True, False)[4] == 0x04
    assert flv.encode_tag(9, 0x12345678, b"ab") == (b"\x09\x00\x00\x02\x34\x56\x78\x12\x00\x00\x00ab\x00\x00\x00\x0d")
    assert flv.encode_tag(8, -5, b"")[4:8] == b"\x00\x00\x00\x00"
    assert flv.encode_tag(8, 2**32 + 7, b"")[4:8] == b"\x00\x00\x07\x00"
    with pytest.raises(LocalProtocolError):
        flv.encode_tag(9, 0, bytes(0x1000000))
    with pytest.raises(LocalProtocolError):
        flv.encode_tag(32, 0, b"")


def test_reader_events_and_leniency() -> None:
    stream = (
        b"FLV\x01\x05\x00\x00\x00\x0c" + b"pad" + b"\x00\x00\x00\x00"  # DataOffset 12
        + flv.encode_tag(9, 40, b"\x17\x00\x00\x00\x00rec")[:-4] + b"\xde\xad\xbe\xef"  # wrong size
        + b"\xc8" + flv.encode_tag(8, 2**31, b"\xaf\x01x")[1:]  # reserved bits set
        + flv.encode_tag(7, 1, b"what")  # unknown tag type
    )  # fmt: skip
    assert read_events(stream) == [
        FlvHeader(True, True, 1),
        FlvTag(9, 40, b"\x17\x00\x00\x00\x00rec"),
        FlvTag(8, 2**31, b"\xaf\x01x"),
        FlvTag(7, 1, b"what"),
        FlvEnd(),
    ]
    # the last PreviousTagSize may be missing
    assert read_events(stream[:-4])[-1] == FlvEnd()
    assert read_events(flv.file_header(True, True)) == [FlvHeader(True, True, 1), FlvEnd()]


def test_reader_errors() -> None:
    header = flv.file_header(True, True)
    reader = FlvReader()
    reader.receive_data(b"FLX")
    with pytest.raises(FlvError):
        reader.next_event()
    with pytest.raises(LocalProtocolError):  # unusable after an error
        reader.next_event()

    with pytest.raises(FlvError):  # DataOffset under 9
        read_events(b"FLV\x01\x05\x00\x00\x00\x08\x00\x00\x00\x00")
    with pytest.raises(FlvError):  # filtered (encrypted) tag
        read_events(header + b"\x29" + flv.encode_tag(9, 0, b"\x17")[1:])
    tag = flv.encode_tag(9, 0, b"\x17\x01\x00\x00\x00nal")
    for cut in (1, 5, 11, 15, len(tag) - 3):
        with pytest.raises(FlvError):  # the stream ends inside a tag
            read_events(header + tag[:cut])
    with pytest.raises(FlvError):
        read_events(b"FLV\x01")

    # Too large: refused as soon as the tag header arrives, before any body byte.
    reader = FlvReader(max_tag_body=100)
    reader.receive_data(header + flv.encode_tag(9, 0, bytes(101))[:11])
    assert isinstance(reader.next_event(), FlvHeader)
    with pytest.raises(MessageTooLarge) as info:
        reader.next_event()
    assert (info.value.size, info.value.limit) == (101, 100)
    assert read_events(header + flv.encode_tag(9, 0, bytes(100)), max_tag_body=100)[1] == FlvTag(9, 0, bytes(100))

    reader = FlvReader()
    reader.receive_data(b"")
    with pytest.raises(LocalProtocolError):
        reader.receive_data(b"FLV")


# ---------------------------------------------------------------------------------------------
# Hypothesis
# ---------------------------------------------------------------------------------------------

payloads = st.binary(min_size=1, max_size=64)
dts_values = st.integers(min_value=-(2**40), max_value=2**40)
cts_values = st.one_of(st.integers(min_value=-0x800000, max_value=0x7FFFFF), st.integers(-100, 300))
tracks = st.one_of(st.just(0), st.integers(min_value=0, max_value=255))
LEGACY_AUDIO_CODECS = [
    f"{name}/{rate}/{bits}/{channels}"
    for name in ("pcm", "adpcm", "pcm_le", "nellymoser_16k", "nellymoser_8k", "nellymoser",
                 "alaw", "mulaw", "speex")
    for rate in (5512, 11025, 22050, 44100)
    for bits in (8, 16)
    for channels in (1, 2)
]  # fmt: skip


@st.composite
def video_frames(draw: st.DrawFn) -> Frame:
    codec = draw(st.sampled_from(
        ["h264", "hevc", "vvc", "av1", "vp9", "vp8", "h263", "screen", "vp6", "vp6a", "screen2"]
    ))  # fmt: skip
    dts = draw(dts_values)
    keyframe = draw(st.booleans())
    if codec in ("h263", "screen", "vp6", "vp6a", "screen2"):
        return Frame(FrameKind.VIDEO, codec, dts, dts, draw(payloads), keyframe)
    config = draw(st.booleans())
    track = draw(tracks)
    cts = 0
    # Config frames have none, AV1/VP8/VP9 never do.
    if codec in ("h264", "hevc", "vvc") and not config:
        cts = draw(cts_values)
    return Frame(FrameKind.VIDEO, codec, dts + cts, dts, draw(payloads), keyframe, config, track)


@st.composite
def audio_frames(draw: st.DrawFn) -> Frame:
    codec = draw(st.sampled_from(["aac", "mp3", "opus", "flac", "ac3", "eac3", "legacy"]))
    dts = draw(dts_values)
    if codec == "legacy":
        codec = draw(st.sampled_from(LEGACY_AUDIO_CODECS))
        return Frame(FrameKind.AUDIO, codec, dts, dts, draw(payloads))
    payload = draw(st.one_of(payloads, st.binary(min_size=4).map(lambda b: b"\xff\xfb" + b)))
    return Frame(FrameKind.AUDIO, codec, dts, dts, payload, False, draw(st.booleans()), draw(tracks))


@st.composite
def data_frames(draw: st.DrawFn) -> Frame:
    name = draw(st.sampled_from(["onMetaData", "onCuePoint", "onTextData", "x"])).encode()
    body = b"\x02" + len(name).to_bytes(2, "big") + name + draw(st.binary(max_size=32))
    dts = draw(dts_values)
    return Frame(FrameKind.DATA, "amf0", dts, dts, body, False, name == b"onMetaData")


any_frames = st.one_of(video_frames(), audio_frames(), data_frames())
PARSE = {
    FrameKind.VIDEO: flv.parse_video,
    FrameKind.AUDIO: flv.parse_audio,
    FrameKind.DATA: flv.parse_data,
}


@settings(max_examples=600, deadline=None)
@given(frame=any_frames, legacy_hevc=st.booleans())
def test_frame_body_round_trip(frame: Frame, legacy_hevc: bool) -> None:
    body = flv.tag_body(frame, legacy_hevc=legacy_hevc)
    parsed = PARSE[frame.kind](frame.dts, body)
    assert parsed is not None
    assert fields(parsed) == fields(frame)
    if frame.is_metadata:
        wrapped = flv.data_body(frame, set_data_frame=True)
        reparsed = flv.parse_data(frame.dts, wrapped)
        assert reparsed is not None and fields(reparsed) == fields(frame)


@settings(max_examples=150, deadline=None)
@given(
    frames=st.lists(any_frames, max_size=12),
    has=st.tuples(st.booleans(), st.booleans()),
    data=st.data(),
)
def test_stream_round_trip_under_any_split(frames: list[Frame], has: tuple[bool, bool], data: st.DataObject) -> None:
    stream = flv.file_header(*has) + b"".join(flv.frame_to_tag(f) for f in frames)
    whole = read_events(stream)
    assert whole[0] == FlvHeader(*has, 1)
    assert whole[-1] == FlvEnd()
    tags = whole[1:-1]
    assert len(tags) == len(frames)
    for tag, frame in zip(tags, frames):
        assert isinstance(tag, FlvTag)
        assert tag.timestamp == (frame.dts & 0xFFFFFFFF if frame.dts > 0 else 0)
        assert tag.body == flv.tag_body(frame)
        parsed = flv.tag_to_frame(tag)
        assert parsed is not None
        assert fields(parsed)[4:] == fields(frame)[4:]
        assert parsed.composition_time == frame.composition_time
    chunks = data.draw(st.lists(st.integers(min_value=0, max_value=40), max_size=40))
    assert read_events(stream, chunks=chunks) == whole
    assert read_events(stream, chunks=[1] * len(stream)) == whole


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.one_of(
        st.binary(max_size=48),
        # bias towards the interesting headers
        st.tuples(
            st.sampled_from(
                [0x17, 0x27, 0x1C, 0x90, 0x91, 0x93, 0x95, 0x96, 0x97, 0xD1, 0x12, 0xAF, 0x2F, 0xE2, 0x3F, 0x92]
            ),
            st.sampled_from([b"", b"\x00", b"\x01", b"\x13", b"\x03", b"\x21", b"\x02\x00", b"\x00\x00\x00"]),
            st.sampled_from([b"", b"hvc1", b"avc1", b"av01", b"Opus", b"mp4a", b".mp3", b"xxxx"]),
            st.binary(max_size=24),
        ).map(lambda t: bytes((t[0],)) + t[1] + t[2] + t[3]),
    ),
    timestamp=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_arbitrary_bodies_raise_only_our_errors(body: bytes, timestamp: int) -> None:
    for parse_all, kind in (
        (flv.parse_video_tracks, FrameKind.VIDEO),
        (flv.parse_audio_tracks, FrameKind.AUDIO),
    ):
        try:
            frames = parse_all(timestamp, body)
        except FlvError:
            continue
        for frame in frames:
            assert frame.kind is kind and frame.payload
            # whatever we read, we can write back, and it reads the same
            again = parse_all(timestamp, flv.tag_body(frame))
            assert [fields(f) for f in again] == [fields(frame)]
    for parse_one in (flv.parse_video, flv.parse_audio, flv.parse_data):
        try:
            parse_one(timestamp, body)
        except FlvError:
            pass


@settings(max_examples=800, deadline=None)
@given(
    prefix=st.sampled_from([b"", b"FLV\x01\x05\x00\x00\x00\x09", flv.file_header(True, True)]),
    junk=st.binary(max_size=200),
    data=st.data(),
)
def test_arbitrary_streams_raise_only_our_errors(prefix: bytes, junk: bytes, data: st.DataObject) -> None:
    stream = prefix + junk
    chunks = data.draw(st.lists(st.integers(min_value=0, max_value=30), max_size=10))
    try:
        whole = read_events(stream, max_tag_body=64)
    except RemoteProtocolError as exc:
        with pytest.raises(type(exc)):
            read_events(stream, chunks=chunks, max_tag_body=64)
        return
    assert read_events(stream, chunks=chunks, max_tag_body=64) == whole
    for event in whole:
        if isinstance(event, FlvTag):
            try:
                flv.tag_to_frames(event)
            except FlvError:
                pass


# ---------------------------------------------------------------------------------------------
# Timestamps
# ---------------------------------------------------------------------------------------------


def test_timestamp_unwrapper_wraps_at_2_32() -> None:
    unwrapper = TimestampUnwrapper()
    assert unwrapper.last is None
    assert unwrapper.unwrap(2**32 - 20) == 2**32 - 20
    assert unwrapper.unwrap(2**32 - 1) == 2**32 - 1
    assert unwrapper.unwrap(5) == 2**32 + 5  # wrapped
    assert unwrapper.unwrap(2**32 - 3) == 2**32 - 3  # jitter back across the wrap
    assert unwrapper.unwrap(40) == 2**32 + 40
    assert unwrapper.unwrap(2**31) == 2**32 + 2**31
    assert unwrapper.unwrap(2**32 - 100) == 2**33 - 100
    assert unwrapper.unwrap(10) == 2**33 + 10  # second wrap
    assert unwrapper.last == 2**33 + 10
    unwrapper.reset()
    assert unwrapper.unwrap(1000) == 1000
    assert unwrapper.unwrap(990) == 990  # small backwards jitter stays backwards


@settings(max_examples=300, deadline=None)
@given(
    start=st.integers(min_value=0, max_value=2**32 - 1),
    steps=st.lists(st.one_of(st.integers(-2000, 2000), st.integers(0, 2**31 - 1)), max_size=50),
)
def test_timestamp_unwrapper_follows_the_timeline(start: int, steps: list[int]) -> None:
    unwrapper = TimestampUnwrapper()
    value = start
    assert unwrapper.unwrap(value & 0xFFFFFFFF) == value
    for step in steps:
        value += step
        assert unwrapper.unwrap(value & 0xFFFFFFFF) == value


# ----------------------------- ingest without copies: an RTMP body becomes the frame's FLV body


def test_a_received_body_becomes_the_frames_flv_body() -> None:
    avc = b"\x17\x01\x00\x00\x21" + bytes(range(200))
    aac = b"\xaf\x01" + bytes(50)
    (video,) = flv.parse_video_tracks(1000, avc)
    (sound,) = flv.parse_audio_tracks(1000, aac)
    assert flv.frame_body(video) is avc and flv.frame_body(sound) is aac
    assert video.pts == 1033 and video.payload == avc[5:]
    # Bodies FLV would not write back as they are get their own (the header is normalised).
    disposable = b"\x37\x01\x00\x00\x00" + bytes(10)
    (frame,) = flv.parse_video_tracks(0, disposable)
    assert flv.frame_body(frame) is not disposable and flv.frame_body(frame)[0] == 0x27


@given(
    header=st.sampled_from([0x17, 0x27, 0x37, 0x47]),
    packet_type=st.sampled_from([0, 1]),
    cts=st.binary(min_size=3, max_size=3),
    payload=st.binary(min_size=1, max_size=64),
)
def test_a_preset_video_body_is_what_flv_would_write(header: int, packet_type: int, cts: bytes, payload: bytes) -> None:
    body = bytes((header, packet_type)) + cts + payload
    frames = flv.parse_video_tracks(5, body)
    for frame in frames:
        assert flv.frame_body(frame) == flv.tag_body(frame)  # what is sent is what FLV would write
        if flv.frame_body(frame) is body:
            assert flv.tag_body(frame) == body


@given(header=st.integers(0xA0, 0xAF), packet_type=st.sampled_from([0, 1]), payload=st.binary(min_size=1, max_size=64))
def test_a_preset_audio_body_is_what_flv_would_write(header: int, packet_type: int, payload: bytes) -> None:
    body = bytes((header, packet_type)) + payload
    for frame in flv.parse_audio_tracks(5, body):
        assert flv.frame_body(frame) == flv.tag_body(frame)
        assert (flv.frame_body(frame) is body) == (header == 0xAF)
