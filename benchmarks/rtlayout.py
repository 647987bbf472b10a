"""What the record-level half's look-up reads, and two layouts that would read less.

On realistic encodings a look-up's cost is its random cache lines (docs/performance.md,
*Real-time look-ups on realistic encodings*): nearly every candidate row's 32-byte sketch
is a line of its own from memory. This script measures, on one index of N realistic
records (benchmarks/realclks.py, the default schema's record-level CLK, threshold 0.8,
tables planned by rtplan.py as the matcher plans them), for Q queries (half other
organisations' records of indexed people, half people no one holds, as rtlookup.py asks):

- **lines**: the candidates a query looks at, the distinct sketch lines they fall on, and
  how many runs of adjacent lines those make, in the matcher's row order (by popcount)
  and in orders meant to put similar rows side by side (by two bands' keys, by the sketch,
  by the leading principal components of the bits). If an order put a query's candidates
  on far fewer lines, or in long runs, the sketch reads would be cheaper;
- **inline**: rtplan's own cost model (probes and rows looked at, from the index's
  measured statistics) for the current layout (4-byte row ids, sketches apart: a row
  looked at is one random line) and for row lists that carry each row's sketch inline
  (20-byte entries with a 128-bit sketch, 32 or 36 with a 256-bit one: a row looked at is
  then read in sequence, at `--stream-gbs`), within 800, 1,600 and 3,200 bytes of tables
  a row. Model time only: a layout that does not win in the model is not worth building.

    .venv/bin/python benchmarks/rtlayout.py                     # 1,000,000 rows, 80 queries
    .venv/bin/python benchmarks/rtlayout.py --records 200000 --only inline
    .venv/bin/python benchmarks/rtlayout.py --record-level --only lines   # cached 1,000,000

Since collision counting (rtplan's `hits`) a query's candidates are the rows under at
least that many of its probed keys, and `lines` also counts the row-list entries read and
the lines of offsets and row lists the probes touch.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.realclks import layout, realistic_pair
from blindmatch.matcher.core import rtplan
from blindmatch.matcher.core.lshindex import MIN_ROWS, TablePlan, band_keys, probes_per_band
from blindmatch.matcher.core.segment import Segment, as_words, popcounts_of

I64 = npt.NDArray[np.int64]
THRESHOLD = 0.8


def candidates(
    seg: Segment, query: npt.NDArray[np.uint64], tally: dict[str, int] | None = None
) -> I64:
    """The distinct rows a look-up of `query` collects (before the sketch screen): under at
    least `plan.hits` of its probed keys. `tally` adds up the row-list entries read and the
    distinct lines of offsets and of row lists the probes read."""
    table = seg.lsh
    assert table is not None
    plan = table.plan
    r = plan.bits_per_band
    flips = [0]
    if plan.radius >= 1:
        flips += [1 << i for i in range(r)]
    if plan.radius >= 2:
        flips += [(1 << i) | (1 << j) for i in range(r) for j in range(i + 1, r)]
    keys0 = band_keys(query[None, :], plan)[:, 0].astype(np.int64)
    probe = (keys0[:, None] ^ np.array(flips, dtype=np.int64)[None, :]).ravel()
    band = np.repeat(np.arange(plan.bands), len(flips))
    lo = table.offsets[band, probe].astype(np.int64)
    hi = table.offsets[band, probe + 1].astype(np.int64)
    parts = [table.rows[b, s:e] for b, s, e in zip(band, lo, hi, strict=True) if e > s]
    if tally is not None:
        n, keys = table.rows.shape[1], table.offsets.shape[1]
        tally["entries"] = tally.get("entries", 0) + int((hi - lo).sum())
        tally["offset lines"] = tally.get("offset lines", 0) + len(
            np.unique((band * keys + probe) * 4 // 64)
        )
        spans = [np.arange((b * n + s) * 4 // 64, (b * n + e - 1) * 4 // 64 + 1)
                 for b, s, e in zip(band, lo, hi, strict=True) if e > s]  # fmt: skip
        tally["row-list lines"] = tally.get("row-list lines", 0) + (
            len(np.unique(np.concatenate(spans))) if spans else 0
        )
    if not parts:
        return np.zeros(0, np.int64)
    rows, count = np.unique(np.concatenate(parts), return_counts=True)
    return rows[count >= plan.hits].astype(np.int64)


def lines(seg: Segment, queries: npt.NDArray[np.uint64], pca_sample: int) -> None:
    tally: dict[str, int] = {}
    found = [candidates(seg, q, tally) for q in queries]
    n = len(seg)
    print(f"candidates a query (distinct rows looked at): {np.mean([len(c) for c in found]):,.0f}")
    print("  " + ", ".join(f"{k} {v / len(queries):,.0f}" for k, v in tally.items()) + " a query")

    def report(name: str, rank: I64) -> None:
        per_line, runs = [], []
        for c in found:
            at = np.unique(np.sort(rank[c]) // 2)  # two 32-byte sketches a 64-byte line
            per_line.append(len(at))
            runs.append(1 + int((np.diff(at) > 1).sum()))
        print(f"  {name}: sketch lines {np.mean(per_line):,.0f}, runs of adjacent lines "
              f"{np.mean(runs):,.0f}")  # fmt: skip

    def ranked(order: I64) -> I64:
        rank = np.empty(n, np.int64)
        rank[order] = np.arange(n)
        return rank

    report("the matcher's order (by popcount)", np.arange(n, dtype=np.int64))
    assert seg.lsh is not None
    two = TablePlan(seg.lsh.plan.positions[:2], 0, 0.0, 0.0)
    keys = band_keys(seg.words, two)
    report("by the first two bands' keys", ranked(np.lexsort((keys[1], keys[0]))))
    sk = seg.lsh.sketches
    report(
        "by the sketch (lexicographic)",
        ranked(np.lexsort(tuple(sk[:, j] for j in reversed(range(sk.shape[1]))))),
    )
    rng = np.random.default_rng(0)
    bits = np.unpackbits(
        seg.words[rng.integers(0, n, pca_sample)].view(np.uint8), axis=1, bitorder="little"
    ).astype(np.float32)
    mean = bits.mean(axis=0)
    _, _, vt = np.linalg.svd(bits - mean, full_matrices=False)
    proj = np.zeros((n, 4), np.float32)
    for lo in range(0, n, 100_000):
        block = np.unpackbits(
            seg.words[lo : lo + 100_000].view(np.uint8), axis=1, bitorder="little"
        )
        proj[lo : lo + 100_000] = (block.astype(np.float32) - mean) @ vt[:4].T
    report("by the first principal component", ranked(np.argsort(proj[:, 0]).astype(np.int64)))
    for d in (2, 4):
        bins = [
            np.digitize(proj[:, j], np.quantile(proj[:, j], np.linspace(0, 1, 65)[1:-1]))
            for j in range(d)
        ]
        report(f"by {d} principal components (64 bins each)", ranked(np.lexsort(bins[::-1])))


def inline(words: npt.NDArray[np.uint64], n: int, line_ns: float, stream_gbs: float) -> None:
    stats = rtplan.measure(words, popcounts_of(words))
    h = float(stats.design_differ(THRESHOLD)[stats.pool].mean())
    print(f"a pair at the threshold differs on {h:.3f} of the informative bits; a probe "
          f"costs two random lines, a random line {line_ns:g} ns")  # fmt: skip

    def best(entry: int, budget: int, row_ns: float) -> list[tuple[float, int, int, int, float]]:
        out = []
        for r in range(8, 23):
            for radius in (0, 1, 2):
                hit = float(rtplan.within(r, radius, h))
                bands = math.ceil(math.log(1 - rtplan.RECALL) / math.log1p(-hit))
                if bands > 400 or bands * (n * entry + (2**r + 1) * 4) > budget * n:
                    continue
                rows = bands * n * float(rtplan.within(r, radius, stats.pool_differ).mean())
                probes = bands * probes_per_band(r, radius)
                out.append((probes * 2 * line_ns + rows * row_ns, r, radius, bands, rows))
        return sorted(out)[:2]

    layouts = [("row ids, sketches apart (now)", 4, line_ns)] + [
        (f"{e}-byte entries, sketch inline", e, e / stream_gbs) for e in (20, 32, 36)
    ]
    for name, entry, row_ns in layouts:
        for budget in (800, 1_600, 3_200):
            for cost, r, radius, bands, rows in best(entry, budget, row_ns):
                print(f"  {name}, {budget:,} bytes a row: {bands} bands x {r} bits, radius "
                      f"{radius}: {rows:,.0f} rows looked at, model {cost / 1000:,.0f} us a "
                      "look-up")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=80)
    parser.add_argument("--only", choices=("lines", "inline"))
    parser.add_argument("--line-ns", type=float, default=12.4, help="a random line's cost")
    parser.add_argument("--stream-gbs", type=float, default=8.0, help="sequential read, GB/s")
    parser.add_argument("--pca-sample", type=int, default=5_000)
    parser.add_argument(
        "--record-level", action="store_true", help="realistic_pair(N, N)'s record-level CLKs"
    )
    args = parser.parse_args()
    if args.records < MIN_ROWS:  # a smaller index is scanned: it has no LSH tables
        parser.error(f"--records: at least {MIN_ROWS:,} (a smaller index has no LSH tables)")
    clk_bits, fallback_bits = layout()
    cut = (clk_bits - fallback_bits) // 64
    if args.record_level:
        pair = realistic_pair(args.records, args.records)
        clk_bits = cut * 64
    else:
        pair = realistic_pair(args.records, 20_000, seed=1, overlap=0.5, whole=True)
    words = np.ascontiguousarray(as_words(pair.a, clk_bits)[:, :cut])
    if args.only != "inline":
        t0 = time.process_time()
        seg = Segment.build(words, [str(i) for i in range(len(words))], threshold=THRESHOLD)
        assert seg.lsh is not None
        print(f"{len(seg):,} rows: {seg.lsh.plan.describe()} ({time.process_time() - t0:.0f} s)")
        half = args.queries // 2
        rng = np.random.default_rng(7)
        if args.record_level:
            unheld = np.setdiff1d(np.arange(len(pair.b)), pair.truth_b)
            others = pair.b[rng.choice(unheld, half, replace=False)]
        else:
            others = realistic_pair(max(half, 4_000), 0, seed=1001, overlap=0.0, whole=True).a
        shared = pair.b[pair.truth_b[rng.choice(len(pair.truth_b), half, replace=False)]]
        queries = as_words(np.concatenate([shared, others[:half]]), clk_bits)[:, :cut]
        lines(seg, np.ascontiguousarray(queries), args.pca_sample)
        del seg
    if args.only != "lines":
        inline(words, args.records, args.line_ns, args.stream_gbs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
