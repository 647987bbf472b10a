"""Recall and cost of the real-time LSH look-up against an exhaustive scan, in process.

Builds one standing-index segment of N CLKs, plans its LSH bands and sketch screen for the
threshold as the matcher does (matcher/core/rtplan.py, from the rows themselves), and asks
Q single-record queries. Every pair the exhaustive scan finds at Dice >= threshold
counts; recall is the share the LSH path also finds, with the same score. Costs are CPU
time (time.process_time) per query, the load average is printed.

`--clks realistic` (the default): real clkhash output of realistic people
(benchmarks/realclks.py: messy.py's people and corruptions, or with `--generator households`
the held-out households.py's, the shipped default schema, cached on disk). The index is
member A's N records; the queries are member B's records of people A holds too (each
corrupted in its own way), people no one holds (another seed's), and *graded* copies of
indexed records (a share of the set bits, uniform in 12-32%, moved elsewhere, so that Dice
spreads over about 0.75-0.9 and many pairs sit right at the threshold, the hardest case).

With a default schema that has a fallback CLK (realclks.layout: each row its first CLK,
then its fallback CLK), the index is searched as the matcher searches one
(matcher/core/fallbackindex.py): the first halves, the fallback halves of the rows that
have the fallback's left-out fields and those of the rows that lack them are three
segments, each with tables planned from its own rows when large enough (the rows lacking
the fields, about 1%, are scanned). A query with the fields looks up the first halves and
the lacking rows; one without looks up the two fallback parts. The truth is the
exhaustive scan of every row's first and fallback CLK, kept by the batch runs' rule
(`core.fallback.on_fallback`), so a pair missed or wrongly found by the split shows. A
query's cost is that of the look-ups it makes. Graded copies move bits within each half.

`--clks record-level`: the record-level CLKs alone (1,024 bits, no fallback CLK) of
`realistic_pair(N, N)` (seed 0: at 1,000,000 the batch benchmarks' cached encodings, so
nothing is encoded), the part of a query's look-up that costs: A's records indexed; B's
records of people A holds, B's people A does not hold, graded copies of A's records.

`--cached-pair` (realistic): the whole CLKs of the same `realistic_pair(N, N)` (seed 0) as
`--clks record-level` instead of seed 1's N x 20,000 pair, searched as above; strangers are
B's people A does not hold. Nothing is encoded where that pair is cached
(`benchmarks/realclks.py 1000000 1000000`).

`--schema` (realistic, default schemas/person-uk.json): its `blindmatch.rule` (the default
schema's: S = D1 + 0.25 * (D1 - D2) - 0.03, candidates at D1 >= 0.79) is measured beside no
rule, one after the other on the same queries: under the rule the first halves' tables are
planned for the rule's candidate floor (as `FallbackIndex.load` plans them), looked up there,
and each hit of a row that has the fields is kept when its S from both halves reaches the
threshold (`FallbackSnapshot.ruled`); the truth is the exhaustive scan at the floor rescored
the same way. The table at the end puts the two side by side with ratios (rule / no rule),
and counts the rule's pairs whose first CLKs' Dice is under the threshold (found only
because the tables reach the floor). `--schema schemas/person-uk-no-rule.json`: no rule only.

`--shared-bands 1`: the plans rtplan may weigh by how many bands a row must share a key
with the query in (default 1,2,3; 1 is the plan before collision counting).

`--clks synthetic`: benchmarks/synthclks.py's imitation of clkhash output (the figures
docs/performance.md kept before real encodings; a second column now): typo copies, graded
copies and unrelated people.

    .venv/bin/python benchmarks/rtrecall.py                       # 1,000,000 rows, 3,000 queries
    .venv/bin/python benchmarks/rtrecall.py --records 200000 --threshold 0.9
    .venv/bin/python benchmarks/rtrecall.py --clks synthetic
    .venv/bin/python benchmarks/rtrecall.py --clks record-level [--shared-bands 1]
    .venv/bin/python benchmarks/rtrecall.py --cached-pair         # default layout, seed 0's pair
    .venv/bin/python benchmarks/rtrecall.py --cached-pair --records 200000 [--schema S.json]
    .venv/bin/python benchmarks/rtrecall.py --cached-pair --records 200000 --generator households
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.lshrecall import schema_rule
from benchmarks.realclks import GENERATORS, layout, realistic_pair
from benchmarks.synthclks import Population
from blindmatch.matcher.core import fallback, rtplan, solve
from blindmatch.matcher.core.lshindex import LshTable
from blindmatch.matcher.core.segment import Segment, as_words, search
from blindmatch.matcher.domain import NO_RULE, Rule

ROOT = Path(__file__).resolve().parent.parent


def graded(rng: np.random.Generator, clks: np.ndarray, least: float, most: float) -> np.ndarray:
    """Copies with a share (uniform in [least, most]) of each row's set bits moved."""
    bits = np.unpackbits(clks, axis=1).astype(bool)
    for row in bits:
        ones = np.flatnonzero(row)
        k = int(rng.uniform(least, most) * len(ones))
        row[rng.choice(ones, k, replace=False)] = False
        row[rng.integers(0, len(row), k)] = True
    return np.packbits(bits, axis=1)


def graded_halves(
    rng: np.random.Generator, clks: np.ndarray, cut: int, least: float, most: float
) -> np.ndarray:
    """`graded` within each half (bytes [0, cut) and [cut, end)); the whole when cut is 0."""
    if not cut:
        return graded(rng, clks, least, most)
    return np.concatenate(
        [graded(rng, clks[:, :cut], least, most), graded(rng, clks[:, cut:], least, most)], axis=1
    )


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
    if args.cached_pair:
        # The batch benchmarks' N x N pair of seed 0 (10% shared): strangers are B's people
        # A does not hold, so a cached pair needs nothing encoded.
        pair = realistic_pair(args.records, args.records, whole=True, generator=args.generator)
        unheld = np.setdiff1d(np.arange(len(pair.b)), pair.truth_b)
        strangers = pair.b[rng.choice(unheld, third, replace=False)]
    else:
        # B: 20,000 records, all of people A holds (the same encodings realtime.py uses).
        pair = realistic_pair(args.records, max(third, 20_000), seed=args.seed, overlap=0.5,
                              whole=True, generator=args.generator)  # fmt: skip
        others = realistic_pair(max(third, 4_000), 0, seed=args.seed + 1000, overlap=0.0,
                                whole=True, generator=args.generator)  # fmt: skip
        strangers = others.a[:third]
    b_rows = rng.choice(len(pair.truth_b), third, replace=False)
    indexed = pair.a
    clk_bits, fallback_bits = layout()
    cut = (clk_bits - fallback_bits) // 8 if fallback_bits else 0
    moved = graded_halves(rng, indexed[rng.integers(0, len(indexed), third)], cut, 0.12, 0.32)
    return indexed, {
        "shared": pair.b[pair.truth_b[b_rows]],
        "graded": moved,
        "strangers": strangers,
    }


def record_level(args: argparse.Namespace, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """A's record-level CLKs indexed; B's of shared people and of others, graded copies."""
    third = args.queries // 3
    pair = realistic_pair(args.records, args.records, generator=args.generator)
    unheld = np.setdiff1d(np.arange(len(pair.b)), pair.truth_b)
    b_rows = rng.choice(len(pair.truth_b), third, replace=False)
    moved = graded(rng, pair.a[rng.integers(0, len(pair.a), third)], 0.12, 0.32)
    return pair.a, {
        "shared": pair.b[pair.truth_b[b_rows]],
        "graded": moved,
        "strangers": pair.b[rng.choice(unheld, third, replace=False)],
    }


@dataclass
class Half:
    """One segment searched (the whole CLK, a first half, or a part of the fallback halves)
    and its tallies; rows are counted by their original row numbers."""

    name: str
    segment: Segment
    table: LshTable | None  # None: scanned, as the matcher scans an index too small for tables
    order: np.ndarray  # the original row number of each segment row
    pairs: int = 0
    missed: int = 0
    looked: int = 0
    read: int = 0
    lookups: int = 0
    scan_s: float = 0.0
    lsh_s: float = 0.0

    def scan(self, q: np.ndarray, threshold: float) -> dict[int, float]:
        """The exhaustive scan: original row -> score."""
        t1 = time.process_time()
        rows, sims = search(self.segment.words, self.segment.popcounts, q, threshold)
        self.scan_s += time.process_time() - t1
        return dict(zip(self.order[rows].tolist(), sims.tolist(), strict=True))

    def look(self, q: np.ndarray, threshold: float) -> dict[int, float]:
        """The look-up the matcher makes (its tables, or a scan without): row -> score."""
        t1 = time.process_time()
        if self.table is None:
            rows, sims = search(self.segment.words, self.segment.popcounts, q, threshold)
            seen = decided = len(self.segment)
        else:
            rows, sims, seen, decided = self.table.search_counted(
                self.segment.words, self.segment.popcounts, q, threshold
            )
        self.lsh_s += time.process_time() - t1
        self.looked += seen
        self.read += decided
        self.lookups += 1
        return dict(zip(self.order[rows].tolist(), sims.tolist(), strict=True))


def build(
    name: str, clks: np.ndarray, threshold: float | None, rows: np.ndarray | None = None
) -> Half:
    """A segment of `clks` (of the original rows `rows`, default all) as the matcher builds
    one: with tables for `threshold` when it is large enough and a plan reaches the design
    recall, scanned otherwise."""
    n = len(clks)
    words = as_words(clks, clks.shape[1] * 8)
    t0 = time.process_time()
    # Row i of the segment is sorted: refs carry the original row numbers.
    segment = Segment.build(words, [str(i) for i in range(n)], threshold=threshold)
    built = time.process_time() - t0
    order = np.array([int(r) for r in segment.refs], dtype=np.int64)
    if rows is not None:
        order = rows[order] if n else order
    table = segment.lsh
    if threshold is None:
        pass
    elif table is None:
        print(f"{name}: {n:,} rows: no LSH tables (below the size, or no plan: see the log); "
              "scanned")  # fmt: skip
    else:
        print(f"{name}: {n:,} rows of {words.shape[1] * 64} bits, threshold {threshold}: "
              f"{table.plan.describe()}")  # fmt: skip
        print(f"  built (sort + plan + tables) in {built:.2f} s CPU; tables "
              f"{table.nbytes / 2**20:.0f} MiB ({table.nbytes / n:.0f} bytes per row)")  # fmt: skip
    return Half(name, segment, table, order)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=3_000)
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--seed", type=int, help="default: 1 (realistic), 4 (synthetic)")
    parser.add_argument("--clks", choices=("realistic", "record-level", "synthetic"),
                        default="realistic")  # fmt: skip
    parser.add_argument(
        "--cached-pair",
        action="store_true",
        help="realistic: index member A of realistic_pair(N, N) (seed 0, the batch "
        "benchmarks' pair, cached at 1,000,000) and ask B's records, instead of seed 1's "
        "N x 20,000 pair",
    )
    parser.add_argument("--schema", type=Path, default=ROOT / "schemas" / "person-uk.json",
                        help="realistic: whose blindmatch.rule is measured beside no rule "
                             "(person-uk-no-rule.json: no rule only)")  # fmt: skip
    parser.add_argument("--generator", choices=GENERATORS, default="messy",
                        help="realistic: whose people (realclks.py --generator)")  # fmt: skip
    parser.add_argument(
        "--shared-bands", default="1,2,3", help="the shared bands rtplan may weigh: 1 or 1,2,3"
    )
    args = parser.parse_args()
    rtplan.HITS = tuple(int(k) for k in args.shared_bands.split(","))
    if args.seed is None:
        args.seed = 4 if args.clks == "synthetic" else 1
    rng = np.random.default_rng(args.seed)

    t0 = time.perf_counter()
    make = {"realistic": realistic, "record-level": record_level, "synthetic": synthetic}
    indexed, asked = make[args.clks](args, rng)
    print(f"{args.clks} CLKs: {time.perf_counter() - t0:.1f} s", flush=True)

    clk_bits, fallback_bits = layout() if args.clks == "realistic" else (8 * indexed.shape[1], 0)
    t = args.threshold
    rule = schema_rule(args.schema) if fallback_bits else NO_RULE  # a rule needs a fallback CLK
    ways = {"no rule": NO_RULE, **({"rule": rule} if rule.active else {})}
    print(f"schema {args.schema.name}: "
          + " | ".join(f"{w}: {r.describe(t)}" for w, r in ways.items()))  # fmt: skip
    tallies = []
    if fallback_bits:
        cut = (clk_bits - fallback_bits) // 8
        lack = fallback.lacking(indexed[:, :cut], indexed[:, cut:])
        print(f"{clk_bits}-bit CLKs: a {clk_bits - fallback_bits}-bit first CLK and a "
              f"{fallback_bits}-bit fallback CLK; {lack.mean():.1%} of the indexed rows lack "
              "the fallback's left-out fields")  # fmt: skip
        having, lacking = np.flatnonzero(~lack), np.flatnonzero(lack)
        second = build("fallback CLKs, rows with the fields", indexed[having, cut:], t, having)
        lacks = build("fallback CLKs, rows lacking them", indexed[lacking, cut:], t, lacking)
        # The exhaustive truth: every row's fallback CLK, scanned, kept by the rule.
        whole_second = build("fallback CLKs, all rows", indexed[:, cut:], None)
        words = as_words(indexed, clk_bits)
        for name, way_rule in ways.items():
            # The first halves' tables for the way's candidate floor, as FallbackIndex.load.
            floor = way_rule.candidate_floor(t)
            first = build(f"first CLKs ({name})", indexed[:, :cut], floor)
            if first.table is None or second.table is None:
                return 0
            split = Layout(cut, lack, whole_second, words, way_rule)
            tallies.append(measure(name, [first, second, lacks], asked, t, split))
            del first
    else:
        whole = build("index", indexed, t)
        if whole.table is None:
            return 0
        tallies.append(measure("no rule", [whole], asked, t, None))
    compare(tallies, len(indexed))
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    worst = min(x.recall for x in tallies)
    return 1 if any(x.failed for x in tallies) or worst < 0.999 else 0


@dataclass
class Layout:
    """A fallback layout's searching under one way of scoring (`rule`; NO_RULE: none)."""

    cut: int  # bytes of the first CLK
    lack: np.ndarray  # the indexed rows lacking the fallback's fields
    whole_second: Half  # every row's fallback CLK, scanned (the truth)
    words: np.ndarray  # every indexed row's whole CLK, 64-bit words (the rule's D2)
    rule: Rule

    def first_hits(self, found: dict[int, float], q: np.ndarray, t: float) -> dict[int, float]:
        """First-half hits (at the candidate floor) of rows that have the fields, rescored
        by the rule from the whole CLKs and kept at or above t (`FallbackSnapshot.ruled`)."""
        rows = [r for r in found if not self.lack[r]]
        if not self.rule.active or not rows:
            return {r: found[r] for r in rows}
        held = self.words[rows]
        qs = np.broadcast_to(q, held.shape)
        w = self.cut // 8
        dice = solve.dice
        s = self.rule.score(dice(qs[:, :w], held[:, :w]), dice(qs[:, w:], held[:, w:]))
        return {r: v for r, v in zip(rows, s.tolist(), strict=True) if v >= t}


@dataclass
class Tally:
    """One way's totals over every kind of query."""

    name: str
    pairs: int = 0
    missed: int = 0
    queries: int = 0
    looked: int = 0
    read: int = 0
    scan_s: float = 0.0
    lsh_s: float = 0.0
    failed: bool = False
    lows: list[float] = field(default_factory=list)
    under: int = 0  # pairs >= t whose first CLKs' Dice is under t (the rule's, via the floor)
    under_found: int = 0
    plan: str = ""

    @property
    def recall(self) -> float:
        return 1 - self.missed / max(self.pairs, 1)


def measure(
    name: str, halves: list[Half], asked: dict[str, np.ndarray], t: float, lay: Layout | None
) -> Tally:
    """Every query's pairs by the exhaustive scan and by the look-ups, under one way."""
    tally = Tally(name)
    first = halves[0]
    floor = lay.rule.candidate_floor(t) if lay is not None else t
    assert first.table is not None
    tally.plan = first.table.plan.describe()
    print(f"{name}:")
    for kind, clks in asked.items():
        pairs = missed = 0
        before = [(h.scan_s, h.lsh_s, h.looked, h.read) for h in halves]
        scan_before = lay.whole_second.scan_s if lay is not None else 0.0
        # The exhaustive scans first, then the look-ups: a scan reads the whole index, and
        # a look-up timed right after one would find nothing of its tables in the caches
        # (in the matcher look-ups follow look-ups). The rule's rescoring is timed with
        # each (the same work on the same hits).
        wants: list[dict[int, float]] = []
        gots: list[dict[int, float]] = []
        unders: list[set[int]] = []
        words = [as_words(q[None, :], 8 * len(q))[0] for q in clks]
        extra = [0.0, 0.0]
        for w in words:  # the truth, each original row -> score
            unders.append(set())
            if lay is not None:
                q1, q2 = w[: lay.cut // 8], w[lay.cut // 8 :]
                q_lacks = bool(fallback.lacking(q1[None, :], q2[None, :])[0])
                keep = fallback.on_fallback(q_lacks, lay.lack)
                want = {r: v for r, v in lay.whole_second.scan(q2, t).items() if keep[r]}
                if not q_lacks:
                    found = first.scan(q1, floor)
                    c0 = time.process_time()
                    ruled = lay.first_hits(found, w, t)
                    want.update(ruled)
                    unders[-1] = {r for r in ruled if found[r] < t}
                    extra[0] += time.process_time() - c0
            else:
                want = first.scan(w, t)
            wants.append(want)
        for w in words:  # what the look-ups the matcher makes find
            if lay is not None:
                q1, q2 = w[: lay.cut // 8], w[lay.cut // 8 :]
                q_lacks = bool(fallback.lacking(q1[None, :], q2[None, :])[0])
                got = halves[2].look(q2, t)
                if q_lacks:
                    got.update(halves[1].look(q2, t))
                else:
                    found = first.look(q1, floor)
                    c0 = time.process_time()
                    got.update(lay.first_hits(found, w, t))
                    extra[1] += time.process_time() - c0
            else:
                got = first.look(w, t)
            gots.append(got)
        for under, got in zip(unders, gots, strict=True):
            tally.under += len(under)
            tally.under_found += len(under & got.keys())
        for want, got in zip(wants, gots, strict=True):
            if any(want.get(r) != v for r, v in got.items()):
                print("  a score differs from the exhaustive scan's (or a pair the rule "
                      "does not score that way was found)")  # fmt: skip
                tally.failed = True
            lost = [r for r in want if r not in got]
            tally.lows.extend(want[r] for r in lost)
            pairs += len(want)
            missed += len(lost)
        q = len(clks)
        scan_s = sum(h.scan_s - b[0] for h, b in zip(halves, before, strict=True)) + extra[0]
        if lay is not None:
            scan_s += lay.whole_second.scan_s - scan_before
        lsh_s = sum(h.lsh_s - b[1] for h, b in zip(halves, before, strict=True)) + extra[1]
        looked = sum(h.looked - b[2] for h, b in zip(halves, before, strict=True))
        read = sum(h.read - b[3] for h, b in zip(halves, before, strict=True))
        tally.pairs += pairs
        tally.missed += missed
        tally.queries += q
        tally.looked += looked
        tally.read += read
        tally.scan_s += scan_s
        tally.lsh_s += lsh_s
        recall = f"{1 - missed / pairs:.4%}" if pairs else "n/a"
        print(f"  {kind:>9}: {q} queries, {pairs} pairs >= t, missed {missed} (recall {recall}); "
              f"rows looked at {looked / q:.0f}/query, CLKs read after the sketch screen "
              f"{read / q:.0f}; CPU ms/query scan {scan_s / q * 1e3:.2f}, "
              f"look-up {lsh_s / q * 1e3:.3f} ({scan_s / max(lsh_s, 1e-9):.1f}x)")  # fmt: skip
    if len(halves) > 1:
        for h in halves:
            if h.lookups:
                print(f"  {h.name}: {h.lookups} look-ups, CPU ms/look-up "
                      f"{h.lsh_s / h.lookups * 1e3:.3f} "
                      f"({'LSH' if h.table is not None else 'scanned'})")  # fmt: skip
            h.lookups, h.lsh_s = 0, 0.0  # the parts shared by the ways count afresh
    lows = tally.lows
    said = f"; missed pairs' scores {min(lows):.3f}-{max(lows):.3f}" if lows else ""
    print(f"  all: {tally.pairs} pairs, recall {tally.recall:.4%}{said}")
    return tally


def compare(tallies: list[Tally], n: int) -> None:
    """The ways side by side, and the rule's against no rule as ratios."""
    two = len(tallies) == 2
    print(f"\n| {n:,} rows indexed | " + " | ".join(x.name for x in tallies) + " |"
          + (" rule / no rule |" if two else ""))  # fmt: skip
    print("|---" * (len(tallies) + 1 + two) + "|")
    rows: list[tuple[str, list[str], str]] = []

    def row(label: str, fmt, value=None) -> None:  # type: ignore[no-untyped-def]
        r = ""
        if two and value is not None:
            r = f"{value(tallies[1]) / max(value(tallies[0]), 1e-12):.2f}"
        rows.append((label, [fmt(x) for x in tallies], r))

    row("first halves' plan", lambda x: x.plan)
    row("pairs >= t (exhaustive scan, the way's scoring)", lambda x: f"{x.pairs:,}",
        lambda x: x.pairs)  # fmt: skip
    row("**recall**", lambda x: f"**{x.recall:.5f}** ({x.pairs - x.missed:,} of {x.pairs:,})")
    row("missed pairs' scores", lambda x: (f"{min(x.lows):.3f}-{max(x.lows):.3f}" if x.lows
                                           else "none"))  # fmt: skip
    row(
        "... of them first CLKs' Dice under t (found at the floor)",
        lambda x: f"{x.under_found:,} of {x.under:,}",
    )
    row("rows looked at a query (fewer than all)",
        lambda x: f"{x.looked / x.queries:,.0f} ({n / max(x.looked / x.queries, 1):,.0f}x)",
        lambda x: x.looked)  # fmt: skip
    row("CLKs read after the sketch screen a query (fewer than all)",
        lambda x: f"{x.read / x.queries:,.0f} ({n / max(x.read / x.queries, 1):,.0f}x)",
        lambda x: x.read)  # fmt: skip
    row("CPU ms a query: look-up (exhaustive scan)",
        lambda x: f"{x.lsh_s / x.queries * 1e3:.3f} ({x.scan_s / x.queries * 1e3:.2f})",
        lambda x: x.lsh_s)  # fmt: skip
    row("scan / look-up", lambda x: f"{x.scan_s / max(x.lsh_s, 1e-9):.1f}x",
        lambda x: x.scan_s / max(x.lsh_s, 1e-9))  # fmt: skip
    for label, values, r in rows:
        print(f"| {label} | " + " | ".join(values) + " |" + (f" {r} |" if two else ""))


if __name__ == "__main__":
    raise SystemExit(main())
