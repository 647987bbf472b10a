"""Where three partners' look-ups go, and what sharing them across partners could save.

Issue 19 item 4 asks for <= 0.5 ms CPU a query against 3 x 1,000,000 realistic records;
one 1,000,000-row index costs about 0.4 ms, three about 1.4-2.0 (docs/performance.md).
This profiles the three (the same cached realistic rows as `rtlookup.py --cached-pair`,
member A's whole CLKs as three separate indexes, 600 queries: half B's records of people A
holds, half B's people A does not hold) and measures, interleaved over several rounds, CPU
time a query:

- `path 1` / `path 3`: `fallbackindex.search_batch` (the matcher's pass) over one and over
  all three indexes, one query a pass;
- `native 1` / `native 3`: the native look-up alone (`lsh_query_batch`) of the first halves
  (the record-level CLKs: the LSH part), one index's tables and all three in one job;
- `native 3 x 1`: the three first halves as three separate jobs of one call;

so `path 3 - native 3` is the Python a pass spends per query, and `native 3 / native 1`
says whether three look-ups cost more than three times one.

`--union` then asks what one structure over several partners' rows would cost: LSH work
grows about n^0.47 (rtplan's model), so tables over 2,000,000 distinct rows (A's and B's
record-level CLKs, the queries left out) planned for their size are timed against A's
1,000,000-row tables on the same queries, with the plans and rtplan's modelled cost at
1, 2 and 3 million rows.

`--rule` builds the indexes under the default schema's rule (`blindmatch.rule`: the first
halves planned for its candidate floor, 0.79 at 0.8, and their hits rescored).
`--perf SECONDS` records `perf` on the `native 3` loop (needs perf; user space only);
`--pyprofile` prints cProfile's view of a `path 3` run. `--base-kernel PATH` loads another
build of the extension (a .so, say main's) and times `path 3` and `native 3` with it too,
interleaved, after checking that it gives the same hits.

    nice .venv/bin/python benchmarks/rtshare.py                  # 3 x 1,000,000, cached
    nice .venv/bin/python benchmarks/rtshare.py --union --perf 20
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000, help="per partner")
    parser.add_argument("--seed", type=int, default=0, help="of the cached pair")
    parser.add_argument("--queries", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--union", action="store_true", help="time a 2M-row union's tables")
    parser.add_argument("--perf", type=float, default=0.0, help="perf the native 3 loop")
    parser.add_argument("--rule", action="store_true", help="the default schema's rule")
    parser.add_argument("--pyprofile", action="store_true", help="cProfile a path 3 run")
    parser.add_argument(
        "--base-kernel", type=Path, help="another build of _kernel (a .so) to time beside ours"
    )
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from blindmatch.matcher.core.lshindex import MIN_ROWS

    if args.records < MIN_ROWS:  # a smaller index is scanned: it has no LSH tables
        parser.error(f"--records: at least {MIN_ROWS:,} (a smaller index has no LSH tables)")

    import numpy as np

    from benchmarks.realclks import layout, realistic_pair
    from blindmatch.matcher.core import fallback, kernel, rtplan
    from blindmatch.matcher.core.fallbackindex import (
        AnySnapshot,
        FallbackIndex,
        load_index,
        search_batch,
    )
    from blindmatch.matcher.core.segment import Segment, as_words
    from blindmatch.matcher.core.solve import dice as fallback_dice
    from blindmatch.matcher.domain import NO_RULE, Rule

    assert kernel.NATIVE, "the native kernel is needed"
    k = kernel._kernel
    clk_bits, fallback_bits = layout()
    cut = (clk_bits - fallback_bits) // 64
    pair = realistic_pair(args.records, args.records, args.seed, whole=True)
    rng = np.random.default_rng(7)
    half = args.queries // 2
    unheld = np.setdiff1d(np.arange(len(pair.b)), pair.truth_b)
    picked_b = np.concatenate(
        [
            pair.truth_b[rng.choice(len(pair.truth_b), half, replace=False)],
            rng.choice(unheld, half, replace=False),
        ]
    )
    queries = as_words(pair.b[picked_b], clk_bits)
    refs = [f"r{i}" for i in range(len(pair.a))]
    # The default schema's rule (`blindmatch.rule`) with --rule: the first halves are
    # planned and searched for its candidate floor, and their hits rescored by it.
    rule = Rule(0.25, 0.03, 0.01) if args.rule else NO_RULE
    floor = rule.candidate_floor(0.8)  # what the first halves are searched for
    t0 = time.process_time()
    indexes = {
        m: load_index(clk_bits, fallback_bits, refs, as_words(pair.a, clk_bits), 0.8, rule=rule)
        for m in ("north", "south", "east")
    }
    built = time.process_time() - t0
    print(f"3 x {args.records:,} realistic records ({rule.describe(0.8)}) built in "
          f"{built:.0f} s CPU", flush=True)  # fmt: skip
    snaps = {m: x.snapshot for m, x in indexes.items()}
    firsts = []
    for x in indexes.values():
        assert isinstance(x, FallbackIndex)
        table = x.first.snapshot.main.lsh
        assert table is not None and table.prepared is not None
        firsts.append(table)
    print(f"  record-level tables: {firsts[0].plan.describe()}")
    q1 = [np.ascontiguousarray(q[:cut]).tobytes() for q in queries]
    one_snap = {"north": snaps["north"]}

    def path(which: Mapping[str, AnySnapshot]) -> float:
        t = time.process_time()
        for q in queries:
            search_batch([(which, q[None, :], 0.8)])
        return time.process_time() - t

    def native(caps: tuple[object, ...], apart: bool = False) -> float:
        t = time.process_time()
        for q in q1:
            if apart:
                k.lsh_query_batch([((c,), q, floor, (-1,)) for c in caps])
            else:
                k.lsh_query_batch([(caps, q, floor, (-1,) * len(caps))])
        return time.process_time() - t

    caps3 = tuple(t.prepared for t in firsts)
    timers = {
        "path 1": lambda: path(one_snap),
        "path 3": lambda: path(snaps),
        "native 1": lambda: native(caps3[:1]),
        "native 3": lambda: native(caps3),
        "native 3 x 1": lambda: native(caps3, apart=True),
    }
    ours = k
    if args.base_kernel is not None:
        import importlib.util

        spec = importlib.util.spec_from_file_location("_kernel", args.base_kernel)
        assert spec is not None and spec.loader is not None
        base = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(base)

        def with_base(timer: Callable[[], float]) -> Callable[[], float]:
            def run() -> float:
                nonlocal k
                kernel._kernel, k = base, base
                try:
                    return timer()
                finally:
                    kernel._kernel, k = ours, ours

            return run

        timers["path 3 (base)"] = with_base(timers["path 3"])
        timers["native 3 (base)"] = with_base(timers["native 3"])
        answers = [search_batch([(snaps, q[None, :], 0.8)]) for q in queries]
        kernel._kernel = base
        same = answers == [search_batch([(snaps, q[None, :], 0.8)]) for q in queries]
        kernel._kernel = ours
        print(f"  hits of all {len(queries)} queries in the 3 indexes the same with the base "
              f"kernel: {same}")  # fmt: skip
    # Recall against the exhaustive scan (the indexes hold the same rows, so one truth):
    # every row's fallback CLK scanned and kept by the rule, and the first CLKs of the
    # rows with the fields when the query has them (as benchmarks/rtrecall.py).
    words = as_words(pair.a, clk_bits)
    lack = fallback.lacking(words[:, :cut], words[:, cut:])
    firsts_all = Segment.build(np.ascontiguousarray(words[:, :cut]), refs)
    seconds_all = Segment.build(np.ascontiguousarray(words[:, cut:]), refs)
    at = {r: i for i, r in enumerate(refs)}

    def scanned(seg: Segment, q: np.ndarray, at_least: float = 0.8) -> list[tuple[str, float]]:
        rows, sims = seg.search(q, at_least)
        return [(seg.refs[r], v) for r, v in zip(rows.tolist(), sims.tolist(), strict=True)]

    pairs = missed = 0
    for q in queries:
        h1, h2 = q[:cut], q[cut:]
        q_lacks = bool(fallback.lacking(h1[None, :], h2[None, :])[0])
        keep = fallback.on_fallback(q_lacks, lack)
        want = {r: v for r, v in scanned(seconds_all, h2) if keep[at[r]]}
        if not q_lacks:
            near = [(r, v) for r, v in scanned(firsts_all, h1, rule.candidate_floor(0.8))]
            rows = np.array([at[r] for r, _ in near], dtype=np.int64)
            if len(rows) and rule.active:  # S from D1 and D2, as the batch runs score it
                d2 = fallback_dice(np.broadcast_to(h2, (len(rows), len(h2))), words[rows, cut:])
                scores = rule.score(np.array([v for _, v in near]), d2).tolist()
                near = [(r, v) for (r, _), v in zip(near, scores, strict=True) if v >= 0.8]
            want.update({r: v for r, v in near if not lack[at[r]]})
        answer = search_batch([(snaps, q[None, :], 0.8)])[0][0]
        for m in snaps:
            mine = dict(answer[m])
            pairs += len(want)
            missed += len(set(want) - set(mine))
            assert all(abs(mine[r] - v) < 1e-9 for r, v in want.items() if r in mine)
    print(f"  recall against the exhaustive scan, 3 indexes: {pairs - missed:,} of {pairs:,} "
          f"pairs >= 0.8 found ({1 - missed / max(pairs, 1):.5f})", flush=True)  # fmt: skip
    del firsts_all, seconds_all, words
    for timer in timers.values():  # unmeasured: warm
        timer()
    looked = [k.lsh_query_batch([(caps3[:1], q, floor, (-1,))])[0][0] for q in q1]
    print(f"  a look-up of one index's first half: {np.mean([x[2] for x in looked]):,.0f} "
          f"row-list entries, {np.mean([x[3] for x in looked]):,.0f} rows read")  # fmt: skip
    times: dict[str, list[float]] = {name: [] for name in timers}
    for _ in range(args.rounds):
        for name, timer in timers.items():
            times[name].append(timer() * 1000 / len(queries))
    print(f"CPU ms a query, {args.rounds} rounds interleaved (min-max), load average "
          f"{os.getloadavg()[0]:.1f}:")  # fmt: skip
    for name, spent in times.items():
        print(f"  {name:13s} {min(spent):.3f}-{max(spent):.3f}")
    med = {name: float(np.median(spent)) for name, spent in times.items()}
    print(f"  native 3 / native 1 = {med['native 3'] / med['native 1']:.2f}, "
          f"path 3 / path 1 = {med['path 3'] / med['path 1']:.2f}, "
          f"path 3 - native 3 = {med['path 3'] - med['native 3']:.3f} ms (medians)")  # fmt: skip
    print(f"  keys shared (one job) / apart (three jobs): "
          f"{med['native 3'] / med['native 3 x 1']:.3f}")  # fmt: skip
    if "path 3 (base)" in med:
        native_ratio = med["native 3"] / med["native 3 (base)"]
        print(f"  this kernel / the base kernel: native 3 {native_ratio:.3f}, "
              f"path 3 {med['path 3'] / med['path 3 (base)']:.3f}")  # fmt: skip

    # The native call's share of `path 3` (its look-ups and scans), the rest Python's.
    class Timed:
        def __init__(self) -> None:
            self.spent = 0.0

        def __getattr__(self, name: str) -> object:
            return getattr(ours, name)

        def lsh_query_batch(self, items: object) -> object:
            t = time.process_time()
            try:
                return ours.lsh_query_batch(items)
            finally:
                self.spent += time.process_time() - t

    timed = Timed()
    kernel._kernel = timed  # type: ignore[assignment]
    try:
        whole = path(snaps)
    finally:
        kernel._kernel = ours
    print(f"  path 3: {whole * 1000 / len(queries):.3f} ms a query, of it the native call "
          f"{timed.spent * 1000 / len(queries):.3f} (the first halves' look-ups and the "
          f"scans of the rows lacking the fields), Python "
          f"{(whole - timed.spent) * 1000 / len(queries):.3f}")  # fmt: skip
    if args.pyprofile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.enable()
        path(snaps)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(12)

    if args.perf > 0:
        out = Path(os.environ.get("PERF_OUT", "/tmp/rtshare.perf"))
        rec = subprocess.Popen(
            ["perf", "record", "-F", "1999", "-g", "-o", str(out), "-p", str(os.getpid())],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(1.0)
        end = time.monotonic() + args.perf
        while time.monotonic() < end:
            native(caps3)
        rec.send_signal(signal.SIGINT)
        rec.wait()
        print(f"perf data: {out}")

    if args.union:
        del indexes, snaps, firsts, caps3, timers
        keep_b = np.ones(len(pair.b), dtype=bool)
        keep_b[picked_b] = False
        a1 = as_words(pair.a, clk_bits)[:, :cut].copy()
        b1 = as_words(pair.b[keep_b], clk_bits)[:, :cut].copy()
        both = np.concatenate([a1, b1])
        for n, words in ((len(a1), a1), (len(both), both)):
            t0 = time.process_time()
            seg = Segment.build(words, [f"u{i}" for i in range(n)], threshold=floor)
            built = time.process_time() - t0
            assert seg.lsh is not None and seg.lsh.prepared is not None
            caps = (seg.lsh.prepared,)
            native(caps)
            got = [native(caps) * 1000 / len(queries) for _ in range(args.rounds)]
            looked = [k.lsh_query_batch([(caps, q, floor, (-1,))])[0][0] for q in q1]
            print(f"union of {n:,} rows (built {built:.0f} s CPU): {seg.lsh.plan.describe()}; "
                  f"{min(got):.3f}-{max(got):.3f} ms a look-up; "
                  f"{np.mean([x[2] for x in looked]):,.0f} entries, "
                  f"{np.mean([x[3] for x in looked]):,.0f} rows read, "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
            del seg, caps
        pcs = np.bitwise_count(a1).sum(axis=1, dtype=np.int32)
        for n in (1_000_000, 2_000_000, 3_000_000):
            p = rtplan.plan(a1[:200_000], pcs[:200_000], floor, size=n).plan
            if p is not None:
                print(f"  rtplan at {n:,} rows: {p.describe()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
