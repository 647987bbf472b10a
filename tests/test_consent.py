"""Per-member disclosure consent: a member never learns more about a partner than the
partner allowed, nor more than the project allows."""

from __future__ import annotations

import csv
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from blindmatch.client.api import LEVELS, MatcherClient, ProjectTokens
from blindmatch.client.cli import main
from blindmatch.client.encoded import Encoded
from blindmatch.client.results import join_results
from blindmatch.matcher.core.disclose import disclose, effective_level, effective_levels
from blindmatch.matcher.domain import Level
from blindmatch.matcher.server import RunningServer, create_server
from tests.conftest import ADMIN_TOKEN, NORTH_CSV, NORTH_MAP, SOUTH_CSV, SOUTH_MAP, Matcher, Org
from tests.support import encode_all
from tests.test_flow import uploaded_and_run

# -- the rule, as pure logic ------------------------------------------------------------

LINKS = [(0, "south", 5, 0.91), (2, "south", 7, 0.85), (2, "west", 1, 0.88)]


@pytest.mark.parametrize("project", list(Level))
@pytest.mark.parametrize("consent", [None, *Level])
def test_a_partner_is_disclosed_at_the_lesser_of_project_and_consent(
    project: Level, consent: Level | None
) -> None:
    expected = project if consent is None else min(project, consent)
    assert effective_level(project, consent) == expected
    levels = effective_levels(project, {"north": Level.COUNT, "south": consent}, "north")
    assert levels == {"south": expected}  # the caller's own consent plays no part


def test_disclose_applies_a_level_per_partner() -> None:
    out = disclose({"south": Level.COUNT, "west": Level.MAPPING}, LINKS)
    assert out.counts == {"south": 2, "west": 1}
    assert out.levels == {"south": Level.COUNT, "west": Level.MAPPING}
    assert [(h.row, h.partner, h.partner_row, h.score) for h in out.hits] == [(2, "west", 1, 0.0)]


def test_a_partner_missing_from_the_levels_is_disclosed_as_a_count_only() -> None:
    out = disclose({"west": Level.HITS}, LINKS)
    assert {h.partner for h in out.hits} == {"west"}
    assert out.counts["south"] == 2


def test_one_level_for_everyone_still_works() -> None:
    out = disclose(Level.HITS, LINKS)
    assert [(h.row, h.partner, h.partner_row) for h in out.hits] == [
        (0, "south", 0),
        (2, "south", 0),
        (2, "west", 0),
    ]


# -- every pair of consents, end to end ------------------------------------------------------

# What each member holds in common with the other (own row, partner row), from conftest's data.
NORTH_SEES = [(0, 0), (3, 1), (4, 3)]
SOUTH_SEES = [(0, 0), (1, 3), (3, 4)]
CONSENTS = list(LEVELS)  # count, hits, mapping, scores


@dataclass
class World:
    server: RunningServer
    project: ProjectTokens
    encoded: dict[str, Encoded]

    def member(self, name: str) -> MatcherClient:
        return MatcherClient(f"127.0.0.1:{self.server.port}", self.project.tokens[name])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """One finished run in a `scores` project; consent applies when results are fetched."""
    tmp = tmp_path_factory.mktemp("consent")
    orgs = {}
    for name, data, mapping in (("north", NORTH_CSV, NORTH_MAP), ("south", SOUTH_CSV, SOUTH_MAP)):
        (tmp / f"{name}.csv").write_text(data, encoding="utf-8")
        (tmp / f"{name}.toml").write_text(mapping, encoding="utf-8")
        orgs[name] = Org(tmp / f"{name}.csv", tmp / f"{name}.toml")
    encoded = encode_all(orgs, tmp)
    server = create_server("127.0.0.1:0", tmp / "data", ADMIN_TOKEN, workers=1)
    try:
        matcher = Matcher(server, tmp / "data", ADMIN_TOKEN)
        with matcher.operator() as op:
            project = op.create_project("consent", ["north", "south"], disclosure="scores")
        uploaded_and_run(matcher, project, encoded)
        yield World(server, project, encoded)
    finally:
        server.stop(grace=None)


def check_view(
    level: str, partner: str, rows: list[tuple[int, int]], world: World, me: str
) -> None:
    with world.member(me) as client:
        results = client.results("consent")
    assert results.counts == {partner: 3}
    assert results.levels == {partner: level}
    assert results.disclosure == level  # one partner: the file is in its level's format
    got = [(h.row, h.partner_row, h.score > 0) for h in results.hits]
    if level == "count":
        assert got == []
    elif level == "hits":
        assert got == [(row, 0, False) for row, _ in rows]
    elif level == "mapping":
        assert got == [(row, prow, False) for row, prow in rows]
    else:
        assert got == [(row, prow, True) for row, prow in rows]
    join_results(results, world.encoded[me])  # the client can always write what it got


@pytest.mark.parametrize(
    ("north_consent", "south_consent"), list(itertools.product(CONSENTS, CONSENTS))
)
def test_each_member_learns_what_its_partner_consented_to(
    world: World, north_consent: str, south_consent: str
) -> None:
    with world.member("north") as north:
        assert north.set_consent("consent", north_consent) == north_consent
    with world.member("south") as south:
        assert south.set_consent("consent", south_consent) == south_consent
    check_view(south_consent, "south", NORTH_SEES, world, me="north")
    check_view(north_consent, "north", SOUTH_SEES, world, me="south")


def test_consent_never_lifts_the_project_level(
    matcher: Matcher, orgs: dict[str, Org], tmp_path: Path
) -> None:
    with matcher.operator() as op:
        project = op.create_project("modest", ["north", "south"], disclosure="hits")
    uploaded_and_run(matcher, project, encode_all(orgs, tmp_path))
    with matcher.member(project.tokens["south"]) as south:
        south.set_consent("modest", "scores")
    with matcher.member(project.tokens["north"]) as north:
        results = north.results("modest")
    assert results.levels == {"south": "hits"}
    assert all(h.partner_row == 0 and h.score == 0 for h in results.hits)


# -- mixed levels in one results file, through the CLI --------------------------------------

WEST_CSV = SOUTH_CSV.replace("S-1", "W-2")
EAST_CSV = SOUTH_CSV.replace("S-1", "E-3")


def read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))


def test_partners_appear_at_their_own_level_in_the_results_file(
    matcher: Matcher,
    orgs: dict[str, Org],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    all_orgs = dict(orgs)
    for name, data in (("west", WEST_CSV), ("east", EAST_CSV)):
        (tmp_path / f"{name}.csv").write_text(data, encoding="utf-8")
        all_orgs[name] = Org(tmp_path / f"{name}.csv", orgs["south"].mapping)
    encoded = encode_all(all_orgs, tmp_path)
    with matcher.operator() as op:
        project = op.create_project("four", list(all_orgs), disclosure="mapping")
    uploaded_and_run(matcher, project, encoded)

    server = ["--server", matcher.target, "--quiet"]
    for name, level in (("south", "hits"), ("east", "count")):  # west sets nothing
        member = ["--project", "four", "--token", project.tokens[name]]
        assert main(["consent", "set", *member, "--level", level, *server]) == 0
    capsys.readouterr()

    out = tmp_path / "north-hits.csv"
    north = ["--project", "four", "--token", project.tokens["north"]]
    assert main(["results", *north, "--encoded", str(encoded["north"].path),
                 "--out", str(out), *server]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "east: 3 (count only, as east consents)" in printed
    assert "south: 3 (hits only, as south consents)" in printed
    assert "west: 3." in printed
    # The file has the richest format any partner allows; nobody appears above its consent:
    # south without partner rows, east not at all (only in the counts above).
    assert read_csv(out) == [
        ["record_id", "partner", "partner_row"],
        ["N1", "south", ""],
        ["N1", "west", "0"],
        ["N4", "south", ""],
        ["N4", "west", "1"],
        ["N5", "south", ""],
        ["N5", "west", "3"],
    ]

    assert main(["project", "show", "four", "--token", project.tokens["north"], *server]) == 0
    shown = capsys.readouterr().out
    assert "east: 4 records uploaded; consents to count" in shown
    assert "north: 5 records uploaded\n" in shown  # north set nothing


def test_consent_needs_a_level(matcher: Matcher, project: ProjectTokens) -> None:
    import grpc

    from blindmatch.protos import blindmatch_pb2 as pb
    from blindmatch.protos import blindmatch_pb2_grpc as pb_grpc
    from tests.support import auth

    with grpc.insecure_channel(matcher.target) as channel:
        stub = pb_grpc.MatcherStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.SetConsent(
                pb.SetConsentRequest(project="trial"), metadata=auth(project.tokens["north"])
            )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "level: required" in str(err.value.details())
    with matcher.member(project.tokens["north"]) as member:
        assert all(m.consent == 0 for m in member.describe("trial").members)
