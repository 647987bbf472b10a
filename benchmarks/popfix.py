"""Label-free rules that lift the cut where chance candidates crowd (benchmarks/popprec.py
`--fixes`). Each takes the run's candidate pairs of one small member against one partner
(scores >= the threshold) and returns (accept, score for the solver, a note).

- `ambiguous D`: a small-member record whose two best candidates are within D of each other
  keeps none (two people fit it about equally well).
- `chance FDR`: per class of pair (both with a date of birth: the rule's S; either without:
  the fallback CLK's Dice) the lowest cut t >= the threshold at which the estimated share of
  chance links is at most FDR. The estimate needs no labels, only the candidates: among the
  class's n small-member records, one has a true partner scoring >= t with chance q and
  Poisson(lam) chance candidates besides; the candidates' count C and the records with any, R,
  give C/n = q + lam and R/n = 1 - (1 - q) e^-lam, solved for (q, lam); the chance links are
  then about n (1 - q) (1 - e^-lam) of R.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from benchmarks.popprec import Pairs

Fix = Callable[
    ["Pairs", npt.NDArray[np.bool_], npt.NDArray[np.bool_]],
    tuple[npt.NDArray[np.bool_], npt.NDArray[np.float64], str],
]
CUTS = np.round(np.arange(0.80, 0.951, 0.005), 3)


def ambiguous(delta: float) -> Fix:
    def fix(p: Pairs, lacking: npt.NDArray[np.bool_], big: npt.NDArray[np.bool_]) -> tuple:
        order = np.lexsort((-p.score, p.r0))
        r0, s = p.r0[order], p.score[order]
        first = np.r_[True, r0[1:] != r0[:-1]]
        best = np.maximum.accumulate(np.where(first, np.arange(len(r0)), 0))
        second = np.zeros(len(r0), dtype=bool)
        second[1:] = ~first[1:] & first[:-1] if len(r0) > 1 else []
        tied = set(r0[1:][second[1:] & (s[best[1:]] - s[1:] < delta)].tolist())
        accept = ~np.isin(p.r0, list(tied))
        return accept, p.score, f"({len(tied)} records ambiguous)"

    return fix


def chance_rate(counts: npt.NDArray[np.int64], n: int) -> tuple[float, float]:
    """(q, lam) from each record's candidate count (records with none may be left out)."""
    c, r = counts.sum() / n, (counts > 0).sum() / n
    if r <= 0 or c <= r:
        return min(r, 1.0), 0.0
    g = lambda lam: (1 - r) * math.exp(lam) - (1 - c + lam)  # noqa: E731
    lo, hi = 0.0, c  # g(0) >= 0; the root we want is the first where g < 0 (q = c - lam >= 0)
    if g(hi) > 0:  # find where g turns negative
        grid = np.linspace(0, c, 200)
        neg = [x for x in grid if g(x) < 0]
        if not neg:
            return 0.0, c
        hi = neg[0]
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if g(mid) > 0 else (lo, mid)
    lam = (lo + hi) / 2
    return max(c - lam, 0.0), lam


def estimated_fdr(counts: npt.NDArray[np.int64], n: int) -> float:
    q, lam = chance_rate(counts, n)
    hits = (counts > 0).sum()
    return n * (1 - q) * (1 - math.exp(-lam)) / hits if hits else 0.0


def chance(fdr: float) -> Fix:
    def fix(p: Pairs, lacking: npt.NDArray[np.bool_], big: npt.NDArray[np.bool_]) -> tuple:
        accept = np.zeros(len(p.r0), dtype=bool)
        notes = []
        for name, sel in (("dated", ~p.lacks), ("dob-less", p.lacks)):
            idx = np.flatnonzero(sel)
            n = int(lacking.sum() if name == "dob-less" else (~lacking).sum())
            cut = CUTS[-1]
            for t in CUTS:
                above = idx[p.score[idx] >= t]
                counts = np.bincount(p.r0[above], minlength=len(lacking))
                if estimated_fdr(counts, n) <= fdr:
                    cut = t
                    break
            accept[idx[p.score[idx] >= cut]] = True
            notes.append(f"{name} t={cut:.3f}")
        return accept, p.score, "(" + ", ".join(notes) + ")"

    return fix


def oracle_fdr(p: Pairs, t: float, sel: npt.NDArray[np.bool_]) -> float:
    """The share of false pairs among the best candidate of each record (labels: a check)."""
    idx = np.flatnonzero(sel & (p.score >= t))
    order = idx[np.lexsort((-p.score[idx], p.r0[idx]))]
    first = np.r_[True, p.r0[order][1:] != p.r0[order][:-1]]
    return float((~p.label[order[first]]).mean()) if len(order) else 0.0


FIXES: dict[str, Fix] = {
    "ambiguous 0.02": ambiguous(0.02),
    "ambiguous 0.05": ambiguous(0.05),
    "chance FDR 0.01": chance(0.01),
    "chance FDR 0.02": chance(0.02),
}


def crowd(evidence: int, anchor: float = 0.1, width: float = 0.01) -> Fix:
    """Per class, lift the cut bin by bin (from the threshold up) while a bin's pairs are
    estimated to be chance at least half the time, on at least `evidence` sure-chance pairs.
    The chance rate comes from anchored records (best candidate >= threshold + `anchor`):
    their other candidates are chance (one true partner at most), so a bin's chance pairs
    are about n * (anchored records' other candidates in the bin) / (anchored records)."""

    def fix(p: Pairs, lacking: npt.NDArray[np.bool_], big: npt.NDArray[np.bool_]) -> tuple:
        accept = np.zeros(len(p.r0), dtype=bool)
        notes = []
        for name, sel in (("dated", ~p.lacks), ("dob-less", p.lacks)):
            idx = np.flatnonzero(sel)
            r0, s = p.r0[idx], p.score[idx]
            n = int(lacking.sum() if name == "dob-less" else (~lacking).sum())
            cut = crowd_cut(r0, s, n, 0.8, evidence, anchor, width)
            accept[idx[s >= cut]] = True
            notes.append(f"{name} t={cut:.2f}")
        return accept, p.score, "(" + ", ".join(notes) + ")"

    return fix


def crowd_cut(
    rows: npt.NDArray[np.uint32], s: npt.NDArray[np.float64], n: int, t: float,
    evidence: int, anchor: float, width: float,
) -> float:  # fmt: skip
    if not len(s):
        return t
    best = np.zeros(int(rows.max()) + 1)
    np.maximum.at(best, rows, s)
    anchored = best >= t + anchor
    extra = anchored[rows] & (s < best[rows])  # other candidates of anchored records
    a = int(anchored.sum())
    cut = t
    for lo in np.arange(t, t + anchor - 1e-9, width):
        b = (s >= lo) & (s < lo + width)
        e = int((b & extra).sum())
        if a == 0 or e < evidence or n * e / a < 0.5 * b.sum():
            break
        cut = lo + width
    return round(cut, 6)


FIXES.update({"crowd 5": crowd(5), "crowd 10": crowd(10), "crowd 3": crowd(3)})


def matcher_crowd(
    p: Pairs, lacking: npt.NDArray[np.bool_], big: npt.NDArray[np.bool_], links: bool = False
) -> tuple:
    """The matcher's own lift (matcher/core/crowd.py), as a run applies it."""
    from blindmatch.matcher.core import crowd as crowd_
    from blindmatch.matcher.core.compare import Candidates

    k = len(p.r0)
    cands = Candidates(p.score, np.zeros(k, np.uint32), np.ones(k, np.uint32), p.r0, p.r1)
    kept = crowd_.lifted(cands, 0.8, [len(lacking), len(big)], [lacking, big], links=links)
    key = p.r0.astype(np.int64) * (len(big) + 1) + p.r1
    accept = np.isin(key, kept.rec0.astype(np.int64) * (len(big) + 1) + kept.rec1)
    return accept, p.score, f"({k - len(kept)} pairs dropped)"


FIXES["matcher crowd"] = matcher_crowd
FIXES["matcher crowd, links"] = functools.partial(matcher_crowd, links=True)


def matcher_crowd_unique(
    p: Pairs, lacking: npt.NDArray[np.bool_], big: npt.NDArray[np.bool_]
) -> tuple:
    """The matcher's lift, but a pair under its cut is kept when it is the only candidate of
    both its records (a record with one candidate is less often a namesake's)."""
    accept, score, note = matcher_crowd(p, lacking, big)
    one0 = np.bincount(p.r0, minlength=len(lacking))[p.r0] == 1
    one1 = np.bincount(p.r1, minlength=len(big))[p.r1] == 1
    return accept | (one0 & one1), score, note


FIXES["matcher crowd, unique kept"] = matcher_crowd_unique
