"""`blindmatch privacy-check`: encode a data set, attack the encodings, report.

The check does what a curious matcher could do with one member's upload: it
encodes the plaintext exactly as `blindmatch encode` would (same schema,
normalisation, secret and hardening), then runs every shipped attack on the
encodings alone. The plaintext is used only to score the guesses. Encodings
are attacked as the schema uploads them (`schema`, the default: record-level
CLKs, plus the fallback CLKs when the schema has `blindmatch.fallback`; or, for
a field-level schema, the fields' segments of its CLK, `blindmatch.bits` bits
each), or as a record-level or a field-level design would upload them, or both
(on a field-level schema, `field` is its segments; on a record-level one, one
filter of the schema's length per field).

The attacks are run here; what they found, the verdict and its advice are report.py's.
"""

from __future__ import annotations

import hashlib
import secrets
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from blindmatch.client.encoding.encode import (
    EncodeReport,
    encode_fallback,
    encode_first,
    read_rows,
    read_secret,
)
from blindmatch.client.encoding.fieldlevel import encode_field_level
from blindmatch.client.encoding.harden import (
    Hardening,
    encode_fields,
    hardening_from_raw,
)
from blindmatch.client.encoding.mapping import load_mapping
from blindmatch.client.encoding.schema import LinkageSchema, load_schema
from blindmatch.client.errors import InputError
from blindmatch.client.tools import SCHEMAS
from blindmatch.client.tools.privacy import frequencies, population
from blindmatch.client.tools.privacy.attacks import (
    AttackResult,
    Target,
    cluster_encodings,
    clustering_threshold,
    frequency_alignment,
    pattern_mining,
    unpack,
)
from blindmatch.client.tools.privacy.frequencies import FrequencyList
from blindmatch.client.tools.privacy.graphcheck import (
    GRAPH_RECORDS,
    graph_attacks,
    normalised_export,
    sample,
)
from blindmatch.client.tools.privacy.plot import output_paths, plot, write_outputs
from blindmatch.client.tools.privacy.qgram import qgram_alignment
from blindmatch.client.tools.privacy.report import LIMIT, MIN_RECORDS, CheckReport

Level = Literal["schema", "record", "field", "both"]
ATTACKS = ("frequency", "pattern", "qgram", "graph")
DEFAULT_SCHEMA = SCHEMAS / "person-uk.json"


def _tokenizer(schema: LinkageSchema, index: int) -> Any:
    spec = schema.clk_schema.fields[index]
    comparator = spec.hashing_properties.comparator  # type: ignore[union-attr]
    return lambda value: tuple(comparator.tokenize(value))


def _bits_per_token(schema: LinkageSchema, index: int) -> Any:
    """The schema's hashing strategy: not secret, so the attacker knows it."""
    spec = schema.clk_schema.fields[index]
    return spec.hashing_properties.strategy.bits_per_token  # type: ignore[union-attr]


def _public_list(
    name: str, kind: str, values: Sequence[str], overrides: dict[str, FrequencyList], fmt: str
) -> FrequencyList:
    if name in overrides:
        return overrides[name]
    lowered = name.lower()
    if kind == "date":
        return frequencies.dates_of_birth(fmt)
    if "surname" in lowered or "last" in lowered or "family" in lowered:
        return frequencies.surnames()
    if "given" in lowered or "first" in lowered or "forename" in lowered:
        return frequencies.given_names()
    return frequencies.from_data(name, [v for v in values if v])


def targets_for(
    schema: LinkageSchema,
    rows: Sequence[Sequence[str]],
    overrides: dict[str, FrequencyList],
    field: bool = True,
) -> tuple[list[tuple[int, Target]], list[str]]:
    """The fields worth attacking (text and dates), each with its public list; `field`:
    field-level filters are attacked (what the skipped fields' note speaks of)."""
    targets, skipped = [], []
    for index, rule in enumerate(schema.rules):
        if rule.kind == "ignore":
            continue
        truth = [row[index] for row in rows]
        if rule.kind not in ("text", "date"):
            distinct = len({v for v in truth if v})
            shows = (  # (was the field-level words whatever the schema checked)
                "a field-level filter shows which records share a value"
                if field
                else "hashed into the record-level CLKs with the other fields"
            )
            skipped.append(
                f"{rule.name} ({rule.kind}, {distinct} values: {shows}, but a value this "
                "common identifies no one)"
            )
            continue
        if not any(truth):
            skipped.append(f"{rule.name} (no values)")
            continue
        public = _public_list(rule.name, rule.kind, truth, overrides, rule.date_format)
        candidates = len(public.values) if rule.kind == "date" else 5000
        target = Target(
            rule.name,
            truth,
            public,
            _tokenizer(schema, index),
            candidates,
            _bits_per_token(schema, index),
        )
        targets.append((index, target))
    return targets, skipped


def attack_encodings(
    schema: LinkageSchema,
    rows: Sequence[Sequence[str]],
    secret: bytes,
    hardening: Hardening,
    level: Level = "schema",
    overrides: dict[str, FrequencyList] | None = None,
    attacks: Sequence[str] = ATTACKS,
) -> tuple[list[AttackResult], list[str]]:
    """Encode `rows` (normalised, schema order) and run every attack; plaintext only scores."""
    if level == "schema":
        level = "field" if schema.field_level else "record"
    targets, skipped = targets_for(schema, rows, overrides or {}, field=level != "record")
    enc_schema = schema.for_encoding()
    results: list[AttackResult] = []
    if level in ("record", "both") and targets:
        clks = encode_first(rows, schema, secret, hardening, max_workers=1)
        results.extend(_attack_clks(clks, [t for _, t in targets], hardening, attacks, "record"))
        if schema.fallback:
            # The fallback CLK encodes every field but the left-out ones: attack those.
            kept = [t for _, t in targets if t.field not in schema.fallback]
            second = encode_fallback(
                list(map(list, rows)), schema, secret, hardening, max_workers=1
            )
            results.extend(_attack_clks(second, kept, hardening, attacks, "fallback"))
    if level in ("field", "both") and targets:
        if schema.field_level:
            # What a field-level schema uploads: one CLK of per-field segments (encoding.encode).
            per_field = field_segments(schema, rows, secret, hardening)
        else:
            # What one filter per field of this record-level schema would leak.
            per_field = [
                None if f is None else (unpack(f), 8 * f.shape[1])
                for f in encode_fields(
                    rows, enc_schema, secret, hardening, field_names=schema.field_names
                )
            ]
        for index, target in targets:
            segment = per_field[index]
            assert segment is not None
            results.extend(_attack_filters(*segment, target, hardening, attacks))
    order = {"frequency alignment": 0, "pattern mining": 1, "q-gram alignment": 2}
    encodings = {"field": 0, "record": 1, "fallback": 2, "record+fallback": 3}
    results.sort(key=lambda r: (encodings[r.encoding], order[r.attack], r.field))
    return results, skipped


def field_segments(
    schema: LinkageSchema, rows: Sequence[Sequence[str]], secret: bytes, hardening: Hardening
) -> list[tuple[npt.NDArray[np.bool_], int] | None]:
    """A field-level schema's upload, cut into its fields' filters: (bits, length) per field.

    The CLK is encoded exactly as `blindmatch encode` does (`encode_field_level`):
    hashed features in schema order, each a segment of its `blindmatch.bits`
    bits. Features that are not hashed have no segment (None).
    """
    if not hardening.is_none:
        raise InputError(
            f"{schema.path}: blindmatch.hardening is not supported with field-level schemas yet, "
            "so such a schema uploads nothing hardened to check; attack a record-level schema "
            "with --encoding field to see what hardened field-level filters would leak"
        )
    enc_schema = schema.for_encoding()
    clks = encode_field_level(rows, enc_schema, schema.field_bits, secret)
    bits = np.unpackbits(
        np.frombuffer(clks, dtype=np.uint8).reshape(len(rows), -1), axis=1, count=schema.clk_bits
    ).astype(bool)
    hashed = [i for i, f in enumerate(enc_schema.fields) if f.hashing_properties is not None]
    segments: list[tuple[npt.NDArray[np.bool_], int] | None] = [None] * len(enc_schema.fields)
    offset = 0
    for index, size in zip(hashed, schema.field_bits, strict=True):
        segments[index] = (bits[:, offset : offset + size], size)
        offset += size
    return segments


def _attack_filters(
    bits: npt.NDArray[np.bool_],
    length: int,
    target: Target,
    hardening: Hardening,
    attacks: Sequence[str],
) -> list[AttackResult]:
    """Every attack on one field's filters (`length` bits each, unpacked), one result each."""
    results: list[AttackResult] = []
    packed = np.packbits(bits, axis=1)  # zero padding to whole bytes changes no Dice
    pops = bits.sum(axis=1, dtype=np.int64)
    labels = cluster_encodings(
        packed, clustering_threshold(pops, length, hardening.flip_probability)
    )
    if "frequency" in attacks:
        results.append(frequency_alignment(labels, pops, target, "field"))
    if "pattern" in attacks:
        results.extend(pattern_mining(bits, [target], "field"))
    if "qgram" in attacks:
        results.append(qgram_alignment(bits, labels, target, "field"))
    return results


def _attack_clks(
    clks: np.ndarray,
    targets: Sequence[Target],
    hardening: Hardening,
    attacks: Sequence[str],
    encoding: str,
) -> list[AttackResult]:
    """Every attack on record-level CLKs, one result per attack and target."""
    results: list[AttackResult] = []
    if not targets:
        return results
    if "frequency" in attacks or "qgram" in attacks:
        pops = np.bitwise_count(clks).sum(axis=1, dtype=np.int64)
        flip = hardening.flip_probability
        labels = cluster_encodings(clks, clustering_threshold(pops, 8 * clks.shape[1], flip))
        if "frequency" in attacks:
            for target in targets:
                results.append(frequency_alignment(labels, pops, target, encoding))
    if "pattern" in attacks:
        results.extend(pattern_mining(unpack(clks), targets, encoding))
    if "qgram" in attacks:
        # One CLK holds every field: each field's q-grams are aligned against the whole CLK.
        bits = unpack(clks)
        for target in targets:
            results.append(qgram_alignment(bits, labels, target, encoding))
    return results


# A repeated id: `encode` refuses it by default, and privacy-check has no option to say otherwise.
DUPLICATE_HINT = (
    "privacy-check reads an export as `blindmatch encode` does by default: leave the repeated "
    "rows out, as `encode --on-duplicate-id keep-first` would, and check again"
)


def read_export(data: Path, schema: LinkageSchema, mapping_path: Path) -> list[list[str]]:
    """An export's rows, normalised as `blindmatch encode` reads them; an `InputError` for
    one with no records (there is nothing to check, and no --allow-empty to pass)."""
    mapping = load_mapping(mapping_path, schema)
    _ids, rows = read_rows(
        data, schema, mapping, EncodeReport(source=str(data)), allow_empty=True,
        duplicate_hint=DUPLICATE_HINT,
    )  # fmt: skip
    if not rows:
        raise InputError(f"{data}: no records (an empty file, or a header only): nothing to check")
    return rows


def check_csv(
    data: Path,
    schema: LinkageSchema,
    mapping_path: Path,
    secret: bytes,
    *,
    hardening: Hardening | None = None,
    level: Level = "schema",
    overrides: dict[str, FrequencyList] | None = None,
    attacks: Sequence[str] = ATTACKS,
    graph_records: int = GRAPH_RECORDS,
) -> CheckReport:
    """Read and normalise `data` as `blindmatch encode` does, then attack its encodings.

    The graph-matching attacker is given the same people's plaintext with its own typos and
    gaps (`population.noisy_copy`): full overlap, the case the default must withstand.
    """
    rows = read_export(Path(data), schema, mapping_path)
    chosen = (
        hardening if hardening is not None else hardening_from_raw(schema.raw, str(schema.path))
    )
    bit_attacks = [a for a in attacks if a != "graph"]
    results, skipped = attack_encodings(schema, rows, secret, chosen, level, overrides, bit_attacks)
    if "graph" in attacks:
        # The attacker's plaintext: the same people as another organisation holds them.
        picked = sample(len(rows), graph_records, 0)
        victim_rows = [rows[i] for i in picked]
        kinds = [rule.kind for rule in schema.rules]
        noisy = population.noisy_copy(victim_rows, kinds, seed=1)
        order = np.random.default_rng(2).permutation(len(picked)).tolist()  # in its own order
        results.extend(
            graph_attacks(
                schema, victim_rows, [noisy[i] for i in order],
                picked, [picked[i] for i in order], secret, chosen,
                overlap_label=" (this export with its own typos and gaps)",
                victim_reference=rows, skipped=skipped,
                attacker_reference=(
                    population.noisy_copy(rows, kinds, seed=3) if schema.frequency else None
                ),
            )
        )  # fmt: skip
    return CheckReport(
        str(data),
        len(rows),
        chosen.describe(),
        results,
        skipped,
        field_level=schema.field_level,
        fallback=schema.fallback,
    )


def seeded_secret(seed: int) -> bytes:
    """The synthetic members' secret `privacy-check --seed` fixes, so that a run repeats."""
    return hashlib.sha256(b"blindmatch privacy-check members %d" % seed).digest()


def check_synthetic(
    records: int,
    seed: int,
    schema: LinkageSchema,
    *,
    hardening: Hardening | None = None,
    level: Level = "schema",
    attacks: Sequence[str] = ATTACKS,
    graph_records: int = GRAPH_RECORDS,
    overlap: float = 1.0,
    secret: bytes | None = None,
) -> CheckReport:
    """The check on a seeded realistic export of `records` people (client.tools.privacy.population).

    The graph-matching attacker holds another organisation's export of `graph_records`
    people, `overlap` of them the member's (`population.write_pair`). `secret`: the
    members' (default: a fresh one, as the CLI's check uses); given, the attacker's key is
    derived from it, so that the whole check is repeatable.
    """
    attacker_secret = None
    if secret is not None:
        attacker_secret = hashlib.sha256(b"blindmatch privacy-check attacker " + secret).digest()
    secret = secret if secret is not None else secrets.token_bytes(32)
    bit_attacks = [a for a in attacks if a != "graph"]
    with tempfile.TemporaryDirectory(prefix="blindmatch-privacy-") as tmp:
        export = population.write_single(Path(tmp), seed, records)
        report = check_csv(
            export.csv, schema, export.mapping, secret, hardening=hardening,
            level=level, attacks=bit_attacks,
        )  # fmt: skip
        if "graph" in attacks:
            chosen = (
                hardening
                if hardening is not None
                else hardening_from_raw(schema.raw, str(schema.path))
            )
            pair = population.write_pair(Path(tmp) / "pair", seed, graph_records, overlap)
            victim_ids, victim_rows = normalised_export(pair.victim, schema)
            attacker_ids, attacker_rows = normalised_export(pair.attacker, schema)
            report.results.extend(
                graph_attacks(
                    schema, victim_rows, attacker_rows,
                    [pair.victim.truth[i] for i in victim_ids],
                    [pair.attacker.truth[i] for i in attacker_ids],
                    secret, chosen, attacker_secret=attacker_secret,
                    skipped=report.skipped,
                )
            )  # fmt: skip
    report.source = f"synthetic data ({records} people, seed {seed})"
    report.synthetic = True
    return report


__all__ = [
    "LIMIT",
    "MIN_RECORDS",
    "CheckReport",
    "attack_encodings",
    "check_csv",
    "check_synthetic",
    "field_segments",
    "load_schema",
    "output_paths",
    "plot",
    "read_secret",
    "write_outputs",
]
