"""Normalisation: the same value written differently must encode identically.

Every member runs these functions on every mapped value before encoding, so a
member's export conventions (case, accents, punctuation, spacing, date format)
never change an encoding. They are plain functions over strings, driven by a
`FieldRule` that `client.encoding.schema` derives from the shared clkhash schema; the
only per-member input is the date format a member declares in its mapping.

A value that cannot be normalised raises `InvalidValue`; the encoder then
encodes it as missing and reports it with its row number.

Two options, declared per field in the shared schema (see docs/schema.md), make
given names comparable across exports that write them differently:

- `first-name`: keep the first name only ('Mary Jane Ann' -> 'mary'), because
  some exports put middle names in the forename column and others do not;
- `nicknames`: replace a well-known nickname by its full name ('Bob' ->
  'robert'), from the table shipped in client/data/nicknames.csv.
"""

from __future__ import annotations

import calendar
import csv
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from functools import cache, lru_cache
from pathlib import Path
from typing import Literal

from blindmatch.client.encoding.datetext import (
    lifetime_problem,
    may_read,
    plain_dates,
    why_unread,
)

Kind = Literal["text", "date", "enum", "integer", "ignore"]
Option = Literal["first-name", "nicknames", "phonetic", "sorted"]
OPTIONS: tuple[Option, ...] = ("first-name", "nicknames", "phonetic", "sorted")
# Options of a derived field only (one whose value is made from other fields: `sources`).
DERIVED_OPTIONS: tuple[Option, ...] = ("phonetic", "sorted")
NICKNAMES_CSV = Path(__file__).resolve().parents[1] / "data" / "nicknames.csv"

# Letters that Unicode does not decompose into a base letter plus accents; and spacing
# modifier letters (U+02B0-U+02FF), which Python counts as letters: the apostrophe of O'Neill
# written with U+02BC, turned commas, primes, stress and tone marks, dropped as the
# apostrophes they stand for are.
_UNDECOMPOSED_LETTERS: dict[str | int, str | None] = {
    "ø": "o", "đ": "d", "ð": "d", "ł": "l", "æ": "ae", "œ": "oe", "þ": "th", "ı": "i",
    "ħ": "h", "ŧ": "t", **dict.fromkeys(range(0x2B0, 0x300)),
}  # fmt: skip
_UNDECOMPOSED = str.maketrans(_UNDECOMPOSED_LETTERS)

# Date formats tried, in order, when a member's mapping declares none: only
# unambiguous ones (never dd/mm vs mm/dd): numbers with the year first, or a month's name.
_UNAMBIGUOUS_DATE_FORMATS = (
    "%Y-%m-%d", "%Y%m%d", "%d %b %Y", "%d %B %Y", "%Y/%m/%d", "%d-%b-%Y", "%d-%B-%Y",
    "%b %d %Y", "%B %d %Y", "%b %d, %Y", "%B %d, %Y",
)  # fmt: skip
DEFAULT_DATE_FORMATS = _UNAMBIGUOUS_DATE_FORMATS
# Real-time queries (typed by a UK officer) also read the UK's day-first numeric dates:
# 02/11/1975 is 2 November 1975. Month-first is never tried, so none of these conflict.
QUERY_DATE_FORMATS = (*_UNAMBIGUOUS_DATE_FORMATS, "%d/%m/%Y", "%d-%m-%Y", "%d.%m.%Y")


# strptime's directives that `_read_date` reads itself, in a format of only these and
# punctuation ("%d/%m/%Y", "%Y-%m-%d", "%Y%m%d"): day and month of exactly two ASCII digits,
# the year of four, which is how strptime reads them too (its %d and %m try two digits first).
_NUMERIC = {"%d": r"(?P<d>\d\d)", "%m": r"(?P<m>\d\d)", "%Y": r"(?P<Y>\d\d\d\d)"}


@lru_cache(maxsize=256)
def _numeric_pattern(fmt: str) -> re.Pattern[str] | None:
    """The pattern of a numeric date format, or None where strptime alone reads `fmt`."""
    parts = re.split(r"(%[dmY])", fmt)
    literals = "".join(parts[0::2])
    if sorted(parts[1::2]) != ["%Y", "%d", "%m"] or any(
        ch.isalnum() or ch.isspace() or ch == "%" for ch in literals
    ):
        return None
    return re.compile(
        "".join(_NUMERIC[p] if k % 2 else re.escape(p) for k, p in enumerate(parts)), re.ASCII
    )


def numeric_date(text: str, fmt: str) -> date | None:
    """The date strptime reads `text` as under `fmt` where `fmt` is numeric ("%d/%m/%Y") and
    `text` has a two-digit day and month and is a real date; else None (ask strptime)."""
    pattern = _numeric_pattern(fmt)
    found = pattern.fullmatch(text) if pattern is not None else None
    if found is None:
        return None
    try:  # year 0, month 13 or 31 February: strptime's error, from strptime
        return date(int(found["Y"]), int(found["m"]), int(found["d"]))
    except ValueError:
        return None


def _read_date(text: str, fmt: str) -> date:
    """`datetime.strptime(text, fmt).date()`, the same date and the same error, faster for a
    numeric format's usual values (`numeric_date`); any other (one digit, non-ASCII digits,
    no such day, a month in words) read by strptime."""
    return numeric_date(text, fmt) or datetime.strptime(text, fmt).date()


class InvalidValue(ValueError):
    """A value that cannot be read as its field's kind; encoded as missing."""


class PlaceholderValue(InvalidValue):
    """A value systems write for "no value" (a date of 01/01/1900): encoded as missing, and
    reported as a placeholder, since records sharing it would look alike."""


class AmbiguousValue(InvalidValue):
    """A value that reads as different values under the formats given (a date that is
    valid day-first and month-first); reported, never guessed, and encoded as missing."""


@dataclass(frozen=True)
class FieldRule:
    """How to normalise one schema field, derived from the shared schema."""

    name: str
    kind: Kind
    date_format: str = "%Y-%m-%d"  # the schema's output format, for kind == "date"
    enum_values: tuple[str, ...] = ()
    upper: bool = False  # the schema asks for upper case strings
    options: tuple[Option, ...] = ()  # name options, from the schema (text fields only)
    # A derived field's value is made from these fields' normalised values (`derive`),
    # never read from the export: e.g. both names sorted, or a surname's phonetic code.
    sources: tuple[str, ...] = ()


# ASCII characters that are not letters or digits: what `normalise_text` drops from ASCII.
_ASCII_PUNCTUATION = str.maketrans("", "", "".join(
    chr(c) for c in range(128) if not chr(c).isalnum()
))  # fmt: skip


def fold(value: str) -> str:
    """Case-fold and strip accents: 'ÉLODIE' and 'élodie' both become 'elodie'."""
    if value.isascii():  # the Unicode steps leave ASCII as it is, but for its case
        return value.lower()
    return _fold_unicode(value)


def _fold_unicode(value: str) -> str:
    """`fold` of any text, step by step (for ASCII text, its lower case)."""
    text = unicodedata.normalize("NFKC", value).casefold()
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return unicodedata.normalize("NFC", text.translate(_UNDECOMPOSED))


def normalise_text(value: str) -> str:
    """Letters and digits only, folded: "O'Brien-Smith " -> 'obriensmith'.

    Punctuation and whitespace carry no identity in names and postcodes, and
    exports disagree on them ('SW1A 1AA' vs 'SW1A1AA'), so both are dropped.
    """
    if value.isascii():  # the same as below, by a table (str.isalnum on ASCII)
        return value.lower().translate(_ASCII_PUNCTUATION)
    return "".join(ch for ch in fold(value) if ch.isalnum())


@cache
def nicknames() -> dict[str, str]:
    """The shipped nickname table, folded: {'bob': 'robert', ...}."""
    with open(NICKNAMES_CSV, newline="", encoding="utf-8") as fh:
        return {
            normalise_text(row["nickname"]): normalise_text(row["name"])
            for row in csv.DictReader(fh)
        }


def first_name(value: str) -> str:
    """The first of several names: 'Mary Jane' -> 'Mary'; 'Mary-Jane Ann' -> 'Mary-Jane'.

    Names are separated by whitespace or commas; a hyphenated name is one name. Titles
    before them are no name ('Mr John' -> 'John'; 'Mr' alone -> '').
    """
    for part in _untitled(fold(value).replace(",", " ").split()):
        if normalise_text(part):
            return part
    return ""


def normalise_name(value: str, options: tuple[Option, ...]) -> str:
    """Letters and digits only, folded, then the schema's name options in order."""
    if "first-name" in options:
        value = first_name(value)
    text = normalise_text(value)
    if "nicknames" in options:
        text = nicknames().get(text, text)
    return text


def _date_formats(date_format: str | Sequence[str] | None) -> tuple[str, ...]:
    if not date_format:
        return _UNAMBIGUOUS_DATE_FORMATS
    return (date_format,) if isinstance(date_format, str) else tuple(date_format)


_SOUNDEX = str.maketrans("bfpvcgjkqsxzdtlmnr", "111122222222334556")


def phonetic(name: str) -> str:
    """A phonetic code of a folded name (Soundex: the first letter and three digits), so
    respellings agree: 'smith' and 'smyth' -> 's530', 'philips' and 'fillips' keep their
    first letters apart ('p412', 'f412'), 'mcdonald' and 'macdonald' -> 'm235'."""
    letters = [ch for ch in name if "a" <= ch <= "z"]
    if not letters:
        return ""
    digits = []
    last = letters[0].translate(_SOUNDEX)
    for ch in letters[1:]:
        code = ch.translate(_SOUNDEX)
        if code.isdigit() and code != last:
            digits.append(code)
        if ch not in "hw":
            last = code
    return (letters[0] + "".join(digits) + "000")[:4]


def derive(rule: FieldRule, values: dict[str, str]) -> str:
    """A derived field's value from its sources' normalised values ('' when all are
    missing): with `phonetic`, each source's phonetic code; with `sorted`, the values in
    alphabetical order, so that 'john' + 'smith' and 'smith' + 'john' give the same."""
    parts = [values.get(name, "") for name in rule.sources]
    if "phonetic" in rule.options:
        parts = [phonetic(p) for p in parts]
    parts = [p for p in parts if p]
    if "sorted" in rule.options:
        parts.sort()
    return "".join(parts)


# What an impossible date's reason says (31/02/1980): a value a format reads but for its day,
# which no other date_format or --dob-format would read (client/encoding/person.py).
NOT_A_REAL_DATE = "but is not a real date"


def parse_date(value: str, date_format: str | Sequence[str] | None) -> date:
    """Read a date written in `date_format` (one format, or several tried in order), or in
    an unambiguous format if None.

    With several formats, a value that two of them read as *different* dates (03/04/1980
    under `%d/%m/%Y` and `%m/%d/%Y`) is not guessed: it raises `AmbiguousValue`. Formats
    that read it as the same date (04/04/1980) agree, so that is no ambiguity.
    """
    formats = _date_formats(date_format)
    # Full-width digits, invisible characters, dashes, quotes, ordinals, a time at midnight;
    # a Welsh or Irish month as English's, full for %B and abbreviated for %b (`shortened`).
    text, shortened = plain_dates(value, reads_times=any("%H" in fmt for fmt in formats))
    readings: dict[date, str] = {}
    unreal = ""  # the first format the value matches, but with a day its month has not
    to_come = ""  # a two-digit year read into the future ('4/3/45' as 2045 under %y)
    chars = frozenset(text.casefold()) if len(formats) > 1 else frozenset()
    has_letter = any(ch.isalpha() for ch in chars)
    for fmt in formats:
        if chars and not may_read(chars, has_letter, fmt):  # (strptime would refuse it, slowly)
            continue
        read = shortened if "%b" in fmt else text
        try:
            day = _read_date(read, fmt)
        except ValueError as exc:
            if not unreal and "out of range" in str(exc):
                unreal = f"matches {fmt} {NOT_A_REAL_DATE}{_no_such_day(read, fmt)}"
            continue
        if "%y" in fmt and day > date.today():
            to_come = to_come or (
                f"reads as {day.isoformat()} under {fmt}, a date still to come: a two-digit "
                "year does not say its century (%y reads 00-68 as 2000-2068); have the "
                "export write four-digit years (%Y)"
            )
            continue
        readings.setdefault(day, fmt)
    if len(readings) > 1:
        ways = " or ".join(f"{day.isoformat()} ({fmt})" for day, fmt in readings.items())
        raise AmbiguousValue(f"{value!r} is ambiguous: it reads as {ways}")
    if readings:
        day = next(iter(readings))
        if day in PLACEHOLDER_DATES:
            raise PlaceholderValue(f"{value!r} is a placeholder date ({day.isoformat()})")
        return day
    if to_come:
        raise InvalidValue(f"{value!r} {to_come}")
    if unreal:  # (31/02/1980: not a question of its format)
        raise InvalidValue(f"{value!r} {unreal}")
    digits = [ch for ch in text if ch.isdigit()]
    if digits and set(digits) == {"0"} and not any(ch.isalpha() for ch in text):
        # 00/00/0000, 0000-00-00 (MySQL's zero date), 00000000: no date, written as one
        raise PlaceholderValue(f"{value!r} is a placeholder date (all zeros)")
    expected = " or ".join(formats)
    raise InvalidValue(f"{value!r} is not a date in the format {expected}{why_unread(text)}")


def _no_such_day(text: str, fmt: str) -> str:
    """Why `text`, which `fmt` reads but for its day, is no date: " (February has no day
    31)", or "" where that cannot be told. strptime's %d takes 1 to 31, so the day is 29, 30
    or 31; with it written into the format, the month and year read as the 1st's."""
    for day in (29, 30, 31):
        try:
            first = datetime.strptime(text, fmt.replace("%d", str(day)))
        except ValueError:
            continue
        year = f" {first.year}" if (first.month, day) == (2, 29) else ""
        return f" ({calendar.month_name[first.month]}{year} has no day {day})"
    return ""


# Formats an export may write dates in that the defaults never try (day and month as
# numbers, whose order cannot be told from one value; month names between hyphens or first):
# offered, best first, when a date column without date_format has values none of them read.
SUGGESTED_DATE_FORMATS = (
    "%d/%m/%Y", "%m/%d/%Y", "%d-%m-%Y", "%m-%d-%Y", "%d.%m.%Y", "%d-%b-%Y", "%b %d %Y",
    "%b %d, %Y", "%B %d, %Y", "%d %b, %Y",
)  # fmt: skip


def suggest_date_formats(
    values: Sequence[str], candidates: Sequence[str] = SUGGESTED_DATE_FORMATS
) -> list[str]:
    """Formats of `candidates` that together read as many of `values` as they can: the one
    reading the most first (earlier on a tie: day-first before month-first), then each that
    reads the most of those still unread."""
    readers: dict[str, set[int]] = {}
    for fmt in candidates:
        read = set()
        for i, value in enumerate(values):
            try:
                parse_date(value, fmt)
            except InvalidValue:
                continue
            read.add(i)
        readers[fmt] = read
    chosen: list[str] = []
    unread = set(range(len(values)))
    while True:
        best = max(readers, key=lambda fmt: len(readers[fmt] & unread))
        if not readers[best] & unread:
            return chosen
        chosen.append(best)
        unread -= readers[best]


# Name split rules for a full-name column (mapping: `split = ...`), and the part each
# field takes. A single name is the part the rule writes first; the other part is missing.
SPLITS = ("given-first", "surname-first", "surname, given")
Part = Literal["given", "surname"]
# Lower-case words that belong to the surname that follows them ('Ludwig van Beethoven').
# Irish and Welsh ones too ('Siobhán Ní Bhriain', 'Dafydd ap Rhys'), compared in NFC, so a
# decomposed 'Ní' is one; not 'O' or 'Ni' without the accent, which are also initials and names.
_PARTICLES = frozenset(
    {"van", "von", "der", "den", "de", "del", "della", "di", "da", "du", "la", "le", "st", "ten",
     "ap", "ab", "ferch", "verch", "ní", "nic", "mac", "mhic", "ó", "ua", "uí"}
)  # fmt: skip


def _particle(word: str) -> bool:
    return unicodedata.normalize("NFC", word).casefold() in _PARTICLES


# Titles a full-name column may start the given names with ('Mr John Smith', 'Smith, Dr
# Mary'): dropped by `split_name`, or 'first-name' would keep the title as the given name.
_TITLES = frozenset(
    {"mr", "mrs", "ms", "miss", "mx", "dr", "prof", "rev", "revd", "sir", "dame"}
)  # fmt: skip


def _untitled(words: list[str]) -> list[str]:
    """`words` without the titles they start with ('Mr', 'Dr.', 'MRS')."""
    start = 0
    while start < len(words) and words[start].rstrip(".").casefold() in _TITLES:
        start += 1
    return words[start:]


def split_name(value: str, rule: str) -> tuple[str, str]:
    """(given names, surname) of a full name written by `rule` (one of SPLITS).

    - `given-first`: 'John Paul Smith' -> ('John Paul', 'Smith'); surname particles stay with
      the surname ('Ludwig van Beethoven' -> ('Ludwig', 'van Beethoven'));
    - `surname-first`: 'SMITH John Paul' -> ('John Paul', 'SMITH'); 'van Beethoven Ludwig'
      -> ('Ludwig', 'van Beethoven');
    - `surname, given`: 'Smith, John Paul' -> ('John Paul', 'Smith'); a value without a
      comma raises InvalidValue (the rule cannot tell the parts apart).

    Titles before the given names are dropped ('Mr John Smith' -> ('John', 'Smith'),
    'Smith, Dr Mary' -> ('Mary', 'Smith')); 'Mr Smith' -> ('', 'Smith').
    """
    if rule == "surname, given":
        surname, comma, given = value.partition(",")
        if not comma:
            raise InvalidValue(f"{value!r} has no comma; the mapping says 'surname, given'")
        return " ".join(_untitled(given.split())), " ".join(surname.split())
    written = value.replace(",", " ").split()
    words = _untitled(written)
    if len(words) == 1 and len(written) > 1:  # 'Mr Smith': a title goes with a surname
        return "", words[0]
    if rule == "surname-first" and len(words) > 1:  # 'SMITH Mr John'
        words = [words[0], *_untitled(words[1:])]
    if len(words) <= 1:
        return (" ".join(words), "") if rule == "given-first" else ("", " ".join(words))
    if rule == "given-first":
        cut = len(words) - 1
        while cut > 1 and _particle(words[cut - 1]):
            cut -= 1
        return " ".join(words[:cut]), " ".join(words[cut:])
    if rule == "surname-first":
        cut = 1
        while cut < len(words) - 1 and _particle(words[cut - 1]):
            cut += 1
        return " ".join(words[cut:]), " ".join(words[:cut])
    raise ValueError(f"unknown split rule {rule!r}")


def normalise_enum(value: str, allowed: tuple[str, ...]) -> str:
    """Match case- and accent-insensitively; 'Male' matches 'M' when values are letters."""
    key = normalise_text(value)
    by_key = {normalise_text(v): v for v in allowed}
    if key in by_key:
        return by_key[key]
    if key and all(len(k) == 1 for k in by_key) and key[0] in by_key:
        return by_key[key[0]]
    raise InvalidValue(f"{value!r} is not one of {', '.join(allowed)}")


def normalise_integer(value: str) -> str:
    text = value.strip().replace(",", "").replace("_", "")
    try:
        return str(int(text))
    except ValueError:
        raise InvalidValue(f"{value!r} is not a whole number") from None


# Placeholders exports use for "no value" (after folding: 'N/K' is 'nk'); treated as
# missing, never encoded as text, since records sharing one would look alike. The postcode
# ones: no fixed abode ('NFA'), and the NHS pseudo-postcodes for it and for not known.
PLACEHOLDERS = frozenset(
    {"na", "null", "none", "unknown", "notknown", "nk", "nodata", "unk", "notstated",
     "notgiven", "notrecorded", "notspecified", "tbc", "tba", "nfa", "nofixedabode",
     "nofixedaddress", "zz993vz", "zz993wz"}
)  # fmt: skip
# Dates systems write for "no date" (spreadsheet and database epochs, ends of range).
PLACEHOLDER_DATES = frozenset(
    {date(1900, 1, 1), date(1899, 12, 31), date(1899, 12, 30), date(1800, 1, 1),
     date(1753, 1, 1), date(1, 1, 1), date(9999, 12, 31)}
)  # fmt: skip


def is_missing(value: str) -> bool:
    """Blank after folding ('', '  ', '-') or a placeholder such as 'N/A' or 'NULL'."""
    text = normalise_text(value)
    return not text or text in PLACEHOLDERS


def normalise_value(
    rule: FieldRule,
    value: str,
    date_format: str | Sequence[str] | None = None,
    today: date | None = None,
) -> str:
    """Normalise one present value of `rule`'s field (see `is_missing` first).

    `date_format` is the member's own format(s) for this column (from its mapping); `today`
    the day a date is read on (by default today's date: `datetext.lifetime_problem`).
    Raises `InvalidValue` when the value cannot be read as the field's kind.
    """
    if rule.kind == "ignore":
        return ""
    if rule.kind == "date":
        day = parse_date(value, date_format)
        if problem := lifetime_problem(day, today or date.today()):  # (after today, say)
            raise InvalidValue(f"{value!r} {problem}")
        if rule.date_format == "%Y-%m-%d" and day.year >= 1000:  # strftime pads no year
            return day.isoformat()
        return day.strftime(rule.date_format)
    if rule.kind == "enum":
        return normalise_enum(value, rule.enum_values)
    if rule.kind == "integer":
        return normalise_integer(value)
    text = normalise_name(value, rule.options) if rule.options else normalise_text(value)
    if not text:  # a title alone ('Mr') in a first-name field: no name given
        raise PlaceholderValue(f"{value!r} is a title, not a name")
    return text.upper() if rule.upper else text
