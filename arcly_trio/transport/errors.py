"""What a broken transport raises, and the one mapping of it to arcly-trio's errors.

A trio stream whose peer went away raises ``trio.BrokenResourceError`` (a reset, a broken TLS
session: trio wraps the ``OSError`` or ``ssl.SSLError``), ``trio.ClosedResourceError`` (this side
closed it meanwhile), and a raw socket call (the direct-write egress, ``connect``) raises
``OSError`` itself (``ConnectionResetError``, ``BrokenPipeError``, ``ssl.SSLError``...).
:data:`TRANSPORT_ERRORS` names them all once, so every edge catches the same set, and
:func:`map_transport_errors` turns them into one of ours, as httpcore's ``map_exceptions`` does:
:class:`~arcly_trio.core.errors.PeerGone` or :class:`~arcly_trio.core.errors.ClientGone` on the
server side, :class:`~arcly_trio.core.errors.ConnectionLost` on the client side,
:class:`~arcly_trio.core.errors.DirectoryUnavailable` in the cluster.

``trio.TooSlowError`` is not a transport error (a deadline passed, the transport may be fine):
each edge says what its timeout means (``WriteTimeout``, a dropped client...).

Error policy: :func:`map_transport_errors` re-raises one of our errors as it is (even
:class:`~arcly_trio.core.errors.CannotListen`, which is an ``OSError`` too) and lets anything
that is not a transport error through untouched; the transport error is the mapped error's
context (``raise ... from None``: the message says it, the traceback does not repeat it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import trio

from arcly_trio.core.errors import ArclyError

__all__ = ["TRANSPORT_ERRORS", "describe", "map_transport_errors"]

TRANSPORT_ERRORS: tuple[type[Exception], ...] = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)
"""What reading from or writing to a peer raises when the peer or the connection is gone
(``OSError`` covers ``ConnectionError`` and ``ssl.SSLError``): ``except TRANSPORT_ERRORS``."""


def describe(exc: BaseException) -> str:
    """A transport error's reason in one line: its message, or its type's name if it has none
    (trio's ``ClosedResourceError()`` says nothing)."""
    return str(exc) or type(exc).__name__


@contextmanager
def map_transport_errors(to: Callable[[str], ArclyError]) -> Iterator[None]:
    """Run the block; a transport error raised in it becomes ``to(reason)`` (:func:`describe`).

    ``with map_transport_errors(PeerGone): data = await stream.receive_some(n)``; ``to`` may be
    any callable that builds the error from the reason (``lambda reason: ConnectionLost(f"{url}:
    {reason}")``).
    """
    try:
        yield
    except ArclyError:
        raise
    except TRANSPORT_ERRORS as exc:
        raise to(describe(exc)) from None
