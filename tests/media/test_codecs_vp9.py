"""Tests of arcly_trio.media.codecs.vp9: the one vpcC parser, in both forms, up to fMP4 HLS."""

from __future__ import annotations

import m3u8
import pytest
from hypothesis import given
from hypothesis import strategies as st

from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.media import llhls
from arcly_trio.media.cmaf import CmafPackager, ResourceReady
from arcly_trio.media.codec_strings import decoder_parameters
from arcly_trio.media.codecs import CodecError, UnsupportedCodec, parse_vp9_config, vp9_picture_size

BARE_VPCC = b"\x00\x14\x82\x02\x02\x02\x00\x00"  # profile 0, level 2.0, 8-bit 4:2:0, no init data
PREFIXED_VPCC = b"\x01\x00\x00\x00" + BARE_VPCC  # as FFmpeg sends it (vpcC FullBox version 1)
KEYFRAME = b"\x82\x49\x83\x42\x00\x13\xf0\x0e\xf6"  # a libvpx 320x240 keyframe's first bytes
INTER_FRAME = b"\x86\x00\x40\x92"


def vp9_stream(record: bytes, seconds: int = 7) -> list[Frame]:
    frames = [Frame(FrameKind.VIDEO, "vp9", 0, 0, record, config=True)]
    for i in range(seconds * 30):
        keyframe = i % 30 == 0
        ts = i * 33
        frames.append(Frame(FrameKind.VIDEO, "vp9", ts, ts, KEYFRAME if keyframe else INTER_FRAME, keyframe=keyframe))
    return frames


def test_both_forms_parse_to_the_same_record() -> None:
    bare, prefixed = parse_vp9_config(BARE_VPCC), parse_vp9_config(PREFIXED_VPCC)
    assert bare == prefixed
    assert (bare.profile, bare.level, bare.bit_depth, bare.chroma_subsampling) == (0, 20, 8, 1)
    assert bare.record == prefixed.record == BARE_VPCC
    assert (
        decoder_parameters("vp9", BARE_VPCC).codec == decoder_parameters("vp9", PREFIXED_VPCC).codec == "vp09.00.20.08"
    )


def test_a_prefix_of_another_version_is_unsupported() -> None:
    with pytest.raises(UnsupportedCodec):
        parse_vp9_config(b"\x00\x00\x00\x00" + BARE_VPCC)
    with pytest.raises(CodecError, match="truncated"):
        parse_vp9_config(b"\x01\x00\x00\x00\x00\x14")
    with pytest.raises(CodecError, match="initialization data"):
        parse_vp9_config(BARE_VPCC + b"\x00")


@pytest.mark.parametrize("record", [BARE_VPCC, PREFIXED_VPCC], ids=["bare", "prefixed"])
def test_a_vp9_stream_gets_fmp4_hls_with_either_vpcc(record: bytes) -> None:
    """The live bug: a bare vpcC raised CodecError("... truncated (8 bytes)") in the packager."""
    packager = CmafPackager(name_prefix="t-")
    stored: dict[str, bytes] = {}
    for frame in vp9_stream(record):
        for event in packager.push(frame):
            if isinstance(event, ResourceReady):
                stored[event.name] = event.data
    for event in packager.finish():
        if isinstance(event, ResourceReady):
            stored[event.name] = event.data
    video = packager.renditions[FrameKind.VIDEO]
    assert video.codec_string == "vp09.00.20.08"
    assert (video.track.width, video.track.height) == (320, 240)
    assert b"vpcC" in stored[video.init] and BARE_VPCC in stored[video.init]
    playlist = m3u8.loads(llhls.media_playlist(packager, FrameKind.VIDEO, low_latency=False))
    assert playlist.is_endlist and len(playlist.segments) >= 3
    assert all(segment.uri in stored for segment in playlist.segments)
    multivariant = llhls.multivariant_playlist(packager)
    assert multivariant is not None and "vp09.00.20.08" in multivariant


@given(st.binary(max_size=40))
def test_arbitrary_vpcc_raises_only_codec_errors(data: bytes) -> None:
    for record in (data, b"\x01\x00\x00\x00" + data):
        try:
            parsed = parse_vp9_config(record)
        except CodecError:
            continue
        assert parsed.bit_depth in (8, 10, 12) and len(parsed.record) >= 8


@given(st.binary(max_size=80))
def test_arbitrary_keyframe_headers_raise_only_codec_errors(data: bytes) -> None:
    try:
        width, height = vp9_picture_size(data)
    except CodecError:
        return
    assert 1 <= width <= 65536 and 1 <= height <= 65536
