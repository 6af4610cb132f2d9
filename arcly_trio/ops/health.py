"""Health checks of storage: can the server still write where it keeps HLS and recordings?

:func:`storage_check` makes a check for :meth:`~arcly_trio.kernel.health.HealthRegistry.add`
that writes a small probe object into a :class:`~arcly_trio.storage.Storage` (a file in a
worker thread for a directory) and deletes it again: a full, read-only or vanished disk fails
it.

Given a ``witness`` (the service that writes there: :meth:`Recorder.wrote_at
<arcly_trio.services.recordings.recorder.Recorder.wrote_at>`), the check first asks it when it
last wrote with success: a write less than ``fresh`` seconds ago (and no failure since) answers
for the directory, with no probe. Under load that matters: a probe's worker-thread hops wait
behind the busy loop and the writer's own threads for the GIL, and the check timed out ("no
answer within 2 s", a 503) while the recorder was writing every second; only an idle directory
is probed.

Error policy: the check never raises; a storage error is a failing result with its message.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable

import trio

from arcly_trio.kernel.health import CheckResult
from arcly_trio.storage import FileStorage, Storage, StorageError

__all__ = ["storage_check", "PROBE_KEY"]

PROBE_KEY = "_health-probe"


def storage_check(
    storage: Storage,
    *,
    what: str = "storage",
    witness: Callable[[], float | None] | None = None,
    fresh: float = 10.0,
) -> Callable[[], Awaitable[CheckResult]]:
    """A check that ``storage`` accepts a write and a delete, or that ``witness`` wrote there
    within ``fresh`` seconds (see the module docstring)."""
    where = str(storage.root) if isinstance(storage, FileStorage) else type(storage).__name__

    async def check() -> CheckResult:
        if witness is not None:
            wrote_at = witness()
            if wrote_at is not None and trio.current_time() - wrote_at < fresh:
                age = trio.current_time() - wrote_at
                return CheckResult(True, f"{what} at {where} is writable (written {age:.0f} s ago)")
        probe = f"{PROBE_KEY}-{os.getpid()}"
        try:
            await storage.put(probe, b"ok")
            await storage.delete(probe)
        except StorageError as exc:
            return CheckResult(False, f"{what} at {where} is not writable: {exc}")
        return CheckResult(True, f"{what} at {where} is writable")

    return check
