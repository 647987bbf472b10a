"""One person given on the command line (`blindmatch query --surname ...`), encoded
exactly as the same person in an export would be."""

from __future__ import annotations

import csv
import tempfile
from collections.abc import Mapping
from pathlib import Path

from blindmatch.client.encoding.encode import EncodeResult, encode_csv
from blindmatch.client.encoding.mapping import ColumnMap
from blindmatch.client.encoding.mapping import Mapping as ColumnMapping
from blindmatch.client.encoding.schema import LinkageSchema
from blindmatch.client.errors import InputError


def encode_person(
    schema: LinkageSchema,
    secret: bytes,
    values: Mapping[str, str],
    date_formats: Mapping[str, str] | None = None,
) -> EncodeResult:
    """Encode one person given on the command line, exactly as `encode` would.

    `values` maps schema fields to raw values; it goes through a one-row CSV and the
    same mapping, normalisation and encoder as an export, so the CLK is identical to
    the one the same person gets in an ENCODED folder.
    """
    hashed = schema.hashed_fields()
    unknown = [f for f in values if f not in hashed]
    if unknown:
        raise InputError(
            f"{', '.join(unknown)}: not a field of the schema {schema.path.name} "
            f"(its fields are: {', '.join(hashed)})"
        )
    if not any(v.strip() for v in values.values()):
        raise InputError("give at least one field of the person to query, e.g. --surname")
    fields = list(values)
    with tempfile.TemporaryDirectory(prefix="blindmatch-query-") as tmp:
        path = Path(tmp) / "query.csv"
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["query_id", *fields])
            writer.writerow(["query", *(values[f] for f in fields)])
        mapping = ColumnMapping(
            path=Path("<command line>"),
            id_column="query_id",
            fields={
                f: ColumnMap((f,), (date_formats or {}).get(f) if f in values else None)
                for f in fields
            },
        )
        result = encode_csv(path, schema, mapping, secret)
    result.report.source = "the command line"
    return result
