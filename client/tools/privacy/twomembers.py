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
from blindmatch.client.errors import InputError
from blindmatch.client.tools.privacy import population
from blindmatch.client.tools.privacy.graphcheck import normalised_export, sample, upload_views

Member = tuple[list[list[str]], list[int]]  # normalised rows, each row's person


def synthetic_members(
    folder: Path, seed: int, size: int, schema: LinkageSchema, partner: int | None = None
) -> list[Member]:
    """Member A (a police force's export of `size` people), member B (another organisation's:
    half of A's people and as many others, or others up to `partner` records) and the
    attacker's plaintext (a third export, its own errors, of every person of A and B), read
    as `blindmatch encode` reads them (population.py's generator, `write_pair`)."""
    if partner is not None:
        _holds_half(partner, size, round(0.5 * size))
    pair = population.write_pair(folder / "ab", seed, size, 0.5, partner)
    extra = (size if partner is None else partner) - round(0.5 * size)
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


def export_members(
    rows: Sequence[Sequence[str]], schema: LinkageSchema, size: int, partner: int | None = None
) -> list[Member]:
    """From a member's own export: A a sample of `size` of its rows, B a noisy copy
    (population.noisy_copy: another organisation's typos and gaps) of half of them in an
    order of its own (and of other rows of the export, up to `partner` records), the
    attacker's plaintext another noisy copy of all of them."""
    picked = sample(len(rows), size, 0)
    a = [list(rows[i]) for i in picked]
    kinds = [rule.kind for rule in schema.rules]
    half = sorted(np.random.default_rng(1).permutation(len(a))[: len(a) // 2].tolist())
    others: list[int] = []
    if partner is not None:
        _holds_half(partner, len(a), len(half))
        others = _others(len(rows), picked, partner - len(half))
    held = [picked[i] for i in half] + others
    b_people = [int(i) for i in np.random.default_rng(2).permutation(held).tolist()]
    b = population.noisy_copy([rows[i] for i in b_people], kinds, seed=1)
    own = population.noisy_copy(a + [list(rows[i]) for i in others], kinds, seed=3)
    return [(a, list(picked)), (b, b_people), (own, [*picked, *others])]


def _holds_half(partner: int, size: int, half: int) -> None:
    if partner < half:
        raise InputError(
            f"--partner-records {partner}: member B holds half of member A's people ({half:,} "
            f"of its {size:,} records): give at least {half:,}"
        )


def _others(total: int, picked: Sequence[int], count: int) -> list[int]:
    """`count` rows of an export of `total` rows outside `picked` (member A's sample), for
    a partner member B larger than half of A (`privacy-check --partner-records`)."""
    chosen = set(picked)
    rest = [i for i in range(total) if i not in chosen]
    if count > len(rest):
        raise InputError(
            f"--partner-records {count + len(picked) // 2}: member B holds half of the "
            f"{len(picked):,} records sampled as member A and {count:,} others, but the "
            f"export has {len(rest):,} other rows"
        )
    return [rest[i] for i in sample(len(rest), count, 1)]


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
