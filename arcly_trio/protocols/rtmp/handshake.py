"""The RTMP handshake, sans-IO: both sides, simple and digest ("complex") schemes.

An RTMP connection opens with a fixed-size exchange: the client sends C0 (one version byte, 3)
and C1 (1536 bytes), the server answers S0, S1 and S2 (S2 echoes C1), and the client ends with
C2 (which echoes S1). Every byte after C2 (after S2 on the client side) belongs to the chunk
stream; :meth:`ServerHandshake.leftover` hands those bytes over.

Two schemes are in use:

- **Simple** (the published RTMP specification): bytes 4..7 of C1/S1 are zero, the rest is
  random, and each side echoes the other's packet.
- **Digest** (Flash Player 9 and later; sent by FFmpeg's and librtmp/OBS's clients): bytes 4..7
  of C1 hold a non-zero client version and C1 carries a 32-byte HMAC-SHA256 digest, keyed by the
  "Genuine Adobe Flash Player 001" text, at an offset derived from four bytes of C1 itself
  (scheme 0: bytes 8..11, digest in 12..771; scheme 1: bytes 772..775, digest in 776..1535).
  The server answers with an S1 digested the same way under the "Genuine Adobe Flash Media
  Server 001" key, and an S2 whose last 32 bytes are an HMAC of its first 1504, keyed by the
  HMAC of the client's digest under the full server key. C2 mirrors this with the full client
  key and the server's digest.

Both classes are state machines fed with :meth:`receive_data` in any split; what they want to
send is collected by :meth:`data_to_send`. They buffer at most one handshake packet.

Error policy: a peer that breaks the handshake (C0/S0 version other than 3, including the
encrypted RTMPE versions 6 and 8; a client-side S1 that claims a digest it does not carry; an
S2 with a wrong digest) raises :class:`HandshakeError`, a ``RemoteProtocolError``; the object is
dead afterwards. The server never rejects a C1: a digest it cannot validate falls back to the
simple scheme, and C2 is consumed without validation (many clients send garbage there). Calling
methods out of order (feeding a completed or failed handshake, initiating twice, a
``random_bytes`` that returns the wrong length) raises ``LocalProtocolError``.
"""

from __future__ import annotations

import hmac
import os
import struct
from collections.abc import Callable
from typing import Final

from arcly_trio.core.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "HandshakeError",
    "ServerHandshake",
    "ClientHandshake",
    "RTMP_VERSION",
    "PACKET_SIZE",
]

#: The only protocol version byte (C0/S0) accepted: plain RTMP.
RTMP_VERSION: Final = 3
#: Size of C1, S1, C2 and S2.
PACKET_SIZE: Final = 1536

_DIGEST_SIZE: Final = 32
_RANDOM_ECHO_SIZE: Final = PACKET_SIZE - _DIGEST_SIZE  # the digested part of S2/C2

# 32 bytes shared by both keys, after their text part.
_KEY_TAIL: Final = bytes.fromhex("f0eec24a8068bee82e00d0d1029e7e576eec5d2d29806fab93b8e636cfeb31ae")
#: The client key: its 30-byte text part signs C1, the whole of it keys C2.
_CLIENT_KEY_TEXT: Final = b"Genuine Adobe Flash Player 001"
_CLIENT_KEY: Final = _CLIENT_KEY_TEXT + _KEY_TAIL
#: The server key: its 36-byte text part signs S1, the whole of it keys S2.
_SERVER_KEY_TEXT: Final = b"Genuine Adobe Flash Media Server 001"
_SERVER_KEY: Final = _SERVER_KEY_TEXT + _KEY_TAIL

#: Version we put in bytes 4..7 of a digest S1 (an FMS-like 5.0.3.1; clients only check > 0).
SERVER_VERSION: Final = 0x05000301
#: Version we put in bytes 4..7 of a digest C1 (Flash Player 9.0.124.2, as FFmpeg does).
CLIENT_VERSION: Final = 0x09007C02

_U32 = struct.Struct(">I")


class HandshakeError(RemoteProtocolError):
    """The peer's handshake bytes break the RTMP handshake."""


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.digest(key, message, "sha256")


def _digest_offset(packet: bytes | bytearray, scheme: int) -> int:
    """Where the 32-byte digest sits in a C1/S1 packet under ``scheme`` (0 or 1)."""
    base = 8 if scheme == 0 else 772
    return sum(packet[base : base + 4]) % 728 + base + 4


def _packet_digest(packet: bytes | bytearray, offset: int, key: bytes) -> bytes:
    """HMAC-SHA256 of ``packet`` without its digest bytes at ``offset``."""
    return _hmac(key, bytes(packet[:offset]) + bytes(packet[offset + _DIGEST_SIZE :]))


def _find_digest(packet: bytes | bytearray, key: bytes) -> tuple[int, bytes] | None:
    """Return ``(scheme, digest)`` if ``packet`` carries a valid digest under ``key``.

    Scheme 1 is tried first, then scheme 0, as FFmpeg and nginx-rtmp do.
    """
    for scheme in (1, 0):
        offset = _digest_offset(packet, scheme)
        expected = _packet_digest(packet, offset, key)
        found = bytes(packet[offset : offset + _DIGEST_SIZE])
        if hmac.compare_digest(expected, found):
            return scheme, found
    return None


def _sign_packet(packet: bytearray, scheme: int, key: bytes) -> bytes:
    """Write the digest of ``packet`` under ``key`` in place (scheme 0 or 1); return it."""
    offset = _digest_offset(packet, scheme)
    digest = _packet_digest(packet, offset, key)
    packet[offset : offset + _DIGEST_SIZE] = digest
    return digest


def _response_packet(peer_digest: bytes, full_key: bytes, random: bytes) -> bytes:
    """S2 (or C2) of the digest scheme: 1504 random bytes and their HMAC under the derived key."""
    derived = _hmac(full_key, peer_digest)
    return random + _hmac(derived, random)


def _take(buffer: bytearray) -> bytes:
    """Empty ``buffer`` and return what it held."""
    data = bytes(buffer)
    buffer.clear()
    return data


class _Random:
    """Checks what the injected random source returns (a wrong length is our caller's bug)."""

    __slots__ = ("_source",)

    def __init__(self, source: Callable[[int], bytes]) -> None:
        self._source = source

    def __call__(self, size: int) -> bytes:
        data = self._source(size)
        if not isinstance(data, (bytes, bytearray)) or len(data) != size:
            raise LocalProtocolError(f"random_bytes({size}) must return {size} bytes")
        return bytes(data)


def _check_epoch(epoch: int) -> int:
    if not 0 <= epoch <= 0xFFFFFFFF:
        raise LocalProtocolError(f"handshake epoch {epoch} does not fit 32 bits")
    return epoch


class ServerHandshake:
    """The server side: takes C0, C1, C2; sends S0, S1, S2.

    S0+S1+S2 are queued as soon as C0+C1 are in (without waiting for C2). A C1 with non-zero
    bytes 4..7 asks for the digest scheme: if its digest validates (scheme 1, then scheme 0),
    the answer is a digest S1/S2 using the client's scheme and :attr:`digest` is True;
    otherwise the answer is simple (S2 echoes C1). C2 is consumed unchecked. The handshake is
    :attr:`complete` once C2 is in; bytes after it are returned by :meth:`leftover`.

    ``random_bytes`` provides the random filler (``os.urandom`` by default; inject a
    deterministic one in tests); ``epoch`` is the time field of S1, in milliseconds.
    """

    def __init__(
        self,
        *,
        random_bytes: Callable[[int], bytes] = os.urandom,
        epoch: int = 0,
    ) -> None:
        self._random = _Random(random_bytes)
        self._epoch = _check_epoch(epoch)
        self._buffer = bytearray()
        self._outgoing = bytearray()
        self._leftover = bytearray()
        self._have_c1 = False
        self._complete = False
        self._failed = False
        self._digest = False
        self._peer_version = 0
        self._peer_epoch = 0

    @property
    def complete(self) -> bool:
        """True once C2 has been received (S0+S1+S2 were queued before)."""
        return self._complete

    @property
    def digest(self) -> bool:
        """True if the client's C1 carried a valid digest and we answered with the digest scheme."""
        return self._digest

    @property
    def peer_version(self) -> int:
        """The version field of C1 (bytes 4..7, big-endian); 0 for a simple client, or before C1."""
        return self._peer_version

    @property
    def peer_epoch(self) -> int:
        """The time field of C1 (bytes 0..3, big-endian); 0 before C1."""
        return self._peer_epoch

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Feed bytes from the client.

        Raises :class:`HandshakeError` if C0 is not version 3, ``LocalProtocolError`` if the
        handshake is complete (feed the chunk stream instead) or failed already.
        """
        if self._failed:
            raise LocalProtocolError("the handshake failed already")
        if self._complete:
            raise LocalProtocolError("the handshake is complete; feed the chunk stream instead")
        self._buffer += data
        if not self._have_c1:
            if self._buffer and self._buffer[0] != RTMP_VERSION:
                self._failed = True
                raise HandshakeError(f"unsupported RTMP version {self._buffer[0]} in C0 (only 3 is accepted)")
            if len(self._buffer) < 1 + PACKET_SIZE:
                return
            c1 = bytes(self._buffer[1 : 1 + PACKET_SIZE])
            del self._buffer[: 1 + PACKET_SIZE]
            self._have_c1 = True
            self._answer(c1)
        if len(self._buffer) >= PACKET_SIZE:
            # C2: consumed, not validated.
            self._leftover += self._buffer[PACKET_SIZE:]
            self._buffer = bytearray()
            self._complete = True

    def _answer(self, c1: bytes) -> None:
        self._peer_epoch, self._peer_version = struct.unpack_from(">II", c1)
        found = _find_digest(c1, _CLIENT_KEY_TEXT) if self._peer_version else None
        s1 = bytearray(_U32.pack(self._epoch))
        if found is None:
            s1 += bytes(4)
            s1 += self._random(PACKET_SIZE - 8)
            s2 = c1
        else:
            scheme, client_digest = found
            s1 += _U32.pack(SERVER_VERSION)
            s1 += self._random(PACKET_SIZE - 8)
            _sign_packet(s1, scheme, _SERVER_KEY_TEXT)
            s2 = _response_packet(client_digest, _SERVER_KEY, self._random(_RANDOM_ECHO_SIZE))
            self._digest = True
        self._outgoing.append(RTMP_VERSION)
        self._outgoing += s1
        self._outgoing += s2

    def data_to_send(self) -> bytes:
        """Return the bytes to send to the client now (S0+S1+S2 once C1 is in), and clear them."""
        return _take(self._outgoing)

    def leftover(self) -> bytes:
        """Return the bytes received after C2 (the start of the chunk stream), and clear them."""
        return _take(self._leftover)


class ClientHandshake:
    """The client side: sends C0, C1, C2; takes S0, S1, S2 (for tests and relays).

    :meth:`initiate` returns C0+C1. With ``digest=True`` (the default, as FFmpeg and OBS do)
    C1 carries a scheme-0 digest and a client version. When S0+S1 are in, C2 is queued for
    :meth:`data_to_send`: if we sent a digest and S1 has a non-zero version, S1 must carry a
    valid server digest (else :class:`HandshakeError`), C2 is the digest response, and S2 must
    carry the matching digest (else :class:`HandshakeError`); otherwise C2 echoes S1 and S2 is
    not checked. :attr:`complete` turns True once S2 is in; bytes after it are returned by
    :meth:`leftover`.
    """

    def __init__(
        self,
        *,
        digest: bool = True,
        random_bytes: Callable[[int], bytes] = os.urandom,
        epoch: int = 0,
    ) -> None:
        self._use_digest = digest
        self._random = _Random(random_bytes)
        self._epoch = _check_epoch(epoch)
        self._buffer = bytearray()
        self._outgoing = bytearray()
        self._leftover = bytearray()
        self._c1_digest: bytes | None = None
        self._initiated = False
        self._have_s1 = False
        self._server_digest: bytes | None = None
        self._complete = False
        self._failed = False
        self._peer_version = 0

    @property
    def complete(self) -> bool:
        """True once S2 has been received (C2 was queued before)."""
        return self._complete

    @property
    def digest(self) -> bool:
        """True if the server answered our digest C1 with a valid digest S1."""
        return self._server_digest is not None

    @property
    def peer_version(self) -> int:
        """The version field of S1 (bytes 4..7, big-endian); 0 for a simple server, or before S1."""
        return self._peer_version

    def initiate(self) -> bytes:
        """Return C0+C1, to send first. Raises ``LocalProtocolError`` if called twice."""
        if self._initiated:
            raise LocalProtocolError("the handshake was initiated already")
        self._initiated = True
        c1 = bytearray(_U32.pack(self._epoch))
        c1 += _U32.pack(CLIENT_VERSION if self._use_digest else 0)
        c1 += self._random(PACKET_SIZE - 8)
        if self._use_digest:
            self._c1_digest = _sign_packet(c1, 0, _CLIENT_KEY_TEXT)
        return bytes([RTMP_VERSION]) + bytes(c1)

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Feed bytes from the server.

        Raises :class:`HandshakeError` for a bad S0 version or a wrong digest;
        ``LocalProtocolError`` before :meth:`initiate`, after completion, or after a failure.
        """
        if not self._initiated:
            raise LocalProtocolError("initiate() the handshake before feeding it")
        if self._failed:
            raise LocalProtocolError("the handshake failed already")
        if self._complete:
            raise LocalProtocolError("the handshake is complete; feed the chunk stream instead")
        self._buffer += data
        try:
            if not self._have_s1:
                if self._buffer and self._buffer[0] != RTMP_VERSION:
                    raise HandshakeError(f"unsupported RTMP version {self._buffer[0]} in S0 (expected 3)")
                if len(self._buffer) < 1 + PACKET_SIZE:
                    return
                s1 = bytes(self._buffer[1 : 1 + PACKET_SIZE])
                del self._buffer[: 1 + PACKET_SIZE]
                self._have_s1 = True
                self._answer(s1)
            if len(self._buffer) >= PACKET_SIZE:
                s2 = bytes(self._buffer[:PACKET_SIZE])
                self._check_s2(s2)
                self._leftover += self._buffer[PACKET_SIZE:]
                self._buffer = bytearray()
                self._complete = True
        except HandshakeError:
            self._failed = True
            raise

    def _answer(self, s1: bytes) -> None:
        (self._peer_version,) = struct.unpack_from(">I", s1, 4)
        if self._c1_digest is not None and self._peer_version:
            found = _find_digest(s1, _SERVER_KEY_TEXT)
            if found is None:
                raise HandshakeError("S1 has a server version but no valid digest")
            self._server_digest = found[1]
            c2 = _response_packet(self._server_digest, _CLIENT_KEY, self._random(_RANDOM_ECHO_SIZE))
        else:
            c2 = s1
        self._outgoing += c2

    def _check_s2(self, s2: bytes) -> None:
        if self._server_digest is None or self._c1_digest is None:
            return  # simple scheme: S2 should echo C1, but servers are not held to it
        derived = _hmac(_SERVER_KEY, self._c1_digest)
        expected = _hmac(derived, s2[:_RANDOM_ECHO_SIZE])
        if not hmac.compare_digest(expected, s2[_RANDOM_ECHO_SIZE:]):
            raise HandshakeError("S2 digest does not match our C1 digest")

    def data_to_send(self) -> bytes:
        """Return the bytes to send to the server now (C2 once S1 is in), and clear them."""
        return _take(self._outgoing)

    def leftover(self) -> bytes:
        """Return the bytes received after S2 (the start of the chunk stream), and clear them."""
        return _take(self._leftover)
