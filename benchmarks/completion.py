"""Completing the greedy solver's groups (issue 21 item 1): a subject held by three or more
members whose records of two of them score just under the threshold.

    .venv/bin/python benchmarks/completion.py [--seeds messy:2205 messy:2103 households:2109 ...]
        [--bridges 0.8 0.85 0.9] [--reaches 0.75 0.7]

In process, on rule2d.py's encodings (one secret per seed, 20,000 people, the default schema
and its rule; exports cached under --cache): the rule's accepted pairs go to the greedy
solver as a run's do (`solve`), then `complete` (matcher/core/solve.py) joins two groups
over a candidate pair at or above each `--bridges` score when every pair between them scores
at least each `--reaches` score (the run's own scores: the rule over both CLKs, or the
fallback CLK's Dice where a record lacks the date of birth). P/R/F1 of the hits each gives
beside the greedy solver's alone. A run uses bridge = threshold + solve.BRIDGE (0.85) and
reach = threshold - solve.REACH (0.70): chosen on the messy seeds, reported on households.
Figures: docs/evaluation.md, "Completing groups". Each seed also says how many pairs the run's
scorer (`fallback.pair_scores`) is asked for at the run's cut-offs: in how many calls by
`complete`, and in the one call of `links_from_groups` (docs/performance.md, "rulescore").
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.rule2d import DEFAULT, Seed, load, prf
from blindmatch.matcher.core import fallback as fallback_
from blindmatch.matcher.core.compare import Candidates, merge
from blindmatch.matcher.core.solve import Group, PairScorer, complete, links_from_groups, solve

Scores = npt.NDArray[np.float64]

THRESHOLD = 0.8
RULE = fallback_.Rule(0.25, 0.03, 0.01)  # the default schema's blindmatch.rule
SEEDS = ["messy:2205", "messy:2103", "messy:2105:2.0", "messy:2101:0.5", "households:2105",
         "households:2109", "households:2107:0.5", "households:2111:2.0"]  # fmt: skip


def quality(seed: Seed, groups: list[Group], scorer: PairScorer) -> str:
    """P/R/F1 of the hits `groups` give (every pair inside a group, both ways)."""
    links = links_from_groups(groups, [], scorer)
    names = [m.name for m in seed.members]
    found = {
        (names[a], seed.members[a].ids[r], names[b])
        for a, r, b in zip(
            links.dset.tolist(), links.row.tolist(), links.partner.tolist(), strict=True
        )
    }
    pr, rc, f1 = prf(found, seed.actual)
    return f"F1 {f1:.4f} (P {pr:.4f} R {rc:.4f}), {len(found)} hits, {len(groups)} groups"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", nargs="+", default=SEEDS)
    parser.add_argument("--bridges", type=float, nargs="+", default=[0.8, 0.85, 0.9])
    parser.add_argument("--reaches", type=float, nargs="+", default=[0.75, 0.7])
    parser.add_argument("--population", type=int, default=20_000)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/blindmatch-rule2d"))
    args = parser.parse_args()
    floor = RULE.candidate_floor(THRESHOLD)
    for spec in args.seeds:
        s = load(spec, DEFAULT, None, floor, args.population, args.cache)
        p = s.pairs
        split = fallback_.Split.of([m.clks for m in s.members], s.members[0].fallback_bits)
        score = np.where(p.lacks, p.s2, RULE.score(p.s1, p.s2))
        sel = np.flatnonzero((score >= THRESHOLD) & (p.lacks | (p.s1 >= floor)))
        cands = merge([Candidates(score[sel], p.d0[sel], p.d1[sel], p.r0[sel], p.r1[sel])])
        scorer = functools.partial(fallback_.pair_scores, split, rule=RULE)
        greedy = solve(cands)

        print(f"{spec}: greedy {quality(s, greedy, scorer)}", flush=True)
        asked: list[int] = []

        def counted(
            *pairs: npt.NDArray[np.uint32], asked: list[int] = asked, scorer: PairScorer = scorer
        ) -> Scores:
            asked.append(len(pairs[0]))
            return scorer(*pairs)

        links = links_from_groups(complete(greedy, cands, counted, THRESHOLD), [], scorer)
        print(f"  pair_scores at the run's cut-offs: {len(asked)} calls of {sum(asked)} pairs "
              f"by the completion, one of {len(links.dset)} pairs for the links")  # fmt: skip
        for bridge in args.bridges:
            for reach in args.reaches:
                done = complete(greedy, cands, scorer, THRESHOLD,
                                bridge=bridge - THRESHOLD, reach=THRESHOLD - reach)  # fmt: skip
                print(
                    f"  bridge {bridge:.2f} reach {reach:.2f}: {quality(s, done, scorer)}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
