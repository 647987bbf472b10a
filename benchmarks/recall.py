"""Where the default misses, and routes to close the recall gap, on both generators (issue 21).

    .venv/bin/python benchmarks/recall.py [--population 20000] [--seeds 31 32] [--privacy]

In-process (the encoder and the matcher's own functions, threshold 0.8), for every seed,
on `benchmarks/messy.py` (the generator the default was chosen on) and
`benchmarks/households.py` (never used to choose anything):

1. the default's missed true hits, by cause (the categories of issue 21), and its false
   hits by what the two records agree on;
2. P/R/F1 of each route below, all record-level and measurable by the privacy attacks;
3. with `--privacy`, `privacy-check` of each route's encodings of the largest export (every
   record-level CLK the matcher would receive, the derived features attacked as fields).

`--schema` (default the default schema): the `blindmatch.rule` batch runs (`match`) and
indexes score by (every route keeps the default's; person-uk-no-rule.json: none, as before).

Routes:

- `default`: schemas/person-uk.json (record-level CLK + a fallback CLK without dob).
- `phonetic`: the default plus the Soundex codes of the given name and surname as derived
  features (schemas/person-uk-phonetic.json): respellings agree on them.
- `swap`: the default plus both names sorted into one derived bigram feature
  (schemas/person-uk-swap.json): a swapped forename and surname agree on it.
- `phonetic+swap`: both.
- `dob-bigrams`: the date of birth (which clkhash hashes as YYYYMMDD) in positional
  bigrams instead of unigrams, so two different dates share far fewer bits (1 of 7 tokens
  for 1987-11-23 and 1963-10-05, against 3 of 8 unigrams), while a day/month swap or a
  one-digit slip keeps most; household members (same surname and postcode, other dates)
  then fall under the threshold. `dob-bigrams+swap`, `dob-bigrams+phonetic+swap`: with
  the derived features above. (Since 2026-12-03 the default has the swapped names'
  feature and the date in positional bigrams: `swap`, `dob-bigrams` and `dob-bigrams+swap`
  are the default's layout, `phonetic+swap` and `dob-bigrams+phonetic+swap` `phonetic`'s.)
- `z-default`: the default's two CLKs, each pair scored by how far its Dice stands above
  the Dice of random pairs, in standard deviations (estimated by the matcher from random
  cross-member pairs: no labels), with the threshold the default's 0.8 on the first CLK.
- `z-multi`: four record-level CLKs under unrelated keys, over different field subsets
  (all fields; without dob; without postcode; without surname), a pair scored by the best
  of them on that common scale: a mover, a marriage or a missing date costs one CLK, not
  the match. The matcher learns four encodings of each record instead of two.
"""

from __future__ import annotations

import argparse
import collections
import json
import secrets
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.lshrecall import schema_rule
from benchmarks.quality import GENERATORS, Hits
from benchmarks.recallmisses import analyse, false_pairs
from blindmatch.client.encoding.encode import encode_csv
from blindmatch.client.encoding.mapping import load_mapping
from blindmatch.client.encoding.schema import LinkageSchema, load_schema
from blindmatch.client.tools.evaluate import Quality, quality, read_truth
from blindmatch.matcher.core import fallback as fallback_
from blindmatch.matcher.core.compare import Candidates, merge
from blindmatch.matcher.core.fallbackindex import FallbackIndex, search_indexes
from blindmatch.matcher.core.index import as_words
from blindmatch.matcher.core.kernel import dice_candidates
from blindmatch.matcher.core.solve import dice, solve
from blindmatch.matcher.usecases.runs import match

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ROOT / "schemas" / "person-uk.json"
THRESHOLD = 0.8
Clks = npt.NDArray[np.uint8]
RULE = fallback_.NO_RULE  # the rule batch runs and indexes score by (`--schema`'s)


def _derived(identifier: str, sources: list[str], options: list[str],
             comparison: Mapping[str, object], bits: int) -> dict[str, object]:  # fmt: skip
    return {
        "identifier": identifier,
        "format": {"type": "string", "encoding": "utf-8",
                   "description": f"derived from {' and '.join(sources)} ({', '.join(options)})"},
        "hashing": {"comparison": comparison, "strategy": {"bitsPerFeature": bits},
                    "hash": {"type": "blakeHash"}},
        "blindmatch": {"from": sources, "normalise": options},
    }  # fmt: skip


def variant(
    phonetic: bool = False,
    swap: bool = False,
    without: list[str] | None = None,
    dob_n: int = 0,
) -> dict:  # type: ignore[type-arg]
    """The default schema with derived features added, another fallback, or the date of
    birth hashed as YYYYMMDD (no separators) in positional n-grams of `dob_n`. A derived
    feature the default has already (`names`: the default's since 2026-12-03) is not added
    twice (a schema refuses a repeated identifier)."""
    raw = json.loads(DEFAULT.read_text())
    if dob_n:
        dob = next(f for f in raw["features"] if f["identifier"] == "dob")
        dob["format"]["format"] = "%Y%m%d"
        dob["hashing"]["comparison"] = {"type": "ngram", "n": dob_n, "positional": True}
    if phonetic:
        exact = {"type": "exact"}
        raw["features"].append(_derived("given_phonetic", ["given_name"], ["phonetic"], exact, 40))
        raw["features"].append(_derived("surname_phonetic", ["surname"], ["phonetic"], exact, 50))
    if swap and not any(f["identifier"] == "names" for f in raw["features"]):
        bigrams = {"type": "ngram", "n": 2, "positional": False}
        raw["features"].append(
            _derived("names", ["given_name", "surname"], ["sorted"], bigrams, 80)
        )
    if without is not None:
        raw["blindmatch"]["fallback"] = {"without": without}
    return raw


@dataclass
class Encoded:
    names: list[str]
    ids: list[list[str]]
    clks: list[Clks]  # per member: (rows, bytes), first CLK then fallback CLK
    fallback_bits: int


def encode_all(folder: Path, generator: str, schema: LinkageSchema, secret: bytes) -> Encoded:
    names, ids, clks, fb = [], [], [], 0
    for name, (csv_path, mapping) in GENERATORS[generator].exports(folder).items():
        result = encode_csv(csv_path, schema, load_mapping(mapping, schema), secret)
        names.append(name)
        ids.append(result.ids)
        clks.append(np.frombuffer(result.clks, dtype=np.uint8).reshape(len(result.ids), -1))
        fb = result.fallback_bits
    return Encoded(names, ids, clks, fb)


def hits_of(enc: Encoded, groups: list[tuple[tuple[int, int], ...]]) -> Hits:
    out = set()
    for group in groups:
        for d0, r0 in group:
            for d1, _ in group:
                if d0 != d1:
                    out.add((enc.names[d0], enc.ids[d0][r0], enc.names[d1]))
    return out


def standard_match(enc: Encoded, threshold: float = THRESHOLD) -> Hits:
    """What the matcher does for a schema with a fallback CLK (runs.match)."""
    links = match(enc.clks, threshold, fallback_bits=enc.fallback_bits, rule=RULE, workers=2).links
    return {(enc.names[d], enc.ids[d][r], enc.names[p])
            for d, r, p in zip(links.dset, links.row, links.partner, strict=True)}  # fmt: skip


def null_stats(
    views: list[Clks], rng: np.random.Generator, pairs: int = 20_000
) -> tuple[float, float]:
    """Mean and standard deviation of Dice over random cross-member pairs of one CLK view."""
    sims = []
    for i in range(len(views)):
        for j in range(i + 1, len(views)):
            a = rng.integers(0, len(views[i]), pairs // len(views))
            b = rng.integers(0, len(views[j]), pairs // len(views))
            sims.append(dice(views[i][a], views[j][b]))
    values = np.concatenate(sims)
    return float(values.mean()), float(values.std())


Z_FLOOR = -2.0  # candidates are kept this many standard deviations under the calibrated cut


def z_candidates(views: dict[str, list[Clks]], lacking: list[npt.NDArray[np.bool_]]) -> Candidates:
    """Every pair whose best standardised Dice over the CLK views comes within Z_FLOOR of
    the default's threshold on the first CLK, scored 1 + (z - z0) / 100 (so 1.0 is the cut
    that matches Dice 0.8 on the first CLK), best first. `lacking` (per member, records
    without a dob) restricts the first view to pairs where both have one and the second to
    the others, as the default does; the other views apply to every pair."""
    rng = np.random.default_rng(1)
    stats = {name: null_stats(v, rng) for name, v in views.items()}
    mu0, sd0 = stats["first"]
    z0 = (THRESHOLD - mu0) / sd0
    parts = []
    n = len(views["first"])
    for name, view in views.items():
        mu, sd = stats[name]
        t = mu + (z0 + Z_FLOOR) * sd
        for i in range(n):
            for j in range(i + 1, n):
                sims, ia, ib = dice_candidates(view[i], view[j], t, workers=2)
                if name in ("first", "second"):
                    either = lacking[i][ia] | lacking[j][ib]
                    keep = ~either if name == "first" else either
                    sims, ia, ib = sims[keep], ia[keep], ib[keep]
                z = (sims.astype(np.float64) - mu) / sd
                k = len(z)
                parts.append(Candidates(
                    1.0 + (z - z0) / 100, np.full(k, i, np.uint32), np.full(k, j, np.uint32),
                    ia.astype(np.uint32), ib.astype(np.uint32),
                ))  # fmt: skip
    cands = merge(parts)
    # One candidate per pair of records: the best view's score (merge sorted best first).
    key = np.stack([cands.dset0, cands.rec0, cands.dset1, cands.rec1], axis=1)
    _, first = np.unique(key, axis=0, return_index=True)
    first.sort()
    return Candidates(cands.sims[first], cands.dset0[first], cands.dset1[first],
                      cands.rec0[first], cands.rec1[first])  # fmt: skip


def z_solve(cands: Candidates, shift: float) -> list:  # type: ignore[type-arg]
    """Greedy solving of the candidates at `shift` standard deviations above the cut."""
    keep = cands.sims >= 1.0 + shift / 100 - 1e-12
    return solve(Candidates(cands.sims[keep], cands.dset0[keep], cands.dset1[keep],
                            cands.rec0[keep], cands.rec1[keep]))  # fmt: skip


def split_views(enc: Encoded) -> tuple[list[Clks], list[Clks]]:
    cut = enc.clks[0].shape[1] - enc.fallback_bits // 8
    return [c[:, :cut] for c in enc.clks], [c[:, cut:] for c in enc.clks]


def realtime_gap(population: int, seed: int, secret: bytes) -> None:
    """How real-time queries score against batch runs (issue 21, item 4): the whole CLK
    (first + fallback side by side, as queries once did); the batch runs' scoring
    (matcher/core/fallback.py: the first CLKs at `RULE`'s floor rescored, fallback CLKs
    when either record lacks a date of birth); the standing index with `RULE`
    (matcher/core/fallbackindex.py, LSH tables). Each member's records are queried against
    the others' (every partner record the scoring keeps is a hit, no one-to-one solving);
    P/R/F1 of each, all queries and those without a date of birth."""
    floor = RULE.candidate_floor(THRESHOLD)
    schema = load_schema(DEFAULT)
    for gen in ("messy", "households"):
        with tempfile.TemporaryDirectory(prefix="blindmatch-realtime-") as tmp:
            folder = Path(tmp)
            GENERATORS[gen].write(folder, seed, population, 1.0)
            truth = read_truth(folder / "truth.csv")
            enc = encode_all(folder, gen, schema, secret)
            first, second = split_views(enc)
            lacking = [fallback_.lacking(a, b) for a, b in zip(first, second, strict=True)]
            found: dict[str, Hits] = {
                "whole CLK (real-time before)": set(),
                "batch rule": set(),
                "real-time path": set(),
            }
            n = len(enc.names)
            for i in range(n):
                for j in range(n):
                    if i == j:
                        continue
                    _s, ia, ib = dice_candidates(enc.clks[i], enc.clks[j], THRESHOLD, workers=2)
                    found["whole CLK (real-time before)"].update(
                        (enc.names[i], enc.ids[i][a], enc.names[j]) for a in ia
                    )
                    # As a batch run: first CLKs at the rule's floor, rescored (core.fallback).
                    split = fallback_.Split.of([enc.clks[i], enc.clks[j]], enc.fallback_bits)
                    sims, ia, ib = dice_candidates(first[i], first[j], floor)
                    z = np.zeros(len(sims), np.uint32)
                    pairs = Candidates(sims.astype(float), z, z + 1, ia.astype(np.uint32), ib)
                    for c in fallback_.rescored(pairs, split, THRESHOLD, 2, RULE):
                        found["batch rule"].update((enc.names[i], enc.ids[i][a], enc.names[j])
                                                   for a in c.rec0.tolist())  # fmt: skip
            indexes = {
                enc.names[j]: FallbackIndex.load(
                    8 * enc.clks[j].shape[1],
                    8 * second[j].shape[1],
                    list(enc.ids[j]),
                    as_words(enc.clks[j], 8 * enc.clks[j].shape[1]),
                    threshold=THRESHOLD,
                    rule=RULE,
                ).snapshot
                for j in range(n)
            }
            for i in range(n):
                words = as_words(enc.clks[i], 8 * enc.clks[i].shape[1])
                partners = {m: s for m, s in indexes.items() if m != enc.names[i]}
                for r, q in enumerate(words):
                    for partner, near in search_indexes(partners, q, THRESHOLD).items():
                        if near:
                            found["real-time path"].add((enc.names[i], enc.ids[i][r], partner))
            no_dob = {
                (enc.names[i], enc.ids[i][r]) for i in range(n) for r in np.flatnonzero(lacking[i])
            }
            actual = truth.true_hits()
            for rule, hits in found.items():
                q = quality(hits, truth)
                sub_actual = {h for h in actual if (h[0], h[1]) in no_dob}
                sub_found = {h for h in hits if (h[0], h[1]) in no_dob}
                sub = Quality(len(sub_found & sub_actual), len(sub_found), len(sub_actual))
                print(f"realtime {gen:<11} {rule:<28} all queries: P {q.precision:.4f} "
                      f"R {q.recall:.4f} F1 {q.f1:.4f}; queries without dob "
                      f"({len(sub_actual)} true hits): P {sub.precision:.4f} "
                      f"R {sub.recall:.4f} F1 {sub.f1:.4f}", flush=True)  # fmt: skip


STANDARD_CUTS = (0.74, 0.76, 0.78, 0.8, 0.82, 0.84, 0.86, 0.88)
Z_SHIFTS = (-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--population", type=int, default=20_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[31, 32])
    parser.add_argument("--privacy", action="store_true", help="also attack each route's CLKs")
    parser.add_argument("--routes", nargs="+", default=None)
    parser.add_argument(
        "--realtime", action="store_true", help="only compare real-time and batch scoring"
    )
    parser.add_argument("--schema", type=Path, default=DEFAULT, help="whose rule scores")
    args = parser.parse_args()
    global RULE
    RULE = schema_rule(args.schema)
    secret = secrets.token_bytes(32)
    if args.realtime:
        realtime_gap(args.population, args.seeds[0], secret)
        return 0
    with tempfile.TemporaryDirectory(prefix="blindmatch-recall-") as tmp:
        schemas = {}
        for name, raw in (("default", variant()), ("phonetic", variant(phonetic=True)),
                          ("swap", variant(swap=True)),
                          ("phonetic+swap", variant(phonetic=True, swap=True)),
                          ("no-postcode", variant(without=["postcode"])),
                          ("no-surname", variant(without=["surname"])),
                          ("dob-bigrams", variant(dob_n=2)),
                          ("dob-bigrams+swap", variant(swap=True, dob_n=2)),
                          ("dob-bigrams+phonetic+swap",
                           variant(phonetic=True, swap=True, dob_n=2))):  # fmt: skip
            path = Path(tmp) / f"{name}.json"
            path.write_text(json.dumps(raw))
            schemas[name] = load_schema(path)

        def standard(schema_name: str) -> Callable[[Path, str], dict[float, Hits]]:
            def run(folder: Path, gen: str) -> dict[float, Hits]:
                enc = encode_all(folder, gen, schemas[schema_name], secret)
                return {t: standard_match(enc, t) for t in STANDARD_CUTS}

            return run

        def z_route(extra: tuple[str, ...]) -> Callable[[Path, str], dict[float, Hits]]:
            def run(folder: Path, gen: str) -> dict[float, Hits]:
                enc = encode_all(folder, gen, schemas["default"], secret)
                first, second = split_views(enc)
                lacking = [fallback_.lacking(a, b) for a, b in zip(first, second, strict=True)]
                views = {"first": first, "second": second}
                for name in extra:
                    views[name] = split_views(encode_all(folder, gen, schemas[name], secret))[1]
                cands = z_candidates(views, lacking)
                return {z: hits_of(enc, z_solve(cands, z)) for z in Z_SHIFTS}

            return run

        routes: dict[str, Callable[[Path, str], dict[float, Hits]]] = {
            name: standard(name)
            for name in ("default", "phonetic", "swap", "phonetic+swap", "dob-bigrams",
                         "dob-bigrams+swap", "dob-bigrams+phonetic+swap")
        }  # fmt: skip
        routes["z-default"] = z_route(())
        routes["z-multi"] = z_route(("no-postcode", "no-surname"))
        chosen = args.routes or list(routes)
        # (generator, route, cut) -> qualities over seeds
        table: dict[tuple[str, str, float], list[Quality]] = collections.defaultdict(list)
        for gen in ("messy", "households"):
            for seed in args.seeds:
                folder = Path(tmp) / f"{gen}-{seed}"
                GENERATORS[gen].write(folder, seed, args.population, 1.0)
                truth = read_truth(folder / "truth.csv")
                for route in chosen:
                    started = time.monotonic()
                    by_cut = routes[route](folder, gen)
                    for cut, found in by_cut.items():
                        table[(gen, route, cut)].append(quality(found, truth))
                    base = 0.0 if route.startswith("z-") else 0.8
                    q = quality(by_cut[base], truth)
                    print(f"{gen:<11} {seed:>4} {route:<14} at {base:>4}: P {q.precision:.4f} "
                          f"R {q.recall:.4f} F1 {q.f1:.4f} ({time.monotonic() - started:.0f}s)",
                          flush=True)  # fmt: skip
                    if route == "default":
                        misses = analyse(folder, gen, by_cut[0.8], truth)
                        total = sum(misses.values())
                        for cause, count in misses.most_common():
                            print(f"      missed {count:>4} ({count / total:.0%}): {cause}")
                        enc = encode_all(folder, gen, schemas["default"], secret)
                        links = match(
                            enc.clks, THRESHOLD, fallback_bits=enc.fallback_bits, rule=RULE
                        ).links
                        wrong = false_pairs(enc, links, truth, folder, gen)
                        total = sum(wrong.values())
                        for what, count in wrong.most_common(5):
                            print(f"      false {count:>4} ({count / total:.0%}): {what}")
                if args.privacy and seed == args.seeds[0]:
                    privacy(folder, gen, schemas, secret)

        def mean(gen: str, route: str, cut: float) -> tuple[float, float, float]:
            qs = table[(gen, route, cut)]
            return (float(np.mean([q.f1 for q in qs])), float(np.mean([q.precision for q in qs])),
                    float(np.mean([q.recall for q in qs])))  # fmt: skip

        print("\nEach route's cut chosen on messy (best mean F1 with mean precision >= 0.99),")
        print("then reported on households; mean over seeds, F1 (precision/recall):\n")
        print("| route | cut (chosen on messy) | messy | households "
              "| households, cut chosen on households (oracle) |")  # fmt: skip
        print("|---|---|---|---|---|")
        for route in chosen:
            cuts = sorted({c for (g, r, c) in table if r == route and g == "messy"})
            good = [c for c in cuts if mean("messy", route, c)[1] >= 0.99] or cuts
            cut = max(good, key=lambda c: mean("messy", route, c)[0])
            oracle = max(cuts, key=lambda c: mean("households", route, c)[0])
            cells = [mean("messy", route, cut), mean("households", route, cut),
                     mean("households", route, oracle)]  # fmt: skip
            shown = [f"{f:.4f} ({p:.4f}/{r:.4f})" for f, p, r in cells]
            print(f"| {route} | {cut} | {shown[0]} | {shown[1]} | {shown[2]} at {oracle} |")
    return 0


def privacy(folder: Path, gen: str, schemas: dict[str, LinkageSchema], secret: bytes) -> None:
    """privacy-check of the largest export under each schema: every CLK it uploads."""
    from blindmatch.client.tools.privacy.check import check_csv

    csv_path, mapping = next(iter(GENERATORS[gen].exports(folder).values()))
    for name in ("default", "phonetic", "swap", "phonetic+swap", "no-postcode", "no-surname",
                 "dob-bigrams", "dob-bigrams+swap", "dob-bigrams+phonetic+swap"):  # fmt: skip
        report = check_csv(csv_path, schemas[name], mapping, secret)
        worst: dict[str, tuple[float, str]] = {}
        for r in report.results:  # ranked as privacy-check ranks them (`share_of_all`)
            key, share = f"{r.encoding}", report.share_of_all(r)
            if share >= worst.get(key, (0.0, ""))[0]:
                worst[key] = (share, f"{r.attack} {r.field}")
        shown = "; ".join(f"{k}: {v[0]:.2%} ({v[1]})" for k, v in worst.items())
        print(f"  privacy {gen} {name:<14} {report.records} records: {shown}", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
