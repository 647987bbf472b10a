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


def test_query_limits_whose_day_is_below_their_minute_are_refused_naming_both(
    matcher: Matcher,
    project: ProjectTokens,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A daily quota below the per-minute rate was taken (the minute's rate could never be
    used): the matcher refuses it INVALID_ARGUMENT naming the fields and values, whether the
    call gives both or one beside a value it keeps (its own, the project's default, the
    built-in one), and for a project default that a member's own limit would clash with;
    nothing is set. The command refuses what it can tell itself, exit 2, before it calls."""
    with matcher.operator() as op:
        with pytest.raises(RejectedError) as both:
            op.set_query_limits("trial", per_minute=500, per_day=100)
        assert "records_per_day 100 is below records_per_minute 500" in str(both.value)
        assert str(both.value).endswith("[INVALID_ARGUMENT]")
        # One given: the other is the built-in default's (1,000 a minute, 10,000 a day).
        refused = (
            ({"per_day": 999}, "999 is below records_per_minute 1,000 "
             "(records_per_minute: the built-in default, kept)"),
            ({"per_minute": 20_000}, "10,000 is below records_per_minute 20,000 "
             "(records_per_day: the built-in default, kept)"),
        )  # fmt: skip
        for given, said in refused:
            with pytest.raises(RejectedError) as caught:
                op.set_query_limits("trial", **given)
            assert f"records_per_day {said}" in str(caught.value)
        # A member's own minute with the project's day: a default under it is refused too.
        assert op.set_query_limits("trial", per_minute=100).per_minute == 100
        assert op.set_query_limits("trial", member="north", per_minute=300).per_minute == 300
        with pytest.raises(RejectedError) as caught:
            op.set_query_limits("trial", per_day=200)
        assert (
            "records_per_day 200 is below records_per_minute 300 (member north's limits with "
            "this default; records_per_minute: north's own; records_per_day: the project's default)"
            in str(caught.value)
        )
        with pytest.raises(RejectedError) as caught:
            op.set_query_limits("trial", member="north", per_day=250)
        assert (
            "records_per_day 250 is below records_per_minute 300 (records_per_minute: "
            "north's own, kept)" in str(caught.value)
        )
        # Nothing was set by the refused calls; consistent limits still are.
        south = op.set_query_limits("trial", member="south", per_minute=50, per_day=50)
        assert (south.per_minute, south.per_day) == (50, 50)
        north = op.set_query_limits("trial", member="north", per_day=400)
        assert (north.per_minute, north.per_day) == (300, 400)
    monkeypatch.setenv("BLINDMATCH_ADMIN_TOKEN", ADMIN_TOKEN)
    capsys.readouterr()
    assert limits(matcher, "--per-minute", "60", "--per-day", "30") == 2
    err = capsys.readouterr().err
    assert "--per-day/--per-minute: records_per_day 30 is below records_per_minute 60" in err
    assert "Traceback" not in err
    with matcher.operator() as op:  # the command did not call: the default is as it was
        assert op.set_query_limits("trial").per_day == 10_000
        assert op.set_query_limits("trial").per_minute == 100


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
