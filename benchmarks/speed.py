"""Speed and scale, beside anonlink measured in the same run.

    .venv/bin/python benchmarks/speed.py            # full: up to 1M x 1M (~10-15 min)
    .venv/bin/python benchmarks/speed.py --quick    # 10k-20k sizes (~1 min)
    make bench-speed                                 # the full run

1. kernel: pairs/s of anonlink's dice_coefficient_accelerated and of
   blindmatch's kernel (1 thread, all threads), interleaved, medians, same
   synthetic CLKs, with a check that both return identical pairs and scores.
2. blocking and growth: for n x n members (10% overlap), exhaustive time,
   LSH time, comparisons and recall of LSH against exhaustive; anonlink's time
   where it is affordable (else estimated from its measured rate, marked ~).
3. end to end: n x n through a real matcher on loopback gRPC (upload, run,
   results), wall times and peak resident memory of this process, which holds
   server and both clients; and the multi-party solver on 5 x 200k (full only).

No timing is asserted anywhere; the numbers are printed and written to
docs/performance.md by hand.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.synthclks import member_pair, members
from blindmatch.client.api import MatcherClient
from blindmatch.client.encoded import write_encoded
from blindmatch.matcher.core import blocking, kernel
from blindmatch.matcher.server import create_server
from blindmatch.matcher.usecases.runs import match

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from bitarray import bitarray

    from blindmatch.matcher.core._anonlink import dice_coefficient_accelerated

THRESHOLD = 0.8
CORES = os.cpu_count() or 1


def bitarrays(clks: np.ndarray) -> list[bitarray]:
    out = []
    for row in clks:
        ba = bitarray(endian="big")
        ba.frombytes(row.tobytes())
        out.append(ba)
    return out


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def kernel_bench(na: int, nb: int, repeats: int) -> float:
    pair = member_pair(max(na, nb), seed=1)
    a, b = pair.a[:na], pair.b[:nb]
    ba, bb = bitarrays(a), bitarrays(b)
    runs: dict[str, list[float]] = {"anonlink": [], "blindmatch 1 thread": []}
    runs[f"blindmatch {CORES} threads"] = []
    same = True
    for _ in range(repeats):  # interleaved, so load from other users hits all alike
        dt, theirs = timed(lambda: dice_coefficient_accelerated([ba, bb], THRESHOLD))
        runs["anonlink"].append(dt)
        dt, ours = timed(lambda: kernel.dice_candidates(a, b, THRESHOLD, workers=1))
        runs["blindmatch 1 thread"].append(dt)
        dt, _ = timed(lambda: kernel.dice_candidates(a, b, THRESHOLD, workers=CORES))
        runs[f"blindmatch {CORES} threads"].append(dt)
        s, (i, j) = theirs  # type: ignore[misc]
        o = ours  # type: ignore[assignment]
        same &= dict(zip(zip(i, j, strict=True), s, strict=True)) == dict(
            zip(zip(o[1].tolist(), o[2].tolist(), strict=True), o[0].tolist(), strict=True)
        )
    pairs = na * nb
    base = statistics.median(runs["anonlink"])
    print(f"\n## Kernel: {na:,} x {nb:,} CLKs of 1024 bits, threshold {THRESHOLD}")
    print(f"path: {kernel.paths()[0]}; identical pairs and scores to anonlink: {same}")
    print(f"{'':28} {'median s':>9} {'M pairs/s':>10} {'x anonlink':>11}")
    for name, times in runs.items():
        med = statistics.median(times)
        print(f"{name:28} {med:9.3f} {pairs / med / 1e6:10.0f} {base / med:11.2f}")
    t1 = statistics.median(runs["blindmatch 1 thread"])
    tn = statistics.median(runs[f"blindmatch {CORES} threads"])
    print(f"thread scaling on {CORES} cores: {t1 / tn:.2f}x")
    return pairs / base


def growth_bench(sizes: list[int], anonlink_rate: float, anonlink_max: int) -> None:
    print(f"\n## Blocking and growth: n x n members, 10% overlap, threshold {THRESHOLD}")
    print(
        f"{'n':>9} {'anonlink s':>11} {'exhaustive s':>13} {'lsh s':>7} {'x anonlink':>11}"
        f" {'comparisons':>13} {'fewer':>8} {'recall':>8}"
    )
    for n in sizes:
        pair = member_pair(n, seed=2)
        a, b = pair.a, pair.b
        if n <= anonlink_max:
            ba, bb = bitarrays(a), bitarrays(b)
            t_anon, _ = timed(lambda: dice_coefficient_accelerated([ba, bb], THRESHOLD))  # noqa: B023
            anon = f"{t_anon:11.2f}"
        else:
            t_anon = n * n / anonlink_rate
            anon = f"~{t_anon:10.0f}"
        t_full, full = timed(lambda: kernel.dice_candidates(a, b, THRESHOLD, workers=CORES))  # noqa: B023
        t_lsh, res = timed(lambda: lsh_pairs(a, b))  # noqa: B023
        found, comparisons = res  # type: ignore[misc]
        _, i, j = full  # type: ignore[misc]
        exhaustive = set(zip(i.tolist(), j.tolist(), strict=True))
        recall = len(found & exhaustive) / max(len(exhaustive), 1)
        print(
            f"{n:9,} {anon} {t_full:13.2f} {t_lsh:7.2f} {t_anon / min(t_full, t_lsh):11.1f}"
            f" {comparisons:13,} {n * n / comparisons:7.0f}x {recall:8.4f}"
        )


def lsh_pairs(a: np.ndarray, b: np.ndarray) -> tuple[set[tuple[int, int]], int]:
    from concurrent.futures import ThreadPoolExecutor

    plan = blocking.plan([a, b], THRESHOLD)
    with ThreadPoolExecutor(CORES) as pool:
        ka, kb = pool.map(lambda d: blocking.band_keys(d, plan), [a, b])
        results = list(
            pool.map(
                lambda band: blocking.compare_band(a, b, ka[band], kb[band], THRESHOLD),
                range(plan.bands),
            )
        )
    _, i, j = blocking.dedupe(
        np.concatenate([r.sims for r in results]),
        np.concatenate([r.rows_a for r in results]),
        np.concatenate([r.rows_b for r in results]),
    )
    return set(zip(i.tolist(), j.tolist(), strict=True)), sum(r.comparisons for r in results)


def end_to_end(n: int, blocking_mode: str) -> None:
    print(f"\n## End to end through the matcher: {n:,} x {n:,}, blocking {blocking_mode}")
    pair = member_pair(n, seed=3)
    with tempfile.TemporaryDirectory() as tmp:
        encoded = []
        for name, clks in (("a", pair.a), ("b", pair.b)):
            encoded.append(
                write_encoded(
                    Path(tmp) / name,
                    clks=clks.tobytes(),
                    clk_bits=1024,
                    fingerprint=b"f" * 32,
                    ids=[str(x) for x in range(n)],
                    report={},
                )
            )
        del pair
        server = create_server("127.0.0.1:0", Path(tmp) / "data", "admin", workers=CORES)
        target = f"127.0.0.1:{server.port}"
        try:
            with MatcherClient(target, "admin") as op:
                proj = op.create_project("scale", ["a", "b"], blocking=blocking_mode)
            for name, enc in zip("ab", encoded, strict=True):
                with MatcherClient(target, proj.tokens[name]) as c:
                    dt, _ = timed(lambda c=c, enc=enc: c.upload("scale", enc))
                print(f"upload {n:,} CLKs ({name}): {dt:.1f} s")
            with MatcherClient(target, proj.tokens["a"]) as c:
                t0 = time.perf_counter()
                c.start_run("scale")
                last = None
                for status in c.watch_run("scale"):
                    last = status
                t_run = time.perf_counter() - t0
                assert last is not None and last.state == "done", last
                t_res, results = timed(lambda: c.results("scale"))
            print(f"run: {t_run:.1f} s, {last.groups:,} shared subjects")
            print(f"results ({len(results.hits):,} hits, streamed in batches): {t_res:.1f} s")  # type: ignore[attr-defined]
            print(
                f"peak resident memory of this process (server + clients): {peak_rss_gib():.2f} GiB"
            )
        finally:
            server.stop(grace=None)


def multiparty(count: int, n: int) -> None:
    print(f"\n## Multi-party: {count} members x {n:,} records, 10% held by all")
    datasets = members(count, n, overlap=0.1, seed=4)
    dt, result = timed(lambda: match(datasets, THRESHOLD, workers=CORES))
    r = result  # type: ignore[assignment]
    print(
        f"match ({r.method}): {dt:.1f} s, {r.comparisons:,} comparisons, {r.groups:,} groups, "
        f"{len(r.links):,} links; peak RSS {peak_rss_gib():.2f} GiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes only (~1 minute)")
    parser.add_argument(
        "--only",
        choices=["kernel", "growth", "end-to-end", "multiparty"],
        help="run one part of the full benchmark (at its full size)",
    )
    args = parser.parse_args()
    print(f"# blindmatch speed, {CORES} cores, kernel paths {kernel.paths()}")
    if args.only == "kernel":
        kernel_bench(2000, 100_000, 5)
    elif args.only == "growth":
        growth_bench([10_000, 100_000, 1_000_000], kernel_bench(2000, 100_000, 3), 100_000)
    elif args.only == "end-to-end":
        end_to_end(1_000_000, "auto")
    elif args.only == "multiparty":
        multiparty(5, 200_000)
    elif args.quick:
        rate = kernel_bench(1000, 20_000, 3)
        growth_bench([10_000, 20_000], rate, anonlink_max=20_000)
        end_to_end(20_000, "auto")
    else:
        rate = kernel_bench(2000, 100_000, 5)
        growth_bench([10_000, 100_000, 1_000_000], rate, anonlink_max=100_000)
        end_to_end(1_000_000, "auto")
        multiparty(5, 200_000)


if __name__ == "__main__":
    main()
