"""SRT encryption (arcly_trio.protocols.srt.crypto): AES key wrap against RFC 3394's vectors;
the KEK against an independent PBKDF2 (hashlib) salted with the KM salt's last 8 bytes; the
counter block against the draft's layout; Key Material round trips, strict rejections and
fuzzing; stream keys that round trip, refuse a wrong passphrase and rotate even/odd as libsrt
does. Against libsrt: a KM and an encrypted data packet that ffmpeg 5.1 (libsrt 1.5.1) made are
unwrapped and decrypted (a stored vector), and live, ffmpeg as an SRT caller with a passphrase
connects to a tiny listener here that does just enough of the handshake to get its KMREQ and
its data packets: they decrypt to MPEG-TS, across libsrt's own key switches (ffmpeg 8, libsrt
1.5.5); and ffmpeg as a player decodes what that listener sends encrypted with the caller's
keys (:meth:`SrtKeys.for_sending`)."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from arcly_trio.core.errors import LocalProtocolError
from arcly_trio.protocols.srt import crypto
from arcly_trio.protocols.srt.crypto import (
    MAX_DERIVATIONS,
    MAX_KM,
    CipherId,
    KeyFlags,
    KeyMaterial,
    KmState,
    PayloadCipher,
    SrtBadSecret,
    SrtCryptoError,
    SrtKeys,
    check_passphrase,
    derive_kek,
    encryption_field,
    key_length_of,
    kmrsp_state,
    parse_kmrsp,
    unwrap_keys,
    wrap_keys,
)
from tests._ffmpeg import Player, run_tool
from tests._tools import require_ffmpeg8, require_tool

PASSPHRASE = b"correct-horse-battery"

# A KM (AES-256) and the start of the first data packet that ffmpeg 5.1 (libsrt 1.5.1) sent with
# passphrase=correct-horse-battery&pbkeylen=32; the payload begins with ffmpeg's SDT packet.
LIBSRT_KM = bytes.fromhex(
    "12202901000000000200020000000408cf4e725bf6759cd30170d6867b13ac33c80c4cb89bbfea7f5554d4a8a9c2"
    "8eb2288dd8ff133c38ce6e3d164b8e3ccc717b05db4b35a7dfac"
)
LIBSRT_SEQUENCE = 491000118
LIBSRT_ENCRYPTED = bytes.fromhex(
    "0d08d76dd5fc3bc6dbd733df68a9cc816fd7e54f7c3c963a3dcd7e715bb0f49226188cd3412e110fb91a1ab7a627fdc0"
)
LIBSRT_PLAIN = bytes.fromhex(
    "474011100042f0250001c10000ff01ff0001fc80144812010646466d70656709536572766963653031777c43caffffff"
)

# RFC 3394 section 4: (KEK, key data, wrapped).
RFC3394 = [
    (
        "000102030405060708090A0B0C0D0E0F",
        "00112233445566778899AABBCCDDEEFF",
        "1FA68B0A8112B447AEF34BD8FB5A7B829D3E862371D2CFE5",
    ),
    (
        "000102030405060708090A0B0C0D0E0F1011121314151617",
        "00112233445566778899AABBCCDDEEFF",
        "96778B25AE6CA435F92B5B97C050AED2468AB8A17AD84E5D",
    ),
    (
        "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F",
        "00112233445566778899AABBCCDDEEFF",
        "64E8C3F9CE0F5BA263E9777905818A2A93C8191E7D6E8AE7",
    ),
    (
        "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F",
        "00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F",
        "28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326CBC7F0E71A99F43BFB988B9B7A02DD21",
    ),
]


# -- key wrap, KEK, counter block


@pytest.mark.parametrize(("kek", "data", "wrapped"), RFC3394)
def test_key_wrap_gives_the_rfc_3394_vectors(kek: str, data: str, wrapped: str) -> None:
    assert wrap_keys(bytes.fromhex(kek), bytes.fromhex(data)) == bytes.fromhex(wrapped)
    assert unwrap_keys(bytes.fromhex(kek), bytes.fromhex(wrapped)) == bytes.fromhex(data)


def test_unwrap_under_another_kek_is_a_bad_secret() -> None:
    kek, _, wrapped = RFC3394[0]
    with pytest.raises(SrtBadSecret):
        unwrap_keys(bytes(16), bytes.fromhex(wrapped))
    with pytest.raises(SrtCryptoError):
        unwrap_keys(bytes.fromhex(kek), bytes(12))  # not a multiple of 8


@pytest.mark.parametrize("key_len", [16, 24, 32])
def test_kek_is_pbkdf2_sha1_2048_over_the_last_8_bytes_of_the_salt(key_len: int) -> None:
    salt = bytes(range(16))
    expected = hashlib.pbkdf2_hmac("sha1", PASSPHRASE, salt[8:], 2048, key_len)
    assert derive_kek(PASSPHRASE, salt, key_len) == expected
    # the first 8 bytes of the salt do not count
    assert derive_kek(PASSPHRASE, bytes(8) + salt[8:], key_len) == expected


def test_pbkdf2_known_answer() -> None:
    # PBKDF2-HMAC-SHA1("correct-horse-battery", salt 08..0f, 2048, 16), computed once with
    # OpenSSL's command line: openssl kdf -keylen 16 -kdfopt digest:SHA1 -kdfopt
    # pass:correct-horse-battery -kdfopt hexsalt:08090a0b0c0d0e0f -kdfopt iter:2048 PBKDF2
    assert derive_kek(PASSPHRASE, bytes(range(16)), 16) == bytes.fromhex("7edf7de7e4d7d1667f7eb18f7ea601da")


@pytest.mark.parametrize("passphrase", [b"short", b"x" * 80])
def test_a_passphrase_libsrt_would_refuse_is_a_value_error(passphrase: bytes) -> None:
    with pytest.raises(ValueError, match="10 to 79"):
        derive_kek(passphrase, bytes(16), 16)
    with pytest.raises(ValueError):
        SrtKeys.generate(passphrase, 16)
    with pytest.raises(ValueError):
        check_passphrase(passphrase)
    check_passphrase(passphrase[:10].ljust(10, b"x"))


def spec_counter_block(salt: bytes, packet_index: int) -> bytes:
    """The draft's layout, byte by byte: zeros, the packet index at 10..13, XOR the salt over
    0..13, the block counter (0) in 14..15."""
    block = bytearray(16)
    block[10:14] = packet_index.to_bytes(4, "big")
    for i in range(14):
        block[i] ^= salt[i]
    return bytes(block)


@given(st.binary(min_size=16, max_size=16), st.integers(0, 2**31 - 1), st.binary(max_size=200))
def test_payload_cipher_is_aes_ctr_from_the_spec_counter_block(salt: bytes, index: int, payload: bytes) -> None:
    key = bytes(range(16))
    cipher = PayloadCipher(key, salt)
    assert cipher.counter_block(index) == spec_counter_block(salt, index)
    reference = Cipher(algorithms.AES(key), modes.CTR(spec_counter_block(salt, index))).encryptor()
    encrypted = cipher.crypt(index, payload)
    assert encrypted == reference.update(payload) + reference.finalize()
    assert cipher.crypt(index, encrypted) == payload


def test_salt_bytes_14_and_15_do_not_count_and_each_packet_has_its_keystream() -> None:
    salt = bytes(range(16))
    cipher = PayloadCipher(bytes(16), salt)
    assert cipher.counter_block(1)[14:] == b"\x00\x00"
    assert PayloadCipher(bytes(16), salt[:14] + b"\xff\xff").crypt(7, bytes(32)) == cipher.crypt(7, bytes(32))
    assert cipher.crypt(7, bytes(32)) != cipher.crypt(8, bytes(32))


# -- Key Material


def km_strategy() -> st.SearchStrategy[KeyMaterial]:
    def build(kk: int, key_len: int, salt: bytes, body: bytes, keki: int) -> KeyMaterial:
        count = 2 if kk == 3 else 1
        return KeyMaterial(kk, salt, key_len, body[: 8 + count * key_len], keki)

    return st.builds(
        build,
        st.sampled_from([1, 2, 3]),
        st.sampled_from([16, 24, 32]),
        st.binary(min_size=16, max_size=16),
        st.binary(min_size=72, max_size=72),
        st.integers(0, 2**32 - 1),
    )


@given(km_strategy())
def test_key_material_round_trips(km: KeyMaterial) -> None:
    data = km.to_bytes()
    assert len(data) == 16 + 16 + 8 + km.key_count * km.key_len <= MAX_KM
    assert KeyMaterial.parse(data) == km


@settings(max_examples=300)
@given(st.binary(max_size=MAX_KM + 8))
def test_parse_of_arbitrary_bytes_gives_a_key_material_or_srt_crypto_error(data: bytes) -> None:
    try:
        km = KeyMaterial.parse(data)
    except SrtCryptoError:
        return
    assert km.to_bytes()[16:] == data[16:]


@settings(max_examples=300)
@given(st.integers(0, len(LIBSRT_KM) - 1), st.integers(1, 255))
def test_parse_of_a_mutated_libsrt_km_gives_a_key_material_or_srt_crypto_error(at: int, xor: int) -> None:
    data = bytearray(LIBSRT_KM)
    data[at] ^= xor
    try:
        km = KeyMaterial.parse(bytes(data))
    except SrtCryptoError:
        return
    if at >= 24:  # the salt's last 8 bytes (the KEK's salt) or the wrapped key changed
        with pytest.raises(SrtBadSecret):
            SrtKeys.from_km(km, PASSPHRASE)


def with_byte(data: bytes, at: int, value: int) -> bytes:
    return data[:at] + bytes([value]) + data[at + 1 :]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (LIBSRT_KM[:15], "bytes"),
        (LIBSRT_KM + bytes(48), "bytes"),
        (LIBSRT_KM[:-4], "fields say"),
        (LIBSRT_KM + bytes(4), "fields say"),
        (with_byte(LIBSRT_KM, 0, 0x92), "S bit"),
        (with_byte(LIBSRT_KM, 0, 0x22), "version"),
        (with_byte(LIBSRT_KM, 0, 0x11), "packet type"),
        (with_byte(LIBSRT_KM, 1, 0x21), "sign"),
        (with_byte(LIBSRT_KM, 3, 0x00), "no key"),
        (with_byte(LIBSRT_KM, 8, 0x00), "cipher"),
        (with_byte(LIBSRT_KM, 8, 0x09), "cipher"),
        (with_byte(LIBSRT_KM, 9, 0x02), "authentication"),
        (with_byte(LIBSRT_KM, 10, 0x00), "encapsulation"),
        (with_byte(LIBSRT_KM, 14, 0x02), "salt"),
        (with_byte(LIBSRT_KM, 15, 0x05), "keys"),
    ],
)
def test_parse_is_strict(data: bytes, reason: str) -> None:
    with pytest.raises(SrtCryptoError, match=reason):
        KeyMaterial.parse(data)


def test_reserved_bits_are_ignored() -> None:
    data = with_byte(with_byte(LIBSRT_KM, 3, 0xFD), 11, 0xFF)
    assert KeyMaterial.parse(data).kk == KeyFlags.EVEN


# -- libsrt's own key material and packets


def test_a_libsrt_key_material_unwraps_and_its_packet_decrypts() -> None:
    km = KeyMaterial.parse(LIBSRT_KM)
    assert (km.kk, km.key_len, km.cipher, km.auth, km.se, km.keki) == (1, 32, 2, 0, 2, 0)
    assert km.to_bytes() == LIBSRT_KM
    keys = SrtKeys.from_km(km, PASSPHRASE)
    assert keys.decrypt(KeyFlags.EVEN, LIBSRT_SEQUENCE, LIBSRT_ENCRYPTED) == LIBSRT_PLAIN
    with pytest.raises(SrtCryptoError, match="odd"):
        keys.decrypt(KeyFlags.ODD, LIBSRT_SEQUENCE, LIBSRT_ENCRYPTED)
    with pytest.raises(SrtBadSecret):
        SrtKeys.from_km(km, b"correct-horse-batterz")


# -- stream keys


@pytest.mark.parametrize("key_len", [16, 24, 32])
def test_generated_keys_round_trip_through_their_key_material(key_len: int) -> None:
    sender, km = SrtKeys.generate(PASSPHRASE, key_len)
    assert (km.kk, km.key_len) == (KeyFlags.EVEN, key_len)
    assert sender.key_material == km and sender.take_key_material() is None
    receiver = SrtKeys.from_km(KeyMaterial.parse(km.to_bytes()), PASSPHRASE)
    for index in (0, 1, 2**31 - 1):
        kk, data = sender.encrypt(index, b"\x47" * 1316)
        assert kk == KeyFlags.EVEN and data != b"\x47" * 1316
        assert receiver.decrypt(kk, index, data) == b"\x47" * 1316
    with pytest.raises(SrtBadSecret):
        SrtKeys.from_km(km, PASSPHRASE + b"!")


def test_a_listener_sends_with_the_callers_keys_and_rotates_its_own() -> None:
    caller_tx, km = SrtKeys.generate(PASSPHRASE, 24)
    listener_rx = SrtKeys.from_km(km, PASSPHRASE)
    with pytest.raises(LocalProtocolError):
        listener_rx.encrypt(1, b"payload")
    listener_tx = listener_rx.for_sending(refresh_rate=10, pre_announce=3)
    assert listener_tx.key_material == km  # the same key, salt and wrap as the caller's KMREQ
    caller_rx = SrtKeys.from_km(km, PASSPHRASE)
    flags = set()
    for index in range(25):
        kk, data = listener_tx.encrypt(index, b"payload")
        refresh = listener_tx.take_key_material()
        if refresh is not None:
            caller_rx.apply(refresh)
        assert caller_rx.decrypt(kk, index, data) == b"payload"
        flags.add(kk)
    assert flags == {KeyFlags.EVEN, KeyFlags.ODD}
    # the caller's own keys did not move
    kk, data = caller_tx.encrypt(99, b"payload")
    assert listener_rx.decrypt(kk, 99, data) == b"payload"


def test_two_generated_sessions_have_their_own_salt_and_key() -> None:
    (_, first), (_, second) = SrtKeys.generate(PASSPHRASE, 16), SrtKeys.generate(PASSPHRASE, 16)
    assert first.salt != second.salt and first.wrapped != second.wrapped


def test_keys_rotate_even_to_odd_with_announcements_as_libsrt_does() -> None:
    sender, km = SrtKeys.generate(PASSPHRASE, 16, refresh_rate=10, pre_announce=3)
    receiver = SrtKeys.from_km(km, PASSPHRASE)
    flags = []
    announced: list[tuple[int, int]] = []
    for index in range(1, 36):
        kk, data = sender.encrypt(index, index.to_bytes(4, "big") * 8)
        refresh = sender.take_key_material()
        if refresh is not None:
            announced.append((index, refresh.kk))
            receiver.apply(KeyMaterial.parse(refresh.to_bytes()))
        assert receiver.decrypt(kk, index, data) == index.to_bytes(4, "big") * 8
        flags.append(kk)
    assert flags == [1] * 10 + [2] * 10 + [1] * 10 + [2] * 5
    # the next key is announced 3 packets before the switch (with the current one); the old one
    # is withdrawn 3 packets after it
    assert announced == [(8, 3), (14, 2), (18, 3), (24, 1), (28, 3), (34, 2)]
    assert sender.key_material is not None and sender.key_material.kk == KeyFlags.ODD


def test_a_repeated_or_same_salt_refresh_costs_no_derivation(monkeypatch: pytest.MonkeyPatch) -> None:
    sender, km = SrtKeys.generate(PASSPHRASE, 16, refresh_rate=10, pre_announce=3)
    calls: list[Any] = []
    real = crypto.derive_kek
    monkeypatch.setattr(crypto, "derive_kek", lambda *args: calls.append(args) or real(*args))
    receiver = SrtKeys.from_km(km, PASSPHRASE)
    for _ in range(5):
        receiver.apply(km)
    for index in range(8):
        sender.encrypt(index, b"x")
    refresh = sender.take_key_material()
    assert refresh is not None and refresh.kk == KeyFlags.BOTH
    receiver.apply(refresh)
    assert len(calls) == 1 and receiver.has_key(KeyFlags.ODD)


def test_a_peer_changing_the_salt_again_and_again_is_refused() -> None:
    receiver = SrtKeys.from_km(SrtKeys.generate(PASSPHRASE, 16)[1], PASSPHRASE)
    for _ in range(MAX_DERIVATIONS - 1):
        sender, km = SrtKeys.generate(PASSPHRASE, 16)
        receiver.apply(km)
    with pytest.raises(SrtCryptoError, match="salt"):
        receiver.apply(SrtKeys.generate(PASSPHRASE, 16)[1])
    # the last keys it took still decrypt
    kk, data = sender.encrypt(1, b"payload")
    assert receiver.decrypt(kk, 1, data) == b"payload"


@pytest.mark.parametrize(
    "km",
    [
        KeyMaterial(1, bytes(16), 16, bytes(24), cipher=CipherId.AES_GCM, auth=1),
        KeyMaterial(1, bytes(16), 16, bytes(24), keki=1),
    ],
)
def test_key_material_this_side_cannot_use_is_refused(km: KeyMaterial) -> None:
    with pytest.raises(SrtCryptoError, match="supported"):
        SrtKeys.from_km(km, PASSPHRASE)


def test_a_kmrsp_is_the_km_echoed_or_a_state_word() -> None:
    assert parse_kmrsp(LIBSRT_KM) == KeyMaterial.parse(LIBSRT_KM)
    assert kmrsp_state(KmState.BADSECRET) == b"\x00\x00\x00\x04"
    assert parse_kmrsp(kmrsp_state(KmState.NOSECRET)) is KmState.NOSECRET
    with pytest.raises(SrtCryptoError):
        parse_kmrsp(b"\x00\x00\x00\x09")
    with pytest.raises(SrtCryptoError):
        parse_kmrsp(b"\x00\x00")


def test_encryption_field_names_the_key_length() -> None:
    assert [encryption_field(n) for n in (0, 16, 24, 32)] == [0, 2, 3, 4]
    assert [key_length_of(n) for n in (0, 2, 3, 4)] == [0, 16, 24, 32]
    with pytest.raises(SrtCryptoError):
        key_length_of(5)
    with pytest.raises(ValueError):
        encryption_field(20)


def test_secrets_stay_out_of_repr() -> None:
    keys, _ = SrtKeys.generate(PASSPHRASE, 16)
    assert "horse" not in repr(keys) and PASSPHRASE.hex() not in repr(keys)


# -- live: ffmpeg (libsrt) as an SRT caller with a passphrase

_HEADER = struct.Struct(">IIII")
_CIF = struct.Struct(">IHHIIIiII")  # version, encryption, extension, ISN, MTU, window, type, socket, cookie
_EXT = struct.Struct(">HH")  # extension type, length in 4-byte words
_INDUCTION, _CONCLUSION = 1, -1
_HSRSP, _KMREQ, _KMRSP = 2, 3, 4


@dataclass
class Caller:
    """What the handshake learnt of the SRT caller: its address, socket ID, initial sequence
    number, the conclusion's encryption field and its KM."""

    peer: Any
    socket_id: int
    isn: int
    encryption: int
    km: bytes


async def handshake(sock: Any) -> Caller:
    """Play an SRT listener just far enough: answer the induction (HSv5 magic 0x4A17 and a
    cookie, sent to the caller's socket ID: libsrt 1.5.5 drops it when sent to 0, which 1.5.1
    takes), take the conclusion's KMREQ, answer with HSRSP (TSBPD both ways, 120 ms) and the KM
    echoed as KMRSP."""
    data, peer = await sock.recvfrom(2048)
    version, _, _, isn, mtu, window, kind, caller, _ = _CIF.unpack_from(data, 16)
    assert (version, kind) == (4, _INDUCTION)
    ip = data[16 + _CIF.size : 64]
    reply = _CIF.pack(5, 0, 0x4A17, isn, mtu, window, _INDUCTION, 0x5EC, 0xC00C1E) + ip
    await sock.sendto(_HEADER.pack(0x80000000, 0, 0, caller) + reply, peer)
    while True:
        data, peer = await sock.recvfrom(2048)
        _, encryption, _, _, _, _, kind, _, cookie = _CIF.unpack_from(data, 16)
        if kind == _CONCLUSION:
            break
    assert cookie == 0xC00C1E
    extensions: dict[int, bytes] = {}
    offset = 64
    while offset + 4 <= len(data):
        ext_type, words = _EXT.unpack_from(data, offset)
        extensions[ext_type] = data[offset + 4 : offset + 4 + 4 * words]
        offset += 4 + 4 * words
    km = extensions[_KMREQ]
    hsrsp = _EXT.pack(_HSRSP, 3) + struct.pack(">III", 0x00010501, 0xBF, (120 << 16) | 120)
    kmrsp = _EXT.pack(_KMRSP, len(km) // 4) + km
    reply = _CIF.pack(5, 0, 0x3, isn, mtu, window, _CONCLUSION, 0x5EC, 0xC00C1E) + ip + hsrsp + kmrsp
    await sock.sendto(_HEADER.pack(0x80000000, 0, 0, caller) + reply, peer)
    return Caller(peer, caller, isn, encryption, km)


async def handshake_and_capture(sock: Any, packets: int) -> tuple[int, bytes, list[bytes]]:
    """:func:`handshake`, then collect what comes until ``packets`` data packets have come.
    Returns the conclusion's encryption field, the KM and the datagrams after the handshake."""
    caller = await handshake(sock)
    captured: list[bytes] = []
    while packets:
        data, _ = await sock.recvfrom(2048)
        captured.append(data)
        packets -= not data[0] & 0x80  # a data packet (control ones are kept, not counted)
    return caller.encryption, caller.km, captured


def decrypt_all(keys: SrtKeys, datagrams: list[bytes]) -> list[int]:
    """Apply every KM refresh (a user-defined control packet, subtype KMREQ) to ``keys`` and
    decrypt every data packet, checking that it is MPEG-TS; returns the data packets' KK bits."""
    flags = []
    for datagram in datagrams:
        first, message = struct.unpack_from(">II", datagram)
        if first >> 31:
            if first >> 16 == 0xFFFF and first & 0xFFFF == _KMREQ:
                keys.apply(KeyMaterial.parse(datagram[16:]))
            continue
        kk = (message >> 27) & 0x3
        plain = keys.decrypt(kk, first, datagram[16:])
        assert len(plain) % 188 == 0
        assert plain[::188] == b"\x47" * (len(plain) // 188)  # every MPEG-TS packet's sync byte
        flags.append(kk)
    return flags


async def capture_from(ffmpeg: str, query: str, packets: int) -> tuple[int, bytes, list[bytes]]:
    """Run ``ffmpeg`` publishing a short MPEG-2 test pattern over SRT (``query``) to a listener
    here; the handshake's encryption field and KM, and the datagrams that followed."""
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    with sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        args = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-re", "-f", "lavfi"]
        args += ["-i", "testsrc=size=320x240:rate=30", "-t", "3", "-c:v", "mpeg2video", "-b:v", "2M"]
        args += ["-f", "mpegts", f"srt://127.0.0.1:{port}?passphrase={PASSPHRASE.decode()}&{query}"]
        with trio.fail_after(10):
            async with run_tool(args):
                return await handshake_and_capture(sock, packets)


@pytest.mark.interop
@pytest.mark.parametrize("key_len", [16, 24, 32])
async def test_ffmpeg_libsrt_key_material_unwraps_and_its_packets_decrypt(key_len: int) -> None:
    encryption, km_bytes, datagrams = await capture_from(require_tool("ffmpeg"), f"pbkeylen={key_len}", 5)
    assert encryption == encryption_field(key_len)
    km = KeyMaterial.parse(km_bytes)
    assert (km.kk, km.key_len, km.cipher) == (KeyFlags.EVEN, key_len, CipherId.AES_CTR)
    assert km.to_bytes() == km_bytes
    with pytest.raises(SrtBadSecret):
        SrtKeys.from_km(km, b"not-the-passphrase")
    assert decrypt_all(SrtKeys.from_km(km, PASSPHRASE), datagrams) == [KeyFlags.EVEN] * 5


@pytest.mark.interop
async def test_ffmpeg8_libsrt_key_refreshes_switch_keys_and_every_packet_decrypts() -> None:
    # libsrt switches keys every kmrefreshrate packets and announces the next one
    # kmpreannounce packets before, in KM refreshes that carry both keys
    query = "pbkeylen=16&kmrefreshrate=40&kmpreannounce=10"
    _, km, datagrams = await capture_from(require_ffmpeg8(), query, 100)
    flags = decrypt_all(SrtKeys.from_km(KeyMaterial.parse(km), PASSPHRASE), datagrams)
    # (libsrt counts the first key's packets from 1 and the next ones' from 0)
    assert flags == [KeyFlags.EVEN] * 40 + [KeyFlags.ODD] * 41 + [KeyFlags.EVEN] * 19


@pytest.mark.interop
async def test_ffmpeg_libsrt_plays_what_a_listener_encrypts_with_the_callers_keys(tmp_path: Path) -> None:
    # the other direction: ffmpeg 5.1 is an SRT caller that reads (a player); the listener here
    # sends an MPEG-TS clip encrypted with for_sending() of the keys of ffmpeg's KMREQ
    ffmpeg = require_tool("ffmpeg")
    clip = tmp_path / "clip.ts"
    make = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-f", "lavfi"]
    make += ["-i", "testsrc=size=160x120:rate=25", "-t", "2", "-c:v", "mpeg2video", "-g", "10", str(clip)]
    with trio.fail_after(10):
        await trio.run_process(make)
    ts = clip.read_bytes()
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    with sock:
        await sock.bind(("127.0.0.1", 0))
        url = f"srt://127.0.0.1:{sock.getsockname()[1]}?passphrase={PASSPHRASE.decode()}"
        play = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-probesize", "32768", "-i", url]
        play += ["-frames:v", "40", "-f", "framemd5", "-"]
        with trio.fail_after(10):
            async with run_tool(play, Player) as player:
                caller = await handshake(sock)
                keys = SrtKeys.from_km(KeyMaterial.parse(caller.km), PASSPHRASE).for_sending()
                for number, at in enumerate(range(0, len(ts), 1316)):
                    sequence = (caller.isn + number) & 0x7FFFFFFF
                    kk, payload = keys.encrypt(sequence, ts[at : at + 1316])
                    message = (0b11 << 30) | (kk << 27) | (number + 1)  # a solo message, KK bits
                    header = _HEADER.pack(sequence, message, number * 1000, caller.socket_id)
                    await sock.sendto(header + payload, caller.peer)
                assert await player.wait() == 0, player.stderr()
    assert player.video == 40
