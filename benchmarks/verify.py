"""What checking stored data costs, beside the work it guards, measured in the same run.

    .venv/bin/python benchmarks/verify.py     # 2 x 100,000 CLKs; 1,000,000 indexed records
    .venv/bin/python benchmarks/verify.py --records 20000 --indexed 100000   # quick

1. Run inputs: before a run compares anything, every input's file is hashed against the
   SHA-256 it was acknowledged with, and the mapped bytes again before the links are
   stored (`Store.verified_clks`, `verify_again`). Printed: both passes' time beside the
   run itself (`usecases.runs.match`, exhaustive, on all cores), as a share of it.
2. The scrub: one full pass over every stored upload, unthrottled (what a core hashes a
   second) and at the default rate (`SCRUB_RATE`), wall and CPU seconds.
3. Start-up: each database is checked when it is opened (`PRAGMA quick_check`); printed
   beside what start-up already spends reading the standing index it loads.

The data dir is a temporary folder on the disk this runs from (`--dir` to pick one).
No timing is asserted anywhere; the figures go to docs/operations.md by hand.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from blindmatch.matcher.domain import ChangeSummary, Encoding, Level
from blindmatch.matcher.storage.index_store import IndexStore, StoredChange
from blindmatch.matcher.storage.store import Store
from blindmatch.matcher.usecases.runs import match
from blindmatch.matcher.usecases.scrub import SCRUB_RATE, Scrubber

CLK_BYTES = 128
FINGERPRINT = bytes(32)


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall, CPU) seconds of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def quick_check(conn: sqlite3.Connection) -> list[tuple[str]]:
    return conn.execute("PRAGMA quick_check").fetchall()


def clks(rng: np.random.Generator, n: int, shared: np.ndarray) -> np.ndarray:
    """`n` random CLKs, the first len(shared) of them noisy copies of `shared`."""
    out = rng.integers(0, 256, (n, CLK_BYTES), dtype=np.uint8)
    flips = np.packbits(rng.random((len(shared), CLK_BYTES * 8)) < 0.01, axis=1)
    out[: len(shared)] = shared ^ flips
    return out


def upload(store: Store, member: str, data: np.ndarray) -> None:
    part = store.new_upload_path()
    part.write_bytes(data.tobytes())
    store.commit_upload(
        "bench", member, part, record_count=len(data), clk_bits=CLK_BYTES * 8,
        fingerprint=FINGERPRINT, sha256=hashlib.sha256(data.tobytes()).hexdigest(),
    )  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=100_000, help="CLKs per member (2)")
    parser.add_argument("--indexed", type=int, default=1_000_000, help="standing-index records")
    parser.add_argument("--dir", type=Path, help="where the temporary data dir goes")
    args = parser.parse_args()
    rng = np.random.default_rng(5)
    print(f"load average {os.getloadavg()[0]:.1f}; {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory(prefix="bm-verify-", dir=args.dir) as tmp:
        store = Store(tmp)
        store.create_project("bench", ["a", "b"], Level.HITS, 0.8)
        shared = rng.integers(0, 256, (args.records // 10, CLK_BYTES), dtype=np.uint8)
        for member in ("a", "b"):
            upload(store, member, clks(rng, args.records, shared))
        run, _ = store.create_run("bench")
        inputs = store.run_inputs(run.id)
        size = sum(u.record_count * CLK_BYTES for _, u in inputs)

        datasets: list[np.ndarray] = []
        hash_before = timed(lambda: datasets.extend(store.verified_clks(u) for _, u in inputs))
        result = []
        compute = timed(lambda: result.append(match(datasets, 0.8, blocking="exhaustive")))

        def verify_all_again() -> None:
            for (_, u), d in zip(inputs, datasets, strict=True):
                store.verify_again(u, d)

        hash_after = timed(verify_all_again)
        checks = hash_before[0] + hash_after[0]
        print(
            f"1. run inputs: 2 x {args.records:,} CLKs ({size / 2**20:.0f} MiB): verified before "
            f"{hash_before[0]:.2f} s and again after {hash_after[0]:.2f} s; the run "
            f"(compare + solve, {result[0].comparisons:,} pairs) {compute[0]:.1f} s: the checks "
            f"are {100 * checks / compute[0]:.2f}% of it"
        )
        store.finish_run(run.id, [m for m, _ in inputs], result[0].links, result[0].groups)

        unthrottled = Scrubber(store, rate=0)
        full = timed(unthrottled.scrub)
        paced = timed(Scrubber(store).scrub)
        print(
            f"2. scrub, one pass over {size / 2**20:.0f} MiB: unthrottled {full[0]:.2f} s "
            f"({size / 2**20 / full[0]:.0f} MiB/s, CPU {full[1]:.2f} s); at the default "
            f"{SCRUB_RATE / 2**20:.0f} MiB/s {paced[0]:.2f} s wall, CPU {paced[1]:.2f} s "
            f"({100 * paced[1] / paced[0]:.0f}% of one core while it runs)"
        )
        store.close()

        index = IndexStore(tmp)
        refs = [f"r{i:08d}" for i in range(args.indexed)]
        data = rng.integers(0, 256, (args.indexed, CLK_BYTES), dtype=np.uint8)
        puts = list(zip(refs, (row.tobytes() for row in data), strict=True))
        index.apply_change(
            "bench", "a", Encoding(CLK_BYTES * 8, FINGERPRINT), puts, [],
            size_after=args.indexed,
            change=StoredChange("load", 1, "", ChangeSummary(args.indexed, 0, 0, args.indexed)),
        )  # fmt: skip
        index.db.checkpoint()
        index.close()
        del puts, data
        read = timed(lambda: IndexStore(tmp).records("bench", "a"))
        sizes = {}
        checked = {}
        for name in ("blindmatch.sqlite", "index.sqlite"):
            path = Path(tmp) / name
            sizes[name] = path.stat().st_size
            conn = sqlite3.connect(path)
            checked[name] = timed(functools.partial(quick_check, conn))
            conn.close()
        print(
            "3. start-up quick_check: "
            + "; ".join(f"{n} ({sizes[n] / 2**20:.0f} MiB) {checked[n][0]:.2f} s" for n in sizes)
            + f"; opening index.sqlite and reading its {args.indexed:,} records as start-up "
            f"does, the check included, {read[0]:.2f} s: the check is "
            f"{100 * checked['index.sqlite'][0] / read[0]:.0f}% of that"
        )
    print(f"load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
