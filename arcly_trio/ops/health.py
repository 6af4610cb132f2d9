"""Health checks of storage: can the server still write where it keeps HLS and recordings?

:func:`storage_check` makes a check for :meth:`~arcly_trio.kernel.health.HealthRegistry.add`
that writes a small probe object into a :class:`~arcly_trio.storage.Storage` (a file in a
worker thread for a directory) and deletes it again: a full, read-only or vanished disk fails
it.

Error policy: the check never raises; a storage error is a failing result with its message.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable

from arcly_trio.kernel.health import CheckResult
from arcly_trio.storage import FileStorage, Storage, StorageError

__all__ = ["storage_check", "PROBE_KEY"]

PROBE_KEY = "_health-probe"


def storage_check(storage: Storage, *, what: str = "storage") -> Callable[[], Awaitable[CheckResult]]:
    """A check that ``storage`` accepts a write and a delete (see the module docstring)."""
    where = str(storage.root) if isinstance(storage, FileStorage) else type(storage).__name__

    async def check() -> CheckResult:
        probe = f"{PROBE_KEY}-{os.getpid()}"
        try:
            await storage.put(probe, b"ok")
            await storage.delete(probe)
        except StorageError as exc:
            return CheckResult(False, f"{what} at {where} is not writable: {exc}")
        return CheckResult(True, f"{what} at {where} is writable")

    return check
