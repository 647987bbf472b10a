"""docs/realtime.md walked as a police analyst would (rtwalk, 2026-12-07): `blindmatch query`
against a real matcher, where an answer could be misread as "no partner holds this person"."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from blindmatch.cli import main
from blindmatch.client.encoding.encoded import Encoded
from blindmatch.matcher.core.querylimit import Limit, QueryCounter, QueryLimits
from blindmatch.matcher.core.quota import QueryMeter
from blindmatch.matcher.domain import QueryQuota
from blindmatch.matcher.errors import ResourceExhausted
from blindmatch.matcher.realtime.engine import NO_INDEX
from tests.support import (
    GRACE,
    PERSON_SCHEMA,
    PURPOSE,
    Matcher,
    dead_port,
    index_all,
    orgs_encoded,
    person,
)

encoded = orgs_encoded  # the fixture: each org encoded with the test secret


def _query(target: str, token: str, project: str, secret_file: Path) -> list[str]:
    return [
        "query", "--server", target, "--project", project, "--token", token,
        "--schema", str(PERSON_SCHEMA), "--secret-file", str(secret_file),
        "--purpose", PURPOSE,
    ]  # fmt: skip


GRACE_ARGS = ["--given-name", "Grace", "--surname", "Hughes", "--dob", "12/12/2001"]
NOBODY = ["--given-name", "Quentin", "--surname", "Zabriskie", "--dob", "03/07/1951"]


def test_a_partner_without_a_standing_index_is_named_not_searched_in_a_clk_project(
    matcher: Matcher,
    encoded: dict[str, Encoded],
    secret_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Before, west (no index) was left out of "Searched partners: south." without a word and
    `--json` said `"not_searched": {}`, so "no partner match disclosed" read as west not
    holding the person; a two-server project named such a partner already."""
    with matcher.operator() as op:
        tokens = op.create_project("walk", ["north", "south", "west"]).tokens
    with matcher.member(tokens["north"]) as north:
        grace = person(secret_file, **GRACE)
        answer = north.query(
            "walk", grace[0], clk_bits=grace[1], fingerprint=grace[2], purpose=PURPOSE
        )
        assert answer.partners == [] and answer.not_searched == {
            "south": NO_INDEX, "west": NO_INDEX
        }  # fmt: skip
    with matcher.member(tokens["south"]) as south:
        index_all(south, "walk", encoded["south"])
    query = _query(matcher.target, tokens["north"], "walk", secret_file)
    assert main([*query, *GRACE_ARGS]) == 0
    out = capsys.readouterr().out
    assert "Searched partners: south.\n" in out
    assert f"Not searched: west: {NO_INDEX}.\n" in out
    assert "query: held by south" in out
    assert main([*query, *NOBODY, "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert (answer["partners"], answer["not_searched"]) == (["south"], {"west": NO_INDEX})


def test_a_records_line_does_not_say_no_match_where_a_partner_answers_in_counts_only(
    matcher: Matcher,
    encoded: dict[str, Encoded],
    secret_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Before, at `count` each record's line said "no partner match disclosed" while the line
    under it said the partner holds 1 of the 1 queried, and `--out` said "Wrote 0 rows"."""
    with matcher.operator() as op:
        counted = op.create_project("counted", ["north", "south"], "count").tokens
        mixed = op.create_project("mixed", ["north", "south", "west"]).tokens
    with matcher.member(counted["south"]) as south:
        index_all(south, "counted", encoded["south"])
    out_csv = tmp_path / "answer.csv"
    query = _query(matcher.target, counted["north"], "counted", secret_file)
    assert main([*query, *GRACE_ARGS, "--out", str(out_csv)]) == 0
    out = capsys.readouterr().out
    assert "no partner match disclosed" not in out
    assert "  query: not told per record: south allows counts only (compared on:" in out
    assert "  south allows counts only: it holds 1 of the 1 queried record" in out
    assert f"Wrote 0 rows to {out_csv} (south: counts only, no rows)." in out

    with matcher.member(mixed["south"]) as south:
        index_all(south, "mixed", encoded["south"])
    with matcher.member(mixed["west"]) as west:
        assert west.set_consent("mixed", "count") == "count"
        index_all(west, "mixed", encoded["north"])  # north's export holds Grace too
    query = _query(matcher.target, mixed["north"], "mixed", secret_file)
    assert main([*query, *NOBODY, "--out", str(out_csv)]) == 0
    out = capsys.readouterr().out
    assert (
        f"Wrote 0 rows to {out_csv} (1 of the 1 record in no row: no match disclosed; "
        "west: counts only, no rows)."
    ) in out
    assert "  query: no match disclosed by south; west allows counts only (compared on:" in out
    assert "  west allows counts only: it holds 0 of the 1 queried record" in out
    assert main([*query, *GRACE_ARGS]) == 0
    out = capsys.readouterr().out
    assert "  query: held by south (compared on:" in out
    assert "  west allows counts only: it holds 1 of the 1 queried record" in out


def test_a_field_given_twice_is_refused_not_one_value_dropped(
    secret_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Before, a --person-file with given_name twice (a colleague's edit under the first)
    queried the last one, and --field surname=... beside --surname queried --surname's, each
    without a word: a "no match" for a person the analyst did not mean."""
    person_file = tmp_path / "person.txt"
    person_file.write_text("# custody 24/118\ngiven_name=Denise\nsurname=Hudson\ngiven_name=Dee\n")
    with dead_port() as port:  # never reached: each is refused before anything is sent
        _refused_before_sending(_query(f"127.0.0.1:{port}", "t" * 24, "walk", secret_file),
                                person_file, capsys)  # fmt: skip


def _refused_before_sending(
    query: list[str], person_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*query, "--person-file", str(person_file)]) == 2
    assert (
        f"Error: --person-file {person_file}, line 4: given_name again (line 2 gave it); "
        "nothing was sent: give each field once"
    ) in capsys.readouterr().err
    assert main([*query, "--field", "surname=Hudson", "--surname", "Hutson"]) == 2
    err = capsys.readouterr().err
    assert "surname given twice (--field surname and --surname); nothing was sent" in err
    assert main([*query, "--field", "dob=1969-05-11", "--field", "dob=1969-11-05"]) == 2
    assert "dob given twice (--field dob and --field dob)" in capsys.readouterr().err


def test_the_24_hour_quotas_refusal_says_when_to_ask_again() -> None:
    """Before, it said "try again later" (the minute's refusal says in how many seconds): an
    analyst could not tell a wait of minutes from one of a day."""
    meter, quota = QueryMeter(), QueryQuota(per_minute=1_000, per_day=4)
    meter.take("trial", "north", 3, quota, now=0.0)
    meter.take("trial", "north", 1, quota, now=3_600.0)
    with pytest.raises(ResourceExhausted) as refused:
        meter.take("trial", "north", 2, quota, now=7_200.0)
    # The 3 of minute 0 leave the window 1,440 minutes on: 22 hours after the refusal.
    assert (
        "has queried 4, so these 2 would exceed it; try again in about 22 h 0 min, once "
        "enough of them are 24 hours old, or ask the operator" in str(refused.value)
    )
    with pytest.raises(ResourceExhausted, match=r"try again in about 60 s, once"):
        meter.take("trial", "north", 1, quota, now=86_340.0)  # minute 0 ages out at 86,400
    meter.take("trial", "north", 1, quota, now=86_400.0)


def test_s1s_query_limit_refusal_says_when_to_ask_again() -> None:
    """S1's and S2's own limit said "try again later" too, a member's or a project's."""
    s1 = QueryCounter(QueryLimits(member=Limit(2, "day")), role="S1")
    s1.admit("p/north@a/a", "p", "north", 1, now=0.0)
    s1.admit("p/north@b/b", "p", "north", 1, now=3_600.0)
    with pytest.raises(ResourceExhausted) as refused:
        s1.admit("p/north@c/c", "p", "north", 1, now=7_200.0)
    assert "try again in about 22 h 0 min, once enough of them have left the window" in str(
        refused.value
    )
    s2 = QueryCounter(QueryLimits(Limit(10, "hour"), Limit(2, "hour")), role="S2")
    s2.admit("p/north@a/a", "p", "north", 1, now=0.0)
    s2.admit("p/south@b/b", "p", "south", 1, now=600.0)
    with pytest.raises(ResourceExhausted, match=r"all its members.*try again in about 40 min,"):
        s2.admit("p/west@c/c", "p", "west", 1, now=1_200.0)
