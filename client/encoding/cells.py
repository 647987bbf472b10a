"""One export cell to the value it encodes as: a mapped field's raw text (its columns joined)
cut by the mapping's `split`, checked for missing, normalised (`normalise.normalise_value`,
under the mapping's date formats) and validated against the clkhash field, as
`readcsv.read_rows` does for every cell of every row.

The outcome depends on the raw text alone, for a given field and mapping, and real exports
repeat their values heavily (names, dates, sexes, postcodes), so `cell_reader` remembers the
outcomes of up to `CACHE_SIZE` of a field's distinct values (made anew for each read, so
nothing outlives it): a repeated value costs a dictionary look-up instead
of Unicode folding, strptime and validation. What is encoded is the same either way; the
cache changes only how often the same pure functions run
(tests/test_readspeed.py holds the CLKs and reports of fixed exports to that).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Literal

from clkhash.field_formats import DateSpec, FieldSpec, InvalidEntryError

from blindmatch.client.encoding.mapping import ColumnMap
from blindmatch.client.encoding.namenotes import (
    cut_after_surname,
    cut_brackets,
    cut_notes,
    cut_words,
    is_name_field,
)
from blindmatch.client.encoding.normalise import (
    AmbiguousValue,
    FieldRule,
    InvalidValue,
    PlaceholderValue,
    derive,
    is_missing,
    normalise_text,
    normalise_value,
    numeric_date,
    split_name,
)

# Distinct raw values whose outcome a field's reader keeps (per field, per read): a few MB
# at most, and beyond it the least recently seen are read again, never wrongly.
CACHE_SIZE = 1 << 16

# What a cell is: missing (blank, or a placeholder the report lists), a value, or one the
# field's rule reads two ways (a date under two formats) or not at all; "invalid" and
# "ambiguous" carry the reason the report gives. Each outcome also carries the raw text the
# value was read from (after a split name was cut): the report lists placeholders and
# samples dates by it. Last, the notes cut from a name field's text (namenotes.py), as
# written: the report lists them.
Outcome = tuple[Literal["missing", "value", "ambiguous", "invalid"], str, str, tuple[str, ...]]


def read_cell(
    rule: FieldRule, cmap: ColumnMap | None, spec: FieldSpec, raw: str, today: date | None = None
) -> Outcome:
    """The outcome of one cell's raw text (uncached), a date read on `today` (by default
    today's date): see the module's docstring."""
    split = cmap.split if cmap is not None else None
    names = rule.kind == "text" and is_name_field(rule.name, rule.options, bool(split))
    notes: list[str] = []
    if names and split == "surname, given":  # a bracket may hold a comma: cut it first
        raw, notes = cut_brackets(raw)
    elif names:  # before a split: a note after the surname would be cut as the surname
        raw, notes = cut_notes(raw)
        if split == "surname-first" and not is_missing(raw):  # 'SMITH JNR John'
            raw, suffix = cut_after_surname(raw, split_name(raw, split)[1])
            notes = [*notes, *suffix]
    outcome = _read_value(rule, cmap, spec, raw, names, today)
    return (*outcome[:3], (*notes, *outcome[3]))


def _read_value(
    rule: FieldRule,
    cmap: ColumnMap | None,
    spec: FieldSpec,
    raw: str,
    names: bool,
    today: date | None,
) -> Outcome:
    """`read_cell` of a value its whole-cell notes are cut from."""
    notes: list[str] = []
    try:
        if cmap is not None and cmap.split and not is_missing(raw):
            given, surname = split_name(raw, cmap.split)
            raw = given if cmap.part == "given" else surname
            if names and cmap.split == "surname, given":  # "Smith nee Jones, Mary"
                raw, notes = cut_words(raw)
        if cmap is not None and cmap.values:  # the export's own codes (sex: 1, 2, 9)
            meant = dict(cmap.values).get(normalise_text(raw))
            if meant is not None:  # "": a code for not known, listed as a placeholder
                return ("value", meant, raw, ()) if meant else ("missing", "", raw, ())
        if is_missing(raw):
            return ("missing", "", raw, tuple(notes))
        value = normalise_value(rule, raw, cmap.date_format if cmap else None, today)
        if isinstance(spec, DateSpec) and numeric_date(value, spec.format) is not None:
            FieldSpec.validate(spec, value)  # DateSpec's strptime would read it: a real date
        else:
            spec.validate(value)
    except PlaceholderValue:  # "no value" written as one (01/01/1900, 'Mr' alone)
        return ("missing", "", raw, tuple(notes))
    except AmbiguousValue as exc:
        return ("ambiguous", str(exc), raw, tuple(notes))
    except (InvalidValue, InvalidEntryError) as exc:
        return ("invalid", str(exc).split("\n")[0], raw, tuple(notes))
    return ("value", value, raw, tuple(notes))


def cell_reader(
    rule: FieldRule, cmap: ColumnMap | None, spec: FieldSpec, today: date | None = None
) -> Callable[[str], str | Outcome]:
    """`read_cell` for one field under one mapping, remembering the outcomes of up to
    CACHE_SIZE distinct raw values (then starting again). A value read from the raw text
    as given (no split name cut, no note) is returned, and kept, as the value alone: a string, which
    the garbage collector does not track, where a tuple for each of thousands of values would
    make it collect more often; any other outcome as `read_cell` gives it."""
    known: dict[str, str | Outcome] = {}

    def read(raw: str) -> str | Outcome:
        got = known.get(raw)
        if got is None:
            if len(known) >= CACHE_SIZE:  # bounded: start again
                known.clear()
            outcome = read_cell(rule, cmap, spec, raw, today)
            plain = outcome[0] == "value" and outcome[2] == raw and not outcome[3]
            got = outcome[1] if plain else outcome
            known[raw] = got
        return got

    return read


def derived_reader(
    rule: FieldRule, index_of: dict[str, int], sentinels: list[str]
) -> Callable[[list[str]], str]:
    """A derived field's value (`normalise.derive`) from a row's schema-ordered values (a
    field's missing sentinel where it is missing), read from its sources' alone. (Not
    cached: combinations of names rarely repeat.)"""
    sources = [(name, index_of[name], sentinels[index_of[name]])
               for name in rule.sources if name in index_of]  # fmt: skip

    def read(values: list[str]) -> str:
        return derive(rule, {n: values[i] for n, i, missing in sources if values[i] != missing})

    return read
