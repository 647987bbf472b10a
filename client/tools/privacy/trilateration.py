"""The trilateration attack: the attack built for a cross-member view of a two-server run.

A role of the two-server run (docs/privacy-design.md) learns, of two members A and B, which
cross-member pairs (a, b) are candidates and, depending on the role, a value for each: the
combiner C a linking pair's bucket, S2 the number of bands the two records share (read as the
agreement it implies), S1 nothing beyond the pair. The attacker holds plaintext on every person
of A and of B (one record a person), encodes it under its own key with the public schema and
computes the Dice D(p, q) of every pair of its records. It models, by the level of D(p, q)
(steps of 0.02, and a level of its own for p = q, the same person in both members): the chance
that a pair is a candidate under the public blocking setting, and the distribution of the
view's value given the attacker's level; both calibrated on the true alignment (an attacker
would estimate them by re-encoding noisy copies of its own plaintext: a generous calibration,
as an attacker's best case should be). A record a of A is scored against attacker record p,
given seeds of B (b -> q), by summing over the seeded b: if (a, b) is a candidate, log P(its
value's level | level of D(p, q)) + log P(candidate | D(p, q)), else log P(not a candidate |
D(p, q)); symmetrically for B from A's seeds. Blind start: each record's histogram of its
candidates' values (and its popcount, where the view holds popcounts), most confident mutual
best matches. Seeds grow alternately on both sides (`trilaterate`).

Pure numpy and scipy: `privacy-check --mode two-server` (twocheck.py) and
benchmarks/twoserver.py run it. The attacker's model (its own Dice graph, its calibration on
a view, the blind start's signature) is trimodel.py's; its names are re-exported here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from scipy.optimize import linear_sum_assignment

from blindmatch.client.tools.privacy.trimodel import (
    BLOCK,
    COARSE,
    LEVEL,
    SAME,
    CombinerView,
    Floats,
    Model,
    OwnGraph,
    fit_model,
    levels,
    own_graph,
    signature,
)
from blindmatch.client.tools.privacy.trisparse import SparseSide, blind_best


class Trilateration:
    """Scores of (victim record of A, attacker record among A's people) from the seeds of B:
    for each seeded record b (identity q), a's Dice to b if they are candidates (its level's
    likelihood under the attacker's level for (p, q), and the chance they block together),
    else the chance they do not."""

    def __init__(self, view: CombinerView, model: Model, mine: npt.NDArray[np.intp],
                 prior: Floats, probes: Any = None, copy: bool = True) -> None:  # fmt: skip
        self.view, self.model, self.mine = view, model, mine
        # `copy` False: the scores start as `prior` itself (the caller's to give away).
        self.score = prior.copy() if copy else prior
        self._scratch: Floats | None = None  # `centred(scratch=True)`'s buffer
        # Pairs asked one bit each, as a dishonest combiner asks reach pairs (reachprobes.py
        # `Probes`: `add(score, seeds' rows, their levels, sign)`), or None.
        self.probes = probes
        # The view by column (a record of B): each candidate's row of A, its level + 1 stored
        # (never 0, which sparse operations may drop; built from its parts, so that no pair
        # is summed with another).
        order = np.lexsort((view.pairs[:, 0], view.pairs[:, 1]))
        self.by_column = sp.csc_matrix(
            (levels(view.dice)[order] + 1, view.pairs[order, 0],
             np.searchsorted(view.pairs[order, 1], np.arange(view.n_b + 1))),
            shape=(view.n_a, view.n_b),
        )  # fmt: skip

    def add(self, seeds_b: dict[int, int], sign: float = 1.0) -> None:
        """New seeds of B (row of B -> the attacker's record, an index of its data); `sign`
        -1 takes dropped seeds back out."""
        if not seeds_b:
            return
        rows = np.array(list(seeds_b), dtype=np.intp)
        ids = np.array(list(seeds_b.values()), dtype=np.intp)
        by_seed = self.model.level[np.ix_(self.mine, ids)]  # (|mine|, S)
        lev = by_seed.T.astype(np.intp)  # (S, |mine|)
        logit = self.model.logit_pc[by_seed].T
        self.score += sign * self.model.log_miss[by_seed].sum(axis=1)[None, :]
        if self.probes is not None:
            self.probes.add(self.score, rows, lev, sign)
        cand = self.by_column[:, rows]  # the seeds' candidates: (row of A, seed, level + 1)
        if not cand.nnz:
            return
        # each (seed, level) its candidates have: the level's likelihood under the attacker's
        # level for (p, the seed's identity), for every p, and the chance they block together
        nl = self.model.table.shape[0]
        seed = np.repeat(np.arange(len(rows)), np.diff(cand.indptr))
        kinds, kind = np.unique(seed * nl + cand.data - 1, return_inverse=True)
        of = kinds // nl
        w = self.model.table[(kinds % nl)[:, None], lev[of]] + logit[of]  # (kinds, |mine|)
        touched, row = np.unique(cand.indices, return_inverse=True)
        spread = sp.csr_matrix(
            (np.ones(cand.nnz, np.float32), (row, kind.ravel())), shape=(len(touched), len(kinds))
        )
        for lo in range(0, len(touched), BLOCK):  # to the rows touched, by blocks (not N x N)
            at = touched[lo : lo + BLOCK]
            self.score[at] += sign * np.asarray(spread[lo : lo + BLOCK] @ w, dtype=np.float32)

    def mutual(self, seeds: dict[int, int], margin: float) -> list[tuple[float, int, int]]:
        """`mutual_best` of the centred scores."""
        return mutual_best(self.centred(True), seeds, margin, inplace=True)

    def unstable(self, seeds: dict[int, int], fixed: set[int]) -> dict[int, int]:
        """`unstable` of the centred scores."""
        return unstable(self.centred(True), seeds, fixed)

    def centred(self, scratch: bool = False) -> Floats:
        """Each row's scores less its mean. `scratch`: into this object's buffer, overwritten
        by the next call (B's scores are |B| x |B|: a fresh matrix a round cost system time)."""
        mean = self.score.mean(axis=1, keepdims=True)
        if not scratch:
            return self.score - mean
        if self._scratch is None or self._scratch.shape != self.score.shape:
            self._scratch = np.empty_like(self.score)
        return np.subtract(self.score, mean, out=self._scratch)


def column_argmax(score: Floats, block: int = 128) -> npt.NDArray[np.intp]:
    """`np.argmax(score, axis=0)` (the first row of each column's maximum), by blocks of rows:
    numpy's argmax down the columns of a large matrix reads it across the cache lines, about
    3 times slower."""
    cols = np.arange(score.shape[1])
    best = np.full(score.shape[1], -np.inf, score.dtype)
    at = np.zeros(score.shape[1], np.intp)
    for start in range(0, score.shape[0], block):
        part = score[start : start + block]
        row = part.argmax(axis=0)
        top = part[row, cols]
        better = top > best
        best[better], at[better] = top[better], row[better] + start
    return at


def unstable(score: Floats, seeds: dict[int, int], fixed: set[int]) -> dict[int, int]:
    """Found seeds (not in `fixed`) that are no longer their row's and column's best."""
    best_j, best_i = np.argmax(score, axis=1), column_argmax(score)
    return {i: j for i, j in seeds.items() if i not in fixed and (best_j[i] != j or best_i[j] != i)}


def assignment(
    score: Floats, seeds: dict[int, int], fixed: set[int]
) -> tuple[dict[int, int], dict[int, float]]:
    """The one-to-one assignment maximising the scores of the rows and columns not held by
    `fixed` seeds, with each pair's margin over the runner-up in its row."""
    rows = np.array([i for i in range(score.shape[0]) if i not in fixed], dtype=np.intp)
    taken = {seeds[i] for i in fixed}
    cols = np.array([j for j in range(score.shape[1]) if j not in taken], dtype=np.intp)
    sub = score[np.ix_(rows, cols)]
    r, c = linear_sum_assignment(-sub)
    top = sub[r, c]
    masked = sub.copy()
    masked[r, c] = -np.inf
    second = masked.max(axis=1)[r]
    chosen = {int(rows[x]): int(cols[y]) for x, y in zip(r, c, strict=True)}
    margins = {int(rows[x]): float(m) for x, m in zip(r, top - second, strict=True)}
    return chosen, margins


def trilaterate(
    view: CombinerView, model: Model, in_a: npt.NDArray[np.intp], in_b: npt.NDArray[np.intp],
    known_a: dict[int, int], known_b: dict[int, int], blind: int, margin: float, cap: int,
    robust: bool = False, lap: int = 0, probes: tuple[Any, Any] | None = None,
    state: dict[str, Any] | None = None,
) -> tuple[dict[int, int], dict[int, int], dict[int, int]]:  # fmt: skip
    """Alternating seed propagation over both members. Seeds: the known pairs (rows -> indices
    of the attacker's data) and, on each side, the `blind` most confident mutual best matches
    of the signature. Each round the mutual best matches of each side with at least `margin`
    nats over the runner-up join (most confident first, at most as many as that side has
    seeds) and rescore the other side. `lap` rounds then follow: each the one-to-one
    (Hungarian) assignment of each side's scores, whose most confident share (a tenth more
    each round, up to nine tenths) become that side's seeds, replacing the found ones; the
    claims are then the last assignment's pairs whose score stands `margin` nats above the
    runner-up in their row. Returns the claims on A and on B (rows -> attacker indices), and
    A's blind seeds. `probes`: pairs asked one bit each, A's and B's way round (reachprobes.py);
    `state`, if given, receives both sides' scores and seeds at the end ("tri_a", "tri_b",
    "seeds_a", "seeds_b")."""
    flipped = view.flipped()
    # A large member B: its side held sparse (trisparse.py) where the model holds `near`.
    sparse = SparseSide(flipped, model, in_b, in_a) if model.near is not None else None
    if sparse is not None and (lap or probes):
        raise ValueError("B's side held sparse has no assignment rounds and no probes")
    sig_a = signature(view, model, in_a, in_b)
    sig_b = signature(flipped, model, in_b, in_a) if sparse is None else None
    pos_a = {int(p): j for j, p in enumerate(in_a)}
    pos_b = {int(p): j for j, p in enumerate(in_b)}
    seeds_a = {i: pos_a[p] for i, p in known_a.items()}
    seeds_b = {i: pos_b[p] for i, p in known_b.items()}
    blind_a: dict[int, int] = {}
    if blind:
        for sig, seeds, out in ((sig_a, seeds_a, blind_a), (sig_b, seeds_b, None)):
            if sig is None:  # B's held sparse; cached: the same for every attack
                assert sparse is not None
                key = f"blind {blind} {sorted(seeds.items())}"
                found = model.cache.setdefault(key, blind_best(sparse, seeds, blind))
            else:
                centred = sig - sig.mean(axis=1, keepdims=True)
                found = mutual_best(centred, seeds, 0.0, inplace=True)[:blind]
                del centred
            chosen = {i: p for _m, i, p in found}
            seeds.update(chosen)
            if out is not None:
                out.update(chosen)
    # The signatures become the scores (no copy: B's is |B| x |B| against a large member).
    tri_a = Trilateration(view, model, in_a, sig_a, probes[0] if probes else None, copy=False)
    tri_b: Trilateration | SparseSide
    if sparse is None:
        assert sig_b is not None
        tri_b = Trilateration(flipped, model, in_b, sig_b, probes[1] if probes else None,
                              copy=False)  # fmt: skip
    else:
        sparse.entries(np.array([i * sparse.size + j for i, j in seeds_b.items()], np.int64))
        tri_b = sparse
    del sig_a, sig_b
    tri_a.add({i: int(in_b[j]) for i, j in seeds_b.items()})
    tri_b.add({i: int(in_a[j]) for i, j in seeds_a.items()})
    fixed_a, fixed_b = set(known_a), set(known_b)
    stalled = 0
    for _round in range(100 if not robust else 60):
        if len(seeds_a) + len(seeds_b) >= cap:
            break
        before = len(seeds_a) + len(seeds_b)
        floor = 0.0 if robust else margin
        share = 2 if robust else 1
        new_a = tri_a.mutual(seeds_a, floor)[: max(10, len(seeds_a) // share)]
        new_b = tri_b.mutual(seeds_b, floor)[: max(10, len(seeds_b) // share)]
        if not new_a and not new_b:
            break
        add_a = {i: j for _m, i, j in new_a}
        add_b = {i: j for _m, i, j in new_b}
        seeds_a.update(add_a)
        seeds_b.update(add_b)
        tri_b.add({i: int(in_a[j]) for i, j in add_a.items()})
        tri_a.add({i: int(in_b[j]) for i, j in add_b.items()})
        if robust:
            drop_a = tri_a.unstable(seeds_a, fixed_a)
            drop_b = tri_b.unstable(seeds_b, fixed_b)
            for i in drop_a:
                del seeds_a[i]
            for i in drop_b:
                del seeds_b[i]
            tri_b.add({i: int(in_a[j]) for i, j in drop_a.items()}, -1.0)
            tri_a.add({i: int(in_b[j]) for i, j in drop_b.items()}, -1.0)
            stalled = stalled + 1 if len(seeds_a) + len(seeds_b) <= before else 0
            if stalled == 3:
                break
    if lap:
        assert isinstance(tri_b, Trilateration)
        sides = [(tri_a, seeds_a, fixed_a, tri_b, in_a), (tri_b, seeds_b, fixed_b, tri_a, in_b)]
        claims: list[dict[int, int]] = [{}, {}]
        for t in range(1, lap + 1):
            for k, (tri, seeds, fixed, other, ids) in enumerate(sides):
                chosen, margins = assignment(tri.centred(), seeds, fixed)
                part = min(0.9, 0.1 * t)
                order = sorted(chosen, key=lambda i: -margins[i])
                keep = {i: seeds[i] for i in fixed}
                keep.update({i: chosen[i] for i in order[: int(part * len(order))]})
                drop = {i: j for i, j in seeds.items() if keep.get(i) != j}
                add = {i: j for i, j in keep.items() if seeds.get(i) != j}
                other.add({i: int(ids[j]) for i, j in drop.items()}, -1.0)
                other.add({i: int(ids[j]) for i, j in add.items()})
                seeds.clear()
                seeds.update(keep)
                claims[k] = {i: j for i, j in chosen.items() if margins[i] >= margin}
        claims_a, claims_b = claims
    else:
        claims_a, claims_b = dict(seeds_a), dict(seeds_b)
        claims_a.update({i: j for _m, i, j in tri_a.mutual(seeds_a, margin)})
        claims_b.update({i: j for _m, i, j in tri_b.mutual(seeds_b, margin)})
    if state is not None:
        state.update(tri_a=tri_a, tri_b=tri_b, seeds_a=seeds_a, seeds_b=seeds_b)
    return (
        {i: int(in_a[j]) for i, j in claims_a.items()},
        {i: int(in_b[j]) for i, j in claims_b.items()},
        {i: int(in_a[j]) for i, j in blind_a.items()},
    )


def mutual_best(
    score: Floats, seeds: dict[int, int], margin: float, inplace: bool = False
) -> list[tuple[float, int, int]]:
    """Mutual best (i, p) of `score` among rows and columns not in `seeds`, whose margin over
    the runner-up in row and column is at least `margin`; most confident first. `inplace`:
    `score` is a temporary of the caller's, overwritten rather than copied."""
    s = score if inplace else score.copy()
    taken_v = np.array(list(seeds), dtype=np.intp)
    taken_a = np.array(list(seeds.values()), dtype=np.intp)
    s[taken_v, :] = -np.inf
    s[:, taken_a] = -np.inf
    rows = np.arange(s.shape[0])
    best_p = np.argmax(s, axis=1)
    best_i = column_argmax(s)
    top_row = s[rows, best_p]
    top_col = s[best_i, np.arange(s.shape[1])]
    s[rows, best_p] = -np.inf
    second_row = s.max(axis=1)
    s[rows, best_p] = top_row
    cols = np.arange(s.shape[1])
    s[best_i, cols] = -np.inf
    second_col = s.max(axis=0)
    mutual = (best_i[best_p] == rows) & np.isfinite(top_row)
    mutual[taken_v] = False
    out = []
    for i in np.flatnonzero(mutual):
        p = best_p[i]
        m = min(top_row[i] - second_row[i], top_col[p] - second_col[p])
        if m >= margin:
            out.append((float(m), int(i), int(p)))
    return sorted(out, reverse=True)


__all__ = [
    "COARSE",
    "LEVEL",
    "SAME",
    "CombinerView",
    "Model",
    "OwnGraph",
    "Trilateration",
    "assignment",
    "column_argmax",
    "fit_model",
    "levels",
    "mutual_best",
    "own_graph",
    "signature",
    "trilaterate",
    "unstable",
]
