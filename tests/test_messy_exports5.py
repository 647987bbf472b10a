"""Hand-made exports walked through `blindmatch encode` (issue 21 item 3, intltext): dates
with Welsh or Irish month names and dates in digits of other scripts read as the dates they
write, encoding as the same date in English and ASCII does; an English date reads as before;
a Baltic (cp1257) export declared cp1252 is warned of where its words show it, and no real
cp1252 name is."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blindmatch.client.encoding.datetext import plain_date, plain_dates
from blindmatch.client.encoding.exportfile import baltic_word
from blindmatch.client.encoding.normalise import (
    DEFAULT_DATE_FORMATS,
    QUERY_DATE_FORMATS,
    InvalidValue,
    parse_date,
)
from tests.support import NORTH_MAP
from tests.test_messy_exports2 import HEADER, clks, encode, field

NO_DATE_FORMAT = NORTH_MAP.replace('{ column = "DOB", date_format = "%d/%m/%Y" }', '"DOB"')
CP1252_MAP = NORTH_MAP.replace('id = "URN"', 'id = "URN"\nencoding = "cp1252"')

WELSH = ("Ionawr", "Chwefror", "Mawrth", "Ebrill", "Mai", "Mehefin", "Gorffennaf", "Awst",
         "Medi", "Hydref", "Tachwedd", "Rhagfyr")  # fmt: skip
WELSH_SHORT = ("Ion", "Chwef", "Maw", "Ebr", "Mai", "Meh", "Gorff", "Awst", "Medi", "Hyd",
               "Tach", "Rhag")  # fmt: skip
IRISH = ("Eanáir", "Feabhra", "Márta", "Aibreán", "Bealtaine", "Meitheamh", "Iúil", "Lúnasa",
         "Meán Fómhair", "Deireadh Fómhair", "Samhain", "Nollaig")  # fmt: skip
IRISH_SHORT = ("Ean", "Feabh", "Márta", "Aib", "Beal", "Meith", "Iúil", "Lún", "MFómh",
               "DFómh", "Samh", "Noll")  # fmt: skip
ENGLISH_WORDS = {
    "january", "february", "march", "april", "may", "june", "july", "august", "september",
    "october", "november", "december", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep",
    "sept", "oct", "nov", "dec", "mon", "tue", "tues", "wed", "thu", "thur", "thurs", "fri",
    "sat", "sun", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday",
}  # fmt: skip


def sub(tmp_path: Path, name: str) -> Path:
    """A folder of its own for one export and its encoding."""
    folder = tmp_path / name
    folder.mkdir(exist_ok=True)
    return folder


def bare(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", text) if not unicodedata.combining(c))


def export(rows: list[tuple[str, str, str, str]]) -> bytes:
    """An export of (id, given name, surname, date of birth) rows, the rest fixed."""
    lines = [HEADER, *(f'{i},{g},{s},"{dob}",F,LS6 2AB' for i, g, s, dob in rows)]
    return ("\r\n".join(lines) + "\r\n").encode()


# (as written by a Welsh or Irish system, the same date in English)
WELSH_IRISH = [
    ("3 Ebrill 1980", "3 April 1980"),
    ("3 Mis Ebrill 1980", "3 April 1980"),
    ("03 mis Rhagfyr 1975", "03 December 1975"),
    ("03-EBR-1980", "03-APR-1980"),
    ("14-GORFF-1969", "14-JUL-1969"),
    ("dydd Mawrth, 4 Mawrth 1980", "Tuesday, 4 March 1980"),
    ("4ydd Mawrth 1980", "4th March 1980"),
    ("1af Mai 1990", "1st May 1990"),
    ("21 Awst 1961", "21 August 1961"),
    ("21-AWST-1961", "21-AUG-1961"),
    ("9 Medi 2001", "9 September 2001"),
    ("3 Aibreán 1980", "3 April 1980"),
    ("3 Aibrean 1980", "3 April 1980"),  # without its accents
    ("17 Meán Fómhair 1972", "17 September 1972"),
    ("17 MEAN FOMHAIR 1972", "17 September 1972"),
    ("30 Deireadh Fómhair 1944", "30 October 1944"),
    ("Dé Máirt 4 Márta 1980", "Tuesday 4 March 1980"),
    ("4ú Samhain 1999", "4th November 1999"),
    ("12-NOLL-1950", "12-DEC-1950"),
    ("Lúnasa 2, 1985", "August 2, 1985"),
]


def test_welsh_and_irish_month_names_encode_as_the_same_date_in_english(
    tmp_path: Path,
) -> None:
    """Each Welsh or Irish date, invalid before (encoded as missing, counted invalid), is a
    valid date of birth encoding to the very CLK of the same person with the English date."""
    people = [(f"N{i}", "Ann", "Lee", written) for i, (written, _) in enumerate(WELSH_IRISH)]
    code, report = encode(sub(tmp_path, "cy"), export(people), NO_DATE_FORMAT)
    assert code == 0
    assert field(report, "dob")["invalid"] == 0
    assert field(report, "dob")["present"] == len(WELSH_IRISH)
    welsh = clks(sub(tmp_path, "cy"))
    english = [(f"N{i}", "Ann", "Lee", written) for i, (_, written) in enumerate(WELSH_IRISH)]
    code, report = encode(sub(tmp_path, "en"), export(english), NO_DATE_FORMAT)
    assert code == 0 and field(report, "dob")["invalid"] == 0
    assert welsh == clks(sub(tmp_path, "en"))


def test_a_declared_format_reads_welsh_and_irish_names_as_it_reads_english_ones(
    tmp_path: Path,
) -> None:
    """`%d-%b-%Y` reads abbreviations (EBR, AWST, which is the full name too) and not full
    names (EBRILL), as it reads APR and not APRIL; `%d %B %Y` the other way round."""
    assert parse_date("03-EBR-1980", "%d-%b-%Y") == date(1980, 4, 3)
    assert parse_date("03-awst-1980", "%d-%b-%Y") == date(1980, 8, 3)
    assert parse_date("03 Awst 1980", "%d %B %Y") == date(1980, 8, 3)
    assert parse_date("03 MFÓMH 1980", "%d %b %Y") == date(1980, 9, 3)
    for written, fmt in [("03-EBRILL-1980", "%d-%b-%Y"), ("03-APRIL-1980", "%d-%b-%Y"),
                         ("3 Ebr 1980", "%d %B %Y"), ("3 Apr 1980", "%d %B %Y")]:  # fmt: skip
        with pytest.raises(InvalidValue, match="is not a date in the format"):
            parse_date(written, fmt)
    with pytest.raises(InvalidValue, match=r"not a real date \(September has no day 31\)"):
        parse_date("31 Medi 1980", None)
    map_text = NORTH_MAP.replace('"%d/%m/%Y"', '"%d-%b-%Y"')
    rows = [("N1", "Ann", "Lee", "03-EBR-1980"), ("N2", "Bob", "Ray", "03-EBRILL-1980")]
    code, report = encode(tmp_path, export(rows), map_text)
    assert code == 0
    dob = field(report, "dob")
    assert dob["invalid"] == 1
    assert [(e["row"], e["reason"]) for e in dob["invalid_rows"]] == [
        (3, "'03-EBRILL-1980' is not a date in the format %d-%b-%Y")
    ]


def test_mawrth_is_march_unless_dydd_makes_it_tuesday() -> None:
    """Welsh Mawrth is March and Tuesday: after "dydd" it is the weekday (dropped, as an
    English weekday before the date is), anywhere else the month; a value it could make two
    dates of reads as neither."""
    assert parse_date("dydd Mawrth, 4 Mawrth 1980", None) == date(1980, 3, 4)
    assert parse_date("Dydd Mawrth 4 Ebrill 1980", None) == date(1980, 4, 4)
    assert parse_date("Mawrth 4, 1980", None) == date(1980, 3, 4)
    assert parse_date("4 Mawrth 1980", None) == date(1980, 3, 4)
    for written in ("Mawrth, 4 Ebrill 1980", "Mawrth 4 Ebrill 1980", "Dydd Mawrth 4 1980"):
        with pytest.raises(InvalidValue):
            parse_date(written, None)


def test_no_welsh_or_irish_name_is_an_english_month_or_weekday() -> None:
    """So no English date, read before, holds one: its reading cannot change."""
    for name in (*WELSH, *WELSH_SHORT, *IRISH, *IRISH_SHORT):
        for word in bare(name).casefold().split():
            assert word not in ENGLISH_WORDS, name
    # Each name is one month's only: Welsh and Irish share none that differ.
    months = {}
    for names in (WELSH, WELSH_SHORT, IRISH, IRISH_SHORT):
        for month, name in enumerate(names, start=1):
            assert months.setdefault(bare(name).casefold(), month) == month, name


CASES: tuple[Callable[[str], str], ...] = (str, str.upper, str.lower, str.title)


@given(
    st.dates(min_value=date(1900, 1, 2), max_value=date(2025, 12, 31)),
    st.sampled_from(sorted({*DEFAULT_DATE_FORMATS, *QUERY_DATE_FORMATS})),
    st.sampled_from(CASES),
    st.booleans(),
)
def test_an_english_date_reads_as_before(
    day: date, fmt: str, case: Callable[[str], str], weekday: bool
) -> None:
    """A date written in English in any default or query format, in any case, with or without
    a weekday before it: made plain as before (the same text for %b and %B formats) and read
    as the date."""
    written = case(day.strftime(fmt))
    if weekday:
        written = day.strftime("%A, ") + written
    assert plain_dates(written) == (plain_date(written), plain_date(written))
    assert parse_date(written, QUERY_DATE_FORMATS) == day


@given(
    st.dates(min_value=date(1900, 1, 2), max_value=date(2025, 12, 31)),
    st.sampled_from(["%d %B %Y", "%d-%B-%Y", "%B %d, %Y", "%d %b %Y", "%d-%b-%Y", "%b %d %Y"]),
    st.sampled_from([(WELSH, WELSH_SHORT), (IRISH, IRISH_SHORT)]),
    st.sampled_from(CASES),
    st.booleans(),
)
def test_a_welsh_or_irish_date_reads_as_its_english_one(
    day: date,
    fmt: str,
    language: tuple[tuple[str, ...], tuple[str, ...]],
    case: Callable[[str], str],
    accents: bool,
) -> None:
    """Each format reads a Welsh or Irish month's name where it reads the English one (a full
    name under %B, an abbreviation under %b), with or without accents, in any case."""
    full, short = language
    name = (short if "%b" in fmt else full)[day.month - 1]
    written = day.strftime(fmt.replace("%b", "@").replace("%B", "@")).replace("@", name)
    written = case(written if accents else bare(written))
    assert parse_date(written, fmt) == day
    assert parse_date(written, None) == day
    assert parse_date(written, QUERY_DATE_FORMATS) == day  # (query --dob)


DIGITS = {
    "Arabic-Indic": "٠١٢٣٤٥٦٧٨٩",
    "Extended Arabic-Indic": "۰۱۲۳۴۵۶۷۸۹",
    "Devanagari": "०१२३४५६७८९",
    "Bengali": "০১২৩৪৫৬৭৮৯",
}


def in_script(text: str, digits: str) -> str:
    return text.translate(str.maketrans("0123456789", digits))


def test_digits_of_other_scripts_encode_as_the_same_date_in_ascii_digits(tmp_path: Path) -> None:
    """A date of birth in Arabic-Indic, Extended Arabic-Indic or Devanagari digits, invalid
    before (strptime reads no day or month in them), encodes as the same date in ASCII."""
    days = ["03/04/1980", "14/03/1988", "29/02/1980"]
    people = [
        (f"N{i}", "Ann", "Lee", in_script(day, digits))
        for i, (day, digits) in enumerate((d, s) for s in DIGITS.values() for d in days)
    ]
    people.append(("N99", "Ann", "Lee", "١٩٨٠-٠٤-٠٣"))
    code, report = encode(sub(tmp_path, "script"), export(people), NORTH_MAP)
    assert code == 0
    dob = field(report, "dob")
    assert dob["invalid"] == 1  # the ISO date, not in the declared %d/%m/%Y: as in ASCII
    assert "'١٩٨٠-٠٤-٠٣' is not a date in the format %d/%m/%Y" in dob["invalid_rows"][0]["reason"]
    ascii_people = [(i, g, s, _ascii(dob_)) for i, g, s, dob_ in people]
    code, _ = encode(sub(tmp_path, "ascii"), export(ascii_people), NORTH_MAP)
    assert code == 0
    assert clks(sub(tmp_path, "script")) == clks(sub(tmp_path, "ascii"))


def _ascii(text: str) -> str:
    return "".join(str(unicodedata.decimal(c)) if c.isdecimal() else c for c in text)


@given(
    st.dates(min_value=date(1900, 1, 2), max_value=date(2025, 12, 31)),
    st.sampled_from(["%d/%m/%Y", "%Y-%m-%d", "%d %b %Y", "%d.%m.%Y"]),
    st.sampled_from(sorted(DIGITS.values())),
)
def test_a_date_in_any_scripts_digits_reads_as_in_ascii(day: date, fmt: str, digits: str) -> None:
    assert parse_date(in_script(day.strftime(fmt), digits), fmt) == day


# Real names written in cp1252 with ð, þ or Ð (Icelandic, Faroese; Vietnamese, Serbian and
# Croatian with Ð for Đ) beside other accented letters, none a Baltic name: no warning.
CP1252_NAMES = [
    "Guðrún Sigurðardóttir", "Þórunn Hallgrímsdóttir", "Arnþór Björnsson", "Sæþór Jóhannsson",
    "Hallbjörn Guðmundsson", "Þuríður Ævarsdóttir", "Høgni Jákupsson", "Guðrið Ólavsdóttir",
    "Ðoàn Văn", "Ðào Thị Hồng", "Ðinh Quốc", "Ðức Nguyễn", "Hélène Müller", "Zoë Noël",
    "Jérôme Lemaître", "Niccolò Bellò", "Cîrstea Mîndru", "Çlirim Berisha", "Gaëtan Sørensen",
    "Ðorðe Ðurišic", "Mlaðen Ðokovic", "Žaklina Ðukic",
]  # fmt: skip


def test_no_real_cp1252_name_reads_as_a_baltic_word() -> None:
    for name in CP1252_NAMES:
        written = name.encode("cp1252", "replace").decode("cp1252").replace("?", "")
        assert not baltic_word(written), written


# Lithuanian and Latvian names, as a cp1257 export of them reads in cp1252.
BALTIC = ["Šarūnas Žukauskas", "Jānis Bērziņš", "Dovilė Šimkutė", "Kalniņš", "Aušrinė"]


def test_a_cp1257_export_declared_cp1252_is_warned_of_by_its_words(tmp_path: Path) -> None:
    """A Lithuanian or Latvian export (cp1257) under encoding = "cp1252": 'Šarūnas' reads as
    'Ðarûnas' and 'Bērziņš' as 'Bçrziòð', other letters, and was encoded so with no word said.
    Now warned of where a word holds ð or þ beside letters no cp1252 name has beside them;
    the same file declared cp1257 is not, and nor is a cp1252 export of real names."""
    people = [(f"B{i}", *name.split(" ", 1), "01/02/1970") if " " in name else
              (f"B{i}", "Ona", name, "01/02/1970") for i, name in enumerate(BALTIC)]  # fmt: skip
    data = export(people).decode().encode("cp1257")
    code, report = encode(sub(tmp_path, "a"), data, CP1252_MAP)
    assert code == 0
    said = [w for w in report["warnings"] if "no name written in cp1252" in w]
    cause = (
        "letters of a Baltic code page read as cp1252: cp1257 (Lithuanian, Latvian: \u0161 as "
        "\u00f0, \u017e as \u00fe, \u016b as \u00fb, \u0117 as \u00eb, \u0146 as \u00f2); if the "
        'export is Baltic, set encoding = "cp1257" in the mapping'
    )
    assert said == [
        "given_name: 1 value holds letters together that no name written in cp1252 has, "
        f"such as '\u00d0ar\u00fbnas' (row 2): {cause}",
        "surname: 4 values hold letters together that no name written in cp1252 has, such "
        f"as 'B\u00e7rzi\u00f2\u00f0' (rows 3, 4, 5, 6): {cause}",
    ]
    code, report = encode(sub(tmp_path, "b"), data, CP1252_MAP.replace("cp1252", "cp1257"))
    assert code == 0 and not [w for w in report["warnings"] if "cp1252" in w]
    native = [
        (f"N{i}", *name.split(" ", 1), "01/02/1970")
        for i, name in enumerate(n for n in CP1252_NAMES if " " in n)
    ]
    data = export(native).decode().encode("cp1252", "ignore")
    code, report = encode(sub(tmp_path, "c"), data, CP1252_MAP)
    assert code == 0 and not [w for w in report["warnings"] if "cp1252 has" in w]
