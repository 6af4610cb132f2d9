"""SDP for RTSP: tracks described from kernel configs read back to the same configs; camera SDPs."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from arcly_trio.media.codecs.h264 import avc_config
from arcly_trio.media.codecs.hevc import parse_hevc_config
from arcly_trio.media.codecs.opus import opus_head, parse_opus_head
from arcly_trio.protocols.rtsp.sdp import SdpError, build_sdp, control_uri, describe_track, parse_sdp
from tests._rtp_payloads import hevc_access_units

SPS = bytes.fromhex("6742c01f8c8d40501e900f08846a")
PPS = bytes.fromhex("68ce3c80")
ASC = bytes.fromhex("1190")  # AAC-LC 48 kHz stereo


def test_a_described_stream_parses_back_to_the_same_tracks_and_configs() -> None:
    units = hevc_access_units("h265.hevc")[0]
    by_type = {(nal[0] >> 1) & 0x3F: nal for nal in units}
    from arcly_trio.media.codecs.hevc import hevc_config_record

    hvcc = hevc_config_record([by_type[32]], [by_type[33]], [by_type[34]])
    tracks = [
        describe_track("h264", avc_config([SPS], [PPS]), payload_type=96, control="trackID=0"),
        describe_track("aac", ASC, payload_type=97, control="trackID=1"),
        describe_track("opus", opus_head(2), payload_type=111, control="trackID=2"),
        describe_track("hevc", hvcc, payload_type=98, control="trackID=3"),
        describe_track("av1", None, payload_type=99, control="trackID=4"),
    ]
    sdp = build_sdp(tracks, address="192.0.2.1", name="live/cam")
    assert (
        b"a=fmtp:96 packetization-mode=1;profile-level-id=42C01F;sprop-parameter-sets=Z0LAH4yNQFAekA8IhGo=,aM48gA=="
        in sdp
    )
    assert b"a=rtpmap:97 MPEG4-GENERIC/48000/2" in sdp
    assert b"mode=AAC-hbr;sizelength=13;indexlength=3;indexdeltalength=3;config=1190" in sdp
    parsed = parse_sdp(sdp)
    assert parsed.control == "*" and parsed.name == "live/cam"
    assert [(t.codec, t.payload_type, t.clock_rate, t.control) for t in parsed.tracks] == [
        ("h264", 96, 90000, "trackID=0"),
        ("aac", 97, 48000, "trackID=1"),
        ("opus", 111, 48000, "trackID=2"),
        ("hevc", 98, 90000, "trackID=3"),
        ("av1", 99, 90000, "trackID=4"),
    ]
    assert parsed.tracks[0].config == avc_config([SPS], [PPS])
    assert parsed.tracks[1].config == ASC
    assert parse_opus_head(parsed.tracks[2].config or b"").channels == 2
    config = parse_hevc_config(parsed.tracks[3].config or b"")
    assert (config.vps, config.sps, config.pps) == ((by_type[32],), (by_type[33],), (by_type[34],))


CAMERA = """v=0
o=- 1 1 IN IP4 192.168.1.20
s=Media Presentation
c=IN IP4 0.0.0.0
t=0 0
a=control:rtsp://192.168.1.20/Streaming/Channels/101/
m=video 0 RTP/AVP 96
a=rtpmap:96 H264/90000
a=fmtp:96 profile-level-id=420029; packetization-mode=1; sprop-parameter-sets=Z0LAH4yNQFAekA8IhGo,aM48gA
a=control:rtsp://192.168.1.20/Streaming/Channels/101/trackID=1
m=audio 0 RTP/AVP 8
a=control:trackID=2
m=application 0 RTP/AVP 107
a=rtpmap:107 vnd.onvif.metadata/90000
"""


def test_a_camera_sdp_with_static_g711_unpadded_base64_and_an_onvif_track() -> None:
    parsed = parse_sdp(CAMERA)
    video, audio = parsed.tracks
    assert video.config == avc_config([SPS], [PPS])
    assert video.parameter("PACKETIZATION-MODE") == "1"
    assert (audio.codec, audio.payload_type, audio.clock_rate, audio.channels) == ("pcma", 8, 8000, 1)
    base = parsed.control
    assert control_uri(base, video.control) == video.control
    assert control_uri(base, audio.control) == "rtsp://192.168.1.20/Streaming/Channels/101/trackID=2"
    assert control_uri("rtsp://h/live/a", "trackID=0") == "rtsp://h/live/a/trackID=0"
    assert control_uri("rtsp://h/live/a", "*") == "rtsp://h/live/a"


def test_bad_parameter_sets_leave_the_config_to_in_band_data() -> None:
    sdp = CAMERA.replace("Z0LAH4yNQFAekA8IhGo,aM48gA", "!!!")
    assert parse_sdp(sdp).tracks[0].config is None
    sdp = "v=0\r\nm=audio 0 RTP/AVP 97\r\na=rtpmap:97 mpeg4-generic/44100/2\r\na=fmtp:97 mode=AAC-hbr;config=zz\r\n"
    (track,) = parse_sdp(sdp).tracks
    assert track.codec == "aac" and track.config is None


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hello",
        "v=0\nm=video\n",
        "v=0\nm=video 0 RTP/AVP x\n",
        "v=0\nm=audio 0 RTP/AVP 97\na=rtpmap:97 opus/0/2\n",
        "v=0\n" + "m=video 0 RTP/AVP 96\n" * 17,
        b"v=0\n\xff",
    ],
)
def test_what_is_not_sdp_raises_sdp_error(text: str | bytes) -> None:
    with pytest.raises(SdpError) as info:
        parse_sdp(text)
    assert info.value.status == 400


def test_describe_refuses_what_it_cannot_describe() -> None:
    with pytest.raises(ValueError):
        describe_track("vp8", None, payload_type=96, control="x")
    with pytest.raises(ValueError):
        describe_track("aac", None, payload_type=96, control="x")
    with pytest.raises(ValueError):
        describe_track("h264", b"\x01\x02", payload_type=96, control="x")


@given(st.text(max_size=300))
def test_arbitrary_text_raises_only_sdp_error(text: str) -> None:
    try:
        parse_sdp("v=0\n" + text)
    except SdpError:
        pass
