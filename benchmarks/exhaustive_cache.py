"""Exhaustive pairs of large benchmark sets, cached in chunks (for recall at 1M x 1M).

    .venv/bin/python benchmarks/exhaustive_cache.py 1000000 [--seed 0] [--workers 1]

Comparing every pair of 1M x 1M realistic encodings takes ~20 CPU-minutes; this does it
once, a chunk of A's rows at a time (the rows in a fixed random order, so any finished
prefix of chunks is a random sample of A), each chunk saved as it finishes under the
encodings' cache folder. `benchmarks/speed.py` measures LSH recall against whatever
chunks exist: all of them, or the finished ones (it says which).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.realclks import cache_dir, load_realistic
from blindmatch.matcher.core import kernel

CHUNK = 50_000
THRESHOLD = 0.8


def folder(n: int, seed: int) -> Path:
    return cache_dir(n, n, seed, 0.1) / f"exhaustive-{THRESHOLD:g}"


def order(n: int) -> npt.NDArray[np.int64]:
    return np.random.default_rng(12345).permutation(n)


def load(n: int, seed: int = 0) -> tuple[npt.NDArray[np.int64], set[tuple[int, int]], float]:
    """(rows of A covered, their exhaustive pairs, CPU seconds spent) from the cached chunks."""
    rows: list[npt.NDArray[np.int64]] = []
    pairs: set[tuple[int, int]] = set()
    cpu = 0.0
    perm = order(n)
    for k in range(0, n, CHUNK):
        path = folder(n, seed) / f"{k}.npz"
        if not path.exists():
            continue
        part = np.load(path)
        rows.append(perm[k : k + CHUNK])
        pairs.update(zip(part["rows_a"].tolist(), part["rows_b"].tolist(), strict=True))
        cpu += float(part["cpu"])
    covered = np.sort(np.concatenate(rows)) if rows else np.empty(0, np.int64)
    return covered, pairs, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("n", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    a, b = load_realistic(args.n, args.n, args.seed)
    out = folder(args.n, args.seed)
    out.mkdir(parents=True, exist_ok=True)
    perm = order(args.n)
    for k in range(0, args.n, CHUNK):
        path = out / f"{k}.npz"
        if path.exists():
            continue
        rows = perm[k : k + CHUNK]
        c0, t0 = time.process_time(), time.perf_counter()
        sims, ia, ib = kernel.dice_candidates(a[rows], b, THRESHOLD, workers=args.workers)
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
        tmp = out / f"{k}.tmp.npz"
        np.savez(tmp, sims=sims, rows_a=rows[ia].astype(np.uint32), rows_b=ib, cpu=cpu, wall=wall)
        tmp.replace(path)
        print(f"rows {k:,}-{k + len(rows):,}: {len(sims):,} pairs, {cpu:.0f} CPU s, {wall:.0f} s",
              flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
