"""What S1 writes for a checked batch it evaluates and for one it answers all 0 (docs/
privacy-design.md "A dishonest combiner's reach pairs, attacked"): the pair budget's commit
(core/pairbudget.py `PairBudget.spend`, storage/role_store.py `spend`) and the ledger's
(core/rowledger.py `RowLedger.note`, `note_rows`), on a real data dir, timed apart.

    .venv/bin/python benchmarks/s1_batch_writes.py [--batches 200] [--pairs 50] [--dir DIR]

Each batch alternates: `--pairs` fresh pairs evaluated, then a batch answered all 0 (no pair
evaluated, nothing new in the ledger), as S1's `Evaluate` commits them. Wall-clock time (the
commits wait on the disk: synchronous=FULL) and this process's CPU time, medians and means a
batch; the disk and the machine's load set the figures, so compare the rows of one run.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from blindmatch.matcher.core.pairbudget import PairBudget
from blindmatch.matcher.core.rowledger import RowLedger
from blindmatch.matcher.storage.role_store import RoleStore


def measure(folder: Path, batches: int, pairs: int) -> dict[str, list[float]]:
    store = RoleStore(folder, "s1")
    try:
        for name in ("north", "south"):
            store.put(name, f"file-{name}", 1 << 20, {}, [], "digest")
        budget, ledger = PairBudget(store.spend), RowLedger(store.note_rows)
        times: dict[str, list[float]] = {}
        none = np.empty(0, np.uint32)
        for n in range(batches):
            rows = np.arange(n * pairs, (n + 1) * pairs, dtype=np.uint32)
            for kind, (a, b) in (("evaluated", (rows, rows)), ("answered all 0", (none, none))):
                t0, c0 = time.perf_counter(), time.process_time()
                assert not budget.spend("north", "south", a, b, reach=True)
                ledger.note("north", "south", "reach", a, b, "a run")
                times.setdefault(kind, []).append(time.perf_counter() - t0)
                times.setdefault(kind + " CPU", []).append(time.process_time() - c0)
        return times
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--pairs", type=int, default=50)
    parser.add_argument("--dir", type=Path, default=None, help="where (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        times = measure(Path(tmp) / "s1", args.batches, args.pairs)
    for kind, got in times.items():
        print(f"{kind:>19}: {len(got)} batches, median {statistics.median(got) * 1e3:.3f} ms, "
              f"mean {statistics.fmean(got) * 1e3:.3f} ms a batch (two commits)")  # fmt: skip


if __name__ == "__main__":
    main()
