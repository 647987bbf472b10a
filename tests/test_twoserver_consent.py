"""A partner's consent in a two-server project's queries and watches (privtests2, 2026-12-07;
docs/security.md "Disclosure levels and per-member consent"): the member asking learns no
more about a partner than the lesser of the project's level and that partner's consent, as in
a CLK project's (tests/test_realtime_trust.py, tests/test_consent.py), which was tested there
alone. Real matcher, S1 and S2 on loopback (tests/twoserver_world.py); `blindmatch query` and
a watch as a member opens one. Each test fails with the consent left out of the level
(realtime/engine.py `_two_server_query`, realtime/twowatch.py `_compare`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.exports import Export
from blindmatch.client.remote.client import MatcherClient
from tests.test_twoserver_query import members, person_csv, query  # noqa: F401
from tests.test_twoserver_watch import Watching, until
from tests.twoserver_world import World, world  # noqa: F401

pytestmark = pytest.mark.server


def two_member_project(world: World, level: str, *, watch: bool = False) -> dict[str, str]:  # noqa: F811
    """A two-server project "shares" of north and south at `level`, both uploaded."""
    with world.operator() as op:
        tokens = op.create_project("shares", ["north", "south"], level, mode="two-server").tokens
        if watch:
            op.set_query_limits("shares", allow_watch=True)
    return tokens


def test_a_two_server_query_learns_only_what_the_partner_consented_to(
    world: World,  # noqa: F811
    members: dict[str, tuple[Export, Path]],  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    tokens = two_member_project(world, "mapping")  # a two-server project's most
    for name in ("north", "south"):
        assert world.cli("upload", str(members[name][1]), "--project", "shares",
                         token=tokens[name]) == 0  # fmt: skip
    south = members["south"][0]
    people = person_csv(south, sorted(south.truth)[:2], world.folder / "two.csv")
    # At the project's level (mapping): a request reference to each of south's records.
    got = query(world, "shares", tokens["north"], people, south, capsys)
    assert got["partner_levels"] == {"south": "mapping"}
    assert [[m["partner"] for m in r["matches"]] for r in got["results"]] == [["south"]] * 2
    assert all(m["refs"] for r in got["results"] for m in r["matches"])
    # South lets partners learn hits only: which queried records it holds, no reference.
    with MatcherClient(world.target, tokens["south"]) as member:
        assert member.set_consent("shares", "hits") == "hits"
    got = query(world, "shares", tokens["north"], people, south, capsys)
    assert got["partner_levels"] == {"south": "hits"}
    assert [[m["partner"] for m in r["matches"]] for r in got["results"]] == [["south"]] * 2
    assert all(m["refs"] == [] and m["scores"] == [] for r in got["results"] for m in r["matches"])
    # ... and a count only: how many of the queried records south holds, not which.
    with MatcherClient(world.target, tokens["south"]) as member:
        member.set_consent("shares", "count")
    got = query(world, "shares", tokens["north"], people, south, capsys)
    assert got["partner_levels"] == {"south": "count"} and got["counts"] == {"south": 2}
    assert [r["matches"] for r in got["results"]] == [[], []]
    # Audited at the level disclosed.
    with world.operator() as op:
        queries = [e for e in op.audit("shares") if e["action"] == "query"]
    assert [e["disclosed"] for e in queries] == [{"south": lvl} for lvl in ("mapping", "hits",
                                                                              "count")]  # fmt: skip


def test_a_two_server_watch_is_told_only_what_the_partner_consented_to(
    world: World,  # noqa: F811
    members: dict[str, tuple[Export, Path]],  # noqa: F811
) -> None:
    south_folder = members["south"][1]
    tokens = two_member_project(world, "mapping", watch=True)
    assert world.cli("upload", str(members["north"][1]), "--project", "shares",
                     token=tokens["north"]) == 0  # fmt: skip
    # South consents to a count only, then uploads two records north watches.
    with MatcherClient(world.target, tokens["south"]) as member:
        assert member.set_consent("shares", "count") == "count"
    watch = Watching(world, tokens["north"], south_folder, [0, 1], band_keys=True)
    try:
        assert world.cli("upload", str(south_folder), "--project", "shares",
                         token=tokens["south"]) == 0  # fmt: skip
        until(lambda: len(watch.events) == 2 or watch.error is not None)
        assert watch.error is None
    finally:
        watch.close()
    # The fact that south now holds a watched record, twice: not which one, no reference
    # (at the project's mapping, each event named its record and south's references).
    assert [(e.partner, e.index, e.match) for e in watch.events] == [("south", None, None)] * 2
    with world.operator() as op:
        told = [e for e in op.audit("shares") if e["action"] == "watch.notify"]
    assert [e["disclosed"] for e in told] == [{"south": "count"}] * 2
    assert "bmr-" not in json.dumps(told)
