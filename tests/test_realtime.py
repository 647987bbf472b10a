"""Real-time hit/no-hit: standing indexes and instant queries, against a real matcher."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path

import grpc
import numpy as np
import pytest

from blindmatch.cli import main
from blindmatch.client import MatcherClient, ProjectTokens
from blindmatch.client.encoding.encode import read_secret
from blindmatch.client.encoding.encoded import Encoded
from blindmatch.client.encoding.refs import load_ref_key, plan_sync, resolve_refs, row_refs
from blindmatch.client.errors import NotFoundError, RejectedError
from blindmatch.client.remote.index import SyncPart, sync_index
from blindmatch.matcher.core.index import MemberIndex, as_words, search
from blindmatch.matcher.core.solve import dice
from blindmatch.matcher.server import create_server
from blindmatch.protos import blindmatch_pb2 as pb
from blindmatch.protos import blindmatch_pb2_grpc as pb_grpc
from tests.support import (
    ADMIN_TOKEN,
    GRACE,
    KEY,
    PERSON_SCHEMA,
    PETER,
    PURPOSE,
    Matcher,
    Org,
    ask,
    encode,
    index_all,
    low_change_limit,
    orgs_encoded,
    person,
    uploaded_and_run,
)

encoded = orgs_encoded  # the fixture: each org encoded with the test secret


# -- the core promise -------------------------------------------------------------------------


def test_add_query_remove_query(
    matcher: Matcher, project: ProjectTokens, encoded: dict[str, Encoded], secret_file: Path
) -> None:
    grace = person(secret_file, **GRACE)
    with matcher.member(project.tokens["south"]) as south:
        index_all(south, "trial", encoded["south"])
    with matcher.member(project.tokens["north"]) as north:
        assert ask(north, "trial", grace) == ["south"]
    with matcher.member(project.tokens["south"]) as south:
        [grace_ref] = row_refs(["S-13"], KEY)
        summary = south.change_index(
            "trial", clk_bits=grace[1], fingerprint=grace[2], removes=[grace_ref]
        )
        assert (summary.removed, summary.record_count) == (1, 3)
    with matcher.member(project.tokens["north"]) as north:
        assert ask(north, "trial", grace) == []  # visible to the very next query


def test_a_query_is_answered_only_from_partners_indexes(
    matcher: Matcher, project: ProjectTokens, encoded: dict[str, Encoded], secret_file: Path
) -> None:
    with matcher.member(project.tokens["north"]) as north:
        index_all(north, "trial", encoded["north"])
        grace = person(secret_file, **GRACE)
        answer = north.query(
            "trial", grace[0], clk_bits=grace[1], fingerprint=grace[2], purpose=PURPOSE
        )
    assert answer.partners == []  # its own index is not searched for itself
    assert answer.results == [[]]


def test_the_cli_maintains_the_index_and_queries_a_person(
    matcher: Matcher,
    project: ProjectTokens,
    encoded: dict[str, Encoded],
    secret_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = ["--server", matcher.target]  # (-q: `index` says nothing; tests/test_quiet.py)
    ref_key = tmp_path / "south.refkey"
    south = ["--project", "trial", "--token", project.tokens["south"], "--ref-key", str(ref_key)]
    assert main(["index", "sync", str(encoded["south"].path), *south, *server]) == 0
    assert (
        "4 added, 0 replaced, 0 removed; the index now holds 4 records" in capsys.readouterr().out
    )
    assert ref_key.exists()  # made on first use
    assert main(["index", "sync", str(encoded["south"].path), *south, *server]) == 0
    assert "0 added, 0 replaced, 0 removed" in capsys.readouterr().out  # nothing changed

    query = ["query", "--project", "trial", "--token", project.tokens["north"], *server]
    query += ["--schema", str(PERSON_SCHEMA), "--secret-file", str(secret_file)]
    query += ["--purpose", PURPOSE]
    # Written differently from south's export: same normalised person.
    assert main([*query, "--given-name", "ZOLTÁN", "--surname", "Kovács", "--dob", "1965-05-05",
                 "--field", "postcode=CF10 1AA", "--sex", "male"]) == 0  # fmt: skip
    assert "query: held by south" in capsys.readouterr().out

    assert main(["index", "remove", "S-11", *south, *server]) == 0
    assert "1 removed; the index now holds 3 records" in capsys.readouterr().out
    assert main([*query, "--given-name", "Zoltan", "--surname", "Kovacs", "--dob", "1965-05-05",
                 "--field", "postcode=CF10 1AA", "--sex", "M"]) == 0  # fmt: skip
    assert "query: no partner match disclosed" in capsys.readouterr().out


def test_a_query_takes_its_token_and_person_from_files_not_the_command_line(
    matcher: Matcher,
    project: ProjectTokens,
    encoded: dict[str, Encoded],
    secret_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 16: a token or a person's details on the command line are visible in `ps`."""
    with matcher.member(project.tokens["south"]) as south:
        index_all(south, "trial", encoded["south"])
    token_file = tmp_path / "north.token"
    token_file.write_text(project.tokens["north"] + "\n")
    person = tmp_path / "grace.txt"
    person.write_text("# the person asked about\ngiven_name=Grace\nsurname = Hughes\n"
                      "dob=2001-12-12\n\nsex=F\n")  # fmt: skip
    query = ["query", "--project", "trial", "--token-file", str(token_file), "--purpose", PURPOSE,
             "--schema", str(PERSON_SCHEMA), "--secret-file", str(secret_file),
             "--server", matcher.target, "--quiet"]  # fmt: skip
    assert project.tokens["north"] not in " ".join(query)
    assert main([*query, "--person-file", str(person)]) == 0
    assert "query: held by south" in capsys.readouterr().out
    monkeypatch.setattr("sys.stdin", io.StringIO(person.read_text()))
    assert main([*query, "--person-file", "-"]) == 0
    assert "query: held by south" in capsys.readouterr().out
    monkeypatch.setenv("BLINDMATCH_TOKEN", project.tokens["north"])  # the other way in
    no_file = [a for a in query if a not in ("--token-file", str(token_file))]
    assert main([*no_file, "--person-file", str(person)]) == 0
    assert "query: held by south" in capsys.readouterr().out

    person.write_text("given_name=Grace\nHughes\n")
    assert main([*query, "--person-file", str(person)]) == 2
    assert f"--person-file {person}, line 2: expected NAME=VALUE" in capsys.readouterr().err
    assert main([*query, "--person-file", str(person), "--surname", "Hughes"]) == 2
    assert "not both" in capsys.readouterr().err
    person.write_text("surname=Hughes\n")
    assert main([*query, "--person-file", str(person), "--token", "x"]) == 2
    assert "--token or --token-file, not both" in capsys.readouterr().err
    empty = tmp_path / "empty.token"
    empty.write_text("\n")
    assert main([*no_file, "--token-file", str(empty), "--person-file", str(person)]) == 2
    assert f"--token-file {empty}: expected one token" in capsys.readouterr().err


def test_a_small_csv_is_queried_through_the_members_mapping(
    matcher: Matcher,
    project: ProjectTokens,
    encoded: dict[str, Encoded],
    orgs: dict[str, Org],
    secret_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with matcher.member(project.tokens["south"]) as south:
        index_all(south, "trial", encoded["south"])
    out = tmp_path / "answer.csv"
    args = ["query", str(orgs["north"].csv), "--mapping", str(orgs["north"].mapping)]
    args += ["--schema", str(PERSON_SCHEMA), "--secret-file", str(secret_file)]
    args += ["--purpose", PURPOSE, "--project", "trial", "--token", project.tokens["north"]]
    args += ["--out", str(out), "--server", matcher.target, "--quiet"]
    # N3's date of birth (30/02/1970) cannot be read: the query is refused, not answered
    # "no match" for a person it could not read.
    assert main(args) == 2
    said = capsys.readouterr().err
    assert "row 4, column DOB (dob): '30/02/1970' matches %d/%m/%Y but is not a real date" in said
    assert not out.exists()
    text = orgs["north"].csv.read_text(encoding="utf-8").replace("30/02/1970", "")
    orgs["north"].csv.write_text(text, encoding="utf-8")
    # --out a folder: refused before the query is asked (before, asked, logged and counted,
    # and then its answer could not be written).
    assert main([*args[:-5], "--out", str(tmp_path), *args[-3:]]) == 2
    assert f"{tmp_path}: is a folder; give the name" in capsys.readouterr().err
    with matcher.operator() as op:
        assert sum(v.queries + v.refused for v in op.query_report("trial")) == 0
    assert main(args) == 0
    lines = out.read_text().splitlines()
    assert lines == [
        "record_id,partner,partner_ref,score",
        "N1,south,,",
        "N4,south,,",
        "N5,south,,",
    ]


def test_a_csv_row_with_nothing_usable_is_refused_before_anything_is_sent(
    matcher: Matcher,
    project: ProjectTokens,
    orgs: dict[str, Org],
    secret_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """As one person with nothing usable is (`encode_person`): a CSV row whose every value is
    blank once normalised was sent, counted and answered "compared on: nothing"; now the
    query is refused, exit 2, naming the file and the rows (the first 10, then how many more),
    and the matcher on loopback receives nothing."""
    lines = orgs["north"].csv.read_text(encoding="utf-8").splitlines()
    kept = [line for line in lines if not line.startswith("N3,")]  # its date is unreadable
    blank = [f"E{i},N/A,-,,?," for i in range(12)]  # rows 6-17
    people = tmp_path / "people.csv"
    people.write_text("\n".join([*kept, *blank]) + "\n", encoding="utf-8")
    args = ["query", str(people), "--mapping", str(orgs["north"].mapping), "--schema",
            str(PERSON_SCHEMA), "--secret-file", str(secret_file), "--purpose", PURPOSE,
            "--project", "trial", "--token", project.tokens["north"], "--server", matcher.target,
            "--json"]  # fmt: skip
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"{people}: 12 records to query have no usable value" in captured.err
    assert "(row 6, 7, 8, 9, 10, 11, 12, 13, 14, 15 and 2 more: every mapped column" in captured.err
    assert "nothing was queried" in captured.err
    with matcher.operator() as op:
        assert sum(v.queries + v.refused for v in op.query_report("trial")) == 0
        assert not [e for e in op.audit("trial") if str(e["action"]).startswith("query")]
    # The rows left out, the rest is queried.
    people.write_text("\n".join(kept) + "\n", encoding="utf-8")
    assert main(args) == 0
    assert len(json.loads(capsys.readouterr().out)["results"]) == 4


def test_a_query_reads_uk_dates_and_says_what_it_compared(
    matcher: Matcher,
    project: ProjectTokens,
    encoded: dict[str, Encoded],
    secret_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with matcher.member(project.tokens["south"]) as south:
        index_all(south, "trial", encoded["south"])
    query = ["query", "--project", "trial", "--token", project.tokens["north"], "--quiet"]
    query += ["--server", matcher.target, "--schema", str(PERSON_SCHEMA)]
    query += ["--secret-file", str(secret_file), "--purpose", PURPOSE]
    peter = [*query, "--given-name", "Peter", "--surname", "Nowak", "--sex", "M"]
    # South holds Peter Nowak born 1979-08-14: a UK officer's 14/08/1979 is that date.
    # As many UK police systems show dates, the month in words between hyphens too (refused
    # as unreadable before 2026-12-06).
    written = ("14/08/1979", "14.08.1979", "1979-08-14", "14-AUG-1979", "14-August-1979")
    for dob in (["--dob", day] for day in written):
        assert main([*peter, *dob]) == 0
        assert "query: held by south" in capsys.readouterr().out
    assert main([*peter, "--dob", "08/14/1979", "--dob-format", "%m/%d/%Y"]) == 0
    assert "query: held by south" in capsys.readouterr().out
    # Only the names: the answer says so, so "no match" is not read as "not known".
    assert main([*query, "--given-name", "Grace", "--surname", "Hughes", "--json"]) == 0
    [result] = json.loads(capsys.readouterr().out)["results"]
    assert result["compared_on"] == ["given_name", "surname"]
    assert result["missing"] == ["dob", "sex", "postcode"]
    assert main([*peter, "--postcode", "ZZ99 9ZZ"]) == 0
    assert (
        "(compared on: given name, surname, sex, postcode; missing: date of birth)"
        in capsys.readouterr().out
    )


@pytest.mark.parametrize(
    ("value", "extra", "reason"),
    [
        ("02/13/1975", [], "'02/13/1975' is not a date in the format %Y-%m-%d or"),
        (
            "31/02/1975",
            [],
            "'31/02/1975' matches %d/%m/%Y but is not a real date (February has no day 31)",
        ),
        ("1975-11-02", ["--dob-format", "%d/%m/%Y"], "not a date in the format %d/%m/%Y"),
    ],
)
def test_a_query_value_that_cannot_be_read_is_an_error_not_a_no(
    matcher: Matcher,
    project: ProjectTokens,
    secret_file: Path,
    capsys: pytest.CaptureFixture[str],
    value: str,
    extra: list[str],
    reason: str,
) -> None:
    query = ["query", "--project", "trial", "--token", project.tokens["north"], "--quiet"]
    query += ["--server", matcher.target, "--schema", str(PERSON_SCHEMA)]
    query += ["--secret-file", str(secret_file), "--purpose", PURPOSE]
    code = main([*query, "--given-name", "Peter", "--surname", "Nowak", "--dob", value, *extra])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert captured.err.startswith("Error: cannot read the person to query: dob: ")
    assert reason in captured.err and "nothing was queried" in captured.err


@pytest.mark.parametrize(
    ("person", "said", "not_said"),
    [
        # Every value blank once normalised: it was sent as an all-missing CLK, logged and
        # counted, and answered "no partner match disclosed (compared on: nothing ...)".
        ({"surname": "N/A", "postcode": "-"}, "no value given is usable (surname, postcode:",
         "dates:"),
        # A sex it cannot read was told how to write dates (walk21, 2026-12-06).
        ({"surname": "Nowak", "sex": "Unknown gender"}, "sex: 'Unknown gender' is not one of",
         "dates:"),
        ({"surname": "Nowak", "dob": "02/13/1975"}, "dob: '02/13/1975' is not a date",
         "no value given"),
        # An impossible day: no format reads it, so none is suggested (was "dates: give e.g.").
        ({"surname": "Nowak", "dob": "31/02/1975"},
         "dob: '31/02/1975' matches %d/%m/%Y but is not a real date", "dates:"),
    ],
)  # fmt: skip
def test_a_person_with_nothing_usable_or_a_bad_value_is_refused_as_it_is(
    person: dict[str, str], said: str, not_said: str
) -> None:
    from blindmatch.client.encoding.person import encode_person
    from blindmatch.client.encoding.schema import load_schema
    from blindmatch.client.errors import InputError

    with pytest.raises(InputError) as refused:
        encode_person(load_schema(PERSON_SCHEMA), b"s" * 32, person)
    message = str(refused.value)
    assert message.startswith("cannot read the person to query: ") and said in message
    assert "nothing was queried" in message and not_said not in message


def test_a_sex_code_given_to_query_is_refused_saying_what_it_takes_and_how_codes_are_read(
    matcher: Matcher,
    project: ProjectTokens,
    encoded: dict[str, Encoded],
    secret_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`--sex 1` was refused with no hint: a mapping's `values` (an export's codes) apply to a
    CSV of people queried with it, never to the options; the refusal says so."""
    with matcher.member(project.tokens["south"]) as south:
        index_all(south, "trial", encoded["south"])
    query = ["query", "--project", "trial", "--token", project.tokens["north"], "--quiet"]
    query += ["--server", matcher.target, "--schema", str(PERSON_SCHEMA)]
    query += ["--secret-file", str(secret_file), "--purpose", PURPOSE]
    peter = ["--given-name", "Peter", "--surname", "Nowak", "--dob", "14/08/1979"]
    assert main([*query, *peter, "--sex", "1"]) == 2
    err = capsys.readouterr().err
    assert "sex: '1' is not one of F, M, X; nothing was queried (--sex takes F, M, X" in err
    assert 'a mapping that says what each means: values = { "1" = "M", "2" = "F"' in err
    people, mapping = tmp_path / "people.csv", tmp_path / "people.toml"
    people.write_text("id,First,Last,Born,Gender\np1,Peter,Nowak,1979-08-14,1\n", encoding="utf-8")
    fields = 'given_name = "First"\nsurname = "Last"\ndob = "Born"\n'
    mapping.write_text(f'id = "id"\n[fields]\n{fields}sex = "Gender"\n', encoding="utf-8")
    assert main([*query, str(people), "--mapping", str(mapping)]) == 2
    err = capsys.readouterr().err
    assert "for sex's codes, say what each means with values = {" in err and "people.toml" in err
    assert "date_format" not in err  # (it was told how to declare dates, for a sex code)
    coded = 'sex = { column = "Gender", values = { "1" = "M", "2" = "F" } }\n'
    mapping.write_text(f'id = "id"\n[fields]\n{fields}{coded}', encoding="utf-8")
    assert main([*query, str(people), "--mapping", str(mapping)]) == 0
    assert "p1: held by south" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("given", "named"),
    [
        (["--surname", "Now\x85ak"], "--surname: 'Now\\x85ak' holds U+0085"),
        (["--field", "surname=Now\x9bak"], "--field surname: 'Now\\x9bak' holds U+009B"),
        (["--person-file", "PERSON"], "surname in --person-file PERSON: 'Now\\x85ak' holds"),
        # (a value over the csv module's cell limit named the file as well)
        (["--person-file", "LONG"], "surname in --person-file LONG: 200000 characters, more"),
    ],
)
def test_a_garbled_query_value_names_its_option_not_a_temporary_file(
    secret_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    given: list[str],
    named: str,
) -> None:
    """A C1 control character in a value given as an option named the query's temporary
    CSV (/tmp/blindmatch-query-.../query.csv, row 2); it names the option."""
    person = tmp_path / "person.txt"  # (U+0085 is a line end to str.splitlines())
    person.write_text("given_name=Peter\nsurname=Now\x85ak\n", encoding="utf-8")
    long = tmp_path / "long.txt"
    long.write_text(f"given_name=Peter\nsurname={'a' * 200_000}\n", encoding="utf-8")
    given = [{"PERSON": str(person), "LONG": str(long)}.get(g, g) for g in given]
    query = ["query", "--project", "trial", "--token", "bm_unused", "--quiet"]
    query += ["--server", "127.0.0.1:9", "--schema", str(PERSON_SCHEMA)]  # (not reached)
    query += ["--secret-file", str(secret_file), "--purpose", PURPOSE]
    peter = [] if "--person-file" in given else ["--given-name", "Peter"]
    assert main([*query, *peter, *given]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Error: cannot read the person to query: "), err
    named = named.replace("PERSON", str(person)).replace("LONG", str(long))
    assert named in err and "nothing was queried" in err
    assert "query.csv" not in err and "blindmatch-query-" not in err and "row 2" not in err


@pytest.mark.parametrize(
    ("given", "named"),
    [
        (["--surname", "Now\udc85ak"], "--surname: holds byte 0x85"),
        (["--surname", "Nowak", "--purpose=case\udce9"], "--purpose: holds byte 0xE9"),
        (["--field", "surname=Now\udc85ak"], "--field: holds byte 0x85"),
    ],
)
def test_a_query_value_in_bytes_that_are_not_utf8_is_named_not_a_traceback(
    matcher: Matcher,
    project: ProjectTokens,
    secret_file: Path,
    capsys: pytest.CaptureFixture[str],
    given: list[str],
    named: str,
) -> None:
    """argv's bytes that are not UTF-8 (a latin-1 terminal; Python keeps them as surrogates)
    ended `query` in a UnicodeEncodeError traceback where it sent them as text."""
    query = ["query", "--project", "trial", "--token", project.tokens["north"], "--quiet"]
    query += ["--server", matcher.target, "--schema", str(PERSON_SCHEMA)]
    query += ["--secret-file", str(secret_file), "--purpose", PURPOSE]
    assert main([*query, "--given-name", "Peter", *given]) == 2
    err = capsys.readouterr().err
    why = "the terminal or script passed it in another encoding"
    assert err == f"Error: {named}, which is not UTF-8 text ({why}): give it as UTF-8\n"
    with matcher.operator() as op:
        assert not [e for e in op.audit("trial") if str(e["action"]).startswith("query")]


# -- disclosure -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        ("count", []),
        ("hits", [("south", 0, 0)]),
        ("mapping", [("south", 1, 0)]),
        ("scores", [("south", 1, 1)]),
    ],
)
def test_answers_follow_the_disclosure_level(
    matcher: Matcher,
    encoded: dict[str, Encoded],
    secret_file: Path,
    level: str,
    expected: list[tuple[str, int, int]],
) -> None:
    with matcher.operator() as op:
        project = op.create_project(f"rt-{level}", ["north", "south"], disclosure=level)
    with matcher.member(project.tokens["south"]) as south:
        index_all(south, project.project, encoded["south"])
    grace = person(secret_file, **GRACE)
    with matcher.member(project.tokens["north"]) as north:
        answer = north.query(
            project.project, grace[0], clk_bits=grace[1], fingerprint=grace[2], purpose=PURPOSE
        )
    assert [(m.partner, len(m.refs), len(m.scores)) for m in answer.results[0]] == expected
    assert answer.counts == {"south": 1}
    assert answer.partner_levels == {"south": level}
    if level in ("mapping", "scores"):
        # The partner's ref leads back to its own record, for the follow-up.
        ref = answer.results[0][0].refs[0]
        assert resolve_refs(encoded["south"], KEY)[ref] == "S-13"


def test_a_count_partner_never_reveals_which_record_it_holds(
    matcher: Matcher, encoded: dict[str, Encoded], secret_file: Path
) -> None:
    with matcher.operator() as op:
        project = op.create_project("counted", ["north", "south"], disclosure="count")
    with matcher.member(project.tokens["south"]) as south:
        index_all(south, "counted", encoded["south"])
    people = [person(secret_file, **GRACE), person(secret_file, **PETER)]
    people.append(person(secret_file, given_name="Nobody", surname="Atall", dob="1900-01-01"))
    clk_bits, fingerprint = people[0][1], people[0][2]
    with matcher.member(project.tokens["north"]) as north:
        answer = north.query(
            "counted",
            [p[0] for p in people],
            clk_bits=clk_bits,
            fingerprint=fingerprint,
            purpose=PURPOSE,
        )
    assert answer.results == [[], [], []]
    assert answer.counts == {"south": 2}


# -- the batch runs' fallback rule ----------------------------------------------------------

# Grace Hughes as north holds her below: no date of birth, no postcode. South's record has
# both. Scored on the fallback CLKs, as a batch run scores a pair when either record lacks
# the date, she is a match (Dice ~0.87); scored on the whole CLK (first and fallback side by
# side, as queries were before) only ~0.78, under the project's 0.8.
GRACE_NO_DOB = {"given_name": "Grace", "surname": "Hughes", "sex": "F"}


def test_a_query_without_a_date_of_birth_finds_the_record_a_batch_run_links(
    matcher: Matcher,
    project: ProjectTokens,
    orgs: dict[str, Org],
    secret_file: Path,
    tmp_path: Path,
) -> None:
    csv = orgs["north"].csv
    csv.write_text(
        csv.read_text().replace("N5,Grace,Hughes,12/12/2001,F,EH1 9ZZ", "N5,Grace,Hughes,,F,")
    )
    secret = read_secret(secret_file)
    encoded = {n: encode(o, tmp_path / f"{n}.encoded", secret) for n, o in orgs.items()}
    assert encoded["south"].fallback_bits == 1024
    uploaded_and_run(matcher, project, encoded)
    with matcher.member(project.tokens["north"]) as north:
        assert 4 in {h.row for h in north.results("trial").hits}  # N5, linked to south
    with matcher.member(project.tokens["south"]) as south:
        index_all(south, "trial", encoded["south"])
    grace = person(secret_file, **GRACE_NO_DOB)
    with matcher.member(project.tokens["north"]) as north:
        assert ask(north, "trial", grace) == ["south"]
    # What the query was answered on before: the whole CLK misses her.
    south_clks = np.frombuffer(b"".join(encoded["south"].iter_chunks(4)), np.uint8).reshape(4, -1)
    assert dice(np.frombuffer(grace[0], np.uint8)[None, :], south_clks[3:4])[0] < 0.8


# -- durability -----------------------------------------------------------------------------


@pytest.mark.server
def test_the_index_survives_a_restart(
    tmp_path: Path, encoded: dict[str, Encoded], secret_file: Path
) -> None:
    data_dir = tmp_path / "data"
    server = create_server("127.0.0.1:0", data_dir, "admin")
    target = f"127.0.0.1:{server.port}"
    with MatcherClient(target, "admin") as op:
        project = op.create_project("durable", ["north", "south"])
    with MatcherClient(target, project.tokens["south"]) as south:
        index_all(south, "durable", encoded["south"])
        [peter] = row_refs(["S-12"], KEY)
        south.change_index(
            "durable", clk_bits=1024, fingerprint=encoded["south"].fingerprint, removes=[peter]
        )
    server.stop(grace=None)

    server = create_server("127.0.0.1:0", data_dir, "admin")
    target = f"127.0.0.1:{server.port}"
    try:
        with MatcherClient(target, project.tokens["north"]) as north:
            assert ask(north, "durable", person(secret_file, **GRACE)) == ["south"]
            assert ask(north, "durable", person(secret_file, **PETER)) == []
            # Still searched by the fallback rule (the index's fallback CLK is remembered).
            assert ask(north, "durable", person(secret_file, **GRACE_NO_DOB)) == ["south"]
        with MatcherClient(target, project.tokens["south"]) as south:
            assert len(south.list_index("durable")) == 3
    finally:
        server.stop(grace=None)


def test_the_matcher_keeps_no_copy_of_a_query(
    matcher: Matcher, project: ProjectTokens, encoded: dict[str, Encoded], secret_file: Path
) -> None:
    with matcher.member(project.tokens["south"]) as south:
        index_all(south, "trial", encoded["south"])
    stranger = person(secret_file, given_name="Ottoline", surname="Quist", dob="1951-07-30")
    with matcher.member(project.tokens["north"]) as north:
        assert ask(north, "trial", stranger) == []
    matcher.server.realtime.query_log.flush()
    for path in matcher.data_dir.rglob("*"):
        if path.is_file():
            assert stranger[0] not in path.read_bytes(), f"{path} holds the queried CLK"


# -- abuse resistance -------------------------------------------------------------------------


def test_the_quota_refuses_with_resource_exhausted(
    matcher: Matcher,
    project: ProjectTokens,
    encoded: dict[str, Encoded],
    secret_file: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with matcher.operator() as op:
        op.set_query_limits("trial", member="north", per_day=3)  # its minute: 1,000
    grace = person(secret_file, **GRACE)
    with matcher.member(project.tokens["north"]) as north:
        user = north.add_user("trial", "pc-1")  # the member's quota is its users' too
        for _ in range(3):
            ask(north, "trial", grace)
    caplog.set_level("WARNING", logger="blindmatch.matcher.realtime")
    with matcher.member(user) as pc1, pytest.raises(RejectedError) as refused:
        ask(pc1, "trial", grace)
    message = str(refused.value)
    assert "RESOURCE_EXHAUSTED" in message
    assert "query quota: north may query 3 records per 24 hours in project 'trial'" in message
    # The log line and the operator's report name the user whose token was refused.
    assert any("query refused: trial/north (user pc-1), 1 record:" in r.getMessage()
               for r in caplog.records), caplog.text  # fmt: skip
    with matcher.operator() as op:
        [north_row] = [v for v in op.query_report("trial") if v.member == "north"]
    assert (north_row.queries, north_row.refused) == (3, 1)
    assert [(u.user, u.queries, u.refused) for u in north_row.users] == [("pc-1", 0, 1)]
    with matcher.member(project.tokens["south"]) as south:
        ask(south, "trial", grace)  # other members keep their own quota


@pytest.mark.server
def test_a_restart_does_not_reset_a_quota(tmp_path: Path, secret_file: Path) -> None:
    data_dir = tmp_path / "data"
    grace = person(secret_file, **GRACE)
    server = create_server("127.0.0.1:0", data_dir, "admin")
    target = f"127.0.0.1:{server.port}"
    with MatcherClient(target, "admin") as op:
        project = op.create_project("limited", ["north", "south"])
        op.set_query_limits("limited", per_day=2)
    with MatcherClient(target, project.tokens["north"]) as north:
        ask(north, "limited", grace)
        ask(north, "limited", grace)
    server.stop(grace=None)

    server = create_server("127.0.0.1:0", data_dir, "admin")
    target = f"127.0.0.1:{server.port}"
    try:
        with (
            MatcherClient(target, project.tokens["north"]) as north,
            pytest.raises(RejectedError, match="has queried 2, so these 1 would exceed"),
        ):
            ask(north, "limited", grace)
    finally:
        server.stop(grace=None)


def test_the_rate_limit_counts_records_not_requests(
    matcher: Matcher, project: ProjectTokens, secret_file: Path
) -> None:
    with matcher.operator() as op:
        op.set_query_limits("trial", per_minute=2)
    grace = person(secret_file, **GRACE)
    with grpc.insecure_channel(matcher.target) as channel:
        stub = pb_grpc.MatcherStub(channel)
        request = pb.QueryRequest(
            project="trial", purpose=PURPOSE, clk_bits=grace[1], fingerprint=grace[2],
            clks=grace[0] * 3,
        )  # fmt: skip
        with pytest.raises(grpc.RpcError) as err:
            stub.Query(request, metadata=[("authorization", f"Bearer {project.tokens['north']}")])
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "query rate limit: north may query 2 records per minute" in str(err.value.details())


def test_the_operator_report_flags_unusual_volume(
    matcher: Matcher,
    project: ProjectTokens,
    secret_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with matcher.operator() as op:
        op.set_query_limits("trial", per_day=150)  # the minute: 1,000
    probe = person(secret_file, given_name="Guess", surname="Work", dob="1980-01-01")
    with matcher.member(project.tokens["north"]) as north:
        north.query(
            "trial", [probe[0]] * 120, clk_bits=probe[1], fingerprint=probe[2], purpose="fishing"
        )
    monkeypatch.setenv("BLINDMATCH_ADMIN_TOKEN", matcher.admin_token)
    assert main(["admin", "query-report", "trial", "--json", "--server", matcher.target]) == 0
    report = {v["member"]: v for v in json.loads(capsys.readouterr().out)}
    assert report["north"]["records"] == 120
    assert report["south"]["flags"] == []
    flags = " ".join(report["north"]["flags"])
    assert "over 3x the other members' median" in flags
    assert "used 80% of its quota" in flags
    assert "looks like probing" in flags


def test_a_query_needs_a_purpose(
    matcher: Matcher, project: ProjectTokens, secret_file: Path
) -> None:
    grace = person(secret_file, **GRACE)
    with matcher.member(project.tokens["north"]) as north, pytest.raises(RejectedError) as err:
        north.query("trial", grace[0], clk_bits=grace[1], fingerprint=grace[2], purpose=" ")
    assert "purpose: required" in str(err.value)


def test_only_the_operator_sets_limits(matcher: Matcher, project: ProjectTokens) -> None:
    from blindmatch.client.errors import AuthError

    with matcher.member(project.tokens["north"]) as north, pytest.raises(AuthError):
        north.set_query_limits("trial", per_day=10**9)


# -- bad input leaves the index as it was --------------------------------------------------------


def test_bad_changes_are_refused_and_change_nothing(
    matcher: Matcher,
    project: ProjectTokens,
    encoded: dict[str, Encoded],
    orgs: dict[str, Org],
    tmp_path: Path,
    secret_file: Path,
) -> None:
    with matcher.member(project.tokens["south"]) as south:
        index_all(south, "trial", encoded["south"])
        before = south.list_index("trial")
        fp = encoded["south"].fingerprint
        with pytest.raises(RejectedError, match="INVALID_ARGUMENT") as short:
            south.change_index(
                "trial", clk_bits=1024, fingerprint=fp, puts=[("new-1", bytes(128)), ("x", b"1")]
            )
        assert "put.clks: 129 bytes for 2 refs; expected 256" in str(short.value)
        with pytest.raises(RejectedError, match="FAILED_PRECONDITION") as length:
            south.change_index("trial", clk_bits=512, fingerprint=fp, puts=[("n", bytes(64))])
        assert "CLKs of 512 bits, but your index has 2048-bit CLKs" in str(length.value)
        with pytest.raises(NotFoundError) as unknown:
            south.change_index(
                "trial", clk_bits=1024, fingerprint=fp, removes=[next(iter(before)), "nope"]
            )
        assert "1 reference not in your index: 'nope'; nothing was changed" in str(unknown.value)
        wrong = encode(orgs["south"], tmp_path / "wrong.encoded", b"another secret")
        with pytest.raises(RejectedError) as other_secret:
            sync_index(south, "trial", wrong, KEY)
        assert "FAILED_PRECONDITION" in str(other_secret.value)
        assert "different schema or secret" in str(other_secret.value)
        with pytest.raises(RejectedError, match="not a valid reference"):
            south.change_index("trial", clk_bits=1024, fingerprint=fp, puts=[("a b", bytes(128))])
        assert south.list_index("trial") == before
    with matcher.member(project.tokens["north"]) as north:
        assert ask(north, "trial", person(secret_file, **GRACE)) == ["south"]


def test_a_query_with_the_wrong_encoding_is_refused(
    matcher: Matcher, project: ProjectTokens, encoded: dict[str, Encoded]
) -> None:
    with matcher.member(project.tokens["south"]) as south:
        index_all(south, "trial", encoded["south"])
    fp = encoded["south"].fingerprint
    with matcher.member(project.tokens["north"]) as north:
        with pytest.raises(RejectedError, match="CLKs of 512 bits, but south's index has 2048"):
            north.query("trial", bytes(64), clk_bits=512, fingerprint=fp, purpose=PURPOSE)
        with pytest.raises(
            RejectedError, match="different schema or secret than south's index"
        ) as other:
            north.query("trial", bytes(256), clk_bits=2048, fingerprint=bytes(32), purpose=PURPOSE)
        # Issue 16: the refusal shows no bits of the index's fingerprint (an oracle for the
        # secret), nor of the one sent.
        for shown in (fp.hex(), bytes(32).hex()):
            assert not any(shown[i : i + 6] in str(other.value) for i in range(len(shown) - 6))
        with pytest.raises(RejectedError, match="not a whole, non-zero number of 2048-bit CLKs"):
            north.query("trial", bytes(100), clk_bits=2048, fingerprint=fp, purpose=PURPOSE)
    # Refused before any search: counted on the operator's report (not audited), the
    # incompatible encodings as well as the malformed CLKs.
    with matcher.operator() as op:
        report = {v.member: v for v in op.query_report("trial")}
    assert report["north"].flags == [
        "3 requests refused for a bad token or bad input (FAILED_PRECONDITION 2, "
        "INVALID_ARGUMENT 1)"
    ]


# -- notifications -------------------------------------------------------------------------------


# Without a date of birth, a watch is scored by the fallback rule too.
@pytest.mark.parametrize("who", [GRACE, GRACE_NO_DOB], ids=["with dob", "without dob"])
def test_a_watch_is_told_when_a_partner_later_indexes_a_match(
    matcher: Matcher,
    project: ProjectTokens,
    encoded: dict[str, Encoded],
    secret_file: Path,
    who: dict[str, str],
) -> None:
    grace = person(secret_file, **who)
    with matcher.member(project.tokens["north"]) as north, pytest.raises(RejectedError):
        next(north.watch("trial", grace[0], clk_bits=grace[1], fingerprint=grace[2], purpose="x"))
    with matcher.operator() as op:
        op.set_query_limits("trial", allow_watch=True)
    events = []
    registered = threading.Event()

    def watch() -> None:
        with matcher.member(project.tokens["north"]) as north:
            stream = north.watch(
                "trial",
                grace[0],
                clk_bits=grace[1],
                fingerprint=grace[2],
                purpose=PURPOSE,
                timeout=30,
            )
            registered.set()
            events.append(next(stream))
            stream.close()

    watcher = threading.Thread(target=watch)
    watcher.start()
    registered.wait(10)
    with matcher.member(project.tokens["south"]) as south:
        for _ in range(100):  # until the watch is registered at the matcher
            if len(matcher.server.realtime.watches):
                break
            threading.Event().wait(0.05)
        index_all(south, "trial", encoded["south"])
    watcher.join(30)
    assert [(e.partner, e.index) for e in events] == [("south", 0)]


# -- the search kernel and the in-memory index -------------------------------------------------


def test_search_finds_exactly_the_rows_at_or_over_the_threshold() -> None:
    rng = np.random.default_rng(5)
    base = rng.random((1, 1024)) < 0.4
    noisy = base ^ (rng.random((300, 1024)) < rng.random((300, 1)) * 0.3)
    clks = np.packbits(noisy, axis=1)
    words = as_words(clks, 1024)
    popcounts = np.bitwise_count(words).sum(axis=1, dtype=np.int32)
    order = np.argsort(popcounts, kind="stable")
    query = np.packbits(base, axis=1)
    for threshold in (0.6, 0.8, 0.9):
        rows, scores = search(words[order], popcounts[order], as_words(query, 1024)[0], threshold)
        expected = dice(clks, np.repeat(query, len(clks), axis=0))
        want = sorted(
            int(np.flatnonzero(order == i)[0]) for i in np.flatnonzero(expected >= threshold)
        )
        assert sorted(rows.tolist()) == want
        assert np.allclose(scores, expected[order][rows])
        assert list(scores) == sorted(scores, reverse=True)


def test_the_index_stays_right_through_puts_removes_and_compaction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("blindmatch.matcher.core.index.COMPACT_MIN", 8)
    rng = np.random.default_rng(9)
    truth: dict[str, bytes] = {}

    def random_clks(n: int) -> np.ndarray:
        return np.packbits(rng.random((n, 256)) < 0.4, axis=1)

    start = random_clks(20)
    truth.update({f"r{i}": start[i].tobytes() for i in range(20)})
    index = MemberIndex.load(256, list(truth), as_words(start, 256))
    for step in range(40):
        new = random_clks(3)
        refs = [f"r{rng.integers(0, 40)}" for _ in range(3)]
        refs = list(dict.fromkeys(refs))
        removes = [r for r in list(truth)[:1] if r not in refs] if step % 3 else []
        index.apply(refs, as_words(new[: len(refs)], 256), removes)
        for r in removes:
            del truth[r]
        truth.update({r: new[i].tobytes() for i, r in enumerate(refs)})
        if step == 39:
            assert index.wait_merged(timeout=60)  # and once more with every merge in
        assert len(index) == len(truth)
        for ref, clk in truth.items():
            found = dict(index.snapshot.search(as_words(clk, 256)[0], 1.0))
            assert ref in found
            assert index.clk(ref).tobytes() == clk


def test_sync_sends_only_the_differences() -> None:
    plan = plan_sync({"a": b"1", "b": b"2", "c": b"3"}, {"a": b"1", "b": b"x", "d": b"4"})
    assert (plan.puts, plan.removes) == (["b", "c"], ["d"])


@pytest.mark.parametrize(
    "command",
    [
        ["index", "add"],
        ["index", "remove"],
        ["index", "sync"],
        ["index", "show"],
        ["query"],
        ["admin", "query-limits"],
        ["admin", "query-report"],
    ],
)
def test_every_real_time_command_has_help(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as done:
        main([*command, "--help"])
    assert done.value.code == 0
    assert f"usage: blindmatch {' '.join(command)}" in capsys.readouterr().out


class CutShort(Exception):
    """The sync stopped between two of its changes (a crash, a lost connection)."""


def test_a_sync_over_the_matchers_change_limit_goes_in_several_changes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A first load larger than `serve --max-index-change-mib` (here 64 KiB: 2,000 records,
    320 KB of references and CLKs) is sent as several changes, each under the limit; one cut
    short is finished by running the sync again, which sends only the rest."""
    with low_change_limit(tmp_path) as (target, token, folder):
        ref_key = tmp_path / "south.refkey"
        key, _ = load_ref_key(ref_key, create=True)

        stored: list[SyncPart] = []

        def stop_after_two(part: SyncPart) -> None:
            stored.append(part)
            if part.number == 2:
                raise CutShort

        with MatcherClient(target, token) as south, pytest.raises(CutShort):
            sync_index(south, "trial", folder, key, progress=stop_after_two)
        held = stored[-1].summary.record_count
        assert 0 < held < 2000 and held == sum(p.summary.added for p in stored)

        south_args = ["--project", "trial", "--token", token, "--ref-key", str(ref_key)]
        sync = ["index", "sync", str(folder.path), *south_args, "--server", target]
        assert main(sync) == 0
        said = capsys.readouterr()
        parts = int(said.out.split("Index synced in ")[1].split(" changes")[0])
        assert parts >= 3, said.out  # 1,600 records of 160 bytes, under 64 KiB a change
        assert (
            f"{2000 - held} added, 0 replaced, 0 removed; the index now holds 2000 records"
            in said.out
        )
        assert "sending them as several changes" in said.err
        assert f"Change {parts} of {parts} stored" in said.err

        with MatcherClient(target, token) as south:
            assert len(south.list_index("trial")) == 2000
        with MatcherClient(target, ADMIN_TOKEN) as op:
            changes = [e for e in op.audit("trial") if e.get("action") == "index.change"]
        assert len(changes) == 2 + parts  # each part its own change, none replayed

        assert main(sync) == 0  # nothing left to send
        assert "Index synced: 0 added, 0 replaced, 0 removed" in capsys.readouterr().out
