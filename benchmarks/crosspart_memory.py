"""S1's proposal of an unblocked pair of members, in a fresh process: CPU and peak RSS.

    .venv/bin/python benchmarks/crosspart_memory.py [--records 4000 4000] [--explicit]
        [--resume FRACTION [--resume-whole]]

S1 proposes A x B whole (matcher/core/exhaustive.py `every_pair`, 2% of each member's
records lacking the fallback's fields, so two parts) and holds it as a run's `Proposal`
(core/proposal.py), then makes every batch C would ask of the record-level part
(`linkbit.BATCH` pairs a batch). By default the parts are made in slices
(core/crosspart.py: each side's rows and a keyed permutation); `--explicit`: as before
them, explicit row arrays, the proposal's permutation of each part and its sorted pair keys
(16 bytes a pair). Printed: the pairs, the CPU seconds of proposing and of making the
batches, and the process's peak RSS (and after its imports, numpy included).

With `--resume FRACTION`: a run resumed after a failure cut it (rpc/twoserver_resume.py
`leave_out_counted`). The first FRACTION of the record-level part's batches are counted in
S1's pair budget (core/pairbudget.py `spend`, batch by batch, as the cut run's were), then
a second proposal, in a fresh order, is cut down to the pairs not counted (the CPU seconds
of that, and the peak RSS before it, the budget's keys in it); then the batches C would ask
of the resumed record-level part are made. By default the unblocked parts are cut down in
slices (core/crosspart.py `Cross.leaving_out`, a bit a pair); `--resume-whole`: as before,
made whole as explicit rows and the counted pairs dropped (16 bytes a pair)."""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from blindmatch.matcher.core import exhaustive, linkbit
from blindmatch.matcher.core.crosspart import Cross
from blindmatch.matcher.core.pairbudget import PairBudget
from blindmatch.matcher.core.proposal import Proposal
from blindmatch.matcher.core.twoserver import PairBatch
from blindmatch.matcher.rpc.twoserver_resume import leave_out_counted

CUTOFFS = (0.8,)


def mb() -> str:
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB"


def resumed(proposal: Proposal, fraction: float, parts: list[exhaustive.Part], whole: bool,
            records: tuple[int, int], lacking: list[Any]) -> Proposal:  # fmt: skip
    """`proposal` cut after `fraction` of its record-level part's batches, and the second
    proposal of the run resumed, cut down to the pairs not counted."""
    budget = PairBudget()
    first = proposal.described()[0].pairs
    t0 = time.process_time()
    for offset in range(0, int(fraction * -(-first // linkbit.BATCH)) * linkbit.BATCH,
                        linkbit.BATCH):  # fmt: skip
        b = proposal.part(0, offset, min(linkbit.BATCH, first - offset), CUTOFFS)
        budget.spend("a", "b", b.rows_a, b.rows_b)
    counting = time.process_time() - t0
    before = mb()
    again = Proposal(["a", "b"], list(records), parts, CUTOFFS, lacking)
    t1 = time.process_time()
    if whole:  # as before: each part made whole, the counted pairs dropped
        for k, p in enumerate(again.parts):
            w = p.whole() if isinstance(p, Cross) else p
            counted = budget.counted("a", "b", w.rows_a, w.rows_b)
            again.parts[k] = PairBatch(w.member_a, w.member_b, w.clk, w.rows_a[~counted],
                                       w.rows_b[~counted])  # fmt: skip
        left = sum(len(p) for p in proposal.parts) - sum(len(p) for p in again.parts)
    else:
        left = leave_out_counted(SimpleNamespace(budget=budget), again, {(0, 1)})  # type: ignore[arg-type]
    cutting = time.process_time() - t1
    print(f"resumed after {fraction:.0%} of the record-level part's batches: {budget.pairs():,} "
          f"pairs counted in {counting:.2f} s CPU (peak RSS then {before}); the resumed "
          f"proposal cut down {'whole' if whole else 'in slices'} in {cutting:.2f} s CPU, "
          f"{left:,} pairs left out, {sum(p.pairs for p in again.described()):,} "
          "proposed")  # fmt: skip
    return again


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, nargs=2, default=[4000, 4000], metavar="N")
    parser.add_argument("--explicit", action="store_true",
                        help="explicit row arrays, as before the slices")  # fmt: skip
    parser.add_argument("--resume", type=float, metavar="FRACTION",
                        help="a run resumed after this share of a part's batches")  # fmt: skip
    parser.add_argument("--resume-whole", action="store_true",
                        help="with --resume: made whole and filtered, as before")  # fmt: skip
    args = parser.parse_args()
    n_a, n_b = args.records
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    lacking = [np.arange(n_a) % 50 == 0, np.arange(n_b) % 50 == 0]
    t0 = time.process_time()
    parts: list[exhaustive.Part] = list(exhaustive.every_pair(0, 1, (n_a, n_b), lacking))
    if args.explicit:
        parts = list(exhaustive.explicit(parts))
    proposal = Proposal(["a", "b"], [n_a, n_b], parts, CUTOFFS, lacking)
    proposing = time.process_time() - t0
    if args.resume is not None:
        proposal = resumed(proposal, args.resume, parts, args.resume_whole, (n_a, n_b), lacking)
    total = sum(p.pairs for p in proposal.described())
    first = proposal.described()[0].pairs
    t1 = time.process_time()
    made = 0
    for offset in range(0, first, linkbit.BATCH):
        made += len(proposal.part(0, offset, min(linkbit.BATCH, first - offset), CUTOFFS))
    making = time.process_time() - t1
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"{n_a:,} x {n_b:,} ({'explicit rows' if args.explicit else 'slices'}): {total:,} "
          f"pairs; proposed in {proposing:.2f} s CPU; the record-level part's {made:,} pairs "
          f"made batch by batch in {making:.2f} s CPU; peak RSS {peak / 1024:,.0f} MB (after "
          f"the imports {base / 1024:,.0f} MB)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
