"""The real-time look-up alone against three standing indexes, through the matcher's own path.

Three partners' indexes of N realistic records each (benchmarks/realclks.py, the default
schema's whole 2,048-bit CLKs with their fallback CLK; the same rows for the three, as three
separate copies, so they share the caches as three indexes do), built as the matcher builds
them (`FallbackIndex.load` at threshold 0.8: tables planned from the rows), then asked
Q single-record queries through `fallbackindex.search_batch`, the call the matcher's passes
make: half other organisations' records of indexed people, half people no one holds. After
Q/2 unmeasured queries, CPU ms a query (time.process_time) one query a pass and twenty a
pass, two rounds, and the hits found (the same on any correct tree; true: the query's own
person's record).

`--tree PATH` runs another checkout's matcher code on the same data (an A/B against main:
`git worktree add /tmp/bm-main main`, build its extension there with `python setup.py
build_ext --inplace`, then `--tree /tmp/bm-main`; its blindmatch/ must be importable from it).

`--record-level` indexes the record-level CLKs alone (1,024 bits, no fallback CLK:
`realistic_pair(N, N)`, member A's records, seed 0, whose 1,000,000-row encodings are cached
from the batch benchmarks, so nothing is encoded): the part of a query's look-up that
costs (docs/performance.md). Its queries are member B's records of people A holds and
B's people A does not hold. `--cached-pair` indexes the same people's whole CLKs (the
default layout, fallback CLK included; `realistic_pair(N, N, whole=True)`), asked the same way.
`--first N` does that on the first N rows of A of the cached 1,000,000 x 1,000,000 pair
(nothing encoded; B's records of people among them, and B's people A does not hold).

`--schema PATH` scores the indexes by that schema's `blindmatch.rule` over both CLKs, as the
matcher does (default: schemas/person-uk.json, the default, which has one; CLKs are the same
bits either way): `--schema schemas/person-uk-no-rule.json` is one CLK a pair, the A/B of
what the rule costs a query (docs/performance.md). `--recall` also checks every hit of the
queries against the exhaustive scan scored the same way (the rule's S from D1 and D2 for dated
pairs, D2 for dob-less ones, as benchmarks/rtshare.py), after the timings.

    .venv/bin/python benchmarks/rtlookup.py                       # 3 x 1,000,000, 600 queries
    .venv/bin/python benchmarks/rtlookup.py --records 200000 --tree /tmp/bm-main
    .venv/bin/python benchmarks/rtlookup.py --record-level        # cached 1,000,000 rows
    .venv/bin/python benchmarks/rtlookup.py --cached-pair         # the same rows, default layout
    .venv/bin/python benchmarks/rtlookup.py --first 200000 --schema schemas/person-uk-no-rule.json
    .venv/bin/python benchmarks/rtlookup.py --first 1000000 --recall  # hits against the scan
    .venv/bin/python benchmarks/rtlookup.py --cached-pair --records 200000 --generator households

`--generator households`: the people drawn by the held-out generator (benchmarks/households.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000, help="per partner")
    parser.add_argument("--queries", type=int, default=600)
    parser.add_argument("--tree", type=Path, default=ROOT, help="the checkout whose code runs")
    parser.add_argument("--record-level", action="store_true",
                        help="index the record-level CLKs alone (cached at 1,000,000)")  # fmt: skip
    parser.add_argument(
        "--cached-pair", action="store_true", help="the whole CLKs of --record-level's pair"
    )
    parser.add_argument("--first", type=int, default=0,
                        help="index the first N rows of the cached 1M x 1M pair's A")  # fmt: skip
    parser.add_argument("--schema", type=Path, default=ROOT / "schemas" / "person-uk.json",
                        help="whose blindmatch.rule scores the indexes")  # fmt: skip
    parser.add_argument(
        "--recall", action="store_true", help="the hits against the exhaustive scan"
    )
    parser.add_argument("--generator", choices=("messy", "households"), default="messy",
                        help="whose people (benchmarks/realclks.py --generator)")  # fmt: skip
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(args.tree.resolve()))

    import numpy as np

    from benchmarks.realclks import RealPair, layout, realistic_pair
    from blindmatch.matcher.core.fallbackindex import FallbackIndex, load_index, search_batch
    from blindmatch.matcher.core.segment import as_words
    from blindmatch.matcher.domain import NO_RULE, Rule

    raw_rule = json.loads(args.schema.read_text()).get("blindmatch", {}).get("rule")
    rule = Rule(raw_rule["gap"], raw_rule["offset"], raw_rule["reach"]) if raw_rule else NO_RULE
    half = args.queries // 2
    rng = np.random.default_rng(7)
    if args.record_level:
        clk_bits, fallback_bits = 1024, 0
        pair = realistic_pair(args.records, args.records, generator=args.generator)
        unheld = np.setdiff1d(np.arange(len(pair.b)), pair.truth_b)
        others = pair.b[rng.choice(unheld, half, replace=False)]
    elif args.first:
        clk_bits, fallback_bits = layout()
        whole = realistic_pair(1_000_000, 1_000_000, whole=True, generator=args.generator)
        a = np.ascontiguousarray(whole.a[: args.first])
        inside = whole.truth_a < args.first
        pair = RealPair(a, whole.b, whole.truth_a[inside], whole.truth_b[inside])
        unheld = np.setdiff1d(np.arange(len(pair.b)), pair.truth_b)
        others = pair.b[rng.choice(unheld, half, replace=False)]
    elif args.cached_pair:
        clk_bits, fallback_bits = layout()
        pair = realistic_pair(args.records, args.records, whole=True, generator=args.generator)
        unheld = np.setdiff1d(np.arange(len(pair.b)), pair.truth_b)
        others = pair.b[rng.choice(unheld, half, replace=False)]
    else:
        clk_bits, fallback_bits = layout()
        pair = realistic_pair(args.records, 20_000, seed=1, overlap=0.5, whole=True,
                              generator=args.generator)  # fmt: skip
        others = realistic_pair(max(half, 4_000), 0, seed=1001, overlap=0.0, whole=True,
                                generator=args.generator).a  # fmt: skip
    refs = [f"r{i}" for i in range(len(pair.a))]
    t0 = time.process_time()
    indexes = {
        m: load_index(clk_bits, fallback_bits, refs, as_words(pair.a, clk_bits), 0.8, rule=rule)
        for m in ("north", "south", "east")
    }
    snaps = {m: index.snapshot for m, index in indexes.items()}
    built = time.process_time() - t0
    north = indexes["north"]
    first = north.first if isinstance(north, FallbackIndex) else north
    main_segment = first.snapshot.main
    table = main_segment.lsh
    print(f"{args.tree}: 3 x {len(pair.a):,} realistic records ({clk_bits}-bit CLKs, a "
          f"{fallback_bits}-bit fallback CLK), built in {built:.0f} s CPU; scored "
          f"{rule.describe(0.8)} ({args.schema.name})", flush=True)  # fmt: skip
    if table is not None:
        print(f"  record-level tables: {table.plan.describe()}; {table.nbytes / 2**20:,.0f} MiB "
              f"({table.nbytes / len(main_segment):.0f} bytes a row) an index")  # fmt: skip
    picked = rng.choice(len(pair.truth_b), half, replace=False)
    shared = pair.b[pair.truth_b[picked]]
    # The indexed record of each query's own person (the first half's; none for the rest).
    own = [f"r{i}" for i in pair.truth_a[picked].tolist()] + [""] * half
    queries = as_words(np.concatenate([shared, others[:half]]), clk_bits)
    north_only = {"north": snaps["north"]}
    for q in queries[:half]:  # unmeasured
        search_batch([(snaps, q[None, :], 0.8)])
    for round_ in range(2):
        t0 = time.process_time()
        found = [search_batch([(snaps, q[None, :], 0.8)])[0][0] for q in queries]
        one = (time.process_time() - t0) * 1000 / len(queries)
        t0 = time.process_time()
        for s in range(0, len(queries), 20):
            search_batch([(snaps, q[None, :], 0.8) for q in queries[s : s + 20]])
        twenty = (time.process_time() - t0) * 1000 / len(queries)
        hits = sum(len(h) for answer in found for h in answer.values())
        pairs = zip(found, own, strict=True)
        true = sum(r == o for answer, o in pairs for h in answer.values() for r, _ in h)
        t0 = time.process_time()
        for q in queries:
            search_batch([(north_only, q[None, :], 0.8)])
        alone = (time.process_time() - t0) * 1000 / len(queries)
        print(f"round {round_ + 1}: CPU ms a query {one:.2f} one a pass, {twenty:.2f} twenty a "
              f"pass; {hits} hits ({true} true); one index alone {alone:.2f} one a pass",
              flush=True)  # fmt: skip
    if args.recall:
        print(f"  {recall(pair.a, clk_bits, fallback_bits, refs, queries, snaps, rule)}")
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    return 0


def recall(
    rows: Any,
    clk_bits: int,
    fallback_bits: int,
    refs: list[str],
    queries: Any,
    snaps: Mapping[str, Any],
    rule: Any,
) -> str:
    """The share of the exhaustive scan's pairs the indexes' look-ups find, with the same
    scores: every row's fallback CLK kept by the fallback rule, and the first CLKs of the
    dated rows down to the rule's candidate floor, scored by the rule (as rtshare.py)."""
    import numpy as np

    from blindmatch.matcher.core import fallback
    from blindmatch.matcher.core.fallbackindex import search_batch
    from blindmatch.matcher.core.segment import Segment, as_words
    from blindmatch.matcher.core.solve import dice as fallback_dice

    if not fallback_bits:
        return "recall: no fallback CLK, not checked"
    words = as_words(rows, clk_bits)
    cut = (clk_bits - fallback_bits) // 64
    lack = fallback.lacking(words[:, :cut], words[:, cut:])
    firsts = Segment.build(np.ascontiguousarray(words[:, :cut]), refs)
    seconds = Segment.build(np.ascontiguousarray(words[:, cut:]), refs)
    at = {r: i for i, r in enumerate(refs)}

    def scanned(seg: Segment, q: Any, at_least: float) -> list[tuple[str, float]]:
        found, sims = seg.search(q, at_least)
        return [(seg.refs[r], v) for r, v in zip(found.tolist(), sims.tolist(), strict=True)]

    pairs = missed = wrong = 0
    for q in queries:
        h1, h2 = q[:cut], q[cut:]
        q_lacks = bool(fallback.lacking(h1[None, :], h2[None, :])[0])
        keep = fallback.on_fallback(q_lacks, lack)
        want = {r: v for r, v in scanned(seconds, h2, 0.8) if keep[at[r]]}
        if not q_lacks:
            near = scanned(firsts, h1, rule.candidate_floor(0.8))
            at_rows = np.array([at[r] for r, _ in near], dtype=np.int64)
            if len(at_rows) and rule.active:  # S from D1 and D2, as the batch runs score it
                d2 = fallback_dice(
                    np.broadcast_to(h2, (len(at_rows), len(h2))), words[at_rows, cut:]
                )
                scores = rule.score(np.array([v for _, v in near]), d2).tolist()
                near = [(r, v) for (r, _), v in zip(near, scores, strict=True) if v >= 0.8]
            want.update({r: v for r, v in near if not lack[at[r]]})
        answer = search_batch([(snaps, q[None, :], 0.8)])[0][0]
        for m in snaps:
            mine = dict(answer[m])
            pairs += len(want)
            missed += len(set(want) - set(mine))
            wrong += len(set(mine) - set(want))
            wrong += sum(abs(mine[r] - v) >= 1e-9 for r, v in want.items() if r in mine)
    return (
        f"recall against the exhaustive scan, {len(snaps)} indexes: {pairs - missed:,} of "
        f"{pairs:,} pairs found ({1 - missed / max(pairs, 1):.5f}); {wrong} hits not in it "
        f"or scored otherwise"
    )


if __name__ == "__main__":
    raise SystemExit(main())
