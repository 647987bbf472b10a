"""The servers benchmarks/rpcfuzz.py fuzzes, on loopback in this process, and a valid request
for every RPC of blindmatch/protos/blindmatch.proto (what the fuzzer mutates).

The matcher (the combiner of two-server projects) with projects `trial` (north, south, west:
standing indexes, uploads), `runs` (r1, r2: uploaded and run, so results and request
references exist), `victim` (v1, v2: erased, tokens rotated and revoked) and `shares` (two-server
mode); S1, S2 and a combiner role holding north's and south's uploads; a look-up server reading
the matcher's data dir, and one without a data dir loaded by hand."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from blindmatch.client.encoding.sharing import BandPlan, SharedUpload, shared_upload
from blindmatch.client.remote.twoserver import upload_parts
from blindmatch.matcher.core import linkbit
from blindmatch.matcher.rpc.lookup_service import RunningLookupServer, create_lookup_server
from blindmatch.matcher.rpc.twoserver_project import combiner_setup
from blindmatch.matcher.rpc.twoserver_service import RunningRole, SharesService, create_role
from blindmatch.matcher.server import RunningServer, create_server
from blindmatch.matcher.storage.shard_source import lookup_key
from blindmatch.protos import blindmatch_pb2 as pb
from blindmatch.protos import blindmatch_pb2_grpc as pb_grpc

ADMIN = "bm_admin_fuzz_" + secrets.token_hex(8)
ROWS = 20  # records of each role upload
FP = bytes(32)
INDEXED: dict[str, Any] = dict(clk_bits=1024, fingerprint=FP)  # an index's layout


def auth(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def clks(n: int, seed: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n * 128, dtype=np.uint8).tobytes()


def upload_messages(project: str, data: bytes) -> list[pb.UploadRequest]:
    header = pb.UploadHeader(
        project=project,
        clk_bits=1024,
        record_count=len(data) // 128,
        fingerprint=FP,
        sha256=hashlib.sha256(data).hexdigest(),
        client_upload_id=secrets.token_hex(6),
    )
    return [pb.UploadRequest(header=header), pb.UploadRequest(clks=data)]


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


def load_part(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = dict(
        shard=0,
        shards=1,
        project="trial",
        member="south",
        clk_bits=1024,
        threshold=0.8,
        refs=["s9"],
        clks=clks(1, 5),
    )
    return {**base, **fields}


def circuit_batch(who: int, **fields: Any) -> pb.CircuitBatch:
    dealt = linkbit.deal(linkbit.circuit(1024, (0.8,)), 2)
    base: dict[str, Any] = dict(
        batch=secrets.token_hex(4),
        member_a="north",
        member_b="south",
        records_a=ROWS,
        records_b=ROWS,
        clk=0,
        rows_a=np.array([0, 1], "<u4").tobytes(),
        rows_b=np.array([1, 2], "<u4").tobytes(),
        cutoffs=[0.8],
        setup=dealt.to_s2 if who else dealt.to_s1,
    )
    return pb.CircuitBatch(**{**base, **fields})


def propose_request() -> pb.ProposeRequest:
    return pb.ProposeRequest(members=["north", "south"], records=[ROWS, ROWS], threshold=0.8)


# A seed: the world -> (request, or a client stream's requests; the token it is sent with).
Seed = Callable[[World], tuple[Any, str]]


def _m(w: World, project: str, member: str) -> str:
    return w.tokens[project, member]


def _query(w: World) -> pb.QueryRequest:
    return pb.QueryRequest(
        project="trial", purpose="q-1", clk_bits=1024, fingerprint=FP, clks=clks(2, 1)
    )


MATCHER: dict[str, Seed] = {
    "CreateProject": lambda w: (
        pb.CreateProjectRequest(name=w.fresh("p"), members=["a", "b"]),
        ADMIN,
    ),
    "DescribeProject": lambda w: (
        pb.DescribeProjectRequest(project="trial"),
        _m(w, "trial", "north"),
    ),
    "ListProjects": lambda w: (pb.ListProjectsRequest(project="trial"), ADMIN),
    "Upload": lambda w: (upload_messages("trial", clks(3, 20)), _m(w, "trial", "west")),
    "StartRun": lambda w: (pb.StartRunRequest(project="runs"), _m(w, "runs", "r1")),
    "WatchRun": lambda w: (
        pb.WatchRunRequest(project="runs", run_id=w.refs["run"]),
        _m(w, "runs", "r1"),
    ),
    "GetResults": lambda w: (pb.ResultsRequest(project="runs", purpose="c-1"), _m(w, "runs", "r1")),
    "IssueRequestRef": lambda w: (
        pb.IssueRefRequest(
            project="runs", rows=[0], partner="r2", upload_sha256=w.refs["r1"], purpose="c-2"
        ),
        _m(w, "runs", "r1"),
    ),
    "ResolveRequestRef": lambda w: (
        pb.ResolveRefRequest(
            project="runs", reference=w.refs["ref"], purpose="c-3", upload_sha256=w.refs["r2"]
        ),
        _m(w, "runs", "r2"),
    ),
    "IssueRequestRefs": lambda w: (
        pb.IssueRefsRequest(
            project="runs",
            hits=[pb.HitRows(rows=[0], partner="r2")],
            upload_sha256=w.refs["r1"],
            purpose="c-4",
        ),
        _m(w, "runs", "r1"),
    ),
    "TwoServerTicket": lambda w: (
        pb.TwoServerTicketRequest(
            project="shares",
            upload=pb.UploadHeader(fingerprint=FP, two_server_bits=[1024], record_count=ROWS),
        ),
        _m(w, "shares", "south"),
    ),
    "ChangeIndex": lambda w: (
        [
            pb.IndexChange(header=pb.IndexHeader(project="trial", end_follows=True, **INDEXED)),
            pb.IndexChange(put=pb.IndexPut(refs=["w1", "w2"], clks=clks(2, 9))),
            pb.IndexChange(remove=pb.IndexRemove(refs=["w1"])),
            pb.IndexChange(end=pb.IndexEnd(put_refs=2, remove_refs=1)),  # (header: end_follows)
        ],
        _m(w, "trial", "west"),
    ),
    "ListIndex": lambda w: (pb.ListIndexRequest(project="trial"), _m(w, "trial", "north")),
    "Query": lambda w: (_query(w), _m(w, "trial", "north")),
    "QueryStream": lambda w: ([_query(w), _query(w)], _m(w, "trial", "north")),
    "Watch": lambda w: (_query(w), _m(w, "trial", "west")),
    "SetQueryLimits": lambda w: (
        pb.QueryLimits(
            project="trial", member="north", records_per_minute=10**6, records_per_day=10**8
        ),
        ADMIN,
    ),
    "GetQueryReport": lambda w: (pb.QueryReportRequest(project="trial", hours=24), ADMIN),
    "SetConsent": lambda w: (
        pb.SetConsentRequest(project="trial", level=pb.DISCLOSURE_HITS),
        _m(w, "trial", "north"),
    ),
    "Erase": lambda w: (pb.EraseRequest(project="victim"), _m(w, "victim", "v1")),
    "RotateToken": lambda w: (pb.TokenRequest(project="victim", member="v2"), ADMIN),
    "RevokeToken": lambda w: (pb.TokenRequest(project="victim", member="v2"), ADMIN),
    "ExportAudit": lambda w: (
        pb.ExportAuditRequest(project="trial", after_seq=0),
        _m(w, "trial", "north"),
    ),
    "VerifyAudit": lambda w: (pb.VerifyAuditRequest(), ADMIN),
    "AddUser": lambda w: (
        pb.UserRequest(project="trial", user=w.fresh("u")),
        _m(w, "trial", "north"),
    ),
    "ListUsers": lambda w: (pb.ListUsersRequest(project="trial"), _m(w, "trial", "north")),
    "RevokeUser": lambda w: (
        pb.UserRequest(project="trial", user=w.fresh("nobody")),
        _m(w, "trial", "north"),
    ),
}

LOOKUP: dict[str, Seed] = {
    "Search": lambda w: (
        pb.ShardSearchRequest(
            project="trial", members=["south"], clk_bits=1024, clks=clks(1, 1), threshold=0.8
        ),
        lookup_key(w.data_dir),
    ),
    "Apply": lambda w: (
        pb.ShardChange(
            project="trial",
            member="south",
            clk_bits=1024,
            put_refs=["s1"],
            put_clks=clks(1, 2),
            threshold=0.8,
        ),
        lookup_key(w.data_dir),
    ),
    "Reload": lambda w: (pb.ShardReloadRequest(), lookup_key(w.data_dir)),
    "Describe": lambda w: (pb.ShardDescribeRequest(), lookup_key(w.data_dir)),
    "Load": lambda w: (
        [pb.ShardLoad(**load_part()), pb.ShardLoad(**load_part(refs=["s8"], clks=clks(1, 6)))],
        lookup_key(w.data_dir),
    ),
}


def _parts(w: World, role: str) -> list[pb.SharedPart]:
    return list(upload_parts(w.fresh("m"), role, w.uploads[0]))


def _prepared(w: World) -> tuple[list[pb.RoundMessage], str]:
    from blindmatch.matcher.rpc.twoserver_service import batch_digest

    request = circuit_batch(1)
    import grpc

    with grpc.insecure_channel(w.target("TwoServerShares")) as ch:
        pb_grpc.TwoServerSharesStub(ch).Prepare(request, metadata=auth(w.key))
    return [
        pb.RoundMessage(batch=request.batch, checked=batch_digest(request), mask=bytes(32))
    ], w.key


def block_deal(who: int) -> pb.BlockDeal:
    """C's deal of one block of every north x south pair (part 0) for S1 (0) or S2 (1)."""
    from blindmatch.matcher.core import densearith

    dealt = densearith.deal(densearith.Shape(ROWS, ROWS, (1024,)))
    return pb.BlockDeal(blocks=secrets.token_hex(4), member_a="north", member_b="south",
                        records_a=ROWS, records_b=ROWS, clk=0, part=0, rows_a=[ROWS],
                        rows_b=[ROWS], cutoffs=[0.8],
                        setup=dealt.to_s2 if who else dealt.to_s1)  # fmt: skip


def _deal_parts(deal: pb.BlockDeal) -> list[pb.BlockDeal]:
    head = pb.BlockDeal()
    head.CopyFrom(deal)
    head.setup = b""
    return [head, pb.BlockDeal(setup=deal.setup)]


def _blocks_prepared(w: World) -> tuple[list[pb.BlockMessage], str]:
    from blindmatch.matcher.rpc.twoserver_blocks import digest

    deal = block_deal(1)
    import grpc

    with grpc.insecure_channel(w.target("TwoServerShares")) as ch:
        pb_grpc.TwoServerSharesStub(ch).PrepareBlocks(iter(_deal_parts(deal)), metadata=auth(w.key))
    rows = np.arange(ROWS, dtype="<u4").tobytes()
    return [pb.BlockMessage(blocks=deal.blocks, checked=digest(deal), rows_a=rows, rows_b=rows,
                            nonce=bytes(32))], w.key  # fmt: skip


def _expand(w: World) -> tuple[list[pb.SealedMatches], str]:
    token = w.uploads[0].s1.bands[0].sealed[:16].tobytes()
    return (
        [
            pb.SealedMatches(run=propose_request()),
            pb.SealedMatches(member_a=0, member_b=1, clk=0, tokens_a=token, tokens_b=token),
        ],
        w.key,
    )


ROLES: dict[tuple[str, str], Seed] = {
    ("TwoServerBlocking", "Upload"): lambda w: (_parts(w, "s1"), w.member_key),
    ("TwoServerBlocking", "Propose"): lambda w: (propose_request(), w.key),
    ("TwoServerBlocking", "Evaluate"): lambda w: (circuit_batch(0), w.key),
    ("TwoServerBlocking", "Forget"): lambda w: (
        pb.ForgetRequest(project="p", member="gone"),
        w.key,
    ),
    ("TwoServerBlocking", "Resume"): lambda w: (pb.ResumeRequest(batch="b0"), w.key),
    ("TwoServerBlocking", "Acknowledge"): lambda w: (pb.AcknowledgeRequest(batches=["b0"]), w.key),
    ("TwoServerShares", "Upload"): lambda w: (_parts(w, "s2"), w.member_key),
    ("TwoServerShares", "Expand"): _expand,
    ("TwoServerShares", "Prepare"): lambda w: (circuit_batch(1), w.key),
    ("TwoServerShares", "Exchange"): _prepared,
    ("TwoServerShares", "Collect"): lambda w: (pb.CollectRequest(batch="b0"), w.key),
    ("TwoServerShares", "Forget"): lambda w: (pb.ForgetRequest(project="p", member="gone"), w.key),
    ("TwoServerShares", "Resume"): lambda w: (pb.ResumeRequest(batch="b0"), w.key),
    ("TwoServerShares", "Acknowledge"): lambda w: (pb.AcknowledgeRequest(batches=["b0"]), w.key),
    ("TwoServerBlocking", "PrepareBlocks"): lambda w: (block_deal(0), w.key),
    ("TwoServerShares", "PrepareBlocks"): lambda w: (_deal_parts(block_deal(1)), w.key),
    ("TwoServerShares", "BlockExchange"): _blocks_prepared,
    ("TwoServerBlocking", "Holds"): lambda w: (pb.HoldsRequest(names=["p/gone/t"]), w.key),
    ("TwoServerShares", "Holds"): lambda w: (pb.HoldsRequest(names=["p/gone/t"]), w.key),
    ("TwoServerCombiner", "Upload"): lambda w: (_parts(w, "combiner"), w.member_key),
    ("TwoServerCombiner", "Run"): lambda w: (pb.TwoServerRunRequest(threshold=0.8), w.key),
}


def seeds() -> dict[tuple[str, str], Seed]:
    out: dict[tuple[str, str], Seed] = {("Matcher", k): v for k, v in MATCHER.items()}
    out.update({("LookupServer", k): v for k, v in LOOKUP.items()})
    out.update(ROLES)
    return out


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
