"""A field-level Fellegi–Sunter score beside the record-level rule (issue 21 item 1): form and
cuts chosen on `messy` labels, reported on `households`.

    .venv/bin/python benchmarks/rule_fields.py [--fit messy:2205 messy:2305]
        [--report households:2109 households:2105 households:2107:0.5 households:2111:2.0
                  messy:2103 messy:2101:0.5 messy:2105:2.0]
        [--m-from-fit] [--no-tf] [--classify]

A seed is GENERATOR:SEED[:CORRUPTION] at 20,000 people (`--population`), exports cached
under `--cache` (rule2d.py's cache), one fixed secret per seed (rule2d.py's).

Each member encodes its export twice: with the default schema (record-level CLK + fallback
CLK; the matcher's rule S over both, `blindmatch.rule`) and with the opt-in field-level
schema (`schemas/person-uk-field-level.json`: one Bloom filter per field, its own keys).
On the field-level encodings the matcher's own code (matcher/core/fieldlevel.py) blocks,
estimates u from random pairs and m and the prior by EM, with term frequencies, on the
seed's own data: unsupervised, as Splink does. W is a pair's posterior log-odds. With
`--m-from-fit`, m is instead each field's level shares among the `--fit` seeds' true
candidate pairs (labels of the fit seeds only), u and term frequencies still the seed's
own, the prior re-estimated by EM with m fixed; `--no-tf` leaves term frequencies out of W.

Candidates: every cross-member pair at Dice >= `--floor` on either record-level CLK
(rule2d.py's), and every field-level blocked pair with W >= 0 (EM's). Each gets S (the
default rule's score: S = D1 + 0.25 (D1 - D2) - 0.03 where both records have a date of
birth and D1 >= 0.78, else the fallback CLK's Dice D2) and W. Combinations, each a score on
S's scale, cut at 0.8, solved by the greedy solver and completed (`solve.complete`, bridge
0.85, reach 0.70, with the same combined score) as a run is:

- `default`: S alone (what a run does today);
- `veto v`: S, but 0 where W < v (a pair the field-level model finds unlikely is dropped);
- `rescue r`: S, but at least 0.8 where W >= r (a pair it finds likely is accepted);
- `veto v + rescue r`: both;
- `logistic (S, D1, D2, W)`: rule2d.py's logistic regression on (S, D1, D2, W) for dated
  pairs and (D1, D2, W) for dob-less ones, fitted on the `--fit` candidates, one probability
  cut; `logistic (S, D1, D2, each field)` the same with the five fields' weights.

Each family's v, r or cut is chosen on the `--fit` seeds (best mean F1 among those with
mean precision >= 0.99) and applied unchanged to every `--report` seed; `--fit
households:2105` makes it an oracle (an upper bound, not a fair figure). `--classify`
prints households' false pairs by relation and missed pairs by whether a side lacks a date
of birth. Figures: docs/evaluation.md, "A field-level score beside the record-level rule".
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.quality_errors import Member, encoded
from benchmarks.rule2d import DEFAULT, Pairs, Seed, error_classes, fit_logistic, load, prf
from blindmatch.client.encoding.schema import load_schema
from blindmatch.matcher.core import fallback as fallback_
from blindmatch.matcher.core import fieldlevel as fl
from blindmatch.matcher.core.compare import Candidates, merge
from blindmatch.matcher.core.solve import by_datasets, complete, dice, links_from_groups, solve

ROOT = Path(__file__).resolve().parent.parent
FIELD_SCHEMA = ROOT / "schemas" / "person-uk-field-level.json"
THRESHOLD = 0.8
RULE = fallback_.Rule(0.25, 0.03, 0.01)  # the default schema's blindmatch.rule
VETOES = [None, -12.0, -8.0, -6.0, -4.0, -2.0, 0.0, 2.0]
RESCUES = [None, 20.0, 16.0, 12.0, 8.0, 6.0, 4.0, 2.0]
Floats = npt.NDArray[np.float64]
U32 = npt.NDArray[np.uint32]


@dataclass
class Feats:
    """Each pair's record-level scores and field-level weights."""

    s1: Floats  # Dice of the first (record-level) CLKs
    s2: Floats  # Dice of the fallback CLKs
    lacks: npt.NDArray[np.bool_]  # either record lacks a date of birth
    c: Floats  # (pairs, fields): log(m/u) of each field's level, term frequencies on exact
    prior: float  # the model's prior log-odds

    @property
    def s(self) -> Floats:
        """The run's score today (`fallback.pair_scores`): the rule's S for dated pairs, D2
        else. (A dated pair under the rule's D1 floor, 0.78, cannot reach S >= 0.8: it would
        need D2 under 0.15. Completion's reach test scores pairs without the floor, as here.)"""
        out: Floats = np.where(self.lacks, self.s2, RULE.score(self.s1, self.s2))
        return out

    @property
    def w(self) -> Floats:
        """The field-level posterior log-odds W."""
        out: Floats = self.prior + self.c.sum(axis=1)
        return out


def contributions(model: fl.Model, pairs: fl.Pairs, tf: bool = True) -> Floats:
    """Per pair and field, log(m/u) at the pair's level (0 when missing), an exact agreement
    weighted by its value's frequency (fieldlevel.probabilities, field by field; not with
    `tf` False: the field's average chance agreement instead)."""
    lv = pairs.levels
    ratio = np.log(np.maximum(model.m, 1e-12)) - np.log(np.maximum(model.u, 1e-12))
    ratio[:, fl.MISSING] = 0.0
    c: Floats = ratio[np.arange(lv.shape[1]), lv]
    exact = lv == fl.EXACT
    u_exact = np.broadcast_to(model.u[:, fl.EXACT], lv.shape)
    freq = np.where(exact, np.maximum(pairs.tf, 1e-6), u_exact)
    out: Floats = c + np.where(exact & tf, np.log(u_exact) - np.log(freq), 0.0)
    return out


def log_mu(model: fl.Model) -> Floats:
    out: Floats = np.log(np.maximum(model.m, 1e-12)) - np.log(np.maximum(model.u, 1e-12))
    out[:, fl.MISSING] = 0.0
    return out


def labelled_m(hs: Sequence[Hybrid]) -> Floats:
    """m from labels: each field's level shares among the true candidate pairs of `hs`."""
    m = np.ones((len(hs[0].fields.layout.field_bits), fl.LEVELS))
    for h in hs:
        p = h.pairs
        sel = np.flatnonzero(p.label)
        lv = h.fields.pairs(*(a[sel].astype(np.int64) for a in (p.d0, p.r0, p.d1, p.r1))).levels
        for f in range(m.shape[0]):
            m[f] += np.bincount(lv[:, f], minlength=fl.LEVELS)
    m[:, fl.MISSING] = 0.0
    out: Floats = m / m.sum(axis=1, keepdims=True)
    return out


def with_m(model: fl.Model, m: Floats, blocked: fl.Pairs, total: int) -> fl.Model:
    """`model` with m fixed and the prior re-estimated by EM over the blocked pairs."""
    out = fl.Model(m=m, u=model.u, prior=model.prior)
    for it in range(fl.EM_ITERATIONS):
        prior = float(np.clip(fl._posterior(out, blocked.levels).sum() / total, 1e-12, 0.5))
        done = abs(prior / out.prior - 1) < 1e-6
        out = fl.Model(m=m, u=model.u, prior=prior, iterations=it + 1)
        if done:
            break
    return out


@dataclass
class Hybrid:
    """One seed: record-level candidates and scores, the field-level model, both scorers."""

    seed: Seed
    split: fallback_.Split
    fields: fl.Fields
    em: fl.Model  # EM on the seed's own field-level encodings
    model: fl.Model  # the model in use (EM, or m from labels elsewhere)
    blocked: fl.Pairs
    total: int
    pairs: Pairs  # record-level candidates plus field-level blocked pairs with W >= 0
    feats: Feats
    tf: bool = True  # term frequencies in W

    def feats_of(self, d0: U32, r0: U32, d1: U32, r1: U32) -> Feats:
        split, n = self.split, len(d0)
        s1, s2, lacks = np.empty(n), np.empty(n), np.empty(n, dtype=np.bool_)
        for a, b, sel in by_datasets(d0, d1):
            x, y = r0[sel], r1[sel]
            s1[sel] = dice(split.first[a][x], split.first[b][y])
            s2[sel] = dice(split.second[a][x], split.second[b][y])
            lacks[sel] = fallback_.on_fallback(split.lacking[a][x], split.lacking[b][y])
        fp = self.fields.pairs(*(a.astype(np.int64) for a in (d0, r0, d1, r1)))
        prior = float(np.log(self.model.prior) - np.log1p(-self.model.prior))
        return Feats(s1, s2, lacks, contributions(self.model, fp, self.tf), prior)

    def use(self, model: fl.Model) -> None:
        self.model = model
        p = self.pairs
        self.feats = self.feats_of(p.d0, p.r0, p.d1, p.r1)


Combine = Callable[[Feats], Floats]  # a pair's score on S's scale, cut at THRESHOLD


def combine(veto: float | None, rescue: float | None) -> Combine:
    def score(f: Feats) -> Floats:
        out, w = f.s, f.w
        if rescue is not None:
            out = np.where(w >= rescue, np.maximum(out, THRESHOLD), out)
        if veto is not None:
            out = np.where(w < veto, 0.0, out)
        return out

    return score


def name(veto: float | None, rescue: float | None) -> str:
    parts = ([f"veto W<{veto:g}"] if veto is not None else []) + (
        [f"rescue W>={rescue:g}"] if rescue is not None else []
    )
    return " + ".join(parts) or "default (S alone)"


def extend(seed: Seed, d0: U32, r0: U32, d1: U32, r1: U32) -> Pairs:
    """`seed.pairs` with the given pairs added (those not already there), labelled (their
    scores are recomputed by `Hybrid.feats_of`)."""
    p = seed.pairs
    n = max(len(m.ids) for m in seed.members) + 1
    have = ((p.d0.astype(np.int64) * 8 + p.d1) * n + p.r0) * n + p.r1
    key = ((d0.astype(np.int64) * 8 + d1) * n + r0) * n + r1
    new = np.flatnonzero(~np.isin(key, have))
    d0, r0, d1, r1 = d0[new], r0[new], d1[new], r1[new]
    names, ms = [m.name for m in seed.members], seed.members
    label = np.array(
        [
            seed.entity.get((names[a], ms[a].ids[x]), "a")
            == seed.entity.get((names[b], ms[b].ids[y]), "b")
            for a, x, b, y in zip(d0.tolist(), r0.tolist(), d1.tolist(), r1.tolist(), strict=True)
        ],
        dtype=np.bool_,
    )
    cat, zero = np.concatenate, np.zeros(len(new))
    return Pairs(
        cat([p.d0, d0]), cat([p.r0, r0]), cat([p.d1, d1]), cat([p.r1, r1]), cat([p.s1, zero]),
        cat([p.s2, zero]), cat([p.s3, zero]), cat([p.lacks, zero.astype(np.bool_)]),
        cat([p.label, label]),
    )  # fmt: skip


def prepare(spec: str, floor: float, population: int, cache: Path) -> Hybrid:
    started = time.process_time()
    seed = load(spec, DEFAULT, None, floor, population, cache)
    parts = spec.split(":")
    corruption = float(parts[2]) if len(parts) > 2 else 1.0
    folder = cache / f"{parts[0]}-{parts[1]}-{population}-{corruption}"
    secret = hashlib.sha256(f"rule2d {int(parts[1])}".encode()).digest()
    field_members: list[Member] = encoded(folder, parts[0], FIELD_SCHEMA, secret)
    for a, b in zip(seed.members, field_members, strict=True):
        assert a.name == b.name and a.ids == b.ids
    datasets = [m.clks for m in field_members]
    fields = fl.Fields.of(datasets, fl.Layout(load_schema(FIELD_SCHEMA).field_bits))
    blocked = fl.block(fields)
    sizes = [len(d) for d in datasets]
    total = sum(a * b for i, a in enumerate(sizes) for b in sizes[i + 1 :])
    em = fl.train(blocked, fl.u_probabilities(datasets, fields.layout), total)
    prior = float(np.log(em.prior) - np.log1p(-em.prior))
    keep = prior + contributions(em, blocked).sum(axis=1) >= 0
    split = fallback_.Split.of([m.clks for m in seed.members], seed.members[0].fallback_bits)
    as32 = [a[keep].astype(np.uint32) for a in (blocked.d0, blocked.r0, blocked.d1, blocked.r1)]
    pairs = extend(seed, *as32)
    empty = Feats(np.empty(0), np.empty(0), np.empty(0, np.bool_), np.empty((0, 0)), 0.0)
    h = Hybrid(seed, split, fields, em, em, blocked, total, pairs, empty)
    h.use(em)
    print(
        f"{spec}: {len(seed.pairs.label)} record-level candidates, {len(blocked)} field-level "
        f"blocked ({int(keep.sum())} with W >= 0), {len(pairs.label)} in all "
        f"({int(pairs.label.sum())} true); EM {em.iterations} iterations, prior "
        f"{em.prior:.2e}; {time.process_time() - started:.0f} CPU s",
        flush=True,
    )
    print(f"    EM log(m/u), fields x levels (missing .. exact):\n{np.round(log_mu(em), 2)}")
    return h


def found(h: Hybrid, comb: Combine) -> dict[tuple[str, str, str], tuple[int, int, int, int]]:
    """The hits a run reports when pairs are scored by `comb` (greedy solver, completed)."""
    p = h.pairs
    score = comb(h.feats)
    sel = np.flatnonzero(score >= THRESHOLD)
    cands = merge([Candidates(score[sel], p.d0[sel], p.d1[sel], p.r0[sel], p.r1[sel])])
    groups = complete(solve(cands), cands, lambda *a: comb(h.feats_of(*a)), THRESHOLD)
    links = links_from_groups(groups, [], lambda d0, *_: np.zeros(len(d0)))
    ms, names = h.seed.members, [m.name for m in h.seed.members]
    return {
        (names[a], ms[a].ids[r], names[b]): (a, r, b, r1)
        for a, r, b, r1 in zip(
            links.dset.tolist(),
            links.row.tolist(),
            links.partner.tolist(),
            links.partner_row.tolist(),
            strict=True,
        )
    }


def evaluate(h: Hybrid, comb: Combine) -> tuple[float, float, float]:
    return prf(set(found(h, comb)), h.seed.actual)


def classify(h: Hybrid, comb: Combine) -> str:
    """False pairs by relation (households), missed pairs by whether a side lacks a date."""
    return error_classes(h.seed, found(h, comb), h.split.lacking)


# ---- the logistic rule over (S, D1, D2, W) or (S, D1, D2, each field's weight) ----


def design(f: Feats, per_field: bool) -> tuple[Floats, Floats]:
    """Design matrices for dated pairs and for dob-less pairs."""
    one = np.ones(len(f.s1))
    fs = [f.c[:, k] for k in range(f.c.shape[1])] if per_field else [f.w]
    dated = np.column_stack([one, RULE.score(f.s1, f.s2), f.s1, f.s2, *fs])
    dobless = np.column_stack([one, f.s1, f.s2, *fs])
    return dated, dobless


def fit_logistic_rule(fit: Sequence[Hybrid], per_field: bool) -> tuple[Floats, Floats]:
    xs = [design(h.feats, per_field) for h in fit]
    lacks = np.concatenate([h.feats.lacks for h in fit])
    label = np.concatenate([h.pairs.label for h in fit])
    wd = fit_logistic(np.concatenate([x[0] for x in xs])[~lacks], label[~lacks])
    wf = fit_logistic(np.concatenate([x[1] for x in xs])[lacks], label[lacks])
    return wd, wf


def logistic(wd: Floats, wf: Floats, per_field: bool, cut: float) -> Combine:
    """Accept at probability >= cut; on S's scale 0.8 + 0.02 per unit of log-odds above the
    cut's, so completion bridges at +2.5 and reaches at -5 log-odds."""
    at = np.log(cut) - np.log1p(-cut)

    def score(f: Feats) -> Floats:
        xd, xf = design(f, per_field)
        eta = np.where(f.lacks, xf @ wf, xd @ wd)
        out: Floats = THRESHOLD + 0.02 * (eta - at)
        return out

    return score


CUTS = [0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
Choice = tuple[str, Combine, float, float, float]


def choose(fit: Sequence[Hybrid], rules: dict[str, Combine]) -> Choice:
    """(name, rule, mean P, R, F1): best mean F1 among mean precision >= 0.99 on `fit`."""
    best: Choice | None = None
    top: Choice | None = None
    for label, rule in rules.items():
        res = [evaluate(h, rule) for h in fit]
        p, rc, f = (float(np.mean([x[k] for x in res])) for k in range(3))
        c = (label, rule, p, rc, f)
        if p >= 0.99 and (best is None or f > best[4]):
            best = c
        if top is None or f > top[4]:
            top = c
    assert top is not None
    return best or top


def candidates_of(fit: Sequence[Hybrid]) -> dict[str, dict[str, Combine]]:
    """The families of rules, each a grid to choose from on `fit`."""
    out: dict[str, dict[str, Combine]] = {
        "veto": {name(v, None): combine(v, None) for v in VETOES},
        "rescue": {name(None, r): combine(None, r) for r in RESCUES},
        "veto + rescue": {name(v, r): combine(v, r) for v in VETOES for r in RESCUES},
    }
    for per_field, kind in ((False, "logistic (S, D1, D2, W)"),
                            (True, "logistic (S, D1, D2, each field)")):  # fmt: skip
        wd, wf = fit_logistic_rule(fit, per_field)
        print(f"{kind}: dated {np.round(wd, 2).tolist()}, dob-less {np.round(wf, 2).tolist()}")
        out[kind] = {f"p>={c:g}": logistic(wd, wf, per_field, c) for c in CUTS}
    return out


def line(h: Hybrid, label: str, comb: Combine) -> str:
    p, r, f = evaluate(h, comb)
    return f"{h.seed.spec:<22} {label:<58} {f:.4f} ({p:.4f}/{r:.4f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fit", nargs="+", default=["messy:2205", "messy:2305"])
    parser.add_argument(
        "--report",
        nargs="*",
        default=[
            "households:2109",
            "households:2105",
            "households:2107:0.5",
            "households:2111:2.0",
            "messy:2103",
            "messy:2101:0.5",
            "messy:2105:2.0",
        ],
    )
    parser.add_argument(
        "--m-from-fit",
        action="store_true",
        help="m from the --fit seeds' labels (u, frequencies, prior from each seed) instead of EM",
    )
    parser.add_argument(
        "--no-tf", action="store_true", help="W without term frequencies (a field's average)"
    )
    parser.add_argument("--floor", type=float, default=0.7)
    parser.add_argument("--classify", action="store_true", help="classify households' errors")
    parser.add_argument("--population", type=int, default=20_000)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/blindmatch-rule2d"))
    args = parser.parse_args()
    prep = functools.partial(
        prepare, floor=args.floor, population=args.population, cache=args.cache
    )
    fit = [prep(s) for s in args.fit]
    for h in fit:
        h.tf = not args.no_tf
        h.use(h.em)
    m = labelled_m(fit) if args.m_from_fit else None
    if m is not None:
        print(
            f"m from {' '.join(args.fit)}: log(m/u) on the first:\n"
            f"{np.round(log_mu(fl.Model(m, fit[0].em.u, 0.0)), 2)}"
        )
        for h in fit:
            h.use(with_m(h.em, m, h.blocked, h.total))
    chosen: dict[str, Combine] = {"default (S alone)": combine(None, None)}
    for kind, rules in candidates_of(fit).items():
        label, rule, p, rc, f = choose(fit, rules)
        chosen[f"{kind}: {label}"] = rule
        print(f"chosen on {' '.join(args.fit)}: {kind}: {label}: mean {f:.4f} ({p:.4f}/{rc:.4f})")
    for h in fit:
        for label, rule in chosen.items():
            print(line(h, label, rule), flush=True)
    for spec in args.report:
        h = prep(spec)
        h.tf = not args.no_tf
        h.use(h.em)
        if m is not None:
            h.use(with_m(h.em, m, h.blocked, h.total))
        for label, rule in chosen.items():
            print(line(h, label, rule), flush=True)
            if args.classify and h.seed.people:
                print(f"    {classify(h, rule)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
