"""Hand-made exports walked through `blindmatch encode` and `blindmatch query` (issue 21 item
3, messywalk2): the same name or date in any Unicode form, with invisible or look-alike
characters, encodes the same; dates in their month's name, ordinals, quotes and at midnight in
any zone read by default; a cp1252 file declared latin-1 is refused, not read with its curly
quotes and letters dropped; an export's own sex codes are read only where the mapping declares
them."""

from __future__ import annotations

import csv
import io
import json
import unicodedata
from datetime import date, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blindmatch.cli import main
from blindmatch.client import ProjectTokens
from blindmatch.client.encoding.cells import read_cell
from blindmatch.client.encoding.datetext import may_read
from blindmatch.client.encoding.mapping import ColumnMap
from blindmatch.client.encoding.normalise import (
    QUERY_DATE_FORMATS,
    SUGGESTED_DATE_FORMATS,
    split_name,
)
from blindmatch.client.encoding.schema import load_schema
from tests.support import NORTH_MAP, PERSON_SCHEMA, Matcher, Org
from tests.test_messy_exports2 import HEADER, clks, encode, field, query_south

SCHEMA = load_schema(PERSON_SCHEMA)
NO_DATE_FORMAT = NORTH_MAP.replace('{ column = "DOB", date_format = "%d/%m/%Y" }', '"DOB"')


def read(name: str, written: str, cmap: ColumnMap | None = None) -> tuple[str, str]:
    """(what the cell is, its value) of `written` in the schema field `name`."""
    index = next(i for i, rule in enumerate(SCHEMA.rules) if rule.name == name)
    got = read_cell(SCHEMA.rules[index], cmap, SCHEMA.clk_schema.fields[index], written)
    return got[0], got[1]


def nfd(text: str) -> str:
    return unicodedata.normalize("NFD", text)


# (field, as written, as it should read: the plain spelling of the same value)
SAME = [
    ("given_name", nfd("Zoë"), "Zoë"),
    ("given_name", nfd("José"), "Jose"),
    ("given_name", "Jo\u200bhn", "John"),  # a zero-width space
    ("given_name", "Jo\u200dhn", "John"),  # a zero-width joiner
    ("given_name", "\ufeffAnn", "Ann"),  # a byte-order mark inside the cell
    ("given_name", "\uff2a\uff4f\uff48\uff4e", "John"),  # full-width
    ("surname", "O\u2019Neill", "O'Neill"),
    ("surname", "O\u2018Neill", "O'Neill"),
    ("surname", "O\u02bcNeill", "O'Neill"),  # the modifier letter apostrophe: was 'o\u02bcneill'
    ("surname", "O`Neill", "O'Neill"),
    ("surname", "Lloyd\u2010George", "Lloyd-George"),
    ("surname", "Lloyd\u2011George", "Lloyd-George"),
    ("surname", "Lloyd\u2013George", "Lloyd-George"),
    ("surname", "Lloyd\u2014George", "Lloyd-George"),
    ("surname", "Lloyd\u2212George", "Lloyd-George"),
    ("given_name", "I\u015f\u0131l", "Isil"),  # Turkish dotless i
    ("given_name", "\u0130smail", "ISMAIL"),  # Turkish dotted capital I
    ("surname", "Stra\u00dfe", "STRASSE"),
    ("surname", "STRA\u1e9eE", "Strasse"),  # the capital sharp s
    ("surname", "\u00d8rsted", "Orsted"),
    ("surname", "S\u00e6ther", "Saether"),
    ("surname", "\u00c5ngstr\u00f6m", "Angstrom"),
    ("given_name", "\u0141ukasz", "Lukasz"),
    ("surname", "N\u00ed Bhriain", "NI BHRIAIN"),
    ("surname", "\u00d3 S\u00failleabh\u00e1in", "O'Suilleabhain"),
    ("surname", "ap Rhys", "AP RHYS"),
    ("surname", "Van Der Berg", "van der Berg"),
    ("surname", "vanderberg", "van der Berg"),
    ("postcode", "LS6  2AB", "LS6 2AB"),
    ("postcode", "LS6 2AB.", "LS6 2AB"),
    ("postcode", "ls6\u00a02ab", "LS6 2AB"),
    ("postcode", "\uff2c\uff33\uff16\u3000\uff12\uff21\uff22", "LS6 2AB"),
    ("sex", "Female", "F"),
    ("sex", "f", "F"),
    ("sex", "Male", "M"),
    ("sex", "\uff2d", "M"),
]


@pytest.mark.parametrize(("name", "written", "plain"), SAME)
def test_a_value_in_any_unicode_form_reads_as_its_plain_spelling(
    name: str, written: str, plain: str
) -> None:
    assert read(name, written) == read(name, plain)
    assert read(name, written)[0] == "value"


# Dates as other systems write them, each 3 April 1980 (read without a date_format).
DATES = [
    "1980-04-03T00:00:00Z",
    "1980-04-03 00:00:00.000",
    "1980-04-03T00:00:00+01:00",  # midnight in a zone: the date written (was invalid)
    "3rd April 1980",  # was invalid
    "April 3, 1980",  # was invalid
    "April 3rd, 1980",  # was invalid
    "Apr 3 1980",  # was invalid
    "03-APR-1980",  # was invalid
    "3-April-1980",  # was invalid
    "1980/04/03",
    " 1980-04-03 ",
    '"1980-04-03"',  # quoted inside the cell: was invalid
    "'1980-04-03",  # Excel's text prefix: was invalid
    "\u20181980-04-03\u2019",  # curly quotes: was invalid
    "\uff11\uff19\uff18\uff10-\uff10\uff14-\uff10\uff13",  # full-width: was invalid
    "1980\u201104\u201103",  # non-breaking hyphens: was invalid
    "1980\u201304\u201303",  # en dashes: was invalid
    "\u200b1980-04-03",  # a zero-width space: was invalid
    "1980-04-03\u00a0",
    "1980-04-03Z",  # XML's date with a zone: was invalid
    "1980-04-03+01:00",  # was invalid
    "19800403000000",  # HL7's date-time at midnight: was invalid
]


@pytest.mark.parametrize("written", DATES)
def test_a_date_as_other_systems_write_it_reads_by_default(written: str) -> None:
    assert read("dob", written) == ("value", "1980-04-03")


def test_the_uk_abbreviation_sept_and_a_declared_format_with_quotes_read() -> None:
    assert read("dob", "03 Sept 1980") == ("value", "1980-09-03")  # was invalid
    dmy = ColumnMap(("DOB",), ("%d/%m/%Y",))
    for written in ('"03/04/1980"', " 03/04/1980\u200b ", "\uff10\uff13/04/1980"):
        assert read("dob", written, dmy) == ("value", "1980-04-03")  # each was invalid


@pytest.mark.parametrize(
    "written",
    [
        "1980-04-02T23:00:00Z",  # a date shifted by a time zone: not guessed back
        "03-APR-80",  # a two-digit year says no century
        "3.4.1980",  # day and month as numbers: either order
        "1980-04-03 13:45",
        "19800403123000",
    ],
)
def test_a_date_that_cannot_be_told_stays_invalid(written: str) -> None:
    assert read("dob", written)[0] == "invalid"


def test_the_same_person_in_every_form_encodes_to_one_clk(tmp_path: Path) -> None:
    """Through `blindmatch encode`, a UTF-8 export with a byte-order mark and CRLF: the first
    row is the plain spelling, every other row the same person written as another system
    would; every row's CLK is the first's."""
    people = [
        ["P0", "Zoe", "O'Neill-Lloyd", "1980-04-03", "F", "LS6 2AB"],
        ["P1", nfd("Zoë"), "O\u2019Neill\u2013Lloyd", "3rd April 1980", "Female", "LS6  2AB"],
        ["P2", "Zo\u00eb\u200b", "O\u02bcNEILL\u2011LLOYD", "April 3, 1980", "f", "ls6\u00a02ab"],
        ["P3", "\uff3a\uff4f\uff45", "o`neill lloyd", "03-Apr-1980", "F.", "LS6 2AB."],
        ["P4", "ZOË", "O\u2018Neill\u2212Lloyd", '"1980-04-03"', "F", "\ufeffLS6 2AB"],
        ["P5", "Zoë", "O'Neill-Lloyd", "1980-04-03T00:00:00+01:00", "female", "LS6 2AB"],
    ]
    text = io.StringIO()
    csv.writer(text, lineterminator="\r\n").writerows([HEADER.split(","), *people])
    code, report = encode(tmp_path, b"\xef\xbb\xbf" + text.getvalue().encode(), NO_DATE_FORMAT)
    assert code == 0
    for name in ("given_name", "surname", "dob", "sex", "postcode"):
        assert (field(report, name)["present"], field(report, name)["distinct"]) == (6, 1), name
    first, *others = clks(tmp_path)
    assert others == [first] * 5


def test_a_declared_date_format_that_does_not_fit_is_reported_by_row(tmp_path: Path) -> None:
    """Listed by row before too; the warning naming the format that reads them is new (was
    only 'could not be read': the default formats were not offered where one is declared)."""
    rows = f"{HEADER}\nN1,Ann,Lee,01/02/1970,F,LS6 2AB\nN2,Bob,Ray,1981-06-05,M,M14 5RT\n"
    code, report = encode(tmp_path, rows.encode())  # date_format = "%d/%m/%Y"
    assert code == 0
    dob = field(report, "dob")
    assert (dob["present"], dob["invalid"]) == (1, 1)
    assert dob["invalid_rows"] == [
        {"row": 3, "reason": "'1981-06-05' is not a date in the format %d/%m/%Y"}
    ]
    assert any("values such as '1981-06-05' are not in the date_format" in w
               for w in report["warnings"])  # fmt: skip


LATIN1_MAP = NORTH_MAP.replace('id = "URN"', 'id = "URN"\nencoding = "latin-1"')


def test_a_cp1252_export_declared_latin1_is_refused_naming_row_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Was: read, exit 0, with the curly apostrophe, the dash and the letter S with caron
    (cp1252's 0x92, 0x96, 0x8A, C1 control characters in latin-1) dropped silently:
    '\\x8aimon' encoded as 'imon'."""
    rows = (
        f"{HEADER}\r\nN1,Ann,O\x92Neill,01/02/1970,F,LS6 2AB\r\n"
        "N2,\x8aimon,Ray,05/06/1981,M,M1 1AA\r\n"
    )
    code, report = encode(tmp_path, rows.encode("latin-1"), LATIN1_MAP)
    assert (code, report) == (2, {})
    err = capsys.readouterr().err
    assert (
        "export.csv: row 2, column Surname: 'O\\x92Neill' holds U+0092, a control character no "
        "text holds; cp1252 (Excel's Windows code page) writes '\u2019' with byte 0x92; the "
        'export is not latin-1: if it came from Excel, set encoding = "cp1252" in map.toml'
    ) in err
    # As the error says: the same bytes under cp1252 read every letter.
    code, report = encode(tmp_path, rows.encode("latin-1"), LATIN1_MAP.replace("latin-1", "cp1252"))
    assert code == 0 and field(report, "given_name")["present"] == 2
    plain = rows.replace("\x92", "'").replace("\x8a", "\u0160").encode("cp1252")
    before = clks(tmp_path)
    encode(tmp_path, plain, LATIN1_MAP.replace("latin-1", "cp1252"))
    assert clks(tmp_path) == before


def test_c1_controls_in_a_utf8_export_or_a_header_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A cp1252 file once converted to UTF-8 as if it were latin-1: its dash is U+0096.
    rows = f"{HEADER}\nN1,Ann,Lloyd\u0096George,01/02/1970,F,LS6 2AB\n"
    assert encode(tmp_path, rows.encode())[0] == 2
    err = capsys.readouterr().err
    assert "row 2, column Surname: 'Lloyd\\x96George' holds U+0096" in err
    assert "the file was converted to UTF-8 from a code page as if it were latin-1" in err
    header = HEADER.replace("Postcode", "Post\x96code")
    assert encode(tmp_path, f"{header}\nN1,Ann,Lee,01/02/1970,F,LS6 2AB\n".encode("latin-1"),
                  LATIN1_MAP)[0] == 2  # fmt: skip
    assert "the header, column 6: 'Post\\x96code' holds U+0096" in capsys.readouterr().err
    # U+0085 (cp1252's ellipsis) is a space to str.strip: refused before the header is stripped.
    header = HEADER.replace("Postcode", "Postcode\x85")
    assert encode(tmp_path, f"{header}\nN1,Ann,Lee,01/02/1970,F,LS6 2AB\n".encode("latin-1"),
                  LATIN1_MAP)[0] == 2  # fmt: skip
    assert "holds U+0085" in capsys.readouterr().err


NHS_MAP = NORTH_MAP.replace(
    'sex = "Sex"', 'sex = { column = "Sex", values = { "1" = "M", "2" = "F", "9" = "", "0" = "" } }'
)


def test_sex_codes_read_only_where_the_mapping_declares_them(tmp_path: Path) -> None:
    rows = (
        f"{HEADER}\nN1,Ann,Lee,01/02/1970,2,LS6 2AB\nN2,Bob,Ray,05/06/1981,1,M14 5RT\n"
        "N3,Cy,Po,05/06/1982,9,M1 1AA\nN4,Di,Xu,05/06/1983,0,M1 1AB\nN5,Ed,Yo,05/06/1984,M,M1 1AC\n"
    )
    code, report = encode(tmp_path, rows.encode())  # no codes declared: not guessed
    sex = field(report, "sex")
    assert (code, sex["present"], sex["invalid"]) == (0, 1, 4)
    assert sex["invalid_rows"][0] == {"row": 2, "reason": "'2' is not one of F, M, X"}
    code, report = encode(tmp_path, rows.encode(), NHS_MAP)
    sex = field(report, "sex")
    assert (code, sex["present"], sex["missing"], sex["invalid"]) == (0, 3, 2, 0)
    assert sex["placeholders"] == {"9": 1, "0": 1}  # not specified, not known: listed
    coded = clks(tmp_path)
    lettered = rows.replace(",2,", ",F,").replace(",1,", ",M,").replace(",9,", ",,")
    encode(tmp_path, lettered.replace(",0,", ",,").encode())
    assert clks(tmp_path) == coded


def test_codes_the_schema_does_not_allow_are_mapping_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = NHS_MAP.replace('"2" = "F"', '"2" = "Woman"').replace(
        'dob = { column = "DOB", date_format = "%d/%m/%Y" }',
        'dob = { column = "DOB", values = { "0" = "" } }',
    )
    assert encode(tmp_path, f"{HEADER}\nN1,Ann,Lee,1970-02-01,2,LS6 2AB\n".encode(), bad)[0] == 2
    err = capsys.readouterr().err
    assert "fields.dob: values given, but dob is not an enumeration field" in err
    assert "fields.sex: values: code '2' means 'Woman', which is not one of F, M, X" in err


def test_a_query_in_other_forms_finds_the_same_person(
    matcher: Matcher,
    project: ProjectTokens,
    orgs: dict[str, Org],
    secret_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """South holds ELODIE OBRIEN, born 1985-03-02, Female, sw1a1aa; north's officer types her
    as another system shows her. Was: exit 2, the date unreadable."""
    query = query_south(matcher, project, orgs, secret_file, tmp_path)
    elodie = [*query, "--given-name", nfd("Élodie"), "--surname", "O\u02bcBrien", "--sex", "f"]
    elodie += ["--postcode", "\uff33\uff37\uff11\uff21 \uff11\uff21\uff21"]
    for dob in ("2nd March 1985", "March 2, 1985", "1985-03-02T00:00:00+00:00", "02-Mar-1985"):
        assert main([*elodie, "--dob", dob, "--json"]) == 0, dob
        [result] = json.loads(capsys.readouterr().out)["results"]
        assert result["missing"] == [], dob
        assert [m["partner"] for m in result["matches"]] == ["south"], result


def test_a_header_in_decomposed_unicode_matches_the_mappings_column_names(
    tmp_path: Path,
) -> None:
    """A Mac's export may write 'Prénom' decomposed (e + U+0301); the mapping typed it
    composed. Was: exit 2, "column(s) 'Prénom' ... not in the header; the header has: ...,
    Prénom, ...", the two looking the same."""
    header = "N\u00b0,Pre\u0301nom,Nom,Naissance,Sexe,Code postal"
    mapping = (
        'id = "N\u00b0"\n[fields]\ngiven_name = "Pr\u00e9nom"\nsurname = "Nom"\n'
        'dob = "Naissance"\nsex = "Sexe"\npostcode = "Code postal"\n'
    )
    rows = f"{header}\nN1,Ana\u00efs,Le\u0301ger,1980-04-03,F,LS6 2AB\n{header}\nN2,Zo,Li,,F,\n"
    code, report = encode(tmp_path, rows.encode(), mapping)
    assert code == 0
    assert field(report, "given_name")["present"] == 2
    assert report["header_rows"] == [3]  # the header again, decomposed too: skipped


@pytest.mark.parametrize(
    ("written", "rule", "given", "surname"),
    [
        ("Siobh\u00e1n N\u00ed Bhriain", "given-first", "Siobh\u00e1n", "N\u00ed Bhriain"),
        (nfd("Se\u00e1n \u00d3 S\u00failleabh\u00e1in"), "given-first", nfd("Se\u00e1n"),
         nfd("\u00d3 S\u00failleabh\u00e1in")),
        ("Dafydd ap Rhys", "given-first", "Dafydd", "ap Rhys"),
        ("Gwen ferch Llywelyn", "given-first", "Gwen", "ferch Llywelyn"),
        ("M\u00e1ire Nic Dhonnchadha", "given-first", "M\u00e1ire", "Nic Dhonnchadha"),
        ("AP RHYS Dafydd", "surname-first", "Dafydd", "AP RHYS"),
        ("N\u00cd BHRIAIN Siobh\u00e1n", "surname-first", "Siobh\u00e1n", "N\u00cd BHRIAIN"),
        ("Mary O Brien", "given-first", "Mary O", "Brien"),  # 'O' may be an initial: as before
    ],
)  # fmt: skip
def test_irish_and_welsh_particles_stay_with_the_surname_of_a_split_name(
    written: str, rule: str, given: str, surname: str
) -> None:
    """Was: 'Siobhán Ní Bhriain' cut as ('Siobhán Ní', 'Bhriain'), so her surname encoded
    'bhriain', unlike 'nibhriain' from another export's surname column."""
    assert split_name(written, rule) == (given, surname)


def test_a_weekday_before_a_date_and_not_specified_are_read() -> None:
    # Excel's (US) long date; was invalid.
    assert read("dob", "Thursday, April 3, 1980") == ("value", "1980-04-03")
    assert read("dob", "Thu 3 Apr 1980") == ("value", "1980-04-03")
    # The NHS's label for its code 9, in any field: was invalid in sex, the surname 'notspecified'.
    assert read("sex", "Not specified")[0] == "missing"
    assert read("surname", "NOT SPECIFIED")[0] == "missing"


def test_a_byte_order_mark_where_exports_were_joined_is_no_part_of_the_id(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`cat a.csv b.csv` of two UTF-8 exports with marks, the second without its header: its
    first id was read as '\\ufeffN2', invisible, unlike 'N2' elsewhere; a repeat of 'N1' so
    written was not seen as one."""
    first = f"\ufeff{HEADER}\nN1,Ann,Lee,01/02/1970,F,LS6 2AB\n"
    code, _ = encode(tmp_path, (first + "\ufeffN2,Bob,Ray,05/06/1981,M,M1 1AA\n").encode())
    assert code == 0
    ids = (tmp_path / "out.encoded" / "local" / "ids.csv").read_text(encoding="utf-8")
    assert ids.splitlines()[1:] == ["0,N1", "1,N2"]
    code, _ = encode(tmp_path, (first + "\ufeffN1,Bob,Ray,05/06/1981,M,M1 1AA\n").encode())
    assert code == 2
    assert "row 3, column URN: id 'N1' repeats row 2" in capsys.readouterr().err


def test_a_cp1250_export_declared_cp1252_is_warned_of_by_its_symbols(tmp_path: Path) -> None:
    """A Polish Excel export (cp1250) under encoding = "cp1252": 'Paweł Łukasiewicz' reads as
    'Pawe³ £ukasiewicz', which encoded 'pawe3', 'ukasiewicz' with no word said. Now warned."""
    rows = (
        f"{HEADER}\r\nN1,Pawe\u0142,\u0141ukasiewicz,01/02/1970,M,LS6 2AB\r\n"
        "N2,\u017baneta,Kowalska,05/06/1981,F,M1 1AA\r\nN3,Ann,Lee,05/06/1982,F,M1 1AB\r\n"
    )
    code, report = encode(tmp_path, rows.encode("cp1250"), LATIN1_MAP.replace("latin-1", "cp1252"))
    assert code == 0
    said = [w for w in report["warnings"] if "symbols no name or postcode has" in w]
    assert said == [
        "given_name: 2 values hold symbols no name or postcode has, such as 'Pawe\u00b3' (rows "
        "2, 3): letters of another code page read as cp1252, such as cp1250 (Central European: "
        "\u0142 as \u00b3, \u0141 as \u00a3, \u017c as \u00bf); check the mapping's encoding",
        "surname: 1 value holds symbols no name or postcode has, such as '\u00a3ukasiewicz' "
        "(row 2): letters of another code page read as cp1252, such as cp1250 (Central European: "
        "\u0142 as \u00b3, \u0141 as \u00a3, \u017c as \u00bf); check the mapping's encoding",
    ]
    code, report = encode(tmp_path, rows.encode("cp1250"), LATIN1_MAP.replace("latin-1", "cp1250"))
    assert code == 0 and not [w for w in report["warnings"] if "symbols" in w]


FORMATS = sorted({*QUERY_DATE_FORMATS, *SUGGESTED_DATE_FORMATS, "%d/%m/%y", "%Y-%m-%dT%H:%M"})


@given(st.dates(min_value=date(1900, 1, 2), max_value=date(2020, 12, 31)), st.sampled_from(FORMATS))
def test_a_format_skipped_as_unable_to_read_a_date_could_not_have_read_it(
    day: date, fmt: str
) -> None:
    """parse_date asks strptime only the formats whose literals the text holds (may_read): a
    date written in a format is never skipped by that format, in any case."""
    for written in (day.strftime(fmt), day.strftime(fmt).upper(), day.strftime(fmt).lower()):
        chars = frozenset(written.casefold())
        assert may_read(chars, any(c.isalpha() for c in chars), fmt), (written, fmt)
        datetime.strptime(written, fmt)  # (which strptime reads)
