"""Each candidate pair once: the union of what several LSH bands found.

A pair that collides in several bands is scored (and found) by each; `dedupe` keeps one
copy, by (row of A, row of B). Pure: arrays in, arrays out.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from blindmatch.matcher.core import kernel


def dedupe(
    sims: npt.NDArray[np.float64], rows_a: npt.NDArray[np.uint32], rows_b: npt.NDArray[np.uint32]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.uint32], npt.NDArray[np.uint32]]:
    """Each pair once, by (row of A, row of B); one score a pair, so any copy will do.

    Native (`_kernel.dedupe`: a radix sort of the keys with their scores, the GIL released)
    where the extension is built; `dedupe_numpy` otherwise, and as the tests' oracle."""
    if not kernel.NATIVE:
        return dedupe_numpy(sims, rows_a, rows_b)
    sims = np.ascontiguousarray(sims, dtype=np.float64)
    rows_a = np.ascontiguousarray(rows_a, dtype=np.uint32)
    rows_b = np.ascontiguousarray(rows_b, dtype=np.uint32)
    if not len(sims) == len(rows_a) == len(rows_b):
        raise ValueError("dedupe: sims, rows_a and rows_b must be as long")
    out_s, out_a, out_b = np.empty_like(sims), np.empty_like(rows_a), np.empty_like(rows_b)
    n = kernel._kernel.dedupe(sims, rows_a, rows_b, out_s, out_a, out_b)
    if n == len(sims):
        return out_s, out_a, out_b
    return out_s[:n].copy(), out_a[:n].copy(), out_b[:n].copy()


def dedupe_numpy(
    sims: npt.NDArray[np.float64], rows_a: npt.NDArray[np.uint32], rows_b: npt.NDArray[np.uint32]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.uint32], npt.NDArray[np.uint32]]:
    """`dedupe` in numpy: an argsort of the keys and a mask of where they change."""
    key = (rows_a.astype(np.uint64) << np.uint64(32)) | rows_b.astype(np.uint64)
    order = np.argsort(key)  # then where the sorted keys change: np.unique's work, 1.7x faster
    key = key[order]
    first = order[np.concatenate(([True], key[1:] != key[:-1]))[: len(key)]]
    return sims[first], rows_a[first], rows_b[first]
