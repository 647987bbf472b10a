"""The q-gram alignment attack on field-level encodings (`attacks.py` has the others).

After Christen, Ranbaduge, Vatsalan and Schnell, "Precise and fast cryptanalysis for Bloom filter
based privacy-preserving record linkage", IEEE TKDE 2018. A q-gram sets
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
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from blindmatch.client.tools.privacy.attacks import AttackResult, Target, score

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
