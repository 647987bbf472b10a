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
    los = [round(threshold + k * width, 6) for k in range(round(anchor / width))]  # 0.83, not
    his = [round(lo + width, 6) for lo in los]  # 0.8300000000000001
    counts = band_counts(scores, los, his, chance, dominated)
    for (total, sure, gone), hi in zip(counts, his, strict=True):
        expected = sure / exposure * comparisons  # the band's chance pairs, estimated
        if sure < evidence or expected - gone < 0.5 * (total - gone):
            break
        cut = hi
    return cut


def band_counts(
    scores: npt.NDArray[np.float64],
    los: list[float],
    his: list[float],
    chance: npt.NDArray[np.bool_],
    dominated: npt.NDArray[np.bool_] | None = None,
) -> list[tuple[int, int, int]]:
    """Each band [los[k], his[k])'s pairs, sure-chance pairs and `dominated` pairs (0 without
    it). Where each band ends where the next begins (crowdcut), from one count of the scores
    at or over each edge (a band's pairs: those at or over its start less those at or over
    its end), over the scores, the sure-chance ones and the dominated ones: 11 passes where a
    mask for each band took 40; else band by band."""
    edges = [*los, his[-1]] if los else []
    if los and his[:-1] == los[1:] and edges == sorted(edges):
        picked = [scores, scores[chance]]
        if dominated is not None:
            picked.append(scores[dominated])
        over = [[int(np.count_nonzero(x >= e)) for e in edges] for x in picked]
        if dominated is None:
            over.append([0] * len(edges))
        return [(over[0][k] - over[0][k + 1], over[1][k] - over[1][k + 1],
                 over[2][k] - over[2][k + 1]) for k in range(len(los))]  # fmt: skip
    out = []
    for lo, hi in zip(los, his, strict=True):
        band = (scores >= lo) & (scores < hi)
        gone = int(np.count_nonzero(band & dominated)) if dominated is not None else 0
        out.append((int(np.count_nonzero(band)), int(np.count_nonzero(band & chance)), gone))
    return out


def _anchored_others(
    rows: npt.NDArray[np.uint32], scores: npt.NDArray[np.float64], threshold: float
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.uint32]]:
    """(each pair is an anchored record's other candidate, the anchored records)."""
    best = np.zeros(int(rows.max()) + 1, dtype=np.float64)
    np.maximum.at(best, rows, scores)
    anchored = best >= round(threshold + ANCHOR, 6)
    return anchored[rows] & (scores < best[rows]), np.flatnonzero(anchored).astype(np.uint32)


def _on_fallback(
    candidates: Candidates, lack: list[npt.NDArray[np.bool_]]
) -> npt.NDArray[np.bool_] | None:
    """Each pair has a record lacking the fallback's fields; None where no record lacks them."""
    if not any(x.any() for x in lack):
        return None
    d = (candidates.dset0, candidates.dset1)
    r = (candidates.rec0, candidates.rec1)
    lacks = [np.zeros(len(candidates), dtype=bool) for _ in range(2)]
    for side in range(2):
        for m, x in enumerate(lack):
            sel = d[side] == m
            lacks[side][sel] = x[r[side][sel]]
    return lacks[0] | lacks[1]


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
    of its count and its estimated chance pairs (`band_cut`'s `dominated`).

    One pair of members and no record lacking the fallback's fields (a two-member run without
    a fallback CLK) reads the candidates' own columns, no copy of them (crowdcut)."""
    if not len(candidates):
        return candidates
    lack = lacking or [np.zeros(n, dtype=bool) for n in sizes]
    d = (candidates.dset0, candidates.dset1)
    r = (candidates.rec0, candidates.rec1)
    on_fallback = _on_fallback(candidates, lack)
    drop = np.zeros(len(candidates), dtype=bool)
    members = len(sizes)
    one = all(int(x.min()) == int(x.max()) for x in d)  # one pair of members
    keys = np.unique(d[0].astype(np.int64) * members + d[1]).tolist() if not one else [
        int(d[0][0]) * members + int(d[1][0])]  # fmt: skip
    for key in keys:
        ab = divmod(key, members)
        pair = None if one else (d[0] == ab[0]) & (d[1] == ab[1])
        n_lack = [int(lack[m].sum()) for m in ab]
        n_have = [sizes[m] - k for m, k in zip(ab, n_lack, strict=True)]
        for kind in (False, True):  # scored on the fallback CLK (either record lacks) or not
            if on_fallback is None:
                if kind:
                    continue
                sel = None if pair is None else np.flatnonzero(pair)  # None: every pair
            else:
                mask = on_fallback == kind
                sel = np.flatnonzero(mask if pair is None else pair & mask)
            if sel is not None and not len(sel):
                continue
            sims = candidates.sims if sel is None else candidates.sims[sel]
            rows = [x if sel is None else x[sel] for x in r]
            if kind:  # a lacking record against every record, a full one against lacking ones
                comparisons = n_lack[0] * sizes[ab[1]] + n_have[0] * n_lack[1]
            else:
                comparisons = n_have[0] * n_have[1]
            chance = np.zeros(len(sims), dtype=bool)
            exposure = 0  # the comparisons the anchored records' other candidates came from
            for side in range(2):
                others, anchored = _anchored_others(rows[side], sims, threshold)
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
                dominated = np.zeros(len(sims), dtype=bool)
                for side in range(2):
                    mine = r[side] if pair is None else r[side][pair]
                    best = np.zeros(int(mine.max()) + 1, dtype=np.float64)
                    np.maximum.at(best, mine, candidates.sims if pair is None
                                  else candidates.sims[pair])  # fmt: skip
                    dominated |= sims < best[rows[side]]
            cut = band_cut(sims, chance, exposure, comparisons, threshold, dominated=dominated)
            under = sims < cut
            if sel is None:
                drop |= under
            else:
                drop[sel[under]] = True
    if not drop.any():
        return candidates
    keep = ~drop
    return Candidates(
        candidates.sims[keep],
        candidates.dset0[keep],
        candidates.dset1[keep],
        candidates.rec0[keep],
        candidates.rec1[keep],
    )


__all__ = ["ANCHOR", "EVIDENCE", "WIDTH", "band_counts", "band_cut", "lifted"]
