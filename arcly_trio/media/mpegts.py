"""A sans-IO MPEG-TS muxer (ISO/IEC 13818-1) for the kernel's frames, as HLS serves it.

:class:`TsMuxer` turns :class:`~arcly_trio.core.frame.Frame` objects into whole 188-byte
transport packets: one program (number 1) with at most one video elementary stream (H.264 or
HEVC) and one audio elementary stream (AAC as ADTS, MP3, or Opus; HLS-TS keeps to AAC and MP3,
:data:`SUPPORTED_AUDIO_CODECS`: MSE players do not take Opus in TS). It never touches a clock or a
socket: timestamps come from the frames only, bytes come out of :meth:`TsMuxer.mux`.

Layout
    PAT on PID 0, PMT on PID ``0x1000``, video on PID ``0x100`` (stream_id ``0xE0``), audio on
    PID ``0x101`` (stream_id ``0xC0``). PMT stream types: H.264 ``0x1B``, HEVC ``0x24``, AAC
    (ADTS) ``0x0F``, MP3 ``0x03``, Opus ``0x06`` (PES private data, stream_id ``0xBD``) with a
    registration descriptor ``Opus`` and the DVB extension descriptor ``0x80`` giving the
    channel count (1 or 2, from the ``OpusHead``), as ffmpeg writes them. The PCR is carried on
    the video PID, or on the audio PID for an audio-only program.

Tables
    :meth:`TsMuxer.header` returns PAT + PMT (two packets). :meth:`TsMuxer.mux` prepends them
    when asked (``with_tables=True``: the HLS segmenter does at the start of every segment) and,
    unless disabled, before every video keyframe, as players joining a stream expect.

Elementary streams
    H.264/HEVC access units are converted from length-prefixed NAL units to Annex B. Each gets an
    access unit delimiter first (replacing any the frame carried), and each random access
    picture (the frame is a keyframe, or holds an IDR/IRAP NAL unit) gets the parameter sets of
    the latest config frame right after the delimiter, unless the frame carries them in-band.
    AAC raw frames get an ADTS header built from the latest AudioSpecificConfig; AAC frames that
    arrive before any config cannot be framed and are dropped (counted in
    :attr:`TsMuxer.dropped_frames`). An Opus packet gets the control header of "Encapsulation of
    Opus in MPEG-2 Transport Streams" (opus-codec.org; the prefix ``0x7FE0``, no trim fields, the
    size as ``0xFF`` bytes and a remainder), as ffmpeg writes it; its ``OpusHead`` config sets
    the PMT's channel count (the PMT's version goes up if that changes after tables went out).
    One frame is one PES packet. Video PES packets have length 0
    (unbounded), audio PES packets their real length.

Timestamps
    Frame milliseconds become 90 kHz ticks plus :data:`TIMESTAMP_OFFSET` (1.4 s, what ffmpeg's
    muxer starts at), modulo 2**33, so the first DTS is never 0 and a slightly negative
    timestamp (a negative composition time, audio that starts before video) still maps to a
    small positive one instead of wrapping. DTS is written only when it differs from PTS. The PCR runs
    :data:`PCR_DELAY` (0.7 s) behind the
    DTS of the frame it is sent with. It is written on every PES packet of the PCR PID (so on
    every keyframe) and, when a frame of the other PID is more than :data:`PCR_INTERVAL` (100 ms)
    past the last PCR, in an adaptation-field-only packet of the PCR PID. The PCR never goes
    backwards by less than :data:`PCR_JITTER` (interleaving jitter between tracks: it is held
    instead); a larger backward step, or a call to :meth:`TsMuxer.discontinuity`, restarts it
    with the discontinuity_indicator set. Frames are written in the order given: interleaving
    is the caller's business.

Packets
    Continuity counters run per PID, modulo 16, and advance only on packets with a payload. The
    first packet of a keyframe's PES has the random_access_indicator set. The last packet of
    each PES is filled up with adaptation-field stuffing.

Error policy
    Malformed codec bytes from the publisher (an AVCC access unit whose lengths run past its end,
    a config record that does not parse, an AAC object type ADTS cannot carry) raise
    :class:`~arcly_trio.media.codecs.CodecError` (a
    :class:`~arcly_trio.core.errors.RemoteProtocolError`), and leave the muxer as it was: the
    caller may drop the frame and go on. Asking for a codec the muxer cannot carry, or feeding a
    frame whose codec differs from the one the muxer was built for, is a bug of the caller and
    raises :class:`~arcly_trio.core.errors.LocalProtocolError`.
"""

from __future__ import annotations

from arcly_trio.core.errors import LocalProtocolError
from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.media.codecs import (
    H264_AUD,
    H264_NAL_AUD,
    HEVC_AUD,
    HEVC_NAL_AUD,
    AacConfig,
    adts_header,
    annexb,
    has_idr,
    has_parameter_sets,
    nal_type,
    parse_audio_specific_config,
    parse_avc_config,
    parse_hevc_config,
    split_nal_units,
)
from arcly_trio.media.codecs.errors import CodecError
from arcly_trio.media.codecs.opus import parse_opus_head

__all__ = [
    "TsMuxer",
    "crc32_mpeg2",
    "PACKET_SIZE",
    "PAT_PID",
    "PMT_PID",
    "VIDEO_PID",
    "AUDIO_PID",
    "STREAM_TYPES",
    "SUPPORTED_VIDEO_CODECS",
    "SUPPORTED_AUDIO_CODECS",
    "TS_AUDIO_CODECS",
    "TIMESTAMP_OFFSET",
    "PCR_DELAY",
    "PCR_INTERVAL",
    "PCR_JITTER",
    "ms_to_90k",
]

PACKET_SIZE = 188
PAT_PID = 0x0000
PMT_PID = 0x1000
VIDEO_PID = 0x0100
AUDIO_PID = 0x0101
PROGRAM_NUMBER = 1
TRANSPORT_STREAM_ID = 1

#: PMT stream_type by codec name.
STREAM_TYPES: dict[str, int] = {"h264": 0x1B, "hevc": 0x24, "aac": 0x0F, "mp3": 0x03, "opus": 0x06}
SUPPORTED_VIDEO_CODECS = frozenset({"h264", "hevc"})
#: The audio codecs HLS-TS serves (browsers' MSE takes no Opus in TS).
SUPPORTED_AUDIO_CODECS = frozenset({"aac", "mp3"})
#: The audio codecs the muxer carries (SRT play and push add Opus).
TS_AUDIO_CODECS = SUPPORTED_AUDIO_CODECS | {"opus"}

_WRAP = 1 << 33
_MASK = _WRAP - 1
#: Added to every PTS/DTS, in 90 kHz ticks (1.4 s).
TIMESTAMP_OFFSET = 126_000
#: How far the PCR runs behind the DTS it is sent with, in 90 kHz ticks (0.7 s).
PCR_DELAY = 63_000
#: The longest gap between two PCRs, in 90 kHz ticks (100 ms), as far as frame timestamps go.
PCR_INTERVAL = 9_000
#: A backward PCR step up to this (2 s, in 90 kHz ticks) is interleaving jitter: the PCR holds.
PCR_JITTER = 180_000

_VIDEO_STREAM_ID = 0xE0
_AUDIO_STREAM_ID = 0xC0
_PRIVATE_STREAM_1 = 0xBD
_PAYLOAD = 184
_HEADS: dict[int, tuple[bytes, ...]] = {
    pid: tuple(bytes((0x47, pid >> 8, pid & 0xFF, 0x10 | cc)) for cc in range(16)) for pid in (VIDEO_PID, AUDIO_PID)
}
"""The 4-byte headers of a PES packet's middle packets (no start, no adaptation field), by PID and counter."""


def ms_to_90k(ms: int, offset: int = TIMESTAMP_OFFSET) -> int:
    """A millisecond timestamp as a 33-bit 90 kHz MPEG timestamp (with ``offset`` ticks added)."""
    return (ms * 90 + offset) & _MASK


def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
        table.append(crc & 0xFFFFFFFF)
    return table


_CRC_TABLE = _crc_table()


def crc32_mpeg2(data: bytes) -> int:
    """The MPEG-2 CRC-32 of ``data`` (polynomial 0x04C11DB7, initial value all ones, no final
    XOR, no reflection). A section followed by its CRC has a CRC of 0."""
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ table[(crc >> 24) ^ byte]
    return crc


def _section_packet(pid: int, cc: int, section: bytes) -> bytes:
    body = section + crc32_mpeg2(section).to_bytes(4, "big")
    head = bytes((0x47, 0x40 | (pid >> 8), pid & 0xFF, 0x10 | cc, 0x00))  # pointer_field 0
    return head + body + b"\xff" * (PACKET_SIZE - len(head) - len(body))


def _timestamp(prefix: int, ts: int) -> bytes:
    return bytes(
        (
            (prefix << 4) | ((ts >> 29) & 0x0E) | 1,
            (ts >> 22) & 0xFF,
            ((ts >> 14) & 0xFE) | 1,
            (ts >> 7) & 0xFF,
            ((ts << 1) & 0xFE) | 1,
        )
    )


def _opus_control_header(size: int) -> bytes:
    """The Opus-in-TS control header before one packet of ``size`` bytes: prefix 0x3FF, no
    trim, no extension; the size as 255s and a last byte below 255 (0 when it divides)."""
    return b"\x7f\xe0" + b"\xff" * (size // 255) + bytes((size % 255,))


def _pcr_field(base: int) -> bytes:
    # 33-bit base, 6 reserved bits (ones), 9-bit extension (0).
    return ((base << 15) | (0x3F << 9)).to_bytes(6, "big")


class TsMuxer:
    """Frames in, 188-byte MPEG-TS packets out, for one program (see the module docstring).

    Args:
        video_codec: ``"h264"``, ``"hevc"`` or ``None`` (no video stream).
        audio_codec: ``"aac"``, ``"mp3"``, ``"opus"`` or ``None`` (no audio stream).
        tables_on_keyframes: write PAT + PMT before every video keyframe.
        timestamp_offset: 90 kHz ticks added to every PTS/DTS (default :data:`TIMESTAMP_OFFSET`).

    Frames of a kind the program does not carry, frames of a track other than 0 and data frames
    are ignored (``mux`` returns ``b""``). Config frames update the muxer's codec state and
    produce no output.
    """

    def __init__(
        self,
        video_codec: str | None,
        audio_codec: str | None,
        *,
        tables_on_keyframes: bool = True,
        timestamp_offset: int = TIMESTAMP_OFFSET,
    ) -> None:
        if video_codec is not None and video_codec not in SUPPORTED_VIDEO_CODECS:
            raise LocalProtocolError(f"MPEG-TS cannot carry video codec {video_codec!r}")
        if audio_codec is not None and audio_codec not in TS_AUDIO_CODECS:
            raise LocalProtocolError(f"MPEG-TS cannot carry audio codec {audio_codec!r}")
        if video_codec is None and audio_codec is None:
            raise LocalProtocolError("an MPEG-TS program needs a video or an audio stream")
        self.video_codec = video_codec
        self.audio_codec = audio_codec
        self.tables_on_keyframes = tables_on_keyframes
        self.timestamp_offset = timestamp_offset
        self.pcr_pid = VIDEO_PID if video_codec is not None else AUDIO_PID
        #: AAC frames dropped because no AudioSpecificConfig had arrived.
        self.dropped_frames = 0
        self._cc: dict[int, int] = {PAT_PID: 0, PMT_PID: 0, VIDEO_PID: 0, AUDIO_PID: 0}
        self._nal_length_size = 4
        self._parameter_sets: tuple[bytes, ...] = ()
        self._aac: AacConfig | None = None
        self._opus_channels = 2
        self._pmt_version = 0
        self._tables_sent = False
        self._last_pcr: int | None = None
        self._pcr_discontinuity = False
        self._pat = self._build_pat()
        self._pmt = self._build_pmt()

    # --- tables --------------------------------------------------------------------------------

    @staticmethod
    def _build_pat() -> bytes:
        body = (
            TRANSPORT_STREAM_ID.to_bytes(2, "big")
            + b"\xc1\x00\x00"  # version 0, current_next 1, section 0 of 0
            + PROGRAM_NUMBER.to_bytes(2, "big")
            + (0xE000 | PMT_PID).to_bytes(2, "big")
        )
        return b"\x00" + (0xB000 | (len(body) + 4)).to_bytes(2, "big") + body

    def _build_pmt(self) -> bytes:
        streams = b""
        for codec, pid in ((self.video_codec, VIDEO_PID), (self.audio_codec, AUDIO_PID)):
            if codec is not None:
                streams += bytes((STREAM_TYPES[codec],)) + (0xE000 | pid).to_bytes(2, "big")
                info = b""
                if codec == "opus":  # registration 'Opus', DVB extension: Opus audio, channels
                    info = b"\x05\x04Opus\x7f\x02\x80" + bytes((self._opus_channels,))
                streams += (0xF000 | len(info)).to_bytes(2, "big") + info
        body = (
            PROGRAM_NUMBER.to_bytes(2, "big")
            + bytes((0xC1 | (self._pmt_version << 1), 0, 0))
            + (0xE000 | self.pcr_pid).to_bytes(2, "big")
            + b"\xf0\x00"  # program_info_length 0
            + streams
        )
        return b"\x02" + (0xB000 | (len(body) + 4)).to_bytes(2, "big") + body

    def _next_cc(self, pid: int) -> int:
        cc = self._cc[pid]
        self._cc[pid] = (cc + 1) & 0x0F
        return cc

    def header(self) -> bytes:
        """PAT + PMT: two packets (continuity counters of PIDs 0 and 0x1000 advance)."""
        self._tables_sent = True
        return _section_packet(PAT_PID, self._next_cc(PAT_PID), self._pat) + _section_packet(
            PMT_PID, self._next_cc(PMT_PID), self._pmt
        )

    # --- state ---------------------------------------------------------------------------------

    def discontinuity(self) -> None:
        """The timeline restarts (publisher restart): the next PCR is written with the
        discontinuity_indicator set and is not held to the previous one."""
        self._last_pcr = None
        self._pcr_discontinuity = True

    def _configure(self, frame: Frame) -> None:
        if frame.kind is FrameKind.VIDEO:
            if frame.codec == "h264":
                avc = parse_avc_config(frame.payload)
                self._nal_length_size = avc.nal_length_size
                self._parameter_sets = avc.sps + avc.pps
            else:
                hevc = parse_hevc_config(frame.payload)
                self._nal_length_size = hevc.nal_length_size
                self._parameter_sets = hevc.vps + hevc.sps + hevc.pps
        elif frame.codec == "aac":
            aac = parse_audio_specific_config(frame.payload)
            adts_header(aac, 0)  # raises CodecError now if ADTS cannot carry it
            self._aac = aac
        elif frame.codec == "opus":
            channels = parse_opus_head(bytes(frame.payload)).channels
            if channels > 2:
                raise CodecError(f"Opus in MPEG-TS here carries 1 or 2 channels, not {channels}")
            if channels != self._opus_channels:
                self._opus_channels = channels
                if self._tables_sent:
                    self._pmt_version = (self._pmt_version + 1) & 0x1F
                self._pmt = self._build_pmt()

    # --- muxing --------------------------------------------------------------------------------

    def _codec_for(self, frame: Frame) -> str | None:
        if frame.track != 0:
            return None
        if frame.kind is FrameKind.VIDEO:
            codec = self.video_codec
        elif frame.kind is FrameKind.AUDIO:
            codec = self.audio_codec
        else:
            return None
        if codec is not None and frame.codec != codec:
            raise LocalProtocolError(
                f"{frame.kind.value} frame of codec {frame.codec!r} fed to a muxer built for {codec!r}"
            )
        return codec

    def _video_es(self, frame: Frame, codec: str) -> tuple[bytes | None, bool]:
        nals = split_nal_units(frame.payload, self._nal_length_size)
        aud_type = H264_NAL_AUD if codec == "h264" else HEVC_NAL_AUD
        nals = [nal for nal in nals if nal_type(nal, codec) != aud_type]
        if not nals:
            return None, False
        random_access = frame.keyframe or has_idr(nals, codec)
        units = [H264_AUD if codec == "h264" else HEVC_AUD]
        if random_access and not has_parameter_sets(nals, codec):
            units.extend(self._parameter_sets)
        units.extend(nals)
        return annexb(units), random_access

    def mux(self, frame: Frame, *, with_tables: bool = False) -> bytes:
        """Serialise one frame: whole 188-byte packets, possibly none.

        ``with_tables`` writes PAT + PMT first (as does a video keyframe when
        ``tables_on_keyframes`` is set). Raises :class:`~arcly_trio.media.codecs.CodecError`
        on malformed codec bytes (the muxer state is then unchanged) and
        :class:`~arcly_trio.core.errors.LocalProtocolError` on a codec the muxer was not
        built for.
        """
        codec = self._codec_for(frame)
        if codec is None:
            return self.header() if with_tables else b""
        if frame.config:
            self._configure(frame)
            return self.header() if with_tables else b""
        if frame.kind is FrameKind.VIDEO:
            es, random_access = self._video_es(frame, codec)
            if es is None:
                return self.header() if with_tables else b""
            pid, stream_id = VIDEO_PID, _VIDEO_STREAM_ID
        else:
            random_access = False
            pid, stream_id = AUDIO_PID, _AUDIO_STREAM_ID
            if codec == "aac":
                if self._aac is None:
                    self.dropped_frames += 1
                    return self.header() if with_tables else b""
                es = adts_header(self._aac, len(frame.payload)) + frame.payload
            elif codec == "opus":
                es = _opus_control_header(len(frame.payload)) + frame.payload if frame.payload else b""
                stream_id = _PRIVATE_STREAM_1
            else:
                es = bytes(frame.payload)
            if not es:
                return self.header() if with_tables else b""
        # Nothing below raises: the muxer state changes only from here on.
        out: list[bytes] = []
        if with_tables or (random_access and self.tables_on_keyframes):
            out.append(self.header())
        pts = ms_to_90k(frame.pts, self.timestamp_offset)
        dts = ms_to_90k(frame.dts, self.timestamp_offset)
        pcr: tuple[int, bool] | None = None
        if pid == self.pcr_pid:
            pcr = self._take_pcr(dts, force=True)
        else:
            due = self._take_pcr(dts, force=False)
            if due is not None:
                out.append(self._pcr_only_packet(*due))
        out.append(self._pes_packets(pid, stream_id, es, pts, dts, pcr, random_access))
        return b"".join(out)

    def _take_pcr(self, dts: int, *, force: bool) -> tuple[int, bool] | None:
        """The PCR to write now, if one is due, and whether it is discontinuous."""
        candidate = (dts - PCR_DELAY) & _MASK
        last = self._last_pcr
        discontinuous = False
        if last is None:
            discontinuous = self._pcr_discontinuity
        else:
            step = (candidate - last) & _MASK
            if step >= _WRAP // 2:  # backwards
                if _WRAP - step <= PCR_JITTER:
                    candidate, step = last, 0
                else:
                    discontinuous = True
            if not force and not discontinuous and step < PCR_INTERVAL:
                return None
        self._last_pcr = candidate
        self._pcr_discontinuity = False
        return candidate, discontinuous

    def _pcr_only_packet(self, pcr: int, discontinuous: bool) -> bytes:
        pid = self.pcr_pid
        flags = 0x10 | (0x80 if discontinuous else 0)
        af = bytes((flags,)) + _pcr_field(pcr)
        af += b"\xff" * (183 - len(af))
        # adaptation_field_control 10 (no payload): the continuity counter does not advance, the
        # packet repeats the counter of the PID's previous packet.
        cc = (self._cc[pid] - 1) & 0x0F
        head = bytes((0x47, pid >> 8, pid & 0xFF, 0x20 | cc, 183))
        return head + af

    def _pes_packets(
        self,
        pid: int,
        stream_id: int,
        es: bytes,
        pts: int,
        dts: int,
        pcr: tuple[int, bool] | None,
        random_access: bool,
    ) -> bytes:
        if pts != dts:
            header_data = _timestamp(0b0011, pts) + _timestamp(0b0001, dts)
            flags = 0xC0
        else:
            header_data = _timestamp(0b0010, pts)
            flags = 0x80
        length = 3 + len(header_data) + len(es)
        if stream_id == _VIDEO_STREAM_ID or length > 0xFFFF:
            length = 0
        pes = (
            b"\x00\x00\x01"
            + bytes((stream_id,))
            + length.to_bytes(2, "big")
            + bytes((0x84, flags, len(header_data)))  # '10', data_alignment_indicator
            + header_data
            + es
        )
        first_af: bytes | None = None
        if pcr is not None or random_access:
            af_flags = 0x40 if random_access else 0
            first_af = b""
            if pcr is not None:
                af_flags |= 0x10 | (0x80 if pcr[1] else 0)
                first_af = _pcr_field(pcr[0])
            first_af = bytes((af_flags,)) + first_af

        packets: list[bytes] = []
        pos, end = 0, len(pes)
        af = first_af
        pusi = 0x40
        cc = self._cc[pid]
        pid_hi, pid_lo = pid >> 8, pid & 0xFF
        while pos < end:
            if pusi == 0 and end - pos >= _PAYLOAD:  # a middle packet: a 4-byte header and 184 bytes
                heads = _HEADS[pid]
                while end - pos >= _PAYLOAD:
                    packets.append(heads[cc])
                    packets.append(pes[pos : pos + _PAYLOAD])
                    pos += _PAYLOAD
                    cc = (cc + 1) & 0x0F
                continue
            space = _PAYLOAD - (0 if af is None else 1 + len(af))
            chunk = pes[pos : pos + space]
            pos += len(chunk)
            stuffing = space - len(chunk)
            if stuffing:
                if af is None and stuffing == 1:
                    af_bytes = b"\x00"  # adaptation_field_length 0: one byte of stuffing
                elif af is None:
                    af_bytes = bytes((stuffing - 1, 0)) + b"\xff" * (stuffing - 2)
                else:
                    af_bytes = bytes((len(af) + stuffing,)) + af + b"\xff" * stuffing
            else:
                af_bytes = b"" if af is None else bytes((len(af),)) + af
            control = 0x30 if af_bytes else 0x10
            packets.append(bytes((0x47, pusi | pid_hi, pid_lo, control | cc)) + af_bytes + chunk)
            cc = (cc + 1) & 0x0F
            af = None
            pusi = 0
        self._cc[pid] = cc
        return b"".join(packets)
