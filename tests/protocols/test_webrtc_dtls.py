"""DTLS-SRTP associations (arcly_trio.protocols.webrtc.dtls): two transports handshake in
memory in both roles and with both SRTP profiles and export the same keys crosswise; a wrong
fingerprint, a lost flight (recovered on a fake clock), the handshake timeout, close_notify,
garbage (only DtlsError, or dropped) and the MTU; and OpenSSL's own ``s_client`` and
``s_server`` handshake with ours and print the keys we exported (interop)."""

from __future__ import annotations

import select
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arcly_trio.protocols.webrtc.certificate import DtlsCertificate
from arcly_trio.protocols.webrtc.dtls import (
    MAX_DATAGRAM,
    MAX_HANDSHAKE_RECORDS,
    SRTP_PROFILES,
    DtlsError,
    DtlsTimeout,
    DtlsTransport,
    DtlsUsageError,
    SrtpKeys,
    split_records,
)
from tests._tools import require_tool

CLIENT_CERT = DtlsCertificate.generate(common_name="client")
SERVER_CERT = DtlsCertificate.generate(common_name="server")
OTHER_CERT = DtlsCertificate.generate(common_name="someone else")


def transports(
    *,
    client_profiles: Sequence[str] = SRTP_PROFILES,
    server_profiles: Sequence[str] = SRTP_PROFILES,
    client_expects: DtlsCertificate = SERVER_CERT,
    server_expects: DtlsCertificate = CLIENT_CERT,
    mtu: int = 1200,
) -> tuple[DtlsTransport, DtlsTransport]:
    client = DtlsTransport(
        CLIENT_CERT,
        server=False,
        remote_fingerprints=[("sha-256", client_expects.fingerprint())],
        now=0.0,
        mtu=mtu,
        profiles=client_profiles,
    )
    server = DtlsTransport(
        SERVER_CERT,
        server=True,
        remote_fingerprints=[("SHA-256", server_expects.fingerprint().lower())],
        now=0.0,
        mtu=mtu,
        profiles=server_profiles,
    )
    return client, server


def deliver(datagrams: list[bytes], to: DtlsTransport, now: float) -> list[bytes]:
    return [answer for datagram in datagrams for answer in to.receive(datagram, now)]


def handshake(client: DtlsTransport, server: DtlsTransport, now: float = 0.0) -> list[list[bytes]]:
    """Run the handshake to its end, nothing lost; the flights in order."""
    flights = [client.start(now)]
    assert server.start(now) == []
    peers = [server, client]
    while flights[-1]:
        flights.append(deliver(flights[-1], peers[(len(flights) - 1) % 2], now))
    return flights


def test_split_records_reads_record_headers_and_refuses_anything_else() -> None:
    record = bytes([22, 0xFE, 0xFD]) + bytes(8) + (3).to_bytes(2, "big") + b"abc"
    assert split_records(record * 2) == [record, record]
    assert split_records(b"") == []
    assert split_records(record[:-1]) is None  # the length runs past the datagram
    assert split_records(b"\x80" + record[1:]) is None  # RTP, not DTLS
    assert split_records(record + b"\x16") is None


def test_the_rfc_5764_key_split_takes_client_key_server_key_client_salt_server_salt() -> None:
    material = b"K" * 16 + b"k" * 16 + b"S" * 14 + b"s" * 14
    client = SrtpKeys.from_material("SRTP_AES128_CM_SHA1_80", material, server=False)
    server = SrtpKeys.from_material("SRTP_AES128_CM_SHA1_80", material, server=True)
    assert (client.local_key, client.local_salt, client.remote_key, client.remote_salt) == (
        b"K" * 16,
        b"S" * 14,
        b"k" * 16,
        b"s" * 14,
    )
    assert (server.local_key, server.local_salt, server.remote_key, server.remote_salt) == (
        b"k" * 16,
        b"s" * 14,
        b"K" * 16,
        b"S" * 14,
    )
    with pytest.raises(ValueError, match="60 bytes"):
        SrtpKeys.from_material("SRTP_AES128_CM_SHA1_80", material[:-1], server=True)


@pytest.mark.parametrize("profile", SRTP_PROFILES)
def test_a_client_and_a_server_agree_on_the_profile_and_the_keys_crosswise(profile: str) -> None:
    client, server = transports(client_profiles=[profile])
    flights = handshake(client, server)
    assert len(flights) == 5  # ClientHello; ServerHello..Done; Certificate..Finished; CCS, Finished; nothing
    assert client.established and server.established
    assert client.keys is not None and server.keys is not None
    assert client.keys.profile == server.keys.profile == profile
    assert (client.keys.local_key, client.keys.local_salt) == (server.keys.remote_key, server.keys.remote_salt)
    assert (client.keys.remote_key, client.keys.remote_salt) == (server.keys.local_key, server.keys.local_salt)
    assert client.keys.local_key != client.keys.remote_key
    assert client.timeout() is None and server.timeout() is None
    assert client.handle_timeout(100.0) == [] and server.handle_timeout(100.0) == []


def test_the_server_picks_its_preferred_profile_among_those_offered() -> None:
    client, server = transports(client_profiles=list(reversed(SRTP_PROFILES)))
    handshake(client, server)
    assert client.keys is not None and client.keys.profile == SRTP_PROFILES[0]


def test_no_common_profile_fails_the_handshake() -> None:
    client, server = transports(client_profiles=[SRTP_PROFILES[0]], server_profiles=[SRTP_PROFILES[1]])
    with pytest.raises(DtlsError):
        handshake(client, server)
    assert client.keys is None and server.keys is None


@pytest.mark.parametrize("side", ["client", "server"])
def test_a_certificate_that_matches_no_fingerprint_fails_with_an_alert(side: str) -> None:
    if side == "client":
        client, server = transports(client_expects=OTHER_CERT)
    else:
        client, server = transports(server_expects=OTHER_CERT)
    checker = client if side == "client" else server
    with pytest.raises(DtlsError, match="fingerprint") as raised:
        handshake(client, server)
    assert checker.failed and checker.keys is None and not checker.established
    assert raised.value.datagrams  # the alert for the peer
    other = server if side == "client" else client
    with pytest.raises(DtlsError):
        deliver(raised.value.datagrams, other, 0.0)
    assert other.keys is None
    assert checker.receive(raised.value.datagrams[0], 0.0) == []  # a failed transport drops everything


def test_associations_share_one_context_and_each_checks_its_own_peer() -> None:
    """Every association presenting one certificate shares one OpenSSL context (made once: ~22 KB
    less per viewer), and the shared verification callback asks each connection's own
    transport: interleaved, the one whose peer matches completes and the other one fails."""
    good_client, good_server = transports()
    bad_client, bad_server = transports(server_expects=OTHER_CERT)
    assert good_server._connection.get_context() is bad_server._connection.get_context()
    assert good_client._connection.get_context() is not good_server._connection.get_context()
    good, bad = [good_client.start(0.0)], [bad_client.start(0.0)]
    good.append(deliver(good[-1], good_server, 0.0))
    bad.append(deliver(bad[-1], bad_server, 0.0))
    good.append(deliver(good[-1], good_client, 0.0))
    bad.append(deliver(bad[-1], bad_client, 0.0))
    with pytest.raises(DtlsError, match="fingerprint"):
        deliver(bad[-1], bad_server, 0.0)
    deliver(deliver(good[-1], good_server, 0.0), good_client, 0.0)
    assert good_server.keys is not None and good_client.keys is not None
    assert bad_server.failed and bad_server.keys is None


def test_fingerprints_of_unknown_hash_functions_are_no_fingerprints() -> None:
    with pytest.raises(DtlsError, match="no certificate fingerprint"):
        DtlsTransport(SERVER_CERT, server=True, remote_fingerprints=[("md5", "00:11")], now=0.0)
    transport = DtlsTransport(
        SERVER_CERT,
        server=True,
        remote_fingerprints=[("md5", "00:11"), ("sha-1", CLIENT_CERT.fingerprint("sha-1"))],
        now=0.0,
    )
    client = DtlsTransport(
        CLIENT_CERT, server=False, remote_fingerprints=[("sha-512", SERVER_CERT.fingerprint("sha-512"))], now=0.0
    )
    handshake(client, transport)
    assert client.established and transport.established


def test_a_lost_client_hello_is_sent_again_on_the_fake_clock_with_backoff() -> None:
    client, server = transports()
    client.start(0.0)  # lost
    assert client.timeout() == 1.0
    assert client.handle_timeout(0.999) == []
    again = client.handle_timeout(1.0)
    assert again and client.retransmissions == 1
    assert client.timeout() == 3.0  # 1 s, then 2 s
    flight = deliver(again, server, 1.0)
    flight = deliver(flight, client, 1.0)
    flight = deliver(flight, server, 1.0)
    deliver(flight, client, 1.0)
    assert client.established and server.established


def test_a_lost_server_flight_is_sent_again_by_the_server() -> None:
    client, server = transports()
    hello = client.start(0.0)
    deliver(hello, server, 0.0)  # ServerHello..Done lost
    assert server.timeout() == 1.0
    again = server.handle_timeout(1.0)
    assert again
    flight = deliver(again, client, 1.0)
    flight = deliver(flight, server, 1.0)
    deliver(flight, client, 1.0)
    assert client.established and server.established


def test_a_lost_final_server_flight_is_answered_when_the_client_retransmits() -> None:
    """The client's copy must be re-encrypted under fresh record numbers, or the server drops
    it as a replay: OpenSSL does that once its wall-clock timer (1 s) agrees with ours."""
    client, server = transports()
    flights = [client.start(0.0)]
    flights.append(deliver(flights[-1], server, 0.0))
    flights.append(deliver(flights[-1], client, 0.0))
    deliver(flights[-1], server, 0.0)  # CCS, Finished lost
    assert server.established and not client.established
    time.sleep(1.05)  # OpenSSL's DTLS timer reads the wall clock
    again = client.handle_timeout(1.0)
    assert again
    deliver(deliver(again, server, 1.0), client, 1.0)
    assert client.established
    assert client.keys is not None and server.keys is not None
    assert client.keys.local_key == server.keys.remote_key


def test_with_a_clock_in_step_with_the_wall_openssl_retransmits_under_fresh_record_numbers() -> None:
    """The production case: the worker's clock runs with the wall clock that OpenSSL's timer
    reads, so at our deadline OpenSSL re-encrypts the flight (or will within moments: we wait)."""
    start = time.monotonic()
    client = DtlsTransport(
        CLIENT_CERT, server=False, remote_fingerprints=[("sha-256", SERVER_CERT.fingerprint())], now=start
    )
    first = client.start(start)  # lost
    again: list[bytes] = []
    for _ in range(3):
        deadline = client.timeout()
        assert deadline is not None
        time.sleep(max(0.0, deadline - time.monotonic()))
        again = client.handle_timeout(time.monotonic())
        if again:
            break
    assert again and again != first  # a fresh record sequence number, not a copy
    assert again[0][:3] == first[0][:3] and again[0][11:] == first[0][11:]  # the same ClientHello


@pytest.mark.parametrize("server", [False, True])
def test_a_handshake_that_does_not_complete_in_time_raises_dtls_timeout(server: bool) -> None:
    transport = DtlsTransport(
        SERVER_CERT if server else CLIENT_CERT,
        server=server,
        remote_fingerprints=[("sha-256", OTHER_CERT.fingerprint())],
        now=100.0,
        handshake_timeout=10.0,
    )
    transport.start(100.0)
    deadlines = []
    while True:
        deadline = transport.timeout()
        assert deadline is not None
        deadlines.append(deadline)
        try:
            transport.handle_timeout(deadline)
        except DtlsTimeout:
            break
    # the server waits for a ClientHello; the client resends at 1 s, 3 s, 7 s (fake clock)
    assert deadlines == ([110.0] if server else [101.0, 103.0, 107.0, 110.0])
    assert transport.failed and transport.timeout() is None


def test_close_notify_sets_closed_on_the_peer() -> None:
    client, server = transports()
    handshake(client, server)
    notify = client.close()
    assert notify and client.timeout() is None
    assert not server.closed
    deliver(notify, server, 0.0)
    assert server.closed and server.keys is not None
    assert client.close() == []  # once


def test_start_twice_is_a_usage_error_and_arguments_are_checked() -> None:
    client, _ = transports()
    client.start(0.0)
    with pytest.raises(DtlsUsageError):
        client.start(0.0)
    with pytest.raises(ValueError):
        DtlsTransport(SERVER_CERT, server=True, remote_fingerprints=[], now=0.0, mtu=10)
    with pytest.raises(ValueError):
        transports(client_profiles=["SRTP_NULL_NULL"])


def test_outgoing_datagrams_keep_to_the_mtu() -> None:
    client, server = transports(mtu=300)
    flights = handshake(client, server)
    sizes = [len(datagram) for flight in flights for datagram in flight]
    assert max(sizes) <= 300 and len(sizes) > 5
    assert client.established and server.established


def test_oversized_and_non_dtls_datagrams_are_dropped_unread() -> None:
    _, server = transports()
    assert server.receive(bytes([22, 0xFE, 0xFD]) + bytes(MAX_DATAGRAM), 0.0) == []
    assert server.receive(b"\x80\x60" + bytes(40), 0.0) == []  # RTP
    assert server.dropped == 2 and not server.failed


def test_more_records_than_a_handshake_needs_fail_it() -> None:
    _, server = transports()
    junk = bytes([21, 0xFE, 0xFD, 0, 5]) + bytes(6) + (2).to_bytes(2, "big") + b"\x02\x28"  # an alert, epoch 5
    with pytest.raises(DtlsError, match="records"):
        for _ in range(MAX_HANDSHAKE_RECORDS):
            server.receive(junk * 2, 0.0)
    assert server.failed


RECORD = st.builds(
    lambda kind, version, epoch_seq, body: bytes([kind]) + version + epoch_seq + len(body).to_bytes(2, "big") + body,
    st.integers(20, 25),
    st.sampled_from([b"\xfe\xfd", b"\xfe\xff", b"\xfe\x00"]),
    st.binary(min_size=8, max_size=8),
    st.binary(max_size=200),
)
GARBAGE = st.one_of(st.binary(max_size=600), st.lists(RECORD, min_size=1, max_size=4).map(b"".join))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(datagrams=st.lists(GARBAGE, min_size=1, max_size=5), established=st.booleans())
def test_garbage_raises_only_dtls_error_or_is_dropped(datagrams: list[bytes], established: bool) -> None:
    client, server = transports()
    if established:
        handshake(client, server)
    for datagram in datagrams:
        try:
            answers = server.receive(datagram, 0.0)
        except DtlsError:
            assert server.failed
            return
        assert all(isinstance(answer, bytes) and len(answer) <= 1200 for answer in answers)
    assert server.established == established


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flight=st.sampled_from([0, 2]), position=st.integers(0, 10_000), value=st.integers(0, 255))
def test_a_corrupted_client_flight_fails_only_with_dtls_error(flight: int, position: int, value: int) -> None:
    client, server = transports()
    flights = [client.start(0.0)]
    peers = [server, client]
    while flights[-1]:
        datagrams = flights[-1]
        if len(flights) - 1 == flight:
            joined = bytearray(datagrams[0])
            joined[position % len(joined)] = value
            datagrams = [bytes(joined), *datagrams[1:]]
        try:
            flights.append(deliver(datagrams, peers[(len(flights) - 1) % 2], 0.0))
        except DtlsError:
            assert client.failed or server.failed
            return
    # the byte was unchanged, or the damaged record was dropped and the handshake waits
    assert (client.established and server.established) or not server.established


def test_close_during_the_handshake_stops_the_timers() -> None:
    client, _ = transports()
    client.start(0.0)
    assert client.close() == [] and client.timeout() is None and client.handle_timeout(50.0) == []


# -- interop: OpenSSL's command-line DTLS client and server, not written here ---------------


def openssl_peer(arguments: list[str], tmp_path: Path, peer_cert: DtlsCertificate) -> subprocess.Popen[bytes]:
    certificate, key = peer_cert.pem()
    (tmp_path / "cert.pem").write_bytes(certificate)
    (tmp_path / "key.pem").write_bytes(key)
    openssl = require_tool("openssl")
    return subprocess.Popen(
        [
            openssl,
            *arguments,
            "-dtls1_2",
            "-use_srtp",
            "SRTP_AES128_CM_SHA1_80",
            "-keymatexport",
            "EXTRACTOR-dtls_srtp",
            "-keymatexportlen",
            "60",
            "-cert",
            str(tmp_path / "cert.pem"),
            "-key",
            str(tmp_path / "key.pem"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def exported(output: bytes) -> str | None:
    """The keying material OpenSSL printed, in upper-case hex."""
    for line in output.decode(errors="replace").splitlines():
        if line.strip().startswith("Keying material:"):
            return line.split(":", 1)[1].strip().upper()
    return None


def pump(
    sock: socket.socket,
    process: subprocess.Popen[bytes],
    transport: DtlsTransport,
    address: tuple[str, int] | None,
) -> bytes:
    """Carry datagrams between ``sock`` and ``transport`` (and run its timer) until OpenSSL
    prints the exported keys and ours are there too; OpenSSL's output."""
    assert process.stdout is not None
    output = b""
    start = time.monotonic()
    if address is not None:
        for datagram in transport.start(time.monotonic()):
            sock.sendto(datagram, address)
    while time.monotonic() - start < 20:
        if exported(output) and transport.established:
            break
        ready, _, _ = select.select([sock, process.stdout], [], [], 0.05)
        now = time.monotonic()
        if sock in ready:
            datagram, address = sock.recvfrom(65536)
            for answer in transport.receive(datagram, now):
                sock.sendto(answer, address)
        if process.stdout in ready:
            chunk = process.stdout.read1(65536)
            if not chunk:
                break
            output += chunk
        deadline = transport.timeout()
        if address is not None and deadline is not None and now >= deadline:
            for answer in transport.handle_timeout(now):
                sock.sendto(answer, address)
    return output


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(timeout=10)
    if process.stdout is not None:
        process.stdout.close()
    if process.stdin is not None:
        process.stdin.close()


@pytest.mark.interop
def test_openssl_s_client_handshakes_with_our_server_and_exports_the_same_keys(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        server = DtlsTransport(
            SERVER_CERT,
            server=True,
            remote_fingerprints=[("sha-256", CLIENT_CERT.fingerprint())],
            now=time.monotonic(),
        )
        process = openssl_peer(["s_client", "-connect", f"127.0.0.1:{port}"], tmp_path, CLIENT_CERT)
        try:
            output = pump(sock, process, server, None)
        finally:
            stop(process)
    assert server.established, output.decode(errors="replace")[-2000:]
    keys = server.keys
    assert keys is not None and keys.profile == "SRTP_AES128_CM_SHA1_80"
    ours = (keys.remote_key + keys.local_key + keys.remote_salt + keys.local_salt).hex().upper()
    assert exported(output) == ours


@pytest.mark.interop
def test_our_client_handshakes_with_openssl_s_server_and_exports_the_same_keys(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = openssl_peer(
        ["s_server", "-accept", f"127.0.0.1:{port}", "-verify", "1", "-naccept", "1"], tmp_path, SERVER_CERT
    )
    try:
        client = DtlsTransport(
            CLIENT_CERT,
            server=False,
            remote_fingerprints=[("sha-256", SERVER_CERT.fingerprint())],
            now=time.monotonic(),
        )
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            time.sleep(0.3)  # s_server binds its port (our first flight is resent on our timer anyway)
            output = pump(sock, process, client, ("127.0.0.1", port))
    finally:
        stop(process)
    assert client.established, output.decode(errors="replace")[-2000:]
    keys = client.keys
    assert keys is not None and keys.profile == "SRTP_AES128_CM_SHA1_80"
    ours = (keys.local_key + keys.remote_key + keys.local_salt + keys.remote_salt).hex().upper()
    assert exported(output) == ours
