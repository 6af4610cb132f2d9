"""The fragment writer of a fragmented MP4: frames in, ``moof`` + ``mdat`` out (sans-IO).

:class:`FragmentWriter` takes media frames (:meth:`~FragmentWriter.push`) and cuts them into
fragments (:meth:`~FragmentWriter.fragment`), each a :class:`Fragment` with its bytes and what a
packager needs to list it. Samples, timescales, the held-back sample, the timeline (jumps,
discontinuities, gaps) and the fragment layout are described in :mod:`arcly_trio.media.fmp4`.

Error policy: a composition offset beyond 32 signed bits raises
:class:`~arcly_trio.media.codecs.CodecError` and leaves the writer as it was; misuse (invalid
settings or tracks, a frame whose codec is not its track's, a fragment over 2 GiB) raises
:class:`~arcly_trio.core.errors.LocalProtocolError`.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Final

import attrs

from arcly_trio.core.errors import LocalProtocolError
from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.media.codecs import CodecError
from arcly_trio.media.codecs.av1 import strip_temporal_delimiter
from arcly_trio.media.codecs.bits import Payload
from arcly_trio.media.fmp4.boxes import U32 as _U32
from arcly_trio.media.fmp4.boxes import full_box as _full_box
from arcly_trio.media.fmp4.init import Fmp4Track, check_tracks

__all__ = [
    "DEFAULT_MAX_GAP_MS",
    "TrackRun",
    "Fragment",
    "FragmentWriter",
    "ms_to_ticks",
    "merge_fragments",
]

#: A forward DTS step past the newest DTS of the stream larger than this is a jump (ms).
DEFAULT_MAX_GAP_MS: Final = 10_000

_MAX_GAP_LIMIT_MS: Final = 3_600_000  # 1 h: keeps every duration in 32 bits at 1 MHz
_I32_MIN: Final = -0x80000000
_I32_MAX: Final = 0x7FFFFFFF
_MAX_MDAT: Final = 0x7FFFFFFF  # trun data_offset is signed 32-bit

# Sample flags (ISO/IEC 14496-12, 8.8.3.1).
_SYNC_FLAGS: Final = 0x02000000  # sample_depends_on = 2 (does not depend on others)
_NON_SYNC_FLAGS: Final = 0x01010000  # sample_depends_on = 1, sample_is_non_sync_sample

# trun flags.
_TRUN_DATA_OFFSET: Final = 0x000001
_TRUN_DURATION: Final = 0x000100
_TRUN_SIZE: Final = 0x000200
_TRUN_FLAGS: Final = 0x000400
_TRUN_CTO: Final = 0x000800
_TFHD_DEFAULT_BASE_IS_MOOF: Final = 0x020000
_TRUN_ENTRIES: Final = _TRUN_DATA_OFFSET | _TRUN_DURATION | _TRUN_SIZE | _TRUN_FLAGS
_BOX_HEAD: Final = struct.Struct(">I4s")
_MOOF_HEAD: Final = struct.Struct(">I4sI4sII")  # moof header, mfhd (version 0, no flags, sequence)
# A traf's boxes before its sample table: traf header, tfhd (track_ID only), tfdt (version 1),
# trun header (version 1: signed composition offsets; sample count, data offset).
_TRAF_HEAD: Final = struct.Struct(">I4sI4sIII4sIQI4sIIi")
_AUDIO: Final = FrameKind.AUDIO  # (an enum member named in the per-frame path costs a descriptor call)


def ms_to_ticks(ms: int, timescale: int) -> int:
    """``ms`` milliseconds in ``timescale`` ticks, rounded to the nearest tick (halves up)."""
    return (ms * timescale + 500) // 1000


def _ticks_to_ms_ceil(ticks: int, timescale: int) -> int:
    return -(-ticks * 1000 // timescale)


@attrs.frozen
class TrackRun:
    """One ``traf`` of a fragment: contiguous samples of one track.

    Attributes:
        track_id: the track's ``track_ID``.
        timescale: the track's timescale.
        decode_time: the ``tfdt`` (baseMediaDecodeTime) in ticks.
        duration: the sum of the sample durations in ticks.
        samples: the number of samples.
        size: the bytes of the samples in the ``mdat``.
        starts_with_sync: the first sample is a sync sample (a keyframe, or any audio sample).
    """

    track_id: int
    timescale: int
    decode_time: int
    duration: int
    samples: int
    size: int
    starts_with_sync: bool

    @property
    def end(self) -> int:
        """The decode time (ticks) right after the run: ``decode_time + duration``."""
        return self.decode_time + self.duration


@attrs.frozen
class Fragment:
    """One ``moof`` + ``mdat``: an LL-HLS part, or a piece of a segment.

    ``start``, ``duration`` and ``first_dts`` describe the *reference run*: the runs of the
    writer's leading track (its first video track, or its first track when it has no video),
    or, when the fragment has none of them, its earliest run.

    Attributes:
        sequence: the ``mfhd`` sequence number.
        data: the bytes (``moof`` then ``mdat``).
        runs: one :class:`TrackRun` per ``traf``, in ``moof`` order.
        start: decode time of the reference run's first sample, in seconds.
        duration: seconds from ``start`` to the end of the reference track's last sample in
            this fragment (the sum of its sample durations when it has no gap).
        first_dts: the DTS (ms, as pushed) of the reference run's first sample.
        independent: the leading track has samples here and the first one is a sync sample
            (LL-HLS ``INDEPENDENT=YES``; always true for an audio-only writer).
        discontinuity: a sample in this fragment starts a new timeline (a jump or
            :meth:`FragmentWriter.discontinuity`).
    """

    sequence: int
    data: bytes = attrs.field(repr=False)
    runs: tuple[TrackRun, ...]
    start: float
    duration: float
    first_dts: int
    independent: bool
    discontinuity: bool

    @property
    def size(self) -> int:
        """The fragment's length in bytes."""
        return len(self.data)


class _Sample:
    """A sample waiting in the writer; ``duration`` is 0 until the next sample is known."""

    __slots__ = ("decode", "cto", "payload", "sync", "dts", "out", "duration", "rebased")

    def __init__(self, decode: int, cto: int, payload: Payload, sync: bool, dts: int, out: int, rebased: bool) -> None:
        self.decode = decode  # ticks
        self.cto = cto  # ticks
        self.payload = payload
        self.sync = sync
        self.dts = dts  # ms, as pushed
        self.out = out  # ms, on the output timeline
        self.duration = 0
        self.rebased = rebased


class _TrackState:
    """What the writer keeps per track."""

    __slots__ = ("track", "held", "done", "last_out", "end", "last_duration", "max_gap", "started")

    def __init__(self, track: Fmp4Track, max_gap_ms: int) -> None:
        self.track = track
        self.held: _Sample | None = None  # the newest sample, duration unknown
        self.done: list[_Sample] = []  # complete samples, not written yet
        self.last_out: int | None = None  # output ms of the newest sample's DTS
        self.end: int | None = None  # ticks: end of the last complete sample (no held one)
        self.last_duration = track.default_duration
        self.max_gap = ms_to_ticks(max_gap_ms, track.timescale)
        self.started = track.kind is not FrameKind.VIDEO  # video waits for a keyframe

    def end_ms(self) -> int | None:
        """Where this track's media ends (output ms, rounded up), the held sample counted with
        its estimated duration."""
        ts = self.track.timescale
        if self.held is not None:
            return self.held.out + _ticks_to_ms_ceil(self.last_duration, ts)
        if self.end is not None:
            return _ticks_to_ms_ceil(self.end, ts)
        return None

    def complete(self, next_decode: int | None) -> None:
        """Give the held sample its duration: up to ``next_decode`` when that is within the gap
        limit (and after it), else the previous duration (a gap follows)."""
        held = self.held
        if held is None:
            return
        distance = -1 if next_decode is None else next_decode - held.decode
        duration = distance if 0 < distance <= self.max_gap else self.last_duration
        held.duration = duration
        self.last_duration = duration
        self.done.append(held)
        self.end = held.decode + duration
        self.held = None


_TRAF_FIXED: Final = 8 + 16 + 20  # traf header, tfhd (track_ID only), tfdt version 1


def _runs(samples: list[_Sample]) -> list[list[_Sample]]:
    """Split a track's samples where a sample does not start at the previous one's end."""
    runs: list[list[_Sample]] = []
    end = None
    for sample in samples:
        if sample.decode != end:
            runs.append([])
        runs[-1].append(sample)
        end = sample.decode + sample.duration
    return runs


class FragmentWriter:
    """Frames in, fragments out, for the tracks of one init segment (see the module docstring).

    Args:
        tracks: the tracks, as given to :func:`init_segment`.
        max_gap_ms: a DTS more than this past the newest DTS of the stream is a jump; a track
            whose own frames are further apart than this has a gap (1 ms to 1 h).
        sequence: the ``mfhd`` sequence number of the first fragment (1 to 2**32 - 1).

    Raises ``LocalProtocolError`` for invalid settings or tracks (as :func:`init_segment`).
    """

    def __init__(
        self,
        tracks: Sequence[Fmp4Track],
        *,
        max_gap_ms: int = DEFAULT_MAX_GAP_MS,
        sequence: int = 1,
    ) -> None:
        check_tracks(tracks)
        if not 1 <= max_gap_ms <= _MAX_GAP_LIMIT_MS:
            raise LocalProtocolError(f"max_gap_ms {max_gap_ms} is outside 1..{_MAX_GAP_LIMIT_MS}")
        if not 1 <= sequence <= _U32:
            raise LocalProtocolError(f"sequence {sequence} is outside 1..2**32-1")
        ordered = sorted(tracks, key=lambda t: t.track_id)
        self.tracks: tuple[Fmp4Track, ...] = tuple(ordered)
        self.max_gap_ms = max_gap_ms
        #: The ``mfhd`` sequence number of the next fragment.
        self.sequence = sequence
        #: Video frames dropped because their track had no keyframe yet.
        self.dropped_frames = 0
        self._states = {(t.kind, t.track): _TrackState(t, max_gap_ms) for t in ordered}
        video = [t for t in ordered if t.kind is FrameKind.VIDEO]
        self._leading = (video or ordered)[0].track_id
        self._offset = 0
        self._rebase = False
        # The newest output DTS (ms) of any track: the most recent is never older than any
        # earlier one (a frame that would be is a jump and lands at the end of the timeline).
        self._newest_out: int | None = None

    @property
    def offset(self) -> int:
        """Milliseconds added to the frames' timestamps on the output timeline (0 until the
        first jump or discontinuity)."""
        return self._offset

    def discontinuity(self) -> None:
        """The source starts a new timeline (the publisher restarted): the next frame pushed,
        of any track, lands at the end of what was written so far."""
        self._rebase = True

    # --- pushing --------------------------------------------------------------------------------

    def push(self, frame: Frame) -> bool:
        """Take one media frame as a sample; ``True`` if it was taken.

        Config frames, data frames and frames of no track of this writer are ignored
        (``False``), as are video frames before their track's first keyframe (counted in
        :attr:`dropped_frames`). Raises ``LocalProtocolError`` for a frame whose codec is not
        its track's, :class:`CodecError` for a composition offset beyond 32 signed bits; the
        writer is then unchanged.
        """
        state = self._states.get((frame.kind, frame.track))
        if state is None:
            return False
        track = state.track
        if frame.codec != track.codec:
            raise LocalProtocolError(f"{frame.codec} frame pushed for track {track.track_id} of codec {track.codec}")
        if frame.config:
            return False
        if not state.started and not frame.keyframe:
            self.dropped_frames += 1
            return False
        ts = track.timescale
        offset = self._offset
        rebased = self._rebase or self._jumped(state, frame.dts + offset)
        if rebased:
            offset = self._timeline_end() - frame.dts
        out = frame.dts + offset
        decode = (out * ts + 500) // 1000  # ms_to_ticks, inline: this runs for every frame
        cto = ((frame.pts + offset) * ts + 500) // 1000 - decode
        if not _I32_MIN <= cto <= _I32_MAX:
            raise CodecError(f"composition offset of {frame.pts - frame.dts} ms does not fit a trun")
        payload: Payload = strip_temporal_delimiter(frame.payload) if track.codec == "av1" else frame.payload
        # Nothing below raises: the writer changes only from here on.
        if rebased:
            self._offset = offset
            self._rebase = False
        state.complete(decode)
        sync = frame.keyframe or track.kind is _AUDIO
        state.held = _Sample(decode, cto, payload, sync, frame.dts, out, rebased)
        state.last_out = out
        if self._newest_out is None or out > self._newest_out:
            self._newest_out = out
        state.started = True
        return True

    def _jumped(self, state: _TrackState, out: int) -> bool:
        """Whether a frame at output time ``out`` (ms) breaks the timeline (module docstring)."""
        if out < 0:
            return True
        if state.last_out is not None and out <= state.last_out:
            return True
        if state.held is None and state.end is not None:
            if ms_to_ticks(out, state.track.timescale) < state.end:
                return True
        newest = self._newest_out
        return newest is not None and out - newest > self.max_gap_ms

    def _timeline_end(self) -> int:
        """Output ms where everything written so far ends (0 for a new writer)."""
        ends = [end for s in self._states.values() if (end := s.end_ms()) is not None]
        return max(ends, default=0)

    # --- cutting --------------------------------------------------------------------------------

    def straddling(self, until: int) -> int:
        """Where to cut so that a complete sample that starts before ``until`` (a DTS in ms, as
        for :meth:`fragment`) and ends after it goes after the cut: its DTS, or ``until`` when
        none does. (An audio frame that straddles a video keyframe starts the next segment, so
        that audio segments start at or a little before their video.)"""
        limit = until + self._offset
        for state in self._states.values():
            ts = state.track.timescale
            for sample in state.done:
                if sample.out < limit < sample.out + _ticks_to_ms_ceil(sample.duration, ts):
                    return sample.out - self._offset
        return until

    def fragment(self, until: int | None = None) -> Fragment | None:
        """A fragment of every sample whose duration is known, or ``None`` if there is none.

        With ``until`` (a DTS in ms on the timeline of the frames being pushed, typically the
        DTS of the frame just pushed), only the samples whose DTS is before it: push a keyframe,
        then ``fragment(keyframe.dts)`` ends a part right before it. The newest sample of each
        track stays in the writer (its duration is not known yet). Raises
        ``LocalProtocolError`` for a fragment over 2 GiB (the writer is then unchanged).
        """
        limit = None if until is None else until + self._offset
        taken: list[tuple[_TrackState, int]] = []
        for state in self._states.values():
            done = state.done
            count = len(done)
            if limit is not None and count and done[-1].out >= limit:  # (else all of them: the usual cut)
                count = next((i for i, s in enumerate(done) if s.out >= limit), count)
            if count:
                taken.append((state, count))
        if not taken:
            return None
        fragment = self._build([(state.track, state.done[:count]) for state, count in taken])
        for state, count in taken:
            del state.done[:count]
        return fragment

    def flush(self, end: int | None = None) -> Fragment | None:
        """Complete every track's held-back sample and return a fragment of everything left
        (``None`` if nothing is).

        A held sample lasts until ``end`` (a DTS in ms on the timeline of the frames pushed,
        e.g. the end of the stream) when that is after it and within ``max_gap_ms``, else its
        track's previous sample duration. Use it at the end of a stream; frames pushed after it
        go on the same timeline (their track may then have a gap, or they are a jump).
        """
        for state in self._states.values():
            if state.held is not None:
                ts = state.track.timescale
                state.complete(None if end is None else ms_to_ticks(end + self._offset, ts))
        return self.fragment()

    @property
    def pending(self) -> int:
        """Samples in the writer: complete ones not written yet plus the held-back ones."""
        return sum(len(s.done) + (s.held is not None) for s in self._states.values())

    def _build(self, per_track: list[tuple[Fmp4Track, list[_Sample]]]) -> Fragment:
        """Serialise the samples (already in track id order) as ``moof`` + ``mdat``: each run's
        sample table is read from its samples once, as flat lists (sizes, then the ``trun``
        entries), and its ``traf`` header packed in one go."""
        runs = [(track, run) for track, samples in per_track for run in _runs(samples)]
        tables: list[tuple[list[int], list[int], bool]] = []  # per run: sizes, trun entries, with CTO
        moof_size = 8 + 16
        mdat_payload = 0
        for _, run in runs:
            sizes = [len(s.payload) for s in run]
            with_cto = any([s.cto for s in run])
            if with_cto:
                entries = [v for s, size in zip(run, sizes, strict=True)
                           for v in (s.duration, size, _SYNC_FLAGS if s.sync else _NON_SYNC_FLAGS, s.cto)]  # fmt: skip
            else:
                entries = [v for s, size in zip(run, sizes, strict=True)
                           for v in (s.duration, size, _SYNC_FLAGS if s.sync else _NON_SYNC_FLAGS)]  # fmt: skip
            tables.append((sizes, entries, with_cto))
            moof_size += _TRAF_FIXED + 20 + len(run) * (16 if with_cto else 12)
            mdat_payload += sum(sizes)
        if moof_size + 8 + mdat_payload > _MAX_MDAT:
            raise LocalProtocolError(f"fragment of {mdat_payload} media bytes exceeds 2 GiB")
        sequence = self.sequence
        parts: list[Payload] = [_MOOF_HEAD.pack(moof_size, b"moof", 16, b"mfhd", 0, sequence)]
        payloads: list[Payload] = []
        infos: list[TrackRun] = []
        data_offset = moof_size + 8
        for (track, run), (sizes, entries, with_cto) in zip(runs, tables, strict=True):
            count = len(run)
            trun_size = 20 + count * (16 if with_cto else 12)
            flags = _TRUN_ENTRIES | (_TRUN_CTO if with_cto else 0)
            parts.append(_TRAF_HEAD.pack(
                _TRAF_FIXED + trun_size, b"traf",
                16, b"tfhd", _TFHD_DEFAULT_BASE_IS_MOOF, track.track_id,
                20, b"tfdt", 1 << 24, run[0].decode,
                trun_size, b"trun", 1 << 24 | flags, count, data_offset,
            ))  # fmt: skip
            parts.append(struct.pack((">" + ("IIIi" if with_cto else "III") * count), *entries))
            payloads.extend([s.payload for s in run])
            size = sum(sizes)
            duration = sum([s.duration for s in run])
            infos.append(TrackRun(track.track_id, track.timescale, run[0].decode, duration,
                                  count, size, run[0].sync))  # fmt: skip
            data_offset += size
        parts.append(_BOX_HEAD.pack(8 + mdat_payload, b"mdat"))
        parts.extend(payloads)
        data = b"".join(parts)
        self.sequence = sequence % _U32 + 1
        return self._describe(sequence, data, runs, infos)

    def _describe(
        self,
        sequence: int,
        data: bytes,
        runs: list[tuple[Fmp4Track, list[_Sample]]],
        infos: list[TrackRun],
    ) -> Fragment:
        leading = [i for i, info in enumerate(infos) if info.track_id == self._leading]
        if not leading:
            starts = [info.decode_time / info.timescale for info in infos]
            leading = [starts.index(min(starts))]
        first, last = infos[leading[0]], infos[leading[-1]]
        ts = first.timescale
        return Fragment(
            sequence=sequence,
            data=data,
            runs=tuple(infos),
            start=first.decode_time / ts,
            duration=(last.end - first.decode_time) / ts,
            first_dts=runs[leading[0]][1][0].dts,
            independent=first.track_id == self._leading and first.starts_with_sync,
            discontinuity=any(s.rebased for _, run in runs for s in run),
        )


def merge_fragments(fragments: Sequence[tuple[bytes, int]], sequence: int) -> bytes:
    """One ``moof`` + ``mdat`` holding the ``traf``\\ s of several fragments (each a ``moof`` +
    ``mdat`` this module wrote, with the ``track_ID`` it gets in the merged fragment), in the
    order given: what a muxed rendition's part is (one fragment per track, cut at the same
    time, written by one writer per track). ``sequence`` is the ``mfhd`` sequence number.

    Each ``tfhd`` gets its new ``track_ID`` and each ``trun`` its ``data_offset`` moved to
    where its samples land in the merged ``mdat``; the sample tables are copied as they are.
    Raises ``LocalProtocolError`` for bytes this module did not write (wrong boxes or sizes)
    and for a merged fragment over 2 GiB.
    """
    trafs: list[tuple[bytes, int, int]] = []  # (traf, track_ID, shift of its data_offset)
    payloads: list[bytes | memoryview] = []
    mdat_before = 0  # media bytes of the fragments before this one
    for data, track_id in fragments:
        view = memoryview(data)
        moof_size, kind = struct.unpack_from(">I4s", view) if len(view) >= 8 else (0, b"")
        if kind != b"moof" or not 24 <= moof_size <= len(view) - 8 or view[moof_size + 4 : moof_size + 8] != b"mdat":
            raise LocalProtocolError("merge_fragments() takes moof + mdat fragments")
        mdat_size = struct.unpack_from(">I", view, moof_size)[0]
        if moof_size + mdat_size != len(view) or not 1 <= track_id <= _U32:
            raise LocalProtocolError("merge_fragments(): a fragment's sizes or track_ID are not valid")
        at = 8 + 16  # after the moof header and its mfhd
        while at < moof_size:
            size, kind = struct.unpack_from(">I4s", view, at) if at + 8 <= moof_size else (0, b"")
            if (
                kind != b"traf"
                or size < _TRAF_FIXED + 20
                or at + size > moof_size
                or bytes(view[at + 12 : at + 16]) != b"tfhd"
                or bytes(view[at + _TRAF_FIXED + 4 : at + _TRAF_FIXED + 8]) != b"trun"
            ):
                raise LocalProtocolError("merge_fragments(): a traf is not one this module writes")
            trafs.append((bytes(view[at : at + size]), track_id, mdat_before - moof_size))
            at += size
        payloads.append(view[moof_size + 8 :])
        mdat_before += mdat_size - 8
    moof_size = 8 + 16 + sum(len(traf) for traf, _, _ in trafs)
    if moof_size + 8 + mdat_before > _MAX_MDAT:
        raise LocalProtocolError(f"fragment of {mdat_before} media bytes exceeds 2 GiB")
    parts: list[bytes | memoryview] = [
        struct.pack(">I4s", moof_size, b"moof"),
        _full_box(b"mfhd", 0, 0, struct.pack(">I", sequence)),
    ]
    trun_offset = _TRAF_FIXED + 16  # the trun's data_offset inside a traf
    for traf, track_id, shift in trafs:
        edited = bytearray(traf)
        struct.pack_into(">I", edited, 8 + 12, track_id)  # tfhd: header, version and flags, track_ID
        offset = struct.unpack_from(">i", edited, trun_offset)[0] + moof_size + shift
        if not 0 <= offset <= _MAX_MDAT:
            raise LocalProtocolError("merge_fragments(): a trun's data_offset is not valid")
        struct.pack_into(">i", edited, trun_offset, offset)
        parts.append(bytes(edited))
    parts.append(struct.pack(">I4s", 8 + mdat_before, b"mdat"))
    parts.extend(payloads)
    return b"".join(parts)
