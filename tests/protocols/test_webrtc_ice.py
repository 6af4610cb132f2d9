"""The ICE-lite agent (arcly_trio.protocols.webrtc.ice): the RFC 5769 request answered, browser-
and ffmpeg-style checks, nomination, consent freshness, no amplification, arbitrary
messages never answered nor raising; and ffmpeg 8's WHIP muxer and headless Chromium completing ICE
against it over real UDP."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from arcly_trio.protocols.webrtc.ice import PWD_LENGTH, UFRAG_LENGTH, IceLiteAgent, local_ufrag, new_credentials
from arcly_trio.protocols.webrtc.stun import (
    BINDING,
    ICE_CONTROLLING,
    INDICATION,
    PRIORITY,
    REQUEST,
    SUCCESS,
    USE_CANDIDATE,
    USERNAME,
    XOR_MAPPED_ADDRESS,
    build_stun,
    parse_stun,
    parse_xor_address,
)

# RFC 5769 section 2.1 (data of the RFC): username "evtj:h6vY", password below.
PASSWORD = "VOkJxbRl1RmTxUk/WvJxBt"
SAMPLE_REQUEST = bytes.fromhex(
    "000100582112a442b7e7a701bc34d686fa87dfae"
    "80220010" + b"STUN test client".hex() + "002400046e0001ff"
    "80290008932ff9b151263b36"
    "00060009" + b"evtj:h6vY   ".hex() + "00080014"
    "9aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a2"
    "80280004e57a3bcf"
)
LOCAL, PWD, REMOTE = "srvUfrag", "serverpassword0123456789", "ffmp"
PEER = ("192.0.2.10", 50000)


def request(
    username: str = f"{LOCAL}:{REMOTE}",
    *,
    key: str = PWD,
    nominate: bool = False,
    browser: bool = True,
    fingerprint: bool = True,
    transaction: bytes = b"0123456789ab",
) -> bytes:
    attributes = [(USERNAME, username.encode())]
    if browser:  # Chromium: PRIORITY and ICE-CONTROLLING with a tie-breaker
        attributes += [(PRIORITY, struct.pack("!I", 1853824767)), (ICE_CONTROLLING, bytes(8))]
    if nominate:
        attributes.append((USE_CANDIDATE, b""))
    return build_stun(BINDING, REQUEST, transaction, attributes, integrity_key=key.encode(), fingerprint=fingerprint)


def agent(now: float = 0.0, timeout: float = 30.0) -> IceLiteAgent:
    return IceLiteAgent(LOCAL, PWD, REMOTE, consent_timeout=timeout, now=now)


def test_the_rfc_5769_request_is_answered_with_the_mapped_address() -> None:
    ice = IceLiteAgent("evtj", PASSWORD, "h6vY", now=0.0)
    answer = ice.receive(parse_stun(SAMPLE_REQUEST), ("192.0.2.1", 32853), 1.0)
    assert answer is not None and len(answer) <= len(SAMPLE_REQUEST)
    message = parse_stun(answer)
    assert (message.method, message.cls) == (BINDING, SUCCESS)
    assert message.transaction_id == bytes.fromhex("b7e7a701bc34d686fa87dfae")
    assert parse_xor_address(message.get(XOR_MAPPED_ADDRESS) or b"", message.transaction_id) == ("192.0.2.1", 32853)
    assert message.integrity_ok(PASSWORD.encode()) and message.fingerprint_ok()
    assert ice.selected == ("192.0.2.1", 32853) and (ice.requests, ice.rejected) == (1, 0)


def test_an_ffmpeg_style_request_without_priority_is_answered_and_nominates() -> None:
    ice = agent()
    answer = ice.receive(parse_stun(request(browser=False, nominate=True)), PEER, 0.5)
    assert answer is not None
    assert parse_stun(answer).integrity_ok(PWD.encode())
    assert ice.selected == PEER


def test_bad_credentials_and_other_messages_get_no_answer() -> None:
    ice = agent()
    assert ice.receive(parse_stun(request(f"{LOCAL}:other")), PEER, 0.1) is None
    assert ice.receive(parse_stun(request(f"{REMOTE}:{LOCAL}")), PEER, 0.1) is None  # the wrong way round
    assert ice.receive(parse_stun(request(key="not the password at all!")), PEER, 0.1) is None
    unsigned = build_stun(BINDING, REQUEST, bytes(12), [(USERNAME, f"{LOCAL}:{REMOTE}".encode())])
    assert ice.receive(parse_stun(unsigned), PEER, 0.1) is None
    tampered = bytearray(request())
    tampered[-1] ^= 1  # the fingerprint
    assert ice.receive(parse_stun(bytes(tampered)), PEER, 0.1) is None
    indication = build_stun(BINDING, INDICATION, bytes(12), integrity_key=PWD.encode())
    assert ice.receive(parse_stun(indication), PEER, 0.1) is None
    assert ice.selected is None and ice.rejected == 6 and ice.requests == 5


def test_a_request_without_fingerprint_gets_an_answer_without_one() -> None:
    answer = agent().receive(parse_stun(request(fingerprint=False)), PEER, 0.1)
    assert answer is not None
    message = parse_stun(answer)
    assert not message.has(0x8028) and message.integrity_ok(PWD.encode())


def test_an_answer_is_never_larger_than_its_request() -> None:
    ice = IceLiteAgent("abcd", PWD, "efgh", now=0.0)
    small = parse_stun(request("abcd:efgh", browser=False, fingerprint=False))
    assert ice.receive(small, ("2001:db8::1", 4000), 0.1) is None  # 60 bytes in, 68 out: refused
    assert ice.receive(small, ("192.0.2.1", 4000), 0.1) is not None  # 60 in, 56 out


def test_first_valid_request_selects_then_use_candidate_moves_the_selection() -> None:
    ice = agent()
    other = ("198.51.100.7", 6000)
    assert ice.receive(parse_stun(request()), PEER, 1.0) is not None
    assert ice.selected == PEER
    assert ice.receive(parse_stun(request()), other, 2.0) is not None  # answered, not selected
    assert ice.selected == PEER
    assert ice.receive(parse_stun(request(nominate=True)), other, 3.0) is not None
    assert ice.selected == other


def test_consent_expires_without_checks_from_the_selected_address() -> None:
    ice = agent(now=100.0, timeout=30.0)
    assert not ice.consent_expired(129.0)
    assert ice.consent_expired(130.0)  # never connected
    ice.receive(parse_stun(request(nominate=True)), PEER, 131.0)
    assert not ice.consent_expired(160.0)
    ice.receive(parse_stun(request()), ("198.51.100.7", 6000), 150.0)  # not the selected pair
    assert ice.consent_expired(161.0)
    ice.receive(parse_stun(request()), PEER, 161.0)
    assert not ice.consent_expired(190.0)
    ice.receive(parse_stun(request(key="a wrong password, really")), PEER, 185.0)  # rejected
    assert ice.consent_expired(191.0)


def test_local_ufrag_is_the_routing_key() -> None:
    assert local_ufrag(parse_stun(request())) == LOCAL
    assert local_ufrag(parse_stun(SAMPLE_REQUEST)) == "evtj"
    assert local_ufrag(parse_stun(build_stun(BINDING, REQUEST, bytes(12)))) is None
    assert local_ufrag(parse_stun(build_stun(BINDING, REQUEST, bytes(12), [(USERNAME, b"nocolon")]))) is None
    assert local_ufrag(parse_stun(build_stun(BINDING, REQUEST, bytes(12), [(USERNAME, b"\xff:x")]))) is None


def test_new_credentials_are_random_and_valid() -> None:
    ufrag, pwd = new_credentials()
    assert len(ufrag) == UFRAG_LENGTH >= 4 and len(pwd) == PWD_LENGTH >= 22
    assert (ufrag + pwd).isalnum() and new_credentials() != (ufrag, pwd)
    IceLiteAgent(ufrag, pwd, "peer", now=0.0)
    with pytest.raises(ValueError):
        IceLiteAgent("abc", pwd, "peer", now=0.0)
    with pytest.raises(ValueError):
        IceLiteAgent(ufrag, "short", "peer", now=0.0)


@given(
    st.integers(0, 0xFFF),
    st.integers(0, 3),
    st.lists(st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=24)), max_size=6),
    st.none() | st.sampled_from([PWD.encode(), b"other"]),
)
def test_arbitrary_messages_are_answered_only_when_valid_and_never_larger(
    method: int, cls: int, attributes: list[tuple[int, bytes]], key: bytes | None
) -> None:
    ice = agent()
    message = parse_stun(build_stun(method, cls, bytes(12), attributes, integrity_key=key))
    answer = ice.receive(message, PEER, 1.0)
    if answer is not None:
        assert len(answer) <= len(message.raw)
        assert (method, cls, key) == (BINDING, REQUEST, PWD.encode())
        assert message.username == f"{LOCAL}:{REMOTE}"
        assert ice.selected == PEER


@given(st.text(max_size=40), st.binary(min_size=12, max_size=12))
def test_any_username_round_trips_through_local_ufrag(username: str, transaction: bytes) -> None:
    message = parse_stun(build_stun(BINDING, REQUEST, transaction, [(USERNAME, username.encode())]))
    key = local_ufrag(message)
    assert key is None or username.startswith(key + ":")


@pytest.mark.interop
def test_ffmpeg_8_whip_muxer_completes_ice_with_the_agent() -> None:
    """ffmpeg 8 (``-f whip``) gets an answer from :func:`answer_whip`, sends its Binding
    requests to a UDP socket answered by an :class:`IceLiteAgent`, and says "ICE STUN ok"; it
    then waits for DTLS (nobody here speaks it) and gives up after a short handshake timeout."""
    import http.server
    import socket
    import subprocess
    import threading

    from arcly_trio.protocols.webrtc.sdp import Candidate, LocalEndpoint, answer_whip, parse_sdp
    from arcly_trio.protocols.webrtc.stun import is_stun
    from tests._tools import require_ffmpeg8

    ffmpeg = require_ffmpeg8()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(0.2)
    ufrag, pwd = new_credentials()
    candidate = Candidate("1", "udp", 2130706431, "127.0.0.1", udp.getsockname()[1])
    local = LocalEndpoint(ufrag, pwd, "sha-256 " + ":".join(["AB"] * 32), (candidate,))
    agents: list[IceLiteAgent] = []
    answered: list[int] = []
    stop = threading.Event()

    class Whip(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (the name http.server calls)
            answer = answer_whip(parse_sdp(self.rfile.read(int(self.headers["Content-Length"]))), local)
            agents.append(IceLiteAgent(ufrag, pwd, answer.remote_ufrag, now=0.0))
            body = answer.sdp.encode()
            self.send_response(201)
            self.send_header("Content-Type", "application/sdp")
            self.send_header("Location", "/whip/session")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    def serve_udp() -> None:
        while not stop.is_set():
            try:
                datagram, source = udp.recvfrom(2048)
            except TimeoutError:
                continue
            if agents and is_stun(datagram):
                reply = agents[-1].receive(parse_stun(datagram), source, 1.0)
                if reply is not None:
                    answered.append(len(reply))
                    udp.sendto(reply, source)

    http_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Whip)
    threads = [threading.Thread(target=http_server.serve_forever, daemon=True), threading.Thread(target=serve_udp)]
    for thread in threads:
        thread.start()
    try:
        command = [ffmpeg, "-hide_banner", "-loglevel", "verbose", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=10"]
        command += ["-f", "lavfi", "-i", "sine", "-c:v", "libx264", "-profile:v", "baseline", "-bf", "0"]
        command += ["-pix_fmt", "yuv420p", "-c:a", "libopus", "-ar", "48000", "-ac", "2", "-t", "1"]
        command += ["-handshake_timeout", "500", "-f", "whip", f"http://127.0.0.1:{http_server.server_port}/whip"]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    finally:
        stop.set()
        http_server.shutdown()
        http_server.server_close()
        threads[1].join()
        udp.close()
    assert "ICE STUN ok" in result.stderr, result.stderr[-3000:]
    assert answered and agents[-1].selected is not None and agents[-1].selected[0] == "127.0.0.1"
    assert agents[-1].rejected == 0


_CHROMIUM_OFFER_JS = """
const [done] = arguments;
(async () => {
  const pc = new RTCPeerConnection();
  window.pc = pc;
  pc.addTransceiver('video', {direction: 'recvonly'});
  pc.addTransceiver('audio', {direction: 'recvonly'});
  const offer = await pc.createOffer();
  await pc.setLocalDescription(offer);
  done(offer.sdp);
})().catch(error => done('ERROR ' + error));
"""
_CHROMIUM_ICE_JS = """
const [sdp, done] = arguments;
(async () => {
  await window.pc.setRemoteDescription({type: 'answer', sdp});
  const start = Date.now();
  while (Date.now() - start < 10000) {
    const state = window.pc.iceConnectionState;
    if (state === 'connected' || state === 'completed' || state === 'failed') break;
    await new Promise(resolve => setTimeout(resolve, 20));
  }
  done(window.pc.iceConnectionState);
})().catch(error => done('ERROR ' + error));
"""


@pytest.mark.interop
def test_chromium_connects_ice_to_the_agent() -> None:
    """Headless Chromium gets a WHEP answer naming a UDP socket answered by an
    :class:`IceLiteAgent`; its connectivity checks (PRIORITY, ICE-CONTROLLING, FINGERPRINT)
    pass and its ``iceConnectionState`` becomes ``connected`` (DTLS is not part of this)."""
    import itertools
    import socket
    import threading

    from arcly_trio.protocols.webrtc.sdp import Candidate, LocalEndpoint, VideoSource, answer_whep, parse_sdp
    from arcly_trio.protocols.webrtc.stun import is_stun
    from tests._browser import chromium

    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(0.2)
    ufrag, pwd = new_credentials()
    candidate = Candidate("1", "udp", 2130706431, "127.0.0.1", udp.getsockname()[1])
    local = LocalEndpoint(ufrag, pwd, "sha-256 " + ":".join(["AB"] * 32), (candidate,))
    agents: list[IceLiteAgent] = []
    stop = threading.Event()

    def serve_udp() -> None:
        while not stop.is_set():
            try:
                datagram, source = udp.recvfrom(2048)
            except TimeoutError:
                continue
            if agents and is_stun(datagram):
                reply = agents[-1].receive(parse_stun(datagram), source, 1.0)
                if reply is not None:
                    udp.sendto(reply, source)

    thread = threading.Thread(target=serve_udp)
    thread.start()
    try:
        with chromium() as driver:
            driver.get("about:blank")
            offer = parse_sdp(driver.execute_async_script(_CHROMIUM_OFFER_JS))
            video = VideoSource("h264", "42e01f")
            answer = answer_whep(offer, local, video=video, audio=True, ssrcs=itertools.count(1).__next__)
            agents.append(IceLiteAgent(ufrag, pwd, answer.remote_ufrag, now=0.0))
            state = driver.execute_async_script(_CHROMIUM_ICE_JS, answer.sdp)
    finally:
        stop.set()
        thread.join()
        udp.close()
    assert state == "connected"
    assert agents[-1].selected is not None and agents[-1].selected[0] == "127.0.0.1"
    assert agents[-1].requests >= 1 and agents[-1].rejected == 0
