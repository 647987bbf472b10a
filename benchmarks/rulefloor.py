"""How high the first-CLK candidate floor of the gap rule (`blindmatch.rule`) can go before
it loses an accepted pair (issue 21): every pair at Dice >= `--floor` on either CLK, the
rule's accepted pairs, and those under each candidate floor.

    .venv/bin/python benchmarks/rulefloor.py [--seeds messy:2103 households:2109 ...]
        [--gap 0.25 --offset 0.03 --threshold 0.8]

The rule (matcher/core/fallback.py `Rule`): where both records have a date of birth,
S = D1 + gap * (D1 - D2) - offset >= threshold; otherwise D2 >= threshold. The exact
candidate floor is D1 >= (threshold + offset) / (1 + gap) (D2 >= 0). For each higher
floor F it prints how many accepted pairs (true / false) have D1 < F, and F1 (P/R) of the
hits when the rule is cut there (the greedy solver as a run). Figures: docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.rule2d import DEFAULT, hits, load, prf


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--seeds", nargs="+", default=["messy:2103", "households:2109", "households:2111:2.0"]
    )
    parser.add_argument("--schema", type=Path, default=DEFAULT)
    parser.add_argument("--gap", type=float, default=0.25)
    parser.add_argument("--offset", type=float, default=0.03)
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--floors", type=float, nargs="+", default=[0.70, 0.72, 0.75, 0.78])
    parser.add_argument("--population", type=int, default=20_000)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/blindmatch-rule2d"))
    args = parser.parse_args()
    exact = (args.threshold + args.offset) / (1 + args.gap)
    floor = np.floor(exact * 100) / 100
    for spec in args.seeds:
        s = load(spec, args.schema, None, float(floor), args.population, args.cache)
        p = s.pairs
        score = np.where(p.lacks, p.s2, p.s1 + args.gap * (p.s1 - p.s2) - args.offset)
        accept = score >= args.threshold
        print(f"{spec}: {len(p.label)} pairs at Dice >= {floor:.2f} on either CLK; "
              f"{int(accept.sum())} accepted ({int((accept & p.label).sum())} true)")  # fmt: skip
        for f in [exact, *args.floors]:
            cut = accept & (p.lacks | (p.s1 >= f))
            lost = accept & ~cut
            found = set(hits(s.members, p, cut, score))
            pr, rc, f1 = prf(found, s.actual)
            print(
                f"  floor D1 >= {f:.3f}: loses {int(lost.sum())} accepted pairs "
                f"({int((lost & p.label).sum())} true, {int((lost & ~p.label).sum())} false); "
                f"F1 {f1:.4f} ({pr:.4f}/{rc:.4f})",
                flush=True,
            )
        dated = accept & ~p.lacks
        print(f"  accepted dated pairs' lowest D1 {float(p.s1[dated].min()):.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
