"""Fuzz every RPC of blindmatch/protos/blindmatch.proto as a hostile or buggy member, client
or party would: requests built by mutating valid ones (benchmarks/rpcfuzz_mutate.py), sent to
real servers on loopback in this process (the matcher, S1, S2, a combiner role and two look-up
servers: benchmarks/rpcfuzz_world.py; the valid requests: benchmarks/rpcfuzz_seeds.py), each
reply classified.

    .venv/bin/python benchmarks/rpcfuzz.py --seconds 600           # every RPC, ten minutes
    .venv/bin/python benchmarks/rpcfuzz.py --seconds 60 --rpc Upload --rpc Query
    .venv/bin/python benchmarks/rpcfuzz.py --seconds 120 --seed 7 --no-huge

A reply is expected when it is OK or a status the service answered itself (marked
`blindmatch-status`, rpc/status.py) among INVALID_ARGUMENT, FAILED_PRECONDITION, NOT_FOUND,
PERMISSION_DENIED, UNAUTHENTICATED, RESOURCE_EXHAUSTED, ALREADY_EXISTS, OUT_OF_RANGE,
DEADLINE_EXCEEDED (a stream the server ended) and UNAVAILABLE; RESOURCE_EXHAUSTED from gRPC
itself for a message over the limit; CANCELLED for a stream the fuzzer cut. A fault is:
UNKNOWN or INTERNAL (an exception escaped), a client deadline passed (a hang), any other
status gRPC made up (a server gone), a refused call that changed the servers' state (the
matcher's databases and files, what S1, S2 and the combiner hold, the look-up servers'
records), or a traceback or an ERROR logged by a server, whatever the status. Undecodable
bytes are not sent: gRPC refuses them before any code of ours runs (tests/test_fuzz.py).

Prints, per RPC, the requests sent and their statuses, then each fault (the RPC, the fields
changed, the status and its message) with how often it was seen; exits 1 if there was any.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import logging
import random
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import rpcfuzz_seeds as seeds
from benchmarks import rpcfuzz_world as worlds
from benchmarks.rpcfuzz_mutate import Mutator
from benchmarks.rpcfuzz_requests import ADMIN, auth
from benchmarks.workdir import add_keep, work_dir
from blindmatch.protos import blindmatch_pb2 as pb

EXPECTED = {
    "INVALID_ARGUMENT",
    "FAILED_PRECONDITION",
    "NOT_FOUND",
    "PERMISSION_DENIED",
    "UNAUTHENTICATED",
    "RESOURCE_EXHAUSTED",
    "ALREADY_EXISTS",
    "OUT_OF_RANGE",
    "DEADLINE_EXCEEDED",
    "UNAVAILABLE",
    "DATA_LOSS",
}
# What the fuzzer's own client logs (a stream it cut), and what refused calls legitimately
# write: the query log counts refused requests (rpc/refusals.py), for the volume report.
CLIENT_LOGGERS = ("grpc._channel:", "grpc._common:")
NOTED = {"index.sqlite:query_log"}
# S2 drops a prepared batch whose first round message it refuses (rpc/twoserver_shares.py
# `_start`: a batch is opened once, never probed again with other rows): not counted.
CONSUMED = {("S2's prepared batches", "Exchange")}
OPTIONS = [
    ("grpc.max_send_message_length", 64 * 2**20),
    ("grpc.max_receive_message_length", 64 * 2**20),
]


class Logged(logging.Handler):
    """Every ERROR, and every record with a traceback, the servers log (and threads that
    die), with the call in flight when it was logged."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.current = ""
        self.seen: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or record.levelno >= logging.ERROR:
            text = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                exc = record.exc_info[1]
                tb = exc.__traceback__
                while tb is not None and tb.tb_next is not None:
                    tb = tb.tb_next
                where = f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb else ""
                text += f" | {type(exc).__name__}: {str(exc)[:160]} at {where}"
            self.seen.append((self.current, f"{record.name}: {text}"))


def tables_digest(data_dir: Path) -> dict[str, str]:
    """A digest of every table of the matcher's databases, and of its files' names."""
    out: dict[str, str] = {}
    for db in ("blindmatch.sqlite", "index.sqlite"):
        path = data_dir / db
        if not path.exists():
            continue
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)) as conn:
            names = [
                n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            ]
            for name in names:
                rows = sorted(map(repr, conn.execute(f"SELECT * FROM {name}")))
                out[f"{db}:{name}"] = hashlib.sha256("\n".join(rows).encode()).hexdigest()
    files = sorted(
        str(p.relative_to(data_dir))
        for p in data_dir.rglob("*")
        if p.is_file() and not p.name.endswith(("-wal", "-shm", "-journal"))
    )
    out["files"] = hashlib.sha256("\n".join(files).encode()).hexdigest()
    return out


class Fuzzer:
    def __init__(
        self, world: worlds.World, rng: random.Random, huge: bool, deadline: float
    ) -> None:
        self.w = world
        self.rng = rng
        self.mutator = Mutator(rng, world.names(), huge)
        self.deadline = deadline
        self.channels: dict[str, grpc.Channel] = {}
        self.sent: collections.Counter[str] = collections.Counter()
        self.codes: dict[str, collections.Counter[str]] = collections.defaultdict(
            collections.Counter
        )
        self.faults: dict[tuple[str, str, str], list[Any]] = {}
        self.unnamed: dict[tuple[str, str], int] = collections.Counter()
        self.partial = False  # the last call had answers before its refusal
        self.trace: Any = None

    def channel(self, target: str) -> grpc.Channel:
        if target not in self.channels:
            self.channels[target] = grpc.insecure_channel(target, options=OPTIONS)
        return self.channels[target]

    def token(self, good: str) -> str:
        """The seed's token, or now and then another: none, garbage, another party's."""
        if self.rng.random() < 0.8:
            return good
        w = self.w
        return self.rng.choice(
            [
                "",
                "garbage",
                ADMIN,
                w.key,
                w.member_key,
                w.tokens["runs", "r2"],
                w.tokens["shares", "north"],
                w.tokens["trial", "south"],
                "x" * 5000,
            ]
        )

    def state(self) -> tuple[dict[str, str], tuple[object, ...]]:
        return tables_digest(self.w.data_dir), worlds.role_state(self.w)

    def call(
        self, service: str, method: str, request: Any, token: str, cut: int | None
    ) -> tuple[str, str, bool, Any]:
        """(status name, details, answered by the service, the reply or replies)."""
        desc = pb.DESCRIPTOR.services_by_name[service].methods_by_name[method]
        req_cls = getattr(pb, desc.input_type.name)
        rep_cls = getattr(pb, desc.output_type.name)
        path = f"/{pb.DESCRIPTOR.package}.{service}/{method}"
        ch = self.channel(self.w.target(service, method))
        kind = {
            (False, False): ch.unary_unary,
            (True, False): ch.stream_unary,
            (False, True): ch.unary_stream,
            (True, True): ch.stream_stream,
        }[(desc.client_streaming, desc.server_streaming)]
        stub = kind(
            path,
            request_serializer=req_cls.SerializeToString,
            response_deserializer=rep_cls.FromString,
        )
        md = [("authorization", f"Bearer {token}")] if token else []
        if desc.client_streaming:
            request = self._requests(request, cut)
        got: list[Any] = []
        self.partial = False
        try:
            reply = stub(request, metadata=md, timeout=self.deadline)
            if desc.server_streaming:
                for message in reply:
                    got.append(message)
                    if method == "Watch" or len(got) > 10_000:
                        reply.cancel()
                        break
                return "OK", "", True, got
            return "OK", "", True, reply
        except grpc.RpcError as exc:
            code = exc.code().name if exc.code() else "?"
            trailing = exc.trailing_metadata() or () if hasattr(exc, "trailing_metadata") else ()
            answered = any(k == "blindmatch-status" for k, _ in trailing)
            if desc.server_streaming and desc.client_streaming and got:
                self.partial = True  # answers before the refusal (a query stream's: audited)
            if method == "Watch" and code == "CANCELLED":
                return "OK", "", True, None
            return code, exc.details() or "", answered, None

    @staticmethod
    def _requests(messages: list[Any], cut: int | None) -> Iterator[Any]:
        for i, m in enumerate(messages):
            if cut is not None and i == cut:
                raise RuntimeError("the fuzzer cuts the stream")  # gRPC cancels the call
            yield m

    def one(self, service: str, method: str, seed: seeds.Seed, logged: Logged) -> None:
        name = method if service == "Matcher" else f"{service}.{method}"
        try:
            request, good = seed(self.w)
        except grpc.RpcError as exc:  # a seed's set-up call refused: the world has changed
            self.codes[name][f"seed refused: {exc.code().name}"] += 1
            return
        cut = None
        if isinstance(request, list):
            request, what = self.mutator.stream(request)
            if self.rng.random() < 0.1 and request:
                cut = self.rng.randrange(len(request) + 1)
                what.append(f"stream cancelled after {cut}")
        else:
            copy = type(request)()
            copy.CopyFrom(request)
            request, what = copy, self.mutator.mutate(copy)
        token = self.token(good)
        if token != good:
            what.append("token: " + ("none" if not token else token[:12]))
        what += seeds.spared(self.w, method, request, token)
        if self.trace is not None:  # before the call: the last line names one that never ended
            size = (
                sum(m.ByteSize() for m in request)
                if isinstance(request, list)
                else request.ByteSize()
            )
            print(f"{name} {size} bytes: {what}", file=self.trace, flush=True)
        before = self.state()
        logged.current = name
        start_logs = len(logged.seen)
        code, details, answered, reply = self.call(service, method, request, token, cut)
        self.sent[name] += 1
        self.codes[name][code] += 1
        time.sleep(0.01)  # what the call logs after its status
        fault = ""
        if code == "OK":
            self.after_ok(service, method, request, reply)
        elif cut is not None and (
            code == "CANCELLED" or details == "Exception iterating requests!"
        ):
            pass  # the fuzzer's own cut (the client library's status)
        elif code in ("UNKNOWN", "INTERNAL"):
            fault = f"{code} (an exception escaped)"
        elif code == "DEADLINE_EXCEEDED" and not answered:
            fault = "hang: no answer within the deadline"
        elif cut is not None and (
            code == "CANCELLED" or details == "Exception iterating requests!"
        ):
            pass  # the fuzzer's own cut (the client library's status)
        elif code == "RESOURCE_EXHAUSTED" and not answered and "larger than max" in details:
            pass  # gRPC's own message size limit
        elif code not in EXPECTED or not answered:
            fault = f"{code} not answered by the service"
        bidi = isinstance(request, list) and method in ("QueryStream", "Exchange", "Expand")
        if code != "OK" and not fault and not self.partial and not (bidi and cut is not None):
            after = self.state()
            changed = [
                k for k in after[0] if after[0].get(k) != before[0].get(k) and k not in NOTED
            ]
            if after[1] != before[1]:
                for label, b, a in zip(worlds.ROLE_STATE, before[1], after[1], strict=True):
                    if a != b and (label, method) not in CONSUMED:
                        changed.append(f"{label}: {worlds.difference(b, a)}")
            if changed:
                fault = f"refused ({code}) but changed: {', '.join(changed)}"
        if (
            code == "INVALID_ARGUMENT"
            and what
            and not any(
                part.split("[")[0].split(" ")[0] in details
                for f in what
                if not f.startswith(
                    ("token", "drop", "repeat", "swap", "cut", "header", "empty", "stream")
                )
                for part in f.split(".")
                if not part.startswith("msg")
            )
        ):
            self.unnamed[name, details[:100]] += 1
        for _, text in logged.seen[start_logs:]:
            if text.startswith(CLIENT_LOGGERS):
                continue
            self._fault(name, "logged: " + text, what, code, details)
        if fault:
            self._fault(name, fault, what, code, details)

    def _fault(self, name: str, fault: str, what: list[str], code: str, details: str) -> None:
        key = (name, fault, details[:120])
        self.faults.setdefault(key, [0, what, code])[0] += 1

    def after_ok(self, service: str, method: str, request: Any, reply: Any) -> None:
        """Put back what a call that succeeded took away (a token, a limit, a role's upload)."""
        w = self.w
        if (
            service == "Matcher"
            and method == "RotateToken"
            and (request.project, request.member) in w.tokens
        ):
            w.tokens[request.project, request.member] = reply.token
        elif (
            service == "Matcher"
            and method == "RevokeToken"
            and (request.project, request.member) in w.tokens
        ):
            stub = self.channel(w.target("Matcher")).unary_unary(
                "/blindmatch.v1.Matcher/RotateToken",
                request_serializer=pb.TokenRequest.SerializeToString,
                response_deserializer=pb.RotateTokenReply.FromString,
            )
            w.tokens[request.project, request.member] = stub(request, metadata=auth(ADMIN)).token
        elif service == "Matcher" and method == "StartRun":
            worlds.run_done(w, self.channel(w.target("Matcher")), request.project, reply.run_id)
        elif service == "Matcher" and method == "SetQueryLimits":
            worlds.limits_back(w, self.channel(w.target("Matcher")))
        elif service.startswith("TwoServer") and method in ("Forget", "Upload"):
            worlds.restore_roles(w)

    def report(self, seconds: float) -> int:
        print(f"\n{sum(self.sent.values())} requests in {seconds:.0f} s\n")
        print(f"{'RPC':42} {'sent':>6}  statuses")
        for name in sorted(self.sent):
            codes = ", ".join(f"{c} {n}" for c, n in self.codes[name].most_common())
            print(f"{name:42} {self.sent[name]:6}  {codes}")
        print(f"\nfaults: {len(self.faults)} kinds")
        for (name, fault, details), (count, what, code) in sorted(self.faults.items()):
            print(
                f"- {name}: {fault} x{count}\n    status {code}: {details!r}\n    changed: {what}"
            )
        if self.unnamed:
            print(f"\nINVALID_ARGUMENT naming no field changed (to review): {len(self.unnamed)}")
            for (name, details), count in sorted(self.unnamed.items())[:60]:
                print(f"  {name}: {details!r} x{count}")
        return 1 if self.faults else 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=300, help="how long to fuzz (default 300)")
    parser.add_argument("--seed", type=int, default=1, help="the random seed (default 1)")
    parser.add_argument(
        "--rpc",
        action="append",
        default=[],
        help="only RPCs whose name contains this (repeatable; default: every RPC)",
    )
    parser.add_argument(
        "--deadline",
        type=float,
        default=20,
        help="seconds a call may take before it counts as a hang (default 20)",
    )
    parser.add_argument(
        "--no-huge",
        action="store_true",
        help="no strings or bytes over the 16 MiB message limit (faster)",
    )
    parser.add_argument(
        "--trace",
        default="",
        help="write each request (RPC, size, fields changed) to this file before "
        "it is sent: after a crash its last line names the request",
    )
    add_keep(parser)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    logged = Logged()
    logging.getLogger().addHandler(logged)
    logging.getLogger().setLevel(logging.WARNING)
    threading.excepthook = lambda a: logged.seen.append(
        (
            logged.current,
            f"thread {a.thread.name if a.thread else '?'} died: {a.exc_type.__name__}: "
            f"{a.exc_value}",
        )
    )
    with work_dir("bm-rpcfuzz-", keep=args.keep) as work:
        world = worlds.start(work)
        try:
            fuzzer = Fuzzer(world, rng, not args.no_huge, args.deadline)
            if args.trace:
                fuzzer.trace = open(args.trace, "w", encoding="utf-8")  # noqa: SIM115
            chosen = [
                (k, s)
                for k, s in seeds.seeds().items()
                if not args.rpc or any(r in f"{k[0]}.{k[1]}" for r in args.rpc)
            ]
            began = time.monotonic()
            while time.monotonic() - began < args.seconds:
                (service, method), seed = rng.choice(chosen)
                fuzzer.one(service, method, seed, logged)
            for where, text in logged.seen:
                if where == "":
                    fuzzer._fault("(set-up)", "logged: " + text, [], "", "")
            return fuzzer.report(time.monotonic() - began)
        finally:
            world.stop()


if __name__ == "__main__":
    sys.exit(main())
