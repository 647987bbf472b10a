"""`blindmatch admin end-project` (EndProject): a DPO terminating an information-sharing
agreement has the operator end the project now, not at its date. It runs the expiry's own
retention sweep: the data goes from the data dir (and from S1 and S2), open streams end as
at an expiry, members are refused as for an expired project, and the `project.expire` entry
names the operator and the reason, so that `admin restore --previous` ends it again. Against
real matchers on loopback (and a real S1 and S2), real SQLite files."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import grpc
import pytest

from benchmarks.knownclks import population, write
from blindmatch.cli import main
from blindmatch.client import ProjectTokens
from blindmatch.client.encoding.encoded import Encoded
from blindmatch.client.errors import AuthError, NotFoundError
from blindmatch.matcher.storage.datadir import DataDir
from blindmatch.protos import blindmatch_pb2 as pb
from tests import twoserver_world
from tests.support import (
    ADMIN_TOKEN,
    Clock,
    Matcher,
    auth,
    db_rows,
    encode_all,
    index_all,
    start,
    stub,
    uploaded_and_run,
)
from tests.twoserver_world import World, create, held

REASON = "ISA terminated by north's DPO, letter of 2026-12-01"
# What a member (and the operator ending it again) is told of the ended project: who ended it
# and when, never the reason (the operator's, in the audit log), never "expired" (srvleft).
ENDED = (
    r"project 'trial' was ended by the operator at \d{4}-\d\d-\d\d \d\d:\d\d UTC "
    r"\(before its date\); its encodings and results are deleted"
)

world = twoserver_world.world  # the fixture
shared = twoserver_world.encoded  # the fixture (the members' two-server encodings)


@pytest.fixture(autouse=True)
def _operator(monkeypatch: pytest.MonkeyPatch) -> None:
    """`admin end-project` reads the operator's token from the environment."""
    monkeypatch.setenv("BLINDMATCH_ADMIN_TOKEN", ADMIN_TOKEN)


@pytest.fixture
def encoded(orgs: dict[str, object], tmp_path: Path) -> dict[str, Encoded]:
    return encode_all(orgs, tmp_path)  # type: ignore[arg-type]


def end(target: str, project: str, *more: str) -> int:
    return main(["admin", "end-project", "--project", project, "--reason", REASON,
                 "--server", target, *more])  # fmt: skip


def expire_entries(data_dir: Path, project: str) -> list[tuple[str, dict[str, object]]]:
    """(actor, detail) of the project's `project.expire` entries."""
    return [(r[2], json.loads(r[8])) for r in db_rows(data_dir, "audit")
            if r[3] == "project.expire" and r[4] == project]  # fmt: skip


def uploads_in(data_dir: Path, project: str) -> list[str]:
    return [r[0] for r in db_rows(data_dir, "uploads") if r[1] == project]


def north_uploads(world: World, shared: dict[str, Path], *names: str) -> list[ProjectTokens]:
    """Two-server projects `names`, north's shares uploaded to each."""
    made = [create(world, name, "two-server") for name in names]
    for project in made:
        assert world.cli("upload", str(shared["north"]), "--project", project.project,
                         token=project.tokens["north"]) == 0  # fmt: skip
    return made


def indexed(data_dir: Path) -> set[tuple[str, str]]:
    """(project, member) of every standing index the matcher keeps."""
    return {(r[0], r[1]) for r in db_rows(data_dir, "index_meta", "index.sqlite")}


def open_watch(matcher: Matcher, project: str, token: str, like: Encoded) -> grpc.Call:
    """A watch for one (random) person, encoded as `like` is."""
    with matcher.operator() as op:
        op.set_query_limits(project, allow_watch=True)
    request = pb.QueryRequest(project=project, purpose="case 7", clk_bits=like.clk_bits,
                              fingerprint=like.fingerprint,
                              clks=os.urandom(like.clk_bytes))  # fmt: skip
    channel = grpc.insecure_channel(matcher.target)
    watch = stub(channel).Watch(request, metadata=auth(token), timeout=30)
    assert next(watch).ready
    return watch


@pytest.mark.server
def test_ending_a_project_deletes_its_data_as_its_expiry_would(
    matcher: Matcher,
    project: ProjectTokens,
    encoded: dict[str, Encoded],
    capsys: pytest.CaptureFixture[str],
) -> None:
    uploaded_and_run(matcher, project, encoded)
    with matcher.operator() as op:
        kept = op.create_project("kept", ["north", "south"])
    with matcher.member(kept.tokens["north"]) as north:
        north.upload("kept", encoded["north"])
    with matcher.member(project.tokens["north"]) as north:
        pc = north.add_user("trial", "pc-4471")
        index_all(north, "trial", encoded["north"])
    assert indexed(matcher.data_dir) == {("trial", "north")}
    watch = open_watch(matcher, "trial", project.tokens["south"], encoded["south"])
    folder = DataDir(matcher.data_dir)
    files = {u: folder.clk_file(u) for u in uploads_in(matcher.data_dir, "trial")}
    assert len(files) == 2 and all(f.exists() for f in files.values())

    assert end(matcher.target, "trial", "--yes") == 0
    out = capsys.readouterr().out
    assert "Ended trial: 2 uploads, 1 run (6 result rows) and 1 named user deleted" in out

    # The files and rows are gone from the data dir; the other project's stay.
    assert not any(f.exists() for f in files.values())
    assert uploads_in(matcher.data_dir, "trial") == []
    assert len(uploads_in(matcher.data_dir, "kept")) == 1
    assert [r for r in db_rows(matcher.data_dir, "runs") if r[1] == "trial"] == []
    assert indexed(matcher.data_dir) == set()
    assert [r for r in db_rows(matcher.data_dir, "users") if r[0] == "trial"] == []
    # The open watch ended as at an expiry; the members are refused, told it was ended.
    with pytest.raises(grpc.RpcError) as ended:
        next(watch)
    assert ended.value.code() is grpc.StatusCode.NOT_FOUND
    assert "project 'trial' was ended by the operator at" in (ended.value.details() or "")
    for token in project.tokens.values():
        with matcher.member(token) as member, pytest.raises(NotFoundError, match=ENDED) as said:
            member.results("trial")
        assert REASON not in str(said.value) and "expired" not in str(said.value)
        with matcher.member(token) as member, pytest.raises(NotFoundError, match=ENDED):
            member.describe("trial")
    with matcher.member(kept.tokens["south"]) as south:
        assert south.describe("kept").project == "kept"
    with matcher.member(pc) as user, pytest.raises(AuthError):  # named users went too
        user.describe("trial")
    # The audit entry is the expiry's, the operator's, with the reason.
    ((actor, detail),) = expire_entries(matcher.data_dir, "trial")
    assert actor == "operator"
    assert detail["ended_by"] == "operator" and detail["reason"] == REASON
    assert (detail["uploads"], detail["runs"], detail["links"]) == (2, 1, 6)


@pytest.mark.server
def test_an_ended_or_unknown_project_is_refused_and_nothing_changes(
    matcher: Matcher,
    project: ProjectTokens,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert end(matcher.target, "trial", "--yes") == 0
    capsys.readouterr()
    assert end(matcher.target, "trial", "--yes") != 0
    assert "project 'trial' was ended by the operator at" in capsys.readouterr().err
    assert end(matcher.target, "nope", "--yes") != 0
    assert "no project named 'nope'" in capsys.readouterr().err
    assert len(expire_entries(matcher.data_dir, "trial")) == 1  # ended once
    # A member's token is not the operator's.
    with matcher.operator() as op:
        other = op.create_project("other", ["north", "south"])
    monkeypatch.setenv("BLINDMATCH_ADMIN_TOKEN", other.tokens["north"])
    assert end(matcher.target, "other", "--yes") != 0
    assert "only the operator may do this" in capsys.readouterr().err
    assert expire_entries(matcher.data_dir, "other") == []


class _Terminal(io.StringIO):
    """What the operator types at a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.mark.server
def test_it_says_what_goes_and_asks_first(
    matcher: Matcher,
    project: ProjectTokens,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr("sys.stdin", _Terminal("n\n"))
    assert end(matcher.target, "trial") != 0
    err = capsys.readouterr().err
    assert "every member's (north, south) uploads, results (runs and their result rows), " \
           "standing indexes, request references and named users" in err  # fmt: skip
    assert "End trial at" in err and "trial not ended: the answer was not yes" in err
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # not a terminal: no one to ask
    assert end(matcher.target, "trial") != 0
    assert "pass --yes to confirm" in capsys.readouterr().err
    with matcher.member(project.tokens["north"]) as north:
        assert north.describe("trial").project == "trial"
    monkeypatch.setattr("sys.stdin", _Terminal("yes\n"))
    assert end(matcher.target, "trial") == 0
    assert len(expire_entries(matcher.data_dir, "trial")) == 1


@pytest.mark.server
def test_restore_previous_ends_an_ended_project_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The backup holds the project live, far from its date: the replaced dir's entry ends
    it again, with its reason (by date alone it would come back with its data)."""
    clock, data, backup = Clock(), tmp_path / "data", tmp_path / "backup"
    matcher = start(data, clock)
    try:
        with matcher.operator() as op:
            tokens = op.create_project("pact", ["north", "south"]).tokens
        for member, ds in zip(("north", "south"), population(2, 50, 0.3, seed=5), strict=True):
            with matcher.member(tokens[member]) as client:
                client.upload("pact", write(ds, tmp_path / f"{member}.encoded"))
        assert main(["admin", "backup", "--data-dir", str(data), "--out", str(backup)]) == 0
        with matcher.operator() as op:
            ended = op.end_project("pact", REASON)
    finally:
        matcher.server.stop(grace=None)
    assert ended.uploads == 2
    new = tmp_path / "new"
    argv = ["admin", "restore", "--backup", str(backup), "--data-dir", str(new),
            "--previous", str(data)]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    assert f"replayed entry {ended.audit_seq}: project.expire pact" in capsys.readouterr().out
    assert len(uploads_in(backup, "pact")) == 2
    assert uploads_in(new, "pact") == [] and list((new / "clks").iterdir()) == []
    ((actor, detail),) = expire_entries(new, "pact")
    assert actor == "operator" and detail["reason"] == REASON
    assert detail["ended_by"] == "operator"
    assert detail["replay_of"]["seq"] == ended.audit_seq  # type: ignore[index]
    restored = start(new, clock)
    try:
        with restored.member(tokens["north"]) as north, pytest.raises(NotFoundError):
            north.describe("pact")
    finally:
        restored.server.stop(grace=None)


@pytest.mark.server
def test_ending_a_two_server_project_has_s1_and_s2_forget_it(
    world: World,
    shared: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    pact, _ = north_uploads(world, shared, "pact", "kept")
    assert held(world, "pact") == {"s1": ["north"], "s2": ["north"]}
    capsys.readouterr()
    assert end(world.target, "pact", "--yes") == 0
    out = capsys.readouterr().out
    assert "Ended pact: 1 upload" in out
    assert "S1 dropped 1 upload of its shares." in out
    assert "S2 dropped 1 upload of its shares." in out
    assert held(world, "pact") == {"s1": [], "s2": []}
    assert held(world, "kept") == {"s1": ["north"], "s2": ["north"]}
    # A member's next upload is refused, told the project was ended.
    assert world.cli("upload", str(shared["south"]), "--project", "pact",
                     token=pact.tokens["south"]) != 0  # fmt: skip
    assert "project 'pact' was ended by the operator at" in capsys.readouterr().err
    ((actor, detail),) = expire_entries(world.data_dir, "pact")
    assert actor == "operator" and detail["reason"] == REASON
    forgot = [json.loads(r[8]) for r in db_rows(world.data_dir, "audit")
              if r[3] == "twoserver.forget" and r[4] == "pact"]  # fmt: skip
    assert forgot == [{"S1": "dropped 1", "S2": "dropped 1"}]


@pytest.mark.server
def test_a_server_that_cannot_forget_is_named_and_the_command_exits_4(
    world: World,
    shared: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """S2 down: the matcher's data and S1's shares go; S2's remain, the command says so."""
    north_uploads(world, shared, "pact")
    world.roles["s2"].server.stop(None).wait()
    capsys.readouterr()
    assert end(world.target, "pact", "--yes") == 4
    captured = capsys.readouterr()
    assert "Ended pact: 1 upload" in captured.out
    assert "S1 dropped 1 upload of its shares." in captured.out
    s2 = f"S2 (127.0.0.1:{world.roles['s2'].port}) is unreachable"
    assert f"warning: S2 did not forget the project's shares: {s2}" in captured.err
    assert held(world, "pact") == {"s1": [], "s2": ["north"]}
    assert uploads_in(world.data_dir, "pact") == []
