"""A member's mapping of its own export onto the shared schema (MAP.toml).

    id = "URN"                      # local record id column: used locally, never uploaded
    delimiter = ","                 # optional
    [fields]
    given_name = "Forenames"        # schema field = local column
    surname = "Surname"
    dob = { column = "DOB", date_format = "%d/%m/%Y" }
    address = { columns = ["Addr1", "Addr2"] }   # joined with a space

Every problem in the file is collected and reported together.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from blindmatch.client.encoding.schema import LinkageSchema
from blindmatch.client.errors import InputError


@dataclass(frozen=True)
class ColumnMap:
    """Which local column(s) feed one schema field, and how to read dates there."""

    columns: tuple[str, ...]
    date_format: str | None = None


@dataclass(frozen=True)
class Mapping:
    path: Path
    id_column: str
    fields: dict[str, ColumnMap]
    delimiter: str = ","

    def columns_used(self) -> list[str]:
        cols = [self.id_column]
        for cmap in self.fields.values():
            cols.extend(c for c in cmap.columns if c not in cols)
        return cols


def _column_map(field: str, value: Any, problems: list[str]) -> ColumnMap | None:
    if isinstance(value, str):
        return ColumnMap((value,))
    if not isinstance(value, dict):
        problems.append(f"fields.{field}: expected a column name or a table, got {value!r}")
        return None
    unknown = sorted(set(value) - {"column", "columns", "date_format"})
    if unknown:
        problems.append(f"fields.{field}: unknown key(s) {', '.join(unknown)}")
    if ("column" in value) == ("columns" in value):
        problems.append(f"fields.{field}: give exactly one of 'column' or 'columns'")
        return None
    if "column" in value:
        columns: Any = [value["column"]]
    else:
        columns = value["columns"]
    if (
        not isinstance(columns, list)
        or not columns
        or not all(isinstance(c, str) and c for c in columns)
    ):
        problems.append(f"fields.{field}: columns must be non-empty column names")
        return None
    date_format = value.get("date_format")
    if date_format is not None:
        if not isinstance(date_format, str) or "%" not in date_format:
            problems.append(
                f"fields.{field}: date_format must be a strftime format such as '%d/%m/%Y'"
            )
            date_format = None
        else:
            probe = date(1987, 11, 23)
            try:
                probe.strftime(date_format)
            except ValueError as exc:
                problems.append(f"fields.{field}: date_format {date_format!r} is invalid: {exc}")
                date_format = None
    return ColumnMap(tuple(columns), date_format)


def load_mapping(path: str | Path, schema: LinkageSchema) -> Mapping:
    """Read MAP.toml and check it against the schema; all problems at once."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: mapping file not found") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InputError(f"{path}: not a valid TOML file ({exc})") from None

    problems: list[str] = []
    unknown = sorted(set(data) - {"id", "fields", "delimiter"})
    if unknown:
        problems.append(f"unknown top-level key(s) {', '.join(unknown)}")
    id_column = data.get("id")
    if not isinstance(id_column, str) or not id_column:
        problems.append("'id' must name the local record id column, e.g. id = \"URN\"")
        id_column = ""
    delimiter = data.get("delimiter", ",")
    if not isinstance(delimiter, str) or len(delimiter) != 1:
        problems.append("'delimiter' must be a single character")
        delimiter = ","
    raw_fields = data.get("fields")
    if not isinstance(raw_fields, dict) or not raw_fields:
        problems.append("a [fields] table mapping schema fields to columns is required")
        raw_fields = {}

    hashed = schema.hashed_fields()
    date_fields = {rule.name for rule in schema.rules if rule.kind == "date"}
    fields: dict[str, ColumnMap] = {}
    for field, value in raw_fields.items():
        if field not in hashed:
            problems.append(
                f"fields.{field}: not a field of the schema {schema.path.name} "
                f"(its fields are: {', '.join(hashed)})"
            )
            continue
        cmap = _column_map(field, value, problems)
        if cmap is None:
            continue
        if cmap.date_format and field not in date_fields:
            problems.append(f"fields.{field}: date_format given, but {field} is not a date field")
        fields[field] = cmap

    if problems:
        raise InputError(f"{path}: " + "; ".join(problems))
    return Mapping(path=path, id_column=id_column, fields=fields, delimiter=delimiter)
