"""Where the default loses precision and recall: the false positives and false negatives of
one generated setting, classified.

    .venv/bin/python benchmarks/quality_errors.py [--generator households] [--seed 2105]
        [--population 20000] [--corruption 1.0] [--schema schemas/person-uk.json]
        [--threshold 0.8] [--cache DIR] [--show 0]

The exports are written by the generator, encoded in-process with the schema (as `encode`
does) and matched in-process with the matcher's own `match` (as a run does, default
settings); a record's hits with a partner are the links of its group, as the `hits`
results files hold them. Then every false positive is put into the first class that fits:

- **household** (households generator): the two records are two people of one household,
  by relation: twins (same date of birth), parent/child, siblings, spouses (two adults);
- **same-surname-postcode**: other people sharing a surname and a postcode;
- **unrelated**;

and, across classes, how it was scored: on the fallback CLK (a side lacks a date of
birth) or on the first CLK, its score, whether the group only implied it (its own score
is under the threshold: multi-party solving joined it through a third record), and
whether the record's true partner was in the other export (so the solver's choice cost a
true hit too). Every false negative by what its pair scored: under the threshold (and
why: date of birth missing or different, names, postcode), or over it but the solver gave
one of the two records to another.

`--cache` keeps the exports and encodings between runs (one folder per setting), so
schema experiments re-encode only what changed. Nothing here is used by the matcher.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import households
from benchmarks.quality import GENERATORS
from blindmatch.client.encoding.encode import encode_csv
from blindmatch.client.encoding.mapping import load_mapping
from blindmatch.client.encoding.readcsv import EncodeReport, read_rows
from blindmatch.client.encoding.schema import load_schema
from blindmatch.client.tools.evaluate import read_truth
from blindmatch.matcher.core import fallback as fallback_
from blindmatch.matcher.domain import NO_RULE, Rule
from blindmatch.matcher.usecases.runs import match

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "schemas" / "person-uk.json"


@dataclass
class Member:
    name: str
    ids: list[str]
    rows: list[list[str]]  # normalised, schema order
    clks: np.ndarray  # (records, bytes)
    fallback_bits: int
    rule: Rule = NO_RULE  # the schema's rule over both CLKs (blindmatch.rule), as a run has it


def encoded(folder: Path, generator: str, schema_path: Path, secret: bytes) -> list[Member]:
    schema = load_schema(schema_path)
    out = []
    for name, (csv_path, map_path) in GENERATORS[generator].exports(folder).items():
        mapping = load_mapping(map_path, schema)
        res = encode_csv(csv_path, schema, mapping, secret)
        ids, rows = read_rows(csv_path, schema, mapping, EncodeReport(source=str(csv_path)))
        clks = np.frombuffer(res.clks, dtype=np.uint8).reshape(len(ids), res.clk_bits // 8)
        rule = Rule(*res.rule) if res.rule is not None else NO_RULE
        out.append(Member(name, ids, rows, clks.copy(), res.fallback_bits, rule))
    return out


def linked(
    members: list[Member], threshold: float = 0.8
) -> dict[tuple[str, str, str], tuple[int, int, int, int, float]]:
    """The hits a run with default settings reports (every link of every member), each with
    its (dataset, row, partner dataset, partner row, score)."""
    bits = {m.fallback_bits for m in members}.pop()
    rule = {m.rule for m in members}.pop()
    result = match(
        [m.clks for m in members], threshold, blocking="exhaustive", fallback_bits=bits,
        rule=rule, workers=1,
    )  # fmt: skip
    links, names = result.links, [m.name for m in members]
    return {
        (names[d0], members[d0].ids[r0], names[d1]): (int(d0), int(r0), int(d1), int(r1), float(s))
        for d0, r0, d1, r1, s in zip(
            links.dset, links.row, links.partner, links.partner_row, links.score, strict=True
        )
    }


def roles(people: dict[int, households.Person]) -> dict[int, str]:
    """adult or child, as `households.population` made them: a household's first person is
    an adult, its children were born at least 18 years after that person, anyone else of
    the household is the first person's partner."""
    first: dict[int, households.Person] = {}
    for e in sorted(people):
        first.setdefault(people[e].household, people[e])
    out = {}
    for e, p in people.items():
        head = first[p.household]
        out[e] = "child" if (p.dob - head.dob).days >= 365 * 18 else "adult"
    return out


def relation(a: households.Person, b: households.Person, role: dict[int, str]) -> str:
    """How two people of one household are related."""
    ra, rb = role[a.entity], role[b.entity]
    if ra == rb == "adult":
        return "spouses"
    if ra != rb:
        return "parent/child" + (", same given name" if a.first == b.first else "")
    return "twins" if a.dob == b.dob else "siblings"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--generator", default="households", choices=list(GENERATORS))
    parser.add_argument("--seed", type=int, default=2105)
    parser.add_argument("--population", type=int, default=20_000)
    parser.add_argument("--corruption", type=float, default=1.0)
    parser.add_argument("--schema", type=Path, default=SCHEMA)
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/blindmatch-quality-errors"))
    parser.add_argument("--show", type=int, default=0, help="print this many examples a class")
    args = parser.parse_args()

    folder = args.cache / f"{args.generator}-{args.seed}-{args.population}-{args.corruption}"
    if not (folder / "truth.csv").exists():
        GENERATORS[args.generator].write(folder, args.seed, args.population, args.corruption)
    truth = read_truth(folder / "truth.csv")
    people: dict[int, households.Person] = {}
    if args.generator == "households":
        people = {
            p.entity: p for p in households.population(args.population, random.Random(args.seed))
        }
    role = roles(people)
    # A fixed linkage secret per setting: two runs of one schema give the same figures.
    secret = hashlib.sha256(f"quality-errors {args.seed}".encode()).digest()
    members = encoded(folder, args.generator, args.schema, secret)
    bits = {m.fallback_bits for m in members}.pop()
    found = linked(members, args.threshold)
    split = fallback_.Split.of([m.clks for m in members], bits) if bits else None
    names = [m.name for m in members]
    actual = truth.true_hits()
    tp = len(set(found) & actual)
    p, r = tp / len(found), tp / len(actual)
    print(
        f"{args.generator} seed {args.seed}, {args.population} people, corruption "
        f"{args.corruption}, {args.schema.name}, t={args.threshold}: {len(found)} hits, "
        f"{tp} true, {len(actual)} true hits; P {p:.4f} R {r:.4f} F1 {2 * p * r / (p + r):.4f}"
    )

    index = {
        n: {rid: i for i, rid in enumerate(m.ids)} for n, m in zip(names, members, strict=True)
    }
    ent = {k: int(v) for k, v in truth.entity.items()}
    by_entity: dict[tuple[int, str], int] = {(ent[(n, rid)], n): index[n][rid] for n, rid in ent}

    def lacks(d: int, row: int) -> bool:
        return bool(split.lacking[d][row]) if split is not None else not members[d].rows[row][2]

    def show(d: int, row: int) -> str:
        e = ent[(names[d], members[d].ids[row])]
        return f"{names[d]}:{e}:{'|'.join(members[d].rows[row])}"

    fp_classes: Counter[str] = Counter()
    fp_how: Counter[str] = Counter()
    examples: dict[str, list[str]] = {}
    seen_pairs = set()
    for hit, (d0, r0, d1, r1, s) in found.items():
        if hit in actual:
            continue
        key = tuple(sorted(((d0, r0), (d1, r1))))
        if key in seen_pairs:  # each pair once (both directions are hits)
            continue
        seen_pairs.add(key)
        e0, e1 = ent[(names[d0], members[d0].ids[r0])], ent[(names[d1], members[d1].ids[r1])]
        if people:
            a, b = people[e0], people[e1]
            if a.household == b.household:
                cls = "household: " + relation(a, b, role)
            elif a.surname == b.surname and a.postcode == b.postcode:
                cls = "same-surname-postcode"
            else:
                cls = "unrelated"
        else:
            x, y = members[d0].rows[r0], members[d1].rows[r1]
            cls = "same-surname-postcode" if x[1] == y[1] and x[4] == y[4] else "other"
        fb = lacks(d0, r0) or lacks(d1, r1)
        how = "fallback" if fb else "first-CLK"
        if s < args.threshold:
            how += ", implied by group"
        partner_held = (e0, names[d1]) in by_entity or (e1, names[d0]) in by_entity
        how += ", true partner held" if partner_held else ", no true partner"
        band = "<0.82" if s < 0.82 else "<0.85" if s < 0.85 else ">=0.85"
        fp_classes[cls] += 1
        fp_how[f"{how}; {band}"] += 1
        examples.setdefault(cls, []).append(
            f"{s:.3f} {how}\n    {show(d0, r0)}\n    {show(d1, r1)}"
        )

    print(
        f"\nfalse positive pairs: {sum(fp_classes.values())} "
        f"({len(found) - tp} hits, both directions)"
    )
    for cls, n in fp_classes.most_common():
        print(f"  {n:5d}  {cls}")
    print("  by how scored:")
    for how, n in sorted(fp_how.items(), key=lambda kv: -kv[1]):
        print(f"  {n:5d}  {how}")

    # False negatives: true pairs not reported, by their own score.
    fn: Counter[str] = Counter()
    life: Counter[str] = Counter()
    fn_examples: dict[str, list[str]] = {}
    missed = sorted(actual - set(found))
    pairs = set()
    for m, rid, partner in missed:
        d0, r0 = names.index(m), index[m][rid]
        d1 = names.index(partner)
        r1 = by_entity[(ent[(m, rid)], partner)]
        pairs.add(tuple(sorted(((d0, r0), (d1, r1)))))
    for (d0, r0), (d1, r1) in sorted(pairs):
        if split is not None:
            one = [np.array([v], dtype=np.uint32) for v in (d0, r0, d1, r1)]
            s = float(fallback_.pair_scores(split, *one, rule=members[0].rule)[0])
        else:
            from blindmatch.matcher.core.solve import dice

            s = float(dice(members[d0].clks[[r0]], members[d1].clks[[r1]])[0])
        x, y = members[d0].rows[r0], members[d1].rows[r1]
        fb = lacks(d0, r0) or lacks(d1, r1)
        if s >= args.threshold:
            cls = "over threshold, solver chose another"
        else:
            why = []
            if not x[2] or not y[2]:
                why.append("dob missing")
            elif x[2] != y[2]:
                why.append("dob differs")
            if x[0] != y[0]:
                why.append("given differs")
            if x[1] != y[1]:
                why.append("surname differs")
            if x[4] != y[4]:
                why.append("postcode differs")
            cls = (
                ("fallback " if fb else "first-CLK ")
                + "under threshold: "
                + (", ".join(why) or "none differ")
            )
            cls += "; >=0.75" if s >= 0.75 else "; <0.75"
        fn[cls] += 1
        if people:  # what happened to the person, as the generator made it
            person = people[ent[(names[d0], members[d0].ids[r0])]]
            events = []
            if not x[2] or not y[2]:
                events.append("no dob on a side")
            if person.old_postcode and x[4] != y[4]:
                events.append("moved")
            if person.surname != person.birth_surname and x[1] != y[1]:
                events.append("married")
            if x[0] != y[0]:
                events.append("given name differs")
            life[" + ".join(events) or "other"] += 1
        fn_examples.setdefault(cls, []).append(f"{s:.3f}\n    {show(d0, r0)}\n    {show(d1, r1)}")
    print(f"\nfalse negative pairs: {len(pairs)} ({len(missed)} hits, both directions)")
    for cls, n in fn.most_common():
        print(f"  {n:5d}  {cls}")
    if life:
        print("  by what happened to the person (households.py's life events):")
        for cls, n in life.most_common():
            print(f"  {n:5d}  {cls}")
    if args.show:
        for title, ex in (("FP", examples), ("FN", fn_examples)):
            for cls, lines in ex.items():
                print(f"\n{title} {cls}:")
                for line in lines[: args.show]:
                    print("  " + line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
