"""``message_frames``: received RTMP audio, video and data messages become frames (sans-IO).

Whatever the bytes, it returns frames or raises ``RemoteProtocolError`` (``FlvUnsupported`` for
a well-formed message the library does not handle): nothing else, so a connection can always
end a garbled peer cleanly. Both the RTMP server (publishers) and client (players) ingest so.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arcly_trio.core.errors import RemoteProtocolError
from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.media import amf0, flv
from arcly_trio.protocols.rtmp import DataMessage, MediaMessage
from arcly_trio.protocols.rtmp.media import frame_chunks, message_frames
from arcly_trio.testing import frames as fb


def media(frame: Frame) -> MediaMessage:
    return MediaMessage(1, 9 if frame.kind is FrameKind.VIDEO else 8, frame.dts, flv.frame_body(frame))


def test_a_media_message_gives_back_the_frame_it_was_built_from() -> None:
    for frame in (fb.video_config(), fb.keyframe(0), fb.delta(33, cts=40), fb.audio_config(), fb.audio(23)):
        (back,) = message_frames(media(frame))
        assert (back.kind, back.codec, back.dts, back.pts, back.keyframe, back.config, back.payload) == (
            frame.kind,
            frame.codec,
            frame.dts,
            frame.pts,
            frame.keyframe,
            frame.config,
            frame.payload,
        )
        assert frame_chunks(back, 128) == frame_chunks(frame, 128)  # players get the same bytes


def test_a_data_message_gives_its_metadata_frame_or_nothing() -> None:
    metadata = fb.metadata(0, amf0.encode("onMetaData", {"width": 640.0}))
    wrapped = flv.data_body(metadata, set_data_frame=True)
    (frame,) = message_frames(DataMessage(1, 5, wrapped, flv.data_body(metadata)))
    assert frame.kind is FrameKind.DATA and frame.config and frame.dts == 5
    assert frame.payload == metadata.payload
    assert message_frames(DataMessage(1, 0, b"", b"")) == []


def test_an_unsupported_message_is_flagged_so_callers_skip_it() -> None:
    with pytest.raises(flv.FlvUnsupported):
        message_frames(MediaMessage(1, 9, 0, bytes([0x1F, 0, 0, 0, 0])))  # reserved video codec id 15


@st.composite
def garbage(draw: st.DrawFn) -> MediaMessage | DataMessage:
    """Random bodies, often behind a real first byte or header so the deeper parsers run."""
    prefix = draw(
        st.sampled_from(
            [
                b"",
                b"\x17\x00",
                b"\x17\x01",
                b"\x27\x01",
                b"\xaf\x00",
                b"\xaf\x01",
                b"\x2f",
                b"\x90hvc1",
                b"\x91av01",
                b"\x80vp09",
                b"\x9fmod",
                b"\x9f",
                b"\xd0",
                b"\xed",
                b"\x02\x00\x0aonMetaData",
                b"\x02\x00\x0d@setDataFrame",
                b"\x02\xff",
            ]
        )
    )
    body = prefix + draw(st.binary(max_size=64))
    timestamp = draw(st.integers(min_value=0, max_value=2**32 - 1))
    if draw(st.booleans()):
        return DataMessage(1, timestamp, body, body)
    return MediaMessage(1, draw(st.sampled_from([8, 9])), timestamp, body)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(garbage())
def test_garbage_gives_frames_or_a_protocol_error_never_another_exception(message: MediaMessage | DataMessage) -> None:
    try:
        frames = message_frames(message)
    except RemoteProtocolError:
        return
    assert all(isinstance(frame, Frame) for frame in frames)
