"""The run's stages after the kernel as they were on main before crowdcut (lowfloor's): the
crowd cut with a mask for each band (`band_cut_was`, `lifted_was`) and the merge's one sort by
np.argsort (`merge_was`). benchmarks/lowfloor.py times them beside the run's and checks the
same bytes come out; tests/test_lowfloor.py holds the run's cut to `lifted_was`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from blindmatch.matcher.core import crowd
from blindmatch.matcher.core.compare import Candidates, _packed, concat


def merge_was(parts: Sequence[Candidates]) -> Candidates:
    """compare.merge as lowfloor left it: the combined key by np.argsort."""
    whole = concat(parts)
    sims, d0, d1, r0, r1 = whole.sims, whole.dset0, whole.dset1, whole.rec0, whole.rec1
    if not len(sims):
        return whole
    packed = _packed(d0, d1, r0, r1)
    order = None
    if packed is not None and min(64 - packed[1], 52) >= 16:
        lo, hi = float(sims.min()), float(sims.max())
        if np.isfinite(lo) and np.isfinite(hi):
            scale = ((1 << min(64 - packed[1], 52)) - 2) / (hi - lo) if hi > lo else 0.0
            rank = ((hi - sims) * scale).astype(np.uint64)
            order = np.argsort((rank << np.uint64(packed[1])) | packed[0])
            ordered = sims[order]
            order = None if (ordered[1:] > ordered[:-1]).any() else order
    if order is None and packed is not None:
        order = np.argsort(packed[0])
        order = order[np.argsort(-sims[order], kind="stable")]
    if order is None:
        order = np.lexsort((r1, r0, d1, d0, -sims))
    return Candidates(sims[order], d0[order], d1[order], r0[order], r1[order])


def band_cut_was(
    scores: npt.NDArray[np.float64],
    chance: npt.NDArray[np.bool_],
    exposure: float,
    comparisons: int,
    threshold: float,
    *,
    anchor: float = crowd.ANCHOR,
    width: float = crowd.WIDTH,
    evidence: int = crowd.EVIDENCE,
    dominated: npt.NDArray[np.bool_] | None = None,
) -> float:
    cut = threshold
    if not exposure:
        return cut
    for k in range(round(anchor / width)):
        lo = round(threshold + k * width, 6)  # 0.83, not 0.8300000000000001
        band = (scores >= lo) & (scores < round(lo + width, 6))
        sure = int(np.count_nonzero(band & chance))
        expected = sure / exposure * comparisons  # the band's chance pairs, estimated
        gone = int(np.count_nonzero(band & dominated)) if dominated is not None else 0
        if sure < evidence or expected - gone < 0.5 * (int(np.count_nonzero(band)) - gone):
            break
        cut = round(lo + width, 6)
    return cut


def lifted_was(
    candidates: Candidates,
    threshold: float,
    sizes: list[int],
    lacking: list[npt.NDArray[np.bool_]] | None = None,
    *,
    links: bool = False,
) -> Candidates:
    if not len(candidates):
        return candidates
    lack = lacking or [np.zeros(n, dtype=bool) for n in sizes]
    d = (candidates.dset0, candidates.dset1)
    r = (candidates.rec0, candidates.rec1)
    lacks = [np.zeros(len(candidates), dtype=bool) for _ in range(2)]
    for side in range(2):
        for m, x in enumerate(lack):
            sel = d[side] == m
            lacks[side][sel] = x[r[side][sel]]
    on_fallback = lacks[0] | lacks[1]
    keep = np.ones(len(candidates), dtype=bool)
    members = len(sizes)
    for key in np.unique(d[0].astype(np.int64) * members + d[1]).tolist():
        ab = divmod(key, members)
        pair = (d[0] == ab[0]) & (d[1] == ab[1])
        n_lack = [int(lack[m].sum()) for m in ab]
        n_have = [sizes[m] - k for m, k in zip(ab, n_lack, strict=True)]
        for kind in (False, True):  # scored on the fallback CLK (either record lacks) or not
            sel = np.flatnonzero(pair & (on_fallback == kind))
            if not len(sel):
                continue
            if kind:  # a lacking record against every record, a full one against lacking ones
                comparisons = n_lack[0] * sizes[ab[1]] + n_have[0] * n_lack[1]
            else:
                comparisons = n_have[0] * n_have[1]
            chance = np.zeros(len(sel), dtype=bool)
            exposure = 0  # the comparisons the anchored records' other candidates came from
            for side in range(2):
                others, anchored = crowd._anchored_others(
                    r[side][sel], candidates.sims[sel], threshold
                )
                chance |= others
                own = lack[ab[side]][anchored]
                other = 1 - side
                if kind:
                    exposure += (
                        int(own.sum()) * sizes[ab[other]] + int((~own).sum()) * n_lack[other]
                    )
                else:
                    exposure += len(anchored) * n_have[other]
            dominated = None
            if links:
                dominated = np.zeros(len(sel), dtype=bool)
                for side in range(2):
                    mine = np.flatnonzero(pair)
                    best = np.zeros(int(r[side][mine].max()) + 1, dtype=np.float64)
                    np.maximum.at(best, r[side][mine], candidates.sims[mine])
                    dominated |= candidates.sims[sel] < best[r[side][sel]]
            cut = band_cut_was(
                candidates.sims[sel], chance, exposure, comparisons, threshold, dominated=dominated
            )
            keep[sel[candidates.sims[sel] < cut]] = False
    if keep.all():
        return candidates
    return Candidates(
        candidates.sims[keep],
        candidates.dset0[keep],
        candidates.dset1[keep],
        candidates.rec0[keep],
        candidates.rec1[keep],
    )
