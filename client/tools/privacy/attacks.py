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
- **q-gram alignment**: in `qgram.py`.

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

from blindmatch.client.tools.privacy.frequencies import FrequencyList

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
    # The member's records the attack stood for, where not the whole export checked (graph
    # matching's sample, known pairs included); 0: the export's (`CheckReport.records`).
    sample: int = 0

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
    from blindmatch.client.tools.privacy.dice import similar_pairs

    unique, inverse = np.unique(encodings, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    uf = _UnionFind(len(unique))
    if len(unique) > 1 and similarity < 1.0:
        rows_a, rows_b = similar_pairs(unique, similarity)
        for a, b in zip(rows_a.tolist(), rows_b.tolist(), strict=True):
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
        candidates = columns[idx]  # gathered once per q-gram, not once per position added
        both_set = np.empty_like(candidates)
        for a, b in zip(idx[a_idx[order]].tolist(), idx[b_idx[order]].tolist(), strict=True):
            group, together = [a, b], columns[a] & columns[b]
            taken = np.isin(idx, group)
            while True:
                np.bitwise_and(candidates, together, out=both_set)
                keep = np.bitwise_count(both_set, out=both_set).sum(axis=1, dtype=np.int64)
                keep[taken] = -1
                best = int(np.argmax(keep))
                if keep[best] < low * e:
                    break
                group.append(int(idx[best]))
                taken[best] = True
                together = together & candidates[best]
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


def unpack(encodings: npt.NDArray[np.uint8]) -> npt.NDArray[np.bool_]:
    return np.unpackbits(encodings, axis=1).astype(bool)
