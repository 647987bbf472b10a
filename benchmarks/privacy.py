"""Hardening options: attack success and F1 cost, in one table.

    .venv/bin/python benchmarks/privacy.py [--population 20000] [--attack-records 10000] [--seed 1]
        [--only none --only "salt dob:year" ...]

For each hardening setting: the graph-matching attack's rate and claim
precision (blind, 10 and 50 known pairs; client/tools/privacy/graph.py, on
`--graph-records` records), the worst share of records re-identified by any
bit-level attack (`blindmatch privacy-check`, on the record-level encodings the
default schema uploads — first and fallback CLKs — and on field-level filters of
the same fields, as a field-level schema would upload them, on a seeded
realistic export), and the pair F1 of linking (a) three
organisations drawn from a realistic population (client/tools/privacy/population.py,
our own seeded generator: the quality branch's generator was not merged when
this was written) and (b) Febrl4, at the default threshold, against the same
schema unhardened. Each hardened schema is read by `load_schema`, as a member's would be:
a setting it refuses beside the default's fallback CLK (a salt with dob, which the fallback
CLK leaves out; balancing; XOR folding) is measured on the default without its fallback CLK,
schemas/person-uk-no-fallback.json, marked `*`, its ΔF1 against that unhardened. Then, per
setting, what
q-gram alignment (the strongest attack, client/tools/privacy/qgram.py) re-identified of
surnames: share of records and of distinct values, on field-level filters and on the
record-level CLKs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import secrets
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from blindmatch.client.encoding.encode import encode_csv
from blindmatch.client.encoding.harden import NONE, RECOMMENDED, Hardening, with_hardening
from blindmatch.client.encoding.mapping import load_mapping
from blindmatch.client.encoding.schema import LinkageSchema, load_schema
from blindmatch.client.encoding.schemacheck import fallback_blip_warning
from blindmatch.client.errors import InputError
from blindmatch.client.tools.privacy import population
from blindmatch.client.tools.privacy.check import ATTACKS, check_synthetic
from blindmatch.matcher.domain import DEFAULT_THRESHOLD
from blindmatch.matcher.usecases.runs import match

ROOT = Path(__file__).resolve().parent.parent
PERSON = ROOT / "schemas" / "person-uk.json"
# Settings the schema loader refuses beside a fallback CLK (a salt with a field it leaves out,
# dob; balancing; XOR folding: schemakeys.check_hardening) are measured on the default
# without its fallback CLK and rule, the first CLK alone, and marked so.
PERSON_FIRST_ONLY = ROOT / "schemas" / "person-uk-no-fallback.json"
FIRST_ONLY_MARK = " *"
FEBRL4 = ROOT / "tests" / "data" / "febrl4"

SETTINGS: list[tuple[str, Hardening]] = [
    ("none", NONE),
    ("recommended (default)", RECOMMENDED),
    ("salt dob:year", Hardening(salt_field="dob")),
    ("BLIP eps=3", Hardening(blip_epsilon=3.0)),
    ("BLIP eps=2", Hardening(blip_epsilon=2.0)),
    ("balance", Hardening(balance=True)),
    ("xor-folds=1", Hardening(xor_folds=1)),
    ("salt dob:year + BLIP eps=3", Hardening(salt_field="dob", blip_epsilon=3.0)),
]


def hardened(schema: LinkageSchema, hardening: Hardening, folder: Path) -> LinkageSchema:
    """`schema` with `hardening`, written to a file in `folder` and read back by
    `load_schema`, as a member's would be: InputError where the loader refuses it."""
    path = folder / f"{schema.path.stem}-{len(list(folder.iterdir()))}.json"
    path.write_text(json.dumps(with_hardening(schema.raw, hardening)), encoding="utf-8")
    return load_schema(path)


def measured(
    person: LinkageSchema, first_only: LinkageSchema, hardening: Hardening, folder: Path
) -> tuple[LinkageSchema, str]:
    """The schema a setting is measured on, hardened, and why not the default where it is
    not: the default (`person`), or without its fallback CLK (`first_only`) where the loader
    refuses the setting beside the fallback CLK (a salt with a field it leaves out, balancing,
    folding: schemakeys.check_hardening)."""
    try:
        return hardened(person, hardening, folder), ""
    except InputError as exc:
        return hardened(first_only, hardening, folder), str(exc).split(": ", 1)[1]


def pair_f1(
    schema: LinkageSchema,
    members: Sequence[tuple[Path, Path, Mapping[str, object]]],
    threshold: float,
) -> float:
    """Pair-level F1 of linking `members` (csv, mapping, record id -> entity)."""
    secret = secrets.token_bytes(32)
    datasets, entities = [], []
    fallback_bits = 0
    for csv_path, mapping_path, truth in members:
        result = encode_csv(csv_path, schema, load_mapping(mapping_path, schema), secret)
        fallback_bits = result.fallback_bits
        width = result.clk_bits // 8
        datasets.append(np.frombuffer(result.clks, dtype=np.uint8).reshape(-1, width))
        entities.append([truth[i] for i in result.ids])
    links = match(
        datasets, threshold, workers=2, field_bits=schema.field_bits, fallback_bits=fallback_bits
    ).links
    predicted = correct = 0
    for d, r, p, pr in zip(links.dset, links.row, links.partner, links.partner_row, strict=True):
        if d < p:
            predicted += 1
            correct += entities[d][r] == entities[p][pr]
    actual = 0
    for a in range(len(entities)):
        for b in range(a + 1, len(entities)):
            actual += len(set(entities[a]) & set(entities[b]))
    precision = correct / predicted if predicted else 1.0
    recall = correct / actual if actual else 1.0
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--population", type=int, default=20_000)
    parser.add_argument("--attack-records", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--graph-records", type=int, default=1000, help="graph-matching attack sample (0: skip)"
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="LABEL",
        help="run only these settings (repeatable; 'none' always runs, as the F1 baseline)",
    )
    args = parser.parse_args()
    labels = [label for label, _ in SETTINGS]
    for label in args.only:
        if label not in labels:
            parser.error(f"--only {label!r}: one of {', '.join(labels)}")
    chosen = [(lb, h) for lb, h in SETTINGS if not args.only or lb == "none" or lb in args.only]
    person, febrl = load_schema(PERSON), load_schema(FEBRL4 / "schema.json")
    first_only = load_schema(PERSON_FIRST_ONLY)
    threshold = DEFAULT_THRESHOLD
    with tempfile.TemporaryDirectory(prefix="blindmatch-privacy-bench-") as tmp:
        exports = population.write_exports(Path(tmp), args.seed, args.population)
        orgs = [(e.csv, e.mapping, dict(e.truth)) for e in exports.values()]
        febrl_truth = {}
        for name in ("a", "b"):
            with open(FEBRL4 / f"febrl4_{name}.csv", encoding="utf-8") as fh:
                next(fh)
                febrl_truth[name] = {
                    line.split(",", 1)[0]: line.split("-")[1] for line in fh if line.strip()
                }
        febrl_members = [
            (FEBRL4 / f"febrl4_{n}.csv", FEBRL4 / "mapping.toml", febrl_truth[n]) for n in "ab"
        ]
        rows = []
        qgram_rows = []
        graph_rows: list[tuple[str, list]] = []
        schemas = Path(tmp) / "schemas"
        schemas.mkdir()
        # ΔF1 against the schema a row is measured on, unhardened (the first CLK alone: the
        # default without its fallback, measured once where a row needs it).
        base_first_only: float | None = None
        for label, h in chosen:
            started = time.monotonic()
            schema, refused = measured(person, first_only, h, schemas)
            if refused:
                label += FIRST_ONLY_MARK
                print(f"  ({label}: the default refuses it ({refused[:120]}...): measured on "
                      f"{PERSON_FIRST_ONLY.name}, the first CLK alone)",
                      file=sys.stderr)  # fmt: skip
                if base_first_only is None:
                    base_first_only = pair_f1(first_only, orgs, threshold)
            blurred = fallback_blip_warning(schema)
            if blurred:  # as schema check and the encode report warn
                print(f"  ({label}: {blurred})", file=sys.stderr)
            # Record-level: what the default schema uploads (first and fallback CLKs); field-level:
            # one filter per field, as the opt-in field-level schema would upload them.
            report = check_synthetic(
                args.attack_records, args.seed, schema, level="both",
                attacks=ATTACKS if args.graph_records else ATTACKS[:3],
                graph_records=max(args.graph_records, 1),
            )  # fmt: skip
            worst = report.worst
            f1_orgs = pair_f1(schema, orgs, threshold)
            f1_febrl = pair_f1(
                hardened(febrl, h if h.salt_field is None else dataclasses.replace(
                    h, salt_field="date_of_birth"), schemas), febrl_members, threshold,
            )  # fmt: skip
            # Ranked, and said, by the share of all the member's records, as privacy-check's
            # verdict ranks them (`CheckReport.share_of_all`; before 2026-12-08 by the share of
            # the records each attacked, so the two could name different worst attacks).
            field_worst = max(
                (r for r in report.results if r.encoding == "field"), key=report.share_of_all
            )
            record_worst = max(
                (r for r in report.results if r.encoding != "field" and r.claims is None),
                key=report.share_of_all,
            )
            graph_rows.append((label, [r for r in report.results if r.claims is not None]))
            qgram = {
                (r.encoding, r.field): r for r in report.results if r.attack == "q-gram alignment"
            }
            qgram_rows.append((label, qgram[("field", "surname")], qgram[("record", "surname")]))
            base = base_first_only if refused else None
            rec_share, fld_share = map(report.share_of_all, (record_worst, field_worst))
            rows.append((label, rec_share, field_worst.field, fld_share, f1_orgs, f1_febrl, base))
            print(
                f"  ({label}: {time.monotonic() - started:.0f}s; "
                f"worst {worst.field if worst else 'none'})",
                file=sys.stderr,
            )
    base_orgs, base_febrl = rows[0][4], rows[0][5]
    print(
        f"Attacks on {args.attack_records} synthetic records (seed {args.seed}); F1 on "
        f"{args.population:,}-person three-organisation data and Febrl4, threshold {threshold}"
    )
    print(
        f"{'hardening':<28} {'record-level':>13} {'field-level':>22} {'F1 3-org':>9} "
        f"{'dF1':>6} {'F1 Febrl4':>9} {'dF1':>6}"
    )
    for label, rec, fld_field, fld, f_orgs, f_febrl, base in rows:
        print(
            f"{label:<28} {rec:>12.2%} {fld:>8.2%} ({fld_field:<11}) "
            f"{f_orgs:>9.4f} {100 * (f_orgs - (base or base_orgs)):>+6.2f} {f_febrl:>9.4f} "
            f"{100 * (f_febrl - base_febrl):>+6.2f}"
        )
    print(
        "record-/field-level: worst share of all records re-identified by any bit-level attack "
        "(privacy-check's `share_of_all`); dF1 in points"
    )
    if base_first_only is not None:
        print(
            f"{FIRST_ONLY_MARK.strip()} the default ({PERSON.name}) refuses it beside its fallback "
            f"CLK: measured on {PERSON_FIRST_ONLY.name} (the first CLK alone), dF1 3-org "
            f"against that unhardened (F1 {base_first_only:.4f})"
        )
    if args.graph_records:
        print()
        print(
            f"graph matching on {args.graph_records} records (the whole upload; attacker's "
            "plaintext: another organisation's export of the same people): rate / claim precision"
        )
        for label, found in graph_rows:
            cells = "  ".join(
                f"{r.attack[len('graph matching ') :]}: {r.record_share:.1%} / {r.precision:.1%}"
                for r in found
            )
            print(f"{label:<28} {cells}")
    print()
    print("q-gram alignment on surnames: share of records / of distinct values re-identified")
    print(f"{'hardening':<28} {'field-level':>17} {'record-level':>17}")
    for label, fld_q, rec_q in qgram_rows:
        print(
            f"{label:<28} {fld_q.record_share:>8.2%} {fld_q.value_share:>8.2%} "
            f"{rec_q.record_share:>8.2%} {rec_q.value_share:>8.2%}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
