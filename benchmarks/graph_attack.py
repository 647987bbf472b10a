"""The graph-matching attack against each encoding and view, and the fallback CLK's F1 cost.

    .venv/bin/python benchmarks/graph_attack.py [--records 1000] [--overlap 1.0] [--seed 1]
        [--only LABEL ...] [--known 0 10 50] [--schema schemas/person-uk.json] [--third]
    .venv/bin/python benchmarks/graph_attack.py --f1 [--seeds 11 12 13] [--population 20000]

Attack table: a police force's export of `--records` people (the victim) and another
organisation's export with its own errors covering `--overlap` of them (the attacker's
plaintext, client/tools/privacy/population.py `write_pair`). For each setting the victim's upload is
encoded under one secret, the attacker's plaintext under its own, and the graph-matching
attack (client/tools/privacy/graph.py) runs blind and with known pairs; printed: share of the
covered records re-identified, and claim precision.

Keyed-LSH views (the design study, docs/privacy-design.md): members would upload only
HMAC'd band keys of their CLKs (b bands of r bit positions each, positions and HMAC keyed by
the secret); the matcher learns which records share a band. Printed beside the attack: the
recall of band collisions on true cross-organisation pairs at Dice >= 0.8 (the default
threshold), and the density of the within-member collision graph.

Every setting is the layout of `--schema` (default: the shipped default, schemas/person-uk.json;
schemas/person-uk-original.json reproduces the figures of the layout before issue 21), with
its fallback CLK on or off. With `--third`, every non-LSH setting's upload also carries a
third record-level CLK of given name, date of birth and sex (benchmarks/rule2d.py), one more
similarity graph for the attack.

--f1: pair F1 on benchmarks/messy.py's three organisations at the default threshold, with the
schema's fallback CLK on and off (in-process encode and match, as a run does).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import secrets
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import numpy.typing as npt

from blindmatch.client.encoding import sharing
from blindmatch.client.encoding.encode import EncodeReport, encode_csv, read_rows
from blindmatch.client.encoding.harden import NONE, Hardening, with_hardening
from blindmatch.client.encoding.mapping import load_mapping
from blindmatch.client.encoding.schema import LinkageSchema, load_schema
from blindmatch.client.tools.privacy import population
from blindmatch.client.tools.privacy.graph import (
    bit_similarity,
    collision_similarity,
    scored_runs,
)
from blindmatch.client.tools.privacy.graphcheck import upload_views

ROOT = Path(__file__).resolve().parent.parent
PERSON = ROOT / "schemas" / "person-uk.json"


def with_fallback(schema: LinkageSchema, on: bool) -> LinkageSchema:
    raw = copy.deepcopy(schema.raw)
    section = raw.setdefault("blindmatch", {})
    if on:
        section["fallback"] = {"without": ["dob"]}
        return dataclasses.replace(schema, raw=raw, fallback=("dob",))
    section.pop("fallback", None)
    return dataclasses.replace(schema, raw=raw, fallback=())


def hardened(schema: LinkageSchema, hardening: Hardening) -> LinkageSchema:
    return dataclasses.replace(schema, raw=with_hardening(schema.raw, hardening))


def band_keys(clks: npt.NDArray[np.uint8], r: int, b: int, key: bytes) -> npt.NDArray[np.uint64]:
    """Keyed Hamming LSH as the client ships it (client/encoding/sharing.py): b bands of r bit
    positions of all the CLK's bits, drawn from the key by `band_positions`, each band's bits
    HMAC'd under a key derived from it by `band_keys`; 64 bits of each HMAC kept."""
    positions = sharing.band_positions(key, np.arange(8 * clks.shape[1]), r, b)
    return sharing.band_keys(clks, positions, key)


def dice(a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8]) -> npt.NDArray[np.float64]:
    inter = np.bitwise_count(a & b).sum(axis=1)
    total = np.bitwise_count(a).sum(axis=1) + np.bitwise_count(b).sum(axis=1)
    return np.where(total > 0, 2 * inter / np.maximum(total, 1), 0.0)


@dataclasses.dataclass
class Case:
    label: str
    schema: LinkageSchema
    hardening: Hardening = NONE
    lsh: tuple[int, int] | None = None  # (r, b): a keyed-LSH view of the record CLKs


def cases(person: LinkageSchema) -> list[Case]:
    old, plain = with_fallback(person, True), with_fallback(person, False)
    return [
        Case("record + fallback CLK", old),
        Case("record CLK only (fallback off)", plain),
        Case("salt dob:year (fallback off)", plain, Hardening(salt_field="dob")),
        Case("BLIP eps=3 (fallback off)", plain, Hardening(blip_epsilon=3.0)),
        Case("BLIP eps=2 (fallback off)", plain, Hardening(blip_epsilon=2.0)),
        Case("BLIP eps=1 (fallback off)", plain, Hardening(blip_epsilon=1.0)),
        Case("balance (fallback off)", plain, Hardening(balance=True)),
        Case("keyed LSH r=8 b=33", plain, lsh=(8, 33)),
        Case("keyed LSH r=12 b=95", plain, lsh=(12, 95)),
        Case("keyed LSH r=16 b=264", plain, lsh=(16, 264)),
    ]


def attack_table(args: argparse.Namespace) -> None:
    person = load_schema(args.schema)
    chosen = [c for c in cases(person) if not args.only or c.label in args.only]
    third: LinkageSchema | None = None
    with tempfile.TemporaryDirectory(prefix="blindmatch-graph-") as tmp:
        if args.third:
            from benchmarks.rule2d import third_schema

            (Path(tmp) / "third.json").write_text(json.dumps(third_schema(args.schema)))
            third = load_schema(Path(tmp) / "third.json")
        pair = population.write_pair(Path(tmp), args.seed, args.records, args.overlap)
        data = []
        for export in (pair.victim, pair.attacker):
            ids, rows = read_rows(
                export.csv, person, load_mapping(export.mapping, person), EncodeReport("")
            )
            data.append((rows, [export.truth[i] for i in ids]))
    (v_rows, v_people), (a_rows, a_people) = data
    print(
        f"Graph matching: {len(v_rows)} victim records, attacker's plaintext covers "
        f"{args.overlap:.0%} of them (seed {args.seed}); rate / claim precision"
    )
    header = " ".join(f"{'known ' + str(k):>16}" for k in args.known)
    print(f"{'setting':<40} {header} {'recall':>7} {'density':>8} {'s':>5}")
    for case in chosen:
        started = time.monotonic()
        schema = hardened(case.schema, case.hardening)
        key_v, key_a = secrets.token_bytes(32), secrets.token_bytes(32)
        views_v = upload_views(schema, v_rows, key_v, case.hardening)
        views_a = upload_views(schema, a_rows, key_a, case.hardening)
        recall = density = float("nan")
        if third is not None and case.lsh is None:  # the third schema's fallback CLK
            views_v.append(upload_views(third, v_rows, key_v, case.hardening)[1])
            views_a.append(upload_views(third, a_rows, key_a, case.hardening)[1])
        if case.lsh is None:
            sim_v = [bit_similarity(v) for v in views_v]
            sim_a = [bit_similarity(a) for a in views_a]
        else:
            r, b = case.lsh
            keys_v = band_keys(views_v[0], r, b, key_v)
            keys_a = band_keys(views_a[0], r, b, key_a)
            sim_v, sim_a = [collision_similarity(keys_v)], [collision_similarity(keys_a)]
            # Recall: the same people's records, both encoded under the members' one key.
            where = {p: j for j, p in enumerate(a_people)}
            shared = [(i, where[p]) for i, p in enumerate(v_people) if p in where]
            vi, aj = (np.array(x) for x in zip(*shared, strict=True))
            same_key = upload_views(schema, a_rows, key_v, case.hardening)[0]
            close = dice(views_v[0][vi], same_key[aj]) >= 0.8
            keys_same = band_keys(same_key, r, b, key_v)
            hit = (keys_v[vi] == keys_same[aj]).any(axis=1)
            recall = float(hit[close].mean())
            n = len(keys_v)
            pairs = 0
            for band in range(b):
                _u, counts = np.unique(keys_v[:, band], return_counts=True)
                pairs += int((counts * (counts - 1) // 2).sum())
            density = pairs / (n * (n - 1) / 2)  # collisions per pair, summed over bands
        runs = scored_runs(sim_v, sim_a, v_people, a_people, args.known)
        cells = [f"{scored.rate:>7.1%} / {scored.precision:>6.1%}" for _, scored in runs]
        print(
            f"{case.label:<40} {' '.join(f'{c:>16}' for c in cells)} {recall:>7.4f} "
            f"{density:>8.4f} {time.monotonic() - started:>5.0f}",
            flush=True,
        )


def f1_study(args: argparse.Namespace) -> None:
    from benchmarks.messy import ORGS, write_exports
    from blindmatch.client.tools.evaluate import quality, read_truth
    from blindmatch.matcher.domain import DEFAULT_THRESHOLD
    from blindmatch.matcher.usecases.runs import match

    person = load_schema(args.schema)
    print(f"{'seed':>5} {'fallback':<9} {'precision':>9} {'recall':>7} {'F1':>7}")
    deltas = []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory(prefix="blindmatch-f1-") as tmp:
            folder = Path(tmp)
            write_exports(folder, seed, args.population)
            truth = read_truth(folder / "truth.csv")
            row = {}
            for on in (True, False):
                schema = with_fallback(person, on)
                secret = secrets.token_bytes(32)
                datasets, ids = [], []
                fallback_bits = 0
                for style in ORGS:
                    mapping = load_mapping(folder / f"{style.name}.toml", schema)
                    result = encode_csv(folder / f"{style.name}.csv", schema, mapping, secret)
                    fallback_bits = result.fallback_bits
                    width = result.clk_bits // 8
                    datasets.append(np.frombuffer(result.clks, dtype=np.uint8).reshape(-1, width))
                    ids.append(result.ids)
                links = match(
                    datasets, DEFAULT_THRESHOLD, workers=2, fallback_bits=fallback_bits
                ).links
                hits = {
                    (ORGS[d].name, ids[d][r], ORGS[p].name)
                    for d, r, p in zip(links.dset, links.row, links.partner, strict=True)
                }
                q = quality(hits, truth)
                row[on] = q.f1
                print(
                    f"{seed:>5} {'on' if on else 'off':<9} {q.precision:>9.4f} {q.recall:>7.4f} "
                    f"{q.f1:>7.4f}",
                    flush=True,
                )
            deltas.append(100 * (row[False] - row[True]))
    print(
        f"F1 cost of turning the fallback off: {np.mean(deltas):+.2f} points "
        f"(per seed: {', '.join(f'{d:+.2f}' for d in deltas)})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--overlap", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--known", type=int, nargs="+", default=[0, 10, 50])
    parser.add_argument("--only", action="append", default=[], metavar="LABEL")
    parser.add_argument("--f1", action="store_true", help="the fallback's F1 cost instead")
    parser.add_argument("--seeds", type=int, nargs="+", default=[11, 12, 13])
    parser.add_argument("--population", type=int, default=20_000)
    parser.add_argument("--schema", type=Path, default=PERSON, help="the layout attacked")
    parser.add_argument("--third", action="store_true", help="add a given name + dob + sex CLK")
    args = parser.parse_args()
    labels = [c.label for c in cases(load_schema(args.schema))]
    for label in args.only:
        if label not in labels:
            parser.error(f"--only {label!r}: one of {'; '.join(labels)}")
    if args.f1:
        f1_study(args)
    else:
        attack_table(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
