"""Observers: synchronous hooks on everything the kernel does, for metrics and logging.

Subclass :class:`Observer` and override the hooks you need; each receives the event object that
the application's event feed gets too (see :mod:`.events`), except ``on_frame``, which receives
the stream key and the frame, and ``on_auth_decided``, whose event goes to observers only (a
refused client has no stream). Hooks run inline on the kernel's tasks, so keep them cheap and
never block; ``on_frame`` runs once per published frame (not per subscriber).

An observer that needs a task (to write what it saw somewhere: an audit file, an HTTP hook)
may have ``run(engine, *, task_status)``, started by the engine like a stream service's (see
:mod:`.service`); like services it may also have ``install_routes(router)`` (a ``/metrics``
route) and ``health_status()``. Several observers may be added (``EngineBuilder.observer``);
each gets every event, in the order they were added.

Error policy: an exception raised by a hook is logged (the first one per hook with its traceback,
then one line per 1000 failures) and swallowed. An observer can never break a stream.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

from arcly_trio.core.keys import StreamKey

if TYPE_CHECKING:
    from arcly_trio.core.frame import Frame
    from arcly_trio.kernel.events import (
        AuthDecided,
        RateLimited,
        ServiceEvent,
        SessionKicked,
        StreamClosed,
        StreamEvent,
        StreamPublished,
        StreamReaped,
        StreamUnpublished,
        SubscriberEvicted,
        SubscriberJoined,
        SubscriberLagged,
        SubscriberLeft,
        SubscriberResumed,
    )

__all__ = ["Observer", "SafeObserver", "ObserverSet"]

log = logging.getLogger("arcly_trio.observer")


class Observer:
    """No-op hooks; subclass and override."""

    def on_publish_started(self, event: StreamPublished) -> None: ...
    def on_publish_ended(self, event: StreamUnpublished) -> None: ...
    def on_rate_limited(self, event: RateLimited) -> None: ...
    def on_stream_closed(self, event: StreamClosed) -> None: ...
    def on_stream_reaped(self, event: StreamReaped) -> None: ...
    def on_subscriber_joined(self, event: SubscriberJoined) -> None: ...
    def on_subscriber_left(self, event: SubscriberLeft) -> None: ...
    def on_subscriber_lagged(self, event: SubscriberLagged) -> None: ...
    def on_subscriber_resumed(self, event: SubscriberResumed) -> None: ...
    def on_subscriber_evicted(self, event: SubscriberEvicted) -> None: ...
    def on_service_event(self, event: ServiceEvent) -> None: ...
    def on_auth_decided(self, event: AuthDecided) -> None: ...
    def on_session_kicked(self, event: SessionKicked) -> None: ...
    def on_frame(self, key: StreamKey, frame: Frame) -> None: ...


class SafeObserver:
    """Wraps a user observer so that its failures are logged and contained.

    ``frame_hook`` is ``None`` when the observer does not override ``on_frame``, so the
    per-frame path costs nothing for observers that do not want frames.
    """

    def __init__(self, observer: Observer) -> None:
        self._observer = observer
        self.failures: Counter[str] = Counter()
        overrides = type(observer).on_frame is not Observer.on_frame
        self.frame_hook = self._on_frame if overrides else None

    def _failed(self, hook: str) -> None:
        self.failures[hook] += 1
        count = self.failures[hook]
        if count == 1:
            log.exception("observer %r raised in %s (further failures are counted)", self._observer, hook)
        elif count % 1000 == 0:
            log.error("observer %r has raised %d times in %s", self._observer, count, hook)

    def notify(self, event: StreamEvent) -> None:
        hook = event.hook
        try:
            method = getattr(self._observer, hook, None)
            if method is not None:
                method(event)
        except Exception:
            self._failed(hook)

    def _on_frame(self, key: StreamKey, frame: Frame) -> None:
        try:
            self._observer.on_frame(key, frame)
        except Exception:
            self._failed("on_frame")


class ObserverSet:
    """Several observers as one: each event goes to every observer, in the order they were
    added, each one failure-proof (a :class:`SafeObserver`). ``frame_hook`` is ``None`` when no
    observer wants frames, so the per-frame path then costs nothing."""

    def __init__(self, observers: list[Observer]) -> None:
        self._safe = [SafeObserver(observer) for observer in observers]
        hooks = [safe.frame_hook for safe in self._safe if safe.frame_hook is not None]
        if not hooks:
            self.frame_hook: Callable[[StreamKey, Frame], None] | None = None
        elif len(hooks) == 1:
            self.frame_hook = hooks[0]
        else:

            def all_hooks(key: StreamKey, frame: Frame) -> None:
                for hook in hooks:
                    hook(key, frame)

            self.frame_hook = all_hooks

    @property
    def observers(self) -> list[Observer]:
        return [safe._observer for safe in self._safe]

    @property
    def failures(self) -> Counter[str]:
        """Failed hook calls of every observer, by hook name."""
        total: Counter[str] = Counter()
        for safe in self._safe:
            total.update(safe.failures)
        return total

    def notify(self, event: StreamEvent) -> None:
        for safe in self._safe:
            safe.notify(event)
