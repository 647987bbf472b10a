"""A batch run's `score` stage: the rule's S of each candidate pair (fallback._rule_scores),
in numpy (gathered rows, as before) beside the native kernel (`kernel.dice_each`), in one run.

    .venv/bin/python benchmarks/rulescore.py [--pair 20000] [--datasets 3] [--pairs 3000000]
        [--repeat 3] [--workers 2] [--pair-scores]

On realistic encodings as uploaded (`benchmarks/realclks.py`: real clkhash output of
`messy.py` people under the default schema, a record-level CLK followed by its fallback CLK),
the cached `--pair` x `--pair` (encoded on first use): A's and B's rows cut into `--datasets`
datasets. Candidates are found as a run finds them, by the kernel on the first CLKs of every
pair of datasets (`dice_candidates`), at the rule's candidate floor; a near-duplicate run
(every record a few near copies) has millions of them, so where the floor gives fewer than
`--pairs` the threshold is lowered step by step until it gives that many (what is scored
costs the same whatever its score). Pairs where either record lacks a date of birth are left
out, as `rescored` leaves them out.

`_rule_scores` of those pairs, best of `--repeat`, by each path: "numpy" (the code before),
then each native path this CPU runs (`kernel.paths()`, "avx512" where it has VPOPCNTQ):
CPU ns a pair (one thread), the ratio to numpy, and whether the scores are the numpy path's
bit for bit (float64 compared as their 64-bit words). Also the rule's own arithmetic
(`Rule.score` on arrays as long), the part left in numpy; and with `--workers` N > 1 the
default path on N threads (`rescored`'s workers) against one, in wall time. No timing is
asserted anywhere; the figures go to docs/performance.md by hand.

`--pair-scores`: also `fallback.pair_scores` (the scores of the solver's completion and of a
run's links, matcher/core/solve.py `complete`, `links_from_groups`) of the same pairs (500,000
of them at most, evenly spread), the lacking ones too (their fallback CLKs' Dice), by each
path: CPU ns a pair in one call of them all (as `links_from_groups` calls it), CPU us a call
of 2 pairs (as `complete` calls it, a call for each pair it tries across two groups), the
ratio to numpy, and whether the scores are the numpy path's bit for bit. How many pairs a
run gives it: benchmarks/completion.py.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.realclks import cache_dir, layout, realistic_pair
from blindmatch.matcher.core import kernel
from blindmatch.matcher.core.compare import Candidates
from blindmatch.matcher.core.fallback import Split, _rule_scores, pair_scores, with_fields
from blindmatch.matcher.domain import Rule

RULE = Rule(0.25, 0.03, 0.01)  # schemas/person-uk.json
THRESHOLD = 0.8


def datasets(pair: int, count: int) -> list[npt.NDArray[np.uint8]]:
    """The cached pair's whole CLKs (A's rows, then B's), cut into `count` datasets."""
    folder = cache_dir(pair, pair, 0, 0.1)
    if not (folder / "a.npy").exists():
        realistic_pair(pair, pair, whole=True, quiet=True)
    rows = np.concatenate([np.load(folder / f"{x}.npy", mmap_mode="r") for x in "ab"])
    return [np.ascontiguousarray(part) for part in np.array_split(rows, count)]


def candidates(split: Split, want: int) -> tuple[Candidates, float]:
    """At least `want` pairs of the first CLKs across datasets (or all at the lowest
    threshold tried), `want` of them kept at random (in the kernel's order), and the
    threshold that gave them. Each threshold only counts a pair of datasets' candidates
    (one pair's output held at a time); at the one kept, each pair of datasets is found again
    and only its kept pairs taken (`kept`): at 0.64 the 20,000 x 20,000 pair has 143 million,
    whose arrays held at once, and a permutation of them, took the run to 4.6 GB (leftovers)."""
    t = RULE.candidate_floor(THRESHOLD)
    duos = [(a, b) for a in range(len(split.first)) for b in range(a + 1, len(split.first))]
    while True:
        counts = [len(kernel.dice_candidates(split.first[a], split.first[b], t)[0])
                  for a, b in duos]  # fmt: skip
        if sum(counts) >= want or t <= 0.3:
            break
        t = round(t - 0.05, 2)
    picks = kept(counts, want, np.random.default_rng(0))
    parts = []
    for (a, b), count, pick in zip(duos, counts, picks, strict=True):
        sims, ra, rb = kernel.dice_candidates(split.first[a], split.first[b], t)
        assert len(sims) == count  # (the kernel's order the same each time)
        d = np.full(len(pick), a, dtype=np.uint32)
        parts.append(Candidates(sims[pick], d, np.full_like(d, b), ra[pick], rb[pick]))
        del sims, ra, rb

    def cat(name: str) -> npt.NDArray[Any]:
        return np.concatenate([getattr(p, name) for p in parts])

    return Candidates(cat("sims"), cat("dset0"), cat("dset1"), cat("rec0"), cat("rec1")), t


BLOCK = 1 << 20  # positions drawn from at once (`kept`: an index of this many at most)


def kept(counts: list[int], want: int, rng: np.random.Generator,
         block: int = BLOCK) -> list[npt.NDArray[np.intp]]:  # fmt: skip
    """`want` positions of all `counts` together chosen uniformly without replacement (all
    where fewer), as each count's own ascending positions: how many fall in each `block` of
    positions drawn at once (multivariate hypergeometric), then which within each block."""
    blocks = [(i, lo, min(block, n - lo)) for i, n in enumerate(counts)
              for lo in range(0, n, block)]  # fmt: skip
    sizes = np.array([size for _, _, size in blocks], dtype=np.int64)
    if sizes.sum() <= want:
        taken = sizes
    else:
        taken = rng.multivariate_hypergeometric(sizes, want, method="marginals")
    out: list[list[npt.NDArray[np.intp]]] = [[] for _ in counts]
    for (i, lo, size), k in zip(blocks, taken.tolist(), strict=True):
        out[i].append(lo + np.sort(rng.choice(size, k, replace=False)).astype(np.intp))
    return [np.concatenate(o) if o else np.zeros(0, np.intp) for o in out]


def best(
    repeat: int,
    work: Callable[[], npt.NDArray[np.float64]],
    clock: Callable[[], float] = time.process_time,
) -> tuple[float, npt.NDArray[np.float64]]:
    """The best seconds of `repeat` runs of `work` by `clock` (CPU: on a shared machine the
    steadier figure for one thread), and its last answer."""
    took, out = float("inf"), None
    for _ in range(repeat):
        started = clock()
        out = work()
        took = min(took, clock() - started)
    assert out is not None
    return took, out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pair", type=int, default=20_000, metavar="N",
                        help="the cached realistic N x N pair (encoded on first use)")  # fmt: skip
    parser.add_argument("--datasets", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=3_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2,
                        help="also the default path on this many threads, wall time")  # fmt: skip
    parser.add_argument("--pair-scores", action="store_true",
                        help="also fallback.pair_scores (completion, links)")  # fmt: skip
    args = parser.parse_args()
    data = datasets(args.pair, args.datasets)
    split = Split.of(data, layout()[1])
    pairs, t = candidates(split, args.pairs)
    sel = with_fields(pairs, split)
    sizes = ", ".join(f"{len(d):,}" for d in data)
    print(f"{args.datasets} datasets of {sizes} realistic rows; {len(pairs):,} candidate pairs "
          f"(first CLKs' Dice >= {t:.2f}), {len(sel):,} where both have the fields, scored "
          f"by S (best of {args.repeat}):")  # fmt: skip
    base, reference = best(args.repeat, lambda: _rule_scores(pairs, split, sel, RULE, "numpy"))
    n = max(len(sel), 1)
    print(f"  {'numpy':<8} {base:8.3f} CPU s {base / n * 1e9:9.1f} ns a pair")
    for path in [p for p in kernel.paths() if p != "numpy"]:
        took, scores = best(args.repeat, functools.partial(_rule_scores, pairs, split, sel,
                                                           RULE, path))  # fmt: skip
        same = np.array_equal(scores.view(np.uint64), reference.view(np.uint64))
        print(f"  {path:<8} {took:8.3f} CPU s {took / n * 1e9:9.1f} ns a pair  ratio (numpy / "
              f"{path}) {base / max(took, 1e-9):7.1f}  scores identical: {same}")  # fmt: skip
    if args.workers > 1:
        run = functools.partial(_rule_scores, pairs, split, sel, RULE, workers=args.workers)
        wall1, _ = best(args.repeat, functools.partial(_rule_scores, pairs, split, sel, RULE),
                        time.perf_counter)  # fmt: skip
        wall, scores = best(args.repeat, run, time.perf_counter)
        same = np.array_equal(scores.view(np.uint64), reference.view(np.uint64))
        print(f"  auto on {args.workers} threads: {wall:.3f} s wall against {wall1:.3f} s on one "
              f"({wall1 / max(wall, 1e-9):.2f}x)  scores identical: {same}")  # fmt: skip
    d1 = np.linspace(0.79, 1.0, len(sel))
    took, _ = best(args.repeat, lambda: RULE.score(d1, d1[::-1].copy()))
    print(
        f"  of which the rule's own arithmetic (Rule.score, numpy): {took / n * 1e9:.1f} ns a pair"
    )
    if args.pair_scores:
        by_pair_scores(split, pairs, args.repeat)
    return 0


SMALL_CALLS = 2000  # calls of 2 pairs each, as `complete` makes them
ONE_CALL = 500_000  # pairs in the one call at most (a run's links: some 8,000 at 20,000 people;
# numpy gathers every pair's rows at once, 3,000,000 pairs' took the run past 4 GB)


def by_pair_scores(split: Split, pairs: Candidates, repeat: int) -> None:
    """`pair_scores` of `pairs` in one call, and in calls of 2, by each path against numpy."""
    some = np.unique(np.linspace(0, len(pairs) - 1, min(len(pairs), ONE_CALL)).astype(np.intp))
    pairs = Candidates(pairs.sims[some], pairs.dset0[some], pairs.dset1[some],
                       pairs.rec0[some], pairs.rec1[some])  # fmt: skip
    p = (pairs.dset0, pairs.rec0, pairs.dset1, pairs.rec1)
    lacking = len(pairs) - len(with_fields(pairs, split))
    calls = min(SMALL_CALLS, len(pairs) // 2)
    small = [tuple(x[2 * k : 2 * k + 2] for x in p) for k in range(calls)]
    print(f"pair_scores of {len(pairs):,} of those pairs ({lacking:,} with a record lacking "
          f"the fields), in one call and in {calls:,} calls of 2 (best of {repeat}):")  # fmt: skip

    def one(path: str) -> npt.NDArray[np.float64]:
        return pair_scores(split, *p, rule=RULE, path=path)

    def each(path: str) -> npt.NDArray[np.float64]:
        return np.concatenate([pair_scores(split, *c, rule=RULE, path=path) for c in small])

    base, reference = best(repeat, functools.partial(one, "numpy"))
    base_small, reference_small = best(repeat, functools.partial(each, "numpy"))
    n, c = max(len(pairs), 1), max(calls, 1)
    print(f"  {'numpy':<8} {base / n * 1e9:9.1f} ns a pair {'':>23}{base_small / c * 1e6:7.1f} us "
          "a call of 2")  # fmt: skip
    for path in [p for p in kernel.paths() if p != "numpy"]:
        took, scores = best(repeat, functools.partial(one, path))
        took_small, scores_small = best(repeat, functools.partial(each, path))
        same = np.array_equal(scores.view(np.uint64), reference.view(np.uint64)) and (
            np.array_equal(scores_small.view(np.uint64), reference_small.view(np.uint64))
        )
        print(f"  {path:<8} {took / n * 1e9:9.1f} ns a pair (numpy / {path} "
              f"{base / max(took, 1e-9):5.1f}), {took_small / c * 1e6:7.1f} us a call of 2 "
              f"(numpy / {path} {base_small / max(took_small, 1e-9):5.1f})  "
              f"scores identical: {same}")  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
