"""The exhaustive kernel against the machine's limit: AND + VPOPCNTQ + ADD, pairs/s/core.

    .venv/bin/python benchmarks/kernelpeak.py                # 8,000 x 20,000 realistic CLKs
    .venv/bin/python benchmarks/kernelpeak.py --a 4000 --b 10000 --repeats 5

1. The limit: `_kernel.peak` runs the dense kernel's inner loop and nothing else (8 rows of
   a against blocks of 8 rows of b, 1024-bit CLKs, all in L1, counts kept in registers,
   no threshold test, no output): per 64-bit word and 8 pairs one AND, one VPOPCNTQ and
   one ADD, the least any kernel comparing 1024-bit CLKs this way can do. Its pairs per
   CPU second, on one thread, is what no such kernel can beat on this CPU.
2. blindmatch's `dense` (the AVX-512 path, one thread) on realistic CLKs
   (benchmarks/realclks.py: real clkhash output, the default schema) and on synthetic ones
   (benchmarks/synthclks.py), at threshold 0.8, counting every pair of a x b (the popcount
   pre-filter passes nearly all of them at 0.8 on either kind), as a share of the limit.
3. anonlink's `dice_coefficient_accelerated` on the same realistic CLKs (the anchor), on a
   smaller a, and a check that both return the same pairs and scores.

Rates are CPU time (time.process_time, this process, one thread), medians of --repeats,
interleaved; the load average is printed (the machine's cores are shared).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.realclks import realistic_pair
from benchmarks.synthclks import member_pair
from blindmatch.matcher.core import kernel

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from bitarray import bitarray

    from blindmatch.matcher.core._anonlink import dice_coefficient_accelerated

THRESHOLD = 0.8


T = TypeVar("T")


def cpu(fn: Callable[[], T]) -> tuple[float, T]:
    t0 = time.process_time()
    out = fn()
    return time.process_time() - t0, out


def peak_rate(reps: int = 400_000) -> float:
    """Pairs per CPU second of the AND + VPOPCNTQ + ADD loop alone (0: no AVX-512)."""
    seconds, pairs = cpu(lambda: kernel._kernel.peak(reps))
    return float(pairs) / seconds if pairs else 0.0  # type: ignore[arg-type]


def dense_rate(a: np.ndarray, b: np.ndarray) -> tuple[float, Any]:
    seconds, found = cpu(lambda: kernel._kernel.dense(a, b, a.shape[1] // 8, THRESHOLD, "avx512"))
    return len(a) * len(b) / seconds, found


def bitarrays(clks: np.ndarray) -> list[bitarray]:
    out = []
    for row in clks:
        ba = bitarray(endian="big")
        ba.frombytes(row.tobytes())
        out.append(ba)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--a", type=int, default=8_000, help="rows of a")
    parser.add_argument("--b", type=int, default=20_000, help="rows of b")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--anonlink-a", type=int, default=1_000, help="rows of a for anonlink")
    parser.add_argument("--pair", type=int, nargs=2, default=[1_000_000, 20_000],
                        metavar=("N", "M"), help="the cached realistic N x M pair (half of A's "
                        "people in B) the rows are drawn from: a smaller one for a quick run "
                        "(it is encoded on first use)")  # fmt: skip
    args = parser.parse_args()
    if not kernel.NATIVE or "avx512" not in kernel.paths():
        print("this CPU has no AVX-512 VPOPCNTQ (or the native kernel is not built)")
        return 0
    n_a, n_b = args.pair
    pair = realistic_pair(n_a, n_b, seed=1, overlap=0.5, quiet=True)
    # A's records of the people B's first records are (each pair one person, encoded from
    # two organisations' messy exports) against B's records.
    real_a = np.ascontiguousarray(pair.a[pair.truth_a[: args.a]])
    real_b = np.ascontiguousarray(pair.b[: args.b])
    synth = member_pair(max(args.a, args.b), seed=1)
    syn_a = np.ascontiguousarray(synth.a[: args.a])
    syn_b = np.ascontiguousarray(synth.b[: args.b])
    load = os.getloadavg()[0]

    peaks, real, syn = [], [], []
    for _ in range(args.repeats):  # interleaved, so a busy moment touches all three
        peaks.append(peak_rate())
        real.append(dense_rate(real_a, real_b)[0])
        syn.append(dense_rate(syn_a, syn_b)[0])
    limit = statistics.median(peaks)

    small = real_a[: args.anonlink_a]
    seconds, (sims, (rows_a, rows_b)) = cpu(
        lambda: dice_coefficient_accelerated((bitarrays(small), bitarrays(real_b)), THRESHOLD)
    )
    anonlink = len(small) * len(real_b) / seconds
    _, found = dense_rate(small, real_b)
    ours = sorted(
        zip(
            np.frombuffer(found[1], np.uint32).tolist(),
            np.frombuffer(found[2], np.uint32).tolist(),
            np.frombuffer(found[0], np.float64).tolist(),
            strict=True,
        )
    )
    theirs = sorted(zip(rows_a, rows_b, sims, strict=True))
    same = ours == theirs

    print(f"machine: {os.cpu_count()} cores; load average {load:.1f} -> {os.getloadavg()[0]:.1f}")
    print(f"1024-bit CLKs, threshold {THRESHOLD}, one thread, CPU time, median of {args.repeats}")
    print(f"  limit (AND + VPOPCNTQ + ADD alone): {limit / 1e9:.2f} G pairs/s/core")
    for name, rates, (na, nb) in (
        ("realistic", real, (len(real_a), len(real_b))),
        ("synthetic", syn, (len(syn_a), len(syn_b))),
    ):
        rate = statistics.median(rates)
        print(f"  blindmatch dense, {name} {na:,} x {nb:,}: {rate / 1e9:.2f} G pairs/s/core, "
              f"{rate / limit:.0%} of the limit")  # fmt: skip
    rate = statistics.median(real)
    print(f"  anonlink, realistic {len(small):,} x {len(real_b):,}: {anonlink / 1e6:.0f} M pairs/s "
          f"(blindmatch {rate / anonlink:.1f}x); same pairs and scores: {same} "
          f"({len(theirs)} pairs)")  # fmt: skip
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
