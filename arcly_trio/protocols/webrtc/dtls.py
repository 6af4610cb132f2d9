"""One DTLS-SRTP association (RFC 5764, DTLS 1.2 of RFC 6347), sans-IO over pyOpenSSL.

WebRTC keys its SRTP media with a DTLS handshake on the media port: the SDP offer/answer
decides who is the DTLS client (``a=setup``) and carries each side's certificate fingerprint,
the handshake negotiates an SRTP protection profile (the ``use_srtp`` extension), and both
sides export the SRTP master keys from the TLS master secret (``EXTRACTOR-dtls_srtp``).

:class:`DtlsTransport` drives one pyOpenSSL ``Connection`` over memory BIOs: datagrams in
(:meth:`DtlsTransport.receive`), datagrams to send out; it does no I/O and reads no clock,
time is the float ``now`` its worker passes (``trio.current_time()``).

* The client's first flight comes from :meth:`DtlsTransport.start`.
* Retransmission (RFC 6347 section 4.2.4) runs on the ``now`` clock: :meth:`DtlsTransport.timeout`
  says when :meth:`DtlsTransport.handle_timeout` is due (1 s, doubling up to 60 s). OpenSSL's own
  DTLS timer reads the wall clock, so on our deadline OpenSSL is asked first: when its timer
  agrees (or will within 100 ms: we wait for it once) it re-encrypts the flight under fresh
  record numbers; otherwise (a clock that is not the wall's, as in tests) the last flight we
  produced is sent again byte for byte, which the peer takes if it lost it and drops as a
  replay if not. The one case a copy cannot mend is a lost final flight of the server
  while we are the client (the server answers only a fresh retransmission of ours); with the
  trio clock in step with the wall, OpenSSL's re-encryption is what goes out. Past
  ``handshake_timeout`` the handshake fails with :class:`DtlsTimeout`.
* The peer's certificate is accepted whatever signed it; its digest must equal one of the
  fingerprints its SDP announced, checked in the verification callback (a mismatch aborts the
  handshake with a ``bad_certificate`` alert) and again once established, before
  :attr:`DtlsTransport.keys` is set.
* Keys (RFC 5764 section 4.2): ``2 * (key + salt)`` bytes exported and split into client key,
  server key, client salt, server salt; :class:`SrtpKeys` holds them from our side (``local``
  is what we protect with: the server's when we are the server).
* Outgoing records are packed into datagrams of at most ``mtu`` bytes (OpenSSL fragments the
  handshake to that size: ``SSL_set_mtu`` with ``SSL_OP_NO_QUERY_MTU``).
* SRTP profiles: :data:`SRTP_PROFILES` (AES-GCM first), or the ``profiles`` given.
* Application data (data channels) is read and dropped; a ``close_notify`` sets
  :attr:`DtlsTransport.closed`, after which the worker answers with :meth:`DtlsTransport.close`
  and ends the session.

Attacker's view: a datagram over :data:`MAX_DATAGRAM` bytes, or that is not a sequence of
well-formed DTLS record headers, is dropped before OpenSSL sees it (and counted in
:attr:`DtlsTransport.dropped`); before the handshake completes at most
:data:`MAX_HANDSHAKE_RECORDS` records are accepted and the whole handshake has
``handshake_timeout`` seconds, so a peer cannot keep one association busy; the association
keeps only its last flight (a few kilobytes) for retransmission; retransmissions are paced by
our clock, and a peer's datagram gets at most our current flight again (OpenSSL answers a
retransmitted flight so). No cookie exchange: ICE has checked the address before DTLS starts,
so the first flight's size (about three times a ClientHello) goes only to a consenting peer.

Error policy: :meth:`DtlsTransport.receive` and :meth:`DtlsTransport.handle_timeout` raise
:class:`DtlsError` (a :class:`~arcly_trio.core.errors.RemoteProtocolError`) when the
association cannot go on: a failed handshake, a fatal alert, a fingerprint mismatch, no common
SRTP profile, too many records; :class:`DtlsTimeout` when the handshake ran out of time. The
error carries ``datagrams``, the alert to send before dropping the association. Nothing else
comes out of them (fuzzed, with garbage and with corrupted real flights); once failed or
closed, the transport drops everything. The constructor raises :class:`DtlsError` when the
peer's SDP gave no fingerprint of a known hash function, ``ValueError`` for impossible
arguments; calling :meth:`DtlsTransport.start` twice raises :class:`DtlsUsageError` (a
:class:`~arcly_trio.core.errors.LocalProtocolError`).
"""

from __future__ import annotations

import enum
import hmac
from collections.abc import Sequence
from typing import Final

import attrs
from OpenSSL import SSL, crypto

from arcly_trio.core.errors import LocalProtocolError, RemoteProtocolError
from arcly_trio.protocols.webrtc.certificate import (
    FINGERPRINT_ALGORITHMS,
    DtlsCertificate,
    peer_fingerprint,
)

__all__ = [
    "SRTP_PROFILES",
    "SRTP_KEY_LENGTHS",
    "EXPORTER_LABEL",
    "MAX_DATAGRAM",
    "MAX_HANDSHAKE_RECORDS",
    "INITIAL_RETRANSMIT",
    "MAX_RETRANSMIT",
    "DtlsError",
    "DtlsTimeout",
    "DtlsUsageError",
    "DtlsState",
    "TRANSITIONS",
    "SrtpKeys",
    "DtlsTransport",
    "split_records",
]

SRTP_PROFILES: Final = ("SRTP_AEAD_AES_128_GCM", "SRTP_AES128_CM_SHA1_80")
"""The SRTP protection profiles offered (client) or accepted (server), in preference order."""
SRTP_KEY_LENGTHS: Final = {"SRTP_AEAD_AES_128_GCM": (16, 12), "SRTP_AES128_CM_SHA1_80": (16, 14)}
"""(master key, master salt) lengths of each profile (RFC 7714 section 12, RFC 5764 section 4.1.2)."""
EXPORTER_LABEL: Final = b"EXTRACTOR-dtls_srtp"
MAX_DATAGRAM: Final = 16 * 1024
"""A datagram larger than this is dropped unread."""
MAX_HANDSHAKE_RECORDS: Final = 256
"""The most records accepted before the handshake completes (a handshake takes about ten,
with every retransmission a few more)."""
INITIAL_RETRANSMIT: Final = 1.0
MAX_RETRANSMIT: Final = 60.0
"""The retransmission timer (RFC 6347 section 4.2.4.1): 1 s, doubled at each expiry, at most 60 s."""

_DTLS1_2_VERSION: Final = 0xFEFD
_RECORD_HEADER: Final = 13
_CONTENT_TYPES: Final = frozenset(range(20, 26))  # change_cipher_spec .. tls12_cid
_READ_SIZE: Final = 65536
_DEFER_LIMIT: Final = 0.1
_DEFER_SLACK: Final = 0.002


class DtlsError(RemoteProtocolError):
    """The DTLS association cannot go on. ``datagrams`` are what to send the peer before
    dropping it (an alert), possibly none."""

    def __init__(self, message: str, datagrams: Sequence[bytes] = ()) -> None:
        super().__init__(message)
        self.datagrams = list(datagrams)


class DtlsTimeout(DtlsError):
    """The handshake did not complete within its time."""


class DtlsUsageError(LocalProtocolError):
    """This side drove the transport wrongly (a bug in the caller)."""


class DtlsState(enum.Enum):
    """Where an association stands; :data:`TRANSITIONS` says where it may go."""

    NEW = "new"
    """Made, not started (a server also starts on its first ClientHello)."""
    HANDSHAKING = "handshaking"
    ESTABLISHED = "established"
    """Handshake done, peer certificate matched, keys exported."""
    CLOSED = "closed"
    """We closed: nothing more in or out (the keys stay)."""
    FAILED = "failed"
    """A :class:`DtlsError` was raised: nothing more in or out."""


TRANSITIONS: Final[dict[DtlsState, frozenset[DtlsState]]] = {
    DtlsState.NEW: frozenset({DtlsState.HANDSHAKING, DtlsState.CLOSED, DtlsState.FAILED}),
    DtlsState.HANDSHAKING: frozenset({DtlsState.ESTABLISHED, DtlsState.CLOSED, DtlsState.FAILED}),
    DtlsState.ESTABLISHED: frozenset({DtlsState.CLOSED, DtlsState.FAILED}),
    DtlsState.CLOSED: frozenset(),
    DtlsState.FAILED: frozenset(),
}
"""Every state change of :class:`DtlsTransport`, in one place."""


@attrs.frozen
class SrtpKeys:
    """The SRTP master keys of one association, from our side: ``local_*`` protect what we
    send, ``remote_*`` unprotect what the peer sends."""

    profile: str
    local_key: bytes = attrs.field(repr=False)
    local_salt: bytes = attrs.field(repr=False)
    remote_key: bytes = attrs.field(repr=False)
    remote_salt: bytes = attrs.field(repr=False)

    @classmethod
    def from_material(cls, profile: str, material: bytes, *, server: bool) -> SrtpKeys:
        """Split exported keying material (RFC 5764 section 4.2: client key, server key,
        client salt, server salt) for the side that is the server when ``server``."""
        key_len, salt_len = SRTP_KEY_LENGTHS[profile]
        if len(material) != 2 * (key_len + salt_len):
            raise ValueError(f"{profile} needs {2 * (key_len + salt_len)} bytes of keying material")
        client_key, server_key = material[:key_len], material[key_len : 2 * key_len]
        client_salt = material[2 * key_len : 2 * key_len + salt_len]
        server_salt = material[2 * key_len + salt_len :]
        if server:
            return cls(profile, server_key, server_salt, client_key, client_salt)
        return cls(profile, client_key, client_salt, server_key, server_salt)


def split_records(data: bytes) -> list[bytes] | None:
    """The DTLS records of ``data`` one by one, or ``None`` if ``data`` is not a sequence of
    well-formed record headers (content type 20-25, version major 254, length within ``data``)."""
    records = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < _RECORD_HEADER:
            return None
        if data[offset] not in _CONTENT_TYPES or data[offset + 1] != 0xFE:
            return None
        end = offset + _RECORD_HEADER + int.from_bytes(data[offset + 11 : offset + 13], "big")
        if end > len(data):
            return None
        records.append(data[offset:end])
        offset = end
    return records


def _reason(error: SSL.Error) -> str:
    """OpenSSL's reasons of ``error``, short."""
    try:
        reasons = [str(entry[-1]) for entry in error.args[0] if isinstance(entry, tuple)]
    except (IndexError, TypeError):
        reasons = []
    return "; ".join(reasons)[:200] or "handshake failed"


def _context(certificate: DtlsCertificate, profiles: tuple[str, ...]) -> SSL.Context:
    """The OpenSSL context of associations that present ``certificate`` and offer ``profiles``:
    made once and kept on the certificate (a context costs ~22 KB; pyOpenSSL forbids changing
    one a connection uses, so it is complete before its first). ``MODE_RELEASE_BUFFERS``: an
    established association frees its record buffers while idle (~14 KB each)."""
    key = ("dtls", profiles)
    context: SSL.Context | None = certificate.contexts.get(key)
    if context is None:
        context = SSL.Context(SSL.DTLS_METHOD)
        context.set_min_proto_version(_DTLS1_2_VERSION)
        context.set_options(SSL.OP_NO_QUERY_MTU | SSL.OP_NO_TICKET)
        context.set_mode(SSL.MODE_RELEASE_BUFFERS)
        context.use_certificate(certificate.certificate)
        context.use_privatekey(certificate.key)
        context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, _verify)
        context.set_tlsext_use_srtp(":".join(profiles).encode())
        certificate.contexts[key] = context
    return context


def _verify(connection: SSL.Connection, x509: crypto.X509, errno: int, depth: int, ok: int) -> bool:
    """The shared context's verification callback: the connection's own transport decides."""
    transport = connection.get_app_data()
    return isinstance(transport, DtlsTransport) and transport._verify(connection, x509, errno, depth, ok)


class DtlsTransport:
    """One DTLS-SRTP association (see the module docstring)."""

    def __init__(
        self,
        certificate: DtlsCertificate,
        *,
        server: bool,
        remote_fingerprints: Sequence[tuple[str, str]],
        now: float,
        handshake_timeout: float = 10.0,
        mtu: int = 1200,
        profiles: Sequence[str] = SRTP_PROFILES,
    ) -> None:
        if not 256 <= mtu <= MAX_DATAGRAM:
            raise ValueError(f"mtu {mtu} is outside 256..{MAX_DATAGRAM}")
        if not profiles or any(profile not in SRTP_KEY_LENGTHS for profile in profiles):
            raise ValueError(f"SRTP profiles must be some of {SRTP_PROFILES}")
        if handshake_timeout <= 0:
            raise ValueError("handshake_timeout must be positive")
        self.server = server
        self.mtu = mtu
        self.fingerprints = frozenset(
            (algorithm.lower(), value.upper())
            for algorithm, value in remote_fingerprints
            if algorithm.lower() in FINGERPRINT_ALGORITHMS
        )
        if not self.fingerprints:
            raise DtlsError("the peer announced no certificate fingerprint this side can check")
        self.state = DtlsState.NEW
        self.keys: SrtpKeys | None = None
        self.closed = False
        """The peer sent ``close_notify``."""
        self.dropped = 0
        """Datagrams dropped unread (oversized, not DTLS, after failure)."""
        self.retransmissions = 0
        self._handshake_deadline = now + handshake_timeout
        self._flight: list[bytes] = []
        self._retransmit_at: float | None = None
        self._interval = INITIAL_RETRANSMIT
        self._records = 0
        self._peer_rejected = False
        self._deferred = False

        self._connection = SSL.Connection(_context(certificate, tuple(profiles)), None)
        self._connection.set_app_data(self)  # for the shared context's verification callback
        self._connection.set_ciphertext_mtu(mtu)
        if server:
            self._connection.set_accept_state()
        else:
            self._connection.set_connect_state()

    # -- public state -------------------------------------------------------------------------

    @property
    def established(self) -> bool:
        """The handshake completed and the peer's certificate matched its fingerprint."""
        return self.state is DtlsState.ESTABLISHED

    @property
    def failed(self) -> bool:
        return self.state is DtlsState.FAILED

    def timeout(self) -> float | None:
        """When :meth:`handle_timeout` is due (in the ``now`` clock), or ``None``."""
        if self.state is not DtlsState.NEW and self.state is not DtlsState.HANDSHAKING:
            return None
        if self._retransmit_at is None:
            return self._handshake_deadline
        return min(self._retransmit_at, self._handshake_deadline)

    # -- driving ------------------------------------------------------------------------------

    def start(self, now: float) -> list[bytes]:
        """Begin the handshake: the client's first flight (a server waits for it: ``[]``)."""
        if self.state is not DtlsState.NEW:
            raise DtlsUsageError(f"start() called in state {self.state.value}")
        self._move(DtlsState.HANDSHAKING)
        if self.server:
            return []
        return self._step(now)

    def receive(self, datagram: bytes, now: float) -> list[bytes]:
        """Feed one datagram from the peer; the datagrams to send back (the next flight, a
        retransmission the peer asked for, an alert)."""
        if self.state is DtlsState.FAILED or self.state is DtlsState.CLOSED or len(datagram) > MAX_DATAGRAM:
            self.dropped += 1
            return []
        records = split_records(datagram)
        if not records:  # not DTLS, or empty
            self.dropped += 1
            return []
        if self.state is DtlsState.NEW:
            self._move(DtlsState.HANDSHAKING)  # a server is started by its first ClientHello
        if self.state is DtlsState.HANDSHAKING:
            self._records += len(records)
            if self._records > MAX_HANDSHAKE_RECORDS:
                self._fail()
                raise DtlsError(f"more than {MAX_HANDSHAKE_RECORDS} records before the handshake completed")
        try:
            self._connection.bio_write(datagram)
        except SSL.Error as error:  # not expected of a memory BIO
            self._fail()
            raise DtlsError(f"DTLS input refused: {_reason(error)}") from None
        if self.state is DtlsState.HANDSHAKING:
            return self._step(now)
        return self._read_established()

    def handle_timeout(self, now: float) -> list[bytes]:
        """Run the timer: retransmit the last flight when due (backing off), or raise
        :class:`DtlsTimeout` past the handshake's time."""
        if self.state is not DtlsState.NEW and self.state is not DtlsState.HANDSHAKING:
            return []
        if now >= self._handshake_deadline:
            self._fail()
            raise DtlsTimeout("the DTLS handshake did not complete in time")
        if self._retransmit_at is None or now < self._retransmit_at:
            return []
        try:
            retransmitted = self._connection.DTLSv1_handle_timeout()
        except SSL.Error as error:
            out = self._pending()
            self._fail()
            raise DtlsError(f"DTLS retransmission failed: {_reason(error)}", out) from None
        out = self._pending()
        if not retransmitted and not out:
            remaining = self._connection.DTLSv1_get_timeout()
            if not self._deferred and remaining is not None and remaining <= _DEFER_LIMIT:
                # OpenSSL's wall-clock timer expires in a moment (it started just after our
                # `now`): wait for it once, so that it re-encrypts under fresh record numbers.
                self._deferred = True
                self._retransmit_at = now + remaining + _DEFER_SLACK
                return []
            out = list(self._flight)
        self._flight = out
        self._deferred = False
        self.retransmissions += 1
        self._interval = min(self._interval * 2, MAX_RETRANSMIT)
        self._retransmit_at = now + self._interval
        return out

    def close(self) -> list[bytes]:
        """End the association: our ``close_notify`` if established (also the answer to the
        peer's, see :attr:`closed`); during the handshake it just stops the timers."""
        if self.state is DtlsState.NEW or self.state is DtlsState.HANDSHAKING:
            self._move(DtlsState.CLOSED)
            self._flight = []
            self._retransmit_at = None
            return []
        if self.state is not DtlsState.ESTABLISHED:
            return []
        try:
            self._connection.shutdown()
        except SSL.Error:
            pass
        out = self._pending()
        self._move(DtlsState.CLOSED)
        return out

    # -- internals ----------------------------------------------------------------------------

    def _verify(self, connection: SSL.Connection, x509: crypto.X509, errno: int, depth: int, ok: int) -> bool:
        """Accept any chain; the leaf must match a fingerprint of the peer's SDP."""
        if depth != 0:
            return True
        try:
            matched = self._matches(x509)
        except Exception:  # nothing may leave a callback: OpenSSL took what it could not be read back
            matched = False
        self._peer_rejected = not matched
        return matched

    def _matches(self, x509: crypto.X509) -> bool:
        der = crypto.dump_certificate(crypto.FILETYPE_ASN1, x509)  # as sent: no re-parse
        return any(
            hmac.compare_digest(peer_fingerprint(der, algorithm), value) for algorithm, value in self.fingerprints
        )

    def _move(self, state: DtlsState) -> None:
        if state not in TRANSITIONS[self.state]:
            raise DtlsUsageError(f"no DTLS transition from {self.state.value} to {state.value}")
        self.state = state

    def _fail(self) -> None:
        self._move(DtlsState.FAILED)
        self.keys = None
        self._flight = []
        self._retransmit_at = None

    def _step(self, now: float) -> list[bytes]:
        """Advance the handshake with whatever the BIO holds."""
        try:
            self._connection.do_handshake()
        except SSL.WantReadError:
            pass
        except SSL.Error as error:
            out = self._pending()
            self._fail()
            if self._peer_rejected:
                raise DtlsError("the peer's certificate matches no fingerprint of its SDP", out) from None
            raise DtlsError(f"DTLS handshake failed: {_reason(error)}", out) from None
        else:
            return self._complete()
        out = self._pending()
        if out:
            self._flight = out
            self._interval = INITIAL_RETRANSMIT
            self._retransmit_at = now + self._interval
            self._deferred = False
        return out

    def _complete(self) -> list[bytes]:
        """The handshake finished: check the peer, export the keys."""
        out = self._pending()
        certificate = self._connection.get_peer_certificate()
        if certificate is None or not self._matches(certificate):
            try:
                self._connection.shutdown()
            except SSL.Error:
                pass
            out += self._pending()
            self._fail()
            raise DtlsError("the peer's certificate matches no fingerprint of its SDP", out)
        profile = self._connection.get_selected_srtp_profile().decode(errors="replace")
        if profile not in SRTP_KEY_LENGTHS:
            self._fail()
            raise DtlsError(f"no common SRTP protection profile (peer chose {profile[:40]!r})", out)
        key_len, salt_len = SRTP_KEY_LENGTHS[profile]
        material = self._connection.export_keying_material(EXPORTER_LABEL, 2 * (key_len + salt_len))
        self.keys = SrtpKeys.from_material(profile, material, server=self.server)
        self._move(DtlsState.ESTABLISHED)
        self._flight = []
        self._retransmit_at = None
        return out + self._read_established()

    def _read_established(self) -> list[bytes]:
        """Read records after the handshake: drop data, note close_notify, answer a peer's
        retransmitted final flight (OpenSSL resends ours)."""
        while True:
            try:
                self._connection.recv(_READ_SIZE)  # application data: no data channels, dropped
            except SSL.WantReadError:
                break
            except SSL.ZeroReturnError:
                self.closed = True
                break
            except SSL.Error as error:
                out = self._pending()
                self._fail()
                raise DtlsError(f"DTLS association failed: {_reason(error)}", out) from None
        return self._pending()

    def _pending(self) -> list[bytes]:
        """What OpenSSL wrote, as datagrams of whole records, each at most ``mtu`` bytes."""
        chunks = []
        while True:
            try:
                chunks.append(self._connection.bio_read(_READ_SIZE))
            except SSL.WantReadError:
                break
        data = b"".join(chunks)
        if not data:
            return []
        records = split_records(data)
        if records is None:  # not expected from OpenSSL: send it as written
            return [data]
        datagrams: list[bytes] = []
        current = b""
        for record in records:
            if current and len(current) + len(record) > self.mtu:
                datagrams.append(current)
                current = b""
            current += record
        datagrams.append(current)
        return datagrams
