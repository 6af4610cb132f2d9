"""The WHIP and WHEP HTTP exchanges (RFC 9725 and the WHEP draft), on the HTTP worker's router.

* ``POST /{app}/{stream}/whep`` (play) and ``POST /{app}/{stream}/whip`` (publish): the body is
  the client's SDP offer (``Content-Type: application/sdp``, at most
  :data:`~arcly_trio.protocols.webrtc.sdp.MAX_SDP_BYTES`); the credential is
  ``Authorization: Bearer`` (or ``?token=``/a signed URL, as on every path), and the session
  goes through the engine's authorization like any other play or publish (a play credential
  never publishes). The answer is ``201 Created`` with the SDP answer, ``Location`` (the
  session's resource, ``/{app}/{stream}/whep/{id}``), ``Link`` headers for the configured ICE
  servers, and ``Access-Control-Expose-Headers`` so a page on another origin can read them.
* ``DELETE`` of the resource ends the session (``200``; under ``--workers`` a worker passes on
  the ``DELETE`` of another worker's session to it); ``PATCH`` (trickle ICE) is accepted
  and ignored (``204``): the server is ICE-lite and needs no candidates of the client.

Error policy: every failure is an HTTP answer with a text body, never a ``500``: ``415`` for
a body that is not ``application/sdp``, ``413`` for a larger one, ``400`` for an offer that
does not parse (the parser's reason, escaped), ``401``/``403`` for a refused credential,
``404`` for an unknown application or stream (WHEP) or resource, ``406`` when no codec of the
offer can be used, ``409`` when the stream already has a publisher, ``429``/``503`` when the
limits are reached or the server stops. Each refusal is logged once (the client log's rules).
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import attrs

from arcly_trio.core.errors import (
    AddressPublisherLimitReached,
    AuthorizationBusy,
    PublisherLimitReached,
    StreamAlreadyPublishing,
    StreamError,
)
from arcly_trio.core.keys import Credentials, StreamKey
from arcly_trio.core.text import printable
from arcly_trio.protocols.http.router import BadRequest, HttpRequest, Router
from arcly_trio.protocols.webrtc.sdp import MAX_SDP_BYTES, NoCommonCodec, SdpError, SessionDescription, parse_sdp
from arcly_trio.workers.http.exchange import Exchange, stream_error_status

__all__ = ["install", "WebRtcEndpoint"]

log = logging.getLogger("arcly_trio.webrtc")

_EXPOSED = ("access-control-expose-headers", "Location, Link, ETag")


class WebRtcEndpoint(Protocol):
    """What the routes use of the WebRTC worker (:class:`~.server.WebRtcServer`)."""

    ice_servers: tuple[str, ...]

    async def open(self, kind: str, key: StreamKey, credentials: Credentials, offer: SessionDescription) -> Any: ...

    def close_session(self, session_id: str, key: StreamKey, kind: str) -> bool: ...

    def has_session(self, session_id: str, key: StreamKey, kind: str) -> bool: ...

    async def close_elsewhere(self, session_id: str, path: str) -> bool: ...


def install(router: Router, endpoint: WebRtcEndpoint) -> None:
    """Add the WHIP and WHEP routes for ``endpoint`` (before the others: ``first``)."""

    async def whep(request: HttpRequest, exchange: Exchange) -> None:
        await _offer(request, exchange, endpoint, "whep")

    async def whip(request: HttpRequest, exchange: Exchange) -> None:
        await _offer(request, exchange, endpoint, "whip")

    async def resource(request: HttpRequest, exchange: Exchange) -> None:
        await _resource(request, exchange, endpoint)

    router.add("/{app}/{stream}/whep", whep, methods=("POST",), first=True)
    router.add("/{app}/{stream}/whip", whip, methods=("POST",), first=True)
    router.add("/{app}/{stream}/{kind}/{id}", resource, methods=("DELETE", "PATCH"), first=True)


def _refusal_status(exc: StreamError) -> int:
    if isinstance(exc, StreamAlreadyPublishing):
        return 409
    if isinstance(exc, AddressPublisherLimitReached):
        return 429
    if isinstance(exc, (PublisherLimitReached, AuthorizationBusy)):
        return 503
    status = stream_error_status(exc)
    return 503 if status >= 500 else status


async def _offer(request: HttpRequest, exchange: Exchange, endpoint: WebRtcEndpoint, kind: str) -> None:
    content_type = (request.header("content-type") or "").split(";")[0].strip().lower()
    if content_type != "application/sdp":
        await exchange.error(415, "the offer must be an SDP body (Content-Type: application/sdp)")
        return
    key = request.stream_key()
    body = await exchange.read_body(MAX_SDP_BYTES)
    try:
        offer = parse_sdp(body)
    except SdpError as exc:
        raise BadRequest(f"bad SDP offer: {exc}") from None
    credentials = request.credentials(kind)
    if credentials.token is None and credentials.bearer is not None:
        # WHIP and WHEP carry the stream's token as a Bearer token (RFC 9725 section 4.5).
        credentials = attrs.evolve(credentials, token=credentials.bearer)
    action = "play" if kind == "whep" else "publish"
    try:
        session, answer = await endpoint.open(kind, key, credentials, offer)
    except NoCommonCodec as exc:
        log.info("%s %s:%s %s %s refused: %s", kind, *_peer(request), action, key, printable(str(exc)))
        await exchange.error(406, str(exc))
        return
    except StreamError as exc:
        status = getattr(exc, "status", None)
        if not isinstance(status, int):
            status = _refusal_status(exc)
            exchange.log_refusal(kind, key, exc, action)
        await exchange.error(status, str(exc))
        return
    location = f"/{key.app}/{key.name}/{kind}/{session.id}"
    headers = [("location", location), ("etag", f'"{session.id}"'), _EXPOSED]
    headers += [("link", f'<{url}>; rel="ice-server"') for url in endpoint.ice_servers]
    await exchange.respond(201, answer.sdp.encode(), content_type="application/sdp", headers=headers)


async def _resource(request: HttpRequest, exchange: Exchange, endpoint: WebRtcEndpoint) -> None:
    kind = request.params["kind"]
    if kind not in ("whep", "whip"):
        await exchange.error(404, f"not found: {printable(request.path)}")
        return
    key = request.stream_key()
    session_id = request.params["id"]
    if request.method == "PATCH":
        await exchange.read_body(MAX_SDP_BYTES)
        if endpoint.has_session(session_id, key, kind):
            await exchange.respond(204, b"", headers=[_EXPOSED])
        else:
            await exchange.error(404, "no such WebRTC session")
        return
    if endpoint.close_session(session_id, key, kind) or await endpoint.close_elsewhere(session_id, request.path):
        await exchange.respond(200, b"", headers=[_EXPOSED])
    else:
        await exchange.error(404, "no such WebRTC session")


def _peer(request: HttpRequest) -> tuple[str, object]:
    return request.peer if request.peer is not None else ("?", "?")
