"""A dishonest combiner's reach pairs: the attack that chooses them (docs/privacy-design.md, "A
dishonest combiner's reach pairs, attacked").

In a run of three or more members the combiner C may ask, besides what the run gives it (the
links and their buckets, the extras' buckets), *reach* pairs: one bit a pair, whether its Dice
reaches the run's reach cut-off (0.70 at a threshold of 0.8; matcher/core/twocomplete.py).
S1 admits a batch of them only within its bounds (matcher/core/proposal.py `check_reach`: both
records in some proposed pair, each record in at most one reach pair with each other member
over the run; each pair once an upload), not that C's groups need them. A dishonest C asks
the pairs that tell it most: here, for each record of A, the pair that best splits its two
most likely identities under the trilateration attack's current scores (and for each record
of B the same), by the chance of a bit at the attacker's own Dice level for each identity
(`choose`: a greedy matching of the most telling pairs, the matching S1's bound allows), one
such matching a run, `runs` runs (C proposing again over the same uploads: each run's bound
starts afresh). The bits enter trilateration as one more term a seeded record
(`Probes.add`: log P(bit | the attacker's level for the pair), calibrated on the pairs asked,
an attacker's best case as the view's model is). The attack is `probe_attack`; the run's S1
and S2 answer through `ask` (benchmarks/reach_attack.py hands in matcher/core/twoprobe.py's
`ReachOracle`: the client does not import the matcher).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from blindmatch.client.tools.privacy.trilateration import (
    SAME,
    CombinerView,
    Model,
    trilaterate,
)

Floats = npt.NDArray[np.float32]
Ask = Callable[[npt.NDArray[np.intp], npt.NDArray[np.intp]], npt.NDArray[np.bool_]]
UNSEEDED = 0.5  # weight of a pair whose other record's identity is a best guess, not a seed
TEMPER = 3.0  # nats: the least temperature of a record's posterior over its likeliest identities


@dataclasses.dataclass
class Probes:
    """Pairs (row of this side, row of the other) asked one bit each, and `table`, log P(bit |
    the attacker's Dice level for the pair) (2, levels)."""

    n_a: int
    n_b: int
    pairs: npt.NDArray[np.intp]
    bits: npt.NDArray[np.bool_]
    table: Floats

    def __post_init__(self) -> None:
        order = np.lexsort((self.pairs[:, 0], self.pairs[:, 1]))
        self.by_column = sp.csc_matrix(
            (self.bits[order].astype(np.int8) + 1, self.pairs[order, 0],
             np.searchsorted(self.pairs[order, 1], np.arange(self.n_b + 1))),
            shape=(self.n_a, self.n_b),
        )  # fmt: skip

    def flipped(self) -> Probes:
        return Probes(self.n_b, self.n_a, self.pairs[:, ::-1].copy(), self.bits, self.table)

    def add(self, score: Floats, rows: npt.NDArray[np.intp], lev: npt.NDArray[np.intp],
            sign: float) -> None:  # fmt: skip
        """For seeds `rows` of the other side (their levels to every identity of this side,
        (seeds, identities)): each asked pair's bit's log-likelihood, added to its row."""
        cand = self.by_column[:, rows]
        if not cand.nnz:
            return
        seed = np.repeat(np.arange(len(rows)), np.diff(cand.indptr))
        kinds, kind = np.unique(seed * 2 + cand.data - 1, return_inverse=True)
        w = self.table[(kinds % 2)[:, None], lev[kinds // 2]]  # (kinds, identities)
        touched, row = np.unique(cand.indices, return_inverse=True)
        spread = sp.csr_matrix(
            (np.ones(cand.nnz, np.float32), (row, kind.ravel())), shape=(len(touched), len(kinds))
        )
        score[touched] += sign * np.asarray(spread @ w, dtype=np.float32)


def calibrate(
    level: npt.NDArray[np.int8],
    dice: npt.NDArray[np.floating],
    pairs: npt.NDArray[np.intp],
    reach: float,
) -> npt.NDArray[np.float64]:
    """P(a pair's victim Dice reaches `reach` | the attacker's level for it), from `pairs`
    (attacker indices, (k, 2)) and their victim Dice (an attacker's best case: it would
    estimate this on noisy copies of its own plaintext), Laplace-smoothed and made to rise
    with the level."""
    nl = SAME + 1
    lev = level[pairs[:, 0], pairs[:, 1]].astype(np.intp)
    n = np.bincount(lev, minlength=nl).astype(float)
    ones = np.bincount(lev, weights=(np.asarray(dice) >= reach).astype(float), minlength=nl)
    p = (ones + 1e-4) / (n + 1)
    p[SAME] = (ones[SAME] + 0.5) / (n[SAME] + 1)
    p[:SAME] = np.maximum.accumulate(p[:SAME])
    return np.clip(p, 1e-4, 1 - 1e-4)


def reach_table(prior: npt.NDArray[np.float64], model: Model, pairs: npt.NDArray[np.intp],
                bits: npt.NDArray[np.bool_], truth_a: npt.NDArray[np.intp],
                truth_b: npt.NDArray[np.intp], weight: float = 50.0) -> Floats:  # fmt: skip
    """log P(bit | attacker level), (2, levels): `prior` (`calibrate`), updated by the pairs
    asked so far on the true alignment (as the view's model is calibrated)."""
    nl = len(prior)
    n = np.zeros(nl)
    ones = np.zeros(nl)
    if len(pairs):
        lev = model.level[truth_a[pairs[:, 0]], truth_b[pairs[:, 1]]].astype(np.intp)
        np.add.at(n, lev, 1.0)
        np.add.at(ones, lev, bits.astype(float))
    p = np.clip((ones + weight * prior) / (n + weight), 1e-4, 1 - 1e-4)
    return np.log(np.stack([1 - p, p])).astype(np.float32)


def _posterior(score: Floats, seeds: dict[int, int], k: int) -> tuple[npt.NDArray[np.intp], Floats]:
    """Each row's `k` most likely columns and their weights (a tempered softmax over them; a
    seed: its column, weight 1)."""
    k = min(k, score.shape[1])
    top = np.argpartition(-score, k - 1, axis=1)[:, :k]
    s = np.take_along_axis(score, top, axis=1).astype(np.float64)
    # tempered: trilateration's sums of log-likelihoods are overconfident where a row has
    # little evidence (a third of the spread of its top k, at least TEMPER nats)
    spread = s.max(axis=1, keepdims=True) - s.min(axis=1, keepdims=True)
    w = np.exp((s - s.max(axis=1, keepdims=True)) / np.maximum(spread / 3, TEMPER))
    w /= w.sum(axis=1, keepdims=True)
    for i, j in seeds.items():
        top[i] = j
        w[i] = 0.0
        w[i, 0] = 1.0
    return top, w.astype(np.float32)


def _h(p: Floats) -> Floats:
    q = np.clip(p, 1e-6, 1 - 1e-6)
    out: Floats = -(q * np.log(q) + (1 - q) * np.log1p(-q))
    return out


def _information(top: npt.NDArray[np.intp], w: Floats, ids: npt.NDArray[np.intp],
                 other: npt.NDArray[np.intp], level: npt.NDArray[np.int8], p1: Floats,
                 chunk: int = 64) -> Floats:  # fmt: skip
    """(rows, other side's rows): the mutual information between a row's identity (its
    posterior `top`, `w` over `ids`) and the bit of its pair with each record of the other
    side, taken to be `other` (an attacker index each)."""
    out = np.empty((len(top), len(other)), np.float32)
    for s in range(0, len(top), chunk):
        pk = p1[level[ids[top[s : s + chunk]][:, :, None], other[None, None, :]]]  # (c, k, n)
        wk = w[s : s + chunk, :, None]
        pi = (wk * pk).sum(axis=1)
        out[s : s + chunk] = _h(pi) - (wk * _h(pk)).sum(axis=1)
    return out


def choose(state: dict[str, Any], model: Model, p1: npt.NDArray[np.float64],
           in_a: npt.NDArray[np.intp], in_b: npt.NDArray[np.intp],
           taken: set[tuple[int, int]], allowed_a: npt.NDArray[np.bool_],
           allowed_b: npt.NDArray[np.bool_], k: int = 16, per_row: int = 32,
           ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:  # fmt: skip
    """One run's reach pairs: a matching (each record once, S1's bound) of the pairs whose
    bit tells most of a record's identity (the mutual information between the bit and the
    record's posterior over its `k` most likely identities under trilateration's scores, by
    `p1`, P(bit 1) at the attacker's level), A's and B's summed, each against the other
    record's seed or, at `UNSEEDED` weight, its best guess; never a pair in `taken` (asked,
    or in the view). Each record S1 admits is in a pair (among its `per_row` best), however
    little it tells."""
    p = p1.astype(np.float32)
    top_a, w_a = _posterior(state["tri_a"].centred(), state["seeds_a"], k)
    top_b, w_b = _posterior(state["tri_b"].centred(), state["seeds_b"], k)
    seeded_a = np.zeros(len(top_a), bool)
    seeded_a[list(state["seeds_a"])] = True
    seeded_b = np.zeros(len(top_b), bool)
    seeded_b[list(state["seeds_b"])] = True
    best_a = in_a[top_a[np.arange(len(top_a)), w_a.argmax(axis=1)]]
    best_b = in_b[top_b[np.arange(len(top_b)), w_b.argmax(axis=1)]]
    assert isinstance(model.level, np.ndarray)  # every pair's levels (not `cross_graph`'s)
    gain = _information(top_a, w_a, in_a, best_b, model.level, p)
    gain *= np.where(seeded_b, 1.0, UNSEEDED).astype(np.float32)[None, :]
    gain += (_information(top_b, w_b, in_b, best_a, model.level.T, p).T
             * np.where(seeded_a, 1.0, UNSEEDED).astype(np.float32)[:, None])  # fmt: skip
    # ties (most pairs tell nothing) broken at random, so that the matching covers every record
    gain += np.random.default_rng(len(taken)).random(gain.shape, np.float32) * 1e-7
    gain[~allowed_a] = -1.0
    gain[:, ~allowed_b] = -1.0
    if taken:
        t = np.array(sorted(taken), dtype=np.intp)
        gain[t[:, 0], t[:, 1]] = -1.0
    per_row = min(per_row, gain.shape[1])
    cols = np.argpartition(-gain, per_row - 1, axis=1)[:, :per_row].ravel()
    rows = np.repeat(np.arange(gain.shape[0]), per_row)
    g = gain[rows, cols]
    order = np.argsort(-g, kind="stable")
    used_a: set[int] = set()
    used_b: set[int] = set()
    out_a, out_b = [], []
    for x in order[g[order] >= 0].tolist():  # a bit that tells nothing costs nothing
        i, j = int(rows[x]), int(cols[x])
        if i in used_a or j in used_b:
            continue
        used_a.add(i)
        used_b.add(j)
        out_a.append(i)
        out_b.append(j)
    return np.array(out_a, np.intp), np.array(out_b, np.intp)


def pair_dice(clk_a: npt.NDArray[np.uint8], clk_b: npt.NDArray[np.uint8]) -> Floats:
    """The Dice of every pair of two members' CLKs (packed bits), (A's rows, B's rows)."""
    bits = [np.unpackbits(x, axis=1).astype(np.float32) for x in (clk_a, clk_b)]
    pops = [x.sum(axis=1) for x in bits]
    out: Floats = 2 * (bits[0] @ bits[1].T) / np.maximum(pops[0][:, None] + pops[1][None, :], 1)
    return out


def guessed_matching(view: CombinerView, dice: Floats, reach: float,
                     limit: int | None = None) -> CombinerView:  # fmt: skip
    """C's view with the most one run's reach pairs can add under S1's per-upload cap
    (matcher/core/rowledger.py): a matching of pairs outside the view whose Dice (`pair_dice`)
    reaches `reach`, highest first, valued at `reach`: what a C that guessed every record's
    near neighbour in the other member right would ask (a bit of 1 on every pair it asked);
    `limit`: its first `limit` pairs only (S1's reach quota, matcher/core/rowledger.py)."""
    d = dice.copy()
    d[view.pairs[:, 0], view.pairs[:, 1]] = -1.0
    at = np.argwhere(d >= reach - 1e-9)
    at = at[np.argsort(-d[at[:, 0], at[:, 1]], kind="stable")]
    used_a: set[int] = set()
    used_b: set[int] = set()
    keep = []
    for n, (i, j) in enumerate(at.tolist()):
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
            keep.append(n)
    keep = keep[:limit] if limit is not None else keep
    pairs = np.concatenate([view.pairs, at[keep]]).astype(np.intp)
    values = np.concatenate([view.dice, np.full(len(keep), reach)])
    return CombinerView(view.n_a, view.n_b, pairs, values, view.pop_a, view.pop_b, view.pops)


# S1's reach quota a pair of uploads and the reach cut-off's distance under the threshold, as
# the matcher has them (matcher/core/rowledger.py `reach_quota`, core/solve.py REACH: the
# client does not import the matcher; tests/test_reach_attack.py checks they agree).
REACH_SHARE, REACH_FLOOR, REACH_BELOW = 0.01, 16, 0.10


def quota_view(
    pairs: npt.NDArray[np.intp], values: npt.NDArray[np.float64], dice: Floats, threshold: float
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]]:
    """C's view (`pairs`, `values`) with the most a dishonest C gets of its reach pairs under
    S1's cap and quota (`guessed_matching`, as many as the quota admits: pairs that all reach
    the reach cut-off, as if it guessed each right), `dice` the two members' `pair_dice`:
    `privacy-check --mode two-server`'s C* (docs/privacy-design.md)."""
    n_a, n_b = dice.shape
    quota = max(REACH_FLOOR, int(np.ceil(REACH_SHARE * min(n_a, n_b))))
    none = np.zeros(0, np.int64)
    view = CombinerView(n_a, n_b, pairs, values, none, none, pops=False)
    worst = guessed_matching(view, dice, round(threshold - REACH_BELOW, 6), quota)
    return worst.pairs, worst.dice


@dataclasses.dataclass
class ProbeResult:
    """The claims on A and B after the reach pairs, and what was asked."""

    claims_a: dict[int, int]
    claims_b: dict[int, int]
    asked: int
    ones: int
    runs: int


def probe_attack(
    view: CombinerView, model: Model, in_a: npt.NDArray[np.intp], in_b: npt.NDArray[np.intp],
    known_a: dict[int, int], truth_a: npt.NDArray[np.intp], truth_b: npt.NDArray[np.intp],
    prior: npt.NDArray[np.float64], ask: Ask, next_run: Callable[[], None],
    allowed: Callable[[int], Any], runs: int, blind: int = 50, margin: float = 3.0,
) -> ProbeResult:  # fmt: skip
    """Trilateration on C's view with `runs` runs' reach pairs chosen by `choose` (`prior`:
    `calibrate`'s chance of a bit by the attacker's level; each run's a matching, asked
    through `ask`; `next_run` between runs; `allowed(member)`: the records S1 would admit,
    those in some proposed pair), rescored after each run, then attacked again with every
    bit. Returns the final claims (rows -> the attacker's indices)."""
    taken = {(int(i), int(j)) for i, j in view.pairs}
    pairs = np.empty((0, 2), np.intp)
    bits = np.empty(0, bool)

    def probes() -> tuple[Probes, Probes]:
        table = reach_table(prior, model, pairs, bits, truth_a, truth_b)
        mine = Probes(view.n_a, view.n_b, pairs, bits, table)
        return mine, mine.flipped()

    state: dict[str, Any] = {}
    for run in range(runs):
        trilaterate(view, model, in_a, in_b, known_a, {}, blind, margin, 20_000, robust=True,
                    probes=probes(), state=state)  # fmt: skip
        p1 = np.exp(probes()[0].table[1].astype(np.float64))
        rows_a, rows_b = choose(state, model, p1, in_a, in_b, taken, allowed(0), allowed(1))
        if run:
            next_run()
        got = ask(rows_a, rows_b) if len(rows_a) else np.zeros(0, bool)
        taken.update(zip(rows_a.tolist(), rows_b.tolist(), strict=True))
        pairs = np.concatenate([pairs, np.stack([rows_a, rows_b], axis=1)])
        bits = np.concatenate([bits, got])
    claims_a, claims_b, _blind = trilaterate(
        view, model, in_a, in_b, known_a, {}, blind, margin, 20_000, robust=True,
        probes=probes() if len(pairs) else None,
    )  # fmt: skip
    return ProbeResult(claims_a, claims_b, len(pairs), int(bits.sum()), runs)


__all__ = [
    "ProbeResult",
    "Probes",
    "calibrate",
    "choose",
    "guessed_matching",
    "pair_dice",
    "probe_attack",
    "quota_view",
    "reach_table",
]
