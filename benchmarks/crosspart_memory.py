"""S1's proposal of an unblocked pair of members, in a fresh process: CPU and peak RSS.

    .venv/bin/python benchmarks/crosspart_memory.py [--records 4000 4000] [--explicit]

S1 proposes A x B whole (matcher/core/exhaustive.py `every_pair`, 2% of each member's
records lacking the fallback's fields, so two parts) and holds it as a run's `Proposal`
(core/proposal.py), then makes every batch C would ask of the record-level part
(`linkbit.BATCH` pairs a batch). By default the parts are made in slices
(core/crosspart.py: each side's rows and a keyed permutation); `--explicit`: as before
them, explicit row arrays, the proposal's permutation of each part and its sorted pair keys
(16 bytes a pair). Printed: the pairs, the CPU seconds of proposing and of making the
batches, and the process's peak RSS (and after its imports, numpy included)."""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from blindmatch.matcher.core import exhaustive, linkbit
from blindmatch.matcher.core.proposal import Proposal

CUTOFFS = (0.8,)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, nargs=2, default=[4000, 4000], metavar="N")
    parser.add_argument("--explicit", action="store_true",
                        help="explicit row arrays, as before the slices")  # fmt: skip
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
