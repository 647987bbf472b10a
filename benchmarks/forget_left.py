"""How long a matcher's start takes, and what S2 still holds after it, when S1 does not
answer (matcher/realtime/twoforget.py: the start-up `Forget` of the queries' and watches'
records a matcher killed left at S1 and S2).

    .venv/bin/python benchmarks/forget_left.py [--projects 20] [--s1 up down silent]
        [--later 3] [--keep]

S2 and S1 serve in this process with data dirs, and a matcher is their combiner: each of
`--projects` two-server projects gets a query's records at S2 (20 synthetic CLKs, under a
query ticket, as a killed matcher's open watch leaves them). Then that matcher stops and a
new one starts on its data dir, with S1 `up` (the real S1), `down` (an address where nothing
listens: refused at once), `silent` (a socket that accepts and never answers: gRPC gives up
on the connection) or `hung` (a gRPC server whose `Forget` never returns: each call waits for
its deadline, FORGET_SECONDS). Printed for each: the start's wall time (create_server), the
projects whose records S2 still holds right after it, and `--later` (3) s later. The
machine's other load counts in every second.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from collections.abc import Iterable
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.ports import free_port
from benchmarks.workdir import add_keep, work_dir
from blindmatch.client.encoding import sharing as client
from blindmatch.client.remote.client import MatcherClient
from blindmatch.client.remote.twoserver import RoleClient, ticket
from blindmatch.matcher.rpc.listen import EXCLUSIVE_PORT, add_port, cannot_listen
from blindmatch.matcher.rpc.twoserver_project import combiner_setup
from blindmatch.matcher.rpc.twoserver_service import create_role
from blindmatch.matcher.server import create_server
from blindmatch.protos import blindmatch_pb2 as pb
from blindmatch.protos import blindmatch_pb2_grpc as pb_grpc

PARTIES, MEMBERS, ADMIN = (
    "the parties' key of the benchmark",
    "the members' key",
    "admin-token-x" * 3,
)


class _Hung(pb_grpc.TwoServerBlockingServicer):
    """An S1 that takes calls and never answers them."""

    def Forget(self, request: pb.ForgetRequest, context: grpc.ServicerContext) -> pb.ForgetReply:
        time.sleep(8.0)  # past the caller's deadline
        return pb.ForgetReply()


def hung_s1() -> tuple[grpc.Server, int]:
    """A started `_Hung` S1 on a free loopback port, its port its own as the real servers'
    (matcher/rpc/listen.py `EXCLUSIVE_PORT`): the server and the port."""
    hung = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=[EXCLUSIVE_PORT])
    pb_grpc.add_TwoServerBlockingServicer_to_server(_Hung(), hung)
    port = add_port(hung, "127.0.0.1:0", None)
    if not port:
        raise cannot_listen("127.0.0.1:0")
    hung.start()
    return hung, port


def _left(held: Iterable[str]) -> int:
    """The projects whose query records S2 holds."""
    return len({n.split("/")[0] for n in list(held) if "@" in n})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--projects", type=int, default=20)
    parser.add_argument("--s1", nargs="+", default=["up", "down", "silent", "hung"],
                        choices=["up", "down", "silent", "hung"])  # fmt: skip
    parser.add_argument("--later", type=float, default=3.0, metavar="SECONDS",
                        help="when to look at S2 again after the start (default 3)")  # fmt: skip
    add_keep(parser)
    args = parser.parse_args(argv)
    with work_dir("forget-left-", keep=args.keep) as work:
        _measure(args, work)
    return 0


def _measure(args: argparse.Namespace, work: Path) -> None:
    """Each of `args.s1`'s states in a folder of its own under `work`."""
    rng = np.random.default_rng(1)
    up = client.shared_upload(rng.integers(0, 256, (20, 128), dtype=np.uint8), b"s",
                              client.BandPlan(4, 4))  # fmt: skip
    for state in args.s1:
        root = work / state
        s2 = create_role("s2", "127.0.0.1:0", PARTIES, MEMBERS, data_dir=root / "s2")
        s1 = create_role("s1", "127.0.0.1:0", PARTIES, MEMBERS, s2=f"127.0.0.1:{s2.port}",
                         data_dir=root / "s1")  # fmt: skip
        s2_at, s1_at = f"127.0.0.1:{s2.port}", f"127.0.0.1:{s1.port}"
        setup = combiner_setup(s1_at, s2_at, PARTIES, MEMBERS)
        server = create_server("127.0.0.1:0", root / "matcher", ADMIN, workers=2, two_server=setup)
        target = f"127.0.0.1:{server.port}"
        for n in range(args.projects):
            with MatcherClient(target, ADMIN) as op:
                tokens = op.create_project(f"p{n:03d}", ["north", "south"], mode="two-server")
            with MatcherClient(target, tokens.tokens["north"]) as north:
                t = ticket(north, f"p{n:03d}", query=True)
            with RoleClient("s2", t.s2, t.ticket) as c:
                c.upload(t.name, up)
        server.stop(grace=None)
        silent, hung = None, None
        if state == "down":
            s1_at = f"127.0.0.1:{free_port()}"
        elif state == "silent":
            silent = socket.socket()
            silent.bind(("127.0.0.1", 0))
            silent.listen(64)  # accepts (the kernel's backlog), never answers
            s1_at = f"127.0.0.1:{silent.getsockname()[1]}"
        elif state == "hung":
            hung, port = hung_s1()
            s1_at = f"127.0.0.1:{port}"
        t0 = time.perf_counter()
        setup = combiner_setup(s1_at, s2_at, PARTIES, MEMBERS)
        again = create_server("127.0.0.1:0", root / "matcher", ADMIN, workers=2, two_server=setup)
        started = time.perf_counter() - t0

        right_after = _left(s2.service.held)
        time.sleep(args.later)
        print(f"S1 {state}: the matcher started in {started:.2f} s; S2 held the records of "
              f"{right_after} of {args.projects} projects right after, "
              f"{_left(s2.service.held)} {args.later:g} s later", flush=True)  # fmt: skip
        again.stop(grace=None)
        for role in (s1, s2):
            role.stop(grace=None)
        if silent is not None:
            silent.close()
        if hung is not None:
            hung.stop(grace=None)


if __name__ == "__main__":
    raise SystemExit(main())
