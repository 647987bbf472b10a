"""The two-server run's blocking as it was when S1 held every record's band keys: each pair of
records, of two members, sharing a key in at least one band (`colliding_pairs`), split by the
fallback's rule (`record_blocking`). The sealed join (core/twoblocking.py `join`, S2's
`expand`, S1's `fallback_split`) is tested against it: the same pairs; benchmarks use it as
the reference too.

Pure: arrays in, arrays out.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from blindmatch.matcher.core.twoblocking import (
    BAND_STEP,
    FALLBACK,
    RECORD,
    Keys,
    PairBatch,
    Rows,
    distinct_codes,
)


def colliding_pairs(keys_a: Keys, keys_b: Keys) -> tuple[Rows, Rows]:
    """Each pair (row of a, row of b) sharing a key in at least one band, once, in row order:
    for each run of BAND_STEP bands, both sides' keys sorted together by value and joined."""
    if keys_a.ndim != 2 or keys_b.ndim != 2 or keys_a.shape[1] != keys_b.shape[1]:
        raise ValueError("band keys must be (rows, bands) with as many bands on both sides")
    n_a, bands = keys_a.shape
    n_b = len(keys_b)
    found: list[npt.NDArray[np.uint64]] = []
    for lo in range(0, bands if n_a and n_b else 0, BAND_STEP):
        ka = keys_a[:, lo : lo + BAND_STEP].ravel()
        kb = keys_b[:, lo : lo + BAND_STEP].ravel()
        width = keys_a[:, lo : lo + BAND_STEP].shape[1]
        # Both sides sorted: the look-ups of a's keys in b's then walk b in order.
        order_a, order_b = np.argsort(ka), np.argsort(kb)
        sorted_a, sorted_b = ka[order_a], kb[order_b]
        start = np.searchsorted(sorted_b, sorted_a, side="left")
        counts = np.searchsorted(sorted_b, sorted_a, side="right") - start
        hit = np.flatnonzero(counts)
        if not len(hit):
            continue
        c = counts[hit]
        total = int(c.sum())
        row_a = (order_a[hit] // width).astype(np.uint64)
        at = np.repeat(start[hit] - (np.cumsum(c) - c), c) + np.arange(total)
        row_b = (order_b[at] // width).astype(np.uint64)
        found.append((np.repeat(row_a, c) << np.uint64(32)) | row_b)
    if not found:
        empty = np.empty(0, dtype=np.uint32)
        return empty, empty.copy()
    codes = distinct_codes(np.concatenate(found))
    return (codes >> np.uint64(32)).astype(np.uint32), (codes & np.uint64(0xFFFFFFFF)).astype(
        np.uint32
    )


def record_blocking(
    keys: Sequence[Sequence[Keys]], lacking: Sequence[npt.NDArray[np.bool_]] | None = None
) -> list[PairBatch]:
    """The cross-member pairs from every record's band keys, `keys[member][clk]` ((rows,
    bands)), as S1 proposed them when it held them (the reference the sealed join plus S2's
    expansion is tested against: the same pairs)."""
    out = []
    for x in range(len(keys)):
        for y in range(x + 1, len(keys)):
            if lacking is None:
                ia, ib = colliding_pairs(keys[x][RECORD], keys[y][RECORD])
                out.append(PairBatch(x, y, RECORD, ia, ib))
                continue
            lx, ly = lacking[x], lacking[y]
            for clk in (RECORD, FALLBACK):
                ia, ib = colliding_pairs(keys[x][clk], keys[y][clk])
                either = lx[ia] | ly[ib]
                keep = either if clk == FALLBACK else ~either
                out.append(PairBatch(x, y, clk, ia[keep], ib[keep]))
    return out


__all__ = ["colliding_pairs", "record_blocking"]
