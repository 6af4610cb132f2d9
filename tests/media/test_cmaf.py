"""The CMAF packager (arcly_trio.media.cmaf), its LL-HLS/fMP4 playlists (media.llhls) and its
DASH MPD (media.dash), sans-IO.

Hypothesis drives the packager with the demo clip cut at random places, with random timestamp
jumps, publisher restarts and codec changes, and checks, with the independent box reader of
``tests/_boxes.py``: every part parses back as ``moof`` + ``mdat``; its sample durations sum
to the part's duration; decode times never go back and each part starts where the previous one
of its rendition ended (except at a jump); a segment is exactly its parts joined; every name a
list shows was stored and has not expired; the next part a rendition makes is the one its
preload hint named; the ``m3u8`` package parses every playlist with its
LL tags; the MPD is well-formed XML whose ``$Number$`` and timeline name exactly the listed
segments; a playlist rendered with a :class:`~arcly_trio.media.llhls.LineCache` kept across
renders is the very text of a full render. Blocking reload decisions follow RFC 8216bis 6.2.5.2, and delivery directives from
any query raise only the project's error.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable

import m3u8
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arcly_trio.core.errors import LocalProtocolError, RemoteProtocolError
from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.media import dash, llhls
from arcly_trio.media.cmaf import CmafPackager, ResourceExpired, ResourceReady
from arcly_trio.media.fmp4 import ms_to_ticks
from arcly_trio.media.llhls import ReloadState, parse_directives, reload_state
from tests._boxes import parse_fragment, read_boxes

NS = {"d": "urn:mpeg:dash:schema:mpd:2011"}


def shifted(frames: Iterable[Frame], by: int) -> list[Frame]:
    return [Frame(f.kind, f.codec, f.pts + by, f.dts + by, f.payload, f.keyframe, f.config, f.track) for f in frames]


class Recorder:
    """Runs a packager and keeps what a storage would hold, checking every list as it goes."""

    def __init__(self, packager: CmafPackager, *, check_each: bool = True) -> None:
        self.packager = packager
        self.check_each = check_each  # check the lists after every push (else call check_lists)
        self.stored: dict[str, bytes] = {}
        self.expired: set[str] = set()
        self.parts: dict[str, bytes] = {}
        self.hints_checked = 0
        self.caches: dict[tuple[object, ...], llhls.LineCache] = {}  # one per list, kept across renders

    def apply(self, events: list[ResourceReady | ResourceExpired]) -> None:
        for event in events:
            if isinstance(event, ResourceReady):
                assert event.name not in self.stored and event.name not in self.expired, "a name is reused"
                self.stored[event.name] = event.data
                if event.name.count(".") == 2:
                    self.parts[event.name] = event.data
            else:
                assert event.name in self.stored, f"{event.name} expired but never stored"
                self.expired.add(event.name)
        if self.check_each:
            self.check_lists()

    def push(self, frame: Frame, wallclock: float = 1e9) -> None:
        hints = [rendition.hint for rendition in self.packager.renditions.values() if rendition.hint]
        events = self.packager.push(frame, wallclock)
        self.apply(events)
        self.check_hints(hints, events)

    def check_hints(self, hints: list[str], events: list[ResourceReady | ResourceExpired]) -> None:
        """The first part a rendition makes is the one its ``EXT-X-PRELOAD-HINT`` named."""
        made = [e.name for e in events if isinstance(e, ResourceReady) and e.name.count(".") == 2]
        for hint in hints:
            prefix = hint[: hint.rindex("-") + 1]  # "{name prefix}{rendition letter}-"
            first = next((name for name in made if name.startswith(prefix)), None)
            if first is not None:
                assert first == hint, f"the preload hint named {hint}, the next part is {first}"
                self.hints_checked += 1

    def check_lists(self) -> None:
        packager = self.packager
        available = set(self.stored) - self.expired
        for kind in packager.renditions:
            for low_latency in (False, True):
                text = llhls.media_playlist(packager, kind, low_latency=low_latency)
                # The lines a cache keeps across renders give the very text of a full render.
                cache = self.caches.setdefault((kind, low_latency), llhls.LineCache())
                assert llhls.media_playlist(packager, kind, low_latency=low_latency, cache=cache) == text
                # (a DVR window's delta updates with their cache: tests/services/test_hls_golden.py)
                playlist = m3u8.loads(text)
                names = {s.uri for s in playlist.segments if s.uri}
                names |= {s.init_section.uri for s in playlist.segments if s.init_section}
                if low_latency:
                    names |= {p.uri for s in playlist.segments for p in s.parts}
                    assert playlist.server_control.can_block_reload == "YES"
                    assert playlist.part_inf.part_target == llhls.part_target(packager)
                gaps = {s.name for s in packager.renditions[kind].segments if s.gap}
                missing = names - available - gaps
                assert not missing, f"listed but not available: {missing}"
        master = llhls.multivariant_playlist(packager)
        if master is not None:
            parsed = m3u8.loads(master)
            assert parsed.is_variant and parsed.playlists[0].stream_info.codecs
        mpd = dash.render_mpd(packager, now=2e9)
        if mpd is not None:
            check_mpd(dash.finalize(mpd.encode(), 2e9, "token=a&b=c"), available, packager)


def check_mpd(data: bytes, available: set[str], packager: CmafPackager) -> None:
    root = ET.fromstring(data)
    assert root.get("type") == ("static" if packager.finished else "dynamic")
    starts = [dash_seconds(p.get("start", "PT0S")) for p in root.findall("d:Period", NS)]
    assert starts == sorted(starts)
    for template in root.iterfind(".//d:SegmentTemplate", NS):
        init = template.get("initialization", "").split("?")[0]
        assert init in available
        media = template.get("media", "")
        assert media.endswith("?token=a&b=c")
        number = int(template.get("startNumber", "1"))
        pto = int(template.get("presentationTimeOffset", "0"))
        timeline: list[tuple[int, int]] = []  # (t, d) of every segment, numbered from startNumber
        for element in template.iterfind(".//d:S", NS):
            t = int(element.get("t", timeline[-1][0] + timeline[-1][1] if timeline else pto))
            for _ in range(1 + int(element.get("r", "0"))):
                timeline.append((t, int(element.get("d", "0"))))
                t += int(element.get("d", "0"))
        # The timeline starts at the period's start with the period's first segment (dashdemux2
        # 1.22 and ffmpeg's dashdemux need it). The segments before the first listed one with
        # media are described evenly, contiguous; every later one as it is.
        assert timeline and timeline[0][0] == pto
        listed = {s.name: s for r in packager.renditions.values() for s in r.segments}
        names = [
            dash.resolve(media.split("?")[0].replace("$Number$", str(n))) for n in range(number, number + len(timeline))
        ]
        real = [i for i, name in enumerate(names) if name in listed and not listed[name].gap]
        assert real, "the MPD lists no segment with media"
        head = timeline[: real[0] + 1]  # what precedes the first listed one is contiguous up to it
        assert all(t0 + d0 == t1 for (t0, d0), (t1, _) in zip(head, head[1:]))
        for i, ((t, d), name) in enumerate(zip(timeline, names)):
            segment = listed.get(name)
            if i < real[0]:
                continue  # what left the window, or the rendition's gaps: no player asks for them
            assert segment is not None, f"the MPD names {name}, which is not listed"
            assert name in available or segment.gap, f"the MPD names {name}, which is not available"
            if i == 0:  # the period's first segment, drawn from its start
                assert t == pto <= segment.decode_time and t + d == segment.decode_time + segment.ticks
            elif segment.gap:
                assert t == segment.decode_time  # (a gap's own duration is the leading track's)
            else:
                assert (t, d) == (segment.decode_time, segment.ticks)


def dash_seconds(text: str) -> float:
    assert text.startswith("PT") and text.endswith("S")
    return float(text[2:-1])


def check_media(recorder: Recorder) -> None:
    """Parts parse back; durations add up; decode times go on; segments are their parts."""
    packager = recorder.packager
    for rendition in packager.renditions.values():
        letter = rendition.name[0]
        for segment in rendition.segments:
            if segment.gap or not segment.parts:
                continue
            joined = b"".join(recorder.stored[p.name] for p in segment.parts)
            assert joined == recorder.stored[segment.name]
            for part in segment.parts:  # sample durations add up to the part's duration
                (traf,) = parse_fragment(recorder.stored[part.name]).trafs
                assert traf.duration / rendition.timescale == pytest.approx(part.duration, abs=1e-9)
            ticks = [parse_fragment(recorder.stored[p.name]).trafs[0] for p in segment.parts]
            assert ticks[0].decode_time == segment.decode_time
            assert ticks[-1].decode_time + ticks[-1].duration - segment.decode_time == segment.ticks
        # Every part of this rendition, in creation order.
        names = [n for n in recorder.parts if n.startswith(f"{packager.name_prefix}{letter}-")]
        end = None
        for name in names:
            top = read_boxes(recorder.parts[name])
            assert [b.type for b in top] == ["moof", "mdat"]
            fragment = parse_fragment(recorder.parts[name])
            for traf in fragment.trafs:
                if end is not None:
                    assert traf.decode_time >= end, "decode times went back"
                assert all(s.duration > 0 for s in traf.samples)
                end = traf.decode_time + traf.duration


def demo_packager(**options: object) -> CmafPackager:
    return CmafPackager(name_prefix="t-", **options)  # type: ignore[arg-type]


def test_demo_clip_renditions_parts_and_lists(demo_frames) -> None:  # type: ignore[no-untyped-def]
    recorder = Recorder(demo_packager())
    for frame in demo_frames:
        recorder.push(frame)
    recorder.apply(recorder.packager.finish())
    check_media(recorder)
    packager = recorder.packager
    video, audio = packager.renditions[FrameKind.VIDEO], packager.renditions[FrameKind.AUDIO]
    assert (video.codec_string, audio.codec_string) == ("avc1.4d401e", "mp4a.40.2")
    assert [s.sequence for s in video.segments] == [s.sequence for s in audio.segments] == [0, 1, 2, 3, 4]
    # Parts stay listed for the segments within three target durations of the end.
    assert [bool(s.parts) for s in video.segments] == [False, False, True, True, True]
    for segment in video.segments[2:]:
        parts = segment.parts
        assert parts and parts[0].independent and not any(p.independent for p in parts[1:])
        assert all(0.85 * 1 / 3 <= p.duration <= 1 / 3 for p in parts[:-1])
        assert abs(sum(p.duration for p in parts) - segment.duration) < 1e-6
        assert 1.99 <= segment.duration <= 2.01
    assert all(p.independent for s in audio.segments for p in s.parts)
    final = m3u8.loads(llhls.media_playlist(packager, FrameKind.VIDEO, low_latency=True))
    assert final.is_endlist and final.preload_hint is None


def test_live_edge_lists_parts_hint_and_rendition_report(demo_frames) -> None:  # type: ignore[no-untyped-def]
    packager = demo_packager()
    for frame in demo_frames:
        if frame.dts < 8500:
            packager.push(frame, 1_700_000_000.0)
    text = llhls.media_playlist(packager, FrameKind.VIDEO, low_latency=True)
    playlist = m3u8.loads(text)
    video = packager.renditions[FrameKind.VIDEO]
    assert playlist.preload_hint.hint_type == "PART" and playlist.preload_hint.uri == video.hint
    assert playlist.server_control.part_hold_back == pytest.approx(3 * llhls.part_target(packager))
    (report,) = playlist.rendition_reports
    audio = packager.renditions[FrameKind.AUDIO]
    assert (report.uri, report.last_msn, report.last_part) == ("audio.m3u8", *audio.last_part())
    assert "#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:20.000Z" in text
    # Parts of segments older than three target durations are no longer listed.
    assert not playlist.segments[0].parts and playlist.segments[-1].parts
    plain = llhls.media_playlist(packager, FrameKind.VIDEO, low_latency=False)
    assert "#EXT-X-PART" not in plain and "#EXT-X-SERVER-CONTROL" not in plain and "#EXT-X-VERSION:7" in plain


def test_the_preload_hint_names_the_next_part(demo_frames) -> None:  # type: ignore[no-untyped-def]
    """Every ``EXT-X-PRELOAD-HINT`` names the part its rendition makes next (a player requests
    it before it exists; the server holds the request until it does). Mutant killed: the hint
    naming the part after the next one (``_next_part + 1`` in ``CmafPackager._add_part``)."""
    recorder = Recorder(demo_packager())
    for frame in demo_frames:
        recorder.push(frame)
    parts = sum(len(s.parts) for r in recorder.packager.renditions.values() for s in r.segments) + sum(
        len(r.open_parts) for r in recorder.packager.renditions.values()
    )
    assert recorder.hints_checked > parts // 2  # most parts were made while a hint named them
    video = recorder.packager.renditions[FrameKind.VIDEO]
    sequence, index = video.last_part()  # type: ignore[misc]
    playlist = m3u8.loads(llhls.media_playlist(recorder.packager, FrameKind.VIDEO, low_latency=True))
    assert playlist.preload_hint.uri == video.hint == f"t-v-{sequence}.{index + 1}.m4s"


@st.composite
def perturbed_streams(draw: st.DrawFn, frames: list[Frame]) -> list[object]:
    """The demo clip cut into pieces, each resumed after a jump, a restart or as it was."""
    media = [f for f in frames if not f.config]
    configs = [f for f in frames if f.config and f.kind is not FrameKind.DATA]
    cuts = sorted(draw(st.lists(st.integers(1, len(media) - 1), max_size=4, unique=True)))
    steps: list[object] = [*configs]
    start, offset = 0, 0
    for cut in [*cuts, len(media)]:
        steps += shifted(media[start:cut], offset)
        how = draw(st.sampled_from(["on", "back", "forward", "restart"]))
        if how == "back":
            offset -= draw(st.integers(1, 20_000))
        elif how == "forward":
            offset += draw(st.integers(10_001, 100_000))
        elif how == "restart":
            steps.append("restart")
            steps += configs
            offset = -media[cut].dts if cut < len(media) else 0
        start = cut
    return steps


@pytest.mark.timeout(180)  # 15 whole clips, every list parsed after every frame: ~20 s on an idle machine
@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(
    data=st.data(),
    part=st.sampled_from([0.2, 1 / 3, 0.5]),
    target=st.sampled_from([1.0, 2.0, 4.0]),
    window=st.integers(1, 5),
)
def test_random_cuts_jumps_and_restarts_keep_every_invariant(demo_frames, data, part, target, window) -> None:  # type: ignore[no-untyped-def]
    steps = data.draw(perturbed_streams(demo_frames))
    recorder = Recorder(demo_packager(part_duration=part, target_duration=target, window=window))
    restarts = 0
    for step in steps:
        if step == "restart":
            restarts += 1
            recorder.apply(recorder.packager.discontinuity())
        else:
            assert isinstance(step, Frame)
            recorder.push(step)
    recorder.apply(recorder.packager.finish())
    check_media(recorder)
    packager = recorder.packager
    for rendition in packager.renditions.values():
        dsns = [s.dsn for s in rendition.segments]
        assert dsns == sorted(dsns)
        for segment in rendition.segments:
            assert segment.ticks >= 0 and (segment.gap or segment.size > 0)
    # Everything still listed is stored; nothing expired is listed.
    listed = {s.name for r in packager.renditions.values() for s in r.segments if not s.gap}
    assert listed <= set(recorder.stored) and not listed & recorder.expired


def test_a_new_codec_config_starts_a_new_init_segment_and_period(demo_frames) -> None:  # type: ignore[no-untyped-def]
    recorder = Recorder(demo_packager(window=10))
    for frame in demo_frames:
        recorder.push(frame)
    config = next(f for f in demo_frames if f.config and f.kind is FrameKind.VIDEO)
    changed = Frame(FrameKind.VIDEO, "h264", 0, 0, config.payload + b"", config=True)
    # Same bytes: nothing changes.
    recorder.push(changed)
    assert recorder.packager.renditions[FrameKind.VIDEO].init == "t-v1.mp4"
    audio_config = next(f for f in demo_frames if f.config and f.kind is FrameKind.AUDIO)
    new_audio = Frame(FrameKind.AUDIO, "aac", 0, 0, bytes([0x12, 0x08]), config=True)  # AAC-LC 44.1 kHz mono
    assert new_audio.payload != audio_config.payload
    recorder.push(new_audio)
    for frame in shifted([f for f in demo_frames if not f.config], 10_100):
        recorder.push(frame)
    recorder.apply(recorder.packager.finish())
    audio = recorder.packager.renditions[FrameKind.AUDIO]
    assert audio.init != "t-a2.mp4" and {s.init for s in audio.segments} == {"t-a2.mp4", audio.init}
    flags = [s.discontinuity for s in audio.segments]
    assert flags.count(True) == 1
    text = llhls.media_playlist(recorder.packager, FrameKind.AUDIO, low_latency=False)
    assert text.count("#EXT-X-MAP") == 2 and text.count("#EXT-X-DISCONTINUITY\n") == 1
    root = ET.fromstring(dash.finalize(dash.render_mpd(recorder.packager, now=2e9).encode(), 2e9))
    assert len(root.findall("d:Period", NS)) == 2 and root.get("type") == "static"
    check_media(recorder)


def test_unsupported_tracks_are_left_out_and_counted(demo_frames) -> None:  # type: ignore[no-untyped-def]
    packager = demo_packager()
    packager.push(Frame(FrameKind.AUDIO, "mp3", 0, 0, b"\xff\xfb", keyframe=True))
    packager.push(Frame(FrameKind.VIDEO, "h264", 0, 0, b"x", keyframe=True, track=1))
    for frame in demo_frames[:100]:
        packager.push(frame)
    assert packager.left_out == {"mp3 audio": 1, "video track 1": 1}
    assert packager.carried == {"h264 video", "aac audio"}


def test_malformed_config_raises_and_changes_nothing(demo_frames) -> None:  # type: ignore[no-untyped-def]
    from arcly_trio.media.codecs import CodecError

    packager = demo_packager()
    for frame in demo_frames[:50]:
        packager.push(frame)
    version = packager.version
    with pytest.raises(CodecError):
        packager.push(Frame(FrameKind.VIDEO, "h264", 0, 0, b"\x01", config=True))
    with pytest.raises(CodecError):  # a composition offset beyond 32 bits at 90 kHz
        packager.push(Frame(FrameKind.VIDEO, "h264", 2000 + 24_000_000, 2000, b"x", keyframe=True))
    assert packager.version == version
    with pytest.raises(LocalProtocolError):
        CmafPackager(part_duration=5, target_duration=2)
    with pytest.raises(LocalProtocolError):
        CmafPackager(name_prefix="../x")
    packager.finish()
    with pytest.raises(LocalProtocolError):
        packager.push(demo_frames[60])


def test_audio_only_stream_is_cut_on_audio(demo_frames) -> None:  # type: ignore[no-untyped-def]
    recorder = Recorder(demo_packager())
    for frame in demo_frames:
        if frame.kind is not FrameKind.VIDEO:
            recorder.push(frame)
    recorder.apply(recorder.packager.finish())
    assert list(recorder.packager.renditions) == [FrameKind.AUDIO]
    master = m3u8.loads(llhls.multivariant_playlist(recorder.packager) or "")
    assert master.playlists[0].uri == "audio.m3u8" and master.playlists[0].stream_info.codecs == "mp4a.40.2"
    check_media(recorder)


# --- blocking reload --------------------------------------------------------------------------


def live_packager(demo_frames: list[Frame]) -> CmafPackager:  # type: ignore[type-arg]
    packager = demo_packager()
    for frame in demo_frames[: len(demo_frames) // 2]:
        packager.push(frame, 1e9)
    return packager


def test_reload_state_follows_rfc_8216bis(demo_frames) -> None:  # type: ignore[no-untyped-def]
    packager = live_packager(demo_frames)
    video = packager.renditions[FrameKind.VIDEO]
    live, have = video.open_sequence, len(video.open_parts)
    assert live is not None and have >= 1
    last_complete = video.segments[-1]
    V = FrameKind.VIDEO
    assert reload_state(packager, V, live - 1, None) is ReloadState.READY
    assert reload_state(packager, V, live, None) is ReloadState.WAIT  # not complete yet
    assert reload_state(packager, V, live, have - 1) is ReloadState.READY
    assert reload_state(packager, V, live, have) is ReloadState.WAIT  # the next part
    assert reload_state(packager, V, live + 1, None) is ReloadState.WAIT
    assert reload_state(packager, V, live + 2, None) is ReloadState.TOO_FAR
    limit = llhls.advance_part_limit(packager)
    assert limit == 8  # three seconds of 0.334 s parts
    assert reload_state(packager, V, live, have - 1 + limit) is ReloadState.WAIT
    assert reload_state(packager, V, live, have + limit) is ReloadState.TOO_FAR
    # A part index past a complete segment's last part is part 0 of the next segment.
    count = len(last_complete.parts)
    assert reload_state(packager, V, last_complete.sequence, count) is ReloadState.READY
    assert reload_state(packager, V, 0, 99) is ReloadState.READY  # long gone
    packager.finish()
    assert reload_state(packager, V, 10**9, None) is ReloadState.READY  # ENDLIST: ignored


def test_delivery_directives_are_parsed_strictly() -> None:
    assert parse_directives({}) is None
    assert parse_directives({"token": "x"}) is None
    assert parse_directives({"_HLS_msn": "12"}) == (12, None)
    assert parse_directives({"_HLS_msn": "12", "_HLS_part": "3"}) == (12, 3)
    for bad in (
        {"_HLS_part": "1"},
        {"_HLS_msn": "-1"},
        {"_HLS_msn": "1e3"},
        {"_HLS_msn": ""},
        {"_HLS_msn": "99999999999999999999"},
        {"_HLS_msn": "1", "_HLS_part": "x"},
        {"_HLS_msn": "١٢"},
    ):
        with pytest.raises(RemoteProtocolError):
            parse_directives(bad)


@given(st.dictionaries(st.sampled_from(["_HLS_msn", "_HLS_part", "_HLS_skip", "token"]), st.text(max_size=30)))
def test_arbitrary_directives_raise_only_our_error(query: dict[str, str]) -> None:
    try:
        parsed = parse_directives(query)
    except RemoteProtocolError:
        return
    if parsed is not None:
        msn, part = parsed
        assert msn >= 0 and (part is None or part >= 0)


def test_mpd_of_a_live_stream(demo_frames) -> None:  # type: ignore[no-untyped-def]
    packager = live_packager(demo_frames)
    mpd = dash.render_mpd(packager, now=1e9 + 5)
    assert mpd is not None
    root = ET.fromstring(dash.finalize(mpd.encode(), 1e9 + 5))
    assert root.get("type") == "dynamic" and root.get("availabilityStartTime") == "2001-09-09T01:46:40.000Z"
    assert root.get("suggestedPresentationDelay") == "PT6S" and root.get("minimumUpdatePeriod") == "PT2S"
    (timing,) = root.findall("d:UTCTiming", NS)
    assert timing.get("value") == "2001-09-09T01:46:45.000Z"
    sets = root.findall(".//d:AdaptationSet", NS)
    assert [s.get("contentType") for s in sets] == ["video", "audio"]
    video = sets[0].find("d:Representation", NS)
    assert video is not None and (video.get("codecs"), video.get("width"), video.get("height")) == (
        "avc1.4d401e",
        "640",
        "360",
    )
    assert dash.render_mpd(demo_packager(), now=0) is None


# --- segments keep the playlists' promise (issue 19, item 3) ------------------------------------


def interleaved(frames: list[Frame], audio_lead: int) -> list[Frame]:
    """``frames`` in the order a publisher whose audio runs ``audio_lead`` ms ahead of its video
    (behind when negative) would send them; configs first."""
    configs = [f for f in frames if f.config]
    media = [f for f in frames if not f.config and f.kind is not FrameKind.DATA]
    return configs + sorted(media, key=lambda f: f.dts - (audio_lead if f.kind is FrameKind.AUDIO else 0))


@pytest.mark.parametrize("audio_lead", [-150, -40, 0, 40, 150])
def test_target_duration_is_the_configured_one_and_audio_is_cut_on_the_video_boundaries(
        demo_frames, audio_lead: int) -> None:  # type: ignore[no-untyped-def]  # fmt: skip
    # The demo clip (30 fps H.264, keyframes every 2 s, AAC at 44.1 kHz: 23.2 ms frames) played
    # in a loop, its audio a little ahead of or behind its video in the interleaving.
    clip = [f for f in demo_frames if f.dts < 10_000]
    frames = clip + [f for n in (1, 2) for f in shifted(clip, n * 10_000) if not f.config]
    recorder = Recorder(demo_packager(window=30), check_each=False)
    for frame in interleaved(frames, audio_lead):
        recorder.push(frame)
    recorder.apply(recorder.packager.finish())
    recorder.check_lists()
    check_media(recorder)
    packager = recorder.packager
    video, audio = packager.renditions[FrameKind.VIDEO], packager.renditions[FrameKind.AUDIO]
    for kind in (FrameKind.VIDEO, FrameKind.AUDIO):
        playlist = m3u8.loads(llhls.media_playlist(packager, kind, low_latency=False))
        # EXT-X-TARGETDURATION is the configured 2 s (it was 3: audio segments of 2.02 s were
        # rounded up), and every segment rounds to at most it (RFC 8216 4.3.3.1).
        assert playlist.target_duration == 2
        assert all(int(s.duration + 0.5) <= 2 for s in playlist.segments)
    # Each audio segment starts with the audio frame that straddles its video segment's boundary
    # (else the first after it), whatever the interleaving: the frames before it end the
    # previous segment.
    audio_dts = sorted(f.dts for f in frames if f.kind is FrameKind.AUDIO and not f.config)
    for v, a in zip(video.segments[1:], audio.segments[1:]):
        boundary_ms = v.decode_time * 1000 // video.timescale
        after = audio_dts.index(next(dts for dts in audio_dts if dts >= boundary_ms))
        first = audio_dts[after - 1] if audio_dts[after] > boundary_ms and after else audio_dts[after]
        assert a.decode_time == ms_to_ticks(first, audio.timescale), (v.sequence, first, boundary_ms)
        assert boundary_ms - 24 < first <= boundary_ms + 44  # (the clip's audio starts 44 ms in)


def test_mpd_names_only_segments_that_exist_and_starts_at_the_period_start(demo_frames) -> None:  # type: ignore[no-untyped-def]
    # A browser publisher's audio starts a while after its video: the first audio segment is a
    # gap (never stored). The MPD's audio timeline used to start there: ffmpeg 5.1 asked for
    # it thousands of times, VLC stopped fetching audio. It starts at the first audio segment
    # with media, under the number the period starts with (0: ffmpeg counts segments from the
    # first S), which the template maps to its name (t-a1-0.m4s is t-a-1.m4s).
    recorder = Recorder(demo_packager(window=3))
    frames = [f for f in demo_frames if f.kind is not FrameKind.AUDIO or f.config or f.dts >= 2500]

    def mpd() -> ET.Element:
        return ET.fromstring(dash.finalize((dash.render_mpd(recorder.packager, now=1e9 + 10) or "").encode(), 1e9))

    for frame in frames:
        recorder.push(frame, 1e9 + frame.dts / 1000)
        video_rendition = recorder.packager.renditions.get(FrameKind.VIDEO)
        if video_rendition is not None and len(video_rendition.segments) == 2:
            break
    audio_segments = recorder.packager.renditions[FrameKind.AUDIO].segments
    assert audio_segments[0].gap and not audio_segments[1].gap
    root = mpd()
    video, audio = root.iterfind(".//d:SegmentTemplate", NS)
    assert video.get("startNumber") == audio.get("startNumber") == "0"
    assert video.get("media", "").startswith("t-v-$Number$.m4s") and audio.get("media", "").startswith(
        "t-a1-$Number$.m4s"
    )
    assert dash.resolve("t-a1-0.m4s") == audio_segments[1].name
    timeline = audio.findall("d:SegmentTimeline/d:S", NS)
    assert len(timeline) == 1 and timeline[0].get("t") == "0"  # drawn from the period's start
    assert root.get("maxSegmentDuration") == "PT2S"
    # Once segments leave the window, the timeline still starts at the period's start with its
    # first segment with media: the ones gone are described evenly, so that GStreamer's
    # dashdemux2 finds the live segment and ffmpeg's dashdemux counts segments right.
    for frame in frames[frames.index(frame) + 1 :]:
        recorder.push(frame, 1e9 + frame.dts / 1000)
    _, audio = mpd().iterfind(".//d:SegmentTemplate", NS)
    timeline = audio.findall("d:SegmentTimeline/d:S", NS)
    assert timeline[0].get("t") == audio.get("presentationTimeOffset") == "0" and audio.get("startNumber") == "0"
    listed = recorder.packager.renditions[FrameKind.AUDIO].segments
    count = sum(1 + int(e.get("r", "0")) for e in timeline)
    assert len(listed) == 3 and count == listed[-1].sequence  # from a-1 (number 0) to the last
    recorder.check_lists()


def test_long_gops_are_cut_between_keyframes_and_no_longer_announced_independent(demo_frames) -> None:  # type: ignore[no-untyped-def]
    # Keyframes 4 s apart with 2 s segments: the segments keep EXT-X-TARGETDURATION:2, cut
    # without a keyframe at the frame that would make them longer than 2.3 s, and the lists stop
    # claiming what is no longer true (EXT-X-INDEPENDENT-SEGMENTS, DASH startWithSAP).
    frames = [Frame(f.kind, f.codec, f.pts, f.dts, f.payload, f.keyframe and (f.config or f.dts % 4000 == 0), f.config,
                    f.track) for f in demo_frames]  # fmt: skip
    recorder = Recorder(demo_packager(window=10), check_each=False)
    for frame in frames:
        recorder.push(frame)
    recorder.apply(recorder.packager.finish())
    recorder.check_lists()
    packager = recorder.packager
    assert packager.keyframeless_cuts >= 2 and not packager.keyframe_aligned
    video = packager.renditions[FrameKind.VIDEO]
    assert all(s.duration <= 2.3 for s in video.segments) and packager.playlist_target_duration == 2
    assert "#EXT-X-INDEPENDENT-SEGMENTS" not in (llhls.multivariant_playlist(packager) or "")
    video_set = ET.fromstring(dash.render_mpd(packager, now=2e9) or "").find(".//d:AdaptationSet", NS)
    assert video_set is not None and video_set.get("startWithSAP") is None


def test_a_stalled_video_track_is_cut_by_its_audio_and_gets_gap_segments(demo_frames) -> None:  # type: ignore[no-untyped-def]
    # The camera stops for 3.5 s while the microphone goes on: the audio cuts the segments (each
    # keeps the target duration), the video has a gap segment there, and nothing is a
    # discontinuity.
    frames = [f for f in demo_frames if f.config or f.kind is not FrameKind.VIDEO or not 4000 <= f.dts < 7500]
    recorder = Recorder(demo_packager(window=10), check_each=False)
    for frame in frames:
        recorder.push(frame)
    recorder.apply(recorder.packager.finish())
    recorder.check_lists()
    check_media(recorder)
    packager = recorder.packager
    video, audio = packager.renditions[FrameKind.VIDEO], packager.renditions[FrameKind.AUDIO]
    assert any(s.gap for s in video.segments) and not any(s.gap for s in audio.segments)
    assert not any(s.discontinuity for s in video.segments + audio.segments)
    durations = [s.duration for s in audio.segments]
    assert max(durations) <= 2.3 + 0.03 and packager.playlist_target_duration == 2, durations


@given(st.text(alphabet="ab-_19va.m4s", max_size=40) | st.text(max_size=40))
def test_dash_segment_names_resolve_without_surprises(name: str) -> None:
    resolved = dash.resolve(name)
    assert resolved == name or re.fullmatch(r"(?:[A-Za-z0-9_]*-)*[va]-[0-9]+\.m4s", resolved), (name, resolved)


@given(st.sampled_from(["", "t-", "6b14ef007-", "a-b_c-"]), st.sampled_from("va"), st.integers(0, 10**6),
       st.integers(0, 10**9))  # fmt: skip
def test_offset_names_map_back_to_the_segment(prefix: str, letter: str, offset: int, number: int) -> None:
    name = dash.media_template(prefix, letter, offset).replace("$Number$", str(number))
    assert dash.resolve(name) == f"{prefix}{letter}-{number + offset}.m4s"
