"""Recorded fragmented MP4 files read by their box headers: the init segment, the tracks, and where
each fragment lies, when it starts and whether it starts with a keyframe (sans-IO, no trio).

What the playback server (:mod:`.playback`) needs to serve a span of a recording without decoding
anything: an HLS byte range per group of fragments and the times to list them with, and the
fragments to re-base into one MP4. :func:`scan` walks the top-level boxes of a file through a
``read(offset, size)`` callable (the caller reads a file in a thread; tests pass bytes with
:func:`scan_bytes`), reads whole only the ``moov`` (tracks: ``tkhd`` id, ``mdhd`` timescale,
``hdlr`` kind, the ``stsd`` sample entry, ``trex`` defaults) and each ``moof`` (``mfhd``
sequence, per ``traf``: ``tfhd`` defaults, ``tfdt`` decode time, ``trun`` durations and the
first sample's flags), and skips every ``mdat`` by its size. A fragment is a ``moof`` and the
``mdat`` after it; its bytes run from the ``moof``'s first byte to the ``mdat``'s last.

The *leading* track is the first video track (by id), else the first track: a fragment's
``start`` and ``duration`` are its leading track's, and it is ``sync`` when its first leading
sample is a sync sample (``sample_is_non_sync_sample`` clear), which is where playback may begin.
A fragment without a sample of the leading track is not ``sync``.

Attacker's view: a recording is written by this server, but a file may be truncated (``kill -9``
in the middle of a fragment), damaged, or replaced by someone with access to the disk. So every
size is checked against its parent and the file; the ``moov`` and each ``moof`` are read only up
to :data:`MAX_MOOV` / :data:`MAX_MOOF` bytes; at most :data:`MAX_FRAGMENTS` fragments are listed;
the walk always advances by at least a box header, so it ends on any input.

Error policy: nothing here raises on the bytes it is given: a scan stops at the first box that
does not parse, keeping the complete fragments before it, and says why in
:attr:`Mp4Index.problem` (a fragment whose ``mdat`` is cut short, the one being written, is
simply not listed: that is not a problem). A ``read`` that raises ``OSError`` propagates (the
caller's file is gone).
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable
from typing import Final

import attrs

__all__ = [
    "MAX_MOOV",
    "MAX_MOOF",
    "MAX_FRAGMENTS",
    "MAX_SAMPLES",
    "TrackInfo",
    "TrackTime",
    "FragmentInfo",
    "Mp4Index",
    "scan",
    "scan_bytes",
    "Reader",
    "parse_moov",
    "parse_moof",
    "MoofInfo",
    "TrafInfo",
    "NON_SYNC",
]

MAX_MOOV: Final = 4 * 1024 * 1024
"""The largest ``moov`` read (bytes)."""
MAX_MOOF: Final = 4 * 1024 * 1024
"""The largest ``moof`` read (bytes)."""
MAX_FRAGMENTS: Final = 200_000
"""The most fragments one file lists (a day of 1 s fragments is 86 400)."""
MAX_SAMPLES: Final = 100_000
"""The most samples one ``trun`` may hold (a ``trun`` whose samples all take their defaults
could claim four billion in 20 bytes)."""
NON_SYNC: Final = 0x00010000
"""``sample_is_non_sync_sample`` in sample flags (ISO/IEC 14496-12, 8.8.3.1)."""

Reader = Callable[[int, int], bytes]
"""``read(offset, size)``: up to ``size`` bytes of the file from ``offset``."""


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


class _Malformed(Exception):
    """A box that does not parse (internal: turned into :attr:`Mp4Index.problem`)."""


def _children(body: bytes) -> list[tuple[bytes, bytes]]:
    """The boxes that tile ``body``: ``(type, body)`` each."""
    out = []
    pos = 0
    size = len(body)
    while pos < size:
        if pos + 8 > size:
            raise _Malformed("truncated box header")
        box_size, kind = struct.unpack_from(">I4s", body, pos)
        header = 8
        if box_size == 1:
            if pos + 16 > size:
                raise _Malformed("truncated box header")
            box_size = struct.unpack_from(">Q", body, pos + 8)[0]
            header = 16
        elif box_size == 0:
            box_size = size - pos
        if box_size < header or pos + box_size > size:
            raise _Malformed(f"box {kind!r} of size {box_size} does not fit")
        out.append((kind, body[pos + header : pos + box_size]))
        pos += box_size
    return out


def _children_at(body: bytes, base: int) -> list[tuple[bytes, bytes, int]]:
    """:func:`_children` with where each box's body starts (``base`` is where ``body`` does)."""
    out = []
    pos = 0
    for kind, inner in _children(body):
        size = struct.unpack_from(">I", body, pos)[0]
        head = 16 if size == 1 else 8
        out.append((kind, inner, base + pos + head))
        pos += head + len(inner)
    return out


def _one(boxes: list[tuple[bytes, bytes]], kind: bytes) -> bytes:
    for found, body in boxes:
        if found == kind:
            return body
    raise _Malformed(f"no {kind.decode('latin-1')} box")


def _unpack(fmt: str, data: bytes, offset: int = 0) -> tuple[int, ...]:
    try:
        return struct.unpack_from(fmt, data, offset)
    except struct.error:
        raise _Malformed("box too short") from None


def parse_moov(body: bytes) -> tuple[TrackInfo, ...]:
    """The tracks of a ``moov`` body; raises ``ValueError`` if it does not parse."""
    try:
        return _parse_moov(body)
    except _Malformed as exc:
        raise ValueError(str(exc)) from None


def _parse_moov(body: bytes) -> tuple[TrackInfo, ...]:
    boxes = _children(body)
    defaults: dict[int, tuple[int, int, int]] = {}
    for kind, inner in boxes:
        if kind == b"mvex":
            for sub, trex in _children(inner):
                if sub == b"trex":
                    track_id, _, duration, size, flags = _unpack(">IIIII", trex, 4)
                    defaults[track_id] = (duration, size, flags)
    tracks = []
    for kind, inner in boxes:
        if kind != b"trak":
            continue
        trak = _children(inner)
        tkhd = _one(trak, b"tkhd")
        version = tkhd[0] if tkhd else 0
        (track_id,) = _unpack(">I", tkhd, 20 if version == 1 else 12)
        mdia = _children(_one(trak, b"mdia"))
        mdhd = _one(mdia, b"mdhd")
        (timescale,) = _unpack(">I", mdhd, 20 if mdhd[:1] == b"\x01" else 12)
        hdlr = _one(mdia, b"hdlr")
        (handler,) = _unpack(">4s", hdlr, 8)
        stbl = _children(_one(_children(_one(mdia, b"minf")), b"stbl"))
        entry = _one(stbl, b"stsd")
        if not timescale or not track_id:
            raise _Malformed("a track with no id or timescale")
        duration, size, flags = defaults.get(track_id, (0, 0, 0))
        tracks.append(TrackInfo(track_id, timescale, handler == b"vide", entry, duration, size, flags))
    if not tracks:
        raise _Malformed("a moov with no track")
    if len({t.track_id for t in tracks}) != len(tracks):
        raise _Malformed("two tracks with one id")
    return tuple(sorted(tracks, key=lambda t: t.track_id))


@attrs.frozen
class TrafInfo:
    """One ``traf`` as :func:`parse_moof` reads it."""

    track_id: int
    decode_time: int
    duration: int
    samples: int
    first_flags: int
    field: int = -1
    wide: bool = True
    data: int = 0
    cto: bool = False

    @property
    def end_time(self) -> int:
        return self.decode_time + self.duration


@attrs.frozen
class MoofInfo:
    sequence: int
    trafs: tuple[TrafInfo, ...]


# tfhd flags
_BASE_DATA_OFFSET: Final = 0x01
_DESCRIPTION_INDEX: Final = 0x02
_DEFAULT_DURATION: Final = 0x08
_DEFAULT_SIZE: Final = 0x10
_DEFAULT_FLAGS: Final = 0x20
# trun flags
_DATA_OFFSET: Final = 0x01
_FIRST_FLAGS: Final = 0x04
_DURATION: Final = 0x100
_SIZE: Final = 0x200
_FLAGS: Final = 0x400
_CTO: Final = 0x800


def parse_moof(body: bytes, tracks: tuple[TrackInfo, ...], base: int = 0) -> MoofInfo:
    """The sequence and ``traf`` times of a ``moof`` body (which starts at ``base`` in its file);
    raises ``ValueError`` if it does not parse or names a track the ``moov`` has not."""
    try:
        return _parse_moof(body, {t.track_id: t for t in tracks}, base)
    except _Malformed as exc:
        raise ValueError(str(exc)) from None


def _tfhd(tfhd: bytes) -> tuple[int, int, int, int, int]:
    """``(track_id, default size or -1, default duration or -1, default flags or -1)`` of a
    ``tfhd``."""
    (word, track_id) = _unpack(">II", tfhd)
    flags = word & 0xFFFFFF
    pos = 8
    if flags & _BASE_DATA_OFFSET:
        pos += 8
    if flags & _DESCRIPTION_INDEX:
        pos += 4
    duration = size = sample_flags = -1
    if flags & _DEFAULT_DURATION:
        (duration,) = _unpack(">I", tfhd, pos)
        pos += 4
    if flags & _DEFAULT_SIZE:
        (size,) = _unpack(">I", tfhd, pos)
        pos += 4
    if flags & _DEFAULT_FLAGS:
        (sample_flags,) = _unpack(">I", tfhd, pos)
    return track_id, size, duration, sample_flags


def _parse_moof(body: bytes, tracks: dict[int, TrackInfo], base: int) -> MoofInfo:
    boxes = _children(body)
    (sequence,) = _unpack(">I", _one(boxes, b"mfhd"), 4)
    trafs = []
    for kind, inner, at in _children_at(body, base):
        if kind != b"traf":
            continue
        placed = _children_at(inner, at)
        field, wide = next(((where + 4, b[:1] == b"\x01") for k, b, where in placed if k == b"tfdt"), (-1, True))
        traf = [(k, b) for k, b, _ in placed]
        track_id, default_size, default_duration, default_flags = _tfhd(_one(traf, b"tfhd"))
        track = tracks.get(track_id)
        if track is None:
            raise _Malformed(f"a traf of track {track_id}, which the moov has not")
        if default_size < 0:
            default_size = track.default_size
        if default_duration < 0:
            default_duration = track.default_duration
        if default_flags < 0:
            default_flags = track.default_flags
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
                raise _Malformed(f"a trun of {count} samples")
            flags = word & 0xFFFFFF
            pos = 8 + 4 * bool(flags & _DATA_OFFSET)
            first = -1
            if flags & _FIRST_FLAGS:
                (first,) = _unpack(">I", trun, pos)
                pos += 4
            fields = [bit for bit in (_DURATION, _SIZE, _FLAGS, _CTO) if flags & bit]
            if pos + count * 4 * len(fields) > len(trun):
                raise _Malformed("trun shorter than its sample count")
            if count and fields:
                values = struct.unpack_from(f">{count * len(fields)}I", trun, pos)
                width = len(fields)
                if flags & _DURATION:
                    duration += sum(values[0::width])
                else:
                    duration += count * default_duration
                if first < 0 and flags & _FLAGS:
                    first = values[fields.index(_FLAGS)]
                if flags & _SIZE:
                    data += sum(values[fields.index(_SIZE) :: width])
                else:
                    data += count * default_size
                cto = cto or bool(flags & _CTO and any(values[fields.index(_CTO) :: width]))
            else:
                duration += count * default_duration
                data += count * default_size
            if samples == 0 and count:
                first_flags = first if first >= 0 else default_flags
            samples += count
        trafs.append(TrafInfo(track_id, decode_time, duration, samples, first_flags, field, wide, data, cto))
    return MoofInfo(sequence, tuple(trafs))


def _fragment(offset: int, end: int, moof: MoofInfo, leading: TrackInfo, scales: dict[int, int]) -> FragmentInfo:
    times = tuple(
        TrackTime(t.track_id, t.decode_time, t.duration, t.field, t.wide, t.samples, t.data, t.cto)
        for t in moof.trafs
        if t.samples
    )
    lead = [t for t in moof.trafs if t.track_id == leading.track_id and t.samples]
    sync = bool(lead) and not lead[0].first_flags & NON_SYNC
    if lead:
        scale = leading.timescale
        first, last = lead[0], lead[-1]
        start = first.decode_time / scale
        duration = (last.end_time - first.decode_time) / scale
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
    while pos + 8 <= size:
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
                tracks = _parse_moov(_read_exactly(read, pos + head, box_size - head))
            except _Malformed as exc:
                problem = f"moov: {exc}"
                break
            scales = {t.track_id: t.timescale for t in tracks}
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
                moof = _parse_moof(body, {t.track_id: t for t in tracks}, pos + head)
            except _Malformed as exc:
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
        raise _Malformed("the file ended inside a box")
    return data


def scan_bytes(data: bytes) -> Mp4Index:
    """:func:`scan` over bytes in memory."""
    view = memoryview(data)
    return scan(lambda offset, size: bytes(view[offset : offset + size]), len(data))
