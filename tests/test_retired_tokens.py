"""A revoked or rotated-away token is told so, and when (matcher/storage/retired_tokens.py,
rpc/auth.py), against a real matcher on loopback with its SQLite store: was "the token is
not valid for project 'x'", as for a token nobody was ever issued."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from blindmatch.cli import main
from blindmatch.client.errors import AuthError
from blindmatch.matcher.storage.store import Store
from tests.support import Clock, Matcher, auth, db_rows, start, stub, upload_messages


def on(clock: Clock) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(clock.now))


def refusal(matcher: Matcher, token: str, project: str = "trial") -> str:
    with matcher.member(token) as member, pytest.raises(AuthError) as err:
        member.describe(project)
    assert "UNAUTHENTICATED" in str(err.value)
    return str(err.value)


def stream_refusal(matcher: Matcher, token: str) -> grpc.RpcError:
    """An upload stream's refusal: before its first message, so naming no project."""
    with grpc.insecure_channel(matcher.target) as channel, pytest.raises(grpc.RpcError) as err:
        messages = upload_messages("trial", secrets.token_bytes(256))
        stub(channel).Upload(iter(messages), metadata=auth(token))
    return err.value


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def timed(tmp_path: Path, clock: Clock) -> Iterator[Matcher]:
    matcher = start(tmp_path / "data", clock)
    yield matcher
    matcher.server.stop(grace=None)


def test_a_revoked_member_token_is_told_when(timed: Matcher, clock: Clock) -> None:
    with timed.operator() as op:
        tokens = op.create_project("trial", ["north", "south"]).tokens
        clock.advance(3600)
        revoked_on = on(clock)
        op.revoke_token("trial", "north")
    told = refusal(timed, tokens["north"])
    assert f"this token was revoked on {revoked_on}" in told
    assert "ask the project's operator for a new one" in told
    assert "not valid" not in told
    err = stream_refusal(timed, tokens["north"])
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert f"this token was revoked on {revoked_on}" in (err.details() or "")
    # A token nobody was issued is told what it was told before, and nothing more.
    assert "the token is not valid for project 'trial'" in refusal(timed, "bm_never-issued")
    # The holder learns about its own token only: asked of another project, the same answer,
    # naming neither that project nor the member.
    with timed.operator() as op:
        op.create_project("other", ["east", "west"])
    elsewhere = refusal(timed, tokens["north"], "other")
    assert f"this token was revoked on {revoked_on}" in elsewhere
    assert "other" not in elsewhere.split("UNAUTHENTICATED", 1)[-1]
    assert "north" not in elsewhere.split("UNAUTHENTICATED", 1)[-1]


def test_a_rotated_away_token_is_told_it_was_replaced(
    timed: Matcher, clock: Clock, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with timed.operator() as op:
        old = op.create_project("trial", ["north", "south"]).tokens["north"]
        clock.advance(60)
        rotated_on = on(clock)
        new = op.rotate_token("trial", "north")
    told = refusal(timed, old)
    assert f"this token was replaced by a new one on {rotated_on}" in told
    with timed.member(new) as member:
        assert member.describe("trial").member == "north"
    # Rotated again: the first token still says when it was replaced, the second its own.
    clock.advance(60)
    with timed.operator() as op:
        op.rotate_token("trial", "north")
    assert f"replaced by a new one on {rotated_on}" in refusal(timed, old)
    assert f"replaced by a new one on {on(clock)}" in refusal(timed, new)
    # The CLI: exit 3, the message on stderr.
    capsys.readouterr()
    code = main(["project", "show", "trial", "--server", timed.target, "--token", old])
    assert code == 3
    assert f"this token was replaced by a new one on {rotated_on}" in capsys.readouterr().err


def test_a_revoked_user_token_is_told_when_and_whom_to_ask(timed: Matcher, clock: Clock) -> None:
    with timed.operator() as op:
        north = op.create_project("trial", ["north", "south"]).tokens["north"]
    with timed.member(north) as admin:
        pc1 = admin.add_user("trial", "pc-1")
        pc2 = admin.add_user("trial", "pc-2")
        clock.advance(120)
        admin.revoke_user("trial", "pc-1")
    told = refusal(timed, pc1)
    assert f"this token was revoked on {on(clock)}" in told
    assert "ask your member's administrator for a new one" in told
    # Revoking the member's token revokes its users' with it: each is told so.
    clock.advance(120)
    with timed.operator() as op:
        op.revoke_token("trial", "north")
    assert f"this token was revoked on {on(clock)}" in refusal(timed, pc2)


def test_the_retirement_outlives_a_restart_and_a_users_goes_with_its_row(
    tmp_path: Path, clock: Clock
) -> None:
    data = tmp_path / "data"
    matcher = start(data, clock)
    try:
        with matcher.operator() as op:
            north = op.create_project("trial", ["north", "south"]).tokens["north"]
        with matcher.member(north) as admin:
            pc = admin.add_user("trial", "pc-1")
            admin.revoke_user("trial", "pc-1")
        with matcher.operator() as op:
            op.revoke_token("trial", "north")
    finally:
        matcher.server.stop(grace=None)
    matcher = start(data, clock)
    try:
        assert "this token was revoked on" in refusal(matcher, north)
        assert "this token was revoked on" in refusal(matcher, pc)
    finally:
        matcher.server.stop(grace=None)
    assert sorted(r[3] for r in db_rows(data, "retired_tokens")) == [0, 1]
    # The project expires: its users' rows go, and with them what their tokens were; the
    # member's stays, as its token hash does.
    clock.advance(400 * 24 * 3600)
    store = Store(data, clock=clock)
    try:
        assert store.expire_projects() == ["trial"]
    finally:
        store.close()
    assert [(r[1], r[2], r[3], r[4]) for r in db_rows(data, "retired_tokens")] == [
        ("trial", "north", 0, "revoked")
    ]
