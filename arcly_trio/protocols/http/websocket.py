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

What a peer sends is held to :class:`WebSocketLimits` by a :class:`WebSocketGuard` (fed the
frames wsproto parsed, with the time): a message's bytes *and* its number of fragments (a
flood of empty or 1-byte continuation frames never reaches a byte limit, yet each one costs
the event loop a parse and the server a part to hold), a minimum progress rate for a message
that takes longer than a grace period, and a rate of control frames (pings, pongs). The
connection closes with the guard's :class:`Violation` (1009 for a message too big, 1008 for
the rest) at the first frame over a limit.

Error policy: nothing here raises; :func:`handshake_problem` returns the status and reason,
:class:`WebSocketGuard` returns a :class:`Violation`.
"""

from __future__ import annotations

import base64
import binascii
import math

import attrs
import h11

from arcly_trio.protocols.http.router import HttpRequest

__all__ = [
    "OPCODE_BINARY",
    "OPCODE_TEXT",
    "POLICY_VIOLATION",
    "TOO_BIG",
    "Violation",
    "WebSocketGuard",
    "WebSocketLimits",
    "frame_header",
    "rebuild_request_head",
    "head_size",
    "handshake_problem",
    "valid_websocket_key",
]

OPCODE_TEXT = 0x1
OPCODE_BINARY = 0x2
POLICY_VIOLATION = 1008
TOO_BIG = 1009


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
    host = request.header("host")
    if not host:
        return 400, "missing Host header"
    try:  # the handshake library reads Host as IDNA: a host it cannot read is refused here
        host.encode("latin-1").decode("idna")
    except (UnicodeError, ValueError):
        return 400, "the Host header is not a host name"
    # The handshake library reads the last Upgrade and Connection headers only: hold every
    # handshake to that reading, so that what is accepted here is never refused after routing.
    upgrades = [value for name, value in request.headers if name == "upgrade"]
    if not upgrades or upgrades[-1].lower() != "websocket":
        return 400, "the Upgrade header must be websocket (one Upgrade header)"
    connections = [value for name, value in request.headers if name == "connection"]
    if not connections or "upgrade" not in {token.strip().lower() for token in connections[-1].split(",")}:
        return 400, "the Connection header must name upgrade (one Connection header)"
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


def head_size(event: h11.Request) -> int:
    """``len(rebuild_request_head(event))``, counted without building the bytes."""
    size = len(event.method) + len(event.target) + len(event.http_version) + 11  # "M T HTTP/V\r\n", "\r\n"
    for name, value in event.headers.raw_items():
        size += len(name) + len(value) + 4
    return size


def frame_header(size: int, opcode: int = OPCODE_BINARY) -> bytes:
    """The header of one unmasked, final frame (a whole server-to-client message) of ``size``
    payload bytes."""
    first = 0x80 | opcode
    if size < 126:
        return bytes((first, size))
    if size < 0x10000:
        return bytes((first, 126)) + size.to_bytes(2, "big")
    return bytes((first, 127)) + size.to_bytes(8, "big")


# --------------------------------------------------------------------------- what a peer may send


@attrs.frozen
class WebSocketLimits:
    """What one peer's WebSocket frames may cost (see :class:`WebSocketGuard`).

    Attributes:
        max_message: the most bytes (characters for text) one message may hold.
        max_fragments: the most frames one message may come in (browsers send one).
        message_grace: seconds a message may take, whatever its rate.
        min_rate: bytes per second a message must average once it took longer than
            ``message_grace`` (a 4 MiB message may take 4 MiB / ``min_rate`` seconds).
        control_rate: control frames (ping, pong) per second, sustained.
        control_burst: control frames allowed at once above the sustained rate.
    """

    max_message: int
    max_fragments: int = 128
    message_grace: float = 5.0
    min_rate: int = 8 * 1024
    control_rate: float = 10.0
    control_burst: int = 30


@attrs.frozen
class Violation:
    """Why a peer's WebSocket is closed: the close code (1008 or 1009) and a reason that
    names the limit (no peer-supplied text)."""

    code: int
    reason: str


class WebSocketGuard:
    """Counts what a peer's frames cost, frame by frame, and says when one goes over
    :class:`WebSocketLimits` (sans-IO: the caller passes the time).

    Feed it every data event (:meth:`on_data`: the bytes of a piece of a frame, whether the
    frame and the message are complete) and every control frame (:meth:`on_control`); each
    returns a :class:`Violation` or ``None``. :attr:`deadline` is when the message in progress
    becomes too slow if nothing more arrives (:meth:`check_progress` at that time says so).

    Attributes:
        held: bytes of the message in progress (what a reader assembling it holds).
        fragments: frames of the message in progress so far.
        frames: frames seen in all (data and control).
    """

    __slots__ = ("limits", "held", "fragments", "frames", "_started", "_tokens", "_refilled")

    def __init__(self, limits: WebSocketLimits, now: float) -> None:
        self.limits = limits
        self.held = 0
        self.fragments = 0
        self.frames = 0
        self._started = now
        self._tokens = float(limits.control_burst)
        self._refilled = now

    @property
    def deadline(self) -> float:
        """When the message in progress falls under the minimum rate (``inf`` between messages)."""
        if not self.held and not self.fragments:
            return math.inf
        limits = self.limits
        return self._started + max(limits.message_grace, self.held / limits.min_rate)

    def on_data(self, size: int, frame_finished: bool, message_finished: bool, now: float) -> Violation | None:
        """A piece of a data frame: ``size`` bytes (characters for text)."""
        limits = self.limits
        if not self.held and not self.fragments:
            self._started = now
        if frame_finished:
            self.frames += 1
            self.fragments += 1
        self.held += size
        if self.held > limits.max_message:
            return Violation(TOO_BIG, f"message over the maximum message size of {limits.max_message} bytes")
        if self.fragments > limits.max_fragments:
            return Violation(POLICY_VIOLATION, f"message in more than {limits.max_fragments} fragments")
        if message_finished:
            self.held = self.fragments = 0
            return None
        return self.check_progress(now)

    def check_progress(self, now: float) -> Violation | None:
        """A violation if the message in progress is past :attr:`deadline`."""
        if now >= self.deadline:
            return Violation(
                POLICY_VIOLATION,
                f"message too slow: {self.held} bytes in {now - self._started:.0f} s "
                f"(at least {self.limits.min_rate} bytes/s)",
            )
        return None

    def on_control(self, now: float) -> Violation | None:
        """A ping or pong (a token bucket: ``control_burst`` at once, ``control_rate`` a second)."""
        limits = self.limits
        self.frames += 1
        self._tokens = min(float(limits.control_burst), self._tokens + (now - self._refilled) * limits.control_rate)
        self._refilled = now
        if self._tokens < 1.0:
            return Violation(POLICY_VIOLATION, f"more than {limits.control_rate:g} control frames a second")
        self._tokens -= 1.0
        return None
