"""One-record queries compared whole against a standing partner whose bits are converted once
(core/standing.py, core/standingquery.py; docs/privacy-design.md "A query against a standing
partner, converted once") beside the same queries by today's whole paths, in one run.

    .venv/bin/python benchmarks/twoserver_standing.py [--partner-records 1000,16000]
        [--queries 3] [--population households|messy] [--seed 1] [--no-blocks] [--no-pairs]
        [--server-mask keep|regenerate|both] [--no-c-keeps] [--split] [--repeat-from K]

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

`--repeat-from K`: member B's first K records encoded, repeated to the largest partner (the
people generator and encoding take ~0.8 ms a record: 1,000,000 would take ~14 min); every
record is still converted and compared. `--server-mask`: S1 and S2 keep their [M_B] (`keep`,
the default), regenerate it from their seeds at each query (`regenerate`: converted without
it, `Partner.forget_mask`; what makes a partner of 1,000,000 records fit a smaller host), or
both paths on the same conversion (`both`: "S regen" beside "standing"). `--no-c-keeps`
leaves out C keeping M_B (4 bytes a bit in this process), `--no-pairs` the by-pairs
baseline. `--split`: one more standing query per size, its CPU split by step (C's Z, Z' with
M_B's streams, each server's products, the check's digests, the margin;
core/standingrows.py's functions or, on code without it, numpy's einsum and
`Standing.mask` by caller), and the AES stream alone for M_B's bytes.

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
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import numpy.typing as npt

from benchmarks import densearith as bench
from blindmatch.client.encoding import sharing
from blindmatch.matcher.core import densemargin, linkbit, standing, standingquery
from blindmatch.matcher.core.denseblock import ROWS
from blindmatch.matcher.core.margincircuit import Plan, plan
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
    parser.add_argument("--no-pairs", action="store_true", help="no by-pairs baseline")
    parser.add_argument("--no-c-keeps", action="store_true", help="no path with C keeping M_B")
    parser.add_argument("--server-mask", choices=["keep", "regenerate", "both"], default="keep",
                        help="S1, S2 keep [M_B], regenerate it a query, or both")  # fmt: skip
    parser.add_argument("--split", action="store_true", help="a standing query's CPU by step")
    parser.add_argument("--repeat-from", type=int, default=0,
                        help="B's first K records, repeated to the largest size")  # fmt: skip
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


STANDING = ("standing", "C keeps", "S regen", "S regen, C keeps")


def _convert(s: standing.Standing, p: Plan, shares: Shares, pops: Pops, t: linkbit.Transcript,
             clock: dict[str, float], keep_mask: bool,
             ) -> tuple[standing.Partner, standing.Partner]:  # fmt: skip
    if keep_mask:  # (the call main's code takes too: --split runs there)
        return standing.convert(s, p, shares, pops, t, clock)
    return standing.convert(s, p, shares, pops, t, clock, keep_mask=False)


_CHECK = "S1+S2: [M_B] times D_Q and rho (the check's product)"
_D_B = "S1+S2: D_B times D_Q + [m] (S1), [m] (S2)"
LABELS = {  # (function, its caller's module and function): the step it is
    ("mask", "standingquery", "deal"): "C: M_B regenerated (both seeds' AES streams, summed)",
    ("einsum", "standingquery", "deal"): "C: Z, Z' (M_B times m and m')",
    ("rows_times", "standingquery", "deal"): "C: Z, Z' (M_B times m and m')",
    ("stream_times", "standingquery", "deal"): "C: M_B's streams and Z, Z' (fused)",
    ("einsum", "standingquery", "check"): _CHECK,
    ("rows_times", "standingquery", "_masked"): _CHECK,
    ("stream_times", "standingquery", "_masked"): "S1+S2: [M_B] regenerated, times D_Q and rho",
    ("einsum", "standingquery", "finish"): _D_B,
    ("rows_times", "standingquery", "finish"): _D_B,
}


def split(query: Callable[[dict[str, float]], object], n: int, widths: Sequence[int]) -> None:
    """One standing query's CPU by step: the functions of each step timed where they are
    called (core/standingrows.py's on this branch, numpy's einsum on code without it)."""
    spent: dict[str, float] = {}
    undo: list[tuple[object, str, object]] = []

    def wrap(owner: object, name: str, label: str | None = None) -> None:
        f = getattr(owner, name, None)
        if f is None:
            return

        def timed(*args: object, **kw: object) -> object:
            frame = sys._getframe(1)
            while frame.f_code.co_name.startswith("<") and frame.f_back is not None:
                frame = frame.f_back  # a comprehension's: the function it is in
            key = (name, frame.f_globals["__name__"].rsplit(".", 1)[-1], frame.f_code.co_name)
            t0 = time.process_time()
            try:
                return f(*args, **kw)  # type: ignore[operator]
            finally:
                step = label or LABELS.get(key, f"other {name} ({key[1]}.{key[2]})")
                spent[step] = spent.get(step, 0.0) + time.process_time() - t0

        setattr(owner, name, timed)
        undo.append((owner, name, f))

    for name in ("rows_times", "stream_times"):
        wrap(standingquery, name)
    wrap(np, "einsum")
    wrap(standing.Standing, "mask")
    wrap(standingquery, "_digest", "S1+S2: the check's digests")
    wrap(standingquery, "_margin", "the margin, all roles (C's deals, the circuits, outputs)")
    wrap(standing, "convert_bits", "the query's bits by daBits, all roles")
    wrap(standing, "convert_popcounts", "the query's popcounts by daBits, all roles")
    clock: dict[str, float] = {}
    try:
        query(clock)
    finally:
        for owner, name, f in reversed(undo):
            setattr(owner, name, f)
    total = sum(clock.values())
    roles = ", ".join(f"{r} {1e3 * clock.get(r, 0):,.0f}" for r in ROLES)
    print(f"  a standing query's CPU by step ({1e3 * total:,.0f} ms, {1e6 * total / n:.2f} us a "
          f"pair; by role {roles} ms):")  # fmt: skip
    for label, v in sorted(spent.items(), key=lambda x: -x[1]):
        print(f"    {label}: {1e3 * v:,.1f} ms ({1e6 * v / n:.2f} us a pair)")
    print(f"    the rest: {1e3 * (total - sum(spent.values())):,.1f} ms")
    t0, seed = time.process_time(), bytes(linkbit.SEED_BYTES)
    for start, stop in standing.chunks(n):
        for _ in (0, 1):
            linkbit.prg(seed, (stop - start) * sum(widths) // 2)
    aes = time.process_time() - t0
    print(
        f"    (the AES-CTR stream alone for M_B's two shares, {8 * n * sum(widths):,} bytes: "
        f"{1e3 * aes:,.1f} ms, {8 * n * sum(widths) / aes / 1e9:.1f} GB/s)"
    )


def _paths(args: argparse.Namespace) -> list[str]:
    regen = args.server_mask == "regenerate"
    paths = ["S regen" if regen else "standing"]
    if not args.no_c_keeps:
        paths.append("S regen, C keeps" if regen else "C keeps")
    if args.server_mask == "both":
        paths += ["S regen"] + ([] if args.no_c_keeps else ["S regen, C keeps"])
    return paths + ([] if args.no_pairs else ["pairs"]) + ([] if args.no_blocks else ["blocks"])


def run(n: int, a: list[Clks], b_all: list[Clks], rule: Rule, args: argparse.Namespace) -> bool:
    b = [np.ascontiguousarray(x[:n]) for x in b_all]
    widths = tuple(8 * x.shape[1] for x in b)
    p = plan(widths[0], widths[1], CUTOFFS, rule)
    shares, pops = _split(b)
    t, clock = linkbit.Transcript(), dict[str, float]()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    w0 = time.perf_counter()
    s = standing.deal(n, widths)
    partners = _convert(s, p, shares, pops, t, clock, args.server_mask != "regenerate")
    wall = time.perf_counter() - w0
    del shares
    held = [side.bytes_kept() / n for side in partners]
    cpu = ", ".join(f"{r} {clock.get(r, 0.0):.2f}" for r in ROLES)
    print(f"\npartner of {n:,} records (load {load}): the one-off conversion CPU s {cpu} (all "
          f"{sum(clock.values()):.2f}), wall {wall:.1f} s; bytes {_sent(t)} "
          f"({sum(t.sent.values()) / n:,.0f} a record); kept a record: S1 {held[0]:,.0f} B, "
          f"S2 {held[1]:,.0f} B; peak RSS so far {_peak():,.0f} MiB")  # fmt: skip
    paths = _paths(args)
    kept = dataclasses.replace(s)
    if any("C keeps" in x for x in paths):
        kept.keep()  # the same partner, C keeping M_B rather than regenerating it a query
    # S1 and S2 regenerating their [M_B]: the same partner without it
    forgot = (dataclasses.replace(partners[0], mask=[]), dataclasses.replace(partners[1], mask=[]))
    totals: dict[str, list[float]] = {k: [0.0, 0.0] for k in paths}  # CPU s, bytes
    same = True
    for k in range(args.queries):
        q = [x[k : k + 1] for x in a]
        truth = bench.clear([np.vstack([x, y]) for x, y in zip(q, b, strict=True)], 1, rule)
        got = {}
        for path in paths:
            t, clock = linkbit.Transcript(), dict[str, float]()
            w0 = time.perf_counter()
            if path in STANDING:
                qs, qp = _split(q)
                dealer = kept if "C keeps" in path else s
                sides = forgot if "S regen" in path else partners
                got[path] = standingquery.compare(dealer, sides, qs, qp, CUTOFFS, rule, t,
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
    ours = [x for x in paths if x in STANDING]
    for path in ours:
        us = 1e6 * per[path][0] / n
        print(f"  {path}, mean of {args.queries} queries: {1e3 * per[path][0]:,.0f} ms CPU "
              f"({us:.2f} us a pair), {per[path][1] / n:,.0f} bytes a pair; at "
              f"{BUDGET_S:.0f} s of CPU a query: {BUDGET_S / (us * 1e-6):,.0f} pairs")  # fmt: skip
    for path in paths[len(ours) :]:
        vs = ", ".join(f"/ {x} {per[path][0] / per[x][0]:.1f}x" for x in ours)
        print(f"  by {path}: {1e6 * per[path][0] / n:.2f} us a pair; CPU {vs}; bytes / "
              f"{ours[0]} {per[path][1] / per[ours[0]][1]:.1f}x")  # fmt: skip
    if args.split:
        qs, qp = _split([x[:1] for x in a])
        split(lambda c: standingquery.compare(s, partners, qs, qp, CUTOFFS, rule, None, c), n,
              widths)  # fmt: skip
    print(f"  peak RSS of this process: {_peak():,.0f} MiB")
    return same


def main() -> int:
    args = arguments().parse_args()
    sizes = [int(x) for x in args.partner_records.split(",")]
    made = min(max(sizes), args.repeat_from or max(sizes))
    load = argparse.Namespace(records=args.queries, partner_records=made,
                              population=args.population, seed=args.seed)  # fmt: skip
    load.records = max(args.queries, CANDIDATES)
    rows, rule = bench.members(load)
    b = [r[load.records :] for r in rows]
    if made < max(sizes):  # B's records repeated (a pair's cost does not depend on its bits)
        b = [np.ascontiguousarray(np.tile(x, (-(-max(sizes) // made), 1))[: max(sizes)]) for x in b]
    a = [r[: load.records] for r in rows]
    # The queries: A's first records that link (at the threshold, in the clear) with a record
    # of the smallest partner, then A's first others.
    # A's rows a few at a time (the rule in the clear holds ~500 bytes a pair), stopping once
    # enough link.
    n, step, flags = min(sizes), max(1, 500_000 // min(sizes)), []
    for at in range(0, len(a[0]), step):
        rows = [np.vstack([x[at : at + step], y[:n]]) for x, y in zip(a, b, strict=True)]
        some = len(rows[0]) - n
        flags.append(bench.clear(rows, some, rule)[0].reshape(some, n).any(axis=1))
        if int(np.concatenate(flags).sum()) >= args.queries:
            break
    links = np.concatenate(flags)
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
