"""WebSocket opening handshakes read by h11: checks, the request head rebuilt; frame headers
for messages written as they are (sans-IO).

The HTTP worker reads every request with h11, WebSocket handshakes included (so routing, limits
and errors are the same for both), then hands the request head, replayed
(:func:`rebuild_request_head`), to wsproto or trio-websocket. Before that, :func:`handshake_problem` checks what
wsproto would refuse (and what it would let through but RFC 6455 does not allow, such as a
``Sec-WebSocket-Key`` that is not 16 base64-encoded bytes), so a bad handshake gets a plain
HTTP error instead of a connection that never opens.

A server's egress writes a message's payload as it is, from buffers shared by every viewer:
:func:`frame_header` is the unmasked header that goes in front of it (one frame per message;
RFC 6455 section 5.2).

Error policy: nothing here raises; :func:`handshake_problem` returns the status and reason.
"""

from __future__ import annotations

import base64
import binascii

import h11

from .router import HttpRequest

__all__ = ["OPCODE_BINARY", "OPCODE_TEXT", "frame_header", "rebuild_request_head", "handshake_problem",
           "valid_websocket_key"]

OPCODE_TEXT = 0x1
OPCODE_BINARY = 0x2


def handshake_problem(request: HttpRequest) -> tuple[int, str] | None:
    """``(status, reason)`` if ``request`` is not an acceptable WebSocket opening handshake
    (RFC 6455 section 4.2.1), else ``None``."""
    if request.method != "GET":
        return 400, "a WebSocket handshake must be a GET"
    if request.http_version != "1.1":
        return 400, "a WebSocket handshake needs HTTP/1.1"
    if request.header("sec-websocket-version") != "13":
        return 426, "only WebSocket version 13 is supported"
    key = request.header("sec-websocket-key")
    if not key or "," in key:
        return 400, "missing or repeated Sec-WebSocket-Key"
    if not valid_websocket_key(key):
        return 400, "Sec-WebSocket-Key must be 16 bytes in base64 (RFC 6455 section 4.1)"
    if not request.header("host"):
        return 400, "missing Host header"
    return None


def valid_websocket_key(key: str) -> bool:
    """Whether ``key`` is a base64-encoded 16-byte value (24 characters), as RFC 6455 requires."""
    if len(key) != 24:
        return False
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


def rebuild_request_head(event: h11.Request) -> bytes:
    """The bytes of a request head equivalent to the one h11 parsed into ``event``."""
    lines = [b"%s %s HTTP/%s\r\n" % (event.method, event.target, event.http_version)]
    for name, value in event.headers.raw_items():
        lines.append(b"%s: %s\r\n" % (name, value))
    lines.append(b"\r\n")
    return b"".join(lines)


def frame_header(size: int, opcode: int = OPCODE_BINARY) -> bytes:
    """The header of one unmasked, final frame (a whole server-to-client message) of ``size``
    payload bytes."""
    first = 0x80 | opcode
    if size < 126:
        return bytes((first, size))
    if size < 0x10000:
        return bytes((first, 126)) + size.to_bytes(2, "big")
    return bytes((first, 127)) + size.to_bytes(8, "big")
