"""Loading the shared clkhash v3 linkage schema, and what normalisation needs from it."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clkhash import field_formats
from clkhash import schema as clk_schema

from blindmatch.client.encoding.frequency import FrequencyTiers, parse_frequency
from blindmatch.client.encoding.normalise import DERIVED_OPTIONS, OPTIONS, FieldRule
from blindmatch.client.encoding.schemakeys import (
    check_blindmatch_keys,
    check_hardening,
    clkhash_problem,
)
from blindmatch.client.errors import InputError


@dataclass(frozen=True)
class LinkageSchema:
    """A validated clkhash v3 schema, its raw JSON, and one rule per field."""

    path: Path
    raw: dict[str, Any]
    clk_schema: clk_schema.Schema
    rules: tuple[FieldRule, ...]
    field_bits: tuple[int, ...] = ()  # one segment per hashed field; () for record-level
    # Record-level with a fallback CLK: the fields the second CLK leaves out (encoding.encode).
    fallback: tuple[str, ...] = ()
    # The two-server mode's keyed blocking, (bits a band, bands a CLK), when the schema sets it.
    twoserver: tuple[int, int] | None = None
    # Record-level features hashed with more or fewer insertions by how often their value
    # occurs in the member's own export (encoding.frequency); () when none.
    frequency: tuple[FrequencyTiers, ...] = ()
    # With a fallback CLK: the rule over a pair's two CLKs, (gap, offset, reach), when the
    # schema sets `blindmatch.rule` (matcher/core/fallback.py `Rule`); None: one CLK a pair.
    rule: tuple[float, float, float] | None = None

    @property
    def field_level(self) -> bool:
        return bool(self.field_bits)

    @property
    def clk_bits(self) -> int:
        return int(self.clk_schema.l)

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(rule.name for rule in self.rules)

    def hashed_fields(self) -> tuple[str, ...]:
        return tuple(rule.name for rule in self.rules if rule.kind != "ignore")

    def mapped_fields(self) -> tuple[str, ...]:
        """The hashed fields a member's mapping fills (derived fields are computed)."""
        return tuple(r.name for r in self.rules if r.kind != "ignore" and not r.sources)

    def for_encoding(self) -> clk_schema.Schema:
        """A copy in which a missing value of any field contributes no bits.

        Fields that declare their own `missingValue` keep it; the others get an
        empty sentinel, so a value the encoder found missing or invalid is never
        hashed as if it were a real value.
        """
        schema = copy.deepcopy(self.clk_schema)
        for spec in schema.fields:
            props = spec.hashing_properties
            if props is not None and props.missing_value is None:
                props.missing_value = field_formats.MissingValueSpec(sentinel="", replace_with="")
        return schema

    def missing_sentinel(self, index: int) -> str:
        props = self.clk_schema.fields[index].hashing_properties
        if props is not None and props.missing_value is not None:
            return str(props.missing_value.sentinel)
        return ""


def _options(raw_feature: dict[str, Any], path: Path) -> tuple[Any, ...]:
    """The feature's blindmatch normalisation options: {"blindmatch": {"normalise": [...]}}."""
    ext = raw_feature.get("blindmatch", {})
    options = ext.get("normalise", []) if isinstance(ext, dict) else None
    if not isinstance(options, list) or any(o not in OPTIONS for o in options):
        raise InputError(
            f"{path}: feature {raw_feature.get('identifier')!r}: blindmatch.normalise must be "
            f"a list of {', '.join(OPTIONS)}"
        )
    return tuple(options)


def _sources(raw_feature: dict[str, Any], options: tuple[Any, ...], path: Path) -> tuple[str, ...]:
    """`blindmatch.from`: the fields a derived feature's value is made from."""
    ext = raw_feature.get("blindmatch", {})
    sources = ext.get("from") if isinstance(ext, dict) else None
    name = raw_feature.get("identifier")
    if sources is None:
        if any(o in DERIVED_OPTIONS for o in options):
            raise InputError(
                f"{path}: feature {name!r}: blindmatch.normalise {', '.join(DERIVED_OPTIONS)} "
                'are for derived features only (with "from": [FIELD, ...])'
            )
        return ()
    if not isinstance(sources, list) or not sources or not all(isinstance(s, str) for s in sources):
        raise InputError(f'{path}: feature {name!r}: blindmatch.from must be ["FIELD", ...]')
    return tuple(sources)


def _rule_for(
    spec: field_formats.FieldSpec, options: tuple[Any, ...] = (), sources: tuple[str, ...] = ()
) -> FieldRule:
    name = spec.identifier
    if isinstance(spec, field_formats.Ignore) or spec.hashing_properties is None:
        return FieldRule(name, "ignore")
    if isinstance(spec, field_formats.DateSpec):
        return FieldRule(name, "date", date_format=spec.format)
    if isinstance(spec, field_formats.EnumSpec):
        return FieldRule(name, "enum", enum_values=tuple(sorted(spec.values)))
    if isinstance(spec, field_formats.IntegerSpec):
        return FieldRule(name, "integer")
    upper = getattr(spec, "case", "mixed") == "upper"
    return FieldRule(name, "text", upper=upper, options=options, sources=sources)


def _mapping_hint(text: str) -> str:
    """What to give instead of a file that is not JSON; where it is a member's mapping (TOML
    with `id` or `[fields]`), as when --schema and --mapping are swapped, say so."""
    import tomllib

    shared = "the schema is the shared clkhash v3 JSON file (such as schemas/person-uk.json)"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return f"; {shared}"
    if "fields" not in data and "id" not in data:
        return f"; {shared}"
    return (
        f"; it looks like a member's mapping (TOML), not a linkage schema: {shared}, and a "
        "mapping goes to --mapping"
    )


def load_schema(path: str | Path) -> LinkageSchema:
    """Read and validate a clkhash v3 schema; every problem names the file."""
    path = Path(path)
    try:
        # utf-8-sig: a byte-order mark (Windows Notepad writes one) is skipped, as a mapping's is
        text = path.read_bytes().decode("utf-8-sig")
        if not text.strip():
            raise InputError(f"{path}: the schema file is empty (expected clkhash v3 JSON)")
        raw = json.loads(text)
    except FileNotFoundError:
        raise InputError(f"{path}: schema file not found") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder, not a schema file (JSON)") from None
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}): save it as UTF-8"
        ) from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not a JSON file ({exc})" + _mapping_hint(text)) from None
    if not isinstance(raw, dict) or raw.get("version") != 3:
        found = (
            f"version is {raw.get('version')!r}"
            if isinstance(raw, dict)
            else f"the file holds a JSON {type(raw).__name__}, not an object"
        )
        how = (
            "convert it with clkhash (every member must then use the converted file): "
            "python -c 'import json, sys; from clkhash.schema import convert_to_latest_version "
            f"as c; json.dump(c(json.load(open(sys.argv[1]))), sys.stdout, indent=2)' {path} "
            "> v3.json"
            if isinstance(raw, dict) and raw.get("version") in (1, 2)
            else "start from schemas/ in blindmatch"
        )
        raise InputError(
            f"{path}: not a clkhash v3 linkage schema ({found}, expected version 3); {how}"
        )
    try:
        parsed = clk_schema.from_json_dict(copy.deepcopy(raw))
    except clk_schema.SchemaError as exc:
        raise InputError(
            f"{path}: invalid clkhash v3 schema: {clkhash_problem(exc, raw)} "
            "(the shipped schemas/person-uk.json shows each part; docs/schema.md)"
        ) from None
    if parsed.l % 64:
        raise InputError(f"{path}: clkConfig.l is {parsed.l}; blindmatch needs a multiple of 64")
    check_blindmatch_keys(raw, path)
    names = [spec.identifier for spec in parsed.fields]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(f"{path}: feature identifiers repeat: {', '.join(duplicates)}")
    rules = tuple(
        _rule_for(spec, _options(feature, path), _sources(feature, _options(feature, path), path))
        for spec, feature in zip(parsed.fields, raw["features"], strict=True)
    )
    _check_derived(rules, path)
    field_bits = _field_bits(raw, parsed, path)
    fallback = _fallback(raw, rules, bool(field_bits), path)
    twoserver = _twoserver(raw, bool(field_bits), path)
    frequency = parse_frequency(raw, parsed, [r.kind for r in rules], bool(field_bits), path)
    rule = _rule(raw, fallback, path)
    check_hardening(raw, rules, fallback, bool(field_bits), path)
    return LinkageSchema(
        path=path,
        raw=raw,
        clk_schema=parsed,
        rules=rules,
        field_bits=field_bits,
        fallback=fallback,
        twoserver=twoserver,
        frequency=frequency,
        rule=rule,
    )


def _check_derived(rules: tuple[FieldRule, ...], path: Path) -> None:
    """A derived feature is text, made from text fields that are not derived themselves."""
    kinds = {r.name: r for r in rules}
    for rule in rules:
        if not rule.sources:
            continue
        if rule.kind != "text":
            raise InputError(f"{path}: feature {rule.name!r}: a derived feature must be text")
        bad = [s for s in rule.sources if s not in kinds or kinds[s].kind != "text"]
        bad += [s for s in rule.sources if s in kinds and kinds[s].sources]
        if bad:
            raise InputError(
                f"{path}: feature {rule.name!r}: blindmatch.from names {', '.join(bad)}, "
                "not a text field of this schema that is read from the export"
            )


def _fallback(
    raw: dict[str, Any], rules: tuple[FieldRule, ...], field_level: bool, path: Path
) -> tuple[str, ...]:
    """`blindmatch.fallback.without`: the fields a record-level fallback CLK leaves out.

    With it, every record gets two record-level CLKs side by side: the usual one,
    and one of the same length without these fields, hashed under keys of its
    own. The matcher compares the second when either record lacks one of them
    (docs/schema.md, matcher/fallback.py).
    """
    ext = raw.get("blindmatch", {})
    spec = ext.get("fallback") if isinstance(ext, dict) else None
    if spec is None:
        return ()
    without = spec.get("without") if isinstance(spec, dict) and set(spec) == {"without"} else None
    hashed = [rule.name for rule in rules if rule.kind != "ignore"]
    if (
        not isinstance(without, list)
        or not without
        or any(not isinstance(name, str) for name in without)
    ):
        raise InputError(f'{path}: blindmatch.fallback must be {{"without": [FIELD, ...]}}')
    unknown = [name for name in without if name not in hashed]
    if unknown:
        raise InputError(
            f"{path}: blindmatch.fallback.without names {', '.join(map(repr, unknown))}, "
            f"not hashed fields of this schema ({', '.join(hashed)})"
        )
    if len(set(without)) >= len(hashed):
        raise InputError(f"{path}: blindmatch.fallback.without must leave some field in")
    if field_level:
        raise InputError(f"{path}: blindmatch.fallback is for record-level schemas only")
    return tuple(dict.fromkeys(without))


# `blindmatch.rule`: what each number may be (the matcher checks the same, uploads.py).
RULE_RANGES = {"gap": (0.0, 4.0), "offset": (-0.5, 0.5), "reach": (0.0, 0.5)}


def _rule(
    raw: dict[str, Any], fallback: tuple[str, ...], path: Path
) -> tuple[float, float, float] | None:
    """`blindmatch.rule`: `{"gap": G, "offset": O, "reach": R}`, the decision rule over a
    pair's two CLKs. Where both records have the fallback's left-out fields, the matcher
    scores a pair S = D1 + G * (D1 - D2) - O (D1, D2: Dice of the first and of the fallback
    CLKs), compares S with the project's threshold T, and considers first-CLK candidates
    down to max((T + O) / (1 + G), T - R) (matcher/core/fallback.py, docs/schema.md). Every
    member must use the same, so it is part of the schema (and of the fingerprint)."""
    ext = raw.get("blindmatch", {})
    spec = ext.get("rule") if isinstance(ext, dict) else None
    if spec is None:
        return None
    shape = '{"gap": G, "offset": O, "reach": R}'
    if not isinstance(spec, dict) or set(spec) != set(RULE_RANGES):
        raise InputError(f"{path}: blindmatch.rule must be {shape}")
    values = []
    for key, (lo, hi) in RULE_RANGES.items():
        value = spec[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
            raise InputError(
                f"{path}: blindmatch.rule.{key} must be a number from {lo:g} to {hi:g}, "
                f"not {value!r}"
            )
        values.append(float(value))
    if not fallback:
        raise InputError(
            f"{path}: blindmatch.rule scores a pair by both of its CLKs, so it needs "
            'blindmatch.fallback (a second CLK: {"without": [FIELD, ...]})'
        )
    gap, offset, reach = values
    return gap, offset, reach


MAX_BAND_BITS = 64  # a band's bits are one SipHash message (client/encoding/sharing.py)
MAX_BANDS = 65_536


def _twoserver(raw: dict[str, Any], field_level: bool, path: Path) -> tuple[int, int] | None:
    """`blindmatch.twoserver`: `{"bits": R, "bands": B}`, the keyed blocking of the two-server
    mode (client/encoding/sharing.py `shared_upload`, docs/privacy-design.md): B bands of R
    positions of each CLK, drawn from the secret. Every member must use the same, so it is
    part of the schema (and of the fingerprint)."""
    ext = raw.get("blindmatch", {})
    spec = ext.get("twoserver") if isinstance(ext, dict) else None
    if spec is None:
        return None
    shape = '{"bits": R, "bands": B}'
    if not isinstance(spec, dict) or set(spec) != {"bits", "bands"}:
        raise InputError(f"{path}: blindmatch.twoserver must be {shape}")
    bits, bands = spec["bits"], spec["bands"]
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= MAX_BAND_BITS:
        raise InputError(
            f"{path}: blindmatch.twoserver.bits must be a whole number from 1 to "
            f"{MAX_BAND_BITS}, not {bits!r}"
        )
    if isinstance(bands, bool) or not isinstance(bands, int) or not 1 <= bands <= MAX_BANDS:
        raise InputError(
            f"{path}: blindmatch.twoserver.bands must be a whole number from 1 to "
            f"{MAX_BANDS:,}, not {bands!r}"
        )
    if field_level:
        raise InputError(f"{path}: blindmatch.twoserver is for record-level schemas only")
    return bits, bands


def _field_bits(raw: dict[str, Any], parsed: clk_schema.Schema, path: Path) -> tuple[int, ...]:
    """Segment sizes of a field-level schema (see encoding.fieldlevel); () if record-level."""
    ext = raw.get("blindmatch", {})
    encoding = ext.get("encoding", "record-level") if isinstance(ext, dict) else None
    if encoding == "record-level":
        return ()
    if encoding != "field-level":
        raise InputError(f"{path}: blindmatch.encoding must be 'record-level' or 'field-level'")
    problems = []
    bits = []
    for spec, feature in zip(parsed.fields, raw["features"], strict=True):
        if spec.hashing_properties is None:
            continue
        size = (feature.get("blindmatch") or {}).get("bits")
        if not isinstance(size, int) or size < 64 or size & (size - 1):
            problems.append(
                f"feature {spec.identifier!r}: blindmatch.bits must be a power of two >= 64 "
                f"(got {size!r})"
            )
            continue
        bits.append(size)
    if parsed.xor_folds:
        problems.append("field-level encodings do not support xorFolds")
    if not problems and sum(bits) != parsed.l:
        problems.append(
            f"clkConfig.l is {parsed.l}, but the fields' blindmatch.bits add up to {sum(bits)}"
        )
    if problems:
        raise InputError(f"{path}: " + "; ".join(problems))
    return tuple(bits)
