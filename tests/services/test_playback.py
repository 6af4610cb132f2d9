"""The playback server's parts without HTTP: the fragment scanner (fuzzed: garbage and truncated
files never crash, never loop), the fragment rebaser (checked with the independent box reader
of ``tests/_boxes.py``), the VOD playlist renderer, and :class:`Playback`'s plans, playlists and
MP4 bodies over recordings made here with the project's fMP4 muxer in the recording layout
(``{app}/{stream}/{UTC start}.mp4`` + ``index.jsonl``, see the recording contract).

Error policy: helpers assert; nothing is caught.
"""

from __future__ import annotations

import pathlib
import struct
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.core.keys import StreamKey
from arcly_trio.services.recordings import mp4scan
from arcly_trio.services.recordings.catalog import SegmentRecord, segment_name
from arcly_trio.services.recordings.mp4rebase import rewrite_fragment, span_init
from arcly_trio.services.recordings.mp4scan import MAX_FRAGMENTS, FragmentInfo, Mp4Index, TrackInfo, scan_bytes
from arcly_trio.services.recordings.playback import Piece, Playback, apply_patches, timeline
from arcly_trio.services.recordings.vod import VodSegment, program_date, render
from tests._boxes import parse_fragment, read_boxes
from tests._playback import KEY, T0, ListCatalog, demo_frames, fmp4_files, record_sessions


@pytest.fixture(scope="module")
def frames() -> list[Frame]:
    return demo_frames()


@pytest.fixture(scope="module")
def one_file(frames: list[Frame]) -> bytes:
    return fmp4_files(frames, segment_ms=60_000)[0][0]


def recorded(tmp_path: pathlib.Path, frames: list[Frame], gap: float = 2.0) -> tuple[Playback, list[SegmentRecord]]:
    """Two sessions of the demo clip (10 s each, ``gap`` s apart) in files of 4 s."""
    records = record_sessions(tmp_path, KEY, [(T0, frames), (T0 + 10 + gap, frames)])
    return Playback(ListCatalog(tmp_path, {KEY: records})), records


# --------------------------------------------------------------------------- scanner


def test_the_scanner_finds_the_init_every_fragment_and_where_keyframes_start(one_file: bytes) -> None:
    index = scan_bytes(one_file)
    assert index.problem is None and index.size == len(one_file)
    top = read_boxes(one_file)
    assert [b.type for b in top[:2]] == ["ftyp", "moov"] and index.init_size == top[1].offset + top[1].size
    assert [(t.track_id, t.timescale, t.video) for t in index.tracks] == [(1, 90000, True), (2, 44100, False)]
    moofs = [b for b in top if b.type == "moof"]
    assert [f.offset for f in index.fragments] == [b.offset for b in moofs]
    # Fragments tile the file after the init, each a moof and its mdat.
    ends = [f.offset + f.size for f in index.fragments]
    assert [f.offset for f in index.fragments[1:]] == ends[:-1] and ends[-1] == len(one_file)
    assert [round(f.start, 3) for f in index.fragments] == [float(i) for i in range(10)]
    # A keyframe every 2 s, a fragment every second: every other fragment starts with one.
    assert [f.sync for f in index.fragments] == [i % 2 == 0 for i in range(10)]
    for fragment in index.fragments:
        parsed = parse_fragment(one_file[fragment.offset : fragment.offset + fragment.size])
        assert parsed.sequence == fragment.sequence
        assert [(t.track_id, t.decode_time, t.duration) for t in parsed.trafs] == [
            (t.track_id, t.decode_time, t.duration) for t in fragment.times
        ]


def test_a_file_cut_in_a_fragment_lists_the_complete_fragments_only(one_file: bytes) -> None:
    full = scan_bytes(one_file).fragments
    cut = full[4].offset + full[4].size // 2  # kill -9 in the middle of the fifth fragment
    index = scan_bytes(one_file[:cut])
    assert index.fragments == full[:4] and index.problem is None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_truncated_or_damaged_files_never_crash_the_scanner(one_file: bytes, data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(one_file)))
    blob = bytearray(one_file[:cut])
    for _ in range(data.draw(st.integers(0, 4))):
        if blob:
            at = data.draw(st.integers(0, len(blob) - 1))
            blob[at] = data.draw(st.integers(0, 255))
    index = scan_bytes(bytes(blob))
    assert len(index.fragments) <= MAX_FRAGMENTS
    for fragment in index.fragments:
        assert 0 <= fragment.offset and fragment.offset + fragment.size <= len(blob)
        try:
            rewrite_fragment(
                bytes(blob[fragment.offset : fragment.offset + fragment.size]),
                1,
                {1: 5},
                {t.track_id: t for t in index.tracks},
            )
        except ValueError:
            pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_garbage_never_crashes_the_scanner(blob: bytes) -> None:
    index = scan_bytes(blob)
    assert index.size == len(blob)


def test_a_box_that_claims_no_size_or_a_huge_one_ends_the_walk() -> None:
    loops = struct.pack(">I4s", 0, b"free")  # size 0: to the end of the file
    assert scan_bytes(loops * 3).fragments == ()
    tiny = struct.pack(">I4s", 4, b"free") + b"\x00" * 16  # smaller than its own header
    assert scan_bytes(tiny).problem is not None
    huge = struct.pack(">I4s", 8, b"ftyp") + struct.pack(">I4sQ", 1, b"mdat", 1 << 62)
    assert scan_bytes(huge).problem is None and scan_bytes(huge).fragments == ()


def test_the_walk_looks_at_a_bounded_number_of_boxes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mp4scan, "MAX_BOXES", 10)
    free = struct.pack(">I4s", 8, b"free")
    assert scan_bytes(struct.pack(">I4s", 8, b"ftyp") + free * 8).problem is None
    assert scan_bytes(struct.pack(">I4s", 8, b"ftyp") + free * 10).problem == "more than 10 boxes"


# --------------------------------------------------------------------------- rebaser


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_a_damaged_fragment_is_rebuilt_or_refused_never_a_crash(one_file: bytes, data: st.DataObject) -> None:
    # The file may change between its scan and its reading: whatever the bytes, ValueError or bytes.
    index = scan_bytes(one_file)
    fragment = index.fragments[data.draw(st.integers(0, len(index.fragments) - 1))]
    blob = bytearray(one_file[fragment.offset : fragment.offset + fragment.size])
    for _ in range(data.draw(st.integers(1, 6))):
        at = data.draw(st.integers(0, min(len(blob), 600) - 1))  # the moof, mostly
        blob[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.none() | st.dictionaries(st.integers(1, 2), st.integers(0, 1 << 40)))
    try:
        out = rewrite_fragment(bytes(blob), 3, {1: -5, 2: 7}, {t.track_id: t for t in index.tracks}, cut=cut)
    except ValueError:
        return
    # bounded by what the file holds (linear in it: a damaged trun or tfhd can make every kept
    # sample carry all four per-sample fields the input did not have, and headers are rewritten)
    assert len(out) <= 2 * len(blob) + 64 * 8


def test_a_trun_that_claims_billions_of_default_samples_is_refused(one_file: bytes) -> None:
    index = scan_bytes(one_file)
    fragment = index.fragments[0]
    blob = bytearray(one_file[fragment.offset : fragment.offset + fragment.size])
    at = blob.index(b"trun")
    blob[at + 4 : at + 8] = (0x000001).to_bytes(4, "big")  # version 0, a data offset, nothing per sample
    blob[at + 8 : at + 12] = (0xFFFFFFFF).to_bytes(4, "big")
    with pytest.raises(ValueError, match="samples"):
        rewrite_fragment(bytes(blob), 1, {}, {t.track_id: t for t in index.tracks})
    damaged = one_file[: fragment.offset] + bytes(blob) + one_file[fragment.offset + fragment.size :]
    scanned = scan_bytes(damaged)
    assert scanned.fragments == () and scanned.problem is not None and "samples" in scanned.problem


def test_a_rewritten_fragment_is_renumbered_moved_and_cut_to_the_sample(one_file: bytes) -> None:
    index = scan_bytes(one_file)
    tracks = {t.track_id: t for t in index.tracks}
    fragment = index.fragments[3]
    original = parse_fragment(one_file[fragment.offset : fragment.offset + fragment.size])
    cut_video = original.trafs[0].decode_time + sum(s.duration for s in original.trafs[0].samples[:10])
    out = rewrite_fragment(
        one_file[fragment.offset : fragment.offset + fragment.size], 7, {1: -90000, 2: -44100}, tracks,
        offset=fragment.offset, cut={1: cut_video, 2: cut_video * 44100 // 90000},
    )  # fmt: skip
    rebuilt = parse_fragment(out)
    assert rebuilt.sequence == 7
    video, audio = rebuilt.trafs
    assert video.decode_time == original.trafs[0].decode_time - 90000
    assert [s.data for s in video.samples] == [s.data for s in original.trafs[0].samples[:10]]
    assert [(s.duration, s.flags) for s in video.samples] == [
        (s.duration, s.flags) for s in original.trafs[0].samples[:10]
    ]
    assert audio.decode_time == original.trafs[1].decode_time - 44100
    kept = [s for s in original.trafs[1].samples]
    assert 0 < len(audio.samples) < len(kept) and [s.data for s in audio.samples] == [
        s.data for s in kept[: len(audio.samples)]
    ]
    # Without a cut or a shift it is the same fragment, byte for byte (the muxer's layout).
    same = rewrite_fragment(one_file[fragment.offset : fragment.offset + fragment.size], fragment.sequence, {}, tracks)
    assert same == one_file[fragment.offset : fragment.offset + fragment.size]
    # A cut before every sample leaves nothing.
    assert (
        rewrite_fragment(one_file[fragment.offset : fragment.offset + fragment.size], 1, {}, tracks, cut={1: 0, 2: 0})
        == b""
    )


def test_the_span_init_says_the_duration_in_mvhd_and_mehd(one_file: bytes) -> None:
    index = scan_bytes(one_file)
    init = span_init(one_file[: index.init_size], 12.5)
    moov = read_boxes(init)[1]
    mvhd = moov.one("mvhd").body
    assert struct.unpack_from(">I", mvhd, 12)[0] == 1000 and struct.unpack_from(">I", mvhd, 16)[0] == 12500
    mehd = moov.one("mvex").children[0]
    assert mehd.type == "mehd" and struct.unpack(">IQ", mehd.body) == (1 << 24, 12500)
    assert scan_bytes(init).tracks == index.tracks
    with pytest.raises(ValueError):
        span_init(b"\x00\x00\x00\x08free", 1.0)


# --------------------------------------------------------------------------- playlist


def test_the_vod_playlist_lists_maps_dates_ranges_and_discontinuities() -> None:
    segments = [
        VodSegment("a.mp4", 100, 50, 100, 2.0, T0),
        VodSegment("a.mp4", 150, 60, 100, 2.5, T0 + 2),
        VodSegment("b.mp4", 90, 40, 90, 1.2, T0 + 10.25, discontinuity=True),
    ]
    assert render(segments, "token=x") == "\n".join([
        "#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-PLAYLIST-TYPE:VOD", "#EXT-X-TARGETDURATION:3",
        "#EXT-X-MEDIA-SEQUENCE:0", "#EXT-X-INDEPENDENT-SEGMENTS",
        '#EXT-X-MAP:URI="a.mp4?token=x",BYTERANGE="100@0"',
        "#EXT-X-PROGRAM-DATE-TIME:2026-12-07T01:34:12.000Z", "#EXTINF:2.000,", "#EXT-X-BYTERANGE:50@100", "a.mp4?token=x",
        "#EXT-X-PROGRAM-DATE-TIME:2026-12-07T01:34:14.000Z", "#EXTINF:2.500,", "#EXT-X-BYTERANGE:60@150", "a.mp4?token=x",
        "#EXT-X-DISCONTINUITY", '#EXT-X-MAP:URI="b.mp4?token=x",BYTERANGE="90@0"',
        "#EXT-X-PROGRAM-DATE-TIME:2026-12-07T01:34:22.250Z", "#EXTINF:1.200,", "#EXT-X-BYTERANGE:40@90", "b.mp4?token=x",
        "#EXT-X-ENDLIST", "",
    ])  # fmt: skip
    assert "INDEPENDENT" not in render([VodSegment("a.mp4", 0, 1, 1, 1.0, T0, independent=False)])
    assert program_date(T0 + 0.0004) == "2026-12-07T01:34:12.000Z"
    with pytest.raises(ValueError):
        render([])


def test_patches_are_written_over_the_bytes_they_fall_in() -> None:
    data = bytes(range(20))
    patches = [(2, b"AB"), (9, b"CDEF"), (18, b"GHIJ")]
    whole = apply_patches(data, 0, patches)
    assert whole == bytes(range(2)) + b"AB" + bytes(range(4, 9)) + b"CDEF" + bytes(range(13, 18)) + b"GH"
    # In pieces (a patch across two reads), the same bytes.
    assert b"".join(apply_patches(data[i : i + 3], i, patches) for i in range(0, 20, 3)) == whole
    assert apply_patches(data, 0, []) is data


# --------------------------------------------------------------------------- plans


async def test_a_plan_starts_at_the_keyframe_at_or_before_start(tmp_path: pathlib.Path, frames: list[Frame]) -> None:
    playback, records = recorded(tmp_path, frames)
    assert [r.file for r in records][:1] == [segment_name(T0)] and len(records) == 6
    plan = await playback.plan(KEY, T0 + 5.5, 2.0)  # keyframes every 2 s: the one at 4 s
    assert plan is not None and round(plan.start - T0, 3) == 4.0 and round(plan.end - T0, 3) == 7.5
    assert [p.file for p in plan.pieces] == [records[1].file] and plan.pieces[0].cut is not None
    assert abs(plan.duration - 3.5) < 0.05  # audio may start a little before its keyframe
    # HLS keeps whole fragments: those whose middle is before the end.
    whole = await playback.plan(KEY, T0 + 5.5, 2.0, whole_fragments=True)
    assert whole is not None and round(whole.end - T0, 3) == 7.0 and whole.pieces[0].cut is None
    # Before the first keyframe recorded: from the first one.
    early = await playback.plan(KEY, T0 - 30, 31.0)
    assert early is not None and early.start == T0
    # Between two sessions (10 s to 12 s): from the next session's first keyframe, not the last
    # one before the gap.
    between = await playback.plan(KEY, T0 + 11, 3.0)
    assert between is not None and between.start == T0 + 12 and between.pieces[0].session == "s1"
    # Nothing recorded there.
    assert await playback.plan(KEY, T0 + 100, 5.0) is None
    assert await playback.plan(StreamKey("live", "other"), T0, 5.0) is None


async def test_a_plan_across_sessions_and_its_playlist(tmp_path: pathlib.Path, frames: list[Frame]) -> None:
    playback, records = recorded(tmp_path, frames)
    plan = await playback.plan(KEY, T0 + 6, 10.0, whole_fragments=True)  # 6..10 then 12..16
    assert plan is not None and [p.session for p in plan.pieces] == ["s0", "s0", "s1"]
    text = playback.playlist(plan, "playback/", "token=t")
    lines = text.splitlines()
    assert lines.count("#EXT-X-DISCONTINUITY") == 1
    maps = [line for line in lines if line.startswith("#EXT-X-MAP")]
    assert [m.split('"')[1] for m in maps] == [f"playback/{p.file}?token=t" for p in plan.pieces]
    # A segment from a keyframe to the first one 4 s later, or to the end of its file.
    dates = [line.partition(":")[2] for line in lines if line.startswith("#EXT-X-PROGRAM-DATE-TIME")]
    assert dates == [program_date(T0 + t) for t in (6, 8, 12)]
    extinf = [float(line[8:-1]) for line in lines if line.startswith("#EXTINF:")]
    assert [round(d) for d in extinf] == [2, 2, 4], extinf
    assert "#EXT-X-INDEPENDENT-SEGMENTS" in lines and lines[-1] == "#EXT-X-ENDLIST"
    # Byte ranges are the files' own fragments.
    ranges = [line.partition(":")[2] for line in lines if line.startswith("#EXT-X-BYTERANGE")]
    first = scan_bytes((tmp_path / "live/cam" / plan.pieces[0].file).read_bytes())
    assert ranges[0] == f"{first.fragments[2].size + first.fragments[3].size}@{first.fragments[2].offset}"  # 6 s, 7 s


async def test_long_files_are_listed_in_segments_of_four_to_six_seconds(
    tmp_path: pathlib.Path, frames: list[Frame]
) -> None:
    records = record_sessions(tmp_path, KEY, [(T0, frames)], segment_ms=60_000)  # one 10 s file
    playback = Playback(ListCatalog(tmp_path, {KEY: records}))
    plan = await playback.plan(KEY, T0, 10.0, whole_fragments=True)
    assert plan is not None
    lines = playback.playlist(plan, "").splitlines()
    extinf = [float(line[8:-1]) for line in lines if line.startswith("#EXTINF:")]
    assert [round(d) for d in extinf] == [4, 4, 2] and "#EXT-X-TARGETDURATION:4" in lines, extinf


async def test_the_scan_of_a_file_is_cached_until_it_changes(tmp_path: pathlib.Path, frames: list[Frame]) -> None:
    playback, records = recorded(tmp_path, frames)
    await playback.plan(KEY, T0, 30.0)
    assert playback.scans == len(records)
    await playback.plan(KEY, T0, 30.0, whole_fragments=True)
    assert playback.scans == len(records)
    with open(tmp_path / "live/cam" / records[-1].file, "ab") as grown:
        grown.write(b"\x00\x00\x00\x08free")
    await playback.plan(KEY, T0, 30.0)
    assert playback.scans == len(records) + 1


def test_the_timeline_of_fragments_without_samples_is_empty() -> None:
    index = Mp4Index(100, 10, (TrackInfo(1, 1000, True, b""),), (FragmentInfo(10, 50, 1, (), 0.0, 0.0, True),))
    piece = Piece("a.mp4", pathlib.Path("a.mp4"), "s", index, index.fragments, T0)
    assert timeline([piece, piece], from_zero=True) == ([0.0, 0.0], 0.0)


async def test_concurrent_plans_scan_each_file_once(tmp_path: pathlib.Path, frames: list[Frame]) -> None:
    playback, records = recorded(tmp_path, frames)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(playback.plan, KEY, T0, 30.0)
    assert playback.scans == len(records)


async def test_a_file_gone_from_disk_is_left_out(tmp_path: pathlib.Path, frames: list[Frame]) -> None:
    playback, records = recorded(tmp_path, frames)
    (tmp_path / "live/cam" / records[0].file).unlink()
    plan = await playback.plan(KEY, T0, 8.0)
    assert plan is not None and plan.pieces[0].file == records[1].file


# --------------------------------------------------------------------------- MP4


async def mp4_of(playback: Playback, start: float, duration: float) -> tuple[bytes, Any]:
    plan = await playback.plan(KEY, start, duration)
    assert plan is not None
    layout = await playback.layout(plan)
    assert layout is not None
    with trio.fail_after(10):
        body = b"".join([piece async for piece in playback.mp4(plan, layout)])
    assert len(body) == layout.size  # the size announced before a byte is read
    return body, plan


async def test_any_byte_range_of_the_mp4_is_those_bytes_of_the_whole(
    tmp_path: pathlib.Path, frames: list[Frame]
) -> None:
    playback, _ = recorded(tmp_path, frames, gap=5.0)
    body, plan = await mp4_of(playback, T0 + 3, 13.5)  # cut inside a fragment
    layout = await playback.layout(plan)
    assert layout is not None
    edges = sorted({0, 1, len(layout.init) - 1, len(layout.init), *(o for o, _, _, _ in layout.parts),
                    *(o - 1 for o, _, _, _ in layout.parts), layout.size - 1})  # fmt: skip
    for first in edges[::3]:
        for last in (first, first + 5000, layout.size - 1):
            got = b"".join([piece async for piece in playback.mp4(plan, layout, first, last)])
            assert got == body[first : last + 1], (first, last)


async def test_the_mp4_of_a_span_across_sessions_is_one_timeline(tmp_path: pathlib.Path, frames: list[Frame]) -> None:
    playback, _ = recorded(tmp_path, frames, gap=5.0)
    body, plan = await mp4_of(playback, T0 + 6, 13.0)  # 6..10, a gap of 5 s, then 15..19 (as 4..8 of session 2)
    index = scan_bytes(body)
    assert index.problem is None and index.tracks == plan.pieces[0].index.tracks
    assert [f.sequence for f in index.fragments] == list(range(1, len(index.fragments) + 1))
    # One timeline from 0, the gap between sessions closed, every fragment after the last.
    starts = [f.start for f in index.fragments]
    assert starts[0] < 0.05 and all(abs(b.start - a.end) < 0.05 for a, b in zip(index.fragments, index.fragments[1:]))
    del starts
    # Cut at the requested end, to the frame: 4 s of the first session, 4 s of the second.
    # (The first session's audio ends a frame after its video: the second starts after both.)
    assert abs(index.fragments[-1].end - 8.0) < 0.1 and abs(plan.duration - 8.0) < 0.1
    moov = read_boxes(body[: index.init_size])[1]
    assert struct.unpack(">IQ", moov.one("mvex").children[0].body)[1] == round(plan.duration * 1000)


async def test_the_mp4_stops_where_the_tracks_change(tmp_path: pathlib.Path, frames: list[Frame]) -> None:
    video_only = [f for f in frames if f.kind is FrameKind.VIDEO]
    records = record_sessions(tmp_path, KEY, [(T0, frames), (T0 + 11, video_only)])
    playback = Playback(ListCatalog(tmp_path, {KEY: records}))
    body, plan = await mp4_of(playback, T0, 20.0)
    assert plan.stopped is not None and "tracks change" in plan.stopped
    assert {p.session for p in plan.pieces} == {"s0"}
    assert abs(scan_bytes(body).fragments[-1].end - 10.0) < 0.1
    # The HLS playlist goes on, with the second session's own init segment.
    whole = await playback.plan(KEY, T0, 20.0, whole_fragments=True)
    assert whole is not None and {p.session for p in whole.pieces} == {"s0", "s1"}
