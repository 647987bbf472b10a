"""A cut lifted where chance candidates crowd: the matcher's threshold as the partner grows.

A fixed threshold means a fixed chance that two unrelated records reach it; a record's
chance of a false partner grows with the partner's size. At 2,860,000 people (a member of
1,001,000 records beside one of 171,600) the default's precision fell to 0.81, against 0.99
at 20,000-50,000 people (docs/evaluation.md, "Precision as the population grows"): a record
without a date of birth is compared on names, sex and postcode, and a namesake of the same
sex in another postcode scores about the threshold. Here the matcher measures, from its own
candidates and no labels, how many of a run's candidates in each narrow band of scores just
over the threshold are chance, and lifts the cut over the bands where they are most:

- a record whose best candidate scores at least `ANCHOR` over the threshold is *anchored*: it
  has its true partner (one at most per member); its other candidates are chance pairs;
- those sure-chance pairs in a band [lo, lo + `WIDTH`), over the comparisons the anchored
  records made, times all the comparisons of that kind, estimate the band's chance pairs;
- from the threshold up, while a band's estimated chance pairs are at least half of its
  pairs (a pair there is as likely false as true: keeping it costs F1), on at least
  `EVIDENCE` sure-chance pairs, the cut moves over it; it stops at the first band that is
  not so (never above threshold + `ANCHOR`).

That is done for each pair of members and each kind of pair: scored by the rule or the first
CLK (both records have the fallback's left-out fields), or by the fallback CLK (either lacks
them; such a pair's comparisons are a lacking record's against every record and a full
record's against the lacking ones). Anchored records of both members count. Where candidates
are few (the grid's 20,000 people) no band has `EVIDENCE` sure-chance pairs and nothing moves;
at 50,000 a band or two may (F1 the same or up to 0.1 points higher).

What the matcher learns: nothing new. The counts are over the candidate pairs and scores it
already holds (and `fallback.lacking`, which it reads from popcounts).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from blindmatch.matcher.core.compare import Candidates

ANCHOR = 0.1  # a record whose best candidate is this far over the threshold has its partner
WIDTH = 0.01  # the bands' width
EVIDENCE = 10  # sure-chance pairs a band needs before it can be cut


def band_cut(
    scores: npt.NDArray[np.float64],
    chance: npt.NDArray[np.bool_],
    exposure: float,
    comparisons: int,
    threshold: float,
    *,
    anchor: float = ANCHOR,
    width: float = WIDTH,
    evidence: int = EVIDENCE,
    dominated: npt.NDArray[np.bool_] | None = None,
) -> float:
    """The cut for one kind of pair between two members: `scores` of its pairs (all at or
    above `threshold`), `chance` the sure-chance ones (anchored records' other candidates),
    found in `exposure` comparisons, of `comparisons` of that kind in all. `dominated`: the
    pairs with a record that has a better-scoring candidate (the solver links it there, not
    here), left out of both the band's pairs and its estimated chance pairs."""
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


def _anchored_others(
    rows: npt.NDArray[np.uint32], scores: npt.NDArray[np.float64], threshold: float
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.uint32]]:
    """(each pair is an anchored record's other candidate, the anchored records)."""
    best = np.zeros(int(rows.max()) + 1, dtype=np.float64)
    np.maximum.at(best, rows, scores)
    anchored = best >= round(threshold + ANCHOR, 6)
    return anchored[rows] & (scores < best[rows]), np.flatnonzero(anchored).astype(np.uint32)


def lifted(
    candidates: Candidates,
    threshold: float,
    sizes: list[int],
    lacking: list[npt.NDArray[np.bool_]] | None = None,
    *,
    links: bool = False,
) -> Candidates:
    """`candidates` (all at or above `threshold`) without the pairs under a crowded band's
    cut (see the module docstring); `sizes`: each member's records; `lacking`: each
    member's records lacking the fallback's left-out fields (None: no fallback CLK).
    `links`: a variant that a run does not use (benchmarks/popfix.py measures it; it kept
    more true pairs at lower precision: docs/evaluation.md, "The recall gap between the
    CLI walk and popprec"): a band's pairs whose record has a better candidate are left out
    of its count and its estimated chance pairs (`band_cut`'s `dominated`)."""
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
                others, anchored = _anchored_others(r[side][sel], candidates.sims[sel], threshold)
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
            cut = band_cut(candidates.sims[sel], chance, exposure, comparisons, threshold,
                           dominated=dominated)  # fmt: skip
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


__all__ = ["ANCHOR", "EVIDENCE", "WIDTH", "band_cut", "lifted"]
