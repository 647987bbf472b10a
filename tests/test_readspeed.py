"""Reading and normalising an export faster changes nothing that is encoded: the CLKs and
report of a fixed messy export stay as they were before (digests taken with the code before
the change), a read with the per-field caches all but off gives the same rows and report,
and the fast paths (ASCII folding, numeric dates) agree with the slow ones they stand for."""

from __future__ import annotations

import hashlib
import json
import random
import string
from datetime import date, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blindmatch.client.encoding import cells
from blindmatch.client.encoding.encode import EncodeReport, encode_csv, read_rows
from blindmatch.client.encoding.mapping import load_mapping
from blindmatch.client.encoding.normalise import (
    _fold_unicode,
    _read_date,
    fold,
    normalise_text,
)
from blindmatch.client.encoding.schema import load_schema
from tests.support import PERSON_SCHEMA

SECRET = b"blindmatch read-speed test secret, fixed"
# Values an export repeats, clean and messy: accents, full-width letters, titles, nicknames,
# placeholders, dates in several formats, impossible, ambiguous and at midnight.
GIVEN = ("Siobhán", "BOB", "Mary Ann", "mary-jane", "Élodie", "Zoë", "Łukasz", "Bjørn",
         "Mr John", "  robert ", "N/A", "", "NULL", "-", "Æthel", "Ｊｏｈｎ", "O'Neil", "Bill",
         "liz", "Dr. Kate", "ﬁona", "İsmail")  # fmt: skip
SURNAMES = ("O'Brien", "SMITH-JONES", "van Beethoven", "de la Cruz", "Müller", "nk",
            "unknown", "", "Straße", "Ø", "Núñez", "MacDonald", "st John")  # fmt: skip
DATES = ("14/03/1988", "03/04/1980", "04/04/1980", "31/02/1985", "29/02/1981", "29/02/1980",
         "1988-03-14", "14.03.1988", "1980-04-03 00:00:00.000", "03/04/1980 00:00",
         "03/04/1980 13:45", "", "N/A", "12/13/1990", "13/12/1990", "1/2/1970", "01/02/70",
         "32/01/1980", "00/01/1980", "14 Mar 1988", "2/11/1975 12:00:00 AM", "31/04/1990",
         "30/02/2000", " 02/11/1975 ", "02 / 11 / 1975", "٠٢/١١/١٩٧٥", "02/11/١٩٧٥",
         "29/02/0000", "05/06/0999")  # fmt: skip
SEXES = ("M", "F", "Male", "female", "MALE", "x", "U", "", "Mâle", "f ")
POSTCODES = ("LS6 2AB", "ls62ab", "M14 5RT", " sw1a 1aa ", "N/A", "", "SW1A-1AA",
             "ＳＷ１Ａ　１ＡＡ", "E1 6AN")  # fmt: skip
# Per export: (split rule, the mapping's date_format as TOML or None).
CASES = {
    "twofmt": ("surname, given", '["%d/%m/%Y", "%m/%d/%Y"]'),
    "nofmt": ("surname-first", None),
    "onefmt": ("given-first", '"%d/%m/%Y"'),
}
# SHA-256 of each export's CLKs and of its report as local/report.json has it (less its
# source path), taken with the code before cells.py and the fast paths (main at 39e560dd,
# placeholders listed; the CLKs are also those of 20fd204d, before placeholders).
# A deliberate change to what is encoded or reported updates them, saying so.
# Retaken by intltext (2026-12-07), deliberately: a date in Arabic-Indic digits ('٠٢/١١/١٩٧٥')
# is read as its ASCII digits now. Under "onefmt" (%d/%m/%Y) the 28 rows holding it, invalid
# before, encode as 1975-11-02, and only they changed (every other row's CLK compared byte for
# byte with main at d092ed63; '02/11/١٩٧٥' read so before too, strptime's %Y taking any
# digits); under "twofmt" it is reported as ambiguous instead of unreadable, the CLKs as before.
# The reports retaken by the lead (stop 56), deliberately: leftovers2 counts in words ("486
# values", was "486 value(s)"); the CLKs are as before, and the reports differ from the earlier
# ones in those words only (diffed against 25ad9fb's).
# All three reports retaken by exportwalk (2026-12-07), deliberately: the reason of a date with
# a time of day other than midnight ('03/04/1980 13:45') says so ("; it has a time of day,
# 13:45, other than midnight: ..."). The CLKs are as before, and each report with that clause
# taken out of its reasons hashes to the digest before (c0fabc0a..., 5be2c6cc..., 1d12f6d3...).
EXPECTED = {
    "twofmt": (
        "bd11f6d4748c99beba4089182f6cea55f3979e66e73a5f0e41d68f6d6473a23c",
        "9160c647197bff6871c6c42c9c449fe1b4d1903a0a47261bf9c8687b2b7df80d",
    ),
    # The report retaken by messywalk2 (2026-12-07), deliberately: the default date formats
    # gained the month's name between hyphens or first (03-Apr-1980, April 3, 1980), so an
    # unreadable date's reason lists them too. The CLKs are as before, and the report with the
    # old list of formats put back in its reasons hashes to the old digest (573f67fb...).
    "nofmt": (
        "414711bf0831df3921c671028aae2e293b8786dcfcbc9510a5b1032cfe300a20",
        "eefa10bb6522041095e5d45b0ea3ebbd937f25a680ab1f8c39d0d5120df7c582",
    ),
    # The report retaken by clileft (2026-12-07), deliberately: a date of birth over 150 years
    # ago is invalid for that ('05/06/0999' reads as 0999-06-05, more than 150 years ago: ...),
    # where clkhash's validation refused it before ("time data '999-06-05' does not match
    # format"): the reason of those 19 rows alone differs (diffed), the CLKs are as before.
    # Retaken by the lead at the merge of clileft and exportwalk: both changes' reasons at once
    # (0f24829a... with clileft's alone, 88c3661b... with exportwalk's alone).
    "onefmt": (
        "245452d28a9adaab4dfb0617ec2a824c3076b2a208acef71c73d91b38ca51e08",
        "d88926c8aa23f8089e368c2d490e5b06fd4912e87dec66a6bf4a557618f47d86",
    ),
}


def write_export(folder: Path, name: str, rows: int = 600) -> tuple[Path, Path]:
    """A fixed messy export and its mapping (the same on every run: a seeded generator)."""
    split, date_format = CASES[name]
    rng = random.Random(name)
    lines = ["id,Full,DOB,Sex,PC"]
    for i in range(rows):
        surname, given_name = rng.choice(SURNAMES), rng.choice(GIVEN)
        full = (
            f"{surname}, {given_name}" if split == "surname, given" else f"{given_name} {surname}"
        )
        cells_ = [f"R{i}", full, rng.choice(DATES), rng.choice(SEXES), rng.choice(POSTCODES)]
        lines.append(",".join('"' + c.replace('"', '""') + '"' for c in cells_))
        if i % 97 == 5:
            lines.append(",,,,")  # a blank row
    csv_path = folder / f"{name}.csv"
    csv_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    dob = f'{{ column = "DOB", date_format = {date_format} }}' if date_format else '"DOB"'
    mapping = folder / f"{name}.toml"
    mapping.write_text(
        f'id = "id"\n[fields]\ngiven_name = {{ column = "Full", split = "{split}" }}\n'
        f'surname = {{ column = "Full", split = "{split}" }}\ndob = {dob}\nsex = "Sex"\n'
        'postcode = "PC"\n',
        encoding="utf-8",
    )
    return csv_path, mapping


def digests(folder: Path, name: str) -> tuple[str, str]:
    csv_path, mapping_path = write_export(folder, name)
    schema = load_schema(PERSON_SCHEMA)
    result = encode_csv(csv_path, schema, load_mapping(mapping_path, schema), SECRET,
                        max_workers=1)  # fmt: skip
    report = result.report.to_dict()
    report.pop("source")
    clks = hashlib.sha256(bytes(memoryview(result.clks).cast("B"))).hexdigest()
    text = json.dumps(report, sort_keys=True, ensure_ascii=False)
    return clks, hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_fixed_messy_export_encodes_to_the_clks_and_report_it_did_before(
    name: str, tmp_path: Path
) -> None:
    assert digests(tmp_path, name) == EXPECTED[name]


def test_a_read_with_the_caches_all_but_off_gives_the_same_rows_and_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    schema = load_schema(PERSON_SCHEMA)
    for name in sorted(CASES):
        csv_path, mapping_path = write_export(tmp_path, name)
        mapping = load_mapping(mapping_path, schema)
        cached = EncodeReport(source="x")
        ids, rows = read_rows(csv_path, schema, mapping, cached, on_duplicate_id="keep-all")
        monkeypatch.setattr(cells, "CACHE_SIZE", 1)  # every repeat read again
        uncached = EncodeReport(source="x")
        again = read_rows(csv_path, schema, mapping, uncached, on_duplicate_id="keep-all")
        monkeypatch.undo()
        assert again == (ids, rows)
        assert uncached.to_dict() == cached.to_dict()
        assert cached.fields[0].present and any(f.invalid for f in cached.fields)


def test_a_cell_readers_cache_is_bounded_and_gives_what_read_cell_gives(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    schema = load_schema(PERSON_SCHEMA)
    index = next(i for i, rule in enumerate(schema.rules) if rule.kind == "date")
    rule, spec = schema.rules[index], schema.clk_schema.fields[index]
    monkeypatch.setattr(cells, "CACHE_SIZE", 8)
    read = cells.cell_reader(rule, None, spec)
    closure = dict(zip(read.__code__.co_freevars, read.__closure__ or (), strict=True))
    known = closure["known"].cell_contents  # the reader's cache
    texts = [f"19{k:02d}-01-02" for k in range(30)] + ["1988-02-30", "N/A", "1988-02-30"]
    for text in texts:
        got = read(text)
        assert len(known) <= 8
        want = cells.read_cell(rule, None, spec, text)
        assert got == (want[1] if want[0] == "value" else want)
    assert read("1930-01-02") == "1930-01-02"
    assert read("1988-02-30")[0] == "invalid"  # type: ignore[index]


@given(st.text(alphabet=st.characters(max_codepoint=127)))
def test_fold_and_normalise_text_of_ascii_text_are_the_unicode_paths(value: str) -> None:
    assert fold(value) == _fold_unicode(value)
    assert normalise_text(value) == "".join(ch for ch in _fold_unicode(value) if ch.isalnum())


NUMERIC_FORMATS = ("%d/%m/%Y", "%m/%d/%Y", "%Y-%m-%d", "%Y%m%d", "%d-%m-%Y", "%d.%m.%Y",
                   "%Y/%m/%d", "%d%m%Y", "%d %b %Y", "%d-%b-%Y")  # fmt: skip


def outcome(read: object, text: str, fmt: str) -> tuple[str, object]:
    try:
        return ("date", read(text, fmt))  # type: ignore[operator]
    except ValueError as exc:
        return ("error", str(exc))


def strptime_date(text: str, fmt: str) -> date:
    return datetime.strptime(text, fmt).date()


@given(
    st.sampled_from(NUMERIC_FORMATS),
    st.integers(0, 9999),
    st.integers(0, 13),
    st.integers(0, 32),
)
def test_numeric_dates_read_as_strptime_reads_them(
    fmt: str, year: int, month: int, day: int
) -> None:
    text = fmt.replace("%Y", f"{year:04d}").replace("%m", f"{month:02d}")
    text = text.replace("%d", f"{day:02d}").replace("%b", "Mar")
    assert outcome(_read_date, text, fmt) == outcome(strptime_date, text, fmt)


@given(
    st.sampled_from(NUMERIC_FORMATS),
    st.text(alphabet=string.digits + "/-. ٠١" + "aM", min_size=4, max_size=12),
)
def test_any_text_reads_as_strptime_reads_it(fmt: str, text: str) -> None:
    assert outcome(_read_date, text, fmt) == outcome(strptime_date, text, fmt)
