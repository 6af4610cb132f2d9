"""One fragmented MP4 out of fragments of several recorded files: the span's ``moov`` and each
fragment re-based onto one timeline (sans-IO, no trio).

The playback server's ``playback.mp4`` (:mod:`.playback`) sends :func:`span_init` of the first
file's init segment (its ``mvhd`` duration and an ``mvex``/``mehd`` set to the span's duration,
so players show it and ``ffprobe`` reports it), then every fragment of the span through
:func:`rewrite_fragment`, which rebuilds the ``moof`` + ``mdat``:

* ``mfhd`` gets the output's own sequence number (1, 2, 3... whatever the files said);
* each ``traf``'s decode time moves by the track's shift (ticks), so the fragments of several
  files, sessions and timelines follow one another on one timeline from 0;
* with a ``cut`` (ticks per track, on the input's timeline) the samples at or after it are left
  out: the span ends where it was asked to, to the frame, not at a fragment's end;
* the ``traf`` is written plainly (``tfhd`` with default-base-is-moof, ``tfdt`` version 1, one
  ``trun`` with every sample's duration, size, flags and composition offset) and the ``mdat``
  holds exactly the samples kept, whatever layout the input had (base data offsets, several
  runs, defaults from ``tfhd`` or ``trex``). Boxes this does not understand inside a ``traf``
  (``sdtp``, sample groups, encryption) are left out.

Attacker's view: the input is a file on disk (see :mod:`.mp4scan`, whose box walker and ``tfhd``
reader this shares); every offset and size is
checked against the fragment's bytes before a slice is taken, and the output is never larger
than the input plus a fixed header per ``traf``.

Error policy: :func:`rewrite_fragment` and :func:`span_init` raise ``ValueError`` for input they
cannot rebuild (a box that does not parse, a sample outside the fragment); nothing else.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Final

from arcly_trio.services.recordings.mp4scan import (
    MAX_SAMPLES,
    TfhdFlags,
    TrackInfo,
    TrackTime,
    TrunFlags,
    parse_tfhd,
)
from arcly_trio.services.recordings.mp4scan import boxes as _boxes

__all__ = ["span_init", "rewrite_fragment", "rebuilt_size"]

_U64: Final = (1 << 64) - 1


def _box(kind: bytes, *parts: bytes) -> bytes:
    body = b"".join(parts)
    return struct.pack(">I4s", 8 + len(body), kind) + body


def _seconds_to(duration: float, timescale: int) -> int:
    return max(0, min(_U64, round(duration * timescale)))


def span_init(init: bytes, duration: float) -> bytes:
    """``init`` (``ftyp`` + ``moov``, and whatever else is before the first fragment) with the
    movie's duration set to ``duration`` seconds: in the ``mvhd`` and in an ``mehd`` (added to
    the ``mvex``, or set). Raises ``ValueError`` if it has no ``moov`` with an ``mvhd``."""
    out = []
    found = False
    for kind, body in _boxes(init):
        if kind != b"moov":
            out.append(_box(kind, body))
            continue
        found = True
        children = _boxes(body)
        mvhd = next((b for k, b in children if k == b"mvhd"), None)
        if mvhd is None or len(mvhd) < 32:
            raise ValueError("moov without an mvhd")
        version = mvhd[0]
        if version == 1:
            if len(mvhd) < 36:
                raise ValueError("mvhd too short")
            timescale = struct.unpack_from(">I", mvhd, 20)[0] or 1000
            value = _seconds_to(duration, timescale)
            mvhd = mvhd[:24] + struct.pack(">Q", value) + mvhd[32:]
        else:
            timescale = struct.unpack_from(">I", mvhd, 12)[0] or 1000
            value = min(_seconds_to(duration, timescale), 0xFFFFFFFF)
            mvhd = mvhd[:16] + struct.pack(">I", value) + mvhd[20:]
        mehd = _box(b"mehd", struct.pack(">IQ", 1 << 24, _seconds_to(duration, timescale)))
        parts = []
        for child, inner in children:
            if child == b"mvhd":
                parts.append(_box(b"mvhd", mvhd))
            elif child == b"mvex":
                rest = [_box(k, b) for k, b in _boxes(inner) if k != b"mehd"]
                parts.append(_box(b"mvex", mehd, *rest))
            else:
                parts.append(_box(child, inner))
        out.append(_box(b"moov", *parts))
    if not found:
        raise ValueError("no moov in the init segment")
    return b"".join(out)


_OUT_TRUN: Final = TrunFlags.DATA_OFFSET | TrunFlags.DURATION | TrunFlags.SIZE | TrunFlags.FLAGS | TrunFlags.CTO


def _u32(data: bytes, pos: int) -> int:
    if pos + 4 > len(data):
        raise ValueError("box too short")
    return int.from_bytes(data[pos : pos + 4], "big")


def rewrite_fragment(
    data: bytes,
    sequence: int,
    shifts: Mapping[int, int],
    tracks: Mapping[int, TrackInfo],
    *,
    offset: int = 0,
    cut: Mapping[int, int] | None = None,
) -> bytes:
    """The fragment ``data`` (a ``moof``, then anything, then its ``mdat``; ``offset`` is where
    it starts in its file, for base data offsets) rebuilt as described in the module docstring:
    sequence ``sequence``, each track's decode times moved by ``shifts[track_id]`` ticks (0 if
    absent; never below 0), samples whose decode time is at or past ``cut[track_id]`` left out.
    Returns ``b""`` when no sample is left. Raises ``ValueError`` for what it cannot rebuild.
    """
    try:
        return _rewrite(data, sequence, shifts, tracks, offset, cut)
    except struct.error as exc:  # a value the output cannot hold (an mdat past 2 GiB...)
        raise ValueError(f"cannot rebuild the fragment: {exc}") from None


def _rewrite(
    data: bytes,
    sequence: int,
    shifts: Mapping[int, int],
    tracks: Mapping[int, TrackInfo],
    offset: int,
    cut: Mapping[int, int] | None,
) -> bytes:
    top = _boxes(data)
    if not top or top[0][0] != b"moof":
        raise ValueError("a fragment must start with a moof")
    moof_head = 16 if struct.unpack_from(">I", data)[0] == 1 else 8
    moof_size = moof_head + len(top[0][1])
    trafs: list[tuple[int, list[_Sample]]] = []
    previous_end = 0  # where the previous traf's data ended (relative to the moof)
    for index, traf_body in enumerate(b for k, b in _boxes(top[0][1]) if k == b"traf"):
        track_id, samples, previous_end = _traf(traf_body, index, previous_end, tracks, offset, moof_size, len(data))
        trafs.append((track_id, samples))
    kept: list[tuple[int, list[_Sample]]] = []
    for track_id, samples in trafs:
        limit = None if cut is None else cut.get(track_id)
        chosen = samples if limit is None else [s for s in samples if s[0] < limit]
        if chosen:
            kept.append((track_id, chosen))
    if not kept:
        return b""
    with_cto = [any(s[3] for s in chosen) for _, chosen in kept]
    per_sample = [16 if cto else 12 for cto in with_cto]
    header = (
        8 + 16 + sum(8 + 16 + 20 + 20 + size * len(chosen) for (_, chosen), size in zip(kept, per_sample, strict=True))
    )
    data_offset = header + 8
    moof_parts = [struct.pack(">I4s", header, b"moof"), _box(b"mfhd", struct.pack(">II", 0, sequence & 0xFFFFFFFF))]
    payloads: list[bytes] = []
    for (track_id, chosen), cto_present in zip(kept, with_cto, strict=True):
        decode = max(0, min(_U64, chosen[0][0] + shifts.get(track_id, 0)))
        values = []
        for _, duration, sample_flags, cto, position, size in chosen:
            values.append(struct.pack(">III", duration, size, sample_flags))
            if cto_present:
                if not -0x80000000 <= cto <= 0x7FFFFFFF:
                    raise ValueError("a composition offset does not fit 32 signed bits")
                values.append(struct.pack(">i", cto))
            payloads.append(data[position : position + size])
        flags = _OUT_TRUN if cto_present else _OUT_TRUN & ~TrunFlags.CTO
        trun = _box(b"trun", struct.pack(">IIi", (1 << 24) | flags, len(chosen), data_offset), *values)
        data_offset += sum(s[5] for s in chosen)
        moof_parts.append(
            _box(
                b"traf",
                _box(b"tfhd", struct.pack(">II", TfhdFlags.DEFAULT_BASE_IS_MOOF, track_id)),
                _box(b"tfdt", struct.pack(">IQ", 1 << 24, decode)),
                trun,
            )
        )
    mdat_size = sum(map(len, payloads))
    return b"".join([*moof_parts, struct.pack(">I4s", 8 + mdat_size, b"mdat"), *payloads])


_Sample = tuple[int, int, int, int, int, int]
"""(decode time, duration, flags, composition offset, position in the fragment, size)."""


def _traf(
    body: bytes,
    index: int,
    previous_end: int,
    tracks: Mapping[int, TrackInfo],
    offset: int,
    moof_size: int,
    total: int,
) -> tuple[int, list[_Sample], int]:
    """The track id and samples of one ``traf`` body, and where its data ends."""
    traf = _boxes(body)
    tfhd = next((b for k, b in traf if k == b"tfhd"), None)
    tfdt = next((b for k, b in traf if k == b"tfdt"), None)
    if tfhd is None or tfdt is None:
        raise ValueError("a traf without tfhd or tfdt")
    header = parse_tfhd(tfhd)
    track_id = header.track_id
    track = tracks.get(track_id)
    if track is None:
        raise ValueError(f"a traf of unknown track {track_id}")
    if header.base_data_offset is not None:
        base = header.base_data_offset - offset
    elif header.flags & TfhdFlags.DEFAULT_BASE_IS_MOOF or index == 0:
        base = 0
    else:
        base = previous_end
    default_duration, default_size, default_flags = header.defaults(track)
    if tfdt[:1] == b"\x01":
        if len(tfdt) < 12:
            raise ValueError("tfdt too short")
        decode = int.from_bytes(tfdt[4:12], "big")
    else:
        decode = _u32(tfdt, 4)
    samples: list[_Sample] = []
    cursor = base
    for kind, trun in traf:
        if kind != b"trun":
            continue
        word = _u32(trun, 0)
        version, trun_flags = word >> 24, word & 0xFFFFFF
        count = _u32(trun, 4)
        if count > MAX_SAMPLES:
            raise ValueError(f"a trun of {count} samples")
        pos = 8
        if trun_flags & TrunFlags.DATA_OFFSET:
            cursor = base + int.from_bytes(trun[pos : pos + 4], "big", signed=True)
            pos += 4
        first_flags = None
        if trun_flags & TrunFlags.FIRST_FLAGS:
            first_flags = _u32(trun, pos)
            pos += 4
        width = 4 * sum(1 for bit in TrunFlags.SAMPLE_FIELDS if trun_flags & bit)
        if pos + count * width > len(trun):
            raise ValueError("trun shorter than its sample count")
        for i in range(count):
            duration, size, sample_flags, cto = default_duration, default_size, default_flags, 0
            if trun_flags & TrunFlags.DURATION:
                duration = _u32(trun, pos)
                pos += 4
            if trun_flags & TrunFlags.SIZE:
                size = _u32(trun, pos)
                pos += 4
            if trun_flags & TrunFlags.FLAGS:
                sample_flags = _u32(trun, pos)
                pos += 4
            if trun_flags & TrunFlags.CTO:
                cto = int.from_bytes(trun[pos : pos + 4], "big", signed=bool(version))
                pos += 4
            if i == 0 and first_flags is not None:
                sample_flags = first_flags
            if cursor < moof_size or cursor + size > total:
                raise ValueError("a sample lies outside its fragment")
            samples.append((decode, duration, sample_flags, cto, cursor, size))
            decode += duration
            cursor += size
    return track_id, samples, cursor


def rebuilt_size(times: Sequence[TrackTime]) -> int:
    """The length of what :func:`rewrite_fragment` makes of a fragment whose ``traf`` boxes
    (with samples) are ``times``, when no sample is cut: its ``moof`` (``mfhd``; per ``traf``: ``tfhd``,
    ``tfdt`` and a ``trun`` of 12 bytes a sample, 16 with composition offsets) and ``mdat``."""
    header = 8 + 16 + sum(8 + 16 + 20 + 20 + (16 if t.cto else 12) * t.samples for t in times)
    return header + 8 + sum(t.data for t in times)
