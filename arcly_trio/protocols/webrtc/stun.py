"""STUN messages (RFC 8489, formerly 5389) as ICE-lite needs them: parse, check, build.

The first piece of the WebRTC core (issue 22): an ICE-lite server answers the binding requests
a browser or ffmpeg's WHIP muxer sends to its one UDP port, checking their short-term
credential (``MESSAGE-INTEGRITY``, HMAC-SHA1 keyed with the local ICE password) and their
``FINGERPRINT`` (CRC-32), and answering with ``XOR-MAPPED-ADDRESS``. Sans-IO like the RTMP
core: bytes in, a :class:`StunMessage` out; a message in, bytes out.

* :func:`is_stun` tells a STUN packet from DTLS, RTP and RTCP on the same port (RFC 7983: the
  first byte is 0-3).
* :func:`parse_stun` reads one datagram into a :class:`StunMessage`: its class, method,
  transaction id and attributes in order (unknown ones kept as bytes), each attribute's offset
  kept so that :meth:`StunMessage.integrity_ok` and :meth:`StunMessage.fingerprint_ok` check
  exactly the bytes the sender covered.
* :func:`build_stun` writes a message, with ``MESSAGE-INTEGRITY`` (given a key) and
  ``FINGERPRINT`` at the end; :func:`binding_success` is the ICE-lite answer to a request;
  :func:`xor_address` / :func:`parse_xor_address` encode and decode ``XOR-MAPPED-ADDRESS``.

Attacker's view: a datagram is read only up to :data:`MAX_MESSAGE` bytes and
:data:`MAX_ATTRIBUTES` attributes; the parser copies nothing it does not keep, allocates in
proportion to what was sent, and does no cryptography (checking is the caller's choice, after
matching the username to a session); an answer (:func:`binding_success`) is never larger than
a request that carries a username and both checks.

Error policy: :func:`parse_stun` raises :class:`StunError` (a
:class:`~arcly_trio.core.errors.RemoteProtocolError`) for anything that is not a well-formed
STUN message, saying what is wrong; it never raises anything else (fuzzed). The checks return
``False`` rather than raise. Building raises ``ValueError`` for values that cannot be encoded.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import struct
import zlib
from typing import Final

import attrs

from arcly_trio.core.errors import RemoteProtocolError

__all__ = [
    "MAGIC_COOKIE",
    "MAX_ATTRIBUTES",
    "MAX_MESSAGE",
    "BINDING",
    "REQUEST",
    "INDICATION",
    "SUCCESS",
    "ERROR",
    "MAPPED_ADDRESS",
    "USERNAME",
    "MESSAGE_INTEGRITY",
    "ERROR_CODE",
    "XOR_MAPPED_ADDRESS",
    "PRIORITY",
    "USE_CANDIDATE",
    "SOFTWARE",
    "FINGERPRINT",
    "ICE_CONTROLLED",
    "ICE_CONTROLLING",
    "StunError",
    "StunMessage",
    "is_stun",
    "parse_stun",
    "build_stun",
    "binding_success",
    "xor_address",
    "parse_xor_address",
]

MAGIC_COOKIE: Final = 0x2112A442
HEADER: Final = struct.Struct("!HHI12s")
MAX_MESSAGE: Final = 1500
"""The largest datagram read as STUN (ICE messages are about 100 bytes)."""
MAX_ATTRIBUTES: Final = 32
"""The most attributes read from one message."""

# The method and the class share the 14-bit message type (RFC 8489 section 5).
BINDING: Final = 0x001
REQUEST: Final = 0b00
INDICATION: Final = 0b01
SUCCESS: Final = 0b10
ERROR: Final = 0b11

MAPPED_ADDRESS: Final = 0x0001
USERNAME: Final = 0x0006
MESSAGE_INTEGRITY: Final = 0x0008
ERROR_CODE: Final = 0x0009
XOR_MAPPED_ADDRESS: Final = 0x0020
PRIORITY: Final = 0x0024
USE_CANDIDATE: Final = 0x0025
SOFTWARE: Final = 0x8022
FINGERPRINT: Final = 0x8028
ICE_CONTROLLED: Final = 0x8029
ICE_CONTROLLING: Final = 0x802A

_FINGERPRINT_XOR: Final = 0x5354554E
_INTEGRITY_SIZE: Final = 20
_FAMILY_IPV4: Final = 0x01
_FAMILY_IPV6: Final = 0x02


class StunError(RemoteProtocolError):
    """A datagram that is not a well-formed STUN message."""


@attrs.frozen
class StunMessage:
    """One STUN message: ``method`` (:data:`BINDING`...), ``cls`` (:data:`REQUEST`,
    :data:`INDICATION`, :data:`SUCCESS`, :data:`ERROR`), the 12-byte ``transaction_id`` and the
    ``attributes`` in the order sent, as ``(type, value)``. ``raw`` and ``offsets`` (where each
    attribute starts in ``raw``) are what the checks need."""

    method: int
    cls: int
    transaction_id: bytes
    attributes: tuple[tuple[int, bytes], ...]
    raw: bytes = attrs.field(repr=False, default=b"")
    offsets: tuple[int, ...] = attrs.field(repr=False, default=())

    def get(self, kind: int) -> bytes | None:
        """The value of the first attribute of type ``kind``, or ``None``."""
        for attribute, value in self.attributes:
            if attribute == kind:
                return value
        return None

    def has(self, kind: int) -> bool:
        return any(attribute == kind for attribute, _ in self.attributes)

    @property
    def username(self) -> str | None:
        """``USERNAME`` decoded (``None`` if absent or not UTF-8)."""
        value = self.get(USERNAME)
        try:
            return value.decode() if value is not None else None
        except UnicodeDecodeError:
            return None

    def _covered(self, kind: int) -> tuple[int, bytes] | None:
        """(offset, value) of the first attribute ``kind``."""
        for index, (attribute, value) in enumerate(self.attributes):
            if attribute == kind:
                return self.offsets[index], value
        return None

    def integrity_ok(self, key: bytes) -> bool:
        """Whether ``MESSAGE-INTEGRITY`` is there and is the HMAC-SHA1 with ``key`` of the
        message up to it (its length field counting the attribute, as the sender computed)."""
        found = self._covered(MESSAGE_INTEGRITY)
        if found is None or len(found[1]) != _INTEGRITY_SIZE:
            return False
        offset, value = found
        expected = hmac.new(key, _with_length(self.raw[:offset], offset + 4 + _INTEGRITY_SIZE), hashlib.sha1)
        return hmac.compare_digest(expected.digest(), value)

    def fingerprint_ok(self) -> bool:
        """Whether ``FINGERPRINT`` is there, last, and the CRC-32 of the message before it."""
        found = self._covered(FINGERPRINT)
        if found is None or len(found[1]) != 4 or self.attributes[-1][0] != FINGERPRINT:
            return False
        offset, value = found
        return struct.unpack("!I", value)[0] == _crc(_with_length(self.raw[:offset], offset + 8))


def is_stun(datagram: bytes) -> bool:
    """Whether ``datagram`` is STUN rather than DTLS, RTP or RTCP (RFC 7983), with the magic
    cookie where it belongs."""
    return len(datagram) >= HEADER.size and datagram[0] < 4 and datagram[4:8] == b"\x21\x12\xa4\x42"


def parse_stun(datagram: bytes) -> StunMessage:
    """One STUN message from one datagram (see the module docstring for the limits)."""
    if len(datagram) > MAX_MESSAGE:
        raise StunError(f"a STUN message of {len(datagram)} bytes is over {MAX_MESSAGE}")
    if len(datagram) < HEADER.size:
        raise StunError(f"a STUN message is at least {HEADER.size} bytes, not {len(datagram)}")
    kind, length, cookie, transaction_id = HEADER.unpack_from(datagram)
    if kind & 0xC000:
        raise StunError("not a STUN message (the first two bits are not zero)")
    if cookie != MAGIC_COOKIE:
        raise StunError("not a STUN message (no magic cookie)")
    if length % 4 or HEADER.size + length != len(datagram):
        raise StunError(f"a STUN message length of {length} does not match its {len(datagram)} bytes")
    method = (kind & 0x000F) | ((kind & 0x00E0) >> 1) | ((kind & 0x3E00) >> 2)
    cls = ((kind & 0x0010) >> 4) | ((kind & 0x0100) >> 7)
    attributes: list[tuple[int, bytes]] = []
    offsets: list[int] = []
    position = HEADER.size
    while position < len(datagram):
        if len(attributes) == MAX_ATTRIBUTES:
            raise StunError(f"a STUN message with over {MAX_ATTRIBUTES} attributes")
        if position + 4 > len(datagram):
            raise StunError("a STUN attribute header is cut short")
        attribute, size = struct.unpack_from("!HH", datagram, position)
        end = position + 4 + size
        if end > len(datagram):
            raise StunError(f"STUN attribute 0x{attribute:04x} of {size} bytes is cut short")
        attributes.append((attribute, datagram[position + 4 : end]))
        offsets.append(position)
        position = end + (-size % 4)
    if position != len(datagram):
        raise StunError("the last STUN attribute's padding is cut short")
    return StunMessage(method, cls, transaction_id, tuple(attributes), datagram, tuple(offsets))


def build_stun(
    method: int,
    cls: int,
    transaction_id: bytes,
    attributes: tuple[tuple[int, bytes], ...] | list[tuple[int, bytes]] = (),
    *,
    integrity_key: bytes | None = None,
    fingerprint: bool = True,
) -> bytes:
    """A STUN message; with ``integrity_key``, ``MESSAGE-INTEGRITY`` follows the attributes,
    and with ``fingerprint``, ``FINGERPRINT`` ends it (``ValueError`` for a method over 12
    bits, a class over 2, a transaction id that is not 12 bytes or an attribute over 65535)."""
    if not 0 <= method < 0x1000 or not 0 <= cls < 4 or len(transaction_id) != 12:
        raise ValueError("a STUN method is 12 bits, a class 2 and a transaction id 12 bytes")
    kind = (method & 0x000F) | ((method & 0x0070) << 1) | ((method & 0x0F80) << 2)
    kind |= ((cls & 1) << 4) | ((cls & 2) << 7)
    body = bytearray()
    for attribute, value in attributes:
        if len(value) > 0xFFFF:
            raise ValueError(f"STUN attribute 0x{attribute:04x} is over 65535 bytes")
        body += struct.pack("!HH", attribute, len(value)) + value + bytes(-len(value) % 4)
    message = bytearray(HEADER.pack(kind, len(body), MAGIC_COOKIE, transaction_id)) + body
    if integrity_key is not None:
        digest = hmac.new(integrity_key, _with_length(bytes(message), len(message) + 4 + _INTEGRITY_SIZE), hashlib.sha1)
        message += struct.pack("!HH", MESSAGE_INTEGRITY, _INTEGRITY_SIZE) + digest.digest()
    if fingerprint:
        crc = _crc(_with_length(bytes(message), len(message) + 8))
        message += struct.pack("!HHI", FINGERPRINT, 4, crc)
    return bytes(_with_length(bytes(message), len(message)))


def binding_success(request: StunMessage, peer: tuple[str, int], key: bytes) -> bytes:
    """The ICE-lite answer to a binding ``request`` from ``peer``: a success response with the
    same transaction id, ``XOR-MAPPED-ADDRESS`` of ``peer``, ``MESSAGE-INTEGRITY`` keyed with
    the local password ``key``, and ``FINGERPRINT``."""
    mapped = xor_address(peer[0], peer[1], request.transaction_id)
    return build_stun(BINDING, SUCCESS, request.transaction_id, [(XOR_MAPPED_ADDRESS, mapped)], integrity_key=key)


def xor_address(host: str, port: int, transaction_id: bytes) -> bytes:
    """The value of ``XOR-MAPPED-ADDRESS`` for ``host``:``port`` (``ValueError``: not an IP)."""
    address = ipaddress.ip_address(host)
    family = _FAMILY_IPV4 if address.version == 4 else _FAMILY_IPV6
    mask = struct.pack("!I", MAGIC_COOKIE) + (transaction_id if family == _FAMILY_IPV6 else b"")
    packed = bytes(a ^ b for a, b in zip(address.packed, mask, strict=True))
    return struct.pack("!BBH", 0, family, port ^ (MAGIC_COOKIE >> 16)) + packed


def parse_xor_address(value: bytes, transaction_id: bytes) -> tuple[str, int]:
    """``(host, port)`` from an ``XOR-MAPPED-ADDRESS`` value (:class:`StunError` if malformed)."""
    if len(value) not in (8, 20) or value[1] not in (_FAMILY_IPV4, _FAMILY_IPV6):
        raise StunError("a malformed XOR-MAPPED-ADDRESS")
    family = value[1]
    if (family == _FAMILY_IPV4) != (len(value) == 8):
        raise StunError("an XOR-MAPPED-ADDRESS whose length does not match its family")
    port = struct.unpack_from("!H", value, 2)[0] ^ (MAGIC_COOKIE >> 16)
    mask = struct.pack("!I", MAGIC_COOKIE) + (transaction_id if family == _FAMILY_IPV6 else b"")
    packed = bytes(a ^ b for a, b in zip(value[4:], mask, strict=True))
    return str(ipaddress.ip_address(packed)), port


def _with_length(header_and_body: bytes, total: int) -> bytes:
    """``header_and_body`` with its length field set as if the message were ``total`` bytes."""
    return header_and_body[:2] + struct.pack("!H", total - HEADER.size) + header_and_body[4:]


def _crc(data: bytes) -> int:
    return (zlib.crc32(data) ^ _FINGERPRINT_XOR) & 0xFFFFFFFF
