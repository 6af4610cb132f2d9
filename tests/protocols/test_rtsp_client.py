"""The sans-IO RTSP client of the camera pull, with plain bytes: the exchange, Basic and Digest,
refusals, keep-alives, interleaved channels, URLs and credentials; and the G.711 payload format.

A scripted server answers each request the client queued; nothing here opens a socket.
"""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arcly_trio.core.errors import RemoteProtocolError, RemoteRefused
from arcly_trio.protocols.rtsp.client import ClientState, Described, Playing, RtpData, RtspClient, split_url
from arcly_trio.protocols.rtsp.messages import RtspReader, RtspRequest, encode_interleaved, encode_response
from arcly_trio.protocols.webrtc.payload import g711

URL = "rtsp://admin:pa55word@10.0.0.7:8554/Streaming/Channels/101?channel=1&transport=tcp"
SDP = (
    "v=0\r\no=- 1 1 IN IP4 10.0.0.7\r\ns=cam\r\nt=0 0\r\na=control:*\r\n"
    "m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1\r\na=control:trackID=1\r\n"
    "m=audio 0 RTP/AVP 0\r\na=control:rtsp://10.0.0.7:8554/abs/audio\r\n"
    "m=application 0 RTP/AVP 107\r\na=rtpmap:107 vnd.onvif.metadata/90000\r\n"
)


def requests(client: RtspClient) -> list[RtspRequest]:
    out = RtspReader(role="server").feed(client.data_to_send())
    assert all(isinstance(r, RtspRequest) for r in out)
    return out  # type: ignore[return-value]


def answer(
    request: RtspRequest, status: int = 200, headers: tuple[tuple[str, str], ...] = (), body: bytes = b""
) -> bytes:
    return encode_response(status, None, (("CSeq", request.header("cseq") or ""), *headers), body)


def describe_and_play(client: RtspClient) -> list[RtspRequest]:
    """Run the exchange to PLAY; return every request the client sent."""
    sent: list[RtspRequest] = []
    client.start()
    (options,) = requests(client)
    sent.append(options)
    assert not client.receive_data(answer(options, headers=(("Public", "DESCRIBE, SETUP, GET_PARAMETER"),)))
    (describe,) = requests(client)
    sent.append(describe)
    base = (("Content-Base", "rtsp://10.0.0.7:8554/Streaming/Channels/101/"),)
    (described,) = client.receive_data(answer(describe, headers=base, body=SDP.encode()))
    assert isinstance(described, Described)
    client.setup(None if client.transport == "tcp" else [(5000, 5001), (5002, 5003)])
    for _ in described.tracks:
        (setup,) = requests(client)
        sent.append(setup)
        transport = setup.header("transport") or ""
        if "client_port" in transport:
            transport += ";server_port=6000-6001"
        assert not client.receive_data(
            answer(setup, headers=(("Session", "ABCD;timeout=30"), ("Transport", transport)))
        )
    (play,) = requests(client)
    sent.append(play)
    (playing,) = client.receive_data(answer(play, headers=(("Session", "ABCD"),)))
    assert isinstance(playing, Playing) and client.state is ClientState.PLAYING
    return sent


def test_the_exchange_sets_up_one_video_and_one_audio_track_over_tcp() -> None:
    client = RtspClient(URL)
    sent = describe_and_play(client)
    assert [r.method for r in sent] == ["OPTIONS", "DESCRIBE", "SETUP", "SETUP", "PLAY"]
    # Our transport parameter and the credentials never reach the camera's URL; its own query does.
    assert all(r.uri.startswith("rtsp://10.0.0.7:8554/") and "pa55word" not in r.uri for r in sent)
    assert sent[0].uri == "rtsp://10.0.0.7:8554/Streaming/Channels/101?channel=1"
    assert sent[2].uri == "rtsp://10.0.0.7:8554/Streaming/Channels/101/trackID=1"  # relative to Content-Base
    assert sent[3].uri == "rtsp://10.0.0.7:8554/abs/audio"  # absolute control
    assert sent[2].header("transport") == "RTP/AVP/TCP;unicast;interleaved=0-1"
    assert sent[3].header("transport") == "RTP/AVP/TCP;unicast;interleaved=2-3"
    assert sent[3].header("session") == "ABCD" and sent[4].uri == "rtsp://10.0.0.7:8554/Streaming/Channels/101/"
    assert [(t.codec, t.payload_type) for t in client.tracks] == [("h264", 96), ("pcmu", 0)]
    assert client.keepalive_interval == 15
    assert all(r.header("authorization") is None for r in sent)  # never sent unasked
    # Media: RTP and RTCP by channel; a channel that was not set up is counted and dropped.
    events = client.receive_data(
        encode_interleaved(0, b"v") + encode_interleaved(3, b"a") + encode_interleaved(9, b"x")
    )
    assert events == [RtpData(0, False, b"v"), RtpData(1, True, b"a")] and client.stray == 1
    # Keep-alive: GET_PARAMETER (listed in Public), then TEARDOWN.
    client.keepalive()
    (keepalive,) = requests(client)
    assert keepalive.method == "GET_PARAMETER" and keepalive.header("session") == "ABCD"
    assert not client.receive_data(answer(keepalive))
    client.teardown()
    (teardown,) = requests(client)
    assert teardown.method == "TEARDOWN" and client.state is ClientState.CLOSED


def test_udp_sends_the_client_ports_and_reads_the_server_ports() -> None:
    client = RtspClient(URL.replace("transport=tcp", "transport=udp"))
    sent = describe_and_play(client)
    assert sent[2].header("transport") == "RTP/AVP;unicast;client_port=5000-5001"
    assert sent[3].header("transport") == "RTP/AVP;unicast;client_port=5002-5003"
    assert client.receive_data(encode_interleaved(0, b"v")) == [] and client.stray == 1  # not on TCP


def _digest_challenge(qop: bool) -> tuple[tuple[str, str], ...]:
    extra = ', qop="auth"' if qop else ""
    return (
        ("WWW-Authenticate", 'Basic realm="cam"'),
        ("WWW-Authenticate", f'Digest realm="cam", nonce="n0nce"{extra}, opaque="op"'),
    )


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


@pytest.mark.parametrize("qop", [False, True])
def test_digest_is_answered_with_the_url_credentials_and_kept(qop: bool) -> None:
    client = RtspClient(URL)
    client.start()
    (options,) = requests(client)
    client.receive_data(answer(options))
    (describe,) = requests(client)
    client.receive_data(answer(describe, 401, _digest_challenge(qop)))
    (again,) = requests(client)
    assert again.method == "DESCRIBE" and again.header("cseq") != describe.header("cseq")
    authorization = again.header("authorization") or ""
    fields = dict(p.strip().split("=", 1) for p in authorization.removeprefix("Digest ").split(","))
    fields = {k: v.strip('"') for k, v in fields.items()}
    ha1, ha2 = _md5("admin:cam:pa55word"), _md5(f"DESCRIBE:{again.uri}")
    if qop:
        expected = _md5(f"{ha1}:n0nce:{fields['nc']}:{fields['cnonce']}:auth:{ha2}")
    else:
        expected = _md5(f"{ha1}:n0nce:{ha2}")
    assert fields["response"] == expected and fields["username"] == "admin" and fields["opaque"] == "op"
    assert "pa55word" not in authorization
    client.receive_data(answer(again, body=SDP.encode()))
    client.setup()
    (setup,) = requests(client)
    assert (setup.header("authorization") or "").startswith("Digest ")  # every later request


def test_basic_when_only_basic_is_offered() -> None:
    client = RtspClient(URL)
    client.start()
    (options,) = requests(client)
    client.receive_data(answer(options, 401, (("WWW-Authenticate", 'Basic realm="cam"'),)))
    (again,) = requests(client)
    assert again.method == "OPTIONS"
    assert again.header("authorization") == "Basic " + base64.b64encode(b"admin:pa55word").decode()


def test_a_second_401_is_a_refusal_that_does_not_show_the_password() -> None:
    client = RtspClient(URL)
    client.start()
    (options,) = requests(client)
    client.receive_data(answer(options))
    (describe,) = requests(client)
    client.receive_data(answer(describe, 401, _digest_challenge(False)))
    (again,) = requests(client)
    with pytest.raises(RemoteRefused) as caught:
        client.receive_data(answer(again, 401, _digest_challenge(False)))
    assert caught.value.code == "401" and caught.value.stage == "describe" and "pa55word" not in str(caught.value)


def test_no_credentials_means_a_401_is_a_refusal() -> None:
    client = RtspClient("rtsp://10.0.0.7/cam")
    client.start()
    (options,) = requests(client)
    client.receive_data(answer(options))
    (describe,) = requests(client)
    with pytest.raises(RemoteRefused):
        client.receive_data(answer(describe, 401, _digest_challenge(False)))


def test_refusals_and_unusable_streams() -> None:
    client = RtspClient(URL)
    client.start()
    (options,) = requests(client)
    client.receive_data(answer(options, 404))  # OPTIONS may fail: DESCRIBE decides
    (describe,) = requests(client)
    with pytest.raises(RemoteRefused) as caught:
        client.receive_data(answer(describe, 404))
    assert caught.value.code == "404"
    client = RtspClient(URL)
    client.start()
    (options,) = requests(client)
    client.receive_data(answer(options))
    (describe,) = requests(client)
    only_metadata = b"v=0\r\ns=x\r\nm=application 0 RTP/AVP 107\r\na=rtpmap:107 vnd.onvif.metadata/90000\r\n"
    with pytest.raises(RemoteRefused) as caught:
        client.receive_data(answer(describe, body=only_metadata))
    assert caught.value.code == "415"


def test_a_response_to_another_request_is_a_protocol_error() -> None:
    client = RtspClient(URL)
    client.start()
    requests(client)
    with pytest.raises(RemoteProtocolError):
        client.receive_data(encode_response(200, None, (("CSeq", "77"),)))


def test_a_control_url_that_cannot_be_sent_is_a_protocol_error() -> None:
    client = RtspClient(URL)
    client.start()
    (options,) = requests(client)
    client.receive_data(answer(options))
    (describe,) = requests(client)
    client.receive_data(answer(describe, body=SDP.replace("trackID=1", "track 1").encode()))
    with pytest.raises(RemoteProtocolError):
        client.setup()


def test_server_keepalives_are_answered() -> None:
    client = RtspClient(URL)
    client.start()
    requests(client)
    client.receive_data(b"GET_PARAMETER rtsp://10.0.0.7/ RTSP/1.0\r\nCSeq: 5\r\n\r\n")
    assert client.data_to_send().startswith(b"RTSP/1.0 200 OK\r\nCSeq: 5\r\n")
    client.receive_data(b"REDIRECT rtsp://10.0.0.7/ RTSP/1.0\r\nCSeq: 6\r\n\r\n")
    assert client.data_to_send().startswith(b"RTSP/1.0 501")


def test_split_url() -> None:
    assert split_url(URL) == ("rtsp://10.0.0.7:8554/Streaming/Channels/101?channel=1", "admin", "pa55word", "tcp")
    assert split_url("rtsp://u%40x:p%3Aw@[::1]/a?transport=UDP")[1:] == ("u@x", "p:w", "udp")
    assert split_url("rtsp://[::1]/a")[0] == "rtsp://[::1]/a"
    for bad in ("http://x/a", "rtsp:///a", "rtsp://admin:pa55word@h/a?transport=sctp"):
        with pytest.raises(ValueError) as caught:
            split_url(bad)
        assert "pa55word" not in str(caught.value)
    assert RtspClient(URL).describe_url == "rtsp://10.0.0.7:8554/Streaming/Channels/101?channel=***"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_our_errors(data: bytes) -> None:
    client = RtspClient(URL)
    client.start()
    client.data_to_send()
    try:
        client.receive_data(data)
    except (RemoteProtocolError, RemoteRefused):
        pass


def test_g711_payloads() -> None:
    assert g711.packetize(bytes(400), 160) == [bytes(160), bytes(160), bytes(80)]
    with pytest.raises(g711.G711PacketizeError):
        g711.packetize(b"", 160)
    depacketizer = g711.Depacketizer()
    (unit,) = depacketizer.push(b"\xd5" * 160, marker=False, timestamp=320)
    assert unit.payload == b"\xd5" * 160 and unit.timestamp == 320 and unit.keyframe
    assert depacketizer.push(b"", marker=False, timestamp=480) == [] and depacketizer.discarded == 1
    assert g711.STATIC_PAYLOAD_TYPES == {0: "pcmu", 8: "pcma"} and g711.CODECS["PCMA"] == "pcma"
