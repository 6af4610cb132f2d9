"""Push relays: every publish of an application forwarded to RTMP or SRT targets (restreaming).

:class:`PushService` is a kernel stream service (register it with ``EngineBuilder.service``):
each :class:`PushTarget` is a URL template (``rtmp://a.rtmp.youtube.com/live2/KEY``,
``rtmp://backup/{app}/{stream}``; ``rtmps://`` works too, and ``srt://HOST:PORT?streamid=
{app}/{stream}&passphrase=...&latency=MS``, an SRT caller, :mod:`.srt_push`) and the applications it applies to
(all of them by default). For every stream of those applications, each target gets its own
kernel subscription (so the kernel's lag policy applies to it alone: a slow target drops to the
next keyframe, counted, and never slows the publisher or another target) and its own link task:

* it connects with the RTMP client and publishes; once connected it sends the stream's current
  metadata and configs, then frames from the next keyframe on;
* a target that fails (refuses, cannot be reached, breaks, stops reading for
  ``write_timeout``) is retried with backoff (1 s doubling up to 30 s, reset after a connection
  that lasted); while it is down its frames are skipped (counted), so it resumes live;
* when the stream ends the link says goodbye (``FCUnpublish``, ``deleteStream``) and stops.

Streams that are copies of a stream published elsewhere (pulled from another node or worker:
protocols ``"cluster"`` and ``"worker"``, see ``skip_protocols``) are not pushed again: the node
where they are published pushes them.

Events: each link tells the observers (metrics) and the application's event feed when it
connects (``ServiceEvent`` ``push-connected``) and fails (``push-failed``, with the error).

State: ``stream_status(key)`` gives ``{"push": [...]}`` for ``/api/streams``: per target its
redacted URL (:meth:`~arcly_trio.protocols.rtmp.url.RtmpUrl.redacted`: no credentials, no query
values, the stream key shortened; errors have the URL's secrets scrubbed, and so do the log lines), state
(``connecting``, ``connected``, ``retrying``, ``stopped``), retries,
bytes, frames, frames skipped, the kernel's drops and the last error.

Error policy: nothing a target does reaches the stream: its errors are logged (peer text
escaped) and counted on its link; only a bug in this module would end the service's own
subscription, never the stream.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

import trio

from arcly_trio.clients.rtmp import RtmpPublisher, open_rtmp_publisher
from arcly_trio.core.errors import ConnectionLost, LocalProtocolError, RemoteProtocolError, RemoteRefused
from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.core.keys import StreamKey, check_name
from arcly_trio.core.redact import redact_url, scrub
from arcly_trio.core.text import printable
from arcly_trio.kernel.events import ServiceEvent
from arcly_trio.protocols.rtmp.url import check_template, fill_template, parse_rtmp_url
from arcly_trio.relay.links import Backoff, LinkStats
from arcly_trio.relay.srt_push import open_srt_publisher, parse_srt_target

if TYPE_CHECKING:
    from arcly_trio.kernel.spec import AppSpec
    from arcly_trio.kernel.stream import Stream
    from arcly_trio.kernel.subscription import Subscription
    from arcly_trio.relay.srt_push import SrtPublisher

__all__ = ["PushTarget", "PushService"]

log = logging.getLogger("arcly_trio.relay")

_VIDEO = FrameKind.VIDEO


class PushTarget:
    """One push target: a URL template and the applications it applies to (``None``: all)."""

    def __init__(self, url: str, apps: Iterable[str] | None = None) -> None:
        if _is_srt(url):
            parse_srt_target(fill_template(url, "app", "stream"))
        else:
            check_template(url)
            if not url.lower().startswith(("rtmp://", "rtmps://")):
                raise ValueError(f"push targets are rtmp://, rtmps:// or srt:// URLs, not {redact_url(url)!r}")
        self.url = url
        self.apps = None if apps is None else frozenset(check_name(app, "application name") for app in apps)

    def applies_to(self, app: str) -> bool:
        return self.apps is None or app in self.apps

    @classmethod
    def parse(cls, text: str) -> PushTarget:
        """``URL`` (every application) or ``APP=URL`` (one), as ``--push`` takes it."""
        app, sep, rest = text.partition("=")
        if sep and "/" not in app and ":" not in app:
            return cls(rest, [app])
        return cls(text)

    def __repr__(self) -> str:
        return f"<PushTarget {_shown(fill_template(self.url, 'app', 'stream'))}>"


def _is_srt(url: str) -> bool:
    return url[:6].lower() == "srt://"


def _shown(url: str) -> str:
    """The URL as logs and the API show it: RTMP's stream key shortened; for SRT no query values
    (the streamid and passphrase)."""
    return redact_url(url) if _is_srt(url) else parse_rtmp_url(url).redacted()


class _Link:
    """One target of one stream: the connection loop and the frame gate (module docstring)."""

    def __init__(self, service: PushService, stream: Stream, url: str) -> None:
        self.service = service
        self.stream = stream
        self.key = stream.key
        self.url = url
        self.stats = LinkStats(_shown(url))
        self.publisher: RtmpPublisher | SrtPublisher | None = None
        self.fresh = True
        self.configs: dict[tuple[FrameKind, int], Frame] = {}
        self.has_video = False
        self.broken = trio.Event()
        self.subscription: Subscription | None = None

    def tell(self, what: str, detail: str) -> None:
        """A ``ServiceEvent`` for the observers (metrics) and the application's event feed."""
        self.stream.notify(ServiceEvent(self.key, trio.current_time(), "push", what, f"{self.stats.url}: {detail}"))

    def document(self) -> dict[str, Any]:
        document = self.stats.document()
        document["drops"] = self.subscription.dropped if self.subscription is not None else 0
        return document

    async def maintain(self) -> None:
        """Connect, stay connected until broken, back off, again; until cancelled."""
        service = self.service
        backoff = Backoff(*service.backoff)
        while True:
            self.stats.set_state("connecting")
            error = "closed"
            try:
                opener = open_srt_publisher if _is_srt(self.url) else open_rtmp_publisher
                async with opener(self.url, timeout=service.timeout, write_timeout=service.write_timeout) as publisher:
                    self.fresh = True
                    self.publisher = publisher
                    self.stats.set_state("connected")
                    backoff.connected()
                    log.info("pushing %s to %s", self.key, self.stats.url)
                    self.tell("push-connected", "connected")
                    await self.broken.wait()
                    error = publisher.ended or "closed"
            except (RemoteRefused, ConnectionLost, RemoteProtocolError) as exc:
                error = str(exc)
            finally:
                self.publisher = None
            self.broken = trio.Event()
            self.stats.failed(printable(scrub(error, self.url)))  # a refusal may quote the stream key
            self.tell("push-failed", self.stats.last_error or "")
            delay = backoff.next_delay()
            log.warning(
                "push of %s to %s failed: %s; retrying in %g s", self.key, self.stats.url, self.stats.last_error, delay
            )
            await trio.sleep(delay)

    def _start_point(self, batch: Sequence[Frame]) -> int | None:
        """Where a fresh connection may start in ``batch``: the first keyframe of the main video
        track (any frame of a stream without video), or ``None``."""
        for index, frame in enumerate(batch):
            if frame.config:
                continue
            if not self.has_video or (frame.kind is _VIDEO and frame.keyframe and frame.track == 0):
                return index
        return None

    async def deliver(self, batch: Sequence[Frame]) -> None:
        for frame in batch:
            if frame.config:
                self.configs[(frame.kind, frame.track)] = frame
            if frame.kind is _VIDEO:
                self.has_video = True
        publisher = self.publisher
        if publisher is None:
            self.stats.skipped += sum(1 for frame in batch if not frame.config)
            return
        frames: Sequence[Frame] = batch
        if self.fresh:
            start = self._start_point(batch)
            if start is None:
                self.stats.skipped += sum(1 for frame in batch if not frame.config)
                return
            self.stats.skipped += sum(1 for frame in batch[:start] if not frame.config)
            # Metadata first, then the configs current now, then the media from the keyframe.
            configs = sorted(self.configs.values(), key=lambda frame: frame.kind is not FrameKind.DATA)
            frames = [*configs, *batch[start:]]
            self.fresh = False
        try:
            await publisher.send_frames(frames)
        except (ConnectionLost, RemoteProtocolError) as exc:
            if self.publisher is publisher:
                publisher.ended = publisher.ended or str(exc)
                self.publisher = None
                self.broken.set()
            return
        except LocalProtocolError as exc:  # a frame RTMP cannot carry: skip it, keep the link
            log.debug("push of %s: skipped frames: %s", self.key, exc)
            return
        self.stats.frames += len(frames)
        self.stats.bytes = publisher.bytes_sent


class PushService:
    """Forwards every publish of its applications to its targets (see the module docstring).

    Args:
        targets: :class:`PushTarget` objects, or strings as ``--push`` takes them.
        timeout: seconds to connect and be accepted by a target.
        write_timeout: seconds a target may take no data before it is dropped and retried.
        backoff: (first delay, longest delay, seconds a connection must last to reset it).
        capacity: frames queued per target before it drops to the next keyframe.
        skip_protocols: publish protocols whose streams are not pushed (copies of streams
            published elsewhere).
    """

    name = "push"

    def __init__(
        self,
        targets: Iterable[PushTarget | str],
        *,
        timeout: float = 10.0,
        write_timeout: float = 10.0,
        backoff: tuple[float, float, float] = (1.0, 30.0, 10.0),
        capacity: int = 512,
        skip_protocols: Iterable[str] = ("cluster", "worker"),
    ) -> None:
        self.targets = [target if isinstance(target, PushTarget) else PushTarget.parse(target) for target in targets]
        self.timeout = timeout
        self.write_timeout = write_timeout
        self.backoff = backoff
        self.capacity = capacity
        self.skip_protocols = frozenset(skip_protocols)
        self.links: dict[StreamKey, list[_Link]] = {}

    def applies_to(self, spec: AppSpec) -> bool:
        return any(target.applies_to(spec.name) for target in self.targets)

    async def serve_stream(self, stream: Stream, subscription: Subscription) -> None:
        key = stream.key
        if stream.info.protocol in self.skip_protocols:
            return
        links = [
            _Link(self, stream, fill_template(target.url, key.app, key.name))
            for target in self.targets
            if target.applies_to(key.app)
        ]
        if not links:
            return
        self.links[key] = links
        try:
            with ExitStack() as stack:
                links[0].subscription = subscription
                for link in links[1:]:
                    link.subscription = stack.enter_context(stream.service_subscription(self.name, self.capacity))
                async with trio.open_nursery() as nursery:
                    for link in links:
                        nursery.start_soon(self._run_link, link)
        finally:
            for link in links:
                link.stats.set_state("stopped")
            if self.links.get(key) is links:
                del self.links[key]

    async def _run_link(self, link: _Link) -> None:
        subscription = link.subscription
        assert subscription is not None
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(link.maintain)
                while True:
                    batch = await subscription.next_batch()
                    if not batch:
                        break
                    await link.deliver(batch)
                nursery.cancel_scope.cancel()
        except Exception:  # a bug here ends this target of this stream only
            log.exception("push of %s to %s failed", link.key, link.stats.url)
            link.stats.failed("internal error")
            return
        log.info(
            "push of %s to %s stopped (stream ended; %d frames, %d bytes)",
            link.key,
            link.stats.url,
            link.stats.frames,
            link.stats.bytes,
        )

    def stream_status(self, key: StreamKey) -> dict[str, Any]:
        links = self.links.get(key)
        return {"push": [link.document() for link in links]} if links else {}
