"""URLs from the configuration made safe to show: in ``/api/*``, ``/metrics``, logs and the audit log.

An operator's URLs carry secrets: a hook's ``https://user:password@host/hook?key=...``, a push
target's ``rtmp://host/app/stream?token=...``, a pull template's credentials, a Redis URL's
``redis://:password@host``. Whatever shows one of them (a health check's name, a relay's status,
a log line, an error message, an audit record) shows :func:`redact_url` of it instead:

* the user name and password (``user:password@``) become ``***@``;
* every query parameter keeps its name and loses its value (``?key=***&token=***``); a query
  part without ``=`` becomes ``***``;
* a fragment is dropped;
* the scheme, host, port and path are kept (a stream key placed in the *path*, as YouTube's
  ``rtmp://a.rtmp.youtube.com/live2/KEY`` does, is the operator's choice: push links shorten it
  themselves, see :meth:`arcly_trio.protocols.rtmp.url.RtmpUrl.redacted`).

Error messages from libraries (httpx, coredis, an upstream server's refusal) may quote a URL or
part of it: :func:`scrub` replaces, in any text, the URL itself and each of its secrets (the
password, the user name, the query values) with their redacted forms.

Error policy: never raises; a string that does not parse as a URL is shown as ``***`` when it
may hold a secret (it has ``@`` or ``?``) and as it is otherwise.
"""

from __future__ import annotations

from urllib.parse import unquote_plus, urlsplit

__all__ = ["redact_url", "url_secrets", "scrub", "REDACTED"]

REDACTED = "***"
#: Secrets shorter than this are not searched for in free text (a query value ``1`` would
#: otherwise blank out every digit ``1`` of a message); they still never show in a redacted URL.
_MIN_SCRUBBED = 4


def redact_url(url: str) -> str:
    """``url`` without its user name, password, query values and fragment (module docstring).

    >>> redact_url("https://hook:s3cret@example.com:8443/on_publish?key=abc&x")
    'https://***@example.com:8443/on_publish?key=***&***'
    """
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
    except ValueError:
        return REDACTED if ("@" in url or "?" in url) else url
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rpartition('@')[2]}"
    query = "&".join(_redact_pair(pair) for pair in parts.query.split("&")) if parts.query else ""
    shown = f"{parts.scheme}://{netloc}{parts.path}" if parts.scheme or netloc else parts.path
    return shown + (f"?{query}" if query else "")


def _redact_pair(pair: str) -> str:
    name, sep, _ = pair.partition("=")
    return f"{name}={REDACTED}" if sep else REDACTED


def url_secrets(url: str) -> list[str]:
    """What :func:`redact_url` hides of ``url``: its user name, password, query values (raw
    and percent-decoded), longest first."""
    found: set[str] = set()
    try:
        parts = urlsplit(url)
        userinfo = parts.netloc.rpartition("@")[0] if "@" in parts.netloc else ""
        query = parts.query
    except ValueError:
        return []
    if userinfo:
        found.add(userinfo)
        found.update(userinfo.split(":", 1))
    for pair in query.split("&") if query else ():
        name, sep, value = pair.partition("=")
        found.add(value if sep else name)
    found |= {unquote_plus(secret) for secret in found}
    return sorted((secret for secret in found if secret), key=len, reverse=True)


def scrub(text: str, *urls: str | None) -> str:
    """``text`` with each of ``urls`` shown redacted and each of their secrets (at least four
    characters long) replaced by ``***``."""
    for url in urls:
        if not url:
            continue
        text = text.replace(url, redact_url(url))
        for secret in url_secrets(url):
            if len(secret) >= _MIN_SCRUBBED:
                text = text.replace(secret, REDACTED)
    return text
