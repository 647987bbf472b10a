"""What a member's erasure costs in a two-server project, now that S1 and S2 drop its shares
(docs/operations.md "A project in two-server mode"): S2, S1 and a matcher that is their
combiner on loopback; 20 members each put a 1,000-record upload at S1 and S2; 10 erase with
both servers up, then S2 stops and 10 more erase. Prints the median wall and CPU of an
`Erase` call each way and what S1 and S2 dropped.

    .venv/bin/python benchmarks/twoserver_erase.py

The machine's cores are shared: wall times are noisy; S2 stopped is refused at once on
loopback (a host that does not answer costs up to `FORGET_SECONDS` instead).
"""

from __future__ import annotations

import secrets
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from blindmatch.client.encoding.sharing import BandPlan, shared_upload
from blindmatch.client.remote.client import MatcherClient
from blindmatch.client.remote.model import Erased
from blindmatch.client.remote.twoserver import RoleClient, ticket
from blindmatch.matcher.rpc.twoserver_project import combiner_setup
from blindmatch.matcher.rpc.twoserver_service import create_role
from blindmatch.matcher.server import create_server

MEMBERS, RECORDS = 20, 1000


def main() -> int:
    admin, member_key, key = (secrets.token_urlsafe(16) for _ in range(3))
    s2 = create_role("s2", "127.0.0.1:0", key, member_key)
    s1 = create_role("s1", "127.0.0.1:0", key, member_key, s2=f"127.0.0.1:{s2.port}")
    setup = combiner_setup(f"127.0.0.1:{s1.port}", f"127.0.0.1:{s2.port}", key, member_key)
    with tempfile.TemporaryDirectory() as folder:
        matcher = create_server("127.0.0.1:0", Path(folder), admin, workers=2, two_server=setup)
        target = f"127.0.0.1:{matcher.port}"
        try:
            names = [f"m{i}" for i in range(MEMBERS)]
            with MatcherClient(target, admin) as op:
                tokens = op.create_project("shares", names, mode="two-server").tokens
            up = shared_upload(np.zeros((RECORDS, 128), np.uint8), b"s", BandPlan(4, 4))
            for name in names:  # shares at S1 and S2 (an erasure needs no header here)
                with MatcherClient(target, tokens[name]) as member:
                    t = ticket(member, "shares")
                for role, address in (("s1", t.s1), ("s2", t.s2)):
                    with RoleClient(role, address, t.ticket) as rc:
                        rc.upload(t.name, up)

            def erase(name: str) -> tuple[float, float, Erased]:
                with MatcherClient(target, tokens[name]) as member:
                    wall, cpu = time.perf_counter(), time.process_time()
                    erased = member.erase("shares")
                    return time.perf_counter() - wall, time.process_time() - cpu, erased

            half = MEMBERS // 2
            for label, group in (("S1 and S2 up", names[:half]), ("S2 stopped", names[half:])):
                if label == "S2 stopped":
                    s2.server.stop(None).wait()
                got = [erase(n) for n in group]
                print(
                    f"{label}: median wall {1000 * statistics.median(g[0] for g in got):.1f} "
                    f"ms, CPU {1000 * statistics.median(g[1] for g in got):.1f} ms (this "
                    f"process: client, matcher, S1, S2); {got[0][2].two_server}"
                )
            print(f"held after: S1 {len(s1.service.held)}, S2 {len(s2.service.held)} uploads")
        finally:
            matcher.stop(grace=None)
            s1.stop(grace=None)
            s2.stop(grace=None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
