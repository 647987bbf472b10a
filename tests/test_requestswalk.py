"""docs/requests.md, docs/report.md and the subject-rights pages walked as a DPO and an
analyst would (requestswalk, 2026-12-07): what a member gets wrong with request references
and erasure, against a real matcher on loopback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from blindmatch.client import ProjectTokens
from blindmatch.client.encoding.encoded import Encoded
from tests.support import Matcher, Org, encode, uploaded_and_run
from tests.test_report import Page, read_page
from tests.test_requests import cli, encoded  # noqa: F401 (encoded: a fixture)


@pytest.fixture
def trio(matcher: Matcher) -> ProjectTokens:
    """north, south and east; east holds a copy of north's export."""
    with matcher.operator() as op:
        return op.create_project("trial", ["north", "south", "east"])


def test_resolving_several_references_prints_those_resolved_before_one_is_refused(
    matcher: Matcher,
    trio: ProjectTokens,
    encoded: dict[str, Encoded],  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """south resolves its own reference and, pasted from the same request, east's: the
    first was resolved and north's audit view says so, so its answer is printed, not lost
    behind the refusal of the second (it printed nothing at all)."""
    uploaded_and_run(matcher, trio, encoded)
    with matcher.member(trio.tokens["north"]) as north:
        refs = north.issue_request_refs("trial", [0], encoded["north"].sha256).refs
    capsys.readouterr()
    folder = str(tmp_path / "south.encoded")
    args = ["resolve", refs["south"], refs["east"], "--project", "trial", "--encoded", folder]
    assert cli(matcher, *args, "--token", trio.tokens["south"]) == 3
    said = capsys.readouterr()
    assert f"{refs['south']}: north's record matched your record S-10" in said.out
    assert f"no request reference {refs['east']} in project 'trial'" in said.err
    assert f"1 reference before {refs['east']} resolved and recorded" in said.err
    assert said.err.rstrip().endswith("[NOT_FOUND]")
    # --json: the list of those resolved, on stdout, as a script reads it.
    assert cli(matcher, *args, "--json", "--token", trio.tokens["south"]) == 3
    [resolved] = json.loads(capsys.readouterr().out)
    assert resolved["reference"] == refs["south"] and resolved["record_ids"] == ["S-10"]
    # The first refused: nothing printed, the refusal as it was.
    args[1:3] = [refs["east"], refs["south"]]
    assert cli(matcher, *args, "--token", trio.tokens["south"]) == 3
    said = capsys.readouterr()
    assert said.out == "" and "before" not in said.err


def test_a_refused_hit_says_no_reference_was_issued_before_the_status_code(
    matcher: Matcher,
    trio: ProjectTokens,
    encoded: dict[str, Encoded],  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """It read `... against your results [FAILED_PRECONDITION]; no reference was issued`."""
    uploaded_and_run(matcher, trio, encoded)
    hits = tmp_path / "hits.csv"
    hits.write_text("record_id,partner\nN1,south\nN2,south\n")
    capsys.readouterr()
    assert cli(matcher, "request", "--project", "trial", "--token", trio.tokens["north"],
               "--encoded", str(tmp_path / "north.encoded"), "--hits", str(hits),
               "--out", str(tmp_path / "refs.csv")) == 3  # fmt: skip
    err = capsys.readouterr().err.rstrip()
    assert f"{hits}: row 3 (N2 at south): the latest run found no match" in err
    assert err.endswith("; no reference was issued [FAILED_PRECONDITION]")


def test_a_reference_to_a_partner_that_erased_since_the_run_says_so(
    matcher: Matcher,
    trio: ProjectTokens,
    encoded: dict[str, Encoded],  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """east erased its data after the run: north's request for its hit at east said "the
    latest run found no match ...; check the record id against your results", sending the
    analyst to check a record id that was right. And the erasure says the references went."""
    uploaded_and_run(matcher, trio, encoded)
    north_folder = str(tmp_path / "north.encoded")
    hits = tmp_path / "hits.csv"
    assert cli(matcher, "results", "--project", "trial", "--token", trio.tokens["north"],
               "--encoded", north_folder, "--out", str(hits)) == 0  # fmt: skip
    assert "N1,east" in hits.read_text()
    capsys.readouterr()
    assert cli(matcher, "erase", "--project", "trial", "--token", trio.tokens["east"],
               "--yes") == 0  # fmt: skip
    assert "with every request reference you issued or were sent" in capsys.readouterr().out

    request = ["request", "--project", "trial", "--token", trio.tokens["north"],
               "--encoded", north_folder]  # fmt: skip
    assert cli(matcher, *request, "--record-id", "N1", "--partner", "east") == 3
    err = capsys.readouterr().err
    assert "east erased its data from this project since run trial-run-1" in err
    assert "check the record id" not in err
    assert cli(matcher, *request, "--hits", str(hits), "--out", str(tmp_path / "r.csv")) == 3
    err = capsys.readouterr().err
    assert f"{hits}: row " in err and "(N1 at east): east erased its data" in err
    # Without --partner: south's reference, as before.
    assert cli(matcher, *request, "--record-id", "N1", "--json") == 0
    assert set(json.loads(capsys.readouterr().out)["references"]) == {"south"}
    # east itself is told what to do next, as `results` tells it.
    east = ["request", "--project", "trial", "--token", trio.tokens["east"],
            "--encoded", str(tmp_path / "east.encoded"), "--record-id", "N1"]  # fmt: skip
    assert cli(matcher, *east) == 3
    assert "(you erased it); upload again and start a new run" in capsys.readouterr().err


def test_the_report_page_lists_references_issued_and_resolved_both_ways(
    matcher: Matcher,
    trio: ProjectTokens,
    encoded: dict[str, Encoded],  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """docs/report.md: the audit summary shows every disclosure of the member's information
    to a partner. A partner resolving the member's reference learns which of its records the
    member holds a match for; the page showed only `request.issue 1` in its action counts."""
    uploaded_and_run(matcher, trio, encoded)
    with matcher.member(trio.tokens["north"]) as north:
        refs = north.issue_request_refs("trial", [0], encoded["north"].sha256, purpose="REQ-117")
    ref = refs.refs["south"]
    assert cli(matcher, "resolve", ref, "--project", "trial", "--token", trio.tokens["south"],
               "--encoded", str(tmp_path / "south.encoded"),
               "--purpose", "answering REQ-117") == 0  # fmt: skip

    def page(member: str) -> Page:
        out = tmp_path / f"{member}.html"
        assert cli(matcher, "report", "--project", "trial", "--token", trio.tokens[member],
                   "--encoded", str(tmp_path / f"{member}.encoded"), "--out", str(out),
                   "--quiet") == 0  # fmt: skip
        return read_page(out)[1]

    north_page = page("north")
    text = " ".join(north_page.text)
    assert "You issued 2 references in 1 request; partners resolved yours 1 time" in text
    _, *resolved = north_page.table("time", "resolved by")
    assert [row[1:6] for row in resolved] == [
        ["south", "north", ref, refs.run_id, "(withheld: the partner's)"]
    ]
    assert "answering REQ-117" not in text  # south's purpose is south's
    [_, issued] = north_page.table("time", "purpose", "run", "references")
    assert issued[1:3] == ["REQ-117", refs.run_id] and f"south: {ref}" in issued[3]

    south_page = page("south")
    [_, mine] = south_page.table("time", "resolved by")
    assert mine[1:] == ["south", "north", ref, refs.run_id, "answering REQ-117", "1"]
    assert "You resolved references partners sent you 1 time." in " ".join(south_page.text)
    assert not south_page.table("time", "purpose", "run", "references")  # north's issue
    # east, which took no part, has no such section.
    assert "Request references" not in " ".join(page("east").text)
    capsys.readouterr()


def test_a_request_from_a_folder_uploaded_since_the_run_says_to_run_first(
    matcher: Matcher,
    trio: ProjectTokens,
    encoded: dict[str, Encoded],  # noqa: F811
    orgs: dict[str, Org],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """north erased a person the subject-rights way (encode without them, upload) and asked
    for a reference from the new folder before running: told only to pass the folder the
    run used, the one it had just replaced."""
    uploaded_and_run(matcher, trio, encoded)
    csv = orgs["north"].csv.read_text().splitlines(keepends=True)
    erased = Org(tmp_path / "north2.csv", orgs["north"].mapping)
    erased.csv.write_text("".join(line for line in csv if not line.startswith("N2,")))
    newer = encode(erased, tmp_path / "north2.encoded")
    with matcher.member(trio.tokens["north"]) as north:
        north.upload("trial", newer)
    capsys.readouterr()
    assert cli(matcher, "request", "--project", "trial", "--token", trio.tokens["north"],
               "--encoded", str(newer.path), "--record-id", "N1") == 3  # fmt: skip
    err = capsys.readouterr().err
    assert "used a different upload of yours than this encoded folder" in err
    assert "start a run (`blindmatch run`) and fetch its results first" in err


def test_a_resolution_without_a_required_purpose_is_told_it_needs_one_too(
    matcher: Matcher,
    encoded: dict[str, Encoded],  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A project created with --require-purpose refused a `resolve` without one as "for every
    results request": the partner answering a request was not asking for results."""
    with matcher.operator() as op:
        project = op.create_project("trial", ["north", "south", "east"], require_purpose=True)
    uploaded_and_run(matcher, project, encoded)
    with matcher.member(project.tokens["north"]) as north:
        ref = north.issue_request_refs("trial", [0], encoded["north"].sha256, purpose="R").refs
    capsys.readouterr()
    south = ["--token", project.tokens["south"], "--encoded", str(tmp_path / "south.encoded")]
    assert cli(matcher, "resolve", ref["south"], "--project", "trial", *south) == 3
    assert "every request reference issued or resolved" in capsys.readouterr().err
