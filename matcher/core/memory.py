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

# mallopt parameters (glibc's malloc.h) and the values `keep_freed_memory` sets.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
TRIM_THRESHOLD = 256 * 1024 * 1024
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's own ceiling for its moving threshold


def _libc_function(name: str, *argtypes: type) -> Callable[..., int] | None:
    lib = ctypes.util.find_library("c")
    if not lib:
        return None
    try:
        fn = getattr(ctypes.CDLL(lib), name)
    except (OSError, AttributeError):
        return None
    fn.argtypes = list(argtypes)
    fn.restype = ctypes.c_int
    return fn  # type: ignore[no-any-return]


_TRIM = _libc_function("malloc_trim", ctypes.c_size_t)
_MALLOPT = _libc_function("mallopt", ctypes.c_int, ctypes.c_int)


def release_free_memory() -> None:
    """Return the C library's free heap memory to the OS (glibc); otherwise nothing."""
    if _TRIM is not None:
        _TRIM(0)


def keep_freed_memory() -> None:
    """Let glibc keep freed memory for reuse in this process (a Dask worker's).

    Dask starts workers with MALLOC_TRIM_THRESHOLD_=65536, which also pins glibc's mmap
    threshold at 128 KiB: every large temporary of a comparison task is then mapped fresh
    and page-faulted in, and a task costs markedly more CPU (measured in docs/scale.md).
    This restores what glibc does by itself: allocations up to 32 MiB come from the heap,
    and up to 256 MiB of free heap is kept. Memory stays bounded by the largest task.
    """
    if _MALLOPT is not None:
        _MALLOPT(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        _MALLOPT(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
