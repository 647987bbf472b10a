"""The graph-matching attack as `privacy-check` runs it: on what a schema uploads.

`graph_attacks` encodes a member's rows under its secret and the attacker's plaintext under a
key of its own, with the same public schema and hardening, and runs `client.tools.privacy.graph`
blind and with known pairs; `upload_views` is what one member uploads, as encodings the
matcher can compare pairwise.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from blindmatch.client.encoding.encode import (
    EncodeReport,
    encode_fallback,
    encode_first,
    read_rows,
)
from blindmatch.client.encoding.fieldlevel import encode_field_level
from blindmatch.client.encoding.harden import Hardening
from blindmatch.client.encoding.mapping import load_mapping
from blindmatch.client.encoding.schema import LinkageSchema
from blindmatch.client.tools.privacy import population
from blindmatch.client.tools.privacy.attacks import AttackResult
from blindmatch.client.tools.privacy.graph import bit_similarity, scored_runs

# The graph-matching attack: blind, and with this many pairs the attacker already knows.
KNOWN_PAIRS = (0, 10, 50)
# Records the graph-matching attack is run on (a random sample of larger uploads): it holds
# n x n similarity matrices.
GRAPH_RECORDS = 2000


def upload_views(
    schema: LinkageSchema,
    rows: Sequence[Sequence[str]],
    secret: bytes,
    hardening: Hardening,
    reference: Sequence[Sequence[str]] | None = None,
) -> list[npt.NDArray[np.uint8]]:
    """What one member uploads, as encodings the matcher can compare pairwise: the CLKs (a
    field-level schema's whole CLK), and the fallback CLKs when the schema has them.
    `reference`: the whole export `rows` were sampled from (frequency tiers count it)."""
    enc_schema = schema.for_encoding()
    if schema.field_level:
        clks = encode_field_level(rows, enc_schema, schema.field_bits, secret)
        return [np.frombuffer(clks, dtype=np.uint8).reshape(len(rows), -1)]
    views = [encode_first(rows, schema, secret, hardening, max_workers=1, reference=reference)]
    if schema.fallback:
        views.append(
            encode_fallback(
                list(map(list, rows)), schema, secret, hardening, max_workers=1, reference=reference
            )
        )
    return views


def graph_attacks(
    schema: LinkageSchema,
    victim_rows: Sequence[Sequence[str]],
    attacker_rows: Sequence[Sequence[str]],
    victim_people: Sequence[object],
    attacker_people: Sequence[object],
    secret: bytes,
    hardening: Hardening,
    *,
    known: Sequence[int] = KNOWN_PAIRS,
    overlap_label: str = "",
    victim_reference: Sequence[Sequence[str]] | None = None,
    attacker_reference: Sequence[Sequence[str]] | None = None,
    attacker_secret: bytes | None = None,
    skipped: list[str] | None = None,
) -> list[AttackResult]:
    """The graph-matching attack (client.tools.privacy.graph) on what the schema uploads.

    The victim's rows are encoded under `secret`; the attacker's under a key of its
    own, with the same (public) schema and hardening. One result per number of known
    pairs; the people (entity ids) only score the claims. The references are the
    whole exports the rows were sampled from (a frequency-tiered schema counts them).
    `attacker_secret`: the attacker's key (default: a fresh one). A number of known pairs
    that leaves no record of the sample to attack gives no result (a row of 0% would read as
    a defence); it is told in `skipped`.
    """
    if attacker_secret is None:
        attacker_secret = secrets.token_bytes(32)
    victim = [
        bit_similarity(v)
        for v in upload_views(schema, victim_rows, secret, hardening, victim_reference)
    ]
    attacker = [
        bit_similarity(v)
        for v in upload_views(schema, attacker_rows, attacker_secret, hardening, attacker_reference)
    ]
    encoding = "field" if schema.field_level else "record"
    if len(victim) > 1:
        encoding = "record+fallback"
    held = set(attacker_people)
    covered = sum(1 for p in victim_people if p in held) / max(len(victim_people), 1)
    results = []
    overlapping = sum(1 for p in victim_people if p in held)
    for count in known:
        if count and count >= overlapping and skipped is not None:
            skipped.append(
                f"graph matching ({count} known): the attacker's plaintext covers "
                f"{overlapping} of the {len(victim_people)} records attacked, so {count} "
                "known pairs leave none to re-identify"
            )
    counts = [count for count in known if not count or count < overlapping]
    # (the blind seeding's trials shared by every count of known pairs)
    for count, scored in scored_runs(victim, attacker, victim_people, attacker_people, counts):
        label = "blind" if not count else f"{count} known"
        results.append(
            AttackResult(
                attack=f"graph matching ({label})",
                encoding=encoding,
                field="(record)",
                public_list=(
                    f"attacker's plaintext on {covered:.0%} of the people{overlap_label}; "
                    f"claim precision {scored.precision:.1%}"
                ),
                records=scored.overlapping,
                records_reidentified=scored.right,
                values=scored.overlapping,
                values_reidentified=scored.right,
                claims=scored.claims,
                sample=len(victim_people),
            )
        )
    return results


def sample(n: int, size: int, seed: int) -> list[int]:
    if n <= size:
        return list(range(n))
    return sorted(np.random.default_rng(seed).choice(n, size=size, replace=False).tolist())


def normalised_export(
    export: population.Export, schema: LinkageSchema
) -> tuple[list[str], list[list[str]]]:
    mapping = load_mapping(export.mapping, schema)
    return read_rows(export.csv, schema, mapping, EncodeReport(source=str(export.csv)))


__all__ = [
    "GRAPH_RECORDS",
    "KNOWN_PAIRS",
    "graph_attacks",
    "normalised_export",
    "sample",
    "upload_views",
]
