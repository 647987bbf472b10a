"""A research project's low floor: a run's stages at floors 0.8, 0.7 and 0.6 (lowfloor).

    nice .venv/bin/python benchmarks/lowfloor.py --records 2000 --floors 0.8 0.7 0.6

A `--disclose scores` project's threshold is a floor the researcher sweeps above
(docs/evaluation.md, "One project sweeps every threshold"); under the chance level of its CLKs
nearly every pair is a candidate. For each set (Febrl4's first `--records` rows of A and of B,
encoded by `blindmatch encode`'s path with tests/data/febrl4's schema and mapping; and
`households`, benchmarks/realclks.py's held-out generator, record-level CLKs) and each floor,
the candidates run through a run's stages after the kernel (core.compare, core.crowd,
core.solve, as `usecases.runs.match` does) twice: as main did before lowfloor (the whole
merge sorted by five keys, the crowd cut after it, anonlink's greedy solver) and as the run
does now (the crowd cut on the kernel's unsorted output, `compare.merge`, `solve.solve`); and
the crowd cut and merge as lowfloor left them (`benchmarks/lowfloor_was.py`: a mask for each
band, np.argsort), beside the run's (crowdcut: the bands counted in one pass, a radix sort).
Each stage's CPU seconds are printed with its candidates, and beside anonlink's own greedy
solver on the same candidates (`anonlink.solving.greedy_solve`, the anchor) as ratios. The
two paths' groups and links (what the hits, mapping and scores files are written from) must be
byte-identical: the script stops otherwise.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.lowfloor_was import lifted_was, merge_was
from blindmatch.matcher.core import crowd
from blindmatch.matcher.core._anonlink import greedy_solve
from blindmatch.matcher.core.compare import Candidates, compare_chunk, concat, merge, plan_chunks
from blindmatch.matcher.core.solve import Group, Links, complete, dice_scorer, links_from_groups
from blindmatch.matcher.core.solve import solve as solve_now

ROOT = Path(__file__).resolve().parent.parent
FEBRL = ROOT / "tests" / "data" / "febrl4"
Clks = npt.NDArray[np.uint8]


def febrl4(records: int) -> list[Clks]:
    """Febrl4's A and B (their first `records` rows), as `blindmatch encode` makes them."""
    from blindmatch.client.encoding.encode import encode_csv
    from blindmatch.client.encoding.mapping import load_mapping
    from blindmatch.client.encoding.schema import load_schema

    schema = load_schema(FEBRL / "schema.json")
    mapping = load_mapping(FEBRL / "mapping.toml", schema)
    out = []
    for name in ("febrl4_a.csv", "febrl4_b.csv"):
        with tempfile.TemporaryDirectory(prefix="blindmatch-lowfloor-") as tmp:
            lines = (FEBRL / name).read_text(encoding="utf-8").splitlines(keepends=True)
            path = Path(tmp) / name
            path.write_text("".join(lines[: records + 1]), encoding="utf-8")
            result = encode_csv(path, schema, mapping, b"lowfloor benchmark", max_workers=1)
        width = result.clk_bits // 8
        out.append(np.frombuffer(result.clks, dtype=np.uint8).reshape(-1, width).copy())
    return out


def households(records: int) -> list[Clks]:
    from benchmarks.realclks import realistic_pair

    pair = realistic_pair(records, records, generator="households", quiet=True)
    return [pair.a, pair.b]


def merge_main(parts: Sequence[Candidates]) -> Candidates:
    """compare.merge as on main before lowfloor: one lexsort by five keys."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return Candidates.empty()
    sims = np.concatenate([p.sims for p in parts])
    d0 = np.concatenate([p.dset0 for p in parts])
    d1 = np.concatenate([p.dset1 for p in parts])
    r0 = np.concatenate([p.rec0 for p in parts])
    r1 = np.concatenate([p.rec1 for p in parts])
    order = np.lexsort((r1, r0, d1, d0, -sims))
    return Candidates(sims[order], d0[order], d1[order], r0[order], r1[order])


def solve_main(candidates: Candidates) -> list[Group]:
    """solve.solve as on main before lowfloor: anonlink's greedy solver."""
    if not len(candidates):
        return []
    groups = greedy_solve(
        (candidates.sims, (candidates.dset0, candidates.dset1),
         (candidates.rec0, candidates.rec1))
    )  # fmt: skip
    return [tuple(sorted((int(d), int(r)) for d, r in g)) for g in groups]


class Clock:
    """CPU seconds (all threads) of each named stage."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        t0 = time.process_time()
        out = fn(*args)
        self.seconds[name] = self.seconds.get(name, 0.0) + time.process_time() - t0
        return out


def one(datasets: list[Clks], floor: float, with_main: bool = True) -> dict[str, Any]:
    sizes = [len(d) for d in datasets]
    clock = Clock()
    parts = [clock("compare", compare_chunk, c, datasets, floor) for c in plan_chunks(sizes)]
    found = sum(len(p) for p in parts)
    scorer = dice_scorer(datasets)
    # Main at lowfloor, before crowdcut: its crowd cut and merge (benchmarks/lowfloor_was.py).
    cut_was = clock("was crowd", lifted_was, concat(parts), floor, sizes)
    cut_was = clock("was merge", merge_was, [cut_was])
    if not with_main:  # the run's path alone (main's solve takes minutes at Febrl4's 0.6)
        now = clock("crowd", crowd.lifted, clock("concat", concat, parts), floor, sizes)
        now = clock("merge", merge, [now])
        if not all(getattr(now, f).tobytes() == getattr(cut_was, f).tobytes()
                   for f in ("sims", "dset0", "dset1", "rec0", "rec1")):  # fmt: skip
            raise SystemExit(f"floor {floor}: the run's candidates differ from lowfloor's")
        groups = clock("solve", solve_now, now)
        groups = clock("complete", complete, groups, now, scorer, floor)
        clock("links", links_from_groups, groups, datasets)
        return {"found": found, "kept": len(now), "groups": len(groups), "s": clock.seconds}
    # Main before lowfloor: merge (5-key lexsort), crowd cut, anonlink's solver.
    was = clock("main merge", merge_main, parts)
    was = clock("main crowd", crowd.lifted, was, floor, sizes)
    was_groups = clock("main solve", solve_main, was)
    was_groups = clock("main complete", complete, was_groups, was, scorer, floor)
    was_links: Links = clock("main links", links_from_groups, was_groups, datasets)
    # The run now: the crowd cut on the kernel's unsorted output, then merge and solve.
    now = clock("crowd", crowd.lifted, clock("concat", concat, parts), floor, sizes)
    now = clock("merge", merge, [now])
    groups = clock("solve", solve_now, now)
    groups = clock("complete", complete, groups, now, scorer, floor)
    links: Links = clock("links", links_from_groups, groups, datasets)
    # The anchor: anonlink's greedy solver on the same (cut, sorted) candidates, which is
    # main's solve (its input is byte-identical to the run's now: checked below).
    clock.seconds["anchor"] = clock.seconds["main solve"]
    same = all(getattr(now, f).tobytes() == getattr(was, f).tobytes()
               == getattr(cut_was, f).tobytes()
               for f in ("sims", "dset0", "dset1", "rec0", "rec1"))  # fmt: skip
    same = (
        same
        and sorted(groups) == sorted(was_groups)
        and all(
            getattr(links, f).tobytes() == getattr(was_links, f).tobytes()
            for f in ("dset", "row", "partner", "partner_row", "score")
        )
    )
    if not same:
        raise SystemExit(f"floor {floor}: the run's groups or links differ from main's")
    return {"found": found, "kept": len(now), "groups": len(groups), "links": len(links),
            "s": clock.seconds}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=2000, help="of each member (default 2000)")
    parser.add_argument("--floors", type=float, nargs="+", default=[0.8, 0.7, 0.6])
    parser.add_argument(
        "--no-main",
        action="store_true",
        help="time the run's path only (no main path, no anchor, no check)",
    )
    parser.add_argument("--sets", nargs="+", default=["febrl4", "households"],
                        choices=["febrl4", "households"])  # fmt: skip
    args = parser.parse_args()
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"lowfloor: {args.records:,} x {args.records:,} records, load {' '.join(load)}")
    stages = ["compare", "main merge", "main crowd", "main solve", "was crowd", "was merge",
              "concat", "crowd", "merge", "solve", "complete", "links"]  # fmt: skip
    head = f"{'set':<10} {'floor':>5} {'candidates':>11} {'kept':>10} {'groups':>6}"
    print(head + "".join(f" {s:>10}" for s in stages) + f" {'main':>7} {'now':>7} {'main/now':>8}"
          f" {'was/now':>8}")  # fmt: skip
    for name in args.sets:
        datasets = febrl4(args.records) if name == "febrl4" else households(args.records)
        for floor in args.floors:
            r = one(datasets, floor, not args.no_main)
            s = {k: float("nan") for k in stages} | r["s"]
            s.setdefault("anchor", float("nan"))
            main_s = sum(s[k] for k in ("main merge", "main crowd", "main solve"))
            now_s = sum(s[k] for k in ("concat", "crowd", "merge", "solve"))
            anchor = max(s["anchor"], 1e-6)
            cells = "".join(f" {s[k]:>6.2f}/{s[k] / anchor:<3.1f}" for k in stages)
            ratio = main_s / max(now_s, 1e-6)
            cut = s["crowd"] + s["merge"]
            was = (s["was crowd"] + s["was merge"]) / max(cut, 1e-6)
            print(f"{name:<10} {floor:>5} {r['found']:>11,} {r['kept']:>10,} {r['groups']:>6,}"
                  f"{cells} {main_s:>7.2f} {now_s:>7.2f} {ratio:>8.1f} {was:>8.1f}")  # fmt: skip
            sys.stdout.flush()
    print(
        "cells: CPU seconds / ratio to the anchor (anonlink's greedy_solve on the same "
        "candidates); main: merge+crowd+solve as before lowfloor; now: concat+crowd+merge+"
        "solve; was/now: crowd+merge as on main before crowdcut (lowfloor_was.py) against the "
        "run's; "
        + ("--no-main: candidates byte-identical to lowfloor's" if args.no_main else
           "candidates, groups and links byte-identical to main's at every floor")
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
