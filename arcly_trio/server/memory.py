"""Give freed memory back to the operating system (glibc's allocator).

What it is for: a streaming server allocates and frees a lot of memory, in bursts (a GOP, an
HLS window, a publish session's frames), and glibc keeps what is freed for later instead of
giving it back, so the server's resident memory (RSS) stays at its high-water mark although
every object is gone. Two things fix it, both called by ``arcly-trio serve``:

* :func:`pin_mmap_threshold`. glibc serves blocks of at least its *mmap threshold* (128 KiB)
  as mappings of their own, returned to the system when freed, but each time such a block is
  freed it raises the threshold to that block's size (up to 32 MiB on 64-bit). After a stream of
  large frames has come and gone (200 KB video frames, a GOP of many megabytes), later blocks
  of that size come from the heap, and the heap keeps their pages once they are freed.
  ``benchmarks/attacks.py`` measured it: 25 publish sessions with a 12 MB GOP left RSS 220 MB
  up after everything was freed; with the threshold pinned, 4.5 MB. It pins the threshold with
  ``mallopt(M_MMAP_THRESHOLD, ...)``, which also turns the dynamic adjustment off: every block
  from 128 KiB up is its own mapping again. Smaller frames are unaffected; a large one costs a
  mapping and an unmapping (microseconds).
* :class:`HeapTrimmer`. Blocks under the threshold (most video frames, FLV tags, HLS parts of
  ordinary streams) come from the heap; once freed, the heap keeps their pages (it gives back
  only a free stretch at its very top). ``malloc_trim(0)`` (:func:`trim_heap`) gives back every
  free page of the heap; the trimmer calls it in a worker thread (it takes a few milliseconds
  for hundreds of megabytes, and nothing when there is nothing to give back) a second after a
  stream ends (an observer of :class:`~arcly_trio.kernel.events.StreamClosed`), and every
  ``interval`` seconds (what HLS deletes after its delay, what players let go). At most one trim
  runs at a time, and at most one per ``settle`` seconds after streams end, however many end.

An embedding application may use both: call :func:`pin_mmap_threshold` once, add a
:class:`HeapTrimmer` as an observer (``EngineBuilder.observer``; the engine runs it).

Error policy: where the C library is not glibc (musl, macOS, Windows), :func:`pin_mmap_threshold`
and :func:`trim_heap` are no-ops returning ``False`` and :func:`heap_trim_available` is
``False``; nothing here raises.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import trio

from arcly_trio.kernel.events import StreamClosed
from arcly_trio.kernel.observe import Observer

__all__ = ["DEFAULT_MMAP_THRESHOLD", "HeapTrimmer", "heap_trim_available", "pin_mmap_threshold", "trim_heap"]

log = logging.getLogger("arcly_trio.server")

#: glibc's own default threshold.
DEFAULT_MMAP_THRESHOLD = 128 * 1024
_M_MMAP_THRESHOLD = -3  # from <malloc.h>
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@functools.cache
def _glibc() -> Any:
    """glibc, or ``None`` where the C library is another."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 - a probe: only glibc has it (musl has mallopt as a stub)
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.malloc_trim.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


def pin_mmap_threshold(threshold: int = DEFAULT_MMAP_THRESHOLD) -> bool:
    """Pin glibc's mmap threshold at ``threshold`` bytes (see the module docstring). Returns
    whether it was done."""
    libc = _glibc()
    if libc is None:
        return False
    done = bool(libc.mallopt(_M_MMAP_THRESHOLD, threshold))
    if not done:
        log.debug("mallopt(M_MMAP_THRESHOLD, %d) refused", threshold)
    return done


def heap_trim_available() -> bool:
    """Whether :func:`trim_heap` can do anything here (glibc)."""
    return _glibc() is not None


def trim_heap() -> bool:
    """``malloc_trim(0)``: give every free page of the heap back to the system. Returns whether
    memory was given back (``False`` too where glibc is absent). Blocks for as long as it takes
    (milliseconds): call it in a worker thread from async code."""
    libc = _glibc()
    return bool(libc.malloc_trim(0)) if libc is not None else False


def _rss_bytes() -> int:
    """This process's resident memory (0 where ``/proc`` is absent)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


class HeapTrimmer(Observer):
    """Trims the heap (:func:`trim_heap`) ``settle`` seconds after a stream ends and every
    ``interval`` seconds (see the module docstring). Add it as an observer; the engine runs it.

    ``trims`` counts the trims done; ``released`` the resident bytes they gave back (as far as
    RSS shows).
    """

    name = "heap-trim"

    def __init__(
        self,
        *,
        interval: float = 10.0,
        settle: float = 1.0,
        trim: Callable[[], bool] = trim_heap,
        threaded: bool = True,
    ) -> None:
        if not interval > 0 or settle < 0:
            raise ValueError("interval must be > 0 and settle >= 0")
        self.interval = interval
        self.settle = settle
        self.trims = 0
        self.released = 0
        self._trim = trim
        self._threaded = threaded
        """Whether ``trim`` runs in a worker thread (``False``: inline, for tests on trio's
        autojump clock, which jumps ahead while a thread runs)."""
        self._ended = trio.Event()

    def on_stream_closed(self, event: StreamClosed) -> None:
        self._ended.set()

    async def run(self, engine: Any = None, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Trim after streams end and on the timer, until cancelled (the engine starts this)."""
        task_status.started()
        while True:
            with trio.move_on_after(self.interval):
                await self._ended.wait()
                await trio.sleep(self.settle)  # let the stream's tasks and services let go too
            self._ended = trio.Event()
            before = _rss_bytes()
            if self._threaded:
                await trio.to_thread.run_sync(self._trim)
            else:
                self._trim()
                await trio.lowlevel.checkpoint()
            released = max(0, before - _rss_bytes())
            self.trims += 1
            self.released += released
            if released >= 1024 * 1024:
                log.debug("heap trimmed: %.0f MB given back to the system", released / 1e6)
