"""Batch LSH recall under a schema's `blindmatch.rule`, beside no rule (issue 19 item 2).

    .venv/bin/python benchmarks/lshrecall.py [--records 200000] [--sample 0]
        [--schema schemas/person-uk.json] [--threshold 0.8] [--workers 2] [--plan-at-threshold]
        [--generator messy|households]

Issue 19 asks batch LSH to find >= 0.999 of the pairs an exhaustive run finds at 1M x 1M
on realistic encodings. With a rule over both CLKs (the default schema's, docs/schema.md),
the pairs that count are those the rule *links*: a pair where both records have the
fallback's left-out fields (the date of birth) when S = D1 + gap * (D1 - D2) - offset >= t
and D1 >= the rule's candidate floor (t - reach: 0.79 at 0.8), and a pair involving a
record lacking them when its fallback CLKs' Dice >= t (`core.fallback`). This measures,
on realistic encodings as uploaded (`benchmarks/realclks.py`'s n x n pair, seed 0, 10%
shared people, cached), both ways, with the batch run's own functions (usecases.runs.match
less the solving):

- the truth: the first CLKs compared exhaustively (`kernel.dice_candidates`) at the lower
  of the two candidate floors, then for each way the pairs at or above its floor rescored
  by `fallback.rescored` (the rule's S, the rows lacking the fields on fallback CLKs,
  compared exhaustively as a run does);
- LSH: `blocking.plan_pairs` for the first CLKs at the way's candidate floor (a run plans
  for the floor: usecases.runs.match), the bands compared by the thread executor
  (`CompareJob`, as a run), the candidates rescored the same way;
- recall: the share of the truth's pairs (>= t under the way's scoring) LSH's pairs hold,
  with the same score; also of the links after the one-to-one solving (`solve`) of each.

`--generator households` draws the people by the held-out generator (benchmarks/households.py,
which the planner was not developed on) instead of messy.py.

`--plan-at-threshold` adds a third column: the rule with the bands designed for t instead of
its floor (candidates still kept down to the floor), the planner's possible mistake, to see
what planning for the floor buys.

With `--sample K` (K > 0) the truth covers a random K of A's rows against all of B (at
1,000,000: a full exhaustive pass is ~20 CPU minutes) and LSH's pairs are counted on those
rows; the links are then not compared. `--schema schemas/person-uk-no-rule.json` (no rule)
prints one column. CPU seconds are time.process_time of this process (all threads); wall
seconds beside them; the load average is printed: the machine's cores are shared.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.realclks import GENERATORS, layout, realistic_pair
from blindmatch.matcher.core import blocking, kernel
from blindmatch.matcher.core.compare import Candidates, merge
from blindmatch.matcher.core.executor import CompareJob, ThreadExecutor
from blindmatch.matcher.core.fallback import Split, rescored
from blindmatch.matcher.core.solve import dice, solve
from blindmatch.matcher.domain import NO_RULE, Rule

ROOT = Path(__file__).resolve().parent.parent
Pairs = dict[tuple[int, int], float]


def schema_rule(path: Path) -> Rule:
    """The schema's `blindmatch.rule` (NO_RULE when it has none)."""
    raw = json.loads(path.read_text()).get("blindmatch", {}).get("rule")
    return Rule(raw["gap"], raw["offset"], raw["reach"]) if raw else NO_RULE


def pairs_of(parts: list[Candidates]) -> Pairs:
    """(row of A, row of B) -> score of candidates between datasets 0 and 1."""
    c = merge(parts)
    return dict(zip(zip(c.rec0.tolist(), c.rec1.tolist(), strict=True), c.sims.tolist(),
                    strict=True))  # fmt: skip


def links_of(parts: list[Candidates]) -> set[tuple[int, int]]:
    """The (row of A, row of B) links the greedy one-to-one solving keeps."""
    out = set()
    for group in solve(merge(parts)):
        rows = dict(group)
        if 0 in rows and 1 in rows:
            out.add((rows[0], rows[1]))
    return out


def restricted(c: Candidates, keep: npt.NDArray[np.bool_]) -> Candidates:
    return Candidates(c.sims[keep], c.dset0[keep], c.dset1[keep], c.rec0[keep], c.rec1[keep])


@dataclass
class Way:
    """One way of scoring (a rule, or none) and what was measured of it."""

    name: str
    rule: Rule
    floor: float = 0.0
    planned_at: float | None = None  # the Dice the bands are designed for (None: the floor)
    truth: Pairs | None = None
    under: set[tuple[int, int]] | None = None  # the truth's pairs whose first CLKs' Dice < t
    truth_links: set[tuple[int, int]] | None = None
    plan: str = ""
    design: float = 0.0
    comparisons: int = 0
    cpu: float = 0.0
    wall: float = 0.0
    found: Pairs | None = None
    found_links: set[tuple[int, int]] | None = None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=200_000, help="n of the n x n pair")
    parser.add_argument("--sample", type=int, default=0,
                        help="rows of A the exhaustive truth covers (0: all)")  # fmt: skip
    parser.add_argument("--schema", type=Path, default=ROOT / "schemas" / "person-uk.json",
                        help="whose blindmatch.rule is measured beside no rule "
                             "(person-uk-no-rule.json: no rule only)")  # fmt: skip
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--generator", choices=GENERATORS, default="messy",
                        help="whose people (benchmarks/realclks.py --generator)")  # fmt: skip
    parser.add_argument("--plan-at-threshold", action="store_true",
                        help="also the rule with bands planned for t, not its floor (the "
                             "mistake the planner does not make: what it would lose)")  # fmt: skip
    args = parser.parse_args()
    t, n = args.threshold, args.records
    rule = schema_rule(args.schema)
    ways = [Way("no rule", NO_RULE)]
    if rule.active:
        ways.append(Way("rule", rule))
        if args.plan_at_threshold:
            ways.append(Way("rule, bands for t", rule, planned_at=t))
    for way in ways:
        way.floor = way.rule.candidate_floor(t)

    t0 = time.perf_counter()
    pair = realistic_pair(n, n, whole=True, generator=args.generator)
    clk_bits, fallback_bits = layout()
    if not fallback_bits:
        raise SystemExit("the default schema has no fallback CLK: no rule to measure")
    split = Split.of([pair.a, pair.b], fallback_bits)
    print(f"realistic ({args.generator}) {n:,} x {n:,} (seed 0, 10% shared), {clk_bits}-bit "
          f"CLKs of which {fallback_bits} fallback; {split.lacking[0].mean():.1%} of A's rows "
          f"lack the fallback's fields; loaded in {time.perf_counter() - t0:.1f} s",
          flush=True)  # fmt: skip
    said = " | ".join(f"{w.name}: {w.rule.describe(t)}" for w in ways)
    print(f"schema {args.schema.name}: {said}")

    # The truth: the first CLKs exhaustively at the lowest floor (the same comparisons at
    # any floor), then each way's pairs at its floor rescored as a run rescores them.
    low = min(w.floor for w in ways)
    rows = np.arange(n)
    if args.sample and args.sample < n:
        rows = np.sort(np.random.default_rng(7).choice(n, args.sample, replace=False))
    c0, w0 = time.process_time(), time.perf_counter()
    sims, ia, ib = kernel.dice_candidates(
        np.ascontiguousarray(split.first[0][rows]), split.first[1], low, workers=args.workers
    )
    exh_cpu, exh_wall = time.process_time() - c0, time.perf_counter() - w0
    k = len(sims)
    every = Candidates(sims.astype(np.float64), np.zeros(k, np.uint32), np.ones(k, np.uint32),
                       rows[ia].astype(np.uint32), ib.astype(np.uint32))  # fmt: skip
    covered = np.zeros(n, dtype=bool)
    covered[rows] = True
    whole = len(rows) == n
    print(f"exhaustive first CLKs at {low:g}: {len(rows):,} rows of A x {n:,}: {k:,} pairs, "
          f"{exh_cpu:.1f} CPU s ({exh_wall:.1f} s wall), ~{exh_cpu * n / len(rows):.0f} CPU s "
          f"for all of A", flush=True)  # fmt: skip
    for way in ways:
        parts = rescored(restricted(every, every.sims >= way.floor), split, t, args.workers,
                         way.rule)  # fmt: skip
        found = pairs_of(parts)
        way.truth = {p: s for p, s in found.items() if covered[p[0]]}
        way.under = first_under(split, way.truth, t)
        way.truth_links = links_of(parts) if whole else None

    for way in ways:
        load = os.getloadavg()[0]
        c0, w0 = time.process_time(), time.perf_counter()
        at = way.floor if way.planned_at is None else way.planned_at
        plans = blocking.plan_pairs(split.first, at)
        label = ""
        if isinstance(plans, blocking.NoPlan):  # a run compares every pair; show LSH anyway
            label = f" (a run of this size: {plans.message}; the plan for 1M x 1M shown)"
            plans = blocking.plan_pairs(split.first, at, sizes=[1_000_000] * 2)
            assert isinstance(plans, blocking.PairPlans), plans
        job = CompareJob(split.first, way.floor, "lsh", lsh=plans)
        parts, way.comparisons = ThreadExecutor(args.workers).compare(
            job, lambda *_: None, lambda *_: None
        )
        ruled = rescored(merge(parts), split, t, args.workers, way.rule)
        way.cpu, way.wall = time.process_time() - c0, time.perf_counter() - w0
        found = pairs_of(ruled)
        way.found = {p: s for p, s in found.items() if covered[p[0]]}
        way.found_links = links_of(ruled) if whole else None
        lsh = plans.plans[0]
        way.plan = f"{lsh.bands} bands x {lsh.bits_per_band} bits at {at:g}{label}"
        way.design = lsh.design_recall
        print(f"{way.name}: LSH {way.plan}, design recall {way.design:.4f}: "
              f"{way.comparisons:,} comparisons, {way.cpu:.1f} CPU s ({way.wall:.1f} s wall; "
              f"load {load:.1f} before)", flush=True)  # fmt: skip

    report(ways, n, t, exh_cpu * n / len(rows), whole, len(rows))
    print(f"machine: {os.cpu_count()} cores (shared), load average {os.getloadavg()[0]:.1f}")
    worst = min(recall_of(w)[0] for w in ways)
    return 0 if worst >= 0.999 else 1


def first_under(split: Split, pairs: Pairs, t: float) -> set[tuple[int, int]]:
    """The pairs (both records with the fields) whose first CLKs' Dice is under t."""
    keys = [p for p in pairs if not (split.lacking[0][p[0]] or split.lacking[1][p[1]])]
    if not keys:
        return set()
    ra, rb = (np.array(x, dtype=np.int64) for x in zip(*keys, strict=True))
    d1 = dice(split.first[0][ra], split.first[1][rb])
    return {p for p, d in zip(keys, d1.tolist(), strict=True) if d < t}


def recall_of(way: Way) -> tuple[float, int, int, list[float]]:
    """(recall, found, of, the missed pairs' scores); a pair found with another score is
    counted as missed."""
    assert way.truth is not None and way.found is not None
    hit = [p for p, s in way.truth.items() if way.found.get(p) == s]
    missed = sorted(s for p, s in way.truth.items() if way.found.get(p) != s)
    return len(hit) / max(len(way.truth), 1), len(hit), len(way.truth), missed


def report(ways: list[Way], n: int, t: float, exh_cpu: float, whole: bool, rows: int) -> None:
    def cells(f) -> list[str]:  # type: ignore[no-untyped-def]
        return [f(w) for w in ways]

    def ratio(f) -> str:  # type: ignore[no-untyped-def]
        return f"{f(ways[1]) / f(ways[0]):.2f}" if len(ways) >= 2 else ""

    table: list[tuple[str, list[str], str]] = [
        ("candidate floor (first CLKs)", cells(lambda w: f"{w.floor:g}"), ""),
        ("LSH plan", cells(lambda w: f"{w.plan}, design recall {w.design:.4f}"), ""),
        (f"exhaustive pairs >= {t:g} under the way's scoring"
         + ("" if whole else f" ({rows:,} random rows of A)"),
         cells(lambda w: f"{len(w.truth or {}):,}"), ""),
        ("... of them found by LSH (same score)",
         cells(lambda w: f"{recall_of(w)[1]:,}"), ""),
        ("**recall**", cells(lambda w: f"**{recall_of(w)[0]:.5f}**"), ""),
        ("missed pairs' scores", cells(lambda w: _range(recall_of(w)[3])), ""),
        (f"... of the pairs, first CLKs' Dice under {t:g} (the floor's): found",
         cells(lambda w: f"{len(w.under & w.found.keys()):,} of {len(w.under):,}"), ""),
        ("LSH comparisons", cells(lambda w: f"{w.comparisons:.3g}"),
         ratio(lambda w: w.comparisons)),
        ("pair reduction (all pairs / LSH comparisons)",
         cells(lambda w: f"{n * n / w.comparisons:.1f}x"),
         ratio(lambda w: n * n / w.comparisons)),
        ("LSH run CPU s (wall s): plan + bands + rescoring",
         cells(lambda w: f"{w.cpu:.1f} ({w.wall:.1f})"), ratio(lambda w: w.cpu)),
        ("exhaustive CPU s (all of A) / LSH CPU s",
         cells(lambda w: f"{exh_cpu / w.cpu:.1f}x"), ratio(lambda w: exh_cpu / w.cpu)),
    ]  # fmt: skip
    if whole:
        table.append(("links after solving: LSH's of the exhaustive run's",
                      cells(lambda w: _links(w)), ""))  # fmt: skip
    head = " | ".join(w.name for w in ways)
    tail = " rule / no rule |" if len(ways) >= 2 else ""
    print(f"\n| {n:,} x {n:,}, t = {t:g} | {head} |{tail}")
    print("|---" * (len(ways) + 1 + (len(ways) >= 2)) + "|")
    for name, values, r in table:
        print(f"| {name} | {' | '.join(values)} |" + (f" {r} |" if len(ways) >= 2 else ""))


def _range(scores: list[float]) -> str:
    return f"{scores[0]:.4f}-{scores[-1]:.4f}" if scores else "none"


def _links(way: Way) -> str:
    assert way.truth_links is not None and way.found_links is not None
    same = len(way.truth_links & way.found_links)
    return f"{same:,} of {len(way.truth_links):,} ({len(way.found_links - way.truth_links)} other)"


if __name__ == "__main__":
    raise SystemExit(main())
