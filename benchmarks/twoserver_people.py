"""The people of benchmarks/twoserver.py (a part of it, not a script): privacy-check's
synthetic pair, or a benchmark generator's first N people as members A and B and the
attacker's plaintext, A and B padded with decoy people (`--pad-to`) of the generator's or of
the client's own synthetic generator (`--decoys client`)."""

from __future__ import annotations

import argparse
import dataclasses
import random
import tempfile
from pathlib import Path
from typing import Any

from blindmatch.client.encoding.encode import EncodeReport, read_rows
from blindmatch.client.encoding.mapping import load_mapping
from blindmatch.client.tools.privacy.twocheck import synthetic_members


def decoy_people(gen: Any, count: int, seed: int, member: int) -> list[Any]:
    """`count` decoy people for member `member` (0: A, 1: B): the generator's people drawn
    with a seed of their own (each member its own), their entities negative (no real person's,
    and not in the attacker's plaintext)."""
    drawn = gen.population(count, random.Random(f"decoys {seed} {member}"))[:count]
    return [dataclasses.replace(p, entity=-1 - p.entity - member * 10_000_000) for p in drawn]


def client_decoys(
    folder: Path, loaded: list[Any], count: int, seed: int, shared: bool, schema: Any
) -> list[Any]:
    """A and B of `loaded` each padded with `count` decoys of the client's own synthetic
    generator (client/tools/privacy/population.py, what a client could ship), not the real
    people's: the same people in both (`shared`, each member's export its own) or each
    member's own; entities negative, shuffled in."""
    from blindmatch.client.tools.privacy import population
    from blindmatch.client.tools.privacy.graphcheck import normalised_export

    pairs = [population.write_pair(folder / f"decoys{k}", 7919 * seed + k, count, 1.0)
             for k in range(1 if shared else 2)]  # fmt: skip
    exports = [pairs[0].victim, pairs[0].attacker] if shared else [q.victim for q in pairs]
    out = []
    rng = random.Random(f"decoy order {seed}")
    for k, export in enumerate(exports):
        ids, rows = normalised_export(export, schema)
        people = [-1 - export.truth[i] for i in ids]
        both = list(zip(loaded[k][0] + rows, loaded[k][1] + people, strict=True))
        rng.shuffle(both)
        out.append(([r for r, _q in both], [q for _r, q in both]))
    return [*out, loaded[2]]


def generator_three(
    folder: Path, generator: str, seed: int, size: int, schema: object, pad_to: int = 0,
    shared_decoys: bool = False,
) -> list[tuple[list[list[str]], list[int]]]:  # fmt: skip
    """A benchmark generator's first `size` people: A's export (its first organisation's),
    B's (its second's, the same people shuffled) and the attacker's plaintext (its third's),
    read as `read_rows` reads them, with each row's person. `pad_to`: A and B each padded
    to that many records with decoy people of their own (`decoy_people`), shuffled in; the
    attacker's plaintext holds none of them; `shared_decoys`: the same decoy people in both
    (each member's export of them its own, as of real people), so that they link."""
    from benchmarks import households, messy
    from benchmarks.exports import write_export

    gen: Any = {"messy": messy, "households": households}[generator]
    rng = random.Random(seed)
    people = gen.population(size, rng)[:size]
    out = []
    for k, org in enumerate(gen.ORGS[:3]):
        chosen = list(people)
        if k < 2 and pad_to > size:
            chosen += decoy_people(gen, pad_to - size, seed, 0 if shared_decoys else k)
        rng.shuffle(chosen)
        rows = [gen.export_row(org, p, n, rng) for n, p in enumerate(chosen)]
        header = [org.id_column, *org.columns.values()]
        export = write_export(folder, org.name, header, rows, org.mapping_toml(),
                              [p.entity for p in chosen])  # fmt: skip
        mapping = load_mapping(export.mapping, schema)  # type: ignore[arg-type]
        ids, read = read_rows(export.csv, schema, mapping, EncodeReport(""))  # type: ignore[arg-type]
        out.append((read, [export.truth[i] for i in ids]))
    return out


def load(args: argparse.Namespace, schema: Any) -> Any:
    """The `--population`'s members A and B and the attacker's plaintext, each (rows, people)."""
    with tempfile.TemporaryDirectory(prefix="blindmatch-2s-") as tmp:
        if args.population != "synthetic":
            own = args.decoys == "generator"
            partner = getattr(args, "partner_records", 0) or 0
            loaded = generator_three(Path(tmp), args.population, args.seed,
                                     max(args.records, partner), schema,
                                     args.pad_to if own else 0, args.shared_decoys)  # fmt: skip
            if partner > args.records:  # A: its first `records` rows (random people) alone
                rows, people = loaded[0]
                loaded[0] = (rows[: args.records], people[: args.records])
            if args.pad_to > args.records and not own:
                loaded = client_decoys(Path(tmp), loaded, args.pad_to - args.records, args.seed,
                                       args.shared_decoys, schema)  # fmt: skip
        else:
            # Member A (the victim), member B (another force: half the same people), and the
            # attacker's plaintext of every person of A and B (one record a person, its own
            # errors): privacy-check --mode two-server's synthetic project.
            loaded = synthetic_members(Path(tmp), args.seed, args.records, schema)
    return loaded
