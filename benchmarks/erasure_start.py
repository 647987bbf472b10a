"""How long a two-server matcher's start takes with N erasures cut short while S2 is down
(docs/operations.md "An erasure cut short"): S1, S2 and a matcher on loopback; N members
each put an upload's shares at S1 and S2; each erases, but only the erasure's transaction
runs (the state a matcher killed right after it leaves: N intents); the matcher stops, S2
goes down, and a new matcher is started over the data dir, timed (wall and CPU) until it
serves. S2 down two ways: stopped (its port refuses at once on loopback: the channel fails
fast) and hung (`--s2 hung`: a gRPC server on its port that takes every call and never
answers, as an S2 stuck under load or a proxy in front of a dead host does: each Forget waits
its `FORGET_SECONDS`).

    nice -n 10 .venv/bin/python benchmarks/erasure_start.py --erasures 1 5 10 --s2 hung

The machine's cores are shared: wall times are noisy.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.workdir import add_keep, work_dir
from blindmatch.client.encoding.sharing import BandPlan, shared_upload
from blindmatch.client.remote.client import MatcherClient
from blindmatch.client.remote.twoserver import RoleClient, ticket
from blindmatch.matcher.rpc.listen import EXCLUSIVE_PORT, add_port, cannot_listen
from blindmatch.matcher.rpc.twoserver_project import combiner_setup
from blindmatch.matcher.rpc.twoserver_service import create_role
from blindmatch.matcher.server import create_server
from blindmatch.protos import blindmatch_pb2 as pb

RECORDS = 100


class Hung(grpc.GenericRpcHandler):
    """A gRPC server on `port` that takes every call and answers none: each call is held
    until its caller gives up (its deadline) or `close` (then refused, UNAVAILABLE).
    `events`: ("in" or "out", method, member) of each `Forget`, in order (member `@...`:
    the query records a stopped matcher left, realtime/twoforget.py)."""

    def __init__(self, port: int) -> None:
        self.stop, self.lock = threading.Event(), threading.Lock()
        self.events: list[tuple[str, str]] = []
        self.methods: list[str] = []  # each call's method, as it arrived
        # Its port its own, as the real servers' (matcher/rpc/listen.py `EXCLUSIVE_PORT`):
        # with gRPC's default SO_REUSEPORT, a second server on the port (another hole, or a
        # gRPC server of a parallel run) listened too and took some of the calls.
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=64), handlers=[self],
                                  options=[EXCLUSIVE_PORT])  # fmt: skip
        address = f"127.0.0.1:{port}"
        self.port = add_port(self.server, address, None)  # (port 0: the one got)
        if not self.port:  # (benchmarks/ports.py `taken` says so)
            raise cannot_listen(address)
        self.server.start()

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method = details.method.rsplit("/", 1)[-1]

        def hold(request: bytes, context: grpc.ServicerContext) -> bytes:
            member = pb.ForgetRequest.FromString(request).member if method == "Forget" else ""
            with self.lock:
                self.events.append(("in", member))
                self.methods.append(method)
            while context.is_active() and not self.stop.wait(0.05):
                pass
            with self.lock:
                self.events.append(("out", member))
            context.abort(grpc.StatusCode.UNAVAILABLE, "hung")
            return b""  # (not reached)

        return grpc.unary_unary_rpc_method_handler(hold)

    def first_together(self, members: list[str]) -> bool:
        """Whether each of `members`' first `Forget` arrived before any of them ended."""
        with self.lock:
            events = list(self.events)
        first_in = [events.index(("in", m)) for m in members]
        first_out = [events.index(("out", m)) if ("out", m) in events else len(events)
                     for m in members]  # fmt: skip
        return max(first_in) < min(first_out)

    def close(self) -> None:
        self.stop.set()
        self.server.stop(grace=None)


def one(folder: Path, erasures: int, hang: bool) -> tuple[float, float, int]:
    """(wall s, CPU s) of the start with `erasures` cut short, and the intents it kept."""
    admin, member_key, key = (secrets.token_urlsafe(16) for _ in range(3))
    s2 = create_role("s2", "127.0.0.1:0", key, member_key)
    s2_address = f"127.0.0.1:{s2.port}"
    s1 = create_role("s1", "127.0.0.1:0", key, member_key, s2=s2_address)
    setup = combiner_setup(f"127.0.0.1:{s1.port}", s2_address, key, member_key)
    matcher = create_server("127.0.0.1:0", folder, admin, workers=2, two_server=setup)
    target = f"127.0.0.1:{matcher.port}"
    hole: Hung | None = None
    try:
        names = [f"m{i}" for i in range(erasures)]
        with MatcherClient(target, admin) as op:
            tokens = op.create_project("shares", [*names, "stays"], mode="two-server").tokens
        up = shared_upload(np.zeros((RECORDS, 128), np.uint8), b"s", BandPlan(4, 4))
        for name in names:
            with MatcherClient(target, tokens[name]) as member:
                t = ticket(member, "shares")
            for role, address in (("s1", t.s1), ("s2", t.s2)):
                with RoleClient(role, address, t.ticket) as rc:
                    rc.upload(t.name, up)
        for name in names:  # the erasure's transaction, and no more (its intent kept)
            matcher.store.erase_member("shares", name)
        matcher.stop(grace=None)
        s2.stop(grace=None)
        if hang:
            hole = Hung(s2.port)
        setup = combiner_setup(f"127.0.0.1:{s1.port}", s2_address, key, member_key)
        wall, cpu = time.perf_counter(), time.process_time()
        matcher = create_server("127.0.0.1:0", folder, admin, workers=2, two_server=setup)
        took = time.perf_counter() - wall, time.process_time() - cpu
        kept = len(matcher.store.cut_short_erasures())
        matcher.stop(grace=None)
        return took[0], took[1], kept
    finally:
        matcher.stop(grace=None)
        s1.stop(grace=None)
        if hole is not None:
            hole.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--erasures",
        type=int,
        nargs="+",
        default=[1, 5, 10],
        help="erasures cut short before each start (one start each)",
    )
    parser.add_argument(
        "--s2",
        choices=["stopped", "hung"],
        default="hung",
        help="S2 stopped (refused at once) or hung (takes calls, never answers)",
    )
    add_keep(parser)
    args = parser.parse_args()
    with work_dir("bm-erasure-start-", keep=args.keep) as work:
        for n in args.erasures:
            wall, cpu, kept = one(work / f"n{n}", n, args.s2 == "hung")
            print(f"{n} erasure(s) cut short, S2 {args.s2}: start {wall:.2f} s wall, "
                  f"{cpu:.2f} s CPU; {kept} intent(s) kept for the background retry")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
