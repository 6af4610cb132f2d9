"""Quick answers: the hot requests a route can answer without its handler (the HTTP worker's session lane).

A route may carry, beside its handler, a *quick* answerer (``Router.get(..., quick=...)``):
a synchronous function that, given a plain ``GET``/``HEAD`` request's path parameters and its
raw query, either declines (``None``: the handler serves the request as always) or returns a
:class:`QuickJob` that serves it exactly as the handler would have (same status, headers and
body bytes, same accounting). The HTTP worker's lane (:mod:`arcly_trio.workers.http.lane`) uses
it for a live LL-HLS session's playlist reloads and parts: no request object, no exchange, no
router work beyond one match, one write per answer.

A job's life: :meth:`QuickJob.begin` (the request starts: a session's activity), then
:meth:`QuickJob.answer` until it gives a :class:`QuickAnswer`; while it gives ``None`` the
lane awaits :meth:`QuickJob.wait` (the next change of what the answer depends on, ``False``
once the job's deadline passed, after which ``answer(final=True)`` always answers); then
:meth:`QuickJob.end` (whatever happened: cancelled, the client gone).

Error policy: a quick answerer never raises for what a client sent (it declines instead, and
the handler gives the client its error); nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

__all__ = ["ChangeSource", "QuickAnswer", "QuickJob", "QuickAnswerer"]


class QuickAnswer:
    """A whole response: ``status``, ``content_type``, the ``headers`` the handler adds after
    ``content-type`` and ``content-length`` (lower-case names), and the ``body``."""

    __slots__ = ("status", "content_type", "headers", "body")

    def __init__(self, status: int, content_type: str, headers: tuple[tuple[str, str], ...], body: bytes) -> None:
        self.status = status
        self.content_type = content_type
        self.headers = headers
        self.body = body

    def __repr__(self) -> str:
        return f"<QuickAnswer {self.status} {self.content_type} {len(self.body)} bytes>"


class ChangeSource(Protocol):
    """What a job's answer waits on: ``wait(deadline)`` returns ``True`` at its next change,
    ``False`` at ``deadline`` (or at once once it has :attr:`ended`)."""

    ended: bool

    async def wait(self, deadline: float) -> bool: ...


class QuickJob(Protocol):
    """One request a quick answerer took (see the module docstring). :attr:`source` and
    :attr:`deadline` say what :meth:`wait` waits on and until when, for a server that waits
    for many jobs at once (the HTTP worker's session hub: one wait per source)."""

    deadline: float

    @property
    def source(self) -> ChangeSource | None: ...

    def begin(self) -> None: ...

    def answer(self, final: bool = False) -> QuickAnswer | None: ...

    async def wait(self) -> bool: ...

    def end(self) -> None: ...


QuickAnswerer = Callable[[Any, Mapping[str, str], bytes, "tuple[str, int] | None"], "QuickJob | None"]
"""``quick(engine, params, raw_query, peer)``: a job, or ``None`` (the handler serves it)."""
