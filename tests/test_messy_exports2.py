"""Hand-made exports as other organisations' systems write them, through `blindmatch encode`
(issue 21 item 3): placeholders for "unknown" in names, postcodes and dates are missing, not
values strangers share, and are reported; Excel's trailing delimiter on data rows is read;
an Excel date serial number is named as one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from blindmatch.cli import main
from blindmatch.client import ProjectTokens
from blindmatch.client.encoding.encode import read_secret
from tests.support import (
    NORTH_MAP,
    PERSON_SCHEMA,
    PURPOSE,
    STRONG_SECRET,
    Matcher,
    Org,
    index_all,
)
from tests.support import encode as encode_org

HEADER = "URN,Forenames,Surname,DOB,Sex,Postcode"


def encode(tmp_path: Path, data: bytes, map_text: str = NORTH_MAP) -> tuple[int, dict]:  # type: ignore[type-arg]
    export = tmp_path / "export.csv"
    export.write_bytes(data)
    mapping = tmp_path / "map.toml"
    mapping.write_text(map_text, encoding="utf-8")
    secret = tmp_path / "secret"
    secret.write_text(STRONG_SECRET, encoding="utf-8")
    out = tmp_path / "out.encoded"
    code = main(
        ["encode", str(export), "--schema", str(PERSON_SCHEMA), "--secret-file", str(secret),
         "--mapping", str(mapping), "--out", str(out), "-q"]
    )  # fmt: skip
    report = out / "local" / "report.json"
    return code, json.loads(report.read_text()) if report.exists() else {}


def clks(tmp_path: Path) -> list[bytes]:
    folder = tmp_path / "out.encoded"
    manifest = json.loads((folder / "manifest.json").read_text())
    size = manifest["clk_bits"] // 8
    data = (folder / "clks.bin").read_bytes()
    return [data[i * size : (i + 1) * size] for i in range(manifest["record_count"])]


def field(report: dict, name: str) -> dict:  # type: ignore[type-arg]
    return next(f for f in report["fields"] if f["field"] == name)


@pytest.mark.parametrize(
    ("column", "placeholder"),
    [
        ("Postcode", "NFA"),
        ("Postcode", "No fixed abode"),
        ("Postcode", "ZZ99 3VZ"),
        ("Forenames", "Unk"),
        ("Surname", "Not stated"),
        ("Forenames", "TBC"),
    ],
)
def test_a_placeholder_is_missing_so_strangers_do_not_share_it(
    tmp_path: Path, column: str, placeholder: str
) -> None:
    people = [["N1", "Ann", "Lee", "01/02/1970", "F", "LS6 2AB"],
              ["N2", "Bob", "Ray", "05/06/1981", "M", "M14 5RT"]]  # fmt: skip
    at = HEADER.split(",").index(column)
    for person in people:
        person[at] = placeholder
    rows = "\n".join([HEADER, *(",".join(p) for p in people)]) + "\n"
    code, report = encode(tmp_path, rows.encode())
    assert code == 0
    name = {"Postcode": "postcode", "Forenames": "given_name", "Surname": "surname"}[column]
    counts = field(report, name)
    assert (counts["present"], counts["missing"]) == (0, 2)
    assert counts["placeholders"] == {placeholder: 2}
    assert counts["placeholder_rows"] == [2, 3]
    # The same as a blank cell: the placeholder adds nothing to the encoding.
    first = clks(tmp_path)
    code, _ = encode(tmp_path, rows.replace(placeholder, "").encode())
    assert code == 0 and clks(tmp_path) == first


@pytest.mark.parametrize("written", ["01/01/1900", "31/12/1899", "01/01/1800", "31/12/9999"])
def test_a_placeholder_date_is_missing_and_reported(tmp_path: Path, written: str) -> None:
    rows = f"{HEADER}\nN1,Ann,Lee,{written},F,LS6 2AB\nN2,Bob,Ray,{written},M,M14 5RT\n"
    code, report = encode(tmp_path, rows.encode())
    assert code == 0
    dob = field(report, "dob")
    assert (dob["present"], dob["missing"], dob["invalid"]) == (0, 2, 0)
    assert dob["placeholders"] == {written: 2}


def test_the_printed_report_names_the_placeholders_and_their_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = (
        f"{HEADER}\nN1,UNKNOWN,Lee,01/01/1900,F,NFA\nN2,N/K,Ray,05/06/1981,M,NFA\n"
        "N3,Cy,Po,05/06/1982,M,\n"
    )
    export = tmp_path / "export.csv"
    export.write_text(rows, encoding="utf-8")
    (tmp_path / "map.toml").write_text(NORTH_MAP, encoding="utf-8")
    (tmp_path / "secret").write_text(STRONG_SECRET, encoding="utf-8")
    code = main(
        ["encode", str(export), "--schema", str(PERSON_SCHEMA), "--secret-file",
         str(tmp_path / "secret"), "--mapping", str(tmp_path / "map.toml"), "--out",
         str(tmp_path / "out.encoded")]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    said = "for 'unknown' encoded as missing:"
    assert f"given_name: 2 placeholders {said} 'UNKNOWN' 1, 'N/K' 1 (rows 2, 3)" in out
    assert f"postcode: 2 placeholders {said} 'NFA' 2 (rows 2, 3)" in out
    assert f"dob: 1 placeholder {said} '01/01/1900' 1 (row 2)" in out


def test_a_trailing_delimiter_on_data_rows_only_is_read(tmp_path: Path) -> None:
    rows = ["N1,Zoë,O'Brien,14/03/1988,F,LS6 2AB", "N2,Bob,Ray,05/06/1981,M,M14 5RT"]
    code, _ = encode(tmp_path, ("\r\n".join([HEADER, *rows]) + "\r\n").encode())
    assert code == 0
    plain = clks(tmp_path)
    # Excel's trailing comma after each data row, not after the header: empty cells
    trailing = "\r\n".join([HEADER, *(r + "," for r in rows)]) + "\r\n"
    code, report = encode(tmp_path, trailing.encode())
    assert code == 0 and report["rows_encoded"] == 2
    assert clks(tmp_path) == plain


def test_a_cell_with_a_value_past_the_header_is_still_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = f"{HEADER}\nN1,Ann,Lee,01/02/1970,F,LS6 2AB,extra\n"
    code, _ = encode(tmp_path, rows.encode())
    assert code == 2
    assert "row 2 has 7 columns, the header has 6" in capsys.readouterr().err


def test_an_excel_date_serial_number_is_named_as_one(tmp_path: Path) -> None:
    rows = f"{HEADER}\nN1,Ann,Lee,29284,F,LS6 2AB\n"
    code, report = encode(tmp_path, rows.encode())
    assert code == 0
    (reason,) = [r["reason"] for r in field(report, "dob")["invalid_rows"]]
    assert "Excel date serial number (1980-03-04)" in reason
    assert "format the column as dates in Excel" in reason


def test_a_title_in_the_forenames_column_is_not_the_given_name(tmp_path: Path) -> None:
    plain = f"{HEADER}\nN1,John,Smith,01/02/1970,M,LS6 2AB\nN2,Mary Ann,Lee,05/06/1981,F,M14 5RT\n"
    code, _ = encode(tmp_path, plain.encode())
    assert code == 0
    first = clks(tmp_path)
    titled = plain.replace("John", "Mr John").replace("Mary Ann", "Dr. MARY Ann")
    code, report = encode(tmp_path, titled.encode())
    assert code == 0 and field(report, "given_name")["present"] == 2
    assert clks(tmp_path) == first


def test_a_title_alone_is_no_given_name(tmp_path: Path) -> None:
    rows = f"{HEADER}\nN1,Mr,Smith,01/02/1970,M,LS6 2AB\nN2,MRS.,Lee,05/06/1981,F,M14 5RT\n"
    code, report = encode(tmp_path, rows.encode())
    assert code == 0
    given = field(report, "given_name")
    assert (given["present"], given["missing"]) == (0, 2)
    assert given["placeholders"] == {"Mr": 1, "MRS.": 1}


@pytest.mark.parametrize("declared", ["", 'encoding = "utf-8"\n'])
def test_a_latin1_export_read_as_utf8_names_the_byte_and_what_cp1252_reads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], declared: str
) -> None:
    rows = f"{HEADER}\r\nN1,Jürgen,Straße,02/11/1975,M,M14 5RT\r\n"
    code, _ = encode(tmp_path, rows.encode("latin-1"), declared + NORTH_MAP)
    err = capsys.readouterr().err
    assert code == 2 and not (tmp_path / "out.encoded").exists()
    assert "line 2 is not valid UTF-8 (byte 5: 0xFC, which cp1252 reads as 'ü')" in err
    assert 'set encoding = "cp1252" in the mapping' in err


def query_south(
    matcher: Matcher, project: ProjectTokens, orgs: dict[str, Org], secret_file: Path,
    tmp_path: Path,
) -> list[str]:  # fmt: skip
    """The `query` command line of north against south's indexed encodings (indexed here)."""
    south = encode_org(orgs["south"], tmp_path / "south.encoded", read_secret(secret_file))
    with matcher.member(project.tokens["south"]) as member:
        index_all(member, "trial", south)
    query = ["query", "--project", "trial", "--token", project.tokens["north"], "--quiet"]
    query += ["--server", matcher.target, "--schema", str(PERSON_SCHEMA)]
    return [*query, "--secret-file", str(secret_file), "--purpose", PURPOSE]


def test_a_query_given_a_placeholder_says_it_was_left_out_as_one(
    matcher: Matcher,
    project: ProjectTokens,
    orgs: dict[str, Org],
    secret_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    query = query_south(matcher, project, orgs, secret_file, tmp_path)
    peter = [*query, "--given-name", "Mr Peter", "--surname", "Nowak", "--sex", "M"]
    assert main([*peter, "--dob", "01/01/1900", "--postcode", "NFA"]) == 0
    out = capsys.readouterr().out
    assert "query: held by south" in out  # the title is no name, the placeholders no values
    assert (
        "missing: date of birth, postcode (given as placeholders for unknown: date of birth "
        "'01/01/1900', postcode 'NFA')" in out
    )
    assert main([*peter, "--dob", "01/01/1900", "--json"]) == 0
    [result] = json.loads(capsys.readouterr().out)["results"]
    assert result["missing"] == ["dob", "postcode"]
    assert result["placeholders"] == {"dob": "01/01/1900"}


def test_a_two_digit_year_read_into_the_future_is_invalid_not_encoded(tmp_path: Path) -> None:
    # %y reads 00-68 as 2000-2068: '4/3/45' would be a date of birth still to come.
    rows = f"{HEADER}\nN1,Ann,Lee,4/3/80,F,LS6 2AB\nN2,Bob,Ray,4/3/45,M,M14 5RT\n"
    code, report = encode(tmp_path, rows.encode(), NORTH_MAP.replace("%d/%m/%Y", "%d/%m/%y"))
    assert code == 0
    dob = field(report, "dob")
    assert (dob["present"], dob["invalid"]) == (1, 1)
    [invalid] = dob["invalid_rows"]
    assert invalid["row"] == 3
    assert "'4/3/45' reads as 2045-03-04 under %d/%m/%y, a date still to come" in invalid["reason"]
    assert "four-digit years (%Y)" in invalid["reason"]


def test_ids_excel_wrote_in_scientific_notation_are_named_not_offered_keep_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = (
        "NHS,Forenames,Surname,DOB,Sex,Postcode\n9.43477E+09,Ann,Lee,01/02/1970,F,LS6 2AB\n"
        "9.43477E+09,Bob,Ray,01/02/1971,M,LS6 2AB\n"
    )
    code, _ = encode(tmp_path, rows.encode(), NORTH_MAP.replace('"URN"', '"NHS"'))
    err = capsys.readouterr().err
    assert code == 2 and not (tmp_path / "out.encoded").exists()
    assert "row 3, column NHS: id '9.43477E+09' repeats row 2" in err
    assert "numbers Excel wrote in scientific notation" in err
    assert "format the column as Text" in err and "keep-first" not in err


def test_unique_ids_in_scientific_notation_are_encoded_with_a_warning(tmp_path: Path) -> None:
    rows = (
        "NHS,Forenames,Surname,DOB,Sex,Postcode\n9.43477E+09,Ann,Lee,01/02/1970,F,LS6 2AB\n"
        "4.01023e+09,Bob,Ray,01/02/1971,M,LS6 2AB\nA-3,Cy,Po,01/02/1972,M,LS6 2AB\n"
    )
    code, report = encode(tmp_path, rows.encode(), NORTH_MAP.replace('"URN"', '"NHS"'))
    assert code == 0 and report["rows_encoded"] == 3
    [warning] = [w for w in report["warnings"] if "scientific notation" in w]
    assert "column NHS has ids such as '9.43477E+09', '4.01023e+09'" in warning


def test_the_same_people_encode_identically_whatever_the_exports_form(tmp_path: Path) -> None:
    plain = (
        "URN,Forenames,Surname,DOB,Sex,Postcode\n"
        "P1,John,Smith,1980-03-04,M,SW1A 1AA\n"
        "P2,Siobhán,O'Brien,1975-11-02,F,LS6 2AB\n"
        "P3,Mary Ann,Smith-Jones,1990-12-25,F,\n"
        "P4,Jürgen,Straße,1960-01-31,M,EH1 2NG\n"
    )
    plain_map = NORTH_MAP.replace(', date_format = "%d/%m/%Y"', "")
    code, _ = encode(tmp_path, b"\xef\xbb\xbf" + plain.encode(), plain_map)
    assert code == 0
    first = clks(tmp_path)
    # Excel on Windows: cp1252, its sep= line, ';', CRLF, a full-name column with titles,
    # dates from two systems, sex in words, postcodes spaced anyhow, a placeholder for no
    # address, a trailing delimiter after each data row, a blank line at the end.
    excel = (
        "sep=;\r\nRef;Full Name;Date of Birth;Gender;Post Code\r\n"
        'P1;"SMITH, Mr John";04.03.1980;Male;sw1a1aa ;\r\n'
        "P2;O’BRIEN, Ms SIOBHAN;02/11/1975 00:00:00;female;ls6  2ab;\r\n"
        "P3;Smith Jones, Dr. Mary Ann;25 Dec 1990;F;No fixed abode;\r\n"
        "P4;STRASSE, Jurgen;31/01/1960;M;eh1 2ng;\r\n\r\n"
    )
    excel_map = (
        'id = "Ref"\nencoding = "cp1252"\n[fields]\n'
        'given_name = { column = "Full Name", split = "surname, given" }\n'
        'surname = { column = "Full Name", split = "surname, given" }\n'
        'dob = { column = "Date of Birth", date_format = ["%d.%m.%Y", "%d/%m/%Y", "%d %b %Y"] }\n'
        'sex = "Gender"\npostcode = "Post Code"\n'
    )
    code, report = encode(tmp_path, excel.encode("cp1252"), excel_map)
    assert code == 0 and report["rows_encoded"] == 4
    assert clks(tmp_path) == first
