"""DTLS certificates and SDP fingerprints (arcly_trio.protocols.webrtc.certificate): the
FIPS 180 "abc" digests in SDP's spelling, a generated ECDSA P-256 self-signed certificate,
RSA and EC PEM files read back, and ``openssl x509 -fingerprint`` agreeing with ours (interop)."""

from __future__ import annotations

import datetime
import re
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from arcly_trio.protocols.webrtc.certificate import (
    FINGERPRINT_ALGORITHMS,
    DtlsCertificate,
    FingerprintAlgorithmError,
    format_fingerprint,
    peer_fingerprint,
)
from arcly_trio.protocols.webrtc.dtls import DtlsTransport
from tests._tools import require_tool

FINGERPRINT = re.compile(r"^[0-9A-F]{2}(:[0-9A-F]{2})*$")


def test_the_fips_180_abc_digests_in_sdp_spelling() -> None:
    assert peer_fingerprint(b"abc", "sha-256") == format_fingerprint(
        bytes.fromhex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    )
    assert peer_fingerprint(b"abc", "SHA-1") == "A9:99:3E:36:47:06:81:6A:BA:3E:25:71:78:50:C2:6C:9C:D0:D8:9D"


def test_an_unknown_hash_function_is_a_fingerprint_algorithm_error() -> None:
    with pytest.raises(FingerprintAlgorithmError):
        peer_fingerprint(b"abc", "md5")
    with pytest.raises(FingerprintAlgorithmError):
        DtlsCertificate.generate().fingerprint("sha3-256")


def test_a_generated_certificate_is_self_signed_ecdsa_p256_valid_now() -> None:
    certificate = DtlsCertificate.generate(days=7, common_name="unit")
    assert isinstance(certificate.key, ec.EllipticCurvePrivateKey)
    assert isinstance(certificate.key.curve, ec.SECP256R1)
    cert = certificate.certificate
    assert cert.subject == cert.issuer
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "unit"
    cert.verify_directly_issued_by(cert)  # the signature checks with its own key
    now = datetime.datetime.now(datetime.UTC)
    assert cert.not_valid_before_utc < now < cert.not_valid_after_utc
    assert cert.not_valid_after_utc - now < datetime.timedelta(days=7, minutes=1)
    fingerprint = certificate.fingerprint()
    assert FINGERPRINT.match(fingerprint) and len(fingerprint) == 32 * 3 - 1
    assert fingerprint == format_fingerprint(cert.fingerprint(hashes.SHA256()))
    assert DtlsCertificate.generate().fingerprint() != fingerprint
    assert "key=" not in repr(certificate)  # the private key stays out of logs


@given(digest=st.binary(min_size=1, max_size=64))
def test_format_fingerprint_round_trips(digest: bytes) -> None:
    text = format_fingerprint(digest)
    assert FINGERPRINT.match(text)
    assert bytes.fromhex(text.replace(":", "")) == digest


def write_pem(tmp_path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> tuple[Path, Path]:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "server")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_pem_files_are_read_with_rsa_or_ec_keys(tmp_path: Path, kind: str) -> None:
    key = rsa.generate_private_key(65537, 2048) if kind == "rsa" else ec.generate_private_key(ec.SECP384R1())
    cert_path, key_path = write_pem(tmp_path, key)
    certificate = DtlsCertificate.from_files(cert_path, key_path)
    assert certificate.fingerprint() == format_fingerprint(certificate.certificate.fingerprint(hashes.SHA256()))
    assert DtlsCertificate.from_files(str(cert_path), str(key_path)) == certificate
    # and a DTLS server presents it
    client_cert = DtlsCertificate.generate()
    server = DtlsTransport(
        certificate, server=True, remote_fingerprints=[("sha-256", client_cert.fingerprint())], now=0.0
    )
    client = DtlsTransport(
        client_cert, server=False, remote_fingerprints=[("sha-256", certificate.fingerprint())], now=0.0
    )
    flight = client.start(0.0)
    for peer in [server, client, server, client]:
        flight = [answer for datagram in flight for answer in peer.receive(datagram, 0.0)]
    assert client.established and server.established


def test_a_key_that_is_not_the_certificates_is_refused(tmp_path: Path) -> None:
    cert_path, _ = write_pem(tmp_path, ec.generate_private_key(ec.SECP256R1()))
    other = tmp_path / "other.pem"
    other.write_bytes(DtlsCertificate.generate().pem()[1])
    with pytest.raises(ValueError, match="not the key"):
        DtlsCertificate.from_files(cert_path, other)
    with pytest.raises(ValueError):
        DtlsCertificate.from_files(other, other)  # a key is no certificate
    encrypted = tmp_path / "encrypted.pem"
    encrypted.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(ValueError, match="encrypted"):
        DtlsCertificate.from_files(cert_path, encrypted)
    with pytest.raises(ValueError, match="RSA or EC"):
        ed25519_key = tmp_path / "ed25519.pem"
        ed25519_key.write_bytes(
            ed25519.Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        DtlsCertificate.from_files(cert_path, ed25519_key)


def test_the_pem_of_a_generated_certificate_reads_back(tmp_path: Path) -> None:
    certificate = DtlsCertificate.generate()
    cert_pem, key_pem = certificate.pem()
    (tmp_path / "c.pem").write_bytes(cert_pem)
    (tmp_path / "k.pem").write_bytes(key_pem)
    again = DtlsCertificate.from_files(tmp_path / "c.pem", tmp_path / "k.pem")
    assert again.fingerprint("sha-512") == certificate.fingerprint("sha-512")
    assert set(FINGERPRINT_ALGORITHMS) >= {"sha-1", "sha-256", "sha-384", "sha-512"}


@pytest.mark.interop
@pytest.mark.parametrize(("algorithm", "flag"), [("sha-256", "-sha256"), ("sha-1", "-sha1")])
def test_openssl_x509_prints_the_same_fingerprint(tmp_path: Path, algorithm: str, flag: str) -> None:
    openssl = require_tool("openssl")
    certificate = DtlsCertificate.generate()
    (tmp_path / "c.pem").write_bytes(certificate.pem()[0])
    result = subprocess.run(
        [openssl, "x509", "-in", str(tmp_path / "c.pem"), "-noout", "-fingerprint", flag],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert result.stdout.strip().split("=", 1)[1] == certificate.fingerprint(algorithm)
