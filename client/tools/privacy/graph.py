"""The graph-matching attack: re-identify a member's records from their pairwise similarities.

After Vidanage, Ranbaduge, Christen and Schnell, "A graph matching attack on
privacy-preserving record linkage" (CIKM 2020). Whoever holds one member's
encodings can compare every one with every other: that is what they are for.
The similarities form a graph that depends on the people, not on the secret.
An attacker who holds plaintext on many of the same people (another
organisation's export, with its own errors) encodes it under a key of its own
with the public schema, builds the same graph over its own encodings, and
matches the two graphs. No key, no hash function and no bit position is
needed: only similarities.

The steps, as `match_graphs` runs them:

1. **Similarity graphs.** A complete weighted graph per party and per encoding
   (record-level CLK, fallback CLK): the correlation of two records' bit
   vectors, each bit centred and scaled by how often it is set in that party's
   upload (`bit_similarity`; frequent bits say little, so Dice's raw overlap
   is noisier), then double-centred so that no record or bit frequency stands
   out.
2. **Node features, blind seeding.** Each record's coordinates on the graph's
   leading eigenvectors (a spectral embedding). Eigenvectors come with an
   arbitrary sign, so the attacker orients them: the leading ones by matching
   the two embeddings' third moments, the rest by trying each sign. A Hungarian
   assignment (`scipy.optimize.linear_sum_assignment`) of nearest embeddings
   gives first pairs, about one in a hundred right; propagation from them (each
   round the Hungarian assignment of the scores of step 3, its more confident
   half seeding the next) snowballs under the right orientation (most records
   become mutual best matches) and stalls under a wrong one, which is how the
   attacker knows which orientation to keep.
3. **Seed propagation.** Each record's similarities to the seeds' records,
   correlated across the two graphs (and across both CLKs' graphs when the
   upload has a fallback CLK), score every (encoded, plaintext) pair. Seeds
   grow by mutual best matches: each round the seeds still mutually best stay,
   and the most confident new mutual best matches join. With known pairs (a few
   people the attacker knows are in the upload, and which rows they are) the
   seeds start from those instead.
4. **Claims.** The attacker claims a record's identity when its pair is the
   mutual best match and stands `CLAIM_MARGIN` (row and column z-scores) above
   the runner-up in its row and column. The re-identification rate counts
   right claims among the records the attacker's plaintext covers (known pairs
   left out); claim precision counts right claims among claims.

Everything is dense numpy over n x n matrices: meant for a few thousand records
(`privacy-check` attacks a sample).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.optimize import linear_sum_assignment
from scipy.sparse.linalg import eigsh

Matrix = npt.NDArray[np.float32]

# Eigenvectors in the spectral embedding, and how many of the leading ones are oriented by
# third moments alone (the others by trying both signs).
DIMS = 6
SURE_DIMS = 3
# Propagation rounds per orientation tried; they stop early when this share of the victim's
# records have a mutual best match (under a wrong orientation it stalls near a quarter to a half).
TRIAL_ROUNDS = 9
TAKEOFF = 0.6
# Seeds taken from an orientation's trial (its most confident mutual best matches; a thirtieth
# of the records when that is more), and the matching quality (`_quality`) at which the
# attacker stops trying orientations.
START_SEEDS = 30
TAKEOFF_MARGIN = 2.0
# Orientations tried per embedding (the most plausible by third moments first).
ORIENTATIONS = 8
# Growing the seeds by mutual best matches: at most this many rounds; a new seed must stand this
# far (in row-plus-column z-scores) above its runner-up.
GROW_ROUNDS = 60
GROW_MARGIN = 0.5
# With at least this many known pairs the attack starts from them alone.
MIN_KNOWN = 5
# A pair is claimed when it is the mutual best match with at least this margin.
CLAIM_MARGIN = 0.5


def bit_similarity(clks: npt.NDArray[np.uint8]) -> Matrix:
    """Every pair's similarity (n x n): correlation of standardised bits, double-centred.

    Bits set (or clear) in nearly every record carry nothing and are dropped.
    The matrix is scaled to unit standard deviation; the diagonal is zero.
    """
    bits = np.unpackbits(clks, axis=1).astype(np.float32)
    n = len(bits)
    if n < 3:
        return np.zeros((n, n), dtype=np.float32)
    freq = bits.mean(axis=0)
    keep = (freq > 0.01) & (freq < 0.99)
    z = (bits[:, keep] - freq[keep]) / np.sqrt(freq[keep] * (1 - freq[keep]))
    sim = (z @ z.T) / max(int(keep.sum()), 1)
    return _double_centred(sim)


def collision_similarity(keys: npt.NDArray[np.uint64]) -> Matrix:
    """Every pair's number of shared band keys (n x n, `keys` is n x bands), double-centred.

    What a matcher holding only keyed-LSH band keys can compute: how many bands two
    records' keys collide in.
    """
    n, bands = keys.shape
    counts = np.zeros((n, n), dtype=np.float32)
    for b in range(bands):
        _values, inverse = np.unique(keys[:, b], return_inverse=True)
        same = inverse[:, None] == inverse[None, :]
        counts += same
    return _double_centred(counts)


def _double_centred(sim: npt.NDArray[np.floating]) -> Matrix:
    sim = np.asarray(sim, dtype=np.float32).copy()
    n = len(sim)
    np.fill_diagonal(sim, 0.0)
    rows = sim.sum(axis=1) / max(n - 1, 1)
    sim -= rows[:, None] + rows[None, :] - rows.mean()
    np.fill_diagonal(sim, 0.0)
    scale = float(sim.std())
    return sim / scale if scale > 0 else sim


@dataclass(frozen=True)
class Matching:
    """The attacker's pairs: victim row -> attacker row, its score, and whether it is claimed."""

    victim: npt.NDArray[np.intp]
    attacker: npt.NDArray[np.intp]
    score: npt.NDArray[np.float32]
    claimed: npt.NDArray[np.bool_]
    orientations_tried: int

    def claims(self) -> dict[int, int]:
        return {
            int(v): int(a)
            for v, a, ok in zip(self.victim, self.attacker, self.claimed, strict=True)
            if ok
        }


def _embedding(sim: Matrix, dims: int) -> npt.NDArray[np.float64]:
    """The leading `dims` eigenvectors scaled by sqrt(eigenvalue), each skewed positive."""
    dims = min(dims, len(sim) - 2)
    start = np.random.default_rng(0).standard_normal(len(sim))
    values, vectors = eigsh(sim.astype(np.float64), k=dims, which="LA", v0=start)
    order = np.argsort(-values)
    emb = vectors[:, order] * np.sqrt(np.maximum(values[order], 0.0))
    skew = (emb**3).sum(axis=0)
    return emb * np.where(skew < 0, -1.0, 1.0)


def _third_moments(emb: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    e = emb / np.maximum(emb.std(axis=0), 1e-12)
    return np.einsum("ni,nj,nk->ijk", e, e, e) / len(e)


def _orientations(ev: npt.NDArray[np.float64], ea: npt.NDArray[np.float64]) -> list[np.ndarray]:
    """Sign vectors for the victim's embedding, most plausible first.

    Third moments flip sign with an eigenvector: the signs of the leading
    SURE_DIMS are those that best match the two embeddings' third moments; the
    others are tried both ways, ordered by the same score.
    """
    tv, ta = _third_moments(ev), _third_moments(ea)
    d = ev.shape[1]

    def agreement(signs: np.ndarray) -> float:
        return float(np.einsum("ijk,i,j,k,ijk->", tv, signs, signs, signs, ta))

    sure = min(SURE_DIMS, d)
    lead = max(
        (np.array(s) for s in itertools.product((1.0, -1.0), repeat=sure)),
        key=lambda s: agreement(np.concatenate([s, np.zeros(d - sure)])),
    )
    tails = [np.array(t) for t in itertools.product((1.0, -1.0), repeat=d - sure)]
    options = [np.concatenate([lead, t]) for t in tails]
    return sorted(options, key=agreement, reverse=True)


def _zscores(g: Matrix) -> Matrix:
    """Each score z-scored in its row plus in its column. Each deviation is computed once
    and serves its standard deviation too (numpy's `std` computes the mean and the deviations
    again), in the order numpy's `mean` and `std` compute them: the same bits, in a third
    less time (the propagation rounds' second largest cost, docs/privacy.md)."""
    return np.add(_standardised(g, 1), _standardised(g, 0), out=None)


def _standardised(g: Matrix, axis: int) -> Matrix:
    """`(g - g.mean(axis)) / (g.std(axis) + 1e-9)`, to the bit, with one mean and one
    subtraction (the deviations squared in place of a copy)."""
    n = np.intp(g.shape[axis])
    deviation = g - g.mean(axis=axis, keepdims=True)
    squares = np.multiply(deviation, deviation)
    spread = np.add.reduce(squares, axis=axis, keepdims=True)
    np.true_divide(spread, n, out=spread, casting="unsafe")
    np.sqrt(spread, out=spread)
    spread += 1e-9
    return np.true_divide(deviation, spread, out=deviation)


def _normalised_rows(m: Matrix) -> Matrix:
    m = m - m.mean(axis=1, keepdims=True)
    return m / (np.linalg.norm(m, axis=1, keepdims=True) + 1e-9)


def propagation_scores(
    victim: Sequence[Matrix],
    attacker: Sequence[Matrix],
    seeds_v: npt.NDArray[np.intp],
    seeds_a: npt.NDArray[np.intp],
) -> Matrix:
    """Score of every (victim, attacker) pair: z-scored correlation of their similarity
    vectors to the seeds' records, over every graph (record-level and fallback CLKs)."""
    mv = _normalised_rows(np.concatenate([s[:, seeds_v] for s in victim], axis=1))
    ma = _normalised_rows(np.concatenate([s[:, seeds_a] for s in attacker], axis=1))
    return _zscores(mv @ ma.T)


def _best_and_margins(
    z: Matrix,
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.bool_], npt.NDArray[np.float32]]:
    """Each victim row's best attacker row, whether the choice is mutual, and its margin: how
    far the pair's score stands above the runner-up in its row and in its column (the less)."""
    best_a, best_v = z.argmax(axis=1), z.argmax(axis=0)
    rows = np.arange(len(z))
    mutual = best_v[best_a] == rows
    if z.shape[1] < 2 or z.shape[0] < 2:
        return best_a, mutual, np.zeros(len(z), dtype=np.float32)
    # Each row's and column's best less its runner-up: the best masked, the runner-up is the
    # largest left (a tie for best: the best again), as np.partition(z, -2) has them, in a
    # third of its time (it sorted a copy per axis: the attack's third largest cost).
    cols = np.arange(z.shape[1])
    masked = z.copy()
    masked[rows, best_a] = -np.inf
    row_margin = z[rows, best_a] - masked.max(axis=1)
    masked[rows, best_a] = z[rows, best_a]
    masked[best_v, cols] = -np.inf
    col_margin = (z[best_v, cols] - masked.max(axis=0))[best_a]
    return best_a, mutual, np.minimum(row_margin, col_margin).astype(np.float32)


def _quality(z: Matrix) -> float:
    """How well a matching holds together: the median margin of its claimable pairs (a right
    orientation gives about 2.5-3, a wrong one, fitting noise, about 1)."""
    _best, mutual, margin = _best_and_margins(z)
    claimed = mutual & (margin >= CLAIM_MARGIN)
    return float(np.median(margin[claimed])) if claimed.any() else 0.0


def _lap_rounds(
    victim: Sequence[Matrix], attacker: Sequence[Matrix], rows: np.ndarray, cols: np.ndarray
) -> tuple[float, Matrix]:
    """Propagation from a (mostly wrong) one-to-one assignment, the first stage of a blind
    attack: each round the Hungarian assignment of the scores, its more confident half
    seeding the next. Returns the share of mutual best matches reached and the last scores."""
    seen: set[bytes] = set()
    share, z = 0.0, np.zeros((0, 0), dtype=np.float32)
    for _round in range(TRIAL_ROUNDS):
        z = propagation_scores(victim, attacker, rows, cols)
        r, c = linear_sum_assignment(-z)
        _best, mutual, _margin = _best_and_margins(z)
        share = float(mutual.mean())
        if share >= TAKEOFF or c.tobytes() in seen:
            break
        seen.add(c.tobytes())
        score = z[r, c]
        keep = score >= np.median(score)
        rows, cols = r[keep], c[keep]
    return share, z


def _grow(
    victim: Sequence[Matrix],
    attacker: Sequence[Matrix],
    seeds: Mapping[int, int],
    known: Mapping[int, int],
) -> tuple[Matrix, dict[int, int]]:
    """Seed propagation by mutual best matches: each round, the seeds that are still their
    records' mutual best match stay (known pairs always), and the most confident new mutual
    best matches join (a quarter as many as there are seeds, at least five)."""
    seeds = dict(seeds)
    z = np.zeros((0, 0), dtype=np.float32)
    for _round in range(GROW_ROUNDS):
        sv = np.array(list(seeds), dtype=np.intp)
        sa = np.array([seeds[v] for v in sv.tolist()], dtype=np.intp)
        z = propagation_scores(victim, attacker, sv, sa)
        best, mutual, margin = _best_and_margins(z)
        kept = dict(known)
        taken = set(kept.values())
        for v in sv.tolist():
            if v not in kept and mutual[v] and best[v] == seeds[v] and best[v] not in taken:
                kept[v] = seeds[v]
                taken.add(seeds[v])
        fresh = np.flatnonzero(mutual & (margin >= GROW_MARGIN))
        fresh = fresh[np.argsort(-margin[fresh], kind="stable")]
        room = max(5, len(kept) // 4)
        for v in fresh.tolist():
            if room == 0:
                break
            if v not in kept and int(best[v]) not in taken:
                kept[v] = int(best[v])
                taken.add(int(best[v]))
                room -= 1
        if kept == seeds or not kept:
            break
        seeds = kept
    return z, seeds


class BlindTrials:
    """The blind seeding's trials of one pair of graphs, kept for the next `match_graphs` on
    them: an orientation's trial (its embedding's Hungarian assignment and `_lap_rounds`,
    most of the attack's time) does not depend on the known pairs, so the blind attack and
    those with known pairs can share it. Use one only with the graphs it was first given."""

    def __init__(self) -> None:
        self._embedded: dict[int, list[np.ndarray]] = {}
        self._trials: dict[tuple[int, int], tuple[np.ndarray, ...]] = {}

    def orientations(self, victim: Matrix, attacker: Matrix, d: int) -> list[np.ndarray]:
        if d not in self._embedded:
            ev, ea = _embedding(victim, d), _embedding(attacker, d)
            self._embedded[d] = [ev, ea, *_orientations(ev, ea)[:ORIENTATIONS]]
        return self._embedded[d][2:]

    def tried(self) -> int:
        """How many orientations' trials are kept."""
        return len(self._trials)

    def trial(
        self, victim: Sequence[Matrix], attacker: Sequence[Matrix], d: int, k: int
    ) -> tuple[np.ndarray, ...]:
        """Orientation k's best matches, whether mutual, margins, and (only where no match
        is mutual: no seed to grow) its scores."""
        if (d, k) not in self._trials:
            ev, ea, *options = self._embedded[d]
            diff = ev * options[k]
            dist = (diff**2).sum(1)[:, None] + (ea**2).sum(1)[None, :] - 2 * diff @ ea.T
            rows, cols = linear_sum_assignment(dist)
            _share, trial = _lap_rounds(victim, attacker, rows, cols)
            best, mutual, margin = _best_and_margins(trial)
            kept = trial if not mutual.any() else np.zeros((0, 0), dtype=np.float32)
            self._trials[(d, k)] = (best, mutual, margin, kept)
        return self._trials[(d, k)]


def match_graphs(
    victim: Sequence[Matrix],
    attacker: Sequence[Matrix],
    known: Mapping[int, int] | None = None,
    *,
    dims: int = DIMS,
    trials: BlindTrials | None = None,
) -> Matching:
    """Match the victim's similarity graphs to the attacker's; see the module docstring.

    `victim[k]` and `attacker[k]` are the same encoding's graphs (`bit_similarity`
    or `collision_similarity`) over each party's records; the first is embedded
    for blind seeding. `known` maps victim rows to attacker rows the attacker
    knows to be the same people. `trials`: the blind seeding's trials of earlier calls
    on the same graphs (the result is the same with or without; it saves their time).
    """
    trials = trials if trials is not None else BlindTrials()
    known = dict(known or {})
    nv, na = len(victim[0]), len(attacker[0])
    tried = 0
    z: Matrix | None = None
    best_quality = -1.0
    if len(known) >= MIN_KNOWN:
        z = _grow(victim, attacker, known, known)[0]
        best_quality = _quality(z)
    # A graph without an edge (a view of no candidate within a member) has no embedding
    # (ARPACK refuses it): nothing to seed blind from.
    edges = bool(np.any(victim[0])) and bool(np.any(attacker[0]))
    for d in (dims, dims + 2):  # a second embedding when no orientation of the first took
        if best_quality >= TAKEOFF_MARGIN or min(nv, na) < d + 3 or not edges:
            break
        for k in range(len(trials.orientations(victim[0], attacker[0], d))):
            tried += 1
            best, mutual, margin, trial = trials.trial(victim, attacker, d, k)
            start = dict(known)
            fresh = np.flatnonzero(mutual)
            fresh = fresh[np.argsort(-margin[fresh], kind="stable")]
            for v in fresh[: max(START_SEEDS, min(nv, na) // 30)].tolist():
                if v not in start and int(best[v]) not in start.values():
                    start[v] = int(best[v])
            grown = _grow(victim, attacker, start, known)[0] if start else trial
            quality = _quality(grown)
            if quality > best_quality:
                best_quality, z = quality, grown
            if quality >= TAKEOFF_MARGIN:
                break
    if z is None or not z.size:
        empty = np.zeros(0, dtype=np.intp)
        return Matching(empty, empty, np.zeros(0, np.float32), np.zeros(0, bool), tried)
    best, mutual, margin = _best_and_margins(z)
    rows = np.arange(nv)
    claimed = mutual & (margin >= CLAIM_MARGIN)
    for v, a in known.items():
        best[v], claimed[v], margin[v] = a, True, np.inf
    return Matching(rows, best.astype(np.intp), margin, claimed, tried)


@dataclass(frozen=True)
class GraphScore:
    """How the attack did against the truth (never shown to the attacker)."""

    overlapping: int  # victim records whose person is in the attacker's plaintext (not known)
    claims: int
    right: int

    @property
    def rate(self) -> float:
        return self.right / self.overlapping if self.overlapping else 0.0

    @property
    def precision(self) -> float:
        return self.right / self.claims if self.claims else 1.0


def score_matching(
    matching: Matching,
    victim_people: Sequence[object],
    attacker_people: Sequence[object],
    known: Mapping[int, int] | None = None,
) -> GraphScore:
    """Right claims among the records the attacker could re-identify; known pairs left out."""
    known = known or {}
    held = set(attacker_people)
    overlapping = sum(1 for i, p in enumerate(victim_people) if p in held and i not in known)
    claims = [(v, a) for v, a in matching.claims().items() if v not in known]
    right = sum(1 for v, a in claims if victim_people[v] == attacker_people[a])
    return GraphScore(overlapping, len(claims), right)


def known_pairs(
    victim_people: Sequence[object],
    attacker_people: Sequence[object],
    count: int,
    seed: int = 0,
) -> dict[int, int]:
    """`count` true pairs drawn at random: what an attacker who knows some people holds."""
    where = {p: j for j, p in enumerate(attacker_people)}
    shared = [i for i, p in enumerate(victim_people) if p in where]
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(shared), size=min(count, len(shared)), replace=False)
    return {shared[int(k)]: where[victim_people[shared[int(k)]]] for k in chosen}


def scored_runs(
    victim: Sequence[Matrix],
    attacker: Sequence[Matrix],
    victim_people: Sequence[object],
    attacker_people: Sequence[object],
    counts: Sequence[int],
) -> Iterator[tuple[int, GraphScore]]:
    """The attack with each count of known pairs (`known_pairs`, seeded by the count), scored
    against the truth; the blind seeding's trials shared by every count (`BlindTrials`: the
    same figures, the blind trials run once, not once a count)."""
    trials = BlindTrials()
    for count in counts:
        known = known_pairs(victim_people, attacker_people, count, seed=count)
        matching = match_graphs(victim, attacker, known, trials=trials)
        yield count, score_matching(matching, victim_people, attacker_people, known)


__all__ = [
    "CLAIM_MARGIN",
    "BlindTrials",
    "GraphScore",
    "Matching",
    "bit_similarity",
    "collision_similarity",
    "known_pairs",
    "match_graphs",
    "propagation_scores",
    "score_matching",
    "scored_runs",
]
