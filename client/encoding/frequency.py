"""Frequency tiers: more hash insertions for a rare value, fewer for a common one (opt-in).

A plaintext linker weighs agreement on a rare surname more than agreement on `Smith`
(term-frequency adjustment); one record-level Dice cannot, because every value of a field
makes the same number of insertions. With `blindmatch.frequency` on a text feature,
each member counts the feature's normalised values **in its own export** (nothing is
shared) and hashes a value with the tier's `bitsPerFeature` instead of the feature's:

    "blindmatch": {"frequency": {
        "rare":   {"share": 0.001, "bitsPerFeature": 220},
        "common": {"share": 0.005, "bitsPerFeature": 110}
    }}

Of the export's `n` present values of the field, a value is *rare* when it occurs at
most max(1, rare.share x n) times and *common* when it occurs at least
max(2, common.share x n) times; the others keep the feature's own `bitsPerFeature`.
Either tier may be left out. Because clkhash's BLAKE2 hashing takes a token's first k
indices from one digest stream, a rare value's bits are a superset of the same value's
bits at the middle tier: two members that put one value in different tiers still share
the smaller tier's bits.

What it costs (docs/schema.md, docs/evaluation.md): the tier changes the record's
popcount, so the matcher can estimate from popcounts alone which records carry a rare
or a common name. An export with fewer than `MIN_VALUES` present values of the field has
no frequencies to count: every value gets the middle tier. `blindmatch encode` warns of it
(`untiered_warning`, in the encode report and on stderr) and encodes; a real-time query
that small (one person, always) is refused rather than scored unlike the members'
encodings (encoding/person.py `refuse_untiered`).
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clkhash import field_formats
from clkhash.schema import Schema

from blindmatch.client.errors import InputError
from blindmatch.client.words import counted

# Below this many present values of a field, its tiers are not used (middle tier for all).
MIN_VALUES = 100
TIERS = ("rare", "common")


@dataclass(frozen=True)
class FrequencyTiers:
    """One feature's tiers: the share cuts and their insertions (None: tier not used)."""

    field: str
    index: int  # the feature's position in the schema
    base_bits: int  # the feature's own bitsPerFeature (the middle tier)
    rare_share: float | None = None
    rare_bits: int | None = None
    common_share: float | None = None
    common_bits: int | None = None

    def bits_for(self, counts: Counter[str], total: int) -> dict[str, int]:
        """Each value's insertions, given the export's counts of the field's values."""
        if total < MIN_VALUES:
            return {}
        out = {}
        rare_at = max(1.0, (self.rare_share or 0.0) * total)
        common_at = max(2.0, (self.common_share or 0.0) * total)
        for value, count in counts.items():
            if self.rare_bits is not None and count <= rare_at:
                out[value] = self.rare_bits
            elif self.common_bits is not None and count >= common_at:
                out[value] = self.common_bits
        return out


def parse_frequency(
    raw: dict[str, Any],
    parsed: Schema,
    kinds: Sequence[str],
    field_level: bool,
    path: Path,
) -> tuple[FrequencyTiers, ...]:
    """Every feature's `blindmatch.frequency`, validated; () when none has it."""
    out = []
    problems = []
    for index, (spec, feature, kind) in enumerate(
        zip(parsed.fields, raw["features"], kinds, strict=True)
    ):
        ext = feature.get("blindmatch")
        if not isinstance(ext, dict) or "frequency" not in ext:
            continue
        name = spec.identifier
        where = f"feature {name!r}: blindmatch.frequency"
        freq = ext["frequency"]
        if field_level:
            problems.append(f"{where} is for record-level schemas only")
            continue
        if kind != "text":
            problems.append(f"{where} is for text features only")
            continue
        strategy = spec.hashing_properties.strategy if spec.hashing_properties else None
        if not isinstance(strategy, field_formats.BitsPerFeatureStrategy):
            problems.append(f"{where} needs the feature's strategy to be bitsPerFeature")
            continue
        if not isinstance(freq, dict) or not freq or set(freq) - set(TIERS):
            problems.append(
                f'{where} must be {{"rare": {{"share": S, "bitsPerFeature": B}}, '
                '"common": {...}} (either or both)'
            )
            continue
        values: dict[str, tuple[float, int]] = {}
        for tier in TIERS:
            if tier not in freq:
                continue
            t = freq[tier]
            share = t.get("share") if isinstance(t, dict) else None
            bits = t.get("bitsPerFeature") if isinstance(t, dict) else None
            if (
                not isinstance(share, int | float)
                or isinstance(share, bool)
                or not 0 < share < 1
                or not isinstance(bits, int)
                or isinstance(bits, bool)
                or bits < 1
                or set(t) - {"share", "bitsPerFeature"}
            ):
                problems.append(
                    f'{where}.{tier} must be {{"share": a number between 0 and 1, '
                    '"bitsPerFeature": a positive whole number}'
                )
                continue
            values[tier] = (float(share), bits)
        if len(values) != len(freq):
            continue
        if "rare" in values and "common" in values and values["rare"][0] >= values["common"][0]:
            problems.append(f"{where}: rare.share must be under common.share")
            continue
        rare, common = values.get("rare"), values.get("common")
        out.append(
            FrequencyTiers(
                field=name,
                index=index,
                base_bits=int(strategy._bits_per_feature),
                rare_share=rare[0] if rare else None,
                rare_bits=rare[1] if rare else None,
                common_share=common[0] if common else None,
                common_bits=common[1] if common else None,
            )
        )
    if problems:
        raise InputError(f"{path}: " + "; ".join(problems))
    return tuple(out)


def untiered(
    tiers: Sequence[FrequencyTiers], present: Mapping[str, int]
) -> list[tuple[FrequencyTiers, int]]:
    """The tiered fields with fewer than `MIN_VALUES` present values (`present`: field ->
    count) and their counts: every value of each is encoded at the middle tier."""
    return [(t, present.get(t.field, 0)) for t in tiers if present.get(t.field, 0) < MIN_VALUES]


def untiered_warning(tier: FrequencyTiers, count: int) -> str:
    """What `blindmatch encode` warns (report and stderr) for a field `untiered` found."""
    return (
        f"{tier.field}: only {counted(count, 'present value')}, fewer than the {MIN_VALUES} the "
        "schema's frequency tiers (blindmatch.frequency) need: all were encoded at the "
        f"middle tier ({tier.base_bits} bits per feature), so a value rare in a partner's "
        "larger export has fewer bits here than there and its matches score lower; encoded "
        "anyway. For an export this small, agree a schema without blindmatch.frequency "
        "(docs/schema.md)"
    )


def row_bits(
    rows: Sequence[Sequence[str]],
    tiers: Sequence[FrequencyTiers],
    sentinels: Sequence[str],
    reference: Sequence[Sequence[str]] | None = None,
) -> list[tuple[int, ...]]:
    """Per row, the insertions of each tiered feature (in `tiers` order), from the counts of
    the feature's present values in `reference` (the member's whole export; `rows` when
    not given: a sample of an export is tiered by the export's counts)."""
    counted = rows if reference is None else reference
    columns = []
    for t, sentinel in zip(tiers, sentinels, strict=True):
        counts = Counter(row[t.index] for row in counted if row[t.index] != sentinel)
        bits = t.bits_for(counts, sum(counts.values()))
        columns.append([bits.get(row[t.index], t.base_bits) for row in rows])
    return list(zip(*columns, strict=True)) if columns else [() for _ in rows]


def with_bits(schema: Schema, tiers: Sequence[FrequencyTiers], bits: Sequence[int]) -> Schema:
    """A copy of an encoding schema with the tiered features' bitsPerFeature set to `bits`."""
    out = copy.deepcopy(schema)
    for t, b in zip(tiers, bits, strict=True):
        props = out.fields[t.index].hashing_properties
        assert props is not None  # parse_frequency only accepts hashed features
        props.strategy = field_formats.BitsPerFeatureStrategy(b)
    return out


__all__ = [
    "MIN_VALUES",
    "FrequencyTiers",
    "parse_frequency",
    "row_bits",
    "untiered",
    "untiered_warning",
    "with_bits",
]
