"""Encoding an export: CSV + mapping + schema + secret -> CLKs and an encode report.

Runs entirely on the member's machine. Structural problems (a missing column, a
ragged row, bytes that are not UTF-8, a blank or repeated record id) stop the
encode with an error naming the file and row. A bad *value* (an impossible
date, say) is encoded as missing and listed in the report with its row.
"""

from __future__ import annotations

import csv
import dataclasses
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from clkhash.field_formats import InvalidEntryError

from blindmatch.client.errors import InputError
from blindmatch.client.fieldlevel import encode_field_level
from blindmatch.client.fingerprint import fingerprint
from blindmatch.client.harden import Hardening, encode_records, encoded_bits, hardening_from_raw
from blindmatch.client.mapping import Mapping
from blindmatch.client.normalise import InvalidValue, is_missing, normalise_value
from blindmatch.client.schema import LinkageSchema

# Invalid rows listed per field in the printed report (all of them go to report.json).
PRINT_LIMIT = 10
# Below this share of present values a field is called sparse in the report.
SPARSE_BELOW = 0.8
# A single value held by more than this share of rows (and FREQUENT_MIN rows) looks like a
# placeholder ('01/01/1900', 'UNKNOWN'): it makes unrelated records agree.
FREQUENT_SHARE = 0.05
FREQUENT_MIN = 5
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
    distinct: int = 0  # distinct normalised values
    commonest: str = ""  # the most frequent normalised value (local report only)
    commonest_rows: int = 0


@dataclass
class EncodeReport:
    source: str
    rows_read: int = 0
    rows_encoded: int = 0
    empty_records: int = 0
    few_fields_records: int = 0  # records with fewer than FEW_FIELDS usable fields
    field_level: bool = False
    fields: list[FieldReport] = dataclasses.field(default_factory=list)
    warnings: list[str] = dataclasses.field(default_factory=list)
    hardening: str = ""  # what the schema's blindmatch.hardening asks for (client.harden)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def render(self) -> str:
        """The human-readable report the CLI prints."""
        lines = [
            f"Encoded {self.rows_encoded} of {self.rows_read} rows from {self.source}",
            f"  {'field':<16} {'column(s)':<24} {'present':>8} {'missing':>8} {'invalid':>8} "
            f"{'distinct':>8}",
        ]
        for fr in self.fields:
            cols = ",".join(fr.columns) or "(not mapped)"
            lines.append(
                f"  {fr.field:<16} {cols:<24} {fr.present:>8} {fr.missing:>8} {fr.invalid:>8} "
                f"{fr.distinct:>8}"
            )
        for fr in self.fields:
            for item in fr.invalid_rows[:PRINT_LIMIT]:
                lines.append(
                    f"  invalid {fr.field} at row {item['row']}: {item['reason']} "
                    "(encoded as missing)"
                )
            if len(fr.invalid_rows) > PRINT_LIMIT:
                lines.append(
                    f"  ... and {len(fr.invalid_rows) - PRINT_LIMIT} more invalid {fr.field} "
                    "values (all listed in local/report.json)"
                )
        if self.empty_records:
            lines.append(
                f"  {self.empty_records} record(s) had no usable value at all and cannot match"
            )
        if self.few_fields_records:
            lines.append(
                f"  {self.few_fields_records} record(s) have fewer than {FEW_FIELDS} usable "
                "fields and will rarely match with confidence"
            )
        if self.hardening:
            lines.append(f"  hardening: {self.hardening}")
        lines.extend(f"  warning: {w}" for w in self.warnings)
        return "\n".join(lines)


@dataclass
class EncodeResult:
    clks: bytes
    clk_bits: int
    fingerprint: bytes
    ids: list[str]
    report: EncodeReport
    field_bits: tuple[int, ...] = ()  # segment sizes of a field-level encoding
    fallback_bits: int = 0  # record-level with a fallback CLK: the second CLK's bits


def read_secret(path: str | Path) -> bytes:
    """The shared linkage secret: the file's bytes, surrounding whitespace ignored."""
    path = Path(path)
    try:
        secret = path.read_bytes().strip()
    except FileNotFoundError:
        raise InputError(f"{path}: secret file not found") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder, not a secret file") from None
    if not secret:
        raise InputError(
            f"{path}: the secret file is empty; all members need the same secret, e.g. "
            "made once with `python3 -c 'import secrets; print(secrets.token_hex(32))'`"
        )
    return secret


def _decoded_lines(path: Path) -> Iterator[str]:
    """The file's lines as text, failing on the first line that is not UTF-8."""
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(
                    f"{path}: line {number} is not valid UTF-8 (byte {exc.start + 1}); "
                    "save the export as UTF-8 CSV"
                ) from None
            if number == 1 and text.startswith("\ufeff"):
                text = text[1:]
            yield text


def _progress(total: int | None, desc: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=desc,
        unit="rec",
        file=sys.stderr,
        disable=not enabled,
        leave=False,
        dynamic_ncols=True,
    )


def _numbered(reader: Iterator[list[str]], csv_path: Path) -> Iterator[tuple[int, list[str]]]:
    """Data rows with their row number (the header is row 1); CSV syntax errors named."""
    line_no = 1
    while True:
        line_no += 1
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
    csv_path: Path, schema: LinkageSchema, mapping: Mapping, report: EncodeReport
) -> tuple[list[str], list[list[str]]]:
    """Local ids and normalised schema-ordered values, one list per row."""
    if not csv_path.is_file():
        raise InputError(f"{csv_path}: data file not found")
    reader = csv.reader(_decoded_lines(csv_path), delimiter=mapping.delimiter, strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise InputError(f"{csv_path}: the file is empty (no header row)") from None
    except csv.Error as exc:
        raise InputError(f"{csv_path}: row 1: {exc}") from None
    header = [h.strip() for h in header]
    positions = {name: i for i, name in enumerate(header)}
    absent = [c for c in mapping.columns_used() if c not in positions]
    if absent:
        mapped_to = {c: f for f, cm in mapping.fields.items() for c in cm.columns}
        described = [
            f"'{c}' (mapped to {mapped_to.get(c, 'the record id')} in {mapping.path.name})"
            for c in absent
        ]
        raise InputError(
            f"{csv_path}: column(s) {', '.join(described)} not in the header; "
            f"the header has: {', '.join(header)}"
        )

    id_pos = positions[mapping.id_column]
    plan: list[tuple[int, list[int], str | None]] = []
    for index, rule in enumerate(schema.rules):
        cmap = mapping.fields.get(rule.name)
        if rule.kind == "ignore":
            continue
        cols = list(cmap.columns) if cmap else []
        report.fields.append(FieldReport(rule.name, cols))
        plan.append((index, [positions[c] for c in cols], cmap.date_format if cmap else None))
        if cmap is None:
            report.warnings.append(
                f"schema field {rule.name} is not mapped; it is encoded as missing for every row"
            )

    ids: list[str] = []
    rows: list[list[str]] = []
    tallies: list[Counter[str]] = [Counter() for _ in plan]
    seen: dict[str, int] = {}
    width = len(header)
    sentinels = [schema.missing_sentinel(i) for i in range(len(schema.rules))]
    for line_no, record in _numbered(reader, csv_path):
        if not record:
            continue  # a blank line
        if len(record) != width:
            raise InputError(
                f"{csv_path}: row {line_no} has {len(record)} columns, the header has {width}; "
                "check quoting and delimiters in the export"
            )
        local_id = record[id_pos].strip()
        if not local_id:
            raise InputError(f"{csv_path}: row {line_no}, column {mapping.id_column}: empty id")
        if local_id in seen:
            raise InputError(
                f"{csv_path}: row {line_no}, column {mapping.id_column}: id {local_id!r} "
                f"repeats row {seen[local_id]}; record ids must be unique"
            )
        seen[local_id] = line_no
        values = list(sentinels)
        usable = 0
        for (index, where, date_format), fr, tally in zip(
            plan, report.fields, tallies, strict=True
        ):
            raw = " ".join(record[c] for c in where)
            if is_missing(raw):
                fr.missing += 1
                continue
            rule = schema.rules[index]
            try:
                value = normalise_value(rule, raw, date_format)
                schema.clk_schema.fields[index].validate(value)
            except (InvalidValue, InvalidEntryError) as exc:
                fr.invalid += 1
                fr.invalid_rows.append({"row": line_no, "reason": str(exc).split("\n")[0]})
                continue
            fr.present += 1
            values[index] = value
            tally[value] += 1
            usable += 1
        if not usable:
            report.empty_records += 1
        elif usable < min(FEW_FIELDS, len(plan)):
            report.few_fields_records += 1
        ids.append(local_id)
        rows.append(values)
    report.rows_read = len(rows)
    for fr, tally in zip(report.fields, tallies, strict=True):
        fr.distinct = len(tally)
        if tally:
            fr.commonest, fr.commonest_rows = tally.most_common(1)[0]
    return ids, rows


def _quality_warnings(report: EncodeReport, schema: LinkageSchema) -> None:
    """Tell the member, before anything leaves the building, what will hurt matching."""
    if not report.rows_read:
        return
    kinds = {rule.name: rule.kind for rule in schema.rules}
    for fr in report.fields:
        if not fr.columns:
            continue
        share = fr.present / report.rows_read
        if share < SPARSE_BELOW:
            if fr.field in schema.fallback:
                effect = (
                    "records without it are compared on the fallback CLK, which leaves it out "
                    "(a missing value is not held against a match, but gives no evidence for "
                    "one either)"
                )
            elif report.field_level:
                effect = (
                    "records without it are matched on the other fields alone (field-level "
                    "encoding: a missing value is not held against a match, but gives no "
                    "evidence for one either)"
                )
            else:
                effect = (
                    "with this record-level schema a missing value lowers the similarity of "
                    "every true match, so many of those records will fall below the threshold"
                )
            report.warnings.append(f"{fr.field} is present in only {share:.0%} of rows; {effect}")
        if (
            kinds.get(fr.field) != "enum"
            and fr.commonest_rows >= FREQUENT_MIN
            and fr.commonest_rows > FREQUENT_SHARE * max(fr.present, 1)
        ):
            report.warnings.append(
                f"{fr.field}: {fr.commonest!r} appears in {fr.commonest_rows} rows "
                f"({fr.commonest_rows / max(fr.present, 1):.0%} of values); if it is a "
                "placeholder for 'unknown', blank it in the export, or unrelated records "
                "will agree on it"
            )
        if fr.invalid and fr.invalid / report.rows_read >= 0.05:
            report.warnings.append(
                f"{fr.field}: {fr.invalid} value(s) ({fr.invalid / report.rows_read:.0%}) could "
                "not be read; check the column and any date_format in the mapping"
            )


def encode_csv(
    csv_path: str | Path,
    schema: LinkageSchema,
    mapping: Mapping,
    secret: bytes,
    *,
    progress: bool = False,
    max_workers: int | None = None,
) -> EncodeResult:
    """Normalise and encode every row of `csv_path`; see the module docstring."""
    csv_path = Path(csv_path)
    report = EncodeReport(source=str(csv_path))
    ids, rows = read_rows(csv_path, schema, mapping, report)
    report.field_level = schema.field_level
    _quality_warnings(report, schema)
    hardening = hardening_from_raw(schema.raw, str(schema.path))
    report.hardening = hardening.describe()
    report.warnings.extend(f"weaker privacy: {w}" for w in hardening.weaknesses())
    if schema.field_level:
        report.warnings.append(
            "weaker privacy: field-level encoding: identical values give identical filters, so "
            "the linkage service can count how many records share each given name, surname or "
            "date of birth and align the counts with public lists (privacy-check re-identifies "
            "5-15% of names this way; the record-level default stays under 1%, docs/privacy.md)"
        )
    if schema.fallback:
        report.warnings.append(
            "weaker privacy: the fallback CLK (blindmatch.fallback) uploads a second, "
            f"{'/'.join(schema.fallback)}-free similarity graph of every record; a matcher "
            "holding plaintext on the same people matches it to re-identify records (graph "
            "matching, docs/privacy.md): leave blindmatch.fallback out unless many records lack "
            f"{'/'.join(schema.fallback)}"
        )
    if schema.field_level and not hardening.is_none:
        raise InputError(
            f"{schema.path}: blindmatch.hardening is not supported with field-level schemas yet; "
            "use a record-level schema for hardened encodings (docs/privacy.md)"
        )
    encoding_schema = schema.for_encoding()
    bar = _progress(len(rows), "encoding", progress)
    try:
        if schema.field_level:
            clks = encode_field_level(
                rows, encoding_schema, schema.field_bits, secret, callback=bar.update
            )
        else:
            clks = encode_records(
                rows,
                encoding_schema,
                secret,
                hardening,
                field_names=schema.field_names,
                callback=bar.update,
                max_workers=max_workers,
            ).tobytes()
    finally:
        bar.close()
    clk_bits = schema.clk_bits if schema.field_level else encoded_bits(encoding_schema, hardening)
    fallback_bits = 0
    if schema.fallback:
        second = encode_fallback(rows, schema, secret, hardening, max_workers=max_workers)
        first = np.frombuffer(clks, dtype=np.uint8).reshape(len(rows), clk_bits // 8)
        clks = np.concatenate([first, second], axis=1).tobytes()
        fallback_bits = 8 * second.shape[1]
        clk_bits += fallback_bits
    report.rows_encoded = len(clks) // (clk_bits // 8)
    return EncodeResult(
        clks=clks,
        clk_bits=clk_bits,
        fingerprint=fingerprint(schema.raw, secret),
        ids=ids,
        report=report,
        field_bits=schema.field_bits,
        fallback_bits=fallback_bits,
    )


# Appended to the schema's HKDF info for the fallback CLK: its keys are unrelated to the
# first CLK's, so the two cannot be compared bit by bit (one minus the other would be a
# field-level filter of the left-out fields).
FALLBACK_INFO = b"\x1fblindmatch fallback\x1f"


def encode_fallback(
    rows: list[list[str]],
    schema: LinkageSchema,
    secret: bytes,
    hardening: Hardening,
    *,
    max_workers: int | None = None,
) -> npt.NDArray[np.uint8]:
    """Each row's fallback CLK: record-level, without the schema's `fallback` fields,
    under keys of its own; (rows, bits/8) bytes."""
    if hardening.salt_field in schema.fallback:
        raise InputError(
            f"{schema.path}: blindmatch.hardening salts with {hardening.salt_field}, which the "
            "fallback CLK (blindmatch.fallback) leaves out: every fallback CLK would get the same "
            "empty salt, i.e. none. Salt with a field the fallback keeps, or drop "
            "blindmatch.fallback"
        )
    encoding_schema = schema.for_encoding()
    encoding_schema.kdf_info = (
        (encoding_schema.kdf_info or b"") + FALLBACK_INFO + ",".join(schema.fallback).encode()
    )
    left_out = [schema.field_names.index(name) for name in schema.fallback]
    sentinels = {i: schema.missing_sentinel(i) for i in left_out}
    reduced = [[sentinels.get(i, v) for i, v in enumerate(row)] for row in rows]
    return encode_records(
        reduced,
        encoding_schema,
        secret,
        hardening,
        field_names=schema.field_names,
        max_workers=max_workers,
    )


__all__ = ["EncodeReport", "EncodeResult", "encode_csv", "read_secret"]
