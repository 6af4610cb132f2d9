"""Recorded fragmented MP4 files read by their box headers: the init segment, the tracks and their
codecs, where each fragment lies, when it starts and whether it starts with a keyframe (sans-IO,
no trio): the one MP4 box scanner of the recordings.

Who reads it: the playback server (:mod:`.playback`) serves a span of a recording without
decoding anything: an HLS byte range per group of fragments and the times to list them with, and
the fragments to re-base into one MP4 (:mod:`.mp4rebase`, which walks boxes with :func:`boxes`).
The catalog (:mod:`.catalog`) rebuilds a lost index and repairs a segment a crash left open from
the same scan: :attr:`Mp4Index.codecs`, :attr:`Mp4Index.duration` and
:attr:`Mp4Index.complete`, where the last complete fragment ends (the file is cut back to it).

How: :func:`scan` walks the top-level boxes of a file through a ``read(offset, size)`` callable
(:func:`scan_path` reads a file, blocking: callers run it in a thread; tests pass bytes with
:func:`scan_bytes`). The file must start with ``ftyp``. It reads whole only the ``moov`` (tracks:
``tkhd`` id, ``mdhd`` timescale, ``hdlr`` kind, the ``stsd`` sample entry and its codec string,
``trex`` defaults) and each ``moof`` (``mfhd`` sequence, per ``traf``: ``tfhd`` defaults,
``tfdt`` decode time, ``trun`` durations and the first sample's flags), and skips every
``mdat`` by its size. A fragment is a ``moof`` and the ``mdat`` after it; its bytes run from the
``moof``'s first byte to the ``mdat``'s last. A fragment counts only when its ``mdat`` is
complete, so a file cut in the middle of a fragment (``kill -9``) lists the part that plays.

The *leading* track is the first video track (by id), else the first track: a fragment's
``start`` and ``duration`` are its leading track's, and it is ``sync`` when its first leading
sample is a sync sample (``sample_is_non_sync_sample`` clear), which is where playback may begin.
A fragment without a sample of the leading track is not ``sync``. Codec strings are RFC 6381's
(``avc1.64001f``, ``mp4a.40.2``), from the sample entry's configuration record
(:mod:`arcly_trio.media.codec_strings`); one that does not parse gives the entry's
four-character code (``avc1``).

Attacker's view: a recording is written by this server, but a file may be truncated (``kill -9``
in the middle of a fragment), damaged, or replaced by someone with access to the disk. So every
size is checked against its parent and the file; the ``moov`` and each ``moof`` are read only up
to :data:`MAX_MOOV` / :data:`MAX_MOOF` bytes; at most :data:`MAX_BOXES` top-level boxes are
looked at and :data:`MAX_FRAGMENTS` fragments listed; a ``trun`` may claim at most
:data:`MAX_SAMPLES` samples; the walk always advances by at least a box header, so it ends on
any input.

Error policy: :func:`scan` never raises on the bytes it is given: it stops at the first box that
does not parse, keeping the complete fragments before it, and says why in
:attr:`Mp4Index.problem` (a fragment whose ``mdat`` is cut short, the one being written, is
simply not listed: that is not a problem); a file that is no fragmented MP4 at all has no
tracks (``init_size`` 0). :func:`parse_moov`, :func:`parse_moof` and :func:`boxes` raise
:class:`ScanError` (a ``ValueError``). A ``read`` that raises ``OSError`` propagates (the
caller's file is gone).
"""

from __future__ import annotations

import functools
import os
import struct
from collections.abc import Callable
from typing import Final

import attrs

from arcly_trio.core.errors import RemoteProtocolError
from arcly_trio.media.codec_strings import (
    aac_codec_string,
    av1_codec_string,
    avc_codec_string,
    hevc_codec_string,
    vp9_codec_string,
)
from arcly_trio.media.codecs import CodecError

__all__ = [
    "MAX_MOOV",
    "MAX_MOOF",
    "MAX_BOXES",
    "MAX_FRAGMENTS",
    "MAX_SAMPLES",
    "ScanError",
    "TrackInfo",
    "TrackTime",
    "FragmentInfo",
    "Mp4Index",
    "scan",
    "scan_bytes",
    "scan_path",
    "Reader",
    "boxes",
    "parse_moov",
    "parse_moof",
    "parse_tfhd",
    "Tfhd",
    "MoofInfo",
    "NON_SYNC",
]

MAX_MOOV: Final = 4 * 1024 * 1024
"""The largest ``moov`` read (bytes)."""
MAX_MOOF: Final = 4 * 1024 * 1024
"""The largest ``moof`` read (bytes)."""
MAX_FRAGMENTS: Final = 200_000
"""The most fragments one file lists (a day of 1 s fragments is 86 400)."""
MAX_BOXES: Final = 2 * MAX_FRAGMENTS + 64
"""The most top-level boxes one walk looks at (a file of empty ``free`` boxes costs no more than
one of fragments)."""
MAX_SAMPLES: Final = 100_000
"""The most samples one ``trun`` may hold (a ``trun`` whose samples all take their defaults
could claim four billion in 20 bytes)."""
NON_SYNC: Final = 0x00010000
"""``sample_is_non_sync_sample`` in sample flags (ISO/IEC 14496-12, 8.8.3.1)."""

Reader = Callable[[int, int], bytes]
"""``read(offset, size)``: up to ``size`` bytes of the file from ``offset``."""


class ScanError(RemoteProtocolError, ValueError):
    """A box that does not parse (see the module docstring): a ``RemoteProtocolError`` (the
    file's bytes are not what they claim), and a ``ValueError`` as before."""


@attrs.frozen
class TrackInfo:
    """One ``trak`` of the ``moov``: its id, timescale, kind, sample entry and ``trex`` defaults."""

    track_id: int
    timescale: int
    video: bool
    entry: bytes = attrs.field(repr=False)
    """The ``stsd`` box (its sample entry): two files whose tracks have equal entries carry the
    same codec configuration."""
    default_duration: int = 0
    default_size: int = 0
    default_flags: int = 0
    codec: str = attrs.field(default="", eq=False)
    """The RFC 6381 codec string of the sample entry (``avc1.64001f``; its four-character code
    when its configuration record does not parse): derived from :attr:`entry`."""


@attrs.frozen
class TrackTime:
    """One ``traf``: its track, ``tfdt`` and the sum of its sample durations (ticks)."""

    track_id: int
    decode_time: int
    duration: int
    field: int = attrs.field(default=-1, eq=False)
    """Where the ``tfdt``'s decode time is in the file (its first byte), for patching it."""
    wide: bool = attrs.field(default=True, eq=False)
    """The field is 8 bytes (``tfdt`` version 1), else 4."""
    samples: int = 0
    data: int = 0
    """The bytes of its samples."""
    cto: bool = False
    """Some sample has a composition offset."""
    first_flags: int = attrs.field(default=-1, eq=False)
    """The first sample's flags (-1 without a sample)."""

    @property
    def end(self) -> int:
        return self.decode_time + self.duration


@attrs.frozen
class FragmentInfo:
    """One fragment: its bytes ``[offset, offset + size)`` (``moof`` to the end of its ``mdat``),
    its ``mfhd`` sequence, its ``traf`` times, and its leading track's start and duration
    (seconds, on the file's own timeline) and whether that starts with a sync sample."""

    offset: int
    size: int
    sequence: int
    times: tuple[TrackTime, ...]
    start: float
    duration: float
    sync: bool

    @property
    def end(self) -> float:
        return self.start + self.duration


@attrs.frozen
class Mp4Index:
    """What :func:`scan` found in a file of ``size`` bytes."""

    size: int
    init_size: int
    """Bytes ``[0, init_size)`` are the init segment (``ftyp`` + ``moov``); 0 if there is none."""
    tracks: tuple[TrackInfo, ...]
    fragments: tuple[FragmentInfo, ...]
    problem: str | None = None
    """Why the scan stopped before the end of the file (a damaged box), or ``None``."""

    @functools.cached_property
    def signature(self) -> tuple[tuple[int, int, bool, bytes], ...]:
        """What two files must share for one ``moov`` to describe both: each track's id,
        timescale, kind and sample entry."""
        return tuple((t.track_id, t.timescale, t.video, t.entry) for t in self.tracks)

    @property
    def leading(self) -> TrackInfo | None:
        """The first video track, else the first track (``None`` without a ``moov``)."""
        video = [t for t in self.tracks if t.video]
        return (video or list(self.tracks) or [None])[0]

    def track(self, track_id: int) -> TrackInfo | None:
        return next((t for t in self.tracks if t.track_id == track_id), None)

    @property
    def codecs(self) -> tuple[str, ...]:
        """The tracks' codec strings, in track order."""
        return tuple(t.codec for t in self.tracks)

    @property
    def complete(self) -> int:
        """Bytes from the start of the file to the end of the last complete fragment (of the
        init segment when there is none; 0 without one): what a repair keeps."""
        if self.fragments:
            last = self.fragments[-1]
            return last.offset + last.size
        return self.init_size

    @functools.cached_property
    def duration(self) -> float:
        """Seconds of the leading track in the fragments listed: from its first sample to the
        end of its last one (0.0 when it has none)."""
        leading = self.leading
        if leading is None:
            return 0.0
        first: int | None = None
        end = 0
        for fragment in self.fragments:
            for t in fragment.times:
                if t.track_id == leading.track_id:
                    first = t.decode_time if first is None else min(first, t.decode_time)
                    end = max(end, t.end)
        return 0.0 if first is None else (end - first) / leading.timescale


def boxes(body: bytes) -> list[tuple[bytes, bytes]]:
    """The boxes that tile ``body``: ``(type, body)`` each; raises :class:`ScanError` when one
    does not fit."""
    out = []
    pos = 0
    size = len(body)
    while pos < size:
        if pos + 8 > size:
            raise ScanError("truncated box header")
        box_size, kind = struct.unpack_from(">I4s", body, pos)
        header = 8
        if box_size == 1:
            if pos + 16 > size:
                raise ScanError("truncated box header")
            box_size = struct.unpack_from(">Q", body, pos + 8)[0]
            header = 16
        elif box_size == 0:
            box_size = size - pos
        if box_size < header or pos + box_size > size:
            raise ScanError(f"box {kind!r} of size {box_size} does not fit")
        out.append((kind, body[pos + header : pos + box_size]))
        pos += box_size
    return out


def _children_at(body: bytes, base: int) -> list[tuple[bytes, bytes, int]]:
    """:func:`boxes` with where each box's body starts (``base`` is where ``body`` does)."""
    out = []
    pos = 0
    for kind, inner in boxes(body):
        size = struct.unpack_from(">I", body, pos)[0]
        head = 16 if size == 1 else 8
        out.append((kind, inner, base + pos + head))
        pos += head + len(inner)
    return out


def _one(children: list[tuple[bytes, bytes]], kind: bytes) -> bytes:
    for found, body in children:
        if found == kind:
            return body
    raise ScanError(f"no {kind.decode('latin-1')} box")


def _unpack(fmt: str, data: bytes, offset: int = 0) -> tuple[int, ...]:
    try:
        return struct.unpack_from(fmt, data, offset)
    except struct.error:
        raise ScanError("box too short") from None


_VISUAL: Final = frozenset({b"avc1", b"avc3", b"hvc1", b"hev1", b"av01", b"vp09"})
_CONFIG: Final = {
    b"avcC": avc_codec_string,
    b"hvcC": hevc_codec_string,
    b"av1C": av1_codec_string,
    b"vpcC": vp9_codec_string,
}
_VISUAL_FIELDS: Final = 78
"""Bytes of a VisualSampleEntry before its child boxes (ISO/IEC 14496-12, 12.1.3)."""
_AUDIO_FIELDS: Final = 28
"""Bytes of an AudioSampleEntry before its child boxes (12.2.3)."""


def _esds_config(body: bytes) -> bytes:
    """The DecoderSpecificInfo (the AudioSpecificConfig) of an ``esds`` body (after version and
    flags); raises ``CodecError`` when it holds none."""

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
        tag, pos, _ = header(0)
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


def _codec(stsd: bytes) -> str:
    """The codec string of the first sample entry of an ``stsd`` body (see the module
    docstring); ``"unknown"`` without one."""
    try:
        entries = boxes(stsd[8:])
    except ScanError:
        entries = []
    if not entries:
        return "unknown"
    kind, entry = entries[0]
    try:
        if kind in _VISUAL:
            for child, record in boxes(entry[_VISUAL_FIELDS:]):
                if child in _CONFIG:
                    return _CONFIG[child](record)
        elif kind == b"Opus":
            return "opus"
        elif kind == b"mp4a":
            esds = next((b for k, b in boxes(entry[_AUDIO_FIELDS:]) if k == b"esds"), None)
            if esds is not None:
                return aac_codec_string(_esds_config(esds[4:]))
    except (CodecError, ScanError):
        pass
    return kind.decode("latin-1")


def parse_moov(body: bytes) -> tuple[TrackInfo, ...]:
    """The tracks of a ``moov`` body; raises :class:`ScanError` if it does not parse."""
    top = boxes(body)
    defaults: dict[int, tuple[int, int, int]] = {}
    for kind, inner in top:
        if kind == b"mvex":
            for sub, trex in boxes(inner):
                if sub == b"trex":
                    track_id, _, duration, size, flags = _unpack(">IIIII", trex, 4)
                    defaults[track_id] = (duration, size, flags)
    tracks = []
    for kind, inner in top:
        if kind != b"trak":
            continue
        trak = boxes(inner)
        tkhd = _one(trak, b"tkhd")
        version = tkhd[0] if tkhd else 0
        (track_id,) = _unpack(">I", tkhd, 20 if version == 1 else 12)
        mdia = boxes(_one(trak, b"mdia"))
        mdhd = _one(mdia, b"mdhd")
        (timescale,) = _unpack(">I", mdhd, 20 if mdhd[:1] == b"\x01" else 12)
        hdlr = _one(mdia, b"hdlr")
        (handler,) = _unpack(">4s", hdlr, 8)
        stbl = boxes(_one(boxes(_one(mdia, b"minf")), b"stbl"))
        entry = _one(stbl, b"stsd")
        if not timescale or not track_id:
            raise ScanError("a track with no id or timescale")
        duration, size, flags = defaults.get(track_id, (0, 0, 0))
        tracks.append(TrackInfo(track_id, timescale, handler == b"vide", entry, duration, size, flags, _codec(entry)))
    if not tracks:
        raise ScanError("a moov with no track")
    if len({t.track_id for t in tracks}) != len(tracks):
        raise ScanError("two tracks with one id")
    return tuple(sorted(tracks, key=lambda t: t.track_id))


@attrs.frozen
class MoofInfo:
    """A ``moof`` as :func:`parse_moof` reads it: its sequence and every ``traf``."""

    sequence: int
    trafs: tuple[TrackTime, ...]


class TfhdFlags:
    """``tfhd`` flags (ISO/IEC 14496-12, 8.8.7.1)."""

    BASE_DATA_OFFSET: Final = 0x01
    DESCRIPTION_INDEX: Final = 0x02
    DEFAULT_DURATION: Final = 0x08
    DEFAULT_SIZE: Final = 0x10
    DEFAULT_FLAGS: Final = 0x20
    DEFAULT_BASE_IS_MOOF: Final = 0x020000


class TrunFlags:
    """``trun`` flags (8.8.8.1): which per-sample fields follow."""

    DATA_OFFSET: Final = 0x01
    FIRST_FLAGS: Final = 0x04
    DURATION: Final = 0x100
    SIZE: Final = 0x200
    FLAGS: Final = 0x400
    CTO: Final = 0x800
    SAMPLE_FIELDS: Final = (DURATION, SIZE, FLAGS, CTO)
    """The per-sample fields, in the order they come in."""


@attrs.frozen
class Tfhd:
    """A ``tfhd``: its flags, track, base data offset and the sample defaults it sets."""

    flags: int
    track_id: int
    base_data_offset: int | None
    default_duration: int | None
    default_size: int | None
    default_flags: int | None

    def defaults(self, track: TrackInfo) -> tuple[int, int, int]:
        """``(duration, size, flags)`` of a sample that gives none: this box's, else the
        track's ``trex`` defaults."""
        return (
            track.default_duration if self.default_duration is None else self.default_duration,
            track.default_size if self.default_size is None else self.default_size,
            track.default_flags if self.default_flags is None else self.default_flags,
        )


def parse_tfhd(body: bytes) -> Tfhd:
    """A ``tfhd`` body; raises :class:`ScanError` when it is shorter than its flags say."""
    (word, track_id) = _unpack(">II", body)
    flags = word & 0xFFFFFF
    pos = 8
    base = duration = size = sample_flags = None
    if flags & TfhdFlags.BASE_DATA_OFFSET:
        (base,) = _unpack(">Q", body, pos)
        pos += 8
    if flags & TfhdFlags.DESCRIPTION_INDEX:
        pos += 4
    if flags & TfhdFlags.DEFAULT_DURATION:
        (duration,) = _unpack(">I", body, pos)
        pos += 4
    if flags & TfhdFlags.DEFAULT_SIZE:
        (size,) = _unpack(">I", body, pos)
        pos += 4
    if flags & TfhdFlags.DEFAULT_FLAGS:
        (sample_flags,) = _unpack(">I", body, pos)
    return Tfhd(flags, track_id, base, duration, size, sample_flags)


def parse_moof(body: bytes, tracks: tuple[TrackInfo, ...], base: int = 0) -> MoofInfo:
    """The sequence and ``traf`` times of a ``moof`` body (which starts at ``base`` in its file);
    raises :class:`ScanError` if it does not parse or names a track the ``moov`` has not."""
    return _parse_moof(body, {t.track_id: t for t in tracks}, base)


def _parse_moof(body: bytes, tracks: dict[int, TrackInfo], base: int) -> MoofInfo:
    (sequence,) = _unpack(">I", _one(boxes(body), b"mfhd"), 4)
    trafs = []
    for kind, inner, at in _children_at(body, base):
        if kind != b"traf":
            continue
        placed = _children_at(inner, at)
        field, wide = next(((where + 4, b[:1] == b"\x01") for k, b, where in placed if k == b"tfdt"), (-1, True))
        traf = [(k, b) for k, b, _ in placed]
        tfhd = parse_tfhd(_one(traf, b"tfhd"))
        track_id = tfhd.track_id
        track = tracks.get(track_id)
        if track is None:
            raise ScanError(f"a traf of track {track_id}, which the moov has not")
        default_duration, default_size, default_flags = tfhd.defaults(track)
        tfdt = _one(traf, b"tfdt")
        (decode_time,) = _unpack(">Q" if tfdt[:1] == b"\x01" else ">I", tfdt, 4)
        duration = samples = data = 0
        cto = False
        first_flags = -1
        for sub, trun in traf:
            if sub != b"trun":
                continue
            (word, count) = _unpack(">II", trun)
            if count > MAX_SAMPLES:
                raise ScanError(f"a trun of {count} samples")
            flags = word & 0xFFFFFF
            pos = 8 + 4 * bool(flags & TrunFlags.DATA_OFFSET)
            first = -1
            if flags & TrunFlags.FIRST_FLAGS:
                (first,) = _unpack(">I", trun, pos)
                pos += 4
            fields = [bit for bit in TrunFlags.SAMPLE_FIELDS if flags & bit]
            if pos + count * 4 * len(fields) > len(trun):
                raise ScanError("trun shorter than its sample count")
            if count and fields:
                values = struct.unpack_from(f">{count * len(fields)}I", trun, pos)
                width = len(fields)
                if flags & TrunFlags.DURATION:
                    duration += sum(values[0::width])
                else:
                    duration += count * default_duration
                if first < 0 and flags & TrunFlags.FLAGS:
                    first = values[fields.index(TrunFlags.FLAGS)]
                if flags & TrunFlags.SIZE:
                    data += sum(values[fields.index(TrunFlags.SIZE) :: width])
                else:
                    data += count * default_size
                cto = cto or bool(flags & TrunFlags.CTO and any(values[fields.index(TrunFlags.CTO) :: width]))
            else:
                duration += count * default_duration
                data += count * default_size
            if samples == 0 and count:
                first_flags = first if first >= 0 else default_flags
            samples += count
        trafs.append(TrackTime(track_id, decode_time, duration, field, wide, samples, data, cto, first_flags))
    return MoofInfo(sequence, tuple(trafs))


def _fragment(offset: int, end: int, moof: MoofInfo, leading: TrackInfo, scales: dict[int, int]) -> FragmentInfo:
    times = tuple(t for t in moof.trafs if t.samples)
    lead = [t for t in moof.trafs if t.track_id == leading.track_id and t.samples]
    sync = bool(lead) and not lead[0].first_flags & NON_SYNC
    if lead:
        scale = leading.timescale
        first, last = lead[0], lead[-1]
        start = first.decode_time / scale
        duration = (last.end - first.decode_time) / scale
    elif times:
        start, duration = min((t.decode_time / scales[t.track_id], t.duration / scales[t.track_id]) for t in times)
    else:
        start = duration = 0.0
    return FragmentInfo(offset, end - offset, moof.sequence, times, start, max(duration, 0.0), sync)


def scan(read: Reader, size: int) -> Mp4Index:
    """Walk the top-level boxes of a file of ``size`` bytes (see the module docstring)."""
    pos = 0
    init_size = 0
    tracks: tuple[TrackInfo, ...] = ()
    scales: dict[int, int] = {}
    fragments: list[FragmentInfo] = []
    pending: tuple[int, MoofInfo] | None = None
    problem: str | None = None
    leading: TrackInfo | None = None
    by_id: dict[int, TrackInfo] = {}
    count = 0
    while pos + 8 <= size:
        if count >= MAX_BOXES:
            problem = f"more than {MAX_BOXES} boxes"
            break
        count += 1
        header = read(pos, 16)
        if len(header) < 8:
            break  # the file shrank meanwhile
        box_size, kind = struct.unpack_from(">I4s", header)
        head = 8
        if box_size == 1:
            if len(header) < 16:
                break
            box_size = struct.unpack_from(">Q", header, 8)[0]
            head = 16
        elif box_size == 0:
            box_size = size - pos
        if box_size < head:
            problem = f"box {kind!r} at {pos} has size {box_size}"
            break
        end = pos + box_size
        if count == 1 and kind != b"ftyp":
            problem = f"the file starts with {kind!r}, not ftyp"
            break
        if end > size:
            break  # the box being written (or cut short): not listed
        if kind == b"moov":
            if tracks:
                problem = f"a second moov at {pos}"
                break
            if box_size > MAX_MOOV:
                problem = f"moov of {box_size} bytes is over {MAX_MOOV}"
                break
            try:
                tracks = parse_moov(_read_exactly(read, pos + head, box_size - head))
            except ScanError as exc:
                problem = f"moov: {exc}"
                break
            scales = {t.track_id: t.timescale for t in tracks}
            by_id = {t.track_id: t for t in tracks}
            video = [t for t in tracks if t.video]
            leading = (video or list(tracks))[0]
            init_size = end
        elif kind == b"moof":
            if not tracks:
                problem = f"a moof before the moov, at {pos}"
                break
            if box_size > MAX_MOOF:
                problem = f"moof of {box_size} bytes at {pos} is over {MAX_MOOF}"
                break
            try:
                body = _read_exactly(read, pos + head, box_size - head)
                moof = _parse_moof(body, by_id, pos + head)
            except ScanError as exc:
                problem = f"moof at {pos}: {exc}"
                break
            pending = (pos, moof)
        elif kind == b"mdat":
            if pending is not None and leading is not None:
                fragments.append(_fragment(pending[0], end, pending[1], leading, scales))
                pending = None
                if len(fragments) >= MAX_FRAGMENTS:
                    problem = f"more than {MAX_FRAGMENTS} fragments"
                    break
        pos = end
    return Mp4Index(size, init_size, tracks, tuple(fragments), problem)


def _read_exactly(read: Reader, offset: int, size: int) -> bytes:
    data = read(offset, size)
    if len(data) != size:
        raise ScanError("the file ended inside a box")
    return data


def scan_bytes(data: bytes) -> Mp4Index:
    """:func:`scan` over bytes in memory."""
    view = memoryview(data)
    return scan(lambda offset, size: bytes(view[offset : offset + size]), len(data))


def scan_path(path: str | os.PathLike[str], size: int | None = None) -> Mp4Index:
    """:func:`scan` of the file at ``path`` (blocking: run it in a thread), its first ``size``
    bytes (``None``: its size now). ``OSError`` when it cannot be opened or read."""
    with open(path, "rb") as file:
        if size is None:
            size = os.fstat(file.fileno()).st_size

        def read(offset: int, length: int) -> bytes:
            file.seek(offset)
            return file.read(length)

        return scan(read, size)
