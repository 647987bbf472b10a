"""A valid request of every RPC of blindmatch/protos/blindmatch.proto, for the world of
benchmarks/rpcfuzz_world.py (what benchmarks/rpcfuzz.py mutates): by service, a seed that
makes the request (or a client stream's requests) and names the token it is sent with."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks.rpcfuzz_requests import (
    ADMIN,
    FP,
    INDEXED,
    ROWS,
    auth,
    block_deal,
    circuit_batch,
    clks,
    deal_parts,
    load_part,
    propose_request,
    upload_messages,
)
from benchmarks.rpcfuzz_world import World
from blindmatch.client.remote.twoserver import upload_parts
from blindmatch.matcher.storage.shard_source import lookup_key
from blindmatch.protos import blindmatch_pb2 as pb
from blindmatch.protos import blindmatch_pb2_grpc as pb_grpc

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
    "WithdrawRequestRef": lambda w: (
        pb.WithdrawRefRequest(project="runs", reference=w.refs["withdrawn"], purpose="c-5"),
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
    "EndProject": lambda w: (
        pb.EndProjectRequest(project=throwaway(w), reason="fuzz: agreement terminated"),
        ADMIN,
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


def _blocks_prepared(w: World) -> tuple[list[pb.BlockMessage], str]:
    from blindmatch.matcher.rpc.twoserver_blocks import digest

    deal = block_deal(1)
    import grpc

    with grpc.insecure_channel(w.target("TwoServerShares")) as ch:
        pb_grpc.TwoServerSharesStub(ch).PrepareBlocks(iter(deal_parts(deal)), metadata=auth(w.key))
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
    ("TwoServerShares", "PrepareBlocks"): lambda w: (deal_parts(block_deal(1)), w.key),
    ("TwoServerShares", "BlockExchange"): _blocks_prepared,
    ("TwoServerBlocking", "Holds"): lambda w: (pb.HoldsRequest(names=["p/gone/t"]), w.key),
    ("TwoServerShares", "Holds"): lambda w: (pb.HoldsRequest(names=["p/gone/t"]), w.key),
    ("TwoServerCombiner", "Upload"): lambda w: (_parts(w, "combiner"), w.member_key),
    ("TwoServerCombiner", "Run"): lambda w: (pb.TwoServerRunRequest(threshold=0.8), w.key),
}


def throwaway(w: World) -> str:
    """A project made for one EndProject call (north's upload in it where the matcher takes
    it, so that ending it deletes something): an authorised EndProject ends it, never one
    the other seeds need."""
    import grpc

    name = w.fresh("ending")
    with grpc.insecure_channel(w.target("Matcher")) as ch:
        m = pb_grpc.MatcherStub(ch)
        reply = m.CreateProject(
            pb.CreateProjectRequest(name=name, members=["north", "south"], mode="clk"),
            metadata=auth(ADMIN),
        )
        # A new token from an address refused often is refused unread for a while
        # (rpc/refusals.py): the project is then ended empty.
        with contextlib.suppress(grpc.RpcError):
            m.Upload(iter(upload_messages(name, clks(3, 30))), metadata=auth(reply.tokens["north"]))
    w.refs["ending"] = name
    return name


def spared(w: World, method: str, request: Any, token: str) -> list[str]:
    """Keep the world's own projects from an authorised EndProject (a mutation may name one:
    `World.names`): such a request names the seed's throwaway project instead. What was
    changed, for the fault's description (none: an empty list)."""
    own = {p for p, _ in w.tokens}
    if method != "EndProject" or token != ADMIN or request.project.strip() not in own:
        return []
    request.project = w.refs["ending"]
    return ["project: one of the fuzzer's own, sent as the throwaway's"]


def seeds() -> dict[tuple[str, str], Seed]:
    out: dict[tuple[str, str], Seed] = {("Matcher", k): v for k, v in MATCHER.items()}
    out.update({("LookupServer", k): v for k, v in LOOKUP.items()})
    out.update(ROLES)
    return out
