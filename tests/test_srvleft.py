"""The matcher-side leftovers of the last walks (srvleft, 2026-12-07), each against a real
matcher (and a real S1 and look-up server) on loopback: query limits that cannot be meant
are refused, a call with two `authorization` entries is refused by every server that reads
them, and a request asked of every partner names each partner that erased its data since
the run. Each test fails on the code before."""

from __future__ import annotations

import itertools
import json
import secrets
from pathlib import Path

import grpc
import pytest

from blindmatch.cli import main
from blindmatch.client import ProjectTokens
from blindmatch.client.encoding.encoded import Encoded
from blindmatch.client.errors import RejectedError
from blindmatch.matcher.rpc.lookup_service import create_lookup_server
from blindmatch.matcher.rpc.twoserver_service import create_role
from blindmatch.matcher.storage.shard_source import lookup_key
from blindmatch.protos import blindmatch_pb2 as pb
from blindmatch.protos import blindmatch_pb2_grpc as pb_grpc
from tests.support import ADMIN_TOKEN, Matcher, Org, auth, encode, uploaded_and_run

pytestmark = pytest.mark.server


def limits(matcher: Matcher, *args: str) -> int:
    return main(["admin", "query-limits", "--project", "trial", *args, "--server", matcher.target])


def test_query_limits_that_cannot_be_meant_are_refused_naming_the_fields(
    matcher: Matcher,
    project: ProjectTokens,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Both given, a daily quota below the per-minute rate was set (the minute's rate could
    never be used: the two swapped, say), and `allow_watch` for one member was dropped
    without a word (watching is project-wide). Both are refused INVALID_ARGUMENT naming the
    fields and values, and nothing is set; the command refuses them itself, exit 2, in the
    same words, before it calls. A day's quota given alone below the minute's rate it keeps
    is what is meant (a small daily quota) and is set."""
    with matcher.operator() as op:
        with pytest.raises(RejectedError) as both:
            op.set_query_limits("trial", per_minute=500, per_day=100)
        assert str(both.value).startswith(
            "records_per_day 100 is below records_per_minute 500: a day's quota under a "
            "minute's rate cannot be meant"
        ) and str(both.value).endswith("[INVALID_ARGUMENT]")
        with pytest.raises(RejectedError) as one:
            op.set_query_limits("trial", member="north", allow_watch=True)
        assert "allow_watch: project-wide, so it cannot be set for member 'north' alone" in str(
            one.value
        )
        # Nothing was set by the refused calls; a lone small daily quota is.
        kept = op.set_query_limits("trial")
        assert (kept.per_minute, kept.per_day, kept.allow_watch) == (1000, 10_000, False)
        north = op.set_query_limits("trial", member="north", per_day=3)
        assert (north.per_minute, north.per_day) == (1000, 3)
        assert op.set_query_limits("trial", per_minute=50, per_day=50).per_day == 50
    monkeypatch.setenv("BLINDMATCH_ADMIN_TOKEN", ADMIN_TOKEN)
    for argv, said in (
        (
            ["--per-minute", "60", "--per-day", "30"],
            "records_per_day 30 is below records_per_minute 60",
        ),
        (["--member", "south", "--allow-watch"], "allow_watch: project-wide"),
    ):
        capsys.readouterr()
        assert limits(matcher, *argv) == 2
        err = capsys.readouterr().err
        assert said in err and "Traceback" not in err, err
    with matcher.operator() as op:  # the command did not call: nothing changed
        now = op.set_query_limits("trial")
        assert (now.per_day, now.allow_watch) == (50, False)


def _twice(token: str, second: str) -> list[tuple[str, str]]:
    return [*auth(token), ("authorization", second)]


@pytest.mark.parametrize(
    "second", ["Bearer another-token", "Bearer ", ""], ids=["two-tokens", "empty", "blank"]
)
def test_a_call_with_two_authorization_entries_is_refused_by_the_matcher(
    matcher: Matcher, project: ProjectTokens, second: str
) -> None:
    """The first entry holding a token was taken, whatever came beside it: a good token
    with a stray (or empty) second one passed. Refused UNAUTHENTICATED, saying why, for the
    operator's token and a member's alike; one entry still passes."""
    with grpc.insecure_channel(matcher.target) as channel:
        stub = pb_grpc.MatcherStub(channel)
        request = pb.DescribeProjectRequest(project="trial")
        assert stub.DescribeProject(request, metadata=auth(project.tokens["north"])).member
        for token in (project.tokens["north"], ADMIN_TOKEN):
            for metadata in (_twice(token, second), [("authorization", second), *auth(token)]):
                with pytest.raises(grpc.RpcError) as refused:
                    stub.DescribeProject(request, metadata=metadata)
                assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
                said = refused.value.details() or ""
                assert "the call carries 2 `authorization` metadata entries" in said, said
                assert token not in said
        listed = stub.ListProjects(pb.ListProjectsRequest(), metadata=auth(ADMIN_TOKEN))
        assert [p.project for p in listed.projects] == ["trial"]


def test_s1_and_a_look_up_server_refuse_two_authorization_entries(
    matcher: Matcher, project: ProjectTokens
) -> None:
    """S1's (and S2's, the combiner's) key check and a look-up server's read the header
    themselves: each took the first entry holding a token."""
    key, member_key = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
    s2 = create_role("s2", "127.0.0.1:0", key, member_key)
    s1 = create_role("s1", "127.0.0.1:0", key, member_key, s2=f"127.0.0.1:{s2.port}")
    look = create_lookup_server("127.0.0.1:0", matcher.data_dir, 0, 1, wait=True)
    lkey = lookup_key(matcher.data_dir)
    try:
        with (
            grpc.insecure_channel(f"127.0.0.1:{s1.port}") as c1,
            grpc.insecure_channel(f"127.0.0.1:{look.port}") as cl,
        ):
            s1_stub, look_stub = pb_grpc.TwoServerBlockingStub(c1), pb_grpc.LookupServerStub(cl)
            calls = [
                (lambda m: s1_stub.Holds(pb.HoldsRequest(), metadata=m), key),
                (lambda m: look_stub.Describe(pb.ShardDescribeRequest(), metadata=m), lkey),
            ]
            for call, good in calls:
                call(auth(good))  # one entry: answered
                for metadata in (_twice(good, "Bearer x"), _twice(good, "Bearer ")):
                    with pytest.raises(grpc.RpcError) as refused:
                        call(metadata)
                    assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
                    assert "2 `authorization` metadata entries" in (refused.value.details() or "")
    finally:
        for server in (look, s1, s2):
            server.stop(grace=None)


@pytest.fixture
def four(matcher: Matcher) -> ProjectTokens:
    with matcher.operator() as op:
        return op.create_project("trial", ["north", "south", "east", "west"])


def test_a_request_of_every_partner_names_each_partner_that_erased_since_the_run(
    matcher: Matcher,
    four: ProjectTokens,
    orgs: dict[str, Org],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """north's record is held by south, east and west (east and west hold copies of north's
    export); east and west erase their data after the run. `request --record-id` without
    `--partner` printed south's reference alone, not a word of the two others (the reply had
    no field to say so): it names both, and `--json` lists them."""
    encoded: dict[str, Encoded] = {
        name: encode(orgs[name], tmp_path / f"{name}.encoded") for name in ("north", "south")
    }
    for name in ("east", "west"):
        encoded[name] = encode(orgs["north"], tmp_path / f"{name}.encoded")
    uploaded_and_run(matcher, four, encoded)
    for name in ("east", "west"):
        with matcher.member(four.tokens[name]) as member:
            member.erase("trial")
    request = ["request", "--project", "trial", "--encoded", str(tmp_path / "north.encoded"),
               "--record-id", "N1", "--server", matcher.target,
               "--token", four.tokens["north"]]  # fmt: skip
    capsys.readouterr()
    assert main(request) == 0
    out = capsys.readouterr().out
    assert "  south: bmr-" in out, out
    assert (
        "none for east and west: east and west each erased its data from this project since run "
    ) in out, out
    assert main([*request, "--json"]) == 0
    said = json.loads(capsys.readouterr().out)
    assert list(said["references"]) == ["south"]
    assert said["erased_partners"] == ["east", "west"]
    # Asked of south alone: nothing of the others (south still holds the run's data).
    with matcher.member(four.tokens["north"]) as north:
        only = north.issue_request_refs("trial", [0], encoded["north"].sha256, partner="south")
    assert list(only.refs) == ["south"] and only.erased == []


def test_a_member_watching_a_run_sees_no_stage_and_no_progress_the_operator_sees_them(
    matcher: Matcher, orgs: dict[str, Org], tmp_path: Path
) -> None:
    """A member's watch got each stage (compare, solve, store) as the run reached it, and
    its thousandths as they moved: timed by their arrival, the solving stage's seconds grew
    with the people two other members share (benchmarks/stagetimes.py). It sees one stage,
    "running", with no counts, one status per change of what it sees; `project show`'s
    latest run alike. The operator's view keeps the run's own stage and counts."""
    with matcher.operator() as op:
        three = op.create_project("trial", ["north", "south", "east"])
    encoded = {
        name: encode(orgs[name], tmp_path / f"{name}.encoded") for name in ("north", "south")
    }
    encoded["east"] = encode(orgs["north"], tmp_path / "east.encoded")
    for name, enc in encoded.items():
        with matcher.member(three.tokens[name]) as member:
            member.upload("trial", enc)
    with grpc.insecure_channel(matcher.target) as channel:
        stub = pb_grpc.MatcherStub(channel)
        south = auth(three.tokens["south"])
        run = stub.StartRun(pb.StartRunRequest(project="trial"), metadata=south)
        watched = pb.WatchRunRequest(project="trial", run_id=run.run_id)
        seen = [run, *stub.WatchRun(watched, metadata=south)]
        shown = stub.DescribeProject(pb.DescribeProjectRequest(project="trial"), metadata=south)
        listed = stub.ListProjects(
            pb.ListProjectsRequest(project="trial"), metadata=auth(ADMIN_TOKEN)
        )
    assert seen[-1].state == pb.RUN_STATE_DONE
    for status in [*seen, shown.latest_run]:
        assert status.stage in ("", "running", "done"), status
        counts = (status.work_done, status.work_total, status.tasks_done, status.tasks_total)
        assert counts == (0, 0, 0, 0), status
    watch = seen[1:]
    assert all(a != b for a, b in itertools.pairwise(watch)), watch  # no repeats
    assert len(watch) <= 3  # at most queued, running, done
    exact = listed.projects[0].latest_run  # the operator's
    assert exact.stage == "done" and exact.work_total > 0 and exact.tasks_total > 0
