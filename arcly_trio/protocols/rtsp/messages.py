"""RTSP 1.0 messages (RFC 2326, with RFC 7826's rules where they are stricter): parse and build.

Sans-IO like h11: a :class:`RtspReader` takes the bytes of one TCP connection as they arrive and
hands back whole events — an :class:`RtspRequest`, an :class:`RtspResponse`, or an
:class:`Interleaved` packet (RTP or RTCP framed as ``$``, channel, 16-bit length, data, RFC 2326
§10.12) — in arrival order. :func:`encode_request`, :func:`encode_response` and
:func:`encode_interleaved` write them; :func:`interleaved_header` gives just the 4-byte frame
head, so a server can share one packetized RTP buffer among many viewers and write
``[head, packet]`` with ``writev``. :func:`header` finds a header by name, case-insensitively.

The reader's ``role`` says which start lines it accepts: a ``"server"`` reads requests (and
interleaved data, e.g. a publisher's RTP or a player's RTCP receiver reports); a ``"client"``
reads responses, requests a server may send it (``GET_PARAMETER``, ``SET_PARAMETER``,
``ANNOUNCE``, ``REDIRECT``) and interleaved data. Stray CR/LF between messages (some clients send
them as keep-alives) are skipped.

Attacker's view: a message head is at most :data:`MAX_HEAD` bytes with at most
:data:`MAX_HEADERS` header lines, a body at most :data:`MAX_BODY` bytes (``Content-Length``
checked before anything is buffered), an interleaved packet at most 65535 bytes by its framing;
so the reader buffers at most one head plus one body or packet — about 72 KiB — whatever the
peer sends. Nothing the peer sends is echoed into a response by this module; header values are
returned as text (UTF-8, strictly decoded) for the caller to bound and escape before logging.
How long a head may take to arrive (slowloris) is the worker's clock:
:attr:`RtspReader.in_message` tells it a message has begun and not ended.

Error policy: :meth:`RtspReader.feed` raises :class:`RtspError` (a
:class:`~arcly_trio.core.errors.RemoteProtocolError`) for anything malformed or over a limit,
carrying the RTSP ``status`` a server should answer with (400, 413, 431, 505...); after an
error the reader is unusable (the connection should answer once and close). It never raises
anything else (fuzzed). The encoders raise ``ValueError`` for values that would corrupt the
framing (CR/LF in a header, a channel outside 0-255, a packet over 65535 bytes).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable
from typing import Final, Literal

import attrs

from arcly_trio.core.errors import RemoteProtocolError

__all__ = [
    "MAX_BODY",
    "MAX_HEAD",
    "MAX_HEADERS",
    "MAX_INTERLEAVED",
    "RTSP_VERSION",
    "REASONS",
    "Interleaved",
    "RtspError",
    "RtspReader",
    "RtspRequest",
    "RtspResponse",
    "encode_interleaved",
    "encode_request",
    "encode_response",
    "header",
    "interleaved_header",
]

MAX_HEAD: Final = 8 * 1024
"""The longest message head (start line and headers, with the blank line) the reader accepts."""
MAX_HEADERS: Final = 64
"""The most header lines in one message head."""
MAX_BODY: Final = 64 * 1024
"""The longest body (``Content-Length``) the reader accepts: an SDP or a parameter list."""
MAX_INTERLEAVED: Final = 0xFFFF
"""The longest interleaved packet (its framing has a 16-bit length)."""
RTSP_VERSION: Final = "RTSP/1.0"

REASONS: Final[dict[int, str]] = {
    200: "OK",
    201: "Created",
    250: "Low on Storage Space",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    408: "Request Timeout",
    409: "Conflict",
    411: "Length Required",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    431: "Request Header Fields Too Large",
    451: "Parameter Not Understood",
    453: "Not Enough Bandwidth",
    454: "Session Not Found",
    455: "Method Not Valid in This State",
    456: "Header Field Not Valid for Resource",
    457: "Invalid Range",
    459: "Aggregate Operation Not Allowed",
    460: "Only Aggregate Operation Allowed",
    461: "Unsupported Transport",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "RTSP Version Not Supported",
    551: "Option not supported",
}
"""Reason phrases of the status codes (RFC 2326 §7.1.1, RFC 7826 §17)."""

Headers = tuple[tuple[str, str], ...]

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VERSION = re.compile(r"RTSP/\d\.\d")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


class RtspError(RemoteProtocolError):
    """The peer sent something that is not RTSP, or over a limit; ``status`` is the answer."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@attrs.frozen
class RtspRequest:
    """One request: ``method`` (e.g. ``"DESCRIBE"``), ``uri`` as sent, headers in order."""

    method: str
    uri: str
    headers: Headers
    body: bytes = b""

    def header(self, name: str) -> str | None:
        """The first header called ``name`` (any case), or None."""
        return header(self.headers, name)


@attrs.frozen
class RtspResponse:
    """One response: ``status`` (e.g. 200), ``reason`` phrase, headers in order."""

    status: int
    reason: str
    headers: Headers
    body: bytes = b""

    def header(self, name: str) -> str | None:
        """The first header called ``name`` (any case), or None."""
        return header(self.headers, name)


@attrs.frozen
class Interleaved:
    """One ``$``-framed packet on the TCP connection: ``channel`` 0-255 and its bytes."""

    channel: int
    data: bytes


def header(headers: Iterable[tuple[str, str]], name: str) -> str | None:
    """The value of the first header called ``name`` (case-insensitive), or None."""
    wanted = name.lower()
    for key, value in headers:
        if key.lower() == wanted:
            return value
    return None


class RtspReader:
    """Bytes of one RTSP connection in, whole events out (see the module docstring)."""

    def __init__(self, *, role: Literal["server", "client"]) -> None:
        if role not in ("server", "client"):
            raise ValueError(f"role must be 'server' or 'client', not {role!r}")
        self._role = role
        self._buffer = bytearray()
        self._head: RtspRequest | RtspResponse | None = None  # parsed head awaiting its body
        self._body_length = 0
        self._broken: RtspError | None = None

    @property
    def in_message(self) -> bool:
        """True while a message or packet has begun and not been handed back whole."""
        return self._head is not None or bool(self._buffer.strip(b"\r\n"))

    @property
    def buffered(self) -> int:
        """How many received bytes wait for the rest of their message."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[RtspRequest | RtspResponse | Interleaved]:
        """Take ``data`` and return every event it completes, in order."""
        if self._broken is not None:
            raise self._broken
        self._buffer += data
        events: list[RtspRequest | RtspResponse | Interleaved] = []
        try:
            while True:
                event = self._next()
                if event is None:
                    return events
                events.append(event)
        except RtspError as exc:
            self._broken = exc
            self._buffer.clear()
            raise

    def _next(self) -> RtspRequest | RtspResponse | Interleaved | None:
        buffer = self._buffer
        if self._head is not None:
            if len(buffer) < self._body_length:
                return None
            body = bytes(buffer[: self._body_length])
            del buffer[: self._body_length]
            head, self._head = self._head, None
            return attrs.evolve(head, body=body)
        # Skip blank lines between messages.
        skip = 0
        while skip < len(buffer) and buffer[skip] in (0x0D, 0x0A):
            skip += 1
        if skip:
            del buffer[:skip]
        if not buffer:
            return None
        if buffer[0] == 0x24:  # '$'
            if len(buffer) < 4:
                return None
            channel = buffer[1]
            (length,) = struct.unpack_from(">H", buffer, 2)
            if len(buffer) < 4 + length:
                return None
            packet = bytes(buffer[4 : 4 + length])
            del buffer[: 4 + length]
            return Interleaved(channel, packet)
        end = buffer.find(b"\r\n\r\n", 0, MAX_HEAD)
        size = 4
        lf_end = buffer.find(b"\n\n", 0, MAX_HEAD)
        if lf_end != -1 and (end == -1 or lf_end < end):
            end, size = lf_end, 2
        if end == -1:
            if len(buffer) >= MAX_HEAD:
                raise RtspError(f"message head longer than {MAX_HEAD} bytes", 431)
            # A line that cannot start a message is refused early, not buffered to the limit.
            if len(buffer) >= 5 and not (_TOKEN.match(bytes(buffer[:1]).decode("latin-1"))):
                raise RtspError("not an RTSP message")
            return None
        raw = bytes(buffer[:end])
        del buffer[: end + size]
        head = self._parse_head(raw)
        length_text = header(head.headers, "content-length")
        length = 0
        if length_text is not None:
            length_text = length_text.strip()
            if not length_text.isascii() or not length_text.isdigit() or len(length_text) > 9:
                raise RtspError("bad Content-Length")
            length = int(length_text)
            if length > MAX_BODY:
                raise RtspError(f"body of {length} bytes over the limit of {MAX_BODY}", 413)
        if length == 0:
            return head
        self._head, self._body_length = head, length
        return self._next()

    def _parse_head(self, raw: bytes) -> RtspRequest | RtspResponse:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise RtspError("message head is not UTF-8") from None
        lines = text.replace("\r\n", "\n").split("\n")
        if len(lines) - 1 > MAX_HEADERS:
            raise RtspError(f"more than {MAX_HEADERS} headers", 431)
        start = lines[0]
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            if not line or line[0] in " \t":
                raise RtspError("folded or empty header line")
            name, colon, value = line.partition(":")
            if not colon or not _TOKEN.fullmatch(name):
                raise RtspError("malformed header line")
            value = value.strip(" \t")
            if _CONTROL.search(value):
                raise RtspError("control character in a header")
            headers.append((name, value))
        parts = start.split(" ", 2)
        if start.startswith("RTSP/"):
            if self._role != "client":
                raise RtspError("a response sent to a server")
            if len(parts) < 2 or not _VERSION.fullmatch(parts[0]):
                raise RtspError("malformed status line")
            code = parts[1]
            if len(code) != 3 or not code.isascii() or not code.isdigit():
                raise RtspError("malformed status code")
            reason = parts[2] if len(parts) == 3 else ""
            if _CONTROL.search(reason):
                raise RtspError("control character in the reason phrase")
            return RtspResponse(int(code), reason, tuple(headers))
        if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not parts[1]:
            raise RtspError("malformed request line")
        method, uri, version = parts
        if _CONTROL.search(uri) or " " in uri:
            raise RtspError("malformed request URI")
        if not _VERSION.fullmatch(version):
            raise RtspError("malformed request line")
        if version != RTSP_VERSION:
            raise RtspError(f"unsupported version {version}", 505)
        return RtspRequest(method, uri, tuple(headers))


def _encode_headers(headers: Iterable[tuple[str, str]], body: bytes) -> list[str]:
    lines: list[str] = []
    has_length = False
    for name, value in headers:
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"bad header name {name!r}")
        if "\r" in value or "\n" in value:
            raise ValueError(f"CR/LF in the value of header {name}")
        if name.lower() == "content-length":
            has_length = True
        lines.append(f"{name}: {value}\r\n")
    if body and not has_length:
        lines.append(f"Content-Length: {len(body)}\r\n")
    return lines


def encode_request(method: str, uri: str, headers: Iterable[tuple[str, str]] = (), body: bytes = b"") -> bytes:
    """One request's bytes; adds ``Content-Length`` when there is a body and none is given."""
    if not _TOKEN.fullmatch(method):
        raise ValueError(f"bad method {method!r}")
    if not uri or _CONTROL.search(uri) or " " in uri:
        raise ValueError("bad request URI")
    lines = [f"{method} {uri} {RTSP_VERSION}\r\n", *_encode_headers(headers, body), "\r\n"]
    return "".join(lines).encode("utf-8") + body


def encode_response(
    status: int, reason: str | None = None, headers: Iterable[tuple[str, str]] = (), body: bytes = b""
) -> bytes:
    """One response's bytes; ``reason`` defaults to the standard phrase of ``status``."""
    if not 100 <= status <= 999:
        raise ValueError(f"bad status {status}")
    if reason is None:
        reason = REASONS.get(status, "Unknown")
    if _CONTROL.search(reason):
        raise ValueError("control character in the reason phrase")
    lines = [f"{RTSP_VERSION} {status} {reason}\r\n", *_encode_headers(headers, body), "\r\n"]
    return "".join(lines).encode("utf-8") + body


def interleaved_header(channel: int, length: int) -> bytes:
    """The 4-byte ``$`` head of an interleaved packet of ``length`` bytes on ``channel``."""
    if not 0 <= channel <= 255:
        raise ValueError(f"interleaved channel {channel} outside 0-255")
    if not 0 <= length <= MAX_INTERLEAVED:
        raise ValueError(f"interleaved packet of {length} bytes over {MAX_INTERLEAVED}")
    return struct.pack(">BBH", 0x24, channel, length)


def encode_interleaved(channel: int, data: bytes) -> bytes:
    """One interleaved packet's bytes: the ``$`` head and ``data``."""
    return interleaved_header(channel, len(data)) + data
