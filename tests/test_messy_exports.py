"""Messy exports read as they are: several date formats in one column (ambiguous dates
reported, not guessed), Excel code pages, repeated ids, a full-name column split by a
declared rule, a wrong delimiter noticed from the header, and empty exports refused."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blindmatch.cli import main
from blindmatch.client.encoding.encode import encode_csv
from blindmatch.client.encoding.encoded import read_encoded
from blindmatch.client.encoding.mapping import load_mapping
from blindmatch.client.encoding.normalise import (
    PLACEHOLDER_DATES,
    AmbiguousValue,
    FieldRule,
    normalise_value,
    split_name,
)
from blindmatch.client.encoding.schema import load_schema
from blindmatch.client.errors import InputError
from tests.support import NORTH_CSV, NORTH_MAP, PERSON_SCHEMA, STRONG_SECRET, assert_refused

SCHEMA = load_schema(PERSON_SCHEMA)
DOB = FieldRule("dob", "date", date_format="%Y-%m-%d")
UK_AND_ISO = ["%d/%m/%Y", "%Y-%m-%d", "%d %b %Y", "%Y%m%d"]


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def encode(tmp_path: Path, csv_text: str | bytes, map_text: str, *extra: str) -> int:
    data = tmp_path / "export.csv"
    if isinstance(csv_text, bytes):
        data.write_bytes(csv_text)
    else:
        data.write_text(csv_text, encoding="utf-8")
    mapping = write(tmp_path, "map.toml", map_text)
    secret = write(tmp_path, "secret", STRONG_SECRET)
    return main(
        ["encode", str(data), "--schema", str(PERSON_SCHEMA), "--secret-file", str(secret),
         "--mapping", str(mapping), "--out", str(tmp_path / "out.encoded"), *extra]
    )  # fmt: skip


def run_encode(tmp_path: Path, csv_text: str, map_text: str, **options: object):  # type: ignore[no-untyped-def]
    data = write(tmp_path, "export.csv", csv_text)
    mapping = load_mapping(write(tmp_path, "map.toml", map_text), SCHEMA)
    return encode_csv(data, SCHEMA, mapping, b"k", **options)  # type: ignore[arg-type]


def clk_rows(result) -> list[bytes]:  # type: ignore[no-untyped-def]
    size = result.clk_bits // 8
    return [result.clks[i * size : (i + 1) * size] for i in range(len(result.ids))]


# -- dates -------------------------------------------------------------------------------

MULTI_DATE_MAP = NORTH_MAP.replace(
    'date_format = "%d/%m/%Y"', 'date_format = ["%d/%m/%Y", "%m/%d/%Y", "%Y-%m-%d"]'
)


@settings(max_examples=60, deadline=None)
@given(
    st.dates(min_value=date(1900, 1, 1), max_value=date(2025, 12, 31)).filter(
        lambda day: day not in PLACEHOLDER_DATES  # 01/01/1900 and the like read as missing
    ),
    st.data(),
)
def test_a_date_in_any_declared_format_encodes_identically(day: date, data: st.DataObject) -> None:
    fmt = data.draw(st.sampled_from(UK_AND_ISO))
    assert normalise_value(DOB, day.strftime(fmt), UK_AND_ISO) == day.isoformat()


def test_a_date_two_declared_formats_read_differently_is_ambiguous_not_guessed() -> None:
    with pytest.raises(AmbiguousValue, match=r"1980-04-03 \(%d/%m/%Y\) or 1980-03-04"):
        normalise_value(DOB, "03/04/1980", ["%d/%m/%Y", "%m/%d/%Y"])
    # The same date under both orders is no ambiguity; a day over 12 says which order it is.
    assert normalise_value(DOB, "04/04/1980", ["%d/%m/%Y", "%m/%d/%Y"]) == "1980-04-04"
    assert normalise_value(DOB, "12/25/1980", ["%d/%m/%Y", "%m/%d/%Y"]) == "1980-12-25"


def test_ambiguous_dates_are_encoded_as_missing_and_listed_by_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv_text = NORTH_CSV.replace("02/03/1985", "1985-03-02").replace("12/12/2001", "03/04/1980")
    assert encode(tmp_path, csv_text, MULTI_DATE_MAP) == 0
    printed = capsys.readouterr().out
    assert "ambiguous dob at row 6: '03/04/1980' is ambiguous" in printed
    result = run_encode(tmp_path, csv_text, MULTI_DATE_MAP)
    dob = next(f for f in result.report.fields if f.field == "dob")
    # N1's ISO date and N2's UK date read; N3's 30/02 is invalid; N5's 03/04/1980 ambiguous.
    assert (dob.present, dob.invalid, dob.ambiguous) == (3, 1, 1)
    assert dob.ambiguous_rows[0]["row"] == 6
    assert any("read as different dates" in w for w in result.report.warnings)
    # Encoded as missing: the same as N5 with no date at all.
    blank = run_encode(tmp_path, csv_text.replace("03/04/1980", ""), MULTI_DATE_MAP)
    assert clk_rows(result)[4] == clk_rows(blank)[4]


# -- code pages ----------------------------------------------------------------------------

CP1252_ROWS = "URN,Forenames,Surname,DOB,Sex,Postcode\nN1,Zoë,O\u2019Brien,02/03/1985,F,SW1A 1AA\n"


def test_a_cp1252_export_reads_with_encoding_in_the_mapping(tmp_path: Path) -> None:
    mapping = 'encoding = "cp1252"\n' + NORTH_MAP
    data = tmp_path / "excel.csv"
    data.write_bytes(CP1252_ROWS.encode("cp1252"))
    schema_map = load_mapping(write(tmp_path, "excel.toml", mapping), SCHEMA)
    from_excel = encode_csv(data, SCHEMA, schema_map, b"k")
    as_utf8 = run_encode(tmp_path, CP1252_ROWS, NORTH_MAP)
    assert from_excel.clks == as_utf8.clks


def test_a_cp1252_export_without_the_encoding_names_the_line_and_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = encode(tmp_path, CP1252_ROWS.encode("cp1252"), NORTH_MAP)
    assert_refused(
        capsys, code, tmp_path / "out.encoded", "line 2 is not valid UTF-8", 'encoding = "cp1252"'
    )


@pytest.mark.parametrize("name", ["utf-8-sig", "UTF-8-SIG", "utf-8"])
def test_a_utf8_export_with_a_byte_order_mark_reads_under_any_utf8_name(
    tmp_path: Path, name: str
) -> None:
    """Python's name for UTF-8 with a byte-order mark, utf-8-sig, was refused as an encoding
    that does not write ASCII as ASCII ("save the export as UTF-8"; walk21, 2026-12-06)."""
    data = tmp_path / "bom.csv"
    data.write_bytes(b"\xef\xbb\xbf" + CP1252_ROWS.encode("utf-8"))
    mapping = load_mapping(write(tmp_path, "m.toml", f'encoding = "{name}"\n' + NORTH_MAP), SCHEMA)
    assert encode_csv(data, SCHEMA, mapping, b"k").clks == (
        run_encode(tmp_path, CP1252_ROWS, NORTH_MAP).clks
    )


def test_an_encoding_that_is_not_ascii_compatible_is_refused(tmp_path: Path) -> None:
    for name, fragment in (("utf-16", "not supported"), ("klingon", "not a text encoding")):
        path = write(tmp_path, "m.toml", f'encoding = "{name}"\n' + NORTH_MAP)
        with pytest.raises(InputError, match=fragment):
            load_mapping(path, SCHEMA)


# -- repeated ids ---------------------------------------------------------------------------

DUPLICATED = NORTH_CSV + "N2,Jim,Smith,17/11/1990,M,M1 2AB\nN2,James,Smith,17/11/1990,M,M1 2AB\n"


def test_a_repeated_id_stops_the_encode_by_default_and_names_the_choices(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = encode(tmp_path, DUPLICATED, NORTH_MAP)
    assert_refused(
        capsys, code, tmp_path / "out.encoded", "row 7, column URN: id 'N2' repeats row 3",
        "--on-duplicate-id keep-first",
    )  # fmt: skip


def test_keep_first_encodes_the_first_row_of_each_id_and_lists_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert encode(tmp_path, DUPLICATED, NORTH_MAP, "--on-duplicate-id", "keep-first") == 0
    printed = capsys.readouterr().out
    assert "Encoded 5 of 7 rows" in printed
    assert "2 rows repeat an earlier row's record id and were skipped" in printed
    assert "1 row is an exact duplicate of an earlier row" in printed
    assert "row 8 = row 3" in printed
    assert read_encoded(tmp_path / "out.encoded").read_ids() == ["N1", "N2", "N3", "N4", "N5"]


def test_keep_all_encodes_every_row_and_reports_exact_duplicates(tmp_path: Path) -> None:
    result = run_encode(tmp_path, DUPLICATED, NORTH_MAP, on_duplicate_id="keep-all")
    assert result.ids == ["N1", "N2", "N3", "N4", "N5", "N2", "N2"]
    report = result.report
    assert [d["row"] for d in report.duplicate_ids] == [7, 8]
    assert report.exact_duplicates == [{"row": 8, "same_as": 3}]
    assert clk_rows(result)[6] == clk_rows(result)[1]


def test_ids_that_differ_only_in_case_are_two_records_and_a_warning_names_both_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Ids are compared exactly ("n2" is not "N2"), so both rows are encoded; but an export
    # whose ids differ only in case is more likely one record typed twice: said, not fatal.
    text = NORTH_CSV + "n2,Jim,Smith,17/11/1990,M,M1 2AB\nn1,Mary,Jones,01/02/1980,F,M2 3CD\n"
    assert encode(tmp_path, text, NORTH_MAP) == 0
    printed = capsys.readouterr().out
    assert "warning: column URN: 2 record ids differ from an earlier row's only in case" in printed
    assert "row 7 'n2' (row 3 'N2'), row 8 'n1' (row 2 'N1')" in printed
    assert read_encoded(tmp_path / "out.encoded").read_ids()[-2:] == ["n2", "n1"]


# -- a full-name column ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "written", "expected"),
    [
        ("given-first", "Mary Jane Smith", ("Mary Jane", "Smith")),
        ("given-first", "Ludwig van Beethoven", ("Ludwig", "van Beethoven")),
        ("given-first", "Cher", ("Cher", "")),
        ("surname-first", "SMITH Mary Jane", ("Mary Jane", "SMITH")),
        ("surname-first", "van der Berg Jan", ("Jan", "van der Berg")),
        ("surname-first", "VAN DER BERG Jan", ("Jan", "VAN DER BERG")),  # docs/mapping.md
        ("given-first", "Anna De Souza", ("Anna", "De Souza")),
        ("given-first", "Anne-Marie Lloyd-Webber", ("Anne-Marie", "Lloyd-Webber")),
        ("surname, given", "O'Brien,  Élodie Anne", ("Élodie Anne", "O'Brien")),
    ],
)
def test_split_rules(rule: str, written: str, expected: tuple[str, str]) -> None:
    assert split_name(written, rule) == expected


@pytest.mark.parametrize(
    ("rule", "names"),
    [
        ("given-first", ["Élodie O'Brien", "James Smith", "Aoife Byrne", "Zoltán Kovács"]),
        ("surname-first", ["O'Brien Élodie", "Smith James", "Byrne Aoife", "Kovács Zoltán"]),
        ("surname, given", ["O'Brien, Élodie", "Smith, James", "Byrne, Aoife", "Kovács, Zoltán"]),
    ],
)
def test_a_split_full_name_encodes_as_the_two_columns_do(
    tmp_path: Path, rule: str, names: list[str]
) -> None:
    lines = NORTH_CSV.splitlines()[:5]
    rows = [line.split(",") for line in lines]
    full = ["URN,Name,DOB,Sex,Postcode"] + [
        ",".join([r[0], f'"{name}"', *r[3:]]) for r, name in zip(rows[1:], names, strict=True)
    ]
    mapping = NORTH_MAP.replace('"Forenames"', f'{{ column = "Name", split = "{rule}" }}')
    mapping = mapping.replace('"Surname"', f'{{ column = "Name", split = "{rule}" }}')
    split = run_encode(tmp_path, "\n".join(full) + "\n", mapping)
    columns = run_encode(tmp_path, "\n".join(lines) + "\n", NORTH_MAP)
    assert split.clks == columns.clks


def test_a_name_the_rule_cannot_split_is_invalid_with_its_row(tmp_path: Path) -> None:
    csv_text = 'URN,Name,DOB,Sex,Postcode\nN1,"Smith, John",,M,\nN2,John Smith,,M,\n'
    rule = '{ column = "Name", split = "surname, given" }'
    mapping = NORTH_MAP.replace('"Forenames"', rule).replace('"Surname"', rule)
    report = run_encode(tmp_path, csv_text, mapping).report
    given_name = next(f for f in report.fields if f.field == "given_name")
    assert (given_name.present, given_name.invalid) == (1, 1)
    assert given_name.invalid_rows == [
        {"row": 3, "reason": "'John Smith' has no comma; the mapping says 'surname, given'"}
    ]


def test_split_mapping_errors_are_reported(tmp_path: Path) -> None:
    mapping = NORTH_MAP.replace('"Forenames"', '{ column = "Name", split = "middle-first" }')
    mapping = mapping.replace('sex = "Sex"', 'sex = { column = "Sex", split = "given-first" }')
    with pytest.raises(InputError) as err:
        load_mapping(write(tmp_path, "m.toml", mapping), SCHEMA)
    assert "fields.given_name: split must be one of" in str(err.value)
    assert "fields.sex: split given, but sex is not a text field" in str(err.value)


# -- delimiters and empty exports --------------------------------------------------------------


def test_a_wrong_delimiter_is_noticed_from_the_header_with_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = encode(tmp_path, NORTH_CSV.replace(",", ";"), NORTH_MAP)
    assert_refused(
        capsys, code, tmp_path / "out.encoded", "export.csv", "not in the header",
        "the header looks ';'-separated: add delimiter = \";\" in map.toml",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("delimiter", "said"),
    [("\t", 'looks tab-separated: add delimiter = "\\t" in map.toml'),
     ("|", "looks '|'-separated: add delimiter = \"|\" in map.toml")],
)  # fmt: skip
def test_a_tab_or_pipe_delimiter_is_named_as_the_mapping_writes_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], delimiter: str, said: str
) -> None:
    code = encode(tmp_path, NORTH_CSV.replace(",", delimiter), NORTH_MAP)
    assert_refused(capsys, code, tmp_path / "out.encoded", "not in the header", said)


def test_a_wrong_delimiter_is_suggested_beside_a_renamed_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The header splits under ';' into every mapped column but one: the delimiter is still
    # the first fix, and the column left to rename is named.
    renamed = NORTH_CSV.replace(",", ";").replace("Forenames", "First name", 1)
    code = encode(tmp_path, renamed, NORTH_MAP)
    assert_refused(
        capsys, code, tmp_path / "out.encoded",
        "the header looks ';'-separated: add delimiter = \";\" in map.toml "
        "(then 'Forenames' still not in it)",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("content", "what"),
    [("URN,Forenames,Surname,DOB,Sex,Postcode\n", "has a header but no records"), ("", "empty")],
)
def test_an_export_without_records_stops_unless_allowed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, what: str
) -> None:
    code = encode(tmp_path, content, NORTH_MAP)
    assert_refused(capsys, code, tmp_path / "out.encoded", what, "--allow-empty")
    assert encode(tmp_path, content, NORTH_MAP, "--allow-empty") == 0
    assert "nothing to match" in capsys.readouterr().out
    assert read_encoded(tmp_path / "out.encoded").record_count == 0
