"""One person given on the command line (`blindmatch query --surname ...`), or a small CSV
of people, encoded for a query exactly as the same people in an export would be; and what
each queried record could be compared on."""

from __future__ import annotations

import csv
import tempfile
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from blindmatch.client.encoding.datetext import NO_ONES_DATE
from blindmatch.client.encoding.encode import EncodeResult, encode_csv
from blindmatch.client.encoding.exportfile import C1_CONTROLS, as_cp1252
from blindmatch.client.encoding.frequency import MIN_VALUES, untiered
from blindmatch.client.encoding.mapping import ColumnMap
from blindmatch.client.encoding.mapping import Mapping as ColumnMapping
from blindmatch.client.encoding.normalise import NOT_A_REAL_DATE, QUERY_DATE_FORMATS
from blindmatch.client.encoding.schema import LinkageSchema
from blindmatch.client.errors import InputError
from blindmatch.client.words import counted, word

# How a field is named in a query's reply ("compared on: given name, surname; ...").
FIELD_LABELS = {"dob": "date of birth", "given_name": "given name"}


def field_label(field: str) -> str:
    return FIELD_LABELS.get(field, field.replace("_", " "))


def encode_person(
    schema: LinkageSchema,
    secret: bytes,
    values: Mapping[str, str],
    date_formats: Mapping[str, Sequence[str]] | None = None,
    *,
    verb: str = "query",
    given: Mapping[str, str] | None = None,
) -> EncodeResult:
    """Encode one person given on the command line, exactly as `encode` would (`verb`: what
    the command does with it, `query` or `watch`, for its errors; `given`: how each field's
    value was given, "--surname", for the errors that name it).

    `values` maps schema fields to raw values; it goes through a one-row CSV and the
    same mapping, normalisation and encoder as an export, so the CLK is identical to
    the one the same person gets in an ENCODED folder. Dates are read in the field's
    `date_formats` if given, else in `QUERY_DATE_FORMATS` (ISO, or UK day-first). A
    value that cannot be read is an error (`refuse_unreadable`), never a silent blank.
    """
    mapped = schema.mapped_fields()
    derived = [f for f in values if f in schema.hashed_fields() and f not in mapped]
    if derived:  # the encoder computes it from other fields: a value given would be ignored
        raise InputError(
            f"{', '.join(derived)}: the schema {schema.path.name} derives it from other "
            f"fields; give those ({', '.join(mapped)})"
        )
    unknown = [f for f in values if f not in mapped]
    if unknown:
        raise InputError(
            f"{', '.join(unknown)}: not a field of the schema {schema.path.name} "
            f"(the fields to give are: {', '.join(mapped)})"
        )
    if not any(v.strip() for v in values.values()):
        raise InputError(f"give at least one field of the person to {verb}, e.g. --surname")
    _refuse_garbled(values, given or {}, verb)
    fields = list(values)
    date_fields = {rule.name for rule in schema.rules if rule.kind == "date"}
    formats = {f: tuple((date_formats or {}).get(f) or QUERY_DATE_FORMATS) for f in date_fields}
    with tempfile.TemporaryDirectory(prefix="blindmatch-query-") as tmp:
        path = Path(tmp) / "query.csv"
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["query_id", *fields])
            writer.writerow(["query", *(values[f] for f in fields)])
        mapping = ColumnMapping(
            path=Path("<command line>"),
            id_column="query_id",
            fields={f: ColumnMap((f,), formats.get(f, ())) for f in fields},
        )
        try:
            result = encode_csv(path, schema, mapping, secret)
        except InputError as exc:  # (any other: never the name of a file the user never gave)
            raise type(exc)(str(exc).replace(f"{path}: row 2", "the person given")) from None
    result.report.source = "the command line"
    refuse_unreadable(result, one_person=True, verb=verb, schema=schema, given=given)
    if not result.present.any():  # '-', 'N/A', '?': given, but no value once normalised
        raise InputError(
            f"cannot read the person to {verb}: no value given is usable ({', '.join(fields)}: "
            f"blank once normalised, as punctuation or a placeholder such as N/A is); "
            f"{_nothing(verb)} (give at least one field with a value, e.g. --surname)"
        )
    refuse_untiered(result, schema, one_person=True, verb=verb)
    return result


def refuse_untiered(
    result: EncodeResult, schema: LinkageSchema, *, one_person: bool = False, verb: str = "query"
) -> None:
    """A frequency-tier schema (`blindmatch.frequency`) tiers each value by its count in the
    export it is encoded with, and below `MIN_VALUES` values of a field every value gets the
    middle tier: a query that small (one person always) would be encoded unlike the same
    person in the members' encodings (a rare name with fewer bits than theirs), and score
    lower than a batch run would. It is refused, naming the schema and the field."""
    if not schema.frequency:
        return
    present = {fr.field: fr.present for fr in result.report.fields}
    short = untiered(schema.frequency, present)
    if not short:
        return
    tiers = f"blindmatch.frequency on {', '.join(t.field for t in schema.frequency)}"
    if one_person:
        what = "one-person queries"
    else:
        counts = ", ".join(f"{n} of {t.field}" for t, n in short)
        what = f"queries of fewer than {MIN_VALUES} values of a tiered field (these have {counts})"
    raise InputError(
        f"{schema.path.name}: frequency-tier schemas ({tiers}) do not support {what}: a "
        f"value's tier is counted over the whole export it is encoded with (at least "
        f"{MIN_VALUES} values of the field), so this {verb} would be encoded at the middle "
        f"tier and score unlike the same person in the members' encodings; {_nothing(verb)}. "
        "Match in a batch run, or use a schema without blindmatch.frequency (docs/schema.md)"
    )


def _nothing(verb: str) -> str:
    return "nothing was queried" if verb == "query" else "nothing was sent"


def _refuse_garbled(values: Mapping[str, str], given: Mapping[str, str], verb: str) -> None:
    """A value given holding a C1 control character (text converted from cp1252 as if it
    were latin-1, then pasted), or longer than a CSV cell may be, is refused naming how it
    was given (`given`, else the field): the one-row CSV it is read through is a temporary
    file the user never named."""
    for field, value in values.items():
        if len(value) > csv.field_size_limit():
            raise InputError(
                f"cannot read the person to {verb}: {given.get(field, field)}: "
                f"{len(value)} characters, more than a value may hold "
                f"({csv.field_size_limit()}); {_nothing(verb)}"
            )
        found = C1_CONTROLS.search(value)
        if found is not None:
            char = found.group()
            raise InputError(
                f"cannot read the person to {verb}: {given.get(field, field)}: {value!r} holds "
                f"U+{ord(char):04X}, a control character no text holds{as_cp1252(char)}; it "
                f"was converted from a code page as if it were latin-1: type the value, or "
                f"copy it from the original; {_nothing(verb)}"
            )


def _enum_hint(
    field: str, allowed: Sequence[str], flag: str, mapping: Path | None, verb: str
) -> str:
    """How to give a value of the enumeration `field` (allowed: `allowed`), `flag` naming
    the option (one person) or, with `mapping` (a CSV), the codes' fix there."""
    sexes = all(len(v) == 1 for v in allowed) and {"F", "M"} <= set(allowed)
    words = " (or a word starting with one: female reads as F)" * sexes
    codes = "values = { " + ('"1" = "M", "2" = "F"' if sexes else f'"CODE" = "{allowed[0]}"')
    codes += ", ... }"
    if mapping is not None:
        return (
            f"; for {field}'s codes, say what each means with {codes} in "
            f"{mapping.name} (docs/mapping.md)"
        )
    return (
        f" ({flag} takes {', '.join(allowed)}{words}; an export's codes, such as 1 and 2, are "
        f"read only from a CSV of people to {verb} given with a mapping that says what each "
        f"means: {codes} (docs/mapping.md))"
    )


def refuse_unreadable(
    result: EncodeResult,
    *,
    one_person: bool = False,
    verb: str = "query",
    mapping: Path | None = None,
    date_fields: Collection[str] = (),
    schema: LinkageSchema | None = None,
    given: Mapping[str, str] | None = None,
) -> None:
    """A query must not answer "not held" for a person it could not read: any invalid or
    ambiguous value is an error naming the field (and, for a CSV, the file, row and column,
    and the fix there: the CSV's values and its `mapping`, not the one-person options; for
    one person, how to give a date only where one of `date_fields` was unreadable). With
    the `schema`, its date fields are `date_fields`, and a value of an enumeration it could
    not read is told the values it takes (for one person, by its option, `given`) and how
    an export's codes are read."""
    if schema is not None:
        date_fields = {r.name for r in schema.rules if r.kind == "date"}
    enums = {r.name: r.enum_values for r in (schema.rules if schema else ()) if r.kind == "enum"}
    coded = ""  # the first enumeration with a value it could not read
    problems = []
    dated = False  # a date that another format would read (not 31/02/1980: no format does)
    formats = False  # for a CSV: a value some format may read (of a date field, with `schema`)
    for fr in result.report.fields:
        for item in (*fr.invalid_rows, *fr.ambiguous_rows):
            coded = coded or (fr.field if fr.field in enums else "")
            reason = item["reason"]  # readable by some format: not 31/02/1980, nor 2090
            readable = NOT_A_REAL_DATE not in reason and NO_ONES_DATE not in reason
            formats = formats or (readable and (schema is None or fr.field in date_fields))
            dated = dated or (fr.field in date_fields and readable)
            if one_person:
                problems.append(f"{fr.field}: {item['reason']}")
            else:
                column = f"column {','.join(fr.columns)} ({fr.field})" if fr.columns else fr.field
                problems.append(f"row {item['row']}, {column}: {item['reason']}")
    if not problems:
        return
    shown = "; ".join(problems[:10])
    more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
    if one_person:
        hint = (
            " (dates: give e.g. 02/11/1975 or 1975-11-02, or say how they are written with "
            "--dob-format)"
            if dated
            else ""
        )
        if coded:
            flag = (given or {}).get(coded, coded)
            hint += _enum_hint(coded, enums[coded], flag, None, verb)
        raise InputError(f"cannot read the person to {verb}: {shown}{more}; {_nothing(verb)}{hint}")
    source = result.report.source
    in_mapping = f" in {mapping.name}" if mapping else " in the mapping"
    hint = (
        f"; for dates, declare how the file writes them with date_format{in_mapping}"
        if formats
        else ""
    )
    if coded:
        hint += _enum_hint(coded, enums[coded], "", mapping or Path("the mapping"), verb)
    raise InputError(
        f"{source}: cannot read the records to {verb}: {shown}{more}; {_nothing(verb)} (fix "
        f"or blank those values in {source}{hint})"
    )


def refuse_nothing_usable(result: EncodeResult, *, verb: str = "query") -> None:
    """A CSV of people with a record that has no usable value (every value blank once
    normalised) is refused, as one person so is (`encode_person`): it would be sent, counted,
    and answered "compared on: nothing". Names the file, the rows (the first `PRINT_LIMIT`,
    then how many more) and why, before anything is sent."""
    report = result.report
    if not report.empty_records:
        return
    rows = ", ".join(map(str, report.empty_rows))
    more = report.empty_records - len(report.empty_rows)
    listed = f"{rows} and {more} more" if more > 0 else rows
    raise InputError(
        f"{report.source}: {counted(report.empty_records, 'record')} to {verb} "
        f"{word(report.empty_records, 'has', 'have')} no usable value "
        f"(row {listed}: every mapped column blank once normalised, as punctuation or a "
        f"placeholder such as N/A is); {_nothing(verb)} (give each person at least one "
        f"value, or leave those rows out)"
    )


@dataclass(frozen=True)
class Usable:
    """What a queried record could be compared on, for the reply."""

    compared_on: tuple[str, ...]
    missing: tuple[str, ...]
    # Missing fields whose value given was a placeholder ('01/01/1900', 'N/K'): (field, value).
    placeholders: tuple[tuple[str, str], ...] = ()
    # Notes cut from names given ("aka Novak" of "Nowak (aka Novak)"): (field, note).
    notes: tuple[tuple[str, str], ...] = ()

    def describe(self) -> str:
        text = f"compared on: {', '.join(map(field_label, self.compared_on)) or 'nothing'}"
        if self.missing:
            text += f"; missing: {', '.join(map(field_label, self.missing))}"
        if self.placeholders:
            given = ", ".join(f"{field_label(f)} {v!r}" for f, v in self.placeholders)
            text += f" (given as placeholders for unknown: {given})"
        if self.notes:
            left = ", ".join(f"{field_label(f)} {v!r}" for f, v in self.notes)
            text += f" (notes left out of the names: {left})"
        return text


def usable_fields(result: EncodeResult) -> list[Usable]:
    """Per queried record, the fields that had a usable value and those that did not."""
    fields = [fr.field for fr in result.report.fields]
    derived = {fr.field for fr in result.report.fields if fr.derived_from}
    out = []
    # One person (the command line's): the placeholders given are that person's.
    one = len(result.present) == 1
    given = tuple((fr.field, v) for fr in result.report.fields if one for v in fr.placeholders)
    notes = tuple((fr.field, v) for fr in result.report.fields if one for v in fr.notes)
    for row in result.present:
        have = tuple(f for f, p in zip(fields, row, strict=True) if p and f not in derived)
        lack = tuple(f for f in fields if f not in have and f not in derived)
        out.append(Usable(have, lack, given, notes))
    return out
