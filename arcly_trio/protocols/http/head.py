"""A strict, fast reader of plain HTTP/1.x request heads (sans-IO, no trio): h11 for the rest.

Most requests a media server gets are the same plain shape: ``GET`` or ``HEAD``, HTTP/1.1 or
HTTP/1.0, no body, no upgrade, a few well-formed header lines, often several pipelined in one
packet (an LL-HLS player's blocking playlist reload and its preload-hinted part).
:func:`read_plain_head` reads exactly that subset, from a buffer the connection owns, without
building h11 events or moving h11's state machine; the HTTP worker serves such a request on
its fast path (:mod:`arcly_trio.workers.http.server`).

Anything outside the subset is *declined*, and the connection hands the same bytes to h11,
so errors and edge cases stay exactly h11's: another method, another version, a body
(``Transfer-Encoding``, a ``Content-Length`` other than ``0``), ``Upgrade``, ``Expect``, a
missing or repeated ``Host``, an obsolete line fold, a bare ``\\r`` or ``\\n``, a line h11's
grammar refuses, or a head larger than the limit (h11 then answers ``431`` as before). For any
bytes, what this module accepts h11 accepts too, as the same request (method, target, version,
headers as h11 normalises them: lower-case names, values without surrounding whitespace) with
the same keep-alive decision (``tests/protocols/test_http_head.py`` checks it with
hypothesis).

Error policy: nothing here raises on any input; the answer is a :class:`PlainRequest`,
:data:`NEED_DATA` (the head is not complete yet and nothing in it is wrong so far) or
:data:`DECLINED`.
"""

from __future__ import annotations

import enum
import re
from typing import Final

__all__ = ["PlainRequest", "read_plain_head", "NEED_DATA", "DECLINED", "HeadOutcome"]

# h11's grammar (h11/_abnf.py), the parts a plain request may use.
_REQUEST_LINE = re.compile(rb"(GET|HEAD) ([\x21-\x7e]+) HTTP/(1\.[01])")
_HEADER_FIELD = re.compile(
    rb"(?P<name>[-!#$%&'*+.^_`|~0-9a-zA-Z]+):[ \t]*(?P<value>(?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?)[ \t]*"
)
_BARE_BLANK_LINE = re.compile(rb"\n\r?\n")
_DECLINED_FIELDS: Final = frozenset((b"transfer-encoding", b"upgrade", b"expect"))
"""Header names that take a request out of the plain subset (a body, a protocol switch, a
``100 Continue``): h11 reads those."""


class HeadOutcome(enum.Enum):
    """What :func:`read_plain_head` says when it returns no request."""

    NEED_DATA = "need data"
    """The head is not complete; nothing in it so far takes it out of the subset."""
    DECLINED = "declined"
    """Not a plain request (or not a valid one): h11 must read these bytes."""


NEED_DATA: Final = HeadOutcome.NEED_DATA
DECLINED: Final = HeadOutcome.DECLINED


class PlainRequest:
    """One plain request head, as h11 would give it.

    ``headers`` are ``(name, value)`` pairs in order, names lower-cased (h11's iteration of
    ``Request.headers``); ``keep_alive`` is h11's decision (HTTP/1.1 without ``close`` in a
    ``Connection`` header); ``size`` is the head's size counted as
    :func:`~arcly_trio.protocols.http.websocket.head_size` counts an h11 request; ``end`` is
    the offset in the buffer just past this head (where a pipelined next one starts).
    """

    __slots__ = ("method", "target", "http_version", "headers", "keep_alive", "size", "end")

    def __init__(
        self,
        method: bytes,
        target: bytes,
        http_version: bytes,
        headers: list[tuple[bytes, bytes]],
        keep_alive: bool,
        size: int,
        end: int,
    ) -> None:
        self.method = method
        self.target = target
        self.http_version = http_version
        self.headers = headers
        self.keep_alive = keep_alive
        self.size = size
        self.end = end

    def __repr__(self) -> str:
        return f"PlainRequest({self.method!r}, {self.target!r}, HTTP/{self.http_version.decode()})"


def read_plain_head(data: bytes | bytearray, max_head_size: int, start: int = 0) -> PlainRequest | HeadOutcome:
    """The plain request head at ``data[start:]``, :data:`NEED_DATA` or :data:`DECLINED`.

    ``max_head_size`` is the server's head limit: a head (or an incomplete one) past it is
    declined, so that h11 answers it as it always has (``431``)."""
    end = data.find(b"\r\n\r\n", start)
    if end < 0:
        held = len(data) - start
        if held > max_head_size:
            return DECLINED  # h11: "Receive buffer too long" (431)
        if held and data[start] < 0x21:
            return DECLINED  # h11 refuses such a first byte at once ("illegal request line")
        if _BARE_BLANK_LINE.search(data, start) is not None:
            return DECLINED  # h11 ends a head at LF LF too
        return NEED_DATA
    stop = end + 4
    if stop - start > max_head_size:
        return DECLINED
    lines = bytes(data[start:end]).split(b"\r\n")
    found = _REQUEST_LINE.fullmatch(lines[0])
    if found is None:
        return DECLINED
    method, target, version = found.groups()
    size = len(method) + len(target) + len(version) + 11
    headers: list[tuple[bytes, bytes]] = []
    hosts = 0
    content_length = False
    close = False
    match_field = _HEADER_FIELD.fullmatch
    for line in lines[1:]:
        field = match_field(line)
        if field is None:  # a bare CR or LF, an obsolete fold, a malformed line
            return DECLINED
        name = field.group(1).lower()
        value = field.group(2)
        if name in _DECLINED_FIELDS:
            return DECLINED
        if name == b"host":
            hosts += 1
        elif name == b"content-length":
            if content_length or value != b"0":
                return DECLINED
            content_length = True
        elif name == b"connection" and not close:
            close = any(token.strip() == b"close" for token in value.lower().split(b","))
        size += len(name) + len(value) + 4
        headers.append((name, value))
    if hosts > 1 or (hosts == 0 and version == b"1.1"):
        return DECLINED  # h11: 400 for a missing or repeated Host
    if size > max_head_size:
        return DECLINED  # the worker's 431, as for a head h11 read
    return PlainRequest(method, target, version, headers, version == b"1.1" and not close, size, stop)
