"""Per-stream sources: one stream name mapped to one camera (or any upstream) URL.

``--source APP/STREAM=URL`` (repeatable; ``source = [...]`` in the config) maps a stream to
an ``rtsp://user:pass@camera/...`` (or ``rtmp://``, ``http://`` FLV) URL, where a ``--pull``
template maps a whole application. :class:`StreamSources` is a kernel stream source that also
runs with the engine:

* **on demand** (the default): the first authorized play of ``APP/STREAM`` starts the pull
  (:func:`~arcly_trio.relay.pull.pull_into`, shared with ``--pull``), every viewer shares it,
  and it stops ``idle`` seconds after the last viewer left;
* **always** (``?always=1`` on the URL; the parameter is not sent to the camera): the pull
  runs from the start with no viewer (recording, HLS, thumbnails go on), and when the camera
  goes away for longer than its RTSP reconnect window it is started again, with a backoff of
  ``retry`` seconds doubling to ``max_retry`` (reset once a pull started).

Attacker's view: the table is the operator's; a viewer can only name keys, so a play of a
name that is not in it is not this source's (no upstream connection). Credentials in the URLs
never reach logs, ``/api/streams`` or events: URLs are shown redacted
(:func:`~arcly_trio.core.redact.redact_url`) and errors scrubbed, as for every pull.

Error policy: a malformed ``--source`` value is a ``ValueError`` at start-up (the CLI says
which); an on-demand pull that fails is ``StreamNotFound`` for its viewers; an always-pull
that fails or ends is logged (redacted) and retried, and never stops the engine. A publish of
the same key by someone else meanwhile makes the always-pull wait and retry.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import attrs
import trio

from arcly_trio.core.errors import StreamError, StreamNotFound
from arcly_trio.core.keys import Credentials, StreamKey
from arcly_trio.core.redact import redact_url, scrub
from arcly_trio.core.text import printable
from arcly_trio.relay.links import LinkStats
from arcly_trio.relay.pull import pull_into

if TYPE_CHECKING:
    from arcly_trio.kernel.engine import Engine
    from arcly_trio.kernel.sources import SourceRequest

__all__ = ["CameraSource", "StreamSources", "parse_source"]

log = logging.getLogger("arcly_trio.relay")

SCHEMES = ("rtsp://", "rtmp://", "rtmps://", "http://", "https://")


@attrs.frozen
class CameraSource:
    """One stream and where it comes from; ``always``: pulled with no viewer too."""

    key: StreamKey
    url: str = attrs.field(repr=lambda url: repr(redact_url(url)))
    always: bool = False


def parse_source(value: str) -> CameraSource:
    """``APP/STREAM=URL[?always=1]`` as a :class:`CameraSource`; ``ValueError`` (its message
    without the URL's credentials) for anything else."""
    name, sep, url = value.partition("=")
    if not sep or "/" not in name:
        raise ValueError("--source takes APP/STREAM=URL")
    app, _, stream = name.partition("/")
    key = StreamKey(app, stream)  # InvalidStreamName (a ValueError) for a bad name
    if not url.lower().startswith(SCHEMES):
        raise ValueError(f"--source {name}: the URL must be rtsp://, rtmp://, rtmps://, http:// or https://")
    always = False
    base, qsep, query = url.partition("?")
    if qsep:
        kept = []
        for part in query.split("&"):
            field, _, flag = part.partition("=")
            if field == "always":
                if flag not in ("0", "1", "true", "false"):
                    raise ValueError(f"--source {name}: always=0 or always=1")
                always = flag in ("1", "true")
            else:
                kept.append(part)
        url = base + ("?" + "&".join(kept) if kept else "")
    return CameraSource(key, url, always)


class StreamSources:
    """The per-stream table (module docstring): register with ``EngineBuilder.source``.

    Args:
        sources: the streams and their URLs (a key at most once: ``ValueError``).
        idle: seconds without a viewer before an on-demand pull stops.
        timeout: seconds to connect and get the first frames.
        read_timeout: seconds without data before a pull is considered dead (an RTSP camera
            is reconnected within it, its stream staying up).
        retry, max_retry: the always-pulls' backoff, in seconds.
        credentials: what the pulled streams are published with (``token``: this server's
            publish token, if any).
    """

    name = "source"
    publish_protocols = ("pull",)

    def __init__(
        self,
        sources: Iterable[CameraSource],
        *,
        idle: float = 10.0,
        timeout: float = 10.0,
        read_timeout: float = 30.0,
        retry: float = 1.0,
        max_retry: float = 30.0,
        credentials: Credentials | None = None,
    ) -> None:
        self.sources: dict[StreamKey, CameraSource] = {}
        for source in sources:
            if source.key in self.sources:
                raise ValueError(f"--source {source.key}: given twice")
            self.sources[source.key] = source
        self.idle = idle
        self.timeout = timeout
        self.read_timeout = read_timeout
        self.retry = retry
        self.max_retry = max_retry
        base = credentials or Credentials()
        self.credentials = Credentials(token=base.token, peer=None, query=base.query, protocol="pull")
        self.links: dict[StreamKey, LinkStats] = {}
        self.starts: dict[StreamKey, int] = {}
        """Pulls started per key (an always-pull counts each (re)start)."""

    def provides(self, key: StreamKey) -> bool:
        source = self.sources.get(key)
        return source is not None and not source.always  # an always-pull is brought by run()

    async def open_stream(
        self, engine: Engine, request: SourceRequest, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        source = self.sources.get(request.key)
        if source is None or source.always:
            raise StreamNotFound(request.key.app, request.key.name)
        await self._pull(engine, request, source, self.idle, task_status=task_status)

    async def _pull(
        self,
        engine: Engine,
        request: SourceRequest,
        source: CameraSource,
        idle: float,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        stats = LinkStats(redact_url(source.url))
        self.links[source.key] = stats

        def started() -> None:
            self.starts[source.key] = self.starts.get(source.key, 0) + 1
            task_status.started()

        try:
            await pull_into(
                engine,
                request,
                source.url,
                stats=stats,
                credentials=self.credentials,
                idle=idle,
                timeout=self.timeout,
                read_timeout=self.read_timeout,
                task_status=_Started(started),  # type: ignore[arg-type]
            )
        finally:
            if self.links.get(source.key) is stats:
                del self.links[source.key]

    async def run(self, engine: Engine, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep every always-pull running (module docstring)."""
        async with trio.open_nursery() as nursery:
            for source in self.sources.values():
                if source.always:
                    nursery.start_soon(self._keep, engine, source)
            task_status.started()

    async def _keep(self, engine: Engine, source: CameraSource) -> None:
        from arcly_trio.kernel.sources import SourceRequest  # noqa: PLC0415  (a type, at run time here)

        delay = self.retry
        while True:
            before = self.starts.get(source.key, 0)
            try:
                await self._pull(engine, SourceRequest(source.key), source, math.inf)
            except StreamError as exc:  # failed to start (logged by pull_into), or the key is taken
                log.debug("source %s: %s", source.key, printable(scrub(str(exc), source.url)))
            except Exception as exc:  # an upstream client's surprise must not stop the engine
                log.warning("source %s: %s", source.key, printable(scrub(repr(exc), source.url)))
            if self.starts.get(source.key, 0) > before:
                delay = self.retry
            log.info("source %s (%s): pulled again in %g s", source.key, redact_url(source.url), delay)
            await trio.sleep(delay)
            delay = min(delay * 2, self.max_retry)

    def stream_status(self, key: StreamKey) -> dict[str, Any]:
        stats = self.links.get(key)
        return {"pull": stats.document()} if stats is not None else {}


class _Started:
    """A task status that calls ``then`` when started (to count the starts)."""

    def __init__(self, then: Any) -> None:
        self.then = then

    def started(self, value: Any = None) -> None:
        self.then()
