"""Recordings for the playback tests, made here with the project's fMP4 muxer in the recording
layout (``{app}/{stream}/{UTC start}.mp4`` and ``index.jsonl``, see
:mod:`arcly_trio.services.recordings.catalog`): a publish session's frames cut into segment files
of fragments, several sessions in a row; and a stand-in for the recording service that plays a
directory back (:class:`Recordings`).

Error policy: helpers assert; nothing is caught.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from typing import Any

import attrs

import arcly_trio.server
from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.core.keys import StreamKey
from arcly_trio.kernel.spec import AppSpec
from arcly_trio.media import flv
from arcly_trio.media.fmp4 import FragmentWriter, init_segment, track_from_config
from arcly_trio.services.recordings.catalog import Catalog, SegmentRecord, index_line, segment_name
from arcly_trio.services.recordings.playback import Playback

DEMO = pathlib.Path(arcly_trio.server.__file__).parent / "assets" / "demo.flv"
T0 = 1796607252.0  # 2026-12-07T01:34:12Z
KEY = StreamKey("live", "cam")


def demo_frames() -> list[Frame]:
    """The demo clip's audio and video frames (10 s, H.264 + AAC, a keyframe every 2 s)."""
    return [f for f in flv.read_frames(DEMO.read_bytes()) if f.kind is not FrameKind.DATA]


def fmp4_files(
    frames: Sequence[Frame], *, segment_ms: int = 4000, fragment_ms: int = 1000
) -> list[tuple[bytes, int, int]]:
    """A publish session's frames as recorded fMP4 files: a new file at the first keyframe
    ``segment_ms`` after the file's start, fragments of at most ``fragment_ms`` (and a new
    fragment at each keyframe), one writer for the session (its files' decode times follow
    one another). Each file: ``(bytes, first dts ms, end dts ms)``."""
    configs = [f for f in frames if f.config]
    tracks = [track_from_config(c) for c in configs]
    init = init_segment(tracks)
    writer = FragmentWriter(tracks)
    files: list[tuple[list[bytes], int, int]] = []
    fragment_start: int | None = None
    for frame in frames:
        if frame.config:
            continue
        if frame.kind is FrameKind.VIDEO:
            if not files:
                files.append(([init], frame.dts, frame.dts))
                fragment_start = frame.dts
            assert fragment_start is not None
            new_file = frame.keyframe and frame.dts - files[-1][1] >= segment_ms
            if new_file or frame.keyframe and frame.dts > fragment_start or frame.dts - fragment_start >= fragment_ms:
                writer.push(frame)
                fragment = writer.fragment(until=frame.dts)
                if fragment is not None:
                    files[-1][0].append(fragment.data)
                    files[-1] = (files[-1][0], files[-1][1], frame.dts)
                if new_file:
                    files.append(([init], frame.dts, frame.dts))
                fragment_start = frame.dts
                continue
        if files:
            writer.push(frame)
    last = max(f.dts for f in frames if not f.config)
    fragment = writer.flush(last + 40)
    if fragment is not None:
        files[-1][0].append(fragment.data)
        files[-1] = (files[-1][0], files[-1][1], last + 40)
    return [(b"".join(parts), first, end) for parts, first, end in files]


def record_sessions(root: pathlib.Path, key: StreamKey, sessions: Sequence[tuple[float, Sequence[Frame]]],
                    **options: Any) -> list[SegmentRecord]:  # fmt: skip
    """SegmentRecord each ``(wall-clock start, frames)`` session into ``root`` in the recording layout
    (files and ``index.jsonl``); the records, in order."""
    folder = root / key.app / key.name
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for number, (start, frames) in enumerate(sessions):
        files = fmp4_files(frames, **options)
        origin = files[0][1]
        for data, first, end in files:
            at = start + (first - origin) / 1000
            record = SegmentRecord(segment_name(at), at, (end - first) / 1000, len(data), ("avc1.42c01e", "mp4a.40.2"),
                            f"s{number}", True)  # fmt: skip
            (folder / record.file).write_bytes(data)
            records.append(record)
    (folder / "index.jsonl").write_text("".join(index_line(r) for r in records))
    return records


def two_sessions(root: pathlib.Path) -> tuple[pathlib.Path, list[SegmentRecord]]:
    """``root`` and the records of the demo clip recorded into it twice as ``KEY``: at
    :data:`T0` and 12 s later (2 s between the publish sessions)."""
    frames = demo_frames()
    return root, record_sessions(root, KEY, [(T0, frames), (T0 + 12, frames)])


class ListCatalog:
    """The contract's catalog API over a list of records (what :class:`Playback` needs of it)."""

    def __init__(self, root: pathlib.Path, records: dict[StreamKey, list[SegmentRecord]]) -> None:
        self.root = root
        self.records = records

    def path(self, key: StreamKey, file: str) -> pathlib.Path:
        if "/" in file or file.startswith("."):
            raise ValueError(f"bad file name {file!r}")
        return self.root / key.app / key.name / file

    async def segments(
        self, key: StreamKey, start: float | None = None, end: float | None = None
    ) -> list[SegmentRecord]:
        return [
            r for r in self.records.get(key, []) if (start is None or r.end > start) and (end is None or r.start < end)
        ]

    async def spans(self, key: StreamKey, start: float | None = None, end: float | None = None) -> list[Any]:
        spans: list[SegmentRecord] = []
        for record in await self.segments(key, start, end):
            if spans and spans[-1].session == record.session:
                spans[-1] = attrs.evolve(spans[-1], duration=record.end - spans[-1].start)
            else:
                spans.append(record)
        return spans


class Recordings:
    """A stream service that records nothing and plays back what a catalog lists."""

    name = "recordings"
    capacity = 1

    def __init__(self, playback: Playback) -> None:
        self.playback = playback

    def applies_to(self, spec: AppSpec) -> bool:
        return False

    async def serve_stream(self, stream: Any, subscription: Any) -> None:  # pragma: no cover - applies to none
        raise AssertionError("not a live service")


def recordings(root: pathlib.Path) -> Recordings:
    """A :class:`Recordings` of the recording directory ``root``, through the recorder's catalog."""
    return Recordings(Playback(Catalog(root)))
