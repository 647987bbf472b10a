"""Large arrays on transparent huge pages, for the tables a real-time query reads at random.

A query against a 1,000,000-row standing index touches a few thousand scattered places in
several hundred MB of tables and CLKs; with 4 KiB pages nearly every one of them is also
a TLB miss. Backing those arrays with 2 MiB pages (where the kernel allows it:
`/sys/kernel/mm/transparent_hugepage/enabled` set to `always` or `madvise`) makes the
look-up measurably faster (docs/performance.md). Elsewhere, or for small arrays, this is
plain `numpy.empty`.
"""

from __future__ import annotations

import contextlib
import mmap
from typing import TypeVar, cast

import numpy as np
import numpy.typing as npt

HUGE_PAGE = 2 << 20


S = TypeVar("S", bound=np.generic)


def empty(shape: tuple[int, ...], dtype: type[S]) -> npt.NDArray[S]:
    """An uninitialised array (zeroed, in fact, when it is big enough for huge pages)."""
    kind = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * kind.itemsize
    advise = getattr(mmap, "MADV_HUGEPAGE", None)
    if nbytes < HUGE_PAGE or advise is None:
        return np.empty(shape, kind)
    # Anonymous and private: a shared anonymous map (mmap's default) is shmem, which
    # takes huge pages only where shmem_enabled allows, and it seldom does. Freed with
    # the last view of it.
    region = mmap.mmap(-1, nbytes + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    with contextlib.suppress(OSError):  # huge pages switched off: ordinary pages, same array
        region.madvise(advise)
    raw = np.frombuffer(region, dtype=np.uint8)
    start = -raw.ctypes.data % HUGE_PAGE
    return cast(npt.NDArray[S], raw[start : start + nbytes].view(kind).reshape(shape))
