"""The recording catalog: index lines (strict parsing, last line wins, garbage and half lines
survived), segment names, queries by time, spans across publish sessions, streams, the scan
that rebuilds a lost index from real fragmented MP4 segments made by the project's muxer, and
the repair of a segment cut in the middle of a fragment."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.core.keys import StreamKey
from arcly_trio.media.codec_strings import decoder_parameters_of
from arcly_trio.media.codecs.opus import opus_head
from arcly_trio.media.fmp4 import FragmentWriter, init_segment, track_from_config
from arcly_trio.services.recordings import Catalog, SegmentRecord
from arcly_trio.services.recordings.catalog import (
    INDEX_NAME,
    append_index,
    deleted_line,
    index_line,
    parse_index_line,
    parse_segment_name,
    read_index,
    segment_name,
    spans_of,
)
from arcly_trio.services.recordings.mp4scan import scan_bytes, scan_path
from arcly_trio.storage import InvalidStorageKey
from arcly_trio.testing.frames import real_stream

KEY = StreamKey("live", "cam")
T0 = 1796607252.123456  # 2026-12-07T01:34:12.123456Z


def record(
    file_start: float, duration: float = 10.0, session: str = "s1", final: bool = True, **kw: object
) -> SegmentRecord:
    fields: dict = dict(
        file=segment_name(file_start), start=file_start, duration=duration, bytes=1000,
        codecs=("avc1.64001f", "mp4a.40.2"), session=session, final=final,
    )  # fmt: skip
    fields.update(kw)
    return SegmentRecord(**fields)


def mp4_segment(frames: Iterator[Frame], seconds: float) -> tuple[bytes, list[int], float, tuple[str, ...]]:
    """A fragmented MP4 of ``seconds`` of ``frames`` made with the project's muxer, one fragment
    per second: (bytes, the offset where each fragment ends, the video duration, the codecs)."""
    configs: list[Frame] = []
    media: list[Frame] = []
    for frame in frames:
        if frame.config:
            configs.append(frame)
        else:
            media.append(frame)
            if frame.dts >= seconds * 1000:
                break
    tracks = [track_from_config(c) for c in configs if c.kind in (FrameKind.VIDEO, FrameKind.AUDIO)]
    writer = FragmentWriter(tracks)
    data = bytearray(init_segment(tracks))
    ends: list[int] = []
    next_cut = 1000
    for frame in media[:-1]:
        writer.push(frame)
        if frame.dts >= next_cut:
            fragment = writer.fragment(frame.dts)
            if fragment is not None:
                data += fragment.data
                ends.append(len(data))
            next_cut += 1000
    last = writer.flush(media[-1].dts)
    assert last is not None
    data += last.data
    ends.append(len(data))
    codecs = tuple(decoder_parameters_of(t.codec_config).codec for t in tracks if t.codec_config is not None)
    return bytes(data), ends, media[-1].dts / 1000 - 0, codecs


@pytest.fixture(scope="module")
def segment() -> tuple[bytes, list[int], float, tuple[str, ...]]:
    return mp4_segment(real_stream(), 4.0)


# --- names and lines --------------------------------------------------------------------------


@given(st.floats(min_value=0, max_value=4102444800))
def test_segment_names_round_trip_to_the_microsecond(start: float) -> None:
    name = segment_name(start)
    assert abs(parse_segment_name(name) - start) <= 1e-6 + abs(start) * 1e-15
    assert name.endswith("Z.mp4") and len(name) == 27


def test_segment_name_of_the_contract_example() -> None:
    assert segment_name(T0) == "20261207T013412.123456Z.mp4"
    assert parse_segment_name("20261207T013412.123456Z.ts") == pytest.approx(T0)
    for bad in (
        "index.jsonl",
        "../20261207T013412.123456Z.mp4",
        "20261307T013412.123456Z.mp4",
        "20261207T013412Z.mp4",
        "20261207T013412.123456Z.mp4.tmp",
        "x" * 5000,
        "\u0662\u0660\u0662\u06661207T013412.123456Z.mp4",
    ):  # fmt: skip  (Arabic-Indic digits: one name per start)
        assert parse_segment_name(bad) is None


def test_an_index_line_round_trips_and_matches_the_contract() -> None:
    rec = record(T0, 12.48, session="abc", final=False)
    line = index_line(rec)
    assert line.endswith("\n") and "\n" not in line[:-1]
    assert json.loads(line) == {
        "file": "20261207T013412.123456Z.mp4", "start": T0, "duration": 12.48, "bytes": 1000,
        "codecs": ["avc1.64001f", "mp4a.40.2"], "session": "abc", "final": False,
    }  # fmt: skip
    assert parse_index_line(line) == rec
    assert parse_index_line(deleted_line(rec.file)) == rec.file


@pytest.mark.parametrize(
    "change",
    [
        {"file": "../../etc/passwd"},
        {"file": "a/20261207T013412.123456Z.mp4"},
        {"start": -1},
        {"start": float("nan")},
        {"start": "1"},
        {"duration": 1e12},
        {"bytes": -1},
        {"bytes": True},
        {"bytes": 1.5},
        {"codecs": "avc1"},
        {"codecs": ["avc1 ; rm"]},
        {"codecs": ["a"] * 17},
        {"session": "\x1b[31m"},
        {"session": 3},
        {"final": 1},
    ],
)
def test_index_lines_with_a_wrong_field_are_refused(change: dict) -> None:
    value = json.loads(index_line(record(T0)))
    value.update(change)
    assert parse_index_line(json.dumps(value)) is None


@given(st.one_of(st.text(max_size=300), st.binary(max_size=300)))
def test_parse_index_line_never_raises(line: str | bytes) -> None:
    assert isinstance(parse_index_line(line), (SegmentRecord, str, type(None)))


@settings(max_examples=60)
@given(
    cut=st.integers(min_value=0, max_value=2000),
    garbage=st.lists(st.binary(max_size=80).filter(lambda b: b"\n" not in b), max_size=5),
)
def test_the_index_reader_survives_garbage_and_a_cut_line(cut: int, garbage: list[bytes]) -> None:
    """Lines are kept up to the last complete one, garbage lines are skipped, and the last line
    of a file wins."""
    lines = [index_line(record(T0 + 10 * i, final=False)).encode() for i in range(6)]
    lines += [index_line(record(T0 + 10 * i, duration=9.5)).encode() for i in range(6)]
    data = b"".join(g + b"\n" for g in garbage) + b"".join(lines)
    cut = min(cut, len(data))
    records, consumed, _skipped = read_index(data[:cut])
    assert consumed <= cut and (consumed == 0 or data[consumed - 1 : consumed] == b"\n")
    complete = data[:consumed].split(b"\n")
    wanted: dict[str, SegmentRecord] = {}
    for raw in complete:
        parsed = parse_index_line(raw) if raw in lines or raw + b"\n" in lines else None
        if isinstance(parsed, SegmentRecord):
            wanted[parsed.file] = parsed
    assert {f: r for f, r in records.items() if r is not None} == wanted


def test_spans_split_on_a_session_change_and_on_a_gap() -> None:
    segments = [
        record(T0, 10, "a"),
        record(T0 + 10, 10, "a"),
        record(T0 + 20, 5, "b", codecs=("hvc1.1.6.L93.90", "mp4a.40.2")),
        record(T0 + 40, 5, "b"),
    ]
    spans = spans_of(segments)
    assert [(s.start, s.duration, s.session, s.bytes) for s in spans] == [
        (T0, 20, "a", 2000),
        (T0 + 20, 5, "b", 1000),
        (T0 + 40, 5, "b", 1000),
    ]
    assert spans[1].codecs == ("hvc1.1.6.L93.90", "mp4a.40.2")


# --- the catalog over a directory -------------------------------------------------------------


def write_stream(root: Path, records: list[SegmentRecord], key: StreamKey = KEY, data: bytes = b"x") -> Path:
    directory = root / key.app / key.name
    directory.mkdir(parents=True, exist_ok=True)
    for rec in records:
        (directory / rec.file).write_bytes(data)
    append_index(directory, [index_line(r) for r in records])
    return directory


async def test_segments_answers_by_time_range(tmp_path: Path) -> None:
    recs = [record(T0 + 10 * i, 10, final=i < 9) for i in range(10)]
    write_stream(tmp_path, recs)
    catalog = Catalog(tmp_path)
    assert await catalog.segments(KEY) == recs
    got = await catalog.segments(KEY, T0 + 25, T0 + 45)
    assert [r.start for r in got] == [T0 + 20, T0 + 30, T0 + 40]
    assert await catalog.segments(KEY, T0 + 30, T0 + 30.5) == [recs[3]]
    assert await catalog.segments(KEY, T0 + 100) == []
    assert await catalog.segments(KEY, None, T0) == []
    assert await catalog.segments(StreamKey("live", "nothing")) == []
    assert [(s.start, s.duration) for s in await catalog.spans(KEY, T0 + 15)] == [(T0 + 10, 90)]


async def test_appended_lines_deleted_segments_and_removed_files_are_seen(tmp_path: Path) -> None:
    recs = [record(T0 + 10 * i, 10, final=False) for i in range(3)]
    directory = write_stream(tmp_path, recs)
    catalog = Catalog(tmp_path)
    assert len(await catalog.segments(KEY)) == 3
    # A refreshed line (the last line wins), a half-written line, then a deleted one.
    append_index(directory, [index_line(record(T0 + 20, 10.0, final=True))])
    with open(directory / INDEX_NAME, "a") as handle:
        handle.write('{"file": "2026')
    got = await catalog.segments(KEY)
    assert got[-1].final is True and len(got) == 3
    append_index(directory, [deleted_line(recs[0].file)])  # ends the half line first
    assert [r.start for r in await catalog.segments(KEY)] == [T0 + 10, T0 + 20]
    assert catalog.skipped_lines == 1
    (directory / recs[1].file).unlink()
    assert [r.start for r in await catalog.segments(KEY)] == [T0 + 20]
    # A rewritten (compacted) index is read again from its start.
    tmp = directory / "new.jsonl"
    tmp.write_text(index_line(record(T0 + 20, 3.0)))
    os.replace(tmp, directory / INDEX_NAME)
    assert [r.duration for r in await catalog.segments(KEY)] == [3.0]


async def test_streams_lists_recorded_directories_only(tmp_path: Path) -> None:
    write_stream(tmp_path, [record(T0)], StreamKey("live", "b"))
    write_stream(tmp_path, [record(T0)], StreamKey("live", "a"))
    write_stream(tmp_path, [record(T0)], StreamKey("other", "c"))
    (tmp_path / "live" / "empty").mkdir()
    (tmp_path / "live" / ".hidden").mkdir()
    (tmp_path / "live" / "stray.txt").write_text("x")
    (tmp_path / "bad name").mkdir()
    catalog = Catalog(tmp_path)
    assert await catalog.streams() == [StreamKey("live", "a"), StreamKey("live", "b"), StreamKey("other", "c")]
    assert await catalog.streams("other") == [StreamKey("other", "c")]
    assert await catalog.streams("missing") == []
    assert await Catalog(tmp_path / "nowhere").streams() == []


def test_path_accepts_segment_names_only(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path)
    name = segment_name(T0)
    assert catalog.path(KEY, name) == tmp_path.absolute() / "live" / "cam" / name
    for bad in ("index.jsonl", "../x.mp4", "/etc/passwd", "a/" + name):
        with pytest.raises(InvalidStorageKey):
            catalog.path(KEY, bad)
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "live").mkdir()
    (tmp_path / "live" / "cam").symlink_to(outside)
    with pytest.raises(InvalidStorageKey):
        catalog.path(KEY, name)


# --- real segments: scan, rebuild, repair ------------------------------------------------------


def test_the_scan_reads_codecs_and_duration_of_a_real_segment(
    tmp_path: Path, segment: tuple[bytes, list[int], float, tuple[str, ...]]
) -> None:
    data, ends, _, codecs = segment
    path = tmp_path / "s.mp4"
    path.write_bytes(data)
    found = scan_path(path)
    assert found.codecs == codecs == ("avc1.4d401e", "mp4a.40.2")
    assert len(found.fragments) == len(ends) and found.complete == len(data) and found.problem is None
    assert 3.9 < found.duration < 4.2
    # Cut in the middle of the last fragment: only the complete ones count.
    cut = (ends[-2] + ends[-1]) // 2
    path.write_bytes(data[:cut])
    partial = scan_path(path)
    assert partial.complete == ends[-2] and len(partial.fragments) == len(ends) - 1
    assert partial.duration < found.duration and partial.problem is None
    assert scan_path(path, ends[-2]).complete == ends[-2]  # the size given, not the file's
    # Not an MP4 recording: it must start with ftyp.
    path.write_bytes(b"\x00\x00\x00\x08free" + data)
    refused = scan_path(path)
    assert refused.tracks == () and refused.complete == 0 and "ftyp" in (refused.problem or "")


def test_the_scan_names_each_tracks_codec_or_its_sample_entry() -> None:
    video = next(f for f in real_stream() if f.config and f.is_video)
    opus = Frame(FrameKind.AUDIO, "opus", 0, 0, opus_head(2), config=True)
    init = init_segment([track_from_config(video, track_id=1), track_from_config(opus, track_id=2)])
    assert scan_bytes(init).codecs == ("avc1.4d401e", "opus")
    # An avcC that does not parse (version 0): the sample entry's code, not an error.
    at = init.index(b"avcC") + 4
    damaged = scan_bytes(init[:at] + b"\x00" + init[at + 1 :])
    assert damaged.codecs == ("avc1", "opus") and damaged.problem is None


@settings(max_examples=40, deadline=None)
@given(cut=st.integers(min_value=0, max_value=10**9), flips=st.lists(st.integers(min_value=0), max_size=4))
def test_the_scan_of_damaged_files_never_raises(
    tmp_path_factory: pytest.TempPathFactory, cut: int, flips: list[int]
) -> None:
    data = bytearray(DAMAGE_BASE[: cut % (len(DAMAGE_BASE) + 1)])
    for flip in flips:
        if data:
            data[flip % len(data)] ^= 0xFF
    path = tmp_path_factory.mktemp("scan") / "s.mp4"
    path.write_bytes(data)
    found = scan_path(path)
    assert 0 <= found.complete <= len(data) and found.duration >= 0
    assert all(f.offset >= found.init_size > 0 and f.offset + f.size <= len(data) for f in found.fragments)
    assert found.tracks or (found.complete == 0 and not found.fragments)


DAMAGE_BASE = mp4_segment(real_stream(), 2.0)[0]


async def test_a_lost_index_is_rebuilt_from_the_files(
    tmp_path: Path, segment: tuple[bytes, list[int], float, tuple[str, ...]]
) -> None:
    data, _, _, codecs = segment
    directory = tmp_path / "live" / "cam"
    directory.mkdir(parents=True)
    names = [segment_name(T0), segment_name(T0 + 4.2)]
    for name in names:
        (directory / name).write_bytes(data)
    (directory / segment_name(T0 + 9)).write_bytes(b"not an mp4 at all")
    catalog = Catalog(tmp_path)
    listed = await catalog.segments(KEY)
    assert [r.file for r in listed] == names
    assert all(r.codecs == codecs and not r.final and 3.9 < r.duration < 4.2 for r in listed)
    fixed = await catalog.repair(KEY)
    assert [r.file for r in fixed] == names and all(r.final for r in fixed)
    lines = (directory / INDEX_NAME).read_text().splitlines()
    assert [parse_index_line(line) for line in lines] == fixed
    assert await catalog.segments(KEY) == fixed
    assert await catalog.repair(KEY) == []  # nothing left to repair


async def test_repair_cuts_a_segment_back_to_its_last_complete_fragment(
    tmp_path: Path, segment: tuple[bytes, list[int], float, tuple[str, ...]]
) -> None:
    data, ends, _, codecs = segment
    cut = (ends[-2] + ends[-1]) // 2
    open_rec = record(T0, 2.0, session="s9", final=False, bytes=ends[0], codecs=codecs)
    being_written = record(T0 + 100, 1.0, session="s10", final=False)
    directory = write_stream(tmp_path, [open_rec, being_written])
    (directory / open_rec.file).write_bytes(data[:cut])
    catalog = Catalog(tmp_path)
    [fixed] = await catalog.repair(KEY, keep=[being_written.file])
    assert (directory / open_rec.file).stat().st_size == ends[-2]
    assert fixed.final and fixed.bytes == ends[-2] and fixed.session == "s9" and fixed.start == T0
    assert 2.5 < fixed.duration < 4.0
    rescanned = scan_path(directory / open_rec.file)
    assert rescanned.complete == rescanned.size == ends[-2] and rescanned.problem is None
    assert [r.final for r in await catalog.segments(KEY)] == [True, False]


async def test_a_day_of_segments_answers_fast(tmp_path: Path) -> None:
    recs = [record(T0 + 60 * i, 60, session=f"s{i // 100}") for i in range(1440)]
    write_stream(tmp_path, recs)
    catalog = Catalog(tmp_path)
    with trio.fail_after(5):
        start = trio.current_time()
        spans = await catalog.spans(KEY)
        first = trio.current_time() - start
        start = trio.current_time()
        hour = await catalog.segments(KEY, T0 + 3600, T0 + 7200)
        again = trio.current_time() - start
    assert len(spans) == 15 and len(hour) == 60
    assert first < 2 and again < 0.05, (first, again)  # the first read parses 1440 lines (~20 ms idle)
