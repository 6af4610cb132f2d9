"""A sans-IO MPEG-TS demuxer (ISO/IEC 13818-1): transport packets in, the kernel's frames out.

:class:`TsDemuxer` is what the UDP MPEG-TS ingest and the SRT ingest feed their payloads to:
``feed(bytes)`` in any chunking, :class:`~arcly_trio.core.frame.Frame` objects out (config
frames first, then media), :attr:`TsDemuxer.stats` for what went wrong on the way. It never
touches a clock or a socket and imports nothing of trio.

Packets
    188-byte packets, found by their ``0x47`` sync byte. A lost sync is found again on the next
    two sync bytes 188 bytes apart (counted in :attr:`TsStats.resyncs`, the bytes skipped in
    :attr:`TsStats.skipped_bytes`). Continuity counters are checked on every PID the demuxer
    follows: a repeated counter is a duplicate packet (dropped), a jump is a continuity error
    (:attr:`TsStats.continuity_errors`, the packets missing in :attr:`TsStats.lost_packets`),
    and the elementary stream packet being assembled on that PID is dropped. Packets with the
    transport_error_indicator set or a scrambled payload count as lost too. A
    discontinuity_indicator in the adaptation field resets the counter check.

Tables
    The PAT (PID 0) names the programs; the first program (other than the network PID, program
    0) is followed. Its PMT names the elementary streams: the first video stream (H.264
    ``0x1B``, HEVC ``0x24``) becomes video track 0 and the first audio stream (AAC ADTS
    ``0x0F``, AAC LATM ``0x11``, MPEG audio ``0x03``/``0x04`` when it is layer III, Opus: stream
    type ``0x06`` with an ``Opus`` registration descriptor) audio track 0. Every other PID
    (SCTE-35 ``0x86``, teletext, a second program, unknown types) is ignored, without state.
    Sections are checked with their CRC-32; a bad one is counted and ignored; a table repeated
    unchanged (muxers repeat them every 100 ms or so) is not parsed again. A new PMT version
    that changes a stream's PID or type restarts that stream (a new config frame comes before
    its next frame).

Elementary streams
    H.264/HEVC access units (one PES packet each) are converted from Annex B to 4-byte
    length-prefixed NAL units; access unit delimiters and filler data are dropped, parameter
    sets stay in-band. When the SPS/PPS (and VPS) change, a config frame with the decoder
    configuration record built from them (``avcC``/``hvcC``, by
    :func:`~arcly_trio.media.codecs.avc_config` /
    :func:`~arcly_trio.media.codecs.hevc_config_record`) comes before the frame. Video starts at
    the first random access picture (IDR/IRAP) after its parameter sets, and after any loss on
    the video PID it starts again at the next one: a picture with a gap before it is dropped
    (:attr:`TsStats.dropped_frames`), not passed on broken. AAC ADTS frames become raw AAC
    frames with an AudioSpecificConfig config frame built from the ADTS header (again when it
    changes); each ADTS frame after the first of a PES packet is 1024 samples later. LATM AAC
    (LOAS sync frames) is read in the layout LOAS streams use (audioMuxVersion 0, one program,
    layer and subframe, frameLengthType 0, the AudioSpecificConfig of the last StreamMuxConfig);
    other layouts are counted as malformed. Opus access units are cut by their control headers
    (the "Encapsulation of Opus in MPEG-2 Transport Streams" of opus-codec.org), the trim and
    extension fields skipped; the config frame is an ``OpusHead`` for the channel count of the PMT's
    extension descriptor (mono or stereo; more channels are not supported and the stream is
    ignored). MPEG audio layer III PES payloads become ``mp3`` frames as they are; other layers
    are dropped.

Timestamps
    PTS/DTS (33 bits, 90 kHz) are unwrapped into one timeline: each is read as the nearest
    value, modulo 2**33, to the last one seen on any stream, so the 26.5-hour wrap never jumps.
    Milliseconds are counted from the first PES timestamp of the stream (its DTS), so the
    first frame is at 0 (audio that starts slightly before the video may be a few ms below 0),
    floor-divided from 90 kHz. The PCR of the program's PCR PID is unwrapped the same way and
    reported in :attr:`TsStats.pcr_ms` on that timeline.

Attacker's view
    Everything comes from the peer. What the demuxer holds is bounded whatever the bytes:
    a PES packet being assembled is at most :attr:`TsLimits.max_video_pes` (video) or
    :attr:`TsLimits.max_audio_pes` (audio) bytes (past that it is dropped and counted in
    :attr:`TsStats.oversized_pes`), a table section at most 1024 bytes, a leftover of under two
    packets; at most :attr:`TsLimits.max_programs` PAT entries and
    :attr:`TsLimits.max_streams` PMT entries are read, and only two elementary streams are
    followed. NAL units per access unit are capped by the codec parsers. :attr:`TsDemuxer.held`
    counts the bytes really held.

Error policy
    Damage a real network makes (loss, duplicates, garbage between packets, bad CRCs, truncated
    or malformed PES packets, ADTS frames or parameter sets) is counted in :class:`TsStats` and
    skipped; the demuxer goes on. Only input that is not MPEG-TS at all (no sync for
    :attr:`TsLimits.max_unsynced` bytes) raises :class:`TsError` (a
    :class:`~arcly_trio.core.errors.RemoteProtocolError`): the caller ends that one session.
    Nothing else escapes on arbitrary bytes.
"""

from __future__ import annotations

from typing import Final

import attrs

from arcly_trio.core.errors import RemoteProtocolError
from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.media.codecs import (
    AAC_SAMPLE_RATES,
    H264_NAL_AUD,
    H264_NAL_PPS,
    H264_NAL_SPS,
    HEVC_NAL_AUD,
    HEVC_NAL_PPS,
    HEVC_NAL_SPS,
    HEVC_NAL_VPS,
    MAX_NAL_UNITS,
    CodecError,
    UnsupportedCodec,
    has_idr,
    hevc_config_record,
    opus_head,
    parse_audio_specific_config,
)
from arcly_trio.media.codecs.h264 import avc_config
from arcly_trio.media.mpegts import PACKET_SIZE, PAT_PID, STREAM_TYPES, crc32_mpeg2

__all__ = ["TsDemuxer", "TsError", "TsLimits", "TsStats", "annexb_nal_units"]

_SYNC: Final = 0x47
_WRAP: Final = 1 << 33
_PES_CHUNK: Final = PACKET_SIZE - 4
"""The payload of a packet with no adaptation field."""
_HALF: Final = 1 << 32
_MAX_SECTION: Final = 1024
_H264_FILLER: Final = 12
_HEVC_FILLER: Final = 38
_OPUS_STREAM_TYPE: Final = 0x06
_MP3_STREAM_TYPES: Final = frozenset({0x03, 0x04})
_VIDEO_TYPES: Final = {STREAM_TYPES["h264"]: "h264", STREAM_TYPES["hevc"]: "hevc"}
_AAC_TYPE: Final = STREAM_TYPES["aac"]
_LATM_TYPE: Final = 0x11
# AAC object types whose AudioSpecificConfig ends with a GASpecificConfig (ISO/IEC 14496-3, 1.6.2.1).
_GA_OBJECT_TYPES: Final = frozenset({1, 2, 3, 4, 6, 7, 17, 19, 20, 21, 22, 23})
# PES stream_ids without the optional PES header (ISO/IEC 13818-1, 2.4.3.7).
_NO_PES_HEADER: Final = frozenset({0xBC, 0xBE, 0xBF, 0xF0, 0xF1, 0xF2, 0xF8, 0xFF})
# Opus frame sizes in 48 kHz samples by TOC config (RFC 6716, 3.1).
_OPUS_FRAME_SAMPLES: Final = (480, 960, 1920, 2880) * 3 + (480, 960) * 2 + (120, 240, 480, 960) * 4


class TsError(RemoteProtocolError):
    """The bytes are not an MPEG transport stream (no sync byte for too long)."""


@attrs.frozen
class TsLimits:
    """What one demuxer may hold (see the module docstring's attacker's view).

    Attributes:
        max_video_pes: bytes of one video PES packet (an access unit) being assembled.
        max_audio_pes: bytes of one audio PES packet being assembled.
        max_programs: PAT entries read.
        max_streams: PMT elementary stream entries read.
        max_unsynced: bytes without a sync byte before :class:`TsError`.
    """

    max_video_pes: int = 8 * 1024 * 1024
    max_audio_pes: int = 64 * 1024
    max_programs: int = 64
    max_streams: int = 32
    max_unsynced: int = 64 * 1024


@attrs.define
class TsStats:
    """What the demuxer saw (live counters: read them, do not change them).

    Attributes:
        packets: transport packets read.
        bytes: bytes fed.
        resyncs: times the sync byte was lost and found again.
        skipped_bytes: bytes skipped while looking for the sync byte.
        continuity_errors: continuity counter jumps on followed PIDs.
        lost_packets: packets missing by those jumps (plus transport errors and scrambled ones).
        duplicates: duplicate packets dropped.
        transport_errors: packets with the transport_error_indicator set.
        scrambled: scrambled packets (dropped: the demuxer has no keys).
        crc_errors: PAT/PMT sections with a bad CRC-32.
        oversized_pes: PES packets dropped for going past their limit.
        malformed: PES packets, ADTS frames, Opus access units or parameter sets that did not
            parse (dropped).
        dropped_frames: video frames dropped while waiting for a keyframe (at the start, after
            loss).
        frames: media frames produced (configs not counted).
        pcr_ms: the last PCR of the program, on the frames' timeline (``None`` before one).
        programs: programs in the last PAT.
        video: the video codec followed, or ``None``.
        audio: the audio codec followed, or ``None``.
    """

    packets: int = 0
    bytes: int = 0
    resyncs: int = 0
    skipped_bytes: int = 0
    continuity_errors: int = 0
    lost_packets: int = 0
    duplicates: int = 0
    transport_errors: int = 0
    scrambled: int = 0
    crc_errors: int = 0
    oversized_pes: int = 0
    malformed: int = 0
    dropped_frames: int = 0
    frames: int = 0
    pcr_ms: int | None = None
    programs: int = 0
    video: str | None = None
    audio: str | None = None


def annexb_nal_units(data: bytes, max_units: int = MAX_NAL_UNITS) -> list[bytes]:
    """The NAL units of an Annex B byte stream (after 3- or 4-byte start codes, trailing zero
    bytes removed, empty units dropped). Bytes before the first start code are ignored. More
    than ``max_units`` units raise :class:`~arcly_trio.media.codecs.CodecError`."""
    units: list[bytes] = []
    start = data.find(b"\x00\x00\x01")
    while start >= 0:
        begin = start + 3
        end = data.find(b"\x00\x00\x01", begin)
        stop = len(data) if end < 0 else end
        while stop > begin and data[stop - 1] == 0:
            stop -= 1
        if stop > begin:
            if len(units) >= max_units:
                raise CodecError(f"access unit: more than {max_units} NAL units")
            units.append(data[begin:stop])
        start = end
    return units


def _pes_timestamp(data: bytes, pos: int) -> int:
    return (
        ((data[pos] >> 1) & 0x07) << 30
        | data[pos + 1] << 22
        | (data[pos + 2] >> 1) << 15
        | data[pos + 3] << 7
        | data[pos + 4] >> 1
    )


def _opus_samples(packet: bytes) -> int:
    """Duration of an Opus packet in 48 kHz samples (RFC 6716, 3.1); 0 if it is malformed."""
    if not packet:
        return 0
    toc = packet[0]
    size = _OPUS_FRAME_SAMPLES[toc >> 3]
    code = toc & 0x03
    if code == 0:
        count = 1
    elif code in (1, 2):
        count = 2
    elif len(packet) < 2:
        return 0
    else:
        count = packet[1] & 0x3F
    total = size * count
    return total if total <= 5760 else 0  # at most 120 ms per packet


class _Bits:
    """MSB-first reads from a short byte string held as one integer (LATM elements are not
    byte-aligned inside)."""

    __slots__ = ("left", "value")

    def __init__(self, data: bytes) -> None:
        self.value = int.from_bytes(data, "big")
        self.left = len(data) * 8

    def u(self, n: int) -> int:
        if n > self.left:
            raise CodecError("LATM AudioMuxElement is truncated")
        self.left -= n
        return (self.value >> self.left) & ((1 << n) - 1)


def _object_type(bits: _Bits) -> int:
    value = bits.u(5)
    return 32 + bits.u(6) if value == 31 else value


def _latm_audio_specific_config(bits: _Bits) -> bytes:
    """Read an AudioSpecificConfig inline in a StreamMuxConfig (its length is known only by
    parsing it) and return its bytes, padded to a byte boundary."""
    start = bits.left
    object_type = core = _object_type(bits)
    if bits.u(4) == 15:
        bits.u(24)
    channels = bits.u(4)
    if object_type in (5, 29):
        if bits.u(4) == 15:
            bits.u(24)
        core = _object_type(bits)
    if core not in _GA_OBJECT_TYPES or channels == 0:
        raise UnsupportedCodec(f"LATM: AAC object type {core} with channel configuration {channels}")
    bits.u(1)  # frameLengthFlag
    if bits.u(1):  # dependsOnCoreCoder
        bits.u(14)
    extension = bits.u(1)
    if core in (6, 20):
        bits.u(3)
    if extension:
        if core == 22:
            bits.u(16)
        if core in (17, 19, 20, 23):
            bits.u(3)
        bits.u(1)
    size = start - bits.left
    value = (bits.value >> bits.left) & ((1 << size) - 1)
    return (value << (-size % 8)).to_bytes((size + 7) // 8, "big")


def _audio_mux_element(element: bytes, config: bytes | None) -> tuple[bytes, bytes]:
    """The AudioSpecificConfig and the raw AAC frame of one AudioMuxElement (muxConfigPresent
    1) in the one layout LOAS streams use: audioMuxVersion 0, one program, one layer, one
    subframe, frameLengthType 0. Raises :class:`CodecError` for anything else."""
    bits = _Bits(element)
    if not bits.u(1):  # useSameStreamMux 0: a StreamMuxConfig follows
        if bits.u(1):
            raise UnsupportedCodec("LATM audioMuxVersion 1")
        if not bits.u(1) or bits.u(6) or bits.u(4) or bits.u(3):
            raise UnsupportedCodec("LATM with several programs, layers or subframes")
        config = _latm_audio_specific_config(bits)
        if bits.u(3):
            raise UnsupportedCodec("LATM frameLengthType other than 0")
        bits.u(8)  # latmBufferFullness
        if bits.u(1):  # otherDataPresent
            while bits.u(1):
                bits.u(8)
            bits.u(8)
        if bits.u(1):  # crcCheckPresent
            bits.u(8)
    if config is None:
        raise CodecError("LATM: a frame before any StreamMuxConfig")
    size = 0
    while True:
        byte = bits.u(8)
        size += byte
        if byte != 0xFF:
            break
    if size == 0:
        raise CodecError("LATM: an empty payload")
    return config, bits.u(size * 8).to_bytes(size, "big")


class _Clock:
    """Unwraps 33-bit 90 kHz values into one timeline and converts them to milliseconds."""

    __slots__ = ("base", "last")

    def __init__(self) -> None:
        self.base: int | None = None
        self.last: int | None = None

    def extend(self, value: int) -> int:
        last = self.last
        if last is None:
            self.last = value
            return value
        delta = (value - last) % _WRAP
        if delta >= _HALF:
            delta -= _WRAP
        self.last = last + delta
        return last + delta

    def ms(self, extended: int) -> int:
        if self.base is None:
            self.base = extended
        return (extended - self.base) // 90


class _Section:
    """A PSI section being assembled on one PID (PAT or PMT)."""

    __slots__ = ("cc", "data", "last", "pid")

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.cc: int | None = None
        self.data: bytearray | None = None
        self.last = b""  # the last section read (a repeat of it is not parsed again)


class _Es:
    """One followed elementary stream: its PES packet being assembled and its codec state."""

    __slots__ = (
        "audio_next",
        "carry",
        "channels",
        "chunks",
        "cc",
        "codec",
        "config",
        "expected",
        "kind",
        "latm_config",
        "limit",
        "needs_keyframe",
        "parameter_sets",
        "pending_config",
        "pid",
        "size",
        "stream_type",
    )

    def __init__(self, pid: int, stream_type: int, codec: str, kind: FrameKind, limit: int, channels: int) -> None:
        self.pid = pid
        self.stream_type = stream_type
        self.codec = codec
        self.kind = kind
        self.limit = limit
        self.channels = channels
        self.cc: int | None = None
        self.chunks: list[bytes] | None = None  # None: nothing being assembled (or dropped)
        self.size = 0
        self.expected: int | None = None  # whole PES size, 0 for unbounded, None until known
        self.config: bytes | None = None
        self.pending_config = False
        self.needs_keyframe = True
        self.parameter_sets: dict[int, tuple[bytes, ...]] = {}
        self.carry = b""  # the start of an ADTS frame that runs into the next PES packet
        self.audio_next: int | None = None  # extended 90 kHz time of the next audio frame
        self.latm_config: bytes | None = None  # the AudioSpecificConfig of the last StreamMuxConfig

    def drop(self) -> None:
        self.chunks = None
        self.size = 0
        self.expected = None
        self.carry = b""
        if self.kind is FrameKind.VIDEO:
            self.needs_keyframe = True


class TsDemuxer:
    """MPEG-TS bytes in, kernel frames out (see the module docstring).

    Args:
        limits: what one demuxer may hold.
    """

    def __init__(self, *, limits: TsLimits = TsLimits()) -> None:  # noqa: B008 (frozen)
        self.limits = limits
        self._stats = TsStats()
        self._buf = bytearray()
        self._unsynced = 0
        self._lost_sync = False
        self._pat = _Section(PAT_PID)
        self._pmt: _Section | None = None
        self._program: int | None = None
        self._pcr_pid: int | None = None
        self._es: dict[int, _Es] = {}
        self._clock = _Clock()
        self._out: list[Frame] = []

    @property
    def stats(self) -> TsStats:
        """The counters (a live object)."""
        return self._stats

    @property
    def held(self) -> int:
        """Bytes the demuxer holds for the peer now (leftover, sections, PES packets)."""
        total = len(self._buf) + len(self._pat.data or b"")
        if self._pmt is not None:
            total += len(self._pmt.data or b"")
        for es in self._es.values():
            total += es.size + len(es.carry)
        return total

    # --- bytes and packets ------------------------------------------------------------------

    def feed(self, data: bytes) -> list[Frame]:
        """Read ``data`` (any chunking) and return the frames it completed, configs first.

        Raises :class:`TsError` when no sync byte was found for
        :attr:`TsLimits.max_unsynced` bytes."""
        self._stats.bytes += len(data)
        held = self._buf
        buf: bytes | bytearray
        if held:
            held += data
            buf = held
        else:
            buf = data  # aligned input (the usual case): sliced without another copy
        pos, n = 0, len(buf)
        es_by_pid = self._es
        try:
            while n - pos >= PACKET_SIZE:
                left = n - pos
                if buf[pos] == _SYNC and (
                    left == PACKET_SIZE or (left >= 2 * PACKET_SIZE and buf[pos + PACKET_SIZE] == _SYNC)
                ):
                    self._unsynced = 0
                    self._lost_sync = False
                    # The fast path: a PES continuation (no error, no start, not scrambled, payload
                    # only) of a followed stream, in order, that neither completes nor overflows
                    # its PES packet: one more chunk. Anything else takes the general path.
                    head = buf[pos + 1]
                    flags = buf[pos + 3]
                    if not head & 0xC0 and flags & 0xF0 == 0x10:
                        pid = (head & 0x1F) << 8 | buf[pos + 2]
                        es = es_by_pid.get(pid)
                        if (
                            es is not None
                            and pid != PAT_PID
                            and (self._pmt is None or pid != self._pmt.pid)
                            and es.chunks is not None
                            and es.expected is not None
                            and es.cc is not None
                            and flags & 0x0F == (es.cc + 1) & 0x0F
                        ):
                            size = es.size + _PES_CHUNK
                            if size <= es.limit and (es.expected == 0 or size < es.expected):
                                es.cc = flags & 0x0F
                                es.chunks.append(bytes(buf[pos + 4 : pos + PACKET_SIZE]))
                                es.size = size
                                self._stats.packets += 1
                                pos += PACKET_SIZE
                                continue
                    self._packet(bytes(buf[pos : pos + PACKET_SIZE]))
                    pos += PACKET_SIZE
                    continue
                if buf[pos] == _SYNC and left < 2 * PACKET_SIZE:
                    break  # a packet and part of the next: wait for the rest to check its sync byte
                if not self._lost_sync:
                    self._lost_sync = True
                    self._stats.resyncs += 1
                found = self._find_sync(buf, pos + 1, n)
                skipped = found - pos
                self._stats.skipped_bytes += skipped
                self._unsynced += skipped
                pos = found
                if self._unsynced > self.limits.max_unsynced:
                    raise TsError(f"no MPEG-TS sync byte in {self._unsynced} bytes")
        finally:
            if buf is held:
                del held[:pos]
            else:
                held += buf[pos:]
        out, self._out = self._out, []
        return out

    @staticmethod
    def _find_sync(buf: bytes | bytearray, start: int, n: int) -> int:
        """The next position that looks like a packet start (a sync byte, and another one
        packet later when there is room to check), or where to wait for more bytes."""
        pos = start
        while True:
            pos = buf.find(_SYNC, pos)
            if pos < 0:
                return n  # no sync byte at all: none of these bytes can start a packet
            if pos + PACKET_SIZE >= n or buf[pos + PACKET_SIZE] == _SYNC:
                return pos
            pos += 1

    def flush(self) -> list[Frame]:
        """The end of the stream: return the frames of the PES packets still unbounded (the
        last video access unit), and forget the partial bytes."""
        for es in self._es.values():
            if es.chunks is not None and es.expected == 0:
                self._finish(es)
            es.drop()
        self._buf.clear()
        out, self._out = self._out, []
        return out

    def _packet(self, packet: bytes) -> None:
        stats = self._stats
        stats.packets += 1
        pid = ((packet[1] & 0x1F) << 8) | packet[2]
        if packet[1] & 0x80:
            stats.transport_errors += 1
            stats.lost_packets += 1
            target = self._es.get(pid)
            if target is not None:
                target.drop()
            return
        flags = packet[3]
        afc = (flags >> 4) & 0x03
        pos = 4
        discontinuity = False
        if afc & 0x02:
            length = packet[4]
            pos = 5 + length
            if pos > PACKET_SIZE or (afc == 0x03 and length > 182):
                stats.malformed += 1
                return
            if length:
                af = packet[5]
                discontinuity = bool(af & 0x80)
                if af & 0x10 and length >= 7 and pid == self._pcr_pid:
                    # The PCR and the PES timestamps share the program clock (90 kHz base).
                    extended = self._clock.extend(int.from_bytes(packet[6:11], "big") >> 7)
                    if self._clock.base is not None:
                        stats.pcr_ms = (extended - self._clock.base) // 90
        if not afc & 0x01:
            return
        if pid == PAT_PID:
            section: _Section | _Es | None = self._pat
        elif self._pmt is not None and pid == self._pmt.pid:
            section = self._pmt
        else:
            section = self._es.get(pid)
            if section is None:
                return
        cc = flags & 0x0F
        last = section.cc
        if last is not None and not discontinuity:
            if cc == last:
                stats.duplicates += 1
                return
            expected = (last + 1) & 0x0F
            if cc != expected:
                stats.continuity_errors += 1
                stats.lost_packets += (cc - expected) & 0x0F
                if isinstance(section, _Es):
                    section.drop()
                else:
                    section.data = None
        section.cc = cc
        if flags & 0xC0:
            stats.scrambled += 1
            stats.lost_packets += 1
            if isinstance(section, _Es):
                section.drop()
            return
        start = bool(packet[1] & 0x40)
        payload = packet[pos:]
        if isinstance(section, _Es):
            self._es_payload(section, start, payload)
        else:
            self._section_payload(section, start, payload)

    # --- tables -----------------------------------------------------------------------------

    def _section_payload(self, section: _Section, start: bool, payload: bytes) -> None:
        if start:
            if not payload:
                return
            pointer = payload[0]
            if section.data is not None and pointer:
                section.data += payload[1 : 1 + pointer]
                self._try_section(section)
            payload = payload[1 + pointer :]
            while payload and payload[0] != 0xFF:
                section.data = bytearray(payload)
                payload = self._try_section(section)
            return
        if section.data is None:
            return
        section.data += payload
        self._try_section(section)

    def _try_section(self, section: _Section) -> bytes:
        """Parse the section if it is complete; return the bytes after it."""
        data = section.data
        if data is None or len(data) < 3:
            return b""
        length = 3 + (((data[1] & 0x0F) << 8) | data[2])
        if length > _MAX_SECTION or length < 12:
            self._stats.malformed += 1
            section.data = None
            return b""
        if len(data) < length:
            return b""
        body = bytes(data[:length])
        rest = bytes(data[length:])
        section.data = None
        if body == section.last:
            return rest  # the same table again (muxers repeat them every 100 ms or so)
        if crc32_mpeg2(body) != 0:
            self._stats.crc_errors += 1
            return rest
        if not body[5] & 0x01:  # current_next_indicator 0: not in force yet
            return rest
        section.last = body
        if section.pid == PAT_PID and body[0] == 0x00:
            self._read_pat(body)
        elif section is self._pmt and body[0] == 0x02:
            self._read_pmt(body)
        return rest

    def _read_pat(self, body: bytes) -> None:
        entries = [
            (body[i] << 8 | body[i + 1], (body[i + 2] & 0x1F) << 8 | body[i + 3])
            for i in range(8, len(body) - 4 - 3, 4)
        ]
        entries = entries[: self.limits.max_programs]
        programs = [(number, pid) for number, pid in entries if number != 0]
        self._stats.programs = len(programs)
        if not programs:
            return
        chosen = next(((n, p) for n, p in programs if n == self._program), programs[0])
        number, pid = chosen
        if pid == PAT_PID:
            return
        if self._pmt is None or self._pmt.pid != pid or self._program != number:
            self._program = number
            self._pmt = _Section(pid)

    def _read_pmt(self, body: bytes) -> None:
        if (body[3] << 8 | body[4]) != self._program:
            return
        end = len(body) - 4
        self._pcr_pid = (body[8] & 0x1F) << 8 | body[9]
        pos = 12 + ((body[10] & 0x0F) << 8 | body[11])
        video: _Es | None = None
        audio: _Es | None = None
        count = 0
        while pos + 5 <= end and count < self.limits.max_streams:
            count += 1
            stream_type = body[pos]
            pid = (body[pos + 1] & 0x1F) << 8 | body[pos + 2]
            info_end = pos + 5 + ((body[pos + 3] & 0x0F) << 8 | body[pos + 4])
            descriptors = body[pos + 5 : min(info_end, end)]
            pos = info_end
            if pid == PAT_PID or (self._pmt is not None and pid == self._pmt.pid):
                continue
            if video is None and stream_type in _VIDEO_TYPES:
                video = self._stream(pid, stream_type, _VIDEO_TYPES[stream_type], FrameKind.VIDEO, 2)
            elif audio is None and (found := self._audio_codec(stream_type, descriptors)) is not None:
                codec, channels = found
                audio = self._stream(pid, stream_type, codec, FrameKind.AUDIO, channels)
        streams = {es.pid: es for es in (video, audio) if es is not None}
        for old in self._es.values():
            if streams.get(old.pid) is not old and old.chunks is not None and old.expected == 0:
                self._finish(old)  # the last access unit of a stream the new PMT replaces
        self._es = streams
        self._stats.video = video.codec if video else None
        self._stats.audio = audio.codec if audio else None

    def _audio_codec(self, stream_type: int, descriptors: bytes) -> tuple[str, int] | None:
        if stream_type == _AAC_TYPE:
            return "aac", 2
        if stream_type == _LATM_TYPE:
            return "aac", 0  # channels 0: LATM framing
        if stream_type in _MP3_STREAM_TYPES:
            return "mp3", 2
        if stream_type != _OPUS_STREAM_TYPE:
            return None
        opus, channels = False, 2
        pos = 0
        while pos + 2 <= len(descriptors):
            tag, length = descriptors[pos], descriptors[pos + 1]
            value = descriptors[pos + 2 : pos + 2 + length]
            pos += 2 + length
            if tag == 0x05 and value[:4] == b"Opus":
                opus = True
            elif tag == 0x7F and len(value) >= 2 and value[0] == 0x80:
                code = value[1]
                channels = code if 1 <= code <= 8 else 2
        if not opus or channels > 2:
            return None
        return "opus", channels

    def _stream(self, pid: int, stream_type: int, codec: str, kind: FrameKind, channels: int) -> _Es:
        old = self._es.get(pid)
        if old is not None and old.stream_type == stream_type and old.codec == codec and old.channels == channels:
            return old
        limit = self.limits.max_video_pes if kind is FrameKind.VIDEO else self.limits.max_audio_pes
        return _Es(pid, stream_type, codec, kind, limit, channels)

    # --- PES packets ------------------------------------------------------------------------

    def _es_payload(self, es: _Es, start: bool, payload: bytes) -> None:
        if start:
            if es.chunks is not None:
                if es.expected == 0:
                    self._finish(es)
                else:  # a bounded PES packet that did not get all its bytes
                    self._stats.malformed += 1
                    es.drop()
            es.chunks = []
            es.size = 0
            es.expected = None
            if self._clock.base is None:
                self._start_clock(payload)
        elif es.chunks is None:
            return
        if es.size + len(payload) > es.limit:
            self._stats.oversized_pes += 1
            es.drop()
            return
        es.chunks.append(payload)
        es.size += len(payload)
        if es.expected is None and es.size >= 6:
            head = b"".join(es.chunks)[:6] if len(es.chunks[0]) < 6 else es.chunks[0]
            if head[:3] != b"\x00\x00\x01":
                self._stats.malformed += 1
                es.drop()
                return
            length = head[4] << 8 | head[5]
            es.expected = 6 + length if length else 0
        if es.expected and es.size >= es.expected:
            self._finish(es)
            es.chunks = None
            es.size = 0
            es.expected = None

    def _start_clock(self, head: bytes) -> None:
        """Start the timeline at the DTS of the first PES packet that begins in the stream (not
        the first one completed: audio PES packets complete before the video one around them)."""
        if len(head) < 19 or head[:3] != b"\x00\x00\x01" or head[3] in _NO_PES_HEADER or head[6] & 0xC0 != 0x80:
            return
        flags = head[7] >> 6
        if flags == 2 and head[8] >= 5:
            self._clock.base = self._clock.extend(_pes_timestamp(head, 9))
        elif flags == 3 and head[8] >= 10:
            self._clock.base = self._clock.extend(_pes_timestamp(head, 14))

    def _finish(self, es: _Es) -> None:
        """Turn the assembled PES packet of ``es`` into frames."""
        chunks, expected = es.chunks or [], es.expected
        es.chunks, es.size, es.expected = None, 0, None
        data = b"".join(chunks)
        if expected:
            data = data[:expected]
        if len(data) < 6 or data[3] in _NO_PES_HEADER:
            self._stats.malformed += 1
            return
        if len(data) < 9 or data[6] & 0xC0 != 0x80:
            self._stats.malformed += 1
            return
        flags = data[7] >> 6
        start = 9 + data[8]
        if start > len(data) or (flags == 2 and data[8] < 5) or (flags == 3 and data[8] < 10) or flags == 1:
            self._stats.malformed += 1
            return
        pts = dts = None
        if flags & 0x02:
            pts = self._clock.extend(_pes_timestamp(data, 9))
            dts = self._clock.extend(_pes_timestamp(data, 14)) if flags == 3 else pts
            if self._clock.base is None:
                self._clock.base = dts
        payload = data[start:]
        try:
            if es.kind is FrameKind.VIDEO:
                self._video(es, payload, pts, dts)
            elif es.codec == "aac" and es.stream_type == _LATM_TYPE:
                self._latm(es, payload, pts)
            elif es.codec == "aac":
                self._aac(es, payload, pts)
            elif es.codec == "opus":
                self._opus(es, payload, pts)
            else:
                self._mp3(es, payload, pts)
        except CodecError:
            self._stats.malformed += 1
            if es.kind is FrameKind.VIDEO:
                es.needs_keyframe = True

    def _ms(self, extended: int) -> int:
        return self._clock.ms(extended)

    def _emit(self, es: _Es, pts: int, dts: int, payload: bytes, keyframe: bool = False) -> None:
        pts_ms, dts_ms = self._ms(pts), self._ms(dts)
        if es.pending_config and es.config is not None:
            es.pending_config = False
            self._out.append(Frame(es.kind, es.codec, dts_ms, dts_ms, es.config, config=True))
        self._out.append(Frame(es.kind, es.codec, pts_ms, dts_ms, payload, keyframe))
        self._stats.frames += 1

    def _set_config(self, es: _Es, config: bytes) -> None:
        if config != es.config:
            es.config = config
            es.pending_config = True

    # --- codecs -----------------------------------------------------------------------------

    def _video(self, es: _Es, payload: bytes, pts: int | None, dts: int | None) -> None:
        codec = es.codec
        units = annexb_nal_units(payload)
        if codec == "h264":
            kinds = [unit[0] & 0x1F for unit in units]
            skip = (H264_NAL_AUD, _H264_FILLER)
            sets = (H264_NAL_SPS, H264_NAL_PPS)
        else:
            kinds = [(unit[0] >> 1) & 0x3F for unit in units]
            skip = (HEVC_NAL_AUD, _HEVC_FILLER)
            sets = (HEVC_NAL_VPS, HEVC_NAL_SPS, HEVC_NAL_PPS)
        nals = [unit for unit, kind in zip(units, kinds, strict=True) if kind not in skip]
        found = {kind: tuple(u for u, k in zip(units, kinds, strict=True) if k == kind) for kind in sets}
        changed = {kind: value for kind, value in found.items() if value and value != es.parameter_sets.get(kind)}
        if changed:
            es.parameter_sets.update(changed)
            ps = es.parameter_sets
            if codec == "h264" and ps.get(H264_NAL_SPS) and ps.get(H264_NAL_PPS):
                self._set_config(es, avc_config(ps[H264_NAL_SPS], ps[H264_NAL_PPS]))
            elif codec == "hevc" and ps.get(HEVC_NAL_SPS) and ps.get(HEVC_NAL_PPS) and ps.get(HEVC_NAL_VPS):
                self._set_config(es, hevc_config_record(ps[HEVC_NAL_VPS], ps[HEVC_NAL_SPS], ps[HEVC_NAL_PPS]))
        if all(kind in sets or kind in skip for kind in kinds):
            return  # parameter sets alone: kept for the picture that follows
        if pts is None or dts is None:
            self._stats.malformed += 1
            es.needs_keyframe = True
            return
        keyframe = has_idr(nals, codec)
        if es.needs_keyframe and not (keyframe and es.config is not None):
            self._stats.dropped_frames += 1
            return
        es.needs_keyframe = False
        self._emit(es, pts, dts, b"".join(len(nal).to_bytes(4, "big") + nal for nal in nals), keyframe)

    def _aac(self, es: _Es, payload: bytes, pts: int | None) -> None:
        if es.carry:
            data, when = es.carry + payload, es.audio_next
            es.carry = b""
        else:
            data, when = payload, pts if pts is not None else es.audio_next
        if when is None:
            self._stats.malformed += 1
            return
        pos, n = 0, len(data)
        while pos + 7 <= n:
            if data[pos] != 0xFF or data[pos + 1] & 0xF6 != 0xF0:
                self._stats.malformed += 1
                return
            head = data[pos : pos + 7]
            index = (head[2] >> 2) & 0x0F
            length = (head[3] & 0x03) << 11 | head[4] << 3 | head[5] >> 5
            header = 7 if head[1] & 0x01 else 9
            if index >= 13 or length <= header:
                self._stats.malformed += 1
                return
            if pos + length > n:
                break
            rate = AAC_SAMPLE_RATES[index]
            if head[6] & 0x03:  # several raw data blocks in one ADTS frame: not carried
                self._stats.malformed += 1
            else:
                profile = head[2] >> 6
                channels = (head[2] & 0x01) << 2 | head[3] >> 6
                asc = bytes((((profile + 1) << 3) | (index >> 1), ((index & 0x01) << 7) | (channels << 3)))
                if asc != es.config:
                    parse_audio_specific_config(asc)
                    self._set_config(es, asc)
                self._emit(es, when, when, data[pos + header : pos + length])
            when += 1024 * 90000 // rate
            pos += length
        es.audio_next = when
        if pos < n:
            es.carry = data[pos:]
            if len(es.carry) > 0x1FFF:
                es.carry = b""
                self._stats.malformed += 1

    def _latm(self, es: _Es, payload: bytes, pts: int | None) -> None:
        """LOAS/LATM AAC (stream type 0x11): AudioSyncStream frames of one AudioMuxElement each."""
        if es.carry:
            data, when = es.carry + payload, es.audio_next
            es.carry = b""
        else:
            data, when = payload, pts if pts is not None else es.audio_next
        if when is None:
            self._stats.malformed += 1
            return
        pos, n = 0, len(data)
        while pos + 3 <= n:
            if data[pos] != 0x56 or data[pos + 1] & 0xE0 != 0xE0:
                self._stats.malformed += 1
                return
            end = pos + 3 + ((data[pos + 1] & 0x1F) << 8 | data[pos + 2])
            if end > n:
                break
            config, raw = _audio_mux_element(data[pos + 3 : end], es.latm_config)
            pos = end
            es.latm_config = config
            if config != es.config:
                parse_audio_specific_config(config)
                self._set_config(es, config)
            rate = parse_audio_specific_config(config).sample_rate
            self._emit(es, when, when, raw)
            when += 1024 * 90000 // rate
        es.audio_next = when
        if pos < n:
            es.carry = data[pos:]

    def _opus(self, es: _Es, payload: bytes, pts: int | None) -> None:
        when = pts if pts is not None else es.audio_next
        if when is None:
            self._stats.malformed += 1
            return
        if es.config is None:
            self._set_config(es, opus_head(es.channels))
        pos, n = 0, len(payload)
        while pos + 2 <= n:
            header = payload[pos] << 8 | payload[pos + 1]
            if header >> 5 != 0x3FF:
                self._stats.malformed += 1
                break
            pos += 2
            size = 0
            while pos < n:
                byte = payload[pos]
                pos += 1
                size += byte
                if byte != 0xFF:
                    break
            if header & 0x10:
                pos += 2
            if header & 0x08:
                pos += 2
            if header & 0x04:
                pos += 1 + (payload[pos] if pos < n else 0)
            packet = payload[pos : pos + size]
            pos += size
            samples = _opus_samples(packet)
            if len(packet) != size or not samples:
                self._stats.malformed += 1
                break
            self._emit(es, when, when, packet)
            when += samples * 15 // 8  # 48 kHz samples to 90 kHz ticks
        es.audio_next = when

    def _mp3(self, es: _Es, payload: bytes, pts: int | None) -> None:
        if pts is None or len(payload) < 4 or payload[0] != 0xFF or payload[1] & 0xE0 != 0xE0:
            self._stats.malformed += 1
            return
        if (payload[1] >> 1) & 0x03 != 0x01:  # layer I or II: the kernel carries layer III only
            self._stats.malformed += 1
            return
        self._emit(es, pts, pts, payload)
