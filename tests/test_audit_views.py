"""What each party's audit view shows (docs/threat-model.md, "What each party's audit view
shows"), against a real matcher with three members, one of which shares nobody.

The rule: a member learns nothing about records or overlaps that do not involve its own
records, and about its own only what the disclosure level allows. So a member's view holds
its own actions; project-wide events without other members' overlaps; and a partner's
disclosures about its records only as one line per partner per UTC day, once that day is
over, never the moment of a look-up. The operator's view is the whole log.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from blindmatch.client import ProjectTokens
from blindmatch.client.encoding.encode import read_secret
from blindmatch.client.encoding.encoded import Encoded
from blindmatch.client.tools.report import MemberReport
from blindmatch.client.tools.report_html import render_html
from blindmatch.matcher.core.audit import DAY, PARTNER_DISCLOSURES
from tests.support import (
    GRACE,
    NORTH_MAP,
    PURPOSE,
    Clock,
    Matcher,
    Org,
    ask,
    encode,
    first_notification,
    index_all,
    person,
    start,
)

# Nobody here is in north's or south's export.
EAST_CSV = """URN,Forenames,Surname,DOB,Sex,Postcode
E1,Harriet,Lindqvist,04/07/1958,F,TR1 2AA
E2,Olusegun,Adeyemi,21/01/1983,M,NE1 4XF
E3,Marta,Wiśniewska,09/09/1999,F,PL4 8AA
"""


@pytest.fixture
def clock() -> Clock:
    """10:00 UTC on some day, so that the day ends 14 hours later."""
    now = Clock()
    now.now = (now.now // DAY) * DAY + 10 * 3600
    return now


@pytest.fixture
def matcher3(tmp_path: Path, clock: Clock) -> Iterator[Matcher]:
    running = start(tmp_path / "matcher-data", clock)
    try:
        yield running
    finally:
        running.server.stop(grace=None)


@pytest.fixture
def three(
    matcher3: Matcher, orgs: dict[str, Org], secret_file: Path, tmp_path: Path
) -> tuple[ProjectTokens, dict[str, Encoded]]:
    """north and south share three people; east shares nobody. All uploaded, one run."""
    east_csv, east_map = tmp_path / "east.csv", tmp_path / "east.toml"
    east_csv.write_text(EAST_CSV, encoding="utf-8")
    east_map.write_text(NORTH_MAP, encoding="utf-8")
    everyone = {**orgs, "east": Org(east_csv, east_map)}
    secret = read_secret(secret_file)
    encoded = {n: encode(o, tmp_path / f"{n}.encoded", secret) for n, o in everyone.items()}
    with matcher3.operator() as op:
        project = op.create_project("three", ["north", "south", "east"])
    for name, enc in encoded.items():
        with matcher3.member(project.tokens[name]) as member:
            member.upload("three", enc)
    with matcher3.member(project.tokens["north"]) as north:
        run = north.start_run("three")
        assert list(north.watch_run("three", run.run_id))[-1].state == "done"
    return project, encoded


def view(matcher: Matcher, token: str, after: int = 0) -> list[dict]:
    with matcher.member(token) as member:
        return list(member.audit("three", after=after))


def partner_lines(entries: list[dict]) -> list[dict]:
    return [e for e in entries if e["action"] == PARTNER_DISCLOSURES]


def mentions(entries: list[dict], *words: str) -> set[str]:
    text = json.dumps(entries)
    return {w for w in words if w in text}


def test_a_member_with_no_overlap_learns_nothing_of_the_others_overlap(
    matcher3: Matcher, three: tuple[ProjectTokens, dict[str, Encoded]], clock: Clock
) -> None:
    project, _ = three
    with matcher3.member(project.tokens["north"]) as north:
        north_run = north.describe("three").latest_run
        north.results("three", purpose="north's case")
    with matcher3.member(project.tokens["east"]) as east:
        info = east.describe("three")
        assert info.latest_run is not None and info.latest_run.state == "done"
        assert info.latest_run.groups == 0  # not the run's 3 groups: east holds none of them
        assert list(east.watch_run("three"))[-1].groups == 0
    # north holds 3 of the shared people: its own number, which its hits show it anyway
    assert north_run is not None and north_run.groups == 3

    clock.advance(DAY)  # north's results disclosure is a day old: its line is out
    seen = view(matcher3, project.tokens["east"])
    [done] = [e for e in seen if e["action"] == "run.done"]
    assert done["detail"].keys() == {"run_id"}  # no groups, no links
    for entry in seen:
        assert not {"groups", "links", "counts", "records_with_hits"} & entry["detail"].keys()
    # north's fetch disclosed that east holds none of north's records: a day's line, no more
    [line] = partner_lines(seen)
    assert line["actor"] == line["member"] == "north" and line["disclosed"] == {"east": "hits"}
    assert not mentions(seen, "north's case")
    assert {e["actor"] for e in seen} <= {"operator", "matcher", "north", "east"}
    assert "upload" not in {e["action"] for e in seen if e["actor"] != "east"}


def test_a_partner_look_up_is_not_a_real_time_oracle(
    matcher3: Matcher,
    three: tuple[ProjectTokens, dict[str, Encoded]],
    clock: Clock,
    secret_file: Path,
) -> None:
    project, encoded = three
    with matcher3.member(project.tokens["south"]) as south:
        index_all(south, "three", encoded["south"])
    before = view(matcher3, project.tokens["south"])
    last_seen = before[-1]["seq"]

    clock.advance(3 * 3600)  # 13:00: north looks Grace up in south's index
    looked_up_at = clock.now
    with matcher3.member(project.tokens["north"]) as north:
        assert ask(north, "three", person(secret_file, **GRACE)) == ["south"]

    # The same day, south learns nothing of it, whenever it looks.
    same_day = view(matcher3, project.tokens["south"], after=last_seen)
    assert [e["action"] for e in same_day] == ["audit.export"]
    assert not partner_lines(view(matcher3, project.tokens["south"]))

    # The next day: one line for the day, at the day's end, saying north learnt something
    # about south's records by one query; not when, not why, not what else north learnt.
    clock.advance(DAY)
    later = view(matcher3, project.tokens["south"], after=same_day[-1]["seq"])
    [line] = partner_lines(later)
    assert line["actor"] == line["member"] == "north"
    assert line["disclosed"] == {"south": "hits"}
    assert line["detail"]["actions"] == {"query": 1} and line["detail"]["entries"] == 1
    assert line["time"] == (looked_up_at // DAY + 1) * DAY != looked_up_at
    assert line["purpose"] == "" and line["hash"] == "" and line["user"] == ""
    assert not mentions(later, PURPOSE)
    # paged from there, the line is not repeated
    assert not partner_lines(view(matcher3, project.tokens["south"], after=later[-1]["seq"]))
    # `blindmatch report`'s page lists the line as it is: the day, the partner, the kinds
    whole = view(matcher3, project.tokens["south"])
    page = render_html(
        MemberReport("three", "south", "hits", "hits", 0.8, "auto", False, 0, "r", None, None,
                     "r: done", clock.now, 4, [], audit=whole)
    )  # fmt: skip
    assert line["detail"]["day"] in page and "query x1" in page and PURPOSE not in page

    # east's records were not hit: east never hears of north's query
    assert not partner_lines(view(matcher3, project.tokens["east"]))
    # north's own view has the query as it was: its purpose, and who held Grace
    mine = [e for e in view(matcher3, project.tokens["north"]) if e["action"] == "query"]
    assert [(e["purpose"], e["disclosed"], e["time"]) for e in mine] == [
        (PURPOSE, {"south": "hits"}, looked_up_at)
    ]


def test_a_partners_results_entry_shows_no_counts_or_other_partners(
    matcher3: Matcher, three: tuple[ProjectTokens, dict[str, Encoded]], clock: Clock
) -> None:
    project, _ = three
    with matcher3.member(project.tokens["south"]) as south:
        mine = south.results("three", purpose="south's case")
    assert mine.counts == {"north": 3}
    clock.advance(DAY)
    seen = view(matcher3, project.tokens["north"])
    [line] = partner_lines(seen)
    assert line["detail"] == {
        "day": line["detail"]["day"],
        "actions": {"results.disclose": 1},
        "entries": 1,
    }
    assert line["actor"] == line["member"] == "south" and line["disclosed"] == {"north": "hits"}
    assert not mentions(seen, "south's case", '"east": 0')
    assert not [e for e in seen if e["actor"] == "south" and e["action"] != PARTNER_DISCLOSURES
                and e["action"] != "run.start"]  # fmt: skip

    with matcher3.operator() as op:
        everything = list(op.audit("three"))
    [disclosure] = [e for e in everything if e["action"] == "results.disclose"]
    assert disclosure["purpose"] == "south's case"
    assert disclosure["detail"]["counts"] == {"north": 3, "east": 0}
    assert any(e["action"] == "run.done" and e["detail"]["groups"] == 3 for e in everything)


def test_a_partners_watch_notification_shows_as_a_days_line(
    matcher3: Matcher,
    three: tuple[ProjectTokens, dict[str, Encoded]],
    clock: Clock,
    secret_file: Path,
) -> None:
    """The other way round: north watches for Grace; the moment south indexes her, north is
    told. South, the indexer, must not learn from its log that it answered a watch then."""
    project, encoded = three
    grace = person(secret_file, **GRACE)
    with matcher3.operator() as op:
        op.set_query_limits("three", allow_watch=True)

    def south_indexes() -> None:
        with matcher3.member(project.tokens["south"]) as south:
            index_all(south, "three", encoded["south"])

    told = first_notification(matcher3, project.tokens["north"], "three", grace, south_indexes)
    assert told

    today = view(matcher3, project.tokens["south"])
    assert not partner_lines(today) and "watch" not in {e["action"] for e in today}
    clock.advance(DAY)
    [line] = partner_lines(view(matcher3, project.tokens["south"]))
    assert line["actor"] == "north" and line["detail"]["actions"] == {"watch.notify": 1}
    east = view(matcher3, project.tokens["east"])
    assert not partner_lines(east) and not {"watch", "watch.notify"} & {e["action"] for e in east}
