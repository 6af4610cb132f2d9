"""The recordings API over the HTTP worker: spans listed from the catalog with bounded, checked
parameters (clear 400s), the API token on listing and control, on-demand start and stop with an
audit record that says who asked, and the ``on_event`` hook's recording-start / recording-done."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio

from arcly_trio import AppSpec
from arcly_trio.core.keys import StreamKey
from arcly_trio.ops import AuditPipeline, MemorySink
from arcly_trio.protocols.http.router import BadRequest
from arcly_trio.services.recordings import Recorder
from arcly_trio.services.recordings.catalog import SegmentRecord, append_index, index_line, segment_name
from arcly_trio.services.recordings.routes import parse_time
from arcly_trio.testing.frames import real_stream
from tests._serving import serving

T0 = 1796607252.123456
KEY = StreamKey("live", "cam")
TOKEN = [("authorization", "Bearer s3cret")]


def seed(root: Path, key: StreamKey, starts: list[tuple[float, float, str]]) -> None:
    directory = root / key.app / key.name
    directory.mkdir(parents=True, exist_ok=True)
    lines = []
    for start, duration, session in starts:
        record = SegmentRecord(segment_name(start), start, duration, 1000, ("avc1.4d401e", "mp4a.40.2"), session, True)
        (directory / record.file).write_bytes(b"x")
        lines.append(index_line(record))
    append_index(directory, lines)


def test_times_are_iso_8601_or_epoch_seconds() -> None:
    assert parse_time("2026-12-07T01:34:12.123456Z", "from") == pytest.approx(T0)
    assert parse_time("2026-12-07T01:34:12.123456", "from") == pytest.approx(T0)  # UTC without an offset
    assert parse_time("2026-12-07T02:34:12.123456+01:00", "from") == pytest.approx(T0)
    assert parse_time(str(T0), "to") == pytest.approx(T0)
    for bad in ("", "yesterday", "nan", "inf", "-5", "1e300", "9" * 50, "2026-13-01"):
        with pytest.raises(BadRequest):
            parse_time(bad, "from")


async def test_listing_answers_spans_from_the_index(tmp_path: Path, http_get: Any) -> None:
    seed(tmp_path, KEY, [(T0, 10, "a"), (T0 + 10, 10, "a"), (T0 + 20, 5, "b")])
    seed(tmp_path, StreamKey("other", "x"), [(T0, 4, "c")])
    recorder = Recorder(tmp_path)
    async with serving(AppSpec("live"), services=(recorder,), api_token="s3cret") as served:
        port = served.http.port
        status, _, _ = await http_get(port, "/api/recordings")
        assert status == 401
        status, _, body = await http_get(port, "/api/recordings", TOKEN)
        document = json.loads(body)
        assert status == 200 and document["count"] == 2 and not document["truncated"]
        cam = next(r for r in document["recordings"] if r["key"] == "live/cam")
        assert [(s["start_epoch"], s["duration"], s["session"]) for s in cam["spans"]] == [
            (T0, 20, "a"),
            (T0 + 20, 5, "b"),
        ]
        assert cam["spans"][0]["start"] == "2026-12-07T01:34:12.123456Z"
        assert cam["spans"][0]["codecs"] == ["avc1.4d401e", "mp4a.40.2"] and cam["spans"][0]["bytes"] == 2000
        status, _, body = await http_get(port, "/api/recordings?app=live&stream=cam&from=2026-12-07T01:34:35Z", TOKEN)
        assert [s["session"] for s in json.loads(body)["recordings"][0]["spans"]] == ["b"]
        status, _, body = await http_get(port, f"/api/recordings?app=other&to={T0 - 1}", TOKEN)
        assert json.loads(body)["recordings"] == []
        status, _, body = await http_get(port, "/api/recordings/live/cam", TOKEN)
        assert [s["file"] for s in json.loads(body)["segments"]] == [segment_name(T0 + 10 * i) for i in range(3)]
        for target, reason in [
            ("/api/recordings?app=a%20b", b"application name"),
            ("/api/recordings?stream=..x", b"stream name"),
            ("/api/recordings?from=soon", b"from=soon is not an ISO 8601 time"),
            (f"/api/recordings?from={T0 + 5}&to={T0}", b"from is after to"),
            ("/api/recordings?to=1e999", b"to is outside"),
            ("/api/recordings/live/a%20b", b"stream name"),
        ]:
            status, _, body = await http_get(port, target, TOKEN)
            assert status == 400 and reason in body, (target, body)


async def test_start_and_stop_on_demand_are_admin_and_audited(tmp_path: Path, http_get: Any) -> None:
    sink = MemorySink()
    audit = AuditPipeline(sink)
    recorder = Recorder(tmp_path, segment_seconds=60)
    observer: Any = audit
    async with serving(AppSpec("live"), services=(recorder,), observer=observer, api_token="s3cret") as served:
        engine, port = served.engine, served.http.port
        status, _, _ = await http_get(port, "/api/recordings/live/cam", method="POST")
        assert status == 401 and not recorder.requested
        status, _, body = await http_get(port, "/api/recordings/live/cam", TOKEN, method="POST")
        assert status == 200 and json.loads(body) == {"key": "live/cam", "requested": True, "recording": False}
        frames = real_stream()
        async with engine.publish("live/cam") as publisher:
            with trio.fail_after(10):
                while not recorder.recording(KEY):
                    await publisher.send(next(frames))
                for _ in range(100):
                    await publisher.send(next(frames))
            status, _, body = await http_get(port, "/api/recordings?app=live", TOKEN)
            assert json.loads(body)["recordings"][0]["recording"] is True
            status, _, body = await http_get(port, "/api/recordings/live/cam", TOKEN, method="DELETE")
            assert status == 200 and json.loads(body)["was_recording"] is True
            with trio.fail_after(10):
                while recorder.recording(KEY):
                    await publisher.send(next(frames))
        with trio.fail_after(5):
            while len([r for r in sink.records if r["event"].startswith("recording-")]) < 2:
                await trio.sleep(0.01)
    control = [r for r in sink.records if r["event"].startswith("recording-")]
    assert [(r["event"], r["app"], r["stream"]) for r in control] == [
        ("recording-start", "live", "cam"),
        ("recording-stop", "live", "cam"),
    ]
    assert all(r["by"] == "api-token holder at 127.0.0.1" for r in control)
    (segment,) = await recorder.catalog.segments(KEY)
    assert segment.final and segment.duration > 0


async def test_control_needs_a_local_request_without_a_token(tmp_path: Path, http_get: Any) -> None:
    recorder = Recorder(tmp_path)
    async with serving(AppSpec("live"), services=(recorder,)) as served:
        port = served.http.port
        proxied = [("x-forwarded-for", "203.0.113.9")]  # a request through a proxy is not local
        status, _, _ = await http_get(port, "/api/recordings/live/cam", proxied, method="POST")
        assert status == 403 and not recorder.requested
        status, _, _ = await http_get(port, "/api/recordings/live/cam", method="POST")
        assert status == 200 and KEY in recorder.requested
