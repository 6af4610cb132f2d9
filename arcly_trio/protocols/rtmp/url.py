"""RTMP URLs for clients and relays (sans-IO): parsing and ``{app}``/``{stream}`` templates.

An RTMP URL is ``rtmp://HOST[:PORT]/APP/STREAM[?QUERY]`` (``rtmps://`` for RTMP over TLS, port
443 by default; 1935 for ``rtmp://``). As FFmpeg and OBS do, the *first* path segment is the
application and the rest is the stream name (``rtmp://a.rtmp.youtube.com/live2/KEY``); the
query travels with the stream name (``publish``/``play`` carry ``STREAM?QUERY``), which is where
servers read tokens from. :attr:`RtmpUrl.tc_url` is what goes in ``connect``'s ``tcUrl``.

Relay configuration uses templates: ``rtmp://origin/{app}/{stream}`` filled per stream with
:func:`fill_template`; the values are the project's checked names (letters, digits and
``_-.~@+=``), so substituting them cannot change the URL's structure.

Error policy: :func:`parse_rtmp_url` and :func:`check_template` raise ``ValueError`` with a
message that says what is wrong (they read configuration, never peer input); the message shows
the URL redacted (:func:`~arcly_trio.core.redact.redact_url`), never its credentials.
"""

from __future__ import annotations

import urllib.parse

import attrs

from arcly_trio.core.redact import redact_url

__all__ = ["RtmpUrl", "parse_rtmp_url", "fill_template", "check_template"]

_DEFAULT_PORTS = {"rtmp": 1935, "rtmps": 443}
_PLACEHOLDERS = ("{app}", "{stream}")


@attrs.frozen
class RtmpUrl:
    """A parsed RTMP URL (see the module docstring)."""

    scheme: str
    host: str
    port: int
    app: str
    stream: str
    query: str = ""

    @property
    def tls(self) -> bool:
        return self.scheme == "rtmps"

    @property
    def tc_url(self) -> str:
        """``connect``'s ``tcUrl``: the URL up to and including the application."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}/{self.app}"

    @property
    def stream_with_query(self) -> str:
        """The name ``publish``/``play`` carry: the stream name and the query, if any."""
        return f"{self.stream}?{self.query}" if self.query else self.stream

    def redacted(self) -> str:
        """The URL for logs and the API: the query's values (where tokens and keys are) and
        all but the first characters of the stream name (a platform's stream key) are hidden
        (:func:`~arcly_trio.core.redact.redact_url`; user names and passwords are never kept)."""
        stream = self.stream if len(self.stream) <= 8 else self.stream[:4] + "…"
        return redact_url(f"{self.tc_url}/{stream}" + (f"?{self.query}" if self.query else ""))

    def __str__(self) -> str:
        return f"{self.tc_url}/{self.stream_with_query}"


def parse_rtmp_url(url: str) -> RtmpUrl:
    """Parse ``rtmp://HOST[:PORT]/APP/STREAM[?QUERY]`` (or ``rtmps://``); ``ValueError`` if it
    is not one."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError(f"not an rtmp:// or rtmps:// URL: {redact_url(url)!r}")
    if not parts.hostname:
        raise ValueError(f"no host in {redact_url(url)!r}")
    try:
        port = parts.port or _DEFAULT_PORTS[scheme]
    except ValueError:
        raise ValueError(f"bad port in {redact_url(url)!r}") from None
    path = parts.path.lstrip("/")
    app, _, stream = path.partition("/")
    if not app or not stream:
        raise ValueError(f"{redact_url(url)!r} must name an application and a stream: rtmp://host/APP/STREAM")
    return RtmpUrl(scheme, parts.hostname, port, app, stream, parts.query)


def check_template(template: str, *, pull: bool = False) -> str:
    """Check a relay URL template (``rtmp://``, ``rtmps://``, ``http://`` or ``https://``, and
    ``rtsp://`` for a ``pull``, with optional ``{app}``/``{stream}``); return it, or raise
    ``ValueError``."""
    sample = fill_template(template, "app", "stream")
    scheme = urllib.parse.urlsplit(sample).scheme.lower()
    if scheme in _DEFAULT_PORTS:
        parse_rtmp_url(sample)
    elif scheme in ("http", "https") or (pull and scheme == "rtsp"):
        if not urllib.parse.urlsplit(sample).hostname:
            raise ValueError(f"no host in {redact_url(template)!r}")
    else:
        shown = redact_url(template)
        raise ValueError(f"relay URLs are rtmp://, rtmps://, http:// or https:// (or rtsp:// to pull), not {shown!r}")
    return template


def fill_template(template: str, app: str, stream: str) -> str:
    """``template`` with ``{app}`` and ``{stream}`` replaced (other braces are left alone)."""
    return template.replace(_PLACEHOLDERS[0], app).replace(_PLACEHOLDERS[1], stream)
