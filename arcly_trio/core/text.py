"""Peer-supplied text made safe for log lines.

Error policy: never raises; anything that is not a ``str`` is shown with ``repr``.
"""

from __future__ import annotations

from urllib.parse import urlsplit

__all__ = ["printable", "redacted_url"]

_LIMIT = 200


def printable(text: object, limit: int = _LIMIT) -> str:
    """``text`` with control characters (newlines, escape sequences...) escaped as ``\\xNN``,
    and cut to ``limit`` characters, so a peer can never forge or garble a log line.

    >>> printable("live\\nFAKE LOG LINE")
    'live\\\\nFAKE LOG LINE'
    """
    if not isinstance(text, str):
        text = repr(text)
    cut = len(text) > limit
    if cut:
        text = text[:limit]
    if text.isprintable():
        safe = text
    else:
        safe = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
    return safe + "..." if cut else safe


def redacted_url(url: str) -> str:
    """``url`` fit for a log line: without its user and password, its query and its fragment
    (where tokens and keys are; ``?…`` says there was a query), escaped.

    >>> redacted_url("https://user:pw@hooks.example:8443/auth?key=s3cret")
    'https://hooks.example:8443/auth?…'
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "(an invalid URL)"
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port is not None else host
    query = "?…" if parts.query or parts.fragment else ""
    return printable(f"{parts.scheme}://{netloc}{parts.path}{query}" if parts.scheme else f"{parts.path}{query}")
