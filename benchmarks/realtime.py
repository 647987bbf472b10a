"""Real-time query latency: one-record queries against partners' standing indexes.

Starts `blindmatch serve` as its own process on loopback, gives three partners a
standing index of N synthetic CLKs each through ChangeIndex (the same RPC `blindmatch
index sync` uses), then has 20 concurrent queriers (threads of this process, one
channel each) ask single-record queries, half of them noisy copies of indexed records
(hits) and half fresh random CLKs (no hits), and prints p50/p95/p99 latency. It also
checks every planted hit is found, and that an index change is visible to the very
next query.

    .venv/bin/python benchmarks/realtime.py                      # 3 x 1,000,000 records
    .venv/bin/python benchmarks/realtime.py --records 100000 --queries 20

Synthetic CLKs are uniformly random 1024-bit strings (popcount about 512 +- 16); with
real person CLKs the popcounts are as tightly bunched, so the popcount pre-filter skips
little at threshold 0.8 either way and the scan is close to brute force.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.cliflow import serve
from client.api import MatcherClient

CLK_BITS = 1024
CLK_BYTES = CLK_BITS // 8
FINGERPRINT = bytes(range(32))
PARTNERS = ("north", "south", "east")
QUERIER = "west"


def random_clks(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 256, size=(n, CLK_BYTES), dtype=np.uint8)


def noisy(rng: np.random.Generator, clks: np.ndarray, flip: float) -> np.ndarray:
    """Copies with about `flip` of their bits flipped (Dice stays well above 0.8 at 0.03)."""
    bits = np.unpackbits(clks, axis=1)
    bits ^= (rng.random(bits.shape) < flip).astype(np.uint8)
    return np.packbits(bits, axis=1)


def load_index(target: str, token: str, rng: np.random.Generator, n: int) -> np.ndarray:
    clks = np.empty((n, CLK_BYTES), dtype=np.uint8)
    with MatcherClient(target, token) as client:
        step = 250_000
        for start in range(0, n, step):
            block = random_clks(rng, min(step, n - start))
            clks[start : start + len(block)] = block
            puts = [(f"r{start + i}", block[i].tobytes()) for i in range(len(block))]
            client.change_index("rt", clk_bits=CLK_BITS, fingerprint=FINGERPRINT, puts=puts)
    return clks


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000, help="per partner")
    parser.add_argument("--queriers", type=int, default=20, help="concurrent queriers")
    parser.add_argument("--queries", type=int, default=25, help="queries per querier")
    parser.add_argument("--seed", type=int, default=6)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)

    with tempfile.TemporaryDirectory(prefix="bm-realtime-") as tmp, serve(Path(tmp)) as served:
        from benchmarks.cliflow import blindmatch

        env = {"BLINDMATCH_ADMIN_TOKEN": served.admin_token}
        import json

        created = json.loads(
            blindmatch("project", "create", "rt", "--members", ",".join((*PARTNERS, QUERIER)),
                       "--json", "--server", served.target, env=env)
        )  # fmt: skip
        tokens = created["tokens"]
        with MatcherClient(served.target, served.admin_token) as op:
            op.set_query_limits("rt", per_minute=10**9, per_day=10**9)

        print(
            f"loading {len(PARTNERS)} partners x {args.records:,} records through ChangeIndex ...",
            flush=True,
        )
        held = {}
        for partner in PARTNERS:
            t0 = time.perf_counter()
            held[partner] = load_index(served.target, tokens[partner], rng, args.records)
            print(f"  {partner}: {time.perf_counter() - t0:.1f} s", flush=True)

        total = args.queriers * args.queries
        planted = []
        for i in range(total):
            if i % 2 == 0:
                partner = PARTNERS[(i // 2) % len(PARTNERS)]
                row = int(rng.integers(0, args.records))
                planted.append((noisy(rng, held[partner][row : row + 1], 0.03)[0], partner))
            else:
                planted.append((random_clks(rng, 1)[0], None))

        latencies: list[float] = []
        missed: list[int] = []
        lock = threading.Lock()
        start_gate = threading.Barrier(args.queriers)

        def querier(k: int) -> None:
            with MatcherClient(served.target, tokens[QUERIER]) as client:
                client.query("rt", planted[0][0].tobytes(), clk_bits=CLK_BITS,
                             fingerprint=FINGERPRINT, purpose="warm-up")  # fmt: skip
                start_gate.wait()
                for j in range(args.queries):
                    i = k * args.queries + j
                    clk, partner = planted[i]
                    t0 = time.perf_counter()
                    answer = client.query(
                        "rt", clk.tobytes(), clk_bits=CLK_BITS, fingerprint=FINGERPRINT,
                        purpose=f"bench {i}",
                    )  # fmt: skip
                    elapsed = time.perf_counter() - t0
                    found = [m.partner for m in answer.results[0]]
                    with lock:
                        latencies.append(elapsed * 1000)
                        if partner is not None and partner not in found:
                            missed.append(i)

        print(f"{args.queriers} queriers x {args.queries} single-record queries ...", flush=True)
        t0 = time.perf_counter()
        threads = [threading.Thread(target=querier, args=(k,)) for k in range(args.queriers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0

        with (
            MatcherClient(served.target, tokens["north"]) as north,
            MatcherClient(served.target, tokens[QUERIER]) as asker,
        ):
            fresh = random_clks(rng, 1)[0].tobytes()
            t1 = time.perf_counter()
            north.change_index("rt", clk_bits=CLK_BITS, fingerprint=FINGERPRINT,
                               puts=[("fresh", fresh)])  # fmt: skip
            change_ms = (time.perf_counter() - t1) * 1000
            seen = asker.query("rt", fresh, clk_bits=CLK_BITS, fingerprint=FINGERPRINT,
                               purpose="visibility")  # fmt: skip
            visible = [m.partner for m in seen.results[0]] == ["north"]

    print()
    print(f"machine: {os.cpu_count()} cores (shared with other work: numbers are noisy)")
    print(f"partners: {len(PARTNERS)} x {args.records:,} records, {CLK_BITS}-bit CLKs")
    print(f"queries: {len(latencies)} from {args.queriers} concurrent queriers in {wall:.1f} s "
          f"({len(latencies) / wall:.1f} queries/s)")  # fmt: skip
    print(
        f"latency ms: p50 {statistics.median(latencies):.1f}  "
        f"p95 {percentile(latencies, 95):.1f}  p99 {percentile(latencies, 99):.1f}  "
        f"max {max(latencies):.1f}"
    )
    print(f"planted hits missed: {len(missed)} of {(total + 1) // 2}")
    print(f"index change (1 put) acknowledged in {change_ms:.1f} ms; "
          f"visible to the next query: {visible}")  # fmt: skip
    return 0 if not missed and visible else 1


if __name__ == "__main__":
    raise SystemExit(main())
