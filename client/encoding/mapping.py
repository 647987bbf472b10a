"""A member's mapping of its own export onto the shared schema (MAP.toml).

    id = "URN"                      # local record id column: used locally, never uploaded
    delimiter = ","                 # optional
    encoding = "cp1252"             # optional (default UTF-8): an Excel export's code page
    [fields]
    given_name = "Forenames"        # schema field = local column
    surname = "Surname"
    dob = { column = "DOB", date_format = ["%d/%m/%Y", "%Y-%m-%d"] }   # tried in order
    address = { columns = ["Addr1", "Addr2"] }   # joined with a space
    # or one full-name column split by a declared rule:
    # given_name = { column = "Name", split = "surname, given" }
    # surname = { column = "Name", split = "surname, given" }
    sex = { column = "Gender", values = { "1" = "M", "2" = "F", "9" = "", "0" = "" } }
    # codes the export writes for an enumeration's values ("" for "not known": missing)

The keys are documented in docs/mapping.md.
Every problem in the file is collected and reported together.
"""

from __future__ import annotations

import codecs
import tomllib
import unicodedata
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from blindmatch.client.encoding.datetext import format_problem
from blindmatch.client.encoding.normalise import (
    SPLITS,
    InvalidValue,
    Part,
    normalise_enum,
    normalise_text,
)
from blindmatch.client.encoding.schema import LinkageSchema
from blindmatch.client.errors import InputError
from blindmatch.client.words import word

FIELD_KEYS = ("column", "columns", "date_format", "split", "part", "values")
TOP_KEYS = ("id", "fields", "delimiter", "encoding")
# What a field's name says about which part of a split full name it takes.
_SURNAME_WORDS = ("surname", "last", "family")
_GIVEN_WORDS = ("given", "first", "fore")


@dataclass(frozen=True)
class ColumnMap:
    """Which local column(s) feed one schema field, how to read dates there, and (for a
    full-name column) which split rule cuts it and which part this field takes."""

    columns: tuple[str, ...]
    date_format: tuple[str, ...] = ()  # formats tried in order; () for the defaults
    split: str | None = None  # one of normalise.SPLITS
    part: Part | None = None  # the part of the split name this field takes
    # An enumeration's codes, as the export writes them (folded as text: " 1 " is "1"), and
    # the allowed value each stands for, "" for none (missing): the NHS's 1, 2, 9, 0 for sex.
    values: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Mapping:
    path: Path
    id_column: str
    fields: dict[str, ColumnMap]
    delimiter: str = ","
    encoding: str = "utf-8"

    def columns_used(self) -> list[str]:
        cols = [self.id_column]
        for cmap in self.fields.values():
            cols.extend(c for c in cmap.columns if c not in cols)
        return cols


def column_name(name: str) -> str:
    """A column's name as it is matched: stripped, and in Unicode's composed form (NFC), so
    that 'Prénom' typed in the mapping is the 'Pre\u0301nom' a Mac's export may write."""
    return unicodedata.normalize("NFC", name.strip())


def _date_formats(field: str, value: Any, problems: list[str], date_field: bool) -> tuple[str, ...]:
    """`date_format`: one strptime format (how the dates are read), or a list of them tried in
    order; each checked as one for a date field (another is refused for taking any)."""
    if value is None:
        return ()
    formats = [value] if isinstance(value, str) else value
    if (
        not isinstance(formats, list)
        or not formats
        or not all(isinstance(f, str) and f for f in formats)
    ):
        problems.append(
            f"fields.{field}: date_format must be a strptime format such as '%d/%m/%Y', or a "
            "list of them tried in order"
        )
        return ()
    for fmt in formats if date_field else ():
        problem = format_problem(fmt)
        if problem:
            problems.append(f"fields.{field}: date_format {problem}")
            return ()
    return tuple(formats)


def _part(field: str, value: dict[str, Any], problems: list[str]) -> Part | None:
    """Which part of a split name the field takes: `part`, or read from the field's name."""
    part = value.get("part")
    if part is not None:
        if part not in ("given", "surname"):
            problems.append(f"fields.{field}: part must be 'given' or 'surname'")
            return None
        return part  # type: ignore[no-any-return]
    lowered = field.lower()
    if any(w in lowered for w in _SURNAME_WORDS):
        return "surname"
    if any(w in lowered for w in _GIVEN_WORDS):
        return "given"
    problems.append(
        f'fields.{field}: say which part of the split name it takes: part = "given" or '
        'part = "surname"'
    )
    return None


def _column_map(field: str, value: Any, problems: list[str], date_field: bool) -> ColumnMap | None:
    if isinstance(value, str):
        return ColumnMap((value,))
    if not isinstance(value, dict):
        problems.append(f"fields.{field}: expected a column name or a table, got {value!r}")
        return None
    unknown = sorted(set(value) - set(FIELD_KEYS))
    if unknown:
        problems.append(
            f"fields.{field}: unknown {word(len(unknown), 'key')} {', '.join(unknown)} (a field's "
            f"table takes {', '.join(FIELD_KEYS)})"
        )
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
    date_formats = _date_formats(field, value.get("date_format"), problems, date_field)
    split = value.get("split")
    part = None
    if split is not None:
        if split not in SPLITS:
            problems.append(
                f"fields.{field}: split must be one of {', '.join(repr(s) for s in SPLITS)}"
            )
            split = None
        else:
            part = _part(field, value, problems)
    elif "part" in value:
        problems.append(f"fields.{field}: part is only for a split name (split = ...)")
    codes = _codes(field, value.get("values"), problems)
    return ColumnMap(tuple(map(column_name, columns)), date_formats, split, part, codes)


def _codes(field: str, value: Any, problems: list[str]) -> tuple[tuple[str, str], ...]:
    """`values`: a table of the codes an export writes and the value each stands for."""
    if value is None:
        return ()
    if (
        not isinstance(value, dict)
        or not value
        or not all(isinstance(v, str) and normalise_text(k) for k, v in value.items())
    ):
        problems.append(
            f'fields.{field}: values must be a table of codes, e.g. values = {{ "1" = "M", '
            '"2" = "F", "9" = "" } ("" for a code that means not known)'
        )
        return ()
    folded: dict[str, str] = {}
    for code, meant in value.items():
        if folded.setdefault(normalise_text(code), meant) != meant:
            problems.append(f"fields.{field}: values gives code {code!r} two meanings")
    return tuple(folded.items())


def _check_codes(
    field: str, cmap: ColumnMap, schema: LinkageSchema, problems: list[str]
) -> ColumnMap:
    """`cmap` with its codes' values as the schema writes them ('m' -> 'M'); a code for a field
    that is no enumeration, or meaning a value the schema does not allow, is a problem."""
    if not cmap.values:
        return cmap
    rule = next(r for r in schema.rules if r.name == field)
    if rule.kind != "enum":
        problems.append(f"fields.{field}: values given, but {field} is not an enumeration field")
        return cmap
    codes = []
    for code, meant in cmap.values:
        try:
            codes.append((code, normalise_enum(meant, rule.enum_values) if meant else ""))
        except InvalidValue:
            problems.append(
                f"fields.{field}: values: code {code!r} means {meant!r}, which is not one of "
                f'{", ".join(rule.enum_values)} (or "" for not known)'
            )
    return replace(cmap, values=tuple(codes))


def _encoding(value: Any, problems: list[str]) -> str:
    """`encoding`: a text encoding that writes newlines, commas and quotes as ASCII does
    (UTF-8, cp1252, latin-1, ...), since the export is read line by line."""
    if not isinstance(value, str) or not value:
        problems.append('\'encoding\' must name a text encoding, e.g. "cp1252" or "latin-1"')
        return "utf-8"
    try:
        name = codecs.lookup(value).name
    except LookupError:
        problems.append(
            f"'encoding' {value!r} is not a text encoding Python knows (e.g. \"utf-8\", "
            '"cp1252", "latin-1")'
        )
        return "utf-8"
    if name == "utf-8-sig":  # UTF-8 with a byte-order mark: UTF-8 reads it (the mark skipped)
        return "utf-8"
    try:
        ascii_compatible = '\n\r,;\t|"'.encode(name) == b'\n\r,;\t|"'
    except (UnicodeError, LookupError):
        ascii_compatible = False
    if not ascii_compatible:
        problems.append(
            f"'encoding' {value!r} is not supported: blindmatch reads exports whose "
            "encoding writes plain ASCII as ASCII (UTF-8, cp1252, latin-1, ...); save the "
            "export as UTF-8"
        )
        return "utf-8"
    return name


def _schema_hint(path: Path) -> str:
    """A linkage schema (JSON with `version` and `features`) given where the mapping goes,
    as when --mapping and --schema are swapped: say so, rather than only that it is not
    TOML."""
    import json

    try:
        data = json.loads(path.read_bytes().decode("utf-8-sig"))
    except (ValueError, OSError):
        return ""
    if not isinstance(data, dict) or ("features" not in data and "version" not in data):
        return ""
    return (
        "; it looks like the linkage schema (JSON), not a mapping: give it as --schema, and "
        "this member's mapping of its columns (TOML, docs/mapping.md) as --mapping"
    )


def load_mapping(path: str | Path, schema: LinkageSchema) -> Mapping:
    """Read MAP.toml and check it against the schema; all problems at once."""
    path = Path(path)
    try:
        # utf-8-sig: Windows Notepad starts a UTF-8 file with a byte-order mark.
        data = tomllib.loads(path.read_bytes().decode("utf-8-sig"))
    except FileNotFoundError:
        raise InputError(f"{path}: mapping file not found") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder, not a mapping file (MAP.toml)") from None
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{path}: not UTF-8 text (byte {exc.start + 1}); save the mapping as UTF-8 "
            "(column names with accents, say, must be written in UTF-8 whatever the export's "
            "encoding)"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: not a valid TOML file ({exc})" + _schema_hint(path)) from None

    problems: list[str] = []
    unknown = sorted(set(data) - set(TOP_KEYS))
    if unknown:
        problems.append(f"unknown top-level {word(len(unknown), 'key')} {', '.join(unknown)}")
    id_column = data.get("id")
    if not isinstance(id_column, str) or not id_column:
        problems.append("'id' must name the local record id column, e.g. id = \"URN\"")
        id_column = ""
    id_column = column_name(id_column)
    delimiter = data.get("delimiter", ",")
    if not isinstance(delimiter, str) or len(delimiter) != 1:
        named = {"tab": "\\t", "comma": ",", "semicolon": ";", "pipe": "|"}
        said = named.get(str(delimiter).strip().casefold())
        problems.append(
            "'delimiter' must be a single character"
            + (f' (write delimiter = "{said}")' if said else ', e.g. ";" or "\\t" for a tab')
        )
        delimiter = ","
    encoding = _encoding(data["encoding"], problems) if "encoding" in data else "utf-8"
    raw_fields = data.get("fields")
    if not isinstance(raw_fields, dict) or not raw_fields:
        problems.append("a [fields] table mapping schema fields to columns is required")
        raw_fields = {}

    hashed = schema.hashed_fields()
    date_fields = {rule.name for rule in schema.rules if rule.kind == "date"}
    text_fields = {rule.name for rule in schema.rules if rule.kind == "text"}
    fields: dict[str, ColumnMap] = {}
    derived = set(hashed) - set(schema.mapped_fields())
    for field, value in raw_fields.items():
        if field in derived:
            problems.append(
                f"fields.{field}: the schema derives it from other fields; do not map it"
            )
            continue
        if field not in hashed:
            what = (
                f"the schema {schema.path.name} ignores it (not hashed: nothing of it is "
                "encoded); remove it from the mapping"
                if field in schema.field_names
                else f"not a field of the schema {schema.path.name}"
            )
            problems.append(
                f"fields.{field}: {what} "
                f"(the fields to map are: {', '.join(schema.mapped_fields())})"
            )
            continue
        cmap = _column_map(field, value, problems, field in date_fields)
        if cmap is None:
            continue
        if cmap.date_format and field not in date_fields:
            problems.append(f"fields.{field}: date_format given, but {field} is not a date field")
        if cmap.split and field not in text_fields:
            problems.append(f"fields.{field}: split given, but {field} is not a text field")
        fields[field] = _check_codes(field, cmap, schema, problems)

    if problems:
        raise InputError(f"{path}: " + "; ".join(problems))
    return Mapping(
        path=path, id_column=id_column, fields=fields, delimiter=delimiter, encoding=encoding
    )
