"""The members `privacy-check --mode two-server` (twocheck.py) puts in its project.

Member A (the data checked), member B (another organisation's export holding half of A's
people) and the attacker's plaintext on every person of both: from the synthetic population
(`synthetic_members`) or from a member's own export (`export_members`); each read as
`blindmatch encode` reads it, and uploaded as `blindmatch encode --two-server` uploads it
(`upload`). `seeded_keys`: the keys of a run that repeats (`--seed`).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from blindmatch.client.encoding import sharing
from blindmatch.client.encoding.harden import Hardening
from blindmatch.client.encoding.schema import LinkageSchema
from blindmatch.client.tools.privacy import population
from blindmatch.client.tools.privacy.graphcheck import normalised_export, sample, upload_views

Member = tuple[list[list[str]], list[int]]  # normalised rows, each row's person


def synthetic_members(folder: Path, seed: int, size: int, schema: LinkageSchema) -> list[Member]:
    """Member A (a police force's export of `size` people), member B (another organisation's:
    half of A's people and as many others) and the attacker's plaintext (a third export, its
    own errors, of every person of A and B), read as `blindmatch encode` reads them
    (population.py's generator, `write_pair`)."""
    pair = population.write_pair(folder / "ab", seed, size, 0.5)
    extra = size - round(0.5 * size)
    people = population.population(size + extra, seed)  # write_pair's people, A's first
    rng = random.Random(seed + 11)
    rows = [population.export_row(population.ORGS[1], q, k, rng) for k, q in enumerate(people)]
    population.write_csv(folder / "ab" / "plaintext.csv", rows)
    own = population.Export(
        folder / "ab" / "plaintext.csv",
        pair.victim.mapping,
        {row["id"]: q.entity for row, q in zip(rows, people, strict=True)},
    )
    out = []
    for export in (pair.victim, pair.attacker, own):
        ids, read = normalised_export(export, schema)
        out.append((read, [export.truth[i] for i in ids]))
    return out


def seeded_keys(seed: int) -> tuple[bytes, bytes]:
    """`privacy-check --mode two-server --seed N`'s keys, derived from the seed: the
    synthetic project's secret and the attacker's own key. The roles' views depend on the
    data and the project's secret alone (their other keys seal, pad or order, and every view
    is read sorted), the attacks on those and the attacker's key: fixing both repeats a run's
    figures. Without --seed both are fresh, as a real project's and attacker's are."""
    project, attacker = (
        hashlib.sha256(f"blindmatch privacy-check two-server {role} {seed}".encode()).digest()
        for role in ("project", "attacker")
    )
    return project, attacker


def export_members(rows: Sequence[Sequence[str]], schema: LinkageSchema, size: int) -> list[Member]:
    """From a member's own export: A a sample of `size` of its rows, B a noisy copy
    (population.noisy_copy: another organisation's typos and gaps) of half of them in an
    order of its own, the attacker's plaintext another noisy copy of all of them."""
    picked = sample(len(rows), size, 0)
    a = [list(rows[i]) for i in picked]
    kinds = [rule.kind for rule in schema.rules]
    half = sorted(np.random.default_rng(1).permutation(len(a))[: len(a) // 2].tolist())
    b_people = [picked[i] for i in np.random.default_rng(2).permutation(half).tolist()]
    b = population.noisy_copy([rows[i] for i in b_people], kinds, seed=1)
    return [(a, list(picked)), (b, b_people), (population.noisy_copy(a, kinds, seed=3), picked)]


def upload(schema: LinkageSchema, rows: Sequence[Sequence[str]], secret: bytes,
            hardening: Hardening) -> sharing.SharedUpload:  # fmt: skip
    """What `blindmatch encode --two-server` uploads: the CLKs (the fallback CLK last, as
    `encode_csv` lays them out), shared by `shared_upload` under the schema's plan."""
    views = upload_views(schema, rows, secret, hardening)
    fallback_bits = 8 * views[1].shape[1] if len(views) > 1 else 0
    return sharing.shared_upload(np.hstack(views), secret, sharing.plan_of(schema), fallback_bits)


__all__ = [
    "Member",
    "export_members",
    "seeded_keys",
    "synthetic_members",
    "upload",
]
