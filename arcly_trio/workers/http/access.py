"""Who may use the HTTP API: the API token, the loopback rule, and which answers carry CORS.

Routes come in three kinds (:class:`~arcly_trio.protocols.http.router.Route`):

* open routes (media, pages, ``/api/health``, ``/api/server``): anyone;
* *protected* routes (``protected=True``: ``/api/streams``, ``/metrics``): with an API token
  (``--api-token``) they need it, as ``Authorization: Bearer TOKEN`` or ``?api_token=TOKEN``
  (``401`` without it, ``403`` with a wrong one, compared in constant time); without one they
  are open;
* *admin* routes (``admin=True``: ``GET /api/sessions``, which names every client's address,
  and ``DELETE /api/sessions/{id}``, which kicks one): with an API token they need it; without
  one they answer only requests from this machine (:func:`is_local`), and anyone else gets
  ``403`` with a message saying how to set ``--api-token``.

A request is *local* when it comes over the workers' private Unix sockets, or from a loopback
address (``127.0.0.0/8``, ``::1``, their IPv4-mapped forms) with a ``Host`` header that names
this machine (``localhost`` or a loopback address: a page whose DNS name was rebound to
``127.0.0.1`` sends its own name and is not local) and no proxy header (``Forwarded``,
``X-Forwarded-For``, ``X-Real-IP``: a reverse proxy on the same machine makes every client look
like loopback; behind one, set ``--api-token``).

Whatever route it is, what identifies a client (``/api/streams``' publisher address and port) is
shown only to :func:`privileged` requests: with an API token, those that presented it (or came
over a Unix socket); without one, local ones.

CORS: answers under ``/api/`` and of protected or admin routes carry no
``Access-Control-Allow-Origin`` (:func:`cors_allowed`), so no web page of another origin can read
them or send them anything but a simple request; media routes (HTTP-FLV, HLS, DASH) and the
pages keep ``Access-Control-Allow-Origin: *`` for players.

Error policy: nothing here raises; a malformed ``Host`` header or peer address is simply not
local.
"""

from __future__ import annotations

import hmac
import ipaddress

from arcly_trio.protocols.http.router import HttpRequest, Route
from arcly_trio.workers.listen import LOCAL_PEER

__all__ = ["is_loopback", "is_local", "token_refusal", "admin_refusal", "privileged", "cors_allowed", "ADMIN_REFUSAL"]

ADMIN_REFUSAL = (
    "this API names and ends client sessions, so without an API token it answers only on the server's own "
    "machine (loopback, no proxy); to use it from elsewhere start the server with --api-token SECRET "
    "(or --api-token-file PATH, or ARCLY_API_TOKEN) and send Authorization: Bearer SECRET"
)
_PROXY_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip")


def _loopback_address(text: str) -> bool:
    try:
        address = ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def is_loopback(peer: tuple[str, int] | None) -> bool:
    """Whether ``peer`` is this machine: a workers' Unix socket or a loopback address."""
    if peer is None:
        return False
    return peer == LOCAL_PEER or _loopback_address(peer[0])


def _local_host(value: str | None) -> bool:
    """Whether a ``Host`` header names this machine (``localhost`` or a loopback address)."""
    if value is None:
        return True  # HTTP/1.0 without Host: nothing says another name was meant
    host = value.strip().lower()
    if host.startswith("["):
        host = host[1:].partition("]")[0]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    return host == "localhost" or _loopback_address(host)


def is_local(request: HttpRequest) -> bool:
    """Whether ``request`` comes from this machine (see the module docstring)."""
    if request.peer == LOCAL_PEER:
        return True
    if not is_loopback(request.peer) or not _local_host(request.header("host")):
        return False
    return not any(request.header(name) is not None for name in _PROXY_HEADERS)


def _token_ok(request: HttpRequest, expected: str) -> bool:
    given = request.bearer or request.query.get("api_token") or ""
    return bool(given) and hmac.compare_digest(given.encode(), expected.encode())


def token_refusal(request: HttpRequest, api_token: str | None) -> tuple[int, str] | None:
    """Why ``request`` may not use a protected or admin route when the server has an API token
    (status and message), or ``None``."""
    if api_token is None or request.peer == LOCAL_PEER:  # the workers' private sockets (0600)
        return None
    if not (request.bearer or request.query.get("api_token")):
        return 401, "this API needs the API token (Authorization: Bearer TOKEN, or ?api_token=TOKEN)"
    if not _token_ok(request, api_token):
        return 403, "wrong API token"
    return None


def admin_refusal(request: HttpRequest, api_token: str | None) -> tuple[int, str] | None:
    """Why ``request`` may not use an admin route when the server has *no* API token (it must
    be local), or ``None``."""
    if api_token is not None or is_local(request):
        return None
    return 403, ADMIN_REFUSAL


def privileged(request: HttpRequest, api_token: str | None) -> bool:
    """Whether ``request`` may see what identifies clients (see the module docstring)."""
    if api_token is None:
        return is_local(request)
    return request.peer == LOCAL_PEER or _token_ok(request, api_token)


def cors_allowed(path: str, route: Route | None) -> bool:
    """Whether the answer to ``path`` (served by ``route``, if any matched) may carry CORS."""
    if path == "/api" or path.startswith("/api/"):
        return False
    return route is None or not (route.protected or route.admin)
