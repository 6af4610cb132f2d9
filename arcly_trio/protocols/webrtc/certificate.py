"""The certificate a DTLS-SRTP association presents, and the fingerprints SDP carries.

WebRTC does not trust certificates through a chain: each side presents any (usually
self-signed) certificate in the DTLS handshake, and the SDP offer/answer carries its digest as
``a=fingerprint:sha-256 AB:CD:...``. The DTLS transport (:mod:`.dtls`) accepts whatever the
peer presents and then compares its digest with the fingerprints the peer's SDP announced.

* :class:`DtlsCertificate` holds a certificate and its private key as ``cryptography``
  objects (pyOpenSSL's ``Context`` takes them as they are). :meth:`DtlsCertificate.generate`
  makes a self-signed ECDSA P-256 certificate, as browsers do, at server start;
  :meth:`DtlsCertificate.from_files` reads the server's ``--tls-cert``/``--tls-key`` PEM files
  (RSA or EC keys). :meth:`DtlsCertificate.fingerprint` is our ``a=fingerprint`` value.
* :func:`peer_fingerprint` is the same digest of a peer certificate given in DER.

Attacker's view: nothing here reads peer input except :func:`peer_fingerprint`, which hashes
the DER bytes the TLS library already parsed (bounded by the DTLS record limits); the
algorithm name comes from SDP and is looked up in a fixed table, never passed to a
``getattr``-style factory.

Error policy: :func:`peer_fingerprint` and :meth:`DtlsCertificate.fingerprint` raise
:class:`FingerprintAlgorithmError` (a :class:`~arcly_trio.core.errors.RemoteProtocolError`:
the name comes from the peer's SDP) for a hash they do not know. :meth:`DtlsCertificate.from_files`
lets ``OSError`` through for unreadable files and raises ``ValueError`` for PEM that does not
hold a certificate or a supported private key (the operator's configuration, not the peer).
"""

from __future__ import annotations

import datetime
import hashlib
import os
from typing import Any, Final

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from arcly_trio.core.errors import RemoteProtocolError

__all__ = [
    "FINGERPRINT_ALGORITHMS",
    "DtlsCertificate",
    "FingerprintAlgorithmError",
    "PrivateKey",
    "format_fingerprint",
    "peer_fingerprint",
]

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

FINGERPRINT_ALGORITHMS: Final = {
    "sha-1": "sha1",
    "sha-224": "sha224",
    "sha-256": "sha256",
    "sha-384": "sha384",
    "sha-512": "sha512",
}
"""The hash function names of SDP ``a=fingerprint`` (RFC 8122, IANA "Hash Function Textual
Names"; MD5 and MD2 left out), mapped to ``hashlib``'s."""


class FingerprintAlgorithmError(RemoteProtocolError):
    """A fingerprint hash function this side does not know (the name came from SDP)."""


def format_fingerprint(digest: bytes) -> str:
    """``digest`` as SDP writes it: upper-case hex byte pairs joined by colons."""
    return ":".join(f"{byte:02X}" for byte in digest)


def peer_fingerprint(der: bytes, algorithm: str) -> str:
    """The ``a=fingerprint`` value of the DER certificate ``der`` under ``algorithm``
    (``"sha-256"``...; case-insensitive)."""
    name = FINGERPRINT_ALGORITHMS.get(algorithm.lower())
    if name is None:
        raise FingerprintAlgorithmError(f"unknown fingerprint hash function {algorithm[:32]!r}")
    return format_fingerprint(hashlib.new(name, der).digest())


@attrs.frozen
class DtlsCertificate:
    """A certificate and its private key, as the DTLS transport presents them."""

    certificate: x509.Certificate
    key: PrivateKey = attrs.field(repr=False, eq=False)  # the certificate names its key
    contexts: dict[Any, Any] = attrs.field(factory=dict, init=False, repr=False, eq=False)
    """The OpenSSL contexts that present this certificate, made once and shared by every
    association (:mod:`.dtls`: ~22 KB each), by what they were made for."""

    @property
    def der(self) -> bytes:
        """The certificate in DER, what the fingerprint hashes."""
        return self.certificate.public_bytes(serialization.Encoding.DER)

    def fingerprint(self, algorithm: str = "sha-256") -> str:
        """Our ``a=fingerprint`` value (``"AB:CD:..."``) under ``algorithm``."""
        return peer_fingerprint(self.der, algorithm)

    def pem(self) -> tuple[bytes, bytes]:
        """(certificate, unencrypted PKCS#8 private key) in PEM, e.g. for a test's external peer."""
        return (
            self.certificate.public_bytes(serialization.Encoding.PEM),
            self.key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
        )

    @classmethod
    def generate(cls, *, days: int = 30, common_name: str = "arcly-trio") -> DtlsCertificate:
        """A fresh self-signed ECDSA P-256 certificate valid from a day ago for ``days`` days
        (the day back absorbs a peer's clock skew)."""
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = datetime.datetime.now(datetime.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=days))
            .sign(key, hashes.SHA256())
        )
        return cls(certificate, key)

    @classmethod
    def from_files(cls, cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str]) -> DtlsCertificate:
        """The first certificate of the PEM file ``cert_path`` and the unencrypted PEM private
        key (RSA or EC, PKCS#8 or traditional) of ``key_path``."""
        with open(cert_path, "rb") as file:
            certificate = x509.load_pem_x509_certificate(file.read())
        with open(key_path, "rb") as file:
            try:
                key = serialization.load_pem_private_key(file.read(), password=None)
            except TypeError as error:  # an encrypted key
                raise ValueError(f"{os.fspath(key_path)}: {error}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise ValueError(f"{os.fspath(key_path)}: a DTLS key must be RSA or EC, not {type(key).__name__}")
        spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        if key.public_key().public_bytes(*spki) != certificate.public_key().public_bytes(*spki):
            raise ValueError(f"{os.fspath(key_path)} is not the key of {os.fspath(cert_path)}")
        return cls(certificate, key)
