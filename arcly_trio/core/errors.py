"""The one exception hierarchy of arcly-trio.

Everything the project raises on purpose derives from :class:`ArclyError` (named after the
library, as httpcore's ``HTTPCoreError``), so a caller can catch all of it, or match one case by
class and read its fields. :data:`StreamError` is the same class under its older name: ``except
StreamError`` catches exactly what ``except ArclyError`` does. Transport errors from trio
(``BrokenResourceError``, ``ClosedResourceError``, ``OSError``) are mapped to these at the edge
of each protocol adapter, by :mod:`arcly_trio.transport`: to :class:`PeerGone` or
:class:`ClientGone` on the server side, :class:`ConnectionLost` on the client side.

This module imports nothing from trio: the sans-IO protocol cores raise these too.
"""

from __future__ import annotations

__all__ = [
    "ArclyError",
    "StreamError",
    "AppNotFound",
    "AppAlreadyRegistered",
    "StreamNotFound",
    "StreamAlreadyPublishing",
    "PublisherLimitReached",
    "AddressPublisherLimitReached",
    "Unauthorized",
    "AuthorizationBusy",
    "PublishEnded",
    "PublisherReplaced",
    "PublisherKicked",
    "StreamIdleReaped",
    "PublishStartTimedOut",
    "PublishRateLimited",
    "EngineClosed",
    "ProtocolError",
    "RemoteProtocolError",
    "LocalProtocolError",
    "MessageTooLarge",
    "BudgetExceeded",
    "InvalidStreamName",
    "StorageError",
    "PeerGone",
    "ClientGone",
    "WriteTimeout",
    "StreamPublishedElsewhere",
    "RemoteRefused",
    "ConnectionLost",
    "DirectoryUnavailable",
    "CannotListen",
]


class ArclyError(Exception):
    """Root of every error arcly-trio raises on purpose."""


StreamError = ArclyError
"""The root's older name (the same class, kept so that ``except StreamError`` goes on working)."""


class AppNotFound(ArclyError):
    """No application is registered under ``app``."""

    def __init__(self, app: str) -> None:
        super().__init__(f"application {app!r} is not registered")
        self.app = app


class AppAlreadyRegistered(ArclyError):
    """An application named ``app`` is registered already."""

    def __init__(self, app: str) -> None:
        super().__init__(f"application {app!r} is already registered")
        self.app = app


class StreamNotFound(ArclyError):
    """Nothing is published under ``app/stream``."""

    def __init__(self, app: str, stream: str) -> None:
        super().__init__(f"stream {app}/{stream} is not published")
        self.app = app
        self.stream = stream


class StreamAlreadyPublishing(ArclyError):
    """A publisher holds ``app/stream`` and the application's takeover policy is ``reject``."""

    def __init__(self, app: str, stream: str) -> None:
        super().__init__(f"stream {app}/{stream} already has a publisher")
        self.app = app
        self.stream = stream


class StreamPublishedElsewhere(StreamAlreadyPublishing):
    """Another node (or worker) of the cluster holds the publish lease of ``app/stream``."""

    def __init__(self, app: str, stream: str, node: str) -> None:
        ArclyError.__init__(self, f"stream {app}/{stream} is published on node {node!r}")
        self.app = app
        self.stream = stream
        self.node = node


class PublisherLimitReached(ArclyError):
    """The engine-wide number of concurrent publishers is at ``limit``."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"publisher limit of {limit} reached")
        self.limit = limit


class AddressPublisherLimitReached(PublisherLimitReached):
    """The client's address (``address``) already holds ``limit`` publishers
    (``--max-publishers-per-ip``): one address cannot take every publisher slot."""

    def __init__(self, limit: int, address: str) -> None:
        ArclyError.__init__(self, f"publisher limit of {limit} per address reached")
        self.limit = limit
        self.address = address


class Unauthorized(ArclyError):
    """The authenticator refused an ``action`` ("publish" or "play") on ``app/stream``.

    ``missing`` says that the client presented no credential at all (no token, no signature),
    as opposed to a wrong, expired or refused one: HTTP answers ``401`` then, ``403`` otherwise
    (:attr:`http_status`).
    """

    def __init__(self, app: str, stream: str, action: str, reason: str = "", *, missing: bool = False) -> None:
        detail = f": {reason}" if reason else ""
        super().__init__(f"{action} of {app}/{stream} refused{detail}")
        self.app = app
        self.stream = stream
        self.action = action
        self.reason = reason
        self.missing = missing

    @property
    def http_status(self) -> int:
        """``401`` when no credential was presented, ``403`` when one was and is refused."""
        return 401 if self.missing else 403


class AuthorizationBusy(Unauthorized):
    """Refused at once: the client's address already has as many authorizations of this
    ``action`` in flight and waiting as the engine's throttle allows (the authenticator was not
    asked). HTTP answers ``429`` with ``Retry-After: {retry_after}``; RTMP and the WebSocket
    frame API refuse as for any :class:`Unauthorized`."""

    retry_after = 1
    """Seconds a client should wait before it tries again."""

    def __init__(self, app: str, stream: str, action: str) -> None:
        super().__init__(app, stream, action, "too many authorizations in flight from this address; retry later")

    @property
    def http_status(self) -> int:
        return 429


class PublishEnded(ArclyError):
    """The kernel ended a publish session that its publisher had not closed.

    Raised when the publisher's context exits (and by ``send`` afterwards); ``reason`` says why.
    """

    def __init__(self, app: str, stream: str, reason: str) -> None:
        super().__init__(f"publish of {app}/{stream} ended: {reason}")
        self.app = app
        self.stream = stream
        self.reason = reason


class PublisherReplaced(PublishEnded):
    """Another publisher took the stream over (takeover policy ``replace``)."""

    def __init__(self, app: str, stream: str) -> None:
        super().__init__(app, stream, "replaced by a new publisher")


class PublisherKicked(PublishEnded):
    """An operator ended the publish (``DELETE /api/sessions/{id}``, ``Engine.kick``)."""

    def __init__(self, app: str, stream: str) -> None:
        super().__init__(app, stream, "kicked by the operator")


class StreamIdleReaped(PublishEnded):
    """No frame arrived within the idle timeout, so the stream was reaped."""

    def __init__(self, app: str, stream: str, idle_timeout: float) -> None:
        super().__init__(app, stream, f"no frame for {idle_timeout:g} s (idle timeout)")
        self.idle_timeout = idle_timeout


class PublishStartTimedOut(PublishEnded):
    """No media frame (audio or video, not a config) arrived within ``timeout`` seconds of the
    publish being accepted (``--publish-start-timeout``), so the session was ended and its
    publisher slot given back."""

    def __init__(self, app: str, stream: str, timeout: float) -> None:
        super().__init__(app, stream, f"no media within {timeout:g} s of the publish (publish start timeout)")
        self.timeout = timeout


class PublishRateLimited(PublishEnded):
    """The publisher sent media faster than its application's limit (``AppSpec.max_publish_bitrate``,
    ``--max-publish-bitrate``) for longer than the burst allowance, so the session was cut.

    ``limit`` is the limit in bits/s; ``measured`` the publisher's rate in bits/s over the stretch
    that used the allowance up (since the allowance was last full).
    """

    def __init__(self, app: str, stream: str, limit: int, measured: float) -> None:
        super().__init__(
            app, stream, f"sent {measured / 1e6:.1f} Mbit/s, over the limit of {limit / 1e6:g} Mbit/s (rate limited)"
        )
        self.limit = limit
        self.measured = measured


class EngineClosed(ArclyError):
    """The engine is not running (not entered yet, or shut down)."""

    def __init__(self) -> None:
        super().__init__("the engine is not running")


class ProtocolError(ArclyError):
    """A protocol conversation cannot go on. It ends that one connection, nothing else."""


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes that break the protocol (malformed, oversized, out of order)."""


class LocalProtocolError(ProtocolError):
    """This side used a protocol core wrongly (a bug in the caller, not the peer's fault)."""


class MessageTooLarge(RemoteProtocolError):
    """The peer announced or sent a ``kind`` message of ``size`` bytes, over ``limit``."""

    def __init__(self, kind: str, size: int, limit: int) -> None:
        super().__init__(f"{kind} message of {size} bytes exceeds the limit of {limit}")
        self.kind = kind
        self.size = size
        self.limit = limit


class BudgetExceeded(RemoteProtocolError):
    """Holding ``size`` more bytes for this peer would take a shared ``budget`` past ``limit``.

    Raised by a parser whose :class:`~arcly_trio.core.budget.ByteBudget` refused a reservation;
    it ends that one connection (the peer is the one making the server hold memory).
    """

    def __init__(self, budget: str, size: int, limit: int | None) -> None:
        super().__init__(f"{budget}: {size} more bytes would pass the limit of {limit}")
        self.budget = budget
        self.size = size
        self.limit = limit


class InvalidStreamName(ArclyError, ValueError):
    """An application or stream name that arcly-trio refuses (length or characters).

    It is a ``ValueError`` too, for callers that build names from their own configuration.

    ``name`` is kept as given; ``str()`` of the error shows it escaped (``repr``), so it is
    safe to log.
    """

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"invalid name {name[:80]!r}{'...' if len(name) > 80 else ''}: {reason}")
        self.name = name
        self.reason = reason


class StorageError(ArclyError):
    """A storage backend refused a key or failed to read or write it."""


class PeerGone(ArclyError):
    """The peer of a connection closed it or broke it while the server was writing to it
    (the transport's error is the message). It ends that one connection."""


class ClientGone(ArclyError):
    """An HTTP client closed its connection, broke it, or did not read within the write timeout.

    Raised by the HTTP worker's ``Exchange`` writes (trio's transport errors are mapped to it);
    the worker ends the connection quietly. A sibling of :class:`PeerGone` (what the direct-write
    egress raises for the same cause), not a kind of it, so ``except PeerGone`` means what it did.
    """


class WriteTimeout(ArclyError):
    """The peer of a connection took no data for ``timeout`` seconds (it stopped reading).
    It ends that one connection."""

    def __init__(self, timeout: float) -> None:
        super().__init__(f"a write blocked for {timeout:g} s (the peer does not read)")
        self.timeout = timeout


class RemoteRefused(ArclyError):
    """A remote server refused what a client of ours asked (``stage``: ``connect``,
    ``createStream``, ``publish`` or ``play``), saying ``code`` (``NetStream.Play.StreamNotFound``,
    an HTTP status...) and ``description`` (the server's text, escaped when shown)."""

    def __init__(self, stage: str, code: str, description: str = "") -> None:
        detail = f": {description!r}" if description else ""
        super().__init__(f"{stage} refused ({code}){detail}")
        self.stage = stage
        self.code = code
        self.description = description


class ConnectionLost(ArclyError):
    """A client's connection to a remote server failed, broke, ended or timed out (``reason``).

    Transport errors (``OSError``, trio's ``BrokenResourceError``, timeouts) are mapped to it at
    the edge of the client adapters.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DirectoryUnavailable(ArclyError):
    """The cluster directory (Redis, or the supervisor's) cannot be reached: ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"cluster directory unavailable: {reason}")
        self.reason = reason


class CannotListen(ArclyError, OSError):
    """A protocol worker cannot listen on its port (taken, no permission...): ``protocol``
    (``rtmp``, ``http``...), ``host``, ``port`` as asked, and the system's ``errno`` and
    ``strerror``. An ``OSError`` too, for callers that handle binding errors as such."""

    def __init__(self, protocol: str, host: str, port: int, errno: int | None, strerror: str) -> None:
        what = "is already in use" if strerror == "Address already in use" else f"cannot be listened on ({strerror})"
        self.message = f"{host}:{port} {what}"
        ArclyError.__init__(self, self.message)
        self.errno = errno
        self.strerror = strerror
        self.protocol = protocol
        self.host = host
        self.port = port

    def __str__(self) -> str:
        return self.message
