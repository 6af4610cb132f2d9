"""Each worker of ``--workers N`` answers the API and ``/metrics`` for all of them.

A worker's own documents are what its engine serves; with ``?scope=worker`` that is what it
answers. Without it, it also fetches the other workers' (``?scope=worker``, over their Unix HTTP
sockets in the run directory, all at once, within a second) and merges them:

* ``/api/streams``: applications by name, streams by key. A stream published on one worker and
  relayed to others (protocol ``worker``) is listed once, from the worker where it is published,
  with the viewers of every worker added up (the relay connections between workers are not
  viewers) and a ``workers`` list saying where it is served;
* ``/api/health``: this worker's health and checks, and a ``workers`` list with each one's
  status;
* ``/api/sessions``: every worker's sessions (their ids start with ``w{index}-``; the relays
  between workers are left out); ``DELETE /api/sessions/w{index}-{n}`` is passed on to worker
  ``index``, with who asked (the kick's log line and audit record on that worker name them);
* ``/metrics``: every worker's series, each with a ``worker`` label.

Each says how many workers answered (``"workers_answered"``; for ``/metrics`` a gauge
``arcly_workers_answered``). A worker that does not answer (restarting) is left out, never
waited for past the deadline.

Error policy: a peer's failure (gone, slow, malformed answer) leaves it out of the answer (a
kick it should have done answers ``503``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import trio
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from arcly_trio.clients.http import get_json_bytes
from arcly_trio.core.errors import StreamError
from arcly_trio.ops.metrics import CONTENT_TYPE, METRICS_PATH, PrometheusObserver
from arcly_trio.protocols.http.router import HttpRequest
from arcly_trio.workers.http import HttpServer
from arcly_trio.workers.http.api_routes import (
    KICKED_BY_HEADER,
    health_report,
    kicked_by,
    sessions_document,
    streams_document,
    without_client_addresses,
)
from arcly_trio.workers.http.exchange import Exchange

__all__ = ["install", "merge_streams", "merge_metrics"]

_TIMEOUT = 1.0
_OWNER = re.compile(r"w([0-9]{1,6})-")


def install(http: HttpServer, run_dir: str, index: int, count: int) -> None:
    """Install the answering-for-all routes on this worker's HTTP server."""

    def socket_of(peer: int) -> str:
        return os.path.join(run_dir, f"http-{peer}.sock")

    async def gather(path: str, decode: Any = json.loads) -> list[tuple[int, Any]]:
        found: list[tuple[int, Any]] = []

        async def fetch(peer: int) -> None:
            try:
                body = await get_json_bytes(
                    f"http://localhost{path}?scope=worker", unix_socket=socket_of(peer), timeout=_TIMEOUT
                )
                found.append((peer, decode(body)))
            except (StreamError, ValueError, OSError):
                pass

        async with trio.open_nursery() as nursery:
            for peer in range(count):
                if peer != index:
                    nursery.start_soon(fetch, peer)
        return sorted(found, key=lambda item: item[0])

    async def streams(request: HttpRequest, exchange: Exchange) -> None:
        local = streams_document(exchange.engine, exchange.server)
        if request.query.get("scope") == "worker":
            await exchange.json(200, local if exchange.server.privileged(request) else without_client_addresses(local))
            return
        documents = [(index, local), *await gather("/api/streams")]
        merged = merge_streams(documents, count)
        if not exchange.server.privileged(request):
            without_client_addresses(merged)
        await exchange.json(200, merged)

    async def health(request: HttpRequest, exchange: Exchange) -> None:
        status, local = await health_report(exchange.engine, exchange.server)
        local["worker"] = index
        if request.query.get("scope") != "worker":
            others = await gather("/api/health")
            local["workers"] = sorted(
                [
                    {"worker": index, "status": local["status"], "streams": local["streams"]},
                    *(
                        {"worker": peer, "status": doc.get("status"), "streams": doc.get("streams")}
                        for peer, doc in others
                    ),
                ],
                key=lambda entry: entry["worker"],
            )
            local["workers_answered"] = len(others) + 1
        await exchange.json(status, local)

    async def sessions(request: HttpRequest, exchange: Exchange) -> None:
        local = sessions_document(exchange.engine)
        local["sessions"] = [s for s in local["sessions"] if s["protocol"] not in ("worker", "relay")]
        if request.query.get("scope") != "worker":
            others = await gather("/api/sessions")
            for _, document in others:
                local["sessions"] += document.get("sessions", [])
            local["count"] = len(local["sessions"])
            local["workers_answered"] = len(others) + 1
        await exchange.json(200, local)

    async def kick(request: HttpRequest, exchange: Exchange) -> None:
        session_id = request.params["id"]
        owner = _OWNER.match(session_id)  # ASCII digits only: "w²-..." is nobody's (int() would raise)
        peer = int(owner.group(1)) if owner is not None else index
        by = kicked_by(request, exchange.server.api_token)
        if peer == index or not 0 <= peer < count:
            session = exchange.engine.kick(session_id, by=by)
            if session is None:
                await exchange.json(404, {"error": f"no session {session_id[:64]!r}"})
            else:
                await exchange.json(200, {"kicked": session.document()})
            return
        try:
            with trio.fail_after(_TIMEOUT * 2):
                async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=socket_of(peer))) as client:
                    answer = await client.delete(
                        f"http://localhost/api/sessions/{quote(session_id, safe='')}", headers={KICKED_BY_HEADER: by}
                    )
            await exchange.json(answer.status_code, answer.json())
        except (httpx.HTTPError, OSError, ValueError, trio.TooSlowError) as exc:
            await exchange.json(503, {"error": f"worker {peer} did not answer: {type(exc).__name__}"})

    async def metrics(request: HttpRequest, exchange: Exchange) -> None:
        observer = next((o for o in exchange.engine.observers.observers if isinstance(o, PrometheusObserver)), None)
        local = observer.render() if observer is not None else b""
        if request.query.get("scope") == "worker":
            await exchange.respond(200, local, content_type=CONTENT_TYPE)
            return
        texts = [(index, local.decode()), *await gather(METRICS_PATH, lambda body: body.decode())]
        await exchange.respond(
            200, merge_metrics(texts), content_type=CONTENT_TYPE, headers=[("cache-control", "no-cache")]
        )

    router = http.router
    router.add("/api/streams", streams, first=True, protected=True)  # type: ignore[arg-type]
    router.add("/api/health", health, first=True)  # type: ignore[arg-type]
    router.add("/api/sessions", sessions, first=True, admin=True)  # type: ignore[arg-type]
    router.add("/api/sessions/{id}", kick, methods=("DELETE",), first=True, admin=True)  # type: ignore[arg-type]
    router.add(METRICS_PATH, metrics, first=True, protected=True)  # type: ignore[arg-type]


def _viewers(stream: dict[str, Any]) -> tuple[int, dict[str, int]]:
    by_protocol = dict(stream.get("subscribers", {}).get("by_protocol", {}))
    by_protocol.pop("relay", None)
    return sum(by_protocol.values()), by_protocol


def merge_streams(documents: list[tuple[int, dict[str, Any]]], count: int) -> dict[str, Any]:
    """One ``/api/streams`` document from every worker's (see the module docstring)."""
    apps: dict[str, dict[str, Any]] = {}
    streams: dict[tuple[str, str], dict[str, Any]] = {}
    for worker, document in sorted(documents, key=lambda item: item[0]):
        for app in document.get("apps", []):
            merged_app = apps.setdefault(app["name"], {**app, "streams": []})
            for stream in app.get("streams", []):
                key = (app["name"], stream["name"])
                viewers, by_protocol = _viewers(stream)
                publisher = stream.get("publisher") or {}
                relayed = publisher.get("protocol") == "worker"
                where = {"worker": worker, "relayed": relayed, "viewers": viewers}
                current = streams.get(key)
                if current is None:
                    current = streams[key] = {**stream, "workers": []}
                    current["subscribers"] = {"total": 0, "by_protocol": {}}
                    merged_app["streams"].append(current)
                elif not relayed:  # the worker where it is published describes it
                    kept = current
                    current = streams[key] = {**stream, "workers": kept["workers"], "subscribers": kept["subscribers"]}
                    merged_app["streams"][merged_app["streams"].index(kept)] = current
                current["workers"].append(where)
                totals = current["subscribers"]
                totals["total"] += viewers
                for protocol, n in by_protocol.items():
                    totals["by_protocol"][protocol] = totals["by_protocol"].get(protocol, 0) + n
    merged_apps = list(apps.values())
    publishers = sum(
        1
        for stream in streams.values()
        if stream.get("publishing") and (stream.get("publisher") or {}).get("protocol") != "worker"
    )
    return {
        "apps": merged_apps,
        "streams": len(streams),
        "publishers": publishers,
        "workers": count,
        "workers_answered": len(documents),
    }


class _Merged:
    """A collector of already-parsed families (each sample with a ``worker`` label added)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def merge_metrics(texts: list[tuple[int, str]]) -> bytes:
    """Every worker's ``/metrics`` text as one, each sample labelled with its ``worker``."""
    families: dict[str, Metric] = {}
    for worker, text in texts:
        for family in text_string_to_metric_families(text):
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
            for sample in family.samples:
                merged.samples.append(sample._replace(labels={**sample.labels, "worker": str(worker)}))
    answered = GaugeMetricFamily("arcly_workers_answered", "Workers whose metrics are in this answer")
    answered.add_metric([], len(texts))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged([*families.values(), answered]))  # type: ignore[arg-type]
    return generate_latest(registry)
