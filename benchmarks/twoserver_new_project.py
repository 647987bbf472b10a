"""The first two-server query of a project created after the matcher started, against the
next ones (docs/realtime.md "Queries in a two-server project", *A project created after the
start*):

    .venv/bin/python benchmarks/twoserver_new_project.py [--records 2000] [--queries 3]
        [--threshold 0.85] [--keep]

S1, S2 and a matcher that is their combiner, in this process on loopback ports (so one
cache of link-bit circuits serves all three: what one party builds, the others find). Each
builds its circuits ahead at its start (core/circuitwarm.py; the matcher at its live
two-server projects' thresholds, here none: the default threshold); those threads are
waited for. Then an operator creates a two-server project at `--threshold` (not the
default, so no start-up warm-up built it) and the benchmark waits for any circuit-building
thread the matcher started meanwhile (a tree that builds none waits for nothing); a
partner's upload of `--records` random CLKs (1,024 bits and a fallback of 1,024, the
recommended band plan) goes to S1 and S2, and `--queries` queries of one record each (a
partner's record with a bit flipped) are proposed, evaluated and answered at the project's
threshold as a query is (realtime/twoquery.py `query_links`). Per query: wall, and CPU of
this process (S1, S2 and the combiner). It runs on whichever tree it sits in (its folder's
parent first on the path), so a copy of an older tree measures that tree.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.workdir import add_keep, work_dir
from blindmatch.client.encoding import sharing as client
from blindmatch.client.remote.client import MatcherClient
from blindmatch.client.remote.twoserver import RoleClient
from blindmatch.matcher.core.twoserver import Combiner
from blindmatch.matcher.realtime.twoquery import query_links
from blindmatch.matcher.rpc.twoserver_client import RemoteServers
from blindmatch.matcher.rpc.twoserver_project import combiner_setup
from blindmatch.matcher.rpc.twoserver_service import RunningRole, create_role
from blindmatch.matcher.server import create_server

MEMBER_KEY = "the members' key"
ADMIN = "the operator's token"


def building() -> float:
    """Wait for every circuit-building thread (core/circuitwarm.py `warm`); seconds waited."""
    start = time.perf_counter()
    for thread in threading.enumerate():
        if thread.name == "bm-circuits":
            thread.join()
    return time.perf_counter() - start


def send(roles: dict[str, RunningRole], name: str, up: client.SharedUpload) -> None:
    for role in ("s1", "s2"):
        with RoleClient(role, f"127.0.0.1:{roles[role].port}", MEMBER_KEY) as c:
            c.upload(name, up)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=2000)
    ap.add_argument("--queries", type=int, default=3)
    ap.add_argument("--threshold", type=float, default=0.85)
    add_keep(ap)
    args = ap.parse_args()
    key = secrets.token_urlsafe(16)
    with work_dir("bm-newproject-", keep=args.keep) as work:
        s2 = create_role("s2", "127.0.0.1:0", key, MEMBER_KEY)
        s1 = create_role("s1", "127.0.0.1:0", key, MEMBER_KEY, s2=f"127.0.0.1:{s2.port}")
        roles = {"s1": s1, "s2": s2}
        setup = combiner_setup(f"127.0.0.1:{s1.port}", f"127.0.0.1:{s2.port}", key, MEMBER_KEY)
        server = create_server("127.0.0.1:0", work / "matcher", ADMIN, workers=2,
                               two_server=setup)  # fmt: skip
        try:
            print(f"the parties' start-up circuits: waited {building():.2f} s")
            with MatcherClient(f"127.0.0.1:{server.port}", ADMIN) as op:
                start = time.perf_counter()
                op.create_project("fresh", ["north", "south"], threshold=args.threshold,
                                  mode="two-server")  # fmt: skip
                created = time.perf_counter() - start
            print(f"CreateProject at threshold {args.threshold}: {1e3 * created:.0f} ms; "
                  f"circuits built after it: waited {building():.2f} s")  # fmt: skip
            clks = np.random.default_rng(1).integers(0, 256, (args.records, 256), dtype=np.uint8)
            send(roles, "partner", client.shared_upload(clks, b"secret", client.RECOMMENDED, 1024))
            presorter = getattr(s1.service, "presorter", None)
            if presorter is not None:
                presorter.wait(600)
            for k in range(args.queries):
                name = f"query{k}"
                send(roles, name, client.shared_upload(clks[k : k + 1] ^ np.uint8(1), b"secret",
                                                       client.RECOMMENDED, 1024))  # fmt: skip
                servers = RemoteServers(f"127.0.0.1:{s1.port}", f"127.0.0.1:{s2.port}", key,
                                        [name, "partner"], [1, args.records],
                                        [1024, 1024])  # fmt: skip
                wall, cpu = time.perf_counter(), time.process_time()
                links, pairs = query_links(servers, Combiner(None, args.threshold, clks=2))
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                servers.close()
                print(f"query {k}: {1e3 * wall:.0f} ms wall, {1e3 * cpu:.0f} ms CPU (S1, S2 and "
                      f"C), {pairs} pairs proposed, {len(links.rec0)} link(s)")  # fmt: skip
        finally:
            server.stop(grace=None)
            s1.stop(grace=None)
            s2.stop(grace=None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
