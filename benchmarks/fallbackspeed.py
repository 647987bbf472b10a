"""A batch run's fallback pass, exhaustive against LSH planned on the fallback CLKs, side by
side: time, pairs compared and recall against the exhaustive pass.

    .venv/bin/python benchmarks/fallbackspeed.py [--sizes 200000,1000000] [--lacking 0.1,0.1]
        [--workers 2] [--pair 1000000] [--plan-for 10000000] [--run-b 171600]

On realistic encodings as uploaded (`benchmarks/realclks.py`: real clkhash output of
`messy.py` people under the default schema, a record-level CLK followed by its fallback CLK
without the date of birth), read from the cached pair of `--pair` records a side (encoded
on first use; n rows of each, n from `--sizes`). The pass (matcher/core/fallbackpass.py)
compares the fallback CLKs of (A's records lacking a date of birth) x (all of B) and (A's
other records) x (B's records lacking one). These exports lack a date in 1-2% of records;
`--lacking A,B` sets the share of each member that lacks one (retail-bcrp's was 35% in
docs/performance.md's CLI walk, docs/scale.md's model takes 10%): the records a member lacks
it in are its natural ones and then random others. A record's fallback CLK leaves the date
out, so it is the same whether or not the record has one: marking a record lacking gives
exactly the pairs the pass finds when that record has no date.

For each size, both passes on the same rows (`fallbackpass.find`, `--workers` threads):
wall and CPU seconds (CPU of the whole process, both threads; the steadier figure on a
shared machine), pairs compared, pairs found, and the LSH pass's recall of the exhaustive
pass's pairs (each with the same score), with the LSH plans each block got. With
`--plan-for N`, also the plans (not run) for two members of N records lacking a date in the
same shares, from the statistics of the first size's rows (`blocking.plan(sizes=...)`), with
the planner's estimated CPU seconds against every pair's. With `--run-b N`, instead, the whole
batch run (`runs.match`, LSH blocking, the default's rule) of the first size's rows of A
against N rows of B, its fallback pass exhaustive (as before) and then as built, with the
links compared: a record marked lacking there gets its fallback CLK's bits as its first CLK
too, which is what makes the matcher's popcount test (`fallback.lacking`) call it lacking;
every pair with it is scored on the fallback CLKs either way. No timing is asserted anywhere;
the figures go to docs/performance.md and docs/scale.md by hand.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.realclks import cache_dir, layout, realistic_pair
from blindmatch.matcher.core import blocking, fallbackpass
from blindmatch.matcher.core.fallback import Split

THRESHOLD = 0.8


def rows(pair: int, n: int) -> list[npt.NDArray[np.uint8]]:
    """The first n whole CLKs of each member of the cached `pair` x `pair` (encoded if
    missing)."""
    folder = cache_dir(pair, pair, 0, 0.1)
    if not (folder / "a.npy").exists():
        realistic_pair(pair, pair, whole=True)
    return [np.ascontiguousarray(np.load(folder / f"{x}.npy", mmap_mode="r")[:n]) for x in "ab"]


def with_lacking(split: Split, shares: list[float], seed: int = 0) -> Split:
    """`split` with at least `shares[k]` of member k's records lacking a date of birth: its
    natural ones, then random others."""
    rng = np.random.default_rng(seed)
    lacking = []
    for lack, share in zip(split.lacking, shares, strict=True):
        lack = lack.copy()
        want = round(share * len(lack)) - int(lack.sum())
        if want > 0:
            lack[rng.choice(np.flatnonzero(~lack), want, replace=False)] = True
        lacking.append(lack)
    return Split(split.first, split.second, lacking)


def timed(split: Split, workers: int, lsh: bool) -> tuple[float, float, fallbackpass.FallbackPass]:
    wall, cpu = time.perf_counter(), time.process_time()
    found = fallbackpass.find(split.second, split.lacking, THRESHOLD, workers, lsh=lsh)
    return time.perf_counter() - wall, time.process_time() - cpu, found


def pairs(found: fallbackpass.FallbackPass) -> dict[tuple[int, int, int, int], float]:
    return {
        (int(d0), int(d1), int(r0), int(r1)): float(s)
        for p in found.parts
        for s, d0, d1, r0, r1 in zip(p.sims, p.dset0, p.dset1, p.rec0, p.rec1, strict=True)
    }


def compare(n: int, args: argparse.Namespace, shares: list[float]) -> None:
    clk_bits, fallback_bits = layout()
    split = with_lacking(Split.of(rows(args.pair, n), fallback_bits), shares)
    lacks = [int(x.sum()) for x in split.lacking]
    print(f"\n{n:,} x {n:,} (realistic, whole CLKs of {clk_bits} bits, fallback {fallback_bits});"
          f" lacking a date of birth: {lacks[0]:,} of A, {lacks[1]:,} of B; threshold "
          f"{THRESHOLD}, {args.workers} threads", flush=True)  # fmt: skip
    ex_wall, ex_cpu, ex = timed(split, args.workers, lsh=False)
    print(f"  exhaustive done: {ex_cpu:.1f} CPU s", flush=True)
    lsh_wall, lsh_cpu, lsh = timed(split, args.workers, lsh=True)
    for line in lsh.notes:
        print(f"  plan: {line}")
    want, got = pairs(ex), pairs(lsh)
    found = [k for k in want if k in got]
    same = all(got[k] == want[k] for k in found)
    extra = len(set(got) - set(want))
    recall = len(found) / len(want) if want else 1.0
    missed = sorted(want[k] for k in want if k not in got)
    rows_ = [
        ("CPU s (wall s)", f"{ex_cpu:.1f} ({ex_wall:.1f})", f"{lsh_cpu:.1f} ({lsh_wall:.1f})",
         f"{ex_cpu / lsh_cpu:.1f}x less CPU" if lsh_cpu else ""),
        ("pairs compared", f"{ex.comparisons:.3g}", f"{lsh.comparisons:.3g}",
         f"{ex.comparisons / max(1, lsh.comparisons):.1f}x fewer"),
        ("pairs found >= threshold", f"{len(want):,}", f"{len(got):,}",
         f"recall {recall:.5f} ({len(found):,} of {len(want):,})"),
    ]  # fmt: skip
    print(f"  {'':<26}{'exhaustive':>18}{'LSH':>18}  ratio")
    for name, a, b, ratio in rows_:
        print(f"  {name:<26}{a:>18}{b:>18}  {ratio}")
    print(f"  scores identical: {same}; pairs LSH found that exhaustive did not: {extra}"
          + (f"; missed at Dice {missed[0]:.3f}-{missed[-1]:.3f}" if missed else ""))  # fmt: skip


def plan_for(n: int, args: argparse.Namespace, shares: list[float]) -> None:
    """The pass's plans for two members of `n` records (not run), with the planner's cost."""
    _, fallback_bits = layout()
    rows_ = int(args.sizes.split(",")[0])
    split = with_lacking(Split.of(rows(args.pair, rows_), fallback_bits), shares)
    print(f"\nplanned for {n:,} x {n:,} from the statistics of {rows_:,} x {rows_:,} "
          f"(not run); lacking {shares[0]:g} of A, {shares[1]:g} of B")  # fmt: skip
    ex_total = lsh_total = 0.0
    for block in fallbackpass.blocks(split.lacking):
        sides = [split.second[block.i][block.rows_i], split.second[block.j][block.rows_j]]
        # (A's lacking) x (all of B), or (A's other records) x (B's lacking)
        first_kind = len(block.rows_j) == len(split.lacking[block.j])
        sizes = [round(n * shares[0]), n]
        if not first_kind:
            sizes = [round(n * (1 - shares[0])), round(n * shares[1])]
        every = sizes[0] * sizes[1] * blocking.COST_DENSE
        found = blocking.plan(sides, THRESHOLD, sizes=sizes)
        if isinstance(found, blocking.NoPlan):
            cost, said = every, found.message
        else:
            cost = (found.bands * sum(sizes) * blocking.COST_ROW
                    + found.expected_comparisons * blocking.COST_PAIR)  # fmt: skip
            said = found.describe()
        ex_total, lsh_total = ex_total + every, lsh_total + cost
        print(f"  {sizes[0]:,} x {sizes[1]:,}: {said}; ~{cost:,.0f} CPU s against "
              f"~{every:,.0f} for every pair")  # fmt: skip
    print(
        f"  the pass: ~{lsh_total:,.0f} CPU s against ~{ex_total:,.0f} exhaustive "
        f"({ex_total / lsh_total:.1f}x less), the planner's estimate"
    )


def whole_run(n_b: int, args: argparse.Namespace, shares: list[float]) -> None:
    """`runs.match` of A's first rows against `n_b` of B's, the fallback pass exhaustive
    and then as built (LSH planned on the fallback CLKs)."""
    from blindmatch.matcher.domain import Rule
    from blindmatch.matcher.usecases import runs

    _, fallback_bits = layout()
    n_a = int(args.sizes.split(",")[0])
    a, b = rows(args.pair, max(n_a, n_b))
    datasets = [a[:n_a].copy(), b[:n_b].copy()]
    split = with_lacking(Split.of(datasets, fallback_bits), shares)
    cut = datasets[0].shape[1] - fallback_bits // 8
    for clks, lack in zip(datasets, split.lacking, strict=True):
        clks[lack, :cut] = clks[lack, cut:]  # the popcount test now finds them lacking
    print(
        f"\nwhole run, {n_a:,} x {n_b:,}, LSH blocking, the default's rule; lacking "
        f"{int(split.lacking[0].sum()):,} of A, {int(split.lacking[1].sum()):,} of B",
        flush=True,
    )
    said = logging.StreamHandler(sys.stdout)  # the run's log: the plans, and the pass's count
    said.setFormatter(logging.Formatter("    log: %(message)s"))
    logging.getLogger("blindmatch.matcher").addHandler(said)
    logging.getLogger("blindmatch.matcher").setLevel(logging.INFO)
    real_find = fallbackpass.find
    results = {}
    for name, lsh in (("fallback pass exhaustive (before)", False), ("as built", True)):

        def forced(*a: object, lsh_: bool = lsh, **kw: object) -> fallbackpass.FallbackPass:
            kw["lsh"] = lsh_ and kw.get("lsh", False)
            return real_find(*a, **kw)  # type: ignore[arg-type]

        runs.fallbackpass.find = forced  # type: ignore[assignment]
        wall, cpu = time.perf_counter(), time.process_time()
        result = runs.match(datasets, THRESHOLD, workers=args.workers, blocking="lsh",
                            fallback_bits=fallback_bits, rule=Rule(0.25, 0.03, 0.01))  # fmt: skip
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        runs.fallbackpass.find = real_find  # type: ignore[assignment]
        results[name] = result
        print(f"  {name:<34} {cpu:7.1f} CPU s ({wall:.1f} wall); first CLKs "
              f"{result.comparisons:.3g} comparisons, fallback pass "
              f"{result.fallback_comparisons:.3g}; {len(result.links.score):,} links")  # fmt: skip
    before, after = ({(int(d), int(r), int(p), int(q)) for d, r, p, q in zip(
        x.links.dset, x.links.row, x.links.partner, x.links.partner_row, strict=True)}
        for x in results.values())  # fmt: skip
    print(f"  links: {len(before & after):,} in both, {len(before - after):,} only before, "
          f"{len(after - before):,} only as built")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="200000", help="rows of each member, comma-separated")
    parser.add_argument("--lacking", default="0.1,0.1",
                        help="share of A's and of B's records lacking a date of birth")  # fmt: skip
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--pair", type=int, default=1_000_000,
                        help="the cached realistic pair's records a side the rows are read from "
                        "(one of the sizes' at least; encoded on first use)")  # fmt: skip
    parser.add_argument(
        "--plan-for",
        type=int,
        default=0,
        help="also plan (not run) the pass for two members of this many records",
    )
    parser.add_argument(
        "--run-b",
        type=int,
        default=0,
        help="also time the whole batch run against this many rows of B",
    )
    args = parser.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    shares = [float(x) for x in args.lacking.split(",")]
    if len(shares) != 2 or max(sizes) > args.pair:
        parser.error("--lacking takes two shares (A,B); --pair must be at least every size")
    if args.run_b:  # that alone
        whole_run(args.run_b, args, shares)
        return 0
    for n in sizes:
        compare(n, args, shares)
    if args.plan_for:
        plan_for(args.plan_for, args, shares)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
