"""Tests of the arcly.frames.v1 message codec and sequence reader (sans-IO, no server).

Round trips of every message (hypothesis), the fixed binary header, the demo clip through
encoder and reader unchanged, each rule of the sequence with its close code, and arbitrary
bytes and text raising nothing but ``FramesProtocolError``.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.media import codec_strings
from arcly_trio.protocols import frames as fp
from arcly_trio.protocols.frames import CloseCode, FramesProtocolError, FramesReader
from arcly_trio.protocols.frames.messages import HEADER, HEADER_SIZE

AVCC = bytes.fromhex("014d401effe10018674d401eeca05017fcb80880000003008000001e078b16cb01000468ebecb2")
ASC = bytes.fromhex("120856e500")

timestamps_ms = st.integers(-(2**40), 2**40)


@st.composite
def media_frames(draw: st.DrawFn) -> Frame:
    kind = draw(st.sampled_from([FrameKind.VIDEO, FrameKind.AUDIO]))
    dts = draw(timestamps_ms)
    pts = dts + (draw(st.integers(-1000, 1000)) if kind is FrameKind.VIDEO else 0)
    return Frame(
        kind,
        "h264" if kind is FrameKind.VIDEO else "aac",
        pts,
        dts,
        draw(st.binary(min_size=1, max_size=200)),
        kind is FrameKind.VIDEO and draw(st.booleans()),
        draw(st.booleans()),
        draw(st.integers(0, 7)),
    )


@given(media_frames())
def test_binary_frame_messages_round_trip(frame: Frame) -> None:
    data = fp.encode_frame(frame)
    assert len(data) == HEADER_SIZE + len(frame.payload)
    message = fp.decode_frame(data)
    assert (message.kind, message.track, message.config) == (frame.kind, frame.track, frame.config)
    assert (message.pts_us, message.dts_us) == (frame.pts * 1000, frame.dts * 1000)
    assert message.key == (frame.keyframe or frame.kind is FrameKind.AUDIO)
    assert bytes(message.payload) == frame.payload


def test_the_header_is_20_fixed_bytes() -> None:
    frame = Frame(FrameKind.VIDEO, "h264", 1067, 1000, b"\x00\x00\x00\x01\x65", keyframe=True, track=2)
    assert fp.encode_frame(frame)[:20].hex() == "0101010200000000001047f800000000000f4240"


def test_a_frame_message_is_built_once_and_shared() -> None:
    frame = Frame(FrameKind.AUDIO, "aac", 0, 0, b"x")
    assert fp.frame_message(frame) is fp.frame_message(frame)
    config = Frame(FrameKind.VIDEO, "h264", 0, 0, AVCC, config=True)
    assert fp.config_message(config) is fp.config_message(config)


configs = st.builds(
    fp.Config,
    kind=st.just(FrameKind.VIDEO),
    track=st.integers(0, 7),
    format=st.just("h264"),
    codec=st.sampled_from(["avc1.42e01f", "avc1.640028"]),
    record=st.integers(1, 65536),
    description=st.just(True),
    coded_width=st.integers(1, 65536),
    coded_height=st.integers(1, 65536),
) | st.builds(
    fp.Config,
    kind=st.just(FrameKind.AUDIO),
    track=st.integers(0, 7),
    format=st.sampled_from(["opus"]),
    codec=st.just("opus"),
    record=st.integers(0, 1000),
    description=st.booleans(),
    sample_rate=st.integers(1, 768000),
    channels=st.integers(1, 255),
).filter(lambda c: c.record or not c.description)
counters = st.integers(0, 2**53)
text_messages = st.one_of(
    configs,
    st.builds(fp.Stats, counters, counters, counters, counters),
    st.builds(fp.End, st.text(max_size=64), st.text(max_size=300), counters, counters),
    st.builds(fp.Start, st.sampled_from(["play", "publish"]), st.text(max_size=100)),
)


@given(text_messages)
def test_text_messages_round_trip(message: fp.messages.TextMessage) -> None:
    assert fp.decode_text(fp.encode_text(message)) == message


def feed(reader: FramesReader, messages: list[str | bytes]) -> list[object]:
    out: list[object] = []
    for message in messages:
        out.extend(reader.receive_text(message) if isinstance(message, str) else [reader.receive_binary(message)])
    return out


def wire(frames: list[Frame]) -> list[str | bytes]:
    """What the server sends for ``frames`` (config text and record, media)."""
    out: list[str | bytes] = []
    for frame in frames:
        if frame.kind is FrameKind.DATA:
            continue
        if frame.config:
            text = fp.config_message(frame)
            assert text is not None
            out.append(text)
        out.append(fp.frame_message(frame))
    return out


def test_the_demo_clip_goes_through_encoder_and_reader_unchanged(demo_frames: list[Frame]) -> None:
    media = [f for f in demo_frames if f.kind is not FrameKind.DATA]
    events = feed(FramesReader("server"), wire(media))
    frames = [e for e in events if isinstance(e, Frame)]
    assert [(f.kind, f.codec, f.pts, f.dts, f.payload, f.keyframe, f.config) for f in frames] == [
        (f.kind, f.codec, f.pts, f.dts, f.payload, f.keyframe, f.config) for f in media
    ]
    config = json.loads(fp.config_message(media[0]))  # type: ignore[arg-type]
    assert config == {
        "type": "config",
        "kind": "video",
        "track": 0,
        "format": "h264",
        "record": 39,
        "description": True,
        "decoderConfig": {"codec": "avc1.4d401e", "codedWidth": 640, "codedHeight": 360},
    }


def video_config(record: bytes = AVCC, **extra: object) -> str:
    doc = {
        "type": "config",
        "kind": "video",
        "track": 0,
        "decoderConfig": {"codec": "avc1.4d401e", "codedWidth": 640, "codedHeight": 360},
        "record": len(record),
        "description": True,
        **extra,
    }
    return json.dumps(doc)


def binary(
    kind: int = 1, flags: int = 1, track: int = 0, pts: int = 0, dts: int = 0, payload: bytes = b"\x00\x00\x00\x01\x65"
) -> bytes:
    return HEADER.pack(1, kind, flags, track, pts, dts) + payload


def record(data: bytes = AVCC, kind: int = 1) -> bytes:
    return binary(kind, 2, payload=data)


GOOD = [video_config(), record(), binary(flags=1), binary(flags=0, pts=40_000, dts=33_000)]


def test_a_well_behaved_publisher_is_accepted() -> None:
    events = feed(FramesReader("publisher"), GOOD)
    frames = [e for e in events if isinstance(e, Frame)]
    assert [(f.config, f.keyframe, f.pts, f.dts) for f in frames] == [
        (True, False, 0, 0),
        (False, True, 0, 0),
        (False, False, 40, 33),
    ]
    assert frames[0].payload == AVCC


def test_vp9_av1_and_opus_configs_without_a_record_get_one() -> None:
    reader = FramesReader("publisher")
    events = feed(
        reader,
        [
            json.dumps({"type": "config", "kind": "video", "decoderConfig": {"codec": "vp09.00.10.08"}}),
            json.dumps(
                {
                    "type": "config",
                    "kind": "audio",
                    "decoderConfig": {"codec": "opus", "sampleRate": 48000, "numberOfChannels": 1},
                }
            ),
        ],
    )
    frames = [e for e in events if isinstance(e, Frame)]
    assert [f.codec for f in frames] == ["vp9", "opus"] and all(f.config for f in frames)
    assert codec_strings.vp9_codec_string(frames[0].payload) == "vp09.00.10.08"
    assert codec_strings.parse_opus_head(frames[1].payload).channels == 1


BAD: list[tuple[str, list[str | bytes], CloseCode, str]] = [
    ("truncated header", [video_config(), record(), b"\x01\x01\x01"], CloseCode.MALFORMED, "shorter than"),
    ("media before config", [binary()], CloseCode.ORDER, "before its config"),
    ("garbage text", ["{nope"], CloseCode.MALFORMED, "not JSON"),
    ("json not an object", ["[1, 2]"], CloseCode.MALFORMED, "JSON object"),
    ("deep json", ["[" * 5000 + "]" * 5000], CloseCode.MALFORMED, "not JSON"),
    ("unknown type", ['{"type": "hello"}'], CloseCode.MALFORMED, "unknown message type"),
    ("a publisher's stats", ['{"type": "stats"}'], CloseCode.MALFORMED, "may not send"),
    ("oversized text", ['{"type": "end", "message": "' + "x" * 20000 + '"}'], CloseCode.TOO_BIG, "over the limit"),
    (
        "unknown codec",
        [video_config().replace("avc1.4d401e", "vp08.00.10.08")],
        CloseCode.UNSUPPORTED,
        "unsupported codec",
    ),
    (
        "audio codec on video",
        [video_config().replace("avc1.4d401e", "opus")],
        CloseCode.UNSUPPORTED,
        "not a video codec",
    ),
    ("h264 without its avcC", [video_config(b"", description=False)], CloseCode.UNSUPPORTED, "needs its config record"),
    ("bad avcC", [video_config(b"\x02" * 10), record(b"\x02" * 10)], CloseCode.UNSUPPORTED, "bad h264 config record"),
    ("record of another size", [video_config(), record(AVCC + b"x")], CloseCode.MALFORMED, "were announced"),
    ("record missing", [video_config(), binary()], CloseCode.ORDER, "announced a 39-byte record"),
    ("unannounced record", [record()], CloseCode.ORDER, "without a config message"),
    ("first frame not a key", [video_config(), record(), binary(flags=0)], CloseCode.ORDER, "not a keyframe"),
    ("timestamps going back", GOOD + [binary(flags=0, pts=20_000, dts=20_000)], CloseCode.ORDER, "went back"),
    ("reserved flags", [video_config(), record(), binary(flags=0x81)], CloseCode.MALFORMED, "reserved frame flags"),
    ("unknown kind", [binary(kind=3)], CloseCode.MALFORMED, "unknown frame kind"),
    ("track too high", [binary(track=200)], CloseCode.MALFORMED, "track id 200"),
    ("huge timestamp", [binary(pts=2**62)], CloseCode.MALFORMED, "out of range"),
    ("empty payload", [video_config(), record(), binary(payload=b"")], CloseCode.MALFORMED, "empty payload"),
    ("message after end", ['{"type": "end"}', binary()], CloseCode.ORDER, "after 'end'"),
    ("bool as a number", [video_config(track=True)], CloseCode.MALFORMED, "'track' must be an integer"),
    ("NaN", ['{"type": "stats", "frames": NaN}'], CloseCode.MALFORMED, "not JSON"),
]


@pytest.mark.parametrize(("name", "messages", "code", "text"), BAD, ids=[b[0] for b in BAD])
def test_each_broken_rule_has_its_close_code_and_a_clear_reason(
    name: str, messages: list[str | bytes], code: CloseCode, text: str
) -> None:
    with pytest.raises(FramesProtocolError, match=text) as caught:
        feed(FramesReader("publisher"), messages)
    assert caught.value.code == code
    assert len(fp.messages.close_reason(str(caught.value)).encode()) <= 123


def test_oversized_binary_messages_are_refused() -> None:
    limits = fp.Limits(max_frame=1000)
    with pytest.raises(FramesProtocolError, match="over the limit") as caught:
        FramesReader("publisher", limits).receive_binary(binary(payload=bytes(1000)))
    assert caught.value.code == CloseCode.TOO_BIG


@given(st.binary(max_size=64))
def test_arbitrary_binary_messages_raise_only_protocol_errors(data: bytes) -> None:
    reader = FramesReader("publisher")
    for message in [video_config(), record()]:
        feed(reader, [message])
    try:
        reader.receive_binary(data)
    except FramesProtocolError:
        pass


_headers = st.builds(
    lambda fields, payload: HEADER.pack(*fields) + payload,
    st.tuples(
        st.integers(0, 3),
        st.integers(0, 3),
        st.integers(0, 7),
        st.integers(0, 9),
        st.integers(-(2**54), 2**54),
        st.integers(-(2**54), 2**54),
    ),
    st.binary(max_size=8),
)


@given(st.one_of(st.binary(max_size=64), _headers))
def test_the_header_fast_path_decodes_as_decode_frame(data: bytes) -> None:
    """``decode_frame_header`` (the reader's per-frame path) gives ``decode_frame``'s fields or
    its very error, and the reader makes the same frame of ``bytes``, ``bytearray`` and
    ``memoryview`` messages."""
    limits = fp.Limits(max_track=8)
    try:
        message = fp.decode_frame(data, limits)
    except FramesProtocolError as exc:
        with pytest.raises(FramesProtocolError) as caught:
            fp.messages.decode_frame_header(data, limits)
        assert (str(caught.value), caught.value.code) == (str(exc), exc.code)
        return
    header = fp.messages.decode_frame_header(data, limits)
    assert header == (message.kind, message.track, message.key, message.config, message.pts_us, message.dts_us)
    outcomes = []
    for form in (data, bytearray(data), memoryview(data)):
        reader = FramesReader("publisher", limits)
        feed(reader, [video_config(), record()])
        try:
            frame = reader.receive_binary(form)
        except FramesProtocolError as exc:
            outcomes.append((str(exc), exc.code))
        else:
            assert type(frame.payload) is bytes
            outcomes.append(
                (frame.kind, frame.pts, frame.dts, frame.payload, frame.keyframe, frame.config, frame.track)
            )
    assert outcomes[0] == outcomes[1] == outcomes[2]


@given(
    st.one_of(
        st.text(max_size=200),
        st.binary(max_size=200),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
            lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
            max_leaves=12,
        ).map(json.dumps),
        st.dictionaries(
            st.sampled_from(
                [
                    "type",
                    "kind",
                    "track",
                    "decoderConfig",
                    "record",
                    "description",
                    "reason",
                    "frames",
                    "role",
                    "stream",
                ]
            ),
            st.none()
            | st.integers()
            | st.text(max_size=12)
            | st.sampled_from(["config", "end", "stats", "start", "video", "audio"])
            | st.fixed_dictionaries(
                {"codec": st.sampled_from(["opus", "vp09.00.10.08", "avc1.42e01f", "x"])},
                optional={"sampleRate": st.integers(-5, 10**6), "numberOfChannels": st.integers(-1, 300)},
            ),
            max_size=6,
        ).map(json.dumps),
    )
)
def test_arbitrary_text_raises_only_protocol_errors(text: str | bytes) -> None:
    for peer in ("publisher", "server"):
        try:
            FramesReader(peer).receive_text(text)  # type: ignore[arg-type]
        except FramesProtocolError:
            pass


@given(st.lists(st.sampled_from(GOOD + [b[1][-1] for b in BAD]), max_size=8))
def test_arbitrary_sequences_of_messages_raise_only_protocol_errors(messages: list[str | bytes]) -> None:
    try:
        feed(FramesReader("publisher"), messages)
    except FramesProtocolError:
        pass


def test_the_protocol_core_imports_nothing_from_trio() -> None:
    folder = Path(fp.__file__).parent
    for path in [*folder.glob("*.py"), Path(fp.messages.__file__).parent.parent.parent / "media" / "codec_strings.py"]:
        tree = ast.parse(path.read_text())
        names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        names |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert not any(name == "trio" or name.startswith(("trio.", "trio_websocket")) for name in names), path
