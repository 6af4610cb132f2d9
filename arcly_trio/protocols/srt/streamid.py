"""SRT streamid routing: which stream a caller wants, whether it publishes or plays, its token.

What: the forms users already send (libsrt's access-control convention, MediaMTX, SRS):

* ``#!::r=live/cam,m=publish,u=alice,s=SECRET,t=stream``: keys ``r`` (resource), ``m``
  (``request`` = play, ``publish``; ``bidirectional`` is refused), ``u`` (user), ``s`` (session
  token), ``t`` (type; a value other than ``stream`` is taken as the token), ``token``;
* ``publish:live/cam`` and ``read:live/cam`` (MediaMTX), optionally ``:user:pass`` after it;
* ``live/cam`` (play);
* any of these with a ``?token=...&key=value`` query after the resource.

How: :func:`parse_streamid` returns a :class:`Route` (the resource stays text: the worker makes
the :class:`~arcly_trio.core.keys.StreamKey`, which checks the name).

Attacker's view: the streamid is at most 512 bytes (the codec's bound), at most
:data:`MAX_KEYS` keys are read, and nothing here is logged (the worker escapes what it logs).

Error policy: a streamid this module cannot read raises :class:`BadStreamId` (the worker
rejects the handshake with ``BAD_REQUEST``).
"""

from __future__ import annotations

from urllib.parse import parse_qsl

import attrs

from arcly_trio.core.errors import RemoteProtocolError

__all__ = ["Route", "BadStreamId", "parse_streamid", "MAX_KEYS"]

MAX_KEYS = 16
_TYPES = frozenset({"", "stream"})


class BadStreamId(RemoteProtocolError, ValueError):
    """A streamid that names no stream this way."""


@attrs.frozen(slots=True)
class Route:
    resource: str
    publish: bool
    token: str | None = None
    user: str | None = None
    query: dict[str, str] = attrs.field(factory=dict)


def _split_query(resource: str) -> tuple[str, dict[str, str]]:
    path, _, query = resource.partition("?")
    return path, dict(parse_qsl(query, max_num_fields=MAX_KEYS)) if query else {}


def parse_streamid(text: str) -> Route:
    """See the module docstring."""
    if text.startswith("#!::"):
        keys: dict[str, str] = {}
        for item in text[4:].split(",")[:MAX_KEYS]:
            name, sep, value = item.partition("=")
            if not sep:
                raise BadStreamId("a streamid key without a value")
            keys.setdefault(name.strip(), value.strip())
        resource, query = _split_query(keys.get("r", ""))
        mode = keys.get("m", "request")
        if mode not in ("request", "publish"):
            raise BadStreamId(f"mode {mode!r} (request or publish)")
        kind = keys.get("t", "")
        token = keys.get("token") or keys.get("s") or (kind if kind not in _TYPES else None) or query.get("token")
        return Route(resource, mode == "publish", token, keys.get("u"), query)
    for prefix, publish in (("publish:", True), ("read:", False), ("play:", False)):
        if text.startswith(prefix):
            rest = text[len(prefix) :]
            path, _, credentials = rest.partition(":")
            resource, query = _split_query(path)
            user, _, password = credentials.partition(":")
            token = query.get("token") or password or None
            return Route(resource, publish, token, user or None, query)
    resource, query = _split_query(text)
    return Route(resource, False, query.get("token"), None, query)
