"""Give freed memory back to the operating system (glibc's allocator).

What it is for: glibc serves blocks of at least its *mmap threshold* (128 KiB) as mappings of
their own, returned to the system when freed, but each time such a block is freed it raises the
threshold to that block's size (up to 32 MiB on 64-bit). After a stream of large frames has come
and gone (200 KB video frames, a GOP of many megabytes), later blocks of that size come from the
heap, and the heap keeps their pages once they are freed: every frame is free, but the server's
resident memory stays up. ``benchmarks/attacks.py`` measured it: 25 publish sessions with a
12 MB GOP left RSS 220 MB up after everything was freed; with the threshold pinned, 4.5 MB.

:func:`pin_mmap_threshold` pins the threshold with ``mallopt(M_MMAP_THRESHOLD, ...)``, which
also turns the dynamic adjustment off: every block from 128 KiB up is its own mapping again.
Smaller frames are unaffected; a large one costs a mapping and an unmapping (microseconds).
``arcly-trio serve`` calls it at start-up; an embedding application may call it too.

Error policy: a no-op returning ``False`` where the C library is not glibc (musl, macOS,
Windows) or ``mallopt`` refuses; it never raises.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

__all__ = ["DEFAULT_MMAP_THRESHOLD", "pin_mmap_threshold"]

log = logging.getLogger("arcly_trio.server")

#: glibc's own default threshold.
DEFAULT_MMAP_THRESHOLD = 128 * 1024
_M_MMAP_THRESHOLD = -3  # from <malloc.h>


def pin_mmap_threshold(threshold: int = DEFAULT_MMAP_THRESHOLD) -> bool:
    """Pin glibc's mmap threshold at ``threshold`` bytes (see the module docstring). Returns
    whether it was done."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # only glibc has it (musl has mallopt as a stub)
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    done = bool(mallopt(_M_MMAP_THRESHOLD, threshold))
    if not done:
        log.debug("mallopt(M_MMAP_THRESHOLD, %d) refused", threshold)
    return done
