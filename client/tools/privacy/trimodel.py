"""The trilateration attack's model: the attacker's own Dice graph and what it expects of a view.

A view of a two-server role (`CombinerView`: the cross-member candidate pairs and a value
each) is attacked by trilateration.py; this module holds what that attack starts from: the
levels of the attacker's own Dice (`own_graph`, once), its calibrated model of a view
(`fit_model`, per view: the chance a pair blocks together and the victim's value given the
attacker's level) and the blind start's signature of each record (`signature`).

Pure numpy and scipy.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import numpy.typing as npt
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

    # (N, N) Dice level of the attacker's pairs, SAME on the diagonal (or `CrossLevel`: the
    # rows of A's people only)
    level: npt.NDArray[np.int8] | CrossLevel
    logit_pc: Floats  # (SAME + 1,) by level: log Pc - log(1 - Pc)
    log_miss: Floats  # (SAME + 1,) by level: log(1 - Pc)
    table: Floats  # (SAME + 1, SAME + 1): log P(victim level k | attacker level l)
    coarse: Floats  # (SAME + 1, len(COARSE) - 1): P(victim coarse bin | attacker level)
    pop: npt.NDArray[np.int64]  # the attacker's popcounts
    pop_sigma: float
    # `cross_graph`'s nearest records of each of A's people (trisparse.py's B side), or None
    near: npt.NDArray[np.intp] | None = None
    cache: dict[str, Any] = dataclasses.field(default_factory=dict)  # per view, across attacks


BLOCK = 1024  # rows a block when the (N, N) levels are computed (its Dice: (rows, N))


class CrossLevel:
    """The levels of A's people against every record of the attacker's (`cross_graph`),
    indexed as the (N, N) matrix is (`level[rows, cols]`, rows among A's people): against a
    large member B, the (N, N) int8 matrix alone is 4.1 GB at N = 64,000."""

    def __init__(self, cross: npt.NDArray[np.int8], rows: npt.NDArray[np.intp], n: int) -> None:
        self.cross = cross  # (len(rows), N)
        self.row_of = np.full(n, -1, np.intp)
        self.row_of[rows] = np.arange(len(rows))
        self.shape = (n, n)

    def __getitem__(self, key: Any) -> npt.NDArray[np.int8]:
        rows, cols = key  # the levels are symmetric: A's people may be either index
        for mine, other in ((rows, cols), (cols, rows)):
            at = self.row_of[mine]
            if (np.asarray(at) >= 0).all():
                return self.cross[at, other]  # type: ignore[no-any-return]
        raise IndexError("a level between two records outside A's people (not held)")


@dataclasses.dataclass
class OwnGraph:
    """The attacker's own encodings (packed bits, as given), their popcounts and the levels of
    every pair's Dice (SAME on the diagonal): what every view's model starts from (`own_graph`
    once, then `fit_model` per view). The Dice is computed where read (`dice_of`, `pair_dice`):
    as an (N, N) float32 matrix it is 1.6 GB at N = 20,000."""

    own: npt.NDArray[np.uint8]
    level: npt.NDArray[np.int8] | CrossLevel
    pop: Floats
    near: npt.NDArray[np.intp] | None = None  # `cross_graph`'s: each of A's people's nearest

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


def cross_graph(own: npt.NDArray[np.uint8], rows: npt.NDArray[np.intp], k: int) -> OwnGraph:
    """`own_graph` held for the records `rows` (A's people) only: their levels against every
    record (`CrossLevel`), and each one's `k` records of highest Dice (itself among them),
    which trisparse.py's B side scores instead of every record of B."""
    bits = _bits(own)
    pop = bits.sum(axis=1)
    cross = np.empty((len(rows), len(own)), np.int8)
    near = np.empty((len(rows), min(k, len(own))), np.intp)
    for start in range(0, len(rows), BLOCK // 4):
        at = rows[start : start + BLOCK // 4]
        dice = _dice(bits[at], pop[at], bits, pop)
        dice[np.arange(len(at)), at] = 2.0  # itself first
        cross[start : start + len(at)] = levels(dice)
        top = np.argpartition(-dice, near.shape[1] - 1, axis=1)[:, : near.shape[1]]
        near[start : start + len(at)] = np.take_along_axis(
            top, np.argsort(-np.take_along_axis(dice, top, 1), axis=1, kind="stable"), 1
        )
    cross[np.arange(len(rows)), rows] = SAME
    return OwnGraph(own, CrossLevel(cross, rows, len(own)), pop, near)


def level_counts(
    level: npt.NDArray[np.int8] | CrossLevel, rows: npt.NDArray[np.intp],
    cols: npt.NDArray[np.intp], weights: Floats | None = None,
) -> npt.NDArray[np.float64]:  # fmt: skip
    """(len(rows), SAME + 1): for each row, how many of `cols` are at each level with it (or
    the sum of `weights[level]`), by blocks of rows (not a (rows, cols) intp matrix)."""
    nl = SAME + 1
    out = np.zeros((len(rows), nl))
    step = max(1, 4_000_000 // max(len(cols), 1))
    for start in range(0, len(rows), step):
        lev = level[np.ix_(rows[start : start + step], cols)].astype(np.intp)
        lev += np.arange(len(lev))[:, None] * nl
        w = None if weights is None else weights[lev % nl].ravel()
        out[start : start + len(lev)] = np.bincount(
            lev.ravel(), weights=w, minlength=len(lev) * nl
        ).reshape(len(lev), nl)
    return out


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
    lev_cand = level[truth_a[view.pairs[:, 0]], truth_b[view.pairs[:, 1]]].astype(np.intp)
    n_all = level_counts(level, truth_a, truth_b).sum(axis=0)
    n_cand = np.bincount(lev_cand, minlength=nl).astype(np.float64)
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
        pop.astype(np.int64), pop_sigma, graph.near,
    )  # fmt: skip


def expected_hist(model: Model, mine: npt.NDArray[np.intp], theirs: npt.NDArray[np.intp]) -> Floats:
    """(len(mine), len(COARSE) - 1): each record's expected count of candidates among
    `theirs` in each coarse bin of the view's value (the blind start's signature)."""
    by_level = level_counts(model.level, mine, theirs, 1 - np.exp(model.log_miss))
    return np.maximum(by_level @ model.coarse, 1e-4).astype(np.float32)


def view_hist(view: CombinerView) -> Floats:
    """(n_a, len(COARSE) - 1): each record of A's candidates by coarse bin of their value."""
    hist = np.zeros((view.n_a, len(COARSE) - 1), dtype=np.float32)
    bins = np.clip(np.searchsorted(COARSE, view.dice, side="right") - 1, 0, len(COARSE) - 2)
    np.add.at(hist, (view.pairs[:, 0], bins), 1.0)
    return hist


def signature(view: CombinerView, model: Model, mine: npt.NDArray[np.intp],
              theirs: npt.NDArray[np.intp]) -> Floats:  # fmt: skip
    """(victim record of A, attacker record of A's people): log-likelihood of the record's
    popcount and of its histogram of candidates' Dice (coarse bins; the count in each Poisson)
    given the attacker record's popcount and expected histogram against B's people. No seed
    needed: this is the blind start."""
    hist = view_hist(view)
    expected = expected_hist(model, mine, theirs)
    ll = hist @ np.log(expected).T  # (|A|, |mine|): in place from here (N x N for B)
    ll -= expected.sum(axis=1)[None, :]
    if view.pops:
        z = (view.pop_a[:, None] - model.pop[mine][None, :]) / model.pop_sigma
        ll += np.log(0.95 * np.exp(-0.5 * z**2) / (2.5066 * model.pop_sigma) + 0.05 / 1024)
    return ll.astype(np.float32, copy=False)


__all__ = [
    "BLOCK",
    "COARSE",
    "EPS",
    "LEVEL",
    "SAME",
    "CombinerView",
    "CrossLevel",
    "Floats",
    "Model",
    "OwnGraph",
    "cross_graph",
    "expected_hist",
    "fit_model",
    "level_counts",
    "levels",
    "own_graph",
    "signature",
    "view_hist",
]
