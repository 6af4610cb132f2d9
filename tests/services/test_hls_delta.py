"""LL-HLS Playlist Delta Updates (``_HLS_skip=YES``, RFC 8216bis 6.2.5.1) of DVR windows (issue 26).

The render (:func:`arcly_trio.media.llhls.media_playlist` with ``skip``): at every push of a
long stream (the window sliding, discontinuities, one right after the boundary, the end), the delta is
the full playlist with its segments older than the Skip Boundary replaced by one ``EXT-X-SKIP``
(their count), the same media and discontinuity sequence numbers, version 9, and the first kept
segment's discontinuity, ``EXT-X-MAP`` and program date time. Through the HTTP route (an
in-process server, an ``ll`` application with a DVR window): ``_HLS_skip=YES`` answers the
delta, whose segments are the full playlist's tail, with blocking reload and the session's query;
invalid values get ``400``.
"""

from __future__ import annotations

import re
from urllib.parse import quote

import m3u8
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from arcly_trio.core.errors import RemoteProtocolError
from arcly_trio.core.frame import FrameKind
from arcly_trio.media.cmaf import CmafPackager
from arcly_trio.media.llhls import SegmentMemo, media_playlist, parse_skip, skip_until
from tests.services.test_dvr import looped
from tests.services.test_dvr_interop import dvr_server, get, publishing, window_of

_SKIP = re.compile(r"#EXT-X-SKIP:SKIPPED-SEGMENTS=([0-9]+)\n")


def _segment_blocks(text: str) -> list[str]:
    """The playlist's segments, each as the text of its lines up to its URI line."""
    body = text.split("#EXT-X-MEDIA-SEQUENCE:", 1)[1].split("\n", 1)[1]
    blocks, current = [], []
    for line in body.splitlines():
        current.append(line)
        if line and not line.startswith("#"):
            blocks.append("\n".join(current))
            current = []
    return blocks


def test_the_delta_replaces_the_segments_before_the_skip_boundary(demo_frames) -> None:  # type: ignore[no-untyped-def]
    packager = CmafPackager(2.0, 1 / 3, 20, name_prefix="t-")
    memos = {kind: SegmentMemo() for kind in (FrameKind.VIDEO, FrameKind.AUDIO)}
    frames = looped(demo_frames, 5)
    deltas = after_discontinuity = 0
    cut_at = len(frames) // 2
    for index, frame in enumerate(frames):
        if index == len(frames) // 3 or (index > cut_at and frame.kind is FrameKind.VIDEO and frame.keyframe):
            packager.discontinuity()  # mid-segment (a short one before it); then at a keyframe, after a whole one
            cut_at = len(frames) if index > cut_at else cut_at
        packager.push(frame, 1e9 + frame.dts / 1000)
        if index % 5 and index != len(frames) - 1:
            continue
        for kind, rendition in packager.renditions.items():
            full = media_playlist(packager, kind, low_latency=True, memo=memos[kind], deltas=True)
            assert f"CAN-SKIP-UNTIL={skip_until(packager):.3f}," in full and "#EXT-X-VERSION:7\n" in full
            assert full == media_playlist(packager, kind, low_latency=True, deltas=True)  # the memo's text too
            delta = media_playlist(packager, kind, low_latency=True, deltas=True, skip=True)
            found = _SKIP.search(delta)
            segments = rendition.segments
            if found is None:  # nothing older than the boundary yet: the full playlist
                assert delta == full and sum(s.duration for s in segments) <= 12 + 1e-6
                continue
            deltas += 1
            skipped = int(found.group(1))
            assert "#EXT-X-VERSION:9\n" in delta
            # the boundary: what is kept starts within 12 s (six targets) of the end, one more would not
            kept = sum(s.duration for s in segments[skipped:])
            assert kept <= 12 + 1e-6 < kept + segments[skipped - 1].duration
            head, tail = full.split("#EXT-X-MEDIA-SEQUENCE:", 1)
            assert delta.startswith(head.replace("#EXT-X-VERSION:7", "#EXT-X-VERSION:9") + "#EXT-X-MEDIA-SEQUENCE:")
            assert f"#EXT-X-MEDIA-SEQUENCE:{segments[0].sequence}\n" in delta and tail.startswith(
                f"{segments[0].sequence}\n"
            )
            for tag in ("#EXT-X-DISCONTINUITY-SEQUENCE:",):
                assert (tag in delta) == (tag in full) and delta.split(tag)[1:2] == full.split(tag)[1:2]
            blocks, kept_blocks = _segment_blocks(full), _segment_blocks(delta.replace(found.group(0), ""))
            assert len(blocks) - len(kept_blocks) == skipped
            first = segments[skipped]
            # the first kept segment: its discontinuity, its init segment and its date, whatever came before
            assert kept_blocks[0].startswith("#EXT-X-DISCONTINUITY\n" if first.discontinuity else "#EXT-X-MAP:")
            after_discontinuity += first.discontinuity
            assert f'#EXT-X-MAP:URI="{first.init}"\n#EXT-X-PROGRAM-DATE-TIME:' in kept_blocks[0]
            assert kept_blocks[1:] == blocks[skipped + 1 :]
            assert delta.endswith(full[full.index(blocks[-1]) + len(blocks[-1]) :])  # parts, hint, reports
    assert deltas > 50 and after_discontinuity
    packager.finish()
    for kind in packager.renditions:
        delta = media_playlist(packager, kind, low_latency=True, deltas=True, skip=True)
        assert _SKIP.search(delta) and delta.endswith("#EXT-X-ENDLIST\n")
        parsed = m3u8.loads(delta)
        assert parsed.version == 9 and parsed.media_sequence == packager.renditions[kind].segments[0].sequence
    # no skip without deltas, nor without LL-HLS
    for options in ({"low_latency": True}, {"low_latency": False, "deltas": True}):
        text = media_playlist(packager, FrameKind.VIDEO, skip=True, **options)  # type: ignore[arg-type]
        assert "SKIP" not in text and "#EXT-X-VERSION:7\n" in text


def test_skip_directives_are_parsed_strictly() -> None:
    assert parse_skip({}) is False and parse_skip({"_HLS_msn": "3"}) is False
    assert parse_skip({"_HLS_skip": "YES"}) and parse_skip({"_HLS_skip": "v2"})
    for bad in ("yes", "NO", "", "v3", "YES\x00"):
        with pytest.raises(RemoteProtocolError, match="_HLS_skip"):
            parse_skip({"_HLS_skip": bad})


@given(st.dictionaries(st.sampled_from(["_HLS_skip", "_HLS_msn", "token"]), st.text(max_size=8)))
def test_arbitrary_skip_values_raise_only_our_error(query: dict[str, str]) -> None:
    try:
        skip = parse_skip(query)
    except RemoteProtocolError:
        assert query["_HLS_skip"] not in ("YES", "v2")
        return
    assert skip == ("_HLS_skip" in query)


def _uris(playlist: m3u8.M3U8) -> list[str]:
    """The segments' URIs without their query (each request here begins a session of its own)."""
    return [segment.uri.partition("?")[0] for segment in playlist.segments if segment.uri]


async def test_a_skip_request_gets_the_delta_update_whose_segments_end_the_full_playlist() -> None:
    async with dvr_server() as (engine, port), publishing(engine, burst=24):
        first = await window_of(port, 20)
        assert first.server_control["can_skip_until"] == 12
        msn = first.media_sequence + len(_uris(first))  # the next segment: a blocking reload
        compared = False
        with trio.fail_after(30):
            for _ in range(5):  # until no segment comes between the two requests
                status, body = await get(port, f"/dvr/demo/video.m3u8?_HLS_msn={msn}&_HLS_skip=YES&token=a%20b")
                status_full, body_full = await get(port, f"/dvr/demo/video.m3u8?_HLS_msn={msn}&token=a%20b")
                assert (status, status_full) == (200, 200), body
                delta, full = m3u8.loads(body.decode()), m3u8.loads(body_full.decode())
                if _uris(delta)[-1] == _uris(full)[-1]:
                    compared = True
                    break
        assert compared, (body.decode()[-600:], body_full.decode()[-600:])
        skipped = delta.skip.skipped_segments
        assert delta.version == 9 and full.version == 7 and skipped >= 4
        assert delta.media_sequence == full.media_sequence and len(_uris(full)) > skipped
        assert _uris(delta) == _uris(full)[skipped:]
        uris = [segment.uri for segment in delta.segments if segment.uri]
        assert all(re.fullmatch(r"[^?]+\.m4s\?token=a\+b&arcly_session=[^&]+", uri) for uri in uris), uris
        assert delta.segments[0].program_date_time is not None
        for bad in ("no", "YES%00", quote("v2 ")):
            status, body = await get(port, f"/dvr/demo/video.m3u8?_HLS_skip={bad}")
            assert status == 400 and b"_HLS_skip" in body, (bad, body)
