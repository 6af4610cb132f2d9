"""SRT encryption (passphrase, AES-CTR): the Key Material message, the key-encrypting key, the
stream keys and the payload cipher, sans-IO.

What it is for: an SRT session with a passphrase (``--srt-passphrase``, or one per stream from
the authorizer) encrypts the payload of every data packet with a random *stream encrypting key*
(SEK). The sender announces the SEK in a **Key Material** (KM) message, first in the handshake's
KMREQ extension (answered by a KMRSP echoing it), later as a KM refresh in a user-defined control
packet; the SEK travels wrapped under a *key encrypting key* (KEK) derived from the passphrase.
This module is that piece only; the handshake, the packet headers and the control packets are the
SRT core's. It imports nothing from trio.

How (the facts are those of draft-sharabayko-srt "Key Material" and "Encryption", and of
libsrt's haicrypt, which is what every peer runs):

- :class:`KeyMaterial`: the KM message. Sixteen header bytes (version 1, packet type 2, the
  signature ``0x2029`` ("HAI"), the key flags KK: 1 even, 2 odd, 3 both; the KEK index; cipher,
  authentication, stream encapsulation; salt and key lengths in 4-byte units), the 16-byte salt,
  then the wrapped keys: an 8-byte integrity check value and one or two SEKs (the even one first
  when both are there).
- :func:`derive_kek`: PBKDF2-HMAC-SHA1 of the passphrase, 2048 iterations, salted with the *last*
  8 bytes of the KM salt, as long as the SEK (16, 24 or 32 bytes).
- :func:`wrap_keys` / :func:`unwrap_keys`: AES key wrap (RFC 3394) of the SEKs under the KEK. The
  unwrap's integrity check is what tells a wrong passphrase.
- :class:`PayloadCipher`: AES-CTR of one payload under one SEK. The counter block is sixteen
  zero bytes, the packet index (the data packet's sequence number, big-endian) at bytes 10..13,
  bytes 0..13 XORed with the salt; bytes 14..15 count the cipher blocks of the packet from 0.
  Encryption and decryption are the same operation.
- :class:`SrtKeys`: what a session holds. The receiver builds it from the peer's KM
  (:meth:`SrtKeys.from_km`) and applies later KM refreshes (:meth:`SrtKeys.apply`); a data packet
  names the key it was encrypted with in its KK bits (1 even, 2 odd). The sender generates it
  (:meth:`SrtKeys.generate`): salt and even SEK at random, and rotates keys as libsrt does:
  :attr:`SrtKeys.refresh_rate` packets under one key, the next key announced
  :attr:`SrtKeys.pre_announce` packets before the switch (a KM carrying both keys), the old key
  withdrawn the same number of packets after it (a KM with the new key alone).
  :meth:`SrtKeys.take_key_material` hands the session each KM it must send. A listener that
  sends to its caller (playback) encrypts with :meth:`SrtKeys.for_sending` of the keys it
  received: in SRT the caller's KMREQ keys both directions (libsrt clones them).
- :func:`parse_kmrsp` / :func:`kmrsp_state`: a KMRSP is the KM echoed, or one 4-byte word with
  the :class:`KmState` that refuses it.

On the wire (measured with ffmpeg's libsrt 1.5.1 and 1.5.5) the KM is in network byte order as
:meth:`KeyMaterial.to_bytes` gives it, in the handshake's KMREQ/KMRSP extensions and in a KM
refresh (user-defined control packet, subtype 3) alike, although libsrt swaps the bytes of each
32-bit word of the stream ID extension. Every test of this module against libsrt passes both
ways: its keys unwrap, its packets decrypt across its key switches, and it decodes what
:meth:`SrtKeys.encrypt` made.

AES, the key wrap and PBKDF2 are the ``cryptography`` library's (OpenSSL); nothing here is
hand-written cryptography. One payload of 1316 bytes costs 10 to 17 µs (a cipher context per
packet, since every packet has its own counter block; generating the keystream with one ECB
context and XORing in Python was slower), about 0.2 s of a core per second for 50 publishers
of 4 Mbit/s.

Attacker's view: a KM message is parsed strictly and is small and bounded (at most
:data:`MAX_KM` bytes; exact length from its own fields; only the salt length libsrt uses and the
three AES key lengths), so it cannot make this side allocate or compute more than that. Deriving a
KEK costs a PBKDF2 of 2048 iterations (about a millisecond): it is done once per salt and kept, so
a peer repeating KM refreshes with the same salt costs one unwrap each, not a derivation; a peer
sending a new salt costs one derivation, at most :data:`MAX_DERIVATIONS` per session (libsrt keeps
one salt for the whole session), then :class:`SrtCryptoError`. The SRT core should still bound
KM refreshes per session and second (each costs an unwrap; libsrt sends one per key switch and
repeats it until answered). A wrong passphrase shows as the unwrap's integrity failure
(:class:`SrtBadSecret`), never as garbage keys. AES-CTR has no integrity: a tampered payload
decrypts to garbage that the MPEG-TS demuxer above must survive; this is SRT's design (libsrt
1.5.2's AES-GCM mode, cipher 4, is refused here: ffmpeg cannot ask for it).
Keys, the KEK and the passphrase never appear in ``repr`` or in error messages.

Error policy: bytes and values from the peer that cannot be used raise :class:`SrtCryptoError` (a
:class:`~arcly_trio.core.errors.RemoteProtocolError`): a malformed or unsupported KM, a packet
naming a key this side does not have; a KM whose keys do not unwrap under our passphrase raises
its subclass :class:`SrtBadSecret` (the session answers with the KM state
:attr:`KmState.BADSECRET` and refuses). Nothing else escapes :meth:`KeyMaterial.parse` (fuzzed).
Bad local settings (a passphrase outside 10..79 bytes, a key length that is not 16/24/32) raise
``ValueError``; :meth:`SrtKeys.encrypt` on receiving keys raises
:class:`~arcly_trio.core.errors.LocalProtocolError` (a bug in the caller).
"""

from __future__ import annotations

import enum
import os
import struct
from dataclasses import dataclass, field
from typing import Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from arcly_trio.core.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "DEFAULT_PRE_ANNOUNCE",
    "DEFAULT_REFRESH_RATE",
    "KEY_LENGTHS",
    "KM_HEADER",
    "KM_SIGN",
    "MAX_DERIVATIONS",
    "MAX_KM",
    "PASSPHRASE_MAX",
    "PASSPHRASE_MIN",
    "PBKDF2_ITERATIONS",
    "SALT_LEN",
    "WRAP_ICV_LEN",
    "CipherId",
    "KeyFlags",
    "KeyMaterial",
    "KmState",
    "PayloadCipher",
    "SrtBadSecret",
    "SrtCryptoError",
    "SrtKeys",
    "check_passphrase",
    "derive_kek",
    "encryption_field",
    "kmrsp_state",
    "parse_kmrsp",
    "key_length_of",
    "unwrap_keys",
    "wrap_keys",
]

KM_VERSION: Final = 1
"""The KM message version every libsrt sends."""
KM_PACKET_TYPE: Final = 2
"""Packet type "Keying Material" (1 is a media stream message, 7 is kept off for MPEG-TS)."""
KM_SIGN: Final = 0x2029
"""The KM signature: the PnP vendor ID "HAI" in 5-bit letters."""
KM_HEADER: Final = 16
"""Bytes of the KM header before the salt."""
SALT_LEN: Final = 16
"""The salt length: the only one libsrt sends (the counter block takes 14 bytes, PBKDF2 8)."""
WRAP_ICV_LEN: Final = 8
"""The AES key wrap integrity check value in front of the wrapped keys."""
KEY_LENGTHS: Final = (16, 24, 32)
"""AES-128, AES-192, AES-256 (SRT's ``pbkeylen``)."""
MAX_KM: Final = KM_HEADER + SALT_LEN + WRAP_ICV_LEN + 2 * max(KEY_LENGTHS)
"""The longest KM message (two AES-256 keys): 104 bytes."""
PBKDF2_ITERATIONS: Final = 2048
"""libsrt's PBKDF2 iteration count."""
PBKDF2_SALT_LEN: Final = 8
"""How many bytes of the KM salt (its last ones) salt PBKDF2."""
PASSPHRASE_MIN: Final = 10
"""The shortest passphrase libsrt accepts (``SRTO_PASSPHRASE``)."""
PASSPHRASE_MAX: Final = 79
"""The longest passphrase libsrt accepts."""
DEFAULT_REFRESH_RATE: Final = 0x1000000
"""Packets sent under one SEK before the sender switches keys (libsrt's ``SRTO_KMREFRESHRATE``)."""
DEFAULT_PRE_ANNOUNCE: Final = 0x10000
"""Packets before a switch that the next key is announced, and after it that the old one is
withdrawn (libsrt's ``SRTO_KMPREANNOUNCE`` as SRT sets it)."""
MAX_DERIVATIONS: Final = 4
"""The most KEK derivations (a new salt or key length in a KM) one :class:`SrtKeys` makes for a
peer: libsrt keeps its salt for a whole session, so one is the rule."""
STREAM_ENCAPSULATION_SRT: Final = 2
"""Stream encapsulation "MPEG-TS over SRT" (1 is "over UDP"); libsrt sends 2."""

_HEADER = struct.Struct(">B H B I B B B B H B B")


class SrtCryptoError(RemoteProtocolError):
    """Key material or an encrypted packet from the peer that cannot be used."""


class SrtBadSecret(SrtCryptoError):
    """The peer's keys do not unwrap under our passphrase: the passphrases differ."""


class KeyFlags(enum.IntEnum):
    """Which stream key(s): the KK bits of a KM message and of an encrypted data packet."""

    EVEN = 1
    ODD = 2
    BOTH = 3


class CipherId(enum.IntEnum):
    """The KM's cipher field."""

    NONE = 0
    AES_ECB = 1
    AES_CTR = 2
    AES_CBC = 3
    AES_GCM = 4


_CIPHERS: Final = frozenset(c.value for c in CipherId if c is not CipherId.NONE)


class KmState(enum.IntEnum):
    """libsrt's ``SRT_KM_STATE``: what a KMRSP carries instead of the KM when keying failed (a
    4-byte KMRSP), and what a session reports."""

    UNSECURED = 0
    SECURING = 1
    SECURED = 2
    NOSECRET = 3
    BADSECRET = 4
    BADCRYPTOMODE = 5


_KM_STATES: Final = frozenset(state.value for state in KmState)


def parse_kmrsp(data: bytes) -> KeyMaterial | KmState:
    """A KMRSP's body: the KM echoed (keying worked) or, in one 4-byte word, the
    :class:`KmState` saying why not (``NOSECRET``, ``BADSECRET``);
    :class:`SrtCryptoError` for anything else."""
    if len(data) == 4:
        value = int.from_bytes(data, "big")
        if value not in _KM_STATES:
            raise SrtCryptoError(f"KMRSP with unknown KM state {value}")
        return KmState(value)
    return KeyMaterial.parse(data)


def kmrsp_state(state: KmState) -> bytes:
    """The body of a KMRSP that refuses with ``state`` (one 4-byte word)."""
    return int(state).to_bytes(4, "big")


def encryption_field(key_len: int) -> int:
    """The handshake's encryption field for SEKs of ``key_len`` bytes (2, 3, 4 for AES-128,
    -192, -256; 0 for none)."""
    if key_len == 0:
        return 0
    _check_key_len(key_len)
    return key_len // 8


def key_length_of(field_value: int) -> int:
    """The SEK length a handshake's encryption field asks for (0: no preference); raises
    :class:`SrtCryptoError` for a value that names no AES key length."""
    if field_value == 0:
        return 0
    if field_value not in (2, 3, 4):
        raise SrtCryptoError(f"handshake encryption field {field_value} names no AES key length")
    return field_value * 8


def _check_key_len(key_len: int) -> None:
    if key_len not in KEY_LENGTHS:
        raise ValueError(f"an SRT key is 16, 24 or 32 bytes, not {key_len}")


def check_passphrase(passphrase: bytes) -> None:
    """Raise ``ValueError`` for a passphrase libsrt would refuse (not 10..79 bytes)."""
    if not PASSPHRASE_MIN <= len(passphrase) <= PASSPHRASE_MAX:
        raise ValueError(f"an SRT passphrase is {PASSPHRASE_MIN} to {PASSPHRASE_MAX} bytes, not {len(passphrase)}")


@dataclass(frozen=True, slots=True)
class KeyMaterial:
    """One Key Material message (the body of a KMREQ/KMRSP extension or a KM refresh).

    ``wrapped`` is the key wrap's output: the 8-byte integrity check value and one SEK (``kk`` 1
    or 2) or two (``kk`` 3, even first), each ``key_len`` bytes, all encrypted under the KEK.
    """

    kk: int
    salt: bytes
    key_len: int
    wrapped: bytes
    keki: int = 0
    cipher: int = CipherId.AES_CTR
    auth: int = 0
    se: int = STREAM_ENCAPSULATION_SRT
    version: int = KM_VERSION
    packet_type: int = KM_PACKET_TYPE
    sign: int = KM_SIGN

    def __post_init__(self) -> None:
        if self.kk not in (1, 2, 3) or self.key_len not in KEY_LENGTHS or len(self.salt) != SALT_LEN:
            raise ValueError("a KM has key flags 1..3, a 16-byte salt and a 16/24/32-byte key length")
        if len(self.wrapped) != WRAP_ICV_LEN + self.key_count * self.key_len:
            raise ValueError(f"{len(self.wrapped)} wrapped bytes do not hold {self.key_count} key(s)")

    @property
    def key_count(self) -> int:
        """How many SEKs the message carries (1 or 2)."""
        return 2 if self.kk == KeyFlags.BOTH else 1

    @classmethod
    def parse(cls, data: bytes) -> KeyMaterial:
        """Parse one KM message, strictly; :class:`SrtCryptoError` for anything else.

        The reserved bits are ignored (the draft asks senders to zero them)."""
        if not KM_HEADER <= len(data) <= MAX_KM:
            raise SrtCryptoError(f"a KM message of {len(data)} bytes (16..{MAX_KM})")
        (first, sign, flags, keki, cipher, auth, se, _resv1, _resv2, slen4, klen4) = _HEADER.unpack_from(data)
        if first & 0x80:
            raise SrtCryptoError("KM message with the S bit set")
        version, packet_type = first >> 4, first & 0x0F
        if version != KM_VERSION or packet_type != KM_PACKET_TYPE or sign != KM_SIGN:
            raise SrtCryptoError(f"not a KM message (version {version}, packet type {packet_type}, sign {sign:#06x})")
        kk = flags & 0x03
        if kk == 0:
            raise SrtCryptoError("KM message with no key")
        if cipher not in _CIPHERS:
            raise SrtCryptoError(f"KM message with unknown cipher {cipher}")
        if auth not in (0, 1) or se not in (1, 2):
            raise SrtCryptoError(f"KM message with authentication {auth}, stream encapsulation {se}")
        salt_len, key_len = slen4 * 4, klen4 * 4
        if salt_len != SALT_LEN or key_len not in KEY_LENGTHS:
            raise SrtCryptoError(f"KM message with a {salt_len}-byte salt and {key_len}-byte keys")
        count = 2 if kk == KeyFlags.BOTH else 1
        expected = KM_HEADER + SALT_LEN + WRAP_ICV_LEN + count * key_len
        if len(data) != expected:
            raise SrtCryptoError(f"KM message of {len(data)} bytes, its fields say {expected}")
        salt = bytes(data[KM_HEADER : KM_HEADER + SALT_LEN])
        wrapped = bytes(data[KM_HEADER + SALT_LEN : expected])
        return cls(kk, salt, key_len, wrapped, keki, cipher, auth, se)

    def to_bytes(self) -> bytes:
        """The message as it goes on the wire (in network byte order, as haicrypt builds it)."""
        header = _HEADER.pack(
            (self.version << 4) | self.packet_type,
            self.sign,
            self.kk,
            self.keki,
            self.cipher,
            self.auth,
            self.se,
            0,
            0,
            SALT_LEN // 4,
            self.key_len // 4,
        )
        return header + self.salt + self.wrapped


def derive_kek(passphrase: bytes, salt: bytes, key_len: int) -> bytes:
    """The key encrypting key: PBKDF2-HMAC-SHA1 of ``passphrase``, 2048 iterations, salted with
    the last 8 bytes of the 16-byte KM ``salt``, ``key_len`` bytes long."""
    check_passphrase(passphrase)
    _check_key_len(key_len)
    if len(salt) != SALT_LEN:
        raise ValueError(f"an SRT salt is {SALT_LEN} bytes, not {len(salt)}")
    kdf = PBKDF2HMAC(
        algorithm=hashes.SHA1(),  # noqa: S303 - SRT's key derivation is PBKDF2-HMAC-SHA1
        length=key_len,
        salt=salt[-PBKDF2_SALT_LEN:],
        iterations=PBKDF2_ITERATIONS,
    )
    return kdf.derive(passphrase)


def wrap_keys(kek: bytes, keys: bytes) -> bytes:
    """AES key wrap (RFC 3394) of ``keys`` (one SEK, or the even and the odd one) under ``kek``:
    8 bytes longer than ``keys``."""
    return aes_key_wrap(kek, keys)


def unwrap_keys(kek: bytes, wrapped: bytes) -> bytes:
    """The keys :func:`wrap_keys` wrapped; :class:`SrtBadSecret` when the integrity check fails
    (the KEK, hence the passphrase, is not the sender's)."""
    try:
        return aes_key_unwrap(kek, wrapped)
    except InvalidUnwrap:
        raise SrtBadSecret("the key material does not unwrap: wrong passphrase") from None
    except ValueError as error:
        raise SrtCryptoError(f"wrapped keys of {len(wrapped)} bytes cannot be unwrapped: {error}") from None


class PayloadCipher:
    """AES-CTR of SRT data packet payloads under one stream key and salt."""

    __slots__ = ("_aes", "_nonce")

    def __init__(self, key: bytes, salt: bytes) -> None:
        _check_key_len(len(key))
        if len(salt) != SALT_LEN:
            raise ValueError(f"an SRT salt is {SALT_LEN} bytes, not {len(salt)}")
        self._aes = algorithms.AES(key)
        # bytes 0..13 of the counter block come from the salt; 14..15 are the block counter
        self._nonce = int.from_bytes(salt[:14], "big")

    def __repr__(self) -> str:
        return "PayloadCipher(<key hidden>)"

    def counter_block(self, packet_index: int) -> bytes:
        """The first counter block of packet ``packet_index`` (its sequence number)."""
        return ((self._nonce ^ (packet_index & 0xFFFFFFFF)) << 16).to_bytes(16, "big")

    def crypt(self, packet_index: int, payload: bytes) -> bytes:
        """Encrypt or decrypt (the same thing) the payload of packet ``packet_index``."""
        encryptor = Cipher(self._aes, modes.CTR(self.counter_block(packet_index))).encryptor()
        # CTR's finalize adds nothing; skipping it saves a call per packet
        return encryptor.update(payload)


@dataclass(slots=True)
class _Key:
    sek: bytes
    cipher: PayloadCipher


@dataclass(slots=True, repr=False)
class SrtKeys:
    """The stream keys of one SRT session, with the KM that announces them.

    Build it with :meth:`from_km` (receiving side) or :meth:`generate` (sending side). Each
    direction of a session has its own: in SRT (HSv5) the caller's KMREQ keys both directions,
    so a listener that also sends (playback to a caller) encrypts with
    :meth:`for_sending` of the keys it received, as libsrt clones them; from then on each side
    rotates its own sending keys and announces them in KM refreshes.
    """

    passphrase: bytes
    salt: bytes
    key_len: int
    refresh_rate: int = DEFAULT_REFRESH_RATE
    pre_announce: int = DEFAULT_PRE_ANNOUNCE
    _kek: bytes = b""
    _keys: dict[int, _Key] = field(default_factory=dict)
    _active: int = KeyFlags.EVEN
    _sent: int = 0
    _announced: KeyMaterial | None = None
    _pending: KeyMaterial | None = None
    _last_km: bytes = b""
    _derivations: int = 0
    _sending: bool = False

    def __repr__(self) -> str:
        return f"SrtKeys(key_len={self.key_len}, keys={sorted(self._keys)}, active={self._active})"

    # -- receiving side

    @classmethod
    def from_km(cls, km: KeyMaterial, passphrase: bytes) -> SrtKeys:
        """The keys a peer's KM announces, unwrapped with ``passphrase``; :class:`SrtBadSecret`
        for a wrong passphrase, :class:`SrtCryptoError` for a KM this side cannot use,
        ``ValueError`` for a passphrase of a bad length."""
        check_passphrase(passphrase)
        keys = cls(passphrase, km.salt, km.key_len)
        keys.apply(km)
        return keys

    def apply(self, km: KeyMaterial) -> None:
        """Take the keys of a KM refresh from the peer (the same passphrase); the keys it does
        not carry stay as they were. A KM equal to the last one applied costs nothing."""
        if km.cipher != CipherId.AES_CTR or km.auth != 0:
            raise SrtCryptoError(f"KM with cipher {km.cipher}, authentication {km.auth}: only AES-CTR is supported")
        if km.keki != 0:
            raise SrtCryptoError(f"KM for KEK index {km.keki}: only the passphrase's KEK (0) is supported")
        encoded = km.to_bytes()
        if encoded == self._last_km:
            return
        if not self._kek or km.salt != self.salt or km.key_len != self.key_len:
            if self._derivations >= MAX_DERIVATIONS:
                raise SrtCryptoError(f"the peer changed the KM salt more than {MAX_DERIVATIONS} times")
            self._derivations += 1
            kek = derive_kek(self.passphrase, km.salt, km.key_len)
        else:
            kek = self._kek
        seks = unwrap_keys(kek, km.wrapped)
        self._kek, self.salt, self.key_len = kek, km.salt, km.key_len
        if km.key_count == 2:
            found = {KeyFlags.EVEN: seks[: km.key_len], KeyFlags.ODD: seks[km.key_len :]}
        else:
            found = {km.kk: seks}
        for kk, sek in found.items():
            current = self._keys.get(kk)
            if current is None or current.sek != sek:
                self._keys[kk] = _Key(sek, PayloadCipher(sek, km.salt))
        self._last_km = encoded

    def decrypt(self, kk: int, packet_index: int, payload: bytes) -> bytes:
        """The plain payload of a data packet whose KK bits are ``kk`` (1 even, 2 odd);
        :class:`SrtCryptoError` when this side has no such key."""
        key = self._keys.get(kk)
        if key is None:
            raise SrtCryptoError(f"data packet encrypted with the {_name(kk)} key, which was never announced")
        return key.cipher.crypt(packet_index, payload)

    # -- sending side

    @classmethod
    def generate(
        cls,
        passphrase: bytes,
        key_len: int,
        *,
        refresh_rate: int = DEFAULT_REFRESH_RATE,
        pre_announce: int = DEFAULT_PRE_ANNOUNCE,
    ) -> tuple[SrtKeys, KeyMaterial]:
        """A random salt and even SEK under ``passphrase``, and the KM announcing them (for
        the KMREQ). ``refresh_rate`` packets go under one key; the next is announced
        ``pre_announce`` packets before the switch."""
        check_passphrase(passphrase)
        _check_key_len(key_len)
        if not 0 < pre_announce <= (refresh_rate - 1) // 2:
            raise ValueError("0 < pre_announce <= (refresh_rate - 1) / 2, as libsrt requires")
        salt = os.urandom(SALT_LEN)
        keys = cls(passphrase, salt, key_len, refresh_rate, pre_announce)
        keys._kek = derive_kek(passphrase, salt, key_len)
        sek = os.urandom(key_len)
        keys._keys[KeyFlags.EVEN] = _Key(sek, PayloadCipher(sek, salt))
        keys._sending = True
        km = keys._km(KeyFlags.EVEN)
        keys._announced = km
        return keys, km

    def for_sending(
        self, *, refresh_rate: int = DEFAULT_REFRESH_RATE, pre_announce: int = DEFAULT_PRE_ANNOUNCE
    ) -> SrtKeys:
        """Sending keys that start with the key and salt received here (the even key, else the
        odd one), as a listener sends to the caller whose KMREQ it took; they rotate on their
        own. Its :attr:`key_material` is then the KM that announces that key."""
        if not 0 < pre_announce <= (refresh_rate - 1) // 2:
            raise ValueError("0 < pre_announce <= (refresh_rate - 1) / 2, as libsrt requires")
        kk = KeyFlags.EVEN if KeyFlags.EVEN in self._keys else KeyFlags.ODD
        if kk not in self._keys:
            raise LocalProtocolError("SrtKeys.for_sending before any key was received")
        keys = SrtKeys(self.passphrase, self.salt, self.key_len, refresh_rate, pre_announce, self._kek)
        keys._keys[kk] = self._keys[kk]
        keys._active = kk
        keys._sending = True
        keys._announced = keys._km(kk)
        return keys

    @property
    def key_material(self) -> KeyMaterial | None:
        """The KM the peer needs now (to resend until it answers); None on a receiving side."""
        return self._announced

    def take_key_material(self) -> KeyMaterial | None:
        """A new KM to send the peer as a KM refresh (once), or None: the next key before a
        switch, the active key alone once the old one is withdrawn."""
        pending, self._pending = self._pending, None
        return pending

    def encrypt(self, packet_index: int, payload: bytes) -> tuple[int, bytes]:
        """Encrypt the payload of the data packet ``packet_index`` with the active key:
        ``(kk, data)``, ``kk`` for the packet's KK bits. Counts the packet toward a key switch,
        so call it once per packet: a retransmission resends the bytes (and KK) it gave, as
        libsrt keeps packets encrypted in its send buffer."""
        if not self._sending:
            raise LocalProtocolError("SrtKeys.encrypt on receiving keys (see for_sending)")
        self._sent += 1
        if self._sent > self.refresh_rate:
            self._switch()
        elif self._sent == self.refresh_rate - self.pre_announce + 1:
            self._pre_announce()
        elif self._sent == self.pre_announce + 1 and len(self._keys) == 2 and self._announced is not None:
            if self._announced.kk == KeyFlags.BOTH:
                self._withdraw()
        key = self._keys[self._active]
        return int(self._active), key.cipher.crypt(packet_index, payload)

    def _km(self, kk: int) -> KeyMaterial:
        if kk == KeyFlags.BOTH:
            seks = self._keys[KeyFlags.EVEN].sek + self._keys[KeyFlags.ODD].sek
        else:
            seks = self._keys[kk].sek
        return KeyMaterial(kk, self.salt, self.key_len, wrap_keys(self._kek, seks))

    def _pre_announce(self) -> None:
        # a new SEK for the other parity, same salt and KEK (as libsrt's refresh), announced
        # together with the active one
        other = KeyFlags.ODD if self._active == KeyFlags.EVEN else KeyFlags.EVEN
        sek = os.urandom(self.key_len)
        self._keys[other] = _Key(sek, PayloadCipher(sek, self.salt))
        self._announce(self._km(KeyFlags.BOTH))

    def _switch(self) -> None:
        self._active = KeyFlags.ODD if self._active == KeyFlags.EVEN else KeyFlags.EVEN
        self._sent = 1

    def _withdraw(self) -> None:
        old = KeyFlags.ODD if self._active == KeyFlags.EVEN else KeyFlags.EVEN
        del self._keys[old]
        self._announce(self._km(self._active))

    def _announce(self, km: KeyMaterial) -> None:
        self._announced = km
        self._pending = km

    @property
    def active(self) -> int:
        """The KK value of the key :meth:`encrypt` uses now."""
        return int(self._active)

    def has_key(self, kk: int) -> bool:
        """Whether this side holds the ``kk`` key (1 even, 2 odd)."""
        return kk in self._keys


def _name(kk: int) -> str:
    return {1: "even", 2: "odd"}.get(kk, f"KK={kk}")
