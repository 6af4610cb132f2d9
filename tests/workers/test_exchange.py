"""workers/http: route modules install on a bare Router; an Exchange answers for any ExchangeHost
over any stream (no connection object of the server's)."""

from __future__ import annotations

import logging

import h11
import trio
import trio.testing

from arcly_trio.protocols.http.router import Router
from arcly_trio.workers.clientlog import ClientLog
from arcly_trio.workers.http import api_routes, flv_routes, frames_routes, pages_routes
from arcly_trio.workers.http.exchange import Exchange, common_headers


class FakeHost:
    name = "http"
    cors = True
    write_timeout = 5.0
    api_token = None
    rtmp_port = 1935
    open_connections = 1

    def __init__(self) -> None:
        self.clients = ClientLog(logging.getLogger("test"))

    def privileged(self, request: object) -> bool:
        return True


def test_each_route_module_installs_on_a_router() -> None:
    router = Router()
    for module in (api_routes, flv_routes, frames_routes, pages_routes):
        before = len(router.routes)
        module.install(router)
        assert len(router.routes) > before, module.__name__
    assert router.match("GET", "/api/health") is not None
    assert router.match("GET", "/api/server") is not None


def test_common_headers_carry_cors_only_when_asked() -> None:
    assert common_headers(False) == [(b"server", b"arcly-trio")]
    assert (b"access-control-allow-origin", b"*") in common_headers(True)


async def test_an_exchange_answers_over_a_plain_stream(engine) -> None:  # type: ignore[no-untyped-def]
    ours, theirs = trio.testing.memory_stream_pair()
    server = h11.Connection(h11.SERVER)
    request = h11.Request(method="GET", target="/x", headers=[("host", "a")])
    server.receive_data(h11.Connection(h11.CLIENT).send(request))
    event = server.next_event()
    exchange = Exchange(FakeHost(), engine, ours, server, ("127.0.0.1", 1), event)
    exchange.cors = False
    await exchange.json(200, {"ok": True})
    client = h11.Connection(h11.CLIENT)
    client.send(request)
    client.receive_data(await theirs.receive_some())
    response = client.next_event()
    assert response.status_code == 200
    assert dict(response.headers)[b"server"] == b"arcly-trio"
    assert b"access-control-allow-origin" not in dict(response.headers)
    body = client.next_event()
    assert isinstance(body, h11.Data) and b'"ok"' in body.data
