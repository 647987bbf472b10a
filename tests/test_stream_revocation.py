"""When a member's access ends (erasure, expiry, revocation), its open streams end with it and
nothing they carry is committed afterwards (issue 16, finding 5). The attacks against a
separate `blindmatch serve` are in test_hostile_streams.py; these reach inside a matcher in
this process."""

from __future__ import annotations

import os
import time
from pathlib import Path

import grpc
import pytest

from blindmatch.client import MatcherClient, ProjectTokens
from blindmatch.protos import blindmatch_pb2 as pb
from tests.support import Clock, Matcher, auth, db_rows, start, stub, upload_messages

FINGERPRINT = bytes(range(32))
pytestmark = pytest.mark.server


def open_watch(matcher: Matcher, token: str) -> grpc.Call:
    with matcher.operator() as op:
        op.set_query_limits("trial", allow_watch=True)
    request = pb.QueryRequest(
        project="trial",
        purpose="case 7",
        clk_bits=1024,
        fingerprint=FINGERPRINT,
        clks=os.urandom(128),
    )
    channel = grpc.insecure_channel(matcher.target)
    watch = stub(channel).Watch(request, metadata=auth(token), timeout=30)
    assert next(watch).ready
    return watch


def ended_with(watch: grpc.Call) -> grpc.RpcError:
    """How the watch ended. (Its 30 s deadline would end it DEADLINE_EXCEEDED: callers assert
    the code the matcher ended it with, which is how "at once, not at its deadline" is told,
    without timing it.)"""
    with pytest.raises(grpc.RpcError) as ended:
        next(watch)
    return ended.value


def counted(matcher: Matcher, want: int, method: str | None = "Watch") -> int:
    """The member's open streams the matcher counts, once it has counted `want` or 5 s have
    passed: a stream's end reaches the client with its status before the server's handler
    has returned and stopped counting it."""
    deadline = time.monotonic() + 5
    while True:
        args = ("trial", "north", method) if method else ("trial", "north")
        n = matcher.server.streams.open_streams(*args)
        if n == want or time.monotonic() > deadline:
            return n
        time.sleep(0.01)


def test_erasure_ends_the_members_open_watch(matcher: Matcher, project: ProjectTokens) -> None:
    watch = open_watch(matcher, project.tokens["north"])
    other = open_watch(matcher, project.tokens["south"])
    with matcher.member(project.tokens["north"]) as north:
        north.erase("trial")
    ended = ended_with(watch)
    assert ended.code() is grpc.StatusCode.FAILED_PRECONDITION
    said = ended.details() or ""
    assert (
        "member 'north' erased its data in 'trial'; this watch, open before that, is "
        "closed: no later match of its records is told" in said
    )
    assert "start `blindmatch watch` again" in said
    assert "not acknowledged" not in said  # an upload's words (before 2026-12-06)
    assert other.is_active(), "a partner's watch goes on"
    other.cancel()


def test_a_named_users_streams_end_with_its_token(matcher: Matcher, project: ProjectTokens) -> None:
    """A user's token is a credential too: revoking the user ends the streams opened with it,
    rotating the member's token does not (the user's token still holds), revoking the
    member's token does (it revokes the users), and so does the member's erasure (which
    deletes them)."""
    with matcher.member(project.tokens["north"]) as admin:
        first, second = admin.add_user("trial", "pc-1"), admin.add_user("trial", "pc-2")
    by_first = open_watch(matcher, first)
    by_second = open_watch(matcher, second)
    by_member = open_watch(matcher, project.tokens["north"])
    assert matcher.server.streams.open_streams("trial", "north", "Watch") == 3

    with matcher.member(project.tokens["north"]) as admin:
        admin.revoke_user("trial", "pc-1")
    ended = ended_with(by_first)
    assert ended.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "user 'pc-1'" in (ended.details() or "")
    assert "this watch, open before that, is closed" in (ended.details() or "")
    assert counted(matcher, 2) == 2

    with matcher.operator() as op:
        token = op.rotate_token("trial", "north")
    assert ended_with(by_member).code() is grpc.StatusCode.UNAUTHENTICATED
    assert counted(matcher, 1) == 1
    assert by_second.is_active(), "the user's token still holds: its watch goes on"

    with matcher.operator() as op:
        op.revoke_token("trial", "north")
    ended = ended_with(by_second)
    assert ended.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "its users' tokens with it" in (ended.details() or "")

    with matcher.operator() as op:
        token = op.rotate_token("trial", "north")  # re-admits the member
    with matcher.member(token) as admin:
        third = admin.add_user("trial", "pc-3")
    by_third = open_watch(matcher, third)
    with matcher.member(token) as admin:
        admin.erase("trial")
    assert ended_with(by_third).code() is grpc.StatusCode.FAILED_PRECONDITION
    assert counted(matcher, 0, None) == 0


def test_a_projects_expiry_ends_its_open_watches(tmp_path: Path) -> None:
    clock = Clock()
    matcher = start(tmp_path / "data", clock)
    try:
        with matcher.operator() as op:
            tokens = op.create_project(
                "trial", ["north", "south"], expires_unix=int(clock() + 3600)
            ).tokens
        watch = open_watch(matcher, tokens["north"])
        clock.advance(7200)
        matcher.server.sweeper.sweep()
        ended = ended_with(watch)
        assert ended.code() is grpc.StatusCode.NOT_FOUND
        assert "expired" in (ended.details() or "")
    finally:
        matcher.server.stop(grace=None)


@pytest.fixture
def uncut(matcher: Matcher, monkeypatch: pytest.MonkeyPatch) -> Matcher:
    """A matcher that does not end streams at a revocation: as if the revocation came while
    the stream was committing, after the stream's last message."""
    monkeypatch.setattr(matcher.server.streams, "end_member", lambda *args: 0)
    return matcher


def test_a_commit_after_the_revocation_is_refused_inside_the_transaction(
    uncut: Matcher, project: ProjectTokens
) -> None:
    """What a stream carries is checked against its token again when committed: an upload
    and an index change whose streams outlive their token's revocation store nothing."""
    token = project.tokens["north"]
    channel = grpc.insecure_channel(uncut.target)
    clks = os.urandom(128 * 10)
    header, body = upload_messages("trial", clks)
    index_header = pb.IndexChange(
        header=pb.IndexHeader(
            project="trial", clk_bits=1024, fingerprint=FINGERPRINT, end_follows=True
        )
    )
    put = pb.IndexChange(put=pb.IndexPut(refs=["r1"], clks=clks[:128]))
    end = pb.IndexChange(end=pb.IndexEnd(put_refs=1))

    def revoked_then(method: str, *rest: object):  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + 10
        while uncut.server.streams.open_streams("trial", "north", method) == 0:
            assert time.monotonic() < deadline  # until the stream is authenticated
            time.sleep(0.01)
        with uncut.operator() as op:
            op.revoke_token("trial", "north")
        yield from rest

    def upload():  # type: ignore[no-untyped-def]
        yield header
        yield from revoked_then("Upload", body)

    def change():  # type: ignore[no-untyped-def]
        yield index_header
        yield from revoked_then("ChangeIndex", put, end)

    with pytest.raises(grpc.RpcError) as refused:
        stub(channel).Upload(upload(), metadata=auth(token))
    assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "revoked or rotated while the call was open" in (refused.value.details() or "")
    assert db_rows(uncut.data_dir, "uploads") == []

    with uncut.operator() as op:
        token = op.rotate_token("trial", "north")
    with pytest.raises(grpc.RpcError) as refused:
        stub(channel).ChangeIndex(change(), metadata=auth(token))
    assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
    with uncut.operator() as op:
        assert not [e for e in op.audit("trial") if e.get("action") == "index.change"]
        token = op.rotate_token("trial", "north")

    # With a token that holds, it commits.
    with MatcherClient(uncut.target, token) as north:
        assert north.list_index("trial") == {}, "the refused change stored nothing"
        north.change_index(
            "trial", clk_bits=1024, fingerprint=FINGERPRINT, puts=[("r1", clks[:128])]
        )
        assert list(north.list_index("trial")) == ["r1"]
    channel.close()


def test_an_upload_finished_after_its_projects_expiry_is_not_committed(tmp_path: Path) -> None:
    """Expired before the sweep came by: the upload's commit sees it and stores nothing."""
    clock = Clock()
    matcher = start(tmp_path / "data", clock)
    try:
        with matcher.operator() as op:
            token = op.create_project(
                "trial", ["north", "south"], expires_unix=int(clock() + 3600)
            ).tokens["north"]
        header, body = upload_messages("trial", os.urandom(128 * 10))

        half = len(body.clks) // 2

        def upload():  # type: ignore[no-untyped-def]
            yield header
            yield pb.UploadRequest(clks=body.clks[:half])
            deadline = time.monotonic() + 10
            while not any((matcher.data_dir / "tmp").iterdir()):  # the matcher is writing it
                assert time.monotonic() < deadline
                time.sleep(0.01)
            clock.advance(7200)  # the project expires while the upload is in flight
            yield pb.UploadRequest(clks=body.clks[half:])

        with grpc.insecure_channel(matcher.target) as channel, pytest.raises(grpc.RpcError) as e:
            stub(channel).Upload(upload(), metadata=auth(token))
        assert e.value.code() is grpc.StatusCode.NOT_FOUND
        assert "expired" in (e.value.details() or "")
        assert db_rows(matcher.data_dir, "uploads") == []
    finally:
        matcher.server.stop(grace=None)
