"""The engine's options, collected fluently: the builder that :meth:`Engine.builder()
<.engine.Engine.builder>` returns (:class:`~.engine.EngineBuilder`) is an :class:`EngineOptions`
that adds the protocol workers and ``build()``.

:class:`EngineOptions` checks each option as it is given and records it in its
:class:`EngineSettings`, a plain record of every setting with its default, which the engine is
made from. It knows nothing of the engine itself, so the engine can subclass it without either
module importing the other back.

Error policy: an out-of-range number is a ``ValueError`` and an application registered twice is
``AppAlreadyRegistered`` (an :class:`~arcly_trio.core.errors.ArclyError`), both raised by the
method given it; nothing else raises.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Self

import attrs

from arcly_trio.core.errors import AppAlreadyRegistered
from arcly_trio.kernel.auth import AllowAll, Authenticator
from arcly_trio.kernel.observe import Observer
from arcly_trio.kernel.service import StreamService
from arcly_trio.kernel.sources import StreamSource
from arcly_trio.kernel.spec import AppSpec
from arcly_trio.kernel.throttle import AuthThrottle

__all__ = ["EngineOptions", "EngineSettings"]


@attrs.define
class EngineSettings:
    """Every setting of an engine but its protocol workers, as :class:`EngineOptions` collected
    them (each field is documented by the option's method)."""

    max_publishers: int | float = math.inf
    max_publishers_per_address: int | None = None
    exempt_addresses: frozenset[str] = frozenset()
    idle_timeout: float | None = None
    publish_start_timeout: float | None = None
    apps: dict[str, AppSpec] = attrs.field(factory=dict)
    authenticator: Authenticator = attrs.field(factory=AllowAll)
    observers: list[Observer] = attrs.field(factory=list)
    services: list[StreamService] = attrs.field(factory=list)
    sources: list[StreamSource] = attrs.field(factory=list)
    max_pulls: int = 256
    auth_throttle: AuthThrottle | None = None
    session_prefix: str = ""
    max_loop_lag: float = 1.0


class EngineOptions:
    """Fluent options of an engine (each method returns the builder); see :class:`EngineSettings`."""

    def __init__(self) -> None:
        self.settings = EngineSettings()
        """What has been set so far."""

    def max_publishers(self, n: int) -> Self:
        """At most ``n`` concurrent publishers across all applications."""
        if n < 0:
            raise ValueError("max_publishers must be >= 0")
        self.settings.max_publishers = n
        return self

    def max_publishers_per_address(self, n: int | None, exempt: Iterable[str] = ()) -> Self:
        """At most ``n`` concurrent publishers from one client address (``None``: no limit);
        the addresses in ``exempt`` (trusted peers, such as the workers' local relays) are not
        counted, nor are publishers without an address (in-process ones)."""
        if n is not None and n < 1:
            raise ValueError("max_publishers_per_address must be >= 1 or None")
        self.settings.max_publishers_per_address = n
        self.settings.exempt_addresses = frozenset(exempt)
        return self

    def publish_start_timeout(self, seconds: float | None) -> Self:
        """End a publish that has sent no media frame (audio or video, not a config) within
        ``seconds`` of being accepted (``None``: never; the idle timeout still applies)."""
        if seconds is not None and not 0 < seconds < math.inf:
            raise ValueError("publish_start_timeout must be > 0 or None")
        self.settings.publish_start_timeout = seconds
        return self

    def idle_timeout(self, seconds: float | None) -> Self:
        """Reap a stream after ``seconds`` without a frame (``None``: never)."""
        if seconds is not None and seconds <= 0:
            raise ValueError("idle_timeout must be > 0 or None")
        self.settings.idle_timeout = seconds
        return self

    def application(self, spec: AppSpec | str) -> Self:
        spec = AppSpec(spec) if isinstance(spec, str) else spec
        if spec.name in self.settings.apps:
            raise AppAlreadyRegistered(spec.name)
        self.settings.apps[spec.name] = spec
        return self

    def authenticator(self, authenticator: Authenticator) -> Self:
        self.settings.authenticator = authenticator
        return self

    def auth_throttle(self, throttle: AuthThrottle) -> Self:
        """How refused authorizations are slowed down per address (default: ``AuthThrottle()``)."""
        self.settings.auth_throttle = throttle
        return self

    def observer(self, observer: Observer) -> Self:
        """Add an observer (several may be added; each gets every event, in order)."""
        self.settings.observers.append(observer)
        return self

    def service(self, service: StreamService) -> Self:
        self.settings.services.append(service)
        return self

    def source(self, source: StreamSource) -> Self:
        """Add a stream source (pull relays, cluster peers: see :mod:`.sources`); sources are
        asked in the order they were added."""
        self.settings.sources.append(source)
        return self

    def max_pulls(self, n: int) -> Self:
        """At most ``n`` streams brought by stream sources at once (see :mod:`.sources`)."""
        if n < 1:
            raise ValueError("max_pulls must be >= 1")
        self.settings.max_pulls = n
        return self

    def session_prefix(self, prefix: str) -> Self:
        """Client ids are ``{prefix}{n}`` (default ``""``; the workers of ``--workers`` use
        ``w{index}-``)."""
        self.settings.session_prefix = prefix
        return self

    def max_loop_lag(self, seconds: float) -> Self:
        """The ``event-loop`` health check fails when the loop ran this late (default 1 s)
        in the last 10 seconds."""
        if seconds <= 0:
            raise ValueError("max_loop_lag must be > 0")
        self.settings.max_loop_lag = seconds
        return self
