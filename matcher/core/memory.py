"""Giving freed memory back to the operating system during long runs.

A run calls the native kernel for thousands of chunks, each allocating and
freeing a few megabytes while small results stay alive. glibc keeps the freed
space in its heaps, fragmented, so a long exhaustive run's resident memory
grew with every chunk although almost all of it was free (docs/performance.md,
*Memory over long runs*). `malloc_trim` hands it back; on other C libraries
this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_TRIM = _malloc_trim()


def release_free_memory() -> None:
    """Return the C library's free heap memory to the OS (glibc); otherwise nothing."""
    if _TRIM is not None:
        _TRIM(0)
