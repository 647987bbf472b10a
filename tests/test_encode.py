"""Encoding an export locally: report, invariants, and bad input with no partial state."""

from __future__ import annotations

import json
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from blindmatch.client.encoding.encode import (
    EncodeReport,
    encode_csv,
    encode_fallback,
    read_rows,
    read_secret,
)
from blindmatch.client.encoding.encoded import read_encoded
from blindmatch.client.encoding.harden import NONE, encode_records
from blindmatch.client.encoding.mapping import load_mapping
from blindmatch.client.encoding.schema import load_schema
from tests.support import (
    NO_FALLBACK_SCHEMA,
    NORTH_MAP,
    ORIGINAL_NO_FALLBACK_SCHEMA,
    PERSON_SCHEMA,
    ROOT,
    Org,
    assert_refused,
    encode_cli,
)


def test_encode_writes_upload_files_and_keeps_ids_local(
    orgs: dict[str, Org], secret_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "north.encoded"
    assert encode_cli(orgs["north"], secret_file, out) == 0
    encoded = read_encoded(out)
    assert encoded.record_count == 5
    # The default schema adds a fallback CLK (without dob) of the same length to each record.
    assert encoded.clk_bits == 2 * load_schema(PERSON_SCHEMA).clk_bits
    assert encoded.fallback_bits == load_schema(PERSON_SCHEMA).clk_bits
    assert (out / "clks.bin").stat().st_size == 5 * encoded.clk_bits // 8
    manifest = json.loads((out / "manifest.json").read_text())
    assert "N1" not in json.dumps(manifest)  # no local id in what is uploaded
    assert b"N1" not in (out / "clks.bin").read_bytes()
    assert encoded.read_ids() == ["N1", "N2", "N3", "N4", "N5"]
    printed = capsys.readouterr().out
    assert "Encoded 5 of 5 rows" in printed
    assert "invalid dob at row 4" in printed  # 30/02/1970


def test_invalid_values_are_encoded_as_missing_and_listed_by_row(
    orgs: dict[str, Org], secret_file: Path
) -> None:
    schema = load_schema(PERSON_SCHEMA)
    result = encode_csv(
        orgs["north"].csv, schema, load_mapping(orgs["north"].mapping, schema), b"k"
    )
    dob = next(f for f in result.report.fields if f.field == "dob")
    assert (dob.present, dob.missing, dob.invalid) == (4, 0, 1)
    assert dob.invalid_rows == [
        # was "is not a date in the format %d/%m/%Y": a real day, not its format, is what it lacks
        {
            "row": 4,
            "reason": "'30/02/1970' matches %d/%m/%Y but is not a real date (February "
            "has no day 30)",
        }
    ]
    assert result.report.rows_encoded == 5


def test_same_people_in_different_conventions_encode_identically(
    orgs: dict[str, Org], tmp_path: Path
) -> None:
    schema = load_schema(PERSON_SCHEMA)
    north = encode_csv(orgs["north"].csv, schema, load_mapping(orgs["north"].mapping, schema), b"k")
    south = encode_csv(orgs["south"].csv, schema, load_mapping(orgs["south"].mapping, schema), b"k")
    clk = north.clk_bits // 8
    # N1 Élodie O'Brien == S-10 ELODIE OBRIEN; N4 Zoltán Kovács == S-11; N5 == S-13.
    assert north.clks[0:clk] == south.clks[0:clk]
    assert north.clks[3 * clk : 4 * clk] == south.clks[1 * clk : 2 * clk]
    assert north.clks[4 * clk : 5 * clk] == south.clks[3 * clk : 4 * clk]
    assert north.clks[clk : 2 * clk] != south.clks[2 * clk : 3 * clk]


def test_a_different_secret_gives_different_encodings_and_fingerprint(orgs: dict[str, Org]) -> None:
    schema = load_schema(PERSON_SCHEMA)
    mapping = load_mapping(orgs["north"].mapping, schema)
    a = encode_csv(orgs["north"].csv, schema, mapping, b"one secret")
    b = encode_csv(orgs["north"].csv, schema, mapping, b"another secret")
    assert a.clks != b.clks
    assert a.fingerprint != b.fingerprint
    assert (
        a.fingerprint == encode_csv(orgs["north"].csv, schema, mapping, b"one secret").fingerprint
    )


# -- bad input: a clear error naming the file/row/column, exit 2, nothing written --------


def test_missing_mapped_column(
    orgs: dict[str, Org], secret_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    orgs["north"].mapping.write_text(NORTH_MAP.replace('"Postcode"', '"Post Code"'))
    out = tmp_path / "out.encoded"
    code = encode_cli(orgs["north"], secret_file, out)
    assert_refused(capsys, code, out, "north.csv", "'Post Code'", "mapped to postcode")


@pytest.mark.parametrize("written", ["Post Code", "post_code", "POST-CODE"])
def test_a_missing_column_written_with_other_spaces_or_punctuation_names_the_headers(
    written: str,
    orgs: dict[str, Org],
    secret_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The header's 'Postcode' mapped as 'Post Code' listed the header, and no more; a
    difference of case alone was pointed out."""
    orgs["north"].mapping.write_text(NORTH_MAP.replace('"Postcode"', f'"{written}"'))
    out = tmp_path / "out.encoded"
    code = encode_cli(orgs["north"], secret_file, out)
    assert_refused(
        capsys, code, out, f"the header has 'Postcode' for '{written}'; write them as the header"
    )


def test_non_utf8_csv(
    orgs: dict[str, Org], secret_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = orgs["north"].csv.read_text(encoding="utf-8")
    orgs["north"].csv.write_bytes(data.encode("latin-1"))
    out = tmp_path / "out.encoded"
    code = encode_cli(orgs["north"], secret_file, out)
    assert_refused(capsys, code, out, "north.csv", "line 2", "not valid UTF-8")


def test_ragged_csv(
    orgs: dict[str, Org], secret_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with open(orgs["north"].csv, "a", encoding="utf-8") as fh:
        fh.write("N6,Too,Few,01/01/1990\n")
    out = tmp_path / "out.encoded"
    code = encode_cli(orgs["north"], secret_file, out)
    assert_refused(capsys, code, out, "north.csv", "row 7 has 4 columns, the header has 6")


def test_repeated_record_id(
    orgs: dict[str, Org], secret_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with open(orgs["north"].csv, "a", encoding="utf-8") as fh:
        fh.write("N2,Jim,Smith,17/11/1990,M,M1 2AB\n")
    out = tmp_path / "out.encoded"
    code = encode_cli(orgs["north"], secret_file, out)
    assert_refused(capsys, code, out, "row 7, column URN", "'N2' repeats row 3")


def test_every_repeated_record_id_is_named_not_only_the_first(
    orgs: dict[str, Org], secret_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--on-duplicate-id error` (the default) named only the first repeat, so a file with
    many took as many runs to fix; now every repeated row (the first 10, then how many more),
    still exit 2 and nothing written."""
    with open(orgs["north"].csv, "a", encoding="utf-8") as fh:
        fh.write("N2,Jim,Smith,17/11/1990,M,M1 2AB\n")  # row 7
        fh.write("N4,Zoltán,Kovács,05/05/1965,M,CF10 1AA\n")  # row 8: as row 5, exactly
        for i in range(11):  # rows 9-19
            fh.write(f"N{1 + i % 2},Ann,Other,01/01/1990,F,M1 2AB\n")
    out = tmp_path / "out.encoded"
    code = encode_cli(orgs["north"], secret_file, out)
    assert_refused(
        capsys, code, out, "north.csv: 13 rows repeat an earlier row's id (3 ids): "
        "row 7, column URN: id 'N2' repeats row 3; row 8, column URN: id 'N4' is an exact "
        "duplicate of row 5; row 9, column URN: id 'N1' repeats row 2; ",
        "; row 16, column URN: id 'N2' repeats row 3; and 3 more; record ids must be unique",
    )  # fmt: skip


def test_schema_that_is_not_clkhash_v3(
    orgs: dict[str, Org], secret_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    schema = json.loads(PERSON_SCHEMA.read_text())
    schema["version"] = 2
    bad = tmp_path / "old-schema.json"
    bad.write_text(json.dumps(schema))
    out = tmp_path / "out.encoded"
    code = encode_cli(orgs["north"], secret_file, out, schema=bad)
    assert_refused(capsys, code, out, "old-schema.json", "not a clkhash v3 linkage schema")


def test_schema_that_breaks_the_v3_rules(
    orgs: dict[str, Org], secret_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    schema = json.loads(PERSON_SCHEMA.read_text())
    del schema["clkConfig"]["kdf"]
    bad = tmp_path / "broken-schema.json"
    bad.write_text(json.dumps(schema))
    out = tmp_path / "out.encoded"
    code = encode_cli(orgs["north"], secret_file, out, schema=bad)
    assert_refused(capsys, code, out, "broken-schema.json", "invalid clkhash v3 schema")


def test_empty_secret_file(
    orgs: dict[str, Org], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.secret"
    empty.write_text("\n")
    out = tmp_path / "out.encoded"
    code = encode_cli(orgs["north"], empty, out)
    assert_refused(capsys, code, out, "empty.secret", "the secret file is empty")


def test_mapping_problems_are_reported_together(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[fields]\nsurnme = "Surname"\ndob = { column = "DOB", date_format = "dd/mm" }\n'
    )
    from blindmatch.client.errors import InputError

    with pytest.raises(InputError) as err:
        load_mapping(bad, load_schema(PERSON_SCHEMA))
    message = str(err.value)
    assert "'id' must name" in message
    assert "fields.surnme: not a field of the schema" in message
    # strptime: what reads the dates, as docs/mapping.md says (was "strftime"); the format
    # meant is named, and that it lacks a year (since 2026-12-07).
    assert "fields.dob: date_format 'dd/mm' is not a strptime format; '%d/%m' has no year" in (
        message
    )


def test_an_unknown_key_in_a_fields_table_is_told_the_keys_it_takes(tmp_path: Path) -> None:
    """`dob = { column = "DOB", format = "%d/%m/%Y" }` was told only `unknown key(s) format`."""
    from blindmatch.client.errors import InputError

    bad = tmp_path / "bad.toml"
    bad.write_text(NORTH_MAP.replace("date_format", "format"))
    with pytest.raises(InputError) as err:
        load_mapping(bad, load_schema(PERSON_SCHEMA))
    assert "fields.dob: unknown key format (a field's table takes column, columns, " in str(
        err.value
    )
    assert "date_format, split, part, values)" in str(err.value)  # values: messywalk2


def test_a_mapping_error_lists_only_the_fields_a_mapping_may_name(tmp_path: Path) -> None:
    """docs/mapping.md "Mapping errors" shows this message: the derived `names` is not among
    the fields offered (mapping it is refused), and a person given to `query` the same."""
    from blindmatch.client.encoding.person import encode_person
    from blindmatch.client.errors import InputError

    mapping = tmp_path / "mapping.toml"
    mapping.write_text(
        'id = "URN"\n[fields]\nsurname = { column = "Surname", columns = ["A"] }\n'
        'dob = { column = "DOB", date_format = "dd/mm" }\n'
        'sex = { column = "Sex", date_format = "%d" }\nphone = "Phone"\n'
    )
    with pytest.raises(InputError) as err:
        load_mapping(mapping, load_schema(PERSON_SCHEMA))
    shown = (ROOT / "docs" / "mapping.md").read_text()
    assert f"Error: mapping.toml: {str(err.value).split(': ', 1)[1]}\n" in shown
    assert "(the fields to map are: given_name, surname, dob, sex, postcode)" in str(err.value)
    schema, person = load_schema(PERSON_SCHEMA), {"surname": "Smith", "dob": "2001-12-12"}
    with pytest.raises(InputError, match=r"^phone: .* \(the fields to give are: given_name, "
                       r"surname, dob, sex, postcode\)$"):  # fmt: skip
        encode_person(schema, b"s" * 32, {**person, "phone": "1"})
    # A derived field's value was ignored (the same CLK): refused, as in a mapping.
    with pytest.raises(InputError, match=r"^names: the schema person-uk\.json derives it"):
        encode_person(schema, b"s" * 32, {**person, "names": "Zed Q"})


def test_a_failed_encode_keeps_the_previous_output(
    orgs: dict[str, Org], secret_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "north.encoded"
    assert encode_cli(orgs["north"], secret_file, out) == 0
    before = (out / "clks.bin").read_bytes()
    with open(orgs["north"].csv, "a", encoding="utf-8") as fh:
        fh.write("N9,ragged\n")
    assert encode_cli(orgs["north"], secret_file, out) == 2
    assert (out / "clks.bin").read_bytes() == before
    assert read_encoded(out).record_count == 5


def test_secret_ignores_surrounding_whitespace(tmp_path: Path) -> None:
    path = tmp_path / "s"
    path.write_bytes(b"  shared secret \n")
    assert read_secret(path) == b"shared secret"


def test_bad_quoting_in_a_data_row_names_the_row(
    orgs: dict[str, Org], secret_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with open(orgs["north"].csv, "a", encoding="utf-8") as fh:
        fh.write('N6,"Unterminated,Smith,01/01/1990,F,OX4 1AA\n')
    out = tmp_path / "out.encoded"
    code = encode_cli(orgs["north"], secret_file, out)
    assert_refused(capsys, code, out, "north.csv", "row 7", "check quoting")


@pytest.mark.parametrize("placeholder", ["N/A", "NULL", "unknown", "Not Known", "-"])
def test_placeholders_are_missing_not_names(
    orgs: dict[str, Org], tmp_path: Path, placeholder: str
) -> None:
    data = orgs["north"].csv.read_text(encoding="utf-8").replace("Hughes", placeholder)
    orgs["north"].csv.write_text(data, encoding="utf-8")
    schema = load_schema(PERSON_SCHEMA)
    result = encode_csv(
        orgs["north"].csv, schema, load_mapping(orgs["north"].mapping, schema), b"k"
    )
    surname = next(f for f in result.report.fields if f.field == "surname")
    assert (surname.present, surname.missing) == (4, 1)


def test_the_report_flags_placeholders_and_records_with_few_fields(
    tmp_path: Path, secret_file: Path
) -> None:
    rows = ["URN,Forenames,Surname,DOB,Sex,Postcode"]
    # (01/01/1970: a placeholder the encoder cannot know is one, unlike 01/01/1900)
    rows += [f"N{i},Name{i},Surname{i},01/01/1970,F,AB{i} 1CD" for i in range(20)]
    rows += ["N98,,Lonely,,,", "N99,Solo,,,F,"]
    data = tmp_path / "north.csv"
    data.write_text("\n".join(rows) + "\n")
    mapping = tmp_path / "north.toml"
    mapping.write_text(NORTH_MAP)
    schema = load_schema(PERSON_SCHEMA)
    report = encode_csv(data, schema, load_mapping(mapping, schema), b"k").report
    dob = next(f for f in report.fields if f.field == "dob")
    assert (dob.distinct, dob.commonest, dob.commonest_rows) == (1, "1970-01-01", 20)
    assert any(
        "'1970-01-01' appears in 20 rows" in w and "placeholder" in w for w in report.warnings
    )
    assert report.few_fields_records == 2
    assert "2 records have fewer than 3 usable fields" in report.render()


def test_the_report_says_what_a_sparse_field_does_under_the_schema(
    tmp_path: Path, secret_file: Path
) -> None:
    rows = ["URN,Forenames,Surname,DOB,Sex,Postcode"]
    rows += [f"N{i},Name{i},Surname{i},,F,AB{i} 1CD" for i in range(10)]
    data = tmp_path / "north.csv"
    data.write_text("\n".join(rows) + "\n")
    mapping = tmp_path / "north.toml"
    mapping.write_text(NORTH_MAP)
    # The default's fallback CLK compares a record without a date of birth without it.
    schema = load_schema(PERSON_SCHEMA)
    report = encode_csv(data, schema, load_mapping(mapping, schema), b"k").report
    assert any(
        w.startswith("dob is present in only 0% of rows") and "not held against a match" in w
        for w in report.warnings
    )
    # Without the fallback CLK, a missing date lowers the score.
    schema = load_schema(NO_FALLBACK_SCHEMA)
    report = encode_csv(data, schema, load_mapping(mapping, schema), b"k").report
    assert any(
        w.startswith("dob is present in only 0% of rows") and "lowers the similarity" in w
        for w in report.warnings
    )


def test_encode_progress_covers_reading_and_the_fallback_clks(
    tmp_path: Path,
    secret_file: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What a terminal shows: a count while the export is read, and one bar over every
    row, moved by the default schema's fallback CLKs too (each of a row's two CLKs half of
    it). Before, reading showed nothing (2.7 minutes at 1,000,000 rows) and the bar reached
    100% after the first CLKs, then stood for 4 minutes while the fallback CLKs were made."""
    rows = 1000  # one tick of the reading count (readcsv.TICK_ROWS)
    data = tmp_path / "north.csv"
    data.write_text(
        "URN,Forenames,Surname,DOB,Sex,Postcode\n"
        + "".join(f"N{i},Grace,Hughes{i},12/12/2001,F,EH1 9ZZ\n" for i in range(rows)),
        encoding="utf-8",
    )
    (tmp_path / "north.toml").write_text(NORTH_MAP, encoding="utf-8")
    schema = load_schema(PERSON_SCHEMA)
    assert schema.fallback  # the default makes two CLKs a record
    mapping, secret = load_mapping(tmp_path / "north.toml", schema), read_secret(secret_file)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # bars, not lines
    result = encode_csv(data, schema, mapping, secret, progress=True)
    assert result.report.rows_encoded == rows
    shown = capsys.readouterr().err  # what tqdm draws first: the count, then the bar at 0
    assert "reading: 0 rows" in shown and "encoding:   0%" in shown
    # A bar over the rows, as the report counts them (was "0/2000", both CLKs of each).
    assert f"0/{rows}" in shown and f"0/{2 * rows}" not in shown
    # The ticks that move them: every row read, every CLK made (the fallback's included).
    read: list[int] = []
    _ids, normalised = read_rows(data, schema, mapping, EncodeReport(""), tick=read.append)
    assert sum(read) == rows
    made: list[int] = []
    encode_fallback(normalised, schema, secret, NONE, callback=made.append)
    assert sum(made) == rows


def test_unhardened_clks_stay_packed_while_encoded() -> None:
    """Without hardening, clkhash's filters are the CLKs' bytes already; they used to be
    unpacked to one byte a bit (and copied as booleans) and packed again: about 2 GB held
    at 1,000,000 records for each CLK of the default schema. The peak of what encoding
    4,000 records allocates (after one warm-up, which fills clkhash's caches) is now under
    one byte a bit of the CLKs; it was 2.3 times that."""
    schema = load_schema(ORIGINAL_NO_FALLBACK_SCHEMA)  # the rows below are its input as is
    rows = [[f"name{i}", f"surname{i}", "1985-03-02", "F", f"sw1a{i % 10}aa"] for i in range(4000)]
    encoding = schema.for_encoding()
    warm = encode_records(rows, encoding, b"s" * 32, NONE, field_names=schema.field_names)
    tracemalloc.start()
    try:
        clks = encode_records(rows, encoding, b"s" * 32, NONE, field_names=schema.field_names)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert np.array_equal(clks, warm) and clks.shape == (len(rows), schema.clk_bits // 8)
    assert clks.flags.writeable
    assert peak < len(rows) * schema.clk_bits
