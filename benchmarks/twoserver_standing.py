"""One-record queries compared whole against a standing partner whose bits are converted once
(core/standing.py, core/standingquery.py; docs/privacy-design.md "A query against a standing
partner, converted once") beside the same queries by today's whole paths, in one run.

    .venv/bin/python benchmarks/twoserver_standing.py [--partner-records 1000,16000]
        [--queries 3] [--population households|messy] [--seed 1] [--no-blocks]

Members: the `--population`'s people (benchmarks/twoserver_people.py), encoded under the
shipped schema (schemas/person-uk.json: a record-level and a fallback CLK of 1,024 bits each,
its gap rule, cut-offs 0.8, 0.85, 0.9, 0.95; benchmarks/densearith.py `members`), XOR-shared
as `encode --two-server` shares them. The partner: member B's first N records, for each N of
`--partner-records`; the queries: member A's first `--queries` records, one record each.
Every party in this process, each role's own steps timed (`process_time`), bytes as
`linkbit.Transcript` counts them. For each N:

- the one-off conversion (`standing.convert`): CPU by role, bytes each way, wall, what each
  server keeps a record (`Partner.bytes_kept`);
- each query against the standing partner (`standingquery.compare`): CPU by role, bytes;
- the same query by pairs (the rule's boolean circuit a pair, core/gmwrule.py
  `rule_circuit`: the path core/partpath.py takes for a one-record query, under 64 pairs a
  row) and by blocks (core/densemargin.py `compare` on each block of the query's record and
  at most 1,024 partner records, core/denseblock.py `part_sides`'s cut; `--no-blocks`
  leaves it out);
- the ratios, a pair's CPU a query, and how many pairs ~5 s of CPU a query would compare.

Exit 1 where any path's link bits (every cut-off of every pair) differ from another's or
from the rule in the clear's.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import numpy.typing as npt

from benchmarks import densearith as bench
from blindmatch.client.encoding import sharing
from blindmatch.matcher.core import densemargin, linkbit, standing, standingquery
from blindmatch.matcher.core.denseblock import ROWS
from blindmatch.matcher.core.margincircuit import plan
from blindmatch.matcher.domain import Rule

CUTOFFS = bench.CUTOFFS
ROLES = ("S1", "S2", "C")
BUDGET_S = 5.0  # the CPU a query is allowed, to size QUERY_WHOLE_PAIRS
CANDIDATES = 1000  # A's records the queries are picked from
Clks = npt.NDArray[np.uint8]
Bits = npt.NDArray[np.bool_]
Shares = tuple[list[Clks], list[Clks]]
Pops = tuple[list[npt.NDArray[np.uint32]], list[npt.NDArray[np.uint32]]]


def arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--partner-records", default="1000,16000",
                        help="the standing partner's records, comma-separated")  # fmt: skip
    parser.add_argument("--queries", type=int, default=3, help="one-record queries each")
    parser.add_argument("--population", choices=["households", "messy"], default="households")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-blocks", action="store_true", help="no by-blocks baseline")
    return parser


def _peak() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _split(rows: list[Clks]) -> tuple[Shares, Pops]:
    shares = [sharing.split_shares(r) for r in rows]
    split = [linkbit.split_popcounts(sharing.popcounts(r), 8 * r.shape[1]) for r in rows]
    return ([s[0] for s in shares], [s[1] for s in shares]), ([s[0] for s in split],
                                                             [s[1] for s in split])  # fmt: skip


def _sent(t: linkbit.Transcript) -> str:
    return ", ".join(f"{a}->{b} {v:,}" for (a, b), v in sorted(t.sent.items()))


def by_blocks(q: list[Clks], b: list[Clks], rule: Rule, clock: dict[str, float],
              t: linkbit.Transcript) -> Bits:  # fmt: skip
    """The query's record with each run of ROWS partner records as a block, by the margin."""
    out = []
    for at in range(0, len(b[0]), ROWS):
        rows = [np.vstack([x, y[at : at + ROWS]]) for x, y in zip(q, b, strict=True)]
        shares, pops = _split(rows)
        out.append(densemargin.compare(shares[0], shares[1], pops[0], pops[1], len(q[0]),
                                       CUTOFFS, rule, t, clock))  # fmt: skip
    return np.hstack(out)


def run(n: int, a: list[Clks], b_all: list[Clks], rule: Rule, args: argparse.Namespace) -> bool:
    b = [np.ascontiguousarray(x[:n]) for x in b_all]
    widths = tuple(8 * x.shape[1] for x in b)
    p = plan(widths[0], widths[1], CUTOFFS, rule)
    shares, pops = _split(b)
    t, clock = linkbit.Transcript(), dict[str, float]()
    w0 = time.perf_counter()
    s = standing.deal(n, widths)
    partners = standing.convert(s, p, shares, pops, t, clock)
    wall = time.perf_counter() - w0
    del shares
    held = [side.bytes_kept() / n for side in partners]
    cpu = ", ".join(f"{r} {clock.get(r, 0.0):.2f}" for r in ROLES)
    print(f"\npartner of {n:,} records: the one-off conversion CPU s {cpu} (all "
          f"{sum(clock.values()):.2f}), wall {wall:.1f} s; bytes {_sent(t)} "
          f"({sum(t.sent.values()) / n:,.0f} a record); kept a record: S1 {held[0]:,.0f} B, "
          f"S2 {held[1]:,.0f} B; peak RSS so far {_peak():,.0f} MiB")  # fmt: skip
    kept = dataclasses.replace(s)
    kept.keep()  # the same partner, C keeping M_B rather than regenerating it a query
    paths = ["standing", "C keeps", "pairs"] + ([] if args.no_blocks else ["blocks"])
    totals: dict[str, list[float]] = {k: [0.0, 0.0] for k in paths}  # CPU s, bytes
    same = True
    for k in range(args.queries):
        q = [x[k : k + 1] for x in a]
        truth = bench.clear([np.vstack([x, y]) for x, y in zip(q, b, strict=True)], 1, rule)
        got = {}
        for path in paths:
            t, clock = linkbit.Transcript(), dict[str, float]()
            w0 = time.perf_counter()
            if path in ("standing", "C keeps"):
                qs, qp = _split(q)
                dealer = s if path == "standing" else kept
                got[path] = standingquery.compare(dealer, partners, qs, qp, CUTOFFS, rule, t,
                                                  clock)  # fmt: skip
            elif path == "pairs":
                rows = [np.vstack([x, y]) for x, y in zip(q, b, strict=True)]
                sh, po = _split(rows)
                got[path] = bench.boolean(sh[0], sh[1], po[0], po[1], 1, n, rule, clock, t)
            else:
                got[path] = by_blocks(q, b, rule, clock, t)
            wall = time.perf_counter() - w0
            totals[path][0] += sum(clock.values())
            totals[path][1] += sum(t.sent.values())
            cpu = ", ".join(f"{r} {1e3 * clock.get(r, 0.0):,.0f}" for r in ROLES)
            print(f"  query {k}, {path:9s}: CPU ms {cpu} (all {1e3 * sum(clock.values()):,.0f}, "
                  f"{1e6 * sum(clock.values()) / n:.2f} us a pair); bytes {_sent(t)} "
                  f"({sum(t.sent.values()) / n:,.0f} a pair); wall {wall:.2f} s")  # fmt: skip
            same = same and bool((got[path] == truth).all())
        print(f"  query {k}: {int(truth[0].sum())} pairs at the threshold; every path's bits "
              f"the rule in the clear's: {same}")  # fmt: skip
    per = {k: (v[0] / args.queries, v[1] / args.queries) for k, v in totals.items()}
    for path in paths[:2]:
        us = 1e6 * per[path][0] / n
        print(f"  {path}, mean of {args.queries} queries: {1e3 * per[path][0]:,.0f} ms CPU "
              f"({us:.2f} us a pair), {per[path][1] / n:,.0f} bytes a pair; at "
              f"{BUDGET_S:.0f} s of CPU a query: {BUDGET_S / (us * 1e-6):,.0f} pairs")  # fmt: skip
    for path in paths[2:]:
        print(f"  by {path}: {1e6 * per[path][0] / n:.2f} us a pair; CPU / standing "
              f"{per[path][0] / per['standing'][0]:.1f}x, / C keeps "
              f"{per[path][0] / per['C keeps'][0]:.1f}x; bytes / standing "
              f"{per[path][1] / per['standing'][1]:.1f}x")  # fmt: skip
    print(f"  peak RSS of this process: {_peak():,.0f} MiB")
    return same


def main() -> int:
    args = arguments().parse_args()
    sizes = [int(x) for x in args.partner_records.split(",")]
    load = argparse.Namespace(records=args.queries, partner_records=max(sizes),
                              population=args.population, seed=args.seed)  # fmt: skip
    load.records = max(args.queries, CANDIDATES)
    rows, rule = bench.members(load)
    b = [r[load.records :] for r in rows]
    a = [r[: load.records] for r in rows]
    # The queries: A's first records that link (at the threshold, in the clear) with a record
    # of the smallest partner, then A's first others.
    n = min(sizes)
    links = bench.clear([np.vstack([x, y[:n]]) for x, y in zip(a, b, strict=True)], len(a[0]),
                        rule)[0].reshape(len(a[0]), n).any(axis=1)  # fmt: skip
    order = np.concatenate([np.flatnonzero(links), np.flatnonzero(~links)])[: args.queries]
    a = [np.ascontiguousarray(x[order]) for x in a]
    print(f"{args.population}, seed {args.seed}: one-record queries against standing partners "
          f"of {', '.join(f'{n:,}' for n in sizes)} records, CLKs of {8 * a[0].shape[1]:,} and "
          f"{8 * a[1].shape[1]:,} bits, rule {rule.text()}, cut-offs {CUTOFFS}; "
          f"load {', '.join(f'{x:.1f}' for x in os.getloadavg())}")  # fmt: skip
    ok = True
    for n in sizes:
        ok = run(n, a, b, rule, args) and ok
    print(f"\nevery path's link bits the same and the rule in the clear's: {ok}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
