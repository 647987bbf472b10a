"""Precision as the population grows (issue 21): a fixed small member against a partner drawn
from ever larger populations, in process, with the false hits classified.

    .venv/bin/python benchmarks/popprec.py [--seed 8] [--population 2860000] [--small 10000]
        [--people 50000 200000 1000000 2860000] [--cache /tmp/blindmatch-popprec]
        [--classify] [--fixes] [--pool] [--ceiling]
    .venv/bin/python benchmarks/popprec.py --small 0 --run     # every record, through match
    .venv/bin/python benchmarks/popprec.py --ab GEN:SEED:PEOPLE[:CORRUPTION] ...  # with/without

`benchmarks/messy.py` writes the exports of `--population` people once (cached); the
matcher sees two members: the first `--small` records of retail-bcrp (the small member,
records in random order) and all of north-police (35% of the people), encoded in process
with `schemas/person-uk.json` under one fixed secret (as `encode` does; cached). Candidates
are what a run keeps, with the matcher's own functions: the first CLKs' pairs at the
rule's candidate floor (the exhaustive kernel), rescored under the fallback rule
(`core.fallback.rescored`: S where both records have a date of birth, the fallback CLK's
Dice where either lacks it), then the greedy solver, as `match` does for two members.

A smaller population is the same partner thinned: every north record of a person the small
member holds is kept, and each other north record with probability `people / population`
(one fixed draw per record, so the thinned partners are nested). People are drawn
independently by the generator, so this is the partner that population would have, at one
encoding's cost. Precision, recall and F1 are given two ways: `hits`, as `blindmatch
evaluate` counts them and the CLI walk sums them (both members' (record, partner) hits; a
record's hit is true when the partner holds its person, whichever record it was linked to),
and `pairs` (the small member's record linked to its own person's record; the per-kind
precisions and `--classify` are over pairs). `--classify` puts the false hits into
classes; `--fixes` tries label-free rules that lift the cut where chance candidates crowd
(see `benchmarks/popfix.py`; "matcher crowd" is the matcher's own, matcher/core/crowd.py);
`--pool` counts the partner's namesakes; `--ceiling` finds, with the labels, the best
cut per kind of pair (an in-sample bound on what any cut can do, the lift's included).
`--run` puts the two members through `match` itself, reporting the hits with the matcher's
lift and without it; `--ab` does that for generated grid cells, every member. Figures:
docs/evaluation.md, "Precision as the population grows". Nothing here is used by the
matcher.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import itertools
import pickle
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import messy
from blindmatch.client.encoding.encode import encode_csv
from blindmatch.client.encoding.mapping import load_mapping
from blindmatch.client.encoding.readcsv import EncodeReport, read_rows
from blindmatch.client.encoding.schema import load_schema
from blindmatch.matcher.core import fallback as fallback_
from blindmatch.matcher.core.compare import Candidates, merge
from blindmatch.matcher.core.kernel import dice_candidates
from blindmatch.matcher.core.solve import dice, links_from_groups, solve
from blindmatch.matcher.domain import NO_RULE, Rule

if TYPE_CHECKING:
    from benchmarks.quality_errors import Member as EncodedMember
    from blindmatch.client.tools.truth import Hit

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "schemas" / "person-uk.json"
SMALL, BIG = "retail-bcrp", "north-police"
THRESHOLD = 0.8


@dataclass
class Member:
    ids: list[str]
    entity: npt.NDArray[np.int64]
    clks: npt.NDArray[np.uint8]
    rows: list[tuple[str, ...]]  # given name, surname, dob, sex, postcode (normalised)


@dataclass
class Pairs:
    """Every pair a run keeps as a candidate (score >= the threshold), with its scores."""

    r0: npt.NDArray[np.uint32]  # small member's row
    r1: npt.NDArray[np.uint32]  # partner's row
    score: npt.NDArray[np.float64]  # what the run scores it by (S, or D2 when dob-less)
    d1: npt.NDArray[np.float64]
    d2: npt.NDArray[np.float64]
    lacks: npt.NDArray[np.bool_]  # scored on the fallback CLK
    label: npt.NDArray[np.bool_]

    def take(self, sel: npt.NDArray[np.intp] | npt.NDArray[np.bool_]) -> Pairs:
        return Pairs(*(getattr(self, f)[sel] for f in self.__dataclass_fields__))


def exports(cache: Path, seed: int, population: int) -> Path:
    folder = cache / f"messy-{seed}-{population}"
    if not (folder / "truth.csv").exists():
        messy.write_exports(folder, seed, population)
    return folder


def _entities(folder: Path, member: str) -> dict[str, int]:
    with open(folder / "truth.csv", newline="", encoding="utf-8") as fh:
        return {r["record_id"]: int(r["entity_id"]) for r in csv.DictReader(fh)
                if r["member"] == member}  # fmt: skip


def member(folder: Path, name: str, limit: int, secret: bytes) -> Member:
    """The first `limit` records of `name`'s export (0: all), encoded; cached beside it."""
    tag = f"{name}-{limit}"
    npz = folder / f"{tag}.npz"
    src = folder / f"{name}.csv"
    if limit:
        src = folder / f"{tag}.csv"
        if not src.exists():
            with open(folder / f"{name}.csv", encoding="utf-8") as fh:
                src.write_text("".join(itertools.islice(fh, limit + 1)))
    schema = load_schema(SCHEMA)
    mapping = load_mapping(folder / f"{name}.toml", schema)
    if not npz.exists():
        res = encode_csv(src, schema, mapping, secret)
        clks = np.frombuffer(res.clks, dtype=np.uint8).reshape(len(res.ids), res.clk_bits // 8)
        np.savez(npz, clks=clks, fallback_bits=res.fallback_bits, rule=np.array(res.rule))
    saved = np.load(npz)
    rows_file = folder / f"{tag}.rows.pickle"
    if not rows_file.exists():
        ids, rows = read_rows(src, schema, mapping, EncodeReport(source=str(src)))
        fields = list(schema.field_names)
        pick = [fields.index(f) for f in ("given_name", "surname", "dob", "sex", "postcode")]
        ent = _entities(folder, name)
        entity = np.array([ent[i] for i in ids], dtype=np.int64)
        kept = [tuple(r[k] for k in pick) for r in rows]
        rows_file.write_bytes(pickle.dumps((ids, entity, kept)))
    ids, entity, kept = pickle.loads(rows_file.read_bytes())
    return Member(ids, entity, saved["clks"], kept)


def rule_of(folder: Path, name: str, limit: int) -> tuple[int, Rule]:
    saved = np.load(folder / f"{name}-{limit}.npz")
    rule = saved["rule"]
    return int(saved["fallback_bits"]), (Rule(*map(float, rule)) if rule.size else NO_RULE)


def candidates(small: Member, big: Member, bits: int, rule: Rule, workers: int) -> Pairs:
    """The run's candidates between the two members (`match`'s steps for two members)."""
    split = fallback_.Split.of([small.clks, big.clks], bits)
    floor = rule.candidate_floor(THRESHOLD)
    sims, ia, ib = dice_candidates(split.first[0], split.first[1], floor, workers=workers)
    k = len(sims)
    first = Candidates(
        sims.astype(np.float64), np.zeros(k, np.uint32), np.ones(k, np.uint32),
        ia.astype(np.uint32), ib.astype(np.uint32),
    )  # fmt: skip
    found = merge(fallback_.rescored(first, split, THRESHOLD, workers, rule))
    assert not (found.dset0 != 0).any()
    r0, r1 = found.rec0, found.rec1
    return Pairs(
        r0,
        r1,
        found.sims,
        dice(split.first[0][r0], split.first[1][r1]),
        dice(split.second[0][r0], split.second[1][r1]),
        fallback_.on_fallback(split.lacking[0][r0], split.lacking[1][r1]),
        small.entity[r0] == big.entity[r1],
    )


def linked(pairs: Pairs, accept: npt.NDArray[np.bool_], score: npt.NDArray[np.float64]) -> Pairs:
    """The pairs the greedy solver links among the accepted ones, ordered by `score`."""
    sel = np.flatnonzero(accept)
    k = len(sel)
    cands = merge(
        [Candidates(score[sel], np.zeros(k, np.uint32), np.ones(k, np.uint32),
                    pairs.r0[sel], pairs.r1[sel])]
    )  # fmt: skip
    groups = solve(cands)
    links = links_from_groups(groups, [np.zeros((1, 1), np.uint8)] * 2, lambda *a: a[0] * 0.0)
    mine = links.dset == 0
    got = set(zip(links.row[mine].tolist(), links.partner_row[mine].tolist(), strict=True))
    keys = list(zip(pairs.r0.tolist(), pairs.r1.tolist(), strict=True))
    return pairs.take(np.array([key in got for key in keys], dtype=bool))


def thinned(
    big: Member, small: Member, population: int, people: int, seed: int
) -> npt.NDArray[np.bool_]:
    """Which partner records the partner of `people` people keeps (see the docstring)."""
    draw = np.random.default_rng(seed).random(len(big.ids))
    return np.isin(big.entity, small.entity) | (draw < people / population)


def prf(tp: int, hits: int, true: int) -> tuple[float, float, float]:
    p, r = tp / max(hits, 1), tp / max(true, 1)
    return p, r, 2 * p * r / (p + r) if p + r else 0.0


def true_hits(small: Member, big: Member, keep: npt.NDArray[np.bool_]) -> int:
    return int(np.isin(small.entity, big.entity[keep]).sum())


def as_evaluated(
    r0: npt.NDArray[np.integer], r1: npt.NDArray[np.integer], small: npt.NDArray[np.int64],
    big: npt.NDArray[np.int64],
) -> tuple[int, int, int]:  # fmt: skip
    """(true reported hits, reported hits, true hits) of linked rows `r0` (of the member
    whose people are `small`) and `r1` (the partner's, `big`), as `blindmatch evaluate`
    counts them, both members' hits summed as the CLI walk does: a member's record reported
    held by the partner is a true hit when the partner holds a record of its person,
    whichever record it was linked to (`results` at the `hits` level names no partner
    record). Stricter, a pair is true when the two linked records are one person's; a
    record linked to another person's record while the partner holds its own counts as a
    true hit here and a false pair there (docs/evaluation.md, "The recall gap between the
    CLI walk and popprec")."""
    in_big, in_small = np.isin(small, big), np.isin(big, small)
    tp = int(in_big[r0].sum()) + int(in_small[r1].sum())
    return tp, 2 * len(r0), int(in_big.sum()) + int(in_small.sum())


def fmt(p: float, r: float, f: float) -> str:
    return f"{f:.4f} ({p:.4f}/{r:.4f})"


def both(hits: Pairs, small: Member, big: npt.NDArray[np.int64], true: int) -> str:
    """F1 (P/R) of the linked pairs `hits` as `evaluate` counts hits (both members'), and
    as pairs (the small member's record linked to its person's record)."""
    tp, n, actual = as_evaluated(hits.r0, hits.r1, small.entity, big)
    return (
        f"hits {fmt(*prf(tp, n, actual))}, "
        f"pairs {fmt(*prf(int(hits.label.sum()), len(hits.r0), true))}"
    )


def classify(
    hits: Pairs, small: Member, big: Member, name_count: Counter[tuple[str, str]],
    rows: npt.NDArray[np.intp],
) -> str:  # fmt: skip
    """The false hits by how they were scored and what their two records share."""
    out: Counter[str] = Counter()
    for k in np.flatnonzero(~hits.label).tolist():
        a, b = small.rows[hits.r0[k]], big.rows[rows[hits.r1[k]]]
        same_name = a[0] == b[0] and a[1] == b[1]
        kind = "dob-less" if hits.lacks[k] else "dated"
        out[f"{kind}: {'same given+surname' if same_name else 'names differ'}"] += 1
        if not hits.lacks[k]:
            dob = (
                "same dob"
                if a[2] == b[2]
                else ("same year" if a[2][:4] == b[2][:4] else "dob differs")
            )
            out[f"dated: {dob}"] += 1
        pa, pb = a[4].replace(" ", ""), b[4].replace(" ", "")
        same_out = pa and pb and pa[:-3] == pb[:-3]
        area = "".join(c for c in pa[:2] if c.isalpha()) == "".join(
            c for c in pb[:2] if c.isalpha()
        )
        if not (pa and pb):
            pc = "no postcode"
        elif pa == pb:
            pc = "same postcode"
        else:
            pc = "same district" if same_out else "same area" if area else "other area"
        out[f"{kind}: {pc}"] += 1
        n = name_count[(b[0], b[1])]
        band = "1" if n <= 1 else "2-5" if n <= 5 else "6-20" if n <= 20 else ">20"
        out[f"{kind}: partner records with that name {band}"] += 1
    return "\n".join(f"    {k}: {v}" for k, v in sorted(out.items()))


def ab_cell(spec: str, cache: Path) -> tuple[list[EncodedMember], set[Hit]]:
    """A grid cell (GENERATOR:SEED:PEOPLE[:CORRUPTION]) written once under `cache` and
    encoded under `--ab`'s secret: its members and its true (record, partner) hits."""
    from benchmarks.quality import GENERATORS
    from benchmarks.quality_errors import encoded
    from blindmatch.client.tools.evaluate import read_truth

    gen, seed, people, *rest = spec.split(":")
    corruption = float(rest[0]) if rest else 1.0
    folder = cache / f"{gen}-{seed}-{people}-{corruption}"
    if not (folder / "truth.csv").exists():
        GENERATORS[gen].write(folder, int(seed), int(people), corruption)
    actual = read_truth(folder / "truth.csv").true_hits()
    return encoded(folder, gen, SCHEMA, ab_secret(spec)), actual


def ab_secret(spec: str) -> bytes:
    """The secret a `--ab` cell is encoded under (fixed by the cell)."""
    return hashlib.sha256(f"popprec {spec}".encode()).digest()


def ab(spec: str, cache: Path) -> str:
    """One grid cell (GENERATOR:SEED:PEOPLE[:CORRUPTION]) in process: a run's hits
    (`match`, default settings, every member) with the lift and without it (`crowd.lifted`
    left out), on the same encodings; F1 (P/R) over all members' hits."""
    from benchmarks.quality_errors import linked
    from blindmatch.matcher.usecases import runs

    members, actual = ab_cell(spec, cache)
    out = []
    lifted = runs.crowd.lifted
    for name, lift in (("lifted (now)", lifted), ("not lifted (before)", None)):
        runs.crowd.lifted = lift or (lambda cands, *a, **k: cands)  # type: ignore[assignment]
        try:
            found = set(linked(members))
        finally:
            runs.crowd.lifted = lifted  # type: ignore[assignment]
        tp = len(found & actual)
        out.append(f"{name} {fmt(*prf(tp, len(found), len(actual)))}")
    return f"{spec}: " + ", ".join(out)


def pool(big: Member) -> str:
    """How many of the partner's records share a name (given name, surname, sex), and a
    name and a date of birth, with a record of another person (normalised values)."""
    out = []
    for what, key in (("name", (0, 1, 3)), ("name and date of birth", (0, 1, 3, 2))):
        people: dict[tuple[str, ...], set[int]] = {}
        for row, ent in zip(big.rows, big.entity.tolist(), strict=True):
            if all(row[k] for k in key):
                people.setdefault(tuple(row[k] for k in key), set()).add(ent)
        sizes = np.array([len(v) for v in people.values()])
        held = sizes.sum()
        out.append(
            f"{what}: {held} people with it; {sizes[sizes > 1].sum() / held:.3f} share it with "
            f"another; on average {((sizes - 1) * sizes).sum() / held:.2f} others"
        )
    return "; ".join(out)


def whole_run(
    small: Member, big: Member, bits: int, rule: Rule, workers: int, blocking: str = "auto"
) -> str:
    """The two members through the matcher's `match` (`blocking`; auto, as a run), the hits
    with the lift (what a run reports now) and without it (the same candidates solved
    before `crowd.lifted`)."""
    from blindmatch.matcher.usecases import runs

    seen: list[Candidates] = []
    lifted = runs.crowd.lifted

    def spy(cands: Candidates, *args: object, **kw: object) -> Candidates:
        seen.append(cands)
        out = lifted(cands, *args, **kw)  # type: ignore[arg-type]
        seen.append(out)
        return out

    runs.crowd.lifted = spy  # type: ignore[assignment]
    t0 = time.monotonic()
    try:
        result = runs.match([small.clks, big.clks], THRESHOLD, fallback_bits=bits, rule=rule,
                            workers=workers, blocking=blocking)  # fmt: skip
    finally:
        runs.crowd.lifted = lifted  # type: ignore[assignment]
    true = true_hits(small, big, np.ones(len(big.ids), dtype=bool))
    line = f"match ({result.method}, {time.monotonic() - t0:.0f} s): {true} true pairs"
    for name, cands in (("not lifted (before)", seen[0]), ("lifted (now)", seen[1])):
        groups = solve(cands)
        pairs = np.array([(g[0][1], g[1][1]) for g in groups], dtype=np.int64).reshape(-1, 2)
        tp = int((small.entity[pairs[:, 0]] == big.entity[pairs[:, 1]]).sum())
        hits = as_evaluated(pairs[:, 0], pairs[:, 1], small.entity, big.entity)
        line += f"; {name} hits {fmt(*prf(*hits))}, pairs {fmt(*prf(tp, len(pairs), true))}"
        wrong = small.entity[pairs[:, 0]] != big.entity[pairs[:, 1]]
        held = [int((wrong & np.isin(small.entity[pairs[:, 0]], big.entity)).sum()),
                int((wrong & np.isin(big.entity[pairs[:, 1]], small.entity)).sum())]  # fmt: skip
        line += f" (linked to another person's record, their own held: {held[0]} + {held[1]})"
    return line


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--population", type=int, default=2_860_000)
    parser.add_argument("--small", type=int, default=10_000, help="small member's records")
    parser.add_argument(
        "--people", type=int, nargs="+", default=[50_000, 200_000, 1_000_000, 2_860_000]
    )
    parser.add_argument("--cache", type=Path, default=Path("/tmp/blindmatch-popprec"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--classify", action="store_true")
    parser.add_argument("--fixes", action="store_true")
    parser.add_argument("--pool", action="store_true", help="namesakes in the partner")
    parser.add_argument(
        "--blocking", choices=["auto", "lsh", "exhaustive"], default="auto", help="--run's"
    )
    parser.add_argument(
        "--ceiling", action="store_true", help="the best cut per kind of pair, by the labels"
    )
    parser.add_argument(
        "--run", action="store_true", help="instead: the whole population through match"
    )
    parser.add_argument(
        "--ab",
        nargs="+",
        default=[],
        metavar="GEN:SEED:PEOPLE[:CORRUPTION]",
        help="instead: grid cells with and without the lift, all members",
    )
    args = parser.parse_args()
    for spec in args.ab:
        print(ab(spec, args.cache), flush=True)
    if args.ab:
        return 0
    t0 = time.monotonic()
    folder = exports(args.cache, args.seed, args.population)
    secret = hashlib.sha256(f"popprec {args.seed}".encode()).digest()
    small = member(folder, SMALL, args.small, secret)
    big = member(folder, BIG, 0, secret)
    bits, rule = rule_of(folder, SMALL, args.small)
    print(f"exports and encodings: {time.monotonic() - t0:.0f} s; {len(small.ids)} x "
          f"{len(big.ids)} records; rule {rule}", flush=True)  # fmt: skip
    if args.run:
        print(whole_run(small, big, bits, rule, args.workers, args.blocking), flush=True)
        return 0
    if args.pool:
        print(f"partner's names: {pool(big)}", flush=True)
    t0 = time.monotonic()
    cached = folder / f"pairs-{args.small}.npz"
    if cached.exists():
        pairs = Pairs(**dict(np.load(cached)))
    else:
        pairs = candidates(small, big, bits, rule, args.workers)
        np.savez(cached, **vars(pairs))
    small_lacking, big_lacking = fallback_.Split.of([small.clks, big.clks], bits).lacking
    print(f"candidates: {len(pairs.r0)} pairs at score >= {THRESHOLD} "
          f"({time.monotonic() - t0:.0f} s)", flush=True)  # fmt: skip
    fixes = None
    if args.fixes:
        from benchmarks import popfix

        fixes = popfix.FIXES
    for people in args.people:
        keep = thinned(big, small, args.population, people, args.seed)
        sub = pairs.take(keep[pairs.r1])
        sub.r1 = (np.cumsum(keep) - 1)[sub.r1].astype(np.uint32)  # rows of the thinned partner
        true = true_hits(small, big, keep)
        hits = linked(sub, np.ones(len(sub.r0), bool), sub.score)
        line = f"{people:>9} people ({int(keep.sum())} partner records, {true} true pairs): "
        line += f"default {both(hits, small, big.entity[keep], true)}"
        for kind, sel in (("dated", ~hits.lacks), ("dob-less", hits.lacks)):
            line += f"; {kind} P {hits.label[sel].mean():.4f} of {int(sel.sum())}"
        print(line, flush=True)
        if args.classify:
            counts = Counter(
                (big.rows[r][0], big.rows[r][1]) for r in np.flatnonzero(keep).tolist()
            )
            print(classify(hits, small, big, counts, np.flatnonzero(keep)), flush=True)
        for name, fix in (fixes or {}).items():
            accept, score, note = fix(sub, small_lacking, big_lacking[keep])
            got = linked(sub, accept, score)
            line = f"    {name}: {both(got, small, big.entity[keep], true)} {note}"
            for kind, sel in (("dated", ~got.lacks), ("dob-less", got.lacks)):
                line += f"; {kind} P {got.label[sel].mean():.4f} of {int(sel.sum())}"
            print(line, flush=True)
        if args.ceiling:
            print(f"    {ceiling(sub, small, big.entity[keep], true)}", flush=True)
    return 0


def ceiling(sub: Pairs, small: Member, big: npt.NDArray[np.int64], true: int) -> str:
    """The best any cut per kind of pair can do: the cut for dated and the cut for dob-less
    pairs (0.80-0.95, 0.01 apart) with the highest F1 as `evaluate` counts, chosen with
    the labels (an in-sample ceiling: a check on the lift, not a rule)."""
    cuts = np.round(np.arange(THRESHOLD, 0.951, 0.01), 2)
    best: tuple[float, float, float] = (-1.0, 0.0, 0.0)
    for dated, dobless in itertools.product(cuts.tolist(), cuts.tolist()):
        got = linked(sub, sub.score >= np.where(sub.lacks, dobless, dated), sub.score)
        f1 = prf(*as_evaluated(got.r0, got.r1, small.entity, big))[2]
        best = max(best, (f1, dated, dobless))
    _, dated, dobless = best
    got = linked(sub, sub.score >= np.where(sub.lacks, dobless, dated), sub.score)
    return (
        f"best cut per kind (labels: a ceiling; dated {dated:.2f}, dob-less {dobless:.2f}): "
        + both(got, small, big, true)
    )


if __name__ == "__main__":
    raise SystemExit(main())
