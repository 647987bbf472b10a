"""Recall and cost of the real-time LSH look-up against an exhaustive scan, in process.

Builds one standing-index segment of N CLKs, plans its LSH bands and sketch screen for the
threshold as the matcher does (matcher/core/rtplan.py, from the rows themselves), and asks
Q single-record queries. Every pair the exhaustive scan finds at Dice >= threshold
counts; recall is the share the LSH path also finds, with the same score. Costs are CPU
time (time.process_time) per query, the load average is printed.

`--clks realistic` (the default): real clkhash output of realistic people
(benchmarks/realclks.py: messy.py's people and corruptions, the shipped default schema,
cached on disk). The index is member A's N records; the queries are member B's records of
people A holds too (each corrupted in its own way), people no one holds (another seed's),
and *graded* copies of indexed records (a share of the set bits, uniform in 12-32%, moved
elsewhere, so that Dice spreads over about 0.75-0.9 and many pairs sit right at the
threshold, the hardest case).

`--clks synthetic`: benchmarks/synthclks.py's imitation of clkhash output (the figures
docs/performance.md kept before real encodings; a second column now): typo copies, graded
copies and unrelated people.

    .venv/bin/python benchmarks/rtrecall.py                       # 1,000,000 rows, 3,000 queries
    .venv/bin/python benchmarks/rtrecall.py --records 200000 --threshold 0.9
    .venv/bin/python benchmarks/rtrecall.py --clks synthetic
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.realclks import realistic_pair
from benchmarks.synthclks import CLK_BITS, Population
from blindmatch.matcher.core.segment import Segment, as_words, search

CLK_BYTES = CLK_BITS // 8


def graded(rng: np.random.Generator, clks: np.ndarray, least: float, most: float) -> np.ndarray:
    """Copies with a share (uniform in [least, most]) of each row's set bits moved."""
    bits = np.unpackbits(clks, axis=1).astype(bool)
    for row in bits:
        ones = np.flatnonzero(row)
        k = int(rng.uniform(least, most) * len(ones))
        row[rng.choice(ones, k, replace=False)] = False
        row[rng.integers(0, CLK_BITS, k)] = True
    return np.packbits(bits, axis=1)


def queries(
    rng: np.random.Generator, pop: Population, indexed: np.ndarray, n: int, count: int
) -> dict[str, np.ndarray]:
    third = count // 3
    people = rng.integers(0, n, third)
    typo = pop.encode(people, rng, np.ones(third, dtype=bool))
    moved = graded(rng, indexed[rng.integers(0, n, third)], 0.12, 0.32)
    strangers = pop.encode(np.arange(n, n + third), rng, np.zeros(third, dtype=bool))
    return {"typos": typo, "graded": moved, "unrelated": strangers}


def synthetic(args: argparse.Namespace, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    pop = Population(args.records + args.queries, args.seed)
    indexed = pop.encode(np.arange(args.records), rng, np.zeros(args.records, dtype=bool))
    return indexed, queries(rng, pop, indexed, args.records, args.queries)


def realistic(args: argparse.Namespace, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """A's records indexed; B's records of shared people, strangers, graded copies asked."""
    third = args.queries // 3
    # B: 20,000 records, all of people A holds (the same encodings realtime.py uses).
    pair = realistic_pair(args.records, max(third, 20_000), seed=args.seed, overlap=0.5)
    others = realistic_pair(max(third, 4_000), 0, seed=args.seed + 1000, overlap=0.0).a[:third]
    b_rows = rng.choice(len(pair.truth_b), third, replace=False)
    indexed = pair.a
    moved = graded(rng, indexed[rng.integers(0, len(indexed), third)], 0.12, 0.32)
    return indexed, {"shared": pair.b[pair.truth_b[b_rows]], "graded": moved, "strangers": others}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=3_000)
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--seed", type=int, help="default: 1 (realistic), 4 (synthetic)")
    parser.add_argument("--clks", choices=("realistic", "synthetic"), default="realistic")
    args = parser.parse_args()
    if args.seed is None:
        args.seed = 1 if args.clks == "realistic" else 4
    rng = np.random.default_rng(args.seed)
    n = args.records

    t0 = time.perf_counter()
    indexed, asked = (realistic if args.clks == "realistic" else synthetic)(args, rng)
    print(f"{args.clks} CLKs: {time.perf_counter() - t0:.1f} s", flush=True)

    words = as_words(indexed, CLK_BITS)
    t0 = time.process_time()
    segment = Segment.build(words, [str(i) for i in range(n)], threshold=args.threshold)
    built = time.process_time() - t0
    if segment.lsh is None:
        print(f"{n:,} rows: no LSH tables (below the size, or no plan: see the log); scanned")
        return 0
    table = segment.lsh
    print(f"index of {n:,} {args.clks} rows, threshold {args.threshold}: {table.plan.describe()}")
    print(f"  built (sort + plan + tables) in {built:.2f} s CPU; tables "
          f"{table.nbytes / 2**20:.0f} MiB ({table.nbytes / n:.0f} bytes per row)")  # fmt: skip

    failed = False
    total_pairs = total_missed = 0
    lows: list[float] = []
    for kind, clks in asked.items():
        pairs = missed = looked = read = 0
        scan_s = lsh_s = 0.0
        for q in as_words(clks, CLK_BITS):
            t1 = time.process_time()
            rows, sims = search(segment.words, segment.popcounts, q, args.threshold)
            t2 = time.process_time()
            lrows, lsims, seen, decided = table.search_counted(
                segment.words, segment.popcounts, q, args.threshold
            )
            t3 = time.process_time()
            scan_s += t2 - t1
            lsh_s += t3 - t2
            looked += seen
            read += decided
            want = dict(zip(rows.tolist(), sims.tolist(), strict=True))
            got = dict(zip(lrows.tolist(), lsims.tolist(), strict=True))
            if any(want.get(r) != s for r, s in got.items()):
                print("  a score differs from the exhaustive scan's")
                failed = True
            lost = [r for r in want if r not in got]
            lows.extend(want[r] for r in lost)
            pairs += len(want)
            missed += len(lost)
        total_pairs += pairs
        total_missed += missed
        q = len(clks)
        recall = f"{1 - missed / pairs:.4%}" if pairs else "n/a"
        print(f"  {kind:>9}: {q} queries, {pairs} pairs >= t, missed {missed} (recall {recall}); "
              f"rows looked at {looked / q:.0f}/query, CLKs read after the sketch screen "
              f"{read / q:.0f}; CPU ms/query scan {scan_s / q * 1e3:.2f}, "
              f"LSH {lsh_s / q * 1e3:.3f} ({scan_s / max(lsh_s, 1e-9):.1f}x)")  # fmt: skip
    recall = 1 - total_missed / max(total_pairs, 1)
    print(f"  all: {total_pairs} pairs, recall {recall:.4%}"
          + (f"; missed pairs' Dice {min(lows):.3f}-{max(lows):.3f}" if lows else ""))  # fmt: skip
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    return 1 if failed or recall < 0.999 else 0


if __name__ == "__main__":
    raise SystemExit(main())
