"""One-record queries WITHOUT a date of birth compared whole against a standing partner over
gRPC (fallstand): their pairs are all the query's fallback part (the fallback CLK's Dice
alone), which now goes against the partner converted once (the kernel's test on the query's
fallback-CLK H shares: core/partpath.py `fallback_standing`), beside by pairs (the kernel's
circuit a pair, its path before), in one run:

    .venv/bin/python benchmarks/twoserver_standing_fallback.py [--partner-records 64000]
        [--queries 3] [--population households|messy] [--seed 1] [--standing-bytes N]

S1, S2 and C in this process as benchmarks/twoserver_standing_rpc.py runs them (its helpers:
loopback gRPC, S1 comparing every pair, the shipped schema's two 1,024-bit CLKs and its gap
rule). A query's record lacks the date of birth as the combiner sees it (its record CLK made
its fallback CLK: core/fallback.py `lacking`, from the popcounts); alternately one of the
partner's own records and one of A's. The partner converted first (by such a query: its
fallback part starts the conversion now), then each query asked standing and by pairs, and
once more with its date of birth (the record part standing: the reference). Per query and
path: CPU of this process (every party), wall, bytes, the links; whether the paths agree.
Exit 1 where they differ.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from benchmarks import densearith as bench
from benchmarks.twoserver_standing_rpc import (
    NAMES,
    _peak,
    _query,
    _roles,
    _shared,
    _stop,
    _upload,
    ask,
)
from benchmarks.workdir import add_keep, work_dir
from blindmatch.matcher.rpc.twoserver_standdeal import Conversions


def _lacking(q: list[np.ndarray]) -> list[np.ndarray]:  # type: ignore[type-arg]
    """The record as one lacking a date of birth to the combiner: its record CLK its
    fallback CLK (the popcounts equal: core/fallback.py `lacking_from_popcounts`)."""
    return [q[1].copy(), q[1]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--partner-records", type=int, default=64_000)
    parser.add_argument("--queries", type=int, default=3, help="one-record queries")
    parser.add_argument("--population", choices=["households", "messy"], default="households")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--standing-bytes", type=int, default=None,
                        help="S1's and S2's bound on partners kept (one that fits it "
                             "only without [M_B] is kept so: less memory)")  # fmt: skip
    add_keep(parser)
    args = parser.parse_args()
    n = args.partner_records
    load = argparse.Namespace(records=args.queries, partner_records=n,
                              population=args.population, seed=args.seed)  # fmt: skip
    rows, rule = bench.members(load)
    a = [np.ascontiguousarray(r[: args.queries]) for r in rows]
    b = [np.ascontiguousarray(r[args.queries :]) for r in rows]
    bits = [8 * int(x.shape[1]) for x in b]
    print(f"{args.population}, seed {args.seed}: one-record queries without a date of birth "
          f"against a standing partner of {n:,} records, rule {rule.text()}; load "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)  # fmt: skip
    same, got = True, {"standing": [], "pairs": [], "with a DOB": []}  # type: ignore[var-annotated]
    with work_dir("twoserver-standing-fallback", args.keep) as work:
        roles = _roles(work, "f", args.standing_bytes)
        try:
            _upload(roles, NAMES[1], _shared([x[:n] for x in b]), rule)
            conversions = Conversions()
            _upload(roles, NAMES[0], _shared(_lacking(_query(1, a, b))), rule)
            ask(roles, [1, n], bits, rule, conversions)  # its fallback part converts
            assert conversions.idle(7200) and conversions.converted == 1
            for k in range(args.queries):
                q, found = _query(k, a, b), {}
                for path in got:
                    one = q if path == "with a DOB" else _lacking(q)
                    _upload(roles, NAMES[0], _shared(one), rule)
                    queried = conversions.queried
                    kept = None if path == "pairs" else conversions
                    links, cpu, wall, sent = ask(roles, [1, n], bits, rule, kept)
                    stood = conversions.queried - queried
                    found[path] = links
                    got[path].append((cpu, wall, sent))
                    print(f"  query {k}, {path:10s}: CPU {cpu:.2f} s ({1e6 * cpu / n:.1f} us a "
                          f"pair), wall {wall:.2f} s, {sent / n:,.0f} bytes a pair; "
                          f"{len(links)} links; parts standing {stood}", flush=True)  # fmt: skip
                same = same and found["standing"] == found["pairs"]
        finally:
            _stop(roles)
    med = {p: [statistics.median(x[i] for x in v) for i in range(3)] for p, v in got.items()}
    for path, m in med.items():
        print(f"  {path}: median CPU {m[0]:.2f} s ({1e6 * m[0] / n:.1f} us a pair), wall "
              f"{m[1]:.2f} s, {m[2] / n:,.0f} bytes a pair", flush=True)  # fmt: skip
    s, p = med["standing"], med["pairs"]
    print(f"without a DOB, by pairs / standing: CPU {p[0] / s[0]:.1f}x, wall {p[1] / s[1]:.1f}x, "
          f"bytes {p[2] / s[2]:.1f}x; the same links, buckets and rows: {same}; peak RSS "
          f"{_peak():,.0f} MiB", flush=True)  # fmt: skip
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
