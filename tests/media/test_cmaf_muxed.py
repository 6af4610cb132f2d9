"""The muxed CMAF rendition (``CmafPackager(muxed=True)``) and ``fmp4.merge_fragments``, sans-IO.

A muxed packager must carry exactly what the per-track renditions carry: hypothesis drives the
demo clip (random part and target durations, audio ahead of or behind the video in the
interleaving, timestamp jumps and publisher restarts) through a muxed and a plain packager and
checks, with the independent box reader of ``tests/_boxes.py``, that the muxed parts hold every
sample of each track once, in order, with the same decode times, durations and bytes; that each
muxed part's audio spans its video's time (to one audio frame); that decode times go on from
part to part. The stored init segment + segments read back with the recordings' scanner
(``mp4scan``) as two tracks. ``merge_fragments`` round-trips any pair of fragments of the
writer and raises only ``LocalProtocolError`` on arbitrary bytes.
"""

from __future__ import annotations

import m3u8
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arcly_trio.core.errors import LocalProtocolError
from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.media import llhls
from arcly_trio.media.cmaf import CmafPackager, ResourceExpired, ResourceReady
from arcly_trio.media.fmp4 import FragmentWriter, merge_fragments, track_from_config
from arcly_trio.services.recordings import mp4scan
from tests._boxes import Traf, parse_fragment, parse_init
from tests.media.test_cmaf import interleaved, perturbed_streams, shifted

_AUDIO_FRAME_S = 1024 / 44_100  # the demo clip's AAC frames


class Store:
    """What a storage holds of a packager's events, and every part stored, in creation order."""

    def __init__(self, packager: CmafPackager) -> None:
        self.packager = packager
        self.stored: dict[str, bytes] = {}
        self.expired: set[str] = set()
        self.parts: list[str] = []

    def apply(self, events: list[ResourceReady | ResourceExpired]) -> None:
        for event in events:
            if isinstance(event, ResourceReady):
                assert event.name not in self.stored, "a name is reused"
                self.stored[event.name] = event.data
                if event.name.count(".") == 2:
                    self.parts.append(event.name)
            else:
                assert event.name in self.stored and event.name not in self.expired
                self.expired.add(event.name)

    def run(self, steps: list[object]) -> Store:
        for step in steps:
            if step == "restart":
                self.apply(self.packager.discontinuity())
            else:
                assert isinstance(step, Frame)
                self.apply(self.packager.push(step, 1e9))
        self.apply(self.packager.finish())
        return self

    def tracks(self, letters: str) -> dict[int, list[Traf]]:
        """The trafs of the parts whose names have these rendition letters, by kind index
        (0: video, 1: audio), in creation order (a plain packager's tracks all have ID 1)."""
        by_track: dict[int, list[Traf]] = {0: [], 1: []}
        for name in self.parts:
            letter = name.removeprefix(self.packager.name_prefix)[0]
            if letter in letters:
                for traf in parse_fragment(self.stored[name]).trafs:
                    by_track[_kind_index(letter, traf.track_id)].append(traf)
        return by_track


def _kind_index(letter: str, track_id: int) -> int:
    return {"v": 0, "a": 1}.get(letter, track_id - 1)


def samples(trafs: list[Traf]) -> list[tuple[int, int, int, int, bytes]]:
    """Every sample of these trafs: (decode time, duration, flags, composition offset, bytes)."""
    out = []
    for traf in trafs:
        decode = traf.decode_time
        for s in traf.samples:
            out.append((decode, s.duration, s.flags, s.cto, s.data))
            decode += s.duration
    return out


def both(steps: list[object], **options: object) -> tuple[Store, Store]:
    plain = Store(CmafPackager(name_prefix="t-", **options)).run(steps)  # type: ignore[arg-type]
    muxed = Store(CmafPackager(name_prefix="t-", muxed=True, **options)).run(steps)  # type: ignore[arg-type]
    return plain, muxed


def looped(demo_frames: list[Frame], audio_lead: int) -> list[object]:
    clip = [f for f in demo_frames if f.dts < 10_000]
    return list(interleaved(clip + [f for f in shifted(clip, 10_000) if not f.config], audio_lead))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    part=st.sampled_from([0.2, 1 / 3, 0.5]),
    target=st.sampled_from([1.0, 2.0, 4.0]),
    audio_lead=st.integers(-150, 150),
)
def test_muxed_parts_carry_every_frame_once_aligned_and_continuous(demo_frames, part, target, audio_lead) -> None:  # type: ignore[no-untyped-def]
    steps = list(interleaved(demo_frames, audio_lead))
    plain, muxed = both(steps, part_duration=part, target_duration=target, window=30)
    expected, got = plain.tracks("va"), muxed.tracks("m")
    for kind in (0, 1):  # every sample once, in order, same times and bytes
        assert samples(got[kind]) == samples(expected[kind])
        assert len(samples(got[kind])) > 200
    for trafs in got.values():  # decode times go on from part to part (no jump in this stream)
        for before, after in zip(trafs, trafs[1:]):
            assert after.decode_time == before.decode_time + before.duration
    # Each part holds both tracks (after the first: the clip's audio starts 44 ms in), the
    # audio spanning the video's time to within two audio frames, plus how far the audio lags
    # in the interleaving (a part is cut when its video is, with the audio that has come).
    skew = 2 * _AUDIO_FRAME_S + abs(audio_lead) / 1000 + 2e-3
    for name in muxed.parts[1:]:
        video, audio = parse_fragment(muxed.stored[name]).trafs
        v_start, v_end = video.decode_time / 90_000, (video.decode_time + video.duration) / 90_000
        a_start, a_end = audio.decode_time / 44_100, (audio.decode_time + audio.duration) / 44_100
        assert abs(a_start - v_start) <= skew, (name, a_start - v_start, a_end - v_end)
        assert abs(a_end - v_end) <= skew, (name, a_start - v_start, a_end - v_end)
    # Segments are their parts joined; what the lists name is stored.
    rendition = muxed.packager.muxed_rendition
    assert rendition is not None
    for segment in rendition.segments:
        if segment.parts:
            assert b"".join(muxed.stored[p.name] for p in segment.parts) == muxed.stored[segment.name]


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), window=st.integers(1, 5))
def test_jumps_and_restarts_lose_and_repeat_nothing(demo_frames, data, window) -> None:  # type: ignore[no-untyped-def]
    steps = data.draw(perturbed_streams(demo_frames))
    plain, muxed = both(steps, window=window)
    expected, got = plain.tracks("va"), muxed.tracks("m")
    for kind in (0, 1):
        assert samples(got[kind]) == samples(expected[kind])
    # Only muxed resources are stored; everything the lists name is available.
    prefix = muxed.packager.name_prefix
    assert all(name.removeprefix(prefix)[0] == "m" for name in muxed.stored)
    available = set(muxed.stored) - muxed.expired
    rendition = muxed.packager.muxed_rendition
    assert rendition is not None
    listed = {s.name for s in rendition.segments if not s.gap} | {s.init for s in rendition.segments}
    assert listed <= available
    assert len(rendition.segments) == len(muxed.packager.renditions[FrameKind.VIDEO].segments) <= window


def test_one_playlist_with_both_codecs_and_an_init_segment_with_two_tracks(demo_frames) -> None:  # type: ignore[no-untyped-def]
    packager = CmafPackager(name_prefix="t-", muxed=True, window=30)
    store = Store(packager)
    for frame in looped(demo_frames, 0):
        assert isinstance(frame, Frame)
        if frame.dts < 18_500:
            store.apply(packager.push(frame, 1_700_000_000.0))
    assert list(packager.playlists) == [FrameKind.VIDEO]
    master = llhls.multivariant_playlist(packager)
    assert master is not None and "EXT-X-MEDIA" not in master
    (variant,) = m3u8.loads(master).playlists
    assert variant.uri == "video.m3u8" and variant.stream_info.codecs == "avc1.4d401e,mp4a.40.2"
    assert variant.stream_info.resolution == (640, 360)
    text = llhls.media_playlist(packager, FrameKind.VIDEO, low_latency=True, deltas=True)
    playlist = m3u8.loads(text)
    assert "EXT-X-RENDITION-REPORT" not in text and playlist.preload_hint.uri.startswith("t-m-")
    assert playlist.segments[-1].parts[0].independent == "YES"
    assert llhls.reload_state(packager, FrameKind.AUDIO, 0, None) is llhls.ReloadState.WAIT  # no audio.m3u8
    delta = llhls.media_playlist(packager, FrameKind.VIDEO, low_latency=True, deltas=True, skip=True)
    assert "#EXT-X-SKIP:SKIPPED-SEGMENTS=" in delta  # a DVR window's delta updates work the same
    init = parse_init(store.stored[packager.muxed_rendition.init])  # type: ignore[union-attr]
    assert sorted(init.traks) == [1, 2] and init.next_track_id == 3
    # The recordings' scanner reads init + segments as one two-track fragmented MP4.
    rendition = packager.muxed_rendition
    assert rendition is not None
    data = store.stored[rendition.init] + b"".join(store.stored[s.name] for s in rendition.segments)
    index = mp4scan.scan_bytes(data)
    assert index.problem is None and index.codecs == ("avc1.4d401e", "mp4a.40.2")
    made = [n for n in store.parts if int(n.split("-")[2].split(".")[0]) <= rendition.segments[-1].sequence]
    assert len(index.fragments) == len(made)
    parts = [p for s in rendition.segments for p in s.parts]  # the newest segments list theirs
    tail = index.fragments[-len(parts) :]
    assert [f.sync for f in tail] == [p.independent for p in parts]
    assert [round(f.duration, 3) for f in tail] == [round(p.duration, 3) for p in parts]


def test_an_audio_only_stream_keeps_its_audio_playlist(demo_frames) -> None:  # type: ignore[no-untyped-def]
    packager = CmafPackager(name_prefix="t-", muxed=True)
    store = Store(packager).run([f for f in demo_frames if f.kind is FrameKind.AUDIO])
    assert list(packager.playlists) == [FrameKind.AUDIO]
    rendition = packager.playlists[FrameKind.AUDIO]
    assert llhls.playlist_name(rendition) == "audio.m3u8" and rendition.codec_string == "mp4a.40.2"
    master = llhls.multivariant_playlist(packager)
    assert master is not None and "EXT-X-MEDIA" not in master and master.endswith("audio.m3u8\n")
    assert all(p.independent for s in rendition.segments for p in s.parts)
    assert len(parse_init(store.stored[rendition.init]).traks) == 1


def _writer_fragments(frames: list[Frame], kind: FrameKind) -> FragmentWriter:
    config = next(f for f in frames if f.config and f.kind is kind)
    writer = FragmentWriter([track_from_config(config, track_id=1)])
    for frame in frames:
        if frame.kind is kind and not frame.config:
            writer.push(frame)
    return writer


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(start=st.integers(0, 250), count=st.integers(1, 60), sequence=st.integers(1, 2**32 - 1),
       ids=st.sampled_from([(1, 2), (2, 1), (7, 3)]))  # fmt: skip
def test_merge_fragments_round_trips(demo_frames, start, count, sequence, ids) -> None:  # type: ignore[no-untyped-def]
    media = [f for f in demo_frames if not f.config and f.kind is not FrameKind.DATA][start : start + count]
    configs = [f for f in demo_frames if f.config]
    pieces = []
    for kind, track_id in zip((FrameKind.VIDEO, FrameKind.AUDIO), ids):
        fragment = _writer_fragments(configs + media, kind).flush()
        if fragment is not None:
            pieces.append((fragment.data, track_id))
    if not pieces:
        return
    merged = parse_fragment(merge_fragments(pieces, sequence))
    assert merged.sequence == sequence
    originals = [(t, track_id) for data, track_id in pieces for t in parse_fragment(data).trafs]
    assert [t.track_id for t in merged.trafs] == [track_id for _, track_id in originals]
    for got, (original, _) in zip(merged.trafs, originals, strict=True):
        assert samples([got]) == samples([original])


@given(st.binary(max_size=200), st.integers(1, 5))
def test_merge_fragments_raises_only_our_error_on_arbitrary_bytes(data: bytes, track_id: int) -> None:
    try:
        merge_fragments([(data, track_id)], 1)
    except LocalProtocolError:
        pass


def test_merge_fragments_refuses_what_the_writer_did_not_write(demo_frames) -> None:  # type: ignore[no-untyped-def]
    fragment = _writer_fragments(demo_frames[:40], FrameKind.VIDEO).flush()
    assert fragment is not None
    for bad in (fragment.data[:-1], b"moov" + fragment.data[4:], fragment.data + b"x"):
        with pytest.raises(LocalProtocolError):
            merge_fragments([(bad, 1)], 1)
    with pytest.raises(LocalProtocolError):
        merge_fragments([(fragment.data, 0)], 1)


def test_audio_that_joins_late_gets_a_new_init_segment_after_a_discontinuity(demo_frames) -> None:  # type: ignore[no-untyped-def]
    # A browser publisher's audio starts after its video: the muxed init segment gains the
    # audio track, which RFC 8216 says needs EXT-X-DISCONTINUITY. Nothing is lost on the way.
    steps = [f for f in demo_frames if f.kind is not FrameKind.AUDIO or f.dts >= 4000]
    audio_config = next(f for f in demo_frames if f.config and f.kind is FrameKind.AUDIO)
    joined = next(i for i, f in enumerate(steps) if f.kind is FrameKind.AUDIO)
    steps.insert(joined, audio_config)
    plain, muxed = both(list(steps), window=10)
    expected, got = plain.tracks("va"), muxed.tracks("m")
    for kind in (0, 1):
        assert samples(got[kind]) == samples(expected[kind]) and got[kind]
    rendition = muxed.packager.muxed_rendition
    assert rendition is not None and len(rendition.tracks) == 2
    inits = [s.init for s in rendition.segments]
    changed = next(i for i, init in enumerate(inits) if init != inits[0])
    assert rendition.segments[changed].discontinuity and not rendition.segments[changed - 1].discontinuity
    assert sorted(parse_init(muxed.stored[inits[0]]).traks) == [1]
    assert sorted(parse_init(muxed.stored[inits[changed]]).traks) == [1, 2]
    text = llhls.media_playlist(muxed.packager, FrameKind.VIDEO, low_latency=False)
    assert text.count("#EXT-X-MAP") == 2 and text.count("#EXT-X-DISCONTINUITY\n") == 1
