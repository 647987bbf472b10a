"""A decision rule over more than one score per pair (issue 21 item 1): supervised on
`messy`, reported on `households`.

    .venv/bin/python benchmarks/rule2d.py [--fit messy:2205 messy:2305]
        [--report households:2105 households:2107:0.5 households:2109 households:2111:2.0
                  messy:2101:0.5 messy:2103 messy:2105:2.0]
        [--schema schemas/person-uk.json] [--third] [--floor 0.7] [--linear A C]
        [--classify] [--oracle]

A seed is GENERATOR:SEED[:CORRUPTION] at 20,000 people (`--population`). `--linear A C`
takes that linear rule instead of choosing one on a grid (faster); `--classify` prints
households' false pairs by relation and missed pairs by whether a side lacks a date of
birth; `--oracle` prints the logistic rule at every cut on the `--report` seeds (not a fair
figure: the cut is then chosen with their labels). Figures: docs/evaluation.md, "A decision
rule over both CLKs' scores".

Today a pair is scored by one Dice: of the first (record-level) CLKs when both records
have a date of birth, of the fallback CLKs (no date of birth) otherwise, cut at 0.8
(matcher/core/fallback.py). Every upload already carries both CLKs, so the matcher could
score a pair by both at no cost in what it is shown. Here:

- candidates: every cross-member pair whose first-CLK or fallback-CLK Dice (or, with
  `--third`, third-CLK Dice) reaches `--floor`, found with the matcher's exhaustive kernel;
- each pair's scores: D1 (first CLKs), D2 (fallback CLKs) and, with `--third`, D3: a third
  record-level CLK of given name, date of birth and sex only (the fields a household does
  not share), hashed under keys of its own;
- rules, each fitted or chosen on the `--fit` seeds' labels and applied unchanged to the
  `--report` seeds; a pair is accepted when its rule says so, accepted pairs go to the
  matcher's greedy multi-party solver ordered by the rule's score, and hits are the links
  of its groups, as a run reports them:
  - `default`: today's rule (D1 when both have a date, else D2; cut 0.8);
  - `linear`: both have a date: a * D1 + (1 - a) * D2 >= c (a from 0 to 3: above 1 the
    gap D1 - D2, which is the date of birth's agreement, weighs extra; a, c chosen on `--fit`
    by best mean F1 with precision >= 0.99 over a grid); dob-less pairs: D2 >= 0.8 as today;
  - `logistic`: logistic regression on (D1, D2, D1 * D2, D1 - D2) [+ D3, D3 * D2] for pairs
    where both have a date, and on (D1, D2) [+ D3, D3 * D2] for dob-less pairs, fitted on the
    `--fit` candidates; one probability cut for both, chosen as for `linear`.

Members encode with one fixed secret per seed (as benchmarks/frequency.py), exports are
cached under `--cache`. Nothing here is used by the matcher.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import households, quality_errors
from benchmarks.quality import GENERATORS
from benchmarks.quality_errors import Member, encoded
from blindmatch.client.tools.evaluate import read_truth
from blindmatch.matcher.core import fallback as fallback_
from blindmatch.matcher.core.compare import Candidates, merge
from blindmatch.matcher.core.kernel import dice_candidates
from blindmatch.matcher.core.solve import dice, links_from_groups, solve

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ROOT / "schemas" / "person-uk.json"
Floats = npt.NDArray[np.float64]


def third_schema(base: Path) -> dict[str, Any]:
    """`base` keyed apart, whose fallback CLK leaves out every field but given name, date of
    birth and sex: that fallback CLK is the third CLK (the encoder makes at most two)."""
    raw: dict[str, Any] = json.loads(base.read_text())
    raw["clkConfig"]["kdf"]["info"] = "YmxpbmRtYXRjaCB0aGlyZCBDTEs="  # "blindmatch third CLK"
    keep = ("given_name", "dob", "sex")
    without = [f["identifier"] for f in raw["features"] if f["identifier"] not in keep]
    raw["blindmatch"] = {"encoding": "record-level", "fallback": {"without": without}}
    return raw


@dataclass
class Pairs:
    """Every candidate pair of one seed with its scores and label."""

    d0: npt.NDArray[np.uint32]
    r0: npt.NDArray[np.uint32]
    d1: npt.NDArray[np.uint32]
    r1: npt.NDArray[np.uint32]
    s1: Floats  # Dice of the first CLKs
    s2: Floats  # Dice of the fallback CLKs
    s3: Floats  # Dice of the third CLKs (zeros without --third)
    lacks: npt.NDArray[np.bool_]  # either record lacks a date of birth
    label: npt.NDArray[np.bool_]


def candidates(
    members: list[Member],
    third: list[Member] | None,
    floor: float,
    entity: dict[tuple[str, str], str],
) -> Pairs:
    bits = members[0].fallback_bits
    split = fallback_.Split.of([m.clks for m in members], bits)
    extra = None
    if third:  # the third schema's fallback CLKs
        extra = [np.ascontiguousarray(m.clks[:, -m.fallback_bits // 8 :]) for m in third]
    cols: list[list[npt.NDArray[Any]]] = [[] for _ in range(9)]
    n = len(members)
    for i in range(n):
        for j in range(i + 1, n):
            found: set[tuple[int, int]] = set()
            sources = [(split.first[i], split.first[j]), (split.second[i], split.second[j])]
            if extra is not None:
                sources.append((extra[i], extra[j]))
            for a, b in sources:
                _, ia, ib = dice_candidates(a, b, floor, workers=1)
                found.update(zip(ia.tolist(), ib.tolist(), strict=True))
            if not found:
                continue
            ra = np.array([p[0] for p in found], dtype=np.uint32)
            rb = np.array([p[1] for p in found], dtype=np.uint32)
            s1 = dice(split.first[i][ra], split.first[j][rb])
            s2 = dice(split.second[i][ra], split.second[j][rb])
            s3 = dice(extra[i][ra], extra[j][rb]) if extra is not None else np.zeros(len(ra))
            lacks = fallback_.on_fallback(split.lacking[i][ra], split.lacking[j][rb])
            ids_i, ids_j = members[i].ids, members[j].ids
            label = np.array(
                [
                    entity.get((members[i].name, ids_i[x]), "a")
                    == entity.get((members[j].name, ids_j[y]), "b")
                    for x, y in zip(ra.tolist(), rb.tolist(), strict=True)
                ]
            )
            k = len(ra)
            parts: list[npt.NDArray[Any]] = [
                np.full(k, i, np.uint32),
                ra,
                np.full(k, j, np.uint32),
                rb,
                s1,
                s2,
                s3,
                lacks,
                label,
            ]
            for col, part in zip(cols, parts, strict=True):
                col.append(part)
    return Pairs(*(np.concatenate(c) for c in cols))


def hits(
    members: list[Member], pairs: Pairs, accept: npt.NDArray[np.bool_], score: Floats
) -> dict[tuple[str, str, str], tuple[int, int, int, int]]:
    """The hits a run reports when the solver gets the accepted pairs, best score first,
    each with its link's (dataset, row, partner dataset, partner row)."""
    sel = np.flatnonzero(accept)
    cands = merge(
        [Candidates(score[sel], pairs.d0[sel], pairs.d1[sel], pairs.r0[sel], pairs.r1[sel])]
    )
    groups = solve(cands)
    links = links_from_groups(groups, [m.clks for m in members])
    names = [m.name for m in members]
    return {
        (names[a], members[a].ids[r], names[b]): (a, r, b, r1)
        for a, r, b, r1 in zip(
            links.dset.tolist(),
            links.row.tolist(),
            links.partner.tolist(),
            links.partner_row.tolist(),
            strict=True,
        )
    }


def prf(found: set[Any], actual: set[Any]) -> tuple[float, float, float]:
    tp = len(found & actual)
    p, r = tp / max(len(found), 1), tp / max(len(actual), 1)
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


# ---- rules: (pairs) -> (accept, score) ----
Rule = Callable[[Pairs], tuple[npt.NDArray[np.bool_], Floats]]


def default_rule(cut: float = 0.8) -> Rule:
    def rule(p: Pairs) -> tuple[npt.NDArray[np.bool_], Floats]:
        s = np.where(p.lacks, p.s2, p.s1)
        return s >= cut, s

    return rule


def linear_rule(a: float, c: float, fallback_cut: float = 0.8) -> Rule:
    """Both have a date: a*D1 + (1-a)*D2 >= c; else D2 >= fallback_cut. Scores shifted so
    the two groups share one scale (distance above their own cut)."""

    def rule(p: Pairs) -> tuple[npt.NDArray[np.bool_], Floats]:
        both = a * p.s1 + (1 - a) * p.s2 - c
        fb = p.s2 - fallback_cut
        s = np.where(p.lacks, fb, both)
        return s >= 0, s + 1.0

    return rule


def features(p: Pairs, third: bool) -> tuple[Floats, Floats]:
    """Design matrices for pairs where both have a date, and for dob-less pairs."""
    cols_both = [p.s1, p.s2, p.s1 * p.s2, p.s1 - p.s2]
    cols_fb = [p.s1, p.s2]
    if third:
        cols_both += [p.s3, p.s3 * p.s2]
        cols_fb += [p.s3, p.s3 * p.s2]
    one = np.ones(len(p.s1))
    return np.column_stack([one, *cols_both]), np.column_stack([one, *cols_fb])


def fit_logistic(x: Floats, y: npt.NDArray[np.bool_], ridge: float = 1e-3) -> Floats:
    """Logistic regression by Newton's method (IRLS), a small ridge for stability."""
    mu, sd = x[:, 1:].mean(axis=0), x[:, 1:].std(axis=0) + 1e-12
    z = np.column_stack([x[:, 0], (x[:, 1:] - mu) / sd])
    w = np.zeros(z.shape[1])
    t = y.astype(np.float64)
    for _ in range(50):
        eta = np.clip(z @ w, -30, 30)
        prob = 1 / (1 + np.exp(-eta))
        grad = z.T @ (prob - t) + ridge * w
        hess = (z * (prob * (1 - prob))[:, None]).T @ z + ridge * np.eye(len(w))
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    # back to raw features
    raw = np.empty_like(w)
    raw[1:] = w[1:] / sd
    raw[0] = w[0] - (w[1:] * mu / sd).sum()
    return raw


def logistic_rule(wb: Floats, wf: Floats, third: bool, cut: float, only: str = "") -> Rule:
    """Accept at probability >= cut; with `only` ("dob" or "dob-less") the other group of
    pairs keeps today's rule (Dice >= 0.8, mapped onto the probability scale at the cut)."""

    def rule(p: Pairs) -> tuple[npt.NDArray[np.bool_], Floats]:
        xb, xf = features(p, third)
        eta = np.where(p.lacks, xf @ wf, xb @ wb)
        prob = 1 / (1 + np.exp(-np.clip(eta, -30, 30)))
        if only:
            today = np.where(p.lacks, p.s2, p.s1)
            as_today = cut + (1 - cut) * np.clip((today - 0.8) / 0.2, -1, 1)
            keep = p.lacks if only == "dob" else ~p.lacks
            prob = np.where(keep, as_today, prob)
        return prob >= cut, prob

    return rule


@dataclass
class Seed:
    spec: str
    members: list[Member]
    pairs: Pairs
    actual: set[tuple[str, str, str]]
    entity: dict[tuple[str, str], str]
    people: dict[int, households.Person]  # households only

    def evaluate(self, rule: Rule) -> tuple[float, float, float]:
        accept, score = rule(self.pairs)
        return prf(set(hits(self.members, self.pairs, accept, score)), self.actual)

    def errors(self, rule: Rule) -> str:
        """False pairs by relation (households), missed pairs by whether a side lacks a date."""
        accept, score = rule(self.pairs)
        found = hits(self.members, self.pairs, accept, score)
        split = fallback_.Split.of([m.clks for m in self.members], self.members[0].fallback_bits)
        return error_classes(self, found, split.lacking)


def error_classes(seed: Seed, found: dict, lacking: Sequence[npt.NDArray[np.bool_]]) -> str:
    """`found` hits' false pairs by relation (households) and the missed pairs by whether a
    side lacks a date (`lacking`, each member's records lacking the fallback's fields)."""
    names = [m.name for m in seed.members]
    role = quality_errors.roles(seed.people)
    false: Counter[str] = Counter()
    seen = set()
    for hit, (d0, r0, d1, r1) in found.items():
        key = tuple(sorted(((d0, r0), (d1, r1))))
        if hit in seed.actual or key in seen:
            continue
        seen.add(key)
        a = seed.people[int(seed.entity[(names[d0], seed.members[d0].ids[r0])])]
        b = seed.people[int(seed.entity[(names[d1], seed.members[d1].ids[r1])])]
        same = a.household == b.household
        false[quality_errors.relation(a, b, role) if same else "unrelated"] += 1
    index = {
        n: {rid: i for i, rid in enumerate(m.ids)} for n, m in zip(names, seed.members, strict=True)
    }
    row_of = {(e, n): index[n][rid] for (n, rid), e in seed.entity.items() if n in index}
    missed: Counter[str] = Counter()
    for name, rid, partner in seed.actual - set(found):
        d0, d1 = names.index(name), names.index(partner)
        if d0 > d1:  # each pair once
            continue
        r1 = row_of[(seed.entity[(name, rid)], partner)]
        lack = lacking[d0][index[name][rid]] or lacking[d1][r1]
        missed["dob-less" if lack else "dated"] += 1
    fp = ", ".join(f"{k} {v}" for k, v in false.most_common())
    return f"false pairs {sum(false.values())} ({fp}); missed pairs {dict(missed)}"


def load(
    spec: str, schema: Path, third_path: Path | None, floor: float, population: int, cache: Path
) -> Seed:
    parts = spec.split(":")
    gen, seed = parts[0], int(parts[1])
    corruption = float(parts[2]) if len(parts) > 2 else 1.0
    folder = cache / f"{gen}-{seed}-{population}-{corruption}"
    if not (folder / "truth.csv").exists():
        GENERATORS[gen].write(folder, seed, population, corruption)
    truth = read_truth(folder / "truth.csv")
    secret = hashlib.sha256(f"rule2d {seed}".encode()).digest()
    members = encoded(folder, gen, schema, secret)
    third = encoded(folder, gen, third_path, secret) if third_path else None
    pairs = candidates(members, third, floor, truth.entity)
    people = {}
    if gen == "households":
        people = {p.entity: p for p in households.population(population, random.Random(seed))}
    return Seed(spec, members, pairs, truth.true_hits(), truth.entity, people)


def choose(fit: Sequence[Seed], rules: dict[str, Rule]) -> tuple[str, float, float, float]:
    """The rule with the best mean F1 among those with mean precision >= 0.99 on `fit`."""
    best: tuple[str, float, float, float] | None = None
    fallback: tuple[str, float, float, float] | None = None
    for name, rule in rules.items():
        res = [s.evaluate(rule) for s in fit]
        p, r, f = (float(np.mean([x[k] for x in res])) for k in range(3))
        if p >= 0.99 and (best is None or f > best[3]):
            best = (name, p, r, f)
        if fallback is None or f > fallback[3]:
            fallback = (name, p, r, f)
    assert fallback is not None
    return best or fallback


def line(name: str, seed: Seed, rule: Rule) -> str:
    p, r, f = seed.evaluate(rule)
    return f"{seed.spec:<22} {name:<44} {f:.4f} ({p:.4f}/{r:.4f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fit", nargs="+", default=["messy:2205", "messy:2305"])
    parser.add_argument(
        "--report",
        nargs="+",
        default=[
            "households:2105",
            "households:2107:0.5",
            "households:2109",
            "households:2111:2.0",
            "messy:2101:0.5",
            "messy:2103",
            "messy:2105:2.0",
        ],
    )
    parser.add_argument("--schema", type=Path, default=DEFAULT)
    parser.add_argument("--third", action="store_true", help="add a given name + dob + sex CLK")
    parser.add_argument("--floor", type=float, default=0.7)
    parser.add_argument(
        "--linear", type=float, nargs=2, metavar=("A", "C"), help="this linear rule, no grid"
    )
    parser.add_argument(
        "--classify", action="store_true", help="classify households' false and missed pairs"
    )
    parser.add_argument(
        "--oracle", action="store_true", help="also every cut of the logistic rule on --report"
    )
    parser.add_argument("--population", type=int, default=20_000)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/blindmatch-rule2d"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="blindmatch-rule2d-") as tmp:
        third_path = None
        if args.third:
            third_path = Path(tmp) / "third.json"
            third_path.write_text(json.dumps(third_schema(args.schema)))
        fit = [load(s, args.schema, third_path, args.floor, args.population, args.cache)
               for s in args.fit]  # fmt: skip
        for s in fit:
            n_true = int(s.pairs.label.sum())
            print(f"{s.spec}: {len(s.pairs.label)} candidate pairs at {args.floor}, {n_true} true")
        # linear: grid over the weight on D1 and the cut, chosen on fit
        weights = np.arange(0.0, 3.01, 0.25) if args.linear is None else [args.linear[0]]
        cuts_lin = np.arange(0.60, 0.90, 0.01) if args.linear is None else [args.linear[1]]
        grid = {f"linear a={a:.2f} c={c:.3f}": linear_rule(a, c) for a in weights for c in cuts_lin}
        lin = choose(fit, grid)
        print(f"chosen on fit: {lin[0]}: mean {lin[3]:.4f} ({lin[1]:.4f}/{lin[2]:.4f})")
        # logistic
        x_both = np.concatenate([features(s.pairs, args.third)[0] for s in fit])
        x_fb = np.concatenate([features(s.pairs, args.third)[1] for s in fit])
        lacks = np.concatenate([s.pairs.lacks for s in fit])
        label = np.concatenate([s.pairs.label for s in fit])
        wb = fit_logistic(x_both[~lacks], label[~lacks])
        wf = fit_logistic(x_fb[lacks], label[lacks])
        print(f"logistic weights, both have a date: {np.round(wb, 2).tolist()}")
        print(f"logistic weights, dob-less: {np.round(wf, 2).tolist()}")
        cuts = [0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
        logi = choose(fit, {f"logistic p>={c}": logistic_rule(wb, wf, args.third, c) for c in cuts})
        print(f"chosen on fit: {logi[0]}: mean {logi[3]:.4f} ({logi[1]:.4f}/{logi[2]:.4f})")
        cut = float(logi[0].split(">=")[1])
        chosen = {
            "default (D1 or D2 >= 0.8)": default_rule(),
            lin[0]: grid[lin[0]],
            logi[0]: logistic_rule(wb, wf, args.third, cut),
            f"{logi[0]}, dated pairs only": logistic_rule(wb, wf, args.third, cut, "dob"),
            f"{logi[0]}, dob-less pairs only": logistic_rule(wb, wf, args.third, cut, "dob-less"),
        }
        for s in fit:
            accept = chosen[logi[0]](s.pairs)[0]
            lo = [float(x[accept].min()) for x in (s.pairs.s1, s.pairs.s2)]
            print(f"{s.spec}: accepted pairs' lowest D1 {lo[0]:.3f}, D2 {lo[1]:.3f}")
        for s in fit:
            for name, rule in chosen.items():
                print(line(name, s, rule), flush=True)
        for spec in args.report:
            s = load(spec, args.schema, third_path, args.floor, args.population, args.cache)
            for name, rule in chosen.items():
                print(line(name, s, rule), flush=True)
                if args.classify and s.people:
                    print(f"    {s.errors(rule)}", flush=True)
            if args.oracle:
                for c in cuts:
                    rule = logistic_rule(wb, wf, args.third, c)
                    print(line(f"(oracle) logistic p>={c}", s, rule))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
