"""Request references in a two-server project, walked from the shell (tworefs, 2026-12-07;
docs/requests.md, docs/realtime.md "Queries in a two-server project"): a batch hit's and a
query's references, resolved by the partner, after it uploads again or erases. Real matcher,
S1 and S2 on loopback, through the CLI; each test fails on the code before."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from benchmarks.exports import Export
from blindmatch.client.encoding.encoded import read_encoded
from blindmatch.client.errors import InputError
from blindmatch.client.remote.model import ResolvedRef
from blindmatch.client.requests import local_ids
from tests.test_twoserver_query import ask, members, person_csv  # noqa: F401
from tests.twoserver_world import World, world  # noqa: F401

pytestmark = pytest.mark.server


def two_member_project(world: World, name: str) -> dict[str, str]:  # noqa: F811
    """A two-server project at `mapping` of north and south (west never uploads here)."""
    with world.operator() as op:
        return op.create_project(name, ["north", "south"], "mapping", mode="two-server").tokens


def test_a_request_of_every_partner_after_the_one_holding_the_record_erased_names_it(
    world: World,  # noqa: F811
    members: dict[str, tuple[Export, Path]],  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`request --record-id` without `--partner`, the only partner holding the record having
    erased its data since the run: it said "no match ... at any partner ...; check the
    record id against your results", of a record id that was right (`--partner` and `--hits`
    said why since requestswalk)."""
    tokens = two_member_project(world, "refs")
    for name in ("north", "south"):
        assert world.cli("upload", str(members[name][1]), "--project", "refs",
                         token=tokens[name]) == 0  # fmt: skip
    assert world.cli("run", "--project", "refs", token=tokens["north"]) == 0
    hits = world.folder / "hits.csv"
    north = str(members["north"][1])
    assert world.cli("results", "--project", "refs", "--encoded", north, "--out", str(hits),
                     token=tokens["north"]) == 0  # fmt: skip
    with open(hits, newline="", encoding="utf-8") as f:
        record = next(csv.DictReader(f))["record_id"]
    request = ("request", "--project", "refs", "--encoded", north, "--record-id", record)
    assert world.cli(*request, token=tokens["north"]) == 0
    assert world.cli("erase", "--project", "refs", "--yes", token=tokens["south"]) == 0
    capsys.readouterr()
    assert world.cli(*request, token=tokens["north"]) == 3
    said = capsys.readouterr().err
    assert "south erased its data from this project since that run" in said, said
    assert "check the record id" not in said


def test_a_query_reference_names_its_project_and_the_folder_it_resolves_from(
    world: World,  # noqa: F811
    members: dict[str, tuple[Export, Path]],  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The query's note on its `bmr-` refs said `--project P` (`request` names the project);
    a reference resolved from another folder was told to use the folder "you uploaded
    before that query", which for a watch's reference (the upload that fired it) is the
    wrong one: it names the upload current when the reference was issued."""
    tokens = two_member_project(world, "refs")
    for name in ("north", "south"):
        assert world.cli("upload", str(members[name][1]), "--project", "refs",
                         token=tokens[name]) == 0  # fmt: skip
    south, south_encoded = members["south"]
    people = person_csv(south, sorted(south.truth)[:1], world.folder / "one.csv")
    capsys.readouterr()
    assert ask(world, "refs", tokens["north"], people, south) == 0
    said = capsys.readouterr().out
    assert "`blindmatch resolve REFERENCE --project refs --encoded" in said, said
    ref = next(word for word in said.split() if word.startswith("bmr-"))
    assert world.cli("resolve", ref, "--project", "refs", "--encoded", str(members["north"][1]),
                     token=tokens["south"]) == 3  # fmt: skip
    told = capsys.readouterr().err
    assert "the upload that the query searched or the watch compared" in told, told
    assert "of your last upload before 20" in told and "when the reference was issued" in told
    assert "Nothing was recorded" in told
    assert world.cli("resolve", ref, "--project", "refs", "--encoded", str(south_encoded),
                     token=tokens["south"]) == 0  # fmt: skip


def test_the_clients_own_check_of_a_query_reference_names_the_upload_current_when_issued(
    members: dict[str, tuple[Export, Path]],  # noqa: F811
) -> None:
    """The client checks a resolution's upload against the folder itself too (a matcher
    that did not): its words, as the matcher's, for a query's or a watch's reference."""
    encoded = read_encoded(members["north"][1])
    resolved = ResolvedRef("bmr-" + "a" * 26, "south", "", 1796666400.0, (0,), "0" * 64)
    with pytest.raises(InputError) as told:
        local_ids(resolved, encoded)
    assert "the query searched or the watch compared" in str(told.value)
    assert "of your last upload before 2026-12-07 " in str(told.value)
    assert "before that query (your upload then)" not in str(told.value)


def test_the_reports_request_tables_name_a_reference_of_no_run_as_a_query_or_watch() -> None:
    """report's audit summary named a watch's reference (no run) "a query's answer", as
    `resolve` did before 2026-12-06."""
    from blindmatch.client.tools.report_requests import request_tables

    entries = [
        {"action": "request.issue", "actor": "north", "time": 1796666400.0, "purpose": "W1",
         "detail": {"run_id": "", "query": True, "references": {"south": ["bmr-" + "b" * 26]}}},
        {"action": "request.resolve", "actor": "south", "time": 1796666460.0,
         "detail": {"reference": "bmr-" + "b" * 26, "requester": "north", "run_id": ""}},
    ]  # fmt: skip
    tables = request_tables(entries, "north", 10)
    assert [row[4] for row in tables.resolved] == ["a query's or a watch's answer"]
