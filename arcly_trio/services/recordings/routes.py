"""The recordings API: list what was recorded, start and stop recording on demand.

Installed by the :class:`~.recorder.Recorder`'s ``install_routes`` (the HTTP worker calls it)::

    GET    /api/recordings?app=&stream=&from=&to=   the spans of every recorded stream (protected)
    GET    /api/recordings/{app}/{stream}?from=&to= one stream's spans and segments (protected)
    POST   /api/recordings/{app}/{stream}            record it now (or once published) (admin)
    DELETE /api/recordings/{app}/{stream}            stop recording it (admin)

``GET /api/recordings`` answers from the catalog (:mod:`.catalog`: the index beside the files,
not the files)::

    {"recordings": [{"app": "live", "stream": "cam", "key": "live/cam", "recording": true,
                     "spans": [{"start": "2026-12-07T01:34:12.123456Z", "start_epoch": 1796607252.123456,
                                "end": "...", "end_epoch": ..., "duration": 12.48, "bytes": 123456,
                                "codecs": ["avc1.64001f", "mp4a.40.2"], "session": "9f2c..."}]}],
     "count": 1, "truncated": false}

``app`` and ``stream`` narrow it to an application or a stream; ``from`` and ``to`` (ISO 8601,
``2026-12-07T01:34:12Z``, a time without an offset is UTC, or epoch seconds) to the spans that
overlap that time range. The per-stream route adds ``segments`` (the catalog's records, each with
its ``file``, ``start``, ``duration``, ``bytes``, ``codecs``, ``session``, ``final``).

Who may ask: listing is *protected* (the API token when the server has one, as
``/api/streams``), control is *admin* (the token, or a local request without one, as a kick).
A control request is logged and sent to the observers with who asked (the audit log's
``recording-start`` / ``recording-stop`` records).

The attacker's view: every parameter is bounded and checked (names by
:func:`~arcly_trio.core.keys.check_name`, times finite and within years 1970 to 9999, ``from``
not after ``to``); a listing holds at most :data:`MAX_STREAMS` streams and :data:`MAX_SPANS`
spans per stream (``truncated`` says when more were left out), so no query costs more than
that, whatever its range. Text from the request that is echoed in an error is escaped.

Error policy: a malformed parameter answers ``400`` with the reason; a recording directory that
cannot be read answers ``503``; a start past :data:`~.recorder.MAX_REQUESTED` streams ``429``.
"""

from __future__ import annotations

import datetime
import math
from typing import Any, Final, Protocol

from arcly_trio.core.errors import InvalidStreamName, StorageError
from arcly_trio.core.keys import StreamKey, check_name
from arcly_trio.core.text import printable
from arcly_trio.protocols.http.router import BadRequest, HttpRequest, Router
from arcly_trio.services.recordings.catalog import Catalog, SegmentRecord, Span

__all__ = ["install", "RecordingControl", "parse_time", "iso", "MAX_STREAMS", "MAX_SPANS", "MAX_SEGMENTS"]

#: The most streams one listing holds.
MAX_STREAMS: Final = 1000
#: The most spans per stream one listing holds.
MAX_SPANS: Final = 1000
#: The most segments the per-stream route lists.
MAX_SEGMENTS: Final = 5000

_MAX_EPOCH: Final = 253402300799.0  # 9999-12-31T23:59:59Z


class RecordingControl(Protocol):
    """What the routes need of the recorder (:class:`~.recorder.Recorder` is one)."""

    catalog: Catalog

    @property
    def requested(self) -> frozenset[StreamKey]: ...

    def recording(self, key: StreamKey) -> bool: ...

    def start(self, key: StreamKey, by: str = "") -> bool: ...

    def stop(self, key: StreamKey, by: str = "") -> bool: ...


def parse_time(value: str, name: str) -> float:
    """An ISO 8601 time or epoch seconds as epoch seconds; :class:`BadRequest` otherwise."""
    text = value.strip()
    if not text or len(text) > 40:
        raise BadRequest(f"{name} must be an ISO 8601 time or epoch seconds")
    try:
        seconds = float(text)
    except ValueError:
        try:
            moment = datetime.datetime.fromisoformat(text)
        except ValueError:
            raise BadRequest(f"{name}={printable(text, 40)} is not an ISO 8601 time nor epoch seconds") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.UTC)
        seconds = moment.timestamp()
    if not math.isfinite(seconds) or not 0 <= seconds <= _MAX_EPOCH:
        raise BadRequest(f"{name} is outside 1970..9999")
    return seconds


def iso(seconds: float) -> str:
    """Epoch seconds as ISO 8601 UTC with microseconds (``2026-12-07T01:34:12.123456Z``)."""
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def span_document(span: Span) -> dict[str, Any]:
    return {
        "start": iso(span.start),
        "start_epoch": round(span.start, 6),
        "end": iso(span.end),
        "end_epoch": round(span.end, 6),
        "duration": round(span.duration, 6),
        "bytes": span.bytes,
        "codecs": list(span.codecs),
        "session": span.session,
    }


def segment_document(record: SegmentRecord) -> dict[str, Any]:
    return {
        "file": record.file,
        "start": iso(record.start),
        "start_epoch": round(record.start, 6),
        "duration": round(record.duration, 6),
        "bytes": record.bytes,
        "codecs": list(record.codecs),
        "session": record.session,
        "final": record.final,
    }


def _range(request: HttpRequest) -> tuple[float | None, float | None]:
    query = request.query
    start = parse_time(query["from"], "from") if query.get("from") else None
    end = parse_time(query["to"], "to") if query.get("to") else None
    if start is not None and end is not None and start > end:
        raise BadRequest("from is after to")
    return start, end


def _key(request: HttpRequest) -> StreamKey:
    try:
        return StreamKey(request.params["app"], request.params["stream"])
    except InvalidStreamName as exc:
        raise BadRequest(str(exc)) from None


def _who(request: HttpRequest, responder: Any) -> str:
    """Who asked (as the kick says it): the API token's holder, or a local operator."""
    server = getattr(responder, "server", None)
    has_token = getattr(server, "api_token", None) is not None
    address = request.peer[0] if request.peer is not None else "?"
    return f"{'api-token holder' if has_token else 'local operator'} at {address}"


def install(router: Router, recorder: RecordingControl) -> None:
    """Add the recordings API routes for ``recorder`` to ``router``."""

    async def listing(request: HttpRequest, responder: Any) -> None:
        app = request.query.get("app") or None
        stream = request.query.get("stream") or None
        try:
            if app is not None:
                check_name(app, "application name")
            if stream is not None:
                check_name(stream, "stream name")
        except InvalidStreamName as exc:
            raise BadRequest(str(exc)) from None
        start, end = _range(request)
        try:
            if app is not None and stream is not None:
                keys = [StreamKey(app, stream)]
            else:
                keys = [k for k in await recorder.catalog.streams(app) if stream is None or k.name == stream]
            truncated = len(keys) > MAX_STREAMS
            documents = []
            for key in keys[:MAX_STREAMS]:
                spans = await recorder.catalog.spans(key, start, end)
                if not spans and not recorder.recording(key):
                    continue
                truncated |= len(spans) > MAX_SPANS
                documents.append(
                    {
                        "app": key.app,
                        "stream": key.name,
                        "key": str(key),
                        "recording": recorder.recording(key),
                        "spans": [span_document(s) for s in spans[:MAX_SPANS]],
                    }
                )
        except StorageError as exc:
            await responder.error(503, f"the recordings cannot be read: {exc}")
            return
        await responder.json(200, {"recordings": documents, "count": len(documents), "truncated": truncated})

    async def one(request: HttpRequest, responder: Any) -> None:
        key = _key(request)
        start, end = _range(request)
        try:
            segments = await recorder.catalog.segments(key, start, end)
            spans = await recorder.catalog.spans(key, start, end)
        except StorageError as exc:
            await responder.error(503, f"the recordings cannot be read: {exc}")
            return
        await responder.json(
            200,
            {
                "app": key.app,
                "stream": key.name,
                "key": str(key),
                "recording": recorder.recording(key),
                "requested": key in recorder.requested,
                "spans": [span_document(s) for s in spans[:MAX_SPANS]],
                "segments": [segment_document(r) for r in segments[:MAX_SEGMENTS]],
                "truncated": len(segments) > MAX_SEGMENTS or len(spans) > MAX_SPANS,
            },
        )

    async def start(request: HttpRequest, responder: Any) -> None:
        key = _key(request)
        if not recorder.start(key, by=_who(request, responder)):
            await responder.error(429, "too many streams asked for on demand; stop some first")
            return
        await responder.json(200, {"key": str(key), "requested": True, "recording": recorder.recording(key)})

    async def stop(request: HttpRequest, responder: Any) -> None:
        key = _key(request)
        was = recorder.stop(key, by=_who(request, responder))
        await responder.json(200, {"key": str(key), "requested": False, "was_recording": was})

    router.get("/api/recordings", listing, protected=True)
    router.get("/api/recordings/{app}/{stream}", one, protected=True)
    router.add("/api/recordings/{app}/{stream}", start, methods=("POST",), admin=True)
    router.add("/api/recordings/{app}/{stream}", stop, methods=("DELETE",), admin=True)
