"""`blindmatch schema check`: validate a linkage schema and warn about weak designs.

The estimates are for typical UK person data: how many tokens a value of each
field usually yields, hence how many hash insertions it makes and how full the
filter gets. A filter that is nearly full makes different values look alike; a
nearly empty one gives Dice too few bits to tell values apart; a field that
takes most of a record-level filter drowns the others.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from clkhash import comparators, field_formats

from blindmatch.client.encoding.harden import hardening_from_raw
from blindmatch.client.encoding.schema import LinkageSchema, load_schema

# Typical characters per value, by the words in a field's name (else TYPICAL_TEXT).
TYPICAL_LENGTHS = {
    "number": 3,
    "postcode": 6,
    "given": 6,
    "first": 6,
    "forename": 6,
    "surname": 6,
    "last": 6,
    "name": 6,
    "address": 25,
    "street": 15,
    "suburb": 9,
    "town": 9,
    "city": 9,
}
TYPICAL_TEXT = 8
TOO_FULL = 0.6  # expected share of bits set above which filters saturate
TOO_EMPTY = 0.05  # ... below which Dice has too few bits to work with
DOMINANT_SHARE = 0.5  # of a record-level filter's insertions, for one field
SMALL_L = 512  # record-level filters shorter than this collide too often


@dataclass(frozen=True)
class FieldEstimate:
    name: str
    comparison: str
    tokens: float  # typical tokens per value
    insertions: float  # typical hash insertions per value
    bits: int  # the filter (record-level) or segment (field-level) it is hashed into
    fill: float  # expected share of `bits` set by this field alone


@dataclass
class SchemaCheck:
    schema: LinkageSchema
    fields: list[FieldEstimate] = field(default_factory=list)
    record_fill: float = 0.0  # record-level: expected share of the CLK set
    warnings: list[str] = field(default_factory=list)

    def render(self) -> str:
        s = self.schema
        kind = "field-level" if s.field_level else "record-level"
        if s.fallback:
            kind += f" with a fallback CLK without {', '.join(s.fallback)}"
        lines = [
            f"{s.path}: valid clkhash v3 schema, {kind}, {s.clk_bits} bits, "
            f"{len(self.fields)} hashed fields",
            f"  {'field':<16} {'comparison':<16} {'tokens':>6} {'insertions':>10} "
            f"{'bits':>6} {'fill':>6}",
        ]
        for f in self.fields:
            lines.append(
                f"  {f.name:<16} {f.comparison:<16} {f.tokens:>6.1f} {f.insertions:>10.0f} "
                f"{f.bits:>6} {f.fill:>6.0%}"
            )
        if not s.field_level:
            lines.append(f"  expected share of bits set per CLK: {self.record_fill:.0%}")
        if s.rule is not None:
            gap, offset, reach = s.rule
            lines.append(
                f"  rule over both CLKs: where both records have {'/'.join(s.fallback)}, "
                f"D1 + {gap:g} * (D1 - D2) - {offset:g} >= threshold, D1 >= "
                f"max((threshold + {offset:g}) / {1 + gap:g}, threshold - {reach:g}) "
                "(docs/schema.md)"
            )
        if s.twoserver is not None:
            bits, bands = s.twoserver
            lines.append(
                f"  two-server keyed blocking: {bands:,} bands of {bits} bits a CLK "
                f"({8 * bands:,} bytes of band keys a CLK, docs/privacy-design.md)"
            )
        if "hardening" in (s.raw.get("blindmatch") or {}):
            lines.append(
                f"  hardening: {hardening_from_raw(s.raw, str(s.path)).describe()} "
                "(as the encode report says it; docs/privacy.md)"
            )
        lines.extend(f"  warning: {w}" for w in self.warnings)
        if not self.warnings:
            lines.append("  no warnings")
        return "\n".join(lines)


def _typical_length(spec: field_formats.FieldSpec) -> float:
    if isinstance(spec, field_formats.DateSpec):
        return len(date(1987, 11, 23).strftime(spec.format))
    if isinstance(spec, field_formats.EnumSpec):
        return max((len(v) for v in spec.values), default=1)
    if isinstance(spec, field_formats.IntegerSpec):
        return 4
    name = spec.identifier.lower()
    lengths = [n for word, n in TYPICAL_LENGTHS.items() if word in name]
    length = float(lengths[0]) if lengths else float(TYPICAL_TEXT)
    max_length = getattr(spec, "max_length", None)
    return min(length, max_length) if max_length else length


def _tokens(spec: field_formats.FieldSpec) -> tuple[str, float]:
    props = spec.hashing_properties
    assert props is not None
    comparator = props.comparator
    length = _typical_length(spec)
    if isinstance(comparator, comparators.ExactComparison):
        return "exact", 1.0
    if isinstance(comparator, comparators.NgramComparison):
        n = comparator.n
        positional = comparator.positional
        tokens = length if positional else length + n - 1  # non-positional pads both ends
        return f"{n}-gram{' pos.' if positional else ''}", max(tokens, 1.0)
    return type(comparator).__name__.replace("Comparison", "").lower(), 3.0


def _insertions(spec: field_formats.FieldSpec, tokens: float) -> float:
    props = spec.hashing_properties
    assert props is not None
    per_token = props.strategy.bits_per_token(max(round(tokens), 1))
    return float(sum(per_token))


# A fallback CLK's left-out fields must carry at least this share of a record's insertions
# for the matcher to tell, from popcounts, which records lack them (matcher/fallback.py).
FALLBACK_MIN_SHARE = 0.25


# BLIP below this blurs the fallback CLK's popcount test (measured: see `check`).
FALLBACK_MIN_EPSILON = 3.0


def fallback_blip_warning(schema: LinkageSchema) -> str | None:
    """The warning for BLIP under FALLBACK_MIN_EPSILON beside a fallback CLK, which `schema
    check` and `encode`'s report both give; None where the schema has no such pair."""
    blip = hardening_from_raw(schema.raw, str(schema.path)).blip_epsilon
    if not schema.fallback or blip is None or blip >= FALLBACK_MIN_EPSILON:
        return None
    # BLIP pulls both CLKs' popcounts towards half: at epsilon 2, 9 of 700 records of a
    # benchmarks/messy.py export were misread as lacking dob or not, at 1, 340 (none at 3).
    return (
        f"BLIP epsilon {blip:g} with a fallback CLK: flipping {1 / (1 + math.exp(blip)):.0%} "
        "of the bits blurs the popcounts by which the matcher tells records lacking "
        f"{'/'.join(schema.fallback)}, so some are scored by the wrong CLK; use epsilon "
        f"{FALLBACK_MIN_EPSILON:g} or more"
    )


def check(schema: LinkageSchema) -> SchemaCheck:
    """Estimates and warnings for a schema that already loaded (so is valid)."""
    result = SchemaCheck(schema)
    hashed = [s for s in schema.clk_schema.fields if s.hashing_properties is not None]
    segments = list(schema.field_bits) or [schema.clk_bits] * len(hashed)
    for spec, bits in zip(hashed, segments, strict=True):
        comparison, tokens = _tokens(spec)
        insertions = _insertions(spec, tokens)
        fill = 1 - math.exp(-insertions / bits)
        result.fields.append(
            FieldEstimate(spec.identifier, comparison, tokens, insertions, bits, fill)
        )
    warn = result.warnings.append
    if not result.fields:
        warn("no field is hashed: every record encodes to an empty filter")
        return result
    total = sum(f.insertions for f in result.fields)
    if schema.field_level:
        for f in result.fields:
            if f.fill > TOO_FULL:
                warn(
                    f"{f.name}: about {f.fill:.0%} of its {f.bits}-bit segment is set; "
                    "different values will look alike (fewer bitsPerFeature or more bits)"
                )
            elif f.fill < TOO_EMPTY:
                warn(
                    f"{f.name}: only about {f.fill:.0%} of its {f.bits}-bit segment is set; "
                    "similarity will rest on a handful of bits (more bitsPerFeature)"
                )
        return result
    l_bits = schema.clk_bits
    result.record_fill = 1 - math.exp(-total / l_bits)
    if result.record_fill > TOO_FULL:
        warn(
            f"about {result.record_fill:.0%} of each {l_bits}-bit CLK will be set: too many "
            "bits, so unrelated records look similar (lower the bit budgets or raise l)"
        )
    elif result.record_fill < TOO_EMPTY * 2:
        warn(
            f"only about {result.record_fill:.0%} of each {l_bits}-bit CLK will be set: too "
            "few bits for Dice to separate matches from non-matches (raise the bit budgets)"
        )
    if l_bits < SMALL_L:
        warn(f"l is {l_bits}: filters this small collide often; use 1024 or more")
    for f in result.fields:
        share = f.insertions / total
        if share > DOMINANT_SHARE and len(result.fields) > 1:
            warn(
                f"{f.name} makes {share:.0%} of all insertions: it dominates the score, so a "
                "typo or a missing value there outweighs agreement everywhere else"
            )
        if f.name in schema.fallback and share < FALLBACK_MIN_SHARE:
            warn(
                f"{f.name} makes only {share:.0%} of all insertions: the matcher tells records "
                "lacking it by how much fuller the first CLK is than the fallback CLK, which "
                f"needs the left-out fields to carry at least {FALLBACK_MIN_SHARE:.0%}"
            )
        if f.comparison == "exact" and share > 0.15:
            warn(
                f"{f.name} is compared exactly but takes {share:.0%} of the bit budget; "
                "a field with few values (sex, say) carries little identity"
            )
    blurred = fallback_blip_warning(schema)
    if blurred:
        warn(blurred)
    for t in schema.frequency:
        tiers = [
            f"rare {t.rare_bits}" if t.rare_bits else "",
            f"common {t.common_bits}" if t.common_bits else "",
        ]
        warn(
            f"{t.field}: frequency tiers ({', '.join(x for x in tiers if x)} insertions "
            f"instead of {t.base_bits}): a record's popcount tells the linkage service "
            f"whether its {t.field} is rare or common in the member's export (docs/schema.md)"
        )
    return result


def check_schema(path: str | Path) -> SchemaCheck:
    """Load (raising InputError when invalid) and check a schema file."""
    return check(load_schema(path))
