"""A date of birth no living person has (after today, or more than 150 years ago: a century
mistyped) is an invalid value: encoded as missing and counted in the encode report by row,
and an error for `query` and `watch`, as an unreadable date already was. Before, it was
encoded and compared as any other date."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blindmatch.cli import main
from blindmatch.client import ProjectTokens
from blindmatch.client.encoding.datetext import MAX_AGE
from blindmatch.client.encoding.encode import encode_csv
from blindmatch.client.encoding.mapping import load_mapping
from blindmatch.client.encoding.normalise import (
    PLACEHOLDER_DATES,
    FieldRule,
    InvalidValue,
    normalise_value,
)
from blindmatch.client.encoding.schema import load_schema
from tests.support import NORTH_CSV, NORTH_MAP, PERSON_SCHEMA, PURPOSE, Matcher, Org, encode_cli

DOB = FieldRule("dob", "date", date_format="%Y-%m-%d")


def anniversary(day: date, years: int) -> date:
    """`day`, `years` later (29 February, in a year without one: the 28th)."""
    try:
        return day.replace(year=day.year + years)
    except ValueError:
        return day.replace(year=day.year + years, day=28)


@given(
    st.dates(min_value=date(1000, 1, 1), max_value=date(9998, 12, 31)).filter(
        lambda day: day not in PLACEHOLDER_DATES  # (01/01/1900: missing, not invalid)
    ),
    st.dates(min_value=date(1900, 1, 1), max_value=date(2200, 12, 31)),
)
def test_a_date_of_birth_reads_only_on_or_before_the_day_read_and_within_150_years(
    day: date, today: date
) -> None:
    if day <= today and anniversary(day, MAX_AGE) >= today:
        assert normalise_value(DOB, day.isoformat(), "%Y-%m-%d", today) == day.isoformat()
        return
    said = "after today" if day > today else f"more than {MAX_AGE} years ago"
    with pytest.raises(InvalidValue, match=f"reads as {day.isoformat()}, {said}: no living"):
        normalise_value(DOB, day.isoformat(), "%Y-%m-%d", today)


def test_the_bounds_are_the_day_read_and_150_years_before_it_to_the_day() -> None:
    today = date(2026, 12, 7)
    for day, ok in (
        (today, True), (today + timedelta(days=1), False),
        (date(1876, 12, 7), True), (date(1876, 12, 6), False),
    ):  # fmt: skip
        try:
            normalise_value(DOB, day.strftime("%d/%m/%Y"), "%d/%m/%Y", today)
        except InvalidValue:
            assert not ok, day
        else:
            assert ok, day
    # Without a day given, today's date.
    with pytest.raises(InvalidValue, match="after today"):
        normalise_value(DOB, (date.today() + timedelta(days=2)).isoformat())


# A year and more ahead, and older than anyone: whatever day the test runs on (and across
# midnight), each is out of bounds.
FUTURE = (date.today() + timedelta(days=400)).strftime("%d/%m/%Y")
ANCIENT = "14/10/1066"


def test_an_export_with_a_date_of_birth_to_come_or_too_old_counts_it_invalid_by_row(
    tmp_path: Path, secret_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mapping = tmp_path / "north.toml"
    mapping.write_text(NORTH_MAP)
    future = NORTH_CSV.replace("17/11/1990", FUTURE).replace("05/05/1965", ANCIENT)
    blank = NORTH_CSV.replace("17/11/1990", "").replace("05/05/1965", "")
    (tmp_path / "north.csv").write_text(future)
    (tmp_path / "blank.csv").write_text(blank)
    org = Org(tmp_path / "north.csv", mapping)
    out = tmp_path / "north.encoded"
    assert encode_cli(org, secret_file, out) == 0
    printed = capsys.readouterr().out
    assert "invalid dob at row 3" in printed and "invalid dob at row 5" in printed, printed
    report = json.loads((out / "local" / "report.json").read_text())
    dob = next(f for f in report["fields"] if f["field"] == "dob")
    assert (dob["present"], dob["invalid"]) == (2, 3)  # (and 30/02/1970, row 4)
    reasons = {r["row"]: r["reason"] for r in dob["invalid_rows"]}
    assert "after today: no living person's date of birth" in reasons[3]
    assert f"more than {MAX_AGE} years ago: no living person's date of birth" in reasons[5]
    # No other date_format is suggested for dates the mapping's own reads (it read them).
    assert not [w for w in report["warnings"] if "declare" in w], report["warnings"]
    # Encoded as missing: the same CLKs as the export with those dates blank.
    schema = load_schema(PERSON_SCHEMA)
    clks = [
        encode_csv(path, schema, load_mapping(mapping, schema), b"k").clks
        for path in (org.csv, tmp_path / "blank.csv")
    ]
    assert clks[0] == clks[1]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (FUTURE, "after today: no living person's date of birth"),
        (ANCIENT, f"more than {MAX_AGE} years ago: no living person's date of birth"),
    ],
)
def test_a_query_for_a_date_of_birth_no_one_has_is_an_error_naming_the_field(
    matcher: Matcher,
    project: ProjectTokens,
    secret_file: Path,
    capsys: pytest.CaptureFixture[str],
    value: str,
    reason: str,
) -> None:
    query = ["query", "--project", "trial", "--token", project.tokens["north"], "--quiet"]
    query += ["--server", matcher.target, "--schema", str(PERSON_SCHEMA)]
    query += ["--secret-file", str(secret_file), "--purpose", PURPOSE]
    code = main([*query, "--given-name", "Peter", "--surname", "Nowak", "--dob", value])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert captured.err.startswith(f"Error: cannot read the person to query: dob: {value!r} ")
    assert reason in captured.err and "nothing was queried" in captured.err
    assert "--dob-format" not in captured.err  # (it was read: its format is not the problem)
