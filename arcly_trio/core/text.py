"""Peer-supplied text made safe for log lines.

Error policy: never raises; anything that is not a ``str`` is shown with ``repr``.
"""

from __future__ import annotations

__all__ = ["printable"]

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
