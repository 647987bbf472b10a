"""Real-world exports walked through `blindmatch encode` (issue 21 item 3, exportwalk): what
the walk found misread or reported wrongly. A generational suffix ('SMITH JNR', 'John Smith
Jr.') is a note left out of the name, not part of the surname or the surname itself; a date of
all zeros ('00/00/0000', MySQL's '0000-00-00') is a placeholder, missing, not an unreadable
date; a soft hyphen in a name is invisible, not a symbol of another code page; a date with a
time of day other than midnight says so in its reason."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blindmatch.client.encoding.cells import read_cell
from blindmatch.client.encoding.mapping import ColumnMap
from blindmatch.client.encoding.namenotes import cut_after_surname
from blindmatch.client.encoding.normalise import split_name
from blindmatch.client.encoding.schema import load_schema
from tests.support import NORTH_MAP, PERSON_SCHEMA
from tests.test_messy_exports2 import HEADER, clks, encode, field

SCHEMA = load_schema(PERSON_SCHEMA)
FULL_NAME_MAP = """id = "URN"
[fields]
given_name = {{ column = "Name", split = "{split}" }}
surname = {{ column = "Name", split = "{split}" }}
dob = {{ column = "DOB", date_format = "%d/%m/%Y" }}
sex = "Sex"
postcode = "Postcode"
"""


def export(rows: list[list[str]], header: str = HEADER) -> bytes:
    return ("\r\n".join([header, *(",".join(row) for row in rows)]) + "\r\n").encode()


def read(
    name: str, written: str, cmap: ColumnMap | None = None
) -> tuple[str, str, tuple[str, ...]]:
    """(what the cell is, its value, the notes left out) of `written` in the field `name`."""
    index = next(i for i, rule in enumerate(SCHEMA.rules) if rule.name == name)
    got = read_cell(SCHEMA.rules[index], cmap, SCHEMA.clk_schema.fields[index], written)
    return got[0], got[1], got[3]


def test_a_suffix_after_the_surname_is_left_out_and_listed(tmp_path: Path) -> None:
    rows = [
        ["N1", "John", "Smith", "03/01/1980", "M", "LS6 2AB"],
        ["N2", "MR JOHN", "SMITH JNR", "03/01/1980", "M", "LS6 2AB"],
        ["N3", "John", '"Smith, Jr."', "03/01/1980", "M", "LS6 2AB"],
        ["N4", "John", "Smith III", "03/01/1980", "M", "LS6 2AB"],
        ["N5", "John", "Smith Snr", "03/01/1980", "M", "LS6 2AB"],
    ]
    code, report = encode(tmp_path, export(rows))
    assert code == 0
    first, *others = clks(tmp_path)
    assert others == [first] * 4  # each the same person as row 2's John Smith
    surname = field(report, "surname")
    assert surname["present"] == 5
    assert surname["notes"] == {"JNR": 1, "Jr.": 1, "III": 1, "Snr": 1}
    assert surname["note_rows"] == [3, 4, 5, 6]


@pytest.mark.parametrize(
    ("split", "written", "listed_under"),
    [
        ("given-first", "MR JOHN SMITH JNR", ["given_name", "surname"]),
        ("given-first", "John Smith Jr.", ["given_name", "surname"]),
        ("surname-first", "SMITH John Jnr", ["given_name", "surname"]),
        # next to the surname, before the given names (leftovers57: the given name 'jnr')
        ("surname-first", "SMITH JNR John", ["given_name", "surname"]),
        # after the cut at the comma: listed under the field of the part it ends
        ("surname, given", "Smith Jr, John", ["surname"]),
        ("surname, given", "SMITH, Mr John Snr", ["given_name"]),
    ],
)
def test_a_full_name_with_a_suffix_is_cut_as_the_name_without_it(
    tmp_path: Path, split: str, written: str, listed_under: list[str]
) -> None:
    plain = (
        "Smith, John"
        if split == "surname, given"
        else ("John Smith" if split == "given-first" else "Smith John")
    )
    rows = [["N1", f'"{plain}"', "03/01/1980", "M", "LS6 2AB"],
            ["N2", f'"{written}"', "03/01/1980", "M", "LS6 2AB"]]  # fmt: skip
    code, report = encode(
        tmp_path, export(rows, "URN,Name,DOB,Sex,Postcode"), FULL_NAME_MAP.format(split=split)
    )
    assert code == 0
    one, two = clks(tmp_path)
    assert two == one  # before: the surname 'jnr' (or 'smithjr'), the given name 'john'
    listed = [f["field"] for f in report["fields"] if f.get("note_rows") == [3]]
    assert listed == listed_under


SURNAMES = ("Smith", "O'Neil", "Smith-Jones", "van der Berg", "De Souza", "MacDonald", "Lee")
SUFFIXES = ("Jr", "Jnr", "Sr", "Snr", "II", "III", "IV")


@given(
    surname=st.sampled_from(SURNAMES),
    suffix=st.sampled_from(SUFFIXES),
    upper=st.booleans(),
    dot=st.booleans(),
    comma=st.booleans(),
)
def test_any_surname_with_a_suffix_reads_as_the_surname_alone(
    surname: str, suffix: str, upper: bool, dot: bool, comma: bool
) -> None:
    written = f"{surname}{',' * comma} {suffix}{'.' * dot}"
    written = written.upper() if upper else written
    kind, value, notes = read("surname", written)
    assert (kind, value) == read("surname", surname)[:2]
    assert [n.rstrip(".").casefold() for n in notes] == [suffix.casefold()]


@pytest.mark.parametrize("written", ["00/00/0000", "0000-00-00", "00000000", "00.00.0000"])
def test_a_date_of_all_zeros_is_a_placeholder_not_an_unreadable_date(
    tmp_path: Path, written: str
) -> None:
    rows = [["N1", "Ann", "Lee", written, "F", "LS6 2AB"],
            ["N2", "Bob", "Ray", "05/06/1981", "M", "M14 5RT"]]  # fmt: skip
    code, report = encode(tmp_path, export(rows))
    assert code == 0
    dob = field(report, "dob")
    assert (dob["present"], dob["missing"], dob["invalid"]) == (1, 1, 0)
    assert dob["placeholders"] == {written: 1}
    assert dob["placeholder_rows"] == [2]
    assert not any("could not be read" in w for w in report["warnings"])


def test_a_soft_hyphen_in_a_name_is_invisible_not_another_code_page(tmp_path: Path) -> None:
    rows = [["N1", "AnnMarie", "Lee", "03/01/1980", "F", "LS6 2AB"],
            ["N2", "Ann\u00adMarie", "Lee", "03/01/1980", "F", "LS6 2AB"]]  # fmt: skip
    code, report = encode(tmp_path, export(rows))
    assert code == 0
    one, two = clks(tmp_path)
    assert two == one
    assert not any("code page" in w for w in report["warnings"]), report["warnings"]


def test_a_date_with_a_time_of_day_says_so_in_its_reason(tmp_path: Path) -> None:
    rows = [["N1", "Ann", "Lee", "03/01/1980 13:45", "F", "LS6 2AB"],
            ["N2", "Bob", "Ray", "05/06/1981 00:00", "M", "M14 5RT"]]  # fmt: skip
    code, report = encode(tmp_path, export(rows), NORTH_MAP)
    assert code == 0
    dob = field(report, "dob")
    assert (dob["present"], dob["invalid"]) == (1, 1)  # midnight reads; 13:45 is not guessed
    (invalid,) = dob["invalid_rows"]
    assert invalid["row"] == 2
    assert "it has a time of day, 13:45, other than midnight" in invalid["reason"]


@pytest.mark.parametrize(
    ("written", "name", "notes"),
    [
        ("SMITH JNR John", "SMITH John", ["JNR"]),
        ("van der Berg Jr. John Paul", "van der Berg John Paul", ["Jr."]),
        ("SMITH, Snr Mary", "SMITH, Mary", ["Snr"]),
        ("SMITH JNR", "SMITH JNR", []),  # ending the name: cut_suffix's (no given name after)
        ("SMITH Junior John", "SMITH Junior John", []),  # a name too ('Olive Senior')
        ("II John", "II John", []),  # the surname itself
    ],
)
def test_under_surname_first_a_suffix_right_after_the_surname_is_a_note(
    written: str, name: str, notes: list[str]
) -> None:
    assert cut_after_surname(written, split_name(written, "surname-first")[1]) == (name, notes)
