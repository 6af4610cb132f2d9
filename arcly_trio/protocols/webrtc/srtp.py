"""SRTP and SRTCP (RFC 3711, AES-GCM of RFC 7714) for one DTLS-SRTP association, over pylibsrtp.

Once :class:`~arcly_trio.protocols.webrtc.dtls.DtlsTransport` has exported its
:class:`~arcly_trio.protocols.webrtc.dtls.SrtpKeys`, every RTP and RTCP packet of the session is
protected with our key and salt and unprotected with the peer's. :class:`SrtpContext` holds the
two libsrtp sessions this takes (libsrtp allows one "any SSRC" template per session): outbound
(``ssrc_any_outbound``, our local key and salt) and inbound (``ssrc_any_inbound``, the remote
ones), so that any number of SSRCs (video, audio, retransmission streams) work without being
declared. The outbound policy allows repeated transmission (``allow_repeat_tx``): a packet
resent for a NACK is protected again under the same sequence number, up to
:data:`OUTBOUND_WINDOW` packets back (libsrtp checks outgoing indexes against a window too);
inbound uses libsrtp's default replay window (128 packets).

**The viewer's hot path** (:meth:`SrtpContext.protect_packets`): a WHEP viewer sends every packet of
a frame through here, so the per-packet Python is kept to a header written with
``struct.pack_into``, the shared payload copied once, and libsrtp's ``srtp_protect`` called in
place (pylibsrtp's ``protect`` allocates a length cell, copies the packet in and out and checks
its type: a third of the cost for a 1.2 KB packet). The packets of a frame are built back to
back in one scratch buffer (one per thread, :data:`SCRATCH` bytes), which the caller sends at
once (one ``sendmsg`` with UDP GSO for the equal-sized ones). Outbound SSRCs are our own (the
viewer's video and audio): they are not tracked per packet. Where pylibsrtp's internals are not
the ones this was written against, the public ``protect`` is used instead (the same bytes, slower).
A frame's packets are laid out once for every viewer (:func:`plan_packets`, a :class:`PacketPlan`),
its last packet padded (RTP padding) to the size of the one before when asked, so that one
more packet protected after the plan (:meth:`SrtpContext.protect_after`: a viewer's Opus
packet) can close its last GSO run.

Attacker's view: libsrtp authenticates a packet before it creates state for a new SSRC, so
only the peer that holds the keys can add streams; even so at most :data:`MAX_SSRCS` inbound
SSRCs are kept (the least recently seen is forgotten first: its replay window and rollover
counter start over if it comes back). Outbound streams are the SSRCs this side chooses. A
packet is at most :data:`MAX_PACKET` bytes (pylibsrtp's buffer); larger ones fail. Nothing is buffered between calls.

Error policy: :meth:`SrtpContext.unprotect` and :meth:`SrtpContext.unprotect_rtcp` raise
:class:`SrtpError` (a :class:`~arcly_trio.core.errors.RemoteProtocolError`) for a packet that
fails authentication, is a replay, is too short or too long, and nothing else (fuzzed): the
caller counts and drops it. :meth:`SrtpContext.protect` and :meth:`SrtpContext.protect_rtcp`
raise :class:`SrtpProtectError` (a :class:`~arcly_trio.core.errors.LocalProtocolError`) for a
packet this side cannot protect (too short to be RTP, too long). ``ValueError`` for keys of an
unknown profile or the wrong length.
"""

from __future__ import annotations

import struct
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, Final

import pylibsrtp

from arcly_trio.core.errors import LocalProtocolError, RemoteProtocolError
from arcly_trio.protocols.webrtc.dtls import SRTP_KEY_LENGTHS, SrtpKeys

__all__ = [
    "MAX_PACKET",
    "MAX_PADDING",
    "MAX_PLAN_PACKETS",
    "PacketPlan",
    "MAX_SSRCS",
    "OUTBOUND_WINDOW",
    "PROFILES",
    "SCRATCH",
    "SrtpContext",
    "SrtpError",
    "SrtpProtectError",
    "TRAILERS",
    "plan_packets",
]

PROFILES: Final = {
    "SRTP_AEAD_AES_128_GCM": pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
    "SRTP_AES128_CM_SHA1_80": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
}
"""The DTLS-SRTP profile names (IANA) mapped to pylibsrtp's."""
MAX_PACKET: Final = 1500
"""The largest packet pylibsrtp handles (its buffer), trailer included."""
MAX_SSRCS: Final = 64
"""The most SSRCs kept per direction."""
OUTBOUND_WINDOW: Final = 1024
"""How far back (in packets of one SSRC) a packet may be protected again for a NACK: libsrtp
checks our own indexes against a window too, and refuses older ones."""

SCRATCH: Final = 48 * 1280
"""Bytes of the per-thread buffer :meth:`SrtpContext.protect_packets` builds packets in (48
packets of a 1200-byte payload, header and tag: under UDP GSO's 64 segments and 64 KB)."""

MAX_PADDING: Final = 255
"""The most RTP padding :func:`plan_packets` adds to a packet (its count is one byte)."""
MAX_PLAN_PACKETS: Final = 64
"""Packets one :class:`PacketPlan` holds at most (UDP GSO's ``UDP_MAX_SEGMENTS``)."""
TRAILERS: Final = {"SRTP_AEAD_AES_128_GCM": 16, "SRTP_AES128_CM_SHA1_80": 10}
"""The bytes SRTP adds to an RTP packet, per profile (the tag; no MKI)."""

_RTP_HEADER: Final = 12
_RTCP_HEADER: Final = 8
_TRAILER: Final = 16  # the SRTP tag: 16 bytes for AES-GCM, 10 for HMAC-SHA1-80 (no MKI)
_HEADER = struct.Struct("!BBHII")
_HEADER_BITS = struct.Struct("!HHII")  # the first two bytes as one: the plan's bits and the payload type

try:  # libsrtp called in place: see the module docstring
    from pylibsrtp._binding import ffi as _ffi
    from pylibsrtp._binding import lib as _lib

    _srtp_protect: Any = _lib.srtp_protect
except (ImportError, AttributeError):  # pragma: no cover - another pylibsrtp
    _ffi = _srtp_protect = None


class _Scratch(threading.local):
    """One thread's buffer for :meth:`SrtpContext.protect_packets` and libsrtp's view of it."""

    def __init__(self) -> None:
        buffer = bytearray(SCRATCH + MAX_PACKET)
        pointer = _ffi.from_buffer("char[]", buffer) if _ffi is not None else None
        length = _ffi.new("int *") if _ffi is not None else None
        self.parts: tuple[bytearray, memoryview, Any, Any] = (buffer, memoryview(buffer), pointer, length)
        """The buffer, a view of it, libsrtp's pointer to it and a length cell (one attribute: one lookup)."""


_scratch = _Scratch()


class PacketPlan:
    """Up to :data:`MAX_PLAN_PACKETS` RTP packets of a frame laid out once for every viewer
    (:func:`plan_packets`): what :meth:`SrtpContext.protect_plan` copies and protects.

    ``template`` holds the packets back to back as they will be sent, each a 12-byte header
    left blank, its payload and room for the SRTP tag; ``headers`` gives, per packet, its offset
    in the template, its RTP size (header and payload), its marker (``0x80`` or ``0``) and its
    timestamp; ``runs`` the UDP sends it takes (``(begin, end, segment size, count)``: equal-sized
    packets, a shorter last one included, go out in one GSO send); ``count`` packets,
    ``size`` bytes protected. ``tail``: the segment size of the last run when its packets all
    have that size and it has room for one more (a packet of at most ``tail`` bytes protected,
    written after the plan with :meth:`SrtpContext.protect_after`, can close the run: a WHEP
    viewer's Opus packet goes out in its video frame's GSO send), else 0.

    A header entry is ``(offset, size, bits, timestamp)``: ``bits`` are the first two bytes of the
    header but the payload type (``0x8000``, the padding bit ``0x2000`` for a padded packet, the
    marker ``0x80``)."""

    __slots__ = ("template", "headers", "runs", "count", "size", "tail")

    def __init__(
        self,
        template: bytes,
        headers: tuple[tuple[int, int, int, int], ...],
        runs: tuple[tuple[int, int, int, int], ...],
    ) -> None:
        self.template = template
        self.headers = headers
        self.runs = runs
        self.count = len(headers)
        self.size = len(template)
        begin, end, size, count = runs[-1] if runs else (0, 0, 0, MAX_PLAN_PACKETS)
        self.tail = size if end - begin == size * count and count < MAX_PLAN_PACKETS else 0


def plan_packets(packets: Sequence[tuple[bytes, int, int]], trailer: int, pad: int = 0) -> tuple[PacketPlan, ...]:
    """A frame's shared packets (``(payload, timestamp, marker)``) as :class:`PacketPlan` s for a
    profile whose tag is ``trailer`` bytes (:data:`TRAILERS`): built once per frame and profile,
    used by every viewer. Each plan fits this thread's scratch buffer (:data:`SCRATCH` bytes) and
    holds :data:`MAX_PLAN_PACKETS` at most. :class:`SrtpProtectError` for a payload too long for
    one packet (:data:`MAX_PACKET`).

    ``pad``: a last packet at most that many bytes shorter than the one before it gets RTP
    padding (RFC 3550 5.1, at most :data:`MAX_PADDING`) up to that size, so that the last run's
    packets all have one size and another packet can close it (see :attr:`PacketPlan.tail`).
    The receiver strips the padding: the same payloads."""
    pad = min(pad, MAX_PADDING)
    plans: list[PacketPlan] = []
    template = bytearray()
    headers: list[tuple[int, int, int, int]] = []
    sizes: list[int] = []
    last = len(packets) - 1
    for index, (payload, timestamp, marker) in enumerate(packets):
        size = len(payload) + _RTP_HEADER
        if size + trailer > MAX_PACKET:
            raise SrtpProtectError(f"cannot protect a {size}-byte packet")
        if headers and (len(template) + size + trailer > SCRATCH or len(headers) == MAX_PLAN_PACKETS):
            plans.append(PacketPlan(bytes(template), tuple(headers), _runs(sizes)))
            template.clear()
            headers.clear()
            sizes.clear()
        bits = 0x8000 | marker
        padding = sizes[-1] - trailer - size if index == last and sizes else 0
        if 0 < padding <= pad and len(template) + size + padding + trailer <= SCRATCH:
            bits |= 0x2000
        else:
            padding = 0
        headers.append((len(template), size + padding, bits, timestamp))
        template += bytes(_RTP_HEADER)
        template += payload
        if padding:
            template += bytes(padding - 1)
            template.append(padding)
        template += bytes(trailer)
        sizes.append(size + padding + trailer)
    if headers:
        plans.append(PacketPlan(bytes(template), tuple(headers), _runs(sizes)))
    return tuple(plans)


def _runs(sizes: list[int]) -> tuple[tuple[int, int, int, int], ...]:
    """The sends of packets of ``sizes`` laid back to back: each run of equal sizes (a shorter
    last one closing it) as ``(begin, end, segment size, count)``."""
    runs: list[tuple[int, int, int, int]] = []
    begin = index = 0
    count = len(sizes)
    while index < count:
        size = sizes[index]
        following = index + 1
        while following < count and sizes[following] == size:
            following += 1
        if following < count and sizes[following] < size:
            following += 1  # a shorter last datagram closes the run
        end = begin + sum(sizes[index:following])
        runs.append((begin, end, size, following - index))
        begin = end
        index = following
    return tuple(runs)


class SrtpError(RemoteProtocolError):
    """An SRTP or SRTCP packet from the peer that cannot be unprotected (authentication,
    replay, size)."""


class SrtpProtectError(LocalProtocolError):
    """An RTP or RTCP packet of ours that cannot be protected."""


class _Direction:
    """One libsrtp session with an "any SSRC" template, and the SSRCs it holds, bounded."""

    def __init__(self, profile: int, key: bytes, ssrc_type: int, *, repeat: bool, window: int | None) -> None:
        policy = pylibsrtp.Policy(key=key, ssrc_type=ssrc_type, srtp_profile=profile)
        policy.allow_repeat_tx = repeat
        if window is not None:
            policy.window_size = window
        self.session = pylibsrtp.Session(policy)
        self.ssrcs: OrderedDict[int, None] = OrderedDict()

    def run(self, process: Callable[[bytes], bytes], packet: bytes, ssrc_at: int) -> bytes:
        result = process(packet)
        ssrc = int.from_bytes(packet[ssrc_at : ssrc_at + 4], "big")
        if ssrc in self.ssrcs:
            self.ssrcs.move_to_end(ssrc)
        else:
            self.ssrcs[ssrc] = None
            if len(self.ssrcs) > MAX_SSRCS:
                oldest, _ = self.ssrcs.popitem(last=False)
                try:
                    self.session.remove_stream(oldest)
                except pylibsrtp.Error:
                    pass
        return result


class SrtpContext:
    """SRTP/SRTCP protection for one association: outbound with ``keys.local_*``, inbound
    with ``keys.remote_*``."""

    def __init__(self, keys: SrtpKeys) -> None:
        profile = PROFILES.get(keys.profile)
        if profile is None:
            raise ValueError(f"unknown SRTP profile {keys.profile!r}")
        key_len, salt_len = SRTP_KEY_LENGTHS[keys.profile]
        for key, salt in ((keys.local_key, keys.local_salt), (keys.remote_key, keys.remote_salt)):
            if len(key) != key_len or len(salt) != salt_len:
                raise ValueError(f"{keys.profile} takes a {key_len}-byte key and a {salt_len}-byte salt")
        self.profile = keys.profile
        self.trailer: int | None = None
        """The tag's size when :meth:`protect_plan` can be used (libsrtp in place), else ``None``."""
        self._outbound = _Direction(
            profile,
            keys.local_key + keys.local_salt,
            pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
            repeat=True,
            window=OUTBOUND_WINDOW,
        )
        self._inbound = _Direction(
            profile,
            keys.remote_key + keys.remote_salt,
            pylibsrtp.Policy.SSRC_ANY_INBOUND,
            repeat=False,
            window=None,
        )
        self._context: Any = None
        """libsrtp's outbound session, for :meth:`protect_packets` (``None``: the public path)."""
        if _srtp_protect is not None:
            try:
                self._context = self._outbound.session._srtp[0]
            except (AttributeError, TypeError, IndexError):  # pragma: no cover - another pylibsrtp
                self._context = None
        if self._context is not None:
            self.trailer = TRAILERS[keys.profile]

    def protect_packets(
        self, packets: Sequence[tuple[bytes, int, int]], start: int, second: int, sequence: int, ssrc: int
    ) -> tuple[memoryview, list[int]]:
        """Build and protect RTP packets back to back in this thread's scratch buffer, from
        ``packets[start:]`` (shared ``(payload, timestamp, marker)``, the marker ``0x80`` or
        ``0``): each gets the header ``0x80``, ``second | marker`` (``second``: the payload
        type), ``sequence`` counted up from the one given, the timestamp and ``ssrc``.

        Returns the buffer and the end offset of each packet built: as many as fit in
        :data:`SCRATCH` bytes (at least one); the caller sends them before the next call on
        this thread, and calls again for the rest. :class:`SrtpProtectError` for a payload
        too long for one packet or a packet libsrtp refuses (nothing of that call is valid)."""
        buffer, view, pointer, length = _scratch.parts
        ends: list[int] = []
        pack = _HEADER.pack_into
        context = self._context
        offset = 0
        count = len(packets)
        index = start
        if context is None:
            protect = self._outbound.session.protect
            while index < count:
                payload, timestamp, marker = packets[index]
                size = len(payload) + _RTP_HEADER
                if size + _TRAILER > MAX_PACKET:
                    raise SrtpProtectError(f"cannot protect a {size}-byte packet")
                if ends and offset + size + _TRAILER > SCRATCH:
                    break
                try:
                    data = protect(_HEADER.pack(0x80, second | marker, sequence, timestamp, ssrc) + payload)
                except (pylibsrtp.Error, ValueError) as error:
                    raise SrtpProtectError(f"cannot protect a {size}-byte packet: {error}") from None
                end = offset + len(data)
                buffer[offset:end] = data
                offset = end
                ends.append(end)
                sequence = (sequence + 1) & 0xFFFF
                index += 1
            return view, ends
        call = _srtp_protect
        while index < count:
            payload, timestamp, marker = packets[index]
            size = len(payload) + _RTP_HEADER
            if size + _TRAILER > MAX_PACKET:
                raise SrtpProtectError(f"cannot protect a {size}-byte packet")
            if ends and offset + size + _TRAILER > SCRATCH:
                break
            pack(buffer, offset, 0x80, second | marker, sequence, timestamp, ssrc)
            buffer[offset + _RTP_HEADER : offset + size] = payload
            length[0] = size
            status = call(context, pointer + offset, length)
            if status:
                raise SrtpProtectError(f"cannot protect a {size}-byte packet: libsrtp error {status}")
            offset += length[0]
            ends.append(offset)
            sequence = (sequence + 1) & 0xFFFF
            index += 1
        return view, ends

    def protect_plan(self, plan: PacketPlan, payload_type: int, sequence: int, ssrc: int) -> memoryview:
        """The packets of ``plan`` (made for this profile's :attr:`trailer`) with the headers
        ``0x80``, ``payload_type | marker``, ``sequence`` counted up, the timestamp and ``ssrc``,
        protected in place in this thread's scratch buffer: a view of it, valid until the next
        call on this thread (send ``plan.runs`` of it at once). The viewer's hot path: the
        template is copied with one slice assignment and each packet costs a header write and
        libsrtp's call. :class:`SrtpProtectError` for a packet libsrtp refuses (nothing of that
        call is valid) or without the in-place path (:attr:`trailer` is ``None``)."""
        context = self._context
        trailer = self.trailer
        if context is None or trailer is None:
            raise SrtpProtectError("no in-place SRTP here: use protect_packets")
        buffer, view, pointer, length = _scratch.parts
        buffer[: plan.size] = plan.template
        pack = _HEADER_BITS.pack_into
        call = _srtp_protect
        for offset, size, bits, timestamp in plan.headers:
            pack(buffer, offset, bits | payload_type, sequence, timestamp, ssrc)
            length[0] = size
            status = call(context, pointer + offset, length)
            if status or length[0] != size + trailer:
                raise SrtpProtectError(f"cannot protect a {size}-byte packet: libsrtp error {status}")
            sequence = (sequence + 1) & 0xFFFF
        return view[: plan.size]

    def protect_one(self, payload: bytes, timestamp: int, second: int, sequence: int, ssrc: int) -> memoryview:
        """:meth:`protect_packets` for one packet (an Opus frame, most of a viewer's packets):
        the packet built and protected at the start of this thread's scratch buffer, returned as
        a view of it that is valid until the next call on this thread (send it at once).
        ``second`` is the payload type or'ed with the marker. :class:`SrtpProtectError` as there."""
        size = len(payload) + _RTP_HEADER
        if size + _TRAILER > MAX_PACKET:
            raise SrtpProtectError(f"cannot protect a {size}-byte packet")
        context = self._context
        if context is None:
            view, ends = self.protect_packets(((payload, timestamp, second & 0x80),), 0, second & 0x7F, sequence, ssrc)
            return view[: ends[0]]
        buffer, view, pointer, length = _scratch.parts
        _HEADER.pack_into(buffer, 0, 0x80, second, sequence, timestamp, ssrc)
        buffer[_RTP_HEADER:size] = payload
        length[0] = size
        status = _srtp_protect(context, pointer, length)
        if status:
            raise SrtpProtectError(f"cannot protect a {size}-byte packet: libsrtp error {status}")
        return view[: length[0]]

    def protect_after(
        self, offset: int, payload: bytes, timestamp: int, second: int, sequence: int, ssrc: int
    ) -> memoryview:
        """:meth:`protect_one` with the packet written at ``offset`` of this thread's scratch
        buffer, after a plan :meth:`protect_plan` just wrote (``offset``: its size, at most
        :data:`SCRATCH`): the buffer up to the packet's end, to send at once (the plan's runs,
        the last one closed by this packet). :class:`SrtpProtectError` as :meth:`protect_plan`."""
        context = self._context
        size = len(payload) + _RTP_HEADER
        if context is None or size + _TRAILER > MAX_PACKET or offset > SCRATCH:
            raise SrtpProtectError(f"cannot protect a {size}-byte packet after {offset} bytes in place")
        buffer, view, pointer, length = _scratch.parts
        _HEADER.pack_into(buffer, offset, 0x80, second, sequence, timestamp, ssrc)
        buffer[offset + _RTP_HEADER : offset + size] = payload
        length[0] = size
        status = _srtp_protect(context, pointer + offset, length)
        if status:
            raise SrtpProtectError(f"cannot protect a {size}-byte packet: libsrtp error {status}")
        return view[: offset + length[0]]

    def protect(self, rtp: bytes) -> bytes:
        """SRTP of the RTP packet ``rtp`` (again for a NACK resend: allowed)."""
        return self._protect(self._outbound.session.protect, rtp, _RTP_HEADER)

    def protect_rtcp(self, rtcp: bytes) -> bytes:
        """SRTCP of the (compound) RTCP packet ``rtcp``."""
        return self._protect(self._outbound.session.protect_rtcp, rtcp, _RTCP_HEADER)

    def unprotect(self, srtp: bytes) -> bytes:
        """The RTP packet inside ``srtp``, authenticated and not a replay."""
        return self._unprotect(self._inbound.session.unprotect, srtp, _RTP_HEADER, 8)

    def unprotect_rtcp(self, srtcp: bytes) -> bytes:
        """The RTCP packet inside ``srtcp``, authenticated and not a replay."""
        return self._unprotect(self._inbound.session.unprotect_rtcp, srtcp, _RTCP_HEADER, 4)

    def _protect(self, process: Callable[[bytes], bytes], packet: bytes, header: int) -> bytes:
        if len(packet) < header or packet[0] >> 6 != 2:
            raise SrtpProtectError(f"not an RTP/RTCP packet ({len(packet)} bytes)")
        try:
            return process(bytes(packet))  # our own SSRCs: not tracked (see the module docstring)
        except (pylibsrtp.Error, ValueError) as error:
            raise SrtpProtectError(f"cannot protect a {len(packet)}-byte packet: {error}") from None

    def _unprotect(self, process: Callable[[bytes], bytes], packet: bytes, header: int, ssrc_at: int) -> bytes:
        if len(packet) < header or packet[0] >> 6 != 2:
            raise SrtpError(f"not an SRTP/SRTCP packet ({len(packet)} bytes)")
        if len(packet) > MAX_PACKET:
            raise SrtpError(f"a {len(packet)}-byte packet is over {MAX_PACKET}")
        try:
            return self._inbound.run(process, bytes(packet), ssrc_at)
        except (pylibsrtp.Error, ValueError) as error:
            raise SrtpError(f"cannot unprotect a {len(packet)}-byte packet: {error}") from None
