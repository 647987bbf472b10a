"""S1's and S2's views of a small member blocked against a large one over S1's second cap,
attacked (issue 18: the second cap's blocked pairs).

    nice -n 10 .venv/bin/python benchmarks/twoserver_overcap.py [--population households|messy]
        [--records 3999] [--partner-records 16005] [--seed 1] [--known 0 10 50]
        [--check 300 2000] [--exhaustive-pairs N] [--near 32] [--dense-too] [--clk-baseline]

S1 compares a pair of members without blocking where their product is at most its cap (16
million pairs), or, the smaller under 4,000 records, at most its smaller-member cap (64
million: matcher/core/exhaustive.py `admits`); beyond both it blocks them, so S1 learns the
candidate pairs and S2 each candidate's count of shared bands. The smallest such pair, 3,999
records against 16,005, does not fit `benchmarks/twoserver.py --view roles` in 4 GB: the
sealed uploads alone pass 3.3 GB while being sealed (measured, killed at 4.0 GB). So here
the two views are made from the members' band keys as the client computes them
(client/tools/privacy/twokeys.py, which `privacy-check --partner-records` uses too:
`sharing.record_keys` under the project's secret, both CLKs): S2's view, each pair's count
of bands whose keys are equal on either CLK (every matched token S2 opens, both CLKs added);
S1's, the same pairs (the candidates S2's expansion hands S1). `--check A B` first checks
both against the roles' own views (matcher/core/twoviews.py `role_views`, the run's S1 join
and S2 expansion, blocked) on A's first A records and B's first B: it exits 1 if they
differ. Then `privacy-check --mode two-server`'s attacks on them
(client/tools/privacy/twocheck.py `check_members`, two members, roles S1 and S2:
trilateration, S2's counts under each of its four readings), blind and with `--known` pairs
of A; S2's view of A's own pairs (the reused tokens) is not built here. `--near K` (default
32): the attacker holds its Dice levels for A's people only and the attack's side of B
sparse, each record of B scored only against the K nearest records of its seeded candidates'
identities (client/tools/privacy/trisparse.py): the dense attack's (B, B) graph and scores
are 4.1 + 16 GB at 64,000 records; `--near 0`: dense; `--dense-too`: both, one after the
other, on the same views. `--clk-baseline`: the graph-matching attack on A's CLKs in a CLK
project, the same secret and known pairs (benchmarks/clk_baseline.py). Keys from `--seed`
(`twocheck.seeded_keys`).
`--exhaustive-pairs 0`: a pair S1's caps would compare whole, blocked (a smaller run's check).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import clk_baseline
from benchmarks.graph_attack import with_fallback
from benchmarks.twoserver_people import generator_three
from blindmatch.client.encoding.harden import NONE
from blindmatch.client.encoding.schema import load_schema
from blindmatch.client.tools.privacy import twocheck
from blindmatch.client.tools.privacy.twokeys import band_keys, views, views_by_parts
from blindmatch.matcher.core import exhaustive
from blindmatch.matcher.core.twoviews import role_views

ROOT = Path(__file__).resolve().parent.parent
Codes = npt.NDArray[np.int64]


def _sliced(keys: Any, n: int) -> Any:
    return [k[:n] for k in keys[0]], keys[1][:n]


def check_path(schema: Any, secret: bytes, rows: Any, keys: Any, n: tuple[int, int]) -> bool:
    """`views` on A's first n[0] records and B's first n[1] equal the roles' own (blocked)."""
    uploads = [twocheck._upload(schema, r[:k], secret, NONE) for r, k in zip(rows, n, strict=True)]
    real = role_views(uploads, 0.8, schema.rule, exhaustive=0, clear=True)
    lean = views(_sliced(keys[0], n[0]), _sliced(keys[1], n[1]))
    same = all(np.array_equal(real[r][0], lean[r][0]) and np.array_equal(real[r][1], lean[r][1])
               for r in ("S1", "S2"))  # fmt: skip
    print(f"path check, {n[0]:,} x {n[1]:,} blocked: the roles' S1 {len(real['S1'][0]):,} "
          f"pairs, S2 {int(real['S2'][1].sum()):,} tokens opened; these views "
          f"{'the same' if same else 'DIFFER'}", flush=True)  # fmt: skip
    return same


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--population", choices=("households", "messy"), default="households")
    parser.add_argument("--records", type=int, default=3999)
    parser.add_argument("--partner-records", type=int, default=16005)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--known", type=int, nargs="+", default=[0, 10, 50])
    parser.add_argument(
        "--check",
        type=int,
        nargs=2,
        default=[300, 2000],
        metavar=("A", "B"),
        help="check the views against the roles' on A x B records first",
    )
    parser.add_argument(
        "--exhaustive-pairs",
        type=int,
        metavar="N",
        help="S1's cap (default: its own; 0: every pair blocked, a smaller run's check)",
    )
    parser.add_argument(
        "--near",
        type=int,
        default=32,
        metavar="K",
        help="the attack's side of B held sparse, over each record's K nearest (0: dense)",
    )
    parser.add_argument(
        "--dense-too",
        action="store_true",
        help="also the dense attack (the whole (B, B) graph and scores), printed beside",
    )
    parser.add_argument(
        "--clk-baseline",
        action="store_true",
        help="also the graph-matching attack on A's CLKs (the baseline)",
    )
    args = parser.parse_args()
    n, m = args.records, args.partner_records
    cap = exhaustive.or_default(args.exhaustive_pairs)
    if exhaustive.admits(n, m, cap, exhaustive.small_or_default(None)):
        raise SystemExit(f"{n:,} x {m:,}: S1 compares them without blocking (no view to attack)")
    shipped = load_schema(ROOT / "schemas" / "person-uk.json")
    t0 = time.process_time()
    with tempfile.TemporaryDirectory(prefix="blindmatch-overcap-") as tmp:
        loaded = generator_three(Path(tmp), args.population, args.seed, max(n, m),
                                 with_fallback(shipped, False))  # fmt: skip
    loaded[0] = (loaded[0][0][:n], loaded[0][1][:n])  # A: n random people of B's m
    secret, attacker = twocheck.seeded_keys(args.seed)
    checked = (loaded[0][0], loaded[1][0][: args.check[1]])  # B's keys: its first records
    keys = [band_keys(shipped, rows, secret) for rows in checked]
    small = exhaustive.small_or_default(None)
    print(f"{args.population}, seed {args.seed}: A {n:,} records against B {m:,} ({n * m:,} "
          f"pairs, over S1's caps of {cap:,} and {small:,}: blocked); the data and keys "
          f"{time.process_time() - t0:.0f} CPU s", flush=True)  # fmt: skip
    if not check_path(shipped, secret, [loaded[0][0], loaded[1][0]], keys, tuple(args.check)):
        return 1
    made = views_by_parts(shipped, secret, keys[0], loaded[1][0])
    del keys
    print(f"S1: {len(made['S1'][0]):,} candidate pairs; S2: {len(made['S2'][0]):,} pairs, "
          f"{int(made['S2'][1].sum()):,} tokens opened", flush=True)  # fmt: skip
    for near in ([0] if args.dense_too and args.near else []) + [args.near]:
        t1 = time.process_time()
        report = twocheck.check_members(
            loaded, shipped, secret, role_views, source=f"{args.population} ({n:,} against "
            f"{m:,}, seed {args.seed})", known=args.known, attacker_key=attacker, third=False,
            roles=["S1", "S2"], near=near, keyed=lambda _a, _b: made,  # the views: made above
        )  # fmt: skip
        how = f"B's side sparse, each record's {near} nearest" if near else "dense"
        print(f"the attack {how} ({time.process_time() - t1:.0f} CPU s):\n{report.render()}",
              flush=True)  # fmt: skip
    if args.clk_baseline:
        clk_baseline.report(shipped, loaded[0], loaded[2], secret, args.known, attacker)
    print(f"{time.process_time() - t0:.0f} CPU s in all", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
