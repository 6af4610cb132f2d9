"""The playback routes over HTTP: the VOD playlist, byte ranges of the recorded files, the MP4 of a
span, MediaMTX's ``/get`` and ``/list``; strict, bounded parameters; authorization exactly as
live playback (signed URLs: a play signature for the stream plays its recordings, a publish one
or another stream's does not, byte ranges included).

Recordings are made with the project's fMP4 muxer (:mod:`tests._playback`) and read through the
recorder's catalog; the engine's plugin that serves them is a stand-in for the recording service
(its ``playback``).

Error policy: nothing is caught; every exchange is bounded by ``http_get``'s ``fail_after``.
"""

from __future__ import annotations

import json
import pathlib
import time
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arcly_trio.core.frame import FrameKind
from arcly_trio.core.keys import StreamKey
from arcly_trio.kernel.throttle import AuthThrottle
from arcly_trio.ops.signing import SignedUrlAuthenticator, nms_sign
from arcly_trio.protocols.http.router import BadRequest
from arcly_trio.services.recordings.catalog import Catalog
from arcly_trio.services.recordings.mp4scan import scan_bytes
from arcly_trio.services.recordings.playback import Playback
from arcly_trio.services.recordings.vod import program_date
from arcly_trio.workers.http.playback_routes import RangeNotSatisfiable, parse_duration, parse_range, parse_time
from tests._playback import KEY, T0, Recordings, demo_frames, record_sessions, two_sessions
from tests._serving import serving

START = quote(program_date(T0 + 5).replace(".000", ""))  # 2026-12-07T01:34:17Z


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, list[Any]]:
    return two_sessions(tmp_path_factory.mktemp("recordings"))


def recordings(recording: tuple[pathlib.Path, list[Any]]) -> Recordings:
    return Recordings(Playback(Catalog(recording[0])))  # the recorder's catalog reads the index


# --------------------------------------------------------------------------- parameters


def test_times_are_rfc_3339_with_a_zone() -> None:
    assert parse_time("2026-12-07T01:34:12Z") == T0
    assert parse_time("2026-12-07t01:34:12.25z") == T0 + 0.25
    assert parse_time("2026-12-07T02:34:12+01:00") == T0
    assert parse_time("2026-12-07T02:34:12 01:00") == T0  # a '+' a form encoding made a space
    assert parse_time("2026-12-07T00:34:12-01:00") == T0
    for bad in ("2026-12-07T01:34:12", "2026-12-07 01:34:12Z", "1796607252", "2026-13-07T01:34:12Z",
                "2026-02-30T01:34:12Z", "2026-12-07T25:00:00Z", "2026-12-07T01:34:12+01:99", "",
                "0000-01-01T00:00:00Z", "2026-12-07T01:34:12.1234567890Z", "x" * 10_000):  # fmt: skip
        with pytest.raises(BadRequest):
            parse_time(bad)


@settings(max_examples=300, deadline=None)
@given(
    st.text(max_size=80)
    | st.from_regex(
        r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+ -][0-9]{2}:[0-9]{2})",
        fullmatch=True,
    )
)
def test_any_text_is_a_time_or_a_400(text: str) -> None:
    try:
        epoch = parse_time(text)
    except BadRequest as exc:
        assert exc.status == 400
    else:
        assert 0 <= epoch < 253370764800


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40) | st.from_regex(r"bytes=[0-9]{0,4}-[0-9]{0,4}", fullmatch=True), st.integers(0, 5000))
def test_any_range_header_is_a_range_within_the_file_the_whole_file_or_a_416(header: str, size: int) -> None:
    try:
        found = parse_range(header, size)
    except RangeNotSatisfiable:
        return
    assert found is None or 0 <= found[0] <= found[1] < size


def test_durations_are_positive_and_at_most_a_day() -> None:
    assert parse_duration("60") == 60 and parse_duration("12.5") == 12.5 and parse_duration("86400") == 86400
    for bad in ("0", "0.0", "-1", "86400.001", "1e3", "nan", "inf", " 5", "5s", "", "9" * 40):
        with pytest.raises(BadRequest):
            parse_duration(bad)


def test_byte_ranges() -> None:
    assert parse_range(None, 100) is None
    assert parse_range("bytes=0-9", 100) == (0, 9)
    assert parse_range("bytes=90-", 100) == (90, 99)
    assert parse_range("bytes=90-500", 100) == (90, 99)
    assert parse_range("bytes=-10", 100) == (90, 99)
    assert parse_range("bytes=-500", 100) == (0, 99)
    for ignored in ("bytes=0-1,5-9", "items=0-9", "bytes=9-0", "bytes=-", "bytes=a-b", "bytes=" + "9" * 30 + "-"):
        assert parse_range(ignored, 100) is None
    for past in ("bytes=100-", "bytes=100-200", "bytes=-0"):
        with pytest.raises(RangeNotSatisfiable) as refused:
            parse_range(past, 100)
        assert refused.value.status == 416 and refused.value.headers == (("content-range", "bytes */100"),)


# --------------------------------------------------------------------------- routes


async def test_the_playlist_and_its_byte_ranges(recording: tuple[pathlib.Path, list[Any]], http_get: Any) -> None:
    root, records = recording
    async with serving(services=(recordings(recording),)) as served:
        port = served.http.port
        status, headers, body = await http_get(port, f"/live/cam/playback.m3u8?start={START}&duration=10")
        assert status == 200 and headers["content-type"] == "application/vnd.apple.mpegurl", body
        text = body.decode()
        assert "#EXT-X-PLAYLIST-TYPE:VOD" in text and text.rstrip().endswith("#EXT-X-ENDLIST")
        assert f"#EXT-X-PROGRAM-DATE-TIME:{program_date(T0 + 4)}" in text  # the keyframe before 5 s
        lines = text.splitlines()
        uri = next(line for line in lines if line and not line.startswith("#"))
        length, _, offset = next(line for line in lines if line.startswith("#EXT-X-BYTERANGE:"))[17:].partition("@")
        assert uri == f"playback/{records[1].file}"
        data = (root / "live/cam" / records[1].file).read_bytes()
        # The range it names: exactly those bytes, a moof first.
        first, last = int(offset), int(offset) + int(length) - 1
        status, headers, body = await http_get(port, f"/live/cam/{uri}", headers=[("range", f"bytes={first}-{last}")])
        assert status == 206 and body == data[first : last + 1] and body[4:8] == b"moof"
        assert headers["content-range"] == f"bytes {first}-{last}/{len(data)}"
        status, headers, body = await http_get(port, f"/live/cam/{uri}")
        assert status == 200 and body == data and headers["accept-ranges"] == "bytes"
        status, headers, _ = await http_get(port, f"/live/cam/{uri}", headers=[("range", f"bytes={len(data)}-")])
        assert status == 416 and headers["content-range"] == f"bytes */{len(data)}"
        status, headers, body = await http_get(port, f"/live/cam/{uri}", method="HEAD")
        assert status == 200 and body == b"" and headers["content-length"] == str(len(data))


async def test_the_file_after_a_reconnect_is_served_on_the_playlists_timeline(
    recording: tuple[pathlib.Path, list[Any]], http_get: Any
) -> None:
    # The second session's decode times start again from 0: the playlist asks for them moved so
    # they follow the first session's (ffmpeg's MP4 reader drops a fragment that goes back).
    root, records = recording
    async with serving(services=(recordings(recording),)) as served:
        port = served.http.port
        status, _, body = await http_get(port, f"/live/cam/playback.m3u8?start={START}&duration=10")
        lines = body.decode().splitlines()
        uris = [line for line in lines if line and not line.startswith("#")]
        ranges = [line[17:].partition("@") for line in lines if line.startswith("#EXT-X-BYTERANGE:")]
        queries = [uri.partition("?")[2] for uri in uris]  # 4..10 s of session 1, then 0..3 s of session 2
        assert queries[:2] == ["", ""] and queries[2].startswith("shift=1004") and len(queries) == 3
        assert all("shift" not in line for line in lines if line.startswith("#EXT-X-MAP"))
        init_length = int(next(line for line in lines if line.startswith("#EXT-X-MAP")).split('"')[3].partition("@")[0])
        times = []
        for uri, (length, _, offset) in zip(uris, ranges, strict=True):
            first, last = int(offset), int(offset) + int(length) - 1
            status, _, init = await http_get(
                port, f"/live/cam/{uri}", headers=[("range", f"bytes=0-{init_length - 1}")]
            )
            status, _, data = await http_get(port, f"/live/cam/{uri}", headers=[("range", f"bytes={first}-{last}")])
            assert status == 206
            times += [f.start for f in scan_bytes(init + data).fragments]
        assert all(0.9 < b - a < 1.1 for a, b in zip(times, times[1:])), times  # one timeline, 1 s fragments
        assert len(times) == 9
        original = (root / "live/cam" / uris[-1].partition("?")[0].rpartition("/")[2]).read_bytes()
        first, last = int(ranges[-1][2]), int(ranges[-1][2]) + int(ranges[-1][0]) - 1
        status, _, moved = await http_get(
            port, f"/live/cam/{uris[-1]}", headers=[("range", f"bytes={first + 10}-{last}")]
        )
        assert len(moved) == last - first - 9 and moved != original[first + 10 : last + 1]  # same size, times moved
        status, _, _ = await http_get(port, f"/live/cam/{uris[-1].partition('?')[0]}?shift=1.5")
        assert status == 400


async def test_the_mp4_of_a_span_and_mediamtxs_get_and_list(
    recording: tuple[pathlib.Path, list[Any]], http_get: Any
) -> None:
    async with serving(services=(recordings(recording),)) as served:
        port = served.http.port
        status, headers, body = await http_get(port, f"/live/cam/playback.mp4?start={START}&duration=9")
        assert status == 200 and headers["content-type"] == "video/mp4"
        index = scan_bytes(body)
        # From the keyframe at 4 s to 10 s, then (the 2 s between sessions left out) 12 s to 14 s.
        assert index.problem is None and index.init_size and abs(index.fragments[-1].end - 8.0) < 0.15
        assert headers["content-length"] == str(len(body)) and headers["accept-ranges"] == "bytes"
        target = f"/live/cam/playback.mp4?start={START}&duration=9"
        status, headers, part = await http_get(port, target, headers=[("range", "bytes=5000-90000")])
        assert status == 206 and part == body[5000:90001]
        assert headers["content-range"] == f"bytes 5000-90000/{len(body)}"
        status, headers, _ = await http_get(port, target, headers=[("range", f"bytes={len(body)}-")])
        assert status == 416
        status, headers, empty = await http_get(port, target, method="HEAD")
        assert status == 200 and empty == b"" and headers["content-length"] == str(len(body))
        status, _, same = await http_get(port, f"/get?path=live/cam&start={START}&duration=9&format=fmp4")
        assert status == 200 and same == body
        status, _, listed = await http_get(port, "/list?path=live/cam")
        assert status == 200
        spans = json.loads(listed)
        assert [s["start"] for s in spans] == ["2026-12-07T01:34:12Z", "2026-12-07T01:34:24Z"]
        assert all(abs(s["duration"] - 10.04) < 0.01 for s in spans)
        status, _, again = await http_get(port, spans[0]["url"])
        assert status == 200 and scan_bytes(again).fragments


async def test_an_mp4_stops_where_the_publisher_came_back_with_other_tracks(
    tmp_path: pathlib.Path, http_get: Any
) -> None:
    frames = demo_frames()
    record_sessions(tmp_path, KEY, [(T0, frames), (T0 + 11, [f for f in frames if f.kind is FrameKind.VIDEO])])
    async with serving(services=(Recordings(Playback(Catalog(tmp_path))),)) as served:
        target = f"/live/cam/playback.mp4?start={quote('2026-12-07T01:34:12Z')}&duration=30"
        status, headers, body = await http_get(served.http.port, target)
    assert status == 200 and "tracks change" in headers["x-playback-stopped"]
    assert abs(scan_bytes(body).fragments[-1].end - 10.0) < 0.1


@pytest.mark.parametrize(
    "target",
    [
        "/live/cam/playback.m3u8",
        "/live/cam/playback.m3u8?start=yesterday&duration=10",
        f"/live/cam/playback.m3u8?start={START}",
        f"/live/cam/playback.m3u8?start={START}&duration=0",
        f"/live/cam/playback.m3u8?start={START}&duration=86401",
        f"/live/cam/playback.mp4?start={START}&duration=-5",
        f"/get?start={START}&duration=5",
        f"/get?path=nope&start={START}&duration=5",
        f"/get?path=live/cam&start={START}&duration=5&format=flv",
        "/list?path=live/cam&start=2026-12-07T01:34:12Z&end=2026-12-07T01:34:12Z",
        "/live/cam/playback.m3u8?start=9999-12-31T23:00:00Z&duration=86400",
        f"/bad%20app/cam/playback.m3u8?start={START}&duration=5",
    ],
)
async def test_bad_parameters_are_400(recording: tuple[pathlib.Path, list[Any]], http_get: Any, target: str) -> None:
    async with serving(services=(recordings(recording),)) as served:
        status, _, body = await http_get(served.http.port, target)
        assert status == 400, body


async def test_nothing_recorded_is_404(recording: tuple[pathlib.Path, list[Any]], http_get: Any) -> None:
    async with serving(services=(recordings(recording),)) as served:
        port = served.http.port
        late = quote("2026-12-07T02:00:00Z")
        for target, expected in (
            (f"/live/cam/playback.m3u8?start={late}&duration=10", 404),
            (f"/live/other/playback.mp4?start={START}&duration=10", 404),
            ("/live/cam/playback/20261207T013413.000000Z.mp4", 404),  # no such file
            ("/live/cam/playback/index.jsonl", 404),  # not a recording's name
            ("/live/cam/playback/..%2Findex.jsonl", 400),  # a '..' segment once decoded
            ("/list?path=live/other", 404),
        ):
            status, _, body = await http_get(port, target)
            assert status == expected, (target, status, body)
    async with serving() as served:  # a server that does not record
        status, _, body = await http_get(served.http.port, f"/live/cam/playback.m3u8?start={START}&duration=10")
        assert status == 404 and b"does not record" in body


async def test_a_play_signature_for_the_stream_plays_its_recordings_and_nothing_else(
    recording: tuple[pathlib.Path, list[Any]], http_get: Any
) -> None:
    auth = SignedUrlAuthenticator("play-secret", publish_secret="publish-secret", jwt=False)
    expiry = int(time.time()) + 600
    play = nms_sign("live", "cam", expiry, "play-secret")
    other = nms_sign("live", "other", expiry, "play-secret")
    publish = nms_sign("live", "cam", expiry, "publish-secret")
    async with serving(services=(recordings(recording),), authenticator=auth) as served:
        served.engine.gate.throttle = AuthThrottle(base_delay=0.001, max_delay=0.001)  # refusals in a row
        port = served.http.port
        span = f"start={START}&duration=10"
        status, _, body = await http_get(port, f"/live/cam/playback.m3u8?{span}&sign={play}")
        assert status == 200
        uris = [line for line in body.decode().splitlines() if line and not line.startswith("#")]
        assert uris and all(uri.endswith(f"sign={play}") for uri in uris)  # handed on to the segments
        status, _, _ = await http_get(port, f"/live/cam/{uris[0]}", headers=[("range", "bytes=0-99")])
        assert status == 206
        for target, expected in (
            (f"/live/cam/playback.m3u8?{span}", 401),
            (f"/live/cam/playback.m3u8?{span}&sign={other}", 403),
            (f"/live/cam/playback.m3u8?{span}&sign={publish}", 403),
            (f"/live/cam/playback.mp4?{span}&sign={publish}", 403),
            (f"/get?path=live/cam&{span}&sign={other}", 403),
            (f"/list?path=live/cam&sign={other}", 403),
            (f"/live/cam/{uris[0].partition('?')[0]}", 401),
            (f"/live/cam/{uris[0].partition('?')[0]}?sign={other}", 403),
        ):
            status, _, body = await http_get(port, target)
            assert status == expected, (target, body)
        status, _, _ = await http_get(port, f"/list?path=live/cam&sign={play}")
        assert status == 200


async def test_the_routes_come_before_hls_segment_names(http_get: Any) -> None:
    # /{app}/{stream}/{segment} of the HLS service would take playback.m3u8 for a segment name.
    async with serving(hls=True) as served:
        status, _, body = await http_get(served.http.port, f"/live/cam/playback.m3u8?start={START}&duration=5")
        assert status == 404 and b"does not record" in body


def test_stream_key_of_the_fixture() -> None:
    assert KEY == StreamKey("live", "cam")
