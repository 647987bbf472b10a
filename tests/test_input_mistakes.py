"""A careless user's mistakes in a mapping, a schema and option values, each run as the user
runs it (`python -m blindmatch`, its own process): exit 2, one `Error:` (or argparse) line
naming the file and key or the option, with the fix where it is known; never a traceback,
and nothing written.

The walk that found them (2026-12-07, inputwalk) is in CHANGELOG.md; the mistakes it found
already handled are covered by the tests of their own modules.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import NORTH_CSV, NORTH_MAP, PERSON_SCHEMA, ROOT, STRONG_SECRET


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`python -m blindmatch ARGS` as its own process: what a user's shell would see."""
    return subprocess.run(
        [sys.executable, "-m", "blindmatch", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=120,
    )


def refused(done: subprocess.CompletedProcess[str], *said: str) -> None:
    """Exit 2, no traceback, and each of `said` in what the user read."""
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    for words in said:
        assert words in done.stderr


@pytest.fixture
def member(tmp_path: Path) -> Path:
    """A member's folder as a user has it: the export, the secret, the schema."""
    (tmp_path / "north.csv").write_text(NORTH_CSV)
    (tmp_path / "linkage.secret").write_text(STRONG_SECRET + "\n")
    (tmp_path / "schema.json").write_text(PERSON_SCHEMA.read_text())
    return tmp_path


DOB_LINE = 'dob = { column = "DOB", date_format = "%d/%m/%Y" }'


@pytest.mark.parametrize(
    ("date_format", "said"),
    [
        # Written as a spreadsheet writes a format (was: "must be a strptime format such as
        # '%d/%m/%Y'", whatever the format meant): the format meant, in strptime's terms.
        (
            '"DD/MM/YYYY"',
            "date_format 'DD/MM/YYYY' is not a strptime format: write it as '%d/%m/%Y'",
        ),
        (
            '["%d/%m/%Y", "yyyy-mm-dd"]',
            "'yyyy-mm-dd' is not a strptime format: write it as '%Y-%m-%d'",
        ),
        ('"DD-MON-YYYY"', "write it as '%d-%b-%Y'"),
        # No year (was: encoded, every date invalid, or read as in 1900): refused.
        ('"%d/%m"', "date_format '%d/%m' has no year (%Y or %y)"),
        # A directive strptime lacks (was: accepted, since strftime writes it as it is).
        ('"%d/%m/%Q"', "'%d/%m/%Q' is not a strptime format ('Q' is a bad directive"),
    ],
)
def test_a_date_format_that_cannot_read_dates_is_refused_naming_the_format_meant(
    member: Path, date_format: str, said: str
) -> None:
    mapping = member / "north.toml"
    mapping.write_text(NORTH_MAP.replace(DOB_LINE, f'dob = {{ column = "DOB", date_format = '
                                         f"{date_format} }}"))  # fmt: skip
    done = run_cli(
        "encode", "north.csv", "--schema", "schema.json", "--secret-file", "linkage.secret",
        "--mapping", "north.toml", "--out", "north.encoded", cwd=member,
    )  # fmt: skip
    refused(done, "north.toml: fields.dob: ", said)
    assert not (member / "north.encoded").exists()


@pytest.mark.parametrize("option", ["--dob-format", "--date-format"])
def test_a_query_date_format_option_is_checked_as_the_mapping_s_is(
    member: Path, option: str
) -> None:
    """Was: taken as given, and the date refused as 'not a date in the format DD/MM/YYYY'
    (exit 2, but the fix unsaid, and only once the matcher had been connected to)."""
    done = run_cli(
        "query", "--project", "trial", "--token", "t", "--schema", "schema.json",
        "--secret-file", "linkage.secret", "--purpose", "case 1", "--surname", "Smith",
        "--dob", "17/11/1990", option, "DD/MM/YYYY", "--server", "127.0.0.1:9",
        cwd=member,
    )  # fmt: skip
    refused(done, f"argument {option}: 'DD/MM/YYYY' is not a strptime format: write it as "
            "'%d/%m/%Y'")  # fmt: skip


@pytest.mark.parametrize(
    ("option", "value", "said"),
    [
        # Was: a thread pool of -2 workers, failing the first run (0 meant all cores, unsaid).
        ("--workers", "-2", "give a whole number of at least 1"),
        ("--workers", "0", "give a whole number of at least 1"),
        # Was: a traceback (ValueError: lookup_threads: 0 or more).
        ("--lookup-threads", "-1", "give a whole number of at least 0"),
        # Was: a traceback (cannot convert float NaN to integer); a negative size was taken.
        ("--min-free-mb", "nan", "give a number of 0 or more"),
        ("--min-free-mb", "-5", "give a number of 0 or more"),
    ],
)
def test_serve_refuses_a_count_or_size_out_of_range_before_it_starts(
    tmp_path: Path, option: str, value: str, said: str
) -> None:
    done = run_cli(
        "serve", "--data-dir", "data", "--listen", "127.0.0.1:9", f"{option}={value}",
        cwd=tmp_path,
    )  # fmt: skip
    refused(done, f"argument {option}: {value}: {said}")
    assert not (tmp_path / "data").exists()


def test_a_schema_that_is_a_json_list_is_said_to_be_one(member: Path) -> None:
    """Was: `version is 'list', expected 3`, as though the file had a version of 'list'."""
    (member / "north.toml").write_text(NORTH_MAP)
    (member / "schema.json").write_text(json.dumps([{"version": 3}]))
    done = run_cli(
        "encode", "north.csv", "--schema", "schema.json", "--secret-file", "linkage.secret",
        "--mapping", "north.toml", "--out", "north.encoded", cwd=member,
    )  # fmt: skip
    refused(done, "schema.json: not a clkhash v3 linkage schema (the file holds a JSON list, "
            "not an object")  # fmt: skip
    assert not (member / "north.encoded").exists()


@pytest.mark.parametrize("command", ["results", "report"])
def test_results_and_report_say_that_an_existing_out_file_is_replaced(
    tmp_path: Path, command: str
) -> None:
    """They replace it (atomically, the old file kept on failure); that was unsaid."""
    done = run_cli(command, "--help", cwd=tmp_path)
    assert done.returncode == 0
    assert "an existing file is replaced" in " ".join(done.stdout.split())


@pytest.mark.parametrize(
    ("args", "said"),
    [
        # Was: a traceback (ValueError: Value out of range: -5, building the request).
        (["admin", "query-limits", "--project", "p", "--per-minute", "-5"],
         "argument --per-minute: -5: give a whole number of at least 1"),
        # Was: taken, and the limit silently kept (0 on the wire keeps the current one).
        (["admin", "query-limits", "--project", "p", "--per-day", "0"],
         "argument --per-day: 0: give a whole number of at least 1"),
        (["admin", "query-limits", "--project", "p", "--per-day", str(2**64)],
         "give a whole number of at most 18,446,744,073,709,551,615"),
        # Was: a traceback (the request's uint32 out of range).
        (["admin", "query-report", "--project", "p", "--hours", "-3"],
         "argument --hours: -3: give a whole number of at least 1"),
        # Was: "invalid _positive_int value: 'many'", naming a function of the code.
        (["watch", "--project", "p", "--token", "t", "--schema", "s.json", "--secret-file",
          "k", "--purpose", "c", "--surname", "Smith", "--count", "many"],
         "argument --count: many: not a whole number"),
        (["watch", "--project", "p", "--token", "t", "--schema", "s.json", "--secret-file",
          "k", "--purpose", "c", "--surname", "Smith", "--timeout", "soon"],
         "argument --timeout: soon: not a number of seconds"),
        # Was: a traceback (StopIteration: a synthetic member given no records).
        (["demo", "--records", "10"], "argument --records: 10: give a whole number of at "
         "least 100"),
        # Was: taken, and the combiner connected to (exit 4 here, none running).
        (["two-server", "run", "--combiner", "127.0.0.1:9", "--key-file", "k", "--threshold",
          "1.5", "--out", "links.csv"], "argument --threshold: 1.5: give a number above 0"),
        (["two-server", "run", "--combiner", "127.0.0.1:9", "--key-file", "k", "--threshold",
          "0.8", "--bucket", "2", "--out", "links.csv"], "argument --bucket: 2: give a number "
         "above 0"),
    ],
)  # fmt: skip
def test_a_count_out_of_range_is_told_as_the_option_s_own_mistake(
    tmp_path: Path, args: list[str], said: str
) -> None:
    """Refused by argparse, before anything is connected to or made: none is running here."""
    server = [] if args[0] in ("demo", "two-server") else ["--server", "127.0.0.1:9"]
    done = run_cli(*args, *server, cwd=tmp_path)
    refused(done, said)
    assert "_positive" not in done.stderr


@pytest.mark.parametrize("secret", ["", "\n\n"])
def test_an_empty_secret_file_is_told_the_command_that_makes_one(member: Path, secret: str) -> None:
    """Was: `python3 -c 'import secrets; ...'`, where a too-short secret was already told
    `blindmatch secret new`, which writes it owner-only and gives its id to compare."""
    (member / "north.toml").write_text(NORTH_MAP)
    (member / "linkage.secret").write_text(secret)
    done = run_cli(
        "encode", "north.csv", "--schema", "schema.json", "--secret-file", "linkage.secret",
        "--mapping", "north.toml", "--out", "north.encoded", cwd=member,
    )  # fmt: skip
    refused(done, "linkage.secret: the secret file is empty", "`blindmatch secret new FILE`")
    assert not (member / "north.encoded").exists()
