"""Read back what a recorded fragmented MP4 holds, from its boxes: codecs, duration, size.

The catalog (:mod:`.catalog`) rebuilds a stream's index from its segment files when the index
is missing, or a segment has no final line (the server was killed while writing it). It must
not decode media nor read whole files: :func:`scan_mp4` walks the top-level boxes with seeks,
reads only ``moov`` (the codecs and timescales of the tracks) and each ``moof`` (``tfdt`` and
``trun``: where each fragment's samples start and how long they last), and skips every
``mdat``. A fragment counts only when its ``mdat`` is complete, so a file cut in the middle of
a fragment (``kill -9``) reports the part that plays: :attr:`Mp4Scan.complete` is where the last
complete fragment ends.

The file is the attacker's view here: a segment may have been truncated, corrupted or replaced
by anything. Every size is checked against the file, boxes that must be read are bounded
(:data:`MAX_HEADER_BOX` bytes), the number of boxes and samples looked at is bounded, and the
scan stops at the first box that does not fit instead of guessing.

Error policy: :func:`scan_mp4` raises :class:`ScanError` (a ``ValueError``) for a file that does
not start with ``ftyp`` + ``moov`` or whose ``moov`` does not parse; damage after the ``moov``
ends the scan there (the result covers what came before). ``OSError`` from reading the file
propagates to the caller. Codec records that do not parse give the sample entry's four-character
code as the codec string (``avc1``) rather than an error.
"""

from __future__ import annotations

import struct
from typing import BinaryIO, Final

import attrs

from arcly_trio.media.codec_strings import (
    aac_codec_string,
    av1_codec_string,
    avc_codec_string,
    hevc_codec_string,
    vp9_codec_string,
)
from arcly_trio.media.codecs import CodecError

__all__ = ["Mp4Scan", "ScanError", "scan_mp4", "MAX_HEADER_BOX", "MAX_BOXES"]

#: The largest ``moov`` or ``moof`` read (bytes).
MAX_HEADER_BOX: Final = 4 * 1024 * 1024
#: The most top-level boxes looked at in one file.
MAX_BOXES: Final = 200_000

_VISUAL: Final = {b"avc1", b"avc3", b"hvc1", b"hev1", b"av01", b"vp09"}
_AUDIO: Final = {b"mp4a", b"Opus"}
_CONFIG: Final = {
    b"avcC": avc_codec_string,
    b"hvcC": hevc_codec_string,
    b"av1C": av1_codec_string,
    b"vpcC": vp9_codec_string,
}


class ScanError(ValueError):
    """The file is not a fragmented MP4 this scanner can read (see the module docstring)."""


@attrs.frozen
class Mp4Scan:
    """What :func:`scan_mp4` found.

    Attributes:
        codecs: the tracks' codec strings (RFC 6381), in track order.
        duration: seconds of the leading track (the first video track, else the first track)
            in the complete fragments: from its first sample to the end of its last one.
        complete: bytes from the start of the file to the end of the last complete fragment (or
            of the ``moov`` when there is none).
        fragments: the complete fragments.
        truncated: bytes after :attr:`complete` (an unfinished fragment, or damage).
    """

    codecs: tuple[str, ...]
    duration: float
    complete: int
    fragments: int
    truncated: int


@attrs.define
class _Track:
    track_id: int
    timescale: int = 0
    video: bool = False
    codec: str = ""
    default_duration: int = 0
    first: int | None = None
    end: int = 0


def _boxes(data: bytes, pos: int = 0, end: int | None = None) -> list[tuple[bytes, int, int]]:
    """(type, body start, body end) of every box in ``data[pos:end]``; stops at one that does
    not fit."""
    end = len(data) if end is None else end
    out: list[tuple[bytes, int, int]] = []
    while pos + 8 <= end and len(out) < 10_000:
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            if pos + 16 > end:
                break
            size = struct.unpack_from(">Q", data, pos + 8)[0]
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            break
        out.append((kind, pos + header, pos + size))
        pos += size
    return out


def _child(data: bytes, start: int, end: int, kind: bytes) -> tuple[int, int] | None:
    for k, s, e in _boxes(data, start, end):
        if k == kind:
            return s, e
    return None


def _path(data: bytes, start: int, end: int, *kinds: bytes) -> tuple[int, int] | None:
    span: tuple[int, int] | None = (start, end)
    for kind in kinds:
        if span is None:
            return None
        span = _child(data, span[0], span[1], kind)
    return span


def _esds_config(body: bytes) -> bytes:
    """The DecoderSpecificInfo (the AudioSpecificConfig) of an ``esds`` body (after version and
    flags); raises ``CodecError`` when it holds none."""
    pos = 0

    def header(at: int) -> tuple[int, int, int]:
        tag = body[at]
        size = 0
        at += 1
        for _ in range(4):
            byte = body[at]
            at += 1
            size = (size << 7) | (byte & 0x7F)
            if not byte & 0x80:
                break
        return tag, at, size

    try:
        tag, pos, _ = header(pos)
        if tag != 3:
            raise CodecError("esds without an ES_Descriptor")
        flags = body[pos + 2]
        pos += 3
        if flags & 0x80:
            pos += 2
        if flags & 0x40:
            pos += 1 + body[pos]
        if flags & 0x20:
            pos += 2
        tag, pos, _ = header(pos)
        if tag != 4:
            raise CodecError("esds without a DecoderConfigDescriptor")
        pos += 13
        tag, pos, size = header(pos)
        if tag != 5 or pos + size > len(body):
            raise CodecError("esds without a DecoderSpecificInfo")
        return body[pos : pos + size]
    except IndexError:
        raise CodecError("truncated esds") from None


def _codec(data: bytes, kind: bytes, start: int, end: int) -> str:
    """The codec string of one sample entry (``kind`` with its body at ``data[start:end]``)."""
    name = kind.decode("latin-1")
    try:
        if kind in _VISUAL:
            for k, s, e in _boxes(data, start + 78, end):
                if k in _CONFIG:
                    return _CONFIG[k](data[s:e])
        elif kind == b"Opus":
            return "opus"
        elif kind == b"mp4a":
            esds = _child(data, start + 28, end, b"esds")
            if esds is not None:
                return aac_codec_string(_esds_config(data[esds[0] + 4 : esds[1]]))
    except CodecError:
        pass
    return name


def _moov_tracks(data: bytes) -> dict[int, _Track]:
    tracks: dict[int, _Track] = {}
    for kind, start, end in _boxes(data):
        if kind == b"trak":
            tkhd = _child(data, start, end, b"tkhd")
            mdhd = _path(data, start, end, b"mdia", b"mdhd")
            hdlr = _path(data, start, end, b"mdia", b"hdlr")
            stsd = _path(data, start, end, b"mdia", b"minf", b"stbl", b"stsd")
            if tkhd is None or mdhd is None or hdlr is None or stsd is None:
                raise ScanError("a trak without tkhd, mdhd, hdlr or stsd")
            try:
                v = data[tkhd[0]]
                (track_id,) = struct.unpack_from(">I", data, tkhd[0] + (20 if v == 1 else 12))
                v = data[mdhd[0]]
                (timescale,) = struct.unpack_from(">I", data, mdhd[0] + (20 if v == 1 else 12))
                handler = data[hdlr[0] + 8 : hdlr[0] + 12]
            except (struct.error, IndexError):
                raise ScanError("a truncated tkhd, mdhd or hdlr") from None
            if timescale == 0:
                raise ScanError(f"track {track_id} has timescale 0")
            entries = _boxes(data, stsd[0] + 8, stsd[1])
            codec = _codec(data, *entries[0]) if entries else "unknown"
            tracks[track_id] = _Track(track_id, timescale, handler == b"vide", codec)
        elif kind == b"mvex":
            for k, s, _e in _boxes(data, start, end):
                if k == b"trex" and s + 24 <= len(data):
                    track_id, _, duration = struct.unpack_from(">III", data, s + 4)
                    if track_id in tracks:
                        tracks[track_id].default_duration = duration
    if not tracks:
        raise ScanError("a moov without tracks")
    return tracks


def _moof_runs(data: bytes, tracks: dict[int, _Track]) -> list[tuple[_Track, int, int]]:
    """(track, decode time, duration) of every ``traf`` of a ``moof`` body; raises
    ``ScanError`` for one that does not parse."""
    runs: list[tuple[_Track, int, int]] = []
    for kind, start, end in _boxes(data):
        if kind != b"traf":
            continue
        tfhd = _child(data, start, end, b"tfhd")
        tfdt = _child(data, start, end, b"tfdt")
        if tfhd is None or tfdt is None:
            raise ScanError("a traf without tfhd or tfdt")
        try:
            (word, track_id) = struct.unpack_from(">II", data, tfhd[0])
            track = tracks.get(track_id)
            if track is None:
                raise ScanError(f"a traf of unknown track {track_id}")
            flags = word & 0xFFFFFF
            default = track.default_duration
            at = tfhd[0] + 8 + (8 if flags & 0x01 else 0) + (4 if flags & 0x02 else 0)
            if flags & 0x08:
                (default,) = struct.unpack_from(">I", data, at)
            version = data[tfdt[0]]
            decode = struct.unpack_from(">Q" if version == 1 else ">I", data, tfdt[0] + 4)[0]
            duration = 0
            for k, s, e in _boxes(data, start, end):
                if k != b"trun":
                    continue
                (word, count) = struct.unpack_from(">II", data, s)
                flags = word & 0xFFFFFF
                pos = s + 8 + (4 if flags & 0x01 else 0) + (4 if flags & 0x04 else 0)
                width = 4 * bin(flags & 0xF00).count("1")
                if count > (e - pos) // max(width, 1) + 1 or pos + count * width > e:
                    raise ScanError("a trun longer than its box")
                if flags & 0x100:
                    for i in range(count):
                        duration += struct.unpack_from(">I", data, pos + i * width)[0]
                else:
                    duration += count * default
        except (struct.error, IndexError):
            raise ScanError("a truncated traf") from None
        runs.append((track, decode, duration))
    return runs


def _read(file: BinaryIO, at: int, size: int) -> bytes:
    file.seek(at)
    data = file.read(size)
    if len(data) != size:
        raise ScanError("the file ended inside a box")
    return data


def scan_mp4(file: BinaryIO, size: int) -> Mp4Scan:
    """Scan the fragmented MP4 of ``size`` bytes open in ``file`` (see the module docstring)."""
    pos = 0
    tracks: dict[int, _Track] | None = None
    moov_end = 0
    complete = 0
    fragments = 0
    pending: list[tuple[_Track, int, int]] | None = None
    boxes = 0
    while pos + 8 <= size and boxes < MAX_BOXES:
        boxes += 1
        header = _read(file, pos, 8)
        box_size, kind = struct.unpack(">I4s", header)
        head = 8
        if box_size == 1:
            if pos + 16 > size:
                break
            box_size = struct.unpack(">Q", _read(file, pos + 8, 8))[0]
            head = 16
        elif box_size == 0:
            box_size = size - pos  # to the end of the file: complete only if it is an mdat
        if box_size < head or pos + box_size > size:
            break
        if boxes == 1 and kind != b"ftyp":
            raise ScanError("the file does not start with ftyp")
        if kind == b"moov":
            if box_size > MAX_HEADER_BOX:
                raise ScanError(f"a moov of {box_size} bytes")
            tracks = _moov_tracks(_read(file, pos + head, box_size - head))
            moov_end = complete = pos + box_size
        elif kind == b"moof":
            if tracks is None:
                raise ScanError("a moof before the moov")
            if box_size > MAX_HEADER_BOX:
                break
            try:
                pending = _moof_runs(_read(file, pos + head, box_size - head), tracks)
            except ScanError:
                break
        elif kind == b"mdat" and pending is not None:
            for track, decode, duration in pending:
                track.first = decode if track.first is None else min(track.first, decode)
                track.end = max(track.end, decode + duration)
            pending = None
            fragments += 1
            complete = pos + box_size
        pos += box_size
    if tracks is None:
        raise ScanError("no moov")
    ordered = [tracks[i] for i in sorted(tracks)]
    leading = next((t for t in ordered if t.video), ordered[0])
    duration = 0.0
    if leading.first is not None:
        duration = (leading.end - leading.first) / leading.timescale
    complete = max(complete, moov_end)
    return Mp4Scan(tuple(t.codec for t in ordered), duration, complete, fragments, size - complete)
