"""The encode report: what `encode` found in each schema field's column(s) of a member's
export (present, missing, invalid and ambiguous values with their rows, distinct values),
repeated ids and rows, skipped rows and warnings; printed by the CLI (`render`) and written
to the ENCODED folder's local/report.json (`to_dict`). `readcsv.read_rows` fills it in.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from typing import Any

from blindmatch.client.words import counted, word

# Invalid rows listed per field in the printed report (all of them go to report.json).
PRINT_LIMIT = 10
# Records with fewer usable fields than this rarely match confidently.
FEW_FIELDS = 3


@dataclass
class FieldReport:
    """What the encoder found in one schema field's column(s)."""

    field: str
    columns: list[str]
    present: int = 0
    missing: int = 0
    invalid: int = 0
    invalid_rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    # Values the declared date formats read as different dates: reported, never guessed.
    ambiguous: int = 0
    ambiguous_rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    # Missing values that were placeholders ('UNKNOWN', 'NFA', '01/01/1900'), as written
    # -> how many, and the first PRINT_LIMIT rows with one.
    placeholders: dict[str, int] = dataclasses.field(default_factory=dict)
    placeholder_rows: list[int] = dataclasses.field(default_factory=list)
    # Notes cut from names ("nee Jones" of "Smith (nee Jones)", encoding.namenotes), as
    # written -> how many, and the first PRINT_LIMIT rows with one; in report.json only
    # where there are some (`to_dict`).
    notes: dict[str, int] = dataclasses.field(default_factory=dict)
    note_rows: list[int] = dataclasses.field(default_factory=list)
    distinct: int = 0  # distinct normalised values
    commonest: str = ""  # the most frequent normalised value (local report only)
    commonest_rows: int = 0
    derived_from: list[str] = dataclasses.field(default_factory=list)  # a derived field

    def note_missing(self, row: int, raw: str) -> None:
        """Count a missing value; one with a letter or digit is a placeholder, listed."""
        self.missing += 1
        written = raw.strip()
        if any(ch.isalnum() for ch in written):
            self.placeholders[written] = self.placeholders.get(written, 0) + 1
            if len(self.placeholder_rows) < PRINT_LIMIT:
                self.placeholder_rows.append(row)

    def note_notes(self, row: int, notes: tuple[str, ...]) -> None:
        """Count the notes cut from one row's name, listing the row."""
        for note in notes:
            self.notes[note] = self.notes.get(note, 0) + 1
        if len(self.note_rows) < PRINT_LIMIT:
            self.note_rows.append(row)

    def note_line(self) -> str:
        count = sum(self.notes.values())
        common = sorted(self.notes.items(), key=lambda item: -item[1])
        values = ", ".join(f"{value!r} {n}" for value, n in common[:PRINT_LIMIT])
        rows = ", ".join(map(str, self.note_rows))
        more = ", ..." if len(self.notes) > PRINT_LIMIT or count > len(self.note_rows) else ""
        return (
            f"{self.field}: {counted(count, 'note')} left out of the name: {values} "
            f"(row{'s' if len(self.note_rows) > 1 else ''} {rows}{more})"
        )

    def to_dict(self) -> dict[str, Any]:
        """As report.json has it: notes only where the field had some (a report of an export
        without any is as it was before notes were cut)."""
        got = asdict(self)
        if not self.notes:
            del got["notes"], got["note_rows"]
        return got

    def placeholder_line(self) -> str:
        count = sum(self.placeholders.values())
        common = sorted(self.placeholders.items(), key=lambda item: -item[1])
        values = ", ".join(f"{value!r} {n}" for value, n in common[:PRINT_LIMIT])
        rows = ", ".join(map(str, self.placeholder_rows))
        more = ", ..." if count > len(self.placeholder_rows) else ""
        return (
            f"{self.field}: {counted(count, 'placeholder')} for 'unknown' encoded as missing: "
            f"{values} (row{'s' if count > 1 else ''} {rows}{more})"
        )


@dataclass
class EncodeReport:
    source: str
    rows_read: int = 0
    rows_encoded: int = 0
    blank_rows: int = 0  # blank lines and rows of empty cells, skipped (not in rows_read)
    header_rows: list[int] = dataclasses.field(default_factory=list)  # repeats, skipped
    empty_records: int = 0
    # The first PRINT_LIMIT of those records' rows (a query's CSV refuses them by row).
    empty_rows: list[int] = dataclasses.field(default_factory=list)
    few_fields_records: int = 0  # records with fewer than FEW_FIELDS usable fields
    field_level: bool = False
    # Rows whose record id repeats an earlier row's ({row, id, first_row}), kept or skipped
    # as --on-duplicate-id says; and rows identical to an earlier row in every column.
    on_duplicate_id: str = "error"
    duplicate_ids: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    exact_duplicates: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    fields: list[FieldReport] = dataclasses.field(default_factory=list)
    warnings: list[str] = dataclasses.field(default_factory=list)
    hardening: str = ""  # what the schema's blindmatch.hardening asks for (encoding.harden)

    def to_dict(self) -> dict[str, Any]:
        got = asdict(self)
        got["fields"] = [fr.to_dict() for fr in self.fields]
        return got

    def render(self) -> str:
        """The human-readable report the CLI prints."""
        shown = [
            ",".join(fr.columns)
            or (f"(from {'+'.join(fr.derived_from)})" if fr.derived_from else "(not mapped)")
            for fr in self.fields
        ]
        width = max([24, *(len(c) for c in shown)])
        lines = [
            f"Encoded {self.rows_encoded} of {self.rows_read} rows from {self.source}",
            f"  {'field':<16} {'column(s)':<{width}} {'present':>8} {'missing':>8} "
            f"{'invalid':>8} {'ambiguous':>9} {'distinct':>8}",
        ]
        for fr, cols in zip(self.fields, shown, strict=True):
            lines.append(
                f"  {fr.field:<16} {cols:<{width}} {fr.present:>8} {fr.missing:>8} "
                f"{fr.invalid:>8} {fr.ambiguous:>9} {fr.distinct:>8}"
            )
        for fr in self.fields:
            for what, listed in (("invalid", fr.invalid_rows), ("ambiguous", fr.ambiguous_rows)):
                for item in listed[:PRINT_LIMIT]:
                    lines.append(
                        f"  {what} {fr.field} at row {item['row']}: {item['reason']} "
                        "(encoded as missing)"
                    )
                if len(listed) > PRINT_LIMIT:
                    lines.append(
                        f"  ... and {len(listed) - PRINT_LIMIT} more {what} {fr.field} "
                        "values (all listed in local/report.json)"
                    )
        lines.extend(f"  {fr.placeholder_line()}" for fr in self.fields if fr.placeholders)
        lines.extend(f"  {fr.note_line()}" for fr in self.fields if fr.notes)
        if self.duplicate_ids:
            kept = "skipped" if self.on_duplicate_id == "keep-first" else "kept"
            n = len(self.duplicate_ids)
            lines.append(
                f"  {counted(n, 'row')} {word(n, 'repeats', 'repeat')} an earlier row's record "
                f"id and {word(n, 'was', 'were')} {kept} (--on-duplicate-id "
                f"{self.on_duplicate_id}):"
            )
            lines.extend(
                f"    row {d['row']}: id {d['id']!r} first at row {d['first_row']}"
                for d in self.duplicate_ids[:PRINT_LIMIT]
            )
        if self.exact_duplicates:
            n = len(self.exact_duplicates)
            lines.append(
                f"  {counted(n, 'row')} {word(n, 'is an exact duplicate', 'are exact duplicates')}"
                " of an earlier row (every column the same): "
                + ", ".join(
                    f"row {d['row']} = row {d['same_as']}"
                    for d in self.exact_duplicates[:PRINT_LIMIT]
                )
            )
        if self.header_rows:
            repeats = ", ".join(map(str, self.header_rows[:PRINT_LIMIT]))
            n = len(self.header_rows)
            lines.append(
                f"  {counted(n, 'row')} {word(n, 'repeats', 'repeat')} the header and "
                f"{word(n, 'was', 'were')} skipped (exports joined together?): row {repeats}"
            )
        if self.blank_rows:
            lines.append(
                f"  {counted(self.blank_rows, 'blank row')} skipped (no value in any column; not "
                "counted as rows)"
            )
        if self.empty_records:
            lines.append(
                f"  {counted(self.empty_records, 'record')} had no usable value at all and "
                "cannot match"
            )
        if self.few_fields_records:
            n = self.few_fields_records
            lines.append(
                f"  {counted(n, 'record')} {word(n, 'has', 'have')} fewer than {FEW_FIELDS} "
                "usable fields and will rarely match with confidence"
            )
        if self.hardening:
            lines.append(f"  hardening: {self.hardening}")
        lines.extend(f"  warning: {w}" for w in self.warnings)
        return "\n".join(lines)


__all__ = ["FEW_FIELDS", "PRINT_LIMIT", "EncodeReport", "FieldReport"]
