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
benchmarks/twoserver.py run it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from scipy.optimize import linear_sum_assignment
from scipy.stats import norm

Floats = npt.NDArray[np.float32]

LEVEL = 0.02  # width of a Dice level
SAME = int(1 / LEVEL) + 2  # the level index of "the same person" (p == q in the attacker's data)
COARSE = np.array([0.0, 0.5, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 1.01])  # signature bins
EPS = 0.05  # outlier share of the noise model


def levels(d: npt.NDArray[np.floating]) -> npt.NDArray[np.intp]:
    return np.minimum(np.floor(np.asarray(d) / LEVEL).astype(np.intp), SAME - 1)


@dataclasses.dataclass
class CombinerView:
    """What C holds: the cross-member candidate pairs (row of A, row of B), their exact Dice,
    and every record's popcount (the members send them to C)."""

    n_a: int
    n_b: int
    pairs: npt.NDArray[np.intp]
    dice: npt.NDArray[np.float64]
    pop_a: npt.NDArray[np.int64]
    pop_b: npt.NDArray[np.int64]
    pops: bool = True  # whether the view holds the popcounts (C's does, S1's and S2's do not)

    def flipped(self) -> CombinerView:
        return CombinerView(
            self.n_b,
            self.n_a,
            self.pairs[:, ::-1].copy(),
            self.dice,
            self.pop_b,
            self.pop_a,
            self.pops,
        )


@dataclasses.dataclass
class Model:
    """The attacker's model of C's view, from its own plaintext of A's and B's people (`own`:
    its encodings under its own key, one record a person) and the public blocking setting:
    for each pair (p, q) of its records, the chance that blocking makes them candidates
    (1 - (1 - P_band)^b, P_band the chance r random positions all agree) and the level of
    their Dice; and its noise model: a victim candidate's Dice level given the attacker's
    level (Gaussian, fitted, with an outlier floor), p == q (the same person in both members)
    being a level of its own. The chance of blocking together depends on the level alone, so
    it is held by level (`logit_pc[level[p, q]]`): two (N, N) float32 matrices of it were most
    of the check's memory against a large member B."""

    level: npt.NDArray[np.int8]  # (N, N) Dice level of the attacker's pairs, SAME on the diagonal
    logit_pc: Floats  # (SAME + 1,) by level: log Pc - log(1 - Pc)
    log_miss: Floats  # (SAME + 1,) by level: log(1 - Pc)
    table: Floats  # (SAME + 1, SAME + 1): log P(victim level k | attacker level l)
    coarse: Floats  # (SAME + 1, len(COARSE) - 1): P(victim coarse bin | attacker level)
    pop: npt.NDArray[np.int64]  # the attacker's popcounts
    pop_sigma: float


BLOCK = 1024  # rows a block when the (N, N) levels are computed (its Dice: (rows, N))


@dataclasses.dataclass
class OwnGraph:
    """The attacker's own encodings (packed bits, as given), their popcounts and the levels of
    every pair's Dice (SAME on the diagonal): what every view's model starts from (`own_graph`
    once, then `fit_model` per view). The Dice is computed where read (`dice_of`, `pair_dice`):
    as an (N, N) float32 matrix it is 1.6 GB at N = 20,000."""

    own: npt.NDArray[np.uint8]
    level: npt.NDArray[np.int8]
    pop: Floats

    def dice_of(self, rows: npt.NDArray[np.intp], cols: npt.NDArray[np.intp]) -> Floats:
        """The Dice of every pair of `rows` x `cols` (float32, as `own_graph` computes it)."""
        return _dice(_bits(self.own[rows]), self.pop[rows], _bits(self.own[cols]), self.pop[cols])

    def pair_dice(self, a: npt.NDArray[np.intp], b: npt.NDArray[np.intp]) -> Floats:
        """The Dice of the pairs (a[k], b[k]) (float32, as `dice_of`), by blocks."""
        out = np.empty(len(a), np.float32)
        for start in range(0, len(a), 16 * BLOCK):
            x, y = a[start : start + 16 * BLOCK], b[start : start + 16 * BLOCK]
            inter = (_bits(self.own[x]) * _bits(self.own[y])).sum(axis=1)  # exact
            out[start : start + len(x)] = 2 * inter / np.maximum(self.pop[x] + self.pop[y], 1)
        return out


def _bits(own: npt.NDArray[np.uint8]) -> Floats:
    return np.unpackbits(own, axis=1).astype(np.float32)


def _dice(bits_a: Floats, pop_a: Floats, bits_b: Floats, pop_b: Floats) -> Floats:
    """Dice of every pair, float32 (intersections exact in float32: a block's values are the
    whole matrix's)."""
    inter = bits_a @ bits_b.T
    return (2 * inter / np.maximum(pop_a[:, None] + pop_b[None, :], 1)).astype(np.float32)


def own_graph(own: npt.NDArray[np.uint8]) -> OwnGraph:
    bits = _bits(own)
    pop = bits.sum(axis=1)
    level = np.empty((len(own), len(own)), np.int8)
    for start in range(0, len(own), BLOCK):
        part = slice(start, start + BLOCK)
        level[part] = levels(_dice(bits[part], pop[part], bits, pop))
    np.fill_diagonal(level, SAME)
    return OwnGraph(own, level, pop)


def fit_model(
    own: npt.NDArray[np.uint8] | OwnGraph, r: int, bands: int, view: CombinerView,
    truth_a: npt.NDArray[np.intp], truth_b: npt.NDArray[np.intp],
) -> Model:  # fmt: skip
    """The attacker's model. Its calibration (the chance a pair blocks together, and the
    victim's Dice level, given the attacker's Dice level for the pair) is counted on the true
    alignment, smoothed towards a Gaussian; an attacker would estimate both by re-encoding
    noisy copies of its own plaintext under the public blocking setting: a generous
    calibration, as an attacker's best case should be. `r` and `bands` shape the prior only.
    `own`: the attacker's encodings, or their `own_graph` (shared by the models of several
    views)."""
    graph = own if isinstance(own, OwnGraph) else own_graph(own)
    level, pop = graph.level, graph.pop
    nl = SAME + 1
    # blocking: the chance a pair is a candidate, by the attacker's level (Laplace-smoothed
    # towards the bit-sampling curve at the level's Dice)
    lev_all = level[np.ix_(truth_a, truth_b)].astype(np.intp)
    lev_cand = lev_all[view.pairs[:, 0], view.pairs[:, 1]]
    n_all = np.bincount(lev_all.ravel(), minlength=nl).astype(np.float64)
    n_cand = np.bincount(lev_cand, minlength=nl).astype(np.float64)
    del lev_all
    centres = (np.arange(nl) + 0.5) * LEVEL
    centres[SAME] = 1.0
    agree = np.clip(1 - (1 - centres) * 0.5, 0, 1)  # rough bit agreement at that Dice
    prior = np.clip(1 - (1 - agree**r) ** bands, 1e-4, 1 - 1e-4)
    pc = np.clip((n_cand + 2 * prior) / (n_all + 2), 1e-6, 1 - 1e-6)
    log_miss = np.log1p(-pc).astype(np.float32)  # by level
    logit_pc = (np.log(pc) - np.log1p(-pc)).astype(np.float32)
    # Dice noise: the victim level of true-aligned candidates against the attacker's level
    ta, tb = truth_a[view.pairs[:, 0]], truth_b[view.pairs[:, 1]]
    k_v = levels(view.dice)
    hist = np.zeros((nl, nl))
    np.add.at(hist, (k_v, lev_cand), 1.0)
    same = ta == tb
    resid = view.dice[~same] - graph.pair_dice(ta[~same], tb[~same])
    if not len(resid):  # every pair of the view is one person's (the combiner's links)
        resid = np.zeros(1)
    mu = float(np.median(resid))
    sigma = float(1.4826 * np.median(np.abs(resid - mu))) + LEVEL / 2
    same_d = view.dice[same] if same.any() else np.array([0.95])
    mu_s = float(np.median(same_d))
    sigma_s = float(1.4826 * np.median(np.abs(same_d - mu_s))) + LEVEL / 2
    edges = np.append(np.arange(nl) * LEVEL, np.inf)
    table = np.empty((nl, nl))
    for lv in range(nl):
        m, sd = (mu_s, sigma_s) if lv == SAME else (centres[lv] + mu, sigma)
        mass = np.diff(norm.cdf(edges, m, sd))
        mass[SAME - 1] += mass[SAME]  # Dice 1 sits in the top level
        mass[SAME] = 0.0
        gauss = (1 - EPS) * mass + EPS / SAME
        counts = hist[:, lv].copy()
        counts[SAME] = 0.0
        smooth = (counts + 10 * gauss) / (counts.sum() + 10)
        smooth[SAME] = 1e-9
        table[:, lv] = np.log(smooth)
    probs = np.exp(table)
    mids = np.clip(np.searchsorted(COARSE, centres, side="right") - 1, 0, len(COARSE) - 2)
    coarse = np.zeros((nl, len(COARSE) - 1))
    for k in range(nl):
        coarse[:, mids[k]] += probs[k, :]
    pr = view.pop_a - pop[truth_a] if view.pops else np.zeros(1)
    pop_sigma = float(1.4826 * np.median(np.abs(pr - np.median(pr)))) + 1.0
    return Model(
        level, logit_pc, log_miss, table.astype(np.float32), coarse.astype(np.float32),
        pop.astype(np.int64), pop_sigma,
    )  # fmt: skip


def signature(view: CombinerView, model: Model, mine: npt.NDArray[np.intp],
              theirs: npt.NDArray[np.intp]) -> Floats:  # fmt: skip
    """(victim record of A, attacker record of A's people): log-likelihood of the record's
    popcount and of its histogram of candidates' Dice (coarse bins; the count in each Poisson)
    given the attacker record's popcount and expected histogram against B's people. No seed
    needed: this is the blind start."""
    hist = np.zeros((view.n_a, len(COARSE) - 1), dtype=np.float32)
    bins = np.clip(np.searchsorted(COARSE, view.dice, side="right") - 1, 0, len(COARSE) - 2)
    np.add.at(hist, (view.pairs[:, 0], bins), 1.0)
    lev = model.level[np.ix_(mine, theirs)].astype(np.intp)
    pc = 1 - np.exp(model.log_miss[lev])
    nl = SAME + 1
    by_level = np.bincount(
        (np.arange(len(mine))[:, None] * nl + lev).ravel(), weights=pc.ravel(),
        minlength=len(mine) * nl,
    ).reshape(len(mine), nl)  # fmt: skip
    expected = np.maximum(by_level @ model.coarse, 1e-4).astype(np.float32)
    ll = hist @ np.log(expected).T  # (|A|, |mine|): in place from here (N x N for B)
    ll -= expected.sum(axis=1)[None, :]
    if view.pops:
        z = (view.pop_a[:, None] - model.pop[mine][None, :]) / model.pop_sigma
        ll += np.log(0.95 * np.exp(-0.5 * z**2) / (2.5066 * model.pop_sigma) + 0.05 / 1024)
    return ll.astype(np.float32, copy=False)


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
    sig_a, sig_b = signature(view, model, in_a, in_b), signature(flipped, model, in_b, in_a)
    pos_a = {int(p): j for j, p in enumerate(in_a)}
    pos_b = {int(p): j for j, p in enumerate(in_b)}
    seeds_a = {i: pos_a[p] for i, p in known_a.items()}
    seeds_b = {i: pos_b[p] for i, p in known_b.items()}
    blind_a: dict[int, int] = {}
    if blind:
        for sig, seeds, out in ((sig_a, seeds_a, blind_a), (sig_b, seeds_b, None)):
            centred = sig - sig.mean(axis=1, keepdims=True)
            found = mutual_best(centred, seeds, 0.0, inplace=True)[:blind]
            del centred
            chosen = {i: p for _m, i, p in found}
            seeds.update(chosen)
            if out is not None:
                out.update(chosen)
    # The signatures become the scores (no copy: B's is |B| x |B| against a large member).
    tri_a = Trilateration(view, model, in_a, sig_a, probes[0] if probes else None, copy=False)
    tri_b = Trilateration(flipped, model, in_b, sig_b, probes[1] if probes else None, copy=False)
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
        new_a = mutual_best(tri_a.centred(True), seeds_a, floor, inplace=True)[
            : max(10, len(seeds_a) // share)
        ]
        new_b = mutual_best(tri_b.centred(True), seeds_b, floor, inplace=True)[
            : max(10, len(seeds_b) // share)
        ]
        if not new_a and not new_b:
            break
        add_a = {i: j for _m, i, j in new_a}
        add_b = {i: j for _m, i, j in new_b}
        seeds_a.update(add_a)
        seeds_b.update(add_b)
        tri_b.add({i: int(in_a[j]) for i, j in add_a.items()})
        tri_a.add({i: int(in_b[j]) for i, j in add_b.items()})
        if robust:
            drop_a = unstable(tri_a.centred(True), seeds_a, fixed_a)
            drop_b = unstable(tri_b.centred(True), seeds_b, fixed_b)
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
        for mine, tri, seeds in ((claims_a, tri_a, seeds_a), (claims_b, tri_b, seeds_b)):
            found = mutual_best(tri.centred(True), seeds, margin, inplace=True)
            mine.update({i: j for _m, i, j in found})
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
