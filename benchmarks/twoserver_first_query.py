"""The first two-server query after a partner's upload against the next ones, S1 and S2 in this
process on loopback (docs/realtime.md "Queries in a two-server project", *The first query
after an upload*):

    .venv/bin/python benchmarks/twoserver_first_query.py [--records 5000] [--queries 3]
        [--wait | --no-wait]

A partner's upload of `--records` random CLKs (1,024 bits, with a fallback CLK of 1,024 bits:
two CLKs of the recommended band plan, 1,600 bands each) to S1 and S2, timed (S1's Upload
alone); then, with `--wait` (the default), until S1's sorts of its band keys are done
(rpc/twoserver_presort.py: an older tree has none, and sorts on the first join); then
`--queries` queries of one record each (a record of the partner's with a bit flipped, under a
name of its own), each proposed, evaluated and answered as a query is (realtime/twoquery.py
`query_links`). Per query: wall, and CPU of this process (S1, S2 and the combiner together:
S1's sort on its own thread included while it runs). It runs on whichever tree it sits in
(its folder's parent first on the path), so a copy of an older tree measures that tree.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from blindmatch.client.encoding import sharing as client
from blindmatch.client.remote.twoserver import RoleClient
from blindmatch.matcher.core.twoserver import Combiner
from blindmatch.matcher.realtime.twoquery import query_links
from blindmatch.matcher.rpc.twoserver_client import RemoteServers
from blindmatch.matcher.rpc.twoserver_service import RunningRole, create_role

MEMBER_KEY = "the members' key"


def send(roles: dict[str, RunningRole], name: str, up: client.SharedUpload) -> float:
    """`up` to S1 then S2; the seconds S1's Upload took."""
    took = 0.0
    for role in ("s1", "s2"):
        with RoleClient(role, f"127.0.0.1:{roles[role].port}", MEMBER_KEY) as c:
            start = time.perf_counter()
            c.upload(name, up)
            took = took or time.perf_counter() - start
    return took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=5000)
    ap.add_argument("--queries", type=int, default=3)
    ap.add_argument("--wait", action=argparse.BooleanOptionalAction, default=True,
                    help="wait for S1's sorts before the first query")  # fmt: skip
    args = ap.parse_args()
    key = secrets.token_urlsafe(16)
    s2 = create_role("s2", "127.0.0.1:0", key, MEMBER_KEY)
    s1 = create_role("s1", "127.0.0.1:0", key, MEMBER_KEY, s2=f"127.0.0.1:{s2.port}")
    roles = {"s1": s1, "s2": s2}
    try:
        clks = np.random.default_rng(1).integers(0, 256, (args.records, 256), dtype=np.uint8)
        up = client.shared_upload(clks, b"secret", client.RECOMMENDED, 1024)
        cpu = time.process_time()
        upload = send(roles, "partner", up)
        print(f"S1's Upload of {args.records:,} records: {upload:.2f} s wall; S1 and S2 "
              f"{time.process_time() - cpu:.2f} s CPU (and the client)")  # fmt: skip
        presorter = getattr(s1.service, "presorter", None)
        start = time.perf_counter()
        if args.wait and presorter is not None:
            presorter.wait(600)
        if presorter is None:
            print("S1's sorts: none ahead (an older tree: the first join sorts)")
        elif args.wait:
            print(f"S1's sorts, on their own thread: waited {time.perf_counter() - start:.2f} s")
        else:
            print("S1's sorts, on their own thread: not waited for")
        for k in range(args.queries):
            name = f"query{k}"
            send(roles, name, client.shared_upload(clks[k : k + 1] ^ np.uint8(1), b"secret",
                                                   client.RECOMMENDED, 1024))  # fmt: skip
            servers = RemoteServers(f"127.0.0.1:{s1.port}", f"127.0.0.1:{s2.port}", key,
                                    [name, "partner"], [1, args.records], [1024, 1024])  # fmt: skip
            wall, cpu = time.perf_counter(), time.process_time()
            links, pairs = query_links(servers, Combiner(None, 0.8, clks=2))
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            servers.close()
            print(f"query {k}: {1e3 * wall:.0f} ms wall, {1e3 * cpu:.0f} ms CPU (S1, S2 and C), "
                  f"{pairs} pairs proposed, {len(links.rec0)} link(s)")  # fmt: skip
    finally:
        s1.stop(grace=None)
        s2.stop(grace=None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
