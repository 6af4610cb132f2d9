"""Cut one recording run's frames into segment files (sans-IO: frames in, file operations out).

A :class:`Segmenter` takes the frames of one publish session (or of one on-demand recording
run within it) and says what to write: :class:`Opened` (a new segment file, its name and start),
:class:`Wrote` (bytes to append to the open segment, and the media duration they bring it to) and
:class:`Closed` (the segment is complete). It never touches a clock or a file: the caller passes
the wall-clock time with each frame and performs the operations (the recorder, in one thread
hop per batch: :mod:`.recorder`).

Formats (``format``): ``fmp4`` (the default) writes each segment as a self-contained
fragmented MP4 with the project's muxer (:mod:`arcly_trio.media.fmp4`): ``ftyp`` + ``moov``,
then ``moof`` + ``mdat`` fragments of at most about ``fragment_ms`` (1 s), each cut right before
a video keyframe where one comes, so a file cut anywhere plays up to its last complete fragment.
Every codec the muxer carries (H.264, HEVC, AV1, VP9, AAC, Opus) on every track
(Enhanced RTMP multitrack). ``ts`` writes MPEG-TS with the project's muxer
(:class:`~arcly_trio.media.mpegts.TsMuxer`: H.264/HEVC and AAC/MP3 of track 0; other frames are
left out and counted), ``flv`` FLV (:class:`~arcly_trio.media.flv.FlvStreamWriter`: what FLV
carries, metadata and configs at the start of every segment); both are readable up to their last
written byte, and their bytes are handed out on the same cadence as fragments.

Cutting: a segment starts on a video keyframe of the leading track (the first video track; the
first audio track for a stream without video), frames before it are dropped (counted in
:attr:`Segmenter.dropped`). A new segment is cut on such a keyframe once the open one lasts
``segment_seconds``, and on the next one after a track's configuration changed or a track
appeared (the init segment must describe it). Segment names are their start: the session's
wall-clock anchor (the wall-clock time of the first frame recorded) plus the media time since,
so the segments of one run follow each other exactly in the catalog's time.

Durations: a segment's duration is the media time of its leading track from its first sample to
the end of its last one (for a cut, exactly up to the keyframe that starts the next segment).

Error policy: frames come from a publisher. A configuration the muxer cannot read leaves its
track out (counted in :attr:`Segmenter.bad_configs`), a frame the muxer refuses is dropped
(counted in :attr:`Segmenter.dropped`); nothing raises for any frame. Invalid settings raise
``ValueError``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import attrs

from arcly_trio.core.errors import ArclyError
from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.media.codec_strings import decoder_parameters
from arcly_trio.media.codecs import CodecError
from arcly_trio.media.flv import FlvStreamWriter
from arcly_trio.media.fmp4 import (
    SUPPORTED_CODECS,
    Fmp4Track,
    FragmentWriter,
    init_segment,
    needs_keyframe,
    track_from_config,
)
from arcly_trio.media.mpegts import SUPPORTED_AUDIO_CODECS, SUPPORTED_VIDEO_CODECS, TsMuxer
from arcly_trio.services.recordings.catalog import segment_name

__all__ = ["Segmenter", "Opened", "Wrote", "Closed", "Operation", "FORMATS", "codec_string"]

#: Recording formats and their file extensions.
FORMATS: Final = {"fmp4": ".mp4", "ts": ".ts", "flv": ".flv"}
_FLV_CODECS: Final = frozenset({"h264", "hevc", "av1", "vp9", "aac", "mp3", "opus"})


@attrs.frozen
class Opened:
    """Open segment ``name`` (in the stream's directory); its first sample is at ``start``
    (epoch seconds); ``codecs`` are its tracks' codec strings."""

    name: str
    start: float
    codecs: tuple[str, ...]


@attrs.frozen
class Wrote:
    """Append ``data`` to the open segment; it then holds ``duration`` seconds of media."""

    data: bytes
    duration: float


@attrs.frozen
class Closed:
    """The open segment is complete: ``duration`` seconds of media."""

    duration: float


Operation = Opened | Wrote | Closed


def codec_string(config: Frame) -> str:
    """The RFC 6381 codec string of a config frame (its codec name when the record does not
    parse or the codec has no such string)."""
    try:
        return decoder_parameters(config.codec, config.payload).codec
    except CodecError:
        return config.codec


class _Writer:
    """One segment's bytes in one format (the base: buffered bytes, handed out by ``take``)."""

    codecs: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.buffer: list[bytes] = []
        self.first_dts: int | None = None
        self.last_dts: int | None = None
        self.interval = 0
        self.written = 0.0  # media seconds in what was handed out

    def note(self, frame: Frame, leading: bool) -> None:
        if leading:
            if self.first_dts is None:
                self.first_dts = frame.dts
            elif self.last_dts is not None and frame.dts > self.last_dts:
                self.interval = frame.dts - self.last_dts
            self.last_dts = frame.dts

    def push(self, frame: Frame) -> bool:
        raise NotImplementedError

    def take(self, until: int | None) -> bytes:
        data = b"".join(self.buffer)
        self.buffer.clear()
        if data and self.first_dts is not None and self.last_dts is not None:
            self.written = (self.last_dts - self.first_dts) / 1000
        return data

    def finish(self, end: int | None) -> bytes:
        data = self.take(end)
        if self.first_dts is not None and self.last_dts is not None:
            stop = end if end is not None and end > self.last_dts else self.last_dts + self.interval
            self.written = (stop - self.first_dts) / 1000
        return data


class _Fmp4(_Writer):
    def __init__(self, tracks: list[Fmp4Track]) -> None:
        super().__init__()
        self.writer = FragmentWriter(tracks)
        video = [t for t in self.writer.tracks if t.kind is FrameKind.VIDEO]
        self.leading = (video or list(self.writer.tracks))[0].track_id
        self.buffer.append(init_segment(tracks))
        self.start: int | None = None  # ticks / timescale of the leading track's first sample
        self.end = 0.0

    def push(self, frame: Frame) -> bool:
        return self.writer.push(frame)

    def _add(self, fragment: object) -> None:
        if fragment is None:
            return
        self.buffer.append(fragment.data)  # type: ignore[attr-defined]
        for run in fragment.runs:  # type: ignore[attr-defined]
            if run.track_id == self.leading:
                start = run.decode_time / run.timescale
                if self.start is None:
                    self.start = start
                self.end = max(self.end, run.end / run.timescale)
        if self.start is not None:
            self.written = self.end - self.start

    def take(self, until: int | None) -> bytes:
        self._add(self.writer.fragment(until))
        data = b"".join(self.buffer)
        self.buffer.clear()
        return data

    def finish(self, end: int | None) -> bytes:
        self._add(self.writer.flush(end))
        data = b"".join(self.buffer)
        self.buffer.clear()
        return data


class _Ts(_Writer):
    def __init__(self, video: Frame | None, audio: Frame | None) -> None:
        super().__init__()
        self.muxer = TsMuxer(video.codec if video else None, audio.codec if audio else None)
        self.buffer.append(self.muxer.header())
        for config in (video, audio):
            if config is not None:
                self.muxer.mux(config)

    def push(self, frame: Frame) -> bool:
        data = self.muxer.mux(frame)
        if data:
            self.buffer.append(data)
        return bool(data)


class _Flv(_Writer):
    def __init__(self, head: list[Frame], has_audio: bool, has_video: bool) -> None:
        super().__init__()
        self.writer = FlvStreamWriter(has_audio=has_audio, has_video=has_video)
        self.pending_head = head

    def push(self, frame: Frame) -> bool:
        frames = [frame]
        if self.pending_head:
            frames = [*self.pending_head, frame]
            self.pending_head = []
        before = self.writer.frames
        data = self.writer.write(frames)
        if data:
            self.buffer.append(data)
        return self.writer.frames > before

    def finish(self, end: int | None) -> bytes:
        tail = self.writer.finish()
        if tail:
            self.buffer.append(tail)
        return super().finish(end)


class Segmenter:
    """One recording run's frames in, segment file operations out (see the module docstring).

    Args:
        format: ``fmp4``, ``ts`` or ``flv``.
        segment_seconds: cut on the first leading keyframe after this long (0.1 s to 1 day).
        fragment_ms: hand out bytes at least this often (100 ms to 10 s of media).
        not_before: the earliest start (epoch seconds) of the run's first segment: where the
            stream's previous run ended, so that runs never overlap on the recording timeline
            (a publisher that sent faster than real time, a clock that stepped back).
    """

    def __init__(
        self, format: str = "fmp4", segment_seconds: float = 60.0, fragment_ms: int = 1000, not_before: float = 0.0
    ) -> None:
        if format not in FORMATS:
            raise ValueError(f"unknown recording format {format!r} (fmp4, ts, flv)")
        if not 0.1 <= segment_seconds <= 86400:
            raise ValueError(f"segment duration {segment_seconds} s is outside 0.1..86400")
        if not 100 <= fragment_ms <= 10_000:
            raise ValueError(f"fragment duration {fragment_ms} ms is outside 100..10000")
        self.format = format
        self.extension = FORMATS[format]
        self.segment_ms = round(segment_seconds * 1000)
        self.fragment_ms = fragment_ms
        self.configs: dict[tuple[FrameKind, int], Frame] = {}
        """The latest config frame of each track (kind, track index)."""
        self.metadata: Frame | None = None
        self.dropped = 0
        """Frames not recorded: before the first keyframe, or refused by the muxer."""
        self.bad_configs = 0
        """Configurations the muxer could not read (their track was left out)."""
        self.segments = 0
        """Segments opened."""
        self.not_before = not_before
        self._anchor: tuple[float, int] | None = None  # (wall clock, dts) of the first frame
        self._writer: _Writer | None = None
        self._segment_first = 0
        self._fragment_first = 0
        self._renew = False
        self._tracks: frozenset[tuple[FrameKind, int]] = frozenset()
        self._last_name = ""
        self._segment_start = 0.0
        self.ended_at = not_before
        """Where the run's last closed segment ends (epoch seconds; ``not_before`` until one is)."""

    @property
    def recording(self) -> bool:
        """Whether a segment is open."""
        return self._writer is not None

    def seed(self, frames: Sequence[Frame]) -> None:
        """Remember the configs and metadata among ``frames`` (what a stream sent before the
        recording started) without recording anything."""
        for frame in frames:
            if frame.config:
                self._config(frame)

    def _config(self, frame: Frame) -> None:
        if frame.kind is FrameKind.DATA:
            self.metadata = frame
            return
        slot = (frame.kind, frame.track)
        old = self.configs.get(slot)
        if old is None or old.payload != frame.payload or old.codec != frame.codec:
            self.configs[slot] = frame
            if self._writer is not None:
                self._renew = True

    def _leading(self) -> tuple[FrameKind, int] | None:
        video = sorted(t for k, t in self.configs if k is FrameKind.VIDEO)
        if video:
            return (FrameKind.VIDEO, video[0])
        audio = sorted(t for k, t in self.configs if k is FrameKind.AUDIO)
        return (FrameKind.AUDIO, audio[0]) if audio else None

    def push(self, frames: Sequence[Frame], wallclock: float) -> list[Operation]:
        """Take ``frames`` (received at ``wallclock``, epoch seconds); the operations to perform."""
        out: list[Operation] = []
        leading = self._leading()
        for frame in frames:
            if frame.config:
                self._config(frame)
                leading = self._leading()
                continue
            if frame.kind is FrameKind.DATA or leading is None:
                continue
            is_leading = (frame.kind, frame.track) == leading
            starts = is_leading and (frame.keyframe or frame.kind is FrameKind.AUDIO)
            writer = self._writer
            if writer is not None and starts:
                if frame.dts < self._segment_first:  # the timestamps went back: a new anchor
                    out.extend(self._close(None))
                    writer = None
                    self._anchor = (max(wallclock, self._end_wall()), frame.dts)
                elif self._renew or frame.dts - self._segment_first >= self.segment_ms:
                    out.extend(self._close(frame.dts))
                    writer = None
            if writer is None:
                if not starts:
                    self.dropped += 1
                    continue
                writer = self._open(frame, wallclock, out)
                if writer is None:
                    self.dropped += 1
                    continue
            elif is_leading and (frame.keyframe or frame.dts - self._fragment_first >= self.fragment_ms):
                data = writer.take(frame.dts)
                if data:
                    out.append(Wrote(data, writer.written))
                self._fragment_first = frame.dts
            try:
                taken = writer.push(frame)
            except ArclyError:
                taken = False
            if taken:
                writer.note(frame, is_leading)
            elif (frame.kind, frame.track) in self._tracks:
                self.dropped += 1
        return out

    def _open(self, frame: Frame, wallclock: float, out: list[Operation]) -> _Writer | None:
        writer = self._make_writer(frame)
        if writer is None:
            return None
        if self._anchor is None:
            self._anchor = (max(wallclock, self.not_before), frame.dts)
        start = self._anchor[0] + (frame.dts - self._anchor[1]) / 1000
        name = segment_name(start, self.extension)
        if name <= self._last_name:  # never the same name twice in a run (a timestamp step back)
            start = max(start, wallclock)
            name = segment_name(start, self.extension)
            if name <= self._last_name:
                return None
        self._last_name = name
        self._writer = writer
        self._segment_first = self._fragment_first = frame.dts
        self._segment_start = start
        self._renew = False
        self.segments += 1
        out.append(Opened(name, start, writer.codecs))
        return writer

    def _make_writer(self, first: Frame) -> _Writer | None:
        configs = sorted(self.configs.items(), key=lambda item: (item[0][0] is not FrameKind.VIDEO, item[0][1]))
        writer: _Writer | None
        if self.format == "fmp4":
            tracks: list[Fmp4Track] = []
            used: list[Frame] = []
            for (kind, index), config in configs:
                if config.codec not in SUPPORTED_CODECS or len(tracks) >= 16:
                    continue
                keyframe = first if (first.kind, first.track) == (kind, index) else None
                try:
                    if needs_keyframe(config) and keyframe is None:
                        continue
                    tracks.append(track_from_config(config, keyframe, track_id=len(tracks) + 1))
                except ArclyError:
                    self.bad_configs += 1
                    continue
                used.append(config)
            if not tracks or (tracks[0].kind, tracks[0].track) != (first.kind, first.track):
                return None  # the leading track's config did not parse
            writer = _Fmp4(tracks)
        elif self.format == "ts":
            video = self.configs.get((FrameKind.VIDEO, 0))
            audio = self.configs.get((FrameKind.AUDIO, 0))
            video = video if video is not None and video.codec in SUPPORTED_VIDEO_CODECS else None
            audio = audio if audio is not None and audio.codec in SUPPORTED_AUDIO_CODECS else None
            if (video is None and audio is None) or (first.track != 0):
                return None
            if (first.kind is FrameKind.VIDEO and video is None) or (first.kind is FrameKind.AUDIO and audio is None):
                return None
            try:
                writer = _Ts(video, audio)
            except ArclyError:
                self.bad_configs += 1
                return None
            used = [c for c in (video, audio) if c is not None]
        else:
            used = [c for _, c in configs if c.codec in _FLV_CODECS]
            if not used:
                return None
            head = ([self.metadata] if self.metadata is not None else []) + used
            writer = _Flv(
                head,
                any(c.kind is FrameKind.AUDIO for c in used),
                any(c.kind is FrameKind.VIDEO for c in used),
            )
        writer.codecs = tuple(codec_string(c) for c in used)
        self._tracks = frozenset((c.kind, c.track) for c in used)
        return writer

    def _end_wall(self) -> float:
        """Where the last segment ended on the recording timeline (epoch seconds)."""
        return self.ended_at

    def _close(self, end: int | None) -> list[Operation]:
        writer, self._writer = self._writer, None
        if writer is None:
            return []
        out: list[Operation] = []
        data = writer.finish(end)
        self.ended_at = max(self.ended_at, self._segment_start + writer.written)
        if data:
            out.append(Wrote(data, writer.written))
        out.append(Closed(writer.written))
        return out

    def finish(self) -> list[Operation]:
        """End the run: close the open segment (its last samples get their previous duration)."""
        return self._close(None)
