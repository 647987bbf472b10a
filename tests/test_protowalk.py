"""docs/protocol.md walked as another organisation's engineer would: a client written from
protos/ and the page alone, driving a real matcher on loopback with the generated stubs
(no MatcherClient). Each test is a step of that walk where the matcher or the page was wrong
(protowalk, 2026-12-07)."""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from blindmatch.client import ProjectTokens
from blindmatch.matcher.domain import MAX_PURPOSE, MAX_QUERY_RECORDS, MAX_RECORDS, RPC_THREADS
from blindmatch.matcher.server import MAX_MESSAGE_BYTES, create_server
from blindmatch.protos import blindmatch_pb2 as pb
from blindmatch.protos import blindmatch_pb2_grpc as pb_grpc
from tests.support import ADMIN_TOKEN, Matcher, auth, upload_messages

PROTOCOL = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"
CLK = 128  # bytes of a 1024-bit CLK


def _finished_run(stub: pb_grpc.MatcherStub, project: ProjectTokens) -> dict[str, str]:
    """north and south upload 4 CLKs each, 2 of them shared, and a run finishes: each
    member's upload SHA-256 as the results header gives it."""
    shared = secrets.token_bytes(2 * CLK)
    for member in ("north", "south"):
        data = shared + secrets.token_bytes(2 * CLK)
        stub.Upload(iter(upload_messages("trial", data)), metadata=auth(project.tokens[member]))
    north = auth(project.tokens["north"])
    run = stub.StartRun(pb.StartRunRequest(project="trial"), metadata=north)
    states = [s.state for s in stub.WatchRun(pb.WatchRunRequest(project="trial",
                                                                 run_id=run.run_id),
                                             metadata=north, timeout=60)]  # fmt: skip
    assert states[-1] == pb.RUN_STATE_DONE
    shas = {}
    for member in ("north", "south"):
        chunks = list(stub.GetResults(pb.ResultsRequest(project="trial"),
                                      metadata=auth(project.tokens[member])))  # fmt: skip
        shas[member] = chunks[0].header.upload_sha256
    return shas


def test_a_reference_resolves_with_the_upload_sha256_in_either_case(
    matcher: Matcher, project: ProjectTokens
) -> None:
    """`Upload` takes its sha256 in either case, and `IssueRequestRef` took the upload's in
    either case; `ResolveRequestRef` refused an upper-case one as another upload's ("not to
    this encoded folder's (0CEB36C7...)"), nothing recorded."""
    with grpc.insecure_channel(matcher.target) as channel:
        stub = pb_grpc.MatcherStub(channel)
        shas = _finished_run(stub, project)
        issued = stub.IssueRequestRef(
            pb.IssueRefRequest(project="trial", rows=[0], upload_sha256=shas["north"].upper()),
            metadata=auth(project.tokens["north"]),
        )
        reference = issued.refs[0].reference
        resolved = stub.ResolveRequestRef(
            pb.ResolveRefRequest(project="trial", reference=reference,
                                 upload_sha256=shas["south"].upper()),
            metadata=auth(project.tokens["south"]),
        )  # fmt: skip
        assert resolved.requester == "north" and list(resolved.rows) == [0]
        assert resolved.upload_sha256 == shas["south"]


def test_a_malformed_upload_sha256_is_refused_as_malformed_after_a_run(
    matcher: Matcher, project: ProjectTokens
) -> None:
    """With a finished run, a malformed `upload_sha256` was FAILED_PRECONDITION "the latest
    run used a different upload of yours than this encoded folder" (IssueRequestRef,
    IssueRequestRefs): a client bug reported as the wrong folder."""
    with grpc.insecure_channel(matcher.target) as channel:
        stub = pb_grpc.MatcherStub(channel)
        _finished_run(stub, project)
        north = auth(project.tokens["north"])
        calls = (
            lambda: stub.IssueRequestRef(
                pb.IssueRefRequest(project="trial", rows=[0], upload_sha256="sha-of-folder"),
                metadata=north,
            ),
            lambda: stub.IssueRequestRefs(
                pb.IssueRefsRequest(project="trial", upload_sha256="sha-of-folder",
                                    hits=[pb.HitRows(rows=[0], partner="south")]),
                metadata=north,
            ),
        )  # fmt: skip
        for call in calls:
            with pytest.raises(grpc.RpcError) as refused:
                call()
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "upload_sha256: 'sha-of-folder' is not a SHA-256" in refused.value.details()


def test_two_server_records_in_a_clk_project_is_refused_not_ignored(
    matcher: Matcher, project: ProjectTokens
) -> None:
    """A CLK project's Query refused `two_server_ticket` and `catch_up_ticket` but answered a
    request carrying `two_server_records`, ignoring it: a client that mixed the two modes'
    fields learnt nothing of its mistake."""
    with grpc.insecure_channel(matcher.target) as channel:
        stub = pb_grpc.MatcherStub(channel)
        request = pb.QueryRequest(project="trial", purpose="case 1", clk_bits=1024,
                                  fingerprint=bytes(32), clks=secrets.token_bytes(CLK),
                                  two_server_records=1)  # fmt: skip
        with pytest.raises(grpc.RpcError) as refused:
            stub.Query(request, metadata=auth(project.tokens["north"]))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert refused.value.details().startswith("two_server_records: project 'trial'")


def _limits() -> dict[str, str]:
    text = PROTOCOL.read_text(encoding="utf-8").split("## Limits", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (.+?) \| (.+?) \|$", text, flags=re.M)
    return dict(rows)


def test_the_limits_table_says_what_the_matcher_enforces() -> None:
    """The table said `purpose` may have 500 characters in Query and Watch (the matcher
    refuses 201, `purpose: 300 characters; at most 200`) and 256 calls in flight (384)."""
    limits = _limits()
    assert limits["`purpose`"] == f"{MAX_PURPOSE} characters (every RPC that takes one)"
    assert limits["calls in flight, in all"] == f"{RPC_THREADS * 4}"
    assert limits["CLKs per query or watch"] == f"{MAX_QUERY_RECORDS:,}"
    assert limits["records per upload"].startswith(f"{MAX_RECORDS:,},")
    assert limits["gRPC message size, each direction"] == f"{MAX_MESSAGE_BYTES // 2**20} MiB"


@pytest.mark.parametrize("value", [None, "Token {token}", "{token}"])
def test_a_call_without_a_bearer_token_is_told_the_metadata_it_needs(
    matcher: Matcher, project: ProjectTokens, value: str | None
) -> None:
    """Without `authorization: Bearer <token>` (none, another scheme, a bare token) a member
    call was told `no token: pass --token or set BLINDMATCH_TOKEN`: the command line's
    options, not what a client written from the page had left out."""
    metadata = [] if value is None else [("authorization", value.format(token="bm_x"))]
    with grpc.insecure_channel(matcher.target) as channel:
        stub = pb_grpc.MatcherStub(channel)
        for call in (
            lambda: stub.DescribeProject(pb.DescribeProjectRequest(project="trial"),
                                         metadata=metadata),
            lambda: stub.ListProjects(pb.ListProjectsRequest(), metadata=metadata),
        ):  # fmt: skip
            with pytest.raises(grpc.RpcError) as refused:
                call()
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert refused.value.details().startswith(
                "no token: the call carries no `authorization: Bearer <token>` metadata"
            )


def test_an_upload_ended_as_idle_says_the_matcher_ended_it(tmp_path: Path) -> None:
    """An upload whose client sends its header and then nothing is ended after
    `--stream-idle-seconds` with DEADLINE_EXCEEDED and the matcher's words, but without
    `blindmatch-status`: by docs/protocol.md "Who answered", a status gRPC made up for want
    of an answer (the stream was cancelled from the idle sweep, not ended by its handler)."""
    server = create_server("127.0.0.1:0", tmp_path / "data", ADMIN_TOKEN, stream_idle=1)
    released = threading.Event()

    def header_then_silence(project: str) -> Iterator[pb.UploadRequest]:
        data = secrets.token_bytes(CLK)
        yield pb.UploadRequest(header=pb.UploadHeader(
            project=project, clk_bits=1024, record_count=1, fingerprint=bytes(32),
            sha256=hashlib.sha256(data).hexdigest()))  # fmt: skip
        released.wait()

    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = pb_grpc.MatcherStub(channel)
            made = stub.CreateProject(pb.CreateProjectRequest(name="trial", members=["a", "b"]),
                                      metadata=auth(ADMIN_TOKEN))  # fmt: skip
            call = stub.Upload.future(header_then_silence("trial"),
                                      metadata=auth(made.tokens["a"]), timeout=60)  # fmt: skip
            try:
                error = call.exception()
            finally:
                released.set()
            assert isinstance(error, grpc.RpcError)
            assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert "no message from the client for 1 s" in error.details()
            assert ("blindmatch-status", "DEADLINE_EXCEEDED") in tuple(error.trailing_metadata())
    finally:
        server.stop(grace=None)


def test_a_row_past_the_upload_is_refused_as_not_a_row(
    matcher: Matcher, project: ProjectTokens
) -> None:
    """North's upload holds 4 records; asking a reference for row 4 (an off-by-one: rows
    count from 0) was FAILED_PRECONDITION "the latest run found no match for this record",
    a client's mistake told as a fact about the partners."""
    with grpc.insecure_channel(matcher.target) as channel:
        stub = pb_grpc.MatcherStub(channel)
        shas = _finished_run(stub, project)
        north = auth(project.tokens["north"])
        calls = (
            lambda: stub.IssueRequestRef(
                pb.IssueRefRequest(project="trial", rows=[0, 4], upload_sha256=shas["north"]),
                metadata=north,
            ),
            lambda: stub.IssueRequestRefs(
                pb.IssueRefsRequest(project="trial", upload_sha256=shas["north"],
                                    hits=[pb.HitRows(rows=[0], partner="south"),
                                          pb.HitRows(rows=[4], partner="south")]),
                metadata=north,
            ),
        )  # fmt: skip
        for call, field in zip(calls, ("rows", "hits[1].rows"), strict=True):
            with pytest.raises(grpc.RpcError) as refused:
                call()
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert refused.value.details().startswith(
                f"{field}: 4 is not a row of your upload that the latest run used (4 records: "
                "rows 0 to 3)"
            )
