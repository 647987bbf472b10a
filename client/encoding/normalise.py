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

import csv
import unicodedata
from dataclasses import dataclass
from datetime import date, datetime
from functools import cache
from pathlib import Path
from typing import Literal

Kind = Literal["text", "date", "enum", "integer", "ignore"]
Option = Literal["first-name", "nicknames"]
OPTIONS: tuple[Option, ...] = ("first-name", "nicknames")
NICKNAMES_CSV = Path(__file__).resolve().parents[1] / "data" / "nicknames.csv"

# Letters that Unicode does not decompose into a base letter plus accents.
_UNDECOMPOSED = str.maketrans(
    {
        "ø": "o",
        "đ": "d",
        "ð": "d",
        "ł": "l",
        "æ": "ae",
        "œ": "oe",
        "þ": "th",
        "ı": "i",
        "ħ": "h",
        "ŧ": "t",
    }
)

# Date formats tried, in order, when a member's mapping declares none: only
# unambiguous ones (never dd/mm vs mm/dd).
_UNAMBIGUOUS_DATE_FORMATS = ("%Y-%m-%d", "%Y%m%d", "%d %b %Y", "%d %B %Y", "%Y/%m/%d")


class InvalidValue(ValueError):
    """A value that cannot be read as its field's kind; encoded as missing."""


@dataclass(frozen=True)
class FieldRule:
    """How to normalise one schema field, derived from the shared schema."""

    name: str
    kind: Kind
    date_format: str = "%Y-%m-%d"  # the schema's output format, for kind == "date"
    enum_values: tuple[str, ...] = ()
    upper: bool = False  # the schema asks for upper case strings
    options: tuple[Option, ...] = ()  # name options, from the schema (text fields only)


def fold(value: str) -> str:
    """Case-fold and strip accents: 'ÉLODIE' and 'élodie' both become 'elodie'."""
    text = unicodedata.normalize("NFKC", value).casefold()
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return unicodedata.normalize("NFC", text.translate(_UNDECOMPOSED))


def normalise_text(value: str) -> str:
    """Letters and digits only, folded: "O'Brien-Smith " -> 'obriensmith'.

    Punctuation and whitespace carry no identity in names and postcodes, and
    exports disagree on them ('SW1A 1AA' vs 'SW1A1AA'), so both are dropped.
    """
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

    Names are separated by whitespace or commas; a hyphenated name is one name.
    """
    for part in fold(value).replace(",", " ").split():
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


def parse_date(value: str, date_format: str | None) -> date:
    """Read a date written in `date_format`, or in an unambiguous format if None."""
    text = " ".join(value.split())
    formats = (date_format,) if date_format else _UNAMBIGUOUS_DATE_FORMATS
    for fmt in formats:
        try:
            return datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    expected = date_format or " or ".join(_UNAMBIGUOUS_DATE_FORMATS)
    raise InvalidValue(f"{value!r} is not a date in the format {expected}")


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


# Placeholders exports use for "no value"; treated as missing, never encoded as text.
PLACEHOLDERS = frozenset({"na", "null", "none", "unknown", "notknown", "nk", "nodata"})


def is_missing(value: str) -> bool:
    """Blank after folding ('', '  ', '-') or a placeholder such as 'N/A' or 'NULL'."""
    text = normalise_text(value)
    return not text or text in PLACEHOLDERS


def normalise_value(rule: FieldRule, value: str, date_format: str | None = None) -> str:
    """Normalise one present value of `rule`'s field (see `is_missing` first).

    `date_format` is the member's own format for this column (from its mapping).
    Raises `InvalidValue` when the value cannot be read as the field's kind.
    """
    if rule.kind == "ignore":
        return ""
    if rule.kind == "date":
        return parse_date(value, date_format).strftime(rule.date_format)
    if rule.kind == "enum":
        return normalise_enum(value, rule.enum_values)
    if rule.kind == "integer":
        return normalise_integer(value)
    text = normalise_name(value, rule.options) if rule.options else normalise_text(value)
    return text.upper() if rule.upper else text
