"""Encoding an export: CSV + mapping + schema + secret -> CLKs and an encode report.

Runs entirely on the member's machine. `client.encoding.readcsv` reads and normalises the export
(structural problems stop it, naming the file, row and column; a bad *value* is encoded as
missing and listed in the report with its row); this module warns about what will hurt
matching and encodes the rows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from clkhash.schema import Schema

from blindmatch.client.encoding import sharing
from blindmatch.client.encoding.encoded import Encoded, write_encoded
from blindmatch.client.encoding.fieldlevel import encode_field_level
from blindmatch.client.encoding.fingerprint import fingerprint, schema_digest
from blindmatch.client.encoding.frequency import row_bits, untiered, untiered_warning, with_bits
from blindmatch.client.encoding.harden import (
    Hardening,
    encode_records,
    encoded_bits,
    hardening_from_raw,
)
from blindmatch.client.encoding.mapping import Mapping
from blindmatch.client.encoding.readcsv import (
    ON_DUPLICATE,
    EncodeReport,
    FieldReport,
    OnDuplicate,
    read_rows,
)
from blindmatch.client.encoding.schema import LinkageSchema
from blindmatch.client.encoding.schemacheck import fallback_blip_warning
from blindmatch.client.errors import InputError
from blindmatch.client.progress import ROWS, Progress
from blindmatch.client.words import counted

# Below this share of present values a field is called sparse in the report.
SPARSE_BELOW = 0.8
# A single value held by more than this share of rows (and FREQUENT_MIN rows) looks like a
# placeholder the encoder does not know ('01/01/1970', 'XXX'): it makes unrelated records
# agree. (Known ones, such as 01/01/1900 and UNKNOWN, are missing: normalise.PLACEHOLDERS.)
FREQUENT_SHARE = 0.05
FREQUENT_MIN = 5


@dataclass
class EncodeResult:
    clks: bytes
    clk_bits: int
    fingerprint: bytes
    ids: list[str]
    report: EncodeReport
    field_bits: tuple[int, ...] = ()  # segment sizes of a field-level encoding
    fallback_bits: int = 0  # record-level with a fallback CLK: the second CLK's bits
    schema_digest: str = ""  # fingerprint.schema_digest of the schema
    # With a fallback CLK: the schema's rule over both CLKs (gap, offset, reach); None: none.
    rule: tuple[float, float, float] | None = None
    # Per row, per reported field (report.fields order): whether it had a usable value.
    present: npt.NDArray[np.bool_] = dataclasses.field(
        default_factory=lambda: np.zeros((0, 0), dtype=bool)
    )


def read_secret(path: str | Path) -> bytes:
    """The shared linkage secret: the file's bytes, surrounding whitespace ignored; a file that
    cannot be a secret file (`sharedsecret.format_problem`: a data file, a key) is refused."""
    path = Path(path)
    try:
        secret = path.read_bytes().strip()
    except FileNotFoundError:
        raise InputError(f"{path}: secret file not found") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder, not a secret file") from None
    if not secret:
        raise InputError(
            f"{path}: the secret file is empty; all members need the same secret, made once "
            "with `blindmatch secret new FILE` and sent to the others sealed (`blindmatch "
            "secret seal`)"
        )
    from blindmatch.client.encoding.sharedsecret import NOT_A_SECRET, format_problem

    problem = format_problem(secret)
    if problem is not None:
        raise InputError(f"{path}: {NOT_A_SECRET}; {problem}")
    return secret


def _quality_warnings(report: EncodeReport, schema: LinkageSchema) -> None:
    """Tell the member, before anything leaves the building, what will hurt matching."""
    kinds = {rule.name: rule.kind for rule in schema.rules}
    for fr in report.fields:
        rows = fr.present + fr.missing + fr.invalid + fr.ambiguous
        if not fr.columns or not rows:
            continue
        share = fr.present / rows
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
        if fr.invalid and fr.invalid / rows >= 0.05:
            check = {"date": "the column and any date_format", "text": "the column and any split"}
            check_what = check.get(kinds.get(fr.field, ""), "the column")
            report.warnings.append(
                f"{fr.field}: {counted(fr.invalid, 'value')} ({fr.invalid / rows:.0%}) could "
                f"not be read; check {check_what} in the mapping"
            )
        if fr.ambiguous:
            report.warnings.append(
                f"{fr.field}: {counted(fr.ambiguous, 'value')} ({fr.ambiguous / rows:.0%}) read as "
                "different dates under the mapping's date formats and were encoded as "
                "missing; if the export writes one order only, declare just that format"
            )


def encode_csv(
    csv_path: str | Path,
    schema: LinkageSchema,
    mapping: Mapping,
    secret: bytes,
    *,
    progress: bool = False,
    max_workers: int | None = None,
    on_duplicate_id: OnDuplicate = "error",
    allow_empty: bool = False,
    duplicate_hint: str | None = None,
) -> EncodeResult:
    """Normalise and encode every row of `csv_path`; see the module docstring."""
    csv_path = Path(csv_path)
    report = EncodeReport(source=str(csv_path))
    reading = Progress("reading", unit=ROWS, enabled=progress)
    try:
        ids, rows = read_rows(
            csv_path, schema, mapping, report, on_duplicate_id=on_duplicate_id,
            allow_empty=allow_empty, duplicate_hint=duplicate_hint, tick=reading.update,
        )  # fmt: skip
    finally:
        reading.close()
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
            "holding plaintext on the same people matches it to re-identify records, blind "
            "(graph matching, docs/privacy.md). Without it the first CLK's graph still gives "
            "most records away once the matcher knows about 50 pairs; a schema without "
            "blindmatch.fallback (for the default: schemas/person-uk-no-fallback.json) costs "
            f"about 1 F1 point where records lack {'/'.join(schema.fallback)}"
        )
    blurred = fallback_blip_warning(schema)  # (schema check's words: one source)
    if blurred:
        report.warnings.append(blurred)
    if schema.frequency:
        report.warnings.append(
            "weaker privacy: frequency tiers (blindmatch.frequency on "
            f"{', '.join(t.field for t in schema.frequency)}): a rare value makes more bits, "
            "a common one fewer, so the linkage service can tell from a CLK's popcount "
            "roughly whether the record carries a rare or a common name (docs/schema.md)"
        )
    if schema.frequency and rows:  # too few values to tier: warned, encoded (docs/schema.md)
        values = {fr.field: fr.present for fr in report.fields}
        report.warnings.extend(
            untiered_warning(t, n) for t, n in untiered(schema.frequency, values)
        )
    if schema.field_level and not hardening.is_none:
        raise InputError(
            f"{schema.path}: blindmatch.hardening is not supported with field-level schemas yet; "
            "use a record-level schema for hardened encodings (docs/privacy.md)"
        )
    encoding_schema = schema.for_encoding()
    # One bar over the rows, as the report counts them, through both passes: with a fallback
    # CLK each of a row's two CLKs is half of it (the second pass used to run after the bar
    # had reached 100%; then the bar counted CLKs, "6/12 CLKs" beside "Encoded 6 of 6 rows").
    bar = Progress("encoding", len(rows), unit=ROWS, enabled=progress)
    tick = _in_rows(bar.update, 2 if schema.fallback else 1)
    try:
        if schema.field_level:
            clks = encode_field_level(
                rows, encoding_schema, schema.field_bits, secret, callback=tick
            )
        else:
            clks = encode_first(
                rows, schema, secret, hardening, callback=tick, max_workers=max_workers
            ).tobytes()
        clk_bits = (
            schema.clk_bits if schema.field_level else encoded_bits(encoding_schema, hardening)
        )
        fallback_bits = 0
        if schema.fallback:
            second = encode_fallback(
                rows, schema, secret, hardening, max_workers=max_workers, callback=tick
            )
            first = np.frombuffer(clks, dtype=np.uint8).reshape(len(rows), clk_bits // 8)
            clks = np.concatenate([first, second], axis=1).tobytes()
            fallback_bits = 8 * second.shape[1]
            clk_bits += fallback_bits
    finally:
        bar.close()
    report.rows_encoded = len(clks) // (clk_bits // 8)
    index = {name: i for i, name in enumerate(schema.field_names)}
    columns = [index[fr.field] for fr in report.fields]
    sentinels = [schema.missing_sentinel(i) for i in columns]
    present = np.array(
        [[row[i] != s for i, s in zip(columns, sentinels, strict=True)] for row in rows],
        dtype=bool,
    ).reshape(len(rows), len(columns))
    return EncodeResult(
        clks=clks,
        clk_bits=clk_bits,
        fingerprint=fingerprint(schema.raw, secret),
        ids=ids,
        report=report,
        field_bits=schema.field_bits,
        fallback_bits=fallback_bits,
        present=present,
        schema_digest=schema_digest(schema.raw),
        rule=schema.rule,
    )


def _in_rows(update: Callable[[int], None], clks_a_row: int) -> Callable[[int], None]:
    """A callback told CLKs made that moves `update` by rows: `clks_a_row` CLKs a row."""
    made = 0

    def tick(clks: int) -> None:
        nonlocal made
        before, made = made // clks_a_row, made + clks
        if made // clks_a_row > before:
            update(made // clks_a_row - before)

    return tick


def save_encoded(
    out: str | Path,
    result: EncodeResult,
    schema: LinkageSchema,
    secret: bytes,
    two_server: bool = False,
) -> Encoded:
    """Write `result` as the ENCODED folder `out`, as `blindmatch encode` does; with
    `two_server`, also the upload for a two-server run in out/twoserver/ (by recipient: S1's,
    S2's and the combiner's parts), as `encode --two-server` does."""
    encoded = write_encoded(
        out,
        clks=result.clks,
        clk_bits=result.clk_bits,
        fingerprint=result.fingerprint,
        ids=result.ids,
        report=result.report.to_dict(),
        field_bits=result.field_bits,
        fallback_bits=result.fallback_bits,
        schema_digest=result.schema_digest,
        rule=result.rule,
        # In the temporary folder, before the one rename: a kill or a full disk while the
        # shares are written leaves no ENCODED folder (or the earlier one), never one whose
        # twoserver/ is missing or cut short.
        also=(lambda tmp: save_two_server(tmp, result, schema, secret)) if two_server else None,
    )
    return encoded


def save_two_server(
    out: str | Path, result: EncodeResult, schema: LinkageSchema, secret: bytes
) -> None:
    """Write the upload for a two-server run of `result` in out/twoserver/, by recipient
    (client/encoding/sharing.py: S1's, S2's and the combiner's parts), a range of bands at a
    time (client/encoding/sharedwrite.py: memory about flat in the records)."""
    from blindmatch.client.encoding.sharedwrite import write_upload

    clks = np.frombuffer(result.clks, dtype=np.uint8).reshape(-1, result.clk_bits // 8)
    write_upload(Path(out) / sharing.SHARED_FOLDER, clks, secret, sharing.plan_of(schema),
                 result.fallback_bits)  # fmt: skip


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
    reference: Sequence[Sequence[str]] | None = None,
    callback: Callable[[int], None] | None = None,
) -> npt.NDArray[np.uint8]:
    """Each row's fallback CLK: record-level, without the schema's `fallback` fields,
    under keys of its own; (rows, bits/8) bytes. Frequency tiers are counted over
    `reference` (the whole export) when given, else over `rows`; `callback(n)` is told of
    every n CLKs made."""
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
    return _encode_tiered(
        reduced,
        schema,
        encoding_schema,
        secret,
        hardening,
        reference=rows if reference is None else reference,
        callback=callback,
        max_workers=max_workers,
    )


def encode_first(
    rows: Sequence[Sequence[str]],
    schema: LinkageSchema,
    secret: bytes,
    hardening: Hardening,
    *,
    callback: Callable[[int], None] | None = None,
    max_workers: int | None = None,
    reference: Sequence[Sequence[str]] | None = None,
) -> npt.NDArray[np.uint8]:
    """Each row's (first) record-level CLK, hardened, with the schema's frequency tiers
    counted over `reference` (the whole export) when given, else over `rows`
    (encoding.frequency); (rows, bits/8) bytes."""
    return _encode_tiered(
        rows,
        schema,
        schema.for_encoding(),
        secret,
        hardening,
        reference=rows if reference is None else reference,
        callback=callback,
        max_workers=max_workers,
    )


def _encode_tiered(
    rows: Sequence[Sequence[str]],
    schema: LinkageSchema,
    encoding_schema: Schema,
    secret: bytes,
    hardening: Hardening,
    *,
    reference: Sequence[Sequence[str]],
    callback: Callable[[int], None] | None = None,
    max_workers: int | None = None,
) -> npt.NDArray[np.uint8]:
    """`encode_records`, with each row's tiered features hashed at its tier's insertions:
    the rows of one combination of tiers are encoded together under a schema copy."""
    if not schema.frequency or not rows:
        return encode_records(
            rows,
            encoding_schema,
            secret,
            hardening,
            field_names=schema.field_names,
            callback=callback,
            max_workers=max_workers,
        )
    sentinels = [schema.missing_sentinel(t.index) for t in schema.frequency]
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, bits in enumerate(row_bits(rows, schema.frequency, sentinels, reference)):
        groups.setdefault(bits, []).append(i)
    out: npt.NDArray[np.uint8] | None = None
    for bits, members in sorted(groups.items()):
        part = encode_records(
            [rows[i] for i in members],
            with_bits(encoding_schema, schema.frequency, bits),
            secret,
            hardening,
            field_names=schema.field_names,
            callback=callback,
            max_workers=max_workers,
        )
        if out is None:
            out = np.zeros((len(rows), part.shape[1]), dtype=np.uint8)
        out[members] = part
    assert out is not None
    return out


__all__ = [
    "ON_DUPLICATE",
    "EncodeReport",
    "EncodeResult",
    "FieldReport",
    "OnDuplicate",
    "encode_csv",
    "encode_fallback",
    "encode_first",
    "read_rows",
    "read_secret",
    "save_encoded",
    "save_two_server",
]
