"""From a hit to a formal request (issue 22): request references issued by the requester,
resolved by the partner to its own record on its own machine, both audited; and the
operator's and members' view of a project (`project list`/`show`, the fingerprint id)."""

from __future__ import annotations

import csv
import dataclasses
import json
import time
from pathlib import Path

import grpc
import pytest

from blindmatch.cli import main
from blindmatch.client import MatcherClient, ProjectTokens
from blindmatch.client.encoding.encoded import Encoded, read_encoded
from blindmatch.client.errors import NotFoundError, RejectedError
from blindmatch.protos import blindmatch_pb2 as pb
from blindmatch.protos.wire import fingerprint_id
from tests.support import (
    HOUR,
    PERSON_SCHEMA,
    Clock,
    Matcher,
    Org,
    auth,
    db_rows,
    encode,
    encode_cli,
    index_all,
    start,
    stub,
    uploaded_and_run,
)


@pytest.fixture
def trio(matcher: Matcher) -> ProjectTokens:
    """north, south and east; east holds a copy of north's export."""
    with matcher.operator() as op:
        return op.create_project("trial", ["north", "south", "east"], require_purpose=True)


@pytest.fixture
def encoded(orgs: dict[str, Org], tmp_path: Path) -> dict[str, Encoded]:
    out = {name: encode(org, tmp_path / f"{name}.encoded") for name, org in orgs.items()}
    out["east"] = encode(orgs["north"], tmp_path / "east.encoded")
    return out


def cli(matcher: Matcher, *args: str) -> int:
    return main([*args, "--server", matcher.target])


def request(matcher: Matcher, token: str, *args: str) -> int:
    return cli(matcher, "request", "--project", "trial", "--token", token, *args)


def resolve(matcher: Matcher, token: str, *args: str) -> int:
    return cli(matcher, "resolve", "--project", "trial", "--token", token, *args)


def audit(matcher: Matcher, token: str, action: str) -> list[dict[str, object]]:
    with MatcherClient(matcher.target, token) as member:
        return [e for e in member.audit("trial") if e["action"] == action]


def test_a_request_reference_resolves_to_the_partners_own_record_and_is_audited_on_both_sides(
    matcher: Matcher,
    trio: ProjectTokens,
    encoded: dict[str, Encoded],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    uploaded_and_run(matcher, trio, encoded)
    north, south, east = (trio.tokens[m] for m in ("north", "south", "east"))
    capsys.readouterr()

    # north holds N1 (Élodie O'Brien); south holds her as S-10, east as its own N1.
    assert request(matcher, north, "--encoded", str(tmp_path / "north.encoded"),
                   "--record-id", "N1", "--purpose", "REQ-117", "--json") == 0  # fmt: skip
    issued = json.loads(capsys.readouterr().out)
    assert issued["record_id"] == "N1" and set(issued["references"]) == {"south", "east"}
    ref = issued["references"]["south"]
    assert ref.startswith("bmr-") and "S-10" not in ref

    assert resolve(matcher, south, ref, "--encoded", str(tmp_path / "south.encoded"),
                   "--purpose", "answering REQ-117", "--json") == 0  # fmt: skip
    [resolved] = json.loads(capsys.readouterr().out)
    assert resolved["requester"] == "north"
    assert resolved["record_ids"] == ["S-10"]

    # The plain output says the same in words.
    assert resolve(matcher, south, ref, "--encoded", str(tmp_path / "south.encoded"),
                   "--purpose", "answering REQ-117") == 0  # fmt: skip
    assert "north's record matched your record S-10" in capsys.readouterr().out

    # Both steps are in the audit log: north sees it issued and that south resolved it, at
    # once (not as a partner's day line: it answers north's own request), without south's
    # purpose or how many of south's records it pointed at; south sees its resolutions with
    # its own purpose.
    [issue] = audit(matcher, north, "request.issue")
    assert issue["actor"] == "north" and issue["purpose"] == "REQ-117"
    assert issue["detail"]["references"]["south"] == ref  # type: ignore[index]
    seen_by_north = audit(matcher, north, "request.resolve")
    assert len(seen_by_north) == 2
    assert all(e["actor"] == "south" and e["purpose"] == "" for e in seen_by_north)
    run_id = issue["detail"]["run_id"]  # type: ignore[index]
    assert seen_by_north[0]["detail"] == {"reference": ref, "requester": "north", "run_id": run_id}
    seen_by_south = audit(matcher, south, "request.resolve")
    assert [e["purpose"] for e in seen_by_south] == ["answering REQ-117"] * 2
    assert seen_by_south[0]["detail"]["requester"] == "north"  # type: ignore[index]
    assert seen_by_south[0]["detail"]["records"] == 1  # type: ignore[index]
    # east, which took no part, sees none of it.
    assert audit(matcher, east, "request.resolve") == []
    assert audit(matcher, east, "request.issue") == []


def test_a_project_requiring_users_needs_a_user_token_to_issue_or_resolve_a_reference(
    matcher: Matcher,
    encoded: dict[str, Encoded],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with matcher.operator() as op:
        named = op.create_project(
            "trial", ["north", "south", "east"], require_purpose=True, require_users=True
        )
    uploaded_and_run(matcher, named, encoded)  # uploads and runs need no user
    with matcher.member(named.tokens["north"]) as admin:
        pc = admin.add_user("trial", "pc-4471")
    with matcher.member(named.tokens["south"]) as admin:
        clerk = admin.add_user("trial", "clerk-9")
    ask = ("--encoded", str(tmp_path / "north.encoded"), "--record-id", "N1",
           "--partner", "south", "--purpose", "REQ-9")  # fmt: skip
    capsys.readouterr()

    # The organisations' own tokens are refused, naming what to do; nothing is issued.
    assert request(matcher, named.tokens["north"], *ask) == 3
    assert "requires a named user" in capsys.readouterr().err
    assert audit(matcher, named.tokens["north"], "request.issue") == []
    assert request(matcher, pc, *ask, "--json") == 0
    ref = json.loads(capsys.readouterr().out)["references"]["south"]
    answer = (ref, "--encoded", str(tmp_path / "south.encoded"), "--purpose", "answering REQ-9")
    assert resolve(matcher, named.tokens["south"], *answer) == 3
    assert "`blindmatch user add`" in capsys.readouterr().err
    assert resolve(matcher, clerk, *answer) == 0

    # Each entry names the user who acted, to its own member; north sees south's resolution
    # without south's user.
    [issued] = audit(matcher, pc, "request.issue")
    assert issued["user"] == "pc-4471"
    [resolved] = audit(matcher, clerk, "request.resolve")
    assert resolved["user"] == "clerk-9" and resolved["purpose"] == "answering REQ-9"
    [told] = audit(matcher, pc, "request.resolve")
    assert told["actor"] == "south" and told["user"] == "" and told["purpose"] == ""
    with matcher.operator() as op:
        users = {
            e["action"]: e["user"] for e in op.audit("trial") if str(e["action"]).startswith("req")
        }
    assert users == {"request.issue": "pc-4471", "request.resolve": "clerk-9"}

    # `audit report` (who in my organisation looked at what) lists both steps, each to the
    # member whose user took it.
    capsys.readouterr()
    for token, user, did, not_did in (
        (pc, "pc-4471", "was issued request references", "resolved"),
        (clerk, "clerk-9", "resolved a partner's request reference", "was issued"),
    ):
        assert cli(matcher, "audit", "report", "--project", "trial", "--token", token) == 0
        report = capsys.readouterr().out
        assert user in report and did in report and not_did not in report


def test_only_the_partner_a_reference_is_addressed_to_can_resolve_it(
    matcher: Matcher,
    trio: ProjectTokens,
    encoded: dict[str, Encoded],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    uploaded_and_run(matcher, trio, encoded)
    with matcher.member(trio.tokens["north"]) as north:
        issued = north.issue_request_refs(
            "trial", [0], encoded["north"].sha256, partner="south", purpose="REQ-1"
        )
    assert set(issued.refs) == {"south"}
    ref = issued.refs["south"]
    capsys.readouterr()

    # The requester, which knows it exists, is told it is not its own to resolve.
    assert resolve(matcher, trio.tokens["north"], ref, "--encoded",
                   str(tmp_path / "north.encoded"), "--purpose", "x") == 3  # fmt: skip
    assert "addressed to another member (you issued it)" in capsys.readouterr().err
    # A third member is answered as for a reference never issued: resolving cannot be used
    # to test whether one exists.
    never = "bmr-" + "a" * 26
    answers = []
    for tried in (ref, never):
        assert resolve(matcher, trio.tokens["east"], tried, "--encoded",
                       str(tmp_path / "east.encoded"), "--purpose", "x") == 3  # fmt: skip
        answers.append(capsys.readouterr().err.replace(tried, "REF"))
    assert answers[0] == answers[1]
    assert "no request reference REF in project 'trial'" in answers[0]
    assert "another member" not in answers[0]
    # Refused resolutions are not recorded as resolutions.
    assert audit(matcher, trio.tokens["north"], "request.resolve") == []


def test_a_forged_or_mangled_reference_is_refused_clearly(
    matcher: Matcher,
    trio: ProjectTokens,
    encoded: dict[str, Encoded],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    uploaded_and_run(matcher, trio, encoded)
    south = trio.tokens["south"]
    folder = str(tmp_path / "south.encoded")
    capsys.readouterr()
    assert resolve(matcher, south, "bmr-" + "a" * 26, "--encoded", folder, "--purpose", "x") == 3
    assert "no request reference bmr-aaaa" in capsys.readouterr().err
    assert resolve(matcher, south, "S-10", "--encoded", folder, "--purpose", "x") == 3
    assert "'S-10' is not a request reference" in capsys.readouterr().err


def test_a_row_no_upload_can_have_is_refused_after_a_run_not_an_internal_error(
    matcher: Matcher, trio: ProjectTokens, encoded: dict[str, Encoded]
) -> None:
    """A uint64 row past SQLite's INTEGER reached the run's links as an OverflowError:
    INTERNAL (benchmarks/rpcfuzz.py found it). Refused naming the field, nothing audited."""
    uploaded_and_run(matcher, trio, encoded)
    north = auth(trio.tokens["north"])
    sha = encoded["north"].sha256
    with grpc.insecure_channel(matcher.target) as channel:
        calls = (
            lambda: stub(channel).IssueRequestRef(pb.IssueRefRequest(
                project="trial", rows=[2**64 - 1], upload_sha256=sha, purpose="x"), metadata=north),
            lambda: stub(channel).IssueRequestRefs(pb.IssueRefsRequest(
                project="trial", hits=[pb.HitRows(rows=[0, 2**63], partner="south")],
                upload_sha256=sha, purpose="x"), metadata=north),
        )  # fmt: skip
        for call, field in zip(
            calls, ("rows: 18446744073709551615", "hits[0].rows: 9223372036854775808"), strict=True
        ):
            with pytest.raises(grpc.RpcError) as refused:
                call()
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert f"{field} is not a row position" in (refused.value.details() or "")
    assert audit(matcher, trio.tokens["north"], "request.issue") == []


def test_a_reference_is_only_for_a_hit_the_requester_may_see(
    matcher: Matcher,
    trio: ProjectTokens,
    encoded: dict[str, Encoded],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    uploaded_and_run(matcher, trio, encoded)
    north = trio.tokens["north"]
    folder = str(tmp_path / "north.encoded")
    capsys.readouterr()
    # south does not hold N2 (James Smith): no reference to fish with.
    assert request(matcher, north, "--encoded", folder, "--record-id", "N2",
                   "--partner", "south", "--purpose", "x") == 3  # fmt: skip
    assert "found no match for this record at south" in capsys.readouterr().err
    # An id that is not in the folder is named before anything is asked.
    assert request(matcher, north, "--encoded", folder, "--record-id", "NOPE",
                   "--purpose", "x") == 2  # fmt: skip
    assert "no record id 'NOPE'" in capsys.readouterr().err
    # The project requires a purpose for this as for results.
    assert request(matcher, north, "--encoded", folder, "--record-id", "N1") == 3
    assert "requires a purpose" in capsys.readouterr().err
    # A partner that consents only to counts cannot be referred to.
    with matcher.member(trio.tokens["south"]) as south:
        south.set_consent("trial", "count")
    assert request(matcher, north, "--encoded", folder, "--record-id", "N1",
                   "--partner", "south", "--purpose", "x") == 3  # fmt: skip
    assert "south consents only to counts" in capsys.readouterr().err
    assert audit(matcher, north, "request.issue") == []


def test_request_hits_makes_one_reference_per_row_of_a_results_file_all_or_none(
    matcher: Matcher,
    trio: ProjectTokens,
    encoded: dict[str, Encoded],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    uploaded_and_run(matcher, trio, encoded)
    north, south = trio.tokens["north"], trio.tokens["south"]
    folder = str(tmp_path / "north.encoded")
    hits, out = tmp_path / "hits.csv", tmp_path / "refs.csv"
    assert cli(matcher, "results", "--project", "trial", "--token", north, "--encoded", folder,
               "--out", str(hits), "--purpose", "REQ-117") == 0  # fmt: skip
    with hits.open(newline="") as fh:
        listed = [(r["record_id"], r["partner"]) for r in csv.DictReader(fh)]
    assert ("N1", "south") in listed and len(listed) > 2
    capsys.readouterr()

    def refs_stored() -> int:
        return len(db_rows(matcher.data_dir, "request_refs"))

    def bulk(rows: list[tuple[str, str]]) -> int:
        bad = tmp_path / "bad.csv"
        bad.write_text("record_id,partner\n" + "".join(f"{r},{p}\n" for r, p in rows))
        return request(matcher, north, "--encoded", folder, "--hits", str(bad), "--out",
                       str(out), "--purpose", "REQ-117")  # fmt: skip

    # A bad row anywhere: nothing issued, nothing written, the file and row named.
    assert bulk([listed[0], ("NOPE", "south")]) == 2  # not this member's id: before any call
    assert f"{tmp_path / 'bad.csv'}: row 3: no record id 'NOPE'" in capsys.readouterr().err
    assert bulk([listed[0], ("N2", "south")]) == 3  # the matcher refuses the second hit
    told = capsys.readouterr().err
    assert f"{tmp_path / 'bad.csv'}: row 3 (N2 at south): " in told
    assert "found no match for this record at south" in told and "no reference was issued" in told
    assert bulk([listed[0], listed[0]]) == 2
    assert "already on row 2" in capsys.readouterr().err
    assert refs_stored() == 0 and audit(matcher, north, "request.issue") == [] and not out.exists()

    # The whole file: one reference per row, in its order, each resolvable by its partner.
    assert request(matcher, north, "--encoded", folder, "--hits", str(hits), "--out", str(out),
                   "--purpose", "REQ-117") == 0  # fmt: skip
    said = f"Request references for {len(listed)} hit{'s' * (len(listed) != 1)} of {hits}"
    assert said in capsys.readouterr().out
    with out.open(newline="") as fh:
        written = list(csv.DictReader(fh))
    assert [(r["record_id"], r["partner"]) for r in written] == listed
    assert len({r["reference"] for r in written}) == len(listed) == refs_stored()
    ref = next(r["reference"] for r in written if (r["record_id"], r["partner"]) == ("N1", "south"))
    assert resolve(matcher, south, ref, "--encoded", str(tmp_path / "south.encoded"),
                   "--purpose", "answering REQ-117", "--json") == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out)[0]["record_ids"] == ["S-10"]
    # One audit entry per hit, as if each had been asked for alone.
    issued = audit(matcher, north, "request.issue")
    assert [e["detail"]["references"] for e in issued] == [  # type: ignore[index]
        {r["partner"]: r["reference"]} for r in written
    ]
    assert {e["purpose"] for e in issued} == {"REQ-117"}


def test_resolving_needs_the_folder_that_was_uploaded_and_erasure_deletes_references(
    matcher: Matcher,
    trio: ProjectTokens,
    encoded: dict[str, Encoded],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    uploaded_and_run(matcher, trio, encoded)
    with matcher.member(trio.tokens["north"]) as north:
        ref = north.issue_request_refs("trial", [0], encoded["north"].sha256, purpose="x").refs
    north, south = trio.tokens["north"], trio.tokens["south"]
    capsys.readouterr()
    # east's folder is not south's upload: the matcher refuses it, naming the run, before
    # anything is recorded: neither south's audit view nor north's says it was resolved.
    assert resolve(matcher, south, ref["south"], "--encoded", str(tmp_path / "east.encoded"),
                   "--purpose", "x") == 3  # fmt: skip
    told = capsys.readouterr().err
    assert "not to this encoded folder" in told and "Nothing was recorded" in told
    run_id = audit(matcher, north, "request.issue")[0]["detail"]["run_id"]  # type: ignore[index]
    assert f"the upload that run {run_id} used" in told
    assert audit(matcher, south, "request.resolve") == []
    assert audit(matcher, north, "request.resolve") == []
    stored = db_rows(matcher.data_dir, "request_refs")  # (..., partner 4th, resolved 9th)
    assert [row[8] for row in stored if row[3] == "south"] == [None]
    # So is a client that names no upload (one older than the matcher): refused, unrecorded.
    with (
        matcher.member(south) as member,
        pytest.raises(RejectedError, match=r"upload_sha256: required.*update it"),
    ):
        member.resolve_request_ref("trial", ref["south"], "", "x")
    assert audit(matcher, north, "request.resolve") == []
    # The right folder: resolved, and audited on both sides as before.
    assert resolve(matcher, south, ref["south"], "--encoded", str(tmp_path / "south.encoded"),
                   "--purpose", "x") == 0  # fmt: skip
    assert [e["purpose"] for e in audit(matcher, south, "request.resolve")] == ["x"]
    assert [e["detail"]["reference"] for e in audit(matcher, north, "request.resolve")] == [  # type: ignore[index]
        ref["south"]
    ]
    with matcher.member(south) as member:
        member.erase("trial")
        with pytest.raises(NotFoundError, match="no request reference"):
            member.resolve_request_ref("trial", ref["south"], encoded["south"].sha256, "x")
    # east's reference from the same request is untouched by south's erasure.
    with matcher.member(trio.tokens["east"]) as member:
        assert member.resolve_request_ref("trial", ref["east"], encoded["east"].sha256,
                                          "x").rows == (0,)  # fmt: skip


# -- the operator's and members' view of a project ------------------------------------------


def test_project_list_and_show_give_the_operator_status_without_tokens(
    matcher: Matcher,
    trio: ProjectTokens,
    encoded: dict[str, Encoded],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("BLINDMATCH_ADMIN_TOKEN", matcher.admin_token)
    monkeypatch.delenv("BLINDMATCH_TOKEN", raising=False)
    with matcher.member(trio.tokens["north"]) as north:
        north.upload("trial", encoded["north"])
    capsys.readouterr()
    assert cli(matcher, "project", "list", "--json") == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert listed["project"] == "trial" and listed["disclosure"] == "hits"
    assert [m["name"] for m in listed["members"]] == ["east", "north", "south"]
    assert [m["record_count"] for m in listed["members"]] == [None, 5, None]
    assert listed["fingerprint_id"] == fingerprint_id(encoded["north"].fingerprint)
    assert listed["fingerprint_from"] == "north" and listed["latest_run"] is None

    uploaded_and_run(matcher, trio, encoded)
    for args in (("project", "list"), ("project", "show", "trial")):
        assert cli(matcher, *args) == 0
        out = capsys.readouterr().out
        assert "trial" in out and "done" in out
        assert not any(token in out for token in trio.tokens.values())
    assert "operator's view" in out and "of north's upload, the earliest held" in out


def test_project_show_checks_an_encoded_folder_against_the_projects_fingerprint(
    matcher: Matcher,
    project: ProjectTokens,
    orgs: dict[str, Org],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    north = encode(orgs["north"], tmp_path / "north.encoded")
    south_ok = encode(orgs["south"], tmp_path / "south.encoded")
    south_bad = encode(orgs["south"], tmp_path / "bad.encoded", secret=b"another secret")
    token = project.tokens["south"]
    show = ("project", "show", "trial", "--token", token, "--encoded")
    assert cli(matcher, *show, str(tmp_path / "south.encoded")) == 0
    assert "nothing uploaded yet, so yours will set it" in capsys.readouterr().out
    with matcher.member(project.tokens["north"]) as member:
        member.upload("trial", north)
    assert cli(matcher, *show, str(tmp_path / "south.encoded")) == 0
    out = capsys.readouterr().out
    assert f"fingerprint id {fingerprint_id(north.fingerprint)}" in out
    assert "it may be uploaded" in out
    assert cli(matcher, *show, str(tmp_path / "bad.encoded")) == 1
    out = capsys.readouterr().out
    assert f"{fingerprint_id(south_bad.fingerprint)} (2048-bit CLKs) differs" in out
    assert "do not upload it" in out
    # ... and the matcher would refuse it the same way, naming north's upload, the earliest held.
    with matcher.member(token) as member:
        with pytest.raises(
            RejectedError, match=r"than north's upload \(the earliest held in this project\)"
        ):
            member.upload("trial", south_bad)
        member.upload("trial", south_ok)


def test_project_show_help_says_the_fingerprint_shown_is_the_earliest_held_not_the_first(
    matcher: Matcher,
    project: ProjectTokens,
    orgs: dict[str, Org],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """North uploads first, south next, north again: the fingerprint id is shown from
    south's upload, the earliest held; the help said "set by the first upload"."""
    assert cli(matcher, "project", "show", "trial", "--token", project.tokens["north"]) == 0
    assert "encodings: none held (the next upload sets the fingerprint id)" in (
        capsys.readouterr().out
    )  # (was "none uploaded yet (the first upload sets ...)": after erasures, none held)
    north = encode(orgs["north"], tmp_path / "north.encoded")
    south = encode(orgs["south"], tmp_path / "south.encoded")
    for name, folder in (("north", north), ("south", south), ("north", north)):
        with matcher.member(project.tokens[name]) as member:
            member.upload("trial", folder)
    assert cli(matcher, "project", "show", "trial", "--token", project.tokens["north"]) == 0
    assert "(2048-bit CLKs; of south's upload, the earliest held)" in capsys.readouterr().out
    with pytest.raises(SystemExit) as done:
        main(["project", "show", "--help"])
    assert done.value.code == 0
    told = " ".join(capsys.readouterr().out.split())
    assert "set by the first upload" not in told
    assert "shown from the earliest held" in told and "the next upload sets it" in told


def test_project_commands_take_the_project_as_name_or_as_option(
    matcher: Matcher,
    project: ProjectTokens,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("BLINDMATCH_ADMIN_TOKEN", matcher.admin_token)
    assert cli(matcher, "project", "show", "--project", "trial", "--operator", "--json") == 0
    assert json.loads(capsys.readouterr().out)["project"] == "trial"
    assert cli(matcher, "project", "rotate-token", "--project", "trial", "--member", "north",
               "--json") == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out)["member"] == "north"
    assert cli(matcher, "project", "show", "trial", "--project", "other", "--operator") == 2
    assert "two projects given (trial and --project other)" in capsys.readouterr().err
    assert cli(matcher, "project", "show", "--operator") == 2
    assert "which project?" in capsys.readouterr().err
    monkeypatch.delenv("BLINDMATCH_ADMIN_TOKEN")
    monkeypatch.delenv("BLINDMATCH_TOKEN", raising=False)
    assert cli(matcher, "project", "show", "trial") == 2
    err = capsys.readouterr().err
    assert "pass --token-file FILE or --token (or set BLINDMATCH_TOKEN) for a member's view" in err


def test_a_query_with_another_secret_names_both_fingerprint_ids(
    matcher: Matcher, project: ProjectTokens, orgs: dict[str, Org], tmp_path: Path
) -> None:
    south = encode(orgs["south"], tmp_path / "south.encoded")
    other = encode(orgs["north"], tmp_path / "other.encoded", secret=b"another secret")
    with matcher.member(project.tokens["south"]) as member:
        index_all(member, "trial", south)
    with matcher.member(project.tokens["north"]) as member, pytest.raises(RejectedError) as refused:
        member.query("trial", bytes(256), clk_bits=2048, fingerprint=other.fingerprint,
                     purpose="case 1")  # fmt: skip
    message = str(refused.value)
    assert "than south's index: " in message
    assert f"their fingerprint id is {fingerprint_id(other.fingerprint)}" in message
    assert f"the project's is {fingerprint_id(south.fingerprint)}" in message


def test_a_refused_upload_says_whether_the_schema_or_the_secret_differs(
    matcher: Matcher,
    project: ProjectTokens,
    orgs: dict[str, Org],
    secret_file: Path,
    tmp_path: Path,
) -> None:
    schema = json.loads(PERSON_SCHEMA.read_text(encoding="utf-8"))
    schema["features"][0]["hashing"]["strategy"]["bitsPerFeature"] += 10  # the same CLK size
    other_schema = tmp_path / "other-schema.json"
    other_schema.write_text(json.dumps(schema), encoding="utf-8")
    other_secret = tmp_path / "other.secret"
    assert main(["secret", "new", str(other_secret)]) == 0
    for out, secret, with_schema in (
        ("north", secret_file, PERSON_SCHEMA),
        ("schema", secret_file, other_schema),
        ("secret", other_secret, PERSON_SCHEMA),
    ):
        org = orgs["north" if out == "north" else "south"]
        assert encode_cli(org, secret, tmp_path / f"{out}.encoded", schema=with_schema) == 0
    north, by_schema, by_secret = (
        read_encoded(tmp_path / f"{n}.encoded") for n in ("north", "schema", "secret")
    )
    with matcher.member(project.tokens["north"]) as member:
        member.upload("trial", north)
    with matcher.member(project.tokens["south"]) as member:
        with pytest.raises(RejectedError, match="the schema differs"):
            member.upload("trial", by_schema)
        with pytest.raises(RejectedError, match="the schema is the same, so the secret differs"):
            member.upload("trial", by_secret)
        # A folder from before schema digests (none in its manifest) is told it may be either.
        old = dataclasses.replace(by_secret, schema_digest="")
        with pytest.raises(RejectedError, match="the fingerprint covers both"):
            member.upload("trial", old)


@pytest.mark.server
def test_request_references_go_with_the_projects_data_when_it_expires(
    tmp_path: Path, encoded: dict[str, Encoded]
) -> None:
    clock = Clock()
    matcher = start(tmp_path / "data", clock, sweep_interval=0.05)
    try:
        with matcher.operator() as op:
            project = op.create_project(
                "trial", ["north", "south", "east"], expires_unix=int(clock.now + 2 * HOUR)
            )
        uploaded_and_run(matcher, project, encoded)
        with matcher.member(project.tokens["north"]) as north:
            north.issue_request_refs("trial", [0], encoded["north"].sha256)
        assert len(db_rows(matcher.data_dir, "request_refs")) == 2
        clock.advance(3 * HOUR)
        deadline = time.monotonic() + 10
        while db_rows(matcher.data_dir, "request_refs") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert db_rows(matcher.data_dir, "request_refs") == []
    finally:
        matcher.server.stop(grace=None)


def test_request_hits_keeps_an_earlier_references_file_unless_forced(
    matcher: Matcher,
    trio: ProjectTokens,
    encoded: dict[str, Encoded],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Before, the same --out was replaced: the references issued before (quoted to partners
    # already, say) lost, and with them the only record of which own record each was for
    # (the audit log names the partner and the reference alone).
    uploaded_and_run(matcher, trio, encoded)
    north = trio.tokens["north"]
    folder = str(tmp_path / "north.encoded")
    hits, out = tmp_path / "hits.csv", tmp_path / "refs.csv"
    assert cli(matcher, "results", "--project", "trial", "--token", north, "--encoded", folder,
               "--out", str(hits), "--purpose", "REQ-117") == 0  # fmt: skip
    ask = ["--encoded", folder, "--hits", str(hits), "--out", str(out), "--purpose", "REQ-117"]
    assert request(matcher, north, *ask) == 0
    before = out.read_bytes()
    issued = len(db_rows(matcher.data_dir, "request_refs"))
    capsys.readouterr()
    assert request(matcher, north, *ask) == 2
    err = capsys.readouterr().err
    assert f"--out {out}: exists (--force to replace it)" in err and "nothing was issued" in err
    assert out.read_bytes() == before and len(db_rows(matcher.data_dir, "request_refs")) == issued
    assert request(matcher, north, *ask, "--force") == 0
    assert out.read_bytes() != before and len(db_rows(matcher.data_dir, "request_refs")) > issued
    # --force says what it replaces: it goes with --hits --out only.
    capsys.readouterr()
    assert request(matcher, north, "--encoded", folder, "--record-id", "N1", "--force") == 2
    assert "--force goes with --hits" in capsys.readouterr().err
