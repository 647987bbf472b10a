"""Attacks a curious linkage service can run on the encodings it holds.

The attacker sees encodings only (bit vectors, one per record or per field of
a record) and public frequency lists; it never sees plaintext. The plaintext
`truth` is used afterwards, only to score which guesses were right.

- **frequency alignment**: group identical or near-identical encodings
  (Dice >= 0.9, found with anonlink as the matcher would), rank the groups by
  size, and give the i-th largest group the i-th most common public value.
  Field-level encodings fall to this: identical values give identical filters.
- **pattern mining** (after Christen et al., "Pattern-mining based
  cryptanalysis of Bloom filters for privacy-preserving record linkage",
  PAKDD 2018): bit positions that a q-gram sets are set together in every
  record holding that q-gram, so their columns are (near-)identical. Cluster
  columns by Jaccard similarity, match each cluster's support to the q-gram
  whose public frequency is closest, then re-identify a record when exactly
  one public value has exactly the identified q-grams the record shows.
- **q-gram alignment** (`qgram_alignment`; after Christen, Ranbaduge,
  Vatsalan and Schnell, "Precise and fast cryptanalysis for Bloom filter
  based privacy-preserving record linkage", IEEE TKDE 2018): a q-gram sets
  the same positions wherever it occurs (a value of m q-grams gives each of
  them bits_per_token(m) of its hash positions, the schema's public
  strategy), so the filters of two values share about as many bits as the
  hash positions of their common q-grams, plus chance. Seeds: the largest
  filter groups are assigned public values jointly (size prior plus the
  pairwise overlaps of their filters; one overlap says little on a dense
  256-bit segment, a dozen together do), and the groups that assignment pins
  down are kept. A group is re-identified when its overlaps with the seeds'
  filters one candidate value explains far better than any other (frequency
  prior included). From them the attack
  extends to every group, round after round, each re-identified value a new
  seed. Groups of identical (or near-identical) encodings stand for one
  value; record-level CLKs, nearly all distinct, give it nothing to start
  from.

A record counts as *re-identified* for a field when the attack's guess for it
equals its true value; a distinct value counts when at least one record
holding it was re-identified. Records with no value for the field are left out.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from blindmatch.client.privacy.frequencies import FrequencyList

Tokenize = Callable[[str], Sequence[str]]

# Near-identical encodings are one value to the frequency attack.
CLUSTER_DICE = 0.9
# Q-grams and column clusters rarer than this share of records are not aligned.
MIN_SUPPORT = 0.01
# A cluster and a q-gram are matched only when their counts are this close.
SUPPORT_TOLERANCE = 0.1
# Seed positions tried per q-gram, and the fewest positions that make a q-gram's pattern.
SEEDS = 8
MIN_POSITIONS = 4
# Candidate values considered per field when re-identifying by q-grams.
CANDIDATES = 5000


@dataclass(frozen=True)
class Target:
    """One field as the attacker aims at it, and the truth used to score it."""

    field: str
    truth: Sequence[str]  # normalised value per record, "" when missing
    public: FrequencyList
    tokenize: Tokenize
    candidates: int = CANDIDATES  # public values tried when re-identifying by q-grams
    # Hash positions each q-gram of an m-q-gram value sets (the schema's strategy; not secret).
    bits_per_token: Callable[[int], Sequence[int]] | None = None


@dataclass
class AttackResult:
    attack: str
    encoding: str
    field: str
    public_list: str
    records: int
    records_reidentified: int
    values: int
    values_reidentified: int
    # Graph matching claims identities (some wrongly): how many it claimed; None for the rest.
    claims: int | None = None

    @property
    def precision(self) -> float | None:
        """Right claims among claims (graph matching only)."""
        if self.claims is None:
            return None
        return self.records_reidentified / self.claims if self.claims else 1.0

    @property
    def record_share(self) -> float:
        return self.records_reidentified / self.records if self.records else 0.0

    @property
    def value_share(self) -> float:
        return self.values_reidentified / self.values if self.values else 0.0


def score(
    attack: str, encoding: str, target: Target, guesses: Sequence[str | None]
) -> AttackResult:
    present = [i for i, v in enumerate(target.truth) if v]
    right = [i for i in present if guesses[i] == target.truth[i]]
    values = {target.truth[i] for i in present}
    return AttackResult(
        attack=attack,
        encoding=encoding,
        field=target.field,
        public_list=target.public.source,
        records=len(present),
        records_reidentified=len(right),
        values=len(values),
        values_reidentified=len({target.truth[i] for i in right}),
    )


# -- frequency alignment -------------------------------------------------------------


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = np.arange(n)

    def find(self, i: int) -> int:
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:
            self.parent[i], i = root, self.parent[i]
        return int(root)

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def labels(self) -> npt.NDArray[np.intp]:
        return np.array([self.find(i) for i in range(len(self.parent))])


def cluster_encodings(
    encodings: npt.NDArray[np.uint8], similarity: float = CLUSTER_DICE
) -> npt.NDArray[np.intp]:
    """A cluster label per row: identical rows share one, and so do rows with Dice >= similarity."""
    from blindmatch.matcher.core.compare import Chunk, compare_chunk

    unique, inverse = np.unique(encodings, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    uf = _UnionFind(len(unique))
    if len(unique) > 1 and similarity < 1.0:
        chunk = Chunk(0, 0, len(unique), 1, 0, len(unique))
        pairs = compare_chunk(chunk, [unique, unique], similarity)
        for a, b in zip(pairs.rec0.tolist(), pairs.rec1.tolist(), strict=True):
            if a != b:
                uf.union(a, b)
    return uf.labels()[inverse]


def clustering_threshold(popcounts: npt.NDArray[np.int64], length: int, flip: float = 0.0) -> float:
    """The Dice threshold at which an attacker who knows the flip rate groups equal values.

    Kerckhoffs: the hardening settings are not secret. Two noisy copies of a
    filter with w of L bits set keep w(1-f)^2 + (L-w)f^2 bits in common, so
    their expected Dice is that over w(1-f) + (L-w)f; the attacker clusters
    at 90% of it (and never above CLUSTER_DICE).
    """
    w = float(np.median(popcounts)) if len(popcounts) else 0.0
    if w == 0 or flip == 0:
        return CLUSTER_DICE
    common = w * (1 - flip) ** 2 + (length - w) * flip**2
    size = w * (1 - flip) + (length - w) * flip
    return min(CLUSTER_DICE, 0.9 * common / size)


def frequency_alignment(
    labels: npt.NDArray[np.intp],
    popcounts: npt.NDArray[np.int64],
    target: Target,
    encoding: str,
) -> AttackResult:
    """Give the i-th largest cluster the i-th most common public value.

    Clusters of (nearly) empty encodings are skipped: an attacker sees that
    they stand for a missing value.
    """
    nonempty = popcounts > 0.25 * max(float(np.median(popcounts)), 1.0)
    ids, sizes = np.unique(labels[nonempty], return_counts=True)
    order = np.lexsort((ids, -sizes))  # largest first, ties by label
    assigned = {
        int(ids[k]): target.public.values[r]
        for r, k in enumerate(order[: len(target.public.values)])
    }
    guesses = [
        assigned.get(int(lab)) if ok else None for lab, ok in zip(labels, nonempty, strict=True)
    ]
    return score("frequency alignment", encoding, target, guesses)


# -- pattern mining ------------------------------------------------------------------


def _token_shares(target: Target) -> dict[str, float]:
    shares: dict[str, float] = defaultdict(float)
    for value, share in target.public.shares().items():
        for token in set(target.tokenize(value)):
            shares[token] += share
    return shares


def token_positions(
    bits: npt.NDArray[np.bool_],
    expected: Sequence[float],
    tolerance: float = SUPPORT_TOLERANCE,
    seeds: int = SEEDS,
) -> dict[int, npt.NDArray[np.intp]]:
    """For q-grams expected in `expected[i]` records, the bit positions that encode them.

    Every position a q-gram sets is set in every record holding it. Most
    frequent q-gram first: from a seed position set often enough, keep adding
    the unclaimed position that keeps the most records having *all* chosen
    positions set, while at least the expected count remains. The set is the
    q-gram's when that count then matches its expected count.
    """
    columns = np.packbits(bits.T, axis=1)  # one packed row of records per bit position
    x = bits.astype(np.float32)
    both = x.T @ x  # records in which two positions are both set
    support = np.diag(both).copy()
    free = np.ones(bits.shape[1], dtype=bool)
    found: dict[int, npt.NDArray[np.intp]] = {}
    low, high = 1 - tolerance, 1 + tolerance
    for i in sorted(range(len(expected)), key=lambda i: -expected[i]):
        e = expected[i]
        idx = np.flatnonzero(free & (support >= low * e))
        if len(idx) < MIN_POSITIONS:
            continue
        # Seeds: pairs of positions set together in about e records, far more than chance.
        pair = np.triu(both[np.ix_(idx, idx)], k=1)
        chance = np.outer(support[idx], support[idx]) / len(bits)
        a_idx, b_idx = np.nonzero((pair >= low * e) & (pair - chance >= 0.5 * e))
        order = np.argsort(np.abs(pair[a_idx, b_idx] - e), kind="stable")[:seeds]
        for a, b in zip(idx[a_idx[order]].tolist(), idx[b_idx[order]].tolist(), strict=True):
            group, together = [a, b], columns[a] & columns[b]
            while True:
                keep = np.bitwise_count(columns[idx] & together).sum(axis=1, dtype=np.int64)
                keep[np.isin(idx, group)] = -1
                best = int(np.argmax(keep))
                if keep[best] < low * e:
                    break
                group.append(int(idx[best]))
                together = together & columns[idx[best]]
            count = int(np.bitwise_count(together).sum())
            if len(group) >= MIN_POSITIONS and low * e <= count <= high * e:
                found[i] = np.array(group)
                free[group] = False
                break
    return found


def pattern_mining(
    bits: npt.NDArray[np.bool_], targets: Sequence[Target], encoding: str
) -> list[AttackResult]:
    """Q-gram <-> bit-position alignment, then re-identification; one result per target."""
    n = len(bits)
    # What the attacker expects: each field's q-gram shares times its filled records.
    tokens: list[tuple[int, str, float]] = []
    for t_index, target in enumerate(targets):
        filled = sum(1 for v in target.truth if v)
        for token, share in _token_shares(target).items():
            expected = share * filled
            if expected >= MIN_SUPPORT * n:
                tokens.append((t_index, token, expected))
    positions = token_positions(bits, [e for _, _, e in tokens])
    found: dict[int, list[tuple[str, npt.NDArray[np.bool_]]]] = defaultdict(list)
    for k, group in positions.items():
        t_index, token, _ = tokens[k]
        # Present when (nearly) all its positions are set; noise may clear a few.
        found[t_index].append((token, bits[:, group].mean(axis=1) >= 0.8))
    results = []
    for t_index, target in enumerate(targets):
        identified = found.get(t_index, [])
        guesses: list[str | None] = [None] * n
        if identified:
            shown = np.stack([ind for _, ind in identified], axis=1)
            by_pattern: dict[bytes, list[str]] = defaultdict(list)
            for value in target.public.values[: target.candidates]:
                grams = set(target.tokenize(value))
                key = np.packbits([tok in grams for tok, _ in identified]).tobytes()
                by_pattern[key].append(value)
            keys = np.packbits(shown, axis=1)
            for i in range(n):
                candidates = by_pattern.get(keys[i].tobytes(), [])
                if len(candidates) == 1:
                    guesses[i] = candidates[0]
        results.append(score("pattern mining", encoding, target, guesses))
    return results


# -- q-gram alignment ----------------------------------------------------------------

# Public values tried per field (most common first), and the seeds tried to start from.
QGRAM_CANDIDATES = 3000
SEED_GROUPS = 16  # the largest filter groups, each one of ...
SEED_VALUES = 12  # ... the public values its size makes most plausible, assigned jointly
SEED_SWEEPS = 10  # coordinate-ascent sweeps per start
# A seed is kept when its value beats every other option for its group, the rest of the joint
# assignment held fixed, by this many nats.
SEED_MARGIN = 3.0
# A group is re-identified when its best value beats the runner-up by this many nats, and the
# seeds' filters support it by at least EVIDENCE nats over "shares nothing with them".
MARGIN, EVIDENCE = 4.0, 10.0
ROUNDS = 40
BLOCK = 2048  # groups scored at a time (memory)


class _QgramAligner:
    """Groups of filters, candidate values and the bits their q-grams make them share."""

    def __init__(
        self,
        rep: npt.NDArray[np.bool_],
        counts: npt.NDArray[np.int64],
        values: Sequence[str],
        expected: npt.NDArray[np.float64],
        target: Target,
    ) -> None:
        self.rep = rep.astype(np.float32)
        self.pop = rep.sum(axis=1).astype(np.float64)
        self.length = rep.shape[1]
        self.values = values
        # Poisson log-likelihood of each group's size under each value's public share.
        self.prior = (counts[:, None] * np.log(expected[None, :]) - expected[None, :]).astype(
            np.float32
        )
        gram_ids: dict[str, int] = {}
        self.grams: list[tuple[npt.NDArray[np.intp], npt.NDArray[np.float32]]] = []
        for value in values:
            tokens = list(target.tokenize(value))
            ks = tuple(target.bits_per_token(len(tokens))) if target.bits_per_token else ()
            per: dict[str, int] = {}
            for i, token in enumerate(tokens):
                k = int(ks[i]) if i < len(ks) else 1
                per[token] = max(per.get(token, 0), k)  # a repeated q-gram sets its longest prefix
            ids = [gram_ids.setdefault(t, len(gram_ids)) for t in per]
            self.grams.append(
                (np.array(ids, dtype=np.intp), np.array(list(per.values()), dtype=np.float32))
            )
        self.k = np.zeros((len(values), len(gram_ids)), dtype=np.float32)
        for c, (ids_c, ks_c) in enumerate(self.grams):
            self.k[c, ids_c] = ks_c
        self.holders = [np.flatnonzero(self.k[:, g]) for g in range(len(gram_ids))]
        self._shared: dict[int, npt.NDArray[np.float32]] = {}

    def shared(self, c: int) -> npt.NDArray[np.float32]:
        """Bits value c's filter shares with each value's: min(k) over their common q-grams."""
        if c not in self._shared:
            out = np.zeros(len(self.values), dtype=np.float32)
            ids, ks = self.grams[c]
            for g, k in zip(ids.tolist(), ks.tolist(), strict=True):
                h = self.holders[g]
                out[h] += np.minimum(self.k[h, g], k)
            self._shared[c] = out
        return self._shared[c]

    def structure(
        self, groups: npt.NDArray[np.intp], cands: npt.NDArray[np.intp], seeds: dict[int, int]
    ) -> npt.NDArray[np.float32]:
        """Log-likelihood gain of "group is value" over "shares nothing with the seeds".

        The overlap of a group's filter with a seed's, less chance, is modelled
        as beta * (bits their values' common q-grams share) plus Gaussian noise
        of the chance overlap's variance.
        """
        seed_groups = np.array(list(seeds))
        sh = np.stack([self.shared(seeds[g])[cands] for g in seed_groups.tolist()], axis=1)
        p, ps, length = self.pop[groups], self.pop[seed_groups], self.length
        overlap = self.rep[groups] @ self.rep[seed_groups].T - np.outer(p, ps) / length
        typical = float(np.median(ps))
        beta = 1 - (p + typical) / length
        var = p * typical / length * (1 - typical / length) + 1.0
        fit = (beta / var)[:, None] * (overlap @ sh.T)
        return (fit - (beta**2 / (2 * var))[:, None] * (sh**2).sum(axis=1)[None, :]).astype(
            np.float32
        )

    def pairs(
        self, top: npt.NDArray[np.intp], options: npt.NDArray[np.intp]
    ) -> npt.NDArray[np.float64]:
        """Log-likelihood gain, per pair of top groups and pair of their options, of the pair.

        pair[i, j, a, b]: group top[i] is options[i, a] and top[j] is options[j, b], against
        "their values share nothing", from the overlap of the two filters (`structure`'s model,
        each filter in turn the seed, averaged so the table is symmetric).
        """
        t, m = options.shape
        rep, p, length = self.rep[top], self.pop[top], self.length
        overlap = (rep @ rep.T).astype(np.float64) - np.outer(p, p) / length
        sh = np.zeros((t, t, m, m))
        for i in range(t):
            rows = np.stack([self.shared(int(a)) for a in options[i]])
            for j in range(t):
                sh[i, j] = rows[:, options[j]]
        beta = 1 - (p[:, None] + p[None, :]) / length
        var = np.outer(p, p) / length * (1 - p[None, :] / length) + 1.0
        gain = (beta / var * overlap)[:, :, None, None] * sh - (beta**2 / (2 * var))[
            :, :, None, None
        ] * sh**2
        gain = 0.5 * (gain + gain.transpose(1, 0, 3, 2))
        gain[np.arange(t), np.arange(t)] = 0.0
        return gain

    def joint_seeds(self, top: npt.NDArray[np.intp], cands: npt.NDArray[np.intp]) -> dict[int, int]:
        """Assign the largest groups values jointly; keep those the assignment pins down.

        One 256-bit filter at a third of its bits set says little about another's value, but
        the pairwise overlaps of a dozen large groups, taken together with their sizes, do:
        maximise prior + sum of pairwise gains over assignments of distinct values (coordinate
        ascent from every single-group hypothesis), then keep each group whose value, the
        others held fixed, beats all its other options (distinct or not) by SEED_MARGIN.
        """
        t = len(top)
        if t < 2:
            return {}
        m = min(SEED_VALUES, len(cands))
        prior = self.prior[np.ix_(top, cands)].astype(np.float64)
        pick = np.argsort(-prior, axis=1, kind="stable")[:, :m]
        options = cands[pick]
        prior = np.take_along_axis(prior, pick, axis=1)
        prior -= prior.max(axis=1, keepdims=True)
        gain = self.pairs(top, options)
        same = options[:, None, :, None] == options[None, :, None, :]  # [i, j, a, b]

        def local(
            i: int, assign: npt.NDArray[np.intp], distinct: bool = True
        ) -> npt.NDArray[np.float64]:
            on = np.flatnonzero(assign >= 0)
            on = on[on != i]
            out = prior[i] + gain[i, on, :, assign[on]].sum(axis=0)
            if distinct and len(on):
                out[same[i, on, :, assign[on]].any(axis=0)] = -np.inf
            return out

        best, best_total = np.zeros(t, dtype=np.intp), -np.inf
        for i0 in range(t):
            for a0 in range(m):
                assign = np.full(t, -1, dtype=np.intp)
                assign[i0] = a0
                for i in range(t):
                    if i != i0:
                        assign[i] = int(np.argmax(local(i, assign)))
                for _ in range(SEED_SWEEPS):
                    changed = False
                    for i in range(t):
                        a = int(np.argmax(local(i, assign)))
                        changed |= a != assign[i]
                        assign[i] = a
                    if not changed:
                        break
                idx = np.arange(t)
                total = (
                    prior[idx, assign].sum()
                    + 0.5 * gain[idx[:, None], idx[None, :], assign[:, None], assign[None, :]].sum()
                )
                if total > best_total:
                    best, best_total = assign.copy(), total
        seeds: dict[int, int] = {}
        for i in range(t):
            s = local(i, best, distinct=False)
            rival = np.delete(s, best[i]).max() if m > 1 else -np.inf
            if s[best[i]] - rival >= SEED_MARGIN:
                seeds[int(top[i])] = int(options[i, best[i]])
        return seeds

    def extend(
        self,
        seeds: dict[int, int],
        groups: npt.NDArray[np.intp],
        cands: npt.NDArray[np.intp],
        rounds: int = ROUNDS,
    ) -> dict[int, int]:
        """Re-identify groups the seeds explain, add them as seeds, repeat; group -> value."""
        seeds = dict(seeds)
        taken = set(seeds.values())
        for _ in range(rounds):
            free = np.array([g for g in groups.tolist() if g not in seeds], dtype=np.intp)
            if not len(free) or not seeds or len(cands) < 2:
                break
            found: list[tuple[float, int, int]] = []
            blocked = np.isin(cands, list(taken))
            for start in range(0, len(free), BLOCK):
                block = free[start : start + BLOCK]
                struct = self.structure(block, cands, seeds)
                score = struct + self.prior[np.ix_(block, cands)]
                score[:, blocked] = -np.inf
                top2 = np.argpartition(-score, 1, axis=1)[:, :2]
                s2 = np.take_along_axis(score, top2, axis=1)
                swap = s2[:, 1] > s2[:, 0]
                top2[swap] = top2[swap][:, ::-1]
                s2[swap] = s2[swap][:, ::-1]
                best, margin = top2[:, 0], s2[:, 0] - s2[:, 1]
                evidence = struct[np.arange(len(block)), best]
                for i in np.flatnonzero((margin >= MARGIN) & (evidence >= EVIDENCE)).tolist():
                    found.append((float(margin[i]), int(block[i]), int(cands[best[i]])))
            added = 0
            for _margin, group, value in sorted(found, reverse=True):
                if value not in taken:  # one value, one filter: identical values encode alike
                    taken.add(value)
                    seeds[group] = value
                    added += 1
            if not added:
                break
        return seeds


def _groups(
    bits: npt.NDArray[np.bool_], labels: npt.NDArray[np.intp]
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """Group index per row, group sizes, and each group's majority-vote filter."""
    _ids, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    by_group = np.argsort(inverse, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    sums = np.add.reduceat(bits[by_group].astype(np.int32), starts, axis=0)
    return inverse, counts.astype(np.int64), 2 * sums >= counts[:, None]


def qgram_alignment(
    bits: npt.NDArray[np.bool_],
    labels: npt.NDArray[np.intp],
    target: Target,
    encoding: str,
    candidates: int = QGRAM_CANDIDATES,
) -> AttackResult:
    """Frequency-seeded q-gram alignment (Christen et al. 2018), scored on one field.

    `labels` groups identical or near-identical encodings (`cluster_encodings`);
    (nearly) empty encodings are skipped as missing values.
    """
    n = len(bits)
    guesses: list[str | None] = [None] * n
    pops = bits.sum(axis=1)
    nonempty = pops > 0.25 * max(float(np.median(pops)), 1.0)
    rows = np.flatnonzero(nonempty)
    if not len(rows):
        return score("q-gram alignment", encoding, target, guesses)
    if np.unique(labels[rows], return_counts=True)[1].max() < 3:
        return score("q-gram alignment", encoding, target, guesses)  # no shared value to start from
    inverse, counts, rep = _groups(bits[rows], labels[rows])
    order = np.argsort(-counts, kind="stable")
    values = target.public.values[:candidates]
    shares = target.public.shares()
    expected = np.array([shares[v] for v in values]) * len(rows)
    aligner = _QgramAligner(rep, counts, values, expected, target)
    # Seeds: the largest groups, assigned values jointly (sizes and pairwise overlaps).
    top = np.array([g for g in order[:SEED_GROUPS].tolist() if counts[g] >= 3], dtype=np.intp)
    seeds = aligner.joint_seeds(top, np.arange(len(values)))
    if seeds:
        seeds = aligner.extend(seeds, np.arange(len(counts)), np.arange(len(values)))
    for row, group in zip(rows.tolist(), inverse.tolist(), strict=True):
        if group in seeds:
            guesses[row] = values[seeds[group]]
    return score("q-gram alignment", encoding, target, guesses)


def unpack(encodings: npt.NDArray[np.uint8]) -> npt.NDArray[np.bool_]:
    return np.unpackbits(encodings, axis=1).astype(bool)
