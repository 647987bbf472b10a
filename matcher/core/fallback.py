"""Record-level CLKs with a fallback CLK: Dice that does not count a missing field against a match.

Used when every upload of a run carries a fallback CLK (schema
`blindmatch.fallback`, client/encoding/encode.py): each uploaded CLK is the usual
record-level CLK followed by a second record-level CLK of the same record
*without* some fields (by default the date of birth, which retail exports
often lack), hashed under keys of its own. The upload header tells the matcher
only the second CLK's length (`UploadHeader.fallback_bits`).

A record lacks the left-out fields exactly when its two CLKs encode the same
values, so their popcounts are (nearly) equal; otherwise the first CLK has the
left-out fields' bits too and is markedly fuller. The matcher reads that from
popcounts alone (`lacking`), then scores a pair by:

- Dice of the first CLKs when both records have the fields;
- Dice of the fallback CLKs when either lacks them: what the two records have
  in common, with the missing field counted neither for nor against.

With a gap rule (schema `blindmatch.rule`, `Rule`), a pair where both records have the
fields is scored by both CLKs instead: S = D1 + gap * (D1 - D2) - offset, where D1 and D2
are the Dice of its first and of its fallback CLKs; a sibling (same surname and postcode,
another given name and date) has a high D2 for its D1, a true pair with a typo or a move
a D1 its date of birth holds up. S is compared with the threshold as D1 is without a rule;
candidates are the first CLKs' pairs at or above `Rule.candidate_floor` (a pair under it
is not accepted whatever its S), so exhaustive and LSH runs keep the same pairs. Without a
rule (`NO_RULE`: gap and offset 0) S is D1 and everything is as before.

Which CLK a pair is scored by is `on_fallback`; batch runs (`pair_scores`, `rescored`) and real-time
queries against a standing index (`query_hits`, matcher/realtime/indexes.py) both
apply it. Candidates are the pairs at or above the threshold under that score: the
first CLKs' pairs (found as usual, exhaustively or by LSH), with pairs that involve
a lacking record rescored, plus the fallback CLKs' pairs between a lacking record
and any record of another member (every such pair, or in a run blocked by LSH those
that LSH planned on the fallback CLKs proposes: core.fallbackpass). Everything is a pure
function over arrays.

What the matcher learns beyond a plain record-level CLK: which records lack the
left-out fields (it could already guess from one CLK's popcount), and a second
record-level CLK per record, whose combinations of values are about as rare as
the first's (docs/privacy.md).
"""

from __future__ import annotations

from collections.abc import Callable, Container, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from blindmatch.matcher.core import fallbackpass
from blindmatch.matcher.core.compare import Candidates
from blindmatch.matcher.core.kernel import Clks, dice_each
from blindmatch.matcher.core.solve import by_datasets
from blindmatch.matcher.domain import NO_RULE, Rule
from blindmatch.matcher.errors import InvalidArgument

# A record lacks the left-out fields when its fallback CLK's popcount is at least this share
# of its first CLK's. Two hashings of the same values differ by collisions only (ratios
# 0.94-1.06 measured on the default schema); with the date of birth (35% of the insertions)
# the first CLK is markedly fuller (ratios 0.57-0.79). Left-out fields carrying under 25% of
# the insertions would blur the line (`blindmatch schema check` warns).
LACKING_RATIO = 0.88


# What each of a rule's numbers may be (as the schema's, client/encoding/schema.py).
RULE_RANGES = {"gap": (0.0, 4.0), "offset": (-0.5, 0.5), "reach": (0.0, 0.5)}


def checked_rule(gap: float, offset: float, reach: float, fallback_bits: int, field: str) -> Rule:
    """A rule from the wire (`field`: where it came from), or InvalidArgument naming it."""
    rule = Rule(float(gap), float(offset), float(reach))
    for key, (lo, hi) in RULE_RANGES.items():
        value = getattr(rule, key)
        if not lo <= value <= hi:  # (NaN fails too)
            raise InvalidArgument(f"{field}.{key}: a number from {lo:g} to {hi:g}, not {value!r}")
    if rule != NO_RULE and not fallback_bits:
        raise InvalidArgument(
            f"{field}: a rule over both CLKs needs a fallback CLK (fallback_bits)"
        )
    return rule


@dataclass(frozen=True)
class Split:
    """Each dataset's first and fallback CLKs, and which of its records lack the fields."""

    first: list[Clks]
    second: list[Clks]
    lacking: list[npt.NDArray[np.bool_]]

    @classmethod
    def of(cls, datasets: Sequence[Clks], fallback_bits: int) -> Split:
        cut = datasets[0].shape[1] - fallback_bits // 8 if datasets else 0
        first = [np.ascontiguousarray(d[:, :cut]) for d in datasets]
        second = [np.ascontiguousarray(d[:, cut:]) for d in datasets]
        return cls(first, second, [lacking(a, b) for a, b in zip(first, second, strict=True)])


# CLKs one row per record, as bytes (a run's uploads) or 64-bit words (a standing index).
Rows = Clks | npt.NDArray[np.uint64]


def _popcounts(x: Rows) -> npt.NDArray[np.int64]:
    return np.bitwise_count(x).sum(axis=1, dtype=np.int64)


def lacking(first: Rows, second: Rows) -> npt.NDArray[np.bool_]:
    """Records whose fallback CLK is (nearly) as full as their first: they lack the fields."""
    return lacking_from_popcounts(_popcounts(first), _popcounts(second))


def lacking_from_popcounts(
    first: npt.NDArray[np.int64], second: npt.NDArray[np.int64]
) -> npt.NDArray[np.bool_]:
    """`lacking` from the two CLKs' popcounts alone (what the two-server combiner holds)."""
    return (first > 0) & (second >= LACKING_RATIO * first)


def on_fallback(
    lacking_a: npt.NDArray[np.bool_] | bool, lacking_b: npt.NDArray[np.bool_] | bool
) -> npt.NDArray[np.bool_]:
    """The rule: a pair is scored by Dice of its fallback CLKs when either record lacks the
    left-out fields, by Dice of its first CLKs when both have them (element-wise)."""
    return np.logical_or(lacking_a, lacking_b)


Hits = list[tuple[str, float]]


def query_hits(
    query_lacks: bool,
    search_first: Callable[[], Hits],
    search_second: Callable[[], Hits],
    lacking_refs: Container[str],
) -> Hits:
    """One query's (ref, score) hits in one standing index under the rule, best first.

    `search_first` / `search_second`: the index rows whose first / fallback CLK reaches the
    threshold with the query's first / fallback CLK. A hit counts only when the rule scores
    its pair by that CLK: first-CLK hits with a row that has the fields (none when the
    query lacks them, so that search is skipped), fallback hits otherwise.
    """
    found = []
    if not query_lacks:
        found = [(ref, score) for ref, score in search_first() if ref not in lacking_refs]
    found += [
        (ref, score)
        for ref, score in search_second()
        if on_fallback(query_lacks, ref in lacking_refs)
    ]
    found.sort(key=lambda hit: (-hit[1], hit[0]))
    return found


def pair_scores(
    split: Split,
    d0: npt.NDArray[np.uint32],
    r0: npt.NDArray[np.uint32],
    d1: npt.NDArray[np.uint32],
    r1: npt.NDArray[np.uint32],
    *,
    rule: Rule = NO_RULE,
    path: str = "auto",
) -> npt.NDArray[np.float64]:
    """The score of each pair: fallback Dice when either record lacks the fields, else Dice
    of the first CLKs (with a rule, its score S over both). By the native kernel's
    `dice_each`, no rows gathered (`path` "numpy": gathered rows in numpy, as before 2026-12-07;
    the same floats, tests/test_rulescore.py, benchmarks/rulescore.py --pair-scores)."""
    out = np.empty(len(d0), dtype=np.float64)
    for a, b, sel in by_datasets(d0, d1):
        ra, rb = r0[sel], r1[sel]
        either = on_fallback(split.lacking[a][ra], split.lacking[b][rb])
        scores = dice_each(split.first[a], split.first[b], ra, rb, path=path)
        if rule.active:
            second = dice_each(split.second[a], split.second[b], ra, rb, path=path)
            scores = rule.score(scores, second)
            scores[either] = second[either]
        elif either.any():
            fa, fb = ra[either], rb[either]
            scores[either] = dice_each(split.second[a], split.second[b], fa, fb, path=path)
        out[sel] = scores
    return out


PairProgress = fallbackpass.PairProgress  # progress(work done, of this much)


def _fallback_pairs(
    split: Split, threshold: float, workers: int, progress: PairProgress | None = None
) -> list[Candidates]:
    """Pairs at or above the threshold on fallback CLKs with a lacking record on either
    side, every pair compared (core.fallbackpass; `progress` told step by step)."""
    return fallbackpass.find(split.second, split.lacking, threshold, workers,
                             progress=progress).parts  # fmt: skip


def with_fields(pairs: Candidates, split: Split) -> npt.NDArray[np.intp]:
    """The positions of the pairs whose two records both have the left-out fields (the pairs
    `rescored` keeps on their first CLKs, by S under a rule)."""
    sides = []
    for dset, rec in ((pairs.dset0, pairs.rec0), (pairs.dset1, pairs.rec1)):
        lacks = np.zeros(len(pairs), dtype=bool)
        for a, lack in enumerate(split.lacking):
            sel = np.flatnonzero(dset == a)
            lacks[sel] = lack[rec[sel]]
        sides.append(lacks)
    return np.flatnonzero(~on_fallback(*sides))


def rescored(
    first_pairs: Candidates,
    split: Split,
    threshold: float,
    workers: int = 1,
    rule: Rule = NO_RULE,
    found: fallbackpass.FallbackPass | None = None,
) -> list[Candidates]:
    """All candidate pairs under the fallback score (see the module docstring), unordered:
    the first CLKs' pairs between records that both have the fields, and the fallback
    CLKs' pairs that involve a record lacking them. With a rule, `first_pairs` are those
    at or above `rule.candidate_floor(threshold)`, and the first kind is kept (and scored)
    by S >= threshold. `found`: the fallback CLKs' pairs already found (`fallbackpass.find`,
    e.g. by LSH, with its progress), instead of comparing every pair of them here."""
    keep = with_fields(first_pairs, split)
    sims = first_pairs.sims
    if rule.active:
        sims = np.zeros(len(first_pairs), dtype=np.float64)
        sims[keep] = _rule_scores(first_pairs, split, keep, rule, workers=workers)
        keep = keep[sims[keep] >= threshold]
    both_have = Candidates(
        sims[keep],
        first_pairs.dset0[keep],
        first_pairs.dset1[keep],
        first_pairs.rec0[keep],
        first_pairs.rec1[keep],
    )
    if found is None:
        return [both_have, *_fallback_pairs(split, threshold, workers)]
    return [both_have, *found.parts]


def _rule_scores(
    pairs: Candidates,
    split: Split,
    sel: npt.NDArray[np.intp],
    rule: Rule,
    path: str = "auto",
    workers: int = 1,
) -> npt.NDArray[np.float64]:
    """S of the pairs `sel` (both records have the fields), D1 and D2 recomputed exactly
    (as `pair_scores`), so that the kernel's and LSH's candidates score alike: by the native
    kernel's `dice_each` (`path` "numpy": gathered rows in numpy, as before; the same
    floats, benchmarks/rulescore.py), chunks on up to `workers` threads (the kernel runs
    without the GIL; each chunk writes its own pairs' scores)."""
    out = np.empty(len(sel), dtype=np.float64)
    d0, d1, r0, r1 = pairs.dset0[sel], pairs.dset1[sel], pairs.rec0[sel], pairs.rec1[sel]
    chunks = [
        (a, b, part[lo : lo + _SCORE_CHUNK])
        for a, b, part in by_datasets(d0, d1)
        for lo in range(0, len(part), _SCORE_CHUNK)
    ]

    def score(chunk: tuple[int, int, npt.NDArray[np.intp]]) -> None:
        a, b, p = chunk
        ra, rb = r0[p], r1[p]
        out[p] = rule.score(
            dice_each(split.first[a], split.first[b], ra, rb, path=path),
            dice_each(split.second[a], split.second[b], ra, rb, path=path),
        )

    if workers > 1 and len(chunks) > 1:
        with ThreadPoolExecutor(max_workers=min(workers, len(chunks))) as pool:
            list(pool.map(score, chunks))
    else:
        for chunk in chunks:
            score(chunk)
    return out


_SCORE_CHUNK = 1 << 18  # pairs scored at once: bounds the index copies (numpy: the gathered rows)


__all__ = [
    "LACKING_RATIO",
    "NO_RULE",
    "RULE_RANGES",
    "Rule",
    "Split",
    "checked_rule",
    "lacking",
    "lacking_from_popcounts",
    "on_fallback",
    "pair_scores",
    "query_hits",
    "rescored",
    "with_fields",
]
