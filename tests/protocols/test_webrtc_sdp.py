"""SDP offer/answer (arcly_trio.protocols.webrtc.sdp): real offers from Chromium 156 (WHEP
playback, WHIP publish, captured with ``chromium --headless=new`` calling createOffer) and from
ffmpeg 8's ``-f whip`` muxer (captured from its POST) parsed and answered; H.264 profile
matching (RFC 6184 / RFC 7742); rejected sections kept in order; limits; hypothesis garbage
gives SdpError only, and answers parse back to what was negotiated."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arcly_trio.protocols.webrtc.sdp import (
    MAX_CANDIDATES,
    MAX_MEDIA,
    MAX_SDP_BYTES,
    MID_EXTENSION,
    Answer,
    Candidate,
    LocalEndpoint,
    NoCommonCodec,
    SdpError,
    SdpUsageError,
    SessionDescription,
    VideoSource,
    answer_whep,
    answer_whip,
    h264_profile,
    parse_sdp,
)

DATA = Path(__file__).parent / "data"
WHEP_OFFER = (DATA / "chromium_whep_offer.sdp").read_bytes()
WHIP_OFFER = (DATA / "chromium_whip_offer.sdp").read_bytes()
FFMPEG_OFFER = (DATA / "ffmpeg8_whip_offer.sdp").read_bytes()
FINGERPRINT = ":".join(f"{n:02X}" for n in range(32))
LOCAL = LocalEndpoint(
    ice_ufrag="srvUfrag",
    ice_pwd="serverpassword0123456789",
    fingerprint=f"sha-256 {FINGERPRINT}",
    candidates=(
        Candidate("1", "udp", 2130706431, "192.0.2.1", 8189),
        Candidate("2", "tcp", 1671430143, "192.0.2.1", 8189, "passive"),
    ),
)
DATACHANNEL = (
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\n"
    "a=ice-ufrag:ikQM\r\na=ice-pwd:xvScgbE0lRQD38Ieiu0QZVeM\r\na=mid:2\r\na=sctp-port:5000\r\n"
)


def counter() -> itertools.count[int]:
    return itertools.count(0x1000)


CB_STREAM = VideoSource("h264", "42e01f")


def whep(offer: bytes | str, video: VideoSource | None = CB_STREAM, audio: bool = True) -> Answer:
    return answer_whep(parse_sdp(offer), LOCAL, video=video, audio=audio, ssrcs=counter().__next__)


def simple_offer(video_lines: str, direction: str = "recvonly", *, session: str = "") -> str:
    """A small offer with one video section whose codec lines are ``video_lines``."""
    pts = " ".join(re.findall(r"a=rtpmap:(\d+)", video_lines))
    return (
        "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n" + session + f"m=video 9 "
        f"UDP/TLS/RTP/SAVPF {pts}\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\na=ice-pwd:0123456789012345678901\r\n"
        f"a=fingerprint:sha-256 {FINGERPRINT.lower()}\r\na=setup:actpass\r\na=mid:0\r\na={direction}\r\n"
        "a=rtcp-mux\r\n" + video_lines
    )


# --- parsing -------------------------------------------------------------------------------


def test_chromium_whep_offer_is_read() -> None:
    offer = parse_sdp(WHEP_OFFER)
    assert offer.bundle == ("0", "1") and not offer.ice_lite
    video, audio = offer.media
    assert (video.kind, video.mid, video.direction, video.protocol) == ("video", "0", "recvonly", "UDP/TLS/RTP/SAVPF")
    assert (audio.kind, audio.mid, audio.direction) == ("audio", "1", "recvonly")
    for media in offer.media:
        assert media.ice_ufrag and media.ice_pwd and media.setup == "actpass" and media.rtcp_mux and media.rtcp_rsize
        assert media.fingerprints[0][0] == "sha-256" and re.fullmatch(
            r"([0-9A-F]{2}:){31}[0-9A-F]{2}", media.fingerprints[0][1]
        )
    assert video.extension(MID_EXTENSION) == 9 and audio.extension(MID_EXTENSION) == 9
    vp8 = video.codecs[0]
    assert (vp8.payload_type, vp8.name, vp8.clock_rate) == (96, "vp8", 90000)
    assert vp8.feedback == ("goog-remb", "transport-cc", "ccm fir", "nack", "nack pli")
    assert video.codec(97) is not None and video.codec(97).name == "rtx" and video.codec(97).param("apt") == "96"
    h264 = [codec for codec in video.codecs if codec.name == "h264"]
    assert [codec.param("profile-level-id") for codec in h264 if codec.param("packetization-mode") == "1"] == [
        "42001f",
        "42e01f",
        "4d001f",
        "f4001f",
    ]
    opus = audio.codecs[0]
    assert (opus.payload_type, opus.name, opus.clock_rate, opus.channels) == (111, "opus", 48000, 2)
    assert opus.param("useinbandfec") == "1" and opus.param("MINPTIME") == "10"
    assert [codec.name for codec in audio.codecs] == [
        "opus",
        "red",
        "g722",
        "pcmu",
        "pcma",
        "cn",
        "telephone-event",
    ] + ["telephone-event"]


def test_chromium_whip_offer_has_its_ssrcs_and_groups() -> None:
    video, audio = parse_sdp(WHIP_OFFER).media
    assert video.direction == audio.direction == "sendonly"
    assert video.ssrcs == (2164462818, 1737087387)
    assert video.ssrc_groups == (("FID", (2164462818, 1737087387)),)
    assert audio.ssrcs == (1149058620,)
    assert len(video.candidates) == 2 and video.candidates[0].startswith("1619533710 1 udp 2113937151 ")


def test_ffmpeg_offer_is_read() -> None:
    offer = parse_sdp(FFMPEG_OFFER)
    audio, video = offer.media
    assert offer.bundle == ("0", "1")
    assert (audio.kind, audio.mid, audio.setup, audio.ice_ufrag) == ("audio", "0", "passive", "70a139be")
    assert audio.codecs[0].name == "opus" and audio.codecs[0].fmtp == ()
    assert video.codecs[0].param("profile-level-id") == "42000d" and video.candidates == ()


def test_lf_crlf_str_and_bytes_read_the_same() -> None:
    text = WHEP_OFFER.decode()
    assert parse_sdp(text) == parse_sdp(WHEP_OFFER) == parse_sdp(text.replace("\r\n", "\n"))


def test_session_level_transport_is_inherited() -> None:
    session = "a=ice-ufrag:sess\r\na=ice-pwd:sessionpassword0123456\r\na=fingerprint:sha-1 AA:BB\r\na=inactive\r\n"
    offer = (
        "v=0\r\n"
        + session
        + "m=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:a\r\nm=audio 9 UDP/TLS/RTP/SAVPF 8\r\na=ice-ufrag:own!\r\na=sendonly\r\n"
    )
    first, second = parse_sdp(offer).media
    assert (first.ice_ufrag, first.ice_pwd, first.fingerprints, first.direction) == (
        "sess",
        "sessionpassword0123456",
        (("sha-1", "AA:BB"),),
        "inactive",
    )
    assert (second.ice_ufrag, second.direction, second.mid) == ("own!", "sendonly", None)
    assert first.codecs[0].name == "pcmu" and second.codecs[0].name == "pcma"  # static payload types


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"", "empty"),
        (b"o=- 1 1 IN IP4 0.0.0.0\r\n", "v=0"),
        (b"v=0\r\nnot a line\r\n", "line 2"),
        (b"v=0\r\n\xff\xfe\r\n", "UTF-8"),
        (b"v=0\r\nm=video\r\n", "m-line"),
        (b"v=0\r\nm=video 70000 RTP/AVP 96\r\n", "port"),
        (b"v=0\r\nm=video 9 RTP/AVP 96\r\na=rtpmap:300 H264/90000\r\n", "payload type"),
        (b"v=0\r\nm=video 9 RTP/AVP 96\r\na=rtpmap:96 H264\r\n", "rtpmap"),
        (b"v=0\r\nm=video 9 RTP/AVP 96\r\na=ssrc:99999999999 cname:x\r\n", "SSRC"),
        (b"v=0\r\na=fingerprint:sha-256 XYZ\r\n", "fingerprint"),
        (b"v=0\r\na=setup:sideways\r\n", "setup"),
        (b"v=0\r\na=ice-ufrag:" + b"x" * 300 + b"\r\n", "ice-ufrag"),
        (b"v=0\r\nm=video 9 RTP/AVP 96\r\na=extmap:0 urn:x\r\n", "extmap"),
        (b"v=0\r\nm=video 9 RTP/AVP 96\r\na=fmtp:96 a=1\ra=mid:x\r\n", "line 3 holds a control"),
        (b"v=0\r\ns=\x00\r\n", "control"),
        (b"v=0\r\nm=video 9 RTP/AVP 96\r\na=mid:a b\r\n", "mid"),
        (b"v=0\r\nm=video 9 RTP/AVP 96\r\na=mid:\r\n", "mid"),
        ("v=0\r\ns=\ud800\r\n", "UTF-8"),
        (b"v=0\r\n" + b"a=x\r\n" * 600, "attribute lines"),
        (b"v=0\r\n" + b"m=audio 9 RTP/AVP 0\r\n" * (MAX_MEDIA + 1), "m-sections"),
        (b"v=0\r\nm=audio 9 RTP/AVP 0\r\n" + b"a=candidate:1 1 udp 1 h 1 typ host\r\n" * 33, "candidates"),
        (b"v=0\r\n" + b"a=x:" + b"y" * MAX_SDP_BYTES, "over"),
        ("v=0\r\n" + "é" * (MAX_SDP_BYTES // 2 + 1), "over"),
    ],
)
def test_malformed_or_oversized_offers_are_sdp_errors(text: bytes | str, message: str) -> None:
    with pytest.raises(SdpError, match=message):
        parse_sdp(text)
    assert MAX_CANDIDATES == 32


# --- H.264 profiles --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("profile_level_id", "profile"),
    [
        ("42e01f", "constrained-baseline"),
        ("42c01f", "constrained-baseline"),  # x264 baseline: constraint_set0 and 1
        ("4de01f", "constrained-baseline"),
        ("42001f", "baseline"),
        ("42000d", "baseline"),  # ffmpeg 8's WHIP offer
        ("4d001f", "main"),
        ("4d4028", "main"),
        ("640c1f", "constrained-high"),
        ("640028", "high"),
        ("f4001f", "high-444"),
        ("6e0028", None),  # high 10: not a WebRTC profile
        ("42f81f", None),  # constraint_set4 on baseline
        ("42e0", None),
        ("zzzzzz", None),
    ],
)
def test_h264_profiles(profile_level_id: str, profile: str | None) -> None:
    assert h264_profile(profile_level_id) == profile


@pytest.mark.parametrize(
    ("stream", "payload_type"),
    [
        ("42e01f", 108),  # constrained baseline: the same profile
        ("42c028", 108),  # x264 baseline at level 4: the constraint flags match
        ("42001f", 102),  # baseline
        ("4d0029", 116),  # main
        ("640028", 41),  # high: only the high 4:4:4 decoder Chromium offers plays it
        ("640c1f", 41),
    ],
)
def test_whep_picks_the_h264_payload_type_that_plays_the_stream(stream: str, payload_type: int) -> None:
    answer = whep(WHEP_OFFER, VideoSource("h264", stream))
    video = answer.tracks[0]
    assert (video.kind, video.codec.payload_type) == ("video", payload_type)
    assert video.codec.param("packetization-mode") == "1" and video.nack and video.pli


def test_whep_prefers_level_asymmetry_then_the_offers_order() -> None:
    lines = (
        "a=rtpmap:100 H264/90000\r\na=fmtp:100 packetization-mode=1;profile-level-id=42e01f\r\n"
        "a=rtpmap:101 H264/90000\r\na=fmtp:101 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n"
        "a=rtpmap:102 H264/90000\r\na=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=640c1f\r\n"
    )
    assert whep(simple_offer(lines), VideoSource("h264", "42e01f")).tracks[0].codec.payload_type == 101
    # a constrained baseline stream plays on a main decoder before a constrained high one
    no_baseline = simple_offer(lines.replace("42e01f", "4d001f"))
    assert whep(no_baseline, VideoSource("h264", "42e01f")).tracks[0].codec.payload_type == 101
    only_high = simple_offer(lines.split("a=rtpmap:100")[0] + "a=rtpmap:102" + lines.split("a=rtpmap:102")[1])
    assert whep(only_high, VideoSource("h264", "42e01f")).tracks[0].codec.payload_type == 102


def test_a_stream_profile_the_browser_does_not_offer_is_no_common_codec() -> None:
    lines = "a=rtpmap:108 H264/90000\r\na=fmtp:108 packetization-mode=1;profile-level-id=42e01f\r\n"
    with pytest.raises(NoCommonCodec, match="main.*not offered.*H264 42e01f") as caught:
        whep(simple_offer(lines), VideoSource("h264", "4d001f"))
    assert caught.value.offered == ("video (recvonly): H264 42e01f",)
    with pytest.raises(NoCommonCodec, match="hevc"):
        whep(WHEP_OFFER, VideoSource("hevc"))
    mode0 = "a=rtpmap:108 H264/90000\r\na=fmtp:108 packetization-mode=0;profile-level-id=42e01f\r\n"
    with pytest.raises(NoCommonCodec):
        whep(simple_offer(mode0), VideoSource("h264", "42e01f"))


def test_bad_local_values_are_usage_errors() -> None:
    with pytest.raises(SdpUsageError):
        whep(WHEP_OFFER, VideoSource("h264", "6e0028"))
    with pytest.raises(SdpUsageError):
        whep(WHEP_OFFER, VideoSource("theora"))
    offer = parse_sdp(WHEP_OFFER)
    for local in (
        LocalEndpoint("srvUfrag", "serverpassword0123456789", LOCAL.fingerprint, ()),
        LocalEndpoint("srvUfrag", "serverpassword0123456789", "sha-256 nothex", LOCAL.candidates),
    ):
        with pytest.raises(SdpUsageError):
            answer_whep(offer, local, video=None, audio=True, ssrcs=counter().__next__)


# --- answers ---------------------------------------------------------------------------------


def test_whep_answer_to_chromium_has_everything_chromium_needs() -> None:
    answer = whep(WHEP_OFFER, VideoSource("h264", "42e01f"))
    text = answer.sdp
    assert text.startswith("v=0\r\n") and text.endswith("\r\n") and "\n" not in text.replace("\r\n", "")
    for line in ("a=ice-lite", "a=group:BUNDLE 0 1", "a=msid-semantic: WMS arcly-srvUfrag"):
        assert line + "\r\n" in text
    assert text.count("a=setup:passive") == 2 and text.count("a=sendonly") == 2
    assert text.count("a=end-of-candidates") == 2 and text.count("a=rtcp-rsize") == 2
    assert "rtx" not in text and "red/" not in text and "ulpfec" not in text and "goog-remb" not in text
    assert "a=rtcp-fb:108 nack\r\na=rtcp-fb:108 nack pli\r\na=rtcp-fb:108 ccm fir\r\n" in text
    assert "a=fmtp:111 minptime=10;useinbandfec=1\r\n" in text
    assert "c=IN IP4 192.0.2.1\r\n" in text and "m=video 8189 UDP/TLS/RTP/SAVPF 108\r\n" in text
    video, audio = answer.tracks
    assert (video.send_ssrc, audio.send_ssrc) == (0x1000, 0x1001)
    assert f"a=ssrc:{0x1000} cname:arcly\r\na=ssrc:{0x1000} msid:arcly-srvUfrag video\r\n" in text
    assert (audio.codec.name, audio.codec.payload_type, audio.mid_extension) == ("opus", 111, 9)
    offer = parse_sdp(WHEP_OFFER)
    assert (answer.remote_ufrag, answer.remote_pwd) == (offer.media[0].ice_ufrag, offer.media[0].ice_pwd)
    assert answer.remote_fingerprints == offer.media[0].fingerprints and answer.remote_setup == "actpass"


def test_whep_rejects_a_data_channel_and_keeps_the_order() -> None:
    offer = WHEP_OFFER.decode().replace("a=group:BUNDLE 0 1", "a=group:BUNDLE 0 1 2") + DATACHANNEL
    answer = whep(offer)
    parsed = parse_sdp(answer.sdp)
    assert [(m.kind, m.mid, m.port != 0) for m in parsed.media] == [
        ("video", "0", True),
        ("audio", "1", True),
        ("application", "2", False),
    ]
    assert parsed.media[2].direction == "inactive" and parsed.media[2].protocol == "UDP/DTLS/SCTP"
    assert "m=application 0 UDP/DTLS/SCTP webrtc-datachannel\r\n" in answer.sdp
    assert parsed.bundle == ("0", "1")


def test_whep_of_an_audio_only_stream_rejects_video_and_a_second_video_is_rejected() -> None:
    answer = whep(WHEP_OFFER, video=None)
    assert [track.kind for track in answer.tracks] == ["audio"]
    assert parse_sdp(answer.sdp).media[0].port == 0 and parse_sdp(answer.sdp).bundle == ("1",)
    lines = "a=rtpmap:96 VP9/90000\r\n"
    double = simple_offer(lines) + simple_offer(lines).split("t=0 0\r\na=group:BUNDLE 0\r\n")[1].replace(
        "a=mid:0", "a=mid:1"
    )
    double = double.replace("a=group:BUNDLE 0", "a=group:BUNDLE 0 1")
    answer = whep(double, VideoSource("vp9"))
    assert [(m.mid, m.port != 0) for m in parse_sdp(answer.sdp).media] == [("0", True), ("1", False)]
    with pytest.raises(NoCommonCodec, match="no section"):
        whep(WHEP_OFFER, video=None, audio=False)


@pytest.mark.parametrize(("codec", "payload_type"), [("vp9", 98), ("av1", 45)])
def test_whep_picks_the_8_bit_profile_of_vp9_and_av1(codec: str, payload_type: int) -> None:
    assert whep(WHEP_OFFER, VideoSource(codec)).tracks[0].codec.payload_type == payload_type


def test_whip_answer_to_chromium_receives_h264_and_opus() -> None:
    answer = answer_whip(parse_sdp(WHIP_OFFER), LOCAL)
    video, audio = answer.tracks
    assert (video.codec.name, video.codec.payload_type, video.send_ssrc) == ("h264", 108, None)
    assert video.remote_ssrcs == (2164462818,)  # the FID group's RTX SSRC left out
    assert (audio.codec.name, audio.remote_ssrcs) == ("opus", (1149058620,))
    assert answer.sdp.count("a=recvonly") == 2 and "a=ssrc" not in answer.sdp and "a=msid:" not in answer.sdp
    assert answer.remote_setup == "actpass" and answer.sdp.count("a=setup:passive") == 2


@pytest.mark.parametrize(
    ("codecs", "name", "payload_type"),
    [(("vp9", "h264"), "vp9", 98), (("av1",), "av1", 45), (("hevc", "h264"), "h264", 108)],
)
def test_whip_follows_our_codec_preference(codecs: tuple[str, ...], name: str, payload_type: int) -> None:
    video = answer_whip(parse_sdp(WHIP_OFFER), LOCAL, video_codecs=codecs).tracks[0]
    assert (video.codec.name, video.codec.payload_type) == (name, payload_type)


def test_whip_rejects_what_it_cannot_receive() -> None:
    answer = answer_whip(parse_sdp(WHIP_OFFER), LOCAL, video_codecs=("hevc",))
    assert [track.kind for track in answer.tracks] == ["audio"]
    with pytest.raises(NoCommonCodec, match=r"video \(recvonly\)"):
        answer_whip(parse_sdp(WHEP_OFFER), LOCAL)  # a playback offer sent to WHIP


def test_whip_answer_to_ffmpeg_8_is_what_its_muxer_reads() -> None:
    answer = answer_whip(parse_sdp(FFMPEG_OFFER), LOCAL)
    assert [(t.kind, t.codec.payload_type) for t in answer.tracks] == [("audio", 111), ("video", 106)]
    # ffmpeg offers a=setup:passive (it is the DTLS server), so we are active
    assert answer.remote_setup == "passive" and answer.sdp.count("a=setup:active") == 2
    assert (answer.remote_ufrag, answer.remote_pwd) == ("70a139be", "baa49a0c4b99aedc279a531b9f5a9425")
    # libavformat/whip.c: the answer starts with v=, is under 8 KiB, and the first candidate
    # line holding "udp" reads as "<proto> <priority> <host> <port> typ host"
    text = answer.sdp
    assert text.startswith("v=") and len(text) < 8192
    assert re.search(r"^a=ice-ufrag:srvUfrag\r$", text, re.M) and re.search(r"^a=ice-pwd:\S+\r$", text, re.M)
    first = next(line for line in text.split("\r\n") if line.startswith("a=candidate:") and "udp" in line)
    fields = first[first.index("udp") :].split()
    assert fields[0] == "udp" and fields[1].isdigit() and (fields[2], fields[3]) == ("192.0.2.1", "8189")
    assert fields[4:6] == ["typ", "host"]


def test_offers_without_ice_or_dtls_are_sdp_errors() -> None:
    no_fingerprint = re.sub(r"a=fingerprint:[^\r]*\r\n", "", WHEP_OFFER.decode())
    with pytest.raises(SdpError, match="fingerprint"):
        whep(no_fingerprint)
    no_ice = re.sub(r"a=ice-pwd:[^\r]*\r\n", "", WHEP_OFFER.decode())
    with pytest.raises(SdpError, match="ice"):
        whep(no_ice)


# --- hypothesis ------------------------------------------------------------------------------


@given(st.binary(max_size=2000))
def test_garbage_bytes_give_sdp_error_only(data: bytes) -> None:
    try:
        parse_sdp(data)
    except SdpError:
        pass


_LINES = WHEP_OFFER.decode().split("\r\n") + WHIP_OFFER.decode().split("\r\n") + FFMPEG_OFFER.decode().split("\r\n")


def _answers_or_sdp_error(offer: SessionDescription) -> None:
    for attempt in (
        lambda: answer_whep(offer, LOCAL, video=VideoSource("h264", "42e01f"), audio=True, ssrcs=counter().__next__),
        lambda: answer_whep(offer, LOCAL, video=VideoSource("vp9"), audio=False, ssrcs=counter().__next__),
        lambda: answer_whip(offer, LOCAL),
    ):
        try:
            answer = attempt()
        except SdpError:
            continue
        check_round_trip(offer, answer)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(_LINES) | st.text(max_size=30), max_size=80), st.booleans())
def test_mutated_real_offers_parse_and_answer_or_give_sdp_error_only(lines: list[str], lf: bool) -> None:
    text = "v=0\r\n" + ("\n" if lf else "\r\n").join(lines)
    try:
        offer = parse_sdp(text)
    except SdpError:
        return
    _answers_or_sdp_error(offer)


@settings(max_examples=100, deadline=None)
@given(st.permutations(list(range(30))), st.integers(0, 2))
def test_shuffled_chromium_attribute_lines_still_answer(order: list[int], which: int) -> None:
    source = (WHEP_OFFER, WHIP_OFFER, FFMPEG_OFFER)[which].decode().split("\r\n")
    head = source[:7]
    body = source[7:]
    picked = [body[i] for i in order if i < len(body)] + body[30:]
    _answers_or_sdp_error(parse_sdp("\r\n".join(head + picked)))


_CODEC = st.sampled_from(
    [
        ("H264", 90000, "packetization-mode=1;profile-level-id=42e01f"),
        ("H264", 90000, "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=4d001f"),
        ("H264", 90000, "packetization-mode=0;profile-level-id=42e01f"),
        ("VP9", 90000, "profile-id=0"),
        ("VP9", 90000, "profile-id=2"),
        ("AV1", 90000, ""),
        ("H265", 90000, "profile-id=1"),
        ("VP8", 90000, ""),
        ("rtx", 90000, "apt=96"),
        ("opus", 48000, "minptime=10;useinbandfec=1;stereo=1"),
        ("red", 48000, "111/111"),
    ]
)
_SECTION = st.tuples(
    st.sampled_from(["video", "audio", "application"]),
    st.sampled_from(["sendrecv", "sendonly", "recvonly", "inactive"]),
    st.lists(_CODEC, min_size=1, max_size=5),
    st.sets(st.sampled_from(["nack", "nack pli", "ccm fir", "goog-remb", "transport-cc"])),
    st.booleans(),  # the mid extension
    st.booleans(),  # rtcp-rsize
)


def build_offer(sections: list[tuple], setup: str) -> str:
    lines = ["v=0", "o=- 1 2 IN IP4 127.0.0.1", "s=-", "t=0 0"]
    lines.append("a=group:BUNDLE " + " ".join(f"m{index}" for index in range(len(sections))))
    lines += ["a=ice-ufrag:peer", "a=ice-pwd:peerpassword0123456789", f"a=fingerprint:sha-256 {FINGERPRINT}"]
    for index, (kind, direction, codecs, feedback, mid_ext, rsize) in enumerate(sections):
        pts = list(range(96, 96 + len(codecs)))
        lines.append(f"m={kind} 9 UDP/TLS/RTP/SAVPF {' '.join(map(str, pts))}")
        lines += [f"a=mid:m{index}", f"a={direction}", f"a=setup:{setup}", "a=rtcp-mux"]
        if rsize:
            lines.append("a=rtcp-rsize")
        if mid_ext:
            lines.append(f"a=extmap:4 {MID_EXTENSION}")
        for pt, (name, clock, fmtp) in zip(pts, codecs, strict=True):
            lines.append(f"a=rtpmap:{pt} {name}/{clock}" + ("/2" if clock == 48000 else ""))
            if fmtp:
                lines.append(f"a=fmtp:{pt} {fmtp}")
            lines += [f"a=rtcp-fb:{pt} {value}" for value in sorted(feedback)]
        lines.append(f"a=ssrc:{1000 + index} cname:peer")
    return "\r\n".join(lines) + "\r\n"


def check_round_trip(offer: SessionDescription, answer: Answer) -> None:
    """The answer, parsed back, is what was negotiated: one m-line per offered one, the mids,
    our transport, one codec per accepted section (the track's), the BUNDLE of accepted mids."""
    parsed = parse_sdp(answer.sdp)
    assert parsed.ice_lite
    assert [media.mid for media in parsed.media] == [media.mid for media in offer.media]
    assert [media.kind for media in parsed.media] == [media.kind for media in offer.media]
    accepted = [media for media in parsed.media if media.port != 0]
    assert [media.mid for media in accepted] == [track.mid for track in answer.tracks]
    if offer.bundle:
        assert parsed.bundle == tuple(track.mid for track in answer.tracks)
    for media, track in zip(accepted, answer.tracks, strict=True):
        assert (media.ice_ufrag, media.ice_pwd) == (LOCAL.ice_ufrag, LOCAL.ice_pwd)
        assert media.fingerprints == (("sha-256", FINGERPRINT),) and media.rtcp_mux
        assert media.setup == ("active" if answer.remote_setup == "passive" else "passive")
        assert len(media.candidates) == len(LOCAL.candidates) and media.port == 8189
        (codec,) = media.codecs
        assert (codec.payload_type, codec.name, codec.clock_rate, codec.fmtp) == (
            track.codec.payload_type,
            track.codec.name,
            track.codec.clock_rate,
            track.codec.fmtp,
        )
        assert codec.name not in ("rtx", "red", "ulpfec")
        assert set(codec.feedback) <= {"nack", "nack pli", "ccm fir"} & set(track.codec.feedback)
        assert media.extmaps == (((track.mid_extension, MID_EXTENSION),) if track.mid_extension else ())
        if track.send_ssrc is not None:
            assert media.direction == "sendonly" and media.ssrcs == (track.send_ssrc,)
        else:
            assert media.direction == "recvonly" and media.ssrcs == ()
    for media in parsed.media:
        if media.port == 0:
            assert media.direction == "inactive"


@settings(max_examples=200, deadline=None)
@given(
    st.lists(_SECTION, min_size=1, max_size=4),
    st.sampled_from(["actpass", "active", "passive"]),
    st.sampled_from([None, VideoSource("h264", "42e01f"), VideoSource("vp9"), VideoSource("av1")]),
    st.booleans(),
)
def test_answers_parse_back_to_what_was_negotiated(
    sections: list[tuple], setup: str, video: VideoSource | None, audio: bool
) -> None:
    offer = parse_sdp(build_offer(sections, setup))
    for attempt in (
        lambda: answer_whep(offer, LOCAL, video=video, audio=audio, ssrcs=counter().__next__),
        lambda: answer_whip(offer, LOCAL),
    ):
        try:
            answer = attempt()
        except NoCommonCodec:
            continue
        check_round_trip(offer, answer)
        assert answer.remote_setup == setup and answer.remote_ufrag == "peer"


# --- Chromium takes our answers (interop) ----------------------------------------------------

_OFFER_JS = """
const [kind, done] = arguments;
(async () => {
  const pc = new RTCPeerConnection();
  window.pc = pc;
  if (kind === 'whep') {
    pc.addTransceiver('video', {direction: 'recvonly'});
    pc.addTransceiver('audio', {direction: 'recvonly'});
    pc.createDataChannel('chat');
  } else {
    const canvas = document.createElement('canvas');
    canvas.getContext('2d').fillRect(0, 0, 8, 8);
    const audio = new AudioContext().createMediaStreamDestination();
    const stream = new MediaStream([canvas.captureStream(30).getVideoTracks()[0], audio.stream.getAudioTracks()[0]]);
    for (const track of stream.getTracks()) pc.addTransceiver(track, {direction: 'sendonly', streams: [stream]});
  }
  const offer = await pc.createOffer();
  await pc.setLocalDescription(offer);
  done(offer.sdp);
})().catch(error => done('ERROR ' + error));
"""
_ANSWER_JS = """
const [sdp, done] = arguments;
window.pc.setRemoteDescription({type: 'answer', sdp})
  .then(() => done(window.pc.getTransceivers().map(t => t.mid + ' ' + t.currentDirection).join(',')))
  .catch(error => done('ERROR ' + error));
"""


@pytest.mark.interop
def test_chromium_accepts_our_whep_and_whip_answers() -> None:
    from tests._browser import chromium

    with chromium() as driver:
        driver.get("about:blank")
        offer = driver.execute_async_script(_OFFER_JS, "whep")
        assert offer.startswith("v=0"), offer
        answer = answer_whep(parse_sdp(offer), LOCAL, video=CB_STREAM, audio=True, ssrcs=counter().__next__)
        assert "m=application 0 " in answer.sdp
        assert driver.execute_async_script(_ANSWER_JS, answer.sdp) == "0 recvonly,1 recvonly"
        offer = driver.execute_async_script(_OFFER_JS, "whip")
        assert offer.startswith("v=0"), offer
        answer = answer_whip(parse_sdp(offer), LOCAL)
        assert driver.execute_async_script(_ANSWER_JS, answer.sdp) == "0 sendonly,1 sendonly"


@pytest.mark.interop
def test_ffmpeg_8_whip_muxer_reads_our_answer() -> None:
    """ffmpeg 8 POSTs its offer to a small HTTP server answering with :func:`answer_whip`, reads
    the ICE credentials and the UDP candidate out of the answer (its verbose log says so), then
    gives up on ICE after a short handshake timeout (nothing listens on the candidate)."""
    import http.server
    import subprocess
    import threading

    from tests._tools import require_ffmpeg8

    ffmpeg = require_ffmpeg8()
    local = LocalEndpoint(
        LOCAL.ice_ufrag, LOCAL.ice_pwd, LOCAL.fingerprint, (Candidate("1", "udp", 1, "127.0.0.1", 9),)
    )
    offers: list[bytes] = []

    class Whip(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (the name http.server calls)
            offers.append(self.rfile.read(int(self.headers["Content-Length"])))
            body = answer_whip(parse_sdp(offers[-1]), local).sdp.encode()
            self.send_response(201)
            self.send_header("Content-Type", "application/sdp")
            self.send_header("Location", "/live/test/whip/session")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Whip)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        command = [ffmpeg, "-hide_banner", "-loglevel", "verbose", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=10"]
        command += ["-f", "lavfi", "-i", "sine", "-c:v", "libx264", "-profile:v", "baseline", "-bf", "0"]
        command += ["-pix_fmt", "yuv420p", "-c:a", "libopus", "-ar", "48000", "-ac", "2", "-t", "1"]
        command += ["-handshake_timeout", "300", "-f", "whip", f"http://127.0.0.1:{server.server_port}/live/test/whip"]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    finally:
        server.shutdown()
        server.server_close()
    assert len(offers) == 1 and parse_sdp(offers[0]).media[0].setup == "passive"
    assert f"ufrag={LOCAL.ice_ufrag}" in result.stderr, result.stderr[-3000:]
    assert "transport=udp://127.0.0.1:9" in result.stderr, result.stderr[-3000:]


@pytest.mark.parametrize(("line", "max_ptime"), [("", None), ("a=maxptime:20\r\n", 20), ("a=maxptime:2.5\r\n", None)])
def test_the_offers_maxptime_reaches_the_audio_track(line: str, max_ptime: int | None) -> None:
    """``a=maxptime`` (a hint: a malformed one is ignored, not an error) is the audio track's."""
    offer = WHEP_OFFER.decode().replace("a=fmtp:111 ", line + "a=fmtp:111 ")
    assert parse_sdp(offer).media[1].max_ptime == max_ptime
    audio = [track for track in whep(offer).tracks if track.kind == "audio"]
    assert audio[0].max_ptime == max_ptime
