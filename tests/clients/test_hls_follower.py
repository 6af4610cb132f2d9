"""The sans-IO LL-HLS follower (``arcly_trio/clients/hls_follower.py``), with no socket.

Fuzz: the playlist parser and the follower never raise anything but ``RemoteProtocolError`` on
any bytes and statuses, and a batch stays bounded. Round trip: a follower answered by the
server's own renders (:func:`arcly_trio.media.llhls.media_playlist` of a
:class:`~arcly_trio.media.cmaf.CmafPackager` fed the demo clip, blocking reloads held until
:func:`~arcly_trio.media.llhls.reload_state` is ready, delta updates when advertised) fetches
every part in order; a viewer that stalls (the packager goes on for a while before its batch is
answered) counts exactly one gap per run of parts it skipped, checked against the parts the
packager made.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import arcly_trio.server
from arcly_trio.clients.hls_follower import (
    MAX_BATCH_PARTS,
    RenditionFollower,
    parse_media_playlist,
    part_uri,
    rendition_targets,
    resolve,
)
from arcly_trio.core.errors import RemoteProtocolError
from arcly_trio.core.frame import FrameKind
from arcly_trio.media import flv
from arcly_trio.media.cmaf import CmafPackager
from arcly_trio.media.llhls import ReloadState, media_playlist, reload_state
from tests.services.test_dvr import looped

FRAMES = looped(flv.read_frames((Path(arcly_trio.server.__file__).parent / "assets" / "demo.flv").read_bytes()), 3)
TARGET = b"/live/demo/video.m3u8?token=t"

_LINES = st.sampled_from(
    [
        b"#EXTM3U",
        b"#EXT-X-MEDIA-SEQUENCE:",
        b"#EXT-X-SKIP:SKIPPED-SEGMENTS=",
        b"#EXTINF:",
        b'#EXT-X-PART:DURATION=0.333,URI="',
        b'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="',
        b'#EXT-X-MAP:URI="',
        b"#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=12.0",
        b"#EXT-X-ENDLIST",
        b"v-1.m4s",
    ]
)
_PLAYLISTS = st.lists(st.tuples(_LINES, st.binary(max_size=12)), max_size=60).map(
    lambda lines: b"\n".join(tag + tail for tag, tail in lines)
)


@settings(max_examples=300)
@given(st.one_of(st.binary(max_size=400), _PLAYLISTS))
def test_any_bytes_parse_or_raise_our_error(body: bytes) -> None:
    try:
        playlist = parse_media_playlist(body)
    except RemoteProtocolError:
        return
    assert len(playlist.parts) <= body.count(b"#EXT-X-PART:")
    assert all(part[:2] < next_[:2] for part, next_ in zip(playlist.parts, playlist.parts[1:], strict=False))
    assert rendition_targets(TARGET, body) is not None


@settings(max_examples=200)
@given(st.lists(st.tuples(st.sampled_from([200, 200, 200, 404, 500]), st.one_of(_PLAYLISTS, st.binary(max_size=40))),
                max_size=40))  # fmt: skip
def test_the_follower_takes_any_answers_with_bounded_batches(answers: list[tuple[int, bytes]]) -> None:
    """Whatever the answers, the follower raises only ``RemoteProtocolError`` (then starts
    again), asks for at most ``MAX_BATCH_PARTS`` parts plus the init, the reload and the hint
    per batch, and keeps the part counts of at most a playlist's segments (plus a few)."""
    follower = RenditionFollower(TARGET)
    follower.start()
    for status, body in answers:
        try:
            batch = follower.receive(status, body)
        except RemoteProtocolError:
            follower.start()
            continue
        if follower.ended:
            follower.start()
            continue
        assert len(batch) <= MAX_BATCH_PARTS + 3 and follower.pending == len(batch)
        assert len(follower._closed) <= body.count(b"#EXTINF") + 8 + 2 * body.count(b"#EXTINF")
        if not follower.pending:
            follower.start()


def _reference(body: bytes) -> tuple[object, ...]:
    """What :func:`parse_media_playlist` reads, read line by line (the obvious way)."""
    sequence = skipped = segments = index = 0
    parts, closed = [], []
    hint = init = None
    can_skip = ended = False
    for line in body.split(b"\n"):
        if line.startswith(b"#EXT-X-MEDIA-SEQUENCE:"):
            sequence = int(line.split(b":")[1])
        elif line.startswith(b"#EXT-X-SKIP:"):
            skipped = int(line.split(b"=")[1])
        elif line.startswith(b"#EXT-X-PART:"):
            parts.append((sequence + skipped + segments, index, line.split(b'URI="')[1].split(b'"')[0]))
            index += 1
        elif line.startswith(b"#EXTINF"):
            if index:
                closed.append((sequence + skipped + segments, index))
            segments, index = segments + 1, 0
        elif line.startswith(b"#EXT-X-PRELOAD-HINT:TYPE=PART"):
            hint = line.split(b'URI="')[1].split(b'"')[0]
        elif line.startswith(b"#EXT-X-MAP:") and init is None:
            init = line.split(b'URI="')[1].split(b'"')[0]
        elif line.startswith(b"#EXT-X-SERVER-CONTROL:"):
            can_skip = b"CAN-SKIP-UNTIL" in line
        ended = ended or line == b"#EXT-X-ENDLIST"
    return (sequence + skipped + segments, index, parts, closed, hint, init, can_skip, ended)


def _read(body: bytes) -> tuple[object, ...]:
    playlist = parse_media_playlist(body)
    parts = [(msn, index, part_uri(line)) for msn, index, line in playlist.parts]
    return (playlist.open_msn, playlist.open_parts, parts, list(playlist.closed), playlist.hint, playlist.init,
            playlist.can_skip, playlist.ended)  # fmt: skip


@given(st.integers(0, 10**6), st.lists(st.integers(0, 8), max_size=8), st.integers(0, 8), st.integers(0, 20))
def test_the_parser_reads_what_a_line_by_line_reader_reads(first: int, segments: list[int], open_parts: int,
                                                           skipped: int) -> None:  # fmt: skip
    body = _playlist(first, segments, open_parts, skipped=skipped)
    assert _read(body) == _reference(body)
    playlist = parse_media_playlist(body)
    for since in range(first + skipped - 1, playlist.open_msn + 2):
        later = parse_media_playlist(body, since)
        assert later.parts == tuple(part for part in playlist.parts if part[0] >= since)
        assert later.closed == tuple(segment for segment in playlist.closed if segment[0] >= since)
        assert (later.open_msn, later.open_parts, later.hint) == (playlist.open_msn, playlist.open_parts, playlist.hint)
    for offset, count in enumerate(segments):
        assert playlist.segment_duration(first + skipped + offset) == round(0.3 * count, 3)


def test_targets_resolve_against_the_playlist_without_its_query() -> None:
    assert resolve(TARGET, b"v-1.0.m4s?token=t") == b"/live/demo/v-1.0.m4s?token=t"
    assert resolve(TARGET, b"/other/x.mp4") == b"/other/x.mp4"
    body = b'#EXTM3U\n#EXT-X-MEDIA:TYPE=AUDIO,URI="audio.m3u8?a=1"\n#EXT-X-STREAM-INF:BANDWIDTH=1\nvideo.m3u8?a=1\n'
    assert rendition_targets(b"/live/demo/index.m3u8?a=1", body) == [
        b"/live/demo/video.m3u8?a=1",
        b"/live/demo/audio.m3u8?a=1",
    ]


class _Server:
    """The server's renders of one packager, answering a follower's video requests; the
    packager advances (frames pushed) only while a request waits or the viewer stalls."""

    def __init__(self, deltas: bool) -> None:
        self.packager = CmafPackager(2.0, 1 / 3, 20)
        self.deltas = deltas
        self.position = 0
        self.made: list[str] = []
        self.known: set[str] = set()
        self.skip_requests = 0
        while not self.video or not self.video.segments:
            self.push()

    @property
    def video(self):  # type: ignore[no-untyped-def]
        return self.packager.renditions.get(FrameKind.VIDEO)

    def push(self) -> bool:
        if self.position >= len(FRAMES):
            return False
        frame = FRAMES[self.position]
        self.position += 1
        self.packager.push(frame, 1e9 + frame.dts / 1000)
        video = self.video
        if video is not None:
            parts = [p.name for s in video.segments[-2:] for p in s.parts] + [p.name for p in video.open_parts]
            for name in parts:
                if name not in self.known:
                    self.known.add(name)
                    self.made.append(name)
        return True

    def answer(self, target: bytes) -> tuple[int, bytes]:
        path, _, query = target.decode().partition("?")
        name = path.rpartition("/")[2]
        if name == "video.m3u8":
            directives = parse_qs(query)
            if "_HLS_msn" in directives:
                msn, part = int(directives["_HLS_msn"][0]), int(directives["_HLS_part"][0])
                while (state := reload_state(self.packager, FrameKind.VIDEO, msn, part)) is ReloadState.WAIT:
                    if not self.push():
                        return 503, b""
                if state is ReloadState.TOO_FAR:
                    return 400, b""
            skip = "_HLS_skip" in directives
            self.skip_requests += skip
            text = media_playlist(self.packager, FrameKind.VIDEO, low_latency=True, deltas=self.deltas, skip=skip)
            assert _read(text.encode()) == _reference(text.encode())  # the server's renders read as they are
            return 200, text.encode()
        if name.endswith(".mp4"):
            return 200, b"init"
        sequence, index = (int(n) for n in name[2:-4].split("."))
        while name not in self.known:  # the hinted part: answered once it exists, 404 once it never will
            video = self.video
            if video.open_sequence is not None and video.open_sequence > sequence or not self.push():
                return 404, b""
        return 200, name.encode()


def follow(server: _Server, stalls: list[int]) -> tuple[RenditionFollower, list[str]]:
    """Follow until the clip ends, the packager going ``stalls[n]`` frames on before the n-th
    batch is answered (cycling); the parts fetched, in order."""
    follower = RenditionFollower(TARGET)
    batch = follower.start()
    fetched: list[str] = []
    turn = 0
    while batch:
        for _ in range(stalls[turn % len(stalls)]):
            server.push()
        turn += 1
        targets, batch = batch, []
        for target in targets:
            status, body = server.answer(target)
            if status == 503:  # the clip ended
                return follower, fetched
            if status == 200 and body.startswith(b"v-"):
                fetched.append(body.decode())
            batch = follower.receive(status, body)
    return follower, fetched


def skipped_runs(made: list[str], fetched: list[str]) -> int:
    places = [made.index(name) for name in fetched]
    assert places == sorted(places) and len(set(places)) == len(places)  # in order, each once
    return sum(1 for before, after in zip(places, places[1:], strict=False) if after != before + 1)


def test_a_follower_of_the_servers_playlists_fetches_every_part_in_order() -> None:
    """No stall: from the live edge on, every part the packager made, in order, no gap; with
    delta updates advertised, the blocking reloads ask for them."""
    for deltas in (False, True):
        server = _Server(deltas)
        follower, fetched = follow(server, [0])
        start = server.made.index(fetched[0])
        assert fetched == server.made[start : start + len(fetched)]
        assert len(fetched) > 60 and follower.counts.gaps == 0
        assert follower.counts.parts == len(fetched)
        assert (server.skip_requests > 0) == deltas


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.integers(0, 30), st.integers(200, 1200)), min_size=1, max_size=4), st.booleans())
def test_a_gap_is_counted_exactly_once_per_run_of_skipped_parts(stalls: list[int], deltas: bool) -> None:
    """A viewer that stalls for up to 1200 frames (~16 s, past the parts' window of the
    playlist) before some batches: its gap count is the number of runs of parts missing between
    the parts it fetched. Mutants killed: a gap per missing part, no gap for a part that left
    the playlist, a gap when the last part of a segment is followed by the first of the next
    segment after a stall (the ``#EXTINF`` duration check)."""
    server = _Server(deltas)
    follower, fetched = follow(server, stalls)
    assert follower.counts.gaps == skipped_runs(server.made, fetched)
    assert follower.counts.parts == len(fetched)


def _playlist(first: int, segments: list[int], open_parts: int, *, skipped: int = 0) -> bytes:
    """An LL-HLS playlist: segments of ``segments[k]`` parts from ``first`` (after ``skipped``),
    then ``open_parts`` parts of the open segment and its hint."""
    lines = [b"#EXTM3U", b"#EXT-X-PART-INF:PART-TARGET=0.334", b"#EXT-X-MEDIA-SEQUENCE:%d" % first]
    if skipped:
        lines.append(b"#EXT-X-SKIP:SKIPPED-SEGMENTS=%d" % skipped)
    msn = first + skipped
    for count in segments:
        lines += [b'#EXT-X-PART:DURATION=0.300,URI="v-%d.%d.m4s"' % (msn, i) for i in range(count)]
        lines += [b"#EXTINF:%.3f," % (0.3 * count), b"v-%d.m4s" % msn]
        msn += 1
    lines += [b'#EXT-X-PART:DURATION=0.300,URI="v-%d.%d.m4s"' % (msn, i) for i in range(open_parts)]
    lines.append(b'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="v-%d.%d.m4s"' % (msn, open_parts))
    return b"\n".join(lines) + b"\n"


def test_listed_parts_answered_404_in_a_row_are_one_gap_and_delta_updates_number_parts() -> None:
    """Two listed parts gone before their turn (404 each) are one run: one gap; the part after
    them is no new gap. A delta update (``EXT-X-SKIP``) numbers its parts after the skipped
    segments. Mutant killed: a gap per part lost."""
    follower = RenditionFollower(TARGET)
    follower.start()
    batch = follower.receive(200, _playlist(5, [], 2))
    assert batch == [b"/live/demo/v-5.1.m4s", b"/live/demo/video.m3u8?token=t&_HLS_msn=5&_HLS_part=2",
                     b"/live/demo/v-5.2.m4s"]  # fmt: skip
    for status, body in [(200, b"p"), (200, _playlist(5, [], 5)), (200, b"p")]:
        batch = follower.receive(status, body)
    assert batch[:2] == [b"/live/demo/v-5.3.m4s", b"/live/demo/v-5.4.m4s"]
    for status, body in [(404, b""), (404, b""), (200, _playlist(5, [], 6)), (200, b"p")]:
        batch = follower.receive(status, body)
    assert follower.counts.gaps == 1 and follower.counts.parts == 3
    assert batch[0] == b"/live/demo/video.m3u8?token=t&_HLS_msn=5&_HLS_part=6"
    delta = parse_media_playlist(_playlist(1, [6], 0, skipped=4))  # segment 5 complete (6 parts), 6 open
    assert delta.parts[0][:2] == (5, 0) and (delta.open_msn, delta.open_parts) == (6, 0)
    assert delta.closed == ((5, 6),)
