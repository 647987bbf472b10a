"""Notes inside name cells, as UK police and retail exports write them ("Smith (nee Jones)",
"SMITH NEE JONES", "John (Jack)", "Smith [deceased]"): the name is what precedes the note, the
note is left out of the encoding and listed in the encode report and a query's answer; names
that only hold those letters ("Kneeland", "Renee", "Nee" alone) stay as they are."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blindmatch.cli import main
from blindmatch.client import ProjectTokens
from blindmatch.client.encoding.cells import read_cell
from blindmatch.client.encoding.mapping import ColumnMap
from blindmatch.client.encoding.schema import load_schema
from tests.support import PERSON_SCHEMA, Matcher, Org
from tests.test_messy_exports2 import HEADER, clks, encode, field, query_south

SCHEMA = load_schema(PERSON_SCHEMA)


def cell(name: str, written: str, cmap: ColumnMap | None = None) -> tuple[str, ...]:
    """(what the cell is, its value, the raw text read, the notes) of `written` in `name`."""
    index = next(i for i, rule in enumerate(SCHEMA.rules) if rule.name == name)
    return read_cell(SCHEMA.rules[index], cmap, SCHEMA.clk_schema.fields[index], written)


def read(name: str, written: str, cmap: ColumnMap | None = None) -> tuple[str, str]:
    """(what the cell is, its value) of `written` in the schema field `name`."""
    got = cell(name, written, cmap)
    return got[0], got[1]


# (field, as written, the name it is read as, the note left out)
NOTES = [
    ("surname", "Smith (nee Jones)", "smith", "nee Jones"),
    ("surname", "SMITH NEE JONES", "smith", "NEE JONES"),
    ("surname", "Smith née Jones", "smith", "née Jones"),
    ("surname", "Smith formerly Jones", "smith", "formerly Jones"),
    ("surname", "Smith (formerly Jones)", "smith", "formerly Jones"),
    ("surname", "Smith aka Jones", "smith", "aka Jones"),
    ("surname", "Smith a.k.a. Jones", "smith", "a.k.a. Jones"),
    ("surname", "Smith alias Jones", "smith", "alias Jones"),
    ("surname", "Smith, nee Jones", "smith", "nee Jones"),
    ("given_name", "John (Jack)", "john", "Jack"),
    ("surname", "Smith [deceased]", "smith", "deceased"),
    ("surname", "Smith (alias)", "smith", "alias"),
    ("surname", "Smith (nee Jones", "smith", "nee Jones"),  # the bracket left unclosed
]


@pytest.mark.parametrize(("name", "written", "value", "note"), NOTES)
def test_a_note_in_a_name_cell_is_no_part_of_the_name(
    name: str, written: str, value: str, note: str
) -> None:
    assert read(name, written) == ("value", value)
    assert cell(name, written)[3] == (note,)


@pytest.mark.parametrize(
    "written", ["Kneeland", "Renee", "Nee", "Akamatsu", "Neeson", "Alias", "Formerly-Brown"]
)
def test_names_holding_those_letters_stay_as_they_are(written: str) -> None:
    assert read("surname", written) == ("value", written.replace("-", "").lower())
    assert cell("surname", written)[3] == ()  # and no note reported


def test_a_keyword_as_the_first_word_is_a_name_not_a_separator() -> None:
    assert cell("surname", "Nee Jones") == ("value", "neejones", "Nee Jones", ())
    assert cell("given_name", "Renee (Ren)") == ("value", "renee", "Renee", ("Ren",))


def test_a_cell_that_is_only_a_note_is_missing() -> None:
    assert read("surname", "(alias)")[0] == "missing"
    assert read("surname", "[deceased]")[0] == "missing"


def test_a_postcode_in_brackets_is_no_name_rule_of_it() -> None:
    assert cell("postcode", "LS6 2AB (old)") == ("value", "ls62abold", "LS6 2AB (old)", ())


@pytest.mark.parametrize(
    ("split", "written", "given_name", "surname"),
    [
        ("surname, given", "Smith (nee Jones), Mary", "mary", "smith"),
        ("surname, given", "Smith nee Jones, Mary", "mary", "smith"),
        ("surname, given", "SMITH, Mary (Molly)", "mary", "smith"),
        ("given-first", "Mary Smith (nee Jones)", "mary", "smith"),
        ("given-first", "Mary Smith nee Jones", "mary", "smith"),
        ("given-first", "John (Jack) Smith", "john", "smith"),
        ("surname-first", "SMITH (nee JONES) Mary", "mary", "smith"),
    ],
)
def test_notes_in_a_full_name_are_cut_before_the_name_is(
    split: str, written: str, given_name: str, surname: str
) -> None:
    given = ColumnMap(("Name",), (), split, "given")  # type: ignore[arg-type]
    family = ColumnMap(("Name",), (), split, "surname")  # type: ignore[arg-type]
    assert read("given_name", written, given) == ("value", given_name)
    assert read("surname", written, family) == ("value", surname)
    assert cell("given_name", written, given)[3] + cell("surname", written, family)[3]


NOTE_TEXT = st.text(
    alphabet=st.characters(blacklist_characters="()[]", blacklist_categories=("Cs",)),
    max_size=20,
)
NAME_TEXT = st.text(
    alphabet=st.characters(blacklist_characters="()[]", blacklist_categories=("Cs", "Cc")),
    max_size=20,
)


@given(st.sampled_from(["given_name", "surname"]), NAME_TEXT, NOTE_TEXT)
def test_appending_a_bracketed_note_never_changes_a_name(
    name: str, written: str, note: str
) -> None:
    assert read(name, f"{written} ({note})") == read(name, written)


def test_the_report_lists_the_notes_left_out_and_their_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [
        HEADER,
        "N1,Mary,Smith (nee Jones),01/02/1970,F,LS6 2AB",
        "N2,Mary,Smith,01/02/1970,F,LS6 2AB",
        "N3,John (Jack),SMITH NEE JONES,05/06/1981,M,M14 5RT",
        "N4,Ann,(alias),05/06/1982,F,M14 5RT",
        "N5,Ann,Kneeland,05/06/1983,F,M14 5RT",
    ]
    code, report = encode(tmp_path, ("\n".join(rows) + "\n").encode())
    assert code == 0
    surname = field(report, "surname")
    assert surname["notes"] == {"nee Jones": 1, "NEE JONES": 1, "alias": 1}
    assert surname["note_rows"] == [2, 4, 5]
    assert (surname["present"], surname["missing"], surname["placeholders"]) == (4, 1, {})
    assert field(report, "given_name")["notes"] == {"Jack": 1}
    assert "notes" not in field(report, "dob")  # only where a field had notes
    first, second = clks(tmp_path)[:2]
    assert first == second  # Smith (nee Jones) is Smith
    out = tmp_path / "printed"
    code = main(["encode", str(tmp_path / "export.csv"), "--schema", str(PERSON_SCHEMA),
                 "--secret-file", str(tmp_path / "secret"), "--mapping",
                 str(tmp_path / "map.toml"), "--out", str(out)])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert (
        "surname: 3 notes left out of the name: 'nee Jones' 1, 'NEE JONES' 1, 'alias' 1 "
        "(rows 2, 4, 5)" in printed
    )
    assert "given_name: 1 note left out of the name: 'Jack' 1 (row 4)" in printed


def test_a_query_given_a_note_in_a_name_finds_the_name_and_says_so(
    matcher: Matcher,
    project: ProjectTokens,
    orgs: dict[str, Org],
    secret_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    query = query_south(matcher, project, orgs, secret_file, tmp_path)
    peter = [*query, "--given-name", "Peter", "--surname", "Nowak (aka Novak)", "--sex", "M"]
    assert main(peter) == 0
    out = capsys.readouterr().out
    assert "query: held by south" in out
    assert "(notes left out of the names: surname 'aka Novak')" in out
    assert main([*peter, "--json"]) == 0
    [result] = json.loads(capsys.readouterr().out)["results"]
    assert result["notes"] == [["surname", "aka Novak"]]
