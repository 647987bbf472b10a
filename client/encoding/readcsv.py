"""Reading a member's export: CSV + mapping + schema -> local ids, normalised rows and the
encode report (`read_rows`); `client.encoding.encode` turns the rows into CLKs.

Structural problems (a missing column, a ragged row, bytes that are not in the mapping's
encoding, a blank record id, a repeated one unless the member chose to keep it, an export
with no records unless allowed) stop the read with an error naming the file, row and
column. A bad *value* (an impossible date, a date two declared formats read differently,
say) is kept as missing and listed in the report with its row.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from blindmatch.client.encoding.cells import cell_reader, derived_reader
from blindmatch.client.encoding.datetext import NO_ONES_DATE
from blindmatch.client.encoding.encodereport import (
    FEW_FIELDS,
    PRINT_LIMIT,
    EncodeReport,
    FieldReport,
)
from blindmatch.client.encoding.exportfile import (
    C1_CONTROLS,
    ODD_SYMBOLS,
    SUSPECT,
    BalticLetters,
    OddSymbols,
    baltic_word,
    decoded_lines,
    refuse_control_characters,
)
from blindmatch.client.encoding.mapping import Mapping, column_name
from blindmatch.client.encoding.normalise import (
    DEFAULT_DATE_FORMATS,
    SUGGESTED_DATE_FORMATS,
    is_missing,
    suggest_date_formats,
)
from blindmatch.client.encoding.recordids import (
    Repeats,
    case_twins,
    case_warning,
    excel_hint,
    excel_numbers,
)
from blindmatch.client.encoding.schema import LinkageSchema
from blindmatch.client.errors import InputError
from blindmatch.client.words import counted, word

if TYPE_CHECKING:
    from _csv import Reader as CsvReader

# `read_rows` tells its `tick` (a progress bar) of every this many rows read.
TICK_ROWS = 1000
# What to do with a record id that repeats an earlier row's (`encode --on-duplicate-id`).
OnDuplicate = Literal["error", "keep-first", "keep-all"]
ON_DUPLICATE: tuple[OnDuplicate, ...] = ("error", "keep-first", "keep-all")
# Delimiters tried on the header when mapped columns are missing, to suggest the right one.
DELIMITERS = (",", ";", "\t", "|")
# Unreadable dates kept per field (without a date_format) to suggest the format they are in.
SUGGEST_FROM = 200
# The line Excel may write (and reads) before the header to name the delimiter: "sep=;".
EXCEL_SEP = re.compile(r"^sep=([^\r\n])\r?\n?$")


def _suggest_delimiter(header_line: str, mapping: Mapping, found: int) -> str:
    """When mapped columns are missing: the delimiter under which the header has the most of
    them, when that is more than the mapping's own finds (`found`), naming any still missing
    (a wrong delimiter and a renamed column in one export)."""
    wanted = mapping.columns_used()
    best: tuple[int, str, list[str]] | None = None
    for candidate in DELIMITERS:
        if candidate == mapping.delimiter:
            continue
        names = [column_name(h) for h in next(csv.reader([header_line], delimiter=candidate), [])]
        hits = sum(c in names for c in wanted)
        if len(names) > 1 and hits > found and (best is None or hits > best[0]):
            best = (hits, candidate, [c for c in wanted if c not in names])
    if best is None:
        return ""
    _hits, candidate, still = best
    shown = "tab" if candidate == "\t" else repr(candidate)
    written = "\\t" if candidate == "\t" else candidate
    verb = "change delimiter to" if mapping.delimiter != "," else "add"
    named = ", ".join(f"'{c}'" for c in still)
    missing = f" (then {named} still not in it)" if still else ""
    return (
        f'; the header looks {shown}-separated: {verb} delimiter = "{written}" '
        f"in {mapping.path.name}{missing}"
    )


def _shared_whole(schema: LinkageSchema, mapping: Mapping) -> list[str]:
    """A column that several text fields take whole (no `split`): a full-name column mapped
    to both given_name and surname gives each the whole name, and matches poorly unseen."""
    text = {rule.name for rule in schema.rules if rule.kind == "text"}
    users: dict[str, list[str]] = {}
    for field, cmap in mapping.fields.items():
        if field in text and not cmap.split:
            for column in cmap.columns:
                users.setdefault(column, []).append(field)
    return [
        f"column {column} feeds {' and '.join(fields)} whole; if it holds full names, cut it "
        f'with split (e.g. {fields[0]} = {{ column = "{column}", split = "given-first" }} '
        "and the same for the others; docs/mapping.md#split)"
        for column, fields in users.items()
        if len(fields) > 1
    ]


def _sample(samples: dict[str, list[str]], field: str, raw: str) -> None:
    kept = samples.setdefault(field, [])
    if len(kept) < SUGGEST_FROM:
        kept.append(raw.strip())


def _misdated(field: str, values: list[str], mapping: Mapping, some_read: bool) -> list[str]:
    """The warning for dates the mapping's date_format does not read but another format
    does (`%d/%m/%Y` declared, `14.03.1988` written): the date_format that reads them."""
    candidates: tuple[str, ...] = SUGGESTED_DATE_FORMATS
    formats = suggest_date_formats(values, candidates)
    if not formats:  # (1988-03-14 under %d/%m/%Y: a date_format replaces the defaults)
        candidates = DEFAULT_DATE_FORMATS
        formats = suggest_date_formats(values, candidates)
    if not formats:  # impossible dates ('31/02/1985'), not another format
        return []
    given = mapping.fields[field].date_format
    example = next(v for v in values if suggest_date_formats([v], candidates)[:1] == formats[:1])
    columns = mapping.fields[field].columns
    where = f'column = "{columns[0]}"' if len(columns) == 1 else f"columns = {list(columns)}"
    swapped = [g.replace("%d", "\0").replace("%m", "%d").replace("\0", "%m") for g in given]
    if formats[0] in swapped:  # day and month the other way round: the dates read are wrong
        return [
            f"{field}: values such as {example!r} cannot be read with day and month as the "
            f"date_format of {mapping.path.name} has them ({' or '.join(given)}); the export "
            f"writes {formats[0]}, so the dates read were read with day and month swapped: "
            f'declare {field} = {{ {where}, date_format = "{formats[0]}" }}'
        ]
    keep = [*given, *formats] if some_read else formats  # a date_format replaces the others
    written = f'"{keep[0]}"' if len(keep) == 1 else repr(keep).replace("'", '"')
    return [
        f"{field}: values such as {example!r} are not in the date_format of "
        f"{mapping.path.name} ({' or '.join(given)}) but read as {formats[0]}; if the export "
        f"writes them so, declare {field} = {{ {where}, date_format = {written} }}, checking "
        "the order of day and month"
    ]


def _suggest_case(absent: list[str], header: list[str], mapping: Mapping) -> str:
    """When a missing column is in the header in another case, spacing or punctuation (a
    double or non-breaking space, 'Postcode' for 'Post Code', 'post_code'): say so, since
    names are matched exactly."""

    def fold(name: str) -> str:
        return "".join(c for c in name.casefold() if c.isalnum())

    folded = {fold(name): name for name in header}
    near = [(c, folded[fold(c)]) for c in absent if fold(c) and fold(c) in folded]
    if not near:
        return ""
    pairs = ", ".join(f"{name!r} for {c!r}" for c, name in near)
    return (
        "; column names are matched exactly, case, spaces and punctuation included: the "
        f"header has {pairs}; write them as the header does in {mapping.path.name}"
    )


def _refuse_repeated_columns(
    csv_path: Path, header: list[str], mapping: Mapping, mapped_to: dict[str, str]
) -> None:
    """A mapped column that the header names twice: which one is meant cannot be told, and
    taking either would encode the other's values unseen."""
    for name in mapping.columns_used():
        where = [i + 1 for i, h in enumerate(header) if h == name]
        if len(where) > 1:
            raise InputError(
                f"{csv_path}: the header has column '{name}' {len(where)} times (columns "
                f"{', '.join(map(str, where))}), and {mapping.path.name} maps it (to "
                f"{mapped_to.get(name, 'the record id')}); rename the copies in the export "
                "so that each name is used once"
            )


def _numbered(reader: CsvReader, csv_path: Path) -> Iterator[tuple[int, list[str]]]:
    """Data rows, each with the line it starts on as an editor numbers them (the header is
    line 1; blank lines and the line breaks inside quoted values count); CSV syntax errors
    named by the line their row starts on."""
    while True:
        line_no = reader.line_num + 1  # the reader counts the lines it has taken
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise InputError(
                f"{csv_path}: row {line_no}: {exc}; check quoting in the export"
            ) from None
        yield line_no, record


def read_rows(
    csv_path: Path,
    schema: LinkageSchema,
    mapping: Mapping,
    report: EncodeReport,
    *,
    on_duplicate_id: OnDuplicate = "error",
    allow_empty: bool = False,
    duplicate_hint: str | None = None,
    tick: Callable[[int], object] | None = None,
) -> tuple[list[str], list[list[str]]]:
    """Local ids and normalised schema-ordered values, one list per row. `duplicate_hint`:
    what a repeated id's error tells the user to do, where `encode`'s options are not the
    command's. `tick(n)` is told of every TICK_ROWS rows read (a progress bar's update)."""
    if csv_path.is_dir():  # an ENCODED folder, say: it exists, so "not found" would puzzle
        raise InputError(f"{csv_path}: is a folder; give the CSV export itself")
    if not csv_path.is_file():
        raise InputError(f"{csv_path}: data file not found")
    if on_duplicate_id not in ON_DUPLICATE:
        raise InputError(f"--on-duplicate-id must be one of {', '.join(ON_DUPLICATE)}")
    report.on_duplicate_id = on_duplicate_id
    lines = decoded_lines(csv_path, mapping.encoding)
    first_line: list[str] = []
    delimiter = mapping.delimiter
    opening = next(lines, "")
    excel_sep = EXCEL_SEP.match(opening)
    if excel_sep:  # Excel's "sep=;" line: the file says its delimiter; the header follows
        delimiter = excel_sep.group(1)

    def remembered() -> Iterator[str]:
        for line in itertools.chain(() if excel_sep or not opening else (opening,), lines):
            if not first_line:
                first_line.append(line)
            yield line

    reader = csv.reader(remembered(), delimiter=delimiter, strict=True)
    try:
        header = next(reader)
    except StopIteration:
        if not allow_empty:
            raise InputError(
                f"{csv_path}: the file is empty (no header row); pass --allow-empty to encode "
                "an empty export anyway"
            ) from None
        header = []
    except csv.Error as exc:
        raise InputError(f"{csv_path}: row 1: {exc}") from None
    if C1_CONTROLS.search("".join(header)):  # a cp1252 header read as latin-1 (before the
        # strip, which takes U+0085, cp1252's '...', as a space)
        refuse_control_characters(csv_path, mapping.encoding, mapping.path.name, 1, header, [])
    header = [column_name(h) for h in header]
    positions = {name: i for i, name in enumerate(header)}
    absent = [c for c in mapping.columns_used() if c not in positions]
    mapped_to = {c: f for f, cm in mapping.fields.items() for c in cm.columns}
    if absent and header:
        described = [
            f"'{c}' (mapped to {mapped_to.get(c, 'the record id')} in {mapping.path.name})"
            for c in absent
        ]
        raise InputError(
            f"{csv_path}: {word(len(described), 'column')} {', '.join(described)} not in the "
            "header; "
            f"the header has: {', '.join(header)}"
            + _suggest_delimiter(
                first_line[0] if first_line else "",
                mapping,
                len(mapping.columns_used()) - len(absent),
            )
            + _suggest_case(absent, header, mapping)
        )
    _refuse_repeated_columns(csv_path, header, mapping, mapped_to)

    id_pos = positions.get(mapping.id_column, 0)
    plan: list[tuple[int, list[int], Any]] = []
    for index, rule in enumerate(schema.rules):
        cmap = mapping.fields.get(rule.name)
        if rule.kind == "ignore":
            continue
        cols = list(cmap.columns) if cmap else []
        report.fields.append(FieldReport(rule.name, cols, derived_from=list(rule.sources)))
        plan.append((index, [positions.get(c, 0) for c in cols], cmap))
        if cmap is None and not rule.sources:
            report.warnings.append(
                f"schema field {rule.name} is not mapped; it is encoded as missing for every row"
            )
    report.warnings.extend(_shared_whole(schema, mapping))

    ids: list[str] = []
    rows: list[list[str]] = []
    tallies: list[Counter[str]] = [Counter() for _ in plan]
    sentinels = [schema.missing_sentinel(i) for i in range(len(schema.rules))]
    index_of = {rule.name: i for i, rule in enumerate(schema.rules)}
    # Each field read from the export, and derived from them, with its reader (cells.py); its
    # dates read on one day (after it: invalid), even where the reading runs past midnight.
    specs, today = schema.clk_schema.fields, date.today()
    read_plan = [
        (index, where, cmap, fr, tally, cell_reader(rule, cmap, specs[index], today))
        for (index, where, cmap), fr, tally in zip(plan, report.fields, tallies, strict=True)
        if not (rule := schema.rules[index]).sources
    ]
    derived = [
        (index, fr, tally, derived_reader(schema.rules[index], index_of, sentinels))
        for (index, _w, _c), fr, tally in zip(plan, report.fields, tallies, strict=True)
        if schema.rules[index].sources
    ]
    seen: dict[str, tuple[int, bytes]] = {}  # id -> (first row, hash of that row's cells)
    # The header's first name, composed or not: a row starting with it may be the header again.
    first_names = (
        {unicodedata.normalize(form, header[0]) for form in ("NFC", "NFD")} if header else set()
    )
    repeats = Repeats()  # under --on-duplicate-id error
    width = len(header)
    data_rows = 0
    # Dates without a date_format that no default format reads, and some that one does: a
    # sample of each, to suggest the date_format that reads both.
    undated: dict[str, list[str]] = {}
    dated: dict[str, list[str]] = {}
    misdated: dict[str, list[str]] = {}  # dates the mapping's own date_format does not read
    # Rows of full names with a comma under a rule that ignores it, per (column(s), rule).
    commas: dict[tuple[str, str], set[int]] = {}
    odd = OddSymbols()  # text holding symbols no name has ("Pawe³")
    baltic = BalticLetters()  # words no name has ("Ðarûnas")
    for line_no, record in _numbered(reader, csv_path):
        if len(record) > width and not "".join(record[width:]).strip():
            record = record[:width]  # Excel's trailing delimiter: empty cells past the header
        joined = "\x1f".join(record)
        # A C1 control character (a cp1252 export read as latin-1): refused; a symbol no name
        # has (a cp1250 export read as cp1252) or an eth or thorn beside letters no name has
        # beside them (cp1257 read as cp1252): warned of. One search finds any.
        suspect = not joined.isascii() and SUSPECT.search(joined) is not None
        if suspect and C1_CONTROLS.search(joined):
            refuse_control_characters(
                csv_path, mapping.encoding, mapping.path.name, line_no, record, header
            )
        if not "".join(record).strip():
            report.blank_rows += 1  # a blank line, or a row of empty cells (",,,,")
            continue
        if (
            header
            and record[0].strip().lstrip("\ufeff") in first_names
            and [column_name(cell.lstrip("\ufeff")) for cell in record] == header
        ):
            report.header_rows.append(line_no)  # exports joined together: the next's header
            continue
        data_rows += 1
        if len(record) != width:
            raise InputError(
                f"{csv_path}: row {line_no} has {len(record)} columns, the header has {width}; "
                "check quoting and delimiters in the export"
            )
        local_id = record[id_pos].strip()
        if not local_id:
            raise InputError(f"{csv_path}: row {line_no}, column {mapping.id_column}: empty id")
        cells = hashlib.blake2b(joined.encode(), digest_size=16).digest()
        if local_id in seen:
            first_row, first_cells = seen[local_id]
            exact = cells == first_cells
            if on_duplicate_id == "error":  # refused once every row is read, naming them
                repeats.add(line_no, local_id, first_row, exact)
                continue
            report.duplicate_ids.append({"row": line_no, "id": local_id, "first_row": first_row})
            if exact:
                report.exact_duplicates.append({"row": line_no, "same_as": first_row})
            if on_duplicate_id == "keep-first":
                continue
        else:
            seen[local_id] = (line_no, cells)
        values = list(sentinels)
        usable = 0
        for index, where, cmap, fr, tally, read in read_plan:
            rule = schema.rules[index]
            raw = record[where[0]] if len(where) == 1 else " ".join(record[c] for c in where)
            if suspect and rule.kind == "text" and ODD_SYMBOLS.search(raw):
                odd.note(rule.name, line_no, raw)  # "Pawe³": cp1250 read as cp1252
            elif suspect and rule.kind == "text" and baltic_word(raw):
                baltic.note(rule.name, line_no, raw)  # "Ðarûnas": cp1257 read as cp1252
            split = cmap.split if cmap else None
            if split and split != "surname, given" and "," in raw and not is_missing(raw):
                columns = ",".join(mapping.fields[rule.name].columns)
                commas.setdefault((columns, split), set()).add(line_no)
            got = read(raw)  # split, normalised and validated (cells.py): the value, or
            if isinstance(got, str):  # (outcome, value or why none, the raw text read)
                value = got
            else:
                outcome, value, raw, notes = got
                if notes:  # "Smith (nee Jones)": the name is "Smith", the note listed
                    fr.note_notes(line_no, notes)
                if outcome == "missing":  # blank, or a placeholder (listed)
                    fr.note_missing(line_no, raw)
                    continue
                if outcome == "ambiguous":
                    fr.ambiguous += 1
                    fr.ambiguous_rows.append({"row": line_no, "reason": value})
                    continue
                if outcome == "invalid":
                    if rule.kind == "date" and NO_ONES_DATE not in value:  # (read, but no DOB)
                        _sample(misdated if cmap and cmap.date_format else undated, rule.name, raw)
                    fr.invalid += 1
                    fr.invalid_rows.append({"row": line_no, "reason": value})
                    continue
            if rule.kind == "date":
                _sample(dated, rule.name, raw)
            fr.present += 1
            values[index] = value
            tally[value] += 1
            usable += 1
        for index, fr, tally, derive_from in derived:
            value = derive_from(values)
            if not value:
                fr.missing += 1
                continue
            fr.present += 1
            values[index] = value
            tally[value] += 1
        if not usable:
            report.empty_records += 1
            if len(report.empty_rows) < PRINT_LIMIT:
                report.empty_rows.append(line_no)
        elif usable < min(FEW_FIELDS, len(plan)):
            report.few_fields_records += 1
        ids.append(local_id)
        rows.append(values)
        if tick is not None and data_rows % TICK_ROWS == 0:
            tick(TICK_ROWS)
    repeats.refuse(csv_path, mapping.id_column, duplicate_hint)
    report.rows_read = data_rows
    twins = case_twins(seen)  # "a1" after "A1": two records, as written; said
    if twins:
        report.warnings.append(case_warning(twins, mapping.id_column))
    excel = excel_numbers(seen)  # unique, but not the ids the member's records have
    if excel:
        report.warnings.append(excel_hint(excel, mapping.id_column))
    for (column, rule_name), comma_rows in commas.items():
        report.warnings.append(
            f"column {column}: {counted(len(comma_rows), 'full name')} "
            f"{word(len(comma_rows), 'has', 'have')} a comma, as 'Surname, Given' "
            f'is written, but {mapping.path.name} says split = "{rule_name}", which ignores '
            'it; if the export writes the surname first with a comma, use split = "surname, '
            'given"'
        )
    for field, values in undated.items():
        formats = suggest_date_formats(values)
        if not formats:
            continue
        # A date_format replaces the defaults: keep those the column's other dates are in.
        formats += suggest_date_formats(dated.get(field, []), DEFAULT_DATE_FORMATS)
        column = mapping.fields[field].columns[0]
        example = next(v for v in values if suggest_date_formats([v])[:1] == formats[:1])
        written = f'"{formats[0]}"' if len(formats) == 1 else repr(formats).replace("'", '"')
        report.warnings.append(
            f"{field}: values such as {example!r} are in none of the default date formats "
            "(which never read day and month as numbers: day-first and month-first cannot be "
            f"told apart); declare the export's format in {mapping.path.name}, e.g. {field} = "
            f'{{ column = "{column}", date_format = {written} }}, checking the order of day '
            "and month"
        )
    for field, values in misdated.items():
        report.warnings.extend(_misdated(field, values, mapping, field in dated))
    report.warnings.extend(odd.warnings(mapping.encoding) + baltic.warnings(mapping.encoding))
    if not rows:
        what = "is empty" if not header else "has a header but no records"
        if not allow_empty:
            raise InputError(
                f"{csv_path}: the export {what}; check that it is the right file, or pass "
                "--allow-empty to encode it anyway"
            )
        report.warnings.append(f"the export {what}: nothing to match")
    for fr, tally in zip(report.fields, tallies, strict=True):
        fr.distinct = len(tally)
        if tally:
            fr.commonest, fr.commonest_rows = tally.most_common(1)[0]
    return ids, rows
