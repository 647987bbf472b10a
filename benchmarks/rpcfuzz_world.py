"""The servers benchmarks/rpcfuzz.py fuzzes, on loopback in this process, and the state it
watches them for (what a refused call must not change).

The matcher (the combiner of two-server projects) with projects `trial` (north, south, west:
standing indexes, uploads), `runs` (r1, r2: uploaded and run, so results and request
references exist), `victim` (v1, v2: erased, tokens rotated and revoked) and `shares` (two-server
mode); S1, S2 and a combiner role holding north's and south's uploads; a look-up server reading
the matcher's data dir, and one without a data dir loaded by hand. A valid request of every
RPC (what the fuzzer mutates) is in benchmarks/rpcfuzz_seeds.py, built on
benchmarks/rpcfuzz_requests.py."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.rpcfuzz_requests import ADMIN, FP, ROWS, auth, clks, load_part, upload_messages
from blindmatch.client.encoding.sharing import BandPlan, SharedUpload, shared_upload
from blindmatch.client.remote.twoserver import upload_parts
from blindmatch.matcher.rpc.lookup_service import RunningLookupServer, create_lookup_server
from blindmatch.matcher.rpc.twoserver_project import combiner_setup
from blindmatch.matcher.rpc.twoserver_service import RunningRole, SharesService, create_role
from blindmatch.matcher.server import RunningServer, create_server
from blindmatch.matcher.storage.shard_source import lookup_key
from blindmatch.protos import blindmatch_pb2 as pb
from blindmatch.protos import blindmatch_pb2_grpc as pb_grpc


@dataclass
class World:
    work: Path
    matcher: RunningServer
    roles: dict[str, RunningRole]  # s1, s2, combiner
    lookup: RunningLookupServer  # reads the matcher's data dir
    loaded: RunningLookupServer  # no data dir: loaded by Load
    key: str  # the parties' key
    member_key: str
    tokens: dict[tuple[str, str], str] = field(default_factory=dict)
    uploads: list[SharedUpload] = field(default_factory=list)
    refs: dict[str, str] = field(default_factory=dict)  # r1's reference for r2; runs' sha256s
    counter: int = 0

    @property
    def data_dir(self) -> Path:
        return self.work / "matcher"

    def target(self, service: str, method: str = "") -> str:
        lookup = self.loaded if method == "Load" else self.lookup
        port = {
            "Matcher": self.matcher.port,
            "LookupServer": lookup.port,
            "TwoServerBlocking": self.roles["s1"].port,
            "TwoServerShares": self.roles["s2"].port,
            "TwoServerCombiner": self.roles["combiner"].port,
        }[service]
        return f"127.0.0.1:{port}"

    def names(self) -> list[str]:
        """Names a hostile caller would try."""
        out = {p for p, _ in self.tokens} | {m for _, m in self.tokens}
        out |= {"north", "south", "u0", "s1", "S1", "b0", "@", "north@00ff00ff", "shares/north/x"}
        return sorted(out | set(self.refs.values()))

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def stop(self) -> None:
        self.matcher.stop(grace=None)
        for r in self.roles.values():
            r.stop(grace=None)
        self.lookup.stop(grace=None)
        self.loaded.stop(grace=None)


def start(work: Path) -> World:
    key, member_key = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
    s2 = create_role("s2", "127.0.0.1:0", key, member_key, data_dir=work / "s2")
    s1 = create_role(
        "s1", "127.0.0.1:0", key, member_key, s2=f"127.0.0.1:{s2.port}", data_dir=work / "s1"
    )
    comb = create_role(
        "combiner",
        "127.0.0.1:0",
        key,
        member_key,
        s1=f"127.0.0.1:{s1.port}",
        s2=f"127.0.0.1:{s2.port}",
    )
    setup = combiner_setup(f"127.0.0.1:{s1.port}", f"127.0.0.1:{s2.port}", key, member_key)
    matcher = create_server("127.0.0.1:0", work / "matcher", ADMIN, workers=2, two_server=setup)
    lookup = create_lookup_server("127.0.0.1:0", work / "matcher", 0, 1, wait=True)
    loaded = create_lookup_server("127.0.0.1:0", None, 0, 1, key=lookup_key(work / "matcher"))
    world = World(
        work, matcher, {"s1": s1, "s2": s2, "combiner": comb}, lookup, loaded, key, member_key
    )
    prepare(world)
    return world


def prepare(w: World) -> None:
    """The projects, uploads, indexes, a run and a reference the seeds need."""
    import grpc

    with grpc.insecure_channel(w.target("Matcher")) as ch:
        m = pb_grpc.MatcherStub(ch)
        admin = auth(ADMIN)
        # (a matcher with S1 and S2 makes two-server projects unless asked: the CLK ones say so)
        for name, members, mode in (
            ("trial", ["north", "south", "west"], "clk"),
            ("runs", ["r1", "r2"], "clk"),
            ("victim", ["v1", "v2"], "clk"),
            ("shares", ["north", "south"], "two-server"),
        ):
            reply = m.CreateProject(
                pb.CreateProjectRequest(name=name, members=members, mode=mode), metadata=admin
            )
            w.tokens.update({(name, k): v for k, v in reply.tokens.items()})
        m.SetQueryLimits(
            pb.QueryLimits(
                project="trial", records_per_minute=10**6, records_per_day=10**8, allow_watch=True
            ),
            metadata=admin,
        )
        for i, member in enumerate(("north", "south")):
            change = [
                pb.IndexChange(
                    header=pb.IndexHeader(
                        project="trial", clk_bits=1024, fingerprint=FP, end_follows=True
                    )
                ),
                pb.IndexChange(
                    put=pb.IndexPut(refs=[f"{member}{k}" for k in range(5)], clks=clks(5, 1))
                ),
                pb.IndexChange(end=pb.IndexEnd(put_refs=5)),
            ]
            m.ChangeIndex(iter(change), metadata=auth(w.tokens["trial", member]))
            m.Upload(
                iter(upload_messages("trial", clks(4, 10 + i))),
                metadata=auth(w.tokens["trial", member]),
            )
        m.AddUser(
            pb.UserRequest(project="trial", user="u0"), metadata=auth(w.tokens["trial", "north"])
        )
        same = clks(6, 7)
        for member in ("r1", "r2"):
            reply = m.Upload(
                iter(upload_messages("runs", same)), metadata=auth(w.tokens["runs", member])
            )
            w.refs[member] = reply.sha256
        run = m.StartRun(pb.StartRunRequest(project="runs"), metadata=auth(w.tokens["runs", "r1"]))
        for status in m.WatchRun(
            pb.WatchRunRequest(project="runs", run_id=run.run_id),
            metadata=auth(w.tokens["runs", "r1"]),
        ):
            if status.state in (pb.RUN_STATE_DONE, pb.RUN_STATE_FAILED):
                break
        w.refs["run"] = run.run_id
        issued = m.IssueRequestRef(
            pb.IssueRefRequest(
                project="runs", rows=[0], partner="r2", upload_sha256=w.refs["r1"], purpose="case-1"
            ),
            metadata=auth(w.tokens["runs", "r1"]),
        )
        w.refs["ref"] = issued.refs[0].reference
        again = m.IssueRequestRef(  # for WithdrawRequestRef (so "ref" stays resolvable)
            pb.IssueRefRequest(
                project="runs", rows=[0], partner="r2", upload_sha256=w.refs["r1"], purpose="case-5"
            ),
            metadata=auth(w.tokens["runs", "r1"]),
        )
        w.refs["withdrawn"] = again.refs[0].reference
    plan = BandPlan(bits=4, bands=4)
    rng = np.random.default_rng(3)
    w.uploads = [
        shared_upload(rng.integers(0, 256, (ROWS, 128), dtype=np.uint8), b"s", plan)
        for _ in range(2)
    ]
    restore_roles(w)
    with grpc.insecure_channel(w.target("LookupServer", "Load")) as ch:
        load = [pb.ShardLoad(**load_part())]
        pb_grpc.LookupServerStub(ch).Load(iter(load), metadata=auth(lookup_key(w.data_dir)))


def restore_roles(w: World) -> None:
    """north's and south's uploads at S1, S2 and the combiner, where a call dropped them."""
    import grpc

    stubs: dict[str, Any] = {
        "s1": pb_grpc.TwoServerBlockingStub,
        "s2": pb_grpc.TwoServerSharesStub,
        "combiner": pb_grpc.TwoServerCombinerStub,
    }
    for role, running in w.roles.items():
        for member, up in zip(("north", "south"), w.uploads, strict=True):
            if member in running.service.held:
                continue
            with grpc.insecure_channel(f"127.0.0.1:{running.port}") as ch:
                stubs[role](ch).Upload(
                    iter(upload_parts(member, role, up)), metadata=auth(w.member_key)
                )


ROLE_STATE = (
    "held by S1, S2, the combiner",
    "S2's prepared batches",
    "S2's outputs",
    "records of the look-up server",
    "records of the loaded look-up server",
)


def role_state(w: World) -> tuple[object, ...]:
    shares = w.roles["s2"].service
    assert isinstance(shares, SharesService)
    return (
        [sorted(r.service.held) for r in w.roles.values()],
        sorted(shares.pending),
        sorted(shares.outputs),
        w.lookup.shards.records,
        w.loaded.shards.records,
    )


def limits_back(w: World, channel: Any) -> None:
    """The query limits the seeds need again, after a SetQueryLimits that changed them."""
    stub = pb_grpc.MatcherStub(channel)
    for member in ("", "north", "south", "west"):
        stub.SetQueryLimits(
            pb.QueryLimits(
                project="trial",
                member=member,
                records_per_minute=10**6,
                records_per_day=10**8,
                **({} if member else {"allow_watch": True}),
            ),
            metadata=auth(ADMIN),
        )


def run_done(w: World, channel: Any, project: str, run_id: str) -> None:
    """Wait for a run a fuzzed StartRun started (its links and audit entries are written in
    the background: not to be taken for what a later refused call wrote)."""
    token = next((t for (p, _), t in w.tokens.items() if p == project), "")
    for status in pb_grpc.MatcherStub(channel).WatchRun(
        pb.WatchRunRequest(project=project, run_id=run_id), metadata=auth(token), timeout=120
    ):
        if status.state in (pb.RUN_STATE_DONE, pb.RUN_STATE_FAILED):
            return


def difference(before: object, after: object) -> str:
    """What changed between two of `role_state`'s values: names added and gone, or values."""
    if isinstance(before, list) and isinstance(after, list):
        if before and isinstance(before[0], list):
            return "; ".join(difference(b, a) for b, a in zip(before, after, strict=True) if a != b)
        added, gone = sorted(set(after) - set(before)), sorted(set(before) - set(after))
        return f"added {added[:5]}, gone {gone[:5]}"
    return f"{before!r} -> {after!r}"
