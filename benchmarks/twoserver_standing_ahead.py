"""The first one-record query against a fresh upload over gRPC, before and since standahead
(issue 18 (b); rpc/twoserver_standahead.py): before, the query found no conversion of the
partner, dealt its piece 0, was answered by pairs and left the conversion in the background;
since, C converts the partner as its upload completes (`Ahead`, no query) and the first query
goes standing. S1, S2 and C in this process on loopback (benchmarks/twoserver_standing_rpc.py's
set-up: S1 comparing every pair); the same links both ways (exit 1 otherwise). A partner of
at least core/partpath.py STANDING_RECORDS (16,000) records: a smaller one's query goes by
pairs and nothing is converted ahead of it (refused).

    nice -n 10 .venv/bin/python benchmarks/twoserver_standing_ahead.py --partner-records 100000
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from benchmarks import twoserver_standing_rpc as rpc
from benchmarks.workdir import add_keep, work_dir
from blindmatch.matcher.core import memory, partpath
from blindmatch.matcher.domain import Rule
from blindmatch.matcher.rpc.twoserver_client import RemoteServers
from blindmatch.matcher.rpc.twoserver_conversions import Conversions
from blindmatch.matcher.rpc.twoserver_standahead import Ahead, Partner


def first_query(n: int, a: list[np.ndarray], b: list[np.ndarray], rule: Rule,  # type: ignore[type-arg]
                ahead: bool, work: Path) -> list[tuple[int, int, float]]:  # fmt: skip
    """A fresh upload of `n` records, then (`ahead`: converted first, as C does since
    standahead) one query: its wall and CPU printed; its links."""
    roles = rpc._roles(work, f"{'ahead' if ahead else 'query'}-{n}", None)
    how = "since (converted at its upload)" if ahead else "before (the query converts it)"
    try:
        rpc._upload(roles, rpc.NAMES[1], rpc._shared([x[:n] for x in b]), rule)
        bits = [8 * int(x.shape[1]) for x in b]
        conversions = Conversions()
        if ahead:
            c0, w0 = time.process_time(), time.perf_counter()

            def servers(names: list[str], records: list[int], widths: list[int]) -> RemoteServers:
                return RemoteServers(f"127.0.0.1:{roles['s1'].port}",
                                     f"127.0.0.1:{roles['s2'].port}", rpc.KEY, names, records,
                                     widths)  # fmt: skip

            made = Ahead(servers, lambda: conversions)
            made.convert(Partner(rpc.NAMES[1], n, tuple(bits), rpc.THRESHOLD, rule))
            assert made.idle(7200) and made.started == 1
            print(f"  {how}: the conversion at the upload, no query: CPU "
                  f"{time.process_time() - c0:.1f} s, wall {time.perf_counter() - w0:.1f} s",
                  flush=True)  # fmt: skip
        rpc._upload(roles, rpc.NAMES[0], rpc._shared(rpc._query(0, a, b)), rule)
        links, cpu, wall, sent = rpc.ask(roles, [1, n], bits, rule, conversions)
        path = "standing" if conversions.queried else "by pairs"
        print(f"  {how}: the first query {path}: wall {wall:.2f} s, CPU {cpu:.2f} s, "
              f"{sent:,} bytes; {len(links)} links", flush=True)  # fmt: skip
        if not ahead:
            c0, w0 = time.process_time(), time.perf_counter()
            assert conversions.idle(7200)
            print(f"  {how}: its conversion after it, in the background: CPU "
                  f"{time.process_time() - c0:.1f} s, wall {time.perf_counter() - w0:.1f} s "
                  f"(the next query goes standing)", flush=True)  # fmt: skip
        print(f"  peak RSS so far {rpc._peak():,.0f} MiB", flush=True)
        return links
    finally:
        rpc._stop(roles)
        for r in roles.values():  # (the next run's peak RSS not this one's too)
            r.service.standing.forget({rpc.NAMES[0], rpc.NAMES[1]}, "the benchmark's next run")
        memory.release_free_memory()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--partner-records", type=int, default=100_000)
    parser.add_argument("--population", choices=["households", "messy"], default="households")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--bands", type=int, default=4,
                        help="the band plan's bands (S1 compares every pair: the keys go unread "
                             "but are held, ~21 MB a band a CLK at 100,000 records)")  # fmt: skip
    add_keep(parser)
    args = parser.parse_args()
    if args.partner_records < partpath.STANDING_RECORDS:  # (by pairs: nothing to convert ahead)
        parser.error(f"--partner-records: at least {partpath.STANDING_RECORDS:,} (core/partpath.py "
                     "STANDING_RECORDS): a query against a smaller partner goes by pairs, and C "
                     "converts nothing ahead of it")  # fmt: skip
    rpc._plan(args.bands)
    n = args.partner_records
    load = argparse.Namespace(records=1, partner_records=n, population=args.population,
                              seed=args.seed)  # fmt: skip
    rows, rule = rpc.bench.members(load)
    a = [np.ascontiguousarray(r[:1]) for r in rows]
    b = [np.ascontiguousarray(r[1:]) for r in rows]
    del rows
    memory.release_free_memory()
    print(f"{args.population}, seed {args.seed}: the first one-record query against a fresh "
          f"upload of {n:,} records over gRPC, rule {rule.text()}", flush=True)  # fmt: skip
    with work_dir("twoserver-standing-ahead", args.keep) as work:
        before = first_query(n, a, b, rule, False, work)
        since = first_query(n, a, b, rule, True, work)
    print(f"the same links both ways: {before == since}", flush=True)
    return 0 if before == since else 1


if __name__ == "__main__":
    raise SystemExit(main())
