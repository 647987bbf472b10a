"""Field-level matching: per-field Dice, Fellegi–Sunter weights learned by EM, no labels.

Used when every upload of a run is a field-level encoding (client.fieldlevel):
each CLK is the concatenation of one Bloom filter per field, and the upload
told the matcher only the segment sizes. Everything here is a pure function
over arrays (no storage, no gRPC), as compare.py's chunks are.

1. **Candidates** (blocking): pairs of records, from different members, whose
   filters are *identical* in at least one selective field (one whose most
   common value covers under `BLOCKING_MAX_SHARE` of records: not sex).
2. **Comparison vectors**: per field, the Dice similarity of the two segments,
   cut into levels exact / close / partial / different; *missing* when either
   segment is empty, and a missing field adds no evidence either way.
3. **Weights**: u-probabilities (how often non-matches reach each level) from
   random pairs; m-probabilities and the share of matches among candidates by
   EM over the candidates, u held fixed, as Splink does. An exact agreement is
   weighted by how common that filter is (term frequency): two records that
   agree on a rare surname count for more than two that agree on a common one.
4. **Scores**: the posterior match probability of each candidate pair. Pairs at
   or above the project threshold are solved greedily 1:1 (multi-party), and
   links carry the probability as their score.

What the matcher learns beyond record-level matching is documented in
docs/evaluation.md ("What field-level encodings reveal").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from blindmatch.matcher.core.compare import Candidates

BLOCKING_MAX_SHARE = 0.05  # a field blocks only if its commonest value is rarer than this
# A value shared by so many records of two members that it would make more pairs than this
# does not block (those pairs can still be found through another field).
BLOCKING_MAX_PAIRS_PER_VALUE = 250_000
RANDOM_PAIRS = 200_000  # sampled to estimate u-probabilities
EM_ITERATIONS = 40
# Level edges on per-field Dice; level 0 is *missing*, the last is exact (Dice 1).
EDGES = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
MISSING = 0
LEVELS = len(EDGES) + 2
EXACT = LEVELS - 1

Array = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Layout:
    """Segment sizes in bits, one per field, in CLK order."""

    field_bits: tuple[int, ...]

    @property
    def byte_slices(self) -> list[slice]:
        out, start = [], 0
        for bits in self.field_bits:
            out.append(slice(start, start + bits // 8))
            start += bits // 8
        return out


@dataclass
class Model:
    """Fellegi–Sunter parameters: per field m and u by level, and the prior."""

    m: npt.NDArray[np.float64]  # (fields, LEVELS), among matching pairs
    u: npt.NDArray[np.float64]  # (fields, LEVELS), among random (non-matching) pairs
    prior: float  # share of matches among all cross-member pairs
    iterations: int = 0


def _segment_codes(
    datasets: Sequence[npt.NDArray[np.uint8]], sl: slice
) -> tuple[list[Array], npt.NDArray[np.float64]]:
    """Per dataset, an integer code per record for its segment value (-1 if empty),
    and the share of all present records holding each code."""
    segs = [np.ascontiguousarray(d[:, sl]) for d in datasets]
    allsegs = np.concatenate(segs) if segs else np.empty((0, sl.stop - sl.start), np.uint8)
    view = allsegs.view(np.dtype((np.void, allsegs.shape[1]))).ravel()
    _, inverse, counts = np.unique(view, return_inverse=True, return_counts=True)
    inverse = inverse.astype(np.int64).ravel()
    empty = ~allsegs.any(axis=1)
    inverse[empty] = -1
    codes, start = [], 0
    for s in segs:
        codes.append(inverse[start : start + len(s)])
        start += len(s)
    n_present = max(int((~empty).sum()), 1)
    freq = counts / n_present
    return codes, freq


def _join(
    codes_a: Array, codes_b: Array, max_pairs_per_value: int = BLOCKING_MAX_PAIRS_PER_VALUE
) -> tuple[Array, Array]:
    """All (row_a, row_b) with the same non-negative code."""
    size = int(max(codes_a.max(initial=-1), codes_b.max(initial=-1))) + 1
    count_a = np.bincount(codes_a[codes_a >= 0], minlength=size)
    count_b = np.bincount(codes_b[codes_b >= 0], minlength=size)
    too_common = count_a * count_b > max_pairs_per_value
    if too_common.any():
        codes_a = np.where((codes_a >= 0) & too_common[np.maximum(codes_a, 0)], -1, codes_a)
    order = np.argsort(codes_b, kind="stable")
    sorted_b = codes_b[order]
    lo = np.searchsorted(sorted_b, codes_a, side="left")
    hi = np.searchsorted(sorted_b, codes_a, side="right")
    lo[codes_a < 0] = hi[codes_a < 0]
    counts = hi - lo
    rows_a = np.repeat(np.arange(len(codes_a), dtype=np.int64), counts)
    if not len(rows_a):
        return rows_a, rows_a.copy()
    starts = np.repeat(lo - np.concatenate(([0], np.cumsum(counts)[:-1])), counts)
    rows_b = order[starts + np.arange(len(rows_a))]
    return rows_a, rows_b.astype(np.int64)


def field_dice(
    a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8], layout: Layout
) -> npt.NDArray[np.float64]:
    """(pairs, fields) Dice per field of row-aligned CLK arrays; NaN where either is empty."""
    out = np.empty((len(a), len(layout.field_bits)), dtype=np.float64)
    for f, sl in enumerate(layout.byte_slices):
        sa, sb = a[:, sl], b[:, sl]
        pa = np.bitwise_count(sa).sum(axis=1, dtype=np.int64)
        pb = np.bitwise_count(sb).sum(axis=1, dtype=np.int64)
        both = np.bitwise_count(sa & sb).sum(axis=1, dtype=np.int64)
        with np.errstate(invalid="ignore", divide="ignore"):
            d = 2.0 * both / (pa + pb)
        d[(pa == 0) | (pb == 0)] = np.nan
        out[:, f] = d
    return out


def levels(dice: npt.NDArray[np.float64]) -> npt.NDArray[np.int8]:
    """Comparison levels from per-field Dice (see the module docstring)."""
    out = np.ones(dice.shape, dtype=np.int8)
    for level, edge in enumerate(EDGES, start=2):
        out[dice >= edge] = level
    out[np.isnan(dice)] = MISSING
    return out


def _pair_levels(
    datasets: Sequence[npt.NDArray[np.uint8]],
    layout: Layout,
    d0: Array,
    r0: Array,
    d1: Array,
    r1: Array,
    batch: int = 200_000,
) -> npt.NDArray[np.int8]:
    out = np.empty((len(d0), len(layout.field_bits)), dtype=np.int8)
    for i in np.unique(d0):
        for j in np.unique(d1):
            sel = np.flatnonzero((d0 == i) & (d1 == j))
            for start in range(0, len(sel), batch):
                part = sel[start : start + batch]
                out[part] = levels(field_dice(datasets[i][r0[part]], datasets[j][r1[part]], layout))
    return out


@dataclass
class Pairs:
    """Candidate pairs between datasets (d0 < d1), with their comparison levels."""

    d0: Array
    r0: Array
    d1: Array
    r1: Array
    levels: npt.NDArray[np.int8]
    tf: npt.NDArray[np.float64]  # (pairs, fields) share of records with that value, for EXACT

    def __len__(self) -> int:
        return len(self.d0)


@dataclass
class Fields:
    """Every dataset's segment values as integer codes, and how common each value is."""

    datasets: Sequence[npt.NDArray[np.uint8]]
    layout: Layout
    codes: list[list[Array]]  # [field][dataset] -> code per record, -1 when empty
    freqs: list[npt.NDArray[np.float64]]  # [field] -> share of present records per code
    counts: list[Array]  # [field] -> present records per code

    @classmethod
    def of(cls, datasets: Sequence[npt.NDArray[np.uint8]], layout: Layout) -> Fields:
        codes, freqs, counts = [], [], []
        for sl in layout.byte_slices:
            c, f = _segment_codes(datasets, sl)
            codes.append(c)
            freqs.append(f)
            present = np.concatenate(c)
            counts.append(np.bincount(present[present >= 0], minlength=len(f)))
        return cls(datasets, layout, codes, freqs, counts)

    def selective(self, field: int) -> bool:
        """Whether `field` may block: its commonest value is rare (not sex, say)."""
        counts = self.counts[field]
        present = counts.sum()
        return bool(present) and counts.max() <= max(BLOCKING_MAX_SHARE * present, 2)

    def pairs(self, d0: Array, r0: Array, d1: Array, r1: Array) -> Pairs:
        """Comparison levels and exact-value frequencies of the given pairs."""
        lv = _pair_levels(self.datasets, self.layout, d0, r0, d1, r1)
        tf = np.ones(lv.shape, dtype=np.float64)
        for f in range(len(self.layout.field_bits)):
            code = np.full(len(d0), -1, dtype=np.int64)
            for i in range(len(self.datasets)):
                sel = d0 == i
                code[sel] = self.codes[f][i][r0[sel]]
            exact = (lv[:, f] == EXACT) & (code >= 0)
            tf[exact, f] = self.freqs[f][code[exact]]
        return Pairs(d0, r0, d1, r1, lv, tf)


def block(fields: Fields) -> Pairs:
    """Candidate pairs: identical filters in at least one selective field."""
    datasets = fields.datasets
    keys: list[Array] = []
    n = len(datasets)
    stride = max((len(d) for d in datasets), default=1)
    for f in range(len(fields.layout.field_bits)):
        if not fields.selective(f):
            continue
        for i in range(n):
            for j in range(i + 1, n):
                ra, rb = _join(fields.codes[f][i], fields.codes[f][j])
                keys.append(((i * n + j) * stride + ra) * stride + rb)
    key = np.unique(np.concatenate(keys)) if keys else np.empty(0, dtype=np.int64)
    rb = key % stride
    ra = (key // stride) % stride
    pair = key // stride // stride
    return fields.pairs(pair // n, ra, pair % n, rb)


def u_probabilities(
    datasets: Sequence[npt.NDArray[np.uint8]], layout: Layout, seed: int = 0
) -> npt.NDArray[np.float64]:
    """P(level | non-match, field present) per field, from random cross-member pairs."""
    rng = np.random.default_rng(seed)
    sizes = [len(d) for d in datasets]
    pairs = [(i, j) for i in range(len(sizes)) for j in range(i + 1, len(sizes))]
    weights = np.array([sizes[i] * sizes[j] for i, j in pairs], dtype=np.float64)
    counts = np.ones((len(layout.field_bits), LEVELS))  # add-one smoothing
    if weights.sum() == 0:
        return counts / counts.sum(axis=1, keepdims=True)
    exhaustive = weights.sum() <= RANDOM_PAIRS  # small projects: every pair
    draws = (
        weights.astype(np.int64)
        if exhaustive
        else rng.multinomial(RANDOM_PAIRS, weights / weights.sum())
    )
    for (i, j), n in zip(pairs, draws, strict=True):
        if not n:
            continue
        if exhaustive:
            ra, rb = (g.ravel() for g in np.meshgrid(np.arange(sizes[i]), np.arange(sizes[j])))
        else:
            ra = rng.integers(0, sizes[i], n)
            rb = rng.integers(0, sizes[j], n)
        lv = levels(field_dice(datasets[i][ra], datasets[j][rb], layout))
        for f in range(lv.shape[1]):
            counts[f] += np.bincount(lv[:, f], minlength=LEVELS)
    counts[:, MISSING] = 0.0
    return counts / counts.sum(axis=1, keepdims=True)


def _log_ratio(
    m: npt.NDArray[np.float64], u: npt.NDArray[np.float64], lv: npt.NDArray[np.int8]
) -> npt.NDArray[np.float64]:
    """Sum over present fields of log(m/u) at each pair's level (no term frequencies)."""
    ratio = np.log(np.maximum(m, 1e-12)) - np.log(np.maximum(u, 1e-12))
    ratio[:, MISSING] = 0.0
    fields = np.arange(lv.shape[1])
    return ratio[fields, lv].sum(axis=1)


def _normalised(mass: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    mass = mass + 1e-6
    mass[MISSING] = 0.0
    return mass / mass.sum()


def train(
    pairs: Pairs, u: npt.NDArray[np.float64], total_pairs: int, iterations: int = EM_ITERATIONS
) -> Model:
    """EM for m and the prior, u held at its random-pair estimate (no labels).

    The model is over *all* `total_pairs` cross-member pairs: those outside the
    candidates are taken as non-matches (they agree on no selective field), so
    the prior is the share of matches among all pairs, not among candidates.
    """
    fields = u.shape[0]
    m = np.zeros((fields, LEVELS))
    m[:, EXACT], m[:, EXACT - 1], m[:, 1 : EXACT - 1] = 0.85, 0.07, 0.08 / (LEVELS - 3)
    total = max(total_pairs, 1)
    model = Model(m=m, u=u, prior=min(0.5, max(len(pairs), 1) / total / 10))
    if not len(pairs):
        return model
    lv = pairs.levels
    onehot = [np.eye(LEVELS)[lv[:, f]] for f in range(fields)]
    for it in range(iterations):
        p = _posterior(model, lv)
        new_m = np.stack([_normalised(p @ onehot[f]) for f in range(fields)])
        prior = float(np.clip(p.sum() / total, 1e-12, 0.5))
        done = np.allclose(new_m, model.m, atol=1e-6) and abs(prior / model.prior - 1) < 1e-6
        model = Model(m=new_m, u=u, prior=prior, iterations=it + 1)
        if done:
            break
    return model


def _posterior(model: Model, lv: npt.NDArray[np.int8]) -> npt.NDArray[np.float64]:
    logit = np.log(model.prior) - np.log1p(-model.prior) + _log_ratio(model.m, model.u, lv)
    return 1.0 / (1.0 + np.exp(-np.clip(logit, -60, 60)))


def probabilities(model: Model, pairs: Pairs) -> npt.NDArray[np.float64]:
    """Posterior match probability of each pair, exact agreements weighted by frequency."""
    lv = pairs.levels
    logit = np.log(model.prior) - np.log1p(-model.prior) + _log_ratio(model.m, model.u, lv)
    # Term frequency: an exact agreement on a value held by a share s of records is
    # as likely by chance as s, not as the field's average chance agreement.
    exact = lv == EXACT
    u_exact = np.broadcast_to(model.u[:, EXACT], lv.shape)
    tf = np.where(exact, np.maximum(pairs.tf, 1e-6), u_exact)
    logit += (np.log(u_exact) - np.log(tf)).sum(axis=1, where=exact)
    return 1.0 / (1.0 + np.exp(-np.clip(logit, -60, 60)))


@dataclass
class Scorer:
    """A trained model over one run's datasets: scores any cross-member pair."""

    fields: Fields
    model: Model

    def __call__(
        self,
        d0: npt.NDArray[np.uint32],
        r0: npt.NDArray[np.uint32],
        d1: npt.NDArray[np.uint32],
        r1: npt.NDArray[np.uint32],
    ) -> npt.NDArray[np.float64]:
        pairs = self.fields.pairs(*(a.astype(np.int64) for a in (d0, r0, d1, r1)))
        return probabilities(self.model, pairs)


def scored_candidates(
    datasets: Sequence[npt.NDArray[np.uint8]], field_bits: Sequence[int], threshold: float
) -> tuple[Candidates, int, Scorer]:
    """Candidate pairs at or above `threshold` match probability, sorted for the solver;
    how many pairs were compared field by field; and the scorer for links."""
    fields = Fields.of(datasets, Layout(tuple(field_bits)))
    pairs = block(fields)
    sizes = [len(d) for d in datasets]
    total = sum(a * b for i, a in enumerate(sizes) for b in sizes[i + 1 :])
    model = train(pairs, u_probabilities(datasets, fields.layout), total)
    prob = probabilities(model, pairs)
    keep = prob >= threshold
    sims = prob[keep]
    d0, d1 = pairs.d0[keep].astype(np.uint32), pairs.d1[keep].astype(np.uint32)
    r0, r1 = pairs.r0[keep].astype(np.uint32), pairs.r1[keep].astype(np.uint32)
    order = np.lexsort((r1, r0, d1, d0, -sims))
    candidates = Candidates(sims[order], d0[order], d1[order], r0[order], r1[order])
    return candidates, len(pairs), Scorer(fields, model)
