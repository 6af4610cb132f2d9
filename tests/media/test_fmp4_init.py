"""Tests of arcly_trio.media.fmp4.init: a track built from a record parsed once."""

from __future__ import annotations

import pytest

from arcly_trio.core.errors import LocalProtocolError
from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.media.codecs import parse_config
from arcly_trio.media.fmp4 import track_from_config


def test_a_parsed_record_is_used_as_given_and_kept_on_the_track(demo_frames) -> None:  # type: ignore[no-untyped-def]
    config = next(f for f in demo_frames if f.config and f.kind is FrameKind.VIDEO)
    parsed = parse_config(config.codec, config.payload)
    track = track_from_config(config, parsed=parsed)
    assert track.codec_config is parsed
    assert track == track_from_config(config)  # the same track as when it parses itself
    assert (track.width, track.height) == (parsed.sps.width, parsed.sps.height)  # type: ignore[union-attr]


def test_a_record_of_another_config_is_refused(demo_frames) -> None:  # type: ignore[no-untyped-def]
    video = next(f for f in demo_frames if f.config and f.kind is FrameKind.VIDEO)
    audio = next(f for f in demo_frames if f.config and f.kind is FrameKind.AUDIO)
    with pytest.raises(LocalProtocolError):
        track_from_config(video, parsed=parse_config(audio.codec, audio.payload))
    other = Frame(FrameKind.VIDEO, "h264", 0, 0, video.payload + b"\x00", config=True)
    with pytest.raises(LocalProtocolError):
        track_from_config(other, parsed=parse_config(video.codec, video.payload))
