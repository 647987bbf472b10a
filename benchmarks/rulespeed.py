"""What the rule over both CLKs (`blindmatch.rule`, the default schema's) costs a batch run,
beside one CLK a pair (the default before it), as ratios.

    .venv/bin/python benchmarks/rulespeed.py [--exhaustive 40000] [--plan 1000000]
        [--lsh 200000] [--repeat 3] [--floors 0.78 0.79]

On realistic encodings as uploaded (record-level CLK followed by its fallback CLK; the 1M x
1M pair `benchmarks/realclks.py` caches, its first rows):

1. exhaustive: `match` on n x n rows without a rule and with the default's, wall and CPU
   seconds (best of `--repeat`; CPU, all threads, is the steadier on a shared machine), and
   the links (pairs of A's rows) with how many join one person (the cache's truth);
2. LSH plans: `blocking.plan_pairs` for the first CLKs at the threshold (0.8, what today's
   runs plan for) and at the rule's candidate floor (0.79, what the rule's runs plan for) on
   N x N rows: bits a band, bands, expected comparisons, and the ratio;
3. LSH run: `match(blocking="lsh")` on n x n rows, both ways: wall and CPU seconds,
   comparisons, links.

No timing is asserted anywhere; the figures go to docs/performance.md by hand.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.realclks import cache_dir, realistic_pair
from blindmatch.matcher.core import blocking
from blindmatch.matcher.core.fallback import Split
from blindmatch.matcher.domain import NO_RULE, Rule
from blindmatch.matcher.usecases.runs import MatchResult, match

RULE = Rule(0.25, 0.03, 0.01)  # schemas/person-uk.json
THRESHOLD = 0.8


PAIR = 1_000_000  # the cached N x N pair the rows are read from (--pair)


def folder() -> Path:
    return cache_dir(PAIR, PAIR, 0, 0.1)


def pair(n: int) -> list[npt.NDArray[np.uint8]]:
    if not (folder() / "a.npy").exists():
        if PAIR >= 1_000_000:
            raise SystemExit(f"{folder()}: missing; make it with benchmarks/realclks.py")
        realistic_pair(PAIR, PAIR, whole=True, quiet=True)  # a small one: encoded here
    return [np.ascontiguousarray(np.load(folder() / f"{x}.npy", mmap_mode="r")[:n]) for x in "ab"]


def true_links(result: MatchResult, n: int) -> str:
    """How many of A's links join two records of one person (the cache's truth: rows
    truth_a[k] of A and truth_b[k] of B are one person), of how many such pairs there are."""
    ta, tb = (np.load(folder() / f"truth_{x}.npy") for x in "ab")
    inside = (ta < n) & (tb < n)
    true = set(zip(ta[inside].tolist(), tb[inside].tolist(), strict=True))
    links = result.links
    mine = links.dset == 0
    found = set(zip(links.row[mine].tolist(), links.partner_row[mine].tolist(), strict=True))
    return f"{len(found):>6} pairs, {len(found & true)} true (of {len(true)})"


def timed(
    datasets: list[npt.NDArray[np.uint8]], rule: Rule, blocking_: str, repeat: int
) -> tuple[float, float, MatchResult]:
    """Best wall and best CPU seconds (all threads) of `repeat` runs, and the last result."""
    wall, cpu, result = float("inf"), float("inf"), None
    for _ in range(repeat):
        started, started_cpu = time.perf_counter(), time.process_time()
        result = match(datasets, THRESHOLD, blocking=blocking_, fallback_bits=1024, rule=rule)
        wall = min(wall, time.perf_counter() - started)
        cpu = min(cpu, time.process_time() - started_cpu)
    assert result is not None
    return wall, cpu, result


def ratio(rows: dict[str, tuple[float, float]]) -> None:
    (wall0, cpu0), (wall1, cpu1) = rows["one CLK a pair"], rows["the rule"]
    print(f"  ratio (rule / one CLK): wall {wall1 / wall0:.2f}, CPU {cpu1 / cpu0:.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--exhaustive", type=int, default=40_000)
    parser.add_argument("--plan", type=int, default=1_000_000)
    parser.add_argument("--lsh", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument(
        "--floors", type=float, nargs="*", help="plan for these candidate floors (default 0.79)"
    )
    parser.add_argument("--pair", type=int, default=1_000_000, metavar="N",
                        help="the cached realistic N x N pair the rows are read from (a smaller "
                        "one, for a quick run, is encoded on first use)")  # fmt: skip
    args = parser.parse_args()
    global PAIR
    PAIR = args.pair
    floor = RULE.candidate_floor(THRESHOLD)
    if args.exhaustive:
        data = pair(args.exhaustive)
        n = args.exhaustive
        print(f"exhaustive, {n:,} x {n:,} realistic rows (best of {args.repeat}):")
        rows = {}
        for name, rule in (("one CLK a pair", NO_RULE), ("the rule", RULE)):
            wall, cpu, result = timed(data, rule, "exhaustive", args.repeat)
            rows[name] = (wall, cpu)
            print(f"  {name:<15} {wall:7.2f} s wall {cpu:7.2f} s CPU  {result.method:<26} "
                  f"{true_links(result, n)}")  # fmt: skip
        ratio(rows)
    if args.plan:
        data = pair(args.plan)
        first = Split.of(data, 1024).first
        print(f"LSH plans for the first CLKs, {args.plan:,} x {args.plan:,} realistic rows:")
        expected = {}
        floors = args.floors if args.floors else [floor]
        for name, t in [("threshold 0.80", THRESHOLD)] + [(f"floor {f:.2f}", f) for f in floors]:
            started = time.perf_counter()
            found = blocking.plan_pairs(first, t)
            took = time.perf_counter() - started
            if isinstance(found, blocking.NoPlan):
                print(f"  {name}: no plan ({found.message}) [{took:.1f} s]")
                continue
            p = found.plans[0]
            expected[name] = p.expected_comparisons
            print(f"  {name}: {p.describe()} [{took:.1f} s to plan]")
        base = expected.pop("threshold 0.80", None)
        for name, b in expected.items():
            if base:
                print(f"  expected comparisons, ratio ({name} / threshold): {b / base:.2f}")
    if args.lsh:
        data = pair(args.lsh)
        n = args.lsh
        print(f"LSH runs, {n:,} x {n:,} realistic rows (best of {args.repeat}):")
        rows = {}
        for name, rule in (("one CLK a pair", NO_RULE), ("the rule", RULE)):
            wall, cpu, result = timed(data, rule, "lsh", args.repeat)
            rows[name] = (wall, cpu)
            print(f"  {name:<15} {wall:7.2f} s wall {cpu:7.2f} s CPU  {result.method:<20} "
                  f"{result.comparisons:>14,} compared {len(result.links):>7} links")  # fmt: skip
        ratio(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
