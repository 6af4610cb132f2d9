"""Each worker of ``--workers N`` answers ``/api/streams`` and ``/api/health`` for all of them.

A worker's own documents are what its engine serves; with ``?scope=worker`` that is what it
answers. Without it, it also fetches the other workers' (``?scope=worker``, over their Unix HTTP
sockets in the run directory, all at once, within a second) and merges them:

* ``/api/streams``: applications by name, streams by key. A stream published on one worker and
  relayed to others (protocol ``worker``) is listed once, from the worker where it is published,
  with the viewers of every worker added up (the relay connections between workers are not
  viewers) and a ``workers`` list saying where it is served;
* ``/api/health``: this worker's health, and a ``workers`` list with each one's status.

Both say how many workers answered (``"workers_answered"``). A worker that does not answer
(restarting) is left out, never waited for past the deadline.

Error policy: a peer's failure (gone, slow, malformed JSON) leaves it out of the answer.
"""

from __future__ import annotations

import json
import os
from typing import Any

import trio

from ..clients.http import get_json_bytes
from ..core.errors import StreamError
from ..protocols.http.router import HttpRequest
from ..workers.http import HttpServer
from ..workers.http.api_routes import health_document, streams_document
from ..workers.http.exchange import Exchange

__all__ = ["install", "merge_streams"]

_TIMEOUT = 1.0


def install(http: HttpServer, run_dir: str, index: int, count: int) -> None:
    """Install the answering-for-all routes on this worker's HTTP server."""

    async def gather(path: str) -> list[tuple[int, dict[str, Any]]]:
        found: list[tuple[int, dict[str, Any]]] = []

        async def fetch(peer: int) -> None:
            socket_path = os.path.join(run_dir, f"http-{peer}.sock")
            try:
                body = await get_json_bytes(f"http://localhost{path}?scope=worker", unix_socket=socket_path,
                                            timeout=_TIMEOUT)
                found.append((peer, json.loads(body)))
            except (StreamError, ValueError, OSError):
                pass

        async with trio.open_nursery() as nursery:
            for peer in range(count):
                if peer != index:
                    nursery.start_soon(fetch, peer)
        return found

    async def streams(request: HttpRequest, exchange: Exchange) -> None:
        local = streams_document(exchange.engine, exchange.server)
        if request.query.get("scope") == "worker":
            await exchange.json(200, local)
            return
        documents = [(index, local), *await gather("/api/streams")]
        await exchange.json(200, merge_streams(documents, count))

    async def health(request: HttpRequest, exchange: Exchange) -> None:
        engine = exchange.engine
        local = health_document(engine, exchange.server)
        local["worker"] = index
        status = 503 if engine.stopping else 200
        if request.query.get("scope") != "worker":
            others = await gather("/api/health")
            local["workers"] = sorted([{"worker": index, "status": local["status"], "streams": local["streams"]},
                                       *({"worker": peer, "status": doc.get("status"), "streams": doc.get("streams")}
                                         for peer, doc in others)], key=lambda entry: entry["worker"])
            local["workers_answered"] = len(others) + 1
        await exchange.json(status, local)

    http.router.add("/api/streams", streams, first=True)  # type: ignore[arg-type]
    http.router.add("/api/health", health, first=True)  # type: ignore[arg-type]


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
    publishers = sum(1 for stream in streams.values()
                     if stream.get("publishing") and (stream.get("publisher") or {}).get("protocol") != "worker")
    return {"apps": merged_apps, "streams": len(streams), "publishers": publishers,
            "workers": count, "workers_answered": len(documents)}
