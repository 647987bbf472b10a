"""Checks of a clkhash v3 schema that clkhash itself lets through, for `load_schema`.

clkhash validates a schema's own parts but ignores keys it does not know, so a misspelt
blindmatch key (`"fallbak"`) would silently give another schema; it reads `clkConfig.xorFolds`
without folding; it accepts a text `pattern` that blindmatch's lower-cased normalised values
can never match; and its validation errors do not say which feature is wrong. Every problem
here names the JSON path and what to do (docs/schema.md).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from clkhash import schema as clk_schema

from blindmatch.client.encoding.harden import hardening_from_raw
from blindmatch.client.encoding.normalise import FieldRule
from blindmatch.client.errors import InputError

# blindmatch's keys (docs/schema.md): at the schema's top level, and in a feature.
TOP_KEYS = ("encoding", "fallback", "rule", "twoserver", "hardening")
FEATURE_KEYS = ("normalise", "from", "bits", "frequency")


def _where(path_parts: list[Any], raw: dict[str, Any]) -> str:
    """`features[3] ('sex').format` for a JSON path; the identifier when there is one."""
    out = ""
    for part in path_parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    if len(path_parts) >= 2 and path_parts[0] == "features" and isinstance(path_parts[1], int):
        features = raw.get("features")
        feature = features[path_parts[1]] if isinstance(features, list) else None
        name = feature.get("identifier") if isinstance(feature, dict) else None
        if isinstance(name, str):
            head = f"features[{path_parts[1]}]"
            out = f"{head} ({name!r}){out[len(head) :]}"
    return out or "the top level"


def clkhash_problem(exc: clk_schema.SchemaError, raw: dict[str, Any]) -> str:
    """clkhash's SchemaError as one line naming the JSON path (and the feature)."""
    cause = exc.__cause__
    if cause is not None and hasattr(cause, "absolute_path"):
        where = _where(list(cause.absolute_path), raw)
        expected = sorted(
            {
                str(value)
                for sub in (cause.context or [])
                if list(sub.absolute_path)[-1:] == ["type"] and sub.validator in ("enum", "const")
                for value in (
                    sub.validator_value if sub.validator == "enum" else [sub.validator_value]
                )
            }
        )
        found = cause.instance.get("type") if isinstance(cause.instance, dict) else None
        if found is not None and expected and found not in expected:
            return f"{where}: type {found!r} is not one of {', '.join(map(repr, expected))}"
        message = cause.message if len(cause.message) <= 300 else cause.message[:300] + "..."
        return f"{where}: {message}"
    feature_errors = [e for e in getattr(exc, "errors", []) if hasattr(e, "field_spec_index")]
    if feature_errors:
        return "; ".join(
            f"{_where(['features', e.field_spec_index], raw)}: {e}" for e in feature_errors
        )
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return " ".join(lines[:6])


def _unknown(section: Any, allowed: tuple[str, ...], where: str, path: Path) -> None:
    if not isinstance(section, dict):
        raise InputError(f"{path}: {where} must be an object, not {type(section).__name__}")
    unknown = sorted(set(section) - set(allowed))
    if unknown:
        raise InputError(
            f"{path}: {where}: unknown key(s) {', '.join(map(repr, unknown))} (blindmatch's "
            f"keys there: {', '.join(allowed)}; docs/schema.md). A misspelt key would be "
            "ignored and give every member that copies it another schema"
        )


def _ignored(feature: dict[str, Any], where: str, field_level: bool, path: Path) -> None:
    """A feature key blindmatch would read nowhere: `bits` in a record-level schema (the
    budget is clkhash's `hashing.strategy`), `normalise` on a feature that is not text."""
    ext = feature["blindmatch"]
    if "bits" in ext and not field_level:
        raise InputError(
            f"{path}: {where}.blindmatch.bits is for field-level schemas only (a segment's "
            "length); in a record-level schema a field's budget is its "
            "hashing.strategy.bitsPerFeature: remove blindmatch.bits"
        )
    kind = (feature.get("format") or {}).get("type")
    if ext.get("normalise") and kind != "string":
        raise InputError(
            f"{path}: {where}.blindmatch.normalise is for text features (format.type "
            f'"string"), and this one is {kind!r}: its options would be ignored; remove it'
        )


_UPPER = re.compile(r"(?<!\\)[A-Z]")  # an upper-case letter that is not an escape (\D, \S)


def check_blindmatch_keys(raw: dict[str, Any], path: Path) -> None:
    """Refuse what clkhash accepts but blindmatch would ignore or never match."""
    if "blindmatch" in raw:
        _unknown(raw["blindmatch"], TOP_KEYS, "blindmatch", path)
    field_level = (raw.get("blindmatch") or {}).get("encoding") == "field-level"
    folds = raw["clkConfig"].get("xorFolds", 0)
    if folds:
        raise InputError(
            f"{path}: clkConfig.xorFolds is {folds!r}: clkhash accepts it but does not fold "
            "(the CLKs would come out unfolded); remove it, and for a record-level schema fold "
            "with blindmatch.hardening.xorFolds (docs/privacy.md)"
        )
    for index, feature in enumerate(raw["features"]):
        where = _where(["features", index], raw)
        if "blindmatch" in feature:
            _unknown(feature["blindmatch"], FEATURE_KEYS, f"{where}.blindmatch", path)
            _ignored(feature, where, field_level, path)
        fmt = feature.get("format") or {}
        pattern = fmt.get("pattern") if fmt.get("type") == "string" else None
        if isinstance(pattern, str) and _UPPER.search(re.sub(r"\\.", "", pattern)):
            raise InputError(
                f"{path}: {where}.format.pattern {pattern!r} has upper-case letters, but "
                "blindmatch matches it against the normalised value, which is lower case "
                "(letters and digits only; docs/mapping.md, Text): no value could match. "
                "Write the pattern in lower case"
            )


def check_hardening(
    raw: dict[str, Any],
    rules: tuple[FieldRule, ...],
    fallback: tuple[str, ...],
    field_level: bool,
    path: Path,
) -> None:
    """`blindmatch.hardening` read and checked against the schema's fields at load, so
    `schema check` refuses what `encode` would (not after reading the export)."""
    hardening = hardening_from_raw(raw, str(path))
    if field_level and not hardening.is_none:
        raise InputError(
            f"{path}: blindmatch.hardening is not supported with field-level schemas; "
            'remove it or set "hardening": "none"'
        )
    blurred = [
        what
        for what, on in (("balance", hardening.balance), ("xorFolds", hardening.xor_folds))
        if on
    ]
    if fallback and blurred:
        # The matcher tells a record lacking the fallback's fields by its two CLKs' popcount
        # ratio (matcher/core/fallback.py LACKING_RATIO): balancing makes every ratio 1, so
        # every record reads as lacking them (its date never counts); one XOR fold misread
        # 103 of 700 south-police records of benchmarks/messy.py (--population 2000 --seed 7).
        raise InputError(
            f"{path}: blindmatch.hardening.{' and '.join(blurred)} with blindmatch.fallback: "
            "the matcher tells which records lack the fallback's left-out fields by how much "
            "fuller the first CLK is than the fallback CLK, and "
            f"{'balancing sets exactly half of each' if hardening.balance else 'folding blurs'}"
            " that, so records would be scored by the wrong CLK. Drop one of them "
            "(schemas/person-uk-no-fallback.json has no fallback CLK)"
        )
    salt = hardening.salt_field
    if salt is None:
        return
    hashed = [r.name for r in rules if r.kind != "ignore"]
    if salt not in hashed:
        raise InputError(
            f"{path}: blindmatch.hardening.salt.field is {salt!r}, not a hashed field of this "
            f"schema ({', '.join(hashed)})"
        )
    rule = next(r for r in rules if r.name == salt)
    if hardening.salt_part == "year" and not (
        rule.kind == "date" and (rule.date_format or "").startswith("%Y")
    ):
        # harden.salt_value takes a value's first four characters when they are digits: on
        # anything else every record got the empty salt, i.e. none, silently.
        what = (
            f"a date written {rule.date_format!r} (its year is not its first four characters)"
            if rule.kind == "date"
            else f"a {rule.kind} field, with no year"
        )
        raise InputError(
            f'{path}: blindmatch.hardening.salt.part is "year" (the default), but {salt} is '
            f"{what}: every record would get the same empty salt, i.e. none. Salt by a date "
            'field whose format starts with %Y, or say "part": "value"'
        )
    if salt in fallback:
        raise InputError(
            f"{path}: blindmatch.hardening salts with {salt}, which the fallback CLK "
            "(blindmatch.fallback) leaves out: every fallback CLK would get the same empty "
            "salt, i.e. none. Salt with a field the fallback keeps, or drop blindmatch.fallback"
        )
