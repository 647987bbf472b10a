"""A two-server project's query at `mapping` (docs/realtime.md "Queries in a two-server
project", docs/requests.md): each partner record it finds comes back as a request reference,
not as a row position. A row alone names no upload, and a partner's upload is replaced by its
next one; a reference keeps which upload the query searched, so only that partner can resolve
it (`blindmatch resolve`), only from the ENCODED folder of that upload, audited, and the
querying member sees it resolved, as a batch hit's reference. Real matcher, S1 and S2 on
loopback, through the CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from benchmarks.exports import Export
from blindmatch.client.remote.client import MatcherClient
from tests.test_twoserver_project import NAMES, World, world  # noqa: F401
from tests.test_twoserver_query import ask, held_by, members, person_csv, query  # noqa: F401

pytestmark = pytest.mark.server


def resolve(world: World, token: str, encoded: Path, *refs: str) -> int:  # noqa: F811
    return world.cli("resolve", *refs, "--project", "shares", "--encoded", str(encoded),
                     "--purpose", "answering case 24/118", "--json", token=token)  # fmt: skip


def test_a_mapping_query_answers_with_references_only_the_partner_resolves_to_its_records(
    world: World,  # noqa: F811
    members: dict[str, tuple[Export, Path]],  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    with world.operator() as op:
        tokens = op.create_project("shares", list(NAMES), "mapping", mode="two-server").tokens
    for name in ("north", "south"):
        assert world.cli("upload", str(members[name][1]), "--project", "shares",
                         token=tokens[name]) == 0  # fmt: skip
    south, south_encoded = members["south"]
    planted = sorted(south.truth)[:2]  # two of south's own records
    people = person_csv(south, planted, world.folder / "planted.csv")

    got = query(world, "shares", tokens["north"], people, south, capsys)
    assert held_by(got) == [["south"], ["south"]] and got["partner_levels"]["south"] == "mapping"
    refs = [ref for r in got["results"] for m in r["matches"] for ref in m["refs"]]
    assert len(refs) >= 2 and all(re.fullmatch(r"bmr-[a-z2-7]{26}", ref) for ref in refs)
    # The text answer says what to do with them.
    capsys.readouterr()
    assert ask(world, "shares", tokens["north"], people, south) == 0
    said = capsys.readouterr().out
    assert "south ref bmr-" in said and "blindmatch resolve" in said

    # South resolves them to its own records, from the folder it uploaded.
    capsys.readouterr()
    assert resolve(world, tokens["south"], south_encoded, *refs[:2]) == 0
    resolved = json.loads(capsys.readouterr().out)
    assert [r["requester"] for r in resolved] == ["north", "north"]
    assert all(r["run_id"] == "" for r in resolved)
    assert sorted(i for r in resolved for i in r["record_ids"]) == planted

    # Nobody else: not north, which asked, nor west; nor from another folder.
    assert resolve(world, tokens["north"], members["north"][1], refs[0]) == 3
    assert "(you issued it)" in capsys.readouterr().err
    assert resolve(world, tokens["west"], south_encoded, refs[0]) == 3
    assert f"no request reference {refs[0]}" in capsys.readouterr().err
    assert resolve(world, tokens["south"], members["north"][1], refs[0]) == 3
    told = capsys.readouterr().err
    assert "the upload that the query searched" in told and "Nothing was recorded" in told

    # Audited as a batch hit's: north sees the references issued and south's resolutions;
    # west sees neither.
    def seen(name: str, action: str) -> list[dict]:
        with MatcherClient(world.target, tokens[name]) as member:
            return [e for e in member.audit("shares") if e["action"] == action]

    issued = seen("north", "request.issue")
    assert len(issued) == 2 and all(e["detail"]["query"] for e in issued)
    # (one entry a query; the second query, about the same people, got references of its own)
    first, second = (e["detail"]["references"]["south"] for e in issued)
    assert sorted(first) == sorted(refs) and len(second) == len(refs)
    assert not set(first) & set(second)
    assert all(e["purpose"] == "case 24/118" for e in issued)
    by_north = seen("north", "request.resolve")
    # (two: south's try from north's folder was refused before anything was recorded)
    assert sorted(e["detail"]["reference"] for e in by_north) == sorted(refs[:2])
    assert len(seen("south", "request.resolve")) == 2
    assert all("purpose" not in e or not e["purpose"] for e in by_north)  # south's, withheld
    assert seen("south", "request.issue") == []
    assert seen("west", "request.issue") == [] and seen("west", "request.resolve") == []


def test_at_hits_a_query_issues_no_reference(
    world: World,  # noqa: F811
    members: dict[str, tuple[Export, Path]],  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    with world.operator() as op:
        tokens = op.create_project("shares", list(NAMES), mode="two-server").tokens
    for name in ("north", "south"):
        assert world.cli("upload", str(members[name][1]), "--project", "shares",
                         token=tokens[name]) == 0  # fmt: skip
    south = members["south"][0]
    people = person_csv(south, sorted(south.truth)[:1], world.folder / "one.csv")
    got = query(world, "shares", tokens["north"], people, south, capsys)
    assert held_by(got) == [["south"]]
    assert [m["refs"] for r in got["results"] for m in r["matches"]] == [[]]
    with MatcherClient(world.target, tokens["north"]) as member:
        assert [e for e in member.audit("shares") if e["action"] == "request.issue"] == []
