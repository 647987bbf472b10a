"""The authorisation table in docs/security.md, walked cell by cell against a real matcher.

The table is parsed from the document itself, so the documentation and the code
cannot drift apart: a new RPC without a row, or a row that says the wrong thing,
fails here.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from blindmatch.protos import blindmatch_pb2 as pb
from blindmatch.protos import blindmatch_pb2_grpc as pb_grpc
from tests.support import ROOT, Matcher, auth, upload_messages

SECURITY_DOC = ROOT / "docs" / "security.md"
CALLERS = ["operator", "member of the project", "user of the project",
           "member of another project", "wrong token", "no token"]  # fmt: skip
ALLOWED = "allowed"


@dataclass(frozen=True)
class Row:
    rpc: str
    cells: dict[str, str]  # caller -> "allowed" or a status code name


def read_table() -> list[Row]:
    lines = SECURITY_DOC.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| RPC | operator |"))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    assert header[1:] == CALLERS, "the table's columns changed; update this test"
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows.append(Row(cells[0].strip("`"), dict(zip(CALLERS, cells[1:], strict=True))))
    return rows


TABLE = read_table()


def test_the_table_lists_every_rpc_once() -> None:
    served = {m.name for m in pb.DESCRIPTOR.services_by_name["Matcher"].methods}
    documented = [row.rpc for row in TABLE]
    assert sorted(documented) == sorted(served)
    for row in TABLE:
        for caller, cell in row.cells.items():
            assert cell == ALLOWED or cell in grpc.StatusCode.__members__, (row.rpc, caller)


# -- a world to call into: two projects, one with uploads and a finished run -----------


@dataclass
class World:
    stub: pb_grpc.MatcherStub
    project: str
    tokens: dict[str, str]  # caller -> token (absent: no token)
    north_sha256: str = ""  # north's upload, which the run used
    ref_for_north: str = ""  # a request reference south issued, addressed to north


def _clks(n: int) -> bytes:
    return secrets.token_bytes(128 * n)


def make_world(matcher: Matcher, channel: grpc.Channel) -> World:
    stub = pb_grpc.MatcherStub(channel)
    admin = auth(matcher.admin_token)
    suffix = uuid.uuid4().hex[:8]
    mine = stub.CreateProject(
        pb.CreateProjectRequest(name=f"p-{suffix}", members=["north", "south"]), metadata=admin
    )
    other = stub.CreateProject(
        pb.CreateProjectRequest(name=f"q-{suffix}", members=["east", "west"]), metadata=admin
    )
    shared = _clks(3)
    sha = {}
    for member in ("north", "south"):
        clks = shared + _clks(2)
        sha[member] = hashlib.sha256(clks).hexdigest()
        stub.Upload(iter(upload_messages(mine.project, clks)), metadata=auth(mine.tokens[member]))
    north = auth(mine.tokens["north"])
    run = stub.StartRun(pb.StartRunRequest(project=mine.project), metadata=north)
    states = list(stub.WatchRun(pb.WatchRunRequest(project=mine.project, run_id=run.run_id),
                                metadata=north))  # fmt: skip
    assert states[-1].state == pb.RUN_STATE_DONE
    stub.SetQueryLimits(pb.QueryLimits(project=mine.project, allow_watch=True), metadata=admin)
    issued = stub.IssueRequestRef(
        pb.IssueRefRequest(project=mine.project, rows=[0], upload_sha256=sha["south"]),
        metadata=auth(mine.tokens["south"]),
    )
    user = stub.AddUser(pb.UserRequest(project=mine.project, user="pc-1"), metadata=north)
    return World(
        stub,
        mine.project,
        {
            "operator": matcher.admin_token,
            "member of the project": mine.tokens["north"],
            "user of the project": user.token,
            "member of another project": other.tokens["east"],
            "wrong token": "bm_" + secrets.token_urlsafe(32),
        },
        sha["north"],
        issued.refs[0].reference,
    )


Call = Callable[[World, list[tuple[str, str]]], Any]

CALLS: dict[str, Call] = {
    "CreateProject": lambda w, md: w.stub.CreateProject(
        pb.CreateProjectRequest(name=f"new-{uuid.uuid4().hex[:8]}", members=["a", "b"]),
        metadata=md,
    ),
    "RotateToken": lambda w, md: w.stub.RotateToken(
        pb.TokenRequest(project=w.project, member="south"), metadata=md
    ),
    "RevokeToken": lambda w, md: w.stub.RevokeToken(
        pb.TokenRequest(project=w.project, member="south"), metadata=md
    ),
    "EndProject": lambda w, md: w.stub.EndProject(
        pb.EndProjectRequest(project=w.project, reason="ISA terminated"), metadata=md
    ),
    "VerifyAudit": lambda w, md: w.stub.VerifyAudit(pb.VerifyAuditRequest(), metadata=md),
    "ExportAudit": lambda w, md: list(
        w.stub.ExportAudit(pb.ExportAuditRequest(project=w.project), metadata=md)
    ),
    "DescribeProject": lambda w, md: w.stub.DescribeProject(
        pb.DescribeProjectRequest(project=w.project), metadata=md
    ),
    "Upload": lambda w, md: w.stub.Upload(iter(upload_messages(w.project, _clks(4))), metadata=md),
    "StartRun": lambda w, md: w.stub.StartRun(pb.StartRunRequest(project=w.project), metadata=md),
    "WatchRun": lambda w, md: list(
        w.stub.WatchRun(pb.WatchRunRequest(project=w.project), metadata=md)
    ),
    "GetResults": lambda w, md: list(
        w.stub.GetResults(pb.ResultsRequest(project=w.project, purpose="authz test"), metadata=md)
    ),
    "SetConsent": lambda w, md: w.stub.SetConsent(
        pb.SetConsentRequest(project=w.project, level=pb.DISCLOSURE_COUNT), metadata=md
    ),
    "Erase": lambda w, md: w.stub.Erase(pb.EraseRequest(project=w.project), metadata=md),
    "ListProjects": lambda w, md: w.stub.ListProjects(
        pb.ListProjectsRequest(project=w.project), metadata=md
    ),
    "IssueRequestRef": lambda w, md: w.stub.IssueRequestRef(
        pb.IssueRefRequest(project=w.project, rows=[0], upload_sha256=w.north_sha256),
        metadata=md,
    ),
    "IssueRequestRefs": lambda w, md: w.stub.IssueRequestRefs(
        pb.IssueRefsRequest(
            project=w.project,
            hits=[pb.HitRows(rows=[0], partner="south")],
            upload_sha256=w.north_sha256,
        ),
        metadata=md,
    ),
    "ResolveRequestRef": lambda w, md: w.stub.ResolveRequestRef(
        pb.ResolveRefRequest(
            project=w.project, reference=w.ref_for_north, upload_sha256=w.north_sha256
        ),
        metadata=md,
    ),
    # A fresh reference north issued (a second withdrawal of one is refused), withdrawn by
    # the caller.
    "WithdrawRequestRef": lambda w, md: w.stub.WithdrawRequestRef(
        pb.WithdrawRefRequest(
            project=w.project,
            reference=w.stub.IssueRequestRef(
                pb.IssueRefRequest(project=w.project, rows=[0], upload_sha256=w.north_sha256),
                metadata=auth(w.tokens["member of the project"]),
            )
            .refs[0]
            .reference,
        ),
        metadata=md,
    ),
    "ChangeIndex": lambda w, md: w.stub.ChangeIndex(
        iter(
            [
                pb.IndexChange(
                    header=pb.IndexHeader(
                        project=w.project, clk_bits=1024, fingerprint=bytes(32), end_follows=True
                    )
                ),
                pb.IndexChange(put=pb.IndexPut(refs=[uuid.uuid4().hex], clks=_clks(1))),
                pb.IndexChange(end=pb.IndexEnd(put_refs=1)),
            ]
        ),
        metadata=md,
    ),
    "ListIndex": lambda w, md: list(
        w.stub.ListIndex(pb.ListIndexRequest(project=w.project), metadata=md)
    ),
    "Query": lambda w, md: w.stub.Query(_query(w), metadata=md),
    "TwoServerTicket": lambda w, md: _ticket(w, md),
    "QueryStream": lambda w, md: list(w.stub.QueryStream(iter([_query(w)]), metadata=md)),
    "Watch": lambda w, md: _first_event(w.stub.Watch(_query(w), metadata=md)),
    "SetQueryLimits": lambda w, md: w.stub.SetQueryLimits(
        pb.QueryLimits(project=w.project, records_per_minute=100), metadata=md
    ),
    "GetQueryReport": lambda w, md: w.stub.GetQueryReport(
        pb.QueryReportRequest(project=w.project), metadata=md
    ),
    "AddUser": lambda w, md: w.stub.AddUser(
        pb.UserRequest(project=w.project, user=f"pc-{uuid.uuid4().hex[:8]}"), metadata=md
    ),
    "ListUsers": lambda w, md: w.stub.ListUsers(
        pb.ListUsersRequest(project=w.project), metadata=md
    ),
    "RevokeUser": lambda w, md: w.stub.RevokeUser(
        pb.UserRequest(project=w.project, user="pc-1"), metadata=md
    ),
}


def _ticket(w: World, md: Any) -> Any:
    """A ticket: authorised, then refused for what it asks (the project is a CLK project)."""
    try:
        return w.stub.TwoServerTicket(pb.TwoServerTicketRequest(project=w.project), metadata=md)
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.FAILED_PRECONDITION:
            raise
        assert "is not a two-server project" in (exc.details() or "")
        return None


def _query(w: World) -> pb.QueryRequest:
    return pb.QueryRequest(
        project=w.project, purpose="authz test", clk_bits=1024, fingerprint=bytes(32),
        clks=_clks(1),
    )  # fmt: skip


def _first_event(stream: Any) -> Any:
    """A watch runs until cancelled: read its first event (ready), then hang up."""
    try:
        return next(stream)
    finally:
        stream.cancel()


def test_every_rpc_in_the_table_has_a_call_here() -> None:
    assert sorted(CALLS) == sorted(row.rpc for row in TABLE)


@pytest.mark.parametrize("row", TABLE, ids=lambda row: row.rpc)
def test_who_may_call(matcher: Matcher, row: Row) -> None:
    with grpc.insecure_channel(matcher.target) as channel:
        world = make_world(matcher, channel)
        # Refusals first: an allowed call may change the world (Erase, RevokeToken, ...);
        # the member's own token last, as its Erase deletes its users.
        order = sorted(
            CALLERS, key=lambda c: (row.cells[c] == ALLOWED, c == "member of the project")
        )
        for caller in order:
            token = world.tokens.get(caller)
            metadata = auth(token) if token else []
            expected = row.cells[caller]
            if expected == ALLOWED:
                CALLS[row.rpc](world, metadata)
                continue
            with pytest.raises(grpc.RpcError) as refused:
                CALLS[row.rpc](world, metadata)
            code = refused.value.code()
            assert code.name == expected, f"{row.rpc} by {caller}: {refused.value.details()}"
            assert re.search(r"token|operator|project", refused.value.details())


# -- authentication comes first ------------------------------------------------------------

STREAMS = {
    "Upload": lambda stub: stub.Upload,
    "ChangeIndex": lambda stub: stub.ChangeIndex,
    "QueryStream": lambda stub: lambda requests, **kw: list(stub.QueryStream(requests, **kw)),
}


@pytest.mark.parametrize("rpc", sorted(STREAMS))
@pytest.mark.parametrize("caller", ["wrong token", "no token"])
def test_a_stream_without_a_valid_token_is_refused_before_its_first_message(
    matcher: Matcher, rpc: str, caller: str
) -> None:
    """The caller is authenticated from the call's metadata alone: a stranger's stream is
    refused at once, without the matcher waiting for (or reading) a single message."""
    never = threading.Event()  # the stream sends nothing until the call has ended
    metadata = auth("bm_" + secrets.token_urlsafe(32)) if caller == "wrong token" else []
    try:
        with grpc.insecure_channel(matcher.target) as channel:
            call = STREAMS[rpc](pb_grpc.MatcherStub(channel))
            with pytest.raises(grpc.RpcError) as refused:
                call(iter(never.wait, True), metadata=metadata, timeout=20)
    finally:
        never.set()
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED, refused.value.details()
    assert re.search(r"token", refused.value.details())


# -- a member of another project learns nothing of which projects exist --------------------

FOREIGN = [row.rpc for row in TABLE if row.cells["member of another project"] != ALLOWED]


@pytest.mark.parametrize("rpc", FOREIGN)
def test_another_projects_member_gets_one_answer_whether_or_not_the_project_exists(
    matcher: Matcher, rpc: str
) -> None:
    """Operation names are sensitive: a member's token of project Q asking of a project it
    is not in gets the same refusal (status and wording) for one that exists and for one
    that does not. (Was: NOT_FOUND "no project named ..." for an unknown name, so a member
    could probe for names.)"""
    with grpc.insecure_channel(matcher.target) as channel:
        world = make_world(matcher, channel)
        metadata = auth(world.tokens["member of another project"])
        answers = []
        for project in (world.project, f"op-{uuid.uuid4().hex[:8]}"):  # (the second: none)
            asked = World(world.stub, project, world.tokens, world.north_sha256,
                          world.ref_for_north)  # fmt: skip
            with pytest.raises(grpc.RpcError) as refused:
                CALLS[rpc](asked, metadata)
            details = (refused.value.details() or "").replace(project, "P")
            answers.append((refused.value.code().name, details))
    assert answers[0] == answers[1]
    assert answers[0][0] == "PERMISSION_DENIED"
