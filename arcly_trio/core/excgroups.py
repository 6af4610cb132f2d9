"""The one helper for exception groups: let a lone exception out of a nursery as itself.

A trio nursery wraps whatever its tasks raise in an ``ExceptionGroup``. Where a caller expects
one of this project's errors (a worker's connection failing, an engine refusing to start), the
group is only in the way: :func:`unwrap_single` re-raises its one leaf as itself, and
:func:`main_failure` picks what ended a group of a failure and cancellations.

Error policy: groups of several real failures are re-raised unchanged; nothing is swallowed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["leaves", "unwrap_single", "main_failure"]


def leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    """Every exception in ``group`` and its nested groups, depth first."""
    out: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            out.extend(leaves(exc))
        else:
            out.append(exc)
    return out


@contextmanager
def unwrap_single() -> Iterator[None]:
    """Let a lone exception out of a nursery as itself rather than in an exception group."""
    try:
        yield
    except BaseExceptionGroup as group:
        found = leaves(group)
        if len(found) == 1:
            raise found[0] from None
        raise


def main_failure(group: BaseExceptionGroup[BaseException], *ignore: type[BaseException]) -> BaseException | None:
    """The first leaf of ``group`` that is not one of ``ignore`` (e.g. ``trio.Cancelled``),
    or ``None`` if there is none (the group is then all cancellations)."""
    for exc in leaves(group):
        if not isinstance(exc, ignore):
            return exc
    return None
